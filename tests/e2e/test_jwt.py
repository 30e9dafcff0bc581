"""Signed tokens (SPEC §5, auth.jwt_secret): HS256 JWTs made here with the standard library, on
SSE, WebSocket, long-poll, execution status and the answer routes. A good token is let in; a wrong
key, alg "none", an expired or not-yet-valid token is 401 with WWW-Authenticate: Bearer; a token
without the scope or the execution is 403; globs, ?token= and configured tokens beside JWTs work;
expiry is checked at the door only; a reload changes the secret; nothing is logged."""

import base64
import hashlib
import hmac
import json
import shutil
import signal
import tempfile
import time
import urllib.parse

import pytest
import requests

from csutil import SSEClient, ev, http_json, run, wait_until, ws_collect, ws_connect, ws_status

SECRET = "jwt-secret-for-e2e-3f9a0c6b1d2e4f5a"
STATIC = "tok-STATIC-41c2a9e0"

CONFIG = {
    "auth": {
        "jwt_secret": SECRET,
        "tokens": [{"name": "static", "token": STATIC, "scopes": ["read"], "executions": ["*"]}],
    }
}


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(claims, secret=SECRET, header=None, exp_in=3600):
    """An HS256 token over claims; exp an hour ahead unless claims set it (or exp_in is None)."""
    claims = dict(claims)
    if exp_in is not None and "exp" not in claims:
        claims["exp"] = int(time.time()) + exp_in
    h = header if header is not None else {"alg": "HS256", "typ": "JWT"}
    signing_input = b64url(json.dumps(h).encode()) + "." + b64url(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(sig)


def bearer(token):
    return {"Authorization": "Bearer " + token}


def with_token(path, token):
    return path + ("&" if "?" in path else "?") + "token=" + urllib.parse.quote(token, safe="")


READ_RUN1 = jwt({"sub": "alice", "scope": "read", "executions": ["run-1"]})
READ_RESPOND_RUN1 = jwt({"sub": "alice", "scope": "read respond", "executions": ["run-1"]})
READ_RUN_GLOB = jwt({"scope": ["read"], "executions": ["run-*"]})
READ_ALL = jwt({"scope": "read"})  # no executions claim: every execution, as a configured token

# Tokens that must all be refused as invalid (401), never as forbidden.
BAD = {
    "wrong secret": jwt({"scope": "read", "executions": ["run-1"]}, secret="not-the-secret"),
    "alg none, unsigned": jwt({"scope": "read"}, header={"alg": "none"}).rsplit(".", 1)[0] + ".",
    "alg none, signed": jwt({"scope": "read"}, header={"alg": "none"}),
    "alg HS512": jwt({"scope": "read"}, header={"alg": "HS512", "typ": "JWT"}),
    "expired": jwt({"scope": "read", "exp": int(time.time()) - 10}),
    "nbf in the future": jwt({"scope": "read", "nbf": int(time.time()) + 3600}),
    "padded signature": jwt({"scope": "read"}) + "=",
    "tampered payload": (lambda t: t.split(".")[0] + "." + b64url(b'{"scope":"admin"}') + "." + t.split(".")[2])(
        jwt({"scope": "read"})),
    "exp not a number": jwt({"scope": "read", "exp": "4102444800"}),
    "over 64 executions": jwt({"scope": "read", "executions": ["run-%d" % i for i in range(65)]}),
}


@pytest.fixture(scope="module")
def jd():
    """One daemon with a JWT secret and one configured token, for the read-only checks."""
    import conftest

    d = conftest.Daemon(tempfile.mkdtemp(prefix="cs-e2e-"), CONFIG)
    d.start()
    d.post_ok(ev("run-1", "run.started"), ev("run-1", "log", message="one"),
              ev("run-2", "run.started"), ev("other-1", "run.started"))
    yield d
    problems = d.finish()
    assert not problems, "\n".join(problems)
    shutil.rmtree(d.tmp, ignore_errors=True)


def get(d, path, headers=None):
    """GET reading the head, and the body when it is not a stream."""
    s = SSEClient(d.port, path, headers=headers or {})
    try:
        body = s.read_body(timeout=5) if s.status >= 400 or "content-length" in s.headers else None
        return s.status, s.headers, body
    finally:
        s.close()


def assert_401(status, headers, body):
    assert status == 401, (status, body)
    assert headers.get("www-authenticate", "").startswith("Bearer"), headers
    assert json.loads(body)["error"] == "unauthorized"


def assert_403(status, headers, body):
    assert status == 403, (status, body)
    assert "www-authenticate" not in headers
    assert json.loads(body)["error"] == "forbidden"


# ---- SSE, long-poll, status ---------------------------------------------------------------------


def test_sse_with_a_good_token(jd):
    for path, headers in (("/v1/executions/run-1/events", bearer(READ_RUN1)),
                          (with_token("/v1/executions/run-1/events", READ_RUN1), {})):
        with SSEClient(jd.port, path, headers=headers) as s:
            assert s.status == 200
            assert [f.json()["type"] for f in s.collect(2, timeout=5)] == ["run.started", "log"]


@pytest.mark.parametrize("what", sorted(BAD))
def test_bad_tokens_are_401(jd, what):
    token = BAD[what]
    for path in ("/v1/executions/run-1/events", "/v1/executions/run-1/poll?timeout=0", "/v1/executions/run-1",
                 "/v1/events"):
        assert_401(*get(jd, path, bearer(token)))
        assert_401(*get(jd, with_token(path, token)))
    assert ws_status(jd, with_token("/v1/executions/run-1/ws", token)) == 401


def test_out_of_execution_is_403(jd):
    for path in ("/v1/executions/run-2/events", "/v1/executions/run-2/poll?timeout=0", "/v1/executions/run-2",
                 "/events/human-input/run-2"):
        assert_403(*get(jd, path, bearer(READ_RUN1)))
        assert_403(*get(jd, with_token(path, READ_RUN1)))
    # The all-executions stream needs "*": one execution, or a glob, is not enough.
    assert_403(*get(jd, "/v1/events", bearer(READ_RUN1)))
    assert_403(*get(jd, with_token("/v1/events", READ_RUN_GLOB)))
    # A token without any scope is good, and forbidden everything.
    assert_403(*get(jd, "/v1/executions/run-1/events", bearer(jwt({"scope": "openid", "executions": ["run-1"]}))))
    assert_403(*get(jd, "/v1/executions/run-1/events", bearer(jwt({"executions": ["run-1"]}))))


def test_globs_and_all_executions(jd):
    for x in ("run-1", "run-2"):
        st, _, body = http_json(jd.port, "/v1/executions/%s/poll?timeout=0" % x, headers=bearer(READ_RUN_GLOB))
        assert st == 200 and body["events"][0]["execution_id"] == x
    assert_403(*get(jd, "/v1/executions/other-1/poll?timeout=0", bearer(READ_RUN_GLOB)))
    with SSEClient(jd.port, with_token("/v1/events", READ_ALL)) as s:
        assert s.status == 200
        assert len(s.collect(4, timeout=5)) == 4
    st, _, body = http_json(jd.port, "/v1/executions/other-1", headers=bearer(READ_ALL))
    assert st == 200 and body["execution_id"] == "other-1"


def test_status_routes(jd):
    st, _, body = http_json(jd.port, "/v1/executions/run-1", headers=bearer(READ_RUN1))
    assert st == 200 and body["execution_id"] == "run-1"
    st, _, body = http_json(jd.port, with_token("/v1/executions/run-1", READ_RUN1))
    assert st == 200
    # The list shows what the token may read, and nothing else.
    st, _, body = http_json(jd.port, "/v1/executions", headers=bearer(READ_RUN_GLOB))
    assert st == 200 and sorted(e["execution_id"] for e in body["executions"]) == ["run-1", "run-2"]


def test_websocket(jd):
    assert ws_status(jd, with_token("/v1/executions/run-1/ws", READ_RUN1)) == 101
    assert ws_status(jd, "/v1/executions/run-1/ws", bearer(READ_RUN1)) == 101
    assert ws_status(jd, with_token("/v1/executions/run-2/ws", READ_RUN_GLOB)) == 101
    assert ws_status(jd, with_token("/v1/executions/run-2/ws", READ_RUN1)) == 403
    assert ws_status(jd, with_token("/v1/executions/other-1/ws", READ_RUN_GLOB)) == 403
    assert ws_status(jd, "/v1/executions/run-1/ws") == 401


def test_static_tokens_beside_jwts(jd):
    with SSEClient(jd.port, "/v1/events", headers=bearer(STATIC)) as s:
        assert s.status == 200
    assert_401(*get(jd, "/v1/executions/run-1/events", bearer(STATIC + "x")))
    assert_401(*get(jd, "/v1/executions/run-1/events"))


def test_token_over_the_length_limit_is_401(jd):
    huge = jwt({"scope": "read", "executions": ["run-1"], "pad": "x" * 5000})
    assert_401(*get(jd, "/v1/executions/run-1/poll?timeout=0", bearer(huge)))
    assert ws_status(jd, "/v1/executions/run-1/ws", bearer(huge)) == 401


def test_long_token_within_the_limit_works_on_every_transport(jd):
    """A signed token of 1-4 KiB (CS_AUTH_JWT_MAX_LEN is 4096) is as good on a WebSocket handshake as on
    HTTP: the handshake once held tokens to 1 KiB and refused longer ones as invalid (401)."""
    long_ = jwt({"sub": "alice", "scope": "read", "executions": ["run-1"], "pad": "x" * 2500})
    assert 2048 < len(long_) < 4096
    st, _, _ = get(jd, "/v1/executions/run-1/poll?timeout=0", bearer(long_))
    assert st == 200
    assert ws_status(jd, "/v1/executions/run-1/ws", bearer(long_)) == 101
    assert ws_status(jd, with_token("/v1/executions/run-1/ws", long_)) == 101


def test_nothing_logged(jd):
    tokens = [READ_RUN1, READ_RUN_GLOB, READ_ALL] + list(BAD.values())
    for t in tokens:
        get(jd, "/v1/executions/run-1/poll?timeout=0", bearer(t))
        get(jd, with_token("/v1/executions/run-2/poll?timeout=0", t))
    text = jd.stderr_text()
    assert SECRET not in text
    for t in tokens:
        for part in t.split("."):
            assert len(part) < 8 or part not in text, "a token part appears in the log"


# ---- answering ------------------------------------------------------------------------------------


def test_answer_routes(make_daemon):
    d = make_daemon(CONFIG)
    req = d.post_ok(ev("run-1", "human_input_required", task_id="review", prompt="ok?", context="c"))[0]
    d.post_ok(ev("run-2", "human_input_required", task_id="review", prompt="ok?", context="c"))
    body = {"event_id": req["event_id"], "human_feedback": "fine", "is_approve": True}
    url = d.base + "/v1/executions/run-1/human-input"

    r = requests.post(url, json=body, headers=bearer(READ_RUN1), timeout=5)
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    r = requests.post(d.base + "/resume", json={"execution_id": "run-2", "task_id": "review", "is_approve": True},
                      headers=bearer(READ_RESPOND_RUN1), timeout=5)
    assert r.status_code == 403
    for token in (BAD["expired"], BAD["wrong secret"], BAD["alg none, signed"]):
        r = requests.post(url, json=body, headers=bearer(token), timeout=5)
        assert r.status_code == 401 and r.headers.get("www-authenticate", "").startswith("Bearer")
    r = requests.post(url, json=body, headers=bearer(READ_RESPOND_RUN1), timeout=5)
    assert r.status_code == 200, r.text
    assert r.json()["ok"] is True

    # Answering over the WebSocket needs respond too; read alone gets an error frame, not an ack.
    async def answer_ws(token):
        ws = await ws_connect(d.ws + with_token("/v1/executions/run-2/ws", token))
        try:
            assert (await ws_collect(ws, 1, timeout=5))[0]["type"] == "human_input_required"
            await ws.send(json.dumps({"task_id": "review", "human_feedback": "f", "is_approve": False}))
            return (await ws_collect(ws, 1, timeout=5))[0]
        finally:
            await ws.close()

    assert run(answer_ws(jwt({"scope": "read", "executions": "run-2"})), 20)["type"] == "error"
    assert run(answer_ws(jwt({"scope": "read respond", "executions": "run-2"})), 20)["type"] == "ack"


# ---- time, reload, environment ------------------------------------------------------------------


def test_expiry_is_checked_at_the_door_only(make_daemon):
    d = make_daemon(CONFIG)
    d.post_ok(ev("run-1", "a"))
    short = jwt({"scope": "read", "executions": ["run-1"]}, exp_in=2)
    with SSEClient(d.port, with_token("/v1/executions/run-1/events", short)) as s:
        assert s.status == 200
        assert s.next_event(timeout=5).json()["seq"] == 1
        time.sleep(2.5)
        # The token has expired: a new request is refused, the open stream goes on.
        assert_401(*get(d, with_token("/v1/executions/run-1/poll?timeout=0", short)))
        d.post_ok(ev("run-1", "b"))
        assert s.next_event(timeout=5).json()["seq"] == 2


def test_reload_changes_the_secret(make_daemon):
    d = make_daemon(CONFIG)
    d.post_ok(ev("run-1", "a"))
    old = READ_RUN1
    new_secret = "a-new-secret-after-sighup-77c1e2"
    new = jwt({"scope": "read", "executions": ["run-1"]}, secret=new_secret)
    path = "/v1/executions/run-1/poll?timeout=0"
    assert get(d, path, bearer(old))[0] == 200
    assert_401(*get(d, path, bearer(new)))
    d.config["auth"]["jwt_secret"] = new_secret
    with open(d.cfg_path, "w") as f:
        json.dump(d.config, f)
    d.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: get(d, path, bearer(new))[0] == 200, timeout=5)
    assert_401(*get(d, path, bearer(old)))
    assert new_secret not in d.stderr_text()


def test_secret_from_the_environment_closes_the_door(make_daemon):
    d = make_daemon(env={"CREWSTREAM_JWT_SECRET": SECRET})
    d.post_ok(ev("run-1", "a"))
    assert_401(*get(d, "/v1/executions/run-1/poll?timeout=0"))
    assert_401(*get(d, "/v1/executions/run-1/poll?timeout=0", bearer("anything")))
    st, _, body = http_json(d.port, "/v1/executions/run-1/poll?timeout=0", headers=bearer(READ_RUN1))
    assert st == 200 and len(body["events"]) == 1
    assert SECRET not in d.stderr_text()
