"""Shared memory of one engine run: its names, its layout, and its lifetime.

Two segments per run, created 0600 by the supervisor only (DESIGN.md invariants 6, 7):

  <prefix>.pool   the frame pool: `pool_frames` slots of `slot_size` bytes, uint8 [P, S]
  <prefix>.ctl    control words, per-actor wait flags, counters, and every ring

The prefix names the device and the network namespace (`engine.<dev>.<netns inode>` on
Linux, `engine.<dev>.0` elsewhere: engine/platform), because /dev/shm is shared by all
namespaces while device names are not. A run that attached the device exclusively owns
the prefix, so segments found under it at start belong to a crashed run and are
reclaimed.

Every process derives the same `Layout` from the same numbers, then maps the segments.
"""
from __future__ import annotations

import array
import errno
import mmap
import os
from dataclasses import dataclass
from multiprocessing import shared_memory

import numpy as np

from . import platform, stats
from .journal import CTL_WORDS, LAYOUT_WORDS
from .errors import EngineError
from .ring import Ring, ring_bytes

LINE = 64


def _align(n: int) -> int:
    return (n + LINE - 1) // LINE * LINE


def _pow2_ceil(n: int) -> int:
    return 1 << max(1, (n - 1).bit_length())


def shm_prefix(device: str) -> str:
    return f"engine.{device}.{platform.namespace_tag()}"


@dataclass(frozen=True)
class Layout:
    """Offsets of everything in the control segment, derived from a few numbers."""

    workers: int
    pool_frames: int
    slot_size: int
    rx_capacity: int

    @property
    def tx_capacity(self) -> int:
        return self.rx_capacity

    @property
    def free_capacity(self) -> int:
        return _pow2_ceil(self.pool_frames)  # every slot fits: the free ring never overflows

    @property
    def actors(self) -> int:
        return self.workers + 2  # reader, workers..., writer

    # offsets
    @property
    def worker_done_at(self) -> int:
        return CTL_WORDS * 8

    @property
    def worker_busy_at(self) -> int:
        return self.worker_done_at + _align(8 * self.workers)

    @property
    def ready_at(self) -> int:
        return self.worker_busy_at + _align(8 * self.workers)

    @property
    def flags_at(self) -> int:
        return self.ready_at + _align(8 * self.actors)

    @property
    def counters_at(self) -> int:
        return self.flags_at + LINE * self.actors

    @property
    def rings_at(self) -> int:
        return self.counters_at + _align(stats.counters_bytes(self.workers))

    def rx_at(self, i: int) -> int:
        return self.rings_at + i * ring_bytes(self.rx_capacity)

    def tx_at(self, i: int) -> int:
        return self.rx_at(self.workers) + i * ring_bytes(self.tx_capacity)

    @property
    def free_at(self) -> int:
        return self.tx_at(self.workers)

    @property
    def ctl_bytes(self) -> int:
        return self.free_at + ring_bytes(self.free_capacity)

    @property
    def pool_bytes(self) -> int:
        return self.pool_frames * self.slot_size


class _NoTracker:
    """Stands in for multiprocessing's resource tracker inside shared_memory. The tracker
    would unlink a segment when any process that merely attached to it exits (Python
    < 3.13, bpo-38119), and it would run as root after --user dropped privileges (it starts
    with the first segment). Segment lifetime is the supervisor's job here: unlink at exit,
    reclaim at the next start (`reclaim`)."""

    @staticmethod
    def register(name, rtype):
        pass

    unregister = register


shared_memory.resource_tracker = _NoTracker  # shared_memory's own reference only


class _Segment(shared_memory.SharedMemory):
    """A SharedMemory whose mapping stays until the process exits. Numpy views into it
    live as long as the process does, so closing it from a finaliser could only fail
    (BufferError: exported pointers exist); the OS unmaps at exit."""

    def __del__(self) -> None:
        pass


