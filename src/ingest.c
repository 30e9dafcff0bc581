/*
 * ingest.c - see ingest.h.
 */
#include "ingest.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <uthash.h>
#include <utlist.h>

#include "cluster.h"
#include "cursor.h"
#include "event.h"
#include "gateway.h"
#include "jscan.h"
#include "lines.h"
#include "listener.h"
#include "log.h"
#include "status.h"
#include "webhook.h"

#define READ_CHUNK 65536
/* A producer whose queued output (replies and pushes) reaches the high mark is not read until it falls
 * to the low mark: what it may cost is bounded however it sends and however little it reads. */
#define OUT_HIGH_MARK ((size_t)1 << 20)
#define OUT_LOW_MARK  (OUT_HIGH_MARK / 4)

typedef struct producer producer_t;
typedef struct qpush qpush_t;
typedef struct slot slot_t;
typedef struct late_await late_await_t;
typedef struct gw_rk gw_rk_t;
typedef struct gw_offer gw_offer_t;

struct cs_ingest {
    cs_daemon_t *d;
    int fd;
    cs_io_t io;
    cs_accept_backoff_t backoff;
    char *path;
    producer_t *list;
    size_t count;
    producer_t *holding;    /* producers whose output waits for the journal's write (hprev/hnext) */
    producer_t *releasing;  /* on_release's: those taken off holding, not looked at yet */
    size_t n_paused;        /* producers not read for their queued output */
    size_t queued;          /* output queued to every producer (cs_ingest_stats) */
    uint64_t pauses;        /* times a producer was paused */
    uint64_t pushes_same;   /* pushes not queued again: the same line was still queued */
    uint64_t awaits_missed; /* requests acknowledged that never reached this node's store (late_await) */
    late_await_t *late;     /* requests acknowledged before this node's store had them (cluster mode) */
    cs_timer_t late_timer;
    /* The crew gateway's clock: one timer at its earliest deadline, set again once per loop turn. */
    cs_timer_t gw_timer;
    cs_defer_t gw_defer;
    /* Cluster mode: the gateway's watch on the global stream (gw_watch), which sees every event as it
     * enters this node's store, from this node's producers or any other node's. */
    cs_sub_t gw_sub;
    int gw_sub_open;
    cs_defer_t gw_watch_d;
    /* Cluster mode: kickoffs this node handed to the cluster (gw_remote), until a node took them or their
     * gateway.queue_timeout_s passed; and the claims this node sent for kickoffs others handed over. */
    gw_rk_t *rks;      /* by execution id */
    gw_rk_t *rk_order; /* by deadline (the order they were taken) */
    size_t n_rks;
    cs_timer_t rk_timer;
    gw_offer_t *offers;
    int gw_claiming; /* inside the kickoff of a claimed one: queued here, never handed over again */
};

/* Cluster mode: a kickoff handed to the cluster (a kickoff.requested event) that no node is known to have
 * taken yet. */
struct gw_rk {
    char id[37];
    char crew[CS_GATEWAY_CREW_MAX + 1];
    int64_t deadline;        /* gateway.queue_timeout_s after it was taken */
    cs_cluster_claim_t *req; /* the claim at its deadline, in flight */
    cs_ingest_t *in;
    UT_hash_handle hh;
    gw_rk_t *prev, *next; /* in rk_order */
};

/* Cluster mode: a claim sent for a kickoff another node handed over, which a runtime here may run. */
struct gw_offer {
    cs_ingest_t *in;
    cs_cluster_claim_t *req;
    char id[37];
    char crew[CS_GATEWAY_CREW_MAX + 1];
    json_t *inputs;
    gw_offer_t *prev, *next;
};

/* A push line queued to a producer and not yet wholly written, found by its hash: an await repeated
 * before the answer is written does not queue it again. */
struct qpush {
    uint64_t hash;
    size_t len;
    uint64_t end; /* in the output stream: the position just past it (in held: its end offset there) */
    int in_held;
    UT_hash_handle hh;
    qpush_t *prev, *next; /* in the order queued */
};

/*
 * A reply held in line order while an earlier one waits for the store (a publish the store completes
 * later: store.h, CS_PENDING). From the first pending publish on, every reply of that producer goes
 * into a slot behind it, and the ready slots at the front are moved to the output as they fill: the
 * replies leave strictly in line order whichever publish completes first.
 */
struct slot {
    producer_t *p;
    uint64_t ticket; /* of the pending publish; 0 once its reply is in */
    cs_store_done_t done;
    int ready;
    cs_buf_t text; /* the reply, with its newline; no maximum: it holds one reply line */
    /* A human_input_required whose publish completes later with nothing of it stored here yet (cluster
     * mode: the request reaches this node's store with Redis' reply): the connection awaits it then. */
    cs_awaiter_t *aw;
    char *await_x; /* its execution id */
    slot_t *next;
};

/* How long a request Redis acknowledged may take to reach this node's store (behind a hole the channel or a
 * read fills) before the connection that posted it stops waiting to await it, and how often it looks. */
#define LATE_AWAIT_MS      30000
#define LATE_AWAIT_TICK_MS 20

/* A request acknowledged (cluster mode) that this node's store does not hold yet: the connection that posted
 * it awaits it once it does (late_tick). */
struct late_await {
    producer_t *p;
    cs_awaiter_t *aw;
    int64_t until;
    late_await_t *prev, *next;
    char event_id[CS_EVENT_ID_MAX + 1];
    char x[]; /* the execution id */
};

struct producer {
    cs_ingest_t *in;
    int fd;
    cs_io_t io;
    cs_defer_t defer;
    uid_t uid;
    cs_lines_t lines; /* the line being read */
    /* Replies and pushes not yet written. No maximum: OUT_HIGH_MARK paces it (the producer is not read
     * past it), and an answer is never dropped (what the producer awaits bounds those). */
    cs_buf_t out;
    uint64_t written; /* bytes of the output stream written: the position of cs_buf_data(&out)[0] */
    /* Pushes waiting for the replies of the lines being handled; no maximum, as for out (it is counted in
     * the queued output that pauses the producer). Never consumed in part: moved to out whole. */
    cs_buf_t held;
    qpush_t *qpush_hash, *qpushes; /* pushes queued, by hash and in order */
    size_t n_qpushes;
    size_t queued; /* what producer_queued counted last, for the total in cs_ingest_t */
    char *rbuf;    /* read but not handled yet: the rest of a read when the producer paused */
    size_t rlen, roff;
    int paused; /* its queued output reached OUT_HIGH_MARK: not read until it falls to OUT_LOW_MARK */
    int eof;
    int closing;
    int push_lost; /* a kickoff push could not be queued: closed at the turn's end (producer_lost_reply) */
    cs_awaiter_t *awaits;       /* human-input answers this connection waits for */
    slot_t *slots, *slots_tail; /* replies held in line order behind a pending publish */
    size_t n_slots, slot_bytes;
    slot_t *spare; /* slots done with, kept for the next pending publishes (at most SLOTS_SPARE_MAX) */
    size_t n_spare;
    slot_t *next_slot; /* publish_ordinary's slot for a publish the store may defer, kept while unused */
    /* Nonzero: an acknowledgement in its output is held until the store releases this position (a
     * journal's write of the turn: store.h, holding); its output is not written until then. */
    uint64_t hold;
    producer_t *hprev, *hnext; /* in cs_ingest_t's holding (or releasing) list while hold is set */
    int releasing;             /* in releasing */
    cs_defer_t flush_defer;
    producer_t *prev, *next;
};

static void producer_flush_later(producer_t *p);
static void producer_close(producer_t *p);
static void producer_pump(producer_t *p);
static void producer_lost_reply(producer_t *p, int rc, const char *what);

/* ---- replies ---- */

/*
 * Where a line's reply goes, and the first failure to put it there: 0, -EMSGSIZE past the buffer's
 * maximum, or -ENOMEM. A reply is appended whole or not at all.
 */
typedef struct reply {
    cs_buf_t *b;
    int rc;
} reply_t;

static void reply_add(reply_t *r, const char *s, size_t n)
{
    if (r->rc == 0)
        r->rc = cs_buf_append(r->b, s, n);
}

/* Appends o (consumed) as one reply line. */
static void reply_json(reply_t *r, json_t *o)
{
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;

    json_decref(o);
    if (s == NULL) {
        if (r->rc == 0)
            r->rc = -ENOMEM; /* json_pack or json_dumps: out of memory */
        return;
    }
    size_t n = strlen(s);
    if (r->rc == 0 && (r->rc = cs_buf_reserve(r->b, n + 1)) == 0) {
        /* Room for both: neither append fails. */
        (void)cs_buf_append(r->b, s, n);
        (void)cs_buf_append(r->b, "\n", 1);
    }
    free(s);
}

/*
 * Appends {"ok":true,"seq":N,"event_id":"…"[,"duplicate":true]}: one for every event, so written
 * by hand rather than through json_pack and json_dumps. event_id holds no control characters
 * (cs_valid_event_id); '"' and '\\' are the only bytes to escape.
 */
static void reply_ack(reply_t *r, const cs_publish_t *pub)
{
    char line[48 + 2 * sizeof(pub->event_id) + 20], *p = line;

    memcpy(p, "{\"ok\":true,\"seq\":", 17), p += 17;
    p += cs_fmt_u64(p, pub->seq);
    memcpy(p, ",\"event_id\":\"", 13), p += 13;
    for (const char *s = pub->event_id; *s != '\0'; s++) {
        if (*s == '"' || *s == '\\')
            *p++ = '\\';
        *p++ = *s;
    }
    *p++ = '"';
    if (pub->duplicate)
        memcpy(p, ",\"duplicate\":true", 17), p += 17;
    memcpy(p, "}\n", 2), p += 2;
    reply_add(r, line, (size_t)(p - line));
}

