/*
 * http.c - see http.h.
 *
 * Every request gets an http_req_t. Most SSE streams never come here (sse.c
 * writes them natively); the ones that do - HTTP/1.0, unusual heads - are a
 * callback response whose reader copies the stream's body (sse.c) into MHD's buffer
 * until the subscriber is caught up, then parks the subscriber and suspends the
 * connection; a publish wakes it (resume + MHD_run before sleeping: resuming
 * wakes nothing in external-epoll mode). A held long-poll suspends without a
 * response and is answered when the handler runs again after its resume.
 * While suspended, a connection is invisible to MHD's epoll set, so we watch
 * its fd for hang-ups ourselves; we watch it while not suspended too, because
 * MHD misses a FIN that came with the last request (see on_conn_io).
 *
 * A request with a body is checked (route, method, token, scope, Content-Length
 * against the route's limit) on the handler's first call, before any of the
 * body is read, and refused there; only a request that passes has its body
 * buffered, up to the route's limit.
 */
#include "http.h"

#include <errno.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>
#include <utlist.h>

#include "buf.h"
#include "cluster.h"
#include "err.h"
#include "event.h"
#include "gateway.h"
#include "httputil.h"
#include "ingest.h"
#include "listener.h"
#include "log.h"
#include "persist.h"
#include "route.h"
#include "webhook.h"
#include "sse_body.h"
#include "subscribe.h"
#include "transport.h"
#include "web.h"
#include "ws.h"

/*
 * The response buffer MHD allocates (zeroed) for every SSE stream. With chunked encoding (every
 * HTTP/1.1 client) the reader writes into the connection's pool instead, so this only bounds the
 * writes of HTTP/1.0 streams: 16 KiB here cost 15 KiB of RSS per idle connection.
 */
#define SSE_BLOCK    256
#define CORS_METHODS "GET, POST, OPTIONS"
#define CORS_HEADERS "Authorization, Content-Type, Last-Event-ID, Cache-Control"

/* REQ_WAIT: a POST whose reply waits for the store's confirmation of what it published (CS_PENDING: the
 * journal), suspended until the last one came. */
/* REQ_STATUS: cluster mode, a status read of an execution this node holds no event of, suspended while
 * its history is read from Redis (a held subscriber: docs/cluster.md "History older than the ring"). */
typedef enum req_kind { REQ_PLAIN = 0, REQ_SSE, REQ_POLL, REQ_WAIT, REQ_STATUS } req_kind_t;

typedef struct http_req http_req_t;
typedef struct http_conn http_conn_t;

/* One published line (or an answer) of a POST whose outcome the store confirms later. */
typedef struct http_wait {
    http_req_t *q;
    uint64_t ticket; /* 0 once its outcome came (or it was forgotten) */
    size_t at;       /* POST /v1/events: where its reply goes among the replies given at once (q->replies) */
    cs_store_done_t done;
    cs_err_t e;       /* the outcome */
    cs_publish_t pub; /* an answer's, for its ack */
    char detail[300]; /* an answer's error */
    cs_buf_t text;    /* POST /v1/events: its reply line */
} http_wait_t;

struct cs_http {
    cs_daemon_t *d;
    struct MHD_Daemon *mhd;
    cs_io_t io;
    int dirty;
    size_t conns;
    http_req_t *streams; /* SSE streams, long-polls and POSTs waiting for the store (DL list) */
    int destroying;      /* http_destroy: waiting POSTs answer 503 */
};

struct http_req {
    cs_http_t *h;
    struct MHD_Connection *con;
    req_kind_t kind;
    cs_route_t route;
    cs_sub_req_t sreq;
    cs_sub_t sub;
    int sub_open;
    int started;      /* the handler has decided what this request is */
    int nul;          /* the target decoded to a NUL byte (%00) */
    uint64_t clen;    /* Content-Length, 0 when absent */
    size_t limit;     /* the most body bytes this request may send (body_limit) */
    size_t body_seen; /* bytes of the body received, kept or not */
    cs_buf_t body;    /* a POST body that passed the checks: at most its Content-Length, or limit */
    int suspended;
    int dead; /* the client left, or we are ending the stream */
    int listed;
    cs_sse_body_t out; /* SSE output */
    int64_t last_write;
    /* Long-poll. */
    cs_timer_t timer;
    int timed_out;
    /* REQ_WAIT: the outcomes it waits for (lines of POST /v1/events, or one answer) and what its reply
     * is made of once they are in. */
    http_wait_t *waits;
    size_t n_waits, n_waiting;       /* entries used; outcomes still to come */
    cs_buf_t replies;                /* POST /v1/events: the replies of the lines answered at once */
    size_t lines;                    /* its lines */
    cs_err_t last;                   /* the last line's code, for a one-line body's status */
    int answer;                      /* an answer route: the reply is an ack (or the error) */
    char x[CS_EXECUTION_ID_MAX + 1]; /* its execution */
    http_conn_t *conn;               /* its connection, NULL when out of memory */
    http_req_t *prev, *next;
};

/* One per libmicrohttpd connection (its socket context), for the connection's life. */
struct http_conn {
    cs_http_t *h;
    struct MHD_Connection *con;
    http_req_t *q; /* the request in progress, or NULL */
    cs_io_t io;    /* EPOLLRDHUP on the connection's fd, in our loop */
    int watching;
    int nul; /* MHD's unescaping of the request target produced a NUL byte (%00) */
};

/* ---- small helpers ---- */

static void add_cors(cs_http_t *h, struct MHD_Connection *con, struct MHD_Response *r)
{
    const char *origin = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Origin");
    int vary;
    const char *allow = cs_cors_allow(h->d->cfg, origin, origin ? strlen(origin) : 0, &vary);

    if (allow == NULL)
        return;
    MHD_add_response_header(r, "Access-Control-Allow-Origin", allow);
    if (vary)
        MHD_add_response_header(r, "Vary", "Origin");
}

/* Queues a whole response: body (freed here when mode is MHD_RESPMEM_MUST_FREE, even on failure), its
 * content type, a cache policy, CORS, and one optional extra header. */
