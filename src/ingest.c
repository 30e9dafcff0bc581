/*
 * ingest.c - see ingest.h.
 */
#include "ingest.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <utlist.h>

#include "cursor.h"
#include "event.h"
#include "jscan.h"
#include "log.h"
#include "status.h"

#define READ_CHUNK    65536
#define OUT_HIGH_MARK (1u << 20) /* stop reading a producer whose unread replies exceed this */

typedef struct producer producer_t;

struct cs_ingest {
    cs_daemon_t *d;
    int fd;
    cs_io_t io;
    char *path;
    producer_t *list;
    size_t count;
};

struct producer {
    cs_ingest_t *in;
    int fd;
    cs_io_t io;
    cs_defer_t defer;
    uid_t uid;
    char *ibuf; /* bytes of the current, unfinished line */
    size_t ilen, icap;
    int skipping; /* inside a too_large line: discard until the next newline */
    char *obuf;   /* replies not yet written */
    size_t olen, ooff, ocap;
    char *pbuf; /* pushes waiting for the replies of the lines being handled */
    size_t plen, pcap;
    int eof;
    int closing;
    cs_awaiter_t *awaits; /* human-input answers this connection waits for */
    cs_defer_t flush_defer;
    producer_t *prev, *next;
};

static void producer_flush_later(producer_t *p);

/* ---- replies ---- */

static int buf_reserve(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 256;
    while (c < need)
        c *= 2;
    char *p = realloc(*buf, c);
    if (p == NULL)
        return -ENOMEM;
    *buf = p;
    *cap = c;
    return 0;
}

static void reply_add(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (buf_reserve(buf, cap, *len + n) != 0)
        return; /* out of memory: the reply is lost, the connection will see it as a stall */
    memcpy(*buf + *len, s, n);
    *len += n;
}

/* Appends o (consumed) as one reply line. */
static void reply_json(char **buf, size_t *len, size_t *cap, json_t *o)
{
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;

    json_decref(o);
    if (s != NULL) {
        reply_add(buf, len, cap, s, strlen(s));
        reply_add(buf, len, cap, "\n", 1);
        free(s);
    }
}

/*
 * Appends {"ok":true,"seq":N,"event_id":"…"[,"duplicate":true]}: one for every event, so written
 * by hand rather than through json_pack and json_dumps. event_id holds no control characters
 * (cs_valid_event_id); '"' and '\\' are the only bytes to escape.
 */
static void reply_ack(char **buf, size_t *len, size_t *cap, const cs_publish_t *pub)
{
    char *p;

    if (buf_reserve(buf, cap, *len + 48 + 2 * sizeof(pub->event_id) + 20) != 0)
        return; /* as in reply_add */
    p = *buf + *len;
    memcpy(p, "{\"ok\":true,\"seq\":", 17), p += 17;
    p += cs_fmt_u64(p, pub->seq);
    memcpy(p, ",\"event_id\":\"", 13), p += 13;
    for (const char *s = pub->event_id; *s != '\0'; s++) {
        if (*s == '"' || *s == '\\')
            *p++ = '\\';
        *p++ = *s;
    }
    *p++ = '"';
    if (pub->duplicate)
        memcpy(p, ",\"duplicate\":true", 17), p += 17;
    memcpy(p, "}\n", 2), p += 2;
    *len = (size_t)(p - *buf);
}

static cs_err_t reply_error(char **buf, size_t *len, size_t *cap, cs_err_t code, const char *detail)
{
    reply_json(buf, len, cap,
               json_pack("{s:b, s:s, s:s}", "ok", 0, "error", cs_err_name(code), "detail", detail));
    return code;
}

/* ---- awaiting human input ---- */

static void on_push(cs_awaiter_t *aw, const char *line, size_t len)
{
    producer_t *p = aw->owner;

    DL_DELETE2(p->awaits, aw, oprev, onext);
    free(aw);
    /* Held apart until the replies of the lines now being handled are queued: a push never lands
     * between a line and its reply. */
    reply_add(&p->pbuf, &p->plen, &p->pcap, line, len);
    producer_flush_later(p);
}

