/*
 * crewstream/client.h - libcrewstream, the C client of crewstreamd's ingest socket.
 *
 * A crew runtime uses this library to post events to the daemon over its Unix socket
 * (newline-delimited JSON, one reply per line, in order), to pipeline many posts and
 * collect each acknowledgement with its per-execution seq, and to block until a human
 * answers a human_input_required request. When the connection breaks (for example when
 * the daemon restarts), the library reconnects with exponential backoff and resends, in
 * order, every line that was not acknowledged. Every event carries an event_id fixed
 * before its first send, so a line that the daemon had already stored is acknowledged
 * again with its original seq instead of being stored twice: each posted line is
 * acknowledged exactly once. A daemon recognises the line only while it still holds the
 * event: a restarted daemon starts empty, so a line the old one stored but never
 * acknowledged is stored by the new one too, and events the old one acknowledged are not
 * in the new one's history. docs/client.md spells this out.
 *
 * Conventions:
 * - Functions that return int return 0 (or a count where documented) on success and a
 *   negative errno value on failure. A function that fails leaves nothing half-done:
 *   a refused crewstream_post queues nothing, a failed crewstream_connect allocates
 *   nothing.
 * - Timeouts are in milliseconds: a negative value waits without limit, 0 does not
 *   block (one non-blocking pass of I/O), a positive value is the longest the call
 *   blocks, reconnection attempts included.
 * - The library starts no threads and installs no signal handlers; it writes with
 *   MSG_NOSIGNAL, so a broken socket never raises SIGPIPE. A client may be used by one
 *   thread at a time; distinct clients are independent.
 * - I/O happens only inside library calls: replies and pushes that arrive while the
 *   program is busy elsewhere wait in the socket until the next call.
 *
 * Error codes (negated):
 *   EINVAL        an argument is wrong: NULL where a value is needed, an event that is
 *                 not a JSON object, an object with an "op" member, an empty id.
 *   ENOMEM        out of memory.
 *   EMSGSIZE      the event's line would be longer than max_line_bytes.
 *   ENAMETOOLONG  the socket path does not fit in a Unix socket address (107 bytes).
 *   EAGAIN        crewstream_post: the window of unacknowledged lines is full and stayed
 *                 full for post_timeout_ms; nothing was queued.
 *   ETIMEDOUT     the timeout passed while the client was connected (the ack, answer
 *                 or pong did not arrive in time). Nothing is lost: the line stays
 *                 queued and a later call can still collect its ack.
 *   ENOENT, ECONNREFUSED, EACCES, ...
 *                 the connection could not be (re-)established: the error of the last
 *                 connect(2) attempt. crewstream_connect returns it at once; other calls
 *                 return it when their timeout passes while the client is disconnected.
 *   ENOTCONN      the timeout passed while disconnected before any reconnection attempt was
 *                 due (e.g. the connection broke during a call with timeout 0).
 *   EPIPE         the connection broke and the client was opened with no_reconnect.
 *   ERANGE        crewstream_wait: the ticket was never issued by this client, or its
 *                 ack is older than the retained history (see ack_history).
 *   ESRCH         crewstream_await_answer: the daemon does not know the request
 *                 (reply "not_found"; e.g. the daemon restarted and lost it).
 *   EPROTO        the daemon refused a command line of the library, or sent a line
 *                 the library cannot read; crewstream_last_error() says which.
 */
#ifndef CREWSTREAM_CLIENT_H
#define CREWSTREAM_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Marks the functions that libcrewstream exports; everything else stays hidden. */
#define CREWSTREAM_API __attribute__((visibility("default")))

/** The library's version, "MAJOR.MINOR.PATCH". */
#define CREWSTREAM_CLIENT_VERSION "0.1.0"

/** An open client: one connection (and its reconnections) to one daemon socket. */
typedef struct crewstream_client crewstream_client_t;

/**
 * Identifies one posted event within its client. Tickets start at 1 and grow by one
 * with every successful crewstream_post, so the order of tickets is the order of posts.
 */
typedef uint64_t crewstream_ticket_t;

