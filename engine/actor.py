"""What the reader, the workers and the writer share: the Context each is started with,
the set-up of a child process, and `Idle`, the tail of a loop that found no work."""
from __future__ import annotations

import logging
import signal
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from . import journal, packet, platform, shm
from .capture import Capture
from .errors import EngineError
from .packet import FORWARD, Mirror
from .stats import DROP_BASE, DROP_REASONS, F

log = logging.getLogger("engine")
I_DROP_BYTES = F["drop_bytes"]

IDLE_TIMEOUT = 0.5  # seconds; a sleep's bound, a safety net behind the wake-up handshake


@dataclass(frozen=True)
class Context:
    """Everything a process body needs; pickled into each child at start. Workers get
    it with `device` None: they never touch the device, and a device whose I/O runs in
    supervisor threads (io_threads) must not be handed to another process at all."""

    prefix: str
    layout: shm.Layout
    device: object            # an engine.tun.Device (None in a worker's)
    rule: Mirror
    batch: int
    spin_s: float
    wakes: Tuple[object, ...]  # one platform wake-up per actor (engine/topology.py numbers)
    capture: Optional[Capture] = None  # --pcap
    inline: str = "auto"                # --inline: auto, always, never (engine/topology.py)

    @property
    def workers(self) -> int:
        return self.layout.workers


def start_child(ctx: Context) -> shm.Mapped:
    """Set up a child process and map the run's segments in it."""
    child_setup()
    return shm.attach(ctx.prefix, ctx.layout)


def child_setup() -> None:
    # what a terminal sends the whole process group, and the stats request, are for the
    # supervisor alone, which decides when its children stop
    for sig in platform.CHILD_IGNORED_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    # a killed supervisor must leave no process holding the device or the segments
    platform.die_with_parent()


def stopping(m: shm.Mapped) -> bool:
    return m.ctl[journal.STOP] != 0


class Idle:
    """What a loop does when a poll finds no work: poll again at once for `spin_s` (a
    frame that comes back-to-back is then taken without a sleep and a wake-up), then nap
    in NAP-long sleeps until `nap_window` after the last work (a Python process woken
    after a few idle milliseconds runs its first frames several times slower:
    docs/performance-notes.md, "Lone frames and warm naps"), then sleep IDLE_TIMEOUT at a
    time. One spin per quiet spell: after a sleep, the next empty poll sleeps again."""

    NAP = 0.001

    __slots__ = ("spin_s", "nap_window", "yield_cpu", "since", "spin")

    def __init__(self, spin_s: float, nap_window: float = 0.0, yield_cpu: bool = False) -> None:
        self.spin_s, self.nap_window, self.yield_cpu = spin_s, nap_window, yield_cpu
        self.since, self.spin = 0.0, spin_s

    def worked(self) -> None:
        self.since, self.spin = 0.0, self.spin_s

    def timeout(self, now: float) -> float:
        """0 while spinning (poll again), else how long to sleep: NAP or IDLE_TIMEOUT."""
        since = self.since = self.since or now
        if now - since < self.spin:
            if self.yield_cpu:   # give way at once to any runnable process
                platform.yield_cpu()
            return 0.0
        self.spin = 0.0
        return self.NAP if now - since < self.nap_window else IDLE_TIMEOUT


def share_cpus(ctx: Context) -> bool:
    """Scheduling of a worker or writer process; returns whether its idle spin should
    yield the CPU on every turn. With more engine processes than usable CPUs, a woken
    worker used to preempt the reader mid-batch; SCHED_BATCH (no privilege needed) makes
    it wait for a free CPU or the next tick instead, so the reader finishes its batch and
    the worker takes a longer run (docs/performance-notes.md, "Scheduling on fewer CPUs
    than processes"). With a CPU per process nothing changes."""
    if ctx.layout.actors <= platform.usable_cpus():
        return False
    return platform.share_cpus()  # False where there is no SCHED_BATCH


def open_capture(ctx: Context, m: shm.Mapped):
    """This actor's --pcap appender, or None; a file it cannot reopen (replaced since the
    supervisor made it) ends the capture, never the actor."""
    if not ctx.capture:
        return None
    try:
        return ctx.capture.open(m.ctl[journal.CAPTURED:journal.CAPTURED + 1],
                                m.ctl[journal.CAPTURE_ENDED:journal.CAPTURE_ENDED + 1])
    except (EngineError, OSError) as e:
        m.ctl[journal.CAPTURE_ENDED] = 1
        log.warning("--pcap: %s; capture stopped, the mirror goes on", e)
        return None


def count_drops(c: list, reasons: np.ndarray, lens) -> np.ndarray:
    """Count a run's dropped frames by reason (0: forwarded), and their bytes; returns
    which frames were forwarded."""
    for r, k in enumerate(np.bincount(reasons, minlength=len(DROP_REASONS) + 1)[1:]):
        if k:
            c[DROP_BASE + r] += int(k)
    forwarded = reasons == FORWARD
    c[I_DROP_BYTES] += int(np.asarray(lens, np.int64)[~forwarded].sum())
    return forwarded


def warm_up(rule: Mirror, workers: int) -> None:
    """Run the packet code's numpy forms, and the drop count, once at start (see
    packet.warm_up)."""
    packet.warm_up(rule, workers)
    count_drops([0] * len(F), np.zeros(4, np.uint8), [0] * 4)
