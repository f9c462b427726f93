#!/usr/bin/env python3
"""Kernel-free benchmark of the engine pipeline: reader -> workers -> writer over the
in-memory device (engine/tun/memory.py), no TUN device, no root needed.

For each frame size (64 and 1500 bytes by default) and worker count (1, 2, 4):

1. A pcap (LINKTYPE_RAW) of 1024 distinct valid IPv4/UDP frames is written with
   engine/pcap.py: source 198.18.0.1 (the device address), destinations
   198.18.0.2..250, varied ports, correct IPv4 header and UDP checksums, so the mirror
   forwards every one (--proto tcp: TCP segments instead, which the engine shards by
   ports too).
2. A child process (one per case, with a timeout) runs engine.supervisor.Supervisor
   in-process with --driver memory --no-offload --address 198.18.0.1/24, replaying the
   pcap --frames times in total. The device is the engine's MemoryDevice behind a start
   gate (tools/bench/memgate.py): reads return nothing until the benchmark opens it.
3. A thread in that process waits until every actor (reader, workers, writer) runs: the
   engine's `ready` words in the control segment (engine/shm.py) are all set (older
   engines: each actor's `sleeps` counter, engine/stats.py, is >= 1). It then opens the
   gate and samples the shared counters about every millisecond.
4. Measured window: from the first sample that shows a frame read (reader in_frames > 0)
   to the first sample where written + dropped equals the frames replayed. Process
   start-up is excluded; the timestamps are good to about one sampling interval (the
   largest gap is reported). fps = frames / window; "steady" is the rate between 10 %
   and 90 % of frames written. CPU % per actor (psutil, 100 = one core) covers first
   read to done.

    .venv/bin/python tools/bench/pipeline_bench.py [--frames 300000] [--sizes 64,1500]
        [--workers 1,2,4] [--proto udp|tcp] [--batch N] [--repeat 1] [--json F]
        [--markdown F] [--svg F] [--quick]

Note: the reader "produces" the frames: the memory device's slot I/O (MemorySlotIO in
engine/tun/memory.py) copies each batch from a preloaded matrix into the pool with one
numpy assignment, and the writer's side only counts them, so the device costs a few
numpy calls per batch and the figure is the pipeline's own.
"""
from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import os
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for p in (str(REPO), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)
import machine  # noqa: E402  (tools/bench/machine.py)
from engine.packet.neighbours import internet_checksum as checksum  # noqa: E402  (RFC 1071)

DEVICE_ADDR = "198.18.0.1/24"
DISTINCT = 1024


# ------------------------------------------------------------------------ frames
def udp4_frame(src: str, dst: str, sport: int, dport: int, total: int, ident: int) -> bytes:
    """A valid IPv4/UDP packet of `total` bytes (IPv4 header checksum and UDP checksum)."""
    s, d = ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed
    ulen = total - 20
    payload = bytes((ident + i) & 0xFF for i in range(ulen - 8))
    pseudo = s + d + struct.pack("!BBH", 0, 17, ulen)
    u = struct.pack("!HHHH", sport, dport, ulen, 0) + payload
    uc = checksum(pseudo + u) or 0xFFFF
    u = u[:6] + struct.pack("!H", uc) + u[8:]
    h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, ident & 0xFFFF, 0x4000, 64, 17,
                              0, s, d))
    h[10:12] = struct.pack("!H", checksum(bytes(h)))
    return bytes(h) + u


def tcp4_frame(src: str, dst: str, sport: int, dport: int, total: int, ident: int) -> bytes:
    """A valid IPv4/TCP segment (ACK|PSH) of `total` bytes, both checksums correct."""
    s, d = ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed
    tlen = total - 20
    payload = bytes((ident + i) & 0xFF for i in range(tlen - 20))
    t = struct.pack("!HHIIBBHHH", sport, dport, ident * 1000, 1, 0x50, 0x18, 65535, 0, 0) + payload
    tc = checksum(s + d + struct.pack("!BBH", 0, 6, tlen) + t)
    t = t[:16] + struct.pack("!H", tc) + t[18:]
    h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, ident & 0xFFFF, 0x4000, 64, 6,
                              0, s, d))
    h[10:12] = struct.pack("!H", checksum(bytes(h)))
    return bytes(h) + t


