"""Issue 4, least privilege (DESIGN.md invariant 7), in namespaces made by the tests:

- the engine's shared memory is created 0600;
- `--user NAME` drops root once the device is open: every engine process (supervisor,
  forkserver, reader, workers, writer, and one restarted after SIGKILL) has NAME's uid and
  gid in all four slots, NAME's groups only, and no capabilities left, and still mirrors;
- `python -m provisioning up NAME --owner USER` makes a persistent device that USER runs
  the engine on without root (setpriv: USER's uid/gid, no groups, no capabilities, from a
  world-readable copy of the code), and `down` removes it.

The unprivileged user is `enginetest`, a system user without home or shell, created here
when absent.
"""
import grp
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import warnings

import pytest

from netns import PY, ROOT, Engine, Netns
from probe import Probe, engine_tree, stats_json, wait_until

pytestmark = pytest.mark.privileged
USER = "enginetest"
ADDR = ("--address", "198.18.0.1/24", "--address6", "2001:db8::1/64")
INJECT = os.path.join(ROOT, "tests", "inject.py")


@pytest.fixture(scope="module")
def user():
    try:
        pw = pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", USER], check=True)
        pw = pwd.getpwnam(USER)
    return pw


@pytest.fixture(scope="module")
def runtime(user):
    """(python, code_dir): the engine and provisioning copied to a world-readable temp dir
    (a checkout may live in a private directory), and a Python the user can execute."""
    code_dir = tempfile.mkdtemp(prefix="engine-unpriv-")
    try:
        os.chmod(code_dir, 0o755)
        for pkg in ("engine", "provisioning"):
            shutil.copytree(os.path.join(ROOT, pkg), os.path.join(code_dir, pkg),
                            ignore=shutil.ignore_patterns("__pycache__"))
        py, note = _python_for(user, code_dir)
        for dirpath, dirs, files in os.walk(code_dir):
            for d in dirs:
                os.chmod(os.path.join(dirpath, d), 0o755)
            for f in files:
                os.chmod(os.path.join(dirpath, f), 0o755 if f.endswith(".so") else 0o644)
        if note:
            warnings.warn(note)
        yield py, code_dir
    finally:
        shutil.rmtree(code_dir, ignore_errors=True)


def as_user(pw, py: str, code_dir: str) -> list:
    """Command prefix: USER's uid and gid, no supplementary groups, no capabilities, a clean
    environment, the copied code."""
    return ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups",
            "env", "-i", f"--chdir={code_dir}", "PATH=/usr/bin:/bin", f"PYTHONPATH={code_dir}",
            py]


def world_tun(tmp: str) -> list:
    """Command prefix giving the command /dev/net/tun as distributions ship it, 0666 (the
    owner check of a provisioned device is the kernel's TUNSETIFF; opening the clone device
    itself is meant to be open to all). Where this machine's node is more restrictive, a
    0666 node of the same device number is bind-mounted over it in a private mount
    namespace of the command alone; the host's node is not touched."""
    if os.stat("/dev/net/tun").st_mode & 0o006 == 0o006:
        return []
    node = os.path.join(tmp, "tun")
    if not os.path.exists(node):
        st = os.stat("/dev/net/tun")
        os.mknod(node, 0o666 | (st.st_mode & 0o170000), st.st_rdev)
        os.chmod(node, 0o666)
    warnings.warn(f"/dev/net/tun is {oct(os.stat('/dev/net/tun').st_mode & 0o777)} on this "
                  f"machine: no user can open it, so no provisioned device can be used without "
                  f"root here; the test bind-mounts a 0666 node in a private mount namespace")
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount --bind "$0" /dev/net/tun && exec "$@"', node]


class EngineVia(Engine):
    """The Engine helper (waits for "ready", collects the log), with the interpreter
    replaced by `command` (e.g. a setpriv prefix)."""

    def __init__(self, ns: Netns, command: list, *args: str, device: str = "mir0") -> None:
        real = ns.popen

        def popen(*cmd, **kw):
            ns.popen = real
            assert cmd[0] == PY
            return real(*command, *cmd[1:], **kw)

        ns.popen = popen
        try:
            super().__init__(ns, *args, device=device)
        finally:
            ns.popen = real


