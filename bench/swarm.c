/* swarm: a subscriber swarm for load tests. One process, one thread, one epoll
 * loop, raw non-blocking sockets. It opens N SSE or WebSocket connections spread
 * over C executions, counts every event each one receives, and records the
 * publish→receive latency from the "t_us" (CLOCK_MONOTONIC µs) that the
 * publisher stamps into each event. Loopback only: it never resolves names.
 *
 * The HTTP it speaks is the least that works: one GET, a status line, headers
 * up to the blank line, then either a chunked or a raw body (SSE) or
 * unmasked server frames (WebSocket, after 101). Every parser keeps its state
 * per connection, so a frame or a chunk split across reads is fine. */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

enum { ST_FREE, ST_CONNECTING, ST_HEAD, ST_STREAM };
enum { CK_SIZE, CK_EXT, CK_DATA, CK_DATA_END, CK_DONE };
enum { MODE_SSE, MODE_WS };

#define HEAD_MAX        16384
#define CARRY_MAX       (4u << 20)
#define HEAD_TIMEOUT_US 10000000ull

typedef struct {
    int fd;
    uint8_t state;
    uint8_t chunked;
    uint8_t ck_state;
    uint8_t done; /* got --expect events */
    uint64_t ck_left;
    char *carry; /* bytes of an unfinished line, frame or head */
    uint32_t carry_len, carry_cap;
    uint64_t events;
    uint64_t since_us; /* when the current state began */
    bool ever_streamed;
} conn_t;

static struct {
    bench_opts_t com; /* --execs, --prefix, --duration, --json; host, port and path of --url */
    struct sockaddr_in addr;
    int mode;
    int conns;
    double connect_rate;
    uint64_t expect;
    const char *ready_file;
    uint64_t hold_us;
    int max_pending;
    double connect_timeout;
    double idle_exit;
} opt = {.com = {.port = 8000, .execs = 1, .duration = 10},
         .mode = MODE_SSE,
         .conns = 10,
         .max_pending = 256,
         .connect_timeout = 60};

static struct {
    uint64_t events, other, connect_failures, fail_refused, fail_status, fail_timeout, fail_eof;
    uint64_t disconnects, cycles, established, bytes;
    uint64_t first_rx_us, last_rx_us;
    int pending, active, done;
    char first_error[160];
} st;

static bench_hist_t hist;
static conn_t *conns;
static int epfd;
static int *queue; /* connections waiting to (re)connect, a ring */
static int q_head, q_len;
static char rbuf[256 * 1024];

static void note_error(const char *fmt, const char *what, int code)
{
    if (st.first_error[0] == '\0')
        snprintf(st.first_error, sizeof st.first_error, fmt, what, code);
}

static void q_push(int i)
{
    queue[(q_head + q_len) % opt.conns] = i;
    q_len++;
}

static int q_pop(void)
{
    int i = queue[q_head];
    q_head = (q_head + 1) % opt.conns;
    q_len--;
    return i;
}

static int carry_reserve(conn_t *c, size_t need)
{
    if (need <= c->carry_cap)
        return 0;
    if (need > CARRY_MAX)
        return -1;
    size_t cap = c->carry_cap ? c->carry_cap : 512;
    while (cap < need)
        cap *= 2;
    char *p = realloc(c->carry, cap);
    if (!p)
        return -1;
    c->carry = p;
    c->carry_cap = (uint32_t)cap;
    return 0;
}

/* Closes c. A connection that had been streaming and did not reach --expect
 * or its churn hold time counts as a disconnect; churn puts it back in the
 * queue. */
static void conn_close(int i, bool requeue)
{
    conn_t *c = &conns[i];
    if (c->state == ST_STREAM) {
        st.active--;
        if (c->done)
            st.done--;
    } else if (c->state == ST_CONNECTING || c->state == ST_HEAD) {
        st.pending--;
    }
    close(c->fd);
    c->fd = -1;
    c->state = ST_FREE;
    c->carry_len = 0;
    if (c->carry_cap > 65536) {
        free(c->carry);
        c->carry = NULL;
        c->carry_cap = 0;
    }
    if (requeue)
        q_push(i);
}

