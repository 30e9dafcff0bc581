/*
 * test_err.c - the error table: every code has a name, a status and an HTTP name; names are distinct
 * except where two codes differ only in their detail; -errno values answer as the codes they stand
 * for; what a transport answers today (the statuses, names and close codes the e2e tests see).
 */
#include "../../src/err.c"
#include "../../src/httputil.c"

#include <errno.h>

#include "ctest.h"

static int is_code(int c)
{
    return c == CS_OK || (c <= -(CS_ERR_BASE + 1) && c >= CS_ERR_LAST);
}

static void test_every_code(void)
{
    for (int c = -(CS_ERR_BASE + 1); c >= CS_ERR_LAST; c--) {
        const char *name = cs_err_name(c);
        unsigned st = cs_err_http_status(c);
        REQUIRE(is_code(c));
        CHECK(cs_err_canon(c) == (cs_err_t)c);
        CHECK(name != NULL && name[0] != '\0' && strcmp(name, "ok") != 0);
        CHECK(st >= 400 && st <= 599);
        CHECK(strcmp(cs_http_reason(st), "Error") != 0); /* a reason phrase for every status */
        CHECK(cs_err_http_name(c) != NULL && cs_err_http_name(c)[0] != '\0');
        unsigned wc = cs_err_ws_close(c);
        CHECK(wc == 0 || (wc >= 1000 && wc < 1015 && wc != 1004 && wc != 1005 && wc != 1006));
        for (size_t i = 0; name[i] != '\0'; i++)
            CHECK((name[i] >= 'a' && name[i] <= 'z') || name[i] == '_');
    }
    CHECK_STR(cs_err_name(CS_OK), "ok");
    CHECK(cs_err_http_status(CS_OK) == 200);
}

/* Two codes share a wire name only when nothing but the detail tells them apart. */
static void test_distinct_names(void)
{
    int shared = 0;

    for (int a = -(CS_ERR_BASE + 1); a >= CS_ERR_LAST; a--)
        for (int b = a - 1; b >= CS_ERR_LAST; b--) {
            if (strcmp(cs_err_name(a), cs_err_name(b)) != 0)
                continue;
            shared++;
            CHECK(cs_err_http_status(a) == cs_err_http_status(b));
            CHECK(cs_err_ws_close(a) == cs_err_ws_close(b));
            CHECK_STR(cs_err_http_name(a), cs_err_http_name(b));
            CHECK(cs_err_detail(a) != NULL && cs_err_detail(b) != NULL &&
                  strcmp(cs_err_detail(a), cs_err_detail(b)) != 0);
        }
    CHECK(shared == 1); /* no_token and bad_token: both "unauthorized" */
    CHECK_STR(cs_err_name(CS_ERR_NO_TOKEN), "unauthorized");
    CHECK_STR(cs_err_name(CS_ERR_BAD_TOKEN), "unauthorized");
}

