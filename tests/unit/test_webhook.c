/* Unit tests of webhooks out's pure parts (whconf.c): the Standard Webhooks signature against the
 * spec's published vector, secrets, the back-off schedule, the allow list, which registered URL gets
 * which event type, and authentication headers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/cfgschema.c"
#include "../../src/whconf.c"

#include "ctest.h"

/* The example of the Standard Webhooks specification (and of svix's libraries). */
static void test_signature_vector(void)
{
    unsigned char *key = NULL;
    size_t klen = 0;
    char sig[128];
    const char *body = "{\"test\": 2432232314}";

    REQUIRE(cs_webhook_secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &key, &klen) == 0);
    CHECK(klen == 24);
    size_t n = cs_webhook_sign(key, klen, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", body, strlen(body),
                               sig, sizeof(sig));
    CHECK(n == strlen(sig));
    CHECK_STR(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    /* Another body, another signature. */
    n = cs_webhook_sign(key, klen, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265331", body, strlen(body), sig,
                        sizeof(sig));
    CHECK(n > 0 && strcmp(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=") != 0);
    free(key);
}

static void test_secrets(void)
{
    unsigned char *key = NULL;
    size_t klen = 0;

    REQUIRE(cs_webhook_secret_key("whsec_YWJj", &key, &klen) == 0); /* "abc" */
    CHECK(klen == 3 && memcmp(key, "abc", 3) == 0);
    free(key);
    REQUIRE(cs_webhook_secret_key("whsec_YWI=", &key, &klen) == 0); /* "ab" */
    CHECK(klen == 2 && memcmp(key, "ab", 2) == 0);
    free(key);
    CHECK(cs_webhook_secret_key("whsec_", &key, &klen) == -EINVAL);
    CHECK(cs_webhook_secret_key("whsec_YW", &key, &klen) == -EINVAL);   /* not a multiple of 4 */
    CHECK(cs_webhook_secret_key("whsec_Y!Jj", &key, &klen) == -EINVAL); /* not base64 */
    CHECK(cs_webhook_secret_key("whsec_Y=Jj", &key, &klen) == -EINVAL); /* padding inside */
    CHECK(cs_webhook_secret_key("whsec_YW=j", &key, &klen) == -EINVAL);
}

static void test_backoff(void)
{
    /* 1 s doubling to 5 min, each step jittered within [half, whole]. */
    static const int64_t base[] = {0,     1000,   2000,   4000,   8000,   16000, 32000,
                                   64000, 128000, 256000, 300000, 300000, 300000};
    for (unsigned n = 1; n <= 12; n++) {
        int64_t lo = cs_webhook_backoff_ms(n, 0.0), hi = cs_webhook_backoff_ms(n, 0.999999);
        if (lo != base[n] / 2 || hi < base[n] - 1 || hi > base[n])
            fprintf(stderr, "   attempt %u: %lld..%lld, want %lld..%lld\n", n, (long long)lo, (long long)hi,
                    (long long)(base[n] / 2), (long long)base[n]);
        CHECK(lo == base[n] / 2 && hi >= base[n] - 1 && hi <= base[n]);
    }
    CHECK(cs_webhook_backoff_ms(1000, 0.5) <= 300000);
    CHECK(cs_webhook_backoff_ms(1, -1.0) == 500 && cs_webhook_backoff_ms(1, 7.0) <= 1000);
}

static void test_allow(void)
{
    char *allow[] = {"http://127.0.0.1:9000", "https://hooks.example.com/crew/"};
    size_t n = 2;

    CHECK(cs_webhook_allowed("http://127.0.0.1:9000/hitl", allow, n));
    CHECK(cs_webhook_allowed("http://127.0.0.1:9000", allow, n));
    CHECK(cs_webhook_allowed("http://127.0.0.1:9000?x=1", allow, n));
    CHECK(!cs_webhook_allowed("http://127.0.0.1:90001/hitl", allow, n)); /* not at a boundary */
    CHECK(!cs_webhook_allowed("http://127.0.0.1:9000.evil.net/", allow, n));
    CHECK(cs_webhook_allowed("https://hooks.example.com/crew/a", allow, n));
    CHECK(!cs_webhook_allowed("https://hooks.example.com/other", allow, n));
    CHECK(!cs_webhook_allowed("https://hooks.example.com/crewx", allow, n));
    CHECK(!cs_webhook_allowed("http://user@127.0.0.1:9000/", allow, n));
    CHECK(!cs_webhook_allowed("http://127.0.0.1:9000/a b", allow, n));
    CHECK(!cs_webhook_allowed("ftp://127.0.0.1:9000/", allow, n));
    CHECK(!cs_webhook_allowed("http://127.0.0.1:9000/", allow, 0)); /* default: nothing */
    CHECK(!cs_webhook_allowed("", allow, n));
}

static unsigned kinds(const char *t)
{
    return cs_webhook_kinds_for(t, strlen(t));
}

static void test_kinds(void)
{
    CHECK(kinds("human_input_required") == CS_WEBHOOK_HUMAN);
    CHECK(kinds("human_input_completed") == 0);
    CHECK(kinds("task_completed") == CS_WEBHOOK_TASK);
    CHECK(kinds("task_failed") == CS_WEBHOOK_TASK);
    CHECK(kinds("task_started") == 0);
    CHECK(kinds("agent.completed") == (CS_WEBHOOK_TASK | CS_WEBHOOK_STEP));
    CHECK(kinds("agent.started") == CS_WEBHOOK_STEP);
    CHECK(kinds("agent_execution_started") == CS_WEBHOOK_STEP);
    CHECK(kinds("tool.called") == CS_WEBHOOK_STEP);
    CHECK(kinds("tool_usage_finished") == CS_WEBHOOK_STEP);
    CHECK(kinds("agent.") == 0 && kinds("tool") == 0);
    CHECK(kinds("run.completed") == CS_WEBHOOK_CREW);
    CHECK(kinds("run.failed") == CS_WEBHOOK_CREW);
    CHECK(kinds("run.canceled") == CS_WEBHOOK_CREW);
    CHECK(kinds("crew_kickoff_completed") == CS_WEBHOOK_CREW);
    CHECK(kinds("crew_kickoff_failed") == CS_WEBHOOK_CREW);
    CHECK(kinds("run.started") == 0 && kinds("log") == 0 && kinds("llm_stream_chunk") == 0);
}

static void test_auth_header(void)
{
    char *h = NULL;
    const char *what = NULL;
    json_t *a = json_pack("{s:s, s:s}", "strategy", "bearer", "token", "t0k");
    CHECK(cs_webhook_auth_header(a, &h, &what) == 0);
    CHECK_STR(h, "Authorization: Bearer t0k");
    free(h);
    json_decref(a);
    a = json_pack("{s:s, s:s, s:s}", "strategy", "basic", "username", "Aladdin", "password", "open sesame");
    CHECK(cs_webhook_auth_header(a, &h, &what) == 0);
    CHECK_STR(h, "Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="); /* RFC 7617's example */
    free(h);
    json_decref(a);
    a = json_pack("{s:s}", "strategy", "digest");
    CHECK(cs_webhook_auth_header(a, &h, &what) == -EINVAL && h == NULL && strstr(what, "strategy") != NULL);
    json_decref(a);
    a = json_pack("{s:s, s:s}", "strategy", "bearer", "token", "a\r\nX-Evil: 1");
    CHECK(cs_webhook_auth_header(a, &h, &what) == -EINVAL && h == NULL);
    json_decref(a);
    CHECK(cs_webhook_auth_header(NULL, &h, &what) == 0 && h == NULL);
}

/* webhooks.endpoints rows: what is refused, with the path in the message; secrets hidden in a dump. */
typedef struct {
    json_t *eps;
} conf_t;
static const cs_cfg_field_t ep_row = {
    .key = "endpoints", .kind = CS_CFG_CUSTOM, .off = 0, .ops = &cs_webhook_endpoints_ops};

static int parse(const char *text, char *err, size_t errlen, conf_t *c)
{
    cs_cfg_ctx_t ctx = {.err = err, .errlen = errlen};
    json_t *v = json_loads(text, 0, NULL);
    REQUIRE(v != NULL);
    size_t mark = cs_cfg_push_key(&ctx, "webhooks.endpoints");
    int rc = cs_webhook_endpoints_ops.parse(c, &ep_row, v, &ctx);
    cs_cfg_pop(&ctx, mark);
    json_decref(v);
    return rc;
}

static void test_endpoint_rows(void)
{
    conf_t c = {0};
    char err[512];
    static const struct {
        const char *text, *want;
    } bad[] = {
        {"{}", "expected an array"},
        {"[{\"url\":\"http://a/\"}]", "[0]: name"},
        {"[{\"name\":\"a\",\"url\":\"ftp://a/\"}]", "url"},
        {"[{\"name\":\"a\",\"url\":\"http://a/\"},{\"name\":\"a\",\"url\":\"http://a/\"}]", "used twice"},
        {"[{\"name\":\"a\",\"url\":\"http://a/\",\"types\":[\"run.*x\"]}]", "types[0]"},
        {"[{\"name\":\"a\",\"url\":\"http://a/\",\"types\":[]}]", "types"},
        {"[{\"name\":\"a\",\"url\":\"http://a/\",\"secret\":\"abc\"}]", "secret"},
        {"[{\"name\":\"a\",\"url\":\"http://a/\",\"authentication\":{\"strategy\":\"bearer\"}}]",
         "authentication.token"},
        {"[{\"name\":\"a\",\"url\":\"http://a/\",\"extra\":1}]", "unknown key \"extra\""},
        {"[{\"name\":\"a\",\"url\":\"http://a/"
         "\",\"authentication\":{\"strategy\":\"bearer\",\"token\":\"(set)\"}}]",
         "not a value"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        int rc = parse(bad[i].text, err, sizeof(err), &c);
        if (rc != -EINVAL || strstr(err, bad[i].want) == NULL)
            fprintf(stderr, "   %s: rc %d, \"%s\" (want \"%s\")\n", bad[i].text, rc, err, bad[i].want);
        CHECK(rc == -EINVAL && strstr(err, bad[i].want) != NULL);
    }
    CHECK(c.eps == NULL);
    REQUIRE(parse("[{\"name\":\"a\",\"url\":\"http://a/\",\"types\":[\"run.*\",\"*\",\"log\"],"
                  "\"authentication\":{\"strategy\":\"basic\",\"username\":\"u\",\"password\":\"pw\"},"
                  "\"secret\":\"whsec_YWJj\"}]",
                  err, sizeof(err), &c) == 0);
    json_t *d = cs_webhook_endpoints_ops.dump(&c, &ep_row);
    char *s = json_dumps(d, JSON_COMPACT);
    CHECK(strstr(s, "pw") == NULL && strstr(s, "YWJj") == NULL && strstr(s, "(set)") != NULL);
    free(s);
    json_decref(d);
    cs_webhook_endpoints_ops.release(&c, &ep_row);
    CHECK(c.eps == NULL);
}

int main(void)
{
    RUN(test_endpoint_rows);
    RUN(test_signature_vector);
    RUN(test_secrets);
    RUN(test_backoff);
    RUN(test_allow);
    RUN(test_kinds);
    RUN(test_auth_header);
    CT_DONE();
}
