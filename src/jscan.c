/*
 * jscan.c - see jscan.h.
 *
 * One pass over the line, no recursion and no allocation: a bit per open container (object or
 * array) on the stack says what may close it. Where jansson's rules go beyond RFC 8259 (\u0000,
 * lone escaped surrogates, integers beyond int64, reals that overflow a double) the scan follows
 * jansson, because it must accept exactly the lines the jansson path accepts; tests/fuzz/fuzz_jscan.c
 * holds the two side by side.
 */
#include "jscan.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"

/* Classes of the bytes inside a string. */
enum { S_PLAIN = 0, S_QUOTE, S_BACKSLASH, S_CONTROL, S_HIGH };

/* clang-format off */
static const unsigned char str_class[256] = {
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, /* 0x00: control characters */
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x20: '"' */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, /* 0x50: '\\' */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x7f (DEL) is allowed, as in jansson */
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, /* 0x80: UTF-8 */
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
};
/* clang-format on */

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static int is_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* What may follow a scalar: white space, or what ends it inside an object or an array. */
static int ends_scalar(unsigned char c)
{
    return is_ws(c) || c == ',' || c == '}' || c == ']';
}

static const unsigned char *skip_ws(const unsigned char *p, const unsigned char *end, cs_jscan_t *out)
{
    for (; p < end; p++) {
        if (*p == ' ' || *p == '\t')
            continue;
        if (*p != '\n' && *p != '\r')
            break;
        out->flags |= CS_JSCAN_CRLF;
    }
    return p;
}

/* Returns the value of the four hex digits at p (before end), or -1. */
static long hex4(const unsigned char *p, const unsigned char *end)
{
    long v = 0;

    if (end - p < 4)
        return -1;
    for (int i = 0; i < 4; i++) {
        int d = cs_hex_digit(p[i]);
        if (d < 0)
            return -1;
        v = v << 4 | d;
    }
    return v;
}

/*
 * Scans the rest of a string whose opening quote precedes p. Returns the position just after its
 * closing quote, or NULL when it is not a string jansson takes; sets *escaped when it holds an escape.
 */
static const unsigned char *scan_string(const unsigned char *p, const unsigned char *end, int *escaped)
{
    for (;;) {
        while (p < end && str_class[*p] == S_PLAIN)
            p++;
        if (p >= end)
            return NULL;
        switch (str_class[*p]) {
        case S_QUOTE:
            return p + 1;
        case S_HIGH: {
            size_t n = cs_utf8_seq(p, (size_t)(end - p)); /* p[0] >= 0x80: never 1 */
            if (n == 0)
                return NULL;
            p += n;
            break;
        }
        case S_BACKSLASH:
            *escaped = 1;
            if (end - p < 2)
                return NULL;
            switch (p[1]) {
            case '"':
            case '\\':
            case '/':
            case 'b':
            case 'f':
            case 'n':
            case 'r':
            case 't':
                p += 2;
                break;
            case 'u': {
                long v = hex4(p + 2, end);
                /* jansson refuses \u0000 (a NUL inside a C string) and unpaired surrogates. */
                if (v <= 0 || (v >= 0xdc00 && v <= 0xdfff))
                    return NULL;
                p += 6;
                if (v >= 0xd800 && v <= 0xdbff) {
                    long w;
                    if (end - p < 2 || p[0] != '\\' || p[1] != 'u')
                        return NULL;
                    w = hex4(p + 2, end);
                    if (w < 0xdc00 || w > 0xdfff)
                        return NULL;
                    p += 6;
                }
                break;
            }
            default:
                return NULL;
            }
            break;
        default: /* a control character, NUL included */
            return NULL;
        }
    }
}

/*
 * Scans the number at p. Returns the position just after it, or NULL when it is not a number
 * jansson takes: RFC 8259's grammar, an integer within int64 (jansson stores integers as
 * json_int_t and refuses the rest), a real that strtod does not overflow. The number must be
 * followed by a byte that can follow a value inside a container, which also makes strtod stop at
 * its end without a NUL.
 */
static const unsigned char *scan_number(const unsigned char *p, const unsigned char *end)
{
    const unsigned char *start = p, *digits;
    int neg = 0, real = 0, exp = 0;
    size_t ndigits;

    if (*p == '-') {
        neg = 1;
        p++;
    }
    digits = p;
    if (p >= end)
        return NULL;
    if (*p == '0')
        p++;
    else if (*p >= '1' && *p <= '9')
        while (p < end && is_digit(*p))
            p++;
    else
        return NULL;
    ndigits = (size_t)(p - digits);
    if (p < end && *p == '.') {
        real = 1;
        if (++p >= end || !is_digit(*p))
            return NULL;
        while (p < end && is_digit(*p))
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        real = exp = 1;
        if (++p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || !is_digit(*p))
            return NULL;
        while (p < end && is_digit(*p))
            p++;
    }
    if (p >= end || !ends_scalar(*p))
        return NULL;
    if (!real) {
        /* No leading zeros: the digit count and then the digits order the magnitudes. */
        if (ndigits > 19 ||
            (ndigits == 19 && memcmp(digits, neg ? "9223372036854775808" : "9223372036854775807", 19) > 0))
            return NULL;
    } else if (exp || ndigits > 300) {
        /* Below 10^301 without an exponent nothing can overflow; otherwise ask strtod, as jansson
         * does (its jsonp_strtod refuses +-HUGE_VAL with ERANGE; underflow to 0 is accepted). */
        char *stop;
        double d;
        errno = 0;
        d = strtod((const char *)start, &stop);
        if ((const unsigned char *)stop != p || ((d == HUGE_VAL || d == -HUGE_VAL) && errno == ERANGE))
            return NULL;
    }
    return p;
}

