"""GET /v1/events (SPEC §4): the SSE stream of every execution, in publish order, with its own
global cursors; resume by those cursors (exact under random drops), gaps for cursors it does not
have, ?types= and ?since=now."""

import random
import threading
import time
import urllib.parse

import pytest

from csutil import SSEClient, ev

G = "/v1/events"


def test_all_executions_in_publish_order(daemon):
    lines = [ev("g-%d" % (i % 3), "log", i=i) for i in range(30)]
    replies = daemon.post_ok(*lines)
    with SSEClient(daemon.port, G) as s:
        assert s.status == 200
        assert s.headers["content-type"] == "text/event-stream; charset=utf-8"
        frames = s.collect(30, timeout=5)
        got = [f.json() for f in frames]
        assert [e["i"] for e in got] == list(range(30))
        assert [(e["execution_id"], e["seq"], e["event_id"]) for e in got] == [
            (l["execution_id"], r["seq"], r["event_id"]) for l, r in zip(lines, replies)]
        assert all(f.id for f in frames) and len({f.id for f in frames}) == 30
        # Live, interleaved.
        daemon.post_ok(ev("g-9", "a"), ev("g-0", "b"))
        live = [f.json() for f in s.collect(2, timeout=5)]
        assert [(e["execution_id"], e["seq"]) for e in live] == [("g-9", 1), ("g-0", 11)]
    # The global cursors are the stream's own: not the executions' cursors.
    with SSEClient(daemon.port, "/v1/executions/g-0/events") as s:
        exec_ids = {f.json()["seq"]: f.id for f in s.collect(11, timeout=5)}
    global_ids = {e["seq"]: f.id for f, e in zip(frames, got) if e["execution_id"] == "g-0"}
    for seq, gid in global_ids.items():
        assert gid != exec_ids[seq]


def test_named_and_since_now(daemon):
    daemon.post_ok(ev("gn", "run.started"))
    with SSEClient(daemon.port, G + "?since=now&named=1") as s:
        assert s.next_event(timeout=1.0) is None
        daemon.post_ok(ev("gn2", "tool.called"))
        f = s.next_event(timeout=5)
        assert f.lines[0] == "event: tool.called" and f.lines[1].startswith("id: ")
        assert f.json()["execution_id"] == "gn2"


def test_types_filter(daemon):
    daemon.post_ok(ev("gt1", "run.started"), ev("gt2", "log"), ev("gt1", "log"), ev("gt2", "run.completed"))
    with SSEClient(daemon.port, G + "?types=run.*") as s:
        got = [(f.json()["execution_id"], f.json()["type"]) for f in s.collect(2, timeout=5)]
        assert got == [("gt1", "run.started"), ("gt2", "run.completed")]
        assert s.next_event(timeout=0.5) is None


def test_resume_by_global_cursor(daemon):
    daemon.post_ok(*[ev("gr-%d" % (i % 4), "log", i=i) for i in range(20)])
    with SSEClient(daemon.port, G) as s:
        frames = s.collect(20, timeout=5)
    c = frames[7].id
    for path, headers in ((G, {"Last-Event-ID": c}), (G + "?last_event_id=" + urllib.parse.quote(c, safe=""), {})):
        with SSEClient(daemon.port, path, headers=headers) as s:
            got = s.collect(12, timeout=5)
            assert [f.json()["i"] for f in got] == list(range(8, 20))
            assert [f.id for f in got] == [f.id for f in frames[8:]]
            assert s.next_event(timeout=0.5) is None


@pytest.mark.parametrize("seed", [3, 99])
def test_resume_exact_under_random_drops(daemon, seed):
    rng = random.Random(seed)
    total = 240
    err = []

    def produce():
        try:
            with daemon.producer(timeout=10) as p:
                for b in range(0, total, 4):
                    p.request(*[ev("gx-%d" % ((b + j) % 5), "log", n=b + j) for j in range(4)])
                    time.sleep(0.02)
        except Exception as e:
            err.append(e)

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    seen, cursor, connects = [], None, 0
    deadline = time.monotonic() + 40
    while len(seen) < total and time.monotonic() < deadline:
        headers = {"Last-Event-ID": cursor} if cursor else {}
        connects += 1
        with SSEClient(daemon.port, G, headers=headers) as s:
            for _ in range(rng.randint(1, 30)):
                f = s.next_event(timeout=5)
                if f is None:
                    break
                e = f.json()
                assert e["type"] == "log", e
                seen.append(e["n"])
                cursor = f.id
                if len(seen) >= total:
                    break
    t.join(timeout=20)
    assert not err, err
    assert seen == list(range(total)), "first difference at %r" % next(
        (i for i, (a, b) in enumerate(zip(seen, range(total))) if a != b), len(seen))
    assert connects >= 8


