/*
 * gateway.h - the crew gateway (SPEC §9): which runtimes serve which crews, and where each kickoff goes.
 *
 * A runtime connection says {"op":"serve","crew":…,"inputs":[…],"concurrency":N}; a connection may serve
 * several crews and several connections one crew, each registration (a "serving") with its own
 * concurrency and busy count. A kickoff (POST /kickoff) becomes a job with a fresh execution id: it is
 * pushed to the serving of its crew with free concurrency that is least busy, or waits in a bounded
 * queue (gateway.queue, over every crew) while all are busy or nobody serves the crew. The runtime
 * answers kickoff_ack; a kickoff not acknowledged within gateway.ack_timeout_s, or whose connection ends
 * first, goes back to the front of the queue and to another runtime when one is free. Once acknowledged
 * it is never given to anyone again: a runtime that leaves after the ack keeps it (its events stop; the
 * daemon does not run it twice). A serving's busy count is released when the execution reaches a final
 * status (cs_gateway_finished) or the serving's connection ends. A kickoff for a crew that nobody serves
 * waits at most gateway.queue_timeout_s for one; then it fails (ops->failed: the daemon stores a
 * run.failed for it, so a client polling its status sees "error").
 *
 * Pure: no I/O, no clock. The caller passes the time (monotonic ms) to every call, pushes lines through
 * ops->push, and calls cs_gateway_tick by cs_gateway_next_deadline (ops->changed says when that moved).
 */
#ifndef CS_GATEWAY_H
#define CS_GATEWAY_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "err.h"

typedef struct cs_gateway cs_gateway_t;

/* Bounds of what a runtime registers. */
#define CS_GATEWAY_CREW_MAX        128  /* bytes of a crew name, [A-Za-z0-9._:-] */
#define CS_GATEWAY_INPUTS_MAX      64   /* names in a serve's "inputs" */
#define CS_GATEWAY_INPUT_NAME_MAX  128  /* bytes of one input name */
#define CS_GATEWAY_CONCURRENCY_MAX 4096 /* a serve's "concurrency" */

/** What the gateway asks of the daemon. */
typedef struct cs_gateway_ops {
    /** Queues line (len bytes, with its newline) to the runtime connection conn. Returns 0, or an error
     * value: the kickoff then goes back to the queue, as if the connection had not taken it. */
    int (*push)(void *data, void *conn, const char *line, size_t len);
    /** A kickoff failed before any runtime took it (why says so): the daemon records the failure of
     * the execution (a run.failed event), logs and counts it. */
    void (*failed)(void *data, const char *execution_id, const char *crew, const char *why);
    /** The earliest deadline may have moved: call cs_gateway_tick by cs_gateway_next_deadline. */
    void (*changed)(void *data);
    void *data;
    /** Cluster mode (NULL otherwise): a kickoff of a crew no runtime of this node serves, with its
     * execution id, crew and inputs (valid during the call). Returns 1 when the daemon handed it to the
     * cluster (the gateway holds nothing of it), 0 to queue it here as usual, or -1 with detail to refuse
     * it (503 unavailable). */
    int (*remote)(void *data, const char *execution_id, const char *crew, const json_t *inputs, char *detail,
                  size_t detail_len);
} cs_gateway_ops_t;

/** The configuration the gateway works with (gateway.*), set again after a reload. */
typedef struct cs_gateway_limits {
    size_t queue;             /* kickoffs waiting, over every crew (gateway.queue) */
    int64_t ack_timeout_ms;   /* gateway.ack_timeout_s */
    int64_t queue_timeout_ms; /* gateway.queue_timeout_s: 0 refuses a kickoff nobody serves at once */
} cs_gateway_limits_t;

/** What /metrics and GET /v1/crews show. */
typedef struct cs_gateway_stats {
    size_t crews, runtimes, queued, offered, running; /* gauges */
    uint64_t kickoffs;                                /* accepted by POST /kickoff */
    uint64_t refused_full;                            /* 503: the queue was full */
    uint64_t refused_unknown; /* 503: nobody serves the crew and gateway.queue_timeout_s is 0 */
    uint64_t dispatched;      /* kickoff pushes, re-dispatches included */
    uint64_t acked;
    uint64_t redispatched_timeout; /* not acknowledged within gateway.ack_timeout_s */
    uint64_t redispatched_lost;    /* the connection ended before the ack */
    uint64_t acks_refused;         /* acks for a kickoff given to another runtime, or unknown */
    uint64_t lost_after_ack;       /* the connection ended after the ack: the execution stays its own */
    uint64_t queue_timeouts;       /* failed: nobody served the crew within gateway.queue_timeout_s */
    uint64_t push_failures;        /* a push could not be queued to a connection */
    uint64_t finished;             /* reached a final status */
    uint64_t remote;               /* handed to the cluster (ops->remote): nobody here served the crew */
} cs_gateway_stats_t;

/** Creates an empty gateway. ops is copied. Returns 0 or -ENOMEM. */
int cs_gateway_new(cs_gateway_t **out, const cs_gateway_ops_t *ops, const cs_gateway_limits_t *limits);

