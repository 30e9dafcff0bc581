"""Resume (SPEC §4): a client that drops at a random point and reconnects with the id of the
last event it saw gets every later event exactly once, in seq order, while a producer keeps
posting -- on SSE, WebSocket and long-poll; and a stream.gap first when that id left the ring,
was never there, comes from before a restart, or is a bare seq beyond the last one."""

import asyncio
import random
import threading
import time
import urllib.parse

import pytest

from csutil import SSEClient, ev, poll, run, ws_collect, ws_connect, ws_next

TOTAL = 200
SEEDS = [11, 2024, 777]


class Producer(threading.Thread):
    """Posts TOTAL events to one execution in small batches, paced, from its own connection."""

    def __init__(self, d, execution, total=TOTAL, batch=4, pause=0.03):
        super().__init__(daemon=True)
        self.d, self.execution, self.total, self.batch, self.pause = d, execution, total, batch, pause
        self.error = None

    def run(self):
        try:
            with self.d.producer(timeout=10) as p:
                n = 0
                while n < self.total:
                    k = min(self.batch, self.total - n)
                    replies = p.request(*[ev(self.execution, "log", n=n + i) for i in range(k)])
                    assert [r["seq"] for r in replies] == list(range(n + 1, n + k + 1)), replies
                    n += k
                    time.sleep(self.pause)
        except Exception as e:  # reported by the test
            self.error = e


def check_exact(seen, total=TOTAL):
    assert len(seen) == len(set(seen)), "duplicates: %r" % [s for s in seen if seen.count(s) > 1][:10]
    assert seen == sorted(seen), "out of order"
    assert seen == list(range(1, total + 1)), "missing: %r" % sorted(set(range(1, total + 1)) - set(seen))[:20]


# ---- exactness under random drops --------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_sse_resume_exact(daemon, seed):
    rng = random.Random(seed)
    x = "sse-exact-%d" % seed
    prod = Producer(daemon, x)
    prod.start()
    seen, ns, cursor, connects = [], [], None, 0
    deadline = time.monotonic() + 40
    while len(seen) < TOTAL and time.monotonic() < deadline:
        path, headers = "/v1/executions/%s/events" % x, {}
        if cursor is not None:
            if rng.random() < 0.5:
                headers["Last-Event-ID"] = cursor
            else:
                path += "?last_event_id=" + urllib.parse.quote(cursor, safe="")
        connects += 1
        with SSEClient(daemon.port, path, headers=headers) as s:
            assert s.status == 200
            for _ in range(rng.randint(1, 30)):
                f = s.next_event(timeout=5)
                if f is None:
                    break
                e = f.json()
                assert e["type"] == "log", "unexpected %r after resuming from %r" % (e, cursor)
                seen.append(e["seq"])
                ns.append(e["n"])
                cursor = f.id
                if len(seen) >= TOTAL:
                    break
    prod.join(timeout=20)
    assert prod.error is None, prod.error
    check_exact(seen)
    assert ns == list(range(TOTAL))
    assert connects >= 8, connects


@pytest.mark.parametrize("seed", SEEDS)
def test_ws_resume_exact(daemon, seed):
    rng = random.Random(seed)
    x = "ws-exact-%d" % seed
    prod = Producer(daemon, x)

    async def go():
        seen, last, connects = [], None, 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 40
        while len(seen) < TOTAL and loop.time() < deadline:
            url = daemon.ws + "/v1/executions/%s/ws" % x
            if last is not None:
                form = rng.choice(["event_id", "seq", "since_seq"])
                if form == "event_id":
                    url += "?last_event_id=" + urllib.parse.quote(last["event_id"], safe="")
                elif form == "seq":
                    url += "?last_event_id=%d" % last["seq"]
                else:
                    url += "?since_seq=%d" % last["seq"]
            connects += 1
            ws = await ws_connect(url)
            try:
                for _ in range(rng.randint(1, 30)):
                    e = await ws_next(ws, timeout=5)
                    if e is None:
                        break
                    assert e["type"] == "log", "unexpected %r after resuming from %r" % (e, last)
                    seen.append(e["seq"])
                    last = e
                    if len(seen) >= TOTAL:
                        break
            finally:
                if rng.random() < 0.5:
                    ws.transport.abort()  # drop without a closing handshake
                    await asyncio.sleep(0)
                else:
                    await ws.close()
        return seen, connects

    prod.start()
    seen, connects = run(go(), 50)
    prod.join(timeout=20)
    assert prod.error is None, prod.error
    check_exact(seen)
    assert connects >= 8, connects