static cs_err_t reply_error(reply_t *r, cs_err_t code, const char *detail)
{
    reply_json(r, json_pack("{s:b, s:s, s:s}", "ok", 0, "error", cs_err_name(code), "detail", detail));
    return code;
}

/* ---- output queued to a producer ---- */

/* Bytes queued to p and not yet written: replies, pushes, and what keeps track of the pushes. */
static size_t producer_queued(const producer_t *p)
{
    return cs_buf_size(&p->out) + cs_buf_size(&p->held) + p->n_qpushes * sizeof(qpush_t) +
           p->n_slots * sizeof(slot_t) + p->slot_bytes;
}

/* Keeps the total of every producer's queued output (the /metrics gauge) in step with p's. */
static void producer_account(producer_t *p)
{
    size_t q = producer_queued(p);

    p->in->queued = p->in->queued - p->queued + q;
    p->queued = q;
}

/* Stops reading p once its queued output reaches the high mark (backpressure). */
static void producer_check_pause(producer_t *p)
{
    producer_account(p);
    if (!p->paused && p->queued >= OUT_HIGH_MARK) {
        p->paused = 1;
        p->in->n_paused++;
        p->in->pauses++;
    }
}

/*
 * A push line is known by its length and its two ends: the start names the execution and the request,
 * the end the answer's event_id and seq, which no other answer in that execution shares. Only the ends
 * are hashed and compared, so that an await repeated thousands of times does not read a large answer
 * each time.
 */
#define PUSH_END 256

