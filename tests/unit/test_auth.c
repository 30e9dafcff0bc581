/*
 * test_auth.c - the token table: open mode, refusal off loopback, missing vs
 * invalid vs forbidden, scopes, execution globs, the api_key, bearer parsing,
 * and a table that outlives the configuration it was built from.
 */
#include "../../src/auth.c"
#include "../../src/cfgschema.c"

#include "ctest.h"

#include <openssl/sha.h>

/* Fills t with a heap-allocated token entry, as the configuration loader would. */
static void tok(cs_token_conf_t *t, const char *name, const char *secret, unsigned scopes,
                const char *const *globs, size_t n_globs)
{
    t->name = strdup(name);
    SHA256((const unsigned char *)secret, strlen(secret), t->sha256);
    t->scopes = scopes;
    t->n_executions = n_globs;
    t->executions = n_globs ? calloc(n_globs, sizeof(char *)) : NULL;
    for (size_t i = 0; i < n_globs; i++)
        t->executions[i] = strdup(globs[i]);
}

/* Frees what tok() and the test's strdup()s allocated, scribbling first so a dangling pointer shows. */
static void cfg_free(cs_config_t *cfg)
{
    for (size_t i = 0; i < cfg->n_tokens; i++) {
        cs_token_conf_t *t = &cfg->tokens[i];
        memset(t->name, 'X', strlen(t->name));
        free(t->name);
        for (size_t k = 0; k < t->n_executions; k++) {
            memset(t->executions[k], 'X', strlen(t->executions[k]));
            free(t->executions[k]);
        }
        free(t->executions);
        memset(t, 0xa5, sizeof(*t));
    }
    free(cfg->tokens);
    free(cfg->api_key);
    free(cfg->jwt_secret);
    memset(cfg, 0, sizeof(*cfg));
}

static const char *const ALL[] = {"*"};

static void test_open_on_loopback(void)
{
    cs_config_t cfg = {0};
    cs_auth_t *a = NULL;
    cs_principal_t who = {0};
    char err[256];

    REQUIRE(cs_auth_new(&a, &cfg, 1, err, sizeof(err)) == 0);
    CHECK(cs_auth_is_open(a));
    CHECK(cs_auth_check(a, NULL, CS_SCOPE_ADMIN, NULL, &who) == CS_AUTH_OK);
    CHECK_STR(who.name, "anonymous");
    CHECK(who.scopes == CS_SCOPE_ALL);
    REQUIRE(who.n_executions == 1);
    CHECK_STR(who.executions[0], "*");
    CHECK(cs_auth_principal_allows(&who, "anything"));
    CHECK(cs_auth_principal_allows(&who, NULL));
    CHECK(cs_auth_check(a, "", CS_SCOPE_READ, "x", NULL) == CS_AUTH_OK);
    CHECK(cs_auth_check(a, "garbage", CS_SCOPE_PUBLISH, "x", NULL) == CS_AUTH_OK);
    cs_auth_free(a);

    /* An empty api_key is no key at all. */
    cfg.api_key = strdup("");
    REQUIRE(cs_auth_new(&a, &cfg, 1, err, sizeof(err)) == 0);
    CHECK(cs_auth_is_open(a));
    cs_auth_free(a);
    cfg_free(&cfg);
}

