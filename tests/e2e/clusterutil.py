"""Helpers for the cluster tests (SPEC §11): a real redis-server on a Unix socket in a temporary
directory, and N crewstreamd nodes on loopback ports sharing it.

    from clusterutil import redis, cluster3   # fixtures: import them into the test module

`redis` is a started Redis (no persistence unless a test restarts it with AOF); `cluster3` is three
nodes "a", "b", "c" configured with `"cluster": {"redis": "unix:<socket>", "node": …, "prefix": …}`.
`make_cluster(n, config=…, aof=…)` (fixture `cluster_factory`) builds other shapes. Tests skip, with
a message that says how to install it, when redis-server is missing (`scripts/deps test` installs it).

A `Redis` can be stopped (SIGTERM: with `--save ''` and no AOF it comes back empty), killed
(SIGKILL), frozen (SIGSTOP: connections stay open, nothing answers — the daemon's own timeouts must
notice) and thawed, restarted empty or with its AOF, and asked to kill the pub/sub connections
(`redis-cli -s SOCK CLIENT KILL TYPE pubsub`). `cmd(...)` speaks RESP directly for inspection.

Subscribers that read a whole execution in a thread (SSE, WebSocket, long-poll) are here too, so a
test can open them on every node before the producers start and check them afterwards.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse

import pytest

from conftest import mkdtemp
from csutil import RawWS, SSEClient, http_get, poll, wait_until

def _which(name):
    path = shutil.which(name) or "/usr/bin/" + name
    return path if os.path.exists(path) else None


REDIS_SERVER = _which("redis-server")
REDIS_CLI = _which("redis-cli")
NODE_NAMES = "abcdefgh"


def need_redis():
    if not REDIS_SERVER or not REDIS_CLI:
        pytest.skip("redis-server/redis-cli not installed: the cluster tests need Debian's redis-server "
                    "(apt-get install redis-server, or scripts/deps test)")


# ---- a tiny RESP client ------------------------------------------------------------------------------


class RespError(Exception):
    pass


def _resp_encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class _Reader:
    def __init__(self, sock, deadline):
        self.sock, self.buf, self.deadline = sock, b"", deadline

    def _more(self):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no answer from redis")
        self.sock.settimeout(left)
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("redis closed the connection")
        self.buf += chunk

    def line(self):
        while b"\r\n" not in self.buf:
            self._more()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def exact(self, n):
        while len(self.buf) < n + 2:
            self._more()
        data, self.buf = self.buf[:n], self.buf[n + 2 :]
        return data

    def reply(self):
        line = self.line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise AssertionError("bad RESP reply %r" % line)


def resp_command(path, *args, timeout=5.0):
    """One command on a fresh connection to the Unix socket; returns the decoded reply (bytes for
    bulk strings); raises RespError for an error reply."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(_resp_encode(args))
        r = _Reader(s, time.monotonic() + timeout).reply()
    finally:
        s.close()
    if isinstance(r, RespError):
        raise r
    return r


# ---- redis-server ------------------------------------------------------------------------------------


