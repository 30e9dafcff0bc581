/*
 * test_ws_smoke.c - the WebSocket transport end to end in one process: our loop, a
 * store, a hand-made daemon, a TCP listener that hands every connection to
 * cs_ws_adopt, and a real client (Debian's python3-websockets) in a subprocess that
 * says what it saw. The C side answers its sync points (publish, switch auth, start a
 * stalled raw client, shut down) and checks the counters at the end.
 */
#include "../../common/buf.c"
#include "../../src/auth.c"
#include "../../src/cfgschema.c"
#include "../../src/answer.c"
#include "../../src/cursor.c"
#include "../../src/err.c"
#include "../../src/event.c"
#include "../../src/filter.c"
#include "../../src/head.c"
#include "../../src/hitl.c"
#include "../../src/httputil.c"
#include "../../src/log.c"
#include "../../src/loop.c"
#include "../../src/route.c"
#include "../../src/subscribe.c"
#include "../../src/status.c"
#include "../../src/store.c"
#include "../../src/ws.c"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <openssl/sha.h>

#include "ctest.h"

extern char **environ;

static const char *client_py =
    "import asyncio, base64, json, socket, sys\n"
    "import websockets.client, websockets.exceptions, websockets.frames\n"
    "port = int(sys.argv[1]); base = 'ws://127.0.0.1:%d' % port\n"
    "def say(*a): print(*a, flush=True)\n"
    "async def sync(what):\n"
    "    say('SYNC ' + what)\n"
    "    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)\n"
    "    assert line.strip() == 'go', line\n"
    "async def connect(path, **kw):\n"
    "    kw.setdefault('open_timeout', 5); kw.setdefault('close_timeout', 2); kw.setdefault('max_size', "
    "None)\n"
    "    return await websockets.client.connect(base + path, **kw)\n"
    "async def nxt(ws, t=5):\n"
    "    try: m = await asyncio.wait_for(ws.recv(), t)\n"
    "    except asyncio.TimeoutError: return None\n"
    "    assert isinstance(m, str), m\n"
    "    return json.loads(m)\n"
    "async def status(path, **kw):\n"
    "    try: ws = await connect(path, **kw)\n"
    "    except websockets.exceptions.InvalidStatusCode as e: return e.status_code\n"
    "    await ws.close(); return 101\n"
    "def raw(path, extra=''):\n"
    "    key = base64.b64encode(b'0123456789abcdef').decode()\n"
    "    s = socket.create_connection(('127.0.0.1', port), timeout=5)\n"
    "    s.sendall(('GET %s HTTP/1.1\\r\\nHost: x\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n'\n"
    "               'Sec-WebSocket-Key: %s\\r\\nSec-WebSocket-Version: 13\\r\\n%s\\r\\n' % (path, key, "
    "extra)).encode())\n"
    "    out = b''\n"
    "    while True:\n"
    "        c = s.recv(65536)\n"
    "        if not c: break\n"
    "        out += c\n"
    "    s.close(); return out\n"
    "async def main():\n"
    "    ws = await connect('/v1/executions/e1/ws')\n"
    "    got = [await nxt(ws) for _ in range(3)]\n"
    "    assert [(e['seq'], e['type']) for e in got] == [(1, 'run.started'), (2, 'log'), (3, "
    "'tool.called')], got\n"
    "    assert await nxt(ws, 0.3) is None\n"
    "    await sync('live')\n"
    "    got = [await nxt(ws) for _ in range(2)]\n"
    "    assert [e['seq'] for e in got] == [4, 5], got\n"
    "    await ws.send('{bad')\n"
    "    r = await nxt(ws)\n"
    "    assert r['type'] == 'error' and r['error'] == 'invalid_json', r\n"
    "    # Answering the open request: an ack frame, and the completion fans out to every stream.\n"
    "    ans = json.dumps({'event_id': 'q', 'human_feedback': 'ok', 'is_approve': True})\n"
    "    await ws.send(ans)\n"
    "    got = [await nxt(ws) for _ in range(2)]\n"
    "    ack = [g for g in got if g.get('type') == 'ack']\n"
    "    done = [g for g in got if g.get('type') == 'human_input_completed']\n"
    "    assert len(ack) == 1 and len(done) == 1, got\n"
    "    assert ack[0]['request_event_id'] == 'q' and ack[0]['seq'] == 6 == done[0]['seq'], got\n"
    "    assert done[0]['human_feedback'] == 'ok' and done[0]['is_approve'] is True, done\n"
    "    await ws.send(ans)\n"
    "    r = await nxt(ws)\n"
    "    assert r['type'] == 'error' and r['error'] == 'conflict', r\n"
    "    await ws.send(json.dumps({'event_id': 'nope', 'is_approve': True}))\n"
    "    r = await nxt(ws)\n"
    "    assert r['type'] == 'error' and r['error'] == 'conflict', r\n"
    "    await ws.send(json.dumps({'event_id': 7, 'is_approve': True}))\n"
    "    r = await nxt(ws)\n"
    "    assert r['type'] == 'error' and r['error'] == 'invalid_field', r\n"
    "    frag = json.dumps({'event_id': 'nope', 'is_approve': False, 'pad': 'x' * 10000})\n"
    "    await ws.send([frag[:5000], frag[5000:]])\n"
    "    r = await nxt(ws)\n"
    "    assert r['error'] == 'conflict', r\n"
    "    await ws.send('x' * 70000)\n"
    "    try:\n"
    "        await asyncio.wait_for(ws.recv(), 5); assert False, 'not closed'\n"
    "    except websockets.exceptions.ConnectionClosed: pass\n"
    "    assert ws.close_code == 1009, ws.close_code\n"
    "    say('OK messages')\n"
    "    # Options: types, since=now, resume, gap, the HITL route, Last-Event-ID.\n"
    "    ws = await connect('/v1/executions/e1/ws?types=log,tool.*')\n"
    "    got = [await nxt(ws) for _ in range(3)]\n"
    "    assert [e['seq'] for e in got] == [2, 3, 5], got\n"
    "    await ws.close()\n"
    "    ws = await connect('/v1/executions/e1/ws?since=now')\n"
    "    assert await nxt(ws, 0.3) is None\n"
    "    await ws.close()\n"
    "    ws = await connect('/v1/executions/e1/ws?last_event_id=3')\n"
    "    assert [(await nxt(ws))['seq'] for _ in range(2)] == [4, 5]\n"
    "    await ws.close()\n"
    "    ws = await connect('/v1/executions/e1/ws', extra_headers={'Last-Event-ID': '4'})\n"
    "    assert (await nxt(ws))['seq'] == 5\n"
    "    await ws.close()\n"
    "    ws = await connect('/v1/executions/e1/ws?last_event_id=nope')\n"
    "    g = await nxt(ws)\n"
    "    assert g['type'] == 'stream.gap' and g['first_seq'] == 1 and g['requested'] == 'nope', g\n"
    "    assert (await nxt(ws))['seq'] == 1\n"
    "    await ws.close()\n"
    "    ws = await connect('/v1/executions/big/ws', subprotocols=['crewstream'])\n"
    "    assert ws.subprotocol == 'crewstream', ws.subprotocol\n"
    "    e = await nxt(ws)\n"
    "    assert e['seq'] == 1 and e['body'] == 'p' * 300000, len(e.get('body', ''))\n"
    "    await ws.close()\n"
    "    ws = await connect('/ws/human-input/e1')\n"
    "    got = [await nxt(ws) for _ in range(2)]\n"
    "    assert [(e['seq'], e['type']) for e in got] == [(4, 'human_input_required'), (6, "
    "'human_input_completed')], got\n"
    "    assert await nxt(ws, 0.3) is None\n"
    "    await ws.close()\n"
    "    say('OK options')\n"
    "    # Keep-alive: heartbeat_s=1, so pings arrive on an idle connection.\n"
    "    pings = []\n"
    "    ws = await connect('/v1/executions/idle/ws', ping_interval=None)\n"
    "    real = ws.read_frame\n"
    "    async def counting(max_size):\n"
    "        f = await real(max_size)\n"
    "        if f.opcode == websockets.frames.Opcode.PING: pings.append(f.data)\n"
    "        return f\n"
    "    ws.read_frame = counting\n"
    "    assert await nxt(ws, 2.5) is None\n"
    "    assert ws.open and len(pings) >= 1, pings\n"
    "    await ws.close()\n"
    "    say('OK pings')\n"
    "    # Refusals before the upgrade, as real HTTP/1.1 responses.\n"
    "    assert await status('/nope/ws') == 404\n"
    "    assert await status('/v1/executions/e1/events') == 404\n"
    "    assert await status('/v1/executions/bad%20id/ws') == 400\n"
    "    assert await status('/v1/executions/e1/ws?since=later') == 400\n"
    "    assert await status('/v1/executions/e1/ws?types=,,') == 400\n"
    "    r = raw('/v1/executions/e1/ws', 'Sec-WebSocket-Protocol: other\\r\\n')\n"
    "    assert r.startswith(b'HTTP/1.1 400 ') and b'Sec-WebSocket-Protocol' in r, r[:300]\n"
    "    s = socket.create_connection(('127.0.0.1', port), timeout=5)\n"
    "    s.sendall(b'GET /v1/executions/e1/ws HTTP/1.1\\r\\nHost: x\\r\\nUpgrade: websocket\\r\\n'\n"
    "              b'Connection: keep-alive\\r\\nSec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\\r\\n'\n"
    "              b'Sec-WebSocket-Version: 13\\r\\n\\r\\n')\n"
    "    r = s.recv(4096); s.close()\n"
    "    assert r.startswith(b'HTTP/1.1 400 ') and b'Connection: Upgrade' in r, r[:300]\n"
    "    r = raw('/nope')\n"
    "    assert r.startswith(b'HTTP/1.1 404 '), r[:100]\n"
    "    head, body = r.split(b'\\r\\n\\r\\n', 1)\n"
    "    assert b'access-control-allow-origin: *' in head.lower(), head\n"
    "    assert json.loads(body)['error'] == 'not_found', body\n"
    "    say('OK refusals')\n"
    "    await sync('auth')\n"
    "    assert await status('/v1/executions/e1/ws') == 401\n"
    "    assert await status('/v1/executions/e1/ws?token=wrong') == 401\n"
    "    assert await status('/v1/executions/e1/ws', extra_headers={'Authorization': 'Bearer wrong'}) == "
    "401\n"
    "    assert await status('/v1/executions/e1/ws?token=secret') == 101\n"
    "    ws = await connect('/v1/executions/e1/ws?since=now&token=secret')\n"
    "    await ws.send(json.dumps({'event_id': 'q', 'is_approve': True}))\n"
    "    r = await nxt(ws)\n"
    "    assert r['type'] == 'error' and r['error'] == 'forbidden', r\n"
    "    await ws.close()\n"
    "    assert await status('/ws/human-input/e1', extra_headers={'Authorization': 'Bearer secret'}) == 101\n"
    "    assert await status('/v1/executions/e1/ws?token=narrow') == 403\n"
    "    assert await status('/v1/executions/e2/ws?token=narrow') == 101\n"
    "    r = raw('/v1/executions/e1/ws')\n"
    "    assert r.startswith(b'HTTP/1.1 401 '), r[:100]\n"
    "    head, body = r.split(b'\\r\\n\\r\\n', 1)\n"
    "    assert b'www-authenticate: bearer' in head.lower() and b'sec-websocket-accept' not in head.lower(), "
    "head\n"
    "    assert json.loads(body)['error'] == 'unauthorized', body\n"
    "    r = raw('/v1/executions/e1/ws?token=narrow')\n"
    "    assert r.startswith(b'HTTP/1.1 403 '), r[:100]\n"
    "    say('OK auth')\n"
    "    await sync('open')\n"
    "    await sync('stall')\n"
    "    # Shutdown: open sessions are closed with 1001, new handshakes refused with 503.\n"
    "    a = await connect('/v1/executions/e1/ws?since=now')\n"
    "    b = await connect('/ws/human-input/e1?since=now')\n"
    "    await sync('shutdown')\n"
    "    for w in (a, b):\n"
    "        try:\n"
    "            while True: await asyncio.wait_for(w.recv(), 5)\n"
    "        except websockets.exceptions.ConnectionClosed: pass\n"
    "    assert (a.close_code, a.close_reason) == (1001, 'server shutting down'), (a.close_code, "
    "a.close_reason)\n"
    "    assert b.close_code == 1001, b.close_code\n"
    "    assert await status('/v1/executions/e1/ws') == 503\n"
    "    say('OK shutdown')\n"
    "    say('DONE')\n"
    "asyncio.run(asyncio.wait_for(main(), 25))\n";

