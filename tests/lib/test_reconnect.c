/*
 * test_reconnect.c - exactly once across broken connections and daemon restarts.
 *
 * What "nothing lost, nothing doubled" means here:
 * - to the program: every ticket is acknowledged exactly once (on_ack is called once per
 *   ticket, in order, and every ack is ok);
 * - to the daemon that keeps its memory (a broken connection): its history holds every
 *   posted event_id exactly once, with the seq its ack reported; lines it had stored but
 *   whose replies were lost come back as duplicates with their original seqs;
 * - across a restart (the daemon keeps nothing): the events acknowledged by the old daemon
 *   are gone with it, and the new daemon's history holds exactly the events acknowledged on
 *   the new connection, each once, with the acked seqs, and its ingest counter shows that it
 *   was sent each of those lines once and nothing else.
 */
#include <crewstream/client.h>

#include "harness.h"

#define MAXT 4096

static daemon_t D;

typedef struct {
    crewstream_client_t *c;
    int count[MAXT + 1];
    uint64_t conn[MAXT + 1]; /* the connection (1, 2, ...) on which the ack arrived */
    crewstream_ack_t ack[MAXT + 1];
    crewstream_ticket_t last;
    int out_of_order;
} track_t;

static track_t T;

static void on_ack(void *arg, const crewstream_ack_t *a)
{
    track_t *t = arg;
    crewstream_stats_t st;

    REQUIRE(a->ticket >= 1 && a->ticket <= MAXT);
    if (a->ticket != t->last + 1)
        t->out_of_order++;
    t->last = a->ticket;
    crewstream_stats(t->c, &st);
    t->count[a->ticket]++;
    t->conn[a->ticket] = st.connections;
    t->ack[a->ticket] = *a;
}

static crewstream_client_t *open_tracked(void)
{
    crewstream_options_t o;

    memset(&T, 0, sizeof(T));
    crewstream_options_init(&o);
    o.socket_path = D.sock;
    o.on_ack = on_ack;
    o.on_ack_arg = &T;
    REQUIRE(crewstream_connect(&T.c, &o) == 0);
    return T.c;
}

static void post_n(crewstream_client_t *c, const char *prefix, int nexec, int from, int to)
{
    char ev[256];
    for (int i = from; i < to; i++) {
        snprintf(ev, sizeof(ev),
                 "{\"execution_id\":\"%s-%d\",\"type\":\"log\",\"i\":%d,\"message\":\"line %d\"}", prefix,
                 i % nexec, i, i);
        REQUIRE(crewstream_post(c, ev, NULL) == 0);
    }
}

/* Every ticket 1..n acknowledged exactly once, ok, in order. */
static void check_acked_once(crewstream_ticket_t n)
{
    int bad = 0;
    for (crewstream_ticket_t t = 1; t <= n; t++)
        if (T.count[t] != 1 || !T.ack[t].ok)
            bad++;
    CHECK(bad == 0);
    CHECK(T.out_of_order == 0);
    CHECK(T.last == n);
}

/*
 * Checks an execution's history against the acks of tickets `from`..`to` (step nexec, i.e. the
 * tickets posted to this execution) that arrived on a connection >= min_conn: the history holds
 * exactly their event_ids, once each, with the acked seqs, numbered 1..n.
 */
static void check_history(int port, const char *x, crewstream_ticket_t from, crewstream_ticket_t to, int step,
                          uint64_t min_conn, size_t *matched)
{
    json_t *h = history(port, x);
    size_t n = json_array_size(h), want = 0, found = 0;
    int bad_seq = 0, doubled = 0, stray = 0, missing = 0;

    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(h, i);
        if (json_integer_value(json_object_get(e, "seq")) != (json_int_t)i + 1)
            bad_seq++;
        const char *id = json_string_value(json_object_get(e, "event_id"));
        for (size_t j = 0; j < i; j++)
            if (strcmp(id, json_string_value(json_object_get(json_array_get(h, j), "event_id"))) == 0)
                doubled++;
    }
    for (crewstream_ticket_t t = from; t <= to; t += (crewstream_ticket_t)step) {
        int in_h = 0;
        json_int_t seq = 0;
        for (size_t i = 0; i < n; i++) {
            json_t *e = json_array_get(h, i);
            if (strcmp(json_string_value(json_object_get(e, "event_id")), T.ack[t].event_id) == 0) {
                in_h++;
                seq = json_integer_value(json_object_get(e, "seq"));
            }
        }
        if (T.conn[t] >= min_conn) {
            want++;
            if (in_h != 1)
                missing++;
            else if ((uint64_t)seq != T.ack[t].seq)
                bad_seq++;
            else
                found++;
        } else if (in_h != 0) {
            stray++; /* acknowledged by the old daemon, yet sent to the new one */
        }
    }
    if (bad_seq || doubled || stray || missing || n != want)
        fprintf(stderr, "%s: %zu in history, %zu expected; bad seq %d, doubled %d, stray %d, missing %d\n", x,
                n, want, bad_seq, doubled, stray, missing);
    CHECK(n == want);
    CHECK(found == want);
    CHECK(bad_seq == 0 && doubled == 0 && stray == 0 && missing == 0);
    if (matched != NULL)
        *matched += found;
    json_decref(h);
}

