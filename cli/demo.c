/*
 * demo.c - `crewstream demo`: plays a realistic crew run over the ingest socket with
 * libcrewstream, so that a fresh daemon shows everything working: a run of two tasks with an
 * agent each, tool calls, logs, LLM token chunks, an artifact, and a human-input request that
 * blocks until a person answers (dashboard or `crewstream respond`). A rejection sends the Writer
 * round again with the feedback as context, as crew runtimes do; an approval completes the task
 * and the run.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <crewstream/client.h>
#include <uuid/uuid.h>

#include "cli.h"

#define DEMO_ACK_TIMEOUT_MS 15000
#define DEMO_MAX_ROUNDS     10

static const char usage[] =
    "Usage: crewstream demo [--execution ID] [--speed X] [--fail]\n"
    "\n"
    "Play a realistic crew run against the daemon, over its Unix socket (--socket): run start, a\n"
    "research task (a Researcher agent with web searches and logs), a writing task (a Writer agent\n"
    "streaming LLM tokens, the artifact report.md), then a human-input request on the writing task\n"
    "that waits for a real answer. Answer it from the dashboard (<url>/) or with\n"
    "`crewstream respond ID --approve` in another terminal. A rejection sends the Writer round\n"
    "again with the feedback, and asks again; an approval completes the task and the run. Watch it\n"
    "all with `crewstream tail ID`; `crewstream status ID` shows its progress.\n"
    "\n"
    "Options:\n"
    "  -e, --execution ID   the execution id (default: demo-<8 hex digits>)\n"
    "  --speed X            play X times faster (0.5 = slower; default 1, a run of ~10 s)\n"
    "  --fail               play a run whose tool fails and which ends with run.failed\n"
    "  -h, --help           this help\n"
    "  (global: --url for the hints shown, --socket for the daemon; see crewstream --help)\n"
    "\n"
    "Exit codes: 0 the run was played to its end; 1 the daemon refused an event; 2 usage;\n"
    "3 the socket cannot be reached.\n";

typedef struct demo {
    cli_ctx_t *ctx;
    crewstream_client_t *c;
    cli_render_t *render;
    const char *exec;
    double speed;
    struct timespec t0;
    char last_event_id[129];
} demo_t;

static void pause_ms(demo_t *d, double ms)
{
    ms /= d->speed;
    if (ms < 1)
        return;
    struct timespec ts = {(time_t)(ms / 1000), (long)((long long)ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static double elapsed_ms(const demo_t *d)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - d->t0.tv_sec) * 1000.0 + (double)(now.tv_nsec - d->t0.tv_nsec) / 1e6;
}

static int lib_error(demo_t *d, int err)
{
    if (err == -ETIMEDOUT) {
        cli_err("no reply from the daemon on %s within %d s", cli_socket_name(d->ctx),
                DEMO_ACK_TIMEOUT_MS / 1000);
        return CLI_EUNREACH;
    }
    if (err == -ENOENT || err == -ECONNREFUSED || err == -EACCES || err == -ENOTSOCK || err == -EPIPE ||
        err == -ECONNRESET || err == -ENAMETOOLONG) {
        cli_err("cannot reach the daemon's socket at %s (%s); is crewstreamd running?",
                cli_socket_name(d->ctx), strerror(-err));
        return CLI_EUNREACH;
    }
    cli_err("posting failed: %s", crewstream_strerror(err));
    return CLI_EFAIL;
}

/*
 * Posts one event given as jansson pack format and arguments (execution_id and type added),
 * waits for its ack and renders it. Returns CLI_OK or an exit code (after printing why).
 */
