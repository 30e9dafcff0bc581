"""Fixtures for the end-to-end tests: start the real crewstreamd, talk to it, check how it ended.

`make_daemon(config=None, **kw)` starts a daemon on a free loopback port with its own temporary
directory, a config file deep-merged from the defaults below and `config`, and waits until it
serves `GET /health` and its ingest socket exists. `daemon` is one started with the defaults.
On teardown every daemon still running gets SIGTERM and must exit 0 within 10 s; every daemon's
stderr must be free of sanitizer reports.

Temporary directories come from `mkdtemp()`: each belongs to the test that made it and is removed
when that test passes; a failing test keeps its directories and names them in its report.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from csutil import SANITIZER_MARKS, Producer, encode_line, exchange, http_get

HERE = os.path.dirname(os.path.abspath(__file__))

# Loopback only: never let a proxy from the environment stand between the clients and the daemon.
for _var in ("no_proxy", "NO_PROXY"):
    os.environ[_var] = "127.0.0.1,localhost" + ("," + os.environ[_var] if os.environ.get(_var) else "")


# Directories mkdtemp() made for the running test (pytest runs one test at a time per process).
_test_tmpdirs = []


def mkdtemp(prefix="cs-e2e-"):
    """A temporary directory for the running test: removed when it passes, kept when it fails."""
    path = tempfile.mkdtemp(prefix=prefix)
    _test_tmpdirs.append(path)
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        item._cs_failed = True
        if _test_tmpdirs:
            rep.sections.append(("temporary directories kept", "\n".join(_test_tmpdirs)))
    if rep.when == "teardown":
        dirs = list(_test_tmpdirs)
        del _test_tmpdirs[:]
        if not getattr(item, "_cs_failed", False):
            for path in dirs:
                shutil.rmtree(path, ignore_errors=True)


def daemon_path():
    path = os.environ.get("CREWSTREAMD") or os.path.join(HERE, "..", "..", "build", "crewstreamd")
    return os.path.abspath(path)


def free_port():
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def deep_merge(base, over):
    """Merges `over` into `base` (dicts recursively; anything else replaces) and returns `base`."""
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            deep_merge(base[k], v)
        else:
            base[k] = v
    return base


class Daemon:
    """One crewstreamd process under test."""

    def __init__(self, tmpdir, config=None, port=None, args=(), env=None):
        self.tmp = tmpdir
        self.port = port or free_port()
        self.sock = os.path.join(tmpdir, "ingest.sock")
        self.config = deep_merge(
            {
                "listen": "127.0.0.1:%d" % self.port,
                "ingest": {"socket": self.sock},
                "heartbeat_s": 1,
                "log": {"level": "debug"},
            },
            json.loads(json.dumps(config or {})),
        )
        self.cfg_path = os.path.join(tmpdir, "cfg.json")
        self.args = list(args)
        self.env = env
        self.proc = None
        self.starts = 0
        self.stderr_paths = []
        self.exit_codes = []
        self.pushes = []  # human-input answers pushed to post()'s connections

    # -- addresses -------------------------------------------------------------------------
    @property
    def base(self):
        return "http://127.0.0.1:%d" % self.port

    @property
    def ws(self):
        return "ws://127.0.0.1:%d" % self.port

    # -- process ---------------------------------------------------------------------------
    def start(self, wait=True):
        assert self.proc is None or self.proc.poll() is not None, "daemon already running"
        with open(self.cfg_path, "w") as f:
            json.dump(self.config, f)
        self.starts += 1
        err_path = os.path.join(self.tmp, "stderr.%d.txt" % self.starts)
        self.stderr_paths.append(err_path)
        env = dict(os.environ)
        env.pop("CREWSTREAM_API_KEY", None)
        env.pop("CREWSTREAM_JWT_SECRET", None)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        if self.env:
            env.update(self.env)
        with open(err_path, "wb") as err, open(os.path.join(self.tmp, "stdout.%d.txt" % self.starts), "wb") as out:
            self.proc = self.spawn([daemon_path(), "--config", self.cfg_path] + self.args, env, out, err)
        if wait:
            self.wait_ready()
        return self

    def spawn(self, argv, env, out, err):
        """Starts the process (a subclass may wrap argv or add to env, as systemd would)."""
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)

    def wait_ready(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                raise RuntimeError("crewstreamd exited with %d before it was ready:\n%s" % (rc, self.stderr_text()))
            try:
                status, _, _ = http_get(self.port, "/health", timeout=1.0)
                if status == 200 and os.path.exists(self.sock):
                    return
                last = "status %d" % status
            except OSError as e:
                last = repr(e)
            time.sleep(0.05)
        raise RuntimeError("crewstreamd not ready within %.0fs (%s):\n%s" % (timeout, last, self.stderr_text()))

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Sends `sig` and returns the exit code (raises if the daemon does not exit in `timeout`)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            raise AssertionError("crewstreamd did not exit within %.0fs of signal %d" % (timeout, sig))
        self.exit_codes.append(rc)
        return rc

    def wait_exit(self, timeout=10.0):
        """Waits (without signalling) for the daemon to exit; returns the exit code."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            raise AssertionError("crewstreamd did not exit within %.0fs" % timeout)
        self.exit_codes.append(rc)
        return rc

    def restart(self):
        """SIGTERM (must exit 0), then start again with the same port, socket and config."""
        rc = self.stop()
        assert rc == 0, "exit code %r on SIGTERM before restart:\n%s" % (rc, self.stderr_text())
        return self.start()

    def stderr_text(self, all_runs=False):
        paths = self.stderr_paths if all_runs else self.stderr_paths[-1:]
        text = ""
        for p in paths:
            try:
                with open(p, "rb") as f:
                    text += f.read().decode("utf-8", "replace")
            except OSError:
                pass
        return text

    def finish(self):
        """Teardown: SIGTERM if still running; returns a list of problems."""
        problems = []
        if self.proc is not None and self.proc.poll() is None:
            try:
                rc = self.stop()
                if rc != 0:
                    problems.append("exit code %r on SIGTERM at teardown" % rc)
            except AssertionError as e:
                problems.append(str(e))
        text = self.stderr_text(all_runs=True)
        for mark in SANITIZER_MARKS:
            if mark in text:
                problems.append("stderr contains %r" % mark)
        if problems:
            tail = text[-6000:]
            problems.append("stderr (tail):\n" + tail)
        return problems

    # -- ingest ----------------------------------------------------------------------------
    def connect_ingest(self, timeout=5.0):
        """A raw connected Unix socket (with a timeout)."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(self.sock)
        return s

    def producer(self, timeout=5.0):
        """A Producer: one ingest connection with request()/send()/read()."""
        return Producer(self.sock, timeout)

    def post(self, *events, timeout=10.0):
        """Sends every event as one line on one connection; returns one reply dict per line.

        Answers the daemon pushes to the connection (it awaits the human_input_required events it
        posted) are not replies: they are collected in `self.pushes`."""
        data = b"".join(encode_line(e) for e in events)
        n = data.count(b"\n")
        s = self.connect_ingest(timeout)
        try:
            lines = exchange(s, data, n, timeout, pushes=self.pushes)
        finally:
            s.close()
        return [json.loads(line) for line in lines]

    def post_ok(self, *events, timeout=10.0):
        """Like post(), asserting that every reply is ok; returns the replies."""
        replies = self.post(*events, timeout=timeout)
        for ev, r in zip(events, replies):
            assert r.get("ok") is True, "event %r refused: %r" % (ev, r)
        return replies


@pytest.fixture
def make_daemon():
    started = []

    def factory(config=None, port=None, args=(), env=None, start=True):
        tmp = mkdtemp()  # removed after the test unless it (or this teardown) failed
        d = Daemon(tmp, config, port=port, args=args, env=env)
        started.append(d)
        if start:
            d.start()
        return d

    yield factory
    problems = []
    for d in started:
        problems.extend(d.finish())
    assert not problems, "\n".join(problems)


@pytest.fixture
def daemon(make_daemon):
    return make_daemon()


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "daemon_bug(text): a test that currently fails because of a daemon bug (see the report)"
    )
