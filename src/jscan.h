/*
 * jscan.h - a strict, validating, single-pass scan of one ingest line holding one JSON object.
 *
 * The scan accepts exactly what cs_line_parse accepts (jansson's json_loadb, an object, nested no
 * deeper than the limit) and hands back, without allocating, where the few top-level members the
 * daemon reads lie in the line. It lets the ingest path skip building a jansson tree of the whole
 * event when the daemon needs nothing from it but those members. Pure: no I/O, no global state.
 */
#ifndef CS_JSCAN_H
#define CS_JSCAN_H

#include <stddef.h>

/** jansson's own nesting limit (JSON_PARSER_MAX_DEPTH): no larger max_depth is honoured. */
#define CS_JSCAN_MAX_DEPTH 2048

/** The top-level members the scan reports, as indexes into cs_jscan_t.f. */
enum cs_jscan_index {
    CS_JSCAN_EXECUTION_ID,
    CS_JSCAN_TYPE,
    CS_JSCAN_EVENT_ID,
    CS_JSCAN_TIMESTAMP,
    CS_JSCAN_SEQ,
    CS_JSCAN_OP,
    CS_JSCAN_N_MEMBERS
};

/** What a reported member holds. */
enum cs_jscan_kind {
    CS_JSCAN_ABSENT = 0, /* not in the object */
    CS_JSCAN_STRING,     /* a string: [p, p + len) is its text between the quotes, as written */
    CS_JSCAN_NULL,       /* JSON null */
    CS_JSCAN_OTHER,      /* a number, a boolean, an array or an object: [p, p + len) is its text */
};

/** One reported member; for a member that occurs more than once, its last occurrence (as jansson). */
typedef struct cs_jscan_member {
    const char *p;
    size_t len;
    unsigned char kind;    /* enum cs_jscan_kind */
    unsigned char escaped; /* a string holding a backslash escape: [p, p + len) is not its value */
} cs_jscan_member_t;

/** Flags of cs_jscan_t.flags. */
#define CS_JSCAN_DUPLICATE   0x1u /* one of the reported members occurs more than once */
#define CS_JSCAN_KEY_ESCAPED 0x2u /* a top-level key holds an escape: it may spell a reported name */
#define CS_JSCAN_CRLF        0x4u /* CR or LF used as white space between tokens */

/** The result of a scan. */
typedef struct cs_jscan {
    cs_jscan_member_t f[CS_JSCAN_N_MEMBERS];
    unsigned flags;
} cs_jscan_t;

/**
 * Scans buf[0..len) as one JSON text that must be an object nested at most max_depth deep (arrays
 * and objects counted as cs_json_depth_ok counts them; never deeper than CS_JSCAN_MAX_DEPTH). The
 * text is judged as jansson 2.14's json_loadb judges it: RFC 8259 syntax, well-formed UTF-8 (no
 * overlong forms, no encoded surrogates, nothing above U+10FFFF), no control characters or NUL
 * bytes in strings, no \u0000 escape, escaped surrogates only in pairs, integers within int64 and
 * real numbers that do not overflow a double. Top-level keys written with escapes are not matched
 * against the reported names (CS_JSCAN_KEY_ESCAPED says so). *out is meaningful only on success.
 * Returns 0, or -EINVAL when the line is not such an object (the caller asks jansson why).
 */
int cs_jscan_object(const char *buf, size_t len, unsigned max_depth, cs_jscan_t *out);

#endif
