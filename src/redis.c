/*
 * redis.c - hiredis' redisAsyncContext on cs_loop (see redis.h).
 *
 * hiredis tells us what to wait for through its event hooks; we watch its socket with one cs_io and
 * call redisAsyncHandleRead / redisAsyncHandleWrite when it is ready. hiredis frees its context itself
 * when the connection fails (after calling every waiting callback with NULL, then ev.cleanup): the
 * cleanup hook is the one sign that the context is gone, for whatever reason, and what follows from it
 * (telling the owner, connecting again) runs at the end of the loop turn, never inside hiredis.
 *
 * A host name (not an IP address) is resolved before each connection attempt with getaddrinfo_a: glibc's
 * own thread does the blocking lookup and tells the loop through an eventfd, within 10 s, so that
 * no DNS answer ever stalls the loop (hiredis would call the blocking getaddrinfo itself).
 */
#include "redis.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <hiredis/async.h>

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
/* A host name's resolution gets this long (the resolver's own tries: 5 s each by default). */
#define RESOLVE_TIMEOUT_MS 10000

/* A host name's resolution in flight. Shared with glibc's thread that runs it: whichever of the two lets go
 * of it last frees it (state). */
typedef struct resolve {
    struct gaicb cb;
    struct gaicb *list[1];
    struct addrinfo hints;
    atomic_int state; /* 0: in flight; 1: the thread is done with it; 2: the loop is done with it */
    int efd;          /* written by the thread when the answer is in */
    char port[8];
    char host[];
} resolve_t;

struct cs_redis {
    cs_loop_t *loop;
    resolve_t *res;                /* a host name being resolved (no context yet) */
    cs_io_t res_io;                /* its eventfd */
    cs_timer_t res_timer;          /* its deadline: timeout_ms */
    char ips[4][INET6_ADDRSTRLEN]; /* the host name's addresses, the last time it was resolved */
    int n_ips, ip_next, ip_cur;    /* how many; the one the next attempt tries (all tried: resolved again) */
    redisAsyncContext *ac;         /* NULL while not connected (or connecting) */
    cs_io_t io;
    uint32_t interest;
    cs_timer_t timeout; /* armed while requests are outstanding */
    cs_timer_t retry;   /* the next connection attempt */
    cs_defer_t report;
    char *addr, *name, *path, *host;
    int port;
    int timeout_ms;
    int backoff_ms;
    int up;       /* connected: onConnect said so, and no failure since */
    int reported; /* what the owner was last told: -1 nothing yet, 0 down, 1 up */
    int lost;     /* a context went away since the last report (a down to report, even if up again) */
    int closing;  /* cs_redis_free: no reports, no reconnects */
    int ctx_up;   /* the context now going was connected once */
    int dropped;  /* we dropped it (cs_redis_reset): r->err says why already */
    cs_redis_state_cb on_state;
    void *data;
    char err[256];
    cs_redis_stats_t st;
};

/* One request's trampoline data (hiredis' privdata). */
typedef struct req {
    cs_redis_t *r;
    cs_redis_reply_cb cb;
    void *data;
    int sub;       /* a subscription: called for every message until the connection ends */
    int confirmed; /* a subscription's confirmation came (it is no longer outstanding) */
} req_t;

static void connect_now(cs_redis_t *r);

static void set_err(cs_redis_t *r, const char *what, const char *detail)
{
    snprintf(r->err, sizeof(r->err), "%s%s%s", what, detail != NULL && detail[0] ? ": " : "",
             detail != NULL ? detail : "");
}

/* ---- the owner's view: reported at the end of the turn ---- */

static void report(void *data)
{
    cs_redis_t *r = data;

    if (r->closing)
        return;
    if ((r->lost || !r->up) && r->reported != 0) {
        r->reported = 0;
        if (r->on_state != NULL)
            r->on_state(r, 0, r->err, r->data);
    }
    r->lost = 0;
    if (r->up && r->reported != 1) {
        r->reported = 1;
        if (r->on_state != NULL)
            r->on_state(r, 1, "", r->data);
    }
    /* A context gone and none in the making: the next attempt after the back-off. */
    if (r->ac == NULL && r->res == NULL && !cs_timer_active(&r->retry) && !r->closing) {
        cs_timer_start(&r->retry, r->backoff_ms);
        r->backoff_ms = r->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : r->backoff_ms * 2;
    }
}

