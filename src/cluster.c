/*
 * cluster.c - cluster mode: the store as a cache of Redis (see cluster.h, docs/cluster.md).
 */
#include "cluster.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <uthash.h>
#include <utlist.h>

#include "cmsg.h"
#include "cursor.h"
#include "event.h"
#include "jscan.h"
#include "log.h"
#include "redis.h"
#include "status.h"

/* Events per script call: a batch larger than this goes out as several calls in the same turn. */
#define BATCH_MAX 512
/* How long an execution that is not finished stays in Redis after its last event, at least. */
#define ACTIVE_TTL_S 86400u

/*
 * ARGV: prefix, maxlen, channel, then per event: execution id, type, event_id, epoch candidate, ttl, JSON.
 * Returns per event: seq, epoch (a string), duplicate (0/1). An execution's meta hash is read once per call
 * and its seq written back once, its keys' EXPIRE set once (the last event's TTL), so an event costs an
 * index lookup, XADD, the index entry and PUBLISH. A meta hash that is new gets the candidate
 * as its epoch; what is left of an older history under the same keys (a stream or index that outlived
 * its meta hash) goes with it, so XADD never meets an id ahead of the new seqs.
 */
const char cs_cluster_script[] =
    "local p, maxlen, chan = ARGV[1], ARGV[2], ARGV[3]\n"
    "local out, ex = {}, {}\n"
    "for i = 4, #ARGV, 6 do\n"
    "  local x, t, id, cand, ttl, j = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4], ARGV[i+5]\n"
    "  local e = ex[x]\n"
    "  if not e then\n"
    "    local b = p .. '{x:' .. x .. '}:'\n"
    "    e = {m = b .. 'm', s = b .. 's', ix = b .. 'i'}\n"
    "    local h = redis.call('HMGET', e.m, 'epoch', 'seq')\n"
    "    if not h[1] then\n"
    "      redis.call('DEL', e.s, e.ix)\n"
    "      e.ep, e.seq = cand, 0\n"
    "      redis.call('HSET', e.m, 'epoch', cand)\n"
    "    else\n"
    "      e.ep, e.seq = h[1], tonumber(h[2] or 0)\n"
    "    end\n"
    "    e.seq0 = e.seq\n"
    "    ex[x] = e\n"
    "  end\n"
    "  e.ttl = ttl\n"
    "  local f = t .. ' ' .. id\n"
    "  local old = redis.call('HGET', e.ix, f)\n"
    "  if old then\n"
    "    out[#out+1] = tonumber(old); out[#out+1] = e.ep; out[#out+1] = 1\n"
    "  else\n"
    "    e.seq = e.seq + 1\n"
    "    redis.call('XADD', e.s, 'MAXLEN', '~', maxlen, e.seq .. '-0', 'j', j)\n"
    "    redis.call('HSET', e.ix, f, e.seq)\n"
    "    redis.call('PUBLISH', chan, e.ep .. ' ' .. e.seq .. ' ' .. x .. '\\n' .. j)\n"
    "    out[#out+1] = e.seq; out[#out+1] = e.ep; out[#out+1] = 0\n"
    "  end\n"
    "end\n"
    "for x, e in pairs(ex) do\n"
    "  if e.seq ~= e.seq0 then redis.call('HSET', e.m, 'seq', e.seq) end\n"
    "  redis.call('EXPIRE', e.m, e.ttl); redis.call('EXPIRE', e.s, e.ttl); redis.call('EXPIRE', e.ix, "
    "e.ttl)\n"
    "end\n"
    "return out\n";

/* One publish waiting for Redis: its completion and the script's six arguments (in one allocation). */
typedef struct qent {
    uint64_t ticket;
    cs_store_done_t done;
    const char *exec, *type, *eid, *json;
    size_t exec_len, type_len, eid_len, json_len;
    unsigned ttl;
    char epoch[24], ttl_s[16];
    size_t epoch_len, ttl_len;
    char mem[]; /* exec, type, eid, json, each NUL-terminated */
} qent_t;

/* A script call in flight. */
typedef struct batch {
    cs_cluster_t *c;
    size_t n;
    qent_t **e;
    struct batch *prev, *next;
} batch_t;

/* A message held while a hole before it is being filled. */
typedef struct held {
    uint64_t epoch, seq;
    size_t json_len;
    struct held *next;
    char json[];
} held_t;

/* An execution whose hole is being filled (XRANGE in flight). */
typedef struct fill {
    UT_hash_handle hh;
    cs_cluster_t *c;
    char *id;
    size_t id_len;
    uint64_t epoch;
    int active;
    held_t *held;
} fill_t;

struct cs_cluster {
    cs_loop_t *loop;
    cs_store_t *store;
    cs_redis_t *cmd, *sub;
    char *prefix, *node, *chan, *addr;
    size_t ring_events;
    unsigned retain_s;
    qent_t **q;
    size_t nq, capq;
    batch_t *batches;
    fill_t *fills;
    cs_defer_t flush; /* what the turn queued goes out at its end: one script call */
    int subscribed;
    int ready;
    char why[256];
    cs_cluster_stats_t st;
};

