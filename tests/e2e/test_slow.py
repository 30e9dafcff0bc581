"""Slow subscribers (SPEC §6): one that stops reading (tiny SO_RCVBUF) while events flood costs
nobody else anything; when it reads again after falling behind the ring it is sent a
stream.gap and continues from the oldest retained event. One that makes no progress for
limits.stall_s is disconnected and can resume; an idle, caught-up one is not."""

import json
import threading
import time

from csutil import RawWS, SSEClient, ev

RING = 256
FLOOD = 3000
PAD = "p" * 1000


def flood(d, x, n=FLOOD, batch=100, pause=0.02):
    """Posts n ~1 KiB events from one connection, pipelined in batches of `batch` (paced, so
    that a normal reader keeps within the ring); returns the seconds it took."""
    t0 = time.monotonic()
    with d.producer(timeout=30) as p:
        for b in range(0, n, batch):
            replies = p.request(*[ev(x, "llm_stream_chunk", n=i, pad=PAD) for i in range(b, min(n, b + batch))])
            assert all(r.get("ok") for r in replies)
            time.sleep(pause)
    return time.monotonic() - t0


class Reader(threading.Thread):
    """A normal subscriber reading as fast as it can, recording when each event arrived."""

    def __init__(self, d, x, n):
        super().__init__(daemon=True)
        self.s = SSEClient(d.port, "/v1/executions/%s/events" % x)
        self.n, self.seqs, self.times, self.error = n, [], [], None

    def run(self):
        try:
            while len(self.seqs) < self.n:
                f = self.s.next_event(timeout=10)
                if f is None:
                    break
                e = f.json()
                assert e["type"] != "stream.gap", "the normal subscriber fell behind: %r" % e
                self.seqs.append(e["seq"])
                self.times.append(time.monotonic())
        except Exception as e:
            self.error = e
        finally:
            self.s.close()


def drain_sse(s, until_seq, timeout=20):
    """Reads the rest of a stalled stream: a list of ("event", seq) and ("gap", gap-event) items."""
    items = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        f = s.next_event(timeout=5)
        if f is None:
            break
        e = f.json()
        if e["type"] == "stream.gap":
            assert f.id is None, f.lines
            items.append(("gap", e))
            continue
        items.append(("event", e["seq"]))
        if e["seq"] >= until_seq:
            break
    return items


def check_segments(items, x, last_seq, first_seq=1):
    """The stream a reader saw, split at its gaps: each run of events contiguous; each gap first;
    after a gap the events start at its first_seq, past the last event seen; ends at last_seq.
    Returns the gap events. (A reader that stays behind while the flood goes on may be told
    more than once: each time it falls behind the ring.)"""
    gaps = []
    expect = first_seq
    for kind, v in items:
        if kind == "gap":
            assert v["execution_id"] == x and isinstance(v.get("requested"), str), v
            assert set(v) == {"type", "execution_id", "requested", "first_seq"}, v
            assert v["first_seq"] > expect, "a gap that skips nothing: %r (next expected %d)" % (v, expect)
            expect = v["first_seq"]
            gaps.append(v)
        else:
            assert v == expect, "expected seq %d, got %d (gaps so far %r)" % (expect, v, gaps)
            expect += 1
    assert expect - 1 == last_seq, "ended at %d" % (expect - 1)
    assert items and items[-1][0] == "event"
    return gaps


