/*
 * ws.c - see ws.h.
 *
 * Debian builds libwebsockets 4.1.6 without external-poll support, so lws runs on
 * a libuv loop that we own and never run by itself: uv_backend_fd() (an epoll fd)
 * sits in our epoll loop, and uv_run(UV_RUN_NOWAIT) is called from the before-sleep
 * hook whenever that fd is readable, a libuv timer is due, libuv has pending work,
 * or we called into lws from outside an lws callback (libuv applies fd interest
 * changes only inside uv_run). Nothing polls: an idle daemon sleeps in epoll.
 *
 * Each adopted connection gets a ws_conn_t, carried as the wsi's opaque user data
 * from adoption to LWS_CALLBACK_WSI_DESTROY, so it survives the HTTP-to-WebSocket
 * transition (lws frees and reallocates per-session data when it rebinds the
 * protocol). The handshake is judged in LWS_CALLBACK_HTTP_CONFIRM_UPGRADE, where a
 * refusal is a complete HTTP/1.1 response we write ourselves (lws_return_http_status
 * would say HTTP/1.0, which WebSocket clients reject as malformed).
 *
 * A session is a cursor into the store (cs_sub_t), never a queue: each
 * SERVER_WRITEABLE sends one thing - a pending close, a keep-alive ping, the next piece
 * of a large message, a reply to the client, or the events the cursor has, framed back
 * to back into one raw write - then asks for the next WRITEABLE or parks the cursor
 * until the next publish wakes it. No write is larger than WS_TX_PACKET: a frame too
 * large for a batch goes out as a fragmented message, one piece of at most WS_PIECE
 * bytes per WRITEABLE, straight from the shared frame, which the connection holds a
 * reference to until its last piece is written. lws copies what the kernel does not
 * take of a write and grants the next WRITEABLE only once that is sent, so a client
 * that stops reading makes the daemon hold at most one write (WS_TX_PACKET) for it.
 *
 * Replies to a client's messages wait in a queue of WS_OUTQ; when it is full, lws stops
 * reading that client (lws_rx_flow_control) until WRITEABLE has sent half of them, so
 * a client that sends faster than it reads is slowed down, never answered partially.
 */
#include "ws.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <jansson.h>
#include <libwebsockets.h>
#include <utlist.h>
#include <uv.h>

#include "buf.h"
#include "err.h"
#include "event.h"
#include "httputil.h"
#include "log.h"
#include "head.h"
#include "route.h"
#include "subscribe.h"

_Static_assert(CS_FRAME_PRE == LWS_PRE,
               "frames carry exactly LWS_PRE bytes of head-room for the WebSocket header");

#define WS_PROTOCOL_NAME "crewstream"
/* lws allocates the receive buffer per connection: client messages are small HITL answers, and
 * bigger ones arrive over several RECEIVE callbacks: 1 KiB makes an idle connection ~3.6 KiB, not ~6.6. */
#define WS_RX_BUFFER 1024
/* The most one send() may carry; what the kernel does not take, lws keeps and sends later. */
#define WS_TX_PACKET (64 * 1024)
/* The payload of one piece of a fragmented message: with its header (at most 10 bytes), one write
 * stays within WS_TX_PACKET. */
#define WS_PIECE (WS_TX_PACKET - LWS_PRE)
/* The largest client message; bigger ones are closed with 1009 (too_large). Fixed, not configured: a
 * client sends nothing but answers to human-input requests (a few hundred bytes), and this is what one
 * connection can make the daemon buffer (times limits.max_clients). An answer with a longer feedback
 * goes over HTTP, which takes up to limits.max_event_bytes. */
#define WS_MSG_MAX (64 * 1024)
/* Replies waiting for WRITEABLE, per connection. A full queue stops reading the client until
 * WS_OUTQ_RESUME are left; a reply that still finds it full closes the connection with 1008. Fixed:
 * reading stops when it is full, so a deeper queue would only hold more memory per connection
 * (8 x ~300 bytes), never lose or delay fewer replies. */
#define WS_OUTQ        8
#define WS_OUTQ_RESUME (WS_OUTQ / 2)
/* After a stall is noticed, how long the close frame may wait before lws drops the socket (fixed: the
 * stall itself, limits.stall_s, is the configured wait; this is only the close's grace). */
#define WS_STALL_GRACE_S 5
/* uv_run rounds per before-sleep hook before handing back to the loop (fixed: fairness between lws and
 * the other transports, not a limit a deployment tunes). */
#define WS_UV_ROUNDS 16
/* Query-string scratch: one argument (lws copies "name=value"), and every value a request uses (fixed:
 * the head itself is bounded by limits.head_bytes, and an option longer than this is no valid one). */
#define WS_ARG_MAX  8192
#define WS_ARGS_MAX 16384
/* A presented token: as on HTTP (httputil.h). */
#define WS_TOKEN_MAX CS_TOKEN_BUF
/* An Origin is a scheme, a host and a port: longer than this it is none that http.cors_origins lists
 * (config.c bounds its entries at 256 bytes). */
#define WS_ORIGIN_MAX 320

typedef struct ws_conn ws_conn_t;
typedef struct ws_wait ws_wait_t;

/*
 * A reply held in message order behind an answer the journal confirms later (CS_PENDING): from the first
 * pending answer on, every reply of that connection waits here, and the ready ones at the front move to
 * the reply queue as they come, so the replies leave in the order of the messages.
 */
struct ws_wait {
    ws_conn_t *c;
    uint64_t ticket; /* of the pending answer; 0 once its reply is in */
    cs_store_done_t done;
    char *text; /* the reply (JSON), NULL until it is in */
    size_t len;
    ws_wait_t *next;
};

struct ws_conn {
    cs_ws_t *ws;
    struct lws *wsi;
    ws_conn_t *prev, *next; /* every adopted connection (utlist DL) */
    int established;
    int detached; /* the subscriber and replies are gone; only the struct is left */

    /* From CONFIRM_UPGRADE to ESTABLISHED. */
    cs_route_t route;
    cs_sub_req_t req;
    int have_req;
    int can_respond; /* the handshake's token may answer human-input requests of this execution */
    char who[72];    /* its name (answered_by), copied: a reload may replace the token table */

    cs_sub_t sub;
    int sub_open;

    /* Output: what WRITEABLE has to send, in this order of priority. */
    int close_code; /* 1001 (shutdown), 1013 (stalled), 0 = none */
    char close_reason[96];
    size_t close_reason_len;
    int close_sent; /* the close is under way: nothing more is written */
    int ping_due;
    unsigned char *outq[WS_OUTQ]; /* replies, each with LWS_PRE bytes of head-room */
    size_t outq_len[WS_OUTQ];
    unsigned outq_head, outq_n;
    int rx_paused;                 /* the queue filled up: lws does not read this client until it drains */
    ws_wait_t *waits, *waits_tail; /* replies held behind a pending answer, in message order */
    unsigned n_waits;              /* counted with outq_n against WS_OUTQ */
    /* A message too large for a batch, going out in pieces: the frame (a reference) and how much
     * of its JSON is written. */
    cs_frame_t *held;
    size_t held_off;
    unsigned char *gap; /* the last stream.gap sent, with head-room */
    size_t gap_cap;

