"""Cluster mode: history older than a node's ring is read from Redis (SPEC §4 resume, §11; issue 16).

A node's ring is a cache of Redis. A node that joined after an execution began holds only what came
after it joined; a subscriber there whose start needs older events (no cursor, or a cursor, event_id,
bare seq or since_seq from before the ring) is held while one script reads them from Redis, then gets
exactly the events after its start, then live — on SSE, WebSocket and long-poll, with ?types= too. An
execution the node never saw is served (200, the history), also on a long-poll that never holds
(timeout=0, the seed's /poll/human-input/ route). Redis not answering: a long-poll whose resume would be
short answers 503 (retry) at its timeout, never a silent gap; an SSE or WebSocket stream stays held (heartbeats)
and continues exactly once Redis is back; both are counted in /metrics.
"""

import json
import time
import urllib.parse

import pytest

from clusterutil import (add_node, check_exact, cluster_factory, join_all, need_real_cluster, reader,  # noqa: F401
                         redis)
from csutil import RawWS, SSEClient, ev, poll, wait_until


def sse_ids(node, x, n):
    """{seq: SSE id} of the first n events of x as node streams them."""
    with SSEClient(node.port, "/v1/executions/%s/events" % x) as s:
        frames = s.collect(n, timeout=10)
    assert len(frames) == n, "%d of %d events from %s" % (len(frames), n, node.name)
    return {f.json()["seq"]: f.id for f in frames}