static void conn_fail(int i, uint64_t *reason, const char *what, int code)
{
    st.connect_failures++;
    (*reason)++;
    note_error("connect failure: %s %d", what, code);
    conn_close(i, false);
}

static void conn_start(int i, uint64_t now)
{
    conn_t *c = &conns[i];
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        st.connect_failures++;
        st.fail_refused++;
        note_error("socket: %s %d", strerror(errno), errno);
        return;
    }
    bench_nodelay(fd);
    c->fd = fd;
    c->state = ST_CONNECTING;
    c->since_us = now;
    c->ck_state = CK_SIZE;
    c->chunked = 0;
    c->done = 0;
    c->events = 0;
    c->carry_len = 0;
    st.pending++;
    if (connect(fd, (struct sockaddr *)&opt.addr, sizeof opt.addr) != 0 && errno != EINPROGRESS) {
        conn_fail(i, &st.fail_refused, strerror(errno), errno);
        return;
    }
    bench_epoll(epfd, EPOLL_CTL_ADD, fd, EPOLLOUT | EPOLLIN | EPOLLRDHUP, (uint32_t)i);
}

static void send_request(int i)
{
    conn_t *c = &conns[i];
    char req[1024], path[600];
    bench_exec_path(&opt.com, i % opt.com.execs, path, sizeof path);
    int n;
    if (opt.mode == MODE_WS)
        n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                     path, opt.com.host, opt.com.port);
    else
        n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s:%d\r\nAccept: text/event-stream\r\n\r\n",
                     path, opt.com.host, opt.com.port);
    /* A few hundred bytes always fit an empty socket buffer. */
    if (send(c->fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
        conn_fail(i, &st.fail_refused, "send", errno);
        return;
    }
    c->state = ST_HEAD;
    bench_epoll(epfd, EPOLL_CTL_MOD, c->fd, EPOLLIN | EPOLLRDHUP, (uint32_t)i);
}

/* Counts one event and its latency, if it carries "t_us". */
static void on_event(conn_t *c, const char *p, size_t n, uint64_t now)
{
    const char *t = memmem(p, n, "\"t_us\":", 7);
    if (!t) {
        st.other++;
        return;
    }
    t += 7;
    const char *end = p + n;
    uint64_t v = 0;
    while (t < end && *t >= '0' && *t <= '9')
        v = v * 10 + (uint64_t)(*t++ - '0');
    bench_hist_record(&hist, now > v ? now - v : 0);
    st.events++;
    if (st.first_rx_us == 0)
        st.first_rx_us = now;
    st.last_rx_us = now;
    c->events++;
    if (opt.expect && !c->done && c->events >= opt.expect) {
        c->done = 1;
        st.done++;
    }
}

/* SSE: every complete "data:" line is one event (the servers under test send
 * one data line per frame). Returns the bytes consumed: up to the last newline. */
static size_t parse_sse(conn_t *c, const char *p, size_t n, uint64_t now)
{
    size_t off = 0;
    for (;;) {
        const char *nl = memchr(p + off, '\n', n - off);
        if (!nl)
            return off;
        size_t len = (size_t)(nl - (p + off));
        if (len >= 5 && memcmp(p + off, "data:", 5) == 0)
            on_event(c, p + off + 5, len - 5, now);
        off += len + 1;
    }
}

/* WebSocket: server frames are not masked. Text, binary and continuation
 * frames are scanned for an event; a ping is answered with a pong (masked
 * with a zero key, as a client must mask); close ends the connection.
 * Returns the bytes consumed, or -1 to close. */
