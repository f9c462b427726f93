"""The mirror rule: validate each frame, then swap its source and destination in place.

`mirror` takes a batch of pool slots with their frame lengths and returns None when every
frame is forwarded, or one reason code per frame: 0 = forward, otherwise 1 + an index
into `stats.DROP_REASONS`. For a batch it runs `mirror_batch`, which gathers the first
bytes of every frame into one small matrix and judges them with array operations (VPP's
vector idea: no Python loop over packets or bytes); for a few frames, `mirror_frame`, the
same rule in plain Python (engine/packet/batch.py). The two agree on every input
(property-tested).

Validation (DESIGN.md §2, invariants 3 and 4), in order of precedence:
  not_ip        version nibble not 4 or 6
  malformed     IPv4: frame < 20, IHL < 5, header past the frame, total length != frame,
                an option whose length is under 2 or runs past the header (RFC 791)
                IPv6: frame < 40, payload length + 40 != frame (jumbograms included)
                TAP mode: a shorter IP length is accepted in a 60-byte Ethernet frame
                (minimum-frame padding: headers.length_fits)
  bad_checksum  IPv4 header checksum does not verify (RFC 1071)
  bad_vnet_hdr  offload mode: GSO type unknown or for the other IP version, or a
                checksum-offload span (csum_start + csum_offset) past the packet
  not_mirrored  source is not the device's address, or destination is outside the
                mirror prefix, or is its network, broadcast, or the device's own address,
                or lies in a range never reflected to whatever the prefix (multicast,
                reserved, loopback, link-local, unspecified: headers.SPECIAL_NETWORKS;
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

from ..stats import DROP_REASONS
from .batch import SMALL_BATCH, Pool, as_array, as_list
from .ethernet import swap_macs, swap_macs_frame
from .headers import (IPV4_DST, IPV4_MAX_HEADER, IPV4_MIN_HEADER, IPV4_SRC, IPV6_DST,
                      IPV6_HEADER, IPV6_SRC, VNET_CSUM_OFFSET, VNET_CSUM_START,
                      VNET_F_NEEDS_CSUM, VNET_GSO_NONE, VNET_GSO_TCPV4, VNET_GSO_TCPV6,
                      VNET_GSO_UDP_L4, SPECIAL_NETWORKS, length_fits)

GATHER = IPV4_MAX_HEADER  # IP header bytes looked at per frame

R = {name: i + 1 for i, name in enumerate(DROP_REASONS)}
FORWARD = 0
R_NOT_IP, R_MALFORMED, R_BAD_CHECKSUM = R["not_ip"], R["malformed"], R["bad_checksum"]
R_BAD_VNET_HDR, R_NOT_MIRRORED = R["bad_vnet_hdr"], R["not_mirrored"]

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
    (14, Ethernet, in TAP mode: engine/packet/ethernet.py), the IP packet.

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

    @property
    def tap(self) -> bool:
        """Frames carry an Ethernet header (TAP mode)."""
        return self.l2_hdr_len != 0

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


def mirror(rule: Mirror, pool: Pool, slots, lens) -> Optional[np.ndarray]:
    """Validate and mirror the frames in `slots` (lists or uint32 arrays) in place: None
    when every one is forwarded, else one reason code per frame."""
    if len(slots) == 1:   # a ping, an offload super-packet: no lists to build
        r = mirror_frame(rule, pool.views[int(slots[0])], int(lens[0]))
        return np.array((r,), np.uint8) if r else None
    if len(slots) <= SMALL_BATCH:
        views = pool.views
        reasons = [mirror_frame(rule, views[s], ln)
                   for s, ln in zip(as_list(slots), as_list(lens))]
        return np.array(reasons, np.uint8) if any(reasons) else None
    reasons = mirror_batch(rule, pool.matrix, as_array(slots), as_array(lens))
    return reasons if reasons.any() else None


# ---------------------------------------------------------------- vector path
def mirror_batch(rule: Mirror, frames: np.ndarray, slots: np.ndarray,
                 lengths: np.ndarray) -> np.ndarray:
    """Validate and mirror `frames[slots]` in place; returns one reason code per frame.
    In TAP mode (frames the reader classified as IP, engine/packet/ethernet.py) the forwarded frames'
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
    ok &= length_fits((ip[:, 2].astype(np.int64) << 8) | ip[:, 3], L, ihl, rule.tap)
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
    payload = (ip[:, 4].astype(np.int64) << 8) | ip[:, 5]
    ok = (L >= IPV6_HEADER) & length_fits(payload + IPV6_HEADER, L, IPV6_HEADER, rule.tap)
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
    reason = np.full(len(L), R_NOT_MIRRORED, np.uint8)
    reason[ok] = FORWARD
    if vo:
        reason[~_vnet_ok(frames[slots, :vo], L + rule.l2_hdr_len, ip[:, 0] >> 4)] = R_BAD_VNET_HDR
    ihl = (ip[:, 0] & 15).astype(np.int64) << 2
    reason[is4 & ~_checksum_ok(ip, ihl)] = R_BAD_CHECKSUM
    total = (ip[:, 2].astype(np.int64) << 8) | ip[:, 3]
    bad4 = ((L < IPV4_MIN_HEADER) | (ihl < IPV4_MIN_HEADER) | (ihl > L)
            | ~length_fits(total, L, ihl, rule.tap))
    bad4 |= _options_bad(ip, ihl, is4 & ~bad4)
    payload6 = (ip[:, 4].astype(np.int64) << 8) | ip[:, 5]
    bad6 = (L < IPV6_HEADER) | ~length_fits(payload6 + IPV6_HEADER, L, IPV6_HEADER, rule.tap)
    reason[(is4 & bad4) | (is6 & bad6)] = R_MALFORMED
    reason[~(is4 | is6)] = R_NOT_IP
    reason[L < 1] = R_MALFORMED   # nothing after the vnet header: judge no stale bytes
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
    """The rule for one frame in `buf` (a writable buffer), in plain Python; its reason
    code. The common frame (IPv4 without options) takes one struct call in and one out,
    and no other function but the swap: it is the reader's hot path, run cold right after
    the kernel copied the frame in."""
    vo = rule.vnet_hdr_len
    o = vo + rule.l2_hdr_len
    n = length - o
    if n < IPV4_MIN_HEADER or buf[o] != 0x45:
        return _mirror_other(rule, buf, length, o, n)
    if vo:
        flags, gso, start, off, w0, w1, w2, src, dst = rule._hdr4.unpack_from(buf)
    else:
        w0, w1, w2, src, dst = rule._hdr4.unpack_from(buf)
    total = (w0 >> 24) | (w0 >> 8 & 0xFF00)   # big-endian bytes 2-3 of a LE word
    if total != n and not length_fits(total, n, IPV4_MIN_HEADER, o != vo):
        return R_MALFORMED
    # RFC 1071 over 32-bit words (2**16 == 1 mod 0xFFFF, as in _forward_all4): the sum
    # is > 0 (the first byte is 0x45), so it verifies exactly when it is a multiple of
    # 0xFFFF
    if (w0 + w1 + w2 + src + dst) % 0xFFFF:
        return R_BAD_CHECKSUM
    if vo and _vnet_bad(flags, gso, start, off, 4, length - vo):
        return R_BAD_VNET_HDR
    return _mirror4(rule, buf, o, vo, src, dst)


