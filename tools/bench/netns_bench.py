#!/usr/bin/env python3
"""Network-namespace benchmark of IP mirrors on a Linux TUN device (issue 3).

One invocation measures, on the same machine and interleaved repetition by repetition:

  engine-wN[-vnet]   the engine, `python -m engine --device mir0 --workers N`, for each
                     N of --workers; "-vnet" = offload on (the engine default,
                     IFF_VNET_HDR + TUNSETOFFLOAD), without it = --no-offload
  naive[-vnet]       tools/bench/naive_mirror.py, the single-process baseline
  NAME               every --compare 'NAME=CMD {dev}' (a comparator needing a vnet_hdr
                     device is written 'NAME+vnet=CMD {dev}'; the suffix is not part
                     of the name)
  kernel-lo          iperf3 TCP over 127.0.0.1 in the namespace, no mirror: the ceiling

Each (variant, repetition) gets a fresh namespace `nsb<pid>-<n>` made here with
`ip netns add`, holding only `lo` and `mir0` (`ip tuntap add dev mir0 mode tun
[vnet_hdr]`) with 198.18.0.1/24 and 2001:db8::1/64 nodad. Before the mirror starts, the
namespace is checked: exactly those two links, those addresses, no default route and no
route outside 198.18.0.0/15, 2001:db8::/32, loopback, link-local and multicast; any
deviation aborts the run. Traffic goes to 198.18.0.5 / 2001:db8::5 (reflected by the
mirror and answered by the namespace's own stack) and is bounded in time.

Figures: TCP Gbit/s with 1 and 4 streams (iperf3, receiver side); 64-byte UDP packets
mirrored per second (mir0 rx_packets delta from `ip -j -s link` / seconds); ping and
ping6 average and p99 RTT (per-packet times of iputils ping); CPU % and RSS per process
of the mirror's process tree (psutil) and the tree's PSS; shared memory (new /dev/shm
files, and the engine's own log line); the engine's exit counters and stop time.

Every subprocess has a timeout; only processes started here are killed, by PID; the
namespace is deleted even on errors, Ctrl-C, SIGTERM or SIGHUP.

    sudo .venv/bin/python tools/bench/netns_bench.py --seconds 5 --repeat 1 \\
        --compare 'cmirror=/tmp/cmirror {dev}' \\
        --compare 'cmirror-vnet+vnet=/tmp/cmirror --vnet {dev}' \\
        --json bench.json --markdown bench.md --svg bench.svg
"""
from __future__ import annotations

import argparse
import datetime
import fnmatch
import ipaddress
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
import machine  # noqa: E402  (tools/bench/machine.py)
import svg  # noqa: E402  (tools/bench/svg.py)

DEV = "mir0"
ADDR4, PEER4 = "198.18.0.1/24", "198.18.0.5"       # RFC 2544 benchmark range
ADDR6, PEER6 = "2001:db8::1/64", "2001:db8::5"     # RFC 3849 documentation range
LO4 = "127.0.0.1"
ALLOWED_NETS = [ipaddress.ip_network(n) for n in (
    "198.18.0.0/15", "127.0.0.0/8", "2001:db8::/32", "::1/128", "fe80::/10", "ff00::/8",
    "224.0.0.0/4")]
TESTS = ("ping", "ping6", "udp", "tcp1", "tcp4")
BASE_PORT = 5301
ENGINE_LOG_RE = re.compile(r"read (\d+) frames, wrote (\d+), dropped (\d+) \(([^)]*)\)")
ENGINE_SHM_RE = re.compile(r"([\d.]+) MiB shared")
ENGINE_READY_RE = re.compile(r"engine: ready: (.*)")
LOG_PROBLEM_RE = re.compile(r"Traceback|Error\b|error:|WARNING|restarting|did not stop|killing")


class BenchError(Exception):
    pass


class Interrupted(BaseException):
    pass


def log(msg: str) -> None:
    print(f"[netns_bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pinned(cmd: List[str], pin: bool, role: str) -> List[str]:
    """`cmd` under taskset with --pin: the mirror ("mirror") on the first usable CPU, the
    traffic ("traffic": iperf3 client and server, ping) on the last one."""
    if not pin:
        return cmd
    cpus = sorted(os.sched_getaffinity(0))
    return ["taskset", "-c", str(cpus[0] if role == "mirror" else cpus[-1])] + cmd


def run(cmd: List[str], timeout: float = 15, check: bool = True,
        ns: Optional[str] = None) -> subprocess.CompletedProcess:
    """A command with a hard timeout, optionally inside a namespace."""
    if ns is not None:
        cmd = ["ip", "netns", "exec", ns] + cmd
    try:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"timeout after {timeout:g}s: {' '.join(cmd)}") from e
    if check and p.returncode != 0:
        raise BenchError(f"rc={p.returncode}: {' '.join(cmd)}: {p.stderr.strip()[-400:]}")
    return p


# ------------------------------------------------------------------------ variants
@dataclass
class Variant:
    name: str
    kind: str                       # engine | naive | compare | kernel
    vnet: bool = False              # create the device with vnet_hdr
    argv: Optional[List[str]] = None
    shell: Optional[str] = None     # a comparator command line (run by /bin/sh)
    workers: Optional[int] = None

    def command(self) -> Optional[List[str]]:
        if self.argv:
            return self.argv
        if self.shell:
            cmd = self.shell.replace("{dev}", DEV)
            if not re.search(r"[;&|<>`$()\n]", cmd):
                cmd = "exec " + cmd  # a simple command: SIGTERM reaches the mirror itself
            return ["/bin/sh", "-c", cmd]
        return None


