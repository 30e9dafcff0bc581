"""`pip install --no-build-isolation ./python` works offline with Debian's setuptools and wheel,
and what it installs is the package (typed) that imports without crewai."""

import importlib.util
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PKG = os.path.normpath(os.path.join(HERE, "..", "..", "python"))


def test_pip_install_offline(tmp_path):
    # find_spec, not import: importing setuptools here would fight with distutils (its hack).
    missing = [m for m in ("pip", "setuptools", "wheel") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip("needs Debian's python3-pip, python3-setuptools, python3-wheel (scripts/deps test): %s" % missing)
    target = tmp_path / "site"
    env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_CACHE_DIR="1")
    # The source tree stays clean: build in a copy (setuptools writes build/ and *.egg-info).
    src = tmp_path / "src"
    subprocess.run(["cp", "-r", PKG, str(src)], check=True)
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index", "--target", str(target), str(src)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert (target / "crewstream" / "py.typed").exists()
    for mod in ("__init__", "producer", "subscriber", "aio", "runtime", "crewai", "errors"):
        assert (target / "crewstream" / (mod + ".py")).exists(), mod
    code = (
        "import crewstream, crewstream.aio, crewstream.runtime, crewstream.crewai as c;"
        "assert crewstream.__file__.startswith(%r), crewstream.__file__;"
        "print(crewstream.__version__, c.CREWAI_VERSION_READ)" % str(target)
    )
    r = subprocess.run([sys.executable, "-c", code], env=dict(env, PYTHONPATH=str(target)), cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0.1.0", "1.15.17"]