/** The daemon's reply to one posted event. */
typedef struct crewstream_ack {
    /** The ticket this reply belongs to. */
    crewstream_ticket_t ticket;
    /** 1 when the event is stored (or was already stored: see duplicate), 0 when the daemon refused it. */
    int ok;
    /** 1 when the daemon already held an event with this event_id and type and acknowledged it again. */
    int duplicate;
    /**
     * 1 when the library sent the line more than once because a connection broke before its
     * reply arrived. A resent line that the daemon had stored before the break comes back with
     * duplicate set and its original seq: that is the exactly-once mechanism at work, not a second
     * post by the program.
     */
    int resent;
    /** The event's per-execution seq when ok, else 0. */
    uint64_t seq;
    /** The event's event_id (the one the program gave, or the UUID the library generated). */
    char event_id[129];
    /** When ok is 0: the daemon's error code ("invalid_field", "missing_field", ...), else "". */
    char error[32];
    /** When ok is 0: the daemon's explanation in words (cut to fit), else "". */
    char detail[256];
} crewstream_ack_t;

/**
 * A human's answer to a human_input_required request, as the daemon pushed it. The strings
 * belong to the structure: release them with crewstream_answer_clear().
 */
typedef struct crewstream_answer {
    /** The execution of the request. */
    char *execution_id;
    /** The event_id of the human_input_required event that was answered. */
    char *request_event_id;
    /** The request's task_id, or NULL when it has none. */
    char *task_id;
    /**
     * The answer's human_feedback: the string itself when it is a JSON string, its compact JSON
     * text when it is another JSON value, NULL when absent or null.
     */
    char *human_feedback;
    /** 1 approved, 0 rejected, -1 when the answer carries no boolean is_approve. */
    int is_approve;
    /** The event_id of the human_input_completed event that carried the answer. */
    char *event_id;
    /** The seq of the human_input_completed event. */
    uint64_t seq;
    /** The whole push line as the daemon sent it (one JSON object, no newline). */
    char *json;
} crewstream_answer_t;

/**
 * Called once for every ack as it is read (inside whichever library call reads it), in ticket
 * order. The ack is only valid during the call. The callback must not call functions of this
 * library on the same client, except crewstream_fd(), crewstream_pending(), crewstream_stats()
 * and crewstream_last_error().
 */
typedef void (*crewstream_ack_cb)(void *arg, const crewstream_ack_t *ack);

/**
 * Called once for every new answer pushed by the daemon (an answer the client has not seen
 * before), inside whichever library call reads it. The answer is only valid during the call and
 * stays available to crewstream_await_answer(). The same restrictions as for crewstream_ack_cb apply.
 */
typedef void (*crewstream_answer_cb)(void *arg, const crewstream_answer_t *answer);

/**
 * Options of crewstream_connect(). Zero-initialise the structure (or call crewstream_options_init)
 * and set what you need: every field's zero value means its default. Fields may be added at the
 * end in later versions; the reserved space keeps the structure's size.
 */
