/*
 * test_ingest_order.c - a producer's replies leave in line order when the store completes publishes
 * later (an observer that answers CS_CHANGE_LATER, as the journal's fsync "always" will): a later
 * line confirmed first waits for the earlier ones, replies of lines that need no confirmation (ping,
 * errors) wait behind a pending one, a refused confirmation is that line's error reply, and a
 * producer that leaves first forgets its pending publishes. A reply that cannot be queued closes the
 * producer (counted); cs_ingest_line says so to HTTP.
 */
#include "../../common/buf.c"
#include "../../src/answer.c"
#include "../../src/auth.c"
#include "../../src/cfgschema.c"
#include "../../src/cursor.c"
#include "../../src/curlm.c"
#include "../../src/err.c"
#include "../../src/event.c"
#include "../../src/filter.c"
#include "../../src/hitl.c"
#include "../../src/gateway.c"
#include "../../src/ingest.c"
#include "../../src/jscan.c"
#include "../../src/lines.c"
#include "../../src/log.c"
#include "../../src/loop.c"
#include "../../src/status.c"
#include "../../src/store.c"
#include "../../src/webhook.c"
#include "../../src/whconf.c"
#include "../../src/whrec.c"

/* webhook.c journals through persist.c, which this test leaves out: it runs without a journal. */
int cs_persist_set_module(cs_persist_t *p, const cs_persist_module_t *m)
{
    (void)p;
    (void)m;
    return 0;
}

int cs_persist_append_aux(cs_persist_t *p, const cs_change_t *c)
{
    (void)p;
    (void)c;
    return -ENODEV;
}

/* webhook.c and ingest.c ask cluster.c (who delivers, this node's name) in cluster mode; this test runs one
 * node alone (d->cluster NULL). */
cs_cluster_claim_t *cs_cluster_claim(cs_cluster_t *c, const char *exec, size_t exec_len, const char *what,
                                     unsigned ttl_s, cs_cluster_claim_cb cb, void *data)
{
    (void)c, (void)exec, (void)exec_len, (void)what, (void)ttl_s, (void)cb, (void)data;
    return NULL;
}

void cs_cluster_claim_cancel(cs_cluster_claim_t *cl)
{
    (void)cl;
}

const char *cs_cluster_node(const cs_cluster_t *c)
{
    (void)c;
    return "";
}

#include <fcntl.h>

#include "ctest.h"

/* ingest.c's accept backoff lives in listener.c, which this test does not need. */
void cs_accept_backoff_init(cs_accept_backoff_t *b, cs_io_t *io, const char *what, uint64_t *counter)
{
    (void)b, (void)io, (void)what, (void)counter;
}
int cs_accept_backoff_failed(cs_accept_backoff_t *b, int err)
{
    (void)b, (void)err;
    return 0;
}
void cs_accept_backoff_ok(cs_accept_backoff_t *b)
{
    (void)b;
}
void cs_accept_backoff_stop(cs_accept_backoff_t *b)
{
    (void)b;
}

/* The journal stand-in: every publish confirmed later, by the test. */
static uint64_t tickets[64];
static size_t n_tickets;

static int later(void *data, const cs_change_t *c)
{
    (void)data;
    if (c->kind != CS_CHANGE_PUBLISH)
        return 0;
    REQUIRE(n_tickets < 64);
    tickets[n_tickets++] = c->ticket;
    return CS_CHANGE_LATER;
}

static cs_daemon_t d;
static cs_config_t cfg;
static cs_ingest_t in;
static int peer;

static producer_t *producer(void)
{
    int sv[2];
    producer_t *p = calloc(1, sizeof(*p));

    REQUIRE(p != NULL);
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0);
    p->in = &in;
    p->fd = sv[0];
    peer = sv[1];
    cs_lines_init(&p->lines, cfg.max_event_bytes, READ_CHUNK);
    DL_APPEND(in.list, p);
    in.count++;
    cs_io_init(&p->io, d.loop, p->fd, on_producer_io, p);
    return p;
}

static void feed(producer_t *p, const char *lines)
{
    REQUIRE(producer_feed(p, lines, strlen(lines)) == strlen(lines));
    producer_pump(p);
}

