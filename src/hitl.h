/*
 * hitl.h - human-in-the-loop requests of an execution: which
 * human_input_required events are open, their answers, and the producer
 * connections awaiting them (SPEC §3 await and pushes, §4 answers).
 *
 * Requests live beside the ring, not in it: an answer is never lost while the
 * execution is retained, even after its events have left the ring.
 */
#ifndef CS_HITL_H
#define CS_HITL_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

typedef struct cs_hitl_req cs_hitl_req_t;
typedef struct cs_awaiter cs_awaiter_t;

/** Delivers a push line (with its newline) to an awaiter already detached from its request; the
 * owner then forgets and frees aw. */
typedef void (*cs_push_fn)(cs_awaiter_t *aw, const char *line, size_t len);

/** One producer connection waiting for one request's answer. Owned by the producer. */
struct cs_awaiter {
    void *owner;
    cs_push_fn push;
    cs_hitl_req_t *req;
    cs_awaiter_t *prev, *next;   /* on the request */
    cs_awaiter_t *oprev, *onext; /* on the owner */
};

struct cs_hitl_req {
    char *event_id;
    char *task_id; /* NULL when the request had none */
    uint64_t seq;
    int64_t unix_ms;
    json_t *request;      /* the request event as stored (for status and for the completion's fields);
                           * released once answered: only the ids and the push line are needed then */
    size_t request_bytes; /* what request is counted as */
    int answered;
    char *push; /* the push line, once answered */
    size_t push_len;
    size_t bytes;
    cs_awaiter_t *awaiters;
    cs_hitl_req_t *prev, *next; /* on the execution, oldest first */
};

/** An execution's requests. */
typedef struct cs_hitl {
    cs_hitl_req_t *reqs;
    size_t n, n_open;
    size_t bytes;
} cs_hitl_t;

/** Records a stored human_input_required event (text_len: its JSON text's length, for the memory
 * it is counted as). Returns 0 or -ENOMEM. */
int cs_hitl_on_request(cs_hitl_t *h, const json_t *ev, uint64_t seq, size_t text_len);

/**
 * Records a stored human_input_completed event: finds its request (request_event_id, else the
 * request whose event_id the completion reuses, else the latest open request of its task_id), marks
 * it answered and pushes the answer to every awaiter. Returns the request, or NULL when none matched.
 */
cs_hitl_req_t *cs_hitl_on_completed(cs_hitl_t *h, const char *execution_id, const json_t *ev, uint64_t seq);

/** Finds a request by event_id, or NULL. */
cs_hitl_req_t *cs_hitl_find(const cs_hitl_t *h, const char *event_id);

/** The latest open request for task_id (any task when task_id is NULL), or NULL. */
cs_hitl_req_t *cs_hitl_open_for_task(const cs_hitl_t *h, const char *task_id);

/** Attaches aw (owner and push filled by the caller) to req; an answered request pushes at once. */
void cs_hitl_await(cs_hitl_req_t *req, cs_awaiter_t *aw);

/** Detaches an awaiter (a producer going away). */
void cs_hitl_unawait(cs_awaiter_t *aw);

/** Frees every request (awaiters are detached, not freed: their owners free them). */
void cs_hitl_clear(cs_hitl_t *h);

#endif
