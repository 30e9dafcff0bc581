/*
 * test_event.c - the event rules of SPEC.md §1 and the line rules of §3, on both sides of every
 * boundary.
 */
#include "../../src/err.c"
#include "../../src/event.c"

#include "ctest.h"

static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* Parses a literal object for the validation tests; the literals are all well-formed. */
static json_t *obj(const char *text)
{
    json_error_t e;
    json_t *v = json_loads(text, 0, &e);
    if (v == NULL)
        fprintf(stderr, "bad test literal %s: %s\n", text, e.text);
    REQUIRE(v != NULL);
    return v;
}

/* Sets *s, *len to member key of v as cs_event_fields_t holds it; returns 0 when it cannot (not a string). */
static int text_of(const json_t *v, const char *key, const char **s, size_t *len)
{
    json_t *m = json_object_get(v, key);

    *s = json_string_value(m);
    *len = json_string_length(m);
    return m == NULL || json_is_null(m) || json_is_string(m);
}

/*
 * Validates text and returns the code; the detail goes into detail (which may be NULL). When the
 * members the rules read are strings (or absent, or null), cs_event_validate_fields must answer the
 * same about their text.
 */
static cs_err_t validate(const char *text, char *detail)
{
    char buf[256], buf2[256];
    json_t *v = obj(text);
    cs_err_t e = cs_event_validate(v, buf, sizeof(buf));
    cs_event_fields_t f;

    if (json_is_object(v) && text_of(v, "execution_id", &f.execution_id, &f.execution_id_len) &&
        text_of(v, "type", &f.type, &f.type_len) && text_of(v, "event_id", &f.event_id, &f.event_id_len) &&
        text_of(v, "timestamp", &f.timestamp, &f.timestamp_len)) {
        cs_err_t e2 = cs_event_validate_fields(&f, buf2, sizeof(buf2));
        CHECK(e2 == e);
        if (e != CS_OK && e2 == e)
            CHECK_STR(buf2, buf);
    }
    if (detail != NULL)
        strcpy(detail, e == CS_OK ? "" : buf);
    json_decref(v);
    return e;
}

static void test_err_names(void)
{
    CHECK_STR(cs_err_name(CS_ERR_INVALID_JSON), "invalid_json");
    CHECK_STR(cs_err_name(CS_ERR_MISSING_FIELD), "missing_field");
    CHECK_STR(cs_err_name(CS_ERR_INVALID_FIELD), "invalid_field");
    CHECK_STR(cs_err_name(CS_ERR_TOO_LARGE), "too_large");
    CHECK_STR(cs_err_name(CS_ERR_NOT_FOUND), "not_found");
    CHECK_STR(cs_err_name(CS_ERR_FORBIDDEN), "forbidden");
    CHECK_STR(cs_err_name(CS_ERR_BAD_OP), "bad_op");
    CHECK_STR(cs_err_name(CS_ERR_CONFLICT), "conflict");
    CHECK_STR(cs_err_name(CS_ERR_INTERNAL), "internal");
    CHECK_STR(cs_err_name((cs_err_t)999), "internal");
}

static void test_execution_id(void)
{
    char *s128 = repeat('a', 128), *s129 = repeat('a', 129);

    CHECK(cs_valid_execution_id("a", 1));
    CHECK(cs_valid_execution_id("AZaz09._:-", 10));
    CHECK(cs_valid_execution_id(s128, 128));
    CHECK(!cs_valid_execution_id(s129, 129));
    CHECK(!cs_valid_execution_id("", 0));
    CHECK(!cs_valid_execution_id(NULL, 0));
    CHECK(!cs_valid_execution_id("a b", 3));
    CHECK(!cs_valid_execution_id("a/b", 3));
    CHECK(!cs_valid_execution_id("a*b", 3));
    CHECK(!cs_valid_execution_id("a\"b", 3));
    CHECK(!cs_valid_execution_id("a\nb", 3));
    CHECK(!cs_valid_execution_id("a\0b", 3));
    CHECK(!cs_valid_execution_id("\xc3\xa9", 2));
    /* The length is honoured: the bad byte just past it does not count. */
    CHECK(cs_valid_execution_id("ab/", 2));
    free(s128);
    free(s129);
}

