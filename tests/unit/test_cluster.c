/*
 * test_cluster.c - the publish script and the ring as a cache of Redis (cluster.c), with two nodes (two
 * stores, two clusters) on one loop and a real redis-server: events submitted in one turn go out as one
 * script call and are acknowledged with Redis' seqs; a re-post is a duplicate with its seq; both nodes
 * hold the same frames under Redis' epoch; the second node's pub/sub connection killed while events are
 * posted: the next event shows the hole and XRANGE fills it, in order; Redis restarted empty: a new
 * epoch, the ring's old history dropped. The wire read by cmsg.c: batch messages (well formed and not),
 * the script's reply; what the script leaves in Redis (index entries only for producers' own ids, TTLs);
 * a malformed message on the channel counted, not stored.
 */
#include "../../common/buf.c"
#include "../../src/answer.c"
#include "../../src/cluster.c"
#include "../../src/cmsg.c"
#include "../../src/cursor.c"
#include "../../src/err.c"
#include "../../src/event.c"
#include "../../src/filter.c"
#include "../../src/hitl.c"
#include "../../src/jscan.c"
#include "../../src/log.c"
#include "../../src/loop.c"
#include "../../src/redis.c"
#include "../../src/status.c"
#include "../../src/store.c"

#include "ctest.h"
#include "redis_server.h"

static test_redis_t srv;
static cs_loop_t *loop;

typedef int (*cond_fn)(void);
static cond_fn until_cond;

static void on_poll(cs_timer_t *t)
{
    if (until_cond())
        cs_loop_stop(loop);
    else
        cs_timer_start(t, 5);
}

static void on_deadline(cs_timer_t *t)
{
    (void)t;
    cs_loop_stop(loop);
}

static int run_until(cond_fn cond, int ms)
{
    cs_timer_t poll, deadline;
    until_cond = cond;
    cs_timer_init(&poll, loop, on_poll, NULL);
    cs_timer_init(&deadline, loop, on_deadline, NULL);
    cs_loop_update_now(loop);
    cs_timer_start(&poll, 5);
    cs_timer_start(&deadline, ms);
    cs_loop_run(loop);
    cs_timer_stop(&poll);
    cs_timer_stop(&deadline);
    return cond();
}

typedef struct node {
    cs_store_t *store;
    cs_cluster_t *c;
} node_t;

static node_t n1, n2;

static void node_new(node_t *n, const char *name)
{
    cs_store_limits_t lim = {.ring_events = 64,
                             .ring_bytes = 1 << 20,
                             .max_bytes = 16 << 20,
                             .retain_s = 60,
                             .global_events = 256};
    cs_cluster_opts_t o = {
        .redis = srv.addr, .node = name, .prefix = "t:", .ring_events = 64, .retain_s = 60};
    REQUIRE(cs_store_new(&n->store, &lim) == 0);
    REQUIRE(cs_cluster_new(&n->c, loop, n->store, &o) == 0);
}

static void node_free(node_t *n)
{
    cs_cluster_free(n->c);
    cs_store_free(n->store);
}

static int both_ready(void)
{
    return !cs_cluster_degraded(n1.c, NULL) && !cs_cluster_degraded(n2.c, NULL);
}

/* ---- publishing with a completion ---- */

#define MAXW 64
static struct {
    int called;
    cs_err_t e;
    uint64_t seq;
    int dup;
} w[MAXW];
static int n_called;

static void on_done(void *data, cs_err_t e, const cs_publish_t *pub, const char *detail)
{
    int i = (int)(intptr_t)data;
    (void)detail;
    w[i].called++;
    w[i].e = e;
    w[i].seq = pub->seq;
    w[i].dup = pub->duplicate;
    n_called++;
}

static int want_called;
static int all_called(void)
{
    return n_called >= want_called;
}

static cs_err_t post(node_t *n, int i, const char *line)
{
    cs_store_done_t done = {on_done, (void *)(intptr_t)i};
    cs_publish_t pub;
    char detail[256];
    json_t *ev = json_loads(line, 0, NULL);
    cs_err_t e;

    REQUIRE(ev != NULL);
    e = cs_store_submit_raw(n->store, ev, line, strlen(line), cs_unix_ms(), &done, &pub, detail,
                            sizeof(detail));
    json_decref(ev);
    return e;
}

static uint64_t ring_next(node_t *n, const char *x)
{
    cs_exec_t *ex = cs_store_find(n->store, x, strlen(x));
    uint64_t first = 0, next = 0;
    if (ex != NULL)
        cs_exec_seqs(ex, &first, &next);
    return next;
}

static const char *want_x;
static uint64_t want_next;
static int n2_has(void)
{
    return ring_next(&n2, want_x) == want_next;
}

