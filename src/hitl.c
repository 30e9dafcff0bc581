/*
 * hitl.c - see hitl.h.
 */
#include "hitl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <utlist.h>

#include "event.h"

/* Per request beyond its ids and request copy: the hash table slots, and the allocator's rounding. */
#define REQ_SLACK 256

static size_t ids_cost(const char *event_id, const char *task_id)
{
    return sizeof(cs_hitl_req_t) + strlen(event_id) + (task_id != NULL ? strlen(task_id) : 0) + REQ_SLACK;
}

size_t cs_hitl_request_cost(const json_t *ev, size_t text_len)
{
    const char *eid = json_string_value(json_object_get(ev, "event_id"));
    const char *task = json_string_value(json_object_get(ev, "task_id"));

    /* The copy of the request is a jansson tree: about twice its text (a node per value, a hash
     * table per object), counted so that store.max_bytes bounds open requests too. */
    return ids_cost(eid != NULL ? eid : "", task) + 2 * text_len;
}

size_t cs_hitl_req_bytes(const cs_hitl_req_t *r)
{
    return ids_cost(r->event_id, r->task_id) + (r->answered ? r->push_len : r->request_bytes);
}

/* ---- the open requests and their task index ---- */

static void open_add(cs_hitl_t *h, cs_hitl_req_t *r)
{
    DL_APPEND2(h->open, r, oprev, onext);
    h->n_open++;
    h->open_bytes += r->bytes;
    if (r->task_id == NULL)
        return;
    cs_hitl_req_t *head = NULL;
    HASH_FIND(th, h->tasks, r->task_id, strlen(r->task_id), head);
    if (head == NULL) {
        r->tprev = r;
        r->tnext = NULL;
        HASH_ADD_KEYPTR(th, h->tasks, r->task_id, strlen(r->task_id), r);
    } else {
        DL_APPEND2(head, r, tprev, tnext); /* head stays the head */
    }
}

static void open_remove(cs_hitl_t *h, cs_hitl_req_t *r)
{
    DL_DELETE2(h->open, r, oprev, onext);
    r->oprev = r->onext = NULL;
    h->n_open--;
    h->open_bytes -= r->bytes;
    if (r->task_id == NULL)
        return;
    cs_hitl_req_t *head = NULL;
    HASH_FIND(th, h->tasks, r->task_id, strlen(r->task_id), head);
    if (head == r) {
        HASH_DELETE(th, h->tasks, r);
        DL_DELETE2(head, r, tprev, tnext);
        if (head != NULL)
            HASH_ADD_KEYPTR(th, h->tasks, head->task_id, strlen(head->task_id), head);
    } else if (head != NULL) {
        DL_DELETE2(head, r, tprev, tnext);
    }
    r->tprev = r->tnext = NULL;
}

static void req_free(cs_hitl_t *h, cs_hitl_req_t *r)
{
    while (r->awaiters != NULL)
        cs_hitl_unawait(r->awaiters);
    if (!r->answered)
        open_remove(h, r);
    HASH_DELETE(hh, h->ids, r);
    DL_DELETE(h->reqs, r);
    h->n--;
    h->bytes -= r->bytes;
    json_decref(r->request);
    free(r->event_id);
    free(r->task_id);
    free(r->push);
    free(r);
}

static char *dup_string_field(const json_t *ev, const char *key)
{
    const char *s = json_string_value(json_object_get(ev, key));
    return s != NULL ? strdup(s) : NULL;
}

