"""HTTP hardening (issue 10, findings 3, 4, 8 and the %00 part of 10).

- A request body is read only after its request passed every check that does not need it (route,
  method, token, scope, Content-Length against the route's limit): unauthenticated clients sending
  big bodies cost the daemon no memory and get their 401 at once.
- Pipelined requests followed by the client's FIN: the daemon answers them and closes, instead of
  holding the socket in CLOSE-WAIT (and a limits.max_clients slot) until limits.stall_s.
- POST /v1/events takes at most 10000 lines (blank ones count): a flood of blank lines is refused
  with a small 413 and never blocks the loop (measured by another producer's ping).
- An encoded NUL in the request target is refused with 400, not routed as the path before it.
"""

import json
import select
import socket
import threading
import time

import requests

from csutil import http_get, http_raw, rss_kib

MAX_LINES = 10000
TOKENS = {"auth": {"tokens": [
    {"name": "pub", "token": "P", "scopes": ["publish", "read", "respond"], "executions": ["*"]},
    {"name": "reader", "token": "R", "scopes": ["read"], "executions": ["*"]}]}}



def metrics(d, token=None):
    h = {"Authorization": "Bearer " + token} if token else {}
    r = requests.get(d.base + "/metrics", headers=h, timeout=5)
    assert r.status_code == 200, r.text
    out = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.split()
            out[name] = int(value)
    return out


def post_head(path, length, token=None, extra=b""):
    auth = b"Authorization: Bearer %s\r\n" % token.encode() if token else b""
    return (b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s%s\r\n"
            % (path.encode(), length, auth, extra))


def read_response(s, deadline):
    """Reads until a whole response (by Content-Length) or EOF; returns (status, body) or (None, raw)."""
    raw = b""
    while time.monotonic() < deadline:
        if b"\r\n\r\n" in raw:
            head, body = raw.split(b"\r\n\r\n", 1)
            lines = head.split(b"\r\n")
            hdrs = dict(l.split(b":", 1) for l in lines[1:] if b":" in l)
            hdrs = {k.strip().lower(): v.strip() for k, v in hdrs.items()}
            if b"content-length" in hdrs and len(body) >= int(hdrs[b"content-length"]):
                return int(lines[0].split()[1]), body[: int(hdrs[b"content-length"])]
        r, _, _ = select.select([s], [], [], max(0.0, min(0.5, deadline - time.monotonic())))
        if not r:
            continue
        try:
            chunk = s.recv(65536)
        except OSError:
            chunk = b""
        if not chunk:
            break
        raw += chunk
    return None, raw


# ---- finding 3: bodies are read only after the checks ----------------------------------------------


def test_unauthenticated_bodies_cost_nothing(make_daemon):
    """50 clients without a valid token each announce 4 MiB and try to send 2 MiB of it: the daemon
    answers 401 at once, reads (almost) none of it, and its RSS does not grow with the bodies."""
    d = make_daemon(TOKENS)
    n, announce, push = 50, 4 << 20, 2 << 20
    before = rss_kib(d.proc.pid)
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", d.port), timeout=5)
        s.setblocking(False)
        s.send(post_head("/v1/events", announce, None if i % 2 else "wrong"))
        socks.append(s)
    sent = [0] * n
    done = [False] * n
    chunk = b"x" * 65536
    t0 = time.monotonic()
    deadline = t0 + 15
    while not all(done) and time.monotonic() < deadline:
        _, w, _ = select.select([], [s for s, k in zip(socks, done) if not k], [], 0.5)
        for s in w:
            i = socks.index(s)
            try:
                sent[i] += s.send(chunk)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                done[i] = True  # reset or broken pipe: the daemon refused and closed
            if sent[i] >= push:
                done[i] = True
    # Give the daemon time to read what the kernel holds for it; keep the highest RSS seen.
    grown = 0
    settle = time.monotonic() + 3
    while time.monotonic() < settle:
        grown = max(grown, rss_kib(d.proc.pid) - before)
        time.sleep(0.1)
    # The daemon holds none of the bodies (2 MiB a client would be 100 MiB), only what the heads cost.
    assert grown < 32 * 1024, "RSS grew by %d KiB for %d refused bodies" % (grown, n)
    statuses = []
    for s in socks:
        st, body = read_response(s, time.monotonic() + 5)
        statuses.append(st)
        if st == 401:
            assert json.loads(body)["error"] == "unauthorized"
        s.close()
    assert statuses == [401] * n, statuses
    assert time.monotonic() - t0 < 10
    m = metrics(d, "R")
    assert m["crewstream_http_early_unauthorized_total"] == n
    assert m["crewstream_http_body_bytes"] == 0


