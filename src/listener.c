/*
 * listener.c - see listener.h.
 */
#include "listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <utlist.h>

#include "buf.h"
#include "err.h"
#include "event.h"
#include "head.h"
#include "http.h"
#include "httputil.h"
#include "log.h"
#include "transport.h"

/* How long an answered connection (431, 503, 408, a refused offer) may linger so the client reads the
 * answer, and how long one over limits.max_clients may take to say GET /health. Fixed: both only bound
 * connections already answered or over the limit, whose numbers CS_LISTENER_REFUSED_LINGER and
 * CS_LISTENER_HEALTH_RESERVE bound; the head deadline clients get is limits.head_timeout_s. */
#define LINGER_MS      2000
#define HEALTH_HEAD_MS 1000

typedef struct pending pending_t;

struct cs_listener {
    cs_daemon_t *d;
    int fd;
    cs_io_t io;
    cs_accept_backoff_t backoff;
    pending_t *list;
    size_t n_pending;
    size_t
        n_refused; /* answered 503 over limits.max_clients, lingering (CS_LISTENER_REFUSED_LINGER at most) */
    size_t
        n_reserve; /* over limits.max_clients, waiting for a GET /health head (CS_LISTENER_HEALTH_RESERVE) */
    /* One buffer for every peek (the loop is single-threaded): room for limits.head_bytes, its maximum,
     * which a reload may change. Peeked bytes are never committed to it: the socket keeps them. */
    cs_buf_t peek;
};

struct pending {
    cs_listener_t *l;
    int fd;
    int lingering; /* answered (431/503), draining input before close */
    int reserve;   /* over limits.max_clients: only GET /health is answered (200), else 503 */
    int refused;   /* over limits.max_clients and answered: counted in n_refused */
    cs_io_t io;
    cs_timer_t timer;
    cs_defer_t defer;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    pending_t *prev, *next;
};

/* ---- accept back-off ---- */

static void on_backoff_timer(cs_timer_t *t)
{
    cs_accept_backoff_t *b = t->data;

    /* Watch the socket again and try at once: the connections waiting there have waited enough. */
    if (cs_io_start(b->io, CS_IO_READ) == 0)
        b->io->cb(b->io, CS_IO_READ);
}

void cs_accept_backoff_init(cs_accept_backoff_t *b, cs_io_t *io, const char *what, uint64_t *counter)
{
    b->io = io;
    b->delay_ms = 0;
    b->what = what;
    b->counter = counter;
    cs_timer_init(&b->timer, io->loop, on_backoff_timer, b);
}

int cs_accept_backoff_failed(cs_accept_backoff_t *b, int err)
{
    if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM)
        return 0;
    b->delay_ms = b->delay_ms == 0 ? CS_ACCEPT_BACKOFF_MIN_MS : 2 * b->delay_ms;
    if (b->delay_ms > CS_ACCEPT_BACKOFF_MAX_MS)
        b->delay_ms = CS_ACCEPT_BACKOFF_MAX_MS;
    (*b->counter)++;
    cs_io_stop(b->io);
    cs_timer_start(&b->timer, b->delay_ms);
    cs_log_warn("%s: accept: %s: not accepting for %lld ms (raise LimitNOFILE, or lower limits.max_clients "
                "or limits.max_producers)",
                b->what, strerror(err), (long long)b->delay_ms);
    return 1;
}

void cs_accept_backoff_ok(cs_accept_backoff_t *b)
{
    b->delay_ms = 0;
}

void cs_accept_backoff_stop(cs_accept_backoff_t *b)
{
    cs_timer_stop(&b->timer);
}

/* ---- the listener ---- */

int cs_listener_is_loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;

    if (strcmp(host, "localhost") == 0)
        return 1;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6);
    return 0;
}

static void pending_free(void *data)
{
    pending_t *p = data;
    free(p);
}

/* Ends a waiting connection: close it (fd >= 0) or forget it (handed over), freeing it at turn's end. */
static void pending_end(pending_t *p, int close_fd)
{
    cs_listener_t *l = p->l;

    cs_io_stop(&p->io);
    cs_timer_stop(&p->timer);
    if (p->reserve)
        l->n_reserve--;
    if (p->refused)
        l->n_refused--;
    p->reserve = p->refused = 0;
    if (close_fd && p->fd >= 0) {
        /* Read what is left so the close sends FIN rather than a reset the client may see first. */
        char sink[4096];
        for (int i = 0; i < 4 && recv(p->fd, sink, sizeof(sink), MSG_DONTWAIT) > 0; i++)
            ;
        close(p->fd);
        l->d->clients--;
    }
    p->fd = -1;
    DL_DELETE(l->list, p);
    l->n_pending--;
    cs_defer(l->d->loop, &p->defer, pending_free, p);
}

