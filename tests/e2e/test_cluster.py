"""Cluster mode, the data path (SPEC §11, issue 16), as a black box: three crewstreamd nodes on
loopback ports share their executions through one real redis-server on a Unix socket.

- Producers post to all three nodes at once: every event is acknowledged, and the seqs of each
  execution are 1..N with no hole and no duplicate across the nodes.
- Subscribers on every node, on SSE, WebSocket and long-poll, opened before the posting, receive
  every event of their execution complete and in seq order; one opened afterwards on a node that
  never saw the execution gets the history (from Redis).
- A cursor handed out by one node resumes exactly on the others (random cut points, every form:
  cursor, event_id, bare seq, since_seq); a cursor older than the retained history gets stream.gap.
- An event_id re-posted on another node (socket or HTTP ingest, even at the same moment on all
  three) answers the original seq and is stored and streamed once.
- The seed clients (seed 000's WebSocket/SSE/long-poll, seed 002's crewai client, seed 003's
  requests example) work against any node.
"""

import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest
import requests

from clusterutil import (Posting, add_node, entry_events, stream_events, check_exact,  # noqa: F401 (fixtures)
                         cluster3, cluster_factory, join_all, need_real_cluster, reader, redis)
from conftest import free_port, mkdtemp
from csutil import RawWS, SSEClient, ev, http_get, poll, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = int(os.environ.get("CS_CLUSTER_SEED", "0")) or random.randrange(1, 1 << 30)


def payload(x, node, p, i):
    """An event with fields that must pass through untouched."""
    return ev(x, "log", event_id="%s-%s-%d-%d" % (x, node, p, i), node=node, producer=p, i=i,
              message="from %s/%d #%d \u00e9\u4e2d" % (node, p, i),
              nested={"k": [i, None, True, {"z": "y" * (i % 40)}]})


def acked_by_exec(postings):
    """{execution: [(seq, event_id)] sorted by seq} from the acks; asserts every ack is ok."""
    out = {}
    for po in postings:
        assert po.error is None, "producer on %s: %r" % (po.node.name, po.error)
        assert len(po.acks) == len(po.events), (po.node.name, len(po.acks), len(po.events))
        for e, a in zip(po.events, po.acks):
            assert a.get("ok") is True, "event %r refused on %s: %r" % (e["event_id"], po.node.name, a)
            assert a["event_id"] == e["event_id"], (e, a)
            out.setdefault(e["execution_id"], []).append((a["seq"], a["event_id"]))
    for x, lst in out.items():
        lst.sort()
    return out


def check_seqs(acked):
    for x, lst in acked.items():
        seqs = [s for s, _ in lst]
        assert seqs == list(range(1, len(seqs) + 1)), "%s: seqs are not 1..%d: holes %r, doubles %r" % (
            x, len(seqs), sorted(set(range(1, len(seqs) + 1)) - set(seqs))[:10],
            sorted({s for s in seqs if seqs.count(s) > 1})[:10])


def by_id(postings):
    return {e["event_id"]: e for po in postings for e in po.events}


def check_complete(r, sent):
    """Every event r got carries every field it was posted with, unchanged."""
    for e in r.events:
        src = sent[e["event_id"]]
        for k, v in src.items():
            assert e.get(k) == v, "%s: field %r of %s: %r != %r" % (r.describe(), k, e["event_id"], e.get(k), v)
        assert isinstance(e.get("timestamp"), str) and e["timestamp"], e