static void wait_history(const char *x, size_t n)
{
    for (int i = 0; i < 500; i++) {
        json_t *h = history(D.port, x);
        size_t k = json_array_size(h);
        json_decref(h);
        if (k >= n)
            return;
        h_sleep_ms(10);
    }
    REQUIRE(!"the daemon did not store the lines in time");
}

/*
 * The daemon stores 150 lines, the connection breaks before the library reads a single reply:
 * all 150 are resent, and all come back as duplicates with their original seqs. (150 lines, one
 * write each, fit in a Unix socket's default send buffer, so all are written while the daemon is
 * stopped.)
 */
static void test_resend_stored_unacked(void)
{
    crewstream_client_t *c = open_tracked();
    crewstream_stats_t st;
    long long dup0 = metric(D.port, "events_duplicate_total");

    CHECK(daemon_kill(&D, SIGSTOP) == 0);
    post_n(c, "ra", 1, 0, 150);
    CHECK(crewstream_pending(c) == 150);
    kill(D.pid, SIGCONT);
    wait_history("ra-0", 150);
    break_conn(c);
    CHECK(crewstream_flush(c, 10000) == 0);
    crewstream_stats(c, &st);
    CHECK(st.connections == 2);
    CHECK(st.resent == 150);
    CHECK(st.duplicates == 150);
    check_acked_once(150);
    int not_dup = 0;
    for (int t = 1; t <= 150; t++)
        if (!T.ack[t].duplicate || !T.ack[t].resent || T.ack[t].seq != (uint64_t)t || T.conn[t] != 2)
            not_dup++;
    CHECK(not_dup == 0);
    check_history(D.port, "ra-0", 1, 150, 1, 1, NULL);
    CHECK(dup0 >= 0);
    CHECK(metric(D.port, "events_duplicate_total") - dup0 == 150);
    crewstream_close(c);
}

/* 2,000 events over 4 executions, the connection broken every 200 posts without waiting for anything. */
static void test_breaks_in_stream(void)
{
    crewstream_client_t *c = open_tracked();
    crewstream_stats_t st;
    long long lines0 = metric(D.port, "ingest_lines_total");
    size_t matched = 0;
    char x[16];

    for (int k = 0; k < 10; k++) {
        post_n(c, "rb", 4, k * 200, (k + 1) * 200);
        /* A connection lost before its first reply is retried after a backoff: let it come back. */
        for (int i = 0; i < 500 && crewstream_fd(c) < 0; i++)
            crewstream_process(c, 10);
        break_conn(c);
    }
    CHECK(crewstream_flush(c, 20000) == 0);
    CHECK(crewstream_ping(c, 5000) == 0); /* reconnects when every ack came in before the last break */
    crewstream_stats(c, &st);
    CHECK(st.connections == 11);
    if (st.connections != 11)
        fprintf(stderr, "   connections %llu: %s\n", (unsigned long long)st.connections,
                crewstream_last_error(c));
    check_acked_once(2000);
    for (int i = 0; i < 4; i++) {
        snprintf(x, sizeof(x), "rb-%d", i);
        check_history(D.port, x, (crewstream_ticket_t)i + 1, 2000, 4, 1, &matched);
    }
    CHECK(matched == 2000);
    /*
     * The daemon read each line at most once per connection it was written on (it may stop reading a
     * connection whose peer is gone), and no line that was not posted (but the ping).
     */
    long long lines = metric(D.port, "ingest_lines_total") - lines0 - 1;
    CHECK(lines >= 2000 && lines <= (long long)(2000 + st.resent));
    fprintf(stderr, "   (%llu lines resent, %llu acknowledged as duplicates)\n",
            (unsigned long long)st.resent, (unsigned long long)st.duplicates);
    crewstream_close(c);
}

