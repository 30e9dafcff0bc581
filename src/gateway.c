/*
 * gateway.c - see gateway.h.
 *
 * Crews are found by name, connections by pointer, jobs by execution id (uthash). A job is in exactly
 * one place: its crew's queue (kept in kickoff order, so a job that comes back is served before younger
 * ones), or the job list of the serving it was offered to or that acknowledged it. A crew lives while it
 * has a serving or a queued job.
 */
#include "gateway.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uthash.h>
#include <utlist.h>

#include "event.h"

typedef struct gw_crew gw_crew_t;
typedef struct gw_conn gw_conn_t;
typedef struct gw_serving gw_serving_t;
typedef struct gw_job gw_job_t;

typedef enum job_state { JOB_QUEUED = 0, JOB_OFFERED, JOB_ACKED } job_state_t;

struct gw_job {
    char id[37];
    uint64_t order; /* kickoff order: the queue is sorted by it */
    gw_crew_t *crew;
    json_t *inputs;
    job_state_t state;
    gw_serving_t *serving; /* JOB_OFFERED, JOB_ACKED */
    uint64_t avoid;        /* the serving whose ack timed out: another one first */
    int64_t queued_at;     /* when it entered the queue (last time) */
    int64_t deadline;      /* JOB_OFFERED: the ack timeout */
    UT_hash_handle hh;
    gw_job_t *prev, *next; /* in its crew's queue or its serving's list */
};

struct gw_serving {
    uint64_t id;
    gw_conn_t *conn;
    gw_crew_t *crew;
    unsigned concurrency, busy;
    int broken;                  /* a push to it failed: its connection is on its way out, offer it nothing */
    uint64_t last_dispatch;      /* dispatch round: among equals, the one served longest ago first */
    gw_job_t *jobs;              /* offered and acknowledged */
    gw_serving_t *prev, *next;   /* in its crew */
    gw_serving_t *cprev, *cnext; /* in its connection */
};

struct gw_conn {
    void *conn;
    gw_serving_t *servings;
    UT_hash_handle hh;
};

struct gw_crew {
    char *name;
    json_t *inputs; /* array of names, from the newest serve */
    gw_serving_t *servings;
    size_t n_servings;
    gw_job_t *queue;
    size_t n_queued;
    int64_t unserved_since; /* when it last had no serving (its creation, or its last serving's end) */
    UT_hash_handle hh;
};

struct cs_gateway {
    cs_gateway_ops_t ops;
    cs_gateway_limits_t lim;
    gw_crew_t *crews;
    gw_conn_t *conns;
    gw_job_t *jobs;
    uint64_t next_order, next_serving, rounds;
    cs_gateway_stats_t st;
};

static void changed(cs_gateway_t *gw)
{
    if (gw->ops.changed != NULL)
        gw->ops.changed(gw->ops.data);
}

static int valid_name(const char *s, size_t n, size_t max)
{
    if (n == 0 || n > max)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == ':' || c == '-'))
            return 0;
    }
    return 1;
}

/* ---- crews and jobs ---- */

static gw_crew_t *crew_find(const cs_gateway_t *gw, const char *name)
{
    gw_crew_t *c = NULL;
    HASH_FIND_STR(gw->crews, name, c);
    return c;
}

static gw_crew_t *crew_get(cs_gateway_t *gw, const char *name, int64_t now)
{
    gw_crew_t *c = crew_find(gw, name);

    if (c != NULL)
        return c;
    c = calloc(1, sizeof(*c));
    if (c == NULL || (c->name = strdup(name)) == NULL || (c->inputs = json_array()) == NULL) {
        if (c != NULL)
            free(c->name);
        free(c);
        return NULL;
    }
    c->unserved_since = now;
    HASH_ADD_KEYPTR(hh, gw->crews, c->name, strlen(c->name), c);
    gw->st.crews++;
    return c;
}

/* Frees c once nothing needs it: no serving, no queued job. */
static void crew_maybe_free(cs_gateway_t *gw, gw_crew_t *c)
{
    if (c->n_servings > 0 || c->n_queued > 0)
        return;
    HASH_DEL(gw->crews, c);
    gw->st.crews--;
    json_decref(c->inputs);
    free(c->name);
    free(c);
}

