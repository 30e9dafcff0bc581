/*
 * store.h - executions, their bounded rings of rendered frames, the global ring
 * behind GET /v1/events, and subscribers as cursors into those rings.
 *
 * An event is rendered once, at publish, into an immutable refcounted frame: its
 * JSON (with LWS_PRE bytes of head-room in front, so it doubles as the WebSocket
 * payload) and the SSE head lines ("event: T\nid: C\ndata: ") for the execution's
 * cursor and for the global cursor. A transport sends head + JSON + "\n\n". A
 * subscriber holds a position (the next seq), never a queue; a caught-up one
 * parks on its execution's wait list and is woken (ops->wake) by the next publish.
 */
#ifndef CS_STORE_H
#define CS_STORE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uthash.h>

#include "cursor.h"
#include "event.h"
#include "filter.h"
#include "hitl.h"
#include "status.h"

typedef struct cs_store cs_store_t;
typedef struct cs_exec cs_exec_t;
typedef struct cs_sub cs_sub_t;

/** Head-room in front of every frame's JSON for the WebSocket header; equals LWS_PRE. */
#define CS_FRAME_PRE 16

typedef struct cs_frame {
    /* What an eviction reads and writes comes first, in the allocation's first 64 bytes (store.c
     * prefetches them a few evictions ahead: an evicted frame is long out of the cache). */
    uint32_t refcnt;
    uint8_t in_exec;   /* still in its execution's ring */
    uint8_t in_global; /* still in the global ring */
    uint8_t id_head;   /* in its execution's event-id index (the first frame with its id) */
    uint64_t seq;      /* per execution */
    size_t bytes;      /* what this frame costs, counted against store.max_bytes */
    cs_exec_t *exec;   /* valid while in_exec */
    uint64_t id_hash;  /* XXH3 of event_id: its slot in the execution's event-id index */
    /* Index of event ids within the execution (store.c): first occurrence in it, later ones chained. */
    struct cs_frame *id_next;
    uint64_t gseq;    /* in the global ring */
    const char *type; /* NUL-terminated, inside this allocation */
    size_t type_len;
    const char *event_id; /* NUL-terminated, inside this allocation */
    size_t event_id_len;
    char *json; /* the event, one line, preceded by CS_FRAME_PRE bytes of head-room */
    size_t json_len;
    char *sse_head; /* "event: T\nid: C\ndata: " (execution cursor) */
    size_t sse_head_len;
    char *gsse_head; /* the same with the global cursor */
    size_t gsse_head_len;
    size_t sse_named_skip; /* bytes of "event: T\n" to skip for unnamed streams */
} cs_frame_t;

/** Takes a reference to a frame. */
static inline cs_frame_t *cs_frame_ref(cs_frame_t *f)
{
    f->refcnt++;
    return f;
}

/** Drops a reference; the last one frees the frame and returns its bytes to the store. */
void cs_frame_unref(cs_store_t *store, cs_frame_t *f);

/** What a subscriber is handed by cs_sub_next. */
typedef struct cs_item {
    cs_frame_t *frame; /* borrowed; take a reference to keep it past the next store call */
    const char *gap;   /* or: a stream.gap event JSON, owned by the subscriber until the next call */
    size_t gap_len;
    uint64_t gap_first; /* a gap's: the first seq that follows it */
} cs_item_t;

/** How a transport is told that a parked subscriber has something to read. */
typedef struct cs_sub_ops {
    void (*wake)(cs_sub_t *sub);
} cs_sub_ops_t;

struct cs_sub {
    cs_store_t *store;
    cs_exec_t *exec; /* NULL for the global stream */
    uint64_t next;   /* next seq (or gseq) to hand out */
    cs_filter_t filter;
    const cs_sub_ops_t *ops;
    void *data;
    uint64_t epoch;          /* its execution's epoch when it last looked (cluster: Redis may give another) */
    cs_sub_t *wprev, *wnext; /* wait list links */
    int parked;
    int gap_pending;
    uint64_t gap_first;
    char gap_requested[2 * CS_EVENT_ID_MAX + 1];
    char *gap_json;
    struct cs_sub_hold *hold; /* cluster: older history being read elsewhere (cs_sub_hold): nothing out */
    cs_frame_t **hist;        /* history older than the ring's (cs_sub_release): seqs hist_first.. */
    size_t hist_n;
    uint64_t hist_first;
    int hist_failed; /* the last hold's history could not be read (cs_sub_release with failed) */
};