static int emit(demo_t *d, const char *type, const char *fmt, ...)
{
    va_list ap;
    json_error_t jerr;
    crewstream_ticket_t ticket;
    crewstream_ack_t ack;
    json_t *ev;
    char *line;
    int rc;

    va_start(ap, fmt);
    ev = fmt != NULL ? json_vpack_ex(&jerr, 0, fmt, ap) : json_object();
    va_end(ap);
    if (ev == NULL) {
        cli_err("demo: cannot build %s: %s", type, jerr.text);
        return CLI_EFAIL;
    }
    json_object_set_new(ev, "execution_id", json_string(d->exec));
    json_object_set_new(ev, "type", json_string(type));
    line = json_dumps(ev, JSON_COMPACT);
    rc = line != NULL ? crewstream_post(d->c, line, &ticket) : -ENOMEM;
    free(line);
    if (rc == 0)
        rc = crewstream_wait(d->c, ticket, DEMO_ACK_TIMEOUT_MS, &ack);
    if (rc != 0) {
        json_decref(ev);
        return lib_error(d, rc);
    }
    if (!ack.ok) {
        cli_err("the daemon refused %s: %s: %s", type, ack.error, ack.detail);
        json_decref(ev);
        return CLI_EFAIL;
    }
    snprintf(d->last_event_id, sizeof(d->last_event_id), "%s", ack.event_id);
    json_object_set_new(ev, "event_id", json_string(ack.event_id));
    json_object_set_new(ev, "seq", json_integer((json_int_t)ack.seq));
    cli_render_event(d->render, ev);
    json_decref(ev);
    return CLI_OK;
}

/* Streams a text as llm_stream_chunk events, a few words at a time. */
static int stream_text(demo_t *d, const char *agent, const char *text)
{
    const char *p = text;
    int rc = CLI_OK;
    while (*p && rc == CLI_OK) {
        /* A chunk: up to the end of the second following word, as token streams look. */
        const char *e = p;
        for (int words = 0; *e && words < 2; words++) {
            e += strspn(e, " \n");
            e += strcspn(e, " \n");
        }
        char chunk[128];
        size_t n = (size_t)(e - p) < sizeof(chunk) - 1 ? (size_t)(e - p) : sizeof(chunk) - 1;
        memcpy(chunk, p, n);
        chunk[n] = '\0';
        p += n;
        rc = emit(d, "llm_stream_chunk", "{s:s, s:s, s:s}", "agent", agent, "chunk", chunk, "model",
                  "gpt-4o-mini");
        pause_ms(d, 90);
    }
    return rc;
}

