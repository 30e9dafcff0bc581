/*
 * cluster.h - cluster mode (SPEC §11, docs/cluster.md): this node's store becomes a cache of Redis.
 *
 * The store's remote step (store.h) hands every publish here; they are queued and sent once per loop
 * turn as one call of the publish script (per event: idempotency by event_id, the seq from the meta
 * hash, one XADD per execution under MINID, EXPIRE, PUBLISH). A producer is answered only after Redis
 * answered. Events enter this node's ring only with Redis' epoch and seq, in seq order: from the script's
 * reply (our own, when it is the ring's next) and from the cluster's channel (everyone's); a hole is filled
 * with XRANGE before anything after it is stored. While Redis is not reachable (or the channel not
 * subscribed) the store's gate refuses publishes (unavailable) and cs_cluster_degraded says why.
 */
#ifndef CS_CLUSTER_H
#define CS_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "cmsg.h"
#include "loop.h"
#include "store.h"

typedef struct cs_cluster cs_cluster_t;

typedef struct cs_cluster_opts {
    const char *redis;  /* cluster.redis */
    const char *node;   /* cluster.node (NULL: the host name) */
    const char *prefix; /* cluster.prefix */
    size_t ring_events; /* store.ring_events: the seqs each stream keeps (MINID ~) */
    unsigned retain_s;  /* store.retain_s: keys of a finished execution expire after it */
    int timeout_ms;     /* a reply within it (0: 2000) */
} cs_cluster_opts_t;

typedef struct cs_cluster_stats {
    int ready;                /* both connections up and the channel subscribed */
    uint64_t published;       /* events Redis stored for this node's producers */
    uint64_t duplicates;      /* re-posts Redis recognised (idempotent) */
    uint64_t failed;          /* publishes answered unavailable (Redis down, no reply, an error) */
    uint64_t batches;         /* script calls */
    uint64_t received;        /* channel messages */
    uint64_t inserted;        /* events stored in this node's ring from Redis */
    uint64_t fills;           /* XRANGE reads that filled a hole */
    uint64_t lost;            /* events a hole lacked that Redis no longer had: subscribers got stream.gap */
    uint64_t bad_messages;    /* messages or replies that could not be read (logged) */
    uint64_t reconnects;      /* connections lost, both connections together */
    uint64_t timeouts;        /* of them: no reply in time */
    size_t queued, in_flight; /* publishes waiting to go out, and sent but not answered */
    /* Publishes whose reply never came (a timeout, the connection lost): held, not answered, until Redis
     * says whether it stored them (its event-id index, asked once it is reachable again). */
    uint64_t unknown;        /* publishes held so */
    uint64_t unknown_stored; /* of them: Redis had stored them (answered ok with their seq) */
    uint64_t
        unknown_refused; /* of them: Redis had not (and never will: their deadline passed): unavailable */
    uint64_t unknown_expired;  /* of them: Redis could not be asked within the longest wait: unavailable */
    uint64_t unknown_overflow; /* not held, the cap was reached: answered unavailable at once (logged) */
    size_t unknown_held;       /* held now */
    uint64_t late;             /* publishes the script refused: they reached Redis after their deadline */
    uint64_t rechecks;         /* executions checked against Redis' meta hash after a reconnect */
    uint64_t rebased;      /* of them: Redis lost (or replaced) their history: old cursors get stream.gap */
    uint64_t held_dropped; /* channel messages not held behind a hole (the cap): read from the stream */
    size_t held_bytes;     /* channel messages held behind holes now, bytes */

    /* Human input (answers taken on this node's answer routes, decided in Redis: exactly once). */
    uint64_t answers;          /* answers Redis stored */
    uint64_t answer_conflicts; /* answers Redis refused: the request was answered already (409) */
    uint64_t
        warmed; /* executions read from Redis' list when the node became ready (it held nothing of them) */
    uint64_t warm_gone;      /* of those listed: their keys had expired */
    uint64_t history_reads;  /* reads of history older than a ring, for subscribers (XREVRANGE) */
    uint64_t history_events; /* events those reads gave subscribers */
    uint64_t history_failed; /* given up (unreadable answer, 8 lost): stream.gap or 503 */
    uint64_t history_waited; /* reads that waited for Redis (away): their subscribers held */
    size_t history_waiting;  /* subscribers held now until Redis answers their read */
} cs_cluster_stats_t;

