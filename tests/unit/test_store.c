/*
 * test_store.c - rings, cursors into them, resume, gaps, idempotence, eviction.
 */
#include "../../src/answer.c"
#include "../../src/cursor.c"
#include "../../src/err.c"
#include "../../src/event.c"
#include "../../src/filter.c"
#include "../../src/hitl.c"
#include "../../src/jscan.c"
#include "../../src/log.c"
#include "../../src/status.c"
#include "../../src/store.c"

#include "ctest.h"

static cs_store_limits_t lim = {
    .ring_events = 8, .ring_bytes = 1 << 20, .max_bytes = 64 << 20, .retain_s = 10, .global_events = 16};

static int wakes;
static void on_wake(cs_sub_t *s)
{
    (void)s;
    wakes++;
}
static const cs_sub_ops_t ops = {on_wake};

static cs_publish_t post(cs_store_t *st, const char *exec, const char *type, const char *eid)
{
    char detail[128];
    cs_publish_t pub;
    json_t *ev = json_pack("{s:s, s:s}", "execution_id", exec, "type", type);
    if (eid != NULL)
        json_object_set_new(ev, "event_id", json_string(eid));
    REQUIRE(cs_store_publish(st, ev, 1768473002123LL, &pub, detail, sizeof(detail)) == CS_OK);
    json_decref(ev);
    return pub;
}

/* Drains a subscriber: the seqs it gets (0 for a gap) into out; returns the count. */
static int drain(cs_sub_t *sub, uint64_t *out, int max)
{
    cs_item_t it;
    int n = 0;
    while (n < max && cs_sub_next(sub, &it))
        out[n++] = it.frame ? it.frame->seq : 0;
    return n;
}

static void test_publish_and_render(void)
{
    cs_store_t *st;
    REQUIRE(cs_store_new(&st, &lim) == 0);
    cs_publish_t p1 = post(st, "e1", "run.started", NULL);
    cs_publish_t p2 = post(st, "e1", "log", "my-id");
    CHECK(p1.seq == 1 && p2.seq == 2);
    CHECK(strlen(p1.event_id) == 36);
    CHECK_STR(p2.event_id, "my-id");
    cs_exec_t *ex = cs_store_find(st, "e1", 2);
    REQUIRE(ex != NULL);
    cs_frame_t *f = cs_exec_frame(ex, 2);
    REQUIRE(f != NULL);
    CHECK(strstr(f->json, "\"seq\":2") != NULL);
    CHECK(strstr(f->json, "\"timestamp\":\"2026-01-15T10:30:02.123Z\"") != NULL);
    CHECK(strchr(f->json, '\n') == NULL);
    char cur[CS_CURSOR_MAX], want[128];
    cs_cursor_format(cur, sizeof(cur), ex->epoch, 2);
    snprintf(want, sizeof(want), "event: log\nid: %s\ndata: ", cur);
    CHECK_STR(f->sse_head, want);
    CHECK(f->sse_named_skip == strlen("event: log\n"));
    CHECK(f->sse_head_len == strlen(want));
    CHECK(cs_exec_frame(ex, 3) == NULL && cs_exec_frame(ex, 0) == NULL);
    CHECK(cs_exec_status(ex) == CS_EXEC_RUNNING);
    cs_store_free(st);
}

static void test_idempotent(void)
{
    cs_store_t *st;
    REQUIRE(cs_store_new(&st, &lim) == 0);
    cs_publish_t a = post(st, "e", "human_input_required", "req-1");
    cs_publish_t b = post(st, "e", "human_input_required", "req-1");
    CHECK(b.duplicate && b.seq == a.seq);
    /* Same id, other type: a new event (a completion that reuses its request's id). */
    cs_publish_t c = post(st, "e", "human_input_completed", "req-1");
    CHECK(!c.duplicate && c.seq == 2);
    cs_publish_t d = post(st, "e", "human_input_completed", "req-1");
    CHECK(d.duplicate && d.seq == 2);
    cs_exec_t *ex = cs_store_find(st, "e", 1);
    CHECK(cs_exec_find_event(ex, "req-1", 5)->seq == 1);
    /* Another execution does not share ids. */
    cs_publish_t e = post(st, "f", "human_input_required", "req-1");
    CHECK(!e.duplicate && e.seq == 1);
    cs_store_free(st);
}

/* The event-id index across evictions: the first frame with an id is in the hash, later ones chain
 * behind it and take its place when it goes; ids the daemon draws are indexed and leave with their
 * frames. (lim.ring_events is 8.) */
