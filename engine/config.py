"""Frozen engine configuration: every default in one place, validated once.

`Config` never "fixes" a bad value (the scapy anti-pattern of truncating names with a
warning): anything out of range raises `ConfigError` with a message naming the option.
Values derived from others (slot size, pool size, ring size) are properties, so there is
exactly one source of truth for each.
"""
from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass
from typing import Optional

from . import platform
from .errors import ConfigError
from .packet.headers import ETH_HLEN, MAX_IP_PACKET, SPECIAL_NETWORKS, VLAN_HLEN, VNET_HDR_LEN

MAX_BATCH = 1024  # frames per batch at most; also what one reader step reads at most

DEFAULT_DEVICE = "mirror0"
DEFAULT_MEMORY_DEVICE = "memory0"  # its own name: a replay never takes a live engine's
DEFAULT_ADDRESS = "10.3.0.1/24"  # the article's network
IFNAMSIZ = 16  # linux/if.h: names are at most 15 bytes plus NUL
CACHE_LINE = 64
MODES = ("auto", "tun", "tap")  # auto: the mode of an existing device, else tun
L2_HEADROOM = ETH_HLEN + VLAN_HLEN  # TAP mode: a VLAN tag is read only to be dropped
DRIVERS = ("auto", "linux", "tap-windows", "wintun", "memory")
START_METHODS = ("spawn", "forkserver", "fork")
INLINE_MODES = ("auto", "always", "never")
IO_MODES = ("auto", "syscall")
# The shortest mirror prefixes accepted without --allow-wide-prefix: a shorter one routes
# a share of the world's addresses into the mirror, which would answer as those hosts.
MIN_PREFIX = {4: 8, 6: 16}


def _round_up(n: int, k: int) -> int:
    return (n + k - 1) // k * k


def _pow2_floor(n: int) -> int:
    return 1 << (max(1, n).bit_length() - 1)


