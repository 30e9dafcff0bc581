/*
 * test_basic.c - libcrewstream against the real daemon: connecting (and failing to),
 * pipelined posts with their acks in order, refused lines among good ones, duplicate
 * re-posts, local refusals, ping, the window of unacknowledged lines, tickets.
 */
#include <crewstream/client.h>

#include "harness.h"

static daemon_t D;

typedef struct {
    crewstream_ticket_t tickets[4096];
    size_t n;
} acklog_t;

static void on_ack(void *arg, const crewstream_ack_t *a)
{
    acklog_t *l = arg;
    if (l->n < sizeof(l->tickets) / sizeof(l->tickets[0]))
        l->tickets[l->n] = a->ticket;
    l->n++;
}

static int is_uuid_v4_lower(const char *s)
{
    if (strlen(s) != 36 || s[14] != '4' || strchr("89ab", s[19]) == NULL)
        return 0;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return 0;
        } else if (strchr("0123456789abcdef", s[i]) == NULL) {
            return 0;
        }
    }
    return 1;
}

static void test_connect_errors(void)
{
    crewstream_options_t o;
    crewstream_client_t *c = (crewstream_client_t *)&o; /* must be reset to NULL */
    char path[100], buf[256];
    int fd;

    crewstream_options_init(&o);
    snprintf(path, sizeof(path), "%s/nobody.sock", D.dir);
    o.socket_path = path;
    CHECK(crewstream_connect(&c, &o) == -ENOENT);
    CHECK(c == NULL);
    CHECK(strstr(crewstream_strerror(-ENOENT), "crewstreamd") != NULL);

    /* A socket file that nobody listens on. */
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    REQUIRE(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    CHECK(crewstream_connect(&c, &o) == -ECONNREFUSED);
    CHECK(c == NULL);
    close(fd);
    unlink(path);

    /* A path that does not fit in a socket address. */
    memset(buf, 'a', 200);
    buf[0] = '/';
    buf[200] = '\0';
    o.socket_path = buf;
    CHECK(crewstream_connect(&c, &o) == -ENAMETOOLONG);
    CHECK(c == NULL);
    CHECK(crewstream_connect(NULL, &o) == -EINVAL);

    /* Retrying for a while still fails, after about that while. */
    o.socket_path = path;
    o.connect_timeout_ms = 300;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK(crewstream_connect(&c, &o) == -ENOENT);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    CHECK(ms >= 290 && ms < 2000);
}

static void test_default_path(void)
{
    char buf[256];
    crewstream_client_t *c = NULL;

    setenv("CREWSTREAM_SOCKET", D.sock, 1);
    CHECK(crewstream_default_socket_path(buf, sizeof(buf)) == (int)strlen(D.sock));
    CHECK_STR(buf, D.sock);
    /* No socket_path option: the environment names the daemon's socket. */
    CHECK(crewstream_connect(&c, NULL) == 0);
    CHECK_STR(crewstream_socket_path(c), D.sock);
    CHECK(crewstream_ping(c, 5000) == 0);
    crewstream_close(c);

    unsetenv("CREWSTREAM_SOCKET");
    setenv("XDG_RUNTIME_DIR", "/run/user/4242", 1);
    CHECK(crewstream_default_socket_path(buf, sizeof(buf)) > 0);
    CHECK_STR(buf, "/run/user/4242/crewstream.sock");
    CHECK(crewstream_default_socket_path(buf, 5) == -ENAMETOOLONG);
    setenv("XDG_RUNTIME_DIR", "", 1);
    CHECK(crewstream_default_socket_path(buf, sizeof(buf)) > 0);
    CHECK_STR(buf, "/tmp/crewstream.sock");
    unsetenv("XDG_RUNTIME_DIR");
    CHECK(crewstream_default_socket_path(buf, sizeof(buf)) > 0);
    CHECK_STR(buf, "/tmp/crewstream.sock");
}

/* 500 lines written before any reply is read: acks in order, seqs 1..500, stored as acknowledged. */
static void test_pipelined(void)
{
    static acklog_t log;
    crewstream_options_t o;
    crewstream_client_t *c;
    crewstream_ticket_t t[500];
    crewstream_ack_t a;
    char ev[256];
    const int n = 500;

    crewstream_options_init(&o);
    o.on_ack = on_ack;
    o.on_ack_arg = &log;
    c = h_open_client(&D, &o);
    for (int i = 0; i < n; i++) {
        if (i % 10 == 0) /* some with the program's own event_id */
            snprintf(ev, sizeof(ev),
                     "{\"execution_id\":\"pipe-1\",\"type\":\"log\",\"event_id\":\"own-%d\",\"i\":%d}", i, i);
        else
            snprintf(ev, sizeof(ev), "{\"execution_id\":\"pipe-1\",\"type\":\"log\",\"i\":%d}", i);
        REQUIRE(crewstream_post(c, ev, &t[i]) == 0);
        CHECK(t[i] == (crewstream_ticket_t)i + 1);
    }
    CHECK(crewstream_flush(c, 10000) == 0);
    CHECK(crewstream_pending(c) == 0);
    CHECK(log.n == (size_t)n);
    for (int i = 0; i < n && i < (int)log.n; i++)
        CHECK(log.tickets[i] == (crewstream_ticket_t)i + 1);

    json_t *h = history(D.port, "pipe-1");
    CHECK(json_array_size(h) == (size_t)n);
    for (int i = 0; i < n; i++) {
        REQUIRE(crewstream_wait(c, t[i], 0, &a) == 0);
        CHECK(a.ticket == t[i]);
        CHECK(a.ok == 1 && a.duplicate == 0 && a.resent == 0);
        CHECK(a.seq == (uint64_t)i + 1);
        CHECK_STR(a.error, "");
        if (i % 10 == 0) {
            char own[32];
            snprintf(own, sizeof(own), "own-%d", i);
            CHECK_STR(a.event_id, own);
        } else {
            CHECK(is_uuid_v4_lower(a.event_id));
        }
        json_t *e = json_array_get(h, (size_t)i);
        CHECK_STR(json_string_value(json_object_get(e, "event_id")), a.event_id);
        CHECK(json_integer_value(json_object_get(e, "seq")) == i + 1);
        CHECK(json_integer_value(json_object_get(e, "i")) == i);
    }
    json_decref(h);
    crewstream_stats_t st;
    crewstream_stats(c, &st);
    CHECK(st.connections == 1 && st.posted == (uint64_t)n && st.acked == (uint64_t)n);
    CHECK(st.refused == 0 && st.duplicates == 0 && st.resent == 0);
    crewstream_close(c);
}

/* Refused lines get their error in their own ack and disturb nothing around them. */
static void test_refused_lines(void)
{
    crewstream_client_t *c = h_open_client(&D, NULL);
    crewstream_ticket_t t[5];
    crewstream_ack_t a;

    REQUIRE(crewstream_post(c, "{\"execution_id\":\"err-1\",\"type\":\"run.started\"}", &t[0]) == 0);
    REQUIRE(crewstream_post(c, "{\"execution_id\":\"err-1\",\"message\":\"no type\"}", &t[1]) == 0);
    REQUIRE(crewstream_post(c, "{\"execution_id\":\"bad id!\",\"type\":\"log\"}", &t[2]) == 0);
    REQUIRE(crewstream_post(c, "{\"execution_id\":\"err-1\",\"type\":\"heartbeat\"}", &t[3]) == 0);
    REQUIRE(crewstream_post(c, "{\"execution_id\":\"err-1\",\"type\":\"log\"}", &t[4]) == 0);
    /* Waiting for the last one first: the earlier acks are in too. */
    REQUIRE(crewstream_wait(c, t[4], 5000, &a) == 0);
    CHECK(a.ok && a.seq == 2);
    CHECK(crewstream_pending(c) == 0);
    REQUIRE(crewstream_wait(c, t[0], 0, &a) == 0);
    CHECK(a.ok && a.seq == 1);
    REQUIRE(crewstream_wait(c, t[1], 0, &a) == 0);
    CHECK(!a.ok && a.seq == 0);
    CHECK_STR(a.error, "missing_field");
    CHECK(a.detail[0] != '\0');
    REQUIRE(crewstream_wait(c, t[2], 0, &a) == 0);
    CHECK(!a.ok);
    CHECK_STR(a.error, "invalid_field");
    REQUIRE(crewstream_wait(c, t[3], 0, &a) == 0);
    CHECK(!a.ok);
    CHECK_STR(a.error, "invalid_field");
    crewstream_stats_t st;
    crewstream_stats(c, &st);
    CHECK(st.acked == 5 && st.refused == 3);
    crewstream_close(c);
}

/* What is not an event is refused before it is queued: no ticket is used up. */
static void test_local_refusals(void)
{
    crewstream_options_t o;
    crewstream_client_t *c;
    crewstream_ticket_t t = 99;
    crewstream_stats_t st;
    char big[400];

    crewstream_options_init(&o);
    o.max_line_bytes = 200;
    c = h_open_client(&D, &o);
    CHECK(crewstream_post(c, "[1,2]", &t) == -EINVAL);
    CHECK(crewstream_post(c, "\"x\"", &t) == -EINVAL);
    CHECK(crewstream_post(c, "not json", &t) == -EINVAL);
    CHECK(crewstream_post(c, "", &t) == -EINVAL);
    CHECK(crewstream_post(c, "{\"a\":1} {\"b\":2}", &t) == -EINVAL);
    CHECK(strstr(crewstream_last_error(c), "JSON") != NULL);
    CHECK(crewstream_post(c, "{\"op\":\"ping\"}", &t) == -EINVAL);
    CHECK(crewstream_post(c, NULL, &t) == -EINVAL);
    snprintf(big, sizeof(big), "{\"execution_id\":\"loc-1\",\"type\":\"log\",\"message\":\"%0300d\"}", 0);
    CHECK(crewstream_post(c, big, &t) == -EMSGSIZE);
    CHECK(t == 99);
    crewstream_stats(c, &st);
    CHECK(st.posted == 0);
    CHECK(crewstream_pending(c) == 0);

    /* Pretty-printed JSON becomes one line; an empty object gets its event_id and the daemon's verdict. */
    REQUIRE(crewstream_post(c, "\n  {\n  \"execution_id\": \"loc-1\",\r\n  \"type\": \"log\"\n}\n", &t) == 0);
    CHECK(t == 1);
    crewstream_ack_t a;
    REQUIRE(crewstream_wait(c, t, 5000, &a) == 0);
    CHECK(a.ok && a.seq == 1);
    REQUIRE(crewstream_post(c, "{}", &t) == 0);
    CHECK(t == 2);
    REQUIRE(crewstream_wait(c, t, 5000, &a) == 0);
    CHECK(!a.ok);
    CHECK_STR(a.error, "missing_field");
    CHECK(is_uuid_v4_lower(a.event_id));
    crewstream_close(c);
}

static void test_duplicates(void)
{
    crewstream_client_t *c = h_open_client(&D, NULL);
    crewstream_ticket_t t;
    crewstream_ack_t a;

    REQUIRE(crewstream_post(c, "{\"execution_id\":\"dup-1\",\"type\":\"log\",\"event_id\":\"e-1\"}", &t) ==
            0);
    REQUIRE(crewstream_wait(c, t, 5000, &a) == 0);
    CHECK(a.ok && a.seq == 1 && !a.duplicate);
    REQUIRE(crewstream_post(c, "{\"execution_id\":\"dup-1\",\"type\":\"log\",\"event_id\":\"e-2\"}", &t) ==
            0);
    REQUIRE(crewstream_post(c, "{\"execution_id\":\"dup-1\",\"type\":\"log\",\"event_id\":\"e-1\"}", &t) ==
            0);
    REQUIRE(crewstream_wait(c, t, 5000, &a) == 0);
    CHECK(a.ok && a.seq == 1 && a.duplicate && !a.resent);
    CHECK_STR(a.event_id, "e-1");
    /* The same id with another type is a new event. */
    REQUIRE(crewstream_post(c, "{\"execution_id\":\"dup-1\",\"type\":\"run.started\",\"event_id\":\"e-1\"}",
                            &t) == 0);
    REQUIRE(crewstream_wait(c, t, 5000, &a) == 0);
    CHECK(a.ok && a.seq == 3 && !a.duplicate);
    crewstream_stats_t st;
    crewstream_stats(c, &st);
    CHECK(st.duplicates == 1);
    json_t *h = history(D.port, "dup-1");
    CHECK(json_array_size(h) == 3);
    json_decref(h);
    crewstream_close(c);
}

static void test_ping(void)
{
    crewstream_client_t *c = h_open_client(&D, NULL);

    CHECK(crewstream_ping(c, 5000) == 0);
    for (int i = 0; i < 50; i++)
        REQUIRE(crewstream_post(c, "{\"execution_id\":\"ping-1\",\"type\":\"log\"}", NULL) == 0);
    /* The pong comes after the replies of everything posted before it. */
    CHECK(crewstream_ping(c, 5000) == 0);
    CHECK(crewstream_pending(c) == 0);
    CHECK(crewstream_ping(NULL, 0) == -EINVAL);
    crewstream_close(c);
}

static void test_tickets(void)
{
    crewstream_options_t o;
    crewstream_client_t *c;
    crewstream_ticket_t t = 0;
    crewstream_ack_t a;

    crewstream_options_init(&o);
    o.max_unacked = 4;
    o.ack_history = 4;
    c = h_open_client(&D, &o);
    CHECK(crewstream_wait(c, 0, 0, &a) == -ERANGE);
    CHECK(crewstream_wait(c, 1, 0, &a) == -ERANGE);
    for (int i = 0; i < 20; i++)
        REQUIRE(crewstream_post(c, "{\"execution_id\":\"tick-1\",\"type\":\"log\"}", &t) == 0);
    CHECK(t == 20);
    CHECK(crewstream_flush(c, 5000) == 0);
    CHECK(crewstream_wait(c, 21, 0, &a) == -ERANGE);
    CHECK(crewstream_wait(c, 12, 0, &a) == -ERANGE); /* 8 slots: 13..20 keep their acks */
    CHECK(crewstream_wait(c, 13, 0, &a) == 0 && a.seq == 13);
    CHECK(crewstream_wait(c, 20, 0, &a) == 0 && a.seq == 20);
    CHECK(crewstream_wait(c, 20, 0, NULL) == 0);
    crewstream_close(c);
}

/* A stopped daemon reads nothing: the window fills and post says so instead of queuing without end. */
static void test_window(void)
{
    crewstream_options_t o;
    crewstream_client_t *c;
    crewstream_ticket_t t = 0;
    struct timespec t0, t1;

    crewstream_options_init(&o);
    o.max_unacked = 4;
    o.post_timeout_ms = -1;
    c = h_open_client(&D, &o);
    CHECK(daemon_kill(&D, SIGSTOP) == 0);
    for (int i = 0; i < 4; i++)
        CHECK(crewstream_post(c, "{\"execution_id\":\"win-1\",\"type\":\"log\"}", &t) == 0);
    CHECK(crewstream_post(c, "{\"execution_id\":\"win-1\",\"type\":\"log\"}", &t) == -EAGAIN);
    CHECK(t == 4);
    CHECK(crewstream_pending(c) == 4);
    CHECK(crewstream_flush(c, 0) == -ETIMEDOUT);
    CHECK(crewstream_flush(c, 50) == -ETIMEDOUT);
    crewstream_close(c);

    /* With a post timeout, post waits that long for room. */
    o.post_timeout_ms = 200;
    c = h_open_client(&D, &o);
    for (int i = 0; i < 4; i++)
        CHECK(crewstream_post(c, "{\"execution_id\":\"win-2\",\"type\":\"log\"}", &t) == 0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK(crewstream_post(c, "{\"execution_id\":\"win-2\",\"type\":\"log\"}", &t) == -EAGAIN);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    CHECK(ms >= 190 && ms < 3000);
    kill(D.pid, SIGCONT);
    /* Room again once the daemon reads: the post waits for it. */
    CHECK(crewstream_post(c, "{\"execution_id\":\"win-2\",\"type\":\"log\"}", &t) == 0);
    CHECK(t == 5);
    CHECK(crewstream_flush(c, 5000) == 0);
    crewstream_ack_t a;
    CHECK(crewstream_wait(c, 5, 0, &a) == 0 && a.ok && a.seq == 5);
    crewstream_close(c);
}

/* With no_reconnect a broken connection is an error, and writing to it raises no SIGPIPE. */
static void test_no_reconnect(void)
{
    crewstream_options_t o;
    crewstream_client_t *c;

    crewstream_options_init(&o);
    o.no_reconnect = 1;
    c = h_open_client(&D, &o);
    CHECK(crewstream_ping(c, 5000) == 0);
    shutdown(crewstream_fd(c), SHUT_RDWR);
    CHECK(crewstream_post(c, "{\"execution_id\":\"nr-1\",\"type\":\"log\"}", NULL) == 0);
    CHECK(crewstream_flush(c, 2000) == -EPIPE);
    CHECK(crewstream_fd(c) == -1);
    CHECK(crewstream_post(c, "{\"execution_id\":\"nr-1\",\"type\":\"log\"}", NULL) == -EPIPE);
    CHECK(crewstream_ping(c, 100) == -EPIPE);
    CHECK(strstr(crewstream_last_error(c), "lost") != NULL);
    crewstream_close(c);
}

/*
 * A daemon whose limits.max_event_bytes is smaller than the library's max_line_bytes refuses a long
 * line with "too_large" as soon as it has read past its limit, while the library is still writing
 * the line: that reply is the line's ack (ok = 0), the rest of the line is written and skipped by
 * the daemon, and the connection goes on (it used to be dropped and the line resent without end).
 */
static void test_too_large_for_daemon(void)
{
    static daemon_t small;
    crewstream_options_t o;
    crewstream_client_t *c = NULL;
    crewstream_ticket_t t1, t2;
    crewstream_ack_t a;
    crewstream_stats_t st;
    char cfg[128];
    size_t n = 4u << 20;
    char *ev = malloc(n + 64);
    FILE *f;

    REQUIRE(ev != NULL);
    memset(&small, 0, sizeof(small));
    small.bin = D.bin;
    snprintf(small.dir, sizeof(small.dir), "%s", D.dir);
    snprintf(small.sock, sizeof(small.sock), "%s/small.sock", D.dir);
    snprintf(cfg, sizeof(cfg), "%s/small.json", D.dir);
    f = fopen(cfg, "w");
    REQUIRE(f != NULL);
    fputs("{\"limits\":{\"max_event_bytes\":65536}}\n", f);
    fclose(f);
    small.config = cfg;
    daemon_start(&small);

    crewstream_options_init(&o);
    o.socket_path = small.sock;
    o.max_line_bytes = 8u << 20;
    REQUIRE(crewstream_connect(&c, &o) == 0);
    int k = snprintf(ev, 64, "{\"execution_id\":\"tl-1\",\"type\":\"log\",\"m\":\"");
    memset(ev + k, 'x', n);
    memcpy(ev + k + n, "\"}", 3);
    REQUIRE(crewstream_post(c, ev, &t1) == 0);
    REQUIRE(crewstream_post(c, "{\"execution_id\":\"tl-1\",\"type\":\"log\"}", &t2) == 0);
    CHECK(crewstream_wait(c, t1, 10000, &a) == 0);
    CHECK(!a.ok && strcmp(a.error, "too_large") == 0 && !a.resent);
    CHECK(crewstream_wait(c, t2, 10000, &a) == 0);
    CHECK(a.ok && a.seq == 1);
    crewstream_stats(c, &st);
    CHECK(st.connections == 1 && st.resent == 0 && st.refused == 1);
    CHECK(crewstream_ping(c, 5000) == 0);
    crewstream_close(c);
    free(ev);
    daemon_stop(&small);
    unlink(small.sock);
    unlink(cfg);
}

/* post_timeout_ms < 0 waits for nothing, yet acks that already arrived make room: a retry loop gets in. */
static void test_post_retry_loop(void)
{
    crewstream_options_t o;
    crewstream_client_t *c;
    struct timespec t0, t1;
    int rc = 0;
    long ms = 0;

    crewstream_options_init(&o);
    o.max_unacked = 2;
    o.post_timeout_ms = -1;
    c = h_open_client(&D, &o);
    for (int i = 0; i < 2; i++)
        CHECK(crewstream_post(c, "{\"execution_id\":\"rl-1\",\"type\":\"log\"}", NULL) == 0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < 5; i++) {
        do {
            rc = crewstream_post(c, "{\"execution_id\":\"rl-1\",\"type\":\"log\"}", NULL);
            clock_gettime(CLOCK_MONOTONIC, &t1);
            ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
        } while (rc == -EAGAIN && ms < 5000);
        CHECK(rc == 0);
    }
    CHECK(crewstream_flush(c, 5000) == 0);
    crewstream_close(c);
}

/* connect_timeout_ms < 0 keeps trying without limit: here until the daemon comes up. */
static void test_connect_waits(void)
{
    crewstream_options_t o;
    crewstream_client_t *c = NULL;

    daemon_stop(&D);
    daemon_spawn(&D);
    crewstream_options_init(&o);
    o.socket_path = D.sock;
    o.connect_timeout_ms = -1;
    CHECK(crewstream_connect(&c, &o) == 0);
    if (c != NULL)
        CHECK(crewstream_ping(c, 5000) == 0);
    crewstream_close(c);
    daemon_ready(&D);
}

int main(int argc, char **argv)
{
    REQUIRE(argc == 2);
    h_watchdog(100);
    daemon_init(&D, argv[1]);
    RUN(test_connect_errors);
    RUN(test_default_path);
    RUN(test_pipelined);
    RUN(test_refused_lines);
    RUN(test_local_refusals);
    RUN(test_duplicates);
    RUN(test_ping);
    RUN(test_tickets);
    RUN(test_window);
    RUN(test_no_reconnect);
    RUN(test_too_large_for_daemon);
    RUN(test_post_retry_loop);
    RUN(test_connect_waits);
    daemon_fini(&D);
    CT_DONE();
}