/*
 * SIGTERM and a restart on the same socket in the middle of 2,000 events. The new daemon must hold
 * exactly the events acknowledged on the new connection: those unacknowledged at the restart
 * (resent once) and those posted after it.
 */
static void test_restart_in_stream(void)
{
    crewstream_client_t *c = open_tracked();
    crewstream_stats_t st;
    size_t matched = 0, on_new = 0;
    char x[16];

    post_n(c, "rs", 4, 0, 1000);
    daemon_stop(&D); /* checks exit 0 */
    daemon_start(&D);
    post_n(c, "rs", 4, 1000, 2000);
    CHECK(crewstream_flush(c, 30000) == 0);
    crewstream_stats(c, &st);
    CHECK(st.connections == 2);
    check_acked_once(2000);
    for (crewstream_ticket_t t = 1; t <= 2000; t++) {
        if (T.conn[t] >= 2)
            on_new++;
        if (t > 1000)
            CHECK(T.conn[t] == 2);
    }
    for (int i = 0; i < 4; i++) {
        snprintf(x, sizeof(x), "rs-%d", i);
        check_history(D.port, x, (crewstream_ticket_t)i + 1, 2000, 4, 2, &matched);
    }
    CHECK(matched == on_new);
    /* The new daemon was sent each of those lines once, and nothing else. */
    CHECK(metric(D.port, "ingest_lines_total") == (long long)on_new);
    CHECK(metric(D.port, "events_duplicate_total") == 0);
    fprintf(stderr, "   (%zu acknowledged by the new daemon, %llu resent)\n", on_new,
            (unsigned long long)st.resent);
    crewstream_close(c);
}

/*
 * A crash with lines written but never read: the daemon is stopped, 150 lines are posted, the
 * daemon is killed and another started. Exactly those 150 are resent, stored once, in order.
 */
static void test_crash_with_unread_lines(void)
{
    crewstream_client_t *c = open_tracked();
    crewstream_stats_t st;

    post_n(c, "rk", 1, 0, 100);
    CHECK(crewstream_flush(c, 10000) == 0);
    CHECK(daemon_kill(&D, SIGSTOP) == 0);
    post_n(c, "rk", 1, 100, 250);
    CHECK(crewstream_pending(c) == 150);
    CHECK(daemon_kill(&D, SIGKILL) == 128 + SIGKILL);
    daemon_start(&D);
    CHECK(crewstream_flush(c, 10000) == 0);
    crewstream_stats(c, &st);
    CHECK(st.connections == 2);
    CHECK(st.resent == 150);
    CHECK(st.duplicates == 0);
    check_acked_once(250);
    int bad = 0;
    for (int t = 101; t <= 250; t++)
        if (T.conn[t] != 2 || T.ack[t].seq != (uint64_t)(t - 100) || !T.ack[t].resent || T.ack[t].duplicate)
            bad++;
    CHECK(bad == 0);
    check_history(D.port, "rk-0", 1, 250, 1, 2, NULL);
    CHECK(metric(D.port, "ingest_lines_total") == 150);
    crewstream_close(c);
}

static uint64_t answer(const char *x, const char *req, const char *feedback)
{
    crewstream_client_t *c = h_open_client(&D, NULL);
    crewstream_ticket_t t;
    crewstream_ack_t a;
    char ev[512];

    snprintf(ev, sizeof(ev),
             "{\"execution_id\":\"%s\",\"type\":\"human_input_completed\",\"request_event_id\":\"%s\","
             "\"human_feedback\":\"%s\",\"is_approve\":true}",
             x, req, feedback);
    REQUIRE(crewstream_post(c, ev, &t) == 0);
    REQUIRE(crewstream_wait(c, t, 5000, &a) == 0);
    crewstream_close(c);
    return a.ok ? a.seq : 0;
}

static int answers_seen;

static void on_answer(void *arg, const crewstream_answer_t *a)
{
    (void)arg;
    (void)a;
    answers_seen++;
}

