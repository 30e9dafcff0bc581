/*
 * test_gateway.c - the crew gateway without sockets: least-busy dispatch within each runtime's
 * concurrency, the bounded queue, the ack timeout and a lost connection re-dispatching, and never a
 * kickoff given again once acknowledged.
 */
#include "../../common/buf.c"
#include "../../src/err.c"
#include "../../src/event.c"
#include "../../src/gateway.c"

#include "ctest.h"

/* What the gateway pushed and failed, as a fake daemon records it. */
#define MAX_PUSH 512
typedef struct rec {
    void *conn[MAX_PUSH];
    char id[MAX_PUSH][37];
    size_t n;
    int refuse; /* push fails */
    char failed[16][37];
    size_t n_failed;
    int changes;
} rec_t;

static int fake_push(void *data, void *conn, const char *line, size_t len)
{
    rec_t *r = data;
    json_error_t e;
    if (r->refuse)
        return -ENOMEM;
    REQUIRE(len > 0 && line[len - 1] == '\n');
    json_t *o = json_loadb(line, len, 0, &e);
    REQUIRE(o != NULL);
    CHECK_STR(json_string_value(json_object_get(o, "op")), "kickoff");
    CHECK(json_is_object(json_object_get(o, "inputs")));
    REQUIRE(r->n < MAX_PUSH);
    r->conn[r->n] = conn;
    snprintf(r->id[r->n], 37, "%s", json_string_value(json_object_get(o, "execution_id")));
    r->n++;
    json_decref(o);
    return 0;
}

static void fake_failed(void *data, const char *id, const char *crew, const char *why)
{
    rec_t *r = data;
    (void)crew;
    CHECK(strstr(why, "queue_timeout_s") != NULL);
    snprintf(r->failed[r->n_failed++], 37, "%s", id);
}

static void fake_changed(void *data)
{
    ((rec_t *)data)->changes++;
}

static cs_gateway_t *gw_make(rec_t *r, size_t queue, int64_t ack_ms, int64_t qto_ms)
{
    cs_gateway_ops_t ops = {fake_push, fake_failed, fake_changed, r};
    cs_gateway_limits_t lim = {queue, ack_ms, qto_ms};
    cs_gateway_t *gw;
    memset(r, 0, sizeof(*r));
    REQUIRE(cs_gateway_new(&gw, &ops, &lim) == 0);
    return gw;
}

static cs_err_t serve(cs_gateway_t *gw, void *conn, const char *crew, int conc, int64_t now)
{
    char detail[256];
    json_t *c = json_string(crew), *n = json_integer(conc), *in = json_pack("[s]", "topic");
    cs_err_t e = cs_gateway_serve(gw, conn, c, in, n, now, detail, sizeof(detail));
    json_decref(c);
    json_decref(n);
    json_decref(in);
    return e;
}

static cs_err_t kick(cs_gateway_t *gw, const char *crew, int64_t now, char id[37])
{
    char detail[256];
    json_t *in = json_pack("{s:s}", "topic", "AI");
    id[0] = '\0';
    cs_err_t e = cs_gateway_kickoff(gw, crew, in, now, id, detail, sizeof(detail));
    json_decref(in);
    return e;
}

static cs_err_t ack(cs_gateway_t *gw, void *conn, const char *id, int64_t now)
{
    char detail[256];
    return cs_gateway_ack(gw, conn, id, now, detail, sizeof(detail));
}

static size_t pushes_to(const rec_t *r, void *conn)
{
    size_t n = 0;
    for (size_t i = 0; i < r->n; i++)
        n += r->conn[i] == conn;
    return n;
}

static int A, B; /* two connections, by address */

static void test_serve_validation(void)
{
    rec_t r;
    cs_gateway_t *gw = gw_make(&r, 10, 1000, 5000);
    char detail[256];
    json_t *bad = json_string("bad name"), *ok = json_string("c"), *zero = json_integer(0),
           *ins = json_pack("[i]", 3);

    CHECK(cs_gateway_serve(gw, &A, NULL, NULL, NULL, 0, detail, sizeof(detail)) == CS_ERR_MISSING_FIELD);
    CHECK(cs_gateway_serve(gw, &A, bad, NULL, NULL, 0, detail, sizeof(detail)) == CS_ERR_INVALID_FIELD);
    CHECK(cs_gateway_serve(gw, &A, ok, NULL, zero, 0, detail, sizeof(detail)) == CS_ERR_INVALID_FIELD);
    CHECK(strstr(detail, "concurrency") != NULL);
    CHECK(cs_gateway_serve(gw, &A, ok, ins, NULL, 0, detail, sizeof(detail)) == CS_ERR_INVALID_FIELD);
    CHECK(strstr(detail, "inputs[0]") != NULL);
    cs_gateway_stats_t st;
    cs_gateway_stats(gw, &st);
    CHECK(st.crews == 0 && st.runtimes == 0);
    json_decref(bad);
    json_decref(ok);
    json_decref(zero);
    json_decref(ins);
    cs_gateway_free(gw);
}

