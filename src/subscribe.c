/*
 * subscribe.c - see subscribe.h.
 */
#include "subscribe.h"

#include <stdio.h>
#include <string.h>

#include "err.h"
#include "event.h"

int cs_subscribe_check(cs_daemon_t *d, const cs_route_t *rt, const char *token, cs_lookup_fn arg,
                       cs_lookup_fn hdr, void *ctx, cs_sub_req_t *req, cs_principal_t *who, char *detail,
                       size_t detail_len)
{
    int global = rt->kind == CS_ROUTE_GLOBAL_SSE;
    cs_auth_result_t ar = cs_auth_check(d->auth, token, CS_SCOPE_READ, global ? NULL : rt->execution_id, who);

    if (ar != CS_AUTH_OK) {
        snprintf(detail, detail_len, "%s",
                 ar == CS_AUTH_FORBIDDEN && global
                     ? "the all-executions stream needs a token with read on \"*\""
                     : cs_err_detail(ar));
        return ar;
    }
    if (cs_sub_req_parse(req, rt->kind, arg, hdr, ctx, detail, detail_len) != 0)
        return CS_ERR_BAD_REQUEST;
    return CS_OK;
}

int cs_subscribe_open(cs_daemon_t *d, const cs_route_t *rt, cs_sub_req_t *req, cs_sub_t *sub,
                      const cs_sub_ops_t *ops, void *data)
{
    if (rt->kind == CS_ROUTE_GLOBAL_SSE)
        return cs_sub_open(d->store, sub, NULL, 0, &req->start, &req->filter, ops, data);
    return cs_sub_open(d->store, sub, rt->execution_id, rt->execution_id_len, &req->start, &req->filter, ops,
                       data);
}

int cs_take_answer(cs_daemon_t *d, const json_t *o, const char *x, size_t xlen, int may_respond,
                   const char *who, const cs_store_done_t *done, cs_publish_t *pub, char *detail,
                   size_t detail_len)
{
    cs_answer_t a;
    cs_err_t e;

    if (!may_respond) {
        snprintf(detail, detail_len, "answering needs a token with respond on this execution");
        return CS_ERR_FORBIDDEN;
    }
    if ((e = cs_answer_from_json(o, &a, detail, detail_len)) != CS_OK)
        return e;
    /* Who answered, for dashboards: the token's name; nobody when auth is open. */
    a.answered_by = who != NULL && strcmp(who, "anonymous") != 0 ? who : NULL;
    return cs_answer_submit(d->store, x, xlen, &a, cs_unix_ms(), done, pub, detail, detail_len);
}

char *cs_take_answer_ack(const char *x, size_t xlen, const cs_publish_t *pub, int ws)
{
    json_t *r =
        ws ? json_pack("{s:s, s:s%, s:s, s:I, s:s}", "type", "ack", "execution_id", x, xlen, "event_id",
                       pub->event_id, "seq", (json_int_t)pub->seq, "request_event_id", pub->request_event_id)
           : json_pack("{s:b, s:s%, s:s, s:I, s:s}", "ok", 1, "execution_id", x, xlen, "event_id",
                       pub->event_id, "seq", (json_int_t)pub->seq, "request_event_id", pub->request_event_id);
    char *s = r != NULL ? json_dumps(r, JSON_COMPACT) : NULL;

    json_decref(r);
    return s;
}
