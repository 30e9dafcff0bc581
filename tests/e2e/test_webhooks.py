"""Webhooks out (SPEC §9, issue 13): a real HTTP receiver on loopback (http.server, started by each
test) gets the events, with bearer/basic authentication and Standard Webhooks signatures verified by
Python's hmac; retries (500 then 200, a timeout, a refused connection, 429 with Retry-After) keep the
order; 410 and a redirect are dead letters at once; a URL outside webhooks.allow is refused naming the
field; a slow receiver does not slow ingest."""

import base64
import hashlib
import hmac
import http.server
import json
import os
import socket
import threading
import time

from csutil import ev, http_json, wait_until

SECRET_BYTES = b"crewstream-test-key-0123456789ab"
SECRET = "whsec_" + base64.b64encode(SECRET_BYTES).decode()


class Receiver:
    """A loopback HTTP server that records every request and answers from a script per path: a list of
    (status, headers, delay_s) used in order, the last one repeated."""

    def __init__(self):
        self.requests = []
        self.script = {}
        self.lock = threading.Lock()
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                with rec.lock:
                    rec.requests.append(
                        {"path": self.path, "headers": dict(self.headers), "body": body, "t": time.monotonic()}
                    )
                    steps = rec.script.get(self.path) or [(200, {}, 0)]
                    step = steps.pop(0) if len(steps) > 1 else steps[0]
                status, headers, delay = step
                if delay:
                    time.sleep(delay)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "2")
                self.end_headers()
                try:
                    self.wfile.write(b"ok")
                except OSError:
                    pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def on(self, path, *steps):
        with self.lock:
            self.script[path] = list(steps)

    def got(self, path=None):
        with self.lock:
            return [r for r in self.requests if path is None or r["path"] == path]

    def events(self, path=None):
        return [json.loads(r["body"]) for r in self.got(path)]

    def wait(self, n, path=None, timeout=10.0):
        assert wait_until(lambda: len(self.got(path)) >= n, timeout=timeout), "got %d of %d requests to %s: %r" % (
            len(self.got(path)),
            n,
            path,
            [(r["path"], r["body"][:80]) for r in self.got()],
        )
        return self.got(path)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def start(make_daemon, rec, endpoints=None, **webhooks):
    cfg = {"webhooks": dict({"allow": [rec.url + "/"], "endpoints": endpoints or []}, **webhooks)}
    return make_daemon(cfg)


def hooks(d):
    status, _, body = http_json(d.port, "/v1/webhooks")
    return status, body


def endpoint(d, name):
    status, body = hooks(d)
    assert status == 200, body
    for e in body["endpoints"]:
        if e["name"] == name:
            return e
    raise AssertionError("no endpoint %s in %r" % (name, body))


def register(d, x, **fields):
    replies = d.post(dict({"op": "webhooks", "execution_id": x}, **fields))
    return replies[0]


def resume(d, body):
    import requests

    return requests.post(d.base + "/resume", json=body, timeout=5)


