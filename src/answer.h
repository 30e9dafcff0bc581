/*
 * answer.h - answering a human-input request (SPEC §4): reading an answer
 * from a client's JSON, finding the open request it names, and publishing the
 * human_input_completed event that closes it. The publish is an ordinary one
 * (store.h); the store's human-input step then pushes the answer to every
 * producer connection awaiting it (hitl.h), as for a completion a producer
 * posts itself. Transports (POST /resume, POST /v1/executions/{id}/human-input,
 * a WebSocket message) call cs_answer_take or, with an answer already read,
 * cs_store_answer.
 */
#ifndef CS_ANSWER_H
#define CS_ANSWER_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "hitl.h"
#include "store.h"

/** What answers a human-input request (SPEC §4). */
typedef struct cs_answer {
    const char *event_id;         /* the request's event_id, or NULL */
    const char *task_id;          /* else the latest open request of this task (or of any task when NULL) */
    const json_t *human_feedback; /* usually a string; may be NULL */
    const json_t *is_approve;     /* a boolean, or NULL */
    const char *answered_by;      /* who answered (the token's name), carried in the completion; NULL: nobody
                                   * named (auth open) */
} cs_answer_t;

/** Reads {"event_id" or "task_id", "human_feedback", "is_approve"} (pointers into o): is_approve and one
 * of the ids are required, human_feedback is optional. Returns CS_OK, or CS_ERR_INVALID_JSON /
 * CS_ERR_MISSING_FIELD / CS_ERR_INVALID_FIELD with a detail naming the field. */
cs_err_t cs_answer_from_json(const json_t *o, cs_answer_t *a, char *detail, size_t detail_len);

/**
 * The open request of h that a names: by event_id, else the latest open one of a's task (of any task
 * when a names none). Returns CS_OK with *req, or CS_ERR_CONFLICT with detail (SPEC §4: in a known
 * execution, no such open request - unknown, or already answered - is 409).
 */
cs_err_t cs_answer_find(const cs_hitl_t *h, const cs_answer_t *a, cs_hitl_req_t **req, char *detail,
                        size_t detail_len);

/**
 * The human_input_completed event answering r of execution id with a (new reference, NULL when out of
 * memory): request_event_id, the request's crew_id, task_id and agent_id, human_feedback (null when
 * none) and is_approve.
 */
json_t *cs_answer_completion(const char *id, size_t id_len, const cs_hitl_req_t *r, const cs_answer_t *a);

/**
 * Answers an open request of execution_id: finds it (cs_answer_find) and publishes its completion with
 * cs_store_submit_raw (done as there: NULL completes at once; else CS_PENDING may come back, and done
 * reports the outcome), which pushes the answer to the awaiting runtimes. Returns CS_OK with out filled
 * (out->request_event_id: the request answered), CS_PENDING, CS_ERR_NOT_FOUND (no such execution),
 * CS_ERR_CONFLICT (no such open request) or the publish's error, with detail.
 */
cs_err_t cs_answer_submit(cs_store_t *store, const char *execution_id, size_t id_len, const cs_answer_t *a,
                          int64_t now_unix_ms, const cs_store_done_t *done, cs_publish_t *out, char *detail,
                          size_t detail_len);

/** cs_answer_submit completing at once (no completion). */
cs_err_t cs_store_answer(cs_store_t *store, const char *execution_id, size_t id_len, const cs_answer_t *a,
                         int64_t now_unix_ms, cs_publish_t *out, char *detail, size_t detail_len);

/**
 * The entry point of the answer routes: parse (cs_answer_from_json of the client's message o), find the
 * open request, publish its completion, push to the awaiting runtimes (cs_answer_submit). A transport
 * that can wait passes done: on CS_PENDING it holds its reply (HTTP: MHD_suspend_connection, resumed
 * from done->fn, as long-poll does; WebSocket: the ack is queued from done->fn) and forgets the ticket
 * (cs_store_forget, out->ticket) if its client leaves first.
 */
cs_err_t cs_answer_take(cs_store_t *store, const char *execution_id, size_t id_len, const json_t *o,
                        int64_t now_unix_ms, const cs_store_done_t *done, cs_publish_t *out, char *detail,
                        size_t detail_len);

#endif
