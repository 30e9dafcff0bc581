"""Fixtures for the Python client's tests: the end-to-end tests' daemon fixtures (tests/e2e),
and the crewstream package from python/ (the source tree, not an installed copy)."""

import importlib.util
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
E2E = os.path.normpath(os.path.join(HERE, "..", "e2e"))
sys.path.insert(0, os.path.normpath(os.path.join(HERE, "..", "..", "python")))
sys.path.insert(0, E2E)  # csutil

_spec = importlib.util.spec_from_file_location("cs_e2e_conftest", os.path.join(E2E, "conftest.py"))
_e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_e2e)

import pytest  # noqa: E402

make_daemon = _e2e.make_daemon
mkdtemp = _e2e.mkdtemp
pytest_runtest_makereport = _e2e.pytest_runtest_makereport
pytest_configure = _e2e.pytest_configure


@pytest.fixture
def daemon(make_daemon):
    """A daemon whose rings hold every event these tests post (their histories are checked
    whole)."""
    d = make_daemon({"store": {"ring_events": 8192, "ring_bytes": 16 * 1024 * 1024}})
    return d
