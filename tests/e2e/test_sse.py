"""Server-Sent Events (SPEC §4): headers, retry hint, exact id/data framing, named events,
history then live, since=now, heartbeats on both route kinds, subscribers that come early."""

import json
import re
import subprocess
import threading
import time

import httpx

from csutil import TS_RE, SSEClient, ev, poll, sse_events

HB_COMMENT = re.compile(r"^: heartbeat (\S+)$")


def test_headers_and_retry_hint(daemon):
    daemon.post_ok(ev("hdr", "run.started"))
    with SSEClient(daemon.port, "/v1/executions/hdr/events") as s:
        assert s.status == 200
        assert s.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert s.headers["cache-control"] == "no-cache"
        assert s.headers["access-control-allow-origin"] == "*"
        f = s.next_frame(timeout=5)
        assert f is not None and f.kind == "retry", f
        assert re.match(r"^retry: [0-9]+\n\n", s.all_body.decode()), s.all_body[:100]
        assert int(f.retry) > 0
        assert f.lines == ["retry: " + f.retry]


def test_headers_with_httpx(daemon):
    daemon.post_ok(ev("hx", "run.started"), ev("hx", "log", message="hello"))
    with httpx.Client(timeout=5) as c:
        with c.stream("GET", daemon.base + "/v1/executions/hx/events") as r:
            assert r.status_code == 200
            assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert r.headers["cache-control"] == "no-cache"
            assert r.headers["access-control-allow-origin"] == "*"
            lines = []
            for line in r.iter_lines():
                lines.append(line.rstrip("\r\n"))  # httpx 0.23 keeps the line ending
                if len([x for x in lines if x.startswith("data: ")]) == 2:
                    break
    assert lines[0].startswith("retry: ") and lines[1] == ""
    data = [json.loads(x[6:]) for x in lines if x.startswith("data: ")]
    assert [(e["seq"], e["type"]) for e in data] == [(1, "run.started"), (2, "log")]
    assert data[1]["message"] == "hello"


def test_exact_framing(daemon):
    replies = daemon.post_ok(
        ev("frm", "run.started"),
        ev("frm", "log", message="two\nlines and \"quotes\" and \u00e9", level="info"),
        ev("frm", "tool.called", event_id="tool-1", args={"a": [1, 2]}),
    )
    stored = poll(daemon.base, "/v1/executions/frm/poll", {"timeout": "0"}, http_timeout=5).json()
    with SSEClient(daemon.port, "/v1/executions/frm/events") as s:
        frames = s.collect(3, timeout=5)
        assert len(frames) == 3
        for f, want, r in zip(frames, stored["events"], replies):
            # Exactly two lines: id, then data; the JSON on one line.
            assert len(f.lines) == 2, f.lines
            assert f.lines[0].startswith("id: ") and f.lines[1].startswith("data: "), f.lines
            assert f.id and " " not in f.id
            assert f.event is None
            assert f.json() == want
            assert f.json()["seq"] == r["seq"] and f.json()["event_id"] == r["event_id"]
        assert len({f.id for f in frames}) == 3
        # The same event has the same cursor on every transport.
        assert frames[-1].id == stored["last_event_id"]
        # Blank-line termination: the body is exactly retry block + the three frames so far.
        body = s.all_body.decode()
        expected_tail = "".join("id: %s\ndata: %s\n\n" % (f.id, f.data) for f in frames)
        assert body.endswith(expected_tail), body
        assert body.startswith("retry: ")


def test_named_events(daemon):
    daemon.post_ok(ev("nm", "run.started"), ev("nm", "agent.completed"))
    with SSEClient(daemon.port, "/v1/executions/nm/events?named=1") as s:
        frames = s.collect(2, timeout=5)
        assert [f.lines[0] for f in frames] == ["event: run.started", "event: agent.completed"]
        for f in frames:
            assert len(f.lines) == 3 and f.lines[1].startswith("id: ") and f.lines[2].startswith("data: ")
            assert f.event == f.json()["type"]
    with SSEClient(daemon.port, "/v1/executions/nm/events") as s:
        frames = s.collect(2, timeout=5)
        assert all(f.event is None for f in frames)


def test_history_then_live(daemon):
    daemon.post_ok(*[ev("hl", "log", i=i) for i in range(3)])
    with SSEClient(daemon.port, "/v1/executions/hl/events") as s:
        got = s.collect(3, timeout=5)
        assert [f.json()["seq"] for f in got] == [1, 2, 3]
        assert s.next_event(timeout=0.5) is None
        t0 = time.monotonic()
        daemon.post_ok(ev("hl", "log", i=3))
        f = s.next_event(timeout=5)
        assert f is not None and f.json()["seq"] == 4
        assert time.monotonic() - t0 < 1.0, "a live event took %.2fs" % (time.monotonic() - t0)
        daemon.post_ok(*[ev("hl", "log", i=i) for i in range(4, 50)])
        got = s.collect(46, timeout=5)
        assert [f.json()["seq"] for f in got] == list(range(5, 51))
        assert [f.json()["i"] for f in got] == list(range(4, 50))


