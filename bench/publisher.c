/* publisher: posts bench events for load tests. One process, one thread, one
 * epoll loop, one connection. It keeps at most --window lines (or requests)
 * unacknowledged, follows a rate schedule, spreads events round-robin over C
 * executions, and stamps each with "t_us", the CLOCK_MONOTONIC µs at the moment
 * it is written, so the swarm can measure publish→receive latency.
 *
 * Two targets:
 *   --socket PATH   crewstreamd's Unix socket: NDJSON lines, one reply line each
 *                   ({"ok":true,...} or {"ok":false,...}); pushes (no "ok") are
 *                   skipped.
 *   --http URL      nchan's publisher location, e.g.
 *                   http://127.0.0.1:PORT/pub/{exec}: one keep-alive connection,
 *                   POSTs pipelined within the window; nchan answers each one only
 *                   after fanning it out, so its window is paced by fan-out.
 *                   Loopback only. */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_STAGES 16
#define WBUF_SIZE  (4u << 20)
#define RBUF_SIZE  (1u << 20)

static struct {
    bench_opts_t com; /* --execs, --prefix, --duration, --json; host, port and path of --http */
    const char *socket_path;
    const char *http_url;
    char type[64];
    uint64_t count;
    int window;
    int pad;
    int tick_us; /* wake-ups for a rate at most this often; 0 = one per event */
    int nstages;
    double stage_rate[MAX_STAGES]; /* events/s; 0 = as fast as the window allows */
    double stage_secs[MAX_STAGES]; /* 0 on the last stage = until the end */
} opt = {.com.execs = 1, .window = 64, .tick_us = 250, .nstages = 1};

static struct {
    uint64_t sent, acked, errors, pushes, bytes_out;
    char first_error[200];
} st;

/* Acknowledgement latency: the time each unacknowledged event was queued (replies come in order, so
 * event n is in slot n % window), and a sample of latencies, every one up to LAT_MAX then one in
 * lat_stride, for the percentiles of the summary. */
#define LAT_MAX (1u << 21)
static uint64_t *sent_us;
static uint32_t *lat;
static size_t lat_n;
static uint64_t lat_stride = 1, lat_max_us;