/* The same frames (bytes, seqs) on both nodes for x, every seq in [1, next). */
static void check_same(const char *x, uint64_t next)
{
    cs_exec_t *a = cs_store_find(n1.store, x, strlen(x)), *b = cs_store_find(n2.store, x, strlen(x));
    REQUIRE(a != NULL && b != NULL);
    CHECK(cs_exec_epoch(a) == cs_exec_epoch(b));
    for (uint64_t s = 1; s < next; s++) {
        cs_frame_t *fa = cs_exec_frame(a, s), *fb = cs_exec_frame(b, s);
        CHECK(fa != NULL && fb != NULL);
        if (fa != NULL && fb != NULL)
            CHECK(fa->json_len == fb->json_len && memcmp(fa->json, fb->json, fa->json_len) == 0);
    }
}

static void test_publish_and_share(void)
{
    char line[160];

    memset(w, 0, sizeof(w));
    n_called = 0;
    for (int i = 0; i < 5; i++) {
        snprintf(line, sizeof(line), "{\"execution_id\":\"x1\",\"type\":\"log\",\"event_id\":\"e%d\"}", i);
        CHECK(post(&n1, i, line) == CS_PENDING);
    }
    CHECK(w[0].called == 0); /* not before Redis answered */
    want_called = 5;
    REQUIRE(run_until(all_called, 3000));
    for (int i = 0; i < 5; i++)
        CHECK(w[i].called == 1 && w[i].e == CS_OK && w[i].seq == (uint64_t)i + 1 && !w[i].dup);
    cs_cluster_stats_t st;
    cs_cluster_stats(n1.c, &st);
    CHECK(st.batches == 1 && st.published == 5); /* one script call for the turn's five */
    CHECK(ring_next(&n1, "x1") == 6);
    /* The same event posted on both nodes in one turn (neither ring has it yet): Redis' index makes the
     * second a duplicate with the first one's seq. */
    want_x = "x1";
    want_next = 6;
    REQUIRE(run_until(n2_has, 3000));
    CHECK(post(&n1, 10, "{\"execution_id\":\"x2\",\"type\":\"log\",\"event_id\":\"same\"}") == CS_PENDING);
    CHECK(post(&n2, 11, "{\"execution_id\":\"x2\",\"type\":\"log\",\"event_id\":\"same\"}") == CS_PENDING);
    want_called = 7;
    REQUIRE(run_until(all_called, 3000));
    CHECK(w[10].e == CS_OK && w[10].seq == 1 && !w[10].dup);
    CHECK(w[11].e == CS_OK && w[11].seq == 1 && w[11].dup);
    want_x = "x2";
    want_next = 2;
    REQUIRE(run_until(n2_has, 3000));
    check_same("x2", 2);
    check_same("x1", 6);
    /* The same type and id, now in n2's ring: acknowledged at once. */
    cs_publish_t pub;
    char detail[128];
    json_t *ev = json_loads("{\"execution_id\":\"x1\",\"type\":\"log\",\"event_id\":\"e2\"}", 0, NULL);
    CHECK(cs_store_submit_raw(n2.store, ev, NULL, 0, cs_unix_ms(), NULL, &pub, detail, sizeof(detail)) ==
          CS_OK);
    CHECK(pub.duplicate && pub.seq == 3);
    json_decref(ev);
    CHECK(ring_next(&n1, "x1") == 6);
}

/* n2's channel lost while n1 posts 6 and 7: n2's ring stays at 6; once it is back, it reads 6 and 7 with
 * XRANGE at once (its executions are checked against Redis), then 8 comes on the channel. */
static void test_hole_filled(void)
{
    cs_cluster_stats_t st;

    memset(w, 0, sizeof(w));
    n_called = 0;
    cs_redis_reset(n2.c->sub, "test: channel dropped"); /* back after the back-off (100 ms) */
    CHECK(post(&n1, 0, "{\"execution_id\":\"x1\",\"type\":\"log\",\"n\":6}") == CS_PENDING);
    CHECK(post(&n1, 1, "{\"execution_id\":\"x1\",\"type\":\"log\",\"n\":7}") == CS_PENDING);
    want_called = 2;
    REQUIRE(run_until(all_called, 3000));
    CHECK(w[0].seq == 6 && w[1].seq == 7);
    CHECK(ring_next(&n1, "x1") == 8);
    CHECK(ring_next(&n2, "x1") == 6); /* n2 missed them */
    REQUIRE(run_until(both_ready, 5000));
    /* Caught up as soon as it is subscribed again (HMGET seq, XRANGE), not at the next event. */
    want_x = "x1";
    want_next = 8;
    REQUIRE(run_until(n2_has, 3000));
    check_same("x1", 8);
    CHECK(post(&n1, 2, "{\"execution_id\":\"x1\",\"type\":\"log\",\"n\":8}") == CS_PENDING);
    want_x = "x1";
    want_next = 9;
    REQUIRE(run_until(n2_has, 3000));
    check_same("x1", 9);
    cs_cluster_stats(n2.c, &st);
    CHECK(st.fills == 1 && st.lost == 0);
}