/* Makes connection p await req, once. */
static void producer_await(producer_t *p, cs_hitl_req_t *req)
{
    cs_awaiter_t *aw;

    for (aw = p->awaits; aw != NULL; aw = aw->onext)
        if (aw->req == req)
            return;
    aw = calloc(1, sizeof(*aw));
    if (aw == NULL)
        return;
    aw->owner = p;
    aw->push = on_push;
    DL_APPEND2(p->awaits, aw, oprev, onext);
    cs_hitl_await(req, aw); /* pushes at once when the answer exists */
}

static cs_err_t op_await(cs_daemon_t *d, producer_t *p, json_t *obj, char **reply, size_t *rlen, size_t *rcap)
{
    char detail[300];
    json_t *jx = json_object_get(obj, "execution_id"), *je = json_object_get(obj, "event_id");
    const char *x = json_string_value(jx), *e = json_string_value(je);
    cs_hitl_req_t *req;

    if (p == NULL)
        return reply_error(reply, rlen, rcap, CS_ERR_BAD_OP,
                           "await needs a Unix-socket connection to push to");
    if (x == NULL || e == NULL)
        return reply_error(reply, rlen, rcap, CS_ERR_MISSING_FIELD,
                           "await needs execution_id and event_id strings");
    if (!cs_valid_execution_id(x, json_string_length(jx)))
        return reply_error(reply, rlen, rcap, CS_ERR_INVALID_FIELD,
                           "execution_id must be 1-128 characters of [A-Za-z0-9._:-]");
    req = cs_store_find_request(d->store, x, json_string_length(jx), e, detail, sizeof(detail));
    if (req == NULL)
        return reply_error(reply, rlen, rcap, CS_ERR_NOT_FOUND, detail);
    reply_json(reply, rlen, rcap,
               json_pack("{s:b, s:s, s:s, s:s, s:b}", "ok", 1, "op", "await", "execution_id", x, "event_id",
                         e, "answered", req->answered));
    /* After the ack: an answer that already exists is pushed right behind it. */
    producer_await(p, req);
    return CS_OK;
}

/* ---- the fast path: ordinary events without a jansson parse ---- */

/* Returns nonzero when m is absent or a string without escapes (its text is its value). */
static int plain_or_absent(const cs_jscan_member_t *m)
{
    return m->kind == CS_JSCAN_ABSENT || (m->kind == CS_JSCAN_STRING && !m->escaped);
}

/*
 * When the scanned line is an ordinary event, fills *fl with where its execution_id, type, and
 * event_id and timestamp when present, lie in the line, and returns 1; the store needs nothing
 * else from it (cs_store_publish_fields). An ordinary event has no op and no seq, each of those
 * members once, as a plain string, and a type the daemon does not read (cs_status_reads_type); it
 * is one line without CR or LF, as the store keeps it. Returns 0 for anything else: the whole
 * parse decides then.
 */
static int ordinary_fields(const cs_jscan_t *sc, cs_event_fields_t *fl)
{
    const cs_jscan_member_t *x = &sc->f[CS_JSCAN_EXECUTION_ID], *t = &sc->f[CS_JSCAN_TYPE];
    const cs_jscan_member_t *id = &sc->f[CS_JSCAN_EVENT_ID], *ts = &sc->f[CS_JSCAN_TIMESTAMP];

    if (sc->flags != 0 || sc->f[CS_JSCAN_OP].kind != CS_JSCAN_ABSENT ||
        sc->f[CS_JSCAN_SEQ].kind != CS_JSCAN_ABSENT || x->kind != CS_JSCAN_STRING || x->escaped ||
        t->kind != CS_JSCAN_STRING || t->escaped || !plain_or_absent(id) || !plain_or_absent(ts) ||
        cs_status_reads_type(t->p, t->len))
        return 0;
    /* The scan checked the UTF-8 and that no NUL is inside: the text between the quotes is the value. */
    fl->execution_id = x->p;
    fl->execution_id_len = x->len;
    fl->type = t->p;
    fl->type_len = t->len;
    fl->event_id = id->kind == CS_JSCAN_STRING ? id->p : NULL;
    fl->event_id_len = id->len;
    fl->timestamp = ts->kind == CS_JSCAN_STRING ? ts->p : NULL;
    fl->timestamp_len = ts->len;
    return 1;
}

