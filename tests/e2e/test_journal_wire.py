"""The journal wired into the daemon (SPEC §8, issue 12): the journal.* keys and their errors, the
memory-only log line, $STATE_DIRECTORY as the default directory, every producer-facing path (the
ingest socket, POST /v1/events, the HTTP answer routes, a WebSocket answer) answering as before under
each fsync mode, replies kept in order behind a publish the journal confirms later, /metrics journal
figures that move, an event kept across a restart, and a directory that cannot be written: /health
503 degraded, publishes and answers 503 unavailable, recovery once it can be written again.

The crash and restart matrix (kill -9 at random moments, torn tails, checksums) is in the journal's own
tests; these cover the wiring."""

import json
import os
import subprocess
import time

import pytest
import requests
import websockets

from conftest import mkdtemp
from csutil import ev, run, wait_until, ws_connect, ws_next
from test_hitl import request_event, wait_push
from test_lifecycle import run_daemon

HERE = os.path.dirname(os.path.abspath(__file__))
UNIT = os.path.join(HERE, "..", "..", "conf", "crewstreamd.service")
MODES = ["always", "everysec", "none"]
NO_STATE = {"STATE_DIRECTORY": ""}  # an empty variable counts as unset


def journal_daemon(make_daemon, fsync="everysec", dirpath=None, start=True, **cfg):
    """A daemon with a journal in a fresh directory (or dirpath) and public metrics."""
    dirpath = dirpath or os.path.join(mkdtemp(), "journal")
    config = {"journal": {"dir": dirpath, "fsync": fsync}, "http": {"metrics_public": True}}
    config.update(cfg)
    d = make_daemon(config, env=NO_STATE, start=start)
    d.journal = dirpath
    return d


def metrics(d):
    r = requests.get(d.base + "/metrics", timeout=5)
    assert r.status_code == 200, r.text
    out = {}
    for line in r.text.splitlines():
        if line.startswith("crewstream_journal"):
            k, v = line.split(" ", 1)
            out[k[len("crewstream_"):]] = float(v)
    return out


def health(d):
    r = requests.get(d.base + "/health", timeout=5)
    return r.status_code, r.json()


# ---- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize("journal, needle", [
    ({"fsync": "sometimes"}, 'journal.fsync: expected "always"'),
    ({"fsync": 1}, 'journal.fsync: expected "always"'),
    ({"dir": 5}, "journal.dir: expected a directory path (a string) or null"),
    ({"dir": ""}, "journal.dir"),
    ({"max_bytes": 1024}, "journal.max_bytes: expected an integer >= 8388608"),
    ({"sync": "always"}, 'unknown key "journal.sync" (did you mean "journal.fsync"?)'),
])
def test_config_errors_exit_2(journal, needle):
    rc, _, err, _ = run_daemon(["--check-config"], config={"journal": journal})
    assert rc == 2 and needle in err, err
    assert err.count("\n") == 1, err


def test_check_config_prints_the_journal():
    rc, out, err, _ = run_daemon(["--check-config"], env=NO_STATE)
    assert rc == 0, err
    assert json.loads(out)["journal"] == {"dir": None, "fsync": "everysec", "max_bytes": 1073741824}
    rc, out, err, _ = run_daemon(["--check-config"], config={"journal": {"fsync": "always", "max_bytes": 8 << 20}},
                                 env={"STATE_DIRECTORY": "/var/lib/crewstream:/var/lib/other"})
    assert rc == 0, err
    assert json.loads(out)["journal"] == {"dir": "/var/lib/crewstream", "fsync": "always", "max_bytes": 8 << 20}


def test_unit_sets_the_state_directory():
    with open(UNIT) as f:
        lines = [l.strip() for l in f if l.strip() and not l.startswith("#")]
    assert "StateDirectory=crewstream" in lines


def test_memory_only_is_said_once(make_daemon):
    d = make_daemon({"http": {"metrics_public": True}}, env=NO_STATE)
    d.post_ok(ev("mem", "log"))
    off = [l for l in d.stderr_text().splitlines() if "journal: off (memory only)" in l]
    assert len(off) == 1 and "journal.dir" in off[0], d.stderr_text()
    m = metrics(d)
    assert m["journal_enabled"] == 0 and m["journal_degraded"] == 0 and m["journal_records_total"] == 0
    assert health(d)[0] == 200


