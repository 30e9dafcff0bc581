"""Limits and doors no other test walks through (SPEC §6, §4): limits.max_clients answers 503 and
the daemon takes connections again once some leave; limits.max_producers refuses an ingest
connection with a forbidden line; a WebSocket resumes from its Last-Event-ID header; GET / serves
the dashboard."""

import json
import socket
import time

from csutil import SSEClient, ev, http_get, run, wait_until, ws_collect, ws_connect


def test_max_clients_answers_503_and_recovers(make_daemon):
    d = make_daemon({"limits": {"max_clients": 3}})
    streams = [SSEClient(d.port, "/v1/executions/mc/events") for _ in range(3)]
    try:
        assert [s.status for s in streams] == [200, 200, 200]
        st, h, body = http_get(d.port, "/v1/executions")
        assert st == 503, (st, body)
        assert json.loads(body)["error"] == "unavailable"
        assert "max_clients" in json.loads(body)["detail"]
        # The three streams are undisturbed.
        d.post_ok(ev("mc", "log", n=1))
        for s in streams:
            assert s.collect(1, timeout=5)[0].json()["n"] == 1
    finally:
        streams[0].close()
    # One left: a new client is let in again.
    assert wait_until(lambda: http_get(d.port, "/v1/executions")[0] == 200, timeout=5)
    for s in streams[1:]:
        s.close()


def test_max_producers_refused_with_a_line(make_daemon):
    d = make_daemon({"limits": {"max_producers": 2}})
    a, b = d.connect_ingest(), d.connect_ingest()
    try:
        time.sleep(0.2)
        c = d.connect_ingest()
        c.settimeout(5)
        line = c.makefile("rb").readline()
        reply = json.loads(line)
        assert reply["ok"] is False and reply["error"] == "forbidden"
        assert "max_producers" in reply["detail"]
        assert c.recv(1) == b""  # and closed
        c.close()
        # The two connected producers still work.
        a.sendall(json.dumps(ev("mp", "log")).encode() + b"\n")
        assert json.loads(a.makefile("rb").readline())["ok"] is True
    finally:
        a.close()
        b.close()
    # A slot freed: a new producer gets in.
    assert wait_until(lambda: d.post(ev("mp", "log"))[0].get("ok") is True, timeout=5)


def test_websocket_resumes_from_last_event_id_header(daemon):
    daemon.post_ok(*[ev("wr", "log", i=i) for i in range(5)])
    with SSEClient(daemon.port, "/v1/executions/wr/events") as s:
        cursor = s.collect(5, timeout=5)[1].id  # the second event's cursor

    async def go():
        ws = await ws_connect(daemon.ws + "/v1/executions/wr/ws", extra_headers={"Last-Event-ID": cursor})
        try:
            return await ws_collect(ws, 3, timeout=5)
        finally:
            await ws.close()

    got = run(go())
    assert [e["i"] for e in got] == [2, 3, 4]
    assert all(e["type"] != "stream.gap" for e in got)


def test_dashboard_is_served(daemon):
    st, h, body = http_get(daemon.port, "/")
    assert st == 200
    assert h.get("content-type", "").startswith("text/html")
    assert b"<html" in body.lower() and b"crewstream" in body.lower()


def _hold_poll(port, path, token):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n" % (path, token)).encode())
    return s


def test_sighup_applies_tokens_and_limits_to_what_is_open(make_daemon):
    """SPEC §6: SIGHUP reloads tokens and limits without dropping connections, and the new limits
    hold at once: a raised max_clients beyond what libmicrohttpd was started with, lower rings."""
    import signal

    tok = lambda name, t: {"name": name, "token": t, "scopes": ["read", "publish"], "executions": ["*"]}
    d = make_daemon({"auth": {"tokens": [tok("a", "A")]}, "limits": {"max_clients": 2},
                     "store": {"ring_events": 8}})
    d.post_ok(*[ev("rl", "log", i=i) for i in range(8)])
    old = [SSEClient(d.port, "/v1/executions/rl/events?since=now", headers={"Authorization": "Bearer A"})
           for _ in range(2)]
    held = []
    try:
        assert [s.status for s in old] == [200, 200]
        assert http_get(d.port, "/v1/executions", {"Authorization": "Bearer A"})[0] == 503
        d.config["auth"]["tokens"] = [tok("b", "B")]
        d.config["limits"]["max_clients"] = 60
        d.config["store"]["ring_events"] = 3
        with open(d.cfg_path, "w") as f:
            json.dump(d.config, f)
        d.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: http_get(d.port, "/v1/executions", {"Authorization": "Bearer B"})[0] == 200,
                          timeout=5)
        # Tokens: the old one is refused from now on, the new one works.
        path = "/v1/executions/rl/events"
        assert http_get(d.port, path + "?since=now", {"Authorization": "Bearer A"}, timeout=3)[0] == 401
        # Rings: the retained history is the last three.
        with SSEClient(d.port, path, headers={"Authorization": "Bearer B"}) as s:
            assert [f.json()["i"] for f in s.collect(3, timeout=5)] == [5, 6, 7]
        # max_clients 60: more held long-polls than libmicrohttpd was started for (2 + 16).
        held = [_hold_poll(d.port, "/v1/executions/lp/poll?timeout=20", "B") for _ in range(30)]
        time.sleep(0.3)
        assert http_get(d.port, "/v1/executions", {"Authorization": "Bearer B"})[0] == 200
        # The streams opened before the reload were not dropped.
        d.post_ok(ev("rl", "log", i=8))
        for s in old:
            assert s.collect(1, timeout=5)[0].json()["i"] == 8
        # And the held polls are answered by a publish, every one.
        d.post_ok(ev("lp", "log", i=99))
        for s in held:
            s.settimeout(5)
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
    finally:
        for s in old + held:
            s.close()


def test_answer_body_nesting_is_bounded(make_daemon):
    """limits.json_depth holds for request bodies too: an answer nested deeper is refused, and one
    within it is taken."""
    import requests

    d = make_daemon({"limits": {"json_depth": 8}})
    deep = "[" * 20 + "]" * 20
    body = '{"task_id":"t","human_feedback":%s,"is_approve":true}' % deep
    r = requests.post(d.base + "/v1/executions/jd/human-input", data=body, timeout=5)
    assert r.status_code == 400 and r.json()["error"] == "bad_request" and "json_depth" in r.json()["detail"]
    d.post_ok(ev("jd", "human_input_required", task_id="t", prompt="ok?"))
    r = requests.post(d.base + "/v1/executions/jd/human-input",
                      json={"task_id": "t", "human_feedback": "fine", "is_approve": True, "meta": [[[1]]]},
                      timeout=5)
    assert r.status_code == 200, r.text