static enum MHD_Result queue_body(cs_http_t *h, struct MHD_Connection *con, unsigned status, void *body,
                                  size_t len, enum MHD_ResponseMemoryMode mode, const char *ctype,
                                  const char *hname, const char *hvalue)
{
    struct MHD_Response *r;
    enum MHD_Result ret;

    if (body == NULL && len > 0)
        return MHD_NO; /* out of memory: MHD closes the connection */
    r = MHD_create_response_from_buffer(len, body, mode);
    if (r == NULL) {
        if (mode == MHD_RESPMEM_MUST_FREE)
            free(body);
        return MHD_NO;
    }
    if (ctype != NULL)
        MHD_add_response_header(r, "Content-Type", ctype);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    if (hname != NULL)
        MHD_add_response_header(r, hname, hvalue);
    add_cors(h, con, r);
    ret = MHD_queue_response(con, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result queue_json(cs_http_t *h, struct MHD_Connection *con, unsigned status, char *body,
                                  size_t len, const char *hname, const char *hvalue)
{
    if (body == NULL)
        return MHD_NO;
    return queue_body(h, con, status, body, len, MHD_RESPMEM_MUST_FREE, "application/json", hname, hvalue);
}

/* Answers an error value (err.h) with its status and JSON body: detail, or the code's own when NULL. A
 * 401 says WWW-Authenticate: Bearer; hname/hvalue add one more header (Allow, Upgrade). */
static enum MHD_Result queue_err(cs_http_t *h, struct MHD_Connection *con, int err, const char *detail,
                                 const char *hname, const char *hvalue)
{
    size_t len;
    char *body = cs_err_json(err, detail, &len);
    unsigned status = cs_err_http_status(err);

    if (status == 401 && hname == NULL) {
        hname = "WWW-Authenticate";
        hvalue = "Bearer";
    }
    return queue_json(h, con, status, body, len, hname, hvalue);
}

static enum MHD_Result queue_errf(cs_http_t *h, struct MHD_Connection *con, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static enum MHD_Result queue_errf(cs_http_t *h, struct MHD_Connection *con, int err, const char *fmt, ...)
{
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    return queue_err(h, con, err, detail, NULL, NULL);
}

static const char *lookup_arg(void *ctx, const char *name)
{
    return MHD_lookup_connection_value(ctx, MHD_GET_ARGUMENT_KIND, name);
}

static const char *lookup_header(void *ctx, const char *name)
{
    return MHD_lookup_connection_value(ctx, MHD_HEADER_KIND, name);
}

/* The presented token (cs_auth_request_token), copied into buf. */
static const char *request_token(struct MHD_Connection *con, char *buf, size_t buflen)
{
    return cs_auth_request_token(MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Authorization"),
                                 MHD_lookup_connection_value(con, MHD_GET_ARGUMENT_KIND, "token"), buf,
                                 buflen);
}

/* ---- suspend / resume ---- */

static void conn_watch(http_conn_t *c)
{
    if (c != NULL && !c->watching)
        c->watching = cs_io_start(&c->io, CS_IO_RDHUP) == 0;
}

static void req_suspend(http_req_t *q)
{
    if (q->suspended)
        return;
    MHD_suspend_connection(q->con);
    q->suspended = 1;
    /* The watch stops once it has fired; level-triggered, it fires again at once if the client has
     * already gone. */
    conn_watch(q->conn);
}

static void req_resume(http_req_t *q)
{
    if (!q->suspended)
        return;
    q->suspended = 0;
    MHD_resume_connection(q->con);
    q->h->dirty = 1;
}

static void on_hup(http_req_t *q)
{
    q->dead = 1;
    if (q->sub_open)
        cs_sub_unpark(&q->sub);
    req_resume(q);
}

/*
 * The client has shut its side (or the connection broke). A suspended request ends (an SSE stream
 * stops, a held poll answers with what it has). Otherwise MHD must see the end of stream itself, but
 * in external-epoll mode it does not when the FIN came with the last request: its sockets are
 * edge-triggered and it stops reading at a short read, so it waits for an edge that never comes and
 * the connection sits in CLOSE-WAIT until limits.stall_s, counted against limits.max_clients. A
 * suspend and resume marks the connection readable (MHD assumes it missed an edge while suspended):
 * once it has answered what it has read, it reads again, gets the EOF and closes the connection.
 */
static void on_conn_io(cs_io_t *io, uint32_t events)
{
    http_conn_t *c = io->data;
    (void)events;

    cs_io_stop(io);
    c->watching = 0;
    if (c->q != NULL && c->q->suspended) {
        on_hup(c->q);
        return;
    }
    /* Not suspended by us (a resume still pending is cancelled by the suspend and made again). */
    MHD_suspend_connection(c->con);
    MHD_resume_connection(c->con);
    c->h->dirty = 1;
}

static void sub_wake(cs_sub_t *sub)
{
    req_resume(sub->data);
}

static const cs_sub_ops_t sub_ops = {sub_wake};

/* ---- SSE ---- */

static ssize_t sse_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    http_req_t *q = cls;
    size_t n;
    (void)pos;

    if (q->dead)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (q->out.nparts == 0 && cs_sub_history_lost(&q->sub))
        return MHD_CONTENT_READER_END_OF_STREAM; /* (logged and counted by the cluster) the client resumes */
    n = cs_sse_body_fill(&q->out, &q->sub, buf, max);
    if (n > 0) {
        q->last_write = cs_loop_now(q->h->d->loop);
        return (ssize_t)n;
    }
    /* Caught up: sleep until a publish, a heartbeat, or a hang-up. */
    cs_sub_park(&q->sub);
    req_suspend(q);
    return 0;
}

static enum MHD_Result start_sse(cs_http_t *h, http_req_t *q)
{
    struct MHD_Response *r;
    enum MHD_Result ret;

    r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, SSE_BLOCK, sse_reader, q, NULL);
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", "text/event-stream; charset=utf-8");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    add_cors(h, q->con, r);
    q->kind = REQ_SSE;
    q->last_write = cs_loop_now(h->d->loop);
    ret = MHD_queue_response(q->con, 200, r);
    MHD_destroy_response(r);
    return ret;
}

/* ---- long-poll ---- */

static void on_poll_timeout(cs_timer_t *t)
{
    http_req_t *q = t->data;
    q->timed_out = 1;
    if (q->sub_open)
        cs_sub_unpark(&q->sub);
    req_resume(q);
}

/* Answers a body built in b (freed here): 200 with it, or 500 when building it failed (rc). */
static enum MHD_Result queue_built(cs_http_t *h, struct MHD_Connection *con, cs_buf_t *b, int rc,
                                   const char *ctype)
{
    size_t len;
    char *body;

    if (rc != 0) {
        cs_buf_free(b);
        cs_log_warn("http: cannot build an answer (%s): 500", strerror(-rc));
        return queue_err(h, con, CS_ERR_INTERNAL, rc == -ENOMEM ? NULL : "the answer grew past its maximum",
                         NULL, NULL);
    }
    body = cs_buf_steal(b, &len);
    return queue_body(h, con, 200, body, len, MHD_RESPMEM_MUST_FREE, ctype, NULL, NULL);
}

/* Collects what the subscriber has; answers and returns 1, or returns 0 when there is nothing yet. */
static int poll_try_answer(cs_http_t *h, http_req_t *q, int force, enum MHD_Result *ret)
{
    /* No maximum of its own: it holds at most what the execution's ring retains (store.ring_bytes,
     * store.ring_events), which bounds it already. */
    cs_buf_t b = {0};
    int rc = 0;
    cs_item_t it;
    int count = 0, gap = 0;
    uint64_t gap_first = 0;
    char cur[CS_CURSOR_MAX];
    uint64_t seq;

    if (cs_sub_history_lost(&q->sub)) {
        /* Cluster: what it resumes from is older than this node's ring and Redis could not be read. */
        *ret = queue_err(h, q->con, CS_ERR_UNAVAILABLE,
                         "cluster: the history before this node's ring could not be read from Redis: retry",
                         NULL, NULL);
        return 1;
    }
    if (cs_sub_held(&q->sub)) {
        if (!force)
            return 0;
        if (q->timed_out)
            cs_log_warn("http: a long-poll's history was still being read from Redis at its deadline: 503");
        *ret = queue_err(h, q->con, CS_ERR_UNAVAILABLE,
                         "cluster: the history before this node's ring is still being read from Redis: retry",
                         NULL, NULL);
        return 1;
    }
    if (!force && !cs_sub_has_next(&q->sub))
        return 0;
    /* last_event_id names the last event returned, or, with none, the position asked from. */
    seq = cs_sub_position(&q->sub, cur, sizeof(cur));
    rc |= cs_buf_puts(&b, "{\"events\":[");
    while (cs_sub_next(&q->sub, &it)) {
        if (it.frame == NULL) {
            gap = 1;
            gap_first = it.gap_first;
            continue;
        }
        if (count++ > 0)
            rc |= cs_buf_puts(&b, ",");
        rc |= cs_buf_append(&b, it.frame->json, it.frame->json_len);
        seq = it.frame->seq;
        cs_sub_cursor(&q->sub, seq, cur, sizeof(cur));
    }
    if (gap && count == 0) /* only a gap (a history that ended, cluster): the position after it */
        seq = cs_sub_position(&q->sub, cur, sizeof(cur));
    if (seq > 0)
        rc |= cs_buf_printf(&b, "],\"last_event_id\":\"%s\",\"last_seq\":%llu", cur, (unsigned long long)seq);
    else
        rc |= cs_buf_puts(&b, "],\"last_event_id\":null,\"last_seq\":0");
    if (gap)
        rc |= cs_buf_printf(&b, ",\"gap\":true,\"first_seq\":%llu", (unsigned long long)gap_first);
    rc |= cs_buf_puts(&b, "}");
    /* The errors are all -ENOMEM (there is no maximum): one of them stands for the others. */
    *ret = queue_built(h, q->con, &b, rc != 0 ? -ENOMEM : 0, "application/json");
    return 1;
}

/* ---- requests ---- */

static void req_list(cs_http_t *h, http_req_t *q)
{
    if (!q->listed) {
        DL_APPEND(h->streams, q);
        q->listed = 1;
    }
}

static enum MHD_Result handle_stream(cs_http_t *h, http_req_t *q, struct MHD_Connection *con)
{
    cs_daemon_t *d = h->d;
    cs_route_t *rt = &q->route;
    char tokbuf[CS_TOKEN_BUF], err[256];
    int rc;

    rc = cs_subscribe_check(d, rt, request_token(con, tokbuf, sizeof(tokbuf)), lookup_arg, lookup_header, con,
                            &q->sreq, NULL, err, sizeof(err));
    if (rc != 0)
        return queue_err(h, con, rc, err, NULL, NULL);
    if ((rc = cs_subscribe_open(d, rt, &q->sreq, &q->sub, &sub_ops, q)) != 0)
        return queue_err(h, con, rc, NULL, NULL, NULL);
    q->sub_open = 1;
    cs_sse_body_init(&q->out, d->store, cs_route_is_hitl(rt->kind), rt->kind == CS_ROUTE_GLOBAL_SSE,
                     q->sreq.named);
    req_list(h, q);

    if (!cs_route_is_poll(rt->kind))
        return start_sse(h, q);

    q->kind = REQ_POLL;
    enum MHD_Result ret;
    int held = cs_sub_held(&q->sub); /* cluster: its older history is being read from Redis */
    if (poll_try_answer(h, q, (q->sreq.timeout_s == 0 && !held) || d->stopping, &ret))
        return ret;
    /* Nothing yet: hold until a publish or the deadline (a held one: at least until Redis' timeout). */
    cs_timer_init(&q->timer, d->loop, on_poll_timeout, q);
    cs_timer_start(&q->timer, (int64_t)q->sreq.timeout_s * 1000 < 3000 && held
                                  ? 3000
                                  : (int64_t)q->sreq.timeout_s * 1000);
    cs_sub_park(&q->sub);
    req_suspend(q);
    return MHD_YES;
}

/* ---- execution status ---- */

typedef struct list_ctx {
    cs_exec_t **v;
    size_t n, cap;
    int oom; /* the list could not grow: answered 500, not a shorter list */
    const cs_principal_t *who;
    const char *status;
} list_ctx_t;

static void list_one(cs_exec_t *ex, void *data)
{
    list_ctx_t *l = data;
    if (!cs_auth_principal_allows(l->who, cs_exec_id(ex, NULL)))
        return;
    if (l->status != NULL && strcmp(l->status, cs_status_name(cs_exec_status(ex))) != 0)
        return;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        cs_exec_t **v = realloc(l->v, cap * sizeof(*v));
        if (v == NULL) {
            l->oom = 1;
            return;
        }
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = ex;
}

static int newest_first(const void *a, const void *b)
{
    const cs_exec_t *x = *(cs_exec_t *const *)a, *y = *(cs_exec_t *const *)b;
    uint64_t xo = cs_exec_first_order(x), yo = cs_exec_first_order(y);
    if (xo != yo)
        return xo > yo ? -1 : 1;
    return strcmp(cs_exec_id(x, NULL), cs_exec_id(y, NULL));
}

static enum MHD_Result send_json_value(cs_http_t *h, struct MHD_Connection *con, json_t *v)
{
    char *body = v != NULL ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    return queue_json(h, con, 200, body, body ? strlen(body) : 0, NULL, NULL);
}

static enum MHD_Result send_status(cs_http_t *h, http_req_t *q)
{
    cs_route_t *rt = &q->route;
    return send_json_value(h, q->con,
                           cs_store_status_json(h->d->store, rt->execution_id, rt->execution_id_len,
                                                rt->kind != CS_ROUTE_EXEC_STATUS));
}

/* Cluster mode: an execution this node holds no event of may be in Redis. A subscriber opened on it (from
 * now on, nothing handed out) is held while its history is read and taken into the ring; the read is
 * waited for (suspended, at most STATUS_WAIT_MS), then the status is answered as the ring has it. Returns
 * 1 when the request is suspended so. */
#define STATUS_WAIT_MS 3000
static int status_wait(cs_http_t *h, http_req_t *q)
{
    cs_daemon_t *d = h->d;
    cs_route_t *rt = &q->route;
    cs_exec_t *ex;
    uint64_t first = 1, next = 1;
    cs_start_t start = {.kind = CS_START_NOW};
    cs_filter_t none = {0};

    if (d->cluster == NULL || d->stopping || cs_cluster_degraded(d->cluster, NULL))
        return 0; /* (Redis away: answered at once with what this node holds, as before it held reads) */
    if ((ex = cs_store_find(d->store, rt->execution_id, rt->execution_id_len)) != NULL)
        cs_exec_seqs(ex, &first, &next);
    if (next > 1 || cs_sub_open(d->store, &q->sub, rt->execution_id, rt->execution_id_len, &start, &none,
                                &sub_ops, q) != 0)
        return 0;
    q->sub_open = 1;
    if (!cs_sub_held(&q->sub))
        return 0;
    q->kind = REQ_STATUS;
    req_list(h, q);
    cs_timer_init(&q->timer, d->loop, on_poll_timeout, q);
    cs_timer_start(&q->timer, STATUS_WAIT_MS);
    cs_sub_park(&q->sub);
    req_suspend(q);
    return 1;
}

/* GET /v1/executions, GET /v1/executions/{id}, GET /{id}/status. */
static enum MHD_Result handle_status(cs_http_t *h, http_req_t *q, struct MHD_Connection *con)
{
    char tokbuf[CS_TOKEN_BUF];
    cs_principal_t who;
    cs_route_t *rt = &q->route;
    cs_auth_result_t ar = cs_auth_identify(h->d->auth, request_token(con, tokbuf, sizeof(tokbuf)), &who);

    if (ar == CS_AUTH_OK)
        ar = cs_auth_authorize(&who, CS_SCOPE_READ, rt->kind == CS_ROUTE_EXECS_LIST ? "" : rt->execution_id);
    if (ar != CS_AUTH_OK &&
        !(rt->kind == CS_ROUTE_EXECS_LIST && ar == CS_AUTH_FORBIDDEN && (who.scopes & CS_SCOPE_READ) != 0))
        return queue_err(h, con, ar, NULL, NULL, NULL);
    if (rt->kind != CS_ROUTE_EXECS_LIST) {
        if (status_wait(h, q))
            return MHD_YES;
        return send_status(h, q);
    }

    /* The list: what the token may read, newest first. */
    const char *st = lookup_arg(con, "status"), *lim = lookup_arg(con, "limit");
    uint64_t limit = 100;
    if (st != NULL && cs_status_parse(st) < 0)
        return queue_err(h, con, CS_ERR_BAD_REQUEST,
                         "status: one of pending, running, pending_human_input, completed, error, canceled",
                         NULL, NULL);
    if (lim != NULL && (cs_seq_parse(lim, strlen(lim), &limit) != 0 || limit < 1 || limit > 1000))
        return queue_err(h, con, CS_ERR_BAD_REQUEST, "limit: expected an integer from 1 to 1000", NULL, NULL);
    list_ctx_t l = {.who = &who, .status = st};
    cs_store_each(h->d->store, list_one, &l);
    if (l.n > 0 && !l.oom)
        qsort(l.v, l.n, sizeof(*l.v), newest_first);
    json_t *arr = l.oom ? NULL : json_array();
    for (size_t i = 0; i < l.n && i < limit && arr != NULL; i++) {
        if (json_array_append_new(arr, cs_exec_status_json(l.v[i])) != 0) {
            json_decref(arr);
            arr = NULL;
        }
    }
    free(l.v);
    json_t *v = arr != NULL ? json_pack("{s:o}", "executions", arr) : NULL;
    if (v == NULL) {
        /* Never a shorter list than the token may see: the client would take it for the whole. */
        cs_log_warn("http: out of memory listing the executions: 500");
        return queue_err(h, con, CS_ERR_INTERNAL, "out of memory listing the executions", NULL, NULL);
    }
    return send_json_value(h, con, v);
}

/* ---- health ---- */

unsigned cs_http_health(const cs_daemon_t *d, char **body)
{
    const char *why = NULL;
    unsigned status = 503;
    char ts[32];
    json_t *o;

    cs_format_timestamp(cs_unix_ms(), ts, sizeof(ts));
    if (d->stopping) {
        o = json_pack("{s:s, s:s}", "status", "stopping", "timestamp", ts);
    } else if (cs_cluster_degraded(d->cluster, &why)) {
        o = json_pack("{s:s, s:s, s:s}", "status", "degraded", "reason", why, "timestamp", ts);
    } else if (d->persist != NULL && cs_persist_degraded(d->persist, &why)) {
        o = json_pack("{s:s, s:s, s:s}", "status", "degraded", "reason",
                      why != NULL && why[0] != '\0' ? why : "the journal cannot be written", "timestamp", ts);
    } else {
        o = json_pack("{s:s, s:s}", "status", "healthy", "timestamp", ts);
        status = 200;
    }
    *body = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return status;
}

/* GET /health (cs_http_health). */
static enum MHD_Result handle_health(cs_http_t *h, struct MHD_Connection *con)
{
    char *body;
    unsigned status = cs_http_health(h->d, &body);

    return queue_json(h, con, status, body, body != NULL ? strlen(body) : 0, NULL, NULL);
}

/* ---- metrics ---- */

/* The most /metrics may take (it is about 10 KiB). */
#define METRICS_MAX (1024 * 1024)

/* The text being built, and the first error building it. */
typedef struct metrics_out {
    cs_buf_t buf;
    int rc;
} metrics_out_t;

static void metric(metrics_out_t *b, const char *name, const char *type, const char *help,
                   unsigned long long v)
{
    if (b->rc == 0)
        b->rc =
            cs_buf_printf(&b->buf, "# HELP crewstream_%s %s\n# TYPE crewstream_%s %s\ncrewstream_%s %llu\n",
                          name, help, name, type, name, v);
}

/* A node counts in cluster_nodes while its last report is at most this old (it reports every 2 s). */
#define NODE_UP_MS 10000

/* One family of per-node figures: field of every node's report, labelled by node. */
static void node_family(metrics_out_t *b, const char *name, const char *type, const char *help,
                        const cs_cluster_node_t *nodes, size_t n, size_t field)
{
    if (b->rc == 0)
        b->rc = cs_buf_printf(&b->buf, "# HELP crewstream_%s %s\n# TYPE crewstream_%s %s\n", name, help, name,
                              type);
    for (size_t i = 0; i < n && b->rc == 0; i++) {
        uint64_t v;
        memcpy(&v, (const char *)&nodes[i] + field, sizeof(v));
        b->rc = cs_buf_printf(&b->buf, "crewstream_%s{node=\"%s\"} %llu\n", name, nodes[i].name,
                              (unsigned long long)v);
    }
}

/* Every node's last report of itself, read from Redis (cluster.c): the cluster's figures from any node. */
static void cluster_node_metrics(metrics_out_t *b, cs_daemon_t *d)
{
    cs_cluster_node_t nodes[CS_CLUSTER_NODES_MAX];
    int64_t now;
    size_t n = cs_cluster_nodes(d->cluster, nodes, CS_CLUSTER_NODES_MAX, &now), up = 0;

    for (size_t i = 0; i < n; i++)
        up += now > 0 && (int64_t)nodes[i].r.ms + NODE_UP_MS >= now;
    metric(b, "cluster_nodes", "gauge",
           "Nodes whose last report of themselves (every 2 s, into Redis) is at most 10 s old, this one "
           "included.",
           up);
    if (b->rc == 0)
        b->rc = cs_buf_printf(
            &b->buf, "# HELP crewstream_cluster_node_report_age_seconds Seconds since the node last reported "
                     "itself (Redis' clock); the figures below are from that report.\n"
                     "# TYPE crewstream_cluster_node_report_age_seconds gauge\n");
    for (size_t i = 0; i < n && b->rc == 0; i++) {
        int64_t age = now > (int64_t)nodes[i].r.ms ? now - (int64_t)nodes[i].r.ms : 0;
        b->rc =
            cs_buf_printf(&b->buf, "crewstream_cluster_node_report_age_seconds{node=\"%s\"} %lld.%03lld\n",
                          nodes[i].name, (long long)(age / 1000), (long long)(age % 1000));
    }
#define NODE_FAMILY(name, type, help, f)                                                                     \
    node_family(b, name, type, help, nodes, n, offsetof(cs_cluster_node_t, r.f))
    NODE_FAMILY("cluster_node_published_total", "counter", "Events Redis stored for the node's producers.",
                published);
    NODE_FAMILY("cluster_node_failed_total", "counter", "The node's publishes answered unavailable.", failed);
    NODE_FAMILY("cluster_node_inserted_total", "counter", "Events stored in the node's ring from Redis.",
                inserted);
    NODE_FAMILY("cluster_node_lost_total", "counter",
                "Events a hole on the node lacked that Redis no longer had (stream.gap sent).", lost);
    NODE_FAMILY("cluster_node_history_failed_total", "counter",
                "History reads the node gave up (its subscribers resume again).", history_failed);
    NODE_FAMILY("cluster_node_subscribers", "gauge", "The node's subscribers.", subscribers);
    NODE_FAMILY("cluster_node_executions", "gauge", "Executions in the node's store.", executions);
#undef NODE_FAMILY
}

/* Cluster mode's figures (cluster.h); zeros and cluster_enabled 0 when this node is alone. */
static void cluster_metrics(metrics_out_t *b, cs_daemon_t *d)
{
    cs_cluster_stats_t cs;

    cs_cluster_stats(d->cluster, &cs);
    metric(b, "cluster_enabled", "gauge", "1 in cluster mode (cluster.redis).", d->cluster != NULL);
    metric(b, "cluster_ready", "gauge",
           "1 while Redis is reachable and its channel subscribed; 0 in cluster mode: publishes are refused.",
           (unsigned long long)cs.ready);
    metric(b, "cluster_published_total", "counter", "Events Redis stored for this node's producers.",
           cs.published);
    metric(b, "cluster_duplicates_total", "counter", "Re-posts Redis recognised by event_id (idempotent).",
           cs.duplicates);
    metric(b, "cluster_failed_total", "counter",
           "Publishes answered unavailable: Redis unreachable, no answer in time, or an error.", cs.failed);
    metric(b, "cluster_batches_total", "counter", "Publish script calls (many events each).", cs.batches);
    metric(b, "cluster_received_total", "counter", "Messages on the cluster's channel.", cs.received);
    metric(b, "cluster_inserted_total", "counter", "Events stored in this node's ring from Redis.",
           cs.inserted);
    metric(b, "cluster_fills_total", "counter", "Holes filled by reading a stream (XRANGE).", cs.fills);
    metric(b, "cluster_warmed_total", "counter",
           "Executions this node held nothing of, read from Redis' list of executions when it became ready.",
           cs.warmed);
    metric(b, "cluster_history_reads_total", "counter",
           "Reads of history older than a ring, for subscribers (XREVRANGE).", cs.history_reads);
    metric(b, "cluster_history_events_total", "counter", "Events those reads gave subscribers.",
           cs.history_events);
    metric(b, "cluster_history_failed_total", "counter",
           "History reads given up: an answer that could not be read, or none after 8 tries (the SSE stream "
           "ends, the WebSocket closes 1013, a long-poll answers 503: the client resumes).",
           cs.history_failed);
    metric(b, "cluster_history_waited_total", "counter",
           "History reads that waited for Redis (unreachable, no reply, loading): their subscribers held.",
           cs.history_waited);
    metric(b, "cluster_history_waiting", "gauge",
           "Subscribers held now until Redis answers the read of their older history.", cs.history_waiting);
    metric(b, "cluster_lost_total", "counter",
           "Events a hole lacked that Redis no longer had (subscribers behind got stream.gap).", cs.lost);
    metric(b, "cluster_bad_messages_total", "counter",
           "Messages or replies from Redis that could not be read.", cs.bad_messages);
    metric(b, "cluster_reconnects_total", "counter", "Connections to Redis lost (both connections).",
           cs.reconnects);
    metric(b, "cluster_timeouts_total", "counter", "Of them: no reply in time.", cs.timeouts);
    metric(b, "cluster_answers_total", "counter",
           "Human-input answers Redis stored for this node's answer routes.", cs.answers);
    metric(b, "cluster_answer_conflicts_total", "counter",
           "Answers Redis refused (409): the request was answered already, on any node.",
           cs.answer_conflicts);
    metric(b, "cluster_queued", "gauge", "Publishes waiting to be sent to Redis.", cs.queued);
    metric(b, "cluster_in_flight", "gauge", "Publishes sent to Redis and not answered yet.", cs.in_flight);
    metric(b, "cluster_unknown_total", "counter",
           "Publishes whose reply never came, held until Redis said whether it stored them.", cs.unknown);
    metric(b, "cluster_unknown_stored_total", "counter", "Of them: Redis had stored them (answered ok).",
           cs.unknown_stored);
    metric(b, "cluster_unknown_refused_total", "counter",
           "Of them: Redis had not, and never will (deadline passed): answered unavailable.",
           cs.unknown_refused);
    metric(b, "cluster_unknown_expired_total", "counter",
           "Of them: Redis could not be asked within the longest wait (2 timeouts): answered unavailable.",
           cs.unknown_expired);
    metric(b, "cluster_unknown_overflow_total", "counter",
           "Publishes without a reply not held (4096 held already): answered unavailable at once.",
           cs.unknown_overflow);
    metric(b, "cluster_unknown_held", "gauge", "Publishes held now, their outcome unknown.", cs.unknown_held);
    metric(b, "cluster_late_total", "counter",
           "Publishes the script refused: they reached Redis after their deadline.", cs.late);
    metric(b, "cluster_rechecks_total", "counter", "Executions checked against Redis after a reconnect.",
           cs.rechecks);
    metric(b, "cluster_rebased_total", "counter",
           "Of them: Redis had lost or replaced their history (old cursors get stream.gap).", cs.rebased);
    metric(b, "cluster_held_dropped_total", "counter",
           "Channel messages not held behind a hole (16 MiB held already): read from the stream instead.",
           cs.held_dropped);
    metric(b, "cluster_held_bytes", "gauge", "Channel messages held behind holes now, bytes.", cs.held_bytes);
}

/* The journal's figures (persist.h); zeros and journal_enabled 0 when the daemon keeps memory only. */
static void journal_metrics(metrics_out_t *b, cs_daemon_t *d)
{
    cs_persist_stats_t js;

    cs_persist_stats(d->persist, &js);
    metric(b, "journal_enabled", "gauge", "1 when a journal keeps the store across restarts (journal.dir).",
           d->persist != NULL);
    metric(b, "journal_degraded", "gauge",
           "1 while the journal's directory cannot be written: publishes are refused (unavailable).",
           d->persist != NULL && js.degraded);
    metric(b, "journal_bytes", "gauge", "Bytes of the journal's segment files on disk.", js.bytes);
    metric(b, "journal_max_bytes", "gauge", "journal.max_bytes: the bound of journal_bytes.",
           d->persist != NULL ? d->cfg->journal_max_bytes : 0);
    metric(b, "journal_segments", "gauge", "Segment files on disk.", js.segments);
    metric(b, "journal_records_total", "counter", "Records written since start.", js.records);
    metric(b, "journal_written_bytes_total", "counter", "Bytes written to the journal since start.",
           js.written_bytes);
    metric(b, "journal_syncs_total", "counter", "fdatasyncs finished.", js.syncs);
    metric(b, "journal_sync_errors_total", "counter", "fdatasyncs that failed.", js.sync_errors);
    metric(b, "journal_write_errors_total", "counter", "Journal writes that failed (a full disk, EIO).",
           js.write_errors);
    /* Durations in whole microseconds: integers, like every other figure here. */
    metric(b, "journal_sync_microseconds_total", "counter",
           "Time spent in fdatasync (on the sync thread); over journal_syncs_total: the mean latency.",
           js.sync_us_sum);
    metric(b, "journal_sync_microseconds_max", "gauge", "The longest fdatasync since start.", js.sync_us_max);
    metric(b, "journal_pending", "gauge", "Publishes waiting for the journal before they are acknowledged.",
           js.pending);
    metric(b, "journal_refused_total", "counter",
           "Publishes refused (unavailable) while the journal could not be written.", js.refused);
    metric(b, "journal_snapshots_total", "counter", "Snapshots written (after which older segments go).",
           js.snapshots);
    metric(b, "journal_snapshot_microseconds_last", "gauge",
           "The longest the last snapshot held the loop in one turn (it is written a step per turn).",
           js.snapshot_us_last);
    metric(b, "journal_snapshots_given_up_total", "counter",
           "Snapshots begun and not finished (new store limits, a failed write, out of memory).",
           js.snapshots_given_up);
    metric(b, "journal_segments_deleted_total", "counter", "Segment files deleted: nothing in them retained.",
           js.segments_deleted);
    metric(b, "journal_replay_microseconds", "gauge", "How long the start-up replay took.", js.replay_us);
    metric(b, "journal_replay_cpu_microseconds", "gauge",
           "CPU time (user + system) the start-up replay took on the loop thread.", js.replay_cpu_us);
    metric(b, "journal_replay_records", "gauge", "Records the start-up replay applied.", js.replay_records);
    metric(b, "journal_replay_bytes", "gauge", "Bytes the start-up replay read.", js.replay_bytes);
    metric(b, "journal_replay_truncated", "gauge", "Torn tails the start-up replay cut off.",
           js.replay_truncated);
    metric(b, "journal_replay_skipped", "gauge",
           "Segments whose rest the start-up replay skipped (a bad checksum or record).", js.replay_skipped);
}
static void gateway_metrics(metrics_out_t *b, cs_daemon_t *d);

/* GET /metrics: Prometheus text format. Open when http.metrics_public, else a token with read on "*". */
static enum MHD_Result handle_metrics(cs_http_t *h, struct MHD_Connection *con)
{
    cs_daemon_t *d = h->d;
    const cs_counters_t *c = &d->counters;
    cs_store_stats_t st;
    char tokbuf[CS_TOKEN_BUF];
    metrics_out_t b = {.rc = 0};

    if (!d->cfg->metrics_public) {
        cs_auth_result_t ar =
            cs_auth_check(d->auth, request_token(con, tokbuf, sizeof(tokbuf)), CS_SCOPE_READ, NULL, NULL);
        if (ar != CS_AUTH_OK)
            return queue_err(h, con, ar, ar == CS_AUTH_FORBIDDEN ? "metrics need read on \"*\"" : NULL, NULL,
                             NULL);
    }
    cs_buf_init(&b.buf, METRICS_MAX);
    cs_store_stats(d->store, &st);
    metric(&b, "connections", "gauge", "Open TCP connections (HTTP, SSE, WebSocket, waiting heads).",
           d->clients);
    /* One gauge per name the transports' rows give (http_streams, websockets), summed over its rows. */
    for (size_t i = 0; i < d->n_transports; i++) {
        const cs_transport_ops_t *t = d->transports[i].ops;
        size_t j;
        for (j = 0; j < i && strcmp(d->transports[j].ops->gauge, t->gauge) != 0; j++)
            ;
        if (j == i)
            metric(&b, t->gauge, "gauge", t->gauge_help, cs_transport_count(d, t->gauge));
    }
    metric(&b, "subscribers", "gauge", "Subscribers (cursors) on every transport.", st.subscribers);
    metric(&b, "producers", "gauge", "Producer connections on the ingest socket.",
           cs_ingest_count(d->ingest));
    metric(&b, "executions", "gauge", "Executions held.", st.executions);
    metric(&b, "store_bytes", "gauge", "Bytes held by the store (frames and executions).", st.bytes);
    metric(&b, "store_max_bytes", "gauge", "store.max_bytes: the bound of store_bytes.", st.max_bytes);
    metric(&b, "store_pinned_bytes", "gauge",
           "Bytes of executions an open human-input request pins (at most half of store.max_bytes).",
           st.pinned_bytes);
    metric(&b, "store_pending_publishes", "gauge",
           "Publishes stored and waiting for the store's observer (the journal) to confirm them.",
           st.pending);
    metric(&b, "human_input_open", "gauge", "Open (unanswered) human-input requests.", st.open_requests);
    metric(&b, "human_input_open_bytes", "gauge", "Bytes of the open human-input requests.",
           st.open_request_bytes);
    metric(&b, "store_refused_full_total", "counter",
           "Publishes refused (unavailable): no room in store.max_bytes beside what is pinned or in flight.",
           st.refused_full);
    metric(&b, "store_refused_too_large_total", "counter",
           "Publishes refused (too_large): larger than store.max_bytes allows.", st.refused_too_large);
    metric(&b, "frames", "gauge", "Rendered frames alive.", st.frames_live);
    metric(&b, "events_published_total", "counter", "Events stored.", st.events_published);
    metric(&b, "events_duplicate_total", "counter", "Re-posted events acknowledged without storing.",
           st.events_duplicate);
    metric(&b, "events_evicted_total", "counter", "Events evicted from rings.", st.events_evicted);
    metric(&b, "executions_expired_total", "counter", "Finished executions dropped after store.retain_s.",
           st.executions_expired);
    metric(&b, "gaps_total", "counter", "stream.gap events sent.", st.gaps_sent);
    metric(&b, "ingest_lines_total", "counter", "Ingest lines handled (socket and HTTP).", c->ingest_lines);
    metric(&b, "ingest_errors_total", "counter", "Ingest lines refused.", c->ingest_errors);
    metric(&b, "ingest_reply_failures_total", "counter",
           "Replies that could not be queued: the producer closed, or POST /v1/events answered 500.",
           c->ingest_reply_failures);
    metric(&b, "http_requests_total", "counter", "HTTP requests.", c->http_requests);
    metric(&b, "tcp_accepted_total", "counter", "TCP connections accepted.", c->tcp_accepted);
    metric(&b, "tcp_rejected_total", "counter", "TCP connections refused over limits.max_clients.",
           c->tcp_rejected_full);
    metric(&b, "heads_too_large_total", "counter", "Request heads answered 431.", c->heads_too_large);
    metric(&b, "heads_timed_out_total", "counter", "Request heads not complete in time.", c->heads_timed_out);
    metric(&b, "heads_invalid_total", "counter", "Connections that did not speak HTTP/1.x.",
           c->heads_invalid);
    metric(&b, "ws_accepted_total", "counter", "WebSocket handshakes accepted.", c->ws_accepted);
    metric(&b, "ws_refused_total", "counter", "WebSocket handshakes refused.", c->ws_refused);
    metric(&b, "ws_refused_origin_total", "counter", "WebSocket handshakes refused for their Origin (403).",
           c->ws_refused_origin);
    metric(&b, "stalls_total", "counter", "Subscribers disconnected for making no progress.", c->stalls);
    metric(&b, "ws_fragmented_sending", "gauge",
           "WebSockets in the middle of a large message (each holds one frame, one piece ahead).",
           cs_ws_held(d->ws));
    metric(&b, "ws_pieces_total", "counter", "Pieces of fragmented WebSocket messages written.",
           c->ws_pieces);
    metric(&b, "ws_rx_paused_total", "counter",
           "Times a WebSocket client was not read until its queued replies were sent.", c->ws_rx_paused);
    metric(&b, "ws_flood_closed_total", "counter",
           "WebSockets closed (1008) for sending messages without reading the replies.", c->ws_flood_closed);
    metric(&b, "http_early_unauthorized_total", "counter",
           "Requests with a body answered 401 before any of the body was read.", c->http_early_unauthorized);
    metric(&b, "http_early_forbidden_total", "counter",
           "Requests with a body answered 403 before any of the body was read.", c->http_early_forbidden);
    metric(&b, "http_early_too_large_total", "counter",
           "Requests answered 413 before any of the body was read (Content-Length over the route's limit).",
           c->http_early_too_large);
    metric(&b, "http_early_other_total", "counter",
           "Requests with a body answered 400, 404, 405 or 503 before any of the body was read.",
           c->http_early_other);
    metric(&b, "http_body_overrun_total", "counter",
           "Chunked request bodies that grew past the route's limit (connection closed).",
           c->http_body_overrun);
    metric(&b, "http_lines_refused_total", "counter", "POST /v1/events bodies over the line limit (413).",
           c->http_lines_refused);
    metric(&b, "http_body_bytes", "gauge", "Bytes allocated for HTTP request bodies being received.",
           c->http_body_bytes);
    metric(&b, "accept_backoffs_total", "counter",
           "Times accepting paused for want of descriptors or memory (TCP and ingest).", c->accept_backoffs);
    metric(&b, "log_suppressed_total", "counter", "Log lines suppressed by the rate limit.",
           cs_log_suppressed_total());
    size_t over_refused, over_reserve;
    cs_listener_over_limit(d->listener, &over_refused, &over_reserve);
    metric(&b, "tcp_refused_lingering", "gauge", "Connections refused over limits.max_clients, lingering.",
           over_refused);
    metric(&b, "tcp_health_reserve", "gauge",
           "Connections over limits.max_clients waiting to say GET /health.", over_reserve);
    metric(&b, "health_over_limit_total", "counter", "GET /health answered over limits.max_clients.",
           c->health_over_limit);
    metric(&b, "tcp_refused_unlingered_total", "counter",
           "Connections refused over limits.max_clients and closed at once (too many lingering).",
           c->tcp_refused_unlingered);
    cs_ingest_stats_t ist;
    cs_ingest_stats(d->ingest, &ist);
    metric(&b, "ingest_output_bytes", "gauge", "Replies and answers queued to producers, not yet written.",
           ist.queued_bytes);
    metric(&b, "ingest_producers_paused", "gauge", "Producers not read until they read their replies.",
           ist.paused);
    metric(&b, "ingest_pauses_total", "counter", "Times a producer was paused for its queued output.",
           ist.pauses);
    metric(&b, "ingest_pushes_deduplicated_total", "counter",
           "Answers not queued again to a producer that still had them queued.", ist.pushes_same);
    metric(&b, "ingest_awaits_missed_total", "counter",
           "Requests a producer posted that did not reach this node's store within 30 s of their "
           "acknowledgement (cluster mode): not awaited without asking.",
           ist.awaits_missed);
    journal_metrics(&b, d);
    cluster_metrics(&b, d);
    if (d->cluster != NULL)
        cluster_node_metrics(&b, d);
    gateway_metrics(&b, d);
    if (b.rc == 0 && d->webhooks != NULL)
        b.rc = cs_webhooks_metrics(d->webhooks, &b.buf);
    return queue_built(h, con, &b.buf, b.rc, "text/plain; version=0.0.4; charset=utf-8");
}

/* GET /v1/webhooks: endpoints, their lag, in flight, counters and dead letters. Read on "*", as /metrics
 * needs when it is not public: it shows every execution's destinations. */
static enum MHD_Result handle_webhooks(cs_http_t *h, struct MHD_Connection *con)
{
    char tokbuf[CS_TOKEN_BUF];
    cs_auth_result_t ar =
        cs_auth_check(h->d->auth, request_token(con, tokbuf, sizeof(tokbuf)), CS_SCOPE_READ, NULL, NULL);

    if (ar != CS_AUTH_OK)
        return queue_err(h, con, ar, ar == CS_AUTH_FORBIDDEN ? "webhooks need read on \"*\"" : NULL, NULL,
                         NULL);
    json_t *v = h->d->webhooks != NULL ? cs_webhooks_json(h->d->webhooks) : json_pack("{s:[]}", "endpoints");
    if (v == NULL)
        return queue_err(h, con, CS_ERR_INTERNAL, "out of memory", NULL, NULL);
    return send_json_value(h, con, v);
}

/* ---- the crew gateway (SPEC §9): GET /inputs, GET /v1/crews, POST /kickoff ---- */

/* The gateway's lines of /metrics. */
static void gateway_metrics(metrics_out_t *b, cs_daemon_t *d)
{
    cs_gateway_stats_t g;

    cs_gateway_stats(d->gateway, &g);
    metric(b, "gateway_crews", "gauge", "Crews served by a runtime or with kickoffs waiting.", g.crews);
    metric(b, "gateway_runtimes", "gauge", "Crew registrations (serve) of runtime connections.", g.runtimes);
    metric(b, "gateway_queued", "gauge", "Kickoffs waiting for a free runtime.", g.queued);
    metric(b, "gateway_offered", "gauge", "Kickoffs pushed to a runtime, not acknowledged yet.", g.offered);
    metric(b, "gateway_running", "gauge", "Kickoffs acknowledged, not finished.", g.running);
    metric(b, "gateway_kickoffs_total", "counter", "Kickoffs accepted (POST /kickoff).", g.kickoffs);
    metric(
        b, "gateway_handed_over_total", "counter",
        "Cluster mode: kickoffs no runtime of this node served, handed to the cluster (kickoff.requested).",
        g.remote);
    metric(b, "gateway_refused_full_total", "counter", "Kickoffs refused 503: gateway.queue full.",
           g.refused_full);
    metric(b, "gateway_refused_unserved_total", "counter",
           "Kickoffs refused 503: nobody serves the crew and gateway.queue_timeout_s is 0.",
           g.refused_unknown);
    metric(b, "gateway_dispatched_total", "counter", "Kickoff pushes to runtimes (re-dispatches too).",
           g.dispatched);
    metric(b, "gateway_acked_total", "counter", "Kickoffs acknowledged by a runtime.", g.acked);
    metric(b, "gateway_redispatched_timeout_total", "counter",
           "Kickoffs given to another runtime: no ack within gateway.ack_timeout_s.", g.redispatched_timeout);
    metric(b, "gateway_redispatched_lost_total", "counter",
           "Kickoffs given to another runtime: the connection ended before the ack.", g.redispatched_lost);
    metric(b, "gateway_acks_refused_total", "counter",
           "kickoff_ack refused (given to another runtime, unknown).", g.acks_refused);
    metric(b, "gateway_lost_after_ack_total", "counter",
           "Runtimes gone after acknowledging a kickoff (not run again).", g.lost_after_ack);
    metric(b, "gateway_queue_timeouts_total", "counter",
           "Kickoffs failed: nobody served the crew within gateway.queue_timeout_s.", g.queue_timeouts);
    metric(b, "gateway_push_failures_total", "counter",
           "Kickoff pushes that could not be queued to a runtime.", g.push_failures);
    metric(b, "gateway_failed_records_total", "counter",
           "Failed kickoffs whose run.failed event could not be stored.", d->counters.gateway_failed_records);
}

/* The principal of a gateway request, authorized for the kickoff scope on every execution (a kickoff makes
 * a new one); 0, or 1 with *ret answered. */
static int gateway_auth(cs_http_t *h, struct MHD_Connection *con, enum MHD_Result *ret)
{
    char tokbuf[CS_TOKEN_BUF];
    cs_auth_result_t ar =
        cs_auth_check(h->d->auth, request_token(con, tokbuf, sizeof(tokbuf)), CS_SCOPE_KICKOFF, NULL, NULL);

    if (ar == CS_AUTH_OK)
        return 0;
    *ret = queue_err(h, con, ar,
                     ar == CS_AUTH_FORBIDDEN ? "the crew gateway needs the kickoff scope on \"*\"" : NULL,
                     NULL, NULL);
    return 1;
}

/* GET /inputs (?crew= or the default crew) and GET /v1/crews. */
static enum MHD_Result handle_gateway_get(cs_http_t *h, http_req_t *q, struct MHD_Connection *con)
{
    cs_daemon_t *d = h->d;
    cs_gateway_t *gw = cs_ingest_gateway(d);
    enum MHD_Result ret;
    char detail[300];
    cs_err_t e = CS_OK;

    if (gateway_auth(h, con, &ret))
        return ret;
    if (q->route.kind == CS_ROUTE_CREWS) {
        json_t *v = cs_gateway_crews_json(gw);
        if (v == NULL)
            return queue_err(h, con, CS_ERR_INTERNAL, "out of memory listing the crews", NULL, NULL);
        return send_json_value(h, con, v);
    }
    const char *crew =
        cs_gateway_pick_crew(gw, lookup_arg(con, "crew"), d->cfg->default_crew, &e, detail, sizeof(detail));
    if (crew == NULL)
        return queue_err(h, con, e, detail, NULL, NULL);
    json_t *v = cs_gateway_inputs_json(gw, crew);
    if (v == NULL)
        return queue_err(h, con, CS_ERR_INTERNAL, "out of memory", NULL, NULL);
    return send_json_value(h, con, v);
}

/* A webhook URL refused (webhooks.allow, its form): 400 invalid_field naming the field, as SPEC §9 names
 * this refusal (HTTP bodies otherwise say bad_request for CS_ERR_INVALID_FIELD). */
static enum MHD_Result queue_invalid_url(cs_http_t *h, struct MHD_Connection *con, const char *detail)
{
    json_t *v = json_pack("{s:s, s:s}", "error", "invalid_field", "detail", detail);
    char *body = v != NULL ? json_dumps(v, JSON_COMPACT) : NULL;

    json_decref(v);
    return queue_json(h, con, 400, body, body ? strlen(body) : 0, NULL, NULL);
}

/* The webhook URLs of a /resume body (the seed repeats them there), registered before the answer is taken
 * so that the events it causes go to them (all or nothing; kept even when the answer is then refused,
 * e.g. 409: the caller may answer this execution). 0, or the error answered. */
static int resume_webhooks(cs_http_t *h, http_req_t *q, const cs_principal_t *who, json_t *o, const char *x,
                           size_t xlen, enum MHD_Result *ret)
{
    char detail[300];

    /* Only who may answer this execution may point its webhooks somewhere (else the answer is refused
     * 403 right after, with nothing registered). */
    if (h->d->webhooks == NULL || !cs_webhooks_body_has(o) ||
        cs_auth_authorize(who, CS_SCOPE_RESPOND, x) != CS_AUTH_OK)
        return 0;
    cs_err_t e = cs_webhooks_register(h->d->webhooks, x, xlen, o, detail, sizeof(detail));
    if (e == CS_OK)
        return 0;
    if (e == CS_ERR_INVALID_FIELD) {
        *ret = queue_invalid_url(h, q->con, detail);
        return -1;
    }
    *ret = queue_err(h, q->con, e, detail, NULL, NULL);
    return -1;
}

/* POST /kickoff: {"inputs":{…}, "crew"?, webhook URLs?} -> 200 {"kickoff_id"}; the kickoff id is the
 * execution id, whose status is "pending" until the runtime's first event. */
static enum MHD_Result post_kickoff(cs_http_t *h, http_req_t *q)
{
    cs_daemon_t *d = h->d;
    cs_gateway_t *gw = cs_ingest_gateway(d);
    char detail[300], id[37] = "";
    json_error_t jerr;
    json_t *o = NULL, *inputs, *jcrew, *own = NULL;
    enum MHD_Result ret;
    cs_err_t e = CS_OK;

    if (!cs_json_depth_ok(cs_buf_data(&q->body), cs_buf_size(&q->body), d->cfg->json_depth))
        return queue_errf(h, q->con, CS_ERR_BAD_REQUEST, "the body nests deeper than limits.json_depth (%u)",
                          (unsigned)d->cfg->json_depth);
    o = json_loadb(cs_buf_data(&q->body), cs_buf_size(&q->body), 0, &jerr);
    if (o == NULL || !json_is_object(o)) {
        json_decref(o);
        return queue_errf(h, q->con, CS_ERR_BAD_REQUEST, "expected a JSON object {\"inputs\":{…}}%s%s",
                          o ? "" : ": ", o ? "" : jerr.text);
    }
    inputs = json_object_get(o, "inputs");
    if (inputs == NULL)
        inputs = own = json_object();
    if (!json_is_object(inputs)) {
        ret = queue_err(h, q->con, CS_ERR_INVALID_FIELD,
                        "inputs: expected an object of input names and values", NULL, NULL);
        goto out;
    }
    jcrew = json_object_get(o, "crew");
    if (jcrew != NULL && !json_is_null(jcrew) && !json_is_string(jcrew)) {
        ret = queue_err(h, q->con, CS_ERR_INVALID_FIELD, "crew: expected a crew name (GET /v1/crews)", NULL,
                        NULL);
        goto out;
    }
    const char *crew =
        cs_gateway_pick_crew(gw, json_string_value(jcrew), d->cfg->default_crew, &e, detail, sizeof(detail));
    if (crew == NULL) {
        ret = queue_err(h, q->con, e, detail, NULL, NULL);
        goto out;
    }
    e = cs_gateway_admit(gw, crew, inputs, detail, sizeof(detail));
    if (e == CS_OK && cs_uuid4(id) != 0) {
        e = CS_ERR_INTERNAL;
        snprintf(detail, sizeof(detail), "no kickoff id could be drawn");
    }
    /* The execution's humanInputWebhook / taskWebhookUrl / stepWebhookUrl / crewWebhookUrl, registered
     * before the kickoff exists: a refusal (400 naming the field) starts nothing. */
    if (e == CS_OK && d->webhooks != NULL && cs_webhooks_body_has(o) &&
        (e = cs_webhooks_register(d->webhooks, id, strlen(id), o, detail, sizeof(detail))) ==
            CS_ERR_INVALID_FIELD) {
        ret = queue_invalid_url(h, q->con, detail);
        goto out;
    }
    if (e == CS_OK)
        e = cs_gateway_kickoff(gw, crew, inputs, cs_loop_now(d->loop), id, detail, sizeof(detail));
    if (e != CS_OK) {
        if (e == CS_ERR_UNAVAILABLE)
            cs_log_debug("http: POST /kickoff refused: %s", detail);
        ret = queue_err(h, q->con, e, detail, NULL, NULL);
        goto out;
    }
    ret = send_json_value(h, q->con, json_pack("{s:s, s:s}", "kickoff_id", id, "crew", crew));
out:
    json_decref(own);
    json_decref(o);
    return ret;
}

/* ---- POST: HTTP ingest and answers ---- */

/* ---- POSTs waiting for the store (a journal confirms what they published: CS_PENDING) ---- */

/* The store's word on one publish a POST waits for: its outcome; the last one resumes the request. */
static void on_confirmed(void *data, cs_err_t e, const cs_publish_t *pub, const char *detail)
{
    http_wait_t *w = data;
    http_req_t *q = w->q;

    w->ticket = 0;
    w->e = e;
    if (q->answer) {
        w->pub = *pub;
        snprintf(w->detail, sizeof(w->detail), "%s", detail != NULL ? detail : "");
    } else if (cs_ingest_reply_outcome(q->h->d, &w->text, e, pub, detail) != 0) {
        w->e = CS_ERR_INTERNAL;
        w->detail[0] = '!'; /* its reply line could not be built: the request answers 500 */
    }
    if (q->n_waiting > 0 && --q->n_waiting == 0)
        req_resume(q);
}

/* Prepares wait i of q for a publish (its completion calls on_confirmed). */
static const cs_store_done_t *wait_prepare(http_req_t *q, size_t i)
{
    http_wait_t *w = &q->waits[i];

    w->q = q;
    w->done.fn = on_confirmed;
    w->done.data = w;
    w->at = cs_buf_size(&q->replies);
    return &w->done;
}

/* Counts wait i of q as pending with ticket. */
static void wait_pending(http_req_t *q, uint64_t ticket)
{
    http_wait_t *w = &q->waits[q->n_waits++];

    w->ticket = ticket;
    cs_buf_init(&w->text, CS_INGEST_REPLY_MAX);
    q->n_waiting++;
}

/* Forgets the outcomes still to come (nobody to answer: the client left, or the daemon is stopping); what
 * was published stays published. */
static void waits_forget(http_req_t *q)
{
    for (size_t i = 0; i < q->n_waits; i++) {
        if (q->waits[i].ticket != 0) {
            cs_store_forget(q->h->d->store, q->waits[i].ticket);
            q->waits[i].ticket = 0;
        }
    }
    q->n_waiting = 0;
}

static void waits_free(http_req_t *q)
{
    waits_forget(q);
    for (size_t i = 0; i < q->n_waits; i++)
        cs_buf_free(&q->waits[i].text);
    free(q->waits);
    q->waits = NULL;
    q->n_waits = 0;
    cs_buf_free(&q->replies);
}

/* Holds q (suspended, without a response) until its last outcome came. */
static enum MHD_Result req_wait(cs_http_t *h, http_req_t *q)
{
    q->kind = REQ_WAIT;
    req_list(h, q);
    req_suspend(q);
    return MHD_YES;
}

/* POST /v1/events: 500 when a reply could not be built (freeing q->replies): none is sent, as a short reply
 * would leave the client to guess which lines were handled. */
static enum MHD_Result events_failed(cs_http_t *h, http_req_t *q, int rc, size_t line)
{
    waits_free(q);
    h->d->counters.ingest_reply_failures++;
    cs_log_error("http: the reply to line %zu of POST /v1/events could not be built (%s): answered 500", line,
                 rc == -EMSGSIZE ? "past its maximum" : "out of memory");
    return queue_errf(h, q->con, CS_ERR_INTERNAL,
                      "the replies could not be built (%s) at line %zu: that line and those before it "
                      "may be stored; send them again with their event_id to be told (duplicate)",
                      rc == -EMSGSIZE ? "too large" : "out of memory", line);
}

/* POST /v1/events, every line's outcome in: the replies in line order (those given at once in q->replies,
 * the confirmed ones in their places), as one JSON reply for one line or NDJSON. */
static enum MHD_Result events_reply(cs_http_t *h, http_req_t *q)
{
    cs_err_t last = q->last;
    size_t olen;
    char *body;

    if (q->n_waits > 0) {
        cs_buf_t m;
        size_t from = 0;
        int rc = 0;

        cs_buf_init(&m, (size_t)CS_HTTP_MAX_LINES * CS_INGEST_REPLY_MAX);
        for (size_t i = 0; i < q->n_waits && rc == 0; i++) {
            http_wait_t *w = &q->waits[i];
            if (w->detail[0] == '!') {
                rc = -ENOMEM;
                break;
            }
            rc = cs_buf_append(&m, cs_buf_data(&q->replies) + from, w->at - from);
            if (rc == 0)
                rc = cs_buf_append(&m, cs_buf_data(&w->text), cs_buf_size(&w->text));
            from = w->at;
        }
        if (rc == 0)
            rc = cs_buf_append(&m, cs_buf_data(&q->replies) + from, cs_buf_size(&q->replies) - from);
        if (rc != 0) {
            cs_buf_free(&m);
            return events_failed(h, q, rc, q->lines);
        }
        if (q->lines == 1)
            last = q->waits[0].e;
        cs_buf_free(&q->replies);
        q->replies = m;
    }
    body = cs_buf_steal(&q->replies, &olen);
    if (body == NULL)
        return MHD_NO;
    if (q->lines == 1) {
        /* One event: its reply is the response, its status the error's. */
        olen--; /* the newline */
        return queue_json(h, q->con, cs_err_http_status(last), body, olen, NULL, NULL);
    }
    return queue_body(h, q->con, 200, body, olen, MHD_RESPMEM_MUST_FREE, "application/x-ndjson", NULL, NULL);
}

/* POST /v1/events: one event, or NDJSON; the same validation and replies as the Unix socket. With a
 * journal, the reply waits until every line's publish is confirmed (the socket's "ok" means the same). */
static enum MHD_Result post_events(cs_http_t *h, http_req_t *q, const cs_principal_t *who)
{
    size_t n = 1;
    const char *p = cs_buf_data(&q->body), *end = p + cs_buf_size(&q->body);

    if ((who->scopes & CS_SCOPE_PUBLISH) == 0)
        return queue_err(h, q->con, CS_ERR_FORBIDDEN, "publishing needs a token with the publish scope", NULL,
                         NULL);
    /* A body of one JSON object over several lines (pretty-printed by hand or by a tool) is one
     * event, not NDJSON: only when the whole body does not parse as one value is it split. */
    const char *nl0 = memchr(p, '\n', (size_t)(end - p));
    int whole = 0;
    if (nl0 != NULL && nl0 + 1 < end && cs_json_depth_ok(p, (size_t)(end - p), h->d->cfg->json_depth)) {
        json_t *one = json_loadb(p, (size_t)(end - p), JSON_DECODE_ANY, NULL);
        whole = json_is_object(one);
        json_decref(one);
    }
    /* Every line gets a reply, a blank one too (invalid_json, as on the socket): bound the lines, so
     * that neither the work done here, in one turn of the loop, nor the reply grows past what
     * CS_HTTP_MAX_LINES lines make. Counted before anything is stored: all or nothing. */
    if (!whole) {
        n = 0;
        for (const char *s = p; s < end && n <= CS_HTTP_MAX_LINES; n++) {
            const char *nl = memchr(s, '\n', (size_t)(end - s));
            s = nl ? nl + 1 : end;
        }
        if (n > CS_HTTP_MAX_LINES) {
            h->d->counters.http_lines_refused++;
            return queue_errf(h, q->con, CS_ERR_TOO_LARGE,
                              "the body has more than %u lines (blank ones count): nothing was stored; "
                              "send the events in several requests",
                              (unsigned)CS_HTTP_MAX_LINES);
        }
    }
    /* A publish the journal confirms later is answered from its completion: one for every line may be
     * needed, had before anything is stored. */
    if (n > 0 && cs_store_may_defer(h->d->store) && (q->waits = calloc(n, sizeof(*q->waits))) == NULL) {
        cs_log_warn("http: out of memory for the %zu lines of a POST /v1/events: 500", n);
        return queue_err(h, q->con, CS_ERR_INTERNAL, "out of memory: nothing was stored; send it again", NULL,
                         NULL);
    }
    /* One reply line per line: at most CS_HTTP_MAX_LINES of CS_INGEST_REPLY_MAX bytes (20 MiB). */
    cs_buf_init(&q->replies, (size_t)CS_HTTP_MAX_LINES * CS_INGEST_REPLY_MAX);
    q->lines = 0;
    q->last = CS_OK;
    while (p < end) {
        const char *nl = whole ? NULL : memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        uint64_t ticket = 0;
        int rc;
        /* A final newline does not start another line. */
        if (q->waits != NULL && q->n_waits < n)
            rc = cs_ingest_line_wait(h->d, who, p, len, wait_prepare(q, q->n_waits), &ticket, &q->replies,
                                     &q->last);
        else
            rc = cs_ingest_line(h->d, NULL, who, p, len, &q->replies, &q->last);
        q->lines++;
        if (ticket != 0)
            wait_pending(q, ticket); /* its reply comes from its completion, in its place */
        if (rc != 0)
            return events_failed(h, q, rc, q->lines);
        p += len + 1;
    }
    if (q->lines == 0) {
        waits_free(q);
        return queue_err(h, q->con, CS_ERR_BAD_REQUEST, "the body is empty: send one event, or NDJSON", NULL,
                         NULL);
    }
    if (q->n_waiting > 0)
        return req_wait(h, q);
    return events_reply(h, q);
}

/* POST /resume and POST /v1/executions/{id}/human-input. */
static enum MHD_Result post_answer(cs_http_t *h, http_req_t *q, const cs_principal_t *who)
{
    char detail[300];
    json_error_t jerr;
    if (!cs_json_depth_ok(cs_buf_data(&q->body), cs_buf_size(&q->body), h->d->cfg->json_depth))
        return queue_errf(h, q->con, CS_ERR_BAD_REQUEST, "the body nests deeper than limits.json_depth (%u)",
                          (unsigned)h->d->cfg->json_depth);
    json_t *o = json_loadb(cs_buf_data(&q->body), cs_buf_size(&q->body), 0, &jerr);
    const char *x;
    size_t xlen;
    cs_publish_t pub;
    int e;
    enum MHD_Result ret;

    if (o == NULL || !json_is_object(o)) {
        json_decref(o);
        return queue_errf(h, q->con, CS_ERR_BAD_REQUEST, "expected a JSON object%s%s", o ? "" : ": ",
                          o ? "" : jerr.text);
    }
    if (q->route.kind == CS_ROUTE_RESUME) {
        json_t *jx = json_object_get(o, "execution_id");
        x = json_string_value(jx);
        xlen = json_string_length(jx);
        if (x == NULL || !cs_valid_execution_id(x, xlen)) {
            json_decref(o);
            return queue_err(h, q->con, CS_ERR_BAD_REQUEST,
                             "execution_id must be 1-128 characters of [A-Za-z0-9._:-]", NULL, NULL);
        }
        if (resume_webhooks(h, q, who, o, x, xlen, &ret) != 0) {
            json_decref(o);
            return ret;
        }
    } else {
        x = q->route.execution_id;
        xlen = q->route.execution_id_len;
    }
    /* With a journal the human's 200 comes once the answer is confirmed: a completion, had first. */
    if (cs_store_may_defer(h->d->store) && (q->waits = calloc(1, sizeof(*q->waits))) == NULL) {
        json_decref(o);
        cs_log_warn("http: out of memory for an answer: 500");
        return queue_err(h, q->con, CS_ERR_INTERNAL, "out of memory: the answer was not taken; send it again",
                         NULL, NULL);
    }
    q->answer = 1;
    e = cs_take_answer(h->d, o, x, xlen, cs_auth_authorize(who, CS_SCOPE_RESPOND, x) == CS_AUTH_OK,
                       who != NULL ? who->name : NULL, q->waits != NULL ? wait_prepare(q, 0) : NULL, &pub,
                       detail, sizeof(detail));
    if (e == CS_PENDING) {
        /* x is a valid execution id (at most CS_EXECUTION_ID_MAX bytes): kept for the ack. */
        snprintf(q->x, sizeof(q->x), "%.*s", (int)xlen, x);
        json_decref(o);
        wait_pending(q, pub.ticket);
        return req_wait(h, q);
    }
    if (e != CS_OK) {
        json_decref(o);
        return queue_err(h, q->con, e, detail, NULL, NULL);
    }
    char *body = cs_take_answer_ack(x, xlen, &pub, 0);
    json_decref(o); /* x pointed into it */
    ret = queue_json(h, q->con, 200, body, body ? strlen(body) : 0, NULL, NULL);
    return ret;
}

/* A POST held for its outcomes, all in: its reply, as it would have been at once. */
static enum MHD_Result waited_reply(cs_http_t *h, http_req_t *q)
{
    if (!q->answer)
        return events_reply(h, q);
    http_wait_t *w = &q->waits[0];
    if (w->e != CS_OK)
        return queue_err(h, q->con, w->e, w->detail[0] != '\0' ? w->detail : NULL, NULL, NULL);
    char *body = cs_take_answer_ack(q->x, strlen(q->x), &w->pub, 0);
    return queue_json(h, q->con, 200, body, body ? strlen(body) : 0, NULL, NULL);
}

static enum MHD_Result handle_post(cs_http_t *h, http_req_t *q, struct MHD_Connection *con)
{
    char tokbuf[CS_TOKEN_BUF];
    cs_principal_t who;
    cs_auth_result_t ar = cs_auth_identify(h->d->auth, request_token(con, tokbuf, sizeof(tokbuf)), &who);

    if (ar != CS_AUTH_OK)
        return queue_err(h, con, ar, NULL, NULL, NULL);
    if (q->route.kind == CS_ROUTE_GLOBAL_SSE)
        return post_events(h, q, &who);
    if (q->route.kind == CS_ROUTE_KICKOFF)
        return post_kickoff(h, q);
    return post_answer(h, q, &who);
}

/* The most bytes a request body on this route may have. Only a POST's body is kept; an answer becomes
 * one event, so it is held to limits.max_event_bytes as well. */
static size_t body_limit(const cs_config_t *cfg, const cs_route_t *rt, unsigned m)
{
    size_t lim = cfg->max_body_bytes;

    if (m == CS_METHOD_POST && (rt->kind == CS_ROUTE_RESUME || rt->kind == CS_ROUTE_EXEC_ANSWER) &&
        cfg->max_event_bytes < lim)
        lim = cfg->max_event_bytes;
    return lim;
}

static unsigned method_bit(const char *method)
{
    return strcmp(method, "GET") == 0 ? CS_METHOD_GET : strcmp(method, "POST") == 0 ? CS_METHOD_POST : 0;
}

/* The request target: refuses (returns 1, *ret set) an encoded NUL, an unknown path, a method the
 * route does not take; else fills q->route and returns 0. */
static int check_target(cs_http_t *h, http_req_t *q, struct MHD_Connection *con, const char *url,
                        const char *method, enum MHD_Result *ret)
{
    /* MHD decodes the target in place: a %00 would cut the path at its prefix (and a query value). */
    if (q->nul) {
        *ret = queue_err(h, con, CS_ERR_BAD_REQUEST, "the request target contains an encoded NUL byte (%00)",
                         NULL, NULL);
        return 1;
    }
    if (cs_route_match(url, strlen(url), &q->route) == CS_ROUTE_NONE) {
        *ret = queue_errf(h, con, CS_ERR_NOT_FOUND, "no route %s %s", method, url);
        return 1;
    }
    if ((q->route.methods & method_bit(method)) == 0) {
        char detail[300];
        snprintf(detail, sizeof(detail), "%s is not allowed on %s (allowed: %s)", method, url,
                 cs_route_allow(q->route.methods));
        *ret =
            queue_err(h, con, CS_ERR_METHOD_NOT_ALLOWED, detail, "Allow", cs_route_allow(q->route.methods));
        return 1;
    }
    return 0;
}

/*
 * A request with a body, on the handler's first call (its head only): refuses now (returns 1, *ret
 * set) whatever would be refused once the body is in - so that an unauthenticated client costs no
 * more than its head - else sets q->limit and returns 0. libmicrohttpd reads none of a body refused
 * here, and closes the connection after the answer.
 */
static int refuse_early(cs_http_t *h, http_req_t *q, struct MHD_Connection *con, const char *url,
                        const char *method, enum MHD_Result *ret)
{
    cs_daemon_t *d = h->d;
    cs_counters_t *c = &d->counters;
    unsigned m = method_bit(method);

    q->limit = d->cfg->max_body_bytes;
    if (m == CS_METHOD_POST) {
        char tokbuf[CS_TOKEN_BUF];
        cs_principal_t who;
        cs_auth_result_t ar;

        if (check_target(h, q, con, url, method, ret)) {
            c->http_early_other++;
            return 1;
        }
        if (q->route.bad_id) {
            c->http_early_other++;
            *ret = queue_err(h, con, CS_ERR_BAD_REQUEST,
                             "execution_id must be 1-128 characters of [A-Za-z0-9._:-]", NULL, NULL);
            return 1;
        }
        if (d->stopping) {
            c->http_early_other++;
            *ret = queue_err(h, con, CS_ERR_UNAVAILABLE, NULL, NULL, NULL);
            return 1;
        }
        ar = cs_auth_identify(d->auth, request_token(con, tokbuf, sizeof(tokbuf)), &who);
        if (ar != CS_AUTH_OK) {
            c->http_early_unauthorized++;
            *ret = queue_err(h, con, ar, NULL, NULL, NULL);
            return 1;
        }
        if (q->route.kind == CS_ROUTE_GLOBAL_SSE && (who.scopes & CS_SCOPE_PUBLISH) == 0) {
            c->http_early_forbidden++;
            *ret = queue_err(h, con, CS_ERR_FORBIDDEN, "publishing needs a token with the publish scope",
                             NULL, NULL);
            return 1;
        }
        if (q->route.kind == CS_ROUTE_KICKOFF &&
            cs_auth_authorize(&who, CS_SCOPE_KICKOFF, NULL) != CS_AUTH_OK) {
            c->http_early_forbidden++;
            *ret = queue_err(h, con, CS_ERR_FORBIDDEN,
                             "a kickoff needs a token with the kickoff scope on \"*\"", NULL, NULL);
            return 1;
        }
        if ((q->route.kind == CS_ROUTE_EXEC_ANSWER &&
             cs_auth_authorize(&who, CS_SCOPE_RESPOND, q->route.execution_id) != CS_AUTH_OK) ||
            (q->route.kind == CS_ROUTE_RESUME && (who.scopes & CS_SCOPE_RESPOND) == 0)) {
            c->http_early_forbidden++;
            *ret = queue_err(h, con, CS_ERR_FORBIDDEN,
                             "answering needs a token with respond on this execution", NULL, NULL);
            return 1;
        }
        q->limit = body_limit(d->cfg, &q->route, m);
    }
    if (q->clen > q->limit) {
        c->http_early_too_large++;
        *ret = queue_errf(
            h, con, CS_ERR_TOO_LARGE,
            "the request body is larger than this route takes (%zu bytes: limits.max_body_bytes%s)", q->limit,
            q->limit < d->cfg->max_body_bytes ? ", limits.max_event_bytes" : "");
        return 1;
    }
    return 0;
}

/* Keeps n more bytes of a POST body (within its maximum, checked by the caller). Returns 0 or -ENOMEM. */
static int body_add(cs_http_t *h, http_req_t *q, const char *data, size_t n)
{
    size_t cap = q->body.cap;
    int rc = 0;

    /* With a Content-Length (the buffer's maximum), one allocation of its size; else doubling, up to the
     * route's limit. */
    if (q->clen > 0 && q->body.p == NULL)
        rc = cs_buf_reserve(&q->body, q->body.max);
    if (rc == 0)
        rc = cs_buf_append(&q->body, data, n);
    h->d->counters.http_body_bytes += q->body.cap - cap;
    return rc;
}

static void body_free(cs_http_t *h, http_req_t *q)
{
    h->d->counters.http_body_bytes -= q->body.cap;
    cs_buf_free(&q->body);
}

static http_conn_t *conn_of(struct MHD_Connection *con)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(con, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci != NULL ? ci->socket_context : NULL;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *con, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    cs_http_t *h = cls;
    cs_daemon_t *d = h->d;
    http_req_t *q = *con_cls;
    unsigned m;
    enum MHD_Result ret;
    (void)version;

    if (q == NULL) {
        /* First call: the head only. Answering now makes MHD close the connection after the response
         * (it reads no more of this request), so a request without a body is answered on the next
         * call; one with a body is refused now if it would be refused at its end. */
        http_conn_t *c = conn_of(con);
        if (c == NULL)
            return MHD_NO; /* out of memory when the connection came */
        q = calloc(1, sizeof(*q));
        if (q == NULL)
            return MHD_NO;
        q->h = h;
        q->con = con;
        q->conn = c;
        q->nul = c->nul;
        c->nul = 0;
        c->q = q;
        *con_cls = q;
        d->counters.http_requests++;
        const char *cl = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Content-Length");
        const char *te = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Transfer-Encoding");
        q->clen = cl != NULL ? strtoull(cl, NULL, 10) : 0;
        if (q->clen == 0 && te == NULL)
            return MHD_YES;
        if (refuse_early(h, q, con, url, method, &ret)) {
            q->started = 1;
            return ret;
        }
        cs_buf_init(&q->body, q->clen > 0 && q->clen < q->limit ? (size_t)q->clen : q->limit);
        return MHD_YES;
    }
    if (q->started) {
        /* Called again: a held long-poll resumed, or more of a body we do not read. */
        if (q->kind == REQ_WAIT) {
            if (q->dead) {
                /* The client left: nothing to answer; what it published stays published. */
                waits_forget(q);
                return MHD_NO;
            }
            if (q->n_waiting > 0 && h->destroying) {
                waits_forget(q);
                return queue_err(h, con, CS_ERR_UNAVAILABLE,
                                 "the daemon stopped before the journal confirmed this: send it again (with "
                                 "its event_id, a re-post is answered with the original seq)",
                                 NULL, NULL);
            }
            if (q->n_waiting > 0) {
                /* Woken by a shutdown: its outcomes are still to come. */
                req_suspend(q);
                return MHD_YES;
            }
            return waited_reply(h, q);
        }
        if (q->kind == REQ_STATUS) {
            cs_sub_unpark(&q->sub);
            if (cs_sub_held(&q->sub) && !q->timed_out && !q->dead && !d->stopping) {
                cs_sub_park(&q->sub);
                req_suspend(q);
                return MHD_YES;
            }
            cs_timer_stop(&q->timer);
            if (cs_sub_held(&q->sub))
                cs_log_warn("http: a status read's history was still being read from Redis after %d ms: "
                            "answered with what this node holds",
                            STATUS_WAIT_MS);
            return send_status(h, q);
        }
        if (q->kind == REQ_POLL) {
            cs_sub_unpark(&q->sub);
            if (poll_try_answer(h, q,
                                q->timed_out || q->dead || d->stopping ||
                                    (q->sreq.timeout_s == 0 && !cs_sub_held(&q->sub)),
                                &ret)) {
                cs_timer_stop(&q->timer);
                return ret;
            }
            /* Woken by events this poll filters out: hold on until its deadline. */
            cs_sub_park(&q->sub);
            req_suspend(q);
            return MHD_YES;
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size != 0) {
        /* Keep a POST body that passed refuse_early (up to q->limit); read past any other body. Answer
         * at its end. */
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (q->body_seen + n > q->limit) {
            /* Only a body without a Content-Length gets here (a larger Content-Length was answered
             * 413 before its body), and MHD cannot answer in the middle of a body: close. */
            d->counters.http_body_overrun++;
            cs_log_debug("http: a %s body grew past %zu bytes: connection closed", method, q->limit);
            return MHD_NO;
        }
        q->body_seen += n;
        if (strcmp(method, "POST") == 0 && body_add(h, q, upload_data, n) != 0) {
            cs_log_warn("http: out of memory for a %zu-byte request body: connection closed", q->limit);
            return MHD_NO;
        }
        return MHD_YES;
    }
    q->started = 1;

    if (q->nul || strcmp(method, "OPTIONS") != 0) {
        if (check_target(h, q, con, url, method, &ret))
            return ret;
    } else {
        struct MHD_Response *r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
        const char *want =
            MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Access-Control-Request-Headers");
        if (r == NULL)
            return MHD_NO;
        add_cors(h, con, r);
        MHD_add_response_header(r, "Access-Control-Allow-Methods", CORS_METHODS);
        MHD_add_response_header(r, "Access-Control-Allow-Headers", want != NULL ? want : CORS_HEADERS);
        MHD_add_response_header(r, "Access-Control-Max-Age", "600");
        ret = MHD_queue_response(con, 204, r);
        MHD_destroy_response(r);
        return ret;
    }
    m = method_bit(method);
    if (q->route.kind == CS_ROUTE_HEALTH)
        return handle_health(h, con);
    if (q->route.kind == CS_ROUTE_METRICS)
        return handle_metrics(h, con);
    if (q->route.kind == CS_ROUTE_WEBHOOKS)
        return handle_webhooks(h, con);
    if (q->route.kind == CS_ROUTE_DASHBOARD || q->route.kind == CS_ROUTE_FAVICON) {
        /* The page and its icon hold no secret: the page asks for a token and passes it on. */
        int page = q->route.kind == CS_ROUTE_DASHBOARD;
        struct MHD_Response *r = MHD_create_response_from_buffer(
            page ? cs_web_index_len : cs_web_favicon_len, (void *)(page ? cs_web_index : cs_web_favicon),
            MHD_RESPMEM_PERSISTENT);
        if (r == NULL)
            return MHD_NO;
        MHD_add_response_header(r, "Content-Type", page ? "text/html; charset=utf-8" : "image/svg+xml");
        MHD_add_response_header(r, "Cache-Control", page ? "no-cache" : "max-age=86400");
        MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
        add_cors(h, con, r);
        enum MHD_Result ret = MHD_queue_response(con, 200, r);
        MHD_destroy_response(r);
        return ret;
    }
    if (q->route.bad_id)
        return queue_err(h, con, CS_ERR_BAD_REQUEST,
                         "execution_id must be 1-128 characters of [A-Za-z0-9._:-]", NULL, NULL);
    if (cs_route_is_ws(q->route.kind))
        return queue_err(h, con, CS_ERR_UPGRADE_REQUIRED, "this route speaks WebSocket only", "Upgrade",
                         "websocket");
    if (d->stopping)
        return queue_err(h, con, CS_ERR_UNAVAILABLE, NULL, NULL, NULL);
    if (m == CS_METHOD_POST) {
        ret = handle_post(h, q, con);
        body_free(h, q); /* not needed while the answer is sent */
        return ret;
    }
    if (q->route.kind == CS_ROUTE_EXECS_LIST || q->route.kind == CS_ROUTE_EXEC_STATUS ||
        q->route.kind == CS_ROUTE_SEED_STATUS)
        return handle_status(h, q, con);
    if (q->route.kind == CS_ROUTE_INPUTS || q->route.kind == CS_ROUTE_CREWS)
        return handle_gateway_get(h, q, con);
    return handle_stream(h, q, con);
}

static void on_completed(void *cls, struct MHD_Connection *con, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    cs_http_t *h = cls;
    http_req_t *q = *con_cls;
    (void)con;
    (void)toe;

    if (q == NULL)
        return;
    *con_cls = NULL;
    if (q->conn != NULL) {
        q->conn->q = NULL;
        q->conn->nul = 0;
    }
    if (q->kind == REQ_POLL || q->kind == REQ_STATUS)
        cs_timer_stop(&q->timer);
    if (q->sub_open)
        cs_sub_close(&q->sub);
    cs_sse_body_free(&q->out);
    cs_sub_req_free(&q->sreq);
    waits_free(q);
    body_free(h, q);
    if (q->listed)
        DL_DELETE(h->streams, q);
    free(q);
}

static void on_connection(void *cls, struct MHD_Connection *con, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    cs_http_t *h = cls;
    http_conn_t *c;

    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(con, MHD_CONNECTION_INFO_CONNECTION_FD);
        h->conns++;
        c = ci != NULL ? calloc(1, sizeof(*c)) : NULL;
        *socket_context = c; /* NULL: the request will be closed (on_request) */
        if (c == NULL)
            return;
        c->h = h;
        c->con = con;
        cs_io_init(&c->io, h->d->loop, ci->connect_fd, on_conn_io, c);
        conn_watch(c);
    } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
        h->conns--;
        h->d->clients--;
        c = *socket_context;
        if (c == NULL)
            return;
        *socket_context = NULL;
        if (c->q != NULL)
            c->q->conn = NULL;
        cs_io_stop(&c->io); /* the fd is still open */
        free(c);
    }
}