class Redis:
    """One redis-server on a Unix socket in its own temporary directory; with tcp_port also on that
    loopback port (127.0.0.1, and ::1 where the host has IPv6)."""

    def __init__(self, tmpdir=None, tcp_port=None):
        need_redis()
        self.dir = tmpdir or mkdtemp("cs-redis-")
        self.sock = os.path.join(self.dir, "r.sock")
        self.tcp_port = tcp_port
        self.proc = None
        self.aof = None  # None (no persistence), "everysec" or "always"
        self.starts = 0
        self.frozen = False

    @property
    def url(self):
        return "unix:" + self.sock

    def start(self, aof=None, timeout=10.0):
        """Starts redis-server; aof "everysec"/"always" turns the append-only file on (kept in self.dir,
        so a restart with the same aof finds the data again)."""
        assert self.proc is None or self.proc.poll() is not None, "redis already running"
        self.aof = aof
        self.starts += 1
        argv = [REDIS_SERVER, "--port", str(self.tcp_port or 0), "--unixsocket", self.sock, "--unixsocketperm", "700",
                "--save", "", "--dir", self.dir, "--logfile", os.path.join(self.dir, "redis.%d.log" % self.starts),
                "--daemonize", "no"]
        if self.tcp_port:
            argv += ["--bind", "127.0.0.1 -::1"]
        if aof:
            argv += ["--appendonly", "yes", "--appendfsync", aof]
        else:
            argv += ["--appendonly", "no"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited with %d:\n%s" % (self.proc.returncode, self.log()[-3000:]))
            try:
                if resp_command(self.sock, "PING", timeout=1.0) == "PONG":
                    break
            except (OSError, EOFError, TimeoutError, RespError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer PING within %.0fs:\n%s" % (timeout, self.log()))
            time.sleep(0.02)
        # Loading an AOF answers PING with -LOADING; wait until it serves.
        while True:
            try:
                resp_command(self.sock, "DBSIZE", timeout=1.0)
                return self
            except RespError as e:
                if "LOADING" not in str(e) or time.monotonic() > deadline:
                    raise
            time.sleep(0.02)

    def log(self):
        try:
            with open(os.path.join(self.dir, "redis.%d.log" % self.starts)) as f:
                return f.read()
        except OSError:
            return ""

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=10.0):
        """SIGTERM: a clean shutdown (the AOF, when on, is flushed); returns the exit code."""
        self.thaw()
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def kill(self):
        """SIGKILL: gone at once (with `appendfsync always` nothing acknowledged is lost)."""
        if self.running():
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        self.frozen = False
        return self.proc.wait(5)

    def freeze(self):
        """SIGSTOP: its sockets stay open but nothing is answered."""
        self.proc.send_signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self):
        if self.frozen and self.running():
            self.proc.send_signal(signal.SIGCONT)
        self.frozen = False

    def wipe(self):
        """Removes the persisted data (AOF directory, RDB): the next start is empty."""
        assert not self.running()
        for name in os.listdir(self.dir):
            p = os.path.join(self.dir, name)
            if name.startswith("appendonly") or name.endswith(".rdb"):
                shutil.rmtree(p) if os.path.isdir(p) else os.unlink(p)

    def restart_empty(self, aof=None):
        """Killed and started again with nothing: what a Redis without persistence looks like after a crash."""
        self.kill()
        self.wipe()
        return self.start(aof=aof)

    def restart(self, aof=None, kill=False):
        """Stopped (or killed) and started again with the same AOF setting (so the data comes back when
        it had one), or with `aof` when given."""
        self.kill() if kill else self.stop()
        return self.start(aof=aof if aof is not None else self.aof)

    def cmd(self, *args, timeout=5.0):
        return resp_command(self.sock, *args, timeout=timeout)

    def cli(self, *args, timeout=10.0):
        """redis-cli -s SOCK ARGS…: stdout as text (raises on a non-zero exit)."""
        r = subprocess.run([REDIS_CLI, "-s", self.sock] + [str(a) for a in args], capture_output=True, text=True,
                           timeout=timeout)
        assert r.returncode == 0, "redis-cli %r: %d %s %s" % (args, r.returncode, r.stdout, r.stderr)
        return r.stdout.strip()

    def kill_pubsub(self):
        """CLIENT KILL TYPE pubsub: cuts every subscribed connection; returns how many were cut."""
        out = self.cli("CLIENT", "KILL", "TYPE", "pubsub")
        try:
            return int(out.split()[-1])
        except (ValueError, IndexError):
            raise AssertionError("CLIENT KILL answered %r" % out)

    def clients(self, kind=None):
        """CLIENT LIST [TYPE kind] as a list of dicts."""
        args = ["CLIENT", "LIST"] + (["TYPE", kind] if kind else [])
        text = self.cmd(*args).decode()
        out = []
        for line in text.splitlines():
            out.append(dict(kv.split("=", 1) for kv in line.split() if "=" in kv))
        return out

    def cpu_s(self):
        return proc_cpu_s(self.proc.pid)

    def finish(self):
        if self.proc is not None:
            self.thaw()
            if self.running():
                self.proc.kill()
            self.proc.wait(5)


def entry_events(eid, fields):
    """[(seq, JSON bytes)] of one stream entry. Three shapes (docs/cluster.md "Keys"), the id always
    "<last seq>-0": the events of one script call for one execution, fields f -> the first seq and b -> the
    events, each "<json_len>\\n<json>"; the same written per event (session 10), fields "<seq>" -> JSON;
    one event, field j (before)."""
    kv = dict(zip(fields[::2], fields[1::2]))
    last = int(eid.split(b"-")[0])
    if list(fields[::2]) == [b"f", b"b"]:
        out, b, off = [], kv[b"b"], 0
        for seq in range(int(kv[b"f"]), last + 1):
            nl = b.index(b"\n", off)
            n = int(b[off:nl])
            out.append((seq, b[nl + 1:nl + 1 + n]))
            off = nl + 1 + n
        assert off == len(b), (eid, fields)
        return out
    if b"j" in kv:
        return [(last, kv[b"j"])]
    return [(int(f), v) for f, v in zip(fields[::2], fields[1::2])]