/* Validates, authorizes, publishes and acknowledges an ordinary event: what cs_ingest_line does for
 * any event, without a JSON object. */
static cs_err_t publish_ordinary(cs_daemon_t *d, const cs_principal_t *publisher, const cs_event_fields_t *fl,
                                 const char *line, size_t len, char **reply, size_t *rlen, size_t *rcap)
{
    char detail[256];
    cs_publish_t pub;
    cs_err_t e;

    e = cs_event_validate_fields(fl, detail, sizeof(detail));
    if (e != CS_OK)
        return reply_error(reply, rlen, rcap, e, detail);
    if (publisher != NULL) {
        char x[CS_EXECUTION_ID_MAX + 1]; /* validated: at most CS_EXECUTION_ID_MAX bytes */
        memcpy(x, fl->execution_id, fl->execution_id_len);
        x[fl->execution_id_len] = '\0';
        if (cs_auth_authorize(publisher, CS_SCOPE_PUBLISH, x) != CS_AUTH_OK)
            return reply_error(reply, rlen, rcap, CS_ERR_FORBIDDEN,
                               "the token does not grant publish on this execution");
    }
    e = cs_store_publish_fields(d->store, fl, line, len, cs_unix_ms(), &pub, detail, sizeof(detail));
    if (e != CS_OK)
        return reply_error(reply, rlen, rcap, e, detail);
    reply_ack(reply, rlen, rcap, &pub);
    return CS_OK;
}

cs_err_t cs_ingest_line(cs_daemon_t *d, void *conn, const cs_principal_t *publisher, const char *line,
                        size_t len, char **reply, size_t *rlen, size_t *rcap)
{
    char detail[256];
    json_t *obj = NULL, *op;
    cs_err_t e;
    cs_publish_t pub;
    cs_jscan_t sc;
    cs_event_fields_t fl;

    d->counters.ingest_lines++;
    if (len > 0 && line[len - 1] == '\r')
        len--;
    if (len > d->cfg->max_event_bytes) {
        snprintf(detail, sizeof(detail), "line is longer than limits.max_event_bytes (%zu)",
                 d->cfg->max_event_bytes);
        e = reply_error(reply, rlen, rcap, CS_ERR_TOO_LARGE, detail);
        goto out;
    }
    if (cs_jscan_object(line, len, d->cfg->json_depth, &sc) == 0 && ordinary_fields(&sc, &fl)) {
        e = publish_ordinary(d, publisher, &fl, line, len, reply, rlen, rcap);
        goto out;
    }
    /* Anything else is parsed whole; a line the scan refuses too: jansson's message is the detail. */
    e = cs_line_parse(line, len, d->cfg->json_depth, &obj, detail, sizeof(detail));
    if (e != CS_OK) {
        reply_error(reply, rlen, rcap, e, detail);
        goto out;
    }
    op = json_object_get(obj, "op");
    if (op != NULL) {
        const char *name = json_string_value(op);
        if (name != NULL && strcmp(name, "ping") == 0) {
            static const char pong[] = "{\"ok\":true,\"op\":\"pong\"}\n";
            reply_add(reply, rlen, rcap, pong, sizeof(pong) - 1);
            e = CS_OK;
        } else if (name != NULL && strcmp(name, "await") == 0) {
            e = op_await(d, conn, obj, reply, rlen, rcap);
        } else {
            snprintf(detail, sizeof(detail), "unknown op (known: ping, await)");
            e = reply_error(reply, rlen, rcap, CS_ERR_BAD_OP, detail);
        }
        goto out;
    }
    e = cs_event_validate(obj, detail, sizeof(detail));
    if (e != CS_OK) {
        reply_error(reply, rlen, rcap, e, detail);
        goto out;
    }
    if (publisher != NULL &&
        cs_auth_authorize(publisher, CS_SCOPE_PUBLISH,
                          json_string_value(json_object_get(obj, "execution_id"))) != CS_AUTH_OK) {
        e = reply_error(reply, rlen, rcap, CS_ERR_FORBIDDEN,
                        "the token does not grant publish on this execution");
        goto out;
    }
    e = cs_store_publish_raw(d->store, obj, line, len, cs_unix_ms(), &pub, detail, sizeof(detail));
    if (e != CS_OK) {
        reply_error(reply, rlen, rcap, e, detail);
        goto out;
    }
    reply_ack(reply, rlen, rcap, &pub);
    /* The connection that posts a request awaits its answer without asking (a retry too). */
    if (conn != NULL &&
        strcmp(json_string_value(json_object_get(obj, "type")), "human_input_required") == 0) {
        cs_hitl_req_t *req = pub.exec ? cs_hitl_find(&pub.exec->hitl, pub.event_id) : NULL;
        if (req != NULL)
            producer_await(conn, req);
    }
out:
    if (e != CS_OK)
        d->counters.ingest_errors++;
    json_decref(obj);
    return e;
}

