"""SSE streams written natively (src/sse.c) and the ones left to libmicrohttpd (HTTP/1.0, unusual
heads) carry the same bytes; errors, tokens, CORS, escapes, metrics and shutdown behave alike."""

import re
import signal
import socket
import time

import requests

from csutil import SSEClient, ev, http_get, wait_until

TOKEN = "tok-NATIVE-41c2aa"
TOKENS = {"auth": {"tokens": [{"name": "r", "token": TOKEN, "scopes": ["read"], "executions": ["*"]}]}}


def raw_stream(port, request, want_events, timeout=5.0):
    """Sends raw request bytes; reads until want_events whole events arrived. Returns (head, body),
    the body de-chunked when the response is chunked."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    deadline = time.monotonic() + timeout
    raw = b""
    try:
        s.sendall(request)
        while time.monotonic() < deadline:
            if b"\r\n\r\n" in raw:
                head, rest = raw.split(b"\r\n\r\n", 1)
                body = dechunk(rest) if b"transfer-encoding: chunked" in head.lower() else rest
                # Whole events only: the last one may still be arriving in pieces.
                complete = body.split(b"\n\n")[:-1]
                if sum(1 for blk in complete if b"data: " in blk) >= want_events:
                    return head.decode("latin-1"), body
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            raw += chunk
    finally:
        s.close()
    raise AssertionError("fewer than %d events arrived: %r" % (want_events, raw[-300:]))


def dechunk(data):
    out = b""
    while b"\r\n" in data:
        size_line, rest = data.split(b"\r\n", 1)
        size = int(size_line or b"0", 16)
        if size == 0 or len(rest) < size + 2:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return out


def head_fields(head):
    fields = {}
    for line in head.split("\r\n")[1:]:
        k, v = line.split(":", 1)
        fields[k.strip().lower()] = v.strip()
    return fields


def test_native_and_libmicrohttpd_streams_carry_the_same_bytes(daemon):
    daemon.post_ok(ev("same", "run.started"), ev("same", "log", message="é \"q\"\nline"), ev("same", "run.completed"))
    native = b"GET /v1/executions/same/events HTTP/1.1\r\nHost: x\r\n\r\n"
    escaped_path = b"GET /v1/executions/%73ame/events HTTP/1.1\r\nHost: x\r\n\r\n"  # '%' in the path
    http10 = b"GET /v1/executions/same/events HTTP/1.0\r\nHost: x\r\n\r\n"
    pipelined = native + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"  # bytes after the head
    results = [raw_stream(daemon.port, r, 3) for r in (native, escaped_path, http10, pipelined)]
    # A heartbeat comment may fall anywhere when the machine is slow (heartbeat_s is 1 here).
    bodies = [re.sub(rb": heartbeat \S+\n\n", b"", b) for _, b in results]
    assert bodies[0].startswith(b"retry: 3000\n\n")
    assert all(b == bodies[0] for b in bodies), bodies
    heads = [head_fields(h) for h, _ in results]
    for h in heads:
        assert h["content-type"] == "text/event-stream; charset=utf-8"
        assert h["cache-control"] == "no-cache"
        assert h["x-accel-buffering"] == "no"
        assert h["access-control-allow-origin"] == "*"
        assert re.match(r"^[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT$", h["date"]), h
    assert heads[0]["transfer-encoding"] == "chunked"
    assert results[0][0].startswith("HTTP/1.1 200 OK\r\n")


def test_escaped_query_arguments(daemon):
    daemon.post_ok(ev("esc", "run.started"), ev("esc", "log"), ev("esc", "tool.called"), ev("esc", "log"))
    with SSEClient(daemon.port, "/v1/executions/esc/events?types=log%2Ctool.%2A&named=tru%65") as s:
        frames = s.collect(3, timeout=5)
    assert [(f.event, f.json()["seq"]) for f in frames] == [("log", 2), ("tool.called", 3), ("log", 4)]
    # A plus is a space: "since=now " is not "now" and is refused the same way on both sides.
    status, _, body = http_get(daemon.port, "/v1/executions/esc/events?since=now+")
    assert status == 400 and b"since" in body


def test_errors_and_tokens(make_daemon):
    d = make_daemon(TOKENS)
    d.post_ok(ev("tok", "run.started"))
    status, h, body = http_get(d.port, "/v1/executions/tok/events")
    assert status == 401 and h["www-authenticate"] == "Bearer" and b"unauthorized" in body
    status, h, _ = http_get(d.port, "/v1/executions/tok/events", {"Authorization": "Bearer nope"})
    assert status == 401
    status, _, body = http_get(d.port, "/v1/executions/tok/events?since_seq=x", {"Authorization": "Bearer " + TOKEN})
    assert status == 400 and b"since_seq" in body
    status, _, _ = http_get(d.port, "/v1/executions/bad%20id/events", {"Authorization": "Bearer " + TOKEN})
    assert status == 400
    # The token in the header, and escaped in the query.
    with SSEClient(d.port, "/v1/executions/tok/events", headers={"Authorization": "Bearer " + TOKEN}) as s:
        assert s.next_event(timeout=5).json()["seq"] == 1
    with SSEClient(d.port, "/v1/executions/tok/events?token=" + TOKEN.replace("-", "%2D")) as s:
        assert s.next_event(timeout=5).json()["seq"] == 1


def test_cors_named_origin(make_daemon):
    d = make_daemon({"http": {"cors_origins": ["https://dash.example"]}})
    d.post_ok(ev("cors", "run.started"))
    with SSEClient(d.port, "/v1/executions/cors/events", headers={"Origin": "https://dash.example"}) as s:
        assert s.headers["access-control-allow-origin"] == "https://dash.example"
        assert s.headers["vary"] == "Origin"
    with SSEClient(d.port, "/v1/executions/cors/events", headers={"Origin": "https://other.example"}) as s:
        assert "access-control-allow-origin" not in s.headers


def test_metrics_count_streams_and_closed_ones_go(make_daemon):
    d = make_daemon({"http": {"metrics_public": True}})

    def streams():
        text = requests.get(d.base + "/metrics", timeout=5).text
        return int(re.search(r"^crewstream_http_streams (\d+)$", text, re.M).group(1))

    clients = [SSEClient(d.port, "/v1/executions/m%d/events" % i) for i in range(3)]
    try:
        assert wait_until(lambda: streams() == 3)
    finally:
        for c in clients:
            c.close()
    assert wait_until(lambda: streams() == 0)


def test_client_bytes_after_the_head_are_ignored(daemon):
    with SSEClient(daemon.port, "/v1/executions/chatty/events") as s:
        s.sock.sendall(b"unexpected bytes from the client\r\n")
        daemon.post_ok(ev("chatty", "log"))
        assert s.next_event(timeout=5).json()["seq"] == 1


def test_shutdown_ends_the_stream_with_its_last_chunk(make_daemon):
    d = make_daemon()
    s = SSEClient(d.port, "/v1/executions/end/events")
    try:
        d.proc.send_signal(signal.SIGTERM)
        assert d.wait_exit(timeout=10) == 0
        try:
            for _ in range(100):
                s.next_frame(timeout=3)
        except EOFError:
            pass
        assert s.ended, "the stream ended without its terminating chunk"
    finally:
        s.close()


def test_heartbeats_reach_every_quiet_stream(make_daemon):
    """Streams opened at different times each get a heartbeat about every heartbeat_s, and a stream
    that just had an event is not sent one early (the tick walks them in order of last write)."""
    d = make_daemon({"heartbeat_s": 1})
    streams = []
    try:
        for i in range(3):
            streams.append(SSEClient(d.port, "/v1/executions/hb%d/events" % i))
            time.sleep(0.3)
        seen = [[] for _ in streams]
        deadline = time.monotonic() + 4.2
        while time.monotonic() < deadline:
            for i, s in enumerate(streams):
                f = s.next_frame(timeout=0.02)
                if f is not None and f.kind == "comment":
                    seen[i].append(f.t)
        for times in seen:
            assert len(times) >= 3, seen
            gaps = [b - a for a, b in zip(times, times[1:])]
            assert all(0.4 < g < 1.6 for g in gaps), gaps
    finally:
        for s in streams:
            s.close()
