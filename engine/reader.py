"""The reader: frames from the device into pool slots, then either mirrored and written
by the reader itself or handed to their flows' workers (engine/worker.py).

One turn of `Reader.run`:
  1. slots the writer returned come back from the free ring;
  2. the read plan (engine/read_plan.py) says how many frames to read, or to wait;
  3. the frames are read into free slots, one syscall for the batch (engine/tun/slots.py);
  4. `admit` settles what never reaches the rule: truncated frames (too_big) and, in TAP
     mode, ARP and neighbour solicitations (answered in their own slot) and other drops;
  5. `own` mirrors and writes them here (nothing in flight, so order cannot change), or
     `hand` pushes each to its flow's rx ring: one publish and at most one wake-up per
     ring. The reader's own writes all leave through `write`.

A batch is journalled (engine/journal.py) before its first frame is touched and its
counts are committed once, with the journal's sequence number, after its last.
"""
from __future__ import annotations

import errno
import os
import sys
import time

import numpy as np

from . import packet, platform, read_plan
from .actor import IDLE_TIMEOUT, Context, Idle, count_drops, open_capture, start_child, stopping, warm_up
from .config import MAX_BATCH
from .journal import READER_DONE, READER_ROOM, STOP, ReaderJournal, free_slots, recover_reader
from .shm import Mapped
from .stats import DROP_BASE, DROP_REASONS, HIST_BASE, Counters, F
from .topology import READER, reader_takes_backlog, worker
from .wake import Sleeper, Waker

# A reader's exit status when its device was deleted under it (reads fail with EBADFD):
# the supervisor then stops the engine, saying so once, instead of restarting the reader.
EXIT_DEVICE_GONE = 3
DEVICE_GONE = {getattr(errno, "EBADFD", -1)}
NAP_WINDOW = 0.25   # seconds of short naps after the last frame (actor.Idle)

R_TOO_BIG = DROP_BASE + DROP_REASONS.index("too_big")
R_RING_FULL = DROP_BASE + DROP_REASONS.index("ring_full")
R_WRITE_ERROR = DROP_BASE + DROP_REASONS.index("write_error")
R_NOT_MIRRORED = DROP_BASE + DROP_REASONS.index("not_mirrored")
I_IN_FRAMES, I_IN_BYTES, I_BATCHES = F["in_frames"], F["in_bytes"], F["batches"]
I_INLINE_FRAMES, I_INLINE_BYTES, I_JOURNAL = F["inline_frames"], F["inline_bytes"], F["journal"]
I_SLEEPS, I_DROP_BYTES = F["sleeps"], F["drop_bytes"]
I_OUT_FRAMES, I_OUT_BYTES, I_RING_HWM = F["out_frames"], F["out_bytes"], F["ring_hwm"]


def reader_loop(ctx: Context, m: Mapped = None) -> None:
    """The reader's process body (or a supervisor thread's, given the mapping)."""
    r = Reader(ctx, m if m is not None else start_child(ctx))
    r.m.ready[READER] = os.getpid()
    try:
        r.run()
    except OSError as e:
        if e.errno not in DEVICE_GONE:
            raise
        gone = True   # nothing more will be read: the workers drain and stop as at the end
    else:
        gone = False
    r.m.ctl[READER_DONE] = 1
    for i in range(ctx.workers):  # let the workers see that nothing more is coming
        ctx.wakes[worker(i)].set()
    if gone:
        sys.exit(EXIT_DEVICE_GONE)