static long parse_ws(int i, const char *p, size_t n, uint64_t now)
{
    conn_t *c = &conns[i];
    size_t off = 0;
    while (n - off >= 2) {
        const unsigned char *h = (const unsigned char *)p + off;
        unsigned op = h[0] & 0x0f;
        uint64_t plen = h[1] & 0x7f;
        size_t hl = 2;
        if (plen == 126) {
            if (n - off < 4)
                break;
            plen = (uint64_t)h[2] << 8 | h[3];
            hl = 4;
        } else if (plen == 127) {
            if (n - off < 10)
                break;
            plen = 0;
            for (int k = 0; k < 8; k++)
                plen = plen << 8 | h[2 + k];
            hl = 10;
        }
        if (h[1] & 0x80)
            hl += 4; /* a masked server frame is a protocol error; skip the key */
        if (plen > CARRY_MAX)
            return -1;
        if (n - off < hl + plen)
            break;
        const char *pl = p + off + hl;
        if (op == 0 || op == 1 || op == 2) {
            on_event(c, pl, (size_t)plen, now);
        } else if (op == 8) {
            return -1;
        } else if (op == 9 && plen <= 125) {
            char pong[2 + 4 + 125];
            pong[0] = (char)0x8a;
            pong[1] = (char)(0x80 | plen);
            memset(pong + 2, 0, 4);
            memcpy(pong + 6, pl, (size_t)plen);
            send(c->fd, pong, 6 + (size_t)plen, MSG_NOSIGNAL | MSG_DONTWAIT);
        }
        off += hl + (size_t)plen;
    }
    return (long)off;
}

/* Feeds decoded body bytes to the protocol parser, joining them to what was
 * left over from the last read. Returns -1 to close. */
static int feed(int i, const char *p, size_t n, uint64_t now)
{
    conn_t *c = &conns[i];
    const char *buf = p;
    size_t len = n;
    if (c->carry_len) {
        if (carry_reserve(c, (size_t)c->carry_len + n) != 0)
            return -1;
        memcpy(c->carry + c->carry_len, p, n);
        c->carry_len += (uint32_t)n;
        buf = c->carry;
        len = c->carry_len;
    }
    long used = opt.mode == MODE_WS ? parse_ws(i, buf, len, now) : (long)parse_sse(c, buf, len, now);
    if (used < 0)
        return -1;
    size_t rest = len - (size_t)used;
    if (buf == c->carry) {
        memmove(c->carry, c->carry + used, rest);
        c->carry_len = (uint32_t)rest;
    } else if (rest) {
        if (carry_reserve(c, rest) != 0)
            return -1;
        memcpy(c->carry, buf + used, rest);
        c->carry_len = (uint32_t)rest;
    }
    return 0;
}

/* Removes chunked framing in place, handing each run of payload to feed().
 * Returns -1 to close (also at the last chunk: the stream is over). */
static int dechunk(int i, char *p, size_t n, uint64_t now)
{
    conn_t *c = &conns[i];
    size_t off = 0;
    while (off < n) {
        switch (c->ck_state) {
        case CK_SIZE: {
            char ch = p[off++];
            int d = ch >= '0' && ch <= '9'   ? ch - '0'
                    : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                    : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                             : -1;
            if (d >= 0) {
                c->ck_left = c->ck_left * 16 + (uint64_t)d;
            } else if (ch == '\n') {
                if (c->ck_left == 0)
                    return -1;
                c->ck_state = CK_DATA;
            } else {
                c->ck_state = CK_EXT;
            }
            break;
        }
        case CK_EXT:
            if (p[off++] == '\n') {
                if (c->ck_left == 0)
                    return -1;
                c->ck_state = CK_DATA;
            }
            break;
        case CK_DATA: {
            size_t take = n - off < c->ck_left ? n - off : (size_t)c->ck_left;
            if (feed(i, p + off, take, now) != 0)
                return -1;
            off += take;
            c->ck_left -= take;
            if (c->ck_left == 0)
                c->ck_state = CK_DATA_END;
            break;
        }
        case CK_DATA_END:
            if (p[off++] == '\n') {
                c->ck_state = CK_SIZE;
                c->ck_left = 0;
            }
            break;
        default:
            return -1;
        }
    }
    return 0;
}

static int body(int i, char *p, size_t n, uint64_t now)
{
    if (n == 0)
        return 0;
    return conns[i].chunked ? dechunk(i, p, n, now) : feed(i, p, n, now);
}

