/*
 * fuzz_head.c - the request-head scanner and route matcher on arbitrary bytes.
 */
#include <stdint.h>
#include <stdlib.h>

#include "../../src/cursor.c"
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
    return 0;
}
