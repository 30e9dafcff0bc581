/*
 * test_persist.c - the journal's daemon side (persist.h): a store journaled through persist and opened
 * again rebuilds the same store, epochs and cursors included; the acknowledgement rules of each fsync
 * mode; a hole in the middle of a journal replayed as stream.gap; a retry of a publish not yet durable;
 * degraded (a write or sync that fails) and the recovery; snapshots keeping the directory under
 * max_bytes.
 */
#include <dirent.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../common/buf.c"
#include "../../src/jrecord.c"
#include "../../src/journal.c"
#include "../../src/loop.c"
#include "../../src/persist.c"
#include "../../src/prefault.c"

/* The seam test's driver and comparison; its own main is renamed away. */
#define main seam_main
#include "test_store_seam.c"
#undef main

/* ---- helpers ---- */

static char *tmpdir(void)
{
    char tmpl[] = "/tmp/cs_persist_XXXXXX";
    char *d = mkdtemp(tmpl);
    REQUIRE(d != NULL);
    d = strdup(d);
    REQUIRE(d != NULL);
    return d;
}

static void rmdir_all(char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char path[PATH_MAX];
    if (d != NULL) {
        while ((de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                continue;
            snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
            REQUIRE(unlink(path) == 0);
        }
        closedir(d);
        REQUIRE(rmdir(dir) == 0);
    }
    free(dir);
}

static int seg_names(const char *dir, char names[][64], int max)
{
    struct dirent **list;
    int n = scandir(dir, &list, seg_filter, alphasort);
    REQUIRE(n >= 0 && n <= max);
    for (int i = 0; i < n; i++) {
        snprintf(names[i], 64, "%.63s", list[i]->d_name);
        free(list[i]);
    }
    free(list);
    return n;
}

static uint64_t dir_bytes(const char *dir)
{
    char names[4096][64], path[PATH_MAX];
    int n = seg_names(dir, names, 4096);
    uint64_t b = 0;
    for (int i = 0; i < n; i++) {
        struct stat sb;
        snprintf(path, sizeof(path), "%s/%.63s", dir, names[i]);
        REQUIRE(stat(path, &sb) == 0);
        b += (uint64_t)sb.st_size;
    }
    return b;
}

/* One loop per persist opened (a loop has no way to take a before-sleep hook back). */
static cs_loop_t *loops[256];
static int n_loops;
static cs_loop_t *loop;

static cs_loop_t *new_loop(void)
{
    REQUIRE(n_loops < 256 && cs_loop_new(&loops[n_loops]) == 0);
    return loops[n_loops++];
}

static cs_persist_t *popen_(cs_store_t *st, const char *dir, cs_jsync_t mode, uint64_t max_bytes, size_t seg)
{
    cs_persist_t *p;
    char detail[256];
    cs_persist_opts_t o = {.dir = dir, .fsync = mode, .max_bytes = max_bytes, .segment_bytes = seg};
    loop = new_loop();
    int rc = cs_persist_open(&p, loop, st, &o, detail, sizeof(detail));
    if (rc != 0)
        fprintf(stderr, "cs_persist_open: %s\n", detail);
    REQUIRE(rc == 0);
    return p;
}

/* The end of a loop turn: the deferred flush and the before-sleep hook. */
static void turn(cs_persist_t *p)
{
    cs_defer_cancel(loop, &p->flush_defer);
    on_prepare(p);
}

/* Waits for the sync thread (until a sync covers everything written, or one fails) and hands its reports
 * to persist. */
static void wait_sync(cs_persist_t *p)
{
    for (int i = 0; i < 100; i++) {
        struct pollfd pfd = {.fd = cs_journal_fd(p->j), .events = POLLIN};
        if (poll(&pfd, 1, 5000) != 1) {
            cs_journal_pos_t pos;
            cs_journal_position(p->j, &pos);
            fprintf(stderr, "no sync: durable %llu written %llu pending %llu degraded %d snap_waiting %d\n",
                    (unsigned long long)p->durable, (unsigned long long)pos.written,
                    (unsigned long long)pos.pending, p->degraded, p->snap_waiting);
            REQUIRE(0);
        }
        int was = p->degraded;
        on_sync(&p->io, CS_IO_READ);
        cs_journal_pos_t pos;
        cs_journal_position(p->j, &pos);
        if (p->durable >= pos.written || p->degraded != was)
            return;
    }
    REQUIRE(0);
}

/* A completion that records its outcome. */
typedef struct outcome {
    int called;
    cs_err_t e;
    uint64_t seq;
    char detail[256];
} outcome_t;

static void on_done(void *data, cs_err_t e, const cs_publish_t *pub, const char *detail)
{
    outcome_t *o = data;
    o->called++;
    o->e = e;
    o->seq = pub->seq;
    snprintf(o->detail, sizeof(o->detail), "%s", detail);
}

static int holding; /* submit_ev's completion can hold its acknowledgement (a producer's, ingest.c) */

static cs_err_t submit_ev(cs_store_t *st, const char *x, const char *type, const char *eid, outcome_t *o,
                          cs_publish_t *pub)
{
    char detail[256];
    json_t *ev = json_pack("{s:s, s:s}", "execution_id", x, "type", type);
    if (eid != NULL)
        json_object_set_new(ev, "event_id", json_string(eid));
    if (strcmp(type, "human_input_required") == 0)
        json_object_set_new(ev, "task_id", json_string("t1"));
    cs_store_done_t done = {on_done, o, holding};
    memset(o, 0, sizeof(*o));
    cs_err_t e = cs_store_submit_raw(st, ev, NULL, 0, cs_unix_ms(), &done, pub, detail, sizeof(detail));
    if (e != CS_OK && e != CS_PENDING)
        snprintf(o->detail, sizeof(o->detail), "%s", detail);
    json_decref(ev);
    return e;
}

static const cs_store_limits_t lim_big = {.ring_events = 16,
                                          .ring_bytes = 4096,
                                          .max_bytes = 48 << 10,
                                          .retain_s = 1000000000,
                                          .global_events = 32};

/* The journal in dir replayed into a new store *b (its persist *q: the caller closes and frees them):
 * execution x of it, which must be there. */
static cs_exec_t *replayed_exec(const char *dir, const char *x, cs_store_t **b, cs_persist_t **q)
{
    REQUIRE(cs_store_new(b, &lim_big) == 0);
    *q = popen_(*b, dir, CS_JSYNC_NONE, 0, 0);
    cs_exec_t *ex = cs_store_find(*b, x, strlen(x));
    REQUIRE(ex != NULL);
    return ex;
}

/* ---- tests ---- */

/* A store journaled through persist, closed and opened again: the same store, epochs, cursors. */
static void test_restart_rebuilds(void)
{
    for (unsigned seed = 1; seed <= 3; seed++) {
        char *dir = tmpdir();
        cs_store_t *a, *b;
        REQUIRE(cs_store_new(&a, &lim_big) == 0);
        cs_persist_t *p = popen_(a, dir, CS_JSYNC_NONE, 0, 4096);
        drive(a, seed);
        turn(p);
        cs_persist_close(p);
        cs_store_set_observer(a, NULL);

        REQUIRE(cs_store_new(&b, &lim_big) == 0);
        cs_persist_t *q = popen_(b, dir, CS_JSYNC_NONE, 0, 4096);
        cs_persist_stats_t ps;
        cs_persist_stats(q, &ps);
        CHECK(ps.replay_records > 0 && ps.replay_skipped == 0 && !ps.degraded);
        check_same(a, b);
        CHECK(cs_store_global_epoch(a) == cs_store_global_epoch(b));

        /* A cursor handed out before the restart resumes exactly after it, on both streams. */
        cs_exec_t *x = cs_store_find(a, "x1", 2);
        if (x != NULL && x->next_seq - x->first_seq >= 2) {
            char cur[CS_CURSOR_MAX];
            size_t n = cs_cursor_format(cur, sizeof(cur), x->epoch, x->first_seq);
            cs_start_t start = {.kind = CS_START_AFTER_ID, .id = cur, .id_len = n};
            cs_sub_t sub;
            cs_item_t it;
            REQUIRE(cs_sub_open(b, &sub, "x1", 2, &start, NULL, &ops, NULL) == 0);
            REQUIRE(cs_sub_next(&sub, &it) == 1);
            CHECK(it.frame != NULL && it.frame->seq == x->first_seq + 1);
            cs_sub_close(&sub);
        }
        if (a->gnext - a->gfirst >= 2) {
            char cur[CS_CURSOR_MAX];
            size_t n = cs_cursor_format(cur, sizeof(cur), a->gepoch, a->gfirst);
            cs_start_t start = {.kind = CS_START_AFTER_ID, .id = cur, .id_len = n};
            cs_sub_t sub;
            cs_item_t it;
            REQUIRE(cs_sub_open(b, &sub, NULL, 0, &start, NULL, &ops, NULL) == 0);
            REQUIRE(cs_sub_next(&sub, &it) == 1);
            CHECK(it.frame != NULL && it.frame->gseq == a->gfirst + 1);
            cs_sub_close(&sub);
        }
        /* The next event continues the seqs. */
        cs_publish_t pa, pb;
        outcome_t oa, ob;
        CHECK(submit_ev(a, "x2", "log", NULL, &oa, &pa) == CS_OK);
        CHECK(submit_ev(b, "x2", "log", NULL, &ob, &pb) == CS_PENDING);
        CHECK(pa.seq == pb.seq);
        turn(q);
        CHECK(ob.called == 1 && ob.e == CS_OK && ob.seq == pb.seq);
        cs_persist_close(q);
        cs_store_free(a);
        cs_store_free(b);
        rmdir_all(dir);
    }
}

/* What each fsync mode waits for before a publish is acknowledged. */
static void test_ack_rules(void)
{
    cs_jsync_t modes[] = {CS_JSYNC_NONE, CS_JSYNC_EVERYSEC, CS_JSYNC_ALWAYS};
    for (int m = 0; m < 3; m++) {
        char *dir = tmpdir();
        cs_store_t *st;
        cs_publish_t pub;
        outcome_t o1, o2;
        REQUIRE(cs_store_new(&st, &lim_big) == 0);
        cs_persist_t *p = popen_(st, dir, modes[m], 0, 0);
        turn(p);
        if (modes[m] != CS_JSYNC_NONE)
            wait_sync(p); /* the opening snapshot's, under everysec the first tick's */

        /* An ordinary event: after write() under none and everysec, after a sync under always. */
        CHECK(submit_ev(st, "a", "log", NULL, &o1, &pub) == CS_PENDING);
        CHECK(o1.called == 0);
        turn(p);
        if (modes[m] == CS_JSYNC_ALWAYS) {
            CHECK(o1.called == 0);
            wait_sync(p);
        }
        CHECK(o1.called == 1 && o1.e == CS_OK && o1.seq == 1);

        /* A human-input request: after a sync under everysec and always, after write() under none. */
        CHECK(submit_ev(st, "a", "human_input_required", "q1", &o1, &pub) == CS_PENDING);
        CHECK(submit_ev(st, "a", "log", NULL, &o2, &pub) == CS_PENDING); /* behind it, in order */
        turn(p);
        if (modes[m] != CS_JSYNC_NONE) {
            CHECK(o1.called == 0 && o2.called == 0);
            wait_sync(p);
        }
        CHECK(o1.called == 1 && o1.e == CS_OK && o1.seq == 2);
        CHECK(o2.called == 1 && o2.e == CS_OK && o2.seq == 3);
        cs_persist_stats_t ps;
        cs_persist_stats(p, &ps);
        CHECK(ps.pending == 0 && ps.records > 0 && ps.written_bytes > 0);
        CHECK(modes[m] == CS_JSYNC_NONE || ps.syncs > 0);
        cs_persist_close(p);
        cs_store_free(st);
        rmdir_all(dir);
    }
}

/* A byte flipped in the middle of a journal: the rest of that segment is lost, the start goes on, and
 * a resume into what was lost gets stream.gap; what follows the hole is there. */
static void test_hole_is_a_gap(void)
{
    char *dir = tmpdir(), names[256][64], path[PATH_MAX];
    cs_store_t *a, *b;
    cs_publish_t pub;
    outcome_t o;
    cs_store_limits_t lim = {.ring_events = 64,
                             .ring_bytes = 1 << 20,
                             .max_bytes = 1 << 24,
                             .retain_s = 1000,
                             .global_events = 256};
    REQUIRE(cs_store_new(&a, &lim) == 0);
    cs_persist_t *p = popen_(a, dir, CS_JSYNC_NONE, 0, 1024);
    for (int i = 0; i < 60; i++) {
        CHECK(submit_ev(a, i % 2 ? "h1" : "h2", "log", NULL, &o, &pub) == CS_PENDING);
        turn(p); /* one batch each: the segments roll every few events */
    }
    cs_persist_close(p);
    int n = seg_names(dir, names, 256);
    REQUIRE(n >= 4);
    /* Flip a byte in the middle of the second segment (the first holds the opening snapshot). */
    snprintf(path, sizeof(path), "%s/%.63s", dir, names[1]);
    FILE *f = fopen(path, "r+b");
    REQUIRE(f != NULL);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, CS_JREC_HEADER_SIZE + 12, SEEK_SET);
    int ch = fgetc(f);
    fseek(f, CS_JREC_HEADER_SIZE + 12, SEEK_SET);
    fputc(ch ^ 0x20, f);
    fclose(f);
    (void)len;

    REQUIRE(cs_store_new(&b, &lim) == 0);
    cs_persist_t *q = popen_(b, dir, CS_JSYNC_NONE, 0, 1024);
    cs_persist_stats_t ps;
    cs_persist_stats(q, &ps);
    CHECK(ps.replay_skipped >= 1 && !ps.degraded);
    char detail[256];
    CHECK(cs_store_check(b, NULL, NULL, detail, sizeof(detail)) == 0);
    /* The newest events are there with their seqs and cursors. */
    cs_exec_t *xa = cs_store_find(a, "h1", 2), *xb = cs_store_find(b, "h1", 2);
    REQUIRE(xa != NULL && xb != NULL);
    CHECK(xb->next_seq == xa->next_seq);
    CHECK(xb->first_seq > xa->first_seq); /* the oldest ones went with the hole */
    /* A cursor after the last event resumes with nothing missing; one before the hole gets a gap. */
    char cur[CS_CURSOR_MAX];
    cs_sub_t sub;
    cs_item_t it;
    size_t cl = cs_cursor_format(cur, sizeof(cur), xa->epoch, xa->next_seq - 2);
    cs_start_t start = {.kind = CS_START_AFTER_ID, .id = cur, .id_len = cl};
    REQUIRE(cs_sub_open(b, &sub, "h1", 2, &start, NULL, &ops, NULL) == 0);
    REQUIRE(cs_sub_next(&sub, &it) == 1);
    CHECK(it.frame != NULL && it.frame->seq == xa->next_seq - 1);
    cs_sub_close(&sub);
    cl = cs_cursor_format(cur, sizeof(cur), xa->epoch, 2);
    start.id_len = cl;
    REQUIRE(cs_sub_open(b, &sub, "h1", 2, &start, NULL, &ops, NULL) == 0);
    REQUIRE(cs_sub_next(&sub, &it) == 1);
    CHECK(it.frame == NULL && it.gap != NULL && strstr(it.gap, "stream.gap") != NULL);
    cs_sub_close(&sub);
    /* The global stream too: a global cursor into the hole gets a gap. */
    cl = cs_cursor_format(cur, sizeof(cur), a->gepoch, 3);
    start.id_len = cl;
    REQUIRE(cs_sub_open(b, &sub, NULL, 0, &start, NULL, &ops, NULL) == 0);
    REQUIRE(cs_sub_next(&sub, &it) == 1);
    CHECK(it.frame == NULL && it.gap != NULL);
    cs_sub_close(&sub);
    /* And the seqs go on. */
    CHECK(submit_ev(b, "h1", "log", NULL, &o, &pub) == CS_PENDING);
    CHECK(pub.seq == xa->next_seq);
    turn(q);
    CHECK(o.called == 1 && o.e == CS_OK);
    cs_persist_close(q);
    cs_store_free(a);
    cs_store_free(b);
    rmdir_all(dir);
}

