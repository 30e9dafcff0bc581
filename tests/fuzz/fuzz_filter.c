/*
 * fuzz_filter.c - the ?types= parser on any bytes, then the matcher on the same bytes; a refused
 * list must leave a filter that matches everything, an accepted one must match its own exact items.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/err.c"
#include "../../src/event.c"
#include "../../src/filter.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *csv = malloc(size + 1);
    char err[128];
    cs_filter_t f;

    if (csv == NULL)
        return 0;
    memcpy(csv, data, size);
    csv[size] = '\0';

    if (cs_filter_parse(&f, csv, err, sizeof(err)) != 0) {
        if (f.n != 0 || f.pats != NULL || !cs_filter_match(&f, csv, size))
            abort();
    } else {
        if (f.n > CS_FILTER_MAX_PATTERNS)
            abort();
        for (size_t i = 0; i < f.n; i++) {
            const cs_filter_pat_t *p = &f.pats[i];
            if (strlen(p->s) != p->len || !cs_filter_match(&f, p->s, p->len))
                abort();
        }
        (void)cs_filter_match(&f, csv, size);
        (void)cs_filter_match(&f, csv, strlen(csv));
    }
    cs_filter_free(&f);
    free(csv);
    return 0;
}
