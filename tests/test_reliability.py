"""Issue 4: reliability and security of the engine on a real TUN device, each test in a
namespace of its own (198.18.0.0/15 and 2001:db8::/32 only; no route out).

- supervised restarts: SIGKILL a worker, the reader or the writer every 0.5 s, 10 times,
  during a TCP stream; afterwards the stream is intact, pings work, every actor
  runs again, the counters add up, and the whole pool is still usable (no slot leaked or
  duplicated: see `assert_pool_whole`); more than 10 restarts in 10 s stop the engine with
  a clear error.
- shutdown: SIGINT/SIGTERM under load and at the moment the engine has just created its
  shared memory exit 0 within 2 s leaving no segment, no process, no device; Ctrl-C (the
  whole process group); SIGKILL of the whole engine leaves segments the next start
  reclaims; SIGKILL of the supervisor alone must not leave its children holding the device.
- the mirror filter end to end: multicast, network address, a non-mirror IPv6 prefix, and
  10,000+ malformed / foreign frames injected with an AF_PACKET socket during a transfer:
  the engine stays up, nothing malformed comes out, every frame is accounted for by reason.
"""
import json
import os
import random
import signal
import subprocess
import time

import psutil
import pytest

from netns import PY, ROOT, Engine, Netns
from probe import Probe, alive, engine_tree, stats_quiescent, wait_until

pytestmark = pytest.mark.privileged
ADDR = ("--address", "198.18.0.1/24", "--address6", "2001:db8::1/64")
INJECT = os.path.join(ROOT, "tests", "inject.py")
MIB = 1 << 20
SEED = 20260604
# Every frame through reader -> worker -> writer. By default (--inline auto) a machine with
# fewer than 4 CPUs, like the 2-core test VM, has the reader mirror and write nearly
# everything itself, and killing a worker or the writer would test little.
PIPELINE = ("--inline", "never")


def ns_pids(ns: Netns) -> set:
    out = subprocess.run(["ip", "netns", "pids", ns.name], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def ping(ns: Netns, dst: str = "198.18.0.5", count: int = 3) -> subprocess.CompletedProcess:
    return ns.run("ping", *(["-6"] if ":" in dst else []), "-c", str(count), "-i", "0.1",
                  "-W", "2", dst)


def tcp(ns: Netns, size: int = 64 * MIB, port: int = 8080, peer: str = "198.18.0.9",
        timeout: float = 60) -> subprocess.Popen:
    """A transfer of `size` bytes: for a check afterwards, never as a load *during*
    something (how long it lasts depends on the machine: use Stream)."""
    return ns.popen(PY, INJECT, "tcp", "--peer", peer, "--port", str(port), "--size", str(size),
                    "--timeout", str(timeout))


def result(proc: subprocess.Popen, timeout: float = 70) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0 and out.strip(), err[-1500:]
    return json.loads(out.strip().splitlines()[-1])


class Stream:
    """A TCP stream through the mirror (tests/inject.py stream) that runs until stop(), so
    it is running at the moment a test acts, on a machine of any speed. Construction
    returns once data flows (bounded by the stream's --stall)."""

    def __init__(self, ns: Netns, port: int = 8080, peer: str = "198.18.0.9",
                 mbps: float = 0, bound: float = 600) -> None:
        self.proc = ns.popen(PY, INJECT, "stream", "--peer", peer, "--port", str(port),
                             "--mbps", str(mbps), "--seconds", str(bound),
                             stdin=subprocess.PIPE)
        first = self.proc.stdout.readline()
        if '"streaming"' not in first:  # it ended without data: the summary says why
            self.proc.wait(10)
            raise AssertionError(f"the stream did not start: {first} {self.proc.stderr.read()}")

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, context: str = "") -> dict:
        """Ends the stream (communicate() closes its stdin); its summary, which must show
        every byte right."""
        r = result(self.proc)
        assert r["ok"] and r["stopped_by"] == "stdin", f"stream: {r}; {context}"
        return r


def assert_counters_add_up(ns: Netns) -> dict:
    """`python -m engine stats --json` at a quiescent moment: rx == tx + dropped, in frames
    and in bytes."""
    out = stats_quiescent(ns)
    t = out["totals"]
    assert t["in_flight"] == 0 and t["rx_frames"] == t["tx_frames"] + t["dropped"], t
    assert t["rx_bytes"] == t["tx_bytes"] + t["dropped_bytes"], t
    return out


