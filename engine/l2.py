"""TAP mode (issue 7): the Ethernet layer around the L3 mirror. Pure functions, no I/O.

In TAP mode every frame is `o` bytes of virtio_net_hdr (0 without offload), a 14-byte
Ethernet II header, then the payload its EtherType names. The reader sorts frames with
`classify_batch` (or `classify_frame` for a few) into:

  KIND_IP    IPv4/IPv6 to a unicast MAC: the L3 mirror at offset o + ETH_HLEN, then
             `swap_macs` (the reply goes back to the host's MAC, from the fake MAC the
             host resolved for the peer)
  KIND_ARP   slow path: `arp_reply` builds the answer (or None: count `not_mirrored`)
  KIND_NDP   slow path: an ICMPv6 neighbour solicitation; `neighbour_advert` answers
  KIND_DROP  with a reason code (the same encoding as engine/rewrite.py: 1 + an index
             into `REASONS`), in this order of precedence:
               malformed          shorter than the Ethernet header; ARP shorter than
                                  its 28-byte body; IP EtherType with nothing after the
                                  header, or whose version nibble disagrees with the
                                  EtherType (IPv6 in 0x0800); an NS cut short
               vlan               802.1Q (0x8100) or 802.1ad QinQ (0x88A8) tag
               unknown_ethertype  anything else, including 802.3 length fields (< 0x0600)
               not_mirrored       IP to a group MAC (broadcast, multicast: I/G bit set)

ARP requests go to the broadcast MAC and NS to a solicited-node multicast MAC: they are
classified before the group-MAC rule, so they reach the slow path. Classification looks
at no byte past a frame's length (stale pool bytes never change a verdict).

`REASONS` is stats.DROP_REASONS plus the names this module needs that stats does not
list yet ("vlan", "unknown_ethertype"), appended in that order: once stats.py lists them,
the codes here and in the counters coincide.

Ethernet minimum-frame padding: a sender pads frames to 60 bytes (ETH_ZLEN, IEEE 802.3
§4.2.3.3 without FCS), so a 60-byte TAP frame may carry an IP packet shorter than its
46-byte payload field. The L3 rule accepts length field < bytes present only when the
frame (after the vnet header) is exactly ETH_ZLEN bytes; see `padded`.
"""
from __future__ import annotations

import hashlib
import ipaddress
import struct
from typing import Optional, Tuple

import numpy as np

from .stats import DROP_REASONS

# IEEE 802.3 Ethernet II header: destination MAC, source MAC, EtherType.
ETH_DST, ETH_SRC, ETH_TYPE = 0, 6, 12
ETH_ALEN = 6
ETH_HLEN = 14
ETH_ZLEN = 60                      # minimum frame without FCS (linux/if_ether.h)
ETH_MIN_PAYLOAD = ETH_ZLEN - ETH_HLEN
# EtherTypes (IEEE Registration Authority; linux/if_ether.h)
ETHERTYPE_IPV4 = 0x0800            # RFC 894
ETHERTYPE_ARP = 0x0806             # RFC 826
ETHERTYPE_IPV6 = 0x86DD            # RFC 2464
ETHERTYPE_VLAN = 0x8100            # IEEE 802.1Q customer tag
ETHERTYPE_QINQ = 0x88A8            # IEEE 802.1ad service tag
BROADCAST_MAC = b"\xff" * ETH_ALEN
MAC_GROUP_BIT = 0x01               # I/G bit of the first octet: broadcast or multicast
MAC_LOCAL_BIT = 0x02               # U/L bit: locally administered (IEEE 802-2014 §8.2)

# RFC 826 ARP over Ethernet for IPv4: htype(2) ptype(2) hlen(1) plen(1) op(2) sha spa tha tpa
ARP_HTYPE_ETHERNET = 1
ARP_LEN = 28
ARP_REQUEST, ARP_REPLY = 1, 2
_ARP = struct.Struct("!HHBBH6s4s6s4s")