    int want_write;     /* writable requested and not yet granted */
    int64_t want_since; /* when that started: the last progress */
    int64_t last_ping;
    /* The tick's schedules, oldest first: established sessions by last ping, and sessions waiting
     * for WRITEABLE by how long they have waited. */
    ws_conn_t *pprev, *pnext, *wprev, *wnext;
    uint8_t in_pings, in_waits;
    int stalled;

    /* Input: one client message, assembled from its fragments (at most WS_MSG_MAX bytes). */
    cs_buf_t rx;
};

/* The lookup context for cs_sub_req_parse: every value it returns stays valid for the whole parse. */
typedef struct ws_args {
    struct lws *wsi;
    char frag[WS_ARG_MAX];
    char arena[WS_ARGS_MAX];
    size_t used;
} ws_args_t;

struct cs_ws {
    cs_daemon_t *d;
    uv_loop_t uv;
    int uv_inited;
    void *loops[1];
    struct lws_protocols protocols[2];
    struct lws_context *ctx;
    struct lws_context *ctx_alive; /* lws writes NULL here when the context is fully destroyed */
    struct lws_vhost *vh;
    cs_io_t io;
    int dirty; /* an lws call was made outside uv_run: run libuv before sleeping */
    int stopping;
    size_t n_conns;      /* adopted and not yet destroyed, handshakes included */
    ws_conn_t *conns;    /* all of them */
    ws_conn_t *pings;    /* established, last pinged first */
    ws_conn_t *waits;    /* waiting for WRITEABLE, longest first */
    ws_conn_t *adopting; /* the connection lws_adopt is creating right now */
    size_t n_held;       /* connections in the middle of a fragmented message */
    int adopt_created, adopt_destroyed;
    ws_args_t args;
};

static void ws_sub_wake(cs_sub_t *sub);
static const cs_sub_ops_t ws_sub_ops = {ws_sub_wake};

/* ---- small helpers ---- */

static int64_t ws_now(const cs_ws_t *ws)
{
    return cs_loop_now(ws->d->loop);
}

