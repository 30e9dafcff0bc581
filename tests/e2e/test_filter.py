"""The ?types= filter (SPEC §4): exact names, "prefix*" forms, several at once, and invalid
lists refused with 400 -- on SSE, WebSocket and long-poll."""

import concurrent.futures
import time
import urllib.parse

import pytest
import websockets.exceptions

from csutil import SSEClient, ev, http_json, poll, run, ws_collect, ws_connect, ws_next

TYPES = [
    "run.started", "log", "agent.started", "tool.called", "runner.x", "run", "logs", "tool.result",
    "agent.completed", "run.completed", "llm_stream_chunk", "task_started", "task_completed", "log",
]

CASES = {
    "exact": ("log", ["log"]),
    "prefix": ("run.*", ["run.started", "run.completed"]),
    "underscore-prefix": ("task_*", ["task_started", "task_completed"]),
    "multiple": ("run.*,log,tool.called,agent.*", None),
}


def matches(pattern_csv, t):
    for p in pattern_csv.split(","):
        if p.endswith("*"):
            if t.startswith(p[:-1]):
                return True
        elif t == p:
            return True
    return False


def expected(pattern_csv, types, offset=0):
    return [(i + 1 + offset, t) for i, t in enumerate(types) if matches(pattern_csv, t)]


LATER = ["log", "run.failed", "tool.result", "task_failed", "runs.x", "agent.error", "tool.called"]


def subscribe_and_check(d, transport, x, pattern):
    """History matching the filter first, then live events matching it, nothing else."""
    d.post_ok(*[ev(x, t) for t in TYPES])
    want_hist = expected(pattern, TYPES)
    want_live = expected(pattern, LATER, offset=len(TYPES))
    q = "types=" + urllib.parse.quote(pattern, safe=",*")
    if transport == "sse":
        with SSEClient(d.port, "/v1/executions/%s/events?%s" % (x, q)) as s:
            got = [(f.json()["seq"], f.json()["type"]) for f in s.collect(len(want_hist), timeout=5)]
            assert got == want_hist
            d.post_ok(*[ev(x, t) for t in LATER])
            got = [(f.json()["seq"], f.json()["type"]) for f in s.collect(len(want_live), timeout=5)]
            assert got == want_live
            assert s.next_event(timeout=0.5) is None
    elif transport == "ws":

        async def go():
            ws = await ws_connect(d.ws + "/v1/executions/%s/ws?%s" % (x, q))
            try:
                got = [(e["seq"], e["type"]) for e in await ws_collect(ws, len(want_hist), timeout=5)]
                assert got == want_hist
                d.post_ok(*[ev(x, t) for t in LATER])
                got = [(e["seq"], e["type"]) for e in await ws_collect(ws, len(want_live), timeout=5)]
                assert got == want_live
                assert await ws_next(ws, timeout=0.5) is None
            finally:
                await ws.close()

        run(go(), 30)
    else:
        r = poll(d.base, "/v1/executions/%s/poll" % x, {"types": pattern, "timeout": "0"}, http_timeout=5)
        assert r.status_code == 200, r.text
        body = r.json()
        assert [(e["seq"], e["type"]) for e in body["events"]] == want_hist
        d.post_ok(*[ev(x, t) for t in LATER])
        r = poll(
            d.base, "/v1/executions/%s/poll" % x,
            {"types": pattern, "timeout": "0", "since_seq": str(len(TYPES))}, http_timeout=5,
        )
        assert [(e["seq"], e["type"]) for e in r.json()["events"]] == want_live


@pytest.mark.parametrize("transport", ["sse", "ws", "poll"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_filter(daemon, transport, case):
    pattern, _ = CASES[case]
    subscribe_and_check(daemon, transport, "f-%s-%s" % (transport, case), pattern)


BAD = ["a b", "a,,b", "a*b", "*a", "a/b", "x" * 65, "run.*,bad type"]


@pytest.mark.parametrize("bad", BAD)
def test_invalid_filter_sse_and_poll(daemon, bad):
    q = urllib.parse.quote(bad, safe="")
    for path in ("/v1/executions/bad/events?types=" + q, "/v1/executions/bad/poll?timeout=0&types=" + q):
        status, headers, body = http_json(daemon.port, path)
        assert status == 400, (path, status, body)
        assert body["error"] == "bad_request" and "types" in body["detail"], body
        assert headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("bad", BAD[:3])
def test_invalid_filter_ws(daemon, bad):
    async def go():
        with pytest.raises(websockets.exceptions.InvalidStatusCode) as ei:
            ws = await ws_connect(daemon.ws + "/v1/executions/bad/ws?types=" + urllib.parse.quote(bad, safe=""))
            await ws.close()
        assert ei.value.status_code == 400

    run(go(), 20)


def test_held_poll_waits_for_a_matching_event(daemon):
    daemon.post_ok(ev("fh", "run.started"))
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        t0 = time.monotonic()
        fut = ex.submit(
            poll, daemon.base, "/v1/executions/fh/poll", {"types": "run.*", "since_seq": "1", "timeout": "10"}
        )
        time.sleep(0.7)
        daemon.post_ok(ev("fh", "log"), ev("fh", "tool.called"))
        time.sleep(0.7)
        assert not fut.done(), "answered by a filtered-out event: %r" % fut.result().text
        daemon.post_ok(ev("fh", "run.completed"))
        r = fut.result(timeout=5)
        assert time.monotonic() - t0 < 5
    assert [(e["seq"], e["type"]) for e in r.json()["events"]] == [(4, "run.completed")]


def test_filter_with_resume(daemon):
    daemon.post_ok(*[ev("fr", t) for t in TYPES])
    with SSEClient(daemon.port, "/v1/executions/fr/events?types=log&since_seq=2") as s:
        got = [(f.json()["seq"], f.json()["type"]) for f in s.collect(1, timeout=5)]
    assert got == [(14, "log")]


def test_filter_on_idle_sse_keeps_heartbeats(daemon):
    """Events filtered out do not starve the stream of its keep-alive."""
    with SSEClient(daemon.port, "/v1/executions/fq/events?types=run.*") as s:
        comments = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            daemon.post_ok(ev("fq", "log"))
            f = s.next_frame(timeout=0.3)
            if f is not None and f.kind == "comment":
                comments += 1
            assert f is None or f.kind in ("comment", "retry"), f
        assert comments >= 1
