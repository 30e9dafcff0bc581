/*
 * test_loop.c - the event loop: timers in due order through the heap, deferred calls at the end of
 * the turn, fd readiness (level and edge), an io stopped by an earlier callback of the same batch,
 * before-sleep hooks that ask for another round, and signals through the signalfd.
 */
#include "../../src/loop.c"

#include "ctest.h"

#include <fcntl.h>

/* ---- timers ---------------------------------------------------------------------------------- */

#define N_TIMERS 500

static int64_t fired_due[N_TIMERS];
static size_t n_fired;

static void on_timer_record(cs_timer_t *t)
{
    fired_due[n_fired++] = t->due;
    if (n_fired == (size_t)(intptr_t)t->data)
        cs_loop_stop(t->loop);
}

static void test_timers_fire_in_order(void)
{
    cs_loop_t *loop;
    static cs_timer_t timers[N_TIMERS];
    size_t armed = 0;

    REQUIRE(cs_loop_new(&loop) == 0);
    n_fired = 0;
    srand(7);
    /* Arm every timer, re-arm some (a re-arm moves it in the heap), and stop some. */
    for (size_t i = 0; i < N_TIMERS; i++) {
        cs_timer_init(&timers[i], loop, on_timer_record, NULL);
        cs_timer_start(&timers[i], rand() % 40);
    }
    for (size_t i = 0; i < N_TIMERS; i += 3)
        cs_timer_start(&timers[i], rand() % 40);
    for (size_t i = 1; i < N_TIMERS; i += 5)
        cs_timer_stop(&timers[i]);
    cs_timer_stop(&timers[1]); /* twice: a no-op */
    for (size_t i = 0; i < N_TIMERS; i++) {
        CHECK(cs_timer_active(&timers[i]) == (i % 5 != 1));
        armed += cs_timer_active(&timers[i]);
    }
    for (size_t i = 0; i < N_TIMERS; i++)
        timers[i].data = (void *)(intptr_t)armed;
    REQUIRE(cs_loop_run(loop) == 0);
    CHECK(n_fired == armed);
    for (size_t i = 1; i < n_fired; i++)
        CHECK(fired_due[i - 1] <= fired_due[i]);
    for (size_t i = 0; i < N_TIMERS; i++)
        CHECK(!cs_timer_active(&timers[i]));
    cs_loop_free(loop);
}

static int rearm_count, turns, rearm_turn[8];

static int count_turn(void *data)
{
    (void)data;
    turns++;
    return -1;
}

static void on_timer_rearm(cs_timer_t *t)
{
    /* A timer re-armed for "now" from its own callback runs in the next turn, not in a loop here. */
    rearm_turn[rearm_count] = turns;
    if (++rearm_count < 5)
        cs_timer_start(t, 0);
    else
        cs_loop_stop(t->loop);
}

static void test_timer_rearm_zero(void)
{
    cs_loop_t *loop;
    cs_timer_t t;

    REQUIRE(cs_loop_new(&loop) == 0);
    rearm_count = 0;
    turns = 0;
    REQUIRE(cs_loop_add_prepare(loop, count_turn, NULL) == 0);
    cs_timer_init(&t, loop, on_timer_rearm, NULL);
    cs_timer_start(&t, 0);
    REQUIRE(cs_loop_run(loop) == 0);
    CHECK(rearm_count == 5);
    for (int i = 1; i < 5; i++)
        CHECK(rearm_turn[i] > rearm_turn[i - 1]); /* each run in a turn of its own */
    cs_loop_free(loop);
}

/* ---- deferred calls -------------------------------------------------------------------------- */

static char order[64];
static size_t order_len;

static void note(char c)
{
    if (order_len + 1 < sizeof(order))
        order[order_len++] = c;
    order[order_len] = '\0';
}

static void on_defer_a(void *data)
{
    (void)data;
    note('a');
}

static void on_defer_b(void *data)
{
    (void)data;
    note('b');
}

static cs_defer_t d_a, d_b, d_c;

static void on_timer_defers(cs_timer_t *t)
{
    note('t');
    cs_defer(t->loop, &d_a, on_defer_a, NULL);
    cs_defer(t->loop, &d_b, on_defer_b, NULL);
    cs_defer(t->loop, &d_a, on_defer_a, NULL); /* already queued: a no-op */
    cs_defer(t->loop, &d_c, on_defer_a, NULL);
    cs_defer_cancel(t->loop, &d_c);
    cs_defer_cancel(t->loop, &d_c); /* not queued: a no-op */
    note('T');
}

static int prepare_stop(void *data)
{
    cs_loop_t *loop = data;
    if (strchr(order, 'b') != NULL)
        cs_loop_stop(loop);
    return -1;
}

