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

/* The head both batch forms begin an event or a group with, at s (< end): "<epoch> <seq> <execution_id> ";
 * returns where what follows starts, or NULL. */
static const char *head3(const char *s, const char *end, uint64_t *epoch, uint64_t *seq, const char **exec,
                         size_t *exec_len)
{
    const char *sp;

    if ((sp = memchr(s, ' ', (size_t)(end - s))) == NULL ||
        dec(s, (size_t)(sp - s), CS_EPOCH_MASK, epoch) != 0)
        return NULL;
    s = sp + 1;
    if ((sp = memchr(s, ' ', (size_t)(end - s))) == NULL || dec(s, (size_t)(sp - s), UINT64_MAX, seq) != 0)
        return NULL;
    s = sp + 1;
    if ((sp = memchr(s, ' ', (size_t)(end - s))) == NULL || !cs_valid_execution_id(s, (size_t)(sp - s)))
        return NULL;
    *exec = s;
    *exec_len = (size_t)(sp - s);
    return sp + 1;
}

/* One event of the per-event batch form at *off: "<epoch> <seq> <execution_id> <json_len>\n<json>". */
static int ev_next(const char *p, size_t n, size_t *off, cs_cmsg_t *m)
{
    const char *s, *end = p + n, *sp;
    uint64_t len;

    if (p == NULL || *off >= n ||
        (s = head3(p + *off, end, &m->epoch, &m->seq, &m->exec, &m->exec_len)) == NULL)
        return -EINVAL;
    if ((sp = memchr(s, '\n', (size_t)(end - s))) == NULL ||
        dec(s, (size_t)(sp - s), UINT64_MAX, &len) != 0 || len > (uint64_t)(end - sp - 1))
        return -EINVAL;
    m->json = sp + 1;
    m->json_len = (size_t)len;
    *off = (size_t)(m->json + len - p);
    return 0;
}

/* One event of a group's bytes at *off (< n): "<json_len>\n<json>", the JSON not empty. */
static int blob_next(const char *p, size_t n, size_t *off, const char **json, size_t *len)
{
    const char *s = p + *off, *nl;
    uint64_t l;

    if (*off >= n || (nl = memchr(s, '\n', n - *off)) == NULL ||
        dec(s, (size_t)(nl - s), UINT64_MAX, &l) != 0 || l > (uint64_t)(p + n - nl - 1))
        return -EINVAL;
    *json = nl + 1;
    *len = (size_t)l;
    *off = (size_t)(nl + 1 + l - p);
    return 0;
}

/* Whether p[0, n) holds exactly count events of a group's bytes. */
static int blob_check(const char *p, size_t n, uint64_t count)
{
    size_t off = 0, len;
    const char *json;

    for (uint64_t k = 0; k < count; k++)
        if (blob_next(p, n, &off, &json, &len) != 0)
            return -EINVAL;
    return off == n ? 0 : -EINVAL;
}

/* A group's header at it->off: "<epoch> <first> <execution_id> <count> <bytes>\n"; sets it->epoch, seq,
 * exec, left and *bytes, and moves it->off to the group's first event. */
static int group_head(cs_cmsg_iter_t *it, size_t *bytes)
{
    const char *s, *end = it->p + it->n, *sp;
    uint64_t k, b;

    if (it->off >= it->n ||
        (s = head3(it->p + it->off, end, &it->epoch, &it->seq, &it->exec, &it->exec_len)) == NULL)
        return -EINVAL;
    if ((sp = memchr(s, ' ', (size_t)(end - s))) == NULL ||
        dec(s, (size_t)(sp - s), CS_CMSG_ENTRY_MAX, &k) != 0 || it->seq > UINT64_MAX - k)
        return -EINVAL;
    s = sp + 1;
    if ((sp = memchr(s, '\n', (size_t)(end - s))) == NULL || dec(s, (size_t)(sp - s), UINT64_MAX, &b) != 0 ||
        b > (uint64_t)(end - sp - 1))
        return -EINVAL;
    it->left = (size_t)k;
    it->off = (size_t)(sp + 1 - it->p);
    *bytes = (size_t)b;
    return 0;
}

