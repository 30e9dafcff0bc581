/*
 * route.c - see route.h.
 */
#include "route.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cursor.h"

typedef struct route_def {
    const char *prefix; /* up to the execution id, or the whole path */
    const char *suffix; /* after the id; NULL when the route has no id */
    cs_route_kind_t kind;
    unsigned methods;
} route_def_t;

static const route_def_t routes[] = {
    {"/", NULL, CS_ROUTE_DASHBOARD, CS_METHOD_GET},
    {"/health", NULL, CS_ROUTE_HEALTH, CS_METHOD_GET},
    {"/metrics", NULL, CS_ROUTE_METRICS, CS_METHOD_GET},
    {"/favicon.ico", NULL, CS_ROUTE_FAVICON, CS_METHOD_GET},
    {"/v1/events", NULL, CS_ROUTE_GLOBAL_SSE, CS_METHOD_GET | CS_METHOD_POST},
    {"/resume", NULL, CS_ROUTE_RESUME, CS_METHOD_POST},
    {"/ws/human-input/", "", CS_ROUTE_HITL_WS, CS_METHOD_GET},
    {"/events/human-input/", "", CS_ROUTE_HITL_SSE, CS_METHOD_GET},
    {"/poll/human-input/", "", CS_ROUTE_HITL_POLL, CS_METHOD_GET},
    {"/v1/executions/", "/events", CS_ROUTE_EXEC_SSE, CS_METHOD_GET},
    {"/v1/executions/", "/ws", CS_ROUTE_EXEC_WS, CS_METHOD_GET},
    {"/v1/executions/", "/poll", CS_ROUTE_EXEC_POLL, CS_METHOD_GET},
    {"/v1/executions/", "/human-input", CS_ROUTE_EXEC_ANSWER, CS_METHOD_POST},
    {"/v1/executions", NULL, CS_ROUTE_EXECS_LIST, CS_METHOD_GET},
    {"/v1/webhooks", NULL, CS_ROUTE_WEBHOOKS, CS_METHOD_GET},
    {"/v1/executions/", "", CS_ROUTE_EXEC_STATUS, CS_METHOD_GET},
    /* Seed 003's names for the same streams. */
    {"/v1/runs/", "/events", CS_ROUTE_EXEC_SSE, CS_METHOD_GET},
    {"/v1/runs/", "/ws", CS_ROUTE_EXEC_WS, CS_METHOD_GET},
    {"/v1/runs/", "/poll", CS_ROUTE_EXEC_POLL, CS_METHOD_GET},
    /* The crew gateway (SPEC §9). */
    {"/inputs", NULL, CS_ROUTE_INPUTS, CS_METHOD_GET},
    {"/kickoff", NULL, CS_ROUTE_KICKOFF, CS_METHOD_POST},
    {"/v1/crews", NULL, CS_ROUTE_CREWS, CS_METHOD_GET},
    {"/", "/status", CS_ROUTE_SEED_STATUS, CS_METHOD_GET},
};

cs_route_kind_t cs_route_match(const char *path, size_t len, cs_route_t *r)
{
    memset(r, 0, sizeof(*r));
    /* A trailing slash names the same resource ("/health/"). */
    if (len > 1 && path[len - 1] == '/')
        len--;
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        const route_def_t *d = &routes[i];
        size_t pl = strlen(d->prefix);
        if (d->suffix == NULL) {
            if (len == pl && memcmp(path, d->prefix, pl) == 0) {
                r->kind = d->kind;
                r->methods = d->methods;
                return r->kind;
            }
            continue;
        }
        size_t sl = strlen(d->suffix);
        if (len <= pl + sl || memcmp(path, d->prefix, pl) != 0 || memcmp(path + len - sl, d->suffix, sl) != 0)
            continue;
        const char *id = path + pl;
        size_t id_len = len - pl - sl;
        if (memchr(id, '/', id_len) != NULL)
            continue;
        r->kind = d->kind;
        r->methods = d->methods;
        if (!cs_valid_execution_id(id, id_len)) {
            r->bad_id = 1;
            return r->kind;
        }
        memcpy(r->execution_id, id, id_len);
        r->execution_id[id_len] = '\0';
        r->execution_id_len = id_len;
        return r->kind;
    }
    return CS_ROUTE_NONE;
}