/* A journal of a newer format version: the start is refused, naming the file. */
static void test_newer_version(void)
{
    char *dir = tmpdir(), names[16][64], path[PATH_MAX], detail[512];
    cs_store_t *a;
    REQUIRE(cs_store_new(&a, &lim_big) == 0);
    cs_persist_t *p = popen_(a, dir, CS_JSYNC_NONE, 0, 0);
    cs_persist_close(p);
    cs_store_free(a);
    REQUIRE(seg_names(dir, names, 16) == 1);
    snprintf(path, sizeof(path), "%s/%.63s", dir, names[0]);
    FILE *f = fopen(path, "r+b");
    REQUIRE(f != NULL);
    fseek(f, 8, SEEK_SET);
    fputc(CS_JREC_VERSION + 1, f);
    fclose(f);
    REQUIRE(cs_store_new(&a, &lim_big) == 0);
    cs_persist_opts_t o = {.dir = dir, .fsync = CS_JSYNC_NONE};
    CHECK(cs_persist_open(&p, loop, a, &o, detail, sizeof(detail)) == -EPROTONOSUPPORT);
    CHECK(strstr(detail, names[0]) != NULL);
    cs_store_free(a);
    rmdir_all(dir);
}

/* A producer's retry of an event whose publish is not durable yet waits for it. */
static void test_retry_of_pending(void)
{
    char *dir = tmpdir(), detail[256];
    cs_store_t *st;
    cs_publish_t p1, p2, p3;
    outcome_t o1, o2;
    REQUIRE(cs_store_new(&st, &lim_big) == 0);
    cs_persist_t *p = popen_(st, dir, CS_JSYNC_ALWAYS, 0, 0);
    turn(p);
    wait_sync(p);
    CHECK(submit_ev(st, "r", "log", "d1", &o1, &p1) == CS_PENDING);
    CHECK(submit_ev(st, "r", "log", "d1", &o2, &p2) == CS_PENDING);
    CHECK(p2.duplicate && p2.seq == p1.seq && p2.ticket != p1.ticket);
    /* Without a completion: refused, not acknowledged. */
    json_t *ev = json_pack("{s:s, s:s, s:s}", "execution_id", "r", "type", "log", "event_id", "d1");
    CHECK(cs_store_publish(st, ev, 1, &p3, detail, sizeof(detail)) == CS_ERR_UNAVAILABLE);
    CHECK(strstr(detail, "not durable yet") != NULL);
    turn(p);
    CHECK(o1.called == 0 && o2.called == 0); /* written, not synced */
    wait_sync(p);
    CHECK(o1.called == 1 && o1.e == CS_OK && o1.seq == p1.seq);
    CHECK(o2.called == 1 && o2.e == CS_OK && o2.seq == p1.seq);
    /* Once durable, a retry is acknowledged at once with the original seq. */
    CHECK(cs_store_publish(st, ev, 1, &p3, detail, sizeof(detail)) == CS_OK);
    CHECK(p3.duplicate && p3.seq == p1.seq);
    /* A retry whose producer left (forgotten) is dropped; the original still completes. */
    CHECK(submit_ev(st, "r", "log", "d2", &o1, &p1) == CS_PENDING);
    CHECK(submit_ev(st, "r", "log", "d2", &o2, &p2) == CS_PENDING);
    cs_store_forget(st, p2.ticket);
    turn(p);
    wait_sync(p);
    CHECK(o1.called == 1 && o1.e == CS_OK && o2.called == 0);
    cs_store_stats_t ss;
    cs_store_stats(st, &ss);
    CHECK(ss.pending == 0 && st->n_pending == 0);
    json_decref(ev);
    cs_persist_close(p);
    cs_store_free(st);
    rmdir_all(dir);
}

