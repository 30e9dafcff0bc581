/*
 * test_store_budget.c - the store at store.max_bytes: every eviction step against every kind of
 * publish (an event, a human_input_required request, an answer through cs_store_answer, a
 * completion, an idempotent re-post), into the very execution the step would take. A publish either
 * is stored and stays (its execution and frame valid, the bytes within the budget) or is refused
 * and stores nothing; an open request is never lost. Before issue 10 each "too big" case read
 * freed memory (ASan) or acknowledged an event the store no longer held.
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

#define M 32768 /* store.max_bytes */

static const cs_store_limits_t lim = {
    .ring_events = 4, .ring_bytes = 1 << 20, .max_bytes = M, .retain_s = 10, .global_events = 8};

static void on_wake(cs_sub_t *s)
{
    (void)s;
}
static const cs_sub_ops_t ops = {on_wake};

static int pushed;
static void on_push(cs_awaiter_t *aw, const char *line, size_t len)
{
    (void)aw;
    (void)line;
    (void)len;
    pushed++;
}

static char *pad(size_t n)
{
    char *p = malloc(n + 1);
    REQUIRE(p != NULL);
    memset(p, 'x', n);
    p[n] = '\0';
    return p;
}

static void check_store(cs_store_t *st)
{
    char detail[300];
    cs_store_stats_t s;
    int ok = cs_store_check(st, NULL, NULL, detail, sizeof(detail)) == 0;
    if (!ok)
        fprintf(stderr, "  %s\n", detail);
    CHECK(ok);
    cs_store_stats(st, &s);
    CHECK(s.bytes <= s.max_bytes);
}

/* Publishes {"execution_id": x, "type": type, key: <n bytes>} (key NULL: nothing more). */
static cs_err_t publish(cs_store_t *st, const char *x, const char *type, const char *eid, const char *key,
                        size_t n, cs_publish_t *pub)
{
    char detail[300];
    json_t *ev = json_pack("{s:s, s:s}", "execution_id", x, "type", type);
    if (eid != NULL)
        json_object_set_new(ev, "event_id", json_string(eid));
    if (key != NULL) {
        char *p = pad(n);
        json_object_set_new(ev, key, json_string(p));
        free(p);
    }
    if (strcmp(type, "human_input_required") == 0)
        json_object_set_new(ev, "task_id", json_string("t"));
    cs_err_t e = cs_store_publish(st, ev, 1768473002123LL, pub, detail, sizeof(detail));
    json_decref(ev);
    if (e != CS_OK)
        CHECK(strstr(detail, "store.max_bytes") != NULL || e == CS_ERR_CONFLICT);
    return e;
}

static void ok(cs_store_t *st, const char *x, const char *type, const char *key, size_t n)
{
    cs_publish_t pub;
    REQUIRE(publish(st, x, type, NULL, key, n, &pub) == CS_OK);
}

enum scenario { S_GLOBAL, S_FINISHED_HISTORY, S_FINISHED_EMPTY, S_ACTIVE, S_WATCHED, N_SCENARIOS };
enum pkind { K_EVENT, K_REQUEST, K_ANSWER, K_COMPLETION, K_REPOST, N_PKINDS };
static const char *const scenario_names[] = {"global ring only", "finished history", "finished, empty",
                                             "least recent active", "watched, frame in flight"};
static const char *const pkind_names[] = {"event", "request", "answer", "completion", "re-post"};

typedef struct world {
    cs_store_t *st;
    cs_sub_t sub;
    int subbed;
    cs_frame_t *held; /* in flight to the subscriber */
    cs_awaiter_t aw;
    int asked;
} world_t;

