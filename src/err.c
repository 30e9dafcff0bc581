/*
 * err.c - see err.h.
 */
#include "err.h"

#include <errno.h>

typedef struct err_row {
    const char *name;   /* the wire name */
    unsigned http;      /* the HTTP status */
    unsigned ws_close;  /* the WebSocket close code when a close is the answer, else 0 */
    int http_as;        /* the code whose name an HTTP error body uses instead (0: its own) */
    const char *detail; /* the detail when the caller gives none */
} err_row_t;

/* Indexed by -(code + CS_ERR_BASE); row 0 is CS_OK. */
#define ROW(code) [-(code)-CS_ERR_BASE]

static const err_row_t rows[] = {
    [0] = {"ok", 200, 0, 0, ""},
    ROW(CS_ERR_INVALID_JSON) = {"invalid_json", 400, 0, CS_ERR_BAD_REQUEST, NULL},
    ROW(CS_ERR_MISSING_FIELD) = {"missing_field", 400, 0, CS_ERR_BAD_REQUEST, NULL},
    ROW(CS_ERR_INVALID_FIELD) = {"invalid_field", 400, 0, CS_ERR_BAD_REQUEST, NULL},
    ROW(CS_ERR_TOO_LARGE) = {"too_large", 413, 1009, 0, NULL},
    ROW(CS_ERR_NOT_FOUND) = {"not_found", 404, 0, 0, NULL},
    ROW(CS_ERR_FORBIDDEN) = {"forbidden", 403, 0, 0, "the token does not grant this scope on this execution"},
    ROW(CS_ERR_BAD_OP) = {"bad_op", 400, 0, CS_ERR_BAD_REQUEST, NULL},
    ROW(CS_ERR_CONFLICT) = {"conflict", 409, 0, 0, NULL},
    ROW(CS_ERR_INTERNAL) = {"internal", 500, 1011, 0, "out of memory"},
    ROW(CS_ERR_BAD_REQUEST) = {"bad_request", 400, 0, 0, NULL},
    ROW(CS_ERR_NO_TOKEN) = {"unauthorized", 401, 0, 0,
                            "a bearer token is required (Authorization: Bearer T, or ?token=T)"},
    ROW(CS_ERR_BAD_TOKEN) = {"unauthorized", 401, 0, 0, "the token is not valid"},
    ROW(CS_ERR_METHOD_NOT_ALLOWED) = {"method_not_allowed", 405, 0, 0, NULL},
    ROW(CS_ERR_UPGRADE_REQUIRED) = {"upgrade_required", 426, 0, 0, NULL},
    ROW(CS_ERR_UNAVAILABLE) = {"unavailable", 503, 1001, 0, "the server is shutting down"},
    ROW(CS_ERR_HEAD_TOO_LARGE) = {"head_too_large", 431, 0, 0, NULL},
    ROW(CS_ERR_HEAD_TIMEOUT) = {"head_timeout", 408, 0, 0, NULL},
    ROW(CS_ERR_STALLED) = {"stalled", 408, 1013, 0, NULL},
    ROW(CS_ERR_REPLIES_UNREAD) = {"replies_unread", 429, 1008, 0, NULL},
};

_Static_assert(sizeof(rows) / sizeof(rows[0]) == (size_t)(-CS_ERR_LAST - CS_ERR_BASE) + 1,
               "every protocol code has a row");

cs_err_t cs_err_canon(int err)
{
    if (err == 0)
        return CS_OK;
    if (err > 0)
        return CS_ERR_INTERNAL; /* not an error value: a bug somewhere else */
    if (err <= -CS_ERR_BASE) {
        if (err < CS_ERR_LAST || -err - CS_ERR_BASE == 0)
            return CS_ERR_INTERNAL;
        return (cs_err_t)err;
    }
    switch (-err) {
    case EMSGSIZE:
        return CS_ERR_TOO_LARGE;
    case EINVAL:
        return CS_ERR_BAD_REQUEST;
    case ENOENT:
        return CS_ERR_NOT_FOUND;
    case EACCES:
    case EPERM:
        return CS_ERR_FORBIDDEN;
    case EAGAIN:
        return CS_ERR_UNAVAILABLE;
    default:
        return CS_ERR_INTERNAL; /* ENOMEM, EIO, ... */
    }
}

static const err_row_t *row_of(int err)
{
    cs_err_t c = cs_err_canon(err);

    return &rows[c == CS_OK ? 0 : -(int)c - CS_ERR_BASE];
}

const char *cs_err_name(int err)
{
    return row_of(err)->name;
}

unsigned cs_err_http_status(int err)
{
    return row_of(err)->http;
}

const char *cs_err_http_name(int err)
{
    const err_row_t *r = row_of(err);

    return r->http_as != 0 ? row_of(r->http_as)->name : r->name;
}

unsigned cs_err_ws_close(int err)
{
    return row_of(err)->ws_close;
}

const char *cs_err_detail(int err)
{
    return row_of(err)->detail;
}
