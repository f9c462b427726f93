"""Wintun backend: WireGuard's layer-3 driver through wintun.dll (WINDOWS.md §4, §6).

`open(cfg)` loads the DLL from `cfg.wintun_dll`, or else from the first of
`dll_candidates()` that exists (beside python.exe, beside the engine package, in the
pytun-pmd3 wheel), opens the adapter named `cfg.device` or creates it (then it disappears
when we close it), starts a session, and gives the adapter its addresses through iphlpapi
(CreateUnicastIpAddressEntry, as Wintun's example.c does) and its MTU through netsh. All of it needs an elevated process: the DLL grants access only
to SYSTEM and Administrators.

A session's rings are mapped into the process that started it, so the reader and writer
are two threads of that process (`io_threads = True`) and the device does not pickle.
WintunReceivePacket/ReleaseReceivePacket and AllocateSendPacket/SendPacket are documented
thread-safe. Packets live in the rings, so each is copied once: out of the receive ring
into the caller's slot, and from the caller's slot into the send ring. Wintun is pure L3:
no Ethernet header, no ARP, so there is nothing like TAP-Windows' CONFIG_TUN to do.
"""
from __future__ import annotations

import ctypes
import importlib.util
import ipaddress
import logging
import os
import platform as host
import struct
import subprocess
import sys
from typing import Callable, MutableSequence, Optional, Sequence

from . import TunError
from . import win32
from .slots import ViewSlotIO
from .win32 import DWORD

WINTUN_MIN_RING_CAPACITY = 0x20000    # wintun.h, 128 KiB
WINTUN_MAX_RING_CAPACITY = 0x4000000  # wintun.h, 64 MiB
WINTUN_MAX_IP_PACKET_SIZE = 0xFFFF    # wintun.h
RING_CAPACITY = 0x400000              # 4 MiB, as Wintun's example.c
TUNNEL_TYPE = "IPMirror"              # shown by Windows as the adapter's tunnel type
DEFAULT_ADDRESS = ipaddress.IPv4Interface("10.3.0.1/24")

log = logging.getLogger("engine.wintun")


def ring_capacity(nbytes: int) -> int:
    """`nbytes` if Wintun accepts it as a ring capacity (a power of two within
    [WINTUN_MIN_RING_CAPACITY, WINTUN_MAX_RING_CAPACITY]), else a TunError."""
    if (not WINTUN_MIN_RING_CAPACITY <= nbytes <= WINTUN_MAX_RING_CAPACITY
            or nbytes & (nbytes - 1)):
        raise TunError(f"Wintun ring capacity {nbytes:#x}: a power of two from "
                       f"{WINTUN_MIN_RING_CAPACITY:#x} to {WINTUN_MAX_RING_CAPACITY:#x}")
    return nbytes


