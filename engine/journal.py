"""The control segment's words, the journals the actors keep in them, and recovery.

A killed reader, worker or writer is restarted by the supervisor; its successor must find
and undo what it left half done, so that no slot is ever in flight twice, the pool never
shrinks, and rx = tx + drops still holds. Each actor writes its journal just before the
step it protects and clears or supersedes it after; a restarted actor calls its
`recover_*` once, before its loop.
"""
from __future__ import annotations

import array

import numpy as np

from .stats import DROP_BASE, DROP_REASONS, Counters, F

# Control words (uint64) at the start of the control segment (engine/shm.py).
STOP, READER_DONE, WRITER_DONE, SUPERVISOR_PID = 0, 1, 2, 3
# Words 4..7 describe the layout, so an outside reader (`python -m engine stats`) can
# rebuild it from the segment alone.
WORKERS, POOL_FRAMES, SLOT_SIZE, RX_CAPACITY = 4, 5, 6, 7
LAYOUT_WORDS = slice(WORKERS, RX_CAPACITY + 1)  # in shm.Layout's field order
CAPTURED = 8        # frames written to --pcap
CAPTURE_ENDED = 9   # 1 once a --pcap write failed: every actor stops capturing
READER_ROOM = 10    # 1 while the reader waits for room in a full worker ring
# The writer's journal: which tx ring it is returning slots from (index + 1, 0: none), up
# to which cursor, the free ring's write cursor before the return, and the run's counts.
WRITER_RING, WRITER_UPTO, WRITER_FREE_BEFORE = 11, 12, 13
WRITER_IN, WRITER_OUT, WRITER_BYTES, WRITER_ERR = 14, 15, 16, 17
# The reader's journal: the batch in hand (sequence number, frames, bytes), the frames
# handed to the workers before it, the part of it already pushed, and the rx ring it is
# pushing to (index + 1: that push may be published before its bytes are added here).
READER_SEQ, READER_PENDING, READER_PENDING_BYTES = 18, 19, 20
READER_PUSHED, READER_PUSHED_FRAMES, READER_PUSHED_BYTES, READER_PUSHING = 21, 22, 23, 24
CTL_WORDS = 32

R_WORKER_RESTART = DROP_BASE + DROP_REASONS.index("worker_restart")
R_WRITE_ERROR = DROP_BASE + DROP_REASONS.index("write_error")
I_DROP_BYTES, I_JOURNAL = F["drop_bytes"], F["journal"]


# --------------------------------------------------------------------------- reader
class ReaderJournal:
    """The reader's batch in hand. `begin` before the batch's first frame is touched; the
    batch's counts are committed with the returned sequence number in the `journal`
    field, which is how a successor tells a finished batch from a half-done one."""

    __slots__ = ("ctl", "seq")

    def __init__(self, ctl, seq: int) -> None:
        self.ctl, self.seq = ctl, seq

    def begin(self, frames: int, nbytes: int, pushed: int) -> int:
        ctl = self.ctl
        self.seq = seq = self.seq + 1
        ctl[READER_PUSHED] = pushed
        ctl[READER_PENDING] = frames
        ctl[READER_PENDING_BYTES] = nbytes
        ctl[READER_PUSHED_FRAMES] = ctl[READER_PUSHED_BYTES] = 0
        ctl[READER_SEQ] = seq
        return seq

    def grow(self, frames: int, nbytes: int) -> None:
        """The batch in hand now holds this many frames and bytes (a burst took more)."""
        self.ctl[READER_PENDING] = frames
        self.ctl[READER_PENDING_BYTES] = nbytes

    def pushing(self, ring: int) -> None:
        self.ctl[READER_PUSHING] = ring + 1

    def pushed(self, frames: int, nbytes: int) -> None:
        self.ctl[READER_PUSHED_FRAMES] += frames
        self.ctl[READER_PUSHED_BYTES] += nbytes


def free_slots(m, rx: list, free_ring) -> array.array:
    """The reader's private stack of free slots. At first start that is every slot; after
    a restart it is every slot not found in a ring, scanned in pipeline order (rx, tx,
    free) so a slot moving downstream meanwhile is still seen once; the rest were held
    by the dead reader. An array of C ints, not a list: 4 bytes a slot, where a list of
    ints costs ten times as much (docs/performance-notes.md, "Frame memory")."""
    L = m.layout
    if all(r.fill() == 0 for r in rx) and m.counters[0][F["in_frames"]] == 0:
        free = np.arange(L.pool_frames, dtype=np.uint32)
    else:
        seen = np.zeros(L.pool_frames, bool)
        for ring in (*rx, *(m.tx(i) for i in range(L.workers)), free_ring):
            seen[ring.queued()[0]] = True
        free = np.flatnonzero(~seen).astype(np.uint32)
    stack = array.array("I")
    stack.frombytes(free.tobytes())
    return stack


