"""The human-in-the-loop circle (SPEC §3 await and pushes, §4 answers): a runtime posts
human_input_required, a person answers by POST /resume, POST /v1/executions/{id}/human-input or a
WebSocket message, and the answer is stored, fanned out and pushed to the waiting runtime."""

import asyncio
import json
import time

import pytest
import requests

import websockets

from csutil import SSEClient, ev, ws_next

TOKENS = {
    "auth": {
        "tokens": [
            {"name": "reader", "token": "R", "scopes": ["read"], "executions": ["*"]},
            {"name": "human", "token": "H", "scopes": ["read", "respond"], "executions": ["*"]},
            {"name": "runtime", "token": "P", "scopes": ["publish"], "executions": ["job-*"]},
        ]
    }
}


def request_event(x, task="review", **kw):
    return ev(x, "human_input_required", task_id=task, crew_id="crew-1", agent_id="writer",
              prompt=kw.pop("prompt", "Approve the draft?"), context="draft v1", **kw)


def wait_push(producer, n=1, timeout=5.0):
    """Reads until the producer has n pushed answers (pushes are not replies)."""
    deadline = time.monotonic() + timeout
    while len(producer.pushes) < n:
        if time.monotonic() > deadline:
            raise AssertionError("no push within %.1fs (got %r)" % (timeout, producer.pushes))
        producer.sock.sendall(b'{"op":"ping"}\n')
        assert producer.read(1, timeout=timeout)[0] == {"ok": True, "op": "pong"}
        time.sleep(0.05)
    return producer.pushes[n - 1]


def post_json(d, path, body, token=None):
    h = {"Authorization": "Bearer " + token} if token else {}
    return requests.post(d.base + path, json=body, headers=h, timeout=5)


def answer_by_route(d, route, x, req_id, task, feedback, approve, token=None):
    """Answers through one of the three routes; returns (status, body)."""
    if route == "resume":
        r = post_json(d, "/resume", {"execution_id": x, "task_id": task, "human_feedback": feedback,
                                     "is_approve": approve}, token)
        return r.status_code, r.json()
    if route == "v1":
        r = post_json(d, "/v1/executions/%s/human-input" % x,
                      {"event_id": req_id, "human_feedback": feedback, "is_approve": approve}, token)
        return r.status_code, r.json()

    async def over_ws():
        url = d.ws + "/v1/executions/%s/ws" % x + ("?token=" + token if token else "")
        async with websockets.connect(url) as ws:
            # History first: the request itself.
            first = (await ws_next(ws))
            assert first["type"] == "human_input_required"
            await ws.send(json.dumps({"task_id": task, "human_feedback": feedback, "is_approve": approve}))
            while True:
                m = (await ws_next(ws))
                if m.get("type") in ("ack", "error"):
                    return (200 if m["type"] == "ack" else 409), m

    return asyncio.run(over_ws())


@pytest.mark.parametrize("route", ["resume", "v1", "ws"])
def test_round_trip_every_route(daemon, route):
    x = "rt-" + route
    sse = SSEClient(daemon.port, "/v1/executions/%s/events" % x)
    with daemon.producer() as rt:
        ack = rt.request(request_event(x))[0]
        assert ack["ok"] is True and ack["seq"] == 1
        req_id = ack["event_id"]
        status, body = answer_by_route(daemon, route, x, req_id, "review", "Looks good", True)
        assert status == 200, body
        new_id = body["event_id"]
        assert new_id != req_id and body.get("request_event_id") == req_id
        push = wait_push(rt)
        assert push == {"op": "human_input", "execution_id": x, "request_event_id": req_id, "task_id": "review",
                        "human_feedback": "Looks good", "is_approve": True, "event_id": new_id, "seq": 2}
    # Stored and fanned out: subscribers see the request, then the completion.
    got = [f.json() for f in sse.collect(2, timeout=5)]
    sse.close()
    assert [e["type"] for e in got] == ["human_input_required", "human_input_completed"]
    done = got[1]
    assert done["event_id"] == new_id and done["request_event_id"] == req_id and done["seq"] == 2
    assert done["human_feedback"] == "Looks good" and done["is_approve"] is True
    assert done["crew_id"] == "crew-1" and done["agent_id"] == "writer" and done["task_id"] == "review"


def test_answer_given_while_runtime_was_away_is_delivered_on_await(daemon):
    x = "away"
    with daemon.producer() as rt:
        req_id = rt.request(request_event(x))[0]["event_id"]
    # The runtime is gone; a person answers.
    status, body = answer_by_route(daemon, "v1", x, req_id, "review", "ship it", True)
    assert status == 200
    # It reconnects and awaits: the answer is pushed right behind the ack.
    with daemon.producer() as rt2:
        ack = rt2.request({"op": "await", "execution_id": x, "event_id": req_id})[0]
        assert ack["ok"] is True and ack["op"] == "await" and ack["answered"] is True
        push = wait_push(rt2)
        assert push["request_event_id"] == req_id and push["human_feedback"] == "ship it"
        assert push["event_id"] == body["event_id"]


