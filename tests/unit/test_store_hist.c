/*
 * test_store_hist.c - history older than the ring (cluster mode): a held subscriber, then the older events
 * read from Redis given to it with cs_sub_release, handed out before the ring's, in order, once, within
 * bounds.
 */
#include "../../src/answer.c"
#include "../../src/cursor.c"
#include "../../src/err.c"
#include "../../src/event.c"
#include "../../src/filter.c"
#include "../../src/hitl.c"
#include "../../src/jscan.c"
#include "../../src/log.c"
#include "../../src/status.c"
#include "../../src/store.c"

#include "ctest.h"

static cs_store_limits_t lim = {
    .ring_events = 8, .ring_bytes = 1 << 20, .max_bytes = 64 << 20, .retain_s = 10, .global_events = 16};

static int wakes;
static void on_wake(cs_sub_t *s)
{
    (void)s;
    wakes++;
}
static const cs_sub_ops_t ops = {on_wake};

/* JSON of event seq of execution "h" as Redis holds it (no seq). */
static char jbuf[400][160];
static const char *ev_json(uint64_t seq, const char *type)
{
    snprintf(
        jbuf[seq], sizeof(jbuf[seq]),
        "{\"execution_id\":\"h\",\"type\":\"%s\",\"event_id\":\"e%llu\",\"timestamp\":\"2026-01-15T10:30:02."
        "123Z\",\"i\":%llu}",
        type, (unsigned long long)seq, (unsigned long long)seq);
    return jbuf[seq];
}

/* A store whose execution "h" (epoch returned) has events 1..n from Redis: the ring keeps the last 8. */
static cs_store_t *store_with(uint64_t n, uint64_t *epoch)
{
    cs_store_t *st;
    cs_publish_t pub;
    char detail[128];

    REQUIRE(cs_store_new(&st, &lim) == 0);
    *epoch = 0xabc123;
    for (uint64_t s = 1; s <= n; s++) {
        const char *j = ev_json(s, s % 5 == 0 ? "tool.called" : "log");
        json_t *ev = json_loads(j, 0, NULL);
        REQUIRE(cs_store_insert(st, *epoch, s, NULL, ev, j, strlen(j), 1768473002123LL, &pub, detail,
                                sizeof(detail)) == CS_OK);
        json_decref(ev);
    }
    return st;
}

/* Events [a, b] as read from Redis. */
static size_t hist(cs_hist_event_t *h, uint64_t a, uint64_t b)
{
    size_t n = 0;
    for (uint64_t s = a; s <= b; s++, n++) {
        h[n].seq = s;
        h[n].json = ev_json(s, s % 5 == 0 ? "tool.called" : "log");
        h[n].json_len = strlen(h[n].json);
    }
    return n;
}

/* Drains a subscriber: seqs (0 for a gap; its first_seq in *gap_first). */
static int drain(cs_sub_t *sub, uint64_t *out, int max, uint64_t *gap_first)
{
    cs_item_t it;
    int n = 0;
    while (n < max && cs_sub_next(sub, &it)) {
        out[n++] = it.frame ? it.frame->seq : 0;
        if (it.frame == NULL && gap_first != NULL)
            *gap_first = it.gap_first;
    }
    return n;
}

static int is_range(const uint64_t *got, int n, uint64_t a, uint64_t b)
{
    if (n != (int)(b - a + 1))
        return 0;
    for (int i = 0; i < n; i++)
        if (got[i] != a + (uint64_t)i)
            return 0;
    return 1;
}

static void check_store(cs_store_t *st)
{
    char detail[256];
    CHECK(cs_store_check(st, NULL, NULL, detail, sizeof(detail)) == 0);
}

static void test_held_then_released_after_seq(void)
{
    uint64_t epoch, got[64];
    cs_store_t *st = store_with(20, &epoch);
    cs_hist_event_t h[32];
    cs_sub_t sub;
    cs_start_t start = {.kind = CS_START_AFTER_SEQ, .seq = 3};
    cs_item_t it;
    cs_store_stats_t s0, s1;

    cs_store_stats(st, &s0);
    REQUIRE(cs_sub_open(st, &sub, "h", 1, &start, NULL, &ops, NULL) == 0);
    cs_sub_hold_t *hold = cs_sub_hold(&sub, &start);
    REQUIRE(hold != NULL);
    CHECK(cs_sub_held(&sub));
    CHECK(!cs_sub_has_next(&sub));
    CHECK(!cs_sub_next(&sub, &it));
    cs_sub_park(&sub);
    wakes = 0;
    /* Redis holds 1..12 older than the ring (13..20): the subscriber gets 4..20, no gap. */
    CHECK(cs_sub_release(hold, epoch, h, hist(h, 1, 12), 0) == 9);
    CHECK(wakes == 1 && !sub.parked && !cs_sub_held(&sub));
    CHECK(cs_sub_has_next(&sub));
    REQUIRE(cs_sub_next(&sub, &it) && it.frame != NULL && it.frame->seq == 4);
    /* Rendered as a ring renders it: the stored JSON with its seq. */
    CHECK(strstr(it.frame->json, "\"i\":4,\"seq\":4}") != NULL);
    CHECK(strncmp(it.frame->sse_head, "event: log\nid: ", 15) == 0);
    /* Given back unsent: handed out again. */
    cs_sub_unget(&sub, &it);
    int n = drain(&sub, got, 64, NULL);
    CHECK(is_range(got, n, 4, 20));
    check_store(st);
    cs_sub_close(&sub);
    cs_store_stats(st, &s1);
    CHECK(s1.frames_live == s0.frames_live && s1.bytes == s0.bytes); /* the history's frames are gone */
    cs_store_free(st);
}

