"""The engine as a whole, off Linux: `python -m engine` over the memory device in a Python
from which the Linux-only facilities are removed (tests/offlinux/sitecustomize.py), with
the supervisor running the device I/O in threads as it does on Windows (--io-threads)
and the platform's own start method (spawn). A replay goes through reader, workers and
writer to a sink and a --pcap capture; every frame comes out mirrored and the engine
exits 0 by itself. A file in, files out: no packet goes to any network."""
import glob
import os
import subprocess
import sys

import pytest

from engine import pcap
from packets import ipv4, ipv6, swapped4, udp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOOTSTRAP = os.path.join(ROOT, "tests", "offlinux")
DEVICE = f"off{os.getpid() % 100000}"


def off_linux_python(*args, timeout=120, bootstrap=BOOTSTRAP, env=None):
    env = dict(os.environ, **(env or {}), PYTHONPATH=os.pathsep.join([bootstrap, ROOT]))
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def mirrored6(p):
    return p[:8] + p[24:40] + p[8:24] + p[40:]


def test_the_bootstrap_really_removes_the_linux_facilities():
    p = off_linux_python("-c", """if True:
        import ctypes, os, select, multiprocessing.reduction as r
        assert not hasattr(os, "eventfd") and not hasattr(os, "fork")
        assert not hasattr(select, "poll") and not hasattr(r, "DupFd")
        assert not hasattr(os, "sched_getaffinity") and not hasattr(os, "O_CLOEXEC")
        try:
            import fcntl
        except ImportError:
            pass
        else:
            raise AssertionError("fcntl imported")
        try:
            ctypes.CDLL(None)
        except TypeError:
            pass
        else:
            raise AssertionError("CDLL(None) loaded")
        from engine import platform, shm
        assert platform.NAME == "portable", platform.NAME
        assert shm.shm_prefix("x") == "engine.x.0"   # /proc is not there for the engine
        print("ok")
        """)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr


@pytest.mark.parametrize("workers", [1, 3])
def test_python_m_engine_runs_end_to_end_off_linux(tmp_path, workers):
    frames = []
    for i in range(600):
        if i % 2:
            frames.append(ipv4("198.18.0.1", f"198.18.0.{2 + i % 100}",
                               udp(40000 + i % 7, 53, b"q%d" % i)))
        else:
            frames.append(ipv6("2001:db8::1", f"2001:db8::{2 + i % 50:x}",
                               udp(40000 + i % 5, 53, b"s%d" % i)))
    src, sink, cap = tmp_path / "in.pcap", tmp_path / "out.pcap", tmp_path / "cap.pcap"
    pcap.write_frames(str(src), frames)
    p = off_linux_python(
        "-m", "engine", "--driver", "memory", "--device", DEVICE, "--replay", str(src),
        "--sink", str(sink), "--pcap", str(cap), "--workers", str(workers),
        "--inline", "never",  # every frame through the worker processes
        "--address", "198.18.0.1/24", "--address6", "2001:db8::1/64", "--io-threads",
        "--duration", "90")  # a bound only: the engine stops once the replay is done
    assert p.returncode == 0, p.stderr
    assert "processes: portable platform, start method spawn, device I/O in supervisor " \
           "threads" in p.stderr, p.stderr
    assert "stopping: replay done (600 frames)" in p.stderr, p.stderr
    assert "read 600 frames, wrote 600, dropped 0" in p.stderr, p.stderr
    assert "restarting" not in p.stderr and "Traceback" not in p.stderr, p.stderr
    want = sorted(swapped4(f) if f[0] >> 4 == 4 else mirrored6(f) for f in frames)
    assert sorted(pcap.read_frames(str(sink))) == want
    assert sorted(pcap.read_frames(str(cap))) == want
    assert not glob.glob(f"/dev/shm/engine.{DEVICE}.*"), "shared memory left behind"


@pytest.mark.parametrize("driver", ["tap-windows", "wintun"])
def test_the_windows_backends_start_their_workers_off_linux(tmp_path, driver):
    """The supervisor opens a (fake) TAP-Windows adapter or Wintun session and runs its
    I/O in two threads; the workers are separate spawned processes that get no device
    (a Wintun session cannot be pickled at all, a TAP handle must not be held twice)."""
    frames = [ipv4("198.18.0.1", f"198.18.0.{2 + i % 100}", udp(40000 + i % 7, 53, b"w%d" % i))
              if i % 3 else
              ipv6("2001:db8::1", f"2001:db8::{2 + i % 50:x}", udp(40000, 53, b"v%d" % i))
              for i in range(300)]
    src, sink = tmp_path / "in.pcap", tmp_path / "out.pcap"
    pcap.write_frames(str(src), frames)
    joblog = tmp_path / "job.log"
    env = {"ENGINE_FAKE_REPLAY": str(src), "ENGINE_FAKE_SINK": str(sink),
           "ENGINE_FAKE_JOBLOG": str(joblog)}
    p = off_linux_python(
        "-m", "engine", "--driver", driver, "--device", DEVICE, "--workers", "2",
        "--inline", "never", "--address", "198.18.0.1/24", "--address6", "2001:db8::1/64",
        "--duration", "90", bootstrap=os.path.join(ROOT, "tests", "offlinux_windows"),
        env=env)
    assert p.returncode == 0, p.stderr
    assert "device I/O in supervisor threads" in p.stderr, p.stderr
    assert "ready: worker0" in p.stderr and "stopping: SIGTERM" in p.stderr, p.stderr
    assert "read 300 frames, wrote 300, dropped 0" in p.stderr, p.stderr
    assert "restarting" not in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert sorted(pcap.read_frames(str(sink))) == sorted(
        swapped4(f) if f[0] >> 4 == 4 else mirrored6(f) for f in frames)
    # the Windows platform's Job Object: made kill-on-close, both workers in it, closed
    assert joblog.read_text().splitlines() == [
        "create", "limit 9 0x2000", "assign 0x10b", "assign 0x10b", "close 0x10b"]
    assert not glob.glob(f"/dev/shm/engine.{DEVICE}.*"), "shared memory left behind"


