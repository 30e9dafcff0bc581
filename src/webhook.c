/*
 * webhook.c - webhooks out (see webhook.h for the design; docs/webhooks.md for the user's side).
 *
 * Everything runs on the loop thread. A store wake-up only marks work and defers the pump, which (1)
 * drains the discovery subscriber, opening cursors for (endpoint, execution) pairs that have none, and
 * then (2) services the cursors marked dirty: each takes its next wanted event and sends it when its
 * endpoint has a free slot, else waits in the endpoint's ready queue. A cursor caught up with nothing
 * in flight is closed there and then: discovery has seen every event published so far (it drains
 * first), so the next event of that execution opens a new cursor exactly where this one stopped.
 */
#include "webhook.h"
#include "whconf.h"

#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <openssl/rand.h>
#include <uthash.h>

#include "cluster.h"
#include "curlm.h"
#include "cursor.h"
#include "daemon.h"
#include "event.h"
#include "filter.h"
#include "log.h"
#include "persist.h"
#include "status.h"
#include "store.h"
#include "whrec.h"

#define WH_DEAD_KEEP       16      /* dead letters listed per endpoint by GET /v1/webhooks */
#define WH_RETRY_AFTER_MAX 3600000 /* the longest Retry-After honoured: 1 h */
#define WH_KINDS           4
#define WH_SWEEP_MS        1000
#define WH_SAVE_MS         200 /* a cursor that keeps advancing is journaled at most this often */
/* The delivery budget (see "the budget" below). */
#define WH_BUSY_NS      50000000u /* ingest is busy while its last event is younger than this... */
#define WH_WINDOW_NS    20000000u /* ...and other work took WH_LOADED_PM of the loop's last window */
#define WH_LOADED_PM    500u
#define WH_LOW_WINDOWS  2u      /* when that many windows in a row were under it, */
#define WH_FREE_WINDOWS 8u      /* requests go free for this many windows, then measure again */
#define WH_BURST_NS     1000000 /* saved up to this */

static const char *const wh_kind_names[WH_KINDS] = {"human", "task", "step", "crew"};
static const char *const wh_kind_fields[WH_KINDS] = {"humanInputWebhook", "taskWebhookUrl", "stepWebhookUrl",
                                                     "crewWebhookUrl"};

typedef struct wh_dead {
    char exec[CS_EXECUTION_ID_MAX + 1];
    uint64_t seq;
    char event_id[CS_EVENT_ID_MAX + 1];
    char type[CS_TYPE_MAX + 1];
    char reason[160];
    unsigned attempts;
    int64_t at_unix_ms;
} wh_dead_t;

typedef struct wh_ep wh_ep_t;
typedef struct wh_pair wh_pair_t;

struct wh_ep {
    cs_webhooks_t *w;
    char *name;
    char *url;
    char *auth; /* the whole "Authorization: ..." header line, or NULL */
    unsigned char *key;
    size_t key_len;
    cs_filter_t types; /* config endpoints */
    char **execs;      /* config endpoints: ids or globs */
    size_t n_execs;
    unsigned kind;    /* registered: one CS_WEBHOOK_* bit; 0 for a config endpoint */
    char *exec;       /* registered: its execution */
    int retired;      /* replaced by a later registration: drains its cursors, then goes */
    wh_pair_t *pairs; /* cursors, by execution id */
    size_t n_pairs, in_flight, n_ready;
    wh_pair_t *ready_head, *ready_tail;
    uint64_t ok, failed, retried, dead, gaps;
    char last_error[160];
    wh_dead_t dl[WH_DEAD_KEEP];
    size_t n_dl; /* dead letters kept (the newest WH_DEAD_KEEP) */
    wh_ep_t *prev, *next;
    /* Easy handles set up for this endpoint (URL, options, headers), kept between requests: a request
     * then sets only its body (and, signed, its headers). At most webhooks.max_in_flight (~10 KiB each). */
    CURL **pool;
    size_t n_pool, pool_cap;
    struct curl_slist *hdrs; /* Content-Type, Expect, Authorization: every request's (built once) */
    int held;                /* on w->held: cursors ready and a slot free, but the budget said wait */
    wh_ep_t *hnext;          /* w->held */
};

typedef struct wh_reg {
    char exec[CS_EXECUTION_ID_MAX + 1];
    wh_ep_t *ep[WH_KINDS];
    int64_t last_ms; /* registered, or an event of its execution seen */
    UT_hash_handle hh;
} wh_reg_t;

enum { P_IDLE, P_READY, P_FLIGHT, P_BACKOFF };

struct wh_pair {
    wh_ep_t *ep;
    char exec[CS_EXECUTION_ID_MAX + 1];
    cs_sub_t sub;
    int state;
    cs_frame_t *cur; /* the event being delivered (a reference) */
    unsigned attempts;
    int64_t sent_ms;
    CURL *easy;
    struct curl_slist *hdrs;
    cs_timer_t retry;
    wh_pair_t *rnext;
    wh_pair_t *dnext;
    int dirty;
    int saving; /* on the save list: its position is journaled at the end of the turn */
    wh_pair_t *sprev, *snext;
    int64_t saved_ms; /* when its position was last journaled (0: never) */
    UT_hash_handle hh;
};

/* Cluster mode: which node delivers an execution's webhooks (every node sees every event, so without this
 * each would send it). Decided in Redis by a claim (cs_cluster_claim "w"), first come first served: the
 * node that registers URLs for the execution (a kickoff, /resume, a runtime's op) claims it then, any other
 * when its discovery first finds an event of it that an endpoint wants. Known here per execution while
 * there is something to deliver; cursors of an execution whose claim is not known yet wait. */
enum { CL_ASKING, CL_MINE, CL_OTHER, CL_FAILED };

typedef struct wh_claim {
    cs_webhooks_t *w;
    char exec[CS_EXECUTION_ID_MAX + 1];
    int state;
    cs_cluster_claim_t *req; /* CL_ASKING: the claim in flight */
    int64_t last_ms;         /* asked, answered, or used */
    int told;                /* a registration here was reported as not used (CL_OTHER) */
    char holder[64];         /* CL_OTHER: the node that delivers */
    UT_hash_handle hh;
} wh_claim_t;

/* What the journal's webhook records (whrec.h) say at start, until it is applied (restore below). */
typedef struct wh_rs_reg {
    char exec[CS_EXECUTION_ID_MAX + 1];
    json_t *json; /* the REG record's URLs */
    UT_hash_handle hh;
} wh_rs_reg_t;

typedef struct wh_rs_cur {
    char *key; /* 'r' (a registered URL) or 'c' (a config endpoint), its name, NUL, execution id */
    size_t key_len;
    uint64_t epoch, seq;
    UT_hash_handle hh;
} wh_rs_cur_t;

struct cs_webhooks {
    cs_daemon_t *d;
    cs_curlm_t *m;
    cs_sub_t disc;
    int disc_open;
    cs_defer_t pump_d;
    cs_timer_t sweep;
    wh_ep_t *eps; /* every endpoint: config ones first */
    wh_reg_t *regs;
    size_t n_regs, n_pairs;
    wh_pair_t *dirty_head, *dirty_tail;
    uint64_t ok, failed, retried, dead, gaps, overflow;
    size_t in_flight;
    uint64_t lat_count, lat_sum_ms, lat_max_ms;
    /* The journal (persist.h, whrec.h): cursors whose position changed this turn, written by save_d;
     * discovery's position as last written; the records read at start until they are applied. */
    cs_defer_t save_d;
    cs_timer_t save_t; /* the positions held back by WH_SAVE_MS */
    wh_pair_t *save_head;
    uint64_t disc_saved_epoch, disc_saved_next;
    wh_rs_reg_t *rs_regs;
    wh_rs_cur_t *rs_curs;
    int rs_disc;
    uint64_t rs_disc_epoch, rs_disc_next;
    uint64_t journal_errors;
    /* The budget: loop time that requests may take while ingest is busy (budget_ok). */
    cs_timer_t budget_t;
    wh_ep_t *held;                                    /* endpoints waiting for the budget */
    uint64_t last_event_ns;                           /* when discovery last saw an event (0: never) */
    uint64_t refill_ns;                               /* when tokens_ns was last brought up to date */
    uint64_t win_start_ns, win_idle_ns, win_spent_ns; /* the window: its start, idle and request times */
    unsigned free_windows; /* windows left in which requests are not held to the share */
    int settle;            /* the window after free ones: not judged */
    unsigned low_windows;  /* judged windows in a row in which other work took under WH_LOADED_PM */
    int64_t tokens_ns;     /* loop time requests may still take now (negative: over budget) */
    uint64_t charged_ns;   /* request time already taken off tokens_ns */
    uint64_t own_ns;       /* request time spent outside curl's actions (starting requests) */
    int in_done;           /* inside on_done: curlm times that already */
    int held_mode;         /* the last budget_ok held requests to the share */
    uint64_t budget_waits; /* times requests waited for the budget */
    /* Cluster mode: the claims known (wh_claim_t) and what came of them. */
    wh_claim_t *claims;
    size_t n_claims;
    uint64_t claims_mine, claims_other, claims_failed, regs_elsewhere;
};

/* ---- endpoints ---- */

static void ep_free(wh_ep_t *ep)
{
    cs_webhooks_t *w = ep->w;
    if (ep->held) {
        wh_ep_t **pp = &w->held;
        while (*pp != ep)
            pp = &(*pp)->hnext;
        *pp = ep->hnext;
    }
    if (ep->prev)
        ep->prev->next = ep->next;
    else
        w->eps = ep->next;
    if (ep->next)
        ep->next->prev = ep->prev;
    while (ep->n_pool > 0)
        curl_easy_cleanup(ep->pool[--ep->n_pool]);
    free(ep->pool);
    curl_slist_free_all(ep->hdrs);
    free(ep->name);
    free(ep->url);
    free(ep->auth);
    free(ep->key);
    free(ep->exec);
    cs_filter_free(&ep->types);
    for (size_t i = 0; i < ep->n_execs; i++)
        free(ep->execs[i]);
    free(ep->execs);
    free(ep);
}

