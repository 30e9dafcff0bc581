/*
 * common.c - what every command of the crewstream tool shares: the one-line errors and usage
 * errors, the global options (--url, --token, --socket and their environment variables, the
 * socket's default taken from libcrewstream), colour detection, the top-level help and the
 * interrupt flag. Commands and main.c call into this file; it calls none of them.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "crewstream/client.h"

volatile int cli_interrupted;
const char *cli_prog = "crewstream";

static char url_buf[2048];
static char socket_buf[4096];

static const char main_usage[] =
    "Usage: crewstream [--url URL] [--token T] [--socket PATH] COMMAND [ARGS]\n"
    "\n"
    "The command-line tool of crewstreamd: post events, follow them live, answer human-input\n"
    "requests, list executions, and play a demo run.\n"
    "\n"
    "Commands:\n"
    "  post      post events over the Unix socket (flags, or NDJSON on stdin)\n"
    "  tail      follow one execution (or --all) as a live tree, or as raw JSON lines\n"
    "  respond   answer a pending human-input request (--approve / --reject)\n"
    "  ls        list executions with their status\n"
    "  status    show one execution's status, progress and open requests\n"
    "  demo      play a realistic crew run that waits for a human answer\n"
    "\n"
    "Global options (before or after the command):\n"
    "  --url URL       the daemon's HTTP address (env CREWSTREAM_URL;\n"
    "                  default http://127.0.0.1:8000)\n"
    "  --token T       bearer token, sent as Authorization: Bearer (env CREWSTREAM_TOKEN)\n"
    "  --socket PATH   the ingest Unix socket (env CREWSTREAM_SOCKET; default\n"
    "                  $XDG_RUNTIME_DIR/crewstream.sock, else /tmp/crewstream.sock)\n"
    "  -h, --help      this help; `crewstream COMMAND --help` for a command's\n"
    "  --version       print the version\n"
    "\n"
    "Colour is used only when stdout is a terminal and NO_COLOR is not set.\n"
    "\n"
    "Exit codes:\n"
    "  0    success\n"
    "  1    the daemon refused or failed (an HTTP error not listed below, a refused event)\n"
    "  2    usage error (a bad option or argument)\n"
    "  3    cannot reach the daemon (connection refused, no such socket, bad host)\n"
    "  4    not found (HTTP 404: no such execution or request)\n"
    "  5    conflict (HTTP 409: nothing open to answer, or already answered)\n"
    "  6    not allowed (HTTP 401/403: missing, invalid or insufficient token)\n"
    "  7    tail --exit-on-end: the run ended failed or canceled\n"
    "  130  interrupted\n"
    "\n"
    "Start here: run `crewstreamd`, then `crewstream demo` in one terminal and\n"
    "`crewstream tail --all` in another.\n";

void cli_usage(FILE *out)
{
    fputs(main_usage, out);
}

void cli_err(const char *fmt, ...)
{
    va_list ap;
    fputs("crewstream: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int cli_usage_error(const cli_ctx_t *ctx, const char *fmt, ...)
{
    va_list ap;
    fputs("crewstream: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "; see crewstream %s%s--help\n", ctx->cmd ? ctx->cmd : "", ctx->cmd ? " " : "");
    return CLI_EUSAGE;
}

int cli_bad_option(const cli_ctx_t *ctx, int c, int argc, char **argv)
{
    /* With opterr off and a leading ':' getopt_long returns ':' for a missing value and '?' for
     * an unknown option. The option just looked at is argv[optind - 1]; optopt holds a short
     * option's letter (0 for an unknown long one). */
    const char *arg = optind > 0 && optind <= argc ? argv[optind - 1] : "";
    char name[64];
    if (strncmp(arg, "--", 2) == 0) {
        size_t n = strcspn(arg, "=");
        snprintf(name, sizeof(name), "%.*s", (int)(n < 60 ? n : 60), arg);
    } else if (optopt > 0 && optopt < 256) {
        snprintf(name, sizeof(name), "-%c", optopt);
    } else {
        snprintf(name, sizeof(name), "%.60s", arg);
    }
    if (c == ':')
        return cli_usage_error(ctx, "option '%s' needs a value", name);
    return cli_usage_error(ctx, "unknown option '%s'", name);
}

static int set_url(cli_ctx_t *ctx, const char *url)
{
    size_t n = strlen(url);
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
        return cli_usage_error(ctx, "--url '%s': expected http://HOST:PORT", url);
    if (n >= sizeof(url_buf))
        return cli_usage_error(ctx, "--url: too long");
    memcpy(url_buf, url, n + 1);
    while (n > 0 && url_buf[n - 1] == '/')
        url_buf[--n] = '\0';
    ctx->url = url_buf;
    return 0;
}

int cli_global_opt(cli_ctx_t *ctx, int c, const char *arg)
{
    switch (c) {
    case CLI_OPT_URL:
        if (set_url(ctx, arg) != 0)
            exit(CLI_EUSAGE);
        return 1;
    case CLI_OPT_TOKEN:
        ctx->token = arg[0] ? arg : NULL;
        return 1;
    case CLI_OPT_SOCKET:
        ctx->socket = arg;
        return 1;
    default:
        return 0;
    }
}

const char *cli_socket_name(const cli_ctx_t *ctx)
{
    return ctx->socket != NULL ? ctx->socket : "$XDG_RUNTIME_DIR/crewstream.sock";
}

static int wants_color(int fd)
{
    const char *nc = getenv("NO_COLOR");
    const char *term = getenv("TERM");
    if (nc != NULL && nc[0] != '\0')
        return 0;
    if (term != NULL && strcmp(term, "dumb") == 0)
        return 0;
    return isatty(fd);
}

int cli_ctx_init(cli_ctx_t *ctx)
{
    const char *env;

    memset(ctx, 0, sizeof(*ctx));
    ctx->url = "http://127.0.0.1:8000";
    if ((env = getenv("CREWSTREAM_URL")) != NULL && env[0] != '\0' && set_url(ctx, env) != 0)
        return CLI_EUSAGE;
    if ((env = getenv("CREWSTREAM_TOKEN")) != NULL && env[0] != '\0')
        ctx->token = env;
    /* CREWSTREAM_SOCKET is taken as given (a path too long for a socket is reported when a
     * command connects); otherwise the library's default, the one a runtime finds too. */
    if ((env = getenv("CREWSTREAM_SOCKET")) != NULL && env[0] != '\0')
        ctx->socket = env;
    else if (crewstream_default_socket_path(socket_buf, sizeof(socket_buf)) >= 0)
        ctx->socket = socket_buf;
    else
        ctx->socket = NULL; /* $XDG_RUNTIME_DIR too long: the library's default fails when used */
    ctx->color_out = wants_color(STDOUT_FILENO);
    ctx->color_err = wants_color(STDERR_FILENO);
    return CLI_OK;
}
