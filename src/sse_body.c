/*
 * sse_body.c - see sse_body.h.
 */
#include "sse_body.h"

#include <stdio.h>
#include <string.h>

#include "event.h"

void cs_sse_body_init(cs_sse_body_t *b, cs_store_t *store, int hitl, int global, int named)
{
    memset(b, 0, sizeof(*b));
    b->store = store;
    b->hitl = (uint8_t)hitl;
    b->global = (uint8_t)global;
    b->named = (uint8_t)named;
}

static void body_set_item(cs_sse_body_t *b, const cs_item_t *it)
{
    b->nparts = 0;
    b->ipart = 0;
    b->off = 0;
    if (it->frame != NULL) {
        cs_frame_t *f = it->frame;
        const char *head = b->global ? f->gsse_head : f->sse_head;
        size_t head_len = b->global ? f->gsse_head_len : f->sse_head_len;
        size_t skip = b->named ? 0 : f->sse_named_skip;
        b->held = cs_frame_ref(f);
        b->parts[b->nparts++] = (cs_sse_piece_t){head + skip, head_len - skip};
        b->parts[b->nparts++] = (cs_sse_piece_t){f->json, f->json_len};
    } else {
        if (b->named)
            b->parts[b->nparts++] = (cs_sse_piece_t){"event: stream.gap\n", 18};
        b->parts[b->nparts++] = (cs_sse_piece_t){"data: ", 6};
        b->parts[b->nparts++] = (cs_sse_piece_t){it->gap, it->gap_len};
    }
    b->parts[b->nparts++] = (cs_sse_piece_t){"\n\n", 2};
}

static void body_set_small(cs_sse_body_t *b, int n)
{
    if (n < 0 || (size_t)n >= sizeof(b->small))
        n = 0;
    b->nparts = 1;
    b->ipart = 0;
    b->off = 0;
    b->parts[0] = (cs_sse_piece_t){b->small, (size_t)n};
}

/* Copies pending pieces into buf; returns bytes copied. Releases the frame once it is all out. */
static size_t body_copy(cs_sse_body_t *b, char *buf, size_t max)
{
    size_t n = 0;

    while (b->ipart < b->nparts && n < max) {
        cs_sse_piece_t *pc = &b->parts[b->ipart];
        size_t take = pc->n - b->off;
        if (take > max - n)
            take = max - n;
        memcpy(buf + n, pc->p + b->off, take);
        n += take;
        b->off += take;
        if (b->off == pc->n) {
            b->ipart++;
            b->off = 0;
        }
    }
    if (b->ipart == b->nparts) {
        b->nparts = b->ipart = 0;
        if (b->held != NULL) {
            cs_frame_unref(b->store, b->held);
            b->held = NULL;
        }
    }
    return n;
}

size_t cs_sse_body_fill(cs_sse_body_t *b, cs_sub_t *sub, char *buf, size_t max)
{
    size_t n = 0;
    cs_item_t it;

    if (!b->preamble_done) {
        body_set_small(b, snprintf(b->small, sizeof(b->small), "retry: %d\n\n", CS_SSE_RETRY_MS));
        b->preamble_done = 1;
    }
    /* Drain everything queued so bursts coalesce into few sends. */
    for (;;) {
        n += body_copy(b, buf + n, max - n);
        if (b->nparts != 0 || n == max)
            break;
        if (!cs_sub_next(sub, &it))
            break;
        body_set_item(b, &it);
    }
    if (n == 0 && b->hb_due) {
        char ts[32];
        cs_format_timestamp(cs_unix_ms(), ts, sizeof(ts));
        if (b->hitl)
            body_set_small(b, snprintf(b->small, sizeof(b->small),
                                       "data: {\"type\":\"heartbeat\",\"timestamp\":\"%s\"}\n\n", ts));
        else
            body_set_small(b, snprintf(b->small, sizeof(b->small), ": heartbeat %s\n\n", ts));
        n += body_copy(b, buf, max);
    }
    b->hb_due = 0;
    return n;
}

void cs_sse_body_free(cs_sse_body_t *b)
{
    if (b->held != NULL) {
        cs_frame_unref(b->store, b->held);
        b->held = NULL;
    }
    b->nparts = b->ipart = 0;
}