static void test_type(void)
{
    char *s64 = repeat('t', 64), *s65 = repeat('t', 65);

    CHECK(cs_valid_type("a", 1));
    CHECK(cs_valid_type("AZaz09._-", 9));
    CHECK(cs_valid_type(s64, 64));
    CHECK(!cs_valid_type(s65, 65));
    CHECK(!cs_valid_type("", 0));
    CHECK(!cs_valid_type("a:b", 3)); /* ':' is for execution ids only */
    CHECK(!cs_valid_type("a*", 2));
    CHECK(!cs_valid_type("a,b", 3));
    CHECK(!cs_valid_type("a b", 3));
    CHECK(!cs_valid_type("a\tb", 3));
    CHECK(!cs_valid_type("\xff", 1));
    free(s64);
    free(s65);
}

static void test_event_id(void)
{
    char *s128 = repeat('e', 128), *s129 = repeat('e', 129);
    char mixed[129];

    CHECK(cs_valid_event_id("x", 1));
    CHECK(cs_valid_event_id("any thing/at all: ~!", 20));
    CHECK(cs_valid_event_id(s128, 128));
    CHECK(!cs_valid_event_id(s129, 129));
    CHECK(!cs_valid_event_id("", 0));
    /* The limit is in bytes: 64 two-byte characters fit, one more byte does not. */
    for (int i = 0; i < 64; i++)
        memcpy(mixed + 2 * i, "\xc3\xa9", 2);
    CHECK(cs_valid_event_id(mixed, 128));
    mixed[128] = 'x';
    CHECK(!cs_valid_event_id(mixed, 129));
    CHECK(cs_valid_event_id("\xe2\x82\xac", 3));      /* euro sign */
    CHECK(cs_valid_event_id("\xf0\x9f\x98\x80", 4));  /* emoji */
    CHECK(!cs_valid_event_id("\x1f", 1));             /* control */
    CHECK(!cs_valid_event_id("a\nb", 3));             /* control */
    CHECK(!cs_valid_event_id("a\0b", 3));             /* NUL */
    CHECK(!cs_valid_event_id("\x7f", 1));             /* DEL */
    CHECK(cs_valid_event_id(" ", 1));                 /* 0x20 is allowed */
    CHECK(!cs_valid_event_id("\xc3", 1));             /* truncated */
    CHECK(!cs_valid_event_id("\xc0\xaf", 2));         /* overlong */
    CHECK(!cs_valid_event_id("\xe0\x80\xaf", 3));     /* overlong */
    CHECK(!cs_valid_event_id("\xed\xa0\x80", 3));     /* surrogate */
    CHECK(!cs_valid_event_id("\xf4\x90\x80\x80", 4)); /* above U+10FFFF */
    CHECK(!cs_valid_event_id("\xf5\x80\x80\x80", 4)); /* never a lead byte */
    CHECK(!cs_valid_event_id("\x80", 1));             /* lone continuation */
    CHECK(!cs_valid_event_id("\xe2\x82", 2));         /* truncated */
    CHECK(!cs_valid_event_id("\xe2\x28\xac", 3));     /* bad continuation */
    free(s128);
    free(s129);
}

static void test_depth(void)
{
    char buf[200];
    size_t n = 0;

    /* 32 nested arrays: exactly the limit. */
    for (int i = 0; i < 32; i++)
        buf[n++] = '[';
    for (int i = 0; i < 32; i++)
        buf[n++] = ']';
    CHECK(cs_json_depth_ok(buf, n, 32));
    CHECK(!cs_json_depth_ok(buf, n, 31));
    CHECK(cs_json_depth_ok("", 0, 0));
    CHECK(cs_json_depth_ok("1", 1, 0));
    CHECK(!cs_json_depth_ok("{}", 2, 0));
    CHECK(cs_json_depth_ok("{}", 2, 1));
    CHECK(cs_json_depth_ok("{\"a\":[1]}", 9, 2));
    CHECK(!cs_json_depth_ok("{\"a\":[{}]}", 10, 2));
    /* Siblings do not add up. */
    CHECK(cs_json_depth_ok("[[],[],[]]", 10, 2));
    /* Brackets inside strings do not count, escaped quotes do not end the string. */
    CHECK(cs_json_depth_ok("{\"a\":\"[[[[{{{{\"}", 16, 1));
    CHECK(cs_json_depth_ok("{\"a\":\"\\\"[[[[\"}", 15, 1));
    CHECK(cs_json_depth_ok("{\"a\":\"\\\\\"}", 11, 1));
    /* An escaped backslash ends the escape: the bracket after the string counts. */
    CHECK(!cs_json_depth_ok("[\"\\\\\",[]]", 9, 1));
    /* Stray closers never make room for more openers than the limit. */
    CHECK(!cs_json_depth_ok("]]]][[", 6, 1));
    /* A NUL byte is just a byte. */
    CHECK(!cs_json_depth_ok("[\0[", 3, 1));
}

