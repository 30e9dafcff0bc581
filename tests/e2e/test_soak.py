"""A bounded mixed-load soak: everything at once against a small store, then SIGTERM.

Producers post runs of events (some large, some human-input requests that a person answers over
HTTP, /resume or WebSocket while the producer waits for the pushed answer, some awaited again from
another connection); subscribers come and go on SSE, WebSocket and long-poll and check what they
see is in order; slow clients never read; malformed HTTP arrives throughout; the limits are
reloaded with SIGHUP every couple of seconds; a pinger measures how long the loop takes to answer.
The store is far smaller than what is posted, so every eviction step runs all the time.

At the end: the daemon is healthy, every event it acknowledged is either retained exactly (same
seq, same event_id, no hole up to the last acknowledged seq) or older than everything retained
for its execution; every answered request reached its runtime exactly once; SIGTERM exits 0; the
fixture fails the test on any sanitizer report. Bounded: SOAK_S seconds of load (default 20), and
every client call has a deadline.
"""

import json
import os
import random
import signal
import socket
import threading
import time

from csutil import RawWS, SSEClient, encode_line, http_get, http_raw, is_push, rss_kib

SOAK_S = float(os.environ.get("CS_SOAK_S", "20"))
TOKEN = "soak-secret-token"
AUTH = {"Authorization": "Bearer " + TOKEN}

CONFIG = {
    "store": {"max_bytes": 256 * 1024, "ring_events": 64, "ring_bytes": 64 * 1024, "retain_s": 3},
    "limits": {"stall_s": 2, "max_event_bytes": 64 * 1024},
    "auth": {
        "tokens": [
            {"name": "soak", "token": TOKEN, "scopes": ["read", "respond", "publish", "admin"], "executions": ["*"]}
        ]
    },
    "heartbeat_s": 1,
    "log": {"level": "info"},
}


def sanitized():
    return "asan" in os.environ.get("CREWSTREAM_BUILD", "") or "asan" in os.environ.get("CREWSTREAMD", "")