static void job_free(cs_gateway_t *gw, gw_job_t *j)
{
    HASH_DEL(gw->jobs, j);
    json_decref(j->inputs);
    free(j);
}

/* Puts j into its crew's queue in kickoff order (a job that comes back goes before younger ones). */
static void queue_insert(cs_gateway_t *gw, gw_crew_t *c, gw_job_t *j, int64_t now)
{
    gw_job_t *at = c->queue;

    j->state = JOB_QUEUED;
    j->crew = c;
    j->serving = NULL;
    j->queued_at = now;
    while (at != NULL && at->order < j->order)
        at = at->next;
    if (at == NULL)
        DL_APPEND(c->queue, j);
    else
        DL_PREPEND_ELEM(c->queue, at, j);
    c->n_queued++;
    gw->st.queued++;
}

static void queue_remove(cs_gateway_t *gw, gw_job_t *j)
{
    DL_DELETE(j->crew->queue, j);
    j->crew->n_queued--;
    gw->st.queued--;
}

/* Takes j off its serving (offered or acknowledged): the serving is that much less busy. */
static void serving_drop_job(cs_gateway_t *gw, gw_job_t *j)
{
    gw_serving_t *s = j->serving;

    DL_DELETE(s->jobs, j);
    if (s->busy > 0)
        s->busy--;
    if (j->state == JOB_OFFERED)
        gw->st.offered--;
    else
        gw->st.running--;
    j->serving = NULL;
}

/* ---- dispatch ---- */

/* The serving of c with free concurrency that is least busy (not avoid, unless it alone is free). */
static gw_serving_t *pick_serving(gw_crew_t *c, uint64_t avoid)
{
    gw_serving_t *best = NULL, *fallback = NULL;

    for (gw_serving_t *s = c->servings; s != NULL; s = s->next) {
        if (s->busy >= s->concurrency || s->broken)
            continue;
        if (s->id == avoid) {
            fallback = s;
            continue;
        }
        if (best == NULL || s->busy < best->busy ||
            (s->busy == best->busy && (s->concurrency - s->busy > best->concurrency - best->busy ||
                                       (s->concurrency - s->busy == best->concurrency - best->busy &&
                                        s->last_dispatch < best->last_dispatch))))
            best = s;
    }
    return best != NULL ? best : fallback;
}

/* Pushes {"op":"kickoff",…} of j to s. Returns 0 or the push's error. */
static int push_kickoff(cs_gateway_t *gw, gw_serving_t *s, gw_job_t *j)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:O}", "op", "kickoff", "execution_id", j->id, "crew",
                          j->crew->name, "inputs", j->inputs);
    char *line = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    int rc = -ENOMEM;

    json_decref(o);
    if (line != NULL) {
        size_t n = strlen(line);
        char *l2 = realloc(line, n + 2);
        if (l2 != NULL) {
            line = l2;
            line[n] = '\n';
            line[n + 1] = '\0';
            rc = gw->ops.push(gw->ops.data, s->conn->conn, line, n + 1);
        }
    }
    free(line);
    return rc;
}

/* Gives c's queued jobs to its servings with free concurrency, oldest job first. */
static void dispatch(cs_gateway_t *gw, gw_crew_t *c, int64_t now)
{
    int moved = 0;

    while (c->queue != NULL) {
        gw_job_t *j = c->queue;
        gw_serving_t *s = pick_serving(c, j->avoid);
        if (s == NULL)
            break;
        queue_remove(gw, j);
        if (push_kickoff(gw, s, j) != 0) {
            /* That connection cannot take it (it is being closed, or out of memory): back to the queue;
             * its end (cs_gateway_conn_gone) or the next event dispatches again. */
            gw->st.push_failures++;
            queue_insert(gw, c, j, j->queued_at);
            s->broken = 1;
            continue;
        }
        j->state = JOB_OFFERED;
        j->serving = s;
        j->deadline = now + gw->lim.ack_timeout_ms;
        DL_APPEND(s->jobs, j);
        s->busy++;
        s->last_dispatch = ++gw->rounds;
        gw->st.offered++;
        gw->st.dispatched++;
        moved = 1;
    }
    if (moved)
        changed(gw);
}