static void update_gate(cs_cluster_t *c);
static void offer(cs_cluster_t *c, uint64_t epoch, uint64_t seq, const char *exec, size_t exec_len,
                  const char *json, size_t json_len);
static void history_opened(void *data, cs_sub_t *sub, const cs_start_t *start);

/* ---- into the ring ---- */

/* Fills *fl when json is an ordinary event (the store's fast path: cs_store_insert with fields). */
static int ordinary_fields(const char *json, size_t len, cs_event_fields_t *fl)
{
    cs_jscan_t sc;
    const cs_jscan_member_t *x, *t, *id, *ts;

    if (cs_jscan_object(json, len, 64, &sc) != 0)
        return 0;
    x = &sc.f[CS_JSCAN_EXECUTION_ID], t = &sc.f[CS_JSCAN_TYPE];
    id = &sc.f[CS_JSCAN_EVENT_ID], ts = &sc.f[CS_JSCAN_TIMESTAMP];
    if (sc.flags != 0 || sc.f[CS_JSCAN_OP].kind != CS_JSCAN_ABSENT ||
        sc.f[CS_JSCAN_SEQ].kind != CS_JSCAN_ABSENT || x->kind != CS_JSCAN_STRING || x->escaped ||
        t->kind != CS_JSCAN_STRING || t->escaped || id->kind != CS_JSCAN_STRING || id->escaped ||
        ts->kind != CS_JSCAN_STRING || ts->escaped || cs_status_reads_type(t->p, t->len))
        return 0;
    fl->execution_id = x->p;
    fl->execution_id_len = x->len;
    fl->type = t->p;
    fl->type_len = t->len;
    fl->event_id = id->p;
    fl->event_id_len = id->len;
    fl->timestamp = ts->p;
    fl->timestamp_len = ts->len;
    return cs_event_validate_fields(fl, NULL, 0) == CS_OK;
}

/* The time an event counts as stored at on every node (last_event_at, retention): the timestamp its
 * first node gave it, when it is in the daemon's own form and within a minute of this node's clock, so
 * that the nodes' statuses agree; else the time it arrives here (a producer's own timestamp may be any
 * string, or a clock far off). */
static int64_t event_time(const char *ts, size_t ts_len)
{
    int64_t now = cs_unix_ms(), t;

    if (ts == NULL || cs_parse_timestamp(ts, ts_len, &t) != 0 || t > now + 60000 || t < now - 60000)
        return now;
    return t;
}

/* Stores one event Redis holds in this node's ring (cs_store_insert); *req (when not NULL) gets the
 * human-input request an answer closed. */
static void insert_ex(cs_cluster_t *c, uint64_t epoch, uint64_t seq, const char *exec, size_t exec_len,
                      const char *json, size_t json_len, char *req)
{
    cs_event_fields_t fl;
    cs_publish_t pub;
    char detail[256];
    json_t *ev = NULL;
    cs_err_t e;

    if (ordinary_fields(json, json_len, &fl)) {
        e = cs_store_insert(c->store, epoch, seq, &fl, NULL, json, json_len,
                            event_time(fl.timestamp, fl.timestamp_len), &pub, detail, sizeof(detail));
    } else {
        json_error_t jerr;
        const char *x;
        ev = json_loadb(json, json_len, JSON_REJECT_DUPLICATES, &jerr);
        x = json_string_value(json_object_get(ev, "execution_id"));
        if (ev == NULL || cs_event_validate(ev, detail, sizeof(detail)) != CS_OK || x == NULL ||
            strlen(x) != exec_len || memcmp(x, exec, exec_len) != 0) {
            c->st.bad_messages++;
            cs_log_error("cluster: event %llu of %.*s from Redis is not a valid event: not stored",
                         (unsigned long long)seq, (int)exec_len, exec);
            json_decref(ev);
            return;
        }
        json_t *ts = json_object_get(ev, "timestamp");
        e = cs_store_insert(c->store, epoch, seq, NULL, ev, json, json_len,
                            event_time(json_string_value(ts), json_string_length(ts)), &pub, detail,
                            sizeof(detail));
    }
    json_decref(ev);
    if (e != CS_OK) {
        c->st.bad_messages++;
        cs_log_error("cluster: event %llu of %.*s could not be stored here: %s", (unsigned long long)seq,
                     (int)exec_len, exec, detail);
        return;
    }
    if (!pub.duplicate)
        c->st.inserted++;
    if (req != NULL)
        memcpy(req, pub.request_event_id, sizeof(pub.request_event_id));
}

static void insert(cs_cluster_t *c, uint64_t epoch, uint64_t seq, const char *exec, size_t exec_len,
                   const char *json, size_t json_len)
{
    insert_ex(c, epoch, seq, exec, exec_len, json, json_len, NULL);
}

