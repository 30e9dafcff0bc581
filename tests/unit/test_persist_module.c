/*
 * test_persist_module.c - module records in the journal (persist.h: cs_persist_append_aux,
 * cs_persist_set_module; the kinds of jrecord.h's CS_JREC_AUX range): they are written with the turn's
 * batch, come back in order to the module once it attaches (never to the store), survive the snapshot
 * taken at open before the module attached (carried over as read), and later snapshots begin with the
 * module's own state, so the deletion of older segments loses nothing.
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

/* The seam test's store sources and helpers; its own main is renamed away. */
#define main seam_main
#include "test_store_seam.c"
#undef main

static cs_loop_t *loops[16];
static int n_loops;
static cs_loop_t *loop;

static char *tmpdir(void)
{
    char tmpl[] = "/tmp/cs_pmod_XXXXXX";
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

static int n_segments(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int n = 0;
    REQUIRE(d != NULL);
    while ((de = readdir(d)) != NULL)
        n += strlen(de->d_name) == 24 && strcmp(de->d_name + 20, ".cjs") == 0;
    closedir(d);
    return n;
}

static cs_persist_t *popen_(cs_store_t *st, const char *dir)
{
    cs_persist_t *p;
    char detail[256];
    cs_persist_opts_t o = {.dir = dir, .fsync = CS_JSYNC_NONE, .max_bytes = 0, .segment_bytes = 64 << 10};
    REQUIRE(n_loops < 16 && cs_loop_new(&loops[n_loops]) == 0);
    loop = loops[n_loops++];
    int rc = cs_persist_open(&p, loop, st, &o, detail, sizeof(detail));
    if (rc != 0)
        fprintf(stderr, "cs_persist_open: %s\n", detail);
    REQUIRE(rc == 0);
    return p;
}

static void turn(cs_persist_t *p)
{
    cs_defer_cancel(loop, &p->flush_defer);
    on_prepare(p);
}

/* Waits until the newest snapshot is durable and the segments before it are gone. */
static void wait_snapshot(cs_persist_t *p)
{
    while (p->snap_waiting || p->del_pending) {
        struct pollfd pfd = {.fd = cs_journal_fd(p->j), .events = POLLIN};
        REQUIRE(poll(&pfd, 1, 5000) == 1);
        on_sync(&p->io, CS_IO_READ);
    }
}

/* A module: records "k=<n>" it was handed, and a state it snapshots as one record. */
typedef struct mod {
    char got[64][32];
    int n_got;
    int state;     /* what its snapshot writes ("state=<n>") */
    int snapshots; /* snapshot callbacks */
    cs_persist_t *p;
} mod_t;

static void mod_replay(void *data, const cs_change_t *c)
{
    mod_t *m = data;
    REQUIRE(CS_JREC_IS_AUX(c->kind) && c->json != NULL && m->n_got < 64);
    snprintf(m->got[m->n_got++], sizeof(m->got[0]), "%d:%s", (int)c->kind - CS_JREC_AUX_FIRST, c->json);
}

static int aux(cs_persist_t *p, int kind, const char *json)
{
    cs_change_t c = {
        .kind = (cs_change_kind_t)(CS_JREC_AUX_FIRST + kind), .json = json, .json_len = strlen(json)};
    return cs_persist_append_aux(p, &c);
}

static void mod_snapshot(void *data)
{
    mod_t *m = data;
    char s[32];
    m->snapshots++;
    snprintf(s, sizeof(s), "state=%d", m->state);
    CHECK(aux(m->p, 1, s) == 0);
}

static void publish(cs_store_t *st, const char *x, int n)
{
    char pad[201];
    memset(pad, 'p', 200);
    pad[200] = '\0';
    for (int i = 0; i < n; i++) {
        json_t *ev = json_pack("{s:s, s:s, s:i, s:s}", "execution_id", x, "type", "log", "n", i, "pad", pad);
        cs_publish_t pub;
        char detail[128];
        REQUIRE(ev != NULL);
        CHECK(cs_store_publish(st, ev, cs_unix_ms(), &pub, detail, sizeof(detail)) == CS_OK);
        json_decref(ev);
    }
}

static void test_module_records(void)
{
    char *dir = tmpdir();
    cs_store_t *a, *b, *c, *e;
    cs_store_limits_t lim = {.ring_events = 16,
                             .ring_bytes = 1 << 20,
                             .max_bytes = 1 << 20,
                             .retain_s = 1000,
                             .global_events = 64};
    mod_t m1 = {0}, m2 = {0};

    /* Refused: no journal; a kind that is the store's. */
    cs_change_t s = {.kind = CS_CHANGE_EXEC_NEW};
    CHECK(cs_persist_append_aux(NULL, &s) == -ENODEV);
    CHECK(cs_persist_set_module(NULL, NULL) == 0);

    REQUIRE(cs_store_new(&a, &lim) == 0);
    cs_persist_t *p = popen_(a, dir);
    CHECK(cs_persist_append_aux(p, &s) == -EINVAL);
    publish(a, "x", 3);
    CHECK(aux(p, 0, "k=1") == 0);
    publish(a, "x", 2);
    CHECK(aux(p, 0, "k=2") == 0);
    CHECK(aux(p, 2, "k=3") == 0);
    turn(p);
    cs_persist_close(p);

    /* Reopened: the store is rebuilt without them (no fault), the module gets them in order. */
    REQUIRE(cs_store_new(&b, &lim) == 0);
    p = popen_(b, dir);
    cs_persist_stats_t st;
    cs_persist_stats(p, &st);
    CHECK(st.replay_skipped == 0);
    check_same(a, b);
    wait_snapshot(p); /* the snapshot at open (before the module attached) is durable: older segments go */
    CHECK(n_segments(dir) == 1);
    cs_persist_close(p);

    REQUIRE(cs_store_new(&c, &lim) == 0);
    p = popen_(c, dir);
    mod_t *m = &m1;
    m->p = p;
    cs_persist_module_t mod = {.replay = mod_replay, .snapshot = mod_snapshot, .data = m};
    CHECK(cs_persist_set_module(p, &mod) == 0);
    CHECK(m->n_got == 3 && strcmp(m->got[0], "0:k=1") == 0 && strcmp(m->got[1], "0:k=2") == 0 &&
          strcmp(m->got[2], "2:k=3") == 0);
    check_same(a, c);

    /* Attached: a snapshot begins with the module's state; the segments before it go. */
    wait_snapshot(p); /* the one at open */
    m->state = 7;
    CHECK(aux(p, 0, "k=4") == 0);
    int snaps = m->snapshots;
    for (int i = 0; i < 40 && m->snapshots == snaps; i++) {
        publish(c, "y", 50);
        turn(p);
    }
    CHECK(m->snapshots > snaps);
    wait_snapshot(p);
    CHECK(aux(p, 0, "k=5") == 0);
    turn(p);
    cs_persist_set_module(p, NULL); /* detached, as at shutdown */
    cs_persist_close(p);

    REQUIRE(cs_store_new(&e, &lim) == 0);
    p = popen_(e, dir);
    m = &m2;
    m->p = p;
    mod.data = m;
    cs_persist_set_module(p, &mod);
    /* The snapshot's state, then what came after it; k=1..4 went with the deleted segments. */
    CHECK(m->n_got == 2 && strcmp(m->got[0], "1:state=7") == 0 && strcmp(m->got[1], "0:k=5") == 0);
    if (m->n_got != 2)
        for (int i = 0; i < m->n_got; i++)
            fprintf(stderr, "   got %s\n", m->got[i]);
    check_same(c, e);
    cs_persist_close(p);
    cs_store_free(a);
    cs_store_free(b);
    cs_store_free(c);
    cs_store_free(e);
    rmdir_all(dir);
}

int main(void)
{
    cs_log_set_level(CS_LOG_ERROR);
    fprintf(stderr, "-- test_module_records\n");
    test_module_records();
    for (int i = 0; i < n_loops; i++)
        cs_loop_free(loops[i]);
    fprintf(stderr, "%d checks, %d failed\n", ct_checks, ct_failures);
    return ct_failures != 0;
}
