/*
 * lines.h - newline-delimited framing for the ingest socket (SPEC §3): bytes in,
 * complete lines out, whatever sizes the reads come in.
 *
 * A line is at most max bytes, plus one byte of slack for a CR before its LF
 * (the parser strips it). A longer one is reported once, as too large, as soon
 * as it is known to be, and the rest of it up to its newline is skipped: one
 * answer per line, and the connection goes on. A line that ends at end of input
 * without its newline is still a line (printf | nc -U). Pure: no I/O, so it is
 * unit-tested and fuzzed.
 */
#ifndef CS_LINES_H
#define CS_LINES_H

#include <stddef.h>

#include "buf.h"

typedef struct cs_lines {
    cs_buf_t part; /* a line begun in an earlier read */
    size_t max;    /* longest line, without its LF and an optional CR (may change between feeds) */
    size_t keep;   /* capacity kept for the partial line between long lines */
    int skipping;  /* past a too-large line's start: dropping bytes up to its LF */
} cs_lines_t;

/**
 * Called per line (line, len; not NUL-terminated, without its LF) or per too-large line (line NULL,
 * len 0). Returns 0 to go on, 1 to stop after this line (the producer must read its replies first),
 * or -1 to stop at once (the connection is closing).
 */
typedef int (*cs_lines_cb)(void *arg, const char *line, size_t len);

/** Starts a framer for lines of at most max bytes; keep: capacity worth keeping between lines. */
void cs_lines_init(cs_lines_t *l, size_t max, size_t keep);

/** Frees what the framer holds. */
void cs_lines_free(cs_lines_t *l);

/**
 * Feeds n bytes. Returns how many were used: all of them, unless a callback asked to stop (then up to
 * and including the LF of the line it was called for; call again with the rest later). A line begun
 * in data is copied only when it does not end in it. *err is 0, or -ENOMEM when a partial line could
 * not be kept (the bytes used before it are returned; the connection cannot go on).
 */
size_t cs_lines_feed(cs_lines_t *l, const char *data, size_t n, cs_lines_cb cb, void *arg, int *err);

/** End of input: hands a last line without its LF to cb (unless it was too large), and resets. */
void cs_lines_end(cs_lines_t *l, cs_lines_cb cb, void *arg);

#endif
