"""Linux TUN backend: /dev/net/tun opened and configured through ctypes (LINUX.md §1, §2).

`open(cfg)` attaches to the named device, creating it when it does not exist (then it is
not persistent and disappears when the last descriptor closes). The descriptor is
non-blocking; frames are read straight into caller buffers (shared-memory slots) and
written straight from them, one frame per syscall: a TUN fd is not a socket, so there is
no recvmmsg. Batches go through io_uring instead (`slot_io`, engine/tun/uring.py): one
syscall for many reads or writes. With offload, a single read can also return a 64 KiB GSO
super-packet behind its virtio_net_hdr.
"""
from __future__ import annotations

import errno
import io
import os
import select
from typing import MutableSequence, Sequence

from ..handles import InheritedFd
from ..packet.headers import ETH_HLEN, VNET_HDR_LEN
from ..platform import libc
from . import TunError
from . import linux_abi as abi
from . import mode as tun_mode
from .slots import ViewSlotIO
from .uring import try_uring

TUN_PATH = "/dev/net/tun"


class LinuxTun:
    """An attached TUN or TAP queue. Picklable into a child process being started.
    `mode` is "tun" (frames are IP packets) or "tap" (Ethernet frames: `l2_hdr_len` 14)."""

    io_threads = False
    lossless = False  # the kernel drops what the reader does not take in time

    def __init__(self, handle: InheritedFd, name: str, mtu: int, vnet_hdr_len: int,
                 created: bool, offload_flags: int = 0, mode: str = "tun",
                 use_uring: bool = True) -> None:
        self.use_uring = use_uring
        self._handle = handle
        self.name = name
        self.mtu = mtu
        self.vnet_hdr_len = vnet_hdr_len
        self.created = created
        self.offload_flags = offload_flags
        self.mode = mode
        self.l2_hdr_len = ETH_HLEN if mode == "tap" else 0
        self._bind(handle.fd)

    def _bind(self, fd: int) -> None:
        # FileIO.readinto returns None on EAGAIN instead of raising: no exception per idle poll.
        self._file = io.FileIO(fd, "r+b", closefd=False) if fd >= 0 else None
        self._readinto = self._file.readinto if self._file else _closed
        self._fd = fd

    def __reduce__(self):
        return (LinuxTun, (self._handle, self.name, self.mtu, self.vnet_hdr_len,
                           self.created, self.offload_flags, self.mode, self.use_uring))

    def read_batch(self, bufs: Sequence[memoryview], lengths: MutableSequence[int]) -> int:
        readinto = self._readinto
        for i, buf in enumerate(bufs):
            n = readinto(buf)
            if not n:  # None: nothing waiting (EAGAIN)
                return i
            lengths[i] = n
        return len(bufs)

    def write_batch(self, bufs: Sequence[memoryview], lengths: Sequence[int]) -> int:
        write, fd, refused = os.write, self._fd, 0
        for buf, n in zip(bufs, lengths):
            try:
                write(fd, buf[:n])
            except OSError:  # EINVAL (kernel refused the frame), EIO (device down)
                refused += 1
        return refused

    def slot_io(self, frames) -> ViewSlotIO:
        """io_uring where the kernel allows it (engine/tun/uring.py), else, and under
        --io syscall, one read(2)/write(2) per frame."""
        return try_uring(self, frames) if self.use_uring else ViewSlotIO(self, frames)

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError("device is closed")
        return self._fd

    def waitable(self) -> int:
        return self.fileno()

    def wait(self, timeout: float) -> None:
        select.select([self.fileno()], [], [], timeout)

    def close(self) -> None:
        self._file = None
        self._bind(-1)
        self._handle.close()


def _closed(_buf):
    raise ValueError("device is closed")