static uint64_t fnv(uint64_t h, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static uint64_t hash_push(const char *s, size_t n)
{
    uint64_t h = fnv(14695981039346656037ull, (const char *)&n, sizeof(n));

    if (n <= 2 * PUSH_END)
        return fnv(h, s, n);
    return fnv(fnv(h, s, PUSH_END), s + n - PUSH_END, PUSH_END);
}

/* Compares [from, to) of the line s with the queued push whose byte i is buf[i - back] (back > 0: its
 * first bytes were written and are gone from buf; they are at most skip). */
static int same_range(const char *buf, size_t back, size_t skip, const char *s, size_t from, size_t to)
{
    if (from < skip)
        from = skip;
    return from >= to || memcmp(buf + (from - back), s + from, to - from) == 0;
}

/*
 * Returns nonzero when q is the push line s: same length, and the same ends as far as they are not
 * written yet (for what is written, the hash stands in).
 */
static int qpush_holds(const producer_t *p, const qpush_t *q, const char *s, size_t n)
{
    const char *buf;
    size_t back = 0, skip = 0;

    if (q->len != n)
        return 0;
    if (q->in_held) {
        buf = cs_buf_data(&p->held) + (q->end - n);
    } else {
        /* out holds the stream from position p->written on: the bytes before it are gone. */
        uint64_t start = q->end - n;
        if (start >= p->written) {
            buf = cs_buf_data(&p->out) + (size_t)(start - p->written);
        } else {
            buf = cs_buf_data(&p->out);
            back = skip = (size_t)(p->written - start);
        }
    }
    if (n <= 2 * PUSH_END)
        return same_range(buf, back, skip, s, 0, n);
    return same_range(buf, back, skip, s, 0, PUSH_END) && same_range(buf, back, skip, s, n - PUSH_END, n);
}

/* Forgets the pushes wholly written. */
static void qpush_written(producer_t *p)
{
    while (p->qpushes != NULL && !p->qpushes->in_held && p->qpushes->end <= p->written) {
        qpush_t *q = p->qpushes;
        HASH_DEL(p->qpush_hash, q);
        DL_DELETE(p->qpushes, q);
        p->n_qpushes--;
        free(q);
    }
}

static void qpush_clear(producer_t *p)
{
    while (p->qpushes != NULL) {
        qpush_t *q = p->qpushes;
        HASH_DEL(p->qpush_hash, q);
        DL_DELETE(p->qpushes, q);
        free(q);
    }
    p->n_qpushes = 0;
}

static void on_push(cs_awaiter_t *aw, const char *line, size_t len)
{
    producer_t *p = aw->owner;
    uint64_t h = hash_push(line, len);
    qpush_t *q = NULL;

    DL_DELETE2(p->awaits, aw, oprev, onext);
    free(aw);
    /* The same answer still queued (an await repeated before it was read): one copy is enough. */
    HASH_FIND(hh, p->qpush_hash, &h, sizeof(h), q);
    if (q != NULL && qpush_holds(p, q, line, len)) {
        p->in->pushes_same++;
        return;
    }
    /* Held apart until the replies of the lines now being handled are queued: a push never lands
     * between a line and its reply. An answer is never dropped: it is queued even past the high mark
     * (what the producer awaits bounds it), and the producer is then not read until it drains. */
    int rc = cs_buf_append(&p->held, line, len);
    if (rc != 0) {
        producer_lost_reply(p, rc, "an answer (it may await again)");
        return;
    }
    if (q == NULL && (q = calloc(1, sizeof(*q))) != NULL) {
        q->hash = h;
        q->len = len;
        q->end = cs_buf_size(&p->held);
        q->in_held = 1;
        HASH_ADD(hh, p->qpush_hash, hash, sizeof(q->hash), q);
        DL_APPEND(p->qpushes, q);
        p->n_qpushes++;
    }
    producer_check_pause(p);
    producer_flush_later(p);
}

/* ---- replies held in line order behind a pending publish ---- */

static void on_stored(void *data, cs_err_t e, const cs_publish_t *pub, const char *detail);

/* Spare slots a producer keeps: its window of pending publishes, so that a publish under a journal
 * allocates nothing for its held reply once the window is warm (the output high mark bounds the slots
 * in use). */
#define SLOTS_SPARE_MAX 256

static slot_t *slot_new(producer_t *p)
{
    slot_t *sl = p->spare;

    if (sl != NULL) {
        p->spare = sl->next;
        p->n_spare--;
        cs_buf_t text = sl->text; /* emptied by slot_put: its room is reused */
        memset(sl, 0, sizeof(*sl));
        sl->text = text;
    } else if ((sl = calloc(1, sizeof(*sl))) == NULL) {
        return NULL;
    }
    sl->p = p;
    sl->done.fn = on_stored;
    sl->done.data = sl;
    sl->done.can_hold = 1; /* an acknowledgement the journal holds is held in the output (producer_hold) */
    return sl;
}

/* Done with sl (off the list): kept as a spare, or freed. */
static void slot_put(producer_t *p, slot_t *sl)
{
    if (p->n_spare >= SLOTS_SPARE_MAX || sl->text.cap > 256) {
        cs_buf_free(&sl->text);
        if (p->n_spare >= SLOTS_SPARE_MAX) {
            free(sl);
            return;
        }
    }
    cs_buf_truncate(&sl->text, 0);
    sl->next = p->spare;
    p->spare = sl;
    p->n_spare++;
}

static void slots_free_spare(producer_t *p)
{
    while (p->spare != NULL) {
        slot_t *sl = p->spare;
        p->spare = sl->next;
        cs_buf_free(&sl->text);
        free(sl);
    }
    p->n_spare = 0;
}

/* Queues sl behind p's held replies (its text filled, or its publish pending). */
static void slot_append(producer_t *p, slot_t *sl)
{
    if (p->slots_tail != NULL)
        p->slots_tail->next = sl;
    else
        p->slots = sl;
    p->slots_tail = sl;
    p->n_slots++;
    p->slot_bytes += cs_buf_size(&sl->text);
}

/* Holds the place of a line whose publish the store completes later. */
static void slot_wait(slot_t *sl, uint64_t ticket)
{
    sl->ticket = ticket;
    slot_append(sl->p, sl);
}

/* Moves the replies at the front that are in to the output, in line order. Returns 0, or -1 when the
 * producer was closed (out of memory: the replies could not be kept). */
static int slots_drain(producer_t *p)
{
    while (p->slots != NULL && p->slots->ready) {
        slot_t *sl = p->slots;
        int rc = cs_buf_size(&sl->text) > 0
                     ? cs_buf_append(&p->out, cs_buf_data(&sl->text), cs_buf_size(&sl->text))
                     : 0;
        if (rc != 0) {
            producer_lost_reply(p, rc, "a reply held behind a pending publish");
            return -1;
        }
        p->slots = sl->next;
        if (p->slots == NULL)
            p->slots_tail = NULL;
        p->n_slots--;
        p->slot_bytes -= cs_buf_size(&sl->text);
        slot_put(p, sl);
    }
    return 0;
}

static void producer_await(producer_t *p, cs_hitl_req_t *req, cs_awaiter_t *aw);

/* Gives up on a late await: nothing awaits the request without asking; the runtime's own await gets it. */
static void late_drop(cs_ingest_t *in, late_await_t *l, int counted)
{
    DL_DELETE(in->late, l);
    if (counted) {
        in->awaits_missed++;
        cs_log_warn("ingest: request %s of %s was acknowledged but has not reached this node's store within "
                    "%d s: the connection that posted it does not await it (it may send await)",
                    l->event_id, l->x, LATE_AWAIT_MS / 1000);
    }
    free(l->aw);
    free(l);
}

static void late_tick(cs_timer_t *t)
{
    cs_ingest_t *in = t->data;
    int64_t now = cs_loop_now(in->d->loop);
    late_await_t *l, *tmp;
    char detail[256];

    DL_FOREACH_SAFE(in->late, l, tmp)
    {
        cs_hitl_req_t *req =
            cs_store_find_request(in->d->store, l->x, strlen(l->x), l->event_id, detail, sizeof(detail));
        if (req != NULL) {
            producer_t *p = l->p;
            cs_awaiter_t *aw = l->aw;
            l->aw = NULL;
            late_drop(in, l, 0);
            producer_await(p, req, aw); /* pushes at once when answered meanwhile */
        } else if (now >= l->until) {
            late_drop(in, l, 1);
        }
    }
    if (in->late != NULL)
        cs_timer_start(&in->late_timer, LATE_AWAIT_TICK_MS);
}

/* Drops p's late awaits (it is closing: nobody to push to). */
static void late_forget(producer_t *p)
{
    late_await_t *l, *tmp;

    DL_FOREACH_SAFE(p->in->late, l, tmp)
    {
        if (l->p == p)
            late_drop(p->in, l, 0);
    }
}

/* A request stored (cluster mode: Redis has it and, when it was its ring's next, so has this node's store):
 * the connection that posted it awaits it now, its reply already in place; one this node does not hold yet
 * (behind a hole the channel or a read fills, in order) is awaited when it arrives (late_tick). */
static void slot_await(producer_t *p, slot_t *sl, cs_err_t e, const cs_publish_t *pub)
{
    cs_ingest_t *in = p->in;
    cs_awaiter_t *aw = sl->aw;
    char detail[256];
    late_await_t *l;

    if (aw == NULL)
        return;
    sl->aw = NULL;
    if (e == CS_OK) {
        cs_hitl_req_t *req = cs_store_find_request(in->d->store, sl->await_x, strlen(sl->await_x),
                                                   pub->event_id, detail, sizeof(detail));
        if (req != NULL) {
            producer_await(p, req, aw);
            aw = NULL;
        } else if ((l = calloc(1, sizeof(*l) + strlen(sl->await_x) + 1)) != NULL) {
            l->p = p;
            l->aw = aw;
            l->until = cs_loop_now(in->d->loop) + LATE_AWAIT_MS;
            snprintf(l->event_id, sizeof(l->event_id), "%s", pub->event_id);
            strcpy(l->x, sl->await_x);
            if (in->late == NULL)
                cs_timer_start(&in->late_timer, LATE_AWAIT_TICK_MS);
            DL_APPEND(in->late, l);
            aw = NULL;
        } else {
            in->awaits_missed++;
            cs_log_warn(
                "ingest: out of memory: the connection that posted request %s of %s does not await it "
                "(it may send await)",
                pub->event_id, sl->await_x);
        }
    }
    free(aw);
    free(sl->await_x);
    sl->await_x = NULL;
}

/* The store's word on a pending publish: its reply, in its place; the ready ones go out in order. */
static void on_stored(void *data, cs_err_t e, const cs_publish_t *pub, const char *detail)
{
    slot_t *sl = data;
    producer_t *p = sl->p;
    /* The front slot (confirmations come in order, so usually): its reply goes straight to the output. */
    int front = p->slots == sl;
    reply_t r = {front ? &p->out : &sl->text, 0};

    sl->ticket = 0;
    if (e == CS_OK) {
        reply_ack(&r, pub);
    } else {
        reply_error(&r, e, detail);
        p->in->d->counters.ingest_errors++;
    }
    if (r.rc != 0) {
        producer_lost_reply(p, r.rc, "the reply to a confirmed publish");
        return;
    }
    sl->ready = 1;
    p->slot_bytes += cs_buf_size(&sl->text); /* 0 for the front one: its text is in out */
    slot_await(p, sl, e, pub);
    if (slots_drain(p) != 0)
        return;
    producer_check_pause(p);
    producer_flush_later(p);
}

/* Frees p's held replies, forgetting the publishes still pending (nobody to answer any more). */
static void slots_clear(producer_t *p)
{
    while (p->slots != NULL) {
        slot_t *sl = p->slots;
        p->slots = sl->next;
        if (sl->ticket != 0)
            cs_store_forget(p->in->d->store, sl->ticket);
        cs_buf_free(&sl->text);
        free(sl->aw);
        free(sl->await_x);
        free(sl);
    }
    if (p->next_slot != NULL) {
        cs_buf_free(&p->next_slot->text);
        free(p->next_slot);
        p->next_slot = NULL;
    }
    slots_free_spare(p);
    p->slots_tail = NULL;
    p->n_slots = 0;
    p->slot_bytes = 0;
}

/* ---- awaiting human input ---- */

/* Makes connection p await req, once, with aw (allocated by the caller, which answered the line already:
 * an answer that exists is pushed right behind that reply). */
static void producer_await(producer_t *p, cs_hitl_req_t *req, cs_awaiter_t *aw)
{
    for (cs_awaiter_t *a = p->awaits; a != NULL; a = a->onext) {
        if (a->req == req) {
            free(aw);
            return;
        }
    }
    aw->owner = p;
    aw->push = on_push;
    DL_APPEND2(p->awaits, aw, oprev, onext);
    cs_hitl_await(req, aw); /* pushes at once when the answer exists */
}

static cs_err_t reply_no_memory(reply_t *r)
{
    return reply_error(r, CS_ERR_INTERNAL, "out of memory: the line was not handled; send it again");
}

static cs_err_t op_await(cs_daemon_t *d, producer_t *p, json_t *obj, reply_t *r)
{
    char detail[300];
    json_t *jx = json_object_get(obj, "execution_id"), *je = json_object_get(obj, "event_id");
    const char *x = json_string_value(jx), *e = json_string_value(je);
    cs_hitl_req_t *req;

    if (p == NULL)
        return reply_error(r, CS_ERR_BAD_OP, "await needs a Unix-socket connection to push to");
    if (x == NULL || e == NULL)
        return reply_error(r, CS_ERR_MISSING_FIELD, "await needs execution_id and event_id strings");
    if (!cs_valid_execution_id(x, json_string_length(jx)))
        return reply_error(r, CS_ERR_INVALID_FIELD,
                           "execution_id must be 1-128 characters of [A-Za-z0-9._:-]");
    req = cs_store_find_request(d->store, x, json_string_length(jx), e, detail, sizeof(detail));
    if (req == NULL)
        return reply_error(r, CS_ERR_NOT_FOUND, detail);
    cs_awaiter_t *aw = calloc(1, sizeof(*aw));
    if (aw == NULL)
        return reply_no_memory(r);
    reply_json(r, json_pack("{s:b, s:s, s:s, s:s, s:b}", "ok", 1, "op", "await", "execution_id", x,
                            "event_id", e, "answered", req->answered));
    /* After the ack: an answer that already exists is pushed right behind it. */
    producer_await(p, req, aw);
    return CS_OK;
}

/* ---- the crew gateway: serve, kickoff_ack, kickoff pushes (SPEC §9) ---- */

cs_gateway_t *cs_ingest_gateway(cs_daemon_t *d)
{
    cs_gateway_limits_t lim = {d->cfg->gateway_queue, (int64_t)d->cfg->ack_timeout_s * 1000,
                               (int64_t)d->cfg->queue_timeout_s * 1000};

    /* The configuration may have been reloaded since the last call. */
    cs_gateway_set_limits(d->gateway, &lim);
    return d->gateway;
}

static cs_err_t op_serve(cs_daemon_t *d, producer_t *p, json_t *obj, reply_t *r)
{
    char detail[300];
    cs_err_t e;

    if (p == NULL)
        return reply_error(r, CS_ERR_BAD_OP, "serve needs a Unix-socket connection to push kickoffs to");
    /* The reply goes before any kickoff the serve lets through: those pushes wait in held. */
    e = cs_gateway_serve(cs_ingest_gateway(d), p, json_object_get(obj, "crew"),
                         json_object_get(obj, "inputs"), json_object_get(obj, "concurrency"),
                         cs_loop_now(d->loop), detail, sizeof(detail));
    if (e != CS_OK)
        return reply_error(r, e, detail);
    reply_json(r, json_pack("{s:b, s:s, s:O}", "ok", 1, "op", "serve", "crew", json_object_get(obj, "crew")));
    return CS_OK;
}

static cs_err_t op_kickoff_ack(cs_daemon_t *d, producer_t *p, json_t *obj, reply_t *r)
{
    char detail[300];
    json_t *jx = json_object_get(obj, "execution_id");
    const char *x = json_string_value(jx);
    cs_err_t e;

    if (p == NULL)
        return reply_error(r, CS_ERR_BAD_OP,
                           "kickoff_ack needs the Unix-socket connection the kickoff came to");
    if (x == NULL)
        return reply_error(r, CS_ERR_MISSING_FIELD, "kickoff_ack needs execution_id (of the kickoff)");
    if (!cs_valid_execution_id(x, json_string_length(jx)))
        return reply_error(r, CS_ERR_INVALID_FIELD,
                           "execution_id must be 1-128 characters of [A-Za-z0-9._:-]");
    e = cs_gateway_ack(cs_ingest_gateway(d), p, x, cs_loop_now(d->loop), detail, sizeof(detail));
    if (e != CS_OK)
        return reply_error(r, e, detail);
    reply_json(r, json_pack("{s:b, s:s, s:s}", "ok", 1, "op", "kickoff_ack", "execution_id", x));
    return CS_OK;
}

/* The gateway's push: a kickoff line to a runtime, behind the replies of the lines being handled. */
static int gw_push(void *data, void *conn, const char *line, size_t len)
{
    producer_t *p = conn;
    int rc;
    (void)data;

    if (p->closing || p->push_lost)
        return -EPIPE;
    rc = cs_buf_append(&p->held, line, len);
    if (rc != 0) {
        /* Not closed here, inside the gateway's dispatch: at the turn's end (on_flush_later). */
        p->push_lost = 1;
        producer_flush_later(p);
        return rc;
    }
    producer_check_pause(p);
    producer_flush_later(p);
    return 0;
}

/* A kickoff nobody ran: its execution gets run.failed, so its status is "error" with the reason (on every
 * node, in cluster mode). */
static void gw_record_failure(cs_ingest_t *in, const char *execution_id, const char *crew, const char *why)
{
    cs_daemon_t *d = in->d;
    char detail[256];
    cs_publish_t pub;
    json_t *ev = json_pack("{s:s, s:s, s:s, s:s}", "execution_id", execution_id, "type", "run.failed",
                           "error", why, "crew", crew);
    cs_err_t e = ev != NULL ? cs_store_publish(d->store, ev, cs_unix_ms(), &pub, detail, sizeof(detail))
                            : CS_ERR_INTERNAL;

    json_decref(ev);
    if (e != CS_OK) {
        d->counters.gateway_failed_records++;
        cs_log_error("gateway: kickoff %s of crew %s failed (%s), and its run.failed could not be stored: %s",
                     execution_id, crew, why, ev != NULL ? detail : "out of memory");
        return;
    }
    cs_log_warn("gateway: kickoff %s of crew %s failed: %s", execution_id, crew, why);
}

/* The gateway's queue timeout (a kickoff queued here, whose crew nobody here served since). */
static void gw_failed(void *data, const char *execution_id, const char *crew, const char *why)
{
    cs_ingest_t *in = data;
    char text[600];

    if (in->d->cluster != NULL) {
        snprintf(text, sizeof(text), "%s (queued on node %s, whose runtimes of the crew had left)", why,
                 cs_cluster_node(in->d->cluster));
        why = text;
    }
    gw_record_failure(in, execution_id, crew, why);
}

/* ---- cluster mode: kickoffs handed from node to node (docs/cluster.md "Gateway and webhooks") ----
 *
 * A kickoff of a crew no runtime of the node that took it serves is handed to the cluster as an event of its
 * execution, kickoff.requested {crew, inputs, node}, which every node receives. Each node whose runtimes
 * serve the crew claims it in Redis (cs_cluster_claim "k", first come first served); the winner queues it in
 * its own gateway, which dispatches it as any kickoff. The node that took it claims it too once
 * gateway.queue_timeout_s has passed with no event of the execution: winning that claim means nobody took
 * it, and it fails (run.failed); losing it means a node did. */

#define GW_CLAIM_RETRY_MS 1000

static unsigned gw_claim_ttl(const cs_daemon_t *d)
{
    return d->cfg->retain_s > 86400 ? d->cfg->retain_s : 86400;
}

static void rk_free(cs_ingest_t *in, gw_rk_t *rk)
{
    cs_cluster_claim_cancel(rk->req);
    HASH_DEL(in->rks, rk);
    in->n_rks--;
    free(rk);
}

static void rk_arm(cs_ingest_t *in)
{
    gw_rk_t *rk, *tmp;
    int64_t best = -1, now = cs_loop_now(in->d->loop);

    HASH_ITER(hh, in->rks, rk, tmp)
    {
        if (rk->req == NULL && (best < 0 || rk->deadline < best))
            best = rk->deadline;
    }
    if (best < 0)
        cs_timer_stop(&in->rk_timer);
    else
        cs_timer_start(&in->rk_timer, best > now ? best - now : 0);
}

static void on_rk_claim(void *data, int outcome, const char *holder, size_t holder_len)
{
    gw_rk_t *rk = data;
    cs_ingest_t *in = rk->in;
    cs_daemon_t *d = in->d;
    char why[400];

    rk->req = NULL;
    if (outcome < 0) {
        rk->deadline = cs_loop_now(d->loop) + GW_CLAIM_RETRY_MS;
        cs_log_warn("gateway: Redis did not answer whether a node took kickoff %s: asked again in 1 s",
                    rk->id);
        rk_arm(in);
        return;
    }
    if (outcome > 0) {
        snprintf(
            why, sizeof(why),
            "no node of the cluster took the kickoff within gateway.queue_timeout_s (%u s): no runtime of "
            "crew %s was connected to a node when it was taken (on node %s)",
            d->cfg->queue_timeout_s, rk->crew, cs_cluster_node(d->cluster));
        gw_record_failure(in, rk->id, rk->crew, why);
    } else {
        cs_log_debug("gateway: kickoff %s was taken by node %.*s", rk->id, (int)holder_len, holder);
    }
    rk_free(in, rk);
    rk_arm(in);
}

static void on_rk_timer(cs_timer_t *t)
{
    cs_ingest_t *in = t->data;
    int64_t now = cs_loop_update_now(in->d->loop);
    gw_rk_t *rk, *tmp;

    HASH_ITER(hh, in->rks, rk, tmp)
    {
        if (rk->req != NULL || rk->deadline > now)
            continue;
        rk->req = cs_cluster_claim(in->d->cluster, rk->id, strlen(rk->id), "k", gw_claim_ttl(in->d),
                                   on_rk_claim, rk);
        if (rk->req == NULL)
            rk->deadline = now + GW_CLAIM_RETRY_MS; /* Redis not connected: again in a second */
    }
    rk_arm(in);
}

/* The gateway's ops->remote: the kickoff goes to the cluster as kickoff.requested. */
static int gw_remote(void *data, const char *id, const char *crew, const json_t *inputs, char *detail,
                     size_t detail_len)
{
    cs_ingest_t *in = data;
    cs_daemon_t *d = in->d;
    char why[256];
    cs_publish_t pub;
    gw_rk_t *rk;

    if (in->gw_claiming || d->cluster == NULL)
        return 0;
    if (in->n_rks >= d->cfg->gateway_queue) {
        snprintf(detail, detail_len,
                 "%zu kickoffs wait for a node of the cluster to take them (gateway.queue): try again later",
                 in->n_rks);
        return -1;
    }
    if (strlen(id) > 36 || strlen(crew) > CS_GATEWAY_CREW_MAX || (rk = calloc(1, sizeof(*rk))) == NULL) {
        snprintf(detail, detail_len, "out of memory: nothing was started");
        return -1;
    }
    json_t *ev = json_pack("{s:s, s:s, s:s, s:O, s:s}", "execution_id", id, "type", "kickoff.requested",
                           "crew", crew, "inputs", (json_t *)inputs, "node", cs_cluster_node(d->cluster));
    cs_err_t e =
        ev != NULL ? cs_store_publish(d->store, ev, cs_unix_ms(), &pub, why, sizeof(why)) : CS_ERR_INTERNAL;
    json_decref(ev);
    if (e != CS_OK) {
        free(rk);
        snprintf(detail, detail_len,
                 "no runtime on this node serves crew %.128s, and the kickoff could not be "
                 "handed to the cluster: %s",
                 crew, ev != NULL ? why : "out of memory");
        return -1;
    }
    rk->in = in;
    memcpy(rk->id, id, strlen(id) + 1);
    snprintf(rk->crew, sizeof(rk->crew), "%s", crew);
    rk->deadline = cs_loop_now(d->loop) + (int64_t)d->cfg->queue_timeout_s * 1000;
    HASH_ADD_STR(in->rks, id, rk);
    in->n_rks++;
    rk_arm(in);
    cs_log_debug("gateway: kickoff %s of crew %s handed to the cluster (no runtime here serves it)", id,
                 crew);
    return 1;
}

static void offer_free(cs_ingest_t *in, gw_offer_t *of)
{
    DL_DELETE(in->offers, of);
    cs_cluster_claim_cancel(of->req);
    json_decref(of->inputs);
    free(of);
}

static void on_offer_claim(void *data, int outcome, const char *holder, size_t holder_len)
{
    gw_offer_t *of = data;
    cs_ingest_t *in = of->in;
    cs_daemon_t *d = in->d;
    char detail[300], why[500], id[37];

    of->req = NULL;
    if (outcome > 0) {
        memcpy(id, of->id, sizeof(id));
        in->gw_claiming = 1;
        cs_err_t e = cs_gateway_kickoff(cs_ingest_gateway(d), of->crew, of->inputs, cs_loop_now(d->loop), id,
                                        detail, sizeof(detail));
        in->gw_claiming = 0;
        if (e == CS_OK) {
            cs_log_info("gateway: kickoff %s of crew %s, taken by another node, runs here", id, of->crew);
        } else {
            snprintf(why, sizeof(why), "node %s took the kickoff for crew %s but could not queue it: %s",
                     cs_cluster_node(d->cluster), of->crew, detail);
            gw_record_failure(in, of->id, of->crew, why);
        }
    } else if (outcome < 0) {
        cs_log_warn(
            "gateway: Redis did not answer this node's claim of kickoff %s: the node that took it fails "
            "it after gateway.queue_timeout_s unless another node claims it",
            of->id);
    } else {
        cs_log_debug("gateway: kickoff %s goes to node %.*s", of->id, (int)holder_len, holder);
    }
    offer_free(in, of);
}

/* A kickoff.requested seen on the global stream: claimed when a runtime here serves its crew. */
static void gw_offer_take(cs_ingest_t *in, const cs_frame_t *f)
{
    cs_daemon_t *d = in->d;
    json_t *o = json_loadb(f->json, f->json_len, 0, NULL);
    const char *x = json_string_value(json_object_get(o, "execution_id"));
    const char *crew = json_string_value(json_object_get(o, "crew"));
    json_t *inputs = json_object_get(o, "inputs");
    gw_offer_t *of;

    if (x == NULL || crew == NULL || !json_is_object(inputs) || strlen(x) > 36 ||
        strlen(crew) > CS_GATEWAY_CREW_MAX || d->gateway == NULL || !cs_gateway_serves(d->gateway, crew) ||
        cs_gateway_holds(d->gateway, x, strlen(x)) || (of = calloc(1, sizeof(*of))) == NULL) {
        json_decref(o);
        return;
    }
    of->in = in;
    memcpy(of->id, x, strlen(x) + 1);
    snprintf(of->crew, sizeof(of->crew), "%s", crew);
    of->inputs = json_incref(inputs);
    json_decref(o);
    of->req = cs_cluster_claim(d->cluster, of->id, strlen(of->id), "k", gw_claim_ttl(d), on_offer_claim, of);
    if (of->req == NULL) {
        cs_log_warn("gateway: kickoff %s of crew %s could not be claimed here (Redis not connected)", of->id,
                    of->crew);
        json_decref(of->inputs);
        free(of);
        return;
    }
    DL_APPEND(in->offers, of);
}

static void gw_rearm(void *data)
{
    cs_ingest_t *in = data;
    cs_daemon_t *d = in->d;
    int64_t dl = d->gateway != NULL ? cs_gateway_next_deadline(d->gateway) : -1;

    if (dl < 0) {
        cs_timer_stop(&in->gw_timer);
        return;
    }
    int64_t now = cs_loop_now(d->loop);
    cs_timer_start(&in->gw_timer, dl > now ? dl - now : 0);
}

static void gw_changed(void *data)
{
    cs_ingest_t *in = data;
    cs_defer(in->d->loop, &in->gw_defer, gw_rearm, in);
}

static void on_gw_timer(cs_timer_t *t)
{
    cs_ingest_t *in = t->data;
    cs_daemon_t *d = in->d;
    cs_gateway_stats_t a, b;

    cs_gateway_stats(d->gateway, &a);
    cs_gateway_tick(cs_ingest_gateway(d), cs_loop_update_now(d->loop));
    cs_gateway_stats(d->gateway, &b);
    if (b.redispatched_timeout > a.redispatched_timeout)
        cs_log_warn("gateway: %llu kickoff(s) not acknowledged within gateway.ack_timeout_s (%u s): given to "
                    "another runtime",
                    (unsigned long long)(b.redispatched_timeout - a.redispatched_timeout),
                    d->cfg->ack_timeout_s);
    gw_rearm(in);
}

/* An execution that reached a final status frees the runtime that ran it (a kickoff still waiting for
 * one is dropped). */
static void gw_exec_final(cs_daemon_t *d, cs_exec_t *ex)
{
    size_t n;
    const char *x;

    if (ex == NULL || d->gateway == NULL || !cs_status_is_final(cs_exec_status(ex)))
        return;
    x = cs_exec_id(ex, &n);
    if (cs_gateway_holds(d->gateway, x, n))
        cs_gateway_finished(cs_ingest_gateway(d), x, n, cs_loop_now(d->loop));
}

/* After a stored event (a lone daemon): one that ends its execution frees the runtime that ran it. In
 * cluster mode pub->exec is NULL while Redis has not confirmed the publish, and the final event may be
 * posted on another node: gw_watch sees it there. */
static void gw_note(cs_daemon_t *d, const cs_publish_t *pub)
{
    gw_exec_final(d, pub->exec);
}

static void gw_sweep_one(cs_exec_t *ex, void *data)
{
    gw_exec_final(data, ex);
}

static const char KICKOFF_REQUESTED[] = "kickoff.requested";

/* Cluster mode: every event that enters this node's store passes the global stream, in the order the
 * store took them in, whichever node it was posted on and whenever Redis confirmed it; one that brings
 * its execution to a final status frees the runtime the gateway gave it to. Drained once per loop turn.
 * A frame that left its ring before it was seen (a burst over the global ring within one turn) makes a
 * sweep of every execution instead, so no runtime stays busy for an event it missed. */
static void gw_watch(void *data)
{
    cs_ingest_t *in = data;
    cs_daemon_t *d = in->d;
    cs_item_t it;
    int sweep = 0;

    if (!in->gw_sub_open)
        return;
    while (cs_sub_next(&in->gw_sub, &it)) {
        if (it.gap != NULL || !it.frame->in_exec) {
            sweep = 1;
            continue;
        }
        const cs_frame_t *f = it.frame;
        if (f->type_len == sizeof(KICKOFF_REQUESTED) - 1 &&
            memcmp(f->type, KICKOFF_REQUESTED, f->type_len) == 0) {
            gw_offer_take(in, f);
            continue;
        }
        if (in->n_rks > 0) {
            /* Another event of a kickoff handed over: a node took it. */
            size_t n;
            const char *x = cs_exec_id(f->exec, &n);
            gw_rk_t *rk = NULL;
            HASH_FIND(hh, in->rks, x, n, rk);
            if (rk != NULL) {
                rk_free(in, rk);
                rk_arm(in);
            }
        }
        gw_exec_final(d, f->exec);
    }
    cs_sub_park(&in->gw_sub);
    if (sweep && d->gateway != NULL)
        cs_store_each(d->store, gw_sweep_one, d);
}

static void gw_watch_wake(cs_sub_t *sub)
{
    cs_ingest_t *in = sub->data;
    cs_defer(in->d->loop, &in->gw_watch_d, gw_watch, in);
}

static const cs_sub_ops_t gw_watch_ops = {.wake = gw_watch_wake};

/* ---- the fast path: ordinary events without a jansson parse ---- */

/* Returns nonzero when m is absent or a string without escapes (its text is its value). */
static int plain_or_absent(const cs_jscan_member_t *m)
{
    return m->kind == CS_JSCAN_ABSENT || (m->kind == CS_JSCAN_STRING && !m->escaped);
}

/*
 * When the scanned line is an ordinary event, fills *fl with where its execution_id, type, and
 * event_id and timestamp when present, lie in the line, and returns 1; the store needs nothing
 * else from it (cs_store_publish_fields). An ordinary event has no op and no seq, each of those
 * members once, as a plain string, and a type the daemon does not read (cs_status_reads_type); it
 * is one line without CR or LF, as the store keeps it. Returns 0 for anything else: the whole
 * parse decides then.
 */
static int ordinary_fields(const cs_jscan_t *sc, cs_event_fields_t *fl)
{
    const cs_jscan_member_t *x = &sc->f[CS_JSCAN_EXECUTION_ID], *t = &sc->f[CS_JSCAN_TYPE];
    const cs_jscan_member_t *id = &sc->f[CS_JSCAN_EVENT_ID], *ts = &sc->f[CS_JSCAN_TIMESTAMP];

    if (sc->flags != 0 || sc->f[CS_JSCAN_OP].kind != CS_JSCAN_ABSENT ||
        sc->f[CS_JSCAN_SEQ].kind != CS_JSCAN_ABSENT || x->kind != CS_JSCAN_STRING || x->escaped ||
        t->kind != CS_JSCAN_STRING || t->escaped || !plain_or_absent(id) || !plain_or_absent(ts) ||
        cs_status_reads_type(t->p, t->len))
        return 0;
    /* The scan checked the UTF-8 and that no NUL is inside: the text between the quotes is the value. */
    fl->execution_id = x->p;
    fl->execution_id_len = x->len;
    fl->type = t->p;
    fl->type_len = t->len;
    fl->event_id = id->kind == CS_JSCAN_STRING ? id->p : NULL;
    fl->event_id_len = id->len;
    fl->timestamp = ts->kind == CS_JSCAN_STRING ? ts->p : NULL;
    fl->timestamp_len = ts->len;
    return 1;
}

/* p's acknowledgement of a publish held at position (store.h, holding): its output waits for the store to
 * release it (the journal's write at the turn's end; on_release). */
static void producer_hold(producer_t *p, uint64_t position)
{
    if (position == 0 || p->closing)
        return;
    if (p->hold == 0)
        DL_APPEND2(p->in->holding, p, hprev, hnext);
    if (position > p->hold)
        p->hold = position;
}

static void producer_unhold(producer_t *p)
{
    if (p->hold == 0)
        return;
    if (p->releasing)
        DL_DELETE2(p->in->releasing, p, hprev, hnext);
    else
        DL_DELETE2(p->in->holding, p, hprev, hnext);
    p->hprev = p->hnext = NULL;
    p->hold = 0;
    p->releasing = 0;
}

/* The store released position: the producers held at or before it write their output. Each is taken off
 * the list before it is pumped (which may hold it again, or close another one). */
static void on_release(void *data, uint64_t position)
{
    cs_ingest_t *in = data;
    producer_t *p;

    if (in->releasing != NULL)
        return; /* within a release already: that one goes on */
    in->releasing = in->holding;
    in->holding = NULL;
    for (p = in->releasing; p != NULL; p = p->hnext)
        p->releasing = 1;
    while ((p = in->releasing) != NULL) {
        DL_DELETE2(in->releasing, p, hprev, hnext);
        p->hprev = p->hnext = NULL;
        p->releasing = 0;
        if (p->hold <= position) {
            p->hold = 0;
            producer_pump(p);
        } else {
            DL_APPEND2(in->holding, p, hprev, hnext);
        }
    }
}

/* Validates, authorizes, publishes and acknowledges an ordinary event: what cs_ingest_line does for
 * any event, without a JSON object. */
static cs_err_t publish_ordinary(cs_daemon_t *d, producer_t *conn, const cs_principal_t *publisher,
                                 const cs_event_fields_t *fl, const char *line, size_t len, reply_t *r,
                                 const cs_store_done_t *wait, uint64_t *ticket)
{
    char detail[256];
    cs_publish_t pub;
    cs_err_t e;

    e = cs_event_validate_fields(fl, detail, sizeof(detail));
    if (e != CS_OK)
        return reply_error(r, e, detail);
    if (publisher != NULL) {
        char x[CS_EXECUTION_ID_MAX + 1]; /* validated: at most CS_EXECUTION_ID_MAX bytes */
        memcpy(x, fl->execution_id, fl->execution_id_len);
        x[fl->execution_id_len] = '\0';
        if (cs_auth_authorize(publisher, CS_SCOPE_PUBLISH, x) != CS_AUTH_OK)
            return reply_error(r, CS_ERR_FORBIDDEN, "the token does not grant publish on this execution");
    }
    slot_t *sl = NULL;
    if (conn != NULL && cs_store_may_defer(d->store)) {
        /* The slot a deferred publish's reply would wait in; untouched (kept for the next line) otherwise:
         * under a journal's none and everysec the store holds instead (store.h). */
        if (conn->next_slot == NULL && (conn->next_slot = slot_new(conn)) == NULL)
            return reply_no_memory(r);
        sl = conn->next_slot;
    }
    e = cs_store_submit_fields(d->store, fl, line, len, cs_unix_ms(), sl != NULL ? &sl->done : wait, &pub,
                               detail, sizeof(detail));
    if (e == CS_PENDING && sl == NULL) {
        *ticket = pub.ticket; /* the caller's completion replies */
        return CS_OK;
    }
    if (e == CS_PENDING) {
        conn->next_slot = NULL;
        slot_wait(sl, pub.ticket); /* its reply comes in line order when the store confirms it */
        return CS_OK;
    }
    if (e != CS_OK)
        return reply_error(r, e, detail);
    reply_ack(r, &pub);
    if (pub.hold != 0)
        producer_hold(conn, pub.hold); /* only a slot's completion can hold: conn is set */
    return CS_OK;
}

static cs_err_t ingest_line(cs_daemon_t *d, producer_t *conn, const cs_principal_t *publisher,
                            const char *line, size_t len, reply_t *r, const cs_store_done_t *wait,
                            uint64_t *ticket)
{
    char detail[256];
    json_t *obj = NULL, *op;
    cs_err_t e;
    cs_publish_t pub;
    cs_awaiter_t *aw = NULL;
    slot_t *sl = NULL;
    cs_jscan_t sc;
    cs_event_fields_t fl;

    d->counters.ingest_lines++;
    if (len > 0 && line[len - 1] == '\r')
        len--;
    if (len > d->cfg->max_event_bytes) {
        snprintf(detail, sizeof(detail), "line is longer than limits.max_event_bytes (%zu)",
                 d->cfg->max_event_bytes);
        e = reply_error(r, CS_ERR_TOO_LARGE, detail);
        goto out;
    }
    if (cs_jscan_object(line, len, d->cfg->json_depth, &sc) == 0 && ordinary_fields(&sc, &fl)) {
        e = publish_ordinary(d, conn, publisher, &fl, line, len, r, wait, ticket);
        goto out;
    }
    /* Anything else is parsed whole; a line the scan refuses too: jansson's message is the detail. */
    e = cs_line_parse(line, len, d->cfg->json_depth, &obj, detail, sizeof(detail));
    if (e != CS_OK) {
        reply_error(r, e, detail);
        goto out;
    }
    op = json_object_get(obj, "op");
    if (op != NULL) {
        const char *name = json_string_value(op);
        if (name != NULL && strcmp(name, "ping") == 0) {
            static const char pong[] = "{\"ok\":true,\"op\":\"pong\"}\n";
            reply_add(r, pong, sizeof(pong) - 1);
            e = CS_OK;
        } else if (name != NULL && strcmp(name, "await") == 0) {
            e = op_await(d, conn, obj, r);
        } else if (name != NULL && strcmp(name, "webhooks") == 0) {
            /* A runtime registers the webhook URLs of an execution it starts itself (SPEC §9). */
            json_t *jx = json_object_get(obj, "execution_id");
            if (json_string_value(jx) == NULL ||
                !cs_valid_execution_id(json_string_value(jx), json_string_length(jx)))
                e = reply_error(r, CS_ERR_INVALID_FIELD,
                                "execution_id must be 1-128 characters of [A-Za-z0-9._:-]");
            else if ((e = cs_webhooks_register(d->webhooks, json_string_value(jx), json_string_length(jx),
                                               obj, detail, sizeof(detail))) != CS_OK)
                reply_error(r, e, detail);
            else
                reply_json(r, json_pack("{s:b, s:s, s:O}", "ok", 1, "op", "webhooks", "execution_id", jx));
        } else if (name != NULL && strcmp(name, "serve") == 0) {
            e = op_serve(d, conn, obj, r);
        } else if (name != NULL && strcmp(name, "kickoff_ack") == 0) {
            e = op_kickoff_ack(d, conn, obj, r);
        } else {
            snprintf(detail, sizeof(detail), "unknown op (known: ping, await, webhooks, serve, kickoff_ack)");
            e = reply_error(r, CS_ERR_BAD_OP, detail);
        }
        goto out;
    }
    e = cs_event_validate(obj, detail, sizeof(detail));
    if (e != CS_OK) {
        reply_error(r, e, detail);
        goto out;
    }
    /* The connection that posts a request awaits its answer: what that takes is had before the event
     * is stored, so that a lack of memory refuses the line rather than drop the await unseen. */
    if (conn != NULL &&
        strcmp(json_string_value(json_object_get(obj, "type")), "human_input_required") == 0 &&
        (aw = calloc(1, sizeof(*aw))) == NULL) {
        e = reply_no_memory(r);
        goto out;
    }
    if (publisher != NULL &&
        cs_auth_authorize(publisher, CS_SCOPE_PUBLISH,
                          json_string_value(json_object_get(obj, "execution_id"))) != CS_AUTH_OK) {
        e = reply_error(r, CS_ERR_FORBIDDEN, "the token does not grant publish on this execution");
        goto out;
    }
    if (conn != NULL && cs_store_may_defer(d->store) && (sl = slot_new(conn)) == NULL) {
        e = reply_no_memory(r);
        goto out;
    }
    e = cs_store_submit_raw(d->store, obj, line, len, cs_unix_ms(), sl != NULL ? &sl->done : wait, &pub,
                            detail, sizeof(detail));
    if (e == CS_PENDING && sl == NULL) {
        *ticket = pub.ticket; /* the caller's completion replies */
        e = CS_OK;
    } else if (e == CS_PENDING) {
        if (aw != NULL && pub.exec == NULL) {
            /* Nothing stored here yet (cluster mode): awaited once the store has it (slot_await). */
            const char *x = json_string_value(json_object_get(obj, "execution_id"));
            if ((sl->await_x = strdup(x)) != NULL) {
                sl->aw = aw;
                aw = NULL;
            } else {
                cs_log_warn(
                    "ingest: out of memory: the connection that posted a request of %s does not await "
                    "it (it may send await)",
                    x);
            }
        }
        slot_wait(sl, pub.ticket); /* its reply comes in line order when the store confirms it */
        sl = NULL;
        e = CS_OK;
    } else if (e != CS_OK) {
        reply_error(r, e, detail);
        goto out;
    } else {
        reply_ack(r, &pub);
        if (pub.hold != 0)
            producer_hold(conn, pub.hold); /* only a slot's completion can hold: conn is set */
    }
    gw_note(d, &pub);
    /* The connection that posts a request awaits its answer without asking (a retry too). */
    if (aw != NULL) {
        cs_hitl_req_t *req = pub.exec ? cs_hitl_find(cs_exec_requests(pub.exec), pub.event_id) : NULL;
        if (req != NULL)
            producer_await(conn, req, aw);
        else
            free(aw);
        aw = NULL;
    }
out:
    free(aw);
    if (sl != NULL)
        slot_put(conn, sl);
    if (e != CS_OK)
        d->counters.ingest_errors++;
    json_decref(obj);
    return e;
}

int cs_ingest_line(cs_daemon_t *d, void *conn, const cs_principal_t *publisher, const char *line, size_t len,
                   cs_buf_t *reply, cs_err_t *code)
{
    size_t before = cs_buf_size(reply);
    reply_t r = {reply, 0};
    cs_err_t e = ingest_line(d, conn, publisher, line, len, &r, NULL, NULL);

    if (code != NULL)
        *code = e;
    if (r.rc != 0)
        cs_buf_truncate(reply, before); /* nothing of this line's reply */
    return r.rc;
}

int cs_ingest_line_wait(cs_daemon_t *d, const cs_principal_t *publisher, const char *line, size_t len,
                        const cs_store_done_t *done, uint64_t *ticket, cs_buf_t *reply, cs_err_t *code)
{
    size_t before = cs_buf_size(reply);
    reply_t r = {reply, 0};
    cs_err_t e;

    *ticket = 0;
    e = ingest_line(d, NULL, publisher, line, len, &r, done, ticket);
    if (code != NULL)
        *code = e;
    if (r.rc != 0)
        cs_buf_truncate(reply, before); /* nothing of this line's reply */
    return r.rc;
}

int cs_ingest_reply_outcome(cs_daemon_t *d, cs_buf_t *reply, cs_err_t e, const cs_publish_t *pub,
                            const char *detail)
{
    size_t before = cs_buf_size(reply);
    reply_t r = {reply, 0};

    if (e == CS_OK) {
        reply_ack(&r, pub);
    } else {
        reply_error(&r, e, detail != NULL ? detail : cs_err_detail(e));
        d->counters.ingest_errors++;
    }
    if (r.rc != 0)
        cs_buf_truncate(reply, before);
    return r.rc;
}

/* ---- producers ---- */

static void producer_free(void *data)
{
    producer_t *p = data;
    while (p->awaits != NULL) {
        cs_awaiter_t *aw = p->awaits;
        cs_hitl_unawait(aw);
        DL_DELETE2(p->awaits, aw, oprev, onext);
        free(aw);
    }
    qpush_clear(p);
    slots_free_spare(p);
    cs_lines_free(&p->lines);
    cs_buf_free(&p->out);
    cs_buf_free(&p->held);
    free(p->rbuf);
    free(p);
}

static void producer_close(producer_t *p)
{
    cs_ingest_t *in = p->in;

    if (p->closing)
        return;
    p->closing = 1;
    cs_defer_cancel(in->d->loop, &p->flush_defer);
    /* Its crews are served by others now; its kickoffs not yet acknowledged go to them. */
    if (in->d->gateway != NULL) {
        cs_gateway_stats_t a, b;
        cs_gateway_stats(in->d->gateway, &a);
        cs_gateway_conn_gone(in->d->gateway, p, cs_loop_now(in->d->loop));
        cs_gateway_stats(in->d->gateway, &b);
        if (b.redispatched_lost > a.redispatched_lost || b.lost_after_ack > a.lost_after_ack)
            cs_log_info(
                "gateway: a runtime left: %llu kickoff(s) not acknowledged go to another runtime, %llu "
                "acknowledged stay its own (not run again)",
                (unsigned long long)(b.redispatched_lost - a.redispatched_lost),
                (unsigned long long)(b.lost_after_ack - a.lost_after_ack));
    }
    /* Nobody to push to any more: stop awaiting now, not at the deferred free; nor to reply to. */
    for (cs_awaiter_t *aw = p->awaits; aw != NULL; aw = aw->onext)
        cs_hitl_unawait(aw);
    slots_clear(p);
    late_forget(p);
    producer_unhold(p); /* what it held is not written: nobody to write it to */
    cs_io_stop(&p->io);
    close(p->fd);
    p->fd = -1;
    if (p->paused)
        in->n_paused--;
    in->queued -= p->queued;
    p->queued = 0;
    DL_DELETE(in->list, p);
    in->count--;
    cs_defer(in->d->loop, &p->defer, producer_free, p);
}

/*
 * A reply or an answer that could not be queued to p (out of memory, or past its buffer's maximum):
 * the producer would see its replies out of step with its lines, so it is closed, with one log line and
 * crewstream_ingest_reply_failures_total.
 */
static void producer_lost_reply(producer_t *p, int rc, const char *what)
{
    if (p->closing)
        return;
    p->in->d->counters.ingest_reply_failures++;
    cs_log_error("ingest: %s could not be queued to a producer (%s): closing it, its replies would be out of "
                 "step with its lines",
                 what, rc == -EMSGSIZE ? "past its buffer's maximum" : "out of memory");
    producer_close(p);
}

/* Writes queued replies and pushes; returns 0, or -1 when the producer is gone. */
static int producer_flush(producer_t *p)
{
    /* An acknowledgement in it waits for the journal's write (on_release pumps it then). */
    if (p->hold != 0)
        return 0;
    /* Pushes wait behind the replies held for a pending publish too. */
    if (cs_buf_size(&p->held) > 0 && p->slots == NULL) {
        /* The pushes go behind the replies queued so far; their records learn where they are. */
        uint64_t base = p->written + cs_buf_size(&p->out);
        int rc = cs_buf_append(&p->out, cs_buf_data(&p->held), cs_buf_size(&p->held));
        if (rc != 0) {
            producer_lost_reply(p, rc, "answers (it may await again)");
            return -1;
        }
        for (qpush_t *q = p->qpushes; q != NULL; q = q->next) {
            if (q->in_held) {
                q->end += base;
                q->in_held = 0;
            }
        }
        cs_buf_consume(&p->held, cs_buf_size(&p->held));
    }
    while (cs_buf_size(&p->out) > 0) {
        ssize_t n = send(p->fd, cs_buf_data(&p->out), cs_buf_size(&p->out), MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == EINTR)
                continue;
            producer_close(p);
            return -1;
        }
        /* Positions in the stream stay right when out moves its unread bytes to the front. */
        cs_buf_consume(&p->out, (size_t)n);
        p->written += (size_t)n;
    }
    qpush_written(p);
    /* Do not keep a large buffer for a producer that was behind once (out reuses its front by itself). */
    if (cs_buf_size(&p->out) == 0 && p->out.cap > READ_CHUNK)
        cs_buf_free(&p->out);
    if (cs_buf_size(&p->held) == 0 && p->held.cap > READ_CHUNK)
        cs_buf_free(&p->held);
    producer_account(p);
    return 0;
}