def test_state_directory_is_the_default(make_daemon):
    state = os.path.join(mkdtemp(), "state")
    os.mkdir(state)
    d = make_daemon({"http": {"metrics_public": True}}, env={"STATE_DIRECTORY": state + ":/nonexistent/other"})
    d.post_ok(ev("sd", "log"))
    assert "journal: %s " % state in d.stderr_text(), d.stderr_text()
    assert "memory only" not in d.stderr_text()
    assert metrics(d)["journal_enabled"] == 1
    assert wait_until(lambda: any(os.path.getsize(os.path.join(state, f)) > 0 for f in os.listdir(state)), timeout=5)


def test_reload_says_journal_changes_wait_for_a_restart(make_daemon):
    d = journal_daemon(make_daemon)
    d.config["journal"]["fsync"] = "always"
    with open(d.cfg_path, "w") as f:
        json.dump(d.config, f)
    d.proc.send_signal(1)  # SIGHUP
    assert wait_until(lambda: "journal.fsync changes take effect at the next restart" in d.stderr_text(), timeout=5)


def test_store_held_to_a_third_of_the_journal_across_a_reload(make_daemon):
    """Two snapshots and the log between them must fit in journal.max_bytes: the store is held to a
    third of it at start, and a SIGHUP that reloads the store's limits keeps that cap."""
    dirpath = os.path.join(mkdtemp(), "journal")
    d = make_daemon({"journal": {"dir": dirpath, "max_bytes": 9 * 1024 * 1024}, "http": {"metrics_public": True}},
                    env=NO_STATE)

    def store_max():
        r = requests.get(d.base + "/metrics", timeout=5)
        return int([x for x in r.text.splitlines() if x.startswith("crewstream_store_max_bytes ")][0].split()[1])

    assert store_max() == 3 * 1024 * 1024
    d.config.setdefault("store", {})["retain_s"] = 1800
    with open(d.cfg_path, "w") as f:
        json.dump(d.config, f)
    d.proc.send_signal(1)  # SIGHUP
    assert wait_until(lambda: d.stderr_text().count("the store is held to") >= 2, timeout=5), d.stderr_text()
    assert store_max() == 3 * 1024 * 1024


# ---- every producer-facing path, under each fsync mode ------------------------------------------