static int n1_down(void)
{
    return cs_cluster_degraded(n1.c, NULL);
}

/* Redis restarted without its data: refused while down, then a new epoch and seqs from 1. */
static void test_redis_restarted_empty(void)
{
    cs_exec_t *ex = cs_store_find(n1.store, "x1", 2);
    uint64_t old = cs_exec_epoch(ex);

    test_redis_kill(&srv);
    REQUIRE(run_until(n1_down, 3000));
    CHECK(post(&n1, 0, "{\"execution_id\":\"x1\",\"type\":\"log\"}") == CS_ERR_UNAVAILABLE);
    REQUIRE(test_redis_start(&srv) == 0);
    REQUIRE(run_until(both_ready, 8000));
    memset(w, 0, sizeof(w));
    n_called = 0;
    CHECK(post(&n1, 0, "{\"execution_id\":\"x1\",\"type\":\"log\",\"again\":1}") == CS_PENDING);
    want_called = 1;
    REQUIRE(run_until(all_called, 3000));
    CHECK(w[0].e == CS_OK && w[0].seq == 1);
    want_next = 2;
    REQUIRE(run_until(n2_has, 3000));
    ex = cs_store_find(n1.store, "x1", 2);
    CHECK(cs_exec_epoch(ex) != old);
    check_same("x1", 2);
}

/* ---- the wire (cmsg.c) ---- */

static int batch_ok(const char *p)
{
    size_t count;
    cs_cmsg_iter_t it;
    return cs_cmsg_batch(p, strlen(p), &count, &it) == 0;
}

static void test_cmsg_batch(void)
{
    const char *ok = "*2\n7 1 x-1 5\n{\"a\"}7 2 y 2\n{}";
    size_t count, n = strlen(ok);
    cs_cmsg_iter_t it;
    cs_cmsg_t m;

    REQUIRE(cs_cmsg_batch(ok, n, &count, &it) == 0);
    CHECK(count == 2);
    REQUIRE(cs_cmsg_next(&it, &m) == 0);
    CHECK(m.epoch == 7 && m.seq == 1 && m.exec_len == 3 && memcmp(m.exec, "x-1", 3) == 0);
    CHECK(m.json_len == 5 && memcmp(m.json, "{\"a\"}", 5) == 0);
    REQUIRE(cs_cmsg_next(&it, &m) == 0);
    CHECK(m.seq == 2 && m.exec_len == 1 && m.json_len == 2 && it.off == n);
    CHECK(cs_cmsg_next(&it, &m) != 0);
    /* JSON with newlines and spaces needs no escaping. */
    CHECK(batch_ok("*1\n1 1 x 5\n{\n \n}"));
    CHECK(!batch_ok("*0\n"));                          /* no event */
    CHECK(!batch_ok("*3\n7 1 x 2\n{}7 2 x 2\n{}"));    /* fewer than the count */
    CHECK(!batch_ok("*1\n7 1 x 2\n{}7 2 x 2\n{}"));    /* more */
    CHECK(!batch_ok("*1\n7 1 x 3\n{}"));               /* the JSON shorter than its length */
    CHECK(!batch_ok("*1\n7 1 x 2\n{} "));              /* bytes after the last */
    CHECK(!batch_ok("*1\n7 0 x 2\n{}"));               /* seq 0 */
    CHECK(!batch_ok("*1\n0 1 x 2\n{}"));               /* epoch 0 */
    CHECK(!batch_ok("*1\n281474976710656 1 x 2\n{}")); /* epoch past 48 bits */
    CHECK(!batch_ok("*1\n7 1 x/y 2\n{}"));             /* not an execution id */
    CHECK(!batch_ok("*1\n7 1 x -2\n{}"));
    CHECK(!batch_ok("*1\n7 1 x 18446744073709551616\n{}"));
    CHECK(!batch_ok("*1\n7 1 x 2"));
    CHECK(!batch_ok("7 1 x\n{}")); /* the one-event form is not a batch */
    CHECK(cs_cmsg_parse("7 1 x\n{}", 8, &m) == 0 && m.seq == 1 && m.json_len == 2);
}

