/*
 * fuzz_bearer.c - Authorization header parsing and the token check, on an open
 * and on a closed table, with arbitrary bytes as the header value, the token
 * and the execution id.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/auth.c"
#include "../../src/cfgschema.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Checks the input as a token and as an execution id, and that the parser stays inside the input. */
static void exercise(const cs_auth_t *a, const char *s, size_t n, unsigned scope)
{
    cs_principal_t who;
    size_t len = 0;
    const char *t = cs_auth_bearer(s, &len);

    if (t != NULL && (t < s || len == 0 || (size_t)(t - s) + len > n))
        abort();
    if (t != NULL) {
        /* Check the extracted token the way the HTTP layer does, as its own NUL-terminated string. */
        char *copy = strndup(t, len);
        if (copy != NULL)
            (void)cs_auth_check(a, copy, scope, "run-1", NULL);
        free(copy);
    }
    if (cs_auth_check(a, s, scope, "run-1", &who) == CS_AUTH_OK)
        (void)cs_auth_principal_allows(&who, s);
    (void)cs_auth_check(a, "tok-r", scope, s, NULL);
    (void)cs_auth_check(a, "tok-a", scope, s, NULL);
    (void)cs_auth_check(a, s, scope, s, NULL);
    (void)cs_auth_check(a, s, scope, NULL, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const globs[] = {"run-*", "team.?x", "[a-c]*", "exact"};
    static const char *const all[] = {"*"};
    char *s = malloc(size + 1);
    cs_token_conf_t toks[2];
    cs_config_t cfg = {0};
    cs_auth_t *open = NULL, *closed = NULL;
    char err[256];
    unsigned scope = size > 0 ? data[0] & 0xfu : 0;

    if (s == NULL)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';

    memset(toks, 0, sizeof(toks));
    toks[0].name = "reader";
    EVP_Digest("tok-r", 5, toks[0].sha256, NULL, EVP_sha256(), NULL);
    toks[0].scopes = CS_SCOPE_READ;
    toks[0].executions = (char **)globs;
    toks[0].n_executions = 4;
    toks[1].name = "admin";
    EVP_Digest("tok-a", 5, toks[1].sha256, NULL, EVP_sha256(), NULL);
    toks[1].scopes = CS_SCOPE_ADMIN;
    toks[1].executions = (char **)all;
    toks[1].n_executions = 1;

    if (cs_auth_new(&open, &cfg, 1, err, sizeof(err)) != 0)
        abort();
    cfg.tokens = toks;
    cfg.n_tokens = 2;
    cfg.api_key = "seed-key";
    if (cs_auth_new(&closed, &cfg, 0, err, sizeof(err)) != 0)
        abort();

    exercise(open, s, size, scope);
    exercise(closed, s, size, scope);

    cs_auth_free(open);
    cs_auth_free(closed);
    free(s);
    return 0;
}
