"""The command-line tool `crewstream`, run as a user runs it (a subprocess with flags, stdin and
environment) against the real daemon: post (flags and NDJSON), tail (exact JSON lines, the tree
view, resuming through a broken connection), respond (a waiting demo, errors, tokens, the
interactive prompt on a terminal), ls and status, exit codes and one-line errors.

The tool is build/crewstream, or $CREWSTREAM_CLI (set by ctest)."""

import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import threading
import time

import pytest
import requests

from conftest import free_port
from csutil import SANITIZER_MARKS, TS_RE, UUID4_RE, SSEClient, ev, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
COMMANDS = ("post", "tail", "respond", "ls", "status", "demo")
ANSI_RE = re.compile(r"\x1b\[")
CLOCK = r"\[\d\d:\d\d:\d\d\]"


def cli_path():
    return os.path.abspath(os.environ.get("CREWSTREAM_CLI") or os.path.join(ROOT, "build", "crewstream"))


def cli_env(d=None, **extra):
    """The environment of one run: the daemon's URL and socket, no colour, no token unless given."""
    env = dict(os.environ)
    for k in ("CREWSTREAM_TOKEN", "CREWSTREAM_URL", "CREWSTREAM_SOCKET", "XDG_RUNTIME_DIR"):
        env.pop(k, None)
    env["NO_COLOR"] = "1"
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
    if d is not None:
        env["CREWSTREAM_URL"] = d.base
        env["CREWSTREAM_SOCKET"] = d.sock
    env.update({k: v for k, v in extra.items() if v is not None})
    return env


def check_clean(stderr):
    for mark in SANITIZER_MARKS:
        assert mark not in stderr, "the tool's stderr has a sanitizer report:\n" + stderr


def cli(d, *args, input=None, timeout=30, **env):
    """Runs `crewstream ARGS` to its end; returns the CompletedProcess (text)."""
    p = subprocess.run(
        [cli_path()] + list(args),
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(d, **env),
    )
    check_clean(p.stderr)
    return p


def one_line(p):
    """The single stderr line of a failed run (asserting there is exactly one)."""
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("crewstream: "), "expected one stderr line, got %r" % p.stderr
    return lines[0]