def test_await_before_the_answer_and_from_another_connection(daemon):
    x = "waiter"
    with daemon.producer() as rt, daemon.producer() as other:
        req_id = rt.request(request_event(x))[0]["event_id"]
        ack = other.request({"op": "await", "execution_id": x, "event_id": req_id})[0]
        assert ack["answered"] is False
        assert answer_by_route(daemon, "resume", x, req_id, "review", "no", False)[0] == 200
        a, b = wait_push(rt), wait_push(other)
        assert a == b and a["is_approve"] is False and a["human_feedback"] == "no"


def test_error_statuses(make_daemon):
    d = make_daemon(TOKENS)
    x = "job-1"
    with d.producer() as rt:
        req_id = rt.request(request_event(x))[0]["event_id"]
    body = {"event_id": req_id, "human_feedback": "f", "is_approve": True}
    # No token: 401; read-only token: 403; respond token: 200; again: 409.
    assert post_json(d, "/v1/executions/%s/human-input" % x, body).status_code == 401
    r = post_json(d, "/v1/executions/%s/human-input" % x, body, "R")
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    r = post_json(d, "/resume", {"execution_id": x, "task_id": "review", "human_feedback": "f", "is_approve": True}, "R")
    assert r.status_code == 403
    assert post_json(d, "/v1/executions/%s/human-input" % x, body, "H").status_code == 200
    r = post_json(d, "/v1/executions/%s/human-input" % x, body, "H")
    assert r.status_code == 409 and r.json()["error"] == "conflict"
    r = post_json(d, "/resume", {"execution_id": x, "task_id": "review", "human_feedback": "f", "is_approve": True}, "H")
    assert r.status_code == 409
    # Unknown execution: 404; a request that is not open (here: unknown) in a known one: 409.
    r = post_json(d, "/v1/executions/nope/human-input", body, "H")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = post_json(d, "/v1/executions/%s/human-input" % x, dict(body, event_id="nope"), "H")
    assert r.status_code == 409
    # Malformed answers: 400 naming the field; a bare {} approves nothing.
    r = post_json(d, "/v1/executions/%s/human-input" % x, {"task_id": "review", "is_approve": "yes"}, "H")
    assert r.status_code == 400 and "is_approve" in r.json()["detail"]
    r = post_json(d, "/v1/executions/%s/human-input" % x, {"task_id": "review"}, "H")
    assert r.status_code == 400 and "is_approve" in r.json()["detail"]
    r = post_json(d, "/v1/executions/%s/human-input" % x, {"is_approve": True}, "H")
    assert r.status_code == 400 and "event_id or task_id" in r.json()["detail"]
    r = requests.post(d.base + "/resume", data="not json", headers={"Authorization": "Bearer H"}, timeout=5)
    assert r.status_code == 400
    r = post_json(d, "/resume", {"task_id": "review"}, "H")
    assert r.status_code == 400 and "execution_id" in r.json()["detail"]

    # Over WebSocket: a read-only token may watch but not answer.
    async def ws_forbidden():
        async with websockets.connect(d.ws + "/ws/human-input/%s?token=R" % x) as ws:
            await ws_next(ws)
            await ws_next(ws)  # history: request and completion
            await ws.send(json.dumps({"task_id": "review", "human_feedback": "x"}))
            return (await ws_next(ws))

    m = asyncio.run(ws_forbidden())
    assert m["type"] == "error" and m["error"] == "forbidden"


