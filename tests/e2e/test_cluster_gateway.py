"""The crew gateway and webhooks in cluster mode (SPEC §9 and §11, issue 16; docs/cluster.md "Gateway and
webhooks"): three daemons on one redis-server (clusterutil), the runtimes of gw_runtime.py, webhooks counted
at a loopback receiver (test_webhooks.Receiver).

- a runtime that ran a kickoff is free again once its final event is confirmed by Redis (its busy slot
  is released; later kickoffs run instead of queueing forever);
- a global webhook endpoint configured on every node gets each event once per cluster, in seq order;
- per-execution webhooks of a kickoff taken on node b are delivered once even when the events are posted
  on node a, and a /resume repeating them on node c does not make them twice;
- the status of a kickoff reads the same on every node (pending, then the result);
- a kickoff taken on a node whose runtimes do not serve its crew runs on a node whose runtimes do (handed
  over through Redis: kickoff.requested and a claim), exactly once; one nobody serves fails clearly.
"""

import os
import sys
import threading
import time

import pytest
import requests

from clusterutil import cluster_factory, need_real_cluster, redis  # noqa: F401  (fixtures)
from csutil import Producer, wait_until
from test_webhooks import Receiver

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "seed_clients"))

import crewai_client  # noqa: E402  (seed 002's client, verbatim)
from gw_runtime import Runtime  # noqa: E402

KEY = "seed-key-8c1d2e"
AUTH = {"Authorization": "Bearer " + KEY}


def base(d):
    return "http://127.0.0.1:%d" % d.port


def get(d, path):
    return requests.get(base(d) + path, headers=AUTH, timeout=10)


def post(d, path, body):
    return requests.post(base(d) + path, headers=AUTH, json=body, timeout=10)


def status(d, xid):
    r = get(d, "/%s/status" % xid)
    assert r.status_code == 200, r.text
    return r.json()


def crews(d):
    return get(d, "/v1/crews").json()["crews"]


def make3(cluster_factory, rec=None, endpoints=None, **gateway):  # noqa: F811
    cfg = {"auth": {"api_key": KEY}, "gateway": gateway}
    if rec is not None:
        cfg["webhooks"] = {"allow": [rec.url + "/"], "endpoints": endpoints or []}
    c = cluster_factory(3, config=cfg)
    c.wait_healthy()
    return c


def test_runtime_released_after_its_final_event(cluster_factory):  # noqa: F811
    """One runtime of concurrency 1 on node a: three kickoffs in a row each run, because the busy slot of
    the previous one is released once Redis confirmed its run.completed."""
    need_real_cluster()
    c = make3(cluster_factory, default_crew="research", queue_timeout_s=30)
    a = c[0]
    rt = Runtime(a.sock, "research", 1, run_s=0.1)
    try:
        assert rt.served.wait(5), rt.errors
        ids = []
        for i in range(3):
            r = post(a, "/kickoff", {"inputs": {"topic": "t%d" % i}})
            assert r.status_code == 200, r.text
            ids.append(r.json()["kickoff_id"])
            assert wait_until(lambda: status(a, ids[-1])["status"] == "completed", 10), (
                i, status(a, ids[-1]), crews(a))
        assert wait_until(lambda: crews(a)[0]["busy"] == 0, 5), crews(a)
        assert rt.done == ids
    finally:
        rt.close()


def held_kickoff_pending_then_completed(nodes, rt, taker, topic, handed=False):
    """A kickoff taken by `taker` reaches rt (which does not acknowledge it yet): its status reads pending on
    every node; acknowledged and run, completed with its result on every node. Handed over through the
    cluster, its kickoff.requested event reaches every node first: pending all the same."""
    assert rt.served.wait(5)
    xid = post(taker, "/kickoff", {"inputs": {"topic": topic}}).json()["kickoff_id"]
    assert wait_until(lambda: len(rt.kickoffs) == 1, 5)
    for n in nodes:
        if handed:
            assert wait_until(lambda: get(n, "/v1/executions/%s" % xid).json().get("last_seq", 0) >= 1, 5), n.name
        assert status(n, xid)["status"] == "pending", (n.name, status(n, xid))
    rt.ack = True
    rt._on_kickoff(rt.kickoffs[0])
    for n in nodes:
        assert wait_until(lambda: status(n, xid)["status"] == "completed", 10), (n.name, status(n, xid))
        assert status(n, xid)["result"] == {"output": "report on %s" % topic}


