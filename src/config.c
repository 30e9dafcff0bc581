/*
 * config.c - see config.h.
 *
 * Every key of the JSON file is one row of a schema table (cfg_root_fields and
 * the tables it points to): its name, its kind, where it lands and its range.
 * The same rows drive the parser, the key paths in error messages and
 * cs_config_dump, so a key cannot be accepted without also being printed, and
 * is printed in the shape it is read.
 *
 * A load works on a copy of the configuration and replaces the original only
 * when the whole file was accepted: a bad file (or a bad SIGHUP reload) leaves
 * the configuration in force exactly as it was.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "log.h"
#include "utf8.h"

#ifndef CS_VERSION
#define CS_VERSION "unknown"
#endif

#define CFG_DEFAULT_LISTEN "127.0.0.1:8000"
#define CFG_DEFAULT_MODE   0660u
/* What cs_config_dump prints for a secret; refused as a value so a dump fed back is not a key. */
#define CFG_PLACEHOLDER "(set)"
/* A configuration file larger than this is surely the wrong file. */
#define CFG_FILE_MAX (4u << 20)
#define CFG_PATH_MAX 256
/* sun_path holds the socket path and its terminating NUL. */
#define CFG_SOCKET_MAX (sizeof(((struct sockaddr_un *)0)->sun_path) - 1)
#define CFG_NAME_MAX   128
#define CFG_GLOB_MAX   256
#define CFG_ORIGIN_MAX 256

#define CFG_LISTEN_HINT "expected \"HOST:PORT\" with a port from 1 to 65535 (IPv6 as \"[::1]:8000\")"

/* ---- error messages with the key's path ---- */

typedef struct cfg_ctx {
    char *err;
    size_t errlen;
    const char *name;        /* file name that starts every message, or NULL */
    char path[CFG_PATH_MAX]; /* "auth.tokens[1].scopes[0]" */
    size_t path_len;
    int saw_secret; /* the text held a key, a JWT secret or a token literal */
} cfg_ctx_t;

