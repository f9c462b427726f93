"""TAP mode's Ethernet layer (engine/packet/ethernet.py, neighbours.py) over crafted frames: classification, MAC swap,
ARP replies, neighbour advertisements, fake MACs; table-driven, then property-tested.
The mode probe (engine/tun/mode.py) over a fake sysfs tree."""
import hashlib
import ipaddress
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from engine.packet import headers, neighbours
from engine.packet.ethernet import (KIND_DROP, KIND_NAMES, R, classify_batch, classify_frame,
                                    fake_mac, swap_macs, swap_macs_frame)
from engine.packet.neighbours import arp_reply, neighbour_advert
from engine.stats import DROP_REASONS
from engine.tun import mode
from packets import checksum, ipv4, ipv6, tcp, udp

RULE4 = ipaddress.IPv4Interface("198.18.0.1/24")
RULE6 = ipaddress.IPv6Interface("2001:db8::1/64")
A, PEER = "198.18.0.1", "198.18.0.5"
A6, PEER6 = "2001:db8::1", "2001:db8::5"
LL6 = "fe80::5054:ff:fe12:3456"
SLOT = 256
VNET = 10


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


HOST = mac("52:54:00:12:34:56")        # the tap device's own MAC (what the kernel sends from)
FAKE_PEER = mac("02:00:c6:12:00:05")   # fake_mac(198.18.0.5), written out by hand
BCAST = b"\xff" * 6
ZERO_MAC = bytes(6)


def eth(payload: bytes, ethertype: int, dst: bytes = FAKE_PEER, src: bytes = HOST) -> bytes:
    return dst + src + struct.pack("!H", ethertype) + payload


def arp(op=1, sha=HOST, spa=A, tha=ZERO_MAC, tpa=PEER, htype=1, ptype=0x0800, hlen=6, plen=4):
    return (struct.pack("!HHBBH", htype, ptype, hlen, plen, op) + sha
            + ipaddress.IPv4Address(spa).packed + tha + ipaddress.IPv4Address(tpa).packed)


def solicited_node(addr: str) -> str:
    low = ipaddress.IPv6Address(addr).packed[13:]
    return str(ipaddress.IPv6Address(bytes.fromhex("ff02" + "00" * 9 + "01ff") + low))


def pseudo6(src: bytes, dst: bytes, n: int) -> bytes:
    return src + dst + n.to_bytes(4, "big") + b"\0\0\0\x3a"


def ns(target=PEER6, src=A6, dst=None, hop=255, code=0, options=None, bad_checksum=False,
       payload_length=None, eth_dst=None) -> bytes:
    """An Ethernet frame holding an ICMPv6 neighbour solicitation (RFC 4861 §4.3), built
    here with struct and tests/packets.checksum, not with engine code."""
    dst = dst or solicited_node(target)
    s, d = ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed
    opts = (b"\x01\x01" + HOST) if options is None else options
    body = bytes([135, code, 0, 0, 0, 0, 0, 0]) + ipaddress.IPv6Address(target).packed + opts
    c = checksum(pseudo6(s, d, len(body)) + body) ^ (0x1111 if bad_checksum else 0)
    body = body[:2] + struct.pack("!H", c) + body[4:]
    plen = len(body) if payload_length is None else payload_length
    pkt = struct.pack("!IHBB16s16s", 0x60000000, plen, 58, hop, s, d) + body
    if eth_dst is None:
        eth_dst = b"\x33\x33" + d[12:]           # RFC 2464 §7: IPv6 multicast -> 33:33:xx
    return eth(pkt, 0x86DD, dst=eth_dst)


IP4 = eth(ipv4(A, PEER, udp(1000, 2000, b"hello")), 0x0800)
IP6 = eth(ipv6(A6, PEER6, udp(1000, 2000, b"hello")), 0x86DD)
ARP_REQ = eth(arp(), 0x0806, dst=BCAST)
NS = ns()

