/*
 * test_jwt.c - signed tokens (auth.jwt_secret): strict base64url, the HS256
 * signature, the header (alg, typ, crit), the claims (exp, nbf, scope,
 * executions, sub) and their bounds, and what a signed token's principal may do
 * beside configured tokens, and for how long it stays valid.
 */
#include "../../src/auth.c"
#include "../../src/cfgschema.c"

#include "ctest.h"

#include <openssl/hmac.h>
#include <openssl/sha.h>

#define KEY "k3y-for-the-unit-tests-0123456789abcdef"
#define HS  "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"
#define NOW ((int64_t)1700000000)

/* A token: base64url(header) "." base64url(payload[0..plen)) "." its HS256 signature under key. */
static char *mint_n(const char *key, const char *header, const char *payload, size_t plen)
{
    size_t hl = strlen(header);
    char *t = malloc(4 * ((hl + 2) / 3) + 4 * ((plen + 2) / 3) + 64);
    unsigned char md[32];
    unsigned int mdlen = 0;
    size_t n;

    REQUIRE(t != NULL);
    n = cs_jwt_b64_encode((const unsigned char *)header, hl, t);
    t[n++] = '.';
    n += cs_jwt_b64_encode((const unsigned char *)payload, plen, t + n);
    REQUIRE(HMAC(EVP_sha256(), key, (int)strlen(key), (const unsigned char *)t, n, md, &mdlen) != NULL);
    t[n++] = '.';
    cs_jwt_b64_encode(md, mdlen, t + n);
    return t;
}

static char *mint_with(const char *key, const char *header, const char *payload)
{
    return mint_n(key, header, payload, strlen(payload));
}

static char *mint(const char *payload)
{
    return mint_with(KEY, HS, payload);
}

/* cs_jwt_verify under KEY at NOW; the claims are freed unless c is given. */
static int verify_at(const char *token, int64_t now, cs_jwt_claims_t *c)
{
    cs_jwt_claims_t mine;
    int rc = cs_jwt_verify((const unsigned char *)KEY, strlen(KEY), token, strlen(token), now,
                           c != NULL ? c : &mine);

    if (c == NULL && rc == 0)
        cs_jwt_claims_free(&mine);
    return rc;
}

/* Mints payload and verifies it at NOW. */
static int payload_rc(const char *payload)
{
    char *t = mint(payload);
    int rc = verify_at(t, NOW, NULL);

    free(t);
    return rc;
}

/* Mints header over a fixed payload and verifies it at NOW. */
static int header_rc(const char *header)
{
    char *t = mint_with(KEY, header, "{\"scope\":\"read\"}");
    int rc = verify_at(t, NOW, NULL);

    free(t);
    return rc;
}

static void test_base64url(void)
{
    unsigned char out[CS_AUTH_JWT_MAX_LEN];
    char enc[64];

    /* Canonical, unpadded base64url only. */
    CHECK(cs_jwt_b64_ok("YQ", 2));
    CHECK(cs_jwt_b64_ok("YWI", 3));
    CHECK(cs_jwt_b64_ok("YWJj", 4));
    CHECK(cs_jwt_b64_ok("-_-_", 4));
    CHECK(!cs_jwt_b64_ok("", 0));
    CHECK(!cs_jwt_b64_ok("Y", 1));     /* a lone character holds no byte */
    CHECK(!cs_jwt_b64_ok("YWJjZ", 5)); /* nor does a lone fifth one */
    CHECK(!cs_jwt_b64_ok("YQ==", 4));  /* padding */
    CHECK(!cs_jwt_b64_ok("YQ=", 3));
    CHECK(!cs_jwt_b64_ok("+/+/", 4)); /* standard base64's alphabet */
    CHECK(!cs_jwt_b64_ok("YW J", 4));
    CHECK(!cs_jwt_b64_ok("YW\nJ", 4));
    CHECK(!cs_jwt_b64_ok("YR", 2));  /* "a" with overhanging bits set: a second spelling */
    CHECK(!cs_jwt_b64_ok("YWJ", 3)); /* "ab" likewise */

    CHECK(cs_jwt_b64_decode("YQ", 2, out) == 1 && out[0] == 'a');
    CHECK(cs_jwt_b64_decode("YWI", 3, out) == 2 && memcmp(out, "ab", 2) == 0);
    CHECK(cs_jwt_b64_decode("YWJj", 4, out) == 3 && memcmp(out, "abc", 3) == 0);
    CHECK(cs_jwt_b64_decode("-_8", 3, out) == 2 && out[0] == 0xfb && out[1] == 0xff);

    /* Every length round-trips, and what the encoder writes is what the checker calls canonical. */
    for (size_t n = 1; n <= 40; n++) {
        unsigned char in[40];
        for (size_t i = 0; i < n; i++)
            in[i] = (unsigned char)(i * 37 + n * 11);
        size_t len = cs_jwt_b64_encode(in, n, enc);
        CHECK(len == (n * 4 + 2) / 3);
        CHECK(strchr(enc, '=') == NULL && strchr(enc, '+') == NULL && strchr(enc, '/') == NULL);
        CHECK(cs_jwt_b64_ok(enc, len));
        CHECK(cs_jwt_b64_decode(enc, len, out) == (int)n && memcmp(in, out, n) == 0);
    }
}

