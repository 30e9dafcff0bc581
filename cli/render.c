/*
 * render.c - the live tree view of `crewstream tail` and `crewstream demo`, after the terminal
 * example of crew platforms:
 *
 *   ▶ Run started: run_abc123
 *   ├─ [10:30:02] Researcher agent starting task
 *   ├─ [10:30:05] Tool: web_search("AI agents 2024")
 *   ├─ [10:30:46] Artifact: report.md
 *   ✅ Run completed in 45.2s
 *
 * Both naming families are understood: run.* / agent.* / tool.* / log / artifact, and the crew
 * event-bus names (crew_kickoff_*, task_*, agent_execution_*, tool_usage_*, llm_stream_chunk,
 * flow_*). Token-stream chunks are folded into one line unless verbose.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

#define RUN_SLOTS 64

struct cli_render {
    FILE *out;
    int color, verbose, multi;
    /* An open run of llm_stream_chunk events (one line). */
    int chunk_open;
    char chunk_exec[129];
    char chunk_clock[32];
    char chunk_who[80];
    unsigned long chunks;
    size_t chunk_chars;
    /* When each recent run started (for a duration when the completion carries none). */
    struct {
        char exec[129];
        double ms;
    } runs[RUN_SLOTS];
    unsigned next_run;
};

const char *cli_c(int on, const char *code)
{
    return on ? code : "";
}

/* ---- formatting helpers ---- */

int cli_parse_iso_ms(const char *iso, double *ms)
{
    struct tm tm = {0};
    int frac = 0, fdigits = 0;
    const char *rest;

    if (iso == NULL)
        return -1;
    rest = strptime(iso, "%Y-%m-%dT%H:%M:%S", &tm);
    if (rest == NULL)
        return -1;
    if (*rest == '.') {
        for (rest++; *rest >= '0' && *rest <= '9'; rest++)
            if (fdigits < 3) {
                frac = frac * 10 + (*rest - '0');
                fdigits++;
            }
        while (fdigits++ < 3)
            frac *= 10;
    }
    *ms = (double)timegm(&tm) * 1000.0 + frac;
    return 0;
}

static void fmt_local(char *buf, size_t n, const char *iso, const char *fmt)
{
    double ms;
    struct tm tm;
    time_t t;
    if (cli_parse_iso_ms(iso, &ms) != 0) {
        if (iso != NULL) {
            snprintf(buf, n, "%s", iso);
            return;
        }
        t = time(NULL);
    } else {
        t = (time_t)(ms / 1000.0);
    }
    localtime_r(&t, &tm);
    strftime(buf, n, fmt, &tm);
}

void cli_fmt_clock(char *buf, size_t n, const char *iso)
{
    fmt_local(buf, n, iso, "%H:%M:%S");
}

void cli_fmt_datetime(char *buf, size_t n, const char *iso)
{
    fmt_local(buf, n, iso, "%Y-%m-%d %H:%M:%S");
}

void cli_fmt_duration(char *buf, size_t n, double ms)
{
    if (ms < 0)
        ms = 0;
    if (ms < 60000.0) {
        snprintf(buf, n, "%.1fs", ms / 1000.0);
    } else if (ms < 3600000.0) {
        long s = (long)(ms / 1000.0);
        snprintf(buf, n, "%ldm %02lds", s / 60, s % 60);
    } else {
        long m = (long)(ms / 60000.0);
        snprintf(buf, n, "%ldh %02ldm", m / 60, m % 60);
    }
}

/* Cuts `s` (in a buffer of n) to at most max bytes on a UTF-8 boundary, ending with "…". */
static void cut(char *s, size_t n, size_t max)
{
    size_t len = strlen(s);
    if (len <= max)
        return;
    if (max + 4 > n)
        max = n - 4;
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
        max--;
    memcpy(s + max, "\xe2\x80\xa6", 4); /* … */
}

