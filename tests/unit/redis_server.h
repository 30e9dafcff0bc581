/*
 * redis_server.h - a redis-server of the test's own, on a Unix socket in a temporary directory, without
 * persistence: started, stopped (SIGSTOP/SIGCONT to make it hang), killed and started again. Tests that
 * need one skip (exit 0 with a message) when Debian's redis-server is not installed.
 */
#ifndef CS_TEST_REDIS_SERVER_H
#define CS_TEST_REDIS_SERVER_H

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct test_redis {
    char dir[64];
    char sock[128];
    char addr[160]; /* "unix:<sock>" */
    pid_t pid;
} test_redis_t;

static const char *test_redis_bin(void)
{
    static const char *const bins[] = {"/usr/bin/redis-server", "/usr/local/bin/redis-server"};
    for (size_t i = 0; i < sizeof(bins) / sizeof(bins[0]); i++)
        if (access(bins[i], X_OK) == 0)
            return bins[i];
    return NULL;
}

static void test_redis_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Whether a connection to the Unix socket at path is accepted now. */
static int test_redis_accepts(const char *path)
{
    struct sockaddr_un a;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), ok;

    if (fd < 0)
        return 0;
    memset(&a, 0, sizeof(a));
    a.sun_family = AF_UNIX;
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
    ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

/* Starts (or starts again, on the same socket) the server; returns 0, or -1 when it did not come up. */
static int test_redis_start(test_redis_t *t)
{
    const char *bin = test_redis_bin();
    struct stat sb;

    if (bin == NULL)
        return -1;
    if (t->dir[0] == '\0') {
        snprintf(t->dir, sizeof(t->dir), "/tmp/cs-test-redis.XXXXXX");
        if (mkdtemp(t->dir) == NULL)
            return -1;
        snprintf(t->sock, sizeof(t->sock), "%s/r.sock", t->dir);
        snprintf(t->addr, sizeof(t->addr), "unix:%s", t->sock);
    }
    unlink(t->sock);
    t->pid = fork();
    if (t->pid < 0)
        return -1;
    if (t->pid == 0) {
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, 1);
            dup2(devnull, 2);
        }
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a test that dies takes its server with it */
        execl(bin, bin, "--port", "0", "--unixsocket", t->sock, "--unixsocketperm", "700", "--save", "",
              "--appendonly", "no", "--daemonize", "no", "--dir", t->dir, "--loglevel", "warning",
              (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 500; i++) { /* up to 5 s */
        /* Accepting, not merely bound: the socket file exists a moment before listen(), and a test that
         * connects in that moment sees a refusal it does not expect (seen under ASan on a loaded host). */
        if (stat(t->sock, &sb) == 0 && test_redis_accepts(t->sock))
            return 0;
        test_redis_sleep_ms(10);
    }
    return -1;
}

/* Kills the server (SIGKILL: it loses everything, as without persistence) and reaps it. */
static void test_redis_kill(test_redis_t *t)
{
    if (t->pid > 0) {
        kill(t->pid, SIGCONT);
        kill(t->pid, SIGKILL);
        waitpid(t->pid, NULL, 0);
        t->pid = 0;
    }
}

static void test_redis_cleanup(test_redis_t *t)
{
    char p[160];
    test_redis_kill(t);
    unlink(t->sock);
    snprintf(p, sizeof(p), "%s/dump.rdb", t->dir);
    unlink(p);
    if (t->dir[0] != '\0')
        rmdir(t->dir);
}

#endif
