"""Resume and idempotency across a restart (SPEC §8, issue 12 points 2 and 5): an SSE, a
WebSocket and a long-poll client read part of an execution; the daemon restarts (SIGTERM, or
SIGKILL); they reconnect with their last id (Last-Event-ID, ?last_event_id=, the poll's cursor)
and get exactly the rest, then live events. Re-posting an acknowledged event after a restart
answers its original seq and stores nothing."""

import os
import signal
import urllib.parse

import pytest
import requests

from conftest import mkdtemp
from csutil import SSEClient, ev, history, poll, run, ws_collect, ws_connect

RESTARTS = ["sigterm", "sigkill"]


def jdaemon(make_daemon, fsync="everysec", **cfg):
    jdir = os.path.join(mkdtemp("cs-journal-"), "j")
    config = {"journal": {"dir": jdir, "fsync": fsync}}
    config.update(cfg)
    return make_daemon(config), jdir


def restart(d, how):
    if how == "sigterm":
        d.restart()
    else:
        d.proc.send_signal(signal.SIGKILL)
        assert d.wait_exit(10) == -signal.SIGKILL
        d.start()


@pytest.mark.parametrize("how", RESTARTS)
def test_sse_ws_poll_resume_exactly_across_restart(make_daemon, how):
    d, _ = jdaemon(make_daemon)
    x = "resume-" + how
    first = d.post_ok(*[ev(x, "log", i=i) for i in range(20)])
    # Long-poll: reads the first 20 and keeps the cursor the answer gives.
    body = poll(d.base, "/v1/executions/%s/poll" % x, {"timeout": "0"}, http_timeout=5).json()
    assert [e["seq"] for e in body["events"]] == list(range(1, 21))
    poll_cursor = body["last_event_id"]
    d.post_ok(*[ev(x, "log", i=i) for i in range(20, 30)])
    # SSE reads 10 (its last id: the frame's cursor), WebSocket 15 (its last id: the event_id).
    with SSEClient(d.port, "/v1/executions/%s/events" % x) as s:
        frames = s.collect(10, timeout=5)
    assert [f.json()["seq"] for f in frames] == list(range(1, 11))
    sse_cursor = frames[-1].id

    async def ws_part():
        ws = await ws_connect(d.ws + "/v1/executions/%s/ws" % x)
        try:
            return await ws_collect(ws, 15, timeout=5)
        finally:
            await ws.close()

    got = run(ws_part(), 20)
    assert [e["seq"] for e in got] == list(range(1, 16))
    ws_last = got[-1]["event_id"]
    assert ws_last == first[14]["event_id"]

    restart(d, how)

    # Each reconnects with its last id and gets exactly the rest (no gap, no repeat) ...
    sse = SSEClient(d.port, "/v1/executions/%s/events" % x, headers={"Last-Event-ID": sse_cursor})

    async def ws_rest():
        ws = await ws_connect(d.ws + "/v1/executions/%s/ws?last_event_id=%s" % (x, urllib.parse.quote(ws_last)))
        return ws, await ws_collect(ws, 15, timeout=5)

    async def ws_live(ws, n):
        try:
            return await ws_collect(ws, n, timeout=5)
        finally:
            await ws.close()

    import asyncio

    loop = asyncio.new_event_loop()
    try:
        ws, ws_got = loop.run_until_complete(asyncio.wait_for(ws_rest(), 20))
        assert [e.get("type") for e in ws_got[:1]] != ["stream.gap"], "WebSocket resume after restart: %r" % ws_got[:1]
        assert [e["seq"] for e in ws_got] == list(range(16, 31)), [e.get("seq", e) for e in ws_got]
        sse_got = [f.json() for f in sse.collect(20, timeout=5)]
        assert sse_got and sse_got[0]["type"] != "stream.gap", "SSE resume after restart: %r" % sse_got[0]
        assert [e["seq"] for e in sse_got] == list(range(11, 31))
        assert [e["event_id"] for e in sse_got] == [r["event_id"] for r in first[10:]] + [e["event_id"] for e in sse_got[10:]]
        pbody = poll(d.base, "/v1/executions/%s/poll" % x, {"last_event_id": poll_cursor, "timeout": "0"}, http_timeout=5).json()
        assert not pbody.get("gap"), {k: v for k, v in pbody.items() if k != "events"}
        assert [e["seq"] for e in pbody["events"]] == list(range(21, 31))
        assert pbody["last_seq"] == 30
        # ... then the live stream, which continues the seq.
        live = d.post_ok(*[ev(x, "log", i=i) for i in range(30, 35)])
        assert [r["seq"] for r in live] == list(range(31, 36))
        assert [f.json()["seq"] for f in sse.collect(5, timeout=5)] == list(range(31, 36))
        assert [e["seq"] for e in loop.run_until_complete(asyncio.wait_for(ws_live(ws, 5), 20))] == list(range(31, 36))
        p2 = poll(d.base, "/v1/executions/%s/poll" % x, {"last_event_id": pbody["last_event_id"], "timeout": "5"},
                  http_timeout=10).json()
        assert [e["seq"] for e in p2["events"]] == list(range(31, 36))
    finally:
        sse.close()
        loop.close()


