/*
 * sse.h - Server-Sent Events: the body of a stream (what a cursor has, rendered
 * as SSE), and the streams crewstreamd writes itself.
 *
 * Ordinary SSE requests never reach libmicrohttpd: the listener hands a head it
 * has peeked to cs_sse_adopt, which checks it the way libmicrohttpd's side would
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

typedef struct cs_sse cs_sse_t;

int cs_sse_new(cs_sse_t **out, cs_daemon_t *d, char *err, size_t errlen);

/**
 * Offers a connection whose complete head (head_len bytes, nothing after it) sits in its socket
 * buffer, peeked into buf. Returns 1 when the head asked for an SSE stream that is served here
 * (the head is consumed and fd belongs to the stream), 0 to hand fd to libmicrohttpd untouched.
 */
int cs_sse_adopt(cs_sse_t *s, int fd, const char *buf, size_t head_len);

/** Every half second: heartbeats to quiet streams, and the end of streams that make no progress. */
void cs_sse_tick(cs_sse_t *s, int64_t now);

/** Ends every stream (the last chunk, then close). */
void cs_sse_shutdown(cs_sse_t *s);

/** Open streams. */
size_t cs_sse_count(const cs_sse_t *s);

void cs_sse_free(cs_sse_t *s);

#endif
