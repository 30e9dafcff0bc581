/*
 * whconf.c - the pure parts of webhooks out: the back-off schedule, Standard Webhooks signatures and
 * secrets, the allow list, which registered URL wants which event type, authentication headers, and the
 * config rows of webhooks.endpoints. No I/O, so the unit tests and the config fuzzer take them alone.
 */
#include "whconf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/params.h>

#define WH_BACKOFF_MAX 300000 /* 5 min */
#define WH_URL_MAX     2048

/* ---- pure parts ---- */

int64_t cs_webhook_backoff_ms(unsigned n, double rnd)
{
    int64_t base = 1000;
    for (unsigned i = 1; i < n && base < WH_BACKOFF_MAX; i++)
        base *= 2;
    if (base > WH_BACKOFF_MAX)
        base = WH_BACKOFF_MAX;
    if (rnd < 0)
        rnd = 0;
    if (rnd >= 1)
        rnd = 0.999999;
    /* "Equal jitter": never less than half the step, so the schedule still grows. */
    return base / 2 + (int64_t)((double)(base - base / 2) * rnd);
}

static size_t b64(const unsigned char *in, size_t n, char *out, size_t outlen)
{
    if (outlen < 4 * ((n + 2) / 3) + 1)
        return 0;
    return (size_t)EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

size_t cs_webhook_sign(const unsigned char *key, size_t key_len, const char *id, const char *ts,
                       const char *body, size_t body_len, char *out, size_t outlen)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    EVP_MAC *mac_alg = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = mac_alg ? EVP_MAC_CTX_new(mac_alg) : NULL;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", "SHA256", 0),
                           OSSL_PARAM_construct_end()};
    size_t got = 0, n = 0;

    if (ctx == NULL || EVP_MAC_init(ctx, key, key_len, params) != 1 ||
        EVP_MAC_update(ctx, (const unsigned char *)id, strlen(id)) != 1 ||
        EVP_MAC_update(ctx, (const unsigned char *)".", 1) != 1 ||
        EVP_MAC_update(ctx, (const unsigned char *)ts, strlen(ts)) != 1 ||
        EVP_MAC_update(ctx, (const unsigned char *)".", 1) != 1 ||
        EVP_MAC_update(ctx, (const unsigned char *)body, body_len) != 1 ||
        EVP_MAC_final(ctx, mac, &got, sizeof(mac)) != 1)
        goto out;
    mac_len = (unsigned)got;
    if (outlen < 4)
        goto out;
    memcpy(out, "v1,", 3);
    n = b64(mac, mac_len, out + 3, outlen - 3);
    if (n > 0)
        n += 3;
out:
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac_alg);
    return n;
}

int cs_webhook_secret_key(const char *secret, unsigned char **key, size_t *key_len)
{
    const char *b = secret;
    size_t n, pad = 0;
    unsigned char *k;

    if (strncmp(b, "whsec_", 6) == 0)
        b += 6;
    n = strlen(b);
    if (n == 0 || n % 4 != 0 || n > 1024)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        char c = b[i];
        int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
                 c == '/' || (c == '=' && i >= n - 2);
        if (!ok)
            return -EINVAL;
    }
    if (b[n - 1] == '=')
        pad++;
    if (b[n - 2] == '=')
        pad++;
    if (pad == 1 && b[n - 2] == '=')
        return -EINVAL;
    k = malloc(n / 4 * 3 + 1);
    if (k == NULL)
        return -ENOMEM;
    int got = EVP_DecodeBlock(k, (const unsigned char *)b, (int)n);
    if (got < 0 || (size_t)got < pad) {
        free(k);
        return -EINVAL;
    }
    *key = k;
    *key_len = (size_t)got - pad;
    return 0;
}

int cs_webhook_url_ok(const char *url)
{
    size_t n = strlen(url);
    if (n == 0 || n > WH_URL_MAX)
        return 0;
    for (const unsigned char *p = (const unsigned char *)url; *p; p++)
        if (*p <= 0x20 || *p >= 0x7f)
            return 0;
    return strncmp(url, "http://", 7) == 0 || strncmp(url, "https://", 8) == 0;
}

int cs_webhook_allowed(const char *url, char *const *allow, size_t n_allow)
{
    if (!cs_webhook_url_ok(url))
        return 0;
    /* No user:password@ in the authority: it would hide the real host behind an allowed-looking prefix. */
    const char *auth = strstr(url, "://") + 3;
    size_t alen = strcspn(auth, "/?#");
    if (memchr(auth, '@', alen) != NULL)
        return 0;
    for (size_t i = 0; i < n_allow; i++) {
        size_t n = strlen(allow[i]);
        if (n == 0 || strncmp(url, allow[i], n) != 0)
            continue;
        char last = allow[i][n - 1], next = url[n];
        if (last == '/' || last == '?' || last == '#' || next == '\0' || next == '/' || next == '?' ||
            next == '#')
            return 1;
    }
    return 0;
}

static int type_is(const char *t, size_t len, const char *s)
{
    return strlen(s) == len && memcmp(t, s, len) == 0;
}

