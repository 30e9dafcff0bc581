/*
 * test_jscan.c - the line scanner: what it accepts and refuses (each case also put to cs_line_parse,
 * which must agree), the members it reports, and the depth limit on both sides of the boundary.
 */
#include "../../src/err.c"
#include "../../src/event.c"
#include "../../src/jscan.c"

#include "ctest.h"

/* Scans text[0..len) at depth 32 and checks that cs_line_parse agrees; returns the scan's result. */
static int scan_n(const char *text, size_t len, cs_jscan_t *sc)
{
    char detail[256];
    json_t *v = NULL;
    int rc = cs_jscan_object(text, len, 32, sc);
    int want = cs_line_parse(text, len, 32, &v, detail, sizeof(detail)) == CS_OK;

    if (want != (rc == 0))
        fprintf(stderr, "scanner and parser disagree on [%.*s]: scan %d, parse %s\n", (int)len, text, rc,
                want ? "ok" : detail);
    CHECK(want == (rc == 0));
    CHECK(rc == 0 || rc == -EINVAL);
    json_decref(v);
    return rc;
}

#define SCAN(s, sc) scan_n(s, sizeof(s) - 1, sc)
#define OK(s)       CHECK(SCAN(s, &sc) == 0)
#define BAD(s)      CHECK(SCAN(s, &sc) == -EINVAL)

/* Checks a reported member: kind, escapedness and (for a kind with text) its text. */
static void check_member(const cs_jscan_member_t *m, int kind, int escaped, const char *text)
{
    CHECK(m->kind == kind);
    CHECK(m->escaped == escaped);
    if (text == NULL) {
        CHECK(m->p == NULL && m->len == 0);
        return;
    }
    CHECK(m->p != NULL && m->len == strlen(text) && memcmp(m->p, text, m->len) == 0);
}

static void test_syntax(void)
{
    cs_jscan_t sc;

    OK("{}");
    OK(" \t{ } \t");
    OK("{\"a\":1}");
    OK("{\"a\":[],\"b\":{},\"c\":[[],{}],\"d\":[1,\"x\",true,false,null,{\"e\":[0]}]}");
    OK("{\"a\" : 1 , \"b\" :\t2}");
    OK("{\"a\":1}\r\n");
    OK("{\"\":\"\"}");
    OK("{\"a\":1,\"a\":2}"); /* duplicates: jansson keeps the last */

    BAD("");
    BAD("   ");
    BAD("{");
    BAD("}");
    BAD("{\"a\"}");
    BAD("{\"a\":}");
    BAD("{\"a\" 1}");
    BAD("{\"a\":1,}");
    BAD("{,\"a\":1}");
    BAD("{\"a\":1 \"b\":2}");
    BAD("{\"a\":[1,]}");
    BAD("{\"a\":[,1]}");
    BAD("{\"a\":[1}");
    BAD("{\"a\":{]}");
    BAD("{\"a\":1]");
    BAD("{\"a\":1}}");
    BAD("{1:2}");
    BAD("{a:1}");
    BAD("{'a':1}");
    BAD("{\"a\":1} x");
    BAD("{\"a\":1}{}");
    BAD("{\"a\":1}\f");
    BAD("\xef\xbb\xbf{}"); /* a byte-order mark */
    BAD("\v{}");

    /* Not objects: jansson parses them, the line still is refused. */
    BAD("[]");
    BAD("[1,2]");
    BAD("\"s\"");
    BAD("42");
    BAD("null");
    BAD("true");
}