class Mapped:
    """Numpy and memoryview views over a run's two segments, for any process; over the
    control segment alone when `pool_buf` is None (`frames` is None then), as a process
    outside the run maps it (`attach_readonly`). `prefix` names the run's segments."""

    def __init__(self, layout: Layout, pool_buf, ctl_buf, prefix: str = "") -> None:
        L = layout
        self.layout, self.prefix = L, prefix
        self.frames = None if pool_buf is None else np.frombuffer(
            pool_buf, np.uint8, L.pool_bytes).reshape(L.pool_frames, L.slot_size)
        mv = memoryview(ctl_buf)
        self.ctl = mv[:CTL_WORDS * 8].cast("Q")
        self.worker_done = mv[L.worker_done_at:L.worker_done_at + 8 * L.workers].cast("Q")
        # worker i's rx cursor after the run it is rewriting, 0 when idle (journal.py)
        self.worker_busy = mv[L.worker_busy_at:L.worker_busy_at + 8 * L.workers].cast("Q")
        self.ready = mv[L.ready_at:L.ready_at + 8 * L.actors].cast("Q")
        self.counters = stats.counters_view(mv[L.counters_at:L.rings_at], L.workers)
        self._mv = mv

    def flag(self, actor: int) -> memoryview:
        """The waiting word of actor 0 (reader), 1..W (workers) or W+1 (writer)."""
        at = self.layout.flags_at + LINE * actor
        return self._mv[at:at + 8].cast("Q")

    def rx(self, i: int) -> Ring:
        L = self.layout
        return Ring(self._mv[L.rx_at(i):L.rx_at(i) + ring_bytes(L.rx_capacity)], L.rx_capacity)

    def tx(self, i: int) -> Ring:
        L = self.layout
        return Ring(self._mv[L.tx_at(i):L.tx_at(i) + ring_bytes(L.tx_capacity)], L.tx_capacity)

    def free(self) -> Ring:
        L = self.layout
        return Ring(self._mv[L.free_at:L.free_at + ring_bytes(L.free_capacity)], L.free_capacity)

    def slot_views(self):
        return slot_views(self.frames)


# Up to this many slots, each process holds one memoryview per slot, made once, so the hot
# path indexes a list; a larger pool's views are made when asked, so a process's own
# memory does not grow with the pool (docs/performance-notes.md, "Frame memory").
VIEW_LIST_MAX = 1 << 16


def slot_views(frames: np.ndarray):
    """A writable memoryview of each row of `frames` (a pool slot), by slot number."""
    flat, s = memoryview(frames.reshape(-1)), frames.shape[1]
    if frames.shape[0] <= VIEW_LIST_MAX:
        return [flat[i * s:(i + 1) * s] for i in range(frames.shape[0])]
    return SlotViews(flat, s, frames.shape[0])


class SlotViews:
    """slot_views of a large pool: each view made when indexed."""

    __slots__ = ("_flat", "_size", "_count")

    def __init__(self, flat: memoryview, size: int, count: int) -> None:
        self._flat, self._size, self._count = flat, size, count

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, slot: int) -> memoryview:
        if not 0 <= slot < self._count:
            raise IndexError(slot)
        s = self._size
        return self._flat[slot * s:(slot + 1) * s]