class Ledger:
    """What the daemon acknowledged, and what went wrong, shared by the load threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.acked = {}  # execution -> [(seq, event_id)] in ack order
        self.errors = []  # invariant violations (each a string)
        self.counts = {}
        self.answered = {}  # (execution, request event_id) -> answer event_id
        self.pushes = {}  # (execution, request event_id) -> pushes seen on the posting connection

    def count(self, what, n=1):
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + n

    def fail(self, msg):
        with self.lock:
            if len(self.errors) < 50:
                self.errors.append(msg)

    def ack(self, execution, seq, event_id):
        with self.lock:
            self.acked.setdefault(execution, []).append((seq, event_id))

    def recent(self):
        with self.lock:
            keys = list(self.acked)
        return keys[-20:]


class IngestConn:
    """A producer connection: one reply per line in order, pushes collected apart."""

    def __init__(self, path, timeout=10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""
        self.pushes = []

    def _line(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("ingest connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def request(self, *events):
        self.sock.sendall(b"".join(encode_line(e) for e in events))
        out = []
        while len(out) < len(events):
            line = self._line()
            if is_push(line):
                self.pushes.append(json.loads(line))
            else:
                out.append(json.loads(line))
        return out

    def wait_push(self, pred, timeout):
        deadline = time.monotonic() + timeout
        while True:
            for p in self.pushes:
                if pred(p):
                    return p
            if time.monotonic() > deadline:
                return None
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                line = self._line()
            except socket.timeout:
                continue
            finally:
                self.sock.settimeout(10.0)
            if is_push(line):
                self.pushes.append(json.loads(line))
            else:
                raise AssertionError("a reply line with no request outstanding: %r" % line)

    def close(self):
        self.sock.close()


def answer(d, how, execution, request_id, task_id):
    """Answers one request by one of the three routes; returns the HTTP-like status."""
    body = {"human_feedback": "ok from " + how + " " + "f" * random.choice([0, 100, 30000]), "is_approve": True}
    if how == "exec":
        body["event_id"] = request_id
        data = json.dumps(body).encode()
        req = (
            "POST /v1/executions/%s/human-input HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            "Authorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % (execution, TOKEN, len(data))
        ).encode() + data
    elif how == "resume":
        body.update(execution_id=execution, task_id=task_id)
        data = json.dumps(body).encode()
        req = (
            "POST /resume HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer %s\r\n"
            "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (TOKEN, len(data))
        ).encode() + data
    else:
        ws = RawWS(d.port, "/v1/executions/%s/ws?token=%s&since=now" % (execution, TOKEN), timeout=10.0)
        try:
            if ws.status != 101:
                return ws.status
            body["event_id"] = request_id
            ws._send_frame(0x1, json.dumps(body).encode())
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                m = ws.next_message(timeout=max(0.1, deadline - time.monotonic()))
                if m is None:
                    continue
                o = json.loads(m)
                if o.get("type") == "ack":
                    return 200
                if o.get("type") == "error":
                    return {"not_found": 404, "conflict": 409}.get(o.get("error"), 503)
            return None
        finally:
            ws.close()
    status, _, _, _ = http_raw(d.port, req, timeout=10.0)
    return status


def producer(d, ledger, pid, stop):
    rnd = random.Random(pid)
    conn = IngestConn(d.sock)
    run = 0
    try:
        while not stop.is_set():
            run += 1
            ex = "soak-%d-%d" % (pid, run)
            n = rnd.randint(5, 40)
            batch = []
            for i in range(n):
                size = rnd.choice([20, 200, 2000, 20000, 45000]) if i % 7 == 3 else rnd.randint(0, 100)
                e = {"execution_id": ex, "type": "log" if i else "run.started", "message": "x" * size}
                if rnd.random() < 0.2:
                    e["event_id"] = "%s-e%d" % (ex, i)
                batch.append(e)
            if rnd.random() < 0.3:
                batch.append(dict(batch[-1]))  # an idempotent re-post (or a new event without an id)
            replies = conn.request(*batch)
            for e, r in zip(batch, replies):
                if r.get("ok"):
                    ledger.ack(ex, r["seq"], r["event_id"])
                    ledger.count("acked")
                else:
                    ledger.count("refused:" + r.get("error", "?"))
                    if r.get("error") not in ("unavailable", "too_large"):
                        ledger.fail("event refused unexpectedly: %r" % r)
            if rnd.random() < 0.5:
                task = "task-%d" % run
                req = {
                    "execution_id": ex,
                    "type": "human_input_required",
                    "task_id": task,
                    "prompt": "approve? " + "p" * rnd.choice([10, 1000, 8000, 40000]),
                }
                (r,) = conn.request(req)
                if r.get("ok"):
                    ledger.ack(ex, r["seq"], r["event_id"])
                    how = rnd.choice(["exec", "resume", "ws"])
                    status = answer(d, how, ex, r["event_id"], task)
                    ledger.count("answer:%s:%s" % (how, status))
                    if status == 200:
                        key = (ex, r["event_id"])
                        with ledger.lock:
                            ledger.answered[key] = how
                        p = conn.wait_push(lambda p: p.get("request_event_id") == r["event_id"], 10.0)
                        if p is None:
                            ledger.fail("no push for answered request %r (%s)" % (key, how))
                    elif status != 503:
                        # An open request pins its execution: it cannot be gone (404) or answered (409).
                        ledger.fail("answer by %s to an open request got %r" % (how, status))
                else:
                    ledger.count("refused:" + r.get("error", "?"))
            if rnd.random() < 0.5:
                (r,) = conn.request({"execution_id": ex, "type": "run.completed", "result": "done"})
                if r.get("ok"):
                    ledger.ack(ex, r["seq"], r["event_id"])
    except Exception as e:  # noqa: BLE001 - any failure of a load thread fails the test
        ledger.fail("producer %d: %r" % (pid, e))
    finally:
        with ledger.lock:
            for p in conn.pushes:
                key = (p.get("execution_id"), p.get("request_event_id"))
                ledger.pushes[key] = ledger.pushes.get(key, 0) + 1
        conn.close()


def awaiter(d, ledger, stop):
    """Sends `await` again for answered requests from another connection: the answer comes back."""
    try:
        conn = IngestConn(d.sock)
        while not stop.is_set():
            with ledger.lock:
                keys = list(ledger.answered)[-10:]
            for ex, rid in keys:
                (r,) = conn.request({"op": "await", "execution_id": ex, "event_id": rid})
                if r.get("ok"):
                    ledger.count("await:ok")
                else:
                    ledger.count("await:" + r.get("error", "?"))
                    if r.get("error") != "not_found":
                        ledger.fail("await refused: %r" % r)
            time.sleep(0.2)
        conn.close()
    except Exception as e:  # noqa: BLE001
        ledger.fail("awaiter: %r" % e)


def check_order(ledger, where, events):
    """One subscription's events: consecutive seqs, except after a stream.gap."""
    prev = None
    for o in events:
        if o.get("type") == "stream.gap":
            prev = o["first_seq"] - 1
            ledger.count("gap")
            continue
        if o.get("type") == "heartbeat":
            continue
        s = o.get("seq")
        if prev is not None and s != prev + 1:
            ledger.fail("%s: seq %r after %r" % (where, s, prev))
        prev = s