/* Copies s into out for a log line: printable ASCII only, at most outlen - 1 bytes. */
static void ws_printable(char *out, size_t outlen, const char *s, size_t len)
{
    size_t o = 0;

    for (size_t i = 0; i < len && o + 1 < outlen; i++)
        out[o++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    out[o] = '\0';
}

/* Asks lws for a WRITEABLE callback and remembers when the wait began (for stall detection). */
static void ws_want_write(ws_conn_t *c)
{
    if (c->wsi == NULL || c->detached || c->close_sent)
        return;
    if (!c->want_write) {
        c->want_write = 1;
        c->want_since = ws_now(c->ws);
        if (!c->in_waits) {
            DL_APPEND2(c->ws->waits, c, wprev, wnext);
            c->in_waits = 1;
        }
    }
    lws_callback_on_writable(c->wsi);
    c->ws->dirty = 1;
}

static int ws_has_more(ws_conn_t *c)
{
    if (c->close_sent)
        return 0;
    return c->close_code != 0 || c->ping_due || c->held != NULL || c->outq_n > 0 ||
           (c->sub_open && cs_sub_has_next(&c->sub));
}

/* Closes the connection, once WRITEABLE comes, with close code code and reason; nothing else is sent
 * first. */
static void ws_close_code(ws_conn_t *c, unsigned code, const char *reason)
{
    if (c->close_code != 0 || c->close_sent)
        return;
    c->close_code = (int)code;
    c->close_reason_len = strlen(reason);
    if (c->close_reason_len > sizeof(c->close_reason))
        c->close_reason_len = sizeof(c->close_reason);
    memcpy(c->close_reason, reason, c->close_reason_len);
    ws_want_write(c);
}

/* The same with the close code of err (err.h). */
static void ws_close_with(ws_conn_t *c, int err, const char *reason)
{
    ws_close_code(c, cs_err_ws_close(err), reason);
}

static void ws_check_pause(ws_conn_t *c);

/* Queues one reply frame (JSON text) for the client. */
static void ws_queue_reply(ws_conn_t *c, const char *json, size_t len)
{
    unsigned char *buf;

    if (c->outq_n == WS_OUTQ) {
        /* Reading stops when the queue fills, so only messages lws had already read can get here:
         * rather than leave one unanswered, the connection ends with a reason. */
        if (c->close_code == 0) {
            c->ws->d->counters.ws_flood_closed++;
            cs_log_info(
                "ws: a client of %s sends messages faster than it reads the replies: closing it (1008)",
                c->route.execution_id);
        }
        ws_close_with(c, CS_ERR_REPLIES_UNREAD, "replies not read: too many messages waiting for an answer");
        return;
    }
    buf = malloc(LWS_PRE + len);
    if (buf == NULL) {
        cs_log_error("ws: out of memory queuing a reply: closing the connection (1011)");
        ws_close_with(c, CS_ERR_INTERNAL, "out of memory");
        return;
    }
    memcpy(buf + LWS_PRE, json, len);
    unsigned i = (c->outq_head + c->outq_n) % WS_OUTQ;
    c->outq[i] = buf;
    c->outq_len[i] = len;
    c->outq_n++;
    ws_check_pause(c);
    ws_want_write(c);
}

/* Backpressure: lws keeps what it has read of this client and reads no more until the replies (queued and
 * held behind a pending answer) are out (ws_writeable resumes it). */
static void ws_check_pause(ws_conn_t *c)
{
    if (c->outq_n + c->n_waits >= WS_OUTQ && !c->rx_paused && c->wsi != NULL) {
        /* Backpressure: lws keeps what it has read of this client and reads no more until the
         * replies are out (ws_writeable resumes it). */
        c->rx_paused = 1;
        c->ws->d->counters.ws_rx_paused++;
        lws_rx_flow_control(c->wsi, 0);
        c->ws->dirty = 1;
    }
}

/* Moves the replies at the front of the held ones that are in to the reply queue, in message order. */
static void ws_waits_drain(ws_conn_t *c)
{
    while (c->waits != NULL && c->waits->text != NULL) {
        ws_wait_t *w = c->waits;
        c->waits = w->next;
        if (c->waits == NULL)
            c->waits_tail = NULL;
        c->n_waits--;
        ws_queue_reply(c, w->text, w->len);
        free(w->text);
        free(w);
    }
}

/* Appends w to c's held replies. */
static void ws_wait_append(ws_conn_t *c, ws_wait_t *w)
{
    w->c = c;
    if (c->waits_tail != NULL)
        c->waits_tail->next = w;
    else
        c->waits = w;
    c->waits_tail = w;
    c->n_waits++;
    ws_check_pause(c);
}

/* Frees c's held replies, forgetting the answers still pending (nobody to tell any more: they stay
 * published). */
static void ws_waits_clear(ws_conn_t *c)
{
    while (c->waits != NULL) {
        ws_wait_t *w = c->waits;
        c->waits = w->next;
        if (w->ticket != 0)
            cs_store_forget(c->ws->d->store, w->ticket);
        free(w->text);
        free(w);
    }
    c->waits_tail = NULL;
    c->n_waits = 0;
}

/* Sends a reply (JSON text, copied) in message order: at once, or behind the replies held for a pending
 * answer. */
static void ws_reply(ws_conn_t *c, const char *json, size_t len)
{
    if (c->waits == NULL) {
        ws_queue_reply(c, json, len);
        return;
    }
    ws_wait_t *w = calloc(1, sizeof(*w));
    char *t = malloc(len > 0 ? len : 1);
    if (w == NULL || t == NULL) {
        free(w);
        free(t);
        cs_log_error("ws: out of memory holding a reply: closing the connection (1011)");
        ws_close_with(c, CS_ERR_INTERNAL, "out of memory");
        return;
    }
    memcpy(t, json, len);
    w->text = t;
    w->len = len;
    ws_wait_append(c, w);
}

static void ws_reply_error(ws_conn_t *c, const char *code, const char *detail)
{
    json_t *o = json_pack("{s:s, s:s, s:s}", "type", "error", "error", code, "detail", detail);
    char *s = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;

    json_decref(o);
    if (s == NULL) {
        /* A reply is never dropped: without it the connection ends, with a reason. */
        cs_log_error("ws: out of memory rendering a reply: closing the connection (1011)");
        ws_close_with(c, CS_ERR_INTERNAL, "out of memory");
        return;
    }
    ws_reply(c, s, strlen(s));
    free(s);
}

/* Renders the reply to an answer taken (e CS_OK: the ack) or refused, as text (malloc'd, NULL when out of
 * memory). */
static char *ws_answer_reply(ws_conn_t *c, cs_err_t e, const cs_publish_t *pub, const char *detail)
{
    if (e == CS_OK)
        return cs_take_answer_ack(c->route.execution_id, c->route.execution_id_len, pub, 1);
    json_t *o = json_pack("{s:s, s:s, s:s}", "type", "error", "error", cs_err_name(e), "detail",
                          detail != NULL && detail[0] != '\0' ? detail : cs_err_detail(e));
    char *s = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

/* The journal's word on a pending answer: its reply, in its place; the ready ones go out in order. */
static void ws_on_confirmed(void *data, cs_err_t e, const cs_publish_t *pub, const char *detail)
{
    ws_wait_t *w = data;
    ws_conn_t *c = w->c;

    w->ticket = 0;
    w->text = ws_answer_reply(c, e, pub, detail);
    if (w->text == NULL) {
        cs_log_error("ws: out of memory rendering an ack: closing the connection (1011)");
        ws_close_with(c, CS_ERR_INTERNAL, "out of memory");
        return;
    }
    w->len = strlen(w->text);
    ws_waits_drain(c);
}

/*
 * One complete client message: a HITL answer ({"event_id" or "task_id", "human_feedback",
 * "is_approve"}) for this connection's execution. Replies {"type":"ack",...} or {"type":"error",...}.
 */
static void ws_on_message(ws_conn_t *c, const char *msg, size_t len)
{
    cs_daemon_t *d = c->ws->d;
    char detail[300];
    json_t *o = NULL;
    cs_publish_t pub;
    int e;

    ws_wait_t *w = NULL;

    e = cs_line_parse(msg, len, d->cfg->json_depth ? d->cfg->json_depth : 32, &o, detail, sizeof(detail));
    /* With a journal the ack comes once the answer is confirmed: a place for it, had first. */
    if (e == CS_OK && cs_store_may_defer(d->store) && (w = calloc(1, sizeof(*w))) == NULL) {
        e = CS_ERR_INTERNAL;
        snprintf(detail, sizeof(detail), "out of memory: the answer was not taken; send it again");
    }
    if (w != NULL) {
        w->c = c;
        w->done.fn = ws_on_confirmed;
        w->done.data = w;
    }
    if (e == CS_OK)
        e = cs_take_answer(d, o, c->route.execution_id, c->route.execution_id_len, c->can_respond, c->who,
                           w != NULL ? &w->done : NULL, &pub, detail, sizeof(detail));
    json_decref(o);
    if (e == CS_PENDING) {
        w->ticket = pub.ticket; /* its ack comes in message order when the journal confirms it */
        ws_wait_append(c, w);
        return;
    }
    free(w);
    if (e != CS_OK) {
        ws_reply_error(c, cs_err_name(e), detail);
        return;
    }
    char *s = cs_take_answer_ack(c->route.execution_id, c->route.execution_id_len, &pub, 1);
    if (s == NULL) {
        cs_log_error("ws: out of memory rendering an ack: closing the connection (1011)");
        ws_close_with(c, CS_ERR_INTERNAL, "out of memory");
        return;
    }
    ws_reply(c, s, strlen(s));
    free(s);
}

/* Drops what a connection holds in the store and in memory; idempotent. The struct itself stays
 * until WSI_DESTROY. */
static void ws_conn_detach(ws_conn_t *c)
{
    if (c->detached)
        return;
    c->detached = 1;
    if (c->sub_open) {
        cs_sub_close(&c->sub);
        c->sub_open = 0;
    }
    if (c->have_req) {
        cs_sub_req_free(&c->req);
        c->have_req = 0;
    }
    ws_waits_clear(c);
    while (c->outq_n > 0) {
        free(c->outq[c->outq_head]);
        c->outq_head = (c->outq_head + 1) % WS_OUTQ;
        c->outq_n--;
    }
    if (c->held != NULL) {
        cs_frame_unref(c->ws->d->store, c->held);
        c->held = NULL;
        c->ws->n_held--;
    }
    free(c->gap);
    c->gap = NULL;
    c->gap_cap = 0;
    cs_buf_free(&c->rx);
}

/* The end of a connection's life: lws is freeing its wsi. */
static void ws_conn_free(ws_conn_t *c)
{
    cs_ws_t *ws = c->ws;

    ws_conn_detach(c);
    if (c->in_pings)
        DL_DELETE2(ws->pings, c, pprev, pnext);
    if (c->in_waits)
        DL_DELETE2(ws->waits, c, wprev, wnext);
    DL_DELETE(ws->conns, c);
    ws->n_conns--;
    ws->d->clients--;
    if (c == ws->adopting)
        ws->adopt_destroyed = 1;
    free(c);
}

/* ---- the handshake ---- */

static const char *ws_arg_keep(ws_args_t *a, const char *v)
{
    size_t n = strlen(v);

    if (a->used + n + 1 > sizeof(a->arena))
        return NULL;
    char *p = a->arena + a->used;
    memcpy(p, v, n + 1);
    a->used += n + 1;
    return p;
}

/* cs_lookup_fn over the query string: lws matches "name=" as a prefix of each argument. */
static const char *ws_lookup_arg(void *ctx, const char *name)
{
    ws_args_t *a = ctx;
    char key[40];
    const char *v;

    if ((size_t)snprintf(key, sizeof(key), "%s=", name) >= sizeof(key))
        return NULL;
    v = lws_get_urlarg_by_name(a->wsi, key, a->frag, (int)sizeof(a->frag));
    return v != NULL ? ws_arg_keep(a, v) : NULL;
}

/* cs_lookup_fn over the request headers; lws keeps headers it does not know by their name. */
static const char *ws_lookup_header(void *ctx, const char *name)
{
    ws_args_t *a = ctx;
    char key[64];
    int kl;

    kl = snprintf(key, sizeof(key), "%s:", name);
    if (kl < 0 || (size_t)kl >= sizeof(key))
        return NULL;
    for (int i = 0; i < kl; i++)
        key[i] = (char)(key[i] >= 'A' && key[i] <= 'Z' ? key[i] + 32 : key[i]);
    if (lws_hdr_custom_copy(a->wsi, a->frag, (int)sizeof(a->frag), key, kl) < 0)
        return NULL;
    return ws_arg_keep(a, a->frag);
}

/* Writes the Access-Control-Allow-Origin line (if any) for the request's Origin into out. */
/*
 * The handshake's Origin against http.cors_origins (cs_cors_allow). Returns 1 when allowed: every
 * origin under "*", a listed one, or no Origin at all (not a browser); 0 otherwise, including an
 * Origin too long to be one of the listed. allow/vary receive the CORS answer for the response.
 */
static int ws_origin(cs_ws_t *ws, struct lws *wsi, const char **allow, int *vary)
{
    char origin[WS_ORIGIN_MAX];
    int total = lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN);
    int n = total > 0 ? lws_hdr_copy(wsi, origin, (int)sizeof(origin), WSI_TOKEN_ORIGIN) : 0;

    if (n < 0)
        n = 0;
    *allow = cs_cors_allow(ws->d->cfg, n > 0 ? origin : NULL, (size_t)n, vary);
    if (*allow != NULL && strpbrk(*allow, "\r\n") != NULL)
        *allow = NULL;
    return total <= 0 || *allow != NULL;
}

static void ws_cors_line(cs_ws_t *ws, struct lws *wsi, char *out, size_t outlen)
{
    const char *allow;
    int vary;

    out[0] = '\0';
    ws_origin(ws, wsi, &allow, &vary);
    if (allow != NULL)
        snprintf(out, outlen, "Access-Control-Allow-Origin: %s\r\n%s", allow, vary ? "Vary: Origin\r\n" : "");
}

/*
 * What a log line shows of a handshake's path: the route it matched and nothing else. A client may
 * have put a token anywhere in the path ("/ws&token=S", ";token=S"): whatever is not a route with a
 * valid execution id is not repeated.
 */
static const char *ws_route_shown(const cs_route_t *r, char *out, size_t outlen)
{
    const char *id = r->bad_id ? "(invalid id)" : r->execution_id;

    if (r->kind == CS_ROUTE_EXEC_WS)
        snprintf(out, outlen, "/v1/executions/%s/ws", id);
    else if (r->kind == CS_ROUTE_HITL_WS)
        snprintf(out, outlen, "/ws/human-input/%s", id);
    else
        snprintf(out, outlen, "a path that is no WebSocket route");
    return out;
}

/*
 * Refuses the handshake with a complete HTTP/1.1 response and a JSON error body. Returns -1: the
 * caller hangs up, after lws has flushed the response.
 */
static int ws_refuse(ws_conn_t *c, struct lws *wsi, const cs_route_t *route, int err, const char *detail)
{
    cs_ws_t *ws = c->ws;
    char cors[320], shown[CS_EXECUTION_ID_MAX + 64];
    size_t blen = 0;
    unsigned status = cs_err_http_status(err);
    const char *code = cs_err_http_name(err);
    char *body = cs_err_json(err, detail, &blen);
    unsigned char *buf = NULL;
    int hl;

    ws->d->counters.ws_refused++;
    cs_log_info("ws: refused %s: %u %s", ws_route_shown(route, shown, sizeof(shown)), status, code);
    if (body == NULL)
        goto out;
    ws_cors_line(ws, wsi, cors, sizeof(cors));
    char head[640];
    hl = snprintf(head, sizeof(head),
                  "HTTP/1.1 %u %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                  "Connection: close\r\nCache-Control: no-store\r\n%s%s\r\n",
                  status, cs_http_reason(status), blen, status == 401 ? "WWW-Authenticate: Bearer\r\n" : "",
                  cors);
    if (hl < 0 || (size_t)hl >= sizeof(head))
        goto out;
    buf = malloc(LWS_PRE + (size_t)hl + blen);
    if (buf == NULL)
        goto out;
    memcpy(buf + LWS_PRE, head, (size_t)hl);
    memcpy(buf + LWS_PRE + hl, body, blen);
    lws_write(wsi, buf + LWS_PRE, (size_t)hl + blen, LWS_WRITE_HTTP_HEADERS);
out:
    free(buf);
    free(body);
    return -1;
}

/* Reads the request path (without a query string, should lws have kept one) into path. */
static void ws_path(struct lws *wsi, char *path, size_t len)
{
    int n = lws_hdr_copy(wsi, path, (int)len, WSI_TOKEN_GET_URI);
    char *q;

    if (n < 0)
        n = 0;
    path[n] = '\0';
    if ((q = strchr(path, '?')) != NULL)
        *q = '\0';
}

/* Returns nonzero when the comma-separated header value list holds tok (case-insensitive). */
static int ws_has_token(const char *list, const char *tok)
{
    size_t tl = strlen(tok);

    while (*list != '\0') {
        while (*list == ' ' || *list == '\t' || *list == ',')
            list++;
        size_t n = strcspn(list, ",");
        size_t m = n;
        while (m > 0 && (list[m - 1] == ' ' || list[m - 1] == '\t'))
            m--;
        if (m == tl && strncasecmp(list, tok, tl) == 0)
            return 1;
        list += n;
    }
    return 0;
}

/*
 * What lws would otherwise refuse by hanging up without a word: a handshake without
 * Connection: Upgrade, Sec-WebSocket-Key or Sec-WebSocket-Version, or one that asks only for
 * subprotocols we do not speak. Returns NULL when the handshake is well formed, else why not.
 */
static const char *ws_handshake_problem(struct lws *wsi, char *buf, size_t buflen)
{
    if (lws_hdr_copy(wsi, buf, (int)buflen, WSI_TOKEN_CONNECTION) <= 0 || !ws_has_token(buf, "upgrade"))
        return "a WebSocket handshake needs Connection: Upgrade";
    if (lws_hdr_total_length(wsi, WSI_TOKEN_KEY) <= 0)
        return "a WebSocket handshake needs Sec-WebSocket-Key";
    if (lws_hdr_total_length(wsi, WSI_TOKEN_VERSION) <= 0)
        return "a WebSocket handshake needs Sec-WebSocket-Version: 13";
    if (lws_hdr_total_length(wsi, WSI_TOKEN_PROTOCOL) > 0 &&
        (lws_hdr_copy(wsi, buf, (int)buflen, WSI_TOKEN_PROTOCOL) <= 0 ||
         !ws_has_token(buf, WS_PROTOCOL_NAME)))
        return "unknown Sec-WebSocket-Protocol: offer \"" WS_PROTOCOL_NAME "\" or none";
    return NULL;
}

/* The presented token (cs_auth_request_token), copied into buf. NULL when there is none. */
static const char *ws_token(ws_conn_t *c, struct lws *wsi, char *buf, size_t buflen)
{
    ws_args_t *a = &c->ws->args;
    char hdr[WS_TOKEN_MAX + 64];
    int has_hdr = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AUTHORIZATION) > 0;

    if (has_hdr && lws_hdr_copy(wsi, hdr, (int)sizeof(hdr), WSI_TOKEN_HTTP_AUTHORIZATION) < 0)
        return "\x7f"; /* too long to be one of ours: invalid (a token), not missing */
    return cs_auth_request_token(has_hdr ? hdr : NULL,
                                 lws_get_urlarg_by_name(wsi, "token=", a->frag, (int)sizeof(a->frag)), buf,
                                 buflen);
}

