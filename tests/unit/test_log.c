/*
 * test_log.c - log lines: one line per message, and the rate limit per format with its summary.
 */
#include "../../src/log.c"

#include "ctest.h"

/* Returns the lines written to f since it was last rewound (and rewinds it). */
static int count_lines(FILE *f, char *last, size_t lastlen, const char *needle, int *with_needle)
{
    char line[4096];
    int n = 0;

    fflush(f);
    rewind(f);
    if (with_needle != NULL)
        *with_needle = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        n++;
        if (last != NULL)
            snprintf(last, lastlen, "%s", line);
        if (with_needle != NULL && strstr(line, needle) != NULL)
            (*with_needle)++;
    }
    rewind(f);
    if (ftruncate(fileno(f), 0) != 0)
        n = -1;
    return n;
}

static void test_one_line(void)
{
    FILE *f = tmpfile();
    char last[4096];

    REQUIRE(f != NULL);
    log_stream = f;
    log_journal = 0;
    cs_log_info("a %s b", "x\ny");
    CHECK(count_lines(f, last, sizeof(last), NULL, NULL) == 1);
    CHECK(strstr(last, " info a x y b\n") != NULL);
    log_stream = NULL;
    fclose(f);
}

static void test_rate_limit(void)
{
    FILE *f = tmpfile();
    char last[4096];
    int summaries;

    REQUIRE(f != NULL);
    log_stream = f;
    log_journal = 0;
    log_fake_now = 100000;
    uint64_t before = cs_log_suppressed_total();

    /* 10 000 lines of one format in one second: 10 written, the rest counted. */
    for (int i = 0; i < 10000; i++)
        cs_log_warn("accept: %d", i);
    CHECK(count_lines(f, NULL, 0, NULL, NULL) == LOG_BURST);
    CHECK(cs_log_suppressed_total() - before == 10000 - LOG_BURST);

    /* Another format is not held back by the first. */
    cs_log_warn("other %d", 1);
    CHECK(count_lines(f, NULL, 0, NULL, NULL) == 1);

    /* Within the second nothing is summed up yet; after it, the flush writes one summary line. */
    cs_log_flush();
    CHECK(count_lines(f, NULL, 0, NULL, NULL) == 0);
    log_fake_now += LOG_WINDOW_MS;
    cs_log_flush();
    CHECK(count_lines(f, last, sizeof(last), "suppressed 9990 similar lines", &summaries) == 1);
    CHECK(summaries == 1);
    CHECK(strstr(last, "the last: accept: 9999") != NULL);
    CHECK(strstr(last, " warn log: ") != NULL);
    cs_log_flush();
    CHECK(count_lines(f, NULL, 0, NULL, NULL) == 0);

    /* A new window writes again; a line after a suppressing window brings its summary first. */
    for (int i = 0; i < LOG_BURST + 5; i++)
        cs_log_warn("accept: %d", i);
    CHECK(count_lines(f, NULL, 0, NULL, NULL) == LOG_BURST);
    log_fake_now += 5 * LOG_WINDOW_MS;
    cs_log_warn("accept: %d", -1);
    CHECK(count_lines(f, last, sizeof(last), "suppressed 5 similar lines", &summaries) == 2);
    CHECK(summaries == 1);
    CHECK(strstr(last, "accept: -1\n") != NULL);

    /* Levels not enabled are neither written nor counted. */
    before = cs_log_suppressed_total();
    for (int i = 0; i < 100; i++)
        cs_log_debug("debug %d", i);
    CHECK(count_lines(f, NULL, 0, NULL, NULL) == 0);
    CHECK(cs_log_suppressed_total() == before);

    log_fake_now = -1;
    log_stream = NULL;
    fclose(f);
}

int main(void)
{
    RUN(test_one_line);
    RUN(test_rate_limit);
    CT_DONE();
}
