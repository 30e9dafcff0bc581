/*
 * tail.c - `crewstream tail`: follow one execution (or every one) over SSE with libcurl, as a live
 * tree or raw JSON lines. The id of the last event handled is kept; when the connection drops
 * (daemon restart, network, a stall) the tool reconnects with backoff and sends it as
 * Last-Event-ID, so the daemon resumes exactly after it: nothing repeats, nothing is missed, and
 * what the daemon can no longer supply arrives as a visible stream.gap.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "cli.h"

/* An event line is at most limits.max_event_bytes (1 MiB by default); allow for a raised one. */
#define TAIL_MAX_EVENT (16u << 20)
/* No byte (not even a heartbeat comment) for this long means the connection is dead. */
#define TAIL_STALL_S 75L

static const char usage[] =
    "Usage: crewstream tail [EXECUTION | --all] [options]\n"
    "\n"
    "Follow an execution's events live, as a tree (like a crew platform's terminal view) or as\n"
    "raw JSON lines. History comes first (everything the daemon holds), then live events. The\n"
    "stream waits for an execution nobody has posted to yet. A dropped connection is resumed\n"
    "after the last event shown (Last-Event-ID): nothing repeats and nothing is missed; when the\n"
    "daemon no longer holds what was missed, a gap line says so.\n"
    "\n"
    "Options:\n"
    "  --all              every execution (GET /v1/events; needs a token with read on \"*\")\n"
    "  --json             print each event's JSON, one per line, as the daemon sent it\n"
    "  --types LIST       only these types: comma-separated names or prefixes (run.*,log,task_*)\n"
    "  --since-now        skip the history: only events from now on\n"
    "  --exit-on-end      stop after the run ends (run.completed/failed/canceled,\n"
    "                     crew_kickoff_completed/failed, or flow_finished/failed once a\n"
    "                     flow_started went by); default: follow forever\n"
    "  -v, --verbose      print LLM stream chunks as text (default: one line counting them)\n"
    "  --color WHEN       auto (default: when stdout is a terminal and NO_COLOR is unset),\n"
    "                     always, never\n"
    "  -h, --help         this help\n"
    "  (global: --url, --token, --socket; see crewstream --help)\n"
    "\n"
    "Exit codes: 0 the run ended (--exit-on-end); 1 the answer is not an event stream; 2 usage;\n"
    "3 the daemon cannot be reached at start (later breaks are retried); 6 token refused;\n"
    "7 with --exit-on-end, the run failed or was canceled; 130 interrupted (Ctrl-C: how a\n"
    "tail without --exit-on-end ends).\n";

typedef struct tail {
    cli_ctx_t *ctx;
    cli_render_t *render;
    cli_sse_t sse;
    const char *exec;
    const char *show_types; /* the user's --types, applied here when the server filter is wider */
    int all, json, exit_on_end;
    int in_flow;         /* a flow_started went by: crews end inside the flow */
    long long since_seq; /* --since-now on one execution: its last seq at start, else -1 */
    /* the current connection */
    CURL *c;
    int checked, bad, streaming;
    char errbody[2048];
    size_t errlen;
    /* outcome */
    int ended, end_failed, too_big;
} tail_t;

static void on_signal(int sig)
{
    (void)sig;
    cli_interrupted = 1;
}

/* Does `type` match a --types list (exact names, or prefixes ending in '*')? */
static int types_match(const char *list, const char *type)
{
    const char *p = list;
    size_t tl = strlen(type);
    while (*p) {
        size_t n = strcspn(p, ",");
        if (n > 0 && p[n - 1] == '*') {
            if (tl >= n - 1 && strncmp(type, p, n - 1) == 0)
                return 1;
        } else if (n == tl && strncmp(type, p, n) == 0) {
            return 1;
        }
        p += n;
        if (*p == ',')
            p++;
    }
    return 0;
}

