/*
 * test_example.c - the example program of docs/client.md (example_crew.c, included here with its
 * main renamed) run against the real daemon, answered over HTTP the way a person's dashboard or
 * curl answers (POST /resume); and a check that docs/client.md shows that program verbatim, so
 * the documented example can neither rot nor drift.
 */
#define main example_main
#include "example_crew.c"
#undef main

#include "harness.h"

static daemon_t D;

/* POST path with a JSON body over HTTP/1.0; returns the status code. */
static int http_post(int port, const char *path, const char *body)
{
    struct sockaddr_in sa = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    char req[1024], resp[512];
    int fd = socket(AF_INET, SOCK_STREAM, 0), n, status = -1;
    size_t len = 0;

    REQUIRE(fd >= 0);
    REQUIRE(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    n = snprintf(req, sizeof(req),
                 "POST %s HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 "Content-Length: %zu\r\n\r\n%s",
                 path, strlen(body), body);
    REQUIRE(n > 0 && (size_t)n < sizeof(req));
    REQUIRE(write(fd, req, (size_t)n) == n);
    for (;;) {
        ssize_t k = read(fd, resp + len, sizeof(resp) - 1 - len);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0 || (len += (size_t)k) == sizeof(resp) - 1)
            break;
    }
    close(fd);
    resp[len] = '\0';
    if (sscanf(resp, "HTTP/1.%*d %d", &status) != 1)
        status = -1;
    return status;
}

/* The status object of execution x (NULL when it does not exist). */
static json_t *status_of(const char *x)
{
    char path[128], *body;
    json_t *o;

    snprintf(path, sizeof(path), "/v1/executions/%s", x);
    body = http_get(D.port, path);
    if (body == NULL)
        return NULL;
    o = json_loads(body, 0, NULL);
    free(body);
    return o;
}

/* Runs the example for execution x in a child; answers its request; returns its exit status. */
static int run_example(const char *x, int approve)
{
    char body[256];
    pid_t pid;
    int st, asked = 0;

    fflush(NULL);
    pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        char *argv[] = {"example_crew", (char *)x, NULL};
        setenv("CREWSTREAM_SOCKET", D.sock, 1);
        int rc = example_main(2, argv);
        fflush(NULL);
        _exit(rc);
    }
    /* A person looks at the execution until it waits for them, then answers. */
    for (int i = 0; i < 500 && !asked; i++) {
        json_t *h = history(D.port, x);
        asked = json_array_size(h) == 5;
        json_decref(h);
        if (!asked)
            h_sleep_ms(10);
    }
    json_t *s = status_of(x);
    CHECK_STR(json_string_value(json_object_get(s, "status")), "pending_human_input");
    json_decref(s);
    CHECK(asked);
    snprintf(body, sizeof(body),
             "{\"execution_id\":\"%s\",\"task_id\":\"review\",\"human_feedback\":\"%s\",\"is_approve\":%s}",
             x, approve ? "Ship it" : "Too long", approve ? "true" : "false");
    CHECK(http_post(D.port, "/resume", body) == 200);
    REQUIRE(waitpid(pid, &st, 0) == pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void check_run(const char *x, const char *want_status, const char *last_type)
{
    json_t *s = status_of(x), *h = history(D.port, x);
    static const char *const types[] = {"crew_kickoff_started", "task_started",
                                        "tool_usage_finished",  "task_completed",
                                        "human_input_required", "human_input_completed"};
    size_t n = json_array_size(h);

    CHECK_STR(json_string_value(json_object_get(s, "status")), want_status);
    CHECK(n == 7);
    for (size_t i = 0; i < n && i < 7; i++) {
        json_t *e = json_array_get(h, i);
        CHECK_STR(json_string_value(json_object_get(e, "type")), i < 6 ? types[i] : last_type);
        CHECK(json_integer_value(json_object_get(e, "seq")) == (json_int_t)i + 1);
    }
    json_decref(s);
    json_decref(h);
}

static void test_approved(void)
{
    CHECK(run_example("ex-approve", 1) == 0);
    check_run("ex-approve", "completed", "crew_kickoff_completed");
}

static void test_rejected(void)
{
    CHECK(run_example("ex-reject", 0) == 2);
    check_run("ex-reject", "error", "crew_kickoff_failed");
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    rewind(f);
    buf = malloc((size_t)n + 1);
    REQUIRE(buf != NULL);
    REQUIRE(fread(buf, 1, (size_t)n, f) == (size_t)n);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* docs/client.md shows example_crew.c, byte for byte. */
static void test_documented_verbatim(void)
{
    char dir[512], path[600];
    const char *slash = strrchr(__FILE__, '/');
    char *ex, *doc;

    REQUIRE(slash != NULL);
    snprintf(dir, sizeof(dir), "%.*s", (int)(slash - __FILE__), __FILE__);
    snprintf(path, sizeof(path), "%s/example_crew.c", dir);
    ex = slurp(path);
    snprintf(path, sizeof(path), "%s/../../docs/client.md", dir);
    doc = slurp(path);
    REQUIRE(ex != NULL);
    CHECK(doc != NULL);
    CHECK(doc != NULL && strstr(doc, ex) != NULL);
    free(ex);
    free(doc);
}

int main(int argc, char **argv)
{
    REQUIRE(argc == 2);
    h_watchdog(60);
    daemon_init(&D, argv[1]);
    RUN(test_approved);
    RUN(test_rejected);
    RUN(test_documented_verbatim);
    daemon_fini(&D);
    CT_DONE();
}
