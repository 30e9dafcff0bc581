/*
 * test_await.c - waiting for a human's answer: given after the await (by another
 * connection, while the client blocks), given before it (pushed at once), pushed to
 * the connection that posted the request and remembered, timeouts, unknown requests.
 */
#include <crewstream/client.h>

#include "harness.h"

static daemon_t D;

/* Posts one event on a connection of its own; returns the ack's seq (0 when refused). */
static uint64_t post_once(const char *ev, char *event_id, size_t size)
{
    crewstream_client_t *c = h_open_client(&D, NULL);
    crewstream_ticket_t t;
    crewstream_ack_t a;

    REQUIRE(crewstream_post(c, ev, &t) == 0);
    REQUIRE(crewstream_wait(c, t, 5000, &a) == 0);
    if (event_id != NULL)
        snprintf(event_id, size, "%s", a.event_id);
    crewstream_close(c);
    return a.ok ? a.seq : 0;
}

static uint64_t request(const char *x, const char *task, char *event_id, size_t size)
{
    char ev[256];
    snprintf(
        ev, sizeof(ev),
        "{\"execution_id\":\"%s\",\"type\":\"human_input_required\",\"task_id\":\"%s\",\"prompt\":\"Ship?\"}",
        x, task);
    return post_once(ev, event_id, size);
}

static uint64_t answer(const char *x, const char *req, const char *feedback, int approve)
{
    char ev[512];
    snprintf(ev, sizeof(ev),
             "{\"execution_id\":\"%s\",\"type\":\"human_input_completed\",\"request_event_id\":\"%s\","
             "\"human_feedback\":\"%s\",\"is_approve\":%s,\"event_id\":\"ans-%s\"}",
             x, req, feedback, approve ? "true" : "false", req);
    return post_once(ev, NULL, 0);
}

/* Answers from a child process after ms milliseconds, while the parent blocks. */
static pid_t answer_later(int ms, const char *x, const char *req, const char *feedback, int approve)
{
    pid_t pid = fork();

    REQUIRE(pid >= 0);
    if (pid == 0) {
        h_sleep_ms(ms);
        _exit(answer(x, req, feedback, approve) > 0 ? 0 : 1);
    }
    return pid;
}