static void on_linger_timeout(cs_timer_t *t)
{
    pending_end(t->data, 1);
}

static void on_linger_io(cs_io_t *io, uint32_t events)
{
    pending_t *p = io->data;
    char sink[4096];
    ssize_t n;
    (void)events;

    /* Discard what the client still sends until it closes, so our close sends FIN, not RST, and the
     * answer is read. */
    while ((n = recv(p->fd, sink, sizeof(sink), 0)) > 0)
        ;
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
        pending_end(p, 1);
}

/*
 * A connection over limits.max_clients (a health-reserve one included) is about to be answered: it
 * now counts among the refused ones that linger, of which there are at most CS_LISTENER_REFUSED_LINGER
 * (their descriptors are above max_clients). Returns nonzero when it may linger, 0 when it must be
 * closed right after its answer.
 */
static int pending_refuse(pending_t *p)
{
    cs_listener_t *l = p->l;

    if (p->reserve) {
        p->reserve = 0;
        l->n_reserve--;
    }
    if (!p->refused) {
        p->refused = 1;
        l->n_refused++;
    }
    if (l->n_refused > CS_LISTENER_REFUSED_LINGER) {
        l->d->counters.tcp_refused_unlingered++;
        return 0;
    }
    return 1;
}

/* Writes a short answer (JSON body) and closes gracefully: lingers reading until the client closes, at
 * most LINGER_MS, unless linger is 0 (then closes at once). */
static void pending_write(pending_t *p, unsigned status, const char *body, size_t blen, int linger)
{
    char head[256];
    int hl;

    int vary;
    /* The head is not parsed here, so only an open CORS policy can be stated. */
    int any_origin = cs_cors_allow(p->l->d->cfg, NULL, 0, &vary) != NULL;
    hl = snprintf(head, sizeof(head),
                  "HTTP/1.1 %u %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                  "%sConnection: close\r\n\r\n",
                  status, cs_http_reason(status), body ? blen : 0,
                  any_origin ? "Access-Control-Allow-Origin: *\r\n" : "");
    /* Best effort: the socket buffer is empty, so a small answer fits. */
    if (send(p->fd, head, (size_t)hl, MSG_NOSIGNAL) == hl && body != NULL)
        (void)!send(p->fd, body, blen, MSG_NOSIGNAL);
    shutdown(p->fd, SHUT_WR);
    if (!linger) {
        pending_end(p, 1);
        return;
    }
    p->lingering = 1;
    p->io.cb = on_linger_io;
    cs_io_start(&p->io, CS_IO_READ | CS_IO_RDHUP);
    cs_timer_start(&p->timer, LINGER_MS);
    p->timer.cb = on_linger_timeout;
    on_linger_io(&p->io, 0);
}

/* Writes an error value (err.h) as its status and a short JSON error, and closes (see pending_write). */
static void pending_write_err(pending_t *p, int err, const char *detail, int linger)
{
    size_t blen;
    char *body = cs_err_json(err, detail, &blen);

    pending_write(p, cs_err_http_status(err), body, body ? blen : 0, linger);
    free(body);
}

/* Answers an error value and closes gracefully. */
static void pending_answer(pending_t *p, int err, const char *detail)
{
    pending_write_err(p, err, detail, (p->reserve || p->refused) ? pending_refuse(p) : 1);
}

/* Over limits.max_clients: 503, and the connection closes. */
static void pending_full(pending_t *p)
{
    p->l->d->counters.tcp_rejected_full++;
    pending_write_err(p, CS_ERR_UNAVAILABLE, "too many connections (limits.max_clients)", pending_refuse(p));
}

/* "GET /health" (or "/health/"), with or without a query: a probe may come when every slot is taken. */
static int is_health_request(const char *head, size_t len)
{
    static const char want[] = "GET /health";
    size_t n = sizeof(want) - 1;

    if (len < n + 1 || memcmp(head, want, n) != 0)
        return 0;
    if (head[n] == '/')
        n++;
    return n < len && (head[n] == ' ' || head[n] == '?');
}