static int type_prefix(const char *t, size_t len, const char *p)
{
    size_t n = strlen(p);
    return len > n && memcmp(t, p, n) == 0;
}

unsigned cs_webhook_kinds_for(const char *t, size_t len)
{
    unsigned k = 0;

    if (type_is(t, len, "human_input_required"))
        k |= CS_WEBHOOK_HUMAN;
    if (type_is(t, len, "task_completed") || type_is(t, len, "task_failed") ||
        type_is(t, len, "agent.completed"))
        k |= CS_WEBHOOK_TASK;
    if (type_prefix(t, len, "agent.") || type_prefix(t, len, "agent_execution_") ||
        type_prefix(t, len, "tool.") || type_prefix(t, len, "tool_usage_"))
        k |= CS_WEBHOOK_STEP;
    if (type_is(t, len, "run.completed") || type_is(t, len, "run.failed") ||
        type_is(t, len, "run.canceled") || type_is(t, len, "crew_kickoff_completed") ||
        type_is(t, len, "crew_kickoff_failed"))
        k |= CS_WEBHOOK_CREW;
    return k;
}

/* ---- authentication objects (config and requests share them) ---- */

/* Builds the Authorization header line of an {strategy, ...} object into *out (NULL: none). Returns 0, or
 * -EINVAL with the offending member's name in *what. */
int cs_webhook_auth_header(const json_t *a, char **out, const char **what)
{
    const char *strategy;

    *out = NULL;
    if (a == NULL || json_is_null(a))
        return 0;
    if (!json_is_object(a)) {
        *what = "authentication: expected an object";
        return -EINVAL;
    }
    strategy = json_string_value(json_object_get(a, "strategy"));
    if (strategy != NULL && strcmp(strategy, "bearer") == 0) {
        const char *tok = json_string_value(json_object_get(a, "token"));
        if (tok == NULL || tok[0] == '\0' || strpbrk(tok, "\r\n") != NULL) {
            *what = "authentication.token: expected a non-empty string";
            return -EINVAL;
        }
        return asprintf(out, "Authorization: Bearer %s", tok) < 0 ? (*out = NULL, -ENOMEM) : 0;
    }
    if (strategy != NULL && strcmp(strategy, "basic") == 0) {
        const char *u = json_string_value(json_object_get(a, "username"));
        const char *p = json_string_value(json_object_get(a, "password"));
        char *pair, enc[1024];
        if (u == NULL || p == NULL || strchr(u, ':') != NULL) {
            *what = "authentication: basic needs string username (without ':') and password";
            return -EINVAL;
        }
        if (asprintf(&pair, "%s:%s", u, p) < 0)
            return -ENOMEM;
        size_t n = b64((const unsigned char *)pair, strlen(pair), enc, sizeof(enc));
        free(pair);
        if (n == 0) {
            *what = "authentication: username and password too long";
            return -EINVAL;
        }
        return asprintf(out, "Authorization: Basic %s", enc) < 0 ? (*out = NULL, -ENOMEM) : 0;
    }
    *what = "authentication.strategy: expected \"bearer\" or \"basic\"";
    return -EINVAL;
}

/* ---- config rows: webhooks.endpoints ---- */

