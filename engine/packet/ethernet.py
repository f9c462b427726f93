"""TAP mode (issue 7): the Ethernet layer around the L3 mirror. Pure functions, no I/O.

In TAP mode every frame is `o` bytes of virtio_net_hdr (0 without offload), a 14-byte
Ethernet II header, then the payload its EtherType names. The reader sorts frames with
`classify` into:

  KIND_IP    IPv4/IPv6 to a unicast MAC: the L3 mirror at offset o + ETH_HLEN
             (engine/packet/ip.py), then `swap_macs` (the reply goes back to the
             host's MAC, from the fake MAC the host resolved for the peer)
  KIND_ARP   answered in its own slot (engine/packet/neighbours.py `arp_reply`)
  KIND_NDP   an ICMPv6 neighbour solicitation (`neighbour_advert` there)
  KIND_DROP  with a reason code (1 + an index into stats.DROP_REASONS), in this order
             of precedence:
               malformed          shorter than the Ethernet header; ARP shorter than
                                  its 28-byte body; IP EtherType with nothing after the
                                  header, or whose version nibble disagrees with the
                                  EtherType (IPv6 in 0x0800); an NS cut short
               vlan               802.1Q (0x8100) or 802.1ad QinQ (0x88A8) tag
               unknown_ethertype  anything else, including 802.3 length fields (< 0x0600)
               not_mirrored       IP to a group MAC (broadcast, multicast: I/G bit set)

ARP requests go to the broadcast MAC and NS to a solicited-node multicast MAC: they are
classified before the group-MAC rule, so they reach their answer. Classification looks
at no byte past a frame's length (stale pool bytes never change a verdict).

A sender pads frames to the 60-byte Ethernet minimum, so a TAP frame may carry an IP
packet shorter than its payload field: the L3 rule allows for it (headers.length_fits).
"""
from __future__ import annotations

import hashlib
import ipaddress
from typing import List, Optional, Tuple

import numpy as np

from ..stats import DROP_REASONS
from .batch import SMALL_BATCH, Pool, as_array, as_list
from .headers import (ARP_MIN_FRAME, ETH_ALEN, ETH_DST, ETH_HLEN, ETH_SRC, ETH_TYPE,
                      ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_QINQ,
                      ETHERTYPE_VLAN, ICMP6_AT, ICMPV6_NS, IPPROTO_ICMPV6, IPV6_NEXT_HEADER,
                      MAC_GROUP_BIT, NS_MIN_FRAME)

KIND_IP, KIND_ARP, KIND_NDP, KIND_DROP = 0, 1, 2, 3
KIND_NAMES = ("ip", "arp", "ndp", "drop")
R = {name: i + 1 for i, name in enumerate(DROP_REASONS)}
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
def classify(pool: Pool, slots, lens, o: int) -> Optional[List[Tuple[int, int, int]]]:
    """None when every frame in `slots` is KIND_IP; else (index in the batch, kind,
    reason) of each frame that is not. The Ethernet header starts at `o`."""
    if len(slots) <= SMALL_BATCH:
        views = pool.views
        other = []
        for i, (s, ln) in enumerate(zip(as_list(slots), as_list(lens))):
            kind, reason = classify_frame(views[s], ln, o)
            if kind != KIND_IP:
                other.append((i, kind, reason))
        return other or None
    kind, reason = classify_batch(pool.matrix, as_array(slots), as_array(lens), o)
    if not kind.any():
        return None
    return [(i, int(kind[i]), int(reason[i])) for i in np.flatnonzero(kind).tolist()]


def classify_batch(frames: np.ndarray, slots: np.ndarray, lengths: np.ndarray,
                   o: int) -> Tuple[np.ndarray, np.ndarray]:
    """Kind (KIND_*) and reason code (0, or 1 + index into stats.DROP_REASONS for KIND_DROP) of every
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
