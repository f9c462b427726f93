"""Flow hash -> worker index, so all packets of a flow go through one worker, in order
(DESIGN.md invariant 1).

What a "flow" is here (the choice DESIGN.md asks us to make and document):
- TCP packets that are not IP fragments: addresses, protocol and ports.
- Everything else (UDP, ICMP, any IP fragment, IPv6 with extension headers): addresses
  and protocol only. Fragments after the first carry no ports, so hashing ports would
  split a fragmented datagram across workers; leaving ports out of UDP keeps a UDP flow's
  fragmented and unfragmented datagrams on one worker too (the default of most NIC RSS
  hashes, for the same reason). TCP sends with DF and is not fragmented in practice; a
  TCP packet that does arrive fragmented is hashed on addresses and may leave out of order
  with respect to its flow's unfragmented segments, which TCP tolerates.

`worker_of` computes it for a batch: `worker_of_batch` through numpy, or for a few frames
`worker_of_frame` in plain Python (engine/packet/batch.py); the two agree on every input
(property-tested).
"""
from __future__ import annotations

import functools
import sys

import numpy as np

from .batch import SMALL_BATCH, Pool, as_array, as_list
from .headers import IPPROTO_TCP, IPV4_FRAG_MASK

GATHER = 64  # enough for an IPv4 header with options plus the ports behind it
_M1 = 0x9E3779B1  # odd 32-bit multiplier (golden ratio): spreads the key over the word
_MASK32 = 0xFFFFFFFF
_TOP_HALF = 1 if sys.byteorder == "little" else 0  # of a uint32 seen as two uint16


def _finish(k: int, workers: int) -> int:
    """Mix the 32-bit key and map it onto [0, workers): Fibonacci hashing (the top 16 bits
    of the key times an odd constant, after folding the key's top half onto its bottom,
    so variation anywhere in the key reaches them: an address's last byte sits in the
    top byte of a little-endian word), scaled by Lemire's multiply-shift. The vector form
    does the last step as one lookup in a table of 2**16 entries (`_table`)."""
    k ^= k >> 16
    return ((((k * _M1) & _MASK32) >> 16) * workers) >> 16


@functools.lru_cache(maxsize=None)
def _table(workers: int) -> np.ndarray:
    """The last step of `_finish` for every top half, for one worker count (64 KiB)."""
    return ((np.arange(1 << 16, dtype=np.uint32) * workers) >> 16).astype(np.uint8)


def worker_of(pool: Pool, slots, lens, o: int, workers: int) -> np.ndarray:
    """The worker index (uint8) of every frame in `slots` (IP header at offset `o`)."""
    if workers == 1 or len(slots) > SMALL_BATCH:
        return worker_of_batch(pool.matrix, as_array(slots), as_array(lens), o, workers)
    views = pool.views
    return np.array([worker_of_frame(views[s], ln, o, workers)
                     for s, ln in zip(as_list(slots), as_list(lens))], np.uint8)


def flow_key_frame(buf, length: int, o: int) -> int:
    """The flow key of one frame whose IP header starts at `o` (see module docstring):
    the XOR of the address words, the protocol, and for unfragmented TCP the port word."""
    n = length - o
    if n < 1:
        return 0
    ver = buf[o] >> 4
    if ver == 4 and n >= 20:
        b = bytes(buf[o:o + GATHER])
        k = int.from_bytes(b[12:16], "little") ^ int.from_bytes(b[16:20], "little") ^ b[9]
        ihl = (b[0] & 15) << 2
        frag = ((b[6] << 8) | b[7]) & IPV4_FRAG_MASK
        if b[9] == IPPROTO_TCP and not frag and 20 <= ihl and ihl + 4 <= n:
            k ^= int.from_bytes(b[ihl:ihl + 4], "little")
        return k
    if ver == 6 and n >= 40:
        b = bytes(buf[o:o + 44])
        k = b[6]
        for i in range(8, 40, 4):
            k ^= int.from_bytes(b[i:i + 4], "little")
        if b[6] == IPPROTO_TCP and n >= 44:
            k ^= int.from_bytes(b[40:44], "little")
        return k
    return buf[o]


def worker_of_frame(buf, length: int, o: int, workers: int) -> int:
    return _finish(flow_key_frame(buf, length, o), workers)


def worker_of_batch(frames: np.ndarray, slots: np.ndarray, lengths: np.ndarray, o: int,
                    workers: int) -> np.ndarray:
    """`worker_of` for `frames[slots]` through numpy. The reader runs this on every batch
    it hands on, so the common case takes about ten numpy calls (each costs a microsecond
    or more whatever the batch size)."""
    n = len(slots)
    if workers == 1 or not n:
        return np.zeros(n, np.uint8)
    if int(lengths.min()) >= o + 24:
        # IPv4 without options, the common case, from a 24-byte gather: the header and
        # the ports, one memcpy per frame (each row seen as one void item)
        h = frames[:, o:o + 24].view("V24")[:, 0][slots].view(np.uint8).reshape(n, 24)
        if (h[:, 0] == 0x45).all():
            w = h.view("<u4")                      # (n, 6) little-endian words
            proto = h[:, 9]
            k = w[:, 3] ^ w[:, 4]
            k ^= proto
            tcp = proto == IPPROTO_TCP
            if tcp.any():
                tcp &= (h[:, 6:8].view("<u2")[:, 0] & 0xFF3F) == 0   # not a fragment
                k ^= w[:, 5] if tcp.all() else np.where(tcp, w[:, 5], 0)
            return _spread(k, workers)
    h = frames[slots, o:o + GATHER]            # (n, 64) contiguous
    L = lengths.astype(np.int64) - o
    return _spread(_keys(h, h[:, :44].view("<u4"), L).astype(np.uint32), workers)


def _spread(k: np.ndarray, workers: int) -> np.ndarray:
    """`_finish` for a whole batch of uint32 keys (changed in place) in four numpy calls:
    uint32 products wrap mod 2**32, and the top halves are a view."""
    k ^= k >> 16
    k *= np.uint32(_M1)
    return _table(workers)[k.view(np.uint16)[_TOP_HALF::2]]


def _keys(h: np.ndarray, w: np.ndarray, L: np.ndarray) -> np.ndarray:
    """Flow keys for a batch with mixed versions, options or short frames."""
    n = len(h)
    ver = h[:, 0] >> 4
    is4 = (ver == 4) & (L >= 20)
    is6 = (ver == 6) & (L >= 40)
    ihl = (h[:, 0] & 15).astype(np.intp) << 2
    frag = ((h[:, 6].astype(np.int64) << 8) | h[:, 7]) & IPV4_FRAG_MASK
    tcp4 = is4 & (h[:, 9] == IPPROTO_TCP) & (frag == 0) & (ihl >= 20) & (ihl + 4 <= L)
    tcp6 = is6 & (h[:, 6] == IPPROTO_TCP) & (L >= 44)
    at = np.where(tcp6, 40, np.minimum(ihl, GATHER - 4))
    rows = np.arange(n)[:, None]
    ports = h[rows, at[:, None] + np.arange(4)].view("<u4")[:, 0]
    k4 = w[:, 3] ^ w[:, 4] ^ h[:, 9]
    k6 = np.bitwise_xor.reduce(w[:, 2:10], axis=1) ^ h[:, 6]
    k = np.where(is4, k4, np.where(is6, k6, np.where(L >= 1, h[:, 0], 0)))
    return k ^ np.where(tcp4 | tcp6, ports, 0)
