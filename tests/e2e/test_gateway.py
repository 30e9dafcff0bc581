"""The crew gateway (SPEC §9): runtimes serve crews over the Unix socket, clients kick them off over
HTTP. Seed 002's own client (seed_clients/crewai_client.py, verbatim) runs kickoff_sync and a batch of 100
with max_concurrent=10 against two runtimes of concurrency 4, one killed mid-way; seed 003's requests
example reads /v1/runs/{id}/events. The runtimes are gw_runtime.py (socket + NDJSON)."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time

import requests

from conftest import mkdtemp
from csutil import Producer, RawWS, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "seed_clients"))

import crewai_client  # noqa: E402  (seed 002's client, verbatim)
from gw_runtime import Runtime  # noqa: E402

KEY = "seed-key-8c1d2e"
AUTH = {"Authorization": "Bearer " + KEY}


def base(d):
    return "http://127.0.0.1:%d" % d.port


def get(d, path, **kw):
    return requests.get(base(d) + path, headers=kw.pop("headers", AUTH), timeout=10, **kw)


def post(d, path, body, **kw):
    return requests.post(base(d) + path, headers=kw.pop("headers", AUTH), timeout=10,
                         **({"data": body} if isinstance(body, (str, bytes)) else {"json": body}), **kw)


def status(d, xid):
    r = get(d, "/%s/status" % xid)
    assert r.status_code == 200, r.text
    return r.json()


def gateway_daemon(make_daemon, **gateway):
    return make_daemon({"auth": {"api_key": KEY}, "gateway": gateway})


def metrics(d):
    out = {}
    for line in get(d, "/metrics").text.splitlines():
        if line.startswith("crewstream_gateway_"):
            k, v = line.split()
            out[k[len("crewstream_gateway_"):]] = float(v)
    return out


def test_serve_kickoff_ack_and_status(make_daemon):
    d = gateway_daemon(make_daemon)
    # The ops' errors, as every op answers them.
    with Producer(d.sock) as p:
        bad = p.request({"op": "serve"}, {"op": "serve", "crew": "a b"},
                        {"op": "serve", "crew": "c", "concurrency": 0},
                        {"op": "serve", "crew": "c", "inputs": "topic"},
                        {"op": "kickoff_ack"}, {"op": "kickoff_ack", "execution_id": "nope"})
        assert [r["error"] for r in bad] == ["missing_field", "invalid_field", "invalid_field", "invalid_field",
                                             "missing_field", "not_found"], bad
        assert "concurrency" in bad[2]["detail"]
    # Nobody serves: GET /inputs has no crew to speak of.
    r = get(d, "/inputs")
    assert r.status_code == 503 and r.json()["error"] == "unavailable", r.text
    rt = Runtime(d.sock, "research", 2, inputs=("topic", "audience"), ack=False)
    try:
        assert rt.served.wait(5), rt.errors
        assert rt.replies[0] == {"ok": True, "op": "serve", "crew": "research"}
        assert get(d, "/inputs").json() == {"inputs": ["topic", "audience"]}
        crews = get(d, "/v1/crews").json()
        assert crews["crews"][0]["crew"] == "research" and crews["crews"][0]["concurrency"] == 2
        assert crews["crews"][0]["busy"] == 0 and len(crews["crews"][0]["runtimes"]) == 1
        # Bodies validated with clear 400s.
        for body, word in (("not json", "JSON object"), ({"inputs": [1]}, "inputs"),
                           ({"inputs": {"topic": "x"}}, "audience"), ({"inputs": {}, "crew": 7}, "crew")):
            r = post(d, "/kickoff", body)
            assert r.status_code == 400 and word in r.json()["detail"], (body, r.text)
        # A kickoff: 200 with its id, pending at once, pushed to the runtime.
        r = post(d, "/kickoff", {"inputs": {"topic": "AI", "audience": "devs"}})
        assert r.status_code == 200, r.text
        xid = r.json()["kickoff_id"]
        assert len(xid) == 36
        assert status(d, xid)["status"] == "pending"
        assert wait_until(lambda: len(rt.kickoffs) == 1, 5)
        assert rt.kickoffs[0] == {"op": "kickoff", "execution_id": xid, "crew": "research",
                                  "inputs": {"topic": "AI", "audience": "devs"}}
        assert get(d, "/v1/crews").json()["crews"][0]["busy"] == 1
        # Acknowledged (twice: the same answer), run, finished: the runtime is free again.
        with Producer(d.sock) as other:
            assert other.request({"op": "kickoff_ack", "execution_id": xid})[0]["error"] == "conflict"
        rt.ack = True
        rt._on_kickoff(rt.kickoffs[0])
        assert wait_until(lambda: xid in rt.done, 5), rt.replies
        st = status(d, xid)
        assert st["status"] == "completed" and st["result"] == {"output": "report on AI"}, (st, rt.replies)
        assert wait_until(lambda: get(d, "/v1/crews").json()["crews"][0]["busy"] == 0, 5)
        m = metrics(d)
        assert m["kickoffs_total"] == 1 and m["acked_total"] == 1 and m["acks_refused_total"] >= 2, m
    finally:
        rt.close()
    # The connection's end takes its crew with it.
    assert wait_until(lambda: get(d, "/v1/crews").json()["crews"] == [], 5)


def test_kickoff_scope(make_daemon):
    d = make_daemon({"auth": {"tokens": [
        {"name": "reader", "token": "tok-read", "scopes": ["read"], "executions": ["*"]},
        {"name": "starter", "token": "tok-kick", "scopes": ["kickoff"], "executions": ["*"]}]}})
    body = {"inputs": {}, "crew": "x"}
    assert post(d, "/kickoff", body, headers={}).status_code == 401
    r = post(d, "/kickoff", body, headers={"Authorization": "Bearer tok-read"})
    assert r.status_code == 403 and "kickoff" in r.json()["detail"], r.text
    assert get(d, "/v1/crews", headers={"Authorization": "Bearer tok-read"}).status_code == 403
    assert get(d, "/v1/crews", headers={"Authorization": "Bearer tok-kick"}).status_code == 200
    assert post(d, "/kickoff", body, headers={"Authorization": "Bearer tok-kick"}).status_code == 200


def test_503_when_nobody_serves_and_the_queue_is_full(make_daemon):
    d = gateway_daemon(make_daemon, queue=2, queue_timeout_s=1)
    ids = []
    for _ in range(2):
        r = post(d, "/kickoff", {"inputs": {"topic": "x"}, "crew": "ghost"})
        assert r.status_code == 200, r.text
        ids.append(r.json()["kickoff_id"])
    r = post(d, "/kickoff", {"inputs": {"topic": "x"}, "crew": "ghost"})
    assert r.status_code == 503 and r.json()["error"] == "unavailable" and "gateway.queue" in r.json()["detail"]
    assert get(d, "/v1/crews").json()["crews"][0]["queued"] == 2
    # Nobody served it within gateway.queue_timeout_s: each fails, and a polling client sees why.
    assert wait_until(lambda: all(status(d, x)["status"] == "error" for x in ids), 5)
    assert "queue_timeout_s" in status(d, ids[0])["error_message"]
    m = metrics(d)
    assert m["refused_full_total"] == 1 and m["queue_timeouts_total"] == 2, m
    # With no default crew and nothing served, a kickoff without "crew" is 503 too.
    r = post(d, "/kickoff", {"inputs": {}})
    assert r.status_code == 503 and "default_crew" in r.json()["detail"], r.text


def test_ack_timeout_goes_to_another_runtime(make_daemon):
    d = gateway_daemon(make_daemon, ack_timeout_s=1)
    mute = Runtime(d.sock, "c", 1, ack=False)
    assert mute.served.wait(5)
    xid = post(d, "/kickoff", {"inputs": {"topic": "t"}}).json()["kickoff_id"]
    assert wait_until(lambda: len(mute.kickoffs) == 1, 5)
    good = Runtime(d.sock, "c", 1)
    try:
        assert good.served.wait(5)
        assert wait_until(lambda: xid in good.done, 8), (good.kickoffs, good.replies)
        assert status(d, xid)["status"] == "completed"
        # The late ack is refused: it is not the mute runtime's to run any more.
        mute.ack = True
        mute._on_kickoff(mute.kickoffs[0])
        assert wait_until(lambda: mute.refused == [xid], 5)
        assert metrics(d)["redispatched_timeout_total"] == 1
    finally:
        mute.close()
        good.close()


def test_seed_client_kickoff_sync(make_daemon):
    d = gateway_daemon(make_daemon, default_crew="research")
    rt = Runtime(d.sock, "research", 2)
    try:
        assert rt.served.wait(5)
        client = crewai_client.CrewAIClient(base_url=base(d), token=KEY, poll_interval=0.2)
        assert client.get_inputs_sync() == {"inputs": ["topic"]}
        res = client.kickoff_sync({"topic": "AI Research"})
        assert res.is_success, res
        assert res.result["output"] == "report on AI Research"
        # The client can see run.completed before the runtime has read the daemon's reply to it.
        assert wait_until(lambda: res.kickoff_id in rt.done, 5), rt.replies
    finally:
        rt.close()


def read_log(path):
    try:
        with open(path) as f:
            return [line.split() for line in f.read().splitlines() if line]
    except FileNotFoundError:
        return []


def spawn_runtime(d, name, tmp, *extra):
    log = os.path.join(tmp, name + ".log")
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "gw_runtime.py"), d.sock, "research", "4", log,
                             "--run-s", "0.3"] + list(extra), stderr=subprocess.PIPE)
    return proc, log


def test_seed_client_batch_with_a_runtime_killed(make_daemon):
    """kickoff_batch of 100 with max_concurrent=10 against two runtimes of concurrency 4; one stops
    acknowledging after 6 kickoffs and is killed holding some: they go to the other, none runs twice."""
    d = gateway_daemon(make_daemon, ack_timeout_s=60)  # re-dispatch here comes from the lost connection
    tmp = mkdtemp()
    a, alog = spawn_runtime(d, "a", tmp)
    b, blog = spawn_runtime(d, "b", tmp, "--ack-limit", "6")
    try:
        assert wait_until(lambda: ["serve"] in read_log(alog) and ["serve"] in read_log(blog), 10)
        client = crewai_client.CrewAIClient(base_url=base(d), token=KEY, poll_interval=0.3)
        out = {}
        t = threading.Thread(target=lambda: out.update(
            results=asyncio.run(client.kickoff_batch([{"topic": "Topic %d" % i} for i in range(100)],
                                                     max_concurrent=10))), daemon=True)
        t.start()

        def b_holds_and_is_done():
            lines = read_log(blog)
            acked = {x[1] for x in lines if x[0] == "ack"}
            done = {x[1] for x in lines if x[0] == "done"}
            return any(x[0] == "holding" for x in lines) and len(acked) == 6 and acked == done

        assert wait_until(b_holds_and_is_done, 60), read_log(blog)
        b.kill()
        b.wait(5)
        t.join(120)
        assert not t.is_alive(), "the batch did not finish"
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
            p.wait(5)
    results = out["results"]
    assert len(results) == 100
    bad = [r for r in results if not r.is_success]
    assert not bad, bad[:3]
    alines, blines = read_log(alog), read_log(blog)
    held = [x[1] for x in blines if x[0] == "holding"]
    assert held, blines
    done = [x[1] for x in alines + blines if x[0] == "done"]
    assert len(done) == len(set(done)) == 100, "some kickoff ran twice or never"
    assert {r.kickoff_id for r in results} == set(done)
    assert set(held) <= {x[1] for x in alines if x[0] == "done"}  # the held ones ran on the other runtime
    m = metrics(d)
    # Every kickoff b held went to a; so did any the daemon had sent b that b had not read (logged) yet when
    # it was killed: at most b's concurrency (4) in all, and each dispatched once more.
    assert len(held) <= m["redispatched_lost_total"] <= 4 and m["kickoffs_total"] == 100, m
    assert m["dispatched_total"] == 100 + m["redispatched_lost_total"], m


def test_seed003_requests_example_reads_v1_runs_events(make_daemon):
    d = gateway_daemon(make_daemon)
    d.post_ok({"execution_id": "run_abc123", "type": "run.started", "payload": {"run_id": "run_abc123"}},
              {"execution_id": "run_abc123", "type": "log", "payload": {"level": "info", "message": "hi"}})
    env = dict(os.environ, CREWSTREAM_HOSTPORT="127.0.0.1:%d" % d.port)
    proc = subprocess.Popen([sys.executable, "-u", os.path.join(HERE, "seed_clients", "runs_events.py"),
                             "run_abc123", KEY], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    lines = []
    threading.Thread(target=lambda: [lines.append(x.decode().rstrip()) for x in iter(proc.stdout.readline, b"")],
                     daemon=True).start()
    try:
        assert wait_until(lambda: len(lines) >= 2, 10), (lines, proc.poll())
        d.post_ok({"execution_id": "run_abc123", "type": "run.completed",
                   "payload": {"run_id": "run_abc123", "result": "ok"}})
        assert wait_until(lambda: len(lines) >= 3, 10), lines
    finally:
        proc.kill()
        proc.wait(5)
    assert lines == ["run.started {'run_id': 'run_abc123'}", "log {'level': 'info', 'message': 'hi'}",
                     "run.completed {'run_id': 'run_abc123', 'result': 'ok'}"]
    # The other aliases answer as /v1/executions/{id}/… do.
    r = get(d, "/v1/runs/run_abc123/poll", params={"timeout": "0"})
    assert r.status_code == 200 and r.json()["events"][-1]["type"] == "run.completed", r.text
    assert get(d, "/v1/runs/run_abc123/ws").status_code == 426
    ws = RawWS(d.port, "/v1/runs/run_abc123/ws", headers=AUTH)
    try:
        assert ws.status == 101
        assert json.loads(ws.next_message())["type"] == "run.started"
    finally:
        ws.close()


def test_seed_client_is_verbatim():
    """Guard against drift: the client is seed 002's code block, byte for byte, when the seed is at hand."""
    seeds = [os.path.join(HERE, "..", "..", "..", "shared", "seeds"), "/work/shared/seeds"]
    for s in seeds:
        if os.path.isdir(s):
            name = [f for f in os.listdir(s) if f.startswith("002_")]
            if name:
                with open(os.path.join(s, name[0])) as f:
                    seed = f.read()
                with open(os.path.join(HERE, "seed_clients", "crewai_client.py")) as f:
                    mine = f.read()
                assert mine.strip() in seed
                return
    with open(os.path.join(HERE, "seed_clients", "crewai_client.py")) as f:
        text = f.read()
    for st in ('f"{self.base_url}/kickoff"', 'kickoff_id = resp.json()["kickoff_id"]',
               'f"{self.base_url}/{kickoff_id}/status"', 'f"{self.base_url}/inputs"'):
        assert st in text


