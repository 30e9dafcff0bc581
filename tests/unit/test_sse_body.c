/*
 * test_sse_body.c - the body of an SSE stream, byte for byte: the retry hint, events with their
 * cursors (named and unnamed, execution and global), a gap first when a resume misses, heartbeats
 * only when there is nothing else, the same bytes whatever the buffer size, and a frame held while
 * half written survives its eviction from the store.
 */
#include "../../src/cursor.c"
#include "../../src/err.c"
#include "../../src/event.c"
#include "../../src/filter.c"
#include "../../src/hitl.c"
#include "../../src/jscan.c"
#include "../../src/log.c"
#include "../../src/sse_body.c"
#include "../../src/status.c"
#include "../../src/store.c"

#include "ctest.h"

static cs_store_limits_t lim = {
    .ring_events = 4, .ring_bytes = 1 << 20, .max_bytes = 64 << 20, .retain_s = 10, .global_events = 4};

static void on_wake(cs_sub_t *s)
{
    (void)s;
}
static const cs_sub_ops_t ops = {on_wake};

static void post(cs_store_t *st, const char *exec, const char *type, size_t pad)
{
    char detail[128];
    cs_publish_t pub;
    char *msg = malloc(pad + 1);
    memset(msg, 'm', pad);
    msg[pad] = '\0';
    json_t *ev = json_pack("{s:s, s:s, s:s}", "execution_id", exec, "type", type, "message", msg);
    REQUIRE(cs_store_publish(st, ev, 1768473002123LL, &pub, detail, sizeof(detail)) == CS_OK);
    json_decref(ev);
    free(msg);
}

/* Everything the body has now, read through a buffer of `chunk` bytes. */
static char *read_all(cs_sse_body_t *b, cs_sub_t *sub, size_t chunk)
{
    size_t cap = 1 << 20, len = 0, n;
    char *out = malloc(cap + 1);
    char *buf = malloc(chunk);
    while ((n = cs_sse_body_fill(b, sub, buf, chunk)) > 0) {
        REQUIRE(n <= chunk);
        REQUIRE(len + n <= cap);
        memcpy(out + len, buf, n);
        len += n;
    }
    out[len] = '\0';
    free(buf);
    return out;
}

/* What the stream should carry for frames [from, to] of execution ex. */
static void expect_events(char *out, size_t cap, const cs_exec_t *ex, uint64_t from, uint64_t to, int named)
{
    size_t len = strlen(out);
    for (uint64_t s = from; s <= to; s++) {
        cs_frame_t *f = cs_exec_frame(ex, s);
        char cur[CS_CURSOR_MAX];
        REQUIRE(f != NULL);
        cs_cursor_format(cur, sizeof(cur), ex->epoch, s);
        if (named)
            len += (size_t)snprintf(out + len, cap - len, "event: %s\n", f->type);
        len +=
            (size_t)snprintf(out + len, cap - len, "id: %s\ndata: %.*s\n\n", cur, (int)f->json_len, f->json);
    }
}

static void test_events_any_buffer_size(void)
{
    static const size_t sizes[] = {1, 2, 7, 64, 1000, 65536};
    cs_store_t *st;
    REQUIRE(cs_store_new(&st, &lim) == 0);
    post(st, "e", "run.started", 0);
    post(st, "e", "log", 300);
    post(st, "e", "agent.started", 5);
    cs_exec_t *ex = cs_store_find(st, "e", 1);
    for (int named = 0; named <= 1; named++) {
        char *want = malloc(1 << 16);
        strcpy(want, "retry: 3000\n\n");
        expect_events(want, 1 << 16, ex, 1, 3, named);
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
            cs_sub_t sub;
            cs_sse_body_t b;
            cs_start_t start = {.kind = CS_START_HISTORY};
            REQUIRE(cs_sub_open(st, &sub, "e", 1, &start, NULL, &ops, NULL) == 0);
            cs_sse_body_init(&b, st, 0, 0, named);
            char *got = read_all(&b, &sub, sizes[i]);
            CHECK_STR(got, want);
            free(got);
            /* Caught up: nothing more, and no heartbeat unless one is due. */
            char buf[64];
            CHECK(cs_sse_body_fill(&b, &sub, buf, sizeof(buf)) == 0);
            cs_sse_body_free(&b);
            cs_sub_close(&sub);
        }
        free(want);
    }
    cs_store_free(st);
}

