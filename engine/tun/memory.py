"""An in-memory device for tests and the kernel-free benchmark (wireguard-go's
tuntest.ChannelTUN plays this part there).

Frames to "read" come from a pcap file, replayed `loops` times; frames "written" are
appended to a sink pcap file, or only counted when there is none. Reads copy a stored
frame into the caller's buffer, where the kernel would. The object pickles as its
settings, so the reader and writer processes each open their own side.
"""
from __future__ import annotations

import builtins
import time
from typing import List, MutableSequence, Optional, Sequence

from .. import pcap
from . import TunError


class MemoryDevice:
    io_threads = False
    created = True
    lossless = True  # frames wait here until read, so the reader waits for ring room

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

    def read_batch(self, bufs: Sequence[memoryview], lengths: MutableSequence[int]) -> int:
        self._check()
        frames = self._load()
        total = len(frames) * self.loops
        n = min(len(bufs), total - self._next)
        for i in range(max(n, 0)):
            f = frames[(self._next + i) % len(frames)]
            k = min(len(f), len(bufs[i]))
            bufs[i][:k] = f[:k]
            lengths[i] = k
        self._next += max(n, 0)
        return max(n, 0)

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


def open(cfg) -> MemoryDevice:  # noqa: A001 - every backend's constructor is `open`
    if cfg.replay:
        try:
            pcap.read_frames(cfg.replay)
        except (OSError, ValueError) as e:
            raise TunError(f"--replay {cfg.replay}: {e}") from None
    if cfg.sink:
        with builtins.open(cfg.sink, "wb") as f:
            f.write(pcap.header())
    return MemoryDevice(cfg.replay, cfg.replay_loops, cfg.sink, name=cfg.device,
                        mtu=cfg.mtu, vnet_hdr_len=cfg.vnet_hdr_len)
