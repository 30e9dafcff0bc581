/*
 * store.c - see store.h.
 *
 * Memory: every frame's bytes, every execution's overhead, its status (result,
 * error) and its human-input requests (the copy of each request event) are
 * counted in store->bytes, which a publish never leaves above store.max_bytes.
 * Room is made before an event is stored (make_room, for what the event will
 * cost: its frame, its request or answer, what its status keeps); eviction
 * drops, in this order: frames only the global ring still holds, whole
 * histories of finished executions (oldest finished first), finished executions
 * nobody watches (status and requests with them), the oldest event of the least
 * recently published execution, empty executions nobody watches, and at last
 * the global ring's references. It never frees the execution being published
 * to, nor one an open human-input request pins (hitl.h): a runtime may be
 * waiting for that answer. When nothing more can go, the publish is refused and
 * nothing is stored. A ring grows by doubling up to store.ring_events, so an
 * execution with few events costs little.
 */
#include "store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <utlist.h>
#include <xxhash.h>

#include "log.h"

#define RING_INITIAL 8

struct cs_store {
    cs_store_limits_t lim;
    cs_exec_t *execs;    /* hash by id */
    cs_exec_t *active;   /* DL list, least recently published first */
    cs_exec_t *finished; /* DL list, earliest finished first */
    cs_frame_t **gring;  /* global ring: gring[gseq % gcap] */
    size_t gcap;
    uint64_t gfirst, gnext; /* retained global seqs: [gfirst, gnext) */
    uint64_t gepoch;
    cs_sub_t *gwaiters;
    size_t bytes;
    size_t frame_bytes; /* of every live frame, in a ring or only in flight to a subscriber */
    size_t frames_live;
    size_t pinned;     /* sum of the executions' pin_bytes */
    size_t open_bytes; /* sum of the executions' hitl.open_bytes */
    size_t open_reqs;
    cs_exec_t *publishing; /* the execution a publish is storing into: never evicted meanwhile */
    uint64_t refused_full, refused_too_large;
    size_t subscribers;
    int64_t now_mono;
    uint64_t published, duplicates, evicted, expired, gaps;
    uint64_t first_orders;
    /* The seam (store.h): the observer every change goes through, and the seq step. */
    cs_store_observer_t obs;
    cs_store_sequencer_t seqr;
    cs_store_remote_t remote; /* cluster mode: publishes go there; events come back by cs_store_insert */
    int inserting;            /* a publish of cs_store_insert: Redis' seq, no remote, no gate */
    uint64_t insert_seq;
    const char *answering;   /* cs_store_submit_answer: the request its completion answers */
    uint64_t tickets;        /* the last publish's ticket */
    int deferred;            /* the observer will confirm the publish in progress later */
    int replaying;           /* a publish of cs_store_replay: the record's seq and JSON, no room made */
    uint64_t replay_seq;     /* ... and that seq */
    cs_exec_t *replay_ex;    /* ... and its execution (found by cs_store_replay: not looked up twice) */
    int tearing_down;        /* cs_store_free: nothing to record */
    int deriving;            /* inside a publish's own consequences: records are marked derived */
    struct pending *pending; /* publishes whose completion waits for cs_store_confirm, oldest first */
    size_t n_pending;
    size_t n_with_done;    /* pending entries whose completion waits (the stats' pending) */
    size_t n_waiting_dups; /* pending entries that wait for another's ticket */
    struct pending *pool;  /* confirmed entries kept for the next publishes (one allocation less each) */
    size_t n_pool;
    uint64_t dup_wait; /* publish_event found a retry of this unconfirmed ticket */
    /* Holding (store.h): the publish in progress may be held (its caller can hold its acknowledgement);
     * the observer held it at hold; a retry of an unreleased held event came from a caller that cannot
     * hold; the observer's position released; the hook told of it. */
    int can_hold;
    uint64_t hold;
    int dup_unreleased;
    uint64_t released;
    void (*release_fn)(void *data, uint64_t position);
    void *release_data;
    cs_err_t gate; /* not CS_OK: every publish is refused with it (cs_store_set_refusal) */
    char gate_detail[256];
    uint64_t refused_gate;
    int64_t replay_unix_now; /* a replay's wall clock, for the age of what it finishes */
    uint64_t snap_gnext;     /* a snapshot being replayed: the global ring's next gseq at its end */
    uint64_t snap_gfirst;    /* ... and its first, as SNAP_BEGIN said */
    int snapping;            /* between its SNAP_BEGIN and SNAP_END */
    /* List order: every append to the active or the finished list gives the execution the next tick, so
     * each list is in tick order; a snapshot records the ticks, and its replay sorts by them at its end. */
    uint64_t lru_ticks;
    size_t n_listed;         /* executions on either list (the others: HASH_COUNT - n_listed) */
    int lists_unsorted;      /* a snapshot being replayed listed executions out of tick order */
    struct snapw *sw;        /* the snapshot being written across loop turns (cs_store_snap_begin), or NULL */
    cs_store_history_t hist; /* told of every subscriber opened on an execution (cluster: older history) */
    cs_exec_t *replay_last;  /* cs_store_replay: the execution of the last record (records come in runs) */
    struct exec_slot *etab;  /* executions by id: open addressing (cs_store_find), beside the uthash list */
    size_t etab_cap, etab_n;
};

/* A publish the observer confirms later, and the completion waiting for it (done.fn NULL: none, or
 * called already with an error: the publish is still not confirmed, and a retry of it must wait). A
 * producer's retry of it waits too, in an entry of its own (waits_for: the ticket it waits for). */
typedef struct pending {
    uint64_t ticket;
    uint64_t waits_for;
    cs_store_done_t done;
    cs_publish_t pub;
    cs_frame_t *frame; /* the publish's frame (a reference), for a retry to find; NULL for a waiter */
    struct pending *prev, *next;
} pending_t;

static uint64_t pending_ticket_of(const cs_store_t *st, const cs_frame_t *f);

/* At most this many confirmed entries are kept for reuse: a journal's window of acknowledgements in
 * flight, so a publish under a journal allocates nothing for its completion once that window is warm. */
#define PENDING_POOL_MAX 1024

/* A zeroed entry, from the pool when it has one. */
static struct pending *pending_get(cs_store_t *st);
/* Gives an unlinked entry back (to the pool, or to free when the pool is full); NULL: nothing. */
static void pending_put(cs_store_t *st, struct pending *pe);

/* ---- the seam: one place for every change ---- */

static int emit(cs_store_t *st, const cs_change_t *c)
{
    if (st->obs.change == NULL || st->tearing_down)
        return 0;
    if (st->deriving) {
        if (st->obs.skip_derived)
            return 0;
        cs_change_t d = *c;
        d.derived = 1;
        return st->obs.change(st->obs.data, &d);
    }
    return st->obs.change(st->obs.data, c);
}

/* A record naming an execution (and a seq), for the kinds that say no more. */
static void emit_exec(cs_store_t *st, cs_change_kind_t kind, const char *id, size_t id_len, uint64_t seq)
{
    cs_change_t c = {.kind = kind, .exec = id, .exec_len = id_len, .seq = seq};

    (void)emit(st, &c);
}

/* An execution: its ring, event-id index, status and human-input requests. Other modules see it only
 * through the functions of store.h (cs_exec_id, cs_exec_status, cs_exec_status_json, ...). */
struct cs_exec {
    char *id;
    size_t id_len;
    UT_hash_handle hh;
    uint64_t epoch;
    cs_frame_t **ring; /* ring[seq % ring_cap] */
    size_t ring_cap;
    uint64_t first_seq;  /* oldest retained; == next_seq when empty */
    uint64_t next_seq;   /* what the next event gets; starts at 1 */
    size_t bytes;        /* frames in this ring */
    struct id_slot *idx; /* event_id index of retained frames (see "the event-id index") */
    size_t idx_cap;      /* its slots: a power of two, at least twice ring_cap */
    cs_sub_t *waiters;   /* parked subscribers (utlist DL) */
    size_t n_subs;       /* every subscriber pointing here, parked or not */
    cs_status_t state;   /* status.c's: status, progress, result, error */
    int finished;
    cs_hitl_t hitl;      /* human-input requests, kept beside the ring */
    size_t result_bytes; /* what state's result is counted as: twice the text of the event it came with */
    size_t status_bytes; /* result_bytes and error_message's, counted against store.max_bytes */
    size_t pin_bytes;    /* what this execution holds in the store while pinned (st->pinned's share) */
    int64_t created_unix_ms, first_unix_ms, last_unix_ms;
    uint64_t first_order; /* order of first events across executions: "newest first" without ties */
    uint64_t last_hold;   /* the position its newest held publish was held at (store.h: holding) */
    int64_t finished_mono_ms;
    cs_exec_t *lru_prev, *lru_next; /* active list, or finished list once finished */
    uint64_t lru_tick;              /* when it was appended to its list (cs_store.lru_ticks) */
    uint64_t snap_gen;              /* the snapshot in progress wrote it (or it was begun since) */
    uint64_t id_hash;               /* XXH3 of id: its slot in the store's execution table */
};

/* Where an execution sits: on the active list, the finished list, or (expired, still watched) none. */
enum { ON_NONE = 0, ON_ACTIVE, ON_FINISHED };

/* What ex's status holds: its result as counted when it came, its error text. */
static size_t status_held(const cs_exec_t *ex)
{
    const char *err = cs_status_error(&ex->state);

    return (cs_status_result(&ex->state) != NULL ? ex->result_bytes : 0) +
           (err != NULL ? strlen(err) + 1 : 0);
}

/*
 * The event-id index of an execution's retained frames: open addressing with linear probing over
 * idx_cap slots, at least twice the ring's capacity, so never more than half full. A slot holds an id's
 * hash (XXH3) and the first retained frame with that id; later frames with the same id are chained to it
 * (id_next). A lookup compares hashes inside the slot array and reads a frame only when the hash matches:
 * an id that is not there costs a cache line or two. (uthash's bucket chains, up to ten frames long and
 * each frame elsewhere on the heap, took a third of a replay's time and as much of a publish's lookup.)
 */
typedef struct id_slot {
    uint64_t hash;
    cs_frame_t *f; /* NULL: empty */
} id_slot_t;

static size_t idx_cap_for(size_t ring_cap)
{
    size_t cap = 16;
    while (cap < 2 * ring_cap)
        cap <<= 1;
    return cap;
}

static uint64_t id_hash(const char *id, size_t len)
{
    return XXH3_64bits(id, len);
}

/* The slot holding id (hash h), or the empty slot where it would go. */
static id_slot_t *idx_slot(const cs_exec_t *ex, const char *id, size_t len, uint64_t h)
{
    size_t mask = ex->idx_cap - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        id_slot_t *sl = &ex->idx[i];
        if (sl->f == NULL ||
            (sl->hash == h && sl->f->event_id_len == len && memcmp(sl->f->event_id, id, len) == 0))
            return sl;
    }
}

/* Empties slot sl, moving back the entries after it that probing would no longer reach (no tombstones). */
static void idx_delete(cs_exec_t *ex, id_slot_t *sl)
{
    size_t mask = ex->idx_cap - 1, i = (size_t)(sl - ex->idx), j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (ex->idx[j].f == NULL)
            break;
        size_t home = (size_t)ex->idx[j].hash & mask;
        /* It stays when its home lies cyclically in (i, j]: probing from there never passes i. */
        if (i <= j ? (i < home && home <= j) : (i < home || home <= j))
            continue;
        ex->idx[i] = ex->idx[j];
        i = j;
    }
    ex->idx[i].f = NULL;
}

/* A new empty index for a ring of ring_cap (NULL: out of memory). */
static id_slot_t *idx_new(size_t ring_cap, size_t *cap)
{
    *cap = idx_cap_for(ring_cap);
    return calloc(*cap, sizeof(id_slot_t));
}

/* Moves ex's index into idx (cap slots, empty; the ring is being resized). */
static void idx_move(cs_exec_t *ex, id_slot_t *idx, size_t cap)
{
    for (size_t i = 0; i < ex->idx_cap; i++) {
        if (ex->idx[i].f == NULL)
            continue;
        size_t j = (size_t)ex->idx[i].hash & (cap - 1);
        while (idx[j].f != NULL)
            j = (j + 1) & (cap - 1);
        idx[j] = ex->idx[i];
    }
    free(ex->idx);
    ex->idx = idx;
    ex->idx_cap = cap;
}

static size_t exec_overhead(const cs_exec_t *ex)
{
    return sizeof(*ex) + ex->id_len + 1 + ex->ring_cap * sizeof(cs_frame_t *) +
           ex->idx_cap * sizeof(id_slot_t);
}

/* An open human-input request pins its execution: a runtime may be waiting for the answer. */
static int exec_pinned(const cs_exec_t *ex)
{
    return ex->hitl.n_open > 0;
}

/* What a pinned execution holds that eviction cannot take (its frames it can). */
static size_t pin_share(const cs_exec_t *ex, size_t hitl_bytes, size_t overhead)
{
    return hitl_bytes + overhead + ex->status_bytes;
}

/* Brings st->pinned up to date with ex, after its requests, ring or status changed. */
static void exec_pin_update(cs_store_t *st, cs_exec_t *ex)
{
    size_t b = exec_pinned(ex) ? pin_share(ex, ex->hitl.bytes, exec_overhead(ex)) : 0;

    st->pinned = st->pinned - ex->pin_bytes + b;
    ex->pin_bytes = b;
}

static int exec_where(const cs_store_t *st, const cs_exec_t *ex)
{
    (void)st;
    if (ex->lru_prev == NULL)
        return ON_NONE;
    return ex->finished ? ON_FINISHED : ON_ACTIVE;
}

/*
 * A snapshot written across loop turns (cs_store_snap_begin/step). Its records, in order: SNAP_BEGIN; the
 * executions of the active list, then of the finished list (each list walked from its head up to the first
 * execution listed since the begin), then the listed on neither (hash order), each as EXEC_STATE and its
 * ring's frames; the frames of the global ring no execution's record carried; SNAP_END. Meanwhile the
 * store goes on changing and its live records go to the same journal: before a change touches an execution
 * this snapshot has not written, snapw_touch writes it first, as the change will leave it (copy-on-write),
 * so every execution appears as "its state, then its later live records". An execution begun meanwhile
 * has its EXEC_NEW. The global ring needs no copy: a frame it lets go before the snapshot reaches it is
 * simply not written, and a replay of SNAP_BEGIN holds the ring's slots [gfirst, gnext) empty until their
 * frames come (live publishes append after them, as here). List order: ticks (see cs_store.lru_ticks).
 */
enum { SW_ACTIVE = 0, SW_FINISHED, SW_UNLISTED, SW_GLOBAL, SW_END };

struct snapw {
    int (*fn)(void *data, const cs_change_t *c);
    void *data;
    uint64_t gen;                  /* executions written (or begun) during this snapshot carry it */
    uint64_t tick0;                /* executions listed with a tick from here on were listed since */
    int phase;                     /* SW_* */
    cs_exec_t *cur;                /* the next execution to look at (list order, or hash order) */
    uint64_t g;                    /* SW_GLOBAL: the next global seq */
    uint64_t epoch, gfirst, gnext; /* the global ring at the begin (SNAP_BEGIN's) */
    uint8_t *gbits;                /* frames of [gfirst, gnext) an execution's records carried */
    size_t emitted;                /* bytes of records emitted (roughly), for the step's budget */
    int err;                       /* fn failed during a change, or the limits changed: given up */
};

static uint64_t snap_gens; /* the generations handed out (process-wide: unique across stores) */

static void exec_unlist(cs_store_t *st, cs_exec_t *ex)
{
    struct snapw *sw = st->sw;

    if (exec_where(st, ex) != ON_NONE) {
        /* The snapshot's cursor walks the list: it goes on from the next one. */
        if (sw != NULL && sw->cur == ex && sw->phase <= SW_FINISHED)
            sw->cur = ex->lru_next;
        if (ex->finished)
            DL_DELETE2(st->finished, ex, lru_prev, lru_next);
        else
            DL_DELETE2(st->active, ex, lru_prev, lru_next);
        st->n_listed--;
    }
    ex->lru_prev = ex->lru_next = NULL;
}

/* Appends ex to its list (where: ON_ACTIVE or ON_FINISHED) with the next tick, or with tick when nonzero
 * (a replayed snapshot's: its list is sorted at the snapshot's end when that broke the order). */
static void list_append(cs_store_t *st, cs_exec_t *ex, int where, uint64_t tick)
{
    cs_exec_t **list = where == ON_FINISHED ? &st->finished : &st->active;

    if (tick == 0) {
        tick = ++st->lru_ticks;
    } else {
        if (*list != NULL && (*list)->lru_prev->lru_tick > tick)
            st->lists_unsorted = 1;
        if (tick > st->lru_ticks)
            st->lru_ticks = tick;
    }
    ex->lru_tick = tick;
    DL_APPEND2(*list, ex, lru_prev, lru_next);
    st->n_listed++;
}

/* ---- frames ---- */

void cs_frame_unref(cs_store_t *store, cs_frame_t *f)
{
    if (f == NULL)
        return;
    if (f->refcnt == 0)
        abort(); /* a double unref would be a use-after-free a moment later */
    if (--f->refcnt != 0)
        return;
    store->bytes -= f->bytes;
    store->frame_bytes -= f->bytes;
    store->frames_live--;
    free(f);
}

/* Writes "event: T\nid: C\ndata: " at p; returns its length. */
static size_t sse_head(char *p, const char *type, size_t type_len, const char *cur, size_t cur_len)
{
    char *q = p;

    memcpy(q, "event: ", 7), q += 7;
    memcpy(q, type, type_len), q += type_len;
    memcpy(q, "\nid: ", 5), q += 5;
    memcpy(q, cur, cur_len), q += cur_len;
    memcpy(q, "\ndata: ", 7), q += 7;
    *q = '\0';
    return (size_t)(q - p);
}