/* MHD's decoding of the request target, noting a decoded NUL byte: MHD hands the path on as a C
 * string, which would end at it, so such a request is refused (check_target). */
static size_t unescape(void *cls, struct MHD_Connection *con, char *s)
{
    size_t n = MHD_http_unescape(s);
    (void)cls;

    if (memchr(s, '\0', n) != NULL) {
        http_conn_t *c = conn_of(con);
        if (c != NULL)
            c->nul = 1;
    }
    return n;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];
    (void)cls;
    vsnprintf(line, sizeof(line), fmt, ap);
    /* A library message may quote a URL: never let a ?token= value reach the log. */
    for (char *p = strstr(line, "token="); p != NULL; p = strstr(p, "token=")) {
        p += 6;
        for (; *p != '\0' && *p != '&' && *p != ' ' && *p != '\n'; p++)
            *p = '*';
    }
    cs_log_debug("http: %s", line);
}

/* ---- the loop side ---- */

static void on_mhd_io(cs_io_t *io, uint32_t events)
{
    cs_http_t *h = io->data;
    (void)events;
    h->dirty = 1;
}

static int http_prepare(void *data)
{
    cs_http_t *h = data;
    MHD_UNSIGNED_LONG_LONG t;

    if (h->dirty) {
        h->dirty = 0;
        MHD_run(h->mhd);
    }
    if (h->dirty)
        return 0;
    if (MHD_get_timeout(h->mhd, &t) == MHD_YES) {
        if (t == 0) {
            /* MHD has buffered work (a request already read): do it now, not after a sleep. */
            h->dirty = 1;
            return 0;
        }
        return t > 60000 ? 60000 : (int)t;
    }
    return -1;
}

