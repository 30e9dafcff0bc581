/*
 * loop.h - the one event loop: file descriptors, timers, signals, deferred calls
 * and before-sleep hooks, in a single thread.
 *
 * Only loop.c includes <sys/epoll.h>. Interest changes cost an epoll_ctl only when
 * the interest really changed. Objects are never freed inside the callback that
 * noticed their end: such work goes through cs_defer and runs at the end of the
 * loop turn, before the hooks flush what the turn queued (Redis' beforeSleep).
 */
#ifndef CS_LOOP_H
#define CS_LOOP_H

#include <stddef.h>
#include <stdint.h>

typedef struct cs_loop cs_loop_t;
typedef struct cs_io cs_io_t;
typedef struct cs_timer cs_timer_t;
typedef struct cs_defer cs_defer_t;

/* Interest and readiness bits; numerically the epoll ones. */
#define CS_IO_READ  0x001u
#define CS_IO_WRITE 0x004u
#define CS_IO_ERR   0x008u
#define CS_IO_HUP   0x010u
#define CS_IO_RDHUP 0x2000u
#define CS_IO_EDGE  (1u << 31)

typedef void (*cs_io_cb)(cs_io_t *io, uint32_t events);
typedef void (*cs_timer_cb)(cs_timer_t *timer);
typedef void (*cs_defer_cb)(void *data);
/** A before-sleep hook: flushes what the turn queued and returns the longest it may sleep (ms, -1 = no
 * limit, 0 = there is more to do at once). */
typedef int (*cs_prepare_cb)(void *data);
typedef void (*cs_signal_cb)(int signo, void *data);

/** A watched file descriptor. The caller owns the memory; stop it before freeing. */
struct cs_io {
    cs_loop_t *loop;
    int fd;
    cs_io_cb cb;
    void *data;
    uint32_t _events; /* interest registered with the kernel */
    int _active;
};

/** A one-shot timer on the monotonic clock, in milliseconds. */
struct cs_timer {
    cs_loop_t *loop;
    int64_t due;
    cs_timer_cb cb;
    void *data;
    size_t _heap_idx; /* 0 = not armed, else 1-based index in the heap */
    uint64_t _pass;   /* the loop's timer pass it was armed in */
};

/** A call to make once at the end of this loop turn. */
struct cs_defer {
    cs_defer_cb cb;
    void *data;
    cs_defer_t *_next;
    int _queued;
};

/** Creates a loop; returns 0 or -errno. */
int cs_loop_new(cs_loop_t **out);

/** Frees a loop; every io must have been stopped, timers are forgotten. */
void cs_loop_free(cs_loop_t *loop);

/** Runs until cs_loop_stop; returns 0, or -errno when epoll itself fails. */
int cs_loop_run(cs_loop_t *loop);

/** Makes cs_loop_run return after the current turn. */
void cs_loop_stop(cs_loop_t *loop);

/** Returns the monotonic time in ms, cached at the start of the loop turn. */
int64_t cs_loop_now(const cs_loop_t *loop);

/** Re-reads the monotonic clock into the cache and returns it. */
int64_t cs_loop_update_now(cs_loop_t *loop);

/** Returns the nanoseconds the loop has slept in epoll_wait so far (its idle time: budgets that share the
 * loop between kinds of work read it). */
uint64_t cs_loop_idle_ns(const cs_loop_t *loop);

/** Registers a hook run before each sleep, in registration order; returns 0 or -ENOMEM. */
int cs_loop_add_prepare(cs_loop_t *loop, cs_prepare_cb cb, void *data);

/** Delivers signo through the loop (signalfd) instead of asynchronously; returns 0 or -errno. */
int cs_loop_signal(cs_loop_t *loop, int signo, cs_signal_cb cb, void *data);

/** Prepares an io for fd; no system call. */
void cs_io_init(cs_io_t *io, cs_loop_t *loop, int fd, cs_io_cb cb, void *data);

/** Sets the interest of an io (adding it when stopped); returns 0 or -errno. */
int cs_io_start(cs_io_t *io, uint32_t events);

/** Removes an io from the loop; safe on a stopped io. Call before closing the fd. */
void cs_io_stop(cs_io_t *io);

/** Prepares a timer; no system call. */
void cs_timer_init(cs_timer_t *timer, cs_loop_t *loop, cs_timer_cb cb, void *data);

/** Arms (or re-arms) a timer to fire after_ms from the loop's current time. */
void cs_timer_start(cs_timer_t *timer, int64_t after_ms);

/** Disarms a timer; safe on one that is not armed. */
void cs_timer_stop(cs_timer_t *timer);

/** Returns nonzero when the timer is armed. */
int cs_timer_active(const cs_timer_t *timer);

/** Queues d->cb(d->data) for the end of this turn; a no-op when it is already queued. */
void cs_defer(cs_loop_t *loop, cs_defer_t *d, cs_defer_cb cb, void *data);

/** Removes a queued deferred call; safe when it is not queued. */
void cs_defer_cancel(cs_loop_t *loop, cs_defer_t *d);

#endif
