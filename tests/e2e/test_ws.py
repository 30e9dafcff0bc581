"""WebSocket (SPEC §4): history then live, one event per text frame, the HITL route's filter,
?types=, ?since=now, and ping/pong keep-alive."""

import asyncio
import json
import socket
import time

import websockets.frames

from csutil import RawWS, ev, run, ws_collect, ws_connect, ws_next


def test_history_then_live(daemon):
    daemon.post_ok(*[ev("wsh", "log", i=i) for i in range(3)])

    async def go():
        ws = await ws_connect(daemon.ws + "/v1/executions/wsh/ws")
        try:
            got = await ws_collect(ws, 3, timeout=5)
            assert [(e["seq"], e["i"]) for e in got] == [(1, 0), (2, 1), (3, 2)]
            assert await ws_next(ws, timeout=0.5) is None
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            daemon.post_ok(ev("wsh", "log", i=3))
            e = await ws_next(ws, timeout=5)
            assert e is not None and e["seq"] == 4
            assert loop.time() - t0 < 1.0
            daemon.post_ok(*[ev("wsh", "log", i=i) for i in range(4, 40)])
            got = await ws_collect(ws, 36, timeout=5)
            assert [e["seq"] for e in got] == list(range(5, 41))
        finally:
            await ws.close()

    run(go(), 30)


def test_one_event_per_text_frame(daemon):
    replies = daemon.post_ok(
        ev("frames", "run.started"),
        ev("frames", "log", message="multi\nline \u2603"),
        ev("frames", "artifact", name="big", body="y" * 200000),
        ev("frames", "run.completed", result={"ok": True}),
    )
    stored = __import__("csutil").poll(daemon.base, "/v1/executions/frames/poll", {"timeout": "0"}, http_timeout=5).json()

    async def go():
        ws = await ws_connect(daemon.ws + "/v1/executions/frames/ws")
        try:
            msgs = []
            for _ in range(4):
                m = await asyncio.wait_for(ws.recv(), 5)
                assert isinstance(m, str), "binary frame: %r" % (m[:50],)
                msgs.append(m)
            return msgs
        finally:
            await ws.close()

    msgs = run(go(), 30)
    events = [json.loads(m) for m in msgs]
    assert all(isinstance(e, dict) for e in events)
    assert events == stored["events"]
    assert [e["event_id"] for e in events] == [r["event_id"] for r in replies]
    assert events[2]["body"] == "y" * 200000


def test_hitl_route_only_hitl_events(daemon):
    daemon.post_ok(
        ev("wsq", "run.started"),
        ev("wsq", "human_input_required", event_id="q", prompt="p", context="c"),
        ev("wsq", "tool.called"),
    )

    async def go():
        ws = await ws_connect(daemon.ws + "/ws/human-input/wsq")
        try:
            first = await ws_collect(ws, 1, timeout=5)
            assert [(e["seq"], e["type"]) for e in first] == [(2, "human_input_required")]
            assert first[0]["prompt"] == "p" and first[0]["context"] == "c"
            daemon.post_ok(
                ev("wsq", "log"),
                ev("wsq", "agent.started"),
                ev("wsq", "human_input_completed", event_id="a", human_feedback="fine"),
                ev("wsq", "run.completed"),
            )
            nxt = await ws_collect(ws, 1, timeout=5)
            assert [(e["seq"], e["type"], e["human_feedback"]) for e in nxt] == [(6, "human_input_completed", "fine")]
            assert await ws_next(ws, timeout=1.0) is None
        finally:
            await ws.close()

    run(go(), 30)


def test_types_filter(daemon):
    daemon.post_ok(
        ev("wst", "run.started"), ev("wst", "log"), ev("wst", "tool.called"), ev("wst", "run.completed")
    )

    async def go():
        ws = await ws_connect(daemon.ws + "/v1/executions/wst/ws?types=run.*,tool.called")
        try:
            got = await ws_collect(ws, 3, timeout=5)
            assert [(e["seq"], e["type"]) for e in got] == [(1, "run.started"), (3, "tool.called"), (4, "run.completed")]
            daemon.post_ok(ev("wst", "log"), ev("wst", "tool.result"), ev("wst", "run.failed"))
            got = await ws_collect(ws, 1, timeout=5)
            assert [(e["seq"], e["type"]) for e in got] == [(7, "run.failed")]
            assert await ws_next(ws, timeout=0.7) is None
        finally:
            await ws.close()

    run(go(), 30)


def test_since_now(daemon):
    daemon.post_ok(ev("wsn", "a"), ev("wsn", "b"))

    async def go():
        ws = await ws_connect(daemon.ws + "/v1/executions/wsn/ws?since=now")
        try:
            assert await ws_next(ws, timeout=1.0) is None
            daemon.post_ok(ev("wsn", "c"))
            e = await ws_next(ws, timeout=5)
            assert e["seq"] == 3 and e["type"] == "c"
        finally:
            await ws.close()

    run(go(), 30)