def subscribers(d, ledger, sid, stop):
    rnd = random.Random(1000 + sid)
    try:
        while not stop.is_set():
            recent = ledger.recent()
            if not recent:
                time.sleep(0.05)
                continue
            ex = rnd.choice(recent)
            kind = rnd.choice(["sse", "ws", "poll"])
            got = []
            if kind == "sse":
                with SSEClient(d.port, "/v1/executions/%s/events?token=%s" % (ex, TOKEN), timeout=10.0) as c:
                    if c.status != 200:
                        ledger.fail("sse status %r" % c.status)
                        continue
                    deadline = time.monotonic() + rnd.uniform(0.1, 0.5)
                    while time.monotonic() < deadline:
                        f = c.next_event(timeout=0.1)
                        if f is not None:
                            got.append(f.json())
            elif kind == "ws":
                ws = RawWS(d.port, "/v1/executions/%s/ws?token=%s" % (ex, TOKEN), timeout=10.0)
                try:
                    if ws.status != 101:
                        ledger.fail("ws status %r" % ws.status)
                        continue
                    deadline = time.monotonic() + rnd.uniform(0.1, 0.5)
                    while time.monotonic() < deadline:
                        m = ws.next_message(timeout=0.1)
                        if m is not None:
                            got.append(json.loads(m))
                finally:
                    ws.close()
            else:
                status, _, body = http_get(d.port, "/v1/executions/%s/poll?timeout=0&token=%s" % (ex, TOKEN), timeout=10.0)
                if status != 200:
                    ledger.fail("poll status %r" % status)
                    continue
                o = json.loads(body)
                if o.get("gap"):
                    got.append({"type": "stream.gap", "first_seq": o["first_seq"]})
                got.extend(o["events"])
            check_order(ledger, "%s %s" % (kind, ex), got)
            ledger.count("sub:" + kind)
    except Exception as e:  # noqa: BLE001
        ledger.fail("subscriber %d: %r" % (sid, e))