def status(pid: int) -> dict:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def assert_runs_as(pids, pw, dropped: bool = True) -> None:
    """Every pid: the user's uid and gid in all four slots (real, effective, saved, fs),
    the user's groups at most, and no capability; when the engine dropped root itself
    (`dropped`), an empty bounding set and no_new_privs too. All violations in one
    message."""
    groups = sorted(set(os.getgrouplist(pw.pw_name, pw.pw_gid)))
    bad = []
    for pid in pids:
        st = status(pid)
        try:
            cmd = " ".join(open(f"/proc/{pid}/cmdline").read().split("\0"))[-90:]
        except OSError:
            cmd = st.get("Name")
        who = f"pid {pid} ({cmd})"
        if st["Uid"].split() != [str(pw.pw_uid)] * 4:
            bad.append(f"{who}: Uid {st['Uid']!r}")
        if st["Gid"].split() != [str(pw.pw_gid)] * 4:
            bad.append(f"{who}: Gid {st['Gid']!r}")
        if sorted(int(g) for g in st["Groups"].split()) not in ([], groups):
            bad.append(f"{who}: Groups {st['Groups']!r}")
        for cap in ("CapEff", "CapPrm", "CapAmb"):
            if int(st[cap], 16):
                bad.append(f"{who}: {cap} {st[cap]}")
        if dropped and (int(st["CapBnd"], 16) or st.get("NoNewPrivs") != "1"):
            bad.append(f"{who}: CapBnd {st['CapBnd']}, NoNewPrivs {st.get('NoNewPrivs')} "
                       f"(an exec could regain privileges)")
    assert not bad, "\n".join(bad)


def cmdline(p) -> str:
    try:
        return " ".join(p.cmdline())
    except Exception:
        return ""


def ping(ns: Netns, dst: str) -> subprocess.CompletedProcess:
    return ns.run("ping", "-c", "3", "-i", "0.1", "-W", "2", dst)


def test_shared_memory_is_created_0600():
    ns = Netns()
    try:
        eng = Engine(ns, "--workers", "2", *ADDR)
        segs = ns.shm_segments("mir0")
        assert len(segs) == 2
        for s in segs:
            st = os.stat(s)
            assert st.st_mode & 0o7777 == 0o600 and st.st_uid == 0, (s, oct(st.st_mode))
        assert eng.stop()[0] == 0
    finally:
        ns.close()


def test_user_option_drops_root_in_every_process(user, runtime):
    """Started by root (from code and a Python the user can read: after the drop, the
    supervisor starts its children as that user)."""
    py, code_dir = runtime
    ns = Netns()
    try:
        eng = EngineVia(ns, ["env", f"--chdir={code_dir}", f"PYTHONPATH={code_dir}", py],
                        "--workers", "2", *ADDR, "--user", USER)
        assert f"dropped privileges to {USER} (uid {user.pw_uid}, gid {user.pw_gid})" in eng.log
        pr = Probe(ns)
        tree = engine_tree(eng.proc.pid)
        roles = pr.pids()
        assert set(roles) == {"supervisor", "reader", "worker0", "worker1", "writer"}
        assert set(roles.values()) <= {p.pid for p in tree}
        assert len(tree) >= 6, [p.cmdline() for p in tree]
        forkserver = [p.pid for p in tree if "forkserver" in cmdline(p)]
        assert_runs_as([*roles.values(), *forkserver], user)
        for s in ns.shm_segments("mir0"):  # handed to the user, still private
            st = os.stat(s)
            assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (user.pw_uid, user.pw_gid,
                                                                     0o600), s
        p = ping(ns, "198.18.0.5")
        assert p.returncode == 0, p.stdout + p.stderr

        # the unprivileged supervisor can still restart a child against the same device
        old = pr.actor_pid("worker1")
        os.kill(old, signal.SIGKILL)
        new = pr.wait_replaced("worker1", old)
        assert_runs_as([new], user)
        r = ns.run(PY, INJECT, "tcp", "--size", str(8 << 20), timeout=60)
        assert r.returncode == 0 and json.loads(r.stdout)["ok"], r.stdout + r.stderr
        out = stats_json(ns)
        assert out["procs"]["worker1"]["pid"] == new

        # every process the engine started, helpers included (multiprocessing's
        # resource tracker), runs as the user: none keeps root for the engine's lifetime
        assert_runs_as([p.pid for p in engine_tree(eng.proc.pid)], user)
        pr.close()
        code, took = eng.stop()
        assert code == 0 and took < 2.0, eng.log
        assert ns.shm_segments("mir0") == [] and ns.links() == ["lo"]
    finally:
        ns.close()


def _python_for(pw, code_dir: str):
    """A Python the unprivileged user can execute, with numpy and psutil importable.
    The venv's interpreter first; when the user cannot run it (a venv made from a Python
    under a private home, e.g. /root/.pyenv), the same CPython version from the system,
    with the venv's numpy and psutil copied next to the code. Returns (python, note)."""
    probe = "import numpy, psutil, multiprocessing.popen_forkserver, engine.cli"
    ok = subprocess.run([*as_user(pw, PY, code_dir), "-c", probe], capture_output=True, text=True)
    if ok.returncode == 0:
        return PY, None
    note = (f"{PY} (-> {os.path.realpath(PY)}) is not usable by {pw.pw_name}: "
            f"{ok.stderr.strip()[-160:]!r}; the user cannot run the engine from this venv")
    import numpy
    import psutil
    pkgs = [os.path.dirname(m.__file__) for m in (numpy, psutil)]
    for src in (*pkgs, pkgs[0] + ".libs"):   # each where it is installed; numpy's own libs
        name = os.path.basename(src)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(code_dir, name),
                            ignore=shutil.ignore_patterns("tests", "__pycache__"))
    os.chmod(code_dir, 0o755)
    for dirpath, dirs, files in os.walk(code_dir):
        for d in dirs:
            os.chmod(os.path.join(dirpath, d), 0o755)
        for f in files:
            os.chmod(os.path.join(dirpath, f), 0o755)
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for cand in (f"/usr/bin/{ver}", f"/usr/local/bin/{ver}"):
        if os.path.exists(cand) and subprocess.run([*as_user(pw, cand, code_dir), "-c", probe],
                                                   capture_output=True).returncode == 0:
            return cand, note + f"; used {cand} with numpy and psutil copied beside the code"
    pytest.fail(note + "; and no system Python of the same version can import them")


