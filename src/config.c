/*
 * config.c - see config.h.
 *
 * The daemon's keys are one table (cfg_root_fields and the tables it points to),
 * read by the schema engine (cfgschema.c). A row holds everything about its key:
 * name, kind, where it lands, its default, its range and what a SIGHUP reload
 * does with it. The same rows set the defaults, drive the parser and the key
 * paths in error messages, print --check-config, copy and free a configuration
 * and plan a reload, so a key cannot be accepted without also having a default,
 * being printed (in the shape it is read), freed and given a reload rule.
 *
 * A load works on a copy of the configuration and replaces the original only
 * when the whole file was accepted: a bad file (or a bad SIGHUP reload) leaves
 * the configuration in force exactly as it was.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "auth.h"
#include "whconf.h"
#include "cfgschema.h"
#include "journal.h"
#include "log.h"
#include "utf8.h"

/* A configuration file larger than this is surely the wrong file. */
#define CFG_FILE_MAX   (4u << 20)
#define CFG_ORIGIN_MAX 256

/* ---- checks and custom kinds ---- */

/* "listen": "HOST:PORT"; sets listen, listen_host and listen_port together. */
static int cfg_parse_listen_key(void *base, const cs_cfg_field_t *f, json_t *v, cs_cfg_ctx_t *ctx)
{
    cs_config_t *cfg = base;
    char buf[96];
    char *host = NULL, *copy;
    uint16_t port;
    int rc;

    (void)f;
    if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
        return cs_cfg_fail(ctx, CS_CONFIG_LISTEN_HINT ", got %s", cs_cfg_describe(v, buf, sizeof(buf)));
    rc = cs_config_parse_listen(json_string_value(v), &host, &port);
    if (rc == -ENOMEM)
        return cs_cfg_nomem(ctx);
    if (rc != 0)
        return cs_cfg_fail(ctx, CS_CONFIG_LISTEN_HINT ", got %s", cs_cfg_describe(v, buf, sizeof(buf)));
    copy = strdup(json_string_value(v));
    if (copy == NULL) {
        free(host);
        return cs_cfg_nomem(ctx);
    }
    free(cfg->listen);
    free(cfg->listen_host);
    cfg->listen = copy;
    cfg->listen_host = host;
    cfg->listen_port = port;
    return 0;
}

static json_t *cfg_dump_listen(const void *base, const cs_cfg_field_t *f)
{
    const cs_config_t *cfg = base;
    (void)f;
    return cfg->listen != NULL ? json_string(cfg->listen) : json_null();
}

static int cfg_copy_listen(void *dst, const void *src, const cs_cfg_field_t *f)
{
    cs_config_t *d = dst;
    const cs_config_t *s = src;
    (void)f;
    d->listen = s->listen != NULL ? strdup(s->listen) : NULL;
    d->listen_host = s->listen_host != NULL ? strdup(s->listen_host) : NULL;
    d->listen_port = s->listen_port;
    if ((s->listen != NULL && d->listen == NULL) || (s->listen_host != NULL && d->listen_host == NULL)) {
        free(d->listen);
        free(d->listen_host);
        d->listen = d->listen_host = NULL;
        return -ENOMEM;
    }
    return 0;
}

static void cfg_release_listen(void *base, const cs_cfg_field_t *f)
{
    cs_config_t *cfg = base;
    (void)f;
    free(cfg->listen);
    free(cfg->listen_host);
    cfg->listen = cfg->listen_host = NULL;
    cfg->listen_port = 0;
}

static const cs_cfg_ops_t cfg_listen_ops = {.parse = cfg_parse_listen_key,
                                            .dump = cfg_dump_listen,
                                            .copy = cfg_copy_listen,
                                            .release = cfg_release_listen};

/* A socket path must fit sun_path, or bind(2) would fail long after the configuration was accepted. */
static int cfg_check_socket(const char *s, cs_cfg_ctx_t *ctx)
{
    if (strlen(s) > CS_CONFIG_SOCKET_MAX)
        return cs_cfg_fail(ctx, "path is %zu bytes long; a Unix socket path holds at most %zu", strlen(s),
                           CS_CONFIG_SOCKET_MAX);
    return 0;
}

/* "ingest.socket": a path, or null for the built-in default (cs_config_default_socket). */
static int cfg_parse_socket(void *base, const cs_cfg_field_t *f, json_t *v, cs_cfg_ctx_t *ctx)
{
    char *s;

    if (json_is_null(v)) {
        s = cs_config_default_socket();
        if (s == NULL)
            return cs_cfg_nomem(ctx);
    } else {
        int rc = cs_cfg_parse_string(f, v, ctx, &s);
        if (rc != 0)
            return rc;
    }
    free(*CS_CFG_AT(base, f, char *));
    *CS_CFG_AT(base, f, char *) = s;
    return 0;
}

