/*
 * status.c - see status.h.
 */
#include "status.h"

#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "store.h"

static int is(const char *type, size_t len, const char *name)
{
    size_t n = strlen(name);
    return len == n && memcmp(type, name, n) == 0;
}

static int is_any(const char *type, size_t len, const char *const *names)
{
    for (; *names != NULL; names++)
        if (is(type, len, *names))
            return 1;
    return 0;
}

static const char *const run_completed[] = {"run.completed", "crew_kickoff_completed", NULL};
static const char *const run_failed[] = {"run.failed", "crew_kickoff_failed", NULL};
static const char *const run_canceled[] = {"run.canceled", NULL};
static const char *const run_started[] = {"run.started", "crew_kickoff_started", NULL};
static const char *const task_started[] = {"task_started", NULL};
static const char *const task_done[] = {"task_completed", NULL};
static const char *const task_failed[] = {"task_failed", NULL};
static const char *const agent_started[] = {"agent.started", "agent_execution_started", NULL};
static const char *const agent_done[] = {"agent.completed", "agent_execution_completed", NULL};
static const char *const agent_failed[] = {"agent.error", "agent_execution_error", NULL};
static const char *const tool_called[] = {"tool.called", "tool_usage_started", NULL};
static const char *const tool_error[] = {"tool.error", "tool_usage_error", NULL};

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

int cs_status_apply(cs_exec_t *ex, const json_t *ev, const char *type, size_t len)
{
    cs_progress_t *p = &ex->progress;
    int s = ex->status;

    if (is_any(type, len, task_started))
        p->tasks_seen++;
    else if (is_any(type, len, task_done))
        p->tasks_done++;
    else if (is_any(type, len, task_failed))
        p->tasks_failed++;
    else if (is_any(type, len, agent_started))
        p->agents_seen++;
    else if (is_any(type, len, agent_done))
        p->agents_done++;
    else if (is_any(type, len, agent_failed))
        p->agents_failed++;
    else if (is_any(type, len, tool_called))
        p->tool_calls++;
    else if (is_any(type, len, tool_error))
        p->tool_errors++;

    if (is_any(type, len, run_completed)) {
        const json_t *r = json_object_get(ev, "result");
        if (r == NULL)
            r = json_object_get(ev, "output");
        json_decref(ex->result);
        ex->result = r != NULL ? json_incref((json_t *)r) : NULL;
        free(ex->error_message);
        ex->error_message = NULL;
        return CS_EXEC_COMPLETED;
    }
    if (is_any(type, len, run_failed)) {
        free(ex->error_message);
        ex->error_message = error_text(ev);
        return CS_EXEC_ERROR;
    }
    if (is_any(type, len, run_canceled))
        return CS_EXEC_CANCELED;
    /* A new start after an end begins the run again (a retried kickoff under the same id). */
    if (cs_status_is_final(s) && !is_any(type, len, run_started))
        return s;
    if (cs_status_is_final(s))
        cs_status_clear(ex);
    return ex->hitl.n_open > 0 ? CS_EXEC_PENDING_HUMAN_INPUT : CS_EXEC_RUNNING;
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

static json_t *pending_json(const cs_exec_t *ex)
{
    static const char *const copy[] = {"task_id", "crew_id",      "agent_id", "prompt",
                                       "context", "reason_flags", "timestamp"};
    json_t *arr = json_array();

    for (const cs_hitl_req_t *r = ex->hitl.reqs; r != NULL && arr != NULL; r = r->next) {
        if (r->answered)
            continue;
        json_t *o = json_pack("{s:s, s:I}", "event_id", r->event_id, "seq", (json_int_t)r->seq);
        if (o == NULL)
            continue;
        for (size_t i = 0; i < sizeof(copy) / sizeof(copy[0]); i++) {
            json_t *v = json_object_get(r->request, copy[i]);
            if (v != NULL)
                json_object_set(o, copy[i], v);
        }
        json_array_append_new(arr, o);
    }
    return arr;
}

json_t *cs_status_json(const cs_exec_t *ex)
{
    return json_pack("{s:s%, s:s, s:O?, s:s?, s:o, s:o, s:o, s:I, s:I, s:o, s:o}", "execution_id", ex->id,
                     ex->id_len, "status", cs_exec_status_name(ex->status), "result", ex->result,
                     "error_message", ex->error_message, "created_at", time_or_null(ex->created_unix_ms),
                     "first_event_at", time_or_null(ex->first_unix_ms), "last_event_at",
                     time_or_null(ex->last_unix_ms), "events", (json_int_t)(ex->next_seq - 1), "last_seq",
                     (json_int_t)(ex->next_seq - 1), "progress", progress_json(&ex->progress),
                     "pending_human_input", pending_json(ex));
}

json_t *cs_status_seed_json(const cs_exec_t *ex)
{
    const char *s;
    switch (ex->status) {
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
    const char *err = ex->error_message;
    if (err == NULL && ex->status == CS_EXEC_CANCELED)
        err = "canceled";
    return json_pack("{s:s%, s:s, s:s, s:O?, s:s?, s:o}", "execution_id", ex->id, ex->id_len, "status", s,
                     "state", cs_exec_status_name(ex->status), "result", ex->result, "error_message", err,
                     "progress", progress_json(&ex->progress));
}

void cs_status_clear(cs_exec_t *ex)
{
    json_decref(ex->result);
    ex->result = NULL;
    free(ex->error_message);
    ex->error_message = NULL;
}
