/*
 * client.c - libcrewstream: one client, one Unix socket, no threads.
 *
 * The posted events live in a ring of entries indexed by ticket: the unacknowledged
 * ones are always the tickets [first_unacked, next_ticket) because the daemon replies
 * in order, and the older slots keep their acks for crewstream_wait(). What was written
 * on the current connection and still expects a reply is the wire queue, a FIFO of
 * nodes (event lines, pings, awaits) matched one to one with the reply lines; the push
 * lines ("op":"human_input") are told apart and stored as answers.
 *
 * When the connection breaks, the wire queue is thrown away, and the next connection
 * starts with every unacknowledged event line, in ticket order, then an await for every
 * request still awaited. Event ids are fixed in the line before the first send, so the
 * daemon acknowledges a resent line it already stored with its original seq.
 */
#include "crewstream/client.h"

#include "buf.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <uuid/uuid.h>

#define DEF_MAX_UNACKED  1024u
#define DEF_POST_TIMEOUT 30000
#define DEF_BACKOFF_INIT 50
#define DEF_BACKOFF_MAX  2000
#define DEF_MAX_LINE     (1024u * 1024u)
#define IN_SLACK         (64u * 1024u)
#define MAX_DELIVERED    1024u /* answers already handed out that are remembered (to drop repeats) */
#define IOV_BATCH        64
#define SUN_PATH_MAX     (sizeof(((struct sockaddr_un *)0)->sun_path) - 1)

enum { W_EVENT, W_PING, W_AWAIT, W_SERVE, W_KACK };

/* One posted event, in slot ticket % cap. */
typedef struct entry {
    crewstream_ticket_t ticket;
    char *line; /* the line with its newline; freed once acknowledged */
    size_t len;
    char *event_id;
    char *hir_exec; /* execution_id of a human_input_required, else NULL */
    unsigned sends; /* connections it was (at least partly) written on */
    int acked, ok, duplicate;
    uint64_t seq;
    char error[32];
    char *detail;
} entry_t;

/* One human-input request the client awaits or has the answer of. */
typedef struct awaitrec {
    struct awaitrec *next, *prev;
    char *execution_id, *request_event_id;
    int awaited;   /* send await again after a reconnection */
    int answered;  /* ans is filled */
    int delivered; /* handed to the program at least once */
    int failed;    /* the daemon refused the last await: -ESRCH, -EINVAL, -EPROTO */
    int inflight;  /* await lines in the wire queue */
    crewstream_answer_t ans;
} awaitrec_t;

/* One crew this client serves (crewstream_serve): its serve line, sent again on every connection. */
typedef struct serverec {
    struct serverec *next;
    char *crew;
    char *line;
    size_t len;
    uint64_t gen; /* the connection it was last sent on (0: not yet) */
    int answered; /* the daemon's reply to the last send came */
    int failed;   /* the daemon refused it: -EINVAL */
} serverec_t;

/* One kickoff_ack waiting for its reply (crewstream_kickoff_ack's own, on its stack). */
typedef struct kackrec {
    const char *execution_id;
    uint64_t gen;
    int done, result;
} kackrec_t;

/* A kickoff pushed and not yet taken by crewstream_next_kickoff. */
typedef struct kickrec {
    struct kickrec *next;
    crewstream_kickoff_t k;
} kickrec_t;

/* One line written (or to be written) on the current connection that expects a reply. */
typedef struct wire {
    struct wire *next;
    int kind;
    int started; /* some of its bytes were written */
    int replied; /* refused "too_large" before it was all written: write the rest, expect no reply */
    const char *line;
    size_t len;
    char *own; /* the line's memory when it is not an entry's */
    crewstream_ticket_t ticket;
    uint64_t ping_id;
    awaitrec_t *aw;
    serverec_t *sv;
    kackrec_t *ka;
} wire_t;

struct crewstream_client {
    char path[SUN_PATH_MAX + 1];
    int fd;
    int broken; /* no_reconnect and the connection broke */
    int good;   /* the current connection delivered a valid reply */
    uint64_t gen;
    int64_t next_attempt;
    int backoff_ms;
    int conn_err;

    /* options */
    unsigned max_unacked;
    int post_timeout_ms, backoff_init, backoff_max, no_reconnect;
    size_t max_line, max_in;
    crewstream_ack_cb on_ack;
    void *on_ack_arg;
    crewstream_answer_cb on_answer;
    void *on_answer_arg;

    /* the ring of posted events */
    entry_t *ring;
    size_t cap;
    crewstream_ticket_t next_ticket, first_unacked;

    /* the wire queue */
    wire_t *whead, *wtail, *wsend;
    size_t wsend_off;

    /* the read buffer */
    cs_buf_t in; /* what the daemon sent, up to max_in bytes of one line */

    /* answers */
    awaitrec_t *ahead, *atail;
    size_t n_delivered;

    uint64_t ping_next, pong_id;
    /* the crew gateway's runtime side */
    serverec_t *serves;
    kickrec_t *khead, *ktail;
    crewstream_stats_t stats;
    char err[512];
};

/* ---- small helpers ---- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void set_err(crewstream_client_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(crewstream_client_t *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof(c->err), fmt, ap);
    va_end(ap);
}

static void copy_str(char *dst, size_t size, const char *src)
{
    if (src == NULL)
        src = "";
    snprintf(dst, size, "%s", src);
}

static entry_t *slot(crewstream_client_t *c, crewstream_ticket_t t)
{
    return &c->ring[t % c->cap];
}

static void entry_reset(entry_t *e)
{
    free(e->line);
    free(e->event_id);
    free(e->hir_exec);
    free(e->detail);
    memset(e, 0, sizeof(*e));
}

static void fill_ack(const entry_t *e, crewstream_ack_t *a)
{
    memset(a, 0, sizeof(*a));
    a->ticket = e->ticket;
    a->ok = e->ok;
    a->duplicate = e->duplicate;
    a->resent = e->sends > 1;
    a->seq = e->seq;
    copy_str(a->event_id, sizeof(a->event_id), e->event_id);
    copy_str(a->error, sizeof(a->error), e->error);
    copy_str(a->detail, sizeof(a->detail), e->detail);
}

static int answer_copy(crewstream_answer_t *dst, const crewstream_answer_t *src)
{
    crewstream_answer_t a = {.is_approve = src->is_approve, .seq = src->seq};
    const char *const from[] = {src->execution_id,   src->request_event_id, src->task_id,
                                src->human_feedback, src->event_id,         src->json};
    char **to[] = {&a.execution_id, &a.request_event_id, &a.task_id, &a.human_feedback, &a.event_id, &a.json};

    for (size_t i = 0; i < sizeof(to) / sizeof(to[0]); i++) {
        if (from[i] == NULL)
            continue;
        *to[i] = strdup(from[i]);
        if (*to[i] == NULL) {
            crewstream_answer_clear(&a);
            return -ENOMEM;
        }
    }
    *dst = a;
    return 0;
}

/* ---- answers ---- */