/* A write that fails (a full disk): publishes already stored keep waiting for their records (told
 * unavailable they would be stored all the same), new ones are refused before they are stored, /health's
 * reason says why; when the write succeeds again the waiting ones are acknowledged with their seqs and
 * everything goes on. */
/* A completion that can hold its acknowledgement (a producer's) is not deferred under none and everysec:
 * the publish completes at once with pub.hold, and the turn's write releases it. A retry before the write
 * is held again, or refused to a caller that cannot hold. Under always, and for a human-input request
 * under everysec, a sync is waited for as before. A write that fails releases nothing until the retry
 * writes it. */
static void test_held_acks(void)
{
    cs_jsync_t modes[] = {CS_JSYNC_NONE, CS_JSYNC_EVERYSEC, CS_JSYNC_ALWAYS};
    for (int m = 0; m < 3; m++) {
        char *dir = tmpdir();
        cs_store_t *st;
        cs_publish_t pub, pub2;
        outcome_t o, o2;
        REQUIRE(cs_store_new(&st, &lim_big) == 0);
        cs_persist_t *p = popen_(st, dir, modes[m], 0, 0);
        turn(p);
        if (modes[m] != CS_JSYNC_NONE)
            wait_sync(p);

        holding = 1;
        cs_err_t e = submit_ev(st, "h", "log", "e1", &o, &pub);
        if (modes[m] == CS_JSYNC_ALWAYS) {
            CHECK(e == CS_PENDING && pub.hold == 0);
            turn(p);
            wait_sync(p);
            CHECK(o.called == 1 && o.e == CS_OK && o.seq == pub.seq);
        } else {
            CHECK(e == CS_OK && pub.hold > cs_store_released(st) && o.called == 0);
            /* Retried before the write: held again (as far), or refused to a caller that cannot hold. */
            CHECK(submit_ev(st, "h", "log", "e1", &o2, &pub2) == CS_OK && pub2.duplicate &&
                  pub2.seq == pub.seq && pub2.hold >= pub.hold);
            holding = 0;
            CHECK(submit_ev(st, "h", "log", "e1", &o2, &pub2) == CS_ERR_UNAVAILABLE &&
                  strstr(o2.detail, "not durable yet") != NULL);
            turn(p);
            cs_journal_pos_t pos;
            cs_journal_position(p->j, &pos);
            CHECK(cs_store_released(st) >= pub.hold && pos.written >= pub.hold && o.called == 0);
            /* Written: a retry is acknowledged at once, by any caller. */
            CHECK(submit_ev(st, "h", "log", "e1", &o2, &pub2) == CS_OK && pub2.hold == 0 && pub2.duplicate);
            holding = 1;
            CHECK(submit_ev(st, "h", "log", "e1", &o2, &pub2) == CS_OK && pub2.hold == 0 && pub2.duplicate);
            /* A human-input request: synced first under everysec (deferred), written first under none. */
            e = submit_ev(st, "h", "human_input_required", "q1", &o2, &pub2);
            if (modes[m] == CS_JSYNC_EVERYSEC) {
                CHECK(e == CS_PENDING && pub2.hold == 0);
                turn(p);
                wait_sync(p);
                CHECK(o2.called == 1 && o2.e == CS_OK);
            } else {
                CHECK(e == CS_OK && pub2.hold > cs_store_released(st));
                turn(p);
                CHECK(cs_store_released(st) >= pub2.hold);
            }
        }
        if (modes[m] == CS_JSYNC_EVERYSEC) {
            /* The write fails: nothing is released until the timer's retry has written it. */
            CHECK(submit_ev(st, "h", "log", "e2", &o, &pub) == CS_OK && pub.hold > 0);
            cs_journal_test_write_errno = ENOSPC;
            turn(p);
            CHECK(cs_persist_degraded(p, NULL) && cs_store_released(st) < pub.hold);
            on_timer(&p->timer);
            CHECK(cs_store_released(st) < pub.hold);
            cs_journal_test_write_errno = 0;
            on_timer(&p->timer);
            CHECK(!cs_persist_degraded(p, NULL) && cs_store_released(st) >= pub.hold);
        }
        holding = 0;
        cs_persist_close(p);

        /* What was held and released is in the journal. */
        cs_store_t *b;
        cs_persist_t *q;
        cs_exec_t *x = replayed_exec(dir, "h", &b, &q);
        CHECK(cs_exec_find_event(x, "e1", 2) != NULL);
        CHECK(modes[m] != CS_JSYNC_EVERYSEC || cs_exec_find_event(x, "e2", 2) != NULL);
        cs_persist_close(q);
        cs_store_free(b);
        cs_store_free(st);
        rmdir_all(dir);
    }
}