def test_refused_before_body_by_reason(make_daemon):
    """Scope, route, method and size are decided on the head; the body is never read."""
    d = make_daemon(dict(TOKENS, limits={"max_body_bytes": 65536, "max_event_bytes": 16384}))
    cases = [
        (post_head("/v1/events", 1 << 20, "R"), 403, "forbidden"),  # no publish scope
        (post_head("/resume", 1 << 20, "R"), 403, "forbidden"),  # no respond scope
        (post_head("/v1/executions/x/human-input", 20000, "P"), 413, "too_large"),  # over max_event_bytes
        (post_head("/v1/events", 65537, "P"), 413, "too_large"),  # over max_body_bytes
        (post_head("/nope", 1 << 20, "P"), 404, "not_found"),
        (post_head("/health", 1 << 20, "P"), 405, "method_not_allowed"),
        (post_head("/v1/executions/bad%20id/human-input", 1 << 20, "P"), 400, "bad_request"),
    ]
    for head, want, code in cases:
        s = socket.create_connection(("127.0.0.1", d.port), timeout=5)
        s.sendall(head)  # and no body: the answer must come without it
        st, body = read_response(s, time.monotonic() + 3)
        s.close()
        assert st == want, (head, st, body)
        assert json.loads(body)["error"] == code
    m = metrics(d, "R")
    assert m["crewstream_http_early_forbidden_total"] == 2
    assert m["crewstream_http_early_too_large_total"] == 2
    assert m["crewstream_http_early_other_total"] == 3
    # An accepted body is buffered once, at its Content-Length, and shows in the gauge while it arrives.
    s = socket.create_connection(("127.0.0.1", d.port), timeout=5)
    one = json.dumps({"execution_id": "hb", "type": "log", "message": "m" * 12000}).encode()
    line = b"\n".join([one] * 4)
    s.sendall(post_head("/v1/events", len(line), "P") + line[:30000])
    deadline = time.monotonic() + 5
    while metrics(d, "R")["crewstream_http_body_bytes"] != len(line) + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metrics(d, "R")["crewstream_http_body_bytes"] == len(line) + 1
    s.sendall(line[30000:])
    st, body = read_response(s, time.monotonic() + 5)
    s.close()
    assert st == 200 and [json.loads(x)["ok"] for x in body.splitlines()] == [True] * 4, body
    assert metrics(d, "R")["crewstream_http_body_bytes"] == 0


def test_chunked_body_past_the_limit_is_cut(make_daemon):
    d = make_daemon(dict(TOKENS, limits={"max_body_bytes": 4096}))
    s = socket.create_connection(("127.0.0.1", d.port), timeout=5)
    s.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer P\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n")
    eof = False
    try:
        for _ in range(8):
            s.sendall(b"1000\r\n" + b" " * 4096 + b"\r\n")
            time.sleep(0.05)
        s.settimeout(3)
        eof = s.recv(65536) == b""
    except OSError:
        eof = True
    s.close()
    assert eof
    m = metrics(d, "R")
    assert m["crewstream_http_body_overrun_total"] == 1 and m["crewstream_http_body_bytes"] == 0


# ---- finding 4: a FIN after pipelined requests closes the connection --------------------------------


def close_wait_on(port):
    """Sockets in CLOSE-WAIT whose local port is `port` (the daemon's side)."""
    n = 0
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "08":
                        n += 1
        except OSError:
            pass
    return n


