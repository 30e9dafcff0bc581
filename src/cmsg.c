/*
 * cmsg.c - the cluster's wire, read (see cmsg.h).
 */
#include "cmsg.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

#include "cursor.h"
#include "event.h"

/* A decimal in [1, max]: digits only, no sign or leading zero. */
static int dec(const char *p, size_t n, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;

    if (n == 0 || n > 20 || p[0] == '0')
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        unsigned d;
        if (p[i] < '0' || p[i] > '9')
            return -EINVAL;
        d = (unsigned)(p[i] - '0');
        /* Up to 19 digits cannot overflow 64 bits: the division (slow, and every event's seq, epoch and
         * length go through here) only for the 20th. */
        if (i == 19 && v > (UINT64_MAX - d) / 10)
            return -EINVAL;
        v = v * 10 + d;
    }
    if (v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

int cs_cmsg_parse(const char *p, size_t n, cs_cmsg_t *m)
{
    const char *sp1, *sp2, *nl, *end = p + n;

    if (p == NULL || n == 0)
        return -EINVAL;
    sp1 = memchr(p, ' ', n);
    if (sp1 == NULL || dec(p, (size_t)(sp1 - p), CS_EPOCH_MASK, &m->epoch) != 0)
        return -EINVAL;
    sp2 = memchr(sp1 + 1, ' ', (size_t)(end - sp1 - 1));
    if (sp2 == NULL || dec(sp1 + 1, (size_t)(sp2 - sp1 - 1), UINT64_MAX, &m->seq) != 0)
        return -EINVAL;
    nl = memchr(sp2 + 1, '\n', (size_t)(end - sp2 - 1));
    if (nl == NULL)
        return -EINVAL;
    m->exec = sp2 + 1;
    m->exec_len = (size_t)(nl - sp2 - 1);
    if (!cs_valid_execution_id(m->exec, m->exec_len))
        return -EINVAL;
    m->json = nl + 1;
    m->json_len = (size_t)(end - nl - 1);
    return m->json_len > 0 ? 0 : -EINVAL;
}

int cs_cmsg_next(const char *p, size_t n, size_t *off, cs_cmsg_t *m)
{
    const char *s, *end = p + n, *sp;
    uint64_t len;

    if (p == NULL || *off >= n)
        return -EINVAL;
    s = p + *off;
    if ((sp = memchr(s, ' ', (size_t)(end - s))) == NULL ||
        dec(s, (size_t)(sp - s), CS_EPOCH_MASK, &m->epoch) != 0)
        return -EINVAL;
    s = sp + 1;
    if ((sp = memchr(s, ' ', (size_t)(end - s))) == NULL ||
        dec(s, (size_t)(sp - s), UINT64_MAX, &m->seq) != 0)
        return -EINVAL;
    s = sp + 1;
    if ((sp = memchr(s, ' ', (size_t)(end - s))) == NULL || !cs_valid_execution_id(s, (size_t)(sp - s)))
        return -EINVAL;
    m->exec = s;
    m->exec_len = (size_t)(sp - s);
    s = sp + 1;
    if ((sp = memchr(s, '\n', (size_t)(end - s))) == NULL ||
        dec(s, (size_t)(sp - s), UINT64_MAX, &len) != 0 || len > (uint64_t)(end - sp - 1))
        return -EINVAL;
    m->json = sp + 1;
    m->json_len = (size_t)len;
    *off = (size_t)(m->json + len - p);
    return 0;
}

int cs_cmsg_batch(const char *p, size_t n, size_t *count, size_t *off)
{
    const char *nl;
    uint64_t k;
    size_t o;
    cs_cmsg_t m;

    if (p == NULL || n < 2 || p[0] != '*' || (nl = memchr(p, '\n', n)) == NULL ||
        dec(p + 1, (size_t)(nl - p - 1), n, &k) != 0)
        return -EINVAL;
    o = (size_t)(nl - p + 1);
    for (uint64_t i = 0; i < k; i++)
        if (cs_cmsg_next(p, n, &o, &m) != 0)
            return -EINVAL;
    if (o != n)
        return -EINVAL;
    *count = (size_t)k;
    *off = (size_t)(nl - p + 1);
    return 0;
}

static int is_str(const redisReply *r, const char *s)
{
    return r != NULL && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) &&
           r->len == strlen(s) && memcmp(r->str, s, r->len) == 0;
}

int cs_cmsg_pubsub(const redisReply *r, const char **p, size_t *n)
{
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 3)
        return 0;
    if (is_str(r->element[0], "message") && r->element[2] != NULL &&
        r->element[2]->type == REDIS_REPLY_STRING) {
        *p = r->element[2]->str;
        *n = r->element[2]->len;
        return 1;
    }
    if (is_str(r->element[0], "subscribe"))
        return 2;
    return 0;
}

static int receipt_all(const char *p, size_t n, size_t count, cs_cmsg_result_t *out);

int cs_cmsg_script_reply(const redisReply *r, size_t n, cs_cmsg_result_t *out)
{
    if (r != NULL && r->type == REDIS_REPLY_STRING)
        return receipt_all(r->str, r->len, n, out);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 * n)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        const redisReply *s = r->element[2 * i], *e = r->element[2 * i + 1];
        if (s == NULL || s->type != REDIS_REPLY_INTEGER || s->integer == 0 || s->integer == LLONG_MIN ||
            e == NULL || e->type != REDIS_REPLY_INTEGER || e->integer <= 0 ||
            (unsigned long long)e->integer > CS_EPOCH_MASK)
            return -EINVAL;
        out[i].duplicate = s->integer < 0;
        out[i].seq = (uint64_t)(s->integer < 0 ? -s->integer : s->integer);
        out[i].epoch = (uint64_t)e->integer;
    }
    return 0;
}

