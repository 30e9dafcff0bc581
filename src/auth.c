/*
 * auth.c - see auth.h.
 *
 * The table holds its own copies of everything it needs (names, SHA-256 hashes,
 * scopes, execution globs, the JWT secret), so the configuration it was built
 * from may be freed or replaced (SIGHUP) while the table stays in use. No
 * presented token is ever stored or logged: it is hashed where it lies and only
 * the digest is compared. A signed token (JWT) is verified where it lies too; its
 * two JSON parts are decoded into scratch buffers that are wiped before the check
 * returns, and only the claims the principal needs are kept.
 *
 * The signed-token code lives here rather than in a module of its own because
 * the unit and fuzz builds compile auth.c alone (they #include it): auth.c needs
 * nothing but libc, OpenSSL, jansson and the schema engine (cfgschema.c).
 *
 * The "auth.tokens" key of the configuration file is read here too (its rows at
 * the end of this file): a "token" literal is hashed the way a presented token
 * is, and only the hash goes into the configuration.
 */
#include "auth.h"

#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "utf8.h"

#define CS_AUTH_DIGEST_LEN 32

typedef struct cs_auth_entry {
    char *name;
    unsigned char sha256[CS_AUTH_DIGEST_LEN];
    unsigned scopes; /* already widened: admin carries every other bit */
    char **executions;
    size_t n_executions;
} cs_auth_entry_t;

/* What a verified signed token says, read from its payload. */
typedef struct cs_jwt_claims {
    char *sub;         /* "sub" when a printable string of 1..CS_AUTH_JWT_MAX_SUB bytes, else NULL */
    unsigned scopes;   /* CS_SCOPE_* named by "scope", not yet widened; unknown names ignored */
    char **executions; /* the "executions" entries; NULL when n_executions is 0 */
    size_t n_executions;
    int has_executions; /* the claim was present (an empty array included) */
} cs_jwt_claims_t;

/* The signed-token side of the table (auth.jwt_secret). */
typedef struct cs_auth_jwt {
    unsigned char *key; /* the secret's bytes as configured: the HMAC-SHA256 key */
    size_t key_len;
    /* The claims of the last signed token let in, and its principal's name: what that principal
     * points into. Emptied at every identify, so one slot bounds what the table holds however many
     * different tokens come (see cs_principal_t for what that means to a caller). */
    cs_jwt_claims_t last;
    char *last_name;
} cs_auth_jwt_t;

struct cs_auth {
    cs_auth_entry_t *entries;
    size_t n_entries;
    int open;
    /* NULL without auth.jwt_secret. The table's one mutable part: the functions that take the
     * table as const still write the slot through this pointer. */
    cs_auth_jwt_t *jwt;
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

/* ---- signed tokens: HS256 JWT in the compact form (RFC 7519, RFC 7515) ---- */

#define CS_JWT_SIG_LEN 43 /* unpadded base64url of an HMAC-SHA256 (32 bytes) */

/* The value of one base64url character (RFC 4648 §5), or -1 for any other byte: '=', '+', '/',
 * blanks and the rest. */
static int cs_jwt_b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* Nonzero when s[0..n) is non-empty unpadded base64url in its one canonical spelling: the alphabet
 * only (no '=' padding, which JWS forbids), no length that leaves a lone character (n % 4 == 1),
 * and zero in the bits where the last character overhangs the data. */
static int cs_jwt_b64_ok(const char *s, size_t n)
{
    int v = 0;

    if (n == 0 || n % 4 == 1)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if ((v = cs_jwt_b64_value((unsigned char)s[i])) < 0)
            return 0;
    }
    if (n % 4 == 2)
        return (v & 0x0f) == 0;
    if (n % 4 == 3)
        return (v & 0x03) == 0;
    return 1;
}

/* Writes the unpadded base64url of in[0..n) to out (room for 4 * ((n + 2) / 3) + 1 bytes),
 * NUL-terminated, and returns its length. OpenSSL writes standard base64; the two characters that
 * differ are translated and the padding dropped. */
