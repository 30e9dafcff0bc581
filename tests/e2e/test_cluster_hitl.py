"""Cluster mode, human input (SPEC §11, §3, §4; docs/cluster.md "Human input"), with a real redis-server:
what test_cluster_faults.py's human-input tests do not pin down.

- Redis decides: an answer whose request Redis already marks answered (by an answer this node has not
  received yet) is refused 409 and nothing is stored; the mark lives in the execution's meta hash, so it
  expires with the execution.
- An answer to a request of a history Redis no longer has (restarted empty) is 409, and creates nothing.
- A runtime's own human_input_completed on the socket is an ordinary event in cluster mode too: never
  refused, it closes the request on every node and is pushed to the runtime awaiting it elsewhere.
"""

import requests

from clusterutil import cluster3, cluster_factory, need_real_cluster, node_metrics, redis  # noqa: F401
from csutil import ev, wait_until


def request_event(x, task="review"):
    return ev(x, "human_input_required", task_id=task, crew_id="crew-1", agent_id="writer", prompt="Approve?")


def status(d, x):
    r = requests.get(d.base + "/v1/executions/%s" % x, timeout=5)
    return r.status_code, (r.json() if r.content else None)


def pending(d, x):
    code, st = status(d, x)
    return [p["event_id"] for p in st["pending_human_input"]] if code == 200 else None


def answer_v1(d, x, req_id, feedback="ok", approve=True):
    r = requests.post(d.base + "/v1/executions/%s/human-input" % x,
                      json={"event_id": req_id, "human_feedback": feedback, "is_approve": approve}, timeout=10)
    return r.status_code, r.json()


def metric(d, name):
    return node_metrics(d).get("crewstream_" + name, 0)


def wait_push(rt, timeout=8.0):
    def got():
        rt.sock.sendall(b'{"op":"ping"}\n')
        rt.read(1, timeout=timeout)
        return rt.pushes
    assert wait_until(got, timeout, 0.05), "no push within %.1fs" % timeout
    return rt.pushes[0]


def test_redis_mark_decides_and_expires_with_the_execution(redis, cluster_factory):
    need_real_cluster()
    c = cluster_factory(3, config={"store": {"retain_s": 2}})
    a, b, cc = c.nodes
    x = "mark"
    meta = "cs:{x:%s}:m" % x
    with a.producer() as rt:
        req1 = rt.request(request_event(x, "t1"))[0]["event_id"]
        req2 = rt.request(request_event(x, "t2"))[0]["event_id"]
        for n in c:
            assert wait_until(lambda: pending(n, x) == [req1, req2], 5), (n.name, status(n, x))
        # Another node's answer to req1 that b has not received yet: Redis already marks it answered.
        redis.cmd("HSET", meta, "a " + req1, "answer-from-elsewhere")
        xlen = redis.cmd("XLEN", "cs:{x:%s}:s" % x)
        code, body = answer_v1(b, x, req1)
        assert code == 409 and body["error"] == "conflict", (code, body)
        assert "already answered" in body.get("detail", ""), body
        assert redis.cmd("XLEN", "cs:{x:%s}:s" % x) == xlen, "a refused answer was stored"
        assert metric(b, "cluster_answer_conflicts_total") == 1
        assert metric(b, "cluster_answers_total") == 0
        # req2 is open in Redis: answered on b, marked with the answer's event_id, pushed on a.
        code, body = answer_v1(b, x, req2, "yes")
        assert code == 200 and body["request_event_id"] == req2, body
        assert redis.cmd("HGET", meta, "a " + req2) == body["event_id"].encode()
        assert metric(b, "cluster_answers_total") == 1
        push = wait_push(rt)
        assert push["request_event_id"] == req2 and push["event_id"] == body["event_id"], push
        assert len(rt.pushes) == 1, rt.pushes
    # The mark goes with the execution's keys (store.retain_s 2 once it finished).
    a.post_ok(ev(x, "run.completed", result="done"))
    ttl = redis.cmd("TTL", meta)
    assert 0 < ttl <= 2, ttl
    assert wait_until(lambda: redis.cmd("EXISTS", meta) == 0, 6)


def test_answer_to_a_history_redis_lost_is_409_and_creates_nothing(redis, cluster3):
    need_real_cluster()
    c = cluster3
    a, b, cc = c.nodes
    x = "lost"
    with a.producer() as rt:
        req_id = rt.request(request_event(x))[0]["event_id"]
        assert wait_until(lambda: pending(b, x) == [req_id], 5)
        redis.restart_empty()
        c.wait_healthy(20)
        code, body = answer_v1(b, x, req_id)
        assert code == 409 and "another history" in body.get("detail", ""), (code, body)
        assert [k for k in redis.cmd("KEYS", "*") if x.encode() in k] == [], redis.cmd("KEYS", "*")
        rt.sock.sendall(b'{"op":"ping"}\n')
        rt.read(1)
        assert rt.pushes == []


def test_runtime_posted_completion_is_an_ordinary_event(cluster3):
    need_real_cluster()
    c = cluster3
    a, b, cc = c.nodes
    x = "selfans"
    with a.producer() as rt, cc.producer() as other:
        req_id = rt.request(request_event(x))[0]["event_id"]
        assert wait_until(lambda: pending(cc, x) == [req_id], 5)
        done = other.request(ev(x, "human_input_completed", request_event_id=req_id, task_id="review",
                                human_feedback="by the runtime", is_approve=True))[0]
        assert done["ok"] is True and done["seq"] == 2, done
        push = wait_push(rt)
        assert push["request_event_id"] == req_id and push["event_id"] == done["event_id"], push
        for n in c:
            assert wait_until(lambda: pending(n, x) == [], 5), (n.name, status(n, x))
            code, body = answer_v1(n, x, req_id)
            assert code == 409, (n.name, code, body)
        assert len(rt.pushes) == 1


def test_request_acknowledged_before_its_node_has_it_is_still_awaited(redis, cluster3):
    """A's pub/sub connection is cut while B posts to the execution: when A's runtime then posts its request,
    Redis' seq is past what A's ring holds, so the request reaches A's store only after A read the hole
    (XRANGE), after the runtime's ack. The connection awaits it all the same."""
    need_real_cluster()
    c = cluster3
    a, b, cc = c.nodes
    x = "late"
    a.post_ok(ev(x, "log", event_id="first"))
    assert wait_until(lambda: status(b, x)[0] == 200, 5)
    fills = metric(a, "cluster_fills_total")
    subs = [cl for cl in redis.clients("pubsub") if cl.get("name") == "crewstream-a-sub"]
    assert len(subs) == 1, redis.clients("pubsub")
    redis.cmd("CLIENT", "KILL", "ID", subs[0]["id"])
    b.post_ok(*[ev(x, "log", event_id="from-b-%d" % i) for i in range(5)])
    c.wait_healthy(10)
    with a.producer() as rt:
        ack = rt.request(request_event(x))[0]
        assert ack["ok"] is True and ack["seq"] == 7, ack
        req_id = ack["event_id"]
        assert wait_until(lambda: pending(a, x) == [req_id], 5), status(a, x)
        assert metric(a, "cluster_fills_total") > fills, "the request did not come through a hole: not the late path"
        code, body = answer_v1(cc, x, req_id, "late but here")
        assert code == 200, body
        push = wait_push(rt)
        assert push["request_event_id"] == req_id and push["event_id"] == body["event_id"], push
    assert metric(a, "ingest_awaits_missed_total") == 0
