"""Cluster mode, the faults (SPEC §11, §3, issue 16), with a real redis-server on a Unix socket:

- Redis stopped (SIGTERM, its AOF brings the data back) or frozen (SIGSTOP: nothing answers, the
  sockets stay open — only the daemon's own timeouts can tell): producers get `unavailable` and
  nothing refused is ever stored, HTTP ingest and answers 503, /health 503 degraded with a reason;
  open streams stay open with heartbeats and continue, exactly, when Redis is back.
- Redis restarted empty: new epochs; live streams and old cursors get stream.gap, never an event
  of another history; a fresh subscriber sees only the new history.
- A node kill -9ed mid-stream: its subscribers resume on another node exactly; its producer's
  unacknowledged lines, re-posted on another node, are stored once.
- The pub/sub connections cut (CLIENT KILL TYPE pubsub) while events flow, and once with nothing
  posted after: no event missed.
- Human input across nodes: asked on A, answered on B (POST /resume, WebSocket), pushed to the
  runtime on A exactly once; a second answer 409 on any node; three answers at once: one wins; a
  runtime that reconnects to C and sends `await` gets the answer.
- Status, GET /v1/executions and the gauges of /metrics agree on every node; Redis' keys stay
  under the prefix, bounded (MINID) and expire (store.retain_s).
"""

import json
import signal
import socket
import threading
import time
import urllib.parse

import pytest
import requests

from clusterutil import (SELFTEST, Posting, stream_events, check_exact, cluster3, cluster_factory, join_all,  # noqa: F401
                         need_real_cluster, node_metrics, reader, redis)
from csutil import RawWS, SSEClient, encode_line, ev, exchange, http_get, metric_values, poll, wait_until

def health(d, timeout=3.0):
    try:
        status, _, body = http_get(d.port, "/health", timeout=timeout)
    except OSError as e:
        return None, repr(e)
    try:
        return status, json.loads(body) if body else None
    except ValueError:
        return status, body


def history(d, x, **params):
    r = poll(d.base, "/v1/executions/%s/poll" % x, dict(params, timeout="0"), http_timeout=15)
    assert r.status_code == 200, "%s: %d %s" % (d.name, r.status_code, r.text[:300])
    return r.json()


def status(d, x):
    r = requests.get(d.base + "/v1/executions/%s" % x, timeout=5)
    return r.status_code, (r.json() if r.content else None)


