/*
 * lines.c - see lines.h.
 */
#include "lines.h"

#include <errno.h>
#include <string.h>

void cs_lines_init(cs_lines_t *l, size_t max, size_t keep)
{
    memset(l, 0, sizeof(*l));
    l->max = max;
    l->keep = keep;
    /* The bound is checked here, per line, so the buffer itself needs none. */
    cs_buf_init(&l->part, 0);
}

void cs_lines_free(cs_lines_t *l)
{
    cs_buf_free(&l->part);
}

size_t cs_lines_feed(cs_lines_t *l, const char *data, size_t n, cs_lines_cb cb, void *arg, int *err)
{
    const char *start = data;
    int rc = 0;

    *err = 0;
    while (n > 0) {
        const char *nl = memchr(data, '\n', n);
        size_t take = nl ? (size_t)(nl - data) : n;
        size_t held = cs_buf_size(&l->part);

        if (l->skipping) {
            if (nl != NULL)
                l->skipping = 0;
        } else if (held + take > l->max + 1) {
            /* Over the bound (one byte of slack for a CR): answer now, skip the rest of it. */
            cs_buf_consume(&l->part, held);
            if (nl == NULL)
                l->skipping = 1;
            rc = cb(arg, NULL, 0);
        } else if (nl != NULL && held == 0) {
            rc = cb(arg, data, take); /* the whole line is in this read: no copy */
        } else {
            if (cs_buf_append(&l->part, data, take) != 0) {
                *err = -ENOMEM;
                return (size_t)(data - start);
            }
            if (nl != NULL) {
                rc = cb(arg, cs_buf_data(&l->part), cs_buf_size(&l->part));
                cs_buf_consume(&l->part, cs_buf_size(&l->part));
            }
        }
        if (rc < 0)
            return (size_t)(data - start);
        if (nl == NULL) {
            data += n;
            break;
        }
        data = nl + 1;
        n -= take + 1;
        if (rc > 0)
            break;
    }
    /* Do not keep a large buffer for a producer that sent one large line. */
    if (cs_buf_size(&l->part) == 0 && l->part.cap > l->keep)
        cs_buf_shrink(&l->part, 0);
    return (size_t)(data - start);
}

void cs_lines_end(cs_lines_t *l, cs_lines_cb cb, void *arg)
{
    if (cs_buf_size(&l->part) > 0 && !l->skipping)
        cb(arg, cs_buf_data(&l->part), cs_buf_size(&l->part));
    cs_buf_free(&l->part);
    l->skipping = 0;
}