def test_since_now_skips_history(daemon):
    daemon.post_ok(*[ev("now", "log", i=i) for i in range(3)])
    with SSEClient(daemon.port, "/v1/executions/now/events?since=now") as s:
        assert s.status == 200
        assert s.next_event(timeout=1.0) is None
        daemon.post_ok(ev("now", "log", i=3))
        f = s.next_event(timeout=5)
        assert f is not None and f.json()["seq"] == 4
    with SSEClient(daemon.port, "/events/human-input/now?since=now") as s:
        daemon.post_ok(ev("now", "human_input_required", prompt="p"))
        f = s.next_event(timeout=5)
        assert f is not None and f.json()["seq"] == 5


def test_since_now_on_empty_execution(daemon):
    with SSEClient(daemon.port, "/v1/executions/now-empty/events?since=now") as s:
        assert s.status == 200
        daemon.post_ok(ev("now-empty", "run.started"))
        f = s.next_event(timeout=5)
        assert f is not None and f.json()["seq"] == 1


def _heartbeat_times(s, count, timeout):
    times = []
    deadline = time.monotonic() + timeout
    while len(times) < count and time.monotonic() < deadline:
        f = s.next_frame(timeout=max(0.0, deadline - time.monotonic()))
        if f is None:
            break
        if f.kind == "comment":
            m = HB_COMMENT.match(f.comments[0])
            assert m, f.comments
            assert TS_RE.match(m.group(1)), f.comments
            times.append(f.t)
        elif f.kind == "event":
            raise AssertionError("unexpected event on an idle stream: %r" % f.lines)
    return times


def test_v1_heartbeat_comments(make_daemon):
    d = make_daemon({"heartbeat_s": 2})
    with SSEClient(d.port, "/v1/executions/idle/events") as s:
        t0 = time.monotonic()
        times = _heartbeat_times(s, 4, timeout=10)
        assert len(times) >= 4, "only %d heartbeats in 10 s with heartbeat_s=2" % len(times)
        gaps = [b - a for a, b in zip([t0] + times, times)]
        assert all(g <= 2.7 for g in gaps), gaps
        assert all(g >= 0.8 for g in gaps[1:]), gaps
    # A stream that is busy gets no heartbeat it does not need, but an idle one after the burst does.
    d.post_ok(ev("idle", "log"))
    with SSEClient(d.port, "/v1/executions/idle/events") as s:
        assert s.next_event(timeout=5).json()["seq"] == 1
        times = _heartbeat_times(s, 1, timeout=3)
        assert len(times) == 1


def test_v1_heartbeat_default_config_interval(make_daemon):
    """heartbeat_s=1 (the test default): comments at least every second, and not a flood."""
    d = make_daemon()
    with SSEClient(d.port, "/v1/executions/idle1/events") as s:
        times = _heartbeat_times(s, 100, timeout=4.2)
        assert 3 <= len(times) <= 10, times


def test_hitl_heartbeat_data_every_4s(daemon):
    """heartbeat_s is 1 in this config; the HITL route keeps its own fixed 4 s heartbeat."""
    with SSEClient(daemon.port, "/events/human-input/hb") as s:
        assert s.status == 200
        assert s.headers["content-type"] == "text/event-stream; charset=utf-8"
        t0 = time.monotonic()
        beats = []
        deadline = t0 + 10
        while len(beats) < 2 and time.monotonic() < deadline:
            f = s.next_frame(timeout=deadline - time.monotonic())
            if f is None:
                break
            if f.kind != "event":
                continue
            e = f.json()
            assert set(e) == {"type", "timestamp"}, e
            assert e["type"] == "heartbeat" and TS_RE.match(e["timestamp"]), e
            assert f.id is None, "a heartbeat must not move the client's Last-Event-ID: %r" % f.lines
            beats.append(f.t)
        assert len(beats) == 2, "HITL heartbeats in 10 s: %d" % len(beats)
        assert beats[0] - t0 <= 4.6, beats[0] - t0
        assert 3.0 <= beats[1] - beats[0] <= 4.6, beats[1] - beats[0]