static void test_defer_runs_after_callback(void)
{
    cs_loop_t *loop;
    cs_timer_t t;

    REQUIRE(cs_loop_new(&loop) == 0);
    order_len = 0;
    order[0] = '\0';
    cs_timer_init(&t, loop, on_timer_defers, NULL);
    cs_timer_start(&t, 1);
    REQUIRE(cs_loop_add_prepare(loop, prepare_stop, loop) == 0);
    REQUIRE(cs_loop_run(loop) == 0);
    CHECK_STR(order, "tTab");
    CHECK(!d_a._queued && !d_b._queued && !d_c._queued);
    cs_loop_free(loop);
}

/* ---- fd readiness ---------------------------------------------------------------------------- */

struct pipe_io {
    cs_io_t io;
    int wfd;
    int calls;
    struct pipe_io *other; /* stopped by this one's callback */
};

static void on_readable_level(cs_io_t *io, uint32_t events)
{
    struct pipe_io *p = io->data;
    CHECK(events & CS_IO_READ);
    /* Level triggered: not reading keeps it ready; the third call reads and stops the loop. */
    if (++p->calls == 3) {
        char buf[16];
        CHECK(read(io->fd, buf, sizeof(buf)) == 1);
        cs_loop_stop(io->loop);
    }
}

static void on_readable_edge(cs_io_t *io, uint32_t events)
{
    struct pipe_io *p = io->data;
    (void)events;
    p->calls++;
}

static int prepare_count_turns(void *data)
{
    int *turns = data;
    (*turns)++;
    return 5; /* wake at least every 5 ms */
}

static struct pipe_io *make_pipe(cs_loop_t *loop, struct pipe_io *p, cs_io_cb cb)
{
    int fds[2];
    REQUIRE(pipe2(fds, O_NONBLOCK | O_CLOEXEC) == 0);
    memset(p, 0, sizeof(*p));
    cs_io_init(&p->io, loop, fds[0], cb, p);
    p->wfd = fds[1];
    return p;
}

static void close_pipe(struct pipe_io *p)
{
    cs_io_stop(&p->io);
    close(p->io.fd);
    close(p->wfd);
}

static void on_stop_timer(cs_timer_t *t)
{
    cs_loop_stop(t->loop);
}

static void test_io_level_and_edge(void)
{
    cs_loop_t *loop;
    struct pipe_io lv, ed;
    cs_timer_t stop;
    int turns = 0;

    REQUIRE(cs_loop_new(&loop) == 0);
    make_pipe(loop, &lv, on_readable_level);
    make_pipe(loop, &ed, on_readable_edge);
    REQUIRE(cs_io_start(&lv.io, CS_IO_READ) == 0);
    REQUIRE(cs_io_start(&lv.io, CS_IO_READ) == 0); /* same interest: no epoll_ctl, still fine */
    REQUIRE(cs_io_start(&ed.io, CS_IO_READ | CS_IO_EDGE) == 0);
    REQUIRE(cs_loop_add_prepare(loop, prepare_count_turns, &turns) == 0);
    CHECK(write(lv.wfd, "x", 1) == 1);
    CHECK(write(ed.wfd, "y", 1) == 1);
    REQUIRE(cs_loop_run(loop) == 0);
    CHECK(lv.calls == 3);
    /* Edge triggered and never read: reported once however many turns passed. */
    cs_timer_init(&stop, loop, on_stop_timer, NULL);
    cs_timer_start(&stop, 30);
    REQUIRE(cs_loop_run(loop) == 0);
    CHECK(ed.calls == 1);
    CHECK(turns >= 3);
    /* New data is a new edge. */
    CHECK(write(ed.wfd, "z", 1) == 1);
    cs_timer_start(&stop, 30);
    REQUIRE(cs_loop_run(loop) == 0);
    CHECK(ed.calls == 2);
    /* A stopped io is not reported. */
    cs_io_stop(&ed.io);
    cs_io_stop(&ed.io); /* twice: a no-op */
    CHECK(write(ed.wfd, "w", 1) == 1);
    cs_timer_start(&stop, 30);
    REQUIRE(cs_loop_run(loop) == 0);
    CHECK(ed.calls == 2);
    close_pipe(&lv);
    close_pipe(&ed);
    cs_loop_free(loop);
}

static void on_readable_stops_other(cs_io_t *io, uint32_t events)
{
    struct pipe_io *p = io->data;
    char buf[16];
    (void)events;
    p->calls++;
    CHECK(read(io->fd, buf, sizeof(buf)) >= 1);
    if (p->other->io._active)
        cs_io_stop(&p->other->io);
    cs_loop_stop(io->loop);
}

