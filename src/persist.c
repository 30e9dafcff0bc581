/*
 * persist.c - see persist.h.
 *
 * The store's observer appends every change to the journal's batch. A publish that needs only write()
 * from a caller that can hold its acknowledgement (an ingest producer) is held at its record's end
 * (cs_store_hold), and released with the written position after each write (store.h, holding). Any other
 * publish's record answers CS_CHANGE_LATER and its (ticket, end position, whether it needs a sync) goes
 * on a FIFO. The batch is written once per loop turn (a deferred call queued by the first record of the
 * turn, and the before-sleep hook as a backstop); what write() took releases the held ones and confirms
 * the FIFO's front entries that need no sync, and a finished sync (the journal's eventfd) confirms those
 * that do. Entries are confirmed in order, so no acknowledgement overtakes an earlier one.
 *
 * Degraded: a failed write or sync (or a directory that cannot be opened) closes the store's gate
 * (cs_store_set_refusal): new publishes are refused with CS_ERR_UNAVAILABLE before anything is stored, so
 * an `unavailable` always means "not stored". The publishes already stored and waiting keep waiting: their
 * records stay pending in the journal, the 1 s timer retries them, and once they are written (and synced,
 * after a failed sync) they are acknowledged and the gate opens again. Nothing is acknowledged that is
 * not written, and nothing refused is stored. Only a shutdown while degraded answers the waiting ones
 * unavailable, and closes held producers without their output (their records were never written: they
 * are not there after the restart).
 */
#include "persist.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "jrecord.h"
#include "log.h"
#include "prefault.h"

typedef struct waiter {
    uint64_t ticket;
    uint64_t end;       /* where its record ends in the journal */
    uint8_t needs_sync; /* acknowledged only once a sync covers it */
} waiter_t;

struct cs_persist {
    cs_loop_t *loop;
    cs_store_t *store;
    cs_journal_t *j;
    char *dir;
    cs_jsync_t fsync;
    uint64_t max_bytes;
    size_t seg_bytes;

    cs_io_t io;
    int io_on;
    cs_timer_t timer;
    cs_defer_t flush_defer;

    waiter_t *w; /* FIFO ring of waiting publishes */
    size_t w_head, w_len, w_cap;
    int want_sync; /* an everysec human-input record: ask for a sync after the flush */

    uint64_t written, durable;
    int degraded;
    int sync_failed; /* the degradation came from a sync: recovered by a sync */
    char reason[160];
    uint64_t records_at_open; /* the writer's count starts at 0 each open */

    /* Snapshots: the newest one's segment, where it ends, its size; older segments go once it is
     * durable (snap_waiting until then). */
    uint64_t snap_seg, snap_end, snap_size;
    int snap_waiting;
    int del_pending; /* the segments before it are being deleted (the sync thread) */
    /* The snapshot being written, a step per loop turn (cs_store_snap_step): its segment, its records'
     * bytes so far and where the last one ends, the longest step; snap_stepped: this turn's step is done
     * (the snapshot timer, due at once, clears it in the next turn and keeps the loop from sleeping). */
    int snap_active, snap_stepped;
    uint64_t snap_new_seg, snap_bytes, snap_last_end, snap_us_max, snap_t0, snap_step_max;
    size_t snap_step_bytes;
    cs_timer_t snap_timer;
    uint64_t written_at_usage; /* the writer's position when st.bytes was measured */
    int dirfd;
    int lockfd; /* <dir>/lock, flock()ed while this daemon uses the directory; -1 before */

    cs_persist_stats_t st;
    int closing;

    /* Module records (persist.h): those the replay read, encoded, until the module attaches; then it. */
    cs_buf_t aux;
    cs_persist_module_t mod;
    int mod_set;
};

static void dir_usage(cs_persist_t *p);
static void take_snapshot(cs_persist_t *p);
static int should_snapshot(cs_persist_t *p);
static void delete_older(cs_persist_t *p);
static void snap_give_up(cs_persist_t *p, const char *why);

static int64_t pmono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t pmono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- the FIFO of waiting publishes ---- */

static int w_push(cs_persist_t *p, const waiter_t *w)
{
    if (p->w_len == p->w_cap) {
        size_t cap = p->w_cap ? 2 * p->w_cap : 256; /* a power of two: indexes are masked */
        waiter_t *nw = malloc(cap * sizeof(*nw));
        if (nw == NULL)
            return -ENOMEM;
        for (size_t i = 0; i < p->w_len; i++)
            nw[i] = p->w[(p->w_head + i) & (p->w_cap - 1)];
        free(p->w);
        p->w = nw;
        p->w_cap = cap;
        p->w_head = 0;
    }
    p->w[(p->w_head + p->w_len) & (p->w_cap - 1)] = *w;
    p->w_len++;
    return 0;
}

static waiter_t *w_front(cs_persist_t *p)
{
    return p->w_len > 0 ? &p->w[p->w_head] : NULL;
}

static void w_pop(cs_persist_t *p)
{
    p->w_head = (p->w_head + 1) & (p->w_cap - 1);
    p->w_len--;
}

