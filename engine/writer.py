"""The writer: takes the runs the workers mirrored from every tx ring, writes each frame
with a length to the device (the frame's only read out of shared memory), and returns
every slot to the reader through the free ring."""
from __future__ import annotations

import os
import time

import numpy as np

from . import journal
from .actor import Context, Idle, open_capture, share_cpus, start_child
from .journal import STOP, WRITER_DONE, recover_writer
from .shm import Mapped
from .stats import Counters, F
from .topology import READER, writer
from .wake import Sleeper, Waker
from .worker import RUN_MAX

I_RING_HWM, I_JOURNAL, I_SLEEPS = F["ring_hwm"], F["journal"], F["sleeps"]


def writer_loop(ctx: Context, m: Mapped = None) -> None:
    """The writer's process body (or a supervisor thread's, given the mapping)."""
    own_process = m is None
    w = _Writer(ctx, start_child(ctx) if own_process else m, own_process)
    w.m.ready[writer(ctx.workers)] = os.getpid()
    w.run()
    w.cnt.commit()
    w.m.ctl[WRITER_DONE] = 1


class _Writer:
    def __init__(self, ctx: Context, m: Mapped, own_process: bool) -> None:
        W = ctx.workers
        self.m, self.W = m, W
        self.views = m.slot_views()
        self.io = ctx.device.slot_io(m.frames)
        self.tx = [m.tx(i) for i in range(W)]
        self.free_ring = m.free()
        self.to_reader = Waker(m.flag(READER), ctx.wakes[READER])
        self.sleeper = Sleeper(m.flag(writer(W)), ctx.wakes[writer(W)])
        self.cnt = Counters(m.counters[writer(W)])
        self.capture = open_capture(ctx, m)
        recover_writer(m, self.tx, self.free_ring, self.cnt)
        # not as a thread of the supervisor: its scheduling is the supervisor's
        self.idle = Idle(ctx.spin_s, yield_cpu=own_process and share_cpus(ctx))

    def run(self) -> None:
        tx, cnt, idle = self.tx, self.cnt, self.idle
        while True:
            moved = sum(self.write_run(i, t) for i, t in enumerate(tx))
            if moved:
                self.to_reader.poke()
                cnt.commit()   # the runs' batch counts
                idle.worked()
                continue
            if self.all_done() and not any(t.available() for t in tx):
                return
            timeout = idle.timeout(time.perf_counter())
            if timeout:
                cnt.c[I_SLEEPS] += 1
                cnt.commit()
                self.sleeper.sleep(self.has_work, timeout)

    def has_work(self) -> bool:
        return any(t.available() for t in self.tx) or self.all_done()

    def all_done(self) -> bool:
        m = self.m
        return m.ctl[STOP] != 0 and all(m.worker_done[i] for i in range(self.W))

    def write_run(self, i: int, t) -> int:
        """Write what tx ring i holds (up to RUN_MAX), then journal, return the slots,
        commit and release, in that order: a kill anywhere in between is undone exactly
        once (engine/journal.py). Returns the entries taken."""
        start, n = t.peek(RUN_MAX)
        if not n:
            return 0
        c = self.cnt.c
        fill = t.fill()
        if fill > c[I_RING_HWM]:
            c[I_RING_HWM] = fill
        slots, lens = t.slot[start:start + n], t.length[start:start + n]
        k = int(np.count_nonzero(lens))   # frames to write; length 0: a dropped frame
        refused = nbytes = 0
        if k:
            if k < n:
                live = lens.nonzero()[0]
                w_slots, w_lens = slots[live], lens[live]
            else:
                w_slots, w_lens = slots, lens
            if self.capture:
                self.capture.frames([self.views[s] for s in w_slots.tolist()], w_lens.tolist())
            refused = self.io.write(w_slots, w_lens)
            nbytes = int(w_lens.sum())  # bytes handed to the device (refused ones included)
        ctl = self.m.ctl
        upto = journal.writer_begin(ctl, i, t, n, self.free_ring, k, k - refused, nbytes, refused)
        self.free_ring.push(slots, lens)
        journal.add_writer_counts(c, k, k - refused, nbytes, refused)
        c[I_JOURNAL] = upto
        self.cnt.commit()
        t.release(n)
        journal.writer_end(ctl)
        self.cnt.batch(n)
        return n