/* Runs cs_line_parse and returns the code; the detail goes into detail. */
static cs_err_t line(const char *text, size_t len, json_t **out, char *detail)
{
    return cs_line_parse(text, len, 32, out, detail, 256);
}

static void test_line_parse(void)
{
    char d[256];
    json_t *v;
    cs_err_t e;

#define L(s) s, sizeof(s) - 1

    e = line(L("{\"execution_id\":\"x\",\"type\":\"t\"}"), &v, d);
    CHECK(e == CS_OK);
    REQUIRE(v != NULL);
    CHECK(json_is_object(v));
    json_decref(v);

    e = line(L("[1,2]"), &v, d);
    CHECK(e == CS_ERR_INVALID_JSON && v == NULL);
    CHECK_STR(d, "expected a JSON object, got an array");
    e = line(L("42"), &v, d);
    CHECK(e == CS_ERR_INVALID_JSON && v == NULL);
    CHECK_STR(d, "expected a JSON object, got a number");
    e = line(L("\"s\""), &v, d);
    CHECK(e == CS_ERR_INVALID_JSON);
    CHECK_STR(d, "expected a JSON object, got a string");
    e = line(L("null"), &v, d);
    CHECK(e == CS_ERR_INVALID_JSON);
    CHECK_STR(d, "expected a JSON object, got null");
    e = line(L("true"), &v, d);
    CHECK(e == CS_ERR_INVALID_JSON);
    CHECK_STR(d, "expected a JSON object, got a boolean");

    e = line(L(""), &v, d);
    CHECK(e == CS_ERR_INVALID_JSON && v == NULL);
    CHECK_STR(d, "empty line: expected a JSON object");
    e = line(L("   \t \r"), &v, d);
    CHECK(e == CS_ERR_INVALID_JSON && v == NULL);
    CHECK_STR(d, "empty line: expected a JSON object");
    e = line(L("{\"a\":"), &v, d);
    CHECK(e == CS_ERR_INVALID_JSON && v == NULL);
    CHECK(strncmp(d, "line 1 column ", 14) == 0);
    e = line(L("{\"a\":1} x"), &v, d);
    CHECK(e == CS_ERR_INVALID_JSON && v == NULL);
    e = line(L("{\"a\":1}{}"), &v, d);
    CHECK(e == CS_ERR_INVALID_JSON && v == NULL);
    e = line(L("{\"a\":1}   "), &v, d); /* trailing white space is not garbage */
    CHECK(e == CS_OK);
    json_decref(v);

    /* Invalid UTF-8, inside a string and outside; the detail must stay printable ASCII. */
    e = line(L("{\"a\":\"\xff\xfe\"}"), &v, d);
    CHECK(e == CS_ERR_INVALID_JSON && v == NULL);
    for (const char *p = d; *p; p++)
        CHECK((unsigned char)*p >= 0x20 && (unsigned char)*p < 0x7f);
    e = line(L("{\"a\":\"\xc0\xaf\"}"), &v, d);
    CHECK(e == CS_ERR_INVALID_JSON);
    e = line(L("{\xe9:1}"), &v, d);
    CHECK(e == CS_ERR_INVALID_JSON);
    /* Control characters in strings are refused, and the detail does not echo them raw. */
    e = line(L("{\"a\":\"\x01\"}"), &v, d);
    CHECK(e == CS_ERR_INVALID_JSON);
    for (const char *p = d; *p; p++)
        CHECK((unsigned char)*p >= 0x20 && (unsigned char)*p < 0x7f);

    /* Embedded NUL bytes: the whole length is judged, nothing stops at the NUL. */
    e = line(L("{\"a\":1}\0garbage"), &v, d);
    CHECK(e == CS_ERR_INVALID_JSON && v == NULL);
    e = line(L("{\"a\":\"x\0y\"}"), &v, d);
    CHECK(e == CS_ERR_INVALID_JSON && v == NULL);
    e = line(L("\0"), &v, d);
    CHECK(e == CS_ERR_INVALID_JSON && v == NULL);
    /* \u0000 would put a NUL inside a string: refused too. */
    e = line(L("{\"a\":\"\\u0000\"}"), &v, d);
    CHECK(e == CS_ERR_INVALID_JSON && v == NULL);

    /* Huge numbers: an integer beyond int64 is an error in jansson, a huge real is not. */
    e = line(L("{\"n\":123456789012345678901234567890}"), &v, d);
    CHECK(e == CS_ERR_INVALID_JSON && v == NULL);
    e = line(L("{\"n\":1e999}"), &v, d);
    CHECK(e == CS_ERR_INVALID_JSON && v == NULL);
    e = line(L("{\"n\":9223372036854775807}"), &v, d);
    CHECK(e == CS_OK);
    json_decref(v);
    e = line(L("{\"n\":1.5e300}"), &v, d);
    CHECK(e == CS_OK);
    json_decref(v);

    /* Duplicate keys are accepted (the last one wins), as most JSON parsers do. */
    e = line(L("{\"a\":1,\"a\":2}"), &v, d);
    CHECK(e == CS_OK);
    CHECK(json_integer_value(json_object_get(v, "a")) == 2);
    json_decref(v);
#undef L

    /* Depth: 32 is fine, 33 is refused before the parser sees it. */
    {
        char buf[256];
        size_t n = 0;
        memcpy(buf, "{\"a\":", 5);
        n = 5;
        for (int i = 0; i < 31; i++)
            buf[n++] = '[';
        for (int i = 0; i < 31; i++)
            buf[n++] = ']';
        buf[n++] = '}';
        e = cs_line_parse(buf, n, 32, &v, d, sizeof(d));
        CHECK(e == CS_OK);
        json_decref(v);

        n = 5;
        for (int i = 0; i < 32; i++)
            buf[n++] = '[';
        for (int i = 0; i < 32; i++)
            buf[n++] = ']';
        buf[n++] = '}';
        e = cs_line_parse(buf, n, 32, &v, d, sizeof(d));
        CHECK(e == CS_ERR_INVALID_JSON && v == NULL);
        CHECK_STR(d, "nested deeper than 32 levels");
    }

    /* A tiny detail buffer is honoured and still terminated. */
    {
        char small[8];
        e = cs_line_parse("[1]", 3, 32, &v, small, sizeof(small));
        CHECK(e == CS_ERR_INVALID_JSON);
        CHECK(strlen(small) == 7);
        e = cs_line_parse("{", 1, 32, &v, small, sizeof(small));
        CHECK(e == CS_ERR_INVALID_JSON);
        CHECK(strlen(small) == 7);
    }
}