/** Reports of nodes read at once, at most (a cluster of more lists the first ones Redis gives). */
#define CS_CLUSTER_NODES_MAX 64

/** A node's last report of itself (every NODES_EVERY_MS, into Redis: docs/cluster.md). */
typedef struct cs_cluster_node {
    char name[65];
    cs_cmsg_node_t r; /* its report: when (Redis' clock), its counters and its store's gauges */
} cs_cluster_node_t;

/** Every node's last report as this node last read it (itself included), into out[0..max); *now_ms gets
 * Redis' clock now as this node knows it (0: not read yet), for their ages. Returns how many. */
size_t cs_cluster_nodes(const cs_cluster_t *c, cs_cluster_node_t *out, size_t max, int64_t *now_ms);

/** Starts cluster mode on store: connects (in the background), sets the store's remote step and closes its
 * gate until Redis is ready. o's strings are copied. Returns 0, -EINVAL or -ENOMEM. */
int cs_cluster_new(cs_cluster_t **out, cs_loop_t *loop, cs_store_t *store, const cs_cluster_opts_t *o);

/** Ends cluster mode: publishes waiting are answered unavailable, the store's remote step is removed. */
void cs_cluster_free(cs_cluster_t *c);

/** Nonzero while publishes are refused, with *why (for /health); 0 when ready. */
int cs_cluster_degraded(const cs_cluster_t *c, const char **why);

/** Fills *st (zeros when c is NULL). */
void cs_cluster_stats(const cs_cluster_t *c, cs_cluster_stats_t *st);

/** What cs_cluster_claim's callback is told: outcome 1 when this node holds the claim (it took it now, or
 * held it already), 0 when another node does (holder, holder_len: its cluster.node), -1 when Redis gave no
 * answer (not connected, a timeout, an error: ask again later). */
typedef void (*cs_cluster_claim_cb)(void *data, int outcome, const char *holder, size_t holder_len);

typedef struct cs_cluster_claim cs_cluster_claim_t;

/**
 * Claims a role for this node on execution exec, cluster-wide and first come first served: `SET
 * <prefix>{x:<exec>}:<what> <node> NX GET EX ttl_s` (what: a short name, e.g. "w" for webhook delivery). The
 * key outlives this node: a node that dies holding a claim keeps it until ttl_s ends. cb is called exactly
 * once, later (never from inside this call), unless cancelled. Returns the request (cancel it before data
 * goes), or NULL when it was not sent (Redis not connected, no memory): cb is then never called.
 */
cs_cluster_claim_t *cs_cluster_claim(cs_cluster_t *c, const char *exec, size_t exec_len, const char *what,
                                     unsigned ttl_s, cs_cluster_claim_cb cb, void *data);

/** Cancels a claim whose answer has not come yet: its callback is not called (the claim may still be
 * taken in Redis). */
void cs_cluster_claim_cancel(cs_cluster_claim_t *cl);

/** This node's name (cluster.node, or the host name). */
const char *cs_cluster_node(const cs_cluster_t *c);

/** The Lua source of the history read: KEYS meta hash, stream; ARGV the newest id wanted, COUNT. Returns {}
 * when Redis has no such execution, else {epoch, XREVRANGE's entries}. */
extern const char cs_cluster_history_script[];

/** The Lua source of the publish script (for tests). */
extern const char cs_cluster_script[];

/** The Lua source put in front of the publish script for an answer (exactly once across nodes). */
extern const char cs_cluster_answer_check[];

#endif
