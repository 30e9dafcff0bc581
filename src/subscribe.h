/*
 * subscribe.h - what every transport does the same way: check a subscription
 * request and open its cursor, and take a client's answer to a human-input
 * request.
 *
 * A transport reads a request its own way (libmicrohttpd's lookups, a peeked
 * head, libwebsockets' headers) and hands the pieces here: the route it
 * matched, the token presented, and lookups for the options. It answers what
 * comes back through the error contract (err.h) in its own shape: an HTTP
 * status and JSON body, a handshake refusal, an error message on a WebSocket.
 */
#ifndef CS_SUBSCRIBE_H
#define CS_SUBSCRIBE_H

#include <stddef.h>

#include <jansson.h>

#include "auth.h"
#include "daemon.h"
#include "route.h"
#include "store.h"

/**
 * Checks a subscription request on rt (a stream, WebSocket or long-poll route with a valid id): the
 * token (NUL-terminated, NULL when none) must read rt's execution, or every execution for the
 * all-executions stream; then the options (cs_sub_req_parse with arg and hdr over ctx). Returns 0 with
 * *req filled (release it with cs_sub_req_free) and *who (when not NULL) the principal, valid as
 * cs_auth_check says; or an error value with detail: CS_ERR_NO_TOKEN, CS_ERR_BAD_TOKEN (401),
 * CS_ERR_FORBIDDEN (403), CS_ERR_BAD_REQUEST (400, an option named).
 */
int cs_subscribe_check(cs_daemon_t *d, const cs_route_t *rt, const char *token, cs_lookup_fn arg,
                       cs_lookup_fn hdr, void *ctx, cs_sub_req_t *req, cs_principal_t *who, char *detail,
                       size_t detail_len);

/** Opens the cursor of a checked request on rt's execution (or the global stream); the filter moves into
 * sub. Returns 0 or -ENOMEM. */
int cs_subscribe_open(cs_daemon_t *d, const cs_route_t *rt, cs_sub_req_t *req, cs_sub_t *sub,
                      const cs_sub_ops_t *ops, void *data);

/**
 * Takes an answer to a human-input request of execution x[0..xlen): o is the client's message, already
 * parsed (each transport parses and words its own parse errors); may_respond says whether the token's
 * respond scope covers x. Reads the answer and publishes its completion (cs_answer_take). Returns 0 with
 * *pub, or an error value with detail: CS_ERR_FORBIDDEN, a field's (missing_field, invalid_field),
 * CS_ERR_NOT_FOUND (no such request), CS_ERR_CONFLICT (not open), CS_ERR_UNAVAILABLE (the journal cannot
 * take it), CS_ERR_INTERNAL. With done (a transport that can hold its reply) it may return CS_PENDING
 * (*pub has the ticket): the journal confirms the answer later, through done, and only then is the
 * human told it was taken (an error then, CS_ERR_UNAVAILABLE, says it was not made durable); the
 * transport forgets the ticket (cs_store_forget) when its client leaves first. done NULL: completes
 * at once.
 */
int cs_take_answer(cs_daemon_t *d, const json_t *o, const char *x, size_t xlen, int may_respond,
                   const char *who, const cs_store_done_t *done, cs_publish_t *pub, char *detail,
                   size_t detail_len);

/** The reply to a taken answer (malloc'd JSON, NULL when out of memory): {"ok":true,...} over HTTP,
 * {"type":"ack",...} on a WebSocket (ws nonzero); both name the execution, the completion's event_id and
 * seq, and the request_event_id answered. */
char *cs_take_answer_ack(const char *x, size_t xlen, const cs_publish_t *pub, int ws);

#endif
