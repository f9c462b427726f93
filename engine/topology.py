"""Who runs and who mirrors: the actors of a run, their numbers, and who takes a backlog.

Actor numbers index the per-actor rows of the control segment (wait flags, counters,
ready words) and the wake-ups: the reader is 0, worker i is 1 + i, the writer W + 1.
"""
from __future__ import annotations

from . import platform

READER = 0
PIPELINE_MIN_CPUS = 4  # below this, --inline auto keeps the backlog in the reader too


def worker(i: int) -> int:
    return 1 + i


def writer(workers: int) -> int:
    return workers + 1


def actor_names(workers: int) -> tuple:
    return ("reader", *(f"worker{i}" for i in range(workers)), "writer")


def actor_of(name: str, workers: int) -> int:
    """The number of the actor called `name` (as actor_names spells it)."""
    return actor_names(workers).index(name)


def reader_takes_backlog(inline: str) -> bool:
    """Whether the reader mirrors and writes a backlog itself, so that the workers get
    frames only when some are already in flight: --inline always, or auto on a machine
    with fewer than PIPELINE_MIN_CPUS usable CPUs, where the traffic's own sender and
    receiver need the other CPUs and one process doing everything is faster
    (docs/performance-notes.md, "Who mirrors: the inline path and the workers")."""
    return inline == "always" or (inline == "auto" and platform.usable_cpus() < PIPELINE_MIN_CPUS)


def backlog_plan(inline: str, workers: int) -> str:
    """Who mirrors the frames, in words for the start-up log: on a small machine the
    workers asked for stay idle by design, and a user should not have to find that out
    from a CPU table."""
    them = f"the {workers} worker{'s' if workers != 1 else ''}"
    if inline == "never":
        return f"every frame goes through {them} (--inline never)"
    if not reader_takes_backlog(inline):
        return (f"the reader mirrors a frame itself when it has drained the device; "
                f"a backlog goes to {them} (--inline {inline})")
    why = ("--inline always" if inline == "always" else
           f"--inline auto on {platform.usable_cpus()} CPUs, fewer than {PIPELINE_MIN_CPUS}")
    stay = "stay" if workers != 1 else "stays"
    return f"the reader mirrors them all itself; {them} {stay} idle ({why})"


def describe(workers: int) -> str:
    """The pipeline as text (--show-topology)."""
    lines = [f"reader -> rx{i} -> worker{i} -> tx{i} -> writer" for i in range(workers)]
    return "\n".join(lines + ["writer -> free -> reader"])
