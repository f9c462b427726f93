"""`python -m engine stats` against a real engine on a kernel TUN device, in a namespace
made by the test (198.18.0.0/24 only; no route out): every engine process is reported
with its CPU and RSS, the counters add up once traffic is over, the tool leaves the
engine's shared memory alone, and without an engine it says so in one line."""
import json
import os
import subprocess
import time

import pytest

from engine import shm
from netns import PY, ROOT, Engine, Netns

pytestmark = pytest.mark.privileged
ADDR = ("--address", "198.18.0.1/24", "--address6", "2001:db8::1/64")
ROLES = {"supervisor", "reader", "worker0", "worker1", "writer"}


def stats_json(ns: Netns, device: str = "mir0") -> dict:
    p = ns.run(PY, "-m", "engine", "stats", "--device", device, "--json", timeout=20)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def quiescent(ns: Netns, tries: int = 5) -> dict:
    """A stats sample with nothing in flight (the kernel may send ND/MLD at any time)."""
    for _ in range(tries):
        out = stats_json(ns)
        if out["totals"]["in_flight"] == 0:
            return out
    return out


def test_stats_reports_every_process_and_counters_add_up():
    ns = Netns()
    try:
        eng = Engine(ns, "--workers", "2", *ADDR)
        p = ns.run("ping", "-c", "5", "-i", "0.05", "-W", "2", "198.18.0.5")
        assert p.returncode == 0, p.stdout + p.stderr
        ns.sh("ip route replace 198.19.0.0/24 dev mir0")        # routed in, not mirrored
        ns.run("ping", "-c", "2", "-i", "0.05", "-W", "1", "198.19.0.5")

        out = quiescent(ns)
        procs = out["procs"]
        assert set(procs) == ROLES
        assert procs["supervisor"]["pid"] == eng.proc.pid
        assert sorted(procs[r]["pid"] for r in ROLES - {"supervisor"}) == sorted(eng.children())
        for role, fig in procs.items():
            assert isinstance(fig["cpu_percent"], float) and fig["cpu_percent"] >= 0, role
            assert fig["rss"] > 1 << 20 and fig["fds"] > 0, role
        t = out["totals"]
        assert t["rx_frames"] == t["tx_frames"] + t["dropped"], t
        assert t["tx_frames"] >= 10 and t["drops"]["not_mirrored"] >= 2, t
        assert out["workers"] == 2 and set(out["rates"]["actors"]) == ROLES - {"supervisor"}

        segments = ns.shm_segments("mir0")
        assert len(segments) == 2, "the stats tool unlinked a segment"
        p = ns.run("ping", "-c", "1", "-W", "2", "198.18.0.6")   # the engine still works
        assert p.returncode == 0, p.stdout
        human = ns.run(PY, "-m", "engine", "stats", "--device", "mir0", timeout=20)
        assert human.returncode == 0 and "supervisor" in human.stdout, human.stderr

        # the engine's namespace is not ours: from the host, mir0 has no engine
        host = f"/dev/shm/{shm.shm_prefix('mir0')}.ctl"
        if not os.path.exists(host):  # unless someone runs one there
            p = subprocess.run([PY, "-m", "engine", "stats", "--device", "mir0"], cwd=ROOT,
                               capture_output=True, text=True, timeout=20)
            assert p.returncode == 1 and "no engine runs on device mir0" in p.stderr

        code, _ = eng.stop()
        assert code == 0, eng.log
        rx, tx, dropped, _ = eng.counters()
        assert rx == tx + dropped and rx >= t["rx_frames"]
        b_rx, b_tx, b_dropped = eng.byte_counters()
        assert b_rx == b_tx + b_dropped and b_rx >= t["rx_bytes"], eng.log
        assert ns.shm_segments("mir0") == []
    finally:
        ns.close()


def test_stats_without_an_engine_is_one_line():
    ns = Netns()
    try:
        ns.sh("ip tuntap add dev mir3 mode tun")   # a device, but no engine on it
        t0 = time.time()
        for device in ("mir3", "nothere0"):
            p = ns.run(PY, "-m", "engine", "stats", "--device", device, timeout=20)
            assert p.returncode == 1 and p.stdout == ""
            assert p.stderr == (f"engine: error: no engine runs on device {device} in this "
                                f"network namespace\n")
        assert time.time() - t0 < 10
    finally:
        ns.close()