# ---- classification ---------------------------------------------------------------
CLASSIFY = [
    # name, frame, expected kind, expected drop reason (None unless dropped)
    ("ipv4 unicast", IP4, "ip", None),
    ("ipv6 unicast", IP6, "ip", None),
    ("ipv4 tcp", eth(ipv4(A, PEER, tcp(1, 2), proto=6), 0x0800), "ip", None),
    ("arp request broadcast", ARP_REQ, "arp", None),
    ("arp request unicast (probe)", eth(arp(), 0x0806, dst=FAKE_PEER), "arp", None),
    ("arp padded to 60", ARP_REQ + bytes(18), "arp", None),
    ("arp reply (answered by nobody)", eth(arp(op=2), 0x0806), "arp", None),
    ("ns solicited-node multicast", NS, "ndp", None),
    ("ns unicast", ns(dst=PEER6, eth_dst=mac("02:91:ad:17:4a:c4")), "ndp", None),
    ("ns from ::", ns(src="::", options=b""), "ndp", None),
    ("ns with bad checksum (judged later)", ns(bad_checksum=True), "ndp", None),
    ("ipv4 padded to 60 bytes", eth(ipv4(A, PEER, udp(1, 2, b"x")), 0x0800) + bytes(17), "ip",
     None),
    ("ipv6 to unicast after an ext header", eth(ipv6(A6, PEER6, bytes(8), nh=0), 0x86DD), "ip",
     None),
    ("na unicast is ip", eth(ipv6(A6, PEER6, bytes([136]) + bytes(31), nh=58), 0x86DD), "ip", None),
    ("empty", b"", "drop", "malformed"),
    ("one byte", b"\x02", "drop", "malformed"),
    ("13 bytes", IP4[:13], "drop", "malformed"),
    ("ethernet header only, ipv4", IP4[:14], "drop", "malformed"),
    ("ethernet header only, ipv6", IP6[:14], "drop", "malformed"),
    ("ethernet header only, arp", ARP_REQ[:14], "drop", "malformed"),
    ("arp truncated to 41", ARP_REQ[:41], "drop", "malformed"),
    ("ipv6 in an ipv4 ethertype", eth(ipv6(A6, PEER6, udp(1, 2, b"x")), 0x0800), "drop",
     "malformed"),
    ("ipv4 in an ipv6 ethertype", eth(ipv4(A, PEER, udp(1, 2, b"x")), 0x86DD), "drop", "malformed"),
    ("version 5 in ipv4", IP4[:14] + b"\x55" + IP4[15:], "drop", "malformed"),
    ("ns cut at the type byte", NS[:55], "drop", "malformed"),
    ("ns cut short of the target", NS[:77], "drop", "malformed"),
    ("vlan 802.1q", eth(b"\x00\x05\x08\x00" + IP4[14:], 0x8100), "drop", "vlan"),
    ("qinq 802.1ad", eth(b"\x00\x05\x81\x00\x00\x06\x08\x00" + IP4[14:], 0x88A8), "drop", "vlan"),
    ("vlan header only", eth(b"", 0x8100), "drop", "vlan"),
    ("unknown ethertype (lldp)", eth(bytes(40), 0x88CC), "drop", "unknown_ethertype"),
    ("802.3 length field", eth(bytes(46), 46), "drop", "unknown_ethertype"),
    ("rarp", eth(arp(op=3), 0x8035), "drop", "unknown_ethertype"),
    ("ipv4 to broadcast mac", eth(IP4[14:], 0x0800, dst=BCAST), "drop", "not_mirrored"),
    ("ipv4 to multicast mac", eth(IP4[14:], 0x0800, dst=mac("01:00:5e:00:00:fb")), "drop",
     "not_mirrored"),
    ("ipv6 mld to multicast mac",
     eth(ipv6("fe80::1", "ff02::16", bytes([143]) + bytes(27), nh=58), 0x86DD,
         dst=mac("33:33:00:00:00:16")), "drop", "not_mirrored"),
    ("ipv6 router solicitation", eth(ipv6("fe80::1", "ff02::2", bytes([133]) + bytes(7), nh=58),
                                     0x86DD, dst=mac("33:33:00:00:00:02")), "drop", "not_mirrored"),
    ("ipv4 to group mac, header only", eth(b"", 0x0800, dst=BCAST), "drop", "malformed"),
]
IDS = [c[0] for c in CLASSIFY]


