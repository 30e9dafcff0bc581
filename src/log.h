/*
 * log.h - one line per notable thing, on stderr.
 *
 * Under systemd (stderr is the stream JOURNAL_STREAM names) each line starts
 * with the syslog priority prefix "<N>" that journald understands and carries no
 * timestamp of its own; elsewhere it starts with an ISO-8601 time and the level
 * name. Callers must
 * never pass secrets (tokens, keys) to these functions.
 *
 * Every format string may write 10 lines a second; past that its lines are counted
 * and summed up in one line ("log: suppressed K similar lines, the last: ...")
 * once the second has passed.
 */
#ifndef CS_LOG_H
#define CS_LOG_H

#include <stdint.h>

typedef enum cs_log_level {
    CS_LOG_ERROR = 0,
    CS_LOG_WARN = 1,
    CS_LOG_INFO = 2,
    CS_LOG_DEBUG = 3,
} cs_log_level_t;

/** Sets the most verbose level that is still written. */
void cs_log_set_level(cs_log_level_t level);

/** Returns the level in force. */
cs_log_level_t cs_log_get_level(void);

/** Parses "error", "warn", "info" or "debug"; returns 0, or -EINVAL for anything else. */
int cs_log_parse_level(const char *s, cs_log_level_t *out);

/** Returns the name of a level ("error", "warn", ...). */
const char *cs_log_level_name(cs_log_level_t level);

/** Writes one line at the given level when that level is enabled; a trailing newline is added. Lines
 * of one format past 10 a second are suppressed and counted (see above). */
void cs_log(cs_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/** Writes the summary line of every format whose suppressing second has passed (call it now and then,
 * and before exit, so that a count is written even when no later line of that format comes). */
void cs_log_flush(void);

/** Returns how many lines were suppressed since start. */
uint64_t cs_log_suppressed_total(void);

#define cs_log_error(...) cs_log(CS_LOG_ERROR, __VA_ARGS__)
#define cs_log_warn(...)  cs_log(CS_LOG_WARN, __VA_ARGS__)
#define cs_log_info(...)  cs_log(CS_LOG_INFO, __VA_ARGS__)
#define cs_log_debug(...)                                                                                    \
    do {                                                                                                     \
        if (cs_log_get_level() >= CS_LOG_DEBUG)                                                              \
            cs_log(CS_LOG_DEBUG, __VA_ARGS__);                                                               \
    } while (0)

#endif
