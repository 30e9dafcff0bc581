/* floor: the least a server can do for the streaming scenarios, to measure the
 * machine's limit under the same load tools.
 *
 * It speaks just enough of crewstreamd's two sides for bench/publisher and
 * bench/swarm: NDJSON lines over a Unix socket, each answered {"ok":true}, and
 * SSE subscribers on GET .../executions/<id>/events. Each line is forwarded
 * verbatim as one "data:" frame to every subscriber of its execution_id. No
 * storage, no JSON parsing, no ids, no token, no replay: what is left is the
 * kernel work every server has to do, one epoll loop in one thread that reads
 * what came, queues it, and before sleeping sends once per subscriber and once
 * per producer. Its latency is the floor under crewstreamd's and nchan's on
 * this machine; the difference is what the server's own code costs.
 *
 *     floor --port 8852 --socket /tmp/floor.sock
 *
 * With --journal DIR (for bench/journal) it also does the least a journal can do: every line becomes
 * --record-bytes bytes (the line, cut or padded with zeros: the volume crewstreamd's records take) in a
 * buffer, and before the replies go out the wake-up's buffer is written with one write() to a file in DIR
 * (O_APPEND), as crewstreamd's journal writes its batch before its acknowledgements. Files roll at
 * 64 MiB; a helper thread calls fdatasync on the open one every second under --fsync everysec (none:
 * never), closes the rolled ones and deletes all but the last four, as crewstreamd's sync thread does. No
 * record format, no checksum, no store: what is left is the kernel's work for those bytes.
 *
 * Not a server to use: it trusts its input and keeps a subscriber's unsent
 * bytes until 4 MiB, then drops the subscriber. */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_FDS     65536
#define MAX_EXECS   65536 /* a power of two: the hash table's size */
#define NAME_MAX_   128
#define OUT_MAX     (4u << 20)
#define RBUF        (256u << 10)
#define J_ROLL      (64u << 20)
#define J_KEEP      4
#define LISTEN_TCP  (MAX_FDS + 1)
#define LISTEN_UNIX (MAX_FDS + 2)

enum { C_FREE, C_HEAD, C_SUB, C_PRODUCER };

typedef struct {
    int state;
    bool dirty, want_out;
    int exec;  /* subscribers: index in execs */
    char *out; /* unsent bytes */
    size_t out_len, out_cap;
    char head[4096]; /* request head so far; producers: an incomplete line */
    size_t head_len;
} conn_t;

typedef struct {
    char name[NAME_MAX_];
    int *subs;
    int n_subs, cap_subs;
} exec_t;

static conn_t conns[MAX_FDS];
static exec_t *execs;
static int *dirty;
static int n_dirty, ep;
static char rbuf[RBUF];

/* --journal: the wake-up's records, the open file and what the helper thread is handed. */
static const char *jdir;
static size_t jrec = 280;
static bool jsync = true;
static char *jbuf;
static size_t jlen, jcap, jfile_bytes;
static int jfd = -1;
static unsigned jfile; /* the open file's number */
static pthread_mutex_t jmu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t jcv = PTHREAD_COND_INITIALIZER;
static int jsync_fd = -1, jretired[64];
static unsigned jretired_n, jdone_below; /* files numbered below jdone_below - J_KEEP are deleted */

static int jopen(unsigned n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%08u.floor", jdir, n);
    return open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
}

static void *jhelper(void *arg)
{
    (void)arg;
    unsigned deleted = 0;
    pthread_mutex_lock(&jmu);
    while (!bench_stop) {
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        t.tv_sec++;
        pthread_cond_timedwait(&jcv, &jmu, &t);
        int fd = jsync_fd, ret[64];
        unsigned nret = jretired_n, below = jdone_below;
        memcpy(ret, jretired, nret * sizeof *ret);
        jretired_n = 0;
        pthread_mutex_unlock(&jmu);
        for (unsigned k = 0; k < nret; k++) {
            if (jsync)
                (void)fdatasync(ret[k]);
            close(ret[k]);
        }
        /* A roll meanwhile is fine: the rolled fd waits in jretired for this thread to close it. */
        if (jsync && fd >= 0)
            (void)fdatasync(fd);
        for (; below > J_KEEP && deleted < below - J_KEEP; deleted++) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%08u.floor", jdir, deleted);
            (void)unlink(path);
        }
        pthread_mutex_lock(&jmu);
    }
    pthread_mutex_unlock(&jmu);
    return NULL;
}