/* A frame holding the event's JSON, body followed by tail (the fields the daemon added, or ""). */
static cs_frame_t *frame_new(cs_store_t *st, uint64_t epoch, const char *body, size_t body_len,
                             const char *tail, size_t tail_len, const char *type, size_t type_len,
                             const char *eid, size_t eid_len, uint64_t seq, uint64_t gseq)
{
    char cur[CS_CURSOR_MAX], gcur[CS_CURSOR_MAX];
    size_t cur_len = cs_cursor_format(cur, sizeof(cur), epoch, seq);
    size_t gcur_len = cs_cursor_format(gcur, sizeof(gcur), st->gepoch, gseq);
    size_t json_len = body_len + tail_len;
    /* "event: " T "\nid: " C "\ndata: " */
    size_t named = 7 + type_len + 1;
    size_t head_len = named + 4 + cur_len + 1 + 6;
    size_t ghead_len = named + 4 + gcur_len + 1 + 6;
    size_t total = sizeof(cs_frame_t) + CS_FRAME_PRE + json_len + 1 + head_len + 1 + ghead_len + 1 +
                   type_len + 1 + eid_len + 1;
    cs_frame_t *f = malloc(total);
    char *p;

    if (f == NULL)
        return NULL;
    memset(f, 0, sizeof(*f));
    f->refcnt = 1;
    f->seq = seq;
    f->gseq = gseq;
    f->bytes = total;
    p = (char *)(f + 1);
    f->json = p + CS_FRAME_PRE;
    memcpy(f->json, body, body_len);
    memcpy(f->json + body_len, tail, tail_len);
    f->json[json_len] = '\0';
    f->json_len = json_len;
    p = f->json + json_len + 1;

    f->sse_head = p;
    p += sse_head(p, type, type_len, cur, cur_len) + 1;
    f->sse_head_len = head_len;
    f->gsse_head = p;
    p += sse_head(p, type, type_len, gcur, gcur_len) + 1;
    f->gsse_head_len = ghead_len;
    f->sse_named_skip = named;

    memcpy(p, type, type_len);
    p[type_len] = '\0';
    f->type = p;
    f->type_len = type_len;
    p += type_len + 1;
    memcpy(p, eid, eid_len);
    p[eid_len] = '\0';
    f->event_id = p;
    f->event_id_len = eid_len;
    f->id_hash = id_hash(eid, eid_len);

    st->bytes += total;
    st->frame_bytes += total;
    st->frames_live++;
    return f;
}

/*
 * When raw is one JSON object on one line (no CR or LF, which would split an SSE data line), sets
 * [*body, *body + *len) to it without white space around it and without its closing brace, where
 * the daemon's fields go. Re-serialising with json_dumps cost a quarter of the ingest path.
 */
static int raw_line(const char *raw, size_t raw_len, const char **body, size_t *len)
{
    if (raw == NULL)
        return 0;
    while (raw_len > 0 && (raw[raw_len - 1] == ' ' || raw[raw_len - 1] == '\t'))
        raw_len--;
    while (raw_len > 0 && (raw[0] == ' ' || raw[0] == '\t'))
        raw++, raw_len--;
    if (raw_len < 2 || raw[0] != '{' || raw[raw_len - 1] != '}' || memchr(raw, '\n', raw_len) != NULL ||
        memchr(raw, '\r', raw_len) != NULL)
        return 0;
    *body = raw;
    *len = raw_len - 1;
    return 1;
}

/*
 * When the producer's line, parsed into ev, can be kept as it came: raw_line, and no seq, and
 * event_id and timestamp absent or strings (the daemon leaves those alone and adds what is absent).
 */
static int raw_keepable(const json_t *ev, const char *raw, size_t raw_len, const char **body, size_t *len)
{
    const json_t *v;

    if (raw == NULL || json_object_get(ev, "seq") != NULL)
        return 0;
    if ((v = json_object_get(ev, "event_id")) != NULL && !json_is_string(v))
        return 0;
    if ((v = json_object_get(ev, "timestamp")) != NULL && !json_is_string(v))
        return 0;
    return raw_line(raw, raw_len, body, len);
}

/* ---- executions ---- */

/* Whether anything was posted to ex (events, or requests that outlived them). */
static int exec_has_history(const cs_exec_t *ex)
{
    return ex->next_seq > 1 || ex->hitl.n > 0;
}

void cs_store_each(cs_store_t *store, void (*fn)(cs_exec_t *ex, void *data), void *data)
{
    cs_exec_t *ex, *tmp;
    HASH_ITER(hh, store->execs, ex, tmp)
    {
        if (exec_has_history(ex))
            fn(ex, data);
    }
}

/*
 * The execution table: open addressing with linear probing, at most half full, a slot holding an id's
 * hash and its execution, so a lookup compares hashes in one array and reads an execution only on a
 * match. uthash's lookup (its hash, then a bucket chain, each id elsewhere on the heap) was ~8% of a
 * replay, whose records name a different execution nearly every time; the uthash handle stays for
 * iteration.
 */
typedef struct exec_slot {
    uint64_t hash;
    cs_exec_t *ex; /* NULL: empty */
} exec_slot_t;

static exec_slot_t *etab_slot(const cs_store_t *st, const char *id, size_t len, uint64_t h)
{
    size_t mask = st->etab_cap - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        exec_slot_t *sl = &st->etab[i];
        if (sl->ex == NULL || (sl->hash == h && sl->ex->id_len == len && memcmp(sl->ex->id, id, len) == 0))
            return sl;
    }
}

/* Adds ex (not there yet); 0 or -ENOMEM. */
static int etab_add(cs_store_t *st, cs_exec_t *ex)
{
    if (2 * (st->etab_n + 1) > st->etab_cap) {
        size_t cap = st->etab_cap ? 2 * st->etab_cap : 64;
        exec_slot_t *t = calloc(cap, sizeof(*t));
        if (t == NULL)
            return -ENOMEM;
        for (size_t i = 0; i < st->etab_cap; i++) {
            if (st->etab[i].ex == NULL)
                continue;
            size_t j = (size_t)st->etab[i].hash & (cap - 1);
            while (t[j].ex != NULL)
                j = (j + 1) & (cap - 1);
            t[j] = st->etab[i];
        }
        free(st->etab);
        st->etab = t;
        st->etab_cap = cap;
    }
    exec_slot_t *sl = etab_slot(st, ex->id, ex->id_len, ex->id_hash);
    sl->hash = ex->id_hash;
    sl->ex = ex;
    st->etab_n++;
    return 0;
}

/* Removes ex, moving back the entries after it that probing would no longer reach (as idx_delete). */
static void etab_del(cs_store_t *st, cs_exec_t *ex)
{
    size_t mask = st->etab_cap - 1, i = (size_t)ex->id_hash & mask, j;
    while (st->etab[i].ex != ex) {
        if (st->etab[i].ex == NULL)
            return; /* not there (cannot happen) */
        i = (i + 1) & mask;
    }
    for (j = i;;) {
        j = (j + 1) & mask;
        if (st->etab[j].ex == NULL)
            break;
        size_t home = (size_t)st->etab[j].hash & mask;
        if (i <= j ? (i < home && home <= j) : (i < home || home <= j))
            continue;
        st->etab[i] = st->etab[j];
        i = j;
    }
    st->etab[i].ex = NULL;
    st->etab_n--;
}

cs_exec_t *cs_store_find(cs_store_t *store, const char *id, size_t id_len)
{
    if (store->etab_n == 0)
        return NULL;
    return etab_slot(store, id, id_len, XXH3_64bits(id, id_len))->ex;
}

/* Creates execution id with epoch (0: a new one). */
static cs_exec_t *exec_new(cs_store_t *st, const char *id, size_t id_len, uint64_t epoch, int64_t now_unix_ms)
{
    cs_exec_t *ex;

    ex = calloc(1, sizeof(*ex));
    if (ex == NULL)
        return NULL;
    ex->id = malloc(id_len + 1);
    ex->ring = calloc(RING_INITIAL, sizeof(cs_frame_t *));
    if (ex->id == NULL || ex->ring == NULL) {
        free(ex->id);
        free(ex->ring);
        free(ex);
        return NULL;
    }
    memcpy(ex->id, id, id_len);
    ex->id[id_len] = '\0';
    ex->id_len = id_len;
    ex->ring_cap = RING_INITIAL < st->lim.ring_events ? RING_INITIAL : st->lim.ring_events;
    ex->idx = idx_new(ex->ring_cap, &ex->idx_cap);
    if (ex->idx == NULL) {
        free(ex->id);
        free(ex->ring);
        free(ex);
        return NULL;
    }
    ex->id_hash = XXH3_64bits(ex->id, ex->id_len);
    if (etab_add(st, ex) != 0) {
        free(ex->idx);
        free(ex->id);
        free(ex->ring);
        free(ex);
        return NULL;
    }
    ex->epoch = epoch != 0 ? epoch : cs_epoch_next();
    ex->first_seq = ex->next_seq = 1;
    ex->created_unix_ms = now_unix_ms;
    HASH_ADD_KEYPTR(hh, st->execs, ex->id, ex->id_len, ex);
    list_append(st, ex, ON_ACTIVE, 0);
    if (st->sw != NULL)
        ex->snap_gen = st->sw->gen; /* its EXEC_NEW follows the snapshot's begin: nothing to copy */
    st->bytes += exec_overhead(ex);
    cs_change_t c = {.kind = CS_CHANGE_EXEC_NEW,
                     .exec = ex->id,
                     .exec_len = ex->id_len,
                     .epoch = ex->epoch,
                     .unix_ms = now_unix_ms};
    (void)emit(st, &c);
    return ex;
}

static cs_exec_t *exec_get(cs_store_t *st, const char *id, size_t id_len, int64_t now_unix_ms)
{
    cs_exec_t *ex = cs_store_find(st, id, id_len);

    return ex != NULL ? ex : exec_new(st, id, id_len, 0, now_unix_ms);
}

static size_t exec_count(const cs_exec_t *ex)
{
    return (size_t)(ex->next_seq - ex->first_seq);
}

static void index_remove(cs_exec_t *ex, cs_frame_t *f)
{
    uint64_t h = f->id_hash;
    id_slot_t *sl;

    if (f->id_head) {
        /* Its own slot: found by the pointer, no id compared (the frame's id is a cache miss away). */
        size_t mask = ex->idx_cap - 1, i = (size_t)h & mask;
        while (ex->idx[i].f != f && ex->idx[i].f != NULL)
            i = (i + 1) & mask;
        sl = &ex->idx[i];
    } else {
        sl = idx_slot(ex, f->event_id, f->event_id_len, h);
    }

    if (sl->f == NULL)
        return;
    if (sl->f == f) {
        /* The first frame with its id: the next one with it (if any) takes its slot. */
        f->id_head = 0;
        if (f->id_next != NULL) {
            sl->f = f->id_next;
            f->id_next->id_head = 1;
        } else {
            idx_delete(ex, sl);
        }
    } else {
        for (cs_frame_t *p = sl->f; p->id_next != NULL; p = p->id_next) {
            if (p->id_next == f) {
                p->id_next = f->id_next;
                break;
            }
        }
    }
    f->id_next = NULL;
}

static void snapw_touch(cs_store_t *st, cs_exec_t *ex, uint64_t from);
#define SW_GOING UINT64_MAX /* snapw_touch: the execution is about to be freed */

/* How many evictions ahead a ring's frame is asked into the cache. Under a steady load every publish
 * evicts one: the frame leaving was stored a ring ago, and its miss (with a journal's writes passing
 * through the cache, one from memory) was most of an eviction's time. */
#define EVICT_AHEAD 4

/* Asks for what an eviction touches of f (NULL, or stale: a prefetch never faults). malloc aligns to
 * 16 bytes, so the first 64 bytes of the frame may span two lines. */
static inline void frame_prefetch(const cs_frame_t *f)
{
    __builtin_prefetch(f, 1, 3);
    __builtin_prefetch((const char *)f + 63, 1, 3);
}

static void exec_evict_oldest(cs_store_t *st, cs_exec_t *ex)
{
    snapw_touch(st, ex, ex->first_seq + 1); /* a snapshot in progress writes it as this leaves it */
    size_t i = ex->first_seq % ex->ring_cap;
    cs_frame_t *f = ex->ring[i];

    if (ex->first_seq + EVICT_AHEAD < ex->next_seq) { /* then EVICT_AHEAD < ring_cap */
        size_t a = i + EVICT_AHEAD, b = i + EVICT_AHEAD / 2;
        frame_prefetch(ex->ring[a < ex->ring_cap ? a : a - ex->ring_cap]);
        /* The one two evictions on (its head asked for two evictions ago): when this ring holds its last
         * reference, its eviction frees it and the next frame of its size is built in the same memory
         * (glibc's tcache: last freed, first reused), so its first KiB is asked for too, for writing. */
        const cs_frame_t *n = ex->ring[b < ex->ring_cap ? b : b - ex->ring_cap];
        if (n != NULL && n->refcnt == 1)
            for (size_t off = 128; off < n->bytes && off < 1024; off += 64)
                __builtin_prefetch((const char *)n + off, 1, 3);
    }

    ex->ring[i] = NULL;
    ex->first_seq++;
    ex->bytes -= f->bytes;
    index_remove(ex, f);
    f->in_exec = 0;
    f->exec = NULL;
    st->evicted++;
    emit_exec(st, CS_CHANGE_EVICT, ex->id, ex->id_len, f->seq);
    cs_frame_unref(st, f);
}

static void exec_drop_history(cs_store_t *st, cs_exec_t *ex)
{
    snapw_touch(st, ex, ex->next_seq);
    while (exec_count(ex) > 0)
        exec_evict_oldest(st, ex);
}

static void exec_free(cs_store_t *st, cs_exec_t *ex)
{
    snapw_touch(st, ex, SW_GOING); /* gone: a snapshot in progress need not write it */
    exec_drop_history(st, ex);
    emit_exec(st, CS_CHANGE_FREED, ex->id, ex->id_len, 0);
    st->bytes -= ex->hitl.bytes + ex->status_bytes;
    st->open_bytes -= ex->hitl.open_bytes;
    st->open_reqs -= ex->hitl.n_open;
    st->pinned -= ex->pin_bytes;
    ex->pin_bytes = 0;
    ex->status_bytes = ex->result_bytes = 0;
    cs_hitl_clear(&ex->hitl);
    cs_status_clear(&ex->state);
    exec_unlist(st, ex);
    if (st->sw != NULL && st->sw->phase == SW_UNLISTED && st->sw->cur == ex)
        st->sw->cur = ex->hh.next; /* the snapshot's walk of the hash goes on from the next one */
    HASH_DELETE(hh, st->execs, ex);
    etab_del(st, ex);
    if (st->replay_last == ex)
        st->replay_last = NULL;
    st->bytes -= exec_overhead(ex);
    free(ex->idx);
    free(ex->ring);
    free(ex->id);
    free(ex);
}

/* Whether eviction may free ex: nobody watches it, no open request pins it, and it is not the
 * execution a publish is storing into. */
static int exec_evictable(const cs_store_t *st, const cs_exec_t *ex)
{
    return ex->n_subs == 0 && !exec_pinned(ex) && ex != st->publishing;
}

/* Frees an execution nothing refers to any more: no subscriber, no open request, no retained event,
 * and nothing worth reporting (never posted to, or expired). */
static void exec_maybe_free(cs_store_t *st, cs_exec_t *ex)
{
    if (exec_evictable(st, ex) && exec_count(ex) == 0 &&
        (ex->state.status == CS_EXEC_PENDING || exec_where(st, ex) == ON_NONE))
        exec_free(st, ex);
}

/* Re-seats a ring's frames by seq in a ring of cap slots (cap >= the frames it holds). Returns 0 or
 * -ENOMEM. */
static int exec_resize(cs_store_t *st, cs_exec_t *ex, size_t cap)
{
    cs_frame_t **ring = calloc(cap, sizeof(*ring));
    size_t icap = ex->idx_cap;
    id_slot_t *idx = idx_cap_for(cap) != ex->idx_cap ? idx_new(cap, &icap) : NULL;

    if (ring == NULL || (idx == NULL && icap != ex->idx_cap)) {
        free(ring);
        free(idx);
        return -ENOMEM;
    }
    for (uint64_t s = ex->first_seq; s < ex->next_seq; s++)
        ring[s % cap] = ex->ring[s % ex->ring_cap];
    st->bytes -= exec_overhead(ex);
    free(ex->ring);
    ex->ring = ring;
    ex->ring_cap = cap;
    if (idx != NULL)
        idx_move(ex, idx, icap);
    st->bytes += exec_overhead(ex);
    exec_pin_update(st, ex);
    return 0;
}

/* Doubles a ring up to ring_events. Returns 0 or -ENOMEM. */
static int exec_grow(cs_store_t *st, cs_exec_t *ex)
{
    size_t cap = ex->ring_cap * 2;

    return exec_resize(st, ex, cap > st->lim.ring_events ? st->lim.ring_events : cap);
}

cs_frame_t *cs_exec_frame(const cs_exec_t *ex, uint64_t seq)
{
    if (seq < ex->first_seq || seq >= ex->next_seq)
        return NULL;
    return ex->ring[seq % ex->ring_cap];
}

cs_frame_t *cs_exec_find_event(const cs_exec_t *ex, const char *event_id, size_t len)
{
    return idx_slot(ex, event_id, len, id_hash(event_id, len))->f;
}

/* ---- the global ring ---- */

/* The all-executions stream resumed by an event_id: the frame with that id still in the global ring,
 * searched in every execution (a resume, not a hot path). An id is unique only within its execution:
 * when several executions hold it, the oldest occurrence wins, so a resume may repeat events but never
 * skips one. */