def stream_events(redis, key):
    """[(seq, JSON bytes)] of an execution's stream, in order (entry_events)."""
    out = []
    for eid, fields in redis.cmd("XRANGE", key, "-", "+"):
        out.extend(entry_events(eid, fields))
    return out


def proc_cpu_s(pid):
    """user+sys CPU seconds of a process (/proc/PID/stat utime+stime)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- a proxy in front of Redis that can hold back one connection's replies -----------------------------


class StallProxy:
    """A Unix-socket proxy in front of a Redis, for one node: `unix:<proxy.sock>` as its cluster.redis.
    Each connection is tagged by the client name the daemon gives it (CLIENT SETNAME crewstream-<node>-cmd
    or -sub). `stall("cmd")` holds back what Redis answers on the command connections (requests go on
    reaching Redis) until `release()`: a node's XRANGE fill stays in flight while its channel goes on.
    Keep a stall under the daemon's reply timeout (2 s), or it drops the connection. Threads, all daemon."""

    def __init__(self, redis):
        self.target = redis.sock
        self.sock = os.path.join(redis.dir, "proxy.sock")
        self.stalled = set()
        self.lock = threading.Lock()
        self.conns = []
        self.closed = False
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(self.sock)
        self.srv.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self):
        return "unix:" + self.sock

    def stall(self, kind):
        self.stalled.add(kind)

    def release(self):
        self.stalled.clear()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                u.connect(self.target)
            except OSError:
                c.close()
                continue
            conn = {"c": c, "u": u, "kind": None}
            with self.lock:
                self.conns.append(conn)
            threading.Thread(target=self._up, args=(conn,), daemon=True).start()
            threading.Thread(target=self._down, args=(conn,), daemon=True).start()

    def _up(self, conn):
        seen = b""
        try:
            while True:
                data = conn["c"].recv(65536)
                if not data:
                    break
                if conn["kind"] is None:
                    seen = (seen + data)[-4096:]
                    for kind in ("cmd", "sub"):
                        if b"-" + kind.encode() + b"\r\n" in seen:
                            conn["kind"] = kind
                conn["u"].sendall(data)
        except OSError:
            pass
        self._shut(conn)

    def _down(self, conn):
        try:
            while True:
                data = conn["u"].recv(1 << 20)
                if not data:
                    break
                while conn["kind"] in self.stalled and not self.closed:
                    time.sleep(0.005)
                conn["c"].sendall(data)
        except OSError:
            pass
        self._shut(conn)

    def _shut(self, conn):
        for k in ("c", "u"):
            try:
                conn[k].shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.closed = True
        self.release()
        try:
            self.srv.close()
        except OSError:
            pass
        with self.lock:
            for conn in self.conns:
                self._shut(conn)
                conn["c"].close()
                conn["u"].close()


# ---- nodes --------------------------------------------------------------------------------------------


def cluster_config(redis, node, prefix="cs:", config=None):
    from conftest import deep_merge

    base = {"cluster": {"redis": redis.url, "node": node, "prefix": prefix}}
    return deep_merge(base, json.loads(json.dumps(config or {})))


class Cluster:
    """N nodes sharing one Redis; nodes[i].name is its cluster.node."""

    def __init__(self, redis, nodes):
        self.redis = redis
        self.nodes = nodes

    def __getitem__(self, i):
        return self.nodes[i]

    def __iter__(self):
        return iter(self.nodes)

    def __len__(self):
        return len(self.nodes)

    def healthy(self):
        return all(health_status(n) == 200 for n in self.nodes if n.running())

    def wait_healthy(self, timeout=15.0):
        ok = wait_until(self.healthy, timeout, 0.1)
        assert ok, "not every node healthy within %.0fs: %r" % (
            timeout, [(n.name, health_status(n)) for n in self.nodes if n.running()])


def health_status(d, timeout=3.0):
    try:
        return http_get(d.port, "/health", timeout=timeout)[0]
    except OSError:
        return None


@pytest.fixture
def redis():
    r = Redis()
    r.start()
    yield r
    r.finish()


