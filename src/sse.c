/*
 * sse.c - see sse.h.
 *
 * A native stream is a cursor (cs_sub_t), a body, and the socket. A publish
 * wakes the cursor, which puts the stream on the ready list; before the loop
 * sleeps, every ready stream copies what its cursor has into one shared
 * buffer, as one HTTP/1.1 chunk, and sends it: one send per stream per wake-up
 * however many events it carries. What the kernel does not take is copied
 * aside and the stream waits for EPOLLOUT, reading nothing more from its
 * cursor meanwhile (a stream that falls out of the ring gets a stream.gap, as on
 * every transport). The socket stays registered for input and hang-ups only,
 * so waking a stream changes no epoll interest.
 */
#include "sse.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <utlist.h>

#include "auth.h"
#include "event.h"
#include "httputil.h"
#include "head.h"
#include "log.h"
#include "route.h"
#include "subscribe.h"

/* The shared write buffer; a wake-up sends at most SSE_ROUNDS of it per stream before the others. Fixed:
 * one buffer serves every stream (the loop is single-threaded), so its size costs nothing per stream;
 * 64 KiB is one chunk per send, the same as the largest WebSocket write (WS_TX_PACKET), and bigger turns
 * would only make the other ready streams wait longer. */
#define SSE_BUF        (64 * 1024)
#define SSE_CHUNK_HEAD 10 /* "ffffffff\r\n" at most in front of the data */
#define SSE_ROUNDS     4
/* Query-string scratch for one request: every value cs_sub_req_parse looks up stays valid (fixed: the
 * head is bounded by limits.head_bytes; a request whose values do not fit goes to libmicrohttpd). */
#define SSE_ARGS_MAX 16384

/* ---- native streams ---- */

typedef struct sse_conn sse_conn_t;

struct sse_conn {
    cs_sse_t *s;
    int fd;
    cs_io_t io;
    cs_sub_t sub;
    cs_sub_req_t req;
    cs_sse_body_t body;
    char *pend; /* what the kernel did not take, sent before anything else */
    size_t pend_len, pend_off;
    int64_t pend_since; /* when the socket last took nothing more */
    int64_t last_write;
    uint8_t ready, closing, hitl;
    cs_defer_t defer;
    sse_conn_t *prev, *next;   /* every stream */
    sse_conn_t *rprev, *rnext; /* the ready list */
    /* The tick's schedule: quiet streams by last write, blocked ones by last progress. */
    sse_conn_t **sched;
    int64_t sched_key;
    sse_conn_t *sprev, *snext;
};

struct cs_sse {
    cs_daemon_t *d;
    sse_conn_t *conns, *ready;
    /* Oldest first, so the tick looks only at the streams that are due: [0] plain, [1] human-input
     * (4 s data heartbeats), and the streams the kernel holds up. */
    sse_conn_t *quiet[2], *blocked;
    size_t n;
    char *buf; /* SSE_BUF, shared by every stream: the loop is single-threaded */
};

/* The lookup context for cs_sub_req_parse over a peeked head. */
typedef struct sse_lookup {
    const cs_head_req_t *req;
    char arena[SSE_ARGS_MAX];
    size_t used;
    int unusual; /* an argument libmicrohttpd would have to read */
} sse_lookup_t;

static const char *lookup_put(sse_lookup_t *l, const char *p, size_t n)
{
    if (n + 1 > sizeof(l->arena) - l->used) {
        l->unusual = 1;
        return NULL;
    }
    char *o = l->arena + l->used;
    memcpy(o, p, n);
    o[n] = '\0';
    l->used += n + 1;
    return o;
}

static const char *lookup_arg(void *ctx, const char *name)
{
    sse_lookup_t *l = ctx;
    char *o = l->arena + l->used;
    int r = cs_head_arg(l->req->query, name, o, sizeof(l->arena) - l->used);

    if (r < 0)
        l->unusual = 1;
    if (r <= 0)
        return NULL;
    l->used += strlen(o) + 1;
    return o;
}

static const char *lookup_header(void *ctx, const char *name)
{
    sse_lookup_t *l = ctx;
    const cs_head_str_t *v = strcmp(name, "Last-Event-ID") == 0 ? &l->req->last_event_id : NULL;

    if (v == NULL) {
        l->unusual = 1; /* a header this side does not record */
        return NULL;
    }
    return v->p != NULL ? lookup_put(l, v->p, v->n) : NULL;
}

static void conn_free(void *data)
{
    free(data);
}