def pool_with(frames, o=0, stale=0xAB):
    pool = np.full((len(frames) + 3, SLOT), stale, np.uint8)
    slots = np.arange(len(frames), dtype=np.uint32) + 2
    for s, f in zip(slots, frames):
        f = bytes(o) + f
        pool[s, :len(f)] = np.frombuffer(f, np.uint8)
    lens = np.array([len(f) + o for f in frames], np.uint32)
    return pool, slots, lens


def vector(frames, o=0, stale=0xAB):
    pool, slots, lens = pool_with(frames, o, stale)
    kind, reason = classify_batch(pool, slots, lens, o)
    assert kind.dtype == reason.dtype == np.uint8
    return [_names(k, r) for k, r in zip(kind.tolist(), reason.tolist())]


def scalar(frame, o=0):
    buf = bytearray(bytes(o) + frame) + bytes(SLOT)
    return _names(*classify_frame(memoryview(buf), len(frame) + o, o))


REASON_NAME = {v: k for k, v in R.items()}


def _names(kind, reason):
    if kind == KIND_DROP:
        assert reason != 0
        return "drop", REASON_NAME[reason]
    assert reason == 0
    return KIND_NAMES[kind], None


@pytest.mark.parametrize("o", [0, VNET], ids=["plain", "vnet"])
@pytest.mark.parametrize("name,frame,kind,reason", CLASSIFY, ids=IDS)
def test_classify_table(name, frame, kind, reason, o):
    assert vector([frame], o) == [(kind, reason)]
    assert scalar(frame, o) == (kind, reason)


def test_whole_table_as_one_batch():
    frames = [c[1] for c in CLASSIFY]
    assert vector(frames) == [(c[2], c[3]) for c in CLASSIFY]


@pytest.mark.parametrize("frame", [IP4, IP6], ids=["ipv4", "ipv6"])
def test_uniform_batches_take_the_fast_path(frame):
    assert vector([frame] * 40) == [("ip", None)] * 40


def test_a_single_ns_in_an_ipv6_batch_is_not_lost_by_the_fast_path():
    assert vector([IP6] * 10 + [NS] + [IP6] * 5)[10] == ("ndp", None)


def test_reason_codes_follow_stats():
    """The Ethernet layer and the IP rule use the stats codes: 1 + the index."""
    assert {"vlan", "unknown_ethertype"} <= set(DROP_REASONS)
    from engine.packet.ip import R as R3
    assert R == R3 == {name: i + 1 for i, name in enumerate(DROP_REASONS)}


PADDING = [
    # bytes of Ethernet payload, IP length field, accepted
    (46, 46, True), (46, 28, True), (46, 20, True), (100, 100, True),
    (46, 47, False), (47, 28, False), (45, 28, False), (100, 99, False), (28, 46, False),
]


@pytest.mark.parametrize("have,claims,ok", PADDING)
def test_minimum_frame_padding_rule(have, claims, ok):
    """One rule for ints and arrays; TUN frames are never padded."""
    assert bool(headers.length_fits(claims, have, 20, tap=True)) is ok
    assert headers.length_fits(np.array([claims]), np.array([have]), 20, True).tolist() == [ok]
    assert bool(headers.length_fits(claims, have, 20, tap=False)) is (claims == have)


# ---- MAC swap ---------------------------------------------------------------------
@pytest.mark.parametrize("o", [0, VNET])
def test_swap_macs(o):
    frames = [IP4, IP6, eth(b"xyz", 0x0800, dst=mac("0a:0b:0c:0d:0e:0f"))]
    pool, slots, lens = pool_with(frames, o)
    before = pool.copy()
    swap_macs(pool, slots[:2], o)
    for s, f in zip(slots[:2], frames):
        got = bytes(pool[s, o:o + len(f)])
        assert got == f[6:12] + f[0:6] + f[12:]
    assert (pool[slots[2]] == before[slots[2]]).all(), "other slots untouched"
    assert (pool[:, :o] == before[:, :o]).all() and (pool[:, o + 12:] == before[:, o + 12:]).all()
    swap_macs(pool, slots[:2], o)
    assert (pool == before).all(), "swapping twice restores"
    swap_macs(pool, slots[:0], o)   # an empty selection is a no-op


