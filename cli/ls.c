/*
 * ls.c - `crewstream ls` (GET /v1/executions: a table, newest first) and `crewstream status`
 * (GET /v1/executions/{id}: a summary with progress, result, error and the open requests).
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char ls_usage[] =
    "Usage: crewstream ls [--status S] [--limit N] [--json]\n"
    "\n"
    "List the executions the daemon holds, newest first, with their status and progress.\n"
    "\n"
    "Options:\n"
    "  --status S   only executions in status S: pending, running, pending_human_input,\n"
    "               completed, error, canceled\n"
    "  --limit N    at most N executions (1-1000; default 100)\n"
    "  --json       print the daemon's JSON answer\n"
    "  -h, --help   this help\n"
    "  (global: --url, --token, --socket; see crewstream --help)\n"
    "\n"
    "Exit codes: 0 listed; 1 refused; 2 usage; 3 daemon unreachable; 6 token refused.\n";

static const char status_usage[] =
    "Usage: crewstream status EXECUTION [--json]\n"
    "\n"
    "Show one execution: its status (pending, running, pending_human_input, completed, error,\n"
    "canceled), event counts and times, progress of tasks, agents and tools, the result or the\n"
    "error, and the open human-input requests with the command that answers each.\n"
    "\n"
    "Options:\n"
    "  --json       print the daemon's JSON answer\n"
    "  -h, --help   this help\n"
    "  (global: --url, --token, --socket; see crewstream --help)\n"
    "\n"
    "Exit codes: 0 shown; 1 refused; 2 usage; 3 daemon unreachable; 4 no such execution;\n"
    "6 token refused.\n";

static const char *const states[] = {"pending",   "running", "pending_human_input",
                                     "completed", "error",   "canceled"};

static const char *status_color(const char *s)
{
    if (s == NULL)
        return "";
    if (strcmp(s, "completed") == 0)
        return CLI_GREEN;
    if (strcmp(s, "error") == 0)
        return CLI_RED;
    if (strcmp(s, "pending_human_input") == 0)
        return CLI_YELLOW;
    if (strcmp(s, "running") == 0)
        return CLI_CYAN;
    return CLI_DIM;
}

static long long num(const json_t *o, const char *a, const char *b)
{
    const json_t *v = json_object_get(o, a);
    if (b != NULL)
        v = json_object_get(v, b);
    return (long long)json_integer_value(v);
}

/* "1/2" done of seen, then `word` (" done" or ""), with the failures when there are some. */
static void fmt_progress(char *buf, size_t n, const json_t *prog, const char *what, const char *word)
{
    const json_t *p = json_object_get(prog, what);
    long long seen = num(p, "seen", NULL), done = num(p, "done", NULL), failed = num(p, "failed", NULL);
    if (failed > 0)
        snprintf(buf, n, "%lld/%lld%s (%lld failed)", done, seen, word, failed);
    else
        snprintf(buf, n, "%lld/%lld%s", done, seen, word);
}

static int parse_common(cli_ctx_t *ctx, int argc, char **argv, const char *usage, int *json_out,
                        const char **st, long *limit, int with_filters)
{
    enum { O_STATUS = 1, O_LIMIT, O_JSON };
    static const struct option longopts[] = {
        CLI_GLOBAL_LONGOPTS,
        {"status", required_argument, NULL, O_STATUS},
        {"limit", required_argument, NULL, O_LIMIT},
        {"json", no_argument, NULL, O_JSON},
        {0},
    };
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        if (cli_global_opt(ctx, c, optarg))
            continue;
        switch (c) {
        case 'h':
            fputs(usage, stdout);
            return -1;
        case O_JSON:
            *json_out = 1;
            break;
        case O_STATUS:
        case O_LIMIT:
            if (!with_filters) {
                optopt = 0;
                return cli_bad_option(ctx, '?', argc, argv);
            }
            if (c == O_STATUS) {
                size_t i;
                for (i = 0; i < sizeof(states) / sizeof(states[0]) && strcmp(optarg, states[i]) != 0; i++)
                    ;
                if (i == sizeof(states) / sizeof(states[0]))
                    return cli_usage_error(ctx,
                                           "--status '%s': one of pending, running, pending_human_input, "
                                           "completed, error, canceled",
                                           optarg);
                *st = optarg;
            } else {
                char *end;
                *limit = strtol(optarg, &end, 10);
                if (*end != '\0' || end == optarg || *limit < 1 || *limit > 1000)
                    return cli_usage_error(ctx, "--limit '%s': expected a number from 1 to 1000", optarg);
            }
            break;
        default:
            return cli_bad_option(ctx, c, argc, argv);
        }
    }
    return 0;
}

