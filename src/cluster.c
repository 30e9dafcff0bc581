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
/* The events of one group of a script call (one stream entry) at most, bytes (one larger event is alone). */
#define GROUP_MAX_BYTES (16u << 20)
/* How long an execution that is not finished stays in Redis after its last event, at least. */
#define ACTIVE_TTL_S 86400u
/* Publishes whose outcome is unknown held at once, at most (more are answered unavailable at once). */
#define UNKNOWN_MAX 4096
/* Channel messages held behind holes, every execution together, at most (bytes): one more is not held, and
 * the fill that follows reads it from the stream. */
#define HELD_MAX_BYTES (16u << 20)
/* How long Redis keeps a script call's receipt (its reply as text), for a node whose reply was lost. */
#define RECEIPT_TTL_S "300"
/* Every node's report of itself (cs_cmsg_node) into "<prefix>nodes", and every node's read back, this often.
 */
#define NODES_EVERY_MS 2000
/* Reports older than this are deleted from the hash (a node gone for good). */
#define NODES_FORGET_MS (3600 * 1000)
/* Executions checked against Redis per loop turn after a reconnect (one HMGET each, pipelined). */
#define RECHECK_PER_TURN 256

/*
 * ARGV: prefix, store.ring_events (the seqs each stream keeps), channel, an epoch candidate (for every
 * execution the call creates), a deadline (Redis' clock, ms: a call that reaches Redis later stores nothing,
 * so that a publish whose reply never came is known not to be stored once that time has passed), the call's
 * receipt key, the longest TTL, the event-id index's generation width (store.ring_events), then per group
 * (the node sends a call's events grouped by execution, in their order within it, at most
 * CS_CMSG_ENTRY_MAX to a group): execution id, ttl (of the group's last event), the number of events, their
 * index fields ("<type> <event_id>\n" each, an empty line when the node made the event_id: nobody can
 * re-post it before it is stored, and every node's ring knows it from then on, as a lone daemon's does; ""
 * when no event of the group has a producer's id), and the events themselves, each "<json_len>\n<json>"
 * (cmsg.h). A group without producers' ids is stored whole without the script touching its events: its
 * seqs are the next ones, one XADD (entry id its last seq, fields f -> its first seq and b -> the events,
 * trimmed with MINID ~ to the last ring_events seqs: an entry holds many events, MAXLEN would count
 * entries), its bytes go into the batch message as they came. A group with producers' ids is walked
 * event by event: the index lookup, and the duplicates taken out of what is stored.
 * Returns the receipt: space-separated pairs, "<first>+<count> <epoch>" for a group stored whole, else
 * per event "<seq> <epoch>" (the seq with '-' for a duplicate), one bulk string, which is also kept under
 * the receipt key for RECEIPT_TTL_S, so a call whose reply was lost can be read back (see "publishes whose
 * outcome is unknown"). An execution's meta hash is read once per call (HMGET) and written back once (HSET
 * seq, and when its keys' TTL was set); one PUBLISH per call carries every event it stored (cmsg.h: a
 * batch message, grouped), one ZADD every execution it touched. Seqs are formatted with %d (Lua's own
 * number to string goes through printf's floating point; XADD takes "<seq>" as "<seq>-0").
 * The keys' EXPIRE is set when the meta hash is new, when the TTL changes (a finishing event) and else at
 * most every min(60 s, TTL/10) (meta fields xt: the TTL set, xa: when, Redis' ms): so the keys live
 * between TTL - min(60 s, TTL/10) and TTL after the last event, and three EXPIREs per execution per call
 * are saved. The event-id index is kept in generations of gw seqs, "<prefix>{x:X}:i:<epoch>:<g>" with g =
 * floor(seq / gw): an id is looked up in the current generation and the previous one, HSETNX'd into the
 * current one (EXPIRE NX: a new generation gets the keys' TTL), and a generation is deleted when the one
 * two after it starts; so a re-post is recognised while fewer than gw (store.ring_events) events were
 * stored after the first one, as long as the node's ring would hold it, and the index of an execution holds
 * at most 2 gw ids. A meta hash that is new gets the candidate as its epoch; a stream left from an older
 * history under the same keys (one that outlived its meta hash) goes with it, so XADD never meets an id
 * ahead of the new seqs (an older history's index generations carry its epoch in their names).
 */
const char cs_cluster_script[] =
    "local p, maxlen, chan, cand, dl, rk = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]\n"
    "local keep, gw = tonumber(ARGV[7]), tonumber(ARGV[8])\n"
    "local call, fmt, floor, find, sub = redis.call, string.format, math.floor, string.find, string.sub\n"
    "local tm = call('TIME')\n"
    "local now = tonumber(tm[1]) * 1000 + floor(tonumber(tm[2]) / 1000)\n"
    "if now > dl then\n"
    "  return redis.error_reply('LATE the publish reached Redis after its deadline: not stored')\n"
    "end\n"
    "local ex, msg, ng, rc, zs = {}, {''}, 0, {}, {}\n"
    "local keepn = tonumber(maxlen)\n"
    "for i = 9, #ARGV, 5 do\n"
    "  local x, k, f, b = ARGV[i], tonumber(ARGV[i+2]), ARGV[i+3], ARGV[i+4]\n"
    "  local e = ex[x]\n"
    "  if not e then\n"
    "    local pb = p .. '{x:' .. x .. '}:'\n"
    "    e = {m = pb .. 'm', s = pb .. 's'}\n"
    "    local h = call('HMGET', e.m, 'epoch', 'seq', 'xt', 'xa')\n"
    "    if not h[1] then\n"
    "      call('DEL', e.s)\n"
    "      e.ep, e.seq, e.xa = cand, 0, -1\n"
    "      call('HSET', e.m, 'epoch', e.ep)\n"
    "    else\n"
    "      e.ep, e.seq, e.xt, e.xa = h[1], tonumber(h[2] or 0), h[3], tonumber(h[4] or -1)\n"
    "    end\n"
    "    e.seq0, e.ix = e.seq, pb .. 'i:' .. e.ep .. ':'\n"
    "    ex[x] = e\n"
    "    zs[#zs+1] = now\n"
    "    zs[#zs+1] = x\n"
    "  end\n"
    "  e.ttl = ARGV[i+1]\n"
    "  local first, kept = e.seq + 1, k\n"
    "  if f == '' then\n"
    "    e.seq = e.seq + k\n"
    "    for g = floor(first / gw) + (first % gw == 0 and 0 or 1), floor(e.seq / gw) do\n"
    "      if g >= 2 then call('DEL', e.ix .. (g - 2)) end\n"
    "    end\n"
    "    rc[#rc+1] = fmt('%d+%d %s', first, k, e.ep)\n"
    "  else\n"
    "    local parts, pos, fp = {}, 1, 1\n"
    "    kept = 0\n"
    "    for j = 1, k do\n"
    "      local nl = find(b, '\\n', pos, true)\n"
    "      local stop = nl + tonumber(sub(b, pos, nl - 1))\n"
    "      local fe = find(f, '\\n', fp, true)\n"
    "      local fld = sub(f, fp, fe - 1)\n"
    "      fp = fe + 1\n"
    "      local sn = e.seq + 1\n"
    "      local s, o = fmt('%d', sn)\n"
    "      if fld ~= '' then\n"
    "        local g = floor(sn / gw)\n"
    "        if g > 0 then o = call('HGET', e.ix .. (g - 1), fld) end\n"
    "        if not o then\n"
    "          local ik = e.ix .. g\n"
    "          if call('HSETNX', ik, fld, s) == 0 then o = call('HGET', ik, fld) end\n"
    "          if not e.gk then e.gk = {} end\n"
    "          e.gk[ik] = true\n"
    "        end\n"
    "      end\n"
    "      if not o then\n"
    "        e.seq = sn\n"
    "        if sn % gw == 0 and sn >= 2 * gw then call('DEL', e.ix .. (sn / gw - 2)) end\n"
    "        kept = kept + 1\n"
    "        parts[kept] = sub(b, pos, stop)\n"
    "        rc[#rc+1] = s .. ' ' .. e.ep\n"
    "      else\n"
    "        rc[#rc+1] = '-' .. o .. ' ' .. e.ep\n"
    "      end\n"
    "      pos = stop + 1\n"
    "    end\n"
    "    if kept < k then b = table.concat(parts) end\n"
    "  end\n"
    "  if kept > 0 then\n"
    "    local fs = fmt('%d', first)\n"
    "    call('XADD', e.s, 'MINID', '~', fmt('%d', math.max(e.seq - keepn + 1, 0)), fmt('%d', e.seq),\n"
    "         'f', fs, 'b', b)\n"
    "    msg[#msg+1] = fmt('%s %s %s %d %d\\n', e.ep, fs, x, kept, #b)\n"
    "    msg[#msg+1] = b\n"
    "    ng = ng + 1\n"
    "  end\n"
    "end\n"
    "if ng > 0 then\n"
    "  msg[1] = '#' .. ng .. '\\n'\n"
    "  call('PUBLISH', chan, table.concat(msg))\n"
    "end\n"
    "for x, e in pairs(ex) do\n"
    "  local t = tonumber(e.ttl)\n"
    "  if e.xt ~= e.ttl or now - e.xa >= math.min(60000, t * 100) then\n"
    "    call('EXPIRE', e.m, t); call('EXPIRE', e.s, t)\n"
    "    local g = floor(e.seq / gw)\n"
    "    call('EXPIRE', e.ix .. g, t)\n"
    "    if g > 0 then call('EXPIRE', e.ix .. (g - 1), t) end\n"
    "    call('HSET', e.m, 'seq', e.seq, 'xt', e.ttl, 'xa', now)\n"
    "  else\n"
    "    if e.gk then for k in pairs(e.gk) do call('EXPIRE', k, t, 'NX') end end\n"
    "    if e.seq ~= e.seq0 then call('HSET', e.m, 'seq', e.seq) end\n"
    "  end\n"
    "end\n"
    "call('ZADD', p .. 'execs', unpack(zs))\n"
    "call('ZREMRANGEBYSCORE', p .. 'execs', '-inf', '(' .. fmt('%d', now - keep * 1000))\n"
    "call('EXPIRE', p .. 'execs', keep)\n"
    "local r = table.concat(rc, ' ')\n"
    "call('SET', rk, r, 'EX', '" RECEIPT_TTL_S "')\n"
    "return r\n";

/* One publish waiting for Redis: its completion and the script's six arguments (in one allocation). */
typedef struct qent {
    uint64_t ticket;
    cs_store_done_t done;
    const char *exec, *type, *eid, *json;
    size_t exec_len, type_len, eid_len, json_len;
    const char *key; /* "<type> <event_id>": the index field; type and eid point into it */
    size_t key_len;
    unsigned ttl;
    const char *ev; /* "<json_len>\n<json>": the event as a group of the script's arguments holds it */
    size_t ev_len;
    char mem[]; /* exec, key, ev (json its end), each NUL-terminated (type is not: a space follows it) */
} qent_t;