/* ---- public ---- */

int cs_gateway_new(cs_gateway_t **out, const cs_gateway_ops_t *ops, const cs_gateway_limits_t *limits)
{
    cs_gateway_t *gw = calloc(1, sizeof(*gw));

    if (gw == NULL)
        return -ENOMEM;
    gw->ops = *ops;
    gw->lim = *limits;
    *out = gw;
    return 0;
}

void cs_gateway_free(cs_gateway_t *gw)
{
    gw_crew_t *c, *ct;
    gw_conn_t *k, *kt;
    gw_job_t *j, *jt;

    if (gw == NULL)
        return;
    HASH_ITER(hh, gw->jobs, j, jt)
    {
        job_free(gw, j);
    }
    HASH_ITER(hh, gw->conns, k, kt)
    {
        while (k->servings != NULL) {
            gw_serving_t *s = k->servings;
            DL_DELETE2(k->servings, s, cprev, cnext);
            free(s);
        }
        HASH_DEL(gw->conns, k);
        free(k);
    }
    HASH_ITER(hh, gw->crews, c, ct)
    {
        HASH_DEL(gw->crews, c);
        json_decref(c->inputs);
        free(c->name);
        free(c);
    }
    free(gw);
}

void cs_gateway_set_limits(cs_gateway_t *gw, const cs_gateway_limits_t *limits)
{
    if (gw->lim.ack_timeout_ms != limits->ack_timeout_ms ||
        gw->lim.queue_timeout_ms != limits->queue_timeout_ms) {
        gw->lim = *limits;
        changed(gw);
    }
    gw->lim = *limits;
}

cs_err_t cs_gateway_serve(cs_gateway_t *gw, void *conn, const json_t *jcrew, const json_t *inputs,
                          const json_t *jconc, int64_t now, char *detail, size_t detail_len)
{
    const char *name = json_string_value(jcrew);
    json_int_t conc = 1;
    json_t *names = NULL;
    gw_conn_t *k = NULL;
    gw_serving_t *s = NULL;
    gw_crew_t *c;

    if (name == NULL) {
        snprintf(detail, detail_len, "serve needs \"crew\": the name of the crew this connection runs");
        return CS_ERR_MISSING_FIELD;
    }
    if (!valid_name(name, json_string_length(jcrew), CS_GATEWAY_CREW_MAX)) {
        snprintf(detail, detail_len, "crew must be 1-%d characters of [A-Za-z0-9._:-]", CS_GATEWAY_CREW_MAX);
        return CS_ERR_INVALID_FIELD;
    }
    if (jconc != NULL) {
        if (!json_is_integer(jconc) || json_integer_value(jconc) < 1 ||
            json_integer_value(jconc) > CS_GATEWAY_CONCURRENCY_MAX) {
            snprintf(detail, detail_len, "concurrency must be an integer from 1 to %d (kickoffs run at once)",
                     CS_GATEWAY_CONCURRENCY_MAX);
            return CS_ERR_INVALID_FIELD;
        }
        conc = json_integer_value(jconc);
    }
    if (inputs != NULL && !json_is_null(inputs)) {
        size_t i;
        json_t *v;
        if (!json_is_array(inputs) || json_array_size(inputs) > CS_GATEWAY_INPUTS_MAX) {
            snprintf(detail, detail_len, "inputs must be an array of at most %d input names",
                     CS_GATEWAY_INPUTS_MAX);
            return CS_ERR_INVALID_FIELD;
        }
        json_array_foreach(inputs, i, v)
        {
            if (!json_is_string(v) || json_string_length(v) == 0 ||
                json_string_length(v) > CS_GATEWAY_INPUT_NAME_MAX ||
                strlen(json_string_value(v)) != json_string_length(v)) {
                snprintf(detail, detail_len, "inputs[%zu] must be a name of 1-%d bytes", i,
                         CS_GATEWAY_INPUT_NAME_MAX);
                return CS_ERR_INVALID_FIELD;
            }
        }
        names = json_deep_copy(inputs);
    } else {
        names = json_array();
    }
    if (names == NULL)
        goto nomem;
    c = crew_get(gw, name, now);
    if (c == NULL)
        goto nomem;
    HASH_FIND_PTR(gw->conns, &conn, k);
    if (k == NULL) {
        if ((k = calloc(1, sizeof(*k))) == NULL) {
            crew_maybe_free(gw, c);
            goto nomem;
        }
        k->conn = conn;
        HASH_ADD_PTR(gw->conns, conn, k);
    }
    for (s = k->servings; s != NULL && s->crew != c; s = s->cnext)
        ;
    if (s == NULL) {
        if ((s = calloc(1, sizeof(*s))) == NULL) {
            if (k->servings == NULL) {
                HASH_DEL(gw->conns, k);
                free(k);
            }
            crew_maybe_free(gw, c);
            goto nomem;
        }
        s->id = ++gw->next_serving;
        s->conn = k;
        s->crew = c;
        DL_APPEND(c->servings, s);
        DL_APPEND2(k->servings, s, cprev, cnext);
        c->n_servings++;
        gw->st.runtimes++;
    }
    s->concurrency = (unsigned)conc;
    json_decref(c->inputs);
    c->inputs = names;
    dispatch(gw, c, now);
    return CS_OK;

nomem:
    json_decref(names);
    snprintf(detail, detail_len, "out of memory: the crew is not served; send serve again");
    return CS_ERR_INTERNAL;
}