# RFC 8200 IPv6 header; RFC 4443 ICMPv6; RFC 4861 neighbour discovery.
IPV6_HEADER = 40
IPV6_NEXT_HEADER, IPV6_HOP_LIMIT, IPV6_SRC, IPV6_DST = 6, 7, 8, 24
IPPROTO_ICMPV6 = 58
ICMPV6_NS, ICMPV6_NA = 135, 136    # RFC 4861 §4.3, §4.4
NDP_HOP_LIMIT = 255                # RFC 4861 §7.1.1: a router could not have forwarded it
NS_LEN = 24                        # type code checksum reserved(4) target(16)
NA_FLAG_ROUTER, NA_FLAG_SOLICITED, NA_FLAG_OVERRIDE = 0x80, 0x40, 0x20
NDP_OPT_SOURCE_LLADDR, NDP_OPT_TARGET_LLADDR = 1, 2   # RFC 4861 §4.6.1
ICMP6_AT = ETH_HLEN + IPV6_HEADER  # ICMPv6 type byte, from the Ethernet header
NS_MIN_FRAME = ICMP6_AT + NS_LEN   # 78
ARP_MIN_FRAME = ETH_HLEN + ARP_LEN  # 42

KIND_IP, KIND_ARP, KIND_NDP, KIND_DROP = 0, 1, 2, 3
KIND_NAMES = ("ip", "arp", "ndp", "drop")

NEW_DROP_REASONS = ("vlan", "unknown_ethertype")
REASONS = DROP_REASONS + tuple(r for r in NEW_DROP_REASONS if r not in DROP_REASONS)
R = {name: i + 1 for i, name in enumerate(REASONS)}
GATHER = ICMP6_AT + 1              # bytes looked at per frame: up to the ICMPv6 type

_SWAP_MACS = np.r_[ETH_SRC:ETH_SRC + ETH_ALEN, ETH_DST:ETH_DST + ETH_ALEN]


# ---------------------------------------------------------------- fake MACs
def fake_mac(ip) -> bytes:
    """The MAC the mirror claims for a peer address: stable across runs and processes.

    IPv4: 02:00 followed by the four address bytes (198.18.0.5 -> 02:00:c6:12:00:05),
    one MAC per address and readable in `ip neigh`. IPv6: 02 followed by the first five
    bytes of SHA-256 of the 16 address bytes (no low-bits scheme: two addresses of one
    /64 may share any 40 bits). The first octet 0x02 is unicast (I/G = 0), locally
    administered (U/L = 1), and in the AAI quadrant of IEEE 802c SLAP (bits Y, Z = 0)."""
    ip = ipaddress.ip_address(ip)
    if ip.version == 4:
        return b"\x02\x00" + ip.packed
    return b"\x02" + hashlib.sha256(ip.packed).digest()[:5]


# ---------------------------------------------------------------- classification
def classify_batch(frames: np.ndarray, slots: np.ndarray, lengths: np.ndarray,
                   o: int) -> Tuple[np.ndarray, np.ndarray]:
    """Kind (KIND_*) and reason code (0, or 1 + index into REASONS for KIND_DROP) of every
    frame in `frames[slots]`; its Ethernet header starts at `o`, `lengths` include the `o`
    bytes. Needs slots of at least o + GATHER (55) bytes. One gather, a dozen array
    operations; a batch of unicast IPv4 (or IPv6) frames returns after the first few."""
    h = frames[slots, o:o + GATHER]            # (n, 55) contiguous copy
    L = lengths.astype(np.int64) - o
    et = h[:, ETH_TYPE:ETH_TYPE + 2].view(">u2")[:, 0]
    ver = h[:, ETH_HLEN] >> 4
    unicast = (h[:, ETH_DST] & MAC_GROUP_BIT) == 0
    n = len(slots)
    if (unicast & (L > ETH_HLEN)).all():
        if ((et == ETHERTYPE_IPV4) & (ver == 4)).all():
            return np.zeros(n, np.uint8), np.zeros(n, np.uint8)
        if ((et == ETHERTYPE_IPV6) & (ver == 6)).all() and not _ns(h, L).any():
            return np.zeros(n, np.uint8), np.zeros(n, np.uint8)
    kind = np.full(n, KIND_DROP, np.uint8)
    reason = np.full(n, R["unknown_ethertype"], np.uint8)
    is_ip = (et == ETHERTYPE_IPV4) | (et == ETHERTYPE_IPV6)
    ip_ok = is_ip & (L > ETH_HLEN) & (ver == np.where(et == ETHERTYPE_IPV4, 4, 6))
    ns = _ns(h, L) & ip_ok
    reason[is_ip] = R["malformed"]
    reason[ip_ok & ~unicast] = R["not_mirrored"]
    reason[ns & (L < NS_MIN_FRAME)] = R["malformed"]
    kind[ip_ok & unicast & ~ns] = KIND_IP
    kind[ns & (L >= NS_MIN_FRAME)] = KIND_NDP
    arp = et == ETHERTYPE_ARP
    reason[arp] = R["malformed"]
    kind[arp & (L >= ARP_MIN_FRAME)] = KIND_ARP
    reason[(et == ETHERTYPE_VLAN) | (et == ETHERTYPE_QINQ)] = R["vlan"]
    reason[L < ETH_HLEN] = R["malformed"]
    kind[L < ETH_HLEN] = KIND_DROP
    reason[kind != KIND_DROP] = 0
    return kind, reason


