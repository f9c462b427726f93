"""TAP mode end to end (issue 7): a tap device made with iproute2 in the test's own
namespace, `python -m engine` attached to it (finding the mode by itself), real clients.

    ping / sockets --> tap0 (198.18.0.1/24, 2001:db8::1/64) --ARP/NS--> engine answers
                                                                 with fake_mac(peer)
          ^                                                          |
          +-- local stack <-- Ethernet: fake MAC -> tap0's MAC <-----+  (IP and MACs swapped)
"""
import json
import re
import signal
import time

import pytest

from netns import Engine, Netns

pytestmark = pytest.mark.privileged

PEER, PEER6 = "198.18.0.5", "2001:db8::5"
FAKE_PEER = "02:00:c6:12:00:05"       # engine.packet.fake_mac(198.18.0.5): 02:00 + address
FAKE_PEER6 = "02:91:ad:17:4a:c4"      # engine.packet.fake_mac(2001:db8::5): 02 + sha256[:5]


def make_tap(ns: Netns, name: str = "tap0") -> None:
    ns.sh(f"ip tuntap add dev {name} mode tap")
    ns.sh(f"ip addr add 198.18.0.1/24 dev {name}")
    ns.sh(f"ip -6 addr add 2001:db8::1/64 dev {name} nodad")
    ns.sh(f"ip link set {name} up")


@pytest.fixture(scope="module")
def tap():
    ns = Netns()
    try:
        make_tap(ns)
        eng = Engine(ns, "--workers", "2", device="tap0")   # no --mode: found from the device
        ns.assert_isolated("tap0")
        yield ns, eng
    finally:
        ns.close()


def ping(ns, *args, count=3):
    return ns.run("ping", *args, "-c", str(count), "-i", "0.05", "-W", "2", timeout=30)


def test_ping_ipv4(tap):
    ns, _ = tap
    p = ping(ns, PEER, count=5)
    assert p.returncode == 0 and " 0% packet loss" in p.stdout, p.stdout + p.stderr
    assert f"from {PEER}" in p.stdout


def test_ping_ipv6(tap):
    ns, _ = tap
    p = ping(ns, "-6", PEER6, count=5)
    assert p.returncode == 0 and " 0% packet loss" in p.stdout, p.stdout + p.stderr
    assert f"from {PEER6}" in p.stdout


def neighbour(ns, addr: str) -> str:
    out = ns.sh("ip neigh show dev tap0")
    line = next((ln for ln in out.splitlines() if ln.split()[:1] == [addr]), "")
    return line


def test_neighbour_table_shows_the_fake_macs(tap):
    ns, _ = tap
    assert ping(ns, PEER, count=1).returncode == 0
    line = neighbour(ns, PEER)
    assert f"lladdr {FAKE_PEER}" in line, ns.sh("ip neigh show dev tap0")
    assert re.search(r"REACHABLE|STALE|DELAY|PROBE", line), line
    assert ping(ns, "-6", PEER6, count=1).returncode == 0
    line = neighbour(ns, PEER6)
    assert f"lladdr {FAKE_PEER6}" in line, ns.sh("ip -6 neigh show dev tap0")


def test_every_peer_gets_its_own_mac(tap):
    ns, _ = tap
    for last in (6, 200, 254):
        assert ping(ns, f"198.18.0.{last}", count=1).returncode == 0
        assert f"lladdr 02:00:c6:12:00:{last:02x}" in neighbour(ns, f"198.18.0.{last}")


def test_tcp_transfer_hash(tap):
    ns, _ = tap
    ns.tcp_transfer("198.18.0.9", 8080, 8 << 20)


def test_tcp_transfer_ipv6(tap):
    ns, _ = tap
    ns.tcp_transfer("2001:db8::9", 8081, 4 << 20)


def test_udp_echo(tap):
    ns, _ = tap
    r = json.loads(ns.tool("udp-echo", "--peer", PEER, "--port", "7", "--count", "200"))
    assert r["echoed"] == 200 and r["peer"] == PEER
    r = json.loads(ns.tool("udp-echo", "--peer", PEER6, "--port", "7", "--count", "50"))
    assert r["echoed"] == 50


def test_no_answer_for_the_network_broadcast_or_outside(tap):
    """ARP for the broadcast address or a prefix routed in but not mirrored stays
    unanswered: nothing comes back, and the entry never gets a MAC."""
    ns, _ = tap
    ns.sh("ip route replace 198.19.0.0/24 dev tap0")
    p = ping(ns, "198.19.0.5", count=2)
    assert p.returncode != 0 and "0 received" in p.stdout
    assert "lladdr" not in neighbour(ns, "198.19.0.5")
    p = ping(ns, "-b", "198.18.0.255", count=2)
    assert "0 received" in p.stdout


def wait_dad(ns, dev: str, timeout: float = 6.0) -> str:
    """`ip -6 addr` of `dev` once no address is tentative (DAD done), bounded in time."""
    deadline = time.time() + timeout
    while True:
        out = ns.sh(f"ip -6 addr show dev {dev}")
        if "tentative" not in out or time.time() > deadline:
            return out
        time.sleep(0.2)


def test_duplicate_address_detection_is_not_answered(tap):
    """The kernel's DAD probes (NS from ::) for tap0's link-local address reach the
    engine; answering them would make the kernel give the address up."""
    ns, _ = tap
    out = wait_dad(ns, "tap0")
    assert "fe80::" in out and "dadfailed" not in out and "tentative" not in out, out


def test_create_with_mode_tap_and_stop_cleanly():
    """--mode tap creates a TAP device (tun_flags has IFF_TAP), answers, and at SIGTERM
    every frame read is accounted for and the device it created is gone."""
    ns = Netns()
    try:
        eng = Engine(ns, "--mode", "tap", "--workers", "1", "--address", "198.18.0.1/24",
                     "--address6", "2001:db8::1/64", device="tapc0")
        flags = int(ns.sh("cat /sys/class/net/tapc0/tun_flags").strip(), 16)
        assert flags & 0x3 == 0x2, hex(flags)
        assert ping(ns, PEER, count=2).returncode == 0
        out = wait_dad(ns, "tapc0")   # a created TAP device's IPv6 address goes through DAD
        assert "2001:db8::1/64" in out and "dadfailed" not in out, out
        assert ping(ns, "-6", PEER6, count=2).returncode == 0
        code, took = eng.stop(signal.SIGTERM)
        assert code == 0 and took < 2.0, eng.log
        rx, tx, dropped, reasons = eng.counters()
        assert rx == tx + dropped, (rx, tx, dropped, reasons)
        b_rx, b_tx, b_dropped = eng.byte_counters()   # ARP and NS answers included
        assert b_rx == b_tx + b_dropped, eng.log
        assert tx >= 6, "an ARP reply, an NA and four echo replies"
        assert ns.links() == ["lo"], "the device the engine created is gone"
    finally:
        ns.close()
