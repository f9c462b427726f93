"""--pcap: a copy of every mirrored frame, in the pcap format tcpdump and Wireshark read
(LINKTYPE_RAW: bare IP packets; the virtio_net_hdr, if any, is stripped).

Both actors that write frames to the device (the writer, and the reader for the small
batches it mirrors itself) append to the same file. Each appends a whole batch with one
write(2) on an O_APPEND descriptor, so records never interleave and the hot path pays one
syscall per batch, and nothing at all when capture is off. The limit is checked against a
shared count in the control segment; two actors may overshoot it by at most a batch each.

The file is new (engine/safefile.py: never through a link, 0600), and each actor reopens
that same file, checked by device, inode and owner. A capture never stops the mirror: a failed
write (a full disk) ends the capture with one warning, and mirroring goes on.
"""
from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from . import pcap, safefile
from .errors import EngineError

log = logging.getLogger("engine")


@dataclass(frozen=True)
class Capture:
    path: str
    max_frames: int
    vnet_hdr_len: int = 0
    linktype: int = pcap.LINKTYPE_RAW   # LINKTYPE_ETHERNET in TAP mode
    identity: Optional[Tuple[int, int]] = None  # (st_dev, st_ino) of the file made

    @classmethod
    def create(cls, path: str, max_frames: int, vnet_hdr_len: int = 0,
               linktype: int = pcap.LINKTYPE_RAW) -> Tuple["Capture", int]:
        """Make the file (the supervisor, once) with its global header; returns the capture
        and the file's descriptor, for fchown and then close."""
        fd = safefile.create_new(path, "--pcap")
        try:
            os.write(fd, pcap.header(linktype))
            st = os.fstat(fd)
        except OSError as e:
            os.close(fd)
            raise EngineError(f"--pcap {path}: {e.strerror}") from None
        return cls(path, max_frames, vnet_hdr_len, linktype, (st.st_dev, st.st_ino)), fd

    def open(self, count: memoryview, ended: memoryview) -> "CaptureWriter":
        """An actor's appender; `count` is the shared word counting captured frames, `ended`
        the shared word that says a write failed."""
        fd = safefile.reopen(self.path, self.identity, "--pcap")
        return CaptureWriter(self, fd, count, ended)


class CaptureWriter:
    def __init__(self, cap: Capture, fd: int, count: memoryview, ended: memoryview) -> None:
        self._cap, self._fd, self._count, self._ended = cap, fd, count, ended

    def frames(self, bufs: Sequence[memoryview], lengths: Sequence[int]) -> None:
        room = self._cap.max_frames - self._count[0]
        if room <= 0 or self._ended[0]:
            return
        o = self._cap.vnet_hdr_len
        parts = []
        for buf, n in zip(bufs[:room], lengths[:room]):
            frame = buf[o:n]
            parts.append(pcap.record(frame))
            parts.append(frame)
        data = b"".join(parts)
        try:
            if os.write(self._fd, data) != len(data):   # the disk filled up mid-record
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as e:
            # capturing ends for every actor (nothing is appended after a cut record);
            # mirroring goes on
            self._ended[0] = 1
            log.warning("--pcap %s: %s; capture stopped, the mirror goes on",
                        self._cap.path, e.strerror)
            return
        self._count[0] += min(room, len(bufs))
