/*
 * test_head.c - request-head dispatch decisions and route matching.
 */
#include "../../src/cursor.c"
#include "../../src/err.c"
#include "../../src/event.c"
#include "../../src/filter.c"
#include "../../src/head.c"
#include "../../src/log.c"
#include "../../src/route.c"

#include "ctest.h"

static cs_head_result_t scan(const char *s)
{
    return cs_head_scan(s, strlen(s), NULL);
}

static void test_head(void)
{
    size_t hl = 0;
    const char *get = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    CHECK(cs_head_scan(get, strlen(get), &hl) == CS_HEAD_HTTP && hl == strlen(get));
    CHECK(scan("GET /ws/human-input/e HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
               "Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: k\r\n\r\n") == CS_HEAD_WEBSOCKET);
    CHECK(scan("GET / HTTP/1.1\r\nupgrade: WebSocket\r\nconnection: upgrade\r\n\r\n") == CS_HEAD_WEBSOCKET);
    /* Upgrade without Connection: upgrade is a plain request. */
    CHECK(scan("GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n") == CS_HEAD_HTTP);
    CHECK(scan("GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n") == CS_HEAD_HTTP);
    /* Incomplete at every prefix of a valid head. */
    for (size_t i = 0; i < strlen(get); i++)
        CHECK(cs_head_scan(get, i, NULL) == CS_HEAD_INCOMPLETE);
    CHECK(scan("GET / HTTP/1.0\n\n") == CS_HEAD_HTTP);
    /* Not HTTP/1.x at all. */
    CHECK(scan("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03") == CS_HEAD_INVALID);
    CHECK(scan(" GET / HTTP/1.1\r\n\r\n") == CS_HEAD_INVALID);
    CHECK(scan("GET  / HTTP/1.1\r\n\r\n") == CS_HEAD_INVALID);
    CHECK(scan("GET / HTTP/2.0\r\n\r\n") == CS_HEAD_INVALID);
    CHECK(scan("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") == CS_HEAD_INVALID);
    CHECK(scan("hello world\r\n") == CS_HEAD_INVALID);
    CHECK(scan("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA") == CS_HEAD_INVALID);
    CHECK(cs_head_scan("GET /\0 HTTP/1.1\r\n\r\n", 20, NULL) == CS_HEAD_INVALID);
}

static void test_routes(void)
{
    cs_route_t r;
    CHECK(cs_route_match("/health", 7, &r) == CS_ROUTE_HEALTH);
    CHECK(cs_route_match("/health/", 8, &r) == CS_ROUTE_HEALTH);
    CHECK(cs_route_match("/v1/events", 10, &r) == CS_ROUTE_GLOBAL_SSE);
    CHECK(cs_route_match("/ws/human-input/run-1", 21, &r) == CS_ROUTE_HITL_WS);
    CHECK_STR(r.execution_id, "run-1");
    CHECK(cs_route_match("/events/human-input/a.b:c_d-e", 29, &r) == CS_ROUTE_HITL_SSE);
    CHECK_STR(r.execution_id, "a.b:c_d-e");
    CHECK(cs_route_match("/poll/human-input/x", 19, &r) == CS_ROUTE_HITL_POLL);
    const char *p = "/v1/executions/e9/events";
    CHECK(cs_route_match(p, strlen(p), &r) == CS_ROUTE_EXEC_SSE && strcmp(r.execution_id, "e9") == 0);
    p = "/v1/executions/e9/ws";
    CHECK(cs_route_match(p, strlen(p), &r) == CS_ROUTE_EXEC_WS);
    p = "/v1/executions/e9/poll";
    CHECK(cs_route_match(p, strlen(p), &r) == CS_ROUTE_EXEC_POLL);
    p = "/v1/executions/e 9/poll";
    CHECK(cs_route_match(p, strlen(p), &r) == CS_ROUTE_EXEC_POLL && r.bad_id);
    p = "/v1/executions/a/b/poll";
    CHECK(cs_route_match(p, strlen(p), &r) == CS_ROUTE_NONE);
    p = "/v1/executions//poll";
    CHECK(cs_route_match(p, strlen(p), &r) == CS_ROUTE_NONE);
    CHECK(cs_route_match("/", 1, &r) == CS_ROUTE_DASHBOARD);
    CHECK(cs_route_match("/x", 2, &r) == CS_ROUTE_NONE);
    CHECK(cs_route_match("/events/human-input/", 20, &r) == CS_ROUTE_NONE);
    CHECK(cs_route_is_ws(CS_ROUTE_EXEC_WS) && !cs_route_is_ws(CS_ROUTE_EXEC_SSE));
    CHECK(cs_route_is_hitl(CS_ROUTE_HITL_POLL) && !cs_route_is_hitl(CS_ROUTE_EXEC_POLL));
}