/** Where a new subscriber starts. */
typedef enum cs_start_kind {
    CS_START_HISTORY = 0, /* everything retained, then live */
    CS_START_NOW,         /* live only (?since=now) */
    CS_START_AFTER_SEQ,   /* ?since_seq=N */
    CS_START_AFTER_ID,    /* Last-Event-ID / ?last_event_id=: a cursor, a bare seq, or an event_id */
} cs_start_kind_t;

typedef struct cs_start {
    cs_start_kind_t kind;
    uint64_t seq;   /* CS_START_AFTER_SEQ */
    const char *id; /* CS_START_AFTER_ID */
    size_t id_len;
} cs_start_t;

typedef struct cs_store_limits {
    size_t ring_events;
    size_t ring_bytes;
    size_t max_bytes;
    unsigned retain_s;
    size_t global_events;
} cs_store_limits_t;

typedef struct cs_store_stats {
    size_t executions;
    size_t bytes;
    size_t max_bytes;
    size_t pinned_bytes;       /* held by executions an open human-input request pins */
    size_t open_request_bytes; /* the open human-input requests themselves */
    size_t open_requests;
    uint64_t refused_full;      /* publishes refused: the store could not make room (unavailable) */
    uint64_t refused_too_large; /* publishes refused: larger than store.max_bytes allows (too_large) */
    size_t frames_live;
    uint64_t events_published;
    uint64_t events_duplicate;
    uint64_t events_evicted;
    uint64_t executions_expired;
    uint64_t gaps_sent;
    size_t subscribers;
    size_t pending;        /* publishes waiting for their observer's confirmation, with a completion */
    uint64_t refused_gate; /* publishes refused by the gate (cs_store_set_refusal) */
} cs_store_stats_t;

/** Creates an empty store; returns 0 or -ENOMEM. */
int cs_store_new(cs_store_t **out, const cs_store_limits_t *limits);

/** Frees the store; every subscriber must have been closed. */
void cs_store_free(cs_store_t *store);

/** Applies new limits (SIGHUP) to the rings there are too (lower ring limits evict their oldest events
 * at once); the global ring keeps its size until restart. */
void cs_store_set_limits(cs_store_t *store, const cs_store_limits_t *limits);

/** The limits in force (global_events: the global ring's size). */
void cs_store_limits(const cs_store_t *store, cs_store_limits_t *out);

/**
 * Memory (store.max_bytes): every frame, every execution's structure, its status (result, error) and
 * its human-input requests are counted in the store's bytes, which never exceed store.max_bytes after
 * a publish. Room is made BEFORE an event is stored, by eviction (see store.c), never by dropping the
 * event being published, the execution it goes to, or an execution an open human-input request pins
 * (an open request and its execution are never evicted or expired; their ring events may be). Open
 * requests' executions may hold at most half of store.max_bytes (the rest stays for events). A
 * publish that cannot fit is refused and stores nothing: CS_ERR_TOO_LARGE when it alone needs more
 * than store.max_bytes (a request: more than half), CS_ERR_UNAVAILABLE when what cannot be evicted
 * (open requests, frames in flight to subscribers) leaves no room now: the producer may retry.
 */

/** Result of a publish. */
typedef struct cs_publish {
    uint64_t seq;
    char event_id[CS_EVENT_ID_MAX + 1];
    int duplicate;
    cs_frame_t *frame; /* borrowed: the stored frame (or the original, for a duplicate) */
    cs_exec_t *exec;
    char request_event_id[CS_EVENT_ID_MAX + 1]; /* a human_input_completed: the request it answered */
    uint64_t ticket;                            /* of its CS_CHANGE_PUBLISH record (0: a duplicate) */
    uint64_t hold; /* nonzero: acknowledge it once cs_store_released reaches this (a holding caller's) */
} cs_publish_t;

/**
 * Stores a validated event (cs_event_validate passed): a re-post of a retained (event_id, type)
 * is acknowledged with the original seq; otherwise the event gets its seq, event_id and
 * timestamp, is rendered once, enters its execution's ring and the global ring, and parked
 * subscribers are woken. ev is not consumed. Returns CS_OK or an error with detail.
 */
cs_err_t cs_store_publish(cs_store_t *store, json_t *ev, int64_t now_unix_ms, cs_publish_t *out, char *detail,
                          size_t detail_len);

