/*
 * cli.h - the pieces of the crewstream command-line tool: what every command shares (exit codes,
 * errors, global options: common.c), the HTTP helpers (libcurl: http.c), the SSE parser (sse.c),
 * the tree renderer (render.c) and the commands (one file each, dispatched by main.c).
 */
#ifndef CS_CLI_H
#define CS_CLI_H

#include <getopt.h>
#include <stddef.h>
#include <stdio.h>

#include <jansson.h>

#include "buf.h"

/* Exit codes: documented in `crewstream --help` and docs/cli.md; keep the three in step. */
enum {
    CLI_OK = 0,         /* done */
    CLI_EFAIL = 1,      /* the daemon refused or failed: HTTP 4xx/5xx not below, an ingest error */
    CLI_EUSAGE = 2,     /* bad command line */
    CLI_EUNREACH = 3,   /* cannot reach the daemon (HTTP URL or Unix socket) */
    CLI_ENOTFOUND = 4,  /* 404: no such execution or request */
    CLI_ECONFLICT = 5,  /* 409: nothing open to answer, or already answered */
    CLI_EAUTH = 6,      /* 401/403: missing, invalid or insufficient token */
    CLI_ERUNFAILED = 7, /* tail --exit-on-end: the run ended failed or canceled */
    CLI_EINTR = 130,    /* interrupted (Ctrl-C) */
};

/** What every command knows: where the daemon is and how to speak to it. */
typedef struct cli_ctx {
    const char *url;    /* base URL without a trailing slash */
    const char *token;  /* bearer token or NULL */
    const char *socket; /* ingest Unix socket path; NULL when the default is too long */
    const char *cmd;    /* the command being run, for messages ("tail") */
    int color_out;      /* colour allowed on stdout */
    int color_err;      /* colour allowed on stderr */
} cli_ctx_t;

/* ---- shared by every command: errors, usage, global options (common.c) ---- */

/**
 * Fills a context from the environment: CREWSTREAM_URL, CREWSTREAM_TOKEN, CREWSTREAM_SOCKET (else
 * the library's crewstream_default_socket_path) and whether stdout/stderr take colour. Returns
 * CLI_OK, or CLI_EUSAGE (after printing why) for a bad CREWSTREAM_URL.
 */
int cli_ctx_init(cli_ctx_t *ctx);

/** Prints the top-level help (commands, global options, exit codes) to `out`. */
void cli_usage(FILE *out);

/** The socket path for messages: ctx->socket, or what the default would have been. */
const char *cli_socket_name(const cli_ctx_t *ctx);

/* Long-option values for the global options, accepted by every command. */
enum { CLI_OPT_URL = 0x1000, CLI_OPT_TOKEN, CLI_OPT_SOCKET, CLI_OPT_HELP };

#define CLI_GLOBAL_LONGOPTS                                                                                  \
    {"url", required_argument, NULL, CLI_OPT_URL}, {"token", required_argument, NULL, CLI_OPT_TOKEN},        \
        {"socket", required_argument, NULL, CLI_OPT_SOCKET},                                                 \
    {                                                                                                        \
        "help", no_argument, NULL, 'h'                                                                       \
    }

/**
 * Handles a global option returned by getopt_long (--url, --token, --socket). Returns 1 when `c` was
 * one, 0 when it is the command's own.
 */
int cli_global_opt(cli_ctx_t *ctx, int c, const char *arg);

/**
 * Prints the one-line message for getopt_long's '?' or ':' result (unknown option, missing value)
 * and returns CLI_EUSAGE.
 */
int cli_bad_option(const cli_ctx_t *ctx, int c, int argc, char **argv);