static size_t cs_jwt_b64_encode(const unsigned char *in, size_t n, char *out)
{
    int len = EVP_EncodeBlock((unsigned char *)out, in, (int)n);

    while (len > 0 && out[len - 1] == '=')
        len--;
    for (int i = 0; i < len; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    out[len] = '\0';
    return (size_t)len;
}

/* Decodes s[0..n), which cs_jwt_b64_ok accepted, into out (CS_AUTH_JWT_MAX_LEN bytes) and returns
 * the byte count, or -1. OpenSSL decodes standard base64: the alphabet is translated back and the
 * padding restored, and the zero bytes its decoder counts for that padding are taken off. */
static int cs_jwt_b64_decode(const char *s, size_t n, unsigned char *out)
{
    char std[CS_AUTH_JWT_MAX_LEN + 4];
    size_t pad = (4 - n % 4) % 4;
    int got;

    if (n > CS_AUTH_JWT_MAX_LEN)
        return -1;
    for (size_t i = 0; i < n; i++)
        std[i] = s[i] == '-' ? '+' : s[i] == '_' ? '/' : s[i];
    memset(std + n, '=', pad);
    got = EVP_DecodeBlock(out, (const unsigned char *)std, (int)(n + pad));
    OPENSSL_cleanse(std, n + pad);
    if (got < (int)pad)
        return -1;
    return got - (int)pad;
}

/* Nonzero when token[0..len) has the shape of a compact JWS: three canonical base64url parts
 * joined by two dots. *dot1 and *dot2 are set to the dots. */
static int cs_jwt_is_compact(const char *t, size_t len, const char **dot1, const char **dot2)
{
    const char *a = memchr(t, '.', len), *b;

    if (a == NULL)
        return 0;
    b = memchr(a + 1, '.', len - (size_t)(a + 1 - t));
    if (b == NULL || memchr(b + 1, '.', len - (size_t)(b + 1 - t)) != NULL)
        return 0;
    if (!cs_jwt_b64_ok(t, (size_t)(a - t)) || !cs_jwt_b64_ok(a + 1, (size_t)(b - a - 1)) ||
        !cs_jwt_b64_ok(b + 1, len - (size_t)(b + 1 - t)))
        return 0;
    *dot1 = a;
    *dot2 = b;
    return 1;
}

/* Nonzero when v nests arrays and objects at most depth_left deep (a scalar is depth 0). */
static int cs_jwt_depth_ok(json_t *v, unsigned depth_left)
{
    const char *k;
    json_t *m;
    size_t i;

    if (!json_is_object(v) && !json_is_array(v))
        return 1;
    if (depth_left == 0)
        return 0;
    if (json_is_object(v)) {
        json_object_foreach(v, k, m)
        {
            if (!cs_jwt_depth_ok(m, depth_left - 1))
                return 0;
        }
        return 1;
    }
    json_array_foreach(v, i, m)
    {
        if (!cs_jwt_depth_ok(m, depth_left - 1))
            return 0;
    }
    return 1;
}

/* The JSON object one token part (base64url s[0..n)) holds, into *out. Returns 0; -EINVAL when it
 * is not an object in well-formed JSON, repeats a member (which reader would win is not for the
 * issuer to guess) or holds a NUL byte (jansson skips one after a number, so the text would not be
 * what was signed); -E2BIG when nested deeper than CS_AUTH_JWT_MAX_DEPTH. */
static int cs_jwt_part_object(const char *s, size_t n, json_t **out)
{
    unsigned char buf[CS_AUTH_JWT_MAX_LEN];
    int got = cs_jwt_b64_decode(s, n, buf);
    json_t *v = NULL;
    int rc = -EINVAL;

    *out = NULL;
    if (got < 0 || memchr(buf, '\0', (size_t)got) != NULL)
        goto done;
    v = json_loadb((const char *)buf, (size_t)got, JSON_REJECT_DUPLICATES, NULL);
    if (v == NULL || !json_is_object(v))
        goto done;
    if (!cs_jwt_depth_ok(v, CS_AUTH_JWT_MAX_DEPTH)) {
        rc = -E2BIG;
        goto done;
    }
    *out = v;
    v = NULL;
    rc = 0;
done:
    json_decref(v);
    if (got > 0)
        OPENSSL_cleanse(buf, (size_t)got);
    return rc;
}

/* The header must name HS256 exactly ("none" or any other algorithm is refused, whatever the
 * signature), be typed "JWT" (any case) if typed at all, and ask for no extension a verifier would
 * have to understand ("crit": we understand none). Returns 0 or -ENOTSUP. */
static int cs_jwt_header_ok(json_t *h)
{
    const char *alg = json_string_value(json_object_get(h, "alg"));
    json_t *typ = json_object_get(h, "typ");

    if (alg == NULL || strcmp(alg, "HS256") != 0)
        return -ENOTSUP;
    if (typ != NULL && (!json_is_string(typ) || strcasecmp(json_string_value(typ), "JWT") != 0))
        return -ENOTSUP;
    if (json_object_get(h, "crit") != NULL)
        return -ENOTSUP;
    return 0;
}

/* "exp" and "nbf" are NumericDates (seconds since the epoch; any JSON number). The token is
 * expired when now >= exp and not yet valid when now < nbf, with no leeway. A token without "exp"
 * never expires. Returns 0, -EINVAL (not a number), -EKEYEXPIRED or -EAGAIN (try later). */
static int cs_jwt_check_times(json_t *payload, int64_t now)
{
    json_t *exp = json_object_get(payload, "exp"), *nbf = json_object_get(payload, "nbf");

    if ((exp != NULL && !json_is_number(exp)) || (nbf != NULL && !json_is_number(nbf)))
        return -EINVAL;
    if (exp != NULL && (double)now >= json_number_value(exp))
        return -EKEYEXPIRED;
    if (nbf != NULL && (double)now < json_number_value(nbf))
        return -EAGAIN;
    return 0;
}

/* The scope names of auth.tokens[].scopes and of a signed token's "scope": name k is the bit 1u << k. */
static const char *const cs_auth_scope_names[] = {"read", "respond", "publish", "admin", "kickoff"};
#define CS_AUTH_N_SCOPES (sizeof(cs_auth_scope_names) / sizeof(cs_auth_scope_names[0]))

/* The scope bit a name stands for, or 0 for any other name. */
static unsigned cs_jwt_scope_bit(const char *w, size_t n)
{
    for (size_t k = 0; k < CS_AUTH_N_SCOPES; k++) {
        if (strlen(cs_auth_scope_names[k]) == n && memcmp(cs_auth_scope_names[k], w, n) == 0)
            return 1u << k;
    }
    return 0;
}

/* "scope": space-separated names in one string, as OAuth writes it ("read respond"), or an array of
 * names. Unknown names are ignored: one token may carry scopes meant for other services. Missing
 * means no scope at all. Returns 0, -EINVAL (another type) or -E2BIG (a longer array). */
static int cs_jwt_read_scope(json_t *v, unsigned *scopes)
{
    size_t i;
    json_t *s;

    *scopes = 0;
    if (v == NULL)
        return 0;
    if (json_is_string(v)) {
        const char *p = json_string_value(v), *end = p + json_string_length(v);

        while (p < end) {
            const char *w = p;

            while (p < end && *p != ' ')
                p++;
            *scopes |= cs_jwt_scope_bit(w, (size_t)(p - w));
            if (p < end)
                p++;
        }
        return 0;
    }
    if (!json_is_array(v))
        return -EINVAL;
    if (json_array_size(v) > CS_AUTH_JWT_MAX_EXECUTIONS)
        return -E2BIG;
    json_array_foreach(v, i, s)
    {
        if (!json_is_string(s))
            return -EINVAL;
        *scopes |= cs_jwt_scope_bit(json_string_value(s), json_string_length(s));
    }
    return 0;
}

/* "executions": an array of ids or globs, or one as a string. Each entry is a non-empty string of at
 * most CS_AUTH_JWT_MAX_GLOB bytes. Returns 0, -EINVAL, -E2BIG or -ENOMEM (c then holds what must
 * be freed). */
static int cs_jwt_read_executions(json_t *v, cs_jwt_claims_t *c)
{
    size_t n;

    if (v == NULL)
        return 0;
    c->has_executions = 1;
    if (json_is_string(v))
        n = 1;
    else if (json_is_array(v))
        n = json_array_size(v);
    else
        return -EINVAL;
    if (n > CS_AUTH_JWT_MAX_EXECUTIONS)
        return -E2BIG;
    if (n == 0)
        return 0;
    c->executions = calloc(n, sizeof(*c->executions));
    if (c->executions == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        json_t *g = json_is_string(v) ? v : json_array_get(v, i);
        size_t len = json_string_length(g);

        if (!json_is_string(g) || len == 0)
            return -EINVAL;
        if (len > CS_AUTH_JWT_MAX_GLOB)
            return -E2BIG;
        c->executions[i] = strdup(json_string_value(g));
        if (c->executions[i] == NULL)
            return -ENOMEM;
        c->n_executions = i + 1;
    }
    return 0;
}

/* "sub" names the principal when it is a string of 1..CS_AUTH_JWT_MAX_SUB bytes without control
 * characters (a name may reach a log line); anything else is ignored, not refused. */
static int cs_jwt_read_sub(json_t *v, cs_jwt_claims_t *c)
{
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);

    if (s == NULL || n == 0 || n > CS_AUTH_JWT_MAX_SUB)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return 0;
    }
    c->sub = strdup(s);
    return c->sub != NULL ? 0 : -ENOMEM;
}