/* GET /health over limits.max_clients, answered here as libmicrohttpd would (cs_http_health): a busy
 * daemon is healthy, a degraded or stopping one says so. */
static void pending_health(pending_t *p)
{
    char *body;
    unsigned status;

    p->l->d->counters.health_over_limit++;
    status = cs_http_health(p->l->d, &body);
    if (body == NULL) {
        pending_answer(p, CS_ERR_INTERNAL, "out of memory");
        return;
    }
    pending_write(p, status, body, strlen(body), pending_refuse(p));
    free(body);
}

static void on_head_timeout(cs_timer_t *t)
{
    pending_t *p = t->data;
    if (p->reserve) {
        /* A connection in the health reserve that did not ask for /health in time. */
        pending_full(p);
        return;
    }
    p->l->d->counters.heads_timed_out++;
    cs_log_debug("tcp: request head not complete in %us: 408", p->l->d->cfg->head_timeout_s);
    pending_answer(p, CS_ERR_HEAD_TIMEOUT, "the request head did not arrive within limits.head_timeout_s");
}

/*
 * A complete head: offered to the transports in their table's order (transport.h) - the native SSE
 * writer, libwebsockets, libmicrohttpd - until one takes the connection (it is theirs from then on) or
 * refuses it (answered here, then closed). The listener stops watching the socket first: the one that
 * takes it registers it in its own way.
 */
static void pending_offer(pending_t *p, int websocket, const char *head, size_t head_len, size_t peeked)
{
    cs_listener_t *l = p->l;
    cs_offer_t o = {.fd = p->fd,
                    .addr = (const struct sockaddr *)&p->addr,
                    .addrlen = p->addrlen,
                    .head = head,
                    .head_len = head_len,
                    .peeked = peeked,
                    .websocket = websocket};
    size_t by = 0;

    cs_io_stop(&p->io);
    int r = cs_transport_offer(l->d, &o, &by);
    if (r > 0) {
        pending_end(p, 0);
    } else if (r < 0) {
        cs_log_debug("tcp: %s refused a request: %u %s", l->d->transports[by].ops->name,
                     cs_err_http_status(r), cs_err_name(r));
        pending_answer(p, r, o.detail);
    } else {
        cs_log_warn("tcp: no transport takes this request: closed");
        pending_end(p, 1);
    }
}

static void on_pending_io(cs_io_t *io, uint32_t events)
{
    pending_t *p = io->data;
    cs_listener_t *l = p->l;
    cs_daemon_t *d = l->d;
    size_t cap = d->cfg->head_bytes, room;
    char *peek;
    ssize_t n;
    int rc;
    (void)events;

    l->peek.max = cap;
    if ((rc = cs_buf_space(&l->peek, cap, &peek, &room)) != 0) {
        cs_log_warn("tcp: no room to read a request head (%s): connection closed", strerror(-rc));
        pending_end(p, 1);
        return;
    }
    n = recv(p->fd, peek, room, MSG_PEEK);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        pending_end(p, 1);
        return;
    }
    if (n == 0) {
        pending_end(p, 1);
        return;
    }
    size_t head_len = 0;
    cs_head_result_t kind = cs_head_scan(peek, (size_t)n, &head_len);
    switch (kind) {
    case CS_HEAD_INVALID:
        d->counters.heads_invalid++;
        cs_log_debug("tcp: not an HTTP/1.x request (first byte 0x%02x): closed", (unsigned char)peek[0]);
        pending_end(p, 1);
        return;
    case CS_HEAD_INCOMPLETE:
        if ((size_t)n >= cap) {
            d->counters.heads_too_large++;
            pending_answer(p, CS_ERR_HEAD_TOO_LARGE, "the request head is larger than limits.head_bytes");
        } else if (events & (CS_IO_RDHUP | CS_IO_HUP | CS_IO_ERR)) {
            pending_end(p, 1); /* the client gave up half-way */
        }
        return;
    case CS_HEAD_WEBSOCKET:
    case CS_HEAD_HTTP:
        if (p->reserve) {
            if (kind == CS_HEAD_HTTP && is_health_request(peek, head_len))
                pending_health(p);
            else
                pending_full(p);
            return;
        }
        pending_offer(p, kind == CS_HEAD_WEBSOCKET, peek, head_len, (size_t)n);
        return;
    }
}