static void cfg_appendf(char *buf, size_t len, size_t *n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void cfg_appendf(char *buf, size_t len, size_t *n, const char *fmt, ...)
{
    va_list ap;
    int w;

    if (*n >= len)
        return;
    va_start(ap, fmt);
    w = vsnprintf(buf + *n, len - *n, fmt, ap);
    va_end(ap);
    if (w > 0)
        *n = *n + (size_t)w < len ? *n + (size_t)w : len - 1;
}

/* Messages quote what the file said; a control character in it must not split the one line. */
static void cfg_scrub(char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            *s = '?';
}

static void cfg_seterr(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void cfg_seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    cfg_scrub(err);
}

static int cfg_vfail(cfg_ctx_t *ctx, int with_path, const char *fmt, va_list ap)
{
    size_t n = 0;

    if (ctx->err == NULL || ctx->errlen == 0)
        return -EINVAL;
    ctx->err[0] = '\0';
    if (ctx->name != NULL)
        cfg_appendf(ctx->err, ctx->errlen, &n, "%s: ", ctx->name);
    if (with_path && ctx->path_len > 0)
        cfg_appendf(ctx->err, ctx->errlen, &n, "%s: ", ctx->path);
    if (n < ctx->errlen)
        vsnprintf(ctx->err + n, ctx->errlen - n, fmt, ap);
    cfg_scrub(ctx->err);
    return -EINVAL;
}

/* Writes "FILE: PATH: message" and returns -EINVAL. */
static int cfg_fail(cfg_ctx_t *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int cfg_fail(cfg_ctx_t *ctx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = cfg_vfail(ctx, 1, fmt, ap);
    va_end(ap);
    return rc;
}

/* Writes "FILE: message", for messages that quote the path themselves. */
static int cfg_fail_nopath(cfg_ctx_t *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int cfg_fail_nopath(cfg_ctx_t *ctx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = cfg_vfail(ctx, 0, fmt, ap);
    va_end(ap);
    return rc;
}

static int cfg_nomem(cfg_ctx_t *ctx)
{
    cfg_fail(ctx, "out of memory");
    return -ENOMEM;
}

static size_t cfg_push_key(cfg_ctx_t *ctx, const char *key)
{
    size_t mark = ctx->path_len;
    cfg_appendf(ctx->path, sizeof(ctx->path), &ctx->path_len, "%s%.64s", mark > 0 ? "." : "", key);
    return mark;
}

static size_t cfg_push_index(cfg_ctx_t *ctx, size_t i)
{
    size_t mark = ctx->path_len;
    cfg_appendf(ctx->path, sizeof(ctx->path), &ctx->path_len, "[%zu]", i);
    return mark;
}

static void cfg_pop(cfg_ctx_t *ctx, size_t mark)
{
    ctx->path_len = mark;
    ctx->path[mark] = '\0';
}

/* Describes a JSON value for "got ..." in a message: the value itself when short, else its type. */
static const char *cfg_describe(const json_t *v, char *buf, size_t len)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        snprintf(buf, len, "\"%.64s\"%s", json_string_value(v), json_string_length(v) > 64 ? "..." : "");
        return buf;
    case JSON_INTEGER:
        snprintf(buf, len, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return buf;
    case JSON_REAL:
        snprintf(buf, len, "%g written with a fraction or exponent", json_real_value(v));
        return buf;
    case JSON_TRUE:
        return "true";
    case JSON_FALSE:
        return "false";
    case JSON_NULL:
        return "null";
    }
    return "?";
}

/* Names a value's type only: for secrets, whose value must never reach a message or a log. */
static const char *cfg_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return json_string_length(v) == 0 ? "an empty string" : "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "?";
}

/* ---- small owned things ---- */

static void cfg_secret_free(char *s)
{
    if (s != NULL) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

static void cfg_strv_free(char **v, size_t n)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* Copies n strings; 0 or -ENOMEM with *out untouched. */
static int cfg_strv_dup(char *const *src, size_t n, char ***out)
{
    char **v = calloc(n > 0 ? n : 1, sizeof(*v));

    if (v == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        v[i] = strdup(src[i]);
        if (v[i] == NULL) {
            cfg_strv_free(v, i);
            return -ENOMEM;
        }
    }
    *out = v;
    return 0;
}

static int cfg_strdup_opt(const char *src, char **out)
{
    *out = NULL;
    if (src == NULL)
        return 0;
    *out = strdup(src);
    return *out != NULL ? 0 : -ENOMEM;
}

static void cfg_token_clear(cs_token_conf_t *t)
{
    free(t->name);
    cfg_strv_free(t->executions, t->n_executions);
    OPENSSL_cleanse(t->sha256, sizeof(t->sha256));
    memset(t, 0, sizeof(*t));
}

static void cfg_tokens_free(cs_token_conf_t *tokens, size_t n)
{
    if (tokens == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        cfg_token_clear(&tokens[i]);
    free(tokens);
}

/* A deep copy, so a load can work on a draft and the original survives a bad file. */
static int cfg_copy(cs_config_t *dst, const cs_config_t *src)
{
    *dst = *src;
    dst->listen = dst->listen_host = dst->ingest_socket = dst->api_key = dst->jwt_secret = NULL;
    dst->config_path = NULL;
    dst->allow_uids = NULL;
    dst->tokens = NULL;
    dst->cors_origins = NULL;
    dst->n_allow_uids = dst->n_tokens = dst->n_cors_origins = 0;

    if (cfg_strdup_opt(src->listen, &dst->listen) != 0 ||
        cfg_strdup_opt(src->listen_host, &dst->listen_host) != 0 ||
        cfg_strdup_opt(src->ingest_socket, &dst->ingest_socket) != 0 ||
        cfg_strdup_opt(src->api_key, &dst->api_key) != 0 ||
        cfg_strdup_opt(src->jwt_secret, &dst->jwt_secret) != 0 ||
        cfg_strdup_opt(src->config_path, &dst->config_path) != 0)
        goto fail;
    if (src->n_allow_uids > 0) {
        dst->allow_uids = calloc(src->n_allow_uids, sizeof(uid_t));
        if (dst->allow_uids == NULL)
            goto fail;
        memcpy(dst->allow_uids, src->allow_uids, src->n_allow_uids * sizeof(uid_t));
        dst->n_allow_uids = src->n_allow_uids;
    }
    if (src->cors_origins != NULL) {
        if (cfg_strv_dup(src->cors_origins, src->n_cors_origins, &dst->cors_origins) != 0)
            goto fail;
        dst->n_cors_origins = src->n_cors_origins;
    }
    if (src->n_tokens > 0) {
        dst->tokens = calloc(src->n_tokens, sizeof(*dst->tokens));
        if (dst->tokens == NULL)
            goto fail;
        dst->n_tokens = src->n_tokens;
        for (size_t i = 0; i < src->n_tokens; i++) {
            const cs_token_conf_t *s = &src->tokens[i];
            cs_token_conf_t *d = &dst->tokens[i];
            memcpy(d->sha256, s->sha256, sizeof(d->sha256));
            d->scopes = s->scopes;
            if (cfg_strdup_opt(s->name, &d->name) != 0 ||
                cfg_strv_dup(s->executions, s->n_executions, &d->executions) != 0)
                goto fail;
            d->n_executions = s->n_executions;
        }
    }
    return 0;

fail:
    cs_config_free(dst);
    return -ENOMEM;
}

/* ---- the schema ---- */

typedef struct cfg_field cfg_field_t;

/* Custom kinds: parse one value into the struct at base, or render it back. */
typedef int (*cfg_parse_fn)(void *base, const cfg_field_t *f, json_t *v, cfg_ctx_t *ctx);
typedef json_t *(*cfg_dump_fn)(const void *base, const cfg_field_t *f);
/* Validates one string of a CFG_STRING or CFG_STRINGS key; 0 or cfg_fail(). */
typedef int (*cfg_check_fn)(const char *s, cfg_ctx_t *ctx);

typedef enum cfg_kind {
    CFG_OBJECT,  /* nested table, same base */
    CFG_SIZE,    /* size_t, an integer in [min, max] */
    CFG_UINT,    /* unsigned, an integer in [min, max] */
    CFG_BOOL,    /* int, true or false */
    CFG_SECRET,  /* char *, a non-empty string or null; dumped as "(set)" or null */
    CFG_STRING,  /* char *, a non-empty string */
    CFG_STRINGS, /* char ** and a size_t count, an array of non-empty strings */
    CFG_CUSTOM,  /* parse and dump callbacks */
} cfg_kind_t;

#define CFG_REQUIRED 0x1u /* the enclosing object must have this key */
#define CFG_NODUMP   0x2u /* never printed (a token literal) */
#define CFG_NONEMPTY 0x4u /* CFG_STRINGS: at least one string */

struct cfg_field {
    const char *key;
    cfg_kind_t kind;
    unsigned flags;
    size_t off;       /* where the value lives in the base struct */
    size_t count_off; /* CFG_STRINGS: where its count lives */
    unsigned long long min, max;
    const cfg_field_t *sub; /* CFG_OBJECT */
    cfg_check_fn check;     /* CFG_STRING, CFG_STRINGS: optional */
    cfg_parse_fn parse;     /* CFG_CUSTOM */
    cfg_dump_fn dump;       /* CFG_CUSTOM; NULL with CFG_NODUMP */
};

#define CFG_AT(base, f, type)   ((type *)((char *)(base) + (f)->off))
#define CFG_AT_C(base, f, type) ((const type *)((const char *)(base) + (f)->off))

static const cfg_field_t *cfg_find(const cfg_field_t *fields, const char *key)
{
    for (const cfg_field_t *f = fields; f->key != NULL; f++)
        if (strcmp(f->key, key) == 0)
            return f;
    return NULL;
}

/* Edit distance with transpositions (case-insensitive), for "did you mean". Long keys are never close. */
static size_t cfg_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t d[33][33];

    if (la > 32 || lb > 32)
        return SIZE_MAX;
    for (size_t i = 0; i <= la; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            int ca = tolower((unsigned char)a[i - 1]), cb = tolower((unsigned char)b[j - 1]);
            size_t best = d[i - 1][j - 1] + (ca != cb);
            if (d[i - 1][j] + 1 < best)
                best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best)
                best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && ca == tolower((unsigned char)b[j - 2]) &&
                tolower((unsigned char)a[i - 2]) == cb && d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    }
    return d[la][lb];
}

/* The current path ends with the unknown key; the message names the whole path and a likely fix. */
static int cfg_unknown_key(cfg_ctx_t *ctx, const cfg_field_t *fields, const char *key)
{
    const cfg_field_t *best = NULL;
    size_t best_d = 3;
    char known[512];
    size_t n = 0;

    for (const cfg_field_t *f = fields; f->key != NULL; f++) {
        size_t d = cfg_distance(key, f->key);
        if (d < best_d && d < strlen(f->key)) {
            best = f;
            best_d = d;
        }
        cfg_appendf(known, sizeof(known), &n, "%s%s", n > 0 ? ", " : "", f->key);
    }
    if (best != NULL) {
        char parent[CFG_PATH_MAX];
        size_t cut = ctx->path_len > strlen(key) ? ctx->path_len - strlen(key) : 0;
        snprintf(parent, sizeof(parent), "%.*s", (int)cut, ctx->path);
        return cfg_fail_nopath(ctx, "unknown key \"%s\" (did you mean \"%s%s\"?)", ctx->path, parent,
                               best->key);
    }
    return cfg_fail_nopath(ctx, "unknown key \"%s\" (known here: %s)", ctx->path, known);
}

static int cfg_parse_field(void *base, const cfg_field_t *f, json_t *v, cfg_ctx_t *ctx);

/* Checks every key of obj against fields, in the file's order, then the required ones. */
static int cfg_walk(void *base, const cfg_field_t *fields, json_t *obj, cfg_ctx_t *ctx)
{
    const char *key;
    json_t *v;
    char buf[96];
    int rc;

    if (!json_is_object(obj))
        return cfg_fail(ctx, "expected an object, got %s", cfg_describe(obj, buf, sizeof(buf)));
    json_object_foreach(obj, key, v)
    {
        const cfg_field_t *f = cfg_find(fields, key);
        size_t mark = cfg_push_key(ctx, key);
        rc = f != NULL ? cfg_parse_field(base, f, v, ctx) : cfg_unknown_key(ctx, fields, key);
        cfg_pop(ctx, mark);
        if (rc != 0)
            return rc;
    }
    for (const cfg_field_t *f = fields; f->key != NULL; f++)
        if ((f->flags & CFG_REQUIRED) && json_object_get(obj, f->key) == NULL)
            return cfg_fail(ctx, "missing key \"%s\"", f->key);
    return 0;
}

static int cfg_parse_string(const cfg_field_t *f, json_t *v, cfg_ctx_t *ctx, char **out)
{
    char buf[96];

    if (!json_is_string(v) || json_string_length(v) == 0)
        return cfg_fail(ctx, "expected a non-empty string, got %s", cfg_describe(v, buf, sizeof(buf)));
    if (strlen(json_string_value(v)) != json_string_length(v))
        return cfg_fail(ctx, "the string holds a NUL character");
    if (f->check != NULL) {
        int rc = f->check(json_string_value(v), ctx);
        if (rc != 0)
            return rc;
    }
    *out = strdup(json_string_value(v));
    return *out != NULL ? 0 : cfg_nomem(ctx);
}

static int cfg_parse_strings(void *base, const cfg_field_t *f, json_t *v, cfg_ctx_t *ctx)
{
    char buf[96];
    char **strs;
    size_t n, i;
    int rc = 0;

    if (!json_is_array(v))
        return cfg_fail(ctx, "expected an array of strings, got %s", cfg_describe(v, buf, sizeof(buf)));
    n = json_array_size(v);
    if (n == 0 && (f->flags & CFG_NONEMPTY))
        return cfg_fail(ctx, "expected at least one string");
    strs = calloc(n > 0 ? n : 1, sizeof(*strs));
    if (strs == NULL)
        return cfg_nomem(ctx);
    for (i = 0; i < n; i++) {
        size_t mark = cfg_push_index(ctx, i);
        rc = cfg_parse_string(f, json_array_get(v, i), ctx, &strs[i]);
        cfg_pop(ctx, mark);
        if (rc != 0)
            goto fail;
    }
    cfg_strv_free(*CFG_AT(base, f, char **), *(size_t *)((char *)base + f->count_off));
    *CFG_AT(base, f, char **) = strs;
    *(size_t *)((char *)base + f->count_off) = n;
    return 0;

fail:
    cfg_strv_free(strs, i);
    return rc;
}

static int cfg_parse_field(void *base, const cfg_field_t *f, json_t *v, cfg_ctx_t *ctx)
{
    char buf[96];

    switch (f->kind) {
    case CFG_OBJECT:
        return cfg_walk(base, f->sub, v, ctx);
    case CFG_SIZE:
    case CFG_UINT: {
        unsigned long long max = f->max;
#if SIZE_MAX < ULLONG_MAX
        if (f->kind == CFG_SIZE && max > SIZE_MAX)
            max = SIZE_MAX;
#endif
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            (unsigned long long)json_integer_value(v) < f->min ||
            (unsigned long long)json_integer_value(v) > max)
            return cfg_fail(ctx, "expected an integer >= %llu and <= %llu, got %s", f->min, max,
                            cfg_describe(v, buf, sizeof(buf)));
        if (f->kind == CFG_SIZE)
            *CFG_AT(base, f, size_t) = (size_t)json_integer_value(v);
        else
            *CFG_AT(base, f, unsigned) = (unsigned)json_integer_value(v);
        return 0;
    }
    case CFG_BOOL:
        if (!json_is_boolean(v))
            return cfg_fail(ctx, "expected true or false, got %s", cfg_describe(v, buf, sizeof(buf)));
        *CFG_AT(base, f, int) = json_is_true(v);
        return 0;
    case CFG_SECRET: {
        /* Messages about a secret name its type only: a mistyped value may still be the secret. */
        char *s = NULL;
        if (!json_is_null(v)) {
            if (!json_is_string(v) || json_string_length(v) == 0)
                return cfg_fail(ctx, "expected a non-empty string or null, got %s", cfg_type_name(v));
            if (strcmp(json_string_value(v), CFG_PLACEHOLDER) == 0)
                return cfg_fail(ctx, "\"" CFG_PLACEHOLDER "\" is what --check-config prints in place of a "
                                     "secret, not a secret");
            if (strlen(json_string_value(v)) != json_string_length(v))
                return cfg_fail(ctx, "the string holds a NUL character");
            s = strdup(json_string_value(v));
            if (s == NULL)
                return cfg_nomem(ctx);
            ctx->saw_secret = 1;
        }
        cfg_secret_free(*CFG_AT(base, f, char *));
        *CFG_AT(base, f, char *) = s;
        return 0;
    }
    case CFG_STRING: {
        char *s;
        int rc = cfg_parse_string(f, v, ctx, &s);
        if (rc != 0)
            return rc;
        free(*CFG_AT(base, f, char *));
        *CFG_AT(base, f, char *) = s;
        return 0;
    }
    case CFG_STRINGS:
        return cfg_parse_strings(base, f, v, ctx);
    case CFG_CUSTOM:
        return f->parse(base, f, v, ctx);
    }
    return cfg_fail(ctx, "internal error: unknown kind");
}