static void test_validate(void)
{
    char d[256], text[512];
    char *s128 = repeat('a', 128), *s129 = repeat('a', 129), *t64 = repeat('t', 64), *t65 = repeat('t', 65);

    CHECK(validate("{\"execution_id\":\"e\",\"type\":\"t\"}", d) == CS_OK);
    CHECK(validate("{\"execution_id\":\"run-1:a.b_c\",\"type\":\"agent.started\",\"x\":[1,{}]}", d) == CS_OK);

    /* execution_id */
    CHECK(validate("{\"type\":\"t\"}", d) == CS_ERR_MISSING_FIELD);
    CHECK_STR(d, "execution_id is required");
    CHECK(validate("{\"execution_id\":null,\"type\":\"t\"}", d) == CS_ERR_MISSING_FIELD);
    CHECK(validate("{\"execution_id\":1,\"type\":\"t\"}", d) == CS_ERR_INVALID_FIELD);
    CHECK_STR(d, "execution_id must be 1-128 characters of [A-Za-z0-9._:-]");
    CHECK(validate("{\"execution_id\":[\"e\"],\"type\":\"t\"}", d) == CS_ERR_INVALID_FIELD);
    CHECK(validate("{\"execution_id\":{},\"type\":\"t\"}", d) == CS_ERR_INVALID_FIELD);
    CHECK(validate("{\"execution_id\":true,\"type\":\"t\"}", d) == CS_ERR_INVALID_FIELD);
    CHECK(validate("{\"execution_id\":\"\",\"type\":\"t\"}", d) == CS_ERR_INVALID_FIELD);
    CHECK(validate("{\"execution_id\":\"a b\",\"type\":\"t\"}", d) == CS_ERR_INVALID_FIELD);
    CHECK(validate("{\"execution_id\":\"a/b\",\"type\":\"t\"}", d) == CS_ERR_INVALID_FIELD);
    CHECK(validate("{\"execution_id\":\"\\u00e9\",\"type\":\"t\"}", d) == CS_ERR_INVALID_FIELD);
    snprintf(text, sizeof(text), "{\"execution_id\":\"%s\",\"type\":\"t\"}", s128);
    CHECK(validate(text, d) == CS_OK);
    snprintf(text, sizeof(text), "{\"execution_id\":\"%s\",\"type\":\"t\"}", s129);
    CHECK(validate(text, d) == CS_ERR_INVALID_FIELD);

    /* type */
    CHECK(validate("{\"execution_id\":\"e\"}", d) == CS_ERR_MISSING_FIELD);
    CHECK_STR(d, "type is required");
    CHECK(validate("{\"execution_id\":\"e\",\"type\":null}", d) == CS_ERR_MISSING_FIELD);
    CHECK(validate("{\"execution_id\":\"e\",\"type\":7}", d) == CS_ERR_INVALID_FIELD);
    CHECK_STR(d, "type must be 1-64 characters of [A-Za-z0-9._-]");
    CHECK(validate("{\"execution_id\":\"e\",\"type\":\"\"}", d) == CS_ERR_INVALID_FIELD);
    CHECK(validate("{\"execution_id\":\"e\",\"type\":\"a:b\"}", d) == CS_ERR_INVALID_FIELD);
    CHECK(validate("{\"execution_id\":\"e\",\"type\":\"a b\"}", d) == CS_ERR_INVALID_FIELD);
    snprintf(text, sizeof(text), "{\"execution_id\":\"e\",\"type\":\"%s\"}", t64);
    CHECK(validate(text, d) == CS_OK);
    snprintf(text, sizeof(text), "{\"execution_id\":\"e\",\"type\":\"%s\"}", t65);
    CHECK(validate(text, d) == CS_ERR_INVALID_FIELD);
    /* Both missing: execution_id is named first. */
    CHECK(validate("{}", d) == CS_ERR_MISSING_FIELD);
    CHECK_STR(d, "execution_id is required");

    /* Reserved types. */
    CHECK(validate("{\"execution_id\":\"e\",\"type\":\"heartbeat\"}", d) == CS_ERR_INVALID_FIELD);
    CHECK_STR(d, "type \"heartbeat\" is reserved for the daemon");
    CHECK(validate("{\"execution_id\":\"e\",\"type\":\"stream.gap\"}", d) == CS_ERR_INVALID_FIELD);
    CHECK_STR(d, "type \"stream.gap\" is reserved for the daemon");
    CHECK(validate("{\"execution_id\":\"e\",\"type\":\"stream.\"}", d) == CS_ERR_INVALID_FIELD);
    CHECK(validate("{\"execution_id\":\"e\",\"type\":\"heartbeats\"}", d) == CS_OK);
    CHECK(validate("{\"execution_id\":\"e\",\"type\":\"heartbea\"}", d) == CS_OK);
    CHECK(validate("{\"execution_id\":\"e\",\"type\":\"stream\"}", d) == CS_OK);
    CHECK(validate("{\"execution_id\":\"e\",\"type\":\"streams.x\"}", d) == CS_OK);
    CHECK(validate("{\"execution_id\":\"e\",\"type\":\"Heartbeat\"}", d) == CS_OK);

    /* event_id */
    CHECK(validate("{\"execution_id\":\"e\",\"type\":\"t\",\"event_id\":\"id 1/\\u00e9\"}", d) == CS_OK);
    CHECK(validate("{\"execution_id\":\"e\",\"type\":\"t\",\"event_id\":null}", d) == CS_OK);
    CHECK(validate("{\"execution_id\":\"e\",\"type\":\"t\",\"event_id\":5}", d) == CS_ERR_INVALID_FIELD);
    CHECK(strncmp(d, "event_id ", 9) == 0);
    CHECK(validate("{\"execution_id\":\"e\",\"type\":\"t\",\"event_id\":\"\"}", d) == CS_ERR_INVALID_FIELD);
    CHECK(validate("{\"execution_id\":\"e\",\"type\":\"t\",\"event_id\":\"a\\nb\"}", d) ==
          CS_ERR_INVALID_FIELD);
    CHECK(validate("{\"execution_id\":\"e\",\"type\":\"t\",\"event_id\":\"\\u007f\"}", d) ==
          CS_ERR_INVALID_FIELD);
    CHECK(validate("{\"execution_id\":\"e\",\"type\":\"t\",\"event_id\":{}}", d) == CS_ERR_INVALID_FIELD);
    snprintf(text, sizeof(text), "{\"execution_id\":\"e\",\"type\":\"t\",\"event_id\":\"%s\"}", s128);
    CHECK(validate(text, d) == CS_OK);
    snprintf(text, sizeof(text), "{\"execution_id\":\"e\",\"type\":\"t\",\"event_id\":\"%s\"}", s129);
    CHECK(validate(text, d) == CS_ERR_INVALID_FIELD);

    /* timestamp */
    CHECK(validate("{\"execution_id\":\"e\",\"type\":\"t\",\"timestamp\":\"whenever\"}", d) == CS_OK);
    CHECK(validate("{\"execution_id\":\"e\",\"type\":\"t\",\"timestamp\":null}", d) == CS_OK);
    CHECK(validate("{\"execution_id\":\"e\",\"type\":\"t\",\"timestamp\":1768473002}", d) ==
          CS_ERR_INVALID_FIELD);
    CHECK_STR(d, "timestamp must be a string");

    /* A producer's seq is allowed, whatever it holds: it is overwritten. */
    CHECK(validate("{\"execution_id\":\"e\",\"type\":\"t\",\"seq\":\"nope\"}", d) == CS_OK);

    /* Not an object at all. */
    {
        json_t *a = json_array();
        CHECK(cs_event_validate(a, d, sizeof(d)) != CS_OK);
        json_decref(a);
    }

    free(s128);
    free(s129);
    free(t64);
    free(t65);
}

