/*
 * fuzz_jscan.c - the scanner against jansson: cs_jscan_object must accept exactly the lines
 * cs_line_parse accepts (json_loadb with JSON_DECODE_ANY, an object, within the depth limit), at
 * the default depth and at a small one, and what it reports must be what jansson parsed; the
 * event rules applied to the reported text (the ingest fast path) must answer as for the object.
 */
#include <stdint.h>
#include <stdlib.h>

#include "../../src/err.c"
#include "../../src/event.c"
#include "../../src/jscan.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const names[CS_JSCAN_N_MEMBERS] = {
    [CS_JSCAN_EXECUTION_ID] = "execution_id", [CS_JSCAN_TYPE] = "type", [CS_JSCAN_EVENT_ID] = "event_id",
    [CS_JSCAN_TIMESTAMP] = "timestamp",       [CS_JSCAN_SEQ] = "seq",   [CS_JSCAN_OP] = "op",
};

/* Checks one reported member against jansson's value of the same key. */
static void check_member(const cs_jscan_member_t *m, const json_t *v)
{
    json_t *again;

    switch (m->kind) {
    case CS_JSCAN_ABSENT:
        if (v != NULL)
            abort();
        break;
    case CS_JSCAN_STRING:
        if (!json_is_string(v))
            abort();
        /* An unescaped string is its value; an escaped one is longer than its value. */
        if (!m->escaped &&
            (json_string_length(v) != m->len || memcmp(json_string_value(v), m->p, m->len) != 0))
            abort();
        if (m->escaped && (json_string_length(v) >= m->len || memchr(m->p, '\\', m->len) == NULL))
            abort();
        break;
    case CS_JSCAN_NULL:
        if (!json_is_null(v))
            abort();
        break;
    case CS_JSCAN_OTHER:
        /* The slice is the value's whole text. */
        if (v == NULL || json_is_string(v) || json_is_null(v))
            abort();
        again = json_loadb(m->p, m->len, JSON_DECODE_ANY, NULL);
        if (again == NULL || !json_equal(again, (json_t *)v))
            abort();
        json_decref(again);
        break;
    default:
        abort();
    }
}

/*
 * When the members the rules read are absent or plain strings (what the ingest fast path takes),
 * the rules applied to their text must answer as they answer for the parsed object.
 */
static void check_fields(const cs_jscan_t *sc, const json_t *ev)
{
    static const int idx[] = {CS_JSCAN_EXECUTION_ID, CS_JSCAN_TYPE, CS_JSCAN_EVENT_ID, CS_JSCAN_TIMESTAMP};
    const char *text[4];
    size_t len[4];
    char d1[256], d2[256];

    if (sc->flags & (CS_JSCAN_KEY_ESCAPED | CS_JSCAN_DUPLICATE))
        return;
    for (int i = 0; i < 4; i++) {
        const cs_jscan_member_t *m = &sc->f[idx[i]];
        if (m->kind != CS_JSCAN_ABSENT && (m->kind != CS_JSCAN_STRING || m->escaped))
            return;
        text[i] = m->kind == CS_JSCAN_STRING ? m->p : NULL;
        len[i] = m->len;
    }
    cs_event_fields_t fl = {text[0], len[0], text[1], len[1], text[2], len[2], text[3], len[3]};
    cs_err_t a = cs_event_validate(ev, d1, sizeof(d1)), b = cs_event_validate_fields(&fl, d2, sizeof(d2));
    if (a != b || (a != CS_OK && strcmp(d1, d2) != 0))
        abort();
}

static void one(const uint8_t *data, size_t size, unsigned depth)
{
    char detail[256];
    json_t *ev = NULL;
    cs_jscan_t sc;
    int want = cs_line_parse((const char *)data, size, depth, &ev, detail, sizeof(detail)) == CS_OK;
    int got = cs_jscan_object((const char *)data, size, depth, &sc) == 0;

    if (want != got)
        abort();
    if (!got) {
        json_decref(ev);
        return;
    }
    /* CR and LF cannot stand raw inside a string, so in a valid line they are white space. */
    if (!(sc.flags & CS_JSCAN_CRLF) != (memchr(data, '\r', size) == NULL && memchr(data, '\n', size) == NULL))
        abort();
    if (!(sc.flags & CS_JSCAN_KEY_ESCAPED))
        for (int i = 0; i < CS_JSCAN_N_MEMBERS; i++)
            check_member(&sc.f[i], json_object_get(ev, names[i]));
    check_fields(&sc, ev);
    json_decref(ev);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    one(data, size, 32);
    one(data, size, 2);
    return 0;
}