static const cs_cfg_ops_t cfg_socket_ops = {.parse = cfg_parse_socket};

/*
 * "ingest.mode": an octal string. A JSON number is refused on purpose: 0660 is not valid JSON and
 * 660 would be read as decimal, which is how sockets end up world-writable.
 */
static int cfg_parse_mode(void *base, const cs_cfg_field_t *f, json_t *v, cs_cfg_ctx_t *ctx)
{
    char buf[96];
    const char *s;
    size_t n;

    if (!json_is_string(v))
        return cs_cfg_fail(ctx, "expected an octal string like \"0660\", got %s%s",
                           cs_cfg_describe(v, buf, sizeof(buf)),
                           json_is_integer(v) ? " (write the mode in quotes: a JSON number is decimal)" : "");
    s = json_string_value(v);
    n = strlen(s);
    if (n != json_string_length(v) || n < 3 || n > 4 || strspn(s, "01234567") != n || (n == 4 && s[0] != '0'))
        return cs_cfg_fail(ctx, "expected an octal string from \"0000\" to \"0777\" like \"0660\", got %s",
                           cs_cfg_describe(v, buf, sizeof(buf)));
    *CS_CFG_AT(base, f, unsigned) = (unsigned)strtoul(s, NULL, 8);
    return 0;
}

static json_t *cfg_dump_mode(const void *base, const cs_cfg_field_t *f)
{
    char s[16];
    snprintf(s, sizeof(s), "%04o", *CS_CFG_AT_C(base, f, unsigned) & 07777u);
    return json_string(s);
}

static const cs_cfg_ops_t cfg_mode_ops = {.parse = cfg_parse_mode, .dump = cfg_dump_mode};