int cli_cmd_ls(cli_ctx_t *ctx, int argc, char **argv)
{
    const char *st = NULL;
    long limit = 0;
    int json_out = 0, rc;
    char path[128];
    cli_resp_t r = {0};

    if ((rc = parse_common(ctx, argc, argv, ls_usage, &json_out, &st, &limit, 1)) != 0)
        return rc < 0 ? CLI_OK : rc;
    if (optind < argc)
        return cli_usage_error(ctx, "unexpected argument '%s'", argv[optind]);
    int k = snprintf(path, sizeof(path), "/v1/executions");
    if (st != NULL)
        k += snprintf(path + k, sizeof(path) - k, "?status=%s", st);
    if (limit > 0)
        snprintf(path + k, sizeof(path) - k, "%climit=%ld", st != NULL ? '&' : '?', limit);
    if ((rc = cli_http(ctx, "GET", path, NULL, &r)) != CLI_OK)
        return rc;
    if ((rc = cli_http_status_exit(ctx, &r, NULL)) != CLI_OK)
        goto Exit;
    if (json_out) {
        printf("%s\n", r.body);
        goto Exit;
    }
    const json_t *list = json_object_get(r.json, "executions");
    if (!json_is_array(list)) {
        cli_err("%s did not answer with a list of executions; is --url a crewstreamd?", ctx->url);
        rc = CLI_EFAIL;
        goto Exit;
    }
    if (json_array_size(list) == 0) {
        printf("No executions%s%s.\n", st ? " with status " : "", st ? st : "");
        goto Exit;
    }
    /* Column widths from the rows: ids, and progress that grows a "(1 failed)". */
    size_t i, w = strlen("EXECUTION"), tw = strlen("TASKS"), aw = strlen("AGENTS");
    const json_t *e;
    char tasks[64], agents[64];
    json_array_foreach(list, i, e)
    {
        const char *id = json_string_value(json_object_get(e, "execution_id"));
        const json_t *prog = json_object_get(e, "progress");
        if (id != NULL && strlen(id) > w)
            w = strlen(id);
        fmt_progress(tasks, sizeof(tasks), prog, "tasks", "");
        fmt_progress(agents, sizeof(agents), prog, "agents", "");
        tw = strlen(tasks) > tw ? strlen(tasks) : tw;
        aw = strlen(agents) > aw ? strlen(agents) : aw;
    }
    const int C = ctx->color_out;
    printf("%s%-*s  %-19s  %6s  %-19s  %-*s  %-*s  %5s  %s%s\n", cli_c(C, CLI_BOLD), (int)w, "EXECUTION",
           "STATUS", "EVENTS", "LAST EVENT", (int)tw, "TASKS", (int)aw, "AGENTS", "TOOLS", "WAITING",
           cli_c(C, CLI_RESET));
    json_array_foreach(list, i, e)
    {
        const char *id = json_string_value(json_object_get(e, "execution_id"));
        const char *s = json_string_value(json_object_get(e, "status"));
        const json_t *prog = json_object_get(e, "progress");
        char last[32];
        cli_fmt_datetime(last, sizeof(last), json_string_value(json_object_get(e, "last_event_at")));
        if (json_object_get(e, "last_event_at") == NULL || json_is_null(json_object_get(e, "last_event_at")))
            snprintf(last, sizeof(last), "-");
        fmt_progress(tasks, sizeof(tasks), prog, "tasks", "");
        fmt_progress(agents, sizeof(agents), prog, "agents", "");
        printf("%-*s  %s%-19s%s  %6lld  %-19s  %-*s  %-*s  %5lld  %zu\n", (int)w, id ? id : "?",
               cli_c(C, status_color(s)), s ? s : "?", cli_c(C, CLI_RESET), num(e, "events", NULL), last,
               (int)tw, tasks, (int)aw, agents, num(prog, "tools", "calls"),
               json_array_size(json_object_get(e, "pending_human_input")));
    }

Exit:
    cli_resp_free(&r);
    return rc;
}