/* A hand-made WebSocket client for the stall phase: what it read, the tail of it. */
typedef struct raw {
    int fd;
    cs_io_t io;
    char tail[512];
    size_t tail_len, bytes;
    int saw_close, eof;
} raw_t;

typedef struct tctx {
    cs_daemon_t d;
    cs_config_t cfg;
    cs_auth_t *open_auth, *tok_auth;
    int lfd;
    uint16_t port;
    cs_io_t lio;
    cs_io_t pio; /* python's stdout */
    int to_py;   /* python's stdin */
    pid_t pid;
    char line[4096];
    size_t line_len;
    cs_timer_t tick, poll;
    int step; /* the stall phase's progress */
    raw_t raw[2];
    size_t base_conns;
    uint64_t base_accepted;
    int done, ok_lines;
    cs_defer_t stop_defer;
} tctx_t;

static tctx_t T;

static void publish(const char *exec, const char *type, const char *pad_field, size_t pad)
{
    char detail[256];
    cs_publish_t pub;
    json_t *ev = json_pack("{s:s, s:s}", "execution_id", exec, "type", type);
    if (pad_field != NULL) {
        char *s = malloc(pad + 1);
        memset(s, 'p', pad);
        s[pad] = '\0';
        json_object_set_new(ev, pad_field, json_string(s));
        free(s);
    }
    REQUIRE(cs_store_publish(T.d.store, ev, cs_unix_ms(), &pub, detail, sizeof(detail)) == CS_OK);
    json_decref(ev);
}