/* A journal of PREFAULT_MIN bytes or more is replayed with the heap faulted in on a helper thread
 * (prefault.c): the helper runs during the replay, stops with it, and the store comes back the same. */
static void test_large_replay(void)
{
    const cs_store_limits_t lim = {.ring_events = 100000,
                                   .ring_bytes = 256u << 20,
                                   .max_bytes = 256u << 20,
                                   .retain_s = 1000000000,
                                   .global_events = 16};
    char *dir = tmpdir();
    char pad[1025], detail[256];
    cs_store_t *a, *b;
    memset(pad, 'p', 1024);
    pad[1024] = '\0';
    REQUIRE(cs_store_new(&a, &lim) == 0);
    cs_persist_t *p = popen_(a, dir, CS_JSYNC_NONE, 0, 0);
    for (int i = 0; i < 72 * 1024; i++) {
        json_t *ev =
            json_pack("{s:s, s:s, s:s}", "execution_id", i % 2 ? "big1" : "big2", "type", "log", "pad", pad);
        cs_publish_t pub;
        REQUIRE(cs_store_publish(a, ev, cs_unix_ms(), &pub, detail, sizeof(detail)) == CS_OK);
        json_decref(ev);
        if (i % 1024 == 1023)
            turn(p);
    }
    turn(p);
    cs_persist_close(p);
    cs_store_set_observer(a, NULL);

    unsigned runs = pf_runs;
    REQUIRE(cs_store_new(&b, &lim) == 0);
    cs_persist_t *q = popen_(b, dir, CS_JSYNC_NONE, 0, 0);
    cs_persist_stats_t ps;
    cs_persist_stats(q, &ps);
    CHECK(ps.replay_bytes >= PREFAULT_MIN && ps.replay_skipped == 0 && !ps.degraded);
    CHECK(pf_runs == runs + 1 && !pf_started); /* started for the replay, stopped after it */
    check_same(a, b);
    cs_persist_close(q);
    cs_store_free(a);
    cs_store_free(b);
    rmdir_all(dir);
}

