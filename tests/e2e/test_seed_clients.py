"""The seed's three client examples (seeds/000: WebSocket, SSE, long-poll), run as they are
written against the real daemon: each must print exactly the human-input events, survive an
idle stretch longer than httpx's 5 s read timeout (the 4 s heartbeat), and work with an api_key.
The clients live in seed_clients/ (verbatim but for host/port and the usage line)."""

import ast
import os
import subprocess
import sys
import threading
import time

import pytest

from csutil import ev

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENTS = ("ws_client.py", "sse_client.py", "poll_client.py")
KEY = "seed-key-8c1d2e"

REQUIRED = ev(
    "exec-seed", "human_input_required", event_id="req-1", crew_id="crew-1", task_id="task-1", agent_id="agent-1",
    prompt="Approve the plan?", context="Plan: ship it on Friday", reason_flags={"ambiguity": True, "missing_field": False},
)
COMPLETED = ev(
    "exec-seed", "human_input_completed", event_id="done-1", crew_id="crew-1", task_id="task-1", agent_id="agent-1",
    human_feedback="Looks good, go ahead", is_approve=True, request_event_id="req-1",
)


class Client:
    """A seed client as a subprocess, its stdout collected line by line."""

    def __init__(self, script, port, execution_id, api_key=None):
        env = dict(os.environ, CREWSTREAM_HOSTPORT="127.0.0.1:%d" % port)
        argv = ["/usr/bin/python3", "-u", os.path.join(HERE, "seed_clients", script), execution_id]
        if api_key:
            argv.append(api_key)
        self.name = script
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.lines = []
        self.err = []
        self._t = threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True)
        self._e = threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True)
        self._t.start()
        self._e.start()

    @staticmethod
    def _read(pipe, out):
        for line in iter(pipe.readline, b""):
            out.append(line.decode("utf-8", "replace").rstrip("\n"))

    def wait_for(self, pred, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred(self.lines):
                return True
            if self.proc.poll() is not None:
                time.sleep(0.2)  # let the readers finish
                return pred(self.lines)
            time.sleep(0.05)
        return pred(self.lines)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=5)
        self._t.join(timeout=5)
        self._e.join(timeout=5)

    def stderr(self):
        return "\n".join(self.err)


def received(lines):
    """The dicts of the SSE/poll clients' "Received: {...}" lines (Python reprs)."""
    out = []
    for line in lines:
        assert line.startswith("Received: "), "unexpected output line %r" % line
        out.append(ast.literal_eval(line[len("Received: "):]))
    return out


def ws_expected():
    return [
        "Human input needed: " + REQUIRED["prompt"],
        "Context: " + REQUIRED["context"],
        "Input completed: " + COMPLETED["human_feedback"],
    ]


def check_received(lines, want_types):
    got = received(lines)
    assert [e["type"] for e in got] == want_types, got
    for e in got:
        src = REQUIRED if e["type"] == "human_input_required" else COMPLETED
        for k, v in src.items():
            assert e[k] == v, (k, e)
        assert e["execution_id"] == "exec-seed" and isinstance(e["seq"], int) and e["timestamp"]
    return got


@pytest.mark.parametrize("mode", ["open", "api_key"])
def test_seed_clients(make_daemon, mode):
    d = make_daemon({"auth": {"api_key": KEY}} if mode == "api_key" else None)
    key = KEY if mode == "api_key" else None
    d.post_ok(ev("exec-seed", "run.started"), REQUIRED, ev("exec-seed", "log", message="waiting for a human"))
    clients = {c: Client(c, d.port, "exec-seed", key) for c in CLIENTS}
    try:
        # History: the pending request reaches every client.
        assert clients["ws_client.py"].wait_for(lambda l: len(l) >= 2, 10), clients["ws_client.py"].stderr()
        for c in ("sse_client.py", "poll_client.py"):
            assert clients[c].wait_for(lambda l: len(l) >= 1, 10), (c, clients[c].stderr())
        # Non-HITL traffic, then an idle stretch longer than httpx's 5 s read timeout.
        d.post_ok(ev("exec-seed", "tool.called", tool="search"), ev("exec-seed", "agent.completed"))
        time.sleep(6.5)
        for c in clients.values():
            assert c.proc.poll() is None, "%s died while idle:\n%s" % (c.name, c.stderr())
        d.post_ok(COMPLETED, ev("exec-seed", "run.completed", result="done"))
        assert clients["ws_client.py"].wait_for(lambda l: len(l) >= 3, 8)
        for c in ("sse_client.py", "poll_client.py"):
            assert clients[c].wait_for(lambda l: len(l) >= 2, 8), (c, clients[c].lines, clients[c].stderr())
        time.sleep(4.5)  # two more poll rounds: nothing is printed twice
        for c in clients.values():
            assert c.proc.poll() is None, "%s exited:\n%s" % (c.name, c.stderr())
    finally:
        for c in clients.values():
            c.stop()
    for c in clients.values():
        assert "Traceback" not in c.stderr(), (c.name, c.stderr())
    assert clients["ws_client.py"].lines == ws_expected()
    sse = check_received(clients["sse_client.py"].lines, ["human_input_required", "human_input_completed"])
    polled = check_received(clients["poll_client.py"].lines, ["human_input_required", "human_input_completed"])
    assert sse == polled
    assert [e["seq"] for e in sse] == [2, 6]


def test_seed_clients_without_the_key(make_daemon):
    d = make_daemon({"auth": {"api_key": KEY}})
    d.post_ok(REQUIRED)
    clients = {c: Client(c, d.port, "exec-seed", "not-the-key") for c in CLIENTS}
    try:
        ws = clients["ws_client.py"]
        assert ws.wait_for(lambda l: ws.proc.poll() is not None, 10)
        assert ws.proc.returncode != 0 and "401" in ws.stderr(), ws.stderr()
        time.sleep(3)
        for c in clients.values():
            assert c.lines == [], (c.name, c.lines)
    finally:
        for c in clients.values():
            c.stop()


def test_seed_clients_are_verbatim():
    """Guard against drift: the seed's statements are all there, in order."""
    must = {
        "ws_client.py": ["async with websockets.connect(uri) as websocket:", "async for message in websocket:",
                         "if event['type'] == 'human_input_required':", 'print(f"Human input needed: {event[\'prompt\']}")',
                         'print(f"Context: {event[\'context\']}")', "elif event['type'] == 'human_input_completed':",
                         'print(f"Input completed: {event[\'human_feedback\']}")'],
        "sse_client.py": ["async with httpx.AsyncClient() as client:",
                          'async with client.stream("GET", url, headers=headers) as response:',
                          "async for line in response.aiter_lines():", 'if line.startswith("data: "):',
                          "event = json.loads(line[6:])", "if event.get('type') != 'heartbeat':",
                          'print(f"Received: {event}")'],
        "poll_client.py": ["response = await client.get(url, headers=headers, params=params)", "data = response.json()",
                           'for event in data.get("events", []):', 'print(f"Received: {event}")',
                           "last_event_id = event.get('event_id')", "await asyncio.sleep(2)  # Poll every 2 seconds"],
    }
    for name, stmts in must.items():
        with open(os.path.join(HERE, "seed_clients", name)) as f:
            text = f.read()
        pos = 0
        for st in stmts:
            i = text.find(st, pos)
            assert i >= 0, (name, st)
            pos = i
    assert sys.executable  # the clients themselves run under /usr/bin/python3
