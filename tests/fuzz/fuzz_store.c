/*
 * fuzz_store.c - a stateful fuzz target for the store and its human-input protocol: the input is a
 * program of operations (publish events of every kind and size, human-input requests, answers
 * through cs_store_answer and posted by producers, awaits and their withdrawal, subscribe, read,
 * hold a frame in flight, release, unsubscribe, park, expire with advancing time, reload limits)
 * against a tiny store.max_bytes, with the invariants checked after every step:
 *  - cs_store_check: rings and global ring valid, indexes agree, bytes counted == bytes held;
 *  - refcounts: every frame's count is its rings plus the frames this program holds in flight;
 *  - a successful publish leaves the store within store.max_bytes and its frame in its execution;
 *    a refused one stores nothing;
 *  - every open subscriber's execution is alive and its cursor within what exists;
 *  - no open request is lost: each acknowledged request stays findable until answered, and every
 *    awaiter is attached to its open request or was pushed the answer;
 *  - a snapshot (cs_store_snapshot), taken at random points and replayed into a fresh store, holds what
 *    the store holds (executions, epochs, seqs, frames, statuses, requests, list order, the global ring);
 *  - the seam is complete: every change record (store.h) is replayed at once into a mirror store, which
 *    holds the same executions, seqs, frames, statuses and requests after every step;
 *  - a snapshot written across steps (cs_store_snap_begin/step, a tiny budget each) while the program
 *    goes on, its records and the live ones replayed in their order into a fresh store, ends as the same
 *    store (every field, list order and the global ring) as a snapshot taken whole at its begin with the
 *    same live records applied on top.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define N_EXECS  4
#define N_SUBS   4
#define N_AWAITS 6
#define N_MODEL  64
#define ID_POOL  8

typedef struct fsub {
    cs_sub_t sub;
    int open;
    cs_frame_t *held; /* a frame in flight to this subscriber */
} fsub_t;

typedef struct fawait {
    cs_awaiter_t aw;
    int used, pushed;
    int exec;
    char eid[CS_EVENT_ID_MAX + 1];
} fawait_t;

typedef struct freq { /* an acknowledged request, as the producer knows it */
    int used, exec, answered;
    char eid[CS_EVENT_ID_MAX + 1];
} freq_t;

typedef struct prog {
    const uint8_t *p, *end;
    cs_store_t *st;
    cs_store_t *mirror; /* every change record of st replayed into it */
    cs_store_t *inc;    /* a snapshot in progress (cs_store_snap_begin) and the live records, replayed */
    cs_store_t *ref;    /* the whole snapshot taken at its begin and the same live records, replayed */
    cs_store_limits_t lim;
    int64_t now;
    fsub_t subs[N_SUBS];
    fawait_t aws[N_AWAITS];
    freq_t model[N_MODEL];
} prog_t;

static const char *const exec_ids[N_EXECS] = {"a", "b", "c", "d"};

#define FAIL(...)                                                                                            \
    do {                                                                                                     \
        fprintf(stderr, "fuzz_store: " __VA_ARGS__);                                                         \
        fputc('\n', stderr);                                                                                 \
        abort();                                                                                             \
    } while (0)

static unsigned next(prog_t *g)
{
    return g->p < g->end ? *g->p++ : 0;
}

static void on_wake(cs_sub_t *s)
{
    (void)s;
}
static const cs_sub_ops_t ops = {on_wake};

static void on_push(cs_awaiter_t *aw, const char *line, size_t len)
{
    fawait_t *a = (fawait_t *)aw; /* aw is the first member */
    if (aw->req != NULL || len == 0 || line[len - 1] != '\n' || strstr(line, a->eid) == NULL)
        FAIL("a push that is not the answer to %s", a->eid);
    a->pushed = 1;
}