void cli_fmt_value(char *buf, size_t n, const json_t *v, int bare, size_t max)
{
    if (n == 0)
        return;
    buf[0] = '\0';
    if (v == NULL || n < 8)
        return;
    if (bare && json_is_string(v)) {
        snprintf(buf, n, "%s", json_string_value(v));
    } else {
        char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        snprintf(buf, n, "%s", s ? s : "");
        free(s);
    }
    /* One line: control characters (newlines in a string shown bare) become spaces. */
    for (char *p = buf; *p; p++)
        if ((unsigned char)*p < 0x20)
            *p = ' ';
    cut(buf, n, max < n - 1 ? max : n - 1);
}

static void fmt_size(char *buf, size_t n, double bytes)
{
    if (bytes < 1024)
        snprintf(buf, n, "%.0f B", bytes);
    else if (bytes < 1024 * 1024)
        snprintf(buf, n, "%.1f KB", bytes / 1024);
    else
        snprintf(buf, n, "%.1f MB", bytes / (1024 * 1024));
}

int cli_type_is_end(const char *type, int in_flow, int *failed)
{
    int crew = strncmp(type, "crew_kickoff_", 13) == 0;
    int f = 0;
    int end = 1;
    if (crew && in_flow)
        end = 0;
    else if (strcmp(type, "run.completed") == 0 || strcmp(type, "crew_kickoff_completed") == 0 ||
             strcmp(type, "flow_finished") == 0 || strcmp(type, "flow_completed") == 0)
        f = 0;
    else if (strcmp(type, "run.failed") == 0 || strcmp(type, "run.canceled") == 0 ||
             strcmp(type, "crew_kickoff_failed") == 0 || strcmp(type, "flow_failed") == 0)
        f = 1;
    else
        end = 0;
    if (failed != NULL)
        *failed = f;
    return end;
}

/* ---- field lookups that accept both naming families ---- */

static const json_t *first_of(const json_t *ev, const char *const *names)
{
    for (; *names; names++) {
        const json_t *v = json_object_get(ev, *names);
        if (v != NULL && !json_is_null(v))
            return v;
    }
    return NULL;
}

/* A name: a string, or an object's role/name/description. */
static void name_of(char *buf, size_t n, const json_t *v, size_t max)
{
    static const char *const keys[] = {"role", "name", "description", "id", NULL};
    buf[0] = '\0';
    if (json_is_object(v)) {
        const json_t *x = first_of(v, keys);
        if (x != NULL)
            v = x;
        else
            return;
    }
    if (v != NULL)
        cli_fmt_value(buf, n, v, 1, max);
}

static void agent_name(char *buf, size_t n, const json_t *ev)
{
    static const char *const keys[] = {"agent", "agent_role", "agent_name", "role", NULL};
    name_of(buf, n, first_of(ev, keys), 60);
}

static void task_name(char *buf, size_t n, const json_t *ev)
{
    static const char *const keys[] = {"task", "task_name", "task_description", "description", NULL};
    name_of(buf, n, first_of(ev, keys), 100);
}

static void tool_name(char *buf, size_t n, const json_t *ev)
{
    static const char *const keys[] = {"tool", "tool_name", "name", NULL};
    name_of(buf, n, first_of(ev, keys), 60);
    if (buf[0] == '\0')
        snprintf(buf, n, "tool");
}

static const char *str(const json_t *ev, const char *key)
{
    return json_string_value(json_object_get(ev, key));
}

/* ---- run start times ---- */

static void run_started(cli_render_t *r, const char *exec, const char *ts)
{
    double ms;
    if (cli_parse_iso_ms(ts, &ms) != 0)
        return;
    for (unsigned i = 0; i < RUN_SLOTS; i++)
        if (strcmp(r->runs[i].exec, exec) == 0) {
            r->runs[i].ms = ms;
            return;
        }
    unsigned i = r->next_run++ % RUN_SLOTS;
    snprintf(r->runs[i].exec, sizeof(r->runs[i].exec), "%s", exec);
    r->runs[i].ms = ms;
}

static int run_elapsed(cli_render_t *r, const char *exec, const char *ts, double *out)
{
    double ms;
    if (cli_parse_iso_ms(ts, &ms) != 0)
        return -1;
    for (unsigned i = 0; i < RUN_SLOTS; i++)
        if (r->runs[i].exec[0] && strcmp(r->runs[i].exec, exec) == 0) {
            *out = ms - r->runs[i].ms;
            return 0;
        }
    return -1;
}

/* ---- output ---- */

