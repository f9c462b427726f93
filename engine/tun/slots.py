"""Slot I/O: how the reader and writer move frames between the device and pool slots.
The actors speak in pool slot indices and frame lengths; the `SlotIO` a device returns
from `device.slot_io(frames)` (one per process, made in the process that does the I/O)
turns them into device calls: Linux's `UringSlotIO` (engine/tun/uring.py) one
io_uring_enter per batch, the memory device's `MemorySlotIO` whole batches with numpy,
and `ViewSlotIO`, here, `read_batch`/`write_batch` over slot memoryviews for the others.

Contract:
- `exchange(wslots, wlens, rslots)` (lists of ints, the reader's currency) writes frame i of
  `wslots` from its first `wlens[i]` bytes, then reads up to len(rslots) frames into the
  slots of `rslots`. It returns (refused, got_slots, got_lens, unused): how many
  writes the device refused, the slots that received a frame with their lengths in frame
  order, and the slots that did not. It never blocks. A frame as long as its slot may be
  truncated (the caller drops it as too_big).
- `write(slots, lens)` (numpy arrays, the writer's currency): returns how many frames the
  device refused.
- `read_one(slot)` -> length or 0, `write_one(slot, n)` -> True when written: one frame,
  one plain syscall each (the reader's one-frame steps, engine/reader.py).
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from .. import shm


class SlotIO(Protocol):
    """What `Device.slot_io` returns (the contract above)."""

    def exchange(self, wslots: list, wlens: list, rslots: list) -> tuple: ...
    def write(self, slots: np.ndarray, lens: np.ndarray) -> int: ...
    def read_one(self, slot: int) -> int: ...
    def write_one(self, slot: int, n: int) -> bool: ...


class ViewSlotIO:
    """Slot calls over the Device protocol's read_batch/write_batch (one call per frame
    inside the device)."""

    def __init__(self, device, frames: np.ndarray) -> None:
        self.dev = device
        self.views = shm.slot_views(frames)
        self._lens = [0] * 1024

    def write(self, slots: np.ndarray, lens: np.ndarray) -> int:
        return self._write_each(slots.tolist(), lens.tolist())

    def exchange(self, wslots: list, wlens: list, rslots: list):
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
