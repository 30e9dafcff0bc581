/*
 * status.c - see status.h.
 */
#include "status.h"

#include <stdlib.h>
#include <string.h>

#include "event.h"

static const char *const status_names[] = {"pending",   "running", "pending_human_input",
                                           "completed", "error",   "canceled"};

const char *cs_status_name(cs_exec_status_t s)
{
    return (unsigned)s < sizeof(status_names) / sizeof(status_names[0]) ? status_names[s] : "unknown";
}

int cs_status_parse(const char *name)
{
    for (size_t i = 0; i < sizeof(status_names) / sizeof(status_names[0]); i++)
        if (strcmp(name, status_names[i]) == 0)
            return (int)i;
    return -1;
}

static int is(const char *type, size_t len, const char *name)
{
    size_t n = strlen(name);
    return len == n && memcmp(type, name, n) == 0;
}

/* What the types the daemon reads mean; the names of both families (SPEC §2) for each. */
enum kind {
    RUN_COMPLETED,
    RUN_FAILED,
    RUN_CANCELED,
    RUN_STARTED,
    TASK_STARTED,
    TASK_DONE,
    TASK_FAILED,
    AGENT_STARTED,
    AGENT_DONE,
    AGENT_FAILED,
    TOOL_CALLED,
    TOOL_ERROR,
    HUMAN_INPUT, /* hitl.c's, dispatched by the store: a request (kept whole) and its answer */
    FLOW_STARTED,
    FLOW_DONE,
    FLOW_FAILED,
    KICKOFF_HANDED, /* cluster mode: a kickoff handed to the nodes, no runtime has it yet */
    N_KINDS
};

/* Every name here must be reported by cs_status_reads_type (tests/unit/test_status.c checks). */
static const char *const kind_names[N_KINDS][3] = {
    [RUN_COMPLETED] = {"run.completed", "crew_kickoff_completed"},
    [RUN_FAILED] = {"run.failed", "crew_kickoff_failed"},
    [RUN_CANCELED] = {"run.canceled"},
    [RUN_STARTED] = {"run.started", "crew_kickoff_started"},
    [TASK_STARTED] = {"task_started"},
    [TASK_DONE] = {"task_completed"},
    [TASK_FAILED] = {"task_failed"},
    [AGENT_STARTED] = {"agent.started", "agent_execution_started"},
    [AGENT_DONE] = {"agent.completed", "agent_execution_completed"},
    [AGENT_FAILED] = {"agent.error", "agent_execution_error"},
    [TOOL_CALLED] = {"tool.called", "tool_usage_started"},
    [TOOL_ERROR] = {"tool.error", "tool_usage_error"},
    [HUMAN_INPUT] = {"human_input_required", "human_input_completed"},
    [FLOW_STARTED] = {"flow_started"},
    [FLOW_DONE] = {"flow_finished", "flow_completed"},
    [FLOW_FAILED] = {"flow_failed"},
    [KICKOFF_HANDED] = {"kickoff.requested"},
};

static int is_kind(const char *type, size_t len, enum kind k)
{
    for (size_t i = 0; i < sizeof(kind_names[k]) / sizeof(kind_names[k][0]) && kind_names[k][i] != NULL; i++)
        if (is(type, len, kind_names[k][i]))
            return 1;
    return 0;
}

/* Returns nonzero when type[0..len) starts with prefix[0..n). */
static int starts(const char *type, size_t len, const char *prefix, size_t n)
{
    return len >= n && memcmp(type, prefix, n) == 0;
}

int cs_status_reads_type(const char *type, size_t len)
{
    /* By family (run.*, crew*, task*, agent*, tool*, human_input*, flow_*, kickoff.*): a sibling added to
     * kind_names later ("run.paused", "tool_usage_finished") is reported without a change here; a new family
     * fails tests/unit/test_status.c until it is. Every ordinary event passes here: a switch on the
     * first byte turns most of them away at once. */
    if (len == 0)
        return 0;
    switch (type[0]) {
    case 'r':
        return starts(type, len, "run.", 4);
    case 'c':
        return starts(type, len, "crew", 4);
    case 't':
        return starts(type, len, "task", 4) || starts(type, len, "tool", 4);
    case 'a':
        return starts(type, len, "agent", 5);
    case 'h':
        return starts(type, len, "human_input", 11);
    case 'f':
        return starts(type, len, "flow_", 5);
    case 'k':
        return starts(type, len, "kickoff.", 8);
    default:
        return 0;
    }
}