def test_stats_reads_a_running_engine_off_linux(tmp_path):
    """`python -m engine stats` maps the control segment read-only through the platform
    layer (no /dev/shm path, no /proc) and sees the counters of an off-Linux engine."""
    import json
    import signal
    import time
    frames = [ipv4("198.18.0.1", f"198.18.0.{2 + i % 50}", udp(4000, 53, b"t%d" % i))
              for i in range(200)]
    src = tmp_path / "in.pcap"
    pcap.write_frames(str(src), frames)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([BOOTSTRAP, ROOT]))
    log = open(tmp_path / "engine.log", "w")
    eng = subprocess.Popen(
        [sys.executable, "-m", "engine", "--driver", "memory", "--device", DEVICE,
         "--replay", str(src), "--replay-hold", "--workers", "2", "--io-threads",
         "--address", "198.18.0.1/24", "--duration", "120"],
        cwd=ROOT, env=env, stderr=log)
    try:
        deadline, out = time.monotonic() + 90, None
        while time.monotonic() < deadline:
            p = off_linux_python("-m", "engine", "stats", "--device", DEVICE, "--json",
                                 timeout=60)
            if p.returncode == 0:
                out = json.loads(p.stdout)
                if out["totals"]["tx_frames"] == 200:
                    break
            time.sleep(0.2)
        assert out is not None, p.stderr
        assert out["totals"]["rx_frames"] == out["totals"]["tx_frames"] == 200, out["totals"]
        assert {"supervisor", "worker0", "worker1"} <= set(out["procs"])
        assert out["procs"]["supervisor"]["pid"] == eng.pid
        eng.send_signal(signal.SIGTERM)
        assert eng.wait(60) == 0
        p = off_linux_python("-m", "engine", "stats", "--device", DEVICE)
        assert p.returncode == 1 and f"no engine runs on device {DEVICE}" in p.stderr
    finally:
        if eng.poll() is None:
            eng.kill()
            eng.wait(10)
        log.close()
    assert not glob.glob(f"/dev/shm/engine.{DEVICE}.*"), "shared memory left behind"


def test_workers_die_with_a_killed_supervisor_off_linux(tmp_path):
    """Without PR_SET_PDEATHSIG (no CDLL(None), no prctl) a worker still goes when the
    supervisor is SIGKILLed: its thread on the parent's sentinel ends it."""
    import re
    import signal
    import time
    import psutil
    src = tmp_path / "in.pcap"
    pcap.write_frames(str(src), [ipv4("198.18.0.1", "198.18.0.9", udp(1, 2, b"k"))])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([BOOTSTRAP, ROOT]))
    log_path = tmp_path / "engine.log"
    with open(log_path, "w") as log:
        eng = subprocess.Popen(
            [sys.executable, "-m", "engine", "--driver", "memory", "--device", DEVICE,
             "--replay", str(src), "--replay-hold", "--workers", "2", "--io-threads",
             "--address", "198.18.0.1/24", "--duration", "120"],
            cwd=ROOT, env=env, stderr=log)
    workers = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not workers:
            m = re.search(r"ready: worker0 (\d+), worker1 (\d+)", log_path.read_text())
            workers = [int(pid) for pid in m.groups()] if m else []
            time.sleep(0.1)
        assert workers, log_path.read_text()
        procs = [psutil.Process(pid) for pid in workers]
        assert all(p.ppid() == eng.pid for p in procs)
        eng.send_signal(signal.SIGKILL)
        eng.wait(30)
        gone, alive = psutil.wait_procs(procs, timeout=30)
        assert alive == [], f"workers outlived the supervisor: {alive}"
    finally:
        if eng.poll() is None:
            eng.kill()
            eng.wait(10)
        for pid in workers:   # ours: started by the engine this test started
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass
        for path in glob.glob(f"/dev/shm/engine.{DEVICE}.*"):  # a SIGKILL leaves them
            os.unlink(path)
