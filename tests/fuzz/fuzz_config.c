/*
 * fuzz_config.c - the configuration parser on arbitrary bytes: it must refuse
 * or accept without crashing, leaking or leaving a half-built configuration,
 * and whatever it accepts must dump. Short inputs also go to the listen parser.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#include "../../src/auth.c"
#include "../../src/cfgschema.c"
#include "../../src/config.c"
#include "../../src/log.c"
#include "../../src/whconf.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static FILE *devnull;
    cs_config_t cfg;
    char err[512];

    if (devnull == NULL)
        devnull = fopen("/dev/null", "w");
    if (cs_config_defaults(&cfg) != 0)
        return 0;
    if (cs_config_load_buffer(&cfg, (const char *)data, size, err, sizeof(err)) == 0) {
        if (devnull != NULL)
            cs_config_dump(&cfg, devnull);
    } else if (memchr(err, '\n', strnlen(err, sizeof(err))) != NULL) {
        /* A message is one line, whatever the input held. */
        abort();
    }
    cs_config_free(&cfg);

    if (size < 512) {
        char *s = malloc(size + 1);
        char *host = NULL;
        uint16_t port;
        if (s != NULL) {
            memcpy(s, data, size);
            s[size] = '\0';
            if (cs_config_parse_listen(s, &host, &port) == 0) {
                if (port == 0 || host == NULL || host[0] == '\0')
                    abort();
                free(host);
            }
            free(s);
        }
    }
    return 0;
}