/* Least busy first, within each runtime's concurrency; the rest waits; a final status frees a place. */
static void test_least_busy_and_queue(void)
{
    rec_t r;
    cs_gateway_t *gw = gw_make(&r, 3, 1000, 5000);
    char id[10][37];

    CHECK(serve(gw, &A, "c", 2, 0) == CS_OK);
    CHECK(serve(gw, &B, "c", 1, 0) == CS_OK);
    for (int i = 0; i < 3; i++)
        CHECK(kick(gw, "c", 0, id[i]) == CS_OK);
    CHECK(r.n == 3);
    CHECK(pushes_to(&r, &A) == 2 && pushes_to(&r, &B) == 1);
    CHECK(r.conn[0] != r.conn[1]); /* the second went to the other, least busy, runtime */
    /* All busy: three wait, a fourth is refused (the queue holds 3). */
    for (int i = 3; i < 6; i++)
        CHECK(kick(gw, "c", 0, id[i]) == CS_OK);
    CHECK(kick(gw, "c", 0, id[6]) == CS_ERR_UNAVAILABLE);
    CHECK(r.n == 3);
    cs_gateway_stats_t st;
    cs_gateway_stats(gw, &st);
    CHECK(st.queued == 3 && st.offered == 3 && st.refused_full == 1);
    /* Acked and finished: the oldest waiting one goes to that runtime. */
    CHECK(ack(gw, r.conn[0], r.id[0], 1) == CS_OK);
    cs_gateway_finished(gw, r.id[0], strlen(r.id[0]), 2);
    CHECK(r.n == 4);
    CHECK_STR(r.id[3], id[3]);
    json_t *crews = cs_gateway_crews_json(gw);
    json_t *c0 = json_array_get(json_object_get(crews, "crews"), 0);
    CHECK_STR(json_string_value(json_object_get(c0, "crew")), "c");
    CHECK(json_integer_value(json_object_get(c0, "concurrency")) == 3);
    CHECK(json_integer_value(json_object_get(c0, "busy")) == 3);
    CHECK(json_integer_value(json_object_get(c0, "queued")) == 2);
    json_decref(crews);
    json_t *in = cs_gateway_inputs_json(gw, "c");
    CHECK_STR(json_string_value(json_array_get(json_object_get(in, "inputs"), 0)), "topic");
    json_decref(in);
    cs_gateway_free(gw);
}

/* An ack that does not come in time: the kickoff goes to the other runtime; the late ack is refused. */
static void test_ack_timeout(void)
{
    rec_t r;
    cs_gateway_t *gw = gw_make(&r, 10, 1000, 5000);
    char id[37];

    CHECK(serve(gw, &A, "c", 1, 0) == CS_OK);
    CHECK(kick(gw, "c", 0, id) == CS_OK);
    REQUIRE(r.n == 1 && r.conn[0] == &A);
    CHECK(serve(gw, &B, "c", 1, 10) == CS_OK);
    CHECK(cs_gateway_next_deadline(gw) == 1000);
    cs_gateway_tick(gw, 999);
    CHECK(r.n == 1);
    cs_gateway_tick(gw, 1000);
    REQUIRE(r.n == 2);
    CHECK(r.conn[1] == &B); /* not back to the runtime that did not answer */
    CHECK_STR(r.id[1], id);
    CHECK(ack(gw, &A, id, 1001) == CS_ERR_CONFLICT);
    CHECK(ack(gw, &B, id, 1002) == CS_OK);
    CHECK(ack(gw, &B, id, 1003) == CS_OK); /* repeated */
    CHECK(cs_gateway_next_deadline(gw) == -1);
    cs_gateway_tick(gw, 100000);
    CHECK(r.n == 2);
    cs_gateway_stats_t st;
    cs_gateway_stats(gw, &st);
    CHECK(st.redispatched_timeout == 1 && st.acks_refused == 1 && st.acked == 1 && st.running == 1);
    /* Only the runtime that did not answer is free: it is offered the kickoff again, and its ack holds. */
    char id2[37];
    CHECK(kick(gw, "c", 2000, id2) == CS_OK);
    REQUIRE(r.n == 3 && r.conn[2] == &A);
    cs_gateway_tick(gw, 3000);
    REQUIRE(r.n == 4);
    CHECK(r.conn[3] == &A);
    CHECK_STR(r.id[3], id2);
    CHECK(ack(gw, &A, id2, 3001) == CS_OK);
    cs_gateway_stats(gw, &st);
    CHECK(st.queued == 0 && st.running == 2 && st.redispatched_timeout == 2);
    CHECK(ack(gw, &A, "no-such", 3002) == CS_ERR_NOT_FOUND);
    cs_gateway_free(gw);
}

