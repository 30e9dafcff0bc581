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
        st, h, body = http_get(d.port, "/health")
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
    assert wait_until(lambda: http_get(d.port, "/health")[0] == 200, timeout=5)
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