static void test_refused_off_loopback(void)
{
    cs_config_t cfg = {0};
    cs_auth_t *a = (cs_auth_t *)&cfg; /* must be reset to NULL on failure */
    char err[256];

    CHECK(cs_auth_new(&a, &cfg, 0, err, sizeof(err)) == -EPERM);
    CHECK(a == NULL);
    CHECK(strstr(err, "no tokens configured") != NULL);
    CHECK(strstr(err, "non-loopback") != NULL);
    CHECK(strstr(err, "127.0.0.1") != NULL);

    /* An api_key closes the door and makes a non-loopback listener acceptable. */
    cfg.api_key = strdup("k3y");
    REQUIRE(cs_auth_new(&a, &cfg, 0, err, sizeof(err)) == 0);
    CHECK(!cs_auth_is_open(a));
    cs_auth_free(a);
    cfg_free(&cfg);

    /* So does one static token. */
    cfg.tokens = calloc(1, sizeof(*cfg.tokens));
    cfg.n_tokens = 1;
    tok(&cfg.tokens[0], "dash", "s3cret", CS_SCOPE_READ, ALL, 1);
    REQUIRE(cs_auth_new(&a, &cfg, 0, err, sizeof(err)) == 0);
    CHECK(!cs_auth_is_open(a));
    cs_auth_free(a);
    cfg_free(&cfg);

    /* A jwt_secret alone is closed mode too: a token that is not a valid signed one is invalid. */
    cfg.jwt_secret = strdup("jwt");
    REQUIRE(cs_auth_new(&a, &cfg, 0, err, sizeof(err)) == 0);
    CHECK(!cs_auth_is_open(a));
    CHECK(cs_auth_check(a, NULL, 0, "x", NULL) == CS_AUTH_MISSING);
    CHECK(cs_auth_check(a, "jwt", 0, "x", NULL) == CS_AUTH_INVALID);
    cs_auth_free(a);
    REQUIRE(cs_auth_new(&a, &cfg, 1, err, sizeof(err)) == 0);
    CHECK(!cs_auth_is_open(a));
    cs_auth_free(a);
    cfg_free(&cfg);
}

static void test_bad_config(void)
{
    cs_config_t cfg = {0};
    cs_auth_t *a = NULL;
    char err[256];

    /* A nameless token fails cleanly half-way through (the first entry is freed by the fail path). */
    cfg.tokens = calloc(2, sizeof(*cfg.tokens));
    cfg.n_tokens = 2;
    tok(&cfg.tokens[0], "ok", "a", CS_SCOPE_READ, ALL, 1);
    tok(&cfg.tokens[1], "tmp", "b", CS_SCOPE_READ, ALL, 1);
    char *name = cfg.tokens[1].name;
    cfg.tokens[1].name = NULL;
    CHECK(cs_auth_new(&a, &cfg, 0, err, sizeof(err)) == -EINVAL);
    CHECK(a == NULL);
    CHECK(strstr(err, "auth.tokens[1]") != NULL);
    cfg.tokens[1].name = name;
    cfg_free(&cfg);
}

