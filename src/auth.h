/*
 * auth.h - bearer tokens at the door.
 *
 * Presented tokens are hashed with SHA-256 and compared in constant time with
 * every configured hash (CRYPTO_memcmp); the token itself is never stored or
 * logged. Executions are matched with fnmatch(3) globs. With no token configured
 * every request is let in, which cs_auth_new allows only on a loopback listener.
 */
#ifndef CS_AUTH_H
#define CS_AUTH_H

#include <stddef.h>

#include "config.h"

typedef struct cs_auth cs_auth_t;

typedef enum cs_auth_result {
    CS_AUTH_OK = 0,
    CS_AUTH_MISSING,   /* no token presented: 401 */
    CS_AUTH_INVALID,   /* unknown token: 401 */
    CS_AUTH_FORBIDDEN, /* valid, but not that scope or that execution: 403 */
} cs_auth_result_t;

/** Who a request is, once its token is known. Points into the cs_auth_t that produced it. */
typedef struct cs_principal {
    const char *name; /* token name, "api_key", or "anonymous" when auth is open */
    unsigned scopes;
    const char *const *executions; /* globs */
    size_t n_executions;
} cs_principal_t;

/**
 * Builds the token table from cfg (tokens and api_key; jwt_secret is kept for later). Fails with
 * -EPERM and a message saying why when no token is configured and the listener is not loopback.
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

#endif