static void producer_update_interest(producer_t *p)
{
    uint32_t ev = 0;

    if (p->closing)
        return;
    if (!p->eof && !p->paused && p->roff == p->rlen)
        ev |= CS_IO_READ;
    if (cs_buf_size(&p->out) > 0 && p->hold == 0)
        ev |= CS_IO_WRITE;
    if (ev == 0 && (p->slots != NULL || p->hold != 0)) {
        /* Read to the end, a publish still pending or held: its completion or release pumps again. */
        cs_io_stop(&p->io);
        return;
    }
    if (ev == 0) {
        /* Read to the end and every reply written: done. */
        producer_close(p);
        return;
    }
    cs_io_start(&p->io, ev);
}

/* One line, or a too-large one (line NULL): its reply, then whether to stop for the queued output. */
static int producer_line(void *arg, const char *line, size_t len)
{
    producer_t *p = arg;
    cs_daemon_t *d = p->in->d;

    /* Behind a pending publish, the reply waits in a slot of its own. */
    int held = p->slots != NULL, rc;
    cs_buf_t t;

    cs_buf_init(&t, 0); /* one reply line */
    if (line != NULL) {
        rc = cs_ingest_line(d, p, NULL, line, len, held ? &t : &p->out, NULL);
    } else {
        char detail[128];
        reply_t r = {held ? &t : &p->out, 0};
        snprintf(detail, sizeof(detail), "line is longer than limits.max_event_bytes (%zu)",
                 d->cfg->max_event_bytes);
        d->counters.ingest_lines++;
        d->counters.ingest_errors++;
        reply_error(&r, CS_ERR_TOO_LARGE, detail);
        rc = r.rc;
    }
    if (rc != 0) {
        cs_buf_free(&t);
        producer_lost_reply(p, rc, "a reply");
        return -1;
    }
    if (held && cs_buf_size(&t) > 0 && !p->closing) {
        slot_t *sl = slot_new(p);
        if (sl == NULL) {
            cs_buf_free(&t);
            producer_lost_reply(p, -ENOMEM, "a reply behind a pending one");
            return -1;
        }
        cs_buf_free(&sl->text); /* a spare's room: t takes its place */
        sl->text = t;
        sl->ready = 1;
        slot_append(p, sl);
        cs_buf_init(&t, 0);
    }
    cs_buf_free(&t);
    if (p->closing)
        return -1;
    producer_check_pause(p);
    return p->paused ? 1 : 0;
}

