/*
 * hitl.h - human-in-the-loop requests of an execution: which
 * human_input_required events are open, their answers, and the producer
 * connections awaiting them (SPEC §3 await and pushes, §4 answers).
 *
 * Requests live beside the ring, not in it: an answer is never lost while the
 * execution is retained, even after its events have left the ring. An open request
 * pins its execution in the store (store.c): it is never evicted or expired while
 * a runtime may be waiting for its answer.
 */
#ifndef CS_HITL_H
#define CS_HITL_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uthash.h>

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
    size_t bytes; /* what this request is counted as against store.max_bytes (cs_hitl_req_bytes) */
    cs_awaiter_t *awaiters;
    cs_hitl_req_t *prev, *next;   /* on the execution, oldest first */
    cs_hitl_req_t *oprev, *onext; /* open requests of the execution, oldest first */
    cs_hitl_req_t *tprev, *tnext; /* open requests of the same task, oldest first */
    UT_hash_handle hh;            /* h->ids, by event_id */
    UT_hash_handle th;            /* h->tasks, by task_id: the oldest open request of its task */
};

/** An execution's requests, indexed by event_id and (open ones) by task_id: every lookup is O(1). */
typedef struct cs_hitl {
    cs_hitl_req_t *reqs;  /* all, oldest first */
    cs_hitl_req_t *open;  /* open ones, oldest first (utlist: open->oprev is the newest) */
    cs_hitl_req_t *ids;   /* hash by event_id (unique within the execution) */
    cs_hitl_req_t *tasks; /* hash by task_id of the first open request of each task */
    size_t n, n_open;
    size_t bytes;      /* sum of every request's bytes */
    size_t open_bytes; /* sum of the open requests' bytes */
} cs_hitl_t;

/** What a request event whose JSON text is text_len bytes is counted as, open: its structure, ids
 * and a jansson copy of the event (about twice its text). */
size_t cs_hitl_request_cost(const json_t *ev, size_t text_len);

/** What a request is counted as now (open: cs_hitl_request_cost; answered: ids and push line). */
size_t cs_hitl_req_bytes(const cs_hitl_req_t *r);

/** Records a stored human_input_required event (text_len: its JSON text's length, for the memory
 * it is counted as: cs_hitl_request_cost). Its event_id must name no request of h yet (the store
 * acknowledges such a re-post as a duplicate). Returns 0, -EEXIST or -ENOMEM. */
int cs_hitl_on_request(cs_hitl_t *h, const json_t *ev, uint64_t seq, size_t text_len);

/**
 * The request a human_input_completed event answers: request_event_id, else the request whose
 * event_id the completion reuses, else the latest open request of its task_id (of any task when it
 * has none). NULL when none matched; the request may already be answered.
 */
cs_hitl_req_t *cs_hitl_match_completed(const cs_hitl_t *h, const json_t *ev);

/** Renders the push line (with its newline, NUL-terminated, malloc'd) that answers r with the
 * completion ev stored at seq; NULL when out of memory. */
char *cs_hitl_push_line(const cs_hitl_req_t *r, const char *execution_id, const json_t *ev, uint64_t seq,
                        size_t *len);

/** Marks the open request r answered with push (taken over, from cs_hitl_push_line), releases its
 * copy of the request and pushes the answer to every awaiter. */
void cs_hitl_answer(cs_hitl_t *h, cs_hitl_req_t *r, char *push, size_t push_len);

/**
 * Records a stored human_input_completed event: cs_hitl_match_completed, then cs_hitl_push_line and
 * cs_hitl_answer when the request is open. Returns the request, or NULL when none matched.
 */
cs_hitl_req_t *cs_hitl_on_completed(cs_hitl_t *h, const char *execution_id, const json_t *ev, uint64_t seq);

/** The open requests as GET /v1/executions/{id} lists them (event_id, seq, and the request's task_id,
 * crew_id, agent_id, prompt, context, reason_flags, timestamp), oldest first; new reference. */
json_t *cs_hitl_pending_json(const cs_hitl_t *h);

/** Finds a request by event_id, or NULL. O(1). */
cs_hitl_req_t *cs_hitl_find(const cs_hitl_t *h, const char *event_id);

/** The latest open request for task_id (any task when task_id is NULL), or NULL. O(1). */
cs_hitl_req_t *cs_hitl_open_for_task(const cs_hitl_t *h, const char *task_id);

/** Attaches aw (owner and push filled by the caller) to req; an answered request pushes at once. */
void cs_hitl_await(cs_hitl_req_t *req, cs_awaiter_t *aw);

/** Detaches an awaiter (a producer going away). */
void cs_hitl_unawait(cs_awaiter_t *aw);

/** Frees every request (awaiters are detached, not freed: their owners free them). */
void cs_hitl_clear(cs_hitl_t *h);

/** Checks h's lists, indexes and byte counts against its requests; returns 0, or -1 with detail. */
int cs_hitl_check(const cs_hitl_t *h, char *detail, size_t detail_len);

#endif