/* ---- holes: XRANGE ---- */

static fill_t *fill_get(cs_cluster_t *c, const char *exec, size_t exec_len, int create)
{
    fill_t *f;

    HASH_FIND(hh, c->fills, exec, exec_len, f);
    if (f != NULL || !create)
        return f;
    if ((f = calloc(1, sizeof(*f))) == NULL || (f->id = malloc(exec_len + 1)) == NULL) {
        free(f);
        return NULL;
    }
    memcpy(f->id, exec, exec_len);
    f->id[exec_len] = '\0';
    f->id_len = exec_len;
    f->c = c;
    HASH_ADD_KEYPTR(hh, c->fills, f->id, f->id_len, f);
    return f;
}

static void fill_free(cs_cluster_t *c, fill_t *f)
{
    held_t *h, *t;
    HASH_DELETE(hh, c->fills, f);
    LL_FOREACH_SAFE(f->held, h, t)
    {
        free(h);
    }
    free(f->id);
    free(f);
}

static int hold(fill_t *f, uint64_t epoch, uint64_t seq, const char *json, size_t len)
{
    held_t *h = malloc(sizeof(*h) + len + 1);
    if (h == NULL)
        return -ENOMEM;
    h->epoch = epoch;
    h->seq = seq;
    h->json_len = len;
    memcpy(h->json, json, len);
    h->json[len] = '\0';
    LL_PREPEND(f->held, h);
    return 0;
}

static int held_cmp(held_t *a, held_t *b)
{
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

static void on_fill(cs_redis_t *r, const redisReply *reply, void *data)
{
    fill_t *f = data;
    cs_cluster_t *c = f->c;
    held_t *held, *h, *t;
    cs_exec_t *ex;
    uint64_t first, next;

    (void)r;
    if (reply != NULL && reply->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < reply->elements; i++) {
            cs_cmsg_entry_t e;
            if (cs_cmsg_xrange_entry(reply, i, &e) != 0) {
                c->st.bad_messages++;
                continue;
            }
            insert(c, f->epoch, e.seq, f->id, f->id_len, e.json, e.json_len);
        }
        c->st.fills++;
    } else {
        cs_log_warn("cluster: reading the history of %s from Redis failed (%s): the subscribers behind get "
                    "stream.gap",
                    f->id, reply == NULL ? cs_redis_error(c->cmd) : reply->str);
    }
    /* The held ones, in seq order; one past a hole the read could not fill is stored all the same (the
     * store tells the subscribers behind: stream.gap). */
    held = f->held;
    f->held = NULL;
    f->active = 0;
    LL_SORT(held, held_cmp);
    ex = cs_store_find(c->store, f->id, f->id_len);
    if (ex != NULL && held != NULL) {
        cs_exec_seqs(ex, &first, &next);
        if (held->seq > next && cs_exec_epoch(ex) == held->epoch) {
            c->st.lost += held->seq - next;
            cs_log_warn("cluster: events %llu-%llu of %s are no longer in Redis: subscribers behind them get "
                        "stream.gap",
                        (unsigned long long)next, (unsigned long long)(held->seq - 1), f->id);
            insert(c, held->epoch, held->seq, f->id, f->id_len, held->json, held->json_len);
        }
    }
    LL_FOREACH_SAFE(held, h, t)
    {
        offer(c, h->epoch, h->seq, f->id, f->id_len, h->json, h->json_len);
        free(h);
    }
    if (!f->active && f->held == NULL)
        fill_free(c, f);
}

/* Reads seqs [from, to] of exec from its stream; the message that showed the hole is held meanwhile. */
static int fill_start(cs_cluster_t *c, fill_t *f, uint64_t epoch, uint64_t from, uint64_t to)
{
    char key[256], a[32], b[32];
    const char *argv[4];
    size_t lens[4];

    snprintf(key, sizeof(key), "%s{x:%s}:s", c->prefix, f->id);
    snprintf(a, sizeof(a), "%llu-0", (unsigned long long)from);
    snprintf(b, sizeof(b), "%llu-0", (unsigned long long)to);
    argv[0] = "XRANGE", argv[1] = key, argv[2] = a, argv[3] = b;
    for (int i = 0; i < 4; i++)
        lens[i] = strlen(argv[i]);
    if (cs_redis_command(c->cmd, on_fill, f, 4, argv, lens) != 0)
        return -ENOTCONN;
    f->epoch = epoch;
    f->active = 1;
    return 0;
}

/*
 * An event Redis holds, offered to this node's ring: stored when it is the ring's next (or the first the
 * node sees of its execution, or of a new epoch), dropped when the ring has it, held behind a hole that
 * XRANGE fills first.
 */
