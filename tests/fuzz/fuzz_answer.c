/*
 * fuzz_answer.c - a human answer as the HTTP and WebSocket routes read it: JSON parse with the
 * depth limit, cs_answer_from_json, and cs_store_answer against a store holding one open request.
 */
#include <stdint.h>
#include <stdlib.h>

#include "../../src/answer.c"
#include "../../src/cursor.c"
#include "../../src/err.c"
#include "../../src/event.c"
#include "../../src/filter.c"
#include "../../src/hitl.c"
#include "../../src/log.c"
#include "../../src/status.c"
#include "../../src/store.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const cs_store_limits_t lim = {
        .ring_events = 16, .ring_bytes = 1 << 16, .max_bytes = 1 << 20, .retain_s = 10, .global_events = 16};
    char detail[300];
    json_t *o = NULL, *req;
    cs_store_t *st;
    cs_answer_t a;
    cs_publish_t pub;

    if (cs_line_parse((const char *)data, size, 32, &o, detail, sizeof(detail)) != CS_OK)
        return 0;
    if (cs_store_new(&st, &lim) != 0) {
        json_decref(o);
        return 0;
    }
    req = json_pack("{s:s, s:s, s:s, s:s}", "execution_id", "x", "type", "human_input_required", "event_id",
                    "r1", "task_id", "t1");
    if (req != NULL && cs_store_publish(st, req, 0, &pub, detail, sizeof(detail)) == CS_OK &&
        cs_answer_from_json(o, &a, detail, sizeof(detail)) == CS_OK) {
        cs_err_t e = cs_store_answer(st, "x", 1, &a, 0, &pub, detail, sizeof(detail));
        /* A first answer to the one open request can only succeed, miss, or name an unknown id. */
        if (e != CS_OK && e != CS_ERR_CONFLICT && e != CS_ERR_NOT_FOUND)
            abort();
        /* A second identical answer never succeeds. */
        if (e == CS_OK && cs_store_answer(st, "x", 1, &a, 0, &pub, detail, sizeof(detail)) == CS_OK)
            abort();
    }
    json_decref(req);
    json_decref(o);
    cs_store_free(st);
    return 0;
}
