/*
 * curlm.h - libcurl's multi interface driven by the daemon's own loop: curl's sockets are cs_io
 * watches and its one timeout is a cs_timer (CURLMOPT_SOCKETFUNCTION / CURLMOPT_TIMERFUNCTION), so a
 * transfer costs no thread and no call on the loop ever blocks. Connections are kept alive and
 * reused by the multi handle's connection cache.
 */
#ifndef CS_CURLM_H
#define CS_CURLM_H

#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

#include "loop.h"

typedef struct cs_curlm cs_curlm_t;

/** Called once per finished transfer, after it left the multi handle: rc is curl's result, status the
 * HTTP status (0 when none came), data the transfer's CURLOPT_PRIVATE. The callee owns easy again
 * (it may clean it up or add it anew). */
typedef void (*cs_curlm_done_cb)(CURL *easy, CURLcode rc, long status, void *data);

/** Creates a multi handle on loop (curl_global_init is the caller's, once); returns 0 or -errno. */
int cs_curlm_new(cs_curlm_t **out, cs_loop_t *loop, cs_curlm_done_cb done);

/** Frees the multi handle; transfers still running are aborted (their done is not called) and left to
 * their owners (cs_curlm_remove each first to clean them up). */
void cs_curlm_free(cs_curlm_t *m);

/** Starts a transfer (set its options, CURLOPT_PRIVATE included, first). Returns 0 or -ENOMEM; when it
 * fails, done is never called for it. */
int cs_curlm_add(cs_curlm_t *m, CURL *easy);

/** Aborts a running transfer: done is not called for it, and the caller owns easy again. */
void cs_curlm_remove(cs_curlm_t *m, CURL *easy);

/** Transfers running now. */
size_t cs_curlm_running(const cs_curlm_t *m);

/** Loop time spent so far in curl's socket and timer actions, done callbacks included (what the requests
 * cost the loop after they were started), in nanoseconds. */
uint64_t cs_curlm_spent_ns(const cs_curlm_t *m);

/** The monotonic clock in nanoseconds (not the loop's cached ms: budgets measure work within a turn). */
uint64_t cs_curlm_clock_ns(void);

/** Applies the options every transfer gets: no signals, no redirects followed, HTTP(S) only,
 * keep-alive, connect and total timeouts (ms). Returns CURLE_OK or curl's error. */
CURLcode cs_curlm_easy_defaults(CURL *easy, long connect_ms, long total_ms);

#endif