static void test_good_tokens(void)
{
    cs_jwt_claims_t c;
    char *t;

    t = mint("{\"sub\":\"alice\",\"scope\":\"read respond\",\"executions\":[\"run-1\",\"team-*\"],"
             "\"exp\":1700000060,\"nbf\":1699999990,\"iat\":1699999990,\"aud\":\"x\"}");
    REQUIRE(verify_at(t, NOW, &c) == 0);
    CHECK_STR(c.sub, "alice");
    CHECK(c.scopes == (CS_SCOPE_READ | CS_SCOPE_RESPOND));
    CHECK(c.has_executions);
    REQUIRE(c.n_executions == 2);
    CHECK_STR(c.executions[0], "run-1");
    CHECK_STR(c.executions[1], "team-*");
    cs_jwt_claims_free(&c);
    CHECK(c.executions == NULL && c.sub == NULL);

    /* The same token, a second before exp and exactly at nbf: still good. */
    CHECK(verify_at(t, 1700000059, NULL) == 0);
    CHECK(verify_at(t, 1699999990, NULL) == 0);
    free(t);

    /* scope as an array; executions as one string; unknown scope names ignored; no exp at all. */
    t = mint("{\"scope\":[\"publish\",\"openid\",\"admin\"],\"executions\":\"run-7\"}");
    REQUIRE(verify_at(t, NOW, &c) == 0);
    CHECK(c.sub == NULL);
    CHECK(c.scopes == (CS_SCOPE_PUBLISH | CS_SCOPE_ADMIN));
    CHECK(c.has_executions && c.n_executions == 1);
    CHECK_STR(c.executions[0], "run-7");
    cs_jwt_claims_free(&c);
    free(t);

    /* Neither scope nor executions: valid, with nothing granted and executions not given. */
    t = mint("{}");
    REQUIRE(verify_at(t, NOW, &c) == 0);
    CHECK(c.scopes == 0 && !c.has_executions && c.n_executions == 0);
    cs_jwt_claims_free(&c);
    free(t);

    /* An empty executions array is given, and empty. Blanks in a scope string are only separators. */
    t = mint("{\"executions\":[],\"scope\":\"  read   xread  read- \"}");
    REQUIRE(verify_at(t, NOW, &c) == 0);
    CHECK(c.has_executions && c.n_executions == 0 && c.executions == NULL);
    CHECK(c.scopes == CS_SCOPE_READ);
    cs_jwt_claims_free(&c);
    free(t);

    /* Scope names are case-sensitive, as in auth.tokens. */
    t = mint("{\"scope\":\"READ Respond\"}");
    REQUIRE(verify_at(t, NOW, &c) == 0);
    CHECK(c.scopes == 0);
    cs_jwt_claims_free(&c);
    free(t);

    /* A fractional exp; a header with other members, typ in any case, or none; JSON white space. */
    CHECK(payload_rc("{\"exp\":1700000000.5}") == 0);
    CHECK(header_rc("{\"alg\":\"HS256\",\"typ\":\"jwt\",\"kid\":\"k1\"}") == 0);
    CHECK(header_rc("{\"alg\":\"HS256\"}") == 0);
    CHECK(header_rc(" {\n \"typ\" : \"Jwt\" ,\t\"alg\":\"HS256\" } ") == 0);

    /* sub is a name only when usable as one: otherwise ignored, never refused. */
    REQUIRE((t = mint("{\"sub\":42}")) != NULL && verify_at(t, NOW, &c) == 0);
    CHECK(c.sub == NULL);
    cs_jwt_claims_free(&c);
    free(t);
    REQUIRE((t = mint("{\"sub\":\"a\\nb\"}")) != NULL && verify_at(t, NOW, &c) == 0);
    CHECK(c.sub == NULL);
    cs_jwt_claims_free(&c);
    free(t);
    REQUIRE((t = mint("{\"sub\":\"\"}")) != NULL && verify_at(t, NOW, &c) == 0);
    CHECK(c.sub == NULL);
    cs_jwt_claims_free(&c);
    free(t);
    REQUIRE((t = mint("{\"sub\":\"J\\u00fcrgen\"}")) != NULL && verify_at(t, NOW, &c) == 0);
    CHECK_STR(c.sub, "J\xc3\xbcrgen");
    cs_jwt_claims_free(&c);
    free(t);
}

