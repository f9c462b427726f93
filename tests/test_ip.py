"""The mirror rule over crafted packets: table-driven, then property-tested."""
import ipaddress

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from engine.packet.ip import FORWARD, R, Mirror, mirror_batch, mirror_frame, reflect
from packets import ipv4, ipv6, swapped4, swapped6, tcp, udp, vnet

RULE = Mirror(ipaddress.ip_interface("198.18.0.1/24"), ipaddress.ip_interface("2001:db8::1/64"))
A, PEER = "198.18.0.1", "198.18.0.5"
A6, PEER6 = "2001:db8::1", "2001:db8::5"
GOOD4 = ipv4(A, PEER, udp(1000, 2000, b"hello"))
GOOD6 = ipv6(A6, PEER6, udp(1000, 2000, b"hello"))
SLOT = 256


def run_batch(frames, rule=RULE, stale=0xAB):
    """Vector path over frames placed in a pool whose bytes past each frame are stale."""
    pool = np.full((max(len(frames), 1) + 3, SLOT), stale, np.uint8)
    slots = np.arange(len(frames), dtype=np.uint32) + 2
    for s, f in zip(slots, frames):
        pool[s, :len(f)] = np.frombuffer(f, np.uint8)
    lens = np.array([len(f) for f in frames], np.uint32)
    reasons = mirror_batch(rule, pool, slots, lens)
    return [R_NAME[r] for r in reasons], [bytes(pool[s, :len(f)]) for s, f in zip(slots, frames)]


def run_scalar(frame, rule=RULE):
    buf = bytearray(frame) + bytes(SLOT - len(frame))
    r = mirror_frame(rule, memoryview(buf), len(frame))
    return R_NAME[r], bytes(buf[:len(frame)])


R_NAME = {FORWARD: "forward", **{v: k for k, v in R.items()}}

CASES = [
    # name, frame, expected reason, expected output (when forwarded)
    ("ipv4 udp", GOOD4, "forward", swapped4(GOOD4)),
    ("ipv4 tcp", ipv4(A, "198.18.0.9", tcp(40000, 8080), proto=6), "forward", None),
    ("ipv4 options", ipv4(A, PEER, udp(1, 2, b"x"), options=b"\x01\x01\x01\x00"), "forward", None),
    ("ipv4 option list", ipv4(A, PEER, udp(1, 2, b"x"), options=b"\x94\x04\x00\x00\x01\x00\x00\x00"),
     "forward", None),                                    # router alert, NOP, end, padding
    ("ipv4 option past header", ipv4(A, PEER, udp(1, 2, b"x"), options=b"\x07\x0f\x04\x00"),
     "malformed", None),
    ("ipv4 option length 1", ipv4(A, PEER, udp(1, 2, b"x"), options=b"\x83\x01\x00\x00"),
     "malformed", None),
    ("ipv4 option cut at type", ipv4(A, PEER, udp(1, 2, b"x"), options=b"\x01\x01\x01\x44"),
     "malformed", None),
    ("ipv6 udp", GOOD6, "forward", swapped6(GOOD6)),
    ("empty", b"", "malformed", None),
    ("one byte v4", b"\x45", "malformed", None),
    ("truncated v4 header", GOOD4[:19], "malformed", None),
    ("truncated v6 header", GOOD6[:39], "malformed", None),
    ("version 5", b"\x55" + GOOD4[1:], "not_ip", None),
    ("version 0", bytes(40), "not_ip", None),
    ("ihl 4", ipv4(A, PEER, udp(1, 2, b"x"), ihl=4), "malformed", None),
    ("ihl past frame", ipv4(A, PEER, b"", ihl=15, total_length=20), "malformed", None),
    ("total length short", ipv4(A, PEER, udp(1, 2, b"xyz"), total_length=30), "malformed", None),
    ("total length long", ipv4(A, PEER, udp(1, 2, b"xyz"), total_length=400), "malformed", None),
    ("trailing bytes", GOOD4 + b"\0\0", "malformed", None),
    ("bad checksum", ipv4(A, PEER, udp(1, 2, b"x"), bad_checksum=True), "bad_checksum", None),
    ("v6 payload length short", ipv6(A6, PEER6, udp(1, 2, b"x"), payload_length=3), "malformed", None),
    ("v6 jumbogram", ipv6(A6, PEER6, udp(1, 2, b"x"), payload_length=0), "malformed", None),
    ("v6 trailing bytes", GOOD6 + b"\0", "malformed", None),
    ("src not device", ipv4("198.18.0.2", PEER, udp(1, 2, b"x")), "not_mirrored", None),
    ("dst outside prefix", ipv4(A, "198.19.0.5", udp(1, 2, b"x")), "not_mirrored", None),
    ("dst network", ipv4(A, "198.18.0.0", udp(1, 2, b"x")), "not_mirrored", None),
    ("dst broadcast", ipv4(A, "198.18.0.255", udp(1, 2, b"x")), "not_mirrored", None),
    ("dst self", ipv4(A, A, udp(1, 2, b"x")), "not_mirrored", None),
    ("dst limited broadcast", ipv4(A, "255.255.255.255", udp(1, 2, b"x")), "not_mirrored", None),
    ("dst multicast", ipv4(A, "224.0.0.251", udp(1, 2, b"x")), "not_mirrored", None),
    ("v6 src not device", ipv6("2001:db8::2", PEER6, udp(1, 2, b"x")), "not_mirrored", None),
    ("v6 dst outside", ipv6(A6, "2001:db8:1::5", udp(1, 2, b"x")), "not_mirrored", None),
    ("v6 dst subnet anycast", ipv6(A6, "2001:db8::", udp(1, 2, b"x")), "not_mirrored", None),
    ("v6 dst self", ipv6(A6, A6, udp(1, 2, b"x")), "not_mirrored", None),
    ("v6 multicast", ipv6("fe80::1", "ff02::2", b"\x85\0\0\0\0\0\0\0", nh=58), "not_mirrored", None),
    ("v6 link-local src", ipv6("fe80::1", PEER6, udp(1, 2, b"x")), "not_mirrored", None),
]