/* libmicrohttpd's own connection limit: the open-files limit, not limits.max_clients, which the
 * listener enforces before MHD sees a connection and which SIGHUP may raise. */
static unsigned mhd_connection_limit(const cs_config_t *cfg)
{
    size_t n = cs_nofile_limit(), want = cfg->max_clients + 16;

    if (n > want)
        return (unsigned)n;
    return (unsigned)(want < CS_NOFILE_CAP ? want : CS_NOFILE_CAP);
}

/* ---- the transport (cs_http_transport) ---- */

static int http_create(cs_daemon_t *d, void **out, char *err, size_t errlen)
{
    cs_http_t *h = calloc(1, sizeof(*h));
    const union MHD_DaemonInfo *di;
    const cs_config_t *cfg = d->cfg;
    int rc;

    if (h == NULL)
        return -ENOMEM;
    h->d = d;
    h->mhd = MHD_start_daemon(
        MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ERROR_LOG, 0, NULL,
        NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h, MHD_OPTION_CONNECTION_LIMIT,
        mhd_connection_limit(cfg),
        /* The pool holds the request head, the response head and the chunks being written; MHD
         * zeroes what it frees inside it, so most of it is resident per connection. */
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(cfg->head_bytes + 2048), MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)cfg->stall_s, MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_NOTIFY_CONNECTION,
        on_connection, h, MHD_OPTION_UNESCAPE_CALLBACK, unescape, h, MHD_OPTION_END);
    if (h->mhd == NULL) {
        snprintf(err, errlen, "libmicrohttpd would not start");
        free(h);
        return -EIO;
    }
    di = MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    if (di == NULL) {
        snprintf(err, errlen, "libmicrohttpd has no epoll fd");
        MHD_stop_daemon(h->mhd);
        free(h);
        return -EIO;
    }
    cs_io_init(&h->io, d->loop, di->epoll_fd, on_mhd_io, h);
    if ((rc = cs_io_start(&h->io, CS_IO_READ)) != 0 ||
        (rc = cs_loop_add_prepare(d->loop, http_prepare, h)) != 0) {
        snprintf(err, errlen, "cannot watch libmicrohttpd: %s", strerror(-rc));
        cs_io_stop(&h->io);
        MHD_stop_daemon(h->mhd);
        free(h);
        return rc;
    }
    *out = h;
    return 0;
}