/* A query made of name=value pairs for cs_sub_req_parse. */
typedef struct kv {
    const char *k, *v;
} kv_t;

static const char *lookup(void *ctx, const char *name)
{
    for (kv_t *p = ctx; p->k != NULL; p++)
        if (strcmp(p->k, name) == 0)
            return p->v;
    return NULL;
}

static void test_sub_req(void)
{
    cs_sub_req_t q;
    char err[256];
    kv_t none[] = {{NULL, NULL}};
    REQUIRE(cs_sub_req_parse(&q, CS_ROUTE_EXEC_POLL, lookup, lookup, none, err, sizeof(err)) == 0);
    CHECK(q.start.kind == CS_START_HISTORY && q.timeout_s == 25 && q.filter.n == 0);
    cs_sub_req_free(&q);
    REQUIRE(cs_sub_req_parse(&q, CS_ROUTE_HITL_POLL, lookup, lookup, none, err, sizeof(err)) == 0);
    CHECK(q.timeout_s == 0 && q.filter.n == 1 && cs_filter_match(&q.filter, "human_input_required", 20));
    CHECK(!cs_filter_match(&q.filter, "log", 3));
    cs_sub_req_free(&q);

    kv_t a[] = {
        {"types", "agent.*,log"}, {"since_seq", "7"}, {"named", "1"}, {"timeout", "60"}, {NULL, NULL}};
    REQUIRE(cs_sub_req_parse(&q, CS_ROUTE_EXEC_POLL, lookup, lookup, a, err, sizeof(err)) == 0);
    CHECK(q.start.kind == CS_START_AFTER_SEQ && q.start.seq == 7 && q.named && q.timeout_s == 60);
    CHECK(q.filter.n == 2);
    cs_sub_req_free(&q);

    /* The Last-Event-ID header wins over the query (a browser reconnecting). */
    kv_t b[] = {{"last_event_id", "abc"}, {"Last-Event-ID", "def"}, {"since", "now"}, {NULL, NULL}};
    REQUIRE(cs_sub_req_parse(&q, CS_ROUTE_EXEC_SSE, lookup, lookup, b, err, sizeof(err)) == 0);
    CHECK(q.start.kind == CS_START_AFTER_ID && strcmp(q.start.id, "def") == 0);
    cs_sub_req_free(&q);
    kv_t c[] = {{"since", "now"}, {NULL, NULL}};
    REQUIRE(cs_sub_req_parse(&q, CS_ROUTE_EXEC_SSE, lookup, lookup, c, err, sizeof(err)) == 0);
    CHECK(q.start.kind == CS_START_NOW);
    cs_sub_req_free(&q);

    kv_t bad[][2] = {{{"timeout", "61"}, {NULL, NULL}},      {{"timeout", "abc"}, {NULL, NULL}},
                     {{"timeout", "-1"}, {NULL, NULL}},      {{"since_seq", "x"}, {NULL, NULL}},
                     {{"since", "yesterday"}, {NULL, NULL}}, {{"named", "yes"}, {NULL, NULL}},
                     {{"types", "a b"}, {NULL, NULL}},       {{"types", ",,"}, {NULL, NULL}}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        CHECK(cs_sub_req_parse(&q, CS_ROUTE_EXEC_POLL, lookup, lookup, bad[i], err, sizeof(err)) == -EINVAL);
        /* The message names the parameter. */
        CHECK(strstr(err, bad[i][0].k) != NULL);
    }
}

static int parse(const char *s, cs_head_req_t *r)
{
    return cs_head_parse(s, strlen(s), r);
}

static int str_is(cs_head_str_t v, const char *want)
{
    return v.p != NULL && v.n == strlen(want) && memcmp(v.p, want, v.n) == 0;
}