def _expect_gap_then(s, requested, first_types_count):
    frames = s.collect(first_types_count + 1, timeout=5)
    assert frames, "nothing after resuming from %r" % requested
    gap = frames[0].json()
    assert gap["type"] == "stream.gap" and gap["requested"] == requested, gap
    assert isinstance(gap["first_seq"], int)
    assert frames[0].id is None, frames[0].lines
    return frames[1:]


def test_gap_when_global_cursor_left_the_ring(make_daemon):
    d = make_daemon({"store": {"global_events": 16}})
    d.post_ok(*[ev("gg-%d" % (i % 2), "log", i=i) for i in range(5)])
    with SSEClient(d.port, G) as s:
        c = s.collect(5, timeout=5)[1].id
    d.post_ok(*[ev("gg-%d" % (i % 2), "log", i=i) for i in range(5, 40)])
    with SSEClient(d.port, G, headers={"Last-Event-ID": c}) as s:
        rest = _expect_gap_then(s, c, 16)
    assert [f.json()["i"] for f in rest] == list(range(24, 40))


def test_gap_for_cursor_of_another_epoch(make_daemon):
    d = make_daemon()
    d.post_ok(*[ev("ge", "log", i=i) for i in range(4)])
    with SSEClient(d.port, G) as s:
        old_global = s.collect(4, timeout=5)[1].id
    with SSEClient(d.port, "/v1/executions/ge/events") as s:
        exec_cursor = s.collect(4, timeout=5)[1].id
    # An execution's cursor is not a cursor of the global stream.
    with SSEClient(d.port, G, headers={"Last-Event-ID": exec_cursor}) as s:
        rest = _expect_gap_then(s, exec_cursor, 4)
        assert [f.json()["i"] for f in rest] == [0, 1, 2, 3]
    # A global cursor from before a restart.
    d.restart()
    d.post_ok(*[ev("ge", "log", i=i) for i in range(10, 13)])
    with SSEClient(d.port, G, headers={"Last-Event-ID": old_global}) as s:
        rest = _expect_gap_then(s, old_global, 3)
        assert [f.json()["i"] for f in rest] == [10, 11, 12]


def test_resume_by_event_id(make_daemon):
    """Every resume takes an event_id too (SPEC §4): on the all-executions stream it is looked up in
    every execution; an id gone from the ring, or never there, is a gap."""
    d = make_daemon({"store": {"global_events": 16}})
    d.post_ok(ev("gi-a", "log", i=0, event_id="a-0"), ev("gi-b", "log", i=1, event_id="b-1"),
              ev("gi-a", "log", i=2, event_id="a-2"), ev("gi-b", "log", i=3, event_id="b-3"))
    for path, headers in ((G, {"Last-Event-ID": "b-1"}), (G + "?last_event_id=b-1", {})):
        with SSEClient(d.port, path, headers=headers) as s:
            got = s.collect(2, timeout=5)
        assert [f.json()["i"] for f in got] == [2, 3]
        assert all(f.event != "stream.gap" for f in got)
    # The same id in two executions: the oldest occurrence counts (events may repeat, none is skipped).
    d.post_ok(ev("gi-a", "log", i=4, event_id="twin"), ev("gi-b", "log", i=5, event_id="twin"),
              ev("gi-a", "log", i=6))
    with SSEClient(d.port, G, headers={"Last-Event-ID": "twin"}) as s:
        assert [f.json()["i"] for f in s.collect(2, timeout=5)] == [5, 6]
    # Pushed out of the global ring: a gap, then the oldest retained.
    d.post_ok(*[ev("gi-a", "log", i=i) for i in range(7, 30)])
    with SSEClient(d.port, G, headers={"Last-Event-ID": "a-0"}) as s:
        rest = _expect_gap_then(s, "a-0", 16)
    assert [f.json()["i"] for f in rest] == list(range(14, 30))
    with SSEClient(d.port, G, headers={"Last-Event-ID": "never-posted"}) as s:
        _expect_gap_then(s, "never-posted", 16)