def assert_pool_whole(ns: Netns, pr: Probe) -> None:
    """Every pool slot is usable, and none is in circulation twice.

    With the writer stopped (SIGSTOP) nothing returns to the reader, so it reads until it
    has no free slot left and then waits; the rx and tx rings together have room for more
    than the pool (they are sized from it), so the pool is the limit. A burst of
    pool + 300 datagrams is queued in the device while the reader is stopped too, so it
    then reads full batches (the engine runs with --inline never: nothing bypasses the
    stopped writer). Once the reader runs
    again the rings must hold exactly `pool_frames` descriptors: fewer means slots leaked
    (held by no one after a restart), more means a slot was handed out twice. Then the writer
    resumes and every datagram comes back."""
    writer, reader = pr.actor_pid("writer"), pr.actor_pid("reader")
    L = pr.layout
    assert 2 * L.rx_capacity * L.workers > L.pool_frames, "test needs rings wider than the pool"
    assert L.pool_frames + 300 < 2048, "the burst must fit the device queue (txqueuelen 2048)"
    os.kill(writer, signal.SIGSTOP)
    try:
        os.kill(reader, signal.SIGSTOP)
        try:
            burst = ns.popen(PY, INJECT, "burst", "--count", str(L.pool_frames + 300),
                             "--timeout", "25")
            assert "sent" in burst.stdout.readline()
        finally:
            os.kill(reader, signal.SIGCONT)
        last, stable = None, 0
        deadline = time.time() + 10
        while time.time() < deadline and stable < 3:
            time.sleep(0.15)
            rings = pr.rings()
            cur = sum(v for k, v in rings.items() if k != "free")
            stable = stable + 1 if cur == last else 0
            last = cur
        totals = pr.totals()
    finally:
        os.kill(writer, signal.SIGCONT)
    got = result(burst, 40)
    # slots held in the rings (a frame a worker dropped still holds its slot, as a length-0
    # descriptor in tx, until the writer returns it): the counters' in_flight may be lower
    assert last == L.pool_frames and rings["free"] == 0, (
        f"{last} slots in the rings with the writer stopped, the pool has {L.pool_frames}; "
        f"rings {rings}, counters {totals}")
    assert got["received"] == got["sent"], got


def start_engine(ns: Netns, *extra: str, workers: int = 2) -> Engine:
    return Engine(ns, "--workers", str(workers), *ADDR, *extra)


# ------------------------------------------------------------------ supervised restarts
@pytest.mark.parametrize("role", ["worker", "reader", "writer"])
def test_sigkill_actor_every_half_second_during_transfer(role):
    """10 SIGKILLs, at least 0.5 s apart (at most 10 restarts in 10 s: at, not over, the
    limit, however slow the machine), while a TCP stream runs until the test stops it;
    every frame through the pipeline (--inline never), small frames (no offload) and a
    small pool, so kills land mid-batch and the pool is exhausted often."""
    ns = Netns()
    rnd = random.Random(SEED)
    try:
        eng = start_engine(ns, *PIPELINE, "--no-offload", "--pool-mib", "2")
        pr = Probe(ns)
        roles = ["worker0", "worker1"] if role == "worker" else [role]
        procs_before = ns_pids(ns)
        xfer = Stream(ns)
        killed = []
        for _ in range(10):
            t0 = time.time()
            name = rnd.choice(roles)
            pid = pr.actor_pid(name)
            assert psutil.pid_exists(pid), f"{name} pid {pid} is not running"
            os.kill(pid, signal.SIGKILL)
            killed.append((name, pid))
            pr.wait_replaced(name, pid, timeout=5)
            time.sleep(max(0.0, 0.5 - (time.time() - t0)))
        assert xfer.running(), f"the stream ended during the kills: {result(xfer.proc)}"
        assert eng.proc.poll() is None, eng.log
        xfer.stop(f"killed {killed}; engine now: {pr.totals()}, rings {pr.rings()}")

        p = ping(ns)
        assert p.returncode == 0 and " 0% packet loss" in p.stdout, p.stdout + p.stderr
        out = stats_quiescent(ns)
        assert set(out["procs"]) == {"supervisor", "reader", "worker0", "worker1", "writer"}
        assert not {pid for _, pid in killed} & {p["pid"] for p in out["procs"].values()}
        assert len(ns_pids(ns)) == len(procs_before), (procs_before, ns_pids(ns))
        restarts = sum(c["restarts"] for c in out["counters"].values())
        assert restarts == 10, out["counters"]
        assert eng.log.count("restarting it") == 10, eng.log

        assert_pool_whole(ns, pr)                      # no slot lost or doubled
        assert_counters_add_up(ns)                     # no frame unaccounted for
        r = result(tcp(ns, 64 * MIB, port=8081))       # 44,000+ frames through 1365 slots
        assert r["ok"], r
        assert_counters_add_up(ns)
        pr.close()
        code, took = eng.stop()
        assert code == 0 and took < 2.0, eng.log
        rx, tx, dropped, _ = eng.counters()
        assert rx == tx + dropped, eng.log[-600:]
        b_rx, b_tx, b_dropped = eng.byte_counters()
        assert b_rx == b_tx + b_dropped, eng.log[-600:]
    finally:
        ns.close()


