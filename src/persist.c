/*
 * persist.c - see persist.h.
 *
 * The store's observer appends every change to the journal's batch; a publish's record answers
 * CS_CHANGE_LATER and its (ticket, end position, whether it needs a sync) goes on a FIFO. The batch is
 * written once per loop turn (a deferred call queued by the first record of the turn, and the
 * before-sleep hook as a backstop); what write() took confirms the FIFO's front entries that need no
 * sync, and a finished sync (the journal's eventfd) confirms those that do. Entries are confirmed in
 * order, so no acknowledgement overtakes an earlier one.
 *
 * Degraded: a failed write or sync (or a directory that cannot be opened) confirms every waiting
 * publish with CS_ERR_UNAVAILABLE and closes the store's gate (cs_store_set_refusal), so nothing new is
 * stored that is not journaled. The batch stays pending in the journal; the 1 s timer retries it, and
 * once it is written (and synced, after a failed sync) the gate opens again. A publish confirmed
 * unavailable stays unconfirmed in the store (store.c keeps it pending without a completion) until its
 * record is written: a producer's retry of it waits for that, then gets the original seq.
 */
#include "persist.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

typedef struct waiter {
    uint64_t ticket;
    uint64_t end;       /* where its record ends in the journal */
    uint8_t needs_sync; /* acknowledged only once a sync covers it */
    uint8_t failed;     /* already told unavailable (degraded): confirmed OK later without a reply */
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

    cs_persist_stats_t st;
    int closing;
};

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
        size_t cap = p->w_cap ? 2 * p->w_cap : 256;
        waiter_t *nw = malloc(cap * sizeof(*nw));
        if (nw == NULL)
            return -ENOMEM;
        for (size_t i = 0; i < p->w_len; i++)
            nw[i] = p->w[(p->w_head + i) % p->w_cap];
        free(p->w);
        p->w = nw;
        p->w_cap = cap;
        p->w_head = 0;
    }
    p->w[(p->w_head + p->w_len) % p->w_cap] = *w;
    p->w_len++;
    return 0;
}

static waiter_t *w_front(cs_persist_t *p)
{
    return p->w_len > 0 ? &p->w[p->w_head] : NULL;
}

static void w_pop(cs_persist_t *p)
{
    p->w_head = (p->w_head + 1) % p->w_cap;
    p->w_len--;
}

/* Confirms, in order, every waiting publish as durable as the mode asks. */
static void confirm_ready(cs_persist_t *p)
{
    waiter_t *w;

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
    p->sync_failed |= from_sync;
    snprintf(detail, sizeof(detail), "%s: not written: retry", p->reason);
    cs_store_set_refusal(p->store, CS_ERR_UNAVAILABLE, detail);
    /* Every publish still waiting is told now; it stays in the FIFO and is confirmed (without a reply:
     * its completion was called) once its record is written after all. */
    for (size_t i = 0; i < p->w_len; i++) {
        waiter_t *w = &p->w[(p->w_head + i) % p->w_cap];
        if (!w->failed) {
            w->failed = 1;
            cs_store_confirm(p->store, w->ticket, CS_ERR_UNAVAILABLE, detail);
        }
    }
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
    }
    if (p->want_sync) {
        cs_journal_sync(p->j);
        p->want_sync = 0;
    }
    confirm_ready(p);
}

static void on_defer(void *data)
{
    do_flush(data);
}

static int on_prepare(void *data)
{
    do_flush(data);
    return -1;
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
}

static int snap_append(void *data, const cs_change_t *c)
{
    cs_persist_t *p = data;
    return cs_journal_append(p->j, c, NULL);
}

/* Opens the writer (after the replay, or when the directory comes back); 0 or -errno with detail. */
static int open_writer(cs_persist_t *p, uint64_t first_record, int write_snapshot, char *detail,
                       size_t detail_len)
{
    cs_journal_opts_t jo = {.dir = p->dir, .fsync = p->fsync, .segment_bytes = p->seg_bytes};
    int rc;

    if (mkdir(p->dir, 0750) != 0 && errno != EEXIST) {
        rc = -errno;
        snprintf(detail, detail_len, "journal: cannot create %s: %s", p->dir, strerror(errno));
        return rc;
    }
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
    p->written = p->durable = 0;
    if (write_snapshot && (rc = cs_store_snapshot(p->store, snap_append, p)) != 0) {
        snprintf(detail, detail_len, "journal: cannot write a snapshot: %s", strerror(-rc));
        cs_log_error("%s", detail);
    }
    cs_defer(p->loop, &p->flush_defer, on_defer, p);
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

typedef struct replay_ctx {
    cs_store_t *store;
    uint64_t faults;
    uint64_t records;
} replay_ctx_t;

static int replay_one(void *data, const cs_change_t *c, uint64_t recno)
{
    replay_ctx_t *r = data;
    char detail[256];

    r->records++;
    if (cs_store_replay(r->store, c, detail, sizeof(detail)) != 0) {
        r->faults++;
        cs_log_warn("journal: record %" PRIu64 " (kind %d) does not apply and is skipped: %s", recno,
                    (int)c->kind, detail);
    }
    return 0;
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
    p->fsync = opts->fsync;
    p->max_bytes = opts->max_bytes;
    p->seg_bytes = opts->segment_bytes;
    if (p->seg_bytes == 0 && p->max_bytes > 0) {
        uint64_t s = p->max_bytes / 8;
        p->seg_bytes = (size_t)(s > (64u << 20) ? (64u << 20) : s < (64u << 10) ? (64u << 10) : s);
    }

    /* Replay: the directory, if there is one, into the empty store. */
    memset(&rs, 0, sizeof(rs));
    cs_store_set_now(store, cs_loop_now(loop));
    uint64_t t0 = pmono_us();
    int have_dir = mkdir(p->dir, 0750) == 0 || errno == EEXIST;
    char why[256] = "";
    if (!have_dir)
        snprintf(why, sizeof(why), "journal: cannot create %s: %s", p->dir, strerror(errno));
    rc = have_dir ? cs_journal_read(p->dir, replay_one, &rc_ctx, &rs, why, sizeof(why)) : -ENOENT;
    if (rc == -EPROTONOSUPPORT) {
        snprintf(detail, detail_len, "%s", why);
        free(p->dir);
        free(p);
        return rc;
    }
    p->st.replay_us = pmono_us() - t0;
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
    cs_store_observer_t obs = {.change = on_change, .data = p};
    if (rc == 0) {
        /* A journal that was empty begins with a snapshot of the empty store: the global ring's epoch. */
        rc = open_writer(p, rs.next_record, rs.records == 0, why, sizeof(why));
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
    cs_store_set_observer(p->store, NULL);
    if (p->j != NULL) {
        cs_journal_pos_t pos;
        if (p->io_on)
            cs_io_stop(&p->io);
        cs_journal_close(p->j); /* writes, syncs and waits */
        p->j = NULL;
        (void)pos;
    }
    /* What close wrote and synced is durable; what it could not write was logged by the journal. */
    while (p->w_len > 0) {
        waiter_t *w = w_front(p);
        uint64_t t = w->ticket;
        w_pop(p);
        cs_store_confirm(p->store, t, CS_OK, NULL);
    }
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
    }
    st->pending = p->w_len;
    cs_store_stats_t ss;
    cs_store_stats(p->store, &ss);
    st->refused = ss.refused_gate;
}
