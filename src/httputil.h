/*
 * httputil.h - small pieces every HTTP-speaking side shares (libmicrohttpd's,
 * the native SSE writer, the WebSocket handshake, the listener): error bodies,
 * reason phrases, CORS, and the open-files limit.
 */
#ifndef CS_HTTPUTIL_H
#define CS_HTTPUTIL_H

#include <stddef.h>

#include "auth.h"
#include "config.h"

/** Room for a presented token (cs_auth_request_token) on every transport: the longest one auth accepts (a
 * signed token of CS_AUTH_JWT_MAX_LEN bytes) and its NUL; a longer one is invalid (401), never cut short. */
#define CS_TOKEN_BUF (CS_AUTH_JWT_MAX_LEN + 1)

/** Renders the JSON error body {"error":code,"detail":detail} (malloc'd, never NULL unless out of memory). */
char *cs_error_json(const char *code, const char *detail, size_t *len);

/**
 * The JSON error body of an error value (err.h) in an HTTP response: {"error":cs_err_http_name(err),
 * "detail":detail}, or the code's own detail (cs_err_detail) when detail is NULL. Answer it with
 * cs_err_http_status(err).
 */
char *cs_err_json(int err, const char *detail, size_t *len);

/** The reason phrase of an HTTP status code ("Unauthorized"). */
const char *cs_http_reason(unsigned status);

/**
 * The CORS answer to a request from origin (NULL or origin_len 0: none sent): the
 * Access-Control-Allow-Origin value ("*", or origin itself when http.cors_origins lists it, then
 * *vary is set: the answer depends on the Origin header), or NULL for none.
 */
const char *cs_cors_allow(const cs_config_t *cfg, const char *origin, size_t origin_len, int *vary);

/**
 * The open-files soft limit when it is finite and at most 2^20 (what the HTTP libraries may size
 * their connection tables by), else 0.
 */
#define CS_NOFILE_CAP ((size_t)1 << 20)
size_t cs_nofile_limit(void);

#endif