static void test_io_stopped_in_same_batch(void)
{
    cs_loop_t *loop;
    struct pipe_io a, b;

    /* Both pipes are ready in one epoll_wait; whichever runs first stops the other, which must
     * then not be called in the same batch. */
    REQUIRE(cs_loop_new(&loop) == 0);
    make_pipe(loop, &a, on_readable_stops_other);
    make_pipe(loop, &b, on_readable_stops_other);
    a.other = &b;
    b.other = &a;
    REQUIRE(cs_io_start(&a.io, CS_IO_READ) == 0);
    REQUIRE(cs_io_start(&b.io, CS_IO_READ) == 0);
    CHECK(write(a.wfd, "x", 1) == 1);
    CHECK(write(b.wfd, "x", 1) == 1);
    REQUIRE(cs_loop_run(loop) == 0);
    CHECK(a.calls + b.calls == 1);
    close_pipe(&a);
    close_pipe(&b);
    cs_loop_free(loop);
}

/* ---- before-sleep hooks ---------------------------------------------------------------------- */

static int hook_a_calls, hook_b_calls, hook_a_more;

static int hook_a(void *data)
{
    (void)data;
    hook_a_calls++;
    return hook_a_more-- > 0 ? 0 : -1; /* "more to do at once" a few times */
}

static int hook_b(void *data)
{
    cs_loop_t *loop = data;
    hook_b_calls++;
    if (hook_a_more < 0)
        cs_loop_stop(loop);
    return -1;
}

static int hook_forever(void *data)
{
    int *calls = data;
    (*calls)++;
    return 0; /* always more: the loop must still reach epoll_wait */
}

static void test_prepare_rounds(void)
{
    cs_loop_t *loop;
    cs_timer_t stop;
    int forever = 0;

    REQUIRE(cs_loop_new(&loop) == 0);
    hook_a_calls = hook_b_calls = 0;
    hook_a_more = 3;
    REQUIRE(cs_loop_add_prepare(loop, hook_a, NULL) == 0);
    REQUIRE(cs_loop_add_prepare(loop, hook_b, loop) == 0);
    REQUIRE(cs_loop_run(loop) == 0);
    /* Three rounds asked for more, the fourth was content: every hook ran each round. */
    CHECK(hook_a_calls == 4);
    CHECK(hook_b_calls == 4);
    cs_loop_free(loop);

    /* A hook that always has more work is bounded per turn (PREPARE_ROUNDS), and timers still run. */
    REQUIRE(cs_loop_new(&loop) == 0);
    REQUIRE(cs_loop_add_prepare(loop, hook_forever, &forever) == 0);
    cs_timer_init(&stop, loop, on_stop_timer, NULL);
    cs_timer_start(&stop, 20);
    REQUIRE(cs_loop_run(loop) == 0);
    CHECK(forever >= PREPARE_ROUNDS);
    cs_loop_free(loop);

    /* The table of hooks is bounded; past it the call fails instead of dropping a hook. */
    REQUIRE(cs_loop_new(&loop) == 0);
    for (int i = 0; i < MAX_PREPARES; i++)
        CHECK(cs_loop_add_prepare(loop, hook_forever, &forever) == 0);
    CHECK(cs_loop_add_prepare(loop, hook_forever, &forever) == -ENOMEM);
    cs_loop_free(loop);
}

/* ---- signals --------------------------------------------------------------------------------- */

static int got_signo;

static void on_signal(int signo, void *data)
{
    cs_loop_t *loop = data;
    got_signo = signo;
    cs_loop_stop(loop);
}

static void on_timer_raise(cs_timer_t *t)
{
    (void)t;
    raise(SIGUSR2);
}

static void test_signal_through_loop(void)
{
    cs_loop_t *loop;
    cs_timer_t t;

    REQUIRE(cs_loop_new(&loop) == 0);
    REQUIRE(cs_loop_signal(loop, SIGUSR2, on_signal, loop) == 0);
    cs_timer_init(&t, loop, on_timer_raise, NULL);
    cs_timer_start(&t, 1);
    REQUIRE(cs_loop_run(loop) == 0);
    CHECK(got_signo == SIGUSR2);
    cs_loop_free(loop);
}

int main(void)
{
    RUN(test_timers_fire_in_order);
    RUN(test_timer_rearm_zero);
    RUN(test_defer_runs_after_callback);
    RUN(test_io_level_and_edge);
    RUN(test_io_stopped_in_same_batch);
    RUN(test_prepare_rounds);
    RUN(test_signal_through_loop);
    CT_DONE();
}