static json_t *cfg_dump_obj(const void *base, const cfg_field_t *fields);

static json_t *cfg_dump_field(const void *base, const cfg_field_t *f)
{
    switch (f->kind) {
    case CFG_OBJECT:
        return cfg_dump_obj(base, f->sub);
    case CFG_SIZE:
        return json_integer((json_int_t)*CFG_AT_C(base, f, size_t));
    case CFG_UINT:
        return json_integer((json_int_t)*CFG_AT_C(base, f, unsigned));
    case CFG_BOOL:
        return json_boolean(*CFG_AT_C(base, f, int));
    case CFG_SECRET:
        return *CFG_AT_C(base, f, char *) != NULL ? json_string(CFG_PLACEHOLDER) : json_null();
    case CFG_STRING: {
        const char *s = *CFG_AT_C(base, f, char *);
        return s != NULL ? json_string(s) : json_null();
    }
    case CFG_STRINGS: {
        char *const *v = *(char **const *)((const char *)base + f->off);
        size_t n = *(const size_t *)((const char *)base + f->count_off);
        json_t *a = json_array();
        for (size_t i = 0; a != NULL && i < n; i++) {
            if (json_array_append_new(a, json_string(v[i])) != 0) {
                json_decref(a);
                a = NULL;
            }
        }
        return a;
    }
    case CFG_CUSTOM:
        return f->dump(base, f);
    }
    return NULL;
}

static json_t *cfg_dump_obj(const void *base, const cfg_field_t *fields)
{
    json_t *o = json_object();

    for (const cfg_field_t *f = fields; o != NULL && f->key != NULL; f++) {
        if (f->flags & CFG_NODUMP)
            continue;
        json_t *v = cfg_dump_field(base, f);
        if (v == NULL || json_object_set_new(o, f->key, v) != 0) {
            json_decref(o);
            o = NULL;
        }
    }
    return o;
}

/* ---- checks and custom kinds ---- */

/* "listen": "HOST:PORT"; sets listen, listen_host and listen_port together. */
static int cfg_parse_listen_key(void *base, const cfg_field_t *f, json_t *v, cfg_ctx_t *ctx)
{
    cs_config_t *cfg = base;
    char buf[96];
    char *host = NULL, *copy;
    uint16_t port;
    int rc;

    (void)f;
    if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
        return cfg_fail(ctx, CFG_LISTEN_HINT ", got %s", cfg_describe(v, buf, sizeof(buf)));
    rc = cs_config_parse_listen(json_string_value(v), &host, &port);
    if (rc == -ENOMEM)
        return cfg_nomem(ctx);
    if (rc != 0)
        return cfg_fail(ctx, CFG_LISTEN_HINT ", got %s", cfg_describe(v, buf, sizeof(buf)));
    copy = strdup(json_string_value(v));
    if (copy == NULL) {
        free(host);
        return cfg_nomem(ctx);
    }
    free(cfg->listen);
    free(cfg->listen_host);
    cfg->listen = copy;
    cfg->listen_host = host;
    cfg->listen_port = port;
    return 0;
}

static json_t *cfg_dump_listen(const void *base, const cfg_field_t *f)
{
    const cs_config_t *cfg = base;
    (void)f;
    return cfg->listen != NULL ? json_string(cfg->listen) : json_null();
}

/* A socket path must fit sun_path, or bind(2) would fail long after the configuration was accepted. */
static int cfg_check_socket(const char *s, cfg_ctx_t *ctx)
{
    if (strlen(s) > CFG_SOCKET_MAX)
        return cfg_fail(ctx, "path is %zu bytes long; a Unix socket path holds at most %zu", strlen(s),
                        CFG_SOCKET_MAX);
    return 0;
}