static awaitrec_t *rec_find(crewstream_client_t *c, const char *x, const char *r)
{
    for (awaitrec_t *a = c->ahead; a != NULL; a = a->next)
        if (strcmp(a->request_event_id, r) == 0 && strcmp(a->execution_id, x) == 0)
            return a;
    return NULL;
}

static void rec_unlink_free(crewstream_client_t *c, awaitrec_t *a)
{
    if (a->prev != NULL)
        a->prev->next = a->next;
    else
        c->ahead = a->next;
    if (a->next != NULL)
        a->next->prev = a->prev;
    else
        c->atail = a->prev;
    if (a->delivered)
        c->n_delivered--;
    free(a->execution_id);
    free(a->request_event_id);
    crewstream_answer_clear(&a->ans);
    free(a);
}

static awaitrec_t *rec_get(crewstream_client_t *c, const char *x, const char *r)
{
    awaitrec_t *a = rec_find(c, x, r);

    if (a != NULL)
        return a;
    a = calloc(1, sizeof(*a));
    if (a == NULL)
        return NULL;
    a->execution_id = strdup(x);
    a->request_event_id = strdup(r);
    if (a->execution_id == NULL || a->request_event_id == NULL) {
        free(a->execution_id);
        free(a->request_event_id);
        free(a);
        return NULL;
    }
    a->prev = c->atail;
    if (c->atail != NULL)
        c->atail->next = a;
    else
        c->ahead = a;
    c->atail = a;
    return a;
}

/* Marks a handed out; forgets the oldest handed-out answers beyond MAX_DELIVERED. */
static void rec_delivered(crewstream_client_t *c, awaitrec_t *a)
{
    if (!a->delivered) {
        a->delivered = 1;
        c->n_delivered++;
    }
    for (awaitrec_t *o = c->ahead, *nx; o != NULL && c->n_delivered > MAX_DELIVERED; o = nx) {
        nx = o->next;
        if (o != a && o->delivered && o->answered && !o->awaited && o->inflight == 0)
            rec_unlink_free(c, o);
    }
}

/* ---- the wire queue ---- */

static wire_t *wire_add(crewstream_client_t *c, int kind, const char *line, size_t len, char *own)
{
    wire_t *w = calloc(1, sizeof(*w));

    if (w == NULL)
        return NULL;
    w->kind = kind;
    w->line = line;
    w->len = len;
    w->own = own;
    if (c->wtail != NULL)
        c->wtail->next = w;
    else
        c->whead = w;
    c->wtail = w;
    if (c->wsend == NULL) {
        c->wsend = w;
        c->wsend_off = 0;
    }
    return w;
}

static void wire_free(wire_t *w)
{
    if (w->aw != NULL)
        w->aw->inflight--;
    free(w->own);
    free(w);
}

static wire_t *wire_pop(crewstream_client_t *c)
{
    wire_t *w = c->whead;

    if (w == NULL)
        return NULL;
    c->whead = w->next;
    if (c->whead == NULL)
        c->wtail = NULL;
    if (c->wsend == w) { /* cannot happen: a reply comes after the whole line; stay consistent anyway */
        c->wsend = w->next;
        c->wsend_off = 0;
    }
    return w;
}

static int queue_event(crewstream_client_t *c, entry_t *e)
{
    wire_t *w = wire_add(c, W_EVENT, e->line, e->len, NULL);

    if (w == NULL)
        return -ENOMEM;
    w->ticket = e->ticket;
    e->sends++;
    return 0;
}

static int queue_await(crewstream_client_t *c, awaitrec_t *a)
{
    json_t *o = json_pack("{s:s, s:s, s:s}", "op", "await", "execution_id", a->execution_id, "event_id",
                          a->request_event_id);
    char *s = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    char *line = NULL;
    size_t n;
    wire_t *w;

    json_decref(o);
    if (s == NULL)
        return -ENOMEM;
    n = strlen(s);
    line = malloc(n + 1);
    if (line == NULL) {
        free(s);
        return -ENOMEM;
    }
    memcpy(line, s, n);
    line[n] = '\n';
    free(s);
    w = wire_add(c, W_AWAIT, line, n + 1, line);
    if (w == NULL) {
        free(line);
        return -ENOMEM;
    }
    w->aw = a;
    a->inflight++;
    return 0;
}

/* Queues a copy of line (with its newline) as kind. */
static wire_t *queue_copy(crewstream_client_t *c, int kind, const char *line, size_t len)
{
    char *own = malloc(len);
    wire_t *w;

    if (own == NULL)
        return NULL;
    memcpy(own, line, len);
    w = wire_add(c, kind, own, len, own);
    if (w == NULL)
        free(own);
    return w;
}

static int queue_serve(crewstream_client_t *c, serverec_t *sv)
{
    wire_t *w = queue_copy(c, W_SERVE, sv->line, sv->len);

    if (w == NULL)
        return -ENOMEM;
    w->sv = sv;
    sv->gen = c->gen;
    sv->answered = 0;
    return 0;
}

static int queue_kack(crewstream_client_t *c, kackrec_t *ka)
{
    json_t *o = json_pack("{s:s, s:s}", "op", "kickoff_ack", "execution_id", ka->execution_id);
    char *s = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    wire_t *w = NULL;

    json_decref(o);
    if (s != NULL) {
        size_t n = strlen(s);
        char *l = realloc(s, n + 2);
        if (l != NULL) {
            s = l;
            s[n] = '\n';
            w = queue_copy(c, W_KACK, s, n + 1);
        }
    }
    free(s);
    if (w == NULL)
        return -ENOMEM;
    w->ka = ka;
    ka->gen = c->gen;
    return 0;
}

static void kick_free(kickrec_t *k)
{
    crewstream_kickoff_clear(&k->k);
    free(k);
}

