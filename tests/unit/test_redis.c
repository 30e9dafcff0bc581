/*
 * test_redis.c - hiredis on our loop (redis.c) against a real redis-server on a Unix socket: connect and
 * report up, many pipelined requests answered in order, pub/sub on a second connection, a server that
 * hangs (SIGSTOP) times requests out and is connected again when it resumes, a server killed and
 * started again, a pub/sub connection killed with CLIENT KILL TYPE pubsub, and an address nobody
 * listens on.
 */
#include "../../common/buf.c"
#include "../../src/log.c"
#include "../../src/loop.c"
#include "../../src/redis.c"

#include "ctest.h"
#include "redis_server.h"

static test_redis_t srv;
static cs_loop_t *loop;

/* ---- driving the loop until something holds ---- */

typedef int (*cond_fn)(void);
static cond_fn until_cond;

static void on_poll(cs_timer_t *t)
{
    if (until_cond())
        cs_loop_stop(loop);
    else
        cs_timer_start(t, 5);
}

static void on_deadline(cs_timer_t *t)
{
    (void)t;
    cs_loop_stop(loop);
}

/* Runs the loop until cond() or ms pass; returns cond(). */
static int run_until(cond_fn cond, int ms)
{
    cs_timer_t poll, deadline;
    until_cond = cond;
    if (cond())
        return 1;
    cs_timer_init(&poll, loop, on_poll, NULL);
    cs_timer_init(&deadline, loop, on_deadline, NULL);
    cs_loop_update_now(loop);
    cs_timer_start(&poll, 5);
    cs_timer_start(&deadline, ms);
    cs_loop_run(loop);
    cs_timer_stop(&poll);
    cs_timer_stop(&deadline);
    return cond();
}

/* ---- state and replies ---- */

typedef struct watch {
    int ups, downs;
    int up;
    char why[256];
} watch_t;

static void on_state(cs_redis_t *r, int up, const char *why, void *data)
{
    watch_t *w = data;
    (void)r;
    if (up)
        w->ups++;
    else
        w->downs++;
    w->up = up;
    snprintf(w->why, sizeof(w->why), "%s", why);
}

static watch_t w1, w2;
static int w1_up(void)
{
    return w1.up;
}
static int w1_down(void)
{
    return w1.downs > 0 && !w1.up;
}
static int w2_up(void)
{
    return w2.up;
}

#define N_PIPE 2000
static long long got[N_PIPE];
static int n_got, n_null;

static void on_incr(cs_redis_t *r, const redisReply *rep, void *data)
{
    (void)r;
    if (rep == NULL) {
        n_null++;
        return;
    }
    if (rep->type == REDIS_REPLY_INTEGER && n_got < N_PIPE)
        got[(intptr_t)data] = rep->integer;
    n_got++;
}

static int all_got(void)
{
    return n_got + n_null == N_PIPE;
}

static int sent_n;
static int one_done(void)
{
    return n_got + n_null >= sent_n;
}

static int send_incr(cs_redis_t *r, intptr_t i)
{
    const char *argv[2] = {"INCR", "k"};
    size_t lens[2] = {4, 1};
    return cs_redis_command(r, on_incr, (void *)i, 2, argv, lens);
}

/* Connects, answers many requests sent in one turn, in order (one pipeline, one batch of writes). */
static void test_connect_and_pipeline(void)
{
    cs_redis_t *r;
    cs_redis_opts_t o = {
        .addr = srv.addr, .name = "cs-test", .timeout_ms = 1000, .on_state = on_state, .data = &w1};

    memset(&w1, 0, sizeof(w1));
    REQUIRE(cs_redis_new(&r, loop, &o) == 0);
    CHECK(cs_redis_command(r, on_incr, NULL, 0, NULL, NULL) == -ENOTCONN); /* not yet connected */
    REQUIRE(run_until(w1_up, 3000));
    CHECK(w1.ups == 1 && w1.downs == 0);
    n_got = n_null = 0;
    for (intptr_t i = 0; i < N_PIPE; i++)
        REQUIRE(send_incr(r, i) == 0);
    REQUIRE(run_until(all_got, 5000));
    CHECK(n_null == 0);
    int in_order = 1;
    for (int i = 0; i < N_PIPE; i++)
        if (got[i] != i + 1)
            in_order = 0;
    CHECK(in_order);
    cs_redis_stats_t st;
    cs_redis_stats(r, &st);
    CHECK(st.outstanding == 0 && st.requests == N_PIPE && st.connects == 1);
    /* Freeing with requests in flight calls each back with NULL, and on_state not at all. */
    n_got = n_null = 0;
    REQUIRE(send_incr(r, 0) == 0);
    cs_redis_free(r);
    CHECK(n_null == 1 && w1.downs == 0);
}