static cs_frame_t *global_find_event(const cs_store_t *st, const char *event_id, size_t len)
{
    cs_exec_t *ex, *tmp;
    cs_frame_t *best = NULL;

    HASH_ITER(hh, st->execs, ex, tmp)
    {
        for (cs_frame_t *f = cs_exec_find_event(ex, event_id, len); f != NULL; f = f->id_next)
            if (f->in_global && (best == NULL || f->gseq < best->gseq))
                best = f;
    }
    return best;
}

static void global_evict_oldest(cs_store_t *st)
{
    size_t i = st->gfirst % st->gcap;
    cs_frame_t *f = st->gring[i];
    cs_change_t c = {.kind = CS_CHANGE_GLOBAL_EVICT, .gseq = st->gfirst};

    if (st->gfirst + EVICT_AHEAD < st->gnext) /* then EVICT_AHEAD < gcap */
        frame_prefetch(st->gring[i + EVICT_AHEAD < st->gcap ? i + EVICT_AHEAD : i + EVICT_AHEAD - st->gcap]);
    /* Empty only in a snapshot being replayed: a slot whose frame has not come yet. */
    st->gring[i] = NULL;
    st->gfirst++;
    if (f != NULL)
        f->in_global = 0;
    (void)emit(st, &c);
    cs_frame_unref(st, f);
}

/* ---- status: status.c decides it; the store keeps finished executions on their own list ---- */

static void exec_on_event(cs_store_t *st, cs_exec_t *ex, const cs_frame_t *f, const json_t *ev,
                          size_t error_max)
{
    cs_exec_status_t s;
    int fin;

    s = cs_status_apply(&ex->state, ev, f->type, f->type_len, ex->hitl.n_open, error_max);

    fin = cs_status_is_final(s);
    if (fin != ex->finished || exec_where(st, ex) == ON_NONE) {
        /* Entering or leaving a final state, or posted to again after its retention expired. */
        exec_unlist(st, ex);
        if (fin != ex->finished) {
            cs_change_t c = {.kind = CS_CHANGE_FINISHED, .exec = ex->id, .exec_len = ex->id_len, .status = s};
            ex->finished = fin;
            (void)emit(st, &c);
        }
        if (fin) {
            /* A replayed execution finished when its record says, not now: its retention goes on. */
            ex->finished_mono_ms =
                st->replaying ? st->now_mono - (st->replay_unix_now - ex->last_unix_ms) : st->now_mono;
            list_append(st, ex, ON_FINISHED, 0);
        } else {
            list_append(st, ex, ON_ACTIVE, 0);
        }
    } else if (!fin) {
        /* Most recently published goes last, so the least recent is evicted first. (With a new tick also
         * when it is last already: every publish takes one, so a replay's ticks are the same.) */
        exec_unlist(st, ex);
        list_append(st, ex, ON_ACTIVE, 0);
    }
}

static void emit_request(cs_store_t *st, cs_change_kind_t kind, const cs_exec_t *ex, const char *event_id,
                         uint64_t seq)
{
    cs_change_t c = {.kind = kind,
                     .exec = ex->id,
                     .exec_len = ex->id_len,
                     .event_id = event_id,
                     .event_id_len = strlen(event_id),
                     .seq = seq};

    (void)emit(st, &c);
}

/* ---- eviction under store.max_bytes ---- */

/* Frees something (the steps in the comment at the top); returns 0 when nothing more can go: what
 * is left is pinned, watched, being published to, or in flight to subscribers. */
static int evict_one(cs_store_t *st)
{
    cs_exec_t *ex;

    /* 1. The oldest frames of the global ring once their execution's ring has let them go. */
    if (st->gnext > st->gfirst &&
        (st->gring[st->gfirst % st->gcap] == NULL || !st->gring[st->gfirst % st->gcap]->in_exec)) {
        global_evict_oldest(st);
        return 1;
    }
    /* 2. Finished executions' histories, earliest finished first. */
    for (ex = st->finished; ex != NULL && exec_count(ex) == 0; ex = ex->lru_next)
        ;
    if (ex != NULL) {
        exec_drop_history(st, ex);
        return 1;
    }
    /* Then finished executions that hold only their status and requests, when nobody watches them
     * and no open request pins them. */
    for (ex = st->finished; ex != NULL && !exec_evictable(st, ex); ex = ex->lru_next)
        ;
    if (ex != NULL) {
        exec_free(st, ex);
        return 1;
    }
    /* 3. The least recently published execution: its oldest event, or itself when it has none left
     * and may go. A frame the global ring still holds is freed when the global ring lets it go (step
     * 1): that ring pins at most store.global_events frames. */
    for (ex = st->active; ex != NULL && exec_count(ex) == 0 && !exec_evictable(st, ex); ex = ex->lru_next)
        ;
    if (ex != NULL) {
        if (exec_count(ex) > 0)
            exec_evict_oldest(st, ex);
        else
            exec_free(st, ex);
        return 1;
    }
    /* 4. Only the global ring is left. */
    if (st->gnext > st->gfirst) {
        global_evict_oldest(st);
        return 1;
    }
    return 0;
}

/* Evicts until extra more bytes fit within store.max_bytes; returns 0, or -1 when they cannot. */
static int make_room(cs_store_t *st, size_t extra)
{
    while (st->bytes + extra > st->lim.max_bytes)
        if (!evict_one(st))
            return -1;
    return 0;
}

/* A record naming frame f of ex (ex NULL: a frame only the global ring holds): its ids, type and JSON. */
static cs_change_t frame_change(cs_change_kind_t kind, const cs_frame_t *f, const cs_exec_t *ex)
{
    cs_change_t c = {.kind = kind,
                     .exec = ex != NULL ? ex->id : NULL,
                     .exec_len = ex != NULL ? ex->id_len : 0,
                     .seq = f->seq,
                     .gseq = f->gseq,
                     .event_id = f->event_id,
                     .event_id_len = f->event_id_len,
                     .type = f->type,
                     .type_len = f->type_len,
                     .json = f->json,
                     .json_len = f->json_len};
    return c;
}

/* Puts f (seq next_seq, room made) into ex's ring and its event-id index (the first frame with its id in
 * a slot, later ones chained to it). */
static void ring_push(cs_exec_t *ex, cs_frame_t *f)
{
    uint64_t h = f->id_hash;
    id_slot_t *sl = idx_slot(ex, f->event_id, f->event_id_len, h);

    ex->ring[f->seq % ex->ring_cap] = f;
    f->in_exec = 1;
    f->exec = ex;
    ex->next_seq++;
    ex->bytes += f->bytes;
    if (sl->f == NULL) {
        sl->hash = h;
        sl->f = f;
        f->id_head = 1;
    } else {
        cs_frame_t *p = sl->f;
        while (p->id_next != NULL)
            p = p->id_next;
        p->id_next = f;
    }
}

/* ---- publish ---- */

static void wake_list(cs_sub_t **list)
{
    while (*list != NULL) {
        cs_sub_t *s = *list;
        DL_DELETE2(*list, s, wprev, wnext);
        s->wprev = s->wnext = NULL;
        s->parked = 0;
        s->ops->wake(s);
    }
}

/* Refuses a publish over the budget: counted, and said in the producer's words. */
static cs_err_t refuse(cs_store_t *st, cs_err_t e, char *detail, size_t detail_len, const char *what,
                       size_t need, size_t limit)
{
    if (e == CS_ERR_TOO_LARGE) {
        st->refused_too_large++;
        snprintf(detail, detail_len, "%s needs %zu bytes in the store, more than %s (%zu): not stored", what,
                 need, "store.max_bytes allows", limit);
    } else {
        st->refused_full++;
        snprintf(detail, detail_len,
                 "%s does not fit in store.max_bytes (%zu): open human-input requests hold %zu bytes and "
                 "frames in flight to subscribers %zu; not stored, retry later",
                 what, st->lim.max_bytes, st->pinned, limit);
    }
    return e;
}

/*
 * Publishes one event known by its fields fl. ev, when not NULL, is the whole event: it is
 * completed in place (event_id, timestamp, seq), and human input and status read it. body, when not
 * NULL, is the producer's line kept as it came, without its closing brace (raw_line): the daemon's
 * fields are appended to it; otherwise the completed ev is rendered. One of ev and body is given.
 *
 * What the event will cost (its frame, its request or the answer's push line, what its status
 * keeps) is known before it is stored, and room is made for it first: once stored, nothing of this
 * publish is evicted, and the execution it went to is valid in *out.
 */
/* A retry found in ex and not pending: when ex has a held publish not released yet, it may be that one
 * (not written yet): held again at ex's newest hold, or refused to a caller that cannot hold (submit). */
static void dup_hold(cs_store_t *st, const cs_exec_t *ex, cs_publish_t *out)
{
    if (st->dup_wait != 0 || ex->last_hold <= st->released)
        return;
    if (st->can_hold)
        out->hold = ex->last_hold;
    else
        st->dup_unreleased = 1;
}

static cs_err_t publish_event(cs_store_t *st, const cs_event_fields_t *fl, json_t *ev, const char *body,
                              size_t body_len, int64_t now_unix_ms, cs_publish_t *out, char *detail,
                              size_t detail_len)
{
    cs_exec_t *ex;
    cs_frame_t *f = NULL;
    cs_hitl_req_t *answers = NULL;
    char *json = NULL, *push = NULL;
    const char *eid = fl->event_id, *ts = fl->timestamp;
    size_t eid_len = fl->event_id_len, tail_len = 0, push_len = 0, extra = 0, status_room = 0;
    char tail[160], eid_buf[37], ts_buf[32];
    int is_request = fl->type_len == 20 && memcmp(fl->type, "human_input_required", 20) == 0;
    int is_answer = fl->type_len == 21 && memcmp(fl->type, "human_input_completed", 21) == 0;
    uint64_t seq;
    cs_err_t e;

    /* The gate: nothing is stored that could not be made durable (a journal that cannot be written). */
    if (st->gate != CS_OK && !st->replaying && !st->inserting) {
        st->refused_gate++;
        snprintf(detail, detail_len, "%s", st->gate_detail);
        return st->gate;
    }
    ex = st->replaying && st->replay_ex != NULL
             ? st->replay_ex
             : exec_get(st, fl->execution_id, fl->execution_id_len, now_unix_ms);
    if (ex == NULL)
        goto nomem;

    /* A producer's retry of an event we still hold: acknowledge it again, store nothing. (A replayed
     * record was stored once: it is no retry.) */
    if (eid != NULL && !st->replaying && !st->inserting) {
        cs_frame_t *dup = cs_exec_find_event(ex, eid, eid_len);
        for (; dup != NULL; dup = dup->id_next) {
            if (dup->type_len == fl->type_len && memcmp(dup->type, fl->type, fl->type_len) == 0) {
                st->dup_wait = pending_ticket_of(st, dup);
                dup_hold(st, ex, out);
                out->seq = dup->seq;
                memcpy(out->event_id, dup->event_id, dup->event_id_len + 1);
                out->duplicate = 1;
                out->frame = dup;
                out->exec = ex;
                st->duplicates++;
                return CS_OK;
            }
        }
    }
    /* A retry of a request whose event has left the ring: the request is still there (requests live
     * beside the ring), and it is the same one: acknowledged with its seq, not asked twice. */
    if (is_request && ev != NULL && !st->replaying && !st->inserting) {
        const char *rid = json_string_value(json_object_get(ev, "event_id"));
        cs_hitl_req_t *r = rid != NULL ? cs_hitl_find(&ex->hitl, rid) : NULL;
        if (r != NULL) {
            cs_frame_t *rf = cs_exec_frame(ex, r->seq);
            st->dup_wait = rf != NULL ? pending_ticket_of(st, rf) : 0;
            dup_hold(st, ex, out);
            out->seq = r->seq;
            snprintf(out->event_id, sizeof(out->event_id), "%s", r->event_id);
            out->duplicate = 1;
            out->frame = cs_exec_frame(ex, r->seq);
            out->exec = ex;
            st->duplicates++;
            return CS_OK;
        }
    }
    /* The seq step: the store's own, or a sequencer's (store.h), or the record's on replay. */
    seq = ex->next_seq;
    if (st->replaying) {
        seq = st->replay_seq;
    } else if (st->inserting) {
        seq = st->insert_seq; /* Redis gave it (cs_store_insert: never behind next) */
    } else if (st->seqr.assign != NULL) {
        int r = st->seqr.assign(st->seqr.data, ex->id, ex->id_len, ex->next_seq, &seq);
        if (r != 0 || seq < ex->next_seq) {
            snprintf(detail, detail_len, "no seq for this event (%s): not stored",
                     r != 0 ? "the sequencer refused" : "the sequencer went back");
            e = r != 0 ? (cs_err_t)r : CS_ERR_INTERNAL;
            goto refused;
        }
    }
    snapw_touch(st, ex, ex->first_seq); /* a snapshot in progress writes it before it changes */
    st->publishing = ex;

    /* What the daemon owns: a UUID when the event has no id, a timestamp when it has none, seq. */
    if (ev != NULL) {
        json_t *v;
        if (cs_event_complete(ev, seq, now_unix_ms) != 0)
            goto nomem;
        v = json_object_get(ev, "event_id");
        eid = json_string_value(v);
        eid_len = json_string_length(v);
        ts = json_string_value(json_object_get(ev, "timestamp"));
    } else {
        if (eid == NULL) {
            if (cs_uuid4(eid_buf) != 0)
                goto nomem;
            eid = eid_buf;
            eid_len = 36;
        }
        if (ts == NULL) {
            cs_format_timestamp(now_unix_ms, ts_buf, sizeof(ts_buf));
            ts = ts_buf;
        }
    }
    if (body != NULL && st->replaying) {
        tail[tail_len++] = '}'; /* the record's JSON holds every field already */
    } else if (body != NULL) {
        /* The fields the daemon added, after the producer's own: a UUID, a timestamp, a number. */
        if (fl->event_id == NULL) {
            memcpy(tail + tail_len, ",\"event_id\":\"", 13), tail_len += 13;
            memcpy(tail + tail_len, eid, 36), tail_len += 36;
            tail[tail_len++] = '"';
        }
        if (fl->timestamp == NULL) {
            memcpy(tail + tail_len, ",\"timestamp\":\"", 14), tail_len += 14;
            memcpy(tail + tail_len, ts, 24), tail_len += 24;
            tail[tail_len++] = '"';
        }
        memcpy(tail + tail_len, ",\"seq\":", 7), tail_len += 7;
        tail_len += cs_fmt_u64(tail + tail_len, seq);
        tail[tail_len++] = '}';
    } else {
        json = json_dumps(ev, JSON_COMPACT);
        if (json == NULL)
            goto nomem;
        body = json;
        body_len = strlen(json);
    }
    if (exec_count(ex) == ex->ring_cap && ex->ring_cap < st->lim.ring_events && exec_grow(st, ex) != 0)
        goto nomem;
    f = frame_new(st, ex->epoch, body, body_len, tail, tail_len, fl->type, fl->type_len, eid, eid_len, seq,
                  st->gnext);
    free(json);
    json = NULL;
    if (f == NULL)
        goto nomem;

    /* What storing it will add beyond its frame (already counted): human input (never without ev:
     * see cs_store_publish_fields) and what the status keeps. */
    if (is_request) {
        size_t cost = cs_hitl_request_cost(ev, f->json_len);
        size_t pin_now = st->pinned - ex->pin_bytes;
        size_t pin_ex = pin_share(ex, ex->hitl.bytes + cost, exec_overhead(ex));
        /* Open requests cannot be evicted: they may hold half of the budget, the rest is for events. */
        if (cost > st->lim.max_bytes / 2) {
            st->refused_too_large++;
            snprintf(detail, detail_len,
                     "this human_input_required needs %zu bytes in the store, more than open requests may "
                     "hold (half of store.max_bytes: %zu): not stored",
                     cost, st->lim.max_bytes / 2);
            e = CS_ERR_TOO_LARGE;
            goto refused;
        }
        if (pin_now + pin_ex > st->lim.max_bytes / 2) {
            st->refused_full++;
            snprintf(
                detail, detail_len,
                "open human-input requests hold %zu bytes of the %zu they may (half of store.max_bytes): "
                "this human_input_required is not stored; answer open requests, or retry later",
                st->pinned, st->lim.max_bytes / 2);
            e = CS_ERR_UNAVAILABLE;
            goto refused;
        }
        extra += cost;
    } else if (is_answer && ev != NULL) {
        answers = cs_hitl_match_completed(&ex->hitl, ev);
        if (answers != NULL && !answers->answered) {
            push = cs_hitl_push_line(answers, ex->id, ev, f->seq, &push_len);
            if (push == NULL)
                goto nomem;
            if (push_len > answers->request_bytes)
                extra += push_len - answers->request_bytes;
        } else {
            answers = NULL;
        }
    }
    switch (ev != NULL ? cs_status_keeps(fl->type, fl->type_len) : 0) { /* the fast path's types keep none */
    case CS_STATUS_KEEPS_RESULT:
        status_room = 2 * f->json_len; /* what a result is counted as (a part of the event, as a tree) */
        break;
    case CS_STATUS_KEEPS_ERROR:
        status_room = f->json_len + 1; /* the error text, cut to the event's length */
        break;
    default:
        break;
    }
    extra += status_room;
    if (f->bytes + extra > st->lim.max_bytes) {
        e = refuse(st, CS_ERR_TOO_LARGE, detail, detail_len, "this event", f->bytes + extra,
                   st->lim.max_bytes);
        goto refused;
    }
    if (!st->replaying && make_room(st, extra) != 0) { /* a replay's evictions are records of their own */
        e = refuse(st, CS_ERR_UNAVAILABLE, detail, detail_len, "this event", 0, st->frame_bytes - f->bytes);
        /* frame_bytes: what is left of them is in flight (the rings were emptied of what may go) */
        goto refused;
    }

    /* A seq past the next one (the sequencer's): those between are not here, nor what came before. */
    if (seq > ex->next_seq) {
        exec_drop_history(st, ex);
        ex->first_seq = ex->next_seq = seq;
    }
    /* Into the execution's ring: the newest event is always kept, even one larger than ring_bytes. */
    st->deriving = 1; /* the replay of this publish makes room in its ring the same way */
    while (exec_count(ex) > 0 &&
           (exec_count(ex) >= ex->ring_cap || ex->bytes + f->bytes > st->lim.ring_bytes))
        exec_evict_oldest(st, ex);
    st->deriving = 0;
    ring_push(ex, f);
    if (ex->first_unix_ms == 0) {
        ex->first_unix_ms = now_unix_ms;
        ex->first_order = ++st->first_orders;
    }
    ex->last_unix_ms = now_unix_ms;
    {
        cs_change_t c = frame_change(CS_CHANGE_PUBLISH, f, ex);
        c.unix_ms = now_unix_ms;
        c.ticket = ++st->tickets;
        c.holdable = st->can_hold;
        st->hold = 0;
        st->deferred = emit(st, &c) == CS_CHANGE_LATER;
        out->ticket = c.ticket;
        if (st->hold != 0) {
            out->hold = ex->last_hold = st->hold;
            st->hold = 0;
        }
    }

    /* What follows from the publish (the global ring, requests, the status) its replay redoes. */
    st->deriving = 1;

    /* Into the global ring. */
    if (st->gnext - st->gfirst >= st->gcap)
        global_evict_oldest(st);
    st->gring[st->gnext % st->gcap] = cs_frame_ref(f);
    f->in_global = 1;
    st->gnext++;
    st->published++;
    {
        cs_change_t c = {.kind = CS_CHANGE_GLOBAL_APPEND,
                         .exec = ex->id,
                         .exec_len = ex->id_len,
                         .seq = f->seq,
                         .gseq = f->gseq};
        (void)emit(st, &c);
    }

    /* Human-input requests and answers, kept beside the ring. */
    size_t hb = ex->hitl.bytes, ob = ex->hitl.open_bytes, on = ex->hitl.n_open;
    if (is_request) {
        if (cs_hitl_on_request(&ex->hitl, ev, f->seq, f->json_len) != 0)
            cs_log_error("store: out of memory recording human-input request %s of %s", f->event_id, ex->id);
        else
            emit_request(st, CS_CHANGE_REQUEST_OPENED, ex, f->event_id, f->seq);
    }
    if (answers != NULL) {
        cs_hitl_answer(&ex->hitl, answers, push, push_len); /* pushes to the awaiting runtimes */
        emit_request(st, CS_CHANGE_REQUEST_ANSWERED, ex, answers->event_id, f->seq);
        snprintf(out->request_event_id, sizeof(out->request_event_id), "%s", answers->event_id);
    }
    st->bytes = st->bytes - hb + ex->hitl.bytes;
    st->open_bytes = st->open_bytes - ob + ex->hitl.open_bytes;
    st->open_reqs = st->open_reqs - on + ex->hitl.n_open;

    /* The status, and what it keeps: a result as twice the event's text (within the room made for it),
     * an error text cut to the room made for it. */
    const json_t *old_result = cs_status_result(&ex->state);
    exec_on_event(st, ex, f, ev, status_room > 0 ? status_room - 1 : SIZE_MAX);
    if (cs_status_result(&ex->state) != old_result)
        ex->result_bytes = cs_status_result(&ex->state) != NULL ? 2 * f->json_len : 0;
    size_t sb = status_held(ex);
    st->bytes = st->bytes - ex->status_bytes + sb;
    ex->status_bytes = sb;
    exec_pin_update(st, ex);
    st->publishing = NULL;
    st->deriving = 0;

    out->seq = f->seq;
    memcpy(out->event_id, f->event_id, f->event_id_len + 1);
    out->frame = f;
    out->exec = ex;

    wake_list(&ex->waiters);
    wake_list(&st->gwaiters);
    return CS_OK;

nomem:
    snprintf(detail, detail_len, "out of memory");
    e = CS_ERR_INTERNAL;
refused:
    free(json);
    free(push);
    cs_frame_unref(st, f);
    if (ex != NULL) {
        st->publishing = NULL;
        exec_maybe_free(st, ex);
    }
    return e;
}

