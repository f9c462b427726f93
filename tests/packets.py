"""Packet builders for tests (wireguard-go's tuntest.Ping and tcp4Packet play this part)."""
from __future__ import annotations

import ipaddress
import struct


def checksum(data: bytes) -> int:
    """RFC 1071 Internet checksum."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(src: str, dst: str, payload: bytes = b"", proto: int = 17, options: bytes = b"",
         ident: int = 0, frag: int = 0, ttl: int = 64, total_length=None,
         ihl=None, bad_checksum: bool = False) -> bytes:
    hlen = 20 + len(options)
    ihl = hlen // 4 if ihl is None else ihl
    tot = hlen + len(payload) if total_length is None else total_length
    h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, tot, ident, frag, ttl, proto, 0,
                              ipaddress.IPv4Address(src).packed,
                              ipaddress.IPv4Address(dst).packed) + options)
    c = checksum(bytes(h))
    h[10:12] = struct.pack("!H", c ^ (0x5555 if bad_checksum else 0))
    return bytes(h) + payload


def udp(sport: int, dport: int, data: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data


def tcp(sport: int, dport: int, seq: int = 0) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 0x50, 0x02, 65535, 0, 0)


def ipv6(src: str, dst: str, payload: bytes = b"", nh: int = 17, payload_length=None) -> bytes:
    plen = len(payload) if payload_length is None else payload_length
    return struct.pack("!IHBB16s16s", 0x60000000, plen, nh, 64,
                       ipaddress.IPv6Address(src).packed,
                       ipaddress.IPv6Address(dst).packed) + payload


def vnet(gso_type: int = 0, flags: int = 0, csum_start: int = 0, csum_offset: int = 0,
         hdr_len: int = 0, gso_size: int = 0) -> bytes:
    """struct virtio_net_hdr, native (little) endian."""
    return struct.pack("<BBHHHH", flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)


def swapped4(pkt: bytes) -> bytes:
    return pkt[:12] + pkt[16:20] + pkt[12:16] + pkt[20:]


def swapped6(pkt: bytes) -> bytes:
    return pkt[:8] + pkt[24:40] + pkt[8:24] + pkt[40:]