def test_producers_on_every_node_subscribers_on_every_node_and_transport(cluster3):
    """2 executions; 2 producers on each of the 3 nodes post to both at once (interleaved); 9
    subscribers per execution (SSE, WS, poll on each node) are open before the first event."""
    c = cluster3
    xs = ["mix-%d-%d" % (SEED % 1000, k) for k in range(2)]
    per = 60  # events per producer and execution: 2 x 3 x 2 x 60 = 720 events
    total = per * 2 * len(c)
    readers = [reader(kind, n, x, total, timeout=90) for x in xs for n in c for kind in ("sse", "ws", "poll")]
    postings = []
    for n in c:
        for p in range(2):
            evs = [payload(x, n.name, p, i) for i in range(per) for x in xs]
            postings.append(Posting(n, evs, batch=10))
    for po in postings:
        po.start()
    for po in postings:
        po.join(90)
        assert not po.is_alive(), "a producer on %s did not finish" % po.node.name
    acked = acked_by_exec(postings)
    assert sorted(acked) == sorted(xs) and all(len(v) == total for v in acked.values())
    check_seqs(acked)
    join_all(readers, 90)
    sent = by_id(postings)
    for r in readers:
        check_exact(r, acked[r.x])
        check_complete(r, sent)
    # Each producer's own events keep the order it posted them in (one connection, replies in order).
    for po in postings:
        seqs = {}
        for e, a in zip(po.events, po.acks):
            seqs.setdefault(e["execution_id"], []).append(a["seq"])
        for x, s in seqs.items():
            assert s == sorted(s), "%s: one connection's events were reordered: %r" % (x, s[:20])
    # The same history on every node, and on one that joins now (it never saw these events).
    for n in c:
        for x in xs:
            r = poll(n.base, "/v1/executions/%s/poll" % x, {"timeout": "0"}, http_timeout=10).json()
            assert [(e["seq"], e["event_id"]) for e in r["events"]] == acked[x], n.name
            assert r["last_seq"] == total


def test_late_subscriber_on_a_new_node_reads_the_history_from_redis(cluster3, make_daemon):
    c = cluster3
    x = "late"
    replies = c[0].post_ok(*[ev(x, "log", i=i) for i in range(30)])
    want = [(r["seq"], r["event_id"]) for r in replies]
    assert [s for s, _ in want] == list(range(1, 31))
    d = add_node(make_daemon, c, "late-node")
    rs = [reader(kind, d, x, 30, timeout=20) for kind in ("sse", "ws", "poll")]
    join_all(rs, 30)
    for r in rs:
        check_exact(r, want)
    # And the live stream after the history, posted on another node.
    more = c[1].post_ok(*[ev(x, "log", i=i) for i in range(30, 35)])
    want += [(r["seq"], r["event_id"]) for r in more]
    rs = [reader(kind, d, x, 35, timeout=20) for kind in ("sse", "ws", "poll")]
    join_all(rs, 30)
    for r in rs:
        check_exact(r, want)


def cursors(node, x, n):
    """{seq: SSE id} of the first n events of x as node streams them."""
    with SSEClient(node.port, "/v1/executions/%s/events" % x) as s:
        frames = s.collect(n, timeout=10)
    assert len(frames) == n, "%d of %d events from %s" % (len(frames), n, node.name)
    return {f.json()["seq"]: f.id for f in frames}