/* A script call in flight. */
typedef struct batch {
    cs_cluster_t *c;
    uint64_t id; /* its receipt's number (RECEIPT_TTL_S) */
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
    uint64_t from, to; /* the seqs the read in flight fills */
    int active;
    int dropped; /* a message was not held (HELD_MAX_BYTES): the execution is checked again after the fill */
    held_t *held;
} fill_t;

/* A publish whose reply never came: its answer waits until Redis says whether it stored it. */
typedef struct unk {
    cs_cluster_t *c;
    qent_t *q;
    uint64_t batch; /* the script call it went out in: its receipt */
    size_t idx;     /* its place in that call */
    int64_t since;  /* cs_loop_now when it was held */
    int asking;     /* GET of its call's receipt in flight */
    struct unk *prev, *next;
} unk_t;

/* An execution checked against Redis' meta hash after a reconnect (HMGET epoch seq in flight). */
typedef struct rcq {
    cs_cluster_t *c;
    uint64_t epoch; /* the ring's epoch when asked */
    size_t id_len;
    char id[];
} rcq_t;

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
    int timeout_ms;
    int closing;
    int clock_ok;      /* Redis' clock read since the command connection came up (TIME) */
    int64_t clock_off; /* Redis' time (ms) minus cs_loop_now: a script call's deadline in Redis' clock */
    uint64_t boot;     /* random per start: script calls' receipt keys differ from an earlier run's */
    int64_t warm_started_ms; /* Redis' clock (ms) when the last reading of the list of executions began */
    int64_t warm_done_ms;    /* ...of the last one that read everything it listed; 0: none yet */
    int warm_failed;         /* a history read of the current one got no answer */
    int warming;             /* the list of executions (WARM_MAX newest) is being read after becoming ready */
    char **warm_ids;         /* executions from that list still to read (those this node holds nothing of) */
    size_t warm_n, warm_pos, warm_in_flight;
    uint64_t batch_seq; /* script calls sent */
    unk_t *unk;         /* publishes whose outcome is unknown, oldest first */
    size_t n_unk;
    cs_timer_t unk_timer; /* the longest wait of the oldest */
    char **rc_ids;        /* executions still to check after a reconnect */
    size_t rc_n, rc_pos;
    cs_timer_t rc_timer; /* the next RECHECK_PER_TURN of them, next turn */
    size_t held_bytes;
    struct hload *hwait; /* history reads waiting for Redis (held subscribers), oldest first */
    size_t n_hwait, h_in_flight;
    int hwait_logged;       /* the wait was logged (once an outage) */
    cs_timer_t h_timer;     /* sends what waits again, sweeps closed ones */
    char sha[41], asha[41]; /* SCRIPT LOAD's SHA1 of the publish script and of the answer script: EVALSHA */
    char *wb;               /* a script call's command, written in RESP here (send_batch), reused */
    size_t wb_cap;
    char why[256];
    cs_cluster_stats_t st;
    cs_cmsg_entry_t xev[CS_CMSG_ENTRY_MAX]; /* the events of one stream entry, being read */
    cs_timer_t nodes_timer;                 /* the next report of this node, and read of every node's */
    int nodes_reading;                      /* HGETALL of the reports in flight */
    cs_cluster_node_t nodes[CS_CLUSTER_NODES_MAX]; /* every node's last report, as last read */
    size_t n_nodes;
};

static void update_gate(cs_cluster_t *c);
static void unk_hold(cs_cluster_t *c, qent_t *q, uint64_t batch, size_t idx);
static void recheck_one(cs_cluster_t *c, const char *id, size_t id_len);
static void offer(cs_cluster_t *c, uint64_t epoch, uint64_t seq, const char *exec, size_t exec_len,
                  const char *json, size_t json_len);
static void history_opened(void *data, cs_sub_t *sub, const cs_start_t *start);
static void warm_start(cs_cluster_t *c);
static void warm_clear(cs_cluster_t *c);
static void history_pump(cs_cluster_t *c);
static void history_clear(cs_cluster_t *c);
static void on_history_timer(cs_timer_t *t);
static void on_nodes_timer(cs_timer_t *t);
static void nodes_report(cs_cluster_t *c);

/* Redis' clock now (ms), as this node knows it (0: not read yet). */
static int64_t redis_now(const cs_cluster_t *c)
{
    return c->clock_ok ? cs_loop_now(c->loop) + c->clock_off : 0;
}

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

/* Frees a held message (its bytes leave the cap's count). */
static void held_free(cs_cluster_t *c, held_t *h)
{
    c->held_bytes -= sizeof(*h) + h->json_len + 1;
    free(h);
}

static void fill_free(cs_cluster_t *c, fill_t *f)
{
    held_t *h, *t;
    HASH_DELETE(hh, c->fills, f);
    LL_FOREACH_SAFE(f->held, h, t)
    {
        held_free(c, h);
    }
    free(f->id);
    free(f);
}

/* Holds a message behind f's hole. Past HELD_MAX_BYTES (every fill together) it is not held: counted,
 * logged once per fill, and the execution is checked again when the fill is done (the stream has it). */
static int hold(fill_t *f, uint64_t epoch, uint64_t seq, const char *json, size_t len)
{
    cs_cluster_t *c = f->c;
    held_t *h;

    if (c->held_bytes + sizeof(*h) + len + 1 > HELD_MAX_BYTES) {
        c->st.held_dropped++;
        if (!f->dropped)
            cs_log_warn(
                "cluster: messages held behind holes reached %u bytes: event %llu of %s (and more) is "
                "not held, it is read from Redis' stream after the fill",
                HELD_MAX_BYTES, (unsigned long long)seq, f->id);
        f->dropped = 1;
        return 0;
    }
    if ((h = malloc(sizeof(*h) + len + 1)) == NULL)
        return -ENOMEM;
    c->held_bytes += sizeof(*h) + len + 1;
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
        /* Entries from the one holding f->from on: its older events and those past f->to are not this
         * read's (the held ones and the ring have them). */
        for (size_t i = 0; i < reply->elements; i++) {
            int n = cs_cmsg_xrange_count(reply, i);
            if (n < 0) {
                c->st.bad_messages++;
                continue;
            }
            cs_cmsg_xrange_events(reply, i, c->xev);
            for (int k = 0; k < n; k++)
                if (c->xev[k].seq >= f->from && c->xev[k].seq <= f->to)
                    insert(c, f->epoch, c->xev[k].seq, f->id, f->id_len, c->xev[k].json, c->xev[k].json_len);
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
        held_free(c, h);
    }
    if (f->dropped && !f->active) { /* what was not held is in the stream: read it now */
        f->dropped = 0;
        if (!c->closing)
            recheck_one(c, f->id, f->id_len);
    }
    if (!f->active && f->held == NULL && !f->dropped)
        fill_free(c, f);
}

/* Reads seqs [from, to] of exec from its stream; the message that showed the hole is held meanwhile. An
 * entry's id is the last seq it holds: the entries from "<from>-0" on, at most one per seq wanted, hold
 * them all. */
static int fill_start(cs_cluster_t *c, fill_t *f, uint64_t epoch, uint64_t from, uint64_t to)
{
    char key[256], a[32], b[32];
    const char *argv[6];
    size_t lens[6];

    if (to - from + 1 > c->ring_events) {
        /* More than the ring holds: only its last ring_events are read (the older ones would be evicted
         * as they are stored); subscribers behind get stream.gap. */
        uint64_t skip = to - from + 1 - c->ring_events;
        c->st.lost += skip;
        cs_log_warn("cluster: events %llu-%llu of %s are older than this node's ring can hold: not read, "
                    "subscribers behind them get stream.gap",
                    (unsigned long long)from, (unsigned long long)(from + skip - 1), f->id);
        from += skip;
    }
    snprintf(key, sizeof(key), "%s{x:%s}:s", c->prefix, f->id);
    snprintf(a, sizeof(a), "%llu-0", (unsigned long long)from);
    snprintf(b, sizeof(b), "%llu", (unsigned long long)(to - from + 1));
    argv[0] = "XRANGE", argv[1] = key, argv[2] = a, argv[3] = "+", argv[4] = "COUNT", argv[5] = b;
    for (int i = 0; i < 6; i++)
        lens[i] = strlen(argv[i]);
    if (cs_redis_command(c->cmd, on_fill, f, 6, argv, lens) != 0)
        return -ENOTCONN;
    f->epoch = epoch;
    f->from = from;
    f->to = to;
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
    size_t n, count;
    cs_cmsg_iter_t it;
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
    if (n > 0 && p[0] != '*' && p[0] != '#') { /* one event, as the first cluster version sends it */
        if (cs_cmsg_parse(p, n, &m) != 0)
            goto bad;
        offer(c, m.epoch, m.seq, m.exec, m.exec_len, m.json, m.json_len);
        return;
    }
    /* A batch: read whole before any of it is offered (a malformed one is dropped entire; the holes it
     * leaves are filled from the stream at each execution's next event). Our own events come back too:
     * offer drops what the ring has. */
    if (cs_cmsg_batch(p, n, &count, &it) != 0)
        goto bad;
    for (size_t i = 0; i < count && cs_cmsg_next(&it, &m) == 0; i++)
        offer(c, m.epoch, m.seq, m.exec, m.exec_len, m.json, m.json_len);
    return;
bad:
    c->st.bad_messages++;
    cs_log_error("cluster: a message on %s is not crewstream events (%zu bytes): ignored", c->chan, n);
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
        memcpy(pub.event_id, q->eid,
               q->eid_len < sizeof(pub.event_id) ? q->eid_len : sizeof(pub.event_id) - 1);
        if (req != NULL && req[0] != '\0')
            snprintf(pub.request_event_id, sizeof(pub.request_event_id), "%s", req);
        q->done.fn(q->done.data, e, &pub, detail);
    }
    free(q);
}

/* Our own event, which Redis stored: into this node's ring at once when it is its ring's next (else the
 * channel brings it in order); *req (when not NULL) gets the request an answer closed. */