/* Returns the index of the reported member named s[0..len), or -1. */
static int member_index(const unsigned char *s, size_t len)
{
    switch (len) {
    case 2:
        return memcmp(s, "op", 2) == 0 ? CS_JSCAN_OP : -1;
    case 3:
        return memcmp(s, "seq", 3) == 0 ? CS_JSCAN_SEQ : -1;
    case 4:
        return memcmp(s, "type", 4) == 0 ? CS_JSCAN_TYPE : -1;
    case 8:
        return memcmp(s, "event_id", 8) == 0 ? CS_JSCAN_EVENT_ID : -1;
    case 9:
        return memcmp(s, "timestamp", 9) == 0 ? CS_JSCAN_TIMESTAMP : -1;
    case 12:
        return memcmp(s, "execution_id", 12) == 0 ? CS_JSCAN_EXECUTION_ID : -1;
    default:
        return -1;
    }
}

/* Returns nonzero when the innermost open container (there are depth of them) is an object. */
static int in_object(const unsigned char *bits, unsigned depth)
{
    return (bits[(depth - 1) / 8] >> ((depth - 1) % 8)) & 1u;
}

static void record(cs_jscan_t *out, int field, const unsigned char *p, size_t len, int kind, int escaped)
{
    if (field < 0)
        return;
    out->f[field].p = (const char *)p;
    out->f[field].len = len;
    out->f[field].kind = (unsigned char)kind;
    out->f[field].escaped = (unsigned char)escaped;
}

int cs_jscan_object(const char *buf, size_t len, unsigned max_depth, cs_jscan_t *out)
{
    const unsigned char *p = (const unsigned char *)buf, *end = p + len, *q, *open_at = NULL;
    unsigned char is_object[CS_JSCAN_MAX_DEPTH / 8]; /* bit d: the container at depth d + 1 */
    unsigned depth = 0, seen = 0;
    int field = -1;      /* the reported member whose value comes next (at depth 1) */
    int open_field = -1; /* the reported member whose array or object value is open */
    int escaped;

    memset(out, 0, sizeof(*out));
    if (max_depth > CS_JSCAN_MAX_DEPTH)
        max_depth = CS_JSCAN_MAX_DEPTH;
    p = skip_ws(p, end, out);
    if (p >= end || *p != '{')
        return -EINVAL; /* a scalar, an array or nothing: jansson words the refusal */

/* The labels are the states of the scan: a value starts at p; a key starts at p; a value ended. */
value:
    if (p >= end)
        return -EINVAL;
    switch (*p) {
    case '{':
    case '[':
        if (depth >= max_depth)
            return -EINVAL;
        if (*p == '{')
            is_object[depth / 8] |= (unsigned char)(1u << (depth % 8));
        else
            is_object[depth / 8] &= (unsigned char)~(1u << (depth % 8));
        if (field >= 0) {
            open_field = field;
            open_at = p;
            field = -1;
        }
        depth++;
        p = skip_ws(p + 1, end, out);
        if (p < end && *p == (in_object(is_object, depth) ? '}' : ']'))
            goto close;
        if (in_object(is_object, depth))
            goto key;
        goto value;
    case '"':
        escaped = 0;
        q = scan_string(p + 1, end, &escaped);
        if (q == NULL)
            return -EINVAL;
        record(out, field, p + 1, (size_t)(q - 1 - (p + 1)), CS_JSCAN_STRING, escaped);
        break;
    case 't':
    case 'f':
    case 'n': {
        static const char *const words[] = {"true", "false", "null"};
        const char *w = words[*p == 't' ? 0 : *p == 'f' ? 1 : 2];
        size_t n = strlen(w);
        if ((size_t)(end - p) <= n || memcmp(p, w, n) != 0 || !ends_scalar(p[n]))
            return -EINVAL;
        q = p + n;
        record(out, field, p, n, *p == 'n' ? CS_JSCAN_NULL : CS_JSCAN_OTHER, 0);
        break;
    }
    default:
        if (*p != '-' && !is_digit(*p))
            return -EINVAL;
        q = scan_number(p, end);
        if (q == NULL)
            return -EINVAL;
        record(out, field, p, (size_t)(q - p), CS_JSCAN_OTHER, 0);
        break;
    }
    field = -1;
    p = q;

next:
    p = skip_ws(p, end, out);
    if (depth == 0)
        return p == end ? 0 : -EINVAL;
    if (p >= end)
        return -EINVAL;
    if (*p == ',') {
        p = skip_ws(p + 1, end, out);
        if (in_object(is_object, depth))
            goto key;
        goto value;
    }
    if (*p != (in_object(is_object, depth) ? '}' : ']'))
        return -EINVAL;

close: /* p at the closer of the innermost container */
    depth--;
    p++;
    if (depth == 1 && open_field >= 0) {
        record(out, open_field, open_at, (size_t)(p - open_at), CS_JSCAN_OTHER, 0);
        open_field = -1;
    }
    goto next;

key:
    if (p >= end || *p != '"')
        return -EINVAL;
    escaped = 0;
    q = scan_string(p + 1, end, &escaped);
    if (q == NULL)
        return -EINVAL;
    if (depth == 1) {
        if (escaped) {
            out->flags |= CS_JSCAN_KEY_ESCAPED;
        } else if ((field = member_index(p + 1, (size_t)(q - 1 - (p + 1)))) >= 0) {
            if (seen & (1u << field))
                out->flags |= CS_JSCAN_DUPLICATE;
            seen |= 1u << field;
        }
    }
    p = skip_ws(q, end, out);
    if (p >= end || *p != ':')
        return -EINVAL;
    p = skip_ws(p + 1, end, out);
    goto value;
}