def recover_reader(m, rx: list, cnt: Counters) -> int:
    """A reader killed inside a batch, before that batch's counts were committed (its
    sequence number is not in the committed row): count the batch as read; the frames it
    had pushed into the rings are counted downstream, the rest (written by the reader
    itself, dropped or never handed on) as worker_restart, so rx = tx + drops holds.
    Bytes follow the frames. Returns the sequence number to continue from."""
    ctl, c = m.ctl, cnt.c
    seq = ctl[READER_SEQ]
    if seq and c[I_JOURNAL] != seq:
        pending = ctl[READER_PENDING]
        pushed = sum(r.pushed for r in rx) - ctl[READER_PUSHED]
        c[F["in_frames"]] += pending
        c[F["in_bytes"]] += ctl[READER_PENDING_BYTES]
        c[R_WORKER_RESTART] += max(0, pending - pushed)
        c[I_DROP_BYTES] += ctl[READER_PENDING_BYTES] - _pushed_bytes(ctl, rx, pushed)
        c[I_JOURNAL] = seq
        cnt.commit()
    return seq


def _pushed_bytes(ctl, rx: list, pushed: int) -> int:
    """Bytes of the `pushed` frames of the pending batch now in the rx rings: those the
    journal recorded, plus the last push if it was published before its bytes were (its
    frames are the newest of the ring it went to)."""
    late = pushed - ctl[READER_PUSHED_FRAMES]
    nbytes = ctl[READER_PUSHED_BYTES]
    if late > 0 and ctl[READER_PUSHING]:
        ring = rx[ctl[READER_PUSHING] - 1]
        nbytes += int(ring.entries(ring.pushed - late, ring.pushed)[1].sum())
    return nbytes


# --------------------------------------------------------------------------- worker
def recover_worker(m, i: int, rx, tx, sleeper, c: list) -> None:
    """Undo what a killed predecessor left half done (a no-op at first start). Its
    journal is `m.worker_busy[i]`: the rx cursor after the run it was rewriting.

    1. Killed between pushing a run to tx and releasing it from rx: the run is in both
       rings. It goes on through tx; it is released from rx. Its drop reasons were never
       committed, so its dropped frames (length 0 in tx) count as worker_restart.
    2. Killed while rewriting (worker_busy past the rx cursor): those frames may be half
       rewritten. They are dropped as worker_restart: pushed with length 0, so the writer
       returns their slots (the pool never shrinks)."""
    pending = rx.available()
    if pending and tx.fill():
        in_tx = dict(zip(*(a.tolist() for a in tx.queued())))
        slots, lens = (a.tolist() for a in rx.entries(rx.taken, rx.taken + pending))
        n = 0
        while n < pending and slots[n] in in_tx:
            if in_tx[slots[n]] == 0:   # dropped by the dead worker, never counted
                c[R_WORKER_RESTART] += 1
                c[I_DROP_BYTES] += lens[n]
            n += 1
        if n:
            rx.release(n)
    left = max(0, m.worker_busy[i] - rx.taken)
    while left:
        start, n = rx.peek(left)
        n = min(n, tx.space())
        if not n:
            sleeper.sleep(lambda: tx.space() > 0, 0.01)
            continue
        tx.push(rx.slot[start:start + n], np.zeros(n, np.uint32))
        c[I_DROP_BYTES] += int(rx.length[start:start + n].sum())
        rx.release(n)
        c[R_WORKER_RESTART] += n
        left -= n
    m.worker_busy[i] = 0


# --------------------------------------------------------------------------- writer
def writer_begin(ctl, ring: int, tx, n: int, free_ring, frames_in: int, out: int,
                 nbytes: int, refused: int) -> int:
    """Journal a written run of tx ring `ring` (its n entries, their counts) before its
    slots go back; returns the cursor it ends at (committed as the `journal` count)."""
    ctl[WRITER_FREE_BEFORE] = free_ring.pushed
    ctl[WRITER_UPTO] = upto = tx.taken + n
    ctl[WRITER_IN], ctl[WRITER_OUT] = frames_in, out
    ctl[WRITER_BYTES], ctl[WRITER_ERR] = nbytes, refused
    ctl[WRITER_RING] = ring + 1
    return upto


def writer_end(ctl) -> None:
    ctl[WRITER_RING] = 0


def recover_writer(m, tx: list, free_ring, cnt: Counters) -> None:
    """Undo what a killed predecessor left half done with a run (the journal says which):
    - killed before returning the run's slots: nothing to undo; the run is written again
      (its frames go out twice, counted once);
    - killed after returning them: release the run from its tx ring (else a slot would be
      in flight twice), and add the run's counts unless its commit got through."""
    j = m.ctl
    ring = j[WRITER_RING]
    if not ring:
        return
    t, upto = tx[ring - 1], j[WRITER_UPTO]
    if free_ring.pushed != j[WRITER_FREE_BEFORE]:
        if t.taken < upto:
            t.release(upto - t.taken)
        if cnt.c[I_JOURNAL] != upto:
            add_writer_counts(cnt.c, j[WRITER_IN], j[WRITER_OUT], j[WRITER_BYTES], j[WRITER_ERR])
            cnt.c[I_JOURNAL] = upto
            cnt.commit()
    writer_end(j)


def add_writer_counts(c: list, frames_in: int, out: int, nbytes: int, refused: int) -> None:
    c[F["in_frames"]] += frames_in
    c[F["out_frames"]] += out
    c[F["out_bytes"]] += nbytes
    c[R_WRITE_ERROR] += refused