@dataclass(frozen=True)
class Config:
    """Everything a run needs. Build it with `Config.from_args(...)` or the constructor."""

    device: Optional[str] = None  # None: DEFAULT_DEVICE, or DEFAULT_MEMORY_DEVICE
    mode: str = "auto"
    driver: str = "auto"
    workers: int = 4
    # None means: use what the device already has (or the default when we create it).
    address: Optional[ipaddress.IPv4Interface] = None
    address6: Optional[ipaddress.IPv6Interface] = None
    mtu: int = 1500
    # None: on for a real device, off for the memory driver (a plain pcap has no
    # virtio_net_hdr in front of its packets); True or False when asked for.
    offload: Optional[bool] = None
    batch_size: int = 256
    pool_mib: int = 0  # 0: the default for the mode (see pool_bytes)
    spin_us: int = 50
    duration: Optional[float] = None
    log_level: str = "info"
    user: Optional[str] = None
    stats_interval: float = 0.0
    stats_file: Optional[str] = None
    pcap: Optional[str] = None      # capture mirrored frames here
    pcap_count: int = 100_000       # ...up to this many
    inline: str = "auto"            # when the reader mirrors frames itself (engine/read_plan.py)
    io: str = "auto"                # auto: io_uring batches where available; syscall: never
    start_method: str = platform.DEFAULT_START_METHOD  # forkserver on Linux (engine/platform)
    wintun_dll: Optional[str] = None
    # memory driver (tests, kernel-free benchmark): frames replayed from a pcap, output pcap
    replay: Optional[str] = None
    replay_loops: int = 1
    sink: Optional[str] = None
    replay_hold: bool = False       # keep running once the replay is done (--duration, a signal)
    allow_wide_prefix: bool = False  # accept a prefix shorter than MIN_PREFIX
    io_threads: bool = False        # reader and writer as supervisor threads (Windows' way)

    @property
    def resolved_driver(self) -> str:
        """The backend --driver names; `auto` is this platform's own ("" if none)."""
        return platform.DEFAULT_DRIVER if self.driver == "auto" else self.driver

    def __post_init__(self) -> None:
        self._resolve_defaults()
        self._check_device_name()
        self._check_options()
        if self.address is not None:
            check_mirror_network(self.address, "--address", self.allow_wide_prefix)
        if self.address6 is not None:
            check_mirror_network(self.address6, "--address6", self.allow_wide_prefix)
        self._check_pool()

    def _resolve_defaults(self) -> None:
        if self.device is None:
            object.__setattr__(self, "device", DEFAULT_MEMORY_DEVICE if self.driver == "memory"
                               else DEFAULT_DEVICE)
        if self.offload is None:
            object.__setattr__(self, "offload", self.driver != "memory")

    def _check_device_name(self) -> None:
        if self.resolved_driver in ("tap-windows", "wintun"):  # adapter names or {GUID}s
            _check(0 < len(self.device) <= 255, f"--device {self.device!r}: 1 to 255 characters")
        else:
            # the kernel's dev_valid_name(): "." and ".." name directories, ':' aliases
            _check(0 < len(self.device.encode()) < IFNAMSIZ and self.device not in (".", "..")
                   and not any(c.isspace() or c in "/:" for c in self.device),
                   f"--device {self.device!r}: a name of 1 to {IFNAMSIZ - 1} bytes, not '.' "
                   f"or '..', no '/', ':' or spaces")

    def _check_options(self) -> None:
        _check(self.mode in MODES, f"--mode {self.mode!r}: one of {', '.join(MODES)}")
        _check(self.user is None or platform.CAN_DROP_PRIVILEGES,
               f"--user {self.user}: this platform cannot switch users (no setuid); start "
               f"the engine as that user instead")
        _check(self.driver in DRIVERS, f"--driver {self.driver!r}: one of {', '.join(DRIVERS)}")
        _check(1 <= self.workers <= 64, f"--workers {self.workers}: between 1 and 64")
        _check(68 <= self.mtu <= MAX_IP_PACKET, f"--mtu {self.mtu}: between 68 and 65535")
        _check(self.address6 is None or self.mtu >= 1280,
               f"--mtu {self.mtu}: IPv6 needs at least 1280")
        _check(1 <= self.batch_size <= MAX_BATCH,
               f"--batch {self.batch_size}: between 1 and {MAX_BATCH}")
        _check(0 <= self.pool_mib <= 4096, f"--pool-mib {self.pool_mib}: between 0 and 4096")
        _check(0 <= self.spin_us <= 10_000, f"--spin-us {self.spin_us}: between 0 and 10000")
        _check(self.duration is None or self.duration > 0, "--duration: a positive number of seconds")
        _check(self.stats_interval >= 0, "--stats-interval: zero or a positive number of seconds")
        _check(self.start_method in START_METHODS,
               f"start method {self.start_method!r}: one of {', '.join(START_METHODS)}")
        _check(self.replay_loops >= 1, "--replay-loops: at least 1")
        _check(self.pcap_count >= 1, "--pcap-count: at least 1")
        _check(self.inline in INLINE_MODES, f"--inline {self.inline!r}: one of "
               f"{', '.join(INLINE_MODES)}")
        _check(self.io in IO_MODES, f"--io {self.io!r}: one of {', '.join(IO_MODES)}")
        _check(self.driver == "memory" or not (self.replay or self.sink or self.replay_hold
                                                or self.io_threads),
               "--replay, --sink, --replay-hold and --io-threads need --driver memory")

    def _check_pool(self) -> None:
        need = 8 * self.workers
        _check(self.pool_frames >= need,
               f"--pool-mib {self.pool_mib}: too small: {self.pool_frames} frames of "
               f"{self.slot_size} bytes for {self.workers} workers (need {need})"
               if self.pool_mib else
               f"--workers {self.workers}: the default pool ({self.pool_bytes >> 20} MiB, "
               f"{self.pool_frames} frames of {self.slot_size} bytes) is too small for "
               f"{self.workers} workers (need {need} frames): give --pool-mib "
               f"{-(-need * self.slot_size >> 20)} or more")

    # ---- derived sizes -------------------------------------------------------------
    @property
    def vnet_hdr_len(self) -> int:
        """Bytes of virtio_net_hdr in front of every frame (0 without offload)."""
        return VNET_HDR_LEN if self.offload else 0

    @property
    def max_frame(self) -> int:
        """The largest frame a read can return: a GSO super-packet with offload, else the MTU;
        plus room for an Ethernet header (TAP mode), which costs no slot size in practice
        (slots round up to 64 bytes). The mode is known only once the device is open."""
        return (self.vnet_hdr_len + L2_HEADROOM
                + (MAX_IP_PACKET if self.offload else self.mtu))

    @property
    def slot_size(self) -> int:
        """Bytes per pool slot: one more than the largest frame, so a read that fills the
        slot completely is known to be truncated (counted as `too_big`)."""
        return _round_up(self.max_frame + 1, CACHE_LINE)

    @property
    def pool_bytes(self) -> int:
        """Shared frame memory. Defaults: 32 MiB with offload (512 super-packets), else
        8 MiB (4096 frames at MTU 1500)."""
        if self.pool_mib:
            return self.pool_mib << 20
        return (32 << 20) if self.offload else max(8 << 20, 4096 * self.slot_size)

    @property
    def pool_frames(self) -> int:
        """Number of slots in the pool."""
        return self.pool_bytes // self.slot_size

    @property
    def rx_ring_frames(self) -> int:
        """Per-worker ring capacity: up to half the pool, so a burst for one flow fits, yet
        a stuck worker can hold at most half and the others keep flowing (its excess is
        dropped as `ring_full`)."""
        return _pow2_floor(self.pool_frames // (1 if self.workers == 1 else 2))

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def check_mirror_network(iface, option: str, allow_wide: bool = False) -> None:
    """The rules for a mirror prefix, for options and for a device's own addresses alike
    (`option` names where the address came from); ConfigError when one is broken."""
    net = iface.network
    _check(net.num_addresses >= 4,
           f"{option} {iface}: the mirror needs a prefix with room for peers (at most /30 or /126)")
    least = MIN_PREFIX[net.version]
    _check(allow_wide or net.prefixlen >= least,
           f"{option} {iface}: a prefix shorter than /{least} would route other networks' "
           f"addresses into the mirror, which would answer as those hosts "
           f"(--allow-wide-prefix if that is really meant)")
    _check(iface.ip != net.network_address and
           (net.version == 6 or iface.ip != net.broadcast_address),
           f"{option} {iface}: the device address cannot be the network or broadcast address")
    special = next((n for n in SPECIAL_NETWORKS if n.version == net.version and iface.ip in n),
                   None)
    _check(special is None, f"{option} {iface}: not a unicast address a mirror can hold "
                            f"(it lies in {special})")


def parse_address(text: str, version: int, option: str):
    """'10.3.0.1/24' -> IPv4Interface; a clear ConfigError for anything else."""
    if "/" not in text:
        raise ConfigError(f"{option} {text!r}: give a prefix length, e.g. "
                          f"{'10.3.0.1/24' if version == 4 else '2001:db8::1/64'}")
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError as e:
        raise ConfigError(f"{option} {text!r}: {e}") from None
    if iface.version != version:
        raise ConfigError(f"{option} {text!r}: expected an IPv{version} address")
    return iface