def test_seed_client_and_status_on_every_node(cluster_factory):  # noqa: F811
    """The seed's kickoff_sync against node a (its runtime there); the kickoff's status reads the same on
    nodes b and c, pending before the runtime took it and completed after."""
    need_real_cluster()
    c = make3(cluster_factory, default_crew="research")
    a, b, cc = c
    rt = Runtime(a.sock, "research", 2, run_s=0.2, ack=False)
    try:
        held_kickoff_pending_then_completed(c, rt, a, "held")
        client = crewai_client.CrewAIClient(base_url=base(a), token=KEY, poll_interval=0.2)
        res = client.kickoff_sync({"topic": "AI Research"})
        assert res.is_success, res
        assert res.result["output"] == "report on AI Research"
        for n in (b, cc):
            assert wait_until(lambda: status(n, res.kickoff_id)["status"] == "completed", 10)
        assert wait_until(lambda: crews(a)[0]["busy"] == 0, 5), crews(a)
    finally:
        rt.close()


def test_kickoff_on_another_node_runs_there(cluster_factory):  # noqa: F811
    """The runtime is on node a; the seed's kickoff_sync goes to node b (a load balancer's choice): b hands
    the kickoff to the cluster (kickoff.requested), a claims it in Redis and its runtime runs it, once."""
    need_real_cluster()
    c = make3(cluster_factory, default_crew="research")
    a, b, cc = c
    rt = Runtime(a.sock, "research", 2, run_s=0.2)
    rt2 = Runtime(cc.sock, "other", 1)
    try:
        assert rt.served.wait(5) and rt2.served.wait(5)
        client = crewai_client.CrewAIClient(base_url=base(b), token=KEY, poll_interval=0.2)
        res = client.kickoff_sync({"topic": "AI Research"})
        assert res.is_success, res
        assert res.result["output"] == "report on AI Research"
        xid = res.kickoff_id
        for n in (a, b, cc):
            assert wait_until(lambda: status(n, xid)["status"] == "completed", 10), (n.name, status(n, xid))
        assert status(cc, xid)["result"] == {"output": "report on AI Research"}
        assert [k["execution_id"] for k in rt.kickoffs] == [xid]
        assert rt2.kickoffs == []
        # Five more through b and c at once: each runs exactly once on a.
        ids = [post(n, "/kickoff", {"inputs": {"topic": "t%d" % i}, "crew": "research"}).json()["kickoff_id"]
               for i, n in enumerate((b, cc, b, cc, b))]
        for x in ids:
            assert wait_until(lambda: status(a, x)["status"] == "completed", 15), (x, status(a, x))
        got = [k["execution_id"] for k in rt.kickoffs]
        assert sorted(got) == sorted([xid] + ids), got
        assert wait_until(lambda: crews(a)[0]["busy"] == 0, 5), crews(a)
    finally:
        rt.close()
        rt2.close()


def test_handed_over_kickoff_is_pending_until_its_runtime_posts(cluster_factory):  # noqa: F811
    """A kickoff taken by b and handed to a's runtime, which holds it unacknowledged: its status reads
    pending on every node (kickoff.requested is its only event), then completed once the runtime ran it."""
    need_real_cluster()
    c = make3(cluster_factory, default_crew="research")
    a, b, cc = c
    rt = Runtime(a.sock, "research", 2, run_s=0.2, ack=False)
    try:
        held_kickoff_pending_then_completed(c, rt, b, "handed", handed=True)
    finally:
        rt.close()


def test_handed_over_kickoff_waits_for_a_busy_runtime(cluster_factory):  # noqa: F811
    """Two kickoffs through b for a's runtime of concurrency 1 that runs 2.5 s each, with
    gateway.queue_timeout_s 1: the second waits on a past b's timeout, and b, losing the claim to a, does not
    fail it: both complete, each run once, neither failed."""
    need_real_cluster()
    c = make3(cluster_factory, queue_timeout_s=1)
    a, b, cc = c
    rt = Runtime(a.sock, "research", 1, run_s=2.5)
    try:
        assert rt.served.wait(5)
        ids = [post(b, "/kickoff", {"inputs": {"topic": "t%d" % i}, "crew": "research"}).json()["kickoff_id"]
               for i in range(2)]
        for x in ids:
            assert wait_until(lambda: status(b, x)["status"] in ("completed", "error"), 15), status(b, x)
            assert status(b, x)["status"] == "completed", status(b, x)
        assert sorted(k["execution_id"] for k in rt.kickoffs) == sorted(ids)
    finally:
        rt.close()


