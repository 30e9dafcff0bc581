/*
 * http.c - the daemon's HTTP API through libcurl: one request with a JSON answer, the options
 * every request shares, and the mapping of transport failures and HTTP statuses to one line on
 * stderr and an exit code.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "cli.h"

#include "buf.h"

#ifndef CS_VERSION
#define CS_VERSION "0"
#endif

/* A JSON answer larger than this is not one the daemon sends. */
#define CLI_MAX_BODY (64u << 20)

int cli_http_init(void)
{
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

char *cli_url(const cli_ctx_t *ctx, const char *path)
{
    size_t n = strlen(ctx->url) + strlen(path) + 1;
    char *u = malloc(n);
    if (u != NULL)
        snprintf(u, n, "%s%s", ctx->url, path);
    return u;
}

char *cli_escape(const char *s)
{
    char *e = curl_easy_escape(NULL, s, 0);
    char *r = e != NULL ? strdup(e) : NULL;
    curl_free(e);
    return r;
}

struct curl_slist *cli_http_headers(const cli_ctx_t *ctx, struct curl_slist *h)
{
    if (ctx->token != NULL) {
        size_t n = strlen(ctx->token) + 32;
        char *line = malloc(n);
        if (line != NULL) {
            snprintf(line, n, "Authorization: Bearer %s", ctx->token);
            h = curl_slist_append(h, line);
            free(line);
        }
    }
    return h;
}

void cli_http_common(const cli_ctx_t *ctx, void *curl)
{
    /* Never send loopback traffic through a proxy from the environment; keep the user's own
     * no_proxy list for everything else. */
    static char noproxy[2048];
    const char *env = getenv("no_proxy");
    (void)ctx;
    if (env == NULL || env[0] == '\0')
        env = getenv("NO_PROXY");
    snprintf(noproxy, sizeof(noproxy), "localhost,127.0.0.1,::1%s%s", env && env[0] ? "," : "",
             env && env[0] ? env : "");
    curl_easy_setopt(curl, CURLOPT_NOPROXY, noproxy);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 5L);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "crewstream/" CS_VERSION);
}

int cli_http_transport_error(const cli_ctx_t *ctx, int code, const char *errbuf)
{
    const char *why;
    switch (code) {
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
        return cli_usage_error(ctx, "--url '%s' is not a usable URL", ctx->url);
    case CURLE_COULDNT_CONNECT:
        why = "connection refused";
        break;
    case CURLE_COULDNT_RESOLVE_HOST:
        why = "unknown host";
        break;
    case CURLE_OPERATION_TIMEDOUT:
        why = "timed out";
        break;
    case CURLE_GOT_NOTHING:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_PARTIAL_FILE:
        why = "the connection was lost";
        break;
    default:
        why = errbuf != NULL && errbuf[0] ? errbuf : curl_easy_strerror((CURLcode)code);
        break;
    }
    cli_err("cannot reach the daemon at %s (%s); is crewstreamd running?", ctx->url, why);
    return CLI_EUNREACH;
}

typedef struct body {
    cs_buf_t buf; /* at most CLI_MAX_BODY bytes */
    int too_big;
} body_t;

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *arg)
{
    body_t *b = arg;
    size_t n = size * nmemb;
    int rc = cs_buf_append(&b->buf, ptr, n);
    if (rc == -EMSGSIZE)
        b->too_big = 1;
    return rc == 0 ? n : 0;
}

int cli_http(const cli_ctx_t *ctx, const char *method, const char *path, const char *body, cli_resp_t *out)
{
    char errbuf[CURL_ERROR_SIZE] = "";
    body_t b = {0};
    struct curl_slist *h = NULL;
    int rc = CLI_OK;
    CURL *c = curl_easy_init();
    char *url = cli_url(ctx, path);

    memset(out, 0, sizeof(*out));
    cs_buf_init(&b.buf, CLI_MAX_BODY - 1);
    if (c == NULL || url == NULL) {
        cli_err("out of memory");
        rc = CLI_EFAIL;
        goto Exit;
    }
    h = curl_slist_append(h, "Accept: application/json");
    if (body != NULL)
        h = curl_slist_append(h, "Content-Type: application/json");
    h = cli_http_headers(ctx, h);
    cli_http_common(ctx, c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    if (body != NULL) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0)
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);

    CURLcode cc = curl_easy_perform(c);
    if (cc != CURLE_OK) {
        if (b.too_big) {
            cli_err("the daemon's answer to %s %s is larger than %u MiB", method, path, CLI_MAX_BODY >> 20);
            rc = CLI_EFAIL;
        } else {
            rc = cli_http_transport_error(ctx, cc, errbuf);
        }
        goto Exit;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    out->body = cs_buf_steal(&b.buf, &out->len);
    if (out->body == NULL)
        out->body = strdup("");
    out->json = out->body != NULL ? json_loadb(out->body, out->len, 0, NULL) : NULL;

Exit:
    cs_buf_free(&b.buf);
    free(url);
    curl_slist_free_all(h);
    if (c != NULL)
        curl_easy_cleanup(c);
    return rc;
}

void cli_resp_free(cli_resp_t *r)
{
    free(r->body);
    json_decref(r->json);
    memset(r, 0, sizeof(*r));
}

int cli_http_status_exit(const cli_ctx_t *ctx, const cli_resp_t *r, const char *what)
{
    const char *detail = json_string_value(json_object_get(r->json, "detail"));
    const char *code = json_string_value(json_object_get(r->json, "error"));
    char text[300];
    int rc;
    (void)ctx;

    if (r->status >= 200 && r->status < 300)
        return CLI_OK;
    if (detail == NULL) {
        /* Not one of the daemon's JSON errors (a proxy, another server): its first line. */
        size_t n = r->body != NULL ? strcspn(r->body, "\r\n") : 0;
        snprintf(text, sizeof(text), "%.*s", (int)(n < 200 ? n : 200), r->body ? r->body : "");
        detail = text[0] ? text : "no details";
    }
    const char *w = what != NULL ? what : "";
    const char *sep = what != NULL ? ": " : "";
    switch (r->status) {
    case 404:
        rc = CLI_ENOTFOUND;
        cli_err("%s%snot found: %s", w, sep, detail);
        break;
    case 409:
        rc = CLI_ECONFLICT;
        cli_err("%s%sconflict: %s", w, sep, detail);
        break;
    case 401:
        rc = CLI_EAUTH;
        cli_err("%s%sunauthorized: %s (give a token with --token or CREWSTREAM_TOKEN)", w, sep, detail);
        break;
    case 403:
        rc = CLI_EAUTH;
        cli_err("%s%sforbidden: %s", w, sep, detail);
        break;
    default:
        rc = CLI_EFAIL;
        cli_err("%s%sthe daemon answered %ld%s%s: %s", w, sep, r->status, code ? " " : "", code ? code : "",
                detail);
        break;
    }
    return rc;
}
