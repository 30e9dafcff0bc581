/*
 * event.c - see event.h.
 */
#include "event.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "utf8.h"

static int is_alnum(unsigned char c)
{
    /* Not isalnum(): the locale must not widen what an identifier may hold. */
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

int cs_valid_execution_id(const char *s, size_t len)
{
    if (s == NULL || len == 0 || len > CS_EXECUTION_ID_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!is_alnum(c) && c != '.' && c != '_' && c != ':' && c != '-')
            return 0;
    }
    return 1;
}

int cs_valid_type(const char *s, size_t len)
{
    if (s == NULL || len == 0 || len > CS_TYPE_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!is_alnum(c) && c != '.' && c != '_' && c != '-')
            return 0;
    }
    return 1;
}

int cs_valid_event_id(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;

    if (s == NULL || len == 0 || len > CS_EVENT_ID_MAX)
        return 0;
    for (size_t i = 0; i < len;) {
        if (p[i] < 0x20 || p[i] == 0x7f)
            return 0;
        size_t n = cs_utf8_seq(p + i, len - i);
        if (n == 0)
            return 0;
        i += n;
    }
    return 1;
}

int cs_json_depth_ok(const char *buf, size_t len, unsigned max_depth)
{
    unsigned depth = 0;
    int in_string = 0;

    /*
     * Only brackets outside strings count. Malformed text (a stray closer, an unterminated string)
     * is left for the parser to refuse; this scan only has to be exact for text the parser accepts.
     */
    for (size_t i = 0; i < len; i++) {
        char c = buf[i];
        if (in_string) {
            if (c == '\\')
                i++; /* whatever follows a backslash cannot end the string */
            else if (c == '"')
                in_string = 0;
            continue;
        }
        switch (c) {
        case '"':
            in_string = 1;
            break;
        case '[':
        case '{':
            if (++depth > max_depth)
                return 0;
            break;
        case ']':
        case '}':
            if (depth > 0)
                depth--;
            break;
        default:
            break;
        }
    }
    return 1;
}

/*
 * Copies text into out, replacing every byte that is not printable ASCII with '?'. The parser's
 * message can quote the offending input, and the detail travels back inside a JSON reply, which
 * must stay valid UTF-8 however the input was broken (and however snprintf truncates it).
 */
