/*
 * fuzz_jwt.c - signed tokens (auth.jwt_secret) on arbitrary bytes.
 *
 * The first byte picks what the rest is. Even: a presented token, verified as it
 * is (so the fuzzer works on the shape, the base64url and the signature check).
 * Odd: "HEADER\nPAYLOAD" (or a payload alone under an HS256 header), which the
 * target signs with the key before verifying, so the fuzzer reaches the JSON and
 * the claims; the second byte then picks one character to change, and the
 * changed token must never verify. Whatever verifies must respect every bound,
 * and its principal must copy and release cleanly.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/auth.c"
#include "../../src/cfgschema.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_KEY "fuzz-key"
#define FUZZ_NOW ((int64_t)1700000000)

static const char fuzz_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Aborts unless c respects every bound a verified token must. */
static void check_claims(const cs_jwt_claims_t *c)
{
    if ((c->scopes & ~CS_SCOPE_ALL) != 0 || c->n_executions > CS_AUTH_JWT_MAX_EXECUTIONS)
        abort();
    if (!c->has_executions && c->n_executions != 0)
        abort();
    for (size_t i = 0; i < c->n_executions; i++) {
        size_t n = strlen(c->executions[i]);
        if (n == 0 || n > CS_AUTH_JWT_MAX_GLOB)
            abort();
    }
    if (c->sub != NULL) {
        size_t n = strlen(c->sub);
        if (n == 0 || n > CS_AUTH_JWT_MAX_SUB)
            abort();
        for (size_t i = 0; i < n; i++) {
            if ((unsigned char)c->sub[i] < 0x20 || c->sub[i] == 0x7f)
                abort();
        }
    }
}

/* Verifies token at FUZZ_NOW; returns the result, checking the claims of a good one. */
static int verify(const char *token, size_t len)
{
    cs_jwt_claims_t c;
    int rc = cs_jwt_verify((const unsigned char *)FUZZ_KEY, strlen(FUZZ_KEY), token, len, FUZZ_NOW, &c);

    if (rc == 0) {
        check_claims(&c);
        cs_jwt_claims_free(&c);
    } else if (c.sub != NULL || c.executions != NULL || c.n_executions != 0) {
        abort(); /* a refusal leaves nothing behind */
    }
    return rc;
}

/* The token through a table, as a request's would go (real clock); a good principal is copied. */
static void through_table(const cs_auth_t *a, const char *token)
{
    cs_principal_t who, keep;

    if (cs_auth_identify(a, token, &who) != CS_AUTH_OK)
        return;
    (void)cs_auth_authorize(&who, CS_SCOPE_READ, "run-1");
    (void)cs_auth_authorize(&who, CS_SCOPE_RESPOND, NULL);
    if (cs_auth_principal_dup(&keep, &who) != 0)
        return;
    if (strcmp(keep.name, who.name) != 0 || keep.n_executions != who.n_executions)
        abort();
    (void)cs_auth_principal_allows(&keep, "run-1");
    cs_auth_principal_release(&keep);
}

/* Signs header and payload into a fresh NUL-terminated token. */
static char *sign(const uint8_t *h, size_t hl, const uint8_t *p, size_t pl, size_t *len)
{
    char *t = malloc(4 * ((hl + 2) / 3) + 4 * ((pl + 2) / 3) + 64);
    unsigned char md[32];
    unsigned int mdlen = 0;
    size_t n;

    if (t == NULL)
        return NULL;
    n = cs_jwt_b64_encode(h, hl, t);
    t[n++] = '.';
    n += cs_jwt_b64_encode(p, pl, t + n);
    if (HMAC(EVP_sha256(), FUZZ_KEY, (int)strlen(FUZZ_KEY), (const unsigned char *)t, n, md, &mdlen) ==
        NULL) {
        free(t);
        return NULL;
    }
    t[n++] = '.';
    n += cs_jwt_b64_encode(md, mdlen, t + n);
    *len = n;
    return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char hs[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    static const char *const all[] = {"*"};
    cs_token_conf_t tok = {0};
    cs_config_t cfg = {0};
    cs_auth_t *a = NULL;
    char err[256];

    if (size < 2)
        return 0;
    tok.name = "static";
    EVP_Digest("tok-s", 5, tok.sha256, NULL, EVP_sha256(), NULL);
    tok.scopes = CS_SCOPE_READ;
    tok.executions = (char **)all;
    tok.n_executions = 1;
    cfg.tokens = &tok;
    cfg.n_tokens = 1;
    cfg.jwt_secret = FUZZ_KEY;
    if (cs_auth_new(&a, &cfg, 0, err, sizeof(err)) != 0)
        abort();

    if ((data[0] & 1) == 0) {
        char *s = strndup((const char *)data + 1, size - 1);
        if (s != NULL) {
            (void)verify(s, strlen(s));
            through_table(a, s);
        }
        free(s);
    } else {
        const uint8_t *body = data + 2, *nl = memchr(body, '\n', size - 2);
        const uint8_t *h = (const uint8_t *)hs, *p = body;
        size_t hl = sizeof(hs) - 1, pl = size - 2, len = 0;
        char *t;

        if (nl != NULL) {
            h = body;
            hl = (size_t)(nl - body);
            p = nl + 1;
            pl = size - 2 - hl - 1;
        }
        t = sign(h, hl, p, pl, &len);
        if (t != NULL) {
            const char *d1, *d2;

            /* Signed with the key: never a bad signature, and the shape of a JWT unless a part is empty. */
            if (verify(t, len) == -EACCES)
                abort();
            if (hl > 0 && pl > 0 && !cs_jwt_is_compact(t, len, &d1, &d2))
                abort();
            through_table(a, t);

            /* One character changed, anywhere (a dot included): never valid. */
            size_t at = data[1] % len;
            int v = cs_jwt_b64_value((unsigned char)t[at]);
            t[at] = v < 0 ? 'A' : fuzz_alphabet[(v + 1 + data[1] / 64) % 64];
            if (verify(t, len) == 0)
                abort();
            free(t);
        }
    }
    cs_auth_free(a);
    return 0;
}
