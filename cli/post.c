/*
 * post.c - `crewstream post`: one event from flags, or NDJSON lines from stdin, over the ingest
 * socket with libcrewstream. Lines are pipelined (the library keeps a window of unacknowledged
 * lines and resends after a reconnection, exactly once); one output line per event, in order.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <crewstream/client.h>

#include "cli.h"

/* How long to wait for the daemon's reply to the last line before giving up. */
#define POST_ACK_TIMEOUT_MS 15000

static const char usage[] =
    "Usage: crewstream post -e EXECUTION -t TYPE [-f KEY=VALUE]... [--json OBJECT]\n"
    "       crewstream post [-e EXECUTION] < events.ndjson\n"
    "\n"
    "Post events to the daemon over its Unix socket (--socket). With -t, one event is built from\n"
    "the flags; without it, every line of stdin is one event (JSON object). Prints one line per\n"
    "event, in order: `seq N event ID` when stored (`(duplicate)` when it already was), or\n"
    "`error CODE: line N: detail` when refused (no line number for an event from the flags).\n"
    "\n"
    "Options:\n"
    "  -e, --execution ID   the execution_id (stdin: for lines that have none)\n"
    "  -t, --type TYPE      the event type (run.started, log, human_input_required, ...)\n"
    "  -f, --field K=V      a field; V is JSON when it parses as JSON (42, true, {\"a\":1},\n"
    "                       \"quoted\"), else a string. Repeatable.\n"
    "  --json OBJECT        fields as one JSON object (-f and -e/-t win over it)\n"
    "  -h, --help           this help\n"
    "  (global: --url, --token, --socket; see crewstream --help)\n"
    "\n"
    "Examples:\n"
    "  crewstream post -e run-42 -t log -f level=info -f message='Found 15 results'\n"
    "  crewstream post -e run-42 -t artifact --json '{\"name\":\"report.md\",\"size\":2481}'\n"
    "  printf '%s\\n' '{\"execution_id\":\"run-42\",\"type\":\"run.started\"}' | crewstream post\n"
    "\n"
    "Exit codes: 0 every event stored; 1 the daemon refused at least one (or a line was not a JSON\n"
    "object); 2 usage; 3 the socket cannot be reached.\n";

/* One output line waiting for its turn: an event's ticket, or a local refusal. */
typedef struct item {
    crewstream_ticket_t ticket; /* 0 for a local refusal */
    long lineno;                /* the stdin line (0: the event from the flags) */
    char *msg;
} item_t;

typedef struct post {
    cli_ctx_t *ctx;
    crewstream_client_t *c;
    item_t *q;
    size_t head, tail, cap;
    int refused;
} post_t;

static int push(post_t *p, crewstream_ticket_t ticket, long lineno, char *msg)
{
    if (p->tail == p->cap) {
        /* Compact first, grow when still full (the first push has no array to compact). */
        if (p->head > 0) {
            memmove(p->q, p->q + p->head, (p->tail - p->head) * sizeof(*p->q));
            p->tail -= p->head;
            p->head = 0;
        }
        if (p->tail == p->cap) {
            size_t cap = p->cap ? p->cap * 2 : 64;
            item_t *q = realloc(p->q, cap * sizeof(*q));
            if (q == NULL)
                return -ENOMEM;
            p->q = q;
            p->cap = cap;
        }
    }
    p->q[p->tail].ticket = ticket;
    p->q[p->tail].lineno = lineno;
    p->q[p->tail].msg = msg;
    p->tail++;
    return 0;
}

static void print_ack(post_t *p, const crewstream_ack_t *a, long lineno)
{
    const int C = p->ctx->color_out;
    if (a->ok) {
        printf("seq %llu event %s%s\n", (unsigned long long)a->seq, a->event_id,
               a->duplicate ? " (duplicate)" : "");
    } else {
        p->refused = 1;
        char where[32] = "";
        if (lineno > 0)
            snprintf(where, sizeof(where), "line %ld: ", lineno);
        printf("%serror %s: %s%s%s\n", cli_c(C, CLI_RED), a->error, where, a->detail, cli_c(C, CLI_RESET));
    }
}