static int on_event(void *arg, const char *id, const char *event, const char *data, size_t len)
{
    tail_t *t = arg;
    json_t *ev = json_loadb(data, len, 0, NULL);
    const char *type = json_string_value(json_object_get(ev, "type"));
    int failed = 0;
    (void)id;
    (void)event;

    if (type != NULL && strcmp(type, "heartbeat") == 0) {
        json_decref(ev);
        return 0;
    }
    if (t->show_types == NULL || type == NULL || strcmp(type, "stream.gap") == 0 ||
        types_match(t->show_types, type)) {
        if (t->json) {
            fwrite(data, 1, len, stdout);
            fputc('\n', stdout);
            fflush(stdout);
        } else if (ev != NULL) {
            cli_render_event(t->render, ev);
        } else {
            cli_render_note(t->render, "(not JSON) %.*s", (int)(len > 200 ? 200 : len), data);
        }
    }
    if (type != NULL && strcmp(type, "flow_started") == 0)
        t->in_flow = 1;
    if (t->exit_on_end && type != NULL && cli_type_is_end(type, t->in_flow, &failed)) {
        t->ended = 1;
        t->end_failed = failed;
        json_decref(ev);
        return 1;
    }
    json_decref(ev);
    return 0;
}

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *arg)
{
    tail_t *t = arg;
    size_t n = size * nmemb;

    if (!t->checked) {
        long status = 0;
        char *ct = NULL;
        t->checked = 1;
        curl_easy_getinfo(t->c, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(t->c, CURLINFO_CONTENT_TYPE, &ct);
        t->bad = status != 200 || ct == NULL || strncmp(ct, "text/event-stream", 17) != 0;
        t->streaming = !t->bad;
    }
    if (t->bad) {
        size_t room = sizeof(t->errbody) - 1 - t->errlen;
        size_t k = n < room ? n : room;
        memcpy(t->errbody + t->errlen, ptr, k);
        t->errlen += k;
        t->errbody[t->errlen] = '\0';
        return n;
    }
    int rc = cli_sse_feed(&t->sse, ptr, n);
    if (rc < 0)
        t->too_big = 1;
    return rc != 0 ? 0 : n;
}

static int on_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)arg;
    (void)dt;
    (void)dn;
    (void)ut;
    (void)un;
    return cli_interrupted ? 1 : 0;
}

/* Sleeps `ms`, waking early on Ctrl-C. */
static void nap(long ms)
{
    while (ms > 0 && !cli_interrupted) {
        long step = ms < 100 ? ms : 100;
        struct timespec ts = {0, step * 1000000L};
        nanosleep(&ts, NULL);
        ms -= step;
    }
}

static char *stream_url(tail_t *t, const char *types, int since_now)
{
    char *esc_exec = t->all ? NULL : cli_escape(t->exec);
    char *esc_types = types ? cli_escape(types) : NULL;
    size_t n = 64 + (esc_exec ? strlen(esc_exec) : 0) + (esc_types ? strlen(esc_types) : 0);
    char *path = malloc(n), *url = NULL;
    if (path != NULL && (t->all || esc_exec != NULL) && (types == NULL || esc_types != NULL)) {
        int k = t->all ? snprintf(path, n, "/v1/events")
                       : snprintf(path, n, "/v1/executions/%s/events", esc_exec);
        char sepc = '?';
        if (esc_types != NULL) {
            k += snprintf(path + k, n - k, "%ctypes=%s", sepc, esc_types);
            sepc = '&';
        }
        if (since_now && t->since_seq >= 0)
            snprintf(path + k, n - k, "%csince_seq=%lld", sepc, t->since_seq);
        else if (since_now)
            snprintf(path + k, n - k, "%csince=now", sepc);
        url = cli_url(t->ctx, path);
    }
    free(path);
    free(esc_exec);
    free(esc_types);
    return url;
}

/* Turns a refused stream (non-200) into the one-line error and its exit code. */
static int refused(tail_t *t)
{
    cli_resp_t r = {0};
    int rc;
    curl_easy_getinfo(t->c, CURLINFO_RESPONSE_CODE, &r.status);
    r.body = t->errbody;
    r.len = t->errlen;
    r.json = json_loadb(t->errbody, t->errlen, 0, NULL);
    if (r.status == 200) {
        cli_err("%s does not answer with an event stream; is --url a crewstreamd?", t->ctx->url);
        rc = CLI_EFAIL;
    } else {
        rc = cli_http_status_exit(t->ctx, &r, NULL);
    }
    json_decref(r.json);
    return rc;
}

/*
 * --since-now on one execution: "now" is its last seq at start (0 when nobody has posted yet), so
 * that a connection that breaks before the first event resumes from there with ?since_seq=
 * instead of a new "now" that would skip what was posted during the break.
 */