/** Frees everything (queued kickoffs are dropped without ops->failed). */
void cs_gateway_free(cs_gateway_t *gw);

/** Sets the limits (a reload): a smaller queue refuses new kickoffs until it drains. */
void cs_gateway_set_limits(cs_gateway_t *gw, const cs_gateway_limits_t *limits);

/**
 * A serve op from connection conn: crew (a string of [A-Za-z0-9._:-], 1-128 bytes), inputs (an array of
 * input names, or NULL for none) and concurrency (1 to CS_GATEWAY_CONCURRENCY_MAX). Serving a crew again
 * on the same connection updates its inputs and concurrency. The queued kickoffs of the crew are
 * dispatched at once. Returns CS_OK, or an error value with detail (nothing changed).
 */
cs_err_t cs_gateway_serve(cs_gateway_t *gw, void *conn, const json_t *crew, const json_t *inputs,
                          const json_t *concurrency, int64_t now, char *detail, size_t detail_len);

/**
 * A kickoff_ack from conn. CS_OK when the kickoff is conn's to run (an ack repeated, too, and a late ack
 * of a kickoff that went back to the queue and was given to nobody else yet); CS_ERR_CONFLICT when it
 * was given to another runtime (conn must not run it); CS_ERR_NOT_FOUND when no such kickoff waits.
 */
cs_err_t cs_gateway_ack(cs_gateway_t *gw, void *conn, const char *execution_id, int64_t now, char *detail,
                        size_t detail_len);

/** conn ended: its servings go, its unacknowledged kickoffs are dispatched again, its acknowledged ones
 * are its own (forgotten here). Nothing happens for a connection that never served. */
void cs_gateway_conn_gone(cs_gateway_t *gw, void *conn, int64_t now);

/**
 * The crew a request means: crew when not NULL, else default_crew (gateway.default_crew) when not NULL,
 * else the only crew served now. Returns the name (valid until the next call that changes the gateway),
 * or NULL with *e and detail: CS_ERR_UNAVAILABLE when no crew is served, CS_ERR_MISSING_FIELD when
 * several are.
 */
const char *cs_gateway_pick_crew(cs_gateway_t *gw, const char *crew, const char *default_crew, cs_err_t *e,
                                 char *detail, size_t detail_len);

/**
 * Whether a kickoff of crew (a name; cs_gateway_pick_crew) with inputs would be taken now: inputs a JSON
 * object holding every input the crew's runtimes declare (CS_ERR_INVALID_FIELD otherwise);
 * CS_ERR_UNAVAILABLE when the queue is full, or when nobody serves the crew and gateway.queue_timeout_s
 * is 0. Returns CS_OK or an error value with detail; changes nothing but the refusal counters.
 */
cs_err_t cs_gateway_admit(cs_gateway_t *gw, const char *crew, const json_t *inputs, char *detail,
                          size_t detail_len);

/**
 * A kickoff of crew with inputs (copied), checked as cs_gateway_admit does: the job is dispatched or
 * queued. Its execution id is id when id[0] is not NUL (the caller drew it, e.g. to register webhooks
 * first; CS_ERR_CONFLICT when the gateway holds it already), else a fresh UUID v4 written to id.
 * Returns CS_OK or an error value with detail.
 */
cs_err_t cs_gateway_kickoff(cs_gateway_t *gw, const char *crew, const json_t *inputs, int64_t now,
                            char id[37], char *detail, size_t detail_len);

/** The execution reached a final status (completed, error, canceled): its serving is not busy with it any
 * more, and a kickoff still waiting for it is dropped (never run). Nothing for an id the gateway does not
 * hold. */
void cs_gateway_finished(cs_gateway_t *gw, const char *execution_id, size_t len, int64_t now);

/** Nonzero when a runtime of this gateway serves crew (a name) now. */
int cs_gateway_serves(const cs_gateway_t *gw, const char *crew);

/** Nonzero when the gateway holds a kickoff for execution_id (queued, offered or running). */
int cs_gateway_holds(const cs_gateway_t *gw, const char *execution_id, size_t len);

/** Handles the deadlines due by now: ack timeouts (re-dispatch) and queue timeouts (ops->failed). */
void cs_gateway_tick(cs_gateway_t *gw, int64_t now);

/** The earliest deadline (monotonic ms), or -1 when none is pending. */
int64_t cs_gateway_next_deadline(const cs_gateway_t *gw);

/** {"inputs":[…]} of crew (a name; cs_gateway_pick_crew), or NULL when out of memory. */
json_t *cs_gateway_inputs_json(const cs_gateway_t *gw, const char *crew);

/** {"crews":[{"crew","inputs","runtimes":[{"id","concurrency","busy"}],"concurrency","busy","queued"}]},
 * crews by name; NULL when out of memory. */
json_t *cs_gateway_crews_json(const cs_gateway_t *gw);

/** Fills st. */
void cs_gateway_stats(const cs_gateway_t *gw, cs_gateway_stats_t *st);

#endif
