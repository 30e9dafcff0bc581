/*
 * route.h - which endpoint a request path names, and the subscription options
 * of its query string and headers. Shared by the HTTP (libmicrohttpd) and the
 * WebSocket (libwebsockets) sides so both read requests the same way. Pure.
 */
#ifndef CS_ROUTE_H
#define CS_ROUTE_H

#include <stddef.h>

#include "event.h"
#include "filter.h"
#include "store.h"

typedef enum cs_route_kind {
    CS_ROUTE_NONE = 0,
    CS_ROUTE_HEALTH,      /* GET /health */
    CS_ROUTE_HITL_WS,     /* GET /ws/human-input/{id} (WebSocket) */
    CS_ROUTE_HITL_SSE,    /* GET /events/human-input/{id} */
    CS_ROUTE_HITL_POLL,   /* GET /poll/human-input/{id} */
    CS_ROUTE_EXEC_SSE,    /* GET /v1/executions/{id}/events, and /v1/runs/{id}/events (seed 003) */
    CS_ROUTE_EXEC_WS,     /* GET /v1/executions/{id}/ws (WebSocket), and /v1/runs/{id}/ws */
    CS_ROUTE_EXEC_POLL,   /* GET /v1/executions/{id}/poll, and /v1/runs/{id}/poll */
    CS_ROUTE_GLOBAL_SSE,  /* GET /v1/events (SSE of every execution); POST /v1/events (HTTP ingest) */
    CS_ROUTE_DASHBOARD,   /* GET / */
    CS_ROUTE_RESUME,      /* POST /resume (the seed's answer shape) */
    CS_ROUTE_EXEC_ANSWER, /* POST /v1/executions/{id}/human-input */
    CS_ROUTE_EXECS_LIST,  /* GET /v1/executions */
    CS_ROUTE_EXEC_STATUS, /* GET /v1/executions/{id} */
    CS_ROUTE_SEED_STATUS, /* GET /{id}/status (the seed's execution-status client) */
    CS_ROUTE_METRICS,     /* GET /metrics (Prometheus text) */
    CS_ROUTE_WEBHOOKS,    /* GET /v1/webhooks (endpoints, lag, dead letters) */
    CS_ROUTE_INPUTS,      /* GET /inputs (the default crew's inputs, SPEC §9) */
    CS_ROUTE_KICKOFF,     /* POST /kickoff */
    CS_ROUTE_CREWS,       /* GET /v1/crews */
    CS_ROUTE_FAVICON,     /* GET /favicon.ico (the dashboard's icon) */
} cs_route_kind_t;

/* Methods, a bit each, for 405 answers. */
#define CS_METHOD_GET     0x1u
#define CS_METHOD_POST    0x2u
#define CS_METHOD_OPTIONS 0x4u

typedef struct cs_route {
    cs_route_kind_t kind;
    unsigned methods; /* what the route accepts (OPTIONS is always answered) */
    char execution_id[CS_EXECUTION_ID_MAX + 1];
    size_t execution_id_len;
    int bad_id; /* the path has the shape of a route but the id is not a valid execution_id */
} cs_route_t;

/** Matches a path (without the query string). Returns the kind (CS_ROUTE_NONE: no such route). */
cs_route_kind_t cs_route_match(const char *path, size_t len, cs_route_t *r);

/** Returns nonzero for the WebSocket routes. */
int cs_route_is_ws(cs_route_kind_t k);

/** Returns nonzero for the seed-compatible human-input routes (HITL events only, 4 s data heartbeats). */
int cs_route_is_hitl(cs_route_kind_t k);

/** Returns nonzero for long-poll routes. */
int cs_route_is_poll(cs_route_kind_t k);

/** Returns the Allow header value for a method mask, e.g. "GET, OPTIONS". */
const char *cs_route_allow(unsigned methods);

/** Looks up a query argument or a request header for cs_sub_req_parse; NULL when absent. */
typedef const char *(*cs_lookup_fn)(void *ctx, const char *name);

/** The options of a subscription request. */
typedef struct cs_sub_req {
    cs_start_t start;
    char *start_id; /* owned copy behind start.id */
    cs_filter_t filter;
    int named;     /* ?named=1: "event:" lines on SSE */
    int timeout_s; /* long-poll hold */
} cs_sub_req_t;

/**
 * Reads types, since, since_seq, last_event_id, named and timeout from the query (arg) and
 * Last-Event-ID from the headers (hdr). Resume precedence: the Last-Event-ID header (a browser's
 * automatic reconnect), then since_seq, then last_event_id, then since=now, else the whole history.
 * HITL routes ignore types and carry human_input_* only. Returns 0, or -EINVAL with a message that
 * names the parameter in err.
 */
int cs_sub_req_parse(cs_sub_req_t *req, cs_route_kind_t kind, cs_lookup_fn arg, cs_lookup_fn hdr, void *ctx,
                     char *err, size_t errlen);

/** Frees what req owns. */
void cs_sub_req_free(cs_sub_req_t *req);

#endif
