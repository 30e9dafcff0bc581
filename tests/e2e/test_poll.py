"""Long-poll (SPEC §4): immediate answers, holding until a publish, timeout rules and bounds,
the forms of last_event_id, and the last_event_id/last_seq of every answer."""

import concurrent.futures
import time

import pytest

from csutil import SSEClient, ev, poll

V1 = "/v1/executions/%s/poll"
HITL = "/poll/human-input/%s"
V1_SSE = "/v1/executions/%s/events"


def get(d, path, **params):
    return poll(d.base, path, {k: str(v) for k, v in params.items()}, http_timeout=70)


def test_immediate_answer_with_history(daemon):
    replies = daemon.post_ok(*[ev("im", "log", i=i) for i in range(5)])
    t0 = time.monotonic()
    r = get(daemon, V1 % "im")  # default hold is 25 s, but there is something to answer
    assert time.monotonic() - t0 < 2.0
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers.get("access-control-allow-origin") == "*"
    body = r.json()
    assert set(body) == {"events", "last_event_id", "last_seq"}, body
    assert [e["seq"] for e in body["events"]] == [1, 2, 3, 4, 5]
    assert [e["event_id"] for e in body["events"]] == [x["event_id"] for x in replies]
    assert [e["i"] for e in body["events"]] == list(range(5))
    assert body["last_seq"] == 5
    assert isinstance(body["last_event_id"], str) and body["last_event_id"]


def test_empty_execution(daemon):
    t0 = time.monotonic()
    r = get(daemon, V1 % "nobody", timeout=0)
    assert time.monotonic() - t0 < 2.0
    assert r.status_code == 200
    assert r.json() == {"events": [], "last_event_id": None, "last_seq": 0}
    r = get(daemon, HITL % "nobody")
    assert r.status_code == 200
    assert r.json() == {"events": [], "last_event_id": None, "last_seq": 0}


def test_hold_then_answer_on_publish(daemon):
    daemon.post_ok(ev("hold", "run.started"))
    first = get(daemon, V1 % "hold", timeout=0).json()
    cursor = first["last_event_id"]
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        t0 = time.monotonic()
        fut = ex.submit(get, daemon, V1 % "hold", last_event_id=cursor, timeout=20)
        time.sleep(1.5)
        assert not fut.done(), "the poll answered without anything new: %r" % fut.result().text
        daemon.post_ok(ev("hold", "log", message="new"))
        t_post = time.monotonic()
        r = fut.result(timeout=10)
        t_answer = time.monotonic()
    assert r.status_code == 200
    body = r.json()
    assert [(e["seq"], e["type"]) for e in body["events"]] == [(2, "log")]
    assert body["last_seq"] == 2
    assert t_answer - t_post < 1.5, "answered %.2fs after the publish" % (t_answer - t_post)
    assert t_answer - t0 < 5, "held %.2fs" % (t_answer - t0)
    # The new cursor continues exactly after it.
    again = get(daemon, V1 % "hold", last_event_id=body["last_event_id"], timeout=0).json()
    assert again["events"] == [] and again["last_seq"] == 2


def test_default_hold_on_v1_route(daemon):
    """No ?timeout on /v1/.../poll: the default is 25 s, so it is still held after 2.5 s."""
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        fut = ex.submit(get, daemon, V1 % "dflt")
        time.sleep(2.5)
        assert not fut.done(), "answered at once: %r" % fut.result().text
        daemon.post_ok(ev("dflt", "run.started"))
        r = fut.result(timeout=5)
    assert [e["seq"] for e in r.json()["events"]] == [1]


def test_default_no_hold_on_hitl_route(daemon):
    daemon.post_ok(ev("hz", "run.started"))
    t0 = time.monotonic()
    r = get(daemon, HITL % "hz")
    assert time.monotonic() - t0 < 1.0, "the seed route must not hold by default"
    assert r.status_code == 200 and r.json()["events"] == []
    # ?timeout= opts in.
    t0 = time.monotonic()
    r = get(daemon, HITL % "hz", timeout=2)
    dt = time.monotonic() - t0
    assert 1.7 <= dt <= 3.5, dt
    assert r.json()["events"] == []
    # And a held HITL poll is answered by a HITL event, not by others.
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        t0 = time.monotonic()
        fut = ex.submit(get, daemon, HITL % "hz", timeout=10)
        time.sleep(0.7)
        daemon.post_ok(ev("hz", "log"))
        time.sleep(0.7)
        assert not fut.done(), fut.result().text
        daemon.post_ok(ev("hz", "human_input_required", prompt="p"))
        r = fut.result(timeout=5)
        assert time.monotonic() - t0 < 4
    assert [(e["seq"], e["type"]) for e in r.json()["events"]] == [(3, "human_input_required")]


