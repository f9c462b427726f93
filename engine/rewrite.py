"""The mirror rule, applied to a whole batch at once through numpy (VPP's vector idea).

A batch is a set of pool slots (`slots`) with their frame lengths. `mirror_batch` gathers
the first bytes of every frame into one small matrix, validates every header with array
operations, and swaps source and destination in place in the pool for the frames that
pass. It returns one reason code per frame: 0 = forward, otherwise 1 + an index into
`stats.DROP_REASONS`. No Python loop runs over packets or bytes.

Validation (DESIGN.md §2, invariants 3 and 4), in order of precedence:
  not_ip        version nibble not 4 or 6
  malformed     IPv4: frame < 20, IHL < 5, header past the frame, total length != frame,
                an option whose length is under 2 or runs past the header (RFC 791)
                IPv6: frame < 40, payload length + 40 != frame (jumbograms included)
                TAP mode: a shorter IP length is accepted in a 60-byte Ethernet frame
                (minimum-frame padding, DESIGN.md §2.3; engine/l2.py `padded`)
  bad_checksum  IPv4 header checksum does not verify (RFC 1071)
  bad_vnet_hdr  offload mode: GSO type unknown or for the other IP version, or a
                checksum-offload span (csum_start + csum_offset) past the packet
  not_mirrored  source is not the device's address, or destination is outside the
                mirror prefix, or is its network, broadcast, or the device's own address,
                or lies in a range never reflected to whatever the prefix (multicast,
                reserved, loopback, link-local, unspecified: config.SPECIAL_NETWORKS;
                only a wide prefix can contain them)

The swap needs no checksum work: one's-complement sums commute (RFC 1071 §2A), so the
IPv4 header checksum, the TCP/UDP/ICMPv6 pseudo-header sums and a virtio NEEDS_CSUM
partial sum all stay valid (LINUX.md §1.5).
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .config import SPECIAL_NETWORKS
from .l2 import swap_macs, swap_macs_frame
from .stats import DROP_REASONS

# RFC 791 (IPv4) and RFC 8200 (IPv6) header offsets.
IPV4_TOTAL_LENGTH = 2
IPV4_PROTOCOL = 9
IPV4_SRC, IPV4_DST = 12, 16
IPV4_MIN_HEADER, IPV4_MAX_HEADER = 20, 60
IPV6_PAYLOAD_LENGTH = 4
IPV6_NEXT_HEADER = 6
IPV6_SRC, IPV6_DST = 8, 24
IPV6_HEADER = 40
# linux/virtio_net.h: flags(u8) gso_type(u8) hdr_len gso_size csum_start csum_offset (u16 LE)
VNET_F_NEEDS_CSUM = 1
VNET_GSO_NONE, VNET_GSO_TCPV4, VNET_GSO_TCPV6, VNET_GSO_UDP_L4 = 0, 1, 4, 5
VNET_GSO_ECN = 0x80
VNET_CSUM_START, VNET_CSUM_OFFSET = 6, 8

GATHER = IPV4_MAX_HEADER  # IP header bytes looked at per frame
ETH_MIN_PAYLOAD = 46      # 60-byte minimum Ethernet frame - 14-byte header (IEEE 802.3)

R = {name: i + 1 for i, name in enumerate(DROP_REASONS)}
FORWARD = 0

_WORD_INDEX = np.arange(GATHER // 2)
_ONES5 = np.ones(5)
_SWAP4 = np.r_[IPV4_DST:IPV4_DST + 4, IPV4_SRC:IPV4_SRC + 4]
_SWAP6 = np.r_[IPV6_DST:IPV6_DST + 16, IPV6_SRC:IPV6_SRC + 16]
_GSO_FOR_VERSION = {4: (VNET_GSO_NONE, VNET_GSO_TCPV4, VNET_GSO_UDP_L4),
                    6: (VNET_GSO_NONE, VNET_GSO_TCPV6, VNET_GSO_UDP_L4)}


@dataclass(frozen=True)
class Mirror:
    """The mirror rule for one device: its IPv4 and IPv6 addresses define the prefixes.
    Frames are `vnet_hdr_len` bytes of virtio_net_hdr, `l2_hdr_len` bytes of link header
    (14, Ethernet, in TAP mode; engine/l2.py classifies and swaps MACs), the IP packet.

    IPv4 address constants are kept as little-endian integers of the wire bytes, both as
    ints (scalar path) and as numpy words (vector path), so either compares raw header
    words and never byte-swaps an address."""

    address: Optional[ipaddress.IPv4Interface]
    address6: Optional[ipaddress.IPv6Interface] = None
    vnet_hdr_len: int = 0
    l2_hdr_len: int = 0
    _v4: Optional[tuple] = field(init=False, repr=False, compare=False)
    _v6: Optional[tuple] = field(init=False, repr=False, compare=False)
    _v4i: Optional[tuple] = field(init=False, repr=False, compare=False)
    _v4w: Optional[tuple] = field(init=False, repr=False, compare=False)
    _hdr4: struct.Struct = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        v4 = v6 = None
        excl4 = excl6 = ()
        if self.address is not None:
            net = self.address.network
            v4 = (self.address.ip.packed, net.netmask.packed, net.network_address.packed,
                  net.broadcast_address.packed)
            excl4 = tuple((_le32(s.netmask.packed), _le32(s.network_address.packed))
                          for s in _special_within(net))
        if self.address6 is not None:
            net6 = self.address6.network
            excl6 = tuple((s.netmask.packed, s.network_address.packed)
                          for s in _special_within(net6))
            v6 = (self.address6.ip.packed, net6.netmask.packed, net6.network_address.packed,
                  excl6)
        object.__setattr__(self, "_v4", v4 and v4 + (excl4,))
        v4i = v4w = None
        if v4 is not None:
            a, m, n, b = (_le32(x) for x in v4)
            # mirror_frame: (address, mask, network, {addresses never reflected to},
            # ((mask, network) of each range never reflected to; empty but for wide prefixes))
            v4i = (a, m, n, frozenset((n, b, a)), excl4)
            # _forward_all4: words 0, 3, 4 of the header under a mask (none when ranges
            # must be excluded: the general path does that)
            v4w = None if excl4 else (
                np.array([0xFF, 0, 0, 0xFFFFFFFF, m], np.uint32),
                np.array([0x45, 0, 0, a, n], np.uint32),
                np.array([n, b, a], np.uint32))      # destinations never reflected to
        object.__setattr__(self, "_v4i", v4i)
        object.__setattr__(self, "_v4w", v4w)
        object.__setattr__(self, "_v6", v6)
        # mirror_frame's common frame in one struct call: the virtio_net_hdr's fields
        # (offload mode), then the five words of an IPv4 header without options
        o = self.vnet_hdr_len + self.l2_hdr_len
        object.__setattr__(self, "_hdr4", struct.Struct(
            "<" + ("BB4xHH" if self.vnet_hdr_len else "") + f"{o - self.vnet_hdr_len}x5I"))

    def __reduce__(self):
        # pickled into every child process: rebuilt there from the rule's own fields
        # (a struct.Struct does not pickle)
        return Mirror, (self.address, self.address6, self.vnet_hdr_len, self.l2_hdr_len)

    def mirrors6(self, src: bytes, dst: bytes) -> bool:
        if self._v6 is None:
            return False
        addr, mask, net, excl = self._v6
        return (src == addr and _and(dst, mask) == net and dst not in (net, addr)
                and not any(_and(dst, m) == n for m, n in excl))


def _special_within(net) -> list:
    """The ranges never reflected to that overlap the mirror prefix `net`."""
    return [s for s in SPECIAL_NETWORKS if s.version == net.version and s.overlaps(net)]


def _and(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") & int.from_bytes(b, "big")).to_bytes(len(a), "big")


def _le32(b: bytes) -> int:
    return int.from_bytes(b, "little")


# ---------------------------------------------------------------- vector path
def mirror_batch(rule: Mirror, frames: np.ndarray, slots: np.ndarray,
                 lengths: np.ndarray) -> np.ndarray:
    """Validate and mirror `frames[slots]` in place; returns one reason code per frame.
    In TAP mode (frames the reader classified as IP, engine/l2.py) the forwarded frames'
    MACs are swapped too: the reply goes to the host's MAC from the peer's fake MAC."""
    reasons = _mirror_ip(rule, frames, slots, lengths)
    if rule.l2_hdr_len:
        swap_macs(frames, slots[reasons == FORWARD] if reasons.any() else slots,
                  rule.vnet_hdr_len)
    return reasons


def _mirror_ip(rule: Mirror, frames: np.ndarray, slots: np.ndarray,
               lengths: np.ndarray) -> np.ndarray:
    """mirror_batch without the link layer.

    Every numpy call costs a microsecond or two whatever the batch size, so the common
    case (every frame valid IPv4 without options, or every frame IPv6) takes a short
    path, and exact per-frame reasons are worked out only for batches with drops."""
    vo = rule.vnet_hdr_len
    o = vo + rule.l2_hdr_len                  # the IP header
    if len(slots) and frames[slots[0], o] == 0x45 and \
            _forward_all4(rule, frames, slots, lengths, o):
        return np.zeros(len(slots), np.uint8)
    ip = frames[slots, o:o + GATHER]          # (n, 60) contiguous copy: the one gather
    L = lengths.astype(np.int64)
    if o:
        L -= o
    first = ip[:, 0]
    if (first == 0x45).all():                 # IPv4, no options
        ok = _ok4(rule, ip, L, 20)
        is4, is6 = True, False
    elif ((first >> 4) == 6).all():
        ok = _ok6(rule, ip, L)
        is4, is6 = False, True
    else:
        ver = first >> 4
        is4, is6 = ver == 4, ver == 6
        ok = (is4 & _ok4(rule, ip, L, None)) | (is6 & _ok6(rule, ip, L))
    if vo:  # csum_start counts from the end of the vnet header: link header included
        ok &= _vnet_ok(frames[slots, :vo], L + rule.l2_hdr_len, ip[:, 0] >> 4)
    if ok.all():
        if is4 is True or is6 is True:
            frames[slots, o + (IPV4_SRC if is4 is True else IPV6_SRC):
                   o + (IPV4_DST + 4 if is4 is True else IPV6_DST + 16)] = \
                ip[:, _SWAP4 if is4 is True else _SWAP6]
            return np.zeros(len(slots), np.uint8)
    ver = ip[:, 0] >> 4
    is4, is6 = ver == 4, ver == 6
    _swap(frames, slots, ip, ok & is4, _SWAP4, o + IPV4_SRC, o + IPV4_DST + 4)
    _swap(frames, slots, ip, ok & is6, _SWAP6, o + IPV6_SRC, o + IPV6_DST + 16)
    if ok.all():
        return np.zeros(len(slots), np.uint8)
    return _reasons(rule, frames, slots, ip, L, ok, is4, is6, vo)


def _forward_all4(rule: Mirror, frames: np.ndarray, slots: np.ndarray,
                  lengths: np.ndarray, o: int) -> bool:
    """The common batch in a dozen numpy calls (the general path takes about thirty, and
    on the test VM each costs 1-4 us whatever the batch size): every frame IPv4 without
    options, well formed, verifying and mirrored. Then it swaps them all and returns True;
    otherwise it changes nothing and returns False, and the general path judges each
    frame. Same verdicts as `_ok4` (property-tested against `mirror_frame`)."""
    if rule._v4w is None:
        return False
    mask, expect, never = rule._v4w
    n = len(slots)
    h = frames[:, o:o + 20].view("V20")[:, 0][slots].view(np.uint8).reshape(n, 20)
    w = h.view("<u4")                          # (n, 5) header words, little-endian
    # version 4 and IHL 5, source the device's address, destination in the prefix
    if ((w & mask) != expect).any():
        return False
    total = h[:, 2:4].view(">u2")[:, 0]
    L = lengths - o if o else lengths
    if (total != L).any() or (total < IPV4_MIN_HEADER).any():
        return False
    if (w[:, 4:5] == never).any():             # the network, broadcast or own address
        return False
    # RFC 1071 over 32-bit words: 2**16 == 1 (mod 0xFFFF), so the sum of the five words
    # is congruent to the sum of the ten 16-bit words (see _checksum_ok); float64 holds
    # it exactly, and the product with ones runs in BLAS. Never 0: the first byte is 0x45.
    if (w.astype(np.float64) @ _ONES5 % 0xFFFF).any():
        return False
    vo = rule.vnet_hdr_len
    if vo and not _vnet_ok(frames[slots, :vo], L + rule.l2_hdr_len, 4).all():
        return False
    pair = h[:, IPV4_SRC:IPV4_DST + 4].view("<u8")[:, 0]   # src | dst << 32
    frames[:, o + IPV4_SRC:o + IPV4_DST + 4].view("<u8")[:, 0][slots] = \
        (pair << np.uint64(32)) | (pair >> np.uint64(32))
    return True


def _ok4(rule: Mirror, ip: np.ndarray, L: np.ndarray, ihl) -> np.ndarray:
    """IPv4 frames that are well formed, verify, and fall under the mirror rule.
    `ihl` is 20 when the caller knows no frame has options (the fast path)."""
    if rule._v4 is None:
        return np.zeros(len(ip), bool)
    if ihl is None:
        ihl = (ip[:, 0] & 15).astype(np.int64) << 2
        ok = (ihl >= IPV4_MIN_HEADER) & (ihl <= L)
    else:
        ok = L >= IPV4_MIN_HEADER
    ok &= _length_ok(rule, (ip[:, 2].astype(np.int64) << 8) | ip[:, 3], L, ihl)
    if not isinstance(ihl, int):
        ok &= ~_options_bad(ip, ihl, ok)
    ok &= _checksum_ok(ip, ihl)
    addr, mask, net, bcast = (_le32(x) for x in rule._v4[:4])
    a = ip[:, IPV4_SRC:IPV4_DST + 4].view("<u4")    # src, dst as little-endian words
    src, dst = a[:, 0], a[:, 1]
    ok &= src == addr
    ok &= (dst & mask) == net
    ok &= (dst != net) & (dst != bcast) & (dst != addr)
    for m, n in rule._v4[4]:
        ok &= (dst & np.uint32(m)) != n
    return ok


def _length_ok(rule: Mirror, claimed: np.ndarray, L: np.ndarray, least) -> np.ndarray:
    """The IP length field matches the bytes present; in TAP mode it may also be shorter
    (but at least `least`, the header) when the frame is a padded 60-byte minimum."""
    ok = claimed == L
    if rule.l2_hdr_len:
        ok |= (L == ETH_MIN_PAYLOAD) & (claimed < L) & (claimed >= least)
    return ok


def _checksum_ok(ip: np.ndarray, ihl) -> np.ndarray:
    """RFC 1071: the one's-complement sum of the header is 0xFFFF. The sum is byte-order
    independent, so native words do; and a 32-bit sum folds to 0xFFFF exactly when it is a
    non-zero multiple of 0xFFFF."""
    words = ip.view("<u2")
    if isinstance(ihl, int):
        s = words[:, :ihl // 2].sum(1, dtype=np.uint32)
    else:
        s = (words * (_WORD_INDEX < (ihl[:, None] >> 1))).sum(1, dtype=np.uint32)
    return (s % 0xFFFF == 0) & (s != 0)


def _ok6(rule: Mirror, ip: np.ndarray, L: np.ndarray) -> np.ndarray:
    if rule._v6 is None:
        return np.zeros(len(ip), bool)
    addr, mask, net = (np.frombuffer(x, np.uint8) for x in rule._v6[:3])
    ok = (L >= IPV6_HEADER) & _length_ok(
        rule, ((ip[:, 4].astype(np.int64) << 8) | ip[:, 5]) + IPV6_HEADER, L, IPV6_HEADER)
    src = ip[:, IPV6_SRC:IPV6_SRC + 16]
    dst = ip[:, IPV6_DST:IPV6_DST + 16]
    ok &= (src == addr).all(1)
    ok &= ((dst & mask) == net).all(1)
    ok &= ~(dst == addr).all(1) & ~(dst == net).all(1)
    for m, n in rule._v6[3]:
        ok &= ~((dst & np.frombuffer(m, np.uint8)) == np.frombuffer(n, np.uint8)).all(1)
    return ok


def _options_bad(ip: np.ndarray, ihl: np.ndarray, among: np.ndarray) -> np.ndarray:
    """IPv4 frames (of those in `among`, whose IHL fits the frame) with options that do not
    parse. Frames with options are rare and short, so each is walked in Python."""
    bad = np.zeros(len(ip), bool)
    for k in np.flatnonzero(among & (ihl > IPV4_MIN_HEADER)).tolist():
        bad[k] = not _options_ok(ip[k, IPV4_MIN_HEADER:ihl[k]].tobytes())
    return bad


def _options_ok(opts: bytes) -> bool:
    """RFC 791 §3.1: each option is one byte (0 end of list, 1 no-op) or a type, a length of
    at least 2 that covers both, and data, all within the header; the end ends the list."""
    i, n = 0, len(opts)
    while i < n:
        kind = opts[i]
        if kind == 0:
            return True
        if kind == 1:
            i += 1
            continue
        if i + 1 >= n or opts[i + 1] < 2 or i + opts[i + 1] > n:
            return False
        i += opts[i + 1]
    return True


def _vnet_ok(vh: np.ndarray, L: np.ndarray, ver) -> np.ndarray:
    """virtio_net_hdr sanity: a GSO type we enabled and that matches the IP version (`ver`:
    per frame, or one for all), and a checksum-offload span inside the packet. The kernel
    validates again on write."""
    gso = vh[:, 1] & np.uint8(0x7F)                 # without VNET_GSO_ECN
    needs = (vh[:, 0] & VNET_F_NEEDS_CSUM) != 0
    if not gso.any() and not needs.any():
        return np.ones(len(vh), bool)
    ok = ((gso == VNET_GSO_NONE) | (gso == VNET_GSO_UDP_L4)
          | ((gso == VNET_GSO_TCPV4) & (ver == 4)) | ((gso == VNET_GSO_TCPV6) & (ver == 6)))
    le = vh[:, VNET_CSUM_START:VNET_CSUM_OFFSET + 2].view("<u2").astype(np.int64)
    return ok & ~(needs & (le[:, 0] + le[:, 1] + 2 > L))


def _reasons(rule, frames, slots, ip, L, ok, is4, is6, vo) -> np.ndarray:
    """Slow path, only for batches with drops: the exact reason for each frame, in the
    precedence order of the module docstring."""
    reason = np.full(len(L), R["not_mirrored"], np.uint8)
    reason[ok] = FORWARD
    if vo:
        reason[~_vnet_ok(frames[slots, :vo], L + rule.l2_hdr_len, ip[:, 0] >> 4)] = R["bad_vnet_hdr"]
    ihl = (ip[:, 0] & 15).astype(np.int64) << 2
    reason[is4 & ~_checksum_ok(ip, ihl)] = R["bad_checksum"]
    total = (ip[:, 2].astype(np.int64) << 8) | ip[:, 3]
    bad4 = ((L < IPV4_MIN_HEADER) | (ihl < IPV4_MIN_HEADER) | (ihl > L)
            | ~_length_ok(rule, total, L, ihl))
    bad4 |= _options_bad(ip, ihl, is4 & ~bad4)
    payload6 = (ip[:, 4].astype(np.int64) << 8) | ip[:, 5]
    bad6 = (L < IPV6_HEADER) | ~_length_ok(rule, payload6 + IPV6_HEADER, L, IPV6_HEADER)
    reason[(is4 & bad4) | (is6 & bad6)] = R["malformed"]
    reason[~(is4 | is6)] = R["not_ip"]
    reason[L < 1] = R["malformed"]   # nothing after the vnet header: judge no stale bytes
    return reason


def _swap(frames, slots, ip, which, columns, start, stop) -> None:
    idx = np.flatnonzero(which)
    if len(idx):
        frames[slots[idx], start:stop] = ip[idx[:, None], columns]


# ---------------------------------------------------------------- scalar path
_HDR4 = struct.Struct("!BxH")            # version/IHL, total length
_PAYLOAD6 = struct.Struct("!4xH")
_SUM = [struct.Struct(f"={n}H") for n in range(31)]  # native words: see _checksum_ok
_ADDR4 = struct.Struct("<II")            # src, dst as little-endian words (see Mirror)
_VNET = struct.Struct("<BB4xHH")        # flags, gso_type, csum_start, csum_offset


def mirror_frame(rule: Mirror, buf, length: int) -> int:
    """The same rule for one frame in `buf` (a writable buffer), in plain Python: cheaper
    than the vector path for batches of a few frames, where numpy's per-call cost
    dominates (a ping, a few offload super-packets). Must agree with `mirror_batch` on
    every input (property-tested). Kept flat, one function: it is the inline step's hot
    path, run cold right after the kernel copied the frame in, and every line costs. The
    common frame (IPv4 without options) takes one struct call in and one out."""
    vo = rule.vnet_hdr_len
    o = vo + rule.l2_hdr_len
    n = length - o
    if n < 1:
        return R["malformed"]
    if buf[o] == 0x45 and n >= IPV4_MIN_HEADER:
        if vo:
            flags, gso, start, off, w0, w1, w2, src, dst = rule._hdr4.unpack_from(buf)
        else:
            w0, w1, w2, src, dst = rule._hdr4.unpack_from(buf)
        total = (w0 >> 24) | (w0 >> 8 & 0xFF00)   # big-endian bytes 2-3 of a LE word
        if total != n and not _length_ok_one(rule, total, n, IPV4_MIN_HEADER):
            return R["malformed"]
        # RFC 1071 over 32-bit words (2**16 == 1 mod 0xFFFF, as in _forward_all4): the
        # sum is > 0 (the first byte is 0x45), so it verifies exactly when it is a
        # multiple of 0xFFFF
        if (w0 + w1 + w2 + src + dst) % 0xFFFF:
            return R["bad_checksum"]
        ver = 4
    else:
        ver = buf[o] >> 4
        if ver == 4:
            if n < IPV4_MIN_HEADER:
                return R["malformed"]
            first, total = _HDR4.unpack_from(buf, o)
            ihl = (first & 15) << 2
            if ihl < IPV4_MIN_HEADER or ihl > n or (total != n and not _length_ok_one(
                    rule, total, n, ihl)) or (ihl > IPV4_MIN_HEADER and not _options_ok(
                    bytes(buf[o + IPV4_MIN_HEADER:o + ihl]))):
                return R["malformed"]
            if sum(_SUM[ihl >> 1].unpack_from(buf, o)) % 0xFFFF:   # as above
                return R["bad_checksum"]
            src, dst = _ADDR4.unpack_from(buf, o + IPV4_SRC)
        elif ver == 6:
            if n < IPV6_HEADER or not _length_ok_one(rule, _PAYLOAD6.unpack_from(buf, o)[0]
                                                      + IPV6_HEADER, n, IPV6_HEADER):
                return R["malformed"]
        else:
            return R["not_ip"]
        if vo:
            flags, gso, start, off = _VNET.unpack_from(buf, 0)
    if vo and ((gso & 0x7F) not in _GSO_FOR_VERSION[ver] or (
            flags & VNET_F_NEEDS_CSUM and start + off + 2 > length - vo)):
        return R["bad_vnet_hdr"]
    if ver == 4:
        v4 = rule._v4i
        if v4 is None or src != v4[0] or dst & v4[1] != v4[2] or dst in v4[3] or (
                v4[4] and any(dst & m == n for m, n in v4[4])):
            return R["not_mirrored"]
        _ADDR4.pack_into(buf, o + IPV4_SRC, dst, src)
    else:
        src6 = bytes(buf[o + IPV6_SRC:o + IPV6_DST])
        dst6 = bytes(buf[o + IPV6_DST:o + IPV6_DST + 16])
        if not rule.mirrors6(src6, dst6):
            return R["not_mirrored"]
        buf[o + IPV6_SRC:o + IPV6_DST + 16] = dst6 + src6
    if o != vo:
        swap_macs_frame(buf, vo)
    return FORWARD


def reflect(buf, o: int) -> None:
    """Swap source and destination of the IPv4 or IPv6 header at buf[o:] in place, with no
    check at all: for a private copy of a header the rule has already seen (the lone
    reader's rehearsal, engine/reader.py). Anything else is left as it is."""
    ver = buf[o] >> 4
    if ver == 4:
        src, dst = _ADDR4.unpack_from(buf, o + IPV4_SRC)
        _ADDR4.pack_into(buf, o + IPV4_SRC, dst, src)
    elif ver == 6:
        src6 = bytes(buf[o + IPV6_SRC:o + IPV6_DST])
        buf[o + IPV6_SRC:o + IPV6_DST] = buf[o + IPV6_DST:o + IPV6_DST + 16]
        buf[o + IPV6_DST:o + IPV6_DST + 16] = src6


def _length_ok_one(rule: Mirror, claimed: int, n: int, least: int) -> bool:
    return claimed == n or (rule.l2_hdr_len != 0 and n == ETH_MIN_PAYLOAD and least <= claimed < n)
