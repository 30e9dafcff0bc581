"""Cluster mode's smoke test (SPEC §11, docs/cluster.md): two daemons sharing one redis-server that the
test starts on a Unix socket in a temporary directory. Producers post on both nodes at once; each node
holds the same events with the same seqs and cursors; a live SSE stream on one node gets every event of
the other's producers in order; a re-post on the other node is idempotent; Redis stopped: producers get
`unavailable`, /health 503 degraded, and both recover when it is back (an old cursor then gets stream.gap:
Redis came back empty). The big suite (three nodes, faults, load) is tests/e2e/test_cluster*.py of h-rtests.
"""

import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import mkdtemp
from csutil import Producer, SSEClient, health, history, poll, sse_events, wait_until

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"


class Redis:
    def __init__(self):
        self.dir = mkdtemp("cs-e2e-redis-")
        self.sock = os.path.join(self.dir, "r.sock")
        self.proc = None

    def start(self):
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        self.proc = subprocess.Popen(
            [REDIS, "--port", "0", "--unixsocket", self.sock, "--unixsocketperm", "700", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_until(lambda: os.path.exists(self.sock), timeout=5), "redis-server did not start"

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture
def redis():
    if not os.access(REDIS, os.X_OK):
        pytest.skip("redis-server is not installed (scripts/deps test)")
    r = Redis()
    r.start()
    yield r
    r.kill()


def nodes(make_daemon, redis, n=2):
    return [make_daemon({"cluster": {"redis": "unix:" + redis.sock, "node": "n%d" % i}}) for i in range(n)]


def test_post_on_both_read_on_both(make_daemon, redis):
    a, b = nodes(make_daemon, redis)
    x = "smoke-1"
    live = SSEClient(b.port, "/v1/executions/%s/events" % x)
    with Producer(a.sock) as pa, Producer(b.sock) as pb:
        acks = []
        for i in range(50):  # both nodes' producers at once: one batch each per turn, seqs interleave
            pa.send({"execution_id": x, "type": "log", "n": "a%d" % i, "event_id": "a%d" % i})
            pb.send({"execution_id": x, "type": "log", "n": "b%d" % i, "event_id": "b%d" % i})
        acks += pa.read(50) + pb.read(50)
        assert all(r["ok"] for r in acks), acks
        seqs = sorted(r["seq"] for r in acks)
        assert seqs == list(range(1, 101))  # Redis gave each seq once: no hole, no duplicate
        # A re-post on the other node is the same event: its original seq, stored once.
        again = pb.request({"execution_id": x, "type": "log", "n": "a7", "event_id": "a7"})[0]
        first = [r for r in acks if r["event_id"] == "a7"][0]
        assert again["ok"] and again["seq"] == first["seq"] and again.get("duplicate") is True
    ha = wait_until(lambda: len(history(a, x)["events"]) == 100, timeout=5) and history(a, x)
    hb = wait_until(lambda: len(history(b, x)["events"]) == 100, timeout=5) and history(b, x)
    assert ha and hb
    assert ha["events"] == hb["events"]  # the same bytes on both nodes
    assert [e["seq"] for e in ha["events"]] == list(range(1, 101))
    assert ha["last_event_id"] == hb["last_event_id"]  # the same cursor: Redis' epoch
    got = sse_events(live.collect(100, timeout=10))
    live.close()
    assert got == ha["events"]  # live on node b: every event of both nodes' producers, in seq order
    # A cursor from node a resumes on node b exactly.
    cur = ha["last_event_id"].rsplit("-", 1)[0] + "-60"
    rb = poll(b.base, "/v1/executions/%s/poll" % x, {"timeout": "0", "last_event_id": cur})
    assert [e["seq"] for e in rb.json()["events"]] == list(range(61, 101))


def test_redis_down_then_back(make_daemon, redis):
    a, b = nodes(make_daemon, redis)
    x = "smoke-2"
    with Producer(a.sock) as pa:
        r = pa.request({"execution_id": x, "type": "log"})[0]
        assert r["ok"] and r["seq"] == 1
    assert wait_until(lambda: len(history(b, x)["events"]) == 1, timeout=5)
    old = history(b, x)["last_event_id"]
    redis.kill()
    assert wait_until(lambda: health(a)[0] == 503, timeout=5)
    status, body = health(a)
    assert body["status"] == "degraded" and "cluster" in body["reason"]
    with Producer(a.sock) as pa:
        r = pa.request({"execution_id": x, "type": "log"})[0]
        assert r == {"ok": False, "error": "unavailable", "detail": r["detail"]}, r
    redis.start()  # empty: no persistence
    assert wait_until(lambda: health(a)[0] == 200 and health(b)[0] == 200, timeout=10)
    with Producer(a.sock) as pa:
        r = pa.request({"execution_id": x, "type": "log", "after": True})[0]
        assert r["ok"] and r["seq"] == 1  # a new history in Redis
    assert wait_until(lambda: history(b, x)["events"][-1].get("after") is True, timeout=5)
    rb = poll(b.base, "/v1/executions/%s/poll" % x, {"timeout": "0", "last_event_id": old})
    body = rb.json()
    assert body.get("gap") is True, body  # an old cursor is told, never given another history's events