def test_timeout_zero_and_expiry(daemon):
    daemon.post_ok(ev("tz", "a"), ev("tz", "b"), ev("tz", "c"))
    all3 = get(daemon, V1 % "tz", timeout=0).json()
    c3 = all3["last_event_id"]
    t0 = time.monotonic()
    r = get(daemon, V1 % "tz", last_event_id=c3, timeout=0)
    assert time.monotonic() - t0 < 1.0
    assert r.json() == {"events": [], "last_event_id": c3, "last_seq": 3}
    t0 = time.monotonic()
    r = get(daemon, V1 % "tz", last_event_id=c3, timeout=2)
    dt = time.monotonic() - t0
    assert 1.7 <= dt <= 3.5, dt
    assert r.json() == {"events": [], "last_event_id": c3, "last_seq": 3}


def test_publish_elsewhere_does_not_answer(daemon):
    daemon.post_ok(ev("mine", "a"))
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        t0 = time.monotonic()
        fut = ex.submit(get, daemon, V1 % "mine", since_seq=1, timeout=2)
        time.sleep(0.5)
        daemon.post_ok(ev("other", "a"), ev("other", "b"))
        r = fut.result(timeout=10)
        dt = time.monotonic() - t0
    assert r.json()["events"] == []
    assert dt >= 1.7, dt


@pytest.mark.parametrize(
    "route,param,value",
    [
        (V1, "timeout", "61"),
        (V1, "timeout", "-1"),
        (V1, "timeout", "abc"),
        (V1, "timeout", ""),
        (V1, "timeout", "1e3"),
        (HITL, "timeout", "61"),
        (HITL, "timeout", "abc"),
        (V1, "since_seq", "abc"),
        (V1, "since_seq", "-1"),
        (V1, "types", "a b"),
    ],
)
def test_bad_query_values(daemon, route, param, value):
    r = get(daemon, route % "bq", **{param: value})
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"] == "bad_request"
    assert param in body["detail"], body
    assert r.headers["content-type"].startswith("application/json")


def test_timeout_bounds_accepted(daemon):
    daemon.post_ok(ev("tb", "a"))
    for t in ("0", "1", "60"):
        r = get(daemon, V1 % "tb", timeout=t)
        assert r.status_code == 200, (t, r.text)
        assert [e["seq"] for e in r.json()["events"]] == [1]


def test_last_event_id_forms(daemon):
    daemon.post_ok(
        ev("forms", "run.started", event_id="e1"),
        ev("forms", "human_input_required", event_id="shared", prompt="p"),
        ev("forms", "log", event_id="e3"),
        ev("forms", "human_input_completed", event_id="shared", human_feedback="f"),
        ev("forms", "run.completed", event_id="e5"),
    )
    full = get(daemon, V1 % "forms", timeout=0).json()
    assert [e["seq"] for e in full["events"]] == [1, 2, 3, 4, 5]

    def seqs(**params):
        r = get(daemon, V1 % "forms", timeout=0, **params)
        assert r.status_code == 200, (params, r.text)
        return [e["seq"] for e in r.json()["events"]], r.json()

    # A cursor (taken from the stream's id: lines, never built).
    with SSEClient(daemon.port, V1_SSE % "forms") as sse:
        cursors = {f.json()["seq"]: f.id for f in sse.collect(5, timeout=5)}
    assert sorted(cursors) == [1, 2, 3, 4, 5]
    for n in range(1, 6):
        got, body = seqs(last_event_id=cursors[n])
        assert got == list(range(n + 1, 6)), (n, got)
        assert body["last_seq"] == 5
        assert body["last_event_id"] == (cursors[5] if n < 5 else cursors[5])
    # The cursor of the last event of an answer resumes right after it.
    body = get(daemon, V1 % "forms", timeout=0, since_seq=0).json()
    assert body["last_event_id"] == cursors[5]
    assert seqs(last_event_id=body["last_event_id"])[0] == []
    # Last-Event-ID header works on long-poll too.
    r = poll(daemon.base, V1 % "forms", {"timeout": "0"}, headers={"Last-Event-ID": cursors[3]}, http_timeout=5)
    assert [e["seq"] for e in r.json()["events"]] == [4, 5]
    # Bare seq.
    assert seqs(last_event_id="2")[0] == [3, 4, 5]
    assert seqs(last_event_id="0")[0] == [1, 2, 3, 4, 5]
    # event_id; an id used twice means its first occurrence.
    assert seqs(last_event_id="e1")[0] == [2, 3, 4, 5]
    assert seqs(last_event_id="shared")[0] == [3, 4, 5]
    assert seqs(last_event_id="e3")[0] == [4, 5]
    assert seqs(last_event_id="e5")[0] == []
    # since_seq.
    assert seqs(since_seq=3)[0] == [4, 5]
    assert seqs(since_seq=5)[0] == []


