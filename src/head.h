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

#endif