static void test_signature(void)
{
    char *t = mint("{\"scope\":\"read\"}"), *u;
    size_t n = strlen(t);
    char *sig = strrchr(t, '.') + 1;

    CHECK(strlen(sig) == CS_JWT_SIG_LEN);
    CHECK(verify_at(t, NOW, NULL) == 0);

    /* Another key. */
    CHECK(cs_jwt_verify((const unsigned char *)"other", 5, t, n, NOW, &(cs_jwt_claims_t){0}) == -EACCES);
    u = mint_with("other", HS, "{\"scope\":\"read\"}");
    CHECK(verify_at(u, NOW, NULL) == -EACCES);
    free(u);

    /* A changed payload under the old signature. */
    u = mint("{\"scope\":\"admin\"}");
    memcpy(strrchr(u, '.') + 1, sig, CS_JWT_SIG_LEN);
    CHECK(verify_at(u, NOW, NULL) == -EACCES);
    free(u);

    /* A flipped signature character, a missing one, padding, a blank, the standard alphabet. */
    u = strdup(t);
    char *us = strrchr(u, '.') + 1;
    us[5] = us[5] == 'A' ? 'B' : 'A';
    CHECK(verify_at(u, NOW, NULL) == -EACCES);
    free(u);
    u = strndup(t, n - 1);
    CHECK(verify_at(u, NOW, NULL) != 0);
    free(u);
    u = malloc(n + 2);
    memcpy(u, t, n);
    memcpy(u + n, "=", 2);
    CHECK(verify_at(u, NOW, NULL) == -EINVAL);
    memcpy(u + n, " ", 2);
    CHECK(verify_at(u, NOW, NULL) == -EINVAL);
    free(u);
    u = strdup(t);
    for (char *p = u; *p; p++)
        *p = *p == '-' ? '+' : *p == '_' ? '/' : *p;
    CHECK(strcmp(u, t) == 0 || verify_at(u, NOW, NULL) == -EINVAL);
    free(u);

    /* The last character of the signature with its overhanging bits set: the same MAC, another
     * spelling, refused. */
    u = strdup(t);
    us = strrchr(u, '.') + 1;
    int v = cs_jwt_b64_value((unsigned char)us[CS_JWT_SIG_LEN - 1]);
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    us[CS_JWT_SIG_LEN - 1] = alphabet[v | 1];
    CHECK(verify_at(u, NOW, NULL) == -EINVAL);
    free(u);

    /* Shapes that are not a JWT at all. */
    CHECK(verify_at("", NOW, NULL) == -EINVAL);
    CHECK(verify_at("abc", NOW, NULL) == -EINVAL);
    CHECK(verify_at("ab.cd", NOW, NULL) == -EINVAL);
    CHECK(verify_at("ab..cd", NOW, NULL) == -EINVAL);
    CHECK(verify_at(".ab.cd", NOW, NULL) == -EINVAL);
    CHECK(verify_at("ab.cd.", NOW, NULL) == -EINVAL);
    CHECK(verify_at("ab.cd.ef.gh", NOW, NULL) == -EINVAL);
    u = malloc(n + 4);
    memcpy(u, t, n);
    memcpy(u + n, ".AA", 4);
    CHECK(verify_at(u, NOW, NULL) == -EINVAL);
    free(u);
    free(t);

    /* Over the length bound, however well signed. */
    char big[CS_AUTH_JWT_MAX_LEN];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    memcpy(big, "{\"sub\":\"", 8);
    memcpy(big + 3100 - 2, "\"}", 3);
    t = mint(big);
    CHECK(strlen(t) > CS_AUTH_JWT_MAX_LEN);
    CHECK(verify_at(t, NOW, NULL) == -E2BIG);
    free(t);
}

