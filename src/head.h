/*
 * head.h - a quick look at a request head still sitting in the socket buffer
 * (read with MSG_PEEK), to decide whether libwebsockets or libmicrohttpd gets
 * the connection. Pure, so it can be fuzzed.
 */
#ifndef CS_HEAD_H
#define CS_HEAD_H

#include <stddef.h>

typedef enum cs_head_result {
    CS_HEAD_INCOMPLETE = 0, /* no blank line yet */
    CS_HEAD_HTTP,           /* a complete head for libmicrohttpd */
    CS_HEAD_WEBSOCKET,      /* a complete head asking for "Upgrade: websocket" */
    CS_HEAD_INVALID,        /* not HTTP/1.x at all (TLS, binary garbage) */
} cs_head_result_t;

/**
 * Scans buf[0..len). Decides CS_HEAD_INVALID as early as the request line shows it is not
 * "TOKEN SP TARGET SP HTTP/1.x"; CS_HEAD_INCOMPLETE until the blank line ending the head. On a
 * complete head, *head_len (when not NULL) is its length including the blank line.
 */
cs_head_result_t cs_head_scan(const char *buf, size_t len, size_t *head_len);

/** A string inside the head: not NUL-terminated. */
typedef struct cs_head_str {
    const char *p;
    size_t n;
} cs_head_str_t;

/** What the native SSE writer reads from a GET head (see cs_head_parse). */
typedef struct cs_head_req {
    cs_head_str_t path;  /* the target up to '?' */
    cs_head_str_t query; /* after '?', possibly empty */
    cs_head_str_t authorization, last_event_id, origin;
} cs_head_req_t;

/**
 * Parses a complete head (buf[0..len), len = its head_len) strictly: "GET /path[?query] HTTP/1.1",
 * CRLF line ends, "Name: value" fields of token names and visible values, no body (Content-Length
 * other than 0, Transfer-Encoding), no obsolete line folding, no '%' in the path, no repeated
 * Authorization, Last-Event-ID or Origin. Returns 0, or -1 for anything else: such requests go to
 * libmicrohttpd, which answers them (errors included) the way it always has.
 */
int cs_head_parse(const char *buf, size_t len, cs_head_req_t *r);

/**
 * Looks up the first query argument called name and decodes it (%XX, '+' as a space) into
 * out[0..outlen) NUL-terminated. Returns 1 found, 0 absent, -1 when the argument is there but has no
 * '=', a bad or NUL escape, or does not fit (the caller then lets libmicrohttpd read the request).
 */
int cs_head_arg(cs_head_str_t query, const char *name, char *out, size_t outlen);

/**
 * Returns nonzero when the request target of a head (buf[0..len), its request line first) holds an
 * encoded NUL byte ("%00"), which decodes to a string cut short: the path, or a query value. Such a
 * request is refused with 400 whichever library would read it (libmicrohttpd's side checks its own).
 */
int cs_head_target_nul(const char *buf, size_t len);

#endif