def test_seed_001_flow_bearer_basic_and_routing(make_daemon):
    rec = Receiver()
    try:
        d = start(make_daemon, rec)
        x = "hitl-flow-1"
        r = register(
            d,
            x,
            humanInputWebhook={
                "url": rec.url + "/hitl",
                "authentication": {"strategy": "bearer", "token": "your-webhook-secret-token"},
            },
        )
        assert r.get("ok") is True, r
        d.post_ok(ev(x, "run.started"), ev(x, "task_started", task_id="research_task"))
        d.post_ok(ev(x, "human_input_required", task_id="research_task", context="draft one", prompt="ok?"))
        got = rec.wait(1, "/hitl")
        assert got[0]["headers"]["Authorization"] == "Bearer your-webhook-secret-token"
        assert got[0]["headers"]["Content-Type"] == "application/json"
        body = json.loads(got[0]["body"])
        assert body["execution_id"] == x and body["task_id"] == "research_task" and body["context"] == "draft one"
        assert body["type"] == "human_input_required" and body["seq"] == 3
        # The body is the event exactly as streams carry it.
        status, _, polled = http_json(d.port, "/v1/executions/%s/poll?timeout=0" % x)
        assert status == 200 and [e for e in polled["events"] if e["seq"] == 3] == [body], polled
        # /resume: not approved, with the three URLs and the human webhook again, now with basic auth.
        req_id = body["event_id"]
        resp = resume(
            d,
            {
                "execution_id": x,
                "task_id": "research_task",
                "human_feedback": "add more",
                "is_approve": False,
                "humanInputWebhook": {
                    "url": rec.url + "/hitl",
                    "authentication": {"strategy": "basic", "username": "u1", "password": "p:w"},
                },
                "taskWebhookUrl": rec.url + "/task",
                "stepWebhookUrl": rec.url + "/step",
                "crewWebhookUrl": rec.url + "/crew",
            },
        )
        assert resp.status_code == 200, resp.text
        assert req_id
        d.post_ok(
            ev(x, "agent.started", agent_id="a1"),
            ev(x, "tool.called", tool="search"),
            ev(x, "human_input_required", task_id="research_task", context="draft two"),
        )
        got = rec.wait(2, "/hitl")
        assert got[1]["headers"]["Authorization"] == "Basic " + base64.b64encode(b"u1:p:w").decode()
        assert json.loads(got[1]["body"])["context"] == "draft two"
        resp = resume(
            d,
            {
                "execution_id": x,
                "task_id": "research_task",
                "human_feedback": "good",
                "is_approve": True,
                "taskWebhookUrl": rec.url + "/task",
                "stepWebhookUrl": rec.url + "/step",
                "crewWebhookUrl": rec.url + "/crew",
            },
        )
        assert resp.status_code == 200, resp.text
        d.post_ok(
            ev(x, "task_completed", task_id="research_task", output="final"),
            ev(x, "agent.completed", agent_id="a1"),
            ev(x, "run.completed", result="done"),
        )
        crew = rec.wait(1, "/crew")
        assert [e["type"] for e in rec.events("/crew")] == ["run.completed"]
        assert json.loads(crew[0]["body"])["result"] == "done"
        rec.wait(2, "/task")
        assert [e["type"] for e in rec.events("/task")] == ["task_completed", "agent.completed"]
        steps = rec.wait(3, "/step")
        assert [e["type"] for e in rec.events("/step")] == ["agent.started", "tool.called", "agent.completed"]
        assert "Authorization" not in steps[0]["headers"]
        time.sleep(0.3)
        assert len(rec.got("/hitl")) == 2  # nothing else went to the human webhook
        assert wait_until(lambda: endpoint(d, "crew:" + x)["delivered"] == 1)
        e = endpoint(d, "crew:" + x)
        assert e["delivered"] == 1 and e["dead"] == 0 and e["source"] == "execution"
    finally:
        rec.close()


def test_signature_verified_with_python_hmac(make_daemon):
    rec = Receiver()
    try:
        d = start(
            make_daemon,
            rec,
            [{"name": "signed", "url": rec.url + "/signed", "types": ["run.*"], "secret": SECRET}],
        )
        d.post_ok(ev("sig-1", "log", message="not for it"), ev("sig-1", "run.started"), ev("sig-1", "run.completed"))
        got = rec.wait(2, "/signed")
        for r in got:
            h = r["headers"]
            msg = ("%s.%s." % (h["webhook-id"], h["webhook-timestamp"])).encode() + r["body"]
            want = base64.b64encode(hmac.new(SECRET_BYTES, msg, hashlib.sha256).digest()).decode()
            assert h["webhook-signature"] == "v1," + want
            assert h["webhook-id"] == json.loads(r["body"])["event_id"]
            assert abs(int(h["webhook-timestamp"]) - time.time()) < 30
        assert [e["type"] for e in rec.events("/signed")] == ["run.started", "run.completed"]
        # The receiver's response bodies ("ok") are read and dropped, never written to the daemon's stdout.
        with open(os.path.join(d.tmp, "stdout.1.txt"), "rb") as f:
            assert b"ok" not in f.read()
    finally:
        rec.close()


def test_500_then_200_retried_in_order(make_daemon):
    rec = Receiver()
    try:
        rec.on("/r", (500, {}, 0), (500, {}, 0), (200, {}, 0))
        d = start(make_daemon, rec, [{"name": "r", "url": rec.url + "/r", "types": ["log"]}])
        d.post_ok(*[ev("retry-1", "log", n=i) for i in range(5)])
        rec.wait(7, "/r", timeout=15)
        seqs = [e["seq"] for e in rec.events("/r")]
        assert seqs == [1, 1, 1, 2, 3, 4, 5], seqs
        t = [r["t"] for r in rec.got("/r")]
        assert t[1] - t[0] >= 0.45 and t[2] - t[1] >= 0.9, t  # back-off: 1 s, then 2 s, with jitter
        assert wait_until(lambda: endpoint(d, "r")["delivered"] == 5)
        e = endpoint(d, "r")
        assert e["delivered"] == 5 and e["retried"] == 2 and e["failed"] == 2 and e["dead"] == 0
        assert e["last_error"] == "HTTP 500"
        status, text = http_get_text(d, "/metrics")
        assert "\ncrewstream_webhook_retries_total 2\n" in text
        assert "\ncrewstream_webhook_deliveries_total 5\n" in text
        assert "\ncrewstream_webhook_failures_total 2\n" in text
        assert "\ncrewstream_webhook_latency_ms_count 5\n" in text
    finally:
        rec.close()