static void test_header(void)
{
    /* "alg" must be exactly HS256: none, other algorithms, other spellings and other types fail,
     * even when the token is correctly signed with our key. */
    CHECK(header_rc("{\"alg\":\"none\"}") == -ENOTSUP);
    CHECK(header_rc("{\"alg\":\"HS512\"}") == -ENOTSUP);
    CHECK(header_rc("{\"alg\":\"RS256\"}") == -ENOTSUP);
    CHECK(header_rc("{\"alg\":\"hs256\"}") == -ENOTSUP);
    CHECK(header_rc("{\"alg\":\"HS256 \"}") == -ENOTSUP);
    CHECK(header_rc("{\"alg\":[\"HS256\"]}") == -ENOTSUP);
    CHECK(header_rc("{\"alg\":null}") == -ENOTSUP);
    CHECK(header_rc("{\"typ\":\"JWT\"}") == -ENOTSUP);
    CHECK(header_rc("{}") == -ENOTSUP);
    CHECK(header_rc("{\"alg\":\"HS256\",\"typ\":\"JOSE\"}") == -ENOTSUP);
    CHECK(header_rc("{\"alg\":\"HS256\",\"typ\":\"at+jwt\"}") == -ENOTSUP);
    CHECK(header_rc("{\"alg\":\"HS256\",\"typ\":1}") == -ENOTSUP);
    CHECK(header_rc("{\"alg\":\"HS256\",\"crit\":[\"exp\"]}") == -ENOTSUP);
    /* Not an object, not JSON, a repeated member (which alg would count?). */
    CHECK(header_rc("[\"HS256\"]") == -EINVAL);
    CHECK(header_rc("\"HS256\"") == -EINVAL);
    CHECK(header_rc("{\"alg\":\"HS256\"") == -EINVAL);
    CHECK(header_rc("{\"alg\":\"none\",\"alg\":\"HS256\"}") == -EINVAL);
    CHECK(header_rc("{\"alg\":\"HS256\",\"x\":[[[[[[[[1]]]]]]]]}") == -E2BIG);

    /* The classic "alg":"none" token, with its empty signature: not even a JWT's shape here. */
    char *t = mint_with(KEY, "{\"alg\":\"none\"}", "{\"scope\":\"admin\"}");
    *(strrchr(t, '.') + 1) = '\0';
    CHECK(verify_at(t, NOW, NULL) == -EINVAL);
    free(t);
}