class Wintun:
    """A running Wintun session. Reader and writer are threads of the opening process."""

    io_threads = True
    vnet_hdr_len = 0
    mode, l2_hdr_len = "tun", 0   # Wintun is a layer-3 adapter
    lossless = False

    def __init__(self, dll: win32.Api, k32: win32.Api, adapter: int, session: int,
                 name: str, mtu: int, created: bool) -> None:
        self._dll, self._k = dll, k32
        self._adapter, self._session = adapter, session
        self._event = dll.WintunGetReadWaitEvent(session)  # owned by the session: no CloseHandle
        self._size = DWORD()
        self.name, self.mtu, self.created = name, mtu, created

    def __reduce__(self):
        raise TypeError("a Wintun session belongs to the process that started it: run the "
                        "reader and writer as threads of that process (io_threads)")

    def read_batch(self, bufs: Sequence[memoryview], lengths: MutableSequence[int]) -> int:
        dll, session, size = self._dll, self._live(), self._size
        for i, buf in enumerate(bufs):
            packet = dll.WintunReceivePacket(session, size)
            if not packet:  # a NULL POINTER is falsy (comparing it with 0 is always False)
                code = dll.last_error()
                if code == win32.ERROR_NO_MORE_ITEMS:
                    return i
                raise win32.error(code, f"WintunReceivePacket on {self.name}")
            # A packet that fills the slot is reported full-size: the caller drops it as too_big.
            n = min(size.value, len(buf))
            ctypes.memmove(win32.c_buffer(buf), packet, n)
            dll.WintunReleaseReceivePacket(session, packet)
            lengths[i] = n
        return len(bufs)

    def write_batch(self, bufs: Sequence[memoryview], lengths: Sequence[int]) -> int:
        dll, session, refused = self._dll, self._live(), 0
        for buf, n in zip(bufs, lengths):
            packet = dll.WintunAllocateSendPacket(session, n)
            if not packet:  # ERROR_BUFFER_OVERFLOW: ring full; ERROR_HANDLE_EOF: going away
                refused += 1
                continue
            ctypes.memmove(packet, win32.c_buffer(buf), n)
            dll.WintunSendPacket(session, packet)
        return refused

    def slot_io(self, frames) -> ViewSlotIO:
        return ViewSlotIO(self, frames)   # one ring packet per frame

    def fileno(self) -> int:
        return -1  # no POSIX descriptor: use wait()

    def waitable(self) -> int:
        """The session's read-wait event: signalled when packets may be waiting."""
        self._live()
        return self._event

    def wait(self, timeout: float) -> None:
        """Block on the session's read-wait event until packets may be waiting."""
        self._live()
        ms = min(int(timeout * 1000), win32.INFINITE - 1)
        if self._k.WaitForSingleObject(self._event, ms) == win32.WAIT_FAILED:
            raise self._k.fail("WaitForSingleObject")

    def close(self) -> None:
        """End the session and close the adapter (which removes it if we created it)."""
        session, self._session = self._session, None
        if session is None:
            return
        self._dll.WintunEndSession(session)
        self._dll.WintunCloseAdapter(self._adapter)

    def _live(self):
        if self._session is None:
            raise ValueError("device is closed")
        return self._session


def python_arch() -> str:
    """This Python's architecture in Wintun's directory names (amd64, x86, arm64, arm): a
    DLL must match the process, not the OS (32-bit Python on 64-bit Windows is x86)."""
    arm = host.machine().lower().startswith(("arm", "aarch"))
    if struct.calcsize("P") == 8:
        return "arm64" if arm else "amd64"
    return "arm" if arm else "x86"


