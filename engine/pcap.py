"""Classic pcap files (the tcpdump/Wireshark format): enough to read and write frames.

Layout (pcap-savefile(5)): a 24-byte global header, then per frame a 16-byte record
header (seconds, microseconds, captured length, original length) and the bytes.
"""
from __future__ import annotations

import struct
import time
from typing import Iterator, List

MAGIC = 0xA1B2C3D4
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101  # bare IPv4/IPv6 packets: what a TUN device carries
_GLOBAL = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")


def header(linktype: int = LINKTYPE_RAW, snaplen: int = 65535) -> bytes:
    return _GLOBAL.pack(MAGIC, 2, 4, 0, 0, snaplen, linktype)


def record(frame, ts: float = None) -> bytes:
    ts = time.time() if ts is None else ts
    sec = int(ts)
    n = len(frame)
    return _RECORD.pack(sec, int((ts - sec) * 1e6), n, n)


def read_frames(path: str) -> List[bytes]:
    return list(iter_frames(path))


def iter_frames(path: str) -> Iterator[bytes]:
    with open(path, "rb") as f:
        head = f.read(_GLOBAL.size)
        if len(head) < _GLOBAL.size:
            raise ValueError(f"{path}: not a pcap file (too short)")
        magic = struct.unpack("<I", head[:4])[0]
        if magic == MAGIC:
            rec = _RECORD
        elif magic == 0xD4C3B2A1:
            rec = struct.Struct(">IIII")
        else:
            raise ValueError(f"{path}: not a pcap file (magic {magic:#x})")
        while True:
            h = f.read(rec.size)
            if len(h) < rec.size:
                return
            _s, _us, caplen, _orig = rec.unpack(h)
            data = f.read(caplen)
            if len(data) < caplen:
                return
            yield data


def write_frames(path: str, frames, linktype: int = LINKTYPE_RAW) -> None:
    with open(path, "wb") as f:
        f.write(header(linktype))
        for fr in frames:
            f.write(record(fr))
            f.write(bytes(fr))