/* Asks the human and blocks until the answer arrives; *approved and *feedback (to free) set. */
static int ask_human(demo_t *d, int round, int *approved, char **feedback)
{
    char prompt[200], context[300], request[129];
    int rc;

    if (round == 1)
        snprintf(prompt, sizeof(prompt), "Approve the report before publishing?");
    else
        snprintf(prompt, sizeof(prompt), "Approve the revised report (revision %d)?", round);
    snprintf(context, sizeof(context),
             "report.md, revision %d: 4 sections, %d sources, 2%d%d words. The Writer will publish it "
             "once approved.",
             round, 6 + 2 * (round - 1), 4 + round, round);
    rc = emit(d, "human_input_required", "{s:s, s:s, s:s, s:s, s:s, s:{s:b, s:b}, s:i}", "crew_id",
              "research_crew", "task_id", "write_report", "agent_id", "writer", "prompt", prompt, "context",
              context, "reason_flags", "approval_required", 1, "ambiguity", 0, "attempt", round);
    if (rc != CLI_OK)
        return rc;
    snprintf(request, sizeof(request), "%s", d->last_event_id);

    const int C = d->ctx->color_out;
    const char *url_opt = strcmp(d->ctx->url, "http://127.0.0.1:8000") != 0 ? " --url " : "";
    const char *url_val = url_opt[0] ? d->ctx->url : "";
    cli_render_note(d->render, "Answer it from the dashboard at %s/ or in another terminal:", d->ctx->url);
    cli_render_note(d->render, "  %screwstream%s%s respond %s --approve%s", cli_c(C, CLI_RESET CLI_BOLD),
                    url_opt, url_val, d->exec, cli_c(C, CLI_RESET CLI_DIM));
    cli_render_note(d->render, "  %screwstream%s%s respond %s --reject --feedback \"Add more sources\"%s",
                    cli_c(C, CLI_RESET CLI_BOLD), url_opt, url_val, d->exec, cli_c(C, CLI_RESET CLI_DIM));
    fflush(stdout);

    int gone = 0, lost = 0;
    for (;;) {
        crewstream_answer_t ans;
        memset(&ans, 0, sizeof(ans));
        rc = crewstream_await_answer(d->c, d->exec, request, 5000, &ans);
        if (rc == 0) {
            json_t *done = json_loads(ans.json, 0, NULL);
            *approved = ans.is_approve == 1;
            *feedback = ans.human_feedback != NULL ? strdup(ans.human_feedback) : NULL;
            /* Show the answer as the stored event reads. */
            if (done != NULL) {
                json_object_set_new(done, "type", json_string("human_input_completed"));
                cli_render_event(d->render, done);
                json_decref(done);
            }
            crewstream_answer_clear(&ans);
            if (gone)
                fprintf(stderr, "crewstream: the daemon is back\n");
            return CLI_OK;
        }
        if (rc == -ETIMEDOUT)
            continue;
        if (rc == -ESRCH && lost < 3) {
            /* The daemon no longer knows the request (it restarted): ask again, same event_id. */
            lost++;
            cli_render_note(d->render, "the daemon lost the request (restarted?); asking again");
            rc = emit(d, "human_input_required", "{s:s, s:s, s:s, s:s, s:s, s:s, s:i}", "event_id", request,
                      "crew_id", "research_crew", "task_id", "write_report", "agent_id", "writer", "prompt",
                      prompt, "context", context, "attempt", round);
            if (rc != CLI_OK)
                return rc;
            continue;
        }
        if (rc == -ENOENT || rc == -ECONNREFUSED) {
            if (!gone)
                fprintf(stderr, "crewstream: the daemon went away; waiting for it to come back…\n");
            gone = 1;
            continue;
        }
        return lib_error(d, rc);
    }
}