@pytest.mark.parametrize("name,frame,want,out", CASES, ids=[c[0] for c in CASES])
def test_rule_table(name, frame, want, out):
    (got,), (data,) = run_batch([frame])
    assert got == want
    assert run_scalar(frame)[0] == want
    if want == "forward":
        assert data == (out or (swapped4(frame) if frame[0] >> 4 == 4 else swapped6(frame)))
    else:
        assert data == frame, "a dropped frame is left untouched"


def test_whole_table_as_one_batch():
    """Mixed versions and drops in one batch take the slow path; same verdicts."""
    frames = [c[1] for c in CASES]
    got, _ = run_batch(frames)
    assert got == [c[2] for c in CASES]


def test_uniform_batches_take_the_fast_path():
    got, data = run_batch([GOOD4] * 40)
    assert got == ["forward"] * 40 and set(data) == {swapped4(GOOD4)}
    got, data = run_batch([GOOD6] * 40)
    assert got == ["forward"] * 40 and set(data) == {swapped6(GOOD6)}


def test_swapping_twice_is_refused():
    """A reflected frame reflected again would claim a peer as source: not mirrored."""
    (r1,), (once,) = run_batch([GOOD4])
    (r2,), _ = run_batch([once])
    assert (r1, r2) == ("forward", "not_mirrored")


def test_no_ipv6_address_means_no_ipv6_mirror():
    rule = Mirror(ipaddress.ip_interface("198.18.0.1/24"))
    assert run_batch([GOOD6], rule)[0] == ["not_mirrored"]


def test_short_prefix_broadcast_and_network():
    rule = Mirror(ipaddress.ip_interface("198.18.0.1/30"))
    frames = [ipv4(A, d, udp(1, 2, b"x")) for d in ("198.18.0.2", "198.18.0.3", "198.18.0.0")]
    assert run_batch(frames, rule)[0] == ["forward", "not_mirrored", "not_mirrored"]


