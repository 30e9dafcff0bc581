"""crewstreamd's command line, as tests/unit/test_config.c checked it before argv parsing moved to
main.c: precedence (defaults, file, environment, flags; seen through --check-config), --opt=value and
a repeated flag, --help and --version before anything is read, and every usage error's one line."""

import json
import os
import tempfile

import pytest

from test_lifecycle import run_daemon


def write(tmp, name, text):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)
    return path


def check(args, env=None):
    rc, out, err, _ = run_daemon(["--check-config"] + args, env=env)
    assert rc == 0, err
    return json.loads(out)


def test_precedence():
    tmp = tempfile.mkdtemp(prefix="cs-e2e-")
    path = write(tmp, "prec.json", json.dumps({
        "listen": "127.0.0.1:9100", "store": {"ring_events": 77}, "ingest": {"socket": "/tmp/file.sock"},
        "log": {"level": "debug"}, "auth": {"api_key": "file-key", "jwt_secret": "file-jwt"}}))
    # No flags: the defaults.
    eff = check([])
    assert eff["listen"] == "127.0.0.1:8000" and eff["log"]["level"] == "info"
    assert eff["auth"]["api_key"] is None
    # The file over the defaults.
    eff = check(["--config", path])
    assert eff["listen"] == "127.0.0.1:9100" and eff["store"]["ring_events"] == 77 and eff["heartbeat_s"] == 15
    assert eff["ingest"]["socket"] == "/tmp/file.sock" and eff["log"]["level"] == "debug"
    assert eff["auth"]["api_key"] == "(set)"
    # The environment alone sets a secret; an empty variable counts as unset.
    assert check([], env={"CREWSTREAM_JWT_SECRET": "env-jwt"})["auth"]["jwt_secret"] == "(set)"
    assert check([], env={"CREWSTREAM_API_KEY": ""})["auth"]["api_key"] is None
    # Flags over the file, wherever --config stands.
    eff = check(["--listen", "[::1]:7000", "--config", path, "--socket", "/tmp/flag.sock", "--log-level", "warn"])
    assert eff["listen"] == "[::1]:7000" and eff["ingest"]["socket"] == "/tmp/flag.sock"
    assert eff["log"]["level"] == "warn" and eff["store"]["ring_events"] == 77
    # "--opt=value" works as well, and the last of a repeated flag wins.
    assert check(["--listen=localhost:1", "--listen=localhost:2"])["listen"] == "localhost:2"


def test_help_and_version_first():
    rc, out, _, _ = run_daemon(["-V"])
    assert rc == 0 and out.startswith("crewstreamd "), out
    rc, out, _, _ = run_daemon(["-h"])
    assert rc == 0 and out.startswith("Usage: crewstreamd"), out
    for flag in ("--config FILE", "--listen HOST:PORT", "--socket PATH", "--log-level LEVEL", "--check-config",
                 "-V, --version", "-h, --help", "CREWSTREAM_API_KEY", "CREWSTREAM_JWT_SECRET"):
        assert flag in out, flag
    # --help does not read the file, so a broken file does not stand in its way.
    rc, out, err, _ = run_daemon(["--config", "/nonexistent", "--help"])
    assert rc == 0 and out.startswith("Usage:"), err


@pytest.mark.parametrize("args,needle", [
    (["--bogus"], 'unknown or ambiguous option "--bogus" (try --help)'),
    (["-x"], 'unknown option "-x"'),
    (["--config"], 'option "--config" needs an argument'),
    (["--listen"], 'option "--listen" needs an argument'),
    (["--help=1"], 'option "--help=1" takes no argument'),
    (["--check-config=yes"], 'option "--check-config=yes" takes no argument'),
    (["--listen", "x"], '--listen "x": expected "HOST:PORT"'),
    (["--listen", "h:70000"], '--listen "h:70000": expected "HOST:PORT"'),
    (["--log-level", "loud"], '--log-level "loud": expected error, warn, info or debug'),
    (["--socket", ""], "--socket: expected a path of 1 to 107 bytes"),
    (["--socket", "/" + "a" * 107], "--socket: expected a path of 1 to 107 bytes"),
    (["--config", ""], "option --config needs a file name"),
    (["--config", "/nonexistent/cs.json"], "/nonexistent/cs.json: No such file or directory"),
    (["serve"], 'unexpected argument "serve"'),
])
def test_usage_errors(args, needle):
    rc, out, err, _ = run_daemon(args)
    assert rc == 2, (rc, out, err)
    assert err == "crewstreamd: " + err.split("crewstreamd: ", 1)[-1] and err.count("\n") == 1, err
    assert needle in err, err


def test_file_error_names_file_and_key():
    tmp = tempfile.mkdtemp(prefix="cs-e2e-")
    bad = write(tmp, "bad.json", '{"store":{"ring_events":0}}')
    rc, _, err, _ = run_daemon(["--config", bad])
    assert rc == 2 and "%s: store.ring_events: expected an integer >= 1" % bad in err, err