static void test_id_index_eviction(void)
{
    cs_store_t *st;
    REQUIRE(cs_store_new(&st, &lim) == 0);
    cs_publish_t a = post(st, "e", "log", "dup");
    cs_publish_t b = post(st, "e", "tool.called", "dup");
    cs_publish_t g = post(st, "e", "log", NULL);
    cs_exec_t *ex = cs_store_find(st, "e", 1);
    CHECK(cs_exec_find_event(ex, "dup", 3)->seq == a.seq);
    CHECK(cs_exec_find_event(ex, g.event_id, strlen(g.event_id))->seq == g.seq);
    /* Evict "dup"/log (seq 1): "dup"/tool.called (seq 2) is found, and still deduplicated. */
    for (int i = 0; i < 6; i++)
        post(st, "e", "log", NULL);
    CHECK(cs_exec_find_event(ex, "dup", 3)->seq == b.seq);
    cs_publish_t b2 = post(st, "e", "tool.called", "dup");
    CHECK(b2.duplicate && b2.seq == b.seq);
    /* Then evict seq 2 and 3: nothing is left under either id, and a repost is new. */
    post(st, "e", "log", NULL);
    post(st, "e", "log", NULL);
    CHECK(cs_exec_find_event(ex, "dup", 3) == NULL);
    CHECK(cs_exec_find_event(ex, g.event_id, strlen(g.event_id)) == NULL);
    cs_publish_t a2 = post(st, "e", "log", "dup");
    CHECK(!a2.duplicate && a2.seq == 12);
    size_t indexed = 0;
    for (size_t i = 0; i < ex->idx_cap; i++)
        indexed += ex->idx[i].f != NULL;
    CHECK(indexed == 8);
    cs_store_free(st);
}

static void test_history_live_and_park(void)
{
    cs_store_t *st;
    cs_sub_t sub;
    uint64_t got[32];
    cs_start_t start = {.kind = CS_START_HISTORY};
    REQUIRE(cs_store_new(&st, &lim) == 0);
    /* Subscribing before anyone posted creates a pending execution that waits. */
    REQUIRE(cs_sub_open(st, &sub, "late", 4, &start, NULL, &ops, NULL) == 0);
    CHECK(drain(&sub, got, 32) == 0);
    cs_sub_park(&sub);
    wakes = 0;
    post(st, "late", "a", NULL);
    CHECK(wakes == 1);
    post(st, "late", "b", NULL);
    CHECK(wakes == 1); /* woken once until parked again */
    CHECK(drain(&sub, got, 32) == 2 && got[0] == 1 && got[1] == 2);
    cs_sub_close(&sub);
    cs_store_free(st);
}

static void test_resume_forms(void)
{
    cs_store_t *st;
    cs_sub_t sub;
    uint64_t got[32];
    char cur[CS_CURSOR_MAX];
    REQUIRE(cs_store_new(&st, &lim) == 0);
    for (int i = 0; i < 5; i++)
        post(st, "e", "log", i == 2 ? "third" : NULL);
    cs_exec_t *ex = cs_store_find(st, "e", 1);

    cs_cursor_format(cur, sizeof(cur), ex->epoch, 3);
    cs_start_t by_cursor = {.kind = CS_START_AFTER_ID, .id = cur, .id_len = strlen(cur)};
    REQUIRE(cs_sub_open(st, &sub, "e", 1, &by_cursor, NULL, &ops, NULL) == 0);
    CHECK(drain(&sub, got, 32) == 2 && got[0] == 4 && got[1] == 5);
    char pos[CS_CURSOR_MAX];
    CHECK(cs_sub_position(&sub, pos, sizeof(pos)) == 5);
    cs_sub_close(&sub);

    cs_start_t by_id = {.kind = CS_START_AFTER_ID, .id = "third", .id_len = 5};
    REQUIRE(cs_sub_open(st, &sub, "e", 1, &by_id, NULL, &ops, NULL) == 0);
    CHECK(drain(&sub, got, 32) == 2 && got[0] == 4);
    cs_sub_close(&sub);

    cs_start_t by_seq = {.kind = CS_START_AFTER_ID, .id = "1", .id_len = 1};
    REQUIRE(cs_sub_open(st, &sub, "e", 1, &by_seq, NULL, &ops, NULL) == 0);
    CHECK(drain(&sub, got, 32) == 4 && got[0] == 2);
    cs_sub_close(&sub);

    cs_start_t since = {.kind = CS_START_AFTER_SEQ, .seq = 5};
    REQUIRE(cs_sub_open(st, &sub, "e", 1, &since, NULL, &ops, NULL) == 0);
    CHECK(drain(&sub, got, 32) == 0);
    cs_sub_close(&sub);

    cs_start_t now = {.kind = CS_START_NOW};
    REQUIRE(cs_sub_open(st, &sub, "e", 1, &now, NULL, &ops, NULL) == 0);
    CHECK(drain(&sub, got, 32) == 0);
    post(st, "e", "log", NULL);
    CHECK(drain(&sub, got, 32) == 1 && got[0] == 6);
    cs_sub_close(&sub);

    /* Unknown id, a cursor of another epoch, a seq from the future: gap, then all retained. */
    const char *bad[] = {"nope", "000000000001-3", "99"};
    for (int i = 0; i < 3; i++) {
        cs_start_t s = {.kind = CS_START_AFTER_ID, .id = bad[i], .id_len = strlen(bad[i])};
        cs_item_t it;
        REQUIRE(cs_sub_open(st, &sub, "e", 1, &s, NULL, &ops, NULL) == 0);
        REQUIRE(cs_sub_next(&sub, &it) == 1);
        CHECK(it.frame == NULL && it.gap != NULL);
        CHECK(strstr(it.gap, "\"type\":\"stream.gap\"") != NULL);
        CHECK(strstr(it.gap, "\"first_seq\":1") != NULL);
        CHECK(strstr(it.gap, bad[i]) != NULL);
        CHECK(drain(&sub, got, 32) == 6 && got[0] == 1);
        cs_sub_close(&sub);
    }
    cs_store_free(st);
}

