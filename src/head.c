/*
 * head.c - see head.h.
 */
#include "head.h"

#include <string.h>
#include <strings.h>

static int is_tchar(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* Returns nonzero when the comma-separated header value v[0..n) lists token (case-insensitive). */
static int value_has_token(const char *v, size_t n, const char *token)
{
    size_t tl = strlen(token);
    size_t i = 0;

    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < n && v[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e - s == tl && strncasecmp(v + s, token, tl) == 0)
            return 1;
    }
    return 0;
}

cs_head_result_t cs_head_scan(const char *buf, size_t len, size_t *head_len)
{
    size_t i = 0, end = 0;
    int upgrade_ws = 0, conn_upgrade = 0;

    /* Request line: method token, one space, a target without blanks, one space, "HTTP/1.". */
    while (i < len && is_tchar((unsigned char)buf[i]))
        i++;
    if (i == len)
        return i > 32 ? CS_HEAD_INVALID : CS_HEAD_INCOMPLETE;
    if (i == 0 || buf[i] != ' ' || i > 32)
        return CS_HEAD_INVALID;
    i++;
    size_t t = i;
    while (i < len && (unsigned char)buf[i] > ' ' && buf[i] != 0x7f)
        i++;
    if (i == len)
        return CS_HEAD_INCOMPLETE;
    if (i == t || buf[i] != ' ')
        return CS_HEAD_INVALID;
    i++;
    static const char ver[] = "HTTP/1.";
    for (size_t k = 0; k < sizeof(ver) - 1; k++, i++) {
        if (i == len)
            return CS_HEAD_INCOMPLETE;
        if (buf[i] != ver[k])
            return CS_HEAD_INVALID;
    }

    /* Find the blank line that ends the head (CRLF CRLF, or bare LF LF as lenient parsers allow). */
    for (size_t k = i; k < len; k++) {
        if (buf[k] != '\n')
            continue;
        if (k + 1 < len && buf[k + 1] == '\n') {
            end = k + 2;
            break;
        }
        if (k + 2 < len && buf[k + 1] == '\r' && buf[k + 2] == '\n') {
            end = k + 3;
            break;
        }
    }
    if (end == 0)
        return CS_HEAD_INCOMPLETE;

    /* Header lines: only Upgrade and Connection matter here. */
    const char *p = memchr(buf, '\n', end);
    while (p != NULL && (size_t)(p - buf) + 1 < end) {
        const char *line = p + 1;
        const char *nl = memchr(line, '\n', end - (size_t)(line - buf));
        if (nl == NULL)
            break;
        size_t ll = (size_t)(nl - line);
        if (ll > 0 && line[ll - 1] == '\r')
            ll--;
        const char *colon = memchr(line, ':', ll);
        if (colon != NULL) {
            size_t nl_name = (size_t)(colon - line);
            const char *v = colon + 1;
            size_t vl = ll - nl_name - 1;
            if (nl_name == 7 && strncasecmp(line, "Upgrade", 7) == 0 && value_has_token(v, vl, "websocket"))
                upgrade_ws = 1;
            else if (nl_name == 10 && strncasecmp(line, "Connection", 10) == 0 &&
                     value_has_token(v, vl, "upgrade"))
                conn_upgrade = 1;
        }
        p = nl;
    }
    if (head_len != NULL)
        *head_len = end;
    return upgrade_ws && conn_upgrade ? CS_HEAD_WEBSOCKET : CS_HEAD_HTTP;
}
