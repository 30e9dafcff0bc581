/*
 * fuzz_lines.c - ingest line framing on arbitrary bytes, fed whole and fed in pieces, with stops
 * asked for here and there: the same lines must come out either way, each within max + 1 bytes and
 * without an LF, and every byte must be used.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/buf.c"
#include "../../src/lines.c"

#define MAX_LINES 1024

typedef struct seen {
    size_t n, max;
    uint64_t hash[MAX_LINES];
    unsigned stop_every; /* ask to stop after every k-th line (0: never) */
} seen_t;

static int on_line(void *arg, const char *line, size_t len)
{
    seen_t *s = arg;
    uint64_t h = 1469598103934665603ull;
    if (line != NULL) {
        if (len > s->max + 1 || memchr(line, '\n', len) != NULL)
            abort();
        for (size_t i = 0; i < len; i++)
            h = (h ^ (unsigned char)line[i]) * 1099511628211ull;
    } else {
        h = 0; /* too large */
    }
    if (s->n < MAX_LINES)
        s->hash[s->n] = h;
    s->n++;
    return s->stop_every != 0 && s->n % s->stop_every == 0 ? 1 : 0;
}

static void feed_all(cs_lines_t *l, const uint8_t *data, size_t size, size_t step, seen_t *s)
{
    int err;
    for (size_t off = 0; off < size;) {
        size_t piece = step == 0 || step > size - off ? size - off : step;
        size_t used = 0;
        while (used < piece) {
            size_t u = cs_lines_feed(l, (const char *)data + off + used, piece - used, on_line, s, &err);
            if (err != 0 || (u == 0 && s->stop_every == 0))
                abort();
            used += u;
        }
        off += piece;
    }
    cs_lines_end(l, on_line, s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static seen_t a, b;
    cs_lines_t l;

    if (size < 2)
        return 0;
    size_t max = data[0] % 64;
    size_t step = 1 + data[1] % 17;
    data += 2;
    size -= 2;

    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    a.max = b.max = max;
    b.stop_every = 1 + step % 3;
    cs_lines_init(&l, max, 16);
    feed_all(&l, data, size, 0, &a);
    cs_lines_free(&l);
    cs_lines_init(&l, max, 16);
    feed_all(&l, data, size, step, &b);
    cs_lines_free(&l);
    if (a.n != b.n)
        abort();
    for (size_t i = 0; i < a.n && i < MAX_LINES; i++)
        if (a.hash[i] != b.hash[i])
            abort();
    return 0;
}