static int queue_ping(crewstream_client_t *c, uint64_t id)
{
    static const char ping[] = "{\"op\":\"ping\"}\n";
    wire_t *w = wire_add(c, W_PING, ping, sizeof(ping) - 1, NULL);

    if (w == NULL)
        return -ENOMEM;
    w->ping_id = id;
    return 0;
}

/* ---- the connection ---- */

/* Forgets the connection; the lines it owed replies for are sent again on the next one. */
static void drop_conn(crewstream_client_t *c, const char *why)
{
    int64_t now = now_ms();

    if (c->fd < 0)
        return;
    set_err(c, "connection to %s lost: %s", c->path, why);
    close(c->fd);
    c->fd = -1;
    /* Event lines never started on this connection were not really sent: do not call them resent. */
    for (wire_t *w = c->wsend; w != NULL; w = w->next)
        if (w->kind == W_EVENT && !w->started)
            slot(c, w->ticket)->sends--;
    while (c->whead != NULL)
        wire_free(wire_pop(c));
    c->wsend = NULL;
    c->wsend_off = 0;
    cs_buf_consume(&c->in, cs_buf_size(&c->in));
    /* Kickoffs not taken yet: the daemon gives them out again (they were never acknowledged). */
    while (c->khead != NULL) {
        kickrec_t *k = c->khead;
        c->khead = k->next;
        kick_free(k);
    }
    c->ktail = NULL;
    if (c->no_reconnect) {
        c->broken = 1;
        return;
    }
    if (c->good) {
        /* It worked until now: try again at once, then back off. */
        c->backoff_ms = c->backoff_init;
        c->next_attempt = now;
    } else {
        /* Accepted and lost without a reply: wait before trying again, or a bad peer spins us. */
        c->next_attempt = now + c->backoff_ms;
        c->backoff_ms = c->backoff_ms * 2 > c->backoff_max ? c->backoff_max : c->backoff_ms * 2;
    }
    c->good = 0;
}

/* Fills the wire queue of a new connection: unacknowledged events in order, then awaits. */
static int on_connect(crewstream_client_t *c)
{
    for (crewstream_ticket_t t = c->first_unacked; t < c->next_ticket; t++) {
        entry_t *e = slot(c, t);
        if (e->sends > 0)
            c->stats.resent++;
        if (queue_event(c, e) < 0)
            return -ENOMEM;
    }
    for (awaitrec_t *a = c->ahead; a != NULL; a = a->next)
        if (a->awaited && !a->answered && queue_await(c, a) < 0)
            return -ENOMEM;
    /* A serving lives as long as its connection: serve again. */
    for (serverec_t *sv = c->serves; sv != NULL; sv = sv->next)
        if (!sv->failed && queue_serve(c, sv) < 0)
            return -ENOMEM;
    return 0;
}

static int try_connect(crewstream_client_t *c)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd, e;

    memcpy(sa.sun_path, c->path, strlen(c->path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        e = errno;
        goto fail;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        e = errno;
        close(fd);
        goto fail;
    }
    c->fd = fd;
    c->gen++;
    c->good = 0;
    c->conn_err = 0;
    c->stats.connections++;
    if (on_connect(c) < 0) {
        drop_conn(c, "out of memory");
        c->conn_err = -ENOMEM;
        return -ENOMEM;
    }
    return 0;
fail:
    /* A full backlog says EAGAIN on a Unix socket; to the caller it is a refused connection. */
    if (e == EAGAIN || e == EWOULDBLOCK)
        e = ECONNREFUSED;
    set_err(c, "connect %s: %s", c->path, strerror(e));
    c->conn_err = -e;
    c->next_attempt = now_ms() + c->backoff_ms;
    c->backoff_ms = c->backoff_ms * 2 > c->backoff_max ? c->backoff_max : c->backoff_ms * 2;
    return -e;
}

/* ---- replies and pushes ---- */

static int protocol_error(crewstream_client_t *c, const char *what)
{
    char why[300];
    snprintf(why, sizeof(why), "unexpected line from the daemon (%s)", what);
    drop_conn(c, why);
    return -EPROTO;
}

static void on_event_reply(crewstream_client_t *c, wire_t *w, json_t *o)
{
    entry_t *e = slot(c, w->ticket);
    json_t *ok = json_object_get(o, "ok");
    crewstream_ack_t ack;

    e->acked = 1;
    e->ok = json_is_true(ok);
    if (e->ok) {
        e->seq = (uint64_t)json_integer_value(json_object_get(o, "seq"));
        e->duplicate = json_is_true(json_object_get(o, "duplicate"));
        if (e->event_id == NULL) {
            const char *id = json_string_value(json_object_get(o, "event_id"));
            e->event_id = id != NULL ? strdup(id) : NULL;
        }
    } else {
        const char *d = json_string_value(json_object_get(o, "detail"));
        copy_str(e->error, sizeof(e->error), json_string_value(json_object_get(o, "error")));
        e->detail = d != NULL ? strdup(d) : NULL;
    }
    free(e->line);
    e->line = NULL;
    c->first_unacked = e->ticket + 1;
    c->stats.acked++;
    if (!e->ok)
        c->stats.refused++;
    if (e->duplicate)
        c->stats.duplicates++;
    /* The connection that posted a request awaits its answer: after a reconnection, ask again. */
    if (e->ok && e->hir_exec != NULL && e->event_id != NULL) {
        awaitrec_t *a = rec_get(c, e->hir_exec, e->event_id);
        if (a != NULL && !a->answered)
            a->awaited = 1;
    }
    if (c->on_ack != NULL) {
        fill_ack(e, &ack);
        c->on_ack(c->on_ack_arg, &ack);
    }
}

static void on_await_reply(crewstream_client_t *c, wire_t *w, json_t *o)
{
    awaitrec_t *a = w->aw;
    const char *code, *detail;

    if (json_is_true(json_object_get(o, "ok")))
        return; /* the answer is pushed when it exists */
    code = json_string_value(json_object_get(o, "error"));
    detail = json_string_value(json_object_get(o, "detail"));
    set_err(c, "await %s/%s: %s: %s", a->execution_id, a->request_event_id, code ? code : "?",
            detail ? detail : "");
    if (a->answered)
        return;
    a->awaited = 0;
    if (code != NULL && strcmp(code, "not_found") == 0)
        a->failed = -ESRCH;
    else if (code != NULL && (strcmp(code, "invalid_field") == 0 || strcmp(code, "missing_field") == 0))
        a->failed = -EINVAL;
    else
        a->failed = -EPROTO;
}

