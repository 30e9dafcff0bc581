"""Ingest over the Unix socket (SPEC §1, §3): framing, one reply per line in order, every error
code, filled-in fields, idempotent re-posts, and producers that misbehave."""

import datetime
import json
import os
import socket
import time

import pytest

from csutil import TS_RE, UUID4_RE, SSEClient, ev, http_get, parse_ts, poll


def history(d, execution_id):
    """Everything retained for the execution, via a non-holding long-poll."""
    r = poll(d.base, "/v1/executions/%s/poll" % execution_id, {"timeout": "0"}, http_timeout=5)
    assert r.status_code == 200, r.text
    return r.json()["events"]


def assert_error(reply, code):
    assert reply.get("ok") is False, reply
    assert reply.get("error") == code, reply
    assert set(reply) == {"ok", "error", "detail"}, reply
    assert isinstance(reply["detail"], str) and reply["detail"], reply


def nested(depth):
    """An event whose nesting (the event object counted as level 1) is exactly `depth`."""
    inner = "1"
    for _ in range(depth - 1):
        inner = "[" + inner + "]"
    return '{"execution_id":"deep","type":"t","x":%s}' % inner


# ---- ops ---------------------------------------------------------------------------------------


def test_ping(daemon):
    assert daemon.post({"op": "ping"}) == [{"ok": True, "op": "pong"}]


def test_unknown_op_is_bad_op(daemon):
    replies = daemon.post({"op": "pong"}, {"op": 5}, {"op": ""}, {"op": "ping", "x": 1})
    for r in replies[:3]:
        assert_error(r, "bad_op")
    assert replies[3] == {"ok": True, "op": "pong"}


# ---- accepted events ---------------------------------------------------------------------------


def test_reply_and_filled_fields(daemon):
    before = datetime.datetime.now(datetime.timezone.utc)
    (r,) = daemon.post(ev("fill", "run.started"))
    after = datetime.datetime.now(datetime.timezone.utc)
    assert set(r) == {"ok", "seq", "event_id"}, r
    assert r["ok"] is True and r["seq"] == 1
    assert UUID4_RE.match(r["event_id"]), r
    (e,) = history(daemon, "fill")
    assert e["event_id"] == r["event_id"] and e["seq"] == 1
    assert TS_RE.match(e["timestamp"]), e
    ts = parse_ts(e["timestamp"])
    slack = datetime.timedelta(seconds=2)
    assert before - slack <= ts <= after + slack, (before, ts, after)


def test_generated_event_ids_are_distinct(daemon):
    replies = daemon.post_ok(*[ev("uuids", "log", i=i) for i in range(200)])
    ids = [r["event_id"] for r in replies]
    assert len(set(ids)) == 200
    assert all(UUID4_RE.match(i) for i in ids)
    assert [r["seq"] for r in replies] == list(range(1, 201))


def test_producer_values_kept_and_seq_overwritten(daemon):
    payload = {
        "execution_id": "keep",
        "type": "tool.result",
        "event_id": "prod-1",
        "timestamp": "2020-02-03T04:05:06.789Z",
        "seq": 999,
        "nested": {"a": [1, 2, {"b": None}], "t": True, "f": False},
        "text": "h\u00e9llo \u2603 \U0001F600 \"quoted\" \\ back\nslash",
        "num": -12345678901,
        "real": 2.5,
        "empty": {},
        "list": [],
    }
    (r,) = daemon.post(payload)
    assert r == {"ok": True, "seq": 1, "event_id": "prod-1"}
    (r2,) = daemon.post({"execution_id": "keep", "type": "log", "seq": 1})
    assert r2["ok"] is True and r2["seq"] == 2
    events = history(daemon, "keep")
    assert [e["seq"] for e in events] == [1, 2]
    want = dict(payload, seq=1)
    assert events[0] == want


def test_seq_is_per_execution(daemon):
    lines = []
    for i in range(5):
        lines += [ev("exec-a", "log", i=i), ev("exec-b", "log", i=i), ev("exec-c", "log", i=i)]
    replies = daemon.post_ok(*lines)
    for name in ("exec-a", "exec-b", "exec-c"):
        seqs = [r["seq"] for e, r in zip(lines, replies) if e["execution_id"] == name]
        assert seqs == [1, 2, 3, 4, 5], (name, seqs)