def build_frames(size: int, n: int = DISTINCT, proto: str = "udp"):
    if not 40 <= size <= 1500:
        raise SystemExit(f"frame size {size}: between 40 and 1500 bytes")
    make = udp4_frame if proto == "udp" else tcp4_frame
    net = ipaddress.ip_interface(DEVICE_ADDR)
    src = str(net.ip)
    base = int(net.network.network_address)
    out = []
    for i in range(n):
        dst = str(ipaddress.IPv4Address(base + 2 + i % 249))     # .2 .. .250
        out.append(make(src, dst, 1024 + (i * 7919) % 60000, 5000 + (i * 31) % 1000,
                              size, i))
    return out


# ------------------------------------------------------------------------ one case (child)
def run_case(size: int, workers: int, frames: int, pcap_path: str, timeout: float,
             proto: str = "udp", inline: str = "never", batch: int = 0) -> dict:
    """Runs in its own process: the supervisor in the main thread, the sampler in a thread."""
    import logging

    import numpy as np
    import psutil

    from engine import supervisor as sup_mod
    from engine.config import Config, parse_address
    from engine.stats import DROP_BASE, DROP_REASONS, F
    from memgate import GatedMemoryDevice

    logging.basicConfig(level="INFO", format="engine: %(message)s", stream=sys.stderr)
    loops = -(-frames // DISTINCT)
    total = loops * DISTINCT
    gate = tempfile.mktemp(prefix="pipeline_gate_")
    cfg = Config(device=f"pb{os.getpid()}"[:15], driver="memory", workers=workers,
                 offload=False, address=parse_address(DEVICE_ADDR, 4, "--address"),
                 replay=pcap_path, replay_loops=loops, duration=timeout, log_level="info",
                 inline=inline, **({"batch_size": batch} if batch else {}))
    sup_mod.open_device = lambda c: GatedMemoryDevice(
        gate, c.replay, c.replay_loops, None, name=c.device, mtu=c.mtu,
        vnet_hdr_len=c.vnet_hdr_len)
    sup = sup_mod.Supervisor(cfg)
    out = {"size": size, "workers": workers, "frames": total, "proto": proto, "inline": inline,
           "batch": cfg.batch_size}

    def sample():
        try:
            t_end = time.monotonic() + timeout
            while sup.segments is None or len(sup.procs) < workers + 2:
                if time.monotonic() > t_end or sup.stop_reason:
                    raise RuntimeError("engine did not start")
                time.sleep(0.01)
            rows = sup.segments.mapped.counters
            actors = workers + 2
            t0 = time.perf_counter()
            m = sup.segments.mapped
            if hasattr(m, "ready"):   # the engine's ready words: every actor's loop runs
                def up():
                    return all(m.ready[i] for i in range(actors))
            else:                     # older engines: every actor has gone idle once
                def up():
                    return all(rows[i][F["sleeps"]] >= 1 for i in range(actors))
            while not up():
                if time.monotonic() > t_end or sup.stop_reason:
                    raise RuntimeError("actors did not all come up")
                time.sleep(0.005)
            out["startup_s"] = time.perf_counter() - t0
            procs = {name: psutil.Process(p.pid) for name, p in sup.procs.items()}
            cpu0 = t_cpu0 = None
            drops = slice(DROP_BASE, DROP_BASE + len(DROP_REASONS))
            samples = []
            t_gate = time.perf_counter()
            open(gate, "w").close()
            while True:
                t = time.perf_counter()
                rd = int(rows[0][F["in_frames"]])
                # written: by the writer, or by the reader itself (its inline path)
                wr = int(rows[workers + 1][F["out_frames"]] + rows[0][F["inline_frames"]])
                dr = int(rows[:, drops].sum())
                samples.append((t, rd, wr, dr))
                if cpu0 is None and rd:  # CPU window starts at the first frame read
                    cpu0 = {n: sum(p.cpu_times()[:2]) for n, p in procs.items()}
                    t_cpu0 = time.perf_counter()
                if wr + dr >= total:
                    break
                if time.monotonic() > t_end or sup.stop_reason:
                    raise RuntimeError(f"timeout: read {rd}, written {wr}, dropped {dr}")
                time.sleep(0.001)
            t_done = samples[-1][0]
            actor_names = ["reader", *(f"worker{k}" for k in range(workers)), "writer"]
            cpu = {n: 100.0 * (sum(p.cpu_times()[:2]) - cpu0[n]) / max(1e-6, time.perf_counter()
                                                                        - t_cpu0)
                   for n, p in procs.items()}
            first = next(k for k, s in enumerate(samples) if s[1] > 0)
            t_first = samples[first][0]
            window = t_done - t_first
            wr_total = samples[-1][2]

            def t_at(frac):
                return next(s[0] for s in samples if s[2] >= frac * total)
            t10, t90 = t_at(0.1), t_at(0.9)
            gaps = [b[0] - a[0] for a, b in zip(samples, samples[1:])]
            out.update(
                window_s=window, fps=total / window,
                steady_fps=(0.8 * total / (t90 - t10)) if t90 > t10 else None,
                written=wr_total, dropped=samples[-1][3],
                drops={r: int(rows[:, DROP_BASE + i].sum()) for i, r in enumerate(DROP_REASONS)
                       if rows[:, DROP_BASE + i].sum()},
                gbps=total * size * 8 / window / 1e9,
                first_read_after_gate_s=t_first - t_gate,
                sample_gap_max_ms=1000 * max(gaps) if gaps else None,
                sample_gap_median_ms=1000 * statistics.median(gaps) if gaps else None,
                samples=len(samples), cpu_pct=cpu,
                batches={n: int(rows[i][F["batches"]]) for i, n in enumerate(actor_names)},
                sleeps={n: int(rows[i][F["sleeps"]]) for i, n in enumerate(actor_names)},
                ctx_switches={n: sum(p.num_ctx_switches()) for n, p in procs.items()},
                ring_hwm=int(np.max(rows[:, F["ring_hwm"]])))
        except Exception as e:  # reported, and the engine is stopped
            out["error"] = repr(e)
        finally:
            sup.stop_reason = sup.stop_reason or "benchmark done"

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        rc = sup.run()
    finally:
        try:
            os.unlink(gate)
        except OSError:
            pass
    th.join(5)
    out["engine_rc"] = rc
    return out


def child_main(argv) -> int:
    size, workers, frames, timeout = int(argv[0]), int(argv[1]), int(argv[2]), float(argv[4])
    res = run_case(size, workers, frames, argv[3], timeout, argv[5], argv[6], int(argv[7]))
    print("RESULT " + json.dumps(res), flush=True)
    return 0 if "error" not in res else 1


def run_child(cmd, size: int, workers: int, timeout: float) -> dict:
    """One case in a child process, with a timeout. On timeout or Ctrl-C the child gets
    SIGTERM (the supervisor then stops its pipeline cleanly), and after 10 s it and
    its own children are killed by PID."""
    import psutil
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=str(REPO))
    interrupted = None
    try:
        out, err = p.communicate(timeout=timeout)
    except (subprocess.TimeoutExpired, KeyboardInterrupt) as e:
        interrupted = e
        try:
            kids = psutil.Process(p.pid).children(recursive=True)
        except psutil.Error:
            kids = []
        p.terminate()
        try:
            out, err = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            for k in kids:
                try:
                    k.kill()
                except psutil.Error:
                    pass
            p.kill()
            out, err = p.communicate()
        if isinstance(e, KeyboardInterrupt):
            raise
    line = next((l for l in out.splitlines() if l.startswith("RESULT ")), None)
    if interrupted is not None:
        r = {"size": size, "workers": workers, "error": f"timeout after {timeout:g}s"}
    elif line is None:
        r = {"size": size, "workers": workers,
             "error": f"rc={p.returncode}: {err.strip()[-400:]}"}
    else:
        r = json.loads(line[7:])
    r["engine_log"] = [l for l in err.splitlines() if l.startswith("engine:")][-6:]
    return r