def test_cursor_survives_two_restarts_and_new_cursors_work(make_daemon):
    """Cursors from the first life, and from the second, both resume exactly in the third."""
    d, _ = jdaemon(make_daemon)
    x = "lives"
    d.post_ok(*[ev(x, "log", i=i) for i in range(5)])
    with SSEClient(d.port, "/v1/executions/%s/events" % x) as s:
        c1 = [f.id for f in s.collect(5, timeout=5)]
    d.restart()
    d.post_ok(*[ev(x, "log", i=i) for i in range(5, 10)])
    with SSEClient(d.port, "/v1/executions/%s/events" % x) as s:
        c2 = [f.id for f in s.collect(10, timeout=5)]
    assert c2[:5] == c1, "the cursors of the first five changed across the restart"
    restart(d, "sigkill")
    for i, cur in enumerate(c2):
        with SSEClient(d.port, "/v1/executions/%s/events?last_event_id=%s" % (x, urllib.parse.quote(cur, safe=""))) as s:
            got = [f.json() for f in s.collect(9 - i, timeout=5)] if i < 9 else []
            if i == 9:
                assert s.next_event(timeout=0.5) is None
        assert [e["seq"] for e in got] == list(range(i + 2, 11)), (i, got[:1])


@pytest.mark.parametrize("how", RESTARTS)
def test_idempotent_repost_after_restart(make_daemon, how):
    d, _ = jdaemon(make_daemon)
    x = "idem-" + how
    lines = [ev(x, "log", event_id="e-%d" % i, i=i) for i in range(10)]
    orig = d.post_ok(*lines)
    req = d.post_ok(ev(x, "human_input_required", event_id="ask-1", task_id="t"))[0]
    assert req["seq"] == 11
    restart(d, how)
    # The same event_id and type again: the original seq, marked duplicate, stored once.
    again = d.post_ok(*lines)
    for o, a in zip(orig, again):
        assert a["seq"] == o["seq"] and a["event_id"] == o["event_id"] and a.get("duplicate") is True, (o, a)
    a = d.post_ok(ev(x, "human_input_required", event_id="ask-1", task_id="t"))[0]
    assert a["seq"] == 11 and a.get("duplicate") is True, a
    # Over HTTP ingest too.
    r = requests.post(d.base + "/v1/events", json=lines[3], timeout=5)
    assert r.status_code == 200 and r.json()["seq"] == 4 and r.json().get("duplicate") is True, r.text
    # The same event_id with another type is a new event, continuing the seq.
    n = d.post_ok(ev(x, "agent.started", event_id="e-0"))[0]
    assert n["seq"] == 12 and not n.get("duplicate"), n
    evs = history(d, x)["events"]
    assert [e["seq"] for e in evs] == list(range(1, 13))
    assert [e["event_id"] for e in evs] == ["e-%d" % i for i in range(10)] + ["ask-1", "e-0"]
    # And once more after another restart: the index holds the new event too.
    restart(d, how)
    assert d.post_ok(ev(x, "agent.started", event_id="e-0"))[0]["seq"] == 12
    assert d.post_ok(ev(x, "log", event_id="e-9"))[0]["seq"] == 10
    assert d.post_ok(ev(x, "log", event_id="e-new"))[0]["seq"] == 13


def test_replay_keeps_store_bounds_and_gaps(make_daemon):
    """Replay fills rings within store.ring_events (also a smaller one set while the daemon was down);
    a resume from before the oldest retained event gets stream.gap, the seq continues."""
    d, _ = jdaemon(make_daemon, store={"ring_events": 16})
    x = "ring"
    d.post_ok(*[ev(x, "log", i=i) for i in range(50)])
    restart(d, "sigkill")
    body = history(d, x)
    assert [e["seq"] for e in body["events"]] == list(range(35, 51))
    gap = history(d, x, since_seq=5)
    assert gap.get("gap") is True and gap["first_seq"] == 35, {k: v for k, v in gap.items() if k != "events"}
    with SSEClient(d.port, "/v1/executions/%s/events?last_event_id=5" % x) as s:
        first = s.next_event(timeout=5).json()
    assert first == {"type": "stream.gap", "execution_id": x, "requested": "5", "first_seq": 35}, first
    assert d.post_ok(ev(x, "log"))[0]["seq"] == 51