def _ns(h: np.ndarray, L: np.ndarray) -> np.ndarray:
    """IPv6 frames whose ICMPv6 type byte is present and says neighbour solicitation,
    with ICMPv6 directly after the fixed header."""
    return ((h[:, ETH_TYPE] == 0x86) & (h[:, ETH_TYPE + 1] == 0xDD) & (L > ICMP6_AT)
            & (h[:, ETH_HLEN + IPV6_NEXT_HEADER] == IPPROTO_ICMPV6) & (h[:, ICMP6_AT] == ICMPV6_NS))


def classify_frame(buf, length: int, o: int) -> Tuple[int, int]:
    """`classify_batch` for one frame in plain Python (cheaper for a few frames); must
    agree with it on every input (property-tested)."""
    n = length - o
    if n < ETH_HLEN:
        return KIND_DROP, R["malformed"]
    et = (buf[o + ETH_TYPE] << 8) | buf[o + ETH_TYPE + 1]
    if et == ETHERTYPE_IPV4 or et == ETHERTYPE_IPV6:
        if n == ETH_HLEN or buf[o + ETH_HLEN] >> 4 != (4 if et == ETHERTYPE_IPV4 else 6):
            return KIND_DROP, R["malformed"]
        if (et == ETHERTYPE_IPV6 and n > ICMP6_AT and buf[o + ICMP6_AT] == ICMPV6_NS
                and buf[o + ETH_HLEN + IPV6_NEXT_HEADER] == IPPROTO_ICMPV6):
            return (KIND_NDP, 0) if n >= NS_MIN_FRAME else (KIND_DROP, R["malformed"])
        if buf[o + ETH_DST] & MAC_GROUP_BIT:
            return KIND_DROP, R["not_mirrored"]
        return KIND_IP, 0
    if et == ETHERTYPE_ARP:
        return (KIND_ARP, 0) if n >= ARP_MIN_FRAME else (KIND_DROP, R["malformed"])
    if et == ETHERTYPE_VLAN or et == ETHERTYPE_QINQ:
        return KIND_DROP, R["vlan"]
    return KIND_DROP, R["unknown_ethertype"]


def padded(l3_bytes: int, l3_length: int) -> bool:
    """Whether an IP packet whose header claims `l3_length` bytes legitimately sits in
    `l3_bytes` bytes of Ethernet payload: exactly, or shorter inside a minimum-size
    (60-byte) frame that the sender padded. Anything else is malformed (DESIGN.md §2.3)."""
    return l3_length == l3_bytes or (l3_bytes == ETH_MIN_PAYLOAD and l3_length < l3_bytes)


# ---------------------------------------------------------------- MAC swap
def swap_macs(frames: np.ndarray, slots: np.ndarray, o: int) -> None:
    """Swap destination and source MAC (bytes o..o+5 <-> o+6..o+11) of `frames[slots]`
    in place: one gather, one scatter."""
    if len(slots):
        frames[slots, o:o + 2 * ETH_ALEN] = frames[slots[:, None], o + _SWAP_MACS]