/* Copies what a completion reads of a publish - its strings up to their NUL, not their whole arrays;
 * frame and exec are not kept (NULL). */
static void pub_keep(cs_publish_t *dst, const cs_publish_t *src)
{
    size_t n = strnlen(src->event_id, sizeof(src->event_id) - 1);
    size_t m = strnlen(src->request_event_id, sizeof(src->request_event_id) - 1);

    dst->seq = src->seq;
    memcpy(dst->event_id, src->event_id, n);
    dst->event_id[n] = '\0';
    dst->duplicate = src->duplicate;
    dst->frame = NULL;
    dst->exec = NULL;
    memcpy(dst->request_event_id, src->request_event_id, m);
    dst->request_event_id[m] = '\0';
    dst->ticket = src->ticket;
}

/* publish_event with a completion: CS_PENDING when the observer confirms the publish later and done
 * waits for it (store.h). */
static cs_err_t remote_submit(cs_store_t *st, const cs_event_fields_t *fl, json_t *ev, const char *body,
                              size_t body_len, int64_t now_unix_ms, const cs_store_done_t *done,
                              cs_publish_t *out, char *detail, size_t detail_len);

static cs_err_t submit(cs_store_t *st, const cs_event_fields_t *fl, json_t *ev, const char *body,
                       size_t body_len, int64_t now_unix_ms, const cs_store_done_t *done, cs_publish_t *out,
                       char *detail, size_t detail_len)
{
    pending_t *pe = NULL;
    cs_err_t e;

    if (st->remote.submit != NULL && !st->inserting)
        return remote_submit(st, fl, ev, body, body_len, now_unix_ms, done, out, detail, detail_len);

    /* Had before the event is stored: a completion that could not be kept would be a lost reply. Kept
     * also without a completion while the observer may defer: a retry of the publish must know that it
     * is not confirmed yet. */
    if (st->obs.change != NULL && (pe = pending_get(st)) == NULL) {
        snprintf(detail, detail_len, "out of memory");
        return CS_ERR_INTERNAL;
    }
    st->deferred = 0;
    st->dup_wait = 0;
    st->dup_unreleased = 0;
    st->can_hold = done != NULL && done->can_hold;
    out->hold = 0;
    e = publish_event(st, fl, ev, body, body_len, now_unix_ms, out, detail, detail_len);
    st->can_hold = 0;
    if (e == CS_OK && st->dup_unreleased) {
        /* A retry of a held event its caller cannot hold the acknowledgement of. */
        st->dup_unreleased = 0;
        pending_put(st, pe);
        snprintf(detail, detail_len, "event %s (seq %llu) is not durable yet: retry", out->event_id,
                 (unsigned long long)out->seq);
        return CS_ERR_UNAVAILABLE;
    }
    if (e == CS_OK && st->dup_wait != 0) {
        /* A retry of a publish not confirmed yet: it is answered when that one is, with its outcome. */
        uint64_t t = st->dup_wait;
        st->dup_wait = 0;
        if (done == NULL || pe == NULL) {
            pending_put(st, pe);
            snprintf(detail, detail_len, "event %s (seq %llu) is not durable yet: retry", out->event_id,
                     (unsigned long long)out->seq);
            return CS_ERR_UNAVAILABLE;
        }
        pe->ticket = ++st->tickets;
        pe->waits_for = t;
        pe->done = *done;
        pub_keep(&pe->pub, out);
        out->ticket = pe->ticket;
        DL_APPEND(st->pending, pe);
        st->n_pending++;
        st->n_with_done++;
        st->n_waiting_dups++;
        return CS_PENDING;
    }
    if (e != CS_OK || !st->deferred || pe == NULL) {
        st->deferred = 0;
        pending_put(st, pe);
        return e;
    }
    st->deferred = 0;
    pe->ticket = out->ticket;
    if (done != NULL) {
        pe->done = *done;
        st->n_with_done++;
    }
    pub_keep(&pe->pub, out);
    pe->frame = cs_frame_ref(out->frame);
    DL_APPEND(st->pending, pe);
    st->n_pending++;
    return done != NULL ? CS_PENDING : CS_OK;
}

/* The ticket of the unconfirmed publish that stored f, or 0 (confirmed, or never deferred). */
static uint64_t pending_ticket_of(const cs_store_t *st, const cs_frame_t *f)
{
    for (const pending_t *pe = st->pending; pe != NULL; pe = pe->next)
        if (pe->frame == f)
            return pe->ticket;
    return 0;
}

/* Its completion will not be called (it was, or its caller left). */
static void pending_clear_done(cs_store_t *st, pending_t *pe)
{
    if (pe->done.fn != NULL)
        st->n_with_done--;
    memset(&pe->done, 0, sizeof(pe->done));
}

static pending_t *pending_get(cs_store_t *st)
{
    pending_t *pe = st->pool;

    if (pe == NULL)
        return calloc(1, sizeof(*pe));
    st->pool = pe->next;
    st->n_pool--;
    /* Zeroed but for pub, which submit fills (pub_keep) before the entry is listed. */
    pe->ticket = pe->waits_for = 0;
    memset(&pe->done, 0, sizeof(pe->done));
    pe->frame = NULL;
    pe->prev = pe->next = NULL;
    return pe;
}

static void pending_put(cs_store_t *st, pending_t *pe)
{
    if (pe == NULL)
        return;
    if (st->n_pool >= PENDING_POOL_MAX || st->tearing_down) {
        free(pe);
        return;
    }
    pe->next = st->pool;
    st->pool = pe;
    st->n_pool++;
}

/* Takes pe off the pending list and drops what it holds; the caller gives it back (pending_put). */
static void pending_unlink(cs_store_t *st, pending_t *pe)
{
    pending_clear_done(st, pe);
    DL_DELETE(st->pending, pe);
    st->n_pending--;
    if (pe->waits_for != 0)
        st->n_waiting_dups--;
    if (pe->frame != NULL)
        cs_frame_unref(st, pe->frame);
    pe->frame = NULL;
}

static void pending_free(cs_store_t *st, pending_t *pe)
{
    pending_unlink(st, pe);
    pending_put(st, pe);
}

static pending_t *pending_find(cs_store_t *st, uint64_t ticket)
{
    pending_t *pe;

    /* Confirmations come mostly in order: the oldest first. */
    for (pe = st->pending; pe != NULL && pe->ticket != ticket; pe = pe->next)
        ;
    return pe;
}

/* Answers one entry: its completion (once), and it goes unless the publish is still unconfirmed. */
static void pending_answer(cs_store_t *st, pending_t *pe, cs_err_t e, const char *detail)
{
    cs_store_done_t done = pe->done;

    if (e == CS_OK || pe->waits_for != 0) {
        /* Off the list (nothing finds it any more) but kept until its completion has read pub. */
        pending_unlink(st, pe);
        if (done.fn != NULL)
            done.fn(done.data, e, &pe->pub, detail != NULL ? detail : "");
        pending_put(st, pe);
        return;
    }
    /* Told the error, but the record may still be written (a journal's retry): a retry of it waits until
     * the observer confirms it CS_OK after all, so the entry stays (and may go while done runs). */
    cs_publish_t pub = pe->pub;
    pending_clear_done(st, pe);
    if (done.fn != NULL)
        done.fn(done.data, e, &pub, detail != NULL ? detail : "");
}

void cs_store_hold(cs_store_t *st, uint64_t position)
{
    st->hold = position;
}

void cs_store_release(cs_store_t *st, uint64_t position)
{
    st->released = position;
    if (st->release_fn != NULL)
        st->release_fn(st->release_data, position);
}

uint64_t cs_store_released(const cs_store_t *st)
{
    return st->released;
}

void cs_store_on_release(cs_store_t *st, void (*fn)(void *data, uint64_t position), void *data)
{
    st->release_fn = fn;
    st->release_data = data;
}

void cs_store_confirm(cs_store_t *st, uint64_t ticket, cs_err_t e, const char *detail)
{
    pending_t *pe = pending_find(st, ticket);

    if (pe != NULL)
        pending_answer(st, pe, e, detail);
    /* Retries that wait for it: answered with its outcome (the completion may publish: search again). */
    while (st->n_waiting_dups > 0) {
        for (pe = st->pending; pe != NULL && pe->waits_for != ticket; pe = pe->next)
            ;
        if (pe == NULL)
            break;
        pending_answer(st, pe, e, detail);
    }
}

int cs_store_may_defer(const cs_store_t *st)
{
    return st->obs.change != NULL || st->remote.submit != NULL;
}

void cs_store_forget(cs_store_t *st, uint64_t ticket)
{
    pending_t *pe;

    if (st->remote.forget != NULL)
        st->remote.forget(st->remote.data, ticket); /* a ticket it does not hold is none of its own */
    pe = pending_find(st, ticket);

    if (pe == NULL)
        return;
    if (pe->waits_for != 0)
        pending_free(st, pe);
    else
        pending_clear_done(st, pe); /* still unconfirmed: a retry must know */
}

cs_err_t cs_store_publish(cs_store_t *st, json_t *ev, int64_t now_unix_ms, cs_publish_t *out, char *detail,
                          size_t detail_len)
{
    return cs_store_submit_raw(st, ev, NULL, 0, now_unix_ms, NULL, out, detail, detail_len);
}

/* Returns the string value of member key of ev, or NULL; *len its length. */
static const char *string_member(const json_t *ev, const char *key, size_t *len)
{
    json_t *v = json_object_get(ev, key);

    *len = json_string_length(v); /* 0 for anything but a string */
    return json_string_value(v);
}

cs_err_t cs_store_publish_raw(cs_store_t *st, json_t *ev, const char *raw, size_t raw_len,
                              int64_t now_unix_ms, cs_publish_t *out, char *detail, size_t detail_len)
{
    return cs_store_submit_raw(st, ev, raw, raw_len, now_unix_ms, NULL, out, detail, detail_len);
}

cs_err_t cs_store_submit_raw(cs_store_t *st, json_t *ev, const char *raw, size_t raw_len, int64_t now_unix_ms,
                             const cs_store_done_t *done, cs_publish_t *out, char *detail, size_t detail_len)
{
    cs_event_fields_t fl;
    const char *body;
    size_t body_len = 0;

    memset(out, 0, sizeof(*out));
    fl.execution_id = string_member(ev, "execution_id", &fl.execution_id_len);
    fl.type = string_member(ev, "type", &fl.type_len);
    fl.event_id = string_member(ev, "event_id", &fl.event_id_len);
    fl.timestamp = string_member(ev, "timestamp", &fl.timestamp_len);
    if (fl.execution_id == NULL || fl.type == NULL) {
        snprintf(detail, detail_len, "execution_id and type are required");
        return CS_ERR_MISSING_FIELD;
    }
    if (!raw_keepable(ev, raw, raw_len, &body, &body_len))
        body = NULL;
    return submit(st, &fl, ev, body, body_len, now_unix_ms, done, out, detail, detail_len);
}

cs_err_t cs_store_publish_fields(cs_store_t *st, const cs_event_fields_t *fl, const char *raw, size_t raw_len,
                                 int64_t now_unix_ms, cs_publish_t *out, char *detail, size_t detail_len)
{
    return cs_store_submit_fields(st, fl, raw, raw_len, now_unix_ms, NULL, out, detail, detail_len);
}

cs_err_t cs_store_submit_fields(cs_store_t *st, const cs_event_fields_t *fl, const char *raw, size_t raw_len,
                                int64_t now_unix_ms, const cs_store_done_t *done, cs_publish_t *out,
                                char *detail, size_t detail_len)
{
    const char *body;
    size_t body_len;

    memset(out, 0, sizeof(*out));
    /* Without the whole event nothing could be rendered, and the status machine and the
     * human-input circle could not read what they need: the caller passes such events whole. */
    if (!raw_line(raw, raw_len, &body, &body_len) || cs_status_reads_type(fl->type, fl->type_len)) {
        snprintf(detail, detail_len, "internal: an event the store must have whole");
        return CS_ERR_INTERNAL;
    }
    return submit(st, fl, NULL, body, body_len, now_unix_ms, done, out, detail, detail_len);
}

/* ---- the remote step: cluster mode (store.h) ---- */

/* The types that finish an execution (its retention starts): Redis keeps it store.retain_s more. */
static int final_type(const char *t, size_t n)
{
    static const char *const names[] = {"run.completed", "crew_kickoff_completed", "run.failed",
                                        "crew_kickoff_failed", "run.canceled"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strlen(names[i]) == n && memcmp(names[i], t, n) == 0)
            return 1;
    return 0;
}

/*
 * A publish in cluster mode: refused by the gate, acknowledged at once when this node's ring holds it
 * already (the ring only holds what Redis holds), else completed (event_id, timestamp) into the JSON
 * every node will store, and handed to the remote with a ticket.
 */
