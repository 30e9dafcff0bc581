/*
 * test_journal.c - the journal (journal.h, jrecord.h): a real store journals every change into a
 * directory, and the directory replayed into an empty store rebuilds it (test_store_seam.c's driver and
 * comparison, included below); the record codec; a torn tail cut at every byte of the last record; a
 * flipped byte (the rest of its segment skipped, later segments read); a newer format version refused;
 * segments rolled and named by their first record; the sync thread under each fsync mode.
 */
#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../common/buf.c"
#include "../../src/jrecord.c"
#include "../../src/journal.c"

/* The seam test's driver (drive), in-memory journal (journal_record) and comparison (check_same); its own
 * main is renamed away. */
#define main seam_main
#include "test_store_seam.c"
#undef main

/* ---- helpers ---- */

static char *tmpdir(void)
{
    char tmpl[] = "/tmp/cs_journal_XXXXXX";
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
    REQUIRE(d != NULL);
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        REQUIRE(unlink(path) == 0);
    }
    closedir(d);
    REQUIRE(rmdir(dir) == 0);
    free(dir);
}

/* The segment files of dir, sorted; returns their count. */
static int segments(const char *dir, char names[][64], int max)
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

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    REQUIRE(f != NULL);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    REQUIRE(b != NULL && fread(b, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

static void spill(const char *path, const unsigned char *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    REQUIRE(f != NULL);
    REQUIRE(n == 0 || fwrite(b, 1, n, f) == n);
    fclose(f);
}

static off_t file_size(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0)
        return -1;
    return sb.st_size;
}

/* A change of each kind, with absent and empty strings. */
static cs_change_t sample(int i)
{
    static char json[64];
    snprintf(json, sizeof(json), "{\"execution_id\":\"x\",\"type\":\"log\",\"seq\":%d}", i + 1);
    cs_change_t c = {.kind = CS_CHANGE_PUBLISH,
                     .exec = "x",
                     .exec_len = 1,
                     .epoch = 0x1122334455667788ULL,
                     .seq = (uint64_t)i + 1,
                     .gseq = (uint64_t)i + 7,
                     .event_id = i % 3 ? "ev" : "",
                     .event_id_len = i % 3 ? 2 : 0,
                     .type = "log",
                     .type_len = 3,
                     .json = json,
                     .json_len = strlen(json),
                     .unix_ms = -5 + i,
                     .status = -(i % 4)};
    if (i % 5 == 4) {
        c.kind = CS_CHANGE_EVICT;
        c.event_id = c.type = c.json = NULL;
        c.event_id_len = c.type_len = c.json_len = 0;
    }
    return c;
}

static int same_change(const cs_change_t *a, const cs_change_t *b)
{
#define SAME_S(f)                                                                                            \
    ((a->f == NULL) == (b->f == NULL) && a->f##_len == b->f##_len &&                                         \
     (a->f == NULL || memcmp(a->f, b->f, a->f##_len) == 0))
    return a->kind == b->kind && a->epoch == b->epoch && a->seq == b->seq && a->gseq == b->gseq &&
           a->unix_ms == b->unix_ms && a->status == b->status && SAME_S(exec) && SAME_S(event_id) &&
           SAME_S(type) && SAME_S(json);
#undef SAME_S
}

/* Records read back: copies, with their record numbers. */
typedef struct got {
    journal_t j;
    uint64_t *recno;
    size_t cap;
} got_t;

static int collect(void *data, const cs_change_t *c, uint64_t recno)
{
    got_t *g = data;
    if (g->j.n == g->cap) {
        g->cap = g->cap ? 2 * g->cap : 256;
        g->recno = realloc(g->recno, g->cap * sizeof(*g->recno));
        REQUIRE(g->recno != NULL);
    }
    g->recno[g->j.n] = recno;
    journal_record(&g->j, c);
    return 0;
}

static int64_t now_ms;

/* Writes n samples, flushing every per_flush, into dir; returns their end positions in ends (may be NULL). */
static void write_samples(const char *dir, int n, int per_flush, size_t seg_bytes, cs_jsync_t mode,
                          uint64_t *ends)
{
    cs_journal_t *j;
    char detail[256];
    cs_journal_opts_t o = {.dir = dir, .fsync = mode, .segment_bytes = seg_bytes};
    REQUIRE(cs_journal_open(&j, &o, 0, detail, sizeof(detail)) == 0);
    for (int i = 0; i < n; i++) {
        cs_change_t c = sample(i);
        uint64_t end;
        REQUIRE(cs_journal_append(j, &c, &end) == 0);
        if (ends != NULL)
            ends[i] = end;
        if ((i + 1) % per_flush == 0)
            REQUIRE(cs_journal_flush(j, now_ms, detail, sizeof(detail)) == 0);
    }
    cs_journal_close(j);
}

/* ---- the codec ---- */

static void test_codec(void)
{
    cs_buf_t b;
    cs_buf_init(&b, 0);
    for (int i = 0; i < 10; i++) {
        cs_change_t c = sample(i), d;
        size_t used;
        cs_buf_free(&b);
        REQUIRE(cs_jrec_encode(&b, &c) == 0);
        CHECK(cs_buf_size(&b) == cs_jrec_size(&c));
        CHECK(cs_jrec_decode(b.p, b.len, &d, &used) == CS_JREC_OK && used == b.len);
        CHECK(same_change(&c, &d));
        CHECK(d.json == NULL || d.json[d.json_len] == '\0');
        /* Every shorter prefix is torn, never read past. */
        for (size_t k = 0; k < b.len; k++) {
            unsigned char *p = malloc(k + 1);
            memcpy(p, b.p, k);
            CHECK(cs_jrec_decode(p, k, &d, &used) == CS_JREC_TORN && used == 0);
            free(p);
        }
        /* Every flipped payload bit fails the checksum. */
        for (size_t k = CS_JREC_FRAME_SIZE; k < b.len; k += 3) {
            b.p[k] ^= 0x10;
            CHECK(cs_jrec_decode(b.p, b.len, &d, &used) == CS_JREC_BAD_CHECKSUM);
            b.p[k] ^= 0x10;
        }
    }
    /* A length past the maximum is a bad record, not a wait for 4 GiB. */
    unsigned char big[16] = {0xff, 0xff, 0xff, 0x7f};
    cs_change_t d;
    size_t used;
    CHECK(cs_jrec_decode(big, sizeof(big), &d, &used) == CS_JREC_BAD_RECORD);
    /* A kind outside the enumeration is refused both ways. */
    cs_change_t c = sample(0);
    c.kind = (cs_change_kind_t)99;
    CHECK(cs_jrec_encode(&b, &c) == -EINVAL);
    /* Headers. */
    uint32_t v;
    uint64_t first;
    cs_buf_free(&b);
    REQUIRE(cs_jrec_header_encode(&b, 42) == 0 && b.len == CS_JREC_HEADER_SIZE);
    CHECK(cs_jrec_header_decode(b.p, b.len, &v, &first) == CS_JREC_OK && v == CS_JREC_VERSION && first == 42);
    CHECK(cs_jrec_header_decode(b.p, 10, &v, &first) == CS_JREC_TORN);
    b.p[8] = 2;
    CHECK(cs_jrec_header_decode(b.p, b.len, &v, &first) == CS_JREC_NEWER_VERSION && v == 2);
    b.p[0] = 'X';
    CHECK(cs_jrec_header_decode(b.p, b.len, &v, &first) == CS_JREC_BAD_RECORD);
    CHECK(cs_jrec_header_decode(b.p, 3, &v, &first) == CS_JREC_BAD_RECORD);
    cs_buf_free(&b);
}

/* ---- a real store, journaled and replayed ---- */

typedef struct both {
    journal_t mem;
    cs_journal_t *j;
    size_t n;
} both_t;

static int journal_both(void *data, const cs_change_t *c)
{
    both_t *b = data;
    char detail[256];
    journal_record(&b->mem, c);
    REQUIRE(cs_journal_append(b->j, c, NULL) == 0);
    if (++b->n % 37 == 0) /* a loop turn */
        REQUIRE(cs_journal_flush(b->j, now_ms, detail, sizeof(detail)) == 0);
    return 0;
}

typedef struct into {
    cs_store_t *st;
    const journal_t *mem;
    size_t i;
} into_t;

static int replay_into(void *data, const cs_change_t *c, uint64_t recno)
{
    into_t *t = data;
    char detail[300];
    CHECK(recno == t->i);
    REQUIRE(t->i < t->mem->n);
    CHECK(same_change(c, &t->mem->v[t->i].c));
    t->i++;
    if (cs_store_replay(t->st, c, detail, sizeof(detail)) != 0) {
        fprintf(stderr, "record %" PRIu64 ": %s\n", recno, detail);
        return -1;
    }
    return 0;
}

static void test_store_through_the_journal(void)
{
    cs_store_limits_t lim = {
        .ring_events = 16, .ring_bytes = 4096, .max_bytes = 48 << 10, .retain_s = 2, .global_events = 32};
    for (unsigned seed = 1; seed <= 3; seed++) {
        char *dir = tmpdir(), detail[300], names[512][64];
        both_t both = {0};
        cs_journal_opts_t o = {
            .dir = dir, .fsync = seed == 1 ? CS_JSYNC_ALWAYS : CS_JSYNC_NONE, .segment_bytes = 64 << 10};
        cs_store_t *a, *b;
        REQUIRE(cs_store_new(&a, &lim) == 0);
        REQUIRE(cs_journal_open(&both.j, &o, 0, detail, sizeof(detail)) == 0);
        cs_store_set_observer(a, &(cs_store_observer_t){journal_both, &both});
        drive(a, seed);
        cs_store_set_observer(a, NULL);
        cs_journal_close(both.j);
        CHECK(segments(dir, names, 512) > 1); /* rolled */

        REQUIRE(cs_store_new(&b, &lim) == 0);
        into_t t = {b, &both.mem, 0};
        cs_journal_read_stats_t rs;
        int rc = cs_journal_read(dir, replay_into, &t, &rs, detail, sizeof(detail));
        if (rc != 0)
            fprintf(stderr, "%s\n", detail);
        REQUIRE(rc == 0);
        CHECK(t.i == both.mem.n && rs.records == both.mem.n && rs.next_record == both.mem.n);
        CHECK(rs.truncated == 0 && rs.bad_segments == 0);
        check_same(a, b);
        /* Open requests came back too (check_same compares them; here: there were some). */
        cs_store_stats_t sa, sb;
        cs_store_stats(a, &sa);
        cs_store_stats(b, &sb);
        CHECK(sa.open_requests == sb.open_requests && sa.executions >= 1);

        /* A writer opened after the replay starts a new segment after them, numbering on. */
        cs_journal_t *j;
        REQUIRE(cs_journal_open(&j, &o, rs.next_record, detail, sizeof(detail)) == 0);
        cs_change_t c = sample(0);
        REQUIRE(cs_journal_append(j, &c, NULL) == 0);
        REQUIRE(cs_journal_flush(j, now_ms, detail, sizeof(detail)) == 0);
        cs_journal_close(j);
        got_t *g = calloc(1, sizeof(*g));
        REQUIRE(cs_journal_read(dir, collect, g, &rs, detail, sizeof(detail)) == 0);
        CHECK(g->j.n == both.mem.n + 1 && g->recno[g->j.n - 1] == both.mem.n);
        journal_free(&g->j);
        free(g->recno);
        free(g);

        cs_store_free(a);
        cs_store_free(b);
        journal_free(&both.mem);
        rmdir_all(dir);
    }
}

/* ---- faults ---- */

static void test_torn_tail(void)
{
    enum { N = 6 };
    char *dir = tmpdir(), detail[256], names[8][64], path[PATH_MAX];
    uint64_t ends[N];
    write_samples(dir, N, 2, 1 << 20, CS_JSYNC_NONE, ends);
    REQUIRE(segments(dir, names, 8) == 1);
    snprintf(path, sizeof(path), "%s/%.63s", dir, names[0]);
    size_t len;
    unsigned char *orig = slurp(path, &len);
    size_t last_start = CS_JREC_HEADER_SIZE + ends[N - 2];
    REQUIRE(len == CS_JREC_HEADER_SIZE + ends[N - 1]);
    for (size_t cut = last_start; cut < len; cut++) {
        spill(path, orig, cut);
        got_t *g = calloc(1, sizeof(*g));
        cs_journal_read_stats_t rs;
        REQUIRE(cs_journal_read(dir, collect, g, &rs, detail, sizeof(detail)) == 0);
        CHECK(g->j.n == N - 1);
        for (size_t i = 0; i < g->j.n; i++) {
            cs_change_t c = sample((int)i);
            CHECK(same_change(&c, &g->j.v[i].c) && g->recno[i] == i);
        }
        CHECK(rs.truncated == (cut > last_start ? 1u : 0u) && rs.truncated_bytes == cut - last_start);
        CHECK(file_size(path) == (off_t)last_start);
        journal_free(&g->j);
        free(g->recno);
        free(g);
    }
    /* A last segment cut inside its header is removed. */
    spill(path, orig, 10);
    cs_journal_read_stats_t rs;
    got_t *g = calloc(1, sizeof(*g));
    REQUIRE(cs_journal_read(dir, collect, g, &rs, detail, sizeof(detail)) == 0);
    CHECK(g->j.n == 0 && rs.truncated == 1 && file_size(path) == -1);
    free(g);
    free(orig);
    rmdir_all(dir);
}

static void test_flipped_byte(void)
{
    char *dir = tmpdir(), detail[256], names[64][64], path[PATH_MAX];
    /* One record per flush and small segments: several segments of a few records each. */
    write_samples(dir, 40, 1, 400, CS_JSYNC_NONE, NULL);
    int nseg = segments(dir, names, 64);
    REQUIRE(nseg >= 3);
    got_t *all = calloc(1, sizeof(*all));
    cs_journal_read_stats_t rs;
    REQUIRE(cs_journal_read(dir, collect, all, &rs, detail, sizeof(detail)) == 0);
    REQUIRE(all->j.n == 40);

    /* Flip a byte inside the second record of the first segment. */
    snprintf(path, sizeof(path), "%s/%.63s", dir, names[0]);
    size_t len, used;
    unsigned char *b = slurp(path, &len);
    cs_change_t c;
    REQUIRE(cs_jrec_decode(b + CS_JREC_HEADER_SIZE, len - CS_JREC_HEADER_SIZE, &c, &used) == CS_JREC_OK);
    size_t second = CS_JREC_HEADER_SIZE + used;
    REQUIRE(second + 20 < len);
    b[second + 20] ^= 0x01;
    spill(path, b, len);
    free(b);

    /* The first segment's records after the flip are skipped; every later segment is read. */
    uint64_t first_of_seg1 = strtoull(names[1], NULL, 10);
    got_t *g = calloc(1, sizeof(*g));
    REQUIRE(cs_journal_read(dir, collect, g, &rs, detail, sizeof(detail)) == 0);
    CHECK(rs.bad_segments == 1 && rs.truncated == 0 && rs.skipped_bytes == len - second);
    REQUIRE(g->j.n == 1 + (40 - first_of_seg1));
    CHECK(g->recno[0] == 0 && g->recno[1] == first_of_seg1);
    for (size_t i = 1; i < g->j.n; i++) {
        cs_change_t s = sample((int)g->recno[i]);
        CHECK(same_change(&s, &g->j.v[i].c));
    }
    CHECK(file_size(path) == (off_t)len); /* skipped, not cut */
    journal_free(&g->j);
    free(g->recno);
    journal_free(&all->j);
    free(all->recno);
    free(g);
    free(all);
    rmdir_all(dir);
}

static void test_newer_version_refused(void)
{
    char *dir = tmpdir(), detail[512], names[64][64], path[PATH_MAX];
    write_samples(dir, 20, 1, 300, CS_JSYNC_NONE, NULL);
    int nseg = segments(dir, names, 64);
    REQUIRE(nseg >= 2);
    snprintf(path, sizeof(path), "%s/%.63s", dir, names[1]);
    size_t len;
    unsigned char *b = slurp(path, &len);
    b[8] = CS_JREC_VERSION + 1;
    spill(path, b, len);
    free(b);
    got_t *g = calloc(1, sizeof(*g));
    cs_journal_read_stats_t rs;
    CHECK(cs_journal_read(dir, collect, g, &rs, detail, sizeof(detail)) == -EPROTONOSUPPORT);
    CHECK(strstr(detail, path) != NULL && strstr(detail, "version 2") != NULL);
    CHECK(g->j.n == strtoull(names[1], NULL, 10)); /* the segments before it only */
    CHECK(file_size(path) == (off_t)len);          /* nothing touched */
    journal_free(&g->j);
    free(g->recno);
    free(g);
    rmdir_all(dir);
}

static void test_segment_roll(void)
{
    char *dir = tmpdir(), detail[256], names[128][64], path[PATH_MAX];
    write_samples(dir, 100, 3, 500, CS_JSYNC_EVERYSEC, NULL);
    int nseg = segments(dir, names, 128);
    CHECK(nseg >= 5);
    got_t *g = calloc(1, sizeof(*g));
    cs_journal_read_stats_t rs;
    REQUIRE(cs_journal_read(dir, collect, g, &rs, detail, sizeof(detail)) == 0);
    CHECK(g->j.n == 100 && rs.segments == (size_t)nseg && rs.next_record == 100);
    for (size_t i = 0; i < g->j.n; i++)
        CHECK(g->recno[i] == i);
    for (int s = 0; s < nseg; s++) {
        size_t len;
        uint32_t v;
        uint64_t first;
        snprintf(path, sizeof(path), "%s/%.63s", dir, names[s]);
        unsigned char *b = slurp(path, &len);
        /* Named by its first record, which its header names too; a segment is rolled only once full, and
         * holds whole flushes (3 records, the last one fewer). */
        CHECK(cs_jrec_header_decode(b, len, &v, &first) == CS_JREC_OK);
        CHECK(first == strtoull(names[s], NULL, 10) && first % 3 == 0);
        if (s < nseg - 1)
            CHECK(len >= 500);
        free(b);
    }
    journal_free(&g->j);
    free(g->recno);
    free(g);
    rmdir_all(dir);
}

/* Waits (bounded) until the eventfd reports a sync, returns the durable position. */
static uint64_t wait_sync(cs_journal_t *j, int timeout_ms)
{
    struct pollfd p = {.fd = cs_journal_fd(j), .events = POLLIN};
    uint64_t d = 0;
    if (poll(&p, 1, timeout_ms) == 1)
        REQUIRE(cs_journal_sync_done(j, &d) == 0);
    else
        REQUIRE(cs_journal_sync_done(j, &d) == 0);
    return d;
}

static void test_sync_thread(void)
{
    char detail[256];
    cs_journal_pos_t pos;
    uint64_t end = 0, d;

    /* always: every flush that wrote something asks for a sync; its completion covers the offset. */
    char *dir = tmpdir();
    cs_journal_t *j;
    cs_journal_opts_t o = {.dir = dir, .fsync = CS_JSYNC_ALWAYS};
    REQUIRE(cs_journal_open(&j, &o, 0, detail, sizeof(detail)) == 0);
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < 10; i++) {
            cs_change_t c = sample(i);
            REQUIRE(cs_journal_append(j, &c, &end) == 0);
        }
        REQUIRE(cs_journal_flush(j, 0, detail, sizeof(detail)) == 0);
        d = 0;
        for (int tries = 0; tries < 100 && d < end; tries++)
            d = wait_sync(j, 100);
        CHECK(d == end);
    }
    cs_journal_position(j, &pos);
    CHECK(pos.written == end && pos.durable == end && pos.syncs >= 1 && pos.syncs <= 5 && pos.records == 50);
    /* A flush with nothing new asks for nothing. */
    REQUIRE(cs_journal_flush(j, 0, detail, sizeof(detail)) == 0);
    struct pollfd p = {.fd = cs_journal_fd(j), .events = POLLIN};
    CHECK(poll(&p, 1, 50) == 0);
    cs_journal_close(j);
    rmdir_all(dir);

    /* everysec: at most one request a second; the tick covers what came after. */
    dir = tmpdir();
    o = (cs_journal_opts_t){.dir = dir, .fsync = CS_JSYNC_EVERYSEC};
    REQUIRE(cs_journal_open(&j, &o, 0, detail, sizeof(detail)) == 0);
    cs_change_t c = sample(1);
    REQUIRE(cs_journal_append(j, &c, &end) == 0);
    REQUIRE(cs_journal_flush(j, 10000, detail, sizeof(detail)) == 0);
    uint64_t first_end = end;
    d = 0;
    for (int tries = 0; tries < 100 && d < first_end; tries++)
        d = wait_sync(j, 100);
    CHECK(d == first_end);
    REQUIRE(cs_journal_append(j, &c, &end) == 0);
    REQUIRE(cs_journal_flush(j, 10500, detail, sizeof(detail)) == 0); /* half a second later: no request */
    d = wait_sync(j, 100);
    CHECK(d == first_end);
    cs_journal_tick(j, 10999);
    d = wait_sync(j, 100);
    CHECK(d == first_end);
    cs_journal_tick(j, 11000); /* a second after the last request */
    d = 0;
    for (int tries = 0; tries < 100 && d < end; tries++)
        d = wait_sync(j, 100);
    CHECK(d == end);
    cs_journal_close(j);
    rmdir_all(dir);

    /* none: never a sync from us, whatever the clock. */
    dir = tmpdir();
    o = (cs_journal_opts_t){.dir = dir, .fsync = CS_JSYNC_NONE};
    REQUIRE(cs_journal_open(&j, &o, 0, detail, sizeof(detail)) == 0);
    REQUIRE(cs_journal_append(j, &c, &end) == 0);
    REQUIRE(cs_journal_flush(j, 0, detail, sizeof(detail)) == 0);
    cs_journal_tick(j, 5000);
    CHECK(wait_sync(j, 100) == 0);
    cs_journal_position(j, &pos);
    CHECK(pos.syncs == 0 && pos.written == end);
    cs_journal_close(j);
    rmdir_all(dir);

    /* The mode names. */
    cs_jsync_t m;
    CHECK(cs_jsync_parse("everysec", &m) == 0 && m == CS_JSYNC_EVERYSEC);
    CHECK(cs_jsync_parse("sometimes", &m) == -EINVAL);
}

static void test_missing_dir(void)
{
    char detail[256];
    cs_journal_t *j;
    cs_journal_read_stats_t rs;
    cs_journal_opts_t o = {.dir = "/nonexistent/cs-journal", .fsync = CS_JSYNC_ALWAYS};
    CHECK(cs_journal_open(&j, &o, 0, detail, sizeof(detail)) == -ENOENT && strstr(detail, o.dir) != NULL);
    CHECK(cs_journal_read(o.dir, collect, NULL, &rs, detail, sizeof(detail)) == -ENOENT);
}

/* The sync thread blocks every signal, whatever its creator's mask: a SIGTERM delivered to it would take
 * its default action and kill a daemon that reads its signals from a signalfd. */
static void test_sync_thread_takes_no_signal(void)
{
    char detail[256], path[300], line[256];
    sigset_t none;
    cs_journal_t *j;
    char *dir = tmpdir();
    cs_journal_opts_t o = {.dir = dir, .fsync = CS_JSYNC_EVERYSEC};
    int threads = 0, blocked = 0;

    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, NULL);
    REQUIRE(cs_journal_open(&j, &o, 0, detail, sizeof(detail)) == 0);
    DIR *tasks = opendir("/proc/self/task");
    REQUIRE(tasks != NULL);
    for (struct dirent *e; (e = readdir(tasks)) != NULL;) {
        if (e->d_name[0] == '.' || atoi(e->d_name) == (int)getpid())
            continue;
        snprintf(path, sizeof(path), "/proc/self/task/%s/status", e->d_name);
        FILE *f = fopen(path, "r");
        if (f == NULL)
            continue;
        threads++;
        while (fgets(line, sizeof(line), f) != NULL)
            if (strncmp(line, "SigBlk:", 7) == 0) /* SIGTERM is bit 15 (from 1) of the hex mask */
                blocked += (strtoull(line + 7, NULL, 16) >> (SIGTERM - 1)) & 1;
        fclose(f);
    }
    closedir(tasks);
    CHECK(threads == 1 && blocked == 1);
    cs_journal_close(j);
    rmdir_all(dir);
}

int main(void)
{
    RUN(test_codec);
    RUN(test_store_through_the_journal);
    RUN(test_torn_tail);
    RUN(test_flipped_byte);
    RUN(test_newer_version_refused);
    RUN(test_segment_roll);
    RUN(test_sync_thread);
    RUN(test_missing_dir);
    RUN(test_sync_thread_takes_no_signal);
    CT_DONE();
}