typedef struct crewstream_options {
    /**
     * The daemon's ingest socket. NULL or "": the environment variable CREWSTREAM_SOCKET when set
     * and not empty, else "$XDG_RUNTIME_DIR/crewstream.sock" when XDG_RUNTIME_DIR is set and not
     * empty, else "/tmp/crewstream.sock" (the daemon's own default). The string is copied.
     */
    const char *socket_path;
    /**
     * How long crewstream_connect() keeps trying (with backoff) when the daemon is not there yet.
     * 0 (default): one attempt, so a missing daemon is reported at once. Negative: without limit.
     */
    int connect_timeout_ms;
    /** The most lines that may be posted and not yet acknowledged. 0: 1024. */
    unsigned max_unacked;
    /**
     * How many acknowledged tickets keep their ack for crewstream_wait() after newer acks came in.
     * 0: the same as max_unacked.
     */
    unsigned ack_history;
    /**
     * How long crewstream_post() waits for room when the window is full, reading acks (and
     * reconnecting) meanwhile. 0: 30000 ms. Negative: do not wait: one non-blocking pass of I/O
     * (acks that already arrived make room), then -EAGAIN when the window is still full.
     */
    int post_timeout_ms;
    /** The first reconnection delay after a failed attempt; it doubles on every failure. 0: 50 ms. */
    int backoff_initial_ms;
    /** The longest reconnection delay. 0: 2000 ms. */
    int backoff_max_ms;
    /**
     * The longest event line the library sends (the daemon's limits.max_event_bytes), and the
     * longest line it accepts from the daemon (this plus 64 KiB). 0: 1 MiB.
     */
    size_t max_line_bytes;
    /** Nonzero: do not reconnect; a broken connection makes calls fail with -EPIPE. */
    int no_reconnect;
    /** Called for every ack; may be NULL. */
    crewstream_ack_cb on_ack;
    /** Passed to on_ack. */
    void *on_ack_arg;
    /** Called for every new human-input answer; may be NULL. */
    crewstream_answer_cb on_answer;
    /** Passed to on_answer. */
    void *on_answer_arg;
    /** Reserved for later fields; leave zero. */
    void *reserved[8];
} crewstream_options_t;

/** Counters of one client since crewstream_connect(). */
typedef struct crewstream_stats {
    /** Successful connections, the first one included: reconnections are connections - 1. */
    uint64_t connections;
    /** Events accepted by crewstream_post(). */
    uint64_t posted;
    /** Acks received (ok or refused); each ticket is acknowledged exactly once. */
    uint64_t acked;
    /** Acks with ok = 0. */
    uint64_t refused;
    /** Acks with duplicate = 1. */
    uint64_t duplicates;
    /** Event lines sent again after a reconnection. */
    uint64_t resent;
    /** Distinct human-input answers received. */
    uint64_t answers;
    /** Reserved for later counters. */
    uint64_t reserved[8];
} crewstream_stats_t;

/** Fills *opts with the defaults (all zero). NULL is accepted. */
CREWSTREAM_API void crewstream_options_init(crewstream_options_t *opts);

/**
 * Writes the default socket path (see crewstream_options_t.socket_path) into buf, NUL-terminated.
 * Returns its length, -ENAMETOOLONG when it does not fit in size bytes or in a socket address
 * (buf is then ""), or -EINVAL when buf is NULL.
 */
CREWSTREAM_API int crewstream_default_socket_path(char *buf, size_t size);

/**
 * Connects to the daemon and stores the new client in *out. opts may be NULL for all defaults.
 * Makes one attempt, or keeps trying for opts->connect_timeout_ms. Once connected, the client
 * reconnects by itself (unless no_reconnect). On failure *out is set to NULL, nothing stays
 * allocated, and the error of the last attempt is returned, e.g. -ENOENT (no socket at that
 * path), -ECONNREFUSED (a socket file nobody listens on), -EACCES; or -ENAMETOOLONG, -ENOMEM,
 * -EINVAL (out is NULL).
 */
CREWSTREAM_API int crewstream_connect(crewstream_client_t **out, const crewstream_options_t *opts);

/**
 * Closes the connection and frees the client. Lines not yet acknowledged and answers not yet
 * collected are dropped (a dropped line may or may not have been stored): call crewstream_flush()
 * first to keep them. NULL is accepted. Never call it from a callback.
 */
CREWSTREAM_API void crewstream_close(crewstream_client_t *c);

/**
 * Queues one event and writes as much as the socket takes, without waiting for the reply.
 * event_json is one JSON object (surrounding whitespace allowed); the library adds a lower-case
 * UUID v4 "event_id" as its first member when it has none, so that a resend after a reconnection
 * is idempotent, and sends the program's text otherwise untouched on one line (line breaks
 * between tokens become spaces). Objects with an "op" member are refused (-EINVAL): use
 * crewstream_ping() and crewstream_await_answer(). The daemon checks the fields; its refusal
 * comes back as an ack with ok = 0. When the window is full, waits as post_timeout_ms says.
 * A disconnected client queues the line and sends it after reconnecting. On success stores the
 * ticket in *ticket (which may be NULL) and returns 0. Fails with -EINVAL, -EMSGSIZE, -ENOMEM,
 * -EPIPE (no_reconnect, connection broken), -EAGAIN (window full for post_timeout_ms), or a
 * connect error (window full while disconnected); a failed post queues nothing and takes no
 * ticket. Otherwise it does not block: one non-blocking pass of I/O (which may call on_ack).
 */