/* ---- pub/sub ---- */

static int n_msgs, n_confirm, n_sub_null;
static char last_msg[64];

static void on_sub(cs_redis_t *r, const redisReply *rep, void *data)
{
    (void)r;
    (void)data;
    if (rep == NULL) {
        n_sub_null++;
        return;
    }
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 3)
        return;
    if (strcmp(rep->element[0]->str, "subscribe") == 0)
        n_confirm++;
    else if (strcmp(rep->element[0]->str, "message") == 0) {
        n_msgs++;
        snprintf(last_msg, sizeof(last_msg), "%.*s", (int)rep->element[2]->len, rep->element[2]->str);
    }
}

static int confirmed(void)
{
    return n_confirm > 0;
}
static int got_msg(void)
{
    return n_msgs > 0;
}
static int sub_lost_and_back(void)
{
    return n_sub_null > 0 && w2.up && w2.downs > 0;
}

static void on_ignore(cs_redis_t *r, const redisReply *rep, void *data)
{
    (void)r;
    (void)rep;
    (void)data;
}

static void publish(cs_redis_t *r, const char *msg)
{
    const char *argv[3] = {"PUBLISH", "chan", msg};
    size_t lens[3] = {7, 4, strlen(msg)};
    CHECK(cs_redis_command(r, on_ignore, NULL, 3, argv, lens) == 0);
}

static void test_pubsub_and_client_kill(void)
{
    cs_redis_t *cmd, *sub;
    cs_redis_opts_t o1 = {.addr = srv.addr, .name = "cs-cmd", .on_state = on_state, .data = &w1};
    cs_redis_opts_t o2 = {.addr = srv.addr, .name = "cs-sub", .on_state = on_state, .data = &w2};

    memset(&w1, 0, sizeof(w1));
    memset(&w2, 0, sizeof(w2));
    REQUIRE(cs_redis_new(&cmd, loop, &o1) == 0);
    REQUIRE(cs_redis_new(&sub, loop, &o2) == 0);
    REQUIRE(run_until(w1_up, 3000) && run_until(w2_up, 3000));
    n_msgs = n_confirm = n_sub_null = 0;
    REQUIRE(cs_redis_subscribe(sub, "chan", on_sub, NULL) == 0);
    REQUIRE(run_until(confirmed, 3000));
    publish(cmd, "hello");
    REQUIRE(run_until(got_msg, 3000));
    CHECK_STR(last_msg, "hello");

    /* The pub/sub connection killed by Redis: its subscription ends (NULL), down, then up again. */
    const char *argv[4] = {"CLIENT", "KILL", "TYPE", "pubsub"};
    size_t lens[4] = {6, 4, 4, 6};
    CHECK(cs_redis_command(cmd, on_ignore, NULL, 4, argv, lens) == 0);
    REQUIRE(run_until(sub_lost_and_back, 5000));
    CHECK(w2.downs == 1 && w2.ups == 2);
    CHECK(w1.downs == 0); /* the command connection is untouched */
    n_confirm = n_msgs = 0;
    REQUIRE(cs_redis_subscribe(sub, "chan", on_sub, NULL) == 0);
    REQUIRE(run_until(confirmed, 3000));
    publish(cmd, "again");
    REQUIRE(run_until(got_msg, 3000));
    CHECK_STR(last_msg, "again");
    cs_redis_free(sub);
    cs_redis_free(cmd);
}

/* ---- faults ---- */

static int w1_up_again(void)
{
    return w1.up && w1.ups >= 2;
}

/* A server that stops answering: the request times out (NULL), the connection is reported down and made
 * again once the server answers again. */
