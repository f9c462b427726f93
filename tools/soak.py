#!/usr/bin/env python3
"""Soak test of the engine (issue 4; DESIGN.md invariant 8, fixed footprint): the engine
at full load in a network namespace of its own for --minutes, sampled every --interval
seconds; after the warm-up, no engine process may grow its RSS by 1 MiB or more, open a
new file descriptor, or map new shared memory.

    sudo .venv/bin/python tools/soak.py --minutes 10        # make soak
    sudo .venv/bin/python tools/soak.py --seconds 50 --interval 2 --json soak.json

Load (tests/inject.py `load`, run inside the namespace): two TCP streams (IPv4 and IPv6,
back-to-back 16 MiB transfers, each SHA-256 checked), two UDP echo loops and two pings
(IPv4 and IPv6, every 50 ms), all through the mirror at once, for the whole run.

Samples (psutil and /proc, from outside the namespace): RSS (total, and private: without
the pages of the shared frame pool, see rss_parts) and open fds of every process
of the engine (supervisor, reader, workers, writer, and multiprocessing's helpers), the
/dev/shm files they map (count, bytes), /dev/shm usage as a whole (informational: other
programs use it too), and the engine's counters (`engine/stats.py`, read-only). A table is
printed as it goes.

Verdict (exit 0 when all hold):
  - RSS growth after the warm-up < 1 MiB per process (private RSS: max after warm-up -
    first sample after warm-up), no new fds, the same shared-memory mappings and sizes;
  - no process restarted (the same pids throughout, restart counters 0);
  - every TCP transfer intact, at least one per stream; UDP and ping answered;
  - after the load, the counters add up (rx = tx + dropped, nothing in flight), and
    SIGTERM stops the engine with exit 0 within 2 s, leaving no segment behind.

Only processes started here are stopped, by pid; the namespace (198.18.0.0/24,
2001:db8::/64, no route out) is deleted on any exit, Ctrl-C and SIGTERM included.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

import psutil  # noqa: E402

from netns import PY, Engine, Netns  # noqa: E402
from probe import Probe, engine_tree  # noqa: E402

ADDR = ("--address", "198.18.0.1/24", "--address6", "2001:db8::1/64")
RSS_LIMIT = 1 << 20
MIB = 1 << 20


def role_of(p: psutil.Process, roles: dict) -> str:
    for role, pid in roles.items():
        if pid == p.pid:
            return role
    try:
        cmd = " ".join(p.cmdline())
    except psutil.Error:
        return f"pid{p.pid}"
    if "forkserver" in cmd:
        return "forkserver"
    if "resource_tracker" in cmd:
        return "res_tracker"
    return f"pid{p.pid}"


def shm_maps(pid: int) -> set:
    try:
        with open(f"/proc/{pid}/maps") as f:
            return {line.split(None, 5)[5].strip() for line in f
                    if len(line.split(None, 5)) == 6 and "/dev/shm/" in line}
    except OSError:
        return set()


def rss_parts(pid: int) -> dict:
    """RssAnon, RssFile, RssShmem of /proc/PID/status in bytes, and `private` (anon + file):
    the RSS without the pages of shared memory. The frame pool is allocated once at start,
    but its pages count in a process's RSS only once that process has touched them, which
    a rare deep burst can do late in a run: that is not growth (invariant 8 is about
    allocations), so the verdict is on `private`, and the shared pages are checked apart
    (the same segments, the same sizes)."""
    with open(f"/proc/{pid}/status") as f:
        kv = dict(line.split(":", 1) for line in f if line.startswith("Rss"))
    out = {k.lower(): int(kv[k].split()[0]) * 1024 for k in ("RssAnon", "RssFile", "RssShmem")}
    out["private"] = out["rssanon"] + out["rssfile"]
    return out


def shm_usage() -> int:
    st = os.statvfs("/dev/shm")
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def sample(t0: float, sup: int, pr: Probe) -> dict:
    roles = pr.pids()
    procs, shm = {}, set()
    for p in engine_tree(sup):
        try:
            with p.oneshot():
                procs[role_of(p, roles)] = {"pid": p.pid, "rss": p.memory_info().rss,
                                            "fds": p.num_fds(), **rss_parts(p.pid)}
        except (psutil.Error, OSError):
            continue
        shm |= shm_maps(p.pid)
    sizes = 0
    for path in shm:
        try:
            sizes += os.stat(path.split(" (deleted)")[0]).st_size
        except OSError:
            pass
    t = pr.totals()
    return {"t": round(time.time() - t0, 1), "procs": procs, "shm_files": sorted(shm),
            "shm_bytes": sizes, "shm_used": shm_usage(),
            "rx": t["rx_frames"], "tx": t["tx_frames"], "dropped": t["dropped"],
            "in_flight": t["in_flight"], "restarts": t["restarts"]}


def print_header(s: dict) -> list:
    order = [r for r in ("supervisor", "reader", "worker0", "worker1", "worker2", "worker3",
                         "writer", "forkserver", "res_tracker") if r in s["procs"]]
    order += sorted(set(s["procs"]) - set(order))
    cols = "".join(f"{r[:11]:>16}" for r in order)
    print(f"{'t/s':>6}{'rx frames':>12}{'tx frames':>12}{'drops':>8}{'shm MiB':>9}{cols}", flush=True)
    print(f"{'':>47}" + "".join(f"{'priv MiB / fds':>16}" for _ in order), flush=True)
    return order


def print_row(s: dict, order: list) -> None:
    cells = "".join(
        f"{s['procs'][r]['private'] / MIB:>10.1f} /{s['procs'][r]['fds']:>3}" if r in s["procs"]
        else f"{'-':>16}" for r in order)
    print(f"{s['t']:>6.0f}{s['rx']:>12,}{s['tx']:>12,}{s['dropped']:>8,}"
          f"{s['shm_bytes'] / MIB:>9.1f}{cells}", flush=True)


def verdict(samples: list, warmup: float) -> list:
    """Footprint failures after the warm-up (empty list: none)."""
    after = [s for s in samples if s["t"] >= warmup]
    if len(after) < 2:
        return [f"only {len(after)} samples after the {warmup:.0f} s warm-up"]
    base, fails = after[0], []
    for role, b in base["procs"].items():
        series = [s["procs"].get(role) for s in after]
        if any(x is None or x["pid"] != b["pid"] for x in series):
            fails.append(f"{role}: pid {b['pid']} did not run throughout (restarted or gone)")
            continue
        growth = max(x["private"] for x in series) - b["private"]
        if growth >= RSS_LIMIT:
            fails.append(f"{role}: RSS (private) grew {growth / 1024:.0f} KiB after warm-up "
                         f"({b['private'] / MIB:.1f} -> "
                         f"{max(x['private'] for x in series) / MIB:.1f} MiB)")
        more_fds = max(x["fds"] for x in series) - b["fds"]
        if more_fds > 0:
            fails.append(f"{role}: {more_fds} new fds after warm-up ({b['fds']} -> "
                         f"{max(x['fds'] for x in series)})")
    for s in after:
        if s["shm_files"] != base["shm_files"] or s["shm_bytes"] != base["shm_bytes"]:
            fails.append(f"shared memory changed at {s['t']} s: {base['shm_files']} "
                         f"({base['shm_bytes']} bytes) -> {s['shm_files']} ({s['shm_bytes']} bytes)")
            break
    if any(s["restarts"] for s in samples):
        fails.append(f"restarts: {samples[-1]['restarts']}")
    return fails


def soak(seconds: float, interval: float, warmup: float, workers: int) -> dict:
    ns = Netns("soak")
    report = {"seconds": seconds, "warmup": warmup, "workers": workers, "samples": [],
              "failures": []}
    try:
        eng = Engine(ns, "--workers", str(workers), *ADDR)
        ns.assert_isolated("mir0")
        pr = Probe(ns)
        load = ns.popen(PY, os.path.join(ROOT, "tests", "inject.py"), "load",
                        "--seconds", str(seconds))
        t0 = time.time()
        order = None
        while time.time() - t0 < seconds:
            s = sample(t0, eng.proc.pid, pr)
            report["samples"].append(s)
            if order is None or set(s["procs"]) - set(order):
                order = print_header(s)
            print_row(s, order)
            if eng.proc.poll() is not None:
                report["failures"].append(f"the engine exited ({eng.proc.returncode}): "
                                          f"{eng.log[-800:]}")
                return report
            time.sleep(max(0.0, interval - (time.time() - t0 - s["t"])))
        out, err = load.communicate(timeout=max(60.0, seconds))
        traffic = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"error": err[-800:]}
        report["traffic"] = traffic
        report["failures"] += verdict(report["samples"], warmup)
        if traffic.get("tcp_bad") or traffic.get("tcp_ok", 0) < 2:
            report["failures"].append(f"TCP: {traffic.get('tcp_ok')} transfers intact, bad: "
                                      f"{str(traffic.get('tcp_bad'))[:600]}")
        if traffic.get("udp_echoed", 0) < 0.9 * traffic.get("udp_sent", 1):
            report["failures"].append(f"UDP: {traffic.get('udp_echoed')} of "
                                      f"{traffic.get('udp_sent')} echoed")
        for line in traffic.get("ping", []):
            if " 0 received" in line or "packets transmitted" not in line:
                report["failures"].append(f"ping: {line}")
        q = pr.quiescent(timeout=10)
        report["final_totals"] = q
        if q["in_flight"] or q["rx_frames"] != q["tx_frames"] + q["dropped"]:
            report["failures"].append(f"counters do not add up: {q}")
        segments = ns.shm_segments("mir0")
        pr.close()
        code, took = eng.stop(signal.SIGTERM)
        report["stop"] = {"code": code, "seconds": round(took, 3)}
        if code != 0 or took >= 2.0:
            report["failures"].append(f"stop: exit {code} after {took:.2f} s")
        if any(os.path.exists(x) for x in segments):
            report["failures"].append(f"segments left after stop: {segments}")
        return report
    finally:
        ns.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, help="duration in seconds (overrides --minutes)")
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    ap.add_argument("--warmup", type=float,
                    help="seconds before the footprint is taken as settled "
                         "(default: a quarter of the run, 10 to 60 s)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", metavar="PATH", help="write every sample and the verdict here")
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("soak: needs root (it makes a network namespace and a TUN device)", file=sys.stderr)
        return 2
    seconds = a.seconds if a.seconds else a.minutes * 60
    warmup = a.warmup if a.warmup is not None else min(60.0, max(10.0, seconds / 4))

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        report = soak(seconds, a.interval, warmup, a.workers)
    except KeyboardInterrupt as e:
        print(f"soak: interrupted ({e or 'SIGINT'}); namespace removed", file=sys.stderr)
        return 130
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)
    t = report.get("traffic", {})
    print(f"traffic: {t.get('tcp_ok')} TCP transfers intact ({t.get('tcp_bytes', 0) / MIB:,.0f} MiB), "
          f"UDP {t.get('udp_echoed')}/{t.get('udp_sent')} echoed; ping: {t.get('ping')}")
    if report.get("final_totals"):
        q = report["final_totals"]
        print(f"engine: read {q['rx_frames']:,}, wrote {q['tx_frames']:,}, dropped {q['dropped']:,} "
              f"{ {k: v for k, v in q['drops'].items() if v} }; stop {report.get('stop')}")
    if report["failures"]:
        print("SOAK FAILED:\n  " + "\n  ".join(report["failures"]))
        return 1
    print(f"soak passed: {seconds:.0f} s, warm-up {warmup:.0f} s: RSS growth < 1 MiB per process, "
          f"no new fds, shared memory unchanged, no restart")
    return 0


if __name__ == "__main__":
    sys.exit(main())