static void test_live_after_history(void)
{
    cs_store_t *st;
    cs_sub_t sub;
    cs_sse_body_t b;
    cs_start_t start = {.kind = CS_START_NOW};
    REQUIRE(cs_store_new(&st, &lim) == 0);
    post(st, "e", "run.started", 0);
    REQUIRE(cs_sub_open(st, &sub, "e", 1, &start, NULL, &ops, NULL) == 0);
    cs_sse_body_init(&b, st, 0, 0, 0);
    char *got = read_all(&b, &sub, 4096);
    CHECK_STR(got, "retry: 3000\n\n"); /* since=now: the hint, no history */
    free(got);
    post(st, "e", "log", 10);
    char want[4096] = "";
    expect_events(want, sizeof(want), cs_store_find(st, "e", 1), 2, 2, 0);
    got = read_all(&b, &sub, 4096);
    CHECK_STR(got, want);
    free(got);
    cs_sse_body_free(&b);
    cs_sub_close(&sub);
    cs_store_free(st);
}

static void test_gap_first(void)
{
    cs_store_t *st;
    cs_sub_t sub;
    cs_sse_body_t b;
    cs_start_t start = {.kind = CS_START_AFTER_ID, .id = "gone", .id_len = 4};
    REQUIRE(cs_store_new(&st, &lim) == 0);
    for (int i = 0; i < 6; i++) /* a ring of 4: seqs 1 and 2 are evicted */
        post(st, "e", "log", (size_t)i);
    for (int named = 0; named <= 1; named++) {
        REQUIRE(cs_sub_open(st, &sub, "e", 1, &start, NULL, &ops, NULL) == 0);
        cs_sse_body_init(&b, st, 0, 0, named);
        char *got = read_all(&b, &sub, 5);
        const char *gap = named ? "retry: 3000\n\nevent: stream.gap\ndata: {\"type\":\"stream.gap\""
                                : "retry: 3000\n\ndata: {\"type\":\"stream.gap\"";
        CHECK(strncmp(got, gap, strlen(gap)) == 0);
        CHECK(strstr(got, "\"requested\":\"gone\"") != NULL);
        CHECK(strstr(got, "\"first_seq\":3") != NULL);
        /* Then every retained event, in order. */
        char want[8192] = "";
        expect_events(want, sizeof(want), cs_store_find(st, "e", 1), 3, 6, named);
        const char *rest = strstr(got, "}\n\n");
        REQUIRE(rest != NULL);
        CHECK_STR(rest + 3, want);
        free(got);
        cs_sse_body_free(&b);
        cs_sub_close(&sub);
    }
    cs_store_free(st);
}

static void test_global_cursors(void)
{
    cs_store_t *st;
    cs_sub_t sub;
    cs_sse_body_t b;
    cs_start_t start = {.kind = CS_START_HISTORY};
    REQUIRE(cs_store_new(&st, &lim) == 0);
    post(st, "a", "log", 0);
    post(st, "b", "log", 0);
    REQUIRE(cs_sub_open(st, &sub, NULL, 0, &start, NULL, &ops, NULL) == 0);
    cs_sse_body_init(&b, st, 0, 1, 0);
    char *got = read_all(&b, &sub, 3);
    char c1[CS_CURSOR_MAX], c2[CS_CURSOR_MAX], want[4096];
    cs_cursor_format(c1, sizeof(c1), cs_store_global_epoch(st), 1);
    cs_cursor_format(c2, sizeof(c2), cs_store_global_epoch(st), 2);
    cs_frame_t *fa = cs_exec_frame(cs_store_find(st, "a", 1), 1);
    cs_frame_t *fb = cs_exec_frame(cs_store_find(st, "b", 1), 1);
    snprintf(want, sizeof(want), "retry: 3000\n\nid: %s\ndata: %s\n\nid: %s\ndata: %s\n\n", c1, fa->json, c2,
             fb->json);
    CHECK_STR(got, want);
    free(got);
    cs_sse_body_free(&b);
    cs_sub_close(&sub);
    cs_store_free(st);
}