static void offer(cs_cluster_t *c, uint64_t epoch, uint64_t seq, const char *exec, size_t exec_len,
                  const char *json, size_t json_len)
{
    fill_t *f = fill_get(c, exec, exec_len, 0);
    cs_exec_t *ex;
    uint64_t first, next;

    if (f != NULL && f->active) {
        if (hold(f, epoch, seq, json, json_len) != 0)
            cs_log_error("cluster: out of memory holding event %llu of %.*s", (unsigned long long)seq,
                         (int)exec_len, exec);
        return;
    }
    ex = cs_store_find(c->store, exec, exec_len);
    if (ex != NULL && cs_exec_epoch(ex) == epoch) {
        cs_exec_seqs(ex, &first, &next);
        if (seq < next)
            return; /* here already */
        if (seq > next && next > 1) {
            if ((f = fill_get(c, exec, exec_len, 1)) != NULL && fill_start(c, f, epoch, next, seq - 1) == 0 &&
                hold(f, epoch, seq, json, json_len) == 0)
                return;
            /* No read possible now: stored past the hole (stream.gap for those behind). */
            c->st.lost += seq - next;
            cs_log_warn("cluster: events %llu-%llu of %.*s could not be read from Redis: subscribers behind "
                        "them get stream.gap",
                        (unsigned long long)next, (unsigned long long)(seq - 1), (int)exec_len, exec);
            if (f != NULL && !f->active && f->held == NULL)
                fill_free(c, f);
        }
    }
    insert(c, epoch, seq, exec, exec_len, json, json_len);
}

/* ---- the channel ---- */

static void on_message(cs_redis_t *r, const redisReply *reply, void *data)
{
    cs_cluster_t *c = data;
    const char *p;
    size_t n;
    cs_cmsg_t m;
    int k;

    (void)r;
    if (reply == NULL) { /* the connection ended: subscribed again when it is back */
        c->subscribed = 0;
        update_gate(c);
        return;
    }
    k = cs_cmsg_pubsub(reply, &p, &n);
    if (k == 2) {
        c->subscribed = 1;
        update_gate(c);
        return;
    }
    if (k != 1)
        return;
    c->st.received++;
    if (cs_cmsg_parse(p, n, &m) != 0) {
        c->st.bad_messages++;
        cs_log_error("cluster: a message on %s is not a crewstream event (%zu bytes): ignored", c->chan, n);
        return;
    }
    offer(c, m.epoch, m.seq, m.exec, m.exec_len, m.json, m.json_len);
}

/* ---- publishing ---- */

static void answer(cs_cluster_t *c, qent_t *q, cs_err_t e, const cs_cmsg_result_t *res, const char *detail,
                   const char *req)
{
    cs_publish_t pub;

    if (e != CS_OK)
        c->st.failed++;
    if (q->done.fn != NULL) {
        memset(&pub, 0, sizeof(pub));
        pub.seq = res != NULL ? res->seq : 0;
        pub.duplicate = res != NULL ? res->duplicate : 0;
        pub.ticket = q->ticket;
        snprintf(pub.event_id, sizeof(pub.event_id), "%s", q->eid);
        if (req != NULL)
            snprintf(pub.request_event_id, sizeof(pub.request_event_id), "%s", req);
        q->done.fn(q->done.data, e, &pub, detail);
    }
    free(q);
}

static void on_batch(cs_redis_t *r, const redisReply *reply, void *data)
{
    batch_t *b = data;
    cs_cluster_t *c = b->c;
    cs_cmsg_result_t *res = NULL;
    char detail[300];

    (void)r;
    DL_DELETE(c->batches, b);
    c->st.in_flight -= b->n;
    if (reply == NULL) {
        snprintf(
            detail, sizeof(detail),
            "cluster: Redis did not answer (%.120s): the outcome is unknown, a retry with the same event_id "
            "is stored once",
            cs_redis_error(c->cmd));
    } else if (reply->type == REDIS_REPLY_ERROR) {
        snprintf(detail, sizeof(detail), "cluster: Redis refused the publish: %.200s", reply->str);
        cs_log_error("%s", detail);
    } else if ((res = calloc(b->n, sizeof(*res))) == NULL || cs_cmsg_script_reply(reply, b->n, res) != 0) {
        snprintf(detail, sizeof(detail), "cluster: Redis' answer to a publish could not be read");
        if (res != NULL)
            c->st.bad_messages++;
        cs_log_error("%s", detail);
        free(res);
        res = NULL;
    }
    for (size_t i = 0; i < b->n; i++) {
        qent_t *q = b->e[i];
        char req[CS_EVENT_ID_MAX + 1] = "";
        if (res == NULL) {
            answer(c, q, CS_ERR_UNAVAILABLE, NULL, detail, NULL);
            continue;
        }
        if (res[i].duplicate) {
            c->st.duplicates++;
        } else {
            c->st.published++;
            /* Our own event, stored here at once when it is its ring's next (else the channel brings it
             * in order). */
            cs_exec_t *ex = cs_store_find(c->store, q->exec, q->exec_len);
            uint64_t first = 1, next = 1;
            if (ex != NULL)
                cs_exec_seqs(ex, &first, &next);
            if (res[i].seq == next && (ex == NULL || cs_exec_epoch(ex) == res[i].epoch || next == 1) &&
                fill_get(c, q->exec, q->exec_len, 0) == NULL)
                insert_ex(c, res[i].epoch, res[i].seq, q->exec, q->exec_len, q->json, q->json_len, req);
        }
        answer(c, q, CS_OK, &res[i], "", req);
    }
    free(res);
    free(b->e);
    free(b);
}