# CS_CLUSTER_SELFTEST=1 checks the tests themselves against the single-node daemon: every "node" of a
# cluster is then one daemon started without the cluster key, so each data-path test must pass there
# too (a test that needs a real cluster, with Redis faults or a node killed, skips). It is a check of
# the tests' own logic while cluster mode is being built, never a substitute for running them.
SELFTEST = os.environ.get("CS_CLUSTER_SELFTEST") == "1"


def need_real_cluster():
    if SELFTEST:
        pytest.skip("CS_CLUSTER_SELFTEST: needs real cluster nodes")


class Alias:
    """Another name for a daemon (CS_CLUSTER_SELFTEST): attributes are the daemon's but `name`."""

    def __init__(self, d, name):
        self.__dict__["_d"] = d
        self.__dict__["name"] = name

    def __getattr__(self, k):
        return getattr(self._d, k)

    def __setattr__(self, k, v):
        setattr(self._d, k, v)


@pytest.fixture
def cluster_factory(redis, make_daemon):
    """make(n=3, config=None, prefix="cs:", names=None) -> Cluster on the test's Redis. Nodes are torn
    down (SIGTERM, exit 0, no sanitizer report) by make_daemon before the Redis is."""

    def make(n=3, config=None, prefix="cs:", names=None):
        names = names or NODE_NAMES[:n]
        nodes = []
        if SELFTEST:
            d = make_daemon(json.loads(json.dumps(config or {})))
            return Cluster(redis, [Alias(d, name) for name in names])
        for name in names:
            d = make_daemon(cluster_config(redis, name, prefix, config))
            d.name = name
            nodes.append(d)
        return Cluster(redis, nodes)

    return make


@pytest.fixture
def cluster3(cluster_factory):
    return cluster_factory(3)


def add_node(make_daemon, cluster, name, config=None, prefix="cs:"):
    if SELFTEST:
        a = Alias(cluster.nodes[0]._d, name)
        cluster.nodes.append(a)
        return a
    d = make_daemon(cluster_config(cluster.redis, name, prefix, config))
    d.name = name
    cluster.nodes.append(d)
    return d


# ---- whole-execution subscribers, each in a thread -------------------------------------------------------


class Reader(threading.Thread):
    """Reads one execution's events until `n` real events (stream.gap counts as one when it comes) or
    `timeout`. `events` are dicts in arrival order; `ids` the SSE ids / long-poll cursors that came with
    them. `error` holds an exception the reader hit."""

    kind = "?"

    def __init__(self, node, x, n, timeout=30.0, query="", headers=None):
        super().__init__(daemon=True)
        self.node, self.x, self.n, self.timeout, self.query = node, x, n, timeout, query
        self.headers = headers or {}
        self.events, self.ids = [], []
        self.error = None
        self.ready = threading.Event()

    def real(self):
        return [e for e in self.events if e.get("type") != "stream.gap"]

    def done(self):
        return len(self.real()) >= self.n

    def run(self):
        try:
            self.read()
        except Exception as e:  # reported by the test
            self.error = e
        finally:
            self.ready.set()

    def describe(self):
        return "%s on node %s for %s" % (self.kind, getattr(self.node, "name", "?"), self.x)


class SSEReader(Reader):
    kind = "sse"

    def open(self):
        path = "/v1/executions/%s/events" % self.x + ("?" + self.query if self.query else "")
        self.client = SSEClient(self.node.port, path, headers=self.headers, timeout=5)
        assert self.client.status == 200, "%s: status %s" % (self.describe(), self.client.status)
        return self

    def read(self):
        deadline = time.monotonic() + self.timeout
        try:
            while not self.done() and time.monotonic() < deadline:
                f = self.client.next_event(min(1.0, max(0.0, deadline - time.monotonic())))
                if f is None:
                    continue
                self.events.append(f.json())
                self.ids.append(f.id)
        finally:
            self.client.close()


class WSReader(Reader):
    kind = "ws"

    def open(self):
        path = "/v1/executions/%s/ws" % self.x + ("?" + self.query if self.query else "")
        self.client = RawWS(self.node.port, path, headers=self.headers)
        assert self.client.status == 101, "%s: status %s" % (self.describe(), self.client.status)
        return self

    def read(self):
        deadline = time.monotonic() + self.timeout
        try:
            while not self.done() and time.monotonic() < deadline:
                m = self.client.next_message(min(1.0, max(0.0, deadline - time.monotonic())))
                if m is None:
                    continue
                e = json.loads(m)
                if e.get("type") in ("heartbeat",):
                    continue
                self.events.append(e)
                self.ids.append(e.get("event_id"))
        finally:
            self.client.close()