def http_get_text(d, path):
    import requests

    r = requests.get(d.base + path, timeout=5)
    return r.status_code, r.text


def test_timeout_then_delivered(make_daemon):
    rec = Receiver()
    try:
        rec.on("/slow", (200, {}, 2.5), (200, {}, 0))
        d = start(make_daemon, rec, [{"name": "slow", "url": rec.url + "/slow"}], timeout_s=1)
        d.post_ok(ev("to-1", "log", n=1), ev("to-1", "log", n=2))
        rec.wait(3, "/slow", timeout=15)
        assert [e["seq"] for e in rec.events("/slow")] == [1, 1, 2]
        assert wait_until(lambda: endpoint(d, "slow")["delivered"] == 2)
        e = endpoint(d, "slow")
        assert e["retried"] == 1 and e["delivered"] == 2
        assert "imeout" in e["last_error"], e
    finally:
        rec.close()


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_refused_then_dead_after_max_attempts(make_daemon):
    rec = Receiver()
    try:
        url = "http://127.0.0.1:%d/nobody" % closed_port()
        d = start(make_daemon, rec, [{"name": "gone", "url": url}], max_attempts=2)
        d.post_ok(ev("ref-1", "log"))
        assert wait_until(lambda: endpoint(d, "gone")["dead"] == 1, timeout=10)
        e = endpoint(d, "gone")
        dl = e["dead_letters"][0]
        assert dl["execution_id"] == "ref-1" and dl["seq"] == 1 and dl["attempts"] == 2
        assert "connect" in dl["reason"].lower() and "max_attempts" in dl["reason"], dl
        assert e["retried"] == 1 and e["failed"] == 2
        assert "dead letter" in d.stderr_text()
    finally:
        rec.close()


def test_410_dead_at_once_next_delivered(make_daemon):
    rec = Receiver()
    try:
        rec.on("/g", (410, {}, 0), (200, {}, 0))
        d = start(make_daemon, rec, [{"name": "g", "url": rec.url + "/g"}])
        d.post_ok(ev("gone-1", "log", n=1), ev("gone-1", "log", n=2))
        rec.wait(2, "/g")
        assert wait_until(lambda: endpoint(d, "g")["delivered"] == 1)
        assert [e["seq"] for e in rec.events("/g")] == [1, 2]
        e = endpoint(d, "g")
        assert e["dead"] == 1 and e["retried"] == 0 and e["delivered"] == 1
        assert e["dead_letters"][0]["reason"] == "HTTP 410" and e["dead_letters"][0]["attempts"] == 1
    finally:
        rec.close()


def test_429_retry_after_honoured(make_daemon):
    rec = Receiver()
    try:
        rec.on("/busy", (429, {"Retry-After": "2"}, 0), (200, {}, 0))
        d = start(make_daemon, rec, [{"name": "busy", "url": rec.url + "/busy"}])
        d.post_ok(ev("busy-1", "log"))
        got = rec.wait(2, "/busy", timeout=10)
        assert got[1]["t"] - got[0]["t"] >= 1.9, got[1]["t"] - got[0]["t"]
        assert wait_until(lambda: endpoint(d, "busy")["delivered"] == 1)
        assert endpoint(d, "busy")["delivered"] == 1
    finally:
        rec.close()


def test_redirect_not_followed(make_daemon):
    rec = Receiver()
    try:
        rec.on("/moved", (302, {"Location": rec.url + "/elsewhere"}, 0))
        d = start(make_daemon, rec, [{"name": "moved", "url": rec.url + "/moved"}])
        d.post_ok(ev("redir-1", "log"))
        assert wait_until(lambda: endpoint(d, "moved")["dead"] == 1, timeout=10)
        time.sleep(0.3)
        assert rec.got("/elsewhere") == []
        assert len(rec.got("/moved")) == 1
        assert "redirect" in endpoint(d, "moved")["dead_letters"][0]["reason"]
    finally:
        rec.close()


