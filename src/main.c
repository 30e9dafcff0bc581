/*
 * main.c - crewstreamd: the command line, start-up, the loop, signals (a SIGHUP reload as the
 * configuration table says), shutdown.
 *
 * Exit status: 0 after SIGTERM/SIGINT (or --help, --version, --check-config),
 * 1 when the daemon cannot start or run (address in use, socket in use),
 * 2 for configuration and usage errors.
 *
 * Under systemd (Type=notify, NOTIFY_SOCKET set) it tells the service manager
 * READY=1 once every listener is bound, RELOADING=1 and READY=1 around a SIGHUP
 * reload, STOPPING=1 when a shutdown begins, and WATCHDOG=1 from a loop timer
 * when WatchdogSec= is set, so a loop that hangs gets the service restarted.
 */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <curl/curl.h>
#include <systemd/sd-daemon.h>

#include "auth.h"
#include "cfgschema.h"
#include "config.h"
#include "daemon.h"
#include "http.h"
#include "httputil.h"
#include "ingest.h"
#include "listener.h"
#include "log.h"
#include "loop.h"
#include "persist.h"
#include "cluster.h"
#include "sse.h"
#include "store.h"
#include "transport.h"
#include "webhook.h"
#include "ws.h"

#define TICK_MS          500
#define SHUTDOWN_TICK_MS 50
#define TRIM_MIN_DROP    256
#define STATUS_EVERY_MS  5000

/* ---- the command line ---- */

enum {
    OPT_CONFIG = 0x100,
    OPT_LISTEN,
    OPT_SOCKET,
    OPT_LOG_LEVEL,
    OPT_CHECK,
};