def slow_clients(d, ledger, stop):
    """Clients that never read, on both streaming transports, replaced as they are dropped."""
    held = []
    try:
        while not stop.is_set():
            recent = ledger.recent()
            if recent and len(held) < 8:
                ex = random.choice(recent)
                if len(held) % 2:
                    held.append(SSEClient(d.port, "/v1/events?token=%s" % TOKEN, rcvbuf=2048, timeout=10.0))
                else:
                    held.append(RawWS(d.port, "/v1/executions/%s/ws?token=%s" % (ex, TOKEN), rcvbuf=2048, timeout=10.0))
            time.sleep(0.3)
    except Exception as e:  # noqa: BLE001
        ledger.fail("slow clients: %r" % e)
    finally:
        for c in held:
            c.close()


MALFORMED = [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,
    b"GET /v1/executions/x/events HTTP/1.1\r\nHost: x\r\n",  # never completed
    b"GET / HTTP/1.1\r\n" + b"X-Long: " + b"a" * 12000 + b"\r\n\r\n",
    b"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
    + b"\r\nContent-Length: 7\r\n\r\n{nope}\n",
    b"POST /resume HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
    + b"\r\nContent-Length: 2\r\n\r\n[]",
    b"POST /resume HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000,
    b"GET /v1/executions/%00/events HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v1/events?token=wrong HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /health HTTP/1.0\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v1/executions/x/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"\r\n\r\n\r\n",
    b"DELETE /v1/executions HTTP/1.1\r\nHost: x\r\n\r\n",
]


def malformed(d, ledger, stop):
    rnd = random.Random(7)
    try:
        while not stop.is_set():
            req = rnd.choice(MALFORMED)
            try:
                http_raw(d.port, req, timeout=0.5)
            except (OSError, ValueError, IndexError):
                pass
            ledger.count("malformed")
            time.sleep(0.01)
    except Exception as e:  # noqa: BLE001
        ledger.fail("malformed: %r" % e)


def reloader(d, ledger, stop):
    configs = [(64, 256 * 1024), (16, 128 * 1024), (32, 96 * 1024)]
    i = 0
    while not stop.wait(2.0):
        i += 1
        ring, mb = configs[i % len(configs)]
        d.config["store"]["ring_events"] = ring
        d.config["store"]["max_bytes"] = mb
        with open(d.cfg_path, "w") as f:
            json.dump(d.config, f)
        d.proc.send_signal(signal.SIGHUP)
        ledger.count("sighup")


def pinger(d, ledger, stop, worst):
    try:
        conn = IngestConn(d.sock)
        while not stop.wait(0.1):
            t0 = time.monotonic()
            (r,) = conn.request({"op": "ping"})
            dt = time.monotonic() - t0
            worst[0] = max(worst[0], dt)
            if r.get("op") != "pong":
                ledger.fail("ping answered %r" % r)
        conn.close()
    except Exception as e:  # noqa: BLE001
        ledger.fail("pinger: %r" % e)


def verify_one(d, ledger, ex, acks):
    """acks: (seq, event_id) acknowledged for ex, in order. Returns how many were found retained."""
    # An execution freed and begun again starts over at seq 1: judge the last history only.
    start = 0
    for i in range(1, len(acks)):
        if acks[i][0] < acks[i - 1][0] and acks[i][0] == 1:
            start = i
    acks = acks[start:]
    status, _, body = http_get(d.port, "/v1/executions/%s/poll?timeout=0&since_seq=0&token=%s" % (ex, TOKEN), timeout=10.0)
    if status != 200:
        ledger.fail("poll of %s: %r" % (ex, status))
        return 0
    o = json.loads(body)
    held = {e["seq"]: e["event_id"] for e in o["events"]}
    if not held:
        return 0  # evicted whole (finished, nobody watching): nothing retained to be missing from
    lo, hi = min(held), max(held)
    if sorted(held) != list(range(lo, hi + 1)):
        ledger.fail("%s: retained seqs have a hole: %r" % (ex, sorted(held)))
    checked = 0
    for seq, eid in acks:
        if seq < lo:
            continue
        checked += 1
        if seq not in held:
            ledger.fail("%s: acknowledged seq %d (%s) missing; retained %d..%d" % (ex, seq, eid, lo, hi))
        elif held[seq] != eid:
            ledger.fail("%s: seq %d is %s, acknowledged as %s" % (ex, seq, held[seq], eid))
    return checked