def test_pipelined_requests_then_fin(make_daemon):
    """Three pipelined requests and a FIN in one write, on every slot of a small max_clients: each
    client gets its three answers and then EOF at once, the daemon keeps no CLOSE-WAIT socket, and the
    slots are free for the next clients (not answered 503 until limits.stall_s)."""
    d = make_daemon({"limits": {"max_clients": 4, "stall_s": 30}})
    req = b"GET /v1/executions/p1 HTTP/1.1\r\nHost: x\r\n\r\n" * 3
    for rnd in range(3):
        socks = []
        for _ in range(4):
            s = socket.create_connection(("127.0.0.1", d.port), timeout=5)
            s.sendall(req)
            s.shutdown(socket.SHUT_WR)
            socks.append(s)
        t0 = time.monotonic()
        for s in socks:
            raw = b""
            s.settimeout(3)
            try:
                while True:
                    c = s.recv(65536)
                    if not c:
                        break
                    raw += c
            except socket.timeout:
                raise AssertionError("round %d: no EOF within 3 s after %d answers"
                                     % (rnd, raw.count(b"HTTP/1.1 200")))
            assert raw.count(b"HTTP/1.1 200") == 3, raw[:300]
            s.close()
        assert time.monotonic() - t0 < 3
        deadline = time.monotonic() + 2
        while close_wait_on(d.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert close_wait_on(d.port) == 0
    # The slots are free: a new client is served, not refused.
    st, _, body = http_get(d.port, "/v1/executions/p1", timeout=3)
    assert st == 200, body


# ---- finding 8: NDJSON line limit ------------------------------------------------------------------


def test_blank_line_flood_is_bounded(make_daemon):
    """4 MiB of blank lines: a short 413, nothing stored, and a producer's ping on the socket keeps
    answering promptly while such floods come in."""
    d = make_daemon()
    flood = b"\n" * (4 << 20)
    req = (b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
           b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(flood)) + flood
    results = []
    stop = threading.Event()

    def flooder():
        for _ in range(3):
            t0 = time.monotonic()
            try:
                st, _, body, raw = http_raw(d.port, req, timeout=20)
                results.append((st, len(raw), body[:200], time.monotonic() - t0))
            except OSError as e:
                results.append((None, 0, repr(e).encode(), time.monotonic() - t0))
        stop.set()

    worst = 0.0
    with d.producer() as p:
        th = threading.Thread(target=flooder)
        th.start()
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            t0 = time.monotonic()
            assert p.request({"op": "ping"}, timeout=30) == [{"ok": True, "op": "pong"}]
            worst = max(worst, time.monotonic() - t0)
            time.sleep(0.01)
        th.join(60)
    assert len(results) == 3, results
    for st, size, body, took in results:
        assert st == 413, (st, size, body)
        assert json.loads(body)["error"] == "too_large"
        assert size < 4096, size
    assert worst < 1.0, "a ping took %.0f ms during the flood" % (worst * 1000)
    m = metrics(d)
    assert m["crewstream_http_lines_refused_total"] == 3
    assert m["crewstream_events_published_total"] == 0


def test_line_limit_is_exact(daemon):
    """10000 lines are served (one reply each, blank lines included); 10001 are refused whole."""
    ok = json.dumps({"execution_id": "lines", "type": "log"}).encode()
    body = b"\n".join([ok] * (MAX_LINES - 2) + [b"", b'{"op":"ping"}']) + b"\n"
    r = requests.post(daemon.base + "/v1/events", data=body, timeout=30)
    assert r.status_code == 200, r.text[:300]
    replies = [json.loads(x) for x in r.text.splitlines()]
    assert len(replies) == MAX_LINES
    assert replies[-2]["error"] == "invalid_json" and replies[-1] == {"ok": True, "op": "pong"}
    r = requests.post(daemon.base + "/v1/events", data=body + ok + b"\n", timeout=30)
    assert r.status_code == 413 and r.json()["error"] == "too_large", r.text[:300]
    r = requests.get(daemon.base + "/v1/executions/lines", timeout=5)
    assert r.json()["events"] == MAX_LINES - 2  # from the first post only


# ---- finding 10: %00 -------------------------------------------------------------------------------


def test_encoded_nul_is_refused(daemon):
    for path in ("/health%00", "/health%00/x", "/v1/executions/run%00x/poll?timeout=0",
                 "/v1/executions/run-1/poll?timeout=0&types=log%00x"):
        st, _, body = http_get(daemon.port, path, timeout=3)
        assert st == 400, (path, st, body)
        assert json.loads(body)["error"] == "bad_request" and "NUL" in json.loads(body)["detail"]
    # With a body, refused before it is read.
    s = socket.create_connection(("127.0.0.1", daemon.port), timeout=5)
    s.sendall(post_head("/v1/events%00", 1 << 20))
    st, body = read_response(s, time.monotonic() + 3)
    s.close()
    assert st == 400, body
    # %2500 is a literal "%00", not a NUL: an ordinary unknown path.
    st, _, _ = http_get(daemon.port, "/health%2500", timeout=3)
    assert st == 404
    st, _, _ = http_get(daemon.port, "/health", timeout=3)
    assert st == 200