def test_subscriber_before_execution_exists(daemon):
    v1 = SSEClient(daemon.port, "/v1/executions/later/events")
    hitl = SSEClient(daemon.port, "/events/human-input/later")
    try:
        assert v1.status == 200 and hitl.status == 200
        assert v1.next_event(timeout=1.0) is None
        daemon.post_ok(
            ev("later", "run.started"),
            ev("later", "human_input_required", prompt="approve?", context="c"),
            ev("later", "log", message="x"),
        )
        got = sse_events(v1.collect(3, timeout=5))
        assert [e["type"] for e in got] == ["run.started", "human_input_required", "log"]
        got = sse_events(hitl.collect(1, timeout=5))
        assert [(e["type"], e["seq"], e["prompt"]) for e in got] == [("human_input_required", 2, "approve?")]
    finally:
        v1.close()
        hitl.close()


def test_hitl_route_carries_only_hitl_events(daemon):
    daemon.post_ok(
        ev("h", "run.started"),
        ev("h", "human_input_required", event_id="q1", prompt="p1"),
        ev("h", "log"),
        ev("h", "human_input_completed", event_id="a1", human_feedback="yes"),
        ev("h", "human_input_other_thing"),
        ev("h", "human_inputx"),
        ev("h", "run.completed"),
    )
    with SSEClient(daemon.port, "/events/human-input/h") as s:
        got = sse_events(s.collect(3, timeout=5))
        assert [(e["seq"], e["type"]) for e in got] == [
            (2, "human_input_required"),
            (4, "human_input_completed"),
            (5, "human_input_other_thing"),
        ]
        daemon.post_ok(ev("h", "tool.called"), ev("h", "human_input_required", prompt="p2"))
        f = s.next_event(timeout=5)
        assert f is not None and (f.json()["seq"], f.json()["type"]) == (9, "human_input_required")


def test_curl_sees_the_stream(daemon):
    daemon.post_ok(ev("curl", "run.started"))
    proc = subprocess.Popen(
        ["curl", "-sN", "--max-time", "4", daemon.base + "/v1/executions/curl/events?named=1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        time.sleep(1.0)
        daemon.post_ok(ev("curl", "log", message="live"), ev("curl", "run.completed", result="r"))
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 28, (proc.returncode, err)  # ended by --max-time: the stream stayed open
    text = out.decode()
    assert text.startswith("retry: ")
    blocks = [b for b in text.split("\n\n") if b.strip()]
    events = [b for b in blocks if "data: " in b]
    parsed = []
    for b in events:
        lines = b.split("\n")
        assert lines[0].startswith("event: ") and lines[1].startswith("id: ") and lines[2].startswith("data: ")
        parsed.append(json.loads(lines[2][6:]))
    assert [(e["seq"], e["type"]) for e in parsed] == [(1, "run.started"), (2, "log"), (3, "run.completed")]
    assert any(b.startswith(": heartbeat ") for b in blocks), blocks


def test_large_event_frame(daemon):
    big = "x" * 300000
    daemon.post_ok(ev("large", "artifact", body=big), ev("large", "log", message="after"))
    with SSEClient(daemon.port, "/v1/executions/large/events") as s:
        got = sse_events(s.collect(2, timeout=10))
        assert [e["seq"] for e in got] == [1, 2]
        assert got[0]["body"] == big and got[1]["message"] == "after"


def test_many_subscribers_same_bytes(daemon):
    subs = [SSEClient(daemon.port, "/v1/executions/fan/events") for _ in range(30)]
    try:
        daemon.post_ok(*[ev("fan", "log", i=i) for i in range(20)])
        first = None
        for s in subs:
            frames = s.collect(20, timeout=5)
            assert [f.json()["seq"] for f in frames] == list(range(1, 21))
            raw = [(f.id, f.data) for f in frames]
            if first is None:
                first = raw
            assert raw == first
    finally:
        for s in subs:
            s.close()


def test_concurrent_reader_thread_with_httpx(daemon):
    """A real client library reading in a thread while the producer posts."""
    got = []
    errors = []

    def reader():
        try:
            with httpx.Client(timeout=5) as c:
                with c.stream("GET", daemon.base + "/v1/executions/thr/events") as r:
                    for line in r.iter_lines():
                        if line.startswith("data: "):
                            got.append(json.loads(line[6:]))
                            if len(got) == 100:
                                return
        except Exception as e:  # reported below
            errors.append(e)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    time.sleep(0.3)
    for i in range(10):
        daemon.post_ok(*[ev("thr", "llm_stream_chunk", chunk="tok%d" % (i * 10 + j)) for j in range(10)])
    t.join(timeout=15)
    assert not t.is_alive()
    assert not errors, errors
    assert [e["seq"] for e in got] == list(range(1, 101))
    assert [e["chunk"] for e in got] == ["tok%d" % i for i in range(100)]
