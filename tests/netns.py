"""A private network namespace for privileged tests: created by the test, holding only
`lo` and the test device, with no route out; everything started in it is tracked by PID
and killed, and the namespace deleted, even when the test fails."""
from __future__ import annotations

import glob
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
_ids = itertools.count()


class Netns:
    def __init__(self, prefix: str = "engtest") -> None:
        self.name = f"{prefix}{os.getpid()}n{next(_ids)}"
        self.procs: list = []
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.sh("ip link set lo up")

    # ---- running things inside --------------------------------------------------
    def run(self, *cmd, timeout=30, check=False, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.name, *cmd], capture_output=True,
                              text=True, timeout=timeout, check=check, cwd=ROOT, **kw)

    def sh(self, line: str, timeout=30) -> str:
        p = self.run(*line.split(), timeout=timeout)
        if p.returncode:
            raise RuntimeError(f"{line}: {p.stderr.strip()}")
        return p.stdout

    def popen(self, *cmd, **kw) -> subprocess.Popen:
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        p = subprocess.Popen(["ip", "netns", "exec", self.name, *cmd], cwd=ROOT, text=True, **kw)
        self.procs.append(p)
        return p

    def tool(self, *args, timeout=60) -> str:
        """Run tests/nettools.py inside the namespace; returns its stdout."""
        p = self.run(PY, os.path.join(ROOT, "tests", "nettools.py"), *args, timeout=timeout)
        if p.returncode:
            raise RuntimeError(f"nettools {' '.join(args)}: {p.stderr.strip()[-800:]}")
        return p.stdout

    def tcp_transfer(self, peer: str, port: int, size: int) -> dict:
        """A TCP transfer through the mirror (tests/nettools.py), checked by SHA-256."""
        r = json.loads(self.tool("tcp-transfer", "--peer", peer, "--port", str(port),
                                 "--size", str(size)))
        assert r["bytes"] == size and r["sha256"] == r["want"] and r["peer"] == peer, r
        return r

    # ---- checks -------------------------------------------------------------------
    def links(self) -> list:
        out = self.sh("ip -o link show")
        return sorted(re.findall(r"^\d+:\s+([^:@\s]+)", out, re.M))

    def assert_isolated(self, device: str) -> None:
        assert self.links() == sorted(["lo", device]), self.links()
        for fam in ("-4", "-6"):
            assert not self.sh(f"ip {fam} route show default").strip()

    def shm_segments(self, device: str) -> list:
        """The engine's segments for `device` in this namespace (engine/shm.py names them
        by device and namespace inode)."""
        ino = os.stat(f"/run/netns/{self.name}").st_ino
        return sorted(glob.glob(f"/dev/shm/engine.{device}.{ino}.*"))

    # ---- teardown -----------------------------------------------------------------
    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.time() + 3
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(2)
        pids = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True,
                              text=True).stdout.split()
        for pid in pids:  # anything still inside our own namespace was started by us
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
        for _ in range(5):
            if subprocess.run(["ip", "netns", "del", self.name]).returncode == 0:
                break
            time.sleep(0.3)


class Engine:
    """`python -m engine` running inside a namespace; waits for its "ready" log line."""

    def __init__(self, ns: Netns, *args: str, device: str = "mir0") -> None:
        self.ns, self.device = ns, device
        self.proc = ns.popen(PY, "-m", "engine", "--device", device, *args)
        self.lines: list = []
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()
        deadline = time.time() + 30
        while time.time() < deadline:
            if any("engine: ready:" in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                self._reader.join(2)
                raise RuntimeError(f"engine exited {self.proc.returncode}: {self.log}")
            time.sleep(0.05)
        raise RuntimeError(f"engine not ready within 30 s: {self.log}")

    def _collect(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def children(self) -> list:
        """PIDs of the reader, workers and writer, from the "ready" line."""
        line = next(x for x in self.lines if "engine: ready:" in x)
        return [int(part.split()[1]) for part in line.split(":", 2)[2].split(",")]

    def stop(self, sig=signal.SIGTERM, timeout=5.0):
        self.proc.send_signal(sig)
        t0 = time.time()
        self.proc.wait(timeout)
        took = time.time() - t0
        self._reader.join(2)
        return self.proc.returncode, took

    def byte_counters(self):
        """(read, written, dropped) bytes from the engine's exit report."""
        m = re.search(r"bytes: read (\d+), wrote (\d+), dropped (\d+)", self.log)
        return tuple(int(x) for x in m.groups())

    def counters(self):
        m = re.search(r"read (\d+) frames, wrote (\d+), dropped (\d+) \(([^)]*)\)", self.log)
        rx, tx, dropped = (int(x) for x in m.groups()[:3])
        reasons = dict((k, int(v)) for k, v in (r.rsplit(" ", 1) for r in m.group(4).split(", ")
                                                 if r != "none"))
        return rx, tx, dropped, reasons