static void test_degraded_write(void)
{
    char *dir = tmpdir();
    cs_store_t *st;
    cs_publish_t p1, p2;
    outcome_t o1, o2;
    const char *reason = NULL;
    REQUIRE(cs_store_new(&st, &lim_big) == 0);
    cs_persist_t *p = popen_(st, dir, CS_JSYNC_ALWAYS, 0, 0);
    turn(p);
    wait_sync(p);
    CHECK(submit_ev(st, "d", "log", "w1", &o1, &p1) == CS_PENDING);
    cs_journal_test_write_errno = ENOSPC;
    turn(p);
    CHECK(o1.called == 0); /* stored before the failure: it waits for its record to be written */
    CHECK(cs_persist_degraded(p, &reason) && strstr(reason, "No space left on device") != NULL);
    /* Refused before it is stored: no execution, no seq taken. */
    CHECK(submit_ev(st, "new", "log", NULL, &o2, &p2) == CS_ERR_UNAVAILABLE && o2.called == 0);
    CHECK(cs_store_find(st, "new", 3) == NULL);
    CHECK(submit_ev(st, "d", "log", "w1", &o2, &p2) == CS_ERR_UNAVAILABLE);
    on_timer(&p->timer); /* the retry fails too */
    CHECK(cs_persist_degraded(p, NULL));
    cs_persist_stats_t ps;
    cs_persist_stats(p, &ps);
    CHECK(ps.degraded && ps.write_errors >= 2 && ps.refused == 2 && strstr(ps.reason, "No space") != NULL);

    /* Space comes back: the retry writes the batch, publishes are accepted again, and the waiting one is
     * acknowledged (fsync always: once synced) with its seq. */
    cs_journal_test_write_errno = 0;
    on_timer(&p->timer);
    CHECK(!cs_persist_degraded(p, NULL));
    wait_sync(p);
    CHECK(o1.called == 1 && o1.e == CS_OK && o1.seq == p1.seq);
    /* A producer's retry now: the original seq, stored once. */
    CHECK(submit_ev(st, "d", "log", "w1", &o2, &p2) == CS_OK && p2.seq == p1.seq);
    CHECK(submit_ev(st, "new", "log", NULL, &o2, &p2) == CS_PENDING);
    turn(p);
    wait_sync(p);
    CHECK(o2.called == 1 && o2.e == CS_OK);
    cs_persist_close(p);

    /* What was written after the recovery is in the journal: w1 once, with its seq. */
    cs_store_t *b;
    cs_persist_t *q;
    cs_exec_t *x = replayed_exec(dir, "d", &b, &q);
    CHECK(x->next_seq == 2 && cs_exec_find_event(x, "w1", 2) != NULL);
    cs_persist_close(q);
    cs_store_free(b);
    cs_store_free(st);
    rmdir_all(dir);
}

/* A sync that fails: degraded until a sync succeeds. */
static void test_degraded_sync(void)
{
    char *dir = tmpdir();
    cs_store_t *st;
    cs_publish_t p1;
    outcome_t o1;
    REQUIRE(cs_store_new(&st, &lim_big) == 0);
    cs_persist_t *p = popen_(st, dir, CS_JSYNC_ALWAYS, 0, 0);
    turn(p);
    wait_sync(p);
    cs_journal_test_sync_errno = EIO;
    CHECK(submit_ev(st, "s", "log", NULL, &o1, &p1) == CS_PENDING);
    turn(p);
    wait_sync(p);
    CHECK(o1.called == 0); /* waits for a sync that succeeds */
    CHECK(cs_persist_degraded(p, NULL));
    cs_journal_test_sync_errno = 0;
    on_timer(&p->timer); /* asks for a sync */
    wait_sync(p);
    CHECK(!cs_persist_degraded(p, NULL));
    CHECK(o1.called == 1 && o1.e == CS_OK);
    CHECK(submit_ev(st, "s", "log", NULL, &o1, &p1) == CS_PENDING);
    turn(p);
    wait_sync(p);
    CHECK(o1.called == 1 && o1.e == CS_OK);
    cs_persist_stats_t ps;
    cs_persist_stats(p, &ps);
    CHECK(ps.sync_errors == 1);
    cs_persist_close(p);
    cs_store_free(st);
    rmdir_all(dir);
}

/* A directory that cannot be created: degraded (publishes refused), not fatal; it is retried. */
static void test_missing_dir(void)
{
    char *base = tmpdir(), dir[PATH_MAX];
    cs_store_t *st;
    cs_publish_t p1;
    outcome_t o1;
    snprintf(dir, sizeof(dir), "%s/a/b", base);
    REQUIRE(cs_store_new(&st, &lim_big) == 0);
    cs_persist_t *p = popen_(st, dir, CS_JSYNC_EVERYSEC, 0, 0);
    CHECK(cs_persist_degraded(p, NULL));
    CHECK(submit_ev(st, "m", "log", NULL, &o1, &p1) == CS_ERR_UNAVAILABLE);
    /* The parent appears: the next retry opens it. */
    char parent[PATH_MAX];
    snprintf(parent, sizeof(parent), "%s/a", base);
    REQUIRE(mkdir(parent, 0700) == 0);
    on_timer(&p->timer);
    CHECK(!cs_persist_degraded(p, NULL));
    CHECK(submit_ev(st, "m", "log", NULL, &o1, &p1) == CS_PENDING);
    turn(p);
    CHECK(o1.called == 1 && o1.e == CS_OK);
    cs_persist_close(p);
    cs_store_free(st);
    char *d2 = strdup(dir);
    rmdir_all(d2);
    rmdir(parent);
    rmdir_all(base);
}

/* The eviction order: the active list, then the finished list. */
static void check_same_order(const cs_store_t *a, const cs_store_t *b)
{
    const cs_exec_t *x, *y;
    for (x = a->active, y = b->active; x != NULL && y != NULL; x = x->lru_next, y = y->lru_next) {
        while (x != NULL && !exec_has_history(x))
            x = x->lru_next;
        if (x == NULL)
            break;
        CHECK_STR(x->id, y->id);
    }
    for (x = a->finished, y = b->finished; x != NULL && y != NULL; x = x->lru_next, y = y->lru_next)
        CHECK_STR(x->id, y->id);
    CHECK(x == NULL && y == NULL);
    CHECK(a->first_orders == b->first_orders && a->gepoch == b->gepoch);
}

/* A snapshot replayed into another store (which held something else) gives the same store; the records
 * after it apply on top. */
static void test_snapshot_roundtrip(void)
{
    cs_store_limits_t lim = {.ring_events = 16,
                             .ring_bytes = 4096,
                             .max_bytes = 48 << 10,
                             .retain_s = 1000000,
                             .global_events = 32};
    for (unsigned seed = 1; seed <= 6; seed++) {
        journal_t snap = {0}, after = {0};
        cs_store_t *a, *b;
        char detail[300];
        REQUIRE(cs_store_new(&a, &lim) == 0);
        REQUIRE(cs_store_new(&b, &lim) == 0);
        drive(b, seed + 1000); /* what the snapshot replaces */
        drive(a, seed);
        REQUIRE(cs_store_snapshot(a, journal_record, &snap) == 0);
        CHECK(snap.v[0].c.kind == CS_CHANGE_SNAP_BEGIN && snap.v[snap.n - 1].c.kind == CS_CHANGE_SNAP_END);
        for (size_t i = 0; i < snap.n; i++) {
            if (cs_store_replay(b, &snap.v[i].c, detail, sizeof(detail)) != 0) {
                fprintf(stderr, "seed %u: snapshot record %zu (kind %d): %s\n", seed, i,
                        (int)snap.v[i].c.kind, detail);
                REQUIRE(0);
            }
        }
        check_same(a, b);
        check_same_order(a, b);
        cs_store_stats_t sa, sb;
        cs_store_stats(a, &sa);
        cs_store_stats(b, &sb);
        CHECK(sa.open_requests == sb.open_requests && sa.open_request_bytes == sb.open_request_bytes);
        CHECK(sa.pinned_bytes == sb.pinned_bytes);
        /* Records after the snapshot, applied on top. */
        cs_store_set_observer(a, &(cs_store_observer_t){journal_record, &after});
        drive(a, seed + 100);
        for (size_t i = 0; i < after.n; i++) {
            if (cs_store_replay(b, &after.v[i].c, detail, sizeof(detail)) != 0) {
                fprintf(stderr, "seed %u: record %zu after the snapshot (kind %d): %s\n", seed, i,
                        (int)after.v[i].c.kind, detail);
                REQUIRE(0);
            }
        }
        check_same(a, b);
        check_same_order(a, b);
        cs_store_free(a);
        cs_store_free(b);
        journal_free(&snap);
        journal_free(&after);
    }
}

