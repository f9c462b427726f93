"""Flow hash (engine/packet/flow.py): vector and scalar agree; a flow never changes worker; fragments stay together."""
import ipaddress

import numpy as np
from hypothesis import given, settings, strategies as st

from engine.packet import Pool, worker_of
from engine.packet.flow import worker_of_batch, worker_of_frame
from packets import ipv4, ipv6, tcp, udp, vnet


def place(frames, o=0):
    pool = np.zeros((len(frames), 128), np.uint8)
    for i, f in enumerate(frames):
        f = f[:128]
        pool[i, :len(f)] = np.frombuffer(f, np.uint8)
    return pool, np.arange(len(frames), dtype=np.uint32), np.array(
        [min(len(f), 128) for f in frames], np.uint32)


def both(frames, workers, o=0):
    pool, slots, lens = place(frames, o)
    vec = worker_of_batch(pool, slots, lens, o, workers).tolist()
    sca = [worker_of_frame(memoryview(pool[i]), int(lens[i]), o, workers) for i in range(len(frames))]
    assert vec == sca
    views = [memoryview(row) for row in pool]
    assert worker_of(Pool(pool, views), slots, lens, o, workers).tolist() == vec
    return vec


def test_tcp_ports_spread_flows_over_workers():
    frames = [ipv4("198.18.0.1", "198.18.0.5", tcp(40000 + i, 5201), proto=6) for i in range(64)]
    assert len(set(both(frames, 4))) == 4


def test_udp_flows_hash_on_addresses_only():
    frames = [ipv4("198.18.0.1", "198.18.0.5", udp(40000 + i, 53, b"x")) for i in range(16)]
    assert len(set(both(frames, 4))) == 1


def test_fragments_of_a_datagram_stay_together():
    """The first fragment carries ports, later ones do not: all go to one worker."""
    payload = tcp(40000, 80)
    first = ipv4("198.18.0.1", "198.18.0.7", payload, proto=6, ident=9, frag=0x2000)  # MF
    later = ipv4("198.18.0.1", "198.18.0.7", b"\x99" * 16, proto=6, ident=9, frag=3)
    whole = ipv4("198.18.0.1", "198.18.0.7", payload, proto=6, frag=0x4000)  # DF: not a fragment
    w = both([first, later, whole], 64)
    assert w[0] == w[1]


def test_ipv6_and_vnet_offset():
    frames = [vnet() + ipv6("2001:db8::1", f"2001:db8::{i:x}", tcp(i, 80), nh=6) for i in range(2, 40)]
    assert len(set(both(frames, 4, o=10))) > 1


def test_one_worker_is_always_zero():
    assert both([b"", b"\x45", ipv4("1.1.1.1", "2.2.2.2")], 1) == [0, 0, 0]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=100), min_size=1, max_size=30), st.integers(1, 8))
def test_vector_and_scalar_agree_on_any_bytes(frames, workers):
    w = both(frames, workers)
    assert all(0 <= x < workers for x in w)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 2**16 - 1), min_size=1, max_size=20))
def test_same_flow_same_worker_in_any_batch(sports):
    frames = [ipv4("198.18.0.1", "198.18.0.9", tcp(s, 80), proto=6) for s in sports]
    alone = [both([f], 4)[0] for f in frames]
    assert both(frames, 4) == alone


def test_peers_of_one_device_spread_over_workers():
    """UDP to different peers (only the last address byte differs) must not all land on
    one worker."""
    frames = [ipv4("198.18.0.1", f"198.18.0.{i}", udp(999, 7, b"x")) for i in range(2, 66)]
    counts = [both(frames, 4).count(w) for w in range(4)]
    assert min(counts) >= 6, counts


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.sampled_from([6, 17, 1, 6]),
                          st.integers(0, 2**16 - 1), st.sampled_from([0, 0x4000, 0x2000, 5]),
                          st.sampled_from([b"", b"\x01" * 4]), st.integers(0, 20)),
                min_size=1, max_size=40),
       st.integers(2, 8))
def test_vector_and_scalar_agree_on_ipv4_batches(rows, workers):
    """IPv4 batches: with and without options, TCP and not, fragments and not, frames cut
    short of the ports; the vector form's short path (no options, every frame at least
    24 bytes) and its general path must both agree with the scalar form."""
    frames = []
    for dst, proto, sport, frag, options, cut in rows:
        f = ipv4("198.18.0.1", str(ipaddress.IPv4Address(dst)), tcp(sport, 80), proto=proto,
                 frag=frag, options=options)
        frames.append(f[:len(f) - cut] if cut else f)
    both(frames, workers)
