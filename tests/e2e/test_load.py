"""Load: 4 producers post 1,000 events each across 50 executions at once (each on its own
Unix-socket connection, pipelined with a window), while every execution has one SSE, one
WebSocket and one long-poll subscriber opened before the producers start. Every subscriber
must receive its execution's events complete, in seq order, without duplicates, and each
producer's events in the order it posted them."""

import asyncio
import json
import time

import httpx

from csutil import ws_connect

PRODUCERS = 4
PER_PRODUCER = 1000
EXECUTIONS = 50
WINDOW = 64
PER_EXEC = PRODUCERS * PER_PRODUCER // EXECUTIONS  # 80
DEADLINE = 45.0


def plan(p):
    """Producer p's events: (execution, k) where k counts p's events in that execution."""
    counts = {}
    out = []
    for i in range(PER_PRODUCER):
        x = "load-%02d" % ((i + p * 13) % EXECUTIONS)
        k = counts.get(x, 0)
        counts[x] = k + 1
        out.append((x, k))
    return out


async def producer(sock_path, p, results):
    reader, writer = await asyncio.open_unix_connection(sock_path, limit=1 << 20)
    events = plan(p)
    sent = 0
    replies = []
    try:
        while len(replies) < len(events):
            while sent < len(events) and sent - len(replies) < WINDOW:
                x, k = events[sent]
                line = {"execution_id": x, "type": "log", "p": p, "k": k, "pad": "x" * 40}
                writer.write(json.dumps(line).encode() + b"\n")
                sent += 1
            await writer.drain()
            line = await reader.readline()
            assert line, "producer %d: connection closed after %d replies" % (p, len(replies))
            replies.append(json.loads(line))
    finally:
        writer.close()
    results[p] = list(zip(events, replies))


async def sse_sub(client, base, x, out, ready):
    got = []
    out[("sse", x)] = got
    async with client.stream("GET", "%s/v1/executions/%s/events" % (base, x)) as r:
        assert r.status_code == 200
        ready.append(1)
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                got.append(json.loads(line[6:]))
                if len(got) >= PER_EXEC:
                    return


async def ws_sub(url, x, out, ready):
    got = []
    out[("ws", x)] = got
    ws = await ws_connect(url)
    ready.append(1)
    try:
        while len(got) < PER_EXEC:
            msg = await ws.recv()
            got.append(json.loads(msg))
    finally:
        await ws.close()


async def poll_sub(client, base, x, out, ready):
    got = []
    out[("poll", x)] = got
    params = {"timeout": "5"}
    first = True
    while len(got) < PER_EXEC:
        r = await client.get("%s/v1/executions/%s/poll" % (base, x), params=dict(params, timeout="0" if first else "5"))
        if first:
            ready.append(1)
            first = False
        assert r.status_code == 200, r.text
        body = r.json()
        assert not body.get("gap"), body
        got += body["events"]
        if body["last_event_id"] is not None:
            params = {"last_event_id": body["last_event_id"]}


def test_load(daemon):
    base = daemon.base
    out, ready, results = {}, [], {}

    async def main():
        limits = httpx.Limits(max_connections=400, max_keepalive_connections=100)
        timeout = httpx.Timeout(15.0)
        sse_client = httpx.AsyncClient(limits=limits, timeout=timeout)
        poll_client = httpx.AsyncClient(limits=limits, timeout=timeout)
        xs = ["load-%02d" % i for i in range(EXECUTIONS)]
        subs, prods = [], []
        loop = asyncio.get_running_loop()
        try:
            for x in xs:
                subs.append(asyncio.create_task(sse_sub(sse_client, base, x, out, ready)))
                subs.append(asyncio.create_task(ws_sub(daemon.ws + "/v1/executions/%s/ws" % x, x, out, ready)))
                subs.append(asyncio.create_task(poll_sub(poll_client, base, x, out, ready)))
            t_ready = loop.time() + 15
            while len(ready) < 3 * EXECUTIONS and loop.time() < t_ready:
                for t in subs:
                    if t.done() and t.exception():
                        raise t.exception()
                await asyncio.sleep(0.05)
            assert len(ready) == 3 * EXECUTIONS, "only %d subscribers connected" % len(ready)
            await asyncio.sleep(0.3)
            t0 = loop.time()
            prods = [asyncio.create_task(producer(daemon.sock, p, results)) for p in range(PRODUCERS)]
            await asyncio.wait_for(asyncio.gather(*prods), DEADLINE - 15)
            t_posted = loop.time() - t0
            done, pending = await asyncio.wait(subs, timeout=DEADLINE - 15 - t_posted)
            for t in done:
                if t.exception():
                    raise t.exception()
            incomplete = sorted((k, len(v)) for k, v in out.items() if len(v) < PER_EXEC)
            assert not pending, "%d subscribers incomplete: %r" % (len(pending), incomplete[:10])
            return t_posted, loop.time() - t0
        finally:
            # Cancelled httpx streams can make close() wait: bound the clean-up, keep the first error.
            for t in subs + prods:
                t.cancel()
            await asyncio.wait(subs + prods, timeout=3) if subs + prods else None
            for c in (sse_client, poll_client):
                try:
                    await asyncio.wait_for(c.aclose(), 3)
                except BaseException:
                    pass

    t_posted, t_all = asyncio.run(main())
    print("posted %d events in %.2fs, all %d subscribers complete after %.2fs"
          % (PRODUCERS * PER_PRODUCER, t_posted, 3 * EXECUTIONS, t_all))

    # Every reply ok; per execution, the seqs handed out are 1..80 with each producer's in order.
    seq_of = {}
    for p, pairs in results.items():
        last = {}
        for (x, k), r in pairs:
            assert r.get("ok") is True, r
            assert r["seq"] > last.get(x, 0)
            last[x] = r["seq"]
            seq_of[(x, r["seq"])] = (p, k)
    for i in range(EXECUTIONS):
        x = "load-%02d" % i
        assert sorted(s for (y, s) in seq_of if y == x) == list(range(1, PER_EXEC + 1))

    # Every subscriber: complete, in seq order, no duplicates, each producer's order kept.
    for (kind, x), got in sorted(out.items()):
        seqs = [e["seq"] for e in got]
        assert seqs == list(range(1, PER_EXEC + 1)), (kind, x, seqs[:20])
        assert all(e["execution_id"] == x for e in got)
        for e in got:
            assert seq_of[(x, e["seq"])] == (e["p"], e["k"]), (kind, x, e)
        for p in range(PRODUCERS):
            ks = [e["k"] for e in got if e["p"] == p]
            assert ks == list(range(len(ks))), (kind, x, p, ks)
        assert sum(1 for e in got) == PER_EXEC
    assert time.monotonic() > 0