cs_err_t cs_gateway_ack(cs_gateway_t *gw, void *conn, const char *id, int64_t now, char *detail,
                        size_t detail_len)
{
    gw_job_t *j = NULL;

    HASH_FIND_STR(gw->jobs, id, j);
    if (j == NULL) {
        gw->st.acks_refused++;
        snprintf(detail, detail_len, "no kickoff %.128s waits for an ack (unknown, or finished)", id);
        return CS_ERR_NOT_FOUND;
    }
    if (j->state != JOB_QUEUED) {
        if (j->serving->conn->conn == conn) {
            if (j->state == JOB_OFFERED) {
                j->state = JOB_ACKED;
                gw->st.offered--;
                gw->st.running++;
                gw->st.acked++;
                changed(gw);
            }
            return CS_OK;
        }
        gw->st.acks_refused++;
        snprintf(
            detail, detail_len,
            "kickoff %.128s was given to another runtime (no ack within gateway.ack_timeout_s): do not run "
            "it",
            id);
        return CS_ERR_CONFLICT;
    }
    /* Back in the queue (its ack came late) and given to nobody else yet: conn may still take it, if it
     * serves the crew. */
    gw_conn_t *k = NULL;
    gw_serving_t *s = NULL;
    HASH_FIND_PTR(gw->conns, &conn, k);
    for (s = k != NULL ? k->servings : NULL; s != NULL && s->crew != j->crew; s = s->cnext)
        ;
    if (s == NULL) {
        gw->st.acks_refused++;
        snprintf(detail, detail_len, "kickoff %.128s was not given to this connection: do not run it", id);
        return CS_ERR_CONFLICT;
    }
    gw_crew_t *c = j->crew;
    queue_remove(gw, j);
    j->state = JOB_ACKED;
    j->serving = s;
    DL_APPEND(s->jobs, j);
    s->busy++;
    gw->st.running++;
    gw->st.acked++;
    (void)now;
    crew_maybe_free(gw, c); /* it has s: stays */
    changed(gw);
    return CS_OK;
}

