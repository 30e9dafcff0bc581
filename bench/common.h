/* Helpers shared by the bench tools: clocks, CPU time, the fd limit, an
 * HDR-style log-bucket histogram, the options both tools take, the loopback
 * URL and the {exec} path template, signals, epoll registration, and the JSON
 * summary's error field. Header-only so each tool stays one file to build;
 * nothing here is part of crewstreamd. Include it after _GNU_SOURCE. */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <arpa/inet.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

/* CLOCK_MONOTONIC in microseconds: the clock both the publisher (which stamps
 * "t_us" into each event) and the swarm (which receives it) read, so latency is
 * a plain subtraction on one machine. */
static inline uint64_t bench_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Microseconds as seconds, and back. */
static inline double bench_secs(uint64_t us)
{
    return (double)us / 1e6;
}

static inline uint64_t bench_us(double secs)
{
    return (uint64_t)(secs * 1e6);
}

/* User plus system CPU seconds this process has used. */
static inline double bench_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* Raise the soft open-files limit to the hard one and return it. */
static inline long bench_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    return (long)rl.rlim_cur;
}

/* A log-bucket histogram of microsecond values, in the manner of HdrHistogram:
 * values below 64 are exact, above that each power of two is split into 32
 * buckets, so a reported percentile is within ~3% of the true value. 2048
 * buckets cover up to 2^63 µs; recording is a count-leading-zeros and an add. */
#define BENCH_HIST_SUB     32
#define BENCH_HIST_BUCKETS 2048

typedef struct {
    uint64_t counts[BENCH_HIST_BUCKETS];
    uint64_t total;
    uint64_t max;
    uint64_t sum;
} bench_hist_t;

static inline unsigned bench_hist_index(uint64_t v)
{
    if (v < 2 * BENCH_HIST_SUB)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - 5u; /* leaves v >> shift in [32, 64) */
    unsigned idx = shift * BENCH_HIST_SUB + (unsigned)(v >> shift);
    return idx < BENCH_HIST_BUCKETS ? idx : BENCH_HIST_BUCKETS - 1;
}

/* The middle of the values that land in bucket idx. */
static inline uint64_t bench_hist_value(unsigned idx)
{
    if (idx < 2 * BENCH_HIST_SUB)
        return idx;
    unsigned shift = idx / BENCH_HIST_SUB - 1u;
    uint64_t m = idx % BENCH_HIST_SUB + BENCH_HIST_SUB;
    return (m << shift) + ((1ull << shift) >> 1);
}

static inline void bench_hist_record(bench_hist_t *h, uint64_t v)
{
    h->counts[bench_hist_index(v)]++;
    h->total++;
    h->sum += v;
    if (v > h->max)
        h->max = v;
}

/* The value at percentile p (0–100); the exact maximum for p >= 100. */
static inline uint64_t bench_hist_pct(const bench_hist_t *h, double p)
{
    if (h->total == 0)
        return 0;
    if (p >= 100.0)
        return h->max;
    uint64_t want = (uint64_t)((double)h->total * p / 100.0 + 0.5);
    if (want == 0)
        want = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < BENCH_HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= want) {
            uint64_t v = bench_hist_value(i);
            return v > h->max ? h->max : v;
        }
    }
    return h->max;
}

/* The options both tools take (the same letters for getopt_long), and the
 * target that --url / --http names. */
typedef struct {
    char prefix[64]; /* execution name prefix for {exec} */
    int execs;
    double duration;
    bool json;
    char host[64];
    int port;
    char path[512]; /* may hold {exec} */
} bench_opts_t;

/* clang-format off */
#define BENCH_COMMON_OPTIONS \
    {"execs", 1, 0, 'c'}, {"prefix", 1, 0, 'P'}, {"duration", 1, 0, 'd'}, {"json", 0, 0, 'j'}, {"help", 0, 0, 'h'}
/* clang-format on */

static inline void bench_opts_init(bench_opts_t *o)
{
    snprintf(o->prefix, sizeof o->prefix, "bench-");
}