static wh_ep_t *ep_add(cs_webhooks_t *w, const char *name, const char *url, char *auth)
{
    wh_ep_t *ep = calloc(1, sizeof(*ep));
    if (ep == NULL)
        return NULL;
    ep->w = w;
    ep->name = strdup(name);
    ep->url = strdup(url);
    if (ep->name == NULL || ep->url == NULL) {
        free(ep->name);
        free(ep->url);
        free(ep);
        return NULL;
    }
    ep->auth = auth;
    /* Appended, so config endpoints stay first in listings. */
    wh_ep_t **pp = &w->eps, *prev = NULL;
    while (*pp) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    ep->prev = prev;
    *pp = ep;
    return ep;
}

static int ep_from_conf(cs_webhooks_t *w, json_t *e, char *err, size_t errlen)
{
    char *hdr = NULL;
    const char *what = NULL;
    json_t *v, *t;
    size_t i;
    wh_ep_t *ep;

    if (cs_webhook_auth_header(json_object_get(e, "authentication"), &hdr, &what) != 0)
        goto nomem;
    ep = ep_add(w, json_string_value(json_object_get(e, "name")),
                json_string_value(json_object_get(e, "url")), hdr);
    if (ep == NULL) {
        free(hdr);
        goto nomem;
    }
    v = json_object_get(e, "types");
    json_array_foreach(v, i, t)
    {
        if (strcmp(json_string_value(t), "*") == 0) {
            cs_filter_free(&ep->types); /* everything */
            break;
        }
    }
    if (i == json_array_size(v)) {
        /* No "*": the patterns, comma-joined, through the ?types= parser. */
        char csv[4096] = "";
        size_t n = 0;
        json_array_foreach(v, i, t) n += (size_t)snprintf(csv + n, n < sizeof(csv) ? sizeof(csv) - n : 0,
                                                          "%s%s", i ? "," : "", json_string_value(t));
        if (n >= sizeof(csv) || cs_filter_parse(&ep->types, csv, err, errlen) != 0) {
            snprintf(err, errlen, "webhooks.endpoints: %s: types: too many patterns", ep->name);
            return -EINVAL;
        }
    }
    v = json_object_get(e, "executions");
    if (v != NULL &&
        !(json_array_size(v) == 1 && strcmp(json_string_value(json_array_get(v, 0)), "*") == 0)) {
        ep->execs = calloc(json_array_size(v), sizeof(char *));
        if (ep->execs == NULL)
            goto nomem;
        json_array_foreach(v, i, t)
        {
            if ((ep->execs[i] = strdup(json_string_value(t))) == NULL)
                goto nomem;
            ep->n_execs++;
        }
    }
    v = json_object_get(e, "secret");
    if (json_is_string(v) && cs_webhook_secret_key(json_string_value(v), &ep->key, &ep->key_len) != 0) {
        snprintf(err, errlen, "webhooks.endpoints: %s: secret: not base64", ep->name);
        return -EINVAL;
    }
    return 0;
nomem:
    snprintf(err, errlen, "webhooks: out of memory");
    return -ENOMEM;
}

static int ep_wants_exec(const wh_ep_t *ep, const char *exec)
{
    if (ep->n_execs == 0)
        return 1;
    for (size_t i = 0; i < ep->n_execs; i++)
        if (fnmatch(ep->execs[i], exec, 0) == 0)
            return 1;
    return 0;
}

static int ep_wants(const wh_ep_t *ep, const cs_frame_t *f)
{
    if (ep->kind != 0)
        return (cs_webhook_kinds_for(f->type, f->type_len) & ep->kind) != 0;
    return cs_filter_match(&ep->types, f->type, f->type_len);
}

static void copy_str(char *dst, size_t dstlen, const char *src)
{
    snprintf(dst, dstlen, "%s", src ? src : "");
}

/* A dead letter: logged, counted, kept for GET /v1/webhooks. Never silent. */
static void dead_letter(wh_ep_t *ep, const char *exec, uint64_t seq, const char *event_id, const char *type,
                        unsigned attempts, const char *reason)
{
    cs_webhooks_t *w = ep->w;
    wh_dead_t *dl;

    ep->dead++;
    w->dead++;
    if (ep->n_dl == WH_DEAD_KEEP)
        memmove(&ep->dl[0], &ep->dl[1], sizeof(ep->dl[0]) * (WH_DEAD_KEEP - 1)), ep->n_dl--;
    dl = &ep->dl[ep->n_dl++];
    copy_str(dl->exec, sizeof(dl->exec), exec);
    dl->seq = seq;
    copy_str(dl->event_id, sizeof(dl->event_id), event_id);
    copy_str(dl->type, sizeof(dl->type), type);
    copy_str(dl->reason, sizeof(dl->reason), reason);
    dl->attempts = attempts;
    dl->at_unix_ms = cs_unix_ms();
    copy_str(ep->last_error, sizeof(ep->last_error), reason);
    cs_log_warn("webhooks: %s: dead letter: execution %s seq %llu (%s) after %u attempt%s: %s", ep->name,
                exec, (unsigned long long)seq, type ? type : "-", attempts, attempts == 1 ? "" : "s", reason);
}

/* ---- the journal: registrations and cursor positions (whrec.h) ----
 *
 * With a journal, a registration is written when it changes and when it is forgotten; a cursor's
 * position (the first seq not yet delivered) when it changes - at most once per cursor per loop turn, from
 * a deferred call at the end of the turn - and a "closed" record once it is caught up; discovery's
 * position (the next global seq) with them. Restarted, the daemon reopens the open cursors where they
 * stood and discovery where it stood, so what was not delivered is sent (again: at least once). Without a
 * journal nothing of this runs. */

static void save_flush(void *data);

static int journaled(const cs_webhooks_t *w)
{
    return w->d->persist != NULL;
}

static void journal_rec(cs_webhooks_t *w, const cs_change_t *c)
{
    int rc = cs_persist_append_aux(w->d->persist, c);
    if (rc != 0 && rc != -ENODEV) { /* ENODEV: the directory could not be opened (persist.c says so) */
        w->journal_errors++;
        cs_log_error("webhooks: a journal record (kind %d) could not be kept: %s: after a restart these "
                     "deliveries may be missing or sent again",
                     (int)c->kind, strerror(-rc));
    }
}

/* The first seq of the cursor's execution not yet delivered. */
static uint64_t pair_pos(const wh_pair_t *p)
{
    return p->cur != NULL ? p->cur->seq : p->sub.next;
}

static void rec_cursor(wh_pair_t *p, int closed)
{
    cs_change_t c = {.kind = (cs_change_kind_t)CS_WHREC_CURSOR,
                     .exec = p->exec,
                     .exec_len = strlen(p->exec),
                     .type = p->ep->name,
                     .type_len = strlen(p->ep->name),
                     .epoch = p->sub.exec != NULL ? cs_exec_epoch(p->sub.exec) : 0,
                     .seq = pair_pos(p),
                     .status = (closed ? 1 : 0) | (p->ep->kind != 0 ? 2 : 0),
                     .unix_ms = cs_unix_ms()};
    journal_rec(p->ep->w, &c);
}

static void rec_reg(cs_webhooks_t *w, const wh_reg_t *reg)
{
    const char *url[WH_KINDS] = {0}, *auth[WH_KINDS] = {0};
    for (int k = 0; k < WH_KINDS; k++)
        if (reg->ep[k] != NULL) {
            url[k] = reg->ep[k]->url;
            auth[k] = reg->ep[k]->auth;
        }
    char *json = cs_whrec_reg_json(url, auth);
    if (json == NULL) {
        w->journal_errors++;
        cs_log_error("webhooks: out of memory writing the registration of %s to the journal", reg->exec);
        return;
    }
    cs_change_t c = {.kind = (cs_change_kind_t)CS_WHREC_REG,
                     .exec = reg->exec,
                     .exec_len = strlen(reg->exec),
                     .json = json,
                     .json_len = strlen(json),
                     .unix_ms = cs_unix_ms()};
    journal_rec(w, &c);
    free(json);
}

static void save_unlink(wh_pair_t *p)
{
    cs_webhooks_t *w = p->ep->w;
    if (!p->saving)
        return;
    if (p->sprev != NULL)
        p->sprev->snext = p->snext;
    else
        w->save_head = p->snext;
    if (p->snext != NULL)
        p->snext->sprev = p->sprev;
    p->sprev = p->snext = NULL;
    p->saving = 0;
}

/* The cursor's position changed: journaled at the end of the turn. A retired endpoint's cursors are not
 * (its name is its successor's). */
static void save_mark(wh_pair_t *p)
{
    cs_webhooks_t *w = p->ep->w;
    if (!journaled(w) || p->ep->retired || p->saving)
        return;
    p->saving = 1;
    p->sprev = NULL;
    p->snext = w->save_head;
    if (w->save_head != NULL)
        w->save_head->sprev = p;
    w->save_head = p;
    cs_defer(w->d->loop, &w->save_d, save_flush, w);
}

/* The endpoint a journaled cursor names: an execution's registered URL, or a config endpoint. */
static wh_ep_t *ep_named(cs_webhooks_t *w, const char *name, const char *exec, int registered)
{
    if (registered) {
        wh_reg_t *reg;
        HASH_FIND(hh, w->regs, exec, strlen(exec), reg);
        for (int k = 0; reg != NULL && k < WH_KINDS; k++)
            if (reg->ep[k] != NULL && strcmp(reg->ep[k]->name, name) == 0)
                return reg->ep[k];
        return NULL;
    }
    for (wh_ep_t *ep = w->eps; ep != NULL && ep->kind == 0; ep = ep->next) /* config ones come first */
        if (!ep->retired && strcmp(ep->name, name) == 0)
            return ep;
    return NULL;
}