/* Fills the store so that the next publish into "T" meets the eviction step of scenario s. */
static void setup(world_t *w, enum scenario s, int ask)
{
    cs_publish_t pub;

    memset(w, 0, sizeof(*w));
    REQUIRE(cs_store_new(&w->st, &lim) == 0);
    ok(w->st, "T", "run.started", NULL, 0);
    if (ask) {
        /* An open request a runtime awaits: it must survive whatever the budget does. */
        REQUIRE(publish(w->st, "T", "human_input_required", "ask", "prompt", 100, &pub) == CS_OK);
        w->aw.push = on_push;
        cs_hitl_await(cs_store_find_request(w->st, "T", 1, "ask", NULL, 0), &w->aw);
        w->asked = 1;
    }
    switch (s) {
    case S_GLOBAL: /* T's old events now only in the global ring, and o's */
        for (int i = 0; i < 6; i++)
            ok(w->st, "T", "log", "text", 1500);
        for (int i = 0; i < 10; i++)
            ok(w->st, "o", "log", "text", 1500);
        break;
    case S_FINISHED_HISTORY:
        for (int i = 0; i < 3; i++)
            ok(w->st, "T", "log", "text", 2000);
        ok(w->st, "T", "run.completed", NULL, 0);
        for (int i = 0; i < 3; i++)
            ok(w->st, "o", "log", "text", 2000);
        break;
    case S_FINISHED_EMPTY:
        for (int i = 0; i < 3; i++)
            ok(w->st, "T", "log", "text", 2000);
        ok(w->st, "T", "run.completed", NULL, 0);
        for (int i = 0; i < 40; i++) {
            ok(w->st, "o", "log", "text", 3000);
            cs_exec_t *t = cs_store_find(w->st, "T", 1);
            if (t != NULL && exec_count(t) == 0)
                break;
        }
        break;
    case S_ACTIVE:
        for (int i = 0; i < 4; i++)
            ok(w->st, "T", "log", "text", 2500);
        for (int i = 0; i < 3; i++)
            ok(w->st, "o", "log", "text", 2000);
        break;
    case S_WATCHED: {
        cs_start_t start = {.kind = CS_START_HISTORY};
        cs_item_t it;
        for (int i = 0; i < 4; i++)
            ok(w->st, "T", "log", "text", 4000);
        REQUIRE(cs_sub_open(w->st, &w->sub, "T", 1, &start, NULL, &ops, NULL) == 0);
        w->subbed = 1;
        while (cs_sub_next(&w->sub, &it))
            if (it.frame != NULL && it.frame->bytes > 4000 && w->held == NULL)
                w->held = cs_frame_ref(it.frame); /* a transport writing it */
        REQUIRE(w->held != NULL);
        break;
    }
    default:
        break;
    }
    /* Then to the brim: whatever comes next needs an eviction first. */
    for (int i = 0; i < 1000; i++) {
        cs_store_stats_t st;
        cs_store_stats(w->st, &st);
        if (st.bytes > M - 500)
            break;
        /* Over two executions (rings of 4, a global ring of 8): nothing only in the global ring, so
         * the step of the scenario is the first to act (but in S_GLOBAL). */
        ok(w->st, s == S_ACTIVE ? "o" : s == S_GLOBAL || i % 2 ? "f" : "g", "log", "text", 100);
    }
    check_store(w->st);
}

static void teardown(world_t *w)
{
    if (w->asked) {
        /* The awaited request was never lost: still open (its runtime awaits), or answered and pushed. */
        CHECK(w->aw.req != NULL || pushed > 0);
        cs_hitl_unawait(&w->aw);
    }
    cs_frame_unref(w->st, w->held);
    if (w->subbed)
        cs_sub_close(&w->sub);
    check_store(w->st);
    cs_store_free(w->st);
}

/* Publishes kind k into T, n bytes of payload; returns the result. */
static cs_err_t publish_kind(world_t *w, enum pkind k, size_t n, cs_publish_t *pub)
{
    char detail[300];
    switch (k) {
    case K_EVENT:
        return publish(w->st, "T", "log", NULL, "text", n, pub);
    case K_REQUEST:
        return publish(w->st, "T", "human_input_required", NULL, "prompt", n, pub);
    case K_ANSWER: {
        char *p = pad(n);
        json_t *fb = json_string(p), *yes = json_true();
        free(p);
        cs_answer_t a = {.event_id = "ask", .human_feedback = fb, .is_approve = yes};
        memset(pub, 0, sizeof(*pub));
        cs_err_t e = cs_store_answer(w->st, "T", 1, &a, 0, pub, detail, sizeof(detail));
        if (e == CS_OK)
            CHECK_STR(pub->request_event_id, "ask");
        else
            CHECK(strstr(detail, "store.max_bytes") != NULL);
        json_decref(fb);
        json_decref(yes);
        return e;
    }
    case K_COMPLETION:
        return publish(w->st, "T", "run.completed", NULL, "result", n, pub);
    case K_REPOST:
        return publish(w->st, "T", "human_input_required", "ask", "prompt", n, pub);
    default:
        return CS_ERR_INTERNAL;
    }
}