static void test_missing_invalid_forbidden(void)
{
    static const char *const runs[] = {"run-*", "team.?x", "exact-42"};
    cs_config_t cfg = {0};
    cs_auth_t *a = NULL;
    cs_principal_t who = {0};
    char err[256];

    cfg.tokens = calloc(1, sizeof(*cfg.tokens));
    cfg.n_tokens = 1;
    tok(&cfg.tokens[0], "reader", "tok-r", CS_SCOPE_READ, runs, 3);
    REQUIRE(cs_auth_new(&a, &cfg, 0, err, sizeof(err)) == 0);

    CHECK(cs_auth_check(a, NULL, CS_SCOPE_READ, "run-1", NULL) == CS_AUTH_MISSING);
    CHECK(cs_auth_check(a, "", CS_SCOPE_READ, "run-1", NULL) == CS_AUTH_MISSING);
    CHECK(cs_auth_check(a, "tok-R", CS_SCOPE_READ, "run-1", NULL) == CS_AUTH_INVALID);
    CHECK(cs_auth_check(a, "tok-r ", CS_SCOPE_READ, "run-1", NULL) == CS_AUTH_INVALID);
    CHECK(cs_auth_check(a, "tok-", CS_SCOPE_READ, "run-1", NULL) == CS_AUTH_INVALID);

    CHECK(cs_auth_check(a, "tok-r", CS_SCOPE_READ, "run-1", &who) == CS_AUTH_OK);
    CHECK_STR(who.name, "reader");
    CHECK(who.scopes == CS_SCOPE_READ);
    CHECK(who.n_executions == 3);
    CHECK(cs_auth_check(a, "tok-r", 0, "run-1", NULL) == CS_AUTH_OK);

    /* Wrong scope. */
    CHECK(cs_auth_check(a, "tok-r", CS_SCOPE_RESPOND, "run-1", NULL) == CS_AUTH_FORBIDDEN);
    CHECK(cs_auth_check(a, "tok-r", CS_SCOPE_READ | CS_SCOPE_PUBLISH, "run-1", NULL) == CS_AUTH_FORBIDDEN);
    CHECK(cs_auth_check(a, "tok-r", CS_SCOPE_ADMIN, "run-1", NULL) == CS_AUTH_FORBIDDEN);

    /* Globs: "run-*", "team.?x" (the dot is literal, ? one character), an exact id. */
    CHECK(cs_auth_check(a, "tok-r", CS_SCOPE_READ, "run-", NULL) == CS_AUTH_OK);
    CHECK(cs_auth_check(a, "tok-r", CS_SCOPE_READ, "run-a/b", NULL) == CS_AUTH_OK);
    CHECK(cs_auth_check(a, "tok-r", CS_SCOPE_READ, "Run-1", NULL) == CS_AUTH_FORBIDDEN);
    CHECK(cs_auth_check(a, "tok-r", CS_SCOPE_READ, "xrun-1", NULL) == CS_AUTH_FORBIDDEN);
    CHECK(cs_auth_check(a, "tok-r", CS_SCOPE_READ, "team.ax", NULL) == CS_AUTH_OK);
    CHECK(cs_auth_check(a, "tok-r", CS_SCOPE_READ, "team.x", NULL) == CS_AUTH_FORBIDDEN);
    CHECK(cs_auth_check(a, "tok-r", CS_SCOPE_READ, "team.abx", NULL) == CS_AUTH_FORBIDDEN);
    CHECK(cs_auth_check(a, "tok-r", CS_SCOPE_READ, "teamxax", NULL) == CS_AUTH_FORBIDDEN);
    CHECK(cs_auth_check(a, "tok-r", CS_SCOPE_READ, "exact-42", NULL) == CS_AUTH_OK);
    CHECK(cs_auth_check(a, "tok-r", CS_SCOPE_READ, "exact-421", NULL) == CS_AUTH_FORBIDDEN);
    CHECK(cs_auth_check(a, "tok-r", CS_SCOPE_READ, "", NULL) == CS_AUTH_FORBIDDEN);

    /* Every execution at once needs the exact glob "*": "run-*" is not enough. */
    CHECK(cs_auth_check(a, "tok-r", CS_SCOPE_READ, NULL, NULL) == CS_AUTH_FORBIDDEN);

    /* An invalid token is not told apart by scope or execution. */
    CHECK(cs_auth_check(a, "nope", CS_SCOPE_ADMIN, NULL, NULL) == CS_AUTH_INVALID);

    /* The principal answers the same questions for the all-executions stream. */
    CHECK(cs_auth_principal_allows(&who, "run-9"));
    CHECK(cs_auth_principal_allows(&who, "exact-42"));
    CHECK(!cs_auth_principal_allows(&who, "other"));
    CHECK(!cs_auth_principal_allows(&who, NULL));
    CHECK(!cs_auth_principal_allows(NULL, "run-9"));
    cs_auth_free(a);
    cfg_free(&cfg);
}

static void test_admin_implies_all(void)
{
    static const char *const one[] = {"run-1"};
    cs_config_t cfg = {0};
    cs_auth_t *a = NULL;
    cs_principal_t who = {0};
    char err[256];

    cfg.tokens = calloc(2, sizeof(*cfg.tokens));
    cfg.n_tokens = 2;
    tok(&cfg.tokens[0], "root", "adm", CS_SCOPE_ADMIN, ALL, 1);
    tok(&cfg.tokens[1], "narrow-admin", "adm1", CS_SCOPE_ADMIN, one, 1);
    REQUIRE(cs_auth_new(&a, &cfg, 0, err, sizeof(err)) == 0);

    CHECK(cs_auth_check(a, "adm", CS_SCOPE_READ, "x", &who) == CS_AUTH_OK);
    CHECK(who.scopes == CS_SCOPE_ALL);
    CHECK(cs_auth_check(a, "adm", CS_SCOPE_RESPOND, "x", NULL) == CS_AUTH_OK);
    CHECK(cs_auth_check(a, "adm", CS_SCOPE_PUBLISH, "x", NULL) == CS_AUTH_OK);
    CHECK(cs_auth_check(a, "adm", CS_SCOPE_ALL, NULL, NULL) == CS_AUTH_OK);

    /* Admin widens scopes, not executions: the globs still bind it. */
    CHECK(cs_auth_check(a, "adm1", CS_SCOPE_PUBLISH, "run-1", NULL) == CS_AUTH_OK);
    CHECK(cs_auth_check(a, "adm1", CS_SCOPE_READ, "run-2", NULL) == CS_AUTH_FORBIDDEN);
    CHECK(cs_auth_check(a, "adm1", CS_SCOPE_ADMIN, NULL, NULL) == CS_AUTH_FORBIDDEN);
    cs_auth_free(a);
    cfg_free(&cfg);
}