static int last_seq_now(tail_t *t)
{
    cli_resp_t r = {0};
    char *esc = cli_escape(t->exec);
    char *path = esc != NULL ? malloc(strlen(esc) + 32) : NULL;
    int rc;
    if (path == NULL) {
        free(esc);
        cli_err("out of memory");
        return CLI_EFAIL;
    }
    sprintf(path, "/v1/executions/%s", esc);
    rc = cli_http(t->ctx, "GET", path, NULL, &r);
    if (rc == CLI_OK && r.status == 404) {
        t->since_seq = 0;
    } else if (rc == CLI_OK && (rc = cli_http_status_exit(t->ctx, &r, NULL)) == CLI_OK) {
        const json_t *v = json_object_get(r.json, "last_seq");
        if (!json_is_integer(v)) {
            cli_err("%s did not answer with a status object; is --url a crewstreamd?", t->ctx->url);
            rc = CLI_EFAIL;
        } else {
            t->since_seq = (long long)json_integer_value(v);
        }
    }
    cli_resp_free(&r);
    free(path);
    free(esc);
    return rc;
}

static int follow(tail_t *t, const char *server_types, int since_now)
{
    char errbuf[CURL_ERROR_SIZE];
    long backoff = 250;
    int ever_connected = 0, lost = 0, rc = CLI_OK;

    for (;;) {
        struct curl_slist *h = NULL;
        char idline[600];
        char *url = stream_url(t, server_types, since_now && t->sse.last_id[0] == '\0');
        time_t began = time(NULL);

        if (url == NULL) {
            cli_err("out of memory");
            return CLI_EFAIL;
        }
        t->c = curl_easy_init();
        if (t->c == NULL) {
            free(url);
            cli_err("out of memory");
            return CLI_EFAIL;
        }
        h = curl_slist_append(h, "Accept: text/event-stream");
        h = curl_slist_append(h, "Cache-Control: no-cache");
        if (t->sse.last_id[0] != '\0') {
            snprintf(idline, sizeof(idline), "Last-Event-ID: %s", t->sse.last_id);
            h = curl_slist_append(h, idline);
        }
        h = cli_http_headers(t->ctx, h);
        cli_http_common(t->ctx, t->c);
        errbuf[0] = '\0';
        curl_easy_setopt(t->c, CURLOPT_URL, url);
        curl_easy_setopt(t->c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(t->c, CURLOPT_ERRORBUFFER, errbuf);
        curl_easy_setopt(t->c, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(t->c, CURLOPT_WRITEDATA, t);
        curl_easy_setopt(t->c, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(t->c, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(t->c, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(t->c, CURLOPT_LOW_SPEED_TIME, TAIL_STALL_S);
        curl_easy_setopt(t->c, CURLOPT_TCP_KEEPALIVE, 1L);
        t->checked = t->bad = t->streaming = 0;
        t->errlen = 0;
        t->errbody[0] = '\0';
        cli_sse_reset_stream(&t->sse);

        CURLcode cc = curl_easy_perform(t->c);
        int was_streaming = t->streaming;
        long status = 0;
        curl_easy_getinfo(t->c, CURLINFO_RESPONSE_CODE, &status);

        if (t->ended) {
            rc = t->end_failed ? CLI_ERUNFAILED : CLI_OK;
        } else if (cli_interrupted) {
            rc = CLI_EINTR;
        } else if (t->too_big) {
            cli_err("an event larger than %u MiB arrived; giving up", TAIL_MAX_EVENT >> 20);
            rc = CLI_EFAIL;
        } else if (t->bad && !(status >= 500 && ever_connected)) {
            rc = refused(t);
        } else if (cc != CURLE_OK && !ever_connected && !was_streaming) {
            rc = cli_http_transport_error(t->ctx, cc, errbuf);
        } else {
            rc = -1; /* reconnect */
        }
        curl_easy_cleanup(t->c);
        t->c = NULL;
        curl_slist_free_all(h);
        free(url);
        if (rc >= 0) {
            if (!t->json)
                cli_render_flush(t->render);
            return rc;
        }

        /* The stream ended or broke: come back after a pause, from the last event seen. */
        if (was_streaming) {
            ever_connected = 1;
            if (time(NULL) - began >= 5)
                backoff = 250;
        }
        if (!t->json)
            cli_render_flush(t->render);
        if (!lost || was_streaming) {
            fprintf(stderr, "%screwstream: the stream %s (%s); reconnecting%s%s…%s\n",
                    cli_c(t->ctx->color_err, CLI_DIM), was_streaming ? "ended" : "is still down",
                    cc == CURLE_OK ? "closed by the daemon"
                    : t->bad       ? "the daemon answered an error"
                    : errbuf[0]    ? errbuf
                                   : curl_easy_strerror(cc),
                    t->sse.last_id[0] ? " after " : "", t->sse.last_id, cli_c(t->ctx->color_err, CLI_RESET));
            lost = 1;
        }
        nap(backoff);
        if (cli_interrupted)
            return CLI_EINTR;
        backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
    }
}

int cli_cmd_tail(cli_ctx_t *ctx, int argc, char **argv)
{
    enum { O_ALL = 1, O_JSON, O_TYPES, O_SINCE_NOW, O_EXIT_ON_END, O_COLOR };
    static const struct option longopts[] = {
        CLI_GLOBAL_LONGOPTS,
        {"all", no_argument, NULL, O_ALL},
        {"json", no_argument, NULL, O_JSON},
        {"types", required_argument, NULL, O_TYPES},
        {"since-now", no_argument, NULL, O_SINCE_NOW},
        {"exit-on-end", no_argument, NULL, O_EXIT_ON_END},
        {"verbose", no_argument, NULL, 'v'},
        {"color", required_argument, NULL, O_COLOR},
        {"colour", required_argument, NULL, O_COLOR},
        {0},
    };
    static const char ends[] =
        "run.completed,run.failed,run.canceled,crew_kickoff_completed,crew_kickoff_failed,flow_started,"
        "flow_finished,flow_completed,flow_failed";
    tail_t t = {.ctx = ctx};
    const char *types = NULL;
    char *server_types = NULL;
    int c, verbose = 0, since_now = 0, color = ctx->color_out, rc;

    opterr = 0;
    while ((c = getopt_long(argc, argv, ":hv", longopts, NULL)) != -1) {
        if (cli_global_opt(ctx, c, optarg))
            continue;
        switch (c) {
        case 'h':
            fputs(usage, stdout);
            return CLI_OK;
        case 'v':
            verbose = 1;
            break;
        case O_ALL:
            t.all = 1;
            break;
        case O_JSON:
            t.json = 1;
            break;
        case O_TYPES:
            types = optarg;
            break;
        case O_SINCE_NOW:
            since_now = 1;
            break;
        case O_EXIT_ON_END:
            t.exit_on_end = 1;
            break;
        case O_COLOR:
            if (strcmp(optarg, "always") == 0)
                color = 1;
            else if (strcmp(optarg, "never") == 0)
                color = 0;
            else if (strcmp(optarg, "auto") != 0)
                return cli_usage_error(ctx, "--color: expected auto, always or never");
            break;
        default:
            return cli_bad_option(ctx, c, argc, argv);
        }
    }
    if (optind < argc)
        t.exec = argv[optind++];
    if (optind < argc)
        return cli_usage_error(ctx, "unexpected argument '%s'", argv[optind]);
    if (t.exec == NULL && !t.all)
        return cli_usage_error(ctx, "give an execution id, or --all for every execution");
    if (t.exec != NULL && t.all)
        return cli_usage_error(ctx, "give an execution id or --all, not both");
    if (types != NULL &&
        (types[0] == '\0' || strspn(types, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                           "0123456789._-*,") != strlen(types)))
        return cli_usage_error(ctx, "--types '%s': expected names or prefixes like run.*,log", types);

    /* With --exit-on-end the end events must arrive even when --types leaves them out: ask the
     * daemon for them too, and show only what the user asked for. */
    if (types != NULL && t.exit_on_end) {
        size_t n = strlen(types) + sizeof(ends) + 2;
        server_types = malloc(n);
        if (server_types == NULL)
            return CLI_EFAIL;
        snprintf(server_types, n, "%s,%s", types, ends);
        t.show_types = types;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal; /* no SA_RESTART: a sleep or a read ends at once */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    cli_sse_init(&t.sse, TAIL_MAX_EVENT, on_event, &t);
    if (!t.json) {
        t.render = cli_render_new(stdout, color, verbose, t.all);
        if (t.render == NULL) {
            free(server_types);
            return CLI_EFAIL;
        }
    }
    t.since_seq = -1;
    if (since_now && !t.all && (rc = last_seq_now(&t)) != CLI_OK) {
        cli_sse_free(&t.sse);
        cli_render_free(t.render);
        free(server_types);
        return rc;
    }
    rc = follow(&t, server_types ? server_types : types, since_now);
    cli_sse_free(&t.sse);
    cli_render_free(t.render);
    free(server_types);
    return rc;
}
