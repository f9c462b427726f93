"""Recovery after a killed actor: how a restarted reader, worker or writer finds and undoes
what its predecessor left half done, so that no slot is ever in flight twice, the pool
never shrinks, and rx = tx + drops still holds (DESIGN.md invariant 2, issue 4).

The journals these read live in the control segment (engine/shm.py): the worker's busy
word, the writer's run journal, the reader's pending count. Each is written by its actor
just before the step it protects and cleared after it; a restarted actor calls its
`recover_*` once, before it starts its loop.
"""
from __future__ import annotations

import array

import numpy as np

from . import shm
from .stats import DROP_BASE, DROP_REASONS, Counters, F

R_WORKER_RESTART = DROP_BASE + DROP_REASONS.index("worker_restart")
R_WRITE_ERROR = DROP_BASE + DROP_REASONS.index("write_error")
I_DROP_BYTES = F["drop_bytes"]


def free_slots(m: shm.Mapped, rx, free_ring) -> array.array:
    """The reader's private stack of free slots. At first start that is every slot; after
    a restart it is every slot not found in a ring, scanned in pipeline order (rx, tx,
    free) so a slot moving downstream meanwhile is still seen once; the rest were held
    by the dead reader. An array of C ints, not a list: 4 bytes a slot, so a large pool
    costs the reader no more than that (a list of ints costs ten times as much)."""
    L = m.layout
    if all(r.fill() == 0 for r in rx) and m.counters[0][F["in_frames"]] == 0:
        free = np.arange(L.pool_frames, dtype=np.uint32)
    else:
        seen = np.zeros(L.pool_frames, bool)
        for ring in (*rx, *(m.tx(i) for i in range(L.workers)), free_ring):
            _mark(ring, seen)
        free = np.flatnonzero(~seen).astype(np.uint32)
    stack = array.array("I")
    stack.frombytes(free.tobytes())
    return stack


def _mark(ring, seen: np.ndarray) -> None:
    r, w = ring._cur[8], ring._cur[0]
    idx = np.arange(r, w, dtype=np.int64) & ring.mask
    seen[ring.slot[idx]] = True


def recover_reader(m: shm.Mapped, rx: list, cnt: Counters) -> int:
    """A reader killed inside a batch, before that batch's counts were committed (its
    sequence number is not in the committed row): count the batch as read; the frames it
    had pushed into the rings are counted downstream, the rest (written inline, dropped or
    never handed on) as worker_restart, so rx = tx + drops holds. Returns the sequence
    number to continue from.

    A reader killed after committing a batch it mirrored inline but before writing it
    (READER_UNSENT): those frames move from inline_frames to worker_restart.

    Bytes follow the frames: the batch's bytes are read, and those of its frames not in a
    ring are dropped."""
    ctl, c = m.ctl, cnt.c
    seq = ctl[shm.READER_SEQ]
    if seq and c[F["journal"]] != seq:
        pending = ctl[shm.READER_PENDING]
        pushed = sum(r._write for r in rx) - ctl[shm.READER_PUSHED]
        c[F["in_frames"]] += pending
        c[F["in_bytes"]] += ctl[shm.READER_PENDING_BYTES]
        c[R_WORKER_RESTART] += max(0, pending - pushed)
        c[I_DROP_BYTES] += ctl[shm.READER_PENDING_BYTES] - _pushed_bytes(ctl, rx, pushed)
        c[F["journal"]] = seq
        cnt.commit()
    elif ctl[shm.READER_UNSENT]:
        unsent = ctl[shm.READER_UNSENT]
        c[F["inline_frames"]] -= unsent
        c[F["inline_bytes"]] -= ctl[shm.READER_UNSENT_BYTES]
        c[R_WORKER_RESTART] += unsent
        c[I_DROP_BYTES] += ctl[shm.READER_UNSENT_BYTES]
        cnt.commit()
    ctl[shm.READER_UNSENT] = 0
    return seq


def _pushed_bytes(ctl, rx: list, pushed: int) -> int:
    """Bytes of the `pushed` frames of the pending batch now in the rx rings: those the
    journal recorded, plus the last push if it was published before its bytes were (its
    frames are the newest of the ring it went to)."""
    late = pushed - ctl[shm.READER_PUSHED_FRAMES]
    nbytes = ctl[shm.READER_PUSHED_BYTES]
    if late > 0 and ctl[shm.READER_PUSHING]:
        ring = rx[ctl[shm.READER_PUSHING] - 1]
        idx = np.arange(ring._write - late, ring._write, dtype=np.int64) & ring.mask
        nbytes += int(ring.length[idx].sum())
    return nbytes


def recover_worker(m: shm.Mapped, i: int, rx, tx, sleeper, c: list) -> None:
    """Undo what a killed predecessor left half done (a no-op at first start).

    1. Killed between pushing a run to tx and releasing it from rx: the run is in both
       rings. It goes on through tx; it is released from rx. Its drop reasons were never
       committed, so its dropped frames (length 0 in tx) count as worker_restart.
    2. Killed while rewriting (worker_busy past the rx cursor): those frames may be half
       rewritten. They are dropped as worker_restart: pushed with length 0, so the writer
       returns their slots (the pool never shrinks)."""
    pending = rx.available()
    if pending and tx.fill():
        in_tx = {}
        for k in range(tx._cur[8], tx._cur[0]):
            in_tx[int(tx.slot[k & tx.mask])] = int(tx.length[k & tx.mask])
        n = 0
        while n < pending and int(rx.slot[(rx._read + n) & rx.mask]) in in_tx:
            k = (rx._read + n) & rx.mask
            if in_tx[int(rx.slot[k])] == 0:   # dropped by the dead worker, never counted
                c[R_WORKER_RESTART] += 1
                c[I_DROP_BYTES] += int(rx.length[k])
            n += 1
        if n:
            rx.release(n)
    left = m.worker_busy[i] - rx._read if m.worker_busy[i] > rx._read else 0
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


def recover_writer(m: shm.Mapped, tx: list, free_ring, cnt: Counters) -> None:
    """Undo what a killed predecessor left half done with a run (the journal says which):
    - killed before returning the run's slots: nothing to undo; the run is written again
      (its frames go out twice, counted once);
    - killed after returning them: release the run from its tx ring (else a slot would be
      in flight twice), and add the run's counts unless its commit got through."""
    j = m.ctl
    ring = j[shm.WRITER_RING]
    if not ring:
        return
    t, upto = tx[ring - 1], j[shm.WRITER_UPTO]
    if free_ring._cur[0] != j[shm.WRITER_FREE_BEFORE]:
        if t._read < upto:
            t.release(upto - t._read)
        if cnt.c[F["journal"]] != upto:
            add_writer_counts(cnt.c, j[shm.WRITER_IN], j[shm.WRITER_OUT],
                               j[shm.WRITER_BYTES], j[shm.WRITER_ERR])
            cnt.c[F["journal"]] = upto
            cnt.commit()
    j[shm.WRITER_RING] = 0


def add_writer_counts(c: list, frames_in: int, out: int, nbytes: int, refused: int) -> None:
    c[F["in_frames"]] += frames_in
    c[F["out_frames"]] += out
    c[F["out_bytes"]] += nbytes
    c[R_WRITE_ERROR] += refused