def test_cursor_resumes_exactly(daemon):
    """Walk the history one answer at a time by the cursor of each answer."""
    daemon.post_ok(*[ev("walk", "log", i=i) for i in range(10)])
    seen = []
    cursor = None
    for _ in range(20):
        params = {"timeout": 0}
        if cursor:
            params["last_event_id"] = cursor
        body = get(daemon, V1 % "walk", **params).json()
        if not body["events"]:
            break
        seen += [e["seq"] for e in body["events"]]
        assert body["last_seq"] == body["events"][-1]["seq"]
        cursor = body["last_event_id"]
        daemon.post_ok(ev("walk", "log", i=100 + len(seen))) if len(seen) < 15 else None
    assert seen == list(range(1, len(seen) + 1)) and len(seen) >= 15


def test_last_seq_follows_returned_events(daemon):
    daemon.post_ok(*[ev("ls", "log") for _ in range(4)])
    body = get(daemon, V1 % "ls", since_seq=1, timeout=0).json()
    assert [e["seq"] for e in body["events"]] == [2, 3, 4]
    assert body["last_seq"] == 4
    body2 = get(daemon, V1 % "ls", since_seq=4, timeout=0).json()
    assert body2["events"] == [] and body2["last_seq"] == 4
    if body2["last_event_id"] is not None:
        assert get(daemon, V1 % "ls", last_event_id=body2["last_event_id"], timeout=0).json()["events"] == []


def test_hitl_poll_like_the_seed(daemon):
    """The seed client resumes with the event_id of the last event it saw."""
    daemon.post_ok(
        ev("sp", "run.started"),
        ev("sp", "human_input_required", event_id="r1", prompt="p", context="c"),
        ev("sp", "log"),
    )
    body = get(daemon, HITL % "sp").json()
    assert [(e["seq"], e["type"]) for e in body["events"]] == [(2, "human_input_required")]
    assert body["last_seq"] == 2
    r = get(daemon, HITL % "sp", last_event_id="r1")
    assert r.json()["events"] == []
    daemon.post_ok(ev("sp", "tool.called"), ev("sp", "human_input_completed", event_id="c1", human_feedback="ok"))
    body = get(daemon, HITL % "sp", last_event_id="r1").json()
    assert [(e["seq"], e["type"]) for e in body["events"]] == [(5, "human_input_completed")]
    assert body["last_seq"] == 5
    assert get(daemon, HITL % "sp", last_event_id="c1").json()["events"] == []


def test_many_held_polls_one_publish(daemon):
    daemon.post_ok(ev("many", "a"))
    n = 40
    with concurrent.futures.ThreadPoolExecutor(n) as ex:
        futs = [ex.submit(get, daemon, V1 % "many", since_seq=1, timeout=20) for _ in range(n)]
        time.sleep(1.5)
        assert not any(f.done() for f in futs)
        t_post = time.monotonic()
        daemon.post_ok(ev("many", "b"))
        results = [f.result(timeout=10) for f in futs]
        dt = time.monotonic() - t_post
    assert dt < 3, dt
    for r in results:
        assert [(e["seq"], e["type"]) for e in r.json()["events"]] == [(2, "b")]


def test_client_leaves_while_held(daemon):
    """A held poll whose client goes away does not disturb the daemon or other polls."""
    import socket

    for _ in range(10):
        s = socket.create_connection(("127.0.0.1", daemon.port), timeout=5)
        s.sendall(b"GET /v1/executions/gone/poll?timeout=30 HTTP/1.1\r\nHost: x\r\n\r\n")
        s.close()
    time.sleep(0.3)
    daemon.post_ok(ev("gone", "a"))
    r = get(daemon, V1 % "gone", timeout=0)
    assert [e["seq"] for e in r.json()["events"]] == [1]


def test_since_now(daemon):
    daemon.post_ok(ev("pnow", "a"), ev("pnow", "b"))
    r = get(daemon, V1 % "pnow", since="now", timeout=0)
    assert r.status_code == 200 and r.json()["events"] == [], r.text
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        fut = ex.submit(get, daemon, V1 % "pnow", since="now", timeout=10)
        time.sleep(0.7)
        assert not fut.done(), fut.result().text
        daemon.post_ok(ev("pnow", "c"))
        body = fut.result(timeout=5).json()
    assert [(e["seq"], e["type"]) for e in body["events"]] == [(3, "c")]
    assert body["last_seq"] == 3
