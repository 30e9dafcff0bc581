/*
 * test_transport.c - the transports table's dispatch: a head is offered to the rows in order until one
 * takes or refuses it; declining rows see it untouched; counts are summed by gauge.
 */
#include "../../src/err.c"
#include "../../src/transport.c"

#include "ctest.h"

typedef struct fake {
    int answer;  /* what offer returns */
    int want_ws; /* declines unless the head's websocket flag is this */
    int offered;
    size_t count;
} fake_t;

static int fake_offer(void *self, cs_offer_t *o)
{
    fake_t *f = self;
    f->offered++;
    if (o->websocket != f->want_ws)
        return 0;
    if (f->answer < 0)
        o->detail = "refused by a fake";
    return f->answer;
}

static size_t fake_count(const void *self)
{
    return ((const fake_t *)self)->count;
}

static const cs_transport_ops_t row_a = {
    .name = "a", .gauge = "g1", .offer = fake_offer, .count = fake_count};
static const cs_transport_ops_t row_b = {
    .name = "b", .gauge = "g2", .offer = fake_offer, .count = fake_count};
static const cs_transport_ops_t row_c = {
    .name = "c", .gauge = "g1", .offer = fake_offer, .count = fake_count};

static void setup(cs_daemon_t *d, fake_t *f)
{
    const cs_transport_ops_t *rows[] = {&row_a, &row_b, &row_c};
    memset(d, 0, sizeof(*d));
    for (size_t i = 0; i < 3; i++) {
        d->transports[i].ops = rows[i];
        d->transports[i].self = &f[i];
    }
    d->n_transports = 3;
}

static void test_offer_order(void)
{
    cs_daemon_t d;
    fake_t f[3] = {{.answer = 1, .want_ws = 0}, {.answer = 1, .want_ws = 1}, {.answer = 1, .want_ws = 0}};
    cs_offer_t o = {.fd = 7};
    size_t by = 99;

    setup(&d, f);
    /* A plain head: the first row that takes it wins; the later ones are not asked. */
    CHECK(cs_transport_offer(&d, &o, &by) == 1 && by == 0);
    CHECK(f[0].offered == 1 && f[1].offered == 0 && f[2].offered == 0);
    /* An upgrade: the first row declines, the second takes it. */
    o.websocket = 1;
    CHECK(cs_transport_offer(&d, &o, &by) == 1 && by == 1);
    CHECK(f[0].offered == 2 && f[1].offered == 1 && f[2].offered == 0);
    /* A refusal stops the walk and says why. */
    f[1].answer = CS_ERR_BAD_REQUEST;
    CHECK(cs_transport_offer(&d, &o, &by) == CS_ERR_BAD_REQUEST && by == 1);
    CHECK_STR(o.detail, "refused by a fake");
    CHECK(f[2].offered == 0);
    /* Nobody takes it: 0. */
    f[1].want_ws = 0;
    f[0].want_ws = f[2].want_ws = 0;
    by = 42;
    CHECK(cs_transport_offer(&d, &o, &by) == 0 && by == 42);
    CHECK(f[2].offered == 1);
    /* A detail left from an earlier offer does not leak into the next one. */
    CHECK(o.detail == NULL);
}

static void test_counts(void)
{
    cs_daemon_t d;
    fake_t f[3] = {{.count = 2}, {.count = 5}, {.count = 3}};

    setup(&d, f);
    CHECK(cs_transport_count(&d, "g1") == 5);
    CHECK(cs_transport_count(&d, "g2") == 5);
    CHECK(cs_transport_count(&d, NULL) == 10);
    CHECK(cs_transport_count(&d, "none") == 0);
    d.n_transports = 0;
    CHECK(cs_transport_count(&d, NULL) == 0);
}

int main(void)
{
    RUN(test_offer_order);
    RUN(test_counts);
    CT_DONE();
}