static void test_ring_eviction_and_gap(void)
{
    cs_store_t *st;
    cs_sub_t slow, fresh;
    uint64_t got[64];
    cs_start_t hist = {.kind = CS_START_HISTORY};
    REQUIRE(cs_store_new(&st, &lim) == 0);
    REQUIRE(cs_sub_open(st, &slow, "e", 1, &hist, NULL, &ops, NULL) == 0);
    for (int i = 0; i < 20; i++)
        post(st, "e", "log", NULL);
    cs_exec_t *ex = cs_store_find(st, "e", 1);
    CHECK(ex->first_seq == 13 && ex->next_seq == 21);
    CHECK(ex->ring_cap == 8);
    /* The slow subscriber fell behind: a gap naming where it was, then the oldest retained. */
    int n = drain(&slow, got, 64);
    CHECK(n == 9 && got[0] == 0 && got[1] == 13 && got[8] == 20);
    /* A resume from an evicted seq is a gap too. */
    cs_start_t old = {.kind = CS_START_AFTER_SEQ, .seq = 3};
    REQUIRE(cs_sub_open(st, &fresh, "e", 1, &old, NULL, &ops, NULL) == 0);
    n = drain(&fresh, got, 64);
    CHECK(n == 9 && got[0] == 0 && got[1] == 13);
    cs_sub_close(&fresh);
    /* Resuming right before the oldest retained one is exact: no gap. */
    cs_start_t edge = {.kind = CS_START_AFTER_SEQ, .seq = 12};
    REQUIRE(cs_sub_open(st, &fresh, "e", 1, &edge, NULL, &ops, NULL) == 0);
    n = drain(&fresh, got, 64);
    CHECK(n == 8 && got[0] == 13);
    cs_sub_close(&fresh);
    cs_sub_close(&slow);
    cs_store_free(st);
}

static void test_ring_bytes(void)
{
    cs_store_limits_t l = lim;
    cs_store_t *st;
    l.ring_events = 100;
    l.ring_bytes = 2000;
    REQUIRE(cs_store_new(&st, &l) == 0);
    for (int i = 0; i < 50; i++)
        post(st, "e", "log", NULL);
    cs_exec_t *ex = cs_store_find(st, "e", 1);
    CHECK(ex->bytes <= 2000);
    CHECK(ex->next_seq == 51 && ex->first_seq > 1);
    cs_store_free(st);
}

static void test_filter_and_global(void)
{
    cs_store_t *st;
    cs_sub_t sub, g;
    cs_filter_t f;
    char err[128];
    uint64_t got[64];
    cs_start_t hist = {.kind = CS_START_HISTORY};
    REQUIRE(cs_store_new(&st, &lim) == 0);
    REQUIRE(cs_filter_parse(&f, "agent.*,log", err, sizeof(err)) == 0);
    REQUIRE(cs_sub_open(st, &sub, "e", 1, &hist, &f, &ops, NULL) == 0);
    CHECK(f.n == 0 && f.pats == NULL); /* moved into the subscriber */
    post(st, "e", "run.started", NULL);
    post(st, "e", "agent.started", NULL);
    post(st, "x", "log", NULL);
    post(st, "e", "log", NULL);
    post(st, "e", "agent", NULL);
    CHECK(drain(&sub, got, 64) == 2 && got[0] == 2 && got[1] == 3);
    cs_sub_close(&sub);

    REQUIRE(cs_sub_open(st, &g, NULL, 0, &hist, NULL, &ops, NULL) == 0);
    cs_item_t it;
    int n = 0;
    while (cs_sub_next(&g, &it)) {
        CHECK(it.frame->gseq == (uint64_t)n + 1);
        n++;
    }
    CHECK(n == 5);
    cs_sub_close(&g);
    /* The global ring holds global_events (16): older ones leave it, and a resume there gaps. */
    for (int i = 0; i < 20; i++)
        post(st, "y", "log", NULL);
    cs_start_t old = {.kind = CS_START_AFTER_SEQ, .seq = 2};
    REQUIRE(cs_sub_open(st, &g, NULL, 0, &old, NULL, &ops, NULL) == 0);
    REQUIRE(cs_sub_next(&g, &it) == 1 && it.gap != NULL);
    CHECK(strstr(it.gap, "\"first_seq\":10") != NULL);
    cs_sub_close(&g);
    cs_store_free(st);
}

static void test_budget_prefers_finished(void)
{
    cs_store_limits_t l = lim;
    cs_store_t *st;
    l.ring_events = 64;
    l.global_events = 8;
    l.max_bytes = 32000; /* less than both rings full: the budget, not the ring bound, must evict */
    REQUIRE(cs_store_new(&st, &l) == 0);
    for (int i = 0; i < 20; i++)
        post(st, "done", "log", NULL);
    post(st, "done", "run.completed", NULL);
    for (int i = 0; i < 20; i++)
        post(st, "live", "log", NULL);
    cs_store_stats_t s;
    for (int i = 0; i < 200; i++) {
        post(st, "live", "log", NULL);
        cs_store_stats(st, &s);
        CHECK(s.bytes <= l.max_bytes);
    }
    cs_exec_t *done = cs_store_find(st, "done", 4);
    cs_exec_t *live = cs_store_find(st, "live", 4);
    REQUIRE(live != NULL);
    CHECK(done == NULL || done->next_seq == done->first_seq); /* finished history went first */
    CHECK(live->next_seq - live->first_seq > 0);
    cs_store_free(st);
}

