/*
 * log.c - see log.h.
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
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

void cs_log(cs_log_level_t level, const char *fmt, ...)
{
    char line[2048];
    size_t n = 0;
    va_list ap;

    if (level > log_level)
        return;
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
    va_start(ap, fmt);
    int w = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    va_end(ap);
    if (w < 0)
        w = 0;
    n += (size_t)w;
    if (n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    /* One event, one line: a newline inside the message would split it. */
    for (size_t i = 0; i < n; i++)
        if (line[i] == '\n' || line[i] == '\r')
            line[i] = ' ';
    line[n++] = '\n';
    fwrite(line, 1, n, stderr);
}
