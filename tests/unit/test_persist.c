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

static __attribute__((unused)) uint64_t dir_bytes(const char *dir)
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

static cs_loop_t *loop;

static cs_persist_t *popen_(cs_store_t *st, const char *dir, cs_jsync_t mode, uint64_t max_bytes, size_t seg)
{
    cs_persist_t *p;
    char detail[256];
    cs_persist_opts_t o = {.dir = dir, .fsync = mode, .max_bytes = max_bytes, .segment_bytes = seg};
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

/* Waits for the sync thread and hands its report to persist. */
static void wait_sync(cs_persist_t *p)
{
    struct pollfd pfd = {.fd = cs_journal_fd(p->j), .events = POLLIN};
    REQUIRE(poll(&pfd, 1, 5000) == 1);
    on_sync(&p->io, CS_IO_READ);
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

static cs_err_t submit_ev(cs_store_t *st, const char *x, const char *type, const char *eid, outcome_t *o,
                          cs_publish_t *pub)
{
    char detail[256];
    json_t *ev = json_pack("{s:s, s:s}", "execution_id", x, "type", type);
    if (eid != NULL)
        json_object_set_new(ev, "event_id", json_string(eid));
    if (strcmp(type, "human_input_required") == 0)
        json_object_set_new(ev, "task_id", json_string("t1"));
    cs_store_done_t done = {on_done, o};
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

int main(void)
{
    REQUIRE(cs_loop_new(&loop) == 0);
    cs_log_set_level(CS_LOG_ERROR);
    fprintf(stderr, "-- test_restart_rebuilds\n");
    test_restart_rebuilds();
    fprintf(stderr, "-- test_ack_rules\n");
    test_ack_rules();
    fprintf(stderr, "-- test_hole_is_a_gap\n");
    test_hole_is_a_gap();
    fprintf(stderr, "-- test_newer_version\n");
    test_newer_version();
    cs_loop_free(loop);
    fprintf(stderr, "%d checks, %d failed\n", ct_checks, ct_failures);
    return ct_failures != 0;
}