/* Takes every connection that is not a WebSocket handshake (the last row: what the others decline). */
static int http_offer(void *self, cs_offer_t *o)
{
    cs_http_t *h = self;

    if (o->websocket)
        return 0;
    h->dirty = 1;
    if (MHD_add_connection(h->mhd, o->fd, o->addr, o->addrlen) != MHD_YES) {
        /* MHD has closed the socket. */
        h->d->clients--;
        cs_log_warn("http: libmicrohttpd refused a connection: %s", strerror(errno));
    }
    return 1;
}

/* Heartbeats on idle SSE streams. */
static void http_tick(void *self, int64_t now)
{
    cs_http_t *h = self;
    int64_t hb_ms = (int64_t)h->d->cfg->heartbeat_s * 1000;

    /* The tick comes every half second: send when idle for the interval less half a tick, so a
     * heartbeat is never late (the seed's SSE client reads with a 5 s timeout against 4 s beats). */
    for (http_req_t *q = h->streams; q != NULL; q = q->next) {
        if (q->kind != REQ_SSE || q->dead)
            continue;
        if (now - q->last_write >= (q->out.hitl ? CS_SSE_HITL_HEARTBEAT_MS : hb_ms) - 500) {
            q->out.hb_due = 1;
            cs_sub_unpark(&q->sub);
            req_resume(q);
        }
    }
}

