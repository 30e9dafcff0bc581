"""crewstream.Producer against the real daemon: acks, the window, refusals, resends after a cut
connection and after a daemon restart (nothing lost, nothing doubled), ask() answered over HTTP,
also across a cut and a restart; the asyncio flavour."""

import asyncio
import json
import signal
import socket
import threading
import time

import pytest

from csutil import UUID4_RE, http_json, wait_until

import crewstream
import crewstream.aio
from crewstream import RefusedError, RequestNotFoundError, UnavailableError, WindowFullError


def history(d, x):
    """Every event the daemon holds for execution x, in seq order."""
    status, _, body = http_json(d.port, "/v1/executions/%s/poll?since_seq=0&timeout=0" % x)
    assert status == 200, body
    return body["events"]


def answer(d, x, event_id, feedback, approve=True):
    body = json.dumps({"event_id": event_id, "human_feedback": feedback, "is_approve": approve})
    s = socket.create_connection(("127.0.0.1", d.port), timeout=5)
    try:
        s.sendall(
            (
                "POST /v1/executions/%s/human-input HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                "Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (x, len(body), body)
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
    return int(head.split()[1]), rest


def open_request(d, x, timeout=10.0):
    """The event_id of the open human-input request of x, once there is one."""

    def get():
        status, _, body = http_json(d.port, "/v1/executions/%s" % x)
        if status == 200 and body.get("pending_human_input"):
            return body["pending_human_input"][0]["event_id"]
        return None

    rid = wait_until(get, timeout)
    assert rid, "no open request in %s within %.0fs" % (x, timeout)
    return rid


def check_history_exact(d, x, acks):
    """The history of x holds each acknowledged event once, with its acked seq, numbered 1..n."""
    h = history(d, x)
    ids = [e["event_id"] for e in h]
    assert len(ids) == len(set(ids)), "an event stored twice"
    assert [e["seq"] for e in h] == list(range(1, len(h) + 1)), "holes in seq"
    by_id = {e["event_id"]: e["seq"] for e in h}
    for a in acks:
        assert by_id.get(a.event_id) == a.seq, "ack %r does not match the history" % (a,)
    return h


def test_post_acks_and_ids(daemon):
    with crewstream.Producer(daemon.sock) as p:
        a1 = p.post({"execution_id": "py-1", "type": "run.started"})
        a2 = p.post({"execution_id": "py-1", "type": "log", "message": "hi"})
        a3 = p.post({"execution_id": "py-1", "type": "log", "event_id": "mine-1"})
        assert (a1.seq, a2.seq, a3.seq) == (1, 2, 3)
        assert UUID4_RE.match(a1.event_id) and UUID4_RE.match(a2.event_id)
        assert a3.event_id == "mine-1"
        assert not a1.duplicate and not a1.resent and a1.connection == 1
        # The same event_id and type again: acknowledged with the original seq, not stored again.
        d = p.post({"execution_id": "py-1", "type": "log", "event_id": "mine-1"})
        assert d.duplicate and d.seq == 3
        p.ping()
    h = check_history_exact(daemon, "py-1", [a1, a2, a3])
    assert len(h) == 3 and h[1]["message"] == "hi"


def test_default_socket_path(monkeypatch):
    monkeypatch.setenv("CREWSTREAM_SOCKET", "/x/s.sock")
    assert crewstream.default_socket_path() == "/x/s.sock"
    monkeypatch.delenv("CREWSTREAM_SOCKET")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/7")
    assert crewstream.default_socket_path() == "/run/user/7/crewstream.sock"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert crewstream.default_socket_path() == "/tmp/crewstream.sock"


def test_connect_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        crewstream.Producer(str(tmp_path / "none.sock"))
    t0 = time.monotonic()
    with pytest.raises(FileNotFoundError):
        crewstream.Producer(str(tmp_path / "none.sock"), connect_timeout=0.5)
    assert 0.3 < time.monotonic() - t0 < 3


def test_pipelined_window(daemon):
    """A stopped daemon acknowledges nothing: the window fills, the next post waits post_timeout
    and raises WindowFullError with nothing queued; once the daemon goes on, every event is in."""
    with crewstream.Producer(daemon.sock, window=8) as p:
        futs = [p.submit({"execution_id": "py-win", "type": "log", "i": i}) for i in range(8)]
        for f in futs:
            f.result(10)
        daemon.proc.send_signal(signal.SIGSTOP)
        try:
            more = []
            t0 = time.monotonic()
            with pytest.raises(WindowFullError):
                for i in range(100):
                    more.append(p.submit({"execution_id": "py-win", "type": "log", "i": 8 + i}, timeout=0.3))
            assert time.monotonic() - t0 < 5
            assert len(more) == 8
            assert sum(1 for f in futs + more if not f.done()) <= 8
        finally:
            daemon.proc.send_signal(signal.SIGCONT)
        acks = [f.result(10) for f in futs + more]
        assert [a.seq for a in acks] == list(range(1, len(acks) + 1))
    check_history_exact(daemon, "py-win", acks)
    assert len(history(daemon, "py-win")) == len(acks)


def test_many_pipelined(daemon):
    with crewstream.Producer(daemon.sock, window=64) as p:
        acks = p.post_many([{"execution_id": "py-many", "type": "log", "i": i} for i in range(2000)], timeout=30)
    assert [a.seq for a in acks] == list(range(1, 2001))
    check_history_exact(daemon, "py-many", acks)


def test_refusals_raised(make_daemon):
    d = make_daemon({"limits": {"max_event_bytes": 4096}})
    with crewstream.Producer(d.sock) as p:
        with pytest.raises(RefusedError) as e:
            p.post({"execution_id": "bad id!", "type": "log"})
        assert e.value.code == "invalid_field" and "execution_id" in e.value.detail
        with pytest.raises(RefusedError) as e:
            p.post({"execution_id": "py-ref"})
        assert e.value.code == "missing_field"
        with pytest.raises(RefusedError) as e:
            p.post({"execution_id": "py-ref", "type": "log", "blob": "x" * 10000})
        assert e.value.code == "too_large"
        with pytest.raises(ValueError):
            p.post({"execution_id": "py-ref", "type": "log", "op": "ping"})
        # The connection goes on after refusals.
        assert p.post({"execution_id": "py-ref", "type": "log"}).seq == 1
        assert p.stats["refused"] == 3


class FakeIngest:
    """A Unix socket server that answers each line from a script (for ``unavailable``, which the
    real daemon gives only when its store is full of what may not be evicted)."""

    def __init__(self, path, replies):
        self.path = path
        self.replies = replies  # function(line_number, obj) -> reply dict
        self.lines = []
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(4)
        self.srv.settimeout(0.2)
        self.stop = False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop:
            try:
                c, _ = self.srv.accept()
            except OSError:
                continue
            c.settimeout(0.2)
            buf = b""
            while not self.stop:
                try:
                    chunk = c.recv(65536)
                except socket.timeout:
                    continue
                if not chunk:
                    break
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    obj = json.loads(line)
                    self.lines.append(obj)
                    c.sendall(json.dumps(self.replies(len(self.lines), obj)).encode() + b"\n")
            c.close()

    def close(self):
        self.stop = True
        self.t.join(2)
        self.srv.close()


def test_unavailable_retried_then_raised(tmp_path):
    path = str(tmp_path / "fake.sock")

    def replies(n, obj):
        if obj.get("type") == "flaky" and sum(1 for x in fake.lines if x.get("event_id") == obj["event_id"]) <= 2:
            return {"ok": False, "error": "unavailable", "detail": "store.max_bytes is full"}
        if obj.get("type") == "never":
            return {"ok": False, "error": "unavailable", "detail": "store.max_bytes is full"}
        return {"ok": True, "seq": n, "event_id": obj["event_id"]}

    fake = FakeIngest(path, replies)
    try:
        with crewstream.Producer(path, unavailable_retries=3) as p:
            a = p.post({"execution_id": "f", "type": "flaky"}, timeout=10)
            sent = [x for x in fake.lines if x.get("event_id") == a.event_id]
            assert len(sent) == 3, "sent twice more after two unavailable replies"
            assert p.stats["retried"] == 2
            t0 = time.monotonic()
            with pytest.raises(UnavailableError) as e:
                p.post({"execution_id": "f", "type": "never"}, timeout=20)
            assert e.value.code == "unavailable"
            assert len([x for x in fake.lines if x.get("type") == "never"]) == 4  # 1 + 3 retries
            assert time.monotonic() - t0 >= 0.6  # back-off 0.1 + 0.2 + 0.4
    finally:
        fake.close()


def test_resend_after_cut_connections(daemon):
    """The connection is cut again and again during a pipelined stream: every event is
    acknowledged once, the history holds each once, with the acked seqs."""
    n = 3000
    with crewstream.Producer(daemon.sock, window=256) as p:
        futs = []
        for i in range(n):
            futs.append(p.submit({"execution_id": "py-cut", "type": "log", "i": i}, timeout=30))
            if i % 400 == 399:
                p._break_connection()
        acks = [f.result(30) for f in futs]
        assert p.stats["reconnects"] >= 5
    assert [a.seq for a in acks] == list(range(1, n + 1))
    assert any(a.resent for a in acks), "no line was resent: the cuts did not bite"
    h = check_history_exact(daemon, "py-cut", acks)
    assert [e["i"] for e in h] == list(range(n)), "order changed"


def test_resend_across_daemon_restart(daemon):
    """The daemon is restarted mid-stream: every event is acknowledged once; what the new daemon
    acknowledged is in its history once each, numbered 1..n; nothing is stored twice; and what
    the old daemon acknowledged is either gone with it (no journal) or kept with its seq."""
    n = 1500
    with crewstream.Producer(daemon.sock, window=512) as p:
        futs = []
        restarted = False
        for i in range(n):
            futs.append(p.submit({"execution_id": "py-rs", "type": "log", "i": i}, timeout=60))
            if i == 600:
                wait_until(lambda: futs[300].done(), 10)
                daemon.restart()
                restarted = True
        assert restarted
        acks = [f.result(60) for f in futs]
    ids = {f.result().event_id for f in futs}
    assert len(ids) == n
    old = [a for a in acks if a.connection == 1]
    new = [a for a in acks if a.connection > 1]
    assert old and new, "the restart did not split the stream (%d/%d)" % (len(old), len(new))
    h = history(daemon, "py-rs")
    hid = [e["event_id"] for e in h]
    assert len(hid) == len(set(hid)), "an event stored twice"
    assert [e["seq"] for e in h] == list(range(1, len(h) + 1))
    by_id = {e["event_id"]: e["seq"] for e in h}
    for a in new:
        assert by_id.get(a.event_id) == a.seq
    kept = [a for a in old if a.event_id in by_id]
    assert len(kept) in (0, len(old)), "the new daemon holds part of the old history"
    for a in kept:
        assert by_id[a.event_id] == a.seq
    assert len(h) == len(new) + len(kept)


def ask_in_thread(p, x, **kw):
    out = {}

    def run():
        try:
            out["answer"] = p.ask(x, "Publish draft v1?", task_id="review", timeout=30, **kw)
        except Exception as e:  # noqa: BLE001
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def test_ask_answered_over_http(daemon):
    with crewstream.Producer(daemon.sock) as p:
        t, out = ask_in_thread(p, "py-ask", agent_id="editor")
        rid = open_request(daemon, "py-ask")
        status, body = answer(daemon, "py-ask", rid, "Ship it")
        assert status == 200, body
        t.join(10)
        a = out.get("answer")
        assert a is not None, out
        assert a.is_approve and a.approved and a.human_feedback == "Ship it"
        assert a.request_event_id == rid and a.task_id == "review" and a.execution_id == "py-ask"
        # Waiting again for an answered request returns it at once.
        assert p.wait_answer("py-ask", rid, timeout=1) == a
    # Another producer asks for an answer given long before: await brings it.
    with crewstream.Producer(daemon.sock) as q:
        assert q.wait_answer("py-ask", rid, timeout=5).human_feedback == "Ship it"
        with pytest.raises(RequestNotFoundError):
            q.wait_answer("py-ask", "no-such-request", timeout=5)
    _, _, st = http_json(daemon.port, "/v1/executions/py-ask")
    assert st["status"] == "running"


def test_ask_across_cut_connection(daemon):
    with crewstream.Producer(daemon.sock) as p:
        t, out = ask_in_thread(p, "py-ask-cut")
        rid = open_request(daemon, "py-ask-cut")
        p._break_connection()
        status, body = answer(daemon, "py-ask-cut", rid, "ok after the cut", approve=False)
        assert status == 200, body
        t.join(15)
        assert out.get("answer") is not None, out
        assert out["answer"].is_approve is False and out["answer"].human_feedback == "ok after the cut"
        assert p.stats["reconnects"] >= 1


def test_ask_across_daemon_restart(daemon):
    """The daemon restarts while ask() waits. Without a journal the new daemon does not know the
    request (await: not_found); ask() posts it again with the same event_id, and a person
    answers it on the new daemon."""
    with crewstream.Producer(daemon.sock) as p:
        t, out = ask_in_thread(p, "py-ask-rs")
        rid = open_request(daemon, "py-ask-rs")
        daemon.restart()
        rid2 = open_request(daemon, "py-ask-rs", timeout=15)
        assert rid2 == rid, "the request was not posted again with its event_id"
        status, body = answer(daemon, "py-ask-rs", rid, "answered after the restart")
        assert status == 200, body
        t.join(15)
        assert out.get("answer") is not None, out
        assert out["answer"].human_feedback == "answered after the restart"
        h = history(daemon, "py-ask-rs")
        assert [e["type"] for e in h].count("human_input_required") == 1


def test_ask_lost_without_repost(daemon):
    with crewstream.Producer(daemon.sock) as p:
        t, out = ask_in_thread(p, "py-ask-lost", repost_if_lost=False)
        open_request(daemon, "py-ask-lost")
        daemon.restart()
        t.join(15)
        assert isinstance(out.get("error"), RequestNotFoundError), out


def test_asyncio_flavour(daemon):
    async def main():
        p = await crewstream.aio.Producer.connect(daemon.sock, window=16)
        async with p:
            acks = await p.post_many([{"execution_id": "py-aio", "type": "log", "i": i} for i in range(100)])
            assert [a.seq for a in acks] == list(range(1, 101))
            a = await p.post({"execution_id": "py-aio", "type": "run.started"})
            assert a.seq == 101
            with pytest.raises(RefusedError):
                await p.post({"execution_id": "py-aio", "type": "bad type"})
            task = asyncio.ensure_future(p.ask("py-aio", "Go?", task_id="t", timeout=20))
            loop = asyncio.get_running_loop()
            rid = await loop.run_in_executor(None, open_request, daemon, "py-aio")
            status, _ = await loop.run_in_executor(None, answer, daemon, "py-aio", rid, "go")
            assert status == 200
            ans = await asyncio.wait_for(task, 20)
            assert ans.human_feedback == "go"
            return acks

    acks = asyncio.run(asyncio.wait_for(main(), 60))
    check_history_exact(daemon, "py-aio", acks)


def test_close_fails_unacked(daemon):
    p = crewstream.Producer(daemon.sock)
    daemon.proc.send_signal(signal.SIGSTOP)
    try:
        f = p.submit({"execution_id": "py-close", "type": "log"})
        p.close(flush_timeout=0.2)
        with pytest.raises(crewstream.ClosedError):
            f.result(2)
        with pytest.raises(crewstream.ClosedError):
            p.submit({"execution_id": "py-close", "type": "log"})
    finally:
        daemon.proc.send_signal(signal.SIGCONT)


def journaled(make_daemon, tmp_path):
    """A daemon with a journal (SPEC §8), or a skip when this daemon has none."""
    cfg = {"journal": {"dir": str(tmp_path / "journal"), "fsync": "always"},
           "store": {"ring_events": 8192, "ring_bytes": 16 * 1024 * 1024}}
    try:
        return make_daemon(cfg)
    except RuntimeError as e:
        if "journal" in str(e):
            pytest.skip("this daemon has no journal (SPEC §8)")
        raise


def crash_restart(d):
    """SIGKILL (a crash: nothing flushed at exit), then start again on the same journal."""
    d.stop(signal.SIGKILL)
    d.start()


def test_ask_across_restart_with_journal(make_daemon, tmp_path):
    """With a journal the daemon that restarts after a crash knows the request: await finds it
    (nothing posted again), and the answer given after the restart reaches ask()."""
    d = journaled(make_daemon, tmp_path)
    with crewstream.Producer(d.sock) as p:
        t, out = ask_in_thread(p, "py-ask-j", repost_if_lost=False)
        rid = open_request(d, "py-ask-j")
        crash_restart(d)
        assert open_request(d, "py-ask-j") == rid
        wait_until(lambda: p.stats["reconnects"] >= 1, 10)
        status, body = answer(d, "py-ask-j", rid, "after the restart")
        assert status == 200, body
        t.join(15)
        assert out.get("answer") is not None, out
        assert out["answer"].human_feedback == "after the restart"
    assert [e["type"] for e in history(d, "py-ask-j")] == ["human_input_required", "human_input_completed"]


def test_resend_across_restart_with_journal(make_daemon, tmp_path):
    """With a journal (fsync always) nothing acknowledged is lost in a crash mid-stream and
    nothing is doubled: the history holds every event once, with the seq of its ack."""
    d = journaled(make_daemon, tmp_path)
    n = 1500
    with crewstream.Producer(d.sock, window=512) as p:
        futs = []
        for i in range(n):
            futs.append(p.submit({"execution_id": "py-rsj", "type": "log", "i": i}, timeout=60))
            if i == 600:
                wait_until(lambda: futs[300].done(), 10)
                crash_restart(d)
        acks = [f.result(60) for f in futs]
    assert any(a.connection > 1 for a in acks) and any(a.connection == 1 for a in acks)
    h = check_history_exact(d, "py-rsj", acks)
    assert len(h) == n and [e["i"] for e in h] == list(range(n))