static void test_timeout(void)
{
    cs_redis_t *r;
    cs_redis_opts_t o = {.addr = srv.addr, .timeout_ms = 300, .on_state = on_state, .data = &w1};
    cs_redis_stats_t st;

    memset(&w1, 0, sizeof(w1));
    REQUIRE(cs_redis_new(&r, loop, &o) == 0);
    REQUIRE(run_until(w1_up, 3000));
    kill(srv.pid, SIGSTOP);
    n_got = n_null = 0;
    sent_n = 3;
    for (int i = 0; i < 3; i++)
        REQUIRE(send_incr(r, i) == 0);
    int64_t t0 = cs_loop_update_now(loop);
    REQUIRE(run_until(one_done, 3000));
    int64_t waited = cs_loop_update_now(loop) - t0;
    CHECK(n_null == 3 && n_got == 0);
    CHECK(waited >= 250 && waited < 1500);
    REQUIRE(run_until(w1_down, 1000));
    CHECK(strstr(w1.why, "no reply within 300 ms") != NULL);
    CHECK(cs_redis_up(r) == 0);
    CHECK(send_incr(r, 0) == -ENOTCONN); /* refused at once while down: the callback is never called */
    cs_redis_stats(r, &st);
    CHECK(st.timeouts == 1 && st.losses == 1 && st.failed == 3 && st.outstanding == 0);
    kill(srv.pid, SIGCONT);
    REQUIRE(run_until(w1_up_again, 8000));
    n_got = n_null = 0;
    sent_n = 1;
    REQUIRE(send_incr(r, 0) == 0);
    REQUIRE(run_until(one_done, 3000));
    CHECK(n_got == 1);
    cs_redis_free(r);
}

/* A server killed: down with the reason; started again: up again (back-off retries meanwhile). */
static void test_server_restart(void)
{
    cs_redis_t *r;
    cs_redis_opts_t o = {.addr = srv.addr, .on_state = on_state, .data = &w1};

    memset(&w1, 0, sizeof(w1));
    REQUIRE(cs_redis_new(&r, loop, &o) == 0);
    REQUIRE(run_until(w1_up, 3000));
    n_got = n_null = 0;
    sent_n = 1;
    test_redis_kill(&srv);
    REQUIRE(run_until(w1_down, 3000));
    fprintf(stderr, "   down: %s\n", w1.why);
    CHECK(w1.why[0] != '\0');
    test_redis_sleep_ms(400); /* a few attempts fail meanwhile: reported once */
    REQUIRE(run_until(w1_down, 500));
    CHECK(w1.downs == 1);
    REQUIRE(test_redis_start(&srv) == 0);
    REQUIRE(run_until(w1_up_again, 8000));
    REQUIRE(send_incr(r, 0) == 0);
    REQUIRE(run_until(one_done, 3000));
    CHECK(n_got == 1 && got[0] == 1); /* a new server: the key is new */
    cs_redis_free(r);
}

/* Nobody listens: reported down (once) with why, retried, never up. */
static void test_nobody_listens(void)
{
    cs_redis_t *r;
    cs_redis_opts_t o = {.addr = "unix:/nonexistent/cs-test.sock", .on_state = on_state, .data = &w1};

    memset(&w1, 0, sizeof(w1));
    REQUIRE(cs_redis_new(&r, loop, &o) == 0);
    REQUIRE(run_until(w1_down, 2000));
    fprintf(stderr, "   %s\n", w1.why);
    CHECK(strstr(w1.why, "cannot connect") != NULL);
    run_until(w1_up, 400);
    CHECK(w1.downs == 1 && w1.ups == 0);
    cs_redis_free(r);
    CHECK(cs_redis_new(&r, loop, &(cs_redis_opts_t){.addr = "tcp://x:1"}) == -EINVAL);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (test_redis_bin() == NULL) {
        fprintf(stderr, "redis-server is not installed (scripts/deps test): skipped\n");
        return 0;
    }
    REQUIRE(test_redis_start(&srv) == 0);
    REQUIRE(cs_loop_new(&loop) == 0);
    RUN(test_connect_and_pipeline);
    RUN(test_pubsub_and_client_kill);
    RUN(test_timeout);
    RUN(test_server_restart);
    RUN(test_nobody_listens);
    cs_loop_free(loop);
    test_redis_cleanup(&srv);
    CT_DONE();
}