/*
 * Splits bytes read into lines and handles them, until p's queued output reaches the high mark (it is
 * then paused after the line that reached it). Returns how many bytes were used: all of them unless
 * it paused (or closed).
 */
static size_t producer_feed(producer_t *p, const char *data, size_t n)
{
    int err;

    if (p->paused)
        return 0;
    p->lines.max = p->in->d->cfg->max_event_bytes; /* a reload may have changed it */
    size_t used = cs_lines_feed(&p->lines, data, n, producer_line, p, &err);
    if (err != 0 && !p->closing) {
        cs_log_error("ingest: out of memory for a line of more than %zu bytes: closing the producer",
                     cs_buf_size(&p->lines.part));
        producer_close(p);
    }
    return used;
}

/*
 * Resumes a paused producer whose queued output fell to the low mark: handles the rest of its last read
 * (which may pause it again). Returns 0, or -1 when it closed.
 */
static int producer_resume(producer_t *p)
{
    producer_account(p);
    if (p->paused && p->queued <= OUT_LOW_MARK) {
        p->paused = 0;
        p->in->n_paused--;
    }
    if (!p->paused && p->roff < p->rlen) {
        p->roff += producer_feed(p, p->rbuf + p->roff, p->rlen - p->roff);
        if (p->closing)
            return -1;
        if (p->roff == p->rlen) {
            free(p->rbuf);
            p->rbuf = NULL;
            p->rlen = p->roff = 0;
        }
    }
    return 0;
}

