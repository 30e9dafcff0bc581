/*
 * example_crew.c - a crew runtime on libcrewstream: it posts the events of one run, asks a
 * person to approve the draft, blocks until the answer comes, and finishes the run with it.
 *
 *   cc example_crew.c -lcrewstream -o example_crew
 *   CREWSTREAM_SOCKET=/tmp/cs-doc.sock ./example_crew crew-run-1
 *
 * Exit status: 0 approved, 2 rejected, 1 an error.
 */
#include <crewstream/client.h>

#include <stdio.h>

/* Posts one event of execution x without waiting for its ack; extra is more JSON members or "". */
static int post_event(crewstream_client_t *c, const char *x, const char *type, const char *extra,
                      crewstream_ticket_t *ticket)
{
    char ev[1024];

    /* x and type are plain ids here; a real runtime builds its JSON with a JSON library. */
    snprintf(ev, sizeof(ev), "{\"execution_id\":\"%s\",\"type\":\"%s\"%s%s}", x, type, extra[0] ? "," : "",
             extra);
    int rc = crewstream_post(c, ev, ticket);
    if (rc < 0)
        fprintf(stderr, "post %s: %s (%s)\n", type, crewstream_strerror(rc), crewstream_last_error(c));
    return rc;
}

int main(int argc, char **argv)
{
    const char *x = argc > 1 ? argv[1] : "crew-run-1";
    crewstream_options_t o;
    crewstream_client_t *c;
    crewstream_ticket_t t;
    crewstream_ack_t ack;
    crewstream_answer_t ans;
    crewstream_stats_t st;
    int rc, approved;

    crewstream_options_init(&o); /* the socket: $CREWSTREAM_SOCKET, else the daemon's default */
    o.connect_timeout_ms = 5000; /* the daemon may still be starting */
    rc = crewstream_connect(&c, &o);
    if (rc < 0) {
        fprintf(stderr, "connect: %s\n", crewstream_strerror(rc));
        return 1;
    }

    /* The run so far: pipelined, no round trip per event. */
    if (post_event(c, x, "crew_kickoff_started", "\"crew_id\":\"writers\"", NULL) < 0 ||
        post_event(c, x, "task_started", "\"task_id\":\"draft\",\"agent_id\":\"writer\"", NULL) < 0 ||
        post_event(c, x, "tool_usage_finished", "\"task_id\":\"draft\",\"tool_name\":\"search\"", NULL) < 0 ||
        post_event(c, x, "task_completed", "\"task_id\":\"draft\",\"output\":\"Draft v1\"", NULL) < 0)
        goto fail;

    /* The question. Its ack carries the request's event_id; acks come in order, so every event
     * above is acknowledged too when it is in. */
    if (post_event(c, x, "human_input_required",
                   "\"task_id\":\"review\",\"agent_id\":\"editor\",\"prompt\":\"Publish draft v1?\"", &t) < 0)
        goto fail;
    rc = crewstream_wait(c, t, 10000, &ack);
    crewstream_stats(c, &st);
    if (rc < 0 || !ack.ok || st.refused > 0) {
        fprintf(stderr, "the daemon did not take the run: %s %s %s\n", rc < 0 ? crewstream_strerror(rc) : "",
                ack.error, ack.detail);
        goto fail;
    }
    printf("asked (seq %llu, request %s); waiting for a person\n", (unsigned long long)ack.seq, ack.event_id);
    fflush(stdout);

    /* Blocks until someone answers (the dashboard, curl, a WebSocket), for at most 30 minutes.
     * A broken connection or a daemon restart meanwhile is handled inside: see docs/client.md. */
    rc = crewstream_await_answer(c, x, ack.event_id, 30 * 60 * 1000, &ans);
    if (rc < 0) {
        fprintf(stderr, "no answer: %s\n", crewstream_strerror(rc));
        goto fail;
    }
    approved = ans.is_approve == 1;
    printf("%s: %s\n", approved ? "approved" : "rejected",
           ans.human_feedback ? ans.human_feedback : "(no feedback)");
    crewstream_answer_clear(&ans);

    /* The end of the run, then wait until the daemon has stored everything. */
    if (approved)
        rc = post_event(c, x, "crew_kickoff_completed", "\"result\":\"Draft v1 published\"", NULL);
    else
        rc = post_event(c, x, "crew_kickoff_failed", "\"error\":\"rejected by the reviewer\"", NULL);
    if (rc < 0 || (rc = crewstream_flush(c, 10000)) < 0) {
        fprintf(stderr, "finish: %s\n", crewstream_strerror(rc));
        goto fail;
    }
    crewstream_close(c);
    return approved ? 0 : 2;
fail:
    crewstream_close(c);
    return 1;
}
