/*
 * err.h - the one error contract of crewstreamd.
 *
 * Every error is a negative int: either a -errno value (from the system, from
 * cs_buf: -ENOMEM, -EMSGSIZE, ...) or one of the protocol codes below, which
 * sit far below any errno (CS_ERR_BASE). CS_OK is 0. One table (err.c) gives
 * each protocol code its wire name - the word in a JSON error body
 * ({"error":name,"detail":...}), an ingest reply ({"ok":false,"error":name})
 * and a WebSocket error message ({"type":"error","error":name}) - its HTTP
 * status, and the WebSocket close code when a close is the answer. A -errno
 * value answers as the protocol code it stands for (cs_err_canon). Pure: no
 * I/O, no state.
 */
#ifndef CS_ERR_H
#define CS_ERR_H

#include <stddef.h>

/* Protocol codes start here (errno values are small positive numbers, at most 4095 on Linux). */
#define CS_ERR_BASE 10000

/** The protocol codes. A cs_err_t is any error value: CS_OK, a code here, or a -errno. */
typedef enum cs_err {
    CS_OK = 0,
    /* Of an event, an ingest line or a client message (SPEC §3). */
    CS_ERR_INVALID_JSON = -(CS_ERR_BASE + 1),
    CS_ERR_MISSING_FIELD = -(CS_ERR_BASE + 2),
    CS_ERR_INVALID_FIELD = -(CS_ERR_BASE + 3),
    CS_ERR_TOO_LARGE = -(CS_ERR_BASE + 4),
    CS_ERR_NOT_FOUND = -(CS_ERR_BASE + 5),
    CS_ERR_FORBIDDEN = -(CS_ERR_BASE + 6),
    CS_ERR_BAD_OP = -(CS_ERR_BASE + 7),
    CS_ERR_CONFLICT = -(CS_ERR_BASE + 8), /* an answer to a request that is not open (HTTP 409) */
    CS_ERR_INTERNAL = -(CS_ERR_BASE + 9),
    /* Of a request (HTTP, a WebSocket handshake, a head the listener reads). */
    CS_ERR_BAD_REQUEST = -(CS_ERR_BASE + 10),
    CS_ERR_NO_TOKEN = -(CS_ERR_BASE + 11),  /* no bearer token presented: 401 "unauthorized" */
    CS_ERR_BAD_TOKEN = -(CS_ERR_BASE + 12), /* a token that is not valid: 401 "unauthorized" */
    CS_ERR_METHOD_NOT_ALLOWED = -(CS_ERR_BASE + 13),
    CS_ERR_UPGRADE_REQUIRED = -(CS_ERR_BASE + 14),
    CS_ERR_UNAVAILABLE = -(CS_ERR_BASE + 15), /* shutting down (a WebSocket: closed 1001), or full */
    CS_ERR_HEAD_TOO_LARGE = -(CS_ERR_BASE + 16),
    CS_ERR_HEAD_TIMEOUT = -(CS_ERR_BASE + 17),
    /* Of a connection that does not keep up: answered by a close (WebSocket), never by a body. */
    CS_ERR_STALLED = -(CS_ERR_BASE + 18),        /* no progress for limits.stall_s */
    CS_ERR_REPLIES_UNREAD = -(CS_ERR_BASE + 19), /* sends messages without reading the replies */
} cs_err_t;

/** The lowest protocol code (for walking the table). */
#define CS_ERR_LAST CS_ERR_REPLIES_UNREAD

/**
 * The protocol code an error value answers as: a protocol code itself; -ENOMEM (and any errno not
 * listed) internal, -EMSGSIZE too_large, -EINVAL bad_request, -ENOENT not_found, -EACCES and -EPERM
 * forbidden, -EAGAIN unavailable. CS_OK stays CS_OK; a positive value (a bug) is internal.
 */
cs_err_t cs_err_canon(int err);

/** The wire name: "invalid_json", "unauthorized", ...; "ok" for CS_OK; "internal" for what is unknown. */
const char *cs_err_name(int err);

/** The HTTP status of the answer: 200 for CS_OK, 400, 401, ... */
unsigned cs_err_http_status(int err);

/**
 * The name a JSON error body of an HTTP response carries (cs_error_json). The same as cs_err_name,
 * except that the codes of a message's content (invalid_json, missing_field, invalid_field, bad_op)
 * are "bad_request" there: an HTTP request is refused as a request, while a line or a WebSocket
 * message names what in it was wrong.
 */
const char *cs_err_http_name(int err);

/** The WebSocket close code when a close is the answer (1001, 1008, 1009, 1011, 1013), else 0 (the
 * client gets an error message and the connection stays). */
unsigned cs_err_ws_close(int err);

/** The detail an answer carries when the caller has none of its own (NULL when the code needs one). */
const char *cs_err_detail(int err);

#endif