static void one(enum scenario s, enum pkind k, int big)
{
    world_t w;
    cs_publish_t pub;
    /* big: more than the budget allows for it (M / 3 of prompt is a request of more than M / 2, M / 2
     * of feedback is an answer of more than M); else a size that fits once something is evicted. */
    size_t n = !big ? 2500 : k == K_REQUEST || k == K_REPOST ? M / 3 : k == K_EVENT ? M : M / 2;
    int ask = k == K_ANSWER || k == K_REPOST;

    fprintf(stderr, "   %s / %s / %s\n", scenario_names[s], pkind_names[k], big ? "too big" : "fits");
    setup(&w, s, ask);
    cs_exec_t *t = cs_store_find(w.st, "T", 1);
    uint64_t next = t != NULL ? t->next_seq : 0;
    size_t open = t != NULL ? t->hitl.n_open : 0, n_reqs = t != NULL ? t->hitl.n : 0;
    uint64_t ask_seq = 0;
    if (ask) {
        REQUIRE(t != NULL);
        ask_seq = cs_hitl_find(&t->hitl, "ask")->seq;
    }
    pushed = 0;

    cs_err_t e = publish_kind(&w, k, n, &pub);
    cs_exec_t *now = cs_store_find(w.st, "T", 1);
    check_store(w.st);
    if (k == K_REPOST) {
        /* The same request again, big or not: acknowledged with its seq, stored once. */
        CHECK(e == CS_OK && pub.duplicate && pub.seq == ask_seq);
        REQUIRE(now != NULL);
        CHECK(now->hitl.n == n_reqs && now->hitl.n_open == open && now->next_seq == next);
    } else if (big) {
        CHECK(e == CS_ERR_TOO_LARGE);
        if (e == CS_OK) /* the old store: is what it acknowledged still there? */
            CHECK(pub.exec != NULL && cs_exec_frame(pub.exec, pub.seq) == pub.frame);
        CHECK(t == NULL || (now == t && now->next_seq == next && now->hitl.n == n_reqs));
        if (k == K_ANSWER)
            CHECK(pushed == 0 && w.aw.req != NULL && now->hitl.n_open == 1);
    } else {
        /* Watched with a frame in flight, the store may have no room: then nothing is stored. */
        CHECK(e == CS_OK || (s == S_WATCHED && e == CS_ERR_UNAVAILABLE));
        if (e == CS_OK) {
            REQUIRE(now != NULL);
            CHECK(pub.exec == now && pub.seq == next);
            CHECK(pub.frame != NULL && cs_exec_frame(now, pub.seq) == pub.frame && pub.frame->in_exec);
            if (k == K_REQUEST)
                CHECK(now->hitl.n_open == open + 1 && cs_hitl_find(&now->hitl, pub.event_id) != NULL);
            if (k == K_ANSWER)
                CHECK(pushed == 1 && now->hitl.n_open == open - 1);
            if (k == K_COMPLETION)
                CHECK(cs_exec_status(now) == CS_EXEC_COMPLETED && now->state.result != NULL);
        } else {
            CHECK(now == t && (now == NULL || now->next_seq == next));
        }
    }
    teardown(&w);
}

static void test_matrix(void)
{
    for (int s = 0; s < N_SCENARIOS; s++)
        for (int k = 0; k < N_PKINDS; k++)
            for (int big = 0; big < 2; big++)
                one((enum scenario)s, (enum pkind)k, big);
}