static void test_literals_and_numbers(void)
{
    cs_jscan_t sc;

    OK("{\"a\":true,\"b\":false,\"c\":null}");
    BAD("{\"a\":tru}");
    BAD("{\"a\":truex}");
    BAD("{\"a\":True}");
    BAD("{\"a\":nul}");
    BAD("{\"a\":NaN}");
    BAD("{\"a\":Infinity}");
    BAD("{\"a\":-Infinity}");

    OK("{\"a\":0,\"b\":-0,\"c\":1,\"d\":-1,\"e\":1234567890}");
    OK("{\"a\":0.5,\"b\":-0.0,\"c\":1e5,\"d\":1E+5,\"e\":1e-5,\"f\":-1.25e-0}");
    BAD("{\"a\":01}");
    BAD("{\"a\":-01}");
    BAD("{\"a\":+1}");
    BAD("{\"a\":-}");
    BAD("{\"a\":.5}");
    BAD("{\"a\":1.}");
    BAD("{\"a\":1.e5}");
    BAD("{\"a\":1e}");
    BAD("{\"a\":1e+}");
    BAD("{\"a\":0x10}");
    BAD("{\"a\":1_000}");
    BAD("{\"a\":1.5.5}");

    /* Integers are int64 in jansson. */
    OK("{\"a\":9223372036854775807}");
    OK("{\"a\":-9223372036854775808}");
    BAD("{\"a\":9223372036854775808}");
    BAD("{\"a\":-9223372036854775809}");
    BAD("{\"a\":10000000000000000000}");
    OK("{\"a\":9223372036854775808.0}"); /* a real, not an integer */
    OK("{\"a\":1e19}");

    /* Reals must not overflow a double; underflow is fine. */
    OK("{\"a\":1.7976931348623157e308}");
    BAD("{\"a\":1.7976931348623159e308}");
    BAD("{\"a\":1e309}");
    BAD("{\"a\":-1e309}");
    OK("{\"a\":1e-400}");
    OK("{\"a\":0e999999}");
    {
        char big[400];
        memcpy(big, "{\"a\":", 5);
        memset(big + 5, '9', 320);
        memcpy(big + 325, ".5}", 3);
        CHECK(scan_n(big, 328, &sc) == -EINVAL); /* 10^320 */
        memset(big + 5, '9', 300);
        memcpy(big + 305, ".5}", 3);
        CHECK(scan_n(big, 308, &sc) == 0);
    }
}

static void test_strings(void)
{
    cs_jscan_t sc;

    OK("{\"a\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"}");
    OK("{\"a\":\"\\u00e9\\u00E9\\uFFFF\\u0001\"}");
    OK("{\"a\":\"\\uD83D\\uDE00\\ud83d\\ude00\"}");
    OK("{\"a\":\"\x7f\"}"); /* DEL is no control character to jansson */
    BAD("{\"a\":\"\\u0000\"}");
    BAD("{\"\\u0000\":1}");
    BAD("{\"a\":\"\\uD800\"}");
    BAD("{\"a\":\"\\uDBFF x\"}");
    BAD("{\"a\":\"\\uDC00\"}");
    BAD("{\"a\":\"\\uDFFF\\uD800\"}");
    BAD("{\"a\":\"\\uD800\\u0041\"}");
    BAD("{\"a\":\"\\uD800\\n\"}");
    BAD("{\"a\":\"\\uD800\\uD800\"}");
    BAD("{\"a\":\"\\u12\"}");
    BAD("{\"a\":\"\\u12G4\"}");
    BAD("{\"a\":\"\\x41\"}");
    BAD("{\"a\":\"\\a\"}");
    BAD("{\"a\":\"\\'\"}");
    BAD("{\"a\":\"\\\"}");
    BAD("{\"a\":\"abc}");
    BAD("{\"a\":\"\t\"}");
    BAD("{\"a\":\"\n\"}");
    BAD("{\"a\":\"\x1f\"}");

    /* UTF-8, as strict as jansson. */
    OK("{\"a\":\"\xc2\x80\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\"}");
    OK("{\"\xc3\xa9\":\"\xe2\x82\xac\"}");
    BAD("{\"a\":\"\x80\"}");
    BAD("{\"a\":\"\xbf\"}");
    BAD("{\"a\":\"\xc0\xaf\"}");         /* overlong '/' */
    BAD("{\"a\":\"\xc1\xbf\"}");         /* overlong */
    BAD("{\"a\":\"\xe0\x9f\xbf\"}");     /* overlong */
    BAD("{\"a\":\"\xf0\x8f\xbf\xbf\"}"); /* overlong */
    BAD("{\"a\":\"\xed\xa0\x80\"}");     /* a surrogate */
    BAD("{\"a\":\"\xed\xbf\xbf\"}");     /* a surrogate */
    BAD("{\"a\":\"\xf4\x90\x80\x80\"}"); /* above U+10FFFF */
    BAD("{\"a\":\"\xf5\x80\x80\x80\"}");
    BAD("{\"a\":\"\xff\"}");
    BAD("{\"a\":\"\xe2\x82\"}"); /* cut short */
    BAD("{\"a\":\"\xe2\x82");
    BAD("{\"a\":\"\xc3\x28\"}");
    BAD("{\"a\":1,\xc3\xa9:1}"); /* UTF-8 outside a string */
}