/* Sends up to BATCH_MAX queued publishes as one script call. */
static void send_batch(cs_cluster_t *c)
{
    size_t n = c->nq < BATCH_MAX ? c->nq : BATCH_MAX;
    size_t argc = 6 + 6 * n;
    const char **argv = malloc(argc * sizeof(*argv));
    size_t *lens = malloc(argc * sizeof(*lens));
    batch_t *b = calloc(1, sizeof(*b));
    char maxlen[24];
    int rc;

    if (argv == NULL || lens == NULL || b == NULL || (b->e = malloc(n * sizeof(*b->e))) == NULL) {
        free(argv);
        free(lens);
        if (b != NULL)
            free(b->e);
        free(b);
        for (size_t i = 0; i < n; i++)
            answer(c, c->q[i], CS_ERR_INTERNAL, NULL, "cluster: out of memory: not stored", NULL);
        memmove(c->q, c->q + n, (c->nq - n) * sizeof(*c->q));
        c->nq -= n;
        return;
    }
    snprintf(maxlen, sizeof(maxlen), "%zu", c->ring_events);
    argv[0] = "EVAL", argv[1] = cs_cluster_script, argv[2] = "0";
    argv[3] = c->prefix, argv[4] = maxlen, argv[5] = c->chan;
    for (size_t i = 0; i < 6; i++)
        lens[i] = strlen(argv[i]);
    for (size_t i = 0; i < n; i++) {
        qent_t *q = c->q[i];
        size_t k = 6 + 6 * i;
        argv[k] = q->exec, lens[k] = q->exec_len;
        argv[k + 1] = q->type, lens[k + 1] = q->type_len;
        argv[k + 2] = q->eid, lens[k + 2] = q->eid_len;
        argv[k + 3] = q->epoch, lens[k + 3] = q->epoch_len;
        argv[k + 4] = q->ttl_s, lens[k + 4] = q->ttl_len;
        argv[k + 5] = q->json, lens[k + 5] = q->json_len;
        b->e[i] = q;
    }
    b->c = c;
    b->n = n;
    rc = cs_redis_command(c->cmd, on_batch, b, (int)argc, argv, lens);
    free(argv);
    free(lens);
    memmove(c->q, c->q + n, (c->nq - n) * sizeof(*c->q));
    c->nq -= n;
    if (rc == 0) {
        DL_APPEND(c->batches, b);
        c->st.in_flight += n;
        c->st.batches++;
        return;
    }
    for (size_t i = 0; i < n; i++)
        answer(c, b->e[i], CS_ERR_UNAVAILABLE, NULL,
               rc == -ENOMEM ? "cluster: out of memory" : "cluster: Redis is not reachable: not stored",
               NULL);
    free(b->e);
    free(b);
}

/* At the end of the turn: what it queued goes out. */
static void flush(void *data)
{
    cs_cluster_t *c = data;

    while (c->nq > 0)
        send_batch(c);
}

static cs_err_t cluster_submit(void *data, const cs_store_remote_pub_t *p, const cs_store_done_t *done,
                               char *detail, size_t detail_len)
{
    cs_cluster_t *c = data;
    size_t need = p->exec_len + p->type_len + p->event_id_len + p->json_len + 4;
    qent_t *q;
    char *m;

    if (!c->ready) {
        snprintf(detail, detail_len, "%s", c->why);
        c->st.failed++;
        return CS_ERR_UNAVAILABLE;
    }
    if (c->nq == c->capq) {
        size_t cap = c->capq ? 2 * c->capq : 64;
        qent_t **nq = realloc(c->q, cap * sizeof(*nq));
        if (nq == NULL)
            goto nomem;
        c->q = nq;
        c->capq = cap;
    }
    if ((q = malloc(sizeof(*q) + need)) == NULL)
        goto nomem;
    memset(q, 0, sizeof(*q));
    m = q->mem;
#define PUT(dst, dlen, src, slen)                                                                            \
    do {                                                                                                     \
        memcpy(m, src, slen);                                                                                \
        m[slen] = '\0';                                                                                      \
        q->dst = m;                                                                                          \
        q->dlen = slen;                                                                                      \
        m += slen + 1;                                                                                       \
    } while (0)
    PUT(exec, exec_len, p->exec, p->exec_len);
    PUT(type, type_len, p->type, p->type_len);
    PUT(eid, eid_len, p->event_id, p->event_id_len);
    PUT(json, json_len, p->json, p->json_len);
#undef PUT
    q->ticket = p->ticket;
    if (done != NULL)
        q->done = *done;
    q->epoch_len = (size_t)snprintf(q->epoch, sizeof(q->epoch), "%llu", (unsigned long long)cs_epoch_next());
    q->ttl = p->final ? c->retain_s : (c->retain_s > ACTIVE_TTL_S ? c->retain_s : ACTIVE_TTL_S);
    if (q->ttl == 0)
        q->ttl = 1;
    q->ttl_len = (size_t)snprintf(q->ttl_s, sizeof(q->ttl_s), "%u", q->ttl);
    c->q[c->nq++] = q;
    cs_defer(c->loop, &c->flush, flush, c);
    return CS_PENDING;
nomem:
    snprintf(detail, detail_len, "out of memory");
    return CS_ERR_INTERNAL;
}