int cs_cmsg_next(cs_cmsg_iter_t *it, cs_cmsg_t *m)
{
    size_t bytes;

    if (!it->grouped)
        return ev_next(it->p, it->n, &it->off, m);
    if (it->left == 0 && group_head(it, &bytes) != 0)
        return -EINVAL;
    if (blob_next(it->p, it->n, &it->off, &m->json, &m->json_len) != 0)
        return -EINVAL;
    m->epoch = it->epoch;
    m->seq = it->seq++;
    m->exec = it->exec;
    m->exec_len = it->exec_len;
    it->left--;
    return 0;
}

int cs_cmsg_batch(const char *p, size_t n, size_t *count, cs_cmsg_iter_t *it)
{
    const char *nl;
    uint64_t k, total = 0;
    size_t o;
    cs_cmsg_t m;

    if (p == NULL || n < 2 || (p[0] != '*' && p[0] != '#') || (nl = memchr(p, '\n', n)) == NULL ||
        dec(p + 1, (size_t)(nl - p - 1), n, &k) != 0)
        return -EINVAL;
    memset(it, 0, sizeof(*it));
    it->p = p;
    it->n = n;
    it->grouped = p[0] == '#';
    it->off = o = (size_t)(nl - p + 1);
    for (uint64_t i = 0; i < k; i++) {
        if (!it->grouped) {
            if (ev_next(p, n, &o, &m) != 0)
                return -EINVAL;
            total++;
        } else {
            cs_cmsg_iter_t g = *it;
            size_t bytes;
            g.off = o;
            if (group_head(&g, &bytes) != 0 || blob_check(p + g.off, bytes, g.left) != 0)
                return -EINVAL;
            o = g.off + bytes;
            total += g.left;
        }
    }
    if (o != n)
        return -EINVAL;
    *count = (size_t)total;
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

/* The pair of a receipt at *off: "<seq> <epoch>", "-<seq> <epoch>" (a duplicate) or "<first>+<count>
 * <epoch>"; *first gets its first event, *k how many it stands for. */
static int receipt_pair(const char *p, size_t n, size_t *off, cs_cmsg_result_t *first, uint64_t *k)
{
    const char *s, *e, *plus;
    size_t sl, el;
    int dup;

    if (token(p, n, off, &s, &sl) != 0 || token(p, n, off, &e, &el) != 0)
        return -EINVAL;
    dup = s[0] == '-';
    *k = 1;
    if (!dup && (plus = memchr(s, '+', sl)) != NULL) {
        if (dec(plus + 1, (size_t)(s + sl - plus - 1), CS_CMSG_ENTRY_MAX, k) != 0)
            return -EINVAL;
        sl = (size_t)(plus - s);
    }
    if (dec(s + dup, sl - (size_t)dup, INT64_MAX - CS_CMSG_ENTRY_MAX, &first->seq) != 0 ||
        dec(e, el, CS_EPOCH_MASK, &first->epoch) != 0)
        return -EINVAL;
    first->duplicate = dup;
    return 0;
}

int cs_cmsg_receipt(const char *p, size_t n, size_t i, cs_cmsg_result_t *out)
{
    size_t off = 0, at = 0;

    if (p == NULL)
        return -EINVAL;
    for (;;) {
        cs_cmsg_result_t r;
        uint64_t k;
        if (receipt_pair(p, n, &off, &r, &k) != 0)
            return -EINVAL;
        if (i < at + k) {
            *out = r;
            out->seq += i - at;
            return 0;
        }
        at += (size_t)k;
    }
}

/* Reads a whole receipt of exactly count events into out[0..count), in one pass. */
static int receipt_all(const char *p, size_t n, size_t count, cs_cmsg_result_t *out)
{
    size_t off = 0, at = 0;

    if (p == NULL || count == 0)
        return -EINVAL;
    while (at < count) {
        cs_cmsg_result_t r;
        uint64_t k;
        if (receipt_pair(p, n, &off, &r, &k) != 0 || k > count - at)
            return -EINVAL;
        for (uint64_t j = 0; j < k; j++, at++) {
            out[at] = r;
            out[at].seq = r.seq + j;
        }
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

/* Whether fv is the grouped shape: exactly the fields f and b (since session 11). */
static int grouped(const redisReply *fv)
{
    return fv->elements == 4 && is_str(fv->element[0], "f") && is_str(fv->element[2], "b");
}

int cs_cmsg_xrange_count(const redisReply *r, size_t i)
{
    const redisReply *fv;
    uint64_t id, seq, prev = 0;

    if ((fv = xrange_fields(r, i, &id)) == NULL)
        return -EINVAL;
    if (one_event(fv))
        return fv->element[1]->len > 0 ? 1 : -EINVAL;
    if (grouped(fv)) {
        if (dec(fv->element[1]->str, fv->element[1]->len, id, &seq) != 0 || id - seq >= CS_CMSG_ENTRY_MAX ||
            blob_check(fv->element[3]->str, fv->element[3]->len, id - seq + 1) != 0)
            return -EINVAL;
        return (int)(id - seq + 1);
    }
    if (fv->elements / 2 > CS_CMSG_ENTRY_MAX)
        return -EINVAL;
    for (size_t k = 0; k < fv->elements; k += 2) {
        if (dec(fv->element[k]->str, fv->element[k]->len, UINT64_MAX, &seq) != 0 || seq <= prev ||
            fv->element[k + 1]->len == 0)
            return -EINVAL;
        prev = seq;
    }
    return prev == id ? (int)(fv->elements / 2) : -EINVAL;
}

void cs_cmsg_xrange_events(const redisReply *r, size_t i, cs_cmsg_entry_t *out)
{
    /* Checked whole by cs_cmsg_xrange_count: no check again here. */
    const redisReply *id = r->element[i]->element[0], *fv = r->element[i]->element[1];
    uint64_t seq = 0;

    if (one_event(fv)) {
        dec(id->str, id->len - 2, UINT64_MAX, &out[0].seq);
        out[0].json = fv->element[1]->str;
        out[0].json_len = fv->element[1]->len;
    } else if (grouped(fv)) {
        const char *b = fv->element[3]->str;
        size_t n = fv->element[3]->len, off = 0;
        dec(fv->element[1]->str, fv->element[1]->len, UINT64_MAX, &seq);
        for (size_t k = 0; off < n; k++) {
            blob_next(b, n, &off, &out[k].json, &out[k].json_len);
            out[k].seq = seq + k;
        }
    } else {
        for (size_t k = 0; k < fv->elements / 2; k++) {
            dec(fv->element[2 * k]->str, fv->element[2 * k]->len, UINT64_MAX, &out[k].seq);
            out[k].json = fv->element[2 * k + 1]->str;
            out[k].json_len = fv->element[2 * k + 1]->len;
        }
    }
}

int cs_cmsg_node(const char *p, size_t n, cs_cmsg_node_t *out)
{
    uint64_t *f[] = {&out->ms,   &out->published,      &out->failed,      &out->inserted,
                     &out->lost, &out->history_failed, &out->subscribers, &out->executions};
    size_t off = 0;
    const char *t;
    size_t len;

    if (p == NULL || n < 2 || p[0] != '1' || p[1] != ' ')
        return -EINVAL;
    off = 2;
    for (size_t i = 0; i < sizeof(f) / sizeof(*f); i++) {
        if (token(p, n, &off, &t, &len) != 0)
            return -EINVAL;
        if (len == 1 && t[0] == '0')
            *f[i] = 0;
        else if (dec(t, len, UINT64_MAX, f[i]) != 0)
            return -EINVAL;
    }
    return off == n ? 0 : -EINVAL;
}
