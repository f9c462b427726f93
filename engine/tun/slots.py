"""Slot I/O: how the reader and writer move frames between the device and pool slots.

The loops speak in pool slot indices and frame lengths; a `SlotIO` turns that into device
calls, one per process (`slot_io(device, frames)`):

- `UringSlotIO` (Linux TUN/TAP): one io_uring_enter per batch (engine/tun/uring.py). Its
  `exchange` writes the previous batch and reads the next one in the same syscall.
- the device's own, when it has one (`device.slot_io(frames)`; the in-memory device
  copies whole batches with numpy);
- `ViewSlotIO` for every other device: `read_batch`/`write_batch` over slot memoryviews.

Contract:
- `exchange(wslots, wlens, rslots, warrays=None)` (lists of ints, the reader's currency;
  `warrays` the write lists as numpy arrays when the caller has them) writes frame i of
  `wslots` from its first `wlens[i]` bytes, then reads up to len(rslots) frames into the
  slots of `rslots`. It returns (refused, got_slots, got_lens, unused): how many
  writes the device refused, the slots that received a frame with their lengths in frame
  order, and the slots that did not. It never blocks. A frame as long as its slot may be
  truncated (the caller drops it as too_big).
- `write(slots, lens)` (numpy arrays, the writer's currency): returns how many frames the
  device refused.
- `read_one(slot)` -> length or 0, `write_one(slot, n)` -> True when written: the lone-frame
  path (engine/loops.py, `_Reader.lone`), one plain syscall each.
"""
from __future__ import annotations

import array
import errno
import io
import logging
import os

import numpy as np

from .. import shm

log = logging.getLogger("engine")


def u32(values: list) -> np.ndarray:
    """A list of ints as a uint32 array: through array.array, about 3x faster than
    np.array(list) for batch-sized lists (measured on the test VM)."""
    return np.frombuffer(array.array("I", values), np.uint32)


def slot_io(device, frames: np.ndarray):
    """The best SlotIO for this device in this process (call it in the process that
    does the I/O: an io_uring belongs to its process)."""
    own = getattr(device, "slot_io", None)
    if own is not None:
        sio = own(frames)
        if sio is not None:
            return sio
    return ViewSlotIO(device, frames)


class ViewSlotIO:
    """Slot calls over the Device protocol's read_batch/write_batch (one call per frame
    inside the device)."""

    def __init__(self, device, frames: np.ndarray) -> None:
        self.dev = device
        self.views = shm.slot_views(frames)
        self._lens = [0] * 1024

    def write(self, slots: np.ndarray, lens: np.ndarray) -> int:
        return self._write_each(slots.tolist(), lens.tolist())

    def exchange(self, wslots: list, wlens: list, rslots: list, warrays=None):
        return (self._write_each(wslots, wlens), *self._read_each(rslots))

    def read_one(self, slot: int) -> int:
        """One frame into `slot`: its length, 0 when none is waiting (the lone-frame path)."""
        return self._lens[0] if self.dev.read_batch([self.views[slot]], self._lens) else 0

    def write_one(self, slot: int, n: int) -> bool:
        return not self.dev.write_batch([self.views[slot]], [n])

    def _write_each(self, slots: list, lens: list) -> int:
        if not slots:
            return 0
        views = self.views
        return self.dev.write_batch([views[s] for s in slots], lens)

    def _read_each(self, slots: list):
        if not slots:
            return [], [], []
        views, lens = self.views, self._lens
        n = self.dev.read_batch([views[s] for s in slots], lens)
        return slots[:n], lens[:n], slots[n:]