/* issue 10, as reported: run.started, run.completed, then a 40 KB request against 64 KiB. */
static void test_reported_request(void)
{
    cs_store_limits_t l = lim;
    cs_store_t *st;
    cs_publish_t pub;
    l.max_bytes = 65536;
    l.ring_events = 1024;
    REQUIRE(cs_store_new(&st, &l) == 0);
    ok(st, "x", "run.started", NULL, 0);
    ok(st, "x", "run.completed", NULL, 0);
    cs_err_t e = publish(st, "x", "human_input_required", NULL, "prompt", 40000, &pub);
    CHECK(e == CS_ERR_TOO_LARGE);
    if (e == CS_OK) /* what ingest does next: await the request it acknowledged */
        CHECK(cs_hitl_find(&pub.exec->hitl, pub.event_id) != NULL);
    CHECK(cs_store_find(st, "x", 1) != NULL && cs_store_find(st, "x", 1)->hitl.n == 0);
    check_store(st);
    cs_store_free(st);
}

/* issue 10, as reported: one 60 KB answer to a finished execution against 64 KiB. */
static void test_reported_answer(void)
{
    cs_store_limits_t l = lim;
    cs_store_t *st;
    cs_publish_t pub;
    char detail[300];
    l.max_bytes = 65536;
    l.ring_events = 1024;
    REQUIRE(cs_store_new(&st, &l) == 0);
    ok(st, "x", "run.started", NULL, 0);
    REQUIRE(publish(st, "x", "human_input_required", "q", NULL, 0, &pub) == CS_OK);
    ok(st, "x", "run.completed", NULL, 0);
    char *p = pad(60000);
    json_t *fb = json_string(p), *yes = json_true();
    free(p);
    cs_answer_t a = {.event_id = "q", .human_feedback = fb, .is_approve = yes};
    cs_err_t e = cs_store_answer(st, "x", 1, &a, 0, &pub, detail, sizeof(detail));
    CHECK(e == CS_ERR_TOO_LARGE);
    if (e == CS_OK)
        CHECK(pub.exec != NULL && pub.exec->hitl.n_open == 0);
    /* The request is still open: a smaller answer closes it. */
    cs_exec_t *x = cs_store_find(st, "x", 1);
    REQUIRE(x != NULL);
    CHECK(x->hitl.n_open == 1);
    json_decref(fb);
    fb = json_string("ok");
    a.human_feedback = fb;
    CHECK(cs_store_answer(st, "x", 1, &a, 0, &pub, detail, sizeof(detail)) == CS_OK);
    CHECK(x->hitl.n_open == 0);
    json_decref(fb);
    json_decref(yes);
    check_store(st);
    cs_store_free(st);
}

/* A retry of a request whose event left the ring is the same request, not a second one. */
static void test_repost_after_eviction(void)
{
    cs_store_t *st;
    cs_publish_t pub, again;
    REQUIRE(cs_store_new(&st, &lim) == 0);
    REQUIRE(publish(st, "r", "human_input_required", "once", "prompt", 10, &pub) == CS_OK);
    for (int i = 0; i < 8; i++)
        ok(st, "r", "log", NULL, 0); /* ring_events 4: the request's event leaves the ring */
    cs_exec_t *r = cs_store_find(st, "r", 1);
    REQUIRE(r != NULL && cs_exec_frame(r, pub.seq) == NULL);
    REQUIRE(publish(st, "r", "human_input_required", "once", "prompt", 10, &again) == CS_OK);
    CHECK(again.duplicate && again.seq == pub.seq);
    CHECK(r->hitl.n == 1 && r->hitl.n_open == 1);
    check_store(st);
    cs_store_free(st);
}

/* Requests are indexed: 20,000 of them in one execution, found and answered by id and by task in
 * constant time (linear scans took 3.3 s for this). */
