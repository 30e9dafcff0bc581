/*
 * transport.c - see transport.h.
 */
#include "transport.h"

#include <string.h>

int cs_transport_offer(cs_daemon_t *d, cs_offer_t *o, size_t *by)
{
    for (size_t i = 0; i < d->n_transports; i++) {
        const cs_transport_t *t = &d->transports[i];
        o->detail = NULL;
        int r = t->ops->offer(t->self, o);
        if (r != 0) {
            if (by != NULL)
                *by = i;
            return r;
        }
    }
    return 0;
}

size_t cs_transport_count(const cs_daemon_t *d, const char *gauge)
{
    size_t n = 0;

    for (size_t i = 0; i < d->n_transports; i++) {
        const cs_transport_t *t = &d->transports[i];
        if (gauge == NULL || strcmp(t->ops->gauge, gauge) == 0)
            n += t->ops->count(t->self);
    }
    return n;
}
