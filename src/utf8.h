/*
 * utf8.h - the one check of a UTF-8 sequence, shared by event.c (event ids) and jscan.c (the scan
 * of a whole line), and the one hex digit, shared by jscan.c (\u escapes), head.c (%XX in a query)
 * and config.c (SHA-256 hashes). Inline: the scanner calls them for every character it checks.
 */
#ifndef CS_UTF8_H
#define CS_UTF8_H

#include <stddef.h>

/** The value of a hex digit (either case), or -1. */
static inline int cs_hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/**
 * Returns the length of the well-formed UTF-8 sequence at s[0..len) (len at least 1): 1 for an
 * ASCII byte, 2 to 4 for a multi-byte sequence, or 0 when the bytes are not one. Overlong forms,
 * surrogates and code points above U+10FFFF are refused, as RFC 3629 and jansson's
 * utf8_check_full refuse them.
 */
static inline size_t cs_utf8_seq(const unsigned char *s, size_t len)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xbf;
    size_t n;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0)
            lo = 0xa0; /* overlong */
        else if (c == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0)
            lo = 0x90; /* overlong */
        else if (c == 0xf4)
            hi = 0x8f; /* above U+10FFFF */
    } else {
        return 0; /* a continuation byte, 0xc0-0xc1 (overlong) or 0xf5-0xff */
    }
    if (len < n || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return n;
}

#endif