/**
 * cs_store_publish for an event parsed from raw (raw_len bytes, one JSON object): when the line can
 * be kept as it came, the stored JSON is raw with the daemon's fields appended inside its closing
 * brace, instead of ev re-serialised. raw may be NULL.
 */
cs_err_t cs_store_publish_raw(cs_store_t *store, json_t *ev, const char *raw, size_t raw_len,
                              int64_t now_unix_ms, cs_publish_t *out, char *detail, size_t detail_len);

/**
 * cs_store_publish for an ordinary event known by its fields alone, without a JSON object: fl
 * (cs_event_validate_fields passed) points into raw, one JSON object on one line without a seq
 * member, which is stored as it came with the daemon's fields appended inside its closing brace;
 * its type is one cs_status_reads_type does not report (nothing else in it is read). Acknowledges,
 * deduplicates, stores and wakes exactly as cs_store_publish_raw does for the same line. Returns
 * CS_OK or an error with detail (CS_ERR_INTERNAL for an event that must be published whole).
 */
cs_err_t cs_store_publish_fields(cs_store_t *store, const cs_event_fields_t *fl, const char *raw,
                                 size_t raw_len, int64_t now_unix_ms, cs_publish_t *out, char *detail,
                                 size_t detail_len);

/** The human-input requests of execution_id (to read, and to await: hitl.h), or NULL (with detail) when
 * no such execution has a history. Answers are published (answer.h), never written here. */
cs_hitl_t *cs_store_requests(cs_store_t *store, const char *execution_id, size_t id_len, char *detail,
                             size_t detail_len);

/*
 * Completion: a publish may be stored here at once but made durable (or ordered) elsewhere later - the
 * journal's fsync "always", the Redis cluster's round trip. The observer says so by answering
 * CS_CHANGE_LATER to the CS_CHANGE_PUBLISH record, and later calls cs_store_confirm with its ticket.
 * A caller that can wait submits with a completion: it gets CS_PENDING (out already filled: the seq and
 * event_id are assigned, the event is visible to subscribers), and done->fn is called exactly once,
 * from cs_store_confirm, with the outcome and a copy of out (its frame and exec NULL: they may be gone
 * by then). Without a completion, or when the observer is done at once, a publish completes at once as
 * before (CS_OK or an error, done never called). A producer's retry (same event_id and type) of an
 * event not confirmed yet is not acknowledged at once: with a completion it gets CS_PENDING and is
 * answered with the original's outcome and seq when that is confirmed; without one it is refused
 * CS_ERR_UNAVAILABLE ("not durable yet: retry"). A publish confirmed with an error stays unconfirmed
 * (its record may still be written: a journal's retry) until the observer confirms it CS_OK; a
 * forgotten one (cs_store_forget) too.
 */

/** Not an error: the publish completes later, through its completion. Positive, so it is neither CS_OK
 * nor an error value. */
#define CS_PENDING 0x10000

typedef struct cs_store_done {
    void (*fn)(void *data, cs_err_t e, const cs_publish_t *pub, const char *detail);
    void *data;
    /* Nonzero: the caller can hold its acknowledgement itself (a producer's output, held until the
     * journal's write of the turn): a publish the observer holds (cs_store_hold) completes at once,
     * CS_OK, with out->hold; see cs_store_release. */
    int can_hold;
} cs_store_done_t;

/** cs_store_publish_raw with a completion (done may be NULL: complete at once). */
cs_err_t cs_store_submit_raw(cs_store_t *store, json_t *ev, const char *raw, size_t raw_len,
                             int64_t now_unix_ms, const cs_store_done_t *done, cs_publish_t *out,
                             char *detail, size_t detail_len);

/** cs_store_submit_raw of an answer's completion ev (answer.h) to the open request request_event_id: in
 * cluster mode the remote refuses it (CS_ERR_CONFLICT, through done) when the request was answered on
 * another node first; otherwise as cs_store_submit_raw. */
cs_err_t cs_store_submit_answer(cs_store_t *store, json_t *ev, const char *request_event_id,
                                int64_t now_unix_ms, const cs_store_done_t *done, cs_publish_t *out,
                                char *detail, size_t detail_len);

/** cs_store_publish_fields with a completion (done may be NULL: complete at once). */
cs_err_t cs_store_submit_fields(cs_store_t *store, const cs_event_fields_t *fl, const char *raw,
                                size_t raw_len, int64_t now_unix_ms, const cs_store_done_t *done,
                                cs_publish_t *out, char *detail, size_t detail_len);