/* Takes one of BENCH_COMMON_OPTIONS; returns false for any other option. */
static inline bool bench_common_option(bench_opts_t *o, int ch, const char *arg)
{
    switch (ch) {
    case 'c':
        o->execs = atoi(arg);
        return true;
    case 'P':
        snprintf(o->prefix, sizeof o->prefix, "%s", arg);
        return true;
    case 'd':
        o->duration = atof(arg);
        return true;
    case 'j':
        o->json = true;
        return true;
    default:
        return false;
    }
}

/* The next option from getopt_long that is not one of BENCH_COMMON_OPTIONS
 * (those it takes into o), or -1 at the end. */
static inline int bench_next_option(bench_opts_t *o, int argc, char **argv, const struct option *lo)
{
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1)
        if (!bench_common_option(o, ch, optarg))
            return ch;
    return -1;
}

/* Splits http://HOST[:PORT]/PATH (also ws:// if allow_ws) into o->host, o->port
 * (80 if absent) and o->path; "localhost" becomes 127.0.0.1. Names are never
 * resolved. */
static inline int bench_parse_url(bench_opts_t *o, const char *url, bool allow_ws)
{
    const char *p = url;
    if (strncmp(p, "http://", 7) == 0)
        p += 7;
    else if (allow_ws && strncmp(p, "ws://", 5) == 0)
        p += 5;
    const char *colon = strchr(p, ':'), *slash = strchr(p, '/');
    if (!slash)
        return -1;
    size_t hl = (size_t)((colon && colon < slash ? colon : slash) - p);
    if (hl >= sizeof o->host)
        return -1;
    memcpy(o->host, p, hl);
    o->host[hl] = '\0';
    if (strcmp(o->host, "localhost") == 0)
        strcpy(o->host, "127.0.0.1");
    o->port = colon && colon < slash ? atoi(colon + 1) : 80;
    snprintf(o->path, sizeof o->path, "%s", slash);
    return 0;
}

/* o->host:o->port as an address, if it is a loopback one: these are tools for
 * this machine, not load generators to point at someone else's server. */
static inline int bench_loopback_addr(const bench_opts_t *o, struct sockaddr_in *sa)
{
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)o->port);
    if (inet_pton(AF_INET, o->host, &sa->sin_addr) != 1 || (ntohl(sa->sin_addr.s_addr) >> 24) != 127)
        return -1;
    return 0;
}

/* The path with {exec} replaced by the name of execution exec. */
static inline void bench_exec_path(const bench_opts_t *o, int exec, char *out, size_t n)
{
    const char *at = strstr(o->path, "{exec}");
    if (at)
        snprintf(out, n, "%.*s%s%d%s", (int)(at - o->path), o->path, o->prefix, exec, at + 6);
    else
        snprintf(out, n, "%s", o->path);
}

static inline void bench_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* SIGINT and SIGTERM end the run early (the summary is still printed);
 * SIGPIPE is ignored. */
static volatile sig_atomic_t bench_stop;

static inline void bench_on_signal(int sig)
{
    (void)sig;
    bench_stop = 1;
}

static inline void bench_signals(void)
{
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, bench_on_signal);
    signal(SIGTERM, bench_on_signal);
}

/* EPOLL_CTL_ADD or _MOD of fd for events, with data as its tag. */
static inline int bench_epoll(int ep, int op, int fd, uint32_t events, uint32_t data)
{
    struct epoll_event ev = {.events = events, .data.u32 = data};
    return epoll_ctl(ep, op, fd, &ev);
}

/* Wall-clock and CPU time since the start of a run. */
typedef struct {
    uint64_t t0_us;
    double cpu0_s;
} bench_run_t;

static inline bench_run_t bench_run_start(void)
{
    bench_run_t r;
    r.cpu0_s = bench_cpu_s();
    r.t0_us = bench_now_us();
    return r;
}

static inline double bench_run_cpu_s(const bench_run_t *r)
{
    return bench_cpu_s() - r->cpu0_s;
}

/* The JSON summary's ,"first_error":"..." (nothing if there was none), with
 * quotes, backslashes and control characters left out. */
static inline void bench_json_first_error(const char *e)
{
    if (!e[0])
        return;
    printf(",\"first_error\":\"");
    for (; *e; e++)
        if (*e != '"' && *e != '\\' && (unsigned char)*e >= 0x20)
            putchar(*e);
    putchar('"');
}

#endif