def test_url_outside_allow_refused_naming_the_field(make_daemon):
    rec = Receiver()
    try:
        d = start(make_daemon, rec)
        d.post_ok(ev("allow-1", "human_input_required", task_id="t"))
        resp = resume(
            d,
            {
                "execution_id": "allow-1",
                "is_approve": True,
                "human_feedback": "x",
                "taskWebhookUrl": rec.url + "/task",
                "crewWebhookUrl": "http://127.0.0.1:1/crew",
            },
        )
        assert resp.status_code == 400, resp.text
        err = resp.json()
        assert err["error"] == "invalid_field" and "crewWebhookUrl" in json.dumps(err), err
        # All or nothing: the request stays open, the allowed URL was not registered either.
        status, body = hooks(d)
        assert body["endpoints"] == [], body
        # A prefix matches only at a boundary; user@ is refused; over the socket too.
        r = register(d, "allow-1", stepWebhookUrl=rec.url + "0/x")
        assert r.get("ok") is not True and "stepWebhookUrl" in r.get("detail", json.dumps(r)), r
        r = register(d, "allow-1", stepWebhookUrl="http://x@127.0.0.1:%d/" % rec.port)
        assert r.get("ok") is not True, r
        r = register(d, "allow-1", humanInputWebhook={"url": rec.url + "/h", "authentication": {"strategy": "x"}})
        assert r.get("ok") is not True and "humanInputWebhook.authentication" in json.dumps(r), r
    finally:
        rec.close()


def test_nothing_allowed_by_default(make_daemon):
    d = make_daemon({})
    r = d.post({"op": "webhooks", "execution_id": "x1", "crewWebhookUrl": "http://127.0.0.1:9/"})[0]
    assert r.get("ok") is not True and "webhooks.allow" in json.dumps(r), r


def test_slow_receiver_does_not_slow_ingest(make_daemon):
    rec = Receiver()
    try:
        rec.on("/slow", (200, {}, 1.0))
        d = start(make_daemon, rec, [{"name": "all", "url": rec.url + "/slow"}], timeout_s=5)
        # Many executions, each with a cursor waiting behind a receiver that takes 1 s per request.
        for i in range(20):
            d.post_ok(*[ev("slow-%d" % i, "log", n=k) for k in range(10)])
        lat = []
        with d.producer() as p:
            for _ in range(30):
                t0 = time.monotonic()
                p.send({"op": "ping"})
                p.read(1)
                lat.append(time.monotonic() - t0)
                time.sleep(0.01)
        lat.sort()
        assert lat[-1] < 0.5, lat[-5:]  # a receiver taking 1 s per request must not show here
        e = endpoint(d, "all")
        assert e["in_flight"] <= 16 and e["lag"] > 0, e
    finally:
        rec.close()


def test_scopes(make_daemon):
    rec = Receiver()
    try:
        toks = [
            {"name": "all", "token": "tok-all", "scopes": ["read", "respond"], "executions": ["*"]},
            {"name": "a", "token": "tok-a", "scopes": ["read", "respond"], "executions": ["a*"]},
        ]
        d = make_daemon({"auth": {"tokens": toks}, "webhooks": {"allow": [rec.url + "/"]}})
        status, _, _ = http_json(d.port, "/v1/webhooks")
        assert status == 401
        status, _, _ = http_json(d.port, "/v1/webhooks", headers={"Authorization": "Bearer tok-a"})
        assert status == 403
        status, _, body = http_json(d.port, "/v1/webhooks", headers={"Authorization": "Bearer tok-all"})
        assert status == 200 and body["endpoints"] == []
        import requests

        d.post_ok(ev("b1", "human_input_required", task_id="t"))
        r = requests.post(
            d.base + "/resume",
            json={"execution_id": "b1", "is_approve": True, "human_feedback": "x", "crewWebhookUrl": rec.url + "/c"},
            headers={"Authorization": "Bearer tok-a"},
            timeout=5,
        )
        assert r.status_code == 403, r.text
        status, _, body = http_json(d.port, "/v1/webhooks", headers={"Authorization": "Bearer tok-all"})
        assert body["endpoints"] == [], body
    finally:
        rec.close()