int cs_status_keeps(const char *type, size_t len)
{
    if (is_kind(type, len, RUN_COMPLETED) || is_kind(type, len, FLOW_DONE))
        return CS_STATUS_KEEPS_RESULT;
    if (is_kind(type, len, RUN_FAILED) || is_kind(type, len, FLOW_FAILED))
        return CS_STATUS_KEEPS_ERROR;
    return 0;
}

int cs_status_is_final(int s)
{
    return s == CS_EXEC_COMPLETED || s == CS_EXEC_ERROR || s == CS_EXEC_CANCELED;
}

/* The failure text of run.failed ("error", a string or anything else rendered as JSON). */
static char *error_text(const json_t *ev)
{
    static const char *const keys[] = {"error", "error_message", "message"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        const json_t *v = json_object_get(ev, keys[i]);
        if (v == NULL || json_is_null(v))
            continue;
        if (json_is_string(v))
            return strdup(json_string_value(v));
        return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    }
    return strdup("failed");
}

/* The status after one more event; what it keeps (progress, result, error) is updated in st. */
static cs_exec_status_t next_status(cs_status_t *st, const json_t *ev, const char *type, size_t len,
                                    size_t n_open)
{
    cs_progress_t *p = &st->progress;
    cs_exec_status_t s = st->status;

    /* A type of no kind (every name of every kind is reported: tests/unit/test_status.c) changes
     * nothing but what the human-input count says, and nothing of ev is read: the ingest fast path
     * passes NULL. */
    if (!cs_status_reads_type(type, len)) {
        if (cs_status_is_final(s))
            return s;
        return n_open > 0 ? CS_EXEC_PENDING_HUMAN_INPUT : CS_EXEC_RUNNING;
    }
    /* A kickoff handed to the cluster is not running until a runtime posts: it stays pending, as a
     * kickoff queued in a lone daemon's gateway does (its first event is the runtime's). */
    if (is_kind(type, len, KICKOFF_HANDED))
        return s;
    if (is_kind(type, len, TASK_STARTED))
        p->tasks_seen++;
    else if (is_kind(type, len, TASK_DONE))
        p->tasks_done++;
    else if (is_kind(type, len, TASK_FAILED))
        p->tasks_failed++;
    else if (is_kind(type, len, AGENT_STARTED))
        p->agents_seen++;
    else if (is_kind(type, len, AGENT_DONE))
        p->agents_done++;
    else if (is_kind(type, len, AGENT_FAILED))
        p->agents_failed++;
    else if (is_kind(type, len, TOOL_CALLED))
        p->tool_calls++;
    else if (is_kind(type, len, TOOL_ERROR))
        p->tool_errors++;

    /* A flow runs crews: inside one, a crew's end is a step, and the flow's own end is the run's. */
    int crew_end =
        st->in_flow && (is(type, len, "crew_kickoff_completed") || is(type, len, "crew_kickoff_failed"));
    if (is_kind(type, len, FLOW_STARTED))
        st->in_flow = 1;
    if ((is_kind(type, len, RUN_COMPLETED) && !crew_end) || is_kind(type, len, FLOW_DONE)) {
        const json_t *r = json_object_get(ev, "result");
        if (r == NULL)
            r = json_object_get(ev, "output");
        json_decref(st->result);
        st->result = r != NULL ? json_incref((json_t *)r) : NULL;
        free(st->error_message);
        st->error_message = NULL;
        return CS_EXEC_COMPLETED;
    }
    if ((is_kind(type, len, RUN_FAILED) && !crew_end) || is_kind(type, len, FLOW_FAILED)) {
        free(st->error_message);
        st->error_message = error_text(ev);
        return CS_EXEC_ERROR;
    }
    if (is_kind(type, len, RUN_CANCELED))
        return CS_EXEC_CANCELED;
    /* A new start after an end begins the run again (a retried kickoff under the same id). */
    int start = is_kind(type, len, RUN_STARTED) || is_kind(type, len, FLOW_STARTED);
    if (cs_status_is_final(s) && !start)
        return s;
    if (cs_status_is_final(s))
        cs_status_clear(st);
    return n_open > 0 ? CS_EXEC_PENDING_HUMAN_INPUT : CS_EXEC_RUNNING;
}