/* The cursor is caught up (and is freed next): nothing of it to resume. */
static void save_closed(wh_pair_t *p)
{
    wh_ep_t *ep = p->ep;
    cs_webhooks_t *w = ep->w;

    save_unlink(p);
    if (!journaled(w))
        return;
    if (ep->retired) {
        /* Its successor has the same name: its own cursor on this execution, if any, stays open. */
        wh_ep_t *now = ep_named(w, ep->name, p->exec, ep->kind != 0);
        wh_pair_t *q = NULL;
        if (now != NULL)
            HASH_FIND(hh, now->pairs, p->exec, strlen(p->exec), q);
        if (q != NULL)
            return;
    }
    rec_cursor(p, 1);
    cs_defer(w->d->loop, &w->save_d, save_flush, w);
}

static void save_disc(cs_webhooks_t *w, int force)
{
    if (!w->disc_open)
        return;
    uint64_t ge = cs_store_global_epoch(w->d->store), gn = w->disc.next;
    if (!force && ge == w->disc_saved_epoch && gn == w->disc_saved_next)
        return;
    cs_change_t c = {
        .kind = (cs_change_kind_t)CS_WHREC_DISC, .epoch = ge, .gseq = gn, .unix_ms = cs_unix_ms()};
    journal_rec(w, &c);
    w->disc_saved_epoch = ge;
    w->disc_saved_next = gn;
}

/* The end of a turn: the positions that changed, then discovery's (after them: a journal cut short in
 * between rediscovers, never skips). A new cursor is written at once; one that keeps advancing at most
 * every WH_SAVE_MS (a timer writes what is held back), so a busy endpoint costs a few records a second per
 * cursor rather than one per delivery: after a crash at most its last WH_SAVE_MS of deliveries are sent
 * again. force (at shutdown): everything now. */
static void save_run(cs_webhooks_t *w, int force)
{
    int64_t now = cs_loop_now(w->d->loop);
    int held = 0;

    for (wh_pair_t *p = w->save_head, *next; p != NULL; p = next) {
        next = p->snext;
        if (!force && !p->ep->retired && p->saved_ms != 0 && now - p->saved_ms < WH_SAVE_MS) {
            held = 1;
            continue;
        }
        save_unlink(p);
        if (!p->ep->retired) {
            rec_cursor(p, 0);
            p->saved_ms = now > 0 ? now : 1;
        }
    }
    if (journaled(w))
        save_disc(w, 0);
    if (held && !cs_timer_active(&w->save_t))
        cs_timer_start(&w->save_t, WH_SAVE_MS);
}

static void save_flush(void *data)
{
    save_run(data, 0);
}

static void on_save_timer(cs_timer_t *t)
{
    save_run(t->data, 0);
}

/* ---- cursors ---- */

static void pump(void *data);

static void mark_dirty(wh_pair_t *p)
{
    cs_webhooks_t *w = p->ep->w;
    if (p->dirty)
        return;
    p->dirty = 1;
    p->dnext = NULL;
    if (w->dirty_tail)
        w->dirty_tail->dnext = p;
    else
        w->dirty_head = p;
    w->dirty_tail = p;
    cs_defer(w->d->loop, &w->pump_d, pump, w);
}

static void pair_release_cur(wh_pair_t *p)
{
    if (p->cur != NULL)
        cs_frame_unref(p->ep->w->d->store, p->cur);
    p->cur = NULL;
    p->attempts = 0;
}

static void pair_abort(wh_pair_t *p)
{
    cs_webhooks_t *w = p->ep->w;
    if (p->easy != NULL) {
        cs_curlm_remove(w->m, p->easy);
        curl_easy_cleanup(p->easy);
        p->easy = NULL;
        p->ep->in_flight--;
        w->in_flight--;
    }
    curl_slist_free_all(p->hdrs);
    p->hdrs = NULL;
}

/* Frees a cursor that is neither dirty nor queued (or the whole module is going). */
static void pair_free(wh_pair_t *p)
{
    wh_ep_t *ep = p->ep;
    cs_webhooks_t *w = ep->w;

    HASH_DEL(ep->pairs, p);
    ep->n_pairs--;
    w->n_pairs--;
    save_unlink(p);
    cs_timer_stop(&p->retry);
    pair_abort(p);
    pair_release_cur(p);
    cs_sub_close(&p->sub);
    free(p);
    if (ep->retired && ep->n_pairs == 0)
        ep_free(ep);
}

static void on_retry(cs_timer_t *t);
static void try_send(wh_pair_t *p);

static const cs_sub_ops_t pair_sub_ops = {.wake = NULL};

static void pair_open(wh_ep_t *ep, const char *exec, size_t exec_len, const cs_frame_t *f)
{
    cs_webhooks_t *w = ep->w;
    wh_pair_t *p;

    HASH_FIND(hh, ep->pairs, exec, exec_len, p);
    if (p != NULL)
        return;
    if (ep->n_pairs >= w->d->cfg->webhook_max_executions) {
        char why[160];
        w->overflow++;
        snprintf(why, sizeof(why), "overflow: %zu executions already waiting (webhooks.max_executions)",
                 ep->n_pairs);
        dead_letter(ep, exec, f->seq, f->event_id, f->type, 0, why);
        return;
    }
    p = calloc(1, sizeof(*p));
    if (p == NULL) {
        dead_letter(ep, exec, f->seq, f->event_id, f->type, 0, "out of memory for a delivery cursor");
        return;
    }
    p->ep = ep;
    memcpy(p->exec, exec, exec_len);
    cs_start_t start = {.kind = CS_START_AFTER_SEQ, .seq = f->seq - 1};
    cs_filter_t all = {0};
    if (cs_sub_open(w->d->store, &p->sub, exec, exec_len, &start, &all, &pair_sub_ops, p) != 0) {
        free(p);
        dead_letter(ep, exec, f->seq, f->event_id, f->type, 0, "out of memory for a delivery cursor");
        return;
    }
    cs_timer_init(&p->retry, w->d->loop, on_retry, p);
    HASH_ADD(hh, ep->pairs, exec, exec_len, p);
    ep->n_pairs++;
    w->n_pairs++;
    mark_dirty(p);
    save_mark(p);
}

/* ---- cluster mode: which node delivers an execution (wh_claim_t) ---- */

#define WH_CLAIM_IDLE_MS 60000 /* a claim known here, with nothing to deliver, is forgotten after this */

static int clustered(const cs_webhooks_t *w)
{
    return w->d->cluster != NULL;
}

static wh_claim_t *claim_find(cs_webhooks_t *w, const char *exec, size_t len)
{
    wh_claim_t *cl = NULL;
    HASH_FIND(hh, w->claims, exec, len, cl);
    return cl;
}

/* The claim lives as long as a running execution's keys do (docs/cluster.md "Keys"). */
static unsigned claim_ttl(const cs_webhooks_t *w)
{
    unsigned r = w->d->cfg->retain_s;
    return r > 86400 ? r : 86400;
}

static void on_claim(void *data, int outcome, const char *holder, size_t holder_len);

static void claim_ask(cs_webhooks_t *w, wh_claim_t *cl)
{
    cl->state = CL_ASKING;
    cl->last_ms = cs_loop_now(w->d->loop);
    cl->req = cs_cluster_claim(w->d->cluster, cl->exec, strlen(cl->exec), "w", claim_ttl(w), on_claim, cl);
    if (cl->req == NULL) {
        /* Redis not connected: its cursors wait, and the sweep asks again. */
        cl->state = CL_FAILED;
        w->claims_failed++;
    }
}

/* The claim of exec, asked for when not known here yet; NULL when out of memory (logged: then this node
 * delivers, at least once). */
static wh_claim_t *claim_get(cs_webhooks_t *w, const char *exec, size_t len)
{
    wh_claim_t *cl = claim_find(w, exec, len);

    if (cl != NULL) {
        cl->last_ms = cs_loop_now(w->d->loop);
        return cl;
    }
    if (len > CS_EXECUTION_ID_MAX || (cl = calloc(1, sizeof(*cl))) == NULL) {
        cs_log_warn("webhooks: out of memory asking who delivers %.*s: this node delivers it", (int)len,
                    exec);
        return NULL;
    }
    cl->w = w;
    memcpy(cl->exec, exec, len);
    HASH_ADD(hh, w->claims, exec, len, cl);
    w->n_claims++;
    claim_ask(w, cl);
    return cl;
}

/* A registration on this node that another node's claim makes unused: said once per execution. */
static void claim_tell(cs_webhooks_t *w, wh_claim_t *cl)
{
    wh_reg_t *reg = NULL;

    if (cl->state != CL_OTHER || cl->told)
        return;
    HASH_FIND(hh, w->regs, cl->exec, strlen(cl->exec), reg);
    if (reg == NULL)
        return;
    cl->told = 1;
    w->regs_elsewhere++;
    cs_log_info("webhooks: %s is delivered by node %s (it claimed the execution first): the webhook URLs "
                "registered on this node for it are not used here",
                cl->exec, cl->holder);
}

/* Every cursor of exec: to service (it waited for the claim). */
static void claim_wake(cs_webhooks_t *w, const char *exec, size_t len)
{
    for (wh_ep_t *ep = w->eps; ep != NULL; ep = ep->next) {
        wh_pair_t *p = NULL;
        HASH_FIND(hh, ep->pairs, exec, len, p);
        if (p != NULL)
            mark_dirty(p);
    }
}

static void on_claim(void *data, int outcome, const char *holder, size_t holder_len)
{
    wh_claim_t *cl = data;
    cs_webhooks_t *w = cl->w;

    cl->req = NULL;
    cl->last_ms = cs_loop_now(w->d->loop);
    if (outcome < 0) {
        cl->state = CL_FAILED;
        if (w->claims_failed++ % 100 == 0)
            cs_log_warn("webhooks: Redis did not answer who delivers %s (%llu such so far): its events wait, "
                        "asked again within a second",
                        cl->exec, (unsigned long long)w->claims_failed);
        return;
    }
    if (outcome > 0) {
        cl->state = CL_MINE;
        w->claims_mine++;
    } else {
        cl->state = CL_OTHER;
        w->claims_other++;
        snprintf(cl->holder, sizeof(cl->holder), "%.*s", (int)(holder_len < 63 ? holder_len : 63), holder);
        claim_tell(w, cl);
    }
    claim_wake(w, cl->exec, strlen(cl->exec));
}