/* The daemon's word on a serve or a kickoff_ack. */
static void on_gateway_reply(crewstream_client_t *c, wire_t *w, json_t *o)
{
    const char *code = json_string_value(json_object_get(o, "error"));
    const char *detail = json_string_value(json_object_get(o, "detail"));
    int ok = json_is_true(json_object_get(o, "ok"));

    if (!ok)
        set_err(c, "%s: %s: %s", w->kind == W_SERVE ? "serve" : "kickoff_ack", code ? code : "?",
                detail ? detail : "");
    if (w->kind == W_SERVE && w->sv != NULL) {
        w->sv->answered = 1;
        w->sv->failed = ok ? 0 : -EINVAL;
    } else if (w->kind == W_KACK && w->ka != NULL) {
        w->ka->done = 1;
        w->ka->result = ok                                                   ? 0
                        : code != NULL && strcmp(code, "conflict") == 0      ? -ESTALE
                        : code != NULL && strcmp(code, "not_found") == 0     ? -ESRCH
                        : code != NULL && strcmp(code, "invalid_field") == 0 ? -EINVAL
                                                                             : -EPROTO;
    }
}

static char *dup_json_str(json_t *v);

/* A kickoff push: kept for crewstream_next_kickoff. */
static void on_kickoff_push(crewstream_client_t *c, json_t *o, const char *line, size_t len)
{
    kickrec_t *k = calloc(1, sizeof(*k));
    json_t *in = json_object_get(o, "inputs");

    if (k == NULL) {
        set_err(c, "out of memory keeping a kickoff: it goes to another runtime after gateway.ack_timeout_s");
        return;
    }
    k->k.execution_id = dup_json_str(json_object_get(o, "execution_id"));
    k->k.crew = dup_json_str(json_object_get(o, "crew"));
    k->k.inputs_json = json_is_object(in) ? json_dumps(in, JSON_COMPACT) : strdup("{}");
    k->k.json = strndup(line, len);
    if (k->k.execution_id == NULL || k->k.crew == NULL || k->k.inputs_json == NULL || k->k.json == NULL) {
        set_err(c, "a kickoff push without execution_id or crew (or out of memory) was ignored");
        kick_free(k);
        return;
    }
    if (c->ktail != NULL)
        c->ktail->next = k;
    else
        c->khead = k;
    c->ktail = k;
}

static char *dup_json_str(json_t *v)
{
    const char *s = json_string_value(v);
    return s != NULL ? strdup(s) : NULL;
}

static void on_push(crewstream_client_t *c, json_t *o, const char *line, size_t len)
{
    const char *x = json_string_value(json_object_get(o, "execution_id"));
    const char *r = json_string_value(json_object_get(o, "request_event_id"));
    json_t *fb = json_object_get(o, "human_feedback"), *ok = json_object_get(o, "is_approve");
    crewstream_answer_t ans = {.is_approve = json_is_boolean(ok) ? json_is_true(ok) : -1};
    awaitrec_t *a;

    if (x == NULL || r == NULL) {
        set_err(c, "a human_input push without execution_id or request_event_id was ignored");
        return;
    }
    a = rec_get(c, x, r);
    if (a == NULL || a->answered)
        return; /* out of memory, or the same answer pushed again (auto-await and await) */
    ans.execution_id = strdup(x);
    ans.request_event_id = strdup(r);
    ans.task_id = dup_json_str(json_object_get(o, "task_id"));
    if (json_is_string(fb))
        ans.human_feedback = strdup(json_string_value(fb));
    else if (fb != NULL && !json_is_null(fb))
        ans.human_feedback = json_dumps(fb, JSON_COMPACT | JSON_ENCODE_ANY);
    ans.event_id = dup_json_str(json_object_get(o, "event_id"));
    ans.seq = (uint64_t)json_integer_value(json_object_get(o, "seq"));
    ans.json = strndup(line, len);
    if (ans.execution_id == NULL || ans.request_event_id == NULL || ans.json == NULL) {
        crewstream_answer_clear(&ans); /* out of memory: a later await asks for it again */
        return;
    }
    a->ans = ans;
    a->answered = 1;
    a->awaited = 0;
    a->failed = 0;
    c->stats.answers++;
    if (c->on_answer != NULL) {
        c->on_answer(c->on_answer_arg, &a->ans);
        rec_delivered(c, a);
    }
}

/*
 * The daemon refuses a line longer than its limits.max_event_bytes as soon as it has read that
 * much, and skips the rest up to the newline: the reply can come while the line is still being
 * written. Takes it as the line's ack, and keeps the line's bytes (the entry lets go of them) so
 * that write_some finishes the line, whose end the daemon waits for, before the next one.
 */
static int too_large_early(crewstream_client_t *c, wire_t *w, json_t *o)
{
    const char *code = json_string_value(json_object_get(o, "error"));
    entry_t *e;

    if (w->kind != W_EVENT || !w->started || w->replied || w->ticket != c->first_unacked ||
        !json_is_false(json_object_get(o, "ok")) || json_object_get(o, "op") != NULL || code == NULL ||
        strcmp(code, "too_large") != 0)
        return 0;
    e = slot(c, w->ticket);
    w->own = e->line;
    e->line = NULL;
    w->replied = 1;
    c->good = 1;
    c->backoff_ms = c->backoff_init;
    on_event_reply(c, w, o);
    return 1;
}

