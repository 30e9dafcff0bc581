/*
 * listener.h - the one TCP listener. Each accepted connection waits (with a
 * deadline and a size cap) until its request head is complete in the socket
 * buffer, read with MSG_PEEK; then the still-unread socket goes to
 * libwebsockets (Upgrade: websocket) or libmicrohttpd. A head over
 * limits.head_bytes is answered 431, one not complete within
 * limits.head_timeout_s is closed, garbage and TLS hellos are closed at once.
 */
#ifndef CS_LISTENER_H
#define CS_LISTENER_H

#include <stddef.h>

#include "daemon.h"

/** Binds and listens on cfg->listen_host:listen_port. Returns 0 or -errno with err. */
int cs_listener_new(cs_listener_t **out, cs_daemon_t *d, char *err, size_t errlen);

/** Returns nonzero when the listening address is a loopback one. */
int cs_listener_is_loopback(const char *host);

/** Stops accepting (closes the listening socket); connections waiting for their head are closed. */
void cs_listener_close(cs_listener_t *l);

/** Returns the number of connections still waiting for their head. */
size_t cs_listener_pending(const cs_listener_t *l);

/** Frees the listener (closing it first if needed). */
void cs_listener_free(cs_listener_t *l);

#endif