/* Whether this node may open cursors for exec: not when another node delivers it (cluster mode). */
static int claim_lets(cs_webhooks_t *w, const char *exec, size_t len)
{
    if (!clustered(w))
        return 1;
    wh_claim_t *cl = claim_get(w, exec, len);
    return cl == NULL || cl->state != CL_OTHER;
}

/* The sweep's part: claims that got no answer are asked again while they have something to deliver;
 * claims with nothing to deliver are forgotten after WH_CLAIM_IDLE_MS (Redis keeps them). */
static void claim_sweep(cs_webhooks_t *w, int64_t now)
{
    wh_claim_t *cl, *ct;

    HASH_ITER(hh, w->claims, cl, ct)
    {
        size_t len = strlen(cl->exec);
        wh_reg_t *reg = NULL;
        int used = 0;
        if (cl->state == CL_ASKING)
            continue;
        HASH_FIND(hh, w->regs, cl->exec, len, reg);
        for (wh_ep_t *ep = w->eps; ep != NULL && !used; ep = ep->next) {
            wh_pair_t *p = NULL;
            HASH_FIND(hh, ep->pairs, cl->exec, len, p);
            used = p != NULL;
        }
        if (cl->state == CL_FAILED && (used || reg != NULL)) {
            claim_ask(w, cl);
        } else if (!used && reg == NULL && now - cl->last_ms > WH_CLAIM_IDLE_MS) {
            HASH_DEL(w->claims, cl);
            w->n_claims--;
            free(cl);
        }
    }
}

/* Takes the cursor's next wanted event; closes a cursor that is caught up. In cluster mode a cursor waits
 * until its execution's claim is known, and goes when another node delivers it. */
static void service(wh_pair_t *p)
{
    cs_item_t it;
    wh_ep_t *ep = p->ep;

    if (p->state != P_IDLE)
        return;
    if (clustered(ep->w)) {
        wh_claim_t *cl = claim_find(ep->w, p->exec, strlen(p->exec));
        if (cl != NULL && cl->state != CL_MINE) {
            if (cl->state == CL_OTHER)
                pair_free(p);
            return;
        }
    }
    while (cs_sub_next(&p->sub, &it)) {
        if (it.gap != NULL) {
            char why[160];
            ep->gaps++;
            ep->w->gaps++;
            snprintf(why, sizeof(why),
                     "stream.gap: events before seq %llu left the ring before they were sent",
                     (unsigned long long)it.gap_first);
            dead_letter(ep, p->exec, it.gap_first ? it.gap_first - 1 : 0, NULL, "stream.gap", 0, why);
            continue;
        }
        if (!ep_wants(ep, it.frame))
            continue;
        p->cur = cs_frame_ref(it.frame);
        p->attempts = 0;
        p->state = P_READY;
        save_mark(p);
        try_send(p);
        return;
    }
    save_closed(p);
    pair_free(p);
}

static void ready_push(wh_pair_t *p)
{
    wh_ep_t *ep = p->ep;
    p->rnext = NULL;
    if (ep->ready_tail)
        ep->ready_tail->rnext = p;
    else
        ep->ready_head = p;
    ep->ready_tail = p;
    ep->n_ready++;
}

static wh_pair_t *ready_pop(wh_ep_t *ep)
{
    wh_pair_t *p = ep->ready_head;
    if (p != NULL) {
        ep->ready_head = p->rnext;
        if (ep->ready_head == NULL)
            ep->ready_tail = NULL;
        ep->n_ready--;
    }
    return p;
}

static void schedule_retry(wh_pair_t *p, int64_t delay_ms)
{
    p->state = P_BACKOFF;
    cs_timer_start(&p->retry, delay_ms);
}

static double rnd01(void)
{
    uint32_t r;
    if (RAND_bytes((unsigned char *)&r, sizeof(r)) != 1)
        r = (uint32_t)rand();
    return (double)r / 4294967296.0;
}

/* Gives a finished easy handle back to its endpoint (its options stay: they are the endpoint's), or
 * frees it when the endpoint keeps max_in_flight already. */
static void easy_put(wh_ep_t *ep, CURL *e)
{
    size_t max = ep->w->d->cfg->webhook_max_in_flight;

    if (ep->n_pool < max) {
        if (ep->n_pool == ep->pool_cap) {
            size_t cap = ep->pool_cap ? ep->pool_cap * 2 : 4;
            CURL **np = realloc(ep->pool, cap * sizeof(*np));
            if (np == NULL) {
                curl_easy_cleanup(e);
                return;
            }
            ep->pool = np;
            ep->pool_cap = cap;
        }
        ep->pool[ep->n_pool++] = e;
    } else {
        curl_easy_cleanup(e);
    }
}

/* The headers every request of ep carries; NULL when out of memory. */
static struct curl_slist *ep_headers(wh_ep_t *ep)
{
    struct curl_slist *h = NULL, *t;
    const char *lines[] = {"Content-Type: application/json", "Expect:" /* no 100-continue round trip */,
                           ep->auth};

    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]) && lines[i] != NULL; i++) {
        if ((t = curl_slist_append(h, lines[i])) == NULL) {
            curl_slist_free_all(h);
            return NULL;
        }
        h = t;
    }
    return h;
}

/* An easy handle for ep: a kept one, or a new one with the endpoint's URL, headers and options. */
static CURL *easy_get(wh_ep_t *ep)
{
    if (ep->n_pool > 0)
        return ep->pool[--ep->n_pool];
    if (ep->hdrs == NULL && (ep->hdrs = ep_headers(ep)) == NULL)
        return NULL;
    CURL *e = curl_easy_init();
    if (e == NULL)
        return NULL;
    if (cs_curlm_easy_defaults(e, 0, 0) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_URL, ep->url) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, ep->hdrs) != CURLE_OK) {
        curl_easy_cleanup(e);
        return NULL;
    }
    return e;
}

static void send_one(wh_pair_t *p)
{
    cs_webhooks_t *w = p->ep->w;
    wh_ep_t *ep = p->ep;
    const cs_config_t *cfg = w->d->cfg;
    cs_frame_t *f = p->cur;
    CURL *e = easy_get(ep);
    struct curl_slist *h = NULL, *t;
    char line[256 + CS_EVENT_ID_MAX], sig[128], ts[32];
    int ok = e != NULL;

    if (ok && ep->key != NULL) {
        /* Signed: this request's own headers, the endpoint's first. */
#define ADD(s)                                                                                               \
    do {                                                                                                     \
        if (ok && (t = curl_slist_append(h, s)) != NULL)                                                     \
            h = t;                                                                                           \
        else                                                                                                 \
            ok = 0;                                                                                          \
    } while (0)
        for (const struct curl_slist *b = ep->hdrs; b != NULL; b = b->next)
            ADD(b->data);
        snprintf(ts, sizeof(ts), "%lld", (long long)(cs_unix_ms() / 1000));
        snprintf(line, sizeof(line), "webhook-id: %s", f->event_id);
        ADD(line);
        snprintf(line, sizeof(line), "webhook-timestamp: %s", ts);
        ADD(line);
        if (ok && cs_webhook_sign(ep->key, ep->key_len, f->event_id, ts, f->json, f->json_len, sig,
                                  sizeof(sig)) == 0)
            ok = 0;
        snprintf(line, sizeof(line), "webhook-signature: %s", sig);
        ADD(line);
#undef ADD
        ok = ok && curl_easy_setopt(e, CURLOPT_HTTPHEADER, h) == CURLE_OK;
    }
    /* The timeouts are set each time: a reload may change them. */
    if (ok)
        ok = curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)cfg->webhook_connect_timeout_s * 1000) ==
                 CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)cfg->webhook_timeout_s * 1000) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)f->json_len) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_POSTFIELDS, f->json) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)p) == CURLE_OK && cs_curlm_add(w->m, e) == 0;
    if (!ok) {
        /* The frame is kept: the same event is tried again after the back-off. */
        curl_easy_cleanup(e);
        curl_slist_free_all(h);
        p->attempts++;
        ep->failed++;
        w->failed++;
        copy_str(ep->last_error, sizeof(ep->last_error), "out of memory preparing a request");
        cs_log_error("webhooks: %s: out of memory preparing a request: retried", ep->name);
        schedule_retry(p, cs_webhook_backoff_ms(p->attempts, rnd01()));
        return;
    }
    p->easy = e;
    p->hdrs = h;
    p->state = P_FLIGHT;
    p->sent_ms = cs_loop_now(w->d->loop);
    ep->in_flight++;
    w->in_flight++;
}

/* ---- the budget ----
 *
 * Requests run on the loop that also takes ingest, on a machine whose other cores run the producers and
 * the receivers. Ingest is busy when discovery saw an event less than WH_BUSY_NS ago and the loop's other
 * work (its wall time but requests and sleep) took at least WH_LOADED_PM per mille of its last window of
 * WH_WINDOW_NS (or of one of its last WH_LOW_WINDOWS windows). Then the requests started and their answers
 * (curl's actions, timed by curlm) may take webhooks.busy_share per cent of the loop's time: a token bucket
 * in nanoseconds, refilled at that share of the time that passes and saved up to WH_BURST_NS. Over it, ready
 * cursors wait in their endpoint's queue (the lag grows; GET /v1/webhooks and /metrics show it) and a timer
 * comes back when the budget allows one more or ingest may have gone quiet. Otherwise - no events, or events
 * that leave the loop half idle for WH_LOW_WINDOWS windows in a row - requests take what they need (bounded
 * by webhooks.max_in_flight) for WH_FREE_WINDOWS windows, then are held again while the next ones are judged.
 */