/* SSE streams end, held polls are answered now. */
static void http_shutdown(void *self)
{
    cs_http_t *h = self;

    for (http_req_t *q = h->streams; q != NULL; q = q->next) {
        if (q->kind == REQ_SSE)
            q->dead = 1;
        else if (q->kind == REQ_POLL || q->kind == REQ_STATUS)
            cs_timer_stop(&q->timer);
        if (q->sub_open)
            cs_sub_unpark(&q->sub);
        req_resume(q);
    }
    h->dirty = 1;
}

/* SSE streams and long-polls in progress. */
static size_t http_count(const void *self)
{
    const cs_http_t *h = self;
    size_t n = 0;
    for (http_req_t *q = h->streams; q != NULL; q = q->next)
        n++;
    return n;
}

/* Stops libmicrohttpd, letting suspended connections go first. */
static void http_destroy(void *self)
{
    cs_http_t *h = self;

    if (h == NULL)
        return;
    /* MHD_stop_daemon aborts on a suspended connection: let every one go first. */
    h->destroying = 1;
    for (int i = 0; i < 8; i++) {
        for (http_req_t *q = h->streams; q != NULL; q = q->next) {
            if (q->kind != REQ_WAIT)
                q->dead = 1;
            if (q->kind == REQ_POLL || q->kind == REQ_STATUS)
                cs_timer_stop(&q->timer);
            if (q->sub_open)
                cs_sub_unpark(&q->sub);
            req_resume(q);
        }
        MHD_run(h->mhd);
        if (h->streams == NULL)
            break;
    }
    cs_io_stop(&h->io);
    MHD_stop_daemon(h->mhd);
    free(h);
}

const cs_transport_ops_t cs_http_transport = {
    .name = "http",
    .gauge = "http_streams",
    .gauge_help = "SSE streams, held long-polls and POSTs waiting for the journal.",
    .create = http_create,
    .offer = http_offer,
    .tick = http_tick,
    .shutdown = http_shutdown,
    .count = http_count,
    .destroy = http_destroy,
};