static void report_later(cs_redis_t *r)
{
    cs_defer(r->loop, &r->report, report, r);
}

/* ---- the event hooks ---- */

static void set_interest(cs_redis_t *r, uint32_t interest)
{
    if (interest == r->interest)
        return;
    r->interest = interest;
    if (interest == 0)
        cs_io_stop(&r->io);
    else if (cs_io_start(&r->io, interest) != 0)
        cs_redis_reset(r, "epoll_ctl failed");
}

static void ev_add_read(void *p)
{
    cs_redis_t *r = p;
    set_interest(r, r->interest | CS_IO_READ);
}

static void ev_del_read(void *p)
{
    cs_redis_t *r = p;
    set_interest(r, r->interest & ~CS_IO_READ);
}

static void ev_add_write(void *p)
{
    cs_redis_t *r = p;
    set_interest(r, r->interest | CS_IO_WRITE);
}

static void ev_del_write(void *p)
{
    cs_redis_t *r = p;
    set_interest(r, r->interest & ~CS_IO_WRITE);
}

/* hiredis is freeing the context (an error, Redis closed it, or we freed it). */
static void ev_cleanup(void *p)
{
    cs_redis_t *r = p;

    r->interest = 0;
    cs_io_stop(&r->io);
    if (r->ctx_up) {
        r->st.losses++;
        if (r->dropped)
            ; /* cs_redis_reset said why */
        else if (r->ac != NULL && r->ac->err != 0 && r->ac->errstr != NULL && r->ac->errstr[0] != '\0')
            set_err(r, "connection lost", r->ac->errstr);
        else
            set_err(r, "connection closed", NULL);
    } else if (r->err[0] == '\0' && r->ac != NULL && r->ac->errstr != NULL) {
        set_err(r, "cannot connect", r->ac->errstr);
    }
    r->ctx_up = 0;
    r->dropped = 0;
    r->ac = NULL;
    r->up = 0;
    r->lost = 1;
    cs_timer_stop(&r->timeout);
    report_later(r);
}

static void on_io(cs_io_t *io, uint32_t events)
{
    cs_redis_t *r = io->data;

    if (r->ac != NULL && (events & (CS_IO_READ | CS_IO_HUP | CS_IO_ERR | CS_IO_RDHUP)))
        redisAsyncHandleRead(r->ac);
    if (r->ac != NULL && (events & (CS_IO_WRITE | CS_IO_ERR)))
        redisAsyncHandleWrite(r->ac);
}

/* ---- timeouts: a reply within timeout_ms of the request, or of the reply before it ---- */

static void progress(cs_redis_t *r)
{
    if (r->st.outstanding > 0)
        cs_timer_start(&r->timeout, r->timeout_ms);
    else
        cs_timer_stop(&r->timeout);
}

static void on_timeout(cs_timer_t *t)
{
    cs_redis_t *r = t->data;
    char why[96];

    r->st.timeouts++;
    snprintf(why, sizeof(why), "no reply within %d ms", r->timeout_ms);
    cs_redis_reset(r, why);
}

/* ---- connecting ---- */

static void on_connect(const redisAsyncContext *ac, int status)
{
    cs_redis_t *r = ac->ev.data;

    if (status != REDIS_OK) {
        set_err(r, "cannot connect", ac->errstr);
        return; /* hiredis frees the context now: ev_cleanup */
    }
    r->up = 1;
    r->ctx_up = 1;
    r->st.connects++;
    r->ip_next = r->ip_cur; /* a name's address that worked is the first tried again */
    r->backoff_ms = BACKOFF_MIN_MS;
    r->err[0] = '\0';
    report_later(r);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)ac;
    (void)status; /* ev_cleanup ran already and said what happened */
}

static void on_setname(cs_redis_t *r, const redisReply *reply, void *data)
{
    (void)r;
    (void)reply;
    (void)data;
}

static void on_retry(cs_timer_t *t)
{
    connect_now(t->data);
}

/* ---- a host name resolved off the loop ---- */

static void resolve_free(resolve_t *q)
{
    if (q->cb.ar_result != NULL)
        freeaddrinfo(q->cb.ar_result);
    close(q->efd);
    free(q);
}

/* One side is done with q: the other side's turn to free it, or ours when it was done first. */
static void resolve_let_go(resolve_t *q, int side)
{
    if (atomic_exchange(&q->state, side) != 0)
        resolve_free(q);
}