/* Confirms, in order, every waiting publish as durable as the mode asks. */
static void confirm_ready(cs_persist_t *p)
{
    waiter_t *w;

    if (cs_store_released(p->store) != p->written)
        cs_store_release(p->store, p->written); /* the held acknowledgements go out */
    while ((w = w_front(p)) != NULL && w->end <= p->written && (!w->needs_sync || w->end <= p->durable)) {
        uint64_t t = w->ticket;
        w_pop(p);
        cs_store_confirm(p->store, t, CS_OK, NULL);
    }
}

/* ---- degraded ---- */

static void degrade(cs_persist_t *p, const char *reason, int from_sync)
{
    char detail[240];

    if (!p->degraded) {
        cs_log_error("%s: publishes are refused (unavailable) until it can be written again", reason);
        p->degraded = 1;
        snprintf(p->reason, sizeof(p->reason), "%s", reason);
    }
    snap_give_up(p, "the journal cannot be written");
    p->sync_failed |= from_sync;
    snprintf(detail, sizeof(detail), "%s: not written: retry", p->reason);
    cs_store_set_refusal(p->store, CS_ERR_UNAVAILABLE, detail);
    /* The publishes already stored keep waiting for their records to be written (the timer retries): told
     * unavailable now, they would be stored all the same, and a producer's retry stored twice. */
}

static void recover(cs_persist_t *p)
{
    if (!p->degraded)
        return;
    cs_log_info("journal: %s is writable again: publishes are accepted", p->dir);
    p->degraded = 0;
    p->sync_failed = 0;
    p->reason[0] = '\0';
    cs_store_set_refusal(p->store, CS_OK, NULL);
}

/* ---- writing ---- */

/* Writes the turn's batch (one writev) and confirms what that made acknowledged. */
static void do_flush(cs_persist_t *p)
{
    char detail[256];
    cs_journal_pos_t pos;

    if (p->j == NULL || p->degraded)
        return;
    cs_journal_position(p->j, &pos);
    if (pos.pending > pos.written) {
        if (cs_journal_flush(p->j, pmono_ms(), detail, sizeof(detail)) != 0) {
            p->st.write_errors++;
            degrade(p, detail, 0);
            return;
        }
        cs_journal_position(p->j, &pos);
        p->written = pos.written;
        if (!p->closing && should_snapshot(p))
            take_snapshot(p);
    }
    if (p->want_sync && p->j != NULL && !p->degraded) {
        cs_journal_sync(p->j);
        p->want_sync = 0;
    }
    confirm_ready(p);
}

static void on_defer(void *data)
{
    do_flush(data);
}

static void snap_step(cs_persist_t *p);

static int on_prepare(void *data)
{
    cs_persist_t *p = data;

    /* A snapshot in progress: one step a turn (the first round of the before-sleep hooks), written with
     * the turn's records. */
    if (p->snap_active && !p->snap_stepped && !p->closing)
        snap_step(p);
    do_flush(p);
    return -1;
}

static void on_snap_timer(cs_timer_t *t)
{
    cs_persist_t *p = t->data;
    p->snap_stepped = 0; /* a new turn: the next before-sleep hook takes the next step */
}

static void on_sync(cs_io_t *io, uint32_t events)
{
    cs_persist_t *p = io->data;
    uint64_t durable;
    int rc;

    (void)events;
    if (p->j == NULL)
        return;
    rc = cs_journal_sync_done(p->j, &durable);
    p->durable = durable;
    if (rc != 0) {
        char reason[200];
        snprintf(reason, sizeof(reason), "journal: %s: fdatasync failed: %s", p->dir, strerror(-rc));
        degrade(p, reason, 1);
        return;
    }
    if (p->snap_waiting && durable >= p->snap_end)
        delete_older(p);
    if (p->del_pending) {
        cs_journal_pos_t pos;
        cs_journal_position(p->j, &pos);
        if (pos.deletes_pending == 0) {
            p->del_pending = 0;
            dir_usage(p);
        }
    }
    if (p->degraded && p->sync_failed) {
        cs_journal_pos_t pos;
        cs_journal_position(p->j, &pos);
        if (pos.pending == pos.written && durable >= pos.written)
            recover(p);
    }
    confirm_ready(p);
}

