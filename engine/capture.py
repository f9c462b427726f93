"""--pcap: a copy of every mirrored frame, in the pcap format tcpdump and Wireshark read
(LINKTYPE_RAW: bare IP packets; the virtio_net_hdr, if any, is stripped).

Both actors that write frames to the device (the writer, and the reader for the small
batches it mirrors itself) append to the same file. Each appends a whole batch with one
write(2) on an O_APPEND descriptor, so records never interleave and the hot path pays one
syscall per batch, and nothing at all when capture is off. The limit is checked against a
shared count in the control segment; two actors may overshoot it by at most a batch each.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

from . import pcap, platform


@dataclass(frozen=True)
class Capture:
    path: str
    max_frames: int
    vnet_hdr_len: int = 0
    linktype: int = pcap.LINKTYPE_RAW   # LINKTYPE_ETHERNET in TAP mode

    def create(self) -> None:
        """Start the file (the supervisor, once): global header only."""
        with open(self.path, "wb") as f:
            f.write(pcap.header(self.linktype))

    def open(self, count: memoryview) -> "CaptureWriter":
        """An actor's appender; `count` is the shared word counting captured frames."""
        # not inherited by children (PEP 446 makes every os.open so, on every platform);
        # O_BINARY: Windows would otherwise translate the records' newline bytes
        flags = os.O_WRONLY | os.O_APPEND | platform.O_BINARY
        return CaptureWriter(self, os.open(self.path, flags), count)


class CaptureWriter:
    def __init__(self, cap: Capture, fd: int, count: memoryview) -> None:
        self._cap, self._fd, self._count = cap, fd, count

    def frames(self, bufs: Sequence[memoryview], lengths: Sequence[int]) -> None:
        room = self._cap.max_frames - self._count[0]
        if room <= 0:
            return
        o = self._cap.vnet_hdr_len
        parts = []
        for buf, n in zip(bufs[:room], lengths[:room]):
            frame = buf[o:n]
            parts.append(pcap.record(frame))
            parts.append(frame)
        os.write(self._fd, b"".join(parts))
        self._count[0] += min(room, len(bufs))
