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
#include "transport.h"

/** The most lines a POST /v1/events body may have (a blank line is a line: it gets a reply). A body
 * with more is answered 413 and nothing of it is stored, so a request's work and reply stay bounded. */
#define CS_HTTP_MAX_LINES 10000

/** GET /health's answer: 200 healthy; 503 stopping, or degraded (with the reason) while the journal
 * cannot be written. *body gets the JSON (free it), NULL when out of memory. The listener answers
 * with it too, for a probe over limits.max_clients. */
unsigned cs_http_health(const cs_daemon_t *d, char **body);

/*
 * The transport's row is cs_http_transport (transport.h): libmicrohttpd in external-epoll mode,
 * registered in the loop; it takes every connection the other rows decline but a WebSocket handshake,
 * and counts its SSE streams and long-polls under the http_streams gauge.
 */

#endif
