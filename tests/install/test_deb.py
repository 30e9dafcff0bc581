"""The Debian package (issue 15, item 4): dpkg-buildpackage -us -uc -b in a copy of the tree,
lintian with no errors, the file list and maintainer scripts of each package, and the daemon
extracted from the package (dpkg -x) checking its installed configuration, then serving on a free
port. Slow (minutes on two cores): its own ctest entry. Skipped, saying why, without the tools."""
import glob
import os
import shutil
import subprocess
import tempfile

import pytest

from instutil import ROOT, Daemon, run

TOOLS = {"dpkg-buildpackage": "dpkg-dev", "dh": "debhelper", "lintian": "lintian", "fakeroot": "fakeroot"}
missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
pytestmark = pytest.mark.skipif(bool(missing), reason="the .deb is not built: install " + " ".join(missing)
                                + " (scripts/deps test does)")

VERSION = "0.1.0-1"


def _ignore(dirpath, names):
    top = os.path.abspath(dirpath) == ROOT
    return [n for n in names if n in (".git", "__pycache__", ".pytest_cache", "obj-x86_64-linux-gnu")
            or (top and (n.startswith("build") or n == "tmp"))]


@pytest.fixture(scope="module")
def debs():
    tmp = tempfile.mkdtemp(prefix="cs-deb-")
    src = os.path.join(tmp, "crewstream-0.1.0")
    shutil.copytree(ROOT, src, ignore=_ignore, symlinks=True)
    env = dict(os.environ, DEB_BUILD_OPTIONS="nocheck parallel=2")
    p = subprocess.run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, env=env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1800)
    assert p.returncode == 0, p.stdout[-6000:]
    arch = run(["dpkg-architecture", "-qDEB_HOST_ARCH"]).stdout.strip()
    out = {name: os.path.join(tmp, f"{name}_{VERSION}_{arch}.deb")
           for name in ("crewstream", "libcrewstream0", "libcrewstream-dev")}
    for path in out.values():
        assert os.path.exists(path), (path, sorted(os.listdir(tmp)))
    out["changes"] = os.path.join(tmp, f"crewstream_{VERSION}_{arch}.changes")
    out["tmp"] = tmp
    yield out
    shutil.rmtree(tmp, ignore_errors=True)


def contents(deb):
    """The paths in a .deb, without the leading '.', symlinks as 'path -> target'."""
    lines = run(["dpkg-deb", "--contents", deb]).stdout.splitlines()
    return {line.split(None, 5)[5][1:].rstrip("/") for line in lines}


def control(deb, field):
    return run(["dpkg-deb", "--field", deb, field]).stdout.strip()


def test_lintian_reports_no_errors(debs):
    p = run(["lintian", "--fail-on", "error", "--no-tag-display-limit", debs["changes"]], check=False,
            timeout=900)
    errors = [line for line in p.stdout.splitlines() if line.startswith("E:")]
    assert p.returncode == 0 and not errors, p.stdout + p.stderr


def test_daemon_package_files_and_scripts(debs):
    deb = debs["crewstream"]
    files = contents(deb)
    for path in ["/usr/sbin/crewstreamd", "/usr/bin/crewstream", "/etc/crewstream/crewstream.json",
                 "/lib/systemd/system/crewstreamd.service", "/usr/lib/sysusers.d/crewstream.conf",
                 "/usr/share/man/man8/crewstreamd.8.gz", "/usr/share/man/man1/crewstream.1.gz",
                 "/usr/share/man/man5/crewstream.json.5.gz", "/usr/share/doc/crewstream/copyright",
                 "/usr/share/doc/crewstream/configuration.md.gz"]:
        assert path in files, (path, sorted(files))
    assert not any("libcrewstream" in f or f.startswith("/usr/include") for f in files), sorted(files)
    ctl = tempfile.mkdtemp(dir=debs["tmp"])
    run(["dpkg-deb", "--control", deb, ctl])
    with open(os.path.join(ctl, "conffiles")) as f:
        assert "/etc/crewstream/crewstream.json" in f.read().split()
    with open(os.path.join(ctl, "postinst")) as f:
        postinst = f.read()
    # dh_installsystemd enables and starts the unit; dh_installsysusers makes the crewstream user.
    assert "deb-systemd-helper enable 'crewstreamd.service'" in postinst, postinst
    assert "deb-systemd-invoke $_dh_action 'crewstreamd.service'" in postinst, postinst
    assert "systemd-sysusers" in postinst and "crewstream.conf" in postinst, postinst
    depends = control(deb, "Depends")
    assert "libwebsockets-evlib-uv" in depends and "systemd-sysusers" in depends, depends


def test_library_packages(debs):
    lib = contents(debs["libcrewstream0"])
    multiarch = run(["dpkg-architecture", "-qDEB_HOST_MULTIARCH"]).stdout.strip()
    d = f"/usr/lib/{multiarch}"
    assert f"{d}/libcrewstream.so.0.1.0" in lib and f"{d}/libcrewstream.so.0 -> libcrewstream.so.0.1.0" in lib, lib
    assert not any(f.endswith((".a", ".h", ".pc")) or f.endswith("libcrewstream.so") for f in lib), lib
    dev = contents(debs["libcrewstream-dev"])
    for path in ["/usr/include/crewstream/client.h", f"{d}/libcrewstream.a", f"{d}/pkgconfig/crewstream.pc",
                 f"{d}/cmake/crewstream/crewstreamConfig.cmake", f"{d}/libcrewstream.so -> libcrewstream.so.0"]:
        assert path in dev, (path, sorted(dev))
    assert "libcrewstream0 (= 0.1.0-1)" in control(debs["libcrewstream-dev"], "Depends")


def test_extracted_daemon_runs_from_installed_config(debs):
    root = tempfile.mkdtemp(dir=debs["tmp"])
    run(["dpkg", "-x", debs["crewstream"], root])
    daemon = os.path.join(root, "usr/sbin/crewstreamd")
    config = os.path.join(root, "etc/crewstream/crewstream.json")
    # The unit's own command line, with its paths inside the extracted tree.
    with open(os.path.join(root, "lib/systemd/system/crewstreamd.service")) as f:
        execstart = [line for line in f if line.startswith("ExecStart=")]
    assert execstart == ["ExecStart=/usr/sbin/crewstreamd --config /etc/crewstream/crewstream.json\n"], execstart
    p = run([daemon, "--check-config", "--config", config], env={"RUNTIME_DIRECTORY": "/run/crewstream"})
    assert '"socket": "/run/crewstream/ingest.sock"' in p.stdout, p.stdout
    run_dir = tempfile.mkdtemp(dir=debs["tmp"])
    with Daemon(daemon, run_dir, config=config) as d:
        cli = os.path.join(root, "usr/bin/crewstream")
        run([cli, "--socket", d.socket, "post", "-e", "deb", "-t", "run.started"])
        assert "deb" in run([cli, "--url", f"http://127.0.0.1:{d.port}", "ls"]).stdout
    man = run(["man", "--warnings", "-l", os.path.join(root, "usr/share/man/man8/crewstreamd.8.gz")],
              env=dict(os.environ, LC_ALL="C.UTF-8"))
    assert man.stderr == "" and "--check-config" in man.stdout.replace("\u2010", "-")
