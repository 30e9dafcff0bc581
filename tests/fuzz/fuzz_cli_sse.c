/*
 * fuzz_cli_sse.c - the command-line tool's SSE parser (cli/sse.c) on arbitrary bytes, fed whole
 * and fed in pieces: the same events must come out either way (a stream is cut wherever TCP cuts
 * it), each within the bound, NUL-terminated at its length.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../cli/sse.c"
#include "../../common/buf.c"

#define MAX_EVENTS 512
#define BOUND      200

typedef struct seen {
    size_t n;
    uint64_t hash[MAX_EVENTS]; /* FNV-1a of id, event and data */
} seen_t;

static uint64_t fnv(uint64_t h, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static int on_event(void *arg, const char *id, const char *event, const char *data, size_t len)
{
    seen_t *s = arg;
    if (len > BOUND || data[len] != '\0' || strlen(id) >= 512 || strlen(event) >= 128)
        abort();
    if (s->n < MAX_EVENTS) {
        uint64_t h = fnv(1469598103934665603ull, id, strlen(id) + 1);
        h = fnv(h, event, strlen(event) + 1);
        s->hash[s->n] = fnv(h, data, len);
    }
    s->n++;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    seen_t whole = {0}, pieces = {0};
    cli_sse_t p;
    int rc_whole, rc_pieces = 0;

    if (size < 1)
        return 0;
    /* The first byte chooses the piece sizes (1..16, cycling). */
    unsigned step = data[0];
    data++;
    size--;

    cli_sse_init(&p, BOUND, on_event, &whole);
    rc_whole = cli_sse_feed(&p, (const char *)data, size);
    long retry_whole = p.retry_ms;
    cli_sse_free(&p);

    cli_sse_init(&p, BOUND, on_event, &pieces);
    for (size_t off = 0, k = 0; off < size && rc_pieces == 0; k++) {
        size_t n = 1 + ((step >> (k % 4)) + k) % 16;
        if (n > size - off)
            n = size - off;
        rc_pieces = cli_sse_feed(&p, (const char *)data + off, n);
        off += n;
    }
    /* Over the bound, where the pieces are cut decides how much was seen before the refusal. */
    if (rc_whole == 0 && rc_pieces == 0) {
        if (whole.n != pieces.n || p.retry_ms != retry_whole)
            abort();
        for (size_t i = 0; i < whole.n && i < MAX_EVENTS; i++)
            if (whole.hash[i] != pieces.hash[i])
                abort();
    }
    if ((rc_whole == 0) != (rc_pieces == 0))
        abort(); /* a line or an event over the bound is refused however it arrives */
    cli_sse_reset_stream(&p);
    cli_sse_free(&p);
    return 0;
}
