"""systemd integration (SPEC §3, §6): the sd_notify protocol spoken to a datagram socket the test
binds itself (READY=1 once the listeners answer, RELOADING=1 + MONOTONIC_USEC then READY=1 on
SIGHUP, STOPPING=1 on SIGTERM, WATCHDOG=1 at half of WATCHDOG_USEC only for the pid WATCHDOG_PID
names); the default ingest socket in $RUNTIME_DIRECTORY; journald-style log lines when stderr is
the JOURNAL_STREAM; and conf/crewstreamd.service, checked against what the daemon accepts."""

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid

import pytest

from conftest import Daemon, daemon_path
from csutil import SANITIZER_MARKS, ev, http_get

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
UNIT = os.path.join(ROOT, "conf", "crewstreamd.service")
CONF = os.path.join(ROOT, "conf", "crewstream.json")

# What a service manager would set: none of it may leak in from the environment the tests run in.
SD_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "RUNTIME_DIRECTORY", "JOURNAL_STREAM")
for _var in SD_VARS:
    os.environ.pop(_var, None)


class NotifySocket:
    """The service manager's end: an AF_UNIX datagram socket, on a path or in the abstract namespace."""

    def __init__(self, tmpdir, abstract=False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = "cs-e2e-notify-%s" % uuid.uuid4().hex
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            self.address = os.path.join(tmpdir, "notify.sock")
            self.sock.bind(self.address)
        self.messages = []  # every datagram, parsed: a dict of its KEY=VALUE lines
        self.pos = 0  # messages before this one were consumed by wait_for

    def close(self):
        self.sock.close()

    def _recv(self, timeout):
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        msg = {}
        for line in data.decode().split("\n"):
            if line:
                k, _, v = line.partition("=")
                msg[k] = v
        self.messages.append(msg)
        return True

    def wait_for(self, key, value="1", timeout=10.0):
        """Returns the first message not yet consumed with key=value (consuming it and those before)."""
        deadline = time.monotonic() + timeout
        while True:
            while self.pos < len(self.messages):
                msg = self.messages[self.pos]
                self.pos += 1
                if msg.get(key) == value:
                    return msg
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no %s=%s within %.1fs; got %r" % (key, value, timeout, self.messages))
            self._recv(left)

    def collect(self, seconds):
        """Returns the messages that arrive within `seconds` (and those received but not consumed)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._recv(deadline - time.monotonic())
        got = self.messages[self.pos:]
        self.pos = len(self.messages)
        return got


class SdDaemon(Daemon):
    """A Daemon started as systemd would: extra environment, WATCHDOG_PID set to its own pid (through a
    shell that execs it, so the pid is known before it runs), stderr announced as JOURNAL_STREAM."""

    def __init__(self, tmpdir, config=None, env=None, own_watchdog_pid=False, journal=None, args=()):
        super().__init__(tmpdir, config, args=args, env=env)
        self.own_watchdog_pid = own_watchdog_pid
        self.journal = journal  # None, "match" (stderr's dev:ino) or a literal JOURNAL_STREAM value

    def spawn(self, argv, env, out, err):
        if self.own_watchdog_pid:
            argv = ["/bin/sh", "-c", 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$@"', "sh"] + argv
        if self.journal == "match":
            st = os.fstat(err.fileno())
            env["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino)
        elif self.journal is not None:
            env["JOURNAL_STREAM"] = self.journal
        return super().spawn(argv, env, out, err)


@pytest.fixture
def sd():
    """sd(config=None, env=None, abstract=False, **kw) -> (daemon, notify socket), daemon not started.
    The notify socket is in the daemon's environment as NOTIFY_SOCKET unless notify=False."""
    made = []
    dirs = []
    socks = []

    def factory(config=None, env=None, abstract=False, notify=True, **kw):
        tmp = tempfile.mkdtemp(prefix="cs-e2e-sd-")
        dirs.append(tmp)
        ns = NotifySocket(tmp, abstract=abstract)
        socks.append(ns)
        e = dict(env or {})
        if notify:
            e["NOTIFY_SOCKET"] = ns.address
        d = SdDaemon(tmp, config, env=e, **kw)
        made.append(d)
        return d, ns

    yield factory
    problems = []
    for d in made:
        problems.extend(d.finish())
    for ns in socks:
        ns.close()
    if not problems:
        for tmp in dirs:
            shutil.rmtree(tmp, ignore_errors=True)
    assert not problems, "\n".join(problems)


def start_until_ready(d, ns, timeout=10.0):
    """Starts the daemon without polling it, and returns the READY=1 message."""
    d.start(wait=False)
    try:
        return ns.wait_for("READY", timeout=timeout)
    except AssertionError:
        raise AssertionError("%s\nstderr:\n%s" % (ns.messages, d.stderr_text()))


# ---- READY, STOPPING -----------------------------------------------------------------------------


def test_ready_when_listeners_answer_then_stopping_on_sigterm(sd):
    d, ns = sd()
    ready = start_until_ready(d, ns)
    # READY=1 is sent only once both listeners are bound: the port answers and the socket accepts.
    status, _, body = http_get(d.port, "/health", timeout=5)
    assert status == 200, body
    assert os.path.exists(d.sock)
    assert d.post_ok(ev("sd-ready", "run.started"))[0]["seq"] == 1
    assert ready.get("STATUS", "").startswith("serving"), ready
    assert d.proc.poll() is None
    # Only READY=1 (and STATUS), once; no watchdog was asked for.
    later = ns.collect(0.6)
    assert not [m for m in later if "WATCHDOG" in m or "READY" in m], later

    assert d.stop(signal.SIGTERM) == 0, d.stderr_text()
    stopping = ns.wait_for("STOPPING", timeout=2)
    assert "STATUS" in stopping
    assert not [m for m in ns.collect(0.1) if "READY" in m]


def test_sigint_also_sends_stopping(sd):
    d, ns = sd()
    start_until_ready(d, ns)
    assert d.stop(signal.SIGINT) == 0, d.stderr_text()
    ns.wait_for("STOPPING", timeout=2)


def test_abstract_notify_socket(sd):
    d, ns = sd(abstract=True)
    assert ns.address.startswith("@")
    start_until_ready(d, ns)
    assert http_get(d.port, "/health", timeout=5)[0] == 200
    assert d.stop() == 0
    ns.wait_for("STOPPING", timeout=2)


def test_without_notify_socket_nothing_is_said(sd):
    """No NOTIFY_SOCKET: nothing is sent (the socket stays silent) and nothing is logged about it,
    even when WATCHDOG_USEC is set."""
    d, ns = sd(notify=False, env={"WATCHDOG_USEC": "200000"})
    d.start()
    os.kill(d.proc.pid, signal.SIGHUP)
    time.sleep(0.5)
    assert d.stop() == 0
    assert ns.collect(0.3) == []
    err = d.stderr_text().lower()
    for word in ("sd_notify", "notify_socket", "watchdog"):
        assert word not in err, err


# ---- reload --------------------------------------------------------------------------------------


def test_sighup_reloading_then_ready(sd):
    d, ns = sd()
    start_until_ready(d, ns)
    before = time.clock_gettime(time.CLOCK_MONOTONIC)
    os.kill(d.proc.pid, signal.SIGHUP)
    reloading = ns.wait_for("RELOADING", timeout=5)
    after = time.clock_gettime(time.CLOCK_MONOTONIC)
    # MONOTONIC_USEC: CLOCK_MONOTONIC in µs when the reload began (the clock is system-wide).
    usec = int(reloading["MONOTONIC_USEC"])
    assert before * 1e6 - 1000 <= usec <= after * 1e6 + 1000, (before, usec, after)
    ready = ns.wait_for("READY", timeout=5)
    assert ready.get("STATUS", "").startswith("serving"), ready
    assert "reload: configuration re-read" in d.stderr_text()
    assert http_get(d.port, "/health", timeout=5)[0] == 200

    # A file that no longer loads: the running configuration stays, and systemd still hears READY=1.
    with open(d.cfg_path, "w") as f:
        f.write("{ not json")
    os.kill(d.proc.pid, signal.SIGHUP)
    ns.wait_for("RELOADING", timeout=5)
    ready = ns.wait_for("READY", timeout=5)
    assert "failed" in ready.get("STATUS", ""), ready
    assert d.running()
    assert d.post_ok(ev("sd-reload", "run.started"))[0]["ok"] is True
    assert d.stop() == 0
    ns.wait_for("STOPPING", timeout=2)


# ---- watchdog ------------------------------------------------------------------------------------


def test_watchdog_pings_at_half_the_interval(sd):
    d, ns = sd(env={"WATCHDOG_USEC": "200000"}, own_watchdog_pid=True)
    start_until_ready(d, ns)
    got = ns.collect(1.0)
    pings = [m for m in got if m.get("WATCHDOG") == "1"]
    # Every 100 ms: about 10 a second. At least several, and not a busy loop.
    assert 4 <= len(pings) <= 20, got
    assert d.stop() == 0


def test_watchdog_for_another_pid_is_not_ours(sd):
    # WATCHDOG_PID names pid 1, never the daemon: the watchdog is someone else's.
    d, ns = sd(env={"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"})
    start_until_ready(d, ns)
    got = ns.collect(1.0)
    assert not [m for m in got if "WATCHDOG" in m], got
    assert d.stop() == 0


def test_watchdog_keeps_pinging_through_a_reload(sd):
    d, ns = sd(env={"WATCHDOG_USEC": "200000"}, own_watchdog_pid=True)
    start_until_ready(d, ns)
    os.kill(d.proc.pid, signal.SIGHUP)
    ns.wait_for("READY", timeout=5)
    pings = [m for m in ns.collect(0.6) if m.get("WATCHDOG") == "1"]
    assert len(pings) >= 2, pings
    assert d.stop() == 0


# ---- the ingest socket in RUNTIME_DIRECTORY ------------------------------------------------------


def test_default_socket_in_runtime_directory(sd):
    d, ns = sd(config={"ingest": {"socket": None}}, notify=False)
    rt = os.path.join(d.tmp, "run")
    os.mkdir(rt)
    xdg = os.path.join(d.tmp, "xdg")
    os.mkdir(xdg)
    d.env.update({"RUNTIME_DIRECTORY": rt, "XDG_RUNTIME_DIR": xdg})
    d.sock = os.path.join(rt, "ingest.sock")
    d.start()  # waits for /health and the socket at d.sock
    assert os.path.exists(d.sock)
    assert not os.path.exists(os.path.join(xdg, "crewstream.sock"))
    assert d.post_ok(ev("sd-rt", "run.started"))[0]["seq"] == 1
    assert d.stop() == 0
    assert not os.path.exists(d.sock)


def check_config(args, env=None):
    e = dict(os.environ)
    e.pop("CREWSTREAM_API_KEY", None)
    e.pop("CREWSTREAM_JWT_SECRET", None)
    e.update(env or {})
    p = subprocess.run([daemon_path()] + list(args) + ["--check-config"], capture_output=True, timeout=30, env=e)
    err = p.stderr.decode(errors="replace")
    for mark in SANITIZER_MARKS:
        assert mark not in err, err
    return p.returncode, p.stdout.decode(errors="replace"), err


def test_check_config_prints_the_runtime_directory_socket():
    tmp = tempfile.mkdtemp(prefix="cs-e2e-sd-")
    try:
        rc, out, err = check_config(["--config", CONF], {"RUNTIME_DIRECTORY": tmp + "/a:" + tmp + "/b",
                                                         "XDG_RUNTIME_DIR": tmp + "/xdg"})
        assert rc == 0, err
        assert json.loads(out)["ingest"]["socket"] == tmp + "/a/ingest.sock"
        # Without it, the documented defaults stay.
        rc, out, err = check_config(["--config", CONF], {"XDG_RUNTIME_DIR": tmp + "/xdg"})
        assert rc == 0, err
        assert json.loads(out)["ingest"]["socket"] == tmp + "/xdg/crewstream.sock"
        # A configured path is kept.
        rc, out, err = check_config(["--config", CONF, "--socket", tmp + "/x.sock"], {"RUNTIME_DIRECTORY": tmp})
        assert rc == 0, err
        assert json.loads(out)["ingest"]["socket"] == tmp + "/x.sock"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---- journald ------------------------------------------------------------------------------------


def logged_lines(sd, journal):
    """What a daemon started and stopped with this JOURNAL_STREAM logged, a line each."""
    d, _ = sd(notify=False, journal=journal)
    d.start()
    assert d.stop() == 0
    lines = [l for l in d.stderr_text().splitlines() if l]
    assert lines, "nothing logged"
    return lines


def test_log_lines_for_the_journal(sd):
    for line in logged_lines(sd, "match"):
        assert line[:3] in ("<3>", "<4>", "<6>", "<7>"), line
        assert not line[3:4].isdigit(), line  # no timestamp of its own: journald stamps the entry


def test_log_lines_elsewhere_keep_their_timestamps(sd):
    # JOURNAL_STREAM inherited, but stderr is not that stream (a redirect): plain lines.
    for line in logged_lines(sd, "0:0"):
        assert line[:2] == "20" and line[10] == "T", line


# ---- the unit file -------------------------------------------------------------------------------


def parse_unit(path):
    """{section: {key: [values]}}; continuation lines and comments as systemd reads them."""
    sections, cur, pending = {}, None, ""
    with open(path) as f:
        for raw in f:
            line = pending + raw.rstrip("\n")
            pending = ""
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            s = line.strip()
            if not s or s[0] in "#;":
                continue
            if s.startswith("[") and s.endswith("]"):
                cur = sections.setdefault(s[1:-1], {})
                continue
            assert cur is not None and "=" in s, "stray line %r" % s
            k, _, v = s.partition("=")
            cur.setdefault(k.strip(), []).append(v.strip())
    return sections


def seconds(v):
    units = {"ms": 0.001, "s": 1, "sec": 1, "min": 60, "m": 60, "": 1}
    num = v.rstrip("abcdefghijklmnopqrstuvwxyz")
    return float(num) * units[v[len(num):]]


def test_unit_file():
    unit = parse_unit(UNIT)
    svc = unit["Service"]
    one = lambda k: svc[k][-1]  # noqa: E731
    assert one("Type") == "notify"
    assert seconds(one("WatchdogSec")) > 0
    assert one("RuntimeDirectory") == "crewstream"
    assert one("User") == "crewstream" and one("Group") == "crewstream"
    assert one("ExecReload").split() == ["/bin/kill", "-HUP", "$MAINPID"]
    assert one("Restart") == "on-failure"
    assert "AF_UNIX" in one("RestrictAddressFamilies").split()
    with open(CONF) as f:
        shipped = json.load(f)
    # systemd must wait for the drain: longer than the shipped shutdown_s.
    assert seconds(one("TimeoutStopSec")) > shipped["shutdown_s"]
    assert int(one("LimitNOFILE")) > shipped["limits"]["max_clients"] + shipped["limits"]["max_producers"]
    assert shipped["ingest"]["socket"] is None  # so that the unit's socket is RUNTIME_DIRECTORY's
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]

    # ExecStart's flags are ones the daemon accepts: run them with --check-config, the documented
    # config path replaced by the file the operator copies there.
    argv = shlex.split(one("ExecStart"))
    assert os.path.basename(argv[0]) == "crewstreamd", argv
    flags = argv[1:]
    assert "--config" in flags, flags
    i = flags.index("--config")
    assert flags[i + 1] == "/etc/crewstream/crewstream.json"
    flags[i + 1] = CONF
    rc, out, err = check_config(flags, {"RUNTIME_DIRECTORY": "/run/crewstream"})
    assert rc == 0, (flags, err)
    assert json.loads(out)["ingest"]["socket"] == "/run/crewstream/ingest.sock"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_file_verifies():
    """systemd-analyze verify, with ExecStart pointing at the built daemon (the installed path
    /usr/local/sbin/crewstreamd need not exist here)."""
    tmp = tempfile.mkdtemp(prefix="cs-e2e-sd-")
    try:
        with open(UNIT) as f:
            text = f.read()
        assert "/usr/local/sbin/crewstreamd" in text
        path = os.path.join(tmp, "crewstreamd.service")
        with open(path, "w") as f:
            f.write(text.replace("/usr/local/sbin/crewstreamd", daemon_path()))
        p = subprocess.run(["systemd-analyze", "verify", path], capture_output=True, timeout=60,
                           env=dict(os.environ, SYSTEMD_LOG_LEVEL="warning"))
        out = (p.stdout + p.stderr).decode(errors="replace")
        assert p.returncode == 0, out
        assert "crewstreamd.service" not in out, out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