/* LWS_CALLBACK_HTTP_CONFIRM_UPGRADE: route, auth and options. Returns 0 to let the upgrade go on. */
static int ws_confirm(ws_conn_t *c, struct lws *wsi, const char *upgrade)
{
    cs_ws_t *ws = c->ws;
    cs_daemon_t *d = ws->d;
    char path[1024], token_buf[WS_TOKEN_MAX], err[256];
    const char *token, *detail;

    ws_path(wsi, path, sizeof(path));
    cs_route_match(path, strlen(path), &c->route);
    if (d->stopping || ws->stopping)
        return ws_refuse(c, wsi, &c->route, CS_ERR_UNAVAILABLE, NULL);
    if (path[0] == '\0')
        return ws_refuse(c, wsi, &c->route, CS_ERR_BAD_REQUEST, "a WebSocket handshake is a GET request");
    if (upgrade == NULL || strcasecmp(upgrade, "websocket") != 0)
        return ws_refuse(c, wsi, &c->route, CS_ERR_BAD_REQUEST, "only Upgrade: websocket is understood here");
    if (!cs_route_is_ws(c->route.kind))
        return ws_refuse(c, wsi, &c->route, CS_ERR_NOT_FOUND, "no WebSocket endpoint at this path");
    if (c->route.bad_id)
        return ws_refuse(c, wsi, &c->route, CS_ERR_BAD_REQUEST,
                         "execution_id: expected 1-128 characters of [A-Za-z0-9._:-]");
    if ((detail = ws_handshake_problem(wsi, err, sizeof(err))) != NULL)
        return ws_refuse(c, wsi, &c->route, CS_ERR_BAD_REQUEST, detail);
    /* A browser applies no CORS to WebSocket, so the daemon does (SPEC §5): a page from an origin
     * http.cors_origins does not allow is refused before any upgrade, whatever token it carries. */
    const char *allow;
    int vary;
    if (!ws_origin(ws, wsi, &allow, &vary)) {
        d->counters.ws_refused_origin++;
        return ws_refuse(c, wsi, &c->route, CS_ERR_FORBIDDEN,
                         "this Origin is not allowed by http.cors_origins");
    }

    token = ws_token(c, wsi, token_buf, sizeof(token_buf));
    cs_principal_t who;
    ws->args.wsi = wsi;
    ws->args.used = 0;
    int rc = cs_subscribe_check(d, &c->route, token, ws_lookup_arg, ws_lookup_header, &ws->args, &c->req,
                                &who, err, sizeof(err));
    if (rc != 0)
        return ws_refuse(c, wsi, &c->route, rc, err);
    c->have_req = 1;
    /* Decided now: the principal points into a token table a reload may replace. */
    c->can_respond = cs_auth_authorize(&who, CS_SCOPE_RESPOND, c->route.execution_id) == CS_AUTH_OK;
    snprintf(c->who, sizeof(c->who), "%s", who.name != NULL ? who.name : "");
    return 0;
}