static void cs_jwt_claims_free(cs_jwt_claims_t *c)
{
    free(c->sub);
    for (size_t i = 0; i < c->n_executions; i++)
        free(c->executions[i]);
    free(c->executions);
    memset(c, 0, sizeof(*c));
}

/*
 * Verifies token[0..len) as a compact HS256 JWT under key at time now (seconds since the epoch) and
 * reads its claims into *c (zeroed first, and freed again on failure). Returns 0, or: -EINVAL not a
 * well-formed JWT, or a claim of the wrong type; -E2BIG over a CS_AUTH_JWT_MAX_* bound; -EACCES the
 * signature does not match; -ENOTSUP the header asks for anything but HS256; -EKEYEXPIRED at or
 * after "exp"; -EAGAIN before "nbf"; -EIO OpenSSL failed; -ENOMEM.
 *
 * The signature is checked first, on the text as it came, so nothing from a sender without the key
 * reaches the JSON parser; the header is read after, so a token signed with our key that names
 * another algorithm is still refused. The signature is compared as base64url text: only the one
 * canonical spelling of the right MAC matches.
 */
static int cs_jwt_verify(const unsigned char *key, size_t key_len, const char *token, size_t len, int64_t now,
                         cs_jwt_claims_t *c)
{
    const char *dot1, *dot2;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    char sig[4 * ((32 + 2) / 3) + 1];
    json_t *header = NULL, *payload = NULL;
    int rc;

    memset(c, 0, sizeof(*c));
    memset(sig, 0, sizeof(sig));
    if (len > CS_AUTH_JWT_MAX_LEN)
        return -E2BIG;
    if (!cs_jwt_is_compact(token, len, &dot1, &dot2))
        return -EINVAL;
    if (HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)token, (size_t)(dot2 - token), md,
             &mdlen) == NULL ||
        mdlen != 32) {
        rc = -EIO;
        goto done;
    }
    cs_jwt_b64_encode(md, mdlen, sig);
    /* The signature's length is no secret; its bytes are compared in constant time. */
    if (len - (size_t)(dot2 + 1 - token) != CS_JWT_SIG_LEN ||
        CRYPTO_memcmp(sig, dot2 + 1, CS_JWT_SIG_LEN) != 0) {
        rc = -EACCES;
        goto done;
    }
    if ((rc = cs_jwt_part_object(token, (size_t)(dot1 - token), &header)) != 0 ||
        (rc = cs_jwt_header_ok(header)) != 0 ||
        (rc = cs_jwt_part_object(dot1 + 1, (size_t)(dot2 - dot1 - 1), &payload)) != 0 ||
        (rc = cs_jwt_check_times(payload, now)) != 0 ||
        (rc = cs_jwt_read_scope(json_object_get(payload, "scope"), &c->scopes)) != 0 ||
        (rc = cs_jwt_read_executions(json_object_get(payload, "executions"), c)) != 0 ||
        (rc = cs_jwt_read_sub(json_object_get(payload, "sub"), c)) != 0)
        goto done;