/* A connection lost before the ack: its kickoffs go to the other runtime, in their order; one lost after
 * the ack is never given again. */
static void test_lost_connection_never_twice(void)
{
    rec_t r;
    cs_gateway_t *gw = gw_make(&r, 100, 10000, 5000);
    char id[8][37];

    CHECK(serve(gw, &A, "c", 4, 0) == CS_OK);
    for (int i = 0; i < 4; i++)
        CHECK(kick(gw, "c", 0, id[i]) == CS_OK);
    REQUIRE(pushes_to(&r, &A) == 4);
    CHECK(ack(gw, &A, id[0], 1) == CS_OK); /* the first is A's own */
    CHECK(serve(gw, &B, "c", 2, 2) == CS_OK);
    cs_gateway_conn_gone(gw, &A, 3);
    /* Two of the three unacknowledged go to B now, the third waits for a free place. */
    REQUIRE(r.n == 6);
    CHECK(r.conn[4] == &B && r.conn[5] == &B);
    CHECK_STR(r.id[4], id[1]);
    CHECK_STR(r.id[5], id[2]);
    CHECK(ack(gw, &B, id[1], 4) == CS_OK);
    CHECK(ack(gw, &B, id[2], 4) == CS_OK);
    cs_gateway_finished(gw, id[1], strlen(id[1]), 5);
    REQUIRE(r.n == 7);
    CHECK_STR(r.id[6], id[3]);
    /* Never again the one A acknowledged: not pushed, its ack unknown, its end ignored. */
    for (size_t i = 1; i < r.n; i++)
        CHECK(strcmp(r.id[i], id[0]) != 0);
    CHECK(!cs_gateway_holds(gw, id[0], strlen(id[0])));
    CHECK(ack(gw, &B, id[0], 6) == CS_ERR_NOT_FOUND);
    cs_gateway_stats_t st;
    cs_gateway_stats(gw, &st);
    CHECK(st.lost_after_ack == 1 && st.redispatched_lost == 3 && st.runtimes == 1);
    cs_gateway_free(gw);
}

/* Nobody serves the crew: the kickoff waits gateway.queue_timeout_s, then fails; 0 refuses at once. */
static void test_queue_timeout(void)
{
    rec_t r;
    cs_gateway_t *gw = gw_make(&r, 10, 1000, 5000);
    char id[3][37], detail[256];
    cs_err_t e = CS_OK;

    CHECK(cs_gateway_pick_crew(gw, NULL, NULL, &e, detail, sizeof(detail)) == NULL &&
          e == CS_ERR_UNAVAILABLE);
    CHECK(kick(gw, "later", 0, id[0]) == CS_OK);
    CHECK(kick(gw, "never", 100, id[1]) == CS_OK);
    CHECK(cs_gateway_next_deadline(gw) == 5000);
    CHECK(serve(gw, &A, "later", 1, 2000) == CS_OK); /* in time */
    REQUIRE(r.n == 1);
    CHECK_STR(r.id[0], id[0]);
    cs_gateway_tick(gw, 5099);
    CHECK(r.n_failed == 0);
    cs_gateway_tick(gw, 5100);
    REQUIRE(r.n_failed == 1);
    CHECK_STR(r.failed[0], id[1]);
    CHECK(!cs_gateway_holds(gw, id[1], strlen(id[1])));
    /* One crew served: the default. */
    CHECK_STR(cs_gateway_pick_crew(gw, NULL, NULL, &e, detail, sizeof(detail)), "later");
    CHECK(serve(gw, &B, "other", 1, 6000) == CS_OK);
    CHECK(cs_gateway_pick_crew(gw, NULL, NULL, &e, detail, sizeof(detail)) == NULL &&
          e == CS_ERR_MISSING_FIELD);
    CHECK_STR(cs_gateway_pick_crew(gw, NULL, "other", &e, detail, sizeof(detail)), "other");
    /* Missing input the crew declares. */
    json_t *in = json_object();
    id[2][0] = '\0';
    CHECK(cs_gateway_kickoff(gw, "other", in, 6000, id[2], detail, sizeof(detail)) == CS_ERR_INVALID_FIELD);
    CHECK(strstr(detail, "topic") != NULL);
    json_decref(in);
    cs_gateway_limits_t lim = {10, 1000, 0};
    cs_gateway_set_limits(gw, &lim);
    CHECK(kick(gw, "nobody", 7000, id[2]) == CS_ERR_UNAVAILABLE);
    cs_gateway_free(gw);
}