/** Nonzero when a publish may come back CS_PENDING (an observer is set): a caller may skip preparing a
 * completion otherwise. */
int cs_store_may_defer(const cs_store_t *store);

/** The observer's word on the publish of ticket: e CS_OK (durable) or an error (with detail). Calls its
 * completion, when one waits. */
void cs_store_confirm(cs_store_t *store, uint64_t ticket, cs_err_t e, const char *detail);

/** Drops the completion of ticket, unconfirmed (its caller is gone): it will not be called. */
void cs_store_forget(cs_store_t *store, uint64_t ticket);

/** Finds the human-input request event_id of execution_id, or NULL (with CS_ERR_NOT_FOUND detail). */
cs_hitl_req_t *cs_store_find_request(cs_store_t *store, const char *execution_id, size_t id_len,
                                     const char *event_id, char *detail, size_t detail_len);

/*
 * The seam: every change of the store's state is one record handed to one observer, in the order the
 * changes happen, and the same records replayed into an empty store (with the same limits) rebuild
 * the same executions, seqs, frames, statuses and requests. The journal (issue 12) writes them and
 * replays them at start; the Redis cluster (issue 16) ships them between daemons. docs/architecture.md
 * (the store) describes each record.
 */
typedef enum cs_change_kind {
    CS_CHANGE_EXEC_NEW = 1,     /* an execution began: exec, epoch, unix_ms (created) */
    CS_CHANGE_PUBLISH,          /* an event stored in its execution's ring: exec, seq, gseq, event_id, type,
                                 * json (the frame's, as subscribers get it), unix_ms, ticket */
    CS_CHANGE_GLOBAL_APPEND,    /* that event entered the global ring: exec, seq, gseq */
    CS_CHANGE_EVICT,            /* the oldest frame of an execution's ring left it: exec, seq */
    CS_CHANGE_GLOBAL_EVICT,     /* the global ring's oldest frame left it: gseq */
    CS_CHANGE_REQUEST_OPENED,   /* a human_input_required became an open request: exec, event_id, seq */
    CS_CHANGE_REQUEST_ANSWERED, /* an open request was answered: exec, event_id (the request's), seq (the
                                 * completion's) */
    CS_CHANGE_FINISHED,         /* an execution entered (status final) or left a final state: exec, status */
    CS_CHANGE_EXPIRED,          /* a finished execution's retention ended (its frames went by EVICT) */
    CS_CHANGE_FREED,            /* an execution and everything it held are gone: exec */
    /* A snapshot (cs_store_snapshot): the whole store as records, replayed into any store it replaces. */
    CS_CHANGE_SNAP_BEGIN, /* epoch (the global ring's), seq/gseq (its first/next gseq), json (counters) */
    CS_CHANGE_EXEC_STATE, /* one execution's whole state but its frames: exec, epoch, json (see store.c) */
    CS_CHANGE_SNAP_FRAME, /* a retained frame: exec, seq, gseq, event_id, type, json, unix_ms, status (bit 0:
                           * in its execution's ring, bit 1: in the global ring) */
    CS_CHANGE_SNAP_END,   /* the snapshot is whole: what SNAP_BEGIN said, again */
} cs_change_kind_t;

/** The last kind (record readers refuse any kind past it). */
#define CS_CHANGE_LAST CS_CHANGE_SNAP_END

/** One change. Pointers are valid during the observer's call only. */
typedef struct cs_change {
    cs_change_kind_t kind;
    const char *exec;
    size_t exec_len;
    uint64_t epoch, seq, gseq;
    const char *event_id;
    size_t event_id_len;
    const char *type;
    size_t type_len;
    const char *json;
    size_t json_len;
    int64_t unix_ms;
    int status;      /* cs_exec_status_t */
    uint64_t ticket; /* CS_CHANGE_PUBLISH: names the publish for cs_store_confirm */
    int holdable;    /* CS_CHANGE_PUBLISH: its caller can hold its acknowledgement (cs_store_hold) */
    int derived;     /* a consequence the replay of the CS_CHANGE_PUBLISH next to it redoes by itself (its
                      * ring bound's EVICT before it, its GLOBAL_APPEND, the global ring's GLOBAL_EVICT,
                      * REQUEST_OPENED/ANSWERED, FINISHED after it): a journal may leave it out */
} cs_change_t;

/** What an observer returns for a CS_CHANGE_PUBLISH it will make durable later (it then calls
 * cs_store_confirm with the record's ticket); 0 otherwise. */
#define CS_CHANGE_LATER 1

