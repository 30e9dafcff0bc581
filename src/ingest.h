/*
 * ingest.h - the Unix-socket ingest: newline-delimited JSON in, exactly one reply
 * line per line out, in order (SPEC §3). Replies are queued and written once
 * per read batch; a producer whose queued output (replies and pushed answers)
 * reaches 1 MiB stops being read until it has read it down to 256 KiB (bounded
 * output: backpressure), and an answer still queued to a connection is not
 * queued to it again when it awaits once more. One that sends a line over
 * limits.max_event_bytes gets too_large and is skipped to the next newline.
 */
#ifndef CS_INGEST_H
#define CS_INGEST_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "daemon.h"

/** Creates the socket at cfg->ingest_socket (refusing to take over one a live daemon answers on),
 * with mode cfg->ingest_mode. Returns 0 or -errno with err. */
int cs_ingest_new(cs_ingest_t **out, cs_daemon_t *d, char *err, size_t errlen);

/* The longest reply one line gets: a detail of at most 300 bytes, JSON-escaped, in its object. */
#define CS_INGEST_REPLY_MAX 2048

/**
 * Handles one line (without its newline) as the socket does, appending the reply line (with its
 * newline) to reply. Shared with HTTP ingest, which passes conn NULL (there is nobody to push answers
 * to, so "await" is refused there) and the publisher's principal, whose "publish" scope must cover each
 * event's execution (else forbidden). Sets *code (when not NULL) to the error code of the reply (CS_OK
 * for ok). Returns 0, or -EMSGSIZE (reply at its maximum) or -ENOMEM when the reply could not be
 * appended: reply is then as it was, though the line was handled (its event may be stored), and the
 * caller must not answer as if it had a reply for every line.
 */
int cs_ingest_line(cs_daemon_t *d, void *conn, const cs_principal_t *publisher, const char *line, size_t len,
                   cs_buf_t *reply, cs_err_t *code);

/**
 * cs_ingest_line for a caller that can wait for the store (HTTP ingest: no connection to push to): a
 * publish the store completes later (CS_PENDING) appends nothing to reply and sets *ticket (else 0);
 * done->fn is then called once with the outcome (cs_ingest_reply_outcome renders its reply line), unless
 * the caller forgets the ticket (cs_store_forget). done must stay valid until then.
 */
int cs_ingest_line_wait(cs_daemon_t *d, const cs_principal_t *publisher, const char *line, size_t len,
                        const cs_store_done_t *done, uint64_t *ticket, cs_buf_t *reply, cs_err_t *code);

/** Appends the reply line of a publish that completed later, as cs_ingest_line would have written it
 * ({"ok":true,"seq":...} or the error; an error counts in ingest_errors). Returns 0, or -EMSGSIZE /
 * -ENOMEM with reply unchanged. */
int cs_ingest_reply_outcome(cs_daemon_t *d, cs_buf_t *reply, cs_err_t e, const cs_publish_t *pub,
                            const char *detail);

/** Stops accepting and removes the socket file; producer connections stay until flushed. */
void cs_ingest_close_listener(cs_ingest_t *in);

/** Returns the number of producer connections. */
size_t cs_ingest_count(const cs_ingest_t *in);

/** What /metrics shows of the producers' output. */
typedef struct cs_ingest_stats {
    size_t queued_bytes;  /* replies and pushes queued to every producer, not yet written */
    size_t paused;        /* producers not read because their queued output reached 1 MiB */
    uint64_t pauses;      /* times a producer was paused so */
    uint64_t pushes_same; /* answers not queued again to a producer that still had them queued */

    /* Requests a producer posted, acknowledged by Redis, that did not reach this node's store within 30 s
     * (cluster mode): not awaited without asking (the runtime's own await gets the answer). */
    uint64_t awaits_missed;
} cs_ingest_stats_t;

/** Fills in st. */
void cs_ingest_stats(const cs_ingest_t *in, cs_ingest_stats_t *st);

/** The crew gateway (gateway.h) the ingest side made and drives (its timer, its pushes), its limits set
 * from the running configuration (gateway.*): what POST /kickoff, GET /inputs and GET /v1/crews use. */
cs_gateway_t *cs_ingest_gateway(cs_daemon_t *d);

/** Closes everything and removes the socket file. */
void cs_ingest_free(cs_ingest_t *in);

#endif