/* Keeps the stream in its place in the tick's schedule after a write or a change of state. */
static void conn_place(sse_conn_t *c)
{
    cs_sse_t *s = c->s;
    sse_conn_t **want = c->pend != NULL ? &s->blocked : &s->quiet[c->hitl];
    int64_t key = c->pend != NULL ? c->pend_since : c->last_write;

    if (c->sched == want && c->sched_key == key)
        return;
    if (c->sched != NULL)
        DL_DELETE2(*c->sched, c, sprev, snext);
    DL_APPEND2(*want, c, sprev, snext);
    c->sched = want;
    c->sched_key = key;
}

static void conn_close(sse_conn_t *c)
{
    cs_sse_t *s = c->s;

    if (c->closing)
        return;
    c->closing = 1;
    cs_io_stop(&c->io);
    close(c->fd);
    s->d->clients--;
    if (c->ready)
        DL_DELETE2(s->ready, c, rprev, rnext);
    c->ready = 0;
    if (c->sched != NULL)
        DL_DELETE2(*c->sched, c, sprev, snext);
    c->sched = NULL;
    DL_DELETE(s->conns, c);
    s->n--;
    cs_sub_close(&c->sub);
    cs_sub_req_free(&c->req);
    cs_sse_body_free(&c->body);
    free(c->pend);
    c->pend = NULL;
    cs_defer(s->d->loop, &c->defer, conn_free, c);
}

static void conn_ready(sse_conn_t *c)
{
    if (!c->ready && !c->closing) {
        c->ready = 1;
        DL_APPEND2(c->s->ready, c, rprev, rnext);
    }
}

static void sub_wake(cs_sub_t *sub)
{
    conn_ready(sub->data);
}

static const cs_sub_ops_t sub_ops = {sub_wake};

/* Sends what is pending; returns 0 when all of it went, 1 when some is left, -1 when the socket is gone. */
static int send_pending(sse_conn_t *c)
{
    while (c->pend_off < c->pend_len) {
        ssize_t w =
            send(c->fd, c->pend + c->pend_off, c->pend_len - c->pend_off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN || errno == EWOULDBLOCK ? 1 : -1;
        }
        c->pend_off += (size_t)w;
        c->pend_since = c->last_write = cs_loop_now(c->s->d->loop);
    }
    free(c->pend);
    c->pend = NULL;
    c->pend_len = c->pend_off = 0;
    return 0;
}

/* Keeps buf[0..n) for later and waits for the socket to take it. */
static int keep_pending(sse_conn_t *c, const char *buf, size_t n)
{
    c->pend = malloc(n);
    if (c->pend == NULL)
        return -1;
    memcpy(c->pend, buf, n);
    c->pend_len = n;
    c->pend_off = 0;
    c->pend_since = cs_loop_now(c->s->d->loop);
    return cs_io_start(&c->io, CS_IO_READ | CS_IO_RDHUP | CS_IO_WRITE) == 0 ? 0 : -1;
}

/* Writes what the stream has, as chunks, until it is caught up, the socket is full, or its turn ends. */
static void conn_write(sse_conn_t *c)
{
    cs_sse_t *s = c->s;
    char *data = s->buf + SSE_CHUNK_HEAD;
    const size_t max = SSE_BUF - SSE_CHUNK_HEAD - 2;

    if (c->pend != NULL) {
        int r = send_pending(c);
        if (r < 0)
            conn_close(c);
        if (r != 0)
            return;
        cs_io_start(&c->io, CS_IO_READ | CS_IO_RDHUP);
    }
    for (int round = 0; round < SSE_ROUNDS; round++) {
        if (c->body.nparts == 0 && cs_sub_history_lost(&c->sub)) {
            /* Its start's history could not be read (logged and counted by the cluster): the stream ends
             * rather than skip it, and the client resumes from its last id. */
            (void)!send(c->fd, "0\r\n\r\n", 5, MSG_NOSIGNAL | MSG_DONTWAIT);
            shutdown(c->fd, SHUT_WR);
            conn_close(c);
            return;
        }
        size_t n = cs_sse_body_fill(&c->body, &c->sub, data, max);
        if (n == 0) {
            cs_sub_park(&c->sub);
            return;
        }
        /* The chunk's size line goes right before the data, its CRLF after it. */
        char hex[SSE_CHUNK_HEAD + 1];
        int hl = snprintf(hex, sizeof(hex), "%zx\r\n", n);
        char *start = data - hl;
        memcpy(start, hex, (size_t)hl);
        memcpy(data + n, "\r\n", 2);
        size_t total = (size_t)hl + n + 2;
        ssize_t w;
        do
            w = send(c->fd, start, total, MSG_NOSIGNAL | MSG_DONTWAIT);
        while (w < 0 && errno == EINTR);
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            conn_close(c);
            return;
        }
        if (w < 0)
            w = 0;
        if (w > 0)
            c->last_write = cs_loop_now(s->d->loop);
        if ((size_t)w < total) {
            if (keep_pending(c, start + w, total - (size_t)w) != 0)
                conn_close(c);
            return;
        }
        if (n < max) {
            cs_sub_park(&c->sub);
            return;
        }
    }
    conn_ready(c); /* more to send: after the other streams have had their turn */
}