/* Handles one line from the daemon; returns 0, or -EPROTO after dropping the connection. */
static int handle_line(crewstream_client_t *c, const char *line, size_t len)
{
    json_error_t jerr;
    json_t *o = json_loadb(line, len, 0, &jerr);
    const char *op;
    wire_t *w;
    int rc = 0;

    if (!json_is_object(o)) {
        json_decref(o);
        return protocol_error(c, "not a JSON object");
    }
    op = json_string_value(json_object_get(o, "op"));
    if (op != NULL && strcmp(op, "human_input") == 0) {
        on_push(c, o, line, len);
        json_decref(o);
        return 0;
    }
    if (op != NULL && strcmp(op, "kickoff") == 0 && json_object_get(o, "ok") == NULL) {
        on_kickoff_push(c, o, line, len);
        json_decref(o);
        return 0;
    }
    w = c->whead;
    if (w != NULL && w == c->wsend && too_large_early(c, w, o)) {
        json_decref(o);
        return 0;
    }
    if (w == NULL || w == c->wsend || !json_is_boolean(json_object_get(o, "ok"))) {
        json_decref(o);
        return protocol_error(c, w == NULL || w == c->wsend ? "a reply to nothing" : "not a reply");
    }
    switch (w->kind) {
    case W_EVENT:
        if (op != NULL || w->ticket != c->first_unacked ||
            (json_is_true(json_object_get(o, "ok")) && json_integer_value(json_object_get(o, "seq")) < 1))
            rc = -1;
        break;
    case W_PING:
        if (op == NULL || strcmp(op, "pong") != 0)
            rc = -1;
        break;
    case W_SERVE:
    case W_KACK:
        if (json_is_true(json_object_get(o, "ok")) &&
            (op == NULL || strcmp(op, w->kind == W_SERVE ? "serve" : "kickoff_ack") != 0))
            rc = -1;
        break;
    default:
        if (json_is_true(json_object_get(o, "ok")) && (op == NULL || strcmp(op, "await") != 0))
            rc = -1;
        break;
    }
    if (rc < 0) {
        json_decref(o);
        return protocol_error(c, "a reply that does not match its line");
    }
    wire_pop(c);
    c->good = 1;
    c->backoff_ms = c->backoff_init;
    if (w->kind == W_EVENT)
        on_event_reply(c, w, o);
    else if (w->kind == W_PING)
        c->pong_id = w->ping_id;
    else if (w->kind == W_SERVE || w->kind == W_KACK)
        on_gateway_reply(c, w, o);
    else
        on_await_reply(c, w, o);
    wire_free(w);
    json_decref(o);
    return 0;
}

/* Reads what the socket has and handles every complete line. */
static void read_some(crewstream_client_t *c)
{
    while (c->fd >= 0) {
        char *p;
        size_t avail;
        int rc = cs_buf_space(&c->in, 64 * 1024, &p, &avail);
        if (rc == -EMSGSIZE) {
            protocol_error(c, "a line longer than max_line_bytes + 64 KiB");
            return;
        }
        if (rc != 0) {
            drop_conn(c, "out of memory");
            return;
        }
        ssize_t n = recv(c->fd, p, avail, MSG_DONTWAIT);
        if (n == 0) {
            drop_conn(c, "the daemon closed the connection");
            return;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                drop_conn(c, strerror(errno));
            return;
        }
        size_t scan = cs_buf_size(&c->in), start = 0;
        cs_buf_commit(&c->in, (size_t)n);
        const char *data = cs_buf_data(&c->in);
        size_t len = cs_buf_size(&c->in);
        for (;;) {
            const char *nl = memchr(data + scan, '\n', len - scan);
            if (nl == NULL)
                break;
            size_t end = (size_t)(nl - data);
            if (handle_line(c, data + start, end - start) < 0)
                return; /* dropped: the buffer is reset */
            start = scan = end + 1;
        }
        cs_buf_consume(&c->in, start);
    }
}

/* Writes as much of the wire queue as the socket takes. */
static void write_some(crewstream_client_t *c)
{
    while (c->fd >= 0 && c->wsend != NULL) {
        struct iovec iov[IOV_BATCH];
        struct msghdr mh = {.msg_iov = iov};
        int n = 0;

        for (wire_t *w = c->wsend; w != NULL && n < IOV_BATCH; w = w->next, n++) {
            size_t off = n == 0 ? c->wsend_off : 0;
            iov[n].iov_base = (char *)w->line + off;
            iov[n].iov_len = w->len - off;
        }
        mh.msg_iovlen = (size_t)n;
        ssize_t k = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                drop_conn(c, strerror(errno));
            return;
        }
        size_t left = (size_t)k;
        while (left > 0 && c->wsend != NULL) {
            size_t rem = c->wsend->len - c->wsend_off;
            c->wsend->started = 1;
            if (left >= rem) {
                wire_t *done = c->wsend;
                left -= rem;
                c->wsend = c->wsend->next;
                c->wsend_off = 0;
                if (done->replied && done == c->whead) /* acknowledged already: nothing more to expect */
                    wire_free(wire_pop(c));
            } else {
                c->wsend_off += left;
                left = 0;
            }
        }
    }
}

/* ---- the engine ---- */

typedef int (*pred_fn)(crewstream_client_t *c, void *arg);

/*
 * Does I/O until pred says done (0), or the deadline passes: -ETIMEDOUT when connected,
 * else the last connect error. With pred NULL, runs until the deadline and returns 0 when
 * connected then.
 */
static int run(crewstream_client_t *c, int timeout_ms, pred_fn pred, void *arg)
{
    int64_t deadline = timeout_ms < 0 ? INT64_MAX : now_ms() + timeout_ms;

    for (;;) {
        int64_t now = now_ms();
        if (c->fd < 0 && !c->broken && now >= c->next_attempt)
            try_connect(c);
        if (pred != NULL)
            pred(c, arg); /* may queue a line on a new connection */
        write_some(c);
        read_some(c);
        if (pred != NULL && pred(c, arg))
            return 0;
        if (c->broken)
            return -EPIPE;
        now = now_ms();
        if (now >= deadline) {
            if (c->fd >= 0)
                return pred != NULL ? -ETIMEDOUT : 0;
            return c->conn_err != 0 ? c->conn_err : -ENOTCONN;
        }
        int64_t wait = deadline - now;
        if (c->fd < 0) {
            if (c->next_attempt - now < wait)
                wait = c->next_attempt - now;
            if (wait > 0)
                poll(NULL, 0, wait > INT_MAX ? INT_MAX : (int)wait);
            continue;
        }
        struct pollfd p = {.fd = c->fd, .events = POLLIN | (c->wsend != NULL ? POLLOUT : 0)};
        if (poll(&p, 1, wait > INT_MAX ? INT_MAX : (int)wait) < 0 && errno != EINTR) {
            drop_conn(c, strerror(errno));
            continue;
        }
    }
}

/* ---- public functions ---- */

void crewstream_options_init(crewstream_options_t *opts)
{
    if (opts != NULL)
        memset(opts, 0, sizeof(*opts));
}