@pytest.mark.parametrize("fsync", MODES)
def test_every_path_answers_as_before(make_daemon, fsync):
    d = journal_daemon(make_daemon, fsync)
    before = metrics(d)
    assert before["journal_enabled"] == 1 and before["journal_degraded"] == 0
    x = "jw-" + fsync

    # The ingest socket: one line, then several, replies in order.
    r = d.post_ok(ev(x, "run.started"))
    assert r[0]["seq"] == 1
    r = d.post(ev(x, "log", i=1), {"execution_id": x}, ev(x, "log", i=2))
    assert [r[0].get("seq"), r[1].get("error"), r[2].get("seq")] == [2, "missing_field", 3], r

    # POST /v1/events: one event (its reply is the body), then NDJSON with a bad line in the middle.
    p = requests.post(d.base + "/v1/events", json=ev(x, "log", i=3), timeout=10)
    assert p.status_code == 200 and p.json()["ok"] is True and p.json()["seq"] == 4, p.text
    body = "\n".join([json.dumps(ev(x, "log", i=4)), "not json", json.dumps(ev(x, "log", i=5)),
                      json.dumps(ev(x, "log", i=6))]) + "\n"
    p = requests.post(d.base + "/v1/events", data=body, timeout=10)
    assert p.status_code == 200, p.text
    lines = [json.loads(l) for l in p.text.splitlines()]
    assert [l.get("seq") for l in lines] == [5, None, 6, 7] and lines[1]["error"] == "invalid_json", lines
    # A re-post of an acknowledged event: the original seq.
    again = dict(ev(x, "log", i=7), event_id=lines[2]["event_id"])
    p = requests.post(d.base + "/v1/events", json=again, timeout=10)
    assert p.json()["seq"] == 6 and p.json().get("duplicate") is True, p.text

    # A human-input request, answered over HTTP: the runtime gets the push, the human the 200.
    with d.producer() as rt:
        req = rt.request(request_event(x, task="t1"))[0]
        assert req["ok"] is True and req["seq"] == 8
        a = requests.post(d.base + "/v1/executions/%s/human-input" % x,
                          json={"event_id": req["event_id"], "human_feedback": "yes", "is_approve": True}, timeout=10)
        assert a.status_code == 200, a.text
        assert a.json()["ok"] is True and a.json()["seq"] == 9 and a.json()["request_event_id"] == req["event_id"]
        assert wait_push(rt)["event_id"] == a.json()["event_id"]
        # Answered again: 409, at once.
        a2 = requests.post(d.base + "/resume", json={"execution_id": x, "task_id": "t1", "is_approve": True},
                           timeout=10)
        assert a2.status_code == 409, a2.text

        # One more request, answered on the WebSocket.
        req2 = rt.request(request_event(x, task="t2"))[0]
        assert req2["seq"] == 10

        async def answer_ws():
            ws = await ws_connect(d.ws + "/v1/executions/%s/ws?since=now" % x)
            try:
                await ws.send(json.dumps({"event_id": req2["event_id"], "human_feedback": "ok", "is_approve": False}))
                while True:
                    m = await ws_next(ws, timeout=5)
                    assert m is not None, "no ack"
                    if m.get("type") in ("ack", "error"):
                        return m
            finally:
                await ws.close()

        ack = run(answer_ws(), 20)
        assert ack["type"] == "ack" and ack["seq"] == 11 and ack["request_event_id"] == req2["event_id"], ack
        assert wait_push(rt, 2)["event_id"] == ack["event_id"]

    # The journal's figures moved.
    after = metrics(d)
    assert after["journal_records_total"] > before["journal_records_total"], after
    assert after["journal_written_bytes_total"] > before["journal_written_bytes_total"], after
    # The files on disk are counted about once a second.
    assert wait_until(lambda: metrics(d)["journal_bytes"] > 0, timeout=5), metrics(d)
    assert metrics(d)["journal_segments"] >= 1
    assert after["journal_pending"] == 0 and after["journal_refused_total"] == 0, after
    if fsync != "none":
        # Requests and answers are synced before they are acknowledged (every mode but none).
        assert after["journal_syncs_total"] >= 1 and after["journal_sync_errors_total"] == 0, after
    assert health(d)[0] == 200


def test_websocket_replies_keep_their_order(make_daemon):
    """An answer waits for the journal; a bad message right behind it is refused at once, yet its error
    comes after the answer's ack."""
    d = journal_daemon(make_daemon, "always")
    x = "jw-order"
    with d.producer() as rt:
        req = rt.request(request_event(x))[0]

        async def go():
            ws = await ws_connect(d.ws + "/v1/executions/%s/ws?since=now" % x)
            try:
                await ws.send(json.dumps({"event_id": req["event_id"], "is_approve": True}))
                await ws.send("not json")
                await ws.send(json.dumps({"event_id": req["event_id"], "is_approve": True}))
                got = []
                while len(got) < 3:
                    m = await ws_next(ws, timeout=5)
                    assert m is not None, got
                    if m.get("type") in ("ack", "error"):
                        got.append(m)
                return got
            finally:
                await ws.close()

        got = run(go(), 20)
        assert [m["type"] for m in got] == ["ack", "error", "error"], got
        assert got[1]["error"] == "invalid_json" and got[2]["error"] == "conflict", got


