"""crewstream.runtime against the real daemon's gateway (SPEC §9): serve a crew, take kickoffs
from POST /kickoff, ack them, run the handler, post the run's end; failures reported; the serve
registration made again after a cut connection. Skipped when the daemon has no gateway."""

import json
import socket

import pytest

from csutil import http_json, wait_until
from test_producer import answer, history, open_request

from crewstream import RefusedError
from crewstream.runtime import Runtime, current_kickoff


def http_post(d, path, obj):
    body = json.dumps(obj)
    s = socket.create_connection(("127.0.0.1", d.port), timeout=5)
    try:
        s.sendall(
            (
                "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                "Connection: close\r\n\r\n%s" % (path, len(body), body)
            ).encode()
        )
        data = b""
        while True:
            c = s.recv(65536)
            if not c:
                break
            data += c
    finally:
        s.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(rest) if rest.strip().startswith(b"{") else rest


def start_or_skip(rt):
    try:
        rt.start()
    except RefusedError as e:
        rt.close()
        if e.code == "bad_op":
            pytest.skip("this daemon has no crew gateway (SPEC §9): %s" % e.detail)
        raise


def status(d, kid):
    st, _, body = http_json(d.port, "/%s/status" % kid)
    assert st == 200, body
    return body


def wait_status(d, kid, want, timeout=15.0):
    got = wait_until(lambda: status(d, kid)["status"] in want, timeout)
    s = status(d, kid)
    assert got, "status %r, wanted %r" % (s, want)
    return s


def test_serve_kickoff_run(daemon):
    seen = []

    def handler(k):
        assert current_kickoff.get() is k
        seen.append((k.execution_id, k.crew, k.inputs))
        k.post("task_started", task_id="research")
        k.post("task_completed", task_id="research", output="notes on " + k.inputs["topic"])
        return {"summary": "report on " + k.inputs["topic"]}

    rt = Runtime("research", handler, inputs=["topic"], concurrency=2, socket_path=daemon.sock)
    start_or_skip(rt)
    try:
        st, _, inputs = http_json(daemon.port, "/inputs")
        assert st == 200 and inputs["inputs"] == ["topic"]
        st, body = http_post(daemon, "/kickoff", {"inputs": {"topic": "AI"}, "crew": "research"})
        assert st == 200, body
        kid = body["kickoff_id"]
        s = wait_status(daemon, kid, ("completed", "error"))
        assert s["status"] == "completed" and s["result"] == {"summary": "report on AI"}, s
        assert seen == [(kid, "research", {"topic": "AI"})]
        types = [e["type"] for e in history(daemon, kid)]
        assert types == ["task_started", "task_completed", "run.completed"]
        st, _, crews = http_json(daemon.port, "/v1/crews")
        assert st == 200 and "research" in json.dumps(crews)
    finally:
        rt.close()
    assert rt.runs and rt.runs[0]["outcome"] == "completed"


def test_handler_failure_reported(daemon):
    def handler(k):
        raise RuntimeError("the model is down")

    rt = Runtime("fails", handler, socket_path=daemon.sock)
    start_or_skip(rt)
    try:
        st, body = http_post(daemon, "/kickoff", {"inputs": {}, "crew": "fails"})
        assert st == 200, body
        s = wait_status(daemon, body["kickoff_id"], ("completed", "error"))
        assert s["status"] == "error" and "the model is down" in s["error_message"]
        ev = [e for e in history(daemon, body["kickoff_id"]) if e["type"] == "run.failed"][0]
        assert "RuntimeError" in ev["stack_trace"]
    finally:
        rt.close()


def test_kickoff_with_ask_and_reconnect(daemon):
    """A run that asks a person; the runtime's connection is cut between two kickoffs: serve is
    registered again and the second kickoff is taken too."""

    def handler(k):
        a = k.ask("Publish about %s?" % k.inputs["topic"], task_id="review")
        k.post("crew_kickoff_completed", result="published" if a.is_approve else "dropped")
        return "ignored: the run posted its own end"

    rt = Runtime("asker", handler, inputs=["topic"], socket_path=daemon.sock)
    start_or_skip(rt)
    try:
        st, body = http_post(daemon, "/kickoff", {"inputs": {"topic": "Rust"}, "crew": "asker"})
        assert st == 200, body
        kid = body["kickoff_id"]
        rid = open_request(daemon, kid)
        assert answer(daemon, kid, rid, "yes")[0] == 200
        s = wait_status(daemon, kid, ("completed", "error"))
        assert s["status"] == "completed" and s["result"] == "published"
        assert [e["type"] for e in history(daemon, kid)].count("run.completed") == 0

        rt.producer._break_connection()
        wait_until(lambda: rt.producer.stats["reconnects"] >= 1, 5)
        st, body = http_post(daemon, "/kickoff", {"inputs": {"topic": "Go"}, "crew": "asker"})
        assert st == 200, body
        kid2 = body["kickoff_id"]
        rid2 = open_request(daemon, kid2)
        assert answer(daemon, kid2, rid2, "no", approve=False)[0] == 200
        s = wait_status(daemon, kid2, ("completed", "error"))
        assert s["result"] == "dropped"
    finally:
        rt.close()
