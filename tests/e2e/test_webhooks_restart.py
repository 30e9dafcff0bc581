"""Webhook deliveries resume after a restart (SPEC §9, issue 13: "a daemon restart in the middle of
retries (delivered after it)"). With a journal, registrations and delivery cursors are journal records
(src/whrec.c): a receiver that answers 200 for a few requests and then 500 keeps the daemon retrying;
the daemon is stopped (SIGTERM, and separately SIGKILL) mid-retries and restarted on the same journal;
the receiver now answers 200, and every event is delivered, in seq order per (endpoint, execution),
none missing, and the deliveries that had succeeded before the restart are not sent again (duplicates
are allowed by at-least-once only for a request in flight at the kill, which here is a failing one).

Both kinds of endpoint: a per-execution registration (taskWebhookUrl and a bearer humanInputWebhook,
registered as a runtime does, and from a POST /kickoff body, with webhooks.allow set) and a global
endpoint from the configuration.
Also: the state survives snapshots that delete the older segments, an endpoint removed from the
configuration drops its cursors with a log line (once), and without a journal nothing is kept."""

import json
import os
import signal
import time

import pytest

from conftest import mkdtemp
from csutil import ev, http_get, wait_until
from test_webhooks import Receiver, endpoint, register

HOW = ["sigterm", "sigkill"]
GLOBAL_TYPES = ["log", "task_completed"]


def config(rec, jdir, endpoints=True, store=None, **journal):
    cfg = {
        "store": store or {},
        "webhooks": {
            "allow": [rec.url + "/"],
            "max_attempts": 50,
            "endpoints": [{"name": "g", "url": rec.url + "/g", "types": GLOBAL_TYPES}] if endpoints else [],
        },
        "log": {"level": "info"},
    }
    if jdir is not None:
        cfg["journal"] = dict({"dir": jdir, "fsync": "everysec"}, **journal)
    return cfg


def stop(d, how):
    if how == "sigterm":
        assert d.stop() == 0, d.stderr_text()
    else:
        d.proc.send_signal(signal.SIGKILL)
        assert d.wait_exit(10) == -signal.SIGKILL


def successes(rec, path, ok_first, restart_at):
    """The requests to path answered 200: the first ok_first before the restart, all after it."""
    got = rec.got(path)
    return got[: min(ok_first, restart_at)] + got[restart_at:]


def by_exec(reqs):
    out = {}
    for r in reqs:
        e = json.loads(r["body"])
        out.setdefault(e["execution_id"], []).append(e["seq"])
    return out


def check_delivered(rec, path, ok_first, restart_at, expected):
    """Every expected (execution -> seqs) delivered with a 200, in seq order per execution; returns the
    number of duplicates (a seq delivered twice)."""
    got = by_exec(successes(rec, path, ok_first, restart_at))
    dups = 0
    for x, seqs in expected.items():
        s = got.get(x, [])
        assert s == sorted(s), "%s %s: out of order: %r" % (path, x, s)
        assert set(s) == set(seqs), "%s %s: delivered %r, expected %r" % (path, x, s, seqs)
        dups += len(s) - len(set(s))
    assert set(got) == set(expected), "%s: deliveries for %r, expected %r" % (path, sorted(got), sorted(expected))
    return dups


def seqs_of(replies):
    return [r["seq"] for r in replies]