def post_lines(node, events, timeout=12.0):
    """Posts events on one new connection; returns one reply per event, or None for each line the
    connection closed without answering (allowed: the producer does not know, and retries)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(node.sock)
    out = []
    try:
        data = b"".join(encode_line(e) for e in events)
        try:
            lines = exchange(s, data, len(events), timeout)
            out = [json.loads(x) for x in lines]
        except EOFError:
            out = []
    finally:
        s.close()
    return out + [None] * (len(events) - len(out))


class Probe:
    """One line sent on its own connection now; its reply (or None: closed, or no answer) read later."""

    def __init__(self, node, event):
        self.event = event
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(node.sock)
        self.sock.sendall(encode_line(event))

    def reply(self, timeout):
        try:
            return json.loads(exchange(self.sock, b"", 1, timeout)[0])
        except (EOFError, TimeoutError, OSError):
            return None
        finally:
            self.sock.close()


def refused_never_stored(hist_events, refused_ids, how):
    stored = [e["event_id"] for e in hist_events if e["event_id"] in refused_ids]
    assert not stored, (
        "Redis %s: lines answered `unavailable` were stored anyway %r — SPEC §3: `unavailable` means the event "
        "was NOT stored (the producer may retry the same line); an outcome the daemon cannot know must be held "
        "until it knows, or the connection closed, never answered `unavailable`" % (how, stored))


# ---- Redis by host name ------------------------------------------------------------------------------------


def test_a_redis_host_name_is_resolved_off_the_loop(make_daemon):
    """cluster.redis may name Redis by host name: it is resolved before each connection off the daemon's
    loop (getaddrinfo_a), so a name that resolves ("localhost") works like its address, and one that does
    not (".invalid") leaves the node degraded, saying why, while it goes on answering at once."""
    need_real_cluster()
    from clusterutil import Redis
    from conftest import free_port

    r = Redis(tcp_port=free_port())
    r.start()
    try:
        d = make_daemon({"cluster": {"redis": "redis://localhost:%d" % r.tcp_port, "node": "byname"}})
        assert wait_until(lambda: health(d)[0] == 200, 10, 0.1), health(d)
        got = d.post_ok(ev("by-name", "log"), ev("by-name", "log"))
        assert [g["seq"] for g in got] == [1, 2], got
        assert r.cmd("HGET", "cs:{x:by-name}:m", "seq") == b"2"
        bad = make_daemon({"cluster": {"redis": "redis://no-such-redis.invalid:%d" % r.tcp_port, "node": "nowhere"}},
                          start=False)
        bad.start(wait=False)
        assert wait_until(lambda: health(bad)[0] is not None, 10, 0.05), "no answer on /health"
        seen = []
        deadline = time.monotonic() + 20  # the lookup fails, or is given up after 10 s
        while time.monotonic() < deadline:  # /health answers at once all along, whatever the lookup does
            t0 = time.monotonic()
            st, body = health(bad, timeout=2)
            assert time.monotonic() - t0 < 1.0 and st == 503, (st, body)
            seen.append(body.get("reason", ""))
            if "cannot resolve no-such-redis.invalid" in seen[-1]:
                break
            time.sleep(0.1)
        assert "cannot resolve no-such-redis.invalid" in seen[-1], seen[-3:]
        assert bad.post(ev("by-name", "log"))[0]["error"] == "unavailable"
    finally:
        r.finish()


# ---- Redis unreachable --------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["stopped", "frozen"])
def test_redis_unreachable_degrades_and_streams_continue(redis, cluster_factory, how):
    need_real_cluster()
    redis.stop()
    redis.start(aof="everysec")  # a clean stop writes the AOF: the data comes back
    c = cluster_factory(3)
    a, b, cc = c.nodes
    x = "down-" + how
    first = a.post_ok(*[ev(x, "log", event_id="pre-%d" % i) for i in range(5)])
    with a.producer() as rt:
        req_id = rt.request(ev(x, "human_input_required", task_id="t", prompt="ok?"))[0]["event_id"]
    sse = SSEClient(b.port, "/v1/executions/%s/events" % x)
    ws = RawWS(cc.port, "/v1/executions/%s/ws" % x)
    assert sse.status == 200 and ws.status == 101
    got_sse = sse.collect(6, timeout=10)
    got_ws = [json.loads(ws.next_message(5) or "null") for _ in range(6)]
    assert [f.json()["seq"] for f in got_sse] == [e["seq"] for e in got_ws] == list(range(1, 7))

    if how == "stopped":
        redis.stop()
    else:
        redis.freeze()
    t_down = time.monotonic()
    # A probe line per node: the first to meet the dead (or silent) Redis. Its outcome may be unknown
    # to the daemon (in flight when Redis froze); it is checked at the end, whatever it was.
    probes = {n.name: Probe(n, ev(x, "log", event_id="probe-" + n.name)) for n in c}
    # Every node says so: 503 degraded with a reason.
    for n in c:
        assert wait_until(lambda: health(n)[0] == 503, 12, 0.2), (n.name, health(n))
        st, body = health(n)
        assert body["status"] == "degraded" and body.get("reason"), (n.name, body)
    # Then producers get `unavailable` on every node, never `ok`.
    refused = set()
    for n in c:
        evs = [ev(x, "log", event_id="down-%s-%d" % (n.name, i)) for i in range(2)]
        for e, r in zip(evs, post_lines(n, evs, timeout=15)):
            assert r is not None and r.get("ok") is False and r["error"] == "unavailable" and r.get("detail"), (
                n.name, e["event_id"], r)
            refused.add(e["event_id"])
    assert time.monotonic() - t_down < 40
    # HTTP ingest and answers: 503.
    r = requests.post(b.base + "/v1/events", json=ev(x, "log", event_id="http-down"), timeout=15)
    assert r.status_code == 503 and r.json()["error"] == "unavailable", r.text
    refused.add("http-down")
    r = requests.post(cc.base + "/v1/executions/%s/human-input" % x,
                      json={"event_id": req_id, "human_feedback": "yes", "is_approve": True}, timeout=15)
    assert r.status_code == 503, r.text
    r = requests.post(a.base + "/resume", json={"execution_id": x, "task_id": "t", "human_feedback": "yes",
                                                "is_approve": True}, timeout=15)
    assert r.status_code == 503, r.text
    # Open streams stay open: heartbeats, no events, no close.
    time.sleep(max(0.0, 3.0 - (time.monotonic() - t_down)))
    beats, deadline = 0, time.monotonic() + 3.5
    while time.monotonic() < deadline:
        f = sse.next_frame(timeout=max(0.05, deadline - time.monotonic()))
        if f is None:
            continue
        assert f.kind == "comment", "an event while Redis is %s: %r" % (how, f)
        beats += 1
    assert beats >= 2, "%d SSE heartbeats in 3.5 s (heartbeat_s 1) while Redis was %s" % (beats, how)
    assert ws.next_message(1.0) is None  # still open (EOFError on a close), nothing sent

    if how == "stopped":
        redis.start(aof="everysec")
    else:
        redis.thaw()
    c.wait_healthy(20)
    # Right away, on every node: the retry of a refused line is stored once; new lines are acknowledged.
    after = []
    for n in c:
        after += n.post_ok(ev(x, "log", event_id="down-%s-0" % n.name), ev(x, "log", event_id="after-" + n.name))
    done = [e for e in history(b, x)["events"] if e["type"] == "human_input_completed"]
    assert not done, (
        "an answer refused with 503 while Redis was %s was stored anyway: %r (a 503 must mean not stored, as "
        "`unavailable` does for producers)" % (how, done))
    r = requests.post(cc.base + "/v1/executions/%s/human-input" % x,
                      json={"event_id": req_id, "human_feedback": "yes", "is_approve": True}, timeout=10)
    assert r.status_code == 200, r.text
    hist = history(b, x)["events"]
    seqs = [e["seq"] for e in hist]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    ids = [e["event_id"] for e in hist]
    assert ids[:6] == [e["event_id"] for e in first] + [req_id], ids[:6]
    for e in after:
        assert ids.count(e["event_id"]) == 1, (e, ids)
    refused_never_stored(hist, refused - {"down-%s-0" % n.name for n in c}, how)
    for name, pr in probes.items():
        r = pr.reply(10)
        stored = ids.count(pr.event["event_id"])
        if r is None:  # closed without an answer: the producer does not know; at most once
            assert stored <= 1, (name, ids)
        elif r.get("ok"):  # answered once Redis held it (after it came back)
            assert stored == 1 and r["seq"] == ids.index(pr.event["event_id"]) + 1, (name, r, ids)
        else:
            assert r.get("error") == "unavailable", (name, r)
            refused_never_stored(hist, {pr.event["event_id"]}, how + " (the line in flight)")
    # The streams that stayed open continue exactly where they were.
    rest = sse.collect(len(hist) - 6, timeout=15)
    assert [f.json()["event_id"] for f in rest] == ids[6:], "SSE on b after Redis came back"
    rest_ws = []
    while len(rest_ws) < len(hist) - 6:
        m = ws.next_message(10)
        if m is None:
            break
        rest_ws.append(json.loads(m)["event_id"])
    assert rest_ws == ids[6:], "WebSocket on c after Redis came back"
    sse.close()
    ws.close()


def test_producer_waiting_on_a_frozen_redis_is_answered_within_the_timeout(redis, cluster_factory):
    need_real_cluster()
    """hiredis 0.14 has no timeouts: the daemon's own must answer (or close) a line in flight, and keep
    answering new ones, while Redis is frozen; and other clients of the node are not held up."""
    c = cluster_factory(2)
    a = c[0]
    a.post_ok(ev("f", "log"))
    redis.freeze()
    try:
        t0 = time.monotonic()
        try:
            replies = post_lines(a, [ev("f", "log", event_id="f-1")], timeout=12)
        except TimeoutError:
            raise AssertionError("a line in flight to a frozen Redis got no answer (nor a close) in 12 s")
        took = time.monotonic() - t0
        assert replies[0] is None or replies[0].get("error") == "unavailable", replies
        assert took < 10, "a line waited %.1f s on a frozen Redis" % took
        # The loop is not blocked: /health and /metrics answer at once.
        t0 = time.monotonic()
        assert health(a, timeout=2)[0] in (200, 503)
        assert http_get(a.port, "/metrics", timeout=2)[0] == 200
        assert time.monotonic() - t0 < 2
        assert wait_until(lambda: health(a)[0] == 503, 10, 0.2), health(a)
        r = post_lines(a, [ev("f", "log", event_id="f-2")], timeout=10)[0]
        assert r is not None and r.get("error") == "unavailable", r
    finally:
        redis.thaw()
    c.wait_healthy(20)
    assert a.post_ok(ev("f", "log", event_id="f-3"))[0]["ok"]
    time.sleep(1)  # whatever Redis still had queued from before the freeze has run by now
    ids = [e["event_id"] for e in history(c[1], "f")["events"]]
    assert "f-2" not in ids, "a line answered `unavailable` was stored (SPEC §3)"
    if replies[0] is not None:
        assert "f-1" not in ids, (
            "the line in flight when Redis froze was answered `unavailable` and stored all the same once Redis "
            "resumed (SPEC §3: `unavailable` = not stored): hold such a line until its outcome is known, or close "
            "the connection without an answer")


# ---- Redis restarted empty ----------------------------------------------------------------------------------


def test_redis_restarted_empty_gives_new_epochs_and_gaps(redis, cluster3):
    need_real_cluster()
    c = cluster3
    a, b, cc = c.nodes
    x, y = "epoch-x", "epoch-y"
    old = a.post_ok(*[ev(x, "log", event_id="old-%d" % i) for i in range(10)])
    b.post_ok(*[ev(y, "log", event_id="oldy-%d" % i) for i in range(4)])
    with SSEClient(a.port, "/v1/executions/%s/events" % x) as s:
        cur = {f.json()["seq"]: f.id for f in s.collect(10, timeout=10)}
    with SSEClient(a.port, "/v1/executions/%s/events" % y) as s:
        cury = [f.id for f in s.collect(4, timeout=10)]
    live = [reader(kind, n, x, 13, timeout=40) for kind, n in (("sse", b), ("ws", cc), ("poll", a))]
    assert wait_until(lambda: all(len(r.events) >= 10 for r in live), 10), [len(r.events) for r in live]

    redis.restart_empty()
    c.wait_healthy(20)
    new = []
    deadline = time.monotonic() + 10
    for i in range(3):
        while True:  # a node may need a moment to reconnect after /health turned 200 elsewhere
            r = b.post(ev(x, "log", event_id="new-%d" % i))[0]
            if r.get("ok") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert r.get("ok"), r
        new.append(r)
    assert [r["seq"] for r in new] == [new[0]["seq"] + i for i in range(3)]
    new_ids = [r["event_id"] for r in new]
    join_all(live, 45)
    for r in live:
        assert [e["event_id"] for e in r.events[:10]] == [e["event_id"] for e in old], r.describe()
        tail = r.events[10:]
        assert tail and tail[0]["type"] == "stream.gap", (
            "%s: Redis lost the history it was reading, and it went on without stream.gap: %r" % (
                r.describe(), [(e.get("type"), e.get("seq"), e.get("event_id")) for e in tail[:4]]))
        assert [e.get("event_id") for e in tail[1:]] == new_ids, (r.describe(), tail)
    # Old cursors, on every node and transport: stream.gap, then only the new history.
    for n in c:
        for kind in ("sse", "ws", "poll"):
            q = "last_event_id=" + urllib.parse.quote(cur[5], safe="")
            r = reader(kind, n, x, 3, timeout=5, query=q)
            r.join(10)
            assert r.error is None, r.error
            assert r.events and r.events[0]["type"] == "stream.gap", (r.describe(), r.events[:3])
            assert [e["event_id"] for e in r.real()] == new_ids, (r.describe(), r.events)
        # A new subscriber without a cursor: the new history only.
        assert [e["event_id"] for e in history(n, x)["events"]] == new_ids, n.name
        # y got nothing since: an old cursor of y is recognised as gone (no old event served as current).
        body = history(n, y, last_event_id=cury[1])
        assert body.get("gap") is True and all(not e["event_id"].startswith("oldy-") for e in body["events"]), (
            "node %s: execution %s got no event since Redis lost its data, and an old cursor was answered from the "
            "node's cached ring as if that history still existed (SPEC §11: Redis that lost its data is detected, "
            "its executions get a new epoch, old cursors get stream.gap): %r" % (n.name, y, body))
    # Status follows the new history.
    for n in c:
        code, st = status(n, x)
        assert code == 200 and st["last_seq"] == new[-1]["seq"], (n.name, st)


# ---- a node killed --------------------------------------------------------------------------------------


def test_every_node_is_in_the_metrics_of_any_node(cluster3):
    """Each node reports itself into Redis every 2 s and reads every node's report: /metrics on any node
    shows every node (cluster_nodes, and per node its counters and gauges labelled node="..."), not
    only its own. A node killed drops out of cluster_nodes within ~10 s, its last report aging."""
    need_real_cluster()
    c = cluster3
    posted = {}
    for i, n in enumerate(c):
        n.post_ok(*[ev("nodes-%d" % i, "log") for _ in range(i + 1)])
        posted[n.name] = i + 1

    def agrees(n):
        m = metric_values(n)
        return m.get("crewstream_cluster_nodes") == 3 and all(
            m.get('crewstream_cluster_node_published_total{node="%s"}' % k) == v for k, v in posted.items())

    for n in c:
        assert wait_until(lambda: agrees(n), 10, 0.2), (n.name, {k: v for k, v in metric_values(n).items()
                                                                if "cluster_node" in k})
    m = metric_values(c[0])
    for k in posted:
        assert m['crewstream_cluster_node_report_age_seconds{node="%s"}' % k] < 10, m
        assert m['crewstream_cluster_node_executions{node="%s"}' % k] >= 3, m  # every node has every execution
        assert m['crewstream_cluster_node_inserted_total{node="%s"}' % k] >= 0, m
    gone = c[2]
    gone.proc.send_signal(signal.SIGKILL)
    gone.wait_exit(10)
    assert wait_until(lambda: metric_values(c[0]).get("crewstream_cluster_nodes") == 2, 15, 0.5)
    m = metric_values(c[1])
    assert m['crewstream_cluster_node_report_age_seconds{node="%s"}' % gone.name] > 10, m
    assert m.get("crewstream_cluster_nodes") == 2, m


def test_node_reports_are_bounded_and_bad_ones_refused(redis, cluster_factory):
    """The reports a node reads back are bounded: of 70 fresh ones (fakes written straight into Redis) its
    /metrics lists 64 (CS_CLUSTER_NODES_MAX); one that is not a report is counted in bad_messages and left
    out; one an hour old or more is deleted from Redis."""
    need_real_cluster()
    a = cluster_factory(1)[0]
    sec, usec = redis.cmd("TIME")
    ms = int(sec) * 1000 + int(usec) // 1000
    for i in range(70):
        redis.cmd("HSET", "cs:nodes", "fake-%02d" % i, "1 %d %d 0 0 0 0 0 0" % (ms, i))
    redis.cmd("HSET", "cs:nodes", "not-a-report", "1 %d nonsense" % ms)
    redis.cmd("HSET", "cs:nodes", "gone-long-ago", "1 %d 5 0 0 0 0 0 0" % (ms - 2 * 3600 * 1000))
    bad0 = metric_values(a)["crewstream_cluster_bad_messages_total"]

    def listed():
        return [k for k in metric_values(a) if k.startswith("crewstream_cluster_node_published_total{")]

    assert wait_until(lambda: redis.cmd("HEXISTS", "cs:nodes", "gone-long-ago") == 0, 10, 0.2)
    assert wait_until(lambda: len(listed()) == 64, 10, 0.2), len(listed())
    m = metric_values(a)
    assert m["crewstream_cluster_nodes"] == 64, m["crewstream_cluster_nodes"]
    assert m["crewstream_cluster_bad_messages_total"] > bad0
    assert not [k for k in m if "not-a-report" in k or "gone-long-ago" in k]
    assert redis.cmd("HEXISTS", "cs:nodes", "not-a-report") == 1  # not this node's to delete


def test_node_killed_mid_stream_subscribers_resume_on_another_node(cluster3):
    need_real_cluster()
    c = cluster3
    a, b, cc = c.nodes
    x = "kill9"
    per = 400
    steady = Posting(b, [ev(x, "log", event_id="b-%d" % i, i=i) for i in range(per)], batch=3, pause=0.02)
    mine = Posting(a, [ev(x, "log", event_id="a-%d" % i, i=i) for i in range(per)], batch=3, pause=0.02)
    subs = [reader(kind, a, x, 10**6, timeout=60) for kind in ("sse", "ws", "poll")]
    steady.start()
    mine.start()
    assert wait_until(lambda: all(len(r.events) >= 80 for r in subs), 30), [len(r.events) for r in subs]
    a.proc.send_signal(signal.SIGKILL)
    a.wait_exit(10)
    mine.join(20)
    for r in subs:
        r.join(20)
        assert not r.is_alive(), "%s still reading from a dead node" % r.describe()
    # The killed node's producer re-posts what it had no answer for, on another node: stored once.
    unacked = mine.events[len(mine.acks):]
    assert unacked, "the producer on a finished before the kill: nothing to re-post"
    retry = Posting(cc, unacked, batch=20)
    retry.run()
    assert retry.error is None and all(r.get("ok") for r in retry.acks), (retry.error, retry.acks[:3])
    steady.join(60)
    assert steady.error is None, steady.error
    hist = history(cc, x)["events"]
    total = 2 * per
    assert [e["seq"] for e in hist] == list(range(1, total + 1)), "holes or doubles: %d events" % len(hist)
    everyone = ["a-%d" % i for i in range(per)] + ["b-%d" % i for i in range(per)]
    assert sorted(e["event_id"] for e in hist) == sorted(everyone)
    want = [(e["seq"], e["event_id"]) for e in hist]
    for r in subs:
        seen = r.events
        assert seen, r.describe()
        if r.kind == "sse":
            q, h = "", {"Last-Event-ID": r.ids[-1]}
        elif r.kind == "ws":
            q, h = "last_event_id=" + urllib.parse.quote(seen[-1]["event_id"], safe=""), {}
        else:
            q, h = "last_event_id=" + urllib.parse.quote(r.ids[-1], safe=""), {}
        again = reader(r.kind, cc if r.kind != "ws" else b, x, total - len(seen), timeout=30, query=q, headers=h)
        again.join(40)
        assert again.error is None, again.error
        got = [(e["seq"], e["event_id"]) for e in seen + again.events]
        assert got == want, "%s resumed after seq %d: %d events, want %d; first after resume %r" % (
            r.describe(), seen[-1]["seq"], len(got), len(want), again.events[:2])


# ---- the pub/sub connections cut -------------------------------------------------------------------------


def test_pubsub_killed_no_event_missed(redis, cluster3):
    need_real_cluster()
    c = cluster3
    a, b, cc = c.nodes
    x = "pubsub"
    assert wait_until(lambda: len(redis.clients("pubsub")) >= 3, 10), redis.clients("pubsub")
    total = 240 + 5
    subs = [reader(kind, n, x, total, timeout=60) for n in (b, cc) for kind in ("sse", "ws", "poll")]
    # A node may refuse lines (`unavailable`) while its pub/sub link is down; the producer retries them.
    po = Posting(a, [ev(x, "log", event_id="p-%d" % i) for i in range(240)], batch=4, pause=0.02,
                 retry_unavailable=True)
    po.start()
    killed = []
    for _ in range(3):
        time.sleep(0.5)
        killed.append(redis.kill_pubsub())
    po.join(60)
    assert po.error is None and not po.refused(), (po.error, po.refused()[:5])
    assert killed[0] >= 3, "CLIENT KILL TYPE pubsub cut %r connections: is every node subscribed?" % killed
    # Once more, with nothing posted after: the last events come while the nodes are resubscribing.
    assert wait_until(lambda: len(redis.clients("pubsub")) >= 3, 10), "the nodes did not subscribe again"
    assert redis.kill_pubsub() >= 3
    tail = Posting(a, [ev(x, "log", event_id="q-%d" % i) for i in range(5)], batch=5, retry_unavailable=True)
    tail.run()
    assert tail.error is None and not tail.refused(), (tail.error, tail.refused())
    last = tail.acks
    join_all(subs, 70)
    want = [(r["seq"], r["event_id"]) for r in po.acks + last]
    assert [s for s, _ in want] == list(range(1, total + 1))
    for s in subs:
        check_exact(s, want)
    assert wait_until(lambda: len(redis.clients("pubsub")) >= 3, 10)
    print("lines refused `unavailable` while pub/sub was cut, then retried: %d" % (po.retries + tail.retries))


def test_pubsub_of_one_node_killed_a_quiet_execution_is_caught_up_at_once(redis, cluster3):
    """Events posted on another node while one node's pub/sub link is down, and nothing after: that
    node reads them from the stream as soon as it is subscribed again, not at the execution's next
    event (there is none here)."""
    need_real_cluster()
    c = cluster3
    a, b, cc = c.nodes
    x = "pubsub-quiet"
    rounds, per = 4, 5
    total = 3 + rounds * per
    acks = a.post_ok(*[ev(x, "log", event_id="q0-%d" % i) for i in range(3)])
    subs = [reader(kind, b, x, total, timeout=40) for kind in ("sse", "ws", "poll")]
    assert wait_until(lambda: all(len(r.events) >= 3 for r in subs), 10), [len(r.events) for r in subs]

    def b_sub():
        return [cl for cl in redis.clients("pubsub") if cl.get("name", "").startswith("crewstream-%s" % b.name)]

    for k in range(rounds):
        assert wait_until(lambda: len(b_sub()) == 1, 10), redis.clients("pubsub")
        redis.cmd("CLIENT", "KILL", "ID", b_sub()[0]["id"])
        # At once, on a (its link is whole): b is resubscribing (0.1 s back-off) and misses these.
        acks += a.post_ok(*[ev(x, "log", event_id="q%d-%d" % (k + 1, i)) for i in range(per)])
    join_all(subs, 45)
    want = [(r["seq"], r["event_id"]) for r in acks]
    assert [s for s, _ in want] == list(range(1, total + 1))
    for s in subs:
        check_exact(s, want)
    m = node_metrics(b)
    assert m.get("crewstream_cluster_rechecks_total", 0) >= 1 and m.get("crewstream_cluster_fills_total", 0) >= 1, m


# ---- human input across nodes ----------------------------------------------------------------------------


def request_event(x, task="review"):
    return ev(x, "human_input_required", task_id=task, crew_id="crew-1", agent_id="writer",
              prompt="Approve the draft?", context="draft v1")


def wait_push(producer, n=1, timeout=8.0):
    deadline = time.monotonic() + timeout
    while len(producer.pushes) < n:
        if time.monotonic() > deadline:
            raise AssertionError("no push within %.1fs (got %r)" % (timeout, producer.pushes))
        producer.sock.sendall(b'{"op":"ping"}\n')
        assert producer.read(1, timeout=timeout)[0] == {"ok": True, "op": "pong"}
        time.sleep(0.05)
    return producer.pushes[n - 1]


def no_more_pushes(producer, n, secs=1.5):
    end = time.monotonic() + secs
    while time.monotonic() < end:
        producer.sock.sendall(b'{"op":"ping"}\n')
        producer.read(1, timeout=5)
        time.sleep(0.1)
    assert len(producer.pushes) == n, "pushed %d times: %r" % (len(producer.pushes), producer.pushes)


def answer(node, route, x, req_id, feedback="Looks good", approve=True, task="review"):
    """(status, body) of an answer on one node by one route."""
    if route == "resume":
        r = requests.post(node.base + "/resume", json={"execution_id": x, "task_id": task,
                                                       "human_feedback": feedback, "is_approve": approve}, timeout=10)
        return r.status_code, r.json()
    if route == "v1":
        r = requests.post(node.base + "/v1/executions/%s/human-input" % x,
                          json={"event_id": req_id, "human_feedback": feedback, "is_approve": approve}, timeout=10)
        return r.status_code, r.json()
    ws = RawWS(node.port, "/v1/executions/%s/ws?since=now" % x)
    try:
        assert ws.status == 101
        ws._send_frame(0x1, json.dumps({"event_id": req_id, "human_feedback": feedback,
                                        "is_approve": approve}).encode())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            m = ws.next_message(max(0.1, deadline - time.monotonic()))
            if m is None:
                continue
            m = json.loads(m)
            if m.get("type") == "ack":
                return 200, m
            if m.get("type") == "error":  # as tests/e2e/test_hitl.py reads it
                return 409, m
        raise AssertionError("no ack or error frame within 10 s")
    finally:
        ws.close()


def pending_on(node, x, req_id):
    code, st = status(node, x)
    return code == 200 and [p["event_id"] for p in st["pending_human_input"]] == [req_id]


@pytest.mark.parametrize("route", ["resume", "ws"])
def test_hitl_asked_on_a_answered_on_b_pushed_on_a_once(cluster3, route):
    c = cluster3
    a, b, cc = c.nodes
    x = "hitl-" + route
    with a.producer() as rt:
        ack = rt.request(request_event(x))[0]
        assert ack["ok"] and ack["seq"] == 1
        req_id = ack["event_id"]
        for n in c:
            assert wait_until(lambda: pending_on(n, x, req_id), 5), (n.name, status(n, x))
        code, body = answer(b, route, x, req_id, "ship it", True)
        assert code == 200, body
        new_id = body["event_id"]
        push = wait_push(rt)
        assert push == {"op": "human_input", "execution_id": x, "request_event_id": req_id, "task_id": "review",
                        "human_feedback": "ship it", "is_approve": True, "event_id": new_id, "seq": 2}, push
        # A second answer, on any node and route: 409, and nothing more is pushed.
        for n, rte in ((cc, "v1"), (a, "resume"), (b, "v1"), (cc, "ws")):
            code2, body2 = answer(n, rte, x, req_id, "again", False)
            assert code2 == 409, (n.name, rte, code2, body2)
        no_more_pushes(rt, 1)
    # A runtime that reconnects to C and awaits gets the answer.
    with cc.producer() as rt2:
        ack = rt2.request({"op": "await", "execution_id": x, "event_id": req_id})[0]
        assert ack["ok"] is True and ack.get("answered") is True, ack
        push2 = wait_push(rt2)
        assert push2 == push
        no_more_pushes(rt2, 1, 1.0)
    hist = history(cc, x)["events"]
    assert [(e["type"], e["event_id"]) for e in hist] == [("human_input_required", req_id),
                                                          ("human_input_completed", new_id)]
    for n in c:
        code, st = status(n, x)
        assert code == 200 and st["status"] == "running" and st["pending_human_input"] == [], (n.name, st)


def test_hitl_await_on_c_before_the_answer_on_b(cluster3):
    c = cluster3
    a, b, cc = c.nodes
    x = "hitl-await"
    with a.producer() as rt, cc.producer() as other:
        req_id = rt.request(request_event(x))[0]["event_id"]
        assert wait_until(lambda: pending_on(cc, x, req_id), 5)
        ack = other.request({"op": "await", "execution_id": x, "event_id": req_id})[0]
        assert ack["ok"] is True and ack.get("answered") is False, ack
        code, body = answer(b, "v1", x, req_id, "no", False)
        assert code == 200, body
        p1, p2 = wait_push(rt), wait_push(other)
        assert p1 == p2 and p1["is_approve"] is False and p1["event_id"] == body["event_id"]
        no_more_pushes(rt, 1)
        no_more_pushes(other, 1, 0.5)


def test_hitl_three_answers_at_once_one_wins(cluster3):
    c = cluster3
    for rnd in range(5):
        x = "hitl-race-%d" % rnd
        with c[0].producer() as rt:
            req_id = rt.request(request_event(x))[0]["event_id"]
            for n in c:
                assert wait_until(lambda: pending_on(n, x, req_id), 5), n.name
            barrier = threading.Barrier(3)
            out = [None] * 3

            def go(i):
                barrier.wait(5)
                out[i] = answer(c[i], ("v1", "resume", "v1")[i], x, req_id, "from %s" % c[i].name, True)

            ts = [threading.Thread(target=go, args=(i,)) for i in range(3)]
            for t in ts:
                t.start()
            for t in ts:
                t.join(20)
            codes = sorted(o[0] for o in out)
            assert codes == [200, 409, 409], (rnd, out)
            winner = [o[1] for o in out if o[0] == 200][0]
            push = wait_push(rt)
            assert push["event_id"] == winner["event_id"], (push, winner)
            no_more_pushes(rt, 1, 0.5)
        done = [e for e in history(c[2], x)["events"] if e["type"] == "human_input_completed"]
        assert len(done) == 1 and done[0]["event_id"] == winner["event_id"], done


# ---- status, list, metrics, Redis' keys ---------------------------------------------------------------------


def test_status_list_and_gauges_agree_on_every_node(cluster3):
    c = cluster3
    a, b, cc = c.nodes
    x = "st-run"
    a.post_ok(ev(x, "crew_kickoff_started"))
    b.post_ok(ev(x, "task_started", task_id="t1"), ev(x, "agent_execution_started", agent="Researcher"))
    cc.post_ok(ev(x, "tool_usage_started", tool="search"), ev(x, "tool_usage_error", error="timeout"))
    with a.producer() as rt:
        req_id = rt.request(request_event(x, task="t1"))[0]["event_id"]
    b.post_ok(ev("st-fail", "run.started"))
    cc.post_ok(ev("st-fail", "run.failed", error="boom"))
    a.post_ok(ev("st-cancel", "run.started"), ev("st-cancel", "run.canceled"))

    def same(get):
        vals = [get(n) for n in c]
        return vals if all(v == vals[0] for v in vals) else None

    def st(n, xid):
        code, s = status(n, xid)
        assert code == 200, (n.name, xid, code, s)
        return s

    def st_all():
        return same(lambda n: st(n, x))

    assert wait_until(lambda: (st_all() or [{}])[0].get("status") == "pending_human_input", 5), [st(n, x) for n in c]
    s = st_all()[0]
    assert s["last_seq"] == s["events"] == 6 and [p["event_id"] for p in s["pending_human_input"]] == [req_id]
    assert s["progress"]["tools"] == {"calls": 1, "errors": 1}, s
    assert answer(cc, "v1", x, req_id, "go", True)[0] == 200
    a.post_ok(ev(x, "agent_execution_completed", agent="Researcher"), ev(x, "task_completed", task_id="t1"))
    b.post_ok(ev(x, "crew_kickoff_completed", result={"output": "the report"}))
    assert wait_until(lambda: (st_all() or [{}])[0].get("status") == "completed", 5), [st(n, x) for n in c]
    s = st_all()[0]
    assert s["result"] == {"output": "the report"} and s["last_seq"] == 10, s
    assert s["progress"]["tasks"] == {"seen": 1, "done": 1, "failed": 0}, s
    for n in c:
        assert st(n, "st-fail")["status"] == "error" and st(n, "st-fail")["error_message"] == "boom", n.name
        assert st(n, "st-cancel")["status"] == "canceled", n.name

    def listing(n):
        r = requests.get(n.base + "/v1/executions", timeout=5)
        assert r.status_code == 200, r.text
        return [(e["execution_id"], e["status"]) for e in r.json()["executions"]]

    lists = wait_until(lambda: same(listing), 5)
    assert lists, [listing(n) for n in c]
    assert sorted(lists[0]) == sorted([(x, "completed"), ("st-fail", "error"), ("st-cancel", "canceled")]), lists[0]
    r = requests.get(b.base + "/v1/executions?status=error", timeout=5).json()["executions"]
    assert [e["execution_id"] for e in r] == ["st-fail"]

    # /metrics: the gauges that describe the shared executions agree; the cluster link is visible.
    def gauges(n):
        m = node_metrics(n)
        return (m.get("crewstream_executions"), m.get("crewstream_human_input_open"))

    assert wait_until(lambda: same(gauges), 5), [gauges(n) for n in c]
    assert same(gauges)[0] == (3.0, 0.0), same(gauges)
    for n in c if not SELFTEST else ():
        names = [k for k in node_metrics(n) if "cluster" in k or "redis" in k]
        assert names, "%s: no cluster/redis metric in /metrics" % n.name


def test_redis_keys_are_prefixed_bounded_and_expire(redis, cluster_factory):
    need_real_cluster()
    c = cluster_factory(3, prefix="t7:", config={"store": {"ring_events": 16, "retain_s": 2}})
    x = "bounded"
    for k in range(0, 400, 50):
        c[k // 50 % 3].post_ok(*[ev(x, "log", i=i) for i in range(k, k + 50)])
    keys = [k.decode() for k in redis.cmd("KEYS", "*")]
    assert keys and all(k.startswith("t7:") for k in keys), keys
    for k in keys:  # the executions' keys and the script calls' receipts alike
        assert redis.cmd("TTL", k) != -1, "%s has no expiry" % k
    mine = [k for k in keys if x in k]
    assert mine, keys
    streams = [k for k in mine if redis.cmd("TYPE", k) == "stream"]
    assert len(streams) == 1, [(k, redis.cmd("TYPE", k)) for k in mine]
    seqs = [seq for seq, _ in stream_events(redis, streams[0])]
    # MINID ~ trims whole entries (a call's events of the execution: 50 here) and whole stream nodes
    # (stream-node-max-entries 100, stream-node-max-bytes 4096: an entry of 50 events is a node of its own):
    # at least the newest 16, at most one entry more than those.
    assert seqs == list(range(seqs[0], 401)), seqs[:3]
    assert 16 <= len(seqs) <= 16 + 50, "%s holds %d events for store.ring_events 16" % (streams[0], len(seqs))
    for k in mine:
        assert redis.cmd("TTL", k) != -1, "%s has no expiry" % k
    c[1].post_ok(ev(x, "run.completed", result="ok"))
    for k in [k for k in (kk.decode() for kk in redis.cmd("KEYS", "*")) if x in k]:
        ttl = redis.cmd("TTL", k)
        assert 0 < ttl <= 2 or ttl == -2, "%s: TTL %d after the run finished (retain_s 2)" % (k, ttl)
    assert wait_until(lambda: not [k for k in redis.cmd("KEYS", "*") if x.encode() in k], 6), redis.cmd("KEYS", "*")
    assert wait_until(lambda: all(status(n, x)[0] == 404 or status(n, x)[1]["status"] == "pending" for n in c), 6)