/* Collects the response head; on a good status the rest of the read is body. */
static void on_head(int i, const char *p, size_t n, uint64_t now)
{
    conn_t *c = &conns[i];
    if (carry_reserve(c, (size_t)c->carry_len + n + 1) != 0 || c->carry_len + n > HEAD_MAX) {
        conn_fail(i, &st.fail_status, "response head too large", 0);
        return;
    }
    memcpy(c->carry + c->carry_len, p, n);
    c->carry_len += (uint32_t)n;
    c->carry[c->carry_len] = '\0';
    char *end = memmem(c->carry, c->carry_len, "\r\n\r\n", 4);
    if (!end)
        return;
    int status = 0;
    if (sscanf(c->carry, "HTTP/1.%*d %d", &status) != 1)
        status = 0;
    int want = opt.mode == MODE_WS ? 101 : 200;
    if (status != want) {
        conn_fail(i, &st.fail_status, "HTTP status", status);
        return;
    }
    *end = '\0';
    c->chunked = opt.mode == MODE_SSE && strcasestr(c->carry, "\ntransfer-encoding: chunked") != NULL;
    size_t head_len = (size_t)(end - c->carry) + 4;
    static char rest[HEAD_MAX];
    size_t rest_len = c->carry_len - head_len;
    memcpy(rest, c->carry + head_len, rest_len);
    c->carry_len = 0;
    c->state = ST_STREAM;
    c->since_us = now;
    st.pending--;
    st.active++;
    st.established++;
    if (body(i, rest, rest_len, now) != 0) {
        st.disconnects++;
        conn_close(i, false);
    }
}

static void on_readable(int i, uint64_t now)
{
    conn_t *c = &conns[i];
    for (int round = 0; round < 4 && c->state != ST_FREE; round++) {
        ssize_t r = recv(c->fd, rbuf, sizeof rbuf, 0);
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (r <= 0) {
            if (c->state == ST_STREAM) {
                st.disconnects++;
                note_error("disconnect: %s %d", r == 0 ? "eof" : strerror(errno), errno);
                conn_close(i, opt.hold_us != 0);
            } else {
                conn_fail(i, &st.fail_eof, r == 0 ? "eof before response" : strerror(errno), errno);
            }
            return;
        }
        st.bytes += (uint64_t)r;
        now = bench_now_us();
        if (c->state == ST_HEAD) {
            on_head(i, rbuf, (size_t)r, now);
        } else if (body(i, rbuf, (size_t)r, now) != 0) {
            st.disconnects++;
            conn_close(i, opt.hold_us != 0);
            return;
        }
        if ((size_t)r < sizeof rbuf)
            return;
    }
}

static void on_event_fd(int i, uint32_t events, uint64_t now)
{
    conn_t *c = &conns[i];
    if (c->state == ST_CONNECTING) {
        int err = 0;
        socklen_t sl = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &sl);
        if (err) {
            conn_fail(i, &st.fail_refused, strerror(err), err);
            return;
        }
        if (events & (EPOLLOUT | EPOLLIN))
            send_request(i);
        return;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP))
        on_readable(i, now);
}