def test_swap_macs_frame():
    buf = bytearray(bytes(VNET) + IP4)
    swap_macs_frame(memoryview(buf), VNET)
    assert bytes(buf) == bytes(VNET) + IP4[6:12] + IP4[:6] + IP4[12:]


# ---- ARP --------------------------------------------------------------------------
def test_arp_reply_field_by_field():
    out = arp_reply(ARP_REQ, 0, RULE4)
    assert len(out) == 42
    assert out[0:6] == HOST, "to the requester"
    assert out[6:12] == FAKE_PEER, "from the fake MAC of the target"
    assert out[12:14] == b"\x08\x06"
    htype, ptype, hlen, plen, op = struct.unpack("!HHBBH", out[14:22])
    assert (htype, ptype, hlen, plen, op) == (1, 0x0800, 6, 4, 2)
    assert out[22:28] == FAKE_PEER and out[28:32] == ipaddress.IPv4Address(PEER).packed
    assert out[32:38] == HOST and out[38:42] == ipaddress.IPv4Address(A).packed


def test_arp_reply_matches_a_reference():
    want = bytes.fromhex(
        "525400123456" "0200c6120005" "0806"           # Ethernet
        "0001" "0800" "06" "04" "0002"                 # Ethernet/IPv4, reply
        "0200c6120005" "c6120005"                      # sender: fake MAC, 198.18.0.5
        "525400123456" "c6120001")                     # target: requester, 198.18.0.1
    assert arp_reply(ARP_REQ, 0, RULE4) == want
    assert arp_reply(bytes(VNET) + ARP_REQ, VNET, RULE4) == bytes(VNET) + want
    assert arp_reply(ARP_REQ + bytes(18), 0, RULE4) == want, "padding is ignored"


def test_arp_reply_ignores_a_dirty_vnet_header():
    assert arp_reply(b"\x01" * VNET + ARP_REQ, VNET, RULE4)[:VNET] == bytes(VNET)


def test_arp_reply_for_the_last_peer_of_a_short_prefix():
    rule = ipaddress.IPv4Interface("198.18.0.1/30")
    out = arp_reply(eth(arp(tpa="198.18.0.2"), 0x0806, dst=BCAST), 0, rule)
    assert out[28:32] == ipaddress.IPv4Address("198.18.0.2").packed
    assert arp_reply(eth(arp(tpa="198.18.0.3"), 0x0806, dst=BCAST), 0, rule) is None


ARP_UNANSWERED = [
    ("reply, not request", eth(arp(op=2), 0x0806)),
    ("rarp op 3", eth(arp(op=3), 0x0806, dst=BCAST)),
    ("sender not the device", eth(arp(spa="198.18.0.2"), 0x0806, dst=BCAST)),
    ("arp probe from 0.0.0.0", eth(arp(spa="0.0.0.0"), 0x0806, dst=BCAST)),
    ("gratuitous (target = device)", eth(arp(tpa=A), 0x0806, dst=BCAST)),
    ("target network", eth(arp(tpa="198.18.0.0"), 0x0806, dst=BCAST)),
    ("target broadcast", eth(arp(tpa="198.18.0.255"), 0x0806, dst=BCAST)),
    ("target outside prefix", eth(arp(tpa="198.19.0.5"), 0x0806, dst=BCAST)),
    ("htype 6", eth(arp(htype=6), 0x0806, dst=BCAST)),
    ("ptype ipv6", eth(arp(ptype=0x86DD), 0x0806, dst=BCAST)),
    ("hlen 8", eth(arp(hlen=8), 0x0806, dst=BCAST)),
    ("plen 16", eth(arp(plen=16), 0x0806, dst=BCAST)),
    ("multicast sender MAC", eth(arp(sha=mac("01:00:5e:00:00:01")), 0x0806, dst=BCAST)),
    ("zero sender MAC", eth(arp(sha=ZERO_MAC), 0x0806, dst=BCAST)),
    ("truncated", ARP_REQ[:41]),
    ("not arp", eth(arp(), 0x0800, dst=BCAST)),
    ("empty", b""),
]