int cs_hitl_on_request(cs_hitl_t *h, const json_t *ev, uint64_t seq, size_t text_len)
{
    const char *eid = json_string_value(json_object_get(ev, "event_id"));
    cs_hitl_req_t *r;

    if (eid != NULL && cs_hitl_find(h, eid) != NULL)
        return -EEXIST;
    r = calloc(1, sizeof(*r));
    if (r == NULL)
        return -ENOMEM;
    r->event_id = dup_string_field(ev, "event_id");
    r->task_id = dup_string_field(ev, "task_id");
    r->request = json_deep_copy(ev);
    if (r->event_id == NULL || r->request == NULL) {
        json_decref(r->request);
        free(r->event_id);
        free(r->task_id);
        free(r);
        return -ENOMEM;
    }
    r->seq = seq;
    r->unix_ms = cs_unix_ms();
    r->request_bytes = 2 * text_len;
    r->bytes = cs_hitl_req_bytes(r);
    DL_APPEND(h->reqs, r);
    HASH_ADD_KEYPTR(hh, h->ids, r->event_id, strlen(r->event_id), r);
    h->n++;
    h->bytes += r->bytes;
    open_add(h, r);
    return 0;
}

json_t *cs_hitl_pending_json(const cs_hitl_t *h)
{
    static const char *const copy[] = {"task_id", "crew_id",      "agent_id", "prompt",
                                       "context", "reason_flags", "timestamp"};
    json_t *arr = json_array();

    for (const cs_hitl_req_t *r = h->open; r != NULL && arr != NULL; r = r->onext) {
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

cs_hitl_req_t *cs_hitl_find(const cs_hitl_t *h, const char *event_id)
{
    cs_hitl_req_t *r = NULL;
    HASH_FIND(hh, h->ids, event_id, strlen(event_id), r);
    return r;
}

cs_hitl_req_t *cs_hitl_open_for_task(const cs_hitl_t *h, const char *task_id)
{
    cs_hitl_req_t *head = NULL;

    /* The latest one: a retry loop asks again for the same task. */
    if (task_id == NULL)
        return h->open != NULL ? h->open->oprev : NULL;
    HASH_FIND(th, h->tasks, task_id, strlen(task_id), head);
    return head != NULL ? head->tprev : NULL;
}

static void deliver(cs_hitl_req_t *r, cs_awaiter_t *aw)
{
    aw->req = NULL;
    aw->push(aw, r->push, r->push_len);
}

cs_hitl_req_t *cs_hitl_match_completed(const cs_hitl_t *h, const json_t *ev)
{
    const char *rid = json_string_value(json_object_get(ev, "request_event_id"));
    const char *eid = json_string_value(json_object_get(ev, "event_id"));
    cs_hitl_req_t *r = NULL;

    if (rid != NULL)
        return cs_hitl_find(h, rid);
    if (eid != NULL)
        r = cs_hitl_find(h, eid);
    if (r == NULL)
        r = cs_hitl_open_for_task(h, json_string_value(json_object_get(ev, "task_id")));
    return r;
}

char *cs_hitl_push_line(const cs_hitl_req_t *r, const char *execution_id, const json_t *ev, uint64_t seq,
                        size_t *len)
{
    const char *eid = json_string_value(json_object_get(ev, "event_id"));
    const char *task = json_string_value(json_object_get(ev, "task_id"));
    json_t *fb = json_object_get(ev, "human_feedback");
    json_t *ok = json_object_get(ev, "is_approve");
    json_t *push;
    char *line, *pl;
    size_t n;

    push = json_pack("{s:s, s:s, s:s, s:s?, s:O?, s:O?, s:s, s:I}", "op", "human_input", "execution_id",
                     execution_id, "request_event_id", r->event_id, "task_id",
                     task != NULL ? task : r->task_id, "human_feedback", fb, "is_approve", ok, "event_id",
                     eid != NULL ? eid : "", "seq", (json_int_t)seq);
    line = push != NULL ? json_dumps(push, JSON_COMPACT) : NULL;
    json_decref(push);
    if (line == NULL)
        return NULL;
    n = strlen(line);
    pl = realloc(line, n + 2);
    if (pl == NULL) {
        free(line);
        return NULL;
    }
    pl[n] = '\n';
    pl[n + 1] = '\0';
    *len = n + 1;
    return pl;
}

void cs_hitl_answer(cs_hitl_t *h, cs_hitl_req_t *r, char *push, size_t push_len)
{
    open_remove(h, r);
    r->push = push;
    r->push_len = push_len;
    r->answered = 1;
    /* Answered, a request is kept (an answer is never lost while its execution is: SPEC §3) at the
     * cost of its ids and push line; the copy of the request goes. store.max_bytes bounds them all. */
    json_decref(r->request);
    r->request = NULL;
    r->request_bytes = 0;
    h->bytes -= r->bytes;
    r->bytes = cs_hitl_req_bytes(r);
    h->bytes += r->bytes;
    while (r->awaiters != NULL) {
        cs_awaiter_t *aw = r->awaiters;
        DL_DELETE(r->awaiters, aw);
        deliver(r, aw);
    }
}

cs_hitl_req_t *cs_hitl_on_completed(cs_hitl_t *h, const char *execution_id, const json_t *ev, uint64_t seq)
{
    cs_hitl_req_t *r = cs_hitl_match_completed(h, ev);
    char *push;
    size_t len;

    if (r == NULL || r->answered)
        return r;
    push = cs_hitl_push_line(r, execution_id, ev, seq, &len);
    if (push == NULL)
        return r; /* out of memory: the request stays open, a retry of the answer can close it */
    cs_hitl_answer(h, r, push, len);
    return r;
}

void cs_hitl_await(cs_hitl_req_t *req, cs_awaiter_t *aw)
{
    if (req->answered) {
        deliver(req, aw);
        return;
    }
    aw->req = req;
    DL_APPEND(req->awaiters, aw);
}

void cs_hitl_unawait(cs_awaiter_t *aw)
{
    if (aw->req == NULL)
        return;
    DL_DELETE(aw->req->awaiters, aw);
    aw->req = NULL;
}

void cs_hitl_clear(cs_hitl_t *h)
{
    while (h->reqs != NULL)
        req_free(h, h->reqs);
}

int cs_hitl_check(const cs_hitl_t *h, char *detail, size_t detail_len)
{
    size_t n = 0, n_open = 0, bytes = 0, open_bytes = 0;

    for (const cs_hitl_req_t *r = h->reqs; r != NULL; r = r->next) {
        n++;
        if (r->bytes != cs_hitl_req_bytes(r)) {
            snprintf(detail, detail_len, "request %s counted as %zu, holds %zu", r->event_id, r->bytes,
                     cs_hitl_req_bytes(r));
            return -1;
        }
        bytes += r->bytes;
        if (cs_hitl_find(h, r->event_id) != r) {
            snprintf(detail, detail_len, "request %s not in the event_id index", r->event_id);
            return -1;
        }
        if (r->answered != (r->request == NULL) || r->answered != (r->push != NULL) ||
            (r->answered && r->awaiters != NULL)) {
            snprintf(detail, detail_len, "request %s: answered, copy, push line and awaiters disagree",
                     r->event_id);
            return -1;
        }
        for (const cs_awaiter_t *aw = r->awaiters; aw != NULL; aw = aw->next)
            if (aw->req != r) {
                snprintf(detail, detail_len, "an awaiter of %s points elsewhere", r->event_id);
                return -1;
            }
        if (!r->answered && r->task_id != NULL && cs_hitl_open_for_task(h, r->task_id) == NULL) {
            snprintf(detail, detail_len, "open request %s not in the task index", r->event_id);
            return -1;
        }
    }
    for (const cs_hitl_req_t *r = h->open; r != NULL; r = r->onext) {
        n_open++;
        open_bytes += r->bytes;
        if (r->answered) {
            snprintf(detail, detail_len, "answered request %s on the open list", r->event_id);
            return -1;
        }
    }
    if (n != h->n || n_open != h->n_open || bytes != h->bytes || open_bytes != h->open_bytes ||
        HASH_CNT(hh, h->ids) != n) {
        snprintf(detail, detail_len, "requests: %zu/%zu open %zu/%zu bytes %zu/%zu open bytes %zu/%zu", n,
                 h->n, n_open, h->n_open, bytes, h->bytes, open_bytes, h->open_bytes);
        return -1;
    }
    return 0;
}