static cs_err_t remote_submit(cs_store_t *st, const cs_event_fields_t *fl, json_t *ev, const char *body,
                              size_t body_len, int64_t now_unix_ms, const cs_store_done_t *done,
                              cs_publish_t *out, char *detail, size_t detail_len)
{
    cs_exec_t *ex = cs_store_find(st, fl->execution_id, fl->execution_id_len);
    char *json = NULL, *dumped = NULL, eid_buf[37], ts_buf[32];
    const char *eid = fl->event_id;
    size_t eid_len = fl->event_id_len, len = 0;
    cs_store_remote_pub_t rp;
    cs_err_t e;

    if (st->gate != CS_OK) {
        st->refused_gate++;
        snprintf(detail, detail_len, "%s", st->gate_detail);
        return st->gate;
    }
    if (ex != NULL && eid != NULL) {
        for (cs_frame_t *dup = cs_exec_find_event(ex, eid, eid_len); dup != NULL; dup = dup->id_next) {
            if (dup->type_len == fl->type_len && memcmp(dup->type, fl->type, fl->type_len) == 0) {
                out->seq = dup->seq;
                memcpy(out->event_id, dup->event_id, dup->event_id_len + 1);
                out->duplicate = 1;
                out->frame = dup;
                out->exec = ex;
                st->duplicates++;
                return CS_OK;
            }
        }
    }
    if (eid == NULL) {
        if (cs_uuid4(eid_buf) != 0)
            goto nomem;
        eid = eid_buf;
        eid_len = 36;
    }
    if (body != NULL) {
        /* The producer's line as it came, the daemon's fields appended: every node adds ,"seq":N} */
        json = malloc(body_len + 160);
        if (json == NULL)
            goto nomem;
        memcpy(json, body, body_len);
        len = body_len;
        if (fl->event_id == NULL)
            len += (size_t)snprintf(json + len, 160, ",\"event_id\":\"%s\"", eid);
        if (fl->timestamp == NULL) {
            cs_format_timestamp(now_unix_ms, ts_buf, sizeof(ts_buf));
            len += (size_t)snprintf(json + len, 64, ",\"timestamp\":\"%s\"", ts_buf);
        }
        json[len++] = '}';
        json[len] = '\0';
    } else {
        /* Re-serialised (a producer's seq, escapes): without seq, with the daemon's fields. */
        json_object_del(ev, "seq");
        if (fl->event_id == NULL && json_object_set_new(ev, "event_id", json_string(eid)) != 0)
            goto nomem;
        if (fl->timestamp == NULL) {
            cs_format_timestamp(now_unix_ms, ts_buf, sizeof(ts_buf));
            if (json_object_set_new(ev, "timestamp", json_string(ts_buf)) != 0)
                goto nomem;
        }
        dumped = json_dumps(ev, JSON_COMPACT);
        if (dumped == NULL)
            goto nomem;
        json = dumped;
        len = strlen(json);
    }
    memset(&rp, 0, sizeof(rp));
    rp.exec = fl->execution_id;
    rp.exec_len = fl->execution_id_len;
    rp.type = fl->type;
    rp.type_len = fl->type_len;
    rp.event_id = eid;
    rp.event_id_len = eid_len;
    rp.json = json;
    rp.json_len = len;
    rp.ticket = ++st->tickets;
    rp.final = final_type(fl->type, fl->type_len);
    rp.generated_id = fl->event_id == NULL;
    if (st->answering != NULL && ex != NULL) {
        rp.answers = st->answering;
        rp.answers_epoch = ex->epoch;
    }
    snprintf(out->event_id, sizeof(out->event_id), "%.*s", (int)eid_len, eid);
    out->ticket = rp.ticket;
    e = st->remote.submit(st->remote.data, &rp, done, detail, detail_len);
    free(json);
    if (e == CS_PENDING && done == NULL)
        e = CS_OK; /* nobody waits: the event reaches the ring when Redis has it (seq 0 here) */
    return e;
nomem:
    free(json);
    snprintf(detail, detail_len, "out of memory");
    return CS_ERR_INTERNAL;
}

cs_err_t cs_store_submit_answer(cs_store_t *st, json_t *ev, const char *request_event_id, int64_t now_unix_ms,
                                const cs_store_done_t *done, cs_publish_t *out, char *detail,
                                size_t detail_len)
{
    cs_err_t e;

    st->answering = request_event_id;
    e = cs_store_submit_raw(st, ev, NULL, 0, now_unix_ms, done, out, detail, detail_len);
    st->answering = NULL;
    return e;
}

void cs_store_set_remote(cs_store_t *st, const cs_store_remote_t *remote)
{
    if (remote != NULL)
        st->remote = *remote;
    else
        memset(&st->remote, 0, sizeof(st->remote));
}

/* An execution whose epoch in Redis is not this ring's (Redis lost its data, or this node met the
 * execution before Redis gave it an epoch): what the ring holds is another history. */
static void exec_rebase(cs_store_t *st, cs_exec_t *ex, uint64_t epoch, uint64_t seq)
{
    if (ex->next_seq > 1)
        cs_log_warn("cluster: execution %s has a new epoch in Redis (Redis lost its data?): its history "
                    "here is dropped, its subscribers get stream.gap",
                    ex->id);
    exec_drop_history(st, ex);
    ex->epoch = epoch;
    ex->first_seq = ex->next_seq = seq; /* the new history's seqs start here (1, or later: stream.gap) */
}

int cs_store_rebase(cs_store_t *st, const char *id, size_t id_len, uint64_t epoch)
{
    cs_exec_t *ex = cs_store_find(st, id, id_len);

    if (ex == NULL || ex->epoch == epoch || epoch == 0)
        return 0;
    exec_rebase(st, ex, epoch, 1);
    wake_list(&ex->waiters);
    return 1;
}

cs_err_t cs_store_insert(cs_store_t *st, uint64_t epoch, uint64_t seq, const cs_event_fields_t *fl,
                         json_t *ev, const char *json, size_t json_len, int64_t now_unix_ms,
                         cs_publish_t *out, char *detail, size_t detail_len)
{
    const char *x = fl != NULL ? fl->execution_id : json_string_value(json_object_get(ev, "execution_id"));
    size_t xlen = fl != NULL ? fl->execution_id_len : json_string_length(json_object_get(ev, "execution_id"));
    cs_exec_t *ex;
    cs_err_t e;

    memset(out, 0, sizeof(*out));
    if (x == NULL || epoch == 0 || seq == 0) {
        snprintf(detail, detail_len, "an event from the cluster without execution_id, epoch or seq");
        return CS_ERR_INVALID_FIELD;
    }
    ex = cs_store_find(st, x, xlen);
    if (ex == NULL)
        ex = exec_new(st, x, xlen, epoch, now_unix_ms);
    if (ex == NULL) {
        snprintf(detail, detail_len, "out of memory");
        return CS_ERR_INTERNAL;
    }
    if (ex->epoch != epoch)
        exec_rebase(st, ex, epoch, seq);
    else if (seq < ex->next_seq) {
        out->seq = seq;
        out->duplicate = 1; /* here already */
        out->exec = ex;
        return CS_OK;
    }
    st->inserting = 1;
    st->insert_seq = seq;
    if (fl != NULL)
        e = cs_store_submit_fields(st, fl, json, json_len, now_unix_ms, NULL, out, detail, detail_len);
    else
        e = cs_store_submit_raw(st, ev, json, json_len, now_unix_ms, NULL, out, detail, detail_len);
    st->inserting = 0;
    return e;
}

/* ---- the seam: observer, seq step, replay ---- */

void cs_store_set_observer(cs_store_t *st, const cs_store_observer_t *obs)
{
    if (obs != NULL)
        st->obs = *obs;
    else
        memset(&st->obs, 0, sizeof(st->obs));
}

void cs_store_set_sequencer(cs_store_t *st, const cs_store_sequencer_t *seqr)
{
    if (seqr != NULL)
        st->seqr = *seqr;
    else
        memset(&st->seqr, 0, sizeof(st->seqr));
}

#define REPLAY_FAIL(...)                                                                                     \
    do {                                                                                                     \
        snprintf(detail, detail_len, __VA_ARGS__);                                                           \
        return -1;                                                                                           \
    } while (0)

/* Stores the event of a CS_CHANGE_PUBLISH record as it was: its JSON, seq and time. */
static int replay_publish(cs_store_t *st, cs_exec_t *ex, const cs_change_t *c, char *detail,
                          size_t detail_len)
{
    cs_event_fields_t fl = {.execution_id = c->exec,
                            .execution_id_len = c->exec_len,
                            .type = c->type,
                            .type_len = c->type_len,
                            .event_id = c->event_id,
                            .event_id_len = c->event_id_len};
    cs_publish_t out;
    const char *body;
    size_t body_len;
    json_t *ev;
    cs_err_t e;

    if (c->seq < ex->next_seq || c->gseq < st->gnext)
        REPLAY_FAIL("%.*s: seq %llu (global %llu) after %llu (global %llu)", (int)c->exec_len, c->exec,
                    (unsigned long long)c->seq, (unsigned long long)c->gseq, (unsigned long long)ex->next_seq,
                    (unsigned long long)st->gnext);
    if (c->type == NULL || c->type_len == 0 || c->json == NULL ||
        !raw_line(c->json, c->json_len, &body, &body_len))
        REPLAY_FAIL("%.*s: seq %llu: no type, or not one JSON object on one line", (int)c->exec_len, c->exec,
                    (unsigned long long)c->seq);
    /* An event the status and the human-input circle do not read is stored from its bytes, as the ingest's
     * fast path does (cs_store_publish_fields): no parse, which is most of a replay's time. */
    ev = NULL;
    if (cs_status_reads_type(c->type, c->type_len)) {
        ev = json_loadb(c->json, c->json_len, 0, NULL);
        if (ev == NULL)
            REPLAY_FAIL("%.*s: seq %llu: JSON that does not parse", (int)c->exec_len, c->exec,
                        (unsigned long long)c->seq);
        fl.timestamp = string_member(ev, "timestamp", &fl.timestamp_len);
    }
    /* A hole in the global ring (records lost before this one): what it held before goes, a resume into
     * it gets stream.gap. (A hole in the execution's ring: publish_event, as for a sequencer's seq.) */
    if (c->gseq > st->gnext) {
        while (st->gnext > st->gfirst)
            global_evict_oldest(st);
        st->gfirst = st->gnext = c->gseq;
    }
    memset(&out, 0, sizeof(out));
    st->replaying = 1;
    st->replay_seq = c->seq;
    st->replay_ex = ex;
    st->replay_unix_now = cs_unix_ms();
    e = publish_event(st, &fl, ev, body, body_len, c->unix_ms, &out, detail, detail_len);
    st->replaying = 0;
    st->replay_ex = NULL;
    json_decref(ev);
    if (e == CS_OK && c->event_id != NULL) {
        /* A request opened by a replayed event was opened when its record says. */
        cs_hitl_req_t *r = cs_hitl_find(&ex->hitl, c->event_id);
        if (r != NULL && r->seq == c->seq)
            r->unix_ms = c->unix_ms;
    }
    return e == CS_OK ? 0 : -1;
}

/* Empties the store (a snapshot replaces everything): no subscriber may be open. */
static void store_reset(cs_store_t *st)
{
    cs_exec_t *ex, *tmp;

    while (st->gnext > st->gfirst)
        global_evict_oldest(st);
    HASH_ITER(hh, st->execs, ex, tmp)
    {
        ex->n_subs = 0;
        exec_free(st, ex);
    }
}

/* The counters a snapshot carries beside the rings (SNAP_BEGIN's JSON). */
static int snap_counters(cs_store_t *st, const cs_change_t *c, int set, char *detail, size_t detail_len)
{
    json_t *o = c->json != NULL ? json_loadb(c->json, c->json_len, 0, NULL) : NULL;
    json_t *fo = json_object_get(o, "first_orders"), *ticks = json_object_get(o, "ticks");
    int ok = json_is_integer(fo) && (ticks == NULL || json_is_integer(ticks));

    if (ok && set) {
        st->first_orders = (uint64_t)json_integer_value(fo);
        if (ticks != NULL)
            st->lru_ticks = (uint64_t)json_integer_value(ticks); /* the live appends go on from there */
    } else if (ok && (uint64_t)json_integer_value(fo) > st->first_orders) {
        /* The end's, after the live records amid the snapshot: the same, but where an execution the
         * snapshot does not keep (only subscribers watched it) was published to meanwhile: its replay
         * begins it again, as its first event. The order only needs to grow. */
        st->first_orders = (uint64_t)json_integer_value(fo);
    }
    json_decref(o);
    if (!ok)
        REPLAY_FAIL("snapshot: counters unreadable");
    return 0;
}

/* An execution's whole state but its frames (EXEC_STATE's JSON). */
static char *exec_state_json(const cs_store_t *st, const cs_exec_t *ex, uint64_t first_seq)
{
    const cs_progress_t *pg = &ex->state.progress;
    json_t *reqs = json_array();
    json_t *o = json_pack(
        "{s:I, s:I, s:I, s:I, s:I, s:I, s:i, s:i, s:I, s:i, s:i, s:[i,i,i,i,i,i,i,i], s:O?, s:I, s:s?, s:o, "
        "s:I}",
        "created", (json_int_t)ex->created_unix_ms, "first", (json_int_t)ex->first_unix_ms, "last",
        (json_int_t)ex->last_unix_ms, "order", (json_int_t)ex->first_order, "first_seq",
        (json_int_t)first_seq, "ring_cap", (json_int_t)ex->ring_cap, "finished", ex->finished, "where",
        exec_where(st, ex), "fin_ago", (json_int_t)(ex->finished ? st->now_mono - ex->finished_mono_ms : 0),
        "status", (int)ex->state.status, "in_flow", ex->state.in_flow, "progress", (int)pg->tasks_seen,
        (int)pg->tasks_done, (int)pg->tasks_failed, (int)pg->agents_seen, (int)pg->agents_done,
        (int)pg->agents_failed, (int)pg->tool_calls, (int)pg->tool_errors, "result", ex->state.result,
        "result_bytes", (json_int_t)ex->result_bytes, "error", ex->state.error_message, "reqs", reqs, "tick",
        (json_int_t)ex->lru_tick);
    char *out;

    if (o == NULL)
        return NULL;
    for (const cs_hitl_req_t *r = ex->hitl.reqs; r != NULL; r = r->next) {
        json_t *q = json_pack("{s:s, s:s?, s:I, s:I, s:b, s:O?, s:I, s:s?}", "event_id", r->event_id,
                              "task_id", r->task_id, "seq", (json_int_t)r->seq, "unix_ms",
                              (json_int_t)r->unix_ms, "answered", r->answered, "request", r->request,
                              "request_bytes", (json_int_t)r->request_bytes, "push", r->push);
        if (q == NULL || json_array_append_new(reqs, q) != 0) {
            json_decref(o);
            return NULL;
        }
    }
    out = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return out;
}

/* EXEC_STATE: the execution begun with that state, listed where it was (records come in list order). */
static int replay_exec_state(cs_store_t *st, cs_exec_t *ex, const cs_change_t *c, char *detail,
                             size_t detail_len)
{
    json_t *o = c->json != NULL ? json_loadb(c->json, c->json_len, 0, NULL) : NULL, *pg = NULL, *reqs = NULL;
    json_int_t fs = 0, cap = 0, where = 0, fin_ago = 0, rb = 0;
    int finished = 0, status = 0, in_flow = 0, bad;
    json_t *result = NULL, *errv = NULL;
    const char *error;
    json_int_t created = 0, first = 0, last = 0, order = 0, tick = 0;
    size_t max_cap = st->lim.ring_events; /* as exec_new and growth bound it */

    bad = o == NULL ||
          json_unpack(o,
                      "{s:I, s:I, s:I, s:I, s:I, s:I, s:i, s:I, s:I, s:i, s:i, s:o, s?o, s:I, s?o, s:o, s?I}",
                      "created", &created, "first", &first, "last", &last, "order", &order, "first_seq", &fs,
                      "ring_cap", &cap, "finished", &finished, "where", &where, "fin_ago", &fin_ago, "status",
                      &status, "in_flow", &in_flow, "progress", &pg, "result", &result, "result_bytes", &rb,
                      "error", &errv, "reqs", &reqs, "tick", &tick) != 0;
    error = json_string_value(errv);
    bad = bad || !json_is_array(pg) || json_array_size(pg) != 8 || !json_is_array(reqs) || fs < 1 ||
          cap < 1 || where < 0 || where > ON_FINISHED || (where == ON_ACTIVE && finished) || status < 0 ||
          status > CS_EXEC_CANCELED || rb < 0 || tick < 0;
    if (bad) {
        json_decref(o);
        REPLAY_FAIL("%.*s: snapshot state unreadable", (int)c->exec_len, c->exec);
    }
    if (ex != NULL) {
        ex->n_subs = 0;
        exec_free(st, ex);
    }
    if ((size_t)cap > max_cap)
        cap = (json_int_t)max_cap;  /* store.ring_events was lowered: the oldest frames go (SNAP_FRAME) */
    uint64_t ticks = st->lru_ticks; /* exec_new's listing is undone below: it takes no tick */
    ex = exec_new(st, c->exec, c->exec_len, c->epoch, (int64_t)created);
    if (ex == NULL || ((size_t)cap != ex->ring_cap && exec_resize(st, ex, (size_t)cap) != 0)) {
        json_decref(o);
        REPLAY_FAIL("out of memory");
    }
    ex->first_unix_ms = (int64_t)first;
    ex->last_unix_ms = (int64_t)last;
    ex->first_order = (uint64_t)order;
    ex->first_seq = ex->next_seq = (uint64_t)fs;
    ex->state.status = (cs_exec_status_t)status;
    ex->state.in_flow = in_flow;
    uint32_t *pv[8] = {&ex->state.progress.tasks_seen,   &ex->state.progress.tasks_done,
                       &ex->state.progress.tasks_failed, &ex->state.progress.agents_seen,
                       &ex->state.progress.agents_done,  &ex->state.progress.agents_failed,
                       &ex->state.progress.tool_calls,   &ex->state.progress.tool_errors};
    for (size_t i = 0; i < 8; i++)
        *pv[i] = (uint32_t)json_integer_value(json_array_get(pg, i));
    if (result != NULL && !json_is_null(result))
        ex->state.result = json_incref(result);
    if (error != NULL)
        ex->state.error_message = strdup(error);
    ex->result_bytes = (size_t)rb;
    ex->status_bytes = status_held(ex);
    st->bytes += ex->status_bytes;
    exec_unlist(st, ex); /* exec_new listed it active */
    st->lru_ticks = ticks;
    ex->finished = finished != 0;
    /* Listed with its tick (a snapshot written across turns does not write them in list order: sorted at
     * its end); a record without one (an older journal) in record order. */
    if (where == ON_FINISHED && ex->finished) {
        /* Retention goes on from when it finished: the snapshot's age plus its own. */
        ex->finished_mono_ms = st->now_mono - (cs_unix_ms() - c->unix_ms) - (int64_t)fin_ago;
        list_append(st, ex, ON_FINISHED, (uint64_t)tick);
    } else if (where == ON_ACTIVE) {
        list_append(st, ex, ON_ACTIVE, (uint64_t)tick);
    }
    /* Its human-input requests, oldest first (the open ones keep their order). */
    size_t hb = ex->hitl.bytes, ob = ex->hitl.open_bytes, on = ex->hitl.n_open, i;
    json_t *q;
    json_array_foreach(reqs, i, q)
    {
        const char *eid = json_string_value(json_object_get(q, "event_id"));
        json_t *req = json_object_get(q, "request");
        json_int_t qrb = json_integer_value(json_object_get(q, "request_bytes"));
        const char *push = json_string_value(json_object_get(q, "push"));
        int answered = json_is_true(json_object_get(q, "answered"));
        json_t *ev = json_is_object(req) ? json_incref(req)
                                         : json_pack("{s:s?, s:O?}", "event_id", eid, "task_id",
                                                     json_object_get(q, "task_id"));
        uint64_t rseq = (uint64_t)json_integer_value(json_object_get(q, "seq"));
        int rc = ev == NULL || eid == NULL || (answered && push == NULL) || qrb < 0 || (answered && qrb != 0)
                     ? -1
                     : cs_hitl_on_request(&ex->hitl, ev, rseq, (size_t)qrb / 2);
        json_decref(ev);
        if (rc != 0)
            continue; /* the count below tells */
        cs_hitl_req_t *r = cs_hitl_find(&ex->hitl, eid);
        r->unix_ms = (int64_t)json_integer_value(json_object_get(q, "unix_ms"));
        if (answered) {
            char *p = strdup(push);
            if (p != NULL)
                cs_hitl_answer(&ex->hitl, r, p, strlen(p));
        }
    }
    st->bytes = st->bytes - hb + ex->hitl.bytes;
    st->open_bytes = st->open_bytes - ob + ex->hitl.open_bytes;
    st->open_reqs = st->open_reqs - on + ex->hitl.n_open;
    exec_pin_update(st, ex);
    size_t n_reqs = json_array_size(reqs);
    json_decref(o);
    if (ex->hitl.n != n_reqs)
        REPLAY_FAIL("%.*s: snapshot requests unreadable", (int)c->exec_len, c->exec);
    return 0;
}