@pytest.mark.parametrize("name,frame", ARP_UNANSWERED, ids=[c[0] for c in ARP_UNANSWERED])
def test_arp_unanswered(name, frame):
    assert arp_reply(frame, 0, RULE4) is None
    assert arp_reply(bytes(VNET) + frame, VNET, RULE4) is None


def test_arp_without_ipv4_rule():
    assert arp_reply(ARP_REQ, 0, None) is None


# ---- neighbour discovery ----------------------------------------------------------
def fake6(addr: str) -> bytes:
    """The documented IPv6 fake MAC, recomputed here: 02 + SHA-256(address)[:5]."""
    return b"\x02" + hashlib.sha256(ipaddress.IPv6Address(addr).packed).digest()[:5]


def na_reference(target: str, to: str, to_mac: bytes = HOST) -> bytes:
    t, d = ipaddress.IPv6Address(target).packed, ipaddress.IPv6Address(to).packed
    m = fake6(target)
    icmp = bytes([136, 0, 0, 0, 0x60, 0, 0, 0]) + t + bytes([2, 1]) + m
    c = checksum(pseudo6(t, d, len(icmp)) + icmp)
    icmp = icmp[:2] + struct.pack("!H", c) + icmp[4:]
    ip = bytes.fromhex("60000000") + struct.pack("!H", len(icmp)) + b"\x3a\xff" + t + d
    return to_mac + m + b"\x86\xdd" + ip + icmp


def test_neighbour_advert_field_by_field():
    out = neighbour_advert(NS, 0, RULE6)
    assert len(out) == 14 + 40 + 32
    assert out[0:6] == HOST and out[6:12] == fake6(PEER6) and out[12:14] == b"\x86\xdd"
    ip = out[14:]
    assert ip[0] >> 4 == 6 and int.from_bytes(ip[4:6], "big") == 32
    assert ip[6] == 58 and ip[7] == 255
    assert ip[8:24] == ipaddress.IPv6Address(PEER6).packed, "from the target"
    assert ip[24:40] == ipaddress.IPv6Address(A6).packed, "to the solicitation's source"
    icmp = ip[40:]
    assert icmp[0] == 136 and icmp[1] == 0
    assert icmp[4] == 0x60, "Solicited and Override, not Router"
    assert icmp[5:8] == b"\0\0\0"
    assert icmp[8:24] == ipaddress.IPv6Address(PEER6).packed
    assert icmp[24:26] == b"\x02\x01" and icmp[26:32] == fake6(PEER6)
    assert checksum(pseudo6(ip[8:24], ip[24:40], len(icmp)) + icmp) == 0, "ICMPv6 checksum"


def test_neighbour_advert_matches_a_reference():
    want = na_reference(PEER6, A6)
    assert neighbour_advert(NS, 0, RULE6) == want
    assert neighbour_advert(bytes(VNET) + NS, VNET, RULE6) == bytes(VNET) + want


NS_ANSWERED = [
    ("solicited-node multicast", NS, A6),
    ("unicast NUD probe", ns(dst=PEER6, eth_dst=fake6(PEER6)), A6),
    ("without source link-layer option", ns(options=b""), A6),
    ("from link-local (NUD probe)", ns(src=LL6), LL6),
    ("high address", ns(target="2001:db8::ffff:ffff:ffff:ffff"), A6),
    ("with an unknown option", ns(options=b"\x01\x01" + HOST + b"\x0e\x01" + bytes(6)), A6),
]


@pytest.mark.parametrize("name,frame,to", NS_ANSWERED, ids=[c[0] for c in NS_ANSWERED])
def test_neighbour_advert_answered(name, frame, to):
    target = str(ipaddress.IPv6Address(frame[14 + 48:14 + 64]))
    assert neighbour_advert(frame, 0, RULE6) == na_reference(target, to)


