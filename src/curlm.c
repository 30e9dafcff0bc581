/*
 * curlm.c - libcurl's multi interface on cs_loop (see curlm.h).
 *
 * curl tells us, per socket, what to wait for (socket callback) and how long it may wait at most
 * (timer callback); we tell it what happened with curl_multi_socket_action and then collect finished
 * transfers with curl_multi_info_read. A socket's watch is freed at the end of the loop turn, never in
 * the callback that ends it (an event for it may still be in the loop's batch).
 */
#include "curlm.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

typedef struct curlm_sock {
    cs_io_t io;
    cs_curlm_t *m;
    struct curlm_sock *next_dead;
} curlm_sock_t;

struct cs_curlm {
    CURLM *multi;
    cs_loop_t *loop;
    cs_timer_t timer;
    cs_curlm_done_cb done;
    size_t running;
    curlm_sock_t *dead; /* watches to free at the end of the turn */
    cs_defer_t reap;
    int in_action;     /* inside curl_multi_socket_action: finished transfers are collected after it */
    uint64_t spent_ns; /* loop time spent in curl and the done callbacks (cs_curlm_spent_ns) */
};

uint64_t cs_curlm_clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void reap(void *data)
{
    cs_curlm_t *m = data;
    while (m->dead != NULL) {
        curlm_sock_t *s = m->dead;
        m->dead = s->next_dead;
        free(s);
    }
}

static void collect(cs_curlm_t *m)
{
    CURLMsg *msg;
    int left;

    while ((msg = curl_multi_info_read(m->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *easy = msg->easy_handle;
        CURLcode rc = msg->data.result;
        long status = 0;
        void *priv = NULL;
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&priv);
        curl_multi_remove_handle(m->multi, easy);
        m->running--;
        m->done(easy, rc, status, priv);
    }
}

static void action(cs_curlm_t *m, curl_socket_t fd, int flags)
{
    int still;
    uint64_t t0 = cs_curlm_clock_ns();
    CURLMcode mc = curl_multi_socket_action(m->multi, fd, flags, &still);
    if (mc != CURLM_OK)
        cs_log_error("webhooks: curl_multi_socket_action: %s", curl_multi_strerror(mc));
    collect(m);
    m->spent_ns += cs_curlm_clock_ns() - t0;
}

static void on_io(cs_io_t *io, uint32_t events)
{
    curlm_sock_t *s = io->data;
    int flags = 0;

    if (events & (CS_IO_READ | CS_IO_HUP | CS_IO_RDHUP))
        flags |= CURL_CSELECT_IN;
    if (events & CS_IO_WRITE)
        flags |= CURL_CSELECT_OUT;
    if (events & CS_IO_ERR)
        flags |= CURL_CSELECT_ERR;
    action(s->m, io->fd, flags);
}

static void on_timer(cs_timer_t *t)
{
    action(t->data, CURL_SOCKET_TIMEOUT, 0);
}

static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    cs_curlm_t *m = userp;
    curlm_sock_t *s = socketp;
    uint32_t ev = 0;

    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (s != NULL) {
            cs_io_stop(&s->io);
            curl_multi_assign(m->multi, fd, NULL);
            s->next_dead = m->dead;
            m->dead = s;
            cs_defer(m->loop, &m->reap, reap, m);
        }
        return 0;
    }
    if (s == NULL) {
        s = calloc(1, sizeof(*s));
        if (s == NULL) {
            cs_log_error("webhooks: out of memory for a socket watch");
            return -1; /* curl fails the transfer: it is retried */
        }
        s->m = m;
        cs_io_init(&s->io, m->loop, fd, on_io, s);
        curl_multi_assign(m->multi, fd, s);
    }
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        ev |= CS_IO_READ;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        ev |= CS_IO_WRITE;
    int rc = cs_io_start(&s->io, ev);
    if (rc != 0) {
        cs_log_error("webhooks: watching a socket: %s", strerror(-rc));
        return -1;
    }
    return 0;
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    cs_curlm_t *m = userp;

    (void)multi;
    if (timeout_ms < 0)
        cs_timer_stop(&m->timer);
    else
        cs_timer_start(&m->timer, timeout_ms); /* 0: at the end of this turn, never from inside curl */
    return 0;
}

int cs_curlm_new(cs_curlm_t **out, cs_loop_t *loop, cs_curlm_done_cb done)
{
    cs_curlm_t *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return -ENOMEM;
    m->multi = curl_multi_init();
    if (m->multi == NULL) {
        free(m);
        return -ENOMEM;
    }
    m->loop = loop;
    m->done = done;
    cs_timer_init(&m->timer, loop, on_timer, m);
    curl_multi_setopt(m->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(m->multi, CURLMOPT_SOCKETDATA, m);
    curl_multi_setopt(m->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(m->multi, CURLMOPT_TIMERDATA, m);
    /* Keep-alive: one connection per destination is reused, several when transfers overlap. */
    curl_multi_setopt(m->multi, CURLMOPT_MAXCONNECTS, 256L);
    *out = m;
    return 0;
}

void cs_curlm_free(cs_curlm_t *m)
{
    if (m == NULL)
        return;
    cs_timer_stop(&m->timer);
    curl_multi_cleanup(m->multi); /* closes the cached connections: socket_cb REMOVEs their watches */
    cs_defer_cancel(m->loop, &m->reap);
    reap(m);
    free(m);
}

int cs_curlm_add(cs_curlm_t *m, CURL *easy)
{
    CURLMcode mc = curl_multi_add_handle(m->multi, easy);
    if (mc != CURLM_OK) {
        cs_log_error("webhooks: curl_multi_add_handle: %s", curl_multi_strerror(mc));
        return -ENOMEM;
    }
    m->running++;
    return 0;
}

void cs_curlm_remove(cs_curlm_t *m, CURL *easy)
{
    if (curl_multi_remove_handle(m->multi, easy) == CURLM_OK)
        m->running--;
}

size_t cs_curlm_running(const cs_curlm_t *m)
{
    return m->running;
}

uint64_t cs_curlm_spent_ns(const cs_curlm_t *m)
{
    return m->spent_ns;
}

/* A response body is not wanted: read and dropped (curl's default would write it to stdout). */
static size_t discard(char *p, size_t size, size_t n, void *data)
{
    (void)p;
    (void)data;
    return size * n;
}

CURLcode cs_curlm_easy_defaults(CURL *easy, long connect_ms, long total_ms)
{
    CURLcode rc = CURLE_OK;
#define SET(opt, v)                                                                                          \
    do {                                                                                                     \
        if (rc == CURLE_OK)                                                                                  \
            rc = curl_easy_setopt(easy, opt, v);                                                             \
    } while (0)
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    SET(CURLOPT_TIMEOUT_MS, total_ms);
    SET(CURLOPT_TCP_KEEPALIVE, 1L);
    SET(CURLOPT_USERAGENT, "crewstream/" CS_VERSION);
    SET(CURLOPT_WRITEFUNCTION, discard);
#undef SET
    return rc;
}