def _mirror_other(rule: Mirror, buf, length: int, o: int, n: int) -> int:
    """mirror_frame for everything but IPv4 without options: IPv4 with options, IPv6,
    and what is not IP at all."""
    if n < 1:
        return R_MALFORMED
    ver, tap = buf[o] >> 4, rule.tap
    if ver == 4:
        if n < IPV4_MIN_HEADER:
            return R_MALFORMED
        first, total = _HDR4.unpack_from(buf, o)
        ihl = (first & 15) << 2
        if ihl < IPV4_MIN_HEADER or ihl > n or not length_fits(total, n, ihl, tap) or (
                ihl > IPV4_MIN_HEADER
                and not _options_ok(bytes(buf[o + IPV4_MIN_HEADER:o + ihl]))):
            return R_MALFORMED
        if sum(_SUM[ihl >> 1].unpack_from(buf, o)) % 0xFFFF:   # as in mirror_frame
            return R_BAD_CHECKSUM
    elif ver == 6:
        if n < IPV6_HEADER or not length_fits(_PAYLOAD6.unpack_from(buf, o)[0] + IPV6_HEADER,
                                              n, IPV6_HEADER, tap):
            return R_MALFORMED
    else:
        return R_NOT_IP
    vo = rule.vnet_hdr_len
    if vo and _vnet_bad(*_VNET.unpack_from(buf, 0), ver, length - vo):
        return R_BAD_VNET_HDR
    if ver == 4:
        return _mirror4(rule, buf, o, vo, *_ADDR4.unpack_from(buf, o + IPV4_SRC))
    src6, dst6 = bytes(buf[o + IPV6_SRC:o + IPV6_DST]), bytes(buf[o + IPV6_DST:o + IPV6_HEADER])
    if not rule.mirrors6(src6, dst6):
        return R_NOT_MIRRORED
    buf[o + IPV6_SRC:o + IPV6_HEADER] = dst6 + src6
    if o != vo:
        swap_macs_frame(buf, vo)
    return FORWARD


def _vnet_bad(flags: int, gso: int, start: int, off: int, ver: int, size: int) -> bool:
    """`_vnet_ok`'s verdict for one frame of `size` bytes after the vnet header."""
    return (gso & 0x7F) not in _GSO_FOR_VERSION[ver] or bool(
        flags & VNET_F_NEEDS_CSUM and start + off + 2 > size)


def _mirror4(rule: Mirror, buf, o: int, vo: int, src: int, dst: int) -> int:
    """The IPv4 address rule for a frame that passed every check, and its swap."""
    v4 = rule._v4i
    if v4 is None or src != v4[0] or dst & v4[1] != v4[2] or dst in v4[3] or (
            v4[4] and any(dst & m == n for m, n in v4[4])):
        return R_NOT_MIRRORED
    _ADDR4.pack_into(buf, o + IPV4_SRC, dst, src)
    if o != vo:
        swap_macs_frame(buf, vo)
    return FORWARD


def reflect(buf, o: int) -> None:
    """Swap source and destination of the IPv4 or IPv6 header at buf[o:] in place, with no
    check at all: for a private copy of a header the rule has already seen (the reader's
    rehearsal, engine/reader.py). Anything else is left as it is."""
    ver = buf[o] >> 4
    if ver == 4:
        src, dst = _ADDR4.unpack_from(buf, o + IPV4_SRC)
        _ADDR4.pack_into(buf, o + IPV4_SRC, dst, src)
    elif ver == 6:
        src6 = bytes(buf[o + IPV6_SRC:o + IPV6_DST])
        buf[o + IPV6_SRC:o + IPV6_DST] = buf[o + IPV6_DST:o + IPV6_HEADER]
        buf[o + IPV6_DST:o + IPV6_HEADER] = src6
