/*
 * filter.c - see filter.h.
 */
#include "filter.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"

#define ERR_ITEM_MAX 80 /* how much of a bad item an error message quotes */

/*
 * Writes `types: "<item>" <what>` into err. The item comes from a URL and may hold any bytes; the
 * message ends up in a JSON body, so everything but printable ASCII is shown as '?', and a long
 * item is cut short.
 */
static void item_error(char *err, size_t errlen, const char *item, size_t len, const char *what)
{
    char quoted[ERR_ITEM_MAX + 4];
    size_t n = len > ERR_ITEM_MAX ? ERR_ITEM_MAX : len, i;

    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)item[i];
        quoted[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    if (n < len) {
        memcpy(quoted + i, "...", 3);
        i += 3;
    }
    quoted[i] = '\0';
    if (errlen > 0)
        snprintf(err, errlen, "types: \"%s\" %s", quoted, what);
}

int cs_filter_parse(cs_filter_t *f, const char *csv, char *err, size_t errlen)
{
    size_t n = 1, total, start, k = 0;
    char *strings;

    f->pats = NULL;
    f->n = 0;
    if (csv == NULL || csv[0] == '\0')
        return 0;

    total = strlen(csv);
    for (size_t i = 0; i < total; i++)
        if (csv[i] == ',')
            n++;
    if (n > CS_FILTER_MAX_PATTERNS) {
        if (errlen > 0)
            snprintf(err, errlen, "types: at most %d patterns, got %zu", CS_FILTER_MAX_PATTERNS, n);
        return -EINVAL;
    }

    /* Check every item before allocating, so a refused list costs nothing. */
    start = 0;
    for (size_t i = 0; i <= total; i++) {
        if (i < total && csv[i] != ',')
            continue;
        const char *item = csv + start;
        size_t len = i - start;
        if (len == 0) {
            if (errlen > 0)
                snprintf(err, errlen, "types: empty item in the list (\",,\" or a comma at an end)");
            return -EINVAL;
        }
        /* A lone "*" is everything; "p*" needs p to be a type name (so "ag*ent" and "**" fail). */
        if (!(len == 1 && item[0] == '*') && !cs_valid_type(item, len) &&
            !(item[len - 1] == '*' && cs_valid_type(item, len - 1))) {
            item_error(err, errlen, item, len, "is not a type name or a \"prefix.*\" pattern");
            return -EINVAL;
        }
        start = i + 1;
    }

    /*
     * One allocation holds the pattern array and, after it, the NUL-terminated pattern strings, so
     * freeing is one free() and matching walks one block. The strings need at most total + 1 bytes:
     * each item's comma (or the final NUL) becomes its terminator.
     */
    f->pats = malloc(n * sizeof(cs_filter_pat_t) + total + 1);
    if (f->pats == NULL) {
        if (errlen > 0)
            snprintf(err, errlen, "types: out of memory");
        return -ENOMEM;
    }
    strings = (char *)(f->pats + n);
    start = 0;
    for (size_t i = 0; i <= total; i++) {
        if (i < total && csv[i] != ',')
            continue;
        size_t len = i - start;
        cs_filter_pat_t *p = &f->pats[k++];
        p->prefix = csv[i - 1] == '*';
        p->len = p->prefix ? len - 1 : len;
        p->s = strings;
        memcpy(strings, csv + start, p->len);
        strings[p->len] = '\0';
        strings += p->len + 1;
        start = i + 1;
    }
    f->n = k;
    return 0;
}

int cs_filter_match(const cs_filter_t *f, const char *type, size_t len)
{
    if (f->n == 0)
        return 1;
    for (size_t i = 0; i < f->n; i++) {
        const cs_filter_pat_t *p = &f->pats[i];
        /* A zero-length prefix is the lone "*": it matches without touching type at all. */
        if (len >= p->len && (p->prefix || len == p->len) && (p->len == 0 || memcmp(type, p->s, p->len) == 0))
            return 1;
    }
    return 0;
}

void cs_filter_free(cs_filter_t *f)
{
    free(f->pats);
    f->pats = NULL;
    f->n = 0;
}