/* glibc's thread, when the answer is in. */
static void resolve_notify(union sigval sv)
{
    resolve_t *q = sv.sival_ptr;
    uint64_t one = 1;

    (void)!write(q->efd, &one, sizeof(one));
    resolve_let_go(q, 1);
}

/* The loop is done with the resolution in flight (its answer, its deadline, or cs_redis_free). */
static void resolve_end(cs_redis_t *r)
{
    cs_io_stop(&r->res_io);
    cs_timer_stop(&r->res_timer);
    resolve_let_go(r->res, 2);
    r->res = NULL;
}

static void resolve_failed(cs_redis_t *r, const char *detail)
{
    char what[160];

    snprintf(what, sizeof(what), "cannot resolve %.120s", r->host);
    set_err(r, what, detail);
    r->lost = 1;
    report_later(r); /* the next attempt after the back-off */
}

static void connect_to(cs_redis_t *r, const char *ip);

static void on_resolved(cs_io_t *io, uint32_t events)
{
    cs_redis_t *r = io->data;
    resolve_t *q = r->res;
    const struct addrinfo *ai;
    uint64_t n;
    int rc;

    (void)events;
    if (read(q->efd, &n, sizeof(n)) != (ssize_t)sizeof(n))
        return; /* not yet */
    rc = gai_error(&q->cb);
    if (rc == EAI_INPROGRESS)
        return;
    r->n_ips = r->ip_next = 0;
    for (ai = rc == 0 ? q->cb.ar_result : NULL; ai != NULL && r->n_ips < 4; ai = ai->ai_next) {
        const void *a = NULL;
        if (ai->ai_family == AF_INET)
            a = &((const struct sockaddr_in *)ai->ai_addr)->sin_addr;
        else if (ai->ai_family == AF_INET6)
            a = &((const struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
        if (a != NULL && inet_ntop(ai->ai_family, a, r->ips[r->n_ips], sizeof(r->ips[0])) != NULL)
            r->n_ips++;
    }
    resolve_end(r);
    if (r->n_ips == 0) {
        resolve_failed(r, rc != 0 ? gai_strerror(rc) : "no IPv4 or IPv6 address");
        return;
    }
    connect_to(r, r->ips[r->ip_cur = r->ip_next++]);
}

static void on_resolve_timeout(cs_timer_t *t)
{
    cs_redis_t *r = t->data;
    char why[64];

    snprintf(why, sizeof(why), "no answer within %d ms", RESOLVE_TIMEOUT_MS);
    resolve_end(r); /* glibc's thread frees it when its lookup ends */
    resolve_failed(r, why);
}

/* Starts resolving r->host; the connection follows (on_resolved). */
static void resolve_start(cs_redis_t *r)
{
    size_t hl = strlen(r->host);
    resolve_t *q = calloc(1, sizeof(*q) + hl + 1);
    struct sigevent sev;
    int rc;

    if (q == NULL) {
        resolve_failed(r, "out of memory");
        return;
    }
    memcpy(q->host, r->host, hl + 1);
    snprintf(q->port, sizeof(q->port), "%d", r->port);
    q->hints.ai_family = AF_UNSPEC;
    q->hints.ai_socktype = SOCK_STREAM;
    q->cb.ar_name = q->host;
    q->cb.ar_service = q->port;
    q->cb.ar_request = &q->hints;
    q->list[0] = &q->cb;
    if ((q->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
        free(q);
        resolve_failed(r, strerror(errno));
        return;
    }
    cs_io_init(&r->res_io, r->loop, q->efd, on_resolved, r);
    if (cs_io_start(&r->res_io, CS_IO_READ) != 0) {
        resolve_free(q);
        resolve_failed(r, "epoll_ctl failed");
        return;
    }
    memset(&sev, 0, sizeof(sev));
    sev.sigev_notify = SIGEV_THREAD;
    sev.sigev_notify_function = resolve_notify;
    sev.sigev_value.sival_ptr = q;
    if ((rc = getaddrinfo_a(GAI_NOWAIT, q->list, 1, &sev)) != 0) {
        cs_io_stop(&r->res_io);
        resolve_free(q);
        resolve_failed(r, gai_strerror(rc));
        return;
    }
    r->res = q;
    cs_timer_start(&r->res_timer, RESOLVE_TIMEOUT_MS);
}

static void connect_now(cs_redis_t *r)
{
    struct in6_addr a6;

    if (r->ac != NULL || r->res != NULL || r->closing)
        return;
    if (r->host == NULL || inet_pton(AF_INET, r->host, &a6) == 1 || inet_pton(AF_INET6, r->host, &a6) == 1)
        connect_to(r, r->host);
    else if (r->ip_next < r->n_ips) /* the next of its addresses; once all were tried, resolved again */
        connect_to(r, r->ips[r->ip_cur = r->ip_next++]);
    else
        resolve_start(r);
}

/* Connects to ip (an IP address, not a name: hiredis would resolve a name on the loop), or the socket path.
 */
static void connect_to(cs_redis_t *r, const char *ip)
{
    redisAsyncContext *ac;

    ac = r->path != NULL ? redisAsyncConnectUnix(r->path) : redisAsyncConnect(ip, r->port);
    if (ac == NULL) {
        set_err(r, "cannot connect", "out of memory");
        r->lost = 1;
        report_later(r);
        return;
    }
    if (ac->err != 0) {
        set_err(r, "cannot connect", ac->errstr);
        redisAsyncFree(ac); /* no hooks attached yet: nothing of ours is called */
        r->lost = 1;
        report_later(r);
        return;
    }
    r->ac = ac;
    r->interest = 0;
    cs_io_init(&r->io, r->loop, ac->c.fd, on_io, r); /* before the hooks: setting the connect callback
                                                      * already asks for a write event */
    ac->ev.data = r;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    /* The first request makes hiredis wait for the socket to be writable: that is the connect. */
    if (r->name != NULL) {
        const char *argv[3] = {"CLIENT", "SETNAME", r->name};
        size_t lens[3] = {6, 7, strlen(r->name)};
        if (cs_redis_command(r, on_setname, NULL, 3, argv, lens) != 0)
            cs_redis_reset(r, "cannot queue CLIENT SETNAME");
    } else {
        ev_add_write(r);
    }
}

/* ---- public functions ---- */

int cs_redis_new(cs_redis_t **out, cs_loop_t *loop, const cs_redis_opts_t *o)
{
    cs_redis_t *r = calloc(1, sizeof(*r));

    if (r == NULL)
        return -ENOMEM;
    r->loop = loop;
    r->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 2000;
    r->backoff_ms = BACKOFF_MIN_MS;
    r->reported = -1;
    r->on_state = o->on_state;
    r->data = o->data;
    r->addr = strdup(o->addr);
    if (r->addr == NULL || (o->name != NULL && (r->name = strdup(o->name)) == NULL))
        goto nomem;
    if (strncmp(o->addr, "unix:", 5) == 0 && o->addr[5] == '/') {
        if ((r->path = strdup(o->addr + 5)) == NULL)
            goto nomem;
    } else if (strncmp(o->addr, "redis://", 8) == 0) {
        const char *h = o->addr + 8, *colon = strrchr(h, ':');
        size_t hl;
        if (colon == NULL || colon == h)
            goto inval;
        hl = (size_t)(colon - h);
        if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']')
            h++, hl -= 2;
        if ((r->host = strndup(h, hl)) == NULL)
            goto nomem;
        r->port = atoi(colon + 1);
        if (r->port <= 0 || r->port > 65535)
            goto inval;
    } else {
        goto inval;
    }
    cs_timer_init(&r->timeout, loop, on_timeout, r);
    cs_timer_init(&r->retry, loop, on_retry, r);
    cs_timer_init(&r->res_timer, loop, on_resolve_timeout, r);
    connect_now(r);
    *out = r;
    return 0;
inval:
    cs_redis_free(r);
    return -EINVAL;
nomem:
    cs_redis_free(r);
    return -ENOMEM;
}

void cs_redis_free(cs_redis_t *r)
{
    if (r == NULL)
        return;
    r->closing = 1;
    if (r->ac != NULL)
        redisAsyncFree(r->ac); /* callbacks get NULL; ev_cleanup forgets it */
    if (r->res != NULL)
        resolve_end(r); /* glibc's thread frees it when its lookup ends */
    if (r->loop != NULL) {
        cs_timer_stop(&r->timeout);
        cs_timer_stop(&r->retry);
        cs_defer_cancel(r->loop, &r->report);
    }
    free(r->addr);
    free(r->name);
    free(r->path);
    free(r->host);
    free(r);
}

int cs_redis_up(const cs_redis_t *r)
{
    return r->up;
}

const char *cs_redis_error(const cs_redis_t *r)
{
    return r->err;
}

const char *cs_redis_addr(const cs_redis_t *r)
{
    return r->addr;
}

static void on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    req_t *q = priv;
    cs_redis_t *r = q->r;
    const redisReply *rep = reply;

    (void)ac;
    if (!q->sub || (rep == NULL && !q->confirmed)) {
        r->st.outstanding--;
    } else if (!q->confirmed && rep->type == REDIS_REPLY_ARRAY && rep->elements >= 1 &&
               rep->element[0]->type == REDIS_REPLY_STRING &&
               strcmp(rep->element[0]->str, "subscribe") == 0) {
        q->confirmed = 1;
        r->st.outstanding--;
    }
    if (rep == NULL) {
        r->st.failed++;
        r->up = 0; /* the connection is going: no request may be made on it any more */
    } else {
        progress(r);
    }
    q->cb(r, rep, q->data);
    if (!q->sub || rep == NULL)
        free(q);
}

static int send_argv(cs_redis_t *r, req_t *q, int argc, const char **argv, const size_t *argvlen)
{
    if (!r->up || r->ac == NULL) {
        free(q);
        return -ENOTCONN;
    }
    if (redisAsyncCommandArgv(r->ac, on_reply, q, argc, argv, argvlen) != REDIS_OK) {
        free(q);
        return -ENOTCONN;
    }
    if (r->st.outstanding++ == 0)
        cs_timer_start(&r->timeout, r->timeout_ms);
    r->st.requests++;
    return 0;
}

int cs_redis_command(cs_redis_t *r, cs_redis_reply_cb cb, void *data, int argc, const char **argv,
                     const size_t *argvlen)
{
    req_t *q;

    /* CLIENT SETNAME goes out while connecting (it is what makes hiredis connect). */
    if (r->ac == NULL || (!r->up && cb != on_setname))
        return -ENOTCONN;
    if ((q = calloc(1, sizeof(*q))) == NULL)
        return -ENOMEM;
    q->r = r;
    q->cb = cb;
    q->data = data;
    if (cb == on_setname) {
        if (redisAsyncCommandArgv(r->ac, on_reply, q, argc, argv, argvlen) != REDIS_OK) {
            free(q);
            return -ENOTCONN;
        }
        if (r->st.outstanding++ == 0)
            cs_timer_start(&r->timeout, r->timeout_ms);
        return 0;
    }
    return send_argv(r, q, argc, argv, argvlen);
}

int cs_redis_formatted(cs_redis_t *r, cs_redis_reply_cb cb, void *data, const char *cmd, size_t len)
{
    req_t *q;

    if (r->ac == NULL || !r->up)
        return -ENOTCONN;
    if ((q = calloc(1, sizeof(*q))) == NULL)
        return -ENOMEM;
    q->r = r;
    q->cb = cb;
    q->data = data;
    if (redisAsyncFormattedCommand(r->ac, on_reply, q, cmd, len) != REDIS_OK) {
        free(q);
        return -ENOTCONN;
    }
    if (r->st.outstanding++ == 0)
        cs_timer_start(&r->timeout, r->timeout_ms);
    r->st.requests++;
    return 0;
}

int cs_redis_subscribe(cs_redis_t *r, const char *channel, cs_redis_reply_cb cb, void *data)
{
    const char *argv[2] = {"SUBSCRIBE", channel};
    size_t lens[2] = {9, strlen(channel)};
    req_t *q;

    if ((q = calloc(1, sizeof(*q))) == NULL)
        return -ENOMEM;
    q->r = r;
    q->cb = cb;
    q->data = data;
    q->sub = 1;
    return send_argv(r, q, 2, argv, lens);
}

void cs_redis_reset(cs_redis_t *r, const char *why)
{
    if (r->ac == NULL)
        return;
    set_err(r, "connection dropped", why);
    r->up = 0;
    r->dropped = 1;
    redisAsyncFree(r->ac); /* now, or after the hiredis callback we are in: ev_cleanup follows */
}

void cs_redis_stats(const cs_redis_t *r, cs_redis_stats_t *st)
{
    *st = r->st;
}