/*
 * Holding: the cheaper deferral a journal's write() needs. For a CS_CHANGE_PUBLISH with holdable set
 * (its caller can hold its own acknowledgement) the observer may, instead of CS_CHANGE_LATER, call
 * cs_store_hold with a position and return 0: the publish completes at once with out->hold = position,
 * and its caller sends the acknowledgement only once cs_store_released has reached it - no pending
 * entry, no completion call. The observer calls cs_store_release as the position advances (positions
 * only grow while the observer is set). A retry of a held event not released yet is held the same way
 * (its execution's newest hold), or refused "not durable yet: retry" to a caller that cannot hold.
 */

/** During the observer's call for a holdable CS_CHANGE_PUBLISH: the publish is held at position. */
void cs_store_hold(cs_store_t *store, uint64_t position);

/** The observer's position advanced: what is held at or before it may be acknowledged. Calls the
 * release hook (cs_store_on_release). */
void cs_store_release(cs_store_t *store, uint64_t position);

/** The position released so far. */
uint64_t cs_store_released(const cs_store_t *store);

/** Sets the one hook cs_store_release calls (NULL: none): a caller holding acknowledgements. */
void cs_store_on_release(cs_store_t *store, void (*fn)(void *data, uint64_t position), void *data);

/** The one place every change goes through. */
typedef struct cs_store_observer {
    int (*change)(void *data, const cs_change_t *c);
    void *data;
    int skip_derived; /* nonzero: records with derived set are not handed to change (a journal leaves
                       * them out: the call and its record's copy are saved, three or so per event) */
} cs_store_observer_t;

/** Sets the observer (NULL: none); records flow from the next change on. */
void cs_store_set_observer(cs_store_t *store, const cs_store_observer_t *obs);

/**
 * Applies one record to a store that has seen every record before it and nothing else: an event is
 * stored with the seq, gseq, ids and JSON the record names (no id is drawn, no room is made: the
 * evictions come as their own records); records derived from a publish (request opened or answered,
 * finished) are checked against what the publish did. Returns 0, or -1 with detail when the record
 * does not follow from the store's state.
 *
 * Holes: after records were lost (a journal segment's tail skipped over a bad checksum) what follows
 * may refer to what is gone. Where the loss explains it, replay goes on and the loss becomes a
 * stream.gap: a PUBLISH past its execution's next seq drops the ring's history and continues at its
 * seq; a PUBLISH past the global ring's next gseq does the same for the global ring; a PUBLISH for an
 * execution never begun begins it (with a new epoch: cursors into what was lost get stream.gap); an
 * eviction past the oldest retained evicts up to it; an eviction, expiry or free of an execution that
 * is not there changes nothing. Anything else is refused (the caller skips it).
 *
 * A finished execution's retention counts from the time of its records (cs_store_set_now first).
 * SNAP_BEGIN empties the store (no subscriber may be open) and sets the global ring's epoch and seqs.
 */
int cs_store_replay(cs_store_t *store, const cs_change_t *c, char *detail, size_t detail_len);

/**
 * Emits the whole store through fn as records, without changing it: SNAP_BEGIN, then per execution
 * (in eviction order: the active list, then the finished list, oldest first; then the ones on neither)
 * its EXEC_STATE and its ring's frames (SNAP_FRAME), then the frames only the global ring holds, then
 * SNAP_END. Replayed (cs_store_replay) into a store with the same limits they rebuild the same store,
 * whatever it held before. fn returns 0 to go on; anything else stops the snapshot and is returned.
 * -EBUSY while a snapshot written in steps (below) is in progress.
 */
int cs_store_snapshot(cs_store_t *store, int (*fn)(void *data, const cs_change_t *c), void *data);

/*
 * The same snapshot written across loop turns while the store goes on changing (a journal's: no long
 * pause). cs_store_snap_begin emits SNAP_BEGIN through fn; each cs_store_snap_step emits about budget
 * bytes more of it. Meanwhile the observer's live records go on, to the same journal, in call order with
 * fn's: before a change touches an execution the snapshot has not written yet, the store writes it first
 * through fn (copy-on-write), so the journal reads "its state, then its later live records"; executions
 * begun meanwhile come with their EXEC_NEW. Replayed in that order into a store with the same limits, the
 * records rebuild the same store as a snapshot taken at the end would (list order too: EXEC_STATE carries
 * the execution's list position, a tick). Without its SNAP_END (given up, a crash) the snapshot records
 * must be left out of a replay, the live records between them applied (on top of what came before).
 */