static void store_own(cs_cluster_t *c, const qent_t *q, const cs_cmsg_result_t *res, char *req)
{
    cs_exec_t *ex = cs_store_find(c->store, q->exec, q->exec_len);
    uint64_t first = 1, next = 1;

    if (ex != NULL)
        cs_exec_seqs(ex, &first, &next);
    if (res->seq == next && (ex == NULL || cs_exec_epoch(ex) == res->epoch || next == 1) &&
        fill_get(c, q->exec, q->exec_len, 0) == NULL)
        insert_ex(c, res->epoch, res->seq, q->exec, q->exec_len, q->json, q->json_len, req);
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
        /* The outcome is unknown (Redis may have run the script): no answer until Redis says. */
        cs_log_warn("cluster: %zu publishes got no reply from Redis (%.120s): their answers wait until Redis "
                    "says whether it stored them (at most %d ms)",
                    b->n, cs_redis_error(c->cmd), 2 * c->timeout_ms);
        for (size_t i = 0; i < b->n; i++)
            unk_hold(c, b->e[i], b->id, i);
        free(b->e);
        free(b);
        return;
    } else if (reply->type == REDIS_REPLY_ERROR) {
        snprintf(detail, sizeof(detail), "cluster: Redis refused the publish: %.200s", reply->str);
        if (strncmp(reply->str, "LATE", 4) == 0)
            c->st.late += b->n;
        cs_log_error("%s", detail);
        if (strncmp(reply->str, "NOSCRIPT", 8) == 0) /* its script cache was flushed: every call after this */
            cs_redis_reset(c->cmd, "the publish script is not loaded in Redis (NOSCRIPT): loaded again");
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
            store_own(c, q, &res[i], req);
        }
        answer(c, q, CS_OK, &res[i], "", req);
    }
    free(res);
    free(b->e);
    free(b);
}

/* The TTL of an execution's keys after an event: store.retain_s after one that finishes it, else at least
 * a day. */
static unsigned ttl_of(const cs_cluster_t *c, int final)
{
    unsigned t = final ? c->retain_s : (c->retain_s > ACTIVE_TTL_S ? c->retain_s : ACTIVE_TTL_S);
    return t > 0 ? t : 1;
}