/* SNAP_FRAME: a retained frame, into its execution's ring (after the ones before it) and/or into its
 * slot of the global ring; nothing else (its status, requests and times came with EXEC_STATE). */
static int replay_snap_frame(cs_store_t *st, cs_exec_t *ex, const cs_change_t *c, char *detail,
                             size_t detail_len)
{
    int in_exec = (c->status & 1) != 0, in_global = (c->status & 2) != 0;
    cs_frame_t *f;

    if (!st->snapping || c->json == NULL || c->type == NULL || c->event_id == NULL ||
        (!in_exec && !in_global) || (c->status & ~3) != 0 ||
        (in_exec && (ex == NULL || c->seq != ex->next_seq)) ||
        (in_global &&
         (c->gseq >= st->snap_gnext || (c->gseq >= st->gfirst && st->gring[c->gseq % st->gcap] != NULL))))
        REPLAY_FAIL("snapshot frame %.*s seq %llu (global %llu) does not fit", (int)c->exec_len,
                    c->exec != NULL ? c->exec : "", (unsigned long long)c->seq, (unsigned long long)c->gseq);
    if (in_global && c->gseq < st->gfirst) {
        /* store.global_events was lowered: the global ring keeps its newest. */
        in_global = 0;
        if (!in_exec)
            return 0;
    }
    f = frame_new(st, ex != NULL ? ex->epoch : 0, c->json, c->json_len, "", 0, c->type, c->type_len,
                  c->event_id, c->event_id_len, c->seq, c->gseq);
    if (f == NULL)
        REPLAY_FAIL("out of memory");
    /* store.ring_events or ring_bytes lowered since the snapshot: its oldest frames go, as a publish's do
     * (the newest is always kept). */
    while (in_exec && exec_count(ex) > 0 &&
           (exec_count(ex) >= ex->ring_cap || ex->bytes + f->bytes > st->lim.ring_bytes))
        exec_evict_oldest(st, ex);
    if (in_exec) {
        ring_push(ex, f);
        exec_pin_update(st, ex);
    }
    if (in_global) {
        st->gring[f->gseq % st->gcap] = in_exec ? cs_frame_ref(f) : f;
        f->in_global = 1;
    }
    return 0;
}

static int tick_cmp(const cs_exec_t *a, const cs_exec_t *b)
{
    return a->lru_tick < b->lru_tick ? -1 : a->lru_tick > b->lru_tick;
}

/* The lists in tick order again (a replayed snapshot listed executions out of it). */
static void snap_sort_lists(cs_store_t *st)
{
    if (!st->lists_unsorted)
        return;
    DL_SORT2(st->active, tick_cmp, lru_prev, lru_next);
    DL_SORT2(st->finished, tick_cmp, lru_prev, lru_next);
    st->lists_unsorted = 0;
}

/* A snapshot's end: every slot of the global ring holds its frame. One that does not (a record lost) is
 * repaired as a hole: the ring's history up to it goes (a resume into it gets stream.gap). */
static int global_holes(cs_store_t *st, char *detail, size_t detail_len)
{
    uint64_t last = 0;

    for (uint64_t g = st->gfirst; g < st->gnext; g++)
        if (st->gring[g % st->gcap] == NULL)
            last = g + 1;
    if (last == 0)
        return 0;
    while (st->gfirst < last)
        global_evict_oldest(st);
    REPLAY_FAIL("snapshot end: global frames before %llu missing", (unsigned long long)last);
}

static int replay_snapshot(cs_store_t *st, cs_exec_t *ex, const cs_change_t *c, char *detail,
                           size_t detail_len)
{
    switch (c->kind) {
    case CS_CHANGE_SNAP_BEGIN:
        if (c->epoch == 0 || c->seq == 0 || c->gseq < c->seq)
            REPLAY_FAIL("snapshot: global ring [%llu, %llu) of epoch %llu", (unsigned long long)c->seq,
                        (unsigned long long)c->gseq, (unsigned long long)c->epoch);
        store_reset(st);
        st->gepoch = c->epoch;
        /* A global ring larger than store.global_events now: its oldest frames are left out. Its slots
         * [gfirst, gnext) stay empty until their frames come (SNAP_FRAME); the live records written
         * meanwhile (a snapshot written across loop turns) append after them, or let them go. */
        st->gfirst = c->gseq - c->seq > st->gcap ? c->gseq - st->gcap : c->seq;
        st->gnext = c->gseq;
        st->snap_gfirst = c->seq;
        st->snap_gnext = c->gseq;
        st->snapping = 1;
        return snap_counters(st, c, 1, detail, detail_len);
    case CS_CHANGE_EXEC_STATE:
        if (!st->snapping)
            REPLAY_FAIL("snapshot state outside a snapshot");
        return replay_exec_state(st, ex, c, detail, detail_len);
    case CS_CHANGE_SNAP_FRAME:
        return replay_snap_frame(st, ex, c, detail, detail_len);
    case CS_CHANGE_SNAP_END:
        if (!st->snapping || c->epoch != st->gepoch || c->seq != st->snap_gfirst || c->gseq != st->snap_gnext)
            REPLAY_FAIL("snapshot end: global ring [%llu, %llu) of epoch %llu does not close the snapshot",
                        (unsigned long long)c->seq, (unsigned long long)c->gseq,
                        (unsigned long long)c->epoch);
        st->snapping = 0;
        snap_sort_lists(st);
        if (global_holes(st, detail, detail_len) != 0)
            return -1;
        return snap_counters(st, c, 0, detail, detail_len);
    default:
        break;
    }
    REPLAY_FAIL("record %d: not a snapshot's", (int)c->kind);
}

/* Kept in a snapshot: what has a history and is listed, or is pinned by an open request (an execution
 * kept only for its subscribers has none after a restart). */
static int snap_keeps(const cs_store_t *st, const cs_exec_t *ex)
{
    return exec_has_history(ex) && (exec_where(st, ex) != ON_NONE || exec_pinned(ex));
}

static void sw_free(cs_store_t *st)
{
    if (st->sw == NULL)
        return;
    free(st->sw->gbits);
    free(st->sw);
    st->sw = NULL;
}

/* One record of the snapshot (its bytes, roughly, count against the step's budget). */
static int sw_emit(cs_store_t *st, const cs_change_t *c)
{
    st->sw->emitted += 64 + c->exec_len + c->event_id_len + c->type_len + c->json_len;
    return st->sw->fn(st->sw->data, c);
}

/* Global seq g's frame was carried by its execution's records (or goes in the global part). */
static int sw_gbit(const struct snapw *sw, uint64_t g, int set)
{
    if (g < sw->gfirst || g >= sw->gnext)
        return 0;
    uint64_t i = g - sw->gfirst;
    if (set)
        sw->gbits[i >> 3] |= (uint8_t)(1u << (i & 7));
    return (sw->gbits[i >> 3] >> (i & 7)) & 1;
}

/* Writes ex (once per snapshot) as the change about to happen leaves it: its state, with frames from seq
 * from on (its first_seq: as it is; next_seq: none, its history is about to go). Nothing for an execution
 * a snapshot does not keep. */
static int sw_exec(cs_store_t *st, cs_exec_t *ex, uint64_t from)
{
    struct snapw *sw = st->sw;
    char *js;
    int rc;

    ex->snap_gen = sw->gen;
    if (!snap_keeps(st, ex))
        return 0;
    if (from < ex->first_seq || from > ex->next_seq)
        from = ex->first_seq;
    js = exec_state_json(st, ex, from);
    if (js == NULL)
        return -ENOMEM;
    cs_change_t c = {.kind = CS_CHANGE_EXEC_STATE,
                     .exec = ex->id,
                     .exec_len = ex->id_len,
                     .epoch = ex->epoch,
                     .json = js,
                     .json_len = strlen(js),
                     .unix_ms = cs_unix_ms()};
    rc = sw_emit(st, &c);
    free(js);
    for (uint64_t s = from; rc == 0 && s < ex->next_seq; s++) {
        const cs_frame_t *f = ex->ring[s % ex->ring_cap];
        cs_change_t fc = frame_change(CS_CHANGE_SNAP_FRAME, f, ex);
        fc.status = 1 | (f->in_global ? 2 : 0);
        if (f->in_global)
            (void)sw_gbit(sw, f->gseq, 1);
        rc = sw_emit(st, &fc);
    }
    return rc;
}

/* Copy-on-write: before a change touches ex, the snapshot in progress writes it if it has not (from: as
 * for sw_exec; SW_GOING: it is about to be freed, nothing to write). A failure gives the snapshot up (the
 * next step says so). */
static void snapw_touch(cs_store_t *st, cs_exec_t *ex, uint64_t from)
{
    struct snapw *sw = st->sw;

    if (sw == NULL || sw->err != 0 || ex->snap_gen == sw->gen)
        return;
    if (from == SW_GOING) {
        ex->snap_gen = sw->gen;
        return;
    }
    int rc = sw_exec(st, ex, from);
    if (rc != 0)
        sw->err = rc;
}

static int sw_counters(const cs_store_t *st, char *buf, size_t len)
{
    return snprintf(buf, len, "{\"first_orders\":%llu,\"ticks\":%llu}", (unsigned long long)st->first_orders,
                    (unsigned long long)st->lru_ticks);
}

int cs_store_snap_begin(cs_store_t *st, int (*fn)(void *data, const cs_change_t *c), void *data)
{
    struct snapw *sw;
    char counters[96];

    if (st->sw != NULL)
        return -EBUSY;
    snap_sort_lists(st); /* after a replay that ended inside a snapshot: the walk needs tick order */
    sw = calloc(1, sizeof(*sw));
    if (sw == NULL || (sw->gbits = calloc((size_t)((st->gnext - st->gfirst) / 8 + 1), 1)) == NULL) {
        free(sw);
        return -ENOMEM;
    }
    sw->fn = fn;
    sw->data = data;
    sw->gen = ++snap_gens;
    sw->tick0 = st->lru_ticks + 1;
    sw->phase = SW_ACTIVE;
    sw->cur = st->active;
    sw->epoch = st->gepoch;
    sw->gfirst = st->gfirst;
    sw->gnext = st->gnext;
    st->sw = sw;
    int n = sw_counters(st, counters, sizeof(counters));
    cs_change_t b = {.kind = CS_CHANGE_SNAP_BEGIN,
                     .epoch = sw->epoch,
                     .seq = sw->gfirst,
                     .gseq = sw->gnext,
                     .json = counters,
                     .json_len = (size_t)n,
                     .unix_ms = cs_unix_ms()};
    int rc = sw_emit(st, &b);
    if (rc != 0)
        sw_free(st);
    return rc;
}

/* Executions looked at per step at most (most may be written already, or not kept). */
#define SW_NODES 4096

int cs_store_snap_step(cs_store_t *st, size_t budget)
{
    struct snapw *sw = st->sw;
    size_t nodes = 0;
    int rc = 0;

    if (sw == NULL)
        return -ECANCELED;
    if (sw->err != 0) {
        rc = sw->err;
        sw_free(st);
        return rc;
    }
    sw->emitted = 0;
    while (sw->emitted < budget && (nodes++ < SW_NODES || budget == SIZE_MAX)) {
        cs_exec_t *ex = sw->cur;
        switch (sw->phase) {
        case SW_ACTIVE:
        case SW_FINISHED:
            /* Up to the first listed since the begin: from there on every one was (a list is in tick
             * order), each begun or written (touched) since. */
            if (ex == NULL || ex->lru_tick >= sw->tick0) {
                sw->phase++;
                if (sw->phase == SW_FINISHED)
                    sw->cur = st->finished;
                else
                    sw->cur = st->n_listed < HASH_COUNT(st->execs) ? st->execs : NULL;
                continue;
            }
            sw->cur = ex->lru_next;
            if (ex->snap_gen != sw->gen)
                rc = sw_exec(st, ex, ex->first_seq);
            break;
        case SW_UNLISTED:
            if (ex == NULL) {
                sw->phase = SW_GLOBAL;
                sw->g = sw->gfirst;
                continue;
            }
            sw->cur = ex->hh.next;
            if (ex->snap_gen != sw->gen && exec_where(st, ex) == ON_NONE)
                rc = sw_exec(st, ex, ex->first_seq);
            break;
        case SW_GLOBAL: {
            /* The frames no execution's records carried (their execution's ring let them go, or it is not
             * kept); those the ring let go meanwhile are not written. */
            if (sw->g < st->gfirst)
                sw->g = st->gfirst;
            if (sw->g >= sw->gnext) {
                sw->phase = SW_END;
                continue;
            }
            uint64_t g = sw->g++;
            const cs_frame_t *f = st->gring[g % st->gcap];
            if (!sw_gbit(sw, g, 0)) {
                cs_change_t fc = frame_change(CS_CHANGE_SNAP_FRAME, f, f->in_exec ? f->exec : NULL);
                fc.status = 2;
                rc = sw_emit(st, &fc);
            }
            break;
        }
        default: {
            char counters[96];
            int n = sw_counters(st, counters, sizeof(counters));
            cs_change_t e = {.kind = CS_CHANGE_SNAP_END,
                             .epoch = sw->epoch,
                             .seq = sw->gfirst,
                             .gseq = sw->gnext,
                             .json = counters,
                             .json_len = (size_t)n,
                             .unix_ms = cs_unix_ms()};
            rc = sw_emit(st, &e);
            sw_free(st);
            return rc;
        }
        }
        if (rc != 0) {
            sw_free(st);
            return rc;
        }
    }
    return 1;
}

void cs_store_snap_abort(cs_store_t *st)
{
    sw_free(st);
}

int cs_store_snap_active(const cs_store_t *st)
{
    return st->sw != NULL;
}

int cs_store_snapshot(cs_store_t *st, int (*fn)(void *data, const cs_change_t *c), void *data)
{
    int rc = cs_store_snap_begin(st, fn, data);

    while (rc == 0 && (rc = cs_store_snap_step(st, SIZE_MAX)) == 1)
        rc = 0;
    return rc;
}

void cs_store_set_refusal(cs_store_t *st, cs_err_t e, const char *detail)
{
    st->gate = e;
    snprintf(st->gate_detail, sizeof(st->gate_detail), "%s", detail != NULL ? detail : "");
}

