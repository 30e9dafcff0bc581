/*
 * respond.c - `crewstream respond`: answer a pending human-input request through
 * POST /v1/executions/{id}/human-input. Without --task/--event it answers the execution's only
 * open request (from GET /v1/executions/{id}); on a terminal it shows the prompt and asks for the
 * feedback (and for approve/reject) when the command line does not give them.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cli.h"

static const char usage[] =
    "Usage: crewstream respond EXECUTION [--task T | --event E] [--approve | --reject]\n"
    "                          [--feedback TEXT] [--json]\n"
    "\n"
    "Answer a pending human-input request: the daemon stores a human_input_completed event and\n"
    "pushes the answer to the waiting runtime. Without --task or --event, the execution's only\n"
    "open request is answered. On a terminal, a missing --feedback (and a missing --approve /\n"
    "--reject) is asked for after showing the request's prompt; when stdin is not a terminal,\n"
    "--approve or --reject is required and the feedback defaults to empty.\n"
    "\n"
    "Options:\n"
    "  --task T           answer the open request of task T\n"
    "  --event E          answer the request whose event_id is E\n"
    "  -y, --approve      approve\n"
    "  -n, --reject       reject\n"
    "  -m, --feedback TEXT the human's feedback (default: asked on a terminal, else empty)\n"
    "  --json             print the daemon's answer as JSON\n"
    "  -h, --help         this help\n"
    "  (global: --url, --token, --socket; see crewstream --help)\n"
    "\n"
    "Prints the id of the new human_input_completed event.\n"
    "Exit codes: 0 answered; 1 refused; 2 usage (also: several open requests and none chosen);\n"
    "3 daemon unreachable; 4 no such execution or request; 5 nothing open, or already answered;\n"
    "6 token missing, invalid or without the respond scope.\n";

/* Reads one line from stdin (without its newline); NULL at end of input. */
static char *read_line(void)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, stdin);
    if (n < 0) {
        free(line);
        return NULL;
    }
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    return line;
}

static void show_request(const cli_ctx_t *ctx, const char *exec, const json_t *req)
{
    char v[2048];
    const int C = ctx->color_err;
    const json_t *task = json_object_get(req, "task_id");
    cli_fmt_value(v, sizeof(v), task, 1, 200);
    fprintf(stderr, "%sHuman input requested%s for execution %s%s%s%s:\n", cli_c(C, CLI_YELLOW CLI_BOLD),
            cli_c(C, CLI_RESET), exec, v[0] ? " (task " : "", v, v[0] ? ")" : "");
    cli_fmt_value(v, sizeof(v), json_object_get(req, "prompt"), 1, 2000);
    fprintf(stderr, "  %s%s%s\n", cli_c(C, CLI_BOLD), v[0] ? v : "(no prompt)", cli_c(C, CLI_RESET));
    const json_t *c = json_object_get(req, "context");
    if (c != NULL && !json_is_null(c)) {
        cli_fmt_value(v, sizeof(v), c, 1, 2000);
        fprintf(stderr, "  %scontext:%s %s\n", cli_c(C, CLI_DIM), cli_c(C, CLI_RESET), v);
    }
}

/* Finds the open request for --task/--event in a status object's pending_human_input. */
static const json_t *find_request(const json_t *pending, const char *task, const char *event)
{
    size_t i;
    const json_t *req;
    json_array_foreach(pending, i, req)
    {
        const char *eid = json_string_value(json_object_get(req, "event_id"));
        const json_t *tid = json_object_get(req, "task_id");
        char tbuf[256];
        cli_fmt_value(tbuf, sizeof(tbuf), tid, 1, 250);
        if (event != NULL && eid != NULL && strcmp(eid, event) == 0)
            return req;
        if (task != NULL && tid != NULL && strcmp(tbuf, task) == 0)
            return req;
    }
    return NULL;
}