/* Writes v in decimal with a NUL (dst has room for 21 bytes); returns its length. */
static size_t utoa(char *dst, uint64_t v)
{
    char t[20];
    size_t n = 0, len;

    do
        t[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    len = n;
    while (n > 0)
        *dst++ = t[--n];
    *dst = '\0';
    return len;
}

/* The key Redis keeps script call id's receipt under: "<prefix>r:<node>:<boot>:<id>" (cut to size - 1). */
static size_t receipt_key(const cs_cluster_t *c, uint64_t id, char *buf, size_t size)
{
    int n = snprintf(buf, size, "%sr:%s:%llx:%llu", c->prefix, c->node, (unsigned long long)c->boot,
                     (unsigned long long)id);
    return n < 0 ? 0 : (size_t)n >= size ? size - 1 : (size_t)n;
}

/* Appends the RESP head of a bulk string of n bytes ("$<n>\r\n") at w; returns the end. */
static char *resp_head(char *w, size_t n)
{
    *w++ = '$';
    w += utoa(w, n);
    *w++ = '\r', *w++ = '\n';
    return w;
}

/* Appends one RESP bulk string ("$<n>\r\n<bytes>\r\n") at w; returns the end. */
static char *resp_arg(char *w, const char *p, size_t n)
{
    w = resp_head(w, n);
    memcpy(w, p, n);
    w += n;
    *w++ = '\r', *w++ = '\n';
    return w;
}

/* The order a call's events go in: by execution (its groups), in their order within it. */
typedef struct qord {
    qent_t *q;
    size_t i;
} qord_t;

static int qord_cmp(const void *a, const void *b)
{
    const qord_t *x = a, *y = b;
    size_t n = x->q->exec_len < y->q->exec_len ? x->q->exec_len : y->q->exec_len;
    int d = memcmp(x->q->exec, y->q->exec, n);

    if (d == 0 && x->q->exec_len != y->q->exec_len)
        d = x->q->exec_len < y->q->exec_len ? -1 : 1;
    return d != 0 ? d : x->i < y->i ? -1 : x->i > y->i;
}

/* The end of the group of the script's arguments that starts at o[from]: the events of one execution that
 * follow it, at most CS_CMSG_ENTRY_MAX of them and GROUP_MAX_BYTES (but always one: a larger event is a
 * group alone), so that a stream entry's field stays far below Redis' 512 MB a string. */
static size_t group_end(const qord_t *o, size_t n, size_t from)
{
    size_t to = from + 1, bytes = o[from].q->ev_len;

    while (to < n && to - from < CS_CMSG_ENTRY_MAX && bytes + o[to].q->ev_len <= GROUP_MAX_BYTES &&
           o[to].q->exec_len == o[from].q->exec_len &&
           memcmp(o[to].q->exec, o[from].q->exec, o[from].q->exec_len) == 0)
        bytes += o[to++].q->ev_len;
    return to;
}

/* Sends up to BATCH_MAX queued publishes as one script call: EVALSHA (the script is loaded when the command
 * connection comes up, before anything else is sent on it), its command written in RESP here, the events
 * grouped by execution (the script's groups: see cs_cluster_script). */
static void send_batch(cs_cluster_t *c)
{
    size_t n = c->nq < BATCH_MAX ? c->nq : BATCH_MAX, groups = 0;
    size_t need = 32 + strlen(cs_cluster_script);
    batch_t *b = calloc(1, sizeof(*b));
    qord_t o[BATCH_MAX];
    size_t ends[BATCH_MAX];
    char maxlen[24], cand[24], deadline[24], receipt[400], ttl_s[2][16], keep[16], num[24];
    const char *head[11];
    size_t head_len[11], ttl_len[2];
    char *w;
    int rc;

    for (size_t i = 0; i < n; i++) {
        o[i].q = c->q[i], o[i].i = i;
        need += c->q[i]->exec_len + c->q[i]->key_len + c->q[i]->ev_len + 5 * 32;
    }
    need += 11 * 32 + 2 * sizeof(receipt) + strlen(c->prefix) + strlen(c->chan);
    if (need > c->wb_cap) {
        char *nb = b != NULL ? realloc(c->wb, need) : NULL;
        if (nb != NULL) {
            c->wb = nb;
            c->wb_cap = need;
        }
    }
    if (b == NULL || need > c->wb_cap || (b->e = malloc(n * sizeof(*b->e))) == NULL) {
        free(b);
        for (size_t i = 0; i < n; i++)
            answer(c, c->q[i], CS_ERR_INTERNAL, NULL, "cluster: out of memory: not stored", NULL);
        memmove(c->q, c->q + n, (c->nq - n) * sizeof(*c->q));
        c->nq -= n;
        return;
    }
    qsort(o, n, sizeof(*o), qord_cmp);
    for (size_t i = 0; i < n; i = ends[groups++]) /* the groups' ends, once: the argument count comes first */
        ends[groups] = group_end(o, n, i);
    snprintf(maxlen, sizeof(maxlen), "%zu", c->ring_events);
    snprintf(cand, sizeof(cand), "%llu", (unsigned long long)cs_epoch_next());
    if (c->sha[0] != '\0')
        head[0] = "EVALSHA", head[1] = c->sha;
    else
        head[0] = "EVAL", head[1] = cs_cluster_script;
    head[2] = "0";
    head[3] = c->prefix, head[4] = maxlen, head[5] = c->chan, head[6] = cand;
    /* Half the reply timeout: once it fired, Redis' clock is past the deadline and the call never stores. */
    snprintf(deadline, sizeof(deadline), "%lld", (long long)(redis_now(c) + c->timeout_ms / 2));
    head[7] = deadline;
    b->id = ++c->batch_seq;
    receipt_key(c, b->id, receipt, sizeof(receipt));
    head[8] = receipt;
    head[9] = keep; /* the longest TTL an execution's keys get: the list of executions keeps as long */
    snprintf(keep, sizeof(keep), "%u", ttl_of(c, 0));
    head[10] = maxlen; /* the event-id index's generation width: store.ring_events */
    snprintf(ttl_s[0], sizeof(ttl_s[0]), "%u", ttl_of(c, 0));
    snprintf(ttl_s[1], sizeof(ttl_s[1]), "%u", ttl_of(c, 1));
    ttl_len[0] = strlen(ttl_s[0]), ttl_len[1] = strlen(ttl_s[1]);
    for (size_t i = 0; i < 11; i++)
        head_len[i] = strlen(head[i]);
    w = c->wb;
    *w++ = '*';
    w += utoa(w, 11 + 5 * groups);
    *w++ = '\r', *w++ = '\n';
    for (size_t i = 0; i < 11; i++)
        w = resp_arg(w, head[i], head_len[i]);
    for (size_t k = 0, g = 0, end; k < groups; k++, g = end) {
        size_t fl = 0, el = 0;
        int keyed = 0, t;
        end = ends[k];
        for (size_t i = g; i < end; i++) {
            keyed |= o[i].q->key_len > 0;
            fl += o[i].q->key_len + 1;
            el += o[i].q->ev_len;
        }
        t = o[end - 1].q->ttl == ttl_of(c, 1);
        w = resp_arg(w, o[g].q->exec, o[g].q->exec_len);
        w = resp_arg(w, ttl_s[t], ttl_len[t]);
        w = resp_arg(w, num, utoa(num, end - g));
        w = resp_head(w, keyed ? fl : 0);
        for (size_t i = g; keyed && i < end; i++) {
            memcpy(w, o[i].q->key, o[i].q->key_len);
            w += o[i].q->key_len;
            *w++ = '\n';
        }
        *w++ = '\r', *w++ = '\n';
        w = resp_head(w, el);
        for (size_t i = g; i < end; i++) {
            memcpy(w, o[i].q->ev, o[i].q->ev_len);
            w += o[i].q->ev_len;
            b->e[i] = o[i].q;
        }
        *w++ = '\r', *w++ = '\n';
    }
    b->c = c;
    b->n = n;
    rc = cs_redis_formatted(c->cmd, on_batch, b, c->wb, (size_t)(w - c->wb));
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

static cs_err_t answer_submit(cs_cluster_t *c, const cs_store_remote_pub_t *p, const cs_store_done_t *done,
                              char *detail, size_t detail_len);

static cs_err_t cluster_submit(void *data, const cs_store_remote_pub_t *p, const cs_store_done_t *done,
                               char *detail, size_t detail_len)
{
    cs_cluster_t *c = data;
    size_t need = p->exec_len + p->type_len + p->event_id_len + p->json_len + 3 + 22;
    qent_t *q;
    char *m;

    if (!c->ready) {
        snprintf(detail, detail_len, "%s", c->why);
        c->st.failed++;
        return CS_ERR_UNAVAILABLE;
    }
    if (p->answers != NULL) /* an answer: its own script call, exactly once across nodes */
        return answer_submit(c, p, done, detail, detail_len);
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
    q->key = q->type = m;
    q->type_len = p->type_len;
    memcpy(m, p->type, p->type_len);
    m[p->type_len] = ' ';
    m += p->type_len + 1;
    PUT(eid, eid_len, p->event_id, p->event_id_len);
    q->key_len = p->generated_id ? 0 : p->type_len + 1 + p->event_id_len;
#undef PUT
    q->ev = m; /* need has room: up to 20 digits and a newline before the JSON, a NUL after it */
    m += utoa(m, p->json_len);
    *m++ = '\n';
    q->json = m;
    q->json_len = p->json_len;
    memcpy(m, p->json, p->json_len);
    m[p->json_len] = '\0';
    q->ev_len = (size_t)(m + p->json_len - q->ev);
    q->ticket = p->ticket;
    if (done != NULL)
        q->done = *done;
    q->ttl = ttl_of(c, p->final);
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
    for (unk_t *u = c->unk; u != NULL; u = u->next)
        if (u->q->ticket == ticket)
            memset(&u->q->done, 0, sizeof(u->q->done));
}

/* ---- publishes whose outcome is unknown ---- */

/*
 * A script call whose reply never came may have stored its events or not. Its publishes are held, not
 * answered: once Redis is reachable again (and its clock read), its call's receipt is read (GET: the
 * script keeps its reply as text for RECEIPT_TTL_S, written in the same call as the events): there → ok with
 * its seq (or a duplicate's); not there → unavailable, which is then true for good, as the script stores
 * nothing after its deadline and Redis' clock is past it. (The event-id index would not do: events whose
 * event_id the node made are not in it.) At most UNKNOWN_MAX are
 * held, each at most 2 timeouts: then unavailable (counted, logged).
 */

static void unk_done(cs_cluster_t *c, unk_t *u, cs_err_t e, const cs_cmsg_result_t *res, const char *detail)
{
    DL_DELETE(c->unk, u);
    c->n_unk--;
    answer(c, u->q, e, res, detail, NULL);
    free(u);
}

static void unk_arm(cs_cluster_t *c)
{
    int64_t wait = 2 * (int64_t)c->timeout_ms, left;

    if (c->unk == NULL) {
        cs_timer_stop(&c->unk_timer);
        return;
    }
    left = c->unk->since + wait - cs_loop_now(c->loop);
    cs_timer_start(&c->unk_timer, left < 50 ? 50 : left);
}

static void unk_hold(cs_cluster_t *c, qent_t *q, uint64_t batch, size_t idx)
{
    unk_t *u;

    if (c->closing || c->n_unk >= UNKNOWN_MAX || (u = calloc(1, sizeof(*u))) == NULL) {
        if (!c->closing)
            c->st.unknown_overflow++;
        if (!c->closing)
            cs_log_error(
                "cluster: the publish of %s (%s) got no reply and %zu unknown outcomes are held already: "
                "answered unavailable",
                q->eid, q->exec, c->n_unk);
        answer(
            c, q, CS_ERR_UNAVAILABLE, NULL,
            "cluster: Redis did not answer: the outcome is unknown; a retry with the same event_id is stored "
            "once",
            NULL);
        return;
    }
    c->st.unknown++;
    u->c = c;
    u->q = q;
    u->batch = batch;
    u->idx = idx;
    u->since = cs_loop_now(c->loop);
    DL_APPEND(c->unk, u);
    c->n_unk++;
    if (!cs_timer_active(&c->unk_timer))
        unk_arm(c);
}

static void on_unk_reply(cs_redis_t *r, const redisReply *reply, void *data)
{
    unk_t *u = data;
    cs_cluster_t *c = u->c;
    cs_cmsg_result_t res = {0, 0, 0};

    (void)r;
    u->asking = 0;
    if (reply == NULL || c->closing)
        return; /* asked again once Redis is back (or answered by the longest wait) */
    if (reply->type == REDIS_REPLY_NIL) {
        c->st.unknown_refused++;
        unk_done(
            c, u, CS_ERR_UNAVAILABLE, NULL,
            "cluster: Redis did not answer in time and has not stored the event (nor will it: its deadline "
            "passed): not stored, retry");
        return;
    }
    if (reply->type != REDIS_REPLY_STRING || cs_cmsg_receipt(reply->str, reply->len, u->idx, &res) != 0) {
        c->st.bad_messages++;
        cs_log_error("cluster: the receipt of the script call that carried %s of %s could not be read: its "
                     "outcome stays unknown",
                     u->q->eid, u->q->exec);
        return;
    }
    if (res.duplicate)
        c->st.duplicates++;
    else
        c->st.published++;
    c->st.unknown_stored++;
    unk_done(c, u, CS_OK, &res, "");
}

/* Asks Redis about every held publish not being asked about. */
static void unk_ask(cs_cluster_t *c)
{
    char key[400];
    const char *argv[2];
    size_t lens[2];

    for (unk_t *u = c->unk; u != NULL; u = u->next) {
        if (u->asking)
            continue;
        lens[1] = receipt_key(c, u->batch, key, sizeof(key));
        argv[0] = "GET", argv[1] = key;
        lens[0] = 3;
        if (cs_redis_command(c->cmd, on_unk_reply, u, 2, argv, lens) != 0)
            return;
        u->asking = 1;
    }
}

/* The longest wait: what Redis could not be asked about in time is answered unavailable. */
static void on_unk_timer(cs_timer_t *t)
{
    cs_cluster_t *c = t->data;
    int64_t now = cs_loop_now(c->loop), wait = 2 * (int64_t)c->timeout_ms;
    size_t n = 0;
    unk_t *u, *tmp;

    DL_FOREACH_SAFE(c->unk, u, tmp)
    {
        if (now - u->since < wait)
            break;
        if (u->asking)
            continue; /* its HGET answers (or times out) within the timeout */
        n++;
        c->st.unknown_expired++;
        unk_done(c, u, CS_ERR_UNAVAILABLE, NULL,
                 "cluster: Redis did not answer and could not be asked since whether it stored the event: "
                 "not stored (the script stores nothing after its deadline), retry with the same event_id");
    }
    if (n > 0)
        cs_log_warn("cluster: %zu publishes without a reply could not be checked in Redis within %lld ms: "
                    "answered unavailable",
                    n, (long long)wait);
    unk_arm(c);
}

/* ---- after a reconnect: every cached execution checked against Redis ---- */

/*
 * Redis may have lost an execution (restarted empty: its meta hash is gone, or holds another epoch), and
 * the channel may have missed messages while it was down: each execution this node holds is read back
 * (HMGET epoch seq, RECHECK_PER_TURN per turn): another or no epoch → its history here is dropped (old
 * cursors and live subscribers get stream.gap); seqs past the ring's next → XRANGE fills them now.
 */

static void on_recheck(cs_redis_t *r, const redisReply *reply, void *data)
{
    rcq_t *q = data;
    cs_cluster_t *c = q->c;
    uint64_t epoch = 0, seq = 0, first, next;
    cs_exec_t *ex;
    fill_t *f;

    (void)r;
    if (reply == NULL || c->closing || (ex = cs_store_find(c->store, q->id, q->id_len)) == NULL)
        goto done; /* checked again at the next reconnect */
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) {
        c->st.bad_messages++;
        cs_log_error("cluster: Redis' answer to HMGET of %.*s's meta hash could not be read", (int)q->id_len,
                     q->id);
        goto done;
    }
    if (reply->element[0]->type == REDIS_REPLY_STRING)
        epoch = strtoull(reply->element[0]->str, NULL, 10);
    if (reply->element[1]->type == REDIS_REPLY_STRING)
        seq = strtoull(reply->element[1]->str, NULL, 10);
    if (cs_exec_epoch(ex) != q->epoch && epoch != cs_exec_epoch(ex))
        goto done; /* the channel brought another epoch meanwhile: newer than this answer */
    cs_exec_seqs(ex, &first, &next);
    if (epoch == 0) {
        /* Redis holds no history of it: what this ring holds is gone for every other node and cursor. */
        if (next > 1 && cs_store_rebase(c->store, q->id, q->id_len, cs_epoch_next())) /* logged there */
            c->st.rebased++;
        goto done;
    }
    if (epoch != cs_exec_epoch(ex)) {
        if (cs_store_rebase(c->store, q->id, q->id_len, epoch))
            c->st.rebased++;
        cs_exec_seqs(ex, &first, &next);
    }
    f = fill_get(c, q->id, q->id_len, 0);
    if (seq >= next && (f == NULL || !f->active)) {
        /* Events the channel missed: read now, not at the execution's next event. */
        if ((f = fill_get(c, q->id, q->id_len, 1)) != NULL && fill_start(c, f, epoch, next, seq) != 0 &&
            f->held == NULL)
            fill_free(c, f);
    }
done:
    free(q);
}

static void recheck_one(cs_cluster_t *c, const char *id, size_t id_len)
{
    cs_exec_t *ex = cs_store_find(c->store, id, id_len);
    rcq_t *q;
    char key[300];
    const char *argv[4];
    size_t lens[4];

    if (ex == NULL || (q = malloc(sizeof(*q) + id_len + 1)) == NULL)
        return;
    q->c = c;
    q->epoch = cs_exec_epoch(ex);
    q->id_len = id_len;
    memcpy(q->id, id, id_len);
    q->id[id_len] = '\0';
    lens[1] = (size_t)snprintf(key, sizeof(key), "%s{x:%.*s}:m", c->prefix, (int)id_len, id);
    argv[0] = "HMGET", argv[1] = key, argv[2] = "epoch", argv[3] = "seq";
    lens[0] = 5, lens[2] = 5, lens[3] = 3;
    if (lens[1] >= sizeof(key) || cs_redis_command(c->cmd, on_recheck, q, 4, argv, lens) != 0) {
        free(q);
        return;
    }
    c->st.rechecks++;
}

static void recheck_clear(cs_cluster_t *c)
{
    for (size_t i = c->rc_pos; i < c->rc_n; i++)
        free(c->rc_ids[i]);
    free(c->rc_ids);
    c->rc_ids = NULL;
    c->rc_n = c->rc_pos = 0;
    cs_timer_stop(&c->rc_timer);
}

static void recheck_collect(cs_exec_t *ex, void *data)
{
    cs_cluster_t *c = data;
    size_t len;
    const char *id = cs_exec_id(ex, &len);
    char *dup;

    if (c->rc_ids == NULL || (dup = strndup(id, len)) == NULL)
        return;
    c->rc_ids[c->rc_n++] = dup;
}

static void on_recheck_timer(cs_timer_t *t)
{
    cs_cluster_t *c = t->data;
    size_t end = c->rc_pos + RECHECK_PER_TURN < c->rc_n ? c->rc_pos + RECHECK_PER_TURN : c->rc_n;

    if (!c->ready) {
        recheck_clear(c); /* started again when it is ready again */
        return;
    }
    for (; c->rc_pos < end; c->rc_pos++) {
        recheck_one(c, c->rc_ids[c->rc_pos], strlen(c->rc_ids[c->rc_pos]));
        free(c->rc_ids[c->rc_pos]);
    }
    if (c->rc_pos < c->rc_n)
        cs_timer_start(&c->rc_timer, 0);
    else
        recheck_clear(c);
}

static void count_exec(cs_exec_t *ex, void *data)
{
    (void)ex;
    (*(size_t *)data)++;
}

/* Every execution this node holds, checked from the next turn on. */
static void recheck_start(cs_cluster_t *c)
{
    size_t n = 0;

    recheck_clear(c);
    cs_store_each(c->store, count_exec, &n);
    if (n == 0 || (c->rc_ids = calloc(n, sizeof(*c->rc_ids))) == NULL)
        return;
    cs_store_each(c->store, recheck_collect, c);
    if (c->rc_n > 0)
        cs_timer_start(&c->rc_timer, 0);
    else
        recheck_clear(c);
}

/* Redis' clock, read once the command connection is up: the script's deadlines are in it. */
static void on_time(cs_redis_t *r, const redisReply *reply, void *data)
{
    cs_cluster_t *c = data;

    (void)r;
    if (reply == NULL || c->closing)
        return;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_STRING || reply->element[1]->type != REDIS_REPLY_STRING) {
        c->st.bad_messages++;
        cs_redis_reset(c->cmd, "TIME answered in another form");
        return;
    }
    c->clock_off = (int64_t)strtoll(reply->element[0]->str, NULL, 10) * 1000 +
                   strtoll(reply->element[1]->str, NULL, 10) / 1000 - cs_loop_now(c->loop);
    c->clock_ok = 1;
    update_gate(c);
    unk_ask(c);
}