void cs_gateway_conn_gone(cs_gateway_t *gw, void *conn, int64_t now)
{
    gw_conn_t *k = NULL;

    HASH_FIND_PTR(gw->conns, &conn, k);
    if (k == NULL)
        return;
    HASH_DEL(gw->conns, k);
    while (k->servings != NULL) {
        gw_serving_t *s = k->servings;
        gw_crew_t *c = s->crew;
        while (s->jobs != NULL) {
            gw_job_t *j = s->jobs;
            job_state_t was = j->state;
            serving_drop_job(gw, j);
            if (was == JOB_OFFERED) {
                gw->st.redispatched_lost++;
                queue_insert(gw, c, j, now);
            } else {
                /* Acknowledged: the runtime's own, never run again (its events stop here). */
                gw->st.lost_after_ack++;
                job_free(gw, j);
            }
        }
        DL_DELETE2(k->servings, s, cprev, cnext);
        DL_DELETE(c->servings, s);
        c->n_servings--;
        gw->st.runtimes--;
        free(s);
        if (c->n_servings == 0)
            c->unserved_since = now;
        dispatch(gw, c, now);
        crew_maybe_free(gw, c);
    }
    free(k);
    changed(gw);
}

const char *cs_gateway_pick_crew(cs_gateway_t *gw, const char *crew, const char *default_crew, cs_err_t *e,
                                 char *detail, size_t detail_len)
{
    gw_crew_t *c, *ct, *only = NULL;
    size_t served = 0;

    if (crew == NULL)
        crew = default_crew;
    if (crew != NULL) {
        if (!valid_name(crew, strlen(crew), CS_GATEWAY_CREW_MAX)) {
            *e = CS_ERR_INVALID_FIELD;
            snprintf(detail, detail_len, "crew must be 1-%d characters of [A-Za-z0-9._:-]",
                     CS_GATEWAY_CREW_MAX);
            return NULL;
        }
        return crew;
    }
    HASH_ITER(hh, gw->crews, c, ct)
    {
        if (c->n_servings > 0) {
            served++;
            only = c;
        }
    }
    if (served == 1)
        return only->name;
    if (served == 0) {
        *e = CS_ERR_UNAVAILABLE;
        snprintf(
            detail, detail_len,
            "no runtime serves a crew now, and gateway.default_crew is not set: name the crew (\"crew\")");
        return NULL;
    }
    *e = CS_ERR_MISSING_FIELD;
    snprintf(detail, detail_len,
             "crew: %zu crews are served (GET /v1/crews) and gateway.default_crew is not set: "
             "name one",
             served);
    return NULL;
}

cs_err_t cs_gateway_admit(cs_gateway_t *gw, const char *crew, const json_t *inputs, char *detail,
                          size_t detail_len)
{
    gw_crew_t *c = crew_find(gw, crew);

    if (!json_is_object(inputs)) {
        snprintf(detail, detail_len, "inputs must be an object of input names and values");
        return CS_ERR_INVALID_FIELD;
    }
    if (c != NULL) {
        size_t i;
        json_t *v;
        json_array_foreach(c->inputs, i, v)
        {
            if (json_object_get(inputs, json_string_value(v)) == NULL) {
                snprintf(detail, detail_len,
                         "inputs: \"%.128s\" is missing (GET /inputs lists what crew %.128s takes)",
                         json_string_value(v), c->name);
                return CS_ERR_INVALID_FIELD;
            }
        }
    }
    if ((c == NULL || c->n_servings == 0) && gw->lim.queue_timeout_ms <= 0) {
        gw->st.refused_unknown++;
        snprintf(detail, detail_len, "no runtime serves crew %.128s (and gateway.queue_timeout_s is 0)",
                 crew);
        return CS_ERR_UNAVAILABLE;
    }
    /* Admitted when it can run now, or when the queue has room. */
    if ((c == NULL || pick_serving(c, 0) == NULL || c->queue != NULL) && gw->st.queued >= gw->lim.queue) {
        gw->st.refused_full++;
        snprintf(detail, detail_len,
                 "%zu kickoffs wait already (gateway.queue) and no runtime of crew %.128s is free: try again "
                 "later",
                 gw->st.queued, crew);
        return CS_ERR_UNAVAILABLE;
    }
    return CS_OK;
}

