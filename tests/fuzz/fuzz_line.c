/*
 * fuzz_line.c - one ingest line through everything the daemon does to it before the store:
 * parse (with the default depth limit), validate, complete.
 */
#include <stdint.h>
#include <stdlib.h>

#include "../../src/err.c"
#include "../../src/event.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char detail[256];
    json_t *ev = NULL;

    if (cs_line_parse((const char *)data, size, 32, &ev, detail, sizeof(detail)) != CS_OK) {
        if (ev != NULL)
            abort(); /* a failed parse must not hand out an object */
        return 0;
    }
    if (cs_event_validate(ev, detail, sizeof(detail)) == CS_OK) {
        if (cs_event_complete(ev, 1, 1768473002123LL) != 0)
            abort();
        /* What was completed must render and still pass validation (what the store relies on). */
        char *s = json_dumps(ev, JSON_COMPACT);
        if (s == NULL || cs_event_validate(ev, detail, sizeof(detail)) != CS_OK)
            abort();
        free(s);
    }
    json_decref(ev);
    return 0;
}