int cli_cmd_respond(cli_ctx_t *ctx, int argc, char **argv)
{
    enum { O_TASK = 1, O_EVENT, O_JSON };
    static const struct option longopts[] = {
        CLI_GLOBAL_LONGOPTS,
        {"task", required_argument, NULL, O_TASK},
        {"event", required_argument, NULL, O_EVENT},
        {"approve", no_argument, NULL, 'y'},
        {"reject", no_argument, NULL, 'n'},
        {"feedback", required_argument, NULL, 'm'},
        {"json", no_argument, NULL, O_JSON},
        {0},
    };
    const char *exec, *task = NULL, *event = NULL, *feedback = NULL;
    int c, approve = -1, json_out = 0, rc;
    int interactive = isatty(STDIN_FILENO);
    char *typed = NULL, *path = NULL, *esc = NULL, *body = NULL;
    cli_resp_t st = {0}, r = {0};
    const json_t *req = NULL;

    opterr = 0;
    while ((c = getopt_long(argc, argv, ":hynm:", longopts, NULL)) != -1) {
        if (cli_global_opt(ctx, c, optarg))
            continue;
        switch (c) {
        case 'h':
            fputs(usage, stdout);
            return CLI_OK;
        case O_TASK:
            task = optarg;
            break;
        case O_EVENT:
            event = optarg;
            break;
        case 'y':
        case 'n':
            if (approve != -1 && approve != (c == 'y'))
                return cli_usage_error(ctx, "--approve and --reject exclude each other");
            approve = c == 'y';
            break;
        case 'm':
            feedback = optarg;
            break;
        case O_JSON:
            json_out = 1;
            break;
        default:
            return cli_bad_option(ctx, c, argc, argv);
        }
    }
    if (optind >= argc)
        return cli_usage_error(ctx, "which execution? crewstream respond EXECUTION --approve");
    exec = argv[optind++];
    if (optind < argc)
        return cli_usage_error(ctx, "unexpected argument '%s'", argv[optind]);
    if (task != NULL && event != NULL)
        return cli_usage_error(ctx, "give --task or --event, not both");
    if (approve == -1 && !interactive)
        return cli_usage_error(ctx,
                               "say --approve or --reject (stdin is not a terminal, so nothing is asked)");

    esc = cli_escape(exec);
    path = malloc(strlen(esc ? esc : "") + 64);
    if (esc == NULL || path == NULL) {
        rc = CLI_EFAIL;
        goto Exit;
    }

    /* The open requests: needed to pick the only one, or to show the prompt before asking. */
    int need_auto = task == NULL && event == NULL;
    int will_ask = interactive && (feedback == NULL || approve == -1);
    if (need_auto || will_ask) {
        sprintf(path, "/v1/executions/%s", esc);
        if ((rc = cli_http(ctx, "GET", path, NULL, &st)) != CLI_OK)
            goto Exit;
        if ((rc = cli_http_status_exit(ctx, &st, NULL)) != CLI_OK)
            goto Exit;
        const json_t *pending = json_object_get(st.json, "pending_human_input");
        size_t n = json_array_size(pending);
        const char *state = json_string_value(json_object_get(st.json, "status"));
        if (n == 0 && state != NULL && strcmp(state, "pending") == 0) {
            /* Nothing has been posted to it: the answer routes would say 404, and so do we. */
            cli_err("not found: no execution \"%s\"", exec);
            rc = CLI_ENOTFOUND;
            goto Exit;
        }
        if (need_auto) {
            if (n == 0) {
                cli_err("execution %s has no open human-input request", exec);
                rc = CLI_ECONFLICT;
                goto Exit;
            }
            if (n > 1) {
                fprintf(stderr, "crewstream: execution %s has %zu open human-input requests; choose one:\n",
                        exec, n);
                size_t i;
                const json_t *q;
                json_array_foreach(pending, i, q)
                {
                    char tv[200], pv[200];
                    cli_fmt_value(tv, sizeof(tv), json_object_get(q, "task_id"), 1, 100);
                    cli_fmt_value(pv, sizeof(pv), json_object_get(q, "prompt"), 1, 100);
                    fprintf(stderr, "  crewstream respond %s --event %s    # task %s: %s\n", exec,
                            json_string_value(json_object_get(q, "event_id")), tv[0] ? tv : "-", pv);
                }
                rc = CLI_EUSAGE;
                goto Exit;
            }
            req = json_array_get(pending, 0);
            event = json_string_value(json_object_get(req, "event_id"));
        } else {
            req = find_request(pending, task, event);
        }
    }

    if (will_ask) {
        if (req != NULL)
            show_request(ctx, exec, req);
        if (feedback == NULL) {
            fprintf(stderr, "Feedback (Enter for none): ");
            fflush(stderr);
            typed = read_line();
            if (typed == NULL) {
                fputc('\n', stderr);
                rc = cli_usage_error(ctx, "no answer given");
                goto Exit;
            }
            feedback = typed;
        }
        while (approve == -1) {
            fprintf(stderr, "Approve? [y/n]: ");
            fflush(stderr);
            char *yn = read_line();
            if (yn == NULL) {
                fputc('\n', stderr);
                rc = cli_usage_error(ctx, "no answer given");
                goto Exit;
            }
            if (strcasecmp(yn, "y") == 0 || strcasecmp(yn, "yes") == 0)
                approve = 1;
            else if (strcasecmp(yn, "n") == 0 || strcasecmp(yn, "no") == 0)
                approve = 0;
            free(yn);
        }
    }

    json_t *o =
        json_pack("{s:s, s:s, s:b}", event != NULL ? "event_id" : "task_id", event != NULL ? event : task,
                  "human_feedback", feedback != NULL ? feedback : "", "is_approve", approve);
    body = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (body == NULL) {
        cli_err("the feedback is not valid UTF-8");
        rc = CLI_EUSAGE;
        goto Exit;
    }
    sprintf(path, "/v1/executions/%s/human-input", esc);
    if ((rc = cli_http(ctx, "POST", path, body, &r)) != CLI_OK)
        goto Exit;
    if ((rc = cli_http_status_exit(ctx, &r, NULL)) != CLI_OK)
        goto Exit;
    if (json_out) {
        printf("%s\n", r.body);
    } else {
        const char *eid = json_string_value(json_object_get(r.json, "event_id"));
        json_int_t seq = json_integer_value(json_object_get(r.json, "seq"));
        printf("%s%s%s %s: event %s (seq %lld)\n", cli_c(ctx->color_out, approve ? CLI_GREEN : CLI_RED),
               approve ? "approved" : "rejected", cli_c(ctx->color_out, CLI_RESET), exec, eid ? eid : "?",
               (long long)seq);
    }

Exit:
    free(typed);
    free(body);
    free(path);
    free(esc);
    cli_resp_free(&st);
    cli_resp_free(&r);
    return rc;
}
