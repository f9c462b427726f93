"""The process bodies: reader_loop, worker_loop, writer_loop. Nothing else in the engine
ends in `_loop`. (For devices with `io_threads`, the supervisor runs reader_loop and
writer_loop as two threads of its own process.)

Outbound flow of one frame (numbered as wireguard-go's send.go does):

  1. reader_loop takes a free slot, reads a frame from the device straight into it
     (one syscall; the only write of the frame's bytes into shared memory).
  2. It hashes the flow (engine/shard.py) and pushes the descriptor (slot, length) into
     rx<i> of that flow's worker; one cursor publish and at most one wake-up per batch
     and ring. No room: the frame is dropped as `ring_full` and its slot reused.
  3. worker_loop<i> takes a run of descriptors, validates and mirrors the frames in
     place with numpy (engine/rewrite.py), and pushes every descriptor on to tx<i> with
     its length, or with length 0 for a dropped frame (its reason is counted here).
  4. writer_loop writes each frame with a length back to the device (the frame's only
     read out of shared memory) and returns every slot to the free ring.
  5. reader_loop takes slots back from the free ring when its private stack runs low.

  Shortcut (the inline path, see _Reader): when nothing is in flight, the reader may
  mirror and write a batch itself, steps 3-4 in one process.

Ownership: a slot belongs to exactly one stage at a time, and only the stage holding it
touches its bytes. Every loop is single-threaded and allocation-free per packet; an
idle loop sleeps on its wake-up (engine/wake.py). Counters are committed once per batch.
"""
from __future__ import annotations

import errno
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from . import l2, platform, recovery, shard, shm
from .capture import Capture
from .config import MAX_BATCH
from .errors import EngineError
from .rewrite import FORWARD, Mirror, mirror_batch, mirror_frame, reflect
from .stats import DROP_BASE, DROP_REASONS, HIST_BASE, Counters, F
from .tun.slots import u32
from .wake import Sleeper, Waker

log = logging.getLogger("engine")

# Below this many frames the scalar (pure Python) rewrite and hash beat numpy, whose
# per-call cost (~1-2 us a call on the 2-core test VM, ~50-70 us per batch for the whole
# rule) dominates small batches; the scalar rule costs ~1-1.5 us a frame. Measured
# crossover there: 40-48 frames.
SMALL_BATCH = 40
IDLE_TIMEOUT = 0.5  # seconds; wait timeout as a safety net behind the wake-up handshake
BACKPRESSURE_S = 0.010  # how long the reader holds back for a full worker ring
PIPELINE_MIN_CPUS = 4  # below this, --inline auto keeps backlog in the reader too
# Big frames in flight on the inline path at most (see _Reader.run): a core's L2 on the
# test VM. TCP with offload, 7 alternating runs: 256 KiB 8.5, 512 KiB 9.4 Gbit/s (means;
# fewer steps per byte, each with its fixed Python cost); 768 KiB and 1 MiB slower.
CACHE_BYTES = 512 << 10
LONE_BURST = 2  # frames the lone path takes in a row (a frame and the kernel's answer to it)
# ...or up to BIG_BURST while the frames average BIG_FRAME bytes or more (offload
# super-packets; see _Reader.big).
BIG_FRAME, BIG_BURST = 16 << 10, 64
# Frames a worker (or the writer) takes from a ring at once: all that is queued, up to
# this. Most of a run's cost is fixed (numpy calls run cold after a process switch: on
# the test VM 115-185 us in the rule for about 330 frames), so a worker that fell behind
# catches up in one long run rather than in --batch pieces: pipeline benchmark, 64 B,
# 1 / 4 workers: 1.55M / 1.18M -> 2.18M / 1.52M frames/s.
RUN_MAX = MAX_BATCH

R_TOO_BIG = DROP_BASE + DROP_REASONS.index("too_big")
R_RING_FULL = DROP_BASE + DROP_REASONS.index("ring_full")
R_WRITE_ERROR = DROP_BASE + DROP_REASONS.index("write_error")
R_NOT_MIRRORED = DROP_BASE + DROP_REASONS.index("not_mirrored")
# counter indices used on the reader's per-batch path (a dict lookup each, otherwise)
I_IN_FRAMES, I_IN_BYTES, I_BATCHES = F["in_frames"], F["in_bytes"], F["batches"]
I_INLINE_FRAMES, I_INLINE_BYTES, I_JOURNAL = F["inline_frames"], F["inline_bytes"], F["journal"]
I_SLEEPS, I_DROP_BYTES = F["sleeps"], F["drop_bytes"]
I_OUT_FRAMES, I_OUT_BYTES, I_RING_HWM = F["out_frames"], F["out_bytes"], F["ring_hwm"]


def reader_takes_backlog(inline: str) -> bool:
    """Whether the reader mirrors and writes a backlog itself, so that the workers get
    frames only when some are already in flight (see _Reader): --inline always, or auto
    on a machine with fewer than PIPELINE_MIN_CPUS usable CPUs."""
    return inline == "always" or (inline == "auto" and platform.usable_cpus() < PIPELINE_MIN_CPUS)