static void test_parse(void)
{
    cs_head_req_t r;

    CHECK(parse("GET /v1/events?types=log&x=1 HTTP/1.1\r\nHost: h\r\nAuthorization:  Bearer t \r\n"
                "last-event-id: e-1\r\nORIGIN: https://a\r\nContent-Length: 0\r\n\r\n",
                &r) == 0);
    CHECK(str_is(r.path, "/v1/events") && str_is(r.query, "types=log&x=1"));
    CHECK(str_is(r.authorization, "Bearer t") && str_is(r.last_event_id, "e-1") &&
          str_is(r.origin, "https://a"));
    CHECK(parse("GET / HTTP/1.1\r\n\r\n", &r) == 0 && str_is(r.path, "/") && r.query.n == 0 &&
          r.authorization.p == NULL);
    CHECK(parse("GET /a? HTTP/1.1\r\nX:\r\n\r\n", &r) == 0 && str_is(r.path, "/a") && r.query.n == 0);
    /* Everything unusual is declined (libmicrohttpd reads it). */
    const char *declined[] = {
        "POST / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.0\r\n\r\n",
        "GET * HTTP/1.1\r\n\r\n",
        "GET /%41 HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\n\n",
        "GET / HTTP/1.1\r\nHost: h\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n",
        "GET / HTTP/1.1\r\nBad Name: v\r\n\r\n",
        "GET / HTTP/1.1\r\n: v\r\n\r\n",
        "GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
        "GET / HTTP/1.1\r\nAuthorization: a\r\nauthorization: b\r\n\r\n",
        "GET / HTTP/1.1\r\nLast-Event-ID: a\r\nLast-Event-ID: b\r\n\r\n",
        "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\nextra",
        "GET / HTTP/1.1\r\nHost: h\r\n",
        "GET / HTTP/1.1\r\n",
    };
    for (size_t i = 0; i < sizeof(declined) / sizeof(declined[0]); i++)
        CHECK(parse(declined[i], &r) == -1);
    /* Every proper prefix of a good head is declined too (the head must end exactly at len). */
    const char *good = "GET /x HTTP/1.1\r\nA: b\r\n\r\n";
    for (size_t i = 0; i < strlen(good); i++)
        CHECK(cs_head_parse(good, i, &r) == -1);
}

static void test_args(void)
{
    char out[16];
    cs_head_str_t q = {"a=1&types=log%2Ctool.%2a&sp=a+b&bare&named=&x=%zz&nul=%00&long=0123456789abcdefg", 0};
    q.n = strlen(q.p);

    CHECK(cs_head_arg(q, "a", out, sizeof(out)) == 1 && strcmp(out, "1") == 0);
    CHECK(cs_head_arg(q, "types", out, sizeof(out)) == 1 && strcmp(out, "log,tool.*") == 0);
    CHECK(cs_head_arg(q, "sp", out, sizeof(out)) == 1 && strcmp(out, "a b") == 0);
    CHECK(cs_head_arg(q, "named", out, sizeof(out)) == 1 && strcmp(out, "") == 0);
    CHECK(cs_head_arg(q, "type", out, sizeof(out)) == 0);
    CHECK(cs_head_arg(q, "missing", out, sizeof(out)) == 0);
    CHECK(cs_head_arg(q, "bare", out, sizeof(out)) == -1);
    CHECK(cs_head_arg(q, "x", out, sizeof(out)) == -1);
    CHECK(cs_head_arg(q, "nul", out, sizeof(out)) == -1);
    CHECK(cs_head_arg(q, "long", out, sizeof(out)) == -1);
    cs_head_str_t dup = {"a=1&a=2", 7}, tail = {"a=%4", 4};
    CHECK(cs_head_arg(dup, "a", out, sizeof(out)) == 1 && strcmp(out, "1") == 0);
    CHECK(cs_head_arg(tail, "a", out, sizeof(out)) == -1);
    cs_head_str_t empty = {"a=", 2};
    CHECK(cs_head_arg(empty, "a", out, 1) == 1 && out[0] == '\0');
    CHECK(cs_head_arg(empty, "a", out, 0) == -1); /* no room even for the terminator */
}

/* An encoded NUL in the target (path or query) of a head: refused before a library decodes it. */
static void test_target_nul(void)
{
    static const char *const nul[] = {
        "GET /v1/executions/a%00b/ws HTTP/1.1\r\n\r\n",
        "GET /ws/human-input/run%00 HTTP/1.1\r\n\r\n",
        "GET /v1/executions/run-1/ws?token=a%00b HTTP/1.1\r\n\r\n",
        "GET %00 HTTP/1.1\r\n\r\n",
    };
    static const char *const fine[] = {
        "GET /v1/executions/run-1/ws HTTP/1.1\r\nX-A: %00\r\n\r\n", /* a header, not the target */
        "GET /health%2500 HTTP/1.1\r\n\r\n",                        /* a literal "%00" */
        "GET /a%0 HTTP/1.1\r\n\r\n",
        "GET /a%01 HTTP/1.1\r\n\r\n",
        "GET /a%",
        "GET",
        "",
    };
    for (size_t i = 0; i < sizeof(nul) / sizeof(nul[0]); i++)
        CHECK(cs_head_target_nul(nul[i], strlen(nul[i])));
    for (size_t i = 0; i < sizeof(fine) / sizeof(fine[0]); i++)
        CHECK(!cs_head_target_nul(fine[i], strlen(fine[i])));
}

int main(void)
{
    RUN(test_head);
    RUN(test_parse);
    RUN(test_args);
    RUN(test_routes);
    RUN(test_sub_req);
    RUN(test_target_nul);
    CT_DONE();
}
