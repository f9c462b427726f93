"""An in-memory device for tests and the kernel-free benchmark (wireguard-go's
tuntest.ChannelTUN plays this part there).

Frames to "read" come from a pcap file, replayed `loops` times; frames "written" are
appended to a sink pcap file, or only counted when there is none. Reads copy a stored
frame into the caller's buffer, where the kernel would. The object pickles as its
settings, so the reader and writer processes each open their own side.

The engine moves frames through `slot_io(frames)` (engine/tun/slots.py):
`MemorySlotIO` loads the replay once into a padded matrix and copies a whole batch into
the pool with one fancy-index assignment, and counts a batch written without a sink with
one addition, so the kernel-free benchmark measures the pipeline, not this device.
`read_batch`/`write_batch` (one Python step per frame) remain for everything else.
"""
from __future__ import annotations

import builtins
import time
from typing import List, MutableSequence, Optional, Sequence

import numpy as np

from .. import pcap
from ..config import MAX_BATCH
from ..packet.batch import u32
from . import TunError
from .slots import ViewSlotIO


class MemoryDevice:
    io_threads = False
    created = True
    mode, l2_hdr_len = "tun", 0   # a replay holds IP packets
    lossless = True  # frames wait here until read, so the reader waits for ring room
    # frames the replay holds in all: the supervisor stops once they are all written or
    # dropped (None: it runs until stopped)
    frames_total: Optional[int] = None

    def __init__(self, source: Optional[str], loops: int = 1, sink: Optional[str] = None,
                 name: str = "memory0", mtu: int = 1500, vnet_hdr_len: int = 0) -> None:
        self.source, self.loops, self.sink = source, loops, sink
        self.name, self.mtu, self.vnet_hdr_len = name, mtu, vnet_hdr_len
        self._frames: Optional[List[bytes]] = None
        self._next = 0
        self._out = None
        self.written = 0
        self._closed = False

    def __reduce__(self):
        return (MemoryDevice, (self.source, self.loops, self.sink, self.name, self.mtu,
                               self.vnet_hdr_len))

    def _load(self) -> List[bytes]:
        if self._frames is None:
            self._frames = pcap.read_frames(self.source) if self.source else []
        return self._frames

    def _claim(self, want: int):
        """Take the next frames of the replay, at most `want`: (index of the first, how
        many). The replay ends after loops * len(frames) frames."""
        self._check()
        start = self._next
        n = max(0, min(want, len(self._load()) * self.loops - start))
        self._next = start + n
        return start, n

    def read_batch(self, bufs: Sequence[memoryview], lengths: MutableSequence[int]) -> int:
        start, n = self._claim(len(bufs))
        frames = self._frames
        for i in range(n):
            f = frames[(start + i) % len(frames)]
            k = min(len(f), len(bufs[i]))
            bufs[i][:k] = f[:k]
            lengths[i] = k
        return n

    def slot_io(self, frames: np.ndarray) -> "MemorySlotIO":
        return MemorySlotIO(self, frames)

    def write_batch(self, bufs: Sequence[memoryview], lengths: Sequence[int]) -> int:
        self._check()
        if self.sink:
            if self._out is None:
                self._out = builtins.open(self.sink, "ab", buffering=1 << 20)
            for b, n in zip(bufs, lengths):
                self._out.write(pcap.record(b[:n]))
                self._out.write(b[:n])
            self._out.flush()
        self.written += len(bufs)
        return 0

    def fileno(self) -> int:
        return -1

    def waitable(self) -> None:
        return None  # frames are always ready until the replay ends

    def wait(self, timeout: float) -> None:
        time.sleep(timeout)

    def close(self) -> None:
        self._closed = True
        if self._out is not None:
            self._out.close()
            self._out = None

    def _check(self) -> None:
        if self._closed:
            raise ValueError("device is closed")


class MemorySlotIO(ViewSlotIO):
    """Slot I/O of the in-memory device (engine/tun/slots.py has the contract); the
    lone-frame calls (read_one, write_one) are ViewSlotIO's.

    The replay is loaded once into `mat` (one row per frame, padded to the longest,
    truncated to the slot size as a read into the slot would be), followed by a copy of
    its first rows, so any run of up to EXTRA frames from any position is contiguous:
    a read of a batch is one slice of `mat` assigned to `frames[slots, :width]` (both
    seen as one void item per row)."""

    EXTRA = MAX_BATCH  # the most one step reads

    def __init__(self, dev: MemoryDevice, frames: np.ndarray) -> None:
        super().__init__(dev, frames)
        self.frames = frames
        src = dev._load()
        size = frames.shape[1]
        lens = [min(len(f), size) for f in src]
        self.count = len(src)
        self.width = max(lens, default=0)
        extra = min(self.count, self.EXTRA)
        w = max(self.width, 1)
        mat = np.zeros((self.count + extra, w), np.uint8)
        for i, (f, k) in enumerate(zip(src, lens)):
            mat[i, :k] = np.frombuffer(f, np.uint8, k)
        mat[self.count:] = mat[:extra]
        self.lens = lens + lens[:extra]
        # rows as single void items: a fancy-index copy then moves each frame with one
        # memcpy instead of a loop over `width` uint8 elements
        self.mat = mat.view(f"V{w}")[:, 0]
        self._dst = frames[:, :w].view(f"V{w}")[:, 0]

    def exchange(self, wslots: list, wlens: list, rslots: list):
        refused = self.write(u32(wslots), u32(wlens)) if wslots else 0
        if not rslots:
            return refused, [], [], []
        start, n = self.dev._claim(len(rslots))
        if not n:
            return refused, [], [], rslots
        got = rslots if n == len(rslots) else rslots[:n]
        idx = u32(got)
        out_lens = []
        done = 0
        while done < n:       # one step unless a read is longer than EXTRA frames
            i = (start + done) % self.count
            k = min(n - done, len(self.mat) - i)
            self._dst[idx[done:done + k]] = self.mat[i:i + k]
            out_lens += self.lens[i:i + k]
            done += k
        return refused, got, out_lens, rslots[n:]

    def write(self, slots: np.ndarray, lens: np.ndarray) -> int:
        dev = self.dev
        if dev.sink:  # keep the output: one pcap record per frame
            frames = self.frames
            return dev.write_batch([frames[s] for s in slots.tolist()], lens.tolist())
        dev._check()
        dev.written += len(slots)
        return 0


def open(cfg) -> MemoryDevice:  # noqa: A001 - every backend's constructor is `open`
    count = 0
    if cfg.replay:
        try:
            count = len(pcap.read_frames(cfg.replay))
        except (OSError, ValueError) as e:
            raise TunError(f"--replay {cfg.replay}: {e}") from None
    if cfg.sink:
        with builtins.open(cfg.sink, "wb") as f:
            f.write(pcap.header())
    dev = MemoryDevice(cfg.replay, cfg.replay_loops, cfg.sink, name=cfg.device,
                       mtu=cfg.mtu, vnet_hdr_len=cfg.vnet_hdr_len)
    dev.io_threads = cfg.io_threads
    if cfg.replay and not cfg.replay_hold:
        dev.frames_total = count * cfg.replay_loops
    return dev
