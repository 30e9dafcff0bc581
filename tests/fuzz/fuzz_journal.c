/*
 * fuzz_journal.c - arbitrary bytes read as a journal segment (jrecord.h): a header, then records until
 * the first that does not decode; once as they come and once with every frame's checksum made right.
 * Nothing may crash or read outside the input, and every record that decodes must encode back to
 * exactly its bytes (the format is canonical), as must the header. Module records of webhooks out
 * (whrec.h: registrations, delivery cursors, discovery's position) also go through cs_whrec_decode, their
 * one reader: what it accepts is within bounds, and a registration's URLs encode back to the same.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/buf.c"
#include "../../src/jrecord.c"
#include "../../src/whrec.c"

/* A webhook record through its reader (whrec.h). */
static void read_whrec(const cs_change_t *c)
{
    cs_whrec_t r, r2;
    char detail[160];

    if (cs_whrec_decode(c, &r, detail, sizeof(detail)) != 0) {
        if (r.json != NULL || detail[0] == '\0')
            abort();
        return;
    }
    if (r.kind != (int)c->kind)
        abort();
    if (r.kind != CS_WHREC_DISC && (r.exec == NULL || r.exec_len == 0 || r.exec_len > CS_EXECUTION_ID_MAX ||
                                    strlen(r.exec) != r.exec_len))
        abort();
    if (r.kind == CS_WHREC_CURSOR &&
        (r.endpoint == NULL || r.endpoint_len > CS_WHREC_NAME_MAX || (r.closed | r.registered) > 1))
        abort();
    if (r.kind == CS_WHREC_REG) {
        char *json = cs_whrec_reg_json(r.url, r.auth);
        if (json != NULL) {
            cs_change_t c2 = *c;
            c2.json = json;
            c2.json_len = strlen(json);
            if (cs_whrec_decode(&c2, &r2, detail, sizeof(detail)) != 0)
                abort();
            for (int k = 0; k < CS_WHREC_KINDS; k++) {
                if ((r.url[k] == NULL) != (r2.url[k] == NULL) ||
                    (r.auth[k] == NULL) != (r2.auth[k] == NULL) ||
                    (r.url[k] != NULL && strcmp(r.url[k], r2.url[k]) != 0) ||
                    (r.auth[k] != NULL && strcmp(r.auth[k], r2.auth[k]) != 0) ||
                    (r.auth[k] != NULL && strpbrk(r.auth[k], "\r\n") != NULL))
                    abort();
            }
            cs_whrec_release(&r2);
            free(json);
        }
    }
    cs_whrec_release(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void read_segment(const uint8_t *data, size_t size)
{
    uint32_t version;
    uint64_t first;
    size_t off = 0;
    cs_buf_t b;

    cs_buf_init(&b, 0);
    cs_jrec_result_t r = cs_jrec_header_decode(data, size, &version, &first);
    if (r == CS_JREC_OK) {
        if (version != CS_JREC_VERSION ||
            cs_jrec_header_encode_flags(&b, first, cs_jrec_header_flags(data)) != 0 ||
            memcmp(b.p, data, CS_JREC_HEADER_SIZE) != 0)
            abort();
        off = CS_JREC_HEADER_SIZE;
    } else if (r == CS_JREC_NEWER_VERSION && version <= CS_JREC_VERSION) {
        abort();
    }
    /* Without a valid header the bytes are read as records from the start: the fuzzer reaches the record
     * decoder either way. */
    for (;;) {
        cs_change_t c;
        size_t used = 0;
        r = cs_jrec_decode(data + off, size - off, &c, &used);
        if (r != CS_JREC_OK) {
            if (used != 0)
                abort();
            break;
        }
        if (used < CS_JREC_FRAME_SIZE || used > size - off)
            abort();
        /* Strings lie inside the input and are NUL-terminated there. */
        const char *s[4] = {c.exec, c.event_id, c.type, c.json};
        size_t l[4] = {c.exec_len, c.event_id_len, c.type_len, c.json_len};
        for (int i = 0; i < 4; i++) {
            if (s[i] == NULL) {
                if (l[i] != 0)
                    abort();
                continue;
            }
            if ((const uint8_t *)s[i] < data + off || (const uint8_t *)s[i] + l[i] >= data + off + used ||
                s[i][l[i]] != '\0')
                abort();
        }
        if (CS_JREC_IS_AUX(c.kind))
            read_whrec(&c);
        cs_buf_free(&b);
        if (cs_jrec_encode(&b, &c) != 0 || cs_buf_size(&b) != used || cs_jrec_size(&c) != used ||
            memcmp(cs_buf_data(&b), data + off, used) != 0)
            abort();
        off += used;
    }
    cs_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    read_segment(data, size);
    /* Again with every frame's checksum made right, so that mutated payloads reach the payload decoder. */
    uint8_t *copy = malloc(size ? size : 1);
    if (copy == NULL)
        return 0;
    if (size > 0)
        memcpy(copy, data, size);
    uint32_t version;
    uint64_t first;
    size_t off = cs_jrec_header_decode(copy, size, &version, &first) == CS_JREC_OK ? CS_JREC_HEADER_SIZE : 0;
    while (size - off >= CS_JREC_FRAME_SIZE) {
        uint32_t len = get_u32(copy + off);
        if (len > size - off - CS_JREC_FRAME_SIZE)
            break;
        put_u32(copy + off + 4, crc(copy + off + CS_JREC_FRAME_SIZE, len));
        off += CS_JREC_FRAME_SIZE + len;
    }
    read_segment(copy, size);
    free(copy);
    return 0;
}