/** Begins a snapshot through fn: 0, -EBUSY (one is in progress), -ENOMEM or what fn returned (then none
 * is in progress). fn (and data) must stay valid until the snapshot ends. */
int cs_store_snap_begin(cs_store_t *store, int (*fn)(void *data, const cs_change_t *c), void *data);

/** Writes about budget bytes more of the snapshot in progress (at least one execution's records, however
 * large). Returns 1 when more is to come, 0 once SNAP_END was emitted (the snapshot is over), or a negative
 * errno when it was given up (fn failed, here or during a change: that error; the limits changed
 * (cs_store_set_limits): -ECANCELED; none in progress: -ECANCELED). */
int cs_store_snap_step(cs_store_t *store, size_t budget);

/** Gives the snapshot in progress up, without its SNAP_END (no-op when none). */
void cs_store_snap_abort(cs_store_t *store);

/** Nonzero while a snapshot is in progress. */
int cs_store_snap_active(const cs_store_t *store);

/**
 * The store's gate: while e is not CS_OK every publish is refused with e and detail before anything is
 * stored (a journal that cannot be written: CS_ERR_UNAVAILABLE). CS_OK opens it again.
 */
void cs_store_set_refusal(cs_store_t *store, cs_err_t e, const char *detail);

/**
 * The seq step: gives the event about to be stored in execution exec its seq. next is the store's own
 * (one past the newest it holds); a sequencer (a remote engine holding the order) may give more, when
 * the seqs between were taken elsewhere: they are then not in this ring (its frames are evicted and a
 * subscriber behind gets stream.gap). Returns 0 with *seq, or an error value (the publish is refused
 * with it).
 */
typedef struct cs_store_sequencer {
    int (*assign)(void *data, const char *exec, size_t exec_len, uint64_t next, uint64_t *seq);
    void *data;
} cs_store_sequencer_t;

/** Sets the seq step (NULL: the store's own, next). */
void cs_store_set_sequencer(cs_store_t *store, const cs_store_sequencer_t *seqr);

/*
 * The remote step (cluster mode, docs/cluster.md): another engine (Redis) holds the order and the
 * history, and this store is its cache. cs_store_submit_* then store nothing: past the gate and a
 * duplicate of what this ring holds (acknowledged at once with its seq), the event is completed into
 * the JSON every node stores (event_id, timestamp appended; no seq) and handed to remote->submit with a
 * ticket, which returns CS_PENDING (done, when not NULL, is called exactly once with the outcome and
 * Redis' seq) or an error (nothing taken). The caller gets CS_PENDING with out->event_id and
 * out->ticket (seq 0, frame and exec NULL); without a completion CS_OK with seq 0. Events enter the
 * ring only through cs_store_insert, with Redis' epoch and seq. cs_store_forget is passed on.
 */
typedef struct cs_store_remote_pub {
    const char *exec, *type, *event_id, *json; /* json: one line, the daemon's fields in, no seq */
    size_t exec_len, type_len, event_id_len, json_len;
    uint64_t ticket;
    int final;        /* a type that finishes its execution */
    int generated_id; /* event_id was made here (the producer gave none) */

    /* An answer taken on an answer route (cs_store_submit_answer): the request it answers and the epoch
     * this node knows the execution by; NULL for every other publish. The remote decides there, with the
     * publish, whether the request is still open (exactly once across nodes). */
    const char *answers;
    uint64_t answers_epoch;
} cs_store_remote_pub_t;

typedef struct cs_store_remote {
    cs_err_t (*submit)(void *data, const cs_store_remote_pub_t *p, const cs_store_done_t *done, char *detail,
                       size_t detail_len);
    void (*forget)(void *data, uint64_t ticket);
    void *data;
} cs_store_remote_t;

/** Sets the remote step (NULL: none, the store is the order). */
void cs_store_set_remote(cs_store_t *store, const cs_store_remote_t *remote);

/**
 * Stores an event the remote holds, with its epoch and seq, exactly as a publish does (room made, the
 * ring's bounds, status, human input, subscribers woken; no gate, no remote): fl (an ordinary event,
 * json its line) or ev (the whole event, parsed from json). The caller gives seqs in order: seq below
 * the ring's next is here already (out->duplicate, nothing done); above it, the seqs between are not
 * here (subscribers behind get stream.gap). An epoch other than the execution's drops its history and
 * takes the new epoch: subscribers that saw the old one get stream.gap. Returns CS_OK or an error.
 */