static int play(demo_t *d, int fail)
{
    static const char *const draft =
        "# AI agents in 2024\n\nAgent frameworks matured fast: orchestration, tool use and memory "
        "moved from demos to production. This report compares six frameworks and their trade-offs.";
    static const char *const research = "Research the state of AI agents in 2024";
    static const char *const writing = "Write a report on AI agents";
    int rc, approved = 0;
    char *feedback = NULL;

#define EMIT(...)                                                                                            \
    do {                                                                                                     \
        if ((rc = emit(d, __VA_ARGS__)) != CLI_OK)                                                           \
            goto Exit;                                                                                       \
    } while (0)

    /* Two tasks, each with task_started and task_completed (or task_failed) around its agent's
     * work, so that the execution's progress counts them as a crew runtime's would. */
    EMIT("run.started", "{s:s, s:s, s:{s:s}}", "crew_name", "research_crew", "run_id", d->exec, "inputs",
         "topic", "AI agents");
    pause_ms(d, 300);
    EMIT("log", "{s:s, s:s}", "level", "info", "message", "Starting crew execution");
    pause_ms(d, 300);
    EMIT("task_started", "{s:s, s:s, s:s}", "task_id", "research", "task", research, "agent", "Researcher");
    pause_ms(d, 200);
    EMIT("agent.started", "{s:s, s:s}", "agent", "Researcher", "task", research);
    pause_ms(d, 700);
    EMIT("tool.called", "{s:s, s:s}", "tool", "web_search", "input", "AI agents 2024");
    pause_ms(d, 1200);
    if (fail) {
        EMIT("tool.error", "{s:s, s:s}", "tool", "web_search", "error",
             "search API quota exceeded (HTTP 429)");
        pause_ms(d, 400);
        EMIT("agent.error", "{s:s, s:s}", "agent", "Researcher", "error", "no search results to work from");
        pause_ms(d, 200);
        EMIT("task_failed", "{s:s, s:s, s:s}", "task_id", "research", "task", research, "error",
             "the Researcher failed");
        pause_ms(d, 300);
        EMIT("run.failed", "{s:s, s:s}", "error", "Researcher failed: search API quota exceeded",
             "stack_trace",
             "Traceback (most recent call last):\n  File \"crew.py\", line 42, in kickoff\n"
             "SearchQuotaError: HTTP 429");
        goto Exit;
    }
    EMIT("tool.result", "{s:s, s:s}", "tool", "web_search", "output",
         "15 results: LangGraph, CrewAI, AutoGen, Semantic Kernel, …");
    pause_ms(d, 300);
    EMIT("log", "{s:s, s:s}", "level", "info", "message", "Found 15 relevant results");
    pause_ms(d, 500);
    EMIT("tool.called", "{s:s, s:{s:s}}", "tool", "read_page", "input", "url",
         "https://example.com/agents-2024");
    pause_ms(d, 900);
    EMIT("tool.result", "{s:s, s:s}", "tool", "read_page", "output",
         "6,412 words: benchmarks and case studies");
    pause_ms(d, 300);
    EMIT("log", "{s:s, s:s}", "level", "warning", "message",
         "2 sources are older than 12 months; kept as context");
    pause_ms(d, 700);
    EMIT("agent.completed", "{s:s, s:s, s:s}", "agent", "Researcher", "task", research, "output",
         "Key findings on six frameworks, with sources");
    pause_ms(d, 200);
    EMIT("task_completed", "{s:s, s:s, s:s}", "task_id", "research", "task", research, "output",
         "Key findings on six frameworks, with sources");
    pause_ms(d, 300);
    EMIT("task_started", "{s:s, s:s, s:s}", "task_id", "write_report", "task", writing, "agent", "Writer");
    pause_ms(d, 200);
    EMIT("agent.started", "{s:s, s:s}", "agent", "Writer", "task", writing);
    pause_ms(d, 500);
    if ((rc = stream_text(d, "Writer", draft)) != CLI_OK)
        goto Exit;
    pause_ms(d, 300);
    EMIT("artifact", "{s:s, s:i, s:s}", "name", "report.md", "size", 2481, "content_type", "text/markdown");
    pause_ms(d, 300);
    EMIT("agent.completed", "{s:s, s:s, s:s}", "agent", "Writer", "task", writing, "output",
         "report.md, a draft for review");
    pause_ms(d, 400);

    /* The writing task needs a human's approval: a rejection sends the Writer round again with
     * the feedback as added context, inside the same task. */
    for (int round = 1;; round++) {
        free(feedback);
        feedback = NULL;
        if ((rc = ask_human(d, round, &approved, &feedback)) != CLI_OK)
            goto Exit;
        if (approved)
            break;
        if (round >= DEMO_MAX_ROUNDS) {
            EMIT("task_failed", "{s:s, s:s, s:s}", "task_id", "write_report", "task", writing, "error",
                 "rejected by the reviewer");
            EMIT("run.failed", "{s:s}", "error",
                 "the report was rejected "
                 "10 times; giving up");
            goto Exit;
        }
        pause_ms(d, 400);
        EMIT("log", "{s:s, s:s}", "level", "info", "message",
             "Revising the report with the reviewer's feedback");
        pause_ms(d, 300);
        EMIT("agent.started", "{s:s, s:s, s:s}", "agent", "Writer", "task", "Revise the report on AI agents",
             "context", feedback != NULL && feedback[0] ? feedback : "(no feedback given)");
        pause_ms(d, 400);
        if ((rc = stream_text(d, "Writer",
                              "## Revision\n\nAdded sources and a comparison table, as asked.")) != CLI_OK)
            goto Exit;
        pause_ms(d, 300);
        EMIT("artifact", "{s:s, s:i, s:s, s:i}", "name", "report.md", "size", 2481 + 600 * round,
             "content_type", "text/markdown", "revision", round + 1);
        pause_ms(d, 300);
        EMIT("agent.completed", "{s:s, s:s, s:s}", "agent", "Writer", "task",
             "Revise the report on AI agents", "output", "report.md, revised for review");
        pause_ms(d, 400);
    }
    pause_ms(d, 300);
    EMIT("task_completed", "{s:s, s:s, s:s}", "task_id", "write_report", "task", writing, "output",
         "report.md approved and published");
    pause_ms(d, 300);
    EMIT("run.completed", "{s:{s:s, s:s, s:s*}, s:I}", "result", "report", "report.md", "status", "published",
         "feedback", feedback, "duration_ms", (json_int_t)elapsed_ms(d));
#undef EMIT

Exit:
    free(feedback);
    return rc;
}