/* "ingest.socket": a path, or null for the built-in default (cs_config_default_socket). */
static int cfg_parse_socket(void *base, const cfg_field_t *f, json_t *v, cfg_ctx_t *ctx)
{
    cs_config_t *cfg = base;
    char *s;

    if (json_is_null(v)) {
        s = cs_config_default_socket();
        if (s == NULL)
            return cfg_nomem(ctx);
    } else {
        int rc = cfg_parse_string(f, v, ctx, &s);
        if (rc != 0)
            return rc;
    }
    free(cfg->ingest_socket);
    cfg->ingest_socket = s;
    return 0;
}

static json_t *cfg_dump_socket(const void *base, const cfg_field_t *f)
{
    const cs_config_t *cfg = base;
    (void)f;
    return cfg->ingest_socket != NULL ? json_string(cfg->ingest_socket) : json_null();
}

/*
 * "ingest.mode": an octal string. A JSON number is refused on purpose: 0660 is not valid JSON and
 * 660 would be read as decimal, which is how sockets end up world-writable.
 */
static int cfg_parse_mode(void *base, const cfg_field_t *f, json_t *v, cfg_ctx_t *ctx)
{
    cs_config_t *cfg = base;
    char buf[96];
    const char *s;
    size_t n;

    (void)f;
    if (!json_is_string(v))
        return cfg_fail(ctx, "expected an octal string like \"0660\", got %s%s",
                        cfg_describe(v, buf, sizeof(buf)),
                        json_is_integer(v) ? " (write the mode in quotes: a JSON number is decimal)" : "");
    s = json_string_value(v);
    n = strlen(s);
    if (n != json_string_length(v) || n < 3 || n > 4 || strspn(s, "01234567") != n || (n == 4 && s[0] != '0'))
        return cfg_fail(ctx, "expected an octal string from \"0000\" to \"0777\" like \"0660\", got %s",
                        cfg_describe(v, buf, sizeof(buf)));
    cfg->ingest_mode = (unsigned)strtoul(s, NULL, 8);
    return 0;
}

static json_t *cfg_dump_mode(const void *base, const cfg_field_t *f)
{
    const cs_config_t *cfg = base;
    char s[16];
    (void)f;
    snprintf(s, sizeof(s), "%04o", cfg->ingest_mode & 07777u);
    return json_string(s);
}

/* "ingest.allow_uids": numeric uids; (uid_t)-1 means "no uid" to the kernel and is refused. */
static int cfg_parse_uids(void *base, const cfg_field_t *f, json_t *v, cfg_ctx_t *ctx)
{
    cs_config_t *cfg = base;
    char buf[96];
    uid_t *uids;
    size_t n;

    (void)f;
    if (!json_is_array(v))
        return cfg_fail(ctx, "expected an array of numeric uids, got %s", cfg_describe(v, buf, sizeof(buf)));
    n = json_array_size(v);
    uids = calloc(n > 0 ? n : 1, sizeof(*uids));
    if (uids == NULL)
        return cfg_nomem(ctx);
    for (size_t i = 0; i < n; i++) {
        json_t *u = json_array_get(v, i);
        if (!json_is_integer(u) || json_integer_value(u) < 0 ||
            json_integer_value(u) >= (json_int_t)UINT32_MAX) {
            size_t mark = cfg_push_index(ctx, i);
            cfg_fail(ctx, "expected a numeric uid >= 0 and <= %u, got %s", UINT32_MAX - 1,
                     cfg_describe(u, buf, sizeof(buf)));
            cfg_pop(ctx, mark);
            free(uids);
            return -EINVAL;
        }
        uids[i] = (uid_t)json_integer_value(u);
    }
    free(cfg->allow_uids);
    cfg->allow_uids = uids;
    cfg->n_allow_uids = n;
    return 0;
}

static json_t *cfg_dump_uids(const void *base, const cfg_field_t *f)
{
    const cs_config_t *cfg = base;
    json_t *a = json_array();
    (void)f;
    for (size_t i = 0; a != NULL && i < cfg->n_allow_uids; i++) {
        if (json_array_append_new(a, json_integer((json_int_t)cfg->allow_uids[i])) != 0) {
            json_decref(a);
            a = NULL;
        }
    }
    return a;
}

/* A token name appears in logs and metrics, so it must be printable and short. */
static int cfg_check_name(const char *s, cfg_ctx_t *ctx)
{
    size_t n = strlen(s);
    if (n > CFG_NAME_MAX)
        return cfg_fail(ctx, "a token name is at most %d characters", CFG_NAME_MAX);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return cfg_fail(ctx, "a token name must not hold control characters");
    return 0;
}