done:
    if (rc != 0)
        cs_jwt_claims_free(c);
    json_decref(header);
    json_decref(payload);
    OPENSSL_cleanse(md, sizeof(md));
    OPENSSL_cleanse(sig, sizeof(sig));
    return rc;
}

/* Empties the slot a signed token's principal points into. */
static void cs_auth_jwt_forget(cs_auth_jwt_t *j)
{
    cs_jwt_claims_free(&j->last);
    free(j->last_name);
    j->last_name = NULL;
}

static void cs_auth_jwt_free(cs_auth_jwt_t *j)
{
    if (j == NULL)
        return;
    cs_auth_jwt_forget(j);
    if (j->key != NULL)
        OPENSSL_cleanse(j->key, j->key_len);
    free(j->key);
    free(j);
}

/* ---- the table ---- */

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

    /* A jwt_secret alone counts as "auth configured": the operator asked for a closed door, and only
     * signed tokens open it. */
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
    if (have_jwt) {
        size_t klen = strlen(cfg->jwt_secret);

        a->jwt = calloc(1, sizeof(*a->jwt));
        if (a->jwt == NULL || (a->jwt->key = malloc(klen)) == NULL) {
            rc = -ENOMEM;
            snprintf(err, errlen, "auth: out of memory");
            goto fail;
        }
        memcpy(a->jwt->key, cfg->jwt_secret, klen);
        a->jwt->key_len = klen;
    }
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
        /* The seed's single key: read, respond and kickoff (SPEC §9) on every execution, kept as its hash
         * only. */
        if (cs_auth_sha256(cfg->api_key, strlen(cfg->api_key), md) != 0) {
            rc = -EIO;
            snprintf(err, errlen, "auth: SHA-256 of auth.api_key failed");
            goto fail;
        }
        a->n_entries = cfg->n_tokens + 1;
        rc = cs_auth_entry_fill(&a->entries[cfg->n_tokens], "api_key", md,
                                CS_SCOPE_READ | CS_SCOPE_RESPOND | CS_SCOPE_KICKOFF, cs_auth_all_executions,
                                1);
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
    cs_auth_jwt_free(auth->jwt);
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
    who->_own = NULL;
}

