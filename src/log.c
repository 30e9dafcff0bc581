/*
 * log.c - see log.h.
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static cs_log_level_t log_level = CS_LOG_INFO;
static int log_journal = -1; /* -1 unknown, 0 plain, 1 journald prefixes */

static const char *const level_names[] = {"error", "warn", "info", "debug"};
/* syslog priorities: err, warning, info, debug. */
static const int level_prio[] = {3, 4, 6, 7};

/*
 * systemd sets JOURNAL_STREAM to "DEVICE:INODE" of the stream it connected stdout and stderr to. A
 * process whose stderr goes elsewhere (redirected to a file, or started from a shell inside a
 * service) inherits the variable all the same, so the prefixes are used only when stderr is still
 * that stream, as systemd.exec(5) advises.
 */
static int log_stderr_is_journal(void)
{
    const char *e = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;

    if (e == NULL || sscanf(e, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st) != 0)
        return 0;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void cs_log_set_level(cs_log_level_t level)
{
    log_level = level;
}

cs_log_level_t cs_log_get_level(void)
{
    return log_level;
}

int cs_log_parse_level(const char *s, cs_log_level_t *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (cs_log_level_t)i;
            return 0;
        }
    }
    if (strcmp(s, "warning") == 0) {
        *out = CS_LOG_WARN;
        return 0;
    }
    return -EINVAL;
}

const char *cs_log_level_name(cs_log_level_t level)
{
    return (unsigned)level < 4 ? level_names[level] : "?";
}

/*
 * Rate limiting: each format string (in practice each call site: the formats are literals) may write
 * LOG_BURST lines per LOG_WINDOW_MS; past that its lines are counted, not written, and the count is
 * written once the window has passed (at the next line of that format, or at cs_log_flush from the
 * daemon's tick), with the last suppressed line. A flood (a spinning accept, a peer that triggers a
 * warning per byte) cannot fill a disk or the journal, and nothing is lost silently.
 */
#define LOG_BURST     10
#define LOG_WINDOW_MS 1000
#define LOG_SLOTS     128 /* formats tracked; a format that finds no slot is not limited */
#define LOG_PROBES    8

typedef struct log_site {
    const char *fmt;
    int64_t window; /* start of the current window (ms) */
    unsigned n;     /* lines written in it */
    uint64_t suppressed;
    cs_log_level_t level;
    char last[256]; /* the last suppressed message, for the summary */
} log_site_t;

static log_site_t log_sites[LOG_SLOTS];
static uint64_t log_suppressed_total;
static int64_t log_fake_now = -1; /* tests set the clock */
static FILE *log_stream;          /* tests redirect the output; NULL = stderr */

static int64_t log_now_ms(void)
{
    struct timespec ts;

    if (log_fake_now >= 0)
        return log_fake_now;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Writes one line: the prefix, msg (newlines flattened), a newline. */
static void log_write(cs_log_level_t level, const char *msg)
{
    char line[2048];
    size_t n = 0, m;

    if (log_journal < 0)
        log_journal = log_stderr_is_journal();
    if (log_journal) {
        n = (size_t)snprintf(line, sizeof(line), "<%d>", level_prio[level]);
    } else {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
        n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ldZ %s ", ts.tv_nsec / 1000000,
                              level_names[level]);
    }
    m = strlen(msg);
    if (m > sizeof(line) - 2 - n)
        m = sizeof(line) - 2 - n;
    memcpy(line + n, msg, m);
    n += m;
    /* One event, one line: a newline inside the message would split it. */
    for (size_t i = 0; i < n; i++)
        if (line[i] == '\n' || line[i] == '\r')
            line[i] = ' ';
    line[n++] = '\n';
    fwrite(line, 1, n, log_stream != NULL ? log_stream : stderr);
}

/* Writes the count of a site's suppressed lines and starts a new window. */
static void log_site_summary(log_site_t *s, int64_t now)
{
    if (s->suppressed > 0) {
        char msg[400];
        snprintf(msg, sizeof(msg), "log: suppressed %llu similar lines, the last: %s",
                 (unsigned long long)s->suppressed, s->last);
        log_write(s->level, msg);
    }
    s->window = now;
    s->n = 0;
    s->suppressed = 0;
}

static log_site_t *log_site_for(const char *fmt)
{
    size_t h = ((uintptr_t)fmt >> 3) * 0x9E3779B97F4A7C15ull % LOG_SLOTS;

    for (int i = 0; i < LOG_PROBES; i++, h = (h + 1) % LOG_SLOTS) {
        log_site_t *s = &log_sites[h];
        if (s->fmt == fmt)
            return s;
        if (s->fmt == NULL) {
            s->fmt = fmt;
            s->window = log_now_ms();
            return s;
        }
    }
    return NULL;
}

void cs_log(cs_log_level_t level, const char *fmt, ...)
{
    char msg[2048];
    log_site_t *s;
    va_list ap;

    if (level > log_level)
        return;
    s = log_site_for(fmt);
    if (s != NULL) {
        int64_t now = log_now_ms();
        if (now - s->window >= LOG_WINDOW_MS)
            log_site_summary(s, now);
        if (s->n >= LOG_BURST) {
            s->suppressed++;
            s->level = level;
            log_suppressed_total++;
            va_start(ap, fmt);
            vsnprintf(s->last, sizeof(s->last), fmt, ap);
            va_end(ap);
            return;
        }
        s->n++;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_write(level, msg);
}

void cs_log_flush(void)
{
    int64_t now = log_now_ms();

    for (size_t i = 0; i < LOG_SLOTS; i++)
        if (log_sites[i].suppressed > 0 && now - log_sites[i].window >= LOG_WINDOW_MS)
            log_site_summary(&log_sites[i], now);
}

uint64_t cs_log_suppressed_total(void)
{
    return log_suppressed_total;
}