/* A reload that lowers ring_events or ring_bytes shrinks the rings there are, at once. */
static void test_reload_shrinks_rings(void)
{
    cs_store_limits_t l = lim;
    cs_store_t *st;
    uint64_t seqs[32];
    REQUIRE(cs_store_new(&st, &l) == 0);
    for (int i = 0; i < 8; i++)
        post(st, "rl", "log", NULL);
    cs_exec_t *ex = cs_store_find(st, "rl", 2);
    REQUIRE(ex != NULL);
    CHECK(ex->ring_cap == 8 && ex->next_seq - ex->first_seq == 8);
    l.ring_events = 3;
    cs_store_set_limits(st, &l);
    CHECK(ex->ring_cap == 3 && ex->first_seq == 6 && ex->next_seq == 9);
    for (int i = 0; i < 5; i++)
        post(st, "rl", "log", NULL);
    CHECK(ex->next_seq - ex->first_seq == 3 && ex->first_seq == 11);
    /* Resuming from an evicted seq: a gap, then the three retained. */
    cs_sub_t sub;
    cs_start_t start = {.kind = CS_START_AFTER_SEQ, .seq = 2};
    REQUIRE(cs_sub_open(st, &sub, "rl", 2, &start, NULL, &ops, NULL) == 0);
    CHECK(drain(&sub, seqs, 32) == 4 && seqs[0] == 0 && seqs[1] == 11 && seqs[3] == 13);
    cs_sub_close(&sub);
    /* By bytes: everything but the newest goes when one frame alone fills ring_bytes. */
    l.ring_bytes = ex->ring[ex->first_seq % ex->ring_cap]->bytes;
    cs_store_set_limits(st, &l);
    CHECK(ex->next_seq - ex->first_seq == 1 && ex->first_seq == 13);
    /* Raised again: the ring grows back as events come. */
    l.ring_events = 8;
    l.ring_bytes = 1 << 20;
    cs_store_set_limits(st, &l);
    for (int i = 0; i < 10; i++)
        post(st, "rl", "log", NULL);
    CHECK(ex->ring_cap == 8 && ex->next_seq - ex->first_seq == 8);
    cs_store_free(st);
}

static void test_retention(void)
{
    cs_store_t *st;
    REQUIRE(cs_store_new(&st, &lim) == 0);
    cs_store_set_now(st, 1000);
    post(st, "a", "run.started", NULL);
    post(st, "a", "run.completed", NULL);
    post(st, "b", "run.started", NULL);
    cs_exec_t *a = cs_store_find(st, "a", 1);
    CHECK(cs_exec_status(a) == CS_EXEC_COMPLETED && a->finished);
    cs_store_expire(st, 1000 + 9999);
    CHECK(cs_store_find(st, "a", 1) != NULL);
    cs_store_expire(st, 1000 + 10000);
    CHECK(cs_store_find(st, "a", 1) == NULL);
    CHECK(cs_store_find(st, "b", 1) != NULL); /* running executions stay */
    cs_store_free(st);
}

static void test_many_executions_bounded(void)
{
    cs_store_limits_t l = lim;
    cs_store_t *st;
    char id[32];
    cs_store_stats_t s;
    l.max_bytes = 200000;
    REQUIRE(cs_store_new(&st, &l) == 0);
    for (int i = 0; i < 5000; i++) {
        snprintf(id, sizeof(id), "x%d", i);
        post(st, id, "log", NULL);
    }
    cs_store_stats(st, &s);
    CHECK(s.bytes <= l.max_bytes);
    CHECK(s.executions < 5000);
    cs_store_free(st);
}

/* Human-input requests count against store.max_bytes at their size, and an open one pins its
 * execution (its runtime may be waiting): open requests may hold half of the budget, and a new one
 * that would exceed that is refused (unavailable), storing nothing, until an answer makes room. */