/** Prints "crewstream: <message>; see crewstream CMD --help" and returns CLI_EUSAGE. */
int cli_usage_error(const cli_ctx_t *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/** Prints "crewstream: <message>" to stderr (one line). */
void cli_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/** Set by SIGINT/SIGTERM: long-running commands stop and return CLI_EINTR. */
extern volatile int cli_interrupted;
/* The command as the user ran it, for the hints the tool prints: argv[0] when it is a relative
 * path ("build/crewstream" under scripts/run, as typed in a shell), else "crewstream" (on PATH
 * once installed; an absolute argv[0] comes from a program, not from the user). */
extern const char *cli_prog;

/* ---- HTTP (http.c) ---- */

/** One HTTP answer. */
typedef struct cli_resp {
    long status;
    char *body; /* NUL-terminated */
    size_t len;
    json_t *json; /* the body parsed, or NULL */
} cli_resp_t;

/** Calls curl_global_init once; returns 0 or -1. */
int cli_http_init(void);

/**
 * Sends METHOD base-URL+PATH with an optional JSON body. On a transport failure prints one line
 * naming the URL and returns CLI_EUNREACH (or CLI_EUSAGE for a malformed URL); otherwise fills
 * `out` (any status) and returns CLI_OK.
 */
int cli_http(const cli_ctx_t *ctx, const char *method, const char *path, const char *body, cli_resp_t *out);

/**
 * Maps a response's status to an exit code; for an error prints one line from the JSON
 * `{"error","detail"}` body, prefixed with `what` ("execution run-42") when given.
 */
int cli_http_status_exit(const cli_ctx_t *ctx, const cli_resp_t *r, const char *what);

/** Frees what the response holds. */
void cli_resp_free(cli_resp_t *r);

/** Returns a new string: ctx->url + path (path begins with '/'). */
char *cli_url(const cli_ctx_t *ctx, const char *path);

/** Returns a new string: `s` percent-escaped for a path segment or query value. */
char *cli_escape(const char *s);

/** Adds the Authorization header (when a token is set) and the fixed headers to a list. */
struct curl_slist *cli_http_headers(const cli_ctx_t *ctx, struct curl_slist *h);

/** Applies the options shared by every request (no proxy for loopback, timeouts off, no signals). */
void cli_http_common(const cli_ctx_t *ctx, void *curl);

/** The one line for a transport error: prints it and returns CLI_EUNREACH or CLI_EUSAGE. */
int cli_http_transport_error(const cli_ctx_t *ctx, int curl_code, const char *errbuf);

/* ---- SSE (sse.c): a pure parser, fed with whatever bytes arrive ---- */

/** Called for each dispatched event; a nonzero return stops the feed and is returned by it. */
typedef int (*cli_sse_cb)(void *arg, const char *id, const char *event, const char *data, size_t len);

typedef struct cli_sse {
    cs_buf_t line; /* the line being assembled, at most max bytes */
    cs_buf_t data; /* the event's data lines, joined with \n, at most max bytes */
    int has_data;
    int skip_lf;       /* the previous byte was CR: a following LF ends nothing */
    char id_buf[512];  /* the last event ID buffer (spec), committed at dispatch */
    char last_id[512]; /* the id of the last dispatched event: what to resume from */
    char event[128];
    long retry_ms; /* the last retry: hint, or -1 */
    size_t max;    /* bound on a line and on an event's data */
    cli_sse_cb cb;
    void *arg;
} cli_sse_t;

/** Initialises a parser whose lines and events are at most `max` bytes. */
void cli_sse_init(cli_sse_t *p, size_t max, cli_sse_cb cb, void *arg);

/**
 * Feeds bytes. Returns 0, the callback's nonzero value, or -1 when a line or an event is larger
 * than the bound. A partial event (no blank line yet) is kept for the next feed and is never
 * dispatched by a connection that ends in the middle of it: call cli_sse_reset_stream() before
 * the next connection.
 */
int cli_sse_feed(cli_sse_t *p, const char *buf, size_t n);

/** Forgets a partial line and event (a new connection starts), keeping last_id. */
void cli_sse_reset_stream(cli_sse_t *p);

/** Frees the buffers. */
void cli_sse_free(cli_sse_t *p);

/* ---- rendering (render.c) ---- */

typedef struct cli_render cli_render_t;

/**
 * A tree renderer on `out`. `color` enables ANSI colours, `verbose` prints stream chunks as text,
 * `multi` names the execution on each line (for streams of every execution).
 */
cli_render_t *cli_render_new(FILE *out, int color, int verbose, int multi);

/** Renders one event. */
void cli_render_event(cli_render_t *r, const json_t *ev);

/** Ends an open stream-chunk line (before blocking, or at the end). */
void cli_render_flush(cli_render_t *r);

/** Prints a free-form note line in the tree ("│  text"), dim. */
void cli_render_note(cli_render_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/** Frees the renderer (after a flush). */
void cli_render_free(cli_render_t *r);

/**
 * Returns nonzero for a type that ends a run, and sets *failed for run.failed/canceled and kin.
 * in_flow: a flow_started was seen, so a crew's end (crew_kickoff_completed/failed) is a step of
 * the flow and only flow_finished/flow_failed end it (as the daemon's status machine has it).
 */
int cli_type_is_end(const char *type, int in_flow, int *failed);

/** Formats milliseconds as "45.2s", "3m 05s" or "1h 02m" into buf. */
void cli_fmt_duration(char *buf, size_t n, double ms);

/** Formats an ISO-8601 UTC timestamp as local "HH:MM:SS" (or copies what it cannot parse). */
void cli_fmt_clock(char *buf, size_t n, const char *iso);

/** Formats an ISO-8601 UTC timestamp as local "YYYY-MM-DD HH:MM:SS". */
void cli_fmt_datetime(char *buf, size_t n, const char *iso);

/** Parses an ISO-8601 UTC timestamp into Unix milliseconds; returns 0 or -1. */
int cli_parse_iso_ms(const char *iso, double *ms);

/** Writes `v` compactly (strings unquoted when `bare`), cut to `max` bytes with "…". */
void cli_fmt_value(char *buf, size_t n, const json_t *v, int bare, size_t max);

/* ANSI colours: cli_c(on, CLI_RED) is the escape, or "" when colour is off. */
const char *cli_c(int on, const char *code);
#define CLI_RESET   "\033[0m"
#define CLI_BOLD    "\033[1m"
#define CLI_DIM     "\033[2m"
#define CLI_RED     "\033[31m"
#define CLI_GREEN   "\033[32m"
#define CLI_YELLOW  "\033[33m"
#define CLI_BLUE    "\033[34m"
#define CLI_MAGENTA "\033[35m"
#define CLI_CYAN    "\033[36m"

/* ---- commands ---- */

int cli_cmd_post(cli_ctx_t *ctx, int argc, char **argv);
int cli_cmd_tail(cli_ctx_t *ctx, int argc, char **argv);
int cli_cmd_respond(cli_ctx_t *ctx, int argc, char **argv);
int cli_cmd_ls(cli_ctx_t *ctx, int argc, char **argv);
int cli_cmd_status(cli_ctx_t *ctx, int argc, char **argv);
int cli_cmd_demo(cli_ctx_t *ctx, int argc, char **argv);

#endif
