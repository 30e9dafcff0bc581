"""Journal faults (SPEC §8, issue 12 point 4), each with a clear log line and no crash:
a torn record at the tail is truncated; a record whose checksum fails is skipped with the rest
of its segment and a resume into the loss gets stream.gap; a segment of a newer format version
refuses the start, naming the file; a full disk (a tiny tmpfs the test mounts) refuses publishes
with `unavailable`, answers with 503 and /health with 503 degraded, and recovers by itself; a
journal directory that cannot be made at start degrades the daemon instead of crashing it."""

import contextlib
import json
import os
import re
import signal
import socket
import struct
import time
import subprocess

import pytest
import requests

from conftest import mkdtemp
from csutil import (JOURNAL_HEADER, JOURNAL_MAGIC, SSEClient, ev, flip_byte, health, history, journal_header,
                    journal_records, journal_segments, metric_values, wait_until)


def metric(d, name):
    m = metric_values(d)
    assert "crewstream_" + name in m, "no crewstream_%s in /metrics: %r" % (name, sorted(k for k in m if "journal" in k))
    return m["crewstream_" + name]


def jconfig(jdir, fsync="everysec", **more):
    cfg = {"journal": {"dir": jdir, "fsync": fsync}, "log": {"level": "info"}}
    cfg.update(more)
    return cfg


def new_jdir():
    return os.path.join(mkdtemp("cs-journal-"), "j")


def log_line(d, pattern):
    rx = re.compile(pattern, re.I)
    for line in d.stderr_text().splitlines():
        if rx.search(line):
            return line
    return None


# ---- (a) torn tail -----------------------------------------------------------------------------


