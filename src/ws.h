/*
 * ws.h - the WebSocket transport: libwebsockets on a libuv loop whose backend fd
 * sits in our epoll loop (Debian builds lws without external-poll support).
 */
#ifndef CS_WS_H
#define CS_WS_H

#include <stddef.h>
#include <stdint.h>

#include "daemon.h"
#include "transport.h"

/* The transport's row is cs_ws_transport (transport.h): it takes every head that asks for a WebSocket
 * upgrade (refusing one whose target holds %00) and counts its connections under the websockets gauge.
 * The functions below are what the row calls. */

/** Creates the lws context and its libuv loop, registered in d->loop. Returns 0 or -errno with err. */
int cs_ws_new(cs_ws_t **out, cs_daemon_t *d, char *err, size_t errlen);

/**
 * Hands an accepted TCP connection whose request head (still unread) asks for a WebSocket upgrade
 * to libwebsockets, which reads the head itself. The fd is owned by lws afterwards, or closed on
 * failure. Counts in d->clients until lws destroys it. Returns 0 or -errno.
 */
int cs_ws_adopt(cs_ws_t *ws, int fd);

/** Housekeeping, about once a second: keep-alive pings every heartbeat_s, stalled clients (no
 * progress for limits.stall_s) closed with 1013. */
void cs_ws_tick(cs_ws_t *ws, int64_t now_mono_ms);

/** Starts shutdown: every WebSocket is closed with 1001 "server shutting down". */
void cs_ws_shutdown(cs_ws_t *ws);

/** Returns the number of open WebSocket connections (including ones still in their handshake). */
size_t cs_ws_count(const cs_ws_t *ws);

/** Returns the number of WebSockets in the middle of sending a fragmented (large) message: each
 * holds a reference to one stored frame and has at most one piece of it written ahead. */
size_t cs_ws_held(const cs_ws_t *ws);

/** Destroys the context and closes the libuv loop. */
void cs_ws_free(cs_ws_t *ws);

#endif