static void copy_printable(char *out, size_t outlen, const char *text)
{
    size_t i = 0;

    if (outlen == 0)
        return;
    for (; text[i] != '\0' && i + 1 < outlen; i++) {
        unsigned char c = (unsigned char)text[i];
        out[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    out[i] = '\0';
}

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "something else";
}

/* Returns nonzero when buf holds nothing but JSON white space. */
static int is_blank(const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (buf[i] != ' ' && buf[i] != '\t' && buf[i] != '\r' && buf[i] != '\n')
            return 0;
    return 1;
}

cs_err_t cs_line_parse(const char *line, size_t len, unsigned max_depth, json_t **out, char *detail,
                       size_t detail_len)
{
    json_error_t jerr;
    json_t *v;
    char msg[JSON_ERROR_TEXT_LENGTH + 64];

    *out = NULL;
    /* jansson would say "unexpected token near end of file"; a producer deserves plainer words. */
    if (is_blank(line, len)) {
        snprintf(detail, detail_len, "empty line: expected a JSON object");
        return CS_ERR_INVALID_JSON;
    }
    if (!cs_json_depth_ok(line, len, max_depth)) {
        snprintf(detail, detail_len, "nested deeper than %u levels", max_depth);
        return CS_ERR_INVALID_JSON;
    }
    /*
     * JSON text holds no NUL byte (in a string it must be escaped, and \u0000 is refused too), but
     * jansson 2.14 skips one that directly follows a number or a literal ({"a":1\0}): its lexer
     * puts the byte back and then mistakes it for its own end-of-buffer mark. The line would be
     * kept as it came, NUL and all, so it is refused here, as cs_jscan_object refuses it.
     */
    const char *nul = memchr(line, '\0', len);
    if (nul != NULL) {
        snprintf(detail, detail_len, "NUL byte at offset %zu", (size_t)(nul - line));
        return CS_ERR_INVALID_JSON;
    }
    /*
     * json_loadb takes the length, so a line holding NUL bytes is judged whole, and without
     * JSON_DISABLE_EOF_CHECK anything after the value is an error. JSON_DECODE_ANY lets a scalar
     * through the parser only so that the reply can say what the line was instead of a parser
     * message about brackets; it is refused just below. jansson rejects invalid UTF-8 itself.
     */
    v = json_loadb(line, len, JSON_DECODE_ANY, &jerr);
    if (v == NULL) {
        snprintf(msg, sizeof(msg), "line %d column %d: %s", jerr.line, jerr.column, jerr.text);
        copy_printable(detail, detail_len, msg);
        return CS_ERR_INVALID_JSON;
    }
    if (!json_is_object(v)) {
        snprintf(detail, detail_len, "expected a JSON object, got %s", json_kind(v));
        json_decref(v);
        return CS_ERR_INVALID_JSON;
    }
    *out = v;
    return CS_OK;
}

/* Returns the member, or NULL when it is absent or JSON null: producers write null for "not set". */
static json_t *get_set(const json_t *ev, const char *key)
{
    json_t *v = json_object_get(ev, key);
    return json_is_null(v) ? NULL : v;
}

cs_err_t cs_event_validate_fields(const cs_event_fields_t *f, char *detail, size_t detail_len)
{
    if (f->execution_id == NULL) {
        snprintf(detail, detail_len, "execution_id is required");
        return CS_ERR_MISSING_FIELD;
    }
    if (!cs_valid_execution_id(f->execution_id, f->execution_id_len)) {
        snprintf(detail, detail_len, "execution_id must be 1-128 characters of [A-Za-z0-9._:-]");
        return CS_ERR_INVALID_FIELD;
    }

    if (f->type == NULL) {
        snprintf(detail, detail_len, "type is required");
        return CS_ERR_MISSING_FIELD;
    }
    if (!cs_valid_type(f->type, f->type_len)) {
        snprintf(detail, detail_len, "type must be 1-64 characters of [A-Za-z0-9._-]");
        return CS_ERR_INVALID_FIELD;
    }
    /* The daemon's own keep-alives and stream notices must never be forged by a producer. */
    if ((f->type_len == 9 && memcmp(f->type, "heartbeat", 9) == 0) ||
        (f->type_len >= 7 && memcmp(f->type, "stream.", 7) == 0)) {
        snprintf(detail, detail_len, "type \"%.*s\" is reserved for the daemon", (int)f->type_len, f->type);
        return CS_ERR_INVALID_FIELD;
    }

    if (f->event_id != NULL && !cs_valid_event_id(f->event_id, f->event_id_len)) {
        snprintf(detail, detail_len, "event_id must be a string of 1-128 bytes without control characters");
        return CS_ERR_INVALID_FIELD;
    }
    return CS_OK;
}

/*
 * Points *s and *len at the string member key of ev: NULL when it is absent or null, and "" when it
 * is not a string, which no rule accepts and which the rules word as they word a wrong string.
 */
static void field_of(const json_t *ev, const char *key, const char **s, size_t *len)
{
    json_t *v = get_set(ev, key);

    *s = v == NULL ? NULL : json_is_string(v) ? json_string_value(v) : "";
    *len = json_is_string(v) ? json_string_length(v) : 0;
}

cs_err_t cs_event_validate(const json_t *ev, char *detail, size_t detail_len)
{
    cs_event_fields_t f = {0};
    json_t *v;
    cs_err_t e;

    if (!json_is_object(ev)) {
        snprintf(detail, detail_len, "expected a JSON object");
        return CS_ERR_INVALID_JSON;
    }
    field_of(ev, "execution_id", &f.execution_id, &f.execution_id_len);
    field_of(ev, "type", &f.type, &f.type_len);
    field_of(ev, "event_id", &f.event_id, &f.event_id_len);
    if ((e = cs_event_validate_fields(&f, detail, detail_len)) != CS_OK)
        return e;

    if ((v = get_set(ev, "timestamp")) != NULL && !json_is_string(v)) {
        snprintf(detail, detail_len, "timestamp must be a string");
        return CS_ERR_INVALID_FIELD;
    }

    return CS_OK;
}

/* Puts key back the way it was before cs_event_complete added it: absent, or JSON null. */
static void restore_unset(json_t *ev, const char *key, int was_null)
{
    /* Neither call allocates (json_null() is a singleton, the key exists), so neither can fail. */
    if (was_null)
        json_object_set_new(ev, key, json_null());
    else
        json_object_del(ev, key);
}

/*
 * A random (version 4) UUID, lower-case. libuuid's uuid_generate_random reseeds random(3) and
 * cranks it on every call, which cost a third of the ingest path; OpenSSL's DRBG, drawn 4 KiB at
 * a time, costs a few nanoseconds an id. Fails only when the DRBG does.
 */
int cs_uuid4(char out[37])
{
    static unsigned char pool[4096];
    static size_t used = sizeof(pool);
    static const char hex[] = "0123456789abcdef";
    unsigned char *u;
    char *p = out;

    if (used + 16 > sizeof(pool)) {
        if (RAND_bytes(pool, (int)sizeof(pool)) != 1)
            return -EIO;
        used = 0;
    }
    u = pool + used;
    used += 16;
    u[6] = (unsigned char)((u[6] & 0x0f) | 0x40); /* version 4 */
    u[8] = (unsigned char)((u[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *p++ = '-';
        *p++ = hex[u[i] >> 4];
        *p++ = hex[u[i] & 0xf];
    }
    *p = '\0';
    /* Drawn bytes are never handed out twice. */
    memset(u, 0, 16);
    return 0;
}

int cs_event_complete(json_t *ev, uint64_t seq, int64_t now_ms)
{
    json_t *old_id = json_object_get(ev, "event_id"), *old_ts = json_object_get(ev, "timestamp");
    int added_id = 0, added_ts = 0;

    if (old_id == NULL || json_is_null(old_id)) {
        char s[37];
        if (cs_uuid4(s) != 0 || json_object_set_new(ev, "event_id", json_stringn_nocheck(s, 36)) != 0)
            goto fail;
        added_id = 1;
    }
    if (old_ts == NULL || json_is_null(old_ts)) {
        char ts[32];
        cs_format_timestamp(now_ms, ts, sizeof(ts));
        if (json_object_set_new(ev, "timestamp", json_stringn_nocheck(ts, 24)) != 0)
            goto fail;
        added_ts = 1;
    }
    /* json_integer is signed; a seq beyond INT64_MAX cannot occur (it counts stored events). */
    if (json_object_set_new(ev, "seq", json_integer((json_int_t)seq)) != 0)
        goto fail;
    return 0;

fail:
    /* A failed call leaves the event as it came, so the caller can still reply about it. */
    if (added_ts)
        restore_unset(ev, "timestamp", old_ts != NULL);
    if (added_id)
        restore_unset(ev, "event_id", old_id != NULL);
    return -ENOMEM;
}

void cs_format_timestamp(int64_t unix_ms, char *out, size_t outlen)
{
    /* The date and time up to the second, formatted once a second: every event gets a timestamp. */
    static int64_t cached_secs = INT64_MIN;
    static char cached[64]; /* "YYYY-MM-DDTHH:MM:SS." */
    /* Floor division, so times before 1970 still get a millisecond part in 0..999. */
    int64_t secs = unix_ms / 1000, ms = unix_ms % 1000;
    struct tm tm;
    time_t t;

    if (outlen == 0)
        return;
    if (ms < 0) {
        ms += 1000;
        secs--;
    }
    if (secs != cached_secs) {
        t = (time_t)secs;
        if (gmtime_r(&t, &tm) == NULL || tm.tm_year + 1900 > 9999 || tm.tm_year + 1900 < 0) {
            snprintf(out, outlen, "1970-01-01T00:00:00.000Z");
            return;
        }
        snprintf(cached, sizeof(cached), "%04d-%02d-%02dT%02d:%02d:%02d.", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        cached_secs = secs;
    }
    char tmp[25];
    memcpy(tmp, cached, 20);
    tmp[20] = (char)('0' + ms / 100);
    tmp[21] = (char)('0' + ms / 10 % 10);
    tmp[22] = (char)('0' + ms % 10);
    tmp[23] = 'Z';
    outlen = outlen < sizeof(tmp) ? outlen : sizeof(tmp);
    memcpy(out, tmp, outlen - 1);
    out[outlen - 1] = '\0';
}

static int digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

int cs_parse_timestamp(const char *s, size_t len, int64_t *unix_ms)
{
    static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y, mo, d, h, mi, sec, ms;
    struct tm tm;

    if (len != 24 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' ||
        s[19] != '.' || s[23] != 'Z' || digits(s, 4, &y) || digits(s + 5, 2, &mo) || digits(s + 8, 2, &d) ||
        digits(s + 11, 2, &h) || digits(s + 14, 2, &mi) || digits(s + 17, 2, &sec) || digits(s + 20, 3, &ms))
        return -1;
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || sec > 59)
        return -1;
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -1;
    *unix_ms = (int64_t)t * 1000 + ms;
    return 0;
}

int64_t cs_unix_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