/* Prints what is ready at the head of the queue; with a timeout, waits for each ack. */
static int drain(post_t *p, int timeout_ms)
{
    while (p->head < p->tail) {
        item_t *it = &p->q[p->head];
        if (it->ticket == 0) {
            printf("%serror %s%s\n", cli_c(p->ctx->color_out, CLI_RED), it->msg,
                   cli_c(p->ctx->color_out, CLI_RESET));
            free(it->msg);
            p->refused = 1;
        } else {
            crewstream_ack_t ack;
            int rc = crewstream_wait(p->c, it->ticket, timeout_ms, &ack);
            if (rc != 0 && timeout_ms == 0)
                return 0; /* not in yet (or reconnecting): the final drain waits */
            if (rc != 0)
                return rc;
            print_ack(p, &ack, it->lineno);
        }
        p->head++;
    }
    fflush(stdout);
    return 0;
}

static int lib_error(post_t *p, int err)
{
    if (err == -ETIMEDOUT) {
        cli_err("no reply from the daemon on %s within %d s", cli_socket_name(p->ctx),
                POST_ACK_TIMEOUT_MS / 1000);
        return CLI_EUNREACH;
    }
    if (err == -ENOENT || err == -ECONNREFUSED || err == -EACCES || err == -ENOTSOCK || err == -EPIPE ||
        err == -ECONNRESET || err == -ENAMETOOLONG) {
        cli_err("cannot reach the daemon's socket at %s (%s); is crewstreamd running?",
                cli_socket_name(p->ctx), strerror(-err));
        return CLI_EUNREACH;
    }
    cli_err("posting failed: %s", crewstream_strerror(err));
    return CLI_EFAIL;
}

/* Posts one event object (takes no reference); queues its ticket or a local refusal. */
static int post_one(post_t *p, json_t *ev, long lineno)
{
    crewstream_ticket_t ticket;
    char *line = json_dumps(ev, JSON_COMPACT);
    int rc;
    if (line == NULL)
        return -ENOMEM;
    rc = crewstream_post(p->c, line, &ticket);
    free(line);
    if (rc == -EMSGSIZE || rc == -EINVAL) {
        char *msg = NULL, where[32] = "";
        if (lineno > 0)
            snprintf(where, sizeof(where), "line %ld: ", lineno);
        if (asprintf(&msg, "%s: %s%s", rc == -EMSGSIZE ? "too_large" : "invalid_json", where,
                     crewstream_strerror(rc)) < 0)
            return -ENOMEM;
        return push(p, 0, lineno, msg);
    }
    if (rc != 0)
        return rc;
    return push(p, ticket, lineno, NULL);
}

static int is_blank(const char *s)
{
    return s[strspn(s, " \t\r\n")] == '\0';
}

