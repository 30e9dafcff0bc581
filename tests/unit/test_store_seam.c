/*
 * test_store_seam.c - the store's seam (store.h): every change goes through the observer, and the
 * records replayed into an empty store rebuild the same executions, seqs, event ids, frames,
 * statuses and human-input requests - what the journal will do at start. Also the seq step taken over
 * by a sequencer (the completion of a publish confirmed later: test_ingest_order.c).
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

/* A journal_record kept past the observer's call: its strings copied. */
typedef struct rec {
    cs_change_t c;
    char *exec, *event_id, *type, *json;
} rec_t;

typedef struct journal {
    rec_t *v;
    size_t n, cap;
    size_t kinds[CS_CHANGE_LAST + 1];
    int later; /* answer CS_CHANGE_LATER to publishes */
} journal_t;

static char *dupn(const char *s, size_t n)
{
    char *d;
    if (s == NULL)
        return NULL;
    d = malloc(n + 1);
    REQUIRE(d != NULL);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static int journal_record(void *data, const cs_change_t *c)
{
    journal_t *j = data;
    if (j->n == j->cap) {
        j->cap = j->cap ? 2 * j->cap : 256;
        j->v = realloc(j->v, j->cap * sizeof(*j->v));
        REQUIRE(j->v != NULL);
    }
    rec_t *r = &j->v[j->n++];
    r->c = *c;
    r->c.exec = r->exec = dupn(c->exec, c->exec_len);
    r->c.event_id = r->event_id = dupn(c->event_id, c->event_id_len);
    r->c.type = r->type = dupn(c->type, c->type_len);
    r->c.json = r->json = dupn(c->json, c->json_len);
    REQUIRE(c->kind >= CS_CHANGE_EXEC_NEW && c->kind <= CS_CHANGE_LAST);
    j->kinds[c->kind]++;
    return c->kind == CS_CHANGE_PUBLISH && j->later ? CS_CHANGE_LATER : 0;
}

static void journal_free(journal_t *j)
{
    for (size_t i = 0; i < j->n; i++) {
        free(j->v[i].exec);
        free(j->v[i].event_id);
        free(j->v[i].type);
        free(j->v[i].json);
    }
    free(j->v);
    memset(j, 0, sizeof(*j));
}

static cs_store_t *replay(const journal_t *j, const cs_store_limits_t *lim)
{
    cs_store_t *b;
    char detail[300];

    REQUIRE(cs_store_new(&b, lim) == 0);
    for (size_t i = 0; i < j->n; i++) {
        if (cs_store_replay(b, &j->v[i].c, detail, sizeof(detail)) != 0) {
            fprintf(stderr, "record %zu (kind %d): %s\n", i, (int)j->v[i].c.kind, detail);
            REQUIRE(0);
        }
    }
    return b;
}

static int same_json(const json_t *a, const json_t *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && json_equal((json_t *)a, (json_t *)b));
}