def test_pool_probe_on_a_fresh_engine():
    """The pool check of the restart tests holds on an engine nothing happened to (so a
    failure there is the restarts' doing), with and without offload."""
    for extra in (("--no-offload", "--pool-mib", "2"), ("--pool-mib", "19")):
        ns = Netns()
        try:
            eng = start_engine(ns, *PIPELINE, *extra)
            pr = Probe(ns)
            assert_pool_whole(ns, pr)
            assert_counters_add_up(ns)
            pr.close()
            assert eng.stop()[0] == 0
        finally:
            ns.close()


def test_restart_limit_stops_the_engine_with_a_clear_error():
    """More than 10 restarts within 10 s: the engine stops (exit 1) instead of looping, says
    why, and leaves nothing behind."""
    ns = Netns()
    try:
        eng = start_engine(ns)
        pr = Probe(ns)
        tree = engine_tree(eng.proc.pid)
        segments = ns.shm_segments("mir0")
        t0 = time.time()
        for k in range(11):
            pid = pr.actor_pid("worker0")
            tree += [psutil.Process(pid)]
            os.kill(pid, signal.SIGKILL)
            if k < 10:
                pr.wait_replaced("worker0", pid, timeout=3)
        # The limit is the engine's own (over 10 restarts in 10 s), so the 11 kills must land
        # inside one window: each waits only for a fork from the forkserver, so 9 s leaves
        # room for a machine many times slower than the test VM.
        assert time.time() - t0 < 9, "kills too slow to test the limit"
        eng.proc.wait(5)
        eng._reader.join(2)
        assert eng.proc.returncode == 1, eng.log
        assert "error: 11 restarts within 10 s (last: worker0" in eng.log, eng.log
        assert eng.log.count("restarting it") == 10, eng.log
        assert wait_until(lambda: not alive(tree), 2), [p.pid for p in alive(tree)]
        assert not any(os.path.exists(s) for s in segments), "shared memory left behind"
        assert ns.links() == ["lo"]
        pr.close()
    finally:
        ns.close()


# ------------------------------------------------------------------ shutdown and leftovers
def assert_nothing_left(ns: Netns, tree, segments) -> None:
    assert wait_until(lambda: not alive(tree), 1.0), \
        f"processes left: {[(p.pid, p.cmdline()) for p in alive(tree)]}"
    assert not [s for s in segments if os.path.exists(s)] and ns.shm_segments("mir0") == [], \
        f"shared memory left: {ns.shm_segments('mir0')}"
    assert ns.links() == ["lo"], ns.links()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_under_load_exits_clean(sig):
    """A signal to the supervisor at three moments of a loaded run (TCP at full speed, a
    ping flood, malformed frames), counted from when the stream's data flows: exit 0
    within 2 s, nothing left. The stream and the flood run until the namespace goes (and
    are checked to be running); the malformed frames are extra, and may be over."""
    for delay in (0.1, 0.7, 1.6):
        ns = Netns()
        try:
            eng = start_engine(ns)
            tree = engine_tree(eng.proc.pid)
            segments = ns.shm_segments("mir0")
            flood = ns.popen("ping", "-f", "-w", "120", "198.18.0.5")
            ns.popen(PY, INJECT, "inject", "--count", "3000", "--pause", "0.002")
            stream = Stream(ns)
            time.sleep(delay)
            assert stream.running() and flood.poll() is None, "the load is not running"
            code, took = eng.stop(sig)
            assert code == 0 and took < 2.0, (delay, code, took, eng.log[-1500:])
            assert_nothing_left(ns, tree, segments)
        finally:
            ns.close()


class GroupEngine(Engine):
    """The engine as the leader of its own process group, as a shell runs it, so that the
    test can send what Ctrl-C sends: SIGINT to the whole group."""

    def __init__(self, ns: Netns, *args: str, device: str = "mir0") -> None:
        real = ns.popen

        def popen(*cmd, **kw):
            ns.popen = real
            return real("setsid", *cmd, **kw)  # not a group leader yet: setsid just execs

        ns.popen = popen
        super().__init__(ns, *args, device=device)