def test_http_ingest(make_daemon):
    d = make_daemon(TOKENS)
    url = d.base + "/v1/events"
    one = {"execution_id": "job-7", "type": "run.started"}
    assert requests.post(url, json=one, timeout=5).status_code == 401
    assert requests.post(url, json=one, headers={"Authorization": "Bearer R"}, timeout=5).status_code == 403
    r = requests.post(url, json=one, headers={"Authorization": "Bearer P"}, timeout=5)
    assert r.status_code == 200 and r.json()["ok"] is True and r.json()["seq"] == 1
    # Outside the token's executions: forbidden, per line.
    r = requests.post(url, json={"execution_id": "other", "type": "x"}, headers={"Authorization": "Bearer P"}, timeout=5)
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    # NDJSON: one reply line per line, in order, good and bad mixed.
    body = "\n".join([json.dumps({"execution_id": "job-7", "type": "log"}), "bad",
                      json.dumps({"execution_id": "job-7", "type": "log", "event_id": "e1"}),
                      json.dumps({"execution_id": "job-7", "type": "log", "event_id": "e1"})]) + "\n"
    r = requests.post(url, data=body, headers={"Authorization": "Bearer P"}, timeout=5)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    replies = [json.loads(line) for line in r.text.splitlines()]
    assert [x.get("ok") for x in replies] == [True, False, True, True]
    assert replies[1]["error"] == "invalid_json"
    assert replies[2]["seq"] == 3 and replies[3] == dict(replies[2], duplicate=True)
    # One object pretty-printed over several lines is one event, stored compact on one line.
    pretty = json.dumps({"execution_id": "job-7", "type": "log", "message": "a\nb", "meta": {"k": [1, 2]}},
                        indent=2) + "\n"
    r = requests.post(url, data=pretty, headers={"Authorization": "Bearer P"}, timeout=5)
    assert r.status_code == 200 and r.json()["ok"] is True and r.json()["seq"] == 4, r.text
    with SSEClient(d.port, "/v1/executions/job-7/events?since_seq=3", headers={"Authorization": "Bearer R"}) as s:
        got = json.loads(s.collect(1, timeout=5)[0].data)
    assert got["message"] == "a\nb" and got["meta"] == {"k": [1, 2]} and got["seq"] == 4
    # await needs the socket.
    r = requests.post(url, json={"op": "await", "execution_id": "job-7", "event_id": "e1"},
                      headers={"Authorization": "Bearer P"}, timeout=5)
    assert r.status_code == 400 and r.json()["error"] == "bad_op"
    assert requests.post(url, data="", headers={"Authorization": "Bearer P"}, timeout=5).status_code == 400


