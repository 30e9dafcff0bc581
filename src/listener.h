/*
 * listener.h - the one TCP listener. Each accepted connection waits (with a
 * deadline and a size cap) until its request head is complete in the socket
 * buffer, read with MSG_PEEK; then the still-unread socket goes to
 * libwebsockets (Upgrade: websocket) or libmicrohttpd. A head over
 * limits.head_bytes is answered 431, one not complete within
 * limits.head_timeout_s is closed, garbage and TLS hellos are closed at once.
 * Over limits.max_clients a connection is answered 503, except GET /health,
 * answered 200 from a small reserve (see below).
 */
#ifndef CS_LISTENER_H
#define CS_LISTENER_H

#include <stddef.h>

#include "daemon.h"

/**
 * Accept back-off. When accept fails for want of descriptors or memory (EMFILE, ENFILE, ENOBUFS,
 * ENOMEM), the connection stays in the backlog and the listening socket stays readable: watching it
 * would spin. Instead the socket is not watched for a while (100 ms, doubling to 1 s while it keeps
 * failing), then accepting is tried again. Used by the TCP listener and the ingest socket.
 */
typedef struct cs_accept_backoff {
    cs_io_t *io; /* the listening socket */
    cs_timer_t timer;
    int64_t delay_ms; /* the last delay; 0 when accepting works */
    const char *what; /* "tcp", "ingest": for the log line */
    uint64_t *counter;
} cs_accept_backoff_t;

#define CS_ACCEPT_BACKOFF_MIN_MS 100
#define CS_ACCEPT_BACKOFF_MAX_MS 1000

/** Prepares a back-off for io (already initialised), counting each pause in *counter. */
void cs_accept_backoff_init(cs_accept_backoff_t *b, cs_io_t *io, const char *what, uint64_t *counter);

/** Called when accept failed with err (an errno): for a lack of resources stops watching the socket,
 * arms the retry and returns 1; for anything else returns 0. */
int cs_accept_backoff_failed(cs_accept_backoff_t *b, int err);

/** Called when an accept succeeded: the next failure starts again at the shortest delay. */
void cs_accept_backoff_ok(cs_accept_backoff_t *b);

/** Disarms the retry (the socket is being closed). */
void cs_accept_backoff_stop(cs_accept_backoff_t *b);

/** Binds and listens on cfg->listen_host:listen_port. Returns 0 or -errno with err. */
int cs_listener_new(cs_listener_t **out, cs_daemon_t *d, char *err, size_t errlen);

/** Returns nonzero when the listening address is a loopback one. */
int cs_listener_is_loopback(const char *host);

/** Stops accepting (closes the listening socket); connections waiting for their head are closed. */
void cs_listener_close(cs_listener_t *l);

/** Returns the number of connections still waiting for their head. */
size_t cs_listener_pending(const cs_listener_t *l);

/**
 * Connections over limits.max_clients. Up to CS_LISTENER_HEALTH_RESERVE of them wait (at most 1 s) for
 * their head: GET /health is answered 200 there, anything else 503. Up to CS_LISTENER_REFUSED_LINGER
 * answered ones linger (up to 2 s) so the client reads the answer; past that they are closed at once.
 * So the daemon's TCP descriptors stay below max_clients + both reserves.
 */
#define CS_LISTENER_HEALTH_RESERVE 8
#define CS_LISTENER_REFUSED_LINGER 64

/** Fills in how many connections over limits.max_clients linger answered and wait in the health reserve. */
void cs_listener_over_limit(const cs_listener_t *l, size_t *refused, size_t *reserve);

/** Frees the listener (closing it first if needed). */
void cs_listener_free(cs_listener_t *l);

#endif