def test_stored_before_reply(daemon):
    """The ok reply comes only after the event is stored: a poll right after it sees it."""
    with daemon.producer() as p:
        for i in range(20):
            (r,) = p.request(ev("stored", "log", i=i))
            assert r["ok"] is True
            st, _, body = http_get(daemon.port, "/v1/executions/stored/poll?timeout=0&since_seq=%d" % (r["seq"] - 1))
            assert st == 200
            got = json.loads(body)["events"]
            assert [e["seq"] for e in got] == [r["seq"]], got


def test_limits_on_ids_and_types(daemon):
    ok_lines = [
        ev("a" * 128, "t"),
        ev("AZaz09._:-", "t"),
        ev("x", "t" * 64),
        ev("x", "Aa0._-"),
        ev("x", "t2", event_id="e" * 128),
    ]
    for r in daemon.post(*ok_lines):
        assert r.get("ok") is True, r


# ---- error codes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        b"{",
        b"nope",
        b'{"execution_id":"x","type":"t"} trailing',
        b'{"execution_id":"x","type":"t",}',
        b'{"execution_id":"x","type":"t"}{"a":1}',
        b"\x00\x01\x02\xff\xfe garbage \x80\x81",
        b'{"execution_id":"x","type":"t","s":"\xff\xfe"}',
        b'{"execution_id":"x",\x00"type":"t"}',
        b"",
        b"   ",
        b"[1,2,3]",
        b'"a string"',
        b"42",
        b"null",
        b"true",
    ],
    ids=["open-brace", "word", "trailing", "trailing-comma", "two-values", "binary", "bad-utf8",
         "nul", "empty", "blank", "array", "string", "number", "null", "true"],
)
def test_invalid_json(daemon, line):
    replies = daemon.post(line + b"\n", {"op": "ping"})
    assert len(replies) == 2
    assert_error(replies[0], "invalid_json")
    assert replies[1] == {"ok": True, "op": "pong"}
    assert history(daemon, "x") == []


def test_json_depth_default(daemon):
    replies = daemon.post(nested(32), nested(33), nested(500))
    assert replies[0].get("ok") is True, replies[0]
    assert_error(replies[1], "invalid_json")
    assert_error(replies[2], "invalid_json")


def test_json_depth_configured(make_daemon):
    d = make_daemon({"limits": {"json_depth": 4}})
    replies = d.post(nested(4), nested(5))
    assert replies[0].get("ok") is True, replies[0]
    assert_error(replies[1], "invalid_json")


@pytest.mark.parametrize(
    "event",
    [
        {"type": "log"},
        {"execution_id": "x"},
        {},
        {"event_id": "e", "timestamp": "2020-01-01T00:00:00.000Z"},
    ],
    ids=["no-execution_id", "no-type", "empty-object", "neither"],
)
def test_missing_field(daemon, event):
    (r,) = daemon.post(event)
    assert_error(r, "missing_field")


@pytest.mark.parametrize(
    "event",
    [
        ev("", "t"),
        ev("a" * 129, "t"),
        ev("has space", "t"),
        ev("a/b", "t"),
        ev("caf\u00e9", "t"),
        {"execution_id": 12, "type": "t"},
        {"execution_id": ["x"], "type": "t"},
        ev("x", ""),
        ev("x", "t" * 65),
        ev("x", "a:b"),
        ev("x", "a b"),
        {"execution_id": "x", "type": 7},
        ev("x", "heartbeat"),
        ev("x", "stream.gap"),
        ev("x", "stream.anything"),
        ev("x", "t", event_id="e" * 129),
        ev("x", "t", event_id=42),
    ],
    ids=["exec-empty", "exec-129", "exec-space", "exec-slash", "exec-nonascii", "exec-number",
         "exec-array", "type-empty", "type-65", "type-colon", "type-space", "type-number",
         "reserved-heartbeat", "reserved-stream.gap", "reserved-stream.x", "event_id-129",
         "event_id-number"],
)
def test_invalid_field(daemon, event):
    (r,) = daemon.post(event)
    assert_error(r, "invalid_field")
    assert history(daemon, "x") == []


def test_too_large_then_connection_goes_on(make_daemon):
    d = make_daemon({"limits": {"max_event_bytes": 4096}})
    base = '{"execution_id":"big","type":"log","pad":"%s"}'
    exact = base % ("p" * (4096 - len(base % "")))
    assert len(exact) == 4096
    over = base % ("p" * (4097 - len(base % "")))
    huge = base % ("q" * 300000)
    with d.producer(timeout=10) as p:
        replies = p.request(exact, over, huge, ev("big", "after"), {"op": "ping"})
        assert replies[0].get("ok") is True and replies[0]["seq"] == 1, replies[0]
        assert_error(replies[1], "too_large")
        assert_error(replies[2], "too_large")
        assert replies[3].get("ok") is True and replies[3]["seq"] == 2, replies[3]
        assert replies[4] == {"ok": True, "op": "pong"}
        # Still usable, one line at a time, after the oversized ones.
        (r,) = p.request(ev("big", "later"))
        assert r["ok"] is True and r["seq"] == 3
    assert [e["type"] for e in history(d, "big")] == ["log", "after", "later"]