/* The store's observer: every change into the journal's batch; a publish is confirmed later. */
static int on_change(void *data, const cs_change_t *c)
{
    cs_persist_t *p = data;
    uint64_t end = 0;

    if (c->derived)
        return 0; /* the replay of its publish redoes it: a record less per event and consequence */
    int rc = p->j != NULL ? cs_journal_append(p->j, c, &end) : -ENODEV;

    if (rc != 0) {
        /* Only a journal that could not be opened (the gate refuses publishes then) or a record past
         * 64 MiB or out of memory: logged, and the publish is answered with the error. */
        if (rc != -ENODEV)
            cs_log_error("journal: a record (kind %d) could not be kept: %s", (int)c->kind, strerror(-rc));
        p->st.write_errors++;
        if (c->kind != CS_CHANGE_PUBLISH)
            return 0;
    }
    if (p->j != NULL && !p->closing)
        cs_defer(p->loop, &p->flush_defer, on_defer, p);
    if (c->kind != CS_CHANGE_PUBLISH)
        return 0;
    int hitl = (c->type_len == 20 && memcmp(c->type, "human_input_required", 20) == 0) ||
               (c->type_len == 21 && memcmp(c->type, "human_input_completed", 21) == 0);
    waiter_t w = {.ticket = c->ticket,
                  .end = end,
                  .needs_sync = p->fsync == CS_JSYNC_ALWAYS || (p->fsync == CS_JSYNC_EVERYSEC && hitl)};
    if (rc == 0 && !w.needs_sync && c->holdable) {
        /* Its caller holds the acknowledgement until this turn's write (confirm_ready releases it). */
        cs_store_hold(p->store, end);
        return 0;
    }
    if (rc != 0 || w_push(p, &w) != 0)
        return 0; /* completes at once: the store has it, the journal may not (logged above) */
    if (w.needs_sync && p->fsync == CS_JSYNC_EVERYSEC)
        p->want_sync = 1;
    return CS_CHANGE_LATER;
}

/* ---- the directory ---- */

/* Segment files and their bytes, for the stats. */
static void dir_usage(cs_persist_t *p)
{
    DIR *d = opendir(p->dir);
    struct dirent *de;
    uint64_t bytes = 0, n = 0;

    if (d == NULL)
        return;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        struct stat sb;
        if (l != 24 || strcmp(de->d_name + 20, ".cjs") != 0)
            continue;
        if (fstatat(dirfd(d), de->d_name, &sb, 0) == 0) {
            bytes += (uint64_t)sb.st_size;
            n++;
        }
    }
    closedir(d);
    p->st.bytes = bytes;
    p->st.segments = n;
    p->written_at_usage = p->written;
}

/* The newest snapshot is durable: every segment before its own goes (on the journal's sync thread: unlink,
 * then the directory synced; dir_usage counts them once they are gone, at the next timer). */
static void delete_older(cs_persist_t *p)
{
    p->snap_waiting = 0;
    p->del_pending = 1; /* no new snapshot until the usage is measured without them */
    cs_journal_delete_before(p->j, p->snap_seg);
}

static int snap_append(void *data, const cs_change_t *c)
{
    cs_persist_t *p = data;
    cs_journal_pos_t pos;
    uint64_t end;

    cs_journal_position(p->j, &pos);
    int rc = cs_journal_append(p->j, c, &end);
    if (rc == 0) {
        p->snap_bytes += end - pos.pending;
        p->snap_last_end = end;
    }
    return rc;
}

/* A snapshot's first records: the module's whole state (its callback), or, before it attached, the module
 * records the replay read, as they were. */
static void snap_modules(cs_persist_t *p)
{
    if (p->mod_set) {
        if (p->mod.snapshot != NULL)
            p->mod.snapshot(p->mod.data);
        return;
    }
    for (size_t off = 0; off < cs_buf_size(&p->aux);) {
        cs_change_t c;
        size_t used;
        if (cs_jrec_decode(cs_buf_data(&p->aux) + off, cs_buf_size(&p->aux) - off, &c, &used) != CS_JREC_OK)
            break;
        if (cs_journal_append(p->j, &c, NULL) != 0)
            cs_log_error("journal: a module record could not be carried into the snapshot: out of memory");
        off += used;
    }
}

/* A replay of a journal of at least PREFAULT_MIN bytes has the heap's pages faulted in PREFAULT_PAD ahead of
 * it on a helper thread (prefault.h): a smaller one is done before the thread would help. */
#define PREFAULT_MIN (64u << 20)
#define PREFAULT_PAD (32u << 20)

/* A snapshot is taken once the log since the last one is SNAP_LOG_RATIO times that snapshot's size, but at
 * least a segment (and twice the snapshot) and at most SNAP_LOG_SEGS segments; or when the directory would
 * pass journal.max_bytes with one more snapshot in it. A small store is thus snapshotted every few segments
 * instead of every segment (each snapshot is bytes written that no event asked for: with the benchmark's
 * 9 MiB store one a segment was 14% more bytes, one per 256 MiB is 3.5%); a replay reads at most that much
 * log after the snapshot. */
#define SNAP_LOG_RATIO 32u
#define SNAP_LOG_SEGS  4u

static int should_snapshot(cs_persist_t *p)
{
    uint64_t log = p->written - p->snap_end, s = p->snap_size,
             seg = p->seg_bytes ? p->seg_bytes : (64u << 20);
    cs_store_stats_t ss;

    if (p->snap_waiting || p->snap_active || p->del_pending)
        return 0;
    uint64_t want = SNAP_LOG_RATIO * s < SNAP_LOG_SEGS * seg ? SNAP_LOG_RATIO * s : SNAP_LOG_SEGS * seg;
    if (want < seg)
        want = seg;
    if (want < 2 * s)
        want = 2 * s;
    if (log >= want)
        return 1;
    if (p->max_bytes == 0 || log < s / 4 + 4096)
        return 0;
    cs_store_stats(p->store, &ss);
    uint64_t next = ss.bytes > s ? ss.bytes : s; /* the next snapshot's size: at most the store's */
    uint64_t disk = p->st.bytes + (p->written - p->written_at_usage);
    return disk + next >= p->max_bytes - p->max_bytes / 10;
}

