/*
 * auth.h - bearer tokens at the door.
 *
 * Presented tokens are hashed with SHA-256 and compared in constant time with
 * every configured hash (CRYPTO_memcmp); the token itself is never stored or
 * logged. With auth.jwt_secret, a token that matches none of them and has the
 * shape of a JWT (three base64url parts) is verified as an HS256-signed JWT whose
 * claims (exp, nbf, sub, scope, executions) make the principal. Executions are
 * matched with fnmatch(3) globs. With no token configured every request is let
 * in, which cs_auth_new allows only on a loopback listener.
 */
#ifndef CS_AUTH_H
#define CS_AUTH_H

#include <stddef.h>

#include "cfgschema.h"
#include "config.h"
#include "err.h"

typedef struct cs_auth cs_auth_t;

/* What checking a token gives: CS_OK or an error value of err.h, so every transport answers it through
 * the one error table (401 "unauthorized" with the code's detail, 403 "forbidden"). */
typedef enum cs_auth_result {
    CS_AUTH_OK = CS_OK,
    CS_AUTH_MISSING = CS_ERR_NO_TOKEN,    /* no token presented: 401 */
    CS_AUTH_INVALID = CS_ERR_BAD_TOKEN,   /* unknown token: 401 */
    CS_AUTH_FORBIDDEN = CS_ERR_FORBIDDEN, /* valid, but not that scope or that execution: 403 */
} cs_auth_result_t;

/* Bounds on a signed token (auth.jwt_secret): one over any of them is invalid (401). */
#define CS_AUTH_JWT_MAX_LEN        4096 /* bytes of the whole token */
#define CS_AUTH_JWT_MAX_DEPTH      8    /* JSON nesting of the header and of the payload */
#define CS_AUTH_JWT_MAX_EXECUTIONS 64   /* entries of "executions" (and of a "scope" array) */
#define CS_AUTH_JWT_MAX_GLOB       256  /* bytes of one "executions" entry */
#define CS_AUTH_JWT_MAX_SUB        128  /* bytes of a "sub" used as the principal's name */

/**
 * Who a request is, once its token is known. It points into storage it does not own, so it is
 * valid only as long as that storage: for a configured token (or api_key, or open mode) until the
 * cs_auth_t that produced it is freed (a SIGHUP reload frees it); for a signed token (JWT) only
 * until the next cs_auth_identify or cs_auth_check on the same table, which reuses the one place
 * the table keeps a token's claims. Use it within the request that presented the token, or keep a
 * copy of your own (cs_auth_principal_dup).
 */
typedef struct cs_principal {
    const char *name; /* token name, "api_key", "jwt:<sub>", "jwt", or "anonymous" when auth is open */
    unsigned scopes;
    const char *const *executions; /* globs */
    size_t n_executions;
    void *_own; /* the copy's storage when made by cs_auth_principal_dup, else NULL */
} cs_principal_t;

/**
 * Builds the token table from cfg (tokens, api_key and jwt_secret, all copied). Fails with -EPERM
 * and a message saying why when no token is configured and the listener is not loopback.
 */
int cs_auth_new(cs_auth_t **out, const cs_config_t *cfg, int listener_is_loopback, char *err, size_t errlen);

/** Frees the table. */
void cs_auth_free(cs_auth_t *auth);

/** Returns nonzero when no token is configured (every request is let in). */
int cs_auth_is_open(const cs_auth_t *auth);

/**
 * Authenticates token (NUL-terminated, may be NULL when none was presented) and authorises
 * need_scope (CS_SCOPE_*) on execution_id, or on every execution when execution_id is NULL (the
 * token must then hold the glob "*"). On CS_AUTH_OK, *who is filled when who is not NULL.
 */
cs_auth_result_t cs_auth_check(const cs_auth_t *auth, const char *token, unsigned need_scope,
                               const char *execution_id, cs_principal_t *who);

/** Authenticates token only: fills *who (any scope, any execution). CS_AUTH_OK, _MISSING or _INVALID. */
cs_auth_result_t cs_auth_identify(const cs_auth_t *auth, const char *token, cs_principal_t *who);

/** Authorises need_scope on execution_id (NULL = every execution) for an identified principal. */
cs_auth_result_t cs_auth_authorize(const cs_principal_t *who, unsigned need_scope, const char *execution_id);

/** Returns nonzero when principal may see execution_id (used by the all-executions stream). */
int cs_auth_principal_allows(const cs_principal_t *who, const char *execution_id);

/**
 * Copies *src into *dst with storage of its own, so that dst stays valid across later requests,
 * reloads and cs_auth_free (for a holder that outlives the request, such as a stream). dst may be
 * src (the storage of an earlier copy is then freed). Returns 0, or -ENOMEM with *dst zeroed.
 * Release the copy with cs_auth_principal_release.
 */
int cs_auth_principal_dup(cs_principal_t *dst, const cs_principal_t *src);

/** Frees what cs_auth_principal_dup gave p and zeroes p; a principal it did not copy is left alone. */
void cs_auth_principal_release(cs_principal_t *p);

/**
 * Extracts the token from an Authorization header value ("Bearer T", scheme case-insensitive,
 * surrounding blanks ignored). Returns a pointer into value and its length, or NULL.
 */
const char *cs_auth_bearer(const char *value, size_t *len);

/**
 * The token a request presents, the same on every transport: the bearer token of its Authorization
 * header (authorization: the header's value, or NULL), else its ?token= argument (arg, or NULL).
 * Copied NUL-terminated into buf; one too long for buf is "\x7f" (invalid, not missing). NULL when
 * the request presents none.
 */
const char *cs_auth_request_token(const char *authorization, const char *arg, char *buf, size_t buflen);

/**
 * How the configuration's "auth.tokens" key is read, printed, copied and freed (the row's ops in
 * config.c's table): an array of {name, token or sha256, scopes, executions} into cs_config_t's tokens
 * and n_tokens, each "token" literal hashed at once. Names and tokens must be unique.
 */
extern const cs_cfg_ops_t cs_auth_tokens_ops;

#endif