int cs_store_replay(cs_store_t *st, const cs_change_t *c, char *detail, size_t detail_len)
{
    cs_exec_t *ex = st->replay_last;
    cs_hitl_req_t *r;

    /* Records come in runs of one execution: the last one's is compared before the hash is asked. */
    if (c->exec == NULL)
        ex = NULL;
    else if (ex == NULL || ex->id_len != c->exec_len || memcmp(ex->id, c->exec, c->exec_len) != 0)
        ex = st->replay_last = cs_store_find(st, c->exec, c->exec_len);

    if (ex == NULL && c->exec != NULL) {
        switch (c->kind) {
        case CS_CHANGE_PUBLISH:
            /* A hole lost its EXEC_NEW: begun now, with a new epoch (cursors into the loss get a gap). */
            ex = exec_new(st, c->exec, c->exec_len, 0, c->unix_ms);
            if (ex == NULL)
                REPLAY_FAIL("out of memory");
            break;
        case CS_CHANGE_EVICT:
        case CS_CHANGE_EXPIRED:
        case CS_CHANGE_FREED:
            return 0; /* gone already (a hole lost it, or never held it): nothing to undo */
        case CS_CHANGE_EXEC_NEW:
        case CS_CHANGE_EXEC_STATE:
        case CS_CHANGE_SNAP_FRAME:
            break;
        default:
            REPLAY_FAIL("record %d: no execution \"%.*s\"", (int)c->kind, (int)c->exec_len, c->exec);
        }
    }
    if (ex == NULL && c->exec == NULL && c->kind != CS_CHANGE_GLOBAL_EVICT &&
        c->kind != CS_CHANGE_SNAP_BEGIN && c->kind != CS_CHANGE_SNAP_END && c->kind != CS_CHANGE_SNAP_FRAME)
        REPLAY_FAIL("record %d without an execution", (int)c->kind);
    switch (c->kind) {
    case CS_CHANGE_EXEC_NEW:
        if (ex != NULL) {
            /* Begun again: its FREED was lost in a hole (a whole journal never says this twice). */
            ex->n_subs = 0;
            exec_free(st, ex);
        }
        return exec_new(st, c->exec, c->exec_len, c->epoch, c->unix_ms) != NULL ? 0 : -1;
    case CS_CHANGE_PUBLISH:
        return replay_publish(st, ex, c, detail, detail_len);
    case CS_CHANGE_GLOBAL_APPEND: {
        const cs_frame_t *f = st->gnext > st->gfirst ? st->gring[(st->gnext - 1) % st->gcap] : NULL;
        if (f == NULL || f->gseq != c->gseq || f->seq != c->seq)
            REPLAY_FAIL("global %llu is not seq %llu of %.*s", (unsigned long long)c->gseq,
                        (unsigned long long)c->seq, (int)c->exec_len, c->exec);
        return 0;
    }
    case CS_CHANGE_EVICT:
        /* Idempotent: a publish's own ring bound may have let the frame go already. Past the oldest (the
         * evictions between were lost in a hole): up to it. */
        if (c->seq < ex->first_seq)
            return 0;
        if (c->seq >= ex->next_seq)
            REPLAY_FAIL("%.*s: evict seq %llu, oldest %llu", (int)c->exec_len, c->exec,
                        (unsigned long long)c->seq, (unsigned long long)ex->first_seq);
        while (ex->first_seq <= c->seq)
            exec_evict_oldest(st, ex);
        return 0;
    case CS_CHANGE_GLOBAL_EVICT:
        if (c->gseq < st->gfirst)
            return 0;
        if (c->gseq >= st->gnext)
            REPLAY_FAIL("evict global %llu, oldest %llu", (unsigned long long)c->gseq,
                        (unsigned long long)st->gfirst);
        while (st->gfirst <= c->gseq)
            global_evict_oldest(st);
        return 0;
    case CS_CHANGE_REQUEST_OPENED:
    case CS_CHANGE_REQUEST_ANSWERED: {
        char id[CS_EVENT_ID_MAX + 1];
        snprintf(id, sizeof(id), "%.*s", (int)c->event_id_len, c->event_id);
        r = cs_hitl_find(&ex->hitl, id);
        if (r == NULL || r->answered != (c->kind == CS_CHANGE_REQUEST_ANSWERED))
            REPLAY_FAIL("%.*s: request %s is not %s", (int)c->exec_len, c->exec, id,
                        c->kind == CS_CHANGE_REQUEST_OPENED ? "open" : "answered");
        return 0;
    }
    case CS_CHANGE_FINISHED:
        if (ex->finished != cs_status_is_final(c->status) || (int)ex->state.status != c->status)
            REPLAY_FAIL("%.*s: status %s, the record says %s", (int)c->exec_len, c->exec,
                        cs_status_name(ex->state.status), cs_status_name((cs_exec_status_t)c->status));
        return 0;
    case CS_CHANGE_EXPIRED:
        exec_drop_history(st, ex);
        exec_unlist(st, ex);
        st->expired++;
        return 0;
    case CS_CHANGE_FREED:
        ex->n_subs = 0; /* nobody watches a store being replayed */
        exec_free(st, ex);
        return 0;
    case CS_CHANGE_SNAP_BEGIN:
    case CS_CHANGE_EXEC_STATE:
    case CS_CHANGE_SNAP_FRAME:
    case CS_CHANGE_SNAP_END:
        return replay_snapshot(st, ex, c, detail, detail_len);
    }
    REPLAY_FAIL("unknown record %d", (int)c->kind);
}

/* ---- human input ---- */

cs_hitl_req_t *cs_store_find_request(cs_store_t *st, const char *id, size_t id_len, const char *event_id,
                                     char *detail, size_t detail_len)
{
    cs_hitl_t *h = cs_store_requests(st, id, id_len, detail, detail_len);
    cs_hitl_req_t *r;

    if (h == NULL)
        return NULL;
    r = cs_hitl_find(h, event_id);
    if (r == NULL)
        snprintf(detail, detail_len, "no human_input_required with event_id \"%.128s\" in this execution",
                 event_id);
    return r;
}

cs_hitl_t *cs_store_requests(cs_store_t *st, const char *id, size_t id_len, char *detail, size_t detail_len)
{
    cs_exec_t *ex = cs_store_find(st, id, id_len);

    if (ex == NULL || !exec_has_history(ex)) {
        snprintf(detail, detail_len, "no execution \"%.*s\"", (int)id_len, id);
        return NULL;
    }
    return &ex->hitl;
}

/* ---- an execution, read from outside ---- */

const char *cs_exec_id(const cs_exec_t *ex, size_t *len)
{
    if (len != NULL)
        *len = ex->id_len;
    return ex->id;
}

cs_exec_status_t cs_exec_status(const cs_exec_t *ex)
{
    return cs_status_state(&ex->state);
}

uint64_t cs_exec_first_order(const cs_exec_t *ex)
{
    return ex->first_order;
}

cs_hitl_t *cs_exec_requests(cs_exec_t *ex)
{
    return &ex->hitl;
}

uint64_t cs_exec_epoch(const cs_exec_t *ex)
{
    return ex->epoch;
}

void cs_exec_seqs(const cs_exec_t *ex, uint64_t *first, uint64_t *next)
{
    *first = ex->first_seq;
    *next = ex->next_seq;
}

/* ---- status ---- */

json_t *cs_exec_status_json(const cs_exec_t *ex)
{
    cs_status_view_t v = {.id = ex->id,
                          .id_len = ex->id_len,
                          .created_unix_ms = ex->created_unix_ms,
                          .first_unix_ms = ex->first_unix_ms,
                          .last_unix_ms = ex->last_unix_ms,
                          .last_seq = ex->next_seq - 1};

    return cs_status_json(&ex->state, &v, cs_hitl_pending_json(&ex->hitl));
}

json_t *cs_store_status_json(cs_store_t *st, const char *id, size_t id_len, int seed)
{
    const cs_exec_t *ex = cs_store_find(st, id, id_len);

    if (ex == NULL || !exec_has_history(ex)) {
        /* No event yet (or none retained past retain_s): pending, as a status poll right after a
         * kickoff expects (SPEC §2), not an error. */
        cs_status_view_t v = {.id = id, .id_len = id_len};
        return seed ? cs_status_seed_json(NULL, id, id_len) : cs_status_json(NULL, &v, NULL);
    }
    return seed ? cs_status_seed_json(&ex->state, ex->id, ex->id_len) : cs_exec_status_json(ex);
}

/* ---- subscribers ---- */

static void sub_set_gap(cs_sub_t *sub, const char *requested, size_t len, uint64_t first)
{
    if (len > sizeof(sub->gap_requested) - 1)
        len = sizeof(sub->gap_requested) - 1;
    memcpy(sub->gap_requested, requested, len);
    sub->gap_requested[len] = '\0';
    sub->gap_first = first;
    sub->gap_pending = 1;
}

/* Positions sub after seq n of a sequence whose retained part is [first, next). */
static void sub_after_seq(cs_sub_t *sub, uint64_t n, uint64_t first, uint64_t next, const char *req,
                          size_t req_len)
{
    if (n >= next || n + 1 < first) {
        /* Ahead of what exists (a history this daemon no longer has), or behind what is retained. */
        sub_set_gap(sub, req, req_len, first);
        sub->next = first;
    } else {
        sub->next = n + 1;
    }
}

/*
 * Where sub starts (cs_sub_open, and again for a held one given older history: cs_sub_release): first..next
 * are what it can be handed (the ring, and that history), epoch the one its cursors name. An event_id is
 * looked for in that history, then in the ring (the global ring for the global stream); a cursor of
 * another epoch, or an id found nowhere, is a stream.gap before first.
 */
static void sub_position(cs_sub_t *sub, const cs_start_t *start, uint64_t epoch, uint64_t first,
                         uint64_t next)
{
    cs_store_t *st = sub->store;
    cs_exec_t *ex = sub->exec;
    cs_frame_t *f = NULL;
    uint64_t cep, n;

    switch (start->kind) {
    case CS_START_HISTORY:
        sub->next = first;
        break;
    case CS_START_NOW:
        sub->next = next;
        break;
    case CS_START_AFTER_SEQ: {
        char req[24];
        int l = snprintf(req, sizeof(req), "%llu", (unsigned long long)start->seq);
        sub_after_seq(sub, start->seq, first, next, req, (size_t)l);
        break;
    }
    case CS_START_AFTER_ID:
        if (cs_cursor_parse(start->id, start->id_len, &cep, &n) == 0) {
            if (cep == epoch) {
                sub_after_seq(sub, n, first, next, start->id, start->id_len);
            } else {
                sub_set_gap(sub, start->id, start->id_len, first);
                sub->next = first;
            }
            break;
        }
        for (size_t i = 0; i < sub->hist_n && f == NULL; i++)
            if (sub->hist[i]->event_id_len == start->id_len &&
                memcmp(sub->hist[i]->event_id, start->id, start->id_len) == 0)
                f = sub->hist[i];
        if (f == NULL && ex != NULL)
            f = cs_exec_find_event(ex, start->id, start->id_len);
        if (f != NULL) {
            sub->next = f->seq + 1;
        } else if (ex == NULL && (f = global_find_event(st, start->id, start->id_len)) != NULL) {
            sub->next = f->gseq + 1;
        } else if (cs_seq_parse(start->id, start->id_len, &n) == 0) {
            sub_after_seq(sub, n, first, next, start->id, start->id_len);
        } else {
            sub_set_gap(sub, start->id, start->id_len, first);
            sub->next = first;
        }
        break;
    }
}

int cs_sub_open(cs_store_t *st, cs_sub_t *sub, const char *execution_id, size_t id_len,
                const cs_start_t *start, cs_filter_t *filter, const cs_sub_ops_t *ops, void *data)
{
    uint64_t epoch, first, next;
    cs_exec_t *ex = NULL;

    memset(sub, 0, sizeof(*sub));
    if (execution_id != NULL) {
        ex = exec_get(st, execution_id, id_len, cs_unix_ms());
        if (ex == NULL)
            return -ENOMEM;
        ex->n_subs++;
        epoch = ex->epoch;
        first = ex->first_seq;
        next = ex->next_seq;
    } else {
        epoch = st->gepoch;
        first = st->gfirst;
        next = st->gnext;
    }
    sub->store = st;
    sub->exec = ex;
    sub->epoch = epoch;
    sub->ops = ops;
    sub->data = data;
    if (filter != NULL) {
        sub->filter = *filter;
        memset(filter, 0, sizeof(*filter));
    }
    st->subscribers++;

    sub_position(sub, start, epoch, first, next);
    if (ex != NULL && st->hist.opened != NULL)
        st->hist.opened(st->hist.data, sub, start);
    return 0;
}

static int sub_make_gap(cs_sub_t *sub, cs_item_t *item)
{
    json_t *o;

    free(sub->gap_json);
    sub->gap_json = NULL;
    if (sub->exec != NULL)
        o = json_pack("{s:s, s:s, s:s, s:I}", "type", "stream.gap", "execution_id", sub->exec->id,
                      "requested", sub->gap_requested, "first_seq", (json_int_t)sub->gap_first);
    else
        o = json_pack("{s:s, s:s, s:I}", "type", "stream.gap", "requested", sub->gap_requested, "first_seq",
                      (json_int_t)sub->gap_first);
    if (o != NULL) {
        sub->gap_json = json_dumps(o, JSON_COMPACT);
        json_decref(o);
    }
    sub->gap_pending = 0;
    if (sub->gap_json == NULL)
        return 0; /* out of memory: the frames that follow still go out */
    sub->store->gaps++;
    item->frame = NULL;
    item->gap = sub->gap_json;
    item->gap_len = strlen(sub->gap_json);
    item->gap_first = sub->gap_first;
    return 1;
}

/* A subscriber held while its older history is read (cs_sub_hold). */
struct cs_sub_hold {
    cs_sub_t *sub; /* NULL once it closed */
    cs_start_t start;
    char id[]; /* start.id's copy */
};

static void sub_hist_free(cs_sub_t *sub);
static int sub_hist_next(cs_sub_t *sub, cs_item_t *item);

int cs_sub_next(cs_sub_t *sub, cs_item_t *item)
{
    cs_store_t *st = sub->store;
    cs_exec_t *ex = sub->exec;
    uint64_t first = ex ? ex->first_seq : st->gfirst;
    uint64_t next = ex ? ex->next_seq : st->gnext;

    if (sub->hold != NULL)
        return 0; /* its older history is being read (cs_sub_hold) */
    if (ex != NULL && sub->epoch != ex->epoch)
        sub_hist_free(sub); /* another history: what was read of the old one is not handed out */
    if (ex != NULL && sub->epoch != ex->epoch) {
        /* Its execution took another history (cluster: Redis' epoch). One that saw nothing yet missed
         * nothing; one that did is told, and goes on from the new history's oldest. */
        if (sub->next > 1 && !sub->gap_pending) {
            char cur[CS_CURSOR_MAX];
            cs_cursor_format(cur, sizeof(cur), sub->epoch, sub->next - 1);
            sub_set_gap(sub, cur, strlen(cur), first);
            sub->next = first;
        }
        sub->epoch = ex->epoch;
    }
    if (sub->hist != NULL && sub_hist_next(sub, item))
        return 1;
    if (!sub->gap_pending && sub->next < first) {
        /* Fell behind the oldest retained event: say so, then go on from the oldest. */
        char cur[CS_CURSOR_MAX] = "";
        if (sub->next > 1)
            cs_cursor_format(cur, sizeof(cur), ex ? ex->epoch : st->gepoch, sub->next - 1);
        sub_set_gap(sub, cur, strlen(cur), first);
        sub->next = first;
    }
    if (sub->gap_pending && sub_make_gap(sub, item))
        return 1;
    while (sub->next < next) {
        cs_frame_t *f = ex ? ex->ring[sub->next % ex->ring_cap] : st->gring[sub->next % st->gcap];
        sub->next++;
        if (f != NULL && cs_filter_match(&sub->filter, f->type, f->type_len)) { /* NULL: see global_holes */
            item->frame = f;
            item->gap = NULL;
            item->gap_len = 0;
            item->gap_first = 0;
            return 1;
        }
    }
    return 0;
}

int cs_sub_has_next(cs_sub_t *sub)
{
    cs_exec_t *ex = sub->exec;
    uint64_t next = ex ? ex->next_seq : sub->store->gnext;
    uint64_t first = ex ? ex->first_seq : sub->store->gfirst;
    uint64_t pos = sub->next;

    if (sub->hold != NULL)
        return 0;
    if (sub->hist != NULL && ex != NULL && sub->epoch == ex->epoch && pos >= sub->hist_first &&
        pos < sub->hist_first + sub->hist_n) {
        /* The older history it was given (cs_sub_release), then the ring after it. */
        if (sub->gap_pending)
            return 1;
        for (; pos < sub->hist_first + sub->hist_n; pos++) {
            cs_frame_t *f = sub->hist[pos - sub->hist_first];
            if (cs_filter_match(&sub->filter, f->type, f->type_len))
                return 1;
        }
    }
    if (sub->gap_pending || pos < first || (ex != NULL && sub->epoch != ex->epoch))
        return 1;
    for (uint64_t s = pos; s < next; s++) {
        cs_frame_t *f = ex ? ex->ring[s % ex->ring_cap] : sub->store->gring[s % sub->store->gcap];
        if (f != NULL && cs_filter_match(&sub->filter, f->type, f->type_len))
            return 1;
    }
    return 0;
}

void cs_sub_park(cs_sub_t *sub)
{
    if (sub->parked)
        return;
    if (sub->exec != NULL)
        DL_APPEND2(sub->exec->waiters, sub, wprev, wnext);
    else
        DL_APPEND2(sub->store->gwaiters, sub, wprev, wnext);
    sub->parked = 1;
}

void cs_sub_unpark(cs_sub_t *sub)
{
    if (!sub->parked)
        return;
    if (sub->exec != NULL)
        DL_DELETE2(sub->exec->waiters, sub, wprev, wnext);
    else
        DL_DELETE2(sub->store->gwaiters, sub, wprev, wnext);
    sub->wprev = sub->wnext = NULL;
    sub->parked = 0;
}

uint64_t cs_sub_position(const cs_sub_t *sub, char *buf, size_t buflen)
{
    uint64_t seq = sub->next > 0 ? sub->next - 1 : 0;

    if (buflen > 0)
        buf[0] = '\0';
    if (seq == 0)
        return 0;
    cs_cursor_format(buf, buflen, sub->exec ? sub->exec->epoch : sub->store->gepoch, seq);
    return seq;
}

size_t cs_sub_cursor(const cs_sub_t *sub, uint64_t seq, char *buf, size_t buflen)
{
    return cs_cursor_format(buf, buflen, sub->exec ? sub->exec->epoch : sub->store->gepoch, seq);
}

void cs_sub_unget(cs_sub_t *sub, const cs_item_t *item)
{
    if (item->frame != NULL)
        sub->next = sub->exec != NULL ? item->frame->seq : item->frame->gseq;
    else
        sub->gap_pending = 1; /* made again from what it says (gap_requested, gap_first) */
}

void cs_sub_close(cs_sub_t *sub)
{
    cs_store_t *st = sub->store;

    if (st == NULL)
        return;
    cs_sub_unpark(sub);
    if (sub->hold != NULL)
        sub->hold->sub = NULL; /* its holder frees it (cs_sub_release) */
    sub->hold = NULL;
    sub_hist_free(sub);
    cs_filter_free(&sub->filter);
    free(sub->gap_json);
    sub->gap_json = NULL;
    st->subscribers--;
    if (sub->exec != NULL) {
        cs_exec_t *ex = sub->exec;
        ex->n_subs--;
        exec_maybe_free(st, ex);
    }
    sub->store = NULL;
    sub->exec = NULL;
}

