/* Helpers shared by the bench tools: clocks, CPU time, the fd limit, and an
 * HDR-style log-bucket histogram. Header-only so each tool stays one file to
 * build; nothing here is part of crewstreamd. */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
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

#endif
