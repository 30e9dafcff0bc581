/*
 * cfgschema.c - see cfgschema.h.
 */
#include "cfgschema.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

/* ---- error messages with the key's path ---- */

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

void cs_cfg_seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    cfg_scrub(err);
}

static int cfg_vfail(cs_cfg_ctx_t *ctx, int with_path, const char *fmt, va_list ap)
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

int cs_cfg_fail(cs_cfg_ctx_t *ctx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = cfg_vfail(ctx, 1, fmt, ap);
    va_end(ap);
    return rc;
}

/* Writes "FILE: message", for messages that quote the path themselves. */

int cs_cfg_fail_nopath(cs_cfg_ctx_t *ctx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = cfg_vfail(ctx, 0, fmt, ap);
    va_end(ap);
    return rc;
}

int cs_cfg_nomem(cs_cfg_ctx_t *ctx)
{
    cs_cfg_fail(ctx, "out of memory");
    return -ENOMEM;
}

size_t cs_cfg_push_key(cs_cfg_ctx_t *ctx, const char *key)
{
    size_t mark = ctx->path_len;
    cfg_appendf(ctx->path, sizeof(ctx->path), &ctx->path_len, "%s%.64s", mark > 0 ? "." : "", key);
    return mark;
}

size_t cs_cfg_push_index(cs_cfg_ctx_t *ctx, size_t i)
{
    size_t mark = ctx->path_len;
    cfg_appendf(ctx->path, sizeof(ctx->path), &ctx->path_len, "[%zu]", i);
    return mark;
}

void cs_cfg_pop(cs_cfg_ctx_t *ctx, size_t mark)
{
    ctx->path_len = mark;
    ctx->path[mark] = '\0';
}

/* Describes a JSON value for "got ..." in a message: the value itself when short, else its type. */
const char *cs_cfg_describe(const json_t *v, char *buf, size_t len)
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
const char *cs_cfg_type_name(const json_t *v)
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