/* The next space-separated token of p[*off, n) (empty: -EINVAL). */
static int token(const char *p, size_t n, size_t *off, const char **t, size_t *len)
{
    size_t s = *off, e = s;

    while (e < n && p[e] != ' ')
        e++;
    if (e == s)
        return -EINVAL;
    *t = p + s;
    *len = e - s;
    *off = e < n ? e + 1 : e;
    return e + 1 == n ? -EINVAL : 0; /* a trailing space */
}

int cs_cmsg_receipt(const char *p, size_t n, size_t i, cs_cmsg_result_t *out)
{
    size_t off = 0;

    if (p == NULL)
        return -EINVAL;
    for (size_t k = 0; k <= i; k++) {
        const char *s, *e;
        size_t sl, el;
        uint64_t seq, epoch;
        int dup;
        if (token(p, n, &off, &s, &sl) != 0 || token(p, n, &off, &e, &el) != 0)
            return -EINVAL;
        dup = s[0] == '-';
        if (dec(s + dup, sl - (size_t)dup, INT64_MAX, &seq) != 0 || dec(e, el, CS_EPOCH_MASK, &epoch) != 0)
            return -EINVAL;
        if (k == i) {
            out->seq = seq;
            out->epoch = epoch;
            out->duplicate = dup;
        }
    }
    return 0;
}

/* Reads a whole receipt of exactly count events into out[0..count), in one pass. */
static int receipt_all(const char *p, size_t n, size_t count, cs_cmsg_result_t *out)
{
    size_t off = 0;

    if (p == NULL || count == 0)
        return -EINVAL;
    for (size_t k = 0; k < count; k++) {
        const char *s, *e;
        size_t sl, el;
        int dup;
        if (token(p, n, &off, &s, &sl) != 0 || token(p, n, &off, &e, &el) != 0)
            return -EINVAL;
        dup = s[0] == '-';
        if (dec(s + dup, sl - (size_t)dup, INT64_MAX, &out[k].seq) != 0 || out[k].seq == 0 ||
            dec(e, el, CS_EPOCH_MASK, &out[k].epoch) != 0 || out[k].epoch == 0)
            return -EINVAL;
        out[k].duplicate = dup;
    }
    return off == n ? 0 : -EINVAL;
}

/* The [field, value, ...] array of element i of an XRANGE reply and its id's seq, or NULL. */
static const redisReply *xrange_fields(const redisReply *r, size_t i, uint64_t *id_seq)
{
    const redisReply *it, *id, *fv;

    if (r == NULL || r->type != REDIS_REPLY_ARRAY || i >= r->elements)
        return NULL;
    it = r->element[i];
    if (it == NULL || it->type != REDIS_REPLY_ARRAY || it->elements != 2)
        return NULL;
    id = it->element[0];
    fv = it->element[1];
    if (id == NULL || id->type != REDIS_REPLY_STRING || id->len < 3 || id->str[id->len - 2] != '-' ||
        id->str[id->len - 1] != '0' || dec(id->str, id->len - 2, UINT64_MAX, id_seq) != 0 || *id_seq == 0)
        return NULL;
    if (fv == NULL || fv->type != REDIS_REPLY_ARRAY || fv->elements % 2 != 0 || fv->elements == 0)
        return NULL;
    for (size_t k = 0; k < fv->elements; k++)
        if (fv->element[k] == NULL || fv->element[k]->type != REDIS_REPLY_STRING)
            return NULL;
    return fv;
}

/* Whether fv is the one-event shape: exactly the field j (what the script wrote before session 10). */
static int one_event(const redisReply *fv)
{
    return fv->elements == 2 && is_str(fv->element[0], "j");
}

int cs_cmsg_xrange_count(const redisReply *r, size_t i)
{
    const redisReply *fv;
    uint64_t id, seq, prev = 0;

    if ((fv = xrange_fields(r, i, &id)) == NULL)
        return -EINVAL;
    if (one_event(fv))
        return fv->element[1]->len > 0 ? 1 : -EINVAL;
    if (fv->elements / 2 > INT_MAX)
        return -EINVAL;
    for (size_t k = 0; k < fv->elements; k += 2) {
        if (dec(fv->element[k]->str, fv->element[k]->len, UINT64_MAX, &seq) != 0 || seq <= prev ||
            fv->element[k + 1]->len == 0)
            return -EINVAL;
        prev = seq;
    }
    return prev == id ? (int)(fv->elements / 2) : -EINVAL;
}

void cs_cmsg_xrange_event(const redisReply *r, size_t i, size_t k, cs_cmsg_entry_t *e)
{
    /* Checked whole by cs_cmsg_xrange_count: no check again here (an entry may hold 500 events). */
    const redisReply *id = r->element[i]->element[0], *fv = r->element[i]->element[1];

    if (one_event(fv))
        dec(id->str, id->len - 2, UINT64_MAX, &e->seq);
    else
        dec(fv->element[2 * k]->str, fv->element[2 * k]->len, UINT64_MAX, &e->seq);
    e->json = fv->element[2 * k + 1]->str;
    e->json_len = fv->element[2 * k + 1]->len;
}