def events_of(d, x):
    """Every retained event of execution x, as the daemon stores them."""
    r = requests.get(d.base + "/v1/executions/%s/poll" % x, params={"timeout": 0}, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()["events"]


def status_of(d, x, token=None):
    h = {"Authorization": "Bearer " + token} if token else {}
    r = requests.get(d.base + "/v1/executions/%s" % x, headers=h, timeout=5)
    return r.status_code, r.json()


class Lines:
    """A running `crewstream` whose stdout and stderr lines are collected by threads."""

    def __init__(self, d, *args, url=None, **env):
        e = cli_env(d, **env)
        if url is not None:
            e["CREWSTREAM_URL"] = url
        self.proc = subprocess.Popen(
            [cli_path()] + list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=e,
        )
        self.out, self.err = [], []
        self._threads = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for t in self._threads:
            t.start()

    @staticmethod
    def _read(f, into):
        for raw in iter(f.readline, b""):
            into.append(raw.decode("utf-8").rstrip("\n"))

    def wait_out(self, pred, timeout=15.0, what="output"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred(self.out):
                return self.out
            if self.proc.poll() is not None:
                time.sleep(0.2)  # let the readers finish
                if pred(self.out):
                    return self.out
                break
            time.sleep(0.05)
        raise AssertionError("no %s within %.0fs; stdout=%r stderr=%r rc=%r"
                             % (what, timeout, self.out[-20:], self.err, self.proc.poll()))

    def wait_exit(self, timeout=20.0):
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            raise AssertionError("the tool did not exit within %.0fs; stdout=%r stderr=%r"
                                 % (timeout, self.out[-20:], self.err))
        for t in self._threads:
            t.join(timeout=5)
        check_clean("\n".join(self.err))
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


@pytest.fixture
def running():
    """Tools started in a test; any still running at the end is killed."""
    started = []

    def start(*a, **kw):
        t = Lines(*a, **kw)
        started.append(t)
        return t

    yield start
    for t in started:
        t.kill()


# ---- help and exit codes ----------------------------------------------------------------------


def exit_codes_in_header():
    """{code: name} from the enum in cli/cli.h."""
    with open(os.path.join(ROOT, "cli", "cli.h")) as f:
        text = f.read()
    return {int(v): k for k, v in re.findall(r"\b(CLI_E?[A-Z]+)\s*=\s*(\d+),", text)}


def test_help_of_every_command():
    p = cli(None, "--help")
    assert p.returncode == 0 and p.stderr == ""
    assert p.stdout.startswith("Usage: crewstream ")
    for cmd in COMMANDS:
        assert re.search(r"^  %s\s" % cmd, p.stdout, re.M), "--help does not list %s" % cmd
        for args in ([cmd, "--help"], [cmd, "-h"], ["help", cmd], ["--url", "http://127.0.0.1:9", cmd, "--help"]):
            q = cli(None, *args)
            assert q.returncode == 0, (args, q.stderr)
            assert q.stderr == ""
            assert q.stdout.startswith("Usage: crewstream %s" % cmd), (args, q.stdout[:80])
            assert "Exit codes" in q.stdout
    v = cli(None, "--version")
    assert v.returncode == 0 and re.match(r"^crewstream \S+\n$", v.stdout)


def test_exit_codes_match_header_help_and_docs():
    header = exit_codes_in_header()
    assert set(header) == {0, 1, 2, 3, 4, 5, 6, 7, 130}, header
    help_text = cli(None, "--help").stdout
    section = help_text.split("Exit codes:\n", 1)[1].split("\n\n", 1)[0]
    in_help = {int(m) for m in re.findall(r"^\s+(\d+)\s", section, re.M)}
    assert in_help == set(header), section
    with open(os.path.join(ROOT, "docs", "cli.md")) as f:
        doc = f.read()
    table = doc.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    in_doc = {int(m) for m in re.findall(r"^\|\s*`?(\d+)`?\s*\|", table, re.M)}
    assert in_doc == set(header), table


def test_usage_errors_are_one_line_and_exit_2(daemon):
    cases = [
        [],
        ["nosuch"],
        ["--bogus", "ls"],
        ["post", "--bogus"],
        ["post", "-e", "x", "-t"],
        ["post", "-f", "a=b"],
        ["post", "-t", "log"],
        ["post", "-e", "x", "-t", "log", "-f", "novalue"],
        ["post", "-e", "x", "-t", "log", "--json", "[1]"],
        ["post", "-e", "x", "-t", "log", "extra"],
        ["tail"],
        ["tail", "x", "--all"],
        ["tail", "x", "--types", "a b"],
        ["tail", "x", "--color", "sometimes"],
        ["tail", "x", "y"],
        ["respond"],
        ["respond", "x"],
        ["respond", "x", "--approve", "--reject"],
        ["respond", "x", "--task", "t", "--event", "e", "--approve"],
        ["respond", "x", "--approve", "--nope"],
        ["ls", "--status", "bogus"],
        ["ls", "--limit", "0"],
        ["ls", "extra"],
        ["status"],
        ["status", "x", "--limit", "3"],
        ["demo", "--speed", "0"],
        ["demo", "-e", "bad id"],
        ["--url", "ftp://x", "ls"],
    ]
    for args in cases:
        p = cli(daemon, *args)
        assert p.returncode == 2, (args, p.returncode, p.stderr)
        assert p.stdout == "", (args, p.stdout)
        if args:  # a bare `crewstream` prints the usage to stderr
            line = one_line(p)
            assert "crewstream" in line and "--help" in line or "crewstream --help" in line, (args, line)
    # None of them posted anything.
    assert requests.get(daemon.base + "/v1/executions", timeout=5).json()["executions"] == []


def test_respond_without_decision_off_a_terminal_says_so(daemon):
    daemon.post_ok(ev("q1", "human_input_required", task_id="t", prompt="Go?"))
    p = cli(daemon, "respond", "q1", "--feedback", "fine")
    assert p.returncode == 2
    assert "--approve or --reject" in one_line(p)
    assert status_of(daemon, "q1")[1]["status"] == "pending_human_input"


def test_unreachable_daemon_is_exit_3_with_one_line(tmp_path):
    port = free_port()  # nothing listens there
    env = {"CREWSTREAM_URL": "http://127.0.0.1:%d" % port, "CREWSTREAM_SOCKET": str(tmp_path / "none.sock")}
    cases = [
        (["post", "-e", "x", "-t", "log"], None, "none.sock"),
        (["post"], '{"execution_id":"x","type":"log"}\n', "none.sock"),
        (["demo", "--speed", "100"], None, "none.sock"),
        (["tail", "x"], None, str(port)),
        (["tail", "--all", "--json"], None, str(port)),
        (["respond", "x", "--approve"], None, str(port)),
        (["respond", "x", "--task", "t", "--reject"], None, str(port)),
        (["ls"], None, str(port)),
        (["status", "x"], None, str(port)),
    ]
    for args, stdin, where in cases:
        p = cli(None, *args, input=stdin, **env)
        assert p.returncode == 3, (args, p.returncode, p.stderr)
        line = one_line(p)
        assert where in line and "crewstreamd running" in line, (args, line)
        assert p.stdout == "", (args, p.stdout)


# ---- post ------------------------------------------------------------------------------------


def test_post_from_flags(daemon):
    p = cli(daemon, "post", "-e", "pf-1", "-t", "log", "-f", "level=info", "-f", "message=Found 15 results",
            "-f", "count=15", "-f", 'meta={"a":[1,2]}', "-f", "flag=true", "-f", 'quoted="42"')
    assert p.returncode == 0, p.stderr
    m = re.match(r"^seq 1 event (\S+)\n$", p.stdout)
    assert m and UUID4_RE.match(m.group(1)), p.stdout
    p2 = cli(daemon, "post", "-e", "pf-1", "-t", "artifact", "--json", '{"name":"old","size":2481,"x":null}',
             "-f", "name=report.md")
    assert p2.returncode == 0 and p2.stdout.startswith("seq 2 event "), p2
    evs = events_of(daemon, "pf-1")
    assert len(evs) == 2
    e1, e2 = evs
    assert e1["event_id"] == m.group(1)
    assert {k: e1[k] for k in e1 if k not in ("event_id", "timestamp", "seq")} == {
        "execution_id": "pf-1", "type": "log", "level": "info", "message": "Found 15 results", "count": 15,
        "meta": {"a": [1, 2]}, "flag": True, "quoted": "42"}
    assert e2["name"] == "report.md" and e2["size"] == 2481 and e2["x"] is None and e2["type"] == "artifact"


def test_post_ndjson_from_stdin(daemon):
    lines = [
        json.dumps({"type": "run.started", "crew_name": "c"}),
        json.dumps({"type": "log", "message": "ü ✓", "event_id": "e-1"}),
        json.dumps({"type": "log", "message": "ü ✓", "event_id": "e-1"}),  # a retry: acknowledged once
        "",
        json.dumps({"execution_id": "ps-other", "type": "log"}),
        json.dumps({"type": "run.completed", "result": {"ok": 1}}),
    ]
    p = cli(daemon, "post", "-e", "ps-1", input="\n".join(lines) + "\n")
    assert p.returncode == 0, p.stderr
    out = p.stdout.splitlines()
    assert len(out) == 5, out
    assert re.match(r"^seq 1 event \S+$", out[0])
    assert out[1] == "seq 2 event e-1"
    assert out[2] == "seq 2 event e-1 (duplicate)"
    assert re.match(r"^seq 1 event \S+$", out[3])  # ps-other's first
    assert re.match(r"^seq 3 event \S+$", out[4])
    assert [e["type"] for e in events_of(daemon, "ps-1")] == ["run.started", "log", "run.completed"]
    assert [e["type"] for e in events_of(daemon, "ps-other")] == ["log"]
    assert events_of(daemon, "ps-1")[1]["message"] == "ü ✓"


def test_post_refusals_exit_1_in_order(daemon):
    lines = [
        json.dumps({"type": "log", "message": "one"}),
        "not json",
        json.dumps({"execution_id": "pr-1"}),
        "[1, 2]",
        json.dumps({"type": "bad type"}),
        json.dumps({"type": "log", "message": "two"}),
    ]
    p = cli(daemon, "post", "-e", "pr-1", input="\n".join(lines) + "\n")
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert p.stderr == ""
    out = p.stdout.splitlines()
    assert len(out) == 6, out
    assert re.match(r"^seq 1 event \S+$", out[0])
    assert out[1].startswith("error invalid_json: line 2: ")
    assert out[2].startswith("error missing_field: line 3: ")
    assert out[3] == "error invalid_json: line 4: not a JSON object"
    assert out[4].startswith("error invalid_field: line 5: ")
    assert re.match(r"^seq 2 event \S+$", out[5])
    assert [e["message"] for e in events_of(daemon, "pr-1")] == ["one", "two"]
    # One refused event from the flags: exit 1, no line number.
    q = cli(daemon, "post", "-e", "bad exec", "-t", "log")
    assert q.returncode == 1 and re.match(r"^error invalid_field: [^l]", q.stdout), q.stdout


def test_post_many_lines_pipelined(daemon):
    n = 2000
    data = "".join(json.dumps({"execution_id": "pm-1", "type": "log", "i": i}) + "\n" for i in range(n))
    t0 = time.monotonic()
    p = cli(daemon, "post", input=data, timeout=60)
    assert p.returncode == 0, p.stderr
    out = p.stdout.splitlines()
    assert [int(line.split()[1]) for line in out] == list(range(1, n + 1))
    assert time.monotonic() - t0 < 30
    st = status_of(daemon, "pm-1")[1]
    assert st["last_seq"] == n


# ---- tail ------------------------------------------------------------------------------------


def test_tail_json_is_exactly_what_the_daemon_sent(daemon, running):
    x = "tj-1"
    posted = [
        ev(x, "run.started", crew_name="research_crew"),
        ev(x, "log", level="info", message="Starting — ünïcødé ✓", nested={"a": [1, {"b": None}]}),
        ev(x, "tool.called", tool="web_search", input="AI agents 2024", event_id="mine-1"),
    ]
    acks = daemon.post_ok(*posted)  # history, before tail starts
    t = running(daemon, "tail", x, "--json", "--exit-on-end")
    t.wait_out(lambda o: len(o) >= 3, what="the history")
    live = [ev(x, "tool.result", tool="web_search", output="15 results"),
            ev(x, "log", message="a\nmultiline\tmessage"),
            ev(x, "run.completed", result={"report": "r.md"}, duration_ms=1234)]
    for e in live:  # one at a time: live events
        acks += daemon.post_ok(e)
        posted.append(e)
    assert t.wait_exit() == 0
    assert len(t.out) == len(posted), t.out
    # Each line is one event: what was posted, plus the daemon's event_id, timestamp and seq.
    for line, sent, ack in zip(t.out, posted, acks):
        got = json.loads(line)
        assert got["seq"] == ack["seq"] and got["event_id"] == ack["event_id"]
        assert TS_RE.match(got["timestamp"])
        rest = {k: v for k, v in got.items() if k not in ("event_id", "timestamp", "seq")}
        want = {k: v for k, v in sent.items() if k != "event_id"}
        assert rest == want
    assert [json.loads(line)["seq"] for line in t.out] == list(range(1, 7))
    # Byte for byte what an SSE subscriber is sent.
    with SSEClient(daemon.port, "/v1/executions/%s/events" % x) as s:
        frames = s.collect(len(posted), timeout=5)
    assert [f.data for f in frames] == t.out
    assert t.err == []


def test_tail_waits_for_an_execution_nobody_posted_to_yet(daemon, running):
    t = running(daemon, "tail", "tw-1", "--json", "--exit-on-end")
    time.sleep(0.5)
    assert t.proc.poll() is None and t.out == []
    daemon.post_ok(ev("tw-1", "run.started"), ev("tw-1", "run.failed", error="boom"))
    assert t.wait_exit() == 7  # --exit-on-end: the run failed
    assert [json.loads(line)["type"] for line in t.out] == ["run.started", "run.failed"]


def test_tail_exit_on_end_of_a_flow(daemon, running):
    """Inside a flow a crew's end is a step: --exit-on-end waits for the flow's own end."""
    t = running(daemon, "tail", "tf-1", "--json", "--exit-on-end", "--types", "flow_*")
    time.sleep(0.3)
    daemon.post_ok(ev("tf-1", "flow_started"), ev("tf-1", "crew_kickoff_started"),
                   ev("tf-1", "crew_kickoff_completed", result="step"))
    time.sleep(0.5)
    assert t.proc.poll() is None, t.out
    daemon.post_ok(ev("tf-1", "flow_finished", result="all"))
    assert t.wait_exit() == 0
    assert [json.loads(line)["type"] for line in t.out] == ["flow_started", "flow_finished"]


def test_tail_tree_like_the_platform_view(daemon):
    """The seed's terminal example, replayed with its own clock (TZ=UTC)."""
    x = "run_abc123"

    def at(s):
        return "2024-01-15T10:30:%s" % s

    daemon.post_ok(
        ev(x, "run.started", timestamp=at("00.800Z")),
        ev(x, "log", level="info", message="Starting crew execution", timestamp=at("01.000Z")),
        ev(x, "agent.started", agent="Researcher", timestamp=at("02.000Z")),
        ev(x, "tool.called", tool="web_search", input="AI agents 2024", timestamp=at("05.000Z")),
        ev(x, "agent.completed", agent="Researcher", timestamp=at("12.000Z")),
        ev(x, "agent.started", agent="Writer", timestamp=at("13.000Z")),
        ev(x, "agent.completed", agent="Writer", timestamp=at("45.000Z")),
        ev(x, "artifact", name="report.md", timestamp=at("46.000Z")),
        ev(x, "run.completed", timestamp=at("46.000Z")),
    )
    p = cli(daemon, "tail", x, "--exit-on-end", TZ="UTC")
    assert p.returncode == 0, p.stderr
    assert p.stdout == (
        "▶ Run started: run_abc123\n"
        "├─ [10:30:01] Starting crew execution\n"
        "├─ [10:30:02] Researcher agent starting task\n"
        '├─ [10:30:05] Tool: web_search("AI agents 2024")\n'
        "├─ [10:30:12] Researcher agent completed task\n"
        "├─ [10:30:13] Writer agent starting task\n"
        "├─ [10:30:45] Writer agent completed task\n"
        "├─ [10:30:46] Artifact: report.md\n"
        "✅ Run completed in 45.2s\n"
    )
    assert p.stderr == ""
    # Colour only when asked (stdout is a pipe here).
    c = cli(daemon, "tail", x, "--exit-on-end", "--color", "always", TZ="UTC")
    assert c.returncode == 0 and ANSI_RE.search(c.stdout)
    assert ANSI_RE.sub("", re.sub(r"\x1b\[[0-9;]*m", "", c.stdout)) == p.stdout


def test_tail_tree_hitl_run(daemon, running):
    x = "tt-2"
    t = running(daemon, "tail", x, "--exit-on-end")
    daemon.post_ok(
        ev(x, "run.started", crew_name="research_crew"),
        ev(x, "task_started", task="Review the draft", task_id="review"),
        ev(x, "tool.called", tool="read_page", input={"url": "https://example.com"}),
        ev(x, "llm_stream_chunk", agent="Writer", chunk="Hello "),
        ev(x, "llm_stream_chunk", agent="Writer", chunk="world"),
        ev(x, "human_input_required", task_id="review", prompt="Approve the draft?", context="draft v1"),
    )
    t.wait_out(lambda o: any("Waiting for human input" in line for line in o), what="the request")
    r = cli(daemon, "respond", x, "--approve", "--feedback", "Ship it")
    assert r.returncode == 0, r.stderr
    daemon.post_ok(ev(x, "task_completed", task="Review the draft"),
                   ev(x, "run.completed", result="done", duration_ms=3000))
    assert t.wait_exit() == 0
    out = t.out
    assert out[0] == "▶ Run started: %s (research_crew)" % x
    body = out[1:]
    expect = [
        r"├─ %s Task started: Review the draft" % CLOCK,
        r'├─ %s Tool: read_page\(\{"url":"https://example.com"\}\)' % CLOCK,
        r"├─ %s Writer streamed 2 chunks \(11 characters\)" % CLOCK,
        r"⏸  Waiting for human input: Approve the draft\?  \(crewstream respond %s --task review --approve\)" % x,
        r"│     context: draft v1",
        r'├─ %s ✔ Human approved: "Ship it"' % CLOCK,
        r"├─ %s Task completed: Review the draft" % CLOCK,
        r"✅ Run completed in 3\.0s",
        r"   Result: done",
    ]
    assert len(body) == len(expect), out
    for line, pat in zip(body, expect):
        assert re.fullmatch(pat, line), (pat, line)
    assert not any(ANSI_RE.search(line) for line in out)


def test_tail_types_filter_and_exit_on_end(daemon):
    x = "tf-1"
    daemon.post_ok(ev(x, "run.started"), ev(x, "log", message="m"), ev(x, "tool.called", tool="t"),
                   ev(x, "tool.result", tool="t"), ev(x, "run.completed"))
    p = cli(daemon, "tail", x, "--json", "--types", "tool.*,log", "--exit-on-end")
    assert p.returncode == 0, p.stderr
    assert [json.loads(line)["type"] for line in p.stdout.splitlines()] == ["log", "tool.called", "tool.result"]


def test_tail_all_names_each_execution(daemon):
    daemon.post_ok(ev("ta-1", "run.started"), ev("ta-2", "log", message="from two"),
                   ev("ta-1", "run.completed"))
    p = cli(daemon, "tail", "--all", "--exit-on-end")
    assert p.returncode == 0, p.stderr
    out = p.stdout.splitlines()
    assert out[0] == "▶ Run started: ta-1"
    assert re.fullmatch(r"├─ %s ta-2 from two" % CLOCK, out[1]), out
    assert out[2].startswith("✅ Run completed") and out[2].endswith(" ta-1")
    j = cli(daemon, "tail", "--all", "--json", "--exit-on-end")
    assert [(e["execution_id"], e["seq"]) for e in map(json.loads, j.stdout.splitlines())] == [
        ("ta-1", 1), ("ta-2", 1), ("ta-1", 2)]


def test_tail_interrupted_exits_130(daemon, running):
    t = running(daemon, "tail", "ti-1")
    daemon.post_ok(ev("ti-1", "run.started"))
    t.wait_out(lambda o: len(o) >= 1)
    t.proc.send_signal(signal.SIGINT)
    assert t.wait_exit(timeout=5) == 130
    assert t.err == []


class Proxy:
    """A loopback TCP proxy between tail and the daemon that a test can cut (also in the middle
    of an event) and bring back on the same port."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.port = free_port()
        self.lock = threading.Lock()
        self.socks = []
        self.listener = None
        self.accepted = 0
        self.down_bytes = 0  # bytes sent to tail
        self.cut_in_event = False
        self.cut = threading.Event()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self):
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(8)
        self.listener = ls
        self.cut.clear()
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()
        return self

    def _accept(self, ls):
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
                u.settimeout(None)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.socks += [c, u]
                self.accepted += 1
            threading.Thread(target=self._pump, args=(c, u, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c, True), daemon=True).start()

    def _pump(self, src, dst, downstream):
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            if downstream and self.cut_in_event and b"data:" in data:
                # Half an event reaches tail, then everything goes down.
                self.cut_in_event = False
                i = min(data.index(b"data:") + 20, len(data) - 1)
                try:
                    dst.sendall(data[:i])
                except OSError:
                    pass
                self.stop()
                self.cut.set()
                break
            try:
                dst.sendall(data)
            except OSError:
                break
            if downstream:
                self.down_bytes += len(data)
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self):
        with self.lock:
            socks, self.socks = self.socks, []
            ls, self.listener = self.listener, None
        for s in ([ls] if ls else []) + socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def test_tail_resumes_after_a_broken_connection(daemon, running):
    """tail --json through a proxy that is cut twice (once in the middle of an event) while more
    events are posted: every seq is printed exactly once, in order, identical to the daemon's."""
    x = "tr-1"
    proxy = Proxy(daemon.port).start()
    try:
        t = running(daemon, "tail", x, "--json", "--exit-on-end", url=proxy.url)
        seq = 0

        def post(n):
            nonlocal seq
            for _ in range(n):
                seq += 1
                daemon.post_ok(ev(x, "log", i=seq, pad="p" * (seq % 7) * 40))

        post(10)
        t.wait_out(lambda o: len(o) >= 10, what="10 lines")
        # Cut 1: half of event 11 is delivered, then the proxy is down while 12..30 are posted.
        proxy.cut_in_event = True
        post(1)
        assert proxy.cut.wait(10), "the proxy never saw event 11"
        post(19)
        time.sleep(0.7)  # tail tries to reconnect and is refused
        assert len(t.out) == 10, "a partial event was printed: %r" % t.out[10:]
        proxy.start()
        t.wait_out(lambda o: len(o) >= 30, timeout=20, what="the events missed during cut 1")
        # Cut 2: between events, down while 31..45 are posted.
        proxy.stop()
        post(15)
        time.sleep(0.3)
        proxy.start()
        post(5)
        t.wait_out(lambda o: len(o) >= 50, timeout=20, what="the events missed during cut 2")
        daemon.post_ok(ev(x, "run.completed"))
        assert t.wait_exit() == 0
    finally:
        proxy.stop()
    seqs = [json.loads(line)["seq"] for line in t.out]
    assert seqs == list(range(1, 52)), seqs
    assert [json.dumps(e, separators=(",", ":"), ensure_ascii=False) for e in events_of(daemon, x)] == [
        json.dumps(json.loads(line), separators=(",", ":"), ensure_ascii=False) for line in t.out]
    assert proxy.accepted >= 3
    assert any("reconnecting" in line for line in t.err), t.err


def test_tail_since_now_survives_a_break_before_the_first_event(daemon, running):
    """--since-now, then the connection breaks before any event came: what was posted during the
    break is not skipped by a new "now" at the reconnection."""
    x = "tn-1"
    daemon.post_ok(ev(x, "log", i=1), ev(x, "log", i=2), ev(x, "log", i=3))
    proxy = Proxy(daemon.port).start()
    try:
        t = running(daemon, "tail", x, "--json", "--since-now", "--exit-on-end", url=proxy.url)
        assert wait_until(lambda: proxy.down_bytes > 0, timeout=10), "the stream never started"
        time.sleep(0.2)
        proxy.stop()
        daemon.post_ok(ev(x, "log", i=4), ev(x, "log", i=5))
        time.sleep(0.3)
        proxy.start()
        t.wait_out(lambda o: len(o) >= 2, timeout=20, what="the events posted during the break")
        daemon.post_ok(ev(x, "log", i=6), ev(x, "run.completed"))
        assert t.wait_exit() == 0
    finally:
        proxy.stop()
    assert [json.loads(line)["seq"] for line in t.out] == [4, 5, 6, 7]
    # Without a break: only what comes after the start.
    daemon.post_ok(ev("tn-2", "log"))
    q = running(daemon, "tail", "tn-2", "--json", "--since-now", "--exit-on-end")
    time.sleep(0.5)
    daemon.post_ok(ev("tn-2", "log"), ev("tn-2", "run.completed"))
    assert q.wait_exit() == 0
    assert [json.loads(line)["seq"] for line in q.out] == [2, 3]


# ---- respond and the demo --------------------------------------------------------------------


def wait_pending(d, x, n_answered=0, timeout=30.0):
    """Waits until x has one open request (after n_answered answers); returns it."""

    def ready():
        code, st = status_of(d, x)
        if code != 200 or st["status"] != "pending_human_input":
            return None
        done = [e for e in events_of(d, x) if e["type"] == "human_input_completed"]
        return st["pending_human_input"][0] if len(done) == n_answered else None

    req = wait_until(ready, timeout=timeout, interval=0.1)
    assert req, "no open request in %s within %.0fs: %r" % (x, timeout, status_of(d, x))
    return req


def test_respond_answers_a_waiting_demo(daemon, running):
    x = "demo-t1"
    demo = running(daemon, "demo", "-e", x, "--speed", "20")
    req1 = wait_pending(daemon, x)
    assert req1["task_id"] == "write_report" and "Approve" in req1["prompt"]
    st = cli(daemon, "status", x)
    assert st.returncode == 0
    assert "pending_human_input" in st.stdout and "tasks 1/2 done" in st.stdout
    assert "answer: crewstream respond %s --approve" % x in st.stdout

    r = cli(daemon, "respond", x, "--reject", "--feedback", "Add more sources")
    assert r.returncode == 0, r.stderr
    m = re.fullmatch(r"rejected %s: event (\S+) \(seq (\d+)\)\n" % x, r.stdout)
    assert m, r.stdout
    req2 = wait_pending(daemon, x, n_answered=1)
    assert req2["event_id"] != req1["event_id"] and "revision 2" in req2["prompt"]

    a = cli(daemon, "respond", x, "--approve", "--feedback", "Good", "--json")
    assert a.returncode == 0, a.stderr
    body = json.loads(a.stdout)
    assert body["event_id"] and body["seq"] > int(m.group(2))
    assert demo.wait_exit(timeout=30) == 0

    code, st = status_of(daemon, x)
    assert st["status"] == "completed" and st["pending_human_input"] == []
    assert st["result"]["status"] == "published" and st["result"]["feedback"] == "Good"
    prog = st["progress"]
    assert prog["tasks"] == {"seen": 2, "done": 2, "failed": 0}
    assert prog["agents"]["seen"] == prog["agents"]["done"] == 3 and prog["agents"]["failed"] == 0
    answers = [e for e in events_of(daemon, x) if e["type"] == "human_input_completed"]
    assert [(a["is_approve"], a["human_feedback"], a["request_event_id"]) for a in answers] == [
        (False, "Add more sources", req1["event_id"]), (True, "Good", req2["event_id"])]
    # What the demo printed: its own tree, with both answers and the end.
    out = "\n".join(demo.out)
    assert 'Human rejected: "Add more sources"' in out and 'Human approved: "Good"' in out
    assert "Task completed: Write a report on AI agents" in out
    assert re.search(r"^✅ Run completed in \d+\.\ds$", out, re.M)
    # The text status of the finished run.
    s = cli(daemon, "status", x)
    assert re.search(r"^Status\s+completed$", s.stdout, re.M)
    assert re.search(r"^Progress\s+tasks 2/2 done, agents 3/3 done, tools 2 calls$", s.stdout, re.M)


def test_demo_fail_ends_in_error(daemon):
    p = cli(daemon, "demo", "-e", "demo-f1", "--speed", "50", "--fail")
    assert p.returncode == 0, p.stderr
    assert re.search(r"^❌ Run failed: ", p.stdout, re.M)
    st = status_of(daemon, "demo-f1")[1]
    assert st["status"] == "error" and "quota" in st["error_message"]
    assert st["progress"]["tasks"] == {"seen": 1, "done": 0, "failed": 1}


def test_respond_errors(daemon):
    # 404: no such execution (with and without --task).
    for args in (["respond", "nosuch", "--approve"], ["respond", "nosuch", "--task", "t", "--reject"]):
        p = cli(daemon, *args)
        assert p.returncode == 4, (args, p.stderr)
        assert "not found" in one_line(p)
    # 5: nothing open.
    daemon.post_ok(ev("re-1", "run.started"))
    for args in (["respond", "re-1", "--approve"], ["respond", "re-1", "--task", "t", "--approve"],
                 ["respond", "re-1", "--event", "nope", "--approve"]):
        p = cli(daemon, *args)
        assert p.returncode == 5, (args, p.stderr)
        one_line(p)
    # 5: already answered.
    req = daemon.post_ok(ev("re-1", "human_input_required", task_id="t", prompt="Go?"))[0]["event_id"]
    ok = cli(daemon, "respond", "re-1", "--event", req, "--approve")
    assert ok.returncode == 0 and ok.stdout.startswith("approved re-1: event ")
    again = cli(daemon, "respond", "re-1", "--event", req, "--reject")
    assert again.returncode == 5 and "conflict" in one_line(again)
    # 2: several open and none chosen; the message lists how to answer each.
    daemon.post_ok(ev("re-2", "human_input_required", task_id="a", prompt="A?"),
                   ev("re-2", "human_input_required", task_id="b", prompt="B?"))
    many = cli(daemon, "respond", "re-2", "--approve")
    assert many.returncode == 2
    assert "2 open human-input requests" in many.stderr and many.stderr.count("--event ") == 2
    byt = cli(daemon, "respond", "re-2", "--task", "b", "--reject", "--feedback", "no")
    assert byt.returncode == 0, byt.stderr
    left = status_of(daemon, "re-2")[1]["pending_human_input"]
    assert [q["task_id"] for q in left] == ["a"]


TOKENS = {
    "auth": {
        "tokens": [
            {"name": "human", "token": "tok-human", "scopes": ["read", "respond"], "executions": ["*"]},
            {"name": "reader", "token": "tok-read", "scopes": ["read"], "executions": ["*"]},
            {"name": "one", "token": "tok-one", "scopes": ["read", "respond"], "executions": ["ra-1"]},
        ]
    }
}


def test_tokens_401_403_exit_6(make_daemon):
    d = make_daemon(TOKENS)
    d.post_ok(ev("ra-1", "human_input_required", task_id="t", prompt="Go?"), ev("ra-2", "run.started"))
    cases = [
        (["respond", "ra-1", "--approve"], None, "unauthorized"),
        (["respond", "ra-1", "--approve"], "wrong", "unauthorized"),
        (["respond", "ra-1", "--task", "t", "--approve"], "tok-read", "forbidden"),
        (["respond", "ra-2", "--approve"], "tok-one", "forbidden"),
        (["ls"], None, "unauthorized"),
        (["status", "ra-1"], "wrong", "unauthorized"),
        (["status", "ra-2"], "tok-one", "forbidden"),
        (["tail", "ra-1"], None, "unauthorized"),
        (["tail", "ra-2"], "tok-one", "forbidden"),
        (["tail", "--all"], "tok-one", "forbidden"),
    ]
    for args, token, word in cases:
        p = cli(d, *args, CREWSTREAM_TOKEN=token)
        assert p.returncode == 6, (args, token, p.returncode, p.stderr)
        assert word in one_line(p), (args, p.stderr)
    assert status_of(d, "ra-1", "tok-read")[1]["status"] == "pending_human_input"
    # --token on the command line, and the env var: both work.
    ls = cli(d, "--token", "tok-one", "ls")
    assert ls.returncode == 0 and "ra-1" in ls.stdout and "ra-2" not in ls.stdout
    ok = cli(d, "respond", "ra-1", "--approve", CREWSTREAM_TOKEN="tok-human")
    assert ok.returncode == 0, ok.stderr
    assert status_of(d, "ra-1", "tok-read")[1]["status"] == "running"


class Terminal:
    """A tool run with a pseudo-terminal as stdin (and stderr; stdout too when asked)."""

    def __init__(self, d, *args, tty_stdout=False):
        self.master, slave = os.openpty()
        try:
            self.proc = subprocess.Popen([cli_path()] + list(args), stdin=slave,
                                         stdout=slave if tty_stdout else subprocess.PIPE, stderr=slave,
                                         env=cli_env(d))
        finally:
            os.close(slave)
        self.seen = b""

    def until(self, text, timeout=10.0):
        """Reads the terminal until `text` has appeared (after what earlier calls consumed)."""
        want = text.encode()
        deadline = time.monotonic() + timeout
        while want not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, "no %r on the terminal: %r" % (text, self.seen)
            r, _, _ = select.select([self.master], [], [], left)
            if r:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:
                    chunk = b""
                assert chunk, "terminal closed before %r: %r" % (text, self.seen)
                self.seen += chunk
        i = self.seen.index(want) + len(want)
        before, self.seen = self.seen[:i], self.seen[i:]
        return before.decode("utf-8", "replace")

    def type(self, text):
        os.write(self.master, text.encode())

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        os.close(self.master)


def test_respond_prompts_on_a_terminal(daemon):
    """No --approve/--reject and no --feedback on a terminal: the request is shown and both are
    asked for (an unclear answer to y/n is asked again)."""
    x = "rp-1"
    daemon.post_ok(ev(x, "human_input_required", task_id="t", prompt="Publish the report?",
                      context="report.md, 4 sections"))
    term = Terminal(daemon, "respond", x)
    try:
        shown = term.until("Feedback (Enter for none): ")
        assert "Human input requested for execution rp-1 (task t):" in shown
        assert "Publish the report?" in shown and "context: report.md, 4 sections" in shown
        term.type("Needs a summary ✓\n")
        term.until("Approve? [y/n]: ")
        term.type("maybe\n")
        term.until("Approve? [y/n]: ")
        term.type("n\n")
        out, _ = term.proc.communicate(timeout=10)
        assert term.proc.returncode == 0
        assert out.decode().startswith("rejected %s: event " % x)
    finally:
        term.close()
    done = [e for e in events_of(daemon, x) if e["type"] == "human_input_completed"]
    assert len(done) == 1
    assert done[0]["is_approve"] is False and done[0]["human_feedback"] == "Needs a summary ✓"
    # With the decision given, only the feedback is asked; end of input answers nothing (exit 2).
    daemon.post_ok(ev(x, "human_input_required", task_id="t2", prompt="Again?"))
    term = Terminal(daemon, "respond", x, "--approve")
    try:
        term.until("Feedback (Enter for none): ")
        term.type("\x04")  # Ctrl-D
        term.proc.wait(timeout=10)
        assert term.proc.returncode == 2
    finally:
        term.close()
    assert status_of(daemon, x)[1]["pending_human_input"][0]["task_id"] == "t2"


def test_post_typed_at_a_terminal_acks_each_line(daemon):
    term = Terminal(daemon, "post", "-e", "pt-1", tty_stdout=True)
    try:
        term.type('{"type":"run.started"}\n')
        assert re.search(r"seq 1 event \S+\r?\n", term.until("\n", timeout=10) + term.until("\n"))
        term.type('{"type":"log"\n')
        assert "error invalid_json: line 2: " in term.until("\n") + term.until("\n")
        term.type('{"type":"log","message":"hi"}\n')
        assert re.search(r"seq 2 event \S+", term.until("\n") + term.until("\n"))
        term.type("\x04")
        term.proc.wait(timeout=10)
        assert term.proc.returncode == 1  # a line was refused
    finally:
        term.close()


# ---- ls and status ---------------------------------------------------------------------------


def test_ls_and_status(daemon):
    r = cli(daemon, "ls")
    assert r.returncode == 0 and r.stdout == "No executions.\n"
    daemon.post_ok(ev("ls-a", "run.started"), ev("ls-a", "task_started"), ev("ls-a", "task_completed"),
                   ev("ls-a", "run.completed", result={"answer": 42}))
    time.sleep(0.01)
    daemon.post_ok(ev("ls-b", "run.started"), ev("ls-b", "tool.called", tool="x"),
                   ev("ls-b", "tool.error", tool="x", error="e"), ev("ls-b", "run.failed", error="broke down"))
    time.sleep(0.01)
    daemon.post_ok(ev("ls-c", "human_input_required", task_id="t", prompt="Go?"))

    p = cli(daemon, "ls")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["EXECUTION", "STATUS", "EVENTS", "LAST", "EVENT", "TASKS", "AGENTS", "TOOLS",
                                "WAITING"]
    rows = [line.split() for line in lines[1:]]
    assert [r[0] for r in rows] == ["ls-c", "ls-b", "ls-a"]  # newest first
    assert rows[0][1] == "pending_human_input" and rows[0][2] == "1" and rows[0][-1] == "1"
    assert rows[1][1] == "error" and rows[1][-2] == "1"
    assert rows[2][1] == "completed" and rows[2][2] == "4" and rows[2][5] == "1/1"

    j = cli(daemon, "ls", "--json")
    assert json.loads(j.stdout) == requests.get(daemon.base + "/v1/executions", timeout=5).json()
    only = cli(daemon, "ls", "--status", "completed")
    assert [line.split()[0] for line in only.stdout.splitlines()[1:]] == ["ls-a"]
    one = cli(daemon, "ls", "--limit", "1")
    assert [line.split()[0] for line in one.stdout.splitlines()[1:]] == ["ls-c"]
    none = cli(daemon, "ls", "--status", "canceled")
    assert none.returncode == 0 and none.stdout == "No executions with status canceled.\n"

    s = cli(daemon, "status", "ls-a")
    assert s.returncode == 0
    assert re.search(r"^Status\s+completed$", s.stdout, re.M)
    assert re.search(r"^Events\s+4 \(last seq 4\)$", s.stdout, re.M)
    assert re.search(r'^Result\s+\{"answer":42\}$', s.stdout, re.M)
    assert re.search(r"^Progress\s+tasks 1/1 done, agents 0/0 done, tools 0 calls$", s.stdout, re.M)
    b = cli(daemon, "status", "ls-b")
    assert re.search(r"^Error\s+broke down$", b.stdout, re.M)
    assert re.search(r"tools 1 call \(1 failed\)$", b.stdout, re.M)
    c = cli(daemon, "status", "ls-c")
    assert "Waiting for human input:" in c.stdout and "Go?" in c.stdout
    assert "answer: crewstream respond ls-c --approve" in c.stdout
    sj = cli(daemon, "status", "ls-c", "--json")
    assert json.loads(sj.stdout) == status_of(daemon, "ls-c")[1]
    # An execution with no event yet is pending (SPEC §2), not an error.
    fresh = cli(daemon, "status", "nosuch")
    assert fresh.returncode == 0, fresh.stderr
    assert "pending" in fresh.stdout and "0 (last seq 0)" in fresh.stdout
