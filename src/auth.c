/*
 * auth.c - see auth.h.
 *
 * The table holds its own copies of everything it needs (names, SHA-256 hashes,
 * scopes, execution globs), so the configuration it was built from may be freed
 * or replaced (SIGHUP) while the table stays in use. No presented token is ever
 * copied, stored or logged: it is hashed where it lies and only the digest is
 * compared.
 */
#include "auth.h"

#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#define CS_AUTH_DIGEST_LEN 32

typedef struct cs_auth_entry {
    char *name;
    unsigned char sha256[CS_AUTH_DIGEST_LEN];
    unsigned scopes; /* already widened: admin carries every other bit */
    char **executions;
    size_t n_executions;
} cs_auth_entry_t;

struct cs_auth {
    cs_auth_entry_t *entries;
    size_t n_entries;
    int open;
};

/* What an open table answers for every request: a single glob that matches every execution. */
static const char *const cs_auth_all_executions[] = {"*"};

/* The admin scope is a superset of every other scope, so a token configured with "admin" alone may
 * also read, respond and publish. Widening once here keeps the check a single mask test and makes
 * the principal's scopes say what the token may really do. Execution globs still bind an admin. */
static unsigned cs_auth_widen(unsigned scopes)
{
    if (scopes & CS_SCOPE_ADMIN)
        scopes |= CS_SCOPE_ALL;
    return scopes;
}