def status(d, x):
    r = requests.get(d.base + "/v1/executions/" + x, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def test_status_machine_through_a_run_with_rejection_and_retry(daemon):
    x = "lifecycle"
    # Before the first event: pending, on both status routes (a poll right after kickoff).
    s = status(daemon, x)
    assert s["status"] == "pending" and s["events"] == 0 and s["last_seq"] == 0 and s["result"] is None
    assert s["first_event_at"] is None and s["pending_human_input"] == []
    seed = requests.get(daemon.base + "/%s/status" % x, timeout=5).json()
    assert seed["status"] == "pending" and seed["state"] == "pending" and seed["execution_id"] == x
    assert requests.get(daemon.base + "/v1/executions?status=pending", timeout=5).json()["executions"] == []
    daemon.post_ok(ev(x, "crew_kickoff_started"))
    s = status(daemon, x)
    assert s["status"] == "running" and s["pending_human_input"] == [] and s["events"] == 1
    daemon.post_ok(ev(x, "task_started", task_id="t1"), ev(x, "agent_execution_started", agent="Researcher"),
                   ev(x, "tool_usage_started", tool="search"), ev(x, "tool_usage_error", error="timeout"),
                   ev(x, "agent_execution_completed", agent="Researcher"))
    # The seed's retry loop: ask, reject, ask again for the same task, approve.
    for attempt, approve in enumerate([False, False, True]):
        with daemon.producer() as rt:
            req = rt.request(request_event(x, task="t1", prompt="attempt %d" % attempt))[0]
            s = status(daemon, x)
            assert s["status"] == "pending_human_input"
            assert [p["event_id"] for p in s["pending_human_input"]] == [req["event_id"]]
            assert s["pending_human_input"][0]["prompt"] == "attempt %d" % attempt
            seed = requests.get(daemon.base + "/%s/status" % x, timeout=5).json()
            assert seed["status"] == "running" and seed["state"] == "pending_human_input"
            code, body = answer_by_route(daemon, "resume", x, None, "t1", "try %d" % attempt, approve)
            assert code == 200, body
            push = wait_push(rt)
            assert push["is_approve"] is approve and push["request_event_id"] == req["event_id"]
        assert status(daemon, x)["status"] == "running"
    daemon.post_ok(ev(x, "task_completed", task_id="t1"),
                   ev(x, "crew_kickoff_completed", result={"output": "the report"}, duration_ms=45200))
    s = status(daemon, x)
    assert s["status"] == "completed" and s["result"] == {"output": "the report"} and s["error_message"] is None
    assert s["progress"] == {"tasks": {"seen": 1, "done": 1, "failed": 0},
                             "agents": {"seen": 1, "done": 1, "failed": 0},
                             "tools": {"calls": 1, "errors": 1}}
    assert s["last_seq"] == s["events"] == 14
    seed = requests.get(daemon.base + "/%s/status" % x, timeout=5).json()
    assert seed["status"] == "completed" and seed["result"]["output"] == "the report"


def test_flow_lifecycle(daemon):
    """flow_* is the lifecycle too: the crews a flow runs end inside it; the flow's end is the run's."""
    x = "flow-1"
    daemon.post_ok(ev(x, "flow_started", flow_name="Pipeline"), ev(x, "crew_kickoff_started"),
                   ev(x, "crew_kickoff_completed", result="step 1"), ev(x, "method_execution_finished"))
    assert status(daemon, x)["status"] == "running"
    daemon.post_ok(ev(x, "flow_finished", result={"final": True}))
    s = status(daemon, x)
    assert s["status"] == "completed" and s["result"] == {"final": True}
    daemon.post_ok(ev("flow-2", "flow_started"), ev("flow-2", "flow_failed", error="no route"))
    s = status(daemon, "flow-2")
    assert s["status"] == "error" and s["error_message"] == "no route"


def test_failed_canceled_and_the_list(daemon):
    daemon.post_ok(ev("f1", "run.started"), ev("f1", "run.failed", error="boom", stack_trace="..."))
    daemon.post_ok(ev("c1", "run.started"), ev("c1", "run.canceled"))
    daemon.post_ok(ev("r1", "run.started"))
    assert status(daemon, "f1")["status"] == "error" and status(daemon, "f1")["error_message"] == "boom"
    assert status(daemon, "c1")["status"] == "canceled"
    seed = requests.get(daemon.base + "/c1/status", timeout=5).json()
    assert seed["status"] == "error" and seed["state"] == "canceled"  # the seed's enum has no "canceled"
    lst = requests.get(daemon.base + "/v1/executions", timeout=5).json()["executions"]
    assert [e["execution_id"] for e in lst] == ["r1", "c1", "f1"]  # newest first
    lst = requests.get(daemon.base + "/v1/executions?status=error", timeout=5).json()["executions"]
    assert [e["execution_id"] for e in lst] == ["f1"]
    lst = requests.get(daemon.base + "/v1/executions?limit=1", timeout=5).json()["executions"]
    assert [e["execution_id"] for e in lst] == ["r1"]
    for bad in ("status=nope", "limit=0", "limit=x"):
        assert requests.get(daemon.base + "/v1/executions?" + bad, timeout=5).status_code == 400


def test_list_is_filtered_by_the_token(make_daemon):
    d = make_daemon({"auth": {"tokens": [
        {"name": "a", "token": "A", "scopes": ["read"], "executions": ["team-a.*"]},
        {"name": "root", "token": "Z", "scopes": ["admin"], "executions": ["*"]}]}})
    d.post_ok(ev("team-a.1", "run.started"), ev("team-b.1", "run.started"))
    r = requests.get(d.base + "/v1/executions", headers={"Authorization": "Bearer A"}, timeout=5)
    assert [e["execution_id"] for e in r.json()["executions"]] == ["team-a.1"]
    assert requests.get(d.base + "/v1/executions/team-b.1", headers={"Authorization": "Bearer A"},
                        timeout=5).status_code == 403
    r = requests.get(d.base + "/v1/executions", headers={"Authorization": "Bearer Z"}, timeout=5)
    assert len(r.json()["executions"]) == 2
    assert requests.get(d.base + "/v1/executions", timeout=5).status_code == 401


@pytest.mark.parametrize("route", ["resume", "v1", "ws"])
def test_completion_names_who_answered(make_daemon, route):
    """The human_input_completed an answer publishes carries answered_by, the answering token's name, on
    every route (dashboards show who answered); with auth open nobody is named."""
    d = make_daemon(TOKENS)
    x = "job-who-" + route
    with d.producer() as rt:
        req_id = rt.request(request_event(x))[0]["event_id"]
        status, _ = answer_by_route(d, route, x, req_id, "review", "looks good", True, token="H")
        assert status == 200
        push = wait_push(rt)
    evs = requests.get(d.base + "/v1/executions/%s/poll?timeout=0" % x, headers={"Authorization": "Bearer R"},
                       timeout=5).json()["events"]
    done = [e for e in evs if e["type"] == "human_input_completed"]
    assert len(done) == 1 and done[0]["answered_by"] == "human", done
    assert push["event_id"] == done[0]["event_id"]


def test_completion_names_nobody_when_auth_is_open(daemon):
    x = "who-open"
    with daemon.producer() as rt:
        req_id = rt.request(request_event(x))[0]["event_id"]
        status, _ = answer_by_route(daemon, "v1", x, req_id, "review", "ok", True)
        assert status == 200
    evs = requests.get(daemon.base + "/v1/executions/%s/poll?timeout=0" % x, timeout=5).json()["events"]
    done = [e for e in evs if e["type"] == "human_input_completed"]
    assert len(done) == 1 and "answered_by" not in done[0], done