/* Many short executions past a small journal.max_bytes: snapshots delete what went before them, the
 * directory stays under max_bytes at every step, and a restart rebuilds the same store. */
static void test_bounded(void)
{
    char *dir = tmpdir();
    const uint64_t max = 256 << 10;
    cs_store_limits_t lim = {.ring_events = 16,
                             .ring_bytes = 8192,
                             .max_bytes = 64 << 10,
                             .retain_s = 1000000,
                             .global_events = 64};
    cs_store_t *a, *b;
    cs_publish_t pub;
    outcome_t o;
    uint64_t most = 0;
    REQUIRE(cs_store_new(&a, &lim) == 0);
    cs_persist_t *p = popen_(a, dir, CS_JSYNC_EVERYSEC, max, 16 << 10);
    turn(p);
    char x[32];
    for (int i = 0; i < 6000; i++) {
        snprintf(x, sizeof(x), "short-%d", i / 4);
        const char *type = i % 4 == 0 ? "run.started" : i % 4 == 3 ? "run.completed" : "log";
        CHECK(submit_ev(a, x, type, NULL, &o, &pub) == CS_PENDING);
        if (i % 3 == 0) {
            turn(p);
            while (p->snap_waiting ||
                   p->del_pending) { /* the snapshot's sync, then the segments before it go */
                struct pollfd pfd = {.fd = cs_journal_fd(p->j), .events = POLLIN};
                REQUIRE(poll(&pfd, 1, 5000) == 1);
                on_sync(&p->io, CS_IO_READ);
            }
            uint64_t b = dir_bytes(dir);
            if (b > most)
                most = b;
            CHECK(b <= max);
        }
    }
    turn(p);
    cs_persist_stats_t ps;
    cs_persist_stats(p, &ps);
    CHECK(ps.snapshots >= 3 && ps.segments_deleted >= 3);
    fprintf(stderr,
            "   %" PRIu64 " snapshots, %" PRIu64 " segments deleted, at most %" PRIu64
            " bytes on disk (max %" PRIu64 "), the last snapshot held the loop %" PRIu64 " us\n",
            ps.snapshots, ps.segments_deleted, most, max, ps.snapshot_us_last);
    cs_persist_close(p);
    REQUIRE(cs_store_new(&b, &lim) == 0);
    cs_persist_t *q = popen_(b, dir, CS_JSYNC_EVERYSEC, max, 16 << 10);
    cs_persist_stats(q, &ps);
    CHECK(ps.replay_skipped == 0);
    check_same(a, b);
    check_same_order(a, b);
    cs_persist_close(q);
    CHECK(dir_bytes(dir) <= max);
    cs_store_free(a);
    cs_store_free(b);
    rmdir_all(dir);
}

/* A loop turn for a snapshot in progress: the timer that gives it its next step, the before-sleep hook
 * (the step, written with the turn's records), and the sync thread's report when there is one. */
static void snap_turn(cs_persist_t *p)
{
    struct pollfd pfd = {.fd = cs_journal_fd(p->j), .events = POLLIN};
    if (p->snap_active)
        on_snap_timer(&p->snap_timer);
    turn(p);
    if (poll(&pfd, 1, p->snap_waiting || p->del_pending ? 200 : 0) ==
        1) /* a finished snapshot's sync: waited for */
        on_sync(&p->io, CS_IO_READ);
}

static cs_persist_t *hook_p;
static int hook_every;
static uint64_t hook_steps;

/* drive's hook: a loop turn after each change, and a snapshot begun every hook_every changes. */
static void snapshot_hook(cs_store_t *st, int i)
{
    (void)st;
    if (i % hook_every == 0 && !hook_p->snap_active && !hook_p->snap_waiting) {
        take_snapshot(hook_p);
    }
    if (hook_p->snap_active)
        hook_steps++;
    snap_turn(hook_p);
}

/* What the store counts for its executions' rings and event-id indexes (their capacity). */
static size_t ring_overheads(cs_store_t *st)
{
    size_t n = 0;
    cs_exec_t *ex, *tmp;
    HASH_ITER(hh, st->execs, ex, tmp)
    {
        n += ex->ring_cap * sizeof(cs_frame_t *) + ex->idx_cap * sizeof(id_slot_t);
    }
    return n;
}

/* Snapshots written a few hundred bytes per turn while the store changes under them (publishes of every
 * kind, evictions, expiry, requests and answers between their steps, segments rolling inside them), then
 * replayed: the same store, list order included. Odd seeds stop with a snapshot half written (as a crash
 * would leave it): the start replays from the one before it, and the live records amid the unfinished one. */
