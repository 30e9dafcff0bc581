/*
 * http.h - the HTTP transport: libmicrohttpd with no listener and no thread of
 * its own, its epoll fd in our loop. SSE streams and held long-polls suspend
 * their connection while caught up and are resumed by a publish.
 */
#ifndef CS_HTTP_H
#define CS_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "daemon.h"

/** The most lines a POST /v1/events body may have (a blank line is a line: it gets a reply). A body
 * with more is answered 413 and nothing of it is stored, so a request's work and reply stay bounded. */
#define CS_HTTP_MAX_LINES 10000

/** Starts libmicrohttpd in external-epoll mode, registered in d->loop. Returns 0 or -errno with err. */
int cs_http_new(cs_http_t **out, cs_daemon_t *d, char *err, size_t errlen);

/** Hands an accepted connection whose (unread) request head is complete to libmicrohttpd; the fd is
 * MHD's afterwards, or closed on failure. Returns 0 or -errno. */
int cs_http_add(cs_http_t *http, int fd, const struct sockaddr *addr, socklen_t addrlen);

/** Housekeeping, every half second: heartbeats on idle SSE streams. */
void cs_http_tick(cs_http_t *http, int64_t now_mono_ms);

/** Starts shutdown: SSE streams end, held polls are answered now. */
void cs_http_shutdown(cs_http_t *http);

/** Returns the number of SSE streams and long-polls in progress. */
size_t cs_http_count(const cs_http_t *http);

/** Stops libmicrohttpd (after cs_http_shutdown has let suspended connections go). */
void cs_http_free(cs_http_t *http);

#endif