int cli_cmd_post(cli_ctx_t *ctx, int argc, char **argv)
{
    enum { O_JSON = 1 };
    static const struct option longopts[] = {
        CLI_GLOBAL_LONGOPTS,
        {"execution", required_argument, NULL, 'e'},
        {"type", required_argument, NULL, 't'},
        {"field", required_argument, NULL, 'f'},
        {"json", required_argument, NULL, O_JSON},
        {0},
    };
    const char *exec = NULL, *type = NULL, *json_arg = NULL;
    json_t *fields = json_object(), *one = NULL;
    post_t p = {.ctx = ctx};
    crewstream_options_t opts;
    int c, rc = CLI_OK;
    char *line = NULL;
    size_t cap = 0;

    if (fields == NULL)
        return CLI_EFAIL;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":he:t:f:", longopts, NULL)) != -1) {
        if (cli_global_opt(ctx, c, optarg))
            continue;
        switch (c) {
        case 'h':
            fputs(usage, stdout);
            goto Exit;
        case 'e':
            exec = optarg;
            break;
        case 't':
            type = optarg;
            break;
        case 'f': {
            const char *eq = strchr(optarg, '=');
            if (eq == NULL || eq == optarg) {
                rc = cli_usage_error(ctx, "-f '%s': expected KEY=VALUE", optarg);
                goto Exit;
            }
            char *key = strndup(optarg, (size_t)(eq - optarg));
            json_t *v = json_loads(eq + 1, JSON_DECODE_ANY, NULL);
            if (v == NULL)
                v = json_string(eq + 1);
            if (key == NULL || v == NULL) {
                free(key);
                json_decref(v);
                rc = cli_usage_error(ctx, "-f '%s': the value is not valid UTF-8", optarg);
                goto Exit;
            }
            json_object_set_new(fields, key, v);
            free(key);
            break;
        }
        case O_JSON:
            json_arg = optarg;
            break;
        default:
            rc = cli_bad_option(ctx, c, argc, argv);
            goto Exit;
        }
    }
    if (optind < argc) {
        rc = cli_usage_error(ctx, "unexpected argument '%s'", argv[optind]);
        goto Exit;
    }
    if (type == NULL && (json_object_size(fields) > 0 || json_arg != NULL)) {
        rc = cli_usage_error(ctx, "-f and --json need -t TYPE (without -t, events are read from stdin)");
        goto Exit;
    }
    if (type != NULL && exec == NULL) {
        rc = cli_usage_error(ctx, "-t needs -e EXECUTION");
        goto Exit;
    }

    if (type != NULL) {
        json_error_t jerr;
        one = json_arg != NULL ? json_loads(json_arg, 0, &jerr) : json_object();
        if (one == NULL || !json_is_object(one)) {
            rc = cli_usage_error(ctx, "--json: expected a JSON object%s%s", one ? "" : ": ",
                                 one ? "" : jerr.text);
            goto Exit;
        }
        json_object_update(one, fields);
        json_object_set_new(one, "execution_id", json_string(exec));
        json_object_set_new(one, "type", json_string(type));
    }

    crewstream_options_init(&opts);
    opts.socket_path = ctx->socket;
    rc = crewstream_connect(&p.c, &opts);
    if (rc != 0) {
        rc = lib_error(&p, rc);
        goto Exit;
    }

    if (one != NULL) {
        rc = post_one(&p, one, 0);
    } else {
        long lineno = 0;
        /* Typed at a terminal: show each line's ack before the next line is read. */
        int interactive = isatty(STDIN_FILENO);
        ssize_t n;
        rc = 0;
        while (rc == 0 && (n = getline(&line, &cap, stdin)) >= 0) {
            json_error_t jerr;
            lineno++;
            if (is_blank(line))
                continue;
            json_t *ev = json_loadb(line, (size_t)n, 0, &jerr);
            if (ev == NULL || !json_is_object(ev)) {
                char *msg = NULL;
                if (asprintf(&msg, "invalid_json: line %ld: %s", lineno,
                             ev ? "not a JSON object" : jerr.text) < 0) {
                    json_decref(ev);
                    rc = -ENOMEM;
                    break;
                }
                json_decref(ev);
                rc = push(&p, 0, lineno, msg);
            } else {
                if (exec != NULL && json_object_get(ev, "execution_id") == NULL)
                    json_object_set_new(ev, "execution_id", json_string(exec));
                rc = post_one(&p, ev, lineno);
                json_decref(ev);
            }
            if (rc == 0)
                rc = drain(&p, interactive ? POST_ACK_TIMEOUT_MS : 0);
        }
    }
    if (rc == 0)
        rc = drain(&p, POST_ACK_TIMEOUT_MS);
    if (rc != 0) {
        rc = rc == -ENOMEM ? (cli_err("out of memory"), CLI_EFAIL) : lib_error(&p, rc);
        goto Exit;
    }
    rc = p.refused ? CLI_EFAIL : CLI_OK;

Exit:
    fflush(stdout);
    for (size_t i = p.head; i < p.tail; i++)
        free(p.q[i].msg);
    free(p.q);
    free(line);
    json_decref(fields);
    json_decref(one);
    crewstream_close(p.c);
    return rc;
}