static void cluster_forget(void *data, uint64_t ticket)
{
    cs_cluster_t *c = data;

    for (size_t i = 0; i < c->nq; i++)
        if (c->q[i]->ticket == ticket)
            memset(&c->q[i]->done, 0, sizeof(c->q[i]->done));
    for (batch_t *b = c->batches; b != NULL; b = b->next)
        for (size_t i = 0; i < b->n; i++)
            if (b->e[i]->ticket == ticket)
                memset(&b->e[i]->done, 0, sizeof(b->e[i]->done));
}

/* ---- the connections ---- */

static void update_gate(cs_cluster_t *c)
{
    int ready = cs_redis_up(c->cmd) && cs_redis_up(c->sub) && c->subscribed;

    if (ready && c->ready)
        return;
    if (ready) {
        c->why[0] = '\0';
        cs_store_set_refusal(c->store, CS_OK, NULL);
        cs_log_info("cluster: node %s ready on Redis %s (prefix %s)", c->node, c->addr, c->prefix);
    } else {
        const char *err = !cs_redis_up(c->cmd)   ? cs_redis_error(c->cmd)
                          : !cs_redis_up(c->sub) ? cs_redis_error(c->sub)
                                                 : "subscribing to its channel";
        snprintf(c->why, sizeof(c->why), "cluster: Redis %.80s is not reachable (%.100s): not stored, retry",
                 c->addr, err[0] ? err : "connection lost");
        cs_store_set_refusal(c->store, CS_ERR_UNAVAILABLE, c->why);
        if (c->ready)
            cs_log_warn("%s", c->why);
    }
    c->ready = ready;
}

static void on_cmd_state(cs_redis_t *r, int up, const char *why, void *data)
{
    cs_cluster_t *c = data;
    (void)r;
    if (!up) {
        c->st.reconnects++;
        cs_log_warn("cluster: the command connection to Redis %s is down: %s", c->addr, why);
    }
    update_gate(c);
}

static void on_sub_state(cs_redis_t *r, int up, const char *why, void *data)
{
    cs_cluster_t *c = data;

    c->subscribed = 0;
    if (up) {
        if (cs_redis_subscribe(r, c->chan, on_message, c) != 0)
            cs_redis_reset(r, "cannot subscribe");
    } else {
        c->st.reconnects++;
        cs_log_warn("cluster: the pub/sub connection to Redis %s is down: %s", c->addr, why);
    }
    update_gate(c);
}

/* ---- public functions ---- */

int cs_cluster_new(cs_cluster_t **out, cs_loop_t *loop, cs_store_t *store, const cs_cluster_opts_t *o)
{
    cs_cluster_t *c = calloc(1, sizeof(*c));
    char host[256] = "node", name[160];
    int rc = -ENOMEM;

    if (c == NULL)
        return -ENOMEM;
    c->loop = loop;
    c->store = store;
    c->ring_events = o->ring_events > 0 ? o->ring_events : 1024;
    c->retain_s = o->retain_s;
    if (o->node == NULL && gethostname(host, sizeof(host) - 1) != 0)
        snprintf(host, sizeof(host), "node");
    c->node = strdup(o->node != NULL ? o->node : host);
    c->prefix = strdup(o->prefix != NULL ? o->prefix : "cs:");
    c->addr = strdup(o->redis);
    if (c->node == NULL || c->prefix == NULL || c->addr == NULL)
        goto fail;
    if ((c->chan = malloc(strlen(c->prefix) + 7)) == NULL)
        goto fail;
    sprintf(c->chan, "%sevents", c->prefix);
    snprintf(c->why, sizeof(c->why), "cluster: connecting to Redis %.120s: not stored, retry", c->addr);
    cs_store_set_refusal(store, CS_ERR_UNAVAILABLE, c->why);
    cs_store_set_remote(store,
                        &(cs_store_remote_t){.submit = cluster_submit, .forget = cluster_forget, .data = c});
    cs_store_set_history(store, &(cs_store_history_t){.opened = history_opened, .data = c});
    snprintf(name, sizeof(name), "crewstream-%.64s-cmd", c->node);
    for (char *p = name; *p; p++)
        if (*p == ':')
            *p = '.';
    cs_redis_opts_t ro = {
        .addr = o->redis, .name = name, .timeout_ms = o->timeout_ms, .on_state = on_cmd_state, .data = c};
    if ((rc = cs_redis_new(&c->cmd, loop, &ro)) != 0)
        goto fail;
    memcpy(name + strlen(name) - 3, "sub", 3);
    ro.name = name;
    ro.on_state = on_sub_state;
    if ((rc = cs_redis_new(&c->sub, loop, &ro)) != 0)
        goto fail;
    *out = c;
    return 0;
fail:
    cs_cluster_free(c);
    return rc;
}