def test_slow_sse_reader_gets_gap_and_others_are_not_slowed(make_daemon):
    d = make_daemon({"store": {"ring_events": RING}, "limits": {"stall_s": 60}})
    x = "flood"
    slow = SSEClient(d.port, "/v1/executions/%s/events" % x, rcvbuf=2048)
    assert slow.status == 200
    normal = Reader(d, x, FLOOD)
    normal.start()
    time.sleep(0.3)
    try:
        t_start = time.monotonic()
        took = flood(d, x)
        normal.join(timeout=20)
        assert normal.error is None, normal.error
        assert normal.seqs == list(range(1, FLOOD + 1))
        lag = normal.times[-1] - (t_start + took)
        assert lag < 2.0, "the normal subscriber finished %.2fs after the producer" % lag
        assert took < 15, took
        time.sleep(0.5)
        items = drain_sse(slow, FLOOD)
        gaps = check_segments(items, x, FLOOD)
        assert gaps, "no stream.gap for a reader %d events behind a ring of %d" % (FLOOD, RING)
        # A gap continues from the oldest retained event, never past it (the ring ends at FLOOD).
        assert all(g["first_seq"] <= FLOOD - RING + 1 for g in gaps), gaps
        # And it is live again.
        d.post_ok(ev(x, "log"))
        f = slow.next_event(timeout=5)
        assert f is not None and f.json()["seq"] == FLOOD + 1
    finally:
        slow.close()


def test_slow_ws_reader_gets_gap(make_daemon):
    d = make_daemon({"store": {"ring_events": RING}, "limits": {"stall_s": 60}, "heartbeat_s": 30})
    x = "wsflood"
    slow = RawWS(d.port, "/v1/executions/%s/ws" % x, rcvbuf=2048)
    assert slow.status == 101, slow.headers
    try:
        flood(d, x)
        time.sleep(0.5)
        items = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            m = slow.next_message(timeout=5)
            if m is None:
                break
            e = json.loads(m)
            if e["type"] == "stream.gap":
                items.append(("gap", e))
                continue
            items.append(("event", e["seq"]))
            if e["seq"] >= FLOOD:
                break
        gaps = check_segments(items, x, FLOOD)
        assert gaps, "no stream.gap for a reader %d events behind a ring of %d" % (FLOOD, RING)
        assert all(g["first_seq"] <= FLOOD - RING + 1 for g in gaps), gaps
    finally:
        slow.close()


def test_stalled_subscriber_is_disconnected_and_can_resume(make_daemon):
    d = make_daemon({"store": {"ring_events": RING}, "limits": {"stall_s": 2}, "heartbeat_s": 1})
    x = "stall"
    slow = SSEClient(d.port, "/v1/executions/%s/events" % x, rcvbuf=2048)
    idle = SSEClient(d.port, "/v1/executions/other/events")
    try:
        flood(d, x)
        time.sleep(4.5)  # no progress for more than stall_s
        # Read what was buffered; the stream must end (EOF), not go on.
        last = None
        ended = False
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                f = slow.next_frame(timeout=3)
            except EOFError:
                ended = True
                break
            if f is None:
                break
            if f.kind == "event" and f.json()["type"] != "stream.gap":
                last = f
        assert ended, "a subscriber stalled for longer than stall_s was not disconnected"
        assert last is not None and last.json()["seq"] < FLOOD
        # It can resume from the last event it saw: a gap (it fell behind the ring), then the rest.
        with SSEClient(d.port, "/v1/executions/%s/events" % x, headers={"Last-Event-ID": last.id}) as again:
            items = drain_sse(again, FLOOD)
        # Resumed after the flood: exactly one gap, first, naming the cursor; then the ring.
        assert items[0][0] == "gap", items[:3]
        gaps = check_segments(items, x, FLOOD, first_seq=last.json()["seq"] + 1)
        assert gaps == [{"type": "stream.gap", "execution_id": x, "requested": last.id, "first_seq": FLOOD - RING + 1}]
        # The idle, caught-up subscriber was not disconnected: it still gets heartbeats and events.
        comments = 0
        for _ in range(10):
            f = idle.next_frame(timeout=2)
            assert f is not None, "the idle subscriber went silent"
            if f.kind == "comment":
                comments += 1
                break
        assert comments == 1
        d.post_ok(ev("other", "log"))
        assert idle.next_event(timeout=5).json()["seq"] == 1
    finally:
        slow.close()
        idle.close()