/* ---- the connections ---- */

static void update_gate(cs_cluster_t *c)
{
    int ready = cs_redis_up(c->cmd) && cs_redis_up(c->sub) && c->subscribed && c->clock_ok;

    if (ready && c->ready)
        return;
    if (ready) {
        c->why[0] = '\0';
        cs_store_set_refusal(c->store, CS_OK, NULL);
        cs_log_info("cluster: node %s ready on Redis %s (prefix %s)", c->node, c->addr, c->prefix);
        c->ready = 1;
        recheck_start(c); /* what Redis lost, or the channel missed, while the node was not ready */
        warm_start(c);    /* executions this node has not heard of: the list and their statuses */
        unk_ask(c);
        history_pump(c); /* subscribers held while Redis was away */
        nodes_report(c);
        return;
    } else {
        const char *err = !cs_redis_up(c->cmd)   ? cs_redis_error(c->cmd)
                          : !cs_redis_up(c->sub) ? cs_redis_error(c->sub)
                          : !c->subscribed       ? "subscribing to its channel"
                                                 : "reading its clock";
        snprintf(c->why, sizeof(c->why), "cluster: Redis %.80s is not reachable (%.100s): not stored, retry",
                 c->addr, err[0] ? err : "connection lost");
        cs_store_set_refusal(c->store, CS_ERR_UNAVAILABLE, c->why);
        if (c->ready)
            cs_log_warn("%s", c->why);
    }
    c->ready = ready;
}

/* SCRIPT LOAD's answer: the SHA1 EVALSHA names the script by (data: where it goes, c->sha or c->asha). */
static void on_script_loaded(cs_redis_t *r, const redisReply *reply, void *data)
{
    char *sha = data;

    if (reply == NULL)
        return;
    if (reply->type != REDIS_REPLY_STRING || reply->len != 40) {
        cs_log_error("cluster: Redis did not load the publish script (%.200s)",
                     reply->type == REDIS_REPLY_ERROR ? reply->str : "another reply");
        cs_redis_reset(r, "SCRIPT LOAD failed");
        return;
    }
    memcpy(sha, reply->str, 40);
    sha[40] = '\0';
}

static const char *answer_script_get(void);

static void on_cmd_state(cs_redis_t *r, int up, const char *why, void *data)
{
    cs_cluster_t *c = data;
    c->clock_ok = 0;
    if (!up) {
        c->st.reconnects++;
        cs_log_warn("cluster: the command connection to Redis %s is down: %s", c->addr, why);
    } else {
        /* The scripts are loaded before anything else is sent on the connection, and the node is ready
         * only with TIME's answer, which comes after theirs: every EVALSHA finds its script (a Redis whose
         * cache was flushed meanwhile answers NOSCRIPT, and the connection is made again: a publish is
         * never sent again on its own, which could let a later one overtake it). */
        const char *argv[3] = {"SCRIPT", "LOAD", cs_cluster_script};
        size_t lens[3] = {6, 4, strlen(cs_cluster_script)};
        const char *ans = answer_script_get();
        c->sha[0] = c->asha[0] = '\0';
        if (cs_redis_command(r, on_script_loaded, c->sha, 3, argv, lens) != 0) {
            cs_redis_reset(r, "cannot send SCRIPT LOAD");
        } else {
            if (ans != NULL) {
                argv[2] = ans, lens[2] = strlen(ans);
                if (cs_redis_command(r, on_script_loaded, c->asha, 3, argv, lens) != 0)
                    cs_redis_reset(r, "cannot send SCRIPT LOAD");
            }
            argv[0] = "TIME", lens[0] = 4;
            if (cs_redis_up(r) && cs_redis_command(r, on_time, c, 1, argv, lens) != 0)
                cs_redis_reset(r, "cannot send TIME");
        }
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
    c->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 2000;
    cs_timer_init(&c->unk_timer, loop, on_unk_timer, c);
    cs_timer_init(&c->rc_timer, loop, on_recheck_timer, c);
    cs_timer_init(&c->h_timer, loop, on_history_timer, c);
    cs_timer_init(&c->nodes_timer, loop, on_nodes_timer, c);
    c->retain_s = o->retain_s;
    if (o->node == NULL && gethostname(host, sizeof(host) - 1) != 0)
        snprintf(host, sizeof(host), "node");
    c->node = strdup(o->node != NULL ? o->node : host);
    c->boot = cs_epoch_next();
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
    c->closing = 1;
    cs_redis_free(c->sub); /* its NULL replies may touch c: it is still whole */
    cs_redis_free(c->cmd); /* fills in flight get NULL: they insert what they held */
    while (c->unk != NULL)
        unk_done(c, c->unk, CS_ERR_UNAVAILABLE, NULL,
                 "cluster: shutting down before Redis said whether it stored the event: retry with the same "
                 "event_id");
    cs_timer_stop(&c->unk_timer);
    cs_timer_stop(&c->nodes_timer);
    recheck_clear(c);
    warm_clear(c);
    history_clear(c);
    HASH_ITER(hh, c->fills, f, t)
    {
        fill_free(c, f);
    }
    cs_defer_cancel(c->loop, &c->flush);
    free(c->q);
    free(c->wb);
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
    st->unknown_held = c->n_unk;
    st->held_bytes = c->held_bytes;
    st->history_waiting = c->n_hwait;
    cs_redis_stats_t a, b;
    cs_redis_stats(c->cmd, &a);
    cs_redis_stats(c->sub, &b);
    st->timeouts = a.timeouts + b.timeouts;
}

/* ---- every node's figures, from any node (docs/cluster.md "What operators see") ---- */

/* The reply of a write whose outcome changes nothing here (the next report writes again). */
static void on_report_written(cs_redis_t *r, const redisReply *reply, void *data)
{
    (void)r;
    (void)reply;
    (void)data;
}

static void on_nodes(cs_redis_t *r, const redisReply *reply, void *data)
{
    cs_cluster_t *c = data;
    int64_t now = redis_now(c);

    (void)r;
    c->nodes_reading = 0;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements % 2 != 0)
        return; /* the last read stays; their ages grow */
    c->n_nodes = 0;
    for (size_t i = 0; i + 1 < reply->elements; i += 2) {
        const redisReply *k = reply->element[i], *v = reply->element[i + 1];
        cs_cluster_node_t nd;
        if (k == NULL || v == NULL || k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
            k->len >= sizeof(nd.name) || !cs_valid_execution_id(k->str, k->len) ||
            cs_cmsg_node(v->str, v->len, &nd.r) != 0) {
            c->st.bad_messages++;
            continue;
        }
        if (now > 0 && nd.r.ms + NODES_FORGET_MS < (uint64_t)now) { /* gone for an hour: forgotten */
            char key[128];
            const char *argv[3] = {"HDEL", key, k->str};
            size_t lens[3] = {4, 0, k->len};
            lens[1] = (size_t)snprintf(key, sizeof(key), "%snodes", c->prefix);
            (void)cs_redis_command(c->cmd, on_report_written, NULL, 3, argv, lens);
            continue;
        }
        if (c->n_nodes == CS_CLUSTER_NODES_MAX)
            continue; /* (documented: the first CS_CLUSTER_NODES_MAX Redis lists) */
        memcpy(nd.name, k->str, k->len);
        nd.name[k->len] = '\0';
        c->nodes[c->n_nodes++] = nd;
    }
}

/* Writes this node's report (HSET, the hash's EXPIRE) and reads every node's (HGETALL), pipelined. */
static void nodes_report(cs_cluster_t *c)
{
    char key[128], val[256];
    cs_store_stats_t ss;
    cs_cluster_stats_t st;
    size_t kl;
    int64_t now = redis_now(c);

    cs_timer_start(&c->nodes_timer, NODES_EVERY_MS);
    if (!c->ready || now <= 0 || c->nodes_reading)
        return;
    cs_store_stats(c->store, &ss);
    cs_cluster_stats(c, &st);
    kl = (size_t)snprintf(key, sizeof(key), "%snodes", c->prefix);
    int vl = snprintf(val, sizeof(val), "1 %lld %llu %llu %llu %llu %llu %zu %zu", (long long)now,
                      (unsigned long long)st.published, (unsigned long long)st.failed,
                      (unsigned long long)st.inserted, (unsigned long long)st.lost,
                      (unsigned long long)st.history_failed, ss.subscribers, ss.executions);
    const char *hset[4] = {"HSET", key, c->node, val};
    size_t hl[4] = {4, kl, strlen(c->node), (size_t)vl};
    char ttl[24];
    snprintf(ttl, sizeof(ttl), "%u", ttl_of(c, 0));
    const char *exp[3] = {"EXPIRE", key, ttl};
    size_t el[3] = {6, kl, strlen(ttl)};
    const char *get[2] = {"HGETALL", key};
    size_t gl[2] = {7, kl};
    if (cs_redis_command(c->cmd, on_report_written, NULL, 4, hset, hl) != 0 ||
        cs_redis_command(c->cmd, on_report_written, NULL, 3, exp, el) != 0 ||
        cs_redis_command(c->cmd, on_nodes, c, 2, get, gl) != 0)
        return; /* not connected: the next turn of the timer */
    c->nodes_reading = 1;
}

static void on_nodes_timer(cs_timer_t *t)
{
    nodes_report(t->data);
}

size_t cs_cluster_nodes(const cs_cluster_t *c, cs_cluster_node_t *out, size_t max, int64_t *now_ms)
{
    size_t n = 0;

    *now_ms = c != NULL ? redis_now(c) : 0;
    for (size_t i = 0; c != NULL && i < c->n_nodes && n < max; i++)
        out[n++] = c->nodes[i];
    return n;
}

/* ---- answers: exactly once across nodes (human input, docs/cluster.md) ---- */

