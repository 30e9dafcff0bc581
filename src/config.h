/*
 * config.h - the daemon's configuration: built-in defaults, then the JSON file
 * (--config), then the environment (CREWSTREAM_API_KEY, CREWSTREAM_JWT_SECRET),
 * then command-line flags (read by main.c, applied with cs_config_load_json). Unknown keys and wrong types
 * are refused with the key's path in the message ("store.ring_events: expected an integer >= 1").
 * docs/configuration.md lists every key; conf/crewstream.json shows them all.
 */
#ifndef CS_CONFIG_H
#define CS_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <sys/un.h>

#include <jansson.h>

/* Token scopes, a bit each. */
#define CS_SCOPE_READ    0x1u
#define CS_SCOPE_RESPOND 0x2u
#define CS_SCOPE_PUBLISH 0x4u
#define CS_SCOPE_ADMIN   0x8u
#define CS_SCOPE_KICKOFF 0x10u /* POST /kickoff, GET /inputs, GET /v1/crews (SPEC §9) */
#define CS_SCOPE_ALL     0x1fu

/** One static bearer token: only its SHA-256 is kept, whether the file gave "sha256" or "token". */
typedef struct cs_token_conf {
    char *name;
    unsigned char sha256[32];
    unsigned scopes;
    char **executions; /* ids or fnmatch(3) globs; "*" = all */
    size_t n_executions;
} cs_token_conf_t;

/* sun_path holds the socket path and its terminating NUL. */
#define CS_CONFIG_SOCKET_MAX  (sizeof(((struct sockaddr_un *)0)->sun_path) - 1)
#define CS_CONFIG_LISTEN_HINT "expected \"HOST:PORT\" with a port from 1 to 65535 (IPv6 as \"[::1]:8000\")"

typedef struct cs_config {
    /* "listen": "HOST:PORT"; IPv6 as "[::1]:8000". */
    char *listen;
    char *listen_host;
    uint16_t listen_port;

    /* "ingest" */
    char *ingest_socket;  /* default: cs_config_default_socket() */
    unsigned ingest_mode; /* from the octal string "0660" */
    uid_t *allow_uids;    /* empty = any peer that can open the socket */
    size_t n_allow_uids;

    /* "auth" */
    char *api_key; /* seed-style single key: read+respond+kickoff on all executions */
    cs_token_conf_t *tokens;
    size_t n_tokens;
    char *jwt_secret;

    /* "store" */
    size_t ring_events;   /* per execution, default 1024 */
    size_t ring_bytes;    /* per execution, default 1 MiB */
    size_t max_bytes;     /* all events, default 256 MiB */
    unsigned retain_s;    /* finished executions kept, default 3600 */
    size_t global_events; /* ring behind GET /v1/events, default 4096 */

    /* "limits" */
    size_t max_clients;      /* TCP connections, default 10000 */
    size_t max_producers;    /* Unix-socket connections, default 1024 */
    size_t max_event_bytes;  /* one line / one event, default 1 MiB */
    size_t head_bytes;       /* request head, default 8192 */
    unsigned head_timeout_s; /* default 5 */
    unsigned stall_s;        /* default 60 */
    unsigned json_depth;     /* default 32 */
    size_t max_body_bytes;   /* HTTP request bodies, default 4 MiB */

    unsigned heartbeat_s; /* default 15 */
    unsigned shutdown_s;  /* default 5 */

    /* "http" */
    char **cors_origins; /* default ["*"] */
    size_t n_cors_origins;
    int metrics_public; /* /metrics without a token; default 0 (needs "admin" or "read" on "*") */

    /* "webhooks" (webhook.h, docs/webhooks.md) */
    json_t *webhook_endpoints; /* the checked array of webhooks.endpoints */
    char **webhook_allow;      /* URL prefixes requests may name; default none */
    size_t n_webhook_allow;
    unsigned webhook_max_attempts;      /* default 12 */
    unsigned webhook_connect_timeout_s; /* default 5 */
    unsigned webhook_timeout_s;         /* a whole request, default 10 */
    size_t webhook_max_in_flight;       /* requests per endpoint, default 16 */
    size_t webhook_max_executions;      /* delivery cursors per endpoint, default 1024 */
    size_t webhook_max_registrations;   /* executions with registered URLs, default 10000 */
    unsigned webhook_busy_share; /* per cent of the loop requests may take while ingest is busy, default 5 */

    /* "log" */
    int log_level; /* a cs_log_level_t */

    /* "journal" (SPEC §8): read once, at start */
    char *journal_dir;        /* NULL: memory only; default: cs_config_default_journal_dir() */
    int journal_fsync;        /* a cs_jsync_t (journal.h), default "everysec" */
    size_t journal_max_bytes; /* default 1 GiB */
    /* "gateway" (SPEC §9) */
    char *default_crew;     /* the crew of GET /inputs and POST /kickoff without "crew"; NULL: the only one */
    unsigned ack_timeout_s; /* a kickoff not acknowledged goes to another runtime, default 10 */
    size_t gateway_queue;   /* kickoffs waiting for a runtime, over every crew, default 1000 */
    unsigned queue_timeout_s; /* a kickoff for a crew nobody serves fails after it, default 60 */
    /* "cluster" (SPEC §11): read once, at start */
    char *cluster_redis;  /* "unix:/path" or "redis://host:port"; NULL: no cluster (one node alone) */
    char *cluster_node;   /* this node's name; NULL: the host name */
    char *cluster_prefix; /* what every Redis key and channel begins with, default "cs:" */
} cs_config_t;

