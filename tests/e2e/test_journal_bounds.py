"""A bounded, self-cleaning journal (SPEC §8, issue 12 point 3): many short executions (a few
events each, then finished) posted far past a small journal.max_bytes. The size of the journal's
segments, sampled all along, never exceeds max_bytes; old segments are deleted; and a restart
gives back exactly the executions (and their events and status) the daemon held before it."""

import os
import threading
import time

import requests

from conftest import mkdtemp
from csutil import ev, journal_bytes, journal_segments, metric_values

MAX_BYTES = 8 << 20  # the smallest journal.max_bytes allowed
POST_BYTES = 3 * MAX_BYTES  # bounded: how much event JSON the test posts
PAD = 600


class Sampler(threading.Thread):
    def __init__(self, jdir):
        super().__init__(daemon=True)
        self.jdir = jdir
        self.stop = threading.Event()
        self.max_cjs = 0
        self.max_all = 0
        self.samples = 0
        self.names = set()

    def run(self):
        deadline = time.monotonic() + 120
        while not self.stop.is_set() and time.monotonic() < deadline:
            self.max_cjs = max(self.max_cjs, journal_bytes(self.jdir))
            self.max_all = max(self.max_all, journal_bytes(self.jdir, every_file=True))
            self.names.update(os.path.basename(p) for p in journal_segments(self.jdir))
            self.samples += 1
            time.sleep(0.02)


def listing(d):
    """The newest executions of each status (each list is capped at 1000)."""
    out = {}
    for st in ("running", "completed", "error", "canceled", "pending_human_input"):
        r = requests.get(d.base + "/v1/executions?limit=1000&status=" + st, timeout=10)
        assert r.status_code == 200, r.text
        out[st] = r.json()["executions"]
    return out


def sample_state(d, ids):
    """{execution: (status object, retained events)} for the executions in ids."""
    s = requests.Session()
    out = {}
    for x in ids:
        r = s.get(d.base + "/v1/executions/" + x, timeout=5)
        assert r.status_code == 200, r.text
        p = s.get(d.base + "/v1/executions/%s/poll" % x, params={"timeout": "0"}, timeout=5)
        assert p.status_code == 200, p.text
        out[x] = (r.json(), p.json())
    return out


def test_many_short_executions_stay_under_max_bytes(make_daemon):
    jdir = os.path.join(mkdtemp("cs-journal-"), "j")
    d = make_daemon({
        "journal": {"dir": jdir, "fsync": "everysec", "max_bytes": MAX_BYTES},
        # The store holds less than the journal may: what it retains must all come back.
        "store": {"max_bytes": 2 << 20, "ring_events": 64, "retain_s": 3600},
        "log": {"level": "info"},
    })
    sampler = Sampler(jdir)
    sampler.start()
    posted, n = 0, 0
    t0 = time.monotonic()
    try:
        with d.producer(timeout=20) as p:
            while posted < POST_BYTES:
                assert time.monotonic() - t0 < 90, "posting took too long (%d bytes)" % posted
                batch = []
                for _ in range(50):
                    x = "short-%06d" % n
                    kind = n % 3
                    batch += [ev(x, "run.started"), ev(x, "log", pad="a" * PAD), ev(x, "tool.called", pad="b" * PAD),
                              ev(x, "log", pad="c" * PAD)]
                    if kind == 0:
                        batch.append(ev(x, "run.completed", result={"n": n}))
                    elif kind == 1:
                        batch.append(ev(x, "run.failed", error="e%d" % n))
                    else:
                        batch.append(ev(x, "run.canceled"))
                    n += 1
                replies = p.request(*batch, timeout=20)
                bad = [r for r in replies if r.get("ok") is not True]
                assert not bad, bad[:3]
                posted += 50 * (4 * PAD + 400)
    finally:
        time.sleep(1.5)  # let everysec sync and the cleanup run
        sampler.stop.set()
        sampler.join(5)
    print("%d executions, %d bytes posted; journal max %d bytes in segments (%d in every file), %d samples, "
          "segments now %r" % (n, posted, sampler.max_cjs, sampler.max_all, sampler.samples,
                               [os.path.basename(s) for s in journal_segments(jdir)]))
    assert sampler.samples >= 20
    assert sampler.max_cjs <= MAX_BYTES, "the journal's segments reached %d bytes > max_bytes %d" % (
        sampler.max_cjs, MAX_BYTES)
    assert sampler.max_all <= MAX_BYTES, "the journal directory reached %d bytes > max_bytes %d" % (
        sampler.max_all, MAX_BYTES)
    assert sampler.names, "no segment ever appeared in %s" % jdir
    now = {os.path.basename(s) for s in journal_segments(jdir)}
    first = min(sampler.names)
    assert first not in now, "the first segment %s was never deleted" % first
    assert len(sampler.names) > len(now), "no segment was deleted"

    m = metric_values(d)
    assert 0 < m["crewstream_journal_bytes"] <= MAX_BYTES, m["crewstream_journal_bytes"]
    assert m["crewstream_journal_max_bytes"] == MAX_BYTES
    assert m["crewstream_journal_segments_deleted_total"] >= 1
    assert m["crewstream_journal_segments"] == len(journal_segments(jdir))
    # Every 20th execution and the newest 200: their status and retained events, before and after.
    ids = ["short-%06d" % i for i in sorted(set(range(0, n, 20)) | set(range(max(0, n - 200), n)))]
    before, lists = sample_state(d, ids), listing(d)
    execs = metric_values(d)["crewstream_executions"]
    assert sum(len(b[1]["events"]) for b in before.values()) > 0
    d.restart()
    after = sample_state(d, ids)
    for x in ids:
        assert after[x] == before[x], "%s before the restart: %r\nafter: %r" % (x, before[x], after[x])
    assert listing(d) == lists
    assert metric_values(d)["crewstream_executions"] == execs
    assert journal_bytes(jdir, every_file=True) <= MAX_BYTES
    # Executions evicted before the restart stay gone (not resurrected from old records).