NS_UNANSWERED = [
    ("dad from ::", ns(src="::", options=b"")),
    ("hop limit 64", ns(hop=64)),
    ("code 1", ns(code=1)),
    ("bad checksum", ns(bad_checksum=True)),
    ("target is the device", ns(target=A6)),
    ("target is the subnet-router anycast", ns(target="2001:db8::")),
    ("target outside prefix", ns(target="2001:db8:1::5")),
    ("target multicast", ns(target="ff02::1")),
    ("source another global address", ns(src="2001:db8::2")),
    ("source outside, global", ns(src="2001:db8:1::1")),
    ("destination unrelated", ns(dst="2001:db8::7")),
    ("destination another solicited-node group", ns(dst=solicited_node("2001:db8::7"))),
    ("zero-length option", ns(options=b"\x01\x00" + bytes(6))),
    ("option past the end", ns(options=b"\x01\x02" + HOST)),
    ("payload length short", ns(payload_length=24)),
    ("payload length long", ns(payload_length=40)),
    ("trailing bytes", ns() + b"\0\0"),
    ("multicast ethernet source", NS[:6] + mac("33:33:00:00:00:01") + NS[12:]),
    ("not ipv6 ethertype", NS[:12] + b"\x08\x00" + NS[14:]),
    ("next header not icmpv6", NS[:20] + b"\x11" + NS[21:]),
    ("truncated", NS[:77]),
    ("empty", b""),
]


@pytest.mark.parametrize("name,frame", NS_UNANSWERED, ids=[c[0] for c in NS_UNANSWERED])
def test_neighbour_advert_unanswered(name, frame):
    assert neighbour_advert(frame, 0, RULE6) is None
    assert neighbour_advert(bytes(VNET) + frame, VNET, RULE6) is None


def test_ns_without_ipv6_rule():
    assert neighbour_advert(NS, 0, None) is None


# ---- fake MACs --------------------------------------------------------------------
def test_fake_mac_values_are_stable():
    assert fake_mac(ipaddress.ip_address(PEER)) == FAKE_PEER
    assert fake_mac(PEER) == FAKE_PEER
    assert fake_mac(ipaddress.ip_address(PEER6)) == fake6(PEER6)
    assert fake6(PEER6) == mac("02:91:ad:17:4a:c4"), "pinned: neighbour tables survive restarts"


def test_fake_macs_are_unicast_locally_administered_and_distinct():
    v4 = [fake_mac(a) for a in RULE4.network.hosts()]
    v6 = [fake_mac(RULE6.network[i]) for i in {*range(1, 2000), *(1 << k for k in range(64))}]
    for m in v4 + v6:
        assert len(m) == 6 and m[0] & 1 == 0 and m[0] & 2 == 2
    assert len(set(v4)) == len(v4) and len(set(v6)) == len(v6)


# ---- checksum ---------------------------------------------------------------------
@given(st.binary(max_size=200))
def test_internet_checksum_agrees_with_reference(data):
    assert neighbours.internet_checksum(data) == checksum(data)
    # a message carrying its own checksum verifies to 0
    c = neighbours.internet_checksum(data + b"\0" * (len(data) % 2) + b"\0\0")
    assert neighbours.internet_checksum(data + b"\0" * (len(data) % 2) + struct.pack("!H", c)) == 0


# ---- properties -------------------------------------------------------------------
def mutated(base: bytes):
    return st.tuples(st.integers(0, len(base) + 4), st.binary(max_size=6),
                     st.integers(-10, 4)).map(
        lambda t: (base[:t[0]] + t[1] + base[t[0] + len(t[1]):])[:max(0, len(base) + t[2])])


frames_strategy = st.one_of(
    st.binary(max_size=100),
    mutated(IP4), mutated(IP6), mutated(ARP_REQ), mutated(NS),
    st.sampled_from([c[1] for c in CLASSIFY]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frames_strategy, min_size=1, max_size=20), st.sampled_from([0, VNET]),
       st.integers(0, 255))
def test_vector_and_scalar_agree_on_any_bytes(frames, o, stale):
    got = vector(frames, o, stale)
    assert got == [scalar(f, o) for f in frames]
    assert got == vector(frames, o, 255 - stale), "stale pool bytes never change a verdict"


def well_formed_arp_reply(out: bytes, req: bytes) -> bool:
    target = ipaddress.IPv4Address(out[28:32])
    return (len(out) == 42 and out[12:14] == b"\x08\x06" and out[20:22] == b"\0\2"
            and out[6:12] == out[22:28] == fake_mac(target) and out[0:6] == out[32:38]
            and target in RULE4.network and target != RULE4.ip
            and out[38:42] == RULE4.ip.packed and out[32:38] == req[22:28])