/* The snapshot in progress is given up (logged): its segment holds no SNAP_END, so a replay leaves its
 * snapshot records out and applies the live ones between them; the segments before it stay. */
static void snap_give_up(cs_persist_t *p, const char *why)
{
    if (!p->snap_active)
        return;
    cs_store_snap_abort(p->store);
    p->snap_active = 0;
    cs_timer_stop(&p->snap_timer);
    p->st.snapshots_given_up++;
    cs_log_warn("journal: the snapshot in segment %" PRIu64 " is given up (%s): the segments before it stay "
                "until a later one is whole",
                p->snap_new_seg, why);
}

/* One step of the snapshot in progress: about snap_step_bytes of its records (cs_store_snap_step), then
 * written with the turn's batch. The last step's SNAP_END makes it the newest snapshot: the sync after
 * which the segments before it go is asked for. */
static void snap_step(cs_persist_t *p)
{
    char detail[256];
    uint64_t t0 = pmono_us();

    uint64_t before = p->snap_bytes;
    p->snap_stepped = 1;
    int rc = cs_store_snap_step(p->store, p->snap_step_bytes ? p->snap_step_bytes : CS_PERSIST_SNAP_STEP);
    uint64_t us = pmono_us() - t0;
    if (us > p->snap_us_max)
        p->snap_us_max = us;
    if (p->snap_bytes - before > p->snap_step_max)
        p->snap_step_max = p->snap_bytes - before; /* what bounds the pause (tests) */
    if (rc == 1) {
        cs_timer_start(&p->snap_timer, 0); /* due at once: the loop does not sleep before the next step */
        return;
    }
    p->snap_active = 0;
    cs_timer_stop(&p->snap_timer);
    if (rc != 0) {
        /* Out of memory, a record past its limit, or the store's limits changed (SIGHUP): a later one is
         * begun from scratch (should_snapshot). */
        p->st.snapshots_given_up++;
        cs_log_warn("journal: the snapshot in segment %" PRIu64 " is given up (%s): the segments before it "
                    "stay until a later one is whole",
                    p->snap_new_seg, rc == -ECANCELED ? "the store's limits changed" : strerror(-rc));
        return;
    }
    p->snap_seg = p->snap_new_seg;
    p->snap_end = p->snap_last_end;
    p->snap_size = p->snap_bytes;
    if (cs_journal_flush(p->j, pmono_ms(), detail, sizeof(detail)) != 0) {
        p->st.write_errors++;
        degrade(p, detail, 0); /* written by the retry; the segments before it stay (a later snapshot) */
        return;
    }
    cs_journal_pos_t pos;
    cs_journal_position(p->j, &pos);
    p->written = pos.written;
    p->snap_waiting = 1;
    cs_journal_sync(p->j); /* under every mode: the older segments go only once it is on disk */
    p->st.snapshots++;
    p->st.snapshot_us_last = p->snap_us_max;
    cs_log_debug("journal: snapshot of %" PRIu64 " bytes in segment %" PRIu64 " over %.1f ms; the longest "
                 "step held the loop %" PRIu64 " us",
                 p->snap_size, p->snap_seg, (double)(pmono_us() - p->snap_t0) / 1000.0, p->snap_us_max);
}

/* Begins a snapshot of the store at the start of a new segment, and takes its first step now; the rest
 * follows a step per loop turn while the store goes on changing (store.h). */
static void take_snapshot(cs_persist_t *p)
{
    char detail[256];
    uint64_t seg;

    if (cs_journal_roll(p->j, pmono_ms(), CS_JREC_FLAG_SNAPSHOT, &seg, detail, sizeof(detail)) != 0) {
        p->st.write_errors++;
        degrade(p, detail, 0);
        return;
    }
    p->snap_new_seg = seg;
    p->snap_bytes = 0;
    p->snap_us_max = p->snap_step_max = 0;
    p->snap_t0 = pmono_us();
    snap_modules(p); /* webhook registrations and cursors (whrec.h): small, so first */
    int rc = cs_store_snap_begin(p->store, snap_append, p);
    if (rc != 0) {
        /* Out of memory, most likely: no snapshot now (a later flush tries again). */
        cs_log_error("journal: a snapshot could not be begun: %s", strerror(-rc));
        return;
    }
    p->snap_active = 1;
    snap_step(p);
    if (p->snap_active && cs_journal_flush(p->j, pmono_ms(), detail, sizeof(detail)) != 0) {
        p->st.write_errors++;
        degrade(p, detail, 0);
    } else if (p->snap_active) {
        cs_journal_pos_t pos;
        cs_journal_position(p->j, &pos);
        p->written = pos.written;
    }
}

