/*
 * webhook.h - webhooks out (SPEC §9): every event an endpoint asks for is POSTed to it, at least once,
 * in seq order per (endpoint, execution), through libcurl's multi interface on the daemon's loop
 * (curlm.h). docs/webhooks.md is the user's side of this file.
 *
 * Endpoints: the global ones of webhooks.endpoints, and per execution the URLs a kickoff, a /resume or
 * a runtime registers (humanInputWebhook, taskWebhookUrl, stepWebhookUrl, crewWebhookUrl), each
 * checked against webhooks.allow.
 *
 * Delivery cursors: a "discovery" subscriber on the global stream sees every new event once and opens,
 * for each endpoint that wants it and has no cursor on its execution yet, a cursor there: a store
 * subscriber on that execution starting just before the event. The cursor sends one event at a time
 * (which keeps the order), retries it with back-off, dead-letters it, and is closed as soon as it is
 * caught up with nothing in flight: cursors exist only for (endpoint, execution) pairs with something
 * to send, at most webhooks.max_executions per endpoint.
 *
 * With a journal (persist.h's module records, whrec.h) registrations and cursor positions (endpoint,
 * execution, epoch, next seq) are journaled as they change, at most once per cursor per loop turn, and
 * restored by cs_webhooks_new after the store's replay, so deliveries resume after a restart; each
 * snapshot begins with the whole webhook state. Without one nothing is kept.
 */
#ifndef CS_WEBHOOK_H
#define CS_WEBHOOK_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "buf.h"
#include "err.h"

typedef struct cs_webhooks cs_webhooks_t;
struct cs_daemon;

/** Creates the webhook sender for d (its loop, store and configuration); 0, or -errno with err. */
int cs_webhooks_new(cs_webhooks_t **out, struct cs_daemon *d, char *err, size_t errlen);

/** Aborts what is in flight (not delivered: at least once means it is sent again by whoever resumes
 * the cursor) and frees everything. */
void cs_webhooks_free(cs_webhooks_t *w);

/**
 * Registers the webhook URLs of a kickoff, /resume or runtime body for execution exec: humanInputWebhook
 * {url, authentication}, taskWebhookUrl, stepWebhookUrl, crewWebhookUrl (any absent one stays as it
 * was). Every URL must match webhooks.allow. All or nothing: CS_OK, or CS_ERR_INVALID_FIELD naming the
 * field, CS_ERR_UNAVAILABLE when webhooks.max_registrations are held (or w is NULL), with detail.
 */
cs_err_t cs_webhooks_register(cs_webhooks_t *w, const char *exec, size_t exec_len, const json_t *body,
                              char *detail, size_t detail_len);

/** Nonzero when body names any webhook field cs_webhooks_register reads. */
int cs_webhooks_body_has(const json_t *body);

/** The body of GET /v1/webhooks: every endpoint with its lag, in flight, counters, last error and dead
 * letters; a new reference, NULL when out of memory. */
json_t *cs_webhooks_json(cs_webhooks_t *w);

/** Appends the webhook lines of /metrics to b; 0 or what cs_buf_printf returned. */
int cs_webhooks_metrics(cs_webhooks_t *w, cs_buf_t *b);

#endif
