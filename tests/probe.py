"""Read-only look at a running engine from the test process (outside its namespace).

`python -m engine stats --json` is the public tool, but a one-shot report takes a second
(it samples rates), too slow to follow actors being killed every 0.5 s. This maps the same
control segment the same way (read-only mmap; engine/shm.py control_view), so the figures
are the engine's own: ready words (actor pids), counters, ring fills, layout.
"""
from __future__ import annotations

import json
import mmap
import os
import time

import psutil

from engine import monitor, shm, stats

from netns import PY, Netns


class Probe:
    def __init__(self, ns: Netns, device: str = "mir0", wait: float = 10.0) -> None:
        deadline = time.time() + wait
        while True:
            paths = [p for p in ns.shm_segments(device) if p.endswith(".ctl")]
            self.buf, self.view = _map_readonly(paths[0]) if paths else (None, None)
            if self.view is not None:
                break
            if time.time() > deadline:
                raise RuntimeError(f"no control segment for {device} in {ns.name}")
            time.sleep(0.05)
        self.path = paths[0]
        self.layout = self.view.layout
        self.workers = self.layout.workers
        self.pool_frames = self.layout.pool_frames

    def pids(self) -> dict:
        """role -> pid announced in shared memory (a killed actor's word stays until its
        successor overwrites it)."""
        return monitor.engine_pids(self.view, self.workers)

    def actor_pid(self, role: str) -> int:
        return self.pids()[role]

    def totals(self) -> dict:
        rows = self.view.counters.copy()
        t = stats.totals(rows, self.workers)
        t["restarts"] = int(rows[:, stats.F["restarts"]].sum())
        return t

    def rings(self) -> dict:
        r = {f"{e}{i}": getattr(self.view, e)(i).fill() for e in ("rx", "tx")
             for i in range(self.workers)}
        r["free"] = self.view.free().fill()
        return r

    def wait_replaced(self, role: str, old_pid: int, timeout: float = 10.0) -> int:
        """Wait until `role` runs under a new, live pid; returns it."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            pid = self.pids().get(role)
            if pid and pid != old_pid and psutil.pid_exists(pid):
                return pid
            time.sleep(0.01)
        raise AssertionError(f"{role} (pid {old_pid}) was not restarted within {timeout} s")

    def quiescent(self, timeout: float = 10.0, settle: float = 0.3) -> dict:
        """Totals once nothing is in flight and nothing moves for `settle` seconds."""
        deadline = time.time() + timeout
        last = self.totals()
        while time.time() < deadline:
            time.sleep(settle)
            cur = self.totals()
            if cur["in_flight"] == 0 and cur["rx_frames"] == last["rx_frames"]:
                return cur
            last = cur
        return last

    def close(self) -> None:
        self.view = None
        try:
            self.buf.close()
        except BufferError:  # views still exported: the mapping goes with the process
            pass


def engine_tree(supervisor_pid: int) -> list:
    """The supervisor and every process below it (forkserver, actors, resource tracker)."""
    try:
        sup = psutil.Process(supervisor_pid)
        return [sup] + sup.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def alive(procs) -> list:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def stats_json(ns: Netns, device: str = "mir0") -> dict:
    """The public tool, run inside the namespace."""
    p = ns.run(PY, "-m", "engine", "stats", "--device", device, "--json", timeout=30)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def stats_quiescent(ns: Netns, device: str = "mir0", tries: int = 8) -> dict:
    out = None
    for _ in range(tries):
        out = stats_json(ns, device)
        t = out["totals"]
        if t["in_flight"] == 0 and out["rates"]["rx_pps"] == 0:
            return out
    return out


def wait_until(cond, timeout: float, step: float = 0.05) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(step)
    return bool(cond())


def _map_readonly(path: str):
    """(the mapping, shm.control_view of it) of the segment file at `path` (found from
    outside the engine's namespace, so not by name); the view is None until the header
    is written."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size < shm.LINE:   # created, not yet sized
            return None, None
        buf = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)
    return buf, shm.control_view(buf, path)