static void test_nul(void)
{
    cs_jscan_t sc;

    BAD("{\"a\":\"x\0y\"}");
    BAD("{\"a\":1,\0\"b\":2}");
    BAD("{\"a\":1\0}");    /* jansson alone would skip this one */
    BAD("{\"a\":true\0}"); /* and this */
    BAD("{\"a\":1}\0");
    BAD("\0{\"a\":1}");
}

static void test_depth(void)
{
    cs_jscan_t sc;
    char buf[5000];
    size_t n;

    CHECK(cs_jscan_object("{}", 2, 1, &sc) == 0);
    CHECK(cs_jscan_object("{}", 2, 0, &sc) == -EINVAL);
    CHECK(cs_jscan_object("{\"a\":[]}", 8, 1, &sc) == -EINVAL);
    CHECK(cs_jscan_object("{\"a\":[]}", 8, 2, &sc) == 0);
    CHECK(cs_jscan_object("{\"a\":[],\"b\":{\"c\":1}}", 20, 2, &sc) == 0);
    CHECK(cs_jscan_object("{\"a\":[{}]}", 10, 2, &sc) == -EINVAL);
    /* Brackets inside strings do not count. */
    CHECK(cs_jscan_object("{\"a\":\"[[[{{{\"}", 14, 1, &sc) == 0);

    /* 32 deep is fine at the default, 33 is not; the parser agrees on both. */
    for (unsigned depth = 31; depth <= 34; depth++) {
        n = 0;
        buf[n++] = '{';
        memcpy(buf + n, "\"a\":", 4), n += 4;
        for (unsigned i = 1; i < depth; i++)
            buf[n++] = '[';
        for (unsigned i = 1; i < depth; i++)
            buf[n++] = ']';
        buf[n++] = '}';
        CHECK(scan_n(buf, n, &sc) == (depth <= 32 ? 0 : -EINVAL));
    }
    /* Beyond jansson's own limit (2048) no max_depth helps. */
    n = 0;
    buf[n++] = '{';
    memcpy(buf + n, "\"a\":", 4), n += 4;
    for (unsigned i = 1; i < 2049; i++)
        buf[n++] = '[';
    for (unsigned i = 1; i < 2049; i++)
        buf[n++] = ']';
    buf[n++] = '}';
    CHECK(cs_jscan_object(buf, n, 5000, &sc) == -EINVAL);
    CHECK(cs_jscan_object(buf + 5, n - 6, 5000, &sc) == -EINVAL); /* an array: not an object */
    CHECK(cs_jscan_object(buf, n - 2, 5000, &sc) == -EINVAL);
    n = 0;
    buf[n++] = '{';
    memcpy(buf + n, "\"a\":", 4), n += 4;
    for (unsigned i = 1; i < 2048; i++)
        buf[n++] = '[';
    for (unsigned i = 1; i < 2048; i++)
        buf[n++] = ']';
    buf[n++] = '}';
    CHECK(cs_jscan_object(buf, n, 5000, &sc) == 0);
}

