"""A worker: takes runs of frames from its rx ring, mirrors them in place
(engine/packet/ip.py), and passes every descriptor on to its tx ring for the writer, with
length 0 for a frame it dropped (the reason counted here)."""
from __future__ import annotations

import os
import time

import numpy as np

from .actor import Context, Idle, count_drops, share_cpus, start_child, stopping, warm_up
from .config import MAX_BATCH
from .journal import READER_DONE, READER_ROOM, recover_worker
from .packet import Pool, mirror
from .stats import Counters, F
from .topology import READER, worker, writer
from .wake import Sleeper, Waker

# Frames a worker (or the writer) takes from a ring at once: all that is queued, up to
# this, so one that fell behind catches up in one long run, each run's cost being mostly
# fixed (docs/performance-notes.md, "Worker runs and batch size").
RUN_MAX = MAX_BATCH
I_IN_FRAMES, I_IN_BYTES, I_SLEEPS = F["in_frames"], F["in_bytes"], F["sleeps"]
I_OUT_FRAMES, I_OUT_BYTES = F["out_frames"], F["out_bytes"]


def worker_loop(ctx: Context, i: int) -> None:
    """Worker i's process body."""
    m = start_child(ctx)
    rx, tx = m.rx(i), m.tx(i)
    w = writer(ctx.workers)
    to_writer = Waker(m.flag(w), ctx.wakes[w])
    to_reader = Waker(m.ctl[READER_ROOM:READER_ROOM + 1], ctx.wakes[READER])  # room in rx
    sleeper = Sleeper(m.flag(worker(i)), ctx.wakes[worker(i)])
    cnt = Counters(m.counters[worker(i)])
    recover_worker(m, i, rx, tx, sleeper, cnt.c)
    cnt.commit()
    warm_up(ctx.rule, ctx.workers)
    idle = Idle(ctx.spin_s, yield_cpu=share_cpus(ctx))
    mirror = _Mirror(ctx.rule, Pool(m.frames, m.slot_views()), cnt.c)
    m.ready[worker(i)] = os.getpid()

    def has_work():
        return rx.available() > 0 or m.ctl[READER_DONE] != 0

    while True:
        start, n = rx.peek(RUN_MAX)
        if not n:
            if stopping(m) and m.ctl[READER_DONE] and not rx.available():
                break
            timeout = idle.timeout(time.perf_counter())
            if timeout:
                cnt.c[I_SLEEPS] += 1
                cnt.commit()
                sleeper.sleep(has_work, timeout)
            continue
        idle.worked()
        n = min(n, tx.space())   # the writer is behind: take what fits, never drop
        if not n:
            sleeper.sleep(lambda: tx.space() > 0, 0.001)
            continue
        slots, lens = rx.slot[start:start + n], rx.length[start:start + n]
        m.worker_busy[i] = rx.taken + n  # these frames may be half rewritten until released
        tx.push(slots, mirror(slots, lens))   # push before release: a crash in between
        rx.release(n)                          # is undone at restart (engine/journal.py)
        to_reader.poke()   # only if the reader waits for room in a full ring
        m.worker_busy[i] = 0
        to_writer.poke()
        cnt.batch(n)
        cnt.commit()
    cnt.commit()
    m.worker_done[i] = 1
    ctx.wakes[w].set()


class _Mirror:
    """A run's rewrite and counts: returns the lengths to pass on, 0 for a dropped frame."""

    def __init__(self, rule, pool: Pool, c: list) -> None:
        self.rule, self.pool, self.c = rule, pool, c

    def __call__(self, slots: np.ndarray, lens: np.ndarray) -> np.ndarray:
        c, n, nbytes = self.c, len(slots), int(lens.sum())
        c[I_IN_FRAMES] += n
        c[I_IN_BYTES] += nbytes
        reasons = mirror(self.rule, self.pool, slots, lens)
        if reasons is not None:
            lens = np.where(count_drops(c, reasons, lens), lens, 0).astype(np.uint32)
            n, nbytes = int(np.count_nonzero(lens)), int(lens.sum())
        c[I_OUT_FRAMES] += n
        c[I_OUT_BYTES] += nbytes
        return lens