def test_smaller_ring_after_a_crash_restart(make_daemon):
    """A crash, a restart, a clean stop, and a start with a smaller store.ring_events: the replayed
    execution holds no more than the new bound, now and after the next event."""
    d, _ = jdaemon(make_daemon, store={"ring_events": 16})
    x = "ring"
    d.post_ok(*[ev(x, "log", i=i) for i in range(50)])
    restart(d, "sigkill")
    assert [e["seq"] for e in history(d, x)["events"]] == list(range(35, 51))
    assert d.stop() == 0
    d.config["store"]["ring_events"] = 4
    d.start()
    d.post_ok(*[ev("fresh", "log", i=i) for i in range(50)])
    assert [e["seq"] for e in history(d, "fresh")["events"]] == [47, 48, 49, 50]
    got = [e["seq"] for e in history(d, x)["events"]]
    assert got == [47, 48, 49, 50], "store.ring_events is 4, the replayed execution holds %r" % got
    assert d.post_ok(ev(x, "log"))[0]["seq"] == 51
    got = [e["seq"] for e in history(d, x)["events"]]
    assert got == [48, 49, 50, 51], "store.ring_events is 4, after one more event the execution holds %r" % got
    assert requests.get(d.base + "/v1/executions/" + x, timeout=5).json()["events"] == 51


def test_smaller_ring_after_a_clean_restart(make_daemon):
    d, _ = jdaemon(make_daemon, store={"ring_events": 16})
    x = "ring"
    d.post_ok(*[ev(x, "log", i=i) for i in range(50)])
    assert d.stop() == 0
    d.config["store"]["ring_events"] = 4
    d.start()
    assert [e["seq"] for e in history(d, x)["events"]] == [47, 48, 49, 50]
    assert d.post_ok(ev(x, "log"))[0]["seq"] == 51
    assert [e["seq"] for e in history(d, x)["events"]] == [48, 49, 50, 51]


def test_retain_s_counts_from_recorded_time(make_daemon):
    """A finished execution whose retain_s ran out while the daemon was down is not brought back;
    one still within it is, and a running one always is."""
    import time

    d, _ = jdaemon(make_daemon, store={"retain_s": 3})
    d.post_ok(ev("old", "run.started"), ev("old", "run.completed", result=1))
    time.sleep(2.0)
    d.post_ok(ev("young", "run.started"), ev("young", "run.completed", result=2))
    d.post_ok(ev("alive", "run.started"))
    before_young = requests.get(d.base + "/v1/executions/young", timeout=5).json()
    d.stop()
    time.sleep(1.5)  # "old" finished 3.5 s ago, "young" 1.5 s ago
    d.start()
    ids = [e["execution_id"] for e in requests.get(d.base + "/v1/executions", timeout=5).json()["executions"]]
    assert "old" not in ids, "an execution past retain_s came back: %r" % ids
    assert "young" in ids and "alive" in ids, ids
    assert requests.get(d.base + "/v1/executions/young", timeout=5).json() == before_young
    assert [e["seq"] for e in history(d, "alive")["events"]] == [1]


def test_repost_of_an_event_that_left_the_ring_answers_as_before_the_restart(make_daemon):
    """Two executions with the same history; an event that left the ring is re-posted to one before the
    restart and to the other after it: both get the same answer (a restart changes nothing)."""
    d, _ = jdaemon(make_daemon, store={"ring_events": 16})
    for x in ("twin-1", "twin-2"):
        d.post_ok(*[ev(x, "log", event_id="e-%d" % i) for i in range(50)])
    r1 = d.post_ok(ev("twin-1", "log", event_id="e-3"), ev("twin-1", "log", event_id="e-45"))
    restart(d, "sigkill")
    r2 = d.post_ok(ev("twin-2", "log", event_id="e-3"), ev("twin-2", "log", event_id="e-45"))
    assert [(r["seq"], r.get("duplicate")) for r in r2] == [(r["seq"], r.get("duplicate")) for r in r1], (r1, r2)