/* What the peer can read now (NUL-terminated into buf). */
static const char *got(char *buf, size_t cap)
{
    ssize_t n = recv(peer, buf, cap - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

/* Runs the deferred calls (a completion flushes at the end of the turn). */
static void turn(void)
{
    run_deferred(d.loop);
}

static void test_replies_in_line_order(void)
{
    char buf[4096];
    producer_t *p = producer();

    n_tickets = 0;
    feed(p, "{\"execution_id\":\"o\",\"type\":\"log\",\"event_id\":\"a\"}\n"
            "{\"execution_id\":\"o\",\"type\":\"run.started\",\"event_id\":\"b\"}\n"
            "{\"op\":\"ping\"}\n"
            "not json\n"
            "{\"execution_id\":\"o\",\"type\":\"log\",\"event_id\":\"c\"}\n");
    REQUIRE(n_tickets == 3); /* both paths (fields and whole) went pending */
    CHECK(got(buf, sizeof(buf))[0] == '\0');
    CHECK(p->n_slots == 5);
    /* The last line is confirmed first, then the second: nothing may go out before the first. */
    cs_store_confirm(d.store, tickets[2], CS_OK, NULL);
    cs_store_confirm(d.store, tickets[1], CS_ERR_INTERNAL, "the journal could not write");
    turn();
    CHECK(got(buf, sizeof(buf))[0] == '\0');
    cs_store_confirm(d.store, tickets[0], CS_OK, NULL);
    turn();
    got(buf, sizeof(buf));
    const char *a = strstr(buf, "\"event_id\":\"a\""), *b = strstr(buf, "the journal could not write");
    const char *pong = strstr(buf, "pong"), *bad = strstr(buf, "invalid_json"),
               *c = strstr(buf, "\"event_id\":\"c\"");
    CHECK(a != NULL && b != NULL && pong != NULL && bad != NULL && c != NULL);
    CHECK(a < b && b < pong && pong < bad && bad < c);
    CHECK(p->n_slots == 0 && p->slot_bytes == 0);
    /* With nothing pending, replies go out at once again. */
    n_tickets = 0;
    cs_store_set_observer(d.store, NULL);
    feed(p, "{\"op\":\"ping\"}\n");
    CHECK(strstr(got(buf, sizeof(buf)), "pong") != NULL);
    cs_store_set_observer(d.store, &(cs_store_observer_t){later, NULL});
    producer_close(p);
    close(peer);
    turn();
}

/* A producer gone before its publishes are confirmed: they are forgotten, the confirmation finds no one. */
static void test_producer_leaves_first(void)
{
    producer_t *p = producer();
    cs_store_stats_t st;

    n_tickets = 0;
    feed(p, "{\"execution_id\":\"o\",\"type\":\"log\"}\n{\"execution_id\":\"o\",\"type\":\"log\"}\n");
    REQUIRE(n_tickets == 2);
    cs_store_stats(d.store, &st);
    CHECK(st.pending == 2);
    producer_close(p);
    close(peer);
    cs_store_stats(d.store, &st);
    CHECK(st.pending == 0);
    cs_store_confirm(d.store, tickets[0], CS_OK, NULL);
    cs_store_confirm(d.store, tickets[1], CS_OK, NULL);
    turn();
}

/*
 * No reply is dropped unseen (issue 11): a reply buffer at its maximum leaves cs_ingest_line's buffer as
 * it was and says so (HTTP answers 500 for it); a producer whose reply or held reply cannot be queued is
 * closed and counted, since a missing reply would put its replies out of step with its lines.
 */
static void test_reply_not_queued(void)
{
    static const char ping[] = "{\"op\":\"ping\"}", ev[] = "{\"execution_id\":\"o\",\"type\":\"log\"}";
    cs_err_t code = CS_ERR_INTERNAL;
    cs_buf_t b;
    char buf[64];

    cs_store_set_observer(d.store, NULL);
    cs_buf_init(&b, 30);
    REQUIRE(cs_ingest_line(&d, NULL, NULL, ping, strlen(ping), &b, &code) == 0);
    CHECK(code == CS_OK && cs_buf_size(&b) == 24);
    CHECK(cs_ingest_line(&d, NULL, NULL, ping, strlen(ping), &b, &code) == -EMSGSIZE);
    CHECK(cs_buf_size(&b) == 24); /* nothing of the second reply */
    CHECK(cs_ingest_line(&d, NULL, NULL, "nope", 4, &b, &code) == -EMSGSIZE && code != CS_OK);
    CHECK(cs_buf_size(&b) == 24);
    cs_buf_free(&b);
    cs_buf_init(&b, 10);
    CHECK(cs_ingest_line(&d, NULL, NULL, ev, strlen(ev), &b, &code) == -EMSGSIZE && code == CS_OK);
    CHECK(cs_buf_size(&b) == 0);
    cs_buf_free(&b);

    /* A producer whose output is at its maximum: closed after the line, counted once. */
    uint64_t failures = d.counters.ingest_reply_failures;
    producer_t *p = producer();
    p->out.max = 8;
    producer_feed(p, "{\"op\":\"ping\"}\n{\"op\":\"ping\"}\n", 28);
    CHECK(p->closing);
    CHECK(d.counters.ingest_reply_failures == failures + 1);
    CHECK(recv(peer, buf, sizeof(buf), 0) == 0); /* closed, nothing written */
    close(peer);
    turn();

    /* Behind a pending publish: the held replies cannot move to the output when it is confirmed. */
    cs_store_set_observer(d.store, &(cs_store_observer_t){later, NULL});
    n_tickets = 0;
    p = producer();
    p->out.max = 8;
    feed(p, "{\"execution_id\":\"o\",\"type\":\"log\"}\n{\"op\":\"ping\"}\n");
    REQUIRE(n_tickets == 1 && p->n_slots == 2 && !p->closing);
    cs_store_confirm(d.store, tickets[0], CS_OK, NULL);
    CHECK(p->closing);
    CHECK(d.counters.ingest_reply_failures == failures + 2);
    close(peer);
    turn();
}

int main(void)
{
    cs_store_limits_t lim = {
        .ring_events = 64, .ring_bytes = 1 << 20, .max_bytes = 1 << 24, .retain_s = 10, .global_events = 64};

    cfg.max_event_bytes = 65536;
    cfg.json_depth = 32;
    REQUIRE(cs_loop_new(&d.loop) == 0);
    REQUIRE(cs_store_new(&d.store, &lim) == 0);
    d.cfg = &cfg;
    in.d = &d;
    cs_store_set_observer(d.store, &(cs_store_observer_t){later, NULL});
    RUN(test_replies_in_line_order);
    RUN(test_producer_leaves_first);
    RUN(test_reply_not_queued);
    cs_store_free(d.store);
    cs_loop_free(d.loop);
    CT_DONE();
}