/* ---- producers ---- */

static void producer_free(void *data)
{
    producer_t *p = data;
    while (p->awaits != NULL) {
        cs_awaiter_t *aw = p->awaits;
        cs_hitl_unawait(aw);
        DL_DELETE2(p->awaits, aw, oprev, onext);
        free(aw);
    }
    free(p->ibuf);
    free(p->obuf);
    free(p->pbuf);
    free(p);
}

static void producer_close(producer_t *p)
{
    cs_ingest_t *in = p->in;

    if (p->closing)
        return;
    p->closing = 1;
    cs_defer_cancel(in->d->loop, &p->flush_defer);
    /* Nobody to push to any more: stop awaiting now, not at the deferred free. */
    for (cs_awaiter_t *aw = p->awaits; aw != NULL; aw = aw->onext)
        cs_hitl_unawait(aw);
    cs_io_stop(&p->io);
    close(p->fd);
    p->fd = -1;
    DL_DELETE(in->list, p);
    in->count--;
    cs_defer(in->d->loop, &p->defer, producer_free, p);
}

/* Writes queued replies; returns 0, or -1 when the producer is gone. */
static int producer_flush(producer_t *p)
{
    if (p->plen > 0) {
        reply_add(&p->obuf, &p->olen, &p->ocap, p->pbuf, p->plen);
        p->plen = 0;
    }
    while (p->ooff < p->olen) {
        ssize_t n = send(p->fd, p->obuf + p->ooff, p->olen - p->ooff, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == EINTR)
                continue;
            producer_close(p);
            return -1;
        }
        p->ooff += (size_t)n;
    }
    if (p->ooff == p->olen)
        p->olen = p->ooff = 0;
    return 0;
}

static void producer_update_interest(producer_t *p)
{
    uint32_t ev = 0;

    if (p->closing)
        return;
    if (!p->eof && p->olen - p->ooff < OUT_HIGH_MARK)
        ev |= CS_IO_READ;
    if (p->olen > p->ooff)
        ev |= CS_IO_WRITE;
    if (ev == 0) {
        /* Read to the end and every reply written: done. */
        producer_close(p);
        return;
    }
    cs_io_start(&p->io, ev);
}

static void producer_line(producer_t *p, const char *line, size_t len)
{
    cs_ingest_line(p->in->d, p, NULL, line, len, &p->obuf, &p->olen, &p->ocap);
}

static void on_flush_later(void *data)
{
    producer_t *p = data;
    if (p->closing || producer_flush(p) != 0)
        return;
    producer_update_interest(p);
}

