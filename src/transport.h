/*
 * transport.h - the transports behind one small ops table.
 *
 * A transport is what serves clients on the TCP port: libmicrohttpd (http.c),
 * the native SSE writer (sse.c), libwebsockets (ws.c). Each is one file that
 * exports one cs_transport_ops_t; main.c lists them in one table, in the order
 * the listener offers them a request head, and calls each row to create it,
 * tick it, shut it down, count what it holds and free it. The listener knows
 * no transport by name: it offers the head to the rows in turn until one takes
 * the connection or refuses it. A new consumer (webhooks come next) is one file
 * and one row. nchan's subscriber_fn_t is the model.
 */
#ifndef CS_TRANSPORT_H
#define CS_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "daemon.h"

/** A connection whose request head is complete in its socket buffer, still unread, offered to a transport. */
typedef struct cs_offer {
    int fd;
    const struct sockaddr *addr;
    socklen_t addrlen;
    const char *head;   /* the peeked bytes, the complete head first (valid during the offer only) */
    size_t head_len;    /* the head's length, its blank line included */
    size_t peeked;      /* bytes peeked: more than head_len when something follows the head */
    int websocket;      /* the head asks for Upgrade: websocket (cs_head_scan) */
    const char *detail; /* set by a transport that refuses: the answer's detail (static storage) */
} cs_offer_t;

struct cs_transport_ops {
    const char *name;       /* "sse", "ws", "http": for logs */
    const char *gauge;      /* the /metrics gauge its count adds to ("http_streams") */
    const char *gauge_help; /* the gauge's HELP text (the first row of a gauge gives it) */
    /** Creates the transport (registered in d->loop); 0 or -errno with a message in err. */
    int (*create)(cs_daemon_t *d, void **self, char *err, size_t errlen);
    /**
     * Offers a connection: returns 1 when taken (the fd is the transport's from then on, closed by it on
     * failure), 0 to decline (the next row is asked; nothing is read from the socket), or an error value
     * (err.h) to refuse: the listener answers it (o->detail) and closes the connection.
     */
    int (*offer)(void *self, cs_offer_t *o);
    /** Housekeeping, every half second: heartbeats, stalls. */
    void (*tick)(void *self, int64_t now_mono_ms);
    /** Starts shutdown: streams end, WebSockets close. */
    void (*shutdown)(void *self);
    /** What a shutdown waits for: the streams, held polls and connections it serves. */
    size_t (*count)(const void *self);
    /** Frees everything (NULL self: nothing). */
    void (*destroy)(void *self);
};

/** The rows (main.c's table): libmicrohttpd, the native SSE writer, libwebsockets. */
extern const cs_transport_ops_t cs_http_transport;
extern const cs_transport_ops_t cs_sse_transport;
extern const cs_transport_ops_t cs_ws_transport;

/** Offers o to d's transports in order; returns what the one that answered said (1 or an error value),
 * or 0 when every one declined. *by gets the row's index (when not NULL and one answered). */
int cs_transport_offer(cs_daemon_t *d, cs_offer_t *o, size_t *by);

/** The sum of the counts of d's transports whose gauge is gauge (NULL: of all). */
size_t cs_transport_count(const cs_daemon_t *d, const char *gauge);

#endif
