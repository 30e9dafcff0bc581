"""cmake --install (issue 15, item 3): what an install puts where, the man pages against --help,
and programs built against the installed library through pkg-config and through
find_package(crewstream), run against the installed daemon."""
import os
import shutil
import subprocess
import tempfile

import pytest

from instutil import BUILD, ROOT, Daemon, cli_commands, help_options, man_text, run

PREFIX = "usr/local"
FILES = [
    "usr/local/sbin/crewstreamd",
    "usr/local/bin/crewstream",
    "usr/local/lib/libcrewstream.a",
    "usr/local/lib/libcrewstream.so",
    "usr/local/lib/libcrewstream.so.0",
    "usr/local/lib/libcrewstream.so.0.1.0",
    "usr/local/include/crewstream/client.h",
    "usr/local/lib/pkgconfig/crewstream.pc",
    "usr/local/lib/cmake/crewstream/crewstreamConfig.cmake",
    "usr/local/lib/cmake/crewstream/crewstreamConfigVersion.cmake",
    "usr/local/lib/cmake/crewstream/crewstreamTargets.cmake",
    "usr/local/lib/systemd/system/crewstreamd.service",
    "usr/local/lib/sysusers.d/crewstream.conf",
    "etc/crewstream/crewstream.json",
    "usr/local/share/man/man8/crewstreamd.8",
    "usr/local/share/man/man1/crewstream.1",
    "usr/local/share/man/man5/crewstream.json.5",
]


@pytest.fixture(scope="module")
def dest():
    """The build installed into a DESTDIR, as `cmake --install build` would install it in /."""
    tmp = tempfile.mkdtemp(prefix="cs-install-")
    run(["cmake", "--install", BUILD], env=dict(os.environ, DESTDIR=tmp))
    yield tmp
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def tmp():
    d = tempfile.mkdtemp(prefix="cs-inst-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_file_list(dest):
    missing = [f for f in FILES if not os.path.lexists(os.path.join(dest, f))]
    assert not missing, missing
    assert not os.path.exists(os.path.join(dest, "usr/local/bin/crewstreamd")), "the daemon goes to sbin"
    assert os.readlink(os.path.join(dest, "usr/local/lib/libcrewstream.so.0")) == "libcrewstream.so.0.1.0"
    with open(os.path.join(dest, "usr/local/lib/systemd/system/crewstreamd.service")) as f:
        unit = f.read()
    assert "\nExecStart=/usr/local/sbin/crewstreamd --config /etc/crewstream/crewstream.json\n" in unit
    assert "\nRuntimeDirectory=crewstream\n" in unit and "\nUser=crewstream\n" in unit
    assert "\nDocumentation=man:crewstreamd(8) man:crewstream.json(5)\n" in unit
    with open(os.path.join(dest, "usr/local/lib/sysusers.d/crewstream.conf")) as f:
        assert any(line.split()[:2] == ["u", "crewstream"] for line in f if line.strip() and line[0] != "#")
    with open(os.path.join(dest, "etc/crewstream/crewstream.json")) as f, open(os.path.join(ROOT, "conf/crewstream.json")) as g:
        assert f.read() == g.read()


def test_installed_daemon_checks_its_config_and_serves(dest, tmp):
    daemon = os.path.join(dest, "usr/local/sbin/crewstreamd")
    config = os.path.join(dest, "etc/crewstream/crewstream.json")
    out = run([daemon, "--check-config", "--config", config]).stdout
    assert '"listen": "127.0.0.1:8000"' in out
    with Daemon(daemon, tmp, config=config) as d:
        cli = os.path.join(dest, "usr/local/bin/crewstream")
        run([cli, "--socket", d.socket, "post", "-e", "inst", "-t", "run.started"])
        out = run([cli, "--url", f"http://127.0.0.1:{d.port}", "ls"]).stdout
        assert "inst" in out, out


@pytest.mark.parametrize("page,exe,args", [
    ("man8/crewstreamd.8", "sbin/crewstreamd", []),
    ("man1/crewstream.1", "bin/crewstream", []),
])
def test_man_pages_list_every_option_of_help(dest, page, exe, args):
    """The man pages are rendered from --help: every option --help names is in them, and man
    renders them without a warning."""
    text, warnings = man_text(os.path.join(dest, PREFIX, "share/man", page))
    assert warnings == "", warnings
    exe = os.path.join(dest, PREFIX, exe)
    wanted = help_options(exe)
    if exe.endswith("/crewstream"):
        for c in cli_commands(exe):
            assert f"crewstream {c}" in text, c
            wanted |= help_options(exe, c)
    missing = sorted(o for o in wanted if o not in text)
    assert not missing, missing


def test_config_man_page_shows_every_default(dest):
    text, warnings = man_text(os.path.join(dest, PREFIX, "share/man/man5/crewstream.json.5"))
    assert warnings == "", warnings
    out = run(["env", "-i", os.path.join(dest, PREFIX, "sbin/crewstreamd"), "--check-config"]).stdout
    for line in out.splitlines():
        assert line.strip() in text, line


def _pc_env(dest):
    return dict(os.environ, PKG_CONFIG_SYSROOT_DIR=dest,
                PKG_CONFIG_PATH=os.path.join(dest, PREFIX, "lib/pkgconfig"))


def test_pkg_config_builds_a_program_that_runs(dest, tmp):
    env = _pc_env(dest)
    assert run(["pkg-config", "--modversion", "crewstream"], env=env).stdout.strip() == "0.1.0"
    flags = run(["pkg-config", "--cflags", "--libs", "crewstream"], env=env).stdout.split()
    assert f"-L{dest}/usr/local/lib" in flags and "-lcrewstream" in flags, flags
    static = run(["pkg-config", "--static", "--libs", "crewstream"], env=env).stdout.split()
    assert "-ljansson" in static and "-luuid" in static, static
    exe = os.path.join(tmp, "consumer")
    run(["cc", "-std=c11", "-Wall", "-Werror", os.path.join(ROOT, "tests/install/consumer.c"), "-o", exe] + flags)
    lib_env = dict(os.environ, LD_LIBRARY_PATH=os.path.join(dest, PREFIX, "lib"))
    ldd = run(["ldd", exe], env=lib_env).stdout
    assert os.path.join(dest, PREFIX, "lib/libcrewstream.so.0") in ldd, ldd
    with Daemon(os.path.join(dest, PREFIX, "sbin/crewstreamd"), tmp) as d:
        out = run([exe, d.socket, "via-pkg-config"], env=lib_env).stdout
        assert out.startswith("stored seq 1"), out
        assert "via-pkg-config" in d.events("via-pkg-config")


def test_find_package_builds_shared_and_static_programs_that_run(dest, tmp):
    b = os.path.join(tmp, "b")
    run(["cmake", "-S", os.path.join(ROOT, "tests/install"), "-B", b,
         "-DCMAKE_PREFIX_PATH=" + os.path.join(dest, PREFIX), "-DCMAKE_C_FLAGS=-Wall -Werror"])
    run(["cmake", "--build", b], timeout=300)
    ldd = run(["ldd", os.path.join(b, "consumer_shared")]).stdout
    assert os.path.join(dest, PREFIX, "lib/libcrewstream.so.0") in ldd, ldd
    assert "libcrewstream" not in run(["ldd", os.path.join(b, "consumer_static")]).stdout
    with Daemon(os.path.join(dest, PREFIX, "sbin/crewstreamd"), tmp) as d:
        for kind in ("shared", "static"):
            out = run([os.path.join(b, f"consumer_{kind}"), d.socket, f"via-cmake-{kind}"]).stdout
            assert out.startswith("stored seq 1"), out