static void usage(void)
{
    fprintf(stderr, "usage: swarm --url http://127.0.0.1:PORT/path/{exec}/... [options]\n"
                    "  --mode sse|ws          transport (default sse)\n"
                    "  --conns N              connections (default 10)\n"
                    "  --execs C              executions; connection i reads exec i%%C (default 1)\n"
                    "  --prefix P             execution name prefix for {exec} (default bench-)\n"
                    "  --duration S           seconds to run once every connection is up (default 10)\n"
                    "  --connect-rate R       new connections per second, 0 = as fast as allowed\n"
                    "  --max-pending K        connections being set up at once (default 256)\n"
                    "  --connect-timeout S    give up waiting for the swarm to be up (default 60)\n"
                    "  --expect N             events each execution will get; stop when all have them\n"
                    "  --hold-ms MS           churn: close each stream after MS and reconnect\n"
                    "  --idle-exit S          stop when no event has come for S seconds (after the first)\n"
                    "  --ready-file F         create F once every connection is up (or failed)\n"
                    "  --json                 print a JSON summary on stdout\n");
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"url", 1, 0, 'u'},          {"mode", 1, 0, 'm'},        {"conns", 1, 0, 'n'},
        {"connect-rate", 1, 0, 'r'}, {"max-pending", 1, 0, 'k'}, {"expect", 1, 0, 'e'},
        {"hold-ms", 1, 0, 'H'},      {"ready-file", 1, 0, 'R'},  {"connect-timeout", 1, 0, 'T'},
        {"idle-exit", 1, 0, 'I'},    BENCH_COMMON_OPTIONS,       {0, 0, 0, 0}};
    const char *url = NULL;
    bench_opts_init(&opt.com);
    int ch;
    while ((ch = bench_next_option(&opt.com, argc, argv, lo)) != -1) {
        switch (ch) {
        case 'u':
            url = optarg;
            break;
        case 'm':
            opt.mode = strcmp(optarg, "ws") == 0 ? MODE_WS : MODE_SSE;
            break;
        case 'n':
            opt.conns = atoi(optarg);
            break;
        case 'r':
            opt.connect_rate = atof(optarg);
            break;
        case 'k':
            opt.max_pending = atoi(optarg);
            break;
        case 'e':
            opt.expect = strtoull(optarg, NULL, 10);
            break;
        case 'H':
            opt.hold_us = strtoull(optarg, NULL, 10) * 1000u;
            break;
        case 'R':
            opt.ready_file = optarg;
            break;
        case 'T':
            opt.connect_timeout = atof(optarg);
            break;
        case 'I':
            opt.idle_exit = atof(optarg);
            break;
        default:
            usage();
            return 2;
        }
    }
    /* Loopback only: this is a tool for this machine, not a load generator
     * to point at someone else's server. */
    if (!url || bench_parse_url(&opt.com, url, true) != 0 || bench_loopback_addr(&opt.com, &opt.addr) != 0 ||
        opt.conns < 1 || opt.com.execs < 1 || opt.max_pending < 1) {
        usage();
        fprintf(stderr, "swarm: need --url http://127.x.x.x:PORT/path (loopback only)\n");
        return 2;
    }
    long nofile = bench_raise_nofile();
    if (nofile > 0 && opt.conns + 16 > nofile) {
        fprintf(stderr, "swarm: %d connections need more than the open-files limit %ld\n", opt.conns, nofile);
        return 2;
    }
    bench_signals();

    conns = calloc((size_t)opt.conns, sizeof *conns);
    queue = calloc((size_t)opt.conns, sizeof *queue);
    if (!conns || !queue)
        return 1;
    for (int i = 0; i < opt.conns; i++) {
        conns[i].fd = -1;
        q_push(i);
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    bench_run_t run = bench_run_start();
    uint64_t t0 = run.t0_us, ready_us = 0, end_us = 0;
    uint64_t started = 0;
    struct epoll_event evs[512];

    while (!bench_stop) {
        uint64_t now = bench_now_us();
        /* Start as many connections as the rate and the pending cap allow. */
        while (q_len > 0 && st.pending < opt.max_pending) {
            if (opt.connect_rate > 0 && (double)started >= opt.connect_rate * bench_secs(now - t0) + 1)
                break;
            conn_start(q_pop(), now);
            started++;
        }
        if (!ready_us) {
            int initial_left = opt.conns - (int)(st.established + st.connect_failures);
            bool timed_out = bench_secs(now - t0) > opt.connect_timeout;
            if (initial_left <= 0 || timed_out) {
                ready_us = now;
                end_us = now + bench_us(opt.com.duration);
                fprintf(stderr, "swarm: %llu/%d up in %.2f s, %llu failed%s\n",
                        (unsigned long long)st.established, opt.conns, bench_secs(now - t0),
                        (unsigned long long)st.connect_failures, timed_out ? " (connect timeout)" : "");
                if (opt.ready_file) {
                    FILE *f = fopen(opt.ready_file, "w");
                    if (f) {
                        fprintf(f, "%llu\n", (unsigned long long)st.established);
                        fclose(f);
                    }
                }
            }
        }
        if (ready_us && now >= end_us)
            break;
        if (ready_us && opt.expect && st.active > 0 && st.done >= st.active)
            break;
        /* Once traffic has started, a quiet spell means the publisher is done. */
        if (ready_us && opt.idle_exit > 0 && st.last_rx_us && now - st.last_rx_us > bench_us(opt.idle_exit))
            break;
        /* Churn and head timeouts need a look at the clock every few ms; a
         * linear pass is fine at the tens of thousands this tool allows. */
        if (opt.hold_us || st.pending) {
            for (int i = 0; i < opt.conns; i++) {
                conn_t *c = &conns[i];
                if (c->state == ST_STREAM && opt.hold_us && now - c->since_us >= opt.hold_us) {
                    st.cycles++;
                    conn_close(i, true);
                } else if ((c->state == ST_HEAD || c->state == ST_CONNECTING) &&
                           now - c->since_us > HEAD_TIMEOUT_US) {
                    conn_fail(i, &st.fail_timeout, "timeout", 0);
                }
            }
        }
        int timeout = (q_len > 0 || opt.hold_us || st.pending) ? 5 : 50;
        int n = epoll_wait(epfd, evs, 512, timeout);
        now = bench_now_us();
        for (int k = 0; k < n; k++) {
            int i = (int)evs[k].data.u32;
            if (conns[i].state != ST_FREE)
                on_event_fd(i, evs[k].events, now);
        }
    }
    uint64_t t_end = bench_now_us();
    double cpu = bench_run_cpu_s(&run);

    /* Loss: what every connection that got its stream should have had. */
    uint64_t expected = 0, lost = 0;
    if (opt.expect) {
        for (int i = 0; i < opt.conns; i++) {
            if (conns[i].state != ST_STREAM)
                continue;
            expected += opt.expect;
            if (conns[i].events < opt.expect)
                lost += opt.expect - conns[i].events;
        }
    }
    double span = st.last_rx_us > st.first_rx_us ? bench_secs(st.last_rx_us - st.first_rx_us) : 0;
    double rate = span > 0 ? (double)st.events / span : 0;
    double run_s = ready_us ? bench_secs(t_end - ready_us) : 0;
    if (opt.com.json) {
        printf("{\"mode\":\"%s\",\"conns\":%d,\"execs\":%d,\"established\":%llu,\"connect_failures\":%llu,"
               "\"fail_refused\":%llu,\"fail_status\":%llu,\"fail_timeout\":%llu,\"fail_eof\":%llu,"
               "\"disconnects\":%llu,\"cycles\":%llu,\"connect_s\":%.3f,\"run_s\":%.3f,"
               "\"events\":%llu,\"other\":%llu,\"bytes\":%llu,\"span_s\":%.3f,\"events_per_s\":%.1f,"
               "\"expected\":%llu,\"lost\":%llu,"
               "\"lat_us\":{\"p50\":%llu,\"p90\":%llu,\"p99\":%llu,\"max\":%llu},\"cpu_s\":%.3f",
               opt.mode == MODE_WS ? "ws" : "sse", opt.conns, opt.com.execs,
               (unsigned long long)st.established, (unsigned long long)st.connect_failures,
               (unsigned long long)st.fail_refused, (unsigned long long)st.fail_status,
               (unsigned long long)st.fail_timeout, (unsigned long long)st.fail_eof,
               (unsigned long long)st.disconnects, (unsigned long long)st.cycles,
               ready_us ? bench_secs(ready_us - t0) : -1.0, run_s, (unsigned long long)st.events,
               (unsigned long long)st.other, (unsigned long long)st.bytes, span, rate,
               (unsigned long long)expected, (unsigned long long)lost,
               (unsigned long long)bench_hist_pct(&hist, 50), (unsigned long long)bench_hist_pct(&hist, 90),
               (unsigned long long)bench_hist_pct(&hist, 99), (unsigned long long)hist.max, cpu);
        bench_json_first_error(st.first_error);
        printf("}\n");
    } else {
        printf("swarm %s: %llu/%d up (%llu failed, %llu disconnects, %llu cycles)\n",
               opt.mode == MODE_WS ? "ws" : "sse", (unsigned long long)st.established, opt.conns,
               (unsigned long long)st.connect_failures, (unsigned long long)st.disconnects,
               (unsigned long long)st.cycles);
        printf("events %llu (other %llu) over %.3f s = %.0f/s; lost %llu of %llu\n",
               (unsigned long long)st.events, (unsigned long long)st.other, span, rate,
               (unsigned long long)lost, (unsigned long long)expected);
        printf("latency us p50 %llu p90 %llu p99 %llu max %llu; swarm cpu %.3f s\n",
               (unsigned long long)bench_hist_pct(&hist, 50), (unsigned long long)bench_hist_pct(&hist, 90),
               (unsigned long long)bench_hist_pct(&hist, 99), (unsigned long long)hist.max, cpu);
        if (st.first_error[0])
            printf("first error: %s\n", st.first_error);
    }
    return 0;
}
