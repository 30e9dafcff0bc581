/*
 * cursor.h - stream cursors: opaque to clients, they encode an execution's epoch
 * (fixed when its history began in this daemon) and an event's seq, so a cursor
 * from a history the daemon no longer has is recognised as such, and looking one
 * up costs O(1) (the ring index is seq - first_seq).
 *
 * Text form: "<epoch as 12 lower-case hex digits>-<seq in decimal>", e.g.
 * "0f3a9c2b7d41-42". Clients must not rely on it.
 */
#ifndef CS_CURSOR_H
#define CS_CURSOR_H

#include <stddef.h>
#include <stdint.h>

#define CS_CURSOR_MAX 40 /* bytes including the NUL */
#define CS_EPOCH_MASK 0xffffffffffffull

/** Writes v in decimal at out (at least 20 bytes, no NUL); returns the number of digits. */
size_t cs_fmt_u64(char *out, uint64_t v);

/** Writes the cursor of (epoch, seq) into buf (CS_CURSOR_MAX bytes); returns its length. */
size_t cs_cursor_format(char *buf, size_t buflen, uint64_t epoch, uint64_t seq);

/** Parses a cursor; returns 0 and fills epoch and seq, or -EINVAL when s is not a cursor. */
int cs_cursor_parse(const char *s, size_t len, uint64_t *epoch, uint64_t *seq);

/** Parses a bare seq (1-20 decimal digits, no sign, fits uint64); returns 0 or -EINVAL. */
int cs_seq_parse(const char *s, size_t len, uint64_t *seq);

/** Returns a fresh, non-zero 48-bit epoch: random at first, then incremented, so never repeated within
 * one run of the daemon. */
uint64_t cs_epoch_next(void);

#endif