cli_render_t *cli_render_new(FILE *out, int color, int verbose, int multi)
{
    cli_render_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->out = out;
    r->color = color;
    r->verbose = verbose;
    r->multi = multi;
    return r;
}

void cli_render_free(cli_render_t *r)
{
    free(r);
}

/* "├─ [10:30:01] " (and the execution, for a multi-execution stream). */
static void branch(cli_render_t *r, const char *clock, const char *exec)
{
    fprintf(r->out, "%s├─%s %s[%s]%s ", cli_c(r->color, CLI_DIM), cli_c(r->color, CLI_RESET),
            cli_c(r->color, CLI_DIM), clock, cli_c(r->color, CLI_RESET));
    if (r->multi && exec != NULL)
        fprintf(r->out, "%s%s%s ", cli_c(r->color, CLI_CYAN), exec, cli_c(r->color, CLI_RESET));
}

static void chunk_summary(cli_render_t *r)
{
    fprintf(r->out, "%s%s streamed %lu chunk%s (%zu characters)%s", cli_c(r->color, CLI_DIM),
            r->chunk_who[0] ? r->chunk_who : "LLM", r->chunks, r->chunks == 1 ? "" : "s", r->chunk_chars,
            cli_c(r->color, CLI_RESET));
}

void cli_render_flush(cli_render_t *r)
{
    if (!r->chunk_open)
        return;
    if (r->verbose) {
        fputc('\n', r->out);
    } else if (r->color) {
        /* The live line is already there: finish it. */
        fputc('\n', r->out);
    } else {
        branch(r, r->chunk_clock, r->chunk_exec);
        chunk_summary(r);
        fputc('\n', r->out);
    }
    r->chunk_open = 0;
    fflush(r->out);
}

void cli_render_note(cli_render_t *r, const char *fmt, ...)
{
    va_list ap;
    cli_render_flush(r);
    fprintf(r->out, "%s│  ", cli_c(r->color, CLI_DIM));
    va_start(ap, fmt);
    vfprintf(r->out, fmt, ap);
    va_end(ap);
    fprintf(r->out, "%s\n", cli_c(r->color, CLI_RESET));
    fflush(r->out);
}

static void render_chunk(cli_render_t *r, const json_t *ev, const char *exec, const char *clock)
{
    static const char *const keys[] = {"chunk", "content", "text", "token", "delta", NULL};
    const json_t *c = first_of(ev, keys);
    const char *text = json_string_value(c);
    char who[80];

    agent_name(who, sizeof(who), ev);
    if (r->chunk_open && (strcmp(r->chunk_exec, exec) != 0 || strcmp(r->chunk_who, who) != 0))
        cli_render_flush(r);
    if (!r->chunk_open) {
        r->chunk_open = 1;
        r->chunks = 0;
        r->chunk_chars = 0;
        snprintf(r->chunk_exec, sizeof(r->chunk_exec), "%s", exec);
        snprintf(r->chunk_clock, sizeof(r->chunk_clock), "%s", clock);
        snprintf(r->chunk_who, sizeof(r->chunk_who), "%s", who);
        if (r->verbose) {
            branch(r, clock, exec);
            fprintf(r->out, "%s%s:%s ", cli_c(r->color, CLI_DIM), who[0] ? who : "LLM",
                    cli_c(r->color, CLI_RESET));
        }
    }
    r->chunks++;
    r->chunk_chars += text != NULL ? strlen(text) : 0;
    if (r->verbose) {
        for (const char *p = text ? text : ""; *p; p++) {
            if (*p == '\n')
                fprintf(r->out, "\n%s│%s    ", cli_c(r->color, CLI_DIM), cli_c(r->color, CLI_RESET));
            else
                fputc(*p, r->out);
        }
    } else if (r->color) {
        /* A terminal: one line that counts up in place. */
        fputs("\r\033[K", r->out);
        branch(r, r->chunk_clock, exec);
        chunk_summary(r);
    }
}