# ------------------------------------------------------------------------ report
def fmt(v) -> str:
    if v is None:
        return "–"
    if abs(v) >= 1e6:
        return f"{v / 1e6:.2f}M"
    if abs(v) >= 1e3:
        return f"{v / 1e3:.0f}k"
    return f"{v:.2f}" if abs(v) < 10 else f"{v:.0f}"


def summarize(results):
    groups = {}
    for r in results:
        groups.setdefault((r["size"], r["workers"]), []).append(r)
    rows = []
    for (size, w), rs in sorted(groups.items()):
        ok = [r for r in rs if "error" not in r]
        row = {"size": size, "workers": w, "runs": len(rs), "ok": len(ok),
               "errors": [r["error"] for r in rs if "error" in r]}
        for k in ("fps", "steady_fps", "gbps", "window_s", "startup_s", "dropped",
                  "sample_gap_max_ms"):
            vals = [r[k] for r in ok if r.get(k) is not None]
            if vals:
                row[k] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}
        if ok:
            last = ok[-1]
            row["cpu_pct"] = last["cpu_pct"]
            row["frames"] = last["frames"]
            row["drops"] = last.get("drops")
            row["cpu_us_per_frame"] = cpu_per_frame(last)
        rows.append(row)
    return rows


def cpu_per_frame(run) -> dict:
    """CPU µs per frame of one run, by kind of actor (reader, workers together, writer)
    and in total: its CPU % per actor over its window, per frame replayed. On a full
    machine this, not the frame rate alone, shows where an extra worker costs."""
    per = {"reader": 0.0, "workers": 0.0, "writer": 0.0}
    for name, pct in run["cpu_pct"].items():
        per["workers" if name.startswith("worker") else name] += \
            pct / 100 * run["window_s"] / run["frames"] * 1e6
    per["total"] = sum(per.values())
    return per


