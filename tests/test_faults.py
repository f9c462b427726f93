"""Faults around the engine that must not stop the mirror or leave anything behind
(issue 19): a full disk under --pcap and --stats-file, signals whose default action
would kill the supervisor without clean-up, a stats request with stderr gone.

Engines here run over the memory driver with --replay-hold (no device, no root), so
they stay up until the test stops them."""
import glob
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from engine import journal, pcap, shm
from engine.capture import Capture
from engine.config import Config
from engine.monitor import Dumper
from netns import ROOT
from packets import ipv4, udp

DEVICE = f"flt{os.getpid() % 100000}"


def start(tmp_path, *args, stderr=subprocess.PIPE):
    src = tmp_path / "in.pcap"
    pcap.write_frames(str(src), [ipv4("198.18.0.1", "198.18.0.7", udp(9, 7, b"x"))] * 30)
    p = subprocess.Popen([sys.executable, "-m", "engine", "--driver", "memory", "--device",
                          DEVICE, "--replay", str(src), "--replay-hold", "--duration", "120",
                          "--address", "198.18.0.1/24", "--workers", "1", *args],
                         cwd=ROOT, stderr=stderr, text=True)
    deadline = time.time() + 60  # a bound, far above what start-up and the replay take
    while not replayed():
        assert p.poll() is None and time.time() < deadline, "the engine did not replay"
        time.sleep(0.1)
    return p


