"""`python -m engine stats [--device NAME] [--json] [--watch SECONDS]`: a running engine's
counters, rates and per-process resources, read from another process.

The tool maps the engine's control segment read-only, without the pool (the packets), and
rebuilds its Layout from the segment's own header (engine/shm.py, `attach_readonly`), so
it needs no engine settings. Segments are named by device and network namespace, so it
sees the engine on that device in its own namespace only (run it under `ip netns exec`
for another).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import List, Optional

import psutil

from . import journal, monitor, platform, shm
from .config import DEFAULT_DEVICE, Config
from .errors import ConfigError, EngineError

RATE_INTERVAL = 1.0   # seconds between the two samples of a one-shot report
START_WAIT = 2.0      # seconds to wait for an engine that is creating its segments


class NoEngine(EngineError):
    """No running engine on that device in this network namespace."""


def attach_readonly(device: str, wait: float = START_WAIT):
    """(read-only shm.Mapped of the control segment, its path) of the engine running on
    `device` in this network namespace; raises NoEngine with a one-line reason otherwise."""
    prefix = shm.shm_prefix(device)
    path = platform.segment_path(f"{prefix}.ctl")
    deadline = time.monotonic() + wait
    while True:
        view, created = _attach(prefix, path, device)
        if view is not None and view.ctl[journal.SUPERVISOR_PID]:
            break
        if time.monotonic() >= deadline:  # segment without a (complete) header
            raise NoEngine(f"the engine on {device} is still starting, or predates the stats "
                           f"header ({path})")
        time.sleep(0.05)
    sup = int(view.ctl[journal.SUPERVISOR_PID])
    if not _alive_since(sup, created):
        raise NoEngine(f"no engine runs on device {device} in this network namespace (its "
                       f"supervisor, pid {sup}, is gone; the next start reclaims {path})")
    return view, path


def _attach(prefix: str, path: str, device: str):
    try:
        return shm.attach_readonly(prefix)
    except FileNotFoundError:
        raise NoEngine(f"no engine runs on device {device} in this network namespace") from None
    except PermissionError:
        raise NoEngine(f"{path}: permission denied (run as root or as the engine's --user)") \
            from None


def _alive_since(pid: int, created: float) -> bool:
    """pid runs and is older than the segment (not a later process that reused the pid)."""
    try:
        return psutil.Process(pid).create_time() <= created + 1.0
    except psutil.Error:
        return False


def still_running(view: shm.Mapped, path: str) -> bool:
    """The segment we map is still the live one (not unlinked at the engine's exit)."""
    created = platform.segment_created(f"{view.prefix}.ctl")
    return created is not None and _alive_since(int(view.ctl[journal.SUPERVISOR_PID]), created)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m engine stats",
        description="Counters, rates and per-process CPU/RSS of the engine running on a "
                    "device in this network namespace (read-only).")
    p.add_argument("--device", default=DEFAULT_DEVICE, help=f"device name (default {DEFAULT_DEVICE})")
    p.add_argument("--json", action="store_true", help="one JSON object (per sample with --watch)")
    p.add_argument("--watch", type=float, metavar="SECONDS",
                   help="print rates every SECONDS until interrupted")
    return p


def report(device: str, prev, cur, as_json: bool, with_counters: bool) -> str:
    if as_json:
        return json.dumps({**dataclasses.asdict(cur), "rates": monitor.rates(prev, cur)},
                          separators=(",", ":"))
    sup = cur.procs.get("supervisor", {}).get("pid", "?")
    head = (f"engine on {device}: supervisor pid {sup}, {cur.workers} workers, "
            f"{cur.shm_bytes / 2**20:.1f} MiB shared")
    parts = [head, monitor.format_counters(cur)] if with_counters else []
    return "\n".join(parts + [monitor.format_table(prev, cur)])


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.watch is not None and not 0 < args.watch < float("inf"):  # nan fails both
        build_parser().error("--watch: a positive number of seconds")
    try:
        Config(device=args.device)        # the engine's own rule for device names
    except ConfigError as e:
        build_parser().error(str(e))
    try:
        view, path = attach_readonly(args.device)
        cache: dict = {}
        prev = monitor.snapshot(view, view.layout.workers, cache, args.device)
        interval = args.watch or RATE_INTERVAL
        first = True
        while True:
            time.sleep(interval)
            if not still_running(view, path):
                raise NoEngine(f"the engine on {args.device} has stopped")
            cur = monitor.snapshot(view, view.layout.workers, cache, args.device)
            print(report(args.device, prev, cur, args.json,
                         with_counters=first or not args.watch), flush=True)
            if args.watch is None:
                return 0
            if not args.json:
                print()
            prev, first = cur, False
    except EngineError as e:
        print(f"engine: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `stats | head`: the reader has gone, nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