cs_err_t cs_gateway_kickoff(cs_gateway_t *gw, const char *crew, const json_t *inputs, int64_t now,
                            char id[37], char *detail, size_t detail_len)
{
    gw_crew_t *c;
    gw_job_t *j = NULL;
    int created = 0;
    cs_err_t e = cs_gateway_admit(gw, crew, inputs, detail, detail_len);

    if (e != CS_OK)
        return e;
    if (id[0] != '\0') {
        HASH_FIND_STR(gw->jobs, id, j);
        if (j != NULL || !cs_valid_execution_id(id, strlen(id))) {
            snprintf(detail, detail_len, "kickoff %.36s exists already", id);
            return CS_ERR_CONFLICT;
        }
    }
    c = crew_find(gw, crew);
    if ((c == NULL || c->n_servings == 0) && gw->ops.remote != NULL) {
        /* Nobody serves the crew here: the cluster may (ops->remote). */
        char xid[37];
        if (id[0] != '\0')
            memcpy(xid, id, sizeof(xid));
        else if (cs_uuid4(xid) != 0)
            goto nomem;
        int r = gw->ops.remote(gw->ops.data, xid, crew, inputs, detail, detail_len);
        if (r < 0)
            return CS_ERR_UNAVAILABLE;
        if (r > 0) {
            memcpy(id, xid, sizeof(xid));
            gw->st.kickoffs++;
            gw->st.remote++;
            return CS_OK;
        }
        if (id[0] == '\0')
            memcpy(id, xid, sizeof(xid)); /* queued here under the id drawn */
    }
    if (c == NULL) {
        if ((c = crew_get(gw, crew, now)) == NULL)
            goto nomem;
        created = 1;
    }
    if ((j = calloc(1, sizeof(*j))) == NULL)
        goto nomem_crew;
    if (id[0] != '\0')
        memcpy(j->id, id, 37);
    else if (cs_uuid4(j->id) != 0)
        j->id[0] = '\0';
    if (j->id[0] == '\0' || (j->inputs = json_deep_copy(inputs)) == NULL) {
        free(j);
        goto nomem_crew;
    }
    j->order = ++gw->next_order;
    HASH_ADD_STR(gw->jobs, id, j);
    memcpy(id, j->id, sizeof(j->id));
    gw->st.kickoffs++;
    queue_insert(gw, c, j, now);
    dispatch(gw, c, now);
    changed(gw);
    return CS_OK;

nomem_crew:
    if (created)
        crew_maybe_free(gw, c);
nomem:
    snprintf(detail, detail_len, "out of memory: nothing was started");
    return CS_ERR_INTERNAL;
}

void cs_gateway_finished(cs_gateway_t *gw, const char *id, size_t len, int64_t now)
{
    gw_job_t *j = NULL;
    gw_crew_t *c;

    HASH_FIND(hh, gw->jobs, id, len, j);
    if (j == NULL)
        return;
    gw->st.finished++;
    if (j->state == JOB_QUEUED) {
        c = j->crew;
        queue_remove(gw, j);
        job_free(gw, j);
        crew_maybe_free(gw, c);
        changed(gw);
        return;
    }
    c = j->serving->crew;
    serving_drop_job(gw, j);
    job_free(gw, j);
    dispatch(gw, c, now);
    changed(gw);
}

int cs_gateway_serves(const cs_gateway_t *gw, const char *crew)
{
    const gw_crew_t *c = crew_find(gw, crew);
    return c != NULL && c->n_servings > 0;
}

int cs_gateway_holds(const cs_gateway_t *gw, const char *id, size_t len)
{
    gw_job_t *j = NULL;
    HASH_FIND(hh, gw->jobs, id, len, j);
    return j != NULL;
}

/* When j's queue timeout falls (its crew served by nobody), or -1. */
static int64_t queue_deadline(const cs_gateway_t *gw, const gw_job_t *j)
{
    const gw_crew_t *c = j->crew;
    if (c->n_servings > 0)
        return -1;
    return (j->queued_at > c->unserved_since ? j->queued_at : c->unserved_since) + gw->lim.queue_timeout_ms;
}