void cs_cluster_free(cs_cluster_t *c)
{
    fill_t *f, *t;

    if (c == NULL)
        return;
    cs_store_set_remote(c->store, NULL);
    cs_store_set_history(c->store, NULL);
    /* Queued ones were never sent; those in flight get NULL from cs_redis_free: unavailable both. */
    for (size_t i = 0; i < c->nq; i++)
        answer(c, c->q[i], CS_ERR_UNAVAILABLE, NULL, "cluster: shutting down: not stored", NULL);
    c->nq = 0;
    c->ready = 0;
    cs_redis_free(c->sub); /* its NULL replies may touch c: it is still whole */
    cs_redis_free(c->cmd); /* fills in flight get NULL: they insert what they held */
    HASH_ITER(hh, c->fills, f, t)
    {
        fill_free(c, f);
    }
    cs_defer_cancel(c->loop, &c->flush);
    free(c->q);
    free(c->prefix);
    free(c->node);
    free(c->chan);
    free(c->addr);
    free(c);
}

int cs_cluster_degraded(const cs_cluster_t *c, const char **why)
{
    if (c == NULL || c->ready)
        return 0;
    if (why != NULL)
        *why = c->why;
    return 1;
}

void cs_cluster_stats(const cs_cluster_t *c, cs_cluster_stats_t *st)
{
    memset(st, 0, sizeof(*st));
    if (c == NULL)
        return;
    *st = c->st;
    st->ready = c->ready;
    st->queued = c->nq;
    cs_redis_stats_t a, b;
    cs_redis_stats(c->cmd, &a);
    cs_redis_stats(c->sub, &b);
    st->timeouts = a.timeouts + b.timeouts;
}

/* ---- history older than the ring: read from Redis when a subscriber starts (docs/cluster.md) ---- */

/* Older entries read per subscriber beyond ring_events (Redis' MAXLEN ~ keeps up to a stream node more). */
#define HISTORY_EXTRA 128

const char cs_cluster_history_script[] = "local e = redis.call('HGET', KEYS[1], 'epoch')\n"
                                         "if not e then return {} end\n"
                                         "return {e, redis.call('XREVRANGE', KEYS[2], ARGV[1], '-', 'COUNT', "
                                         "ARGV[2])}\n";

/* A read in flight for one held subscriber. */
typedef struct hload {
    cs_cluster_t *c;
    cs_sub_hold_t *hold;
    int fresh; /* the node had no event of the execution when it started */
    size_t id_len;
    char id[];
} hload_t;

/* Whether sub's start needs events older than its execution's ring (or the node has none of it yet: Redis
 * may have them, and gives the execution's epoch). */
static int history_needed(const cs_sub_t *sub, const cs_start_t *start)
{
    uint64_t first, next, cep, n;
    cs_exec_t *ex = sub->exec;

    cs_exec_seqs(ex, &first, &next);
    if (next == 1)
        return 1;
    if (first <= 1)
        return 0;
    switch (start->kind) {
    case CS_START_HISTORY:
        return 1;
    case CS_START_NOW:
        return 0;
    case CS_START_AFTER_SEQ:
        return start->seq + 1 < first;
    case CS_START_AFTER_ID:
        if (cs_cursor_parse(start->id, start->id_len, &cep, &n) == 0)
            return cep == cs_exec_epoch(ex) && n + 1 < first;
        if (cs_exec_find_event(ex, start->id, start->id_len) != NULL)
            return 0;
        if (cs_seq_parse(start->id, start->id_len, &n) == 0)
            return n + 1 < first;
        return 1; /* an event_id the ring does not have: perhaps an older one */
    }
    return 0;
}

static void history_fail(hload_t *l, const char *why)
{
    l->c->st.history_failed++;
    cs_log_warn("cluster: the history of %s older than this node's ring could not be read from Redis (%s): a "
                "subscriber resuming before the ring gets stream.gap (long-poll: 503)",
                l->id, why);
    cs_sub_release(l->hold, 0, NULL, 0, 1);
}