static int is_hex_lower(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static void test_complete(void)
{
    json_t *v;
    const char *id;

    v = obj("{\"execution_id\":\"e\",\"type\":\"t\",\"seq\":99}");
    CHECK(cs_event_complete(v, 7, 1768473002123LL) == 0);
    id = json_string_value(json_object_get(v, "event_id"));
    REQUIRE(id != NULL);
    CHECK(strlen(id) == 36);
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23)
            CHECK(id[i] == '-');
        else
            CHECK(is_hex_lower(id[i]));
    }
    CHECK(id[14] == '4');                                                    /* version 4 */
    CHECK(id[19] == '8' || id[19] == '9' || id[19] == 'a' || id[19] == 'b'); /* RFC 4122 variant */
    CHECK(cs_valid_event_id(id, strlen(id)));
    CHECK_STR(json_string_value(json_object_get(v, "timestamp")), "2026-01-15T10:30:02.123Z");
    CHECK(json_is_integer(json_object_get(v, "seq")));
    CHECK(json_integer_value(json_object_get(v, "seq")) == 7);
    json_decref(v);

    /* Two generated ids differ. */
    {
        json_t *a = obj("{}"), *b = obj("{}");
        CHECK(cs_event_complete(a, 1, 0) == 0);
        CHECK(cs_event_complete(b, 1, 0) == 0);
        CHECK(strcmp(json_string_value(json_object_get(a, "event_id")),
                     json_string_value(json_object_get(b, "event_id"))) != 0);
        json_decref(a);
        json_decref(b);
    }

    /* Given values are kept; null ones are filled in. */
    v = obj("{\"event_id\":\"mine\",\"timestamp\":\"yesterday\",\"seq\":\"x\"}");
    CHECK(cs_event_complete(v, 18446744073709551615ULL >> 1, 1) == 0);
    CHECK_STR(json_string_value(json_object_get(v, "event_id")), "mine");
    CHECK_STR(json_string_value(json_object_get(v, "timestamp")), "yesterday");
    CHECK(json_integer_value(json_object_get(v, "seq")) == INT64_MAX);
    json_decref(v);

    v = obj("{\"event_id\":null,\"timestamp\":null}");
    CHECK(cs_event_complete(v, 1, 0) == 0);
    CHECK(json_is_string(json_object_get(v, "event_id")));
    CHECK_STR(json_string_value(json_object_get(v, "timestamp")), "1970-01-01T00:00:00.000Z");
    CHECK(json_integer_value(json_object_get(v, "seq")) == 1);
    json_decref(v);
}

