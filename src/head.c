/*
 * head.c - see head.h.
 */
#include "head.h"

#include <string.h>
#include <strings.h>

#include "utf8.h"

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

int cs_head_target_nul(const char *buf, size_t len)
{
    const char *sp = memchr(buf, ' ', len);

    if (sp == NULL)
        return 0;
    const char *t = sp + 1, *end = buf + len;
    /* The target ends at the next blank (cs_head_scan allows no other inside it). */
    for (const char *p = t; p < end && (unsigned char)*p > ' ' && *p != 0x7f; p++)
        if (*p == '%' && end - p >= 3 && p[1] == '0' && p[2] == '0')
            return 1;
    return 0;
}

/* ---- the strict parse for natively served GETs ---- */

static int is_vchar_or_ws(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static int field_is(const char *name, size_t n, const char *want)
{
    return strlen(want) == n && strncasecmp(name, want, n) == 0;
}

/* Records one field of interest; a repeated one makes the head "unusual". */
static int take_field(cs_head_str_t *slot, const char *v, size_t n)
{
    if (slot->p != NULL)
        return -1;
    slot->p = v;
    slot->n = n;
    return 0;
}

int cs_head_parse(const char *buf, size_t len, cs_head_req_t *r)
{
    static const char get[] = "GET /";
    static const char ver[] = " HTTP/1.1\r\n";
    size_t i, t0;

    memset(r, 0, sizeof(*r));
    if (len < sizeof(get) - 1 || memcmp(buf, get, sizeof(get) - 1) != 0)
        return -1;
    t0 = i = sizeof(get) - 2; /* the target starts at its '/' */
    while (i < len && (unsigned char)buf[i] > ' ' && buf[i] != 0x7f)
        i++;
    if (len - i < sizeof(ver) - 1 || memcmp(buf + i, ver, sizeof(ver) - 1) != 0)
        return -1;
    const char *q = memchr(buf + t0, '?', i - t0);
    r->path.p = buf + t0;
    r->path.n = q != NULL ? (size_t)(q - (buf + t0)) : i - t0;
    if (memchr(r->path.p, '%', r->path.n) != NULL)
        return -1;
    if (q != NULL) {
        r->query.p = q + 1;
        r->query.n = (size_t)(buf + i - (q + 1));
    } else {
        r->query.p = buf + i;
    }
    i += sizeof(ver) - 1;

    /* Fields, each "name: value\r\n", then the blank line that must end buf exactly. */
    for (;;) {
        if (len - i == 2 && buf[i] == '\r' && buf[i + 1] == '\n')
            return 0;
        size_t n0 = i;
        while (i < len && is_tchar((unsigned char)buf[i]))
            i++;
        if (i == n0 || i == len || buf[i] != ':')
            return -1; /* empty name, folding (a leading blank), or a stray byte */
        const char *name = buf + n0;
        size_t name_len = i - n0;
        i++;
        while (i < len && (buf[i] == ' ' || buf[i] == '\t'))
            i++;
        size_t v0 = i;
        while (i < len && is_vchar_or_ws((unsigned char)buf[i]))
            i++;
        if (len - i < 2 || buf[i] != '\r' || buf[i + 1] != '\n')
            return -1;
        size_t v1 = i;
        while (v1 > v0 && (buf[v1 - 1] == ' ' || buf[v1 - 1] == '\t'))
            v1--;
        i += 2;
        const char *v = buf + v0;
        size_t vn = v1 - v0;
        if (field_is(name, name_len, "Authorization")) {
            if (take_field(&r->authorization, v, vn) != 0)
                return -1;
        } else if (field_is(name, name_len, "Last-Event-ID")) {
            if (take_field(&r->last_event_id, v, vn) != 0)
                return -1;
        } else if (field_is(name, name_len, "Origin")) {
            if (take_field(&r->origin, v, vn) != 0)
                return -1;
        } else if (field_is(name, name_len, "Transfer-Encoding")) {
            return -1;
        } else if (field_is(name, name_len, "Content-Length")) {
            if (vn != 1 || v[0] != '0')
                return -1;
        }
    }
}

int cs_head_arg(cs_head_str_t query, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name), i = 0;

    if (outlen == 0)
        return -1;
    while (i < query.n) {
        const char *a = query.p + i;
        const char *amp = memchr(a, '&', query.n - i);
        size_t an = amp != NULL ? (size_t)(amp - a) : query.n - i;
        i += an + 1;
        if (an < nl || memcmp(a, name, nl) != 0 || (an > nl && a[nl] != '='))
            continue;
        if (an == nl)
            return -1; /* "?name" without a value */
        size_t o = 0;
        for (size_t k = nl + 1; k < an; k++) {
            char c = a[k];
            if (c == '+') {
                c = ' ';
            } else if (c == '%') {
                int hi = k + 2 < an ? cs_hex_digit((unsigned char)a[k + 1]) : -1,
                    lo = k + 2 < an ? cs_hex_digit((unsigned char)a[k + 2]) : -1;
                if (hi < 0 || lo < 0 || (hi | lo) == 0)
                    return -1;
                c = (char)(hi << 4 | lo);
                k += 2;
            }
            if (o + 1 >= outlen)
                return -1;
            out[o++] = c;
        }
        out[o] = '\0';
        return 1;
    }
    return 0;
}