cs_err_t cs_store_insert(cs_store_t *store, uint64_t epoch, uint64_t seq, const cs_event_fields_t *fl,
                         json_t *ev, const char *json, size_t json_len, int64_t now_unix_ms,
                         cs_publish_t *out, char *detail, size_t detail_len);

/** Cluster: the history this node holds of execution id is not Redis' any more (Redis lost it, or holds
 * another under epoch): it is dropped and the execution takes epoch, its ring starting at seq 1; its
 * subscribers are woken and those that saw the old history get stream.gap (as cs_store_insert does for an
 * event of a new epoch). Returns 1 when it was rebased, 0 when there is no such execution or it has epoch. */
int cs_store_rebase(cs_store_t *store, const char *id, size_t id_len, uint64_t epoch);

/** Calls fn for every execution that has a history (events or human-input requests). */
void cs_store_each(cs_store_t *store, void (*fn)(cs_exec_t *ex, void *data), void *data);

/** An execution's id (NUL-terminated; its length in *len when len is not NULL). */
const char *cs_exec_id(const cs_exec_t *ex, size_t *len);

/** An execution's status (status.h). */
cs_exec_status_t cs_exec_status(const cs_exec_t *ex);

/** The order of an execution's first event among all executions' (larger: newer); 0 before any. */
uint64_t cs_exec_first_order(const cs_exec_t *ex);

/** An execution's human-input requests (hitl.h: to find one and to await it). */
cs_hitl_t *cs_exec_requests(cs_exec_t *ex);

/** An execution's epoch (its cursors' first part). */
uint64_t cs_exec_epoch(const cs_exec_t *ex);

/** The seqs an execution retains: [*first, *next); *next is the seq its next event gets. */
void cs_exec_seqs(const cs_exec_t *ex, uint64_t *first, uint64_t *next);

/** The status object of GET /v1/executions/{id} (status.h) for ex; new reference, NULL when out of memory. */
json_t *cs_exec_status_json(const cs_exec_t *ex);

/** The status object of execution id (seed nonzero: the seed's /{id}/status shape), also for an
 * execution nothing was posted to, or whose history expired: pending. */
json_t *cs_store_status_json(cs_store_t *store, const char *id, size_t id_len, int seed);

/** Finds an execution, or NULL. */
cs_exec_t *cs_store_find(cs_store_t *store, const char *id, size_t id_len);

/** Returns the frame with that seq if retained, else NULL. O(1). */
cs_frame_t *cs_exec_frame(const cs_exec_t *exec, uint64_t seq);

/** Returns the first retained frame with that event_id, or NULL. */
cs_frame_t *cs_exec_find_event(const cs_exec_t *exec, const char *event_id, size_t len);

/**
 * Opens a subscriber on execution_id (creating a pending execution when none exists yet: a
 * subscriber may wait for an execution nobody has posted to), or on the global stream when
 * execution_id is NULL. The filter is moved into the subscriber. Returns 0 or -ENOMEM.
 */
int cs_sub_open(cs_store_t *store, cs_sub_t *sub, const char *execution_id, size_t id_len,
                const cs_start_t *start, cs_filter_t *filter, const cs_sub_ops_t *ops, void *data);

/**
 * Hands out the next item for sub: a pending stream.gap first, then frames in seq order that pass
 * the filter. Returns 1 with *item filled, or 0 when the subscriber is caught up.
 */
int cs_sub_next(cs_sub_t *sub, cs_item_t *item);

/** Returns nonzero when cs_sub_next would hand out something. */
int cs_sub_has_next(cs_sub_t *sub);

/** Parks a caught-up subscriber: ops->wake is called once at the next publish for it. */
void cs_sub_park(cs_sub_t *sub);

/** Takes a subscriber off its wait list (no-op when not parked). */
void cs_sub_unpark(cs_sub_t *sub);

/** The cursor (execution, or global for the global stream) of the last item handed out, or "" when
 * nothing was; for long-poll's last_event_id. Returns the seq it names (0 for none). */
uint64_t cs_sub_position(const cs_sub_t *sub, char *buf, size_t buflen);

/** Formats the cursor of seq in sub's sequence (its execution's, or the global one) into buf; returns its
 * length. */
size_t cs_sub_cursor(const cs_sub_t *sub, uint64_t seq, char *buf, size_t buflen);

