"""Observability: a frozen `Snapshot` of a run (shared counters + psutil figures) and its
dumps (one JSON line, a compact table of rates).

Theory of operation:
1. The counters are the rows of engine/stats.py in the control segment; any process that
   maps the segment (the supervisor, or `python -m engine stats` read-only) can read them.
   `snapshot()` copies the rows once, so every figure in a snapshot comes from one instant.
2. The processes are found in shared memory too: ctl[SUPERVISOR_PID] and the `ready`
   words (each actor stores its PID there when it runs; a restarted actor overwrites it).
   A ready word left by a dead actor, or a PID reused by some other program, is skipped:
   an actor must descend from the supervisor (its child under spawn, its forkserver's
   child under forkserver), or be the supervisor itself when reader and writer are its
   threads. The check is made once, when a pid enters the cache.
3. psutil's `cpu_percent` is "since the previous call on the same Process object", so the
   caller keeps a `procs_cache` {pid: psutil.Process} across snapshots; the first snapshot
   of a process reads 0.0. The host figure works the same way (psutil keeps it globally).
4. Rates are differences of two snapshots taken by the same observer (monotonic clock).
   At a quiescent moment totals satisfy rx = tx + dropped (DESIGN.md invariant 2);
   `in_flight` is what is between the two at the instant of the snapshot.
5. `Dumper` is the supervisor's side: a JSON line to --stats-file every --stats-interval
   seconds (a table on stderr when it is a terminal), on demand (SIGUSR1), and at exit.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np
import psutil

from . import journal, platform, safefile, stats, topology

log = logging.getLogger("engine")

# ctl words 4..7 of the first cache line: the numbers the Layout derives from. Written by
# shm.Segments at creation, so an outside reader needs nothing but the segment.
LAYOUT_WORDS = journal.LAYOUT_WORDS


@dataclass(frozen=True)
class Snapshot:
    """One observation of a run. Every field is plain data (JSON round-trips it).

    counters: actor -> {stats.FIELDS name: value}, cumulative since the run started.
    totals:   rx_frames, rx_bytes, tx_frames, tx_bytes, drops {reason: n}, dropped,
              dropped_bytes, in_flight, in_flight_bytes.
    rings:    current fill of rx<i>, tx<i> and the free ring.
    procs:    role (supervisor, reader, worker<i>, writer) -> pid, cpu_percent (of one CPU,
              since the observer's previous snapshot), rss (bytes), ctx_voluntary,
              ctx_involuntary (cumulative), fds (None when not permitted), threads.
              A process that is not running is absent.
    """

    time: float          # wall clock, seconds since the epoch
    monotonic: float     # the observer's clock, for rates
    device: str
    workers: int
    counters: Dict[str, Dict[str, int]]
    totals: Dict[str, object]
    rings: Dict[str, int]
    procs: Dict[str, Dict[str, object]]
    host_cpu: float      # percent of all CPUs since the observer's previous snapshot
    shm_bytes: int


def snapshot(mapped, workers: int, procs_cache: Dict[int, psutil.Process],
             device: str = "") -> Snapshot:
    """Observe the run behind `mapped` (a shm.Mapped, or the stats tool's read-only view)."""
    rows = np.array(mapped.counters)  # one copy
    names = topology.actor_names(workers)
    counters = {a: dict(zip(stats.FIELDS, map(int, row))) for a, row in zip(names, rows)}
    totals = stats.totals(rows, workers)
    rings = {f"{e}{i}": getattr(mapped, e)(i).fill() for e in ("rx", "tx") for i in range(workers)}
    rings["free"] = mapped.free().fill()
    L = mapped.layout
    return Snapshot(time.time(), time.monotonic(), device, workers, counters, totals, rings,
                    process_figures(engine_pids(mapped, workers), procs_cache),
                    psutil.cpu_percent(None), L.pool_bytes + L.ctl_bytes)


def engine_pids(mapped, workers: int) -> Dict[str, int]:
    """role -> pid of every engine process that has announced itself in shared memory."""
    sup = int(mapped.ctl[journal.SUPERVISOR_PID])
    roles = {"supervisor": sup} if sup else {}
    for name, pid in zip(topology.actor_names(workers), mapped.ready):
        if pid:
            roles[name] = int(pid)
    return roles


def process_figures(roles: Dict[str, int], cache: Dict[int, psutil.Process]) -> dict:
    """psutil figures per role; each pid is measured once (cpu_percent is per call)."""
    sup = roles.get("supervisor", 0)
    by_pid = {}
    for pid in set(roles.values()):
        try:
            p = cache.get(pid)
            if p is None:
                p = psutil.Process(pid)
                if sup and pid != sup and sup not in (q.pid for q in p.parents()):
                    continue  # a stale ready word whose pid now belongs to someone else
                cache[pid] = p
            by_pid[pid] = _figures(p)
        except psutil.Error:
            cache.pop(pid, None)
    for pid in set(cache) - set(by_pid):
        del cache[pid]
    return {role: {"pid": pid, **by_pid[pid]} for role, pid in roles.items() if pid in by_pid}


def _figures(p: psutil.Process) -> dict:
    with p.oneshot():
        mem, ctx = p.memory_info(), p.num_ctx_switches()
        fig = {"cpu_percent": p.cpu_percent(None), "rss": mem.rss,
               "ctx_voluntary": ctx.voluntary, "ctx_involuntary": ctx.involuntary,
               "threads": p.num_threads()}
    try:
        fig["fds"] = getattr(p, platform.PSUTIL_FDS)()  # fds on POSIX, handles on Windows
    except psutil.AccessDenied:  # another user's process: its fd table is private
        fig["fds"] = None
    return fig


# ---- formats ---------------------------------------------------------------------------
def to_json(snap: Snapshot, **extra) -> str:
    """One JSON line (no newline); `extra` keys (e.g. event="final") are added on top."""
    return json.dumps({**dataclasses.asdict(snap), **extra}, separators=(",", ":"))


def from_json(line: str) -> Snapshot:
    d = json.loads(line)
    return Snapshot(**{f.name: d[f.name] for f in dataclasses.fields(Snapshot)})


def rates(prev: Snapshot, cur: Snapshot) -> dict:
    """Per-second figures between two snapshots of one observer."""
    dt = max(cur.monotonic - prev.monotonic, 1e-9)

    def d(actor, field):  # a field this engine version does not have counts as 0
        return cur.counters[actor].get(field, 0) - prev.counters.get(actor, {}).get(field, 0)

    actors = {}
    for a in cur.counters:
        frames, batches = d(a, "in_frames"), d(a, "batches")
        # out: frames passed on, plus those the reader mirrored and wrote itself (inline)
        out = d(a, "out_frames") + d(a, "inline_frames")
        out_bytes = d(a, "out_bytes") + d(a, "inline_bytes")
        actors[a] = {
            "in_pps": frames / dt, "in_mbps": d(a, "in_bytes") * 8e-6 / dt,
            "out_pps": out / dt, "out_mbps": out_bytes * 8e-6 / dt,
            "drops_ps": sum(d(a, f"drop_{r}") for r in stats.DROP_REASONS) / dt,
            "avg_batch": frames / batches if batches else 0.0}
    t, pt = cur.totals, prev.totals
    drops = {r: (n - pt["drops"].get(r, 0)) / dt for r, n in t["drops"].items()}
    procs = {}
    for role, p in cur.procs.items():
        q = prev.procs.get(role)
        same = q is not None and q["pid"] == p["pid"]  # else restarted: no rate yet
        procs[role] = {"ctx_ps": (_ctx(p) - _ctx(q)) / dt if same else None}
    return {"interval": dt, "actors": actors, "drops": drops, "procs": procs,
            "rx_pps": (t["rx_frames"] - pt["rx_frames"]) / dt,
            "rx_mbps": (t["rx_bytes"] - pt["rx_bytes"]) * 8e-6 / dt,
            "tx_pps": (t["tx_frames"] - pt["tx_frames"]) / dt,
            "tx_mbps": (t["tx_bytes"] - pt["tx_bytes"]) * 8e-6 / dt,
            "drops_ps": (t["dropped"] - pt["dropped"]) / dt}


def _ctx(p: dict) -> int:
    return p["ctx_voluntary"] + p["ctx_involuntary"]


def summary_line(prev: Snapshot, cur: Snapshot) -> str:
    """rx/tx/drop rates, loss and host CPU in one line. Loss counts only the frames the
    engine failed to carry (stats.LOST_REASONS), not those the rule refused (filtered):
    an idle host's stray router solicitations are not a 100 % loss."""
    r = rates(prev, cur)
    lost = sum(r["drops"].get(k, 0.0) for k in stats.LOST_REASONS)
    loss = 100.0 * lost / r["rx_pps"] if r["rx_pps"] else 0.0
    return (f"{cur.device or 'engine'} {r['interval']:.1f} s: rx {r['rx_pps']:,.0f} pkt/s "
            f"{r['rx_mbps']:.1f} Mbit/s, tx {r['tx_pps']:,.0f} pkt/s {r['tx_mbps']:.1f} Mbit/s, "
            f"filtered {r['drops_ps'] - lost:,.0f}/s, lost {lost:,.0f}/s (loss {loss:.2f}%), "
            f"host cpu {cur.host_cpu:.0f}%")


def format_table(prev: Snapshot, cur: Snapshot) -> str:
    """A compact human table of the rates between two snapshots."""
    r = rates(prev, cur)
    out = [summary_line(prev, cur),
           f"{'actor':<10}{'in pkt/s':>11}{'in Mb/s':>9}{'out pkt/s':>11}{'out Mb/s':>9}"
           f"{'drop/s':>9}{'batch':>7}{'ring hwm':>9}{'restarts':>9}"]
    for a, x in r["actors"].items():
        c = cur.counters[a]
        out.append(f"{a:<10}{x['in_pps']:>11,.0f}{x['in_mbps']:>9.1f}{x['out_pps']:>11,.0f}"
                   f"{x['out_mbps']:>9.1f}{x['drops_ps']:>9,.0f}{x['avg_batch']:>7.1f}"
                   f"{c['ring_hwm']:>9}{c['restarts']:>9}")
    drops = [f"{k} {v:,.1f}/s ({cur.totals['drops'][k]:,})"
             for k, v in r["drops"].items() if cur.totals["drops"][k]]
    out.append("drops: " + (", ".join(drops) if drops else "none"))
    out.append(f"{'process':<11}{'pid':>8}{'cpu%':>7}{'rss MiB':>9}{'ctxsw/s':>9}{'fds':>6}")
    for role, p in cur.procs.items():
        ctx = r["procs"][role]["ctx_ps"]
        out.append(f"{role:<11}{p['pid']:>8}{p['cpu_percent']:>7.1f}{p['rss'] / 2**20:>9.1f}"
                   f"{'-' if ctx is None else format(ctx, ',.0f'):>9}"
                   f"{'-' if p['fds'] is None else p['fds']:>6}")
    return "\n".join(out)


def format_counters(snap: Snapshot) -> str:
    """The cumulative counters per actor, the batch-size histogram and the totals."""
    cols = ("in_frames", "in_bytes", "out_frames", "out_bytes", "batches", "sleeps",
            "ring_hwm", "restarts")
    out = [f"{'actor':<10}" + "".join(f"{c:>12}" for c in cols) + "  batch sizes "
           + "/".join(stats.HIST_BINS)]
    for a, c in snap.counters.items():
        hist = "/".join(str(c[f"batch_{b}"]) for b in stats.HIST_BINS)
        out.append(f"{a:<10}" + "".join(f"{c[k]:>12}" for k in cols) + f"  {hist}")
    t = snap.totals
    drops = ", ".join(f"{k} {v}" for k, v in t["drops"].items() if v) or "none"
    out.append(f"read {t['rx_frames']} frames ({t['rx_bytes']} bytes), wrote {t['tx_frames']} "
               f"({t['tx_bytes']} bytes), dropped {t['dropped']} ({drops}), in flight "
               f"{t['in_flight']}")
    out.append("rings: " + ", ".join(f"{k} {v}" for k, v in snap.rings.items()))
    return "\n".join(out)


# ---- the supervisor's dumper -------------------------------------------------------------
class Dumper:
    """Periodic, on-demand and final dumps for the supervisor's main loop.

    tick(now): every cfg.stats_interval seconds (monotonic `now`), a JSON line to
    cfg.stats_file and, when the stream (stderr) is a terminal, the table of rates; with
    neither a file nor a terminal, one summary line in the log. Interval 0: no ticks.
    dump_now(): a JSON line (event "signal") and the table, whatever the interval (SIGUSR1).
    final(): the last JSON line (event "final"), then the file is closed.
    """

    def __init__(self, cfg, mapped, workers: int, stream=None, stats_fd=None) -> None:
        self.mapped, self.workers, self.device = mapped, workers, cfg.device
        self.interval = cfg.stats_interval
        self.stream = sys.stderr if stream is None else stream
        self.tty = bool(self.interval) and _isatty(self.stream)
        self._procs: Dict[int, psutil.Process] = {}
        self._file = None
        self._write_failed = self._finished = self._stream_failed = False
        if cfg.stats_file:  # opened already, before anything was made (engine/cli.py)
            fd = stats_fd if stats_fd is not None else safefile.open_append(
                cfg.stats_file, "--stats-file")[0]
            self._file = os.fdopen(fd, "a", buffering=1, encoding="utf-8")
        self.last = self._take()  # the baseline: rates start here, and psutil is primed
        self._due: Optional[float] = self.last.monotonic + self.interval if self.interval else None

    def tick(self, now: float) -> None:
        if self._due is None or now < self._due:
            return
        self._due += self.interval
        if self._due <= now:  # fell behind (a long stall): skip, do not catch up in a burst
            self._due = now + self.interval
        self._dump("interval", table=self.tty, summary=not (self.tty or self._file))

    def dump_now(self) -> None:
        self._dump("signal", table=True)

    def final(self) -> None:
        if self._finished:
            return
        self._finished, self._due = True, None
        self._dump("final", table=False)
        if self._file is not None:
            try:
                self._file.close()
            except OSError as e:  # the last line could not be flushed: say so, exit as planned
                self._lost(e)
            self._file = None

    def _take(self) -> Snapshot:
        return snapshot(self.mapped, self.workers, self._procs, self.device)

    def _dump(self, event: str, table: bool, summary: bool = False) -> None:
        cur = self._take()
        if self._file is not None:
            try:
                self._file.write(to_json(cur, event=event) + "\n")
            except OSError as e:  # keep mirroring; say so once
                self._lost(e)
        if table and not self._stream_failed:
            try:
                self.stream.write(format_table(self.last, cur) + "\n")
                self.stream.flush()
            except (OSError, ValueError):  # stderr closed (`... 2>&1 | head`): never fatal
                self._stream_failed = True
        elif summary:
            log.info("stats: %s", summary_line(self.last, cur))
        self.last = cur


    def _lost(self, e: OSError) -> None:
        if not self._write_failed:
            log.warning("--stats-file: %s; stats lines are being lost", e.strerror)
        self._write_failed = True


def _isatty(stream) -> bool:
    isatty = getattr(stream, "isatty", None)   # a stream stand-in may have none
    try:
        return bool(isatty and isatty())
    except ValueError:   # a closed stream
        return False
