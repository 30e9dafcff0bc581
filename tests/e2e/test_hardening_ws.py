"""Issue 10, WebSocket findings: what a client that stops reading, or floods, can make the daemon
hold, drop or log.

- A subscriber that never reads holds at most one write (64 KiB) in the daemon, however large the
  events: large messages go out in pieces, one per writable turn (finding 9).
- A client that sends messages faster than it reads the replies is slowed down (its input is not
  read while its replies wait), and gets every reply; the log does not grow per message (finding 10).
- A token put in the path is never logged (finding 10).
"""

import json
import threading
import time

from csutil import RawWS, ev, http_get, rss_kib, run, wait_until, ws_connect, ws_handshake

EXEC = "big-1"
N_STALLED = 150
EVENT_BYTES = 800 * 1024
N_EVENTS = 3



def metrics(d):
    status, _, body = http_get(d.port, "/metrics")
    assert status == 200
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            k, v = line.split()
            out[k] = float(v)
    return out


def big_event(i):
    # Printable, position-dependent content: a piece put in the wrong place or a header written
    # over the shared frame shows up as a mismatch.
    filler = "".join("%07d|" % k for k in range(EVENT_BYTES // 8))
    return ev(EXEC, "log", message="%d:%s" % (i, filler))


def test_stalled_websockets_hold_one_piece_each_and_a_reader_gets_every_large_event(make_daemon):
    d = make_daemon(
        {
            "heartbeat_s": 60,
            "store": {"ring_bytes": 64 << 20, "max_bytes": 256 << 20},
            "limits": {"max_event_bytes": 1 << 20, "stall_s": 120},
        }
    )
    d.post_ok(ev(EXEC, "run.started"))
    stalled = []
    try:
        for _ in range(N_STALLED):
            stalled.append(RawWS(d.port, "/v1/executions/%s/ws?since=now" % EXEC, rcvbuf=4096))
        assert all(s.status == 101 for s in stalled)
        assert wait_until(lambda: metrics(d)["crewstream_websockets"] >= N_STALLED, 10)
        events = [big_event(i) for i in range(N_EVENTS)]

        async def go():
            reader = await ws_connect(d.ws + "/v1/executions/%s/ws?since=now" % EXEC, max_size=None)
            try:
                time.sleep(0.5)
                rss0 = rss_kib(d.proc.pid)
                d.post_ok(*events, timeout=30)
                got = []
                while len(got) < N_EVENTS:
                    msg = await reader.recv()  # websockets reassembles fragmented messages
                    got.append(json.loads(msg))
                return rss0, got
            finally:
                await reader.close()

        rss0, got = run(go(), 60)
        for i, (sent, recv) in enumerate(zip(events, got)):
            assert recv["type"] == "log" and recv["message"] == sent["message"], "event %d altered" % i
        # Let every stalled connection get as far as it can: its first writes.
        time.sleep(1.5)
        rss1 = rss_kib(d.proc.pid)
        growth_kib = rss1 - rss0
        # The store holds the events (~N_EVENTS x 800 KB, rendered once); each stalled client one
        # piece (64 KiB) in lws. Holding each client's unsent rest instead would be ~N_STALLED x
        # 750 KB = ~110 MB.
        bound_kib = N_STALLED * 64 + 4 * N_EVENTS * EVENT_BYTES // 1024 + 24 * 1024
        assert growth_kib < bound_kib, "VmRSS grew by %d KiB with %d stalled WebSockets (bound %d KiB)" % (
            growth_kib,
            N_STALLED,
            bound_kib,
        )
        m = metrics(d)
        assert m["crewstream_ws_fragmented_sending"] >= N_STALLED, m
        assert m["crewstream_ws_pieces_total"] >= N_EVENTS * (EVENT_BYTES // 65536), m
    finally:
        for s in stalled:
            s.close()
    # The held frames are released when the stalled clients go.
    assert wait_until(lambda: metrics(d)["crewstream_ws_fragmented_sending"] == 0, 10)


def test_flooding_client_gets_every_reply_and_the_log_stays_small(make_daemon):
    d = make_daemon({"heartbeat_s": 60})  # no pings: only this test writes to the socket
    d.post_ok(ev("flood-1", "run.started"))
    c = RawWS(d.port, "/v1/executions/flood-1/ws?since=now", timeout=30)
    assert c.status == 101
    n = 40000
    frame = bytes([0x81, 0x82, 1, 2, 3, 4]) + bytes([ord("{") ^ 1, ord("}") ^ 2])  # "{}", masked
    flood = frame * n  # 320 KB of client messages, each answered with an error reply
    sent = threading.Event()

    def send():
        try:
            c.sock.sendall(flood)
        finally:
            sent.set()

    t = threading.Thread(target=send, daemon=True)
    t.start()
    time.sleep(1.0)  # not reading: the replies back up
    replies = 0
    close = None
    deadline = time.monotonic() + 60
    try:
        while replies < n and time.monotonic() < deadline:
            msg = c.next_message(timeout=5)
            if msg is None:
                break
            assert json.loads(msg)["type"] == "error"
            replies += 1
    except EOFError:
        close = (c.close_code, getattr(c, "close_reason", ""))
    t.join(10)
    c.close()
    m = metrics(d)
    if close is None:
        assert replies == n, "%d of %d replies, no close" % (replies, n)
        assert m["crewstream_ws_rx_paused_total"] >= 1, m
    else:
        # The other acceptable outcome: a clear close, counted.
        assert close[0] == 1008 and close[1], close
        assert m["crewstream_ws_flood_closed_total"] >= 1, m
    ws_lines = [line for line in d.stderr_text().splitlines() if "ws:" in line]
    assert len(ws_lines) < 50, "%d ws log lines, e.g. %r" % (len(ws_lines), ws_lines[-3:])


def test_a_token_in_the_path_is_never_logged(make_daemon):
    d = make_daemon()
    d.post_ok(ev("tok-1", "run.started"))
    paths = [
        "/v1/executions/tok-1/ws&token=SECRET-AMP-1",
        "/v1/executions/tok-1/ws;token=SECRET-SEMI-2",
        "/v1/executions/tok-1;token=SECRET-ID-3/ws",
        "/ws/human-input/SECRET-PATH-4/more",
        "/v1/executions/tok-1/ws/SECRET-TAIL-5?token=SECRET-QUERY-6",
    ]
    for p in paths:
        c = RawWS(d.port, p)
        try:
            assert c.status in (400, 404), (p, c.status)
        finally:
            c.close()
    assert wait_until(lambda: d.stderr_text().count("ws: refused") >= len(paths), 5), d.stderr_text()[-2000:]
    text = d.stderr_text()
    assert "SECRET" not in text, [line for line in text.splitlines() if "SECRET" in line]


def test_an_encoded_nul_in_a_handshake_target_is_400(make_daemon):
    """A %00 in a WebSocket target decodes to a path (or a query value) cut short: libwebsockets hung up
    without a word. It is refused with 400 before libwebsockets sees it, as libmicrohttpd's side does."""
    d = make_daemon()
    d.post_ok(ev("nul-1", "run.started"))
    paths = [
        "/v1/executions/a%00b/ws",
        "/ws/human-input/nul-1%00",
        "/v1/executions/nul-1/ws?since_seq=0&token=x%00y",
    ]
    for p in paths:
        status, headers, body = ws_handshake(d.port, p)
        assert status == 400 and "upgrade" not in headers, (p, status)
        err = json.loads(body)
        assert err["error"] == "bad_request" and "NUL" in err["detail"], err
    assert metrics(d)["crewstream_ws_refused_total"] == len(paths)
    # A literal "%00" (%2500) is no NUL: an ordinary bad execution id, refused by the handshake check.
    assert ws_handshake(d.port, "/v1/executions/a%2500b/ws")[0] in (400, 404)
    # And the daemon still upgrades a good one.
    assert ws_handshake(d.port, "/v1/executions/nul-1/ws")[0] == 101
