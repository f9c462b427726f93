"""TAP mode's answers: the ARP replies and neighbour advertisements the mirror gives for
the peers of its prefixes, each claiming the peer's fake MAC (engine/packet/ethernet.py
`fake_mac`), so the host can send to them at all. Pure functions, no I/O.
"""
from __future__ import annotations

import ipaddress
import struct
from typing import Optional

from .ethernet import fake_mac
from .headers import (ARP_HTYPE_ETHERNET, ARP_MIN_FRAME, ARP_REPLY, ARP_REQUEST, ETH_ALEN,
                      ETH_HLEN, ETH_SRC, ETH_TYPE, ETHERTYPE_ARP, ETHERTYPE_IPV4,
                      ETHERTYPE_IPV6, ICMPV6_NA, ICMPV6_NS, IPPROTO_ICMPV6, IPV6_DST,
                      IPV6_HEADER, IPV6_HOP_LIMIT, IPV6_NEXT_HEADER, IPV6_SRC,
                      MAC_GROUP_BIT, NA_FLAG_OVERRIDE, NA_FLAG_SOLICITED, NDP_HOP_LIMIT,
                      NDP_OPT_TARGET_LLADDR, NS_LEN, NS_MIN_FRAME)

_ARP = struct.Struct("!HHBBH6s4s6s4s")


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

    The NA: Ethernet requester MAC <- fake_mac(target); IPv6 target -> NS source, hop
    limit 255; ICMPv6 type 136, flags Solicited|Override (R = 0), the target, option 2
    (target link-layer address) = fake MAC; checksum over the pseudo-header."""
    f = bytes(frame[o:])
    target = _solicited_peer(f, rule_v6)
    if target is None:
        return None
    src = f[ETH_HLEN + IPV6_SRC:ETH_HLEN + IPV6_DST]
    mac = fake_mac(target)
    na = bytearray(struct.pack("!BBHB3x16sBB6s", ICMPV6_NA, 0, 0,
                               NA_FLAG_SOLICITED | NA_FLAG_OVERRIDE, target.packed,
                               NDP_OPT_TARGET_LLADDR, 1, mac))
    na[2:4] = struct.pack("!H", icmpv6_checksum(target.packed, src, bytes(na)))
    ip6 = struct.pack("!IHBB16s16s", 0x60000000, len(na), IPPROTO_ICMPV6, NDP_HOP_LIMIT,
                      target.packed, src)
    eth = f[ETH_SRC:ETH_SRC + ETH_ALEN] + mac + struct.pack("!H", ETHERTYPE_IPV6)
    return bytes(o) + eth + ip6 + bytes(na)


def _solicited_peer(f: bytes, rule_v6) -> Optional[ipaddress.IPv6Address]:
    """The target of the Ethernet frame `f` when it is an NS the mirror answers, else None.

    Validated as RFC 4861 §7.1.1 asks: IPv6 payload length matches the frame, next header
    58, hop limit 255, ICMPv6 type 135 code 0, at least 24 bytes, checksum correct, target
    not multicast, every option of non-zero length inside the message. Answered when the
    target is in the prefix but is neither the device's address nor the subnet-router
    anycast (the network address, RFC 4291 §2.6.1); the destination is the target itself
    or its solicited-node group (RFC 4291 §2.7.1); and the source is the device's address
    or a link-local unicast address. Link-local: Linux sends a neighbour-unreachability
    probe with no queued packet from the interface's link-local address (ndisc_solicit,
    RFC 4861 §7.2.2), and an unanswered probe turns the entry FAILED. A source of ::
    (duplicate address detection, RFC 4862 §5.4.2) is not answered: the address is ours."""
    if rule_v6 is None or len(f) < NS_MIN_FRAME or f[ETH_TYPE:ETH_HLEN] != b"\x86\xdd":
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
    return target


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
