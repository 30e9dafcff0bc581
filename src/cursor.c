/*
 * cursor.c - see cursor.h.
 */
#include "cursor.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#define EPOCH_HEX_DIGITS 12
#define SEQ_MAX_DIGITS   20 /* UINT64_MAX is 18446744073709551615 */

/* Writes v in decimal at out; returns the number of digits. */
size_t cs_fmt_u64(char *out, uint64_t v)
{
    char tmp[SEQ_MAX_DIGITS];
    size_t n = 0;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

size_t cs_cursor_format(char *buf, size_t buflen, uint64_t epoch, uint64_t seq)
{
    static const char hex[] = "0123456789abcdef";
    char tmp[CS_CURSOR_MAX];
    size_t n;

    if (buflen == 0)
        return 0;
    /* Hand-made rather than snprintf: it runs twice for every event stored. */
    epoch &= CS_EPOCH_MASK;
    for (int i = EPOCH_HEX_DIGITS - 1; i >= 0; i--, epoch >>= 4)
        tmp[i] = hex[epoch & 0xf];
    tmp[EPOCH_HEX_DIGITS] = '-';
    n = EPOCH_HEX_DIGITS + 1 + cs_fmt_u64(tmp + EPOCH_HEX_DIGITS + 1, seq);
    /* Report what is in buf, not what would have been: callers copy that many bytes. */
    if (n >= buflen)
        n = buflen - 1;
    memcpy(buf, tmp, n);
    buf[n] = '\0';
    return n;
}

int cs_seq_parse(const char *s, size_t len, uint64_t *seq)
{
    uint64_t v = 0;

    if (s == NULL || len == 0 || len > SEQ_MAX_DIGITS)
        return -EINVAL;
    for (size_t i = 0; i < len; i++) {
        unsigned d = (unsigned char)s[i] - (unsigned)'0';
        if (d > 9)
            return -EINVAL;
        if (v > (UINT64_MAX - d) / 10)
            return -EINVAL;
        v = v * 10 + d;
    }
    *seq = v;
    return 0;
}

static int hex_digit(char c)
{
    /* Lower case only: a cursor has exactly one spelling, so it can be compared as bytes. */
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

int cs_cursor_parse(const char *s, size_t len, uint64_t *epoch, uint64_t *seq)
{
    uint64_t e = 0, n;

    if (s == NULL || len < EPOCH_HEX_DIGITS + 2 || s[EPOCH_HEX_DIGITS] != '-')
        return -EINVAL;
    for (size_t i = 0; i < EPOCH_HEX_DIGITS; i++) {
        int d = hex_digit(s[i]);
        if (d < 0)
            return -EINVAL;
        e = e << 4 | (uint64_t)d;
    }
    if (cs_seq_parse(s + EPOCH_HEX_DIGITS + 1, len - EPOCH_HEX_DIGITS - 1, &n) != 0)
        return -EINVAL;
    *epoch = e;
    *seq = n;
    return 0;
}

/*
 * The daemon's loop is single-threaded, so plain static state is enough. Starting at a random
 * value keeps a restarted daemon's epochs from colliding with the ones its clients still hold.
 */
static uint64_t epoch_last;

uint64_t cs_epoch_next(void)
{
    uint64_t e;

    if (epoch_last == 0) {
        unsigned char b[6];
        if (RAND_bytes(b, sizeof(b)) == 1) {
            e = 0;
            for (size_t i = 0; i < sizeof(b); i++)
                e = e << 8 | b[i];
        } else {
            /* Without entropy, time and pid still differ between two runs of the daemon. */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            e = (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec ^ (uint64_t)getpid() << 24;
        }
    } else
        e = epoch_last + 1;
    e &= CS_EPOCH_MASK;
    if (e == 0)
        e = 1; /* 0 means "not seeded yet", and no cursor should carry it */
    epoch_last = e;
    return e;
}