/*
 * Put in front of the publish script for an answer taken on an answer route: one call decides whether the
 * request is still open and stores the answer's event, atomically. KEYS[1]: the execution's meta hash,
 * which also holds, per answered request, the field "a <request event_id>" = the event_id of the answer
 * that closed it (so it expires with the execution). ARGV: the request's event_id, the answer's event_id,
 * the epoch the answering node knows the execution by, then the publish script's own arguments (one
 * event), which it reads once these three are taken off. A request answered by another event, or an
 * execution whose history in Redis is not the one the node answered in (Redis lost its data), is refused
 * with an error reply "CONFLICT ..." and nothing is stored; the same answer again (its event_id) goes on to
 * the publish script, which finds it in its index: a duplicate.
 */
const char cs_cluster_answer_check[] =
    "local rid, aid, aep = ARGV[1], ARGV[2], ARGV[3]\n"
    "for k = 1, 3 do table.remove(ARGV, 1) end\n"
    "if redis.call('HGET', KEYS[1], 'epoch') ~= aep then\n"
    "  return redis.error_reply('CONFLICT the execution has another history in Redis now: request ' .. rid "
    ".. ' is not open')\n"
    "end\n"
    "local got = redis.call('HGET', KEYS[1], 'a ' .. rid)\n"
    "if got and got ~= aid then\n"
    "  return redis.error_reply('CONFLICT request ' .. rid .. ' was already answered (event ' .. got .. "
    "')')\n"
    "end\n"
    "if not got then redis.call('HSET', KEYS[1], 'a ' .. rid, aid) end\n";

/* The answer check followed by the publish script (built once). */
static char *answer_script;

static const char *answer_script_get(void)
{
    if (answer_script == NULL) {
        size_t n1 = strlen(cs_cluster_answer_check), n2 = strlen(cs_cluster_script);
        if ((answer_script = malloc(n1 + n2 + 1)) == NULL)
            return NULL;
        memcpy(answer_script, cs_cluster_answer_check, n1);
        memcpy(answer_script + n1, cs_cluster_script, n2 + 1);
    }
    return answer_script;
}

/* An answer in flight: a batch of one (on c->batches, so that forget and shutdown treat it as any), and
 * the request it answers. b must stay first: whoever frees a batch frees this. */
typedef struct answer_call {
    batch_t b;
    qent_t *one;
    char rid[CS_EVENT_ID_MAX + 1];
} answer_call_t;

/* Replies to one answer that was not stored: as answer() does, without counting it as a failed publish
 * when Redis refused it as a conflict. */
static void answer_refused(cs_cluster_t *c, qent_t *q, cs_err_t e, const char *detail)
{
    cs_publish_t pub;

    if (e == CS_ERR_CONFLICT) {
        c->st.answer_conflicts++;
        if (q->done.fn != NULL) {
            memset(&pub, 0, sizeof(pub));
            pub.ticket = q->ticket;
            snprintf(pub.event_id, sizeof(pub.event_id), "%s", q->eid);
            q->done.fn(q->done.data, e, &pub, detail);
        }
        free(q);
        return;
    }
    answer(c, q, e, NULL, detail, NULL);
}

static void on_answer(cs_redis_t *r, const redisReply *reply, void *data)
{
    answer_call_t *a = data;
    cs_cluster_t *c = a->b.c;
    qent_t *q = a->one;
    cs_cmsg_result_t res;
    char detail[300];

    (void)r;
    DL_DELETE(c->batches, &a->b);
    c->st.in_flight -= a->b.n;
    if (reply == NULL) {
        snprintf(detail, sizeof(detail),
                 "cluster: Redis did not answer (%.120s): the outcome of the answer is unknown; ask the "
                 "execution's status before answering again",
                 cs_redis_error(c->cmd));
        answer_refused(c, q, CS_ERR_UNAVAILABLE, detail);
    } else if (reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "CONFLICT ", 9) == 0) {
        snprintf(detail, sizeof(detail), "%.250s", reply->str + 9);
        answer_refused(c, q, CS_ERR_CONFLICT, detail);
    } else if (reply->type == REDIS_REPLY_ERROR) {
        snprintf(detail, sizeof(detail), "cluster: Redis refused the answer: %.200s", reply->str);
        cs_log_error("%s", detail);
        answer_refused(c, q, CS_ERR_UNAVAILABLE, detail);
        if (strncmp(reply->str, "NOSCRIPT", 8) == 0)
            cs_redis_reset(c->cmd, "the answer script is not loaded in Redis (NOSCRIPT): loaded again");
    } else if (cs_cmsg_script_reply(reply, 1, &res) != 0) {
        c->st.bad_messages++;
        snprintf(detail, sizeof(detail), "cluster: Redis' answer to a publish could not be read");
        cs_log_error("%s", detail);
        answer_refused(c, q, CS_ERR_UNAVAILABLE, detail);
    } else {
        if (res.duplicate) {
            c->st.duplicates++;
        } else {
            c->st.published++;
            c->st.answers++;
            store_own(c, q, &res, NULL); /* the request closes; runtimes awaiting it here get the push */
        }
        answer(c, q, CS_OK, &res, "", a->rid);
    }
    free(a->b.e);
    free(a);
}

/* An answer: queued as any publish (cluster_submit builds its entry), then taken off the queue and sent at
 * once with the answer check in front. (Nothing queued in this turn can be the request: an answer is taken
 * only for a request this node's store holds, which Redis gave it already.) */
static cs_err_t answer_submit(cs_cluster_t *c, const cs_store_remote_pub_t *p, const cs_store_done_t *done,
                              char *detail, size_t detail_len)
{
    cs_store_remote_pub_t one = *p;
    answer_call_t *a;
    char ep[24], mkey[320], maxlen[24], cand[24], deadline[24], receipt[400], ttl_s[16], keep_s[16];
    char fld[CS_TYPE_MAX + CS_EVENT_ID_MAX + 3];
    const char *argv[20];
    size_t lens[20];
    qent_t *q;
    cs_err_t e;
    int rc;

    if (answer_script_get() == NULL)
        goto nomem;
    if (strlen(p->answers) > CS_EVENT_ID_MAX || strlen(c->prefix) + p->exec_len + 8 > sizeof(mkey)) {
        snprintf(detail, detail_len, "an answer to a request id or execution id too long");
        return CS_ERR_INVALID_FIELD;
    }
    if ((a = calloc(1, sizeof(*a))) == NULL || (a->b.e = malloc(sizeof(*a->b.e))) == NULL) {
        free(a);
        goto nomem;
    }
    one.answers = NULL;
    e = cluster_submit(c, &one, done, detail, detail_len);
    if (e != CS_PENDING) {
        free(a->b.e);
        free(a);
        return e;
    }
    q = c->q[--c->nq]; /* the entry just queued: sent here, not by the turn's flush */
    snprintf(a->rid, sizeof(a->rid), "%s", p->answers);
    snprintf(ep, sizeof(ep), "%llu", (unsigned long long)p->answers_epoch);
    snprintf(mkey, sizeof(mkey), "%s{x:%.*s}:m", c->prefix, (int)q->exec_len, q->exec);
    snprintf(maxlen, sizeof(maxlen), "%zu", c->ring_events);
    snprintf(cand, sizeof(cand), "%llu", (unsigned long long)cs_epoch_next());
    snprintf(deadline, sizeof(deadline), "%lld", (long long)(redis_now(c) + c->timeout_ms / 2));
    a->b.id = ++c->batch_seq;
    receipt_key(c, a->b.id, receipt, sizeof(receipt));
    snprintf(ttl_s, sizeof(ttl_s), "%u", q->ttl);
    snprintf(keep_s, sizeof(keep_s), "%u", ttl_of(c, 0));
    if (c->asha[0] != '\0')
        argv[0] = "EVALSHA", argv[1] = c->asha;
    else
        argv[0] = "EVAL", argv[1] = answer_script;
    argv[2] = "1", argv[3] = mkey;
    argv[4] = a->rid, argv[5] = q->eid, argv[6] = ep;
    /* the publish script's own (send_batch), for one event: */
    argv[7] = c->prefix, argv[8] = maxlen, argv[9] = c->chan, argv[10] = cand, argv[11] = deadline;
    argv[12] = receipt, argv[13] = keep_s, argv[14] = maxlen;
    /* one group of one event: its index field a line, or "" for an id the node made */
    snprintf(fld, sizeof(fld), "%.*s%s", (int)q->key_len, q->key, q->key_len > 0 ? "\n" : "");
    argv[15] = q->exec, argv[16] = ttl_s, argv[17] = "1", argv[18] = fld, argv[19] = q->ev;
    for (size_t i = 0; i < 20; i++)
        lens[i] = strlen(argv[i]);
    lens[5] = q->eid_len, lens[15] = q->exec_len, lens[19] = q->ev_len;
    a->one = q;
    a->b.c = c;
    a->b.n = 1;
    a->b.e[0] = q;
    rc = cs_redis_command(c->cmd, on_answer, a, 20, argv, lens);
    if (rc == 0) {
        DL_APPEND(c->batches, &a->b);
        c->st.in_flight++;
        c->st.batches++;
        return CS_PENDING;
    }
    /* Not sent: refused now (its completion is not called: the caller answers the error). */
    snprintf(detail, detail_len, "%s",
             rc == -ENOMEM ? "cluster: out of memory" : "cluster: Redis is not reachable: not stored, retry");
    c->st.failed++;
    free(q);
    free(a->b.e);
    free(a);
    return rc == -ENOMEM ? CS_ERR_INTERNAL : CS_ERR_UNAVAILABLE;
nomem:
    snprintf(detail, detail_len, "out of memory");
    return CS_ERR_INTERNAL;
}

/* ---- history older than the ring: read from Redis when a subscriber starts (docs/cluster.md) ---- */

/* Older events read per subscriber beyond ring_events (Redis keeps some more: MINID ~ trims whole stream
 * nodes). */
#define HISTORY_EXTRA 128

/* The epoch and the newest entries up to ARGV[1] ("<seq>-0" or "+"), at most ARGV[2] of them, newest first;
 * an entry's id is the last seq it holds, so the one holding ARGV[1]'s seq and newer ones comes first
 * (XRANGE's exclusive start: Redis 6.2). */
const char cs_cluster_history_script[] =
    "local e = redis.call('HGET', KEYS[1], 'epoch')\n"
    "if not e then return {} end\n"
    "local r = redis.call('XREVRANGE', KEYS[2], ARGV[1], '-', 'COUNT', ARGV[2])\n"
    "if ARGV[1] ~= '+' then\n"
    "  local a = redis.call('XRANGE', KEYS[2], '(' .. ARGV[1], '+', 'COUNT', 1)\n"
    "  if a[1] then table.insert(r, 1, a[1]) end\n"
    "end\n"
    "return {e, r}\n";

