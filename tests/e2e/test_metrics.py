"""GET /metrics: Prometheus text, guarded by a token unless http.metrics_public."""

import re

import requests

from csutil import ev

TOKENS = {"auth": {"tokens": [
    {"name": "ops", "token": "O", "scopes": ["read"], "executions": ["*"]},
    {"name": "team", "token": "T", "scopes": ["read"], "executions": ["team-*"]}]}}


def scrape(d, token=None):
    h = {"Authorization": "Bearer " + token} if token else {}
    return requests.get(d.base + "/metrics", headers=h, timeout=5)


def values(text):
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^(crewstream_[a-z_]+) (\d+)$", line)
        assert m, "not a Prometheus sample line: %r" % line
        out[m.group(1)] = int(m.group(2))
    return out


def test_counters_move(daemon):
    before = values(scrape(daemon).text)
    daemon.post_ok(ev("m1", "run.started"), ev("m1", "log"))
    daemon.post(ev("m1", "heartbeat"))
    r = scrape(daemon)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    after = values(r.text)
    assert after["crewstream_events_published_total"] - before["crewstream_events_published_total"] == 2
    assert after["crewstream_ingest_errors_total"] - before["crewstream_ingest_errors_total"] == 1
    assert after["crewstream_executions"] >= 1 and after["crewstream_store_bytes"] > 0
    # Every sample has its HELP and TYPE.
    for name in after:
        assert "# TYPE %s " % name in r.text and "# HELP %s " % name in r.text


def test_guarded_by_a_token(make_daemon):
    d = make_daemon(TOKENS)
    assert scrape(d).status_code == 401
    assert scrape(d, "T").status_code == 403
    assert scrape(d, "O").status_code == 200


def test_public_when_configured(make_daemon):
    d = make_daemon(dict(TOKENS, http={"metrics_public": True}))
    assert scrape(d).status_code == 200