@pytest.mark.parametrize("how", HOW)
def test_restart_mid_retries_delivers_everything_in_order(make_daemon, how):
    rec = Receiver()
    try:
        # 200 for the first few requests, then 500 until the restart: deliveries advanced, then retrying.
        rec.on("/g", (200, {}, 0), (200, {}, 0), (500, {}, 0))
        rec.on("/task", (200, {}, 0), (500, {}, 0))
        rec.on("/hitl", (500, {}, 0))
        ok_first = {"/g": 2, "/task": 1, "/hitl": 0}
        jdir = os.path.join(mkdtemp(), "journal")
        d = make_daemon(config(rec, jdir))
        x1, x2 = "whr-reg-" + how, "whr-glob-" + how
        r = register(
            d,
            x1,
            taskWebhookUrl=rec.url + "/task",
            humanInputWebhook={"url": rec.url + "/hitl", "authentication": {"strategy": "bearer", "token": "tok-1"}},
        )
        assert r.get("ok") is True, r
        a = d.post_ok(ev(x1, "run.started"), *[ev(x1, "task_completed", task_id="t%d" % i) for i in range(3)])
        b = d.post_ok(*[ev(x2, "log", n=i) for i in range(5)])
        c = d.post_ok(ev(x1, "human_input_required", task_id="t9", prompt="ok?"))
        task1 = seqs_of(a)[1:]
        # Mid-retries: each path has had its successes and then at least two failed attempts.
        for path, n in ok_first.items():
            rec.wait(n + 2, path, timeout=15)
        assert endpoint(d, "g")["delivered"] == 2 and endpoint(d, "g")["retried"] >= 1
        stop(d, how)
        restart_at = {p: len(rec.got(p)) for p in ok_first}
        for p in ok_first:
            rec.on(p, (200, {}, 0))
        d.start()
        expected = {
            "/g": {x1: task1, x2: seqs_of(b)},
            "/task": {x1: task1},
            "/hitl": {x1: seqs_of(c)},
        }
        total = {p: sum(len(v) for v in e.values()) for p, e in expected.items()}
        for p in ok_first:
            n = total[p] - min(ok_first[p], restart_at[p])  # what was not delivered before the restart
            assert wait_until(lambda: len(rec.got(p)) - restart_at[p] >= n, timeout=15), (p, rec.got(p), n)
        time.sleep(0.5)  # anything sent twice would arrive now
        dups = sum(check_delivered(rec, p, ok_first[p], restart_at[p], expected[p]) for p in ok_first)
        # The successes before the restart are journaled: none is sent again; a kill could only repeat the
        # request in flight, and those were failing ones.
        assert dups == 0, "%d deliveries sent twice" % dups
        hitl = successes(rec, "/hitl", 0, restart_at["/hitl"])
        assert hitl[-1]["headers"]["Authorization"] == "Bearer tok-1"
        assert "webhooks: restored from the journal: 1 registrations" in d.stderr_text(), d.stderr_text()[-3000:]
        # The cursors go on after the restart: a new event of each execution is delivered right after.
        more = d.post_ok(ev(x1, "task_completed", task_id="t4"), ev(x2, "log", n=99))
        rec.wait(total["/g"] + restart_at["/g"] - ok_first["/g"] + 2, "/g", timeout=10)
        got = by_exec(successes(rec, "/g", ok_first["/g"], restart_at["/g"]))
        assert got[x1][-1] == more[0]["seq"] and got[x2][-1] == more[1]["seq"], got
        e = endpoint(d, "g")
        assert e["dead"] == 0 and e["gaps"] == 0, e
    finally:
        rec.close()


def test_state_survives_snapshots_that_delete_older_segments(make_daemon):
    rec = Receiver()
    try:
        rec.on("/task", (500, {}, 0))
        rec.on("/g", (500, {}, 0))
        jdir = os.path.join(mkdtemp(), "journal")
        # Small rings: the fillers below keep the store small (x is never evicted) while the journal grows.
        d = make_daemon(config(rec, jdir, store={"ring_events": 16, "global_events": 64}, max_bytes=8 << 20))
        x = "whr-snap"
        assert register(d, x, taskWebhookUrl=rec.url + "/task").get("ok") is True
        a = d.post_ok(*[ev(x, "task_completed", task_id="t%d" % i) for i in range(3)])
        rec.wait(2, "/task", timeout=10)
        first_segments = sorted(f for f in os.listdir(jdir) if f.endswith(".cjs"))
        # Enough other history (about 3 MiB: a segment is 1 MiB) for snapshots, each deleting the segments before it.
        pad = "p" * 400
        for k in range(12):
            d.post_ok(*[ev("whr-filler-%d" % k, "other", pad=pad, n=i) for i in range(500)])
        assert wait_until(lambda: not set(first_segments) & set(os.listdir(jdir)), timeout=10), (
            first_segments,
            os.listdir(jdir),
        )
        status, _, body = http_get(d.port, "/metrics")
        assert status == 200
        snaps = [l for l in body.decode().splitlines() if l.startswith("crewstream_journal_snapshots_total ")]
        assert snaps and int(snaps[0].split()[1]) >= 2, snaps
        d.stop(signal.SIGKILL)
        restart_at = len(rec.got("/task"))
        rec.on("/task", (200, {}, 0))
        rec.on("/g", (200, {}, 0))
        d.start()
        rec.wait(restart_at + 3, "/task", timeout=15)
        time.sleep(0.3)
        got = by_exec(rec.got("/task")[restart_at:])
        assert got == {x: seqs_of(a)}, got
        # The global endpoint's cursor (task_completed of x) came through the snapshots too.
        rec.wait(3, "/g", timeout=10)
    finally:
        rec.close()