def test_ctrl_c_to_the_process_group_under_load():
    ns = Netns()
    try:
        eng = GroupEngine(ns, "--workers", "2", *ADDR)
        assert os.getpgid(eng.proc.pid) == eng.proc.pid
        tree = engine_tree(eng.proc.pid)
        segments = ns.shm_segments("mir0")
        xfer = Stream(ns)
        assert xfer.running()
        os.killpg(eng.proc.pid, signal.SIGINT)
        t0 = time.time()
        eng.proc.wait(5)
        took = time.time() - t0
        eng._reader.join(2)
        assert eng.proc.returncode == 0 and took < 2.0, (took, eng.log[-1500:])
        assert "Traceback" not in eng.log, eng.log
        assert_nothing_left(ns, tree, segments)
    finally:
        ns.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_right_after_shared_memory_is_created(sig):
    """'At any moment' includes start-up: the signal arrives the instant the engine's
    segments appear in /dev/shm (before it has started a child). It must still exit 0
    within 2 s and unlink them."""
    ns = Netns()
    try:
        ino = os.stat(f"/run/netns/{ns.name}").st_ino
        ctl = f"/dev/shm/engine.mir0.{ino}.ctl"
        proc = ns.popen(PY, "-m", "engine", "--device", "mir0", "--workers", "2", *ADDR)
        deadline = time.time() + 20
        while not os.path.exists(ctl) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.0005)
        proc.send_signal(sig)
        t0 = time.time()
        assert os.path.exists(ctl), proc.communicate(timeout=5)
        tree = engine_tree(proc.pid)
        _, err = proc.communicate(timeout=10)
        took = time.time() - t0
        assert proc.returncode == 0 and took < 2.0, (proc.returncode, took, err[-1500:])
        assert "Traceback" not in err, err
        assert_nothing_left(ns, tree, [ctl])
        assert wait_until(lambda: not ns_pids(ns), 1.0), ns_pids(ns)
    finally:
        ns.close()


def test_sigkill_of_the_whole_engine_leaves_segments_the_next_start_reclaims():
    ns = Netns()
    try:
        eng = start_engine(ns)
        assert ping(ns).returncode == 0
        tree = engine_tree(eng.proc.pid)
        old = {s: os.stat(s).st_ino for s in ns.shm_segments("mir0")}
        assert len(old) == 2
        for p in tree:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        assert wait_until(lambda: not alive(tree), 3)
        eng.proc.wait(2)
        assert sorted(old) == ns.shm_segments("mir0"), "a crashed run leaves its segments"
        assert wait_until(lambda: ns.links() == ["lo"], 3), "the created device went with it"

        eng2 = start_engine(ns)                           # reclaims them at start
        new = {s: os.stat(s).st_ino for s in ns.shm_segments("mir0")}
        # the pool is made anew; the control segment is taken over in place (locked, then
        # emptied), and now names the new supervisor
        pool = next(s for s in new if s.endswith(".pool"))
        assert sorted(new) == sorted(old) and new[pool] != old[pool], (old, new)
        pr = Probe(ns)
        assert pr.pids()["supervisor"] == eng2.proc.pid
        pr.close()
        assert ping(ns).returncode == 0
        assert_counters_add_up(ns)
        tree2 = engine_tree(eng2.proc.pid)
        code, took = eng2.stop()
        assert code == 0 and took < 2.0, eng2.log
        assert_nothing_left(ns, tree2, list(new))
    finally:
        ns.close()


def test_sigkill_of_the_supervisor_alone_does_not_leave_the_device_held():
    """The supervisor holds the device, the children hold copies of its descriptor. If the
    supervisor is SIGKILLed, its children must not outlive it (they would hold the device
    busy, with nobody to stop or restart them): within a few seconds they are gone and a
    new engine starts on the device."""
    ns = Netns()
    try:
        eng = start_engine(ns)
        tree = engine_tree(eng.proc.pid)
        os.kill(eng.proc.pid, signal.SIGKILL)
        eng.proc.wait(2)
        gone = wait_until(lambda: not alive(tree[1:]), 5)
        left = [(p.pid, " ".join(p.cmdline())[-60:]) for p in alive(tree[1:])]
        second = ns.run(PY, "-m", "engine", "--device", "mir0", "--workers", "2", *ADDR,
                        "--duration", "1", timeout=30)
        assert gone, f"children of the killed supervisor still run: {left}; a new engine: " \
                     f"{second.stderr.strip()}"
        assert second.returncode == 0, second.stderr
    finally:
        ns.close()


