/*
 * jrecord.c - see jrecord.h.
 */
#include "jrecord.h"

#include <errno.h>
#include <string.h>

#include <xxhash.h>

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const unsigned char *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

/* The record checksum: the low 32 bits of xxHash's XXH3-64 of the payload (libxxhash; about ten times
 * zlib's crc32 on this machine's records, where crc32 was a tenth of ingest's time with a journal). */
static uint32_t crc(const unsigned char *p, size_t n)
{
    return (uint32_t)XXH3_64bits(p, n);
}

const char *cs_jrec_result_name(cs_jrec_result_t r)
{
    switch (r) {
    case CS_JREC_OK:
        return "ok";
    case CS_JREC_TORN:
        return "torn";
    case CS_JREC_BAD_CHECKSUM:
        return "bad checksum";
    case CS_JREC_BAD_RECORD:
        return "bad record";
    case CS_JREC_NEWER_VERSION:
        return "newer format version";
    }
    return "?";
}

int cs_jrec_header_encode(cs_buf_t *b, uint64_t first_record)
{
    return cs_jrec_header_encode_flags(b, first_record, 0);
}

int cs_jrec_header_encode_flags(cs_buf_t *b, uint64_t first_record, uint32_t flags)
{
    unsigned char h[CS_JREC_HEADER_SIZE];
    memcpy(h, CS_JREC_MAGIC, CS_JREC_MAGIC_LEN);
    put_u32(h + 8, CS_JREC_VERSION);
    put_u32(h + 12, flags);
    put_u64(h + 16, first_record);
    return cs_buf_append(b, h, sizeof(h));
}

cs_jrec_result_t cs_jrec_header_decode(const void *p, size_t n, uint32_t *version, uint64_t *first_record)
{
    const unsigned char *h = p;
    if (n < CS_JREC_HEADER_SIZE)
        return memcmp(h, CS_JREC_MAGIC, n < CS_JREC_MAGIC_LEN ? n : CS_JREC_MAGIC_LEN) != 0
                   ? CS_JREC_BAD_RECORD
                   : CS_JREC_TORN;
    if (memcmp(h, CS_JREC_MAGIC, CS_JREC_MAGIC_LEN) != 0)
        return CS_JREC_BAD_RECORD;
    *version = get_u32(h + 8);
    *first_record = get_u64(h + 16);
    if (*version > CS_JREC_VERSION)
        return CS_JREC_NEWER_VERSION;
    if (*version == 0 || (get_u32(h + 12) & ~CS_JREC_FLAGS_KNOWN) != 0)
        return CS_JREC_BAD_RECORD;
    return CS_JREC_OK;
}

uint32_t cs_jrec_header_flags(const void *p)
{
    return get_u32((const unsigned char *)p + 12);
}

#define FIXED_SIZE (4 + 4 + 8 + 8 + 8 + 8)

static size_t str_size(const char *s, size_t len)
{
    return s == NULL ? 4 : 4 + len + 1;
}

static size_t payload_size(const cs_change_t *c)
{
    const size_t lim = CS_JREC_MAX_PAYLOAD;
    size_t n = FIXED_SIZE;
    const char *s[4] = {c->exec, c->event_id, c->type, c->json};
    size_t l[4] = {c->exec_len, c->event_id_len, c->type_len, c->json_len};
    for (int i = 0; i < 4; i++) {
        if (s[i] != NULL && l[i] > lim)
            return 0;
        n += str_size(s[i], l[i]);
    }
    return n > lim ? 0 : n;
}

size_t cs_jrec_size(const cs_change_t *c)
{
    size_t n = payload_size(c);
    return n == 0 ? 0 : CS_JREC_FRAME_SIZE + n;
}

static unsigned char *put_str(unsigned char *p, const char *s, size_t len)
{
    if (s == NULL) {
        put_u32(p, CS_JREC_ABSENT);
        return p + 4;
    }
    put_u32(p, (uint32_t)len);
    if (len > 0)
        memcpy(p + 4, s, len);
    p[4 + len] = '\0';
    return p + 4 + len + 1;
}

