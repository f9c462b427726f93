"""Linux adapter setup through ioctls on an AF_INET / AF_INET6 datagram socket (netdevice(7),
LINUX.md §2.3): no iproute2, no netlink. Everything here acts on the calling process's
network namespace and needs CAP_NET_ADMIN.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import socket
from typing import List, Optional

from engine.errors import EngineError
from engine.platform import libc
from engine.tun import linux_abi as abi


class ProvisionError(EngineError):
    """Adapter setup failed; the message names the step."""


def _sock(family=socket.AF_INET) -> socket.socket:
    return socket.socket(family, socket.SOCK_DGRAM)


def _ioctl(step: str, name: str, request: int, req, family=socket.AF_INET):
    with _sock(family) as s:
        try:
            libc.ioctl(s.fileno(), request, req)
        except OSError as e:
            raise ProvisionError(f"{step} on {name}: {e.strerror}") from None
    return req


def ifindex(name: str) -> int:
    return _ioctl("SIOCGIFINDEX", name, abi.SIOCGIFINDEX, abi.make_ifreq(name)).ifr_ivalue


def ipv4_address(name: str) -> Optional[ipaddress.IPv4Interface]:
    """The device's primary IPv4 address with its prefix, or None when it has none."""
    req = abi.make_ifreq(name)
    with _sock() as s:
        try:
            libc.ioctl(s.fileno(), abi.SIOCGIFADDR, req)
        except OSError as e:
            if e.errno == errno.EADDRNOTAVAIL:
                return None
            raise ProvisionError(f"SIOCGIFADDR on {name}: {e.strerror}") from None
        addr = bytes(req.ifr_addr.sin_addr)
        libc.ioctl(s.fileno(), abi.SIOCGIFNETMASK, req)
        mask = bytes(req.ifr_addr.sin_addr)
    return ipaddress.IPv4Interface(f"{ipaddress.IPv4Address(addr)}/{ipaddress.IPv4Address(mask)}")


def ipv6_addresses(name: str) -> List[ipaddress.IPv6Interface]:
    """The device's IPv6 addresses other than link-local, from /proc/net/if_inet6 (which
    shows the reading process's namespace)."""
    out = []
    try:
        with open("/proc/net/if_inet6") as f:
            for line in f:
                hexaddr, _idx, plen, _scope, _flags, dev = line.split()
                if dev != name:
                    continue
                iface = ipaddress.IPv6Interface(f"{ipaddress.IPv6Address(bytes.fromhex(hexaddr))}"
                                                f"/{int(plen, 16)}")
                if not iface.ip.is_link_local:
                    out.append(iface)
    except FileNotFoundError:  # IPv6 disabled
        pass
    return out


def set_ipv4(name: str, iface: ipaddress.IPv4Interface) -> None:
    """SIOCSIFADDR then SIOCSIFNETMASK: on a point-to-point TUN the first gives a /32, the
    second widens it to the prefix and installs the prefix route."""
    for request, value, step in ((abi.SIOCSIFADDR, iface.ip, "SIOCSIFADDR"),
                                 (abi.SIOCSIFNETMASK, iface.netmask, "SIOCSIFNETMASK")):
        req = abi.make_ifreq(name)
        req.ifr_addr.sin_family = socket.AF_INET
        req.ifr_addr.sin_addr[:] = list(value.packed)
        _ioctl(step, name, request, req)


def add_ipv6(name: str, iface: ipaddress.IPv6Interface) -> None:
    """SIOCSIFADDR with an in6_ifreq on an AF_INET6 socket (netdevice(7)). A TUN device is
    NOARP, so the kernel skips duplicate address detection and the address is usable at once."""
    req = abi.in6_ifreq()
    req.ifr6_addr[:] = list(iface.ip.packed)
    req.ifr6_prefixlen = iface.network.prefixlen
    req.ifr6_ifindex = ifindex(name)
    with _sock(socket.AF_INET6) as s:
        try:
            libc.ioctl(s.fileno(), abi.SIOCSIFADDR, req)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise ProvisionError(f"adding {iface} to {name}: {e.strerror}") from None


def set_mtu(name: str, mtu: int) -> None:
    req = abi.make_ifreq(name)
    req.ifr_ivalue = mtu
    _ioctl("SIOCSIFMTU", name, abi.SIOCSIFMTU, req)


def get_mtu(name: str) -> int:
    return _ioctl("SIOCGIFMTU", name, abi.SIOCGIFMTU, abi.make_ifreq(name)).ifr_ivalue


def set_txqueuelen(name: str, qlen: int) -> None:
    """Length of the queue in front of the reader (TUN_READQ_SIZE follows it; default 500)."""
    req = abi.make_ifreq(name)
    req.ifr_ivalue = qlen
    _ioctl("SIOCSIFTXQLEN", name, abi.SIOCSIFTXQLEN, req)


def is_up(name: str) -> bool:
    return bool(_ioctl("SIOCGIFFLAGS", name, abi.SIOCGIFFLAGS, abi.make_ifreq(name)).ifr_flags
                & abi.IFF_UP)


def set_up(name: str, up: bool = True) -> None:
    req = _ioctl("SIOCGIFFLAGS", name, abi.SIOCGIFFLAGS, abi.make_ifreq(name))
    req.ifr_flags = (req.ifr_flags | abi.IFF_UP) if up else (req.ifr_flags & ~abi.IFF_UP)
    _ioctl("SIOCSIFFLAGS", name, abi.SIOCSIFFLAGS, req)


def create_persistent(name: str, owner: Optional[int] = None, group: Optional[int] = None,
                      offload: bool = True) -> None:
    """Create a persistent TUN device that `owner` (uid) / `group` (gid) may attach to
    without root, the way `ip tuntap add ... user U` does (TUNSETOWNER/TUNSETGROUP)."""
    from engine.tun import linux as tun_linux
    if tun_linux.device_exists(name):
        raise ProvisionError(f"{name} already exists")
    fd = os.open(tun_linux.TUN_PATH, os.O_RDWR | os.O_CLOEXEC)
    try:
        req = abi.make_ifreq(name)
        req.ifr_flags = abi.IFF_TUN | abi.IFF_NO_PI | (abi.IFF_VNET_HDR if offload else 0)
        steps = [(abi.TUNSETIFF, req, "TUNSETIFF")]
        if owner is not None:
            steps.append((abi.TUNSETOWNER, owner, "TUNSETOWNER"))
        if group is not None:
            steps.append((abi.TUNSETGROUP, group, "TUNSETGROUP"))
        steps.append((abi.TUNSETPERSIST, 1, "TUNSETPERSIST"))
        for request, arg, step in steps:
            try:
                libc.ioctl(fd, request, arg)
            except OSError as e:
                raise ProvisionError(f"{step} on {name}: {e.strerror}") from None
    finally:
        os.close(fd)


def delete_persistent(name: str) -> None:
    """Clear the persist flag of `name`; the kernel removes it once no process holds it."""
    from engine.tun import linux as tun_linux
    if not tun_linux.device_exists(name):
        raise ProvisionError(f"{name} does not exist")
    fd = os.open(tun_linux.TUN_PATH, os.O_RDWR | os.O_CLOEXEC)
    try:
        req = abi.make_ifreq(name)
        req.ifr_flags = abi.IFF_TUN | abi.IFF_NO_PI
        try:
            libc.ioctl(fd, abi.TUNSETIFF, req)
            libc.ioctl(fd, abi.TUNSETPERSIST, 0)
        except OSError as e:
            raise ProvisionError(f"removing {name}: {e.strerror}") from None
    finally:
        os.close(fd)