void cs_cfg_secret_free(char *s)
{
    if (s != NULL) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

void cs_cfg_strv_free(char **v, size_t n)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* Copies n strings; 0 or -ENOMEM with *out untouched. */
int cs_cfg_strv_dup(char *const *src, size_t n, char ***out)
{
    char **v = calloc(n > 0 ? n : 1, sizeof(*v));

    if (v == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        v[i] = strdup(src[i]);
        if (v[i] == NULL) {
            cs_cfg_strv_free(v, i);
            return -ENOMEM;
        }
    }
    *out = v;
    return 0;
}

static const cs_cfg_field_t *cfg_find(const cs_cfg_field_t *fields, const char *key)
{
    for (const cs_cfg_field_t *f = fields; f->key != NULL; f++)
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
static int cfg_unknown_key(cs_cfg_ctx_t *ctx, const cs_cfg_field_t *fields, const char *key)
{
    const cs_cfg_field_t *best = NULL;
    size_t best_d = 3;
    char known[512];
    size_t n = 0;

    for (const cs_cfg_field_t *f = fields; f->key != NULL; f++) {
        size_t d = cfg_distance(key, f->key);
        if (d < best_d && d < strlen(f->key)) {
            best = f;
            best_d = d;
        }
        cfg_appendf(known, sizeof(known), &n, "%s%s", n > 0 ? ", " : "", f->key);
    }
    if (best != NULL) {
        char parent[CS_CFG_PATH_MAX];
        size_t cut = ctx->path_len > strlen(key) ? ctx->path_len - strlen(key) : 0;
        snprintf(parent, sizeof(parent), "%.*s", (int)cut, ctx->path);
        return cs_cfg_fail_nopath(ctx, "unknown key \"%s\" (did you mean \"%s%s\"?)", ctx->path, parent,
                                  best->key);
    }
    return cs_cfg_fail_nopath(ctx, "unknown key \"%s\" (known here: %s)", ctx->path, known);
}

/* Checks every key of obj against fields, in the file's order, then the required ones. */
int cs_cfg_walk(void *base, const cs_cfg_field_t *fields, json_t *obj, cs_cfg_ctx_t *ctx)
{
    const char *key;
    json_t *v;
    char buf[96];
    int rc;

    if (!json_is_object(obj))
        return cs_cfg_fail(ctx, "expected an object, got %s", cs_cfg_describe(obj, buf, sizeof(buf)));
    json_object_foreach(obj, key, v)
    {
        const cs_cfg_field_t *f = cfg_find(fields, key);
        size_t mark = cs_cfg_push_key(ctx, key);
        rc = f != NULL ? cs_cfg_parse_field(base, f, v, ctx) : cfg_unknown_key(ctx, fields, key);
        cs_cfg_pop(ctx, mark);
        if (rc != 0)
            return rc;
    }
    for (const cs_cfg_field_t *f = fields; f->key != NULL; f++)
        if ((f->flags & CS_CFG_REQUIRED) && json_object_get(obj, f->key) == NULL)
            return cs_cfg_fail(ctx, "missing key \"%s\"", f->key);
    return 0;
}

int cs_cfg_parse_string(const cs_cfg_field_t *f, json_t *v, cs_cfg_ctx_t *ctx, char **out)
{
    char buf[96];

    if (!json_is_string(v) || json_string_length(v) == 0)
        return cs_cfg_fail(ctx, "expected a non-empty string, got %s", cs_cfg_describe(v, buf, sizeof(buf)));
    if (strlen(json_string_value(v)) != json_string_length(v))
        return cs_cfg_fail(ctx, "the string holds a NUL character");
    if (f->check != NULL) {
        int rc = f->check(json_string_value(v), ctx);
        if (rc != 0)
            return rc;
    }
    *out = strdup(json_string_value(v));
    return *out != NULL ? 0 : cs_cfg_nomem(ctx);
}

static int cfg_parse_strings(void *base, const cs_cfg_field_t *f, json_t *v, cs_cfg_ctx_t *ctx)
{
    char buf[96];
    char **strs;
    size_t n, i;
    int rc = 0;

    if (!json_is_array(v))
        return cs_cfg_fail(ctx, "expected an array of strings, got %s", cs_cfg_describe(v, buf, sizeof(buf)));
    n = json_array_size(v);
    if (n == 0 && (f->flags & CS_CFG_NONEMPTY))
        return cs_cfg_fail(ctx, "expected at least one string");
    strs = calloc(n > 0 ? n : 1, sizeof(*strs));
    if (strs == NULL)
        return cs_cfg_nomem(ctx);
    for (i = 0; i < n; i++) {
        size_t mark = cs_cfg_push_index(ctx, i);
        rc = cs_cfg_parse_string(f, json_array_get(v, i), ctx, &strs[i]);
        cs_cfg_pop(ctx, mark);
        if (rc != 0)
            goto fail;
    }
    cs_cfg_strv_free(*CS_CFG_AT(base, f, char **), *(size_t *)((char *)base + f->count_off));
    *CS_CFG_AT(base, f, char **) = strs;
    *(size_t *)((char *)base + f->count_off) = n;
    return 0;

fail:
    cs_cfg_strv_free(strs, i);
    return rc;
}

int cs_cfg_parse_field(void *base, const cs_cfg_field_t *f, json_t *v, cs_cfg_ctx_t *ctx)
{
    char buf[96];

    if (f->ops != NULL && f->ops->parse != NULL)
        return f->ops->parse(base, f, v, ctx);
    switch (f->kind) {
    case CS_CFG_OBJECT:
        return cs_cfg_walk(base, f->sub, v, ctx);
    case CS_CFG_SIZE:
    case CS_CFG_UINT: {
        unsigned long long max = f->max;
#if SIZE_MAX < ULLONG_MAX
        if (f->kind == CS_CFG_SIZE && max > SIZE_MAX)
            max = SIZE_MAX;
#endif
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            (unsigned long long)json_integer_value(v) < f->min ||
            (unsigned long long)json_integer_value(v) > max)
            return cs_cfg_fail(ctx, "expected an integer >= %llu and <= %llu, got %s", f->min, max,
                               cs_cfg_describe(v, buf, sizeof(buf)));
        if (f->kind == CS_CFG_SIZE)
            *CS_CFG_AT(base, f, size_t) = (size_t)json_integer_value(v);
        else
            *CS_CFG_AT(base, f, unsigned) = (unsigned)json_integer_value(v);
        return 0;
    }
    case CS_CFG_BOOL:
        if (!json_is_boolean(v))
            return cs_cfg_fail(ctx, "expected true or false, got %s", cs_cfg_describe(v, buf, sizeof(buf)));
        *CS_CFG_AT(base, f, int) = json_is_true(v);
        return 0;
    case CS_CFG_SECRET: {
        /* Messages about a secret name its type only: a mistyped value may still be the secret. */
        char *s = NULL;
        if (!json_is_null(v)) {
            if (!json_is_string(v) || json_string_length(v) == 0)
                return cs_cfg_fail(ctx, "expected a non-empty string or null, got %s", cs_cfg_type_name(v));
            if (strcmp(json_string_value(v), CS_CFG_PLACEHOLDER) == 0)
                return cs_cfg_fail(ctx,
                                   "\"" CS_CFG_PLACEHOLDER "\" is what --check-config prints in place of a "
                                   "secret, not a secret");
            if (strlen(json_string_value(v)) != json_string_length(v))
                return cs_cfg_fail(ctx, "the string holds a NUL character");
            s = strdup(json_string_value(v));
            if (s == NULL)
                return cs_cfg_nomem(ctx);
            ctx->saw_secret = 1;
        }
        cs_cfg_secret_free(*CS_CFG_AT(base, f, char *));
        *CS_CFG_AT(base, f, char *) = s;
        return 0;
    }
    case CS_CFG_STRING: {
        char *s;
        int rc = cs_cfg_parse_string(f, v, ctx, &s);
        if (rc != 0)
            return rc;
        free(*CS_CFG_AT(base, f, char *));
        *CS_CFG_AT(base, f, char *) = s;
        return 0;
    }
    case CS_CFG_STRINGS:
        return cfg_parse_strings(base, f, v, ctx);
    case CS_CFG_INT:
    case CS_CFG_CUSTOM:
        break;
    }
    return cs_cfg_fail(ctx, "internal error: the row has no parser");
}

json_t *cs_cfg_dump_field(const void *base, const cs_cfg_field_t *f)
{
    if (f->ops != NULL && f->ops->dump != NULL)
        return f->ops->dump(base, f);
    switch (f->kind) {
    case CS_CFG_OBJECT:
        return cs_cfg_dump(base, f->sub);
    case CS_CFG_SIZE:
        return json_integer((json_int_t)*CS_CFG_AT_C(base, f, size_t));
    case CS_CFG_UINT:
        return json_integer((json_int_t)*CS_CFG_AT_C(base, f, unsigned));
    case CS_CFG_BOOL:
        return json_boolean(*CS_CFG_AT_C(base, f, int));
    case CS_CFG_SECRET:
        return *CS_CFG_AT_C(base, f, char *) != NULL ? json_string(CS_CFG_PLACEHOLDER) : json_null();
    case CS_CFG_STRING: {
        const char *s = *CS_CFG_AT_C(base, f, char *);
        return s != NULL ? json_string(s) : json_null();
    }
    case CS_CFG_STRINGS: {
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
    case CS_CFG_INT:
    case CS_CFG_CUSTOM:
        break;
    }
    return NULL;
}

json_t *cs_cfg_dump(const void *base, const cs_cfg_field_t *fields)
{
    json_t *o = json_object();

    for (const cs_cfg_field_t *f = fields; o != NULL && f->key != NULL; f++) {
        if (f->flags & CS_CFG_NODUMP)
            continue;
        json_t *v = cs_cfg_dump_field(base, f);
        if (v == NULL || json_object_set_new(o, f->key, v) != 0) {
            json_decref(o);
            o = NULL;
        }
    }
    return o;
}

/* ---- defaults, copies, release, comparison: what every row's kind (or ops) says ---- */

/* A row's default, read by its own parser: a default outside its bounds is refused like a bad file. */
static int cfg_default_field(void *base, const cs_cfg_field_t *f, cs_cfg_ctx_t *ctx)
{
    json_error_t je;
    json_t *v;
    int rc;

    if (f->kind == CS_CFG_OBJECT)
        return cs_cfg_walk_defaults(base, f->sub, ctx);
    if (f->def == NULL)
        return 0;
    v = json_loads(f->def, JSON_DECODE_ANY, &je);
    if (v == NULL)
        return cs_cfg_fail(ctx, "internal error: the default %s is not JSON: %s", f->def, je.text);
    rc = cs_cfg_parse_field(base, f, v, ctx);
    json_decref(v);
    return rc;
}

int cs_cfg_walk_defaults(void *base, const cs_cfg_field_t *fields, cs_cfg_ctx_t *ctx)
{
    for (const cs_cfg_field_t *f = fields; f->key != NULL; f++) {
        size_t mark = cs_cfg_push_key(ctx, f->key);
        int rc = cfg_default_field(base, f, ctx);
        cs_cfg_pop(ctx, mark);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int cs_cfg_defaults(void *base, const cs_cfg_field_t *fields, char *err, size_t errlen)
{
    cs_cfg_ctx_t ctx = {.err = err, .errlen = errlen, .name = "built-in default"};

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    return cs_cfg_walk_defaults(base, fields, &ctx);
}

static int cfg_strdup_opt(const char *src, char **out)
{
    *out = NULL;
    if (src == NULL)
        return 0;
    *out = strdup(src);
    return *out != NULL ? 0 : -ENOMEM;
}

int cs_cfg_copy_field(void *dst, const void *src, const cs_cfg_field_t *f)
{
    if (f->ops != NULL && f->ops->copy != NULL)
        return f->ops->copy(dst, src, f);
    switch (f->kind) {
    case CS_CFG_OBJECT:
        return cs_cfg_copy(dst, src, f->sub);
    case CS_CFG_SIZE:
        *CS_CFG_AT(dst, f, size_t) = *CS_CFG_AT_C(src, f, size_t);
        return 0;
    case CS_CFG_UINT:
        *CS_CFG_AT(dst, f, unsigned) = *CS_CFG_AT_C(src, f, unsigned);
        return 0;
    case CS_CFG_INT:
    case CS_CFG_BOOL:
        *CS_CFG_AT(dst, f, int) = *CS_CFG_AT_C(src, f, int);
        return 0;
    case CS_CFG_SECRET:
    case CS_CFG_STRING:
        return cfg_strdup_opt(*CS_CFG_AT_C(src, f, char *), CS_CFG_AT(dst, f, char *));
    case CS_CFG_STRINGS: {
        char *const *v = *(char **const *)((const char *)src + f->off);
        size_t n = *(const size_t *)((const char *)src + f->count_off);
        if (v == NULL)
            return 0;
        if (cs_cfg_strv_dup(v, n, CS_CFG_AT(dst, f, char **)) != 0)
            return -ENOMEM;
        *(size_t *)((char *)dst + f->count_off) = n;
        return 0;
    }
    case CS_CFG_CUSTOM: /* without ops->copy: no storage of its own */
        return 0;
    }
    return -EINVAL;
}

int cs_cfg_copy(void *dst, const void *src, const cs_cfg_field_t *fields)
{
    for (const cs_cfg_field_t *f = fields; f->key != NULL; f++) {
        int rc = cs_cfg_copy_field(dst, src, f);
        if (rc != 0)
            return rc;
    }
    return 0;
}

void cs_cfg_release_field(void *base, const cs_cfg_field_t *f)
{
    if (f->ops != NULL && f->ops->release != NULL) {
        f->ops->release(base, f);
        return;
    }
    switch (f->kind) {
    case CS_CFG_OBJECT:
        cs_cfg_release(base, f->sub);
        return;
    case CS_CFG_SECRET:
        cs_cfg_secret_free(*CS_CFG_AT(base, f, char *));
        *CS_CFG_AT(base, f, char *) = NULL;
        return;
    case CS_CFG_STRING:
        free(*CS_CFG_AT(base, f, char *));
        *CS_CFG_AT(base, f, char *) = NULL;
        return;
    case CS_CFG_STRINGS:
        cs_cfg_strv_free(*CS_CFG_AT(base, f, char **), *(size_t *)((char *)base + f->count_off));
        *CS_CFG_AT(base, f, char **) = NULL;
        *(size_t *)((char *)base + f->count_off) = 0;
        return;
    case CS_CFG_SIZE:
    case CS_CFG_UINT:
    case CS_CFG_INT:
    case CS_CFG_BOOL:
    case CS_CFG_CUSTOM:
        return;
    }
}

void cs_cfg_release(void *base, const cs_cfg_field_t *fields)
{
    for (const cs_cfg_field_t *f = fields; f->key != NULL; f++)
        cs_cfg_release_field(base, f);
}

int cs_cfg_same(const void *a, const void *b, const cs_cfg_field_t *f)
{
    json_t *ja = cs_cfg_dump_field(a, f), *jb = cs_cfg_dump_field(b, f);
    int same = ja != NULL && jb != NULL && json_equal(ja, jb);

    json_decref(ja);
    json_decref(jb);
    return same;
}

int cs_cfg_apply_env(void *base, const cs_cfg_field_t *fields)
{
    for (const cs_cfg_field_t *f = fields; f->key != NULL; f++) {
        const char *v = f->env != NULL ? getenv(f->env) : NULL;
        char *s;

        if (f->kind == CS_CFG_OBJECT) {
            if (cs_cfg_apply_env(base, f->sub) != 0)
                return -ENOMEM;
            continue;
        }
        /* An empty variable is treated as unset, so `VAR= crewstreamd` cannot switch auth off by accident. */
        if (v == NULL || v[0] == '\0')
            continue;
        s = strdup(v);
        if (s == NULL)
            return -ENOMEM;
        cs_cfg_release_field(base, f);
        *CS_CFG_AT(base, f, char *) = s;
    }
    return 0;
}
