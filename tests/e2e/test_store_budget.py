"""The store at store.max_bytes (issue 10, findings 1, 6, 7): a full store refuses what does not fit
with a clear error instead of reading freed memory, open human-input requests stay within their
half of the budget, and an awaited request is never evicted from under its runtime."""

import os
import time

import requests

from csutil import SSEClient, ev, rss_kib


def metrics(d):
    out = {}
    for line in requests.get(d.base + "/metrics", timeout=5).text.splitlines():
        if line.startswith("crewstream_"):
            k, v = line.split()
            out[k[len("crewstream_"):]] = float(v)
    return out


def alive(d):
    with d.producer() as p:
        assert p.request({"op": "ping"})[0] == {"ok": True, "op": "pong"}


def test_reported_lines_refused_not_crashing(make_daemon):
    """run.started, run.completed, a 40 KB request at 64 KiB; then a 60 KB answer to a finished run."""
    d = make_daemon({"store": {"max_bytes": 65536}, "http": {"metrics_public": True}})
    with d.producer() as p:
        r = p.request(ev("x", "run.started"), ev("x", "run.completed"),
                      ev("x", "human_input_required", task_id="t", prompt="p" * 40000))
        assert r[0]["ok"] and r[1]["ok"]
        assert r[2]["ok"] is False and r[2]["error"] == "too_large", r[2]
        assert "store.max_bytes" in r[2]["detail"]
        # A small request fits, and is awaited by this connection.
        r = p.request(ev("y", "run.started"), ev("y", "human_input_required", task_id="t", event_id="q"),
                      ev("y", "run.completed"))
        assert all(x["ok"] for x in r), r
        # One answer of 60 KB to the finished execution: refused, the request stays open.
        a = requests.post(d.base + "/v1/executions/y/human-input",
                          json={"event_id": "q", "human_feedback": "f" * 60000, "is_approve": True}, timeout=5)
        assert a.status_code == 413 and a.json()["error"] == "too_large", a.text
        assert p.pushes == []
        a = requests.post(d.base + "/v1/executions/y/human-input",
                          json={"event_id": "q", "human_feedback": "ok", "is_approve": True}, timeout=5)
        assert a.status_code == 200, a.text
        assert p.request({"op": "ping"})[0]["op"] == "pong"
    m = metrics(d)
    assert m["store_refused_too_large_total"] == 2
    assert m["store_bytes"] <= m["store_max_bytes"] == 65536
    alive(d)
    d.stop()
    assert "AddressSanitizer" not in d.stderr_text()


def test_open_requests_bounded(make_daemon):
    """Requests of 50 KB into a watched execution against 1 MiB: most are refused (unavailable), the
    store and the daemon's memory stay bounded, and the status renders only what is held."""
    # An ASan build keeps freed memory in quarantine (256 MB by default): keep it small, so RSS
    # measures what the daemon holds.
    asan = os.environ.get("ASAN_OPTIONS", "detect_leaks=1") + ":quarantine_size_mb=8"
    d = make_daemon({"store": {"max_bytes": 1 << 20}, "http": {"metrics_public": True}},
                    env={"ASAN_OPTIONS": asan})
    prompt = "p" * 50000
    with SSEClient(d.port, "/v1/executions/big/events") as sse, d.producer(timeout=10) as p:
        before = rss_kib(d.proc.pid)
        refused = stored = 0
        for i in range(200):
            r = p.request(ev("big", "human_input_required", task_id="t%d" % i, prompt=prompt))[0]
            if r["ok"]:
                stored += 1
            else:
                assert r["error"] == "unavailable" and "store.max_bytes" in r["detail"], r
                refused += 1
        grown = rss_kib(d.proc.pid) - before
        m = metrics(d)
        assert m["store_bytes"] <= m["store_max_bytes"]
        assert m["store_pinned_bytes"] <= m["store_max_bytes"] / 2
        assert m["human_input_open"] == stored and 1 <= stored <= 10 and refused == 200 - stored
        assert m["store_refused_full_total"] == refused
        assert grown < 40 * 1024, "RSS grew %d KiB" % grown  # 200 x 50 KB stored would be ~30 MB
        t0 = time.monotonic()
        st = requests.get(d.base + "/v1/executions/big", timeout=5).json()
        assert len(st["pending_human_input"]) == stored and time.monotonic() - t0 < 2
        # Answers make room: the next request fits again.
        a = requests.post(d.base + "/v1/executions/big/human-input",
                          json={"task_id": "t0", "is_approve": True}, timeout=5)
        assert a.status_code == 200, a.text
        r = p.request(ev("big", "human_input_required", task_id="again", prompt=prompt))[0]
        assert r["ok"], r
    alive(d)


def test_awaited_request_survives_eviction(make_daemon):
    """A runtime awaits its request; a flood of other executions fills the store many times over and
    retention passes; the answer still reaches the runtime."""
    d = make_daemon({"store": {"max_bytes": 200000, "retain_s": 1}, "http": {"metrics_public": True}})
    with d.producer() as runtime, d.producer(timeout=10) as flood:
        r = runtime.request(ev("job-1", "run.started"),
                            ev("job-1", "human_input_required", task_id="review", event_id="ask"),
                            ev("job-1", "run.completed"))  # even a finished run keeps an open request
        assert all(x["ok"] for x in r), r
        for i in range(40):
            lines = [ev("other-%d-%d" % (i, j), "log", text="x" * 2000) for j in range(20)]
            assert all(x["ok"] for x in flood.request(*lines)), i
        time.sleep(2.2)  # past retain_s: expiry runs about once a second
        m = metrics(d)
        assert m["events_evicted_total"] > 0 and m["store_bytes"] <= 200000
        a = requests.post(d.base + "/v1/executions/job-1/human-input",
                          json={"event_id": "ask", "human_feedback": "go", "is_approve": True}, timeout=5)
        assert a.status_code == 200, a.text
        deadline = time.monotonic() + 5
        while not runtime.pushes and time.monotonic() < deadline:
            runtime.request({"op": "ping"})
            time.sleep(0.05)
        assert runtime.pushes and runtime.pushes[0]["request_event_id"] == "ask"
        assert runtime.pushes[0]["human_feedback"] == "go"
    alive(d)