/* One line's record: exactly jrec bytes. */
static void jappend(const char *p, size_t n)
{
    if (jlen + jrec > jcap) {
        size_t cap = jcap ? jcap * 2 : 1u << 20;
        char *b = realloc(jbuf, cap);
        if (!b) {
            fprintf(stderr, "floor: out of memory\n");
            exit(1);
        }
        jbuf = b;
        jcap = cap;
    }
    size_t take = n < jrec ? n : jrec;
    memcpy(jbuf + jlen, p, take);
    memset(jbuf + jlen + take, 0, jrec - take);
    jlen += jrec;
}

/* The wake-up's records in one write(), before any reply goes out; a new file every J_ROLL bytes. */
static void jwrite(void)
{
    if (jlen == 0)
        return;
    if (jfile_bytes >= J_ROLL) {
        int fd = jopen(jfile + 1);
        if (fd < 0) {
            fprintf(stderr, "floor: cannot create a journal file in %s: %s\n", jdir, strerror(errno));
            exit(1);
        }
        pthread_mutex_lock(&jmu);
        if (jretired_n < 64) {
            jretired[jretired_n++] = jfd;
        } else { /* the helper is 64 rolls (4 GiB) behind: this one is synced and closed here */
            if (jsync)
                (void)fdatasync(jfd);
            close(jfd);
        }
        jsync_fd = fd;
        jdone_below = ++jfile;
        pthread_mutex_unlock(&jmu);
        jfd = fd;
        jfile_bytes = 0;
    }
    for (size_t done = 0; done < jlen;) {
        ssize_t w = write(jfd, jbuf + done, jlen - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            fprintf(stderr, "floor: journal write failed: %s\n", w < 0 ? strerror(errno) : "no progress");
            exit(1);
        }
        done += (size_t)w;
    }
    jfile_bytes += jlen;
    jlen = 0;
}

static uint32_t hash(const char *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 16777619u;
    return h;
}

/* The execution called p[0..n), created on first sight; -1 when the table is full or the name long. */
static int exec_find(const char *p, size_t n)
{
    if (n == 0 || n >= NAME_MAX_)
        return -1;
    for (uint32_t i = hash(p, n) & (MAX_EXECS - 1), probes = 0; probes < MAX_EXECS;
         i = (i + 1) & (MAX_EXECS - 1), probes++) {
        exec_t *e = &execs[i];
        if (!e->name[0]) {
            memcpy(e->name, p, n);
            e->name[n] = '\0';
            return (int)i;
        }
        if (strlen(e->name) == n && memcmp(e->name, p, n) == 0)
            return (int)i;
    }
    return -1;
}

static void conn_close(int fd)
{
    conn_t *c = &conns[fd];
    if (c->state == C_SUB) {
        exec_t *e = &execs[c->exec];
        for (int k = 0; k < e->n_subs; k++)
            if (e->subs[k] == fd) {
                e->subs[k] = e->subs[--e->n_subs];
                break;
            }
    }
    free(c->out);
    memset(c, 0, sizeof *c);
    close(fd); /* a dirty entry left behind is skipped: its state is C_FREE */
}

