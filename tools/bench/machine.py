"""What a benchmark ran on: the engine's commit and the host (shared by both benchmarks)."""
from __future__ import annotations

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