class Segments:
    """The supervisor's ownership of a run's shared memory: create, then unlink once."""

    def __init__(self, prefix: str, layout: Layout) -> None:
        self.prefix, self.layout = prefix, layout
        ctl = f"{prefix}.ctl"
        try:  # the name first: what a crashed run left is reclaimed only once it is ours
            self._hold = platform.claim_segment(ctl, layout.ctl_bytes)
        except BlockingIOError:
            raise EngineError(_IN_USE.format(prefix=prefix)) from None
        except PermissionError:
            raise EngineError(f"the shared-memory name {prefix} belongs to another user "
                              f"(a run of theirs, live or crashed); choose another --device") from None
        try:
            platform.unlink_segment(f"{prefix}.pool")
            self._pool = _Segment(f"{prefix}.pool", create=True, size=layout.pool_bytes)
        except BaseException:
            self._release(unlink_ctl=True)
            raise
        try:
            self._ctl = _Segment(ctl, create=self._hold is None, size=layout.ctl_bytes)
        except BaseException:
            self._pool.unlink()
            self._release(unlink_ctl=True)
            raise
        try:
            for seg in (self._pool, self._ctl):
                _reserve(seg)
        except BaseException:
            self.unlink()
            raise
        self.mapped = Mapped(layout, self._pool.buf, self._ctl.buf, prefix)
        self.mapped.ctl[LAYOUT_WORDS] = array.array("Q", (
            layout.workers, layout.pool_frames, layout.slot_size, layout.rx_capacity))

    def unlink(self) -> None:
        for seg in (self._pool, self._ctl):
            try:
                seg.unlink()
            except FileNotFoundError:
                pass
        self._release(unlink_ctl=False)

    def _release(self, unlink_ctl: bool) -> None:
        """Let go of the name (after the segments are unlinked: no one can take a name
        whose segments are still there)."""
        if unlink_ctl:
            platform.unlink_segment(f"{self.prefix}.ctl")
        if self._hold is not None:
            os.close(self._hold)
            self._hold = None


_IN_USE = ("an engine already runs under the shared-memory name {prefix} (the same device "
           "name in this network namespace); stop it, or choose another --device")


def _reserve(seg: shared_memory.SharedMemory) -> None:
    """Every page of a new segment backed now, or one clear line: a /dev/shm smaller than
    the pool (containers ship 64 MiB) would otherwise fault in a child at the first read."""
    try:
        platform.reserve_segment(seg)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.ENOMEM):
            raise
        free = platform.segment_space()
        have = f", {free / 2**20:.1f} MiB free" if free is not None else ""
        raise EngineError(f"not enough shared memory for {platform.segment_path(seg.name)} "
                          f"(need {seg.size / 2**20:.1f} MiB{have}; a smaller --pool-mib, or "
                          f"more room there)") from None


def attach(prefix: str, layout: Layout) -> Mapped:
    """Map a run's segments in a child process. The SharedMemory objects are kept alive
    by the views; only the supervisor unlinks."""
    pool = _Segment(f"{prefix}.pool")
    ctl = _Segment(f"{prefix}.ctl")
    m = Mapped(layout, pool.buf, ctl.buf, prefix)
    m._segments = (pool, ctl)  # keep the mappings alive as long as the views
    return m


def attach_readonly(prefix: str):
    """(Mapped, created): the control segment of the run under `prefix`, mapped read-only
    without the pool by a process outside the run, and when the segment was created; the
    Mapped is None while the segment is not sized or its layout words not written yet.
    Raises FileNotFoundError or PermissionError when it cannot be opened."""
    name = f"{prefix}.ctl"
    buf, created = platform.open_segment_readonly(name)
    return (None if buf is None else control_view(buf, platform.segment_path(name), prefix),
            created)


def control_view(ctl_buf, where: str, prefix: str = ""):
    """A Mapped over a control segment alone, with the Layout its own control words 4..7
    describe (so the reader needs no engine settings), or None until they are written.
    EngineError when its size is not the one they describe (`where` names the segment)."""
    words = memoryview(ctl_buf)[:LINE].cast("Q").tolist()[LAYOUT_WORDS]
    if not all(words):
        return None
    layout = Layout(*words)
    # longer is fine: Windows rounds a mapping's size up to whole pages
    if not layout.ctl_bytes <= len(ctl_buf) < layout.ctl_bytes + mmap.ALLOCATIONGRANULARITY:
        raise EngineError(f"{where}: {len(ctl_buf)} bytes, but its header describes "
                          f"{layout.ctl_bytes} (an engine of another version?)")
    return Mapped(layout, None, ctl_buf, prefix)

