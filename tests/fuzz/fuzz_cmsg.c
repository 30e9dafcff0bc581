/*
 * fuzz_cmsg.c - what Redis sends a node (cmsg.c), from arbitrary bytes: the bytes are read as a channel
 * message (one event, or a batch walked to its end), as a receipt and as a node's report, and also fed to
 * hiredis' own RESP reader; every reply it makes is read as a pub/sub message, as the publish script's answer
 * (for every count of events it could be), and as an XRANGE answer. Nothing read may point outside the input
 * or the reply.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "../../src/cmsg.c"
#include "../../src/cursor.c"
#include "../../src/err.c"
#include "../../src/event.c"
#include "../../src/log.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void inside(const char *p, size_t n, const char *base, size_t len)
{
    if (p < base || p + n > base + len)
        abort();
}

/* A batch message: checked whole, then walked as on_message does; every event inside the bytes, the seqs
 * of a group consecutive. */
static void read_batch(const char *p, size_t n)
{
    size_t count, k = 0;
    cs_cmsg_iter_t it;
    cs_cmsg_t m, prev = {0};

    if (cs_cmsg_batch(p, n, &count, &it) != 0)
        return;
    if (count == 0)
        abort();
    while (cs_cmsg_next(&it, &m) == 0) {
        inside(m.exec, m.exec_len, p, n);
        inside(m.json, m.json_len, p, n);
        if (m.epoch == 0 || m.seq == 0 || m.epoch > CS_EPOCH_MASK || it.off > n || m.json_len == 0)
            abort();
        if (it.grouped && k > 0 && m.exec == prev.exec && m.seq != prev.seq + 1)
            abort();
        prev = m;
        k++;
    }
    if (k != count || it.off != n)
        abort(); /* what cs_cmsg_batch accepted walks to its end, exactly */
}

static void read_reply(const redisReply *r)
{
    const char *p;
    size_t n;
    cs_cmsg_t m;
    cs_cmsg_result_t res[8];

    if (cs_cmsg_pubsub(r, &p, &n) == 1) {
        inside(p, n, r->element[2]->str, r->element[2]->len);
        if (cs_cmsg_parse(p, n, &m) == 0) {
            inside(m.exec, m.exec_len, p, n);
            inside(m.json, m.json_len, p, n);
            if (m.epoch == 0 || m.seq == 0 || m.epoch > CS_EPOCH_MASK || m.json_len == 0)
                abort();
        }
        read_batch(p, n);
    }
    for (size_t k = 0; k <= 8; k++)
        if (cs_cmsg_script_reply(r, k, res) == 0)
            for (size_t i = 0; i < k; i++)
                if (res[i].seq == 0 || res[i].epoch == 0 || res[i].duplicate > 1)
                    abort();
    if (r->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i < r->elements; i++) {
            int n = cs_cmsg_xrange_count(r, i);
            static cs_cmsg_entry_t e[CS_CMSG_ENTRY_MAX];
            uint64_t prev = 0;
            if (n == 0 || n > CS_CMSG_ENTRY_MAX)
                abort();
            if (n > 0)
                cs_cmsg_xrange_events(r, i, e);
            for (int k = 0; k < n; k++) {
                if (e[k].seq <= prev || e[k].json_len == 0)
                    abort(); /* ascending, each with its JSON */
                prev = e[k].seq;
            }
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cs_cmsg_t m;
    redisReader *rd;
    void *reply;

    /* The event time a node takes from an event's timestamp (cluster.c): what it reads is written back
     * the same. */
    int64_t t;
    if (cs_parse_timestamp((const char *)data, size, &t) == 0) {
        char back[32];
        cs_format_timestamp(t, back, sizeof(back));
        if (size == 24 && memcmp(back, data, 11) != 0 && memcmp(data + 5, "02-29", 5) != 0)
            abort();
        if (memcmp(back + 11, data + 11, 13) != 0)
            abort();
    }
    if (cs_cmsg_parse((const char *)data, size, &m) == 0) {
        inside(m.exec, m.exec_len, (const char *)data, size);
        inside(m.json, m.json_len, (const char *)data, size);
    }
    read_batch((const char *)data, size);
    /* A receipt (a publish whose reply was lost): every event of it reads as a positive seq and epoch. */
    for (size_t i = 0; i < 64; i++) {
        cs_cmsg_result_t res;
        if (cs_cmsg_receipt((const char *)data, size, i, &res) != 0)
            break;
        if (res.seq == 0 || res.epoch == 0 || res.epoch > CS_EPOCH_MASK || res.duplicate > 1)
            abort();
    }
    /* A node's report: what reads writes back the same. */
    {
        cs_cmsg_node_t f;
        if (cs_cmsg_node((const char *)data, size, &f) == 0) {
            char back[256];
            int n = snprintf(back, sizeof(back), "1 %llu %llu %llu %llu %llu %llu %llu %llu",
                             (unsigned long long)f.ms, (unsigned long long)f.published,
                             (unsigned long long)f.failed, (unsigned long long)f.inserted,
                             (unsigned long long)f.lost, (unsigned long long)f.history_failed,
                             (unsigned long long)f.subscribers, (unsigned long long)f.executions);
            if (n < 0 || (size_t)n != size || memcmp(back, data, size) != 0)
                abort();
        }
    }
    /* hiredis 0.14's reader allocates an array's element table from its header, without a limit (the
     * Redis a node talks to is its own): headers of 10000 elements or more are left out here. */
    for (size_t i = 0; i + 5 < size; i++)
        if (data[i] == '*' && data[i + 1] >= '0' && data[i + 1] <= '9' && data[i + 2] >= '0' &&
            data[i + 2] <= '9' && data[i + 3] >= '0' && data[i + 3] <= '9' && data[i + 4] >= '0' &&
            data[i + 4] <= '9' && data[i + 5] >= '0' && data[i + 5] <= '9')
            return 0;
    rd = redisReaderCreate();
    if (rd == NULL)
        return 0;
    if (redisReaderFeed(rd, (const char *)data, size) == REDIS_OK) {
        for (int i = 0; i < 64; i++) {
            reply = NULL;
            if (redisReaderGetReply(rd, &reply) != REDIS_OK || reply == NULL)
                break;
            read_reply(reply);
            freeReplyObject(reply);
        }
    }
    redisReaderFree(rd);
    return 0;
}