/* Execution ids are [A-Za-z0-9._:-]; a glob adds fnmatch's "*", "?", "[", "]", "!" and "^". */
static int cfg_check_glob(const char *s, cfg_ctx_t *ctx)
{
    static const char ok[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-*?[]!^";
    if (strlen(s) > CFG_GLOB_MAX || strspn(s, ok) != strlen(s))
        return cfg_fail(
            ctx,
            "\"%.64s\" is not an execution id or glob (at most %d of letters, digits, \".\", \"_\", "
            "\":\", \"-\" and the glob characters \"*\", \"?\", \"[...]\")",
            s, CFG_GLOB_MAX);
    return 0;
}

/*
 * An origin is what a browser sends in its Origin header: "scheme://host[:port]", no path. The
 * value is echoed into a response header, so anything outside printable ASCII is refused.
 */
static int cfg_check_origin(const char *s, cfg_ctx_t *ctx)
{
    const char *sep = strstr(s, "://");
    size_t n = strlen(s);

    if (strcmp(s, "*") == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
            return cfg_fail(ctx, "an origin holds no spaces, control or non-ASCII characters");
    if (n > CFG_ORIGIN_MAX || sep == NULL || sep == s || sep[3] == '\0' || strchr(sep + 3, '/') != NULL)
        return cfg_fail(ctx,
                        "expected \"*\" or an origin like \"https://app.example.com\" (no path, no trailing "
                        "slash), got \"%.64s\"",
                        s);
    return 0;
}

static const char *const cfg_scope_names[] = {"read", "respond", "publish", "admin"};

/* "scopes": a non-empty subset of read, respond, publish, admin. */
static int cfg_parse_scopes(void *base, const cfg_field_t *f, json_t *v, cfg_ctx_t *ctx)
{
    cs_token_conf_t *t = base;
    char buf[96];
    unsigned scopes = 0;

    (void)f;
    if (!json_is_array(v))
        return cfg_fail(ctx, "expected an array of scopes (read, respond, publish, admin), got %s",
                        cfg_describe(v, buf, sizeof(buf)));
    if (json_array_size(v) == 0)
        return cfg_fail(ctx, "expected at least one scope (read, respond, publish, admin)");
    for (size_t i = 0; i < json_array_size(v); i++) {
        json_t *s = json_array_get(v, i);
        size_t mark = cfg_push_index(ctx, i);
        size_t k;
        for (k = 0; k < 4; k++)
            if (json_is_string(s) && strcmp(json_string_value(s), cfg_scope_names[k]) == 0)
                break;
        if (k == 4) {
            if (json_is_string(s))
                cfg_fail(ctx, "unknown scope \"%.64s\" (read, respond, publish, admin)",
                         json_string_value(s));
            else
                cfg_fail(ctx, "expected a scope name (read, respond, publish, admin), got %s",
                         cfg_describe(s, buf, sizeof(buf)));
            cfg_pop(ctx, mark);
            return -EINVAL;
        }
        cfg_pop(ctx, mark);
        scopes |= 1u << k;
    }
    t->scopes = scopes;
    return 0;
}

static json_t *cfg_dump_scopes(const void *base, const cfg_field_t *f)
{
    const cs_token_conf_t *t = base;
    json_t *a = json_array();
    (void)f;
    for (size_t k = 0; a != NULL && k < 4; k++) {
        if ((t->scopes & (1u << k)) && json_array_append_new(a, json_string(cfg_scope_names[k])) != 0) {
            json_decref(a);
            a = NULL;
        }
    }
    return a;
}

/* "token": the literal is hashed at once and wiped; only its SHA-256 is kept. */
static int cfg_parse_token_literal(void *base, const cfg_field_t *f, json_t *v, cfg_ctx_t *ctx)
{
    cs_token_conf_t *t = base;
    unsigned int mdlen = 0;

    (void)f;
    if (!json_is_string(v) || json_string_length(v) == 0)
        return cfg_fail(ctx, "expected a non-empty string, got %s", cfg_type_name(v));
    if (strcmp(json_string_value(v), CFG_PLACEHOLDER) == 0)
        return cfg_fail(ctx,
                        "\"" CFG_PLACEHOLDER "\" is what --check-config prints in place of a secret, not a "
                        "token");
    ctx->saw_secret = 1;
    if (EVP_Digest(json_string_value(v), json_string_length(v), t->sha256, &mdlen, EVP_sha256(), NULL) != 1 ||
        mdlen != sizeof(t->sha256))
        return cfg_fail(ctx, "SHA-256 failed");
    /* The parsed document is ours alone and is freed right after the walk. */
    OPENSSL_cleanse((char *)json_string_value(v), json_string_length(v));
    return 0;
}

/* "sha256": 64 hex digits, as sha256sum prints them. */
static int cfg_parse_token_sha256(void *base, const cfg_field_t *f, json_t *v, cfg_ctx_t *ctx)
{
    cs_token_conf_t *t = base;
    char buf[96];
    const char *s;

    (void)f;
    if (!json_is_string(v))
        return cfg_fail(ctx, "expected a string of 64 hexadecimal digits, got %s",
                        cfg_describe(v, buf, sizeof(buf)));
    s = json_string_value(v);
    if (json_string_length(v) != 64 || strlen(s) != 64)
        return cfg_fail(ctx,
                        "expected 64 hexadecimal digits (the output of printf %%s \"$TOKEN\" | sha256sum, "
                        "without the trailing \"  -\"), got %zu characters",
                        json_string_length(v));
    for (size_t i = 0; i < 32; i++) {
        int hi = cs_hex_digit((unsigned char)s[2 * i]), lo = cs_hex_digit((unsigned char)s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return cfg_fail(ctx, "expected 64 hexadecimal digits, found '%c' at offset %zu",
                            hi < 0 ? s[2 * i] : s[2 * i + 1], hi < 0 ? 2 * i : 2 * i + 1);
        t->sha256[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

static json_t *cfg_dump_placeholder(const void *base, const cfg_field_t *f)
{
    (void)base;
    (void)f;
    return json_string(CFG_PLACEHOLDER);
}

static const cfg_field_t cfg_token_fields[] = {
    {.key = "name",
     .kind = CFG_STRING,
     .flags = CFG_REQUIRED,
     .off = offsetof(cs_token_conf_t, name),
     .check = cfg_check_name},
    {.key = "token", .kind = CFG_CUSTOM, .flags = CFG_NODUMP, .parse = cfg_parse_token_literal},
    {.key = "sha256", .kind = CFG_CUSTOM, .parse = cfg_parse_token_sha256, .dump = cfg_dump_placeholder},
    {.key = "scopes",
     .kind = CFG_CUSTOM,
     .flags = CFG_REQUIRED,
     .parse = cfg_parse_scopes,
     .dump = cfg_dump_scopes},
    {.key = "executions",
     .kind = CFG_STRINGS,
     .flags = CFG_NONEMPTY,
     .off = offsetof(cs_token_conf_t, executions),
     .count_off = offsetof(cs_token_conf_t, n_executions),
     .check = cfg_check_glob},
    {.key = NULL},
};

/* Parses one token object into t, which starts zeroed. */
static int cfg_parse_token(cs_token_conf_t *t, json_t *v, cfg_ctx_t *ctx)
{
    char buf[96];
    int rc;

    if (!json_is_object(v))
        return cfg_fail(ctx,
                        "expected a token object {\"name\", \"token\" or \"sha256\", \"scopes\", "
                        "\"executions\"}, got %s",
                        cfg_describe(v, buf, sizeof(buf)));
    if (json_object_get(v, "token") != NULL && json_object_get(v, "sha256") != NULL)
        return cfg_fail(ctx, "give either \"token\" or \"sha256\", not both");
    /* A token without "executions" may see every execution, as the seed's single key did. */
    t->executions = calloc(1, sizeof(char *));
    if (t->executions == NULL || (t->executions[0] = strdup("*")) == NULL)
        return cfg_nomem(ctx);
    t->n_executions = 1;
    rc = cfg_walk(t, cfg_token_fields, v, ctx);
    if (rc != 0)
        return rc;
    if (json_object_get(v, "token") == NULL && json_object_get(v, "sha256") == NULL)
        return cfg_fail(ctx, "missing key \"token\" or \"sha256\"");
    return 0;
}

/* "auth.tokens": replaces the whole list; names must be unique, and so must the tokens. */
static int cfg_parse_tokens(void *base, const cfg_field_t *f, json_t *v, cfg_ctx_t *ctx)
{
    cs_config_t *cfg = base;
    cs_token_conf_t *toks;
    char buf[96];
    size_t n, i;
    int rc = 0;

    (void)f;
    if (!json_is_array(v))
        return cfg_fail(ctx, "expected an array of token objects, got %s", cfg_describe(v, buf, sizeof(buf)));
    n = json_array_size(v);
    toks = calloc(n > 0 ? n : 1, sizeof(*toks));
    if (toks == NULL)
        return cfg_nomem(ctx);
    for (i = 0; i < n; i++) {
        size_t mark = cfg_push_index(ctx, i);
        rc = cfg_parse_token(&toks[i], json_array_get(v, i), ctx);
        for (size_t j = 0; rc == 0 && j < i; j++) {
            if (strcmp(toks[j].name, toks[i].name) == 0) {
                size_t m2 = cfg_push_key(ctx, "name");
                rc = cfg_fail(ctx, "duplicate token name \"%.64s\" (auth.tokens[%zu] has it too)",
                              toks[i].name, j);
                cfg_pop(ctx, m2);
            } else if (CRYPTO_memcmp(toks[j].sha256, toks[i].sha256, sizeof(toks[i].sha256)) == 0) {
                rc = cfg_fail(ctx, "the same token as auth.tokens[%zu] (\"%.64s\")", j, toks[j].name);
            }
        }
        cfg_pop(ctx, mark);
        if (rc != 0)
            goto fail;
    }
    cfg_tokens_free(cfg->tokens, cfg->n_tokens);
    cfg->tokens = toks;
    cfg->n_tokens = n;
    return 0;

fail:
    cfg_tokens_free(toks, n);
    return rc;
}

static json_t *cfg_dump_tokens(const void *base, const cfg_field_t *f)
{
    const cs_config_t *cfg = base;
    json_t *a = json_array();
    (void)f;
    for (size_t i = 0; a != NULL && i < cfg->n_tokens; i++) {
        json_t *t = cfg_dump_obj(&cfg->tokens[i], cfg_token_fields);
        if (t == NULL || json_array_append_new(a, t) != 0) {
            json_decref(a);
            a = NULL;
        }
    }
    return a;
}

static int cfg_parse_level(void *base, const cfg_field_t *f, json_t *v, cfg_ctx_t *ctx)
{
    cs_config_t *cfg = base;
    cs_log_level_t level;
    char buf[96];

    (void)f;
    if (!json_is_string(v))
        return cfg_fail(ctx, "expected one of \"error\", \"warn\", \"info\", \"debug\", got %s",
                        cfg_describe(v, buf, sizeof(buf)));
    if (cs_log_parse_level(json_string_value(v), &level) != 0)
        return cfg_fail(ctx, "unknown level \"%.64s\" (error, warn, info, debug)", json_string_value(v));
    cfg->log_level = (int)level;
    return 0;
}

static json_t *cfg_dump_level(const void *base, const cfg_field_t *f)
{
    const cs_config_t *cfg = base;
    (void)f;
    return json_string(cs_log_level_name((cs_log_level_t)cfg->log_level));
}

#define CFG_NUM(kind_, key_, member, lo, hi)                                                                 \
    {                                                                                                        \
        .key = key_, .kind = kind_, .off = offsetof(cs_config_t, member), .min = lo, .max = hi               \
    }
#define CFG_OBJ(key_, table)                                                                                 \
    {                                                                                                        \
        .key = key_, .kind = CFG_OBJECT, .sub = table                                                        \
    }
#define CFG_FN(key_, parse_, dump_)                                                                          \
    {                                                                                                        \
        .key = key_, .kind = CFG_CUSTOM, .parse = parse_, .dump = dump_                                      \
    }

#define CFG_KIB 1024ull
#define CFG_MIB (1024ull * CFG_KIB)
#define CFG_TIB (1024ull * 1024ull * CFG_MIB)

/* Ranges: docs/configuration.md explains each bound; keep the two in step. */
static const cfg_field_t cfg_ingest_fields[] = {
    {.key = "socket",
     .kind = CFG_CUSTOM,
     .parse = cfg_parse_socket,
     .dump = cfg_dump_socket,
     .check = cfg_check_socket},
    CFG_FN("mode", cfg_parse_mode, cfg_dump_mode),
    CFG_FN("allow_uids", cfg_parse_uids, cfg_dump_uids),
    {.key = NULL},
};

static const cfg_field_t cfg_auth_fields[] = {
    {.key = "api_key", .kind = CFG_SECRET, .off = offsetof(cs_config_t, api_key)},
    CFG_FN("tokens", cfg_parse_tokens, cfg_dump_tokens),
    {.key = "jwt_secret", .kind = CFG_SECRET, .off = offsetof(cs_config_t, jwt_secret)},
    {.key = NULL},
};

static const cfg_field_t cfg_store_fields[] = {
    CFG_NUM(CFG_SIZE, "ring_events", ring_events, 1, 1048576),
    CFG_NUM(CFG_SIZE, "ring_bytes", ring_bytes, 1 * CFG_KIB, 1 * CFG_TIB),
    CFG_NUM(CFG_SIZE, "max_bytes", max_bytes, 64 * CFG_KIB, 1 * CFG_TIB),
    CFG_NUM(CFG_UINT, "retain_s", retain_s, 0, 31536000),
    CFG_NUM(CFG_SIZE, "global_events", global_events, 1, 1048576),
    {.key = NULL},
};

static const cfg_field_t cfg_limits_fields[] = {
    CFG_NUM(CFG_SIZE, "max_clients", max_clients, 1, 1000000),
    CFG_NUM(CFG_SIZE, "max_producers", max_producers, 1, 65536),
    CFG_NUM(CFG_SIZE, "max_event_bytes", max_event_bytes, 1 * CFG_KIB, 256 * CFG_MIB),
    CFG_NUM(CFG_SIZE, "head_bytes", head_bytes, 1 * CFG_KIB, 1 * CFG_MIB),
    CFG_NUM(CFG_UINT, "head_timeout_s", head_timeout_s, 1, 3600),
    CFG_NUM(CFG_UINT, "stall_s", stall_s, 1, 86400),
    CFG_NUM(CFG_UINT, "json_depth", json_depth, 1, 1024),
    CFG_NUM(CFG_SIZE, "max_body_bytes", max_body_bytes, 1 * CFG_KIB, 256 * CFG_MIB),
    {.key = NULL},
};

static const cfg_field_t cfg_http_fields[] = {
    {.key = "cors_origins",
     .kind = CFG_STRINGS,
     .off = offsetof(cs_config_t, cors_origins),
     .count_off = offsetof(cs_config_t, n_cors_origins),
     .check = cfg_check_origin},
    {.key = "metrics_public", .kind = CFG_BOOL, .off = offsetof(cs_config_t, metrics_public)},
    {.key = NULL},
};

static const cfg_field_t cfg_log_fields[] = {
    CFG_FN("level", cfg_parse_level, cfg_dump_level),
    {.key = NULL},
};

static const cfg_field_t cfg_root_fields[] = {
    CFG_FN("listen", cfg_parse_listen_key, cfg_dump_listen),
    CFG_OBJ("ingest", cfg_ingest_fields),
    CFG_OBJ("auth", cfg_auth_fields),
    CFG_OBJ("store", cfg_store_fields),
    CFG_OBJ("limits", cfg_limits_fields),
    CFG_NUM(CFG_UINT, "heartbeat_s", heartbeat_s, 1, 3600),
    CFG_NUM(CFG_UINT, "shutdown_s", shutdown_s, 0, 3600),
    CFG_OBJ("http", cfg_http_fields),
    CFG_OBJ("log", cfg_log_fields),
    {.key = NULL},
};

/* ---- public functions ---- */

char *cs_config_default_socket(void)
{
    /*
     * systemd sets RUNTIME_DIRECTORY from the unit's RuntimeDirectory= (a directory that belongs to
     * this service and goes away with it), so the unit needs no socket path of its own. It may list
     * several directories separated by ':'; the first is ours.
     */
    const char *dir = getenv("RUNTIME_DIRECTORY");
    const char *name = "ingest.sock";
    size_t dlen, n;
    char *s;

    if (dir != NULL && dir[0] != '\0' && dir[0] != ':') {
        dlen = strcspn(dir, ":");
    } else {
        dir = getenv("XDG_RUNTIME_DIR");
        name = "crewstream.sock";
        if (dir == NULL || dir[0] == '\0')
            return strdup("/tmp/crewstream.sock");
        dlen = strlen(dir);
    }
    while (dlen > 1 && dir[dlen - 1] == '/')
        dlen--;
    n = dlen + 1 + strlen(name) + 1;
    s = malloc(n);
    if (s != NULL)
        snprintf(s, n, "%.*s/%s", (int)dlen, dir, name);
    return s;
}

int cs_config_defaults(cs_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->listen = strdup(CFG_DEFAULT_LISTEN);
    if (cfg->listen == NULL || cs_config_parse_listen(cfg->listen, &cfg->listen_host, &cfg->listen_port) != 0)
        goto fail;
    cfg->ingest_socket = cs_config_default_socket();
    if (cfg->ingest_socket == NULL)
        goto fail;
    cfg->ingest_mode = CFG_DEFAULT_MODE;

    cfg->ring_events = 1024;
    cfg->ring_bytes = 1048576;
    cfg->max_bytes = 268435456;
    cfg->retain_s = 3600;
    cfg->global_events = 4096;

    cfg->max_clients = 10000;
    cfg->max_producers = 1024;
    cfg->max_event_bytes = 1048576;
    cfg->head_bytes = 8192;
    cfg->head_timeout_s = 5;
    cfg->stall_s = 60;
    cfg->json_depth = 32;
    cfg->max_body_bytes = 4194304;

    cfg->heartbeat_s = 15;
    cfg->shutdown_s = 5;

    cfg->cors_origins = calloc(1, sizeof(char *));
    if (cfg->cors_origins == NULL || (cfg->cors_origins[0] = strdup("*")) == NULL)
        goto fail;
    cfg->n_cors_origins = 1;
    cfg->metrics_public = 0;
    cfg->log_level = CS_LOG_INFO;
    return 0;

fail:
    cs_config_free(cfg);
    return -ENOMEM;
}

int cs_config_fit_nofile(cs_config_t *cfg, size_t nofile, size_t extra, char *msg, size_t msglen)
{
    size_t need = CS_CONFIG_OWN_FDS + cfg->max_producers + extra;

    if (nofile == 0 || cfg->max_clients + need <= nofile)
        return 0;
    if (nofile <= need) {
        snprintf(msg, msglen,
                 "the open-files limit %zu leaves no descriptor for clients: the daemon keeps %d, "
                 "limits.max_producers takes %zu and answers over limits.max_clients %zu; raise LimitNOFILE "
                 "(ulimit -n) or lower limits.max_producers",
                 nofile, CS_CONFIG_OWN_FDS, cfg->max_producers, extra);
        return -1;
    }
    snprintf(msg, msglen,
             "limits.max_clients %zu is more than the open-files limit %zu allows (%d kept by the daemon, "
             "%zu for limits.max_producers, %zu for answers over limits.max_clients): clamped to %zu; raise "
             "LimitNOFILE (ulimit -n) to allow more",
             cfg->max_clients, nofile, CS_CONFIG_OWN_FDS, cfg->max_producers, extra, nofile - need);
    cfg->max_clients = nofile - need;
    return 1;
}

void cs_config_free(cs_config_t *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->listen);
    free(cfg->listen_host);
    free(cfg->ingest_socket);
    free(cfg->allow_uids);
    cfg_secret_free(cfg->api_key);
    cfg_tokens_free(cfg->tokens, cfg->n_tokens);
    cfg_secret_free(cfg->jwt_secret);
    cfg_strv_free(cfg->cors_origins, cfg->n_cors_origins);
    free(cfg->config_path);
    memset(cfg, 0, sizeof(*cfg));
}

/* Parses text named name (for messages; NULL for none) over cfg, all or nothing. */
static int cfg_load(cs_config_t *cfg, const char *name, const char *buf, size_t len, char *err, size_t errlen,
                    int *saw_secret)
{
    cfg_ctx_t ctx = {.err = err, .errlen = errlen, .name = name};
    cs_config_t draft;
    json_error_t je;
    json_t *root;
    char dbuf[96];
    int rc;

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    root = json_loadb(buf != NULL ? buf : "", buf != NULL ? len : 0, JSON_REJECT_DUPLICATES, &je);
    if (root == NULL) {
        if (je.line >= 1)
            return cfg_fail_nopath(&ctx, "line %d, column %d: %s", je.line, je.column, je.text);
        return cfg_fail_nopath(&ctx, "%s", je.text);
    }
    if (!json_is_object(root)) {
        rc = cfg_fail_nopath(&ctx, "expected a JSON object at the top level, got %s",
                             cfg_describe(root, dbuf, sizeof(dbuf)));
        goto out;
    }
    rc = cfg_copy(&draft, cfg);
    if (rc != 0) {
        cfg_nomem(&ctx);
        goto out;
    }
    rc = cfg_walk(&draft, cfg_root_fields, root, &ctx);
    if (rc == 0) {
        cs_config_free(cfg);
        *cfg = draft;
        if (saw_secret != NULL)
            *saw_secret = ctx.saw_secret;
    } else {
        cs_config_free(&draft);
    }

out:
    json_decref(root);
    return rc;
}

int cs_config_load_buffer(cs_config_t *cfg, const char *buf, size_t len, char *err, size_t errlen)
{
    return cfg_load(cfg, NULL, buf, len, err, errlen, NULL);
}

int cs_config_load_file(cs_config_t *cfg, const char *path, char *err, size_t errlen)
{
    char *buf = NULL, *nbuf;
    size_t len = 0, cap = 0;
    int saw_secret = 0;
    struct stat st;
    int fd, rc;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        cfg_seterr(err, errlen, "%s: %s", path, strerror(-rc));
        return rc;
    }
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        cfg_seterr(err, errlen, "%s: %s", path, strerror(-rc));
        goto out;
    }
    if (S_ISDIR(st.st_mode)) {
        rc = -EISDIR;
        cfg_seterr(err, errlen, "%s: is a directory, not a configuration file", path);
        goto out;
    }
    /* Read to the end rather than trusting st_size, so /dev/stdin and pipes work too. */
    for (;;) {
        if (len == cap) {
            size_t ncap = cap > 0 ? cap * 2 : 16384;
            if (cap >= CFG_FILE_MAX) {
                rc = -EFBIG;
                cfg_seterr(err, errlen, "%s: larger than %u MiB; is this the configuration file?", path,
                           CFG_FILE_MAX >> 20);
                goto out;
            }
            nbuf = malloc(ncap + 1);
            if (nbuf == NULL) {
                rc = -ENOMEM;
                cfg_seterr(err, errlen, "%s: out of memory", path);
                goto out;
            }
            /* The buffer may hold secrets: move them by hand so no unwiped copy is left behind. */
            if (buf != NULL) {
                memcpy(nbuf, buf, len);
                OPENSSL_cleanse(buf, cap);
                free(buf);
            }
            buf = nbuf;
            cap = ncap;
        }
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            cfg_seterr(err, errlen, "%s: %s", path, strerror(-rc));
            goto out;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    rc = cfg_load(cfg, path, buf, len, err, errlen, &saw_secret);
    if (rc == 0 && saw_secret && (st.st_mode & S_IROTH) && S_ISREG(st.st_mode))
        cs_log_warn("%s holds secrets but every user may read it; chmod o-r it, or pass secrets in "
                    "CREWSTREAM_API_KEY / CREWSTREAM_JWT_SECRET",
                    path);

out:
    if (buf != NULL) {
        OPENSSL_cleanse(buf, cap);
        free(buf);
    }
    close(fd);
    return rc;
}

static int cfg_env_secret(const char *var, char **slot)
{
    const char *v = getenv(var);
    char *s;

    /* An empty variable is treated as unset, so `VAR= crewstreamd` cannot switch auth off by accident. */
    if (v == NULL || v[0] == '\0')
        return 0;
    s = strdup(v);
    if (s == NULL)
        return -ENOMEM;
    cfg_secret_free(*slot);
    *slot = s;
    return 0;
}

int cs_config_apply_env(cs_config_t *cfg)
{
    int rc = cfg_env_secret("CREWSTREAM_API_KEY", &cfg->api_key);
    if (rc == 0)
        rc = cfg_env_secret("CREWSTREAM_JWT_SECRET", &cfg->jwt_secret);
    return rc;
}

int cs_config_parse_listen(const char *s, char **host, uint16_t *port)
{
    const char *h, *colon, *p;
    size_t hlen;
    unsigned long val = 0;
    char *copy;

    if (s == NULL)
        return -EINVAL;
    if (s[0] == '[') {
        /* "[V6]:PORT": the brackets keep the address's colons apart from the port's. */
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':')
            return -EINVAL;
        h = s + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
        if (hlen == 0 || memchr(h, ':', hlen) == NULL)
            return -EINVAL;
        for (size_t i = 0; i < hlen; i++)
            if (!isalnum((unsigned char)h[i]) && strchr(":.%_-", h[i]) == NULL)
                return -EINVAL;
    } else {
        h = s;
        colon = strchr(s, ':');
        /* A second colon means a bare IPv6 address, whose port could not be told apart. */
        if (colon == NULL || strchr(colon + 1, ':') != NULL)
            return -EINVAL;
        hlen = (size_t)(colon - h);
        if (hlen == 0)
            return -EINVAL;
        for (size_t i = 0; i < hlen; i++)
            if (!isalnum((unsigned char)h[i]) && strchr(".-_", h[i]) == NULL)
                return -EINVAL;
    }
    if (hlen > 253)
        return -EINVAL;
    p = colon + 1;
    if (p[0] == '\0' || strlen(p) > 5 || strspn(p, "0123456789") != strlen(p))
        return -EINVAL;
    for (; *p != '\0'; p++)
        val = val * 10 + (unsigned long)(*p - '0');
    if (val < 1 || val > 65535)
        return -EINVAL;
    copy = strndup(h, hlen);
    if (copy == NULL)
        return -ENOMEM;
    *host = copy;
    *port = (uint16_t)val;
    return 0;
}

void cs_config_dump(const cs_config_t *cfg, FILE *out)
{
    json_t *root;

    if (out == NULL)
        return;
    root = cfg_dump_obj(cfg, cfg_root_fields);
    if (root == NULL) {
        fputs("{\"error\": \"out of memory\"}\n", out);
        return;
    }
    json_dumpf(root, out, JSON_INDENT(2));
    fputc('\n', out);
    json_decref(root);
}

/* ---- command line ---- */

enum {
    CFG_OPT_CONFIG = 0x100,
    CFG_OPT_LISTEN,
    CFG_OPT_SOCKET,
    CFG_OPT_LOG_LEVEL,
    CFG_OPT_CHECK,
};

static const struct option cfg_options[] = {
    {"config", required_argument, NULL, CFG_OPT_CONFIG},
    {"listen", required_argument, NULL, CFG_OPT_LISTEN},
    {"socket", required_argument, NULL, CFG_OPT_SOCKET},
    {"log-level", required_argument, NULL, CFG_OPT_LOG_LEVEL},
    {"check-config", no_argument, NULL, CFG_OPT_CHECK},
    {"version", no_argument, NULL, 'V'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static const char cfg_usage[] =
    "Usage: crewstreamd [OPTION]...\n"
    "Streams crew-runtime events from a Unix socket to WebSocket, SSE and long-poll clients.\n"
    "\n"
    "      --config FILE        read the JSON configuration FILE (default: built-in defaults)\n"
    "      --listen HOST:PORT   HTTP and WebSocket listener (default 127.0.0.1:8000; IPv6 as [::1]:8000)\n"
    "      --socket PATH        ingest Unix socket (default $RUNTIME_DIRECTORY/ingest.sock under systemd,\n"
    "                           else $XDG_RUNTIME_DIR/crewstream.sock, else /tmp/crewstream.sock)\n"
    "      --log-level LEVEL    error, warn, info or debug (default info)\n"
    "      --check-config       validate the configuration, print it without secrets, and exit\n"
    "  -V, --version            print the version and exit\n"
    "  -h, --help               print this help and exit\n"
    "\n"
    "Precedence: built-in defaults, then --config FILE, then the environment, then flags.\n"
    "Environment: CREWSTREAM_API_KEY and CREWSTREAM_JWT_SECRET set auth.api_key and auth.jwt_secret\n"
    "(so secrets stay out of ps and out of the file).\n"
    "With no token configured the daemon starts only on a loopback listener.\n"
    "Every key is described in docs/configuration.md.\n";

static int cfg_is_option_val(int c)
{
    for (const struct option *o = cfg_options; o->name != NULL; o++)
        if (o->val == c)
            return 1;
    return 0;
}

int cs_config_from_argv(cs_config_t *cfg, int argc, char **argv, FILE *out, char *err, size_t errlen)
{
    const char *config = NULL, *listen_arg = NULL, *sock = NULL, *level_s = NULL;
    int help = 0, version = 0, check = 0;
    cs_log_level_t level = CS_LOG_INFO;
    char *host = NULL, *s;
    uint16_t port = 0;
    int c, rc;

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    rc = cs_config_defaults(cfg);
    if (rc != 0) {
        cfg_seterr(err, errlen, "out of memory");
        return rc;
    }
    rc = -EINVAL;
    if (argc > 1 && argv != NULL) {
        /*
         * optind = 0 makes glibc start over completely, so the daemon's SIGHUP reload and the unit
         * tests can parse again; "+" keeps argv unpermuted, ":" reports a missing argument as ':'.
         */
        optind = 0;
        opterr = 0;
        while ((c = getopt_long(argc, argv, "+:hV", cfg_options, NULL)) != -1) {
            const char *arg = optind > 0 && optind <= argc ? argv[optind - 1] : "?";
            switch (c) {
            case CFG_OPT_CONFIG:
                config = optarg;
                break;
            case CFG_OPT_LISTEN:
                listen_arg = optarg;
                break;
            case CFG_OPT_SOCKET:
                sock = optarg;
                break;
            case CFG_OPT_LOG_LEVEL:
                level_s = optarg;
                break;
            case CFG_OPT_CHECK:
                check = 1;
                break;
            case 'V':
                version = 1;
                break;
            case 'h':
                help = 1;
                break;
            case ':':
                cfg_seterr(err, errlen, "option \"%.64s\" needs an argument (try --help)", arg);
                goto fail;
            default:
                if (optopt != 0 && cfg_is_option_val(optopt) && strncmp(arg, "--", 2) == 0)
                    cfg_seterr(err, errlen, "option \"%.64s\" takes no argument (try --help)", arg);
                else if (optopt != 0 && optopt < 0x100 && strncmp(arg, "--", 2) != 0)
                    cfg_seterr(err, errlen, "unknown option \"-%c\" (try --help)", optopt);
                else
                    cfg_seterr(err, errlen, "unknown or ambiguous option \"%.64s\" (try --help)", arg);
                goto fail;
            }
        }
        if (optind < argc) {
            cfg_seterr(err, errlen,
                       "unexpected argument \"%.64s\": crewstreamd takes only options (try --help)",
                       argv[optind]);
            goto fail;
        }
    }
    if (help || version) {
        if (out != NULL) {
            if (help)
                fputs(cfg_usage, out);
            else
                fputs("crewstreamd " CS_VERSION "\n", out);
        }
        cs_config_free(cfg);
        return CS_CONFIG_EXIT_OK;
    }

    /* Flags are checked before the file is read, so a typo on the command line is reported as such. */
    if (config != NULL && config[0] == '\0') {
        cfg_seterr(err, errlen, "option --config needs a file name");
        goto fail;
    }
    if (listen_arg != NULL && (rc = cs_config_parse_listen(listen_arg, &host, &port)) != 0) {
        if (rc == -ENOMEM)
            cfg_seterr(err, errlen, "out of memory");
        else
            cfg_seterr(err, errlen, "--listen \"%.64s\": " CFG_LISTEN_HINT, listen_arg);
        goto fail;
    }
    if (sock != NULL && (sock[0] == '\0' || strlen(sock) > CFG_SOCKET_MAX)) {
        cfg_seterr(err, errlen, "--socket: expected a path of 1 to %zu bytes", CFG_SOCKET_MAX);
        rc = -EINVAL;
        goto fail;
    }
    if (level_s != NULL && cs_log_parse_level(level_s, &level) != 0) {
        cfg_seterr(err, errlen, "--log-level \"%.64s\": expected error, warn, info or debug", level_s);
        rc = -EINVAL;
        goto fail;
    }

    if (config != NULL) {
        rc = cs_config_load_file(cfg, config, err, errlen);
        if (rc != 0)
            goto fail;
        rc = -ENOMEM;
        cfg->config_path = strdup(config);
        if (cfg->config_path == NULL)
            goto nomem;
    }
    rc = cs_config_apply_env(cfg);
    if (rc != 0)
        goto nomem;
    rc = -ENOMEM;
    if (listen_arg != NULL) {
        s = strdup(listen_arg);
        if (s == NULL)
            goto nomem;
        free(cfg->listen);
        free(cfg->listen_host);
        cfg->listen = s;
        cfg->listen_host = host;
        cfg->listen_port = port;
        host = NULL;
    }
    if (sock != NULL) {
        s = strdup(sock);
        if (s == NULL)
            goto nomem;
        free(cfg->ingest_socket);
        cfg->ingest_socket = s;
    }
    if (level_s != NULL)
        cfg->log_level = (int)level;
    cfg->check_config = check;
    return 0;

nomem:
    cfg_seterr(err, errlen, "out of memory");
fail:
    free(host);
    cs_config_free(cfg);
    return rc < 0 ? rc : -EINVAL;
}
