"""Security of the edges around the packet path (issue 19): files the engine creates as
root, prefixes that would let the mirror answer as hosts of other networks, and
destinations never reflected to whatever the prefix.

The file tests run the engine over the memory driver (no device, no root needed); the
one that needs a kernel device makes its own namespace (198.18.0.0/15 only)."""
import ipaddress
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from engine import pcap
from engine.config import Config
from engine.errors import ConfigError
from engine.packet.ip import FORWARD, R, Mirror, mirror_batch, mirror_frame
from netns import PY, ROOT, Netns
from packets import ipv4, ipv6, udp

DEVICE = f"sec{os.getpid() % 100000}"


def engine(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def replay_with(tmp_path, *args):
    """A short memory-driver run that mirrors 20 frames; `args` add the option under test."""
    src = tmp_path / "in.pcap"
    pcap.write_frames(str(src), [ipv4("198.18.0.1", "198.18.0.7", udp(9, 7, b"x"))] * 20)
    return engine("--driver", "memory", "--device", DEVICE, "--replay", str(src),
                  "--address", "198.18.0.1/24", "--workers", "1", *args)


def one_line_error(p, code, *words):
    assert p.returncode == code, p.stderr
    lines = p.stderr.strip().splitlines()
    assert "Traceback" not in p.stderr and all(w in lines[-1] for w in words), p.stderr


# ------------------------------------------------------------------ files made as root
def test_pcap_never_follows_a_symbolic_link(tmp_path):
    victim = tmp_path / "shadow"
    victim.write_text("secret\n")
    victim.chmod(0o640)
    link = tmp_path / "cap.pcap"
    link.symlink_to(victim)
    one_line_error(replay_with(tmp_path, "--pcap", str(link)), 1, "--pcap", "already exists")
    assert victim.read_text() == "secret\n" and stat.S_IMODE(victim.stat().st_mode) == 0o640


def test_pcap_never_overwrites_a_file(tmp_path):
    old = tmp_path / "old.pcap"
    old.write_bytes(b"keep")
    one_line_error(replay_with(tmp_path, "--pcap", str(old)), 1, "already exists")
    assert old.read_bytes() == b"keep"


def test_pcap_is_a_new_private_file_with_every_frame(tmp_path):
    path = tmp_path / "new.pcap"
    p = replay_with(tmp_path, "--pcap", str(path))
    assert p.returncode == 0, p.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(pcap.read_frames(str(path))) == 20


def test_pcap_to_a_fifo_fails_at_once(tmp_path):
    """A FIFO at the path must not block start-up (an open() for writing would wait for a
    reader): the pcap is only ever a new file, so it is refused at once (O_EXCL)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    one_line_error(replay_with(tmp_path, "--pcap", str(fifo)), 1, "--pcap", "already exists")


@pytest.mark.parametrize("kind", ["symlink", "fifo", "hardlink"])
def test_stats_file_is_appended_only_when_it_is_a_plain_file_of_its_own(tmp_path, kind):
    victim = tmp_path / "victim"
    victim.write_text("secret\n")
    path = tmp_path / "stats.jsonl"
    if kind == "symlink":
        path.symlink_to(victim)
        why = "a symbolic link"
    elif kind == "fifo":
        os.mkfifo(path)
        why = "not a regular file"
    else:
        os.link(victim, path)
        why = "another hard link"
    one_line_error(replay_with(tmp_path, "--stats-file", str(path)), 2, "--stats-file", why)
    assert victim.read_text() == "secret\n"


def test_stats_file_new_is_private_and_an_existing_one_is_appended(tmp_path):
    path = tmp_path / "stats.jsonl"
    assert replay_with(tmp_path, "--stats-file", str(path)).returncode == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_text().splitlines()
    assert replay_with(tmp_path, "--stats-file", str(path)).returncode == 0
    assert path.read_text().splitlines()[:len(first)] == first
    assert len(path.read_text().splitlines()) == 2 * len(first)


# ------------------------------------------------------------------ prefixes
@pytest.mark.parametrize("address", ["198.18.0.1/7", "198.18.0.1/1", "198.18.0.1/0"])
def test_a_prefix_wider_than_slash_8_is_refused(address):
    with pytest.raises(ConfigError, match="prefix shorter than /8"):
        Config(address=ipaddress.ip_interface(address))
    one_line_error(engine("--driver", "memory", "--address", address), 2,
                   "--allow-wide-prefix")


def test_ipv6_prefix_wider_than_slash_16_is_refused():
    with pytest.raises(ConfigError, match="prefix shorter than /16"):
        Config(address6=ipaddress.ip_interface("2001:db8::1/15"))
    Config(address6=ipaddress.ip_interface("2001:db8::1/16"))


def test_a_wide_prefix_is_accepted_when_asked_for():
    Config(address=ipaddress.ip_interface("198.18.0.1/1"), allow_wide_prefix=True)
    p = engine("--driver", "memory", "--device", DEVICE, "--address", "198.18.0.1/4",
               "--allow-wide-prefix", "--duration", "0.5")
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("address", ["169.254.1.1/16", "240.0.0.1/8", "0.1.2.3/8",
                                     "127.0.0.1/8", "fe80::1/64", "ff02::1/16", "::1/120",
                                     "::ffff:198.18.0.1/120"])
def test_a_device_address_in_a_special_range_is_refused(address):
    iface = ipaddress.ip_interface(address)
    kw = {"address": iface} if iface.version == 4 else {"address6": iface}
    with pytest.raises(ConfigError, match="not a unicast address a mirror can hold"):
        Config(**kw)


def test_provisioning_up_refuses_what_the_engine_would(tmp_path):
    # as root, in a network namespace of its own: were the check to fail, the device it
    # made would go with that namespace
    private = ["unshare", "-n"] if os.geteuid() == 0 else []
    for address in ("198.18.0.1/0", "198.18.0.1/31", "198.18.0.0/24"):
        p = subprocess.run([*private, sys.executable, "-m", "provisioning", "up", "prov9",
                            "--address", address], cwd=ROOT, capture_output=True, text=True,
                           timeout=30)
        assert p.returncode == 2 and "Traceback" not in p.stderr, (address, p.stderr)
        assert p.stderr.startswith("provisioning: error: --address"), p.stderr


@pytest.mark.privileged
def test_an_existing_device_with_a_wide_prefix_is_refused():
    """The user's own address on an existing device obeys the same rule."""
    ns = Netns()
    try:
        ns.sh("ip tuntap add dev mir1 mode tun")
        ns.sh("ip addr add 198.18.0.1/4 dev mir1")
        ns.sh("ip link set mir1 up")
        p = ns.run(PY, "-m", "engine", "--device", "mir1", "--workers", "1", timeout=60)
        one_line_error(p, 1, "mir1 has 198.18.0.1/4", "--allow-wide-prefix")
        assert ns.shm_segments("mir1") == []
    finally:
        ns.close()


# ------------------------------------------------------------------ never reflected to
WIDE4 = ipaddress.ip_interface("198.18.0.1/1")      # 128.0.0.0/1: multicast and 240/4 inside
LOW4 = ipaddress.ip_interface("1.2.3.4/1")          # 0.0.0.0/1: 0/8 and 127/8 inside
WIDE6 = ipaddress.ip_interface("2001:db8::1/0")

NEVER = [(WIDE4, "224.0.0.251"), (WIDE4, "239.255.255.250"), (WIDE4, "240.0.0.1"),
         (WIDE4, "255.255.255.254"), (WIDE4, "169.254.7.7"),
         (LOW4, "127.0.0.1"), (LOW4, "0.0.0.9"),
         (WIDE6, "ff02::1"), (WIDE6, "fe80::5"), (WIDE6, "::1"), (WIDE6, "::ffff:c612:5")]
STILL = [(WIDE4, "200.1.2.3"), (LOW4, "8.8.4.4"), (WIDE6, "2001:db9::5")]


def _frame(iface, dst):
    if iface.version == 4:
        return ipv4(str(iface.ip), dst, udp(9, 7, b"hello"))
    return ipv6(str(iface.ip), dst, udp(9, 7, b"hello"))


def _rule(iface):
    return Mirror(iface if iface.version == 4 else None, iface if iface.version == 6 else None)


def _verdicts(iface, dst):
    """(scalar verdict, vector verdict) for one frame, each on its own copy."""
    f = _frame(iface, dst)
    buf = bytearray(f)
    one = mirror_frame(_rule(iface), buf, len(buf))
    frames = np.zeros((4, 128), np.uint8)
    frames[1, :len(f)] = np.frombuffer(f, np.uint8)
    vec = int(mirror_batch(_rule(iface), frames, np.array([1]), np.array([len(f)]))[0])
    return one, vec


@pytest.mark.parametrize("iface,dst", NEVER, ids=[d for _, d in NEVER])
def test_never_reflected_to_whatever_the_prefix(iface, dst):
    assert _verdicts(iface, dst) == (R["not_mirrored"], R["not_mirrored"])


@pytest.mark.parametrize("iface,dst", STILL, ids=[d for _, d in STILL])
def test_a_wide_prefix_still_mirrors_unicast(iface, dst):
    assert _verdicts(iface, dst) == (FORWARD, FORWARD)


def test_a_batch_of_mixed_destinations_under_a_wide_prefix():
    """The vector path on a whole batch (not the one-frame case): only the unicast ones."""
    dsts = ["200.1.2.3", "224.0.0.1", "130.0.0.9", "240.1.1.1", "169.254.0.3"]
    fs = [_frame(WIDE4, d) for d in dsts]
    frames = np.zeros((8, 128), np.uint8)
    for i, f in enumerate(fs):
        frames[i, :len(f)] = np.frombuffer(f, np.uint8)
    out = mirror_batch(_rule(WIDE4), frames, np.arange(len(fs)), np.array([len(f) for f in fs]))
    assert out.tolist() == [FORWARD, R["not_mirrored"], FORWARD, R["not_mirrored"],
                            R["not_mirrored"]]


@pytest.mark.parametrize("field,value", [("address", "198.18.0.1/4"),
                                         ("address", "169.254.0.1/16"),
                                         ("address6", "fe80::1/64")])
def test_a_windows_plan_obeys_the_engines_prefix_rules(field, value):
    from provisioning import plan
    kw = {"address": ipaddress.ip_interface("198.18.0.1/24"), field: ipaddress.ip_interface(value)}
    with pytest.raises(plan.PlanError, match=field):
        plan.Plan(name="mirror0", driver="tap0901", mtu=1500, **kw)