static void budget_window(cs_webhooks_t *w, uint64_t now, uint64_t spent)
{
    uint64_t el = now - w->win_start_ns;
    if (el < WH_WINDOW_NS)
        return;
    /* Wall time, so time the loop waited for a core counts as taken: on a machine short of cores,
     * requests (and a local receiver) would take it from the producers. */
    uint64_t idle = cs_loop_idle_ns(w->d->loop);
    uint64_t busy = (idle - w->win_idle_ns) + (spent - w->win_spent_ns);
    uint64_t other = el > busy ? el - busy : 0;
    if (w->free_windows > 0) {
        /* Requests were free: what ingest took is no measure of what it wanted (they took its time). The
         * window after them still has their answers: it is not judged either. */
        w->free_windows--;
        w->settle = 1;
    } else if (w->settle) {
        w->settle = 0;
    } else if (other * 1000u >= el * WH_LOADED_PM) {
        w->low_windows = 0;
    } else if (++w->low_windows >= WH_LOW_WINDOWS) {
        /* Ingest left the loop half idle for a while (not a producer that lost its core for a moment):
         * requests go free. */
        w->low_windows = 0;
        w->free_windows = WH_FREE_WINDOWS;
    }
    w->win_start_ns = now;
    w->win_idle_ns = idle;
    w->win_spent_ns = spent;
}

static int ingest_busy(const cs_webhooks_t *w, uint64_t now)
{
    return w->free_windows == 0 && w->last_event_ns != 0 && now - w->last_event_ns < WH_BUSY_NS;
}

static int budget_ok(cs_webhooks_t *w)
{
    uint64_t now = cs_curlm_clock_ns();
    uint64_t spent = cs_curlm_spent_ns(w->m) + w->own_ns;

    budget_window(w, now, spent);
    if (!ingest_busy(w, now)) {
        /* Quiet or free: what was spent is forgotten, and the next held spell starts with a full burst. */
        w->tokens_ns = WH_BURST_NS;
        w->held_mode = 0;
    } else if (!w->held_mode) {
        /* Held from now on; the answers to what was sent while free are not charged. */
        w->tokens_ns = WH_BURST_NS;
        w->held_mode = 1;
    } else if (w->d->cfg->webhook_busy_share >= 100) {
        w->tokens_ns = WH_BURST_NS; /* never held back */
    } else {
        w->tokens_ns += (int64_t)((now - w->refill_ns) * w->d->cfg->webhook_busy_share / 100u);
        w->tokens_ns -= (int64_t)(spent - w->charged_ns);
        if (w->tokens_ns > WH_BURST_NS)
            w->tokens_ns = WH_BURST_NS;
    }
    w->refill_ns = now;
    w->charged_ns = spent;
    return w->tokens_ns > 0;
}

static void on_budget(cs_timer_t *t);

/* The budget said wait: ep's ready cursors are sent when the timer finds it allows them. */
static void budget_hold(cs_webhooks_t *w, wh_ep_t *ep)
{
    w->budget_waits++;
    if (!ep->held) {
        ep->held = 1;
        ep->hnext = w->held;
        w->held = ep;
    }
    if (cs_timer_active(&w->budget_t))
        return;
    /* When the tokens are back above 0, or ingest counts as quiet, whichever comes first; 1 ms at least. */
    uint64_t now = cs_curlm_clock_ns();
    unsigned share = w->d->cfg->webhook_busy_share ? w->d->cfg->webhook_busy_share : 1;
    uint64_t wait = w->tokens_ns < 0 ? (uint64_t)(-w->tokens_ns) * 100u / share : 0;
    uint64_t quiet = w->last_event_ns + WH_BUSY_NS > now ? w->last_event_ns + WH_BUSY_NS - now : 0;
    if (quiet < wait)
        wait = quiet;
    if (wait > WH_WINDOW_NS)
        wait = WH_WINDOW_NS;
    cs_timer_start(&w->budget_t, (int64_t)(wait / 1000000u) + 1);
}

/* Starts requests for ep's ready cursors while it has free slots and the budget allows. */
static void ep_fill(wh_ep_t *ep)
{
    cs_webhooks_t *w = ep->w;
    size_t max = w->d->cfg->webhook_max_in_flight;

    while (ep->ready_head != NULL && ep->in_flight < max) {
        if (!budget_ok(w)) {
            budget_hold(w, ep);
            return;
        }
        uint64_t t0 = w->in_done ? 0 : cs_curlm_clock_ns();
        send_one(ready_pop(ep));
        if (!w->in_done)
            w->own_ns += cs_curlm_clock_ns() - t0;
    }
}

static void held_drain(cs_webhooks_t *w)
{
    wh_ep_t *list = w->held;
    w->held = NULL;
    while (list != NULL) {
        wh_ep_t *ep = list;
        list = ep->hnext;
        ep->held = 0;
        ep_fill(ep); /* may hold it again */
    }
}

static void on_budget(cs_timer_t *t)
{
    held_drain(t->data);
}

/* A cursor with its event taken: it queues behind the endpoint's waiting cursors (FIFO). */
static void try_send(wh_pair_t *p)
{
    ready_push(p);
    ep_fill(p->ep);
}

static void on_retry(cs_timer_t *t)
{
    wh_pair_t *p = t->data;
    p->state = P_READY;
    try_send(p);
}

static int curl_retryable(CURLcode rc)
{
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_OUT_OF_MEMORY:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_ABORTED_BY_CALLBACK:
        return 1;
    default:
        return 0;
    }
}

static void on_done(CURL *easy, CURLcode rc, long status, void *data)
{
    wh_pair_t *p = data;
    wh_ep_t *ep = p->ep;
    cs_webhooks_t *w = ep->w;
    cs_frame_t *f = p->cur;
    curl_off_t retry_after = 0;
    char why[160];
    int retry;

    curl_easy_getinfo(easy, CURLINFO_RETRY_AFTER, &retry_after);
    easy_put(ep, easy);
    p->easy = NULL;
    curl_slist_free_all(p->hdrs);
    p->hdrs = NULL;
    ep->in_flight--;
    w->in_flight--;
    /* The slot goes to the endpoint's next waiting cursor (curlm times this: in_done). */
    w->in_done = 1;
    ep_fill(ep);
    w->in_done = 0;

    p->attempts++;
    if (rc == CURLE_OK && status >= 200 && status < 300) {
        int64_t ms = cs_loop_update_now(w->d->loop) - p->sent_ms;
        if (ms > 0 && (uint64_t)ms > w->lat_max_ms)
            w->lat_max_ms = (uint64_t)ms;
        w->lat_count++;
        w->lat_sum_ms += (uint64_t)(ms > 0 ? ms : 0);
        ep->ok++;
        w->ok++;
        pair_release_cur(p);
        p->state = P_IDLE;
        mark_dirty(p);
        return;
    }
    ep->failed++;
    w->failed++;
    if (rc != CURLE_OK) {
        retry = curl_retryable(rc);
        snprintf(why, sizeof(why), "%s", curl_easy_strerror(rc));
    } else {
        retry = status >= 500 || status == 408 || status == 429;
        snprintf(why, sizeof(why), "HTTP %ld%s", status,
                 status >= 300 && status < 400 ? " (a redirect: not followed)" : "");
    }
    copy_str(ep->last_error, sizeof(ep->last_error), why);
    if (retry && p->attempts < w->d->cfg->webhook_max_attempts) {
        int64_t delay = cs_webhook_backoff_ms(p->attempts, rnd01());
        if (retry_after > 0) {
            int64_t ra = (int64_t)retry_after * 1000;
            delay = ra > WH_RETRY_AFTER_MAX ? WH_RETRY_AFTER_MAX : ra;
        }
        ep->retried++;
        w->retried++;
        cs_log_debug("webhooks: %s: execution %s seq %llu: %s: retry %u in %lld ms", ep->name, p->exec,
                     (unsigned long long)f->seq, why, p->attempts, (long long)delay);
        schedule_retry(p, delay);
        return;
    }
    if (retry) {
        size_t n = strlen(why);
        snprintf(why + n, sizeof(why) - n, " (webhooks.max_attempts reached)");
    }
    dead_letter(ep, p->exec, f->seq, f->event_id, f->type, p->attempts, why);
    pair_release_cur(p);
    p->state = P_IDLE;
    mark_dirty(p);
}

/* ---- discovery ---- */

static void discover(cs_webhooks_t *w, cs_frame_t *f)
{
    char idbuf[CS_EXECUTION_ID_MAX + 1];
    size_t len;
    const char *exec;
    wh_reg_t *reg;

    if (f->in_exec) {
        exec = cs_exec_id(f->exec, &len);
    } else {
        /* It left its execution's ring already (a burst of more than the ring holds within one loop turn):
         * its execution is read from its JSON, and the cursor opened before it hands out a stream.gap
         * first, which dead-letters it where it belongs (rare, so the parse costs nothing in the common
         * case). */
        json_t *o = json_loadb(f->json, f->json_len, 0, NULL);
        const char *x = json_string_value(json_object_get(o, "execution_id"));
        len = x != NULL ? strlen(x) : 0;
        if (len == 0 || len > CS_EXECUTION_ID_MAX) {
            json_decref(o);
            w->gaps++;
            cs_log_warn("webhooks: an event (%s) left its ring before webhooks saw it: not delivered",
                        f->type);
            return;
        }
        memcpy(idbuf, x, len + 1);
        json_decref(o);
        exec = idbuf;
    }
    int lets = -1; /* claim_lets, asked once an endpoint wants the event */
    for (wh_ep_t *ep = w->eps; ep != NULL; ep = ep->next)
        if (ep->kind == 0 && !ep->retired && ep_wants_exec(ep, exec) && ep_wants(ep, f)) {
            if (lets < 0)
                lets = claim_lets(w, exec, len);
            if (lets)
                pair_open(ep, exec, len, f);
        }
    HASH_FIND(hh, w->regs, exec, len, reg);
    if (reg == NULL)
        return;
    reg->last_ms = cs_loop_now(w->d->loop);
    unsigned kinds = cs_webhook_kinds_for(f->type, f->type_len);
    for (int k = 0; k < WH_KINDS; k++)
        if ((kinds & (1u << k)) && reg->ep[k] != NULL) {
            if (lets < 0)
                lets = claim_lets(w, exec, len);
            if (lets)
                pair_open(reg->ep[k], exec, len, f);
        }
}