/* A push that cannot be queued leaves the kickoff waiting; the connection's end hands it on. */
static void test_push_failure(void)
{
    rec_t r;
    cs_gateway_t *gw = gw_make(&r, 10, 1000, 5000);
    char id[37];

    CHECK(serve(gw, &A, "c", 1, 0) == CS_OK);
    r.refuse = 1;
    CHECK(kick(gw, "c", 0, id) == CS_OK);
    r.refuse = 0;
    CHECK(r.n == 0);
    CHECK(serve(gw, &B, "c", 1, 1) == CS_OK);
    REQUIRE(r.n == 1);
    CHECK(r.conn[0] == &B);
    cs_gateway_conn_gone(gw, &A, 2);
    cs_gateway_conn_gone(gw, &B, 3);
    cs_gateway_stats_t st;
    cs_gateway_stats(gw, &st);
    CHECK(st.push_failures == 1 && st.queued == 1 && st.runtimes == 0);
    cs_gateway_free(gw);
}

/* Cluster mode (ops->remote): a kickoff of a crew nobody here serves is handed over (1), queued here (0:
 * e.g. the one a claim gives this node) or refused (-1); one of a crew served here never asks. */
static int remote_answer, remote_calls;
static char remote_id[37];

static int fake_remote(void *data, const char *id, const char *crew, const json_t *inputs, char *detail,
                       size_t detail_len)
{
    (void)data;
    CHECK_STR(crew, "far");
    CHECK(json_is_object(inputs));
    CHECK(strlen(id) == 36);
    snprintf(remote_id, sizeof(remote_id), "%s", id);
    remote_calls++;
    if (remote_answer < 0)
        snprintf(detail, detail_len, "refused by the cluster");
    return remote_answer;
}

static void test_remote(void)
{
    rec_t r;
    cs_gateway_ops_t ops = {fake_push, fake_failed, fake_changed, &r, fake_remote};
    cs_gateway_limits_t lim = {8, 1000, 5000};
    cs_gateway_t *gw;
    cs_gateway_stats_t st;
    char id[37] = "";
    int conn = 0;

    memset(&r, 0, sizeof(r));
    REQUIRE(cs_gateway_new(&gw, &ops, &lim) == 0);
    /* Handed over: the gateway holds nothing of it, the id is the one ops->remote saw. */
    remote_answer = 1;
    CHECK(kick(gw, "far", 0, id) == CS_OK);
    CHECK(remote_calls == 1);
    CHECK_STR(id, remote_id);
    CHECK(!cs_gateway_holds(gw, id, strlen(id)));
    cs_gateway_stats(gw, &st);
    CHECK(st.remote == 1 && st.kickoffs == 1 && st.queued == 0);
    /* Refused: 503, nothing held. */
    remote_answer = -1;
    id[0] = '\0';
    CHECK(kick(gw, "far", 0, id) == CS_ERR_UNAVAILABLE);
    cs_gateway_stats(gw, &st);
    CHECK(st.kickoffs == 1 && st.queued == 0);
    /* Queued here under the id drawn (a claimed kickoff whose runtimes left meanwhile). */
    remote_answer = 0;
    id[0] = '\0';
    CHECK(kick(gw, "far", 0, id) == CS_OK);
    CHECK(remote_calls == 3);
    CHECK_STR(id, remote_id);
    CHECK(cs_gateway_holds(gw, id, strlen(id)));
    /* Served here: dispatched here, ops->remote not asked. */
    CHECK(serve(gw, &conn, "far", 2, 0) == CS_OK);
    CHECK(r.n == 1); /* the queued one */
    id[0] = '\0';
    CHECK(kick(gw, "far", 0, id) == CS_OK);
    CHECK(remote_calls == 3 && r.n == 2);
    CHECK(cs_gateway_serves(gw, "far") && !cs_gateway_serves(gw, "near"));
    cs_gateway_free(gw);
}

int main(void)
{
    RUN(test_serve_validation);
    RUN(test_least_busy_and_queue);
    RUN(test_ack_timeout);
    RUN(test_lost_connection_never_twice);
    RUN(test_queue_timeout);
    RUN(test_push_failure);
    RUN(test_remote);
    CT_DONE();
}