static int queue(int fd, const char *p, size_t n)
{
    conn_t *c = &conns[fd];
    if (c->out_len + n > c->out_cap) {
        if (c->out_len + n > OUT_MAX)
            return -1;
        size_t cap = c->out_cap ? c->out_cap : 4096;
        while (cap < c->out_len + n)
            cap *= 2;
        char *o = realloc(c->out, cap);
        if (!o)
            return -1;
        c->out = o;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
    if (!c->dirty) {
        c->dirty = true;
        dirty[n_dirty++] = fd;
    }
    return 0;
}

/* One send of everything queued; what the socket does not take waits for EPOLLOUT. */
static void flush(int fd)
{
    conn_t *c = &conns[fd];
    c->dirty = false;
    if (c->state == C_FREE || c->out_len == 0)
        return;
    ssize_t w = send(fd, c->out, c->out_len, MSG_NOSIGNAL);
    if (w < 0 && errno != EAGAIN && errno != EINTR) {
        conn_close(fd);
        return;
    }
    if (w > 0) {
        memmove(c->out, c->out + w, c->out_len - (size_t)w);
        c->out_len -= (size_t)w;
    }
    bool want = c->out_len > 0;
    if (want != c->want_out) {
        c->want_out = want;
        bench_epoll(ep, EPOLL_CTL_MOD, fd, EPOLLIN | EPOLLRDHUP | (want ? EPOLLOUT : 0), (uint32_t)fd);
    }
}

/* One NDJSON line: answer it, and forward it to its execution's subscribers. */
static void on_line(int fd, const char *p, size_t n)
{
    static const char ok[] = "{\"ok\":true}\n";
    queue(fd, ok, sizeof ok - 1);
    if (jdir)
        jappend(p, n);
    const char *k = memmem(p, n, "\"execution_id\":\"", 16);
    if (!k)
        return;
    k += 16;
    const char *q = memchr(k, '"', (size_t)(p + n - k));
    int x = q ? exec_find(k, (size_t)(q - k)) : -1;
    if (x < 0)
        return;
    exec_t *e = &execs[x];
    for (int s = 0; s < e->n_subs; s++) {
        int sfd = e->subs[s];
        if (queue(sfd, "data: ", 6) != 0 || queue(sfd, p, n) != 0 || queue(sfd, "\n\n", 2) != 0) {
            conn_close(sfd);
            s--; /* the last subscriber moved into slot s */
        }
    }
}

static void on_producer(int fd)
{
    conn_t *c = &conns[fd];
    for (;;) {
        ssize_t r = recv(fd, rbuf, sizeof rbuf, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            return;
        if (r <= 0) {
            conn_close(fd);
            return;
        }
        size_t off = 0;
        if (c->head_len > 0) { /* finish the line the last read cut */
            const char *nl = memchr(rbuf, '\n', (size_t)r);
            size_t take = nl ? (size_t)(nl - rbuf) : (size_t)r;
            if (c->head_len + take > sizeof c->head) {
                conn_close(fd);
                return;
            }
            memcpy(c->head + c->head_len, rbuf, take);
            c->head_len += take;
            if (!nl)
                continue;
            on_line(fd, c->head, c->head_len);
            c->head_len = 0;
            off = take + 1;
        }
        while (off < (size_t)r) {
            const char *nl = memchr(rbuf + off, '\n', (size_t)r - off);
            if (!nl) {
                size_t rest = (size_t)r - off;
                if (rest > sizeof c->head) {
                    conn_close(fd);
                    return;
                }
                memcpy(c->head, rbuf + off, rest);
                c->head_len = rest;
                break;
            }
            on_line(fd, rbuf + off, (size_t)(nl - (rbuf + off)));
            off = (size_t)(nl - rbuf) + 1;
        }
    }
}

/* The request head of a would-be subscriber: GET .../executions/<id>/events... */
static void on_head(int fd)
{
    conn_t *c = &conns[fd];
    ssize_t r = recv(fd, c->head + c->head_len, sizeof c->head - 1 - c->head_len, 0);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (r <= 0) {
        conn_close(fd);
        return;
    }
    c->head_len += (size_t)r;
    c->head[c->head_len] = '\0';
    if (!strstr(c->head, "\r\n\r\n")) {
        if (c->head_len == sizeof c->head - 1)
            conn_close(fd);
        return;
    }
    const char *k = strstr(c->head, "/executions/"), *sp = strchr(c->head, ' ');
    const char *end = k ? strchr(k + 12, '/') : NULL;
    int x = end && sp && k > sp && strncmp(c->head, "GET ", 4) == 0
                ? exec_find(k + 12, (size_t)(end - k - 12))
                : -1;
    if (x < 0) {
        static const char bad[] = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        (void)!send(fd, bad, sizeof bad - 1, MSG_NOSIGNAL);
        conn_close(fd);
        return;
    }
    exec_t *e = &execs[x];
    if (e->n_subs == e->cap_subs) {
        int cap = e->cap_subs ? e->cap_subs * 2 : 4;
        int *s = realloc(e->subs, (size_t)cap * sizeof *s);
        if (!s) {
            conn_close(fd);
            return;
        }
        e->subs = s;
        e->cap_subs = cap;
    }
    e->subs[e->n_subs++] = fd;
    c->state = C_SUB;
    c->exec = x;
    c->head_len = 0;
    static const char ok[] =
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n";
    queue(fd, ok, sizeof ok - 1);
}

static void on_accept(int lfd, int state)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        if (fd >= MAX_FDS) {
            close(fd);
            continue;
        }
        if (state == C_HEAD)
            bench_nodelay(fd);
        conns[fd].state = state;
        bench_epoll(ep, EPOLL_CTL_ADD, fd, EPOLLIN | EPOLLRDHUP, (uint32_t)fd);
    }
}