/* The wire words and statuses the protocol documents (docs/protocol.md) and the e2e tests check. */
static void test_wire(void)
{
    static const struct {
        int code;
        const char *name, *http_name;
        unsigned status, ws_close;
    } want[] = {
        {CS_ERR_INVALID_JSON, "invalid_json", "bad_request", 400, 0},
        {CS_ERR_MISSING_FIELD, "missing_field", "bad_request", 400, 0},
        {CS_ERR_INVALID_FIELD, "invalid_field", "bad_request", 400, 0},
        {CS_ERR_TOO_LARGE, "too_large", "too_large", 413, 1009},
        {CS_ERR_NOT_FOUND, "not_found", "not_found", 404, 0},
        {CS_ERR_FORBIDDEN, "forbidden", "forbidden", 403, 0},
        {CS_ERR_BAD_OP, "bad_op", "bad_request", 400, 0},
        {CS_ERR_CONFLICT, "conflict", "conflict", 409, 0},
        {CS_ERR_INTERNAL, "internal", "internal", 500, 1011},
        {CS_ERR_BAD_REQUEST, "bad_request", "bad_request", 400, 0},
        {CS_ERR_NO_TOKEN, "unauthorized", "unauthorized", 401, 0},
        {CS_ERR_BAD_TOKEN, "unauthorized", "unauthorized", 401, 0},
        {CS_ERR_METHOD_NOT_ALLOWED, "method_not_allowed", "method_not_allowed", 405, 0},
        {CS_ERR_UPGRADE_REQUIRED, "upgrade_required", "upgrade_required", 426, 0},
        {CS_ERR_UNAVAILABLE, "unavailable", "unavailable", 503, 1001},
        {CS_ERR_HEAD_TOO_LARGE, "head_too_large", "head_too_large", 431, 0},
        {CS_ERR_HEAD_TIMEOUT, "head_timeout", "head_timeout", 408, 0},
        {CS_ERR_STALLED, "stalled", "stalled", 408, 1013},
        {CS_ERR_REPLIES_UNREAD, "replies_unread", "replies_unread", 429, 1008},
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        CHECK_STR(cs_err_name(want[i].code), want[i].name);
        CHECK_STR(cs_err_http_name(want[i].code), want[i].http_name);
        CHECK(cs_err_http_status(want[i].code) == want[i].status);
        CHECK(cs_err_ws_close(want[i].code) == want[i].ws_close);
    }
    CHECK(sizeof(want) / sizeof(want[0]) == (size_t)(-CS_ERR_LAST - CS_ERR_BASE));
    /* The details the auth answers carried before the table. */
    CHECK_STR(cs_err_detail(CS_ERR_NO_TOKEN),
              "a bearer token is required (Authorization: Bearer T, or ?token=T)");
    CHECK_STR(cs_err_detail(CS_ERR_BAD_TOKEN), "the token is not valid");
    CHECK_STR(cs_err_detail(CS_ERR_FORBIDDEN), "the token does not grant this scope on this execution");
    CHECK_STR(cs_err_detail(CS_ERR_UNAVAILABLE), "the server is shutting down");
}

static void test_errno(void)
{
    CHECK(cs_err_canon(-ENOMEM) == CS_ERR_INTERNAL);
    CHECK(cs_err_canon(-EIO) == CS_ERR_INTERNAL);
    CHECK(cs_err_canon(-EMSGSIZE) == CS_ERR_TOO_LARGE);
    CHECK(cs_err_canon(-EINVAL) == CS_ERR_BAD_REQUEST);
    CHECK(cs_err_canon(-ENOENT) == CS_ERR_NOT_FOUND);
    CHECK(cs_err_canon(-EACCES) == CS_ERR_FORBIDDEN);
    CHECK(cs_err_canon(-EAGAIN) == CS_ERR_UNAVAILABLE);
    CHECK(cs_err_http_status(-ENOMEM) == 500);
    CHECK(cs_err_http_status(-EMSGSIZE) == 413);
    CHECK(cs_err_ws_close(-EMSGSIZE) == 1009);
    CHECK_STR(cs_err_name(-ENOMEM), "internal");
    /* Not an error value: a bug elsewhere, answered as internal rather than read out of bounds. */
    CHECK(cs_err_canon(999) == CS_ERR_INTERNAL);
    CHECK(cs_err_canon(-CS_ERR_BASE) == CS_ERR_INTERNAL);
    CHECK(cs_err_canon(CS_ERR_LAST - 1) == CS_ERR_INTERNAL);
    CHECK(cs_err_canon(-2147483647 - 1) == CS_ERR_INTERNAL);
    CHECK_STR(cs_err_name(999), "internal");
}

/* cs_err_json: the body an HTTP answer carries. */
static void test_json(void)
{
    size_t len;
    char *s = cs_err_json(CS_ERR_INVALID_FIELD, "human_feedback: expected a string", &len);
    CHECK_STR(s, "{\"error\":\"bad_request\",\"detail\":\"human_feedback: expected a string\"}");
    CHECK(s != NULL && len == strlen(s));
    free(s);
    s = cs_err_json(CS_ERR_NO_TOKEN, NULL, &len);
    CHECK_STR(s,
              "{\"error\":\"unauthorized\",\"detail\":\"a bearer token is required (Authorization: Bearer T, "
              "or ?token=T)\"}");
    free(s);
    s = cs_err_json(CS_ERR_BAD_REQUEST, NULL, &len);
    CHECK_STR(s, "{\"error\":\"bad_request\",\"detail\":\"\"}");
    free(s);
}

int main(void)
{
    RUN(test_every_code);
    RUN(test_distinct_names);
    RUN(test_wire);
    RUN(test_errno);
    RUN(test_json);
    CT_DONE();
}