static int same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* The executions with a history, their seqs, frames, statuses and requests, and the global ring. */
static void check_same(const cs_store_t *a, const cs_store_t *b)
{
    const cs_exec_t *x, *tmp;
    size_t na = 0, nb = 0;
    char detail[300];

    CHECK(cs_store_check(b, NULL, NULL, detail, sizeof(detail)) == 0);
    HASH_ITER(hh, b->execs, x, tmp)
    {
        if (exec_has_history(x))
            nb++;
    }
    HASH_ITER(hh, a->execs, x, tmp)
    {
        if (!exec_has_history(x))
            continue;
        na++;
        const cs_exec_t *y = cs_store_find((cs_store_t *)b, x->id, x->id_len);
        REQUIRE(y != NULL);
        CHECK(x->epoch == y->epoch);
        CHECK(x->first_seq == y->first_seq && x->next_seq == y->next_seq);
        for (uint64_t s = x->first_seq; s < x->next_seq; s++) {
            const cs_frame_t *f = cs_exec_frame(x, s), *g = cs_exec_frame(y, s);
            REQUIRE(f != NULL && g != NULL);
            CHECK(f->json_len == g->json_len && memcmp(f->json, g->json, f->json_len) == 0);
            CHECK_STR(f->event_id, g->event_id);
            CHECK(f->gseq == g->gseq);
            CHECK(strcmp(f->sse_head, g->sse_head) == 0);
        }
        CHECK(x->state.status == y->state.status && x->finished == y->finished);
        CHECK(memcmp(&x->state.progress, &y->state.progress, sizeof(x->state.progress)) == 0);
        CHECK(same_json(x->state.result, y->state.result));
        CHECK(same_str(x->state.error_message, y->state.error_message));
        CHECK(x->created_unix_ms == y->created_unix_ms && x->last_unix_ms == y->last_unix_ms);
        CHECK(x->hitl.n == y->hitl.n && x->hitl.n_open == y->hitl.n_open);
        for (const cs_hitl_req_t *r = x->hitl.reqs; r != NULL; r = r->next) {
            const cs_hitl_req_t *q = cs_hitl_find(&y->hitl, r->event_id);
            REQUIRE(q != NULL);
            CHECK(q->seq == r->seq && q->answered == r->answered && same_str(q->push, r->push));
        }
        json_t *sa = cs_exec_status_json(x), *sb = cs_exec_status_json(y);
        CHECK(json_equal(sa, sb));
        json_decref(sa);
        json_decref(sb);
    }
    CHECK(na == nb);
    CHECK(a->gfirst == b->gfirst && a->gnext == b->gnext);
    for (uint64_t g = a->gfirst; g < a->gnext; g++) {
        const cs_frame_t *f = a->gring[g % a->gcap], *h = b->gring[g % b->gcap];
        CHECK(f->json_len == h->json_len && memcmp(f->json, h->json, f->json_len) == 0);
    }
}

static const char *const types[] = {"log",         "run.started", "task_started", "task_completed",
                                    "tool.called", "agent.error", "llm.token",    "run.completed",
                                    "run.failed",  "log",         "log",          "human_input_required"};

static void on_wake(cs_sub_t *s)
{
    (void)s;
}
static const cs_sub_ops_t ops = {on_wake};

/* Called after each of drive's steps when set (a test that interleaves its own work, e.g. a snapshot's
 * steps). */
static void (*drive_hook)(cs_store_t *st, int step);

/* Drives a store through every kind of change: publishes of both paths, duplicates, requests and
 * answers, ends and restarts, ring and budget evictions, expiry, subscribers creating and freeing
 * pending executions. */