def build_variants(a) -> List[Variant]:
    py = sys.executable
    out: List[Variant] = []
    offs = {"both": (False, True), "on": (True,), "off": (False,)}[a.offload]
    for w in a.workers:
        for off in offs:
            argv = [py, "-m", "engine", "--device", DEV, "--workers", str(w),
                    "--log-level", "info"] + ([] if off else ["--no-offload"])
            out.append(Variant(f"engine-w{w}" + ("-vnet" if off else ""), "engine", off,
                               argv=argv, workers=w))
    naive = [py, str(HERE / "naive_mirror.py"), DEV]
    out.append(Variant("naive", "naive", False, argv=naive))
    out.append(Variant("naive-vnet", "naive", True, argv=naive + ["--vnet"]))
    for spec in a.compare:
        name, sep, cmd = spec.partition("=")
        name = name.strip()
        vnet = name.endswith("+vnet")
        if vnet:
            name = name[:-len("+vnet")]
        if not sep or not name or not cmd.strip():
            raise SystemExit(f"--compare {spec!r}: expected 'NAME=CMD {{dev}}' "
                             f"or 'NAME+vnet=CMD {{dev}}'")
        if "{dev}" not in cmd:
            raise SystemExit(f"--compare {spec!r}: the command must contain {{dev}}")
        out.append(Variant(name, "compare", vnet, shell=cmd.strip()))
    out.append(Variant("kernel-lo", "kernel"))
    names = [v.name for v in out]
    if len(set(names)) != len(names):
        raise SystemExit(f"duplicate variant names: {names}")

    def match(name, pats):
        return any(fnmatch.fnmatchcase(name, p) for p in pats)
    if a.only:
        out = [v for v in out if match(v.name, a.only)]
    if a.skip:
        out = [v for v in out if not match(v.name, a.skip)]
    return out


# ------------------------------------------------------------------ process tree
def tree(root: psutil.Process) -> List[psutil.Process]:
    try:
        return [root] + root.children(recursive=True)
    except psutil.Error:
        return []


def label_tree(variant: Variant, procs: List[psutil.Process]) -> Dict[int, str]:
    """Role names for the processes of a mirror. The engine's spawned children carry no
    name of their own, so they are labelled in creation order, which is the order the
    supervisor starts them: reader, worker0..N-1, writer (a heuristic; see report)."""
    labels: Dict[int, str] = {}
    if not procs:
        return labels
    root = procs[0]
    if variant.kind != "engine":
        for p in procs:
            try:
                labels[p.pid] = p.name()
            except psutil.Error:
                labels[p.pid] = str(p.pid)
        return labels
    labels[root.pid] = "supervisor"
    spawned = []
    for p in procs[1:]:
        try:
            cmd = " ".join(p.cmdline())
            ct = p.create_time()
        except psutil.Error:
            continue
        if "resource_tracker" in cmd:
            labels[p.pid] = "resource_tracker"
        elif "forkserver import main" in cmd:
            labels[p.pid] = "forkserver"
        elif "spawn_main" in cmd or "forkserver" in cmd:
            spawned.append((ct, p.pid))
        else:
            labels[p.pid] = p.name() if hasattr(p, "name") else str(p.pid)
    spawned.sort()
    roles = ["reader", *(f"worker{i}" for i in range(variant.workers or 0)), "writer"]
    if len(spawned) == len(roles):
        for (_, pid), role in zip(spawned, roles):
            labels[pid] = role
    else:
        for k, (_, pid) in enumerate(spawned):
            labels[pid] = f"child{k}"
    return labels


class Sampler(threading.Thread):
    """Samples CPU times and RSS of every process of the mirror's tree, and the whole
    machine's CPU, every `interval` seconds."""

    def __init__(self, root: Optional[psutil.Process], on_new, interval: float = 0.25):
        super().__init__(daemon=True)
        self.root, self.on_new, self.interval = root, on_new, interval
        self.samples = []  # (t, {pid: (user, system, rss)}, (busy, total))
        self._halt = threading.Event()

    def sample(self) -> None:
        per = {}
        if self.root is not None:
            for p in tree(self.root):
                self.on_new(p)
                try:
                    with p.oneshot():
                        ct, rss = p.cpu_times(), p.memory_info().rss
                    per[p.pid] = (ct.user, ct.system, rss)
                except psutil.Error:
                    pass
        st = psutil.cpu_times()
        total = sum(st)
        busy = total - st.idle - getattr(st, "iowait", 0.0)
        self.samples.append((time.monotonic(), per, (busy, total)))

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(3)
        self.sample()

    def window(self, t0: float, t1: float):
        """Per-pid CPU % (100 = one core), user %, max RSS over [t0, t1]; machine busy %."""
        win = [s for s in self.samples if t0 <= s[0] <= t1]
        if len(win) < 2:
            win = self.samples[-2:] if len(self.samples) >= 2 else []
        if len(win) < 2:
            return {}, None
        a, b = win[0], win[-1]
        dt = b[0] - a[0]
        per = {}
        for pid, (u1, s1, _) in b[1].items():
            if pid not in a[1]:
                continue
            u0, s0, _ = a[1][pid]
            rss = max(s[1][pid][2] for s in win if pid in s[1])
            per[pid] = {"cpu_pct": 100.0 * ((u1 + s1) - (u0 + s0)) / dt,
                        "user_pct": 100.0 * (u1 - u0) / dt, "rss_mib": rss / 2**20}
        busy = 100.0 * (b[2][0] - a[2][0]) / max(1e-9, b[2][1] - a[2][1])
        return per, busy