def well_formed_na(out: bytes) -> bool:
    ip, icmp = out[14:], out[54:]
    return (len(out) == 86 and out[12:14] == b"\x86\xdd" and ip[7] == 255 and icmp[0] == 136
            and checksum(pseudo6(ip[8:24], ip[24:40], len(icmp)) + icmp) == 0
            and ip[8:24] == icmp[8:24] and ipaddress.IPv6Address(ip[8:24]) in RULE6.network
            and out[6:12] == icmp[26:32] == fake_mac(ipaddress.IPv6Address(ip[8:24])))


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=100), mutated(ARP_REQ), mutated(NS),
                 mutated(ns(src=LL6)), mutated(ns(dst=PEER6))))
def test_slow_path_never_raises_and_answers_well_formed(frame):
    out = arp_reply(frame, 0, RULE4)
    assert out is None or well_formed_arp_reply(out, frame)
    out = neighbour_advert(frame, 0, RULE6)
    assert out is None or well_formed_na(out)
    assert neighbour_advert(frame, 0, RULE6) == neighbour_advert(bytearray(frame), 0, RULE6)


# ---- mode probe -------------------------------------------------------------------
def sysfs(tmp_path, name, text):
    d = tmp_path / name
    d.mkdir()
    (d / "tun_flags").write_text(text)
    return str(tmp_path)


@pytest.mark.parametrize("text,want", [
    ("0x1001\n", "tun"),         # IFF_TUN | IFF_NO_PI (ip tuntap add mode tun)
    ("0x1002\n", "tap"),         # IFF_TAP | IFF_NO_PI (ip tuntap add mode tap)
    ("0x5902\n", "tap"),         # + VNET_HDR, PERSIST, MULTI_QUEUE
    ("0x3\n", None), ("0x1000\n", None), ("garbage\n", None), ("", None),
])
def test_device_mode_from_sysfs(tmp_path, text, want):
    root = sysfs(tmp_path, "dev0", text)
    assert mode.device_mode("dev0", root) == want


def test_device_mode_absent(tmp_path):
    (tmp_path / "eth0").mkdir()   # a device that is not tun/tap has no tun_flags
    assert mode.device_mode("eth0", str(tmp_path)) is None
    assert mode.device_mode("nope", str(tmp_path)) is None
    assert mode.device_mode("../etc", str(tmp_path)) is None
    assert mode.device_mode("", str(tmp_path)) is None


def test_attach_order(tmp_path):
    root = sysfs(tmp_path, "tap0", "0x1002\n")
    assert mode.attach_order("tap0", None, root) == ("tap", "tun")
    assert mode.attach_order("tap0", "tun", root) == ("tap", "tun"), "the device's mode wins"
    assert mode.attach_order("new0", "tap", root) == ("tap", "tun")
    assert mode.attach_order("new0", None, root) == ("tun", "tap")


def test_mode_from_flags():
    from engine.tun import linux_abi as abi
    assert (mode.IFF_TUN, mode.IFF_TAP) == (abi.IFF_TUN, abi.IFF_TAP)
    assert mode.mode_from_flags(abi.IFF_TAP | abi.IFF_NO_PI | abi.IFF_VNET_HDR) == "tap"
    assert mode.mode_from_flags(abi.IFF_TUN | abi.IFF_NO_PI) == "tun"
    assert mode.mode_from_flags(0) is None


# ---- the L3 rule in TAP mode -------------------------------------------------------
def tap_rule(vnet: int = 0):
    from engine.packet.ip import Mirror
    return Mirror(RULE4, RULE6, vnet_hdr_len=vnet, l2_hdr_len=headers.ETH_HLEN)


def mirror_both(rule, frame):
    """(vector reason, vector output), (scalar reason, scalar output) for one frame."""
    from engine.packet.ip import mirror_batch, mirror_frame
    o = rule.vnet_hdr_len
    pool, slots, lens = pool_with([frame], o)
    (r,) = mirror_batch(rule, pool, slots, lens).tolist()
    buf = bytearray(bytes(o) + frame) + bytes(SLOT)
    r1 = mirror_frame(rule, memoryview(buf), len(frame) + o)
    return ((REASON_NAME.get(r, "forward"), bytes(pool[slots[0], o:o + len(frame)])),
            (REASON_NAME.get(r1, "forward"), bytes(buf[o:o + len(frame)])))