def test_subscriber_before_execution_exists(daemon):
    async def go():
        v1 = await ws_connect(daemon.ws + "/v1/executions/wslater/ws")
        hitl = await ws_connect(daemon.ws + "/ws/human-input/wslater")
        try:
            assert await ws_next(v1, timeout=0.5) is None
            daemon.post_ok(ev("wslater", "run.started"), ev("wslater", "human_input_required", prompt="p", context="c"))
            got = await ws_collect(v1, 2, timeout=5)
            assert [e["seq"] for e in got] == [1, 2]
            got = await ws_collect(hitl, 1, timeout=5)
            assert [(e["seq"], e["type"]) for e in got] == [(2, "human_input_required")]
        finally:
            await v1.close()
            await hitl.close()

    run(go(), 30)


def test_ping_pong_keepalive(daemon):
    """A client ping is answered; a connection idle for several heartbeats stays open; the
    client's own keep-alive (websockets' ping_interval) never times out."""

    async def go():
        ws = await ws_connect(
            daemon.ws + "/v1/executions/wsping/ws", ping_interval=0.5, ping_timeout=2
        )
        try:
            for _ in range(3):
                waiter = await ws.ping(b"hello")
                latency = await asyncio.wait_for(waiter, 2)
                assert latency is None or latency < 2
            await asyncio.sleep(3.5)  # several heartbeat_s=1 periods and client keep-alives
            assert ws.open, "closed while idle: %r %r" % (ws.close_code, ws.close_reason)
            daemon.post_ok(ev("wsping", "log"))
            e = await ws_next(ws, timeout=5)
            assert e is not None and e["seq"] == 1
        finally:
            await ws.close()

    run(go(), 30)


def test_server_pings_idle_client(daemon):
    """With no client pings, the daemon's own keep-alive pings arrive (heartbeat_s=1) and the
    automatic pongs keep the connection open."""
    pings = []

    async def go():
        ws = await ws_connect(daemon.ws + "/v1/executions/wsidle/ws", ping_interval=None)
        # websockets answers pings itself; count them by wrapping its frame reader.
        real_process = getattr(ws, "read_frame")

        async def counting_frame(max_size):
            frame = await real_process(max_size)
            if frame.opcode == websockets.frames.Opcode.PING:
                pings.append(frame.data)
            return frame

        ws.read_frame = counting_frame
        try:
            await asyncio.sleep(3.5)
            assert ws.open, (ws.close_code, ws.close_reason)
            daemon.post_ok(ev("wsidle", "log"))
            e = await ws_next(ws, timeout=5)
            assert e is not None and e["seq"] == 1
        finally:
            await ws.close()

    run(go(), 30)
    assert len(pings) >= 2, "daemon pings seen in 3.5 s with heartbeat_s=1: %d" % len(pings)


def test_many_clients_same_frames(daemon):
    async def go():
        clients = [await ws_connect(daemon.ws + "/v1/executions/wsfan/ws") for _ in range(30)]
        try:
            daemon.post_ok(*[ev("wsfan", "log", i=i) for i in range(25)])
            results = await asyncio.gather(*[ws_collect(c, 25, timeout=10) for c in clients])
            for got in results:
                assert [e["seq"] for e in got] == list(range(1, 26))
                assert got == results[0]
        finally:
            await asyncio.gather(*[c.close() for c in clients])

    run(go(), 40)


def test_client_close_is_clean(daemon):
    async def go():
        ws = await ws_connect(daemon.ws + "/v1/executions/wsclose/ws")
        await ws.close(1000, "bye")
        assert ws.close_code == 1000
        # The daemon still serves new clients.
        daemon.post_ok(ev("wsclose", "a"))
        ws2 = await ws_connect(daemon.ws + "/v1/executions/wsclose/ws")
        try:
            e = await ws_next(ws2, timeout=5)
            assert e["seq"] == 1
        finally:
            await ws2.close()

    run(go(), 30)


def test_server_pings_every_idle_session(make_daemon):
    """Every idle session is pinged about every heartbeat_s, however many there are and whenever they
    opened (the tick keeps them oldest ping first and stops at the first one not due)."""
    d = make_daemon({"heartbeat_s": 1})
    conns = []
    try:
        for i in range(3):
            conns.append(RawWS(d.port, "/v1/executions/pings%d/ws" % i))
            time.sleep(0.3)
        counts = [0] * len(conns)
        deadline = time.monotonic() + 3.8
        while time.monotonic() < deadline:
            for i, c in enumerate(conns):
                c.sock.settimeout(0.02)
                try:
                    chunk = c.sock.recv(4096)
                except (socket.timeout, TimeoutError):
                    chunk = None
                if chunk == b"":
                    raise AssertionError("session %d closed" % i)
                if chunk:
                    c.buf += chunk
                fr = c._parse()
                while fr is not None:
                    assert fr[0] == 0x9, fr  # idle: nothing but pings
                    counts[i] += 1
                    c._send_frame(0xA, fr[1])
                    fr = c._parse()
        assert all(n >= 3 for n in counts), counts
    finally:
        for c in conns:
            c.close()