/* Writes what is queued, takes up a paused producer's input as it drains, and sets the interest. */
static void producer_pump(producer_t *p)
{
    /* Ends: each round handles some of the rest of the last read, or resumes, or nothing changes. */
    for (;;) {
        if (producer_flush(p) != 0)
            return;
        size_t roff = p->roff;
        int paused = p->paused;
        if (producer_resume(p) != 0)
            return;
        if (p->roff == roff && p->paused == paused)
            break;
    }
    producer_update_interest(p);
}

static void on_flush_later(void *data)
{
    producer_t *p = data;
    if (p->push_lost) {
        producer_lost_reply(p, -ENOMEM, "a kickoff (it goes to another runtime)");
        return;
    }
    if (!p->closing)
        producer_pump(p);
}

/* A push arrived from elsewhere (another producer's line, an HTTP answer): write it at turn's end. */
static void producer_flush_later(producer_t *p)
{
    if (!p->closing)
        cs_defer(p->in->d->loop, &p->flush_defer, on_flush_later, p);
}

static void on_producer_io(cs_io_t *io, uint32_t events)
{
    producer_t *p = io->data;
    static char chunk[READ_CHUNK];

    if ((events & CS_IO_READ) && !p->paused && p->roff == p->rlen) {
        /* Read while the replies can be queued; a producer that does not read them is paused. */
        for (int rounds = 0; rounds < 16 && !p->paused; rounds++) {
            ssize_t n = recv(p->fd, chunk, sizeof(chunk), 0);
            if (n > 0) {
                size_t used = producer_feed(p, chunk, (size_t)n);
                if (p->closing)
                    return;
                if (used < (size_t)n) {
                    /* Paused in the middle of this read: keep the rest for when it drains. */
                    p->rbuf = malloc((size_t)n - used);
                    if (p->rbuf == NULL) {
                        cs_log_error("ingest: out of memory keeping %zu bytes read: closing the producer",
                                     (size_t)n - used);
                        producer_close(p);
                        return;
                    }
                    memcpy(p->rbuf, chunk + used, (size_t)n - used);
                    p->rlen = (size_t)n - used;
                    p->roff = 0;
                    break;
                }
                continue;
            }
            if (n == 0) {
                /* End of input: a last line without its newline is still a line (printf | nc -U). */
                cs_lines_end(&p->lines, producer_line, p);
                p->eof = 1;
            } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                producer_close(p); /* reset mid-line: nothing to answer to */
                return;
            }
            break;
        }
    } else if (events & (CS_IO_HUP | CS_IO_ERR)) {
        p->eof = 1;
    }
    producer_pump(p);
}