/* One daemon per journal directory: an exclusive flock on <dir>/lock, held until close (the kernel lets
 * it go when the process dies, so a crash leaves no stale lock). 0, -EBUSY when another process holds
 * it, or -errno, with detail. */
static int take_lock(cs_persist_t *p, char *detail, size_t detail_len)
{
    char path[PATH_MAX];

    if (p->lockfd >= 0)
        return 0;
    if ((size_t)snprintf(path, sizeof(path), "%s/lock", p->dir) >= sizeof(path)) {
        snprintf(detail, detail_len, "journal: %s: the path is too long", p->dir);
        return -ENAMETOOLONG;
    }
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        int rc = -errno;
        snprintf(detail, detail_len, "journal: cannot open %.*s: %s", 180, path, strerror(errno));
        return rc;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
        snprintf(detail, detail_len,
                 "journal: %.*s is in use by another crewstreamd (its lock file is held)%s%s", 150, p->dir,
                 rc == -EBUSY ? "" : ": ", rc == -EBUSY ? "" : strerror(-rc));
        close(fd);
        return rc;
    }
    p->lockfd = fd;
    return 0;
}

/* Opens the writer (after the replay, or when the directory comes back); 0 or -errno with detail. */
static int open_writer(cs_persist_t *p, uint64_t first_record, int write_snapshot, char *detail,
                       size_t detail_len)
{
    cs_journal_opts_t jo = {.dir = p->dir, .fsync = p->fsync, .segment_bytes = p->seg_bytes};
    int rc;

    if (mkdir(p->dir, 0700) != 0 && errno != EEXIST) {
        rc = -errno;
        snprintf(detail, detail_len, "journal: cannot create %s: %s", p->dir, strerror(errno));
        return rc;
    }
    if ((rc = take_lock(p, detail, detail_len)) != 0)
        return rc;
    rc = cs_journal_open(&p->j, &jo, first_record, detail, detail_len);
    if (rc != 0)
        return rc;
    cs_io_init(&p->io, p->loop, cs_journal_fd(p->j), on_sync, p);
    rc = cs_io_start(&p->io, CS_IO_READ);
    if (rc != 0) {
        snprintf(detail, detail_len, "journal: cannot watch the sync eventfd: %s", strerror(-rc));
        cs_journal_close(p->j);
        p->j = NULL;
        return rc;
    }
    p->io_on = 1;
    p->written = p->durable = p->written_at_usage = 0;
    cs_store_release(p->store, 0); /* a new writer's positions start again */
    p->snap_end = p->snap_size = 0;
    p->snap_waiting = 0;
    dir_usage(p);
    if (write_snapshot)
        take_snapshot(p); /* the store as replayed: what came before it is deleted once it is durable */
    return 0;
}

/* ---- the timer: everysec, retries, housekeeping ---- */

static void on_timer(cs_timer_t *t)
{
    cs_persist_t *p = t->data;
    char detail[256];

    if (p->j == NULL) {
        /* The directory could not be opened at start: try again. */
        if (open_writer(p, 0, 1, detail, sizeof(detail)) == 0) {
            recover(p);
        } else if (!p->degraded) {
            degrade(p, detail, 0);
        }
    } else if (p->degraded) {
        cs_journal_pos_t pos;
        cs_journal_position(p->j, &pos);
        int ok = 1;
        if (pos.pending > pos.written) {
            if (cs_journal_flush(p->j, pmono_ms(), detail, sizeof(detail)) != 0) {
                ok = 0;
                p->st.write_errors++;
            } else {
                cs_journal_position(p->j, &pos);
                p->written = pos.written;
            }
        }
        if (ok && p->sync_failed)
            cs_journal_sync(p->j); /* recovered once it succeeds (on_sync) */
        else if (ok)
            recover(p);
        if (ok)
            confirm_ready(p);
    } else {
        cs_journal_tick(p->j, pmono_ms());
    }
    dir_usage(p);
    cs_timer_start(t, 1000);
}

/* ---- start: replay ---- */

/* Replay starts at the newest segment that begins with a whole snapshot (a look at the snapshot
 * segments first finds it: a snapshot written across loop turns may end in a later segment, which the look
 * reads too); segments before it are left out (deleted after the next snapshot). A later snapshot segment
 * whose snapshot is unfinished (given up, a crash, damage) is replayed without its snapshot records (up to
 * the next snapshot segment): the live records written amid them are the journal's, on top of what came
 * before. */
typedef struct snapseg {
    uint64_t first;
    int whole;   /* its SNAP_END was read */
    int damaged; /* reading it stopped at a bad checksum or record before its SNAP_END */
} snapseg_t;

typedef struct replay_ctx {
    cs_store_t *store;
    uint64_t faults;
    uint64_t records;
    snapseg_t *segs;
    size_t n_segs, cap_segs;
    uint64_t from;   /* the chosen snapshot segment (0: none, read everything) */
    int ignore_snap; /* inside an unfinished snapshot: its snapshot records are left out */
    const char *dir;
    const cs_journal_read_stats_t *look_st; /* the look pass's stats, live */
    size_t bad_before;                      /* look_st->bad_segments when the last snapshot segment began */
    cs_buf_t *aux;                          /* module records, kept for the module (persist.h) */
} replay_ctx_t;

