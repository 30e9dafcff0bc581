/*
 * hookd - a webhook receiver for the tests and benchmarks: answers every request 200 "ok" with
 * keep-alive on 127.0.0.1, counts requests and body bytes, and prints them on SIGTERM/SIGINT.
 * It replaces nginx where only a fast receiver is needed (libmicrohttpd with its own epoll thread,
 * so it costs the daemon under test as little as nginx does and needs no system package).
 *
 *   hookd [PORT]    (0 or none: any free port; the first line on stdout is "port N")
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static atomic_uint_fast64_t requests, body_bytes;
static struct MHD_Response *ok;

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *data, size_t *data_len, void **state)
{
    (void)cls, (void)url, (void)method, (void)version, (void)data;
    if (*state == NULL) { /* the head: the body (if any) comes in the next calls */
        *state = conn;
        return MHD_YES;
    }
    if (*data_len > 0) {
        atomic_fetch_add(&body_bytes, *data_len);
        *data_len = 0;
        return MHD_YES;
    }
    atomic_fetch_add(&requests, 1);
    return MHD_queue_response(conn, MHD_HTTP_OK, ok);
}

int main(int argc, char **argv)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    const union MHD_DaemonInfo *di;
    struct MHD_Daemon *d;
    sigset_t set;
    int sig;

    sa.sin_port = htons(argc > 1 ? (uint16_t)atoi(argv[1]) : 0);
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* before MHD's thread starts: it inherits the mask */
    ok = MHD_create_response_from_buffer(2, (void *)"ok", MHD_RESPMEM_PERSISTENT);
    d = MHD_start_daemon(MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_TURBO | MHD_USE_ERROR_LOG, 0, NULL, NULL,
                         on_request, NULL, MHD_OPTION_SOCK_ADDR, &sa, MHD_OPTION_CONNECTION_LIMIT, 4096u,
                         MHD_OPTION_CONNECTION_TIMEOUT, 0u, MHD_OPTION_END);
    if (ok == NULL || d == NULL) {
        fprintf(stderr, "hookd: cannot listen on 127.0.0.1:%u\n", (unsigned)ntohs(sa.sin_port));
        return 1;
    }
    di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    printf("port %u\n", di != NULL ? (unsigned)di->port : 0u);
    fflush(stdout);
    sigwait(&set, &sig);
    MHD_stop_daemon(d);
    MHD_destroy_response(ok);
    printf("requests %" PRIuFAST64 " body_bytes %" PRIuFAST64 "\n", atomic_load(&requests),
           atomic_load(&body_bytes));
    return 0;
}