static char *pad(size_t n, char c)
{
    char *s = malloc(n + 1);
    if (s == NULL)
        abort();
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

static void model_add(prog_t *g, int exec, const char *eid)
{
    for (int i = 0; i < N_MODEL; i++)
        if (g->model[i].used && g->model[i].exec == exec && strcmp(g->model[i].eid, eid) == 0)
            return;
    for (int i = 0; i < N_MODEL; i++)
        if (!g->model[i].used) {
            g->model[i].used = 1;
            g->model[i].exec = exec;
            g->model[i].answered = 0;
            snprintf(g->model[i].eid, sizeof(g->model[i].eid), "%s", eid);
            return;
        }
}

/* ---- invariants ---- */

static unsigned held_refs(const prog_t *g, const cs_frame_t *f)
{
    unsigned n = 0;
    for (int i = 0; i < N_SUBS; i++)
        n += g->subs[i].held == f;
    return n;
}

/* The observer of the store under test: each record replayed into the mirror at once. */
static int mirror_change(void *data, const cs_change_t *c)
{
    prog_t *g = data;
    char detail[300];

    if (cs_store_replay(g->mirror, c, detail, sizeof(detail)) != 0)
        FAIL("record %d does not replay: %s", (int)c->kind, detail);
    if (g->ref != NULL && cs_store_replay(g->ref, c, detail, sizeof(detail)) != 0)
        FAIL("record %d does not replay after the whole snapshot: %s", (int)c->kind, detail);
    if (g->inc != NULL && cs_store_replay(g->inc, c, detail, sizeof(detail)) != 0)
        FAIL("record %d does not replay amid the snapshot in progress: %s", (int)c->kind, detail);
    return 0;
}

/* The mirror never makes room (the records say what went): limits it never reaches. */
static void mirror_limits(const prog_t *g, cs_store_limits_t *m)
{
    *m = g->lim;
    m->max_bytes = (size_t)1 << 40;
}

static void check_mirror(prog_t *g)
{
    char detail[300];
    cs_exec_t *x, *tmp;

    if (cs_store_check(g->mirror, NULL, NULL, detail, sizeof(detail)) != 0)
        FAIL("mirror: %s", detail);
    if (HASH_COUNT(g->st->execs) != HASH_COUNT(g->mirror->execs))
        FAIL("mirror holds %u executions, the store %u", HASH_COUNT(g->mirror->execs),
             HASH_COUNT(g->st->execs));
    if (g->st->gfirst != g->mirror->gfirst || g->st->gnext != g->mirror->gnext)
        FAIL("mirror's global ring differs");
    HASH_ITER(hh, g->st->execs, x, tmp)
    {
        cs_exec_t *y = cs_store_find(g->mirror, x->id, x->id_len);
        if (y == NULL || y->epoch != x->epoch || y->first_seq != x->first_seq || y->next_seq != x->next_seq ||
            y->state.status != x->state.status || y->finished != x->finished || y->hitl.n != x->hitl.n ||
            y->hitl.n_open != x->hitl.n_open)
            FAIL("mirror's %s differs", x->id);
        for (uint64_t q = x->first_seq; q < x->next_seq; q++) {
            const cs_frame_t *f = cs_exec_frame(x, q), *h = cs_exec_frame(y, q);
            if (f->json_len != h->json_len || memcmp(f->json, h->json, f->json_len) != 0 ||
                strcmp(f->event_id, h->event_id) != 0)
                FAIL("mirror's %s seq %llu differs", x->id, (unsigned long long)q);
        }
        for (const cs_hitl_req_t *r = x->hitl.reqs; r != NULL; r = r->next) {
            const cs_hitl_req_t *q = cs_hitl_find(&y->hitl, r->event_id);
            if (q == NULL || q->answered != r->answered || q->seq != r->seq)
                FAIL("mirror's request %s of %s differs", r->event_id, x->id);
        }
    }
}

/* A snapshot of the store (cs_store_snapshot) replayed into a fresh store must hold what the store holds
 * (but the executions only subscribers keep: a restart has none). */
static int snap_into(void *data, const cs_change_t *c)
{
    char detail[300];
    if (cs_store_replay(data, c, detail, sizeof(detail)) != 0)
        FAIL("snapshot record %d does not replay: %s", (int)c->kind, detail);
    return 0;
}

static void op_snapshot(prog_t *g)
{
    cs_store_limits_t m;
    cs_store_t *s;
    char detail[300];
    cs_exec_t *x, *tmp;
    unsigned kept = 0;

    if (cs_store_snap_active(g->st))
        return; /* one at a time: the one in progress */
    mirror_limits(g, &m);
    if (cs_store_new(&s, &m) != 0)
        return;
    if (cs_store_snapshot(g->st, snap_into, s) != 0)
        FAIL("snapshot failed");
    if (cs_store_check(s, NULL, NULL, detail, sizeof(detail)) != 0)
        FAIL("snapshot replayed: %s", detail);
    if (s->gfirst != g->st->gfirst || s->gnext != g->st->gnext || s->gepoch != g->st->gepoch ||
        s->first_orders != g->st->first_orders)
        FAIL("snapshot's global ring differs");
    for (uint64_t q = s->gfirst; q < s->gnext; q++) {
        const cs_frame_t *f = g->st->gring[q % g->st->gcap], *h = s->gring[q % s->gcap];
        if (f->json_len != h->json_len || memcmp(f->json, h->json, f->json_len) != 0)
            FAIL("snapshot's global %llu differs", (unsigned long long)q);
    }
    HASH_ITER(hh, g->st->execs, x, tmp)
    {
        if (!snap_keeps(g->st, x))
            continue;
        kept++;
        cs_exec_t *y = cs_store_find(s, x->id, x->id_len);
        if (y == NULL || y->epoch != x->epoch || y->first_seq != x->first_seq || y->next_seq != x->next_seq ||
            y->state.status != x->state.status || y->finished != x->finished || y->hitl.n != x->hitl.n ||
            y->hitl.n_open != x->hitl.n_open || y->first_order != x->first_order ||
            exec_where(s, y) != exec_where(g->st, x) || y->status_bytes != x->status_bytes ||
            y->hitl.bytes != x->hitl.bytes)
            FAIL("snapshot's %s differs", x->id);
        for (uint64_t q = x->first_seq; q < x->next_seq; q++) {
            const cs_frame_t *f = cs_exec_frame(x, q), *h = cs_exec_frame(y, q);
            if (f->json_len != h->json_len || memcmp(f->json, h->json, f->json_len) != 0 ||
                strcmp(f->event_id, h->event_id) != 0 || f->gseq != h->gseq || f->in_global != h->in_global)
                FAIL("snapshot's %s seq %llu differs", x->id, (unsigned long long)q);
        }
        for (const cs_hitl_req_t *r = x->hitl.reqs; r != NULL; r = r->next) {
            const cs_hitl_req_t *q = cs_hitl_find(&y->hitl, r->event_id);
            if (q == NULL || q->answered != r->answered || q->seq != r->seq || q->bytes != r->bytes ||
                (r->push != NULL && (q->push == NULL || strcmp(q->push, r->push) != 0)))
                FAIL("snapshot's request %s of %s differs", r->event_id, x->id);
        }
    }
    if (HASH_COUNT(s->execs) != kept)
        FAIL("snapshot holds %u executions, the store keeps %u", HASH_COUNT(s->execs), kept);
    cs_store_free(s);
}

/* The snapshot in progress, replayed with the live records amid it, against the whole one taken at its
 * begin with the same live records on top: the same store, field by field. */
static int inc_into(void *data, const cs_change_t *c)
{
    char detail[300];
    if (cs_store_replay(data, c, detail, sizeof(detail)) != 0)
        FAIL("record %d of the snapshot in progress does not replay: %s", (int)c->kind, detail);
    return 0;
}

static void same_frame(const cs_frame_t *f, const cs_frame_t *h, const char *what, uint64_t q)
{
    if (f == NULL || h == NULL || f->json_len != h->json_len || memcmp(f->json, h->json, f->json_len) != 0 ||
        strcmp(f->event_id, h->event_id) != 0 || strcmp(f->type, h->type) != 0 || f->seq != h->seq ||
        f->gseq != h->gseq || f->in_global != h->in_global || f->in_exec != h->in_exec ||
        f->bytes != h->bytes)
        FAIL("the snapshot written in steps: %s %llu differs", what, (unsigned long long)q);
}

static void compare_inc(prog_t *g)
{
    cs_store_t *a = g->ref, *b = g->inc;
    char detail[300];
    cs_exec_t *x, *y, *tmp;

    if (cs_store_check(b, NULL, NULL, detail, sizeof(detail)) != 0)
        FAIL("the snapshot written in steps: %s", detail);
    if (HASH_COUNT(a->execs) != HASH_COUNT(b->execs) || a->gfirst != b->gfirst || a->gnext != b->gnext ||
        a->gepoch != b->gepoch || a->first_orders > b->first_orders || a->lru_ticks != b->lru_ticks ||
        a->bytes != b->bytes || a->pinned != b->pinned || a->open_bytes != b->open_bytes ||
        a->n_listed != b->n_listed || b->lists_unsorted)
        FAIL("the snapshot written in steps: the store differs (%u/%u executions, global [%llu,%llu) / "
             "[%llu,%llu), %zu/%zu bytes)",
             HASH_COUNT(a->execs), HASH_COUNT(b->execs), (unsigned long long)a->gfirst,
             (unsigned long long)a->gnext, (unsigned long long)b->gfirst, (unsigned long long)b->gnext,
             a->bytes, b->bytes);
    for (uint64_t q = a->gfirst; q < a->gnext; q++)
        same_frame(a->gring[q % a->gcap], b->gring[q % b->gcap], "global", q);
    for (int l = 0; l < 2; l++) {
        for (x = l ? a->finished : a->active, y = l ? b->finished : b->active; x != NULL && y != NULL;
             x = x->lru_next, y = y->lru_next)
            if (strcmp(x->id, y->id) != 0 || x->lru_tick != y->lru_tick)
                FAIL("the snapshot written in steps: %s list: %s where %s is", l ? "finished" : "active",
                     y->id, x->id);
        if (x != NULL || y != NULL)
            FAIL("the snapshot written in steps: a list's length differs");
    }
    HASH_ITER(hh, a->execs, x, tmp)
    {
        y = cs_store_find(b, x->id, x->id_len);
        /* An execution a snapshot does not keep (no history, or only subscribers) that is published to
         * after it is begun again by its replay, with a new epoch: in both replays, each its own. */
        const cs_exec_t *l = cs_store_find(g->st, x->id, x->id_len);
        int rebegun = l != NULL && l->epoch != x->epoch;
        if (y == NULL || (y->epoch != x->epoch && !rebegun) || y->first_seq != x->first_seq ||
            y->next_seq != x->next_seq || y->ring_cap != x->ring_cap || y->bytes != x->bytes ||
            y->state.status != x->state.status || y->state.in_flow != x->state.in_flow ||
            memcmp(&y->state.progress, &x->state.progress, sizeof(x->state.progress)) != 0 ||
            y->finished != x->finished || y->hitl.n != x->hitl.n || y->hitl.n_open != x->hitl.n_open ||
            y->hitl.bytes != x->hitl.bytes || (y->first_order != x->first_order && !rebegun) ||
            exec_where(b, y) != exec_where(a, x) || y->status_bytes != x->status_bytes ||
            y->result_bytes != x->result_bytes || y->pin_bytes != x->pin_bytes ||
            y->created_unix_ms != x->created_unix_ms || y->first_unix_ms != x->first_unix_ms ||
            y->last_unix_ms != x->last_unix_ms)
            FAIL(
                "the snapshot written in steps: %s differs (%p; epoch %llu/%llu seqs [%llu,%llu)/[%llu,%llu) "
                "cap %zu/%zu bytes %zu/%zu status %d/%d fin %d/%d reqs %zu/%zu where %d/%d sb %zu/%zu order "
                "%llu/%llu)",
                x->id, (void *)y, (unsigned long long)x->epoch, (unsigned long long)(y ? y->epoch : 0),
                (unsigned long long)x->first_seq, (unsigned long long)x->next_seq,
                (unsigned long long)(y ? y->first_seq : 0), (unsigned long long)(y ? y->next_seq : 0),
                x->ring_cap, y ? y->ring_cap : 0, x->bytes, y ? y->bytes : 0, (int)x->state.status,
                y ? (int)y->state.status : -1, x->finished, y ? y->finished : -1, x->hitl.n,
                y ? y->hitl.n : 0, exec_where(a, x), y ? exec_where(b, y) : -1, x->status_bytes,
                y ? y->status_bytes : 0, (unsigned long long)x->first_order,
                (unsigned long long)(y ? y->first_order : 0));
        for (uint64_t q = x->first_seq; q < x->next_seq; q++)
            same_frame(cs_exec_frame(x, q), cs_exec_frame(y, q), x->id, q);
        for (const cs_hitl_req_t *r = x->hitl.reqs; r != NULL; r = r->next) {
            const cs_hitl_req_t *q = cs_hitl_find(&y->hitl, r->event_id);
            if (q == NULL || q->answered != r->answered || q->seq != r->seq || q->bytes != r->bytes ||
                (r->push != NULL && (q->push == NULL || strcmp(q->push, r->push) != 0)))
                FAIL("the snapshot written in steps: request %s of %s differs", r->event_id, x->id);
        }
    }
}

static void inc_drop(prog_t *g)
{
    cs_store_free(g->inc);
    cs_store_free(g->ref);
    g->inc = g->ref = NULL;
}

/* Begins a snapshot written in steps, or takes its next step (a budget of a few bytes: an execution or a
 * frame per step); at its end the two replays must agree. */
static void op_snap_step(prog_t *g, size_t budget)
{
    cs_store_limits_t m;

    if (g->inc == NULL) {
        mirror_limits(g, &m);
        if (cs_store_new(&g->ref, &m) != 0 || cs_store_new(&g->inc, &m) != 0)
            abort();
        cs_store_set_now(g->ref, g->now);
        cs_store_set_now(g->inc, g->now);
        if (cs_store_snapshot(g->st, snap_into, g->ref) != 0 ||
            cs_store_snap_begin(g->st, inc_into, g->inc) != 0)
            FAIL("a snapshot does not begin");
        return;
    }
    int rc = cs_store_snap_step(g->st, budget);
    if (rc == 1)
        return;
    if (rc == 0)
        compare_inc(g);
    else if (rc != -ECANCELED)
        FAIL("a snapshot step failed: %d", rc);
    inc_drop(g); /* -ECANCELED: the limits changed */
}

static void check(prog_t *g)
{
    char detail[300];
    size_t ring_bytes, held_out;
    cs_store_stats_t s;

    if (cs_store_check(g->st, &ring_bytes, &held_out, detail, sizeof(detail)) != 0)
        FAIL("%s", detail);
    /* Frames held only in flight: exactly what this program holds outside the rings. */
    size_t out = 0;
    for (int i = 0; i < N_SUBS; i++) {
        cs_frame_t *f = g->subs[i].held;
        int first = 1;
        if (f == NULL)
            continue;
        for (int j = 0; j < i; j++)
            first &= g->subs[j].held != f;
        if (f->refcnt != f->in_exec + f->in_global + held_refs(g, f))
            FAIL("frame seq %llu: refcnt %u, held %u times", (unsigned long long)f->seq, f->refcnt,
                 f->in_exec + f->in_global + held_refs(g, f));
        if (first && !f->in_exec && !f->in_global)
            out += f->bytes;
    }
    if (out != held_out)
        FAIL("frames in flight: %zu bytes held, store counts %zu", out, held_out);
    for (int x = 0; x < N_EXECS; x++) {
        cs_exec_t *ex = cs_store_find(g->st, exec_ids[x], 1);
        for (uint64_t q = ex != NULL ? ex->first_seq : 0; ex != NULL && q < ex->next_seq; q++) {
            cs_frame_t *f = cs_exec_frame(ex, q);
            if (f->refcnt != 1u + f->in_global + held_refs(g, f))
                FAIL("%s seq %llu: refcnt %u", ex->id, (unsigned long long)q, f->refcnt);
        }
    }
    /* Subscribers: their execution alive, their cursor within what exists. */
    for (int i = 0; i < N_SUBS; i++) {
        fsub_t *fs = &g->subs[i];
        if (!fs->open)
            continue;
        cs_exec_t *ex = fs->sub.exec;
        if (ex != NULL && cs_store_find(g->st, ex->id, ex->id_len) != ex)
            FAIL("subscriber %d: its execution is gone", i);
        uint64_t nx = ex != NULL ? ex->next_seq : g->st->gnext;
        if (fs->sub.next > nx)
            FAIL("subscriber %d: cursor %llu beyond %llu", i, (unsigned long long)fs->sub.next,
                 (unsigned long long)nx);
    }
    /* No open request lost. */
    for (int i = 0; i < N_MODEL; i++) {
        freq_t *m = &g->model[i];
        if (!m->used || m->answered)
            continue;
        cs_hitl_req_t *r = cs_store_find_request(g->st, exec_ids[m->exec], 1, m->eid, detail, sizeof(detail));
        if (r == NULL)
            FAIL("open request %s of %s lost", m->eid, exec_ids[m->exec]);
        if (r->answered)
            m->answered = 1; /* by a producer's completion */
    }
    for (int i = 0; i < N_AWAITS; i++) {
        fawait_t *a = &g->aws[i];
        if (!a->used || a->pushed)
            continue;
        cs_hitl_req_t *r = cs_store_find_request(g->st, exec_ids[a->exec], 1, a->eid, detail, sizeof(detail));
        if (a->aw.req == NULL || r != a->aw.req || r->answered)
            FAIL("awaited request %s of %s lost without its answer", a->eid, exec_ids[a->exec]);
    }
    cs_store_stats(g->st, &s);
    if (s.pinned_bytes > s.bytes || s.open_request_bytes > s.pinned_bytes)
        FAIL("pinned %zu, open requests %zu, bytes %zu", s.pinned_bytes, s.open_request_bytes, s.bytes);
}

/* After a publish: stored and kept within the budget, or refused with nothing stored. */
static void after_publish(prog_t *g, int x, cs_err_t e, const cs_publish_t *pub, uint64_t next_before,
                          int existed)
{
    cs_exec_t *ex = cs_store_find(g->st, exec_ids[x], 1);
    cs_store_stats_t s;

    cs_store_stats(g->st, &s);
    if (e == CS_OK) {
        if (pub->exec != ex || ex == NULL)
            FAIL("publish to %s: out->exec is not the execution", exec_ids[x]);
        if (!pub->duplicate && (pub->seq != next_before || cs_exec_frame(ex, pub->seq) != pub->frame ||
                                pub->frame == NULL || !pub->frame->in_exec))
            FAIL("publish to %s: seq %llu acknowledged, not held", exec_ids[x], (unsigned long long)pub->seq);
        if (!pub->duplicate && s.bytes > s.max_bytes)
            FAIL("publish: %zu bytes, over store.max_bytes %zu", s.bytes, s.max_bytes);
    } else if (e == CS_ERR_TOO_LARGE || e == CS_ERR_UNAVAILABLE) {
        if (existed ? ex == NULL || ex->next_seq != next_before : ex != NULL && ex->next_seq != 1)
            FAIL("refused publish to %s stored something", exec_ids[x]);
    } else if (e != CS_ERR_CONFLICT && e != CS_ERR_NOT_FOUND) {
        FAIL("publish: unexpected error %d", (int)e);
    }
}

/* ---- operations ---- */

static const char *const types[] = {"log",           "task_started", "run.started",
                                    "run.completed", "run.failed",   "flow_started",
                                    "flow_finished", "tool.called",  "crew_kickoff_completed"};

static void op_publish(prog_t *g, int kind)
{
    unsigned b = next(g);
    int x = (int)(b % N_EXECS);
    size_t n = (size_t)next(g) * 8;
    char eid[16], task[8];
    json_t *ev;
    cs_publish_t pub;
    char detail[300];

    if (kind == 0) { /* an event of some type, with or without an id (idempotent re-posts) */
        ev = json_pack("{s:s, s:s}", "execution_id", exec_ids[x], "type", types[(b >> 2) % 9]);
        if (b & 0x40) {
            snprintf(eid, sizeof(eid), "e%u", next(g) % ID_POOL);
            json_object_set_new(ev, "event_id", json_string(eid));
        }
        char *p = pad(n, 'x');
        json_object_set_new(ev, (b & 0x80) ? "result" : "error", json_string(p));
        free(p);
    } else if (kind == 1) { /* a request */
        ev = json_pack("{s:s, s:s}", "execution_id", exec_ids[x], "type", "human_input_required");
        if (b & 0x04) {
            snprintf(eid, sizeof(eid), "q%u", next(g) % ID_POOL);
            json_object_set_new(ev, "event_id", json_string(eid));
        }
        if (b & 0x08) {
            snprintf(task, sizeof(task), "t%u", (b >> 4) % 3);
            json_object_set_new(ev, "task_id", json_string(task));
        }
        char *p = pad(n, 'p');
        json_object_set_new(ev, "prompt", json_string(p));
        free(p);
    } else { /* a completion posted by a producer */
        ev = json_pack("{s:s, s:s, s:b}", "execution_id", exec_ids[x], "type", "human_input_completed",
                       "is_approve", (int)(b & 4));
        if (b & 0x08) {
            snprintf(eid, sizeof(eid), "q%u", next(g) % ID_POOL);
            json_object_set_new(ev, "request_event_id", json_string(eid));
        } else if (b & 0x10) {
            snprintf(task, sizeof(task), "t%u", (b >> 5) % 3);
            json_object_set_new(ev, "task_id", json_string(task));
        }
        char *p = pad(n, 'f');
        json_object_set_new(ev, "human_feedback", json_string(p));
        free(p);
    }
    cs_exec_t *ex = cs_store_find(g->st, exec_ids[x], 1);
    uint64_t before = ex != NULL ? ex->next_seq : 1;
    cs_err_t e = cs_store_publish(g->st, ev, 1768473002123LL, &pub, detail, sizeof(detail));
    json_decref(ev);
    after_publish(g, x, e, &pub, before, ex != NULL);
    if (e == CS_OK && kind == 1)
        model_add(g, x, pub.event_id);
}

/* The ingest fast path: an ordinary event kept as its line came. */
static void op_publish_fields(prog_t *g)
{
    int x = (int)(next(g) % N_EXECS);
    size_t n = (size_t)next(g) * 8;
    char *p = pad(n, 'y'), *line = malloc(n + 64);
    cs_event_fields_t fl = {0};
    cs_publish_t pub;
    char detail[300];

    int len =
        snprintf(line, n + 64, "{\"execution_id\":\"%s\",\"type\":\"note\",\"t\":\"%s\"}", exec_ids[x], p);
    fl.execution_id = line + 17;
    fl.execution_id_len = 1;
    fl.type = line + 28;
    fl.type_len = 4;
    cs_exec_t *ex = cs_store_find(g->st, exec_ids[x], 1);
    uint64_t before = ex != NULL ? ex->next_seq : 1;
    memset(&pub, 0, sizeof(pub));
    cs_err_t e =
        cs_store_publish_fields(g->st, &fl, line, (size_t)len, 1768473002123LL, &pub, detail, sizeof(detail));
    after_publish(g, x, e, &pub, before, ex != NULL);
    free(p);
    free(line);
}

static void op_answer(prog_t *g)
{
    unsigned b = next(g);
    int x = (int)(b % N_EXECS);
    char eid[16], task[8], detail[300];
    cs_publish_t pub;
    char *p = pad((size_t)next(g) * 8, 'h');
    json_t *fb = json_string(p), *ok = (b & 4) ? json_true() : json_false();
    cs_answer_t a = {.human_feedback = fb, .is_approve = ok};

    free(p);
    if (b & 8) {
        snprintf(eid, sizeof(eid), "q%u", next(g) % ID_POOL);
        a.event_id = eid;
    } else if (b & 16) {
        snprintf(task, sizeof(task), "t%u", (b >> 5) % 3);
        a.task_id = task;
    }
    cs_exec_t *ex = cs_store_find(g->st, exec_ids[x], 1);
    uint64_t before = ex != NULL ? ex->next_seq : 1;
    memset(&pub, 0, sizeof(pub));
    cs_err_t e = cs_store_answer(g->st, exec_ids[x], 1, &a, 0, &pub, detail, sizeof(detail));
    after_publish(g, x, e, &pub, before, ex != NULL);
    if (e == CS_OK) {
        for (int i = 0; i < N_MODEL; i++)
            if (g->model[i].used && g->model[i].exec == x &&
                strcmp(g->model[i].eid, pub.request_event_id) == 0)
                g->model[i].answered = 1;
        cs_hitl_req_t *r = cs_hitl_find(&pub.exec->hitl, pub.request_event_id);
        if (r == NULL || !r->answered)
            FAIL("answered %s, not recorded", pub.request_event_id);
    }
    json_decref(fb);
    json_decref(ok);
}

static void op_await(prog_t *g)
{
    unsigned b = next(g);
    fawait_t *a = &g->aws[b % N_AWAITS];
    char detail[300];

    if (a->used && !a->pushed) { /* the runtime goes away */
        cs_hitl_unawait(&a->aw);
        memset(a, 0, sizeof(*a));
        return;
    }
    memset(a, 0, sizeof(*a));
    a->exec = (int)((b >> 3) % N_EXECS);
    /* One of the pool's ids, or a request the model knows (ids the daemon drew). */
    unsigned k = next(g);
    if ((k & 1) && g->model[(k >> 1) % N_MODEL].used) {
        freq_t *m = &g->model[(k >> 1) % N_MODEL];
        a->exec = m->exec;
        memcpy(a->eid, m->eid, sizeof(a->eid));
    } else {
        snprintf(a->eid, sizeof(a->eid), "q%u", (k >> 1) % ID_POOL);
    }
    cs_hitl_req_t *r = cs_store_find_request(g->st, exec_ids[a->exec], 1, a->eid, detail, sizeof(detail));
    if (r == NULL)
        return;
    a->used = 1;
    a->aw.push = on_push;
    a->aw.owner = a;
    cs_hitl_await(r, &a->aw); /* pushes at once when answered */
}

static void sub_release(prog_t *g, fsub_t *fs)
{
    cs_frame_unref(g->st, fs->held);
    fs->held = NULL;
}

static void op_sub(prog_t *g)
{
    unsigned b = next(g);
    fsub_t *fs = &g->subs[b % N_SUBS];
    cs_item_t it;

    switch ((b >> 2) % 6) {
    case 0: /* subscribe (or unsubscribe an open one) */
    case 1:
        if (fs->open) {
            sub_release(g, fs);
            cs_sub_close(&fs->sub);
            fs->open = 0;
        } else {
            static const cs_start_kind_t kinds[] = {CS_START_HISTORY, CS_START_NOW, CS_START_AFTER_SEQ,
                                                    CS_START_AFTER_ID};
            char id[16];
            unsigned k = next(g);
            cs_start_t start = {.kind = kinds[k % 4], .seq = k >> 2};
            snprintf(id, sizeof(id), "e%u", (k >> 2) % ID_POOL);
            start.id = id;
            start.id_len = strlen(id);
            int global = (b >> 5) == 7;
            if (cs_sub_open(g->st, &fs->sub, global ? NULL : exec_ids[(b >> 5) % N_EXECS], 1, &start, NULL,
                            &ops, NULL) != 0)
                abort();
            fs->open = 1;
        }
        break;
    case 2: /* read some, holding the last frame in flight */
    case 3:
        if (!fs->open)
            break;
        for (unsigned n = (b >> 5) + 1; n > 0; n--) {
            if (!cs_sub_next(&fs->sub, &it))
                break;
            if (it.frame != NULL) {
                if (it.frame->refcnt == 0 || it.frame->json[it.frame->json_len] != '\0')
                    FAIL("handed out a dead frame");
                sub_release(g, fs);
                fs->held = cs_frame_ref(it.frame);
            } else if (it.gap == NULL || strstr(it.gap, "stream.gap") == NULL) {
                FAIL("an item that is neither frame nor gap");
            }
        }
        break;
    case 4: /* the transport finished writing */
        sub_release(g, fs);
        break;
    default: /* caught up: park, or leave the wait list */
        if (!fs->open)
            break;
        if (b & 0x20)
            cs_sub_unpark(&fs->sub);
        else if (!cs_sub_has_next(&fs->sub))
            cs_sub_park(&fs->sub);
        break;
    }
}

static void op_expire(prog_t *g)
{
    g->now += (int64_t)next(g) * 100;
    cs_store_expire(g->st, g->now);
}

static void op_limits(prog_t *g)
{
    unsigned a = next(g), b = next(g);
    g->lim.max_bytes = 1024 + (size_t)a * 64;
    g->lim.ring_events = 1 + (b & 7);
    g->lim.ring_bytes = 1024 + (size_t)(b >> 3) * 512;
    g->lim.retain_s = b & 3;
    cs_store_limits_t m;
    mirror_limits(g, &m);
    cs_store_set_limits(g->mirror, &m); /* first: the store's records of this reload then find it done */
    cs_store_set_limits(g->st, &g->lim);
    if (g->inc != NULL) {
        /* A snapshot in progress is given up (rings re-seated here leave no record). */
        if (cs_store_snap_step(g->st, 64) != -ECANCELED || cs_store_snap_active(g->st))
            FAIL("a snapshot in progress survived new limits");
        inc_drop(g);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static prog_t g;

    memset(&g, 0, sizeof(g));
    g.p = data;
    g.end = data + size;
    g.lim.max_bytes = 1024 + (size_t)next(&g) * 64; /* 1 KiB to 17 KiB */
    g.lim.ring_events = 1 + (next(&g) & 7);
    g.lim.ring_bytes = 1024 + (size_t)next(&g) * 64;
    g.lim.retain_s = next(&g) & 3;
    g.lim.global_events = 1 + (next(&g) & 15);
    g.now = 1000;
    if (cs_store_new(&g.st, &g.lim) != 0)
        return 0;
    cs_store_limits_t m;
    mirror_limits(&g, &m);
    if (cs_store_new(&g.mirror, &m) != 0) {
        cs_store_free(g.st);
        return 0;
    }
    cs_store_set_observer(g.st, &(cs_store_observer_t){mirror_change, &g});
    cs_store_set_now(g.st, g.now);

    for (int steps = 0; g.p < g.end && steps < 200; steps++) {
        switch (next(&g) % 12) {
        case 0:
        case 1:
            op_publish(&g, 0);
            break;
        case 2:
            op_publish(&g, 1);
            break;
        case 3:
            op_answer(&g);
            break;
        case 4:
            op_publish(&g, 2);
            break;
        case 5:
            op_await(&g);
            break;
        case 6:
        case 7:
            op_sub(&g);
            break;
        case 8:
            op_expire(&g);
            break;
        case 9:
            op_limits(&g);
            break;
        case 10:
            op_publish_fields(&g);
            break;
        case 11: {
            unsigned k = next(&g);
            if (k % 4 == 0) {
                op_snapshot(&g);
                break;
            }
            if (k % 4 == 1 || g.inc != NULL) {
                op_snap_step(&g, k / 4);
                break;
            }
            op_sub(&g);
            break;
        }
        default:
            op_sub(&g);
            break;
        }
        check(&g);
        check_mirror(&g);
    }

    /* A snapshot in progress goes to its end. */
    while (g.inc != NULL)
        op_snap_step(&g, 64);
    for (int i = 0; i < N_AWAITS; i++)
        if (g.aws[i].used && !g.aws[i].pushed) {
            cs_hitl_unawait(&g.aws[i].aw);
            g.aws[i].used = 0;
        }
    for (int i = 0; i < N_SUBS; i++) {
        sub_release(&g, &g.subs[i]);
        if (g.subs[i].open)
            cs_sub_close(&g.subs[i].sub);
    }
    check(&g);
    check_mirror(&g);
    cs_store_free(g.st);
    cs_store_free(g.mirror);
    return 0;
}