/* A push arrived from elsewhere (another producer's line, an HTTP answer): write it at turn's end. */
static void producer_flush_later(producer_t *p)
{
    if (!p->closing)
        cs_defer(p->in->d->loop, &p->flush_defer, on_flush_later, p);
}

static void producer_too_large(producer_t *p)
{
    char detail[128];
    snprintf(detail, sizeof(detail), "line is longer than limits.max_event_bytes (%zu)",
             p->in->d->cfg->max_event_bytes);
    p->in->d->counters.ingest_lines++;
    p->in->d->counters.ingest_errors++;
    reply_error(&p->obuf, &p->olen, &p->ocap, CS_ERR_TOO_LARGE, detail);
}

/* Splits newly read bytes into lines. */
static void producer_feed(producer_t *p, const char *data, size_t n)
{
    size_t max = p->in->d->cfg->max_event_bytes;

    while (n > 0) {
        const char *nl = memchr(data, '\n', n);
        size_t take = nl ? (size_t)(nl - data) : n;

        if (p->skipping) {
            if (nl != NULL)
                p->skipping = 0;
        } else if (p->ilen + take > max + 1) {
            /* Over the limit (one byte of slack for a trailing CR): answer now, skip the rest. */
            p->ilen = 0;
            producer_too_large(p);
            if (nl == NULL)
                p->skipping = 1;
        } else if (nl != NULL && p->ilen == 0) {
            producer_line(p, data, take); /* the whole line is in this read: no copy */
        } else {
            if (buf_reserve(&p->ibuf, &p->icap, p->ilen + take) != 0) {
                producer_close(p);
                return;
            }
            memcpy(p->ibuf + p->ilen, data, take);
            p->ilen += take;
            if (nl != NULL) {
                producer_line(p, p->ibuf, p->ilen);
                p->ilen = 0;
            }
        }
        if (nl == NULL)
            break;
        data = nl + 1;
        n -= take + 1;
    }
    /* Do not keep a large buffer for a producer that sent one large line. */
    if (p->ilen == 0 && p->icap > READ_CHUNK) {
        free(p->ibuf);
        p->ibuf = NULL;
        p->icap = 0;
    }
}

static void on_producer_io(cs_io_t *io, uint32_t events)
{
    producer_t *p = io->data;
    static char chunk[READ_CHUNK];

    if (events & CS_IO_READ) {
        /* Read while replies can be queued; stop at the high mark to bound memory. */
        for (int rounds = 0; rounds < 16 && p->olen - p->ooff < OUT_HIGH_MARK; rounds++) {
            ssize_t n = recv(p->fd, chunk, sizeof(chunk), 0);
            if (n > 0) {
                producer_feed(p, chunk, (size_t)n);
                if (p->closing)
                    return;
                continue;
            }
            if (n == 0) {
                /* End of input: a last line without its newline is still a line (printf | nc -U). */
                if (p->ilen > 0 && !p->skipping)
                    producer_line(p, p->ibuf, p->ilen);
                p->ilen = 0;
                p->eof = 1;
            } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                producer_close(p); /* reset mid-line: nothing to answer to */
                return;
            }
            break;
        }
    } else if (events & (CS_IO_HUP | CS_IO_ERR)) {
        p->eof = 1;
    }
    if (producer_flush(p) != 0)
        return;
    producer_update_interest(p);
}

static int uid_allowed(const cs_config_t *cfg, uid_t uid)
{
    if (cfg->n_allow_uids == 0)
        return 1;
    for (size_t i = 0; i < cfg->n_allow_uids; i++)
        if (cfg->allow_uids[i] == uid)
            return 1;
    return 0;
}

