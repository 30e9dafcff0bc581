/*
 * sse.h - Server-Sent Events: the body of a stream (what a cursor has, rendered
 * as SSE), and the streams crewstreamd writes itself.
 *
 * Ordinary SSE requests never reach libmicrohttpd: the listener hands a head it
 * has peeked to this transport's offer, which checks it the way libmicrohttpd's side would
 * (route, token, options) and, when all is well, consumes it, answers 200 and
 * streams chunks straight to the socket. An idle stream then costs its socket
 * and about a kilobyte: no connection pool, no suspend/resume, no epoll change
 * per wake-up. Anything it declines - an error to answer, an unusual head,
 * HTTP/1.0 - goes to libmicrohttpd, whose SSE reader fills from the same body.
 */
#ifndef CS_SSE_H
#define CS_SSE_H

#include <stddef.h>
#include <stdint.h>

#include "daemon.h"
#include "sse_body.h"
#include "store.h"
#include "transport.h"

/*
 * The transport's row is cs_sse_transport (transport.h), offered a head before libmicrohttpd; its
 * streams count under the http_streams gauge.
 */

#endif