static void test_timestamp(void)
{
    char ts[32];

    cs_format_timestamp(1768473002123LL, ts, sizeof(ts));
    CHECK_STR(ts, "2026-01-15T10:30:02.123Z");
    CHECK(strlen(ts) == 24);
    cs_format_timestamp(0, ts, sizeof(ts));
    CHECK_STR(ts, "1970-01-01T00:00:00.000Z");
    cs_format_timestamp(1768473002005LL, ts, sizeof(ts));
    CHECK_STR(ts, "2026-01-15T10:30:02.005Z");
    cs_format_timestamp(951868799999LL, ts, sizeof(ts)); /* the last ms of a leap day */
    CHECK_STR(ts, "2000-02-29T23:59:59.999Z");
    cs_format_timestamp(-1, ts, sizeof(ts)); /* floor, not truncation, below zero */
    CHECK_STR(ts, "1969-12-31T23:59:59.999Z");
    /* Exactly 25 bytes is enough. */
    {
        char exact[25];
        cs_format_timestamp(1768473002123LL, exact, sizeof(exact));
        CHECK_STR(exact, "2026-01-15T10:30:02.123Z");
    }

    /* The cached second is per second: a later, then an earlier one, then a short buffer. */
    cs_format_timestamp(1768473062123LL, ts, sizeof(ts));
    CHECK_STR(ts, "2026-01-15T10:31:02.123Z");
    cs_format_timestamp(1768473002999LL, ts, sizeof(ts));
    CHECK_STR(ts, "2026-01-15T10:30:02.999Z");
    {
        char small[11];
        cs_format_timestamp(1768473002123LL, small, sizeof(small));
        CHECK_STR(small, "2026-01-15");
    }

    /* The clock is in milliseconds and after this code was written. */
    {
        int64_t now = cs_unix_ms();
        CHECK(now > 1735689600000LL);  /* 2025-01-01 */
        CHECK(now < 32503680000000LL); /* 3000-01-01 */
    }
}