/* Cuts s (NUL-terminated) to at most max bytes, at a UTF-8 character boundary. */
static void utf8_cut(char *s, size_t max)
{
    size_t n = strlen(s);

    if (n <= max)
        return;
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
        max--;
    s[max] = '\0';
}

cs_exec_status_t cs_status_apply(cs_status_t *st, const json_t *ev, const char *type, size_t len,
                                 size_t n_open, size_t error_max)
{
    cs_exec_status_t s = next_status(st, ev, type, len, n_open);

    if (st->error_message != NULL)
        utf8_cut(st->error_message, error_max);
    st->status = s;
    return s;
}

static json_t *time_or_null(int64_t ms)
{
    char ts[32];
    if (ms == 0)
        return json_null();
    cs_format_timestamp(ms, ts, sizeof(ts));
    return json_string(ts);
}

static json_t *progress_json(const cs_progress_t *p)
{
    return json_pack("{s:{s:i, s:i, s:i}, s:{s:i, s:i, s:i}, s:{s:i, s:i}}", "tasks", "seen",
                     (int)p->tasks_seen, "done", (int)p->tasks_done, "failed", (int)p->tasks_failed, "agents",
                     "seen", (int)p->agents_seen, "done", (int)p->agents_done, "failed",
                     (int)p->agents_failed, "tools", "calls", (int)p->tool_calls, "errors",
                     (int)p->tool_errors);
}

/* What an execution nothing was posted to reads as. */
static const cs_status_t pending_status = {.status = CS_EXEC_PENDING};

json_t *cs_status_json(const cs_status_t *s, const cs_status_view_t *v, json_t *pending)
{
    if (s == NULL)
        s = &pending_status;
    if (pending == NULL)
        pending = json_array();
    return json_pack("{s:s%, s:s, s:O?, s:s?, s:o, s:o, s:o, s:I, s:I, s:o, s:o}", "execution_id", v->id,
                     v->id_len, "status", cs_status_name(s->status), "result", s->result, "error_message",
                     s->error_message, "created_at", time_or_null(v->created_unix_ms), "first_event_at",
                     time_or_null(v->first_unix_ms), "last_event_at", time_or_null(v->last_unix_ms), "events",
                     (json_int_t)v->last_seq, "last_seq", (json_int_t)v->last_seq, "progress",
                     progress_json(&s->progress), "pending_human_input", pending);
}

json_t *cs_status_seed_json(const cs_status_t *st, const char *id, size_t id_len)
{
    const char *s;
    if (st == NULL)
        st = &pending_status;
    switch (st->status) {
    case CS_EXEC_PENDING:
        s = "pending";
        break;
    case CS_EXEC_COMPLETED:
        s = "completed";
        break;
    case CS_EXEC_ERROR:
    case CS_EXEC_CANCELED:
        s = "error";
        break;
    default:
        s = "running";
        break;
    }
    const char *err = st->error_message;
    if (err == NULL && st->status == CS_EXEC_CANCELED)
        err = "canceled";
    return json_pack("{s:s%, s:s, s:s, s:O?, s:s?, s:o}", "execution_id", id, id_len, "status", s, "state",
                     cs_status_name(st->status), "result", st->result, "error_message", err, "progress",
                     progress_json(&st->progress));
}

void cs_status_clear(cs_status_t *s)
{
    json_decref(s->result);
    s->result = NULL;
    free(s->error_message);
    s->error_message = NULL;
}