@pytest.mark.parametrize("seed", SEEDS)
def test_poll_resume_exact(daemon, seed):
    rng = random.Random(seed)
    x = "poll-exact-%d" % seed
    prod = Producer(daemon, x)
    prod.start()
    seen, params, polls = [], {}, 0
    deadline = time.monotonic() + 40
    while len(seen) < TOTAL and time.monotonic() < deadline:
        polls += 1
        r = poll(daemon.base, "/v1/executions/%s/poll" % x, dict(params, timeout="5"), http_timeout=10)
        assert r.status_code == 200, r.text
        body = r.json()
        assert "gap" not in body or body["gap"] is False, body
        events = body["events"]
        if not events:
            continue
        assert all(e["type"] == "log" for e in events)
        keep = events[: rng.randint(1, len(events))]
        seen += [e["seq"] for e in keep]
        last = keep[-1]
        if len(keep) == len(events):
            assert body["last_seq"] == last["seq"]
            form = rng.choice(["cursor", "event_id", "seq", "since_seq"])
        else:
            form = rng.choice(["event_id", "seq", "since_seq"])
        if form == "cursor":
            params = {"last_event_id": body["last_event_id"]}
        elif form == "event_id":
            params = {"last_event_id": last["event_id"]}
        elif form == "seq":
            params = {"last_event_id": str(last["seq"])}
        else:
            params = {"since_seq": str(last["seq"])}
    prod.join(timeout=20)
    assert prod.error is None, prod.error
    check_exact(seen)
    assert polls >= 5


def test_resume_from_last_event_gets_only_live(daemon):
    daemon.post_ok(*[ev("tail", "log", i=i) for i in range(5)])
    with SSEClient(daemon.port, "/v1/executions/tail/events") as s:
        cursor = s.collect(5, timeout=5)[-1].id
    with SSEClient(daemon.port, "/v1/executions/tail/events", headers={"Last-Event-ID": cursor}) as s:
        assert s.next_event(timeout=1.0) is None
        daemon.post_ok(ev("tail", "log", i=5))
        f = s.next_event(timeout=5)
        assert f.json()["seq"] == 6


def test_header_and_query_agree(daemon):
    daemon.post_ok(*[ev("hq", "log", i=i) for i in range(6)])
    with SSEClient(daemon.port, "/v1/executions/hq/events") as s:
        cursors = [f.id for f in s.collect(6, timeout=5)]
    c = cursors[2]
    with SSEClient(daemon.port, "/v1/executions/hq/events", headers={"Last-Event-ID": c}) as a, SSEClient(
        daemon.port, "/v1/executions/hq/events?last_event_id=" + urllib.parse.quote(c, safe="")
    ) as b, SSEClient(daemon.port, "/v1/executions/hq/events?since_seq=3") as cseq, SSEClient(
        daemon.port, "/v1/executions/hq/events?last_event_id=3"
    ) as dseq:
        for s in (a, b, cseq, dseq):
            got = s.collect(3, timeout=5)
            assert [f.json()["seq"] for f in got] == [4, 5, 6]
            assert [f.id for f in got] == cursors[3:]


# ---- gaps --------------------------------------------------------------------------------------

SMALL_RING = {"store": {"ring_events": 16}}


def gap_expect(execution, requested, first_seq):
    return {"type": "stream.gap", "execution_id": execution, "requested": requested, "first_seq": first_seq}


def cursors_of(d, x, n):
    with SSEClient(d.port, "/v1/executions/%s/events" % x) as s:
        frames = s.collect(n, timeout=5)
    assert len(frames) == n
    return {f.json()["seq"]: f.id for f in frames}, {f.json()["seq"]: f.json()["event_id"] for f in frames}


def check_sse_gap(d, x, requested, first_seq, last_seq, how="query", named=False):
    path = "/v1/executions/%s/events" % x
    headers = {}
    q = []
    if how == "query":
        q.append("last_event_id=" + urllib.parse.quote(requested, safe=""))
    else:
        headers["Last-Event-ID"] = requested
    if named:
        q.append("named=1")
    if q:
        path += "?" + "&".join(q)
    with SSEClient(d.port, path, headers=headers) as s:
        frames = s.collect(last_seq - first_seq + 2, timeout=5)
    assert frames, "nothing after resuming from %r" % requested
    gap = frames[0]
    assert gap.json() == gap_expect(x, requested, first_seq), gap.lines
    assert gap.id is None, "a gap frame must carry no id: line: %r" % gap.lines
    if named:
        assert gap.lines == ["event: stream.gap", "data: " + gap.data], gap.lines
    else:
        assert gap.lines == ["data: " + gap.data], gap.lines
    assert [f.json()["seq"] for f in frames[1:]] == list(range(first_seq, last_seq + 1))


def check_ws_gap(d, x, query, requested, first_seq, last_seq):
    async def go():
        ws = await ws_connect(d.ws + "/v1/executions/%s/ws?%s" % (x, query))
        try:
            return await ws_collect(ws, last_seq - first_seq + 2, timeout=5)
        finally:
            await ws.close()

    got = run(go(), 20)
    assert got and got[0] == gap_expect(x, requested, first_seq), got[:1]
    assert [e["seq"] for e in got[1:]] == list(range(first_seq, last_seq + 1))


def check_poll_gap(d, x, params, first_seq, last_seq):
    r = poll(d.base, "/v1/executions/%s/poll" % x, dict(params, timeout="0"), http_timeout=5)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body.get("gap") is True and body.get("first_seq") == first_seq, {k: v for k, v in body.items() if k != "events"}
    assert [e["seq"] for e in body["events"]] == list(range(first_seq, last_seq + 1))
    assert body["last_seq"] == last_seq
    assert all(e["type"] != "stream.gap" for e in body["events"])