def scaling(summary) -> list:
    """(size, workers, change of the median fps against the fewest workers of that size):
    the issue's "1 -> 4 workers costs no more than 10 %" figure."""
    out = []
    for size in sorted({r["size"] for r in summary}):
        rows = sorted((r for r in summary if r["size"] == size and r.get("fps")),
                      key=lambda r: r["workers"])
        for r in rows[1:]:
            out.append((size, rows[0]["workers"], r["workers"],
                        r["fps"]["median"] / rows[0]["fps"]["median"] - 1))
    return out


def markdown(result) -> str:
    m = result["meta"]
    L = [f"pipeline benchmark (memory device, no kernel), {m['date']}: {m['host']['cpu']} "
         f"({m['host']['nproc']} CPUs), Python {m['host']['python']}; "
         f"{m['args']['repeat']} repetition(s)"
         f"{' (median (min–max))' if m['args']['repeat'] > 1 else ''}, "
         f"{m['args'].get('proto', 'udp').upper()} frames, offload off, batch "
         f"{m['args']['batch']}.", "",
         "| frame | workers | frames | fps (first read → last write) | steady fps (10–90 %) | "
         "Gbit/s of IP | window s | dropped | CPU % per actor (last run) |",
         "|---|---|---|---|---|---|---|---|---|"]

    def c(row, k, f=fmt):
        v = row.get(k)
        if not v:
            return "–"
        if v["min"] != v["max"]:
            return f"{f(v['median'])} ({f(v['min'])}–{f(v['max'])})"
        return f(v["median"])
    for row in result["summary"]:
        if not row["ok"]:
            L.append(f"| {row['size']} B | {row['workers']} | – | ERROR: "
                     f"{row['errors'][0][:120]} | | | | | |")
            continue
        cpu = ", ".join(f"{n.replace('worker', 'w')} {v:.0f}" for n, v in row["cpu_pct"].items())
        L.append(f"| {row['size']} B | {row['workers']} | {row['frames']} | {c(row, 'fps')} | "
                 f"{c(row, 'steady_fps')} | {c(row, 'gbps', lambda v: f'{v:.2f}')} | "
                 f"{c(row, 'window_s', lambda v: f'{v:.2f}')} | "
                 f"{c(row, 'dropped', lambda v: str(int(v)))} | {cpu} |")
    steps = scaling(result["summary"])
    if steps:
        L += ["", "Frame rate against the fewest workers (medians): " + "; ".join(
            f"{size} B {a} → {b} workers {100 * d:+.0f} %".replace("-", "−")
            for size, a, b, d in steps) + "."]
    per = [r for r in result["summary"] if r.get("cpu_us_per_frame")]
    if per:
        L += ["", "CPU µs per frame (last run; reader, workers together, writer = total): "
              + "; ".join(f"{r['size']} B {r['workers']} w: "
                          + ", ".join(f"{r['cpu_us_per_frame'][k]:.2f}"
                                      for k in ("reader", "workers", "writer"))
                          + f" = {r['cpu_us_per_frame']['total']:.2f}" for r in per) + "."]
    return "\n".join(L) + "\n"


