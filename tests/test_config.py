import ipaddress

import pytest

from engine.config import Config, parse_address
from engine.errors import ConfigError


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(workers=0), "--workers"), (dict(workers=65), "--workers"),
    (dict(device=""), "--device"), (dict(device="x" * 16), "--device"),
    (dict(device="a/b"), "--device"), (dict(mtu=67), "--mtu"), (dict(mtu=70000), "--mtu"),
    (dict(batch_size=0), "--batch"), (dict(duration=0), "--duration"),
    (dict(address=ipaddress.ip_interface("10.3.0.0/24")), "network or broadcast"),
    (dict(address=ipaddress.ip_interface("10.3.0.255/24")), "network or broadcast"),
    (dict(address=ipaddress.ip_interface("10.3.0.1/31")), "room for peers"),
    (dict(address=ipaddress.ip_interface("224.0.0.1/24")), "unicast"),
    (dict(pool_mib=1, workers=64), "too small"),
    (dict(replay="x.pcap"), "--driver memory"),
])
def test_bad_values_raise_with_the_option_named(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        Config(**kwargs)


def test_defaults_and_derived_sizes():
    c = Config()
    assert c.device == "mirror0" and c.workers == 4 and c.offload
    assert c.slot_size > 65535 + 10 and c.slot_size % 64 == 0
    assert c.pool_frames * c.slot_size <= 32 << 20
    assert c.rx_ring_frames & (c.rx_ring_frames - 1) == 0
    plain = Config(offload=False)
    assert plain.vnet_hdr_len == 0 and plain.slot_size == 1536


@pytest.mark.parametrize("text,version,ok", [
    ("10.3.0.1/24", 4, True), ("10.3.0.1", 4, False), ("2001:db8::1/64", 6, True),
    ("2001:db8::1/64", 4, False), ("10.3.0.300/24", 4, False), ("nonsense/8", 4, False),
])
def test_parse_address(text, version, ok):
    if ok:
        assert parse_address(text, version, "--address").version == version
    else:
        with pytest.raises(ConfigError, match="--address"):
            parse_address(text, version, "--address")


def test_config_is_frozen():
    with pytest.raises(Exception):
        Config().workers = 3