/* LWS_CALLBACK_HTTP: the head named a WebSocket but lws did not see a valid upgrade in it. */
static int ws_not_upgrade(ws_conn_t *c, struct lws *wsi)
{
    char path[1024];
    cs_route_t r;

    ws_path(wsi, path, sizeof(path));
    cs_route_match(path, strlen(path), &r);
    if (path[0] == '\0')
        return ws_refuse(c, wsi, &r, CS_ERR_BAD_REQUEST, "a WebSocket handshake is a GET request");
    if (!cs_route_is_ws(r.kind))
        return ws_refuse(c, wsi, &r, CS_ERR_NOT_FOUND, "no WebSocket endpoint at this path");
    return ws_refuse(c, wsi, &r, CS_ERR_BAD_REQUEST,
                     "a WebSocket handshake needs Connection: Upgrade, Upgrade: websocket, "
                     "Sec-WebSocket-Key and Sec-WebSocket-Version: 13");
}

/* LWS_CALLBACK_ESTABLISHED: the subscriber starts, history first. */
static int ws_established(ws_conn_t *c)
{
    cs_ws_t *ws = c->ws;
    cs_daemon_t *d = ws->d;
    int rc;

    if (!c->have_req)
        return -1;
    rc = cs_subscribe_open(d, &c->route, &c->req, &c->sub, &ws_sub_ops, c);
    cs_sub_req_free(&c->req);
    c->have_req = 0;
    if (rc != 0) {
        cs_log_error("ws: out of memory opening a subscriber");
        return -1;
    }
    c->sub_open = 1;
    c->established = 1;
    c->last_ping = ws_now(ws);
    DL_APPEND2(ws->pings, c, pprev, pnext);
    c->in_pings = 1;
    d->counters.ws_accepted++;
    cs_log_debug("ws: open on %s", c->route.execution_id);
    if (cs_sub_has_next(&c->sub))
        ws_want_write(c);
    else
        cs_sub_park(&c->sub);
    return 0;
}

/* ---- the session ---- */

static void ws_sub_wake(cs_sub_t *sub)
{
    ws_want_write(sub->data);
}

/*
 * Everything a wake-up brings goes out in one send: frames (and gap notices) are framed here as
 * unmasked text messages, back to back, into one buffer written raw. One lws_write per message
 * meant one WRITEABLE round trip per event per connection, and WebSocket fan-out ran at a fifth of
 * nchan's rate.
 */
static unsigned char ws_batch[64 * 1024];