static void test_hitl_requests_bounded(void)
{
    cs_store_limits_t l = lim;
    cs_store_t *st;
    cs_store_stats_t s;
    char id[32], detail[256];
    cs_publish_t pub;
    static char prompt[20000];
    int stored = 0, refused = 0;

    memset(prompt, 'p', sizeof(prompt) - 1);
    l.max_bytes = 1 << 20;
    REQUIRE(cs_store_new(&st, &l) == 0);
    for (int i = 0; i < 200; i++) {
        snprintf(id, sizeof(id), "h%d", i);
        json_t *ev = json_pack("{s:s, s:s, s:s, s:s}", "execution_id", id, "type", "human_input_required",
                               "task_id", "t", "prompt", prompt);
        cs_err_t e = cs_store_publish(st, ev, 1768473002123LL, &pub, detail, sizeof(detail));
        json_decref(ev);
        cs_exec_t *ex = cs_store_find(st, id, strlen(id));
        if (e == CS_OK) {
            stored++;
            REQUIRE(ex != NULL && pub.exec == ex);
            CHECK(ex->hitl.bytes >= 2 * sizeof(prompt)); /* counted at its size, not a fixed guess */
            if (i % 2 == 0)
                post(st, id, "run.completed", NULL);
        } else {
            refused++;
            CHECK(e == CS_ERR_UNAVAILABLE);
            CHECK(strstr(detail, "store.max_bytes") != NULL);
            CHECK(ex == NULL); /* nothing stored, not even the execution */
        }
        cs_store_stats(st, &s);
        CHECK(s.bytes <= l.max_bytes && s.pinned_bytes <= l.max_bytes / 2);
        CHECK(cs_store_check(st, NULL, NULL, detail, sizeof(detail)) == 0);
    }
    CHECK(stored >= 8 && refused > 150);
    cs_store_stats(st, &s);
    CHECK(s.open_requests == (size_t)stored && s.refused_full == (uint64_t)refused);
    /* Every stored request is still open and findable, finished execution or not: none was evicted. */
    for (int i = 0; i < stored; i++) {
        snprintf(id, sizeof(id), "h%d", i);
        cs_exec_t *ex = cs_store_find(st, id, strlen(id));
        REQUIRE(ex != NULL);
        CHECK(ex->hitl.n_open == 1);
    }
    /* Expiry keeps them too. */
    cs_store_expire(st, 1000000000);
    CHECK(cs_store_find(st, "h0", 2) != NULL && cs_store_find(st, "h0", 2)->hitl.n_open == 1);
    /* An answer unpins: the next request fits again, and the answered finished one can go. */
    json_t *yes = json_true();
    cs_answer_t a = {.task_id = "t", .is_approve = yes};
    REQUIRE(cs_store_answer(st, "h0", 2, &a, 0, &pub, detail, sizeof(detail)) == CS_OK);
    json_t *ev = json_pack("{s:s, s:s, s:s, s:s}", "execution_id", "late", "type", "human_input_required",
                           "task_id", "t", "prompt", prompt);
    CHECK(cs_store_publish(st, ev, 0, &pub, detail, sizeof(detail)) == CS_OK);
    json_decref(ev);
    json_decref(yes);
    CHECK(cs_store_check(st, NULL, NULL, detail, sizeof(detail)) == 0);
    cs_store_free(st);
}

/* Pushes delivered to a test awaiter. */
static char last_push[1024];
static int pushes;
static void on_push(cs_awaiter_t *aw, const char *line, size_t len)
{
    (void)aw;
    snprintf(last_push, sizeof(last_push), "%.*s", (int)len, line);
    pushes++;
}

/* Every answer is kept while its execution is (SPEC §3), however many there were; an answered
 * request keeps its ids and push line, not its copy of the request. */
static void test_hitl_every_answer_kept(void)
{
    cs_store_t *st;
    cs_publish_t pub;
    char detail[256], eid[32];
    json_t *fb = json_string("ok"), *yes = json_true();
    REQUIRE(cs_store_new(&st, &lim) == 0);

    for (int i = 0; i < 600; i++) {
        snprintf(eid, sizeof(eid), "r-%d", i);
        post(st, "many", "human_input_required", eid);
        cs_answer_t a = {.event_id = eid, .human_feedback = fb, .is_approve = yes};
        REQUIRE(cs_store_answer(st, "many", 4, &a, 1768473002123LL, &pub, detail, sizeof(detail)) == CS_OK);
    }
    cs_exec_t *ex = cs_store_find(st, "many", 4);
    REQUIRE(ex != NULL);
    CHECK(ex->hitl.n == 600 && ex->hitl.n_open == 0);
    cs_hitl_req_t *first = cs_store_find_request(st, "many", 4, "r-0", detail, sizeof(detail));
    REQUIRE(first != NULL);
    CHECK(first->answered && first->request == NULL && first->request_bytes == 0);
    cs_awaiter_t *aw = calloc(1, sizeof(*aw));
    aw->push = on_push;
    pushes = 0;
    cs_hitl_await(first, aw); /* the runtime comes back for the oldest answer: pushed at once */
    free(aw);
    CHECK(pushes == 1 && strstr(last_push, "\"request_event_id\":\"r-0\"") != NULL);
    json_decref(fb);
    json_decref(yes);
    cs_store_free(st);
}