static void test_history_cursor_and_event_id(void)
{
    uint64_t epoch, got[64], gf = 0;
    cs_store_t *st = store_with(20, &epoch);
    cs_hist_event_t h[32];
    cs_sub_t sub;
    char cur[CS_CURSOR_MAX];
    int n;

    /* No cursor: everything Redis keeps (5..12, trimmed before), then the ring. */
    cs_start_t start = {.kind = CS_START_HISTORY};
    REQUIRE(cs_sub_open(st, &sub, "h", 1, &start, NULL, &ops, NULL) == 0);
    cs_sub_hold_t *hold = cs_sub_hold(&sub, &start);
    CHECK(cs_sub_release(hold, epoch, h, hist(h, 5, 12), 0) == 8);
    n = drain(&sub, got, 64, NULL);
    CHECK(is_range(got, n, 5, 20));
    cs_sub_close(&sub);

    /* A cursor older than Redis keeps: stream.gap naming the first kept, then all of it. */
    cs_cursor_format(cur, sizeof(cur), epoch, 2);
    start = (cs_start_t){.kind = CS_START_AFTER_ID, .id = cur, .id_len = strlen(cur)};
    REQUIRE(cs_sub_open(st, &sub, "h", 1, &start, NULL, &ops, NULL) == 0);
    hold = cs_sub_hold(&sub, &start);
    memset(cur, 'x', sizeof(cur)); /* the hold keeps its own copy */
    cs_sub_release(hold, epoch, h, hist(h, 5, 12), 0);
    n = drain(&sub, got, 64, &gf);
    CHECK(n == 17 && got[0] == 0 && gf == 5 && is_range(got + 1, n - 1, 5, 20));
    cs_sub_close(&sub);

    /* A cursor inside: exactly after it. */
    cs_cursor_format(cur, sizeof(cur), epoch, 7);
    start = (cs_start_t){.kind = CS_START_AFTER_ID, .id = cur, .id_len = strlen(cur)};
    REQUIRE(cs_sub_open(st, &sub, "h", 1, &start, NULL, &ops, NULL) == 0);
    hold = cs_sub_hold(&sub, &start);
    CHECK(cs_sub_release(hold, epoch, h, hist(h, 5, 12), 0) == 5);
    n = drain(&sub, got, 64, NULL);
    CHECK(is_range(got, n, 8, 20));
    cs_sub_close(&sub);

    /* An event_id only Redis has, and a bare seq. */
    start = (cs_start_t){.kind = CS_START_AFTER_ID, .id = "e6", .id_len = 2};
    REQUIRE(cs_sub_open(st, &sub, "h", 1, &start, NULL, &ops, NULL) == 0);
    hold = cs_sub_hold(&sub, &start);
    cs_sub_release(hold, epoch, h, hist(h, 1, 12), 0);
    n = drain(&sub, got, 64, NULL);
    CHECK(is_range(got, n, 7, 20));
    cs_sub_close(&sub);
    start = (cs_start_t){.kind = CS_START_AFTER_ID, .id = "10", .id_len = 2};
    REQUIRE(cs_sub_open(st, &sub, "h", 1, &start, NULL, &ops, NULL) == 0);
    hold = cs_sub_hold(&sub, &start);
    cs_sub_release(hold, epoch, h, hist(h, 1, 12), 0);
    n = drain(&sub, got, 64, NULL);
    CHECK(is_range(got, n, 11, 20));
    cs_sub_close(&sub);
    check_store(st);
    cs_store_free(st);
}