/* "*", a type ([A-Za-z0-9._-], 1-64), or a type prefix followed by "*" (what the ?types= filter takes). */
static int type_pattern_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 1 && s[0] == '*')
        return 1;
    if (n > 1 && s[n - 1] == '*')
        n--;
    if (n == 0 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static int ep_conf_check(json_t *e, cs_cfg_ctx_t *ctx, json_t *names)
{
    const char *key;
    json_t *v;
    char *hdr = NULL;
    const char *what = NULL;

    if (!json_is_object(e))
        return cs_cfg_fail(ctx, "expected an object {name, url, types, executions, authentication, secret}");
    json_object_foreach(e, key, v)
    {
        if (strcmp(key, "name") && strcmp(key, "url") && strcmp(key, "types") && strcmp(key, "executions") &&
            strcmp(key, "authentication") && strcmp(key, "secret"))
            return cs_cfg_fail(ctx,
                               "unknown key \"%s\" (known: name, url, types, executions, authentication, "
                               "secret)",
                               key);
    }
    const char *name = json_string_value(json_object_get(e, "name"));
    if (name == NULL || name[0] == '\0' || strlen(name) > 64)
        return cs_cfg_fail(ctx, "name: expected a string of 1-64 characters");
    if (json_object_get(names, name) != NULL)
        return cs_cfg_fail(ctx, "name: \"%s\" is used twice", name);
    json_object_set_new(names, name, json_true());
    const char *url = json_string_value(json_object_get(e, "url"));
    if (url == NULL || !cs_webhook_url_ok(url))
        return cs_cfg_fail(ctx, "url: expected an http:// or https:// URL without spaces");
    v = json_object_get(e, "types");
    if (v != NULL) {
        size_t i;
        json_t *t;
        if (!json_is_array(v) || json_array_size(v) == 0)
            return cs_cfg_fail(ctx,
                               "types: expected a non-empty array of event types or \"prefix.*\" patterns");
        json_array_foreach(v, i, t)
        {
            const char *s = json_string_value(t);
            if (s == NULL || !type_pattern_ok(s))
                return cs_cfg_fail(ctx, "types[%zu]: expected an event type, a \"prefix.*\" pattern or \"*\"",
                                   i);
        }
    }
    v = json_object_get(e, "executions");
    if (v != NULL) {
        size_t i;
        json_t *t;
        if (!json_is_array(v) || json_array_size(v) == 0)
            return cs_cfg_fail(ctx, "executions: expected a non-empty array of ids or globs (\"*\": all)");
        json_array_foreach(
            v, i, t) if (json_string_value(t) == NULL ||
                         json_string_length(t) ==
                             0) return cs_cfg_fail(ctx, "executions[%zu]: expected a non-empty string", i);
    }
    int rc = cs_webhook_auth_header(json_object_get(e, "authentication"), &hdr, &what);
    free(hdr);
    if (rc == -ENOMEM)
        return cs_cfg_nomem(ctx);
    if (rc != 0)
        return cs_cfg_fail(ctx, "%s", what);
    json_t *a = json_object_get(e, "authentication");
    if (a != NULL) {
        /* A dump fed back must not make "(set)" the credential. */
        const char *tok = json_string_value(json_object_get(a, "token"));
        const char *pw = json_string_value(json_object_get(a, "password"));
        if ((tok && strcmp(tok, CS_CFG_PLACEHOLDER) == 0) || (pw && strcmp(pw, CS_CFG_PLACEHOLDER) == 0))
            return cs_cfg_fail(ctx, "authentication: \"" CS_CFG_PLACEHOLDER "\" is what a dump prints for a "
                                    "secret, not a value");
        ctx->saw_secret = 1;
    }
    v = json_object_get(e, "secret");
    if (v != NULL && !json_is_null(v)) {
        unsigned char *k;
        size_t kl;
        const char *s = json_string_value(v);
        if (s == NULL || strncmp(s, "whsec_", 6) != 0 || cs_webhook_secret_key(s, &k, &kl) != 0)
            return cs_cfg_fail(ctx, "secret: expected \"whsec_\" followed by base64 (as Standard Webhooks "
                                    "writes it)");
        free(k);
        ctx->saw_secret = 1;
    }
    return 0;
}

static int ep_conf_parse(void *base, const cs_cfg_field_t *f, json_t *v, cs_cfg_ctx_t *ctx)
{
    json_t **slot = CS_CFG_AT(base, f, json_t *);
    json_t *names, *e;
    size_t i;
    int rc = 0;

    if (!json_is_array(v))
        return cs_cfg_fail(ctx, "expected an array of endpoints");
    names = json_object();
    if (names == NULL)
        return cs_cfg_nomem(ctx);
    json_array_foreach(v, i, e)
    {
        size_t mark = cs_cfg_push_index(ctx, i);
        rc = ep_conf_check(e, ctx, names);
        cs_cfg_pop(ctx, mark);
        if (rc != 0)
            break;
    }
    json_decref(names);
    if (rc != 0)
        return rc;
    json_t *copy = json_deep_copy(v);
    if (copy == NULL)
        return cs_cfg_nomem(ctx);
    json_decref(*slot);
    *slot = copy;
    return 0;
}

static json_t *ep_conf_dump(const void *base, const cs_cfg_field_t *f)
{
    json_t *const *slot = (json_t *const *)CS_CFG_AT_C(base, f, json_t *);
    json_t *out = *slot != NULL ? json_deep_copy(*slot) : json_array();
    json_t *e;
    size_t i;

    if (out == NULL)
        return NULL;
    json_array_foreach(out, i, e)
    {
        json_t *a = json_object_get(e, "authentication");
        if (json_is_object(a)) {
            if (json_object_get(a, "token") != NULL)
                json_object_set_new(a, "token", json_string(CS_CFG_PLACEHOLDER));
            if (json_object_get(a, "password") != NULL)
                json_object_set_new(a, "password", json_string(CS_CFG_PLACEHOLDER));
        }
        if (json_is_string(json_object_get(e, "secret")))
            json_object_set_new(e, "secret", json_string(CS_CFG_PLACEHOLDER));
    }
    return out;
}

static int ep_conf_copy(void *dst, const void *src, const cs_cfg_field_t *f)
{
    json_t *const *s = (json_t *const *)CS_CFG_AT_C(src, f, json_t *);
    json_t **d = CS_CFG_AT(dst, f, json_t *);

    *d = *s != NULL ? json_deep_copy(*s) : NULL;
    return *s != NULL && *d == NULL ? -ENOMEM : 0;
}

static void ep_conf_release(void *base, const cs_cfg_field_t *f)
{
    json_t **slot = CS_CFG_AT(base, f, json_t *);
    json_decref(*slot);
    *slot = NULL;
}

const cs_cfg_ops_t cs_webhook_endpoints_ops = {
    .parse = ep_conf_parse, .dump = ep_conf_dump, .copy = ep_conf_copy, .release = ep_conf_release};
