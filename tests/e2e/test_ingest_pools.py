"""Past the spare pools: more publishes pending at once than the store keeps completion entries
for (1024) and than a producer keeps reply slots for (256). Every line is still answered once, in
its order, with the right seq, and nothing leaks (the ASan build runs this too)."""
import os
import threading

from conftest import mkdtemp
from csutil import ev, history, metric_values

BURST = 3000


def jcfg(fsync):
    return {"journal": {"dir": os.path.join(mkdtemp("cs-journal-"), "j"), "fsync": fsync},
            "store": {"ring_events": 16384, "ring_bytes": 64 << 20}}


def check_burst(p, x, first_seq, tag):
    lines = [ev(x, "log", event_id="%s-%d" % (tag, i), n=i) for i in range(BURST)]
    replies = p.request(*lines, timeout=60)
    assert len(replies) == BURST
    for i, (e, r) in enumerate(zip(lines, replies)):
        assert r.get("ok") is True and r["event_id"] == e["event_id"], (i, r)
        assert r["seq"] == first_seq + i and not r.get("duplicate"), (i, r)


def test_one_producer_bursts_past_both_pools(make_daemon):
    d = make_daemon(jcfg("always"))
    x = "pools-one"
    with d.producer(timeout=60) as p:
        check_burst(p, x, 1, "a")  # cold: every entry and slot allocated
        check_burst(p, x, BURST + 1, "b")  # warm: the kept ones reused, the rest allocated again
        # Re-posts of the first burst answer the original seqs, as duplicates.
        again = p.request(*[ev(x, "log", event_id="a-%d" % i, n=i) for i in range(0, BURST, 97)], timeout=30)
        assert [r["seq"] for r in again] == list(range(1, BURST + 1, 97))
        assert all(r.get("duplicate") for r in again)
    seqs = [e["seq"] for e in history(d, x)["events"]]
    assert seqs == list(range(1, 2 * BURST + 1))


def test_many_producers_past_the_completion_pool(make_daemon):
    d = make_daemon(jcfg("always"))
    producers, per = 16, 200  # 3,200 lines in flight at once against a pool of 1,024
    errors, peak = [], [0]
    start = threading.Barrier(producers + 1)

    def post(k):
        try:
            with d.producer(timeout=60) as p:
                lines = [ev("pools-%d" % (k % 4), "log", event_id="m%d-%d" % (k, i)) for i in range(per)]
                start.wait(10)
                replies = p.request(*lines, timeout=60)
                if [r.get("event_id") for r in replies] != [e["event_id"] for e in lines]:
                    errors.append("producer %d: replies out of order" % k)
                if not all(r.get("ok") is True and not r.get("duplicate") for r in replies):
                    errors.append("producer %d: %r" % (k, [r for r in replies if r.get("ok") is not True][:3]))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append("producer %d: %r" % (k, e))

    threads = [threading.Thread(target=post, args=(k,), daemon=True) for k in range(producers)]
    for t in threads:
        t.start()
    start.wait(10)
    while any(t.is_alive() for t in threads):
        peak[0] = max(peak[0], int(metric_values(d).get("crewstream_store_pending_publishes", 0)))
    for t in threads:
        t.join(60)
    assert not errors, errors[:5]
    print("peak pending publishes seen on /metrics: %d" % peak[0])
    for x in range(4):
        evs = history(d, "pools-%d" % x)["events"]
        assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))
        assert len(evs) == producers // 4 * per