def test_kickoff_nobody_serves_fails_clearly(cluster_factory):  # noqa: F811
    """No node serves crew ghost: the kickoff taken on b fails after gateway.queue_timeout_s with a reason
    that says so, and every node reads that status."""
    need_real_cluster()
    c = make3(cluster_factory, queue_timeout_s=1)
    a, b, cc = c
    rt = Runtime(a.sock, "research", 1)
    try:
        assert rt.served.wait(5)
        r = post(b, "/kickoff", {"inputs": {"topic": "x"}, "crew": "ghost"})
        assert r.status_code == 200, r.text
        xid = r.json()["kickoff_id"]
        for n in (a, b, cc):
            assert wait_until(lambda: status(n, xid)["status"] == "error", 8), (n.name, status(n, xid))
        msg = status(cc, xid)["error_message"]
        assert "no node of the cluster" in msg and "queue_timeout_s" in msg, msg
        assert rt.kickoffs == []
    finally:
        rt.close()


def post_run(node, xid, n, types=None):
    evs = [{"execution_id": xid, "type": "run.started"}]
    evs += [{"execution_id": xid, "type": (types or "agent.step"), "i": i} for i in range(n)]
    evs += [{"execution_id": xid, "type": "run.completed", "result": {"ok": True}}]
    with Producer(node.sock) as p:
        replies = p.request(*evs)
    assert all(r.get("ok") for r in replies), replies
    return len(evs)


def test_global_endpoint_once_per_cluster_in_order(cluster_factory):  # noqa: F811
    """A global endpoint configured on every node: each event of executions posted on a, b and c reaches
    the receiver exactly once, in seq order per execution."""
    need_real_cluster()
    rec = Receiver()
    try:
        c = make3(cluster_factory, rec, endpoints=[{"name": "all", "url": rec.url + "/all", "types": ["*"]}])
        want = {}
        threads = []
        for i, node in enumerate(c):
            for k in range(2):
                xid = "wh-%s-%d" % (node.name, k)
                want[xid] = 12
                t = threading.Thread(target=post_run, args=(node, xid, 10))
                t.start()
                threads.append(t)
        for t in threads:
            t.join(30)
        total = sum(want.values())
        rec.wait(total, "/all", timeout=20)
        time.sleep(1.5)  # what a second node would send comes within this too
        evs = rec.events("/all")
        assert len(evs) == total, "%d deliveries for %d events" % (len(evs), total)
        for xid, n in want.items():
            seqs = [e["seq"] for e in evs if e["execution_id"] == xid]
            assert seqs == list(range(1, n + 1)), (xid, seqs)
    finally:
        rec.close()


def test_kickoff_webhooks_delivered_once_across_nodes(cluster_factory):  # noqa: F811
    """taskWebhookUrl / stepWebhookUrl / crewWebhookUrl of a kickoff taken on node b, events posted on node
    a (the runtime's node for this execution), a /resume-style repeat of the URLs on node c: each wanted
    event exactly once per URL, in seq order."""
    need_real_cluster()
    rec = Receiver()
    try:
        c = make3(cluster_factory, rec)
        a, b, cc = c
        rt = Runtime(b.sock, "research", 1, ack=False)
        try:
            assert rt.served.wait(5)
            urls = {"taskWebhookUrl": rec.url + "/task", "stepWebhookUrl": rec.url + "/step",
                    "crewWebhookUrl": rec.url + "/crew"}
            r = post(b, "/kickoff", dict({"inputs": {"topic": "x"}, "crew": "research"}, **urls))
            assert r.status_code == 200, r.text
            xid = r.json()["kickoff_id"]
            # Node c gets the same URLs (the seed repeats them on /resume): a registration there too.
            with Producer(cc.sock) as p:
                assert p.request(dict({"op": "webhooks", "execution_id": xid}, **urls))[0]["ok"]
            evs = [{"execution_id": xid, "type": "run.started"}]
            evs += [{"execution_id": xid, "type": "agent.step", "i": i} for i in range(5)]
            evs += [{"execution_id": xid, "type": "task_completed", "i": i} for i in range(3)]
            evs += [{"execution_id": xid, "type": "run.completed", "result": {"ok": True}}]
            with Producer(a.sock) as p:
                assert all(x.get("ok") for x in p.request(*evs))
            rec.wait(5, "/step", timeout=15)
            rec.wait(3, "/task", timeout=15)
            rec.wait(1, "/crew", timeout=15)
            time.sleep(1.5)
            step = [e["seq"] for e in rec.events("/step")]
            task = [e["seq"] for e in rec.events("/task")]
            crew = [e["type"] for e in rec.events("/crew")]
            assert step == [2, 3, 4, 5, 6], step
            assert task == [7, 8, 9], task
            assert crew == ["run.completed"], crew
            # The runtime on b that was offered the kickoff is free again (the run ended elsewhere).
            assert wait_until(lambda: crews(b)[0]["busy"] == 0, 5), crews(b)
        finally:
            rt.close()
    finally:
        rec.close()