/* An event with no special rendering: its type and the fields beyond the envelope. */
static void render_other(cli_render_t *r, const json_t *ev, const char *type)
{
    json_t *rest = json_deep_copy(ev);
    char buf[400];
    static const char *const envelope[] = {"execution_id", "type", "event_id", "timestamp", "seq", NULL};
    for (const char *const *k = envelope; *k; k++)
        json_object_del(rest, *k);
    buf[0] = '\0';
    if (rest != NULL && json_object_size(rest) > 0)
        cli_fmt_value(buf, sizeof(buf), rest, 0, 160);
    json_decref(rest);
    fprintf(r->out, "%s%s%s %s%s%s", cli_c(r->color, CLI_BOLD), type, cli_c(r->color, CLI_RESET),
            cli_c(r->color, CLI_DIM), buf, cli_c(r->color, CLI_RESET));
}

static int starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static int is(const char *type, const char *a, const char *b)
{
    return strcmp(type, a) == 0 || (b != NULL && strcmp(type, b) == 0);
}

void cli_render_event(cli_render_t *r, const json_t *ev)
{
    const char *type = str(ev, "type");
    const char *exec = str(ev, "execution_id");
    const char *ts = str(ev, "timestamp");
    char clock[32], a[128], t[160], v[400], x[160];
    const int C = r->color;

    if (type == NULL)
        return;
    if (exec == NULL)
        exec = "";
    if (strcmp(type, "heartbeat") == 0)
        return;
    cli_fmt_clock(clock, sizeof(clock), ts);

    if (strcmp(type, "llm_stream_chunk") == 0) {
        render_chunk(r, ev, exec, clock);
        fflush(r->out);
        return;
    }
    cli_render_flush(r);

    if (strcmp(type, "stream.gap") == 0) {
        const json_t *fs = json_object_get(ev, "first_seq");
        const char *req = str(ev, "requested");
        fprintf(r->out,
                "%s⚠  Gap: the daemon no longer holds every event after %s; continuing from seq %lld%s\n",
                cli_c(C, CLI_YELLOW), req ? req : "the last one seen", (long long)json_integer_value(fs),
                cli_c(C, CLI_RESET));
    } else if (is(type, "run.started", "crew_kickoff_started")) {
        static const char *const crew_keys[] = {"crew_name", "crew", "name", NULL};
        name_of(a, sizeof(a), first_of(ev, crew_keys), 60);
        run_started(r, exec, ts);
        fprintf(r->out, "%s▶ Run started: %s%s", cli_c(C, CLI_BOLD), exec, cli_c(C, CLI_RESET));
        if (a[0])
            fprintf(r->out, " %s(%s)%s", cli_c(C, CLI_DIM), a, cli_c(C, CLI_RESET));
        fputc('\n', r->out);
    } else if (is(type, "run.completed", "crew_kickoff_completed")) {
        static const char *const result_keys[] = {"result", "output", NULL};
        const json_t *dur = json_object_get(ev, "duration_ms");
        double ms;
        if (json_is_number(dur))
            ms = json_number_value(dur);
        else if (run_elapsed(r, exec, ts, &ms) != 0)
            ms = -1;
        if (ms >= 0)
            cli_fmt_duration(t, sizeof(t), ms);
        fprintf(r->out, "%s✅ Run completed%s%s%s", cli_c(C, CLI_GREEN), ms >= 0 ? " in " : "",
                ms >= 0 ? t : "", cli_c(C, CLI_RESET));
        if (r->multi)
            fprintf(r->out, " %s%s%s", cli_c(C, CLI_CYAN), exec, cli_c(C, CLI_RESET));
        fputc('\n', r->out);
        const json_t *res = first_of(ev, result_keys);
        if (res != NULL) {
            cli_fmt_value(v, sizeof(v), res, 1, 200);
            fprintf(r->out, "   %sResult:%s %s\n", cli_c(C, CLI_DIM), cli_c(C, CLI_RESET), v);
        }
    } else if (is(type, "run.failed", "crew_kickoff_failed")) {
        static const char *const err_keys[] = {"error", "error_message", "message", "reason", NULL};
        cli_fmt_value(v, sizeof(v), first_of(ev, err_keys), 1, 200);
        fprintf(r->out, "%s❌ Run failed%s%s%s", cli_c(C, CLI_RED), v[0] ? ": " : "", v, cli_c(C, CLI_RESET));
        if (r->multi)
            fprintf(r->out, " %s%s%s", cli_c(C, CLI_CYAN), exec, cli_c(C, CLI_RESET));
        fputc('\n', r->out);
    } else if (strcmp(type, "run.canceled") == 0) {
        fprintf(r->out, "%s⏹  Run canceled%s", cli_c(C, CLI_YELLOW), cli_c(C, CLI_RESET));
        if (r->multi)
            fprintf(r->out, " %s%s%s", cli_c(C, CLI_CYAN), exec, cli_c(C, CLI_RESET));
        fputc('\n', r->out);
    } else if (strcmp(type, "human_input_required") == 0) {
        static const char *const prompt_keys[] = {"prompt", "message", "question", NULL};
        const char *task = str(ev, "task_id");
        const char *eid = str(ev, "event_id");
        cli_fmt_value(v, sizeof(v), first_of(ev, prompt_keys), 1, 300);
        fprintf(r->out, "%s⏸  Waiting for human input: %s%s  %s(%s respond %s %s %s --approve)%s\n",
                cli_c(C, CLI_YELLOW CLI_BOLD), v[0] ? v : "(no prompt)", cli_c(C, CLI_RESET),
                cli_c(C, CLI_DIM), cli_prog, exec, task ? "--task" : "--event",
                task ? task : (eid ? eid : "?"), cli_c(C, CLI_RESET));
        const json_t *ctxv = json_object_get(ev, "context");
        if (ctxv != NULL && !json_is_null(ctxv)) {
            cli_fmt_value(v, sizeof(v), ctxv, 1, 300);
            fprintf(r->out, "%s│     context: %s%s\n", cli_c(C, CLI_DIM), v, cli_c(C, CLI_RESET));
        }
    } else {
        branch(r, clock, exec);
        if (strcmp(type, "human_input_completed") == 0) {
            const json_t *ok = json_object_get(ev, "is_approve");
            cli_fmt_value(v, sizeof(v), json_object_get(ev, "human_feedback"), 1, 200);
            if (json_is_true(ok))
                fprintf(r->out, "%s✔ Human approved%s", cli_c(C, CLI_GREEN), cli_c(C, CLI_RESET));
            else if (json_is_false(ok))
                fprintf(r->out, "%s✘ Human rejected%s", cli_c(C, CLI_RED), cli_c(C, CLI_RESET));
            else
                fprintf(r->out, "Human answered");
            if (v[0])
                fprintf(r->out, ": \"%s\"", v);
        } else if (is(type, "agent.started", "agent_execution_started")) {
            agent_name(a, sizeof(a), ev);
            task_name(t, sizeof(t), ev);
            fprintf(r->out, "%s%s%s agent starting task%s%s", cli_c(C, CLI_BOLD), a[0] ? a : "An",
                    cli_c(C, CLI_RESET), t[0] ? ": " : "", t);
        } else if (is(type, "agent.completed", "agent_execution_completed")) {
            agent_name(a, sizeof(a), ev);
            fprintf(r->out, "%s%s%s agent completed task", cli_c(C, CLI_BOLD), a[0] ? a : "An",
                    cli_c(C, CLI_RESET));
        } else if (is(type, "agent.error", "agent_execution_error")) {
            static const char *const err_keys[] = {"error", "message", NULL};
            agent_name(a, sizeof(a), ev);
            cli_fmt_value(v, sizeof(v), first_of(ev, err_keys), 1, 200);
            fprintf(r->out, "%s%s agent failed%s%s%s", cli_c(C, CLI_RED), a[0] ? a : "An", v[0] ? ": " : "",
                    v, cli_c(C, CLI_RESET));
        } else if (is(type, "tool.called", "tool_usage_started")) {
            static const char *const in_keys[] = {"input", "tool_args", "args", "arguments", NULL};
            const json_t *in = first_of(ev, in_keys);
            tool_name(a, sizeof(a), ev);
            cli_fmt_value(v, sizeof(v), in, 0, 100);
            fprintf(r->out, "%sTool:%s %s(%s)", cli_c(C, CLI_MAGENTA), cli_c(C, CLI_RESET), a, v);
        } else if (is(type, "tool.result", "tool_usage_finished")) {
            static const char *const out_keys[] = {"output", "result", NULL};
            tool_name(a, sizeof(a), ev);
            cli_fmt_value(v, sizeof(v), first_of(ev, out_keys), 1, 100);
            fprintf(r->out, "%sTool result:%s %s%s%s%s%s", cli_c(C, CLI_MAGENTA), cli_c(C, CLI_RESET), a,
                    v[0] ? " → " : "", cli_c(C, CLI_DIM), v, cli_c(C, CLI_RESET));
        } else if (is(type, "tool.error", "tool_usage_error")) {
            static const char *const err_keys[] = {"error", "message", NULL};
            tool_name(a, sizeof(a), ev);
            cli_fmt_value(v, sizeof(v), first_of(ev, err_keys), 1, 200);
            fprintf(r->out, "%sTool error: %s%s%s%s", cli_c(C, CLI_RED), a, v[0] ? ": " : "", v,
                    cli_c(C, CLI_RESET));
        } else if (is(type, "task_started", "task.started")) {
            task_name(t, sizeof(t), ev);
            fprintf(r->out, "Task started%s%s", t[0] ? ": " : "", t);
        } else if (is(type, "task_completed", "task.completed")) {
            task_name(t, sizeof(t), ev);
            fprintf(r->out, "Task completed%s%s", t[0] ? ": " : "", t);
        } else if (is(type, "task_failed", "task.failed")) {
            static const char *const err_keys[] = {"error", "message", NULL};
            task_name(t, sizeof(t), ev);
            cli_fmt_value(v, sizeof(v), first_of(ev, err_keys), 1, 200);
            fprintf(r->out, "%sTask failed%s%s%s%s%s", cli_c(C, CLI_RED), t[0] ? ": " : "", t,
                    v[0] ? " — " : "", v, cli_c(C, CLI_RESET));
        } else if (strcmp(type, "log") == 0) {
            const char *level = str(ev, "level");
            const char *col = "";
            static const char *const msg_keys[] = {"message", "msg", "text", NULL};
            cli_fmt_value(v, sizeof(v), first_of(ev, msg_keys), 1, 300);
            if (level != NULL && (starts(level, "err") || starts(level, "crit") || starts(level, "fatal")))
                col = CLI_RED;
            else if (level != NULL && starts(level, "warn"))
                col = CLI_YELLOW;
            else if (level != NULL && (starts(level, "debug") || starts(level, "trace")))
                col = CLI_DIM;
            if (level != NULL && strcmp(level, "info") != 0)
                fprintf(r->out, "%s%s:%s ", cli_c(C, col), level, cli_c(C, CLI_RESET));
            fprintf(r->out, "%s%s%s", cli_c(C, col), v, cli_c(C, CLI_RESET));
        } else if (strcmp(type, "artifact") == 0) {
            const json_t *size = json_object_get(ev, "size");
            const char *ct = str(ev, "content_type");
            static const char *const name_keys[] = {"name", "path", "filename", "url", NULL};
            cli_fmt_value(a, sizeof(a), first_of(ev, name_keys), 1, 100);
            fprintf(r->out, "%sArtifact:%s %s", cli_c(C, CLI_BLUE), cli_c(C, CLI_RESET),
                    a[0] ? a : "(unnamed)");
            x[0] = '\0';
            if (json_is_number(size))
                fmt_size(x, sizeof(x), json_number_value(size));
            if (x[0] || ct)
                fprintf(r->out, " %s(%s%s%s)%s", cli_c(C, CLI_DIM), x, x[0] && ct ? ", " : "", ct ? ct : "",
                        cli_c(C, CLI_RESET));
        } else if (starts(type, "flow_")) {
            static const char *const flow_keys[] = {"flow_name", "method_name", "name", NULL};
            snprintf(t, sizeof(t), "%s", type);
            for (char *p = t; *p; p++)
                if (*p == '_')
                    *p = ' ';
            t[0] = 'F';
            cli_fmt_value(v, sizeof(v), first_of(ev, flow_keys), 1, 100);
            fprintf(r->out, "%s%s%s", t, v[0] ? ": " : "", v);
        } else {
            render_other(r, ev, type);
        }
        fputc('\n', r->out);
    }
    fflush(r->out);
}