static void test_api_key(void)
{
    cs_config_t cfg = {0};
    cs_auth_t *a = NULL;
    cs_principal_t who = {0};
    char err[256];

    cfg.api_key = strdup("seed-key");
    REQUIRE(cs_auth_new(&a, &cfg, 0, err, sizeof(err)) == 0);
    CHECK(cs_auth_check(a, "seed-key", CS_SCOPE_READ, "any", &who) == CS_AUTH_OK);
    CHECK_STR(who.name, "api_key");
    CHECK(who.scopes ==
          (CS_SCOPE_READ | CS_SCOPE_RESPOND | CS_SCOPE_KICKOFF)); /* SPEC §9: it includes kickoff */
    CHECK(cs_auth_check(a, "seed-key", CS_SCOPE_RESPOND, "any", NULL) == CS_AUTH_OK);
    CHECK(cs_auth_check(a, "seed-key", CS_SCOPE_KICKOFF, NULL, NULL) == CS_AUTH_OK);
    CHECK(cs_auth_check(a, "seed-key", CS_SCOPE_READ | CS_SCOPE_RESPOND, NULL, NULL) == CS_AUTH_OK);
    CHECK(cs_auth_check(a, "seed-key", CS_SCOPE_PUBLISH, "any", NULL) == CS_AUTH_FORBIDDEN);
    CHECK(cs_auth_check(a, "seed-key", CS_SCOPE_ADMIN, NULL, NULL) == CS_AUTH_FORBIDDEN);
    CHECK(cs_auth_check(a, "seed-ke", CS_SCOPE_READ, "any", NULL) == CS_AUTH_INVALID);

    /* Only the key's SHA-256 is kept, as for a configured token. */
    unsigned char md[32];
    SHA256((const unsigned char *)"seed-key", 8, md);
    REQUIRE(a->n_entries == 1);
    CHECK(memcmp(a->entries[0].sha256, md, 32) == 0);
    cs_auth_free(a);
    cfg_free(&cfg);
}

static void test_many_tokens_and_freed_cfg(void)
{
    static const char *const a_runs[] = {"a-*"};
    static const char *const b_runs[] = {"b-*", "shared"};
    cs_config_t cfg = {0};
    cs_auth_t *a = NULL;
    cs_principal_t who = {0};
    char err[256];

    cfg.tokens = calloc(3, sizeof(*cfg.tokens));
    cfg.n_tokens = 3;
    tok(&cfg.tokens[0], "alpha", "ta", CS_SCOPE_READ, a_runs, 1);
    tok(&cfg.tokens[1], "beta", "tb", CS_SCOPE_READ | CS_SCOPE_RESPOND, b_runs, 2);
    tok(&cfg.tokens[2], "pub", "tp", CS_SCOPE_PUBLISH, ALL, 1);
    cfg.api_key = strdup("ka");
    REQUIRE(cs_auth_new(&a, &cfg, 0, err, sizeof(err)) == 0);

    /* The configuration goes away (a SIGHUP reload frees the old one); the table must not care. */
    cfg_free(&cfg);

    CHECK(cs_auth_check(a, "ta", CS_SCOPE_READ, "a-1", &who) == CS_AUTH_OK);
    CHECK_STR(who.name, "alpha");
    CHECK(cs_auth_check(a, "ta", CS_SCOPE_READ, "b-1", NULL) == CS_AUTH_FORBIDDEN);

    CHECK(cs_auth_check(a, "tb", CS_SCOPE_RESPOND, "b-1", &who) == CS_AUTH_OK);
    CHECK_STR(who.name, "beta");
    REQUIRE(who.n_executions == 2);
    CHECK_STR(who.executions[0], "b-*");
    CHECK_STR(who.executions[1], "shared");
    CHECK(cs_auth_check(a, "tb", CS_SCOPE_READ, "shared", NULL) == CS_AUTH_OK);
    CHECK(cs_auth_check(a, "tb", CS_SCOPE_READ, "a-1", NULL) == CS_AUTH_FORBIDDEN);

    CHECK(cs_auth_check(a, "tp", CS_SCOPE_PUBLISH, "z", &who) == CS_AUTH_OK);
    CHECK_STR(who.name, "pub");
    CHECK(cs_auth_check(a, "tp", CS_SCOPE_READ, "z", NULL) == CS_AUTH_FORBIDDEN);

    CHECK(cs_auth_check(a, "ka", CS_SCOPE_READ, NULL, &who) == CS_AUTH_OK);
    CHECK_STR(who.name, "api_key");
    CHECK(cs_auth_check(a, "tc", CS_SCOPE_READ, "a-1", NULL) == CS_AUTH_INVALID);
    cs_auth_free(a);
}