CREWSTREAM_API int crewstream_post(crewstream_client_t *c, const char *event_json,
                                   crewstream_ticket_t *ticket);

/**
 * Waits up to timeout_ms for the ack of ticket and copies it into *ack (which may be NULL).
 * Returns 0 when the ack is in, whether the daemon stored the event or refused it (look at
 * ack->ok); since acks come in order, every earlier ticket is then acknowledged too. Returns
 * -ETIMEDOUT (or a connect error, see above) when it did not come in time (the line stays
 * queued); -ERANGE for a ticket that was never issued or whose ack is no longer retained (it is
 * kept until max_unacked + ack_history newer tickets are posted). A ticket may be waited for any
 * number of times.
 */
CREWSTREAM_API int crewstream_wait(crewstream_client_t *c, crewstream_ticket_t ticket, int timeout_ms,
                                   crewstream_ack_t *ack);

/**
 * Waits up to timeout_ms until every posted event is acknowledged. Returns 0 when none is
 * outstanding (refused events count as acknowledged; see on_ack or crewstream_stats()), else
 * -ETIMEDOUT, a connect error, or -EPIPE.
 */
CREWSTREAM_API int crewstream_flush(crewstream_client_t *c, int timeout_ms);

/**
 * Sends {"op":"ping"} behind everything already queued and waits up to timeout_ms for the pong
 * (sending the ping again on a new connection if the old one broke). Returns 0, -ETIMEDOUT, a
 * connect error, or -EPIPE. Since replies come in order, a 0 return also means every event posted
 * before is acknowledged.
 */
CREWSTREAM_API int crewstream_ping(crewstream_client_t *c, int timeout_ms);

/**
 * Blocks up to timeout_ms for the human's answer to the human_input_required event
 * request_event_id of execution execution_id, and fills *out (release it with
 * crewstream_answer_clear). An answer the client already received (pushed to it because it
 * posted the request, or after an earlier call) is returned at once; otherwise the library sends
 * {"op":"await"} and waits for the push. The request may still be unacknowledged in the window:
 * the await is sent behind it. After a reconnection the library sends await again for every
 * request still awaited. Returns 0, -ETIMEDOUT (the request stays awaited: a later call can still
 * get the answer), -ESRCH when the daemon does not know the request, -EINVAL for NULL or empty
 * arguments or ids the daemon refuses, or another error above. *out is zeroed first. The same
 * answer may be asked for again; it is returned each time.
 */
CREWSTREAM_API int crewstream_await_answer(crewstream_client_t *c, const char *execution_id,
                                           const char *request_event_id, int timeout_ms,
                                           crewstream_answer_t *out);

/** Frees the strings of *answer and zeroes it. NULL is accepted. */
CREWSTREAM_API void crewstream_answer_clear(crewstream_answer_t *answer);

/**
 * Does the client's pending I/O for timeout_ms (always that long; 0: one non-blocking pass): writes
 * queued lines, reads acks and pushes (calling on_ack and on_answer), reconnects when due. Returns
 * 0 when connected at the end, else the last connect error (-ENOTCONN when no attempt was due yet),
 * -EPIPE for a no_reconnect client whose connection broke, -EINVAL for NULL. For programs with
 * their own poll loop: poll crewstream_fd() and call this with timeout 0.
 */
CREWSTREAM_API int crewstream_process(crewstream_client_t *c, int timeout_ms);

/**
 * The connected socket's file descriptor, or -1 while disconnected; it changes with every
 * reconnection. For polling and for tests; do not read, write or close it. shutdown(2) on it
 * simulates a broken connection. Poll for POLLIN only: every call writes what the socket takes,
 * and the daemon answers each line it reads, which wakes the poll for the rest (POLLOUT would be
 * ready all the while written lines wait for their acks). While it is -1, call
 * crewstream_process() now and then so the client can reconnect. Does no I/O.
 */