class Reader:
    """The reader's state, and its steps."""

    def __init__(self, ctx: Context, m: Mapped) -> None:
        self.ctx, self.m, self.dev, self.W, self.rule = ctx, m, ctx.device, ctx.workers, ctx.rule
        self.frames, self.views = m.frames, m.slot_views()
        self.pool = packet.Pool(self.frames, self.views)
        self.rx = [m.rx(i) for i in range(self.W)]
        self.free_ring = m.free()
        self.wake = [Waker(m.flag(worker(i)), ctx.wakes[worker(i)]) for i in range(self.W)]
        # the device's readiness joins the wake-up where the platform can wait on both
        waitable = self.dev.waitable() if platform.WAITS_ON_DEVICES else None
        self.watch = [waitable] if waitable is not None else []
        self.sleeper = Sleeper(m.flag(READER), ctx.wakes[READER], self.watch)
        # waiting for room in a full worker ring: the workers poke this one as they free it
        self.room_sleeper = Sleeper(m.ctl[READER_ROOM:READER_ROOM + 1], ctx.wakes[READER])
        self.cnt = Counters(m.counters[READER])
        self.stack = free_slots(m, self.rx, self.free_ring)
        # frames ever handed to the workers; the writer returns each one's slot through the
        # free ring, so pushed == the free ring's write cursor means nothing is in flight
        self.pushed = sum(r.pushed for r in self.rx)
        self.journal = ReaderJournal(m.ctl, recover_reader(m, self.rx, self.cnt))
        warm_up(ctx.rule, self.W)
        self.io = self.dev.slot_io(self.frames)
        self.slot_size = m.layout.slot_size
        self.capture = open_capture(ctx, m)
        self.vo = self.dev.vnet_hdr_len
        self.ip_o = self.vo + ctx.rule.l2_hdr_len   # where the IP header starts
        own_backlog = reader_takes_backlog(ctx.inline)
        # Split by flow, a batch leaves each worker about 1/W of it, and a worker's run
        # has a fixed numpy cost: so where the workers take the backlog, a step reads a
        # batch per worker (docs/performance-notes.md, "Worker runs and batch size").
        self.policy = read_plan.Policy(
            read_max=ctx.batch if own_backlog else min(ctx.batch * self.W, MAX_BATCH),
            ring_capacity=self.rx[0].capacity, own=ctx.inline != "never",
            own_backlog=own_backlog, lossless=self.dev.lossless)
        self.idle = Idle(ctx.spin_s, NAP_WINDOW)
        self.stopping = lambda: stopping(m)  # noqa: E731 - made once, not per sleep
        # the headers of the last frame the reader wrote itself, on which `rehearse` runs
        # the rule again while the device is quiet
        self.rehearsal = bytearray(self.ip_o + 64)
        self.rehearsal_n = 0

    # ---------------------------------------------------------------- the loop
    def run(self) -> None:
        ctl, p, stack, free_ring = self.m.ctl, self.policy, self.stack, self.free_ring
        plan, mine, after = read_plan.plan, read_plan.mine, read_plan.after
        want, big, blocked_since = 0, False, 0.0
        while not ctl[STOP]:
            if free_ring.available():
                self.refill()
                continue
            idle = self.pushed == free_ring.pushed
            room = 0 if idle else min(r.space() for r in self.rx)
            blocked_s = time.perf_counter() - blocked_since if blocked_since else 0.0
            step = plan(p, free=len(stack), room=room, idle=idle, want=want, big=big,
                        blocked_s=blocked_s)
            blocked_since = (blocked_since or time.perf_counter()) if step.short else 0.0
            if step.wait:
                self.wait(step)
                continue
            slots, lens = self.read(step.frames)
            if not slots:
                want = 0
                if step.frames == 1:
                    self.quiet()
                continue
            self.idle.worked()
            own = mine(p, step, len(slots), idle)
            nbytes = self.own(slots, lens, step.burst) if own else self.hand(slots, lens)
            want, big = after(p, step, want, big, len(slots), nbytes)
        self.cnt.commit()

    def refill(self) -> None:
        """Take back the slots the writer returned."""
        ring = self.free_ring
        start, n = ring.peek(ring.capacity)
        self.stack.extend(ring.slot[start:start + n].tolist())
        ring.release(n)

    def wait(self, step: read_plan.Step) -> None:
        m, rx, free_ring = self.m, self.rx, self.free_ring
        if step.wait == "slots":   # every slot is in flight: the writer returns some
            self.sleeper.sleep(lambda: free_ring.available() > 0 or stopping(m), IDLE_TIMEOUT)
        else:
            need = step.frames
            self.room_sleeper.sleep(lambda: min(r.space() for r in rx) >= need, 0.0005)

    def quiet(self) -> None:
        """The device had nothing: spin, nap or sleep (actor.Idle), waking for a frame."""
        timeout = self.idle.timeout(time.perf_counter())
        if not timeout:
            return
        if timeout == IDLE_TIMEOUT:   # a real sleep, counted (a nap is not)
            self.cnt.c[I_SLEEPS] += 1
            self.cnt.commit()
        else:
            self.rehearse()
        if self.watch:
            self.sleeper.sleep(self.stopping, timeout)
        else:
            self.dev.wait(IDLE_TIMEOUT)

    # ---------------------------------------------------------------- the steps
    def read(self, k: int):
        """Up to k frames into free slots: (slots, lengths), the unused slots back."""
        stack = self.stack
        if k == 1:
            slot = stack.pop()
            n = self.io.read_one(slot)
            if n:
                return [slot], [n]
            stack.append(slot)
            return (), ()
        rs = stack[len(stack) - k:]
        del stack[len(stack) - k:]
        _, slots, lens, unused = self.io.exchange([], [], rs)
        stack.extend(unused)
        return slots, lens

    def own(self, slots: list, lens: list, burst: int) -> int:
        """Mirror and write frames here. After a one-frame step, the next frame is read
        at once, up to `burst` of them in this journal entry (the kernel often answers a
        frame inside its write). Returns the bytes taken."""
        taken, nbytes = len(slots), sum(lens)
        seq = self.journal.begin(taken, nbytes, self.pushed)
        while True:
            slots, lens, answers = self.admit(slots, lens)
            if slots:
                slots, lens = self.mirror(slots, lens)
            self.write(slots, lens, answers)
            last = (slots[-1], lens[-1]) if slots else None
            if taken >= burst or not self.stack:
                break
            slots, lens = self.read(1)   # into the slot just written, still in cache
            if not slots:
                break
            taken += 1
            nbytes += lens[0]
            self.journal.grow(taken, nbytes)
        self.commit(seq, taken, nbytes)
        if last:   # the last step's frame: its slot is free, but no read has filled it since
            k = min(last[1], len(self.rehearsal))
            self.rehearsal[:k] = self.views[last[0]][:k]
            self.rehearsal_n = last[1]
        return nbytes

    def hand(self, slots: list, lens: list) -> int:
        """Push frames to their flows' workers. Returns the bytes taken."""
        n, nbytes = len(slots), sum(lens)
        seq = self.journal.begin(n, nbytes, self.pushed)
        slots, lens, answers = self.admit(slots, lens)
        if answers:
            self.write((), (), answers)
        if slots:
            self.push(slots, lens)
        self.commit(seq, n, nbytes)
        return nbytes

    def commit(self, seq: int, n: int, nbytes: int) -> None:
        """Count a batch as read and commit its counts under its journal entry."""
        c = self.cnt.c
        c[I_IN_FRAMES] += n
        c[I_IN_BYTES] += nbytes
        c[I_BATCHES] += 1
        c[HIST_BASE + min(n.bit_length() - 1, 6)] += 1
        c[I_JOURNAL] = seq
        self.cnt.commit()

    def admit(self, slots: list, lens: list):
        """The frames that go on to the rule, and the TAP answers to write: (slots, lens,
        answers or None). Truncated frames (as long as their slot) are too_big; in TAP
        mode ARP and neighbour solicitations are answered and other non-IP frames
        dropped. Every slot of a frame that goes no further is back in the stack."""
        size = self.slot_size
        if max(lens) >= size:
            c = self.cnt.c
            keep = [k for k, ln in enumerate(lens) if ln < size]
            c[R_TOO_BIG] += len(lens) - len(keep)
            c[I_DROP_BYTES] += sum(ln for ln in lens if ln >= size)
            slots, lens = self.only(slots, lens, keep)
        if self.ip_o == self.vo or not slots:
            return slots, lens, None
        return self.link_layer(slots, lens)

    def link_layer(self, slots: list, lens: list):
        """TAP mode: classify the Ethernet frames (engine/packet/ethernet.py); see
        `admit`."""
        other = packet.classify(self.pool, slots, lens, self.vo)
        if other is None:
            return slots, lens, None
        c = self.cnt.c
        answered, a_lens, a_bytes = [], [], 0
        for i, kind, reason in other:
            n = self.answer(kind, slots[i], lens[i]) if kind != packet.KIND_DROP else 0
            if n:
                answered.append(slots[i])
                a_lens.append(n)
                a_bytes += lens[i]
            else:   # a request the rule has no answer for is not_mirrored
                c[DROP_BASE + reason - 1 if kind == packet.KIND_DROP else R_NOT_MIRRORED] += 1
                c[I_DROP_BYTES] += lens[i]
                self.stack.append(slots[i])
        gone = {i for i, _, _ in other}
        keep = [i for i in range(len(slots)) if i not in gone]
        return ([slots[i] for i in keep], [lens[i] for i in keep],
                (answered, a_lens, a_bytes) if answered else None)

    def answer(self, kind: int, slot: int, length: int) -> int:
        """Build the ARP reply or neighbour advertisement for one request in the request's
        own slot; returns its length, 0 when there is none to give."""
        rule, view = self.rule, self.views[slot]
        frame = bytes(view[:length])
        out = (packet.arp_reply(frame, self.vo, rule.address) if kind == packet.KIND_ARP
               else packet.neighbour_advert(frame, self.vo, rule.address6))
        if out is None or len(out) >= self.slot_size:
            return 0
        view[:len(out)] = out
        return len(out)

    def only(self, slots: list, lens: list, keep: list):
        """The frames at the indices in `keep` (ascending); the others' slots are free."""
        kept = set(keep)
        self.stack.extend(s for k, s in enumerate(slots) if k not in kept)
        return [slots[k] for k in keep], [lens[k] for k in keep]

    def mirror(self, slots: list, lens: list):
        """Mirror frames in place: the forwarded ones, each dropped one counted, its slot
        free."""
        reasons = packet.mirror(self.rule, self.pool, slots, lens)
        if reasons is None:
            return slots, lens
        forwarded = count_drops(self.cnt.c, reasons, lens)
        return self.only(slots, lens, np.flatnonzero(forwarded).tolist())

    def write(self, slots, lens, answers=None) -> None:
        """The reader's one way out to the device: frames it mirrored and TAP answers
        (counted at their requests' length), counted once written; every slot back to
        the stack."""
        if not slots and not answers:
            return
        nbytes = sum(lens)
        if answers:
            slots, lens = [*slots, *answers[0]], [*lens, *answers[1]]
            nbytes += answers[2]
        if self.capture:
            self.capture.frames([self.views[s] for s in slots], lens)
        if len(slots) == 1:
            refused = 0 if self.io.write_one(slots[0], lens[0]) else 1
        else:
            refused = self.io.exchange(slots, lens, [])[0]
        c = self.cnt.c
        c[I_INLINE_FRAMES] += len(slots) - refused
        c[I_INLINE_BYTES] += nbytes   # handed to the device: a refused frame's count too
        c[R_WRITE_ERROR] += refused
        self.stack.extend(slots)

    def push(self, slots: list, lens: list) -> None:
        """Hand frames to their workers: one publish and at most one wake-up per ring.
        The batch is split by worker with one stable sort (a flow keeps its order), so
        its cost does not grow with the worker count (docs/performance-notes.md,
        "Splitting a batch by worker")."""
        c, W, o = self.cnt.c, self.W, self.ip_o
        s_arr, l_arr = packet.u32(slots), packet.u32(lens)
        if W == 1:
            runs = ((0, 0, len(slots)),)
        else:
            dest = packet.worker_of(self.pool, s_arr, l_arr, o, W)
            order = np.argsort(dest, kind="stable")
            s_arr, l_arr = s_arr[order], l_arr[order]
            ends = np.cumsum(np.bincount(dest, minlength=W)).tolist()
            runs = [(i, a, b) for i, (a, b) in enumerate(zip([0] + ends[:-1], ends)) if b > a]
        below = np.cumsum(l_arr, dtype=np.int64)   # below[i]: bytes of frames 0..i
        refused_bytes = 0
        for i, start, end in runs:
            ring = self.rx[i]
            self.journal.pushing(i)
            pushed = ring.push(s_arr[start:end], l_arr[start:end])
            self.journal.pushed(pushed, _span(below, start, start + pushed))
            self.pushed += pushed
            if start + pushed < end:
                c[R_RING_FULL] += end - start - pushed
                self.stack.extend(s_arr[start + pushed:end].tolist())
                refused_bytes += _span(below, start + pushed, end)
            c[I_OUT_FRAMES] += pushed
            fill = ring.fill()
            if fill > c[I_RING_HWM]:
                c[I_RING_HWM] = fill
            self.wake[i].poke()
        c[I_OUT_BYTES] += int(below[-1]) - refused_bytes
        c[I_DROP_BYTES] += refused_bytes

    def rehearse(self) -> None:
        """Run the rule with no effect while the device is quiet: on a private copy of
        the last frame written (turned back into the frame as read first, so the rule
        runs its whole forwarding path and leaves the copy as it was), with reads of the
        shared words the path touches and a commit of unchanged counts. The next frame's
        code and data (and their TLB entries, dear in a VM) are then warm
        (docs/performance-notes.md, "Lone frames and warm naps")."""
        n = self.rehearsal_n
        if not n:
            return
        packet.reflect(self.rehearsal, self.ip_o)
        packet.mirror_frame(self.rule, self.rehearsal, n)
        if self.stack:
            self.views[self.stack[-1]][0]   # noqa: B018 - the slot the next read fills
        self.free_ring.pushed + self.m.ctl[STOP]   # noqa: B018
        self.cnt.commit()


def _span(below: np.ndarray, a: int, b: int) -> int:
    """Bytes of frames a..b-1 of a batch, from its running sums `below`."""
    return (int(below[b - 1]) if b else 0) - (int(below[a - 1]) if a else 0)