int cs_jrec_encode(cs_buf_t *b, const cs_change_t *c)
{
    if ((c->kind < CS_CHANGE_EXEC_NEW || c->kind > CS_CHANGE_LAST) && !CS_JREC_IS_AUX(c->kind))
        return -EINVAL;
    size_t n = payload_size(c);
    if (n == 0)
        return -EMSGSIZE;
    int rc = cs_buf_reserve(b, CS_JREC_FRAME_SIZE + n);
    if (rc != 0)
        return rc;
    unsigned char *f = (unsigned char *)b->p + b->len, *p = f + CS_JREC_FRAME_SIZE, *q = p;
    put_u32(q, (uint32_t)c->kind);
    put_u32(q + 4, (uint32_t)c->status);
    put_u64(q + 8, c->epoch);
    put_u64(q + 16, c->seq);
    put_u64(q + 24, c->gseq);
    put_u64(q + 32, (uint64_t)c->unix_ms);
    q += FIXED_SIZE;
    q = put_str(q, c->exec, c->exec_len);
    q = put_str(q, c->event_id, c->event_id_len);
    q = put_str(q, c->type, c->type_len);
    q = put_str(q, c->json, c->json_len);
    put_u32(f, (uint32_t)n);
    put_u32(f + 4, crc(p, n));
    b->len += CS_JREC_FRAME_SIZE + n;
    b->p[b->len] = '\0';
    return 0;
}

/* Reads one string at *off of the n-byte payload p; 0, or -1 when it runs past the payload. */
static int get_str(const unsigned char *p, size_t n, size_t *off, const char **s, size_t *len)
{
    if (n - *off < 4)
        return -1;
    uint32_t l = get_u32(p + *off);
    *off += 4;
    if (l == CS_JREC_ABSENT) {
        *s = NULL;
        *len = 0;
        return 0;
    }
    if (l >= n - *off || p[*off + l] != '\0')
        return -1;
    *s = (const char *)p + *off;
    *len = l;
    *off += (size_t)l + 1;
    return 0;
}

cs_jrec_result_t cs_jrec_decode(const void *in, size_t n, cs_change_t *c, size_t *used)
{
    const unsigned char *f = in;
    *used = 0;
    if (n < CS_JREC_FRAME_SIZE)
        return CS_JREC_TORN;
    uint32_t len = get_u32(f);
    if (len > CS_JREC_MAX_PAYLOAD || len < FIXED_SIZE + 4 * 4)
        return CS_JREC_BAD_RECORD;
    if (n - CS_JREC_FRAME_SIZE < len)
        return CS_JREC_TORN;
    const unsigned char *p = f + CS_JREC_FRAME_SIZE;
    if (crc(p, len) != get_u32(f + 4))
        return CS_JREC_BAD_CHECKSUM;

    memset(c, 0, sizeof(*c));
    uint32_t kind = get_u32(p);
    if ((kind < CS_CHANGE_EXEC_NEW || kind > CS_CHANGE_LAST) && !CS_JREC_IS_AUX(kind))
        return CS_JREC_BAD_RECORD;
    c->kind = (cs_change_kind_t)kind;
    c->status = (int)(int32_t)get_u32(p + 4);
    c->epoch = get_u64(p + 8);
    c->seq = get_u64(p + 16);
    c->gseq = get_u64(p + 24);
    c->unix_ms = (int64_t)get_u64(p + 32);
    size_t off = FIXED_SIZE;
    if (get_str(p, len, &off, &c->exec, &c->exec_len) != 0 ||
        get_str(p, len, &off, &c->event_id, &c->event_id_len) != 0 ||
        get_str(p, len, &off, &c->type, &c->type_len) != 0 ||
        get_str(p, len, &off, &c->json, &c->json_len) != 0 || off != len)
        return CS_JREC_BAD_RECORD;
    *used = CS_JREC_FRAME_SIZE + (size_t)len;
    return CS_JREC_OK;
}
