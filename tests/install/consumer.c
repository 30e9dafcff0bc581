/*
 * consumer.c - a program built against the installed libcrewstream only (tests/install): posts
 * one event to the daemon at argv[1] (its ingest socket) for execution argv[2] and checks that it
 * was stored. Exit 0 on success, 1 with a message otherwise.
 */
#include <stdio.h>
#include <string.h>

#include <crewstream/client.h>

int main(int argc, char **argv)
{
    crewstream_options_t opts;
    crewstream_client_t *c;
    crewstream_ticket_t ticket;
    crewstream_ack_t ack;
    char event[256];
    int rc;

    if (argc != 3) {
        fprintf(stderr, "usage: consumer SOCKET EXECUTION\n");
        return 2;
    }
    crewstream_options_init(&opts);
    opts.socket_path = argv[1];
    opts.connect_timeout_ms = 5000;
    if ((rc = crewstream_connect(&c, &opts)) != 0) {
        fprintf(stderr, "consumer: connect: %s\n", crewstream_strerror(rc));
        return 1;
    }
    snprintf(event, sizeof(event), "{\"execution_id\":\"%s\",\"type\":\"log\",\"message\":\"from %s\"}",
             argv[2], CREWSTREAM_CLIENT_VERSION);
    rc = crewstream_post(c, event, &ticket);
    if (rc == 0)
        rc = crewstream_wait(c, ticket, 5000, &ack);
    if (rc != 0 || !ack.ok) {
        fprintf(stderr, "consumer: post: %s %s\n", rc != 0 ? crewstream_strerror(rc) : "refused",
                rc != 0 ? "" : ack.error);
        crewstream_close(c);
        return 1;
    }
    printf("stored seq %llu\n", (unsigned long long)ack.seq);
    crewstream_close(c);
    return 0;
}