static void pump(void *data)
{
    cs_webhooks_t *w = data;
    cs_item_t it;

    if (w->disc_open) {
        int seen = 0;
        while (cs_sub_next(&w->disc, &it)) {
            seen = 1;
            if (it.gap != NULL) {
                w->gaps++;
                cs_log_warn("webhooks: fell behind the global ring (store.global_events): events before "
                            "global seq %llu are not delivered",
                            (unsigned long long)it.gap_first);
                continue;
            }
            discover(w, it.frame);
        }
        cs_sub_park(&w->disc);
        if (seen) {
            uint64_t now = cs_curlm_clock_ns();
            if (w->last_event_ns == 0 || now - w->last_event_ns >= WH_BUSY_NS) {
                /* A busy spell begins: its first window is judged with requests held to the share. */
                w->win_start_ns = now;
                w->win_idle_ns = cs_loop_idle_ns(w->d->loop);
                w->win_spent_ns = cs_curlm_spent_ns(w->m) + w->own_ns;
                w->free_windows = 0;
                w->low_windows = 0;
                w->settle = 0;
            }
            w->last_event_ns = now;
        }
    }
    held_drain(w);
    while (w->dirty_head != NULL) {
        wh_pair_t *p = w->dirty_head;
        w->dirty_head = p->dnext;
        if (w->dirty_head == NULL)
            w->dirty_tail = NULL;
        p->dirty = 0;
        service(p);
    }
}

static void disc_wake(cs_sub_t *sub)
{
    cs_webhooks_t *w = sub->data;
    cs_defer(w->d->loop, &w->pump_d, pump, w);
}

static const cs_sub_ops_t disc_ops = {.wake = disc_wake};

/* ---- registrations ---- */

static void reg_free(cs_webhooks_t *w, wh_reg_t *reg)
{
    if (journaled(w)) {
        cs_change_t c = {.kind = (cs_change_kind_t)CS_WHREC_UNREG,
                         .exec = reg->exec,
                         .exec_len = strlen(reg->exec),
                         .unix_ms = cs_unix_ms()};
        journal_rec(w, &c);
    }
    for (int k = 0; k < WH_KINDS; k++) {
        wh_ep_t *ep = reg->ep[k];
        if (ep == NULL)
            continue;
        ep->retired = 1;
        if (ep->n_pairs == 0)
            ep_free(ep);
    }
    HASH_DEL(w->regs, reg);
    w->n_regs--;
    free(reg);
}

static void on_sweep(cs_timer_t *t)
{
    cs_webhooks_t *w = t->data;
    int64_t now = cs_loop_now(w->d->loop);
    int64_t idle_ms = (int64_t)(w->d->cfg->retain_s > 60 ? w->d->cfg->retain_s : 60) * 1000;
    wh_reg_t *reg, *tmp;

    HASH_ITER(hh, w->regs, reg, tmp)
    {
        int busy = 0;
        for (int k = 0; k < WH_KINDS; k++)
            busy |= reg->ep[k] != NULL && reg->ep[k]->n_pairs > 0;
        if (busy)
            continue;
        cs_exec_t *ex = cs_store_find(w->d->store, reg->exec, strlen(reg->exec));
        int final = ex != NULL && cs_status_is_final((int)cs_exec_status(ex));
        if ((final && now - reg->last_ms > 5000) || now - reg->last_ms > idle_ms)
            reg_free(w, reg);
    }
    if (clustered(w))
        claim_sweep(w, now);
    cs_timer_start(&w->sweep, WH_SWEEP_MS);
}

int cs_webhooks_body_has(const json_t *body)
{
    for (int k = 0; k < WH_KINDS; k++) {
        json_t *v = json_object_get(body, wh_kind_fields[k]);
        if (v != NULL && !json_is_null(v))
            return 1;
    }
    return 0;
}

cs_err_t cs_webhooks_register(cs_webhooks_t *w, const char *exec, size_t exec_len, const json_t *body,
                              char *detail, size_t detail_len)
{
    const char *urls[WH_KINDS] = {0};
    char *auths[WH_KINDS] = {0};
    const cs_config_t *cfg;
    cs_err_t e = CS_OK;
    wh_reg_t *reg = NULL;
    int any = 0, changed = 0;

    if (w == NULL) {
        snprintf(detail, detail_len, "webhooks are not running");
        return CS_ERR_UNAVAILABLE;
    }
    cfg = w->d->cfg;
    for (int k = 0; k < WH_KINDS; k++) {
        json_t *v = json_object_get(body, wh_kind_fields[k]);
        const char *what = NULL;
        if (v == NULL || json_is_null(v))
            continue;
        if (k == 0) {
            if (!json_is_object(v)) {
                snprintf(detail, detail_len, "humanInputWebhook: expected an object {url, authentication}");
                e = CS_ERR_INVALID_FIELD;
                goto out;
            }
            int rc = cs_webhook_auth_header(json_object_get(v, "authentication"), &auths[0], &what);
            if (rc == -ENOMEM) {
                snprintf(detail, detail_len, "out of memory");
                e = CS_ERR_INTERNAL;
                goto out;
            }
            if (rc != 0) {
                snprintf(detail, detail_len, "humanInputWebhook.%s", what);
                e = CS_ERR_INVALID_FIELD;
                goto out;
            }
            v = json_object_get(v, "url");
        }
        urls[k] = json_string_value(v);
        if (urls[k] == NULL || !cs_webhook_url_ok(urls[k])) {
            snprintf(detail, detail_len, "%s%s: expected an http:// or https:// URL", wh_kind_fields[k],
                     k == 0 ? ".url" : "");
            e = CS_ERR_INVALID_FIELD;
            goto out;
        }
        if (!cs_webhook_allowed(urls[k], cfg->webhook_allow, cfg->n_webhook_allow)) {
            snprintf(detail, detail_len, "%s%s: this destination is not in webhooks.allow%s",
                     wh_kind_fields[k], k == 0 ? ".url" : "",
                     cfg->n_webhook_allow == 0 ? " (empty: no destination from requests is allowed)" : "");
            e = CS_ERR_INVALID_FIELD;
            goto out;
        }
        any = 1;
    }
    if (!any)
        goto out;
    HASH_FIND(hh, w->regs, exec, exec_len, reg);
    if (reg == NULL) {
        if (w->n_regs >= cfg->webhook_max_registrations) {
            snprintf(detail, detail_len,
                     "%zu executions have webhooks registered (webhooks.max_registrations)", w->n_regs);
            cs_log_warn("webhooks: registration for %.*s refused: webhooks.max_registrations (%zu) held",
                        (int)exec_len, exec, w->n_regs);
            e = CS_ERR_UNAVAILABLE;
            goto out;
        }
        if (exec_len > CS_EXECUTION_ID_MAX || (reg = calloc(1, sizeof(*reg))) == NULL) {
            snprintf(detail, detail_len, "out of memory");
            e = CS_ERR_INTERNAL;
            goto out;
        }
        memcpy(reg->exec, exec, exec_len);
        HASH_ADD(hh, w->regs, exec, exec_len, reg);
        w->n_regs++;
    }
    reg->last_ms = cs_loop_now(w->d->loop);
    for (int k = 0; k < WH_KINDS; k++) {
        wh_ep_t *old = reg->ep[k];
        char name[CS_EXECUTION_ID_MAX + 16];
        if (urls[k] == NULL)
            continue;
        if (old != NULL && strcmp(old->url, urls[k]) == 0 &&
            ((old->auth == NULL && auths[k] == NULL) ||
             (old->auth != NULL && auths[k] != NULL && strcmp(old->auth, auths[k]) == 0)))
            continue; /* the same again (the seed repeats them on /resume): its cursors go on */
        snprintf(name, sizeof(name), "%s:%s", wh_kind_names[k], reg->exec);
        wh_ep_t *ep = ep_add(w, name, urls[k], auths[k]);
        if (ep == NULL) {
            snprintf(detail, detail_len, "out of memory");
            e = CS_ERR_INTERNAL;
            goto out;
        }
        auths[k] = NULL;
        ep->kind = 1u << k;
        ep->exec = strdup(reg->exec);
        reg->ep[k] = ep;
        changed = 1;
        if (old != NULL) {
            /* What it took on stays with it (at least once); what comes next goes to the new URL. */
            old->retired = 1;
            if (old->n_pairs == 0)
                ep_free(old);
        }
        cs_log_info("webhooks: %s -> %s", name, urls[k]);
    }
out:
    if (e == CS_OK && any && clustered(w)) {
        /* The node that registers an execution's URLs claims its delivery, before its events come. */
        wh_claim_t *cl = claim_get(w, exec, exec_len);
        if (cl != NULL)
            claim_tell(w, cl);
    }
    if (changed && journaled(w)) {
        rec_reg(w, reg);
        /* Discovery's position with it: after a restart, events before the registration are not
         * rediscovered for it. */
        cs_defer(w->d->loop, &w->save_d, save_flush, w);
    }
    for (int k = 0; k < WH_KINDS; k++)
        free(auths[k]);
    return e;
}

/* ---- the journal: snapshot and restore ---- */

/* persist.c's snapshot: the whole state, so the segments before it may go. */
static void wh_snapshot(void *data)
{
    cs_webhooks_t *w = data;
    wh_reg_t *reg, *rt;

    HASH_ITER(hh, w->regs, reg, rt)
    rec_reg(w, reg);
    for (wh_ep_t *ep = w->eps; ep != NULL; ep = ep->next) {
        if (ep->retired)
            continue;
        for (wh_pair_t *p = ep->pairs; p != NULL; p = p->hh.next)
            rec_cursor(p, 0);
    }
    save_disc(w, 1);
}

static void rs_free(cs_webhooks_t *w)
{
    wh_rs_reg_t *r, *rt;
    wh_rs_cur_t *c, *ct;
    HASH_ITER(hh, w->rs_regs, r, rt)
    {
        HASH_DEL(w->rs_regs, r);
        json_decref(r->json);
        free(r);
    }
    HASH_ITER(hh, w->rs_curs, c, ct)
    {
        HASH_DEL(w->rs_curs, c);
        free(c->key);
        free(c);
    }
}

