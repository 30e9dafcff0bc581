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

typedef struct cs_exec cs_exec_t;

/** Progress counters, from lifecycle events of both naming families. */
typedef struct cs_progress {
    uint32_t tasks_seen, tasks_done, tasks_failed;
    uint32_t agents_seen, agents_done, agents_failed;
    uint32_t tool_calls, tool_errors;
} cs_progress_t;

/**
 * Applies one stored event to the execution's status, progress, result and error_message.
 * Human-input state comes from ex->hitl (already updated for this event). ev may be NULL for a
 * type cs_status_reads_type does not report. Returns the new status.
 */
int cs_status_apply(cs_exec_t *ex, const json_t *ev, const char *type, size_t type_len);

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

/** Renders the status object of GET /v1/executions/{id} (new reference, NULL when out of memory). */
json_t *cs_status_json(const cs_exec_t *ex);

/**
 * Renders the seed's shape for GET /{id}/status: "status" limited to pending, running, completed and
 * error (pending_human_input reads as running, canceled as error), "result", "error_message",
 * "progress", and "state" with the full status.
 */
json_t *cs_status_seed_json(const cs_exec_t *ex);

/** Frees what the status holds (result, error_message). */
void cs_status_clear(cs_exec_t *ex);

#endif