static void test_claims(void)
{
    char buf[8192];

    /* exp and nbf: numbers; expired at exp, not valid before nbf; no leeway. */
    CHECK(payload_rc("{\"exp\":1700000000}") == -EKEYEXPIRED);
    CHECK(payload_rc("{\"exp\":1699999999}") == -EKEYEXPIRED);
    CHECK(payload_rc("{\"exp\":1700000001}") == 0);
    CHECK(payload_rc("{\"exp\":0}") == -EKEYEXPIRED);
    CHECK(payload_rc("{\"exp\":-5}") == -EKEYEXPIRED);
    CHECK(payload_rc("{\"exp\":1e300}") == 0);
    CHECK(payload_rc("{\"exp\":\"1800000000\"}") == -EINVAL);
    CHECK(payload_rc("{\"exp\":null}") == -EINVAL);
    CHECK(payload_rc("{\"exp\":true}") == -EINVAL);
    CHECK(payload_rc("{\"exp\":99999999999999999999}") == -EINVAL); /* beyond what jansson reads */
    CHECK(payload_rc("{\"nbf\":1700000001}") == -EAGAIN);
    CHECK(payload_rc("{\"nbf\":1700000000}") == 0);
    CHECK(payload_rc("{\"nbf\":\"0\"}") == -EINVAL);
    CHECK(payload_rc("{\"nbf\":1700000001,\"exp\":1600000000}") == -EKEYEXPIRED);

    /* scope: a string or an array of strings. */
    CHECK(payload_rc("{\"scope\":7}") == -EINVAL);
    CHECK(payload_rc("{\"scope\":null}") == -EINVAL);
    CHECK(payload_rc("{\"scope\":{\"read\":true}}") == -EINVAL);
    CHECK(payload_rc("{\"scope\":[\"read\",1]}") == -EINVAL);

    /* executions: a string or an array of non-empty strings, bounded in count and length. */
    CHECK(payload_rc("{\"executions\":7}") == -EINVAL);
    CHECK(payload_rc("{\"executions\":null}") == -EINVAL);
    CHECK(payload_rc("{\"executions\":{}}") == -EINVAL);
    CHECK(payload_rc("{\"executions\":[\"a\",2]}") == -EINVAL);
    CHECK(payload_rc("{\"executions\":[\"a\",\"\"]}") == -EINVAL);
    CHECK(payload_rc("{\"executions\":\"\"}") == -EINVAL);
    for (int n = 63; n <= 65; n++) {
        size_t len = (size_t)snprintf(buf, sizeof(buf), "{\"executions\":[");
        for (int i = 0; i < n; i++)
            len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s\"r%d\"", i ? "," : "", i);
        snprintf(buf + len, sizeof(buf) - len, "]}");
        CHECK(payload_rc(buf) == (n <= CS_AUTH_JWT_MAX_EXECUTIONS ? 0 : -E2BIG));
    }
    for (int n = 255; n <= 257; n++) {
        int len = snprintf(buf, sizeof(buf), "{\"executions\":\"");
        memset(buf + len, 'g', (size_t)n);
        snprintf(buf + len + n, sizeof(buf) - (size_t)(len + n), "\"}");
        CHECK(payload_rc(buf) == (n <= CS_AUTH_JWT_MAX_GLOB ? 0 : -E2BIG));
    }

    /* Nesting: the payload object itself is level 1. */
    CHECK(payload_rc("{\"x\":[[[[[[[1]]]]]]]}") == 0);
    CHECK(payload_rc("{\"x\":[[[[[[[[1]]]]]]]]}") == -E2BIG);
    CHECK(payload_rc("{\"x\":{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":{}}}}}}}}") == 0);
    CHECK(payload_rc("{\"x\":{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":{\"g\":1}}}}}}}}") == 0);
    CHECK(payload_rc("{\"x\":{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":{\"g\":{}}}}}}}}}") == -E2BIG);

    /* Not an object, not JSON, repeated members, a NUL byte. */
    CHECK(payload_rc("[]") == -EINVAL);
    CHECK(payload_rc("1") == -EINVAL);
    CHECK(payload_rc("{\"scope\":\"read\"") == -EINVAL);
    CHECK(payload_rc("{\"scope\":\"read\",\"scope\":\"admin\"}") == -EINVAL);
    CHECK(payload_rc("{\"exp\":1,\"exp\":1800000000}") == -EINVAL);
    CHECK(payload_rc("") == -EINVAL);
    char *t = mint_n(KEY, HS, "{\"exp\":1800000000\0}", 19);
    CHECK(verify_at(t, NOW, NULL) == -EINVAL);
    free(t);
    t = mint_n(KEY, HS, "{\"scope\":\"read\"}\0", 17);
    CHECK(verify_at(t, NOW, NULL) == -EINVAL);
    free(t);
    CHECK(payload_rc("{\"scope\":\"re\\u0000ad\"}") == -EINVAL);
}

/* A table with a static token "tok-s" (read on run-*) and KEY as auth.jwt_secret. */
static cs_auth_t *jwt_table(const char *secret)
{
    static const char *const runs[] = {"run-*"};
    cs_config_t cfg = {0};
    cs_token_conf_t t = {0};
    cs_auth_t *a = NULL;
    char err[256];

    t.name = "static";
    SHA256((const unsigned char *)"tok-s", 5, t.sha256);
    t.scopes = CS_SCOPE_READ;
    t.executions = (char **)runs;
    t.n_executions = 1;
    cfg.tokens = &t;
    cfg.n_tokens = 1;
    cfg.jwt_secret = (char *)secret;
    REQUIRE(cs_auth_new(&a, &cfg, 0, err, sizeof(err)) == 0);
    return a;
}

/* A payload with "exp" an hour from now (the table checks against the real clock). */
static char *mint_live(const char *fmt_members)
{
    char p[2048];

    snprintf(p, sizeof(p), "{\"exp\":%lld%s%s}", (long long)time(NULL) + 3600, fmt_members[0] ? "," : "",
             fmt_members);
    return mint(p);
}

static void test_auth_with_jwt(void)
{
    cs_auth_t *a = jwt_table(KEY);
    cs_principal_t who = {0};
    char *t;

    CHECK(!cs_auth_is_open(a));

    /* One execution, read and respond: the browser token SPEC §5 speaks of. */
    t = mint_live("\"sub\":\"alice\",\"scope\":\"read respond\",\"executions\":[\"run-1\"]");
    CHECK(cs_auth_check(a, t, CS_SCOPE_READ, "run-1", &who) == CS_AUTH_OK);
    CHECK_STR(who.name, "jwt:alice");
    CHECK(who.scopes == (CS_SCOPE_READ | CS_SCOPE_RESPOND));
    REQUIRE(who.n_executions == 1);
    CHECK_STR(who.executions[0], "run-1");
    CHECK(cs_auth_check(a, t, CS_SCOPE_RESPOND, "run-1", NULL) == CS_AUTH_OK);
    CHECK(cs_auth_check(a, t, CS_SCOPE_READ, "run-2", NULL) == CS_AUTH_FORBIDDEN);
    CHECK(cs_auth_check(a, t, CS_SCOPE_READ, NULL, NULL) == CS_AUTH_FORBIDDEN);
    CHECK(cs_auth_check(a, t, CS_SCOPE_PUBLISH, "run-1", NULL) == CS_AUTH_FORBIDDEN);
    CHECK(cs_auth_check(a, t, CS_SCOPE_ADMIN, "run-1", NULL) == CS_AUTH_FORBIDDEN);
    free(t);

    /* Read only: answering is forbidden, not unauthorised. */
    t = mint_live("\"scope\":\"read\",\"executions\":\"run-1\"");
    CHECK(cs_auth_check(a, t, CS_SCOPE_RESPOND, "run-1", NULL) == CS_AUTH_FORBIDDEN);
    CHECK(cs_auth_check(a, t, CS_SCOPE_READ, "run-1", &who) == CS_AUTH_OK);
    CHECK_STR(who.name, "jwt");
    free(t);

    /* Globs, as for configured tokens. */
    t = mint_live("\"scope\":[\"read\"],\"executions\":[\"team-?\",\"job-*\"]");
    CHECK(cs_auth_check(a, t, CS_SCOPE_READ, "team-a", NULL) == CS_AUTH_OK);
    CHECK(cs_auth_check(a, t, CS_SCOPE_READ, "job-42", NULL) == CS_AUTH_OK);
    CHECK(cs_auth_check(a, t, CS_SCOPE_READ, "team-ab", NULL) == CS_AUTH_FORBIDDEN);
    CHECK(cs_auth_check(a, t, CS_SCOPE_READ, NULL, NULL) == CS_AUTH_FORBIDDEN);
    free(t);

    /* No executions claim: every execution, as a configured token without "executions"; so the
     * all-executions stream too. admin widens to every scope. */
    t = mint_live("\"scope\":\"admin\"");
    CHECK(cs_auth_check(a, t, CS_SCOPE_ALL, NULL, &who) == CS_AUTH_OK);
    CHECK(who.scopes == CS_SCOPE_ALL);
    REQUIRE(who.n_executions == 1);
    CHECK_STR(who.executions[0], "*");
    CHECK(cs_auth_principal_allows(&who, "anything"));
    free(t);

    /* An empty executions array: no execution at all. */
    t = mint_live("\"scope\":\"read\",\"executions\":[]");
    CHECK(cs_auth_check(a, t, 0, "run-1", NULL) == CS_AUTH_FORBIDDEN);
    CHECK(cs_auth_identify(a, t, &who) == CS_AUTH_OK);
    CHECK(who.n_executions == 0);
    free(t);

    /* No scope: the token is good (need_scope 0 passes) but every scope is forbidden. */
    t = mint_live("\"scope\":\"openid\"");
    CHECK(cs_auth_check(a, t, 0, "run-1", NULL) == CS_AUTH_OK);
    CHECK(cs_auth_check(a, t, CS_SCOPE_READ, "run-1", NULL) == CS_AUTH_FORBIDDEN);
    free(t);

    /* Every bad signed token is invalid (401), never forbidden: expired, not yet valid, wrong key,
     * alg none, a bound passed. */
    char p[256];
    snprintf(p, sizeof(p), "{\"scope\":\"admin\",\"exp\":%lld}", (long long)time(NULL) - 1);
    t = mint(p);
    CHECK(cs_auth_check(a, t, CS_SCOPE_READ, "run-1", NULL) == CS_AUTH_INVALID);
    free(t);
    snprintf(p, sizeof(p), "{\"scope\":\"admin\",\"exp\":%lld}", (long long)time(NULL));
    t = mint(p);
    CHECK(cs_auth_check(a, t, 0, "run-1", NULL) == CS_AUTH_INVALID);
    free(t);
    snprintf(p, sizeof(p), "{\"scope\":\"admin\",\"nbf\":%lld}", (long long)time(NULL) + 60);
    t = mint(p);
    CHECK(cs_auth_check(a, t, 0, "run-1", NULL) == CS_AUTH_INVALID);
    free(t);
    t = mint_with("not-the-key", HS, "{\"scope\":\"admin\"}");
    CHECK(cs_auth_check(a, t, 0, "run-1", NULL) == CS_AUTH_INVALID);
    free(t);
    t = mint_with(KEY, "{\"alg\":\"none\"}", "{\"scope\":\"admin\"}");
    CHECK(cs_auth_check(a, t, 0, "run-1", NULL) == CS_AUTH_INVALID);
    *(strrchr(t, '.') + 1) = '\0';
    CHECK(cs_auth_check(a, t, 0, "run-1", NULL) == CS_AUTH_INVALID);
    free(t);
    CHECK(cs_auth_check(a, "\x7f", 0, "run-1", NULL) == CS_AUTH_INVALID); /* too long for the buffer */
    CHECK(cs_auth_check(a, "a.b.c", 0, "run-1", NULL) == CS_AUTH_INVALID);
    CHECK(cs_auth_check(a, NULL, 0, "run-1", NULL) == CS_AUTH_MISSING);
    CHECK(cs_auth_check(a, "", 0, "run-1", NULL) == CS_AUTH_MISSING);

    /* Configured tokens keep working beside signed ones. */
    CHECK(cs_auth_check(a, "tok-s", CS_SCOPE_READ, "run-9", &who) == CS_AUTH_OK);
    CHECK_STR(who.name, "static");
    CHECK(cs_auth_check(a, "tok-s", CS_SCOPE_READ, "job-9", NULL) == CS_AUTH_FORBIDDEN);
    cs_auth_free(a);

    /* Without a jwt_secret a signed token is just an unknown token. */
    a = jwt_table(NULL);
    t = mint_live("\"scope\":\"read\"");
    CHECK(cs_auth_check(a, t, CS_SCOPE_READ, "run-1", NULL) == CS_AUTH_INVALID);
    free(t);
    cs_auth_free(a);

    /* A jwt_secret alone closes the door, even on loopback. */
    cs_config_t cfg = {0};
    char err[256];
    cfg.jwt_secret = KEY;
    REQUIRE(cs_auth_new(&a, &cfg, 1, err, sizeof(err)) == 0);
    CHECK(!cs_auth_is_open(a));
    CHECK(cs_auth_check(a, "anything", 0, "run-1", NULL) == CS_AUTH_INVALID);
    t = mint_live("\"scope\":\"read\"");
    CHECK(cs_auth_check(a, t, CS_SCOPE_READ, "run-1", NULL) == CS_AUTH_OK);
    free(t);
    cs_auth_free(a);
}

/* A configured token shaped like a JWT is still looked up as itself, before any signature check. */
static void test_static_token_shaped_like_jwt(void)
{
    static const char *const all[] = {"*"};
    static const char tok[] = "YWJj.ZGVm.Z2hp";
    cs_config_t cfg = {0};
    cs_token_conf_t t = {0};
    cs_auth_t *a = NULL;
    cs_principal_t who;
    char err[256];

    t.name = "dotted";
    SHA256((const unsigned char *)tok, strlen(tok), t.sha256);
    t.scopes = CS_SCOPE_READ;
    t.executions = (char **)all;
    t.n_executions = 1;
    cfg.tokens = &t;
    cfg.n_tokens = 1;
    cfg.jwt_secret = KEY;
    REQUIRE(cs_auth_new(&a, &cfg, 0, err, sizeof(err)) == 0);
    CHECK(cs_auth_check(a, tok, CS_SCOPE_READ, "x", &who) == CS_AUTH_OK);
    CHECK_STR(who.name, "dotted");
    CHECK(cs_auth_check(a, "YWJj.ZGVm.Z2hq", CS_SCOPE_READ, "x", NULL) == CS_AUTH_INVALID);
    cs_auth_free(a);
}

/* A signed token's principal lives until the next identify on the table; a copy lives on its own. */
static void test_principal_lifetime(void)
{
    static const char *const runs[] = {"run-*"};
    cs_auth_t *a = jwt_table(KEY);
    cs_principal_t who, keep, keep2;
    char *t1 = mint_live("\"sub\":\"alice\",\"scope\":\"read\",\"executions\":[\"run-1\",\"run-2\"]");
    char *t2 = mint_live("\"sub\":\"bob\",\"scope\":\"respond\",\"executions\":[\"run-3\"]");

    REQUIRE(cs_auth_identify(a, t1, &who) == CS_AUTH_OK);
    CHECK(who._own == NULL);
    REQUIRE(cs_auth_principal_dup(&keep, &who) == 0);
    CHECK(keep._own != NULL);
    CHECK(keep.name != who.name && keep.executions != who.executions);

    /* Many more tokens through the table: its one slot is reused, so memory stays bounded (ASan's
     * leak check would see a slot that is not freed), and the copy is untouched. */
    for (int i = 0; i < 100; i++) {
        CHECK(cs_auth_check(a, i % 2 ? t1 : t2, 0, NULL, NULL) == CS_AUTH_FORBIDDEN);
        CHECK(cs_auth_check(a, "tok-s", CS_SCOPE_READ, "run-1", NULL) == CS_AUTH_OK);
        CHECK(cs_auth_check(a, "nope", CS_SCOPE_READ, "run-1", NULL) == CS_AUTH_INVALID);
    }
    REQUIRE(cs_auth_identify(a, t2, &who) == CS_AUTH_OK);
    CHECK_STR(who.name, "jwt:bob");
    CHECK_STR(keep.name, "jwt:alice");
    CHECK(keep.scopes == CS_SCOPE_READ);
    REQUIRE(keep.n_executions == 2);
    CHECK_STR(keep.executions[0], "run-1");
    CHECK_STR(keep.executions[1], "run-2");
    CHECK(cs_auth_principal_allows(&keep, "run-2"));
    CHECK(!cs_auth_principal_allows(&keep, "run-3"));
    CHECK(cs_auth_authorize(&keep, CS_SCOPE_READ, "run-1") == CS_AUTH_OK);

    /* The copy of a configured token's principal outlives the table (a reload frees it). */
    REQUIRE(cs_auth_identify(a, "tok-s", &who) == CS_AUTH_OK);
    REQUIRE(cs_auth_principal_dup(&keep2, &who) == 0);
    cs_auth_free(a);
    CHECK_STR(keep.name, "jwt:alice");
    CHECK_STR(keep2.name, "static");
    REQUIRE(keep2.n_executions == 1);
    CHECK_STR(keep2.executions[0], runs[0]);

    /* A copy of a copy, in place; release zeroes; releasing what was not copied does nothing. */
    REQUIRE(cs_auth_principal_dup(&keep2, &keep2) == 0);
    CHECK_STR(keep2.name, "static");
    cs_auth_principal_release(&keep);
    CHECK(keep.name == NULL && keep._own == NULL);
    cs_auth_principal_release(&keep);
    cs_auth_principal_release(NULL);
    cs_principal_t plain = {.name = "x", .scopes = 1};
    cs_auth_principal_release(&plain);
    CHECK_STR(plain.name, "x");
    cs_auth_principal_release(&keep2); /* ASan's leak check: the in-place copy freed the first block */

    /* A principal with no executions copies too. */
    cs_principal_t none = {.name = "jwt", .scopes = 0}, none2;
    REQUIRE(cs_auth_principal_dup(&none2, &none) == 0);
    CHECK_STR(none2.name, "jwt");
    CHECK(none2.n_executions == 0 && !cs_auth_principal_allows(&none2, "x"));
    cs_auth_principal_release(&none2);
    free(t1);
    free(t2);
}

int main(void)
{
    RUN(test_base64url);
    RUN(test_good_tokens);
    RUN(test_signature);
    RUN(test_header);
    RUN(test_claims);
    RUN(test_auth_with_jwt);
    RUN(test_static_token_shaped_like_jwt);
    RUN(test_principal_lifetime);
    CT_DONE();
}