static void on_accept(cs_io_t *io, uint32_t events)
{
    cs_ingest_t *in = io->data;
    cs_daemon_t *d = in->d;
    (void)events;

    for (int i = 0; i < 64; i++) {
        int fd = accept4(in->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        struct ucred cred;
        socklen_t cl = sizeof(cred);
        char msg[256];
        int ml;

        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE)
                cs_log_warn("ingest: accept: %s", strerror(errno));
            return;
        }
        memset(&cred, 0, sizeof(cred));
        getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl);
        if (!uid_allowed(d->cfg, cred.uid)) {
            ml = snprintf(
                msg, sizeof(msg),
                "{\"ok\":false,\"error\":\"forbidden\",\"detail\":\"uid %u is not in ingest.allow_uids\"}\n",
                (unsigned)cred.uid);
            (void)!send(fd, msg, (size_t)ml, MSG_NOSIGNAL);
            cs_log_warn("ingest: refused a producer with uid %u (not in ingest.allow_uids)",
                        (unsigned)cred.uid);
            close(fd);
            continue;
        }
        if (in->count >= d->cfg->max_producers || d->stopping) {
            ml = snprintf(msg, sizeof(msg), "{\"ok\":false,\"error\":\"forbidden\",\"detail\":\"%s\"}\n",
                          d->stopping ? "the server is shutting down"
                                      : "too many producer connections (limits.max_producers)");
            (void)!send(fd, msg, (size_t)ml, MSG_NOSIGNAL);
            close(fd);
            continue;
        }
        producer_t *p = calloc(1, sizeof(*p));
        if (p == NULL) {
            close(fd);
            continue;
        }
        p->in = in;
        p->fd = fd;
        p->uid = cred.uid;
        DL_APPEND(in->list, p);
        in->count++;
        cs_io_init(&p->io, d->loop, fd, on_producer_io, p);
        if (cs_io_start(&p->io, CS_IO_READ) != 0)
            producer_close(p);
    }
}

int cs_ingest_new(cs_ingest_t **out, cs_daemon_t *d, char *err, size_t errlen)
{
    struct sockaddr_un sa;
    const char *path = d->cfg->ingest_socket;
    cs_ingest_t *in;
    int fd = -1, rc;
    struct stat st;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        snprintf(err, errlen, "ingest.socket: path longer than %zu bytes", sizeof(sa.sun_path) - 1);
        return -ENAMETOOLONG;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    strcpy(sa.sun_path, path);

    /* A socket file left by a daemon that died is removed; one a live daemon answers on is not. */
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            snprintf(err, errlen, "ingest.socket: %s exists and is not a socket", path);
            return -EEXIST;
        }
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
            close(fd);
            snprintf(err, errlen, "ingest.socket: %s is in use by another process", path);
            return -EADDRINUSE;
        }
        if (fd >= 0)
            close(fd);
        unlink(path);
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rc = -errno;
        snprintf(err, errlen, "ingest.socket: socket: %s", strerror(errno));
        return rc;
    }
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || chmod(path, d->cfg->ingest_mode) != 0 ||
        listen(fd, 1024) != 0) {
        rc = -errno;
        snprintf(err, errlen, "ingest.socket: %s: %s", path, strerror(errno));
        close(fd);
        unlink(path);
        return rc;
    }
    in = calloc(1, sizeof(*in));
    if (in == NULL || (in->path = strdup(path)) == NULL) {
        free(in);
        close(fd);
        unlink(path);
        return -ENOMEM;
    }
    in->d = d;
    in->fd = fd;
    cs_io_init(&in->io, d->loop, fd, on_accept, in);
    if ((rc = cs_io_start(&in->io, CS_IO_READ)) != 0) {
        snprintf(err, errlen, "ingest.socket: %s", strerror(-rc));
        cs_ingest_free(in);
        return rc;
    }
    *out = in;
    return 0;
}

void cs_ingest_close_listener(cs_ingest_t *in)
{
    if (in->fd < 0)
        return;
    cs_io_stop(&in->io);
    close(in->fd);
    in->fd = -1;
    unlink(in->path);
}

size_t cs_ingest_count(const cs_ingest_t *in)
{
    return in->count;
}

void cs_ingest_free(cs_ingest_t *in)
{
    if (in == NULL)
        return;
    cs_ingest_close_listener(in);
    while (in->list != NULL)
        producer_close(in->list);
    free(in->path);
    free(in);
}
