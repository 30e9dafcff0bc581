/*
 * test_filter.c - the ?types= filter: exact names, "prefix*" patterns, "*", and every refusal.
 */
#include "../../src/err.c"
#include "../../src/event.c"
#include "../../src/filter.c"

#include "ctest.h"

/* Returns nonzero when the NUL-terminated type passes f. */
static int match(const cs_filter_t *f, const char *type)
{
    return cs_filter_match(f, type, strlen(type));
}

static void test_all(void)
{
    cs_filter_t f;
    char err[256] = "";

    CHECK(cs_filter_parse(&f, NULL, err, sizeof(err)) == 0);
    CHECK(f.n == 0 && f.pats == NULL);
    CHECK(match(&f, "anything"));
    CHECK(cs_filter_match(&f, NULL, 0));
    cs_filter_free(&f);

    CHECK(cs_filter_parse(&f, "", err, sizeof(err)) == 0);
    CHECK(f.n == 0);
    CHECK(match(&f, "anything"));
    cs_filter_free(&f);

    CHECK(cs_filter_parse(&f, "*", err, sizeof(err)) == 0);
    CHECK(f.n == 1 && f.pats[0].prefix && f.pats[0].len == 0);
    CHECK(match(&f, "anything"));
    CHECK(match(&f, "a"));
    cs_filter_free(&f);
    CHECK(f.n == 0 && f.pats == NULL);
    /* Freeing twice is harmless: a freed filter is an empty one. */
    cs_filter_free(&f);
}

static void test_exact(void)
{
    cs_filter_t f;
    char err[256];

    REQUIRE(cs_filter_parse(&f, "log", err, sizeof(err)) == 0);
    CHECK(f.n == 1 && !f.pats[0].prefix && f.pats[0].len == 3);
    CHECK_STR(f.pats[0].s, "log");
    CHECK(match(&f, "log"));
    CHECK(!match(&f, "lo"));
    CHECK(!match(&f, "logs"));
    CHECK(!match(&f, "Log"));
    CHECK(!match(&f, ""));
    /* The length is honoured, not a NUL. */
    CHECK(cs_filter_match(&f, "logx", 3));
    CHECK(!cs_filter_match(&f, "log", 2));
    cs_filter_free(&f);

    REQUIRE(cs_filter_parse(&f, "run.started,run.completed,log", err, sizeof(err)) == 0);
    CHECK(f.n == 3);
    CHECK(match(&f, "run.started"));
    CHECK(match(&f, "run.completed"));
    CHECK(match(&f, "log"));
    CHECK(!match(&f, "run.failed"));
    CHECK(!match(&f, "run"));
    cs_filter_free(&f);
}

static void test_prefix(void)
{
    cs_filter_t f;
    char err[256];

    REQUIRE(cs_filter_parse(&f, "agent.*", err, sizeof(err)) == 0);
    CHECK(f.n == 1 && f.pats[0].prefix && f.pats[0].len == 6);
    CHECK_STR(f.pats[0].s, "agent.");
    CHECK(match(&f, "agent.started"));
    CHECK(match(&f, "agent.error"));
    CHECK(!match(&f, "agent"));
    CHECK(!match(&f, "agents.started"));
    CHECK(!match(&f, "tool.called"));
    cs_filter_free(&f);

    REQUIRE(cs_filter_parse(&f, "human_input_*", err, sizeof(err)) == 0);
    CHECK(match(&f, "human_input_required"));
    CHECK(match(&f, "human_input_completed"));
    CHECK(!match(&f, "human_input"));
    CHECK(!match(&f, "heartbeat"));
    cs_filter_free(&f);

    /* A prefix without a separator is allowed: "flow*" is the caller's choice. */
    REQUIRE(cs_filter_parse(&f, "flow*", err, sizeof(err)) == 0);
    CHECK(match(&f, "flow_started"));
    CHECK(match(&f, "flowing"));
    cs_filter_free(&f);
}

static void test_mixed(void)
{
    cs_filter_t f;
    char err[256];

    REQUIRE(cs_filter_parse(&f, "a,b,agent.*,tool_*,log", err, sizeof(err)) == 0);
    CHECK(f.n == 5);
    CHECK(match(&f, "a"));
    CHECK(match(&f, "b"));
    CHECK(match(&f, "agent.completed"));
    CHECK(match(&f, "tool_usage_started"));
    CHECK(match(&f, "log"));
    CHECK(!match(&f, "c"));
    CHECK(!match(&f, "ab"));
    CHECK(!match(&f, "agent"));
    CHECK(!match(&f, "tool.called"));
    cs_filter_free(&f);

    /* "*" among others still lets everything through. */
    REQUIRE(cs_filter_parse(&f, "log,*", err, sizeof(err)) == 0);
    CHECK(match(&f, "x"));
    cs_filter_free(&f);

    /* Duplicates are harmless. */
    REQUIRE(cs_filter_parse(&f, "log,log,log.*,log.*", err, sizeof(err)) == 0);
    CHECK(f.n == 4);
    CHECK(match(&f, "log"));
    CHECK(match(&f, "log.x"));
    cs_filter_free(&f);
}