/* The look pass: the last snapshot segment looked at was cut short by damage when the reader counted a bad
 * segment since it began (and its SNAP_END never came). */
static void look_done(replay_ctx_t *r)
{
    if (r->n_segs > 0 && r->look_st != NULL && r->look_st->bad_segments > r->bad_before &&
        !r->segs[r->n_segs - 1].whole)
        r->segs[r->n_segs - 1].damaged = 1;
    if (r->look_st != NULL)
        r->bad_before = r->look_st->bad_segments;
}

static int look_segment(void *data, uint64_t first, uint32_t flags)
{
    replay_ctx_t *r = data;
    look_done(r);
    if (!(flags & CS_JREC_FLAG_SNAPSHOT)) {
        /* Read only to find the SNAP_END of a snapshot that began in an earlier segment. */
        const snapseg_t *last = r->n_segs > 0 ? &r->segs[r->n_segs - 1] : NULL;
        return last != NULL && !last->whole && !last->damaged ? 0 : 1;
    }
    if (r->n_segs == r->cap_segs) {
        size_t cap = r->cap_segs ? 2 * r->cap_segs : 16;
        snapseg_t *n = realloc(r->segs, cap * sizeof(*n));
        if (n == NULL)
            return 1; /* out of memory: this one is not a candidate */
        r->segs = n;
        r->cap_segs = cap;
    }
    r->segs[r->n_segs++] = (snapseg_t){.first = first};
    return 0;
}

static int look_record(void *data, const cs_change_t *c, uint64_t recno)
{
    replay_ctx_t *r = data;
    (void)recno;
    if (c->kind == CS_CHANGE_SNAP_END && r->n_segs > 0 && !r->segs[r->n_segs - 1].damaged)
        r->segs[r->n_segs - 1].whole = 1;
    return 0;
}

static int replay_segment(void *data, uint64_t first, uint32_t flags)
{
    replay_ctx_t *r = data;
    if (first < r->from)
        return 1;
    if (flags & CS_JREC_FLAG_SNAPSHOT)
        r->ignore_snap = 0;
    if ((flags & CS_JREC_FLAG_SNAPSHOT) && first != r->from) {
        for (size_t i = 0; i < r->n_segs; i++)
            if (r->segs[i].first == first && !r->segs[i].whole) {
                if (r->segs[i].damaged) {
                    /* What it held is lost: counted, and resumes into it get stream.gap. */
                    r->faults++;
                    cs_log_error(
                        "journal: %s/%020" PRIu64 ".cjs: the snapshot this segment begins with is "
                        "damaged (a checksum or record that fails): it is left out, what was lost with it "
                        "gets stream.gap; the live records around it are replayed",
                        r->dir, first);
                } else {
                    cs_log_warn("journal: %s/%020" PRIu64 ".cjs holds an unfinished snapshot (given up, or "
                                "a crash while it was written): its snapshot records are left out, the live "
                                "records amid them replayed",
                                r->dir, first);
                }
                r->ignore_snap = 1;
                return 0;
            }
    }
    return 0;
}

static int replay_one(void *data, const cs_change_t *c, uint64_t recno)
{
    replay_ctx_t *r = data;
    char detail[256];

    r->records++;
    if (CS_JREC_IS_AUX(c->kind)) {
        /* Not the store's: kept for its module, which attaches after the store is rebuilt. */
        if (cs_jrec_encode(r->aux, c) != 0) {
            r->faults++;
            cs_log_error("journal: record %" PRIu64 " (kind %d): out of memory keeping it for its module",
                         recno, (int)c->kind);
        }
        return 0;
    }
    if (r->ignore_snap && c->kind >= CS_CHANGE_SNAP_BEGIN && c->kind <= CS_CHANGE_SNAP_END)
        return 0; /* an unfinished snapshot's: what came before it holds the same */
    if (cs_store_replay(r->store, c, detail, sizeof(detail)) != 0) {
        r->faults++;
        cs_log_warn("journal: record %" PRIu64 " (kind %d) does not apply and is skipped: %s", recno,
                    (int)c->kind, detail);
    }
    return 0;
}