static int uid_allowed(const cs_config_t *cfg, uid_t uid)
{
    if (cfg->n_allow_uids == 0)
        return 1;
    for (size_t i = 0; i < cfg->n_allow_uids; i++)
        if (cfg->allow_uids[i] == uid)
            return 1;
    return 0;
}

static void on_accept(cs_io_t *io, uint32_t events)
{
    cs_ingest_t *in = io->data;
    cs_daemon_t *d = in->d;
    (void)events;

    for (int i = 0; i < 64; i++) {
        int fd = accept4(in->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        struct ucred cred;
        socklen_t cl = sizeof(cred);
        char msg[256];
        int ml;

        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            cs_accept_backoff_failed(&in->backoff, errno);
            return;
        }
        cs_accept_backoff_ok(&in->backoff);
        memset(&cred, 0, sizeof(cred));
        getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl);
        if (!uid_allowed(d->cfg, cred.uid)) {
            ml = snprintf(
                msg, sizeof(msg),
                "{\"ok\":false,\"error\":\"forbidden\",\"detail\":\"uid %u is not in ingest.allow_uids\"}\n",
                (unsigned)cred.uid);
            (void)!send(fd, msg, (size_t)ml, MSG_NOSIGNAL);
            cs_log_warn("ingest: refused a producer with uid %u (not in ingest.allow_uids)",
                        (unsigned)cred.uid);
            close(fd);
            continue;
        }
        if (in->count >= d->cfg->max_producers || d->stopping) {
            ml = snprintf(msg, sizeof(msg), "{\"ok\":false,\"error\":\"forbidden\",\"detail\":\"%s\"}\n",
                          d->stopping ? "the server is shutting down"
                                      : "too many producer connections (limits.max_producers)");
            (void)!send(fd, msg, (size_t)ml, MSG_NOSIGNAL);
            close(fd);
            continue;
        }
        producer_t *p = calloc(1, sizeof(*p));
        if (p == NULL) {
            close(fd);
            continue;
        }
        p->in = in;
        cs_lines_init(&p->lines, d->cfg->max_event_bytes, READ_CHUNK);
        cs_buf_init(&p->out, 0);  /* no maximum: see producer_t */
        cs_buf_init(&p->held, 0); /* likewise */
        p->fd = fd;
        p->uid = cred.uid;
        DL_APPEND(in->list, p);
        in->count++;
        cs_io_init(&p->io, d->loop, fd, on_producer_io, p);
        if (cs_io_start(&p->io, CS_IO_READ) != 0)
            producer_close(p);
    }
}

