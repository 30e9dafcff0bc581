/*
 * test_lines.c - ingest line framing: lines split across reads in every way, a too-large line
 * answered once and skipped to its LF, the CR slack, a last line without its LF at end of input, a
 * stop asked for after a line (the rest fed again later), and memory let go after a long line.
 */
#include "../../common/buf.c"
#include "../../src/lines.c"

#include "ctest.h"

typedef struct got {
    char text[8192]; /* lines joined with '|', a too-large one as '#' */
    size_t n;
    int stop_after; /* ask to stop after this many calls (0: never) */
    int calls;
} got_t;

static int on_line(void *arg, const char *line, size_t len)
{
    got_t *g = arg;
    g->calls++;
    if (line == NULL) {
        g->text[g->n++] = '#';
    } else {
        REQUIRE(g->n + len + 1 < sizeof(g->text));
        memcpy(g->text + g->n, line, len);
        g->n += len;
    }
    g->text[g->n++] = '|';
    g->text[g->n] = '\0';
    return g->stop_after != 0 && g->calls % g->stop_after == 0 ? 1 : 0;
}

/* Feeds s in pieces of `step` bytes (0: whole), re-feeding what a stop left; then ends the input. */
static void run(size_t max, const char *s, size_t step, got_t *g)
{
    cs_lines_t l;
    size_t n = strlen(s), off = 0;
    int err;
    cs_lines_init(&l, max, 64);
    while (off < n) {
        size_t piece = step == 0 || step > n - off ? n - off : step;
        size_t used = 0;
        while (used < piece) {
            size_t u = cs_lines_feed(&l, s + off + used, piece - used, on_line, g, &err);
            CHECK(err == 0);
            REQUIRE(u > 0 || piece - used == 0);
            used += u;
        }
        off += piece;
    }
    cs_lines_end(&l, on_line, g);
    cs_lines_free(&l);
}

static void expect(size_t max, const char *in, const char *want)
{
    for (size_t step = 0; step <= 9; step++) {
        for (int stop = 0; stop <= 2; stop++) {
            got_t g = {.stop_after = stop};
            run(max, in, step, &g);
            if (strcmp(g.text, want) != 0)
                fprintf(stderr, "  step %zu stop %d: got \"%s\" want \"%s\"\n", step, stop, g.text, want);
            CHECK_STR(g.text, want);
        }
    }
}

static void test_lines(void)
{
    expect(10, "a\nbb\nccc\n", "a|bb|ccc|");
    expect(10, "\n\n", "||");    /* blank lines are lines (each gets a reply) */
    expect(10, "last", "last|"); /* end of input ends a line */
    expect(10, "one\nlast", "one|last|");
    expect(10, "0123456789\n", "0123456789|");     /* exactly max */
    expect(10, "0123456789\r\n", "0123456789\r|"); /* max and a CR: the slack */
    expect(10, "0123456789ab\nok\n", "#|ok|");     /* over: once, skipped to its LF */
    expect(10, "0123456789abcdefghijklmnopqrstuvwxyz\nok\n", "#|ok|");
    expect(10, "ok\n0123456789abcdef", "ok|#|"); /* over and never ended: answered, not handed */
    expect(3, "abcde\nabcde\nabc\n", "#|#|abc|");
    expect(3, "abcd\n", "abcd|"); /* max + 1 is handed on: the line's handler strips a CR or refuses it */
}

static void test_stop_returns_the_rest(void)
{
    cs_lines_t l;
    got_t g = {.stop_after = 1};
    int err;
    const char *s = "a\nbb\ncc";
    cs_lines_init(&l, 10, 64);
    size_t u = cs_lines_feed(&l, s, strlen(s), on_line, &g, &err);
    CHECK(u == 2); /* "a\n": stopped after the first line */
    u = cs_lines_feed(&l, s + 2, strlen(s) - 2, on_line, &g, &err);
    CHECK(u == 3);
    u = cs_lines_feed(&l, s + 5, 2, on_line, &g, &err); /* a partial line: kept, no call */
    CHECK(u == 2 && g.calls == 2);
    CHECK_STR(g.text, "a|bb|");
    cs_lines_end(&l, on_line, &g);
    CHECK_STR(g.text, "a|bb|cc|");
    cs_lines_free(&l);
}

static int on_line_close(void *arg, const char *line, size_t len)
{
    (void)line;
    (void)len;
    (*(int *)arg)++;
    return -1;
}

static void test_close_stops_at_once(void)
{
    cs_lines_t l;
    int calls = 0, err;
    cs_lines_init(&l, 10, 64);
    CHECK(cs_lines_feed(&l, "x\ny\n", 4, on_line_close, &calls, &err) == 0);
    CHECK(calls == 1);
    cs_lines_free(&l);
}

static void test_memory_let_go(void)
{
    cs_lines_t l;
    got_t g = {0};
    int err;
    char big[5000];
    memset(big, 'x', sizeof(big));
    cs_lines_init(&l, 10000, 64);
    CHECK(cs_lines_feed(&l, big, sizeof(big), on_line, &g, &err) == sizeof(big));
    CHECK(l.part.cap > sizeof(big));
    CHECK(cs_lines_feed(&l, "\n", 1, on_line, &g, &err) == 1);
    CHECK(g.calls == 1 && g.n == sizeof(big) + 1);
    CHECK(l.part.cap == 0); /* one long line does not keep its buffer */
    cs_lines_free(&l);
}

int main(void)
{
    RUN(test_lines);
    RUN(test_stop_returns_the_rest);
    RUN(test_close_stops_at_once);
    RUN(test_memory_let_go);
    CT_DONE();
}