def replayed() -> bool:
    """The engine under test has read and written its 30 frames (its own stats tool)."""
    q = subprocess.run([sys.executable, "-m", "engine", "stats", "--device", DEVICE, "--json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=30)
    if q.returncode:
        return False
    t = json.loads(q.stdout)["totals"]
    return t["rx_frames"] == 30 and t["tx_frames"] == 30


def segments():
    return glob.glob(f"/dev/shm/engine.{DEVICE}.*")


# ------------------------------------------------------------------ full disk
def test_pcap_write_error_stops_the_capture_not_the_mirror(tmp_path, caplog):
    """/dev/full answers every write with ENOSPC, as a full filesystem does."""
    cap, fd = Capture.create(str(tmp_path / "c.pcap"), 100)
    os.close(fd)
    count, ended = (memoryview(bytearray(8)).cast("Q") for _ in range(2))
    writer = cap.open(count, ended)
    os.close(writer._fd)
    writer._fd = os.open("/dev/full", os.O_WRONLY)
    frame = memoryview(bytearray(ipv4("198.18.0.1", "198.18.0.7", udp(9, 7, b"x"))))
    with caplog.at_level(logging.WARNING, logger="engine"):
        writer.frames([frame], [len(frame)])
        writer.frames([frame], [len(frame)])     # the capture has ended: no second warning
    assert ended[0] == 1 and count[0] == 0, "the shared word ends it for every actor"
    assert [r.message for r in caplog.records].count(
        f"--pcap {cap.path}: No space left on device; capture stopped, the mirror goes on") == 1
    os.close(writer._fd)


def test_stats_file_full_at_exit_is_one_warning(tmp_path, caplog):
    cfg = Config(device=DEVICE, driver="memory", stats_file=str(tmp_path / "s.jsonl"))
    layout = shm.Layout(1, 64, 128, 16)   # the segments of an engine that did nothing
    mapped = shm.Mapped(layout, bytearray(layout.pool_bytes), bytearray(layout.ctl_bytes))
    d = Dumper(cfg, mapped, 1, stream=io.StringIO())
    d._file.close()
    d._file = open("/dev/full", "a", buffering=1 << 16, encoding="utf-8")  # fails at close
    with caplog.at_level(logging.WARNING, logger="engine"):
        d.final()
    assert any("stats lines are being lost" in r.message for r in caplog.records)


# ------------------------------------------------------------------ signals
@pytest.mark.parametrize("sig", ["SIGHUP", "SIGQUIT"])
def test_hangup_and_quit_stop_cleanly(tmp_path, sig):
    p = start(tmp_path)
    p.send_signal(getattr(signal, sig))
    err = p.communicate(timeout=30)[1]
    assert p.returncode == 0, err
    assert f"stopping: {sig}" in err and "read 30 frames, wrote 30" in err, err
    assert segments() == [], "shared memory left behind"


def dumped(path, times: int = 1) -> bool:
    """As many stats dumps asked for by SIGUSR1 are in the --stats-file."""
    return path.exists() and path.read_text().replace(" ", "").count('"event":"signal"') >= times


def wait_for(cond, what: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout   # a bound, not a pace
    while not cond():
        assert time.time() < deadline, what
        time.sleep(0.05)


def test_usr2_and_alrm_are_ignored(tmp_path):
    """Their default action ends a process: after them, the engine still answers a stats
    request (SIGUSR1), which shows it handled them and lived."""
    stats = tmp_path / "stats.jsonl"
    p = start(tmp_path, "--stats-file", str(stats))
    try:
        p.send_signal(signal.SIGUSR2)
        p.send_signal(signal.SIGALRM)
        p.send_signal(signal.SIGUSR1)
        wait_for(lambda: dumped(stats) or p.poll() is not None, "no stats dump")
        assert p.poll() is None and dumped(stats), p.communicate(timeout=10)[1]
    finally:
        p.send_signal(signal.SIGTERM)
        err = p.communicate(timeout=30)[1]
    assert p.returncode == 0 and segments() == [], err


def test_stats_request_with_stderr_closed_does_not_stop_the_engine(tmp_path):
    """`python -m engine ... 2>&1 | head -3`: head has exited, stderr is a broken pipe.
    The dump's JSON line (--stats-file) is written after the table is tried on stderr."""
    stats = tmp_path / "stats.jsonl"
    r, w = os.pipe()
    p = start(tmp_path, "--stats-file", str(stats), stderr=w)
    os.close(w)
    os.close(r)                             # the reader of stderr is gone
    try:
        p.send_signal(signal.SIGUSR1)       # the table goes to stderr: EPIPE
        wait_for(lambda: dumped(stats) or p.poll() is not None, "no stats dump")
        p.send_signal(signal.SIGUSR1)       # and once more, after the failed one
        wait_for(lambda: dumped(stats, 2) or p.poll() is not None, "no second dump")
        assert p.poll() is None, f"the engine died with {p.returncode}"
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(30)
    assert p.returncode == 0 and segments() == []


# ------------------------------------------------------------------ small /dev/shm
@pytest.mark.privileged
def test_a_dev_shm_smaller_than_the_pool_is_one_line_at_start(tmp_path):
    """A 4 MiB /dev/shm (in a mount namespace of the test's own) for an 8 MiB pool: the
    engine says so and exits 1 at start, instead of faulting in a child later."""
    src = tmp_path / "in.pcap"
    pcap.write_frames(str(src), [ipv4("198.18.0.1", "198.18.0.7", udp(9, 7, b"x"))] * 5)
    engine = (f"{sys.executable} -m engine --driver memory --device {DEVICE} --replay {src} "
              f"--address 198.18.0.1/24 --workers 1 --pool-mib 8")
    p = subprocess.run(["unshare", "-m", "sh", "-c",
                        f"mount -t tmpfs -o size=4m tmpfs /dev/shm && exec {engine}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith(
        f"engine: error: not enough shared memory for /dev/shm/engine.{DEVICE}."), p.stderr
    assert "(need 8.0 MiB, " in p.stderr and "MiB free; a smaller --pool-mib" in p.stderr


# ------------------------------------------------------------------ the demo interrupted
@pytest.mark.privileged
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_demo_interrupted_leaves_no_shared_memory(sig):
    """Stopped the moment its engine is ready: the demo stops the engine with SIGTERM (which
    unlinks its segments) before it deletes the namespace their names come from."""
    before = set(glob.glob("/dev/shm/engine.mirror0.*"))
    p = subprocess.Popen([sys.executable, "-m", "engine", "demo"], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out = []
        for line in p.stdout:  # bounded by the demo's own start-up (the engine's 30 s)
            out.append(line)
            if "engine: ready" in line:
                break
        assert any("engine: ready" in ln for ln in out), "".join(out)
        p.send_signal(sig)
        rest = p.communicate(timeout=30)[0]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    assert p.returncode == 0 and "Traceback" not in rest, rest
    assert "removed" in rest, rest
    assert set(glob.glob("/dev/shm/engine.mirror0.*")) - before == set(), "segments left"


# ------------------------------------------------------------------ one name, one engine
def test_a_second_engine_under_the_same_name_leaves_the_first_alone(tmp_path):
    """Memory-driver runs have no device to be busy: the first run's lock on its control
    segment is what keeps a second one from reclaiming (unlinking) it."""
    first = start(tmp_path)
    try:
        before = {s: os.stat(s).st_ino for s in segments()}
        second = subprocess.run([sys.executable, "-m", "engine", "--driver", "memory",
                                 "--device", DEVICE, "--duration", "1"], cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 1, second.stderr
        assert second.stderr.strip().splitlines()[-1].startswith(
            "engine: error: an engine already runs under the shared-memory name"), second.stderr
        assert {s: os.stat(s).st_ino for s in segments()} == before
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGTERM)
        err = first.communicate(timeout=30)[1]
    assert first.returncode == 0 and "read 30 frames, wrote 30" in err, err


def test_the_memory_driver_has_a_name_of_its_own():
    p = subprocess.run([sys.executable, "-m", "engine", "--driver", "memory", "--duration",
                        "0.5"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and " on memory0 " in p.stderr, p.stderr


# ------------------------------------------------------------------ the device deleted
@pytest.mark.privileged
def test_the_device_deleted_under_the_engine_is_one_line_and_a_clean_stop():
    """`ip link del` of the engine's device: reads fail (EBADFD). The engine says so once,
    restarts nothing, and its workers drain and stop in time (none is killed)."""
    from netns import Engine, Netns
    ns = Netns()
    try:
        eng = Engine(ns, "--workers", "2", "--address", "198.18.0.1/24")
        ns.sh("ip link del mir0")
        eng.proc.wait(30)
        eng._reader.join(2)
        assert eng.proc.returncode == 1, eng.log
        assert "engine: stopping: error: device mir0 went away" in eng.log, eng.log
        assert "restarting it" not in eng.log and "Traceback" not in eng.log, eng.log
        assert "did not stop in time" not in eng.log, eng.log
        assert ns.shm_segments("mir0") == []
    finally:
        ns.close()


@pytest.mark.privileged
def test_a_multi_queue_device_is_refused_by_name():
    from netns import Netns
    ns = Netns()
    try:
        ns.sh("ip tuntap add dev mq0 mode tun multi_queue")
        p = ns.run(sys.executable, "-m", "engine", "--device", "mq0", "--workers", "1",
                   timeout=60)
        assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
        last = p.stderr.strip().splitlines()[-1]
        assert "device mq0 is multi-queue" in last and "ip tuntap add dev mq0 mode tun" in last
    finally:
        ns.close()


# ------------------------------------------------------------------ the forkserver killed
@pytest.mark.privileged
def test_two_forkserver_deaths_are_two_restarts_not_twelve():
    """Killing the forkserver takes every actor with it (PR_SET_PDEATHSIG). Twice within
    10 s, with 4 workers, is 12 actors restarted but 2 incidents: under the limit."""
    import psutil
    from netns import Engine, Netns
    ns = Netns()
    try:
        eng = Engine(ns, "--workers", "4", "--address", "198.18.0.1/24")
        sup = psutil.Process(eng.proc.pid)
        for round_ in range(2):
            server = next(p for p in sup.children() if "forkserver" in " ".join(p.cmdline()))
            actors = server.children()
            assert len(actors) == 6, actors
            server.kill()
            deadline = time.time() + 30   # a bound: the restarts take well under a second
            while time.time() < deadline:
                now = {p.pid for p in sup.children(recursive=True)}
                if eng.log.count("restarting it") == 6 * (round_ + 1) and not (
                        {a.pid for a in actors} & now):
                    break
                time.sleep(0.1)
            assert eng.log.count("restarting it") == 6 * (round_ + 1), eng.log
        assert eng.log.count("the forkserver (pid") == 2, eng.log
        p = ns.run("ping", "-c", "3", "-i", "0.1", "-W", "2", "198.18.0.5")
        assert p.returncode == 0, p.stdout
        assert eng.proc.poll() is None, eng.log
        code, _ = eng.stop()
        assert code == 0, eng.log
    finally:
        ns.close()


def _hold_name_slowly(prefix, q):
    """A run that pauses between taking its name and making its pool (where a second run
    used to slip in and unlink it), then reports whether its segments are still its own."""
    from engine import platform, shm
    unlink = platform.unlink_segment
    platform.unlink_segment = lambda name: (time.sleep(1.0), unlink(name))[1]
    s = shm.Segments(prefix, shm.Layout(1, 64, 128, 16))
    time.sleep(1.5)
    same = [os.fstat(seg._fd).st_ino == os.stat(f"/dev/shm/{seg.name}").st_ino
            for seg in (s._pool, s._ctl)]
    s.unlink()
    q.put(same)


def test_a_second_run_starting_meanwhile_cannot_take_the_name():
    import multiprocessing
    from engine import shm
    from engine.errors import EngineError
    prefix = f"engine.race{os.getpid()}.0"
    mp = multiprocessing.get_context("fork")
    q = mp.Queue()
    first = mp.Process(target=_hold_name_slowly, args=(prefix, q))
    first.start()
    try:
        deadline = time.time() + 30
        while not os.path.exists(f"/dev/shm/{prefix}.ctl"):   # the first has its name
            assert time.time() < deadline and first.is_alive()
            time.sleep(0.01)
        with pytest.raises(EngineError, match="already runs under the shared-memory name"):
            shm.Segments(prefix, shm.Layout(1, 64, 128, 16))
        assert q.get(timeout=30) == [True, True]
    finally:
        first.join(30)
    assert not glob.glob(f"/dev/shm/{prefix}.*")


def test_a_pcap_replaced_under_the_engine_ends_the_capture_not_the_actor(tmp_path, caplog):
    """An actor reopens the file the supervisor made; if the path now names another file
    (replaced by whoever controls the directory), capturing stops, with one warning."""
    import types
    from engine import actor
    cap, fd = Capture.create(str(tmp_path / "c.pcap"), 100)
    os.close(fd)
    os.unlink(cap.path)
    (tmp_path / "other").write_bytes(b"not ours")
    (tmp_path / "c.pcap").symlink_to(tmp_path / "other")
    layout = shm.Layout(1, 64, 128, 16)
    m = shm.Mapped(layout, bytearray(layout.pool_bytes), bytearray(layout.ctl_bytes))
    with caplog.at_level(logging.WARNING, logger="engine"):
        assert actor.open_capture(types.SimpleNamespace(capture=cap), m) is None
    assert m.ctl[journal.CAPTURE_ENDED] == 1
    assert [r.message for r in caplog.records if "capture stopped" in r.message], caplog.records
    assert (tmp_path / "other").read_bytes() == b"not ours"


@pytest.mark.privileged
def test_an_unwritable_stats_file_is_refused_before_the_device_is_made():
    from netns import Netns
    ns = Netns()
    try:
        p = ns.run(sys.executable, "-m", "engine", "--device", "mir0", "--address",
                   "198.18.0.1/24", "--stats-file", "/nonexistent/dir/s.jsonl", timeout=60)
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
        assert "--stats-file /nonexistent/dir/s.jsonl" in p.stderr.strip().splitlines()[-1]
        assert ns.links() == ["lo"], "nothing is made before the arguments are checked"
    finally:
        ns.close()


# ------------------------------------------------------------------ a large pool
def test_a_large_pool_costs_each_process_its_mapping_only(tmp_path):
    """512 MiB of 1536-byte slots (349,525 of them): no process holds per-slot Python
    objects (a view per slot cost each process about 68 MiB of its own at this size; the
    reader's free-slot stack is 4 bytes a slot), so each stays far under 40 MiB."""
    import psutil
    p = subprocess.Popen([sys.executable, "-m", "engine", "--driver", "memory", "--device",
                          DEVICE, "--no-offload", "--pool-mib", "512", "--workers", "2",
                          "--duration", "120"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        for line in p.stderr:   # bounded by --duration
            if "engine: ready:" in line or "error" in line:
                break
        assert "engine: ready:" in line, line
        pids = [int(x) for x in line.split("ready:")[1].replace(",", " ").split()[1::2]]
        own = {pid: psutil.Process(pid).memory_full_info().uss >> 20 for pid in pids}
        assert max(own.values()) < 40, f"private MiB per process: {own}"
    finally:
        p.terminate()
        p.wait(30)
    assert p.returncode == 0
