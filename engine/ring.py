"""Single-producer / single-consumer descriptor ring in shared memory.

Theory of operation (after Snabb's interlink, itself MCRingBuffer; LINUX.md §4, §5):

- A ring moves *descriptors*: a pool slot index and a frame length (two uint32 arrays).
  Frames stay in the pool slot the read syscall put them in (engine/shm.py).
- Two free-running uint64 cursors, each on its own 64-byte line so producer and consumer
  do not share a cache line: `write` (next entry the producer fills; only the producer
  stores it) and `read` (next entry the consumer takes; only the consumer stores it).
  Entry i lives at `i & mask`. `write - read` is the fill level; 64-bit cursors never wrap
  in practice, so there is no full/empty ambiguity.
- The producer fills entries privately and publishes `write` once per batch; the consumer
  takes a contiguous run (`peek` stops at the wrap) and publishes `read` once per batch.

  | state  | condition                 | producer      | consumer         |
  |--------|---------------------------|---------------|------------------|
  | empty  | write == read             | may push      | nothing to peek  |
  | partly | 0 < write - read < cap    | may push      | may peek         |
  | full   | write - read == cap       | drops, counts | may peek         |

- Memory ordering: x86-64 is TSO, so "fill entries, then store `write`" is seen in that
  order by the other process, and an aligned 8-byte store through a memoryview cast is a
  single instruction. No fence is needed on the data path. (The sleep/wake handshake in
  engine/wake.py is the one place that needs a full fence.) On weakly ordered CPUs
  (arm64) this would need release/acquire barriers.
"""
from __future__ import annotations

import numpy as np

CACHE_LINE = 64
_WRITE, _READ = 0, CACHE_LINE // 8  # uint64 indices into the header
HEADER_BYTES = 2 * CACHE_LINE


def ring_bytes(capacity: int) -> int:
    """Shared memory a ring of `capacity` entries needs (header + two uint32 arrays)."""
    return HEADER_BYTES + 2 * _align(4 * capacity)


def _align(n: int) -> int:
    return (n + CACHE_LINE - 1) // CACHE_LINE * CACHE_LINE


class Ring:
    """One end's view of a ring laid out in `buf` (a memoryview of shared memory).

    Both ends construct the same object; by convention only the producer calls `push`
    and only the consumer calls `peek`/`release`.
    """

    __slots__ = ("capacity", "mask", "_cur", "slot", "length", "_write", "_read")

    def __init__(self, buf: memoryview, capacity: int) -> None:
        if capacity < 2 or capacity & (capacity - 1):
            raise ValueError(f"ring capacity must be a power of two >= 2, got {capacity}")
        if len(buf) < ring_bytes(capacity):
            raise ValueError("buffer too small for ring")
        self.capacity, self.mask = capacity, capacity - 1
        self._cur = buf[:HEADER_BYTES].cast("Q")
        arr = _align(4 * capacity)
        self.slot = np.frombuffer(buf, np.uint32, capacity, HEADER_BYTES)
        self.length = np.frombuffer(buf, np.uint32, capacity, HEADER_BYTES + arr)
        # private copies of our own cursor (we are its only writer)
        self._write = self._cur[_WRITE]
        self._read = self._cur[_READ]

    # ---- producer ------------------------------------------------------------------
    def space(self) -> int:
        return self.capacity - (self._write - self._cur[_READ])

    def push(self, slots, lengths) -> int:
        """Append as many descriptors as fit, publish once; returns how many were taken."""
        w = self._write
        n = min(len(slots), self.capacity - (w - self._cur[_READ]))
        if n <= 0:
            return 0
        i = w & self.mask
        first = min(n, self.capacity - i)
        self.slot[i:i + first] = slots[:first]
        self.length[i:i + first] = lengths[:first]
        if first < n:
            self.slot[:n - first] = slots[first:n]
            self.length[:n - first] = lengths[first:n]
        self._write = w + n
        self._cur[_WRITE] = w + n  # publish
        return n

    # ---- consumer ------------------------------------------------------------------
    def available(self) -> int:
        return self._cur[_WRITE] - self._read

    def peek(self, limit: int):
        """(start, n): the next n <= limit entries, contiguous (stops at the wrap).
        The entries are `slot[start:start+n]`, `length[start:start+n]`; they stay valid
        until `release(n)`."""
        r = self._read
        n = min(self._cur[_WRITE] - r, limit)
        i = r & self.mask
        return i, min(n, self.capacity - i)

    def release(self, n: int) -> None:
        self._read += n
        self._cur[_READ] = self._read  # publish

    @property
    def taken(self) -> int:
        """Entries this consumer has released: its own read cursor."""
        return self._read

    # ---- either end ----------------------------------------------------------------
    @property
    def pushed(self) -> int:
        """Entries ever pushed, as published: the write cursor in shared memory (for the
        producer itself, the same as its own)."""
        return self._cur[_WRITE]

    @property
    def released(self) -> int:
        """Entries ever released, as published: the read cursor in shared memory."""
        return self._cur[_READ]

    def fill(self) -> int:
        """Current fill level as seen from shared memory (for stats and tests)."""
        return self._cur[_WRITE] - self._cur[_READ]

    def entries(self, start: int, stop: int):
        """(slots, lengths) of the entries at cursors start..stop-1, copied (recovery
        scans what a dead actor left in a ring)."""
        idx = np.arange(start, stop, dtype=np.int64) & self.mask
        return self.slot[idx], self.length[idx]

    def queued(self):
        """(slots, lengths) of every entry between the published cursors."""
        return self.entries(self._cur[_READ], self._cur[_WRITE])