/* persist.c's replay: each webhook record read at start, in order; the last one of each key wins. */
static void wh_replay(void *data, const cs_change_t *c)
{
    cs_webhooks_t *w = data;
    char detail[160];
    cs_whrec_t r;

    if (cs_whrec_decode(c, &r, detail, sizeof(detail)) != 0) {
        w->journal_errors++;
        cs_log_warn("webhooks: journal: %s: skipped", detail);
        return;
    }
    if (r.kind == CS_WHREC_REG || r.kind == CS_WHREC_UNREG) {
        wh_rs_reg_t *rr;
        HASH_FIND(hh, w->rs_regs, r.exec, r.exec_len, rr);
        if (r.kind == CS_WHREC_UNREG) {
            if (rr != NULL) {
                HASH_DEL(w->rs_regs, rr);
                json_decref(rr->json);
                free(rr);
            }
        } else if (rr != NULL || (rr = calloc(1, sizeof(*rr))) != NULL) {
            if (rr->json == NULL) {
                memcpy(rr->exec, r.exec, r.exec_len);
                HASH_ADD(hh, w->rs_regs, exec, r.exec_len, rr);
            }
            json_decref(rr->json);
            rr->json = json_incref(r.json);
        }
    } else if (r.kind == CS_WHREC_CURSOR) {
        size_t kl = 1 + r.endpoint_len + 1 + r.exec_len;
        char key[1 + CS_WHREC_NAME_MAX + 1 + CS_EXECUTION_ID_MAX + 1];
        wh_rs_cur_t *rc;
        key[0] = r.registered ? 'r' : 'c';
        memcpy(key + 1, r.endpoint, r.endpoint_len + 1);
        memcpy(key + 2 + r.endpoint_len, r.exec, r.exec_len + 1);
        HASH_FIND(hh, w->rs_curs, key, kl, rc);
        if (r.closed) {
            if (rc != NULL) {
                HASH_DEL(w->rs_curs, rc);
                free(rc->key);
                free(rc);
            }
        } else {
            if (rc == NULL && (rc = calloc(1, sizeof(*rc))) != NULL) {
                if ((rc->key = malloc(kl + 1)) == NULL) {
                    free(rc);
                    rc = NULL;
                } else {
                    memcpy(rc->key, key, kl + 1);
                    rc->key_len = kl;
                    HASH_ADD_KEYPTR(hh, w->rs_curs, rc->key, kl, rc);
                }
            }
            if (rc != NULL) {
                rc->epoch = r.epoch;
                rc->seq = r.seq;
            } else {
                w->journal_errors++;
                cs_log_error("webhooks: journal: out of memory restoring a delivery cursor");
            }
        }
    } else if (r.kind == CS_WHREC_DISC) {
        w->rs_disc = 1;
        w->rs_disc_epoch = r.epoch;
        w->rs_disc_next = r.seq;
    }
    cs_whrec_release(&r);
}

/* A journaled cursor, reopened where it stood (its execution's epoch checked: a history gone or begun
 * anew is a stream.gap, dead-lettered as ever). */
static void pair_restore(wh_ep_t *ep, const char *exec, uint64_t epoch, uint64_t seq)
{
    cs_webhooks_t *w = ep->w;
    size_t len = strlen(exec);
    char cur[CS_CURSOR_MAX];
    wh_pair_t *p;

    HASH_FIND(hh, ep->pairs, exec, len, p);
    if (p != NULL)
        return;
    if ((p = calloc(1, sizeof(*p))) == NULL) {
        dead_letter(ep, exec, seq, NULL, NULL, 0, "out of memory for a delivery cursor after the restart");
        return;
    }
    p->ep = ep;
    memcpy(p->exec, exec, len);
    size_t n = cs_cursor_format(cur, sizeof(cur), epoch, seq > 0 ? seq - 1 : 0);
    cs_start_t start = {.kind = CS_START_AFTER_ID, .id = cur, .id_len = n};
    cs_filter_t all = {0};
    if (cs_sub_open(w->d->store, &p->sub, exec, len, &start, &all, &pair_sub_ops, p) != 0) {
        free(p);
        dead_letter(ep, exec, seq, NULL, NULL, 0, "out of memory for a delivery cursor after the restart");
        return;
    }
    cs_timer_init(&p->retry, w->d->loop, on_retry, p);
    HASH_ADD(hh, ep->pairs, exec, len, p);
    ep->n_pairs++;
    w->n_pairs++;
    mark_dirty(p);
}

/* After persist.c handed over the records: registrations (each URL checked against webhooks.allow as it
 * is now), then cursors (an endpoint no longer there drops its cursors with a log line), then discovery
 * from where it stood. */
static void restore(cs_webhooks_t *w)
{
    const cs_config_t *cfg = w->d->cfg;
    size_t n_regs = 0, n_curs = 0, n_dropped = 0;
    wh_rs_reg_t *rr, *rrt;
    wh_rs_cur_t *rc, *rct;

    HASH_ITER(hh, w->rs_regs, rr, rrt)
    {
        wh_reg_t *reg;
        int any = 0;
        if (w->n_regs >= cfg->webhook_max_registrations) {
            cs_log_warn("webhooks: the registration of %s is not restored: webhooks.max_registrations (%zu) "
                        "held",
                        rr->exec, w->n_regs);
            continue;
        }
        if ((reg = calloc(1, sizeof(*reg))) == NULL)
            break;
        memcpy(reg->exec, rr->exec, sizeof(reg->exec));
        for (int k = 0; k < WH_KINDS; k++) {
            json_t *o = json_object_get(rr->json, cs_whrec_kind_names[k]);
            const char *url = json_string_value(json_object_get(o, "url"));
            const char *auth = json_string_value(json_object_get(o, "auth"));
            char name[CS_EXECUTION_ID_MAX + 16];
            if (url == NULL)
                continue;
            if (!cs_webhook_url_ok(url) ||
                !cs_webhook_allowed(url, cfg->webhook_allow, cfg->n_webhook_allow)) {
                cs_log_warn("webhooks: %s of %s is not restored: its URL is no longer in webhooks.allow",
                            wh_kind_fields[k], rr->exec);
                continue;
            }
            char *a = auth != NULL ? strdup(auth) : NULL;
            snprintf(name, sizeof(name), "%s:%s", wh_kind_names[k], reg->exec);
            wh_ep_t *ep = (auth == NULL || a != NULL) ? ep_add(w, name, url, a) : NULL;
            if (ep == NULL) {
                free(a);
                cs_log_error("webhooks: out of memory restoring %s", name);
                continue;
            }
            ep->kind = 1u << k;
            ep->exec = strdup(reg->exec);
            reg->ep[k] = ep;
            any = 1;
        }
        if (!any) {
            free(reg);
            continue;
        }
        reg->last_ms = cs_loop_now(w->d->loop);
        HASH_ADD(hh, w->regs, exec, strlen(reg->exec), reg);
        w->n_regs++;
        n_regs++;
    }
    HASH_ITER(hh, w->rs_curs, rc, rct)
    {
        const char *name = rc->key + 1, *exec = name + strlen(name) + 1;
        wh_ep_t *ep = ep_named(w, name, exec, rc->key[0] == 'r');
        if (ep == NULL) {
            cs_log_info("webhooks: endpoint %s is gone (removed from webhooks.endpoints, or its registration "
                        "was not restored): its deliveries of execution %s from seq %llu are dropped",
                        name, exec, (unsigned long long)rc->seq);
            cs_change_t c = {.kind = (cs_change_kind_t)CS_WHREC_CURSOR,
                             .exec = exec,
                             .exec_len = strlen(exec),
                             .type = name,
                             .type_len = strlen(name),
                             .epoch = rc->epoch,
                             .seq = rc->seq,
                             .status = 1 | (rc->key[0] == 'r' ? 2 : 0),
                             .unix_ms = cs_unix_ms()};
            journal_rec(w, &c); /* said once: the next start does not find it again */
            n_dropped++;
            continue;
        }
        pair_restore(ep, exec, rc->epoch, rc->seq);
        n_curs++;
    }
    uint64_t from = 0;
    if (w->rs_disc && w->disc_open && w->rs_disc_epoch == cs_store_global_epoch(w->d->store)) {
        char cur[CS_CURSOR_MAX];
        size_t n =
            cs_cursor_format(cur, sizeof(cur), w->rs_disc_epoch, w->rs_disc_next ? w->rs_disc_next - 1 : 0);
        cs_start_t start = {.kind = CS_START_AFTER_ID, .id = cur, .id_len = n};
        cs_filter_t all = {0};
        cs_sub_close(&w->disc);
        w->disc_open = cs_sub_open(w->d->store, &w->disc, NULL, 0, &start, &all, &disc_ops, w) == 0;
        if (!w->disc_open)
            cs_log_error("webhooks: out of memory reopening discovery: no new event is delivered");
        from = w->rs_disc_next;
    }
    if (n_regs > 0 || n_curs > 0 || n_dropped > 0 || from > 0)
        cs_log_info(
            "webhooks: restored from the journal: %zu registrations, %zu delivery cursors (%zu dropped), "
            "discovery from global seq %llu",
            n_regs, n_curs, n_dropped, (unsigned long long)from);
    rs_free(w);
    cs_defer(w->d->loop, &w->pump_d, pump, w);
}

/* ---- life ---- */

int cs_webhooks_new(cs_webhooks_t **out, cs_daemon_t *d, char *err, size_t errlen)
{
    cs_webhooks_t *w = calloc(1, sizeof(*w));
    json_t *e;
    size_t i;

    if (w == NULL)
        goto nomem;
    w->d = d;
    if (cs_curlm_new(&w->m, d->loop, on_done) != 0)
        goto nomem;
    json_array_foreach(d->cfg->webhook_endpoints, i, e)
    {
        if (ep_from_conf(w, e, err, errlen) != 0)
            goto fail;
    }
    cs_start_t start = {.kind = CS_START_NOW};
    cs_filter_t all = {0};
    if (cs_sub_open(d->store, &w->disc, NULL, 0, &start, &all, &disc_ops, w) != 0)
        goto nomem;
    w->disc_open = 1;
    cs_sub_park(&w->disc);
    cs_timer_init(&w->sweep, d->loop, on_sweep, w);
    cs_timer_start(&w->sweep, WH_SWEEP_MS);
    cs_timer_init(&w->save_t, d->loop, on_save_timer, w);
    if (d->persist != NULL) {
        /* The journal's webhook records (read at start) come back now; snapshots carry our state. */
        cs_persist_module_t mod = {.replay = wh_replay, .snapshot = wh_snapshot, .data = w};
        cs_persist_set_module(d->persist, &mod);
        restore(w);
    }
    cs_timer_init(&w->budget_t, d->loop, on_budget, w);
    *out = w;
    return 0;
nomem:
    snprintf(err, errlen, "webhooks: out of memory");
fail:
    cs_webhooks_free(w);
    return -ENOMEM;
}