static void test_hitl_answer_and_await(void)
{
    cs_store_t *st;
    cs_publish_t pub;
    char detail[256];
    json_t *fb = json_string("looks good"), *yes = json_true(), *no = json_false();
    REQUIRE(cs_store_new(&st, &lim) == 0);

    post(st, "h", "run.started", NULL);
    post(st, "h", "human_input_required", "req-1");
    cs_exec_t *ex = cs_store_find(st, "h", 1);
    CHECK(cs_exec_status(ex) == CS_EXEC_PENDING_HUMAN_INPUT && ex->hitl.n_open == 1);

    /* A runtime awaits; an answer by task id closes the request and pushes once. */
    cs_awaiter_t *aw = calloc(1, sizeof(*aw));
    aw->push = on_push;
    cs_hitl_req_t *req = cs_store_find_request(st, "h", 1, "req-1", detail, sizeof(detail));
    REQUIRE(req != NULL);
    cs_hitl_await(req, aw);
    CHECK(pushes == 0);
    cs_answer_t a = {.task_id = NULL, .human_feedback = fb, .is_approve = yes};
    REQUIRE(cs_store_answer(st, "h", 1, &a, 1768473002123LL, &pub, detail, sizeof(detail)) == CS_OK);
    free(aw);
    CHECK(pushes == 1);
    CHECK(strstr(last_push, "\"op\":\"human_input\"") && strstr(last_push, "\"request_event_id\":\"req-1\""));
    CHECK(strstr(last_push, "\"human_feedback\":\"looks good\"") && strstr(last_push, "\"is_approve\":true"));
    CHECK(last_push[strlen(last_push) - 1] == '\n');
    CHECK_STR(pub.request_event_id, "req-1");
    CHECK(pub.seq == 3 && cs_exec_status(ex) == CS_EXEC_RUNNING && ex->hitl.n_open == 0);

    /* A second answer conflicts; an unknown request or execution is not found. */
    CHECK(cs_store_answer(st, "h", 1, &a, 0, &pub, detail, sizeof(detail)) == CS_ERR_CONFLICT);
    cs_answer_t by_id = {.event_id = "req-1", .human_feedback = fb};
    CHECK(cs_store_answer(st, "h", 1, &by_id, 0, &pub, detail, sizeof(detail)) == CS_ERR_CONFLICT);
    by_id.event_id = "nope";
    CHECK(cs_store_answer(st, "h", 1, &by_id, 0, &pub, detail, sizeof(detail)) == CS_ERR_CONFLICT);
    CHECK(cs_store_answer(st, "zz", 2, &a, 0, &pub, detail, sizeof(detail)) == CS_ERR_NOT_FOUND);

    /* Awaiting an answered request pushes at once. */
    aw = calloc(1, sizeof(*aw));
    aw->push = on_push;
    cs_hitl_await(req, aw);
    free(aw);
    CHECK(pushes == 2);

    /* The retry loop: a rejection, then a new request for the same task, any number of times. */
    for (int i = 0; i < 5; i++) {
        json_t *ev = json_pack("{s:s, s:s, s:s}", "execution_id", "h", "type", "human_input_required",
                               "task_id", "t9");
        REQUIRE(cs_store_publish(st, ev, 0, &pub, detail, sizeof(detail)) == CS_OK);
        json_decref(ev);
        CHECK(cs_exec_status(ex) == CS_EXEC_PENDING_HUMAN_INPUT);
        cs_answer_t r = {.task_id = "t9", .human_feedback = fb, .is_approve = i < 4 ? no : yes};
        REQUIRE(cs_store_answer(st, "h", 1, &r, 0, &pub, detail, sizeof(detail)) == CS_OK);
        CHECK(cs_exec_status(ex) == CS_EXEC_RUNNING);
    }
    /* An awaiter that goes away is forgotten: the answer finds nobody, and nothing crashes. */
    json_t *ev =
        json_pack("{s:s, s:s, s:s}", "execution_id", "h", "type", "human_input_required", "event_id", "q");
    REQUIRE(cs_store_publish(st, ev, 0, &pub, detail, sizeof(detail)) == CS_OK);
    json_decref(ev);
    aw = calloc(1, sizeof(*aw));
    aw->push = on_push;
    cs_hitl_await(cs_store_find_request(st, "h", 1, "q", detail, sizeof(detail)), aw);
    cs_hitl_unawait(aw);
    free(aw);
    cs_answer_t q = {.event_id = "q"};
    CHECK(cs_store_answer(st, "h", 1, &q, 0, &pub, detail, sizeof(detail)) == CS_OK);
    CHECK(pushes == 2);
    json_decref(fb);
    cs_store_free(st);
}

static void test_answer_from_json(void)
{
    cs_answer_t a;
    char detail[128];
    json_t *o = json_pack("{s:s, s:s, s:b}", "task_id", "t", "human_feedback", "f", "is_approve", 0);
    CHECK(cs_answer_from_json(o, &a, detail, sizeof(detail)) == CS_OK);
    CHECK(strcmp(a.task_id, "t") == 0 && a.event_id == NULL && json_is_false(a.is_approve));
    json_decref(o);
    const char *bad[] = {"{\"is_approve\":\"yes\"}", "{\"human_feedback\":3}", "{\"event_id\":5}",
                         "{\"task_id\":\"\"}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        o = json_loads(bad[i], 0, NULL);
        CHECK(cs_answer_from_json(o, &a, detail, sizeof(detail)) == CS_ERR_INVALID_FIELD);
        json_decref(o);
    }
    o = json_array();
    CHECK(cs_answer_from_json(o, &a, detail, sizeof(detail)) == CS_ERR_INVALID_JSON);
    json_decref(o);
}

static void test_status_progress(void)
{
    cs_store_t *st;
    REQUIRE(cs_store_new(&st, &lim) == 0);
    const char *types[] = {"crew_kickoff_started", "task_started",     "agent_execution_started",
                           "tool_usage_started",   "tool_usage_error", "agent_execution_completed",
                           "task_completed",       "task_started",     "task_failed",
                           "agent.started",        "agent.error",      "tool.called"};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
        post(st, "p", types[i], NULL);
    cs_exec_t *ex = cs_store_find(st, "p", 1);
    cs_progress_t *pr = &ex->state.progress;
    CHECK(pr->tasks_seen == 2 && pr->tasks_done == 1 && pr->tasks_failed == 1);
    CHECK(pr->agents_seen == 2 && pr->agents_done == 1 && pr->agents_failed == 1);
    CHECK(pr->tool_calls == 2 && pr->tool_errors == 1);
    CHECK(cs_exec_status(ex) == CS_EXEC_RUNNING);
    char detail[64];
    cs_publish_t pub;
    json_t *ev = json_pack("{s:s, s:s, s:{s:s}}", "execution_id", "p", "type", "crew_kickoff_failed", "error",
                           "code", "E42");
    REQUIRE(cs_store_publish(st, ev, 0, &pub, detail, sizeof(detail)) == CS_OK);
    json_decref(ev);
    CHECK(cs_exec_status(ex) == CS_EXEC_ERROR && strcmp(ex->state.error_message, "{\"code\":\"E42\"}") == 0);
    /* A final state stays final for ordinary events; a new start begins the run again. */
    post(st, "p", "log", NULL);
    CHECK(cs_exec_status(ex) == CS_EXEC_ERROR);
    post(st, "p", "run.started", NULL);
    CHECK(cs_exec_status(ex) == CS_EXEC_RUNNING && !ex->finished);
    json_t *j = cs_exec_status_json(ex);
    CHECK(json_integer_value(json_object_get(j, "events")) == 15);
    CHECK(strcmp(json_string_value(json_object_get(j, "status")), "running") == 0);
    json_decref(j);
    post(st, "p", "run.canceled", NULL);
    j = cs_status_seed_json(&ex->state, ex->id, ex->id_len);
    CHECK(strcmp(json_string_value(json_object_get(j, "status")), "error") == 0);
    CHECK(strcmp(json_string_value(json_object_get(j, "state")), "canceled") == 0);
    json_decref(j);
    cs_store_free(st);
}

