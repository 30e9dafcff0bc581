/*
 * journal.h - the append-only journal of the store's changes (SPEC §8, issue 12): the writer, its sync
 * thread and the reader that replays a directory. Record and segment bytes: jrecord.h.
 *
 * Segments are files "<first record number, 20 digits>.cjs" in one directory; their names sort in the
 * order they were written. The writer collects encoded records during a loop turn (cs_journal_append)
 * and writes them with one writev per cs_journal_flush, rolling to a new segment once the open one has
 * reached segment_bytes. Positions are byte offsets in the journal as a whole (every byte written since
 * open, headers included): cs_journal_append says where its record ends, and a record is durable once
 * the durable position reaches that. fdatasync runs on one helper thread; it reports through an eventfd
 * the loop watches (cs_journal_fd), after which cs_journal_sync_done gives the durable position.
 *
 * Not thread-safe: every function but the helper thread's is called from the loop thread.
 */
#ifndef CS_JOURNAL_H
#define CS_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

typedef enum cs_jsync {
    CS_JSYNC_NONE = 0, /* never synced by us: the OS writes back */
    CS_JSYNC_EVERYSEC, /* a sync at most every second, covering everything written before it */
    CS_JSYNC_ALWAYS,   /* a sync per flush that wrote anything (group commit) */
} cs_jsync_t;

/** Parses "none", "everysec" or "always"; returns 0 or -EINVAL. */
int cs_jsync_parse(const char *s, cs_jsync_t *out);

typedef struct cs_journal_opts {
    const char *dir; /* must exist */
    cs_jsync_t fsync;
    size_t segment_bytes; /* roll to a new segment once the open one holds this much (0: 64 MiB) */
} cs_journal_opts_t;

typedef struct cs_journal cs_journal_t;

/** Opens a writer on dir: a new segment after every segment there, named at least first_record (the
 * reader's next_record). Starts the sync thread. Returns 0 or -errno with detail. */
int cs_journal_open(cs_journal_t **out, const cs_journal_opts_t *opts, uint64_t first_record, char *detail,
                    size_t detail_len);

/** Flushes, syncs (unless fsync is none) and waits for it, stops the thread, closes. NULL: no-op. */
void cs_journal_close(cs_journal_t *j);

/** Encodes c into the pending batch (not written yet). *end (may be NULL) gets the position the record
 * ends at once written. Returns 0, -EMSGSIZE (larger than CS_JREC_MAX_PAYLOAD) or -ENOMEM. */
int cs_journal_append(cs_journal_t *j, const cs_change_t *c, uint64_t *end);

/**
 * Writes the pending batch with one writev (rolling to a new segment first when the open one is full),
 * then asks the sync thread for a sync as the fsync mode says (now_ms: a monotonic clock, for everysec).
 * On a write error the segment is cut back to where it was, the batch stays pending (a later flush
 * retries it) and -errno is returned with detail (ENOSPC: the disk is full). Returns 0 otherwise.
 */
int cs_journal_flush(cs_journal_t *j, int64_t now_ms, char *detail, size_t detail_len);

/**
 * Writes the pending batch (as cs_journal_flush) and makes the next flush start a new segment whose header
 * carries flags (jrecord.h: CS_JREC_FLAG_SNAPSHOT for one that begins with a snapshot). *first_record
 * (may be NULL) gets the number of its first record. Returns 0 or what the flush returned.
 */
int cs_journal_roll(cs_journal_t *j, int64_t now_ms, uint32_t flags, uint64_t *first_record, char *detail,
                    size_t detail_len);

/** For everysec: asks for a sync of what was written and is not yet synced, when the last request is a
 * second old (call about once a second; flush calls it too). */
void cs_journal_tick(cs_journal_t *j, int64_t now_ms);

/** Asks the sync thread for a sync covering everything written so far (whatever the mode), also when one
 * was asked for already (it may have failed). */
void cs_journal_sync(cs_journal_t *j);

/** Deletes, on the sync thread, every segment numbered below first_record, then fsyncs the directory;
 * reports through the eventfd when done (cs_journal_position: segments_deleted, deletes_pending). Queued
 * behind the syncs asked for before it. */
