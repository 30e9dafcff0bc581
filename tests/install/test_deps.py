"""scripts/deps on a minimal Debian 12 (issue 15, item 5), simulated: a PATH holding only a shell
and a few tools, no sudo, git or curl, with fake id, dpkg-query, sudo and apt-get that record what
they were asked. And the README's tour uses only commands that `scripts/deps build` installs or
that the build makes."""
import os
import re
import shutil
import subprocess
import tempfile

import pytest

from instutil import ROOT

DEPS = os.path.join(ROOT, "scripts", "deps")


def fake_path(tmp, uid, sudo, installed=False):
    """A bin directory: the real bash, cat, grep; fake id, dpkg-query, apt-get (and sudo)."""
    b = os.path.join(tmp, "bin")
    os.mkdir(b)
    for tool in ("bash", "cat", "grep"):
        os.symlink(shutil.which(tool, path="/usr/bin:/bin"), os.path.join(b, tool))
    log = os.path.join(tmp, "log")
    fakes = {
        "id": f"echo {uid}",
        "dpkg-query": "echo 'install ok installed'" if installed else "exit 1",
        "apt-get": f'echo "apt-get $*" >>{log}',
    }
    if sudo:
        fakes["sudo"] = f'echo "sudo $1" >>{log}; "$@"'
    for name, body in fakes.items():
        with open(os.path.join(b, name), "w") as f:
            f.write(f"#!{shutil.which('bash', path='/usr/bin:/bin')}\n{body}\n")
        os.chmod(os.path.join(b, name), 0o755)
    return b, log


def deps(tmp, *args, **kw):
    b, log = fake_path(tmp, **kw)
    p = subprocess.run([os.path.join(b, "bash"), DEPS, *args], env={"PATH": b}, capture_output=True, text=True,
                       timeout=60)
    calls = open(log).read() if os.path.exists(log) else ""
    return p, calls


@pytest.fixture
def tmp():
    d = tempfile.mkdtemp(prefix="cs-deps-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_neither_root_nor_sudo_says_what_to_do(tmp):
    p, calls = deps(tmp, "build", uid=1000, sudo=False)
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert "command not found" not in p.stderr, p.stderr
    assert "not root and sudo is not installed" in p.stderr, p.stderr
    cmd = re.search(r"^  apt-get update && apt-get install -y --no-install-recommends (.*)$", p.stderr, re.M)
    assert cmd and "libmicrohttpd-dev" in cmd.group(1).split() and "socat" in cmd.group(1).split(), p.stderr
    assert calls == ""


def test_sudo_is_used_when_not_root(tmp):
    p, calls = deps(tmp, "test", uid=1000, sudo=True)
    assert p.returncode == 0, p.stderr
    lines = calls.splitlines()
    assert lines[:2] == ["sudo apt-get", "apt-get update -qq"], lines
    assert lines[2] == "sudo apt-get" and lines[3].startswith("apt-get install -y -qq --no-install-recommends "), lines
    assert {"debhelper", "lintian", "dpkg-dev", "fakeroot"} <= set(lines[3].split()), lines


def test_root_needs_no_sudo(tmp):
    p, calls = deps(tmp, "build", uid=0, sudo=False)
    assert p.returncode == 0, p.stderr
    assert calls.splitlines()[0] == "apt-get update -qq", calls


def test_nothing_missing_installs_nothing(tmp):
    p, calls = deps(tmp, "test", uid=1000, sudo=False, installed=True)
    assert p.returncode == 0 and calls == "" and p.stderr == "", p.stderr


def test_readme_tour_uses_only_what_deps_build_installs():
    """Every command of the README's shell blocks is a shell builtin, a script or a program of
    this tree, or comes from a package that `scripts/deps build` installs."""
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    with open(DEPS) as f:
        build_pkgs = set(re.search(r"^pkgs=\((.*?)\)", f.read(), re.M | re.S).group(1).split())
    from_pkg = {"curl": "curl", "socat": "socat", "python3": "python3"}
    own = {"scripts/run", "scripts/test", "build/crewstream", "build/crewstreamd"}
    builtins = {"printf", "echo", "export", "cd"}
    seen = set()
    for block in re.findall(r"```sh\n(.*?)```", readme, re.S):
        block = re.sub(r"'[^']*'", "''", block)  # quoted arguments (python3 -c '...') are not commands
        for line in block.splitlines():
            line = re.sub(r"#.*", "", line).strip()
            if not line:
                continue
            for part in re.split(r"\||&&|;|&", line):
                words = [w for w in part.split() if not re.match(r"^[A-Z_]+=", w)]
                if words:
                    seen.add(words[0])
    for cmd in sorted(seen):
        if cmd in own or cmd in builtins or cmd.startswith(("-", "'", '"', "$")):
            continue
        assert cmd in from_pkg, f"README runs {cmd!r}: install it in scripts/deps build or use the tool"
        assert from_pkg[cmd] in build_pkgs, (cmd, sorted(build_pkgs))
    assert "curl" in seen and "build/crewstream" in seen