/* Publishes line (parsed) through cs_store_publish_raw; returns the stored JSON (static). */
static const char *post_raw(cs_store_t *st, const char *line)
{
    static char out[1024];
    char detail[128];
    cs_publish_t pub;
    json_t *ev = json_loads(line, 0, NULL);

    REQUIRE(ev != NULL);
    REQUIRE(cs_store_publish_raw(st, ev, line, strlen(line), 1768473002123LL, &pub, detail, sizeof(detail)) ==
            CS_OK);
    json_decref(ev);
    snprintf(out, sizeof(out), "%s", pub.frame->json);
    return out;
}

static void test_publish_raw(void)
{
    cs_store_t *st;
    const char *j;
    char want[512];
    json_t *v;

    REQUIRE(cs_store_new(&st, &lim) == 0);
    /* Kept as it came, white space and escapes too, with the daemon's fields inside the brace. */
    j = post_raw(st, "  {\"execution_id\":\"r\", \"type\":\"log\",\"m\":\"\\u00e9\"} \t");
    REQUIRE(strlen(j) > 60);
    snprintf(want, sizeof(want),
             "{\"execution_id\":\"r\", \"type\":\"log\",\"m\":\"\\u00e9\",\"event_id\":\"%.36s\","
             "\"timestamp\":\"2026-01-15T10:30:02.123Z\",\"seq\":1}",
             strstr(j, "\"event_id\":\"") + 12);
    CHECK_STR(j, want);
    v = json_loads(j, 0, NULL);
    CHECK(v != NULL && json_integer_value(json_object_get(v, "seq")) == 1);
    json_decref(v);
    /* The producer's event_id and timestamp stay where they were; only seq is added. */
    j = post_raw(st, "{\"execution_id\":\"r\",\"event_id\":\"a\\\"b\",\"timestamp\":\"t\",\"type\":\"log\"}");
    CHECK_STR(
        j, "{\"execution_id\":\"r\",\"event_id\":\"a\\\"b\",\"timestamp\":\"t\",\"type\":\"log\",\"seq\":2}");
    /* A seq of the producer's, a null the daemon fills in, a line break: re-serialised instead. */
    j = post_raw(
        st, "{\"execution_id\":\"r\",\"type\":\"log\",\"event_id\":\"s\",\"timestamp\":\"t\",\"seq\":99}");
    CHECK_STR(j,
              "{\"execution_id\":\"r\",\"type\":\"log\",\"event_id\":\"s\",\"timestamp\":\"t\",\"seq\":3}");
    j = post_raw(st, "{\"execution_id\":\"r\",\"type\":\"log\",\"event_id\":\"n\",\"timestamp\":null}");
    CHECK_STR(j, "{\"execution_id\":\"r\",\"type\":\"log\",\"event_id\":\"n\",\"timestamp\":"
                 "\"2026-01-15T10:30:02.123Z\",\"seq\":4}");
    j = post_raw(st, "{\"execution_id\":\"r\",\r\n\"type\":\"log\",\"event_id\":\"m\",\"timestamp\":\"t\"}");
    CHECK_STR(j,
              "{\"execution_id\":\"r\",\"type\":\"log\",\"event_id\":\"m\",\"timestamp\":\"t\",\"seq\":5}");
    cs_store_free(st);
}

/* Publishes line through cs_store_publish_fields with the fields the scan reports, as ingest does. */
static cs_err_t post_fields(cs_store_t *st, const char *line, cs_publish_t *pub)
{
    char detail[128];
    cs_jscan_t sc;
    const cs_jscan_member_t *m;

    REQUIRE(cs_jscan_object(line, strlen(line), 32, &sc) == 0);
    m = sc.f;
    cs_event_fields_t fl = {m[CS_JSCAN_EXECUTION_ID].p,
                            m[CS_JSCAN_EXECUTION_ID].len,
                            m[CS_JSCAN_TYPE].p,
                            m[CS_JSCAN_TYPE].len,
                            m[CS_JSCAN_EVENT_ID].kind ? m[CS_JSCAN_EVENT_ID].p : NULL,
                            m[CS_JSCAN_EVENT_ID].len,
                            m[CS_JSCAN_TIMESTAMP].kind ? m[CS_JSCAN_TIMESTAMP].p : NULL,
                            m[CS_JSCAN_TIMESTAMP].len};
    return cs_store_publish_fields(st, &fl, line, strlen(line), 1768473002123LL, pub, detail, sizeof(detail));
}

