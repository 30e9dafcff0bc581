/*
 * jrecord.h - the journal's bytes (SPEC §8), pure: no I/O, no state.
 *
 * A segment file is a header followed by records:
 *
 *   header  = "CSJOURN\n" (8 bytes) | version u32 | flags u32 | first record number u64   (24 bytes)
 *   flags   = bit 0 (CS_JREC_FLAG_SNAPSHOT): the segment begins with a snapshot (SNAP_BEGIN ... SNAP_END);
 *             other bits are 0
 *   record  = payload length u32 | checksum u32 (low 32 bits of XXH3-64 of the payload, libxxhash) | payload
 *   payload = kind u32 | status i32 | epoch u64 | seq u64 | gseq u64 | unix_ms i64
 *             | exec | event_id | type | json
 *   string  = length u32 (0xffffffff: absent, no bytes follow) | bytes | NUL
 *
 * Every integer is little-endian. The encoding is canonical: a decoded record encodes back to exactly
 * its bytes. A decoder never reads outside its input and accepts no payload longer than
 * CS_JREC_MAX_PAYLOAD, no string running past its payload, no missing NUL, no bytes after the last
 * string and no kind outside cs_change_kind_t or the module range below.
 *
 * Module records: kinds CS_JREC_AUX_FIRST..CS_JREC_AUX_LAST carry the state of modules other than the store
 * (webhook registrations and delivery cursors: whrec.h) in the same payload layout. The store never sees
 * them: persist.c hands them to the module that owns them (cs_persist_set_module).
 */
#ifndef CS_JRECORD_H
#define CS_JRECORD_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "store.h"

#define CS_JREC_MAGIC       "CSJOURN\n"
#define CS_JREC_MAGIC_LEN   8
#define CS_JREC_VERSION     1u
#define CS_JREC_HEADER_SIZE 24
#define CS_JREC_FRAME_SIZE  8
/** The longest payload written or read: far above any event store.max_bytes admits (limits.max_event_bytes
 * is 1 MiB by default), low enough that a corrupt length cannot make a reader allocate gigabytes. */
#define CS_JREC_MAX_PAYLOAD (64u << 20)
/** The kinds of module records (not store changes): 256..511; whrec.h names the webhook ones. */
#define CS_JREC_AUX_FIRST 256
#define CS_JREC_AUX_LAST  511
/** Nonzero for a kind in the module range. */
#define CS_JREC_IS_AUX(k) ((unsigned)(k) >= CS_JREC_AUX_FIRST && (unsigned)(k) <= CS_JREC_AUX_LAST)
/** A string's length that says it is absent (a NULL pointer in cs_change_t). */
#define CS_JREC_ABSENT 0xffffffffu

typedef enum cs_jrec_result {
    CS_JREC_OK = 0,
    CS_JREC_TORN,          /* the input ends inside the header or the record: an incomplete tail */
    CS_JREC_BAD_CHECKSUM,  /* the payload's checksum is not the one recorded */
    CS_JREC_BAD_RECORD,    /* a length past the maximum, a malformed payload, a header that is not ours */
    CS_JREC_NEWER_VERSION, /* a header of a format version this build does not know */
} cs_jrec_result_t;

/** The result's name ("ok", "torn", "bad checksum", "bad record", "newer format version"). */
const char *cs_jrec_result_name(cs_jrec_result_t r);

#define CS_JREC_FLAG_SNAPSHOT 1u
#define CS_JREC_FLAGS_KNOWN   CS_JREC_FLAG_SNAPSHOT

/** Appends a segment header naming its first record number to b (flags 0). Returns 0 or a cs_buf error. */
int cs_jrec_header_encode(cs_buf_t *b, uint64_t first_record);

/** cs_jrec_header_encode with flags. */
int cs_jrec_header_encode_flags(cs_buf_t *b, uint64_t first_record, uint32_t flags);

/** The flags of a header cs_jrec_header_decode accepted. */
uint32_t cs_jrec_header_flags(const void *p);

/** Reads a segment header from the n bytes at p: CS_JREC_OK with *version and *first_record, TORN (n is
 * shorter than a header), BAD_RECORD (not our magic, an unknown flag, version 0) or NEWER_VERSION (*version
 * names it). */
cs_jrec_result_t cs_jrec_header_decode(const void *p, size_t n, uint32_t *version, uint64_t *first_record);

/** The bytes cs_jrec_encode appends for c, or 0 when c's payload would exceed CS_JREC_MAX_PAYLOAD. */
size_t cs_jrec_size(const cs_change_t *c);

/** Appends one record (frame and payload) for c to b (nothing on failure). Returns 0, -EMSGSIZE past
 * CS_JREC_MAX_PAYLOAD or b's maximum, -ENOMEM or -EINVAL (a kind outside cs_change_kind_t and the module
 * range). c->ticket is
 * not recorded (it names a publish inside one process only). */
int cs_jrec_encode(cs_buf_t *b, const cs_change_t *c);

/**
 * Decodes the record at the start of the n bytes at p. CS_JREC_OK: *c describes it (its strings point
 * into p, each NUL-terminated there; an absent one is NULL with length 0; ticket 0) and *used is its
 * size (frame and payload). Otherwise *used is 0 and nothing in *c is meaningful: TORN (n ends inside
 * the record), BAD_CHECKSUM, or BAD_RECORD (length past the maximum, malformed payload).
 */
cs_jrec_result_t cs_jrec_decode(const void *p, size_t n, cs_change_t *c, size_t *used);

#endif