/* Requests awaited when the connection breaks are awaited again on the next one. */
static void test_await_across_break(void)
{
    crewstream_options_t o;
    crewstream_client_t *c, *other = h_open_client(&D, NULL);
    crewstream_answer_t ans;
    crewstream_ticket_t t;
    crewstream_ack_t a;

    crewstream_options_init(&o);
    o.socket_path = D.sock;
    o.on_answer = on_answer;
    REQUIRE(crewstream_connect(&c, &o) == 0);

    /* Posted by this client (awaited without asking), answered while the connection is down. */
    REQUIRE(
        crewstream_post(c, "{\"execution_id\":\"rw-1\",\"type\":\"human_input_required\",\"task_id\":\"t1\"}",
                        &t) == 0);
    REQUIRE(crewstream_wait(c, t, 5000, &a) == 0 && a.ok);
    break_conn(c);
    REQUIRE(answer("rw-1", a.event_id, "while away") == 2);
    REQUIRE(crewstream_await_answer(c, "rw-1", a.event_id, 5000, &ans) == 0);
    CHECK_STR(ans.human_feedback, "while away");
    crewstream_answer_clear(&ans);

    /* Posted by another client, awaited explicitly here (and timed out), answered while down. */
    REQUIRE(crewstream_post(other, "{\"execution_id\":\"rw-2\",\"type\":\"human_input_required\"}", &t) == 0);
    REQUIRE(crewstream_wait(other, t, 5000, &a) == 0 && a.ok);
    CHECK(crewstream_await_answer(c, "rw-2", a.event_id, 100, &ans) == -ETIMEDOUT);
    break_conn(c);
    REQUIRE(answer("rw-2", a.event_id, "also away") == 2);
    answers_seen = 0;
    /* No new await from the program: the reconnection alone brings the push. */
    for (int i = 0; i < 100 && answers_seen == 0; i++)
        CHECK(crewstream_process(c, 50) == 0);
    CHECK(answers_seen == 1);
    REQUIRE(crewstream_await_answer(c, "rw-2", a.event_id, 0, &ans) == 0);
    CHECK_STR(ans.human_feedback, "also away");
    crewstream_answer_clear(&ans);
    crewstream_stats_t st;
    crewstream_stats(c, &st);
    CHECK(st.connections == 3);
    CHECK(st.answers == 2);
    crewstream_close(c);
    crewstream_close(other);
}

/* The daemon keeps no state across its restart: an awaited request is gone, and the caller is told. */
static void test_await_across_restart(void)
{
    crewstream_client_t *c = h_open_client(&D, NULL);
    crewstream_answer_t ans;
    crewstream_ticket_t t;
    crewstream_ack_t a;

    REQUIRE(crewstream_post(c, "{\"execution_id\":\"rr-1\",\"type\":\"human_input_required\"}", &t) == 0);
    REQUIRE(crewstream_wait(c, t, 5000, &a) == 0 && a.ok);
    daemon_stop(&D);
    daemon_start(&D);
    CHECK(crewstream_await_answer(c, "rr-1", a.event_id, 5000, &ans) == -ESRCH);
    CHECK(crewstream_ping(c, 5000) == 0);
    crewstream_close(c);
}

/* Posts while the daemon is down are queued; connect can wait for a daemon that is starting. */
static void test_daemon_down(void)
{
    crewstream_client_t *c = h_open_client(&D, NULL);
    crewstream_options_t o;
    int rc;

    daemon_stop(&D);
    post_n(c, "rd", 1, 0, 10);
    CHECK(crewstream_pending(c) == 10);
    rc = crewstream_flush(c, 300);
    CHECK(rc == -ENOENT || rc == -ECONNREFUSED);
    CHECK(crewstream_fd(c) == -1);
    CHECK(strstr(crewstream_last_error(c), D.sock) != NULL);
    daemon_start(&D);
    CHECK(crewstream_flush(c, 10000) == 0);
    json_t *h = history(D.port, "rd-0");
    CHECK(json_array_size(h) == 10);
    json_decref(h);
    crewstream_close(c);

    daemon_stop(&D);
    daemon_spawn(&D);
    crewstream_options_init(&o);
    o.socket_path = D.sock;
    o.connect_timeout_ms = 10000;
    c = NULL;
    CHECK(crewstream_connect(&c, &o) == 0);
    if (c != NULL)
        CHECK(crewstream_ping(c, 5000) == 0);
    crewstream_close(c);
    daemon_ready(&D);
}

int main(int argc, char **argv)
{
    REQUIRE(argc == 2);
    h_watchdog(110);
    daemon_init(&D, argv[1]);
    RUN(test_resend_stored_unacked);
    RUN(test_breaks_in_stream);
    RUN(test_await_across_break);
    RUN(test_restart_in_stream);
    RUN(test_crash_with_unread_lines);
    RUN(test_await_across_restart);
    RUN(test_daemon_down);
    daemon_fini(&D);
    CT_DONE();
}
