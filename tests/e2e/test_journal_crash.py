"""Crash tests for the journal (SPEC §8, issue 12 point 5): four producers post with
acknowledgements (every line its own event_id) into a few executions while an SSE subscriber of
one execution and one of GET /v1/events note the cursors they see; the daemon is SIGKILLed at a
random moment (the seed is printed; CS_CRASH_SEED=N repeats a run) and restarted on the same
journal directory. Then, under each journal.fsync mode:

- every acknowledged event is there exactly once, with the seq and event_id it was acknowledged
  with and the cursor a subscriber saw for it, and each producer's events in the order it posted;
- an execution's seqs run 1..N without a hole, no event_id twice;
- re-posting every unacknowledged line answers the seq it already has when it was stored (never a
  second copy) and a new one right after the last when it was not; the next event continues the seq;
- the global stream holds every acknowledged event once, and a global cursor from before the
  crash resumes exactly after it.
"""

import os
import random
import signal
import threading
import time

import pytest

from conftest import mkdtemp
from csutil import SSEClient, ev, history, http_json

EXECS = ["crash-a", "crash-b", "crash-c"]
PRODUCERS = 4
PER_PRODUCER = 6000  # bounded: at most this many lines per producer


def journal_config(jdir, fsync, **more):
    cfg = {
        "journal": {"dir": jdir, "fsync": fsync},
        "store": {"ring_events": 32768, "ring_bytes": 256 << 20, "global_events": 65536},
        "log": {"level": "info"},
    }
    for k, v in more.items():
        cfg.setdefault(k, {}).update(v)
    return cfg


class Poster(threading.Thread):
    """One producer connection: batches of 1..8 lines, each with its own event_id, until stopped,
    the connection breaks or PER_PRODUCER lines went out."""

    def __init__(self, d, k, rng, stop):
        super().__init__(daemon=True)
        self.d, self.k, self.rng, self.stop = d, k, rng, stop
        self.sent = []  # (execution, event_id, type, n) in posting order
        self.acked = {}  # event_id -> (execution, seq)
        self.error = None  # an unexpected reply (a broken connection is expected)

    def run(self):
        try:
            p = self.d.producer(timeout=10)
        except OSError as e:
            self.error = "connect: %r" % e
            return
        n = 0
        try:
            while n < PER_PRODUCER and not self.stop.is_set():
                batch = []
                for _ in range(self.rng.randint(1, 8)):
                    x = self.rng.choice(EXECS)
                    eid = "p%d-%d" % (self.k, n)
                    batch.append(ev(x, "log", event_id=eid, producer=self.k, n=n, pad="x" * self.rng.randint(0, 64)))
                    self.sent.append((x, eid, "log", n))
                    n += 1
                try:
                    replies = p.request(*batch, timeout=10)
                except (EOFError, OSError, TimeoutError):
                    return  # the daemon went away mid-batch: these lines are unacknowledged
                for e, r in zip(batch, replies):
                    if r.get("ok") is not True or r.get("event_id") != e["event_id"] or r.get("duplicate"):
                        self.error = "line %r got %r" % (e, r)
                        return
                    self.acked[e["event_id"]] = (e["execution_id"], r["seq"])
        finally:
            p.close()


class Watcher(threading.Thread):
    """An SSE subscriber that notes (cursor, event) of everything it sees until the stream breaks."""

    def __init__(self, d, path):
        super().__init__(daemon=True)
        self.d, self.path = d, path
        self.seen = []
        self.ready = threading.Event()

    def run(self):
        try:
            with SSEClient(self.d.port, self.path, timeout=5) as s:
                self.ready.set()
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    f = s.next_event(timeout=1.0)
                    if f is not None:
                        self.seen.append((f.id, f.json()))
        except (EOFError, OSError):
            pass
        finally:
            self.ready.set()


def full_history(d, x):
    body = history(d, x)
    assert body.get("gap") in (None, False), "a gap in %s after the restart: %r" % (x, {k: v for k, v in body.items() if k != "events"})
    return body["events"]


def sse_frames(d, path, n, timeout=20, headers=None):
    with SSEClient(d.port, path, headers=headers) as s:
        assert s.status == 200
        return s.collect(n, timeout=timeout)