/* Replaces the first occurrence of from (36 bytes, a generated id) in s with to. */
static void swap_id(char *s, const char *from, const char *to)
{
    char *p = strstr(s, from);
    if (p != NULL)
        memcpy(p, to, 36);
}

/* The same lines through cs_store_publish_raw (a parsed object) and cs_store_publish_fields (the
 * fields alone): the same acks, stored bytes (but for the ids the daemon draws), dedup and status. */
static void test_publish_fields(void)
{
    static const char *const lines[] = {
        "  {\"execution_id\":\"r\", \"type\":\"log\",\"m\":\"\\u00e9\"} \t",
        "{\"execution_id\":\"r\",\"event_id\":\"e1\",\"timestamp\":\"t\",\"type\":\"log\",\"a\":[1,{}]}",
        "{\"execution_id\":\"r\",\"event_id\":\"e1\",\"timestamp\":\"t2\",\"type\":\"log\"}",
        "{\"execution_id\":\"r\",\"event_id\":\"e1\",\"type\":\"llm.token\"}",
        "{\"timestamp\":\"2020\",\"type\":\"log\",\"execution_id\":\"q\"}",
        "{\"execution_id\":\"q\",\"type\":\"log\",\"event_id\":\"\u00e9\u00e9\"}",
        "{\"execution_id\":\"r\",\"type\":\"artifact\",\"event_id\":\"e1\"}",
    };
    cs_store_t *a, *b;
    cs_store_stats_t sa, sb;

    REQUIRE(cs_store_new(&a, &lim) == 0);
    REQUIRE(cs_store_new(&b, &lim) == 0);
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        char detail[128], ja[512];
        cs_publish_t pa, pb;
        json_t *ev = json_loads(lines[i], 0, NULL);

        REQUIRE(ev != NULL);
        REQUIRE(cs_store_publish_raw(a, ev, lines[i], strlen(lines[i]), 1768473002123LL, &pa, detail,
                                     sizeof(detail)) == CS_OK);
        json_decref(ev);
        REQUIRE(post_fields(b, lines[i], &pb) == CS_OK);
        CHECK(pa.seq == pb.seq);
        CHECK(pa.duplicate == pb.duplicate);
        CHECK(pa.exec != NULL && pb.exec != NULL && cs_exec_status(pa.exec) == cs_exec_status(pb.exec));
        REQUIRE(pa.frame != NULL && pb.frame != NULL);
        CHECK(pa.frame->json_len == pb.frame->json_len);
        CHECK(strlen(pa.event_id) == strlen(pb.event_id));
        snprintf(ja, sizeof(ja), "%s", pa.frame->json);
        if (strcmp(pa.event_id, pb.event_id) != 0)
            swap_id(ja, pa.event_id, pb.event_id); /* a UUID each drew */
        CHECK_STR(pb.frame->json, ja);
        CHECK_STR(pb.frame->type, pa.frame->type);
    }
    cs_store_stats(a, &sa);
    cs_store_stats(b, &sb);
    CHECK(sa.events_published == sb.events_published && sb.events_published == 6);
    CHECK(sa.events_duplicate == sb.events_duplicate && sb.events_duplicate == 1);
    CHECK(sa.bytes == sb.bytes);
    CHECK(sa.executions == sb.executions);
    cs_store_free(a);
    cs_store_free(b);
}

/* What cs_store_publish_fields cannot publish without the whole event it refuses, storing nothing. */
static void test_publish_fields_refuses(void)
{
    cs_store_t *st;
    cs_publish_t pub;
    cs_store_stats_t s;

    REQUIRE(cs_store_new(&st, &lim) == 0);
    CHECK(post_fields(st, "{\"execution_id\":\"r\",\"type\":\"task_started\"}", &pub) == CS_ERR_INTERNAL);
    CHECK(post_fields(st, "{\"execution_id\":\"r\",\"type\":\"human_input_required\"}", &pub) ==
          CS_ERR_INTERNAL);
    CHECK(post_fields(st, "{\"execution_id\":\"r\",\n\"type\":\"log\"}", &pub) == CS_ERR_INTERNAL);
    cs_store_stats(st, &s);
    CHECK(s.events_published == 0);
    CHECK(cs_store_find(st, "r", 1) == NULL);
    cs_store_free(st);
}

int main(void)
{
    RUN(test_hitl_answer_and_await);
    RUN(test_answer_from_json);
    RUN(test_status_progress);
    RUN(test_publish_and_render);
    RUN(test_publish_raw);
    RUN(test_publish_fields);
    RUN(test_publish_fields_refuses);
    RUN(test_idempotent);
    RUN(test_id_index_eviction);
    RUN(test_history_live_and_park);
    RUN(test_resume_forms);
    RUN(test_ring_eviction_and_gap);
    RUN(test_ring_bytes);
    RUN(test_filter_and_global);
    RUN(test_budget_prefers_finished);
    RUN(test_retention);
    RUN(test_many_executions_bounded);
    RUN(test_hitl_requests_bounded);
    RUN(test_reload_shrinks_rings);
    RUN(test_hitl_every_answer_kept);
    CT_DONE();
}