int cs_auth_principal_dup(cs_principal_t *dst, const cs_principal_t *src)
{
    const cs_principal_t s = *src; /* dst may be src */
    size_t name_len = strlen(s.name) + 1, size = s.n_executions * sizeof(char *) + name_len;
    char **globs, *p;

    for (size_t i = 0; i < s.n_executions; i++)
        size += strlen(s.executions[i]) + 1;
    memset(dst, 0, sizeof(*dst));
    /* One block: the glob pointers first (malloc aligns them), then every string. */
    globs = malloc(size);
    if (globs == NULL)
        return -ENOMEM;
    p = (char *)(globs + s.n_executions);
    for (size_t i = 0; i < s.n_executions; i++) {
        size_t n = strlen(s.executions[i]) + 1;

        memcpy(p, s.executions[i], n);
        globs[i] = p;
        p += n;
    }
    memcpy(p, s.name, name_len);
    cs_auth_fill_principal(dst, p, s.scopes, (const char *const *)globs, s.n_executions);
    dst->_own = globs;
    /* Copied in place: the copy replaces the storage it was made from. */
    if (dst == src)
        free(s._own);
    return 0;
}

void cs_auth_principal_release(cs_principal_t *p)
{
    if (p == NULL || p->_own == NULL)
        return;
    free(p->_own);
    memset(p, 0, sizeof(*p));
}

/* A token no configured hash matched, tried as a signed token. Its claims go to the table's slot,
 * which the principal then points into. Every way a token can fail is the same 401 to the client:
 * which check failed would only help someone forging one. */
static cs_auth_result_t cs_auth_identify_jwt(cs_auth_jwt_t *j, const char *token, size_t len,
                                             cs_principal_t *who)
{
    cs_jwt_claims_t *c = &j->last;
    const char *name = "jwt";

    if (cs_jwt_verify(j->key, j->key_len, token, len, (int64_t)time(NULL), c) != 0)
        return CS_AUTH_INVALID;
    if (c->sub != NULL) {
        size_t n = strlen(c->sub);

        j->last_name = malloc(n + 5);
        if (j->last_name == NULL) {
            cs_auth_jwt_forget(j);
            return CS_AUTH_INVALID;
        }
        memcpy(j->last_name, "jwt:", 4);
        memcpy(j->last_name + 4, c->sub, n + 1);
        name = j->last_name;
    }
    /* Without "executions" a signed token covers every execution, as a configured token without
     * "executions" does; an issuer that means one execution says so. */
    if (c->has_executions)
        cs_auth_fill_principal(who, name, cs_auth_widen(c->scopes), (const char *const *)c->executions,
                               c->n_executions);
    else
        cs_auth_fill_principal(who, name, cs_auth_widen(c->scopes), cs_auth_all_executions, 1);
    return CS_AUTH_OK;
}