VNET_RULE = Mirror(RULE.address, RULE.address6, vnet_hdr_len=10)
VNET_CASES = [
    ("plain", vnet() + GOOD4, "forward"),
    ("needs csum ok", vnet(flags=1, csum_start=20, csum_offset=6) + GOOD4, "forward"),
    ("tcpv4 gso", vnet(gso_type=1, gso_size=1448) + GOOD4, "forward"),
    ("tcpv4 gso ecn", vnet(gso_type=0x81, gso_size=1448) + GOOD4, "forward"),
    ("tcpv6 on v4", vnet(gso_type=4) + GOOD4, "bad_vnet_hdr"),
    ("tcpv6 on v6", vnet(gso_type=4) + GOOD6, "forward"),
    ("udp_l4 on v6", vnet(gso_type=5) + GOOD6, "forward"),
    ("ufo (not enabled)", vnet(gso_type=3) + GOOD4, "bad_vnet_hdr"),
    ("csum span past end", vnet(flags=1, csum_start=30, csum_offset=16) + GOOD4, "bad_vnet_hdr"),
    ("only the vnet header", vnet(), "malformed"),
    ("short vnet header", b"\0" * 5, "malformed"),
    ("vnet + bad ip", vnet() + GOOD4[:10], "malformed"),
]


@pytest.mark.parametrize("name,frame,want", VNET_CASES, ids=[c[0] for c in VNET_CASES])
def test_vnet_table(name, frame, want):
    (got,), (data,) = run_batch([frame], VNET_RULE)
    assert got == want
    assert run_scalar(frame, VNET_RULE)[0] == want
    if want == "forward":
        assert data[:10] == frame[:10], "the virtio header goes back as it came"
        assert data[10:] == (swapped4(frame[10:]) if frame[10] >> 4 == 4 else swapped6(frame[10:]))


# ---- properties -----------------------------------------------------------------
def well_formed_output(frame: bytes, rule) -> bool:
    """What leaves the engine: a valid IPv4/IPv6 packet whose source is a peer in the
    prefix and whose destination is the device address."""
    o = rule.vnet_hdr_len
    p = frame[o:]
    if p[0] >> 4 == 4:
        from packets import checksum
        ihl = (p[0] & 15) * 4
        return (checksum(p[:ihl]) == 0 and int.from_bytes(p[2:4], "big") == len(p)
                and p[16:20] == rule.address.ip.packed
                and ipaddress.IPv4Address(p[12:16]) in rule.address.network)
    return (len(p) == 40 + int.from_bytes(p[4:6], "big")
            and p[24:40] == rule.address6.ip.packed
            and ipaddress.IPv6Address(p[8:24]) in rule.address6.network)


def mutated(base: bytes):
    return st.tuples(st.integers(0, len(base) + 4), st.binary(max_size=6),
                     st.integers(-8, 8)).map(
        lambda t: (base[:t[0]] + t[1] + base[t[0] + len(t[1]):])[:max(0, len(base) + t[2])])


frames_strategy = st.one_of(
    st.binary(max_size=120),
    mutated(GOOD4), mutated(GOOD6),
    mutated(ipv4(A, PEER, tcp(1, 2), proto=6)),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frames_strategy, min_size=1, max_size=20))
def test_any_bytes_are_forwarded_well_formed_or_dropped(frames):
    frames = [f[:SLOT] for f in frames]
    got, data = run_batch(frames)
    for frame, reason, out in zip(frames, got, data):
        scalar_reason, scalar_out = run_scalar(frame)
        assert reason == scalar_reason, "vector and scalar paths agree"
        assert out == scalar_out
        if reason == "forward":
            assert well_formed_output(out, RULE)
        else:
            assert out == frame


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=80), mutated(vnet() + GOOD4),
                          mutated(vnet(gso_type=4, flags=1, csum_start=40, csum_offset=6) + GOOD6)),
                min_size=1, max_size=12))
