"""tools/setup-system.sh, run against a PATH of our own making: a directory holding the
shell's basics, stand-ins for the tools that are "installed", and (as root) an `apt-get`
that records what it was asked. Nothing is really installed by these tests."""
import os
import pathlib
import shutil
import subprocess
import tempfile

import pytest

from netns import ROOT

SCRIPT = os.path.join(ROOT, "tools", "setup-system.sh")
TOOLS = {"ip": "iproute2", "ping": "iputils-ping", "curl": "curl", "iperf3": "iperf3",
         "tcpdump": "tcpdump", "ethtool": "ethtool", "setpriv": "util-linux"}
BASICS = ("id", "cat", "rm", "mktemp", "modprobe")


def fake_path(tmp_path, present, apt_log=None, venv=True):
    """A directory for PATH: the basics linked from the system, an executable stub for
    each tool in `present`, a python3 whose `import venv, ensurepip` works or not, and an
    apt-get that appends its arguments to `apt_log`."""
    d = tmp_path / "bin"
    d.mkdir()
    for name in BASICS:
        for where in ("/usr/bin", "/bin", "/usr/sbin", "/sbin"):
            if os.path.exists(os.path.join(where, name)):
                os.symlink(os.path.join(where, name), d / name)
                break
    for name in present:
        (d / name).write_text("#!/bin/sh\nexit 0\n")
        (d / name).chmod(0o755)
    (d / "python3").write_text(f"#!/bin/sh\nexit {0 if venv else 1}\n")
    (d / "python3").chmod(0o755)
    if apt_log is not None:
        (d / "apt-get").write_text(f'#!/bin/sh\necho "$*" >> {apt_log}\n')
        (d / "apt-get").chmod(0o755)
    return str(d)


def run(path, *, as_user=False, script=SCRIPT):
    cmd = ["/bin/bash", script]
    if as_user and os.geteuid() == 0:  # the not-root case, even when the suite runs as root
        cmd = ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
    env = {"PATH": path, "PYTHON": "python3"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)


def test_nothing_printed_or_installed_when_everything_is_there(tmp_path):
    log = tmp_path / "apt.log"
    p = run(fake_path(tmp_path, TOOLS, apt_log=log))
    assert p.returncode == 0 and p.stdout == "" and p.stderr == "", p
    assert not log.exists()


def test_not_root_names_exactly_what_to_install_and_succeeds(tmp_path):
    if os.geteuid() == 0 and not os.path.exists("/usr/bin/setpriv"):
        pytest.fail("setpriv (util-linux) is needed to run this case as root")
    present = set(TOOLS) - {"iperf3", "tcpdump"}
    # pytest's tmp_path, and maybe the clone itself, sit below a 0700 directory: this one,
    # with a copy of the script, is open to the user
    tmp_path = pathlib.Path(tempfile.mkdtemp(prefix="setup-system-"))
    try:
        os.chmod(tmp_path, 0o755)
        script = shutil.copy(SCRIPT, tmp_path / "setup-system.sh")
        log = tmp_path / "apt.log"
        p = run(fake_path(tmp_path, present, apt_log=log), as_user=True, script=script)
        apt_ran = log.exists()
    finally:
        shutil.rmtree(tmp_path)
    assert p.returncode == 0, p
    lines = p.stdout.splitlines()
    assert len(lines) == 1 and "missing iperf3 tcpdump;" in lines[0], p.stdout
    assert "apt-get install iperf3 tcpdump" in lines[0], p.stdout
    assert not apt_ran, "apt-get must not run without root"


@pytest.mark.privileged
def test_root_installs_only_what_is_missing_with_one_update(tmp_path):
    present = set(TOOLS) - {"ping", "ethtool"}
    log = tmp_path / "apt.log"
    p = run(fake_path(tmp_path, present, apt_log=log, venv=False))
    assert p.returncode == 0, p
    assert p.stdout.splitlines() == [
        "setup-system: installing iputils-ping ethtool python3-venv (apt-get)"]
    calls = log.read_text().splitlines()
    assert calls[0] == "update -qq", calls
    assert len(calls) == 2 and calls[1].startswith("install -y"), calls
    assert calls[1].split()[-3:] == ["iputils-ping", "ethtool", "python3-venv"], calls