def test_huge_line_in_pieces(make_daemon):
    """An oversized line arriving slowly in pieces is refused once, and the next line works."""
    d = make_daemon({"limits": {"max_event_bytes": 4096}})
    with d.producer(timeout=10) as p:
        p.sock.sendall(b'{"execution_id":"big","type":"log","pad":"')
        for _ in range(20):
            p.sock.sendall(b"z" * 2000)
            time.sleep(0.01)
        p.sock.sendall(b'"}\n')
        p.send(ev("big", "next"))
        replies = p.read(2, timeout=10)
        assert_error(replies[0], "too_large")
        assert replies[1].get("ok") is True and replies[1]["seq"] == 1


def test_pipelined_replies_in_order(daemon):
    lines = [
        ev("pipe", "a"),
        b"{bad json",
        ev("pipe", "b"),
        {"type": "no-exec"},
        {"op": "ping"},
        ev("pipe", "heartbeat"),
        {"op": "what"},
        b"\xde\xad\xbe\xef",
        ev("pipe", "c", event_id="c-1"),
        ev("pipe", "c", event_id="c-1"),
        b"[]",
        ev("pipe", "d"),
    ]
    data = b"".join(
        (json.dumps(x).encode() if isinstance(x, dict) else x) + b"\n" for x in lines
    )
    s = daemon.connect_ingest()
    try:
        s.sendall(data)  # one write
        from csutil import exchange

        replies = [json.loads(x) for x in exchange(s, b"", len(lines), 10)]
    finally:
        s.close()
    assert replies[0] == {"ok": True, "seq": 1, "event_id": replies[0]["event_id"]}
    assert_error(replies[1], "invalid_json")
    assert replies[2]["ok"] is True and replies[2]["seq"] == 2
    assert_error(replies[3], "missing_field")
    assert replies[4] == {"ok": True, "op": "pong"}
    assert_error(replies[5], "invalid_field")
    assert_error(replies[6], "bad_op")
    assert_error(replies[7], "invalid_json")
    assert replies[8] == {"ok": True, "seq": 3, "event_id": "c-1"}
    assert replies[9] == {"ok": True, "seq": 3, "event_id": "c-1", "duplicate": True}
    assert_error(replies[10], "invalid_json")
    assert replies[11]["ok"] is True and replies[11]["seq"] == 4
    assert [e["type"] for e in history(daemon, "pipe")] == ["a", "b", "c", "d"]


def test_byte_at_a_time(daemon):
    """Lines split across many writes are reassembled."""
    data = (json.dumps(ev("drip", "log", msg="x" * 50)) + "\n" + json.dumps({"op": "ping"}) + "\n").encode()
    with daemon.producer() as p:
        for i in range(len(data)):
            p.sock.sendall(data[i : i + 1])
            if i % 16 == 0:
                time.sleep(0.001)
        replies = p.read(2)
    assert replies[0]["ok"] is True and replies[0]["seq"] == 1
    assert replies[1] == {"ok": True, "op": "pong"}