def backlog_plan(inline: str, workers: int) -> str:
    """Who mirrors the frames, in words for the start-up log: on a small machine the
    workers asked for stay idle by design (one process doing everything is faster where
    the traffic's own processes need the other CPUs), and a user should not have to find
    that out from a CPU table."""
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
    wakes: Tuple[object, ...]  # one platform wake-up per actor: reader, workers..., writer
    capture: Optional[Capture] = None  # --pcap
    inline: str = "auto"                # --inline: auto, always, never (see _Reader)

    @property
    def workers(self) -> int:
        return self.layout.workers


def _child_setup() -> None:
    # what a terminal sends the whole process group, and the stats request, are for the
    # supervisor alone, which decides when its children stop
    for sig in platform.CHILD_IGNORED_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    # a killed supervisor must leave no process holding the device or the segments
    platform.die_with_parent()


# A reader's exit status when its device was deleted under it (reads fail with EBADFD):
# the supervisor then stops the engine, saying so once, instead of restarting the reader.
EXIT_DEVICE_GONE = 3
DEVICE_GONE = {getattr(errno, "EBADFD", -1)}


def _stopping(m: shm.Mapped) -> bool:
    return m.ctl[shm.STOP] != 0


# --------------------------------------------------------------------------- reader
def reader_loop(ctx: Context, m: Optional[shm.Mapped] = None) -> None:
    if m is None:
        _child_setup()
        m = shm.attach(ctx.prefix, ctx.layout)
    r = _Reader(ctx, m)
    m.ready[0] = os.getpid()
    try:
        r.run()
    except OSError as e:
        if e.errno not in DEVICE_GONE:
            raise
        gone = True   # nothing more will be read: the workers drain and stop as at the end
    else:
        gone = False
    m.ctl[shm.READER_DONE] = 1
    for i in range(ctx.workers):  # let the workers see that nothing more is coming
        ctx.wakes[1 + i].set()
    if gone:
        sys.exit(EXIT_DEVICE_GONE)


