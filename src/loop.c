/*
 * loop.c - epoll backend of the event loop; the only file that includes <sys/epoll.h>.
 */
#include "loop.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS     256
#define MAX_PREPARES   16
#define MAX_SIGNALS    8
#define PREPARE_ROUNDS 8

struct cs_loop {
    int epfd;
    int stop;
    int64_t now;
    uint64_t idle_ns; /* slept in epoll_wait (cs_loop_idle_ns) */
    /* Binary min-heap of armed timers, 1-based. */
    cs_timer_t **heap;
    size_t heap_len, heap_cap;
    uint64_t timer_pass; /* counts run_timers' passes: a timer armed in the current one waits a turn */
    cs_defer_t *defer_head, *defer_tail;
    struct {
        cs_prepare_cb cb;
        void *data;
    } prepares[MAX_PREPARES];
    size_t n_prepares;
    /* Signals through one signalfd. */
    cs_io_t sig_io;
    sigset_t sig_mask;
    struct {
        int signo;
        cs_signal_cb cb;
        void *data;
    } signals[MAX_SIGNALS];
    size_t n_signals;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void run_deferred(cs_loop_t *loop);

int cs_loop_new(cs_loop_t **out)
{
    cs_loop_t *loop = calloc(1, sizeof(*loop));
    if (loop == NULL)
        return -ENOMEM;
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0) {
        int err = -errno;
        free(loop);
        return err;
    }
    loop->now = mono_ms();
    sigemptyset(&loop->sig_mask);
    loop->sig_io.fd = -1;
    *out = loop;
    return 0;
}

void cs_loop_free(cs_loop_t *loop)
{
    if (loop == NULL)
        return;
    run_deferred(loop); /* frees that were queued during the last turn's shutdown */
    if (loop->sig_io.fd >= 0) {
        cs_io_stop(&loop->sig_io);
        close(loop->sig_io.fd);
    }
    close(loop->epfd);
    free(loop->heap);
    free(loop);
}