def test_vnet_any_bytes(frames):
    got, data = run_batch(frames, VNET_RULE)
    for frame, reason, out in zip(frames, got, data):
        assert run_scalar(frame, VNET_RULE) == (reason, out)
        if reason == "forward":
            assert well_formed_output(out, VNET_RULE)


@given(st.binary(min_size=0, max_size=64), st.integers(0, 255))
def test_stale_slot_bytes_never_change_the_verdict(frame, stale):
    """Bytes past a frame's end (left by an earlier, longer frame) are never judged."""
    assert run_batch([frame], stale=stale)[0] == run_batch([frame], stale=255 - stale)[0]


def test_reflect_swaps_the_addresses_of_either_version_and_leaves_anything_else():
    """reflect() (the rehearsal's un-swap) is its own inverse, and a mirrored frame is the
    reflection of the frame as read."""
    v4 = ipv4("198.18.0.1", "198.18.0.5", udp(1, 2, b"x"))
    v6 = ipv6("2001:db8::1", "2001:db8::5", udp(1, 2, b"x"))
    for pkt, mirrored in ((v4, swapped4(v4)), (v6, swapped6(v6))):
        buf = bytearray(bytes(3) + pkt)
        reflect(buf, 3)
        assert bytes(buf[3:]) == mirrored
        reflect(buf, 3)
        assert bytes(buf[3:]) == pkt
    junk = bytearray(b"\x50" + bytes(59))
    reflect(junk, 0)
    assert junk == bytearray(b"\x50" + bytes(59))


# ---- the all-forward IPv4 batch (ip._forward_all4) ---------------------------
def good4(i: int, payload: int = 5) -> bytes:
    return ipv4(A, f"198.18.0.{2 + i % 250}", udp(1000 + i, 2000, b"p" * payload))


@pytest.mark.parametrize("name,frame,want,out", CASES, ids=[c[0] for c in CASES])
def test_one_bad_frame_among_good_ipv4_gets_its_own_verdict(name, frame, want, out):
    """The all-forward shortcut either takes the whole batch or none of it: one frame
    anywhere in a batch of good IPv4 frames gets the verdict it gets alone."""
    for at in (0, 3, 6):
        frames = [good4(i) for i in range(6)]
        frames.insert(at, frame)
        got, data = run_batch(frames)
        assert got == ["forward"] * at + [want] + ["forward"] * (6 - at)
        assert [d for k, d in enumerate(data) if k != at] == \
            [swapped4(f) for k, f in enumerate(frames) if k != at]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, 200), min_size=1, max_size=12), st.data())
def test_good_ipv4_batches_with_a_mutation_agree_with_the_scalar_rule(sizes, data):
    for rule, head in ((RULE, b""), (VNET_RULE, vnet())):
        frames = [head + good4(i, n) for i, n in enumerate(sizes)]
        if data.draw(st.booleans()):
            k = data.draw(st.integers(0, len(frames) - 1))
            frames[k] = data.draw(mutated(frames[k]))[:SLOT]
        got, out = run_batch(frames, rule)
        assert [(g, o) for g, o in zip(got, out)] == [run_scalar(f, rule) for f in frames]


def test_a_header_completed_by_stale_slot_bytes_is_malformed_in_any_batch():
    """A 16-byte frame whose length field says 16 and whose checksum counts the 4 stale
    bytes after it (a destination left in the slot by an earlier frame) is a truncated
    header, alone or among good frames, never a frame to reflect."""
    whole = ipv4(A, PEER, total_length=16)    # the checksum covers all 20 bytes
    for batch in ([whole], [good4(1), whole, good4(2)]):
        pool = np.zeros((len(batch) + 1, SLOT), np.uint8)
        for s, f in enumerate(batch):
            pool[s, :len(f)] = np.frombuffer(f, np.uint8)
        slots = np.arange(len(batch), dtype=np.uint32)
        lens = np.array([16 if f is whole else len(f) for f in batch], np.uint32)
        got = [R_NAME[r] for r in mirror_batch(RULE, pool, slots, lens)]
        assert got == ["forward" if f is not whole else "malformed" for f in batch]