void cs_webhooks_free(cs_webhooks_t *w)
{
    wh_reg_t *reg, *tmp;

    if (w == NULL)
        return;
    if (journaled(w)) {
        /* Where each cursor stands goes to the journal (persist closes after us); the module leaves it. */
        save_run(w, 1);
        cs_persist_set_module(w->d->persist, NULL);
    }
    cs_defer_cancel(w->d->loop, &w->save_d);
    cs_timer_stop(&w->save_t);
    rs_free(w);
    cs_defer_cancel(w->d->loop, &w->pump_d);
    cs_timer_stop(&w->sweep);
    cs_timer_stop(&w->budget_t);
    for (wh_ep_t *ep = w->eps; ep != NULL; ep = ep->next) {
        wh_pair_t *p, *pt;
        HASH_ITER(hh, ep->pairs, p, pt)
        {
            HASH_DEL(ep->pairs, p);
            cs_timer_stop(&p->retry);
            pair_abort(p);
            pair_release_cur(p);
            cs_sub_close(&p->sub);
            free(p);
        }
        ep->n_pairs = 0;
    }
    HASH_ITER(hh, w->regs, reg, tmp)
    {
        HASH_DEL(w->regs, reg);
        free(reg);
    }
    wh_claim_t *cl, *ct;
    HASH_ITER(hh, w->claims, cl, ct)
    {
        cs_cluster_claim_cancel(cl->req);
        HASH_DEL(w->claims, cl);
        free(cl);
    }
    while (w->eps != NULL)
        ep_free(w->eps);
    if (w->disc_open)
        cs_sub_close(&w->disc);
    cs_curlm_free(w->m);
    free(w);
}

/* ---- reading ---- */

static uint64_t ep_lag(const wh_ep_t *ep)
{
    uint64_t lag = 0;
    for (const wh_pair_t *p = ep->pairs; p != NULL; p = p->hh.next) {
        uint64_t first, next;
        if (p->sub.exec == NULL)
            continue;
        cs_exec_seqs(p->sub.exec, &first, &next);
        uint64_t at = p->cur != NULL ? p->cur->seq : p->sub.next;
        if (next > at)
            lag += next - at;
    }
    return lag;
}

json_t *cs_webhooks_json(cs_webhooks_t *w)
{
    json_t *arr = json_array(), *root;
    char ts[32];

    if (arr == NULL)
        return NULL;
    for (const wh_ep_t *ep = w->eps; ep != NULL; ep = ep->next) {
        json_t *dls = json_array();
        for (size_t i = 0; dls != NULL && i < ep->n_dl; i++) {
            const wh_dead_t *dl = &ep->dl[i];
            cs_format_timestamp(dl->at_unix_ms, ts, sizeof(ts));
            json_array_append_new(
                dls, json_pack("{s:s, s:I, s:s?, s:s, s:s, s:i, s:s}", "execution_id", dl->exec, "seq",
                               (json_int_t)dl->seq, "event_id", dl->event_id[0] ? dl->event_id : NULL, "type",
                               dl->type, "reason", dl->reason, "attempts", (int)dl->attempts, "at", ts));
        }
        /* The query string may carry a credential: not shown. */
        size_t ulen = strcspn(ep->url, "?#");
        json_t *o = json_pack(
            "{s:s, s:s%, s:s, s:s?, s:s?, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s?, "
            "s:o*}",
            "name", ep->name, "url", ep->url, ulen, "source", ep->kind ? "execution" : "config",
            "execution_id", ep->exec, "kind",
            ep->kind == CS_WEBHOOK_HUMAN  ? "humanInputWebhook"
            : ep->kind == CS_WEBHOOK_TASK ? "taskWebhookUrl"
            : ep->kind == CS_WEBHOOK_STEP ? "stepWebhookUrl"
            : ep->kind == CS_WEBHOOK_CREW ? "crewWebhookUrl"
                                          : NULL,
            "signed", ep->key != NULL, "lag", (json_int_t)ep_lag(ep), "in_flight", (json_int_t)ep->in_flight,
            "executions", (json_int_t)ep->n_pairs, "queued", (json_int_t)ep->n_ready, "delivered",
            (json_int_t)ep->ok, "failed", (json_int_t)ep->failed, "retried", (json_int_t)ep->retried, "dead",
            (json_int_t)ep->dead, "gaps", (json_int_t)ep->gaps, "last_error",
            ep->last_error[0] ? ep->last_error : NULL, "dead_letters", dls);
        if (o == NULL || json_array_append_new(arr, o) != 0) {
            json_decref(arr);
            return NULL;
        }
    }
    root = json_pack("{s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:b, s:I}", "endpoints", arr, "in_flight",
                     (json_int_t)w->in_flight, "delivered", (json_int_t)w->ok, "failed",
                     (json_int_t)w->failed, "retried", (json_int_t)w->retried, "dead", (json_int_t)w->dead,
                     "registrations", (json_int_t)w->n_regs, "held_for_ingest", w->held != NULL,
                     "budget_waits", (json_int_t)w->budget_waits);
    return root;
}

/* One sample in the /metrics style of http.c: unlabelled, an integer. */
static int wh_metric(cs_buf_t *b, int rc, const char *name, const char *type, const char *help,
                     unsigned long long v)
{
    if (rc != 0)
        return rc;
    return cs_buf_printf(b, "# HELP crewstream_%s %s\n# TYPE crewstream_%s %s\ncrewstream_%s %llu\n", name,
                         help, name, type, name, v);
}

int cs_webhooks_metrics(cs_webhooks_t *w, cs_buf_t *b)
{
    uint64_t lag = 0;
    int rc = 0;

    for (const wh_ep_t *ep = w->eps; ep != NULL; ep = ep->next)
        lag += ep_lag(ep);
    rc = wh_metric(b, rc, "webhook_deliveries_total", "counter", "Webhook deliveries answered 2xx.", w->ok);
    rc = wh_metric(b, rc, "webhook_failures_total", "counter",
                   "Webhook attempts that did not get a 2xx (errors, timeouts, other statuses).", w->failed);
    rc = wh_metric(b, rc, "webhook_retries_total", "counter",
                   "Webhook attempts scheduled again after a failure.", w->retried);
    rc = wh_metric(b, rc, "webhook_dead_letters_total", "counter",
                   "Webhook events given up (logged and listed by GET /v1/webhooks).", w->dead);
    rc =
        wh_metric(b, rc, "webhook_gaps_total", "counter",
                  "Events that left the ring before a webhook sent them (dead letters stream.gap).", w->gaps);
    rc = wh_metric(
        b, rc, "webhook_overflow_total", "counter",
        "Events dead-lettered because their endpoint had webhooks.max_executions executions waiting.",
        w->overflow);
    rc = wh_metric(b, rc, "webhook_in_flight", "gauge", "Webhook requests in flight.", w->in_flight);
    rc = wh_metric(b, rc, "webhook_cursors", "gauge",
                   "Webhook delivery cursors open ((endpoint, execution) pairs with something to send).",
                   w->n_pairs);
    rc = wh_metric(b, rc, "webhook_lag", "gauge", "Webhook events not yet delivered, summed over cursors.",
                   lag);
    rc = wh_metric(b, rc, "webhook_budget_waits_total", "counter",
                   "Times webhook requests waited because ingest was busy and they had used their share of "
                   "the loop.",
                   w->budget_waits);
    rc =
        wh_metric(b, rc, "webhook_held_for_ingest", "gauge",
                  "1 while ready webhook requests wait for ingest to leave them loop time.", w->held != NULL);
    rc = wh_metric(b, rc, "webhook_registrations", "gauge", "Executions with webhook URLs registered.",
                   w->n_regs);
    rc = wh_metric(b, rc, "webhook_latency_ms_sum", "counter",
                   "Milliseconds from sending a webhook to its 2xx, summed.", w->lat_sum_ms);
    rc = wh_metric(b, rc, "webhook_latency_ms_count", "counter",
                   "Webhook deliveries timed (as deliveries_total).", w->lat_count);
    rc = wh_metric(b, rc, "webhook_latency_ms_max", "gauge",
                   "The longest webhook delivery so far, in milliseconds.", w->lat_max_ms);
    if (clustered(w)) {
        rc = wh_metric(b, rc, "webhook_cluster_claims_mine_total", "counter",
                       "Executions whose webhooks this node delivers (it claimed them first in Redis).",
                       w->claims_mine);
        rc = wh_metric(b, rc, "webhook_cluster_claims_other_total", "counter",
                       "Executions whose webhooks another node delivers (its claim in Redis came first).",
                       w->claims_other);
        rc = wh_metric(b, rc, "webhook_cluster_claims_failed_total", "counter",
                       "Claims Redis did not answer (not connected, a timeout): asked again, events wait.",
                       w->claims_failed);
        rc = wh_metric(b, rc, "webhook_cluster_registrations_elsewhere_total", "counter",
                       "Executions with URLs registered on this node that another node delivers (logged).",
                       w->regs_elsewhere);
        rc = wh_metric(b, rc, "webhook_cluster_claims", "gauge", "Claims known on this node.", w->n_claims);
    }
    rc = wh_metric(b, rc, "webhook_journal_errors_total", "counter",
                   "Webhook journal records not written or not read back (logged).", w->journal_errors);
    return rc;
}