class UringSlotIO(ViewSlotIO):
    """Reads and writes of a batch in one io_uring_enter (engine/tun/uring.py). Steps of
    at most SMALL requests (a ping, a lone ACK) take plain syscalls instead: for them the
    numpy set-up of a submission costs more than the syscalls it saves, and a process
    woken from sleep runs numpy code many times slower than when warm."""

    SMALL = 4    # up to this many requests: plain read(2)/write(2)
    FEW = 32     # up to this many: SQEs filled in plain Python (Uring.exchange_slots)

    def __init__(self, device, frames: np.ndarray, entries: int = 2048) -> None:
        from .uring import Uring
        super().__init__(device, frames)
        self.ring = Uring(device.fileno(), entries)
        self._fd = device.fileno()
        self._readinto = io.FileIO(self._fd, "rb", closefd=False).readinto
        self._write = os.write
        self.cap = self.ring.entries
        self.size = frames.shape[1]
        self._base, self._stride = frames.ctypes.data, frames.strides[0]
        # every slot's address, computed once: a batch's addresses are one gather
        self._slot_addr = (np.arange(len(frames), dtype=np.uint64) * np.uint64(self._stride)
                           + np.uint64(self._base))
        self._res = np.empty(self.cap, np.int32)   # results, reused every call

    def read_one(self, slot: int) -> int:
        # FileIO.readinto returns None on EAGAIN: no exception per idle probe
        return self._readinto(self.views[slot]) or 0

    def write_one(self, slot: int, n: int) -> bool:
        try:
            return self._write(self._fd, self.views[slot][:n]) == n
        except OSError:
            return False

    def write(self, slots: np.ndarray, lens: np.ndarray) -> int:
        if len(slots) <= self.SMALL:
            return self._write_each(slots.tolist(), lens.tolist())
        refused = 0
        for at in range(0, len(slots), self.cap):
            refused += self._submit(slots[at:at + self.cap], lens[at:at + self.cap], None)
        return refused

    def exchange(self, wslots: list, wlens: list, rslots: list, warrays=None):
        m, r = len(wslots), len(rslots)
        if m + r <= self.SMALL:
            return (self._write_each(wslots, wlens), *self._read_each(rslots))
        if m + r <= self.FEW:
            return self.ring.exchange_slots(wslots, wlens, rslots, self._base, self._stride,
                                            self.size)
        if m:
            ws, wl = warrays or (u32(wslots), u32(wlens))
        else:
            ws = wl = None
        if m + r > self.cap:            # more than one submission holds: write first
            return self.write(ws, wl), *self.exchange([], [], rslots)[1:]
        rs = u32(rslots)
        refused = self._submit(ws, wl, rs)
        got = self._res[m:m + r]
        ok = got > 0
        if ok.all():
            return refused, rslots, got.tolist(), []
        bad = got[~ok]
        hard = bad[(bad != -errno.EAGAIN) & (bad != 0)]
        if len(hard):
            from .uring import read_failed   # (uring.py is Linux only: imported here)
            read_failed(int(hard[0]))
        return refused, rs[ok].tolist(), got[ok].tolist(), rs[~ok].tolist()

    def _submit(self, wslots, wlens, rslots) -> int:
        """Writes (then reads) in one submission; returns the refused writes; the read
        results stay in self._res[m:]."""
        m = 0 if wslots is None else len(wslots)
        n = m + (0 if rslots is None else len(rslots))
        res = self._res
        self.ring.submit_slots(wslots, wlens, rslots, self._slot_addr, self.size, res[:n])
        return int(np.count_nonzero(res[:m] < 0)) if m and res[:m].min() < 0 else 0

    def close(self) -> None:
        self.ring.close()


def try_uring(device, frames: np.ndarray):
    """A UringSlotIO for the device, or None where io_uring is missing or forbidden (old kernel,
    kernel.io_uring_disabled, seccomp): the caller falls back to one syscall per frame."""
    global _warned
    try:
        return UringSlotIO(device, frames)
    except OSError as e:
        if not _warned:   # once per process
            _warned = True
            log.warning("io_uring unavailable (%s): one read/write syscall per frame",
                        e.strerror)
        return None


_warned = False
