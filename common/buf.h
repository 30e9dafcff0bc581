/*
 * buf.h - the one growable byte buffer, with a maximum.
 *
 * Every buffer that grows with what a peer sends or is sent (a producer's
 * replies, a request body, a long-poll answer, a CLI download, the client
 * library's input) is a cs_buf_t with a stated maximum: a write past it fails
 * with -EMSGSIZE and leaves the buffer as it was, so the caller answers the
 * peer instead of growing without bound or dropping bytes unseen. Shared by the
 * daemon, the client library and the command-line tool.
 */
#ifndef CS_BUF_H
#define CS_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct cs_buf {
    char *p;    /* NUL-terminated when not NULL (the NUL is not counted in len) */
    size_t len; /* bytes held */
    size_t off; /* bytes already consumed from the front (p + off is the next unread byte) */
    size_t cap; /* bytes allocated */
    size_t max; /* most bytes it may hold (len - off, without the NUL); 0 = no limit */
} cs_buf_t;

/** Starts an empty buffer that may hold at most max bytes (0: no limit); allocates nothing. */
void cs_buf_init(cs_buf_t *b, size_t max);

/** Frees what the buffer holds and empties it (its maximum stays). */
void cs_buf_free(cs_buf_t *b);

/** Bytes not yet consumed. */
static inline size_t cs_buf_size(const cs_buf_t *b)
{
    return b->len - b->off;
}

/** The first unconsumed byte (valid until the next write), or "" when empty. */
static inline const char *cs_buf_data(const cs_buf_t *b)
{
    return b->p != NULL ? b->p + b->off : "";
}

/** Makes room for n more bytes; returns 0, -EMSGSIZE past the maximum, or -ENOMEM. */
int cs_buf_reserve(cs_buf_t *b, size_t n);

/** Appends n bytes; returns 0, -EMSGSIZE past the maximum (nothing appended), or -ENOMEM. */
int cs_buf_append(cs_buf_t *b, const void *data, size_t n);

/** Appends a NUL-terminated string; as cs_buf_append. */
int cs_buf_puts(cs_buf_t *b, const char *s);

/** Appends printf-style; as cs_buf_append (nothing appended on failure). */
int cs_buf_printf(cs_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int cs_buf_vprintf(cs_buf_t *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

/** Room to read into without a copy: *p gets at least 1 and at most want free bytes past the end
 * (their count in *avail), growing within the maximum. Returns 0, -EMSGSIZE when the buffer is at
 * its maximum, or -ENOMEM. Follow with cs_buf_commit. */
int cs_buf_space(cs_buf_t *b, size_t want, char **p, size_t *avail);

/** Counts n bytes written at cs_buf_space's pointer as held. */
void cs_buf_commit(cs_buf_t *b, size_t n);

/** Keeps the first n unconsumed bytes (n <= cs_buf_size) and drops the rest. */
void cs_buf_truncate(cs_buf_t *b, size_t n);

/** Marks n bytes at the front as consumed (n <= cs_buf_size); the space is reused once all is. */
void cs_buf_consume(cs_buf_t *b, size_t n);

/** Hands the bytes to the caller (NUL-terminated; free() them) and empties the buffer. Returns NULL
 * when empty, with *len 0. */
char *cs_buf_steal(cs_buf_t *b, size_t *len);

/** Releases memory beyond keep bytes of capacity when the buffer is empty (after a burst). */
void cs_buf_shrink(cs_buf_t *b, size_t keep);

#endif