/* Appends one complete server-to-client text message of len bytes at p; returns its size. */
static size_t ws_frame_put(unsigned char *p, const void *payload, size_t len)
{
    size_t h;

    p[0] = 0x81; /* FIN, text */
    if (len < 126) {
        p[1] = (unsigned char)len;
        h = 2;
    } else if (len < 65536) {
        p[1] = 126;
        p[2] = (unsigned char)(len >> 8);
        p[3] = (unsigned char)len;
        h = 4;
    } else {
        p[1] = 127;
        for (int i = 0; i < 8; i++)
            p[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
        h = 10;
    }
    memcpy(p + h, payload, len);
    return h + len;
}

/* Sends it and whatever else the cursor holds that fits in ws_batch; returns lws_write's result. */
static int ws_send_batch(ws_conn_t *c, struct lws *wsi, cs_item_t *it)
{
    size_t n = 0;

    for (;;) {
        const void *payload = it->frame != NULL ? (const void *)it->frame->json : (const void *)it->gap;
        size_t len = it->frame != NULL ? it->frame->json_len : it->gap_len;
        if (n + len + 10 > sizeof(ws_batch)) {
            /* Does not fit: back into the cursor for the next WRITEABLE (a gap notice is small
             * and only fetched with room to spare, below, so this is always a frame). */
            cs_sub_unget(&c->sub, it);
            break;
        }
        n += ws_frame_put(ws_batch + n, payload, len);
        if (sizeof(ws_batch) - n < 4096 || !cs_sub_next(&c->sub, it))
            break;
    }
    return lws_write(wsi, ws_batch, n, LWS_WRITE_RAW);
}

/*
 * Writes the next piece (at most WS_PIECE bytes) of the held frame: the first as a text frame, the
 * others as continuations, all but the last without FIN. Returns lws_write's result.
 */
static int ws_send_piece(ws_conn_t *c, struct lws *wsi)
{
    cs_frame_t *f = c->held;
    unsigned char *p = (unsigned char *)f->json + c->held_off, save[LWS_PRE];
    size_t len = f->json_len - c->held_off;
    int wp = c->held_off == 0 ? LWS_WRITE_TEXT : LWS_WRITE_CONTINUATION;
    int n;

    if (len > WS_PIECE) {
        len = WS_PIECE;
        wp |= LWS_WRITE_NO_FIN;
    }
    /*
     * lws puts the piece's header in the LWS_PRE bytes in front of it. Past the first piece those
     * are bytes of the shared JSON, which other connections still send: they are put back at once
     * (one thread, and lws has sent or copied the piece when lws_write returns).
     */
    memcpy(save, p - LWS_PRE, LWS_PRE);
    n = lws_write(wsi, p, len, (enum lws_write_protocol)wp);
    memcpy(p - LWS_PRE, save, LWS_PRE);
    c->ws->d->counters.ws_pieces++;
    c->held_off += len;
    if (c->held_off == f->json_len) {
        cs_frame_unref(c->ws->d->store, f);
        c->held = NULL;
        c->held_off = 0;
        c->ws->n_held--;
    }
    return n;
}

/* LWS_CALLBACK_SERVER_WRITEABLE: one lws_write, by priority. */
static int ws_writeable(ws_conn_t *c, struct lws *wsi)
{
    cs_item_t it;
    int n = 0;

    c->want_write = 0;
    if (c->in_waits) {
        DL_DELETE2(c->ws->waits, c, wprev, wnext);
        c->in_waits = 0;
    }
    if (c->detached)
        return -1;
    if (c->close_sent)
        return 0;
    if (c->close_code != 0) {
        /*
         * lws 4.1 takes a nonzero return from WRITEABLE for a failed write and drops the socket
         * without a close frame. A nonzero return from LWS_CALLBACK_TIMER takes the polite path
         * instead: lws sends the close frame with our reason and waits for the client's. Now that
         * WRITEABLE has come, nothing of ours is still buffered in front of it.
         */
        c->close_sent = 1;
        lws_set_timer_usecs(wsi, 1);
        return 0;
    }
    if (c->ping_due) {
        unsigned char ping[LWS_PRE + 1];
        c->ping_due = 0;
        n = lws_write(wsi, ping + LWS_PRE, 0, LWS_WRITE_PING);
    } else if (c->held != NULL) {
        /* The rest of a fragmented message comes before anything else but control frames. */
        n = ws_send_piece(c, wsi);
    } else if (c->outq_n > 0) {
        unsigned char *buf = c->outq[c->outq_head];
        n = lws_write(wsi, buf + LWS_PRE, c->outq_len[c->outq_head], LWS_WRITE_TEXT);
        free(buf);
        c->outq_head = (c->outq_head + 1) % WS_OUTQ;
        c->outq_n--;
        if (c->rx_paused && c->outq_n + c->n_waits <= WS_OUTQ_RESUME) {
            c->rx_paused = 0;
            lws_rx_flow_control(wsi, 1);
        }
    } else if (c->sub_open && cs_sub_history_lost(&c->sub)) {
        /* Its start's history could not be read (logged and counted by the cluster): closed 1013 (try
         * again later) rather than skip it, and the client resumes from the last seq it has. */
        ws_close_code(c, 1013, "the history before this node's ring could not be read from Redis: resume");
    } else if (c->sub_open && cs_sub_next(&c->sub, &it)) {
        if (it.frame != NULL && it.frame->json_len + 10 > sizeof(ws_batch)) {
            /* Larger than a batch: a fragmented message, one piece per WRITEABLE. */
            c->held = cs_frame_ref(it.frame);
            c->held_off = 0;
            c->ws->n_held++;
            n = ws_send_piece(c, wsi);
        } else {
            n = ws_send_batch(c, wsi, &it);
        }
    }
    if (n < 0)
        return -1;
    if (ws_has_more(c))
        ws_want_write(c);
    else if (c->sub_open)
        cs_sub_park(&c->sub);
    return 0;
}

/* LWS_CALLBACK_RECEIVE: assembles one message from its fragments. */
static int ws_receive(ws_conn_t *c, struct lws *wsi, const void *in, size_t len)
{
    if (c->detached)
        return -1;
    if (c->close_sent || c->close_code != 0)
        return 0; /* closing: the client's late messages are not answered */
    int rc = cs_buf_append(&c->rx, in, len);
    if (rc != 0) {
        /* Past WS_MSG_MAX: closed 1009 (too_large); out of memory: 1011 (internal). */
        char reason[64];
        int n = rc == -EMSGSIZE ? snprintf(reason, sizeof(reason), "message larger than %d bytes", WS_MSG_MAX)
                                : snprintf(reason, sizeof(reason), "out of memory");
        if (rc != -EMSGSIZE)
            cs_log_error("ws: out of memory reading a client message: closing the connection (1011)");
        lws_close_reason(wsi, (enum lws_close_status)cs_err_ws_close(rc), (unsigned char *)reason, (size_t)n);
        return -1;
    }
    if (!lws_is_final_fragment(wsi))
        return 0;
    ws_on_message(c, cs_buf_data(&c->rx), cs_buf_size(&c->rx));
    cs_buf_free(&c->rx);
    return 0;
}

static int ws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    ws_conn_t *c = wsi != NULL ? lws_get_opaque_user_data(wsi) : NULL;
    (void)user;

    switch (reason) {
    case LWS_CALLBACK_WSI_CREATE: {
        /* The wsi lws_adopt is making (its opaque data is set just after this). */
        cs_ws_t *ws = lws_context_user(lws_get_context(wsi));
        if (ws != NULL && ws->adopting != NULL)
            ws->adopt_created = 1;
        return 0;
    }
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        return c != NULL ? ws_confirm(c, wsi, in) : -1;
    case LWS_CALLBACK_HTTP:
        return c != NULL ? ws_not_upgrade(c, wsi) : -1;
    case LWS_CALLBACK_ESTABLISHED:
        if (c == NULL)
            return -1;
        c->wsi = wsi;
        return ws_established(c);
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return c != NULL ? ws_writeable(c, wsi) : -1;
    case LWS_CALLBACK_RECEIVE:
        return c != NULL ? ws_receive(c, wsi, in, len) : -1;
    case LWS_CALLBACK_TIMER:
        /* Armed by WRITEABLE for a pending close: returning nonzero makes lws send it. */
        if (c == NULL || c->close_code == 0)
            return 0;
        lws_close_reason(wsi, (enum lws_close_status)c->close_code, (unsigned char *)c->close_reason,
                         c->close_reason_len);
        return -1;
    case LWS_CALLBACK_CLOSED:
    case LWS_CALLBACK_CLOSED_HTTP:
        if (c != NULL)
            ws_conn_detach(c);
        return 0;
    case LWS_CALLBACK_WSI_DESTROY:
        if (c != NULL) {
            lws_set_opaque_user_data(wsi, NULL);
            ws_conn_free(c);
        }
        return 0;
    default:
        return 0;
    }
}

