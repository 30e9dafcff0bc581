/*
 * harness.h - what the client-library tests share: start the real crewstreamd (argv[1])
 * on a free loopback port and a socket in a fresh temporary directory, stop it with
 * SIGTERM (exit 0 expected), and read an execution's history over HTTP with a raw socket.
 * The temporary directory is removed when the test passes; when it fails (a CHECK, a
 * REQUIRE, the watchdog) it is kept and its path is the last line on stderr.
 */
#ifndef CS_CLIENT_HARNESS_H
#define CS_CLIENT_HARNESS_H

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ctest.h"

typedef struct {
    const char *bin;
    char dir[64];
    char sock[128];
    int port;
    pid_t pid;
    const char *config; /* a configuration file for --config, or NULL */
} daemon_t;

/* The test's temporary directory while it exists: reported if the test dies with it. */
static char h_tmpdir[64];

static void h_report_tmpdir(void)
{
    if (h_tmpdir[0] != '\0')
        fprintf(stderr, "test failed: its temporary directory is kept: %s\n", h_tmpdir);
}

/* Removes dir and the files in it (the tests make no subdirectories). */
static __attribute__((unused)) int h_rmdir_r(const char *dir)
{
    DIR *dp = opendir(dir);
    struct dirent *e;
    char path[512];

    if (dp == NULL)
        return -1;
    while ((e = readdir(dp)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(dp);
    return rmdir(dir);
}

static __attribute__((unused)) void h_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static __attribute__((unused)) int h_free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    REQUIRE(fd >= 0);
    REQUIRE(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    REQUIRE(getsockname(fd, (struct sockaddr *)&sa, &len) == 0);
    port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

static __attribute__((unused)) int h_unix_accepts(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(path);
    int fd, ok;

    if (n >= sizeof(sa.sun_path))
        return 0;
    memcpy(sa.sun_path, path, n + 1);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

static __attribute__((unused)) int h_tcp_accepts(int port)
{
    struct sockaddr_in sa = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM, 0), ok;

    ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

/* Starts the daemon on d->sock (kept across restarts) and a new free port, without waiting. */
static __attribute__((unused)) void daemon_spawn(daemon_t *d)
{
    char listen[64];

    d->port = h_free_port();
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", d->port);
    d->pid = fork();
    REQUIRE(d->pid >= 0);
    if (d->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a test that dies (REQUIRE, alarm) takes its daemon along */
        if (d->config != NULL)
            execl(d->bin, d->bin, "--config", d->config, "--listen", listen, "--socket", d->sock,
                  "--log-level", "warn", (char *)NULL);
        else
            execl(d->bin, d->bin, "--listen", listen, "--socket", d->sock, "--log-level", "warn",
                  (char *)NULL);
        perror("exec crewstreamd");
        _exit(127);
    }
}

/* Waits until the daemon accepts on both its socket and its port. */
static __attribute__((unused)) void daemon_ready(daemon_t *d)
{
    for (int i = 0; i < 1000; i++) {
        int st;
        REQUIRE(waitpid(d->pid, &st, WNOHANG) == 0); /* it must not have died */
        if (h_unix_accepts(d->sock) && h_tcp_accepts(d->port))
            return;
        h_sleep_ms(10);
    }
    REQUIRE(!"the daemon did not come up within 10 s");
}

/* Starts the daemon and waits until it accepts. */
static __attribute__((unused)) void daemon_start(daemon_t *d)
{
    daemon_spawn(d);
    daemon_ready(d);
}

/* Creates the temporary directory and starts the daemon. */
static __attribute__((unused)) void daemon_init(daemon_t *d, const char *bin)
{
    memset(d, 0, sizeof(*d));
    d->bin = bin;
    snprintf(d->dir, sizeof(d->dir), "/tmp/cs-client-XXXXXX");
    REQUIRE(mkdtemp(d->dir) != NULL);
    if (h_tmpdir[0] == '\0')
        atexit(h_report_tmpdir); /* a REQUIRE exits: say where the daemon's files are */
    snprintf(h_tmpdir, sizeof(h_tmpdir), "%s", d->dir);
    snprintf(d->sock, sizeof(d->sock), "%s/ingest.sock", d->dir);
    daemon_start(d);
}

/* Sends sig, waits for the exit; returns the exit status (or 128 + signal). */
static __attribute__((unused)) int daemon_kill(daemon_t *d, int sig)
{
    int st = 0;

    if (d->pid <= 0)
        return -1;
    if (sig == SIGSTOP) {
        kill(d->pid, sig);
        return 0;
    }
    /*
     * A stopped daemon (SIGSTOP above) must run to act on a catchable sig, so SIGCONT goes first
     * (SIGKILL needs none, and a resumed daemon would read what it must not before dying). Sent
     * after sig, SIGCONT can reach a daemon already in LeakSanitizer's exit-time check, and that
     * deadlocks (the test then hung until its watchdog).
     */
    if (sig != SIGKILL)
        kill(d->pid, SIGCONT);
    kill(d->pid, sig);
    REQUIRE(waitpid(d->pid, &st, 0) == d->pid);
    d->pid = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Stops the daemon with SIGTERM and checks that it exits 0. */
static __attribute__((unused)) void daemon_stop(daemon_t *d)
{
    CHECK(daemon_kill(d, SIGTERM) == 0);
}

/* Stops the daemon; removes the temporary directory unless something failed (then it is kept and
 * reported at exit). */
static __attribute__((unused)) void daemon_fini(daemon_t *d)
{
    if (d->pid > 0)
        daemon_stop(d);
    if (ct_failures != 0)
        return;
    if (h_rmdir_r(d->dir) != 0)
        fprintf(stderr, "cannot remove %s: %s\n", d->dir, strerror(errno));
    if (strcmp(h_tmpdir, d->dir) == 0)
        h_tmpdir[0] = '\0';
}

/* GET path over HTTP/1.0; returns the body (malloc'd) of a 200 answer, else NULL. */
static __attribute__((unused)) char *http_get(int port, const char *path)
{
    struct sockaddr_in sa = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    char req[512];
    size_t len = 0, cap = 1 << 16;
    char *buf = malloc(cap), *body;
    int fd = socket(AF_INET, SOCK_STREAM, 0), n;

    REQUIRE(buf != NULL && fd >= 0);
    REQUIRE(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    n = snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
    REQUIRE(write(fd, req, (size_t)n) == n);
    for (;;) {
        if (cap - len < 4096) {
            cap *= 2;
            buf = realloc(buf, cap);
            REQUIRE(buf != NULL);
        }
        ssize_t k = read(fd, buf + len, cap - len - 1);
        if (k < 0 && errno == EINTR)
            continue;
        REQUIRE(k >= 0);
        if (k == 0)
            break;
        len += (size_t)k;
    }
    close(fd);
    buf[len] = '\0';
    body = strstr(buf, "\r\n\r\n");
    if (strncmp(buf, "HTTP/1.", 7) != 0 || strncmp(buf + 9, "200", 3) != 0 || body == NULL) {
        fprintf(stderr, "GET %s: %.200s\n", path, buf);
        free(buf);
        return NULL;
    }
    body = strdup(body + 4);
    free(buf);
    return body;
}

/* The events the daemon retains for execution x (a JSON array, owned by the caller). */
static __attribute__((unused)) json_t *history(int port, const char *x)
{
    char path[256];
    json_error_t err;
    char *body;
    json_t *o, *ev;

    snprintf(path, sizeof(path), "/v1/executions/%s/poll?timeout=0", x);
    body = http_get(port, path);
    REQUIRE(body != NULL);
    o = json_loads(body, 0, &err);
    free(body);
    REQUIRE(o != NULL);
    ev = json_incref(json_object_get(o, "events"));
    json_decref(o);
    REQUIRE(json_is_array(ev));
    return ev;
}

/* The value of counter crewstream_NAME in GET /metrics, or -1. */
static __attribute__((unused)) long long metric(int port, const char *name)
{
    char *body = http_get(port, "/metrics"), key[128], *p;
    long long v = -1;

    if (body == NULL)
        return -1;
    snprintf(key, sizeof(key), "\ncrewstream_%s ", name);
    p = strstr(body, key);
    if (p != NULL)
        v = strtoll(p + strlen(key), NULL, 10);
    free(body);
    return v;
}

#ifdef CREWSTREAM_CLIENT_H
/*
 * Breaks the client's connection the way a crash of the peer would, without the library's
 * knowledge: its descriptor is replaced by a socket whose peer is already closed. The old
 * connection is closed (the daemon sees it go), and replies the daemon had written to it but the
 * library had not read are lost, so the library must resend those lines.
 */
static __attribute__((unused)) void break_conn(crewstream_client_t *c)
{
    int sv[2], fd = crewstream_fd(c);

    REQUIRE(fd >= 0);
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    close(sv[1]);
    REQUIRE(dup2(sv[0], fd) == fd);
    close(sv[0]);
}

/* Connects a client to d's socket, with base's options (NULL: the defaults). */
static __attribute__((unused)) crewstream_client_t *h_open_client(const daemon_t *d,
                                                                  const crewstream_options_t *base)
{
    crewstream_options_t o;
    crewstream_client_t *c = NULL;

    if (base != NULL)
        o = *base;
    else
        crewstream_options_init(&o);
    o.socket_path = d->sock;
    REQUIRE(crewstream_connect(&c, &o) == 0);
    REQUIRE(c != NULL);
    return c;
}
#endif

/* The watchdog fired: say so and where the daemon's files are, then die of SIGALRM. */
static void h_on_alarm(int sig)
{
    static const char msg[] = "watchdog: the test ran out of time; its temporary directory is kept: ";
    ssize_t rc = write(2, msg, sizeof(msg) - 1);

    rc += write(2, h_tmpdir, strlen(h_tmpdir));
    rc += write(2, "\n", 1);
    (void)rc;
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Arms a watchdog: the test process dies if it runs longer than s seconds. */
static __attribute__((unused)) void h_watchdog(unsigned s)
{
    signal(SIGPIPE, SIG_DFL); /* the library must never raise it: let it kill us if it does */
    signal(SIGALRM, h_on_alarm);
    alarm(s);
}

#endif