class PollReader(Reader):
    """Long-polls with the cursor of the last answer (`last_event_id`), as a long-poll client does."""

    kind = "poll"

    def open(self):
        self.params = dict(urllib.parse.parse_qsl(self.query))
        return self

    def read(self):
        deadline = time.monotonic() + self.timeout
        params = dict(self.params)
        while not self.done() and time.monotonic() < deadline:
            r = poll(self.node.base, "/v1/executions/%s/poll" % self.x, dict(params, timeout="2"),
                     headers=self.headers, http_timeout=10)
            assert r.status_code == 200, "%s: %d %s" % (self.describe(), r.status_code, r.text[:300])
            body = r.json()
            if body.get("gap"):
                self.events.append({"type": "stream.gap", "first_seq": body.get("first_seq"), "poll": True})
                self.ids.append(None)
            for e in body["events"]:
                self.events.append(e)
                self.ids.append(body.get("last_event_id"))
            if body["events"] or body.get("gap"):  # after a gap alone: from the position it gives (null: the start)
                # The query's other parameters (types=, …) stay; only the cursor moves on.
                params = {k: v for k, v in self.params.items() if k != "last_event_id"}
                if body["last_event_id"]:
                    params["last_event_id"] = body["last_event_id"]


READERS = {"sse": SSEReader, "ws": WSReader, "poll": PollReader}


def reader(kind, node, x, n, timeout=30.0, query="", headers=None, start=True):
    r = READERS[kind](node, x, n, timeout, query, headers).open()
    if start:
        r.start()
    return r


def join_all(readers, timeout=60.0):
    deadline = time.monotonic() + timeout
    for r in readers:
        r.join(max(0.1, deadline - time.monotonic()))
    stuck = [r.describe() for r in readers if r.is_alive()]
    assert not stuck, "readers still running: %r" % stuck
    errors = [(r.describe(), r.error) for r in readers if r.error]
    assert not errors, errors


def check_exact(r, want, first=None):
    """r's events are exactly `want` (a list of (seq, event_id)), in order, none missing or doubled."""
    got = [(e.get("seq"), e.get("event_id")) for e in r.events]
    gaps = [e for e in r.events if e.get("type") == "stream.gap"]
    assert not gaps, "%s: unexpected stream.gap %r" % (r.describe(), gaps[:2])
    if got != want:
        miss = [w for w in want if w not in got]
        extra = [g for g in got if g not in want]
        dup = len(got) - len(set(got))
        raise AssertionError("%s: %d events, want %d; missing %r…, extra %r…, %d doubled, first got %r" % (
            r.describe(), len(got), len(want), miss[:5], extra[:5], dup, got[:5]))


# ---- producers ------------------------------------------------------------------------------------------


class Posting(threading.Thread):
    """Posts `events` on one node's ingest socket in pipelined batches; `acks[i]` answers events[i].

    With `retry_unavailable`, a line answered `unavailable` is sent again (the same line, so the same
    event_id: SPEC §3 allows it) until it is acknowledged or 20 s pass; `retries` counts them."""

    def __init__(self, node, events, batch=20, pause=0.0, timeout=60.0, retry_unavailable=False):
        super().__init__(daemon=True)
        self.node, self.events, self.batch, self.pause, self.timeout = node, events, batch, pause, timeout
        self.retry_unavailable = retry_unavailable
        self.acks = []
        self.retries = 0
        self.error = None

    def run(self):
        from csutil import Producer

        try:
            with Producer(self.node.sock, timeout=10) as p:
                for i in range(0, len(self.events), self.batch):
                    chunk = self.events[i : i + self.batch]
                    acks = p.request(*chunk, timeout=self.timeout)
                    deadline = time.monotonic() + 20
                    while self.retry_unavailable and time.monotonic() < deadline:
                        again = [k for k, a in enumerate(acks) if a.get("error") == "unavailable"]
                        if not again:
                            break
                        self.retries += len(again)
                        time.sleep(0.05)
                        for k, a in zip(again, p.request(*[chunk[k] for k in again], timeout=self.timeout)):
                            acks[k] = a
                    self.acks += acks
                    if self.pause:
                        time.sleep(self.pause)
        except Exception as e:
            self.error = e

    def refused(self):
        """(event_id, reply) of every line not acknowledged."""
        return [(e.get("event_id"), a) for e, a in zip(self.events, self.acks) if not a.get("ok")]


def node_metrics(d):
    from csutil import metric_values

    return metric_values(d)