/* ---- the loop side ---- */

/* libuv's epoll fd is readable: run libuv before sleeping (the hook below does it). */
static void ws_on_uv_io(cs_io_t *io, uint32_t events)
{
    cs_ws_t *ws = io->data;
    (void)events;
    ws->dirty = 1;
}

/*
 * Before sleeping: run libuv when our epoll saw its fd, when we called into lws from outside, or
 * when libuv has work at once (idle handles, closing handles, due timers: uv_backend_timeout() is
 * 0). Returns how long the loop may sleep before libuv's next timer.
 */
static int ws_prepare(void *data)
{
    cs_ws_t *ws = data;

    if (ws->ctx == NULL)
        return -1;
    for (int round = 0; round < WS_UV_ROUNDS; round++) {
        uv_update_time(&ws->uv);
        if (!ws->dirty) {
            if (!uv_loop_alive(&ws->uv))
                return -1;
            int t = uv_backend_timeout(&ws->uv);
            if (t != 0)
                return t;
        }
        ws->dirty = 0;
        uv_run(&ws->uv, UV_RUN_NOWAIT);
    }
    return 0;
}

/* lws with libuv watches signals; the daemon handles them through its own loop. */
static void ws_lws_signal(void *handle, int signum)
{
    (void)handle;
    (void)signum;
}

/* lws' log lines ("[2026/01/15 10:30:02:1234] E: text\n") into ours, with any ?token= value masked. */
static void ws_lws_log(int level, const char *line)
{
    char buf[512];
    const char *p = line;

    if (*p == '[' && (p = strchr(p, ']')) != NULL)
        p++;
    else
        p = line;
    while (*p == ' ')
        p++;
    if ((p[0] == 'E' || p[0] == 'W' || p[0] == 'N') && p[1] == ':')
        p += 2;
    while (*p == ' ')
        p++;
    ws_printable(buf, sizeof(buf), p, strcspn(p, "\n"));
    for (char *t = strstr(buf, "token="); t != NULL; t = strstr(t, "token=")) {
        t += 6;
        for (; *t != '\0' && *t != '&' && *t != ' '; t++)
            *t = '*';
    }
    cs_log((level & LLL_ERR) ? CS_LOG_ERROR : CS_LOG_WARN, "ws: lws: %s", buf);
}

/*
 * lws sizes its fd tables by the process fd limit (a pointer and a pollfd per fd). A smaller
 * fd_limit_per_thread would make it look connections up by a linear scan of that table on every
 * event, so the limit is only imposed when RLIMIT_NOFILE is absurdly large.
 */
static unsigned ws_fd_limit(const cs_config_t *cfg)
{
    size_t want = cfg->max_clients + 64;

    if (cs_nofile_limit() != 0)
        return 0;
    return (unsigned)(want < CS_NOFILE_CAP ? want : CS_NOFILE_CAP);
}

/* ---- the interface ---- */

int cs_ws_new(cs_ws_t **out, cs_daemon_t *d, char *err, size_t errlen)
{
    struct lws_context_creation_info info;
    cs_ws_t *ws;
    int rc;

    *out = NULL;
    ws = calloc(1, sizeof(*ws));
    if (ws == NULL) {
        snprintf(err, errlen, "ws: out of memory");
        return -ENOMEM;
    }
    ws->d = d;
    if ((rc = uv_loop_init(&ws->uv)) != 0) {
        snprintf(err, errlen, "ws: uv_loop_init: %s", uv_strerror(rc));
        free(ws);
        return rc < 0 ? rc : -EIO;
    }
    ws->uv_inited = 1;
    ws->loops[0] = &ws->uv;
    lws_set_log_level(LLL_ERR | LLL_WARN, ws_lws_log);

    ws->protocols[0].name = WS_PROTOCOL_NAME;
    ws->protocols[0].callback = ws_callback;
    ws->protocols[0].per_session_data_size = 0; /* state lives in ws_conn_t */
    ws->protocols[0].rx_buffer_size = WS_RX_BUFFER;
    ws->protocols[0].user = ws;
    ws->protocols[0].tx_packet_size = WS_TX_PACKET;

    memset(&info, 0, sizeof(info));
    info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_EXPLICIT_VHOSTS |
                   LWS_SERVER_OPTION_UV_NO_SIGSEGV_SIGFPE_SPIN | LWS_SERVER_OPTION_DISABLE_OS_CA_CERTS;
    info.foreign_loops = ws->loops;
    info.signal_cb = ws_lws_signal;
    info.pcontext = &ws->ctx_alive;
    info.user = ws;
    info.uid = -1;
    info.gid = -1;
    info.fd_limit_per_thread = ws_fd_limit(d->cfg);
    /* The listener has already bounded the head by limits.head_bytes. */
    info.max_http_header_data = (unsigned short)(d->cfg->head_bytes < 65535 ? d->cfg->head_bytes : 65535);
    if (info.max_http_header_data < 1024)
        info.max_http_header_data = 1024;
    info.max_http_header_pool2 = 1024; /* handshakes in progress at once; allocated on demand */
    info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
    info.protocols = ws->protocols;
    info.vhost_name = "crewstream";

    ws->ctx = lws_create_context(&info);
    if (ws->ctx == NULL) {
        snprintf(err, errlen,
                 "ws: cannot create the libwebsockets context (is the libuv event library, "
                 "package libwebsockets-evlib-uv, installed?)");
        rc = -EIO;
        goto fail;
    }
    ws->ctx_alive = ws->ctx;
    ws->vh = lws_create_vhost(ws->ctx, &info);
    if (ws->vh == NULL) {
        snprintf(err, errlen, "ws: cannot create the libwebsockets vhost");
        rc = -EIO;
        goto fail;
    }
    cs_io_init(&ws->io, d->loop, uv_backend_fd(&ws->uv), ws_on_uv_io, ws);
    if ((rc = cs_io_start(&ws->io, CS_IO_READ)) != 0) {
        snprintf(err, errlen, "ws: watching the libuv loop: %s", strerror(-rc));
        goto fail;
    }
    if ((rc = cs_loop_add_prepare(d->loop, ws_prepare, ws)) != 0) {
        snprintf(err, errlen, "ws: no room for another before-sleep hook");
        goto fail;
    }
    ws->dirty = 1;
    *out = ws;
    return 0;

fail:
    cs_ws_free(ws);
    return rc;
}