static void on_history(cs_redis_t *r, const redisReply *reply, void *data)
{
    hload_t *l = data;
    cs_cluster_t *c = l->c;
    cs_hist_event_t *ev = NULL;
    size_t m = 0, k = 0;
    uint64_t epoch = 0;
    const redisReply *ent;

    (void)r;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        history_fail(l, reply == NULL                      ? cs_redis_error(c->cmd)
                        : reply->type == REDIS_REPLY_ERROR ? reply->str
                                                           : "an answer that is not an array");
        free(l);
        return;
    }
    c->st.history_reads++;
    if (reply->elements == 0) { /* Redis has no such execution */
        cs_sub_release(l->hold, 0, NULL, 0, 0);
        free(l);
        return;
    }
    ent = reply->elements == 2 ? reply->element[1] : NULL;
    if (reply->element[0]->type == REDIS_REPLY_STRING) {
        char buf[32];
        size_t n = reply->element[0]->len < sizeof(buf) - 1 ? reply->element[0]->len : sizeof(buf) - 1;
        memcpy(buf, reply->element[0]->str, n);
        buf[n] = '\0';
        epoch = strtoull(buf, NULL, 10);
    }
    if (ent == NULL || ent->type != REDIS_REPLY_ARRAY || epoch == 0) {
        c->st.bad_messages++;
        history_fail(l, "an answer that could not be read");
        free(l);
        return;
    }
    m = ent->elements;
    if (m > 0 && (ev = calloc(m, sizeof(*ev))) == NULL) {
        history_fail(l, "out of memory");
        free(l);
        return;
    }
    /* XREVRANGE: newest first; the store takes them oldest first. */
    for (size_t i = m; i > 0; i--) {
        cs_cmsg_entry_t e;
        if (cs_cmsg_xrange_entry(ent, i - 1, &e) != 0) {
            c->st.bad_messages++;
            continue;
        }
        if (k > 0 && e.seq <= ev[k - 1].seq)
            continue;
        ev[k].seq = e.seq;
        ev[k].json = e.json;
        ev[k].json_len = e.json_len;
        k++;
    }
    /* A node that had nothing of the execution (and still has nothing) takes its newest events into its
     * ring, in order, with Redis' epoch: status, human input and later subscribers have them too. */
    cs_exec_t *ex = cs_store_find(c->store, l->id, l->id_len);
    uint64_t first = 1, next = 1;
    if (ex != NULL)
        cs_exec_seqs(ex, &first, &next);
    if (l->fresh && ex != NULL && next == 1 && fill_get(c, l->id, l->id_len, 0) == NULL)
        for (size_t i = k > c->ring_events ? k - c->ring_events : 0; i < k; i++)
            insert(c, epoch, ev[i].seq, l->id, l->id_len, ev[i].json, ev[i].json_len);
    c->st.history_events += cs_sub_release(l->hold, epoch, ev, k, 0);
    free(ev);
    free(l);
}

/* The store's word that a subscriber opened on an execution: held while what its start needs of the history
 * is read from Redis (one script call: the epoch and the newest entries older than the ring, atomically). */
static void history_opened(void *data, cs_sub_t *sub, const cs_start_t *start)
{
    cs_cluster_t *c = data;
    size_t id_len;
    const char *id = cs_exec_id(sub->exec, &id_len);
    uint64_t first, next;
    char m[300], s[300], end[32], count[24];
    const char *argv[7];
    size_t lens[7];
    hload_t *l;

    if (!history_needed(sub, start) || id_len > 200)
        return;
    if ((l = malloc(sizeof(*l) + id_len + 1)) == NULL)
        return; /* positioned against the ring alone (stream.gap where it is short) */
    if ((l->hold = cs_sub_hold(sub, start)) == NULL) {
        free(l);
        return;
    }
    l->c = c;
    l->id_len = id_len;
    memcpy(l->id, id, id_len + 1);
    cs_exec_seqs(sub->exec, &first, &next);
    l->fresh = next == 1;
    snprintf(m, sizeof(m), "%s{x:%s}:m", c->prefix, id);
    snprintf(s, sizeof(s), "%s{x:%s}:s", c->prefix, id);
    if (l->fresh)
        snprintf(end, sizeof(end), "+");
    else
        snprintf(end, sizeof(end), "%llu-0", (unsigned long long)(first - 1));
    snprintf(count, sizeof(count), "%zu", c->ring_events + HISTORY_EXTRA);
    argv[0] = "EVAL", argv[1] = cs_cluster_history_script, argv[2] = "2", argv[3] = m, argv[4] = s;
    argv[5] = end, argv[6] = count;
    for (int i = 0; i < 7; i++)
        lens[i] = strlen(argv[i]);
    if (!c->ready || cs_redis_command(c->cmd, on_history, l, 7, argv, lens) != 0) {
        history_fail(l, c->ready ? "cannot send" : c->why);
        free(l);
    }
}
