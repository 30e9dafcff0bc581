"""A WebSocket handshake from an Origin that http.cors_origins does not allow is refused with 403
before any upgrade (SPEC §5): a browser applies CORS to EventSource and fetch but not to WebSocket,
so the daemon must. Non-browser clients (no Origin) and allowed origins are upgraded."""

import json

from csutil import http_get, ws_handshake

ALLOWED = "https://app.example"


def handshake(d, origin=None, path="/v1/executions/o1/ws"):
    return ws_handshake(d.port, path, {"Origin": origin} if origin is not None else {})


def test_origin_not_allowed_is_403(make_daemon):
    d = make_daemon({"http": {"cors_origins": [ALLOWED]}})
    status, headers, body = handshake(d, "https://evil.example")
    assert status == 403
    assert "upgrade" not in headers
    err = json.loads(body)
    assert err["error"] == "forbidden" and "cors_origins" in err["detail"]
    assert "access-control-allow-origin" not in headers
    # Too long to be a listed origin: refused too, not truncated into a match.
    status, _, _ = handshake(d, ALLOWED + "/" + "x" * 600)
    assert status == 403
    # Also on the seed's human-input route.
    status, _, _ = handshake(d, "https://evil.example", "/ws/human-input/o1")
    assert status == 403
    _, _, metrics = http_get(d.port, "/metrics")
    assert b"crewstream_ws_refused_origin_total 3" in metrics


def test_allowed_and_absent_origin_upgrade(make_daemon):
    d = make_daemon({"http": {"cors_origins": [ALLOWED]}})
    assert handshake(d, ALLOWED)[0] == 101
    assert handshake(d, None)[0] == 101  # curl, runtimes, back ends: no Origin


def test_star_allows_every_origin(make_daemon):
    d = make_daemon()  # http.cors_origins defaults to ["*"]
    assert handshake(d, "https://anything.example")[0] == 101


def test_origin_checked_before_token(make_daemon):
    cfg = {
        "http": {"cors_origins": [ALLOWED]},
        "auth": {"tokens": [{"name": "t", "token": "secret-1", "scopes": ["read"], "executions": ["*"]}]},
    }
    d = make_daemon(cfg)
    # A valid token does not let another origin's page in.
    status, _, _ = handshake(d, "https://evil.example", "/v1/executions/o1/ws?token=secret-1")
    assert status == 403
    assert handshake(d, ALLOWED, "/v1/executions/o1/ws?token=secret-1")[0] == 101
    assert handshake(d, ALLOWED, "/v1/executions/o1/ws")[0] == 401