def test_forbidden_uid(make_daemon):
    other = os.getuid() + 4242
    d = make_daemon({"ingest": {"allow_uids": [other]}})
    s = d.connect_ingest()
    try:
        try:
            s.sendall(json.dumps(ev("nope", "log")).encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        from csutil import exchange

        (line,) = exchange(s, b"", 1, 5)
        assert_error(json.loads(line), "forbidden")
    finally:
        s.close()
    assert history(d, "nope") == []


def test_allowed_uid(make_daemon):
    d = make_daemon({"ingest": {"allow_uids": [os.getuid() + 4242, os.getuid()]}})
    (r,) = d.post(ev("yes", "log"))
    assert r["ok"] is True and r["seq"] == 1


def test_socket_mode(make_daemon):
    d = make_daemon({"ingest": {"mode": "0600"}})
    assert oct(os.stat(d.sock).st_mode & 0o777) == oct(0o600)
    d2 = make_daemon()
    assert oct(os.stat(d2.sock).st_mode & 0o777) == oct(0o660)


def test_await_unknown_is_not_found(daemon):
    """not_found: an await for an execution or a request the daemon does not have."""
    daemon.post_ok(ev("known", "run.started"))
    replies = daemon.post(
        {"op": "await", "execution_id": "never-posted", "event_id": "nope"},
        {"op": "await", "execution_id": "known", "event_id": "nope"},
    )
    assert_error(replies[0], "not_found")
    assert_error(replies[1], "not_found")


# ---- idempotence -------------------------------------------------------------------------------


def test_idempotent_repost(daemon):
    sse = SSEClient(daemon.port, "/v1/executions/idem/events")
    try:
        assert sse.status == 200
        first = ev("idem", "human_input_required", event_id="req-1", prompt="p")
        (r1,) = daemon.post(first)
        assert r1 == {"ok": True, "seq": 1, "event_id": "req-1"}
        # The same again, on another connection and then the same one twice: acknowledged, not stored.
        (r2,) = daemon.post(dict(first, prompt="changed"))
        assert r2 == {"ok": True, "seq": 1, "event_id": "req-1", "duplicate": True}
        r3 = daemon.post(first, first)
        assert r3 == [{"ok": True, "seq": 1, "event_id": "req-1", "duplicate": True}] * 2
        # Same event_id, another type: a new event (a completion may reuse its request's id).
        (r4,) = daemon.post(ev("idem", "human_input_completed", event_id="req-1", human_feedback="ok"))
        assert r4 == {"ok": True, "seq": 2, "event_id": "req-1"}
        (r5,) = daemon.post(ev("idem", "human_input_completed", event_id="req-1", human_feedback="again"))
        assert r5 == {"ok": True, "seq": 2, "event_id": "req-1", "duplicate": True}
        # Same event_id in another execution: new there.
        (r6,) = daemon.post(dict(first, execution_id="idem-other"))
        assert r6 == {"ok": True, "seq": 1, "event_id": "req-1"}
        (r7,) = daemon.post(ev("idem", "log"))
        assert r7["seq"] == 3 and "duplicate" not in r7

        frames = sse.collect(3, timeout=5)
        got = [(f.json()["seq"], f.json()["type"]) for f in frames]
        assert got == [(1, "human_input_required"), (2, "human_input_completed"), (3, "log")]
        assert frames[0].json()["prompt"] == "p"
        assert frames[1].json()["human_feedback"] == "ok"
        assert sse.next_event(timeout=1.5) is None  # no re-post was fanned out
    finally:
        sse.close()
    assert [e["seq"] for e in history(daemon, "idem")] == [1, 2, 3]


# ---- misbehaving producers ---------------------------------------------------------------------


def test_disconnect_mid_line_and_unread_replies(daemon):
    good = daemon.producer()
    try:
        (r,) = good.request(ev("mid", "a"))
        assert r["seq"] == 1
        # A producer that dies in the middle of a line.
        s = daemon.connect_ingest()
        s.sendall(b'{"execution_id":"mid","type":"half", "pad":"' + b"x" * 10000)
        s.close()
        # One that resets with bytes pending.
        s = daemon.connect_ingest()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.sendall(b'{"execution_id":"mid","type":"reset"')
        s.close()
        # One that posts many lines and leaves without reading any reply.
        s = daemon.connect_ingest()
        s.sendall(b"".join(json.dumps(ev("flood", "log", i=i)).encode() + b"\n" for i in range(2000)))
        s.close()
        # One that connects and says nothing, kept open.
        idle = daemon.connect_ingest()
        # The first producer is unaffected.
        replies = good.request(ev("mid", "b"), {"op": "ping"})
        assert replies[0]["ok"] is True and replies[0]["seq"] == 2
        assert replies[1] == {"ok": True, "op": "pong"}
        idle.close()
    finally:
        good.close()
    assert [e["type"] for e in history(daemon, "mid")] == ["a", "b"]
    st, _, _ = http_get(daemon.port, "/health")
    assert st == 200
    (r,) = daemon.post(ev("mid", "c"))
    assert r["seq"] == 3


def test_many_producers_interleaved(daemon):
    """Several connections posting to one execution at once: seqs 1..N without holes or repeats."""
    prods = [daemon.producer() for _ in range(5)]
    try:
        for p in prods:
            p.send(*[ev("shared", "log", p=id(p), i=i) for i in range(100)])
        seqs = []
        for p in prods:
            replies = p.read(100, timeout=10)
            assert all(r["ok"] for r in replies)
            s = [r["seq"] for r in replies]
            assert s == sorted(s)
            seqs += s
    finally:
        for p in prods:
            p.close()
    assert sorted(seqs) == list(range(1, 501))