def test_http_lines_keep_their_order(make_daemon):
    d = journal_daemon(make_daemon, "always")
    x = "jw-lines"
    lines = []
    for i in range(200):
        lines.append(json.dumps(ev(x, "log", i=i)) if i % 7 else '{"execution_id":"%s"}' % x)
    p = requests.post(d.base + "/v1/events", data="\n".join(lines) + "\n", timeout=20)
    assert p.status_code == 200, p.text
    got = [json.loads(l) for l in p.text.splitlines()]
    assert len(got) == 200
    seq = 0
    for i, g in enumerate(got):
        if i % 7:
            seq += 1
            assert g.get("seq") == seq, (i, g)
        else:
            assert g.get("error") == "missing_field", (i, g)


# ---- restart -------------------------------------------------------------------------------------


def test_restart_keeps_an_event(make_daemon):
    d = journal_daemon(make_daemon, "everysec")
    r = requests.post(d.base + "/v1/events", json=ev("jw-keep", "log", msg="kept"), timeout=10).json()
    assert r["ok"] is True and r["seq"] == 1
    d.restart()
    p = requests.get(d.base + "/v1/executions/jw-keep/poll?timeout=0", timeout=10)
    assert p.status_code == 200, p.text
    evs = p.json()["events"]
    assert [(e["seq"], e["event_id"], e["msg"]) for e in evs] == [(1, r["event_id"], "kept")], evs
    m = metrics(d)
    assert m["journal_replay_records"] >= 1 and m["journal_replay_bytes"] > 0, m
    # The next event continues the seqs.
    assert d.post_ok(ev("jw-keep", "log"))[0]["seq"] == 2


# ---- a directory that cannot be written ----------------------------------------------------------


def test_unwritable_directory_degrades_and_recovers(make_daemon):
    """Tests run as root, so a read-only mode would not stop writes: a regular file stands where the
    directory should be. The daemon starts degraded, refuses publishes and answers, and recovers by
    itself once the directory can be made."""
    tmp = mkdtemp()
    path = os.path.join(tmp, "journal")
    with open(path, "w") as f:
        f.write("not a directory\n")
    d = journal_daemon(make_daemon, "everysec", dirpath=path, start=False)
    d.start(wait=False)
    assert wait_until(lambda: os.path.exists(d.sock) or not d.running(), timeout=10)
    assert d.running(), d.stderr_text()

    def degraded():
        try:
            return health(d)
        except OSError:
            return None, None

    assert wait_until(lambda: degraded()[0] == 503, timeout=10)
    status, body = health(d)
    assert status == 503 and body["status"] == "degraded" and body["reason"], body
    assert metrics(d)["journal_degraded"] == 1

    p = requests.post(d.base + "/v1/events", json=ev("jw-deg", "log"), timeout=10)
    assert p.status_code == 503 and p.json()["error"] == "unavailable", p.text
    assert d.post(ev("jw-deg", "log"))[0]["error"] == "unavailable"
    assert metrics(d)["journal_refused_total"] >= 2

    # Fixed: the file goes, the daemon makes the directory and recovers within its retry interval.
    os.unlink(path)
    assert wait_until(lambda: health(d)[0] == 200, timeout=10)
    assert metrics(d)["journal_degraded"] == 0
    r = d.post_ok(ev("jw-deg", "log"))
    assert r[0]["seq"] == 1  # the refused publishes stored nothing
    p = requests.post(d.base + "/v1/events", json=ev("jw-deg", "log"), timeout=10)
    assert p.status_code == 200 and p.json()["seq"] == 2, p.text
    assert os.path.isdir(path) and os.listdir(path)


@pytest.fixture
def tiny_tmpfs():
    """A 4 MiB tmpfs mounted for the test (skipped where mounting is not allowed)."""
    path = os.path.join(mkdtemp(), "tmpfs")
    os.mkdir(path)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", path], capture_output=True,
                       timeout=10)
    if p.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (%s): the full-disk case is not tested" %
                    p.stderr.decode(errors="replace").strip())
    yield path
    subprocess.run(["umount", "-l", path], capture_output=True, timeout=10)