/* ---- the store ---- */

int cs_store_new(cs_store_t **out, const cs_store_limits_t *lim)
{
    cs_store_t *st = calloc(1, sizeof(*st));

    if (st == NULL)
        return -ENOMEM;
    st->lim = *lim;
    if (st->lim.ring_events == 0)
        st->lim.ring_events = 1;
    st->gcap = lim->global_events ? lim->global_events : 1;
    st->gring = calloc(st->gcap, sizeof(*st->gring));
    if (st->gring == NULL) {
        free(st);
        return -ENOMEM;
    }
    st->gepoch = cs_epoch_next();
    st->gfirst = st->gnext = 1;
    *out = st;
    return 0;
}

void cs_store_set_limits(cs_store_t *st, const cs_store_limits_t *lim)
{
    size_t gcap = st->gcap;

    /* A snapshot in progress is given up (its step says so): rings re-seated here leave no record. */
    if (st->sw != NULL && st->sw->err == 0)
        st->sw->err = -ECANCELED;
    st->lim = *lim;
    if (st->lim.ring_events == 0)
        st->lim.ring_events = 1;
    st->lim.global_events = gcap; /* the global ring keeps its size until restart */
    /* Lower ring limits apply to the rings there are, not only to new ones: their oldest events go
     * (a subscriber behind them gets stream.gap, as with any eviction), and a ring larger than
     * ring_events is re-seated in one of that size. The newest event stays, as on publish. */
    cs_exec_t *ex, *tmp;
    HASH_ITER(hh, st->execs, ex, tmp)
    {
        while (exec_count(ex) > 1 && (exec_count(ex) > st->lim.ring_events || ex->bytes > st->lim.ring_bytes))
            exec_evict_oldest(st, ex);
        if (ex->ring_cap > st->lim.ring_events)
            (void)exec_resize(st, ex, st->lim.ring_events); /* out of memory: it shrinks on a later reload */
    }
    (void)make_room(st, 0); /* what is pinned or in flight stays: publishes are refused until it goes */
}

void cs_store_limits(const cs_store_t *st, cs_store_limits_t *out)
{
    *out = st->lim;
    out->global_events = st->gcap;
}

void cs_store_free(cs_store_t *st)
{
    cs_exec_t *ex, *tmp;

    if (st == NULL)
        return;
    st->tearing_down = 1;
    sw_free(st);
    while (st->pending != NULL)
        pending_free(st, st->pending);
    while (st->pool != NULL) {
        pending_t *pe = st->pool;
        st->pool = pe->next;
        free(pe);
    }
    while (st->gnext > st->gfirst)
        global_evict_oldest(st);
    HASH_ITER(hh, st->execs, ex, tmp)
    {
        ex->n_subs = 0;
        exec_free(st, ex);
    }
    free(st->gring);
    free(st->etab);
    free(st);
}

void cs_store_set_now(cs_store_t *st, int64_t now_mono_ms)
{
    st->now_mono = now_mono_ms;
}

void cs_store_expire(cs_store_t *st, int64_t now_mono_ms)
{
    st->now_mono = now_mono_ms;
    while (st->finished != NULL &&
           st->finished->finished_mono_ms + (int64_t)st->lim.retain_s * 1000 <= now_mono_ms) {
        cs_exec_t *ex = st->finished;
        snapw_touch(st, ex, exec_evictable(st, ex) ? SW_GOING : ex->next_seq);
        exec_drop_history(st, ex);
        exec_unlist(st, ex);
        st->expired++;
        emit_exec(st, CS_CHANGE_EXPIRED, ex->id, ex->id_len, 0);
        /* Watched, or pinned by an open request (its status and requests stay until it is answered,
         * when it is listed again and expires retain_s later): off the list, not freed. */
        if (exec_evictable(st, ex))
            exec_free(st, ex);
    }
}

void cs_store_stats(const cs_store_t *st, cs_store_stats_t *s)
{
    memset(s, 0, sizeof(*s));
    s->executions = HASH_COUNT(st->execs);
    s->bytes = st->bytes;
    s->max_bytes = st->lim.max_bytes;
    s->pinned_bytes = st->pinned;
    s->open_request_bytes = st->open_bytes;
    s->open_requests = st->open_reqs;
    s->refused_full = st->refused_full;
    s->refused_too_large = st->refused_too_large;
    s->frames_live = st->frames_live;
    s->events_published = st->published;
    s->events_duplicate = st->duplicates;
    s->events_evicted = st->evicted;
    s->executions_expired = st->expired;
    s->gaps_sent = st->gaps;
    s->subscribers = st->subscribers;
    s->pending = st->n_with_done;
    s->refused_gate = st->refused_gate;
}

uint64_t cs_store_global_epoch(const cs_store_t *st)
{
    return st->gepoch;
}

/* ---- invariants (tests, fuzzing) ---- */

#define CHECK_OR_FAIL(cond, ...)                                                                             \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            snprintf(detail, detail_len, __VA_ARGS__);                                                       \
            return -1;                                                                                       \
        }                                                                                                    \
    } while (0)

static int check_frame_in_exec(const cs_exec_t *ex, const cs_frame_t *f)
{
    for (const cs_frame_t *p = cs_exec_find_event(ex, f->event_id, f->event_id_len); p != NULL;
         p = p->id_next)
        if (p == f)
            return 1;
    return 0;
}

int cs_store_check(const cs_store_t *st, size_t *ring_bytes, size_t *held_out_bytes, char *detail,
                   size_t detail_len)
{
    size_t overheads = 0, hitl = 0, status = 0, frames = 0, pinned = 0, open_bytes = 0, open_reqs = 0;
    size_t n_frames = 0, subs = 0;
    const cs_exec_t *ex, *tmp;

    HASH_ITER(hh, st->execs, ex, tmp)
    {
        size_t xb = 0;
        CHECK_OR_FAIL(ex->ring_cap >= 1 &&
                          ex->ring_cap <=
                              (st->lim.ring_events > RING_INITIAL ? st->lim.ring_events : RING_INITIAL),
                      "%s: ring of %zu", ex->id, ex->ring_cap);
        CHECK_OR_FAIL(ex->first_seq <= ex->next_seq && exec_count(ex) <= ex->ring_cap,
                      "%s: seqs [%llu, %llu)", ex->id, (unsigned long long)ex->first_seq,
                      (unsigned long long)ex->next_seq);
        for (size_t i = 0; i < ex->ring_cap; i++) {
            const cs_frame_t *f = ex->ring[i];
            uint64_t s = ex->first_seq + ((i + ex->ring_cap - ex->first_seq % ex->ring_cap) % ex->ring_cap);
            if (s >= ex->next_seq) {
                CHECK_OR_FAIL(f == NULL, "%s: a frame outside the retained seqs", ex->id);
                continue;
            }
            CHECK_OR_FAIL(f != NULL && f->seq == s && f->in_exec && f->exec == ex &&
                              f->refcnt >= 1u + f->in_global,
                          "%s: slot of seq %llu", ex->id, (unsigned long long)s);
            CHECK_OR_FAIL(check_frame_in_exec(ex, f), "%s: seq %llu not in the event_id index", ex->id,
                          (unsigned long long)s);
            xb += f->bytes;
            n_frames++;
        }
        CHECK_OR_FAIL(xb == ex->bytes, "%s: ring counted %zu, holds %zu", ex->id, ex->bytes, xb);
        frames += xb;
        overheads += exec_overhead(ex);
        char why[200];
        CHECK_OR_FAIL(cs_hitl_check(&ex->hitl, why, sizeof(why)) == 0, "%s: %s", ex->id, why);
        hitl += ex->hitl.bytes;
        open_bytes += ex->hitl.open_bytes;
        open_reqs += ex->hitl.n_open;
        size_t sb = status_held(ex);
        CHECK_OR_FAIL(sb == ex->status_bytes, "%s: status counted %zu, holds %zu", ex->id, ex->status_bytes,
                      sb);
        status += sb;
        size_t pb = exec_pinned(ex) ? pin_share(ex, ex->hitl.bytes, exec_overhead(ex)) : 0;
        CHECK_OR_FAIL(pb == ex->pin_bytes, "%s: pinned counted %zu, holds %zu", ex->id, ex->pin_bytes, pb);
        pinned += pb;
        subs += ex->n_subs;
    }
    CHECK_OR_FAIL(st->gfirst <= st->gnext && st->gnext - st->gfirst <= st->gcap, "global ring [%llu, %llu)",
                  (unsigned long long)st->gfirst, (unsigned long long)st->gnext);
    for (uint64_t g = st->gfirst; g < st->gnext; g++) {
        const cs_frame_t *f = st->gring[g % st->gcap];
        CHECK_OR_FAIL(f != NULL && f->gseq == g && f->in_global && f->refcnt >= 1u + f->in_exec,
                      "global ring slot %llu", (unsigned long long)g);
        if (!f->in_exec) {
            frames += f->bytes;
            n_frames++;
        }
    }
    CHECK_OR_FAIL(subs <= st->subscribers, "%zu execution subscribers, %zu in all", subs, st->subscribers);
    CHECK_OR_FAIL(pinned == st->pinned, "pinned counted %zu, holds %zu", st->pinned, pinned);
    CHECK_OR_FAIL(open_bytes == st->open_bytes && open_reqs == st->open_reqs,
                  "open requests counted %zu (%zu bytes), hold %zu (%zu bytes)", st->open_reqs,
                  st->open_bytes, open_reqs, open_bytes);
    CHECK_OR_FAIL(frames <= st->frame_bytes && n_frames <= st->frames_live,
                  "rings hold %zu bytes of frames, %zu counted", frames, st->frame_bytes);
    CHECK_OR_FAIL(st->bytes == overheads + hitl + status + st->frame_bytes,
                  "store counted %zu bytes, holds %zu (executions %zu, requests %zu, status %zu, frames %zu)",
                  st->bytes, overheads + hitl + status + st->frame_bytes, overheads, hitl, status,
                  st->frame_bytes);
    if (ring_bytes != NULL)
        *ring_bytes = frames;
    if (held_out_bytes != NULL)
        *held_out_bytes = st->frame_bytes - frames;
    return 0;
}

/* ---- history older than the ring (cluster: read from Redis, store.h) ---- */

/* Bounds of one subscriber's older history beyond the ring's own: Redis keeps some events more than
 * ring_events (MINID ~ trims whole stream nodes). */
#define HIST_EXTRA 128

static void sub_hist_free(cs_sub_t *sub)
{
    for (size_t i = 0; i < sub->hist_n; i++)
        cs_frame_unref(sub->store, sub->hist[i]);
    free(sub->hist);
    sub->hist = NULL;
    sub->hist_n = 0;
    sub->hist_first = 0;
}

/* Hands out the next frame of sub's older history (a gap before it first), or frees the history once the
 * subscriber is past it (kept while it may still give back its last frame: cs_sub_unget). */
static int sub_hist_next(cs_sub_t *sub, cs_item_t *item)
{
    uint64_t end = sub->hist_first + sub->hist_n;

    if (sub->next < sub->hist_first || sub->next > end) {
        sub_hist_free(sub);
        return 0;
    }
    if (sub->next == end)
        return 0;
    if (sub->gap_pending && sub_make_gap(sub, item))
        return 1;
    while (sub->next < end) {
        cs_frame_t *f = sub->hist[sub->next - sub->hist_first];
        sub->next++;
        if (cs_filter_match(&sub->filter, f->type, f->type_len)) {
            item->frame = f;
            item->gap = NULL;
            item->gap_len = 0;
            item->gap_first = 0;
            return 1;
        }
    }
    return 0;
}

cs_sub_hold_t *cs_sub_hold(cs_sub_t *sub, const cs_start_t *start)
{
    size_t n = start->kind == CS_START_AFTER_ID ? start->id_len : 0;
    cs_sub_hold_t *h;

    if (sub->exec == NULL || sub->hold != NULL || (h = malloc(sizeof(*h) + n + 1)) == NULL)
        return NULL;
    h->sub = sub;
    h->start = *start;
    if (n > 0)
        memcpy(h->id, start->id, n);
    h->id[n] = '\0';
    h->start.id = h->id;
    h->start.id_len = n;
    sub->hold = h;
    return h;
}

int cs_sub_held(const cs_sub_t *sub)
{
    return sub->hold != NULL;
}

int cs_sub_history_lost(const cs_sub_t *sub)
{
    return sub->hist_failed && sub->gap_pending;
}

int cs_sub_hold_open(const cs_sub_hold_t *h)
{
    return h->sub != NULL;
}

/* A frame of an older event (outside every ring): its JSON as stored with ,"seq":N appended, exactly as a
 * ring renders it. NULL when it is not one event on one line, or out of memory. */
static cs_frame_t *hist_frame(cs_store_t *st, uint64_t epoch, const cs_hist_event_t *e)
{
    const char *body;
    size_t body_len, tail_len;
    char tail[40];
    json_error_t jerr;
    json_t *o, *t, *id;
    cs_frame_t *f = NULL;

    if (!raw_line(e->json, e->json_len, &body, &body_len))
        return NULL;
    o = json_loadb(e->json, e->json_len, JSON_REJECT_DUPLICATES, &jerr);
    t = json_object_get(o, "type");
    id = json_object_get(o, "event_id");
    if (json_is_string(t) && json_is_string(id) && json_object_get(o, "seq") == NULL) {
        memcpy(tail, ",\"seq\":", 7);
        tail_len = 7 + cs_fmt_u64(tail + 7, e->seq);
        tail[tail_len++] = '}';
        f = frame_new(st, epoch, body, body_len, tail, tail_len, json_string_value(t), json_string_length(t),
                      json_string_value(id), json_string_length(id), e->seq, 0);
    }
    json_decref(o);
    return f;
}

size_t cs_sub_release(cs_sub_hold_t *h, uint64_t epoch, const cs_hist_event_t *ev, size_t n, int failed)
{
    cs_sub_t *sub = h->sub;
    cs_store_t *st;
    cs_exec_t *ex;
    size_t lo, hi = 0, cost = 0, given = 0;
    uint64_t first, next;
    const cs_start_t *start = &h->start;
    cs_frame_t *f;

    if (sub == NULL)
        goto out;
    st = sub->store;
    ex = sub->exec;
    sub->hold = NULL;
    sub_hist_free(sub);
    sub->hist_failed = failed != 0;
    sub->gap_pending = 0;
    sub->epoch = ex->epoch;
    /* What may be given: older than the ring, of its epoch, contiguous up to it; the newest within bounds. */
    if (!failed && epoch == ex->epoch)
        while (hi < n && ev[hi].seq < ex->first_seq)
            hi++;
    if (hi > 0 && ev[hi - 1].seq + 1 != ex->first_seq)
        hi = 0; /* not up to the ring (it moved on meanwhile): nothing between is had */
    for (lo = hi; lo > 0 && hi - lo < st->lim.ring_events + HIST_EXTRA; lo--) {
        if ((lo < hi && ev[lo - 1].seq + 1 != ev[lo].seq) || cost + ev[lo - 1].json_len > st->lim.ring_bytes)
            break;
        cost += ev[lo - 1].json_len;
    }
    if (lo < hi && make_room(st, cost + (hi - lo) * (sizeof(cs_frame_t) + CS_FRAME_PRE + 160)) != 0) {
        cs_log_warn("store: no room for %zu older events of %s read for a subscriber: it gets stream.gap",
                    hi - lo, ex->id);
        lo = hi;
    }
    if (lo < hi && (sub->hist = calloc(hi - lo, sizeof(*sub->hist))) == NULL)
        lo = hi;
    /* Rendered newest first: one that cannot be read ends the history there (the older ones are a gap). */
    for (size_t i = hi; i > lo; i--) {
        if ((f = hist_frame(st, epoch, &ev[i - 1])) == NULL) {
            cs_log_warn("store: event %llu of %s read for a subscriber is not one event on one line: the "
                        "subscriber gets stream.gap before it",
                        (unsigned long long)ev[i - 1].seq, ex->id);
            memmove(sub->hist, sub->hist + (i - lo), (hi - i) * sizeof(*sub->hist));
            lo = i;
            break;
        }
        sub->hist[i - 1 - lo] = f;
    }
    if (lo < hi) {
        sub->hist_n = hi - lo;
        sub->hist_first = ev[lo].seq;
    } else {
        free(sub->hist);
        sub->hist = NULL;
    }
    /* The start again, against the history and the ring together (cs_sub_open's rules). */
    first = sub->hist_n > 0 ? sub->hist_first : ex->first_seq;
    next = ex->next_seq;
    sub_position(sub, start, ex->epoch, first, next);
    /* What it will not hand out is let go at once. */
    if (sub->hist_n > 0 && (sub->next < sub->hist_first || sub->next >= sub->hist_first + sub->hist_n)) {
        sub_hist_free(sub);
    } else if (sub->hist_n > 0 && sub->next > sub->hist_first) {
        size_t skip = (size_t)(sub->next - sub->hist_first);
        for (size_t i = 0; i < skip; i++)
            cs_frame_unref(st, sub->hist[i]);
        memmove(sub->hist, sub->hist + skip, (sub->hist_n - skip) * sizeof(*sub->hist));
        sub->hist_n -= skip;
        sub->hist_first = sub->next;
    }
    given = sub->hist_n;
    if (sub->parked) {
        cs_sub_unpark(sub);
        sub->ops->wake(sub);
    }
out:
    free(h);
    return given;
}

void cs_store_set_history(cs_store_t *st, const cs_store_history_t *h)
{
    if (h != NULL)
        st->hist = *h;
    else
        memset(&st->hist, 0, sizeof(st->hist));
}