def open(cfg) -> LinuxTun:  # noqa: A001 - the backend constructor, as in every backend
    """Attach to (or create) cfg.device; with cfg.offload, enable vnet offloads.

    An existing device is attached in its own mode: sysfs says which (engine/tun/mode.py),
    the other mode is tried on EINVAL (a /sys of another namespace), and TUNGETIFF has the
    last word. cfg.mode ("tun", "tap"; "auto" = tun) is the mode of a device we create."""
    existed = device_exists(cfg.device)
    try:
        fd = os.open(TUN_PATH, os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise TunError(f"{TUN_PATH} does not exist: load the tun module (modprobe tun)") from None
    except PermissionError:
        raise TunError(f"cannot open {TUN_PATH}: permission denied (run as root, or "
                       f"provision the device with an owner)") from None
    try:
        requested = None if cfg.mode == "auto" else cfg.mode
        modes = (tun_mode.attach_order(cfg.device, requested) if existed
                 else (requested or "tun",))
        for k, m in enumerate(modes):
            req = abi.make_ifreq(cfg.device)
            req.ifr_flags = ((abi.IFF_TAP if m == "tap" else abi.IFF_TUN) | abi.IFF_NO_PI
                             | (abi.IFF_VNET_HDR if cfg.offload else 0))
            try:
                libc.ioctl(fd, abi.TUNSETIFF, req)
                break
            except OSError as e:
                if e.errno != errno.EINVAL or k + 1 == len(modes):
                    raise TunError(_setiff_error(cfg.device, e.errno)) from None
        got = abi.make_ifreq("")
        libc.ioctl(fd, abi.TUNGETIFF, got)
        mode = tun_mode.mode_from_flags(got.ifr_flags)
        if mode is None:
            raise TunError(f"{cfg.device} is neither a TUN nor a TAP device")
        name = got.ifr_name.decode()
        offload = _enable_offload(fd) if cfg.offload else 0
        mtu = _get_mtu(name)
    except BaseException:
        os.close(fd)
        raise
    return LinuxTun(InheritedFd(fd), name, mtu, VNET_HDR_LEN if cfg.offload else 0,
                    created=not existed, offload_flags=offload, mode=mode,
                    use_uring=cfg.io != "syscall")


def _setiff_error(name: str, err: int) -> str:
    if err == errno.EBUSY:
        return f"device {name} is already in use (another engine or program has it open)"
    if err == errno.EPERM:
        return (f"not allowed to attach to {name}: run as root (CAP_NET_ADMIN), or provision "
                f"it for your user with `python -m provisioning up --owner USER`")
    if err == errno.EINVAL:
        flags = tun_mode.device_flags(name)
        if flags is not None and flags & abi.IFF_MULTI_QUEUE:
            return (f"device {name} is multi-queue (IFF_MULTI_QUEUE); the engine opens a "
                    f"single queue: recreate it without multi_queue (ip tuntap add dev "
                    f"{name} mode {tun_mode.mode_from_flags(flags)})")
        return f"device {name} exists but is not a TUN or TAP device"
    return f"TUNSETIFF {name}: {os.strerror(err)}"


def _enable_offload(fd: int) -> int:
    """CSUM+TSO4+TSO6 is required (Linux >= 2.6); USO4+USO6 only from 6.2, so try it and
    keep going without it (the kernel answers EINVAL for flags it does not know)."""
    base = abi.TUN_F_CSUM | abi.TUN_F_TSO4 | abi.TUN_F_TSO6
    for flags in (base | abi.TUN_F_USO4 | abi.TUN_F_USO6, base):
        try:
            libc.ioctl(fd, abi.TUNSETOFFLOAD, flags)
            return flags
        except OSError as e:
            if e.errno != errno.EINVAL or flags == base:
                raise TunError(f"TUNSETOFFLOAD: {e.strerror} (try --no-offload)") from None
    raise AssertionError("unreachable")


def _ioctl_socket():
    import socket
    return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


def device_exists(name: str) -> bool:
    """Whether an interface of that name exists in this process's network namespace."""
    with _ioctl_socket() as s:
        try:
            libc.ioctl(s.fileno(), abi.SIOCGIFINDEX, abi.make_ifreq(name))
            return True
        except OSError as e:
            if e.errno == errno.ENODEV:
                return False
            raise


def _get_mtu(name: str) -> int:
    with _ioctl_socket() as s:
        req = abi.make_ifreq(name)
        libc.ioctl(s.fileno(), abi.SIOCGIFMTU, req)
        return req.ifr_ivalue