@pytest.mark.parametrize("fsync", ["none", "everysec", "always"])
def test_sigkill_loses_nothing_acknowledged(make_daemon, fsync):
    seed = int(os.environ.get("CS_CRASH_SEED", random.randrange(1 << 30)))
    print("CS_CRASH_SEED=%d fsync=%s" % (seed, fsync))
    rng = random.Random(seed)
    jdir = os.path.join(mkdtemp("cs-journal-"), "j")
    d = make_daemon(journal_config(jdir, fsync))
    why = "(CS_CRASH_SEED=%d, fsync=%s)" % (seed, fsync)

    # One event each first, so the watchers' executions exist; then the load.
    d.post_ok(*[ev(x, "run.started", event_id="start-" + x) for x in EXECS])
    watch_x = Watcher(d, "/v1/executions/%s/events" % EXECS[0])
    watch_g = Watcher(d, "/v1/events")
    for w in (watch_x, watch_g):
        w.start()
        w.ready.wait(5)
    stop = threading.Event()
    posters = [Poster(d, k, random.Random(rng.random()), stop) for k in range(PRODUCERS)]
    for p in posters:
        p.start()
    # The kill lands a random time after the first acknowledgement (a loaded CI host can take longer
    # than the shortest sleep to get the first one).
    deadline = time.monotonic() + 15
    while not any(p.acked for p in posters) and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 0.55))
    assert d.proc.poll() is None, "the daemon died under load %s:\n%s" % (why, d.stderr_text()[-3000:])
    d.proc.send_signal(signal.SIGKILL)
    assert d.wait_exit(10) == -signal.SIGKILL
    stop.set()
    for t in posters + [watch_x, watch_g]:
        t.join(15)
        assert not t.is_alive(), "a client thread hangs %s" % why
    for p in posters:
        assert p.error is None, "%s %s" % (p.error, why)
    acked = {}
    for p in posters:
        acked.update(p.acked)
    acked.update({"start-" + x: (x, 1) for x in EXECS})
    sent = {eid: (x, typ, n) for p in posters for (x, eid, typ, n) in p.sent}
    print("acknowledged %d of %d lines before the kill" % (len(acked) - len(EXECS), len(sent)))
    assert len(acked) > len(EXECS), "nothing acknowledged before the kill %s" % why

    d.start()
    assert "journal" in d.stderr_text().lower(), "no journal line in the log of the restart"

    # Per execution: 1..N without a hole, every acknowledged event once with its seq, producers' order.
    hist = {x: full_history(d, x) for x in EXECS}
    stored = {e["event_id"]: (x, e["seq"]) for x in EXECS for e in hist[x]}
    missing = [eid for eid in acked if eid not in stored]
    assert not missing, "%d acknowledged events lost, e.g. %r %s" % (len(missing), missing[:5], why)
    for x in EXECS:
        evs = hist[x]
        seqs = [e["seq"] for e in evs]
        assert seqs == list(range(1, len(evs) + 1)), "%s: seqs %r... not 1..N %s" % (x, seqs[:20], why)
        eids = [e["event_id"] for e in evs]
        assert len(eids) == len(set(eids)), "%s: an event_id twice %s" % (x, why)
        for e in evs:
            assert e["execution_id"] == x
            if e["event_id"] in acked:
                assert acked[e["event_id"]] == (x, e["seq"]), "%s stored as %r, acknowledged as %r %s" % (
                    e["event_id"], (x, e["seq"]), acked[e["event_id"]], why)
            else:
                assert e["event_id"] in sent, "an event nobody sent: %r" % e
        for k in range(PRODUCERS):
            ns = [e["n"] for e in evs if e.get("producer") == k]
            assert ns == sorted(ns), "%s: producer %d's events out of order %s" % (x, k, why)
        st = http_json(d.port, "/v1/executions/" + x)[2]
        assert st["last_seq"] == len(evs) and st["status"] == "running", st

    # What a subscriber saw before the kill is there, at the same seq: otherwise its cursor would now
    # name another event (the seq is reused) and a resume from it would skip that one silently.
    seen_lost = [(e["execution_id"], e["seq"], e["event_id"]) for _, e in watch_x.seen + watch_g.seen
                 if stored.get(e["event_id"]) != (e["execution_id"], e["seq"])]
    assert not seen_lost, "subscribers saw %d event(s) the crash lost, e.g. %r %s" % (len(seen_lost), seen_lost[:3], why)

    # The cursors the subscribers saw before the kill are the ones the events have now.
    before = {e["event_id"]: cur for cur, e in watch_x.seen}
    frames = sse_frames(d, "/v1/executions/%s/events" % EXECS[0], len(hist[EXECS[0]]), timeout=40)
    assert [f.json()["seq"] for f in frames] == [e["seq"] for e in hist[EXECS[0]]]
    checked = 0
    for f in frames:
        e = f.json()
        if e["event_id"] in before and e["event_id"] in acked:
            assert f.id == before[e["event_id"]], "%s: cursor %r before, %r after %s" % (
                e["event_id"], before[e["event_id"]], f.id, why)
            checked += 1
    assert checked > 0 or not watch_x.seen, "no acknowledged event seen by the subscriber to compare"
    # And resuming from the last acknowledged one the subscriber saw gives exactly the rest.
    last = [(cur, e) for cur, e in watch_x.seen if e["event_id"] in acked]
    if last:
        cur, e = last[-1]
        rest = sse_frames(d, "/v1/executions/%s/events" % EXECS[0], len(hist[EXECS[0]]) - e["seq"],
                          headers={"Last-Event-ID": cur})
        assert [f.json()["seq"] for f in rest] == list(range(e["seq"] + 1, len(hist[EXECS[0]]) + 1)), why

    # The global stream: every retained event once, each execution in seq order; a cursor from
    # before the kill resumes exactly after its event.
    total = sum(len(v) for v in hist.values())
    g = sse_frames(d, "/v1/events", total, timeout=60)
    gev = [(f.json()["execution_id"], f.json()["event_id"]) for f in g]
    assert len(gev) == total and len(set(gev)) == total, "global stream: %d events, %d distinct, %d stored %s" % (
        len(gev), len(set(gev)), total, why)
    for x in EXECS:
        assert [f.json()["seq"] for f in g if f.json()["execution_id"] == x] == [e["seq"] for e in hist[x]]
    gpos = {f.json()["event_id"]: i for i, f in enumerate(g)}
    glast = [(cur, e) for cur, e in watch_g.seen if e["event_id"] in acked]
    if glast:
        cur, e = glast[-1]
        want = [(f.json()["execution_id"], f.json()["seq"]) for f in g[gpos[e["event_id"]] + 1 :]]
        if want:
            got = sse_frames(d, "/v1/events", len(want), headers={"Last-Event-ID": cur})
            assert [(f.json()["execution_id"], f.json().get("seq")) for f in got] == want, why

    # Re-post every line that was not acknowledged: stored ones answer their seq, the others
    # continue the seq; then every event_id is there exactly once.
    unacked = [eid for eid in sent if eid not in acked]
    last_seq = {x: len(hist[x]) for x in EXECS}
    if unacked:
        replies = d.post_ok(*[ev(sent[eid][0], "log", event_id=eid, n=sent[eid][2], retry=True) for eid in unacked])
        for eid, r in zip(unacked, replies):
            x = sent[eid][0]
            if eid in stored:
                assert r["seq"] == stored[eid][1] and r.get("duplicate") is True, (eid, stored[eid], r, why)
            else:
                last_seq[x] += 1
                assert r["seq"] == last_seq[x] and not r.get("duplicate"), (eid, r, last_seq[x], why)
    for x in EXECS:
        r = d.post_ok(ev(x, "log", message="after"))[0]
        assert r["seq"] == last_seq[x] + 1, "%s: next seq %d after %d %s" % (x, r["seq"], last_seq[x], why)
        evs = full_history(d, x)
        assert [e["seq"] for e in evs] == list(range(1, last_seq[x] + 2))
        assert len({e["event_id"] for e in evs}) == len(evs)
    assert {e for e in sent} <= {e["event_id"] for x in EXECS for e in full_history(d, x)}