static void drive(cs_store_t *st, unsigned seed)
{
    char detail[300], line[512], eid[64], x[16];
    cs_publish_t pub;
    cs_sub_t sub;
    int64_t mono = 0, unix_ms = 1768473002000LL;

    srand(seed);
    for (int i = 0; i < 1500; i++) {
        int k = rand() % 14;
        snprintf(x, sizeof(x), "x%d", rand() % 9);
        unix_ms += 7;
        if (k < 12) {
            const char *type = types[rand() % (sizeof(types) / sizeof(types[0]))];
            json_t *ev = json_pack("{s:s, s:s, s:s}", "execution_id", x, "type", type, "message", "hello");
            if (rand() % 3 == 0) {
                snprintf(eid, sizeof(eid), "e%d", rand() % 40); /* retries and reused ids */
                json_object_set_new(ev, "event_id", json_string(eid));
            }
            if (strcmp(type, "human_input_required") == 0)
                json_object_set_new(ev, "task_id", json_string(rand() % 2 ? "t1" : "t2"));
            if (strcmp(type, "run.completed") == 0)
                json_object_set_new(ev, "result", json_pack("{s:i}", "n", i));
            if (rand() % 2 == 0 && strcmp(type, "log") == 0) {
                /* The fast path: a line kept as it came, known by its fields. */
                cs_event_fields_t fl = {
                    .execution_id = x, .execution_id_len = strlen(x), .type = "log", .type_len = 3};
                int n = snprintf(line, sizeof(line),
                                 "{ \"execution_id\":\"%s\", \"type\":\"log\", \"n\": %d }", x, i);
                (void)cs_store_publish_fields(st, &fl, line, (size_t)n, unix_ms, &pub, detail,
                                              sizeof(detail));
            } else {
                char *raw = json_dumps(ev, 0); /* with white space: kept as it came */
                (void)cs_store_publish_raw(st, ev, raw, strlen(raw), unix_ms, &pub, detail, sizeof(detail));
                free(raw);
            }
            json_decref(ev);
        } else if (k == 12) {
            cs_answer_t a = {.task_id = rand() % 2 ? "t1" : NULL, .is_approve = json_true()};
            (void)cs_store_answer(st, x, strlen(x), &a, unix_ms, &pub, detail, sizeof(detail));
        } else {
            mono += 700;
            cs_store_expire(st, mono);
            /* A subscriber on an execution nobody posted to: created pending, freed when it leaves. */
            cs_start_t start = {.kind = CS_START_NOW};
            snprintf(x, sizeof(x), "w%d", i);
            REQUIRE(cs_sub_open(st, &sub, x, strlen(x), &start, NULL, &ops, NULL) == 0);
            cs_sub_close(&sub);
        }
        REQUIRE(cs_store_check(st, NULL, NULL, detail, sizeof(detail)) == 0);
        if (drive_hook != NULL)
            drive_hook(st, i);
    }
}

static void test_replay_rebuilds_the_store(void)
{
    /* Small: rings, the global ring and the budget all evict. */
    cs_store_limits_t lim = {
        .ring_events = 16, .ring_bytes = 4096, .max_bytes = 48 << 10, .retain_s = 2, .global_events = 32};

    for (unsigned seed = 1; seed <= 4; seed++) {
        journal_t j = {0};
        cs_store_t *a, *b;
        REQUIRE(cs_store_new(&a, &lim) == 0);
        cs_store_set_observer(a, &(cs_store_observer_t){journal_record, &j});
        drive(a, seed);
        /* Every kind of change happened. */
        for (int k = CS_CHANGE_EXEC_NEW; k <= CS_CHANGE_FREED; k++) {
            if (j.kinds[k] == 0)
                fprintf(stderr, "seed %u: no journal_record of kind %d\n", seed, k);
            CHECK(j.kinds[k] > 0);
        }
        b = replay(&j, &lim);
        check_same(a, b);

        /* Records go on after a replay: the replayed store takes new events as the first would. */
        journal_t j2 = {0};
        cs_store_set_observer(b, &(cs_store_observer_t){journal_record, &j2});
        json_t *ev = json_pack("{s:s, s:s}", "execution_id", "x1", "type", "run.started");
        cs_publish_t pa, pb;
        char detail[128];
        REQUIRE(cs_store_publish(a, ev, 1, &pa, detail, sizeof(detail)) == CS_OK);
        REQUIRE(cs_store_publish(b, ev, 1, &pb, detail, sizeof(detail)) == CS_OK);
        CHECK(pa.seq == pb.seq);
        json_decref(ev);
        cs_store_free(a);
        cs_store_free(b);
        journal_free(&j);
        journal_free(&j2);
    }
}

static const cs_store_limits_t roomy = {
    .ring_events = 8, .ring_bytes = 1 << 20, .max_bytes = 1 << 24, .retain_s = 10, .global_events = 16};

/* Publishes n events of type to execution x in st; their seqs in seqs (when not NULL). */
static void post_n(cs_store_t *st, const char *x, const char *type, int n, uint64_t *seqs)
{
    cs_publish_t pub;
    char detail[300];

    for (int i = 0; i < n; i++) {
        json_t *ev = json_pack("{s:s, s:s}", "execution_id", x, "type", type);
        REQUIRE(cs_store_publish(st, ev, 1, &pub, detail, sizeof(detail)) == CS_OK);
        if (seqs != NULL)
            seqs[i] = pub.seq;
        json_decref(ev);
    }
}

