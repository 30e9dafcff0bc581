/*
 * hitl.c - see hitl.h.
 */
#include "hitl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <utlist.h>

#include "event.h"

static void req_free(cs_hitl_t *h, cs_hitl_req_t *r)
{
    while (r->awaiters != NULL)
        cs_hitl_unawait(r->awaiters);
    DL_DELETE(h->reqs, r);
    h->n--;
    if (!r->answered)
        h->n_open--;
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
    cs_hitl_req_t *r = calloc(1, sizeof(*r));

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
    /* The copy of the request is a jansson tree: about twice its text (a node per value, a hash
     * table per object), counted so that store.max_bytes bounds open requests too. */
    r->request_bytes = 2 * text_len;
    r->bytes =
        sizeof(*r) + strlen(r->event_id) + (r->task_id ? strlen(r->task_id) : 0) + 256 + r->request_bytes;
    DL_APPEND(h->reqs, r);
    h->n++;
    h->n_open++;
    h->bytes += r->bytes;
    return 0;
}

cs_hitl_req_t *cs_hitl_find(const cs_hitl_t *h, const char *event_id)
{
    for (cs_hitl_req_t *r = h->reqs; r != NULL; r = r->next)
        if (strcmp(r->event_id, event_id) == 0)
            return r;
    return NULL;
}

cs_hitl_req_t *cs_hitl_open_for_task(const cs_hitl_t *h, const char *task_id)
{
    cs_hitl_req_t *found = NULL;
    for (cs_hitl_req_t *r = h->reqs; r != NULL; r = r->next)
        if (!r->answered && (task_id == NULL || (r->task_id != NULL && strcmp(r->task_id, task_id) == 0)))
            found = r; /* the latest one: a retry loop asks again for the same task */
    return found;
}

static void deliver(cs_hitl_req_t *r, cs_awaiter_t *aw)
{
    aw->req = NULL;
    aw->push(aw, r->push, r->push_len);
}

cs_hitl_req_t *cs_hitl_on_completed(cs_hitl_t *h, const char *execution_id, const json_t *ev, uint64_t seq)
{
    const char *rid = json_string_value(json_object_get(ev, "request_event_id"));
    const char *eid = json_string_value(json_object_get(ev, "event_id"));
    const char *task = json_string_value(json_object_get(ev, "task_id"));
    cs_hitl_req_t *r = NULL;
    json_t *push;
    char *line;

    if (rid != NULL)
        r = cs_hitl_find(h, rid);
    if (r == NULL && rid == NULL && eid != NULL)
        r = cs_hitl_find(h, eid);
    if (r == NULL && rid == NULL)
        r = cs_hitl_open_for_task(h, task);
    if (r == NULL || r->answered)
        return r;

    json_t *fb = json_object_get(ev, "human_feedback");
    json_t *ok = json_object_get(ev, "is_approve");
    push = json_pack("{s:s, s:s, s:s, s:s?, s:O?, s:O?, s:s, s:I}", "op", "human_input", "execution_id",
                     execution_id, "request_event_id", r->event_id, "task_id",
                     task != NULL ? task : r->task_id, "human_feedback", fb, "is_approve", ok, "event_id",
                     eid != NULL ? eid : "", "seq", (json_int_t)seq);
    line = push != NULL ? json_dumps(push, JSON_COMPACT) : NULL;
    json_decref(push);
    if (line == NULL)
        return r; /* out of memory: the request stays open, a retry of the answer can close it */
    size_t n = strlen(line);
    char *pl = malloc(n + 2);
    if (pl == NULL) {
        free(line);
        return r;
    }
    memcpy(pl, line, n);
    free(line);
    r->push = pl;
    r->push[n] = '\n';
    r->push[n + 1] = '\0';
    r->push_len = n + 1;
    r->answered = 1;
    h->n_open--;
    /* Answered, a request is kept (an answer is never lost while its execution is: SPEC §3) at the
     * cost of its ids and push line; the copy of the request goes. store.max_bytes bounds them all. */
    json_decref(r->request);
    r->request = NULL;
    r->bytes = r->bytes - r->request_bytes + n;
    h->bytes = h->bytes - r->request_bytes + n;
    r->request_bytes = 0;
    while (r->awaiters != NULL) {
        cs_awaiter_t *aw = r->awaiters;
        DL_DELETE(r->awaiters, aw);
        deliver(r, aw);
    }
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