def test_full_disk_refuses_and_recovers(make_daemon, tiny_tmpfs):
    """A full disk while running: publishes (socket and HTTP) get unavailable, a human's answer 503, /health
    503 degraded; space given back, the daemon recovers by itself and nothing refused was stored."""
    d = journal_daemon(make_daemon, "everysec", dirpath=os.path.join(tiny_tmpfs, "journal"))
    x = "jw-full"
    with d.producer() as rt:
        req = rt.request(request_event(x))[0]
        assert req["ok"] is True
        filler = os.path.join(tiny_tmpfs, "filler")
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for _ in range(1000):  # 64 MiB at most: the tmpfs holds 4
                os.write(fd, b"\0" * 65536)
        except OSError:
            pass
        finally:
            os.close(fd)
        # Publish (pipelined) until the journal runs into the full disk: what was stored before it waits
        # for its record to be written; what comes after is refused before it is stored.
        sent = 0
        for i in range(2000):
            rt.send(ev(x, "log", i=i, pad="p" * 512))
            sent += 1
            if i % 8 == 7 and health(d)[0] == 503:
                break
        assert wait_until(lambda: health(d)[0] == 503, timeout=5)
        with d.producer() as other:
            refused = other.request(ev(x, "log", other=True))[0]
        assert refused.get("ok") is False and refused["error"] == "unavailable", refused
        status, body = health(d)
        assert body["status"] == "degraded" and body["reason"], body
        m = metrics(d)
        assert m["journal_degraded"] == 1 and m["journal_write_errors_total"] >= 1, m
        p = requests.post(d.base + "/v1/events", json=ev(x, "log"), timeout=10)
        assert p.status_code == 503 and p.json()["error"] == "unavailable", p.text
        a = requests.post(d.base + "/v1/executions/%s/human-input" % x,
                          json={"event_id": req["event_id"], "is_approve": True}, timeout=10)
        assert a.status_code == 503, a.text
        assert "journal" in d.stderr_text()

        os.unlink(filler)
        assert wait_until(lambda: health(d)[0] == 200, timeout=10), health(d)
        replies = rt.read(sent, timeout=10)
        assert all(r.get("ok") is True or r.get("error") == "unavailable" for r in replies), replies
        stored = {e["i"] for e in requests.get(d.base + "/v1/executions/%s/poll?timeout=0&limit=10000" % x,
                                               timeout=10).json()["events"] if "i" in e}
        assert stored == {i for i, r in enumerate(replies) if r.get("ok")}, "only what was acknowledged is stored"
        a = requests.post(d.base + "/v1/executions/%s/human-input" % x,
                          json={"event_id": req["event_id"], "is_approve": True}, timeout=10)
        assert a.status_code == 200, a.text
        assert wait_push(rt)["event_id"] == a.json()["event_id"]
        ok = rt.request(ev(x, "log", last=True))[0]
        assert ok["ok"] is True and ok["seq"] == a.json()["seq"] + 1, ok


def test_health_over_max_clients_says_degraded(make_daemon):
    """A probe answered from the health reserve (every client slot taken) tells the same as one
    answered by the HTTP transport: 503 degraded while the journal cannot be written."""
    from csutil import SSEClient, http_get

    tmp = mkdtemp()
    path = os.path.join(tmp, "journal")
    with open(path, "w") as f:
        f.write("not a directory\n")
    d = journal_daemon(make_daemon, "everysec", dirpath=path, start=False, limits={"max_clients": 2})
    d.start(wait=False)
    assert wait_until(lambda: os.path.exists(d.sock) or not d.running(), timeout=10)
    assert d.running(), d.stderr_text()

    def http_up():
        # The ingest socket can be there before the HTTP port listens. A /health answer (any status,
        # Connection: close: the daemon has let its slot go once it answered) says it does.
        try:
            http_get(d.port, "/health")
            return True
        except OSError:
            return False

    assert wait_until(http_up, timeout=10), d.stderr_text()
    streams = [SSEClient(d.port, "/v1/executions/hd/events") for _ in range(2)]
    try:
        assert [s.status for s in streams] == [200, 200]
        st, _, body = http_get(d.port, "/health")
        assert st == 503 and json.loads(body)["status"] == "degraded", (st, body)
        assert json.loads(body)["reason"], body
    finally:
        for s in streams:
            s.close()