cs_auth_result_t cs_auth_identify(const cs_auth_t *auth, const char *token, cs_principal_t *who)
{
    unsigned char md[CS_AUTH_DIGEST_LEN];
    const cs_auth_entry_t *hit = NULL;
    size_t len;

    /* The previous signed token's principal ends here, whatever this token turns out to be. */
    if (auth != NULL && auth->jwt != NULL)
        cs_auth_jwt_forget(auth->jwt);
    if (auth != NULL && auth->open) {
        cs_auth_fill_principal(who, "anonymous", CS_SCOPE_ALL, cs_auth_all_executions, 1);
        return CS_AUTH_OK;
    }
    if (token == NULL || token[0] == '\0')
        return CS_AUTH_MISSING;
    len = strlen(token);
    if (auth == NULL || cs_auth_sha256(token, len, md) != 0) {
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
    if (hit != NULL) {
        cs_auth_fill_principal(who, hit->name, hit->scopes, (const char *const *)hit->executions,
                               hit->n_executions);
        return CS_AUTH_OK;
    }
    /* Configured tokens first, so one that happens to have a JWT's shape still works. */
    if (auth->jwt != NULL)
        return cs_auth_identify_jwt(auth->jwt, token, len, who);
    return CS_AUTH_INVALID;
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

/* ---- auth.tokens in the configuration file: the rows of one token, read and printed by cfgschema.c ---- */

#define CS_TOK_NAME_MAX 128
#define CS_TOK_GLOB_MAX 256

/* A token name appears in logs and metrics, so it must be printable and short. */
static int cs_tok_check_name(const char *s, cs_cfg_ctx_t *ctx)
{
    size_t n = strlen(s);
    if (n > CS_TOK_NAME_MAX)
        return cs_cfg_fail(ctx, "a token name is at most %d characters", CS_TOK_NAME_MAX);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return cs_cfg_fail(ctx, "a token name must not hold control characters");
    return 0;
}

/* Execution ids are [A-Za-z0-9._:-]; a glob adds fnmatch's "*", "?", "[", "]", "!" and "^". */
static int cs_tok_check_glob(const char *s, cs_cfg_ctx_t *ctx)
{
    static const char ok[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-*?[]!^";
    if (strlen(s) > CS_TOK_GLOB_MAX || strspn(s, ok) != strlen(s))
        return cs_cfg_fail(
            ctx,
            "\"%.64s\" is not an execution id or glob (at most %d of letters, digits, \".\", \"_\", "
            "\":\", \"-\" and the glob characters \"*\", \"?\", \"[...]\")",
            s, CS_TOK_GLOB_MAX);
    return 0;
}

/* "scopes": a non-empty subset of read, respond, publish, admin, kickoff. */
static int cs_tok_parse_scopes(void *base, const cs_cfg_field_t *f, json_t *v, cs_cfg_ctx_t *ctx)
{
    char buf[96];
    unsigned scopes = 0;

    if (!json_is_array(v))
        return cs_cfg_fail(ctx,
                           "expected an array of scopes (read, respond, publish, admin, kickoff), got %s",
                           cs_cfg_describe(v, buf, sizeof(buf)));
    if (json_array_size(v) == 0)
        return cs_cfg_fail(ctx, "expected at least one scope (read, respond, publish, admin, kickoff)");
    for (size_t i = 0; i < json_array_size(v); i++) {
        json_t *s = json_array_get(v, i);
        size_t mark = cs_cfg_push_index(ctx, i);
        size_t k;
        for (k = 0; k < CS_AUTH_N_SCOPES; k++)
            if (json_is_string(s) && strcmp(json_string_value(s), cs_auth_scope_names[k]) == 0)
                break;
        if (k == CS_AUTH_N_SCOPES) {
            if (json_is_string(s))
                cs_cfg_fail(ctx, "unknown scope \"%.64s\" (read, respond, publish, admin, kickoff)",
                            json_string_value(s));
            else
                cs_cfg_fail(ctx, "expected a scope name (read, respond, publish, admin, kickoff), got %s",
                            cs_cfg_describe(s, buf, sizeof(buf)));
            cs_cfg_pop(ctx, mark);
            return -EINVAL;
        }
        cs_cfg_pop(ctx, mark);
        scopes |= 1u << k;
    }
    *CS_CFG_AT(base, f, unsigned) = scopes;
    return 0;
}

static json_t *cs_tok_dump_scopes(const void *base, const cs_cfg_field_t *f)
{
    unsigned scopes = *CS_CFG_AT_C(base, f, unsigned);
    json_t *a = json_array();
    for (size_t k = 0; a != NULL && k < CS_AUTH_N_SCOPES; k++) {
        if ((scopes & (1u << k)) && json_array_append_new(a, json_string(cs_auth_scope_names[k])) != 0) {
            json_decref(a);
            a = NULL;
        }
    }
    return a;
}

/* "token": the literal is hashed at once, as a presented token is, and wiped; only its SHA-256 is kept. */
static int cs_tok_parse_literal(void *base, const cs_cfg_field_t *f, json_t *v, cs_cfg_ctx_t *ctx)
{
    cs_token_conf_t *t = base;

    (void)f;
    if (!json_is_string(v) || json_string_length(v) == 0)
        return cs_cfg_fail(ctx, "expected a non-empty string, got %s", cs_cfg_type_name(v));
    if (strcmp(json_string_value(v), CS_CFG_PLACEHOLDER) == 0)
        return cs_cfg_fail(ctx,
                           "\"" CS_CFG_PLACEHOLDER "\" is what --check-config prints in place of a secret, "
                           "not a token");
    ctx->saw_secret = 1;
    if (cs_auth_sha256(json_string_value(v), json_string_length(v), t->sha256) != 0)
        return cs_cfg_fail(ctx, "SHA-256 failed");
    /* The parsed document is ours alone and is freed right after the walk. */
    OPENSSL_cleanse((char *)json_string_value(v), json_string_length(v));
    return 0;
}

/* "sha256": 64 hex digits, as sha256sum prints them. */
static int cs_tok_parse_token_sha256(void *base, const cs_cfg_field_t *f, json_t *v, cs_cfg_ctx_t *ctx)
{
    cs_token_conf_t *t = base;
    char buf[96];
    const char *s;

    (void)f;
    if (!json_is_string(v))
        return cs_cfg_fail(ctx, "expected a string of 64 hexadecimal digits, got %s",
                           cs_cfg_describe(v, buf, sizeof(buf)));
    s = json_string_value(v);
    if (json_string_length(v) != 64 || strlen(s) != 64)
        return cs_cfg_fail(ctx,
                           "expected 64 hexadecimal digits (the output of printf %%s \"$TOKEN\" | sha256sum, "
                           "without the trailing \"  -\"), got %zu characters",
                           json_string_length(v));
    for (size_t i = 0; i < CS_AUTH_DIGEST_LEN; i++) {
        int hi = cs_hex_digit((unsigned char)s[2 * i]), lo = cs_hex_digit((unsigned char)s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return cs_cfg_fail(ctx, "expected 64 hexadecimal digits, found '%c' at offset %zu",
                               hi < 0 ? s[2 * i] : s[2 * i + 1], hi < 0 ? 2 * i : 2 * i + 1);
        t->sha256[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

static json_t *cs_tok_dump_placeholder(const void *base, const cs_cfg_field_t *f)
{
    (void)base;
    (void)f;
    return json_string(CS_CFG_PLACEHOLDER);
}

static int cs_tok_copy_sha256(void *dst, const void *src, const cs_cfg_field_t *f)
{
    (void)f;
    memcpy(((cs_token_conf_t *)dst)->sha256, ((const cs_token_conf_t *)src)->sha256, CS_AUTH_DIGEST_LEN);
    return 0;
}

/* The hash is not the token, but it is what a token is checked against: leave nothing behind. */
static void cs_tok_release_sha256(void *base, const cs_cfg_field_t *f)
{
    (void)f;
    OPENSSL_cleanse(((cs_token_conf_t *)base)->sha256, CS_AUTH_DIGEST_LEN);
}

static const cs_cfg_ops_t cs_tok_scopes_ops = {.parse = cs_tok_parse_scopes, .dump = cs_tok_dump_scopes};
/* The literal writes the hash's storage and owns none of its own. */
static const cs_cfg_ops_t cs_tok_token_literal_ops = {.parse = cs_tok_parse_literal};
static const cs_cfg_ops_t cs_tok_sha256_ops = {.parse = cs_tok_parse_token_sha256,
                                               .dump = cs_tok_dump_placeholder,
                                               .copy = cs_tok_copy_sha256,
                                               .release = cs_tok_release_sha256};

static const cs_cfg_field_t cs_tok_token_fields[] = {
    {.key = "name",
     .kind = CS_CFG_STRING,
     .flags = CS_CFG_REQUIRED,
     .off = offsetof(cs_token_conf_t, name),
     .check = cs_tok_check_name},
    {.key = "token", .kind = CS_CFG_CUSTOM, .flags = CS_CFG_NODUMP, .ops = &cs_tok_token_literal_ops},
    {.key = "sha256", .kind = CS_CFG_CUSTOM, .ops = &cs_tok_sha256_ops},
    {.key = "scopes",
     .kind = CS_CFG_UINT,
     .flags = CS_CFG_REQUIRED,
     .off = offsetof(cs_token_conf_t, scopes),
     .ops = &cs_tok_scopes_ops},
    /* A token without "executions" may see every execution, as the seed's single key did. */
    {.key = "executions",
     .kind = CS_CFG_STRINGS,
     .flags = CS_CFG_NONEMPTY,
     .def = "[\"*\"]",
     .off = offsetof(cs_token_conf_t, executions),
     .count_off = offsetof(cs_token_conf_t, n_executions),
     .check = cs_tok_check_glob},
    {.key = NULL},
};

/* Parses one token object into t, which starts zeroed. */
static int cs_tok_parse_token(cs_token_conf_t *t, json_t *v, cs_cfg_ctx_t *ctx)
{
    char buf[96];
    int rc;

    if (!json_is_object(v))
        return cs_cfg_fail(ctx,
                           "expected a token object {\"name\", \"token\" or \"sha256\", \"scopes\", "
                           "\"executions\"}, got %s",
                           cs_cfg_describe(v, buf, sizeof(buf)));
    if (json_object_get(v, "token") != NULL && json_object_get(v, "sha256") != NULL)
        return cs_cfg_fail(ctx, "give either \"token\" or \"sha256\", not both");
    rc = cs_cfg_walk_defaults(t, cs_tok_token_fields, ctx);
    if (rc == 0)
        rc = cs_cfg_walk(t, cs_tok_token_fields, v, ctx);
    if (rc != 0)
        return rc;
    if (json_object_get(v, "token") == NULL && json_object_get(v, "sha256") == NULL)
        return cs_cfg_fail(ctx, "missing key \"token\" or \"sha256\"");
    return 0;
}

static void cs_tok_tokens_free(cs_token_conf_t *tokens, size_t n);

/* "auth.tokens": replaces the whole list; names must be unique, and so must the tokens. */
static int cs_tok_parse_tokens(void *base, const cs_cfg_field_t *f, json_t *v, cs_cfg_ctx_t *ctx)
{
    cs_config_t *cfg = base;
    cs_token_conf_t *toks;
    char buf[96];
    size_t n, i;
    int rc = 0;

    (void)f;
    if (!json_is_array(v))
        return cs_cfg_fail(ctx, "expected an array of token objects, got %s",
                           cs_cfg_describe(v, buf, sizeof(buf)));
    n = json_array_size(v);
    toks = calloc(n > 0 ? n : 1, sizeof(*toks));
    if (toks == NULL)
        return cs_cfg_nomem(ctx);
    for (i = 0; i < n; i++) {
        size_t mark = cs_cfg_push_index(ctx, i);
        rc = cs_tok_parse_token(&toks[i], json_array_get(v, i), ctx);
        for (size_t j = 0; rc == 0 && j < i; j++) {
            if (strcmp(toks[j].name, toks[i].name) == 0) {
                size_t m2 = cs_cfg_push_key(ctx, "name");
                rc = cs_cfg_fail(ctx, "duplicate token name \"%.64s\" (auth.tokens[%zu] has it too)",
                                 toks[i].name, j);
                cs_cfg_pop(ctx, m2);
            } else if (CRYPTO_memcmp(toks[j].sha256, toks[i].sha256, sizeof(toks[i].sha256)) == 0) {
                rc = cs_cfg_fail(ctx, "the same token as auth.tokens[%zu] (\"%.64s\")", j, toks[j].name);
            }
        }
        cs_cfg_pop(ctx, mark);
        if (rc != 0)
            goto fail;
    }
    cs_tok_tokens_free(cfg->tokens, cfg->n_tokens);
    cfg->tokens = toks;
    cfg->n_tokens = n;
    return 0;

fail:
    cs_tok_tokens_free(toks, n);
    return rc;
}

static json_t *cs_tok_dump_tokens(const void *base, const cs_cfg_field_t *f)
{
    const cs_config_t *cfg = base;
    json_t *a = json_array();
    (void)f;
    for (size_t i = 0; a != NULL && i < cfg->n_tokens; i++) {
        json_t *t = cs_cfg_dump(&cfg->tokens[i], cs_tok_token_fields);
        if (t == NULL || json_array_append_new(a, t) != 0) {
            json_decref(a);
            a = NULL;
        }
    }
    return a;
}

static void cs_tok_tokens_free(cs_token_conf_t *tokens, size_t n)
{
    if (tokens == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        cs_cfg_release(&tokens[i], cs_tok_token_fields);
    free(tokens);
}

static int cs_tok_copy_tokens(void *dst, const void *src, const cs_cfg_field_t *f)
{
    cs_config_t *d = dst;
    const cs_config_t *s = src;
    (void)f;
    if (s->n_tokens == 0)
        return 0;
    d->tokens = calloc(s->n_tokens, sizeof(*d->tokens));
    if (d->tokens == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < s->n_tokens; i++) {
        if (cs_cfg_copy(&d->tokens[i], &s->tokens[i], cs_tok_token_fields) != 0) {
            cs_tok_tokens_free(d->tokens, i + 1);
            d->tokens = NULL;
            return -ENOMEM;
        }
    }
    d->n_tokens = s->n_tokens;
    return 0;
}

static void cs_tok_release_tokens(void *base, const cs_cfg_field_t *f)
{
    cs_config_t *cfg = base;
    (void)f;
    cs_tok_tokens_free(cfg->tokens, cfg->n_tokens);
    cfg->tokens = NULL;
    cfg->n_tokens = 0;
}

const cs_cfg_ops_t cs_auth_tokens_ops = {.parse = cs_tok_parse_tokens,
                                         .dump = cs_tok_dump_tokens,
                                         .copy = cs_tok_copy_tokens,
                                         .release = cs_tok_release_tokens};