/* cs_parse_timestamp reads back what cs_format_timestamp writes, and nothing else. */
static void test_parse_timestamp(void)
{
    static const int64_t times[] = {0, 1768473002123LL, 1768473002005LL, 951868799999LL, 253402300799999LL};
    char ts[32];
    int64_t t;

    for (size_t i = 0; i < sizeof(times) / sizeof(times[0]); i++) {
        cs_format_timestamp(times[i], ts, sizeof(ts));
        CHECK(cs_parse_timestamp(ts, strlen(ts), &t) == 0 && t == times[i]);
    }
    static const char *const bad[] = {"whenever",
                                      "",
                                      "2026-01-15T10:30:02.123",
                                      "2026-01-15T10:30:02.123Z ",
                                      "2026-01-15 10:30:02.123Z",
                                      "2026-13-15T10:30:02.123Z",
                                      "2026-04-31T10:30:02.123Z",
                                      "2026-01-15T24:30:02.123Z",
                                      "2026-01-15T10:60:02.123Z",
                                      "2026-01-15T10:30:60.123Z",
                                      "1969-12-31T23:59:59.999Z",
                                      "2026-01-15T10:30:02.12xZ",
                                      "+026-01-15T10:30:02.123Z",
                                      "2026-01-15T10:30:02,123Z"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK(cs_parse_timestamp(bad[i], strlen(bad[i]), &t) == -1);
    CHECK(cs_parse_timestamp("2026-01-15T10:30:02.123Z", 23, &t) == -1); /* the length, not the NUL */
}

static void test_uuid4(void)
{
    char a[37], b[37];

    for (int i = 0; i < 1000; i++) { /* crosses the 4 KiB pool's refills */
        REQUIRE(cs_uuid4(a) == 0);
        CHECK(strlen(a) == 36);
        CHECK(a[8] == '-' && a[13] == '-' && a[18] == '-' && a[23] == '-');
        CHECK(a[14] == '4');
        CHECK(strchr("89ab", a[19]) != NULL);
        CHECK(strspn(a, "0123456789abcdef-") == 36);
        REQUIRE(cs_uuid4(b) == 0);
        CHECK(strcmp(a, b) != 0);
    }
}

int main(void)
{
    RUN(test_err_names);
    RUN(test_execution_id);
    RUN(test_type);
    RUN(test_event_id);
    RUN(test_depth);
    RUN(test_line_parse);
    RUN(test_validate);
    RUN(test_complete);
    RUN(test_timestamp);
    RUN(test_parse_timestamp);
    RUN(test_uuid4);
    CT_DONE();
}