def history(node, x, since=0):
    r = poll(node.base, "/v1/executions/%s/poll" % x, {"timeout": "0", "since_seq": str(since)}, http_timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["events"]


def metric(node, name):
    body = poll(node.base, "/metrics", http_timeout=5).text
    for line in body.splitlines():
        if line.startswith("crewstream_" + name + " "):
            return float(line.split()[1])
    return None  # (checked by the caller: a daemon without it fails there, after the behaviour is checked)


def late_node_with_a_short_ring(cluster_factory, make_daemon, x, before=30, after=5):
    """Node a took `before` events of x before node "late" (ring_events 16) started; then `after` more,
    which "late" took in live: its ring holds the newest 16. Returns (cluster, late, [(seq, event_id)] of all of them)."""
    need_real_cluster()
    c = cluster_factory(1)
    posted = c[0].post_ok(*[ev(x, "log" if i % 3 else "tool.called", i=i) for i in range(before)])
    # Its ring is shorter than the history: when it becomes ready it reads the newest 16 events of every
    # execution Redis lists (its list and statuses are whole), so the older ones are Redis' alone.
    d = add_node(make_daemon, c, "late", config={"store": {"ring_events": 16}})
    c.wait_healthy(15)
    posted += c[0].post_ok(*[ev(x, "log" if i % 3 else "tool.called", i=i) for i in range(before, before + after)])
    want = [(r["seq"], r["event_id"]) for r in posted]
    assert [s for s, _ in want] == list(range(1, before + after + 1))
    # The late node has the live ones (its ring), nothing older: a poll from the last one it has holds nothing.
    assert wait_until(lambda: [e["seq"] for e in history(d, x, before + after - 1)] == [before + after], 10)
    return c, d, want


def test_resume_older_than_a_late_nodes_ring_every_form_and_transport(cluster_factory, make_daemon):
    x = "hist-forms"
    c, d, want = late_node_with_a_short_ring(cluster_factory, make_daemon, x)
    eid = dict(want)
    cur = sse_ids(c[0], x, 35)
    reads0 = metric(d, "cluster_history_reads_total")
    failures = []
    for cut in (0, 1, 12, 29):
        forms = [("cursor", "last_event_id=" + urllib.parse.quote(cur[cut], safe="")) if cut else ("none", ""),
                 ("event_id", "last_event_id=" + urllib.parse.quote(eid[cut], safe="")) if cut else ("since=0", "since_seq=0"),
                 ("seq", "last_event_id=%d" % cut), ("since_seq", "since_seq=%d" % cut)]
        for how, query in forms:
            if how == "seq" and cut == 0:
                continue
            for kind in ("sse", "ws", "poll"):
                r = reader(kind, d, x, 35 - cut, timeout=8, query=query)
                r.join(12)
                try:
                    assert r.error is None, r.error
                    check_exact(r, want[cut:])
                except AssertionError as e:
                    failures.append("cut %d by %s on %s: %s" % (cut, how, kind, e))
    assert not failures, "\n".join(failures[:10])
    assert reads0 is not None and metric(d, "cluster_history_reads_total") > reads0
    assert metric(d, "cluster_history_failed_total") == 0
    # ?types= applies to what came from Redis too, and the live stream follows once, on every transport.
    tools = [w for w in want if (w[0] - 1) % 3 == 0]
    # (The poll reader keeps only last_event_id between its polls: one filtered poll here.)
    r = poll(d.base, "/v1/executions/%s/poll" % x, {"timeout": "0", "types": "tool.*", "last_event_id": "1"},
             http_timeout=10)
    assert r.status_code == 200 and [(e["seq"], e["event_id"]) for e in r.json()["events"]] == tools[1:], r.text
    rs = [reader(kind, d, x, len(tools) + 1, timeout=10, query="types=tool.*&since_seq=0") for kind in ("sse", "ws")]
    time.sleep(0.5)
    more = c[0].post_ok(ev(x, "log", i=99), ev(x, "tool.called", i=100))
    join_all(rs, 15)
    for r in rs:
        check_exact(r, tools + [(more[1]["seq"], more[1]["event_id"])])


def test_an_execution_the_node_never_saw_is_served_at_once(cluster_factory, make_daemon):
    """Nothing of it reached the node: a poll that never holds (timeout=0, and the seed's human-input poll)
    gets the whole history, 200; the node then has it in its ring (status, later subscribers)."""
    need_real_cluster()
    c = cluster_factory(1)
    x = "never-seen"
    posted = c[0].post_ok(ev(x, "run.started"), ev(x, "log", i=1),
                          ev(x, "human_input_required", event_id="q-1", task_id="t-1", prompt="ok?"))
    d = add_node(make_daemon, c, "late")
    c.wait_healthy(15)
    r = poll(d.base, "/poll/human-input/%s" % x, http_timeout=5)
    assert r.status_code == 200, r.text
    assert [e["event_id"] for e in r.json()["events"]] == ["q-1"], r.text
    r = poll(d.base, "/v1/executions/%s/poll" % x, {"timeout": "0"}, http_timeout=5)
    assert r.status_code == 200 and [e["event_id"] for e in r.json()["events"]] == [p["event_id"] for p in posted]
    assert r.json()["last_seq"] == 3
    st = poll(d.base, "/v1/executions/%s" % x, http_timeout=5)
    assert st.status_code == 200 and st.json()["status"] == "pending_human_input", st.text
    # Another node's cursor, on a second never-seen execution, over SSE.
    y = "never-seen-2"
    more = c[0].post_ok(*[ev(y, "log", i=i) for i in range(8)])
    ids = sse_ids(c[0], y, 8)
    e = add_node(make_daemon, c, "later")
    c.wait_healthy(15)
    rr = reader("sse", e, y, 5, timeout=8, headers={"Last-Event-ID": ids[3]})
    rr.join(12)
    assert rr.error is None, rr.error
    check_exact(rr, [(p["seq"], p["event_id"]) for p in more][3:])


def test_redis_frozen_a_short_resume_is_503_not_a_silent_gap(cluster_factory, make_daemon, redis):
    x = "hist-frozen"
    c, d, want = late_node_with_a_short_ring(cluster_factory, make_daemon, x)
    cur = sse_ids(c[0], x, 35)
    redis.freeze()
    try:
        t0 = time.monotonic()
        r = poll(d.base, "/v1/executions/%s/poll" % x, {"timeout": "0", "last_event_id": cur[10]}, http_timeout=15)
        took = time.monotonic() - t0
        assert r.status_code == 503, (r.status_code, r.text)
        assert r.json()["error"] == "unavailable" and "Redis" in r.json()["detail"], r.text
        assert took < 6, "the history read was not bounded: %.1f s" % took
    finally:
        redis.thaw()
    c.wait_healthy(20)
    # Not given up: the read waited for Redis (held), the long-poll answered 503 at its timeout.
    assert metric(d, "cluster_history_waited_total") >= 1
    assert metric(d, "cluster_history_failed_total") == 0
    # Redis back: the same resume is exact.
    rr = reader("poll", d, x, 25, timeout=8, query="last_event_id=" + urllib.parse.quote(cur[10], safe=""))
    rr.join(12)
    assert rr.error is None, rr.error
    check_exact(rr, want[10:])


def test_a_history_read_given_up_ends_the_stream_instead_of_a_gap(cluster_factory, make_daemon, redis):
    """Redis answers the history read with an error (here its meta hash made another type: WRONGTYPE), so
    the read is given up: a resume older than the node's ring gets no stream.gap, which would skip events
    Redis still holds; SSE ends the stream (its last chunk), WebSocket closes 1013, long-poll answers 503,
    each counted in /metrics. Once Redis reads again, the same resume is exact on every transport."""
    x = "hist-given-up"
    c, d, want = late_node_with_a_short_ring(cluster_factory, make_daemon, x)
    meta = "cs:{x:%s}:m" % x
    saved = redis.cmd("HGETALL", meta)
    assert saved, "no meta hash for %s" % x
    failed0 = metric(d, "cluster_history_failed_total")
    redis.cmd("DEL", meta)
    redis.cmd("SET", meta, "not a hash")
    try:
        with SSEClient(d.port, "/v1/executions/%s/events?since_seq=5" % x) as s:
            assert s.status == 200
            with pytest.raises(EOFError):
                f = s.next_event(8)
                assert f is not None, "neither an event nor the stream's end in 8 s"
                raise AssertionError("an event from a stream whose history was not read: %r" % f.json())
            assert s.ended, "the connection closed without the stream's last chunk"
        ws = RawWS(d.port, "/v1/executions/%s/ws?since_seq=5" % x)
        assert ws.status == 101, ws.status
        try:
            with pytest.raises(EOFError):
                while True:
                    m = ws.next_message(timeout=8)
                    assert m is not None, "neither an event nor a close in 8 s"
                    raise AssertionError("a message from a stream whose history was not read: %s" % m)
            assert ws.close_code == 1013 and "Redis" in getattr(ws, "close_reason", ""), (ws.close_code, ws.eof, ws.buf)
        finally:
            ws.close()
        r = poll(d.base, "/v1/executions/%s/poll" % x, {"timeout": "0", "since_seq": "5"}, http_timeout=10)
        assert r.status_code == 503 and "Redis" in r.json()["detail"], r.text
        assert metric(d, "cluster_history_failed_total") >= failed0 + 3
    finally:
        redis.cmd("DEL", meta)
        redis.cmd("HSET", meta, *saved)
    for kind in ("sse", "ws", "poll"):
        r = reader(kind, d, x, len(want) - 5, timeout=8, query="since_seq=5")
        r.join(12)
        assert r.error is None, (kind, r.error)
        check_exact(r, want[5:])


def test_a_status_read_of_an_execution_the_node_never_saw_asks_redis(cluster_factory, make_daemon):
    """The first thing a late node is asked about an execution is its status (a dashboard's or a health
    check's GET): it reads Redis before answering, so the status is Redis' (not "pending"), on every status
    route, and the node holds the history from then on."""
    need_real_cluster()
    c = cluster_factory(1)
    x, y = "status-first", "status-first-done"
    c[0].post_ok(ev(x, "run.started"), ev(x, "log", i=1),
                 ev(x, "human_input_required", event_id="q-1", task_id="t-1", prompt="ok?"))
    c[0].post_ok(ev(y, "run.started"), ev(y, "run.completed", result="fine"))
    d = add_node(make_daemon, c, "late")
    c.wait_healthy(15)
    st = poll(d.base, "/v1/executions/%s" % x, http_timeout=5)
    assert st.status_code == 200 and st.json()["status"] == "pending_human_input", st.text
    assert [p["event_id"] for p in st.json()["pending_human_input"]] == ["q-1"], st.text
    st = poll(d.base, "/%s/status" % y, http_timeout=5)
    assert st.status_code == 200, st.text
    assert poll(d.base, "/v1/executions/%s" % y, http_timeout=5).json()["status"] == "completed"
    assert [e["seq"] for e in history(d, x)] == [1, 2, 3]
    # An execution Redis has never heard of either: answered as before (pending), without waiting long.
    t0 = time.monotonic()
    st = poll(d.base, "/v1/executions/nobody-posted-this", http_timeout=5)
    assert time.monotonic() - t0 < 2.5 and st.status_code in (200, 404), st.text


def test_the_list_on_a_node_started_later_has_every_execution(cluster_factory, make_daemon, redis):
    """GET /v1/executions on a node started after executions published lists them with Redis' statuses
    (it reads Redis' list of executions and their histories when it becomes ready), the same as the node
    that saw them."""
    need_real_cluster()
    c = cluster_factory(1)
    c[0].post_ok(ev("list-a", "run.started"), ev("list-a", "run.completed", result="ok"))
    c[0].post_ok(ev("list-b", "run.started"), ev("list-b", "log", i=1))
    c[0].post_ok(ev("list-c", "human_input_required", event_id="q-1", task_id="t", prompt="?"))
    assert redis.cmd("ZCARD", "cs:execs") == 3
    d = add_node(make_daemon, c, "late")
    c.wait_healthy(15)

    def listed(node):
        r = poll(node.base, "/v1/executions", http_timeout=5)
        assert r.status_code == 200, r.text
        return {e["execution_id"]: e["status"] for e in r.json()["executions"]}

    want = {"list-a": "completed", "list-b": "running", "list-c": "pending_human_input"}
    assert listed(c[0]) == want
    assert wait_until(lambda: listed(d) == want, 5), listed(d)
    assert metric(d, "cluster_warmed_total") == 3


@pytest.mark.parametrize("how", ["stopped", "frozen"])
def test_redis_away_a_resume_before_the_ring_is_held_and_continues_exactly(cluster_factory, make_daemon, redis,
                                                                           how):
    """SPEC §11: Redis away, streams stay open with heartbeats and continue when it is back. A resume that
    needs history older than the node's ring is not lost, Redis is only away: the SSE and WebSocket
    subscribers stay held (heartbeats, no event, no stream.gap) and get exactly the rest once Redis answers
    again, then live. "stopped": Redis refuses (the reads wait from the start); "frozen": the read is in
    flight when Redis stops answering (it is sent again after the reconnect). A long-poll keeps its 503 at
    its timeout, and a held subscriber that leaves meanwhile is let go (the ASan build checks nothing leaks)."""
    need_real_cluster()
    redis.stop()
    redis.start(aof="everysec")  # a clean stop writes the AOF: the data comes back
    x = "hist-away-" + how
    c, d, want = late_node_with_a_short_ring(cluster_factory, make_daemon, x)
    cur = sse_ids(c[0], x, 35)
    if how == "stopped":
        redis.stop()
        assert wait_until(lambda: metric(d, "cluster_ready") == 0, 10), "the late node did not see Redis go"
    else:
        redis.freeze()
    t_down = time.monotonic()
    sse = SSEClient(d.port, "/v1/executions/%s/events" % x, headers={"Last-Event-ID": cur[10]})
    ws = RawWS(d.port, "/v1/executions/%s/ws?last_event_id=5" % x)
    gone = [SSEClient(d.port, "/v1/executions/%s/events?since_seq=%d" % (x, i)) for i in (1, 2, 3)]
    assert sse.status == 200 and ws.status == 101 and all(g.status == 200 for g in gone)
    try:
        # A long-poll's resume is held too, and answered 503 (retry) at its timeout, never a short 200.
        t0 = time.monotonic()
        r = poll(d.base, "/v1/executions/%s/poll" % x, {"timeout": "1", "since_seq": "3"}, http_timeout=15)
        assert r.status_code == 503 and r.json()["error"] == "unavailable", (r.status_code, r.text)
        assert time.monotonic() - t0 < 6
        for g in gone:  # subscribers that leave while held
            g.close()
        # The streams stay open: heartbeats only (heartbeat_s 1), no event, no stream.gap, no close.
        beats, deadline = 0, time.monotonic() + 3.5
        while time.monotonic() < deadline:
            f = sse.next_frame(timeout=max(0.05, deadline - time.monotonic()))
            if f is None or f.kind == "retry":
                continue
            assert f.kind == "comment", "while Redis was %s the held SSE stream got %r" % (how, f)
            beats += 1
        assert beats >= 2, "%d SSE heartbeats in 3.5 s while held" % beats
        assert ws.next_message(1.0) is None, "the held WebSocket got a message while Redis was " + how
        if how == "frozen":  # the read in flight timed out: it waits too, and the node says so
            assert wait_until(lambda: metric(d, "cluster_ready") == 0, 10)
        assert metric(d, "cluster_history_waiting") >= 2
        assert metric(d, "cluster_history_failed_total") == 0
    finally:
        if how == "stopped":
            redis.start(aof="everysec")
        else:
            redis.thaw()
    assert time.monotonic() - t_down < 20
    c.wait_healthy(20)
    # Exactly the rest, from Redis' history then the ring, then live; no stream.gap.
    got = [f.json() for f in sse.collect(25, timeout=10)]
    assert [(e["seq"], e["event_id"]) for e in got] == want[10:], [e.get("seq") for e in got]
    got_ws = []
    while len(got_ws) < 30:
        m = ws.next_message(10)
        if m is None:
            break
        got_ws.append(json.loads(m))
    assert [(e.get("seq"), e.get("event_id")) for e in got_ws] == want[5:], [e.get("seq") for e in got_ws]
    more = c[0].post_ok(ev(x, "log", i=200))
    f = sse.next_event(10)
    assert f is not None and f.json()["event_id"] == more[0]["event_id"]
    m = ws.next_message(10)
    assert m is not None and json.loads(m)["event_id"] == more[0]["event_id"]
    sse.close()
    ws.close()
    assert wait_until(lambda: metric(d, "cluster_history_waiting") == 0, 5)
    assert metric(d, "cluster_history_waited_total") >= 2
    assert metric(d, "cluster_history_failed_total") == 0