def test_a_run_finished_right_after_start_is_kept(make_daemon):
    """A kickoff's run can finish within the daemon's first tick (500 ms): it is kept for store.retain_s,
    not expired at that tick as if it had finished at time 0."""
    d = gateway_daemon(make_daemon)
    d.post_ok({"execution_id": "quick-1", "type": "run.started"},
              {"execution_id": "quick-1", "type": "run.completed", "result": {"output": "fast"}})
    time.sleep(1.2)  # past the first ticks, which expire what retain_s says is due
    st = status(d, "quick-1")
    assert st["status"] == "completed" and st["result"] == {"output": "fast"}, st


def test_kickoff_webhooks_registered_or_refused(make_daemon):
    """POST /kickoff's crewWebhookUrl gets the end of the run; a URL outside webhooks.allow is a 400
    invalid_field naming the field, and no kickoff starts."""
    from test_webhooks import Receiver

    rec = Receiver()
    try:
        d = make_daemon({"auth": {"api_key": KEY}, "webhooks": {"allow": [rec.url + "/"]}})
        rt = Runtime(d.sock, "research", 2)
        try:
            assert rt.served.wait(5), rt.errors
            r = post(d, "/kickoff", {"inputs": {"topic": "AI"}, "crewWebhookUrl": "http://192.0.2.1/crew"})
            assert r.status_code == 400 and r.json()["error"] == "invalid_field", r.text
            assert "crewWebhookUrl" in r.json()["detail"], r.text
            assert metrics(d)["kickoffs_total"] == 0
            r = post(d, "/kickoff", {"inputs": {"topic": "AI"}, "crewWebhookUrl": rec.url + "/crew"})
            assert r.status_code == 200, r.text
            xid = r.json()["kickoff_id"]
            got = rec.wait(1, "/crew")
            body = json.loads(got[0]["body"])
            assert body["execution_id"] == xid and body["type"] == "run.completed", body
        finally:
            rt.close()
    finally:
        rec.close()