/* The grouped form the script writes since session 11: per execution "<epoch> <first> <exec> <count>
 * <bytes>\n" and its events, each "<json_len>\n<json>", seqs counted from first. */
static void test_cmsg_batch_grouped(void)
{
    const char *ok = "#2\n7 4 x-1 2 11\n5\n{\"a\"}2\n{}9 1 y 1 7\n5\n{\n \n}";
    size_t count, n = strlen(ok);
    cs_cmsg_iter_t it;
    cs_cmsg_t m;

    REQUIRE(cs_cmsg_batch(ok, n, &count, &it) == 0);
    CHECK(count == 3);
    REQUIRE(cs_cmsg_next(&it, &m) == 0);
    CHECK(m.epoch == 7 && m.seq == 4 && m.exec_len == 3 && memcmp(m.exec, "x-1", 3) == 0);
    CHECK(m.json_len == 5 && memcmp(m.json, "{\"a\"}", 5) == 0);
    REQUIRE(cs_cmsg_next(&it, &m) == 0);
    CHECK(m.epoch == 7 && m.seq == 5 && m.exec_len == 3 && m.json_len == 2 && memcmp(m.json, "{}", 2) == 0);
    REQUIRE(cs_cmsg_next(&it, &m) == 0);
    CHECK(m.epoch == 9 && m.seq == 1 && m.exec_len == 1 && m.exec[0] == 'y' && m.json_len == 5);
    CHECK(it.off == n);
    CHECK(cs_cmsg_next(&it, &m) != 0);
    const char *bad[] = {
        "#0\n",                                         /* no group */
        "#2\n7 4 x 1 4\n2\n{}",                         /* fewer groups than the count */
        "#1\n7 4 x 2 4\n2\n{}",                         /* fewer events than the group's count */
        "#1\n7 4 x 1 8\n2\n{}2\n{}",                    /* more */
        "#1\n7 4 x 1 5\n2\n{}",                         /* bytes past the message */
        "#1\n7 4 x 1 4\n2\n{} ",                        /* bytes after the last group */
        "#1\n7 4 x 1 3\n2\n{}",                         /* the group's bytes cut an event */
        "#1\n7 4 x 1 3\n0\n",                           /* an empty JSON */
        "#1\n7 0 x 1 4\n2\n{}",                         /* seq 0 */
        "#1\n0 4 x 1 4\n2\n{}",                         /* epoch 0 */
        "#1\n7 4 x/y 1 4\n2\n{}",                       /* not an execution id */
        "#1\n7 4 x 0 4\n2\n{}",                         /* a group of no event */
        "#1\n7 4 x 501 4\n2\n{}",                       /* more than CS_CMSG_ENTRY_MAX */
        "#1\n7 18446744073709551615 x 2 8\n2\n{}2\n{}", /* seqs past 64 bits */
        "#1\n7 4 x 1\n2\n{}",                           /* no byte count */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
        CHECK(!batch_ok(bad[i]));
}

static void test_cmsg_script_reply(void)
{
    redisReply e[4], *el[4] = {&e[0], &e[1], &e[2], &e[3]};
    redisReply r = {.type = REDIS_REPLY_ARRAY, .elements = 4, .element = el};
    cs_cmsg_result_t res[2];

    memset(e, 0, sizeof(e));
    for (int i = 0; i < 4; i++)
        e[i].type = REDIS_REPLY_INTEGER;
    e[0].integer = 5, e[1].integer = 99, e[2].integer = -3, e[3].integer = 99;
    REQUIRE(cs_cmsg_script_reply(&r, 2, res) == 0);
    CHECK(res[0].seq == 5 && res[0].epoch == 99 && !res[0].duplicate);
    CHECK(res[1].seq == 3 && res[1].epoch == 99 && res[1].duplicate);
    CHECK(cs_cmsg_script_reply(&r, 1, res) != 0); /* another count */
    e[2].integer = 0;
    CHECK(cs_cmsg_script_reply(&r, 2, res) != 0);
    e[2].integer = 3, e[3].integer = 0;
    CHECK(cs_cmsg_script_reply(&r, 2, res) != 0);
    e[3].integer = (long long)CS_EPOCH_MASK + 1;
    CHECK(cs_cmsg_script_reply(&r, 2, res) != 0);
    e[3].integer = 99, e[3].type = REDIS_REPLY_STRING;
    CHECK(cs_cmsg_script_reply(&r, 2, res) != 0);
    /* The reply of this version: the receipt text, exactly n events. */
    {
        char t[] = "5 99 -3 99";
        redisReply sr = {.type = REDIS_REPLY_STRING, .str = t, .len = strlen(t)};
        memset(res, 0, sizeof(res));
        REQUIRE(cs_cmsg_script_reply(&sr, 2, res) == 0);
        CHECK(res[0].seq == 5 && res[0].epoch == 99 && !res[0].duplicate);
        CHECK(res[1].seq == 3 && res[1].epoch == 99 && res[1].duplicate);
        CHECK(cs_cmsg_script_reply(&sr, 1, res) != 0); /* more than n */
        CHECK(cs_cmsg_script_reply(&sr, 3, res) != 0); /* fewer */
        const char *bad[] = {"5 99 -3 99 ", "5 99  -3 99", "0 99 -3 99",  "5 0 -3 99",
                             "5 99 -3 x9",  "5 99 --3 99", "5+2 99 3 99", "-5+1 99 3 99",
                             "5+0 99",      "5+ 99",       "5+501 99"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
            sr.str = (char *)bad[i], sr.len = strlen(bad[i]);
            CHECK(cs_cmsg_script_reply(&sr, 2, res) != 0);
        }
    }
    /* A group stored whole: "<first>+<count> <epoch>" stands for count events with consecutive seqs. */
    {
        char t[] = "5+3 99 -2 99 1 7";
        redisReply sr = {.type = REDIS_REPLY_STRING, .str = t, .len = strlen(t)};
        cs_cmsg_result_t g[5];
        REQUIRE(cs_cmsg_script_reply(&sr, 5, g) == 0);
        for (int i = 0; i < 3; i++)
            CHECK(g[i].seq == (uint64_t)(5 + i) && g[i].epoch == 99 && !g[i].duplicate);
        CHECK(g[3].seq == 2 && g[3].duplicate && g[4].seq == 1 && g[4].epoch == 7 && !g[4].duplicate);
        CHECK(cs_cmsg_script_reply(&sr, 4, g) != 0);
        CHECK(cs_cmsg_script_reply(&sr, 6, g) != 0);
        CHECK(cs_cmsg_receipt(t, strlen(t), 2, &g[0]) == 0 && g[0].seq == 7 && g[0].epoch == 99);
        CHECK(cs_cmsg_receipt(t, strlen(t), 3, &g[0]) == 0 && g[0].seq == 2 && g[0].duplicate);
        CHECK(cs_cmsg_receipt(t, strlen(t), 4, &g[0]) == 0 && g[0].seq == 1 && g[0].epoch == 7);
        CHECK(cs_cmsg_receipt(t, strlen(t), 5, &g[0]) != 0);
    }
}

/* A node's report of itself (the hash "<prefix>nodes"): version 1, eight decimals, 0 allowed. */
static void test_cmsg_node(void)
{
    cs_cmsg_node_t f;
    const char *ok = "1 1764000000000 10 0 12 0 1 300 7";

    REQUIRE(cs_cmsg_node(ok, strlen(ok), &f) == 0);
    CHECK(f.ms == 1764000000000ull && f.published == 10 && f.failed == 0 && f.inserted == 12 && f.lost == 0);
    CHECK(f.history_failed == 1 && f.subscribers == 300 && f.executions == 7);
    const char *bad[] = {"",
                         "1",
                         "2 1764000000000 10 0 12 0 1 300 7", /* a later version */
                         "1 1764000000000 10 0 12 0 1 300",   /* a field short */
                         "1 1764000000000 10 0 12 0 1 300 7 8",
                         "1 1764000000000 10 0 12 0 1 300 7 ",
                         "1 1764000000000 10 00 12 0 1 300 7",
                         "1 1764000000000 10 -1 12 0 1 300 7",
                         "1  1764000000000 10 0 12 0 1 300 7",
                         "1 18446744073709551616 10 0 12 0 1 300 7"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
        CHECK(cs_cmsg_node(bad[i], strlen(bad[i]), &f) != 0);
}

/* An XRANGE reply from its RESP text. */
static redisReply *resp(const char *text)
{
    redisReader *rd = redisReaderCreate();
    void *r = NULL;
    REQUIRE(rd != NULL);
    REQUIRE(redisReaderFeed(rd, text, strlen(text)) == REDIS_OK);
    REQUIRE(redisReaderGetReply(rd, &r) == REDIS_OK && r != NULL);
    redisReaderFree(rd);
    return r;
}

/* Stream entries: a call's events of one execution, grouped (id its last seq, fields f -> the first seq
 * and b -> the events), per event (fields "<seq>" -> JSON, session 10), and the one-event shape of before
 * (field j); anything else is refused whole. */
static void test_cmsg_xrange(void)
{
    redisReply *r =
        resp("*4\r\n"
             "*2\r\n$3\r\n7-0\r\n*2\r\n$1\r\nj\r\n$2\r\n{}\r\n"
             "*2\r\n$4\r\n10-0\r\n*6\r\n$1\r\n8\r\n$1\r\na\r\n$1\r\n9\r\n$1\r\nb\r\n"
             "$2\r\n10\r\n$1\r\nc\r\n"
             "*2\r\n$4\r\n13-0\r\n*4\r\n$1\r\nf\r\n$2\r\n11\r\n$1\r\nb\r\n$12\r\n1\nd2\n\nf3\nghi\r\n"
             "*2\r\n$4\r\n14-0\r\n*2\r\n$1\r\nk\r\n$1\r\nx\r\n");
    cs_cmsg_entry_t e[4];

    CHECK(cs_cmsg_xrange_count(r, 0) == 1);
    cs_cmsg_xrange_events(r, 0, e);
    CHECK(e[0].seq == 7 && e[0].json_len == 2 && memcmp(e[0].json, "{}", 2) == 0);
    REQUIRE(cs_cmsg_xrange_count(r, 1) == 3);
    cs_cmsg_xrange_events(r, 1, e);
    for (size_t k = 0; k < 3; k++)
        CHECK(e[k].seq == 8 + k && e[k].json_len == 1 && e[k].json[0] == (char)('a' + k));
    REQUIRE(cs_cmsg_xrange_count(r, 2) == 3);
    cs_cmsg_xrange_events(r, 2, e);
    CHECK(e[0].seq == 11 && e[0].json_len == 1 && e[0].json[0] == 'd');
    CHECK(e[1].seq == 12 && e[1].json_len == 2 && memcmp(e[1].json, "\nf", 2) == 0);
    CHECK(e[2].seq == 13 && e[2].json_len == 3 && memcmp(e[2].json, "ghi", 3) == 0);
    CHECK(cs_cmsg_xrange_count(r, 3) < 0); /* a field that is neither j nor a seq */
    CHECK(cs_cmsg_xrange_count(r, 4) < 0); /* past the end */
    freeReplyObject(r);
    const char *bad[] = {
        "*1\r\n*2\r\n$4\r\n11-0\r\n*4\r\n$1\r\n8\r\n$1\r\na\r\n$1\r\n9\r\n$1\r\nb\r\n", /* last != id */
        "*1\r\n*2\r\n$3\r\n9-0\r\n*4\r\n$1\r\n9\r\n$1\r\na\r\n$1\r\n9\r\n$1\r\nb\r\n",  /* not ascending */
        "*1\r\n*2\r\n$3\r\n9-0\r\n*2\r\n$1\r\n9\r\n$0\r\n\r\n",                         /* no JSON */
        "*1\r\n*2\r\n$3\r\n0-0\r\n*2\r\n$1\r\nj\r\n$1\r\na\r\n",                        /* seq 0 */
        "*1\r\n*2\r\n$3\r\n9-1\r\n*2\r\n$1\r\nj\r\n$1\r\na\r\n",                        /* not <seq>-0 */
        "*1\r\n*2\r\n$3\r\n9-0\r\n*4\r\n$1\r\nj\r\n$1\r\na\r\n$1\r\n9\r\n$1\r\nb\r\n",  /* j and more */
        "*1\r\n*2\r\n$3\r\n9-0\r\n*0\r\n",                                              /* no field */
        "*1\r\n*2\r\n$3\r\n9-0\r\n*2\r\n$2\r\n09\r\n$1\r\na\r\n",                       /* 09 */
        /* grouped: fewer events than the ids say, more, first past the id, a cut event, b before f */
        "*1\r\n*2\r\n$3\r\n9-0\r\n*4\r\n$1\r\nf\r\n$1\r\n8\r\n$1\r\nb\r\n$3\r\n1\na\r\n",
        "*1\r\n*2\r\n$3\r\n9-0\r\n*4\r\n$1\r\nf\r\n$1\r\n9\r\n$1\r\nb\r\n$6\r\n1\na1\nb\r\n",
        "*1\r\n*2\r\n$3\r\n9-0\r\n*4\r\n$1\r\nf\r\n$2\r\n10\r\n$1\r\nb\r\n$3\r\n1\na\r\n",
        "*1\r\n*2\r\n$3\r\n9-0\r\n*4\r\n$1\r\nf\r\n$1\r\n9\r\n$1\r\nb\r\n$3\r\n2\na\r\n",
        "*1\r\n*2\r\n$3\r\n9-0\r\n*4\r\n$1\r\nb\r\n$3\r\n1\na\r\n$1\r\nf\r\n$1\r\n9\r\n",
        /* grouped, more than CS_CMSG_ENTRY_MAX by its ids */
        "*1\r\n*2\r\n$5\r\n501-0\r\n*4\r\n$1\r\nf\r\n$1\r\n1\r\n$1\r\nb\r\n$3\r\n1\na\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        r = resp(bad[i]);
        CHECK(cs_cmsg_xrange_count(r, 0) < 0);
        freeReplyObject(r);
    }
}

/* ---- what the script leaves in Redis ---- */

static long long cmd_int;
static int cmd_done;

static void on_cmd(cs_redis_t *r, const redisReply *reply, void *data)
{
    (void)r;
    (void)data;
    cmd_int = reply != NULL && reply->type == REDIS_REPLY_INTEGER ? reply->integer : -1000;
    cmd_done = 1;
}

static int got_cmd(void)
{
    return cmd_done;
}

/* An integer command on n1's command connection: its answer, or -1000. */
static long long redis_int(const char *a0, const char *a1, const char *a2)
{
    const char *argv[3] = {a0, a1, a2};
    size_t lens[3] = {strlen(a0), strlen(a1), a2 != NULL ? strlen(a2) : 0};
    cmd_done = 0;
    REQUIRE(cs_redis_command(n1.c->cmd, on_cmd, NULL, a2 != NULL ? 3 : 2, argv, lens) == 0);
    REQUIRE(run_until(got_cmd, 3000));
    return cmd_int;
}

static void test_index_and_ttl(void)
{
    memset(w, 0, sizeof(w));
    n_called = 0;
    /* A node-made event_id: no index entry (nobody could re-post it before it was stored). */
    CHECK(post(&n1, 0, "{\"execution_id\":\"x3\",\"type\":\"log\"}") == CS_PENDING);
    want_called = 1;
    REQUIRE(run_until(all_called, 3000));
    CHECK(w[0].e == CS_OK && w[0].seq == 1);
    CHECK(redis_int("EXISTS", "t:{x:x3}:i", NULL) == 0);
    CHECK(redis_int("TTL", "t:{x:x3}:m", NULL) > 60); /* running: a day */
    /* A producer's own id is indexed; a finishing event sets store.retain_s (60) on every key. */
    CHECK(post(&n1, 1, "{\"execution_id\":\"x3\",\"type\":\"run.completed\",\"event_id\":\"fin\"}") ==
          CS_PENDING);
    want_called = 2;
    REQUIRE(run_until(all_called, 3000));
    CHECK(w[1].e == CS_OK && w[1].seq == 2);
    /* The index of epoch E, generation 0 (seqs 0-63): "t:{x:x3}:i:E:0". */
    char ix[96];
    REQUIRE(cs_store_find(n1.store, "x3", 2) != NULL);
    snprintf(ix, sizeof(ix), "t:{x:x3}:i:%llu:0",
             (unsigned long long)cs_exec_epoch(cs_store_find(n1.store, "x3", 2)));
    CHECK(redis_int("HLEN", ix, NULL) == 1);
    for (const char *k = "msi"; *k; k++) {
        char key[96];
        snprintf(key, sizeof(key), "t:{x:x3}:%c", *k);
        long long ttl = redis_int("TTL", *k == 'i' ? ix : key, NULL);
        CHECK(ttl > 0 && ttl <= 60);
    }
    want_x = "x3";
    want_next = 3;
    REQUIRE(run_until(n2_has, 3000));
    check_same("x3", 3);
}

/* Posts producers' ids b<from>..b<to - 1> to x4 on n1 (one turn: one script call) and waits for them. */
static void post_ids(int from, int to)
{
    memset(w, 0, sizeof(w));
    n_called = 0;
    for (int i = from; i < to; i++) {
        char line[128];
        snprintf(line, sizeof(line), "{\"execution_id\":\"x4\",\"type\":\"log\",\"event_id\":\"b%d\"}", i);
        CHECK(post(&n1, i % MAXW, line) == CS_PENDING);
    }
    want_called = to - from;
    REQUIRE(run_until(all_called, 5000));
}

/* The event-id index is bounded (generations of ring_events = 64 seqs: at most two kept): a re-post is
 * recognised while fewer than ring_events events came after its first post, and the index of an execution
 * never holds more than 2 * ring_events ids, however long it runs. */
static void test_index_bounded(void)
{
    long long total = 0;
    char key[96];
    uint64_t ep;

    post_ids(0, 100);
    post_ids(100, 200); /* seqs 1-200: generations 0-3 were written, 0 and 1 deleted */
    REQUIRE(cs_store_find(n1.store, "x4", 2) != NULL);
    ep = cs_exec_epoch(cs_store_find(n1.store, "x4", 2));
    CHECK(redis_int("EXISTS", "t:{x:x4}:i", NULL) == 0); /* no index without generations */
    for (int g = 0; g < 8; g++) {
        snprintf(key, sizeof(key), "t:{x:x4}:i:%llu:%d", (unsigned long long)ep, g);
        long long n = redis_int("HLEN", key, NULL);
        CHECK(n >= 0);
        if (g < 2)
            CHECK(n == 0);
        if (n > 0)
            CHECK(redis_int("TTL", key, NULL) > 0);
        total += n;
    }
    CHECK(total > 0 && total <= 2 * 64);
    /* b129 (seq 130): no longer in the rings (they hold 137-200), 70 events ago: Redis still knows it. */
    post_ids(129, 130);
    CHECK(w[129 % MAXW].e == CS_OK && w[129 % MAXW].dup && w[129 % MAXW].seq == 130);
    /* b10 (seq 11), in a generation deleted since: past the promise, it is a new event. */
    post_ids(10, 11);
    CHECK(w[10].e == CS_OK && !w[10].dup && w[10].seq == 201);
}

/* Redis' script cache flushed under a ready node: the EVALSHAs in flight get NOSCRIPT and are answered
 * unavailable (nothing stored), the command connection is made again (the scripts loaded first), and the
 * next publish is stored with the next seq: no publish is re-sent on its own (it could be overtaken). */
static void test_script_flushed(void)
{
    cmd_done = 0;
    {
        const char *argv[2] = {"SCRIPT", "FLUSH"};
        size_t lens[2] = {6, 5};
        REQUIRE(cs_redis_command(n1.c->cmd, on_cmd, NULL, 2, argv, lens) == 0);
    }
    memset(w, 0, sizeof(w));
    n_called = 0;
    CHECK(post(&n1, 0, "{\"execution_id\":\"x5\",\"type\":\"log\",\"event_id\":\"f1\"}") == CS_PENDING);
    CHECK(post(&n1, 1, "{\"execution_id\":\"x5\",\"type\":\"log\",\"event_id\":\"f2\"}") == CS_PENDING);
    want_called = 2;
    REQUIRE(run_until(all_called, 5000));
    CHECK(w[0].e == CS_ERR_UNAVAILABLE && w[1].e == CS_ERR_UNAVAILABLE);
    (void)run_until(n1_down, 3000); /* the connection is made again */
    REQUIRE(run_until(both_ready, 8000));
    memset(w, 0, sizeof(w));
    n_called = 0;
    CHECK(post(&n1, 1, "{\"execution_id\":\"x5\",\"type\":\"log\",\"event_id\":\"f2\"}") == CS_PENDING);
    want_called = 1;
    REQUIRE(run_until(all_called, 5000));
    CHECK(w[1].e == CS_OK && w[1].seq == 1 && !w[1].dup);
}

/* A message on the channel that is not crewstream events: counted, logged, nothing stored; the channel
 * goes on. */
static int n2_bad;
static int n2_saw_bad(void)
{
    cs_cluster_stats_t st;
    cs_cluster_stats(n2.c, &st);
    return st.bad_messages > (uint64_t)n2_bad;
}

static void test_bad_message(void)
{
    cs_cluster_stats_t st;

    cs_cluster_stats(n2.c, &st);
    n2_bad = (int)st.bad_messages;
    /* Its first event well formed, the second cut short: none of it is stored. */
    CHECK(redis_int("PUBLISH", "t:events",
                    "*2\n5 1 bad-x 52\n{\"execution_id\":\"bad-x\",\"type\":\"log\",\"event_id\":\"a\"}5 2 "
                    "bad-x 9\n{}") == 2);
    REQUIRE(run_until(n2_saw_bad, 3000));
    CHECK(cs_store_find(n2.store, "bad-x", 5) == NULL);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (test_redis_bin() == NULL) {
        fprintf(stderr, "redis-server is not installed (scripts/deps test): skipped\n");
        return 0;
    }
    REQUIRE(test_redis_start(&srv) == 0);
    REQUIRE(cs_loop_new(&loop) == 0);
    node_new(&n1, "n1");
    node_new(&n2, "n2");
    REQUIRE(run_until(both_ready, 5000));
    RUN(test_cmsg_batch);
    RUN(test_cmsg_batch_grouped);
    RUN(test_cmsg_script_reply);
    RUN(test_cmsg_xrange);
    RUN(test_cmsg_node);
    RUN(test_publish_and_share);
    RUN(test_index_and_ttl);
    RUN(test_index_bounded);
    RUN(test_script_flushed);
    RUN(test_bad_message);
    RUN(test_hole_filled);
    RUN(test_redis_restarted_empty);
    node_free(&n1);
    node_free(&n2);
    cs_loop_free(loop);
    test_redis_cleanup(&srv);
    CT_DONE();
}