def test_provision_up_with_owner_only(user):
    """`python -m provisioning up NAME --owner USER` (no --group), as the issue states it."""
    ns = Netns()
    try:
        up = ns.run(PY, "-m", "provisioning", "up", "mir6", "--owner", USER,
                    "--address", "198.18.6.1/24")
        assert up.returncode == 0, up.stderr
        detail = ns.sh("ip -d link show mir6")
        assert "persist on" in detail and f"user {USER}" in detail, detail
        down = ns.run(PY, "-m", "provisioning", "down", "mir6")
        assert down.returncode == 0, down.stderr
        assert wait_until(lambda: ns.links() == ["lo"], 2), ns.links()
    finally:
        ns.close()


def test_provisioned_device_runs_without_root(user, runtime):
    """Owner and group given, the engine run by the user alone: setpriv with the user's
    uid and gid, no groups, no capabilities."""
    py, code_dir = runtime
    ns = Netns()
    try:
        up = ns.run(PY, "-m", "provisioning", "up", "mir5", "--owner", USER,
                    "--group", grp.getgrgid(user.pw_gid).gr_name,
                    "--address", "198.18.5.1/24", "--address6", "2001:db8:5::1/64")
        assert up.returncode == 0, up.stderr
        assert ns.links() == ["lo", "mir5"]
        detail = ns.sh("ip -d link show mir5")
        assert "persist on" in detail and f"user {USER}" in detail, detail
        again = ns.run(PY, "-m", "provisioning", "up", "mir5", "--owner", USER)
        assert again.returncode == 1 and "already exists" in again.stderr, again.stderr

        eng = EngineVia(ns, [*world_tun(code_dir), *as_user(user, py, code_dir)],
                        "--workers", "2", device="mir5")
        assert "mirroring 198.18.5.1/24, 2001:db8:5::1/64 on mir5 (" in eng.log, eng.log
        assert "attached" in eng.log, eng.log
        tree = engine_tree(eng.proc.pid)
        assert len(tree) >= 6
        assert_runs_as([p.pid for p in tree], user, dropped=False)   # never had root
        for dst in ("198.18.5.7", "2001:db8:5::7"):
            p = ping(ns, dst)
            assert p.returncode == 0, p.stdout + p.stderr
        r = ns.run(PY, INJECT, "tcp", "--peer", "198.18.5.9", "--size", str(8 << 20), timeout=60)
        assert r.returncode == 0 and json.loads(r.stdout)["ok"], r.stdout + r.stderr
        segs = ns.shm_segments("mir5")
        assert segs and all(os.stat(s).st_uid == user.pw_uid and
                            os.stat(s).st_mode & 0o7777 == 0o600 for s in segs)
        code, took = eng.stop()
        assert code == 0 and took < 2.0, eng.log
        assert ns.shm_segments("mir5") == []
        assert ns.links() == ["lo", "mir5"], "a provisioned device outlives the engine"

        down = ns.run(PY, "-m", "provisioning", "down", "mir5")
        assert down.returncode == 0, down.stderr
        assert wait_until(lambda: ns.links() == ["lo"], 2), ns.links()
        again = ns.run(PY, "-m", "provisioning", "down", "mir5")
        assert again.returncode == 1 and again.stderr.startswith("provisioning: error:"), \
            again.stderr
    finally:
        ns.close()


def test_user_that_cannot_read_the_engine_is_refused_before_anything_is_made(user, tmp_path):
    """The engine run from a copy below root's private temporary directory: the account
    given to --user could not import it after the drop, so the engine says so at once."""
    code = tmp_path / "code"
    shutil.copytree(os.path.join(ROOT, "engine"), code / "engine")
    shutil.copytree(os.path.join(ROOT, "provisioning"), code / "provisioning")
    ns = Netns()
    try:
        p = ns.run("env", f"--chdir={code}", f"PYTHONPATH={code}", PY, "-m", "engine",
                   "--device", "mir0", "--address", "198.18.0.1/24", "--user", USER, timeout=60)
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
        assert f"--user {USER}: that account cannot run" in p.stderr.strip().splitlines()[-1]
        assert ns.links() == ["lo"] and ns.shm_segments("mir0") == []
    finally:
        ns.close()
