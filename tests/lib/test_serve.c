/*
 * test_serve.c - libcrewstream's runtime side of the crew gateway: serve a crew, take a kickoff pushed
 * for POST /kickoff, acknowledge it, run it; serve again by itself after a broken connection; refusals.
 */
#include <crewstream/client.h>

#include "harness.h"

static daemon_t D;

/* POST /kickoff with body; returns the kickoff id (malloc'd) or NULL, and the status in *status. */
static char *kickoff(const char *body, int *status)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)D.port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    char req[1024], buf[8192];
    size_t len = 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0), n;

    REQUIRE(fd >= 0);
    REQUIRE(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    n = snprintf(req, sizeof(req),
                 "POST /kickoff HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 "Content-Length: %zu\r\n\r\n%s",
                 strlen(body), body);
    REQUIRE(write(fd, req, (size_t)n) == n);
    while (len < sizeof(buf) - 1 && (n = (int)read(fd, buf + len, sizeof(buf) - 1 - len)) > 0)
        len += (size_t)n;
    close(fd);
    buf[len] = '\0';
    REQUIRE(sscanf(buf, "HTTP/1.%*d %d", status) == 1);
    char *b = strstr(buf, "\r\n\r\n");
    REQUIRE(b != NULL);
    json_t *o = json_loads(b + 4, 0, NULL);
    const char *id = json_string_value(json_object_get(o, "kickoff_id"));
    char *out = id != NULL ? strdup(id) : NULL;
    json_decref(o);
    return out;
}

static long long crews_runtimes(void)
{
    char *body = http_get(D.port, "/v1/crews");
    json_t *o = json_loads(body, 0, NULL);
    long long n = json_integer_value(json_object_get(
        json_object_get(o, "crews") ? json_array_get(json_object_get(o, "crews"), 0) : NULL, "concurrency"));
    json_decref(o);
    free(body);
    return n;
}

static void test_serve_take_ack_run(void)
{
    crewstream_client_t *c = h_open_client(&D, NULL);
    static const char *const inputs[] = {"topic"};
    crewstream_kickoff_t k;
    int status;

    CHECK(crewstream_serve(c, "bad name", inputs, 1, 2, 5000) == -EINVAL);
    CHECK(strstr(crewstream_last_error(c), "crew") != NULL);
    CHECK(crewstream_serve(c, "lib_crew", NULL, 1, 2, 5000) == -EINVAL);
    REQUIRE(crewstream_serve(c, "lib_crew", inputs, 1, 2, 5000) == 0);
    CHECK(crews_runtimes() == 2);
    CHECK(crewstream_next_kickoff(c, 0, &k) == -ETIMEDOUT);

    char *id = kickoff("{\"inputs\":{\"topic\":\"C\"}}", &status);
    REQUIRE(status == 200 && id != NULL);
    REQUIRE(crewstream_next_kickoff(c, 5000, &k) == 0);
    CHECK_STR(k.execution_id, id);
    CHECK_STR(k.crew, "lib_crew");
    CHECK_STR(k.inputs_json, "{\"topic\":\"C\"}");
    CHECK(crewstream_kickoff_ack(c, k.execution_id, 5000) == 0);
    CHECK(crewstream_kickoff_ack(c, k.execution_id, 5000) == 0); /* repeated: the same word */
    char ev[256];
    crewstream_ticket_t t;
    crewstream_ack_t a;
    snprintf(ev, sizeof(ev),
             "{\"execution_id\":\"%s\",\"type\":\"run.completed\",\"result\":{\"output\":\"ok\"}}",
             k.execution_id);
    REQUIRE(crewstream_post(c, ev, &t) == 0);
    REQUIRE(crewstream_wait(c, t, 5000, &a) == 0 && a.ok);
    CHECK(crewstream_kickoff_ack(c, k.execution_id, 5000) == -ESRCH); /* finished: nothing to ack */
    CHECK(crewstream_kickoff_ack(c, "never-pushed", 5000) == -ESRCH);
    crewstream_kickoff_clear(&k);
    free(id);

    /* A broken connection: the library connects again and serves again by itself, and a kickoff that
     * comes then reaches it. */
    break_conn(c);
    REQUIRE(crewstream_process(c, 200) == 0);
    for (int i = 0; i < 100 && crews_runtimes() != 2; i++)
        REQUIRE(crewstream_process(c, 20) == 0);
    CHECK(crews_runtimes() == 2);
    id = kickoff("{\"inputs\":{\"topic\":\"again\"}}", &status);
    REQUIRE(status == 200 && id != NULL);
    REQUIRE(crewstream_next_kickoff(c, 5000, &k) == 0);
    CHECK_STR(k.execution_id, id);
    CHECK(crewstream_kickoff_ack(c, k.execution_id, 5000) == 0);
    crewstream_kickoff_clear(&k);
    free(id);
    crewstream_close(c);
    /* The connection's end ends its serving. */
    for (int i = 0; i < 100 && crews_runtimes() != 0; i++)
        h_sleep_ms(20);
    CHECK(crews_runtimes() == 0);
}

int main(int argc, char **argv)
{
    REQUIRE(argc == 2);
    h_watchdog(100);
    daemon_init(&D, argv[1]);
    RUN(test_serve_take_ack_run);
    daemon_fini(&D);
    CT_DONE();
}
