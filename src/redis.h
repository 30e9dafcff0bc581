/*
 * redis.h - one connection to Redis, hiredis' redisAsyncContext driven by the daemon's own loop.
 *
 * hiredis 0.14 ships adapters for libev, libevent and libuv but none for a raw epoll loop; its event
 * hooks (ev.addRead, delRead, addWrite, delWrite, cleanup) are enough to drive it from cs_loop, as
 * nchan's redis_nginx_adapter.c does for nginx. hiredis 0.14 has no timeouts for an async context: we
 * keep our own (a reply must come within timeout_ms of the request, or of the previous reply while
 * requests are outstanding; else the connection is dropped and every request waiting on it fails).
 * A lost connection is made again with back-off (100 ms doubling to 5 s). No thread, nothing blocks.
 */
#ifndef CS_REDIS_H
#define CS_REDIS_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "loop.h"

typedef struct cs_redis cs_redis_t;

/** A reply, or NULL when the request failed (the connection was lost or timed out before the reply came):
 * its outcome is then unknown. The reply belongs to hiredis: read it during the call only. */
typedef void (*cs_redis_reply_cb)(cs_redis_t *r, const redisReply *reply, void *data);

/** The connection came up (up = 1: connected, CLIENT SETNAME sent) or went down (up = 0, why says what
 * happened). Requests may be made from it. */
typedef void (*cs_redis_state_cb)(cs_redis_t *r, int up, const char *why, void *data);

typedef struct cs_redis_opts {
    const char *addr; /* "unix:/path" or "redis://host:port" (config.c checks the form) */
    const char *name; /* CLIENT SETNAME (letters, digits, ._:-), or NULL */
    int timeout_ms;   /* a reply must come within it; 0: 2000 */
    cs_redis_state_cb on_state;
    void *data;
} cs_redis_opts_t;

typedef struct cs_redis_stats {
    uint64_t connects;  /* connections made */
    uint64_t losses;    /* connections lost (an error, Redis closed it, a timeout) */
    uint64_t timeouts;  /* of them: no reply in time */
    uint64_t requests;  /* requests sent */
    uint64_t failed;    /* requests that got no reply (NULL) */
    size_t outstanding; /* requests waiting for their reply now */
} cs_redis_stats_t;

/** Creates a connection on loop and starts connecting (at once; failures are retried with back-off).
 * o's strings are copied. Returns 0, -EINVAL (an address of another form) or -ENOMEM. */
int cs_redis_new(cs_redis_t **out, cs_loop_t *loop, const cs_redis_opts_t *o);

/** Closes the connection: every request still waiting gets its callback with NULL, on_state is not
 * called. Not from inside one of r's callbacks. */
void cs_redis_free(cs_redis_t *r);

/** Nonzero when connected. */
int cs_redis_up(const cs_redis_t *r);

/** What went wrong last ("" when nothing did). */
const char *cs_redis_error(const cs_redis_t *r);

/** The address as configured. */
const char *cs_redis_addr(const cs_redis_t *r);

/**
 * Sends one command (argv[0] its name; binary-safe arguments). cb is called exactly once, with the reply
 * or NULL. Returns 0, or -ENOTCONN (not connected) / -ENOMEM; when it fails, cb is never called.
 */
int cs_redis_command(cs_redis_t *r, cs_redis_reply_cb cb, void *data, int argc, const char **argv,
                     const size_t *argvlen);

/**
 * Sends one command the caller wrote in RESP itself (cmd[0, len): exactly one command, "*<argc>\r\n" then
 * "$<len>\r\n<bytes>\r\n" per argument): as cs_redis_command, without hiredis formatting each argument.
 */
int cs_redis_formatted(cs_redis_t *r, cs_redis_reply_cb cb, void *data, const char *cmd, size_t len);

/**
 * Subscribes to channel (the connection is then a pub/sub one: use it for nothing else). cb is called
 * with every reply of the subscription: the confirmation (["subscribe", channel, n]) and each message
 * (["message", channel, payload]), and once with NULL when the connection ends; subscribe again after
 * the next up. Returns 0, -ENOTCONN or -ENOMEM (then cb is never called).
 */
int cs_redis_subscribe(cs_redis_t *r, const char *channel, cs_redis_reply_cb cb, void *data);

/** Drops the connection now (as a timeout does: waiting requests get NULL) and connects again after the
 * back-off. For tests and for a caller that saw a protocol error. */
void cs_redis_reset(cs_redis_t *r, const char *why);

/** Fills *st. */
void cs_redis_stats(const cs_redis_t *r, cs_redis_stats_t *st);

#endif