def swap_macs_frame(buf, o: int) -> None:
    """`swap_macs` for one frame in a writable buffer."""
    dst = bytes(buf[o:o + ETH_ALEN])
    buf[o:o + ETH_ALEN] = buf[o + ETH_SRC:o + ETH_SRC + ETH_ALEN]
    buf[o + ETH_SRC:o + ETH_SRC + ETH_ALEN] = dst


# ---------------------------------------------------------------- checksums
def internet_checksum(data: bytes, initial: int = 0) -> int:
    """RFC 1071: the one's-complement of the one's-complement sum of 16-bit big-endian
    words (an odd tail padded with a zero byte). Verifying: the checksum over data that
    includes a correct checksum field is 0. `initial` adds a partial sum (pseudo-header)."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    s = initial + sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def icmpv6_checksum(src: bytes, dst: bytes, icmp: bytes) -> int:
    """RFC 4443 §2.3 / RFC 8200 §8.1: checksum over the pseudo-header (source,
    destination, upper-layer length as 32 bits, 3 zero bytes, next header 58) and the
    ICMPv6 message. 0 when `icmp` carries a correct checksum."""
    pseudo = src + dst + struct.pack("!I3xB", len(icmp), IPPROTO_ICMPV6)
    return internet_checksum(pseudo + bytes(icmp))


# ---------------------------------------------------------------- ARP (RFC 826)
def arp_reply(frame: bytes, o: int, rule_v4: Optional[ipaddress.IPv4Interface]) -> Optional[bytes]:
    """The reply to an ARP request the mirror answers, as a frame with `o` zero bytes of
    vnet header in front; None for anything else (the caller counts `not_mirrored`).

    Answered: Ethernet/IPv4 request (htype 1, ptype 0x0800, hlen 6, plen 4, op 1) from a
    unicast sender hardware address, whose sender IP is the device's address (so an ARP
    probe from 0.0.0.0, RFC 5227, is not answered) and whose target is a peer of the
    mirror prefix: inside it, not its network, broadcast or the device's own address.
    The reply claims fake_mac(target) for the target, sent to the requester (RFC 826:
    swap sender and target, set op 2). No padding to 60 bytes: the tap driver and
    TAP-Windows take frames of 14 bytes and more."""
    if rule_v4 is None or len(frame) - o < ARP_MIN_FRAME:
        return None
    if frame[o + ETH_TYPE:o + ETH_HLEN] != b"\x08\x06":
        return None
    htype, ptype, hlen, plen, op, sha, spa, _tha, tpa = _ARP.unpack_from(frame, o + ETH_HLEN)
    if (htype, ptype, hlen, plen, op) != (ARP_HTYPE_ETHERNET, ETHERTYPE_IPV4, ETH_ALEN, 4,
                                          ARP_REQUEST):
        return None
    if sha[0] & MAC_GROUP_BIT or sha == bytes(ETH_ALEN):
        return None
    net = rule_v4.network
    target = ipaddress.IPv4Address(tpa)
    if (spa != rule_v4.ip.packed or target not in net
            or target in (net.network_address, net.broadcast_address, rule_v4.ip)):
        return None
    mac = fake_mac(target)
    eth = sha + mac + struct.pack("!H", ETHERTYPE_ARP)
    body = _ARP.pack(ARP_HTYPE_ETHERNET, ETHERTYPE_IPV4, ETH_ALEN, 4, ARP_REPLY,
                     mac, tpa, sha, spa)
    return bytes(o) + eth + body


# ---------------------------------------------------------------- NDP (RFC 4861)
def neighbour_advert(frame: bytes, o: int,
                     rule_v6: Optional[ipaddress.IPv6Interface]) -> Optional[bytes]:
    """The solicited neighbour advertisement answering an NS for a peer of the mirror's
    IPv6 prefix, as a frame with `o` zero bytes of vnet header in front; None for
    anything else (the caller counts `not_mirrored`).

    Validated as RFC 4861 §7.1.1 asks: IPv6 payload length matches the frame, next header
    58, hop limit 255, ICMPv6 type 135 code 0, at least 24 bytes, checksum correct, target
    not multicast, every option of non-zero length inside the message. Answered when the
    target is in the prefix but is neither the device's address nor the subnet-router
    anycast (the network address, RFC 4291 §2.6.1); the destination is the target itself
    or its solicited-node group (RFC 4291 §2.7.1); and the source is the device's address
    or a link-local unicast address. Link-local: Linux sends a neighbour-unreachability
    probe with no queued packet from the interface's link-local address (ndisc_solicit,
    RFC 4861 §7.2.2), and an unanswered probe turns the entry FAILED. A source of ::
    (duplicate address detection, RFC 4862 §5.4.2) is not answered: the address is ours.

    The NA: Ethernet requester MAC <- fake_mac(target); IPv6 target -> NS source, hop
    limit 255; ICMPv6 type 136, flags Solicited|Override (R = 0), the target, option 2
    (target link-layer address) = fake MAC; checksum over the pseudo-header."""
    if rule_v6 is None:
        return None
    f = bytes(frame[o:])
    if len(f) < NS_MIN_FRAME or f[ETH_TYPE:ETH_HLEN] != b"\x86\xdd":
        return None
    ip = f[ETH_HLEN:]
    plen = int.from_bytes(ip[4:6], "big")
    if (ip[0] >> 4 != 6 or plen + IPV6_HEADER != len(ip) or ip[IPV6_NEXT_HEADER] != IPPROTO_ICMPV6
            or ip[IPV6_HOP_LIMIT] != NDP_HOP_LIMIT or f[ETH_SRC] & MAC_GROUP_BIT):
        return None
    src, dst, icmp = ip[IPV6_SRC:IPV6_DST], ip[IPV6_DST:IPV6_HEADER], ip[IPV6_HEADER:]
    if icmp[0] != ICMPV6_NS or icmp[1] != 0 or icmpv6_checksum(src, dst, icmp) != 0:
        return None
    if not _options_ok(icmp[NS_LEN:]):
        return None
    target = ipaddress.IPv6Address(icmp[8:24])
    source = ipaddress.IPv6Address(src)
    net = rule_v6.network
    if target.is_multicast or target not in net or target in (net.network_address, rule_v6.ip):
        return None
    if dst != target.packed and dst != _solicited_node(target):
        return None
    if not (source == rule_v6.ip or (source.is_link_local and not source.is_multicast)):
        return None
    mac = fake_mac(target)
    na = bytearray(struct.pack("!BBHB3x16sBB6s", ICMPV6_NA, 0, 0,
                               NA_FLAG_SOLICITED | NA_FLAG_OVERRIDE, target.packed,
                               NDP_OPT_TARGET_LLADDR, 1, mac))
    na[2:4] = struct.pack("!H", icmpv6_checksum(target.packed, src, bytes(na)))
    ip6 = struct.pack("!IHBB16s16s", 0x60000000, len(na), IPPROTO_ICMPV6, NDP_HOP_LIMIT,
                      target.packed, src)
    eth = f[ETH_SRC:ETH_SRC + ETH_ALEN] + mac + struct.pack("!H", ETHERTYPE_IPV6)
    return bytes(o) + eth + ip6 + bytes(na)


_SOLICITED_NODE_PREFIX = ipaddress.IPv6Address("ff02::1:ff00:0").packed[:13]


def _solicited_node(addr: ipaddress.IPv6Address) -> bytes:
    """ff02::1:ffXX:XXXX, the low 24 bits of `addr` (RFC 4291 §2.7.1)."""
    return _SOLICITED_NODE_PREFIX + addr.packed[13:]


def _options_ok(opts: bytes) -> bool:
    """RFC 4861 §7.1.1: "All included options have a length that is greater than zero";
    each option (type, length in 8-byte units) must fit in the message."""
    at = 0
    while at < len(opts):
        if at + 2 > len(opts) or opts[at + 1] == 0:
            return False
        at += opts[at + 1] * 8
    return at == len(opts)