int cli_cmd_demo(cli_ctx_t *ctx, int argc, char **argv)
{
    enum { O_SPEED = 1, O_FAIL };
    static const struct option longopts[] = {
        CLI_GLOBAL_LONGOPTS,
        {"execution", required_argument, NULL, 'e'},
        {"speed", required_argument, NULL, O_SPEED},
        {"fail", no_argument, NULL, O_FAIL},
        {0},
    };
    demo_t d = {.ctx = ctx, .speed = 1.0};
    crewstream_options_t opts;
    char idbuf[64];
    int c, fail = 0, rc;

    opterr = 0;
    while ((c = getopt_long(argc, argv, ":he:", longopts, NULL)) != -1) {
        if (cli_global_opt(ctx, c, optarg))
            continue;
        switch (c) {
        case 'h':
            fputs(usage, stdout);
            return CLI_OK;
        case 'e':
            d.exec = optarg;
            break;
        case O_SPEED: {
            char *end;
            d.speed = strtod(optarg, &end);
            if (*end != '\0' || end == optarg || !(d.speed > 0) || d.speed > 1e6)
                return cli_usage_error(ctx, "--speed '%s': expected a number above 0 (2 = twice as fast)",
                                       optarg);
            break;
        }
        case O_FAIL:
            fail = 1;
            break;
        default:
            return cli_bad_option(ctx, c, argc, argv);
        }
    }
    if (optind < argc)
        return cli_usage_error(ctx, "unexpected argument '%s'", argv[optind]);
    if (d.exec != NULL) {
        size_t n = strlen(d.exec);
        if (n == 0 || n > 128 ||
            strspn(d.exec, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-") != n)
            return cli_usage_error(ctx, "--execution '%s': 1-128 characters of A-Z a-z 0-9 . _ : -", d.exec);
    } else {
        uuid_t u;
        char s[37];
        uuid_generate_random(u);
        uuid_unparse_lower(u, s);
        snprintf(idbuf, sizeof(idbuf), "demo-%.8s", s);
        d.exec = idbuf;
    }

    crewstream_options_init(&opts);
    opts.socket_path = ctx->socket;
    rc = crewstream_connect(&d.c, &opts);
    if (rc != 0)
        return lib_error(&d, rc);
    d.render = cli_render_new(stdout, ctx->color_out, 0, 0);
    if (d.render == NULL) {
        crewstream_close(d.c);
        return CLI_EFAIL;
    }
    clock_gettime(CLOCK_MONOTONIC, &d.t0);
    printf("Playing a crew run as execution %s%s%s. Watch it with `%s tail %s`\n"
           "or on the dashboard at %s/\n\n",
           cli_c(ctx->color_out, CLI_BOLD), d.exec, cli_c(ctx->color_out, CLI_RESET), cli_prog, d.exec,
           ctx->url);
    fflush(stdout);
    rc = play(&d, fail);
    cli_render_flush(d.render);
    if (rc == CLI_OK && (rc = crewstream_flush(d.c, DEMO_ACK_TIMEOUT_MS)) != 0)
        rc = lib_error(&d, rc);
    cli_render_free(d.render);
    crewstream_close(d.c);
    return rc;
}