/* Expects csv to be refused with -EINVAL and an error containing want; f must match everything. */
static void refused(const char *csv, const char *want)
{
    cs_filter_t f = {(cs_filter_pat_t *)1, 99};
    char err[256] = "";
    int rc = cs_filter_parse(&f, csv, err, sizeof(err));

    CHECK(rc == -EINVAL);
    CHECK(f.n == 0 && f.pats == NULL);
    if (strstr(err, want) == NULL) {
        fprintf(stderr, "  for %s: error \"%s\" lacks \"%s\"\n", csv, err, want);
        CHECK(!"error message");
    }
    /* The message must be safe to put in a JSON body: printable ASCII only. */
    for (const char *p = err; *p; p++)
        CHECK((unsigned char)*p >= 0x20 && (unsigned char)*p < 0x7f);
}

static void test_errors(void)
{
    const char *form = "is not a type name or a \"prefix.*\" pattern";
    char long_type[100], long_prefix[100];

    refused("ag*ent", "types: \"ag*ent\" is not a type name or a \"prefix.*\" pattern");
    refused("*agent", "\"*agent\" ");
    refused("**", "\"**\" ");
    refused("agent.**", "\"agent.**\" ");
    refused("a b", "\"a b\" ");
    refused(" log", "\" log\" ");
    refused("log ", "\"log \" ");
    refused("a:b", form);
    refused("a/b", form);
    refused("log,a b", "\"a b\" ");
    refused("h\xc3\xa9llo", "\"h??llo\" ");
    refused("a\tb", "\"a?b\" ");
    refused(",", "empty item");
    refused(",log", "empty item");
    refused("log,", "empty item");
    refused("log,,run", "empty item");

    /* 64 characters are a type name, 65 are not; the same for what precedes "*". */
    memset(long_type, 't', 64);
    long_type[64] = '\0';
    {
        cs_filter_t f;
        char err[256];
        CHECK(cs_filter_parse(&f, long_type, err, sizeof(err)) == 0);
        cs_filter_free(&f);
        memcpy(long_prefix, long_type, 64);
        strcpy(long_prefix + 64, "*");
        CHECK(cs_filter_parse(&f, long_prefix, err, sizeof(err)) == 0);
        CHECK(f.pats[0].len == 64);
        cs_filter_free(&f);
    }
    long_type[64] = 't';
    long_type[65] = '\0';
    refused(long_type, form);
    memcpy(long_prefix, long_type, 65);
    strcpy(long_prefix + 65, "*");
    refused(long_prefix, form);

    /* A very long bad item is quoted only in part. */
    {
        char huge[400];
        memset(huge, 'x', sizeof(huge) - 1);
        huge[sizeof(huge) - 1] = '\0';
        huge[0] = ' ';
        refused(huge, "...\" ");
    }

    /* A tiny error buffer is honoured. */
    {
        cs_filter_t f;
        char err[6];
        CHECK(cs_filter_parse(&f, "a b", err, sizeof(err)) == -EINVAL);
        CHECK(strlen(err) == 5);
        CHECK(cs_filter_parse(&f, ",", err, sizeof(err)) == -EINVAL);
        CHECK(strlen(err) == 5);
    }
}

static void test_count(void)
{
    char csv[65 * 4 + 1];
    size_t n = 0;
    cs_filter_t f;
    char err[256] = "";

    /* 64 items ("a0", "a1", ...) are accepted. */
    for (int i = 0; i < 64; i++)
        n += (size_t)sprintf(csv + n, "%s%c%d", i ? "," : "", 'a' + i % 26, i % 10);
    REQUIRE(cs_filter_parse(&f, csv, err, sizeof(err)) == 0);
    CHECK(f.n == 64);
    CHECK(match(&f, "l1"));
    CHECK(!match(&f, "l2"));
    cs_filter_free(&f);

    /* 65 are not. */
    sprintf(csv + n, ",zz");
    CHECK(cs_filter_parse(&f, csv, err, sizeof(err)) == -EINVAL);
    CHECK(strstr(err, "at most 64") != NULL);
    CHECK(f.n == 0 && f.pats == NULL);
}

int main(void)
{
    RUN(test_all);
    RUN(test_exact);
    RUN(test_prefix);
    RUN(test_mixed);
    RUN(test_errors);
    RUN(test_count);
    CT_DONE();
}
