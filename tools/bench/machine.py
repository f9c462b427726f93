"""What a benchmark ran on (the engine's commit, the host) and where its report goes; shared
by both benchmarks."""
from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def engine_commit() -> str:
    """The repository's commit, with "+dirty" when engine/ has local changes."""
    try:
        h = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                           capture_output=True, text=True, timeout=5).stdout.strip()
        d = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "engine"],
                           capture_output=True, text=True, timeout=5).stdout.strip()
        return h + ("+dirty" if d else "")
    except (OSError, subprocess.SubprocessError):
        return "?"


def host_info() -> dict:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                       "?")
    except OSError:
        pass
    return {"kernel": platform.release(), "nproc": os.cpu_count(), "cpu": cpu,
            "python": platform.python_version()}


def write_report(a, result: dict, md: str, chart) -> None:
    """Print the tables, then write what the command line asked for: --json (the result),
    --markdown (the tables), --svg (chart(result); none without a chart)."""
    print(md)
    if getattr(a, "json", None):
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1, default=str)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(md)
    if a.svg and chart:
        with open(a.svg, "w") as f:
            f.write(chart(result))