def verify_retained(d, ledger):
    """Every acknowledged event is retained exactly, or older than all its execution retains."""
    return sum(verify_one(d, ledger, ex, acks) for ex, acks in list(ledger.acked.items()))


def checker(d, ledger, stop):
    """Posts short runs of its own and checks each at once, while the load goes on: what was
    acknowledged is retained exactly, or older than everything retained (never a hole, never another
    event under its seq)."""
    try:
        conn = IngestConn(d.sock)
        run = 0
        while not stop.is_set():
            run += 1
            ex = "check-%d" % run
            events = [{"execution_id": ex, "type": "log", "message": "c%d" % i} for i in range(20)]
            acks = [(r["seq"], r["event_id"]) for r in conn.request(*events) if r.get("ok")]
            n = verify_one(d, ledger, ex, acks)
            ledger.count("checked_live", n)
        conn.close()
    except Exception as e:  # noqa: BLE001
        ledger.fail("checker: %r" % e)


def test_soak_mixed_load(make_daemon):
    d = make_daemon(CONFIG)
    ledger = Ledger()
    stop = threading.Event()
    worst = [0.0]
    threads = [threading.Thread(target=producer, args=(d, ledger, i, stop)) for i in range(3)]
    threads += [threading.Thread(target=subscribers, args=(d, ledger, i, stop)) for i in range(3)]
    threads += [
        threading.Thread(target=awaiter, args=(d, ledger, stop)),
        threading.Thread(target=slow_clients, args=(d, ledger, stop)),
        threading.Thread(target=malformed, args=(d, ledger, stop)),
        threading.Thread(target=reloader, args=(d, ledger, stop)),
        threading.Thread(target=pinger, args=(d, ledger, stop, worst)),
        threading.Thread(target=checker, args=(d, ledger, stop)),
    ]
    for t in threads:
        t.daemon = True
        t.start()
    time.sleep(SOAK_S)
    stop.set()
    for t in threads:
        t.join(30)
        assert not t.is_alive(), "a load thread did not finish"

    assert d.running(), "daemon died:\n" + d.stderr_text()[-4000:]
    status, _, body = http_get(d.port, "/health")
    assert status == 200, body
    rss = rss_kib(d.proc.pid)
    checked = verify_retained(d, ledger)
    for key, how in ledger.answered.items():
        n = ledger.pushes.get(key, 0)
        if n != 1:
            ledger.fail("request %r answered by %s was pushed %d times to its runtime" % (key, how, n))

    summary = dict(ledger.counts, checked=checked, rss_kb=rss, worst_ping_ms=round(worst[0] * 1000, 1))
    print("soak:", json.dumps(summary, sort_keys=True))
    assert not ledger.errors, "\n".join(ledger.errors) + "\n" + json.dumps(summary)
    # Every kind of load actually ran.
    assert ledger.counts.get("acked", 0) > 200, summary
    assert ledger.counts.get("checked_live", 0) > 200, summary
    assert sum(v for k, v in ledger.counts.items() if k.startswith("answer:") and k.endswith(":200")) > 3, summary
    for kind in ("sse", "ws", "poll"):
        assert ledger.counts.get("sub:" + kind, 0) > 3, summary
    assert ledger.counts.get("sighup", 0) >= 3, summary
    # The loop kept answering: a ping never waited for seconds behind the load.
    assert worst[0] < (5.0 if sanitized() else 2.0), summary
    if not sanitized():
        assert rss < 96 * 1024, "RSS %d KiB with a 256 KiB store" % rss

    rc = d.stop()
    assert rc == 0, "exit code %r on SIGTERM:\n%s" % (rc, d.stderr_text()[-4000:])