void cs_gateway_tick(cs_gateway_t *gw, int64_t now)
{
    gw_crew_t *c, *ct;
    gw_job_t *j, *jt;
    int any = 0;

    /* Ack timeouts: back to the queue, another runtime first. */
    HASH_ITER(hh, gw->jobs, j, jt)
    {
        if (j->state == JOB_OFFERED && j->deadline <= now) {
            gw_serving_t *s = j->serving;
            gw_crew_t *sc = s->crew;
            serving_drop_job(gw, j);
            j->avoid = s->id;
            gw->st.redispatched_timeout++;
            queue_insert(gw, sc, j, now);
            any = 1;
        }
    }
    HASH_ITER(hh, gw->crews, c, ct)
    {
        if (c->n_servings == 0) {
            /* Queue timeouts: nobody served the crew for gateway.queue_timeout_s. */
            gw_job_t *q, *qt;
            DL_FOREACH_SAFE(c->queue, q, qt)
            {
                int64_t dl = queue_deadline(gw, q);
                if (dl < 0 || dl > now)
                    continue;
                char why[300];
                snprintf(why, sizeof(why),
                         "no runtime served crew %.128s within gateway.queue_timeout_s (%lld s): the kickoff "
                         "was not run",
                         c->name, (long long)(gw->lim.queue_timeout_ms / 1000));
                queue_remove(gw, q);
                gw->st.queue_timeouts++;
                char xid[37];
                memcpy(xid, q->id, sizeof(xid));
                job_free(gw, q);
                gw->ops.failed(gw->ops.data, xid, c->name, why);
                any = 1;
            }
            crew_maybe_free(gw, c);
        } else if (c->queue != NULL) {
            dispatch(gw, c, now);
        }
    }
    if (any)
        changed(gw);
}

int64_t cs_gateway_next_deadline(const cs_gateway_t *gw)
{
    int64_t best = -1;
    const gw_job_t *j, *jt;

    HASH_ITER(hh, gw->jobs, j, jt)
    {
        int64_t dl = j->state == JOB_OFFERED  ? j->deadline
                     : j->state == JOB_QUEUED ? queue_deadline(gw, j)
                                              : -1;
        if (dl >= 0 && (best < 0 || dl < best))
            best = dl;
    }
    return best;
}

json_t *cs_gateway_inputs_json(const cs_gateway_t *gw, const char *crew)
{
    const gw_crew_t *c = crew_find(gw, crew);
    if (c == NULL)
        return json_pack("{s:[]}", "inputs");
    return json_pack("{s:O}", "inputs", c->inputs);
}

static int by_name(const void *a, const void *b)
{
    return strcmp((*(gw_crew_t *const *)a)->name, (*(gw_crew_t *const *)b)->name);
}

json_t *cs_gateway_crews_json(const cs_gateway_t *gw)
{
    size_t n = HASH_COUNT(gw->crews), i = 0;
    gw_crew_t **v = calloc(n + 1, sizeof(*v)), *c, *ct;
    json_t *arr = json_array();

    if (v == NULL || arr == NULL)
        goto fail;
    HASH_ITER(hh, gw->crews, c, ct)
    {
        v[i++] = c;
    }
    qsort(v, n, sizeof(*v), by_name);
    for (i = 0; i < n; i++) {
        unsigned conc = 0, busy = 0;
        json_t *rts = json_array();
        c = v[i];
        if (rts == NULL)
            goto fail;
        for (gw_serving_t *s = c->servings; s != NULL; s = s->next) {
            conc += s->concurrency;
            busy += s->busy;
            if (json_array_append_new(rts, json_pack("{s:I, s:I, s:I}", "id", (json_int_t)s->id,
                                                     "concurrency", (json_int_t)s->concurrency, "busy",
                                                     (json_int_t)s->busy)) != 0) {
                json_decref(rts);
                goto fail;
            }
        }
        if (json_array_append_new(arr, json_pack("{s:s, s:O, s:o, s:I, s:I, s:I}", "crew", c->name, "inputs",
                                                 c->inputs, "runtimes", rts, "concurrency", (json_int_t)conc,
                                                 "busy", (json_int_t)busy, "queued",
                                                 (json_int_t)c->n_queued)) != 0)
            goto fail;
    }
    free(v);
    return json_pack("{s:o, s:I}", "crews", arr, "queued", (json_int_t)gw->st.queued);

fail:
    free(v);
    json_decref(arr);
    return NULL;
}

void cs_gateway_stats(const cs_gateway_t *gw, cs_gateway_stats_t *st)
{
    *st = gw->st;
}