static void conn_flush(sse_conn_t *c)
{
    conn_write(c);
    if (!c->closing)
        conn_place(c);
}

static int sse_prepare(void *data)
{
    cs_sse_t *s = data;
    sse_conn_t *last = s->ready != NULL ? s->ready->rprev : NULL;

    /* Each stream that is ready now gets one turn; one that still has more is appended again. */
    while (s->ready != NULL) {
        sse_conn_t *c = s->ready;
        int was_last = c == last;
        DL_DELETE2(s->ready, c, rprev, rnext);
        c->ready = 0;
        conn_flush(c);
        if (was_last)
            break;
    }
    return s->ready != NULL ? 0 : -1;
}

static void on_io(cs_io_t *io, uint32_t events)
{
    sse_conn_t *c = io->data;
    char sink[512];
    ssize_t n;

    if (events & (CS_IO_READ | CS_IO_RDHUP | CS_IO_HUP | CS_IO_ERR)) {
        /* Nothing is expected after the head: discard it, and notice the client leaving. */
        while ((n = recv(c->fd, sink, sizeof(sink), MSG_DONTWAIT)) > 0)
            ;
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) ||
            (events & (CS_IO_HUP | CS_IO_ERR))) {
            conn_close(c);
            return;
        }
    }
    if ((events & CS_IO_WRITE) && c->pend != NULL)
        conn_flush(c);
}

/* The response head, as libmicrohttpd writes it for the same stream. */
static int write_head(cs_sse_t *s, char *buf, size_t cap, const cs_head_req_t *hr)
{
    char date[64];
    struct tm tm;
    time_t now = time(NULL);
    int vary;
    const char *allow = cs_cors_allow(s->d->cfg, hr->origin.p, hr->origin.n, &vary);

    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    return snprintf(buf, cap,
                    "HTTP/1.1 200 OK\r\nDate: %s\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
                    "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n%s%s%s%s"
                    "Transfer-Encoding: chunked\r\n\r\n",
                    date, allow ? "Access-Control-Allow-Origin: " : "", allow ? allow : "",
                    allow ? "\r\n" : "", vary ? "Vary: Origin\r\n" : "");
}

/* The presented token (cs_auth_request_token), kept in the lookup arena. */
static const char *request_token(sse_lookup_t *l, const cs_head_req_t *hr)
{
    const char *authorization =
        hr->authorization.p != NULL ? lookup_put(l, hr->authorization.p, hr->authorization.n) : NULL;
    const char *arg = lookup_arg(l, "token");
    char *buf = l->arena + l->used;
    const char *t = cs_auth_request_token(authorization, arg, buf, sizeof(l->arena) - l->used);

    if (t == buf)
        l->used += strlen(buf) + 1;
    return t;
}

/*
 * Offered a connection: takes it when its head (nothing after it) asks for an SSE stream that is served
 * here (the head is consumed and fd belongs to the stream); declines anything else untouched, for
 * libmicrohttpd.
 */
