"""The device boundary: the `Device` protocol, `TunError`, and `open_device`, the one place
that chooses a backend by platform and driver (as trio and psutil bind theirs once).

Contract of every `Device` (sentences, as wireguard-go's tun.Device states its own):

- `read_batch(bufs, lengths)` reads up to `len(bufs)` frames, frame i into `bufs[i]` (a
  writable buffer such as a memoryview of a shared-memory slot) and its length into
  `lengths[i]`. It never blocks: it returns how many frames it read, 0 when none is
  waiting. A frame that fills its buffer completely may have been truncated; the caller
  sizes buffers one byte past the largest legal frame and drops such frames as `too_big`.
- `write_batch(bufs, lengths)` writes frame i from the first `lengths[i]` bytes of
  `bufs[i]`. It returns the number of frames the device refused (each is counted by the
  caller as `write_error`); a refused frame never stops the batch.
- Each frame starts with `vnet_hdr_len` bytes of `virtio_net_hdr` (Linux offload mode,
  LINUX.md §1), then `l2_hdr_len` bytes of link-layer header (14, Ethernet, when `mode` is
  "tap"; 0 when it is "tun"), then the IP packet.
- `slot_io(frames)` returns the device's `SlotIO` over the pool `frames` (engine/tun/slots.py
  has its contract), made in the process that does the I/O: Linux's io_uring (or one
  syscall per frame where io_uring is refused), the memory device's numpy copies, or the
  `ViewSlotIO` over `read_batch`/`write_batch`.
- `fileno()` is a descriptor that polls readable when frames wait (POSIX), or -1 when the
  device has none; then `wait(timeout)` blocks until frames may be waiting.
- `waitable()` is what the platform's wake-up waits on together with its own
  (engine/platform): the descriptor on POSIX, an event HANDLE on Windows that is
  signalled when frames may be waiting (Wintun's read-wait event), or None (then the
  reader uses `wait`: the memory device, TAP-Windows).
- `close()` is idempotent and invalidates the handle: a closed device raises, never
  touches a reused descriptor number (trio's _FdHolder).
- `lossless`: frames wait in the device until read (a pcap replay), so the reader waits
  for room in a full worker ring instead of dropping; False for a real device.
- A device object is picklable while a child process is being started, so the supervisor
  opens it once and the reader and writer processes use the same kernel object.
  `io_threads` says the reader and writer must instead be two threads of one process:
  a Wintun session belongs to the process that started it (WINDOWS.md §6).
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, MutableSequence, Optional, Protocol, Sequence

from ..errors import EngineError

if TYPE_CHECKING:
    import numpy as np

    from ..config import Config
    from .slots import SlotIO


class TunError(EngineError):
    """The device cannot be opened or configured; the message says why and what to do."""


class Device(Protocol):
    name: str
    mtu: int
    mode: str          # "tun" (IP packets) or "tap" (Ethernet frames)
    l2_hdr_len: int    # 14 in TAP mode, 0 in TUN mode
    vnet_hdr_len: int
    io_threads: bool
    lossless: bool
    created: bool  # True when opening it created the device (it goes away with us)

    def read_batch(self, bufs: Sequence[memoryview], lengths: MutableSequence[int]) -> int: ...
    def write_batch(self, bufs: Sequence[memoryview], lengths: Sequence[int]) -> int: ...
    def slot_io(self, frames: "np.ndarray") -> "SlotIO": ...
    def fileno(self) -> int: ...
    def waitable(self) -> Optional[int]: ...
    def wait(self, timeout: float) -> None: ...
    def close(self) -> None: ...


def open_device(cfg: "Config") -> Device:
    """Open (or create) the device the config names, with the backend for this platform."""
    driver = cfg.resolved_driver
    if driver == "memory":
        from . import memory
        return memory.open(cfg)
    if driver == "linux":
        from . import linux
        return linux.open(cfg)
    if driver == "tap-windows":
        from . import tap_windows
        return tap_windows.open(cfg)
    if driver == "wintun":
        from . import wintun
        return wintun.open(cfg)
    raise TunError(f"no device backend for this platform ({sys.platform}): pass --driver memory")