/* A record that does not follow from the store's state is refused, not applied. */
static void test_replay_refuses_a_gap(void)
{
    journal_t j = {0};
    cs_store_t *a, *b;
    char detail[300];

    REQUIRE(cs_store_new(&a, &roomy) == 0);
    cs_store_set_observer(a, &(cs_store_observer_t){journal_record, &j});
    post_n(a, "g", "log", 3, NULL);
    REQUIRE(cs_store_new(&b, &roomy) == 0);
    size_t skipped = 0;
    int failed = 0;
    for (size_t i = 0; i < j.n && !failed; i++) {
        if (j.v[i].c.kind == CS_CHANGE_PUBLISH && j.v[i].c.seq == 2 && skipped++ == 0)
            continue; /* seq 2's publish lost: its global append then fails */
        failed = cs_store_replay(b, &j.v[i].c, detail, sizeof(detail)) != 0;
    }
    CHECK(failed);
    cs_store_free(a);
    cs_store_free(b);
    journal_free(&j);
}

/* A sequencer that holds the order elsewhere: it may skip seqs, never go back. */
static int seq_calls;
static int jump_seq(void *data, const char *exec, size_t len, uint64_t next, uint64_t *seq)
{
    (void)data, (void)exec, (void)len;
    seq_calls++;
    *seq = next == 3 ? 10 : next; /* seqs 3-9 were taken by another node */
    return 0;
}

static int refuse_seq(void *data, const char *exec, size_t len, uint64_t next, uint64_t *seq)
{
    (void)data, (void)exec, (void)len, (void)next, (void)seq;
    return CS_ERR_INTERNAL;
}

static void test_sequencer(void)
{
    journal_t j = {0};
    cs_store_t *a, *b;
    cs_publish_t pub;
    char detail[300];
    uint64_t seqs[5];

    REQUIRE(cs_store_new(&a, &roomy) == 0);
    cs_store_set_observer(a, &(cs_store_observer_t){journal_record, &j});
    cs_store_set_sequencer(a, &(cs_store_sequencer_t){jump_seq, NULL});
    post_n(a, "s", "run.started", 5, seqs);
    CHECK(seq_calls == 5);
    CHECK(seqs[0] == 1 && seqs[1] == 2 && seqs[2] == 10 && seqs[3] == 11 && seqs[4] == 12);
    cs_exec_t *ex = cs_store_find(a, "s", 1);
    REQUIRE(ex != NULL);
    uint64_t first, next;
    cs_exec_seqs(ex, &first, &next);
    CHECK(first == 10 && next == 13); /* 1 and 2 are not in a ring with a hole */
    json_t *st = cs_exec_status_json(ex);
    CHECK(json_integer_value(json_object_get(st, "last_seq")) == 12);
    json_decref(st);
    b = replay(&j, &roomy);
    check_same(a, b);

    cs_store_set_sequencer(a, &(cs_store_sequencer_t){refuse_seq, NULL});
    json_t *ev = json_pack("{s:s, s:s}", "execution_id", "s", "type", "log");
    CHECK(cs_store_publish(a, ev, 1, &pub, detail, sizeof(detail)) == CS_ERR_INTERNAL);
    json_decref(ev);
    cs_exec_seqs(ex, &first, &next);
    CHECK(next == 13);
    CHECK(cs_store_check(a, NULL, NULL, detail, sizeof(detail)) == 0);
    cs_store_free(a);
    cs_store_free(b);
    journal_free(&j);
}

int main(void)
{
    RUN(test_replay_rebuilds_the_store);
    RUN(test_replay_refuses_a_gap);
    RUN(test_sequencer);
    CT_DONE();
}
