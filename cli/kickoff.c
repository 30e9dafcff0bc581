/*
 * kickoff.c - `crewstream kickoff [--crew C] [KEY=VALUE...]`: POST /kickoff (SPEC §9), printing the
 * kickoff id, which is the execution id to tail, answer or poll.
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char usage[] =
    "Usage: crewstream kickoff [--crew CREW] [--json] [KEY=VALUE...]\n"
    "\n"
    "Kick a crew off through the daemon's gateway (POST /kickoff): a runtime that serves the crew\n"
    "(e.g. `crewstream demo --serve`) gets it and runs it. KEY=VALUE pairs are the inputs (GET /inputs\n"
    "lists them), e.g. topic=AI. Prints the kickoff id: the execution id to `tail`, `status` or answer.\n"
    "\n"
    "Options:\n"
    "  --crew CREW   the crew (default: gateway.default_crew, or the only crew served)\n"
    "  --json        print the daemon's answer as JSON\n"
    "  -h, --help    this help\n"
    "  (global: --url, --token; see crewstream --help)\n"
    "\n"
    "Exit codes: 0 started; 1 refused (e.g. 503: nobody serves the crew and the queue is full);\n"
    "2 usage; 3 the daemon cannot be reached.\n";

int cli_cmd_kickoff(cli_ctx_t *ctx, int argc, char **argv)
{
    enum { O_CREW = 1, O_JSON };
    static const struct option longopts[] = {
        CLI_GLOBAL_LONGOPTS,
        {"crew", required_argument, NULL, O_CREW},
        {"json", no_argument, NULL, O_JSON},
        {0},
    };
    const char *crew = NULL;
    int c, json_out = 0, rc;
    cli_resp_t r = {0};
    char *body = NULL;
    json_t *in = json_object(), *o;

    if (in == NULL)
        return CLI_EFAIL;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        if (cli_global_opt(ctx, c, optarg))
            continue;
        switch (c) {
        case 'h':
            fputs(usage, stdout);
            json_decref(in);
            return CLI_OK;
        case O_CREW:
            crew = optarg;
            break;
        case O_JSON:
            json_out = 1;
            break;
        default:
            json_decref(in);
            return cli_bad_option(ctx, c, argc, argv);
        }
    }
    for (int i = optind; i < argc; i++) {
        const char *eq = strchr(argv[i], '=');
        if (eq == NULL || eq == argv[i]) {
            json_decref(in);
            return cli_usage_error(ctx, "'%s': expected KEY=VALUE (an input of the crew)", argv[i]);
        }
        char *key = strndup(argv[i], (size_t)(eq - argv[i]));
        json_t *v = json_string(eq + 1);
        if (key == NULL || v == NULL || json_object_set_new(in, key, v) != 0) {
            free(key);
            json_decref(in);
            return cli_usage_error(ctx, "'%s': not valid UTF-8", argv[i]);
        }
        free(key);
    }
    o = crew != NULL ? json_pack("{s:o, s:s}", "inputs", in, "crew", crew) : json_pack("{s:o}", "inputs", in);
    body = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (body == NULL)
        return cli_usage_error(ctx, "--crew: not valid UTF-8");
    if ((rc = cli_http(ctx, "POST", "/kickoff", body, &r)) != CLI_OK)
        goto Exit;
    if ((rc = cli_http_status_exit(ctx, &r, "kickoff")) != CLI_OK)
        goto Exit;
    if (json_out) {
        printf("%s\n", r.body);
    } else {
        const char *id = json_string_value(json_object_get(r.json, "kickoff_id"));
        printf("%s\n", id != NULL ? id : "?");
    }
Exit:
    free(body);
    cli_resp_free(&r);
    return rc;
}
