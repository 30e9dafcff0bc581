/*
 * event.h - the rules of SPEC.md §1 for one event, and of §3 for one ingest line.
 *
 * Pure functions: no I/O, no global state, so they can be fuzzed. The daemon
 * calls cs_line_parse on every line, then cs_event_validate, then (inside the
 * store) cs_event_complete.
 */
#ifndef CS_EVENT_H
#define CS_EVENT_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "err.h" /* cs_err_t: the error values (CS_ERR_*) */

#define CS_EXECUTION_ID_MAX 128
#define CS_TYPE_MAX         64
#define CS_EVENT_ID_MAX     128

/** Returns nonzero when s[0..len) is a valid execution_id: 1-128 of [A-Za-z0-9._:-]. */
int cs_valid_execution_id(const char *s, size_t len);

/** Returns nonzero when s[0..len) is a valid type: 1-64 of [A-Za-z0-9._-]. */
int cs_valid_type(const char *s, size_t len);

/** Returns nonzero when s[0..len) is a valid event_id: 1-128 bytes of valid UTF-8, no control characters. */
int cs_valid_event_id(const char *s, size_t len);

/**
 * Returns nonzero when the JSON text nests no deeper than max_depth arrays/objects (a scan that
 * respects strings, run before the parser so a hostile line cannot recurse deeply).
 */
int cs_json_depth_ok(const char *buf, size_t len, unsigned max_depth);

/**
 * Parses one line (without its newline) into a JSON object. The line must be valid UTF-8 JSON, an
 * object, hold no NUL byte, and nest at most max_depth deep (cs_jscan_object accepts the same
 * lines). On failure returns CS_ERR_INVALID_JSON and a short human detail ("line 1 column 7:
 * unexpected token", "not an object", "nested deeper than 32").
 */
cs_err_t cs_line_parse(const char *line, size_t len, unsigned max_depth, json_t **out, char *detail,
                       size_t detail_len);

/**
 * The members of an event the daemon itself reads, as text (not NUL-terminated): pointers into a
 * producer's line or into a JSON object's strings.
 */
typedef struct cs_event_fields {
    const char *execution_id; /* NULL when absent */
    size_t execution_id_len;
    const char *type; /* NULL when absent */
    size_t type_len;
    const char *event_id; /* NULL when absent or null */
    size_t event_id_len;
    const char *timestamp; /* NULL when absent or null */
    size_t timestamp_len;
} cs_event_fields_t;

/**
 * Checks an event's fields against §1 as cs_event_validate checks its object (a timestamp here is a
 * string by construction), with the same codes and details.
 */
cs_err_t cs_event_validate_fields(const cs_event_fields_t *f, char *detail, size_t detail_len);

/**
 * Checks an event object against §1: execution_id and type present and valid, event_id (when
 * present) a valid string, timestamp (when present) a string, type not reserved ("heartbeat" and
 * "stream.*" belong to the daemon). Returns CS_OK, CS_ERR_MISSING_FIELD or CS_ERR_INVALID_FIELD
 * with a detail naming the field.
 */
cs_err_t cs_event_validate(const json_t *ev, char *detail, size_t detail_len);

/**
 * Fills in what the daemon owns: a lower-case UUID v4 event_id when absent, a timestamp when absent
 * (now_ms, Unix time in milliseconds), and seq (always overwritten). Returns 0 or -ENOMEM.
 */
int cs_event_complete(json_t *ev, uint64_t seq, int64_t now_ms);

/** Writes a random (version 4) UUID, lower-case, 36 characters and a NUL. Returns 0 or -EIO. */
int cs_uuid4(char out[37]);

/** Writes now_ms (Unix ms) as "2026-01-15T10:30:02.123Z" into out (at least 25 bytes). */
void cs_format_timestamp(int64_t unix_ms, char *out, size_t outlen);

/**
 * Reads a timestamp in exactly the form cs_format_timestamp writes ("2026-01-15T10:30:02.123Z", 24
 * characters, years 1970-9999) into *unix_ms. Returns 0, or -1 for anything else (a producer's own
 * timestamp may be any string).
 */
int cs_parse_timestamp(const char *s, size_t len, int64_t *unix_ms);

/** Returns the current Unix time in milliseconds. */
int64_t cs_unix_ms(void);

#endif