static int sse_offer(void *self, cs_offer_t *o)
{
    cs_sse_t *s = self;
    cs_daemon_t *d = s->d;
    int fd = o->fd;
    const char *buf = o->head;
    size_t head_len = o->head_len;
    cs_head_req_t hr;
    cs_route_t rt;
    static sse_lookup_t lk; /* 16 KiB: not on the stack; the loop is single-threaded */
    char err[256];
    sse_conn_t *c;

    if (o->websocket || o->peeked != head_len || d->stopping || cs_head_parse(buf, head_len, &hr) != 0)
        return 0;
    if (cs_route_match(hr.path.p, hr.path.n, &rt) == CS_ROUTE_NONE || rt.bad_id)
        return 0;
    if (rt.kind != CS_ROUTE_EXEC_SSE && rt.kind != CS_ROUTE_HITL_SSE && rt.kind != CS_ROUTE_GLOBAL_SSE)
        return 0;
    lk.req = &hr;
    lk.used = 0;
    lk.unusual = 0;
    const char *token = request_token(&lk, &hr);
    if (lk.unusual)
        return 0;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return 0;
    /* Whatever would be refused is libmicrohttpd's to answer, as is a lookup this side cannot make. */
    if (cs_subscribe_check(d, &rt, token, lookup_arg, lookup_header, &lk, &c->req, NULL, err, sizeof(err)) !=
        0) {
        free(c);
        return 0;
    }
    if (lk.unusual) {
        cs_sub_req_free(&c->req);
        free(c);
        return 0;
    }
    /* Everything checks out: take the head off the socket (it is all there, nothing after it). */
    if (recv(fd, s->buf, head_len, MSG_DONTWAIT) != (ssize_t)head_len) {
        cs_log_warn("sse: the request head could not be read again (%s): connection closed", strerror(errno));
        cs_sub_req_free(&c->req);
        free(c);
        close(fd);
        d->clients--;
        return 1;
    }
    c->s = s;
    c->fd = fd;
    c->hitl = (uint8_t)cs_route_is_hitl(rt.kind);
    c->last_write = cs_loop_now(d->loop);
    d->counters.http_requests++;
    int global = rt.kind == CS_ROUTE_GLOBAL_SSE;
    int rc = cs_subscribe_open(d, &rt, &c->req, &c->sub, &sub_ops, c), opened = rc == 0;
    cs_io_init(&c->io, d->loop, fd, on_io, c);
    int hl = write_head(s, s->buf, SSE_BUF, &hr);
    if (rc != 0 || (rc = cs_io_start(&c->io, CS_IO_READ | CS_IO_RDHUP)) != 0) {
        cs_log_warn("sse: cannot start a stream (%s): connection closed", strerror(-rc));
        if (opened)
            cs_sub_close(&c->sub);
        cs_sub_req_free(&c->req);
        free(c);
        close(fd);
        d->clients--;
        return 1;
    }
    cs_sse_body_init(&c->body, d->store, c->hitl, global, c->req.named);
    DL_APPEND(s->conns, c);
    s->n++;
    /* The head goes first, as pending output; the body follows when the stream's turn comes. */
    if (keep_pending(c, s->buf, (size_t)hl) != 0) {
        conn_close(c);
        return 1;
    }
    conn_place(c);
    conn_ready(c);
    return 1;
}

/* Heartbeats to quiet streams, and the end of streams that make no progress. */
static void sse_tick(void *self, int64_t now)
{
    cs_sse_t *s = self;
    int64_t hb_ms[2] = {(int64_t)s->d->cfg->heartbeat_s * 1000, CS_SSE_HITL_HEARTBEAT_MS};
    int64_t stall_ms = (int64_t)s->d->cfg->stall_s * 1000;

    /* Each list is oldest first: stop at the first stream that is not due, so an idle daemon with
     * thousands of quiet streams looks at none of them. */
    while (s->blocked != NULL && now - s->blocked->pend_since >= stall_ms) {
        cs_log_info("sse: a client took nothing for %us: disconnected", s->d->cfg->stall_s);
        s->d->counters.stalls++;
        conn_close(s->blocked);
    }
    for (int k = 0; k < 2; k++) {
        /* Sent when idle for the interval less half a tick, so a heartbeat is never late. */
        for (sse_conn_t *c = s->quiet[k]; c != NULL && now - c->last_write >= hb_ms[k] - 500; c = c->snext) {
            c->body.hb_due = 1;
            cs_sub_unpark(&c->sub);
            conn_ready(c);
        }
    }
}

/* Ends every stream (the last chunk, then close). */
static void sse_shutdown(void *self)
{
    cs_sse_t *s = self;

    while (s->conns != NULL) {
        sse_conn_t *c = s->conns;
        /* The last chunk, best effort: the stream ends cleanly and EventSource reconnects. */
        if (c->pend == NULL)
            (void)!send(c->fd, "0\r\n\r\n", 5, MSG_NOSIGNAL | MSG_DONTWAIT);
        shutdown(c->fd, SHUT_WR);
        conn_close(c);
    }
}

static size_t sse_count(const void *self)
{
    return ((const cs_sse_t *)self)->n;
}

static int sse_create(cs_daemon_t *d, void **out, char *err, size_t errlen)
{
    cs_sse_t *s = calloc(1, sizeof(*s));
    int rc;

    if (s == NULL || (s->buf = malloc(SSE_BUF)) == NULL) {
        snprintf(err, errlen, "sse: out of memory");
        free(s);
        return -ENOMEM;
    }
    s->d = d;
    if ((rc = cs_loop_add_prepare(d->loop, sse_prepare, s)) != 0) {
        snprintf(err, errlen, "sse: %s", strerror(-rc));
        free(s->buf);
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

static void sse_destroy(void *self)
{
    cs_sse_t *s = self;

    if (s == NULL)
        return;
    while (s->conns != NULL)
        conn_close(s->conns);
    free(s->buf);
    free(s);
}

const cs_transport_ops_t cs_sse_transport = {
    .name = "sse",
    .gauge = "http_streams",
    .gauge_help = "SSE streams and held long-polls.",
    .create = sse_create,
    .offer = sse_offer,
    .tick = sse_tick,
    .shutdown = sse_shutdown,
    .count = sse_count,
    .destroy = sse_destroy,
};