static void test_heartbeats(void)
{
    cs_store_t *st;
    cs_sub_t sub;
    cs_sse_body_t b;
    cs_start_t start = {.kind = CS_START_HISTORY};
    char buf[256];
    size_t n;
    REQUIRE(cs_store_new(&st, &lim) == 0);
    for (int hitl = 0; hitl <= 1; hitl++) {
        const char *id = hitl ? "quiet1" : "quiet0";
        REQUIRE(cs_sub_open(st, &sub, id, 6, &start, NULL, &ops, NULL) == 0);
        cs_sse_body_init(&b, st, hitl, 0, 0);
        n = cs_sse_body_fill(&b, &sub, buf, sizeof(buf));
        CHECK(n == strlen("retry: 3000\n\n"));
        CHECK(cs_sse_body_fill(&b, &sub, buf, sizeof(buf)) == 0);
        b.hb_due = 1;
        n = cs_sse_body_fill(&b, &sub, buf, sizeof(buf));
        buf[n] = '\0';
        if (hitl)
            CHECK(strncmp(buf, "data: {\"type\":\"heartbeat\",\"timestamp\":\"", 39) == 0);
        else
            CHECK(strncmp(buf, ": heartbeat ", 12) == 0);
        CHECK(n > 4 && strcmp(buf + n - 2, "\n\n") == 0);
        CHECK(b.hb_due == 0);
        CHECK(cs_sse_body_fill(&b, &sub, buf, sizeof(buf)) == 0);
        /* A due heartbeat gives way to an event. */
        post(st, id, "log", 0);
        b.hb_due = 1;
        n = cs_sse_body_fill(&b, &sub, buf, sizeof(buf));
        buf[n] = '\0';
        CHECK(strncmp(buf, "id: ", 4) == 0);
        CHECK(strstr(buf, "heartbeat") == NULL);
        cs_sse_body_free(&b);
        cs_sub_close(&sub);
    }
    cs_store_free(st);
}

static void test_held_frame_outlives_eviction(void)
{
    cs_store_t *st;
    cs_sub_t sub;
    cs_sse_body_t b;
    cs_start_t start = {.kind = CS_START_HISTORY};
    char buf[64];
    REQUIRE(cs_store_new(&st, &lim) == 0);
    post(st, "e", "log", 5000);
    cs_frame_t *f = cs_exec_frame(cs_store_find(st, "e", 1), 1);
    char *want = malloc(f->json_len + 1);
    memcpy(want, f->json, f->json_len + 1);
    REQUIRE(cs_sub_open(st, &sub, "e", 1, &start, NULL, &ops, NULL) == 0);
    cs_sse_body_init(&b, st, 0, 0, 0);
    /* Half of the frame out, then the ring and the global ring move on past it. */
    CHECK(cs_sse_body_fill(&b, &sub, buf, sizeof(buf)) == sizeof(buf));
    CHECK(b.held == f && f->refcnt >= 2);
    for (int i = 0; i < 8; i++)
        post(st, "e", "log", 0);
    CHECK(cs_exec_frame(cs_store_find(st, "e", 1), 1) == NULL);
    char *rest = read_all(&b, &sub, 100);
    /* The rest of the held frame arrives intact (ASan would catch a read of freed memory), then a
     * gap: the cursor fell behind while the frame was being written. */
    char *got = malloc(sizeof(buf) + strlen(rest) + 1);
    memcpy(got, buf, sizeof(buf));
    strcpy(got + sizeof(buf), rest);
    char head[128];
    cs_exec_t *ex = cs_store_find(st, "e", 1);
    char cur[CS_CURSOR_MAX];
    cs_cursor_format(cur, sizeof(cur), ex->epoch, 1);
    snprintf(head, sizeof(head), "retry: 3000\n\nid: %s\ndata: ", cur);
    REQUIRE(strncmp(got, head, strlen(head)) == 0);
    CHECK(strncmp(got + strlen(head), want, strlen(want)) == 0);
    const char *after = got + strlen(head) + strlen(want);
    const char *gap = "\n\ndata: {\"type\":\"stream.gap\"";
    CHECK(strncmp(after, gap, strlen(gap)) == 0);
    free(got);
    free(rest);
    free(want);
    cs_sse_body_free(&b);
    cs_sub_close(&sub);

    /* Freeing a body in the middle of a frame releases it. */
    REQUIRE(cs_sub_open(st, &sub, "e", 1, &start, NULL, &ops, NULL) == 0);
    cs_sse_body_init(&b, st, 0, 0, 0);
    CHECK(cs_sse_body_fill(&b, &sub, buf, 20) == 20);
    CHECK(b.held != NULL);
    cs_sse_body_free(&b);
    CHECK(b.held == NULL);
    cs_sub_close(&sub);
    cs_store_free(st);
}

int main(void)
{
    RUN(test_events_any_buffer_size);
    RUN(test_live_after_history);
    RUN(test_gap_first);
    RUN(test_global_cursors);
    RUN(test_heartbeats);
    RUN(test_held_frame_outlives_eviction);
    CT_DONE();
}