int crewstream_default_socket_path(char *buf, size_t size)
{
    const char *env = getenv("CREWSTREAM_SOCKET");
    const char *dir = getenv("XDG_RUNTIME_DIR");
    int n;

    if (buf == NULL)
        return -EINVAL;
    if (env != NULL && env[0] != '\0')
        n = snprintf(buf, size, "%s", env);
    else if (dir != NULL && dir[0] != '\0')
        n = snprintf(buf, size, "%s/crewstream.sock", dir);
    else
        n = snprintf(buf, size, "/tmp/crewstream.sock");
    if (n < 0 || (size_t)n >= size || (size_t)n > SUN_PATH_MAX) {
        if (size > 0)
            buf[0] = '\0';
        return -ENAMETOOLONG;
    }
    return n;
}

static int conn_pred(crewstream_client_t *c, void *arg)
{
    (void)arg;
    return c->fd >= 0;
}

int crewstream_connect(crewstream_client_t **out, const crewstream_options_t *opts)
{
    crewstream_options_t def = {0};
    crewstream_client_t *c = NULL;
    int rc;

    if (out == NULL)
        return -EINVAL;
    *out = NULL;
    if (opts == NULL)
        opts = &def;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -ENOMEM;
    c->fd = -1;
    if (opts->socket_path != NULL && opts->socket_path[0] != '\0') {
        if (strlen(opts->socket_path) > SUN_PATH_MAX) {
            rc = -ENAMETOOLONG;
            goto fail;
        }
        memcpy(c->path, opts->socket_path, strlen(opts->socket_path) + 1);
    } else if ((rc = crewstream_default_socket_path(c->path, sizeof(c->path))) < 0) {
        goto fail;
    }
    c->max_unacked = opts->max_unacked > 0 ? opts->max_unacked : DEF_MAX_UNACKED;
    c->cap = (size_t)c->max_unacked + (opts->ack_history > 0 ? opts->ack_history : c->max_unacked);
    c->post_timeout_ms = opts->post_timeout_ms == 0 ? DEF_POST_TIMEOUT : opts->post_timeout_ms;
    c->backoff_init = opts->backoff_initial_ms > 0 ? opts->backoff_initial_ms : DEF_BACKOFF_INIT;
    c->backoff_max = opts->backoff_max_ms > 0 ? opts->backoff_max_ms : DEF_BACKOFF_MAX;
    if (c->backoff_max < c->backoff_init)
        c->backoff_max = c->backoff_init;
    c->backoff_ms = c->backoff_init;
    c->max_line = opts->max_line_bytes > 0 ? opts->max_line_bytes : DEF_MAX_LINE;
    c->max_in = c->max_line + IN_SLACK;
    c->no_reconnect = opts->no_reconnect != 0;
    c->on_ack = opts->on_ack;
    c->on_ack_arg = opts->on_ack_arg;
    c->on_answer = opts->on_answer;
    c->on_answer_arg = opts->on_answer_arg;
    c->next_ticket = c->first_unacked = 1;
    c->ring = calloc(c->cap, sizeof(*c->ring));
    cs_buf_init(&c->in, c->max_in);
    if (c->ring == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    rc = try_connect(c);
    if (rc < 0 && opts->connect_timeout_ms != 0)
        rc = run(c, opts->connect_timeout_ms, conn_pred, NULL);
    if (rc < 0)
        goto fail;
    *out = c;
    return 0;
fail:
    crewstream_close(c);
    return rc;
}

void crewstream_close(crewstream_client_t *c)
{
    if (c == NULL)
        return;
    if (c->fd >= 0)
        close(c->fd);
    while (c->whead != NULL)
        wire_free(wire_pop(c));
    if (c->ring != NULL)
        for (size_t i = 0; i < c->cap; i++)
            entry_reset(&c->ring[i]);
    while (c->ahead != NULL)
        rec_unlink_free(c, c->ahead);
    while (c->serves != NULL) {
        serverec_t *sv = c->serves;
        c->serves = sv->next;
        free(sv->crew);
        free(sv->line);
        free(sv);
    }
    while (c->khead != NULL) {
        kickrec_t *k = c->khead;
        c->khead = k->next;
        kick_free(k);
    }
    free(c->ring);
    cs_buf_free(&c->in);
    free(c);
}

static int room_pred(crewstream_client_t *c, void *arg)
{
    (void)arg;
    return c->next_ticket - c->first_unacked < c->max_unacked;
}

/*
 * Builds the line of an event: the program's own text (so numbers and key order pass through
 * untouched), with line breaks (whitespace between tokens: JSON strings cannot hold raw ones)
 * turned into spaces and "event_id" added first when absent.
 */
static int build_line(crewstream_client_t *c, const char *text, char **line, size_t *len, char **event_id,
                      char **hir_exec)
{
    json_error_t jerr;
    json_t *o = json_loads(text, 0, &jerr);
    const char *b, *end, *id, *type, *x;
    char uuid[37] = "";
    char *s = NULL, *eid = NULL, *hx = NULL;
    size_t n, head = 0;
    int rc = -EINVAL;

    if (!json_is_object(o)) {
        set_err(c, "post: not a JSON object%s%s", o == NULL ? ": " : "", o == NULL ? jerr.text : "");
        goto fail;
    }
    if (json_object_get(o, "op") != NULL) {
        set_err(c, "post: an object with \"op\" is a command, not an event");
        goto fail;
    }
    id = json_string_value(json_object_get(o, "event_id"));
    if (json_object_get(o, "event_id") == NULL) {
        uuid_t u;
        uuid_generate_random(u);
        uuid_unparse_lower(u, uuid);
        id = uuid;
    }
    type = json_string_value(json_object_get(o, "type"));
    x = json_string_value(json_object_get(o, "execution_id"));
    rc = -ENOMEM;
    if (id != NULL && (eid = strdup(id)) == NULL)
        goto fail;
    if (type != NULL && x != NULL && strcmp(type, "human_input_required") == 0 && (hx = strdup(x)) == NULL)
        goto fail;

    b = text;
    while (*b == ' ' || *b == '\t' || *b == '\n' || *b == '\r')
        b++;
    end = b + strlen(b);
    while (end > b && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n' || end[-1] == '\r'))
        end--;
    /* b[0] is '{' and end[-1] is '}': jansson accepted one object and nothing else. */
    if (uuid[0] != '\0')
        head = strlen("\"event_id\":\"\",") + 36;
    n = (size_t)(end - b) + head + 1;
    if (n - 1 > c->max_line) {
        set_err(c, "post: the event's line is %zu bytes, more than max_line_bytes (%zu)", n - 1, c->max_line);
        rc = -EMSGSIZE;
        goto fail;
    }
    s = malloc(n + 1);
    if (s == NULL)
        goto fail;
    if (uuid[0] != '\0') {
        const char *rest = b + 1;
        while (*rest == ' ' || *rest == '\t' || *rest == '\n' || *rest == '\r')
            rest++;
        int empty = *rest == '}';
        int k = snprintf(s, n + 1, "{\"event_id\":\"%s\"%s", uuid, empty ? "" : ",");
        size_t tail = (size_t)(end - (b + 1));
        memcpy(s + k, b + 1, tail);
        n = (size_t)k + tail + 1;
    } else {
        memcpy(s, b, (size_t)(end - b));
    }
    s[n - 1] = '\n';
    s[n] = '\0';
    for (size_t i = 0; i + 1 < n; i++)
        if (s[i] == '\n' || s[i] == '\r')
            s[i] = ' ';
    json_decref(o);
    *line = s;
    *len = n;
    *event_id = eid;
    *hir_exec = hx;
    return 0;
fail:
    json_decref(o);
    free(eid);
    free(hx);
    return rc;
}

int crewstream_post(crewstream_client_t *c, const char *event_json, crewstream_ticket_t *ticket)
{
    char *line = NULL, *eid = NULL, *hx = NULL;
    size_t len = 0;
    entry_t *e;
    int rc;

    if (c == NULL || event_json == NULL)
        return -EINVAL;
    if (c->broken)
        return -EPIPE;
    rc = build_line(c, event_json, &line, &len, &eid, &hx);
    if (rc < 0)
        return rc;
    if (!room_pred(c, NULL)) {
        /* Negative: no waiting, but acks that already arrived make room (a retry loop gets in). */
        rc = run(c, c->post_timeout_ms < 0 ? 0 : c->post_timeout_ms, room_pred, NULL);
        if (rc < 0) {
            if (rc == -ETIMEDOUT) {
                set_err(c, "post: %u lines are waiting for their acks (max_unacked)", c->max_unacked);
                rc = -EAGAIN;
            }
            goto fail;
        }
    }
    e = slot(c, c->next_ticket);
    if (c->fd >= 0) {
        wire_t *w = wire_add(c, W_EVENT, line, len, NULL);
        if (w == NULL) {
            rc = -ENOMEM;
            goto fail;
        }
        w->ticket = c->next_ticket;
    }
    entry_reset(e);
    e->ticket = c->next_ticket++;
    e->line = line;
    e->len = len;
    e->event_id = eid;
    e->hir_exec = hx;
    e->sends = c->fd >= 0 ? 1 : 0;
    c->stats.posted++;
    if (ticket != NULL)
        *ticket = e->ticket;
    run(c, 0, NULL, NULL);
    return 0;
fail:
    free(line);
    free(eid);
    free(hx);
    return rc;
}

static int acked_pred(crewstream_client_t *c, void *arg)
{
    return *(crewstream_ticket_t *)arg < c->first_unacked;
}

int crewstream_wait(crewstream_client_t *c, crewstream_ticket_t ticket, int timeout_ms, crewstream_ack_t *ack)
{
    int rc;

    if (c == NULL)
        return -EINVAL;
    if (ticket == 0 || ticket >= c->next_ticket || ticket + c->cap < c->next_ticket)
        return -ERANGE;
    rc = run(c, timeout_ms, acked_pred, &ticket);
    if (rc < 0)
        return rc;
    if (ack != NULL)
        fill_ack(slot(c, ticket), ack);
    return 0;
}

static int flushed_pred(crewstream_client_t *c, void *arg)
{
    (void)arg;
    return c->first_unacked == c->next_ticket;
}

int crewstream_flush(crewstream_client_t *c, int timeout_ms)
{
    if (c == NULL)
        return -EINVAL;
    return run(c, timeout_ms, flushed_pred, NULL);
}

typedef struct {
    uint64_t id, gen;
} ping_t;

static int pong_pred(crewstream_client_t *c, void *arg)
{
    ping_t *p = arg;

    if (c->pong_id >= p->id)
        return 1;
    if (c->fd >= 0 && p->gen != c->gen && queue_ping(c, p->id) == 0)
        p->gen = c->gen; /* (re)sent on this connection */
    return 0;
}

int crewstream_ping(crewstream_client_t *c, int timeout_ms)
{
    ping_t p;

    if (c == NULL)
        return -EINVAL;
    p.id = ++c->ping_next;
    p.gen = 0;
    return run(c, timeout_ms, pong_pred, &p);
}

static int answer_pred(crewstream_client_t *c, void *arg)
{
    awaitrec_t *a = arg;
    (void)c;
    return a->answered || a->failed != 0;
}

int crewstream_await_answer(crewstream_client_t *c, const char *execution_id, const char *request_event_id,
                            int timeout_ms, crewstream_answer_t *out)
{
    awaitrec_t *a;
    int rc;

    if (c == NULL || execution_id == NULL || request_event_id == NULL || execution_id[0] == '\0' ||
        request_event_id[0] == '\0' || out == NULL)
        return -EINVAL;
    memset(out, 0, sizeof(*out));
    if (c->broken)
        return -EPIPE;
    run(c, 0, NULL, NULL); /* take in answers already on their way */
    a = rec_get(c, execution_id, request_event_id);
    if (a == NULL)
        return -ENOMEM;
    if (!a->answered) {
        a->failed = 0;
        a->awaited = 1;
        if (c->fd >= 0 && queue_await(c, a) < 0)
            return -ENOMEM;
        rc = run(c, timeout_ms, answer_pred, a);
        if (rc < 0)
            return rc;
        if (!a->answered)
            return a->failed;
    }
    rc = answer_copy(out, &a->ans);
    if (rc == 0)
        rec_delivered(c, a);
    return rc;
}

void crewstream_answer_clear(crewstream_answer_t *answer)
{
    if (answer == NULL)
        return;
    free(answer->execution_id);
    free(answer->request_event_id);
    free(answer->task_id);
    free(answer->human_feedback);
    free(answer->event_id);
    free(answer->json);
    memset(answer, 0, sizeof(*answer));
}

int crewstream_process(crewstream_client_t *c, int timeout_ms)
{
    if (c == NULL)
        return -EINVAL;
    return run(c, timeout_ms, NULL, NULL);
}

int crewstream_fd(const crewstream_client_t *c)
{
    return c != NULL ? c->fd : -1;
}

size_t crewstream_pending(const crewstream_client_t *c)
{
    return c != NULL ? (size_t)(c->next_ticket - c->first_unacked) : 0;
}

void crewstream_stats(const crewstream_client_t *c, crewstream_stats_t *out)
{
    if (out == NULL)
        return;
    if (c == NULL)
        memset(out, 0, sizeof(*out));
    else
        *out = c->stats;
}

const char *crewstream_socket_path(const crewstream_client_t *c)
{
    return c != NULL ? c->path : "";
}

const char *crewstream_last_error(const crewstream_client_t *c)
{
    return c != NULL ? c->err : "";
}

const char *crewstream_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
    case -EINVAL:
        return "invalid argument (an event must be one JSON object without \"op\")";
    case -ENOMEM:
        return "out of memory";
    case -EMSGSIZE:
        return "the event is longer than max_line_bytes";
    case -ENAMETOOLONG:
        return "the socket path is too long for a Unix socket address";
    case -EAGAIN:
        return "too many events are waiting for their acks (max_unacked)";
    case -ETIMEDOUT:
        return "timed out";
    case -ENOENT:
        return "no socket at that path (is crewstreamd running?)";
    case -ECONNREFUSED:
        return "connection refused (nothing listens on the socket: is crewstreamd running?)";
    case -EACCES:
        return "permission denied on the socket";
    case -ENOTCONN:
        return "not connected";
    case -EPIPE:
        return "the connection broke (reconnection is off)";
    case -ERANGE:
        return "unknown ticket, or its ack is no longer retained";
    case -ESRCH:
        return "the daemon does not know this human-input request";
    case -EPROTO:
        return "the daemon refused a command or sent an unexpected line";
    default:
        return err < 0 ? strerror(-err) : "success";
    }
}