static void note_ack(void)
{
    uint64_t d = bench_now_us() - sent_us[st.acked % (uint64_t)opt.window];
    if (d > lat_max_us)
        lat_max_us = d;
    if (st.acked % lat_stride == 0) {
        if (lat_n == LAT_MAX) { /* keep every other sample, take half as many from now on */
            for (size_t i = 0; i < LAT_MAX / 2; i++)
                lat[i] = lat[2 * i];
            lat_n = LAT_MAX / 2;
            lat_stride *= 2;
        }
        lat[lat_n++] = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
    }
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static uint32_t lat_pct(double p)
{
    return lat_n ? lat[(size_t)(p * (double)(lat_n - 1))] : 0;
}

static char *wbuf, *rbuf;
static size_t w_len, w_off, r_len;
static char *padding;

/* Events the schedule allows by t seconds after the start; UINT64_MAX while a
 * full-speed stage is running. */
static uint64_t allowed_by(double t)
{
    double total = 0, t_left = t;
    for (int s = 0; s < opt.nstages; s++) {
        bool last = s == opt.nstages - 1 || opt.stage_secs[s] <= 0;
        double span = last ? t_left : (t_left < opt.stage_secs[s] ? t_left : opt.stage_secs[s]);
        if (opt.stage_rate[s] <= 0)
            return UINT64_MAX;
        total += opt.stage_rate[s] * span;
        t_left -= span;
        if (last || t_left <= 0)
            break;
    }
    return (uint64_t)total + 1;
}

/* When event n (from 0) is due, in seconds after the start: the schedule is
 * followed event by event, not in bursts at the loop's wake-ups. Negative while
 * a full-speed stage runs (due at once). */
static double due_at(uint64_t n)
{
    double base = 0, t_s = 0;
    for (int s = 0; s < opt.nstages; s++) {
        bool last = s == opt.nstages - 1 || opt.stage_secs[s] <= 0;
        if (opt.stage_rate[s] <= 0)
            return -1;
        if (last || (double)n < base + opt.stage_rate[s] * opt.stage_secs[s])
            return t_s + ((double)n - base) / opt.stage_rate[s];
        base += opt.stage_rate[s] * opt.stage_secs[s];
        t_s += opt.stage_secs[s];
    }
    return -1;
}

/* "R" or "R:S,R:S,...": rates in events/s, each for S seconds; the last stage
 * lasts until --count or --duration ends the run. */
static int parse_schedule(const char *s)
{
    opt.nstages = 0;
    while (*s && opt.nstages < MAX_STAGES) {
        char *end;
        opt.stage_rate[opt.nstages] = strtod(s, &end);
        opt.stage_secs[opt.nstages] = 0;
        if (end == s)
            return -1;
        if (*end == ':')
            opt.stage_secs[opt.nstages] = strtod(end + 1, &end);
        opt.nstages++;
        if (*end == ',')
            end++;
        else if (*end)
            return -1;
        s = end;
    }
    return opt.nstages > 0 ? 0 : -1;
}

/* Appends one event (a line, or a POST) to the write buffer. */
static void append_event(uint64_t n)
{
    int exec = (int)(n % (uint64_t)opt.com.execs);
    char body[256];
    int bl =
        snprintf(body, sizeof body, "{\"t_us\":%llu,\"execution_id\":\"%s%d\",\"type\":\"%s\",\"n\":%llu",
                 (unsigned long long)bench_now_us(), opt.com.prefix, exec, opt.type, (unsigned long long)n);
    size_t need = (size_t)bl + (size_t)opt.pad + 512;
    if (w_off > 0 && w_len + need > WBUF_SIZE) {
        memmove(wbuf, wbuf + w_off, w_len - w_off);
        w_len -= w_off;
        w_off = 0;
    }
    char *p = wbuf + w_len;
    if (opt.http_url) {
        char path[600];
        bench_exec_path(&opt.com, exec, path, sizeof path);
        size_t clen = (size_t)bl + (opt.pad ? (size_t)opt.pad + 9 : 0) + 1;
        p += sprintf(p,
                     "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     path, opt.com.host, opt.com.port, clen);
    }
    memcpy(p, body, (size_t)bl);
    p += bl;
    if (opt.pad) {
        memcpy(p, ",\"pad\":\"", 8);
        p += 8;
        memcpy(p, padding, (size_t)opt.pad);
        p += opt.pad;
        *p++ = '"';
    }
    *p++ = '}';
    if (!opt.http_url)
        *p++ = '\n';
    w_len = (size_t)(p - wbuf);
    sent_us[st.sent % (uint64_t)opt.window] = bench_now_us();
    st.sent++;
}

static void note_error(const char *p, size_t n)
{
    st.errors++;
    if (!st.first_error[0])
        snprintf(st.first_error, sizeof st.first_error, "%.*s", (int)(n < 190 ? n : 190), p);
}

/* Consumes complete replies from rbuf. Returns -1 on a reply it cannot read. */
static int parse_replies(void)
{
    size_t off = 0;
    for (;;) {
        const char *p = rbuf + off;
        size_t n = r_len - off;
        if (!opt.http_url) {
            const char *nl = memchr(p, '\n', n);
            if (!nl)
                break;
            size_t len = (size_t)(nl - p);
            if (memmem(p, len, "\"ok\":true", 9))
                note_ack(), st.acked++;
            else if (memmem(p, len, "\"ok\":", 5))
                note_ack(), st.acked++, note_error(p, len);
            else
                st.pushes++;
            off += len + 1;
            continue;
        }
        /* HTTP: a status line and headers, then a Content-Length body. */
        const char *end = memmem(p, n, "\r\n\r\n", 4);
        if (!end)
            break;
        size_t hl = (size_t)(end - p) + 4;
        int status = 0;
        if (n < 12 || sscanf(p, "HTTP/1.%*d %d", &status) != 1)
            return -1;
        size_t clen = 0;
        for (const char *h = p; h && h < end; h = memchr(h, '\n', (size_t)(end - h))) {
            h++;
            if (strncasecmp(h, "content-length:", 15) == 0)
                clen = strtoul(h + 15, NULL, 10);
            else if (strncasecmp(h, "transfer-encoding:", 18) == 0)
                return -1; /* nchan's publisher answers with a length */
        }
        if (n < hl + clen)
            break;
        note_ack();
        st.acked++;
        if (status < 200 || status > 299)
            note_error(p, hl + clen);
        off += hl + clen;
    }
    memmove(rbuf, rbuf + off, r_len - off);
    r_len -= off;
    if (r_len == RBUF_SIZE)
        return -1;
    return 0;
}

static int connect_target(void)
{
    int fd;
    if (opt.socket_path) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(opt.socket_path) >= sizeof sa.sun_path)
            return -1;
        strcpy(sa.sun_path, opt.socket_path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
            return -1;
    } else {
        struct sockaddr_in sa;
        if (bench_loopback_addr(&opt.com, &sa) != 0)
            return -1;
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
            return -1;
        bench_nodelay(fd);
    }
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0)
        return -1;
    return fd;
}