def mirrored(frame: bytes) -> bytes:
    """The expected output: MACs swapped, IP source and destination swapped."""
    ip = frame[14:]
    a, n = (12, 4) if ip[0] >> 4 == 4 else (8, 16)
    ip = ip[:a] + ip[a + n:a + 2 * n] + ip[a:a + n] + ip[a + 2 * n:]
    return frame[6:12] + frame[0:6] + frame[12:14] + ip


SMALL4 = eth(ipv4(A, PEER, udp(1, 2, b"x")), 0x0800)          # 43 bytes: padded to 60 on a wire
SMALL6 = eth(ipv6(A6, PEER6, b"", nh=59), 0x86DD)               # 54 bytes: no next header
TAP_MIRROR = [
    # name, frame, expected reason
    ("ipv4", IP4, "forward"),
    ("ipv6", IP6, "forward"),
    ("ipv4 padded to 60", SMALL4 + bytes(60 - len(SMALL4)), "forward"),
    ("ipv6 padded to 60", SMALL6 + bytes(6), "forward"),
    ("ipv4 unpadded short frame", SMALL4, "forward"),
    ("ipv4 padded to 61", SMALL4 + bytes(61 - len(SMALL4)), "malformed"),
    ("ipv4 padded to 59", SMALL4 + bytes(59 - len(SMALL4)), "malformed"),
    ("ipv4 of exactly 46 with a longer length field",
     eth(ipv4(A, PEER, udp(1, 2, bytes(18)), total_length=47), 0x0800), "malformed"),
    ("ipv4 length field below its header in a 60-byte frame",
     eth(ipv4(A, PEER, udp(1, 2, bytes(18)), total_length=19), 0x0800), "malformed"),
    ("ipv4 trailing bytes in a long frame", IP4 + b"\0\0", "malformed"),
    ("ipv4 to another peer", eth(ipv4(A, "198.18.0.77", tcp(1, 2), proto=6), 0x0800), "forward"),
]


@pytest.mark.parametrize("vnet", [0, VNET], ids=["plain", "vnet"])
@pytest.mark.parametrize("name,frame,want", TAP_MIRROR, ids=[c[0] for c in TAP_MIRROR])
def test_tap_mirror_table(name, frame, want, vnet):
    rule = tap_rule(vnet)
    (rv, out), (rs, out_s) = mirror_both(rule, frame)
    assert rv == rs == want
    assert out == out_s == (mirrored(frame) if want == "forward" else frame)


def test_tap_mirror_vnet_checksum_span_counts_the_ethernet_header():
    """csum_start is relative to the Ethernet header in TAP mode: a pure TCP ACK whose
    checksum field sits in the last bytes of the frame is valid."""
    from packets import vnet as vnet_hdr
    rule = tap_rule(VNET)
    frame = eth(ipv4(A, PEER, tcp(1, 2), proto=6), 0x0800)     # 14 + 20 + 20 = 54 bytes
    hdr = vnet_hdr(flags=1, csum_start=14 + 20, csum_offset=16)
    pool, slots, lens = pool_with([hdr + frame])
    from engine.packet.ip import mirror_batch
    assert mirror_batch(rule, pool, slots, lens).tolist() == [0]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(mutated(IP4), mutated(IP6), mutated(SMALL4 + bytes(17)),
                          st.binary(max_size=80)), min_size=1, max_size=12))
def test_tap_mirror_vector_and_scalar_agree(frames):
    from engine.packet.ip import mirror_batch, mirror_frame
    rule = tap_rule()
    pool, slots, lens = pool_with(frames)
    got = mirror_batch(rule, pool, slots, lens).tolist()
    for frame, r, s in zip(frames, got, slots):
        buf = bytearray(frame) + bytes(SLOT)
        assert mirror_frame(rule, memoryview(buf), len(frame)) == r
        assert bytes(pool[s, :len(frame)]) == bytes(buf[:len(frame)])
        if r == 0:
            assert bytes(buf[:len(frame)]) == mirrored(frame)
