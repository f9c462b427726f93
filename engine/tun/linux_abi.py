"""Linux kernel ABI for TUN devices and interface ioctls, declared once in ctypes: the
request numbers, flags and structures (the calls themselves: engine/platform/libc.py).
Values come from include/uapi/linux/if_tun.h, linux/if.h, linux/sockios.h and
asm-generic/ioctl.h (LINUX.md §1.1, §2.3). Sizes are for 64-bit Linux: `struct ifreq` is
40 bytes with its union at offset 16; `struct in6_ifreq` is 24.
"""
from __future__ import annotations

import ctypes

# asm-generic/ioctl.h: dir(2 bits) | size(14) | type(8) | nr(8)
_IOC_WRITE, _IOC_READ = 1, 2


def _ioc(direction: int, kind: str, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (ord(kind) << 8) | nr


_INT = 4
TUNSETIFF = _ioc(_IOC_WRITE, "T", 202, _INT)        # 0x400454ca
TUNSETPERSIST = _ioc(_IOC_WRITE, "T", 203, _INT)
TUNSETOWNER = _ioc(_IOC_WRITE, "T", 204, _INT)
TUNSETGROUP = _ioc(_IOC_WRITE, "T", 206, _INT)
TUNSETOFFLOAD = _ioc(_IOC_WRITE, "T", 208, _INT)
TUNGETIFF = _ioc(_IOC_READ, "T", 210, _INT)         # 0x800454d2
TUNGETVNETHDRSZ = _ioc(_IOC_READ, "T", 215, _INT)

# TUNSETIFF flags (if_tun.h)
IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_MULTI_QUEUE = 0x0100
IFF_PERSIST = 0x0800
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000

# TUNSETOFFLOAD features (if_tun.h); USO4/USO6 exist from Linux 6.2 and go together.
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_USO4 = 0x20
TUN_F_USO6 = 0x40

# sockios.h
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCGIFADDR = 0x8915
SIOCSIFADDR = 0x8916
SIOCGIFNETMASK = 0x891B
SIOCSIFNETMASK = 0x891C
SIOCGIFMTU = 0x8921
SIOCSIFMTU = 0x8922
SIOCGIFINDEX = 0x8933
SIOCSIFTXQLEN = 0x8943

# net/if.h interface flags
IFF_UP = 0x1

IFNAMSIZ = 16


class sockaddr_in(ctypes.Structure):
    _fields_ = [("sin_family", ctypes.c_ushort), ("sin_port", ctypes.c_uint16),
                ("sin_addr", ctypes.c_ubyte * 4), ("sin_zero", ctypes.c_ubyte * 8)]


class _ifr_union(ctypes.Union):
    _fields_ = [("ifr_flags", ctypes.c_short), ("ifr_ivalue", ctypes.c_int),
                ("ifr_addr", sockaddr_in), ("_pad", ctypes.c_ubyte * 24)]


class ifreq(ctypes.Structure):
    _anonymous_ = ("u",)
    _fields_ = [("ifr_name", ctypes.c_char * IFNAMSIZ), ("u", _ifr_union)]


class in6_ifreq(ctypes.Structure):
    _fields_ = [("ifr6_addr", ctypes.c_ubyte * 16), ("ifr6_prefixlen", ctypes.c_uint32),
                ("ifr6_ifindex", ctypes.c_int)]


assert ctypes.sizeof(ifreq) == 40 and ctypes.sizeof(in6_ifreq) == 24


def make_ifreq(name: str) -> ifreq:
    req = ifreq()
    req.ifr_name = name.encode()
    return req