static void usage(void)
{
    fprintf(stderr, "usage: publisher (--socket PATH | --http http://127.0.0.1:PORT/pub/{exec}) [options]\n"
                    "  --execs C          executions, round-robin (default 1)\n"
                    "  --prefix P         execution name prefix (default bench-)\n"
                    "  --type T           event type (default bench)\n"
                    "  --count N          events in all (0 = until --duration)\n"
                    "  --duration S       stop sending after S seconds\n"
                    "  --rate R[:S],...   events/s schedule; 0 = full speed (default 0)\n"
                    "  --window W         unacknowledged lines or requests at most (default 64)\n"
                    "  --tick-us U        follow a rate in wake-ups at most U us apart (default 250;\n"
                    "                     0 = one per event)\n"
                    "  --pad BYTES        add a \"pad\" string of this many bytes to each event\n"
                    "  --json             print a JSON summary on stdout\n");
}

/* Reads and counts the replies that have come; returns -1 when the connection is gone. */
static int read_replies(int fd, uint64_t *t_last_ack)
{
    for (;;) {
        ssize_t r = recv(fd, rbuf + r_len, RBUF_SIZE - r_len, MSG_DONTWAIT);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            return 0;
        if (r <= 0)
            return -1;
        r_len += (size_t)r;
        uint64_t before = st.acked;
        if (parse_replies() != 0) {
            fprintf(stderr, "publisher: unreadable reply\n");
            return -1;
        }
        if (st.acked != before)
            *t_last_ack = bench_now_us();
    }
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {{"socket", 1, 0, 's'}, {"http", 1, 0, 'H'},    {"type", 1, 0, 't'},
                                       {"count", 1, 0, 'n'},  {"rate", 1, 0, 'r'},    {"window", 1, 0, 'w'},
                                       {"pad", 1, 0, 'p'},    {"tick-us", 1, 0, 'k'}, BENCH_COMMON_OPTIONS,
                                       {0, 0, 0, 0}};
    bench_opts_init(&opt.com);
    snprintf(opt.type, sizeof opt.type, "bench");
    int ch;
    while ((ch = bench_next_option(&opt.com, argc, argv, lo)) != -1) {
        switch (ch) {
        case 's':
            opt.socket_path = optarg;
            break;
        case 'H':
            opt.http_url = optarg;
            break;
        case 't':
            snprintf(opt.type, sizeof opt.type, "%s", optarg);
            break;
        case 'n':
            opt.count = strtoull(optarg, NULL, 10);
            break;
        case 'r':
            if (parse_schedule(optarg) != 0) {
                fprintf(stderr, "publisher: bad --rate %s\n", optarg);
                return 2;
            }
            break;
        case 'w':
            opt.window = atoi(optarg);
            break;
        case 'p':
            opt.pad = atoi(optarg);
            break;
        case 'k':
            opt.tick_us = atoi(optarg);
            break;
        default:
            usage();
            return 2;
        }
    }
    if ((!opt.socket_path == !opt.http_url) || opt.com.execs < 1 || opt.window < 1 || opt.pad < 0 ||
        opt.tick_us < 0 || opt.pad > 1000000 || (opt.count == 0 && opt.com.duration <= 0) ||
        (opt.http_url && bench_parse_url(&opt.com, opt.http_url, false) != 0)) {
        usage();
        return 2;
    }
    bench_signals();
    wbuf = malloc(WBUF_SIZE + (size_t)opt.pad);
    rbuf = malloc(RBUF_SIZE);
    padding = malloc((size_t)opt.pad + 1);
    sent_us = calloc((size_t)opt.window, sizeof(*sent_us));
    lat = malloc(LAT_MAX * sizeof(*lat));
    if (!wbuf || !rbuf || !padding || !sent_us || !lat)
        return 1;
    memset(padding, 'x', (size_t)opt.pad);
    int fd = connect_target();
    if (fd < 0) {
        fprintf(stderr, "publisher: cannot connect to %s: %s\n",
                opt.socket_path ? opt.socket_path : opt.http_url, strerror(errno));
        return 1;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    /* What we wait for on the connection: EPOLLOUT only while a write is blocked (registered for
     * good, every read the server makes of our lines would wake us), and at a steady rate EPOLLIN
     * only while the window is full or sending is over: the replies are read at each tick anyway,
     * and a wake-up per reply would cost the core the swarm shares as much as the ticks do. */
    uint32_t interest = EPOLLIN;
    bench_epoll(ep, EPOLL_CTL_ADD, fd, interest, (uint32_t)fd);
    /* A timer for the next scheduled event: epoll_wait counts in milliseconds, which at 10,000
     * events/s would send them ten at a time. */
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (tfd < 0) {
        fprintf(stderr, "publisher: timerfd: %s\n", strerror(errno));
        return 1;
    }
    bench_epoll(ep, EPOLL_CTL_ADD, tfd, EPOLLIN, (uint32_t)tfd);

    bench_run_t run = bench_run_start();
    uint64_t t0 = run.t0_us, stop_send_us = opt.com.duration > 0 ? t0 + bench_us(opt.com.duration) : 0;
    uint64_t t_last_ack = t0, t_sending_done = 0;
    bool writable = true, closed = false;
    while (!bench_stop) {
        uint64_t now = bench_now_us();
        bool sending = (opt.count == 0 || st.sent < opt.count) && (stop_send_us == 0 || now < stop_send_us);
        if (!sending && !t_sending_done)
            t_sending_done = now;
        if (!sending && st.acked >= st.sent)
            break;
        if (!sending && now - t_sending_done > 10000000u) {
            fprintf(stderr, "publisher: %llu replies missing after 10 s\n",
                    (unsigned long long)(st.sent - st.acked));
            break;
        }
        /* Fill the window as far as the schedule allows, then write. */
        if (sending) {
            uint64_t allow = allowed_by(bench_secs(now - t0));
            while (st.sent - st.acked < (uint64_t)opt.window && st.sent < allow &&
                   (opt.count == 0 || st.sent < opt.count) && w_len + 4096 + (size_t)opt.pad < WBUF_SIZE)
                append_event(st.sent);
        }
        while (writable && w_off < w_len) {
            ssize_t w = send(fd, wbuf + w_off, w_len - w_off, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EAGAIN)
                    writable = false;
                else if (errno != EINTR)
                    closed = true;
                if (closed)
                    break;
                continue;
            }
            w_off += (size_t)w;
            st.bytes_out += (size_t)w;
        }
        if (w_off == w_len)
            w_off = w_len = 0;
        if (closed)
            break;
        /* Sleep until a reply, writability, or the next scheduled event. */
        int timeout = 100;
        if (sending && st.sent - st.acked < (uint64_t)opt.window) {
            double due = due_at(st.sent);
            if (due < 0) {
                timeout = 1;
            } else {
                /* Due events go out together at the next tick: a wake-up costs the core the swarm
                 * shares ~40 us on this VM, so one per event at 50,000/s would be the bottleneck. */
                uint64_t rel = (uint64_t)(due * 1e6), tick = (uint64_t)opt.tick_us;
                uint64_t at = t0 + (tick > 1 ? (rel + tick - 1) / tick * tick : rel);
                struct itimerspec its = {
                    .it_value = {.tv_sec = (time_t)(at / 1000000u), .tv_nsec = (long)(at % 1000000u) * 1000}};
                if (at <= bench_now_us())
                    timeout = 0;
                else
                    timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
            }
        }
        bool steady = due_at(st.sent) >= 0;
        uint32_t want = (writable ? 0 : EPOLLOUT) |
                        (!steady || !sending || st.sent - st.acked >= (uint64_t)opt.window ? EPOLLIN : 0);
        if (want != interest) {
            interest = want;
            bench_epoll(ep, EPOLL_CTL_MOD, fd, interest, (uint32_t)fd);
        }
        struct epoll_event evs[4];
        int n = epoll_wait(ep, evs, 4, timeout);
        for (int k = 0; k < n; k++) {
            if (evs[k].data.u32 == (uint32_t)tfd) {
                uint64_t expirations;
                (void)!read(tfd, &expirations, sizeof expirations);
                continue;
            }
            if (evs[k].events & EPOLLOUT)
                writable = true;
        }
        /* Replies are read at every wake-up, whether or not they are what woke us. */
        if (read_replies(fd, &t_last_ack) != 0)
            closed = true;
        if (closed) {
            fprintf(stderr, "publisher: the server closed the connection\n");
            break;
        }
    }
    double elapsed = bench_secs(t_last_ack - t0);
    double cpu = bench_run_cpu_s(&run);
    double rate = elapsed > 0 ? (double)st.acked / elapsed : 0;
    qsort(lat, lat_n, sizeof(*lat), cmp_u32);
    if (opt.com.json) {
        printf("{\"target\":\"%s\",\"execs\":%d,\"window\":%d,\"sent\":%llu,\"acked\":%llu,\"errors\":%llu,"
               "\"pushes\":%llu,\"bytes_out\":%llu,\"elapsed_s\":%.3f,\"acked_per_s\":%.1f,\"cpu_s\":%.3f,"
               "\"closed\":%s",
               opt.http_url ? "http" : "unix", opt.com.execs, opt.window, (unsigned long long)st.sent,
               (unsigned long long)st.acked, (unsigned long long)st.errors, (unsigned long long)st.pushes,
               (unsigned long long)st.bytes_out, elapsed, rate, cpu, closed ? "true" : "false");
        printf(",\"ack_p50_us\":%u,\"ack_p99_us\":%u,\"ack_max_us\":%llu", lat_pct(0.50), lat_pct(0.99),
               (unsigned long long)lat_max_us);
        bench_json_first_error(st.first_error);
        printf("}\n");
    } else {
        printf("publisher %s: sent %llu acked %llu errors %llu in %.3f s = %.0f/s; cpu %.3f s%s\n",
               opt.http_url ? "http" : "unix", (unsigned long long)st.sent, (unsigned long long)st.acked,
               (unsigned long long)st.errors, elapsed, rate, cpu, closed ? " (closed early)" : "");
        if (st.first_error[0])
            printf("first error: %s\n", st.first_error);
    }
    return closed || st.errors ? 1 : 0;
}
