/*
 * main.c - crewstream, the command-line tool: global options, the command table, help and
 * exit codes. Each command lives in its own file and parses its own options with the global
 * ones mixed in, so `--url` works before or after the command name.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "cli.h"

#ifndef CS_VERSION
#define CS_VERSION "0"
#endif

volatile int cli_interrupted;

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

static const struct {
    const char *name;
    int (*fn)(cli_ctx_t *, int, char **);
} commands[] = {
    {"post", cli_cmd_post}, {"tail", cli_cmd_tail},     {"respond", cli_cmd_respond},
    {"ls", cli_cmd_ls},     {"status", cli_cmd_status}, {"demo", cli_cmd_demo},
};

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

int main(int argc, char **argv)
{
    static const struct option longopts[] = {CLI_GLOBAL_LONGOPTS, {"version", no_argument, NULL, 'V'}, {0}};
    cli_ctx_t ctx = {.url = "http://127.0.0.1:8000"};
    const char *env;
    int c, rc;

    if ((env = getenv("CREWSTREAM_URL")) != NULL && env[0] != '\0' && set_url(&ctx, env) != 0)
        return CLI_EUSAGE;
    if ((env = getenv("CREWSTREAM_TOKEN")) != NULL && env[0] != '\0')
        ctx.token = env;
    if ((env = getenv("CREWSTREAM_SOCKET")) != NULL && env[0] != '\0') {
        ctx.socket = env;
    } else {
        const char *dir = getenv("XDG_RUNTIME_DIR");
        if (dir != NULL && dir[0] != '\0')
            snprintf(socket_buf, sizeof(socket_buf), "%s/crewstream.sock", dir);
        else
            snprintf(socket_buf, sizeof(socket_buf), "/tmp/crewstream.sock");
        ctx.socket = socket_buf;
    }
    ctx.color_out = wants_color(STDOUT_FILENO);
    ctx.color_err = wants_color(STDERR_FILENO);

    /* Global options up to the command name ('+': stop at the first non-option). */
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+:hV", longopts, NULL)) != -1) {
        if (cli_global_opt(&ctx, c, optarg))
            continue;
        switch (c) {
        case 'h':
            fputs(main_usage, stdout);
            return CLI_OK;
        case 'V':
            printf("crewstream %s\n", CS_VERSION);
            return CLI_OK;
        default:
            return cli_bad_option(&ctx, c, argc, argv);
        }
    }
    if (optind >= argc) {
        fputs(main_usage, stderr);
        return CLI_EUSAGE;
    }

    const char *name = argv[optind];
    char *help_argv[3];
    int sub_argc = argc - optind;
    char **sub_argv = argv + optind;
    if (strcmp(name, "help") == 0) {
        if (optind + 1 >= argc) {
            fputs(main_usage, stdout);
            return CLI_OK;
        }
        /* `crewstream help tail` is `crewstream tail --help`. */
        help_argv[0] = argv[optind + 1];
        help_argv[1] = "--help";
        help_argv[2] = NULL;
        name = help_argv[0];
        sub_argc = 2;
        sub_argv = help_argv;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(name, commands[i].name) != 0)
            continue;
        ctx.cmd = commands[i].name;
        if (cli_http_init() != 0) {
            cli_err("cannot initialise libcurl");
            return CLI_EFAIL;
        }
        optind = 0; /* glibc: full re-initialisation for the command's own parse */
        rc = commands[i].fn(&ctx, sub_argc, sub_argv);
        fflush(stdout);
        curl_global_cleanup();
        return rc;
    }
    cli_err("unknown command '%s'; see crewstream --help", name);
    return CLI_EUSAGE;
}