int cs_route_is_ws(cs_route_kind_t k)
{
    return k == CS_ROUTE_HITL_WS || k == CS_ROUTE_EXEC_WS;
}

int cs_route_is_hitl(cs_route_kind_t k)
{
    return k == CS_ROUTE_HITL_WS || k == CS_ROUTE_HITL_SSE || k == CS_ROUTE_HITL_POLL;
}

int cs_route_is_poll(cs_route_kind_t k)
{
    return k == CS_ROUTE_HITL_POLL || k == CS_ROUTE_EXEC_POLL;
}

const char *cs_route_allow(unsigned methods)
{
    switch (methods & (CS_METHOD_GET | CS_METHOD_POST)) {
    case CS_METHOD_GET:
        return "GET, OPTIONS";
    case CS_METHOD_POST:
        return "POST, OPTIONS";
    default:
        return "GET, POST, OPTIONS";
    }
}

static int parse_bool(const char *v, int *out)
{
    if (strcmp(v, "1") == 0 || strcmp(v, "true") == 0) {
        *out = 1;
        return 0;
    }
    if (strcmp(v, "0") == 0 || strcmp(v, "false") == 0) {
        *out = 0;
        return 0;
    }
    return -EINVAL;
}

int cs_sub_req_parse(cs_sub_req_t *req, cs_route_kind_t kind, cs_lookup_fn arg, cs_lookup_fn hdr, void *ctx,
                     char *err, size_t errlen)
{
    const char *v, *resume = NULL;
    uint64_t seq;

    memset(req, 0, sizeof(*req));
    req->start.kind = CS_START_HISTORY;
    req->timeout_s = kind == CS_ROUTE_EXEC_POLL ? 25 : 0;

    if (cs_route_is_hitl(kind)) {
        if (cs_filter_parse(&req->filter, "human_input_*", err, errlen) != 0)
            return -EINVAL;
    } else if ((v = arg(ctx, "types")) != NULL) {
        if (cs_filter_parse(&req->filter, v, err, errlen) != 0)
            goto fail;
    }
    if ((v = arg(ctx, "named")) != NULL && parse_bool(v, &req->named) != 0) {
        snprintf(err, errlen, "named: expected 1, 0, true or false");
        goto fail;
    }
    if ((v = arg(ctx, "timeout")) != NULL) {
        if (cs_seq_parse(v, strlen(v), &seq) != 0 || seq > 60) {
            snprintf(err, errlen, "timeout: expected whole seconds from 0 to 60");
            goto fail;
        }
        req->timeout_s = (int)seq;
    }
    if ((v = arg(ctx, "since")) != NULL && strcmp(v, "now") != 0) {
        snprintf(err, errlen, "since: the only value is \"now\" (use since_seq=N or last_event_id=ID)");
        goto fail;
    }
    if (v != NULL)
        req->start.kind = CS_START_NOW;
    if ((v = arg(ctx, "last_event_id")) != NULL && v[0] != '\0')
        resume = v;
    if ((v = arg(ctx, "since_seq")) != NULL) {
        if (cs_seq_parse(v, strlen(v), &seq) != 0) {
            snprintf(err, errlen, "since_seq: expected a non-negative integer");
            goto fail;
        }
        req->start.kind = CS_START_AFTER_SEQ;
        req->start.seq = seq;
        resume = NULL;
    }
    if (hdr != NULL && (v = hdr(ctx, "Last-Event-ID")) != NULL && v[0] != '\0')
        resume = v;
    if (resume != NULL) {
        size_t n = strlen(resume);
        if (n > 2 * CS_EVENT_ID_MAX) {
            snprintf(err, errlen, "last_event_id: longer than any id or cursor (%d bytes)",
                     2 * CS_EVENT_ID_MAX);
            goto fail;
        }
        req->start_id = strdup(resume);
        if (req->start_id == NULL) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        req->start.kind = CS_START_AFTER_ID;
        req->start.id = req->start_id;
        req->start.id_len = n;
    }
    return 0;

fail:
    cs_sub_req_free(req);
    return -EINVAL;
}

void cs_sub_req_free(cs_sub_req_t *req)
{
    cs_filter_free(&req->filter);
    free(req->start_id);
    req->start_id = NULL;
}
