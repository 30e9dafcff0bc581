"""Hardening of the ingest socket and the listener (issue 10, findings 2, 5 and the /health part of 10).

- A producer that awaits answered requests over and over and does not read costs a bounded amount of
  memory: its queued output (replies and pushed answers) has one high mark, past it the daemon stops
  reading it, and an answer still queued is not queued again. Other producers are served meanwhile,
  and once it reads, every reply arrives, in order, one per line.
- Out of file descriptors, accepting backs off instead of spinning (CPU and log lines bounded), and
  resumes when descriptors are free again.
- limits.max_clients above what the open-files limit allows is clamped (or the start refused), and
  the connections refused over it do not push the descriptors above the limit.
- GET /health answers 200 when every client slot is taken.

Memory, CPU and latency are measured here (VmRSS, utime+stime from /proc, a ping round trip) and
bounded generously; every loop is bounded in count and time.
"""

import json
import os
import resource
import select
import socket
import subprocess
import time

from csutil import ev, http_get, rss_kib, wait_until

CLK_TCK = os.sysconf("SC_CLK_TCK")
BIG_STORE = {"store": {"max_bytes": 1 << 30}}  # clear of store.max_bytes eviction (another finding)


# ---- measuring the daemon ---------------------------------------------------------------------



def cpu_s(pid):
    """utime + stime of the process, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def n_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def ping_ms(d, timeout=10.0):
    """The round trip of a ping on a fresh producer connection, in ms."""
    t0 = time.monotonic()
    with d.producer(timeout=timeout) as p:
        assert p.request({"op": "ping"}, timeout=timeout) == [{"ok": True, "op": "pong"}]
    return (time.monotonic() - t0) * 1000


def metrics(d, must=True):
    st, _, body = http_get(d.port, "/metrics")
    if not must and st != 200:
        return None  # still over limits.max_clients: asked again
    assert st == 200, (st, body)
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k.replace("crewstream_", "")] = float(v)
    return out


def log_lines(d):
    return d.stderr_text().count("\n")


# ---- a producer that does not read --------------------------------------------------------------


def send_without_reading(sock, data, seconds):
    """Sends as much of data as the daemon takes within `seconds`, never reading; returns bytes sent."""
    sock.setblocking(False)
    off, deadline = 0, time.monotonic() + seconds
    while off < len(data) and time.monotonic() < deadline:
        _, w, _ = select.select([], [sock], [], 0.1)
        if w:
            try:
                off += sock.send(data[off:off + 65536])
            except BlockingIOError:
                pass
    return off


def read_all(sock, data, off, n_replies, timeout, quiet=1.0):
    """Sends the rest of data while reading until n_replies reply lines (not pushes) have arrived and
    then nothing more for `quiet` seconds (pushes may follow the last reply). Returns (replies, pushes)
    as parsed JSON, in the order received."""
    sock.setblocking(False)
    replies, pushes, buf = [], [], b""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, "got %d of %d replies (and %d pushes) in %.0fs" % (len(replies), n_replies, len(pushes),
                                                                           timeout)
        done = len(replies) >= n_replies and off >= len(data)
        r, w, _ = select.select([sock], [sock] if off < len(data) else [], [], quiet if done else min(left, 0.5))
        if done and not r:
            break
        if w:
            try:
                off += sock.send(data[off:off + 65536])
            except BlockingIOError:
                pass
        if r:
            chunk = sock.recv(1 << 20)
            assert chunk, "the daemon closed the connection"
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                obj = json.loads(line)  # one JSON object a line, never two run together
                (pushes if obj.get("op") == "human_input" and "ok" not in obj else replies).append(obj)
    assert buf == b"", "bytes past the last reply: %r" % buf[:200]
    return replies, pushes


def answered_requests(d, x, ids, feedback_bytes):
    """Posts a human_input_required per id and answers each with a feedback of feedback_bytes."""
    with d.producer(timeout=30) as p:
        for i in range(0, len(ids), 50):
            p.request(*[ev(x, "human_input_required", event_id=r, task_id="t-" + r, prompt="ok?")
                        for r in ids[i:i + 50]], timeout=30)
    # Answered on another connection: the one that posted them is gone, nothing is pushed anywhere.
    with d.producer(timeout=30) as p:
        for r in ids:
            rep = p.request(ev(x, "human_input_completed", request_event_id=r, task_id="t-" + r,
                               human_feedback="f" * feedback_bytes, is_approve=True), timeout=30)
            assert rep[0]["ok"] is True, rep


def await_line(x, r):
    return json.dumps({"op": "await", "execution_id": x, "event_id": r}, separators=(",", ":")).encode() + b"\n"


def check_replies(replies, x, order):
    assert len(replies) == len(order)
    for i, (rep, r) in enumerate(zip(replies, order)):
        assert rep == {"ok": True, "op": "await", "execution_id": x, "event_id": r, "answered": True}, (i, rep)


def test_await_flood_on_many_answers_is_bounded(make_daemon):
    """Finding 2: 2,400 awaits cycling over 400 answered requests of 100 KB each, never read, made the
    daemon queue 240 MB of copies (before: 225 KB of input -> 4.78 GB). Now the producer is paused at
    its high mark: the daemon grows by little, other producers are served at once, and the replies all
    arrive in order once it reads."""
    d = make_daemon(BIG_STORE)
    x, k, n, fb = "aw-many", 400, 2400, 100_000
    ids = ["q-%d" % i for i in range(k)]
    answered_requests(d, x, ids, fb)
    time.sleep(0.3)
    base = rss_kib(d.proc.pid)

    order = [ids[i % k] for i in range(n)]
    data = b"".join(await_line(x, r) for r in order)
    s = d.connect_ingest()
    try:
        off = send_without_reading(s, data, 3.0)
        time.sleep(0.5)
        grown_mb = (rss_kib(d.proc.pid) - base) / 1024
        pings = [ping_ms(d) for _ in range(5)]
        m = metrics(d)
        assert grown_mb < 32, "the daemon grew by %.0f MB for a producer that does not read" % grown_mb
        assert max(pings) < 1000, "another producer's ping took %.0f ms" % max(pings)
        assert m["ingest_producers_paused"] == 1, m
        assert 256 << 10 < m["ingest_output_bytes"] < 4 << 20, m
        assert m["ingest_pauses_total"] >= 1, m

        replies, pushes = read_all(s, data, off, n, timeout=120)
    finally:
        s.close()
    check_replies(replies, x, order)
    # Every await of an answered request is followed by its answer, unless that answer was still
    # queued; each push is whole.
    assert 0 < len(pushes) <= n
    for p in pushes:
        assert p["request_event_id"] in ids and len(p["human_feedback"]) == fb, {k: p[k] for k in p if k != "human_feedback"}
    assert wait_until(lambda: metrics(d)["ingest_output_bytes"] == 0, timeout=5)
    assert metrics(d)["ingest_producers_paused"] == 0


def test_await_flood_on_one_answer_queues_it_once(make_daemon):
    """Finding 2: 1,500 awaits of one answered request (200 KB answer) on a connection that does not
    read: the answer is queued once, not 1,500 times (300 MB before)."""
    d = make_daemon(BIG_STORE)
    x, n, fb = "aw-one", 1500, 200_000
    answered_requests(d, x, ["only"], fb)
    time.sleep(0.3)
    base = rss_kib(d.proc.pid)

    data = await_line(x, "only") * n
    s = d.connect_ingest()
    try:
        off = send_without_reading(s, data, 3.0)
        time.sleep(0.5)
        grown_mb = (rss_kib(d.proc.pid) - base) / 1024
        assert grown_mb < 32, "the daemon grew by %.0f MB for a producer that does not read" % grown_mb
        assert ping_ms(d) < 1000
        replies, pushes = read_all(s, data, off, n, timeout=60)
    finally:
        s.close()
    check_replies(replies, x, ["only"] * n)
    assert 1 <= len(pushes) <= 10, "%d copies of one answer pushed" % len(pushes)
    assert all(p["request_event_id"] == "only" and len(p["human_feedback"]) == fb for p in pushes)
    assert metrics(d)["ingest_pushes_deduplicated_total"] >= n - 10


def test_paused_producer_still_gets_answers_given_meanwhile(make_daemon):
    """Backpressure never drops an answer: a producer paused by a flood of pings it does not read still
    gets the push of a request it awaits, answered meanwhile, once it reads."""
    d = make_daemon(BIG_STORE)
    x = "aw-pause"
    s = d.connect_ingest()
    try:
        s.sendall(json.dumps(ev(x, "human_input_required", event_id="r1", task_id="t", prompt="?")).encode() + b"\n")
        pings = b'{"op":"ping"}\n' * 200_000  # 4.8 MB of pongs: far past the high mark
        off = send_without_reading(s, pings, 3.0)
        assert wait_until(lambda: metrics(d)["ingest_producers_paused"] == 1, timeout=5)
        d.post_ok(ev(x, "human_input_completed", request_event_id="r1", human_feedback="yes", is_approve=True))
        replies, pushes = read_all(s, pings, off, 1 + 200_000, timeout=60)
    finally:
        s.close()
    assert replies[0]["ok"] is True and replies[0]["event_id"] == "r1"
    assert all(r == {"ok": True, "op": "pong"} for r in replies[1:])
    assert [p["request_event_id"] for p in pushes] == ["r1"] and pushes[0]["human_feedback"] == "yes"


# ---- out of file descriptors --------------------------------------------------------------------


def test_out_of_descriptors_backs_off_and_recovers(make_daemon):
    """Finding 5: at EMFILE the level-triggered listeners stayed readable and the daemon spun (100% CPU,
    ~362,000 warning lines a second). Now accepting pauses (100 ms doubling to 1 s): little CPU, few
    log lines, and connections are taken again once descriptors are free."""
    d = make_daemon({"limits": {"max_clients": 200, "max_producers": 100}})
    pid = d.proc.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    # Leave the daemon four descriptors: the fifth connection finds none.
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (n_fds(pid) + 4, hard))
    clients = []
    try:
        for _ in range(30):
            c = socket.create_connection(("127.0.0.1", d.port), timeout=5)
            clients.append(c)
        for _ in range(10):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.connect(d.sock)
            clients.append(c)
        time.sleep(0.3)
        cpu0, lines0, t0 = cpu_s(pid), log_lines(d), time.monotonic()
        time.sleep(3.0)
        cpu = cpu_s(pid) - cpu0
        lines = log_lines(d) - lines0
        wall = time.monotonic() - t0
        assert cpu < 0.3 * wall, "the daemon used %.2fs of CPU in %.1fs out of descriptors" % (cpu, wall)
        assert lines < 100, "%d log lines in %.1fs out of descriptors" % (lines, wall)
        assert "Too many open files" in d.stderr_text()
    finally:
        for c in clients:
            c.close()
    # Descriptors free again (the same limit): the waiting connections are taken, then new ones.
    assert wait_until(lambda: http_get(d.port, "/health", timeout=2)[0] == 200, timeout=10)
    assert ping_ms(d) < 3000
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    assert metrics(d)["accept_backoffs_total"] >= 2


# ---- limits.max_clients and the open-files limit ------------------------------------------------


def start_with_nofile(make_daemon, nofile, config):
    d = make_daemon(config, start=False)

    def spawn(argv, env, out, err):
        def lower():
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                                preexec_fn=lower)

    d.spawn = spawn
    return d


def test_max_clients_clamped_to_the_open_files_limit(make_daemon):
    """Finding 5: limits.max_clients 10000 under 256 open files is clamped at start (256 - 64 for the
    daemon - 50 producers - 72 for answers over the limit = 70) with a warning; 200 connections then
    never run the daemon out of descriptors, and those refused beyond it do not linger past a bound."""
    d = start_with_nofile(make_daemon, 256, {"limits": {"max_producers": 50}})
    d.start()
    pid = d.proc.pid
    clients = []
    try:
        for _ in range(200):
            clients.append(socket.create_connection(("127.0.0.1", d.port), timeout=5))
        time.sleep(0.5)
        assert "Too many open files" not in d.stderr_text()
        assert n_fds(pid) < 256 - 50
        assert "limits.max_clients 10000 is more than the open-files limit 256 allows" in d.stderr_text()
        assert "clamped to 70" in d.stderr_text()
        assert ping_ms(d) < 1000
        # Over the limit, a health probe is still answered (once the reserve's idle ones are let go).
        assert wait_until(lambda: http_get(d.port, "/health", timeout=2)[0] == 200, timeout=5)
    finally:
        for c in clients:
            c.close()
    # The daemon sees the clients leave one by one; until then /metrics itself may be refused (503).
    assert wait_until(lambda: (metrics(d, must=False) or {"connections": 2})["connections"] <= 1, timeout=10)


def test_no_room_for_clients_refuses_to_start(make_daemon):
    """Finding 5: when the open-files limit leaves no descriptor for a single client, the daemon says
    so and exits 2 (a configuration error) instead of running out of descriptors later."""
    d = start_with_nofile(make_daemon, 128, {})  # limits.max_producers 1024 alone is more than 128
    d.start(wait=False)
    assert d.wait_exit(10) == 2
    text = d.stderr_text()
    assert "the open-files limit 128 leaves no descriptor for clients" in text, text
    assert "limits.max_producers" in text


# ---- /health when every slot is taken ---------------------------------------------------------


def test_health_answers_when_max_clients_is_full(make_daemon):
    """Finding 10: with limits.max_clients full, /health answered 503 and a probe could restart a busy
    daemon. It answers 200 from a small reserve; anything else still gets 503, and idle connections
    over the limit hold a bounded number of descriptors."""
    from csutil import SSEClient

    d = make_daemon({"limits": {"max_clients": 3}})
    pid = d.proc.pid
    streams = [SSEClient(d.port, "/v1/executions/hf/events") for _ in range(3)]
    idle = []
    try:
        assert [s.status for s in streams] == [200, 200, 200]
        for path in ("/health", "/health/", "/health?probe=1"):
            st, _, body = http_get(d.port, path)
            assert st == 200, (path, st, body)
            assert json.loads(body)["status"] == "healthy"
        st, _, body = http_get(d.port, "/v1/executions")
        assert st == 503 and json.loads(body)["error"] == "unavailable", (st, body)

        # 150 connections over the limit that never send a byte: 8 wait in the reserve (1 s), 64 linger
        # answered, the rest are answered and closed at once.
        fds0 = n_fds(pid)
        for _ in range(150):
            idle.append(socket.create_connection(("127.0.0.1", d.port), timeout=5))
        time.sleep(0.5)
        assert n_fds(pid) <= fds0 + 8 + 64 + 2, n_fds(pid) - fds0
        # Once the reserve's idle connections are let go (1 s), a probe gets its 200 again.
        assert wait_until(lambda: http_get(d.port, "/health", timeout=2)[0] == 200, timeout=5)
        d.post_ok(ev("hf", "log", n=1))
        for s in streams:
            assert s.collect(1, timeout=5)[0].json()["n"] == 1
    finally:
        for c in idle:
            c.close()
        for s in streams:
            s.close()
    m = metrics(d)
    assert m["health_over_limit_total"] >= 4, m
    assert m["tcp_refused_unlingered_total"] >= 50, m
