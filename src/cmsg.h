/*
 * cmsg.h - the cluster's wire, read: what Redis sends back to a node (docs/cluster.md). Pure functions
 * over hiredis' parsed replies and message bytes, with no I/O, so they can be fuzzed
 * (tests/fuzz/fuzz_cmsg.c feeds them replies parsed by hiredis' own reader from arbitrary bytes).
 */
#ifndef CS_CMSG_H
#define CS_CMSG_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

/** One event of a channel message. Pointers into the message's bytes. */
typedef struct cs_cmsg {
    uint64_t epoch, seq;
    const char *exec;
    size_t exec_len;
    const char *json;
    size_t json_len;
} cs_cmsg_t;

/** Parses a message of one event, the form of the first cluster version:
 * "<epoch> <seq> <execution_id>\n<event JSON without seq>": epoch and seq nonzero decimals (no sign, fit 64
 * bits; the epoch 48), a valid execution id, a JSON part that is not empty. Returns 0, or -EINVAL. */
int cs_cmsg_parse(const char *p, size_t n, cs_cmsg_t *m);

/** Events of one stream entry, and of one group of a batch message, at most (the script writes up to 500:
 * one XADD's arguments stay on Lua's stack). */
#define CS_CMSG_ENTRY_MAX 500

/**
 * A batch message (one per script call: every event the call stored). Two forms:
 *  - grouped (since session 11): "#<groups>\n" then per group (the events of one execution, seqs
 *    consecutive) "<epoch> <first seq> <execution_id> <count> <bytes>\n" and <bytes> bytes holding exactly
 *    <count> (1 to CS_CMSG_ENTRY_MAX) events, each "<json_len>\n<json>": the JSON length-prefixed so that it
 *    needs no escaping, and the bytes exactly those of the stream entry's field b (cs_cmsg_xrange_count);
 *  - per event (before): "*<count>\n" then per event "<epoch> <seq> <execution_id> <json_len>\n<json>".
 * cs_cmsg_batch checks the whole message (count nonzero, every event well formed as cs_cmsg_parse's rules
 * say, exactly the counts given, nothing after the last), sets *count (events) and readies *it; returns
 * 0, or -EINVAL. Then cs_cmsg_next reads the next event (0, or -EINVAL at the end).
 */
typedef struct cs_cmsg_iter {
    const char *p;
    size_t n, off;
    int grouped;
    size_t left;         /* grouped: events left in the current group (0: a group header is next) */
    uint64_t epoch, seq; /* ...the next one's epoch and seq */
    const char *exec;    /* ...its execution */
    size_t exec_len;
} cs_cmsg_iter_t;

int cs_cmsg_batch(const char *p, size_t n, size_t *count, cs_cmsg_iter_t *it);
int cs_cmsg_next(cs_cmsg_iter_t *it, cs_cmsg_t *m);

/** Takes a pub/sub reply apart: ["message", channel, payload] → the payload (*p, *n); returns 1. A
 * subscription's confirmation ["subscribe", channel, count] returns 2; anything else 0. */
int cs_cmsg_pubsub(const redisReply *r, const char **p, size_t *n);

/** One event of the publish script's reply: the seq Redis gave (or had: a duplicate), the epoch, and
 * whether it was a duplicate. */
typedef struct cs_cmsg_result {
    uint64_t seq, epoch;
    int duplicate;
} cs_cmsg_result_t;

/** Reads the script's reply for n events into out[0..n): its receipt text (a bulk string, the form
 * cs_cmsg_receipt reads, exactly n events and nothing after them), or, from a script of an earlier
 * version, 2 n integers (the seq, negated for a duplicate, and the epoch). Returns 0, or -EINVAL (another
 * shape, a zero or out-of-range value). */
int cs_cmsg_script_reply(const redisReply *r, size_t n, cs_cmsg_result_t *out);

/** Reads event i of a script call's receipt (the text Redis keeps for it: space-separated pairs, each
 * "<seq> <epoch>" for one event, the seq with a leading '-' for a duplicate, or "<first seq>+<count>
 * <epoch>" for count (1 to CS_CMSG_ENTRY_MAX) events stored with consecutive seqs) into *out. Returns 0,
 * or -EINVAL (i past its end, or another shape anywhere before it). */
int cs_cmsg_receipt(const char *p, size_t n, size_t i, cs_cmsg_result_t *out);

/** One event of an XRANGE reply: its seq and its JSON. */
typedef struct cs_cmsg_entry {
    uint64_t seq;
    const char *json;
    size_t json_len;
} cs_cmsg_entry_t;

/** Checks element i of an XRANGE (or XREVRANGE) reply, an array of [id, [field, value, ...]], and returns
 * how many events it holds (1 to CS_CMSG_ENTRY_MAX), or -EINVAL. Three shapes, the id always "<the last
 * seq it holds>-0":
 *  - the events of one script call for one execution (since session 11): exactly the fields f -> the
 *    first seq and b -> the events, each "<json_len>\n<json>" (the bytes of a batch message's group);
 *  - the same written per event (session 10): fields "<seq>" -> JSON, the seqs ascending;
 *  - one event, the one field j (written before). */
int cs_cmsg_xrange_count(const redisReply *r, size_t i);

/** The events of element i, which cs_cmsg_xrange_count checked, into out[0..count), in ascending seq
 * order. */
void cs_cmsg_xrange_events(const redisReply *r, size_t i, cs_cmsg_entry_t *out);

/** What a node reports of itself every few seconds into the hash "<prefix>nodes" (field: its name), so
 * that every node's /metrics shows every node: "1 <Redis' ms> <published> <failed> <inserted> <lost>
 * <history_failed> <subscribers> <executions>" (cs_cluster_stats_t, cs_store_stats_t), decimals (0 allowed,
 * no leading zero), single spaces. */
typedef struct cs_cmsg_node {
    uint64_t ms; /* when it reported, Redis' clock */
    uint64_t published, failed, inserted, lost, history_failed, subscribers, executions;
} cs_cmsg_node_t;

/** Reads a node's report (its version 1; a later version is refused). Returns 0, or -EINVAL. */
int cs_cmsg_node(const char *p, size_t n, cs_cmsg_node_t *out);

#endif