static void test_snapshot_interleaved(void)
{
    for (unsigned seed = 1; seed <= 8; seed++) {
        char *dir = tmpdir();
        cs_store_t *a, *b;
        REQUIRE(cs_store_new(&a, &lim_big) == 0);
        cs_persist_t *p = popen_(a, dir, CS_JSYNC_NONE, 0, 4096);
        p->snap_step_bytes = 300; /* an execution or a few frames a turn */
        hook_p = p;
        hook_every = 97;
        hook_steps = 0;
        drive_hook = snapshot_hook;
        drive(a, seed);
        drive_hook = NULL;
        if (seed % 2 == 1) {
            if (!p->snap_active)
                take_snapshot(p);
            for (int i = 0; i < 3 && p->snap_active; i++)
                snap_turn(p);
            CHECK(p->snap_active); /* closed half written */
        } else {
            while (p->snap_active)
                snap_turn(p);
        }
        cs_persist_stats_t ps;
        cs_persist_stats(p, &ps);
        /* Whole ones (begun by the hook, or when the log outgrew the last one), many turns each. */
        CHECK(ps.snapshots >= 10 && hook_steps > 4 * ps.snapshots);
        if (seed <= 2)
            fprintf(stderr,
                    "   %" PRIu64 " snapshots written amid the changes, %" PRIu64 " turns inside them\n",
                    ps.snapshots, hook_steps);
        cs_persist_close(p);

        REQUIRE(cs_store_new(&b, &lim_big) == 0);
        cs_persist_t *q = popen_(b, dir, CS_JSYNC_NONE, 0, 4096);
        cs_persist_stats(q, &ps);
        CHECK(ps.replay_records > 0 && ps.replay_skipped == 0 && !ps.degraded);
        check_same(a, b);
        check_same_order(a, b);
        cs_store_stats_t sa, sb;
        cs_store_stats(a, &sa);
        cs_store_stats(b, &sb);
        CHECK(sa.open_requests == sb.open_requests && sa.pinned_bytes == sb.pinned_bytes);
        /* The same bytes but for the rings' capacity: a ring grown live (doubling from 8) may come back
         * smaller when the records replayed never filled it (it grows again on demand). */
        CHECK(sa.bytes - ring_overheads(a) == sb.bytes - ring_overheads(b));
        /* And the next event continues the seqs. */
        cs_publish_t pa, pb;
        outcome_t oa, ob;
        CHECK(submit_ev(a, "x1", "log", NULL, &oa, &pa) == CS_PENDING || oa.e == CS_OK);
        CHECK(submit_ev(b, "x1", "log", NULL, &ob, &pb) == CS_PENDING);
        CHECK(pa.seq == pb.seq);
        cs_persist_close(q);
        cs_store_free(a);
        cs_store_free(b);
        rmdir_all(dir);
    }
}

/* thread_cpu_us: persist.c's (included above). */

/* How long a snapshot of a full store holds the loop (the bench reports it): a 32 MiB store of 1 KiB
 * events in 400 executions, snapshotted as the journal opens, written whole in one turn (as before
 * snapshots were written across turns: a step without a budget) and then a step per turn, with publishes
 * between the steps. Both replay to the same store. */
static void test_snapshot_pause(void)
{
    char detail[256], body[1100];
    cs_store_limits_t lim = {.ring_events = 1000,
                             .ring_bytes = 1 << 20,
                             .max_bytes = 32 << 20,
                             .retain_s = 1000000000,
                             .global_events = 1 << 16};
    cs_publish_t pub;
    cs_store_stats_t ss;
    uint64_t whole_us = 0;
    memset(body, 'x', 1000);
    body[1000] = '\0';
    for (int mode = 0; mode < 2; mode++) {
        char *dir = tmpdir();
        cs_store_t *st;
        REQUIRE(cs_store_new(&st, &lim) == 0);
        for (int i = 0; i < 40000; i++) {
            char line[1300], x[16];
            snprintf(x, sizeof(x), "p%d", i % 400);
            int n = snprintf(line, sizeof(line), "{\"execution_id\":\"%s\",\"type\":\"log\",\"m\":\"%s\"}", x,
                             body);
            cs_event_fields_t fl = {
                .execution_id = x, .execution_id_len = strlen(x), .type = "log", .type_len = 3};
            REQUIRE(cs_store_publish_fields(st, &fl, line, (size_t)n, 1, &pub, detail, sizeof(detail)) ==
                    CS_OK);
        }
        cs_store_stats(st, &ss);
        /* mode 0: the whole snapshot in the first step (the open's), as it was written before. */
        cs_persist_opts_t o = {.dir = dir, .fsync = CS_JSYNC_NONE, .snapshot_step = mode == 0 ? SIZE_MAX : 0};
        cs_persist_t *p;
        loop = new_loop();
        /* The pause: each turn's wall time and the thread's CPU time in it (less moved by the other
         * processes on a busy machine), the open's first step and its write included. */
        uint64_t t0 = pmono_us(), c0 = thread_cpu_us(), wall_max, cpu_max;
        REQUIRE(cs_persist_open(&p, loop, st, &o, detail, sizeof(detail)) == 0); /* the open's snapshot */
        wall_max = pmono_us() - t0;
        cpu_max = thread_cpu_us() - c0;
        uint64_t turns = 0, publishes = 0;
        while (p->snap_active) {
            uint64_t tw = pmono_us(), tc = thread_cpu_us();
            /* Producers go on meanwhile: a few events a turn, into executions written and not yet. */
            for (int k = 0; k < 4; k++) {
                char line[1300], x[16];
                snprintf(x, sizeof(x), "p%d", (int)((turns * 7 + (uint64_t)k * 101) % 400));
                int n = snprintf(line, sizeof(line),
                                 "{\"execution_id\":\"%s\",\"type\":\"log\",\"m\":\"%s\"}", x, body);
                cs_event_fields_t fl = {
                    .execution_id = x, .execution_id_len = strlen(x), .type = "log", .type_len = 3};
                static outcome_t o; /* answered in a later turn */
                cs_store_done_t done = {on_done, &o};
                REQUIRE(cs_store_submit_fields(st, &fl, line, (size_t)n, 1, &done, &pub, detail,
                                               sizeof(detail)) == CS_PENDING);
                publishes++;
            }
            snap_turn(p);
            turns++;
            tw = pmono_us() - tw;
            tc = thread_cpu_us() - tc;
            wall_max = tw > wall_max ? tw : wall_max;
            cpu_max = tc > cpu_max ? tc : cpu_max;
        }
        uint64_t total_us = pmono_us() - t0;
        cs_persist_stats_t ps;
        cs_persist_stats(p, &ps);
        fprintf(stderr,
                "   %s: snapshot of a %zu-byte store (%zu frames) over %" PRIu64 " turns (%" PRIu64
                " publishes amid it) in %.1f ms; the longest turn: %" PRIu64 " us (%" PRIu64
                " us of CPU), its longest step %" PRIu64 " us\n",
                mode == 0 ? "whole (one turn)" : "in steps        ", ss.bytes, ss.frames_live, turns + 1,
                publishes, (double)total_us / 1000.0, wall_max, cpu_max, ps.snapshot_us_last);
        CHECK(ps.snapshots == 1);
        /* What a turn writes is bounded (a step's budget and the execution it ends in: 56 frames here); how
         * long that takes on this machine is reported, and compared within this run. */
        if (mode == 0)
            whole_us = cpu_max;
        else
            CHECK(turns > 50 && p->snap_step_max <= CS_PERSIST_SNAP_STEP + (64u << 10) && cpu_max < whole_us);
        cs_persist_close(p);
        cs_store_t *b;
        REQUIRE(cs_store_new(&b, &lim) == 0);
        cs_persist_t *q = popen_(b, dir, CS_JSYNC_NONE, 0, 0);
        cs_persist_stats(q, &ps);
        fprintf(stderr, "   replayed %" PRIu64 " records (%" PRIu64 " bytes) in %" PRIu64 " us\n",
                ps.replay_records, ps.replay_bytes, ps.replay_us);
        check_same(st, b);
        check_same_order(st, b);
        cs_persist_close(q);
        cs_store_free(st);
        cs_store_free(b);
        rmdir_all(dir);
    }
}