# ------------------------------------------------------------------ the mirror filter
def test_mirror_filter_end_to_end():
    """Routed into the device but not to be reflected: multicast (IPv4, IPv6), the
    network address, a non-mirror IPv6 prefix. No answer, nothing written back by the
    engine (an AF_PACKET capture on the device checks every frame it writes), and the
    frames are counted as not_mirrored."""
    ns = Netns()
    try:
        start_engine(ns)
        ns.sh("ip route replace 224.0.0.0/4 dev mir0")
        ns.sh("ip -6 route replace 2001:db8:1::/64 dev mir0")
        # the namespace's own stack must not answer multicast pings itself (IPv4 ignores
        # them by default, IPv6 does not): only the engine could answer, and must not
        ns.sh("sysctl -q -w net.ipv6.icmp.echo_ignore_multicast=1")
        before = stats_quiescent(ns)["totals"]["drops"]["not_mirrored"]
        cap = ns.popen(PY, INJECT, "capture", stdin=subprocess.PIPE)
        assert "capturing" in cap.stdout.readline()
        sent = 0
        for args in (["-c", "3", "224.0.0.1"], ["-c", "3", "239.1.2.3"],
                     ["-b", "-c", "3", "198.18.0.0"],
                     ["-6", "-c", "3", "2001:db8:1::5"],
                     ["-6", "-c", "3", "-I", "mir0", "ff02::1"],
                     ["-6", "-c", "3", "-I", "mir0", "ff0e::1:5"]):
            p = ns.run("ping", "-i", "0.1", "-W", "1", *args)
            assert " 0 received" in p.stdout, (args, p.stdout, p.stderr)
            sent += 3
        p = ping(ns, "198.18.0.5", 2)                   # and the mirror itself still works
        assert p.returncode == 0, p.stdout
        cap.stdin.close()
        c = json.loads(cap.stdout.read().strip().splitlines()[-1])
        assert c["bad"] == 0, c
        assert c["frames"] >= 2 and c["v4"] >= 2, c    # the two echo replies, nothing else odd
        after = assert_counters_add_up(ns)["totals"]["drops"]["not_mirrored"]
        assert after - before >= sent, (before, after, sent)
    finally:
        ns.close()


@pytest.mark.parametrize("offload", [True, False], ids=["offload", "no-offload"])
def test_injected_malformed_frames_during_transfer(offload):
    """12,000 frames of every bad kind (DESIGN.md §2.3-4; tests/inject.py, fixed seed)
    plus 50 valid control frames, injected into the device with an AF_PACKET socket while
    a TCP stream runs (until after the injection; at 200 Mbit/s at most, so that the
    device queue has room for the 50 controls, which are counted exactly): the engine
    stays up, the stream is intact, every frame the
    engine writes is a well-formed packet from a mirror peer to the device (none of the
    injected bad ones, all the controls), and the drops by reason match what was sent."""
    ns = Netns()
    try:
        eng = start_engine(ns, *(() if offload else ("--no-offload",)))
        pr = Probe(ns)
        base = stats_quiescent(ns)["totals"]
        cap = ns.popen(PY, INJECT, "capture", stdin=subprocess.PIPE)
        assert "capturing" in cap.stdout.readline()
        xfer = Stream(ns, mbps=200)
        inj = ns.run(PY, INJECT, "inject", "--count", "12000", "--controls", "50",
                     "--seed", str(SEED), timeout=120)
        assert inj.returncode == 0, inj.stderr
        sent = json.loads(inj.stdout)
        assert sent["sent"] == 12050 and sent["refused"] == 0, sent
        assert xfer.running(), "the stream ended during the injection"
        xfer.stop()
        assert eng.proc.poll() is None, eng.log
        assert ping(ns).returncode == 0
        end = assert_counters_add_up(ns)["totals"]
        cap.stdin.close()
        c = json.loads(cap.stdout.read().strip().splitlines()[-1])

        assert c["bad"] == 0 and c["marked_bad"] == 0, c
        assert c["truncated"] == 0, c
        assert c["marked_good"] == 50, c
        got = {k: end["drops"][k] - base["drops"][k] for k in end["drops"]}
        lost = got["ring_full"] + max(0, sent["device_tx_dropped"])
        for reason in ("not_ip", "malformed", "bad_checksum"):
            # nothing else in this namespace makes such frames: exact, unless the engine
            # (ring_full) or the kernel (device queue) dropped some before validation
            want = sent["expected"][reason]
            assert want - lost <= got[reason] <= want, (reason, got, sent, lost)
        assert got["not_mirrored"] >= sent["expected"]["not_mirrored"] - lost, (got, sent)
        assert got["bad_vnet_hdr"] == got["too_big"] == got["write_error"] == 0, got
        pr.close()
        code, _ = eng.stop()
        assert code == 0, eng.log
    finally:
        ns.close()