TRANSPORTS = ["sse", "ws", "poll"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_gap_when_cursor_left_the_ring(make_daemon, transport):
    d = make_daemon(SMALL_RING)
    x = "ring"
    d.post_ok(*[ev(x, "log", i=i) for i in range(10)])
    cur, eids = cursors_of(d, x, 10)
    d.post_ok(*[ev(x, "log", i=i) for i in range(10, 50)])
    # The ring keeps the last 16: seqs 35..50.
    if transport == "sse":
        check_sse_gap(d, x, cur[5], 35, 50, how="query")
        check_sse_gap(d, x, cur[5], 35, 50, how="header", named=True)
        check_sse_gap(d, x, eids[2], 35, 50)
    elif transport == "ws":
        check_ws_gap(d, x, "last_event_id=" + urllib.parse.quote(cur[5], safe=""), cur[5], 35, 50)
        check_ws_gap(d, x, "last_event_id=" + urllib.parse.quote(eids[3], safe=""), eids[3], 35, 50)
    else:
        check_poll_gap(d, x, {"last_event_id": cur[5]}, 35, 50)
        check_poll_gap(d, x, {"last_event_id": "5"}, 35, 50)
        # No gap when the position is exactly before the oldest retained event.
        r = poll(d.base, "/v1/executions/%s/poll" % x, {"since_seq": "34", "timeout": "0"}, http_timeout=5).json()
        assert r.get("gap") in (None, False) and [e["seq"] for e in r["events"]] == list(range(35, 51))
    # A new subscriber without a cursor gets what is retained, without a gap.
    with SSEClient(d.port, "/v1/executions/%s/events" % x) as s:
        got = s.collect(16, timeout=5)
        assert [f.json()["seq"] for f in got] == list(range(35, 51))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_gap_for_unknown_event_id(daemon, transport):
    x = "unknown"
    daemon.post_ok(*[ev(x, "log", i=i) for i in range(5)])
    if transport == "sse":
        check_sse_gap(daemon, x, "no-such-event", 1, 5)
    elif transport == "ws":
        check_ws_gap(daemon, x, "last_event_id=no-such-event", "no-such-event", 1, 5)
    else:
        check_poll_gap(daemon, x, {"last_event_id": "no-such-event"}, 1, 5)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_gap_for_bare_seq_beyond_last(daemon, transport):
    x = "beyond"
    daemon.post_ok(*[ev(x, "log", i=i) for i in range(5)])
    if transport == "sse":
        check_sse_gap(daemon, x, "100", 1, 5)
    elif transport == "ws":
        check_ws_gap(daemon, x, "last_event_id=100", "100", 1, 5)
    else:
        check_poll_gap(daemon, x, {"last_event_id": "100"}, 1, 5)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_gap_for_cursor_from_before_restart(make_daemon, transport):
    d = make_daemon()
    x = "restart"
    d.post_ok(*[ev(x, "log", i=i) for i in range(5)])
    cur, _ = cursors_of(d, x, 5)
    port = d.port
    d.restart()
    assert d.port == port
    d.post_ok(*[ev(x, "log", i=i) for i in range(6)])
    # The old cursor names seq 3 of a history the daemon no longer has.
    if transport == "sse":
        check_sse_gap(d, x, cur[3], 1, 6)
        check_sse_gap(d, x, cur[5], 1, 6, how="header")
    elif transport == "ws":
        check_ws_gap(d, x, "last_event_id=" + urllib.parse.quote(cur[3], safe=""), cur[3], 1, 6)
    else:
        check_poll_gap(d, x, {"last_event_id": cur[3]}, 1, 6)
    # Cursors of the new history work without a gap, and differ from the old ones.
    new_cur, _ = cursors_of(d, x, 6)
    assert new_cur[3] != cur[3]
    with SSEClient(d.port, "/v1/executions/%s/events" % x, headers={"Last-Event-ID": new_cur[3]}) as s:
        assert [f.json()["seq"] for f in s.collect(3, timeout=5)] == [4, 5, 6]


def test_gap_for_slow_resume_while_ring_wraps(make_daemon):
    """A client that resumes after the producer lapped the ring several times is told once."""
    d = make_daemon(SMALL_RING)
    x = "lap"
    d.post_ok(ev(x, "log", i=0))
    cur, _ = cursors_of(d, x, 1)
    d.post_ok(*[ev(x, "log", i=i) for i in range(1, 200)])
    check_sse_gap(d, x, cur[1], 185, 200)


def test_gap_passes_the_types_filter(make_daemon):
    d = make_daemon(SMALL_RING)
    x = "gapfilter"
    d.post_ok(*[ev(x, "log") for _ in range(40)] + [ev(x, "run.completed")])
    with SSEClient(d.port, "/v1/executions/%s/events?types=run.*&last_event_id=3" % x) as s:
        frames = s.collect(2, timeout=5)
    assert frames[0].json() == gap_expect(x, "3", 26)
    assert [(f.json()["seq"], f.json()["type"]) for f in frames[1:]] == [(41, "run.completed")]
