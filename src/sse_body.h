/*
 * sse_body.h - the body of one SSE stream: the retry hint, then what a cursor
 * has, rendered as SSE (the frame's pre-rendered head lines and JSON, gaps),
 * and heartbeats when there is nothing else. Pure over the store: no I/O, so
 * the native streams (sse.c) and libmicrohttpd's reader (http.c) fill from it
 * and a unit test can read it byte for byte.
 */
#ifndef CS_SSE_BODY_H
#define CS_SSE_BODY_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define CS_SSE_RETRY_MS 3000
/* The human-input routes beat every 4 s with a data event (the seed's client reads with a 5 s
 * timeout); the others with a comment every heartbeat_s. */
#define CS_SSE_HITL_HEARTBEAT_MS 4000

/** One piece of pending output, copied out across calls. */
typedef struct cs_sse_piece {
    const char *p;
    size_t n;
} cs_sse_piece_t;

/** The body of one stream: the retry preamble, then events, gaps and heartbeats. */
typedef struct cs_sse_body {
    cs_store_t *store;
    cs_sse_piece_t parts[4];
    uint8_t nparts, ipart;
    uint8_t preamble_done, hitl, global, named;
    uint8_t hb_due; /* send a heartbeat when there is nothing else */
    size_t off;
    cs_frame_t *held; /* the frame whose pieces are pending */
    char small[96];   /* the preamble or a heartbeat */
} cs_sse_body_t;

/** Starts a body: hitl streams beat with data events, the global stream carries global cursors. */
void cs_sse_body_init(cs_sse_body_t *b, cs_store_t *store, int hitl, int global, int named);

/** Copies what is due into buf[0..max): returns bytes, 0 when caught up (then park the cursor). */
size_t cs_sse_body_fill(cs_sse_body_t *b, cs_sub_t *sub, char *buf, size_t max);

/** Releases what the body holds. */
void cs_sse_body_free(cs_sse_body_t *b);

#endif