CREWSTREAM_API int crewstream_fd(const crewstream_client_t *c);

/** The number of posted events not yet acknowledged (0 for NULL). Does no I/O. */
CREWSTREAM_API size_t crewstream_pending(const crewstream_client_t *c);

/** Copies the client's counters into *out (zeros for a NULL client). Does no I/O. */
CREWSTREAM_API void crewstream_stats(const crewstream_client_t *c, crewstream_stats_t *out);

/** The socket path this client connects to ("" for NULL). */
CREWSTREAM_API const char *crewstream_socket_path(const crewstream_client_t *c);

/**
 * A sentence about the client's last failure or connection event (e.g. "connect
 * /tmp/crewstream.sock: Connection refused"), "" when there was none. Valid until the next call.
 */
CREWSTREAM_API const char *crewstream_last_error(const crewstream_client_t *c);

/** A short English description of a return value of this library (0 or a negative errno); a static string. */
CREWSTREAM_API const char *crewstream_strerror(int err);

/*
 * The runtime side of the crew gateway (SPEC §9, docs/gateway.md): a runtime serves a crew, the daemon
 * pushes it kickoffs (POST /kickoff over HTTP), the runtime acknowledges each one before it runs it and
 * then posts the execution's events as usual. A kickoff not acknowledged in gateway.ack_timeout_s, or
 * whose connection broke first, goes to another runtime; once acknowledged it is this runtime's alone.
 */

/** One kickoff pushed by the daemon. The strings belong to the structure: crewstream_kickoff_clear(). */
typedef struct crewstream_kickoff {
    char *execution_id; /* the kickoff id the client got: post the run's events under it */
    char *crew;
    char *inputs_json; /* the inputs object, compact JSON */
    char *json;        /* the whole push line */
} crewstream_kickoff_t;

/**
 * Serves crew on this client's connection: at most concurrency kickoffs at once (1-4096), inputs the
 * names GET /inputs lists (n_inputs of them; inputs may be NULL when n_inputs is 0). The registration is
 * sent again on every reconnection; serving the same crew again updates it. Waits up to timeout_ms for
 * the daemon's word. Returns 0, -EINVAL (a bad argument, or the daemon refused it: crewstream_last_error()
 * says why), -ENOMEM, -ETIMEDOUT, a connect error, or -EPIPE.
 */
CREWSTREAM_API int crewstream_serve(crewstream_client_t *c, const char *crew, const char *const *inputs,
                                    size_t n_inputs, unsigned concurrency, int timeout_ms);

/**
 * Waits up to timeout_ms for the next kickoff pushed to this client and moves it into *out (its
 * strings are the caller's). Kickoffs pushed on a connection that broke before they were taken are
 * dropped: the daemon gives them out again. Returns 0, -ETIMEDOUT, a connect error, -EPIPE, -EINVAL.
 */
CREWSTREAM_API int crewstream_next_kickoff(crewstream_client_t *c, int timeout_ms, crewstream_kickoff_t *out);

/**
 * Acknowledges a kickoff and waits up to timeout_ms for the daemon's answer: run the crew only on 0.
 * -ESTALE: it was given to another runtime (the ack came after gateway.ack_timeout_s): do not run it;
 * -ESRCH: the daemon holds no such kickoff (finished, or a restarted daemon); else -ETIMEDOUT, a connect
 * error, -EPIPE, -EPROTO, -EINVAL, -ENOMEM. Sent again on a new connection if the old one broke.
 */
CREWSTREAM_API int crewstream_kickoff_ack(crewstream_client_t *c, const char *execution_id, int timeout_ms);

/** Frees what *k holds and zeroes it. NULL is accepted. */
CREWSTREAM_API void crewstream_kickoff_clear(crewstream_kickoff_t *k);

#ifdef __cplusplus
}
#endif

#endif