def test_events_that_left_the_ring_are_a_stream_gap_dead_letter(make_daemon):
    rec = Receiver()
    try:
        rec.on("/gap", (500, {}, 0), (500, {}, 0), (200, {}, 0))
        eps = [
            {"name": "gap", "url": rec.url + "/gap", "executions": ["gap-1"]},
            {"name": "burst", "url": rec.url + "/burst", "executions": ["gap-2"]},
        ]
        d = make_daemon({"store": {"ring_events": 4}, "webhooks": {"endpoints": eps}})
        # seq 1 is held while it is retried; 2..6 leave the 4-event ring meanwhile.
        d.post_ok(ev("gap-1", "log", n=0))
        rec.wait(1, "/gap")
        d.post_ok(*[ev("gap-1", "log", n=i) for i in range(1, 10)])
        # A burst larger than the ring within one loop turn: 1..6 are gone before any request.
        d.post_ok(*[ev("gap-2", "log", n=i) for i in range(10)])
        assert wait_until(lambda: endpoint(d, "gap")["delivered"] == 5, timeout=15), endpoint(d, "gap")
        assert wait_until(lambda: endpoint(d, "burst")["delivered"] == 4, timeout=15), endpoint(d, "burst")
        assert [e["seq"] for e in rec.events("/gap")] == [1, 1, 1, 7, 8, 9, 10]
        assert [e["seq"] for e in rec.events("/burst")] == [7, 8, 9, 10]
        for name in ("gap", "burst"):
            e = endpoint(d, name)
            assert e["gaps"] == 1 and e["dead"] == 1, e
            dl = e["dead_letters"][0]
            assert dl["type"] == "stream.gap" and "seq 7" in dl["reason"], dl
        status, text = http_get_text(d, "/metrics")
        assert "\ncrewstream_webhook_gaps_total 2\n" in text
        assert "dead letter" in d.stderr_text()
    finally:
        rec.close()


# ---- bounds, each driven to its limit -----------------------------------------------------------------


def wh_metrics(d):
    import requests

    out = {}
    for line in requests.get(d.base + "/metrics", timeout=5).text.splitlines():
        if line.startswith("crewstream_webhook"):
            k, v = line.split()
            out[k[len("crewstream_"):]] = float(v)
    return out


def test_in_flight_bounded_per_endpoint(make_daemon):
    """webhooks.max_in_flight: a slow receiver and 12 executions with events; at most 3 requests are
    ever in flight to the endpoint, and every event is delivered."""
    rec = Receiver()
    try:
        rec.on("/all", (200, {}, 0.4))
        d = start(make_daemon, rec, endpoints=[{"name": "all", "url": rec.url + "/all", "types": ["*"],
                                                "executions": ["*"]}], max_in_flight=3, max_executions=64)
        for i in range(12):
            d.post_ok(ev("fl-%d" % i, "log"), ev("fl-%d" % i, "log"))
        peak = 0
        deadline = time.monotonic() + 20
        while len(rec.got("/all")) < 24 and time.monotonic() < deadline:
            peak = max(peak, wh_metrics(d)["webhook_in_flight"])
            time.sleep(0.05)
        assert len(rec.got("/all")) == 24
        assert 1 <= peak <= 3, peak
        # Order kept per execution.
        for i in range(12):
            assert [e["seq"] for e in rec.events("/all") if e["execution_id"] == "fl-%d" % i] == [1, 2]
    finally:
        rec.close()


def test_executions_per_endpoint_bounded_overflow_dead_lettered(make_daemon):
    """webhooks.max_executions: with the receiver stalled, the executions with undelivered events are
    capped; the first event of one more is a dead letter `overflow` (logged, counted), never silent."""
    rec = Receiver()
    try:
        rec.on("/all", (200, {}, 2.0))
        d = start(make_daemon, rec, endpoints=[{"name": "all", "url": rec.url + "/all", "types": ["*"],
                                                "executions": ["*"]}], max_in_flight=1, max_executions=2)
        for i in range(4):
            d.post_ok(ev("ov-%d" % i, "log"))
        assert wait_until(lambda: wh_metrics(d)["webhook_overflow_total"] >= 1, timeout=5), wh_metrics(d)
        m = wh_metrics(d)
        assert m["webhook_cursors"] <= 2 and m["webhook_dead_letters_total"] >= 1, m
        assert "overflow" in json.dumps(endpoint(d, "all")), endpoint(d, "all")
    finally:
        rec.close()


def test_registrations_bounded(make_daemon):
    """webhooks.max_registrations: one execution more than the bound is refused 503 unavailable, and
    the registrations made before it stand."""
    rec = Receiver()
    try:
        d = start(make_daemon, rec, max_registrations=2)
        assert register(d, "rg-1", crewWebhookUrl=rec.url + "/crew").get("ok") is True
        assert register(d, "rg-2", crewWebhookUrl=rec.url + "/crew").get("ok") is True
        r = register(d, "rg-3", crewWebhookUrl=rec.url + "/crew")
        assert r.get("ok") is False and r["error"] == "unavailable", r
        assert wh_metrics(d)["webhook_registrations"] == 2
        d.post_ok(ev("rg-2", "run.completed", result="x"))
        assert json.loads(rec.wait(1, "/crew")[0]["body"])["execution_id"] == "rg-2"
    finally:
        rec.close()