/* ---- the crew gateway's runtime side ---- */

static int serve_pred(crewstream_client_t *c, void *arg)
{
    serverec_t *sv = arg;

    if (sv->failed != 0)
        return 1;
    if (c->fd >= 0 && sv->gen != c->gen && queue_serve(c, sv) < 0)
        return 0;
    return sv->gen == c->gen && sv->answered;
}

int crewstream_serve(crewstream_client_t *c, const char *crew, const char *const *inputs, size_t n_inputs,
                     unsigned concurrency, int timeout_ms)
{
    serverec_t *sv, **pp;
    json_t *o, *arr;
    char *s;
    int rc;

    if (c == NULL || crew == NULL || crew[0] == '\0' || (inputs == NULL && n_inputs > 0) || concurrency == 0)
        return -EINVAL;
    if (c->broken)
        return -EPIPE;
    arr = json_array();
    for (size_t i = 0; arr != NULL && i < n_inputs; i++) {
        if (inputs[i] == NULL || json_array_append_new(arr, json_string(inputs[i])) != 0) {
            json_decref(arr);
            return inputs[i] == NULL ? -EINVAL : -ENOMEM;
        }
    }
    o = arr != NULL ? json_pack("{s:s, s:s, s:o, s:I}", "op", "serve", "crew", crew, "inputs", arr,
                                "concurrency", (json_int_t)concurrency)
                    : NULL;
    s = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (s == NULL)
        return -ENOMEM;
    /* The same crew again: its record is updated (the daemon updates its serving). */
    for (sv = c->serves; sv != NULL && strcmp(sv->crew, crew) != 0; sv = sv->next)
        ;
    if (sv == NULL) {
        sv = calloc(1, sizeof(*sv));
        if (sv == NULL || (sv->crew = strdup(crew)) == NULL) {
            free(sv);
            free(s);
            return -ENOMEM;
        }
        sv->next = c->serves;
        c->serves = sv;
    }
    size_t n = strlen(s);
    char *line = realloc(s, n + 2);
    if (line == NULL) {
        free(s);
        return -ENOMEM;
    }
    line[n] = '\n';
    line[n + 1] = '\0';
    free(sv->line);
    sv->line = line;
    sv->len = n + 1;
    sv->gen = 0;
    sv->answered = 0;
    sv->failed = 0;
    rc = run(c, timeout_ms, serve_pred, sv);
    if (rc == 0 && sv->failed != 0) {
        rc = sv->failed;
        /* Refused: not served, not sent again. */
        for (pp = &c->serves; *pp != sv; pp = &(*pp)->next)
            ;
        *pp = sv->next;
        for (wire_t *w = c->whead; w != NULL; w = w->next)
            if (w->sv == sv)
                w->sv = NULL;
        free(sv->crew);
        free(sv->line);
        free(sv);
    }
    return rc;
}