/** Gives back the item cs_sub_next handed out last, unsent: the next cs_sub_next hands it out again. */
void cs_sub_unget(cs_sub_t *sub, const cs_item_t *item);

/** Closes a subscriber; its execution may be freed if nothing else holds it. */
void cs_sub_close(cs_sub_t *sub);

/*
 * History older than the ring (cluster mode, docs/cluster.md "History older than the ring"): a node's ring is
 * a cache of Redis, which may hold older events of an execution than the ring does. A subscriber whose start
 * needs them is held (cs_sub_hold) while they are read: cs_sub_next hands out nothing, cs_sub_has_next says
 * nothing, and cs_sub_held is nonzero. cs_sub_release then gives it the events read (frames of their own,
 * outside every ring, counted in the store's bytes as frames in flight, at most store.ring_events + 128 of
 * them and store.ring_bytes of JSON, the newest kept), resolves its start again against them and the ring
 * together (exactly as cs_sub_open does against the ring alone), and wakes it. It hands them out before the
 * ring's frames, in seq order, without duplicates; what is missing between them and the ring, or before
 * them, is a stream.gap as usual. The subscriber may close meanwhile: the hold stays valid for its holder.
 */

/** One event of an older history: its seq and its JSON as stored (the daemon's fields in, no seq). */
typedef struct cs_hist_event {
    uint64_t seq;
    const char *json;
    size_t json_len;
} cs_hist_event_t;

typedef struct cs_sub_hold cs_sub_hold_t;

/** Holds sub (opened on an execution, not held) with its start (copied) until cs_sub_release. Returns the
 * hold, or NULL when out of memory (sub is then not held). */
cs_sub_hold_t *cs_sub_hold(cs_sub_t *sub, const cs_start_t *start);

/** Nonzero while sub is held. */
int cs_sub_held(const cs_sub_t *sub);

/** Nonzero when sub's next item would be a stream.gap because the history its start needs could not be read
 * (cluster: the read from Redis was given up, cs_sub_release with failed): a stream ends instead (SSE: its
 * last chunk; WebSocket: close 1013), and a long-poll answers 503, for the client to resume again. */
int cs_sub_history_lost(const cs_sub_t *sub);

/** Nonzero while the hold's subscriber is still open (0 once it closed: only cs_sub_release is left to do).
 */
int cs_sub_hold_open(const cs_sub_hold_t *hold);

/** Who is told of every subscriber opened on an execution (the cluster, to read older history): opened runs
 * at the end of cs_sub_open and may hold the subscriber (cs_sub_hold). */
typedef struct cs_store_history {
    void (*opened)(void *data, cs_sub_t *sub, const cs_start_t *start);
    void *data;
} cs_store_history_t;

/** Sets it (NULL: none). */
void cs_store_set_history(cs_store_t *store, const cs_store_history_t *h);

/**
 * Ends a hold and frees it: when its subscriber is still open, gives it ev[0..n) (ascending seqs of epoch,
 * the events read; n 0: none) where they are older than its execution's ring, of the ring's epoch and reach
 * up to the ring (contiguous; the newest are kept up to the bounds above), then positions it after its start
 * against them and the ring, and wakes it when parked. failed nonzero: the read failed (sub->hist_failed is
 * set; the subscriber is positioned against the ring alone). Returns the number of events given.
 */
size_t cs_sub_release(cs_sub_hold_t *hold, uint64_t epoch, const cs_hist_event_t *ev, size_t n, int failed);

/** Drops finished executions older than retain_s; call about once a second. */
void cs_store_expire(cs_store_t *store, int64_t now_mono_ms);

/**
 * Checks the store's invariants: rings and the global ring hold valid frames in seq order, indexes
 * and requests agree, and the bytes counted equal the bytes recomputed from what is held (frames
 * held only by subscribers are in *held_out_bytes, with everything in the rings in *ring_bytes).
 * Returns 0, or -1 with detail. O(everything): for tests and the fuzzer.
 */
int cs_store_check(const cs_store_t *store, size_t *ring_bytes, size_t *held_out_bytes, char *detail,
                   size_t detail_len);

/** Fills *st. */
void cs_store_stats(const cs_store_t *store, cs_store_stats_t *st);

/** Returns the store's global ring epoch (for /v1/events cursors). */
uint64_t cs_store_global_epoch(const cs_store_t *store);

/** Marks the monotonic time, used for retention of finished executions. */
void cs_store_set_now(cs_store_t *store, int64_t now_mono_ms);

#endif
