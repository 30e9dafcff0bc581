/*
 * test_status.c - what the status machine and the human-input circle read (cs_status_reads_type)
 * against the names they dispatch on, so that the ingest fast path never takes an event they need
 * whole.
 */
#include "../../src/cursor.c"
#include "../../src/err.c"
#include "../../src/event.c"
#include "../../src/filter.c"
#include "../../src/hitl.c"
#include "../../src/log.c"
#include "../../src/status.c"
#include "../../src/store.c"

#include "ctest.h"

static int reads(const char *type)
{
    return cs_status_reads_type(type, strlen(type));
}

/* Every name status.c and hitl.c act on is reported. */
static void test_every_read_type_is_reported(void)
{
    size_t n = 0;

    for (int k = 0; k < N_KINDS; k++) {
        for (size_t i = 0; i < sizeof(kind_names[k]) / sizeof(kind_names[k][0]); i++) {
            const char *name = kind_names[k][i];
            if (name == NULL)
                continue;
            if (!reads(name))
                fprintf(stderr, "status.c reads \"%s\" but cs_status_reads_type does not report it\n", name);
            CHECK(reads(name));
            CHECK(is_kind(name, strlen(name), (enum kind)k));
            n++;
        }
        CHECK(kind_names[k][0] != NULL); /* no kind without a name */
    }
    CHECK(n >= 22);
    /* The store dispatches these two to hitl.c by name. */
    CHECK(reads("human_input_required"));
    CHECK(reads("human_input_completed"));
}

/* Ordinary types are not, and the match is by family but never by a shorter name. */
static void test_ordinary_types(void)
{
    static const char *const ordinary[] = {"log", "bench", "message", "llm.token",     "artifact",
                                           "run", "runs",  "crow",    "x.run.started", "Tool.called",
                                           "tas", "agen",  "human",   "human_in"};
    static const char *const family[] = {"run.paused",  "crew_kickoff_x", "task",     "task_x",
                                         "agent",       "agent.x",        "tool",     "tool_usage_finished",
                                         "human_input", "human_input_x",  "kickoff.x"};

    for (size_t i = 0; i < sizeof(ordinary) / sizeof(ordinary[0]); i++)
        CHECK(!reads(ordinary[i]));
    for (size_t i = 0; i < sizeof(family) / sizeof(family[0]); i++)
        CHECK(reads(family[i]));
    /* The length counts, not a NUL: a prefix of a family name is not the family. */
    CHECK(!cs_status_reads_type("run.started", 3));
    CHECK(cs_status_reads_type("run.started", 4));
}

/* An unreported type leaves status, progress, result and error as an event of no type at all would. */
static void test_unreported_types_read_nothing(void)
{
    cs_store_limits_t lim = {
        .ring_events = 8, .ring_bytes = 1 << 20, .max_bytes = 64 << 20, .retain_s = 10, .global_events = 16};
    cs_store_t *st;
    cs_publish_t pub;
    char detail[128];
    json_t *ev;
    cs_exec_t *ex;

    REQUIRE(cs_store_new(&st, &lim) == 0);
    ev = json_pack("{s:s, s:s, s:s, s:s, s:s}", "execution_id", "x", "type", "log", "result", "r", "error",
                   "e", "prompt", "p");
    REQUIRE(cs_store_publish(st, ev, 1768473002123LL, &pub, detail, sizeof(detail)) == CS_OK);
    json_decref(ev);
    ex = cs_store_find(st, "x", 1);
    REQUIRE(ex != NULL);
    CHECK(cs_exec_status(ex) == CS_EXEC_RUNNING);
    CHECK(ex->state.result == NULL);
    CHECK(ex->state.error_message == NULL);
    CHECK(ex->hitl.n == 0);
    CHECK(memcmp(&ex->state.progress, &(cs_progress_t){0}, sizeof(ex->state.progress)) == 0);
    cs_store_free(st);
}

/* Publishes {"execution_id": id, "type": type} plus "result" when given; returns the status after it. */
static cs_exec_status_t post(cs_store_t *st, const char *id, const char *type, const char *result)
{
    cs_publish_t pub;
    char detail[128];
    json_t *ev = json_pack("{s:s, s:s}", "execution_id", id, "type", type);

    if (result != NULL)
        json_object_set_new(ev, "result", json_string(result));
    CHECK(cs_store_publish(st, ev, 1768473002123LL, &pub, detail, sizeof(detail)) == CS_OK);
    json_decref(ev);
    cs_exec_t *ex = cs_store_find(st, id, strlen(id));
    REQUIRE(ex != NULL);
    return cs_exec_status(ex);
}

/* flow_* is the lifecycle too: a flow's crews end inside it, the flow's own end ends the run. */
static void test_flow_lifecycle(void)
{
    cs_store_limits_t lim = {
        .ring_events = 16, .ring_bytes = 1 << 20, .max_bytes = 64 << 20, .retain_s = 10, .global_events = 64};
    cs_store_t *st;

    REQUIRE(cs_store_new(&st, &lim) == 0);
    CHECK(reads("flow_started") && reads("flow_finished") && reads("flow_failed") && reads("flow_plot"));

    CHECK(post(st, "f1", "flow_started", NULL) == CS_EXEC_RUNNING);
    CHECK(post(st, "f1", "crew_kickoff_started", NULL) == CS_EXEC_RUNNING);
    CHECK(post(st, "f1", "crew_kickoff_completed", "step") == CS_EXEC_RUNNING);
    CHECK(post(st, "f1", "crew_kickoff_failed", NULL) == CS_EXEC_RUNNING);
    CHECK(post(st, "f1", "method_execution_finished", NULL) == CS_EXEC_RUNNING);
    CHECK(post(st, "f1", "flow_finished", "done") == CS_EXEC_COMPLETED);
    /* A kickoff handed to the cluster is pending until its runtime posts. */
    CHECK(reads("kickoff.requested") && !reads("kickoff") && !reads("kickoffs"));
    CHECK(post(st, "k1", "kickoff.requested", NULL) == CS_EXEC_PENDING);
    CHECK(post(st, "k1", "run.started", NULL) == CS_EXEC_RUNNING);
    cs_exec_t *ex = cs_store_find(st, "f1", 2);
    REQUIRE(ex != NULL);
    CHECK(json_is_string(ex->state.result) && strcmp(json_string_value(ex->state.result), "done") == 0);
    CHECK(post(st, "f1", "log", NULL) == CS_EXEC_COMPLETED);        /* an end stays an end */
    CHECK(post(st, "f1", "flow_started", NULL) == CS_EXEC_RUNNING); /* a retried flow begins again */
    CHECK(ex->state.result == NULL);

    CHECK(post(st, "f2", "flow_started", NULL) == CS_EXEC_RUNNING);
    CHECK(post(st, "f2", "flow_failed", NULL) == CS_EXEC_ERROR);
    ex = cs_store_find(st, "f2", 2);
    REQUIRE(ex != NULL);
    CHECK(ex->state.error_message != NULL);

    /* Without a flow a crew's end is the run's end, as before. */
    CHECK(post(st, "c1", "crew_kickoff_started", NULL) == CS_EXEC_RUNNING);
    CHECK(post(st, "c1", "crew_kickoff_completed", "r") == CS_EXEC_COMPLETED);
    cs_store_free(st);
}

int main(void)
{
    RUN(test_every_read_type_is_reported);
    RUN(test_ordinary_types);
    RUN(test_unreported_types_read_nothing);
    RUN(test_flow_lifecycle);
    CT_DONE();
}