class _Reader:
    """State of reader_loop, split into steps so each reads top-down.

    When to use the workers (`--inline`; measurements in docs/benchmarks.md):
    - The reader mirrors and writes a batch itself (the inline path) only when nothing is
      in flight in any ring, so order cannot change.
    - `auto` (default): inline when this read drained the device (the reader keeps up; a
      ping or a TCP ACK pays one process wake-up instead of three). Under backlog the
      batch goes to the workers, so reading, rewriting and writing overlap on separate
      cores, but only on a machine with PIPELINE_MIN_CPUS or more: with fewer, the
      traffic's own sender and receiver need the other core, every extra process
      competes with them, and one process doing everything measured faster.
    - `always`: inline whenever the pipeline is idle. `never`: every frame through the
      workers (the pure pipeline; the tests run it that way too)."""

    def __init__(self, ctx: Context, m: shm.Mapped) -> None:
        self.ctx, self.m, self.dev, self.W = ctx, m, ctx.device, ctx.workers
        self.frames, self.views = m.frames, m.slot_views()
        self.rx = [m.rx(i) for i in range(self.W)]
        self.free_ring = m.free()
        self.wake = [Waker(m.flag(1 + i), ctx.wakes[1 + i]) for i in range(self.W)]
        # the device's readiness joins the wake-up where the platform can wait on both
        waitable = self.dev.waitable() if platform.WAITS_ON_DEVICES else None
        self.watch = [waitable] if waitable is not None else []
        self.sleeper = Sleeper(m.flag(0), ctx.wakes[0], self.watch)
        # waiting for room in a full worker ring: the workers poke this one as they free it
        self.room_sleeper = Sleeper(m.ctl[shm.READER_ROOM:shm.READER_ROOM + 1], ctx.wakes[0])
        self.cnt = Counters(m.counters[0])
        self.stack = recovery.free_slots(m, self.rx, self.free_ring)
        # frames ever handed to the workers; the writer returns each one's slot through the
        # free ring, so pushed == free ring's write cursor means nothing is in flight
        self.pushed = sum(r._write for r in self.rx)
        self.seq = recovery.recover_reader(m, self.rx, self.cnt)
        _warm_up(ctx.rule, self.W)
        self.out_s, self.out_l = [], []    # mirrored inline, to be written by the next exchange
        self.out_arrays = None             # ...and the same as numpy arrays, when at hand
        self.io = self.dev.slot_io(self.frames)
        self.slot_size = m.layout.slot_size
        # the headers of the last lone frame as written (the rule reads no further), on
        # which _Reader.rehearse runs the rule again
        self.rehearsal = bytearray(ctx.rule.vnet_hdr_len + ctx.rule.l2_hdr_len + 64)
        self.rehearsal_n = 0
        self.lossless = self.dev.lossless  # a replay waits: never drop for room
        self.capture = _open_capture(ctx, m)
        self.inline_ok = ctx.inline != "never"
        self.inline_backlog = reader_takes_backlog(ctx.inline)
        # Frames one step reads at most. Split by flow hash, a batch leaves each of W
        # workers about 1/W of it, and a worker's rewrite costs a fixed numpy overhead per
        # run: so when the workers take the backlog, read a batch per worker and each still
        # gets a full vector (--batch is what each worker gets per step; with a fixed read
        # size 4 workers on 2 CPUs ran 43 % slower than 1: docs/benchmarks.md).
        self.read_max = ctx.batch if self.inline_backlog else min(ctx.batch * self.W, MAX_BATCH)
        # Under backlog, the least ring room worth a step: a quarter of a ring (512 of
        # 2048 slots without offload, 32 of 128 with it at 4 workers).
        self.hold_for = self.rx[0].capacity // 4
        self.vo = self.dev.vnet_hdr_len
        self.ip_o = self.vo + ctx.rule.l2_hdr_len   # where the IP header starts
        self.lone_ok = self.inline_ok and self.ip_o == self.vo and not self.capture
        # Big frames go frame by frame. Where the reader takes the backlog itself, and
        # while the frames it reads average BIG_FRAME bytes or more (offload
        # super-packets), every frame takes the lone path, up to BIG_BURST in a row: for
        # such frames the kernel's copies dwarf a syscall, and read, mirror, write, the
        # next read into the same slot costs less Python than an io_uring step's requests
        # and stays in one slot's worth of cache. TCP with offload, alternating 5-s runs:
        # user CPU 300-318 -> 221-273 us per MB carried (docs/benchmarks.md).
        self.big_bursts = self.lone_ok and self.inline_backlog
        self.big = False

    def run(self) -> None:
        ctx, m, c = self.ctx, self.m, self.cnt.c
        rx, free_ring, stack = self.rx, self.free_ring, self.stack
        batch, io = self.read_max, self.io
        read_one = io.read_one
        stopping = lambda: _stopping(m)  # noqa: E731 - made once, not per sleep
        idle_since = blocked_since = 0.0
        spin_s = ctx.spin_s
        want = 1    # frames the next step reads; 1 and 2: the lone-frame probe
        while not m.ctl[shm.STOP]:
            if free_ring.available():
                start, n = free_ring.peek(free_ring.capacity)
                stack.extend(free_ring.slot[start:start + n].tolist())
                free_ring.release(n)
                continue
            if not stack:  # every slot is in flight: wait for the writer to return some
                if self.out_s:
                    self.flush()
                    continue
                self.sleeper.sleep(lambda: free_ring.available() > 0 or _stopping(m), IDLE_TIMEOUT)
                continue
            # Idle pipeline (every frame handed on came back through the free ring): all
            # rings are empty. One private int and one shared cursor, whatever the workers.
            # What an idle pipeline's reader reads for its own inline path goes in no ring,
            # so the rings' size (which shrinks as workers are added: 128 slots each for
            # 4 workers with offload) must not cap it.
            idle = self.pushed == free_ring._cur[0]
            if idle:
                room, need = (batch if self.inline_backlog else rx[0].capacity), 1
            else:
                room = min(r.space() for r in rx)
                # Behind workers: wait until a real step fits. Crumbs of steps would each
                # pay the reader's fixed cost and cut the workers' runs short, in the
                # very moment the workers are the bottleneck.
                need = max(1, min(want, self.hold_for))
            if room >= need:
                blocked_since = 0.0
            else:
                # A worker's ring is (nearly) full. Hold back a moment (the kernel queues,
                # or drops, what we do not read); past BACKPRESSURE_S read anyway and drop
                # what does not fit as ring_full, so one stuck worker cannot stall the others.
                now = time.perf_counter()
                blocked_since = blocked_since or now
                if self.lossless or now - blocked_since < BACKPRESSURE_S:
                    self.flush()
                    self.room_sleeper.sleep(lambda: min(r.space() for r in rx) >= need, 0.0005)
                    continue
                room = room or batch
            if want <= 2 and not self.out_s:
                # The device was idle: probe with one plain read, and sleep when nothing
                # is there. A lone frame (a ping, an ACK) is mirrored and written at once
                # (lone); after two in a row, batches take over.
                top = stack.pop()
                n = read_one(top)
                if n:
                    idle_since, spin_s = 0.0, ctx.spin_s
                    want += self.lone(top, n)   # 0 after big frames: probe again
                    continue
                want = 1
                stack.append(top)
                now = time.perf_counter()
                idle_since = idle_since or now
                if now - idle_since < spin_s:
                    continue  # bounded spin: cheaper than sleep + wake for back-to-back frames
                spin_s = 0.0    # no spin after a nap: back to sleep after one probe
                nap = _Warm.timeout(now - idle_since)
                if nap == IDLE_TIMEOUT:   # a real sleep, counted (a nap is not)
                    c[I_SLEEPS] += 1
                    self.cnt.commit()
                else:
                    self.rehearse()
                if self.watch:
                    self.sleeper.sleep(stopping, nap)
                else:
                    self.dev.wait(IDLE_TIMEOUT)
                continue
            # Write what the last batch mirrored and read the next batch (its size:
            # _next_read) in one step (one io_uring syscall).
            k = min(batch, room, len(stack), want)
            rs = stack[len(stack) - k:]
            del stack[len(stack) - k:]
            out_s = self.out_s
            refused, got_s, got_l, unused = io.exchange(out_s, self.out_l, rs, self.out_arrays)
            if out_s:
                self.sent(refused)
            stack.extend(unused)
            idle_since, spin_s = 0.0, ctx.spin_s
            n = len(got_s)
            if not n:
                want = 1
                continue
            nbytes = sum(got_l)
            want = _next_read(want, k, n)
            # When the reader writes the backlog itself, big frames (offload
            # super-packets) no more than CACHE_BYTES in flight: a batch of 64 KiB frames
            # read into 64 different slots would leave the CPU cache before the write
            # copies them out. Not when the workers take it: they need full runs
            # (1500-byte frames capped at 170 a step split into runs of 42 at 4 workers,
            # and 1 -> 4 workers lost 61 % on the pipeline benchmark).
            if self.inline_backlog:
                want = min(want, max(2, CACHE_BYTES * n // nbytes))
            self.dispatch(got_s, got_l, n < k, nbytes)
            if self.sized(n, nbytes):   # big frames: the lone path takes the next ones
                self.flush()
                want = 1
        self.flush()
        self.cnt.commit()

    def lone(self, slot: int, n: int) -> int:
        """One frame read while the device was idle: mirror and write it here and now, the
        shortest path through the engine (the process was likely asleep, and every line
        run cold costs several times its warm price: docs/benchmarks.md). The kernel often
        answers a frame inside its write (an echo reply, a TCP ACK: queued on the device
        before the write returns), so the next frame is read at once, before this one's
        counts, and taken the same way: up to LONE_BURST frames (BIG_BURST while the
        frames are big: see __init__) are one journal batch, counted and committed once
        they are all written. Returns the frames the next step should read beyond a
        probe: the frames taken, or 0 while the frames are big (the next one comes here
        too). Anything out of the ordinary (a truncated first frame, TAP mode, frames in
        flight in the pipeline, --inline never, --pcap) takes the general path."""
        if not self.lone_ok or n >= self.slot_size or self.pushed != self.free_ring._cur[0]:
            self.dispatch([slot], [n], True)
            return 1
        c, ctl, stack, io, rule = self.cnt.c, self.m.ctl, self.stack, self.io, self.ctx.rule
        seq = self.journal(1, n)
        taken = nbytes = 0
        burst = BIG_BURST if self.big else LONE_BURST
        while True:
            taken += 1
            nbytes += n
            if n >= self.slot_size:   # a later frame truncated by its read
                c[R_TOO_BIG] += 1
                c[I_DROP_BYTES] += n
            else:
                reason = mirror_frame(rule, self.views[slot], n)
                if reason:
                    c[DROP_BASE + reason - 1] += 1
                    c[I_DROP_BYTES] += n
                else:
                    # handed to the device: its bytes count even when it is refused
                    c[I_INLINE_BYTES] += n
                    if io.write_one(slot, n):
                        c[I_INLINE_FRAMES] += 1
                    else:
                        c[R_WRITE_ERROR] += 1
            if taken == burst or not stack:
                break
            nxt = stack.pop()
            got = io.read_one(nxt)
            if not got:
                stack.append(nxt)
                break
            stack.append(slot)   # the frame before is written: its slot is free again
            slot, n = nxt, got
            ctl[shm.READER_PENDING] = taken + 1
            ctl[shm.READER_PENDING_BYTES] = nbytes + n
        # slot, n: the last frame taken
        k = min(n, len(self.rehearsal))   # after the writes: off the frames' path
        self.rehearsal[:k] = self.views[slot][:k]
        self.rehearsal_n = n
        stack.append(slot)
        self.count_read(taken, nbytes)
        c[I_JOURNAL] = seq
        self.cnt.commit()
        return 0 if self.sized(taken, nbytes) else taken

    def sized(self, n: int, nbytes: int) -> bool:
        """Whether the frames just taken (n, nbytes) were big (see __init__), remembered in
        `big` for the next lone burst."""
        self.big = self.big_bursts and nbytes >= n * BIG_FRAME
        return self.big

    def rehearse(self) -> None:
        """Run the lone path's steps with no effect: its rule on a private copy of the last
        lone frame's headers (kept as written; turned back into the frame as read first,
        so the rule runs its whole forwarding path, swap included, and leaves the copy as
        it was), reads of the shared pages the path touches, and a commit of unchanged
        counts. Its code and data (and their TLB entries, dear in a VM) are then warm when
        the next lone frame comes: see _Warm."""
        n = self.rehearsal_n
        if not n:
            return
        reflect(self.rehearsal, self.ip_o)   # the lone path runs only where ip_o == vo (TUN)
        mirror_frame(self.ctx.rule, self.rehearsal, n)
        if self.stack:
            self.views[self.stack[-1]][0]   # noqa: B018 - the slot the next read fills
        self.free_ring._cur[0] + self.m.ctl[shm.READER_SEQ]   # noqa: B018
        self.cnt.commit()

    def flush(self) -> None:
        """Write the frames the last inline batch mirrored, if any."""
        if self.out_s:
            self.sent(self.io.exchange(self.out_s, self.out_l, [])[0])

    def sent(self, refused: int) -> None:
        """The inline batch in `out` went to the device: slots back to the stack, and a
        refused frame moves from inline_frames to write_error."""
        self.m.ctl[shm.READER_UNSENT] = 0
        self.stack.extend(self.out_s)
        self.out_s = self.out_l = []
        self.out_arrays = None
        if refused:
            c = self.cnt.c
            c[I_INLINE_FRAMES] -= refused
            c[R_WRITE_ERROR] += refused
            self.cnt.commit()

    def dispatch(self, slots: list, lens: list, drained: bool, nbytes: int = -1) -> None:
        nbytes = sum(lens) if nbytes < 0 else nbytes
        seq = self.journal(len(slots), nbytes)
        self.count_read(len(slots), nbytes)
        self._dispatch(slots, lens, drained)
        # frames mirrored inline are counted as sent; the next exchange writes them
        ctl = self.m.ctl
        ctl[shm.READER_UNSENT] = len(self.out_s)
        if self.out_s:
            ctl[shm.READER_UNSENT_BYTES] = sum(self.out_l)
        self.cnt.c[I_JOURNAL] = seq
        self.cnt.commit()

    def journal(self, n: int, nbytes: int) -> int:
        """Journal (recovery.recover_reader) a batch of n frames (nbytes) in hand; the
        caller counts it (count_read) and commits the counts with the returned sequence
        number."""
        ctl = self.m.ctl
        self.seq = seq = self.seq + 1
        ctl[shm.READER_PUSHED] = self.pushed
        ctl[shm.READER_PENDING] = n
        ctl[shm.READER_PENDING_BYTES] = nbytes
        ctl[shm.READER_PUSHED_FRAMES] = ctl[shm.READER_PUSHED_BYTES] = 0
        ctl[shm.READER_SEQ] = seq
        return seq

    def count_read(self, n: int, nbytes: int) -> None:
        c = self.cnt.c
        c[I_IN_FRAMES] += n
        c[I_IN_BYTES] += nbytes
        c[I_BATCHES] += 1
        c[HIST_BASE + min(n.bit_length() - 1, 6)] += 1

    def _dispatch(self, slots: list, lens: list, drained: bool) -> None:
        c, n = self.cnt.c, len(slots)
        size = self.slot_size
        if max(lens) >= size:  # the read filled a slot: a truncated frame
            keep = [k for k, ln in enumerate(lens) if ln < size]
            c[R_TOO_BIG] += n - len(keep)
            c[I_DROP_BYTES] += sum(ln for ln in lens if ln >= size)
            slots, lens = self.only(slots, lens, keep)
            if not slots:
                return
        if self.ip_o != self.vo:   # TAP mode: ARP, NS and drops leave here
            slots, lens = self.link_layer(slots, lens)
            if not slots:
                return
        if (drained or self.inline_backlog) and self.inline_ok and \
                self.pushed == self.free_ring._cur[0]:
            self.inline(slots, lens)
            return
        W, o = self.W, self.ip_o
        s_arr, l_arr = u32(slots), u32(lens)
        if W == 1:
            dest = None
        elif len(slots) <= SMALL_BATCH:
            dest = np.array([shard.worker_of_one(self.views[s], o, ln, W)
                             for s, ln in zip(slots, lens)], np.intp)
        else:
            dest = shard.worker_of(self.frames, s_arr, l_arr, o, W)
        self.push(s_arr, l_arr, dest)

    def link_layer(self, slots: list, lens: list):
        """TAP mode: classify the Ethernet frames (engine/l2.py). IP frames go on (the
        return value); ARP requests and neighbour solicitations are answered here, the
        reply written at once (the slow path: a `bytes` per reply, never per IP frame);
        the rest are counted as drops. Every slot not returned goes back to the stack."""
        if len(slots) <= SMALL_BATCH:
            kr = [l2.classify_frame(self.views[s], ln, self.vo) for s, ln in zip(slots, lens)]
            if all(k == l2.KIND_IP for k, _ in kr):
                return slots, lens
            other = [i for i, (k, _) in enumerate(kr) if k != l2.KIND_IP]
        else:
            kind, reason = l2.classify_batch(self.frames, u32(slots), u32(lens), self.vo)
            if not kind.any():
                return slots, lens
            other = np.flatnonzero(kind).tolist()
            kr = {i: (int(kind[i]), int(reason[i])) for i in other}
        c = self.cnt.c
        for i in other:
            k, r = kr[i]
            if k == l2.KIND_DROP:
                c[DROP_BASE + r - 1] += 1
                c[I_DROP_BYTES] += lens[i]
            else:
                self.answer(k, slots[i], lens[i])
        gone = set(other)
        return self.only(slots, lens, [i for i in range(len(slots)) if i not in gone])

    def only(self, slots: list, lens: list, keep: list):
        """The frames at the indices in `keep` (ascending); every other frame's slot goes
        back to the stack (a frame dropped or answered before it reached the rule)."""
        kept = set(keep)
        self.stack.extend(s for k, s in enumerate(slots) if k not in kept)
        return [slots[k] for k in keep], [lens[k] for k in keep]

    def answer(self, kind: int, slot: int, length: int) -> None:
        """Write the ARP reply or neighbour advertisement for one request, or count it."""
        c, rule = self.cnt.c, self.ctx.rule
        frame = bytes(self.views[slot][:length])
        out = (l2.arp_reply(frame, self.vo, rule.address) if kind == l2.KIND_ARP
               else l2.neighbour_advert(frame, self.vo, rule.address6))
        if out is None:
            c[R_NOT_MIRRORED] += 1
            c[I_DROP_BYTES] += length
            return
        buf = memoryview(out)
        if self.capture:
            self.capture.frames([buf], [len(out)])
        refused = self.dev.write_batch([buf], [len(out)])
        c[I_INLINE_FRAMES] += 1 - refused
        c[I_INLINE_BYTES] += length   # the request, carried (so bytes add up as frames do)
        c[R_WRITE_ERROR] += refused

    def inline(self, slots: list, lens: list) -> None:
        """Mirror a batch here (see the class docstring); the next exchange writes it."""
        c, views, rule = self.cnt.c, self.views, self.ctx.rule
        if len(slots) <= SMALL_BATCH:
            keep = []
            for k, (s, ln) in enumerate(zip(slots, lens)):
                reason = mirror_frame(rule, views[s], ln)
                if reason:
                    c[DROP_BASE + reason - 1] += 1
                    c[I_DROP_BYTES] += ln
                else:
                    keep.append(k)
        else:
            arrays = u32(slots), u32(lens)
            reasons = mirror_batch(rule, self.frames, *arrays)
            keep = None
            if reasons.any():
                _count_drops(c, reasons)
                c[I_DROP_BYTES] += int(arrays[1][reasons != FORWARD].sum())
                keep = np.flatnonzero(reasons == FORWARD).tolist()
            else:   # the exchange that writes them takes the arrays as they are
                self.out_arrays = arrays
        if keep is not None and len(keep) < len(slots):  # dropped frames' slots are free
            slots, lens = self.only(slots, lens, keep)
        if slots:
            if self.capture:
                self.capture.frames([views[s] for s in slots], lens)
            c[I_INLINE_FRAMES] += len(slots)
            c[I_INLINE_BYTES] += sum(lens)
            self.out_s, self.out_l = slots, lens

    def push(self, slots: np.ndarray, lens: np.ndarray, dest) -> None:
        """Hand frames to their workers: one publish and at most one wake-up per ring.
        The batch is split by worker with one stable sort, so the cost per batch does not
        grow with the worker count (a mask per worker did: see docs/benchmarks.md)."""
        c = self.cnt.c
        if dest is None:
            runs = ((0, 0, len(slots)),)
        else:
            order = np.argsort(dest, kind="stable")     # stable: a flow keeps its order
            slots, lens = slots[order], lens[order]
            ends = np.cumsum(np.bincount(dest, minlength=self.W)).tolist()
            runs = [(i, a, b) for i, (a, b) in enumerate(zip([0] + ends[:-1], ends)) if b > a]
        refused_bytes = 0
        ctl = self.m.ctl
        below = np.cumsum(lens, dtype=np.int64)   # below[i]: bytes of frames 0..i
        for i, start, end in runs:
            ring = self.rx[i]
            ctl[shm.READER_PUSHING] = i + 1
            pushed = ring.push(slots[start:end], lens[start:end])
            # journal (recover_reader): the bytes of the batch's frames now in the rings
            ctl[shm.READER_PUSHED_FRAMES] += pushed
            ctl[shm.READER_PUSHED_BYTES] += _span(below, start, start + pushed)
            self.pushed += pushed
            if start + pushed < end:
                c[R_RING_FULL] += end - start - pushed
                self.stack.extend(slots[start + pushed:end].tolist())
                refused_bytes += _span(below, start + pushed, end)
            c[I_OUT_FRAMES] += pushed
            fill = ring.fill()
            if fill > c[I_RING_HWM]:
                c[I_RING_HWM] = fill
            self.wake[i].poke()
        c[I_OUT_BYTES] += int(below[-1]) - refused_bytes
        c[I_DROP_BYTES] += refused_bytes


def _span(below: np.ndarray, a: int, b: int) -> int:
    """Bytes of frames a..b-1 of a batch, from its running sums `below`."""
    return (int(below[b - 1]) if b else 0) - (int(below[a - 1]) if a else 0)


def _next_read(want: int, asked: int, got: int) -> int:
    """Frames the next step reads (before the caps of the step itself), NAPI-like: twice
    what a read that drained the device got, plus one. A read that got all it asked for
    never shrinks it: a step cut short by ring room or free slots says nothing about the
    device (it did: behind workers, the reader then read ever smaller steps)."""
    return 2 * got + 1 if got < asked else max(want, 2 * got + 1)


class _Warm:
    """Short naps after traffic. A Python process woken after a few idle milliseconds runs
    its first frames several times slower than when warm (caches, TLB, a halted vCPU; on
    the test VM 15 us instead of 2.5 us of Python per ping crossing, and 44 us instead of
    14 us inside the write). So for WINDOW seconds after the last frame the reader sleeps
    in NAP-long naps (a poll() that returns at once when a frame arrives) and only then in
    long ones. Measured: ping through the engine 0.30 -> 0.20 ms; cost about 5 % of a core
    during the window, so at most WINDOW x 5 % per burst of traffic (12 ms of CPU), and an
    idle engine still costs nothing.

    Before each nap the reader also rehearses the lone-frame path (_Reader.rehearse): a
    nap alone keeps the process awake, not the lone path's code and data warm, and the
    first lone frame after 10 ms of quiet spent 74 us (median, perf_counter_ns) between its
    read and its write instead of 11 us for the frame right after it. With the rehearsal
    it spends 34 us (and 7 us instead of 14 us from its write to the next read); ping
    through the engine 0.26 -> 0.18-0.19 ms in the same session (docs/benchmarks.md)."""

    NAP, WINDOW = 0.001, 0.25

    @staticmethod
    def timeout(quiet: float) -> float:
        """How long to sleep after `quiet` seconds without a frame."""
        return _Warm.NAP if quiet < _Warm.WINDOW else IDLE_TIMEOUT


def _count_drops(c: list, reasons: np.ndarray) -> None:
    for r, k in enumerate(np.bincount(reasons, minlength=len(DROP_REASONS) + 1)[1:]):
        if k:
            c[DROP_BASE + r] += int(k)


def _open_capture(ctx: Context, m: shm.Mapped):
    """This actor's --pcap appender, or None; a file it cannot reopen (replaced since the
    supervisor made it) ends the capture, never the actor."""
    if not ctx.capture:
        return None
    try:
        return ctx.capture.open(m.ctl[shm.CAPTURED:shm.CAPTURED + 1],
                                m.ctl[shm.CAPTURE_ENDED:shm.CAPTURE_ENDED + 1])
    except (EngineError, OSError) as e:
        m.ctl[shm.CAPTURE_ENDED] = 1
        log.warning("--pcap: %s; capture stopped, the mirror goes on", e)
        return None


# --------------------------------------------------------------------------- worker
def worker_loop(ctx: Context, i: int) -> None:
    _child_setup()
    m = shm.attach(ctx.prefix, ctx.layout)
    frames, views = m.frames, m.slot_views()
    rx, tx = m.rx(i), m.tx(i)
    writer = Waker(m.flag(ctx.workers + 1), ctx.wakes[ctx.workers + 1])
    reader = Waker(m.ctl[shm.READER_ROOM:shm.READER_ROOM + 1], ctx.wakes[0])  # room in rx
    sleeper = Sleeper(m.flag(1 + i), ctx.wakes[1 + i])
    cnt = Counters(m.counters[1 + i])
    c = cnt.c
    rule = ctx.rule
    recovery.recover_worker(m, i, rx, tx, sleeper, c)
    cnt.commit()
    _warm_up(rule, ctx.workers)
    yield_cpu = _share_cpus(ctx)
    m.ready[1 + i] = os.getpid()

    def has_work():
        return rx.available() > 0 or m.ctl[shm.READER_DONE] != 0

    idle_since = 0.0
    while True:
        start, n = rx.peek(RUN_MAX)
        if not n:
            if _stopping(m) and m.ctl[shm.READER_DONE] and not rx.available():
                break
            now = time.perf_counter()
            idle_since = idle_since or now
            if _spin(ctx.spin_s, idle_since, now, yield_cpu):
                continue  # bounded spin: spares the reader a wake-up syscall per batch
            idle_since = 0.0
            c[F["sleeps"]] += 1
            cnt.commit()
            sleeper.sleep(has_work, IDLE_TIMEOUT)
            continue
        idle_since = 0.0
        room = tx.space()
        if room < n:  # the writer is behind: take what fits, never drop a mirrored frame
            if not room:
                sleeper.sleep(lambda: tx.space() > 0, 0.001)
                continue
            n = room
        slots = rx.slot[start:start + n]
        lens = rx.length[start:start + n]
        m.worker_busy[i] = rx._read + n  # these frames may be half rewritten until released
        if n <= SMALL_BATCH:
            reasons = np.array([mirror_frame(rule, views[s], ln) for s, ln in
                                zip(slots.tolist(), lens.tolist())], np.uint8)
        else:
            reasons = mirror_batch(rule, frames, slots, lens)
        nbytes = int(lens.sum())
        c[I_IN_FRAMES] += n
        c[I_IN_BYTES] += nbytes
        cnt.batch(n)
        if reasons.any():
            out = np.where(reasons == FORWARD, lens, 0).astype(np.uint32)
            _count_drops(c, reasons)
            fwd, kept = int(np.count_nonzero(out)), int(out.sum())
            c[I_DROP_BYTES] += nbytes - kept
            nbytes = kept
        else:   # every frame forwarded (the common case): no more numpy calls
            out, fwd = lens, n
        c[I_OUT_FRAMES] += fwd
        c[I_OUT_BYTES] += nbytes
        tx.push(slots, out)   # push before release: a crash in between is undone at restart
        rx.release(n)
        reader.poke()   # only if the reader waits for room in a full ring
        m.worker_busy[i] = 0
        writer.poke()
        cnt.commit()

    cnt.commit()
    m.worker_done[i] = 1
    ctx.wakes[ctx.workers + 1].set()


def _share_cpus(ctx: Context) -> bool:
    """Scheduling of a worker or writer process; returns whether its bounded idle spin
    should yield the CPU on every turn (measurements in docs/benchmarks.md).

    With more engine processes than usable CPUs (2 workers on the 2-core test VM: reader,
    workers and writer are 4), every wake-up of a worker or the writer used to preempt
    the process that woke it (the reader, mid-batch), so under load the processes took
    turns a few hundred frames at a time. SCHED_BATCH (no privilege needed) removes
    wake-up preemption for these processes only: a woken worker waits for a free CPU or
    the next tick, so the reader finishes its batch and the worker then takes a larger
    run. Their spin then yields on every turn (platform.yield_cpu), so a spinning process
    gives way at once to any runnable one instead of burning the slice another needs. The
    reader keeps the default policy, and with a CPU per process nothing changes."""
    if ctx.layout.actors <= platform.usable_cpus():
        return False
    return platform.share_cpus()  # False where there is no SCHED_BATCH


def _spin(spin_s: float, since: float, now: float, yield_cpu: bool) -> bool:
    """True while an idle loop should go on polling instead of sleeping."""
    if now - since >= spin_s:
        return False
    if yield_cpu:
        platform.yield_cpu()
    return True


def _warm_up(rule: Mirror, workers: int) -> None:
    """Run the vector paths once on a scratch batch, so the memory numpy and the
    interpreter set aside on first use is taken at start, not under traffic later
    (DESIGN.md invariant 8, checked by the soak test)."""
    o = rule.vnet_hdr_len + rule.l2_hdr_len
    scratch = np.zeros((2 * SMALL_BATCH, o + 128), np.uint8)
    scratch[:, o] = 0x45
    slots = np.arange(len(scratch), dtype=np.uint32)
    lens = np.full(len(scratch), o + 40, np.uint32)
    mirror_batch(rule, scratch, slots, lens)
    shard.worker_of(scratch, slots, lens, o, max(workers, 2))
    _count_drops([0] * len(F), np.zeros(len(slots), np.uint8))


# --------------------------------------------------------------------------- writer
def writer_loop(ctx: Context, m: Optional[shm.Mapped] = None) -> None:
    own_process = m is None
    if m is None:
        _child_setup()
        m = shm.attach(ctx.prefix, ctx.layout)
    W = ctx.workers
    views = m.slot_views()
    io = ctx.device.slot_io(m.frames)
    tx = [m.tx(i) for i in range(W)]
    free_ring = m.free()
    reader = Waker(m.flag(0), ctx.wakes[0])
    sleeper = Sleeper(m.flag(W + 1), ctx.wakes[W + 1])
    cnt = Counters(m.counters[W + 1])
    c = cnt.c
    hwm = c[F["ring_hwm"]]
    capture = _open_capture(ctx, m)
    recovery.recover_writer(m, tx, free_ring, cnt)
    yield_cpu = own_process and _share_cpus(ctx)  # not as a thread of the supervisor
    m.ready[W + 1] = os.getpid()

    def has_work():
        return any(t.available() for t in tx) or all_done()

    def all_done():
        return m.ctl[shm.STOP] != 0 and all(m.worker_done[i] for i in range(W))

    idle_since = 0.0
    while True:
        moved = 0
        for i, t in enumerate(tx):
            start, n = t.peek(RUN_MAX)
            if not n:
                continue
            fill = t.fill()
            if fill > hwm:
                hwm = c[F["ring_hwm"]] = fill
            slots = t.slot[start:start + n]
            lens = t.length[start:start + n]
            k = int(np.count_nonzero(lens))   # frames to write; length 0: a dropped frame
            refused = nbytes = 0
            if k:
                if k == n:
                    w_slots, w_lens = slots, lens
                else:
                    live = lens.nonzero()[0]
                    w_slots, w_lens = slots[live], lens[live]
                if capture:
                    capture.frames([views[s] for s in w_slots.tolist()], w_lens.tolist())
                refused = io.write(w_slots, w_lens)
                nbytes = int(w_lens.sum())  # bytes handed to the device (refused ones included)
            # Journal (_recover_writer): the run, its counts, then slots back, counts
            # committed, run released. A kill anywhere in between is undone exactly once.
            j = m.ctl
            j[shm.WRITER_FREE_BEFORE] = free_ring._write
            j[shm.WRITER_UPTO] = upto = t._read + n
            j[shm.WRITER_IN], j[shm.WRITER_OUT] = k, k - refused
            j[shm.WRITER_BYTES], j[shm.WRITER_ERR] = nbytes, refused
            j[shm.WRITER_RING] = i + 1
            free_ring.push(slots, lens)
            recovery.add_writer_counts(c, k, k - refused, nbytes, refused)
            c[F["journal"]] = upto
            cnt.commit()
            t.release(n)
            j[shm.WRITER_RING] = 0
            cnt.batch(n)
            moved += n
        if moved:
            reader.poke()
            cnt.commit()
            idle_since = 0.0
            continue
        if all_done() and not any(t.available() for t in tx):
            break
        now = time.perf_counter()
        idle_since = idle_since or now
        if _spin(ctx.spin_s, idle_since, now, yield_cpu):
            continue  # bounded spin, as in the workers
        idle_since = 0.0
        c[F["sleeps"]] += 1
        cnt.commit()
        sleeper.sleep(has_work, IDLE_TIMEOUT)

    cnt.commit()
    m.ctl[shm.WRITER_DONE] = 1
