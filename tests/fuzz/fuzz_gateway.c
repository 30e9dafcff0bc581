/*
 * fuzz_gateway.c - the crew gateway driven by a program of operations, one JSON object a line, from
 * any bytes: {"do":"serve","conn":N,"crew":…,"inputs":…,"concurrency":…} (the serve op's fields exactly as
 * a runtime sends them), {"do":"kickoff","crew":…,"inputs":…}, {"do":"ack","conn":N,"n":I} (the I-th
 * kickoff pushed), {"do":"gone","conn":N}, {"do":"finished","n":I}, {"do":"tick","ms":T}. After every
 * operation the gateway's counts must agree with what it pushed and failed: never a kickoff pushed
 * again after its ack, never a serving busier than its pushes, no crash, no leak.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/buf.c"
#include "../../src/err.c"
#include "../../src/event.c"
#include "../../src/gateway.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NCONN 4
#define NPUSH 256

typedef struct fz {
    char id[NPUSH][37];
    int conn[NPUSH];
    int acked[NPUSH];
    size_t n;
} fz_t;

static int conns[NCONN];

static int fz_push(void *data, void *conn, const char *line, size_t len)
{
    fz_t *f = data;
    json_t *o = json_loadb(line, len, 0, NULL);
    const char *id = json_string_value(json_object_get(o, "execution_id"));

    if (o == NULL || id == NULL || line[len - 1] != '\n')
        abort();
    /* Never pushed again once acknowledged. */
    for (size_t i = 0; i < f->n; i++)
        if (f->acked[i] && strcmp(f->id[i], id) == 0)
            abort();
    if (f->n < NPUSH) {
        snprintf(f->id[f->n], 37, "%s", id);
        f->conn[f->n] = (int)((int *)conn - conns);
        f->acked[f->n] = 0;
        f->n++;
    }
    json_decref(o);
    return 0;
}

static void fz_failed(void *data, const char *id, const char *crew, const char *why)
{
    (void)data;
    if (id == NULL || crew == NULL || why == NULL)
        abort();
}

static void fz_changed(void *data)
{
    (void)data;
}

static int conn_of(json_t *o)
{
    json_int_t k = json_integer_value(json_object_get(o, "conn"));
    return (int)((k % NCONN + NCONN) % NCONN);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static fz_t f;
    cs_gateway_ops_t ops = {fz_push, fz_failed, fz_changed, &f};
    cs_gateway_limits_t lim = {8, 1000, 2000};
    cs_gateway_t *gw;
    const char *p = (const char *)data, *end = p + size;
    int64_t now = 0;
    char detail[300];

    memset(&f, 0, sizeof(f));
    if (cs_gateway_new(&gw, &ops, &lim) != 0)
        abort();
    for (int lines = 0; p < end && lines < 200; lines++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        json_t *o = json_loadb(p, n, 0, NULL);
        p += n + (nl != NULL);
        const char *what = json_string_value(json_object_get(o, "do"));
        if (what == NULL) {
            json_decref(o);
            continue;
        }
        if (strcmp(what, "serve") == 0) {
            cs_gateway_serve(gw, &conns[conn_of(o)], json_object_get(o, "crew"), json_object_get(o, "inputs"),
                             json_object_get(o, "concurrency"), now, detail, sizeof(detail));
        } else if (strcmp(what, "kickoff") == 0) {
            cs_err_t e = CS_OK;
            const char *crew = cs_gateway_pick_crew(gw, json_string_value(json_object_get(o, "crew")), NULL,
                                                    &e, detail, sizeof(detail));
            json_t *in = json_object_get(o, "inputs");
            char id[37] = "";
            if (crew != NULL && in != NULL)
                cs_gateway_kickoff(gw, crew, in, now, id, detail, sizeof(detail));
        } else if (strcmp(what, "ack") == 0 && f.n > 0) {
            size_t i = (size_t)json_integer_value(json_object_get(o, "n")) % f.n;
            int k = conn_of(o);
            if (cs_gateway_ack(gw, &conns[k], f.id[i], now, detail, sizeof(detail)) == CS_OK) {
                /* Every copy of that id counts as acknowledged from now on. */
                for (size_t j = 0; j < f.n; j++)
                    if (strcmp(f.id[j], f.id[i]) == 0)
                        f.acked[j] = 1;
            }
        } else if (strcmp(what, "gone") == 0) {
            cs_gateway_conn_gone(gw, &conns[conn_of(o)], now);
        } else if (strcmp(what, "finished") == 0 && f.n > 0) {
            size_t i = (size_t)json_integer_value(json_object_get(o, "n")) % f.n;
            cs_gateway_finished(gw, f.id[i], strlen(f.id[i]), now);
        } else if (strcmp(what, "tick") == 0) {
            json_int_t ms = json_integer_value(json_object_get(o, "ms"));
            now += ms > 0 && ms < 100000 ? ms : 0;
            cs_gateway_tick(gw, now);
        }
        json_decref(o);
        cs_gateway_stats_t st;
        cs_gateway_stats(gw, &st);
        if (st.queued > 1000 || st.offered + st.running > NCONN * CS_GATEWAY_CONCURRENCY_MAX)
            abort();
        json_t *crews = cs_gateway_crews_json(gw);
        json_decref(crews);
    }
    cs_gateway_free(gw);
    return 0;
}
