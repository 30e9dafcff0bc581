"""crewstream.Subscriber against the real daemon: history then live, resume by Last-Event-ID
after a cut connection (every event once, in order), stream.gap surfaced (evicted history, a
daemon restart), filters, tokens, the global stream, the asyncio flavour."""

import asyncio
import threading
import time

import pytest

import crewstream
import crewstream.aio
from crewstream import HTTPError, Subscriber


def post(d, x, n, start=0, type_="log"):
    return d.post_ok(*[{"execution_id": x, "type": type_, "i": start + i} for i in range(n)])


def take(it, n, timeout=10.0):
    """n events from an iterator, with a deadline (the iterator's reads have their own timeout)."""
    out = []
    deadline = time.monotonic() + timeout
    for ev in it:
        out.append(ev)
        if len(out) >= n or time.monotonic() > deadline:
            break
    return out


def test_history_then_live(daemon):
    post(daemon, "sub-1", 3)
    sub = Subscriber(daemon.base, "sub-1", read_timeout=5)
    it = sub.events()
    got = take(it, 3)
    assert [e.data["i"] for e in got] == [0, 1, 2]
    assert [e.seq for e in got] == [1, 2, 3]
    assert all(e.id for e in got) and got[0].type == "log" and not got[0].is_gap
    threading.Timer(0.3, post, (daemon, "sub-1", 2, 3)).start()
    got = take(it, 2)
    assert [e.seq for e in got] == [4, 5]
    sub.close()


def test_resume_after_cut(daemon):
    """The connection is cut after the third event (events already buffered are still yielded;
    the rest is gone with the connection): the subscriber resumes with Last-Event-ID and gets
    every later event exactly once."""
    post(daemon, "sub-cut", 6)
    sub = Subscriber(daemon.base, "sub-cut", read_timeout=5)
    it = sub.events()
    got = take(it, 3)
    cursor = got[-1].id
    sub._conn.sock.shutdown(2)  # as a proxy or a network would
    threading.Timer(0.5, post, (daemon, "sub-cut", 4, 6)).start()
    got += take(it, 7)
    assert [e.seq for e in got] == list(range(1, 11)), "lost or doubled"
    assert sub.reconnects == 1 and got[-1].reconnects == 1
    assert sub.last_event_id == got[-1].id and cursor != got[-1].id
    assert not any(e.is_gap for e in got)
    sub.close()


def test_resume_from_given_position(daemon):
    post(daemon, "sub-pos", 5)
    first = take(Subscriber(daemon.base, "sub-pos", read_timeout=5).events(), 5)
    got = take(Subscriber(daemon.base, "sub-pos", last_event_id=first[2].id, read_timeout=5).events(), 2)
    assert [e.seq for e in got] == [4, 5]
    got = take(Subscriber(daemon.base, "sub-pos", since_seq=3, read_timeout=5).events(), 2)
    assert [e.seq for e in got] == [4, 5]
    got = take(Subscriber(daemon.base, "sub-pos", last_event_id=first[1].data["event_id"], read_timeout=5).events(), 1)
    assert got[0].seq == 3


def test_gap_surfaced_when_evicted(make_daemon):
    d = make_daemon({"store": {"ring_events": 4}})
    post(d, "sub-gap", 10)
    got = take(Subscriber(d.base, "sub-gap", last_event_id="2", read_timeout=5).events(), 5)
    assert got[0].is_gap and got[0].id is None
    assert got[0].data["first_seq"] == 7 and got[0].data["requested"] == "2"
    assert [e.seq for e in got[1:]] == [7, 8, 9, 10]


def test_gap_surfaced_across_restart(daemon):
    """The daemon restarts under a subscriber: it reconnects with a cursor of the old history,
    which the new daemon recognises as such: stream.gap first, then the new history."""
    post(daemon, "sub-rs", 3)
    sub = Subscriber(daemon.base, "sub-rs", read_timeout=5, max_reconnect_delay=0.5)
    it = sub.events()
    take(it, 3)
    daemon.restart()
    post(daemon, "sub-rs", 2, 100)
    more = take(it, 3, timeout=20)
    assert more[0].is_gap, "a subscriber resumed into another history without being told"
    assert [e.data["i"] for e in more[1:]] == [100, 101]
    assert sub.reconnects >= 1
    sub.close()


def test_filter_and_named(daemon):
    daemon.post_ok(
        {"execution_id": "sub-f", "type": "run.started"},
        {"execution_id": "sub-f", "type": "log"},
        {"execution_id": "sub-f", "type": "agent.started"},
        {"execution_id": "sub-f", "type": "run.completed", "result": "r"},
    )
    got = take(Subscriber(daemon.base, "sub-f", types=["run.*"], named=True, read_timeout=5).events(), 2)
    assert [e.type for e in got] == ["run.started", "run.completed"]
    assert [e.event for e in got] == ["run.started", "run.completed"]
    with pytest.raises(HTTPError) as e:
        take(Subscriber(daemon.base, "sub-f", types=["a b"], read_timeout=5).events(), 1)
    assert e.value.status == 400


def test_tokens_and_global_stream(make_daemon):
    d = make_daemon(
        {
            "auth": {
                "tokens": [
                    {"name": "all", "token": "tok-all", "scopes": ["read"], "executions": ["*"]},
                    {"name": "one", "token": "tok-one", "scopes": ["read"], "executions": ["sub-a"]},
                ]
            }
        }
    )
    d.post_ok({"execution_id": "sub-a", "type": "log"}, {"execution_id": "sub-b", "type": "log"})
    with pytest.raises(HTTPError) as e:
        take(Subscriber(d.base, "sub-a", read_timeout=5).events(), 1)
    assert e.value.status == 401
    got = take(Subscriber(d.base, "sub-a", token="tok-one", read_timeout=5).events(), 1)
    assert got[0].data["execution_id"] == "sub-a"
    got = take(Subscriber(d.base, "sub-a", token="tok-one", token_in_query=True, read_timeout=5).events(), 1)
    assert got[0].data["execution_id"] == "sub-a"
    with pytest.raises(HTTPError) as e:
        take(Subscriber(d.base, None, token="tok-one", read_timeout=5).events(), 1)
    assert e.value.status == 403
    got = take(Subscriber(d.base, None, token="tok-all", read_timeout=5).events(), 2)
    assert sorted(e.data["execution_id"] for e in got) == ["sub-a", "sub-b"]


def test_producer_to_subscriber_asyncio(daemon):
    async def main():
        sub = crewstream.aio.Subscriber(daemon.base, "sub-aio", read_timeout=5)
        async with await crewstream.aio.Producer.connect(daemon.sock) as p:
            await p.post_many([{"execution_id": "sub-aio", "type": "log", "i": i} for i in range(5)])
        seen = []
        async for ev in sub:
            seen.append(ev.seq)
            if len(seen) == 5:
                break
        return seen

    assert asyncio.run(asyncio.wait_for(main(), 30)) == [1, 2, 3, 4, 5]