static void test_bearer(void)
{
    size_t n = 99;
    const char *t;

    t = cs_auth_bearer("Bearer abc", &n);
    REQUIRE(t != NULL);
    CHECK(n == 3 && memcmp(t, "abc", 3) == 0);
    t = cs_auth_bearer("bearer abc", &n);
    CHECK(t != NULL && n == 3 && memcmp(t, "abc", 3) == 0);
    t = cs_auth_bearer("BEARER abc", &n);
    CHECK(t != NULL && n == 3);
    t = cs_auth_bearer("bEaReR \t  a.b-c_d~e+f/g==  \t", &n);
    CHECK(t != NULL && n == 15 && memcmp(t, "a.b-c_d~e+f/g==", 15) == 0);
    t = cs_auth_bearer("Bearer\tx", &n);
    CHECK(t != NULL && n == 1 && t[0] == 'x');
    t = cs_auth_bearer("  Bearer   tok  ", &n);
    CHECK(t != NULL && n == 3 && memcmp(t, "tok", 3) == 0);

    n = 99;
    CHECK(cs_auth_bearer("Basic x", &n) == NULL);
    CHECK(n == 0);
    CHECK(cs_auth_bearer("Bearer", &n) == NULL);
    CHECK(cs_auth_bearer("Bearer    ", &n) == NULL);
    CHECK(cs_auth_bearer("Bearer \t \t", &n) == NULL);
    CHECK(cs_auth_bearer("bearerX y", &n) == NULL);
    CHECK(cs_auth_bearer("Bearer:x", &n) == NULL);
    CHECK(cs_auth_bearer("Bear x", &n) == NULL);
    CHECK(cs_auth_bearer("", &n) == NULL);
    CHECK(cs_auth_bearer(NULL, &n) == NULL);
}

/* One rule on every transport: the header's bearer first, else ?token=; too long is invalid. */
static void test_request_token(void)
{
    char buf[8];

    CHECK(strcmp(cs_auth_request_token("Bearer abc", "xyz", buf, sizeof(buf)), "abc") == 0);
    CHECK(strcmp(cs_auth_request_token(NULL, "xyz", buf, sizeof(buf)), "xyz") == 0);
    CHECK(strcmp(cs_auth_request_token("Basic dXNlcg==", "xyz", buf, sizeof(buf)), "xyz") == 0);
    CHECK(cs_auth_request_token("Basic dXNlcg==", NULL, buf, sizeof(buf)) == NULL);
    CHECK(cs_auth_request_token(NULL, NULL, buf, sizeof(buf)) == NULL);
    CHECK(strcmp(cs_auth_request_token("Bearer 12345678", NULL, buf, sizeof(buf)), "\x7f") == 0);
    CHECK(strcmp(cs_auth_request_token(NULL, "12345678", buf, sizeof(buf)), "\x7f") == 0);
    CHECK(strcmp(cs_auth_request_token("Bearer 1234567", NULL, buf, sizeof(buf)), "1234567") == 0);
}

int main(void)
{
    RUN(test_open_on_loopback);
    RUN(test_refused_off_loopback);
    RUN(test_bad_config);
    RUN(test_missing_invalid_forbidden);
    RUN(test_admin_implies_all);
    RUN(test_api_key);
    RUN(test_many_tokens_and_freed_cfg);
    RUN(test_bearer);
    RUN(test_request_token);
    CT_DONE();
}
