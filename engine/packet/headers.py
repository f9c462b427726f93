"""Header layouts the engine reads and writes, each constant once, with its source.

Offsets count from the start of their own header. A frame in a pool slot is
`vnet_hdr_len` bytes of virtio_net_hdr (offload mode), then, in TAP mode, the Ethernet
header, then the IP packet.
"""
from __future__ import annotations

import ipaddress

# linux/virtio_net.h struct virtio_net_hdr: flags(u8) gso_type(u8) hdr_len gso_size
# csum_start csum_offset (u16, little-endian on every host we run on)
VNET_HDR_LEN = 10
VNET_F_NEEDS_CSUM = 1
VNET_GSO_NONE, VNET_GSO_TCPV4, VNET_GSO_TCPV6, VNET_GSO_UDP_L4 = 0, 1, 4, 5
VNET_GSO_ECN = 0x80
VNET_CSUM_START, VNET_CSUM_OFFSET = 6, 8

# IEEE 802.3 Ethernet II: destination MAC, source MAC, EtherType (linux/if_ether.h)
ETH_DST, ETH_SRC, ETH_TYPE = 0, 6, 12
ETH_ALEN = 6
ETH_HLEN = 14
ETH_ZLEN = 60                      # the minimum frame without FCS (IEEE 802.3 §4.2.3.3)
ETH_MIN_PAYLOAD = ETH_ZLEN - ETH_HLEN
VLAN_HLEN = 4                      # an 802.1Q tag, read only to be dropped
ETHERTYPE_IPV4 = 0x0800            # RFC 894
ETHERTYPE_ARP = 0x0806             # RFC 826
ETHERTYPE_IPV6 = 0x86DD            # RFC 2464
ETHERTYPE_VLAN = 0x8100            # IEEE 802.1Q customer tag
ETHERTYPE_QINQ = 0x88A8            # IEEE 802.1ad service tag
BROADCAST_MAC = b"\xff" * ETH_ALEN
MAC_GROUP_BIT = 0x01               # I/G bit of the first octet: broadcast or multicast
MAC_LOCAL_BIT = 0x02               # U/L bit: locally administered (IEEE 802-2014 §8.2)

# RFC 791 IPv4
IPV4_TOTAL_LENGTH = 2
IPV4_FLAGS_FRAGMENT = 6
IPV4_PROTOCOL = 9
IPV4_SRC, IPV4_DST = 12, 16
IPV4_MIN_HEADER, IPV4_MAX_HEADER = 20, 60
IPV4_FRAG_MASK = 0x3FFF            # MF flag + fragment offset; DF (0x4000) excluded
MAX_IP_PACKET = 65535              # IPv4 total length; also the GSO super-packet ceiling

# RFC 8200 IPv6
IPV6_PAYLOAD_LENGTH = 4
IPV6_NEXT_HEADER, IPV6_HOP_LIMIT = 6, 7
IPV6_SRC, IPV6_DST = 8, 24
IPV6_HEADER = 40

# Destinations never reflected to, whatever the prefix (the rule excludes them), and
# ranges a device address cannot come from (RFC 6890's special-purpose registries):
# "this network", loopback, link-local, multicast, reserved (240/4, limited broadcast
# included); IPv6 unspecified, loopback, IPv4-mapped, link-local, multicast.
SPECIAL_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
    "::/128", "::1/128", "::ffff:0:0/96", "fe80::/10", "ff00::/8"))

# IANA protocol numbers
IPPROTO_TCP = 6
IPPROTO_ICMPV6 = 58

# RFC 826 ARP over Ethernet for IPv4: htype(2) ptype(2) hlen(1) plen(1) op(2) sha spa tha tpa
ARP_HTYPE_ETHERNET = 1
ARP_LEN = 28
ARP_REQUEST, ARP_REPLY = 1, 2
ARP_MIN_FRAME = ETH_HLEN + ARP_LEN   # 42

# RFC 4443 ICMPv6, RFC 4861 neighbour discovery
ICMPV6_NS, ICMPV6_NA = 135, 136      # RFC 4861 §4.3, §4.4
NDP_HOP_LIMIT = 255                  # RFC 4861 §7.1.1: a router could not have forwarded it
NS_LEN = 24                          # type code checksum reserved(4) target(16)
NA_FLAG_ROUTER, NA_FLAG_SOLICITED, NA_FLAG_OVERRIDE = 0x80, 0x40, 0x20
NDP_OPT_SOURCE_LLADDR, NDP_OPT_TARGET_LLADDR = 1, 2   # RFC 4861 §4.6.1
ICMP6_AT = ETH_HLEN + IPV6_HEADER    # the ICMPv6 type byte, from the Ethernet header
NS_MIN_FRAME = ICMP6_AT + NS_LEN     # 78


def length_fits(claimed, present, least: int, tap: bool):
    """The padding rule, for one frame (ints) or a batch (numpy arrays): an IP packet whose
    length field says `claimed` bytes fits the `present` bytes after the link header when
    they agree, or, in TAP mode, when the frame is a padded minimum Ethernet frame
    (`present` == ETH_MIN_PAYLOAD) and the packet is shorter but at least its own header
    (`least`). Anything else is malformed (DESIGN.md §2.3)."""
    ok = claimed == present
    if tap:
        ok = ok | ((present == ETH_MIN_PAYLOAD) & (claimed < present) & (claimed >= least))
    return ok