def test_endpoint_removed_from_config_drops_its_cursors_once(make_daemon):
    rec = Receiver()
    try:
        rec.on("/g", (500, {}, 0))
        jdir = os.path.join(mkdtemp(), "journal")
        d = make_daemon(config(rec, jdir))
        d.post_ok(*[ev("whr-gone", "log", n=i) for i in range(3)])
        rec.wait(2, "/g", timeout=10)
        assert d.stop() == 0
        d.config["webhooks"]["endpoints"] = []
        d.start()
        assert wait_until(lambda: "endpoint g is gone" in d.stderr_text(), timeout=5), d.stderr_text()[-2000:]
        assert "deliveries of execution whr-gone from seq 1 are dropped" in d.stderr_text()
        n = len(rec.got("/g"))
        time.sleep(1.5)
        assert len(rec.got("/g")) == n  # nothing is sent to it any more
        assert d.stop() == 0
        d.start()
        time.sleep(0.3)
        assert "endpoint g is gone" not in d.stderr_text(), "said again at the next start"
    finally:
        rec.close()


def test_without_a_journal_nothing_is_kept(make_daemon):
    rec = Receiver()
    try:
        rec.on("/g", (500, {}, 0))
        d = make_daemon(config(rec, None))
        d.post_ok(*[ev("whr-mem", "log", n=i) for i in range(2)])
        rec.wait(2, "/g", timeout=10)
        assert d.stop() == 0
        rec.on("/g", (200, {}, 0))
        n = len(rec.got("/g"))
        d.start()
        time.sleep(1.5)
        assert len(rec.got("/g")) == n  # memory only, as documented: nothing resumes
        assert "restored from the journal" not in d.stderr_text()
    finally:
        rec.close()


def test_kickoff_registration_survives_restart(make_daemon):
    """The per-execution URLs of a POST /kickoff body (crewWebhookUrl, a basic-auth humanInputWebhook) are
    journaled: the end of the run, retried while the daemon stops, is delivered after it, with them."""
    import requests
    from gw_runtime import Runtime

    key = "whr-key-1"
    auth = {"Authorization": "Bearer " + key}
    rec = Receiver()
    try:
        rec.on("/crew", (500, {}, 0))
        jdir = os.path.join(mkdtemp(), "journal")
        cfg = config(rec, jdir, endpoints=False)
        cfg["auth"] = {"api_key": key}
        d = make_daemon(cfg)
        rt = Runtime(d.sock, "research", 2)
        try:
            assert rt.served.wait(5), rt.errors
            hitl = {"url": rec.url + "/hitl", "authentication": {"strategy": "basic", "username": "u", "password": "p"}}
            r = requests.post(
                d.base + "/kickoff",
                json={"inputs": {"topic": "AI"}, "crewWebhookUrl": rec.url + "/crew", "humanInputWebhook": hitl},
                headers=auth,
                timeout=10,
            )
            assert r.status_code == 200, r.text
            xid = r.json()["kickoff_id"]
            rec.wait(2, "/crew", timeout=15)  # run.completed, failed and retried
        finally:
            rt.close()
        stop(d, "sigterm")
        restart_at = len(rec.got("/crew"))
        rec.on("/crew", (200, {}, 0))
        d.start()
        got = rec.wait(restart_at + 1, "/crew", timeout=15)[restart_at:]
        body = json.loads(got[0]["body"])
        assert body["execution_id"] == xid and body["type"] == "run.completed", body
        time.sleep(0.5)
        assert len(rec.got("/crew")) == restart_at + 1  # once
        # The humanInputWebhook came back with its credentials: a request for a person reaches it.
        d.post_ok(ev(xid, "human_input_required", task_id="t1", prompt="ok?"))
        h = rec.wait(1, "/hitl", timeout=10)
        assert h[0]["headers"]["Authorization"] == "Basic dTpw", h[0]["headers"]
    finally:
        rec.close()