static void test_refused_histories(void)
{
    uint64_t epoch, got[64], gf = 0;
    cs_store_t *st = store_with(20, &epoch);
    cs_hist_event_t h[32];
    cs_sub_t sub;
    cs_start_t start = {.kind = CS_START_AFTER_SEQ, .seq = 3};
    int n;

    /* Another epoch (Redis lost its data): nothing of it, the ring's gap. */
    REQUIRE(cs_sub_open(st, &sub, "h", 1, &start, NULL, &ops, NULL) == 0);
    CHECK(cs_sub_release(cs_sub_hold(&sub, &start), epoch + 1, h, hist(h, 1, 12), 0) == 0);
    n = drain(&sub, got, 64, &gf);
    CHECK(n == 9 && got[0] == 0 && gf == 13 && is_range(got + 1, 8, 13, 20));
    cs_sub_close(&sub);
    /* Not up to the ring (11, 12 missing): nothing between is had. */
    REQUIRE(cs_sub_open(st, &sub, "h", 1, &start, NULL, &ops, NULL) == 0);
    CHECK(cs_sub_release(cs_sub_hold(&sub, &start), epoch, h, hist(h, 1, 10), 0) == 0);
    n = drain(&sub, got, 64, &gf);
    CHECK(n == 9 && got[0] == 0 && gf == 13);
    cs_sub_close(&sub);
    /* A hole inside: only the part next to the ring. */
    REQUIRE(cs_sub_open(st, &sub, "h", 1, &start, NULL, &ops, NULL) == 0);
    size_t k = hist(h, 1, 12);
    memmove(h + 5, h + 6, (k - 6) * sizeof(*h)); /* 6 missing */
    CHECK(cs_sub_release(cs_sub_hold(&sub, &start), epoch, h, k - 1, 0) == 6);
    n = drain(&sub, got, 64, &gf);
    CHECK(n == 15 && got[0] == 0 && gf == 7 && is_range(got + 1, 14, 7, 20));
    cs_sub_close(&sub);
    /* A read that failed. */
    REQUIRE(cs_sub_open(st, &sub, "h", 1, &start, NULL, &ops, NULL) == 0);
    CHECK(cs_sub_release(cs_sub_hold(&sub, &start), 0, NULL, 0, 1) == 0);
    CHECK(sub.hist_failed);
    n = drain(&sub, got, 64, &gf);
    CHECK(n == 9 && got[0] == 0 && gf == 13);
    cs_sub_close(&sub);
    /* A line that is not an event ends the history there. */
    REQUIRE(cs_sub_open(st, &sub, "h", 1, &start, NULL, &ops, NULL) == 0);
    k = hist(h, 1, 12);
    h[8].json = "{\"broken\":";
    h[8].json_len = strlen(h[8].json);
    CHECK(cs_sub_release(cs_sub_hold(&sub, &start), epoch, h, k, 0) == 3);
    n = drain(&sub, got, 64, &gf);
    CHECK(n == 12 && got[0] == 0 && gf == 10 && is_range(got + 1, 11, 10, 20));
    cs_sub_close(&sub);
    /* Closed while held: the holder's release frees the hold only. */
    REQUIRE(cs_sub_open(st, &sub, "h", 1, &start, NULL, &ops, NULL) == 0);
    cs_sub_hold_t *hold = cs_sub_hold(&sub, &start);
    CHECK(cs_sub_hold(&sub, &start) == NULL); /* one hold at a time */
    cs_sub_close(&sub);
    CHECK(cs_sub_release(hold, epoch, h, hist(h, 1, 12), 0) == 0);
    check_store(st);
    cs_store_free(st);
}

static void test_bounds_filter_and_live(void)
{
    uint64_t epoch, got[400];
    cs_store_t *st = store_with(300, &epoch);
    cs_hist_event_t h[400];
    cs_sub_t sub;
    cs_start_t start = {.kind = CS_START_HISTORY};
    cs_filter_t flt;
    cs_publish_t pub;
    char detail[128];
    int n;

    /* 292 older events: only the newest ring_events + 128 (136) are given. */
    REQUIRE(cs_sub_open(st, &sub, "h", 1, &start, NULL, &ops, NULL) == 0);
    CHECK(cs_sub_release(cs_sub_hold(&sub, &start), epoch, h, hist(h, 1, 292), 0) == 136);
    n = drain(&sub, got, 400, NULL);
    CHECK(is_range(got, n, 157, 300));
    cs_sub_close(&sub);
    /* A filter applies to the history too; a live event after it follows once. */
    REQUIRE(cs_filter_parse(&flt, "tool.*", detail, sizeof(detail)) == 0);
    start = (cs_start_t){.kind = CS_START_AFTER_SEQ, .seq = 270};
    REQUIRE(cs_sub_open(st, &sub, "h", 1, &start, &flt, &ops, NULL) == 0);
    cs_sub_hold_t *hold = cs_sub_hold(&sub, &start);
    /* An event arrives while it is held: it waits with the rest. */
    const char *j = ev_json(301, "tool.called");
    json_t *ev = json_loads(j, 0, NULL);
    REQUIRE(cs_store_insert(st, epoch, 301, NULL, ev, j, strlen(j), 1768473002123LL, &pub, detail,
                            sizeof(detail)) == CS_OK);
    json_decref(ev);
    CHECK(!cs_sub_has_next(&sub));
    cs_sub_release(hold, epoch, h, hist(h, 1, 293), 0); /* the ring is 294..301 now */
    CHECK(cs_sub_has_next(&sub));
    n = drain(&sub, got, 400, NULL);
    CHECK(n == 7 && got[0] == 275 && got[1] == 280 && got[5] == 300 && got[6] == 301);
    cs_sub_close(&sub);
    check_store(st);
    cs_store_free(st);
}

int main(void)
{
    RUN(test_held_then_released_after_seq);
    RUN(test_history_cursor_and_event_id);
    RUN(test_refused_histories);
    RUN(test_bounds_filter_and_live);
    CT_DONE();
}
