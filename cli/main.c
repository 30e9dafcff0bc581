/*
 * main.c - crewstream, the command-line tool: the command table and its dispatch. What every
 * command shares (errors, global options, help, exit codes) is in common.c. Each command lives in
 * its own file and parses its own options with the global ones mixed in, so `--url` works before
 * or after the command name.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "cli.h"

#ifndef CS_VERSION
#define CS_VERSION "0"
#endif

static const struct {
    const char *name;
    int (*fn)(cli_ctx_t *, int, char **);
} commands[] = {
    {"post", cli_cmd_post}, {"tail", cli_cmd_tail},     {"respond", cli_cmd_respond},
    {"ls", cli_cmd_ls},     {"status", cli_cmd_status}, {"demo", cli_cmd_demo},
};

int main(int argc, char **argv)
{
    static const struct option longopts[] = {CLI_GLOBAL_LONGOPTS, {"version", no_argument, NULL, 'V'}, {0}};
    cli_ctx_t ctx;
    int c, rc;

    if ((rc = cli_ctx_init(&ctx)) != CLI_OK)
        return rc;
    if (argc > 0 && argv[0] != NULL && argv[0][0] != '/' && strchr(argv[0], '/') != NULL)
        cli_prog = argv[0];

    /* Global options up to the command name ('+': stop at the first non-option). */
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+:hV", longopts, NULL)) != -1) {
        if (cli_global_opt(&ctx, c, optarg))
            continue;
        switch (c) {
        case 'h':
            cli_usage(stdout);
            return CLI_OK;
        case 'V':
            printf("crewstream %s\n", CS_VERSION);
            return CLI_OK;
        default:
            return cli_bad_option(&ctx, c, argc, argv);
        }
    }
    if (optind >= argc) {
        cli_usage(stderr);
        return CLI_EUSAGE;
    }

    const char *name = argv[optind];
    char *help_argv[3];
    int sub_argc = argc - optind;
    char **sub_argv = argv + optind;
    if (strcmp(name, "help") == 0) {
        if (optind + 1 >= argc) {
            cli_usage(stdout);
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