static void test_many_requests_indexed(void)
{
    cs_store_limits_t l = lim;
    cs_store_t *st;
    cs_publish_t pub;
    char eid[32], task[32], detail[300];
    l.max_bytes = 256 << 20;
    REQUIRE(cs_store_new(&st, &l) == 0);
    json_t *yes = json_true();
    for (int i = 0; i < 20000; i++) {
        snprintf(eid, sizeof(eid), "r%d", i);
        snprintf(task, sizeof(task), "t%d", i % 100);
        json_t *ev = json_pack("{s:s, s:s, s:s, s:s}", "execution_id", "big", "type", "human_input_required",
                               "event_id", eid, "task_id", task);
        REQUIRE(cs_store_publish(st, ev, 0, &pub, detail, sizeof(detail)) == CS_OK);
        json_decref(ev);
    }
    cs_exec_t *ex = cs_store_find(st, "big", 3);
    REQUIRE(ex != NULL && ex->hitl.n_open == 20000);
    CHECK(cs_hitl_open_for_task(&ex->hitl, "t7") == cs_hitl_find(&ex->hitl, "r19907"));
    CHECK(cs_hitl_open_for_task(&ex->hitl, NULL) == cs_hitl_find(&ex->hitl, "r19999"));
    for (int i = 0; i < 20000; i += 2) {
        snprintf(task, sizeof(task), "t%d", i % 100);
        cs_answer_t a = {.task_id = task, .is_approve = yes}; /* the latest open one of the task */
        REQUIRE(cs_store_answer(st, "big", 3, &a, 0, &pub, detail, sizeof(detail)) == CS_OK);
    }
    CHECK(ex->hitl.n_open == 10000);
    /* t0 had r0, r100, ... r19900; 100 answers went to the even tasks' latest ones first. */
    CHECK(cs_hitl_open_for_task(&ex->hitl, "t0") == NULL);
    CHECK(cs_hitl_open_for_task(&ex->hitl, "t1") == cs_hitl_find(&ex->hitl, "r19901"));
    json_decref(yes);
    check_store(st);
    cs_store_free(st);
}

/* A lowered budget on reload evicts what may go; pinned requests stay, new publishes are refused
 * until there is room again, and a raised budget takes them again. */
static void test_reload_below_pinned(void)
{
    cs_store_limits_t l = lim;
    cs_store_t *st;
    cs_publish_t pub;
    l.max_bytes = 1 << 20;
    REQUIRE(cs_store_new(&st, &l) == 0);
    for (int i = 0; i < 10; i++) {
        char x[8];
        snprintf(x, sizeof(x), "p%d", i);
        REQUIRE(publish(st, x, "human_input_required", NULL, "prompt", 4000, &pub) == CS_OK);
        ok(st, x, "log", "text", 4000);
    }
    l.max_bytes = 16384;
    cs_store_set_limits(st, &l);
    for (int i = 0; i < 10; i++) {
        char x[8];
        snprintf(x, sizeof(x), "p%d", i);
        cs_exec_t *ex = cs_store_find(st, x, strlen(x));
        REQUIRE(ex != NULL);
        CHECK(ex->hitl.n_open == 1 && exec_count(ex) == 0);
    }
    CHECK(publish(st, "n", "log", NULL, "text", 10, &pub) == CS_ERR_UNAVAILABLE);
    CHECK(cs_store_find(st, "n", 1) == NULL);
    l.max_bytes = 1 << 20;
    cs_store_set_limits(st, &l);
    CHECK(publish(st, "n", "log", NULL, "text", 10, &pub) == CS_OK);
    char detail[300];
    CHECK(cs_store_check(st, NULL, NULL, detail, sizeof(detail)) == 0);
    cs_store_free(st);
}

int main(int argc, char **argv)
{
    if (argc == 4) { /* one cell of the matrix: scenario, kind, big */
        one((enum scenario)atoi(argv[1]), (enum pkind)atoi(argv[2]), atoi(argv[3]));
        CT_DONE();
    }
    RUN(test_reported_request);
    RUN(test_reported_answer);
    RUN(test_repost_after_eviction);
    RUN(test_matrix);
    RUN(test_many_requests_indexed);
    RUN(test_reload_below_pinned);
    CT_DONE();
}