/**
 * The functions that apply keys marked CS_CFG_APPLY on a SIGHUP reload, as the table names them; main.c
 * gives each its body.
 */
typedef enum cs_config_apply {
    CS_CONFIG_APPLY_AUTH = 1, /* auth.*: the token table is built again */
    CS_CONFIG_APPLY_STORE,    /* store.*: the store's limits */
    CS_CONFIG_APPLY_LOG,      /* log.level */
    CS_CONFIG_APPLY_MAX
} cs_config_apply_t;

/** What a SIGHUP reload does, as the table says. */
typedef struct cs_config_reload_plan {
    unsigned apply;    /* bit 1u << CS_CONFIG_APPLY_x for every apply function the table names */
    char restart[256]; /* the restart-only keys whose value changed: "listen and ingest.socket" */
    size_t n_restart;
} cs_config_reload_plan_t;

/**
 * Compares next (just read) with running, key by key: every key whose row says it needs a restart and
 * whose value changed is named in plan->restart and set back to its running value in next. Returns 0,
 * or -ENOMEM (next is then only partly restored: drop it).
 */
int cs_config_reload_plan(cs_config_t *next, const cs_config_t *running, cs_config_reload_plan_t *plan);

/** Fills cfg with the documented defaults. Returns 0 or -ENOMEM. */
int cs_config_defaults(cs_config_t *cfg);

/**
 * Reads a JSON configuration file over the values already in cfg. On error returns
 * -EINVAL (or -errno for I/O) and writes one line to err naming the file and the key path.
 */
int cs_config_load_file(cs_config_t *cfg, const char *path, char *err, size_t errlen);

/** Parses a whole configuration from a buffer (what cs_config_load_file does after reading). */
int cs_config_load_buffer(cs_config_t *cfg, const char *buf, size_t len, char *err, size_t errlen);

/** Reads one parsed JSON object over cfg, all or nothing (messages name no file). */
int cs_config_load_json(cs_config_t *cfg, json_t *root, char *err, size_t errlen);

/** Applies CREWSTREAM_API_KEY and CREWSTREAM_JWT_SECRET when set. */
int cs_config_apply_env(cs_config_t *cfg);

/** Writes the effective configuration as JSON, secrets replaced by "(set)" or null. */
void cs_config_dump(const cs_config_t *cfg, FILE *out);

/** Parses "HOST:PORT" / "[V6]:PORT" into freshly allocated host and port; 0 or -EINVAL. */
int cs_config_parse_listen(const char *s, char **host, uint16_t *port);

/**
 * Returns the default ingest socket path (malloc'd): "$RUNTIME_DIRECTORY/ingest.sock" when systemd set
 * RUNTIME_DIRECTORY (its first directory when it lists several), else "$XDG_RUNTIME_DIR/crewstream.sock",
 * else "/tmp/crewstream.sock".
 */
char *cs_config_default_socket(void);

/**
 * Returns the default journal directory (malloc'd), or NULL (with *nomem 0) when there is none:
 * "$STATE_DIRECTORY" when systemd set it (the unit's StateDirectory=; its first directory when it lists
 * several), else none (the journal is off: memory only). *nomem is set when out of memory.
 */
char *cs_config_default_journal_dir(int *nomem);

/** The name of a journal.fsync value: "none", "everysec" or "always". */
const char *cs_config_fsync_name(int fsync);

/** Descriptors the daemon keeps for itself (standard streams, the loop, the listeners, the HTTP
 * libraries' own, the journal): not available to clients. */
#define CS_CONFIG_OWN_FDS 64

/**
 * Checks limits.max_clients against the open-files limit nofile (0: unlimited, nothing to check).
 * The daemon needs CS_CONFIG_OWN_FDS descriptors, one per producer (limits.max_producers), and extra
 * for connections it answers over max_clients; what is left is the most max_clients can be. Returns 0
 * when the configuration fits; 1 when max_clients was lowered to what fits (msg says so); -1 when not
 * even one client fits (msg says why; cfg unchanged).
 */
int cs_config_fit_nofile(cs_config_t *cfg, size_t nofile, size_t extra, char *msg, size_t msglen);

/** Frees everything cfg owns. */
void cs_config_free(cs_config_t *cfg);

#endif
