/*
 * fuzz_head.c - the request-head scanner and route matcher on arbitrary bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/cursor.c"
#include "../../src/err.c"
#include "../../src/event.c"
#include "../../src/filter.c"
#include "../../src/head.c"
#include "../../src/log.c"
#include "../../src/route.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t hl = 0;
    cs_route_t r;
    cs_head_result_t res = cs_head_scan((const char *)data, size, &hl);

    if ((res == CS_HEAD_HTTP || res == CS_HEAD_WEBSOCKET) && (hl == 0 || hl > size))
        abort();
    /* A prefix of a complete head is never "complete" with a longer length. */
    cs_route_match((const char *)data, size, &r);
    if (r.execution_id_len > CS_EXECUTION_ID_MAX)
        abort();
    /* The strict parse: what it accepts is a complete head of exactly this length, and its fields lie
     * inside the input; query decoding stays inside its output. */
    cs_head_req_t req;
    if (cs_head_parse((const char *)data, size, &req) == 0) {
        if (res != CS_HEAD_HTTP && res != CS_HEAD_WEBSOCKET)
            abort();
        if (hl != size)
            abort();
        const cs_head_str_t *f[] = {&req.path, &req.query, &req.authorization, &req.last_event_id,
                                    &req.origin};
        for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
            if (f[i]->p != NULL &&
                (f[i]->p < (const char *)data || f[i]->p + f[i]->n > (const char *)data + size))
                abort();
        static const char *const names[] = {"types", "since", "since_seq", "last_event_id", "named", "token"};
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
            char out[64];
            int a = cs_head_arg(req.query, names[i], out, sizeof(out));
            if (a == 1 && strlen(out) >= sizeof(out))
                abort();
        }
    }
    return 0;
}
