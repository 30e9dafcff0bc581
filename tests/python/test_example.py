"""docs/python.md's full example (tests/python/example_crew.py, shown there byte for byte) run
against the real daemon and answered over HTTP both ways, watched by a Subscriber."""

import os
import subprocess
import sys
import threading

from csutil import http_json
from test_producer import answer, open_request

from crewstream import Subscriber

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))


def test_doc_shows_the_example():
    with open(os.path.join(HERE, "example_crew.py")) as f:
        src = f.read()
    with open(os.path.join(ROOT, "docs", "python.md")) as f:
        doc = f.read()
    assert "```python\n" + src + "```\n" in doc, "docs/python.md does not show example_crew.py as it is"


def run_example(d, x, approve):
    env = dict(os.environ, CREWSTREAM_SOCKET=d.sock, PYTHONPATH=os.path.join(ROOT, "python"))
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "example_crew.py"), x], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        rid = open_request(d, x, 15)
        st, body = answer(d, x, rid, "Ship it" if approve else "Not yet", approve)
        assert st == 200, body
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out, err


def test_example_runs(daemon):
    sub = Subscriber(daemon.base, "doc-run-1", read_timeout=5)
    seen = []

    def watch():
        for e in sub:
            seen.append(e.type)
            if len(seen) == 7:
                break

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    rc, out, err = run_example(daemon, "doc-run-1", True)
    assert rc == 0, err
    assert out.splitlines() == ["asking; waiting for a person", "approved: Ship it"]
    _, _, st = http_json(daemon.port, "/v1/executions/doc-run-1")
    assert st["status"] == "completed" and st["result"] == "Draft v1 published" and st["events"] == 7, st
    t.join(10)
    sub.close()
    assert seen == ["crew_kickoff_started", "task_started", "tool_usage_finished", "task_completed",
                        "human_input_required", "human_input_completed", "crew_kickoff_completed"]
    rc, out, err = run_example(daemon, "doc-run-2", False)
    assert rc == 2, err
    _, _, st = http_json(daemon.port, "/v1/executions/doc-run-2")
    assert st["status"] == "error" and st["error_message"] == "rejected by the reviewer"