def test_torn_tail_is_truncated(make_daemon):
    jdir = new_jdir()
    d = make_daemon(jconfig(jdir))
    x = "torn"
    d.post_ok(*[ev(x, "log", i=i, pad="p" * 100) for i in range(50)])
    assert d.stop() == 0
    segs = journal_segments(jdir)
    assert segs, "no segment in %s" % jdir
    last = segs[-1]
    recs = journal_records(last)
    assert recs, "no record in %s" % last
    with open(last, "rb") as f:
        data = f.read()
    off, n = recs[-1]
    whole = data[off : off + 8 + n]
    with open(last, "ab") as f:  # a crash in the middle of the next record's write
        f.write(whole[: 8 + n // 2])
    torn_size = len(data) + 8 + n // 2
    d.start()
    line = log_line(d, re.escape(os.path.basename(last)) + r".*(torn|truncat)")
    assert line, "no log line about the torn tail naming %s:\n%s" % (last, d.stderr_text()[-3000:])
    evs = history(d, x)["events"]
    assert [e["i"] for e in evs] == list(range(50))
    assert metric(d, "journal_replay_truncated") == 1
    assert metric(d, "journal_replay_skipped") == 0
    assert d.post_ok(ev(x, "log", i=50))[0]["seq"] == 51
    assert not os.path.exists(last) or os.path.getsize(last) != torn_size or len(journal_segments(jdir)) > len(segs), (
        "the torn bytes are still there")
    # The cut is for good: another restart sees all 51 and no second torn tail.
    d.restart()
    assert [e["seq"] for e in history(d, x)["events"]] == list(range(1, 52))
    again = log_line(d, re.escape(os.path.basename(last)) + r".*(torn|truncat)")
    assert not again, again


# ---- (b) a bad checksum in an early segment -------------------------------------------------------


def fill_segments(d, jdir, x, ok, max_lines=8000, batch=200, pad=1000):
    """Posts to x until ok(segments) holds; returns the number of events posted."""
    def fits():
        try:
            return ok(journal_segments(jdir))
        except FileNotFoundError:  # a segment deleted while we looked
            return False

    n = 0
    while not fits():
        assert n < max_lines, "no fitting segments after %d events of %d bytes: %r" % (
            n, pad, [(os.path.basename(s), journal_header(s)[1]) for s in journal_segments(jdir)])
        d.post_ok(*[ev(x, "log", event_id="fb-%d" % (n + i), pad="q" * pad) for i in range(batch)])
        n += batch
    return n


def event_numbers(seg_path):
    """[(record offset, payload length, the n of its fb-n event_id)] of a segment's records."""
    with open(seg_path, "rb") as f:
        data = f.read()
    out = []
    for off, ln in journal_records(seg_path):
        m = re.search(rb"fb-(\d+)", data[off + 8 : off + 8 + ln])
        if m:
            out.append((off, ln, int(m.group(1))))
    return out


def log_segment_in_the_middle(segs):
    """A log segment (flags 0) that is not the last one, or None."""
    mid = [s for s in segs[:-1] if journal_header(s)[1] == 0]
    return mid[0] if mid else None


def retained_cursors(d, x, last_seq):
    with SSEClient(d.port, "/v1/executions/%s/events" % x) as s:
        frames = s.collect(100000, timeout=30, stop=lambda f: f.json().get("seq") == last_seq)
    assert frames and frames[-1].json()["seq"] == last_seq, "could not read %s up to seq %d" % (x, last_seq)
    return {f.json()["seq"]: f.id for f in frames if f.id}


def check_gap_and_later(d, x, total, lost, later, cursor):
    """After a replay that lost the fb-n in `lost`: those are gone, those in `later` are there, a resume
    from a lost event's cursor starts with stream.gap and then brings every later event once, in order."""
    evs = history(d, x)["events"]
    have = {int(e["event_id"][3:]) for e in evs}
    assert later and set(later) <= have, "events after the damage are missing: %r" % sorted(set(later) - have)[:10]
    assert not (set(lost) & have), "events of the skipped range came back: %r" % sorted(set(lost) & have)[:10]
    lost_seq = next(n + 1 for n in lost[len(lost) // 2 :] if n + 1 in cursor)
    with SSEClient(d.port, "/v1/executions/%s/events" % x, headers={"Last-Event-ID": cursor[lost_seq]}) as s:
        gap = s.next_event(timeout=5)
        assert gap is not None and gap.json()["type"] == "stream.gap", gap
        assert gap.json()["requested"] == cursor[lost_seq]
        rest = [f.json() for f in s.collect(total, timeout=20, stop=lambda f: f.json()["seq"] == total)]
    seqs = [e["seq"] for e in rest]
    assert seqs == sorted(set(seqs)), "repeats or disorder after the gap"
    assert [n + 1 for n in later] == seqs[-len(later) :], "the events after the damage do not follow the gap"
    body = history(d, x, since_seq=lost_seq)
    assert body.get("gap") is True, {k: v for k, v in body.items() if k != "events"}
    assert d.post_ok(ev(x, "log", event_id="after"))[0]["seq"] == total + 1


def flip_config(jdir):
    cfg = jconfig(jdir, store={"ring_events": 100000, "ring_bytes": 1 << 30})
    cfg["journal"]["max_bytes"] = 8 << 20  # segments of 1 MiB (max_bytes / 8); the store gets a third
    return cfg


def test_bad_checksum_skips_rest_of_segment_and_shows_gap(make_daemon):
    jdir = new_jdir()
    x = "flip"
    d = make_daemon(flip_config(jdir))
    total = fill_segments(d, jdir, x, lambda segs: log_segment_in_the_middle(segs) is not None)
    cursor = retained_cursors(d, x, total)
    assert d.stop() == 0
    seg = log_segment_in_the_middle(journal_segments(jdir))
    recs = event_numbers(seg)
    assert len(recs) >= 4, "too few events in %s to flip one in its middle" % seg
    i, _ = flip_byte(seg, [k for k, (off, _) in enumerate(journal_records(seg)) if off == recs[len(recs) // 2][0]][0])
    n_bad = recs[len(recs) // 2][2]
    lost = sorted({n for (_, _, n) in recs if n >= n_bad})  # the flipped record and the rest of its segment
    d.start()
    line = log_line(d, re.escape(os.path.basename(seg)) + r".*(checksum|crc|skip)")
    assert line, "no log line about the skipped record naming %s:\n%s" % (seg, d.stderr_text()[-3000:])
    assert metric(d, "journal_replay_skipped") >= 1
    check_gap_and_later(d, x, total, lost, list(range(max(lost) + 1, total)), cursor)


def test_bad_checksum_in_the_snapshot_segment(make_daemon):
    """The segment replay starts from begins with a snapshot; a checksum failure inside it loses what
    the snapshot held - logged naming the segment, counted, and shown as stream.gap - and the log
    segments after it still apply."""
    jdir = new_jdir()
    x = "flip-snap"
    d = make_daemon(flip_config(jdir))

    def ready(segs):
        # A snapshot segment with events, and live events after it newer than any it holds (a snapshot
        # is written in steps, so it may go on into the next segments with older frames).
        snaps = [s for s in segs if journal_header(s)[1] == 1]
        if not snaps or snaps[-1] == segs[-1]:
            return False
        held = [n for (_, _, n) in event_numbers(snaps[-1])]
        after = [n for s in segs[segs.index(snaps[-1]) + 1 :] for (_, _, n) in event_numbers(s)]
        return held and after and max(after) > max(held)

    total = fill_segments(d, jdir, x, ready)
    cursor = retained_cursors(d, x, total)
    assert d.stop() == 0
    segs = journal_segments(jdir)
    snap = [s for s in segs if journal_header(s)[1] == 1][-1]
    held = sorted(n for (_, _, n) in event_numbers(snap))
    after_snap = sorted(n for s in segs[segs.index(snap) + 1 :] for (_, _, n) in event_numbers(s))
    first_rec = journal_header(snap)[2]
    recs = event_numbers(snap)
    i, _ = flip_byte(snap)
    flip_off = journal_records(snap)[i][0]
    d.start()
    line = log_line(d, r"(%s|segment %d\b)" % (re.escape(os.path.basename(snap)), first_rec))
    assert line, "no log line names the damaged segment %s:\n%s" % (snap, d.stderr_text()[-3000:])
    skipped = metric(d, "journal_replay_skipped")  # asserted at the end
    later = [n for n in after_snap if n > max(held)]
    # What only the damaged segment held is lost; frames of a snapshot that went on into the next
    # segments come back from there.
    # Only records from the damaged one on are skipped; the segment's records are not in event order
    # (live events are journaled between a snapshot's steps), so what is lost is found by position.
    lost = sorted(n for (off, _, n) in recs if off >= flip_off and n not in set(after_snap))
    lost = [n for n in lost if n < min(later)] if later else lost
    if lost:
        check_gap_and_later(d, x, total, lost, later, cursor)
    else:  # everything the damaged segment held is also in the segments after it
        have = {int(e["event_id"][3:]) for e in history(d, x)["events"]}
        assert later and set(later) <= have, "events after the damage are missing"
    assert skipped >= 1, "the damaged snapshot segment is not counted in crewstream_journal_replay_skipped: %s" % line


# ---- (c) a newer format version ---------------------------------------------------------------------


def test_newer_format_version_refuses_to_start_naming_the_file(make_daemon):
    jdir = new_jdir()
    d = make_daemon(jconfig(jdir))
    d.post_ok(*[ev("v", "log", i=i) for i in range(5)])
    assert d.stop() == 0
    seg = journal_segments(jdir)[-1]
    with open(seg, "r+b") as f:
        head = f.read(JOURNAL_HEADER)
        assert head[:8] == JOURNAL_MAGIC
        (version,) = struct.unpack_from("<I", head, 8)
        f.seek(8)
        f.write(struct.pack("<I", version + 1))
    d.start(wait=False)
    rc = d.wait_exit(10)
    err = d.stderr_text()
    assert rc == 1, "exit code %r:\n%s" % (rc, err[-3000:])
    assert os.path.basename(seg) in err, "the refusal does not name %s:\n%s" % (seg, err[-3000:])
    assert re.search(r"(?i)version|newer", err), err[-3000:]
    # The file is untouched (a newer daemon's journal is not "repaired" by an older one).
    with open(seg, "rb") as f:
        assert struct.unpack_from("<I", f.read(JOURNAL_HEADER), 8)[0] == version + 1


# ---- (d) full disk ---------------------------------------------------------------------------------


def mount_tmpfs(path, size="2m"):
    os.makedirs(path, exist_ok=True)
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size, "tmpfs", path],
                           capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip("cannot mount a tmpfs for the full-disk test: %r" % e)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs for the full-disk test (needs CAP_SYS_ADMIN): %s" % r.stderr.decode().strip())


def fill(path):
    """Writes a filler file until the file system is full; returns its path."""
    filler = os.path.join(path, "filler")
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for _ in range(4096):  # bounded: far more than 2 MiB
            try:
                os.write(fd, b"\0" * 4096)
            except OSError:
                break
    finally:
        os.close(fd)
    return filler


@contextlib.contextmanager
def full_disk_daemon(make_daemon, fsync):
    """A daemon whose journal is on a 2 MiB tmpfs mounted for the test (skipped where mounting is not
    allowed); yields (daemon, mount point). Stopped and unmounted after."""
    mnt = os.path.join(mkdtemp("cs-journal-"), "mnt")
    mount_tmpfs(mnt)
    d = None
    try:
        d = make_daemon(jconfig(os.path.join(mnt, "j"), fsync=fsync))
        yield d, mnt
    finally:
        if d is not None and d.running():
            d.stop()
        subprocess.run(["umount", "-l", mnt], capture_output=True, timeout=10)


def test_full_disk_degrades_and_recovers(make_daemon):
    with full_disk_daemon(make_daemon, "everysec") as (d, mnt):
        x = "full"
        acked = [r["event_id"] for r in d.post_ok(*[ev(x, "log", i=i) for i in range(20)])]
        with d.producer() as rt:
            req_id = rt.request(ev(x, "human_input_required", task_id="t", prompt="?"))[0]["event_id"]
        acked.append(req_id)
        filler = fill(mnt)
        # Lines pipelined until the journal cannot be written: those stored before the failure wait for
        # their records (no reply yet), never told `unavailable` while stored.
        p = d.producer()
        sent = []
        for i in range(400):
            line = ev(x, "log", mark="df-%d" % i, pad="z" * 1000)  # no event_id: a plain producer
            p.send(line)
            sent.append(line)
            if i % 8 == 7 and health(d)[0] == 503:
                break
        assert wait_until(lambda: health(d)[0] == 503, timeout=5), "400 posts of 1 KB on a full 2 MiB disk"
        st, body = health(d)
        assert st == 503 and body["status"] == "degraded" and body.get("reason"), (st, body)
        # A new line (another connection: replies keep their order per connection) is refused before it is
        # stored; so are HTTP ingest and answers.
        line = ev(x, "log", mark="df-refused")  # no event_id
        p2 = d.producer()
        r = p2.request(line)[0]
        refused = (line, r)
        assert r.get("ok") is False and r["error"] == "unavailable" and r.get("detail"), r
        h = requests.post(d.base + "/v1/events", json=ev(x, "log", event_id="http-1"), timeout=5)
        assert h.status_code == 503 and h.json()["error"] == "unavailable", h.text
        a = requests.post(d.base + "/v1/executions/%s/human-input" % x,
                          json={"event_id": req_id, "human_feedback": "ok", "is_approve": True}, timeout=5)
        assert a.status_code == 503, a.text
        r2 = p2.request(line)[0]
        assert r2.get("ok") is False and r2["error"] == "unavailable", r2
        assert log_line(d, r"(?i)degraded|no space|ENOSPC"), d.stderr_text()[-3000:]
        assert metric(d, "journal_degraded") == 1 and metric(d, "journal_refused_total") >= 1
        # SPEC §3: `unavailable` means the event was NOT stored (checked at the end, after the rest).
        stored_refused = [e for e in history(d, x)["events"] if e.get("mark") == line["mark"]]
        # Space returns: healthy again within a few seconds, by itself; the waiting lines are acknowledged.
        os.unlink(filler)
        assert wait_until(lambda: health(d)[0] == 200, timeout=6, interval=0.2), health(d)
        assert metric(d, "journal_degraded") == 0
        assert log_line(d, r"(?i)writable again|recover"), d.stderr_text()[-3000:]
        # Each pipelined line is either acknowledged now (stored before the failure, written after it) or
        # was refused `unavailable` by the closed gate (then never stored: checked at the end).
        replies = p.read(len(sent), timeout=10)
        assert all(x_.get("ok") is True or x_.get("error") == "unavailable" for x_ in replies), replies
        acked += [x_["event_id"] for x_ in replies if x_.get("ok")]
        refused_marks = {sent[i]["mark"] for i, x_ in enumerate(replies) if not x_.get("ok")}
        r3 = p2.request(line)[0]
        assert r3.get("ok") is True, r3
        acked.append(r3["event_id"])
        p.close()
        p2.close()
        a = requests.post(d.base + "/v1/executions/%s/human-input" % x,
                          json={"event_id": req_id, "human_feedback": "ok", "is_approve": True}, timeout=5)
        assert a.status_code == 200, a.text
        acked.append(a.json()["event_id"])
        # Nothing acknowledged is lost across a crash after that, and nothing refused appears.
        d.proc.send_signal(signal.SIGKILL)
        d.wait_exit(10)
        d.start()
        evs = history(d, x)["events"]
        ids = [e["event_id"] for e in evs]
        assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))
        copies = [e["seq"] for e in evs if e.get("mark") == line["mark"]]
        assert not stored_refused and copies == [r3["seq"]], (
            "the line refused with `unavailable` (%r) was stored anyway (seq %s, served to subscribers while the "
            "producer was told it was not); retried as SPEC §3 allows, it is now stored at seqs %r" % (
                refused[1], [e["seq"] for e in stored_refused], copies))
        assert ids == acked, "stored %r\nacknowledged %r" % (ids[-5:], acked[-5:])
        assert "http-1" not in ids
        assert not refused_marks & {e.get("mark") for e in evs}, "a pipelined line refused `unavailable` was stored"


def pipeline_until_held(d, p, x):
    """Pipelines 1 KB lines from p onto a full disk until the journal is degraded; returns how many lines
    were sent, how many replies came by then, and the event_ids acknowledged (fewer: the rest are held)."""
    sent = 0
    for i in range(400):
        p.send(ev(x, "log", event_id="df-%d" % i, pad="z" * 1000))
        sent += 1
        if i % 8 == 7 and health(d)[0] == 503:
            break
    assert wait_until(lambda: health(d)[0] == 503, timeout=5), "400 posts of 1 KB on a full 2 MiB disk"
    replies = replies_so_far(p)
    assert all(r.get("ok") is True or r.get("error") == "unavailable" for r in replies), replies
    ok = [r["event_id"] for r in replies if r.get("ok")]
    assert len(ok) < sent, "every line was acknowledged: the disk never filled under them"
    return sent, len(replies), ok


def replies_so_far(p, quiet=1.0):
    """Every reply line p has been sent by now (read until the connection is quiet for `quiet` s)."""
    p.sock.settimeout(quiet)
    data = p.buf
    try:
        while True:
            chunk = p.sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (socket.timeout, BlockingIOError):
        pass
    p.buf = b""
    return [json.loads(line) for line in data.split(b"\n") if line.strip()]


@pytest.mark.parametrize("fsync", ["everysec", "none"])
def test_full_disk_acknowledges_nothing_unwritten(make_daemon, fsync):
    """`everysec` and `none` acknowledge after write() (SPEC §8): a producer's `ok` is held until the
    journal's write of its loop turn. On a full disk the lines whose records were not written get no
    `ok`, so a crash then loses nothing a producer was told was stored."""
    with full_disk_daemon(make_daemon, fsync) as (d, mnt):
        x = "held"
        acked = [r["event_id"] for r in d.post_ok(*[ev(x, "log", event_id="pre-%d" % i) for i in range(5)])]
        filler = fill(mnt)
        p = d.producer()
        _, _, ok = pipeline_until_held(d, p, x)
        acked += ok
        d.proc.send_signal(signal.SIGKILL)
        d.wait_exit(10)
        os.unlink(filler)
        d.start()
        ids = {e["event_id"] for e in history(d, x)["events"]}
        lost = [a for a in acked if a not in ids]
        assert not lost, "acknowledged, then lost in a crash (never written): %r" % lost[:10]


def test_held_output_is_bounded_by_the_output_mark(make_daemon):
    """A producer whose `ok` is held for a write that failed (full disk) and goes on sending: the replies
    of its later lines wait behind it (in line order) in its output, which pauses the producer at the 1 MiB
    output mark instead of growing (docs/operations.md, "Memory bounds"). Once space returns every line
    gets its reply, in order, none lost."""
    with full_disk_daemon(make_daemon, "everysec") as (d, mnt):
        x = "flood"
        filler = fill(mnt)
        p = d.producer()
        sent, answered, _ = pipeline_until_held(d, p, x)
        # ~200-byte `unavailable` replies for ~60-byte lines: 8000 of them are past the 1 MiB mark.
        flood = b"".join(json.dumps(ev(x, "log", i=i)).encode() + b"\n" for i in range(8000))
        p.sock.setblocking(False)
        off, deadline = 0, time.monotonic() + 10
        while off < len(flood) and time.monotonic() < deadline:
            try:
                off += p.sock.send(flood[off:off + 65536])
            except BlockingIOError:
                if wait_until(lambda: metric(d, "ingest_producers_paused") >= 1, timeout=0.2):
                    break
        assert wait_until(lambda: metric(d, "ingest_producers_paused") == 1, timeout=5), (
            "a producer with held output that went on sending was not paused")
        queued = metric(d, "ingest_output_bytes")
        assert (1 << 20) <= queued < (1 << 20) + 64 * 1024, queued
        assert metric(d, "ingest_pauses_total") >= 1
        # Space returns: the held output goes, the producer is read again, every line is answered.
        os.unlink(filler)
        assert wait_until(lambda: health(d)[0] == 200, timeout=6, interval=0.2), health(d)
        p.sock.setblocking(True)
        p.sock.sendall(flood[off:])
        replies = p.read(sent - answered + 8000, timeout=30)
        assert all(r.get("ok") is True or r.get("error") == "unavailable" for r in replies), replies[-3:]
        held = replies[:sent - answered]
        assert any(r.get("ok") for r in held), "no line stored before the failure was acknowledged after it"
        assert all(r["event_id"].startswith("df-") for r in held if r.get("ok")), held[:3]
        assert wait_until(lambda: metric(d, "ingest_producers_paused") == 0, timeout=5)


# ---- (e) a journal directory that cannot be made --------------------------------------------------


def test_unusable_journal_dir_at_start_degrades_and_recovers(make_daemon):
    base = mkdtemp("cs-journal-")
    parent = os.path.join(base, "not-a-dir")
    with open(parent, "w") as f:
        f.write("a file where the journal's parent directory should be\n")
    jdir = os.path.join(parent, "j")
    d = make_daemon(jconfig(jdir), start=False)
    d.start(wait=False)
    ok = wait_until(lambda: d.proc.poll() is not None or _answers(d), timeout=10, interval=0.1)
    assert d.proc.poll() is None, "the daemon exited (%r) instead of degrading:\n%s" % (d.proc.returncode, d.stderr_text()[-3000:])
    assert ok
    st, body = health(d)
    assert st == 503 and body["status"] == "degraded" and body.get("reason"), (st, body)
    line = log_line(d, re.escape(jdir))
    assert line, "no log line names %s:\n%s" % (jdir, d.stderr_text()[-3000:])
    assert wait_until(lambda: os.path.exists(d.sock), timeout=5)
    r = d.post(ev("nodir", "log"))[0]
    assert r.get("ok") is False and r["error"] == "unavailable", r
    # Once the directory can be made, the daemon recovers by itself.
    os.unlink(parent)
    os.mkdir(parent)
    assert wait_until(lambda: health(d)[0] == 200, timeout=6, interval=0.2), (health(d), d.stderr_text()[-2000:])
    assert d.post_ok(ev("nodir", "log"))[0]["seq"] == 1
    assert journal_segments(jdir), "nothing written to %s after the recovery" % jdir
    d.restart()
    assert [e["seq"] for e in history(d, "nodir")["events"]] == [1]


def _answers(d):
    try:
        return health(d, timeout=1.0)[0] in (200, 503)
    except OSError:
        return False


def test_bad_checksum_in_last_segment_keeps_later_writes(make_daemon):
    """A checksum failure in the segment the daemon goes on writing: the events acknowledged after the
    start must not land behind the bad record, where the next replay would skip them too."""
    jdir = new_jdir()
    x = "flip-last"
    d = make_daemon(jconfig(jdir))
    d.post_ok(*[ev(x, "log", event_id="fb-%d" % i, pad="q" * 200) for i in range(40)])
    assert d.stop() == 0
    segs = journal_segments(jdir)
    last = segs[-1]
    recs = event_numbers(last)
    assert len(recs) >= 10, recs
    off, ln, n_bad = recs[len(recs) // 2]
    with open(last, "r+b") as f:
        f.seek(off + 8 + ln // 2)
        b = f.read(1)
        f.seek(off + 8 + ln // 2)
        f.write(bytes([b[0] ^ 0x5A]))
    d.start()
    assert log_line(d, re.escape(os.path.basename(last)) + r".*(checksum|crc|skip)"), d.stderr_text()[-3000:]
    have = [int(e["event_id"][3:]) for e in history(d, x)["events"]]
    assert n_bad not in have and have == sorted(have), have
    after = d.post_ok(*[ev(x, "log", event_id="after-%d" % i) for i in range(5)])
    kept = [e["event_id"] for e in history(d, x)["events"]]
    d.restart()
    assert [e["event_id"] for e in history(d, x)["events"]] == kept, "events acknowledged after the first restart were lost"
    assert [r["event_id"] for r in after] == kept[-5:]
    assert d.post_ok(ev(x, "log"))[0]["seq"] == after[-1]["seq"] + 1


# ---- a journal directory another daemon is using -----------------------------------------------------


def test_second_daemon_on_the_same_journal_does_not_destroy_it(make_daemon):
    """SPEC §8 is silent, a user expects: a second crewstreamd pointed at a journal directory in use
    (a copied config, a unit started twice) must not corrupt it. Either it refuses to start (exit 1,
    naming the directory) or, at the least, the first daemon's acknowledged events survive."""
    jdir = new_jdir()
    a = make_daemon(jconfig(jdir))
    b = make_daemon(jconfig(jdir), start=False)
    b.start(wait=False)
    started = wait_until(lambda: b.proc.poll() is not None or _answers(b), timeout=10, interval=0.1)
    assert started
    acked = [r["event_id"] for r in a.post_ok(*[ev("shared", "log", who="a", i=i) for i in range(5)])]
    if b.proc.poll() is None:  # it runs: what both post must not undo what the first acknowledged
        b.post(*[ev("shared", "log", who="b", i=i) for i in range(5)])
        acked += [r["event_id"] for r in a.post_ok(*[ev("shared", "log", who="a", i=i) for i in range(5, 8)])]
        assert a.stop() == 0 and b.stop() == 0
        a.start()
    else:
        assert b.proc.returncode == 1 and jdir in b.stderr_text(), (b.proc.returncode, b.stderr_text()[-2000:])
        b.exit_codes.append(b.proc.returncode)
        acked += [r["event_id"] for r in a.post_ok(*[ev("shared", "log", who="a", i=i) for i in range(5, 8)])]
        a.restart()
    ids = [e["event_id"] for e in history(a, "shared")["events"]]
    assert set(acked) <= set(ids), "a second daemon on the same journal lost %d of the first's %d acknowledged events" % (
        len(set(acked) - set(ids)), len(acked))