def test_resume_across_nodes_at_random_cut_points(cluster3):
    """A cursor from node A resumes on B and C (and one from B on A and C) exactly after it, on SSE
    (Last-Event-ID and ?last_event_id=), WebSocket and long-poll, in every accepted form."""
    rng = random.Random(SEED)
    c = cluster3
    x = "cut-%d" % (SEED % 100000)
    total = 80
    posted = []
    for k in range(0, total, 20):  # posted on the nodes in turn
        posted += c[(k // 20) % 3].post_ok(*[ev(x, "log", i=i) for i in range(k, k + 20)])
    want = [(r["seq"], r["event_id"]) for r in posted]
    assert [s for s, _ in want] == list(range(1, total + 1))
    eid = dict(want)
    cur = {n.name: cursors(n, x, total) for n in c[:2]}
    cuts = sorted(rng.sample(range(1, total), 6)) + [total]
    failures = []
    for cut in cuts:
        src = rng.choice(["a", "b"])
        for n in c:
            if n.name == src:
                continue
            for kind, how in (("sse", "header"), ("sse", "cursor"), ("ws", "cursor"), ("poll", "cursor"),
                              (rng.choice(["sse", "ws", "poll"]), rng.choice(["event_id", "seq", "since_seq"]))):
                headers, query = {}, ""
                if how == "header":
                    headers = {"Last-Event-ID": cur[src][cut]}
                elif how == "cursor":
                    query = "last_event_id=" + urllib.parse.quote(cur[src][cut], safe="")
                elif how == "event_id":
                    query = "last_event_id=" + urllib.parse.quote(eid[cut], safe="")
                elif how == "seq":
                    query = "last_event_id=%d" % cut
                else:
                    query = "since_seq=%d" % cut
                n_want = total - cut
                r = reader(kind, n, x, n_want, timeout=6 if n_want else 1.5, query=query, headers=headers)
                r.join(15)
                try:
                    assert r.error is None, r.error
                    check_exact(r, want[cut:])
                except AssertionError as e:
                    failures.append("cut %d, cursor from %s, %s by %s: %s" % (cut, src, r.describe(), how, e))
    assert not failures, "seed %d:\n%s" % (SEED, "\n".join(failures[:10]))


def test_resume_then_live_across_nodes(cluster3):
    """A subscriber reads part of a stream on A, reconnects to B with its last id while a producer on C
    keeps posting: it gets every event once, in order."""
    c = cluster3
    x = "live-resume"
    total = 150
    evs = [ev(x, "log", event_id="lr-%d" % i, i=i) for i in range(total)]
    po = Posting(c[2], evs, batch=3, pause=0.01)
    first = reader("sse", c[0], x, 40, timeout=20)
    po.start()
    first.join(25)
    assert first.error is None and len(first.events) == 40, (first.error, len(first.events))
    second = reader("sse", c[1], x, total - 40, timeout=40, headers={"Last-Event-ID": first.ids[-1]})
    po.join(60)
    second.join(45)
    assert po.error is None, po.error
    seen = first.events + second.events
    assert [e["event_id"] for e in seen] == ["lr-%d" % i for i in range(total)], "seed %d" % SEED
    assert [e["seq"] for e in seen] == list(range(1, total + 1))


def test_gap_for_a_cursor_trimmed_from_redis(cluster_factory):
    """store.ring_events bounds what Redis keeps too (MINID): a cursor from far back, resumed on
    another node, gets stream.gap first and then the retained events, contiguous to the last."""
    c = cluster_factory(3, config={"store": {"ring_events": 16}})
    x = "trimmed"
    total = 400  # MINID ~ trims whole stream nodes (an entry of 30 events is one): enough to make Redis trim
    c[0].post_ok(*[ev(x, "log", i=i) for i in range(10)])
    cur = cursors(c[0], x, 10)
    for k in range(10, total, 30):
        c[k // 30 % 3].post_ok(*[ev(x, "log", i=i) for i in range(k, min(total, k + 30))])
    q = "last_event_id=" + urllib.parse.quote(cur[3], safe="")
    rs = [reader(kind, n, x, total, timeout=4, query=q) for n in c[1:] for kind in ("sse", "ws", "poll")]
    join_all(rs, 15)
    for r in rs:
        assert r.events and r.events[0]["type"] == "stream.gap", "%s: %r" % (r.describe(), r.events[:2])
        first = r.events[0]["first_seq"]
        # Redis may keep more than ring_events (MINID ~), never fewer, never the cut ones.
        assert 5 <= first <= total - 16 + 1, (r.describe(), first)
        assert [e["seq"] for e in r.events[1:]] == list(range(first, total + 1)), r.describe()
        if r.kind != "poll":
            assert r.events[0].get("requested") == cur[3], r.events[0]


def test_resume_older_than_the_node_ring_reads_redis(redis, cluster_factory):
    """A node's ring is a cache: a resume older than it is served from Redis' stream exactly while
    Redis still has the events (its stream says which it keeps), with stream.gap only before that."""
    need_real_cluster()
    c = cluster_factory(3, config={"store": {"ring_events": 16}})
    x = "deeper"
    total = 60
    c[0].post_ok(*[ev(x, "log", i=i) for i in range(10)])
    cur = cursors(c[0], x, 10)
    for k in range(10, total, 10):
        c[k // 10 % 3].post_ok(*[ev(x, "log", i=i) for i in range(k, k + 10)])
    streams = [k for k in redis.cmd("KEYS", "*") if x.encode() in k and redis.cmd("TYPE", k) == "stream"]
    assert len(streams) == 1, streams
    kept = [seq for seq, _ in stream_events(redis, streams[0])]
    assert kept == list(range(kept[0], total + 1)), kept  # trimming removes the oldest: the rest is contiguous
    oldest = kept[0]
    want = poll(c[0].base, "/v1/executions/%s/poll" % x, {"timeout": "0", "since_seq": str(max(0, oldest - 1))},
                http_timeout=10).json()["events"]
    for cut in (3, 9):
        for n in c:
            for kind in ("sse", "ws", "poll"):
                r = reader(kind, n, x, total - cut, timeout=4,
                           query="last_event_id=" + urllib.parse.quote(cur[cut], safe=""))
                r.join(10)
                assert r.error is None, r.error
                if cut + 1 >= oldest:
                    assert [e["seq"] for e in r.events] == list(range(cut + 1, total + 1)), (
                        "%s: resume after seq %d while Redis keeps seqs %d..%d: got %r" % (
                            r.describe(), cut, oldest, total, [(e["type"], e.get("seq")) for e in r.events[:3]]))
                else:
                    assert r.events[0]["type"] == "stream.gap" and r.events[0]["first_seq"] == oldest, r.events[:1]
                    assert [e["seq"] for e in r.events[1:]] == [e["seq"] for e in want]


def test_a_large_call_is_stored_in_entries_of_at_most_500_events(redis, cluster_factory, make_daemon):
    """One request of 1,200 events of one execution (one script call): Redis' stream holds them in entries
    of at most 500 (the node's groups of the script's arguments), each entry one field of the events
    (fields f and b), seqs 1-1200 in order; the other node has them from the channel, and a node started
    afterwards reads every one from Redis' entries."""
    need_real_cluster()
    c = cluster_factory(2, config={"store": {"ring_events": 4096}})
    x = "large-call"
    body = "".join(json.dumps(ev(x, "log", i=i)) + "\n" for i in range(1200))
    r = requests.post(c[0].base + "/v1/events", data=body, headers={"Content-Type": "application/x-ndjson"},
                      timeout=20)
    assert r.status_code == 200, r.text[:300]
    key = "cs:{x:%s}:s" % x
    entries = redis.cmd("XRANGE", key, "-", "+")
    sizes = [len(entry_events(eid, fields)) for eid, fields in entries]
    assert len(sizes) >= 3 and max(sizes) <= 500, sizes
    assert all(list(fields[::2]) == [b"f", b"b"] for _, fields in entries), entries[0][1][:2]
    assert [seq for seq, _ in stream_events(redis, key)] == list(range(1, 1201))
    assert [json.loads(j)["i"] for _, j in stream_events(redis, key)] == list(range(1200))
    late = add_node(make_daemon, c, "late", config={"store": {"ring_events": 4096}})
    for n in (c[1], late):
        rd = reader("poll", n, x, 1200, timeout=10, query="since_seq=0")
        rd.join(15)
        assert [e["seq"] for e in rd.events] == list(range(1, 1201)), (n.name, rd.events[:2])
        assert [e["i"] for e in rd.events] == list(range(1200)), n.name


def test_idempotent_repost_on_other_nodes(cluster3):
    c = cluster3
    x = "idem"
    first = c[0].post_ok(ev(x, "log", event_id="once", n=1), ev(x, "log", event_id="other"))
    subs = [reader(kind, n, x, 3, timeout=4) for n in c for kind in ("sse", "ws", "poll")]
    again = c[1].post_ok(ev(x, "log", event_id="once", n=1))[0]
    assert again["seq"] == first[0]["seq"] == 1 and again["event_id"] == "once", again
    again = c[2].post_ok(ev(x, "log", event_id="once", n=1))[0]
    assert again["seq"] == 1, again
    r = requests.post(c[2].base + "/v1/events", json=ev(x, "log", event_id="once", n=1), timeout=5)
    assert r.status_code == 200 and r.json()["seq"] == 1, r.text
    # The same id with another type is a new event (SPEC §1), wherever it is posted.
    new = c[1].post_ok(ev(x, "log.other", event_id="once"))[0]
    assert new["seq"] == 3, new
    join_all(subs, 10)
    for s in subs:
        assert [(e["seq"], e["event_id"], e["type"]) for e in s.events] == [
            (1, "once", "log"), (2, "other", "log"), (3, "once", "log.other")], s.describe()


def test_a_call_of_large_events_is_stored_in_entries_of_at_most_16_mib(redis, cluster_factory):
    """20 events of ~900 KB of one execution in one request (one script call): its groups, and so the
    stream's entries, hold at most 16 MiB each (a field stays far below Redis' 512 MB a string), every
    event stored once and in order, and the other node has them all."""
    need_real_cluster()
    c = cluster_factory(2, config={"store": {"ring_bytes": 64 << 20, "max_bytes": 256 << 20},
                                   "limits": {"max_body_bytes": 32 << 20}})
    x = "large-events"
    body = "".join(json.dumps(ev(x, "log", i=i, pad="p" * 900000)) + "\n" for i in range(20))
    r = requests.post(c[0].base + "/v1/events", data=body, headers={"Content-Type": "application/x-ndjson"},
                      timeout=30)
    assert r.status_code == 200, r.text[:300]
    entries = redis.cmd("XRANGE", "cs:{x:%s}:s" % x, "-", "+")
    assert len(entries) >= 2, len(entries)
    for _, fields in entries:
        assert list(fields[::2]) == [b"f", b"b"] and len(fields[3]) <= 16 << 20, (fields[:2], len(fields[3]))
    assert [json.loads(j)["i"] for _, j in stream_events(redis, "cs:{x:%s}:s" % x)] == list(range(20))
    rd = reader("poll", c[1], x, 20, timeout=15, query="since_seq=0")
    rd.join(20)
    assert [e["i"] for e in rd.events] == list(range(20)), [e.get("i") for e in rd.events]


def test_duplicates_inside_one_call_are_left_out_of_its_entry(redis, cluster3):
    """One request (one script call) of three executions' events, interleaved: producers' ids, one of
    them twice in the request and one posted before, and node-made ids. Each answer carries its seq (the
    first post's for a duplicate), Redis' stream holds each event once with consecutive seqs, and every
    node's subscribers get exactly the stored events."""
    c = cluster3
    before = c[1].post_ok(ev("dup-a", "log", event_id="old"))[0]
    assert before["seq"] == 1, before
    subs = {x: [reader(kind, n, x, want, timeout=6) for n in c for kind in ("sse", "ws", "poll")]
            for x, want in (("dup-a", 3), ("dup-b", 2), ("dup-c", 2))}
    lines = [ev("dup-a", "log", event_id="a1"), ev("dup-b", "log"), ev("dup-a", "log", event_id="old"),
             ev("dup-c", "log", event_id="c1"), ev("dup-a", "log", event_id="a1"), ev("dup-b", "log", event_id="b1"),
             ev("dup-a", "log"), ev("dup-c", "log", event_id="c1"), ev("dup-b", "log", event_id="b1"),
             ev("dup-c", "log")]
    got = c[0].post_ok(*lines)
    assert [(g["seq"], g.get("duplicate", False)) for g in got] == [
        (2, False), (1, False), (1, True), (1, False), (2, True), (2, False), (3, False), (1, True),
        (2, True), (2, False)], got
    for x, want in (("dup-a", ["old", "a1", None]), ("dup-b", [None, "b1"]), ("dup-c", ["c1", None])):
        stored = stream_events(redis, "cs:{x:%s}:s" % x)
        assert [seq for seq, _ in stored] == list(range(1, len(want) + 1)), stored
        ids = [json.loads(j)["event_id"] for _, j in stored]
        assert [i if w is not None else None for i, w in zip(ids, want)] == want, ids
    for x, rs in subs.items():
        join_all(rs, 10)
        want = [(seq, json.loads(j)["event_id"]) for seq, j in stream_events(redis, "cs:{x:%s}:s" % x)]
        for r in rs:
            assert [(e["seq"], e["event_id"]) for e in r.events] == want, r.describe()


def test_the_same_event_id_posted_on_three_nodes_at_once(cluster3):
    """20 rounds: the same new event_id sent at the same moment to all three nodes is stored once and
    all three answers carry its one seq."""
    c = cluster3
    x = "race"
    for rnd in range(20):
        e = ev(x, "log", event_id="race-%d" % rnd)
        barrier = threading.Barrier(3)
        out = [None] * 3

        def go(i):
            p = c[i].producer()
            try:
                barrier.wait(5)
                out[i] = p.request(e)[0]
            finally:
                p.close()

        ts = [threading.Thread(target=go, args=(i,)) for i in range(3)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(15)
        assert all(o and o.get("ok") for o in out), out
        assert len({o["seq"] for o in out}) == 1, "round %d: one event_id got seqs %r" % (rnd, out)
        assert out[0]["seq"] == rnd + 1, out
    hist = poll(c[1].base, "/v1/executions/%s/poll" % x, {"timeout": "0"}, http_timeout=10).json()["events"]
    assert [e["event_id"] for e in hist] == ["race-%d" % i for i in range(20)]


# ---- the seed clients against any node ------------------------------------------------------------------

KEY = "seed-key-8c1d2e"


def test_seed000_clients_on_other_nodes(cluster_factory):
    """The request is posted on A, the answer on B; the seed's three clients read from B and C."""
    from test_seed_clients import CLIENTS, COMPLETED, REQUIRED, Client, check_received, ws_expected

    c = cluster_factory(3, config={"auth": {"api_key": KEY}})
    c[0].post_ok(ev("exec-seed", "run.started"), REQUIRED, ev("exec-seed", "log", message="waiting for a human"))
    clients = {}
    try:
        for name, node in zip(CLIENTS, (c[1], c[2], c[1])):
            clients[name] = Client(name, node.port, "exec-seed", KEY)
        clients["c." + CLIENTS[0]] = Client(CLIENTS[0], c[2].port, "exec-seed", KEY)
        assert clients["ws_client.py"].wait_for(lambda l: len(l) >= 2, 15), clients["ws_client.py"].stderr()
        for name in ("sse_client.py", "poll_client.py"):
            assert clients[name].wait_for(lambda l: len(l) >= 1, 15), (name, clients[name].stderr())
        c[2].post_ok(ev("exec-seed", "tool.called", tool="search"))
        c[1].post_ok(COMPLETED, ev("exec-seed", "run.completed", result="done"))
        for key in ("ws_client.py", "c.ws_client.py"):
            assert clients[key].wait_for(lambda l: len(l) >= 3, 10), (key, clients[key].lines)
        for name in ("sse_client.py", "poll_client.py"):
            assert clients[name].wait_for(lambda l: len(l) >= 2, 10), (name, clients[name].lines)
        time.sleep(2.5)  # another poll round: nothing twice
    finally:
        for cl in clients.values():
            cl.stop()
    for key, cl in clients.items():
        assert "Traceback" not in cl.stderr(), (key, cl.stderr())
    assert clients["ws_client.py"].lines == ws_expected() == clients["c.ws_client.py"].lines
    sse = check_received(clients["sse_client.py"].lines, ["human_input_required", "human_input_completed"])
    polled = check_received(clients["poll_client.py"].lines, ["human_input_required", "human_input_completed"])
    assert sse == polled and [e["seq"] for e in sse] == [2, 5]


def test_seed002_client_on_every_node_and_status_everywhere(cluster_factory):
    """Seed 002's client kicks off on each node (a runtime serves the crew on each); the status of every
    run reads the same on all three nodes."""
    sys.path.insert(0, os.path.join(HERE, "seed_clients"))
    import crewai_client
    from gw_runtime import Runtime

    c = cluster_factory(3, config={"auth": {"api_key": KEY}, "gateway": {"default_crew": "research"}})
    rts = [Runtime(n.sock, "research", 2) for n in c]
    try:
        assert all(rt.served.wait(5) for rt in rts), [rt.errors for rt in rts]
        ids = []
        for n in c:
            client = crewai_client.CrewAIClient(base_url=n.base, token=KEY, poll_interval=0.2)
            assert client.get_inputs_sync() == {"inputs": ["topic"]}
            res = client.kickoff_sync({"topic": "AI on " + n.name})
            assert res.is_success, (n.name, res)
            assert res.result["output"] == "report on AI on " + n.name
            ids.append(res.kickoff_id)
        auth = {"Authorization": "Bearer " + KEY}
        for xid, n0 in zip(ids, c):
            for n in c:
                r = requests.get(n.base + "/%s/status" % xid, headers=auth, timeout=5)
                assert r.status_code == 200, (n.name, r.text)
                st = r.json()
                assert st["status"] == "completed" and st["result"] == {"output": "report on AI on " + n0.name}, (
                    n.name, st)
    finally:
        for rt in rts:
            rt.close()


def test_seed003_requests_example_on_another_node(cluster_factory):
    c = cluster_factory(3, config={"auth": {"api_key": KEY}})
    x = "run_abc123"
    c[0].post_ok({"execution_id": x, "type": "run.started", "payload": {"run_id": x}},
                 {"execution_id": x, "type": "log", "payload": {"level": "info", "message": "hi"}})
    env = dict(os.environ, CREWSTREAM_HOSTPORT="127.0.0.1:%d" % c[2].port)
    proc = subprocess.Popen([sys.executable, "-u", os.path.join(HERE, "seed_clients", "runs_events.py"), x, KEY],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    lines = []
    threading.Thread(target=lambda: [lines.append(y.decode().rstrip()) for y in iter(proc.stdout.readline, b"")],
                     daemon=True).start()
    try:
        assert wait_until(lambda: len(lines) >= 2, 10), (lines, proc.poll())
        c[1].post_ok({"execution_id": x, "type": "run.completed", "payload": {"run_id": x, "result": "ok"}})
        assert wait_until(lambda: len(lines) >= 3, 10), lines
    finally:
        proc.kill()
        proc.wait(5)
    assert lines == ["run.started {'run_id': 'run_abc123'}", "log {'level': 'info', 'message': 'hi'}",
                     "run.completed {'run_id': 'run_abc123', 'result': 'ok'}"]


def test_prefixes_keep_two_clusters_apart(redis, cluster_factory):
    """Two clusters on one Redis with different cluster.prefix share nothing; every key either made
    is under its prefix."""
    need_real_cluster()
    one = cluster_factory(2, prefix="one:", names=["o1", "o2"])
    two = cluster_factory(1, prefix="two:", names=["t1"])
    a = one[0].post_ok(*[ev("shared-name", "log", i=i) for i in range(3)])
    b = two[0].post_ok(ev("shared-name", "log", i=99))
    assert [r["seq"] for r in a] == [1, 2, 3] and b[0]["seq"] == 1
    h1 = poll(one[1].base, "/v1/executions/shared-name/poll", {"timeout": "0"}, http_timeout=5).json()["events"]
    h2 = poll(two[0].base, "/v1/executions/shared-name/poll", {"timeout": "0"}, http_timeout=5).json()["events"]
    assert [e["i"] for e in h1] == [0, 1, 2] and [e["i"] for e in h2] == [99]
    keys = [k.decode() for k in redis.cmd("KEYS", "*")]
    assert keys and all(k.startswith(("one:", "two:")) for k in keys), keys



# ---- docs/cluster.md's nginx configuration, as written, in front of three nodes ------------------------------


def nginx_from_docs(c, port, tmp):
    """The nginx block of docs/cluster.md ("### nginx"), with the three nodes' ports and a plain loopback
    listener in place of TLS, in a minimal main configuration."""
    with open(os.path.join(HERE, "..", "..", "docs", "cluster.md")) as f:
        doc = f.read()
    sec = doc[doc.index("### nginx"):]
    block = sec[sec.index("```nginx") + len("```nginx"): sec.index("```", sec.index("```nginx") + 3)]
    ports = iter([n.port for n in c] * 2)
    block = re.sub(r"server 10\.0\.0\.\d+:8000", lambda m: "server 127.0.0.1:%d" % next(ports), block)
    assert "10.0.0." not in block, block
    block = re.sub(r"listen 443 ssl http2;", "listen 127.0.0.1:%d;" % port, block)
    block = "\n".join(line for line in block.splitlines() if not re.match(r"\s*(ssl_certificate|server_name)", line))
    t = os.path.join(tmp, "tmp")
    os.makedirs(t, exist_ok=True)
    conf = ("daemon off; worker_processes 1; pid %s/nginx.pid; error_log %s/error.log;\n"
            "events { worker_connections 512; }\n"
            "http { access_log off; client_body_temp_path %s; proxy_temp_path %s; fastcgi_temp_path %s;\n"
            "uwsgi_temp_path %s; scgi_temp_path %s;\n%s\n}\n") % (tmp, tmp, t, t, t, t, t, block)
    path = os.path.join(tmp, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    return path


def test_three_nodes_behind_nginx_as_docs_cluster_md_configures_it(cluster3):
    """The configuration operators copy works: WebSocket upgrades after plain requests (a separate
    upstream without keep-alive), unbuffered SSE, resume through the balancer on whichever node."""
    ngx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if not ngx:
        pytest.skip("nginx not installed: docs/cluster.md's nginx configuration is not checked")
    c = cluster3
    tmp = mkdtemp("cs-nginx-")
    port = free_port()
    conf = nginx_from_docs(c, port, tmp)
    proc = subprocess.Popen([ngx, "-p", tmp, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def up():
            try:
                return http_get(port, "/health", timeout=1)[0] == 200
            except OSError:
                return False

        assert wait_until(up, 10), proc.stderr.read().decode() if proc.poll() is not None else "nginx not up"

        class Front:  # the balancer, as a node for the readers
            name = "nginx"
            base = "http://127.0.0.1:%d" % port

        Front.port = port
        x = "via-nginx"
        posted = []
        for k in range(6):
            posted += c[k % 3].post_ok(*[ev(x, "log", i=i) for i in range(k * 5, k * 5 + 5)])
        want = [(r["seq"], r["event_id"]) for r in posted]
        # Plain requests first (they fill nginx's keep-alive pool), then WebSocket upgrades: every one upgrades.
        for rnd in range(4):
            r = poll(Front.base, "/v1/executions/%s/poll" % x, {"timeout": "0"}, http_timeout=10)
            assert r.status_code == 200 and [(e["seq"], e["event_id"]) for e in r.json()["events"]] == want
            ws = RawWS(port, "/v1/executions/%s/ws" % x)
            try:
                assert ws.status == 101, "round %d: WebSocket through nginx answered %d %r (a kept-alive upstream " \
                    "connection?)" % (rnd, ws.status, ws.buf[:200])
                assert json.loads(ws.next_message(5))["seq"] == 1
            finally:
                ws.close()
        # SSE through nginx is not buffered: an event posted now arrives at once; a resume continues exactly.
        sse = SSEClient(port, "/v1/executions/%s/events" % x)
        try:
            got = sse.collect(30, timeout=10)
            assert [(f.json()["seq"], f.json()["event_id"]) for f in got] == want
            t0 = time.monotonic()
            more = c[1].post_ok(ev(x, "log", i=30))[0]
            f = sse.next_event(timeout=5)
            assert f is not None and f.json()["event_id"] == more["event_id"], f
            assert time.monotonic() - t0 < 1.0, "an SSE event took %.2f s through nginx" % (time.monotonic() - t0)
            last = f.id
        finally:
            sse.close()
        c[2].post_ok(*[ev(x, "log", i=i) for i in range(31, 36)])
        r = reader("sse", Front, x, 5, timeout=10, headers={"Last-Event-ID": last})
        r.join(15)
        assert r.error is None and [e["i"] for e in r.events] == list(range(31, 36)), (r.error, r.events)
    finally:
        proc.terminate()
        proc.wait(10)