int64_t cs_loop_now(const cs_loop_t *loop)
{
    return loop->now;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t cs_loop_idle_ns(const cs_loop_t *loop)
{
    return loop->idle_ns;
}

int64_t cs_loop_update_now(cs_loop_t *loop)
{
    loop->now = mono_ms();
    return loop->now;
}

void cs_loop_stop(cs_loop_t *loop)
{
    loop->stop = 1;
}

int cs_loop_add_prepare(cs_loop_t *loop, cs_prepare_cb cb, void *data)
{
    if (loop->n_prepares == MAX_PREPARES)
        return -ENOMEM;
    loop->prepares[loop->n_prepares].cb = cb;
    loop->prepares[loop->n_prepares].data = data;
    loop->n_prepares++;
    return 0;
}

/* ---- file descriptors ---- */

void cs_io_init(cs_io_t *io, cs_loop_t *loop, int fd, cs_io_cb cb, void *data)
{
    io->loop = loop;
    io->fd = fd;
    io->cb = cb;
    io->data = data;
    io->_events = 0;
    io->_active = 0;
}

int cs_io_start(cs_io_t *io, uint32_t events)
{
    struct epoll_event ev;
    uint32_t want = events & ~CS_IO_EDGE;

    if (events & CS_IO_EDGE)
        want |= EPOLLET;
    if (io->_active && io->_events == want)
        return 0;
    memset(&ev, 0, sizeof(ev));
    ev.events = want;
    ev.data.ptr = io;
    if (epoll_ctl(io->loop->epfd, io->_active ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, io->fd, &ev) != 0)
        return -errno;
    io->_active = 1;
    io->_events = want;
    return 0;
}

void cs_io_stop(cs_io_t *io)
{
    if (!io->_active)
        return;
    epoll_ctl(io->loop->epfd, EPOLL_CTL_DEL, io->fd, NULL);
    io->_active = 0;
    io->_events = 0;
}

/* ---- timers: a binary min-heap keyed by due time ---- */

static void heap_set(cs_loop_t *loop, size_t i, cs_timer_t *t)
{
    loop->heap[i] = t;
    t->_heap_idx = i;
}

static void heap_up(cs_loop_t *loop, size_t i)
{
    cs_timer_t *t = loop->heap[i];
    while (i > 1 && loop->heap[i / 2]->due > t->due) {
        heap_set(loop, i, loop->heap[i / 2]);
        i /= 2;
    }
    heap_set(loop, i, t);
}

static void heap_down(cs_loop_t *loop, size_t i)
{
    cs_timer_t *t = loop->heap[i];
    for (;;) {
        size_t c = i * 2;
        if (c > loop->heap_len)
            break;
        if (c + 1 <= loop->heap_len && loop->heap[c + 1]->due < loop->heap[c]->due)
            c++;
        if (loop->heap[c]->due >= t->due)
            break;
        heap_set(loop, i, loop->heap[c]);
        i = c;
    }
    heap_set(loop, i, t);
}

void cs_timer_init(cs_timer_t *timer, cs_loop_t *loop, cs_timer_cb cb, void *data)
{
    timer->loop = loop;
    timer->cb = cb;
    timer->data = data;
    timer->due = 0;
    timer->_heap_idx = 0;
}

int cs_timer_active(const cs_timer_t *timer)
{
    return timer->_heap_idx != 0;
}

void cs_timer_stop(cs_timer_t *timer)
{
    cs_loop_t *loop = timer->loop;
    size_t i = timer->_heap_idx;

    if (i == 0)
        return;
    timer->_heap_idx = 0;
    cs_timer_t *last = loop->heap[loop->heap_len--];
    if (last == timer)
        return;
    heap_set(loop, i, last);
    heap_up(loop, i);
    heap_down(loop, last->_heap_idx);
}

void cs_timer_start(cs_timer_t *timer, int64_t after_ms)
{
    cs_loop_t *loop = timer->loop;

    cs_timer_stop(timer);
    timer->due = loop->now + (after_ms < 0 ? 0 : after_ms);
    timer->_pass = loop->timer_pass;
    if (loop->heap_len + 1 >= loop->heap_cap) {
        size_t cap = loop->heap_cap ? loop->heap_cap * 2 : 64;
        cs_timer_t **h = realloc(loop->heap, cap * sizeof(*h));
        if (h == NULL)
            abort(); /* A timer that silently never fires is worse than stopping. */
        loop->heap = h;
        loop->heap_cap = cap;
    }
    loop->heap_len++;
    heap_set(loop, loop->heap_len, timer);
    heap_up(loop, loop->heap_len);
}

static void run_timers(cs_loop_t *loop)
{
    /* Timers armed during this pass for "now" run in the next turn, so a timer that re-arms itself
     * with 0 cannot starve the loop. */
    int64_t now = loop->now;
    uint64_t pass = ++loop->timer_pass;
    /* A timer armed by a callback of this pass is at the top when it is due now: the pass ends there,
     * and the turn's epoll_wait gets timeout 0, so the rest run at once in the next turn. */
    while (loop->heap_len > 0 && loop->heap[1]->due <= now && loop->heap[1]->_pass != pass) {
        cs_timer_t *t = loop->heap[1];
        cs_timer_stop(t);
        t->cb(t);
    }
}

/* ---- deferred calls ---- */

void cs_defer(cs_loop_t *loop, cs_defer_t *d, cs_defer_cb cb, void *data)
{
    if (d->_queued)
        return;
    d->cb = cb;
    d->data = data;
    d->_next = NULL;
    d->_queued = 1;
    if (loop->defer_tail != NULL)
        loop->defer_tail->_next = d;
    else
        loop->defer_head = d;
    loop->defer_tail = d;
}

void cs_defer_cancel(cs_loop_t *loop, cs_defer_t *d)
{
    cs_defer_t **pp, *prev = NULL;

    if (!d->_queued)
        return;
    for (pp = &loop->defer_head; *pp != NULL; prev = *pp, pp = &(*pp)->_next) {
        if (*pp == d) {
            *pp = d->_next;
            if (loop->defer_tail == d)
                loop->defer_tail = prev;
            break;
        }
    }
    d->_queued = 0;
    d->_next = NULL;
}

static void run_deferred(cs_loop_t *loop)
{
    while (loop->defer_head != NULL) {
        cs_defer_t *d = loop->defer_head;
        loop->defer_head = d->_next;
        if (loop->defer_head == NULL)
            loop->defer_tail = NULL;
        d->_queued = 0;
        d->_next = NULL;
        d->cb(d->data);
    }
}

/* ---- signals ---- */

static void on_signalfd(cs_io_t *io, uint32_t events)
{
    cs_loop_t *loop = io->data;
    struct signalfd_siginfo si;
    (void)events;

    while (read(io->fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        for (size_t i = 0; i < loop->n_signals; i++)
            if (loop->signals[i].signo == (int)si.ssi_signo)
                loop->signals[i].cb((int)si.ssi_signo, loop->signals[i].data);
    }
}

int cs_loop_signal(cs_loop_t *loop, int signo, cs_signal_cb cb, void *data)
{
    int fd;

    if (loop->n_signals == MAX_SIGNALS)
        return -ENOMEM;
    sigaddset(&loop->sig_mask, signo);
    if (sigprocmask(SIG_BLOCK, &loop->sig_mask, NULL) != 0)
        return -errno;
    fd = signalfd(loop->sig_io.fd, &loop->sig_mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (loop->sig_io.fd < 0) {
        cs_io_init(&loop->sig_io, loop, fd, on_signalfd, loop);
        int rc = cs_io_start(&loop->sig_io, CS_IO_READ);
        if (rc != 0)
            return rc;
    }
    loop->signals[loop->n_signals].signo = signo;
    loop->signals[loop->n_signals].cb = cb;
    loop->signals[loop->n_signals].data = data;
    loop->n_signals++;
    return 0;
}

/* ---- the turn ---- */

static int prepare_all(cs_loop_t *loop)
{
    int timeout = -1;

    /* A hook's flush may queue work for another (an HTTP publish wakes WebSockets): go round until
     * every hook is content, a bounded number of times, then poll without sleeping. */
    for (int round = 0; round < PREPARE_ROUNDS; round++) {
        int again = 0;
        timeout = -1;
        run_deferred(loop);
        for (size_t i = 0; i < loop->n_prepares; i++) {
            int t = loop->prepares[i].cb(loop->prepares[i].data);
            if (t == 0)
                again = 1;
            else if (t > 0 && (timeout < 0 || t < timeout))
                timeout = t;
        }
        run_deferred(loop);
        if (!again)
            break;
        timeout = 0;
    }
    if (loop->heap_len > 0) {
        int64_t wait = loop->heap[1]->due - mono_ms();
        if (wait < 0)
            wait = 0;
        if (timeout < 0 || wait < timeout)
            timeout = (int)(wait > 86400000 ? 86400000 : wait);
    }
    return timeout;
}

int cs_loop_run(cs_loop_t *loop)
{
    struct epoll_event evs[MAX_EVENTS];

    loop->stop = 0;
    while (!loop->stop) {
        int timeout = prepare_all(loop);
        if (loop->stop)
            break;
        uint64_t t0 = timeout != 0 ? mono_ns() : 0;
        int n = epoll_wait(loop->epfd, evs, MAX_EVENTS, timeout);
        if (timeout != 0)
            loop->idle_ns += mono_ns() - t0;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        loop->now = mono_ms();
        for (int i = 0; i < n; i++) {
            cs_io_t *io = evs[i].data.ptr;
            /* An earlier callback of this batch may have stopped this io (but not freed it: frees are
             * deferred to the end of the turn). */
            if (io->_active)
                io->cb(io, evs[i].events);
        }
        run_deferred(loop);
        run_timers(loop);
    }
    run_deferred(loop);
    return 0;
}