/* CPU time (user + system) of the calling thread, in microseconds. */
static uint64_t thread_cpu_us(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_THREAD, &ru) != 0)
        return 0;
    return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000u +
           (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

static void count_exec(cs_exec_t *ex, void *data)
{
    (void)ex;
    (*(size_t *)data)++;
}

int cs_persist_open(cs_persist_t **out, cs_loop_t *loop, cs_store_t *store, const cs_persist_opts_t *opts,
                    char *detail, size_t detail_len)
{
    cs_persist_t *p = calloc(1, sizeof(*p));
    cs_journal_read_stats_t rs;
    replay_ctx_t rc_ctx = {.store = store};
    int rc;

    *out = NULL;
    if (p == NULL || (p->dir = strdup(opts->dir)) == NULL) {
        free(p);
        snprintf(detail, detail_len, "journal: out of memory");
        return -ENOMEM;
    }
    p->loop = loop;
    p->store = store;
    p->lockfd = -1;
    cs_buf_init(&p->aux, 0);
    rc_ctx.aux = &p->aux;
    p->fsync = opts->fsync;
    p->max_bytes = opts->max_bytes;
    p->seg_bytes = opts->segment_bytes;
    p->snap_step_bytes = opts->snapshot_step;
    if (p->seg_bytes == 0 && p->max_bytes > 0) {
        uint64_t s = p->max_bytes / 8;
        p->seg_bytes = (size_t)(s > (64u << 20) ? (64u << 20) : s < (64u << 10) ? (64u << 10) : s);
    }

    /* Replay: the directory, if there is one, into the empty store. */
    memset(&rs, 0, sizeof(rs));
    cs_store_set_now(store, cs_loop_now(loop));
    uint64_t t0 = pmono_us(), cpu0 = thread_cpu_us();
    int have_dir = mkdir(p->dir, 0700) == 0 || errno == EEXIST;
    char why[256] = "";
    if (!have_dir)
        snprintf(why, sizeof(why), "journal: cannot create %s: %s", p->dir, strerror(errno));
    /* Locked before anything is read: replay cuts a torn tail, which must not be another daemon's. */
    if (have_dir && (rc = take_lock(p, why, sizeof(why))) != 0) {
        if (rc == -EBUSY) {
            snprintf(detail, detail_len, "%s", why);
            free(p->dir);
            free(p);
            return rc;
        }
        have_dir = 0; /* cannot lock it: degraded, tried again by the timer */
    }
    rc = -ENOENT;
    if (have_dir) {
        cs_journal_read_opts_t look = {.segment = look_segment, .readonly = 1};
        cs_journal_read_stats_t ls;
        rc_ctx.dir = p->dir;
        rc_ctx.look_st = &ls;
        rc = cs_journal_read_ex(p->dir, &look, look_record, &rc_ctx, &ls, why, sizeof(why));
        look_done(&rc_ctx);
        rc_ctx.look_st = NULL;
        for (size_t i = 0; rc == 0 && i < rc_ctx.n_segs; i++)
            if (rc_ctx.segs[i].whole)
                rc_ctx.from = rc_ctx.segs[i].first;
        cs_journal_read_opts_t ro = {.segment = replay_segment};
        if (rc == 0) {
            int pf = ls.bytes >= PREFAULT_MIN && cs_prefault_start(PREFAULT_PAD) == 0;
            rc = cs_journal_read_ex(p->dir, &ro, replay_one, &rc_ctx, &rs, why, sizeof(why));
            if (pf)
                cs_prefault_stop();
        }
        free(rc_ctx.segs);
        rc_ctx.segs = NULL;
    }
    if (rc == -EPROTONOSUPPORT) {
        snprintf(detail, detail_len, "%s", why);
        cs_buf_free(&p->aux);
        free(p->dir);
        free(p);
        return rc;
    }
    p->st.replay_us = pmono_us() - t0;
    p->st.replay_cpu_us = thread_cpu_us() - cpu0;
    p->st.replay_records = rs.records;
    p->st.replay_bytes = rs.bytes;
    p->st.replay_truncated = rs.truncated;
    p->st.replay_skipped = rs.bad_segments + rc_ctx.faults;
    size_t execs = 0;
    cs_store_each(store, count_exec, &execs);
    if (rc == 0)
        cs_log_info("journal: replayed %" PRIu64 " records (%" PRIu64 " bytes) from %s in %.1f ms: %zu "
                    "executions; faults: %zu torn tails cut, %zu segments cut short, %" PRIu64
                    " records not applied",
                    rs.records, rs.bytes, p->dir, (double)p->st.replay_us / 1000.0, execs, rs.truncated,
                    rs.bad_segments, rc_ctx.faults);

    cs_timer_init(&p->timer, loop, on_timer, p);
    cs_timer_init(&p->snap_timer, loop, on_snap_timer, p);
    cs_store_observer_t obs = {.change = on_change, .data = p, .skip_derived = 1};
    /* Two snapshots and the log between them must fit in journal.max_bytes: the store holds a third. */
    cs_store_limits_t lim;
    cs_store_limits(store, &lim);
    size_t configured = lim.max_bytes;
    if (cs_persist_cap_limits(p, &lim)) {
        cs_log_warn("journal: store.max_bytes (%zu) is more than a third of journal.max_bytes (%" PRIu64
                    "): the store is held to %zu bytes",
                    configured, p->max_bytes, lim.max_bytes);
        cs_store_set_limits(store, &lim);
    }
    if (rc == 0) {
        /* The journal goes on from a snapshot of the store as replayed (the global ring's epoch, and every
         * segment before it can go). */
        rc = open_writer(p, rs.next_record, 1, why, sizeof(why));
    }
    cs_store_set_observer(store, &obs);
    if (rc != 0)
        degrade(p, why, 0);
    if (cs_loop_add_prepare(loop, on_prepare, p) != 0) {
        snprintf(detail, detail_len, "journal: too many before-sleep hooks");
        cs_persist_close(p);
        return -ENOMEM;
    }
    cs_timer_start(&p->timer, 1000);
    /* Retention goes on from the recorded times: what expired while the daemon was down goes now. */
    cs_store_expire(store, cs_loop_now(loop));
    dir_usage(p);
    *out = p;
    return 0;
}

void cs_persist_close(cs_persist_t *p)
{
    if (p == NULL)
        return;
    p->closing = 1;
    cs_defer_cancel(p->loop, &p->flush_defer);
    cs_timer_stop(&p->timer);
    if (p->snap_active) {
        /* Not finished: left without its SNAP_END (the next start replays from the one before it). */
        cs_store_snap_abort(p->store);
        p->snap_active = 0;
        cs_log_info("journal: the snapshot in progress (segment %" PRIu64 ") is left unfinished at shutdown",
                    p->snap_new_seg);
    }
    cs_timer_stop(&p->snap_timer);
    do_flush(p); /* a failure degrades: the waiting publishes are told unavailable */
    cs_store_set_observer(p->store, NULL);
    int written = p->j != NULL && !p->degraded;
    if (p->j != NULL) {
        if (p->io_on)
            cs_io_stop(&p->io);
        cs_journal_close(p->j); /* syncs what was written (unless fsync is none) and waits */
        p->j = NULL;
    }
    /* What close wrote and synced is durable; what it could not write is answered unavailable (it is not
     * in the journal: gone after the restart). */
    while (p->w_len > 0) {
        waiter_t *w = w_front(p);
        uint64_t t = w->ticket;
        w_pop(p);
        cs_store_confirm(p->store, t, written ? CS_OK : CS_ERR_UNAVAILABLE,
                         written ? NULL : "journal: shutting down: not written");
    }
    cs_store_set_refusal(p->store, CS_OK, NULL);
    if (p->lockfd >= 0)
        close(p->lockfd);
    cs_buf_free(&p->aux);
    free(p->w);
    free(p->dir);
    free(p);
}

int cs_persist_degraded(const cs_persist_t *p, const char **reason)
{
    if (p == NULL || !p->degraded)
        return 0;
    if (reason != NULL)
        *reason = p->reason;
    return 1;
}

int cs_persist_cap_limits(const cs_persist_t *p, cs_store_limits_t *lim)
{
    if (p == NULL || p->max_bytes == 0 || lim->max_bytes <= p->max_bytes / 3)
        return 0;
    lim->max_bytes = (size_t)(p->max_bytes / 3);
    return 1;
}

void cs_persist_stats(const cs_persist_t *p, cs_persist_stats_t *st)
{
    memset(st, 0, sizeof(*st));
    if (p == NULL)
        return;
    *st = p->st;
    st->degraded = p->degraded;
    snprintf(st->reason, sizeof(st->reason), "%s", p->degraded ? p->reason : "");
    if (p->j != NULL) {
        cs_journal_pos_t pos;
        cs_journal_position(p->j, &pos);
        st->records = p->records_at_open + pos.records;
        st->written_bytes = pos.written;
        st->syncs = pos.syncs;
        st->sync_errors = pos.sync_errors;
        st->sync_us_sum = pos.sync_us_sum;
        st->sync_us_max = pos.sync_us_max;
        st->segments_deleted = pos.segments_deleted;
    }
    st->pending = p->w_len;
    cs_store_stats_t ss;
    cs_store_stats(p->store, &ss);
    st->refused = ss.refused_gate;
}

int cs_persist_set_module(cs_persist_t *p, const cs_persist_module_t *m)
{
    if (p == NULL)
        return 0;
    if (m == NULL) {
        /* Detached (at shutdown): later snapshots carry no module records. */
        memset(&p->mod, 0, sizeof(p->mod));
        p->mod_set = 1;
        return 0;
    }
    p->mod = *m;
    p->mod_set = 1;
    for (size_t off = 0; off < cs_buf_size(&p->aux);) {
        cs_change_t c;
        size_t used;
        if (cs_jrec_decode(cs_buf_data(&p->aux) + off, cs_buf_size(&p->aux) - off, &c, &used) != CS_JREC_OK)
            break;
        if (m->replay != NULL)
            m->replay(m->data, &c);
        off += used;
    }
    cs_buf_free(&p->aux);
    cs_buf_init(&p->aux, 0);
    return 0;
}

int cs_persist_append_aux(cs_persist_t *p, const cs_change_t *c)
{
    if (p == NULL || p->j == NULL)
        return -ENODEV;
    if (!CS_JREC_IS_AUX(c->kind))
        return -EINVAL;
    int rc = cs_journal_append(p->j, c, NULL);
    if (rc == 0 && !p->closing)
        cs_defer(p->loop, &p->flush_defer, on_defer, p);
    return rc;
}