static void publish_id(const char *exec, const char *type, const char *event_id)
{
    char detail[256];
    cs_publish_t pub;
    json_t *ev = json_pack("{s:s, s:s, s:s, s:s}", "execution_id", exec, "type", type, "event_id", event_id,
                           "task_id", "t1");
    REQUIRE(cs_store_publish(T.d.store, ev, cs_unix_ms(), &pub, detail, sizeof(detail)) == CS_OK);
    json_decref(ev);
}

static void go(void)
{
    REQUIRE(write(T.to_py, "go\n", 3) == 3);
}

static void on_accept(cs_io_t *io, uint32_t events)
{
    (void)events;
    for (;;) {
        int fd = accept4(io->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        T.d.clients++;
        CHECK(cs_ws_adopt(T.d.ws, fd) == 0);
    }
}

static void on_tick(cs_timer_t *t)
{
    cs_ws_tick(T.d.ws, cs_loop_now(T.d.loop));
    cs_timer_start(t, 100);
}

/* The stall phase: a raw client that completes the handshake, then never reads while 8 MB flow. */
/*
 * The stall phase: two raw clients complete the handshake, then stop reading (4 KiB receive
 * buffers) while 8 MB flow to each. Both are found stalled after stall_s. One then reads again and
 * must find the 1013 close frame with its reason at the end of its stream; the other never reads
 * and must be dropped anyway, WS_STALL_GRACE_S later.
 */
static void raw_try_close_reply(raw_t *r)
{
    static const char pat[] = "\x03\xf5stalled: no progress for";
    const char *p = memmem(r->tail, r->tail_len, pat, sizeof(pat) - 1);
    /* Our answering close: masked (with a zero mask), code 1000. */
    static const unsigned char reply[] = {0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8};

    if (r->saw_close || p == NULL || p - r->tail < 2 || (unsigned char)p[-2] != 0x88)
        return;
    r->saw_close = 1;
    CHECK(write(r->fd, reply, sizeof(reply)) == (ssize_t)sizeof(reply));
}

static void on_raw_io(cs_io_t *io, uint32_t events)
{
    raw_t *r = io->data;
    char buf[65536];
    ssize_t n;
    (void)events;

    while ((n = read(r->fd, buf, sizeof(buf))) > 0) {
        r->bytes += (size_t)n;
        if ((size_t)n >= sizeof(r->tail)) {
            memcpy(r->tail, buf + n - sizeof(r->tail), sizeof(r->tail));
            r->tail_len = sizeof(r->tail);
        } else {
            size_t keep = sizeof(r->tail) - (size_t)n;
            if (keep > r->tail_len)
                keep = r->tail_len;
            memmove(r->tail, r->tail + r->tail_len - keep, keep);
            memcpy(r->tail + keep, buf, (size_t)n);
            r->tail_len = keep + (size_t)n;
        }
        raw_try_close_reply(r);
    }
    if (n == 0 || (n < 0 && errno != EAGAIN)) {
        r->eof = 1;
        cs_io_stop(io);
    }
}

static void on_poll(cs_timer_t *t)
{
    switch (T.step) {
    case 1:
        if (T.d.counters.ws_accepted == T.base_accepted + 2) {
            for (int i = 0; i < 128; i++) {
                publish("slow", "artifact", "body", 64 * 1024);
                publish("stuck", "artifact", "body", 64 * 1024);
            }
            T.step = 2;
        }
        break;
    case 2:
        if (T.d.counters.stalls == 2) {
            fcntl(T.raw[0].fd, F_SETFL, O_NONBLOCK);
            cs_io_init(&T.raw[0].io, T.d.loop, T.raw[0].fd, on_raw_io, &T.raw[0]);
            REQUIRE(cs_io_start(&T.raw[0].io, CS_IO_READ) == 0);
            T.step = 3;
        }
        break;
    case 3:
        if (T.raw[0].eof && cs_ws_count(T.d.ws) == T.base_conns) {
            fprintf(stderr, "stalled clients: the reader got %zu bytes and the 1013 close; both gone\n",
                    T.raw[0].bytes);
            CHECK(T.raw[0].saw_close);
            CHECK(T.raw[0].bytes > 0);
            for (int i = 0; i < 2; i++) {
                cs_io_stop(&T.raw[i].io);
                close(T.raw[i].fd);
                T.raw[i].fd = -1;
            }
            T.cfg.stall_s = 60;
            T.step = 0;
            go();
            return;
        }
        break;
    default:
        return;
    }
    cs_timer_start(t, 50);
}

static void start_stall(void)
{
    static const char *paths[2] = {"/v1/executions/slow/ws", "/v1/executions/stuck/ws"};
    char req[512];

    T.cfg.stall_s = 1;
    T.base_conns = cs_ws_count(T.d.ws);
    T.base_accepted = T.d.counters.ws_accepted;
    for (int i = 0; i < 2; i++) {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(T.port)};
        int small = 4096;
        int n = snprintf(req, sizeof(req),
                         "GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                         paths[i]);
        T.raw[i].fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        REQUIRE(T.raw[i].fd >= 0);
        setsockopt(T.raw[i].fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(connect(T.raw[i].fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
        REQUIRE(write(T.raw[i].fd, req, (size_t)n) == n);
    }
    T.step = 1;
    cs_timer_start(&T.poll, 50);
}

static void stop_loop(void *data)
{
    (void)data;
    cs_loop_stop(T.d.loop);
}

static void on_line(const char *l)
{
    fprintf(stderr, "py: %s\n", l);
    if (strncmp(l, "OK ", 3) == 0) {
        T.ok_lines++;
    } else if (strcmp(l, "SYNC live") == 0) {
        publish_id("e1", "human_input_required", "q");
        publish("e1", "tool.result", NULL, 0);
        go();
    } else if (strcmp(l, "SYNC auth") == 0) {
        T.d.auth = T.tok_auth;
        go();
    } else if (strcmp(l, "SYNC open") == 0) {
        T.d.auth = T.open_auth;
        go();
    } else if (strcmp(l, "SYNC stall") == 0) {
        start_stall();
    } else if (strcmp(l, "SYNC shutdown") == 0) {
        T.d.stopping = 1;
        cs_ws_shutdown(T.d.ws);
        go();
    } else if (strcmp(l, "DONE") == 0) {
        T.done = 1;
    }
}

static void on_py(cs_io_t *io, uint32_t events)
{
    char buf[4096];
    ssize_t n = read(io->fd, buf, sizeof(buf));
    (void)events;

    if (n <= 0) {
        cs_io_stop(io);
        cs_defer(T.d.loop, &T.stop_defer, stop_loop, NULL);
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        if (buf[i] == '\n') {
            T.line[T.line_len] = '\0';
            on_line(T.line);
            T.line_len = 0;
        } else if (T.line_len + 1 < sizeof(T.line)) {
            T.line[T.line_len++] = buf[i];
        }
    }
}

static void spawn_client(void)
{
    int in[2], out[2];
    char port[16];
    posix_spawn_file_actions_t fa;
    char *argv[] = {"python3", "-u", "-c", (char *)client_py, port, NULL};

    snprintf(port, sizeof(port), "%u", T.port);
    REQUIRE(pipe2(in, O_CLOEXEC) == 0 && pipe2(out, O_CLOEXEC) == 0);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    REQUIRE(posix_spawn(&T.pid, "/usr/bin/python3", &fa, NULL, argv, environ) == 0);
    posix_spawn_file_actions_destroy(&fa);
    close(in[0]);
    close(out[1]);
    T.to_py = in[1];
    cs_io_init(&T.pio, T.d.loop, out[0], on_py, NULL);
    REQUIRE(cs_io_start(&T.pio, CS_IO_READ) == 0);
}

static void make_token(cs_token_conf_t *t, const char *name, const char *secret, const char *exec)
{
    t->name = strdup(name);
    SHA256((const unsigned char *)secret, strlen(secret), t->sha256);
    t->scopes = CS_SCOPE_READ;
    t->executions = calloc(1, sizeof(char *));
    t->executions[0] = strdup(exec);
    t->n_executions = 1;
}

static void test_ws_end_to_end(void)
{
    cs_store_limits_t lim = {.ring_events = 1024,
                             .ring_bytes = 64u << 20,
                             .max_bytes = 512u << 20,
                             .retain_s = 60,
                             .global_events = 1024};
    char err[512] = "";
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t sl = sizeof(sa);
    cs_config_t tcfg;
    static char *origins[] = {"*"};
    cs_store_stats_t st;
    int status = -1;

    if (system("/usr/bin/python3 -c 'import websockets.client' 2>/dev/null") != 0) {
        fprintf(stderr, "this test needs /usr/bin/python3 with Debian's python3-websockets\n");
        REQUIRE(0);
    }
    memset(&T, 0, sizeof(T));
    T.raw[0].fd = T.raw[1].fd = -1;
    T.cfg.heartbeat_s = 1;
    T.cfg.stall_s = 60;
    T.cfg.max_clients = 100;
    T.cfg.head_bytes = 8192;
    T.cfg.json_depth = 32;
    T.cfg.cors_origins = origins;
    T.cfg.n_cors_origins = 1;
    T.d.cfg = &T.cfg;
    REQUIRE(cs_loop_new(&T.d.loop) == 0);
    REQUIRE(cs_store_new(&T.d.store, &lim) == 0);
    REQUIRE(cs_auth_new(&T.open_auth, &T.cfg, 1, err, sizeof(err)) == 0);
    memset(&tcfg, 0, sizeof(tcfg));
    tcfg.tokens = calloc(2, sizeof(cs_token_conf_t));
    make_token(&tcfg.tokens[0], "all", "secret", "*");
    make_token(&tcfg.tokens[1], "narrow", "narrow", "e2");
    tcfg.n_tokens = 2;
    REQUIRE(cs_auth_new(&T.tok_auth, &tcfg, 0, err, sizeof(err)) == 0);
    T.d.auth = T.open_auth;
    if (cs_ws_new(&T.d.ws, &T.d, err, sizeof(err)) != 0) {
        fprintf(stderr, "cs_ws_new: %s\n", err);
        REQUIRE(0);
    }

    T.lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(T.lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(T.lfd, 64) == 0);
    REQUIRE(getsockname(T.lfd, (struct sockaddr *)&sa, &sl) == 0);
    T.port = ntohs(sa.sin_port);
    cs_io_init(&T.lio, T.d.loop, T.lfd, on_accept, NULL);
    REQUIRE(cs_io_start(&T.lio, CS_IO_READ) == 0);
    cs_timer_init(&T.tick, T.d.loop, on_tick, NULL);
    cs_timer_start(&T.tick, 100);
    cs_timer_init(&T.poll, T.d.loop, on_poll, NULL);

    /* History the client will find. */
    publish("e1", "run.started", NULL, 0);
    publish("e1", "log", NULL, 0);
    publish("e1", "tool.called", NULL, 0);
    publish("big", "artifact", "body", 300000);

    spawn_client();
    REQUIRE(cs_loop_run(T.d.loop) == 0);

    /* Python has exited (its stdout closed); let lws finish the closes still under way. */
    REQUIRE(waitpid(T.pid, &status, 0) == T.pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(T.done);
    CHECK(T.ok_lines == 6);
    for (int i = 0; i < 200 && cs_ws_count(T.d.ws) > 0; i++) {
        cs_defer(T.d.loop, &T.stop_defer, stop_loop, NULL);
        cs_timer_start(&T.poll, 10);
        cs_loop_run(T.d.loop);
    }
    CHECK(cs_ws_count(T.d.ws) == 0);
    CHECK(T.d.clients == 0);
    CHECK(T.d.counters.stalls == 2);
    CHECK(T.d.counters.ws_refused >= 12);
    CHECK(T.d.counters.ws_accepted >= 14);
    fprintf(stderr, "accepted %llu refused %llu stalls %llu\n", (unsigned long long)T.d.counters.ws_accepted,
            (unsigned long long)T.d.counters.ws_refused, (unsigned long long)T.d.counters.stalls);

    cs_timer_stop(&T.tick);
    cs_timer_stop(&T.poll);
    cs_io_stop(&T.lio);
    close(T.lfd);
    close(T.to_py);
    close(T.pio.fd);
    cs_ws_free(T.d.ws);
    CHECK(T.d.clients == 0);
    cs_store_stats(T.d.store, &st);
    CHECK(st.subscribers == 0);
    cs_store_free(T.d.store);
    cs_loop_free(T.d.loop);
    cs_auth_free(T.open_auth);
    cs_auth_free(T.tok_auth);
    for (size_t i = 0; i < tcfg.n_tokens; i++) {
        free(tcfg.tokens[i].name);
        free(tcfg.tokens[i].executions[0]);
        free(tcfg.tokens[i].executions);
    }
    free(tcfg.tokens);
}

/* A daemon that never adopts anything starts and stops cleanly, and cs_ws_free(NULL) is a no-op. */
static void test_ws_new_free(void)
{
    cs_daemon_t d;
    cs_config_t cfg;
    char err[256];

    memset(&d, 0, sizeof(d));
    memset(&cfg, 0, sizeof(cfg));
    cfg.max_clients = 10;
    cfg.head_bytes = 8192;
    d.cfg = &cfg;
    REQUIRE(cs_loop_new(&d.loop) == 0);
    REQUIRE(cs_ws_new(&d.ws, &d, err, sizeof(err)) == 0);
    CHECK(cs_ws_count(d.ws) == 0);
    cs_ws_tick(d.ws, 0);
    cs_ws_shutdown(d.ws);
    cs_ws_free(d.ws);
    cs_ws_free(NULL);
    CHECK(cs_ws_count(NULL) == 0);
    cs_loop_free(d.loop);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    alarm(60);
    if (getenv("CS_WS_DEBUG") != NULL)
        cs_log_set_level(CS_LOG_DEBUG);
    RUN(test_ws_new_free);
    RUN(test_ws_end_to_end);
    CT_DONE();
}
