/*
 * fuzz_cursor.c - cursor and bare-seq parsing; every accepted cursor must format back to itself
 * (a cursor has exactly one spelling, apart from leading zeros in its seq).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/cursor.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    uint64_t epoch, seq, seq2;
    char buf[CS_CURSOR_MAX];

    if (cs_cursor_parse(s, size, &epoch, &seq) == 0) {
        size_t n = cs_cursor_format(buf, sizeof(buf), epoch, seq);
        uint64_t e2, s2;
        if (epoch > CS_EPOCH_MASK || cs_cursor_parse(buf, n, &e2, &s2) != 0 || e2 != epoch || s2 != seq)
            abort();
        /* Without leading zeros in the seq the text is identical. */
        if (size < 14 || s[13] != '0' || size == 14) {
            if (n != size || memcmp(buf, s, n) != 0)
                abort();
        }
    }
    if (cs_seq_parse(s, size, &seq2) == 0) {
        char txt[24];
        int n = snprintf(txt, sizeof(txt), "%llu", (unsigned long long)seq2);
        uint64_t again;
        if (n <= 0 || cs_seq_parse(txt, (size_t)n, &again) != 0 || again != seq2)
            abort();
    }
    return 0;
}