/* Hashes s into md; returns 0, or -1 when OpenSSL fails (which callers treat as "no match"). */
static int cs_auth_sha256(const char *s, size_t n, unsigned char md[CS_AUTH_DIGEST_LEN])
{
    unsigned int mdlen = 0;

    if (EVP_Digest(s, n, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != CS_AUTH_DIGEST_LEN)
        return -1;
    return 0;
}

static void cs_auth_entry_clear(cs_auth_entry_t *e)
{
    free(e->name);
    for (size_t i = 0; i < e->n_executions; i++)
        free(e->executions[i]);
    free(e->executions);
    /* The hash is not the token, but it is what a token is checked against: leave nothing behind. */
    OPENSSL_cleanse(e->sha256, sizeof(e->sha256));
    memset(e, 0, sizeof(*e));
}

/* Fills e with copies of name and the globs; on failure e holds only what must be freed. */
static int cs_auth_entry_fill(cs_auth_entry_t *e, const char *name, const unsigned char *sha256,
                              unsigned scopes, const char *const *executions, size_t n_executions)
{
    e->scopes = cs_auth_widen(scopes);
    memcpy(e->sha256, sha256, CS_AUTH_DIGEST_LEN);
    e->name = strdup(name);
    if (e->name == NULL)
        return -ENOMEM;
    if (n_executions == 0)
        return 0;
    e->executions = calloc(n_executions, sizeof(*e->executions));
    if (e->executions == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n_executions; i++) {
        e->executions[i] = strdup(executions[i]);
        if (e->executions[i] == NULL)
            return -ENOMEM;
        e->n_executions = i + 1;
    }
    return 0;
}

int cs_auth_new(cs_auth_t **out, const cs_config_t *cfg, int listener_is_loopback, char *err, size_t errlen)
{
    cs_auth_t *a = NULL;
    unsigned char md[CS_AUTH_DIGEST_LEN];
    int have_api_key = cfg->api_key != NULL && cfg->api_key[0] != '\0';
    int have_jwt = cfg->jwt_secret != NULL && cfg->jwt_secret[0] != '\0';
    size_t n = cfg->n_tokens + (have_api_key ? 1 : 0);
    int rc;

    *out = NULL;
    if (errlen > 0)
        err[0] = '\0';

    /* A jwt_secret alone counts as "auth configured": the operator asked for a closed door. Signed
     * tokens are verified in a later change; until then such a table has no entry, so every
     * presented token is invalid, which fails closed rather than open. */
    if (n == 0 && !have_jwt && !listener_is_loopback) {
        snprintf(err, errlen,
                 "no tokens configured: refusing to listen on a non-loopback address without "
                 "authentication (set auth.tokens or auth.api_key, or listen on 127.0.0.1)");
        rc = -EPERM;
        goto fail;
    }

    if (cfg->n_tokens > 0 && cfg->tokens == NULL) {
        rc = -EINVAL;
        snprintf(err, errlen, "auth.tokens: %zu tokens counted but none given", cfg->n_tokens);
        goto fail;
    }
    a = calloc(1, sizeof(*a));
    if (a == NULL) {
        rc = -ENOMEM;
        snprintf(err, errlen, "auth: out of memory");
        goto fail;
    }
    a->open = n == 0 && !have_jwt;
    if (n == 0)
        goto done;

    a->entries = calloc(n, sizeof(*a->entries));
    if (a->entries == NULL) {
        rc = -ENOMEM;
        snprintf(err, errlen, "auth: out of memory");
        goto fail;
    }
    for (size_t i = 0; i < cfg->n_tokens; i++) {
        const cs_token_conf_t *t = &cfg->tokens[i];

        /* The configuration loader should never hand these over, but a NULL here would crash the
         * daemon at the first request rather than at start-up, so say which entry is wrong. */
        if (t->name == NULL || (t->n_executions > 0 && t->executions == NULL)) {
            rc = -EINVAL;
            snprintf(err, errlen, "auth.tokens[%zu]: a token needs a name and its executions", i);
            goto fail;
        }
        for (size_t k = 0; k < t->n_executions; k++) {
            if (t->executions[k] == NULL) {
                rc = -EINVAL;
                snprintf(err, errlen, "auth.tokens[%zu].executions[%zu]: missing", i, k);
                goto fail;
            }
        }
        a->n_entries = i + 1;
        rc = cs_auth_entry_fill(&a->entries[i], t->name, t->sha256, t->scopes,
                                (const char *const *)t->executions, t->n_executions);
        if (rc != 0) {
            snprintf(err, errlen, "auth: out of memory");
            goto fail;
        }
    }
    if (have_api_key) {
        /* The seed's single key: read and respond on every execution, kept as its hash only. */
        if (cs_auth_sha256(cfg->api_key, strlen(cfg->api_key), md) != 0) {
            rc = -EIO;
            snprintf(err, errlen, "auth: SHA-256 of auth.api_key failed");
            goto fail;
        }
        a->n_entries = cfg->n_tokens + 1;
        rc = cs_auth_entry_fill(&a->entries[cfg->n_tokens], "api_key", md, CS_SCOPE_READ | CS_SCOPE_RESPOND,
                                cs_auth_all_executions, 1);
        if (rc != 0) {
            snprintf(err, errlen, "auth: out of memory");
            goto fail;
        }
    }
done:
    OPENSSL_cleanse(md, sizeof(md));
    *out = a;
    return 0;

fail:
    OPENSSL_cleanse(md, sizeof(md));
    cs_auth_free(a);
    return rc;
}

void cs_auth_free(cs_auth_t *auth)
{
    if (auth == NULL)
        return;
    for (size_t i = 0; i < auth->n_entries; i++)
        cs_auth_entry_clear(&auth->entries[i]);
    free(auth->entries);
    free(auth);
}

int cs_auth_is_open(const cs_auth_t *auth)
{
    return auth != NULL && auth->open;
}

int cs_auth_principal_allows(const cs_principal_t *who, const char *execution_id)
{
    if (who == NULL)
        return 0;
    for (size_t i = 0; i < who->n_executions; i++) {
        const char *g = who->executions[i];

        /* A request for every execution at once is granted only by the exact glob "*": a glob such
         * as "run-*" matches many ids, but not all of them, so it must not open the global stream. */
        if (execution_id == NULL ? strcmp(g, "*") == 0 : fnmatch(g, execution_id, 0) == 0)
            return 1;
    }
    return 0;
}

static void cs_auth_fill_principal(cs_principal_t *who, const char *name, unsigned scopes,
                                   const char *const *executions, size_t n_executions)
{
    who->name = name;
    who->scopes = scopes;
    who->executions = executions;
    who->n_executions = n_executions;
}

cs_auth_result_t cs_auth_identify(const cs_auth_t *auth, const char *token, cs_principal_t *who)
{
    unsigned char md[CS_AUTH_DIGEST_LEN];
    const cs_auth_entry_t *hit = NULL;

    if (auth != NULL && auth->open) {
        cs_auth_fill_principal(who, "anonymous", CS_SCOPE_ALL, cs_auth_all_executions, 1);
        return CS_AUTH_OK;
    }
    if (token == NULL || token[0] == '\0')
        return CS_AUTH_MISSING;
    if (auth == NULL || cs_auth_sha256(token, strlen(token), md) != 0) {
        OPENSSL_cleanse(md, sizeof(md));
        return CS_AUTH_INVALID;
    }

    /* Compare with every entry, never stopping at the first match, so how long this takes says
     * nothing about where (or whether) the presented token matched. With duplicate hashes the first
     * configured entry wins. */
    for (size_t i = 0; i < auth->n_entries; i++) {
        int same = CRYPTO_memcmp(md, auth->entries[i].sha256, CS_AUTH_DIGEST_LEN) == 0;

        if (same && hit == NULL)
            hit = &auth->entries[i];
    }
    OPENSSL_cleanse(md, sizeof(md));
    if (hit == NULL)
        return CS_AUTH_INVALID;
    cs_auth_fill_principal(who, hit->name, hit->scopes, (const char *const *)hit->executions,
                           hit->n_executions);
    return CS_AUTH_OK;
}

cs_auth_result_t cs_auth_authorize(const cs_principal_t *p, unsigned need_scope, const char *execution_id)
{
    /* need_scope 0 asks only that the token be valid. */
    if ((need_scope & ~p->scopes) != 0)
        return CS_AUTH_FORBIDDEN;
    if (!cs_auth_principal_allows(p, execution_id))
        return CS_AUTH_FORBIDDEN;
    return CS_AUTH_OK;
}

cs_auth_result_t cs_auth_check(const cs_auth_t *auth, const char *token, unsigned need_scope,
                               const char *execution_id, cs_principal_t *who)
{
    cs_principal_t p;
    cs_auth_result_t r = cs_auth_identify(auth, token, &p);

    if (r == CS_AUTH_OK)
        r = cs_auth_authorize(&p, need_scope, execution_id);
    if (r == CS_AUTH_OK && who != NULL)
        *who = p;
    return r;
}

static int cs_auth_is_blank(char c)
{
    return c == ' ' || c == '\t';
}

const char *cs_auth_bearer(const char *value, size_t *len)
{
    static const char scheme[] = "Bearer";
    const size_t sl = sizeof(scheme) - 1;
    const char *p, *end;

    if (len != NULL)
        *len = 0;
    if (value == NULL)
        return NULL;
    p = value;
    while (cs_auth_is_blank(*p))
        p++;
    /* The scheme is case-insensitive (RFC 9110 §11.1) and must be followed by at least one blank, so
     * "BearerX y" is some other scheme, not a bearer token. */
    if (strncasecmp(p, scheme, sl) != 0 || !cs_auth_is_blank(p[sl]))
        return NULL;
    p += sl;
    while (cs_auth_is_blank(*p))
        p++;
    end = p + strlen(p);
    while (end > p && cs_auth_is_blank(end[-1]))
        end--;
    if (end == p)
        return NULL;
    if (len != NULL)
        *len = (size_t)(end - p);
    return p;
}

const char *cs_auth_request_token(const char *authorization, const char *arg, char *buf, size_t buflen)
{
    size_t n = 0;
    const char *t = authorization != NULL ? cs_auth_bearer(authorization, &n) : NULL;

    if (t == NULL && arg != NULL) {
        t = arg;
        n = strlen(arg);
    }
    if (t == NULL)
        return NULL;
    if (n >= buflen)
        return "\x7f"; /* too long to be one of ours: invalid (a token), not missing */
    memcpy(buf, t, n);
    buf[n] = '\0';
    return buf;
}