static const struct option options[] = {
    {"config", required_argument, NULL, OPT_CONFIG},
    {"listen", required_argument, NULL, OPT_LISTEN},
    {"socket", required_argument, NULL, OPT_SOCKET},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"check-config", no_argument, NULL, OPT_CHECK},
    {"version", no_argument, NULL, 'V'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static const char usage[] =
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

/* The command line, parsed once: a SIGHUP reload reads the same file and applies the same flags again. */
typedef struct args {
    const char *config, *listen, *socket, *log_level; /* NULL when not given; point into argv */
    int check, help, version;
} args_t;

static int is_option_val(int c)
{
    for (const struct option *o = options; o->name != NULL; o++)
        if (o->val == c)
            return 1;
    return 0;
}

/* Reads argv into args and checks each flag's value; 0, or -EINVAL with a one-line message in err. */
static int parse_args(args_t *args, int argc, char **argv, char *err, size_t errlen)
{
    cs_log_level_t level;
    char *host = NULL;
    uint16_t port;
    int c, rc;

    memset(args, 0, sizeof(*args));
    /* "+" keeps argv unpermuted, ":" reports a missing argument as ':'. */
    optind = 0;
    opterr = 0;
    while (argc > 1 && (c = getopt_long(argc, argv, "+:hV", options, NULL)) != -1) {
        const char *arg = optind > 0 && optind <= argc ? argv[optind - 1] : "?";
        switch (c) {
        case OPT_CONFIG:
            args->config = optarg;
            break;
        case OPT_LISTEN:
            args->listen = optarg;
            break;
        case OPT_SOCKET:
            args->socket = optarg;
            break;
        case OPT_LOG_LEVEL:
            args->log_level = optarg;
            break;
        case OPT_CHECK:
            args->check = 1;
            break;
        case 'V':
            args->version = 1;
            break;
        case 'h':
            args->help = 1;
            break;
        case ':':
            cs_cfg_seterr(err, errlen, "option \"%.64s\" needs an argument (try --help)", arg);
            return -EINVAL;
        default:
            if (optopt != 0 && is_option_val(optopt) && strncmp(arg, "--", 2) == 0)
                cs_cfg_seterr(err, errlen, "option \"%.64s\" takes no argument (try --help)", arg);
            else if (optopt != 0 && optopt < 0x100 && strncmp(arg, "--", 2) != 0)
                cs_cfg_seterr(err, errlen, "unknown option \"-%c\" (try --help)", optopt);
            else
                cs_cfg_seterr(err, errlen, "unknown or ambiguous option \"%.64s\" (try --help)", arg);
            return -EINVAL;
        }
    }
    if (argc > 1 && optind < argc) {
        cs_cfg_seterr(err, errlen,
                      "unexpected argument \"%.64s\": crewstreamd takes only options (try --help)",
                      argv[optind]);
        return -EINVAL;
    }
    if (args->help || args->version)
        return 0;

    /* Flags are checked before the file is read, so a typo on the command line is reported as such. */
    if (args->config != NULL && args->config[0] == '\0') {
        cs_cfg_seterr(err, errlen, "option --config needs a file name");
        return -EINVAL;
    }
    if (args->listen != NULL && (rc = cs_config_parse_listen(args->listen, &host, &port)) != 0) {
        if (rc == -ENOMEM)
            cs_cfg_seterr(err, errlen, "out of memory");
        else
            cs_cfg_seterr(err, errlen, "--listen \"%.64s\": " CS_CONFIG_LISTEN_HINT, args->listen);
        return rc;
    }
    free(host);
    if (args->socket != NULL && (args->socket[0] == '\0' || strlen(args->socket) > CS_CONFIG_SOCKET_MAX)) {
        cs_cfg_seterr(err, errlen, "--socket: expected a path of 1 to %zu bytes", CS_CONFIG_SOCKET_MAX);
        return -EINVAL;
    }
    if (args->log_level != NULL && cs_log_parse_level(args->log_level, &level) != 0) {
        cs_cfg_seterr(err, errlen, "--log-level \"%.64s\": expected error, warn, info or debug",
                      args->log_level);
        return -EINVAL;
    }
    return 0;
}

/*
 * The configuration the command line asks for: defaults, --config FILE, the environment, then the flags
 * (a last layer read through the same table as the file). 0, or a negative errno with a message in err.
 */
static int load_config(cs_config_t *cfg, const args_t *args, char *err, size_t errlen)
{
    json_t *flags = json_object(), *ingest = json_object(), *log = json_object();
    int rc = -ENOMEM;

    if (cs_config_defaults(cfg) != 0) {
        cs_cfg_seterr(err, errlen, "out of memory");
        goto out;
    }
    if (args->config != NULL && (rc = cs_config_load_file(cfg, args->config, err, errlen)) != 0)
        goto out;
    rc = -ENOMEM;
    if (cs_config_apply_env(cfg) != 0 || flags == NULL || ingest == NULL || log == NULL ||
        (args->listen != NULL && json_object_set_new(flags, "listen", json_string(args->listen)) != 0) ||
        (args->socket != NULL && json_object_set_new(ingest, "socket", json_string(args->socket)) != 0) ||
        (args->log_level != NULL && json_object_set_new(log, "level", json_string(args->log_level)) != 0) ||
        json_object_set(flags, "ingest", ingest) != 0 || json_object_set(flags, "log", log) != 0) {
        cs_cfg_seterr(err, errlen, "out of memory");
        goto out;
    }
    rc = cs_config_load_json(cfg, flags, err, errlen);

out:
    json_decref(flags);
    json_decref(ingest);
    json_decref(log);
    if (rc != 0)
        cs_config_free(cfg);
    return rc;
}

typedef struct app {
    cs_daemon_t d;
    cs_timer_t tick;
    int64_t stop_deadline;
    size_t clients_peak; /* the most connections since memory was last given back */
    args_t args;
    cs_auth_t *next_auth; /* built by a reload before it puts the new configuration in force */
    /* systemd's notification socket (sd_notify) */
    int notify;            /* NOTIFY_SOCKET is set: a service manager listens */
    int notify_failed;     /* a send failed and was logged (once) */
    cs_timer_t watchdog;   /* sends WATCHDOG=1; armed only when the watchdog watches this process */
    int64_t watchdog_ms;   /* half of WATCHDOG_USEC */
    int64_t status_at;     /* when STATUS= was last sent */
    size_t status_clients; /* the counts it showed */
    size_t status_producers;
} app_t;

/*
 * Sends one notification to the service manager (sd_notify: a datagram to $NOTIFY_SOCKET). Without
 * NOTIFY_SOCKET it does nothing at all; a failure is logged once, since the next one (a watchdog
 * ping every few seconds) would only repeat it.
 */
static void notify(app_t *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void notify(app_t *a, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    int rc;

    if (!a->notify)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    rc = sd_notify(0, msg);
    if (rc < 0 && !a->notify_failed) {
        a->notify_failed = 1;
        cs_log_warn("sd_notify: %s", strerror(-rc));
    }
}

/* "STATUS=serving, 3 clients, 1 producer": what `systemctl status` shows under the unit's name. */
static void notify_status(app_t *a, const char *head)
{
    cs_daemon_t *d = &a->d;
    size_t producers = cs_ingest_count(d->ingest);

    a->status_at = cs_loop_now(d->loop);
    a->status_clients = d->clients;
    a->status_producers = producers;
    notify(a, "%sSTATUS=serving, %zu client%s, %zu producer%s", head, d->clients, d->clients == 1 ? "" : "s",
           producers, producers == 1 ? "" : "s");
}

static void on_watchdog(cs_timer_t *t)
{
    app_t *a = t->data;

    notify(a, "WATCHDOG=1");
    cs_timer_start(t, a->watchdog_ms);
}

/*
 * Arms the watchdog timer when systemd watches this process (WatchdogSec=: WATCHDOG_USEC set, and
 * WATCHDOG_PID, when set, is our pid), pinging at half the interval as sd_watchdog_enabled(3) advises.
 */
static void watchdog_start(app_t *a)
{
    uint64_t usec = 0;
    int rc;

    if (!a->notify)
        return;
    rc = sd_watchdog_enabled(0, &usec);
    if (rc < 0) {
        cs_log_warn("watchdog: WATCHDOG_USEC or WATCHDOG_PID is not valid (%s): not pinging", strerror(-rc));
        return;
    }
    if (rc == 0)
        return;
    a->watchdog_ms = (int64_t)(usec / 2000);
    if (a->watchdog_ms < 1)
        a->watchdog_ms = 1;
    cs_timer_init(&a->watchdog, a->d.loop, on_watchdog, a);
    cs_timer_start(&a->watchdog, 0);
    cs_log_debug("watchdog: WATCHDOG=1 every %lld ms", (long long)a->watchdog_ms);
}

static unsigned long long monotonic_usec(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000ull;
}

static void store_limits(const cs_config_t *cfg, cs_store_limits_t *lim)
{
    lim->ring_events = cfg->ring_events;
    lim->ring_bytes = cfg->ring_bytes;
    lim->max_bytes = cfg->max_bytes;
    lim->retain_s = cfg->retain_s;
    lim->global_events = cfg->global_events;
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/*
 * limits.max_clients must fit under the open-files limit with what else the daemon holds (see
 * cs_config_fit_nofile): a configuration that does not is clamped with a warning, or refused when not
 * one client would fit. Returns 0 or -1 (logged).
 */
static int fit_nofile(cs_config_t *cfg, const char *when)
{
    char msg[512];
    int rc = cs_config_fit_nofile(cfg, cs_nofile_limit(),
                                  CS_LISTENER_HEALTH_RESERVE + CS_LISTENER_REFUSED_LINGER, msg, sizeof(msg));

    if (rc < 0)
        cs_log_error("%s%s", when, msg);
    else if (rc > 0)
        cs_log_warn("%s%s", when, msg);
    return rc < 0 ? -1 : 0;
}

/*
 * The journal (SPEC §8): replays journal.dir into the empty store and becomes its observer, before any
 * other module registers its before-sleep hook (persist.h: a confirmation's replies then go out in the
 * same turn). Without journal.dir it says once that the daemon keeps memory only. Returns 0, or -1
 * (logged) when the daemon must not start: a journal of a newer format, out of memory.
 */
/*
 * Cluster mode (SPEC §11, docs/cluster.md): the store becomes a cache of Redis, which holds the order and
 * the history; the journal is then off. Connecting goes on in the background: until Redis is ready,
 * publishes are refused (unavailable) and /health says degraded. Returns 0, or -1 (logged).
 */
static int cluster_open(app_t *a)
{
    cs_daemon_t *d = &a->d;
    cs_config_t *cfg = d->cfg;
    cs_cluster_opts_t o = {.redis = cfg->cluster_redis,
                           .node = cfg->cluster_node,
                           .prefix = cfg->cluster_prefix,
                           .ring_events = cfg->ring_events,
                           .retain_s = cfg->retain_s};
    int rc;

    if (cfg->cluster_redis == NULL)
        return 0;
    if (cfg->journal_dir != NULL) {
        cs_log_warn("cluster: the journal is off in cluster mode (journal.dir %s is not used): Redis is the "
                    "durable store (configure its AOF: docs/cluster.md)",
                    cfg->journal_dir);
        free(cfg->journal_dir);
        cfg->journal_dir = NULL;
    }
    rc = cs_cluster_new(&d->cluster, d->loop, d->store, &o);
    if (rc != 0) {
        cs_log_error("cluster: cannot start on %s: %s", cfg->cluster_redis, strerror(-rc));
        return -1;
    }
    cs_log_info("cluster: node %s, Redis %s, prefix %s: connecting",
                cfg->cluster_node != NULL ? cfg->cluster_node : "(host name)", cfg->cluster_redis,
                cfg->cluster_prefix);
    return 0;
}

static int journal_open(app_t *a)
{
    cs_daemon_t *d = &a->d;
    const cs_config_t *cfg = d->cfg;
    cs_persist_opts_t o = {.dir = cfg->journal_dir,
                           .fsync = (cs_jsync_t)cfg->journal_fsync,
                           .max_bytes = cfg->journal_max_bytes};
    char detail[512] = "";
    int rc;

    if (cfg->journal_dir == NULL && d->cluster != NULL)
        return 0; /* cluster_open said so */
    if (cfg->journal_dir == NULL) {
        cs_log_info("journal: off (memory only): set journal.dir (systemd: StateDirectory= sets it) to keep "
                    "events, cursors and human-input requests across restarts");
        return 0;
    }
    rc = cs_persist_open(&d->persist, d->loop, d->store, &o, detail, sizeof(detail));
    if (rc != 0) {
        d->persist = NULL;
        if (detail[0] == '\0')
            snprintf(detail, sizeof(detail), "%s", strerror(-rc));
        if (rc == -EPROTONOSUPPORT)
            cs_log_error("journal %s: %s: written by a newer crewstreamd; start that version, or move the "
                         "directory away to start empty",
                         cfg->journal_dir, detail);
        else
            cs_log_error("journal %s: cannot open it: %s", cfg->journal_dir, detail);
        notify(a, "STATUS=start failed: journal: %s", detail);
        return -1;
    }
    /* persist.c has logged the replay (and why, when degraded): this line says how it runs. */
    cs_log_info("journal: %s (fsync %s, max_bytes %zu)%s", cfg->journal_dir,
                cs_config_fsync_name(cfg->journal_fsync), cfg->journal_max_bytes,
                cs_persist_degraded(d->persist, NULL)
                    ? ": degraded, publishes are refused until it can be written"
                    : "");
    return 0;
}

/*
 * The transports, in the order the listener offers them a request head: the native SSE writer takes
 * the plain SSE GETs it can serve, libwebsockets the upgrades, libmicrohttpd everything else. main
 * creates, ticks, shuts down, counts and frees them through this table alone: a new consumer is one
 * file (its cs_transport_ops_t) and one row here.
 */
static const cs_transport_ops_t *const transports[] = {
    &cs_sse_transport,
    &cs_ws_transport,
    &cs_http_transport,
};

_Static_assert(sizeof(transports) / sizeof(transports[0]) <= CS_TRANSPORTS_MAX,
               "CS_TRANSPORTS_MAX is too small");

static int transports_new(cs_daemon_t *d, char *err, size_t errlen)
{
    for (size_t i = 0; i < sizeof(transports) / sizeof(transports[0]); i++) {
        int rc = transports[i]->create(d, &d->transports[i].self, err, errlen);
        if (rc != 0)
            return rc;
        d->transports[i].ops = transports[i];
        d->n_transports = i + 1;
    }
    return 0;
}

/* Frees them, the last row first. */
static void transports_free(cs_daemon_t *d)
{
    while (d->n_transports > 0) {
        cs_transport_t *t = &d->transports[--d->n_transports];
        t->ops->destroy(t->self);
        t->self = NULL;
    }
}

static int drained(app_t *a)
{
    cs_daemon_t *d = &a->d;
    return cs_transport_count(d, NULL) == 0 && cs_listener_pending(d->listener) == 0;
}

/*
 * glibc keeps what closed connections freed in its heap, so after a crowd leaves RSS stays near its
 * peak. When the connections have fallen to half their peak (and by at least TRIM_MIN_DROP),
 * malloc_trim hands the free pages back to the kernel; it walks the heap, so it runs rarely.
 */
static void give_back_memory(app_t *a)
{
    size_t n = a->d.clients;

    if (n > a->clients_peak)
        a->clients_peak = n;
    if (a->clients_peak - n >= TRIM_MIN_DROP && n <= a->clients_peak / 2) {
        malloc_trim(0);
        a->clients_peak = n;
    }
}

static void on_tick(cs_timer_t *t)
{
    app_t *a = t->data;
    cs_daemon_t *d = &a->d;
    int64_t now = cs_loop_now(d->loop);

    cs_log_flush();
    if (d->stopping) {
        if (drained(a) || now >= a->stop_deadline) {
            if (!drained(a))
                cs_log_warn(
                    "shutdown: %us passed with %zu HTTP streams and %zu WebSockets open: closing them",
                    d->cfg->shutdown_s, cs_transport_count(d, "http_streams"),
                    cs_transport_count(d, "websockets"));
            cs_loop_stop(d->loop);
            return;
        }
        cs_timer_start(t, SHUTDOWN_TICK_MS);
        return;
    }
    cs_store_expire(d->store, now);
    give_back_memory(a);
    if (a->notify && now - a->status_at >= STATUS_EVERY_MS &&
        (d->clients != a->status_clients || cs_ingest_count(d->ingest) != a->status_producers))
        notify_status(a, "");
    for (size_t i = 0; i < d->n_transports; i++)
        d->transports[i].ops->tick(d->transports[i].self, now);
    cs_timer_start(t, TICK_MS);
}

static void begin_shutdown(app_t *a, int signo)
{
    cs_daemon_t *d = &a->d;

    if (d->stopping) {
        cs_log_warn("second %s: stopping now", strsignal(signo));
        cs_loop_stop(d->loop);
        return;
    }
    cs_log_info("%s: shutting down (up to %us)", strsignal(signo), d->cfg->shutdown_s);
    notify(a, "STOPPING=1\nSTATUS=stopping: closing %zu connections (up to %us)",
           d->clients + cs_ingest_count(d->ingest), d->cfg->shutdown_s);
    d->stopping = 1;
    a->stop_deadline = cs_loop_now(d->loop) + (int64_t)d->cfg->shutdown_s * 1000;
    cs_listener_close(d->listener);
    cs_ingest_close_listener(d->ingest);
    for (size_t i = 0; i < d->n_transports; i++)
        d->transports[i].ops->shutdown(d->transports[i].self);
    cs_timer_start(&a->tick, 0);
}

/*
 * What a reload does for the keys whose rows name an apply function (CS_CFG_APPLY in config.c's table).
 * prepare does what may fail before anything changes; commit puts the new configuration in force.
 */
typedef struct applier {
    int (*prepare)(app_t *a, const cs_config_t *next, char *err, size_t errlen); /* NULL: cannot fail */
    void (*commit)(app_t *a);
} applier_t;

/* auth.*: a new token table, checked like at start-up against the listener the daemon is bound to. */
static int auth_prepare(app_t *a, const cs_config_t *next, char *err, size_t errlen)
{
    return cs_auth_new(&a->next_auth, next, cs_listener_is_loopback(a->d.cfg->listen_host), err, errlen);
}

static void auth_commit(app_t *a)
{
    cs_auth_free(a->d.auth);
    a->d.auth = a->next_auth;
    a->next_auth = NULL;
}

static void store_commit(app_t *a)
{
    cs_store_limits_t lim;

    store_limits(a->d.cfg, &lim);
    /* The journal's cap on the store (persist.h) holds across reloads, as at start. */
    if (cs_persist_cap_limits(a->d.persist, &lim))
        cs_log_warn("reload: store.max_bytes is more than a third of journal.max_bytes: the store is held to "
                    "%zu bytes",
                    lim.max_bytes);
    cs_store_set_limits(a->d.store, &lim);
}

static void log_commit(app_t *a)
{
    cs_log_set_level((cs_log_level_t)a->d.cfg->log_level);
}

static const applier_t appliers[CS_CONFIG_APPLY_MAX] = {
    [CS_CONFIG_APPLY_AUTH] = {auth_prepare, auth_commit},
    [CS_CONFIG_APPLY_STORE] = {NULL, store_commit},
    [CS_CONFIG_APPLY_LOG] = {NULL, log_commit},
};

/*
 * SIGHUP: re-read the configuration. Each key does what its row in config.c's table says: applied at
 * once (read where it is used), through an apply function above, or kept until a restart (warned
 * about). Returns 0, or -1 when the running configuration was kept.
 */
static int reload(app_t *a)
{
    cs_daemon_t *d = &a->d;
    cs_config_t *cfg = calloc(1, sizeof(*cfg));
    cs_config_reload_plan_t plan;
    char err[512] = "out of memory";
    unsigned i;

    if (cfg == NULL)
        goto keep;
    if (load_config(cfg, &a->args, err, sizeof(err)) != 0)
        goto keep;
    if (cs_config_reload_plan(cfg, d->cfg, &plan) != 0) {
        snprintf(err, sizeof(err), "out of memory");
        goto keep;
    }
    /* Clamped with a warning, or refused when not one client would fit (logged by fit_nofile). */
    if (fit_nofile(cfg, "reload: ") != 0) {
        snprintf(err, sizeof(err), "limits.max_clients leaves no room under the open-files limit");
        goto keep;
    }
    for (i = 0; i < CS_CONFIG_APPLY_MAX; i++)
        if ((plan.apply & 1u << i) && appliers[i].prepare != NULL &&
            appliers[i].prepare(a, cfg, err, sizeof(err)) != 0)
            goto keep;
    if (plan.n_restart > 0)
        cs_log_warn("reload: %s changes take effect at the next restart", plan.restart);

    cs_config_free(d->cfg);
    free(d->cfg);
    d->cfg = cfg;
    for (i = 0; i < CS_CONFIG_APPLY_MAX; i++)
        if ((plan.apply & 1u << i) && appliers[i].commit != NULL)
            appliers[i].commit(a);
    cs_log_info("reload: configuration re-read (%zu tokens)", cfg->n_tokens + (cfg->api_key != NULL));
    return 0;

keep:
    cs_log_error("reload: %s; keeping the running configuration", err);
    cs_auth_free(a->next_auth);
    a->next_auth = NULL;
    cs_config_free(cfg);
    free(cfg);
    return -1;
}

static void on_signal(int signo, void *data)
{
    app_t *a = data;

    if (signo != SIGHUP) {
        begin_shutdown(a, signo);
        return;
    }
    /* The protocol of Type=notify-reload: RELOADING=1 stamped with the monotonic clock, then READY=1. */
    notify(a, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading the configuration", monotonic_usec());
    if (reload(a) == 0)
        notify_status(a, "READY=1\n");
    else
        notify(a, "READY=1\nSTATUS=serving; the last reload failed, the running configuration was kept");
}

int main(int argc, char **argv)
{
    static app_t app;
    app_t *a = &app;
    cs_daemon_t *d = &a->d;
    cs_store_limits_t lim;
    char err[512] = "";
    int rc, status = 1;

    d->cfg = calloc(1, sizeof(*d->cfg));
    if (d->cfg == NULL)
        return 1;
    if (parse_args(&a->args, argc, argv, err, sizeof(err)) != 0) {
        fprintf(stderr, "crewstreamd: %s\n", err);
        status = 2;
        goto out_cfg;
    }
    if (a->args.help || a->args.version) {
        fputs(a->args.help ? usage : "crewstreamd " CS_VERSION "\n", stdout);
        status = 0;
        goto out_cfg;
    }
    if (load_config(d->cfg, &a->args, err, sizeof(err)) != 0) {
        fprintf(stderr, "crewstreamd: %s\n", err);
        status = 2;
        goto out_cfg;
    }
    cs_log_set_level((cs_log_level_t)d->cfg->log_level);
    if (cs_auth_new(&d->auth, d->cfg, cs_listener_is_loopback(d->cfg->listen_host), err, sizeof(err)) != 0) {
        fprintf(stderr, "crewstreamd: %s\n", err);
        status = 2;
        goto out_cfg;
    }
    if (a->args.check) {
        cs_config_dump(d->cfg, stdout);
        status = 0;
        goto out_auth;
    }

    signal(SIGPIPE, SIG_IGN);
    /* Once, before any thread (the journal's sync thread, curl's resolver threads) starts. */
    curl_global_init(CURL_GLOBAL_DEFAULT);
    raise_nofile();
    if (fit_nofile(d->cfg, "") != 0) {
        status = 2;
        goto out_auth;
    }
    a->notify = getenv("NOTIFY_SOCKET") != NULL && getenv("NOTIFY_SOCKET")[0] != '\0';
    store_limits(d->cfg, &lim);
    if ((rc = cs_loop_new(&d->loop)) != 0 || (rc = cs_store_new(&d->store, &lim)) != 0) {
        cs_log_error("start: %s", strerror(-rc));
        goto out;
    }
    /* The store's clock from the start: an execution finished before the first tick is timed from now,
     * not from the clock's zero (which would expire it at that tick), and so is a replayed one. */
    cs_store_set_now(d->store, cs_loop_update_now(d->loop));
    /* The signals are blocked (and read from a signalfd) before the journal starts its sync thread, which
     * inherits the mask: a SIGTERM or SIGHUP delivered to that thread would otherwise kill the process. */
    cs_loop_signal(d->loop, SIGINT, on_signal, a);
    cs_loop_signal(d->loop, SIGTERM, on_signal, a);
    cs_loop_signal(d->loop, SIGHUP, on_signal, a);
    if (cluster_open(a) != 0 || journal_open(a) != 0)
        goto out;
    if (cs_ingest_new(&d->ingest, d, err, sizeof(err)) != 0 || transports_new(d, err, sizeof(err)) != 0 ||
        cs_webhooks_new(&d->webhooks, d, err, sizeof(err)) != 0 ||
        cs_listener_new(&d->listener, d, err, sizeof(err)) != 0) {
        cs_log_error("start: %s", err);
        notify(a, "STATUS=start failed: %s", err);
        goto out;
    }
    cs_timer_init(&a->tick, d->loop, on_tick, a);
    cs_timer_start(&a->tick, TICK_MS);

    cs_log_info("crewstreamd %s: http://%s/ (WebSocket and HTTP on one port), ingest %s, %s", CS_VERSION,
                d->cfg->listen, d->cfg->ingest_socket,
                cs_auth_is_open(d->auth) ? "no tokens (open, loopback only)" : "tokens required");
    /* Every listener is bound and listening: a client that connects now is served once the loop runs. */
    watchdog_start(a);
    notify_status(a, "READY=1\n");
    if ((rc = cs_loop_run(d->loop)) != 0) {
        cs_log_error("loop: %s", strerror(-rc));
        goto out;
    }
    status = 0;
    cs_log_flush();
    cs_log_info("stopped");

out:
    cs_timer_stop(&a->tick);
    cs_timer_stop(&a->watchdog);
    cs_listener_free(d->listener);
    cs_ingest_free(d->ingest);
    cs_webhooks_free(d->webhooks);
    transports_free(d);
    /* Every client is gone (their waiting publishes forgotten): what is still queued is answered. */
    cs_cluster_free(d->cluster);
    d->cluster = NULL;
    /* Every client is gone (their waiting publishes forgotten): what was accepted is written and synced. */
    cs_persist_close(d->persist);
    d->persist = NULL;
    cs_store_free(d->store);
    cs_loop_free(d->loop);
out_auth:
    cs_auth_free(d->auth);
out_cfg:
    cs_config_free(d->cfg);
    free(d->cfg);
    return status;
}
