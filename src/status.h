/*
 * status.h - an execution's status as crew platforms report it (SPEC §2): the
 * state machine over the events it sees, progress counters, result and error,
 * and the JSON shapes of GET /v1/executions/{id} and the seed's /{id}/status.
 */
#ifndef CS_STATUS_H
#define CS_STATUS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/** Execution status (SPEC §2). */
typedef enum cs_exec_status {
    CS_EXEC_PENDING = 0,
    CS_EXEC_RUNNING,
    CS_EXEC_PENDING_HUMAN_INPUT,
    CS_EXEC_COMPLETED,
    CS_EXEC_ERROR,
    CS_EXEC_CANCELED,
} cs_exec_status_t;

/** Returns "pending", "running", "pending_human_input", "completed", "error" or "canceled". */
const char *cs_status_name(cs_exec_status_t s);

/** The status named name (one of cs_status_name's), or -1. */
int cs_status_parse(const char *name);

/** Progress counters, from lifecycle events of both naming families. */
typedef struct cs_progress {
    uint32_t tasks_seen, tasks_done, tasks_failed;
    uint32_t agents_seen, agents_done, agents_failed;
    uint32_t tool_calls, tool_errors;
} cs_progress_t;

/**
 * The status of one execution: the state machine's state and what it keeps. Its owner (the store,
 * one per execution) zeroes it, feeds it every stored event with cs_status_apply, and releases it
 * with cs_status_clear; it reads it through the functions below, never writes it.
 */
typedef struct cs_status {
    cs_exec_status_t status;
    int in_flow; /* a flow_started was seen: a crew's end inside it does not end the execution */
    cs_progress_t progress;
    json_t *result;      /* of run.completed */
    char *error_message; /* of run.failed */
} cs_status_t;

/**
 * Applies one stored event (its type; ev, the whole event, may be NULL for a type
 * cs_status_reads_type does not report) to s. n_open is how many human-input requests of the
 * execution are open after this event (pending_human_input while any is). An error text is cut to at
 * most error_max bytes (at a UTF-8 boundary). Returns the new status (also in s->status).
 */
cs_exec_status_t cs_status_apply(cs_status_t *s, const json_t *ev, const char *type, size_t type_len,
                                 size_t n_open, size_t error_max);

/**
 * Returns nonzero for a type whose events the daemon reads beyond execution_id, type, event_id and
 * timestamp: the status machine (run.*, crew_kickoff_*, task, agent and tool events) and the
 * human-input circle (human_input_required, human_input_completed). Matched by family (prefix), so
 * it may report more than is read, never less. Events of any other type are published from those
 * four fields and their line alone (the ingest fast path).
 */
int cs_status_reads_type(const char *type, size_t len);

enum { CS_STATUS_KEEPS_RESULT = 1, CS_STATUS_KEEPS_ERROR = 2 };

/**
 * What cs_status_apply may keep of an event of this type beyond counters: CS_STATUS_KEEPS_RESULT (a
 * reference to its result, a part of the event), CS_STATUS_KEEPS_ERROR (the text of its error), or 0.
 * The store reserves room in store.max_bytes for it before it publishes.
 */
int cs_status_keeps(const char *type, size_t len);

/** Returns nonzero for completed, error and canceled. */
int cs_status_is_final(int status);

/** The state, the result (borrowed, NULL when none) and the error text (NULL when none). */
static inline cs_exec_status_t cs_status_state(const cs_status_t *s)
{
    return s->status;
}
static inline const json_t *cs_status_result(const cs_status_t *s)
{
    return s->result;
}
static inline const char *cs_status_error(const cs_status_t *s)
{
    return s->error_message;
}

/** What the status JSON says beside the status itself: the execution's name, times and counts. */
typedef struct cs_status_view {
    const char *id;
    size_t id_len;
    int64_t created_unix_ms, first_unix_ms, last_unix_ms; /* 0: none (null) */
    uint64_t last_seq;                                    /* events published, and the last seq */
} cs_status_view_t;

/**
 * Renders the status object of GET /v1/executions/{id} (new reference, NULL when out of memory) from s
 * (NULL: an execution nothing was posted to, pending) and v; pending (taken over, may be NULL for [])
 * is its "pending_human_input" array.
 */
json_t *cs_status_json(const cs_status_t *s, const cs_status_view_t *v, json_t *pending);

/**
 * Renders the seed's shape for GET /{id}/status: "status" limited to pending, running, completed and
 * error (pending_human_input reads as running, canceled as error), "result", "error_message",
 * "progress", and "state" with the full status. s NULL: pending.
 */
json_t *cs_status_seed_json(const cs_status_t *s, const char *id, size_t id_len);

/** Frees what the status holds (result, error_message); s may be applied to again. */
void cs_status_clear(cs_status_t *s);

#endif