int cli_cmd_status(cli_ctx_t *ctx, int argc, char **argv)
{
    int json_out = 0, rc;
    const char *exec;
    char *esc = NULL, *path = NULL;
    cli_resp_t r = {0};

    if ((rc = parse_common(ctx, argc, argv, status_usage, &json_out, NULL, NULL, 0)) != 0)
        return rc < 0 ? CLI_OK : rc;
    if (optind >= argc)
        return cli_usage_error(ctx, "which execution? crewstream status EXECUTION");
    exec = argv[optind++];
    if (optind < argc)
        return cli_usage_error(ctx, "unexpected argument '%s'", argv[optind]);
    esc = cli_escape(exec);
    path = malloc(strlen(esc ? esc : "") + 32);
    if (esc == NULL || path == NULL) {
        rc = CLI_EFAIL;
        goto Exit;
    }
    sprintf(path, "/v1/executions/%s", esc);
    if ((rc = cli_http(ctx, "GET", path, NULL, &r)) != CLI_OK)
        goto Exit;
    if ((rc = cli_http_status_exit(ctx, &r, NULL)) != CLI_OK)
        goto Exit;
    if (json_out) {
        printf("%s\n", r.body);
        goto Exit;
    }

    const json_t *o = r.json;
    const json_t *prog = json_object_get(o, "progress");
    const char *s = json_string_value(json_object_get(o, "status"));
    const int C = ctx->color_out;
    char a[64], b[64], v[600];
    if (s == NULL) {
        cli_err("%s did not answer with a status object; is --url a crewstreamd?", ctx->url);
        rc = CLI_EFAIL;
        goto Exit;
    }
    printf("%sExecution%s   %s\n", cli_c(C, CLI_BOLD), cli_c(C, CLI_RESET), exec);
    printf("%sStatus%s      %s%s%s\n", cli_c(C, CLI_BOLD), cli_c(C, CLI_RESET), cli_c(C, status_color(s)), s,
           cli_c(C, CLI_RESET));
    printf("%sEvents%s      %lld (last seq %lld)\n", cli_c(C, CLI_BOLD), cli_c(C, CLI_RESET),
           num(o, "events", NULL), num(o, "last_seq", NULL));
    const char *first = json_string_value(json_object_get(o, "first_event_at"));
    const char *last = json_string_value(json_object_get(o, "last_event_at"));
    if (first != NULL) {
        double t0, t1;
        cli_fmt_datetime(a, sizeof(a), first);
        printf("%sStarted%s     %s\n", cli_c(C, CLI_BOLD), cli_c(C, CLI_RESET), a);
        if (last != NULL) {
            cli_fmt_datetime(a, sizeof(a), last);
            b[0] = '\0';
            if (cli_parse_iso_ms(first, &t0) == 0 && cli_parse_iso_ms(last, &t1) == 0)
                cli_fmt_duration(b, sizeof(b), t1 - t0);
            printf("%sLast event%s  %s%s%s%s\n", cli_c(C, CLI_BOLD), cli_c(C, CLI_RESET), a, b[0] ? " (" : "",
                   b, b[0] ? " after the first)" : "");
        }
    }
    fmt_progress(a, sizeof(a), prog, "tasks", " done");
    fmt_progress(b, sizeof(b), prog, "agents", " done");
    printf("%sProgress%s    tasks %s, agents %s, tools %lld call%s%s", cli_c(C, CLI_BOLD),
           cli_c(C, CLI_RESET), a, b, num(prog, "tools", "calls"),
           num(prog, "tools", "calls") == 1 ? "" : "s", num(prog, "tools", "errors") > 0 ? "" : "\n");
    if (num(prog, "tools", "errors") > 0)
        printf(" (%lld failed)\n", num(prog, "tools", "errors"));
    const json_t *res = json_object_get(o, "result");
    if (res != NULL && !json_is_null(res)) {
        cli_fmt_value(v, sizeof(v), res, 1, 500);
        printf("%sResult%s      %s\n", cli_c(C, CLI_BOLD), cli_c(C, CLI_RESET), v);
    }
    const char *em = json_string_value(json_object_get(o, "error_message"));
    if (em != NULL) {
        snprintf(v, sizeof(v), "%s", em);
        printf("%sError%s       %s%s%s\n", cli_c(C, CLI_BOLD), cli_c(C, CLI_RESET), cli_c(C, CLI_RED), v,
               cli_c(C, CLI_RESET));
    }
    const json_t *pending = json_object_get(o, "pending_human_input");
    if (json_array_size(pending) > 0) {
        size_t i;
        const json_t *q;
        printf("%sWaiting for human input:%s\n", cli_c(C, CLI_YELLOW CLI_BOLD), cli_c(C, CLI_RESET));
        json_array_foreach(pending, i, q)
        {
            const json_t *tid = json_object_get(q, "task_id");
            const char *eid = json_string_value(json_object_get(q, "event_id"));
            char tv[160];
            cli_fmt_value(v, sizeof(v), json_object_get(q, "prompt"), 1, 300);
            cli_fmt_value(tv, sizeof(tv), tid, 1, 120);
            printf("  - %s%s%s\n", cli_c(C, CLI_BOLD), v[0] ? v : "(no prompt)", cli_c(C, CLI_RESET));
            const json_t *cv = json_object_get(q, "context");
            if (cv != NULL && !json_is_null(cv)) {
                cli_fmt_value(v, sizeof(v), cv, 1, 300);
                printf("    %scontext:%s %s\n", cli_c(C, CLI_DIM), cli_c(C, CLI_RESET), v);
            }
            if (json_is_string(tid) && json_array_size(pending) == 1)
                printf("    answer: %s respond %s --approve   (or --reject --feedback \"…\")\n", cli_prog,
                       exec);
            else if (json_is_string(tid))
                printf("    answer: %s respond %s --task %s --approve\n", cli_prog, exec, tv);
            else
                printf("    answer: %s respond %s --event %s --approve\n", cli_prog, exec, eid ? eid : "?");
        }
    }

Exit:
    free(path);
    free(esc);
    cli_resp_free(&r);
    return rc;
}