int cs_ingest_new(cs_ingest_t **out, cs_daemon_t *d, char *err, size_t errlen)
{
    struct sockaddr_un sa;
    const char *path = d->cfg->ingest_socket;
    cs_ingest_t *in;
    int fd = -1, rc;
    struct stat st;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        snprintf(err, errlen, "ingest.socket: path longer than %zu bytes", sizeof(sa.sun_path) - 1);
        return -ENAMETOOLONG;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    strcpy(sa.sun_path, path);

    /* A socket file left by a daemon that died is removed; one a live daemon answers on is not. */
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            snprintf(err, errlen, "ingest.socket: %s exists and is not a socket", path);
            return -EEXIST;
        }
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
            close(fd);
            snprintf(err, errlen, "ingest.socket: %s is in use by another process", path);
            return -EADDRINUSE;
        }
        if (fd >= 0)
            close(fd);
        unlink(path);
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rc = -errno;
        snprintf(err, errlen, "ingest.socket: socket: %s", strerror(errno));
        return rc;
    }
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || chmod(path, d->cfg->ingest_mode) != 0 ||
        listen(fd, 1024) != 0) {
        rc = -errno;
        snprintf(err, errlen, "ingest.socket: %s: %s", path, strerror(errno));
        close(fd);
        unlink(path);
        return rc;
    }
    in = calloc(1, sizeof(*in));
    if (in == NULL || (in->path = strdup(path)) == NULL) {
        free(in);
        close(fd);
        unlink(path);
        return -ENOMEM;
    }
    in->d = d;
    in->fd = fd;
    cs_timer_init(&in->gw_timer, d->loop, on_gw_timer, in);
    cs_timer_init(&in->late_timer, d->loop, late_tick, in);
    cs_timer_init(&in->rk_timer, d->loop, on_rk_timer, in);
    cs_gateway_ops_t gops = {gw_push, gw_failed, gw_changed, in, d->cluster != NULL ? gw_remote : NULL};
    cs_gateway_limits_t glim = {d->cfg->gateway_queue, (int64_t)d->cfg->ack_timeout_s * 1000,
                                (int64_t)d->cfg->queue_timeout_s * 1000};
    if ((rc = cs_gateway_new(&d->gateway, &gops, &glim)) != 0) {
        snprintf(err, errlen, "gateway: out of memory");
        free(in->path);
        free(in);
        close(fd);
        unlink(path);
        return rc;
    }
    if (d->cluster != NULL) {
        cs_start_t now = {.kind = CS_START_NOW};
        cs_filter_t all = {0};
        if ((rc = cs_sub_open(d->store, &in->gw_sub, NULL, 0, &now, &all, &gw_watch_ops, in)) != 0) {
            snprintf(err, errlen, "gateway: out of memory");
            cs_gateway_free(d->gateway);
            d->gateway = NULL;
            free(in->path);
            free(in);
            close(fd);
            unlink(path);
            return rc;
        }
        in->gw_sub_open = 1;
        cs_sub_park(&in->gw_sub);
    }
    cs_io_init(&in->io, d->loop, fd, on_accept, in);
    cs_accept_backoff_init(&in->backoff, &in->io, "ingest", &d->counters.accept_backoffs);
    if ((rc = cs_io_start(&in->io, CS_IO_READ)) != 0) {
        snprintf(err, errlen, "ingest.socket: %s", strerror(-rc));
        cs_ingest_free(in);
        return rc;
    }
    cs_store_on_release(d->store, on_release, in);
    *out = in;
    return 0;
}

void cs_ingest_close_listener(cs_ingest_t *in)
{
    if (in->fd < 0)
        return;
    cs_accept_backoff_stop(&in->backoff);
    cs_io_stop(&in->io);
    close(in->fd);
    in->fd = -1;
    unlink(in->path);
}

size_t cs_ingest_count(const cs_ingest_t *in)
{
    return in->count;
}

void cs_ingest_stats(const cs_ingest_t *in, cs_ingest_stats_t *st)
{
    st->queued_bytes = in->queued;
    st->paused = in->n_paused;
    st->pauses = in->pauses;
    st->pushes_same = in->pushes_same;
    st->awaits_missed = in->awaits_missed;
}

void cs_ingest_free(cs_ingest_t *in)
{
    if (in == NULL)
        return;
    cs_ingest_close_listener(in);
    cs_store_on_release(in->d->store, NULL, NULL);
    while (in->list != NULL)
        producer_close(in->list);
    cs_timer_stop(&in->gw_timer);
    cs_timer_stop(&in->late_timer);
    cs_defer_cancel(in->d->loop, &in->gw_defer);
    cs_defer_cancel(in->d->loop, &in->gw_watch_d);
    cs_timer_stop(&in->rk_timer);
    if (in->n_rks > 0)
        cs_log_warn(
            "gateway: %zu kickoff(s) handed to the cluster and not known to be taken were forgotten at "
            "shutdown (if no node took them, they stay pending)",
            in->n_rks);
    while (in->rks != NULL)
        rk_free(in, in->rks);
    while (in->offers != NULL)
        offer_free(in, in->offers);
    if (in->gw_sub_open) {
        cs_sub_close(&in->gw_sub);
        in->gw_sub_open = 0;
    }
    if (in->d->gateway != NULL) {
        cs_gateway_stats_t st;
        cs_gateway_stats(in->d->gateway, &st);
        if (st.queued > 0)
            cs_log_warn(
                "gateway: %zu kickoff(s) still waiting for a runtime were dropped at shutdown (never run)",
                st.queued);
    }
    cs_gateway_free(in->d->gateway);
    in->d->gateway = NULL;
    free(in->path);
    free(in);
}
