/*
 * httputil.c - see httputil.h.
 */
#include "httputil.h"

#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <jansson.h>

#include "err.h"

char *cs_error_json(const char *code, const char *detail, size_t *len)
{
    json_t *o = json_pack("{s:s, s:s}", "error", code, "detail", detail ? detail : "");
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;

    json_decref(o);
    if (len != NULL)
        *len = s ? strlen(s) : 0;
    return s;
}

char *cs_err_json(int err, const char *detail, size_t *len)
{
    return cs_error_json(cs_err_http_name(err), detail != NULL ? detail : cs_err_detail(err), len);
}

const char *cs_http_reason(unsigned status)
{
    switch (status) {
    case 200:
        return "OK";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Content Too Large";
    case 426:
        return "Upgrade Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return "Error";
    }
}

const char *cs_cors_allow(const cs_config_t *cfg, const char *origin, size_t origin_len, int *vary)
{
    *vary = 0;
    for (size_t i = 0; i < cfg->n_cors_origins; i++)
        if (strcmp(cfg->cors_origins[i], "*") == 0)
            return "*";
    if (origin == NULL || origin_len == 0)
        return NULL;
    for (size_t i = 0; i < cfg->n_cors_origins; i++) {
        if (strlen(cfg->cors_origins[i]) == origin_len &&
            memcmp(cfg->cors_origins[i], origin, origin_len) == 0) {
            *vary = 1;
            return cfg->cors_origins[i];
        }
    }
    return NULL;
}

size_t cs_nofile_limit(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > CS_NOFILE_CAP)
        return 0;
    return (size_t)rl.rlim_cur;
}
