/*
 * answer.c - see answer.h.
 */
#include "answer.h"

#include <stdio.h>
#include <string.h>

#include "event.h"

cs_err_t cs_answer_from_json(const json_t *o, cs_answer_t *a, char *detail, size_t detail_len)
{
    static const char *const ids[] = {"event_id", "task_id"};
    const json_t *v;

    memset(a, 0, sizeof(*a));
    if (!json_is_object(o)) {
        snprintf(detail, detail_len, "expected a JSON object");
        return CS_ERR_INVALID_JSON;
    }
    for (int i = 0; i < 2; i++) {
        v = json_object_get(o, ids[i]);
        if (v == NULL || json_is_null(v))
            continue;
        if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > CS_EVENT_ID_MAX) {
            snprintf(detail, detail_len, "%s must be a string of 1-%d characters", ids[i], CS_EVENT_ID_MAX);
            return CS_ERR_INVALID_FIELD;
        }
        *(i == 0 ? &a->event_id : &a->task_id) = json_string_value(v);
    }
    v = json_object_get(o, "human_feedback");
    if (v != NULL && !json_is_string(v) && !json_is_null(v)) {
        snprintf(detail, detail_len, "human_feedback must be a string");
        return CS_ERR_INVALID_FIELD;
    }
    a->human_feedback = v;
    v = json_object_get(o, "is_approve");
    if (v == NULL) {
        /* An answer says yes or no: a bare {} must never approve anything. */
        snprintf(detail, detail_len, "is_approve (true or false) is required");
        return CS_ERR_MISSING_FIELD;
    }
    if (!json_is_boolean(v)) {
        snprintf(detail, detail_len, "is_approve must be true or false");
        return CS_ERR_INVALID_FIELD;
    }
    a->is_approve = v;
    if (a->event_id == NULL && a->task_id == NULL) {
        snprintf(detail, detail_len, "name the request: event_id or task_id is required");
        return CS_ERR_MISSING_FIELD;
    }
    return CS_OK;
}

cs_err_t cs_answer_find(const cs_hitl_t *h, const cs_answer_t *a, cs_hitl_req_t **req, char *detail,
                        size_t detail_len)
{
    cs_hitl_req_t *r;

    if (a->event_id != NULL) {
        r = cs_hitl_find(h, a->event_id);
        if (r == NULL) {
            /* SPEC §4: an unknown execution is 404; in a known one, no open request is 409. */
            snprintf(detail, detail_len, "no open human_input_required with event_id \"%.128s\"",
                     a->event_id);
            return CS_ERR_CONFLICT;
        }
        if (r->answered) {
            snprintf(detail, detail_len, "request \"%.128s\" was already answered", a->event_id);
            return CS_ERR_CONFLICT;
        }
    } else {
        r = cs_hitl_open_for_task(h, a->task_id);
        if (r == NULL) {
            if (a->task_id != NULL)
                snprintf(detail, detail_len, "no open human-input request for task \"%.128s\"", a->task_id);
            else
                snprintf(detail, detail_len, "no open human-input request in this execution");
            return CS_ERR_CONFLICT;
        }
    }
    *req = r;
    return CS_OK;
}

json_t *cs_answer_completion(const char *id, size_t id_len, const cs_hitl_req_t *r, const cs_answer_t *a)
{
    static const char *const copy[] = {"crew_id", "task_id", "agent_id"};
    /* The completion carries what the runtime needs, and what dashboards show next to the request. */
    json_t *ev = json_pack("{s:s%, s:s, s:s}", "execution_id", id, id_len, "type", "human_input_completed",
                           "request_event_id", r->event_id);

    if (ev == NULL)
        return NULL;
    for (size_t i = 0; i < sizeof(copy) / sizeof(copy[0]); i++) {
        json_t *v = json_object_get(r->request, copy[i]);
        if (v != NULL && json_object_set(ev, copy[i], v) != 0)
            goto nomem;
    }
    if (a->answered_by != NULL && a->answered_by[0] != '\0' &&
        json_object_set_new(ev, "answered_by", json_string(a->answered_by)) != 0)
        goto nomem;
    if (json_object_set(ev, "human_feedback",
                        a->human_feedback ? (json_t *)a->human_feedback : json_null()) != 0 ||
        json_object_set(ev, "is_approve", a->is_approve ? (json_t *)a->is_approve : json_true()) != 0)
        goto nomem;
    return ev;

nomem:
    json_decref(ev);
    return NULL;
}

cs_err_t cs_answer_submit(cs_store_t *st, const char *id, size_t id_len, const cs_answer_t *a,
                          int64_t now_unix_ms, const cs_store_done_t *done, cs_publish_t *out, char *detail,
                          size_t detail_len)
{
    cs_hitl_t *h = cs_store_requests(st, id, id_len, detail, detail_len);
    cs_hitl_req_t *r;
    json_t *ev;
    cs_err_t e;

    if (h == NULL)
        return CS_ERR_NOT_FOUND;
    e = cs_answer_find(h, a, &r, detail, detail_len);
    if (e != CS_OK)
        return e;
    ev = cs_answer_completion(id, id_len, r, a);
    if (ev == NULL) {
        snprintf(detail, detail_len, "out of memory");
        return CS_ERR_INTERNAL;
    }
    /* The store's human-input step closes r and pushes the answer; out->request_event_id names r. */
    /* In cluster mode Redis decides, in the same call that stores it, whether r is still open (another
     * node may have answered it first): CS_ERR_CONFLICT then, nothing stored. */
    e = cs_store_submit_answer(st, ev, r->event_id, now_unix_ms, done, out, detail, detail_len);
    json_decref(ev);
    return e;
}

cs_err_t cs_store_answer(cs_store_t *st, const char *id, size_t id_len, const cs_answer_t *a,
                         int64_t now_unix_ms, cs_publish_t *out, char *detail, size_t detail_len)
{
    return cs_answer_submit(st, id, id_len, a, now_unix_ms, NULL, out, detail, detail_len);
}

cs_err_t cs_answer_take(cs_store_t *st, const char *id, size_t id_len, const json_t *o, int64_t now_unix_ms,
                        const cs_store_done_t *done, cs_publish_t *out, char *detail, size_t detail_len)
{
    cs_answer_t a;
    cs_err_t e = cs_answer_from_json(o, &a, detail, detail_len);

    if (e != CS_OK)
        return e;
    return cs_answer_submit(st, id, id_len, &a, now_unix_ms, done, out, detail, detail_len);
}