static int listen_on(int port, const char *path)
{
    int fd;
    if (path) {
        struct sockaddr_un su = {.sun_family = AF_UNIX};
        if (strlen(path) >= sizeof su.sun_path)
            return -1;
        strcpy(su.sun_path, path);
        unlink(path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *)&su, sizeof su) != 0)
            return -1;
    } else {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int one = 1;
        fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
            bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
            return -1;
    }
    return listen(fd, 4096) == 0 ? fd : -1;
}

int main(int argc, char **argv)
{
    int port = 0;
    const char *path = NULL;
    static const struct option lo[] = {{"port", 1, NULL, 'P'},    {"socket", 1, NULL, 's'},
                                       {"journal", 1, NULL, 'j'}, {"record-bytes", 1, NULL, 'r'},
                                       {"fsync", 1, NULL, 'f'},   {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        if (ch == 'P')
            port = atoi(optarg);
        else if (ch == 's')
            path = optarg;
        else if (ch == 'j')
            jdir = optarg;
        else if (ch == 'r' && atoi(optarg) > 0)
            jrec = (size_t)atoi(optarg);
        else if (ch == 'f' && (strcmp(optarg, "none") == 0 || strcmp(optarg, "everysec") == 0))
            jsync = strcmp(optarg, "everysec") == 0;
        else
            port = -1;
    }
    if (port <= 0 || port > 65535 || !path) {
        fprintf(stderr, "usage: floor --port PORT --socket PATH [--journal DIR [--record-bytes N (280)] "
                        "[--fsync none|everysec (everysec)]]\n");
        return 2;
    }
    bench_signals();
    bench_raise_nofile();
    execs = calloc(MAX_EXECS, sizeof *execs);
    dirty = malloc(2 * MAX_FDS * sizeof *dirty); /* a reused fd may be listed twice */
    int tcp = listen_on(port, NULL), unx = listen_on(0, path);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (!execs || !dirty || tcp < 0 || unx < 0 || ep < 0) {
        fprintf(stderr, "floor: cannot listen: %s\n", strerror(errno));
        return 1;
    }
    pthread_t jth;
    if (jdir) {
        jfd = jopen(0);
        if (jfd < 0) {
            fprintf(stderr, "floor: cannot create a journal file in %s: %s\n", jdir, strerror(errno));
            return 1;
        }
        jsync_fd = jfd;
        /* The helper takes no signal: a SIGTERM must end the loop's epoll_wait. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        int rc = pthread_create(&jth, NULL, jhelper, NULL);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (rc != 0) {
            fprintf(stderr, "floor: cannot start the journal's helper thread\n");
            return 1;
        }
    }
    bench_epoll(ep, EPOLL_CTL_ADD, tcp, EPOLLIN, LISTEN_TCP);
    bench_epoll(ep, EPOLL_CTL_ADD, unx, EPOLLIN, LISTEN_UNIX);
    static struct epoll_event evs[512];
    while (!bench_stop) {
        /* Before sleeping: the wake-up's records written, then one send per connection that has something
         * queued. */
        if (jdir)
            jwrite();
        for (int k = 0; k < n_dirty; k++)
            flush(dirty[k]);
        n_dirty = 0;
        int n = epoll_wait(ep, evs, 512, -1);
        for (int k = 0; k < n; k++) {
            uint32_t tag = evs[k].data.u32;
            if (tag == LISTEN_TCP || tag == LISTEN_UNIX) {
                on_accept(tag == LISTEN_TCP ? tcp : unx, tag == LISTEN_TCP ? C_HEAD : C_PRODUCER);
                continue;
            }
            int fd = (int)tag;
            conn_t *c = &conns[fd];
            if (c->state == C_FREE)
                continue;
            if (evs[k].events & EPOLLOUT) {
                if (!c->dirty) {
                    c->dirty = true;
                    dirty[n_dirty++] = fd;
                }
            }
            if (c->state == C_PRODUCER && (evs[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                on_producer(fd);
            else if (c->state == C_HEAD && (evs[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                on_head(fd);
            else if (c->state == C_SUB && (evs[k].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
                conn_close(fd);
            else if (c->state == C_SUB && (evs[k].events & EPOLLIN) && recv(fd, rbuf, sizeof rbuf, 0) == 0)
                conn_close(fd);
        }
    }
    unlink(path);
    if (jdir) {
        pthread_mutex_lock(&jmu);
        pthread_cond_signal(&jcv);
        pthread_mutex_unlock(&jmu);
        pthread_join(jth, NULL);
    }
    return 0;
}
