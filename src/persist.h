/*
 * persist.h - the daemon's durability (SPEC §8, issue 12): at start it replays the journal directory
 * into the (empty) store; then it is the store's observer, journals every change (journal.h), confirms
 * each publish once it is as durable as journal.fsync asks, keeps the journal under journal.max_bytes
 * with snapshots (after which older segments are deleted), and degrades - refusing publishes with
 * CS_ERR_UNAVAILABLE, /health 503 - while the directory cannot be written, recovering by itself.
 *
 * What "acknowledged" means (SPEC §8): with a journal, every publish completes later (CS_PENDING through
 * the store's completions): under "none" and "everysec" once write() took its record (the end of the
 * loop turn), under "always" once an fdatasync covers it. Human-input requests and answers
 * (human_input_required, human_input_completed) wait for a sync under "everysec" too.
 *
 * Loop wiring (cs_persist_open does it): a before-sleep hook that writes the turn's records with one
 * writev and confirms what write() made acknowledged, the journal's eventfd (a finished sync confirms
 * what it covers), a 1 s timer (everysec's sync, retrying a degraded directory, when to snapshot), and
 * while a snapshot is written a timer due at once that gives it one step per loop turn. Open it
 * before any other module adds its before-sleep hook, so replies a confirmation queues go out in the
 * same turn.
 */
#ifndef CS_PERSIST_H
#define CS_PERSIST_H

#include <stddef.h>
#include <stdint.h>

#include "journal.h"
#include "loop.h"
#include "store.h"

typedef struct cs_persist cs_persist_t;

/** A snapshot is written about this many bytes per loop turn (under a millisecond), while the store goes
 * on changing (cs_store_snap_step). */
#define CS_PERSIST_SNAP_STEP (256u << 10)

typedef struct cs_persist_opts {
    const char *dir; /* journal.dir; created (one level) when missing */
    cs_jsync_t fsync;
    uint64_t max_bytes;   /* journal.max_bytes */
    size_t segment_bytes; /* 0: derived from max_bytes */
    size_t snapshot_step; /* bytes of a snapshot written per loop turn; 0: CS_PERSIST_SNAP_STEP (tests,
                           * benchmarks: SIZE_MAX writes it whole in one turn) */
} cs_persist_opts_t;

typedef struct cs_persist_stats {
    int degraded;      /* the directory cannot be written: publishes refused */
    char reason[160];  /* why, for /health and the log ("" when not degraded) */
    uint64_t bytes;    /* journal bytes on disk (every segment) */
    uint64_t segments; /* segment files on disk */
    uint64_t records;  /* records written since start */
    uint64_t written_bytes;
    uint64_t syncs;        /* fdatasyncs finished */
    uint64_t sync_errors;  /* fdatasyncs failed */
    uint64_t write_errors; /* writev failures (ENOSPC, EIO, ...) */
    uint64_t sync_us_sum;  /* sync latency: sum, count (= syncs) and the largest, in microseconds */
    uint64_t sync_us_max;
    uint64_t pending;            /* publishes waiting to be acknowledged */
    uint64_t refused;            /* publishes refused while degraded */
    uint64_t snapshots;          /* snapshots written (a step per loop turn) */
    uint64_t snapshot_us_last;   /* the longest the last one held the loop (its longest step) */
    uint64_t snapshots_given_up; /* begun and not finished (out of memory, a SIGHUP's new limits, a write
                                  * that failed): their segments' snapshot records are left out of a replay */
    uint64_t segments_deleted;
    uint64_t replay_us; /* start-up replay: time, records, bytes, faults */
    uint64_t replay_records;
    uint64_t replay_bytes;
    uint64_t replay_truncated; /* torn tails cut off */
    uint64_t replay_skipped;   /* segments whose rest was skipped (bad checksum, bad record) */
    uint64_t replay_cpu_us;    /* CPU time (user + system) of the loop thread during the replay */
} cs_persist_stats_t;

/**
 * Replays opts->dir into store (which must be empty), opens the writer, becomes the store's observer and
 * wires itself into loop. Returns 0 - also when the directory cannot be written (then degraded, retried
 * every second) - or a negative errno with detail when the daemon must not start: -EPROTONOSUPPORT (a
 * segment written by a newer format version; detail names the file), -EBUSY (another process holds the
 * directory's lock file, <dir>/lock: one daemon per journal), -ENOMEM.
 */
int cs_persist_open(cs_persist_t **out, cs_loop_t *loop, cs_store_t *store, const cs_persist_opts_t *opts,
                    char *detail, size_t detail_len);

/** At shutdown: writes and syncs what is pending (confirming it), stops, closes. NULL: no-op. */
void cs_persist_close(cs_persist_t *p);

/** Nonzero while degraded; *reason (may be NULL) then says why. */
int cs_persist_degraded(const cs_persist_t *p, const char **reason);

/** Holds lim->max_bytes to a third of journal.max_bytes (two snapshots and the log between them must fit
 * in it), as at start; a SIGHUP's new store limits go through it too. NULL p: no-op. Returns nonzero when
 * it lowered max_bytes. */
int cs_persist_cap_limits(const cs_persist_t *p, cs_store_limits_t *lim);

/** Fills *st (zeros for NULL p: no journal). */
void cs_persist_stats(const cs_persist_t *p, cs_persist_stats_t *st);

/* ---- Module records: state other than the store's (webhooks out: whrec.h) ----
 *
 * Kinds in jrecord.h's CS_JREC_AUX range, appended to the same batch as the store's records (one writev
 * per loop turn, the same checksums and fsync mode; no acknowledgement waits on them). Replay keeps those
 * it reads aside and hands them to the module once it attaches (after the store is rebuilt); a snapshot
 * starts with the module's whole state (its snapshot callback), so deleting older segments loses none. */
typedef struct cs_persist_module {
    /* Each module record read at start, in journal order (those of the newest whole snapshot first). */
    void (*replay)(void *data, const cs_change_t *c);
    /* At the start of each snapshot: append the module's whole state with cs_persist_append_aux. */
    void (*snapshot)(void *data);
    void *data;
} cs_persist_module_t;

/**
 * Attaches the one module (webhooks): its replay callback gets, now, every module record the start-up
 * replay read; later snapshots call its snapshot callback (a snapshot taken before it attached - the one
 * at open - carried the replayed records over as they were read). NULL m detaches it (at shutdown). NULL p
 * (no journal): no-op. Returns 0.
 */
int cs_persist_set_module(cs_persist_t *p, const cs_persist_module_t *m);

/** Appends a module record (c->kind in the CS_JREC_AUX range) to this loop turn's batch. Returns 0,
 * -ENODEV (NULL p: no journal, or the directory could not be opened), -EINVAL (not a module kind),
 * -EMSGSIZE or -ENOMEM (logged by the caller). */
int cs_persist_append_aux(cs_persist_t *p, const cs_change_t *c);

#endif