static void test_members(void)
{
    cs_jscan_t sc;

    REQUIRE(SCAN("{\"t_us\":1,\"execution_id\":\"bench-0\",\"type\":\"bench\",\"n\":7}", &sc) == 0);
    check_member(&sc.f[CS_JSCAN_EXECUTION_ID], CS_JSCAN_STRING, 0, "bench-0");
    check_member(&sc.f[CS_JSCAN_TYPE], CS_JSCAN_STRING, 0, "bench");
    check_member(&sc.f[CS_JSCAN_EVENT_ID], CS_JSCAN_ABSENT, 0, NULL);
    check_member(&sc.f[CS_JSCAN_TIMESTAMP], CS_JSCAN_ABSENT, 0, NULL);
    check_member(&sc.f[CS_JSCAN_SEQ], CS_JSCAN_ABSENT, 0, NULL);
    check_member(&sc.f[CS_JSCAN_OP], CS_JSCAN_ABSENT, 0, NULL);
    CHECK(sc.flags == 0);

    REQUIRE(SCAN("{ \"event_id\" : \"\xc3\xa9-1\" , \"timestamp\":\"2026-01-15T10:30:02.123Z\",\"seq\":12,"
                 "\"op\":null,\"type\":\"a\\u0062\",\"execution_id\":\"\"}",
                 &sc) == 0);
    check_member(&sc.f[CS_JSCAN_EVENT_ID], CS_JSCAN_STRING, 0, "\xc3\xa9-1");
    check_member(&sc.f[CS_JSCAN_TIMESTAMP], CS_JSCAN_STRING, 0, "2026-01-15T10:30:02.123Z");
    check_member(&sc.f[CS_JSCAN_SEQ], CS_JSCAN_OTHER, 0, "12");
    check_member(&sc.f[CS_JSCAN_OP], CS_JSCAN_NULL, 0, "null");
    check_member(&sc.f[CS_JSCAN_TYPE], CS_JSCAN_STRING, 1, "a\\u0062");
    check_member(&sc.f[CS_JSCAN_EXECUTION_ID], CS_JSCAN_STRING, 0, "");
    CHECK(sc.flags == 0);

    /* Arrays and objects as values: their whole text. Nested keys are not top-level members. */
    REQUIRE(SCAN("{\"x\":{\"type\":\"inner\",\"seq\":1},\"seq\":[1,{\"a\":[]}],\"op\":{},\"type\":true}",
                 &sc) == 0);
    check_member(&sc.f[CS_JSCAN_SEQ], CS_JSCAN_OTHER, 0, "[1,{\"a\":[]}]");
    check_member(&sc.f[CS_JSCAN_OP], CS_JSCAN_OTHER, 0, "{}");
    check_member(&sc.f[CS_JSCAN_TYPE], CS_JSCAN_OTHER, 0, "true");
    check_member(&sc.f[CS_JSCAN_EXECUTION_ID], CS_JSCAN_ABSENT, 0, NULL);
    CHECK(sc.flags == 0);

    /* A member twice: the last one is reported, as jansson keeps it, and the scan says so. */
    REQUIRE(SCAN("{\"type\":\"a\",\"x\":1,\"type\":\"b\"}", &sc) == 0);
    check_member(&sc.f[CS_JSCAN_TYPE], CS_JSCAN_STRING, 0, "b");
    CHECK(sc.flags == CS_JSCAN_DUPLICATE);
    REQUIRE(SCAN("{\"x\":1,\"x\":2}", &sc) == 0);
    CHECK(sc.flags == 0); /* only the reported members count */

    /* A key with an escape may spell a reported name: the scan does not decode keys, it tells. */
    REQUIRE(SCAN("{\"execution_id\":\"a\",\"execution_\\u0069d\":\"b\"}", &sc) == 0);
    CHECK(sc.flags == CS_JSCAN_KEY_ESCAPED);
    check_member(&sc.f[CS_JSCAN_EXECUTION_ID], CS_JSCAN_STRING, 0, "a");
    REQUIRE(SCAN("{\"a\":{\"\\n\":1}}", &sc) == 0);
    CHECK(sc.flags == 0); /* not a top-level key */

    /* CR and LF as white space (the store keeps only one-line text as it came). */
    REQUIRE(SCAN("{\"a\":1,\r\"b\":2}", &sc) == 0);
    CHECK(sc.flags == CS_JSCAN_CRLF);
    REQUIRE(SCAN("{\"a\":1}\n", &sc) == 0);
    CHECK(sc.flags == CS_JSCAN_CRLF);
    REQUIRE(SCAN("{\"a\":\"\\r\\n\"}", &sc) == 0);
    CHECK(sc.flags == 0);

    /* Names that merely start like a reported one. */
    REQUIRE(SCAN("{\"types\":\"a\",\"ty\":\"b\",\"op_\":1,\"seq \":2,\"event\":3}", &sc) == 0);
    for (int i = 0; i < CS_JSCAN_N_MEMBERS; i++)
        CHECK(sc.f[i].kind == CS_JSCAN_ABSENT);

    /* An object cut short after a member is refused. */
    CHECK(SCAN("{\"type\":\"a\",", &sc) == -EINVAL);
}

int main(void)
{
    RUN(test_syntax);
    RUN(test_literals_and_numbers);
    RUN(test_strings);
    RUN(test_nul);
    RUN(test_depth);
    RUN(test_members);
    CT_DONE();
}