def chart(result) -> str:
    import svg
    p = svg.Panel("engine pipeline over the memory device, kframes/s")
    for k, size in enumerate(sorted({r["size"] for r in result["summary"]})):
        pts = [(r["workers"], r["fps"]["median"] / 1000) for r in result["summary"]
               if r["size"] == size and r.get("fps")]
        p.series.append(svg.Series(f"{size}-byte frames", pts, color=svg.COLORS[k]))
    m = result["meta"]
    return svg.render("pipeline throughput by worker count", [p], width=520,
                      note=f"{m['date']}, {m['host']['nproc']} CPUs, first read to last write")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--case"]:
        return child_main(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--frames", type=int, default=300_000, help="frames per case (default 300k)")
    ap.add_argument("--sizes", default="64,1500", help="IP packet sizes in bytes")
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--repeat", type=int, default=1, help="interleaved repetitions")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per case")
    ap.add_argument("--proto", choices=("udp", "tcp"), default="udp",
                    help="udp (default; the engine shards UDP by addresses only) or tcp "
                         "(sharded by addresses and ports)")
    ap.add_argument("--inline", choices=("never", "auto", "always"), default="never",
                    help="the engine's --inline (default never: every frame through reader, "
                         "workers and writer; auto: as the engine runs by default)")
    ap.add_argument("--batch", type=int, default=0,
                    help="the engine's --batch (frames per batch, 1-1024; default: the "
                         "engine's default)")
    ap.add_argument("--quick", action="store_true", help="smoke mode: 20k frames per case")
    ap.add_argument("--json")
    ap.add_argument("--markdown")
    ap.add_argument("--svg")
    a = ap.parse_args(argv)
    if a.quick:
        a.frames = min(a.frames, 20_000)
    sizes = [int(x) for x in a.sizes.split(",") if x]
    workers = [int(x) for x in a.workers.split(",") if x]
    from engine.config import Config
    from engine.errors import ConfigError
    batch = a.batch or Config().batch_size
    try:
        Config(batch_size=batch)  # a bad --batch: one clear error before any case runs
    except ConfigError as e:
        raise SystemExit(f"pipeline_bench: {e}")

    def on_term(signum, _frame):
        raise KeyboardInterrupt(signum)
    signal.signal(signal.SIGTERM, on_term)
    tmp = tempfile.mkdtemp(prefix="pipeline_bench_")
    results = []
    try:
        pcaps = {}
        from engine import pcap
        for s in sizes:
            pcaps[s] = os.path.join(tmp, f"udp{s}.pcap")
            pcap.write_frames(pcaps[s], build_frames(s, proto=a.proto))
        for rep in range(1, a.repeat + 1):
            for s in sizes:
                for w in workers:
                    print(f"[pipeline_bench] rep {rep}: {s} B, {w} worker(s), {a.frames} frames",
                          file=sys.stderr, flush=True)
                    cmd = [sys.executable, str(Path(__file__).resolve()), "--case", str(s),
                           str(w), str(a.frames), pcaps[s], str(a.timeout), a.proto, a.inline,
                           str(batch)]
                    r = run_child(cmd, s, w, a.timeout + 30)
                    r["rep"] = rep
                    if "error" in r:
                        print(f"[pipeline_bench]   error: {r['error'][:300]}", file=sys.stderr)
                    else:
                        print(f"[pipeline_bench]   {r['fps']:.0f} fps over {r['window_s']:.2f} s "
                              f"(start-up {r['startup_s']:.2f} s excluded)", file=sys.stderr)
                    results.append(r)
    except KeyboardInterrupt:
        print("[pipeline_bench] interrupted", file=sys.stderr)
        return 130
    finally:
        for f in os.listdir(tmp):
            os.unlink(os.path.join(tmp, f))
        os.rmdir(tmp)
    result = {"meta": {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                       "host": machine.host_info(), "engine_commit": machine.engine_commit(),
                       "args": {"frames": a.frames, "sizes": sizes, "workers": workers,
                                "repeat": a.repeat, "batch": batch, "quick": a.quick,
                                "proto": a.proto}},
              "runs": results, "summary": summarize(results)}
    machine.write_report(a, result, markdown(result), chart)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