int cs_ws_adopt(cs_ws_t *ws, int fd)
{
    cs_daemon_t *d = ws->d;
    lws_adopt_desc_t info;
    ws_conn_t *c;
    struct lws *wsi;

    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        close(fd);
        d->clients--;
        return -ENOMEM;
    }
    c->ws = ws;
    cs_buf_init(&c->rx, WS_MSG_MAX);
    DL_APPEND(ws->conns, c);
    ws->n_conns++;

    memset(&info, 0, sizeof(info));
    info.vh = ws->vh;
    info.type = LWS_ADOPT_SOCKET | LWS_ADOPT_HTTP;
    info.fd.sockfd = fd;
    info.opaque = c;
    ws->adopting = c;
    ws->adopt_created = ws->adopt_destroyed = 0;
    wsi = lws_adopt_descriptor_vhost_via_info(&info);
    ws->adopting = NULL;
    ws->dirty = 1;
    if (wsi != NULL) {
        if (!ws->adopt_destroyed)
            c->wsi = wsi;
        return 0;
    }
    /* lws has closed the fd. If it made a wsi, WSI_DESTROY releases c (now or once libuv has closed
     * the handle); if not, nothing else will. */
    if (!ws->adopt_created) {
        DL_DELETE(ws->conns, c);
        ws->n_conns--;
        d->clients--;
        free(c);
    }
    cs_log_warn("ws: libwebsockets refused a connection (out of file descriptors or memory?)");
    return -EIO;
}

void cs_ws_tick(cs_ws_t *ws, int64_t now)
{
    const cs_config_t *cfg = ws->d->cfg;
    int64_t hb = (int64_t)cfg->heartbeat_s * 1000, stall = (int64_t)cfg->stall_s * 1000;
    ws_conn_t *c, *next;
    int stalls = 0;

    /* Both schedules are oldest first: the walks stop at the first session that is not due, so an
     * idle daemon looks at none of them. */
    for (c = ws->waits; stall > 0 && c != NULL && now - c->want_since >= stall; c = c->wnext) {
        if (!c->established || c->detached || c->wsi == NULL || c->close_sent || c->stalled)
            continue;
        int64_t secs = (now - c->want_since) / 1000;
        c->stalled = 1;
        if (c->close_code == 0) {
            c->close_code = (int)cs_err_ws_close(CS_ERR_STALLED);
            c->close_reason_len = (size_t)snprintf(c->close_reason, sizeof(c->close_reason),
                                                   "stalled: no progress for %lld s", (long long)secs);
        }
        ws->d->counters.stalls++;
        cs_log_info("ws: subscriber of %s made no progress for %lld s: closing it (1013)",
                    c->route.execution_id, (long long)secs);
        ws_want_write(c);
        /* A pipe that never drains never lets the close frame out: drop the socket then. */
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, WS_STALL_GRACE_S);
        stalls++;
    }
    for (c = ws->pings; hb > 0 && c != NULL && now - c->last_ping >= hb; c = next) {
        next = c->pnext;
        if (c->detached || c->wsi == NULL || c->close_sent || c->stalled)
            continue;
        c->last_ping = now;
        c->ping_due = 1;
        DL_DELETE2(ws->pings, c, pprev, pnext);
        DL_APPEND2(ws->pings, c, pprev, pnext);
        ws_want_write(c);
    }
    /* A timeout set from outside lws' service is only scheduled when lws next services: wake it. */
    if (stalls > 0)
        lws_cancel_service(ws->ctx);
}

void cs_ws_shutdown(cs_ws_t *ws)
{
    static const char reason[] = "server shutting down";
    ws_conn_t *c;

    ws->stopping = 1;
    DL_FOREACH(ws->conns, c)
    {
        if (!c->established || c->detached || c->close_code != 0 || c->close_sent)
            continue;
        c->close_code = (int)cs_err_ws_close(CS_ERR_UNAVAILABLE);
        memcpy(c->close_reason, reason, sizeof(reason) - 1);
        c->close_reason_len = sizeof(reason) - 1;
        ws_want_write(c);
    }
}

size_t cs_ws_count(const cs_ws_t *ws)
{
    return ws != NULL ? ws->n_conns : 0;
}

size_t cs_ws_held(const cs_ws_t *ws)
{
    return ws != NULL ? ws->n_held : 0;
}

void cs_ws_free(cs_ws_t *ws)
{
    ws_conn_t *c, *tmp;

    if (ws == NULL)
        return;
    if (ws->ctx != NULL) {
        /* With a foreign loop, lws closes its handles inside uv_run, and a second call completes the
         * destruction once they are closed. */
        for (int pass = 0; pass < 2 && ws->ctx_alive != NULL; pass++) {
            lws_context_destroy(ws->ctx);
            for (int rounds = 0; rounds < 1000 && uv_run(&ws->uv, UV_RUN_NOWAIT) != 0; rounds++)
                ;
        }
        if (ws->ctx_alive != NULL)
            cs_log_warn("ws: libwebsockets did not finish destroying its context");
        ws->ctx = NULL;
    }
    cs_io_stop(&ws->io);
    /* Anything lws did not report destroyed (it should have) is released here. */
    DL_FOREACH_SAFE(ws->conns, c, tmp)
    {
        ws_conn_free(c);
    }
    if (ws->uv_inited) {
        if (uv_loop_close(&ws->uv) != 0)
            cs_log_warn("ws: the libuv loop still had handles open at exit");
    }
    free(ws);
}

/* ---- the transport (cs_ws_transport) ---- */

static int ws_create(cs_daemon_t *d, void **self, char *err, size_t errlen)
{
    int rc = cs_ws_new(&d->ws, d, err, errlen);

    *self = d->ws;
    return rc;
}

/*
 * Takes every WebSocket handshake. One whose target holds an encoded NUL (%00) is refused first: lws
 * would decode it into a path cut short and hang up without an answer.
 */
static int ws_offer(void *self, cs_offer_t *o)
{
    cs_ws_t *ws = self;

    if (!o->websocket)
        return 0;
    if (cs_head_target_nul(o->head, o->head_len)) {
        ws->d->counters.ws_refused++;
        cs_log_info("ws: refused a handshake whose target holds an encoded NUL (%%00): 400 bad_request");
        o->detail = "the request target contains an encoded NUL byte (%00)";
        return CS_ERR_BAD_REQUEST;
    }
    cs_ws_adopt(ws, o->fd);
    return 1;
}

static void ws_tick(void *self, int64_t now)
{
    cs_ws_tick(self, now);
}

static void ws_shutdown(void *self)
{
    cs_ws_shutdown(self);
}

static size_t ws_count(const void *self)
{
    return cs_ws_count(self);
}

static void ws_destroy(void *self)
{
    cs_ws_free(self);
}

const cs_transport_ops_t cs_ws_transport = {
    .name = "ws",
    .gauge = "websockets",
    .gauge_help = "WebSocket connections.",
    .create = ws_create,
    .offer = ws_offer,
    .tick = ws_tick,
    .shutdown = ws_shutdown,
    .count = ws_count,
    .destroy = ws_destroy,
};