void cs_journal_delete_before(cs_journal_t *j, uint64_t first_record);

/** The eventfd that becomes readable when the sync thread has finished a sync (or a delete). */
int cs_journal_fd(const cs_journal_t *j);

/** Reads the eventfd (non-blocking) and returns the durable position in *durable. Returns 0, or -errno
 * when a sync failed since the last call (the durable position then does not advance past it). */
int cs_journal_sync_done(cs_journal_t *j, uint64_t *durable);

typedef struct cs_journal_pos {
    uint64_t pending; /* end of what was appended */
    uint64_t written; /* end of what write() took */
    uint64_t durable; /* end of what a finished sync covers (as of the last cs_journal_sync_done) */
    uint64_t syncs;   /* syncs finished (failed ones included) */
    uint64_t sync_errors;
    uint64_t sync_us_sum; /* how long they took: sum and the longest, in microseconds */
    uint64_t sync_us_max;
    size_t segments;           /* segments opened by this writer */
    uint64_t segments_deleted; /* by cs_journal_delete_before, and their bytes */
    uint64_t deleted_bytes;
    uint64_t deletes_pending; /* cs_journal_delete_before calls not done yet */
    uint64_t records;         /* records written */
} cs_journal_pos_t;

void cs_journal_position(const cs_journal_t *j, cs_journal_pos_t *p);

/** Tests only: a nonzero errno makes every writev (cs_journal_test_write_errno) or every sync
 * (cs_journal_test_sync_errno) fail with it. The daemon never sets them. */
extern int cs_journal_test_write_errno;
extern int cs_journal_test_sync_errno;

/* ---- Reading ---- */

typedef struct cs_journal_read_stats {
    size_t segments;  /* segment files read */
    uint64_t records; /* records handed to the callback */
    uint64_t bytes;   /* bytes of those records */
    size_t truncated; /* torn tails cut off (the last segment only) */
    uint64_t truncated_bytes;
    size_t bad_segments; /* segments whose rest was skipped: a bad checksum, a bad record, a bad header */
    uint64_t skipped_bytes;
    uint64_t next_record;    /* one past the highest record number seen (for cs_journal_open) */
    size_t skipped_segments; /* left out by opts->segment */
} cs_journal_read_stats_t;

/** Called for every record read, in order; recno is its record number. Return 0 to go on, anything else
 * to stop reading (cs_journal_read then returns -ECANCELED). */
typedef int (*cs_journal_record_fn)(void *data, const cs_change_t *c, uint64_t recno);

/**
 * Reads every segment of dir in order and hands each record to fn. A torn tail of the LAST segment (a
 * crash mid-write) is truncated away (ftruncate; a last segment shorter than its header is removed); a
 * bad checksum or malformed record skips the rest of its segment (later segments are still read); each
 * is logged (warn) and counted in *st. Returns 0; -EPROTONOSUPPORT when a segment was written by a newer
 * format version (detail names the file, nothing after it is read); -ECANCELED when fn stopped; or
 * -errno when dir or a segment cannot be read (detail says which).
 */
int cs_journal_read(const char *dir, cs_journal_record_fn fn, void *data, cs_journal_read_stats_t *st,
                    char *detail, size_t detail_len);

typedef struct cs_journal_read_opts {
    /* Called with each segment's first record number and header flags before its records: nonzero
     * leaves the segment out (its records are not read). NULL: every segment is read. */
    int (*segment)(void *data, uint64_t first_record, uint32_t flags);
    /* Nonzero: change nothing and log nothing (no tail cut, no segment removed): a look before the read.
     * Its stats still count bad_segments (damage, not a torn tail of the last segment). */
    int readonly;
} cs_journal_read_opts_t;

/** cs_journal_read with opts (NULL: as cs_journal_read). The callbacks get the same data. */
int cs_journal_read_ex(const char *dir, const cs_journal_read_opts_t *opts, cs_journal_record_fn fn,
                       void *data, cs_journal_read_stats_t *st, char *detail, size_t detail_len);

#endif
