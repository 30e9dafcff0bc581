/*
 * whrec.c - see whrec.h.
 */
#include "whrec.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"

const char *const cs_whrec_kind_names[CS_WHREC_KINDS] = {"human", "task", "step", "crew"};

void cs_whrec_release(cs_whrec_t *r)
{
    if (r == NULL)
        return;
    json_decref(r->json);
    r->json = NULL;
}

static int bad(char *detail, size_t detail_len, const char *what)
{
    snprintf(detail, detail_len, "webhook record: %s", what);
    return -EINVAL;
}

static int line_ok(const char *s)
{
    return strpbrk(s, "\r\n") == NULL;
}

int cs_whrec_decode(const cs_change_t *c, cs_whrec_t *r, char *detail, size_t detail_len)
{
    memset(r, 0, sizeof(*r));
    if (!CS_WHREC_IS(c->kind))
        return bad(detail, detail_len, "not a webhook record kind");
    r->kind = (int)c->kind;
    if (r->kind != CS_WHREC_DISC) {
        if (c->exec == NULL || c->exec_len == 0 || c->exec_len > CS_EXECUTION_ID_MAX ||
            strlen(c->exec) != c->exec_len)
            return bad(detail, detail_len, "no execution id, or one too long");
        r->exec = c->exec;
        r->exec_len = c->exec_len;
    }
    switch (r->kind) {
    case CS_WHREC_UNREG:
        return 0;
    case CS_WHREC_DISC:
        r->epoch = c->epoch;
        r->seq = c->gseq;
        return 0;
    case CS_WHREC_CURSOR:
        if (c->type == NULL || c->type_len == 0 || c->type_len > CS_WHREC_NAME_MAX ||
            strlen(c->type) != c->type_len)
            return bad(detail, detail_len, "a cursor without an endpoint name, or one too long");
        if ((c->status & ~3) != 0)
            return bad(detail, detail_len, "a cursor's status has unknown bits");
        r->endpoint = c->type;
        r->endpoint_len = c->type_len;
        r->epoch = c->epoch;
        r->seq = c->seq;
        r->closed = c->status & 1;
        r->registered = (c->status >> 1) & 1;
        return 0;
    default:
        break;
    }
    /* CS_WHREC_REG */
    if (c->json == NULL)
        return bad(detail, detail_len, "a registration without its URLs");
    r->json = json_loadb(c->json, c->json_len, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(r->json)) {
        cs_whrec_release(r);
        return bad(detail, detail_len, "a registration's URLs are not a JSON object");
    }
    const char *key;
    json_t *v;
    json_object_foreach(r->json, key, v)
    {
        int k;
        for (k = 0; k < CS_WHREC_KINDS; k++)
            if (strcmp(key, cs_whrec_kind_names[k]) == 0)
                break;
        json_t *u = json_object_get(v, "url"), *a = json_object_get(v, "auth");
        if (k == CS_WHREC_KINDS || !json_is_object(v) || !json_is_string(u) || json_string_length(u) == 0 ||
            strlen(json_string_value(u)) != json_string_length(u) || !line_ok(json_string_value(u)) ||
            (a != NULL &&
             (!json_is_string(a) || strlen(json_string_value(a)) != json_string_length(a) ||
              strncmp(json_string_value(a), "Authorization: ", 15) != 0 || !line_ok(json_string_value(a)))) ||
            json_object_size(v) != (a != NULL ? 2u : 1u)) {
            cs_whrec_release(r);
            return bad(detail, detail_len, "a registration's URLs are not {kind:{url, auth?}}");
        }
        r->url[k] = json_string_value(u);
        r->auth[k] = a != NULL ? json_string_value(a) : NULL;
    }
    return 0;
}

char *cs_whrec_reg_json(const char *const url[CS_WHREC_KINDS], const char *const auth[CS_WHREC_KINDS])
{
    json_t *o = json_object();
    char *s = NULL;
    int ok = o != NULL;

    for (int k = 0; ok && k < CS_WHREC_KINDS; k++) {
        if (url[k] == NULL)
            continue;
        json_t *e = json_pack("{s:s}", "url", url[k]);
        if (e == NULL || (auth[k] != NULL && json_object_set_new(e, "auth", json_string(auth[k])) != 0)) {
            json_decref(e);
            ok = 0;
        } else {
            ok = json_object_set_new(o, cs_whrec_kind_names[k], e) == 0;
        }
    }
    if (ok)
        s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}
