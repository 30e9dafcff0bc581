/*
 * buf.c - see buf.h.
 */
#include "buf.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUF_MIN_CAP 256

void cs_buf_init(cs_buf_t *b, size_t max)
{
    memset(b, 0, sizeof(*b));
    b->max = max;
}

void cs_buf_free(cs_buf_t *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->off = b->cap = 0;
}

int cs_buf_reserve(cs_buf_t *b, size_t n)
{
    size_t held = b->len - b->off;

    if (n > SIZE_MAX / 2 - held - 1 || (b->max != 0 && held + n > b->max))
        return -EMSGSIZE;
    if (b->off != 0 && b->len + n + 1 > b->cap) {
        /* Move the unread bytes to the front before growing. */
        memmove(b->p, b->p + b->off, held);
        b->len = held;
        b->off = 0;
        b->p[b->len] = '\0';
    }
    if (b->len + n + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : BUF_MIN_CAP;
    while (cap < b->len + n + 1)
        cap *= 2;
    if (b->max != 0 && cap > b->max + 1 && b->len + n + 1 <= b->max + 1)
        cap = b->max + 1;
    char *p = realloc(b->p, cap);
    if (p == NULL)
        return -ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

int cs_buf_append(cs_buf_t *b, const void *data, size_t n)
{
    int rc = cs_buf_reserve(b, n);
    if (rc != 0)
        return rc;
    if (n > 0)
        memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

int cs_buf_puts(cs_buf_t *b, const char *s)
{
    return cs_buf_append(b, s, strlen(s));
}

int cs_buf_vprintf(cs_buf_t *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return -EINVAL;
    int rc = cs_buf_reserve(b, (size_t)n);
    if (rc != 0)
        return rc;
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int cs_buf_printf(cs_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = cs_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

int cs_buf_space(cs_buf_t *b, size_t want, char **p, size_t *avail)
{
    size_t held = b->len - b->off;
    int rc;

    if (want == 0)
        want = 1;
    if (b->max != 0) {
        if (held >= b->max)
            return -EMSGSIZE;
        if (want > b->max - held)
            want = b->max - held;
    }
    if ((rc = cs_buf_reserve(b, want)) != 0)
        return rc;
    *p = b->p + b->len;
    *avail = b->cap - b->len - 1;
    if (b->max != 0 && *avail > b->max - held)
        *avail = b->max - held;
    return 0;
}

void cs_buf_commit(cs_buf_t *b, size_t n)
{
    b->len += n;
    b->p[b->len] = '\0';
}

void cs_buf_truncate(cs_buf_t *b, size_t n)
{
    if (n >= b->len - b->off)
        return;
    b->len = b->off + n;
    b->p[b->len] = '\0';
}

void cs_buf_consume(cs_buf_t *b, size_t n)
{
    size_t held = b->len - b->off;
    if (n > held)
        n = held;
    b->off += n;
    if (b->off == b->len) {
        b->off = b->len = 0;
        if (b->p != NULL)
            b->p[0] = '\0';
    }
}

char *cs_buf_steal(cs_buf_t *b, size_t *len)
{
    size_t held = b->len - b->off;
    char *p = b->p;

    *len = held;
    if (p == NULL || held == 0) {
        cs_buf_free(b);
        *len = 0;
        return NULL;
    }
    if (b->off != 0)
        memmove(p, p + b->off, held + 1);
    b->p = NULL;
    b->len = b->off = b->cap = 0;
    return p;
}

void cs_buf_shrink(cs_buf_t *b, size_t keep)
{
    if (b->len != b->off || b->cap <= keep)
        return;
    if (keep == 0) {
        cs_buf_free(b);
        return;
    }
    char *p = realloc(b->p, keep);
    if (p == NULL)
        return; /* keeping the bigger block is harmless */
    b->p = p;
    b->cap = keep;
    b->len = b->off = 0;
    b->p[0] = '\0';
}