static int child_status(pid_t pid)
{
    int st;
    REQUIRE(waitpid(pid, &st, 0) == pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static long elapsed_ms(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (t1.tv_sec - t0->tv_sec) * 1000 + (t1.tv_nsec - t0->tv_nsec) / 1000000;
}

/* Another connection posted the request; this one awaits it, blocks, and gets the answer when given. */
static void test_answer_after_await(void)
{
    crewstream_client_t *c = h_open_client(&D, NULL);
    crewstream_answer_t ans;
    char req[130];
    struct timespec t0;

    REQUIRE(request("aw-1", "t1", req, sizeof(req)) == 1);
    pid_t pid = answer_later(300, "aw-1", req, "ship it", 1);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    REQUIRE(crewstream_await_answer(c, "aw-1", req, 10000, &ans) == 0);
    CHECK(elapsed_ms(&t0) >= 250);
    CHECK(child_status(pid) == 0);
    CHECK_STR(ans.execution_id, "aw-1");
    CHECK_STR(ans.request_event_id, req);
    CHECK_STR(ans.task_id, "t1");
    CHECK_STR(ans.human_feedback, "ship it");
    CHECK(ans.is_approve == 1);
    CHECK(ans.seq == 2);
    char want[160];
    snprintf(want, sizeof(want), "ans-%s", req);
    CHECK_STR(ans.event_id, want);
    CHECK(ans.json != NULL && strstr(ans.json, "\"op\":\"human_input\"") != NULL);
    crewstream_answer_clear(&ans);
    CHECK(ans.json == NULL && ans.execution_id == NULL);
    crewstream_answer_clear(NULL);
    crewstream_close(c);
}

/* The answer exists before the await: it is pushed at once. */
static void test_answer_before_await(void)
{
    crewstream_client_t *c = h_open_client(&D, NULL);
    crewstream_answer_t ans;
    char req[130];

    REQUIRE(request("aw-2", "t1", req, sizeof(req)) == 1);
    REQUIRE(answer("aw-2", req, "no", 0) == 2);
    REQUIRE(crewstream_await_answer(c, "aw-2", req, 5000, &ans) == 0);
    CHECK_STR(ans.human_feedback, "no");
    CHECK(ans.is_approve == 0);
    crewstream_answer_clear(&ans);
    /* Asked again: the same answer again. */
    REQUIRE(crewstream_await_answer(c, "aw-2", req, 5000, &ans) == 0);
    CHECK_STR(ans.human_feedback, "no");
    crewstream_answer_clear(&ans);
    crewstream_stats_t st;
    crewstream_stats(c, &st);
    CHECK(st.answers == 1);
    crewstream_close(c);
}

typedef struct {
    int calls;
    char request[130];
    char feedback[64];
} seen_t;

static void on_answer(void *arg, const crewstream_answer_t *a)
{
    seen_t *s = arg;
    s->calls++;
    snprintf(s->request, sizeof(s->request), "%s", a->request_event_id);
    snprintf(s->feedback, sizeof(s->feedback), "%s", a->human_feedback ? a->human_feedback : "(null)");
}

/*
 * The connection that posts a request is pushed its answer without asking. The push is read by
 * whatever call comes next (here a ping), given to on_answer once, and kept for await_answer, which
 * then returns at once, without a second push counted.
 */
static void test_pushed_and_remembered(void)
{
    static seen_t seen;
    crewstream_options_t o;
    crewstream_client_t *c;
    crewstream_answer_t ans;
    crewstream_ticket_t t;
    crewstream_ack_t a;
    struct timespec t0;

    crewstream_options_init(&o);
    o.on_answer = on_answer;
    o.on_answer_arg = &seen;
    c = h_open_client(&D, &o);
    REQUIRE(
        crewstream_post(c, "{\"execution_id\":\"aw-3\",\"type\":\"human_input_required\",\"task_id\":\"t9\"}",
                        &t) == 0);
    REQUIRE(crewstream_wait(c, t, 5000, &a) == 0 && a.ok);
    REQUIRE(answer("aw-3", a.event_id, "later", 1) == 2);
    for (int i = 0; i < 100 && seen.calls == 0; i++) {
        CHECK(crewstream_ping(c, 5000) == 0);
        h_sleep_ms(10);
    }
    CHECK(seen.calls == 1);
    CHECK_STR(seen.request, a.event_id);
    CHECK_STR(seen.feedback, "later");
    clock_gettime(CLOCK_MONOTONIC, &t0);
    REQUIRE(crewstream_await_answer(c, "aw-3", a.event_id, 5000, &ans) == 0);
    CHECK(elapsed_ms(&t0) < 1000);
    CHECK_STR(ans.task_id, "t9");
    CHECK_STR(ans.human_feedback, "later");
    crewstream_answer_clear(&ans);
    CHECK(crewstream_ping(c, 5000) == 0);
    crewstream_stats_t st;
    crewstream_stats(c, &st);
    CHECK(st.answers == 1);
    CHECK(seen.calls == 1);
    crewstream_close(c);
}

/* The request posted on this connection, not yet acknowledged, awaited at once: the await goes behind it. */
static void test_await_own_unacked_request(void)
{
    crewstream_client_t *c = h_open_client(&D, NULL);
    crewstream_answer_t ans;

    REQUIRE(
        crewstream_post(c,
                        "{\"execution_id\":\"aw-4\",\"type\":\"human_input_required\",\"event_id\":\"req-4\","
                        "\"task_id\":\"t1\"}",
                        NULL) == 0);
    pid_t pid = answer_later(200, "aw-4", "req-4", "fine", 1);
    REQUIRE(crewstream_await_answer(c, "aw-4", "req-4", 10000, &ans) == 0);
    CHECK(child_status(pid) == 0);
    CHECK_STR(ans.human_feedback, "fine");
    CHECK(ans.is_approve == 1);
    CHECK(crewstream_pending(c) == 0);
    crewstream_answer_clear(&ans);
    crewstream_close(c);
}

static void test_timeout(void)
{
    crewstream_client_t *c = h_open_client(&D, NULL);
    crewstream_answer_t ans;
    char req[130];
    struct timespec t0;

    REQUIRE(request("aw-5", "t1", req, sizeof(req)) == 1);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK(crewstream_await_answer(c, "aw-5", req, 300, &ans) == -ETIMEDOUT);
    long ms = elapsed_ms(&t0);
    CHECK(ms >= 290 && ms < 3000);
    CHECK(ans.json == NULL);
    CHECK(crewstream_await_answer(c, "aw-5", req, 0, &ans) == -ETIMEDOUT);
    /* Still awaited: an answer given now reaches this connection. */
    REQUIRE(answer("aw-5", req, "ok now", 1) == 2);
    REQUIRE(crewstream_await_answer(c, "aw-5", req, 5000, &ans) == 0);
    CHECK_STR(ans.human_feedback, "ok now");
    crewstream_answer_clear(&ans);
    crewstream_close(c);
}

static void test_unknown_requests(void)
{
    crewstream_client_t *c = h_open_client(&D, NULL);
    crewstream_answer_t ans;
    char req[130];

    REQUIRE(request("aw-6", "t1", req, sizeof(req)) == 1);
    CHECK(crewstream_await_answer(c, "aw-6", "no-such-request", 5000, &ans) == -ESRCH);
    CHECK(strstr(crewstream_last_error(c), "not_found") != NULL);
    CHECK(crewstream_await_answer(c, "no-such-execution", req, 5000, &ans) == -ESRCH);
    CHECK(crewstream_await_answer(c, "bad id!", req, 5000, &ans) == -EINVAL);
    CHECK(crewstream_await_answer(c, "", req, 5000, &ans) == -EINVAL);
    CHECK(crewstream_await_answer(c, "aw-6", NULL, 5000, &ans) == -EINVAL);
    CHECK(crewstream_await_answer(c, "aw-6", req, 5000, NULL) == -EINVAL);
    /* The connection is fine afterwards. */
    CHECK(crewstream_ping(c, 5000) == 0);
    crewstream_close(c);
}

/* An answer without is_approve, with a structured feedback. */
static void test_answer_shapes(void)
{
    crewstream_client_t *c = h_open_client(&D, NULL);
    crewstream_answer_t ans;
    char req[130];

    REQUIRE(request("aw-7", "t1", req, sizeof(req)) == 1);
    char ev[512];
    snprintf(ev, sizeof(ev),
             "{\"execution_id\":\"aw-7\",\"type\":\"human_input_completed\",\"request_event_id\":\"%s\","
             "\"human_feedback\":{\"choice\":2}}",
             req);
    REQUIRE(post_once(ev, NULL, 0) == 2);
    REQUIRE(crewstream_await_answer(c, "aw-7", req, 5000, &ans) == 0);
    CHECK(ans.is_approve == -1);
    CHECK_STR(ans.human_feedback, "{\"choice\":2}");
    CHECK(ans.task_id != NULL);
    crewstream_answer_clear(&ans);
    crewstream_close(c);
}

int main(int argc, char **argv)
{
    REQUIRE(argc == 2);
    h_watchdog(100);
    daemon_init(&D, argv[1]);
    RUN(test_answer_after_await);
    RUN(test_answer_before_await);
    RUN(test_pushed_and_remembered);
    RUN(test_await_own_unacked_request);
    RUN(test_timeout);
    RUN(test_unknown_requests);
    RUN(test_answer_shapes);
    daemon_fini(&D);
    CT_DONE();
}
