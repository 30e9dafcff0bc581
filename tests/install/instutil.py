"""Helpers of the install and Debian-package tests: start an installed daemon, wait for it."""
import os
import re
import socket
import subprocess
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("CREWSTREAM_BUILD", os.path.join(ROOT, "build"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(argv, timeout=120, check=True, **kw):
    """Runs argv; on failure the assertion shows its output."""
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check:
        assert p.returncode == 0, f"{argv} exited {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


class Daemon:
    """An installed crewstreamd on a free loopback port and a socket in tmp, stopped on exit."""

    def __init__(self, exe, tmp, config=None, env=None):
        self.port = free_port()
        self.socket = os.path.join(tmp, "ingest.sock")
        argv = [exe, "--listen", f"127.0.0.1:{self.port}", "--socket", self.socket]
        if config:
            argv += ["--config", config]
        self.log = open(os.path.join(tmp, "daemon.log"), "w+")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                                     env=env or {"PATH": "/usr/bin:/bin"})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the daemon exited {self.proc.returncode}: {self.output()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as r:
                    if r.status == 200 and os.path.exists(self.socket):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"the daemon did not become healthy: {self.output()}")

    def output(self):
        self.log.seek(0)
        return self.log.read()

    def events(self, execution):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v1/executions/{execution}", timeout=5) as r:
            return r.read().decode()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.stop()


def help_options(exe, *args):
    """Every --long option a program's --help names."""
    out = run([exe, *args, "--help"]).stdout
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]*[a-z]", out))


def cli_commands(cli):
    """The commands `crewstream --help` lists."""
    out = run([cli, "--help"]).stdout
    block = out.split("Commands:\n", 1)[1].split("\n\n", 1)[0]
    return [line.split()[0] for line in block.splitlines() if line.startswith("  ")]


def man_text(path):
    """A man page rendered as plain text, with groff's warnings (which must be none)."""
    env = dict(os.environ, LC_ALL="C.UTF-8", MANWIDTH="200")
    p = run(["man", "--warnings", "-E", "UTF-8", "-l", path], env=env)
    text = re.sub(r".\x08", "", p.stdout)
    # man hyphenates at line ends; the tests look for whole options.
    return text.replace("\u2010\n", "").replace("\u2010", "-"), p.stderr
