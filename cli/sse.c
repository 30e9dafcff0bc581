/*
 * sse.c - a Server-Sent Events parser after the WHATWG "event stream interpretation": lines end
 * with CRLF, LF or CR; `data:` lines join with LF; `id:` becomes the last event id when the event
 * is dispatched (so an event cut off by a dropped connection never moves the resume position);
 * comments (`:`) and `retry:` are consumed. Pure: it does no I/O, bytes in, callbacks out.
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

void cli_sse_init(cli_sse_t *p, size_t max, cli_sse_cb cb, void *arg)
{
    memset(p, 0, sizeof(*p));
    p->max = max;
    cs_buf_init(&p->line, max);
    cs_buf_init(&p->data, max);
    p->cb = cb;
    p->arg = arg;
    p->retry_ms = -1;
}

void cli_sse_reset_stream(cli_sse_t *p)
{
    cs_buf_consume(&p->line, cs_buf_size(&p->line));
    cs_buf_consume(&p->data, cs_buf_size(&p->data));
    p->has_data = 0;
    p->skip_lf = 0;
    p->event[0] = '\0';
    /* The id buffer goes back to what was last dispatched: an id line of an event that never
     * completed must not count. */
    memcpy(p->id_buf, p->last_id, sizeof(p->id_buf));
}

void cli_sse_free(cli_sse_t *p)
{
    cs_buf_free(&p->line);
    cs_buf_free(&p->data);
}

static int dispatch(cli_sse_t *p)
{
    int rc = 0;
    memcpy(p->last_id, p->id_buf, sizeof(p->last_id));
    if (p->has_data) {
        size_t n = cs_buf_size(&p->data);
        if (n > 0 && cs_buf_data(&p->data)[n - 1] == '\n')
            cs_buf_truncate(&p->data, --n);
        rc = p->cb(p->arg, p->last_id, p->event, cs_buf_data(&p->data), n);
    }
    cs_buf_consume(&p->data, cs_buf_size(&p->data));
    p->has_data = 0;
    p->event[0] = '\0';
    return rc;
}

static void copy_field(char *dst, size_t cap, const char *v, size_t n)
{
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, v, n);
    dst[n] = '\0';
}

/* One complete line (without its end). */
static int line(cli_sse_t *p, const char *s, size_t n)
{
    const char *colon, *v;
    size_t fn, vn;

    if (n == 0)
        return dispatch(p);
    if (s[0] == ':')
        return 0; /* a comment: heartbeats */
    colon = memchr(s, ':', n);
    fn = colon != NULL ? (size_t)(colon - s) : n;
    v = colon != NULL ? colon + 1 : s + n;
    vn = colon != NULL ? n - fn - 1 : 0;
    if (vn > 0 && v[0] == ' ') {
        v++;
        vn--;
    }
    if (fn == 4 && memcmp(s, "data", 4) == 0) {
        if (cs_buf_reserve(&p->data, vn + 1) != 0)
            return -1;
        cs_buf_append(&p->data, v, vn);
        cs_buf_append(&p->data, "\n", 1);
        p->has_data = 1;
    } else if (fn == 5 && memcmp(s, "event", 5) == 0) {
        copy_field(p->event, sizeof(p->event), v, vn);
    } else if (fn == 2 && memcmp(s, "id", 2) == 0) {
        if (memchr(v, '\0', vn) == NULL)
            copy_field(p->id_buf, sizeof(p->id_buf), v, vn);
    } else if (fn == 5 && memcmp(s, "retry", 5) == 0) {
        long ms = 0;
        size_t i;
        for (i = 0; i < vn && v[i] >= '0' && v[i] <= '9' && ms < 100000000; i++)
            ms = ms * 10 + (v[i] - '0');
        if (i == vn && vn > 0)
            p->retry_ms = ms;
    }
    return 0;
}

int cli_sse_feed(cli_sse_t *p, const char *buf, size_t n)
{
    while (n > 0) {
        if (p->skip_lf) {
            p->skip_lf = 0;
            if (buf[0] == '\n') {
                buf++;
                n--;
                continue;
            }
        }
        size_t i = 0;
        while (i < n && buf[i] != '\n' && buf[i] != '\r')
            i++;
        if (i == n) {
            /* No line end yet: keep the piece. */
            return cs_buf_append(&p->line, buf, n) == 0 ? 0 : -1;
        }
        int rc;
        if (cs_buf_size(&p->line) > 0) {
            if (cs_buf_append(&p->line, buf, i) != 0)
                return -1;
            rc = line(p, cs_buf_data(&p->line), cs_buf_size(&p->line));
            cs_buf_consume(&p->line, cs_buf_size(&p->line));
        } else {
            if (i > p->max)
                return -1;
            rc = line(p, buf, i);
        }
        if (buf[i] == '\r')
            p->skip_lf = 1;
        buf += i + 1;
        n -= i + 1;
        if (rc != 0)
            return rc;
    }
    return 0;
}