/* "ingest.allow_uids": numeric uids; (uid_t)-1 means "no uid" to the kernel and is refused. */
static int cfg_parse_uids(void *base, const cs_cfg_field_t *f, json_t *v, cs_cfg_ctx_t *ctx)
{
    cs_config_t *cfg = base;
    char buf[96];
    uid_t *uids;
    size_t n;

    (void)f;
    if (!json_is_array(v))
        return cs_cfg_fail(ctx, "expected an array of numeric uids, got %s",
                           cs_cfg_describe(v, buf, sizeof(buf)));
    n = json_array_size(v);
    uids = calloc(n > 0 ? n : 1, sizeof(*uids));
    if (uids == NULL)
        return cs_cfg_nomem(ctx);
    for (size_t i = 0; i < n; i++) {
        json_t *u = json_array_get(v, i);
        if (!json_is_integer(u) || json_integer_value(u) < 0 ||
            json_integer_value(u) >= (json_int_t)UINT32_MAX) {
            size_t mark = cs_cfg_push_index(ctx, i);
            cs_cfg_fail(ctx, "expected a numeric uid >= 0 and <= %u, got %s", UINT32_MAX - 1,
                        cs_cfg_describe(u, buf, sizeof(buf)));
            cs_cfg_pop(ctx, mark);
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

static json_t *cfg_dump_uids(const void *base, const cs_cfg_field_t *f)
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

static int cfg_copy_uids(void *dst, const void *src, const cs_cfg_field_t *f)
{
    cs_config_t *d = dst;
    const cs_config_t *s = src;
    (void)f;
    if (s->n_allow_uids == 0)
        return 0;
    d->allow_uids = calloc(s->n_allow_uids, sizeof(uid_t));
    if (d->allow_uids == NULL)
        return -ENOMEM;
    memcpy(d->allow_uids, s->allow_uids, s->n_allow_uids * sizeof(uid_t));
    d->n_allow_uids = s->n_allow_uids;
    return 0;
}

static void cfg_release_uids(void *base, const cs_cfg_field_t *f)
{
    cs_config_t *cfg = base;
    (void)f;
    free(cfg->allow_uids);
    cfg->allow_uids = NULL;
    cfg->n_allow_uids = 0;
}

static const cs_cfg_ops_t cfg_uids_ops = {
    .parse = cfg_parse_uids, .dump = cfg_dump_uids, .copy = cfg_copy_uids, .release = cfg_release_uids};

/*
 * An origin is what a browser sends in its Origin header: "scheme://host[:port]", no path. The
 * value is echoed into a response header, so anything outside printable ASCII is refused.
 */
static int cfg_check_origin(const char *s, cs_cfg_ctx_t *ctx)
{
    const char *sep = strstr(s, "://");
    size_t n = strlen(s);

    if (strcmp(s, "*") == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
            return cs_cfg_fail(ctx, "an origin holds no spaces, control or non-ASCII characters");
    if (n > CFG_ORIGIN_MAX || sep == NULL || sep == s || sep[3] == '\0' || strchr(sep + 3, '/') != NULL)
        return cs_cfg_fail(
            ctx,
            "expected \"*\" or an origin like \"https://app.example.com\" (no path, no trailing "
            "slash), got \"%.64s\"",
            s);
    return 0;
}

static int cfg_parse_level(void *base, const cs_cfg_field_t *f, json_t *v, cs_cfg_ctx_t *ctx)
{
    cs_log_level_t level;
    char buf[96];

    if (!json_is_string(v))
        return cs_cfg_fail(ctx, "expected one of \"error\", \"warn\", \"info\", \"debug\", got %s",
                           cs_cfg_describe(v, buf, sizeof(buf)));
    if (cs_log_parse_level(json_string_value(v), &level) != 0)
        return cs_cfg_fail(ctx, "unknown level \"%.64s\" (error, warn, info, debug)", json_string_value(v));
    *CS_CFG_AT(base, f, int) = (int)level;
    return 0;
}

static json_t *cfg_dump_level(const void *base, const cs_cfg_field_t *f)
{
    return json_string(cs_log_level_name((cs_log_level_t)*CS_CFG_AT_C(base, f, int)));
}

static const cs_cfg_ops_t cfg_level_ops = {.parse = cfg_parse_level, .dump = cfg_dump_level};

/* The longest journal directory: segment names ("/" and 24 bytes) must still fit a path. */
#define CFG_JOURNAL_DIR_MAX 4000

/* "journal.dir": a directory path, or null for the default (cs_config_default_journal_dir). */
static int cfg_parse_journal_dir(void *base, const cs_cfg_field_t *f, json_t *v, cs_cfg_ctx_t *ctx)
{
    char buf[96];
    char *s = NULL;
    int nomem = 0;

    if (json_is_null(v)) {
        s = cs_config_default_journal_dir(&nomem);
        if (nomem)
            return cs_cfg_nomem(ctx);
    } else {
        if (!json_is_string(v))
            return cs_cfg_fail(ctx,
                               "expected a directory path (a string) or null (the default: $STATE_DIRECTORY, "
                               "else memory only), got %s",
                               cs_cfg_describe(v, buf, sizeof(buf)));
        int rc = cs_cfg_parse_string(f, v, ctx, &s);
        if (rc != 0)
            return rc;
        if (strlen(s) > CFG_JOURNAL_DIR_MAX) {
            free(s);
            return cs_cfg_fail(ctx, "the path is longer than %d bytes", CFG_JOURNAL_DIR_MAX);
        }
    }
    free(*CS_CFG_AT(base, f, char *));
    *CS_CFG_AT(base, f, char *) = s;
    return 0;
}

static const cs_cfg_ops_t cfg_journal_dir_ops = {.parse = cfg_parse_journal_dir};

/* "journal.fsync": "always", "everysec" or "none". */
static int cfg_parse_fsync(void *base, const cs_cfg_field_t *f, json_t *v, cs_cfg_ctx_t *ctx)
{
    char buf[96];
    int mode;

    /* Read here rather than with cs_jsync_parse, so that the configuration needs no journal code. */
    for (mode = CS_JSYNC_NONE; mode <= CS_JSYNC_ALWAYS; mode++)
        if (json_is_string(v) && strlen(json_string_value(v)) == json_string_length(v) &&
            strcmp(json_string_value(v), cs_config_fsync_name(mode)) == 0)
            break;
    if (mode > CS_JSYNC_ALWAYS)
        return cs_cfg_fail(ctx,
                           "expected \"always\" (sync before every acknowledgement), \"everysec\" (sync "
                           "about once a second) or \"none\" (the OS syncs), got %s",
                           cs_cfg_describe(v, buf, sizeof(buf)));
    *CS_CFG_AT(base, f, int) = mode;
    return 0;
}

static json_t *cfg_dump_fsync(const void *base, const cs_cfg_field_t *f)
{
    return json_string(cs_config_fsync_name(*CS_CFG_AT_C(base, f, int)));
}

static const cs_cfg_ops_t cfg_fsync_ops = {.parse = cfg_parse_fsync, .dump = cfg_dump_fsync};

/* ---- the table ---- */

/* A number: kind, key, member, default, range, what a reload does. */
#define CFG_NUM(kind_, key_, member, def_, lo, hi, reload_)                                                  \
    {                                                                                                        \
        .key = key_, .kind = kind_, .off = offsetof(cs_config_t, member), .def = def_, .min = lo, .max = hi, \
        .reload = reload_                                                                                    \
    }
#define CFG_OBJ(key_, table)                                                                                 \
    {                                                                                                        \
        .key = key_, .kind = CS_CFG_OBJECT, .sub = table                                                     \
    }
#define CFG_LIVE      .reload = CS_CFG_LIVE
#define CFG_RESTART   .reload = CS_CFG_RESTART
#define CFG_APPLY(fn) .reload = CS_CFG_APPLY, .apply = CS_CONFIG_APPLY_##fn
#define CFG_STORE     CS_CFG_APPLY, .apply = CS_CONFIG_APPLY_STORE

#define CFG_KIB 1024ull
#define CFG_MIB (1024ull * CFG_KIB)
#define CFG_TIB (1024ull * 1024ull * CFG_MIB)

/*
 * Defaults and ranges: docs/configuration.md explains each; the unit tests check that its tables show
 * these defaults and reload rules. What a reload does is in docs/operations.md and main.c:reload.
 */
static const cs_cfg_field_t cfg_ingest_fields[] = {
    /* The socket is bound and its mode set at start-up. */
    {.key = "socket",
     .kind = CS_CFG_STRING,
     .off = offsetof(cs_config_t, ingest_socket),
     .def = "null",
     .check = cfg_check_socket,
     .ops = &cfg_socket_ops,
     CFG_RESTART},
    {.key = "mode",
     .kind = CS_CFG_UINT,
     .off = offsetof(cs_config_t, ingest_mode),
     .def = "\"0660\"",
     .ops = &cfg_mode_ops,
     CFG_RESTART},
    /* Checked at every accept. */
    {.key = "allow_uids", .kind = CS_CFG_CUSTOM, .def = "[]", .ops = &cfg_uids_ops, CFG_LIVE},
    {.key = NULL},
};

/* The token table (auth.c) is built again from these at every reload. */
static const cs_cfg_field_t cfg_auth_fields[] = {
    {.key = "api_key",
     .kind = CS_CFG_SECRET,
     .off = offsetof(cs_config_t, api_key),
     .def = "null",
     .env = "CREWSTREAM_API_KEY",
     CFG_APPLY(AUTH)},
    {.key = "tokens", .kind = CS_CFG_CUSTOM, .def = "[]", .ops = &cs_auth_tokens_ops, CFG_APPLY(AUTH)},
    {.key = "jwt_secret",
     .kind = CS_CFG_SECRET,
     .off = offsetof(cs_config_t, jwt_secret),
     .def = "null",
     .env = "CREWSTREAM_JWT_SECRET",
     CFG_APPLY(AUTH)},
    {.key = NULL},
};

static const cs_cfg_field_t cfg_store_fields[] = {
    CFG_NUM(CS_CFG_SIZE, "ring_events", ring_events, "1024", 1, 1048576, CFG_STORE),
    CFG_NUM(CS_CFG_SIZE, "ring_bytes", ring_bytes, "1048576", 1 * CFG_KIB, 1 * CFG_TIB, CFG_STORE),
    CFG_NUM(CS_CFG_SIZE, "max_bytes", max_bytes, "268435456", 64 * CFG_KIB, 1 * CFG_TIB, CFG_STORE),
    CFG_NUM(CS_CFG_UINT, "retain_s", retain_s, "3600", 0, 31536000, CFG_STORE),
    /* The global ring is allocated once, at its full size. */
    CFG_NUM(CS_CFG_SIZE, "global_events", global_events, "4096", 1, 1048576, CS_CFG_RESTART),
    {.key = NULL},
};

/*
 * Read where they are used, so a reload applies them at once. head_bytes and stall_s also size the HTTP
 * libraries' buffers and libmicrohttpd's idle timeout, which keep their start-up values.
 */
static const cs_cfg_field_t cfg_limits_fields[] = {
    CFG_NUM(CS_CFG_SIZE, "max_clients", max_clients, "10000", 1, 1000000, CS_CFG_LIVE),
    CFG_NUM(CS_CFG_SIZE, "max_producers", max_producers, "1024", 1, 65536, CS_CFG_LIVE),
    CFG_NUM(CS_CFG_SIZE, "max_event_bytes", max_event_bytes, "1048576", 1 * CFG_KIB, 256 * CFG_MIB,
            CS_CFG_LIVE),
    CFG_NUM(CS_CFG_SIZE, "head_bytes", head_bytes, "8192", 1 * CFG_KIB, 1 * CFG_MIB, CS_CFG_LIVE),
    CFG_NUM(CS_CFG_UINT, "head_timeout_s", head_timeout_s, "5", 1, 3600, CS_CFG_LIVE),
    CFG_NUM(CS_CFG_UINT, "stall_s", stall_s, "60", 1, 86400, CS_CFG_LIVE),
    CFG_NUM(CS_CFG_UINT, "json_depth", json_depth, "32", 1, 1024, CS_CFG_LIVE),
    CFG_NUM(CS_CFG_SIZE, "max_body_bytes", max_body_bytes, "4194304", 1 * CFG_KIB, 256 * CFG_MIB,
            CS_CFG_LIVE),
    {.key = NULL},
};

static const cs_cfg_field_t cfg_http_fields[] = {
    {.key = "cors_origins",
     .kind = CS_CFG_STRINGS,
     .off = offsetof(cs_config_t, cors_origins),
     .count_off = offsetof(cs_config_t, n_cors_origins),
     .def = "[\"*\"]",
     .check = cfg_check_origin,
     CFG_LIVE},
    {.key = "metrics_public",
     .kind = CS_CFG_BOOL,
     .off = offsetof(cs_config_t, metrics_public),
     .def = "false",
     CFG_LIVE},
    {.key = NULL},
};

/* A webhooks.allow prefix: an http(s) URL prefix. */
static int cfg_check_allow(const char *s, cs_cfg_ctx_t *ctx)
{
    if (strncmp(s, "http://", 7) != 0 && strncmp(s, "https://", 8) != 0)
        return cs_cfg_fail(ctx,
                           "expected an http:// or https:// URL prefix, e.g. \"http://127.0.0.1:9000/\"");
    return 0;
}

/* Endpoints are built once (webhook.c); the rest is read where it is used. */
static const cs_cfg_field_t cfg_webhooks_fields[] = {
    {.key = "endpoints",
     .kind = CS_CFG_CUSTOM,
     .off = offsetof(cs_config_t, webhook_endpoints),
     .def = "[]",
     .ops = &cs_webhook_endpoints_ops,
     CFG_RESTART},
    {.key = "allow",
     .kind = CS_CFG_STRINGS,
     .off = offsetof(cs_config_t, webhook_allow),
     .count_off = offsetof(cs_config_t, n_webhook_allow),
     .def = "[]",
     .check = cfg_check_allow,
     CFG_LIVE},
    CFG_NUM(CS_CFG_UINT, "max_attempts", webhook_max_attempts, "12", 1, 100, CS_CFG_LIVE),
    CFG_NUM(CS_CFG_UINT, "connect_timeout_s", webhook_connect_timeout_s, "5", 1, 300, CS_CFG_LIVE),
    CFG_NUM(CS_CFG_UINT, "timeout_s", webhook_timeout_s, "10", 1, 3600, CS_CFG_LIVE),
    CFG_NUM(CS_CFG_SIZE, "max_in_flight", webhook_max_in_flight, "16", 1, 1024, CS_CFG_LIVE),
    CFG_NUM(CS_CFG_SIZE, "max_executions", webhook_max_executions, "1024", 1, 1048576, CS_CFG_LIVE),
    CFG_NUM(CS_CFG_SIZE, "max_registrations", webhook_max_registrations, "10000", 1, 10000000, CS_CFG_LIVE),
    CFG_NUM(CS_CFG_UINT, "busy_share", webhook_busy_share, "5", 1, 100, CS_CFG_LIVE),
    {.key = NULL},
};

static const cs_cfg_field_t cfg_log_fields[] = {
    {.key = "level",
     .kind = CS_CFG_INT,
     .off = offsetof(cs_config_t, log_level),
     .def = "\"info\"",
     .ops = &cfg_level_ops,
     CFG_APPLY(LOG)},
    {.key = NULL},
};

/* The journal is opened and replayed once, at start: a reload that changes these says they apply at the
 * next start. */
static const cs_cfg_field_t cfg_journal_fields[] = {
    {.key = "dir",
     .kind = CS_CFG_STRING,
     .off = offsetof(cs_config_t, journal_dir),
     .def = "null",
     .ops = &cfg_journal_dir_ops,
     CFG_RESTART},
    {.key = "fsync",
     .kind = CS_CFG_INT,
     .off = offsetof(cs_config_t, journal_fsync),
     .def = "\"everysec\"",
     .ops = &cfg_fsync_ops,
     CFG_RESTART},
    /* At least two segments of the smallest size and a snapshot between them. */
    CFG_NUM(CS_CFG_SIZE, "max_bytes", journal_max_bytes, "1073741824", 8 * CFG_MIB, 64 * CFG_TIB,
            CS_CFG_RESTART),
    {.key = NULL},
};

/* "gateway.default_crew": a crew name, or null (the only crew served). */
static int cfg_parse_opt_string(void *base, const cs_cfg_field_t *f, json_t *v, cs_cfg_ctx_t *ctx)
{
    char *s = NULL;

    if (!json_is_null(v)) {
        int rc = cs_cfg_parse_string(f, v, ctx, &s);
        if (rc != 0)
            return rc;
    }
    free(*CS_CFG_AT(base, f, char *));
    *CS_CFG_AT(base, f, char *) = s;
    return 0;
}

static const cs_cfg_ops_t cfg_opt_string_ops = {.parse = cfg_parse_opt_string};

/* Read where they are used (gateway.c gets them at every call), so a reload applies them at once. */
static const cs_cfg_field_t cfg_gateway_fields[] = {
    {.key = "default_crew",
     .kind = CS_CFG_STRING,
     .off = offsetof(cs_config_t, default_crew),
     .def = "null",
     .ops = &cfg_opt_string_ops,
     CFG_LIVE},
    CFG_NUM(CS_CFG_UINT, "ack_timeout_s", ack_timeout_s, "10", 1, 3600, CS_CFG_LIVE),
    CFG_NUM(CS_CFG_SIZE, "queue", gateway_queue, "1000", 0, 1000000, CS_CFG_LIVE),
    CFG_NUM(CS_CFG_UINT, "queue_timeout_s", queue_timeout_s, "60", 0, 86400, CS_CFG_LIVE),
    {.key = NULL},
};

/* "cluster.redis": "unix:/path" (absolute) or "redis://host:port" (no user, password, database or path). */
static int cfg_check_redis(const char *s, cs_cfg_ctx_t *ctx)
{
    static const char usage[] = "expected \"unix:/path/to/redis.sock\" or \"redis://host:port\"";
    size_t n = strlen(s);

    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
            return cs_cfg_fail(ctx, "%s: no spaces, control or non-ASCII characters", usage);
    if (strncmp(s, "unix:", 5) == 0) {
        if (s[5] != '/' || n - 5 >= 108) /* sun_path */
            return cs_cfg_fail(ctx, "%s: the socket path must be absolute and shorter than 108 bytes", usage);
        return 0;
    }
    if (strncmp(s, "redis://", 8) == 0) {
        const char *h = s + 8, *colon = strrchr(h, ':');
        char *end;
        unsigned long port;
        if (strpbrk(h, "/@?#") != NULL || colon == NULL || colon == h || n > 8 + 255 + 6)
            return cs_cfg_fail(ctx, "%s (no user, password, database or path), got \"%.64s\"", usage, s);
        errno = 0;
        port = strtoul(colon + 1, &end, 10);
        if (colon[1] < '0' || colon[1] > '9' || *end != '\0' || errno != 0 || port == 0 || port > 65535)
            return cs_cfg_fail(ctx, "%s: the port must be 1-65535, got \"%.64s\"", usage, s);
        return 0;
    }
    return cs_cfg_fail(ctx, "%s, got \"%.64s\"", usage, s);
}

/* "cluster.node", "cluster.prefix": what goes into Redis names and metric labels: printable, no spaces. */
static int cfg_check_cluster_name(const char *s, cs_cfg_ctx_t *ctx)
{
    size_t n = strlen(s);

    if (n > 64)
        return cs_cfg_fail(ctx, "at most 64 bytes, got %zu", n);
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && strchr("._:-", s[i]) == NULL)
            return cs_cfg_fail(ctx, "only letters, digits and ._:- are allowed, got \"%.64s\"", s);
    return 0;
}

/* Cluster mode is chosen at start: a reload that changes these says they apply at the next start. */
static const cs_cfg_field_t cfg_cluster_fields[] = {
    {.key = "redis",
     .kind = CS_CFG_STRING,
     .off = offsetof(cs_config_t, cluster_redis),
     .def = "null",
     .ops = &cfg_opt_string_ops,
     .check = cfg_check_redis,
     CFG_RESTART},
    {.key = "node",
     .kind = CS_CFG_STRING,
     .off = offsetof(cs_config_t, cluster_node),
     .def = "null",
     .ops = &cfg_opt_string_ops,
     .check = cfg_check_cluster_name,
     CFG_RESTART},
    {.key = "prefix",
     .kind = CS_CFG_STRING,
     .off = offsetof(cs_config_t, cluster_prefix),
     .def = "\"cs:\"",
     .check = cfg_check_cluster_name,
     CFG_RESTART},
    {.key = NULL},
};

static const cs_cfg_field_t cfg_root_fields[] = {
    /* The listener is bound at start-up. */
    {.key = "listen",
     .kind = CS_CFG_CUSTOM,
     .def = "\"127.0.0.1:8000\"",
     .ops = &cfg_listen_ops,
     CFG_RESTART},
    CFG_OBJ("ingest", cfg_ingest_fields),
    CFG_OBJ("auth", cfg_auth_fields),
    CFG_OBJ("store", cfg_store_fields),
    CFG_OBJ("limits", cfg_limits_fields),
    CFG_NUM(CS_CFG_UINT, "heartbeat_s", heartbeat_s, "15", 1, 3600, CS_CFG_LIVE),
    CFG_NUM(CS_CFG_UINT, "shutdown_s", shutdown_s, "5", 0, 3600, CS_CFG_LIVE),
    CFG_OBJ("http", cfg_http_fields),
    CFG_OBJ("webhooks", cfg_webhooks_fields),
    CFG_OBJ("log", cfg_log_fields),
    CFG_OBJ("journal", cfg_journal_fields),
    CFG_OBJ("gateway", cfg_gateway_fields),
    CFG_OBJ("cluster", cfg_cluster_fields),
    {.key = NULL},
};

/* ---- public functions ---- */
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

char *cs_config_default_journal_dir(int *nomem)
{
    /* systemd sets STATE_DIRECTORY from the unit's StateDirectory= (/var/lib/crewstream, kept across
     * restarts and upgrades); it may list several directories separated by ':', the first is ours. */
    const char *dir = getenv("STATE_DIRECTORY");
    size_t dlen;
    char *s;

    *nomem = 0;
    if (dir == NULL || dir[0] == '\0' || dir[0] == ':')
        return NULL;
    dlen = strcspn(dir, ":");
    while (dlen > 1 && dir[dlen - 1] == '/')
        dlen--;
    s = strndup(dir, dlen);
    if (s == NULL)
        *nomem = 1;
    return s;
}

const char *cs_config_fsync_name(int fsync)
{
    switch ((cs_jsync_t)fsync) {
    case CS_JSYNC_NONE:
        return "none";
    case CS_JSYNC_EVERYSEC:
        return "everysec";
    case CS_JSYNC_ALWAYS:
        return "always";
    }
    return "?";
}

int cs_config_defaults(cs_config_t *cfg)
{
    int rc;

    memset(cfg, 0, sizeof(*cfg));
    rc = cs_cfg_defaults(cfg, cfg_root_fields, NULL, 0);
    if (rc != 0)
        cs_config_free(cfg);
    return rc;
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
    cs_cfg_release(cfg, cfg_root_fields);
    memset(cfg, 0, sizeof(*cfg));
}

/* A deep copy, so a load can work on a draft and the original survives a bad file. */
static int cfg_copy(cs_config_t *dst, const cs_config_t *src)
{
    memset(dst, 0, sizeof(*dst));
    if (cs_cfg_copy(dst, src, cfg_root_fields) != 0) {
        cs_config_free(dst);
        return -ENOMEM;
    }
    return 0;
}

/* Reads root over cfg, all or nothing. */
static int cfg_load_json(cs_config_t *cfg, cs_cfg_ctx_t *ctx, json_t *root)
{
    cs_config_t draft;
    char dbuf[96];
    int rc;

    if (!json_is_object(root))
        return cs_cfg_fail_nopath(ctx, "expected a JSON object at the top level, got %s",
                                  cs_cfg_describe(root, dbuf, sizeof(dbuf)));
    if (cfg_copy(&draft, cfg) != 0)
        return cs_cfg_nomem(ctx);
    rc = cs_cfg_walk(&draft, cfg_root_fields, root, ctx);
    if (rc == 0) {
        cs_config_free(cfg);
        *cfg = draft;
    } else {
        cs_config_free(&draft);
    }
    return rc;
}

int cs_config_load_json(cs_config_t *cfg, json_t *root, char *err, size_t errlen)
{
    cs_cfg_ctx_t ctx = {.err = err, .errlen = errlen};

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    return cfg_load_json(cfg, &ctx, root);
}

/* Parses text named name (for messages; NULL for none) over cfg, all or nothing. */
static int cfg_load(cs_config_t *cfg, const char *name, const char *buf, size_t len, char *err, size_t errlen,
                    int *saw_secret)
{
    cs_cfg_ctx_t ctx = {.err = err, .errlen = errlen, .name = name};
    json_error_t je;
    json_t *root;
    int rc;

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    root = json_loadb(buf != NULL ? buf : "", buf != NULL ? len : 0, JSON_REJECT_DUPLICATES, &je);
    if (root == NULL) {
        if (je.line >= 1)
            return cs_cfg_fail_nopath(&ctx, "line %d, column %d: %s", je.line, je.column, je.text);
        return cs_cfg_fail_nopath(&ctx, "%s", je.text);
    }
    rc = cfg_load_json(cfg, &ctx, root);
    if (rc == 0 && saw_secret != NULL)
        *saw_secret = ctx.saw_secret;
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
        cs_cfg_seterr(err, errlen, "%s: %s", path, strerror(-rc));
        return rc;
    }
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        cs_cfg_seterr(err, errlen, "%s: %s", path, strerror(-rc));
        goto out;
    }
    if (S_ISDIR(st.st_mode)) {
        rc = -EISDIR;
        cs_cfg_seterr(err, errlen, "%s: is a directory, not a configuration file", path);
        goto out;
    }
    /* Read to the end rather than trusting st_size, so /dev/stdin and pipes work too. */
    for (;;) {
        if (len == cap) {
            size_t ncap = cap > 0 ? cap * 2 : 16384;
            if (cap >= CFG_FILE_MAX) {
                rc = -EFBIG;
                cs_cfg_seterr(err, errlen, "%s: larger than %u MiB; is this the configuration file?", path,
                              CFG_FILE_MAX >> 20);
                goto out;
            }
            nbuf = malloc(ncap + 1);
            if (nbuf == NULL) {
                rc = -ENOMEM;
                cs_cfg_seterr(err, errlen, "%s: out of memory", path);
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
            cs_cfg_seterr(err, errlen, "%s: %s", path, strerror(-rc));
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

int cs_config_apply_env(cs_config_t *cfg)
{
    return cs_cfg_apply_env(cfg, cfg_root_fields);
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
    root = cs_cfg_dump(cfg, cfg_root_fields);
    if (root == NULL) {
        fputs("{\"error\": \"out of memory\"}\n", out);
        return;
    }
    json_dumpf(root, out, JSON_INDENT(2));
    fputc('\n', out);
    json_decref(root);
}

/* ---- reload ---- */

/* Adds key to "a, b and c". */
static void cfg_plan_add_restart(cs_config_reload_plan_t *plan, const char *key)
{
    size_t n = strlen(plan->restart);
    char *and = strstr(plan->restart, " and ");

    if (n + 5 + strlen(key) + 1 > sizeof(plan->restart))
        return;
    if (and != NULL)
        memcpy(and, ",    ", 5), memmove(and+1, and+4, strlen(and+4) + 1), n -= 3;
    snprintf(plan->restart + n, sizeof(plan->restart) - n, "%s%s", n > 0 ? " and " : "", key);
    plan->n_restart++;
}

static void cfg_plan_walk(const cs_cfg_field_t *fields, cs_config_t *next, const cs_config_t *running,
                          cs_config_reload_plan_t *plan, char *path, size_t path_len, int *rc)
{
    for (const cs_cfg_field_t *f = fields; f->key != NULL; f++) {
        size_t n = path_len;
        if (n + 1 + strlen(f->key) + 1 > CS_CFG_PATH_MAX)
            continue;
        n += (size_t)sprintf(path + path_len, "%s%s", path_len > 0 ? "." : "", f->key);
        if (f->kind == CS_CFG_OBJECT) {
            cfg_plan_walk(f->sub, next, running, plan, path, n, rc);
        } else if (f->reload == CS_CFG_APPLY) {
            plan->apply |= 1u << f->apply;
        } else if (f->reload == CS_CFG_RESTART && !cs_cfg_same(next, running, f)) {
            /* The running value stays: the daemon is bound to it (and a shutdown unlinks that socket). */
            cfg_plan_add_restart(plan, path);
            cs_cfg_release_field(next, f);
            if (cs_cfg_copy_field(next, running, f) != 0)
                *rc = -ENOMEM;
        }
        path[path_len] = '\0';
    }
}

int cs_config_reload_plan(cs_config_t *next, const cs_config_t *running, cs_config_reload_plan_t *plan)
{
    char path[CS_CFG_PATH_MAX] = "";
    int rc = 0;

    memset(plan, 0, sizeof(*plan));
    cfg_plan_walk(cfg_root_fields, next, running, plan, path, 0, &rc);
    return rc;
}