static void on_accept(cs_io_t *io, uint32_t events)
{
    cs_listener_t *l = io->data;
    cs_daemon_t *d = l->d;
    (void)events;

    for (int i = 0; i < 256; i++) {
        struct sockaddr_storage addr;
        socklen_t alen = sizeof(addr);
        int fd = accept4(l->fd, (struct sockaddr *)&addr, &alen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            cs_accept_backoff_failed(&l->backoff, errno);
            return;
        }
        cs_accept_backoff_ok(&l->backoff);
        pending_t *p = calloc(1, sizeof(*p));
        if (p == NULL) {
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        p->l = l;
        p->fd = fd;
        p->addr = addr;
        p->addrlen = alen;
        /* Connections over the limit that are being answered do not count against it. */
        int over = d->clients - l->n_refused - l->n_reserve >= d->cfg->max_clients;
        d->clients++;
        d->counters.tcp_accepted++;
        DL_APPEND(l->list, p);
        l->n_pending++;
        cs_io_init(&p->io, d->loop, fd, on_pending_io, p);
        cs_timer_init(&p->timer, d->loop, on_head_timeout, p);
        if (over && l->n_reserve >= CS_LISTENER_HEALTH_RESERVE) {
            pending_full(p);
            continue;
        }
        if (over) {
            /* A few connections over the limit wait briefly for their head: a health probe gets its
             * 200 however busy the daemon is, anything else its 503. */
            p->reserve = 1;
            l->n_reserve++;
            cs_timer_start(&p->timer, HEALTH_HEAD_MS);
        } else {
            cs_timer_start(&p->timer, (int64_t)d->cfg->head_timeout_s * 1000);
        }
        if (cs_io_start(&p->io, CS_IO_READ | CS_IO_RDHUP | CS_IO_EDGE) != 0) {
            pending_end(p, 1);
            continue;
        }
        /* The head often arrives with the connection: look now rather than wait for an edge. */
        on_pending_io(&p->io, 0);
    }
}

int cs_listener_new(cs_listener_t **out, cs_daemon_t *d, char *err, size_t errlen)
{
    struct addrinfo hints, *res = NULL, *ai;
    char port[8];
    int rc, fd = -1, one = 1;
    cs_listener_t *l = calloc(1, sizeof(*l));

    if (l == NULL)
        return -ENOMEM;
    l->d = d;
    l->fd = -1;
    cs_buf_init(&l->peek, d->cfg->head_bytes);
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(port, sizeof(port), "%u", d->cfg->listen_port);
    rc = getaddrinfo(d->cfg->listen_host, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "listen %s: %s", d->cfg->listen, gai_strerror(rc));
        rc = -EINVAL;
        goto fail;
    }
    rc = -EADDRNOTAVAIL;
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            rc = -errno;
            continue;
        }
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 4096) == 0)
            break;
        rc = -errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        snprintf(err, errlen, "listen %s: %s", d->cfg->listen, strerror(-rc));
        goto fail;
    }
    l->fd = fd;
    cs_io_init(&l->io, d->loop, fd, on_accept, l);
    cs_accept_backoff_init(&l->backoff, &l->io, "tcp", &d->counters.accept_backoffs);
    if ((rc = cs_io_start(&l->io, CS_IO_READ)) != 0) {
        snprintf(err, errlen, "listen %s: %s", d->cfg->listen, strerror(-rc));
        goto fail;
    }
    *out = l;
    return 0;

fail:
    if (l->fd >= 0)
        close(l->fd);
    cs_buf_free(&l->peek);
    free(l);
    return rc;
}

void cs_listener_close(cs_listener_t *l)
{
    if (l->fd >= 0) {
        cs_accept_backoff_stop(&l->backoff);
        cs_io_stop(&l->io);
        close(l->fd);
        l->fd = -1;
    }
    while (l->list != NULL)
        pending_end(l->list, 1);
}

size_t cs_listener_pending(const cs_listener_t *l)
{
    return l->n_pending;
}

void cs_listener_over_limit(const cs_listener_t *l, size_t *refused, size_t *reserve)
{
    *refused = l->n_refused;
    *reserve = l->n_reserve;
}

void cs_listener_free(cs_listener_t *l)
{
    if (l == NULL)
        return;
    cs_listener_close(l);
    cs_buf_free(&l->peek);
    free(l);
}