/* The events of XREVRANGE's entries (newest first), oldest first in a new array: those up to seq end, each
 * after the one before, the newest max of them; *n of them. NULL with *n 0 when there are none, NULL with
 * *n > 0 when out of memory. Entries that cannot be read are counted and left out. */
static cs_hist_event_t *rev_events(cs_cluster_t *c, const redisReply *ent, uint64_t end, size_t max,
                                   size_t *n)
{
    cs_hist_event_t *ev;
    size_t total = 0, k = 0;

    for (size_t i = 0; i < ent->elements; i++) {
        int cnt = cs_cmsg_xrange_count(ent, i);
        if (cnt > 0)
            total += (size_t)cnt;
        else
            c->st.bad_messages++;
    }
    *n = total;
    if (total == 0 || (ev = calloc(total, sizeof(*ev))) == NULL)
        return NULL;
    for (size_t i = ent->elements; i > 0; i--) {
        int cnt = cs_cmsg_xrange_count(ent, i - 1);
        if (cnt > 0)
            cs_cmsg_xrange_events(ent, i - 1, c->xev);
        for (int j = 0; j < cnt; j++) {
            const cs_cmsg_entry_t *e = &c->xev[j];
            if (e->seq > end || (k > 0 && e->seq <= ev[k - 1].seq))
                continue;
            ev[k].seq = e->seq;
            ev[k].json = e->json;
            ev[k].json_len = e->json_len;
            k++;
        }
    }
    if (k > max) {
        memmove(ev, ev + (k - max), max * sizeof(*ev));
        k = max;
    }
    *n = k;
    return ev;
}

/* History reads sent at once, at most (more wait in c->hwait and go out as replies come). */
#define HISTORY_IN_FLIGHT 32
/* Reads of one subscriber's history that may get no answer (connection lost, no reply in time) before it is
 * given up (stream.gap, long-poll 503); Redis unreachable at send time does not count: it waits. */
#define HISTORY_TRIES 8
/* A held read answered with a transient error (LOADING, BUSY, ...) is sent again after this long. */
#define HISTORY_RETRY_MS 1000

/* A read for one held subscriber: in flight, or waiting in c->hwait for Redis. */
typedef struct hload {
    cs_cluster_t *c;
    cs_sub_hold_t *hold;
    int fresh;      /* the node had no event of the execution when the read was sent */
    int waiting;    /* in c->hwait */
    unsigned tries; /* reads of it that got no answer */
    int64_t due;    /* cs_loop_now before which it is not sent again (after a transient error) */
    uint64_t end;   /* the newest seq the read wants (UINT64_MAX: all) */
    struct hload *prev, *next;
    size_t id_len;
    char id[];
} hload_t;

static void history_pump(cs_cluster_t *c);

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

/* The read is given up: the subscriber is positioned against the ring alone (stream.gap where that is short;
 * a long-poll answers 503). Only for a read Redis answered in a form that cannot be read, one it dropped
 * HISTORY_TRIES times, out of memory and at shutdown: Redis merely away is waited for (history_wait). */
static void history_fail(hload_t *l, const char *why)
{
    if (!l->c->closing && cs_sub_hold_open(l->hold)) {
        l->c->st.history_failed++;
        cs_log_warn(
            "cluster: the history of %s older than this node's ring could not be read from Redis (%s): "
            "a subscriber resuming before the ring gets stream.gap (long-poll: 503)",
            l->id, why);
    }
    cs_sub_release(l->hold, 0, NULL, 0, 1);
    free(l);
}

/* Redis is away (unreachable, not answering, loading): the subscriber stays held (heartbeats go on, nothing
 * handed out) and its read goes out again once the node is ready (history_pump). */
static void history_wait(cs_cluster_t *c, hload_t *l, const char *why, int away)
{
    if (away && !c->hwait_logged) {
        cs_log_warn("cluster: reading history older than this node's ring waits for Redis (%s): subscribers "
                    "resuming before the ring are held, with heartbeats, until it answers",
                    why);
        c->hwait_logged = 1;
    }
    if (away)
        c->st.history_waited++;
    l->waiting = 1;
    DL_APPEND(c->hwait, l);
    c->n_hwait++;
    if (!cs_timer_active(&c->h_timer))
        cs_timer_start(&c->h_timer, HISTORY_RETRY_MS);
}

static void history_unwait(cs_cluster_t *c, hload_t *l)
{
    DL_DELETE(c->hwait, l);
    l->prev = l->next = NULL;
    l->waiting = 0;
    c->n_hwait--;
}

static void on_history(cs_redis_t *r, const redisReply *reply, void *data);

/* Sends l's read (the epoch and the newest entries older than the ring as it is now), or makes it wait. */
static void history_send(cs_cluster_t *c, hload_t *l)
{
    char m[300], s[300], end[32], count[24];
    const char *argv[7];
    size_t lens[7];
    uint64_t first = 1, next = 1;
    cs_exec_t *ex;

    if (!c->ready || c->h_in_flight >= HISTORY_IN_FLIGHT) {
        history_wait(c, l, c->ready ? "reads in flight" : c->why, !c->ready);
        return;
    }
    if ((ex = cs_store_find(c->store, l->id, l->id_len)) != NULL)
        cs_exec_seqs(ex, &first, &next);
    l->fresh = next == 1;
    l->end = l->fresh ? UINT64_MAX : first - 1;
    snprintf(m, sizeof(m), "%s{x:%s}:m", c->prefix, l->id);
    snprintf(s, sizeof(s), "%s{x:%s}:s", c->prefix, l->id);
    if (l->fresh)
        snprintf(end, sizeof(end), "+");
    else
        snprintf(end, sizeof(end), "%llu-0", (unsigned long long)(first - 1));
    snprintf(count, sizeof(count), "%zu", c->ring_events + HISTORY_EXTRA);
    argv[0] = "EVAL", argv[1] = cs_cluster_history_script, argv[2] = "2", argv[3] = m, argv[4] = s;
    argv[5] = end, argv[6] = count;
    for (int i = 0; i < 7; i++)
        lens[i] = strlen(argv[i]);
    if (cs_redis_command(c->cmd, on_history, l, 7, argv, lens) != 0) {
        history_wait(c, l, "cannot send", 1);
        return;
    }
    c->h_in_flight++;
}

/* Sends what waits (HISTORY_IN_FLIGHT at once) while the node is ready; drops the holds whose subscriber
 * closed meanwhile. */
static void history_pump(cs_cluster_t *c)
{
    int64_t now = cs_loop_now(c->loop);
    size_t sent = 0;
    hload_t *l, *t;

    DL_FOREACH_SAFE(c->hwait, l, t)
    {
        if (!cs_sub_hold_open(l->hold)) {
            history_unwait(c, l);
            cs_sub_release(l->hold, 0, NULL, 0, 0);
            free(l);
            continue;
        }
        if (!c->ready || c->h_in_flight >= HISTORY_IN_FLIGHT)
            continue; /* (the rest of the list is still swept of closed ones) */
        if (l->due > now)
            continue;
        history_unwait(c, l);
        history_send(c, l);
        if (l->waiting)
            break; /* could not be sent: the next pump */
        sent++;
    }
    if (sent > 0 && c->hwait_logged && c->n_hwait == 0) {
        cs_log_info("cluster: Redis answers again: the held history reads went out");
        c->hwait_logged = 0;
    }
    if (c->n_hwait == 0)
        cs_timer_stop(&c->h_timer);
    else if (!cs_timer_active(&c->h_timer))
        cs_timer_start(&c->h_timer, HISTORY_RETRY_MS);
}

static void on_history_timer(cs_timer_t *t)
{
    history_pump(t->data);
}

static int history_transient(const redisReply *reply)
{
    static const char *const kinds[] = {"LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN"};
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
        if (reply->len >= strlen(kinds[i]) && memcmp(reply->str, kinds[i], strlen(kinds[i])) == 0)
            return 1;
    return 0;
}

static void on_history(cs_redis_t *r, const redisReply *reply, void *data)
{
    hload_t *l = data;
    cs_cluster_t *c = l->c;
    cs_hist_event_t *ev = NULL;
    size_t k = 0;
    uint64_t epoch = 0;
    const redisReply *ent;

    (void)r;
    c->h_in_flight--;
    if (!cs_sub_hold_open(l->hold)) { /* its subscriber left: nothing to give */
        cs_sub_release(l->hold, 0, NULL, 0, 0);
        free(l);
        if (reply != NULL)
            history_pump(c);
        return;
    }
    if (reply == NULL && !c->closing && ++l->tries < HISTORY_TRIES) {
        /* Lost with the connection (or no reply in time): sent again once the node is ready again. */
        history_wait(c, l, cs_redis_error(c->cmd)[0] ? cs_redis_error(c->cmd) : "no answer", 1);
        return;
    }
    if (reply != NULL && reply->type == REDIS_REPLY_ERROR && !c->closing && history_transient(reply)) {
        l->due = cs_loop_now(c->loop) + HISTORY_RETRY_MS;
        history_wait(c, l, reply->str, 1);
        history_pump(c);
        return;
    }
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        history_fail(l, reply == NULL ? (c->closing ? "shutting down" : "no answer, again")
                        : reply->type == REDIS_REPLY_ERROR ? reply->str
                                                           : "an answer that is not an array");
        history_pump(c);
        return;
    }
    c->st.history_reads++;
    if (reply->elements == 0) { /* Redis has no such execution */
        cs_sub_release(l->hold, 0, NULL, 0, 0);
        free(l);
        history_pump(c);
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
        history_pump(c);
        return;
    }
    if ((ev = rev_events(c, ent, l->end, c->ring_events + HISTORY_EXTRA, &k)) == NULL && k > 0) {
        history_fail(l, "out of memory");
        history_pump(c);
        return;
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
    history_pump(c);
}

/* The store's word that a subscriber opened on an execution: held while what its start needs of the history
 * is read from Redis (one script call: the epoch and the newest entries older than the ring, atomically),
 * and while Redis is away (history_wait). */
static void history_opened(void *data, cs_sub_t *sub, const cs_start_t *start)
{
    cs_cluster_t *c = data;
    size_t id_len;
    const char *id = cs_exec_id(sub->exec, &id_len);
    hload_t *l;

    if (c->closing || !history_needed(sub, start) || id_len > 200)
        return;
    if ((l = calloc(1, sizeof(*l) + id_len + 1)) == NULL)
        return; /* positioned against the ring alone (stream.gap where it is short) */
    if ((l->hold = cs_sub_hold(sub, start)) == NULL) {
        free(l);
        return;
    }
    l->c = c;
    l->id_len = id_len;
    memcpy(l->id, id, id_len + 1);
    if (c->n_hwait > 0 && c->ready)
        history_pump(c); /* those waiting first */
    history_send(c, l);
}