static int kickoff_pred(crewstream_client_t *c, void *arg)
{
    (void)arg;
    return c->khead != NULL;
}

int crewstream_next_kickoff(crewstream_client_t *c, int timeout_ms, crewstream_kickoff_t *out)
{
    int rc;

    if (c == NULL || out == NULL)
        return -EINVAL;
    memset(out, 0, sizeof(*out));
    if (c->khead == NULL && c->broken)
        return -EPIPE;
    rc = run(c, timeout_ms, kickoff_pred, NULL);
    if (rc < 0 && c->khead == NULL)
        return rc;
    kickrec_t *k = c->khead;
    c->khead = k->next;
    if (c->khead == NULL)
        c->ktail = NULL;
    *out = k->k;
    free(k);
    return 0;
}

static int kack_pred(crewstream_client_t *c, void *arg)
{
    kackrec_t *ka = arg;

    if (ka->done)
        return 1;
    if (c->fd >= 0 && ka->gen != c->gen)
        queue_kack(c, ka); /* (re)sent on this connection; out of memory: tried again next round */
    return 0;
}

int crewstream_kickoff_ack(crewstream_client_t *c, const char *execution_id, int timeout_ms)
{
    kackrec_t ka = {.execution_id = execution_id};
    int rc;

    if (c == NULL || execution_id == NULL || execution_id[0] == '\0')
        return -EINVAL;
    rc = run(c, timeout_ms, kack_pred, &ka);
    /* A reply still on its way must not reach this stack frame. */
    for (wire_t *w = c->whead; w != NULL; w = w->next)
        if (w->ka == &ka)
            w->ka = NULL;
    return rc < 0 ? rc : ka.result;
}

void crewstream_kickoff_clear(crewstream_kickoff_t *k)
{
    if (k == NULL)
        return;
    free(k->execution_id);
    free(k->crew);
    free(k->inputs_json);
    free(k->json);
    memset(k, 0, sizeof(*k));
}