# ------------------------------------------------------------------------ the bed
class Bed:
    """One fresh namespace with `lo` and `mir0`, one mirror, the tests, the teardown."""

    def __init__(self, a, variant: Variant, idx: int):
        self.a, self.v = a, variant
        self.ns = f"nsb{os.getpid()}-{idx}"
        self.mine: Dict[int, psutil.Process] = {}  # every process started here, by PID
        self.mirror: Optional[subprocess.Popen] = None
        self.root: Optional[psutil.Process] = None
        self.mirror_log = None
        self.port = BASE_PORT
        self.info: dict = {"netns": self.ns}
        self.shm_prefix: Optional[str] = None  # the engine's segment names in our netns
        self.labels: Dict[int, str] = {}
        self.ns_made = False

    def track(self, p) -> None:
        try:
            proc = p if isinstance(p, psutil.Process) else psutil.Process(p)
            self.mine.setdefault(proc.pid, proc)
        except psutil.Error:
            pass

    # -- namespace
    def setup(self) -> None:
        ns = self.ns
        if ns in run(["ip", "netns", "list"]).stdout.split():
            raise BenchError(f"namespace {ns} already exists")
        run(["ip", "netns", "add", ns])
        self.ns_made = True
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        tt = ["ip", "-n", ns, "tuntap", "add", "dev", DEV, "mode", "tun"]
        if self.v.vnet:
            tt.append("vnet_hdr")
        if self.v.kind != "kernel":
            run(tt)
            run(["ip", "-n", ns, "addr", "add", ADDR4, "dev", DEV])
            run(["ip", "-n", ns, "-6", "addr", "add", ADDR6, "dev", DEV, "nodad"])
            run(["ip", "-n", ns, "link", "set", DEV, "up"])
        self.verify()

    def verify(self) -> None:
        """Abort unless the namespace holds exactly what we made and has no way out."""
        ns = self.ns
        links = json.loads(run(["ip", "-j", "-n", ns, "link", "show"]).stdout or "[]")
        names = sorted(l["ifname"] for l in links)
        want = ["lo"] if self.v.kind == "kernel" else ["lo", DEV]
        if names != sorted(want):
            raise BenchError(f"safety: unexpected links in {ns}: {names}")
        for fam in ("-4", "-6"):
            routes = json.loads(run(["ip", "-j", "-n", ns, fam, "route", "show", "table",
                                     "all"]).stdout or "[]")
            for r in routes:
                dst = r.get("dst", "")
                if dst == "default" or dst in ("0.0.0.0/0", "::/0"):
                    raise BenchError(f"safety: {ns} has a default route: {r}")
                if dst in ("", "multicast"):
                    continue
                try:
                    net = ipaddress.ip_network(dst, strict=False)
                except ValueError:
                    raise BenchError(f"safety: cannot parse route {r}") from None
                if not any(net.version == n.version and net.subnet_of(n) for n in ALLOWED_NETS):
                    raise BenchError(f"safety: route outside the benchmark ranges: {r}")
        if self.v.kind != "kernel":
            addrs = json.loads(run(["ip", "-j", "-n", ns, "addr", "show", "dev",
                                    DEV]).stdout)[0].get("addr_info", [])
            have = {f"{x['local']}/{x['prefixlen']}" for x in addrs
                    if not x["local"].startswith("fe80:")}
            if have != {ADDR4, ADDR6}:
                raise BenchError(f"safety: {DEV} addresses are {sorted(have)}")
        self.info["links"] = names

    def link_stats(self) -> Optional[dict]:
        try:
            r = run(["ip", "-j", "-s", "-n", self.ns, "link", "show", DEV], timeout=5, check=False)
            st = json.loads(r.stdout)[0]["stats64"]
        except (BenchError, ValueError, KeyError, IndexError):
            return None
        return {"rx_packets": st["rx"]["packets"], "rx_bytes": st["rx"]["bytes"],
                "tx_packets": st["tx"]["packets"], "tx_dropped": st["tx"]["dropped"],
                "rx_dropped": st["rx"]["dropped"]}

    # -- mirror
    def start_mirror(self) -> None:
        cmd = self.v.command()
        if cmd is None:
            return
        self.shm_prefix = f"engine.{DEV}.{os.stat(f'/run/netns/{self.ns}').st_ino}."
        self.mirror_log = tempfile.NamedTemporaryFile(prefix="netns_bench_", suffix=".log",
                                                      delete=False)
        t0 = time.monotonic()
        self.mirror = subprocess.Popen(
            ["ip", "netns", "exec", self.ns] + pinned(cmd, self.a.pin, "mirror"), cwd=str(REPO),
            stdin=subprocess.DEVNULL,
            stdout=self.mirror_log, stderr=subprocess.STDOUT, start_new_session=True)
        self.track(self.mirror.pid)
        self.root = self.mine.get(self.mirror.pid)
        deadline = t0 + self.a.attach_timeout
        attached = None
        while time.monotonic() < deadline:
            if self.mirror.poll() is not None:
                raise BenchError(f"mirror exited rc={self.mirror.returncode} before it "
                                 f"answered: {self.read_log()[-600:]}")
            procs = tree(self.root)
            for p in procs:
                self.track(p)
            if attached is None and self.tree_has_tun(procs):
                attached = time.monotonic() - t0
            if attached is not None:
                r = run(["ping", "-4", "-c", "1", "-W", "1", PEER4], ns=self.ns, timeout=5,
                        check=False)
                if r.returncode == 0:
                    break
            else:
                time.sleep(0.05)
        else:
            raise BenchError(f"mirror did not {'answer' if attached else 'attach'} within "
                             f"{self.a.attach_timeout:g}s: {self.read_log()[-600:]}")
        ready = time.monotonic() - t0
        # wait until the process tree stops changing (all workers spawned), then settle
        last, stable_since = None, time.monotonic()
        while time.monotonic() < deadline + 5:
            pids = sorted(p.pid for p in tree(self.root))
            if pids != last:
                last, stable_since = pids, time.monotonic()
            elif time.monotonic() - stable_since >= 0.5:
                break
            time.sleep(0.1)
        time.sleep(self.a.settle)
        if self.v.kind == "engine":  # the engine says when every actor runs, and their PIDs
            while time.monotonic() < deadline + 5 and not ENGINE_READY_RE.search(self.read_log()):
                time.sleep(0.05)
        procs = tree(self.root)
        for p in procs:
            self.track(p)
        try:   # where the mirror may run (all CPUs, or the first one with --pin)
            self.info["cpus"] = sorted(set().union(*(p.cpu_affinity() for p in procs)))
        except (psutil.Error, TypeError):
            self.info["cpus"] = None
        self.labels = label_tree(self.v, procs)
        m = ENGINE_READY_RE.search(self.read_log())
        if m:  # exact roles from the engine's own "ready:" line
            for part in m.group(1).split(","):
                role, _, pid = part.strip().rpartition(" ")
                if pid.isdigit() and int(pid) in self.labels:
                    self.labels[int(pid)] = role
        new = shm_mapped(procs)
        shm_bytes = 0
        for n in new:
            try:
                shm_bytes += os.stat(n).st_size
            except OSError:
                pass
        self.info.update(attach_s=attached, ready_s=ready, pids=self.labels,
                         shm_files=new, shm_mib=shm_bytes / 2**20,
                         ethtool=self.ethtool())
        log(f"{self.v.name}: attached after {attached:.2f}s, answering after {ready:.2f}s; "
            f"tree {len(procs)} processes")

    @staticmethod
    def tree_has_tun(procs) -> bool:
        for p in procs:
            try:
                fds = os.listdir(f"/proc/{p.pid}/fdinfo")
            except OSError:
                continue
            for fd in fds:
                try:
                    with open(f"/proc/{p.pid}/fdinfo/{fd}") as f:
                        if f"iff:\t{DEV}\n" in f.read():
                            return True
                except OSError:
                    pass
        return False

    def ethtool(self) -> Optional[dict]:
        try:
            r = run(["ethtool", "-k", DEV], ns=self.ns, timeout=5, check=False)
        except (BenchError, FileNotFoundError):
            return None
        keep = ("tx-checksumming", "tcp-segmentation-offload", "generic-segmentation-offload")
        return {k.strip(): v.strip() for k, _, v in
                (line.partition(":") for line in r.stdout.splitlines()) if k.strip() in keep}

    def read_log(self) -> str:
        if not self.mirror_log:
            return ""
        try:
            with open(self.mirror_log.name, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop_mirror(self) -> None:
        """SIGTERM the mirror (the root of its tree), time its exit, then parse its log."""
        if self.mirror is None or self.mirror.poll() is not None:
            return
        for p in tree(self.root):
            self.track(p)
        t0 = time.monotonic()
        try:
            self.mirror.send_signal(signal.SIGTERM)
            rc = self.mirror.wait(self.a.stop_timeout)
            self.info["stop_s"] = time.monotonic() - t0
            self.info["exit_code"] = rc
        except subprocess.TimeoutExpired:
            self.info["stop_s"] = None
            self.info["exit_code"] = None
            self.info["hang"] = f"did not exit within {self.a.stop_timeout:g}s of SIGTERM"
            log(f"{self.v.name}: mirror did not exit within {self.a.stop_timeout:g}s")
        time.sleep(0.2)
        left = [pid for pid, p in self.mine.items() if _alive(p) and pid != self.mirror.pid
                and pid in self.labels]
        if left:
            self.info["children_left"] = [self.labels.get(pid, pid) for pid in left]

    # -- teardown (also on errors and signals)
    def teardown(self) -> None:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM,
                                                         signal.SIGHUP})
        try:
            try:
                self.stop_mirror()
            except Exception as e:  # keep tearing down
                self.info["stop_error"] = repr(e)
            kill_mine(self.mine)
            if self.mirror is not None:
                try:
                    self.mirror.wait(2)
                except subprocess.TimeoutExpired:
                    pass
            # shared memory the engine made for our namespace and did not remove
            # (checked while our namespace, whose inode is in the name, still exists)
            if self.shm_prefix is not None and self.v.kind == "engine":
                left = sorted(n for n in os.listdir("/dev/shm") if n.startswith(self.shm_prefix))
                if left:
                    self.info["shm_left_behind"] = left
                    for n in left:
                        try:
                            os.unlink(f"/dev/shm/{n}")
                        except OSError:
                            pass
            if self.ns_made:
                try:  # anything still in our namespace was started here
                    r = run(["ip", "netns", "pids", self.ns], timeout=5, check=False)
                    for pid in (int(x) for x in r.stdout.split()):
                        if pid != os.getpid():
                            try:
                                os.kill(pid, signal.SIGKILL)
                            except OSError:
                                pass
                except BenchError:
                    pass
                for _ in range(5):
                    try:
                        r = run(["ip", "netns", "del", self.ns], timeout=10, check=False)
                        if r.returncode == 0:
                            break
                    except BenchError:
                        pass
                    time.sleep(0.3)
            text = self.read_log()
            self.info["log_tail"] = text[-1500:]
            m = ENGINE_LOG_RE.search(text)
            if m:
                reasons = {}
                for part in m.group(4).split(","):
                    k, _, v = part.strip().rpartition(" ")
                    if k:
                        reasons[k] = int(v)
                self.info["engine_counters"] = {"read": int(m.group(1)),
                                                "wrote": int(m.group(2)),
                                                "dropped": int(m.group(3)), "reasons": reasons}
            m = ENGINE_SHM_RE.search(text)
            if m:
                self.info["engine_shm_mib"] = float(m.group(1))
            bad = [l for l in text.splitlines() if LOG_PROBLEM_RE.search(l)]
            if bad:
                self.info["log_problems"] = bad[:20]
            if self.mirror_log:
                try:
                    os.unlink(self.mirror_log.name)
                except OSError:
                    pass
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    # -- traffic
    def iperf_server(self):
        self.port += 1
        port = self.port
        p = subprocess.Popen(["ip", "netns", "exec", self.ns] + pinned(
                                 ["iperf3", "-s", "-1", "-p", str(port)], self.a.pin, "traffic"),
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        self.track(p.pid)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            r = run(["ss", "-Hltn", f"sport = :{port}"], ns=self.ns, timeout=5, check=False)
            if r.stdout.strip():
                return p, port
            if p.poll() is not None:
                raise BenchError(f"iperf3 server exited rc={p.returncode}")
            time.sleep(0.05)
        raise BenchError("iperf3 server did not listen within 5 s")

    def iperf(self, target: str, extra: List[str]) -> dict:
        secs = self.a.seconds
        srv, port = self.iperf_server()
        ls0 = self.link_stats() if self.v.kind != "kernel" else None
        sampler = Sampler(self.root, self.track)
        sampler.start()
        t0 = time.monotonic()
        try:
            r = run(pinned(["iperf3", "-c", target, "-p", str(port), "-t", f"{secs:g}", "-J",
                            "--connect-timeout", "3000"] + extra, self.a.pin, "traffic"),
                    ns=self.ns, timeout=secs + 20,
                    check=False)
        finally:
            sampler.stop()
            try:
                srv.wait(5)
            except subprocess.TimeoutExpired:
                kill_mine({srv.pid: self.mine.get(srv.pid)})
        t1 = time.monotonic()
        ls1 = self.link_stats() if ls0 else None
        try:
            data = json.loads(r.stdout)
        except ValueError:
            raise BenchError(f"iperf3 rc={r.returncode}, no JSON: "
                             f"{(r.stdout + r.stderr).strip()[-300:]}") from None
        if "error" in data:
            raise BenchError(f"iperf3: {data['error']}")
        skip = min(0.5, secs / 4)
        per, busy = sampler.window(t0 + skip, t1)
        res = {"sys_busy_pct": busy}
        if self.root is not None:
            res.update(self.tree_figures(per))
        if ls0 and ls1:
            res["tun"] = {k: ls1[k] - ls0[k] for k in ls0}
        return {"data": data, "res": res}

    def tree_figures(self, per: dict) -> dict:
        procs = []
        for pid, f in sorted(per.items()):
            procs.append({"pid": pid, "label": self.labels.get(pid, str(pid)),
                          **{k: round(v, 2) for k, v in f.items()}})
        pss = 0
        for pid in per:
            p = self.mine.get(pid)
            try:
                pss += p.memory_full_info().pss
            except (psutil.Error, AttributeError):
                pass
        return {"cpu_pct": sum(f["cpu_pct"] for f in per.values()),
                "user_pct": sum(f["user_pct"] for f in per.values()),
                "rss_mib_sum": sum(f["rss_mib"] for f in per.values()),
                "pss_mib": pss / 2**20 if pss else None, "procs": procs}

    def test_ping(self, fam: str) -> dict:
        count = self.a.ping_count
        target = PEER4 if fam == "4" else PEER6
        deadline = int(count * 0.05 + 10)
        r = run(pinned(["ping", f"-{fam}", "-c", str(count), "-i", f"{self.a.ping_interval:g}",
                        "-W", "1", "-w", str(deadline), target], self.a.pin, "traffic"),
                ns=self.ns, timeout=deadline + 10,
                check=False)
        return parse_ping(r.stdout)

    def test_udp(self) -> dict:
        out = self.iperf(PEER4, ["-u", "-b", "0", "-l", "64"])
        data, res = out["data"], out["res"]
        e = data["end"]
        s = e.get("sum") or {}
        secs = s.get("seconds") or self.a.seconds
        tun = res.pop("tun", None)
        if tun:
            res["mirrored_pps"] = tun["rx_packets"] / secs
            res["tun_drop_pct"] = 100.0 * tun["tx_dropped"] / max(1, tun["tx_dropped"] +
                                                                   tun["tx_packets"])
            res["tun"] = tun
        res["iperf3_sent_pps"] = s.get("packets", 0) / secs if s else None
        res["iperf3_loss_pct"] = s.get("lost_percent")
        if s and s.get("packets") is not None:
            res["iperf3_received_pps"] = (s["packets"] - s.get("lost_packets", 0)) / secs
        return res

    def test_tcp(self, streams: int) -> dict:
        target = LO4 if self.v.kind == "kernel" else PEER4
        extra = ["-P", str(streams)] if streams > 1 else []
        out = self.iperf(target, extra)
        data, res = out["data"], out["res"]
        e = data["end"]
        res["gbps"] = e["sum_received"]["bits_per_second"] / 1e9
        res["retransmits"] = e["sum_sent"].get("retransmits")
        tun = res.get("tun")
        if tun and tun["rx_packets"]:
            res["avg_pkt_bytes"] = tun["rx_bytes"] / tun["rx_packets"]
        return res


def shm_mapped(procs) -> List[str]:
    """/dev/shm files mapped by any process of the tree (the mirror's shared memory)."""
    out = set()
    for p in procs:
        try:
            with open(f"/proc/{p.pid}/maps") as f:
                for line in f:
                    i = line.find("/dev/shm/")
                    if i >= 0:
                        out.add(line[i:].rstrip("\n").removesuffix(" (deleted)"))
        except OSError:
            pass
    return sorted(out)


def _alive(p: Optional[psutil.Process]) -> bool:
    try:
        return p is not None and p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_mine(procs: Dict[int, Optional[psutil.Process]], grace: float = 2.0) -> None:
    """SIGTERM, then SIGKILL, processes started here (psutil checks the PID was not
    reused: it compares the creation time)."""
    live = [p for p in procs.values() if _alive(p)]
    for p in live:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, live = psutil.wait_procs(live, timeout=grace)
    for p in live:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(live, timeout=1)


def parse_ping(text: str) -> dict:
    times = [float(x) for x in re.findall(r"time=([\d.]+) ms", text)]
    m = re.search(r"(\d+) packets transmitted, (\d+) received", text)
    if not m:
        raise BenchError(f"cannot parse ping output: {text.strip()[-300:]}")
    tx, rx = int(m.group(1)), int(m.group(2))
    res = {"sent": tx, "received": rx, "loss_pct": 100.0 * (tx - rx) / tx if tx else 100.0}
    if times:
        s = sorted(times)
        res.update(avg_ms=statistics.fmean(s), p50_ms=s[len(s) // 2],
                   p99_ms=s[min(len(s) - 1, max(0, -(-99 * len(s) // 100) - 1))],
                   max_ms=s[-1], min_ms=s[0], samples=len(s))
    return res


# ------------------------------------------------------------------------ one run
def one_run(a, v: Variant, rep: int, idx: int) -> dict:
    bed = Bed(a, v, idx)
    tests: Dict[str, dict] = {}
    started = datetime.datetime.now().isoformat(timespec="seconds")
    err = None
    try:
        bed.setup()
        if v.kind != "kernel":
            bed.start_mirror()
        plan = [t for t in a.tests if v.kind != "kernel" or t in ("tcp1", "tcp4")]
        for t in plan:
            log(f"{v.name} rep {rep}: {t}")
            try:
                if t in ("ping", "ping6"):
                    tests[t] = bed.test_ping("4" if t == "ping" else "6")
                elif t == "udp":
                    tests[t] = bed.test_udp()
                else:
                    tests[t] = bed.test_tcp(int(t[3:]))
            except BenchError as e:
                tests[t] = {"error": str(e)}
                log(f"{v.name} rep {rep}: {t} failed: {e}")
            if bed.mirror is not None and bed.mirror.poll() is not None:
                raise BenchError(f"mirror exited rc={bed.mirror.returncode} during {t}")
            time.sleep(a.pause)
    except BenchError as e:
        err = str(e)
        log(f"{v.name} rep {rep}: aborted: {e}")
    finally:
        bed.teardown()
    return {"variant": v.name, "kind": v.kind, "vnet": v.vnet, "workers": v.workers,
            "command": " ".join(v.command() or []), "rep": rep, "started": started,
            "error": err, "tests": tests, "mirror": bed.info}


# ------------------------------------------------------------------------ report
FIGURES = [  # key, label, getter, higher is better
    ("tcp1_gbps", "TCP 1 stream Gbit/s", lambda t: t.get("tcp1", {}).get("gbps"), True),
    ("tcp4_gbps", "TCP 4 streams Gbit/s", lambda t: t.get("tcp4", {}).get("gbps"), True),
    ("udp_pps", "UDP 64 B pkt/s mirrored",
     lambda t: t.get("udp", {}).get("mirrored_pps"), True),
    ("ping_avg_ms", "ping avg ms", lambda t: t.get("ping", {}).get("avg_ms"), False),
    ("ping_p99_ms", "ping p99 ms", lambda t: t.get("ping", {}).get("p99_ms"), False),
    ("ping6_avg_ms", "ping6 avg ms", lambda t: t.get("ping6", {}).get("avg_ms"), False),
    ("ping6_p99_ms", "ping6 p99 ms", lambda t: t.get("ping6", {}).get("p99_ms"), False),
    ("tcp1_cpu_pct", "CPU % (tcp1)", lambda t: t.get("tcp1", {}).get("cpu_pct"), False),
    ("udp_cpu_pct", "CPU % (udp)", lambda t: t.get("udp", {}).get("cpu_pct"), False),
    ("tcp1_cpu_us_mb", "TCP 1 CPU us/MB", lambda t: _us_per_mb(t.get("tcp1", {})), False),
    ("tcp1_user_share", "TCP 1 user share %", lambda t: _user_share(t.get("tcp1", {})), False),
    ("tcp1_retr", "TCP 1 retransmits", lambda t: t.get("tcp1", {}).get("retransmits"), False),
    ("tcp1_pkt_bytes", "TCP 1 B/pkt", lambda t: t.get("tcp1", {}).get("avg_pkt_bytes"), True),
    ("udp_tun_drop_pct", "UDP tun-queue drop %",
     lambda t: t.get("udp", {}).get("tun_drop_pct"), False),
    ("rss_mib", "RSS MiB (sum)", lambda t: t.get("tcp1", t.get("udp", {})).get("rss_mib_sum"),
     False),
    ("pss_mib", "PSS MiB", lambda t: t.get("tcp1", t.get("udp", {})).get("pss_mib"), False),
]


def _us_per_mb(t: dict):
    """The mirror's CPU time per MB carried (all its processes, user + system): what the
    engine costs per byte, which decides how much CPU is left to the traffic's own sender
    and receiver on the same cores. CPU %/100 s per s over gbps * 125 MB per s."""
    if t.get("cpu_pct") is None or not t.get("gbps"):
        return None
    return t["cpu_pct"] * 80.0 / t["gbps"]


def _user_share(t: dict):
    """Share of that CPU time spent in user space (the interpreter), in %."""
    if not t.get("cpu_pct") or t.get("user_pct") is None:
        return None
    return 100.0 * t["user_pct"] / t["cpu_pct"]


RATIO_KEYS = ("tcp1_gbps", "tcp4_gbps", "udp_pps", "ping_avg_ms", "ping_p99_ms")


def summarize(runs: List[dict]) -> Dict[str, dict]:
    """variant -> {figure: {median, min, max, n}} plus the mirror's own facts."""
    out: Dict[str, dict] = {}
    for r in runs:
        s = out.setdefault(r["variant"], {"kind": r["kind"], "vnet": r["vnet"],
                                          "workers": r["workers"], "runs": 0, "errors": [],
                                          "_vals": {}})
        s["runs"] += 1
        if r.get("error"):
            s["errors"].append(r["error"])
        for t, res in r["tests"].items():
            if "error" in res:
                s["errors"].append(f"{t}: {res['error']}")
        for key, _, get, _ in FIGURES:
            v = get(r["tests"])
            if v is not None:
                s["_vals"].setdefault(key, []).append(v)
        m = r["mirror"]
        for k in ("shm_mib", "engine_shm_mib", "stop_s", "ready_s"):
            if m.get(k) is not None:
                s["_vals"].setdefault(k, []).append(m[k])
    for s in out.values():
        vals = s.pop("_vals")
        s["figures"] = {k: {"median": statistics.median(v), "min": min(v), "max": max(v),
                            "n": len(v), "values": v} for k, v in vals.items()}
    return out


def fnum(v, unit_k: bool = False) -> str:
    if v is None:
        return "–"
    if v == 0 or (isinstance(v, int) and not isinstance(v, bool)):
        return f"{v / 1000:.0f}k" if unit_k and abs(v) >= 1000 else str(int(v))
    if unit_k and abs(v) >= 1000:
        return f"{v / 1000:.0f}k"
    a = abs(v)
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def cell(summary: dict, key: str, unit_k: bool = False) -> str:
    f = summary["figures"].get(key)
    if not f:
        return "–"
    if f["n"] > 1:
        return (f"{fnum(f['median'], unit_k)} ({fnum(f['min'], unit_k)}–"
                f"{fnum(f['max'], unit_k)})")
    return fnum(f["median"], unit_k)


def cpu_cost_cell(summary: dict) -> str:
    """Median CPU µs per MB of TCP 1 stream, and its user-space share."""
    f, u = (summary["figures"].get(k) for k in ("tcp1_cpu_us_mb", "tcp1_user_share"))
    if not f:
        return "–"
    return f"{fnum(f['median'])}" + (f" ({u['median']:.0f} % user)" if u else "")


def references(summ: Dict[str, dict]) -> List[str]:
    return [n for n, s in summ.items() if s["kind"] in ("naive", "compare")]


def markdown(result: dict) -> str:
    summ = result["summary"]
    runs = result["runs"]
    L = []
    m = result["meta"]
    L.append(f"netns benchmark, {m['date']}: {m['host']['cpu']} ({m['host']['nproc']} CPUs), "
             f"kernel {m['host']['kernel']}, Python {m['host']['python']}; "
             f"{m['args']['seconds']:g} s per iperf3 test, {m['args']['repeat']} repetition(s)"
             f"{' (median (min–max))' if m['args']['repeat'] > 1 else ''}, "
             f"{m['args']['ping_count']} pings per ping test"
             f"{'; pinned: the mirror on the first CPU, iperf3 and ping on the last' if m['args'].get('pin') else ''}.")
    L.append("")
    L.append("| variant | TCP 1 stream Gbit/s | TCP 4 streams Gbit/s | UDP 64 B pkt/s "
             "mirrored | ping avg / p99 ms | ping6 avg / p99 ms | CPU % tcp1 / udp "
             "| RSS sum / PSS MiB | shm MiB |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for name, s in summ.items():
        shm = cell(s, "engine_shm_mib") if "engine_shm_mib" in s["figures"] else cell(s, "shm_mib")
        row = [name, cell(s, "tcp1_gbps"), cell(s, "tcp4_gbps"), cell(s, "udp_pps", True),
               f"{cell(s, 'ping_avg_ms')} / {cell(s, 'ping_p99_ms')}",
               f"{cell(s, 'ping6_avg_ms')} / {cell(s, 'ping6_p99_ms')}",
               f"{cell(s, 'tcp1_cpu_pct')} / {cell(s, 'udp_cpu_pct')}",
               f"{cell(s, 'rss_mib')} / {cell(s, 'pss_mib')}",
               shm if s["kind"] != "kernel" else "–"]
        if s["kind"] == "kernel":
            row[3:8] = ["–"] * 5
        L.append("| " + " | ".join(row) + " |")
    refs = references(summ)
    if refs:
        L.append("")
        L.append("Ratios of medians, variant / reference (throughput: higher is better; "
                 "RTT: lower is better):")
        L.append("")
        hdr = ["variant"] + [f"{lab} / {ref}" for ref in refs for lab in
                             ("TCP1", "TCP4", "UDP", "ping")]
        L.append("| " + " | ".join(hdr) + " |")
        L.append("|" + "---|" * len(hdr))
        for name, s in summ.items():
            if s["kind"] == "kernel":
                continue
            row = [name]
            for ref in refs:
                for key in ("tcp1_gbps", "tcp4_gbps", "udp_pps", "ping_avg_ms"):
                    a = s["figures"].get(key, {}).get("median")
                    b = summ[ref]["figures"].get(key, {}).get("median")
                    row.append(f"{a / b:.2f}×" if a and b else "–")
            L.append("| " + " | ".join(row) + " |")
    klo = summ.get("kernel-lo")
    ceiling = klo and klo["figures"].get("tcp1_gbps", {}).get("median")
    if ceiling:
        L.append("")
        L.append("Share of the kernel loopback ceiling (TCP, same run): " + ", ".join(
            f"{n} {100 * s['figures']['tcp1_gbps']['median'] / ceiling:.1f} %"
            for n, s in summ.items() if n != "kernel-lo" and "tcp1_gbps" in s["figures"])
            + " (1 stream).")
    # details
    L.append("")
    L.append("| variant | TCP1 retr, B/pkt | TCP1 mirror CPU µs/MB (median) | UDP tun-queue drop % | "
             "ready s | stop s | engine counters (last run) | notes |")
    L.append("|---|---|---|---|---|---|---|---|")
    for name, s in summ.items():
        last = [r for r in runs if r["variant"] == name][-1]
        mm = last["mirror"]
        ec = mm.get("engine_counters")
        ecs = (f"read {ec['read']}, wrote {ec['wrote']}, dropped {ec['dropped']}"
               + (f" ({', '.join(f'{k} {v}' for k, v in ec['reasons'].items())})"
                  if ec.get("reasons") else "")) if ec else "–"
        notes = []
        if mm.get("hang"):
            notes.append(mm["hang"])
        if mm.get("exit_code") not in (None, 0):
            notes.append(f"exit code {mm['exit_code']}")
        if mm.get("shm_left_behind"):
            notes.append(f"left in /dev/shm: {', '.join(mm['shm_left_behind'])}")
        if mm.get("children_left"):
            notes.append(f"children alive after exit: {mm['children_left']}")
        if s["errors"]:
            notes.append(f"{len(s['errors'])} error(s): {s['errors'][0][:120]}")
        if mm.get("log_problems"):
            notes.append(f"log: {mm['log_problems'][0][:100]}")
        L.append(f"| {name} | {cell(s, 'tcp1_retr')}, {cell(s, 'tcp1_pkt_bytes')} | "
                 f"{cpu_cost_cell(s)} | "
                 f"{cell(s, 'udp_tun_drop_pct')} | {cell(s, 'ready_s')} | {cell(s, 'stop_s')} "
                 f"| {ecs} | {'; '.join(notes).replace('|', '/') or '–'} |")
    # per process
    L.append("")
    L.append("CPU % (100 = one core) and max RSS MiB per process of the mirror's tree, "
             "last repetition:")
    L.append("")
    L.append("| variant | TCP 1 stream | UDP 64 B |")
    L.append("|---|---|---|")
    for name, s in summ.items():
        if s["kind"] == "kernel":
            continue
        last = [r for r in runs if r["variant"] == name][-1]
        cells = []
        for t in ("tcp1", "udp"):
            procs = last["tests"].get(t, {}).get("procs") or []
            cells.append(", ".join(f"{p['label']} {p['cpu_pct']:.0f}% {p['rss_mib']:.0f}M"
                                   for p in procs) or "–")
        L.append(f"| {name} | {cells[0]} | {cells[1]} |")
    return "\n".join(L) + "\n"


def chart(result: dict) -> str:
    summ = result["summary"]

    def med(name, key):
        return summ.get(name, {}).get("figures", {}).get(key, {}).get("median")
    tcp = svg.Panel("TCP Gbit/s (log scale)", log=True)
    udp = svg.Panel("UDP 64 B, kpackets/s mirrored")
    eng = {}
    for name, s in summ.items():
        if s["kind"] == "engine":
            eng.setdefault(bool(s["vnet"]), []).append((s["workers"], name))
    for vnet, lst in sorted(eng.items()):
        tag = "engine offload" if vnet else "engine no-offload"
        for key, suffix, dashed in (("tcp1_gbps", "1 stream", False),
                                    ("tcp4_gbps", "4 streams", True)):
            tcp.series.append(svg.Series(f"{tag}, {suffix}",
                                         [(w, med(n, key)) for w, n in lst], dashed=dashed,
                                         color=svg.COLORS[0 if vnet else 1]))
        u = [(w, (med(n, "udp_pps") or 0) / 1000) for w, n in lst]
        udp.series.append(svg.Series(tag, u, color=svg.COLORS[0 if vnet else 1]))
    k = 2
    for name, s in summ.items():
        if s["kind"] == "engine":
            continue
        c = svg.COLORS[k % len(svg.COLORS)]
        k += 1
        if med(name, "tcp1_gbps"):
            tcp.refs.append(svg.Ref(f"{name}", med(name, "tcp1_gbps"), color=c))
        if med(name, "udp_pps"):
            udp.refs.append(svg.Ref(name, med(name, "udp_pps") / 1000, color=c))
    m = result["meta"]
    return svg.render("IP mirror throughput by engine worker count", [tcp, udp],
                      note=f"{m['date']}, {m['host']['nproc']} CPUs, kernel {m['host']['kernel']}, "
                           f"{m['args']['seconds']:g} s per test, {m['args']['repeat']} rep(s); "
                           f"dashed horizontal = single-process mirrors (1 stream)")


def host_info() -> dict:
    iperf = run(["iperf3", "--version"], check=False).stdout.splitlines()
    return {**machine.host_info(), "iperf3": iperf[0] if iperf else "?",
            "mem_gib": round(psutil.virtual_memory().total / 2**30, 1)}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--seconds", type=float, default=5.0, help="per iperf3 test (default 5)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="repetitions, interleaved across variants (default 1)")
    ap.add_argument("--tests", default=",".join(TESTS),
                    help=f"comma list from {','.join(TESTS)} (default all)")
    ap.add_argument("--workers", default="1,2,4", help="engine worker counts (default 1,2,4)")
    ap.add_argument("--offload", choices=("both", "on", "off"), default="both",
                    help="engine variants with offload on (-vnet), off, or both (default)")
    ap.add_argument("--compare", action="append", default=[], metavar="'NAME[+vnet]=CMD {dev}'",
                    help="an external mirror command; +vnet: create the device with vnet_hdr")
    ap.add_argument("--only", default="", help="comma list of variant name globs to run")
    ap.add_argument("--skip", default="", help="comma list of variant name globs to skip")
    ap.add_argument("--ping-count", type=int, default=200)
    ap.add_argument("--ping-interval", type=float, default=0.01)
    ap.add_argument("--attach-timeout", type=float, default=30.0,
                    help="seconds for a mirror to attach and answer a ping (default 30)")
    ap.add_argument("--stop-timeout", type=float, default=5.0,
                    help="seconds a mirror has to exit after SIGTERM (default 5)")
    ap.add_argument("--settle", type=float, default=0.5)
    ap.add_argument("--pause", type=float, default=0.5, help="seconds between tests")
    ap.add_argument("--pin", action="store_true",
                    help="the mirror's processes on the first CPU, iperf3 and ping on the "
                         "last (taskset): figures that do not depend on where the scheduler "
                         "puts three busy processes on two CPUs (see docs/benchmarks.md)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke mode for CI: 1 s tests, 20 pings, short pauses")
    ap.add_argument("--json", help="write all results here")
    ap.add_argument("--markdown", help="write the tables here (also printed)")
    ap.add_argument("--svg", help="write the chart here")
    ap.add_argument("--list", action="store_true", help="list the variants and exit")
    ap.add_argument("--render", metavar="JSON",
                    help="no benchmark: write --markdown/--svg again from the results in JSON "
                         "(figures recomputed from its runs)")
    a = ap.parse_args(argv)
    if a.quick:
        a.seconds = min(a.seconds, 1.0)
        a.ping_count = min(a.ping_count, 20)
        a.settle, a.pause = 0.2, 0.2
    a.tests = [t.strip() for t in a.tests.split(",") if t.strip()]
    for t in a.tests:
        if t not in TESTS:
            ap.error(f"unknown test {t!r}; choose from {','.join(TESTS)}")
    try:
        a.workers = [int(x) for x in a.workers.split(",") if x.strip()]
    except ValueError:
        ap.error("--workers: a comma list of integers")
    if not all(1 <= w <= 64 for w in a.workers):
        ap.error("--workers: between 1 and 64")
    if not 0.5 <= a.seconds <= 120 or not 1 <= a.repeat <= 20:
        ap.error("--seconds must be 0.5..120 and --repeat 1..20")
    if not 1 <= a.ping_count <= 5000 or not 0.002 <= a.ping_interval <= 1:
        ap.error("--ping-count 1..5000, --ping-interval 0.002..1")
    a.only = [p for p in a.only.split(",") if p]
    a.skip = [p for p in a.skip.split(",") if p]
    return ap, a


def main(argv=None) -> int:
    ap, a = parse_args(argv)
    if a.render:
        return render(a)
    variants = build_variants(a)
    if a.list:
        for v in variants:
            print(f"{v.name:20} vnet={int(v.vnet)}  {' '.join(v.command() or ['(no mirror)'])}")
        return 0
    if not variants:
        ap.error("no variant left after --only/--skip")
    if os.geteuid() != 0:
        ap.error("must run as root (network namespaces, TUN devices)")

    def on_signal(signum, _frame):
        raise Interrupted(signal.Signals(signum).name)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)

    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "host": host_info(),
            "engine_commit": machine.engine_commit(),
            "args": {"seconds": a.seconds, "repeat": a.repeat, "tests": a.tests,
                     "workers": a.workers, "offload": a.offload, "compare": a.compare,
                     "ping_count": a.ping_count, "ping_interval": a.ping_interval,
                     "quick": a.quick, "pin": a.pin, "argv": sys.argv[1:] if argv is None else argv}}
    runs: List[dict] = []
    interrupted = None
    t_start = time.monotonic()
    idx = 0
    try:
        for rep in range(1, a.repeat + 1):     # interleaved: every variant once per rep
            for v in variants:
                idx += 1
                log(f"rep {rep}/{a.repeat}: {v.name}")
                runs.append(one_run(a, v, rep, idx))
    except Interrupted as e:
        interrupted = str(e)
        log(f"interrupted by {e}; namespaces removed")
    result = {"meta": meta, "runs": runs, "summary": summarize(runs),
              "elapsed_s": time.monotonic() - t_start, "interrupted": interrupted}
    machine.write_report(a, result, markdown(result) if runs else "", chart if runs else None)
    if interrupted:
        return 130
    failed = any(r.get("error") or any("error" in t for t in r["tests"].values())
                 for r in runs)
    return 1 if failed else 0


def render(a) -> int:
    """--render: the tables and the chart of a saved run, figures recomputed from its runs
    (no root, no namespace, no traffic; --json, if given, gets the recomputed result)."""
    with open(a.render) as f:
        result = json.load(f)
    result["summary"] = summarize(result["runs"])
    machine.write_report(a, result, markdown(result), chart)
    return 0


if __name__ == "__main__":
    sys.exit(main())