def dll_candidates() -> list:
    """Where wintun.dll is looked for, in order, by absolute path: never the DLL search
    path, where another program's or another architecture's copy could be first."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # engine/
    places = [os.path.dirname(os.path.abspath(sys.executable)), here, os.path.dirname(here)]
    found = [os.path.join(p, "wintun.dll") for p in places]
    spec = importlib.util.find_spec("pytun_pmd3")
    if spec and spec.submodule_search_locations:
        for p in spec.submodule_search_locations:
            found.append(os.path.join(p, "wintun", "bin", python_arch(), "wintun.dll"))
    return found


def load(path: Optional[str]) -> win32.Api:
    """wintun.dll from `path`, or else from the first of dll_candidates() that exists."""
    if not path:
        candidates = dll_candidates()
        path = next((c for c in candidates if os.path.isfile(c)), None)
        if path is None:
            raise TunError("--driver wintun: no wintun.dll in " + ", ".join(
                os.path.dirname(c) for c in candidates) + "; pass --wintun-dll PATH (it "
                "ships in the pytun-pmd3 wheel and at wintun.net)")
        log.info("using %s", path)
    if not os.path.isfile(path):
        raise TunError(f"wintun.dll not found at {path}")
    try:
        return win32.load_path(os.path.abspath(path), win32.WINTUN)
    except OSError as e:
        hint = (" (a DLL for another architecture than this Python's?)"
                if getattr(e, "winerror", None) == win32.ERROR_BAD_EXE_FORMAT else "")
        raise TunError(f"cannot load {path}: {e}{hint}") from None


def _log_message(level: int, _timestamp: int, message: Optional[str]) -> None:
    log.log((logging.INFO, logging.WARNING, logging.ERROR)[min(level, 2)], "%s", message)


# Kept referenced for the life of the process: Wintun calls it from its own threads.
_logger_callback = win32.WINTUN_LOGGER_CALLBACK(_log_message)


def add_address(iphlp: win32.Api, luid: int, iface) -> None:
    """Give the adapter `iface` (IPv4 or IPv6) as example.c does; an address that is
    already there is fine (re-opening a left-over adapter)."""
    row = win32.MIB_UNICASTIPADDRESS_ROW()
    iphlp.InitializeUnicastIpAddressEntry(row)
    row.InterfaceLuid = luid
    if iface.version == 4:
        row.Address.Ipv4.sin_family = win32.AF_INET
        row.Address.Ipv4.sin_addr[:] = iface.ip.packed
    else:
        row.Address.Ipv6.sin6_family = win32.AF_INET6
        row.Address.Ipv6.sin6_addr[:] = iface.ip.packed
    row.OnLinkPrefixLength = iface.network.prefixlen
    row.DadState = win32.IP_DAD_STATE_PREFERRED
    code = iphlp.CreateUnicastIpAddressEntry(row)  # returns the error; no GetLastError
    if code not in (0, win32.ERROR_OBJECT_ALREADY_EXISTS):
        raise win32.error(code, f"CreateUnicastIpAddressEntry({iface})")


def mtu_commands(name: str, mtu: int, ipv6: bool) -> list:
    """netsh argv lists that set the IP MTU of the adapter (WINDOWS.md §3.2)."""
    families = ("ipv4", "ipv6") if ipv6 else ("ipv4",)
    return [["netsh", "interface", fam, "set", "subinterface", name, f"mtu={mtu}",
             "store=active"] for fam in families]


def open(cfg, *, dll: Optional[win32.Api] = None,  # noqa: A001 - backend constructor
         kernel32: Optional[win32.Api] = None, iphlpapi: Optional[win32.Api] = None,
         run: Callable = subprocess.run) -> Wintun:
    """Open or create the Wintun adapter cfg.device and start a session on it."""
    dll = dll or load(cfg.wintun_dll)
    k32, iphlp = kernel32 or win32.kernel32(), iphlpapi or win32.iphlpapi()
    capacity = ring_capacity(RING_CAPACITY)
    dll.WintunSetLogger(_logger_callback)
    adapter, created = dll.WintunOpenAdapter(cfg.device), False
    if not adapter:
        adapter, created = dll.WintunCreateAdapter(cfg.device, TUNNEL_TYPE, None), True
    if not adapter:
        code = dll.last_error()
        hint = " (run the engine as Administrator)" if code == win32.ERROR_ACCESS_DENIED else ""
        raise TunError(f"cannot create Wintun adapter {cfg.device}: {win32.message(code)}"
                       f"{hint} [WinError {code}]")
    session = None
    try:
        session = dll.WintunStartSession(adapter, capacity)
        if not session:
            raise dll.fail(f"WintunStartSession({cfg.device})")
        luid = win32.NET_LUID()
        dll.WintunGetAdapterLUID(adapter, luid)
        for iface in (cfg.address or DEFAULT_ADDRESS, cfg.address6):
            if iface is not None:
                add_address(iphlp, luid.value, iface)
        for argv in mtu_commands(cfg.device, cfg.mtu, cfg.address6 is not None):
            done = run(argv, capture_output=True, text=True)
            if done.returncode:
                raise OSError(f"{' '.join(argv)}: {(done.stdout + done.stderr).strip()}")
        return Wintun(dll, k32, adapter, session, cfg.device, cfg.mtu, created)
    except BaseException as e:
        if session:
            dll.WintunEndSession(session)
        dll.WintunCloseAdapter(adapter)
        if isinstance(e, OSError):
            raise TunError(f"setting up Wintun adapter {cfg.device}: {e}") from None
        raise
