/*
 * daemon.h - what every module of crewstreamd shares: the loop, the
 * configuration, the store, the token table, and the transports.
 */
#ifndef CS_DAEMON_H
#define CS_DAEMON_H

#include <stddef.h>
#include <stdint.h>

#include "answer.h"
#include "auth.h"
#include "config.h"
#include "loop.h"
#include "store.h"

typedef struct cs_http cs_http_t;
typedef struct cs_ws cs_ws_t;
typedef struct cs_sse cs_sse_t;
typedef struct cs_transport_ops cs_transport_ops_t;

/** One row of the transports table (transport.h): its operations and the instance they work on. */
typedef struct cs_transport {
    const cs_transport_ops_t *ops;
    void *self;
} cs_transport_t;

#define CS_TRANSPORTS_MAX 8
typedef struct cs_ingest cs_ingest_t;
typedef struct cs_listener cs_listener_t;
typedef struct cs_persist cs_persist_t;
typedef struct cs_webhooks cs_webhooks_t;
typedef struct cs_gateway cs_gateway_t;
typedef struct cs_cluster cs_cluster_t;

/** Counters for logs and /metrics. */
typedef struct cs_counters {
    uint64_t tcp_accepted;
    uint64_t tcp_rejected_full; /* over limits.max_clients */
    uint64_t heads_too_large;   /* answered 431 */
    uint64_t heads_timed_out;
    uint64_t heads_invalid; /* garbage, TLS */
    uint64_t http_requests;
    uint64_t ws_accepted;
    uint64_t ws_refused;
    uint64_t ws_refused_origin; /* handshakes from an Origin http.cors_origins does not allow (403) */
    uint64_t ingest_lines;
    uint64_t ingest_errors;
    uint64_t ingest_reply_failures; /* replies not queued: producer closed, or HTTP 500 */
    uint64_t stalls;
    uint64_t ws_pieces;       /* pieces of fragmented WebSocket messages written */
    uint64_t ws_rx_paused;    /* times a WebSocket's reading stopped for a full reply queue */
    uint64_t ws_flood_closed; /* WebSockets closed (1008) for not reading their replies */
    /* HTTP requests with a body answered before any of it was read, by reason (http.c). */
    uint64_t http_early_unauthorized; /* 401 */
    uint64_t http_early_forbidden;    /* 403 */
    uint64_t http_early_too_large;    /* 413: Content-Length over the route's limit */
    uint64_t http_early_other;        /* 400, 404, 405, 503 */
    uint64_t http_body_overrun;       /* a chunked body past the route's limit: connection closed */
    uint64_t http_lines_refused;      /* POST /v1/events bodies over CS_HTTP_MAX_LINES lines: 413 */
    uint64_t http_body_bytes;         /* gauge: bytes allocated for request bodies being received */
    uint64_t accept_backoffs;         /* accept paused for want of descriptors (TCP and ingest) */
    uint64_t health_over_limit;       /* GET /health answered 200 over limits.max_clients */
    uint64_t tcp_refused_unlingered;  /* refused over limits.max_clients and closed at once: linger full */
    uint64_t gateway_failed_records;  /* a failed kickoff's run.failed could not be stored (logged) */
} cs_counters_t;

typedef struct cs_daemon {
    cs_loop_t *loop;
    cs_config_t *cfg;
    cs_store_t *store;
    cs_auth_t *auth;
    cs_transport_t transports[CS_TRANSPORTS_MAX]; /* in the order the listener offers them a head */
    size_t n_transports;
    cs_ws_t *ws; /* the WebSocket transport's row's instance (for its /metrics lines) */
    cs_ingest_t *ingest;
    cs_listener_t *listener;
    cs_persist_t *persist;   /* the journal (persist.h), NULL when memory only */
    cs_webhooks_t *webhooks; /* webhooks out (webhook.h) */
    cs_gateway_t *gateway;   /* the crew gateway (gateway.h), made and driven by ingest.c */
    cs_cluster_t *cluster;   /* cluster mode (cluster.h), NULL when this node is alone */
    int stopping;            /* SIGTERM/SIGINT seen: no new work, drain */
    size_t clients;          /* open TCP connections, whoever holds them */
    cs_counters_t counters;
} cs_daemon_t;

#endif