/* Segments before the newest whole snapshot are never read: a checksum that fails in one of them (where
 * the replay would log and count it) goes unnoticed, and the store is the snapshot's plus what follows. */
static void test_superseded_not_read(void)
{
    char *dir = tmpdir(), names[256][64], path[PATH_MAX];
    cs_store_t *a, *b, *c;
    cs_publish_t pub;
    outcome_t o;
    REQUIRE(cs_store_new(&a, &lim_big) == 0);
    cs_persist_t *p = popen_(a, dir, CS_JSYNC_NONE, 0, 1024);
    for (int i = 0; i < 40; i++) {
        CHECK(submit_ev(a, i % 2 ? "s1" : "s2", "log", NULL, &o, &pub) == CS_PENDING);
        turn(p); /* the segments roll every few events */
    }
    cs_persist_close(p);
    /* Opened again: replayed, then a snapshot of that store begins a new segment; a few events after it. */
    REQUIRE(cs_store_new(&b, &lim_big) == 0);
    cs_persist_t *q = popen_(b, dir, CS_JSYNC_NONE, 0, 1024);
    for (int i = 0; i < 6; i++) {
        CHECK(submit_ev(b, "s1", "log", NULL, &o, &pub) == CS_PENDING);
        turn(q);
    }
    cs_persist_close(q);
    cs_store_set_observer(b, NULL);
    /* The newest snapshot segment, and damage in every log segment before it (those the first open wrote,
     * still there: their deletion waits for a sync nobody ran). */
    int n = seg_names(dir, names, 256), newest = -1, damaged = 0;
    for (int i = 0; i < n; i++) {
        unsigned char head[CS_JREC_HEADER_SIZE];
        snprintf(path, sizeof(path), "%s/%.63s", dir, names[i]);
        FILE *f = fopen(path, "rb");
        REQUIRE(f != NULL && fread(head, 1, sizeof(head), f) == sizeof(head));
        fclose(f);
        if (cs_jrec_header_flags(head) & CS_JREC_FLAG_SNAPSHOT)
            newest = i;
    }
    REQUIRE(newest > 1);
    for (int i = 1; i < newest; i++) {
        snprintf(path, sizeof(path), "%s/%.63s", dir, names[i]);
        FILE *f = fopen(path, "r+b");
        REQUIRE(f != NULL);
        fseek(f, CS_JREC_HEADER_SIZE + 12, SEEK_SET);
        int ch = fgetc(f);
        fseek(f, CS_JREC_HEADER_SIZE + 12, SEEK_SET);
        fputc(ch ^ 0x20, f);
        fclose(f);
        damaged++;
    }
    REQUIRE(damaged >= 1);

    REQUIRE(cs_store_new(&c, &lim_big) == 0);
    cs_persist_t *r = popen_(c, dir, CS_JSYNC_NONE, 0, 1024);
    cs_persist_stats_t ps;
    cs_persist_stats(r, &ps);
    CHECK(ps.replay_skipped == 0 && ps.replay_truncated == 0 && !ps.degraded);
    check_same(b, c);
    cs_persist_close(r);
    cs_store_free(a);
    cs_store_free(b);
    cs_store_free(c);
    rmdir_all(dir);
}

/* When a snapshot is due (no max_bytes: the log alone decides): 32x the last snapshot, but at least a
 * segment and at most four; twice the snapshot for one larger than two segments. */
static void test_snapshot_policy(void)
{
    char *dir = tmpdir();
    cs_store_t *st;
    REQUIRE(cs_store_new(&st, &lim_big) == 0);
    cs_persist_t *p = popen_(st, dir, CS_JSYNC_NONE, 0, 1 << 20);
    turn(p);
    while (p->snap_waiting || p->del_pending) {
        struct pollfd pfd = {.fd = cs_journal_fd(p->j), .events = POLLIN};
        REQUIRE(poll(&pfd, 1, 5000) == 1);
        on_sync(&p->io, CS_IO_READ);
    }
    uint64_t written = p->written;
    struct {
        uint64_t snap, log;
        int due;
    } cases[] = {
        {1000, (1 << 20) - 1, 0},      /* a tiny store: a segment */
        {1000, 1 << 20, 1},            /* ... */
        {100 << 10, 3u << 20, 0},      /* 100 KiB: 32x = 3.125 MiB */
        {100 << 10, 3200u << 10, 1},   /* ... */
        {1 << 20, (4u << 20) - 1, 0},  /* 1 MiB: 32x is past four segments, so four */
        {1 << 20, 4u << 20, 1},        /* ... */
        {3u << 20, (6u << 20) - 1, 0}, /* 3 MiB: twice the snapshot */
        {3u << 20, 6u << 20, 1},       /* ... */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        p->snap_size = cases[i].snap;
        p->snap_end = 0;
        p->written = cases[i].log;
        CHECK(should_snapshot(p) == cases[i].due);
    }
    p->written = written;
    p->snap_end = written;
    cs_persist_close(p);
    cs_store_free(st);
    rmdir_all(dir);
}

int main(void)
{
    loop = new_loop();
    cs_log_set_level(CS_LOG_ERROR);
    fprintf(stderr, "-- test_restart_rebuilds\n");
    test_restart_rebuilds();
    fprintf(stderr, "-- test_ack_rules\n");
    test_ack_rules();
    fprintf(stderr, "-- test_hole_is_a_gap\n");
    test_hole_is_a_gap();
    fprintf(stderr, "-- test_newer_version\n");
    test_newer_version();
    fprintf(stderr, "-- test_retry_of_pending\n");
    test_retry_of_pending();
    fprintf(stderr, "-- test_held_acks\n");
    test_held_acks();
    fprintf(stderr, "-- test_large_replay\n");
    test_large_replay();
    fprintf(stderr, "-- test_degraded_write\n");
    test_degraded_write();
    fprintf(stderr, "-- test_degraded_sync\n");
    test_degraded_sync();
    fprintf(stderr, "-- test_missing_dir\n");
    test_missing_dir();
    fprintf(stderr, "-- test_snapshot_roundtrip\n");
    test_snapshot_roundtrip();
    fprintf(stderr, "-- test_bounded\n");
    test_bounded();
    fprintf(stderr, "-- test_snapshot_interleaved\n");
    test_snapshot_interleaved();
    fprintf(stderr, "-- test_snapshot_pause\n");
    test_snapshot_pause();
    fprintf(stderr, "-- test_snapshot_policy\n");
    test_snapshot_policy();
    fprintf(stderr, "-- test_superseded_not_read\n");
    test_superseded_not_read();
    for (int i = 0; i < n_loops; i++)
        cs_loop_free(loops[i]);
    fprintf(stderr, "%d checks, %d failed\n", ct_checks, ct_failures);
    return ct_failures != 0;
}