/* Gives up every read still waiting (shutdown). */
static void history_clear(cs_cluster_t *c)
{
    hload_t *l, *t;

    DL_FOREACH_SAFE(c->hwait, l, t)
    {
        history_unwait(c, l);
        history_fail(l, "shutting down");
    }
    cs_timer_stop(&c->h_timer);
}

/* ---- executions this node has not heard of (docs/cluster.md "The list of executions") ---- */

/* Executions read from the sorted set P execs when the node becomes ready, newest first, at most. */
#define WARM_MAX_S "1000"
/* Their histories read at once, at most (each a script call of ring_events entries). */
#define WARM_IN_FLIGHT 8

typedef struct warm {
    cs_cluster_t *c;
    size_t id_len;
    char id[];
} warm_t;

static void warm_next(cs_cluster_t *c);

static void warm_clear(cs_cluster_t *c)
{
    for (size_t i = 0; i < c->warm_n; i++)
        free(c->warm_ids[i]);
    free(c->warm_ids);
    c->warm_ids = NULL;
    c->warm_n = c->warm_pos = 0;
}

static void on_trim(cs_redis_t *r, const redisReply *reply, void *data)
{
    (void)r, (void)data;
    if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
        cs_log_error("cluster: trimming the list of executions in Redis failed: %s", reply->str);
}

/* One execution's newest events, into a ring that is still empty (as a status read's history would). */
static void on_warm_one(cs_redis_t *r, const redisReply *reply, void *data)
{
    warm_t *w = data;
    cs_cluster_t *c = w->c;
    uint64_t epoch = 0, first = 1, next = 1;
    const redisReply *ent;
    cs_exec_t *ex;

    (void)r;
    c->warm_in_flight--;
    if (reply == NULL || c->closing) {
        c->warm_failed = 1; /* this reading is not done: the next one starts from the same time */
        free(w);
        return;
    }
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
        reply->element[0]->type == REDIS_REPLY_STRING && reply->element[0]->len < 24) {
        char buf[24];
        memcpy(buf, reply->element[0]->str, reply->element[0]->len);
        buf[reply->element[0]->len] = '\0';
        epoch = strtoull(buf, NULL, 10);
    }
    ent = reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 ? reply->element[1] : NULL;
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 0) {
        c->st.warm_gone++; /* its keys expired: the sorted set is trimmed at the next start */
    } else if (epoch == 0 || ent == NULL || ent->type != REDIS_REPLY_ARRAY) {
        c->st.bad_messages++;
        cs_log_error("cluster: Redis' answer to the history of %s could not be read", w->id);
    } else {
        ex = cs_store_find(c->store, w->id, w->id_len);
        if (ex != NULL)
            cs_exec_seqs(ex, &first, &next);
        /* Only into a ring that is still empty: one that took events meanwhile has them from the channel
         * (and its older ones come with its first subscriber). XREVRANGE: newest first. */
        if (next == 1 && fill_get(c, w->id, w->id_len, 0) == NULL) {
            size_t n;
            cs_hist_event_t *ev = rev_events(c, ent, UINT64_MAX, c->ring_events, &n);
            if (ev == NULL && n > 0) {
                c->warm_failed = 1;
                cs_log_error("cluster: out of memory reading the history of %s", w->id);
            } else {
                for (size_t i = 0; i < n; i++)
                    insert(c, epoch, ev[i].seq, w->id, w->id_len, ev[i].json, ev[i].json_len);
                c->st.warmed++;
            }
            free(ev);
        }
    }
    free(w);
    warm_next(c);
}

/* Sends history reads for the executions still to warm, WARM_IN_FLIGHT at once. */
static void warm_next(cs_cluster_t *c)
{
    char m[300], st[300], count[24];
    const char *argv[7];
    size_t lens[7];

    while (c->ready && c->warm_in_flight < WARM_IN_FLIGHT && c->warm_pos < c->warm_n) {
        char *id = c->warm_ids[c->warm_pos++];
        size_t id_len = strlen(id);
        cs_exec_t *ex = cs_store_find(c->store, id, id_len);
        uint64_t first = 1, next = 1;
        warm_t *w;
        if (ex != NULL)
            cs_exec_seqs(ex, &first, &next);
        if (next > 1 || id_len > 200 || (w = malloc(sizeof(*w) + id_len + 1)) == NULL)
            continue; /* held here already (or not ours to read) */
        w->c = c;
        w->id_len = id_len;
        memcpy(w->id, id, id_len + 1);
        snprintf(m, sizeof(m), "%s{x:%s}:m", c->prefix, id);
        snprintf(st, sizeof(st), "%s{x:%s}:s", c->prefix, id);
        snprintf(count, sizeof(count), "%zu", c->ring_events);
        argv[0] = "EVAL", argv[1] = cs_cluster_history_script, argv[2] = "2", argv[3] = m, argv[4] = st;
        argv[5] = "+", argv[6] = count;
        for (int i = 0; i < 7; i++)
            lens[i] = strlen(argv[i]);
        if (cs_redis_command(c->cmd, on_warm_one, w, 7, argv, lens) != 0) {
            free(w);
            break;
        }
        c->warm_in_flight++;
    }
    if (c->warm_pos >= c->warm_n && c->warm_in_flight == 0) {
        if (!c->warm_failed)
            c->warm_done_ms = c->warm_started_ms;
        warm_clear(c);
    }
}

/* The newest executions Redis lists (those published since the node was last ready, or all of them the
 * first time): each one this node holds nothing of is read. */
static void on_warm_list(cs_redis_t *r, const redisReply *reply, void *data)
{
    cs_cluster_t *c = data;

    (void)r;
    c->warming = 0;
    if (reply == NULL || c->closing)
        return;
    if (reply->type != REDIS_REPLY_ARRAY) {
        c->st.bad_messages++;
        cs_log_error("cluster: Redis' list of executions could not be read (%s)",
                     reply->type == REDIS_REPLY_ERROR ? reply->str : "not an array");
        return;
    }
    warm_clear(c);
    if (reply->elements > 0 && (c->warm_ids = calloc(reply->elements, sizeof(char *))) == NULL)
        return;
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *e = reply->element[i];
        if (e == NULL || e->type != REDIS_REPLY_STRING || e->len == 0 || e->len > 200 ||
            memchr(e->str, '\0', e->len) != NULL)
            continue;
        if ((c->warm_ids[c->warm_n] = strndup(e->str, e->len)) != NULL)
            c->warm_n++;
    }
    if (c->warm_n > 0)
        cs_log_info("cluster: %zu executions published %s: their histories are read from Redis", c->warm_n,
                    c->warm_done_ms != 0 ? "while this node was not ready" : "before this node started");
    warm_next(c);
}

static void warm_start(cs_cluster_t *c)
{
    char key[300], min[32], horizon[32];
    const char *argv[8];
    size_t lens[8];
    int64_t now = redis_now(c);
    int64_t keep = (int64_t)ttl_of(c, 0) * 1000;

    if (c->warming)
        return;
    snprintf(key, sizeof(key), "%sexecs", c->prefix);
    /* What no key can outlive any more goes first (the sorted set is not expired with the executions). */
    snprintf(horizon, sizeof(horizon), "(%lld", (long long)(now - keep));
    argv[0] = "ZREMRANGEBYSCORE", argv[1] = key, argv[2] = "-inf", argv[3] = horizon;
    for (int i = 0; i < 4; i++)
        lens[i] = strlen(argv[i]);
    if (cs_redis_command(c->cmd, on_trim, NULL, 4, argv, lens) != 0)
        return;
    /* Since the last reading that got everything (a little before it began), else all. */
    snprintf(min, sizeof(min), "%lld",
             (long long)(c->warm_done_ms != 0 ? c->warm_done_ms - 10000 : now - keep));
    argv[0] = "ZREVRANGEBYSCORE", argv[1] = key, argv[2] = "+inf", argv[3] = min;
    argv[4] = "LIMIT", argv[5] = "0", argv[6] = WARM_MAX_S;
    for (int i = 0; i < 7; i++)
        lens[i] = strlen(argv[i]);
    if (cs_redis_command(c->cmd, on_warm_list, c, 7, argv, lens) == 0) {
        c->warming = 1;
        c->warm_started_ms = now;
        c->warm_failed = 0;
    }
}

/* ---- claims (cs_cluster_claim): one node of the cluster takes a role on an execution ---- */

struct cs_cluster_claim {
    cs_cluster_t *c;
    cs_cluster_claim_cb cb; /* NULL once cancelled */
    void *data;
};

static void on_claim(cs_redis_t *r, const redisReply *reply, void *data)
{
    cs_cluster_claim_t *cl = data;
    cs_cluster_t *c = cl->c;

    (void)r;
    if (cl->cb != NULL) {
        if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
            if (reply != NULL)
                cs_log_warn("cluster: a claim was refused by Redis: %s", reply->str);
            cl->cb(cl->data, -1, NULL, 0);
        } else if (reply->type == REDIS_REPLY_NIL ||
                   (reply->type == REDIS_REPLY_STRING && reply->len == strlen(c->node) &&
                    memcmp(reply->str, c->node, reply->len) == 0)) {
            cl->cb(cl->data, 1, c->node, strlen(c->node));
        } else if (reply->type == REDIS_REPLY_STRING) {
            cl->cb(cl->data, 0, reply->str, reply->len);
        } else {
            c->st.bad_messages++;
            cs_log_warn("cluster: a claim got an unexpected reply (type %d)", reply->type);
            cl->cb(cl->data, -1, NULL, 0);
        }
    }
    free(cl);
}

cs_cluster_claim_t *cs_cluster_claim(cs_cluster_t *c, const char *exec, size_t exec_len, const char *what,
                                     unsigned ttl_s, cs_cluster_claim_cb cb, void *data)
{
    cs_cluster_claim_t *cl;
    char key[512], ttl[24];
    int n;

    if (c == NULL || c->closing || !cs_redis_up(c->cmd))
        return NULL;
    n = snprintf(key, sizeof(key), "%s{x:%.*s}:%s", c->prefix, (int)exec_len, exec, what);
    if (n < 0 || (size_t)n >= sizeof(key) || (cl = calloc(1, sizeof(*cl))) == NULL)
        return NULL;
    snprintf(ttl, sizeof(ttl), "%u", ttl_s > 0 ? ttl_s : 1);
    cl->c = c;
    cl->cb = cb;
    cl->data = data;
    const char *argv[] = {"SET", key, c->node, "NX", "GET", "EX", ttl};
    size_t lens[] = {3, (size_t)n, strlen(c->node), 2, 3, 2, strlen(ttl)};
    if (cs_redis_command(c->cmd, on_claim, cl, 7, argv, lens) != 0) {
        free(cl);
        return NULL;
    }
    return cl;
}

void cs_cluster_claim_cancel(cs_cluster_claim_t *cl)
{
    if (cl != NULL)
        cl->cb = NULL;
}

const char *cs_cluster_node(const cs_cluster_t *c)
{
    return c->node;
}
