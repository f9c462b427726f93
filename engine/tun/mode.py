"""TUN or TAP: the mode of an existing Linux device, found before attaching to it.

TUNSETIFF on an existing device must name its mode (tun.c, tun_set_iff: IFF_TUN on a TAP
device, or IFF_TAP on a TUN device, is EINVAL), and TUNGETIFF needs an attached
descriptor, so the mode has to come from somewhere else first: sysfs. tun.c publishes
/sys/class/net/NAME/tun_flags as "0x%x\\n" of the device's flags (IFF_TUN 0x1 or IFF_TAP
0x2, with IFF_NO_PI, IFF_VNET_HDR, IFF_MULTI_QUEUE, IFF_PERSIST ...).

Namespaces: sysfs shows the devices of the network namespace that *mounted* it.
`ip netns exec` remounts /sys for the namespace it enters, so there it is right; a
process that only called setns(2) still sees its old namespace's /sys, where NAME may be
missing or another device. So sysfs is a hint, never the last word: the backend tries
the hinted mode first, the other one on EINVAL, and reads the mode it got from TUNGETIFF
after attaching (`mode_from_flags`). `attach_order` gives that order.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

SYSFS_NET = "/sys/class/net"
IFF_TUN = 0x0001   # linux/if_tun.h
IFF_TAP = 0x0002
MODES = ("tun", "tap")


def mode_from_flags(flags: int) -> Optional[str]:
    """"tun" or "tap" from TUNSETIFF/TUNGETIFF or tun_flags bits; None if neither (or both)."""
    kind = flags & (IFF_TUN | IFF_TAP)
    return "tun" if kind == IFF_TUN else "tap" if kind == IFF_TAP else None


def device_flags(name: str, sysfs: str = SYSFS_NET) -> Optional[int]:
    """The tun_flags of the tun/tap device `name` as this process's /sys shows them; None
    when there is no such device, it is not a tun/tap device, or the file cannot be read."""
    if not name or "/" in name or name in (".", ".."):
        return None
    try:
        with open(os.path.join(sysfs, name, "tun_flags"), encoding="ascii") as f:
            return int(f.read().strip(), 16)
    except (OSError, ValueError):
        return None


def device_mode(name: str, sysfs: str = SYSFS_NET) -> Optional[str]:
    """The mode of the tun/tap device `name` (device_flags); None when unknown."""
    flags = device_flags(name, sysfs)
    return None if flags is None else mode_from_flags(flags)


def attach_order(name: str, requested: Optional[str], sysfs: str = SYSFS_NET) -> Tuple[str, ...]:
    """Modes to try with TUNSETIFF, in order. The device's own mode (sysfs) comes first
    and wins over `requested` (--mode matters only when creating); then the other mode,
    for a /sys that belongs to another namespace. Without a hint: `requested`, else tun."""
    first = device_mode(name, sysfs) or requested or "tun"
    return (first, "tap" if first == "tun" else "tun")
