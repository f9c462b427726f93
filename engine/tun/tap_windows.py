"""TAP-Windows backend: tap0801 (the article's TAP-Win32 8.x), tap0901 and tap-windows6 in
TUN mode, through kernel32 (WINDOWS.md §2, §6).

Opening, in order:
 1. find the adapter: walk the network Class key read-only for ComponentId tap0801,
    tap0901 or root\\tap0901 and match its connection name (or GUID) to `cfg.device`;
 2. CreateFileW(r"\\\\.\\Global\\{GUID}.tap", overlapped);
 3. GET_VERSION and GET_MTU;
 4. CONFIG_TUN(local, local & mask, mask), or CONFIG_POINT_TO_POINT on a driver older
    than 8.2, which lacks CONFIG_TUN (then only one peer address is mirrored);
 5. SET_MEDIA_STATUS(connected).

Why reader and writer are two threads of the supervisor (`io_threads = True`): the driver
admits a single open handle, and stopping must cancel the reader's pending overlapped read,
which CancelIoEx can do only from the process that issued it. Two threads keep the one
handle, its cancellation and its cleanup in one place, and no other process ever holds the
handle (the workers get no device), so no orphan can keep the adapter "already open". Each
thread that writes has its own write OVERLAPPED and event (in TAP mode the reader writes
ARP and neighbour replies while the writer writes frames; an OVERLAPPED must not serve two
pending calls). The device still pickles, through DuplicateHandle, for a caller that
wants it in another process; the engine does not.

Why reads land in a private buffer first: `read_batch` must never block, but an overlapped
read cannot be abandoned once issued. A read left pending in a caller's slot would let the
driver write into a slot the engine has already reused. So one read is kept in flight into
a buffer the device owns, and each completed frame is copied once into the caller's slot
(a memcpy of at most the MTU, beside a system call per frame). Writes go straight from the
caller's buffer and are waited for before `write_batch` returns, since the caller reuses the
buffer afterwards; the driver completes them at once in practice.

Why a refused read backs off: tap-windows6 completes a read at once with STATUS_CANCELLED
(ERROR_OPERATION_ABORTED, 995) whenever the adapter is not ready to pass packets (media
disconnected, not in D0, being closed). Posting reads again would spin a CPU; instead
`wait` sleeps its timeout, and the first refusal says why in the log.
"""
from __future__ import annotations

import ctypes
import ipaddress
import logging
import struct
import threading
import time
from dataclasses import dataclass
from typing import Iterable, List, MutableSequence, Optional, Protocol, Sequence, Tuple

from ..packet.headers import ETH_HLEN
from . import TunError
from . import win32, win_address
from .slots import ViewSlotIO
from .win32 import DWORD, OVERLAPPED

# ---- tap-windows.h (tap-windows6) / common.h (TAP-Win32 8.x) -----------------------
FILE_DEVICE_UNKNOWN = 0x22  # winioctl.h
METHOD_BUFFERED = 0
FILE_ANY_ACCESS = 0


def ctl_code(device_type: int, function: int, method: int, access: int) -> int:
    """winioctl.h CTL_CODE."""
    return (device_type << 16) | (access << 14) | (function << 2) | method


def tap_control_code(function: int) -> int:
    """tap-windows.h TAP_WIN_CONTROL_CODE(request, METHOD_BUFFERED)."""
    return ctl_code(FILE_DEVICE_UNKNOWN, function, METHOD_BUFFERED, FILE_ANY_ACCESS)


TAP_IOCTL_GET_MAC = tap_control_code(1)
TAP_IOCTL_GET_VERSION = tap_control_code(2)
TAP_IOCTL_GET_MTU = tap_control_code(3)
TAP_IOCTL_GET_INFO = tap_control_code(4)
TAP_IOCTL_CONFIG_POINT_TO_POINT = tap_control_code(5)
TAP_IOCTL_SET_MEDIA_STATUS = tap_control_code(6)
TAP_IOCTL_CONFIG_DHCP_MASQ = tap_control_code(7)
TAP_IOCTL_GET_LOG_LINE = tap_control_code(8)
TAP_IOCTL_CONFIG_DHCP_SET_OPT = tap_control_code(9)
TAP_IOCTL_CONFIG_TUN = tap_control_code(10)  # "Added in 8.2"

ADAPTER_KEY = r"SYSTEM\CurrentControlSet\Control\Class\{4D36E972-E325-11CE-BFC1-08002BE10318}"
NETWORK_CONNECTIONS_KEY = (r"SYSTEM\CurrentControlSet\Control\Network"
                           r"\{4D36E972-E325-11CE-BFC1-08002BE10318}")
USERMODEDEVICEDIR = "\\\\.\\Global\\"
TAP_WIN_SUFFIX = ".tap"
COMPONENT_IDS = ("tap0801", "tap0901", "root\\tap0901")  # OpenVPN tun.c, lower case

CONFIG_TUN_MIN_VERSION = (8, 2)   # common.h: CONFIG_TUN "Added in 8.2"
IPV6_TUN_MIN_VERSION = (9, 8)     # OpenVPN tun.c: "does not support IPv6 in TUN mode" below 9.8
BUGGY_VERSION = (9, 8)            # OpenVPN tun.c: "buggy regarding small IPv4 packets in TUN mode"
READ_RETRY_S = 0.5               # how often a refused read is retried
LANDING_SIZE = 0x10000            # > the largest IP packet, so a full landing means nothing
DEFAULT_ADDRESS = ipaddress.IPv4Interface("10.3.0.1/24")  # the article's network

log = logging.getLogger("engine")

# read results other than a length
_NOT_A_FRAME = -1   # zero-length or cancelled read
_TRUNCATED = -2     # the driver dropped a packet too big for the buffer


# ---- the registry walk -------------------------------------------------------------
class Registry(Protocol):
    """Read-only HKLM access: the real one is `WinRegistry`; tests inject a fake."""

    def subkeys(self, path: str) -> Iterable[str]: ...
    def value(self, path: str, name: str) -> Optional[str]: ...  # None: absent or not REG_SZ


@dataclass(frozen=True)
class Adapter:
    guid: str             # NetCfgInstanceId, with braces
    component_id: str     # lower case
    name: Optional[str]   # the connection name shown by Windows ("mirror0")

    @property
    def path(self) -> str:
        return USERMODEDEVICEDIR + self.guid + TAP_WIN_SUFFIX


def find_adapters(reg: Registry) -> List[Adapter]:
    """Every TAP-Windows adapter, in registry order. Only numeric subkeys ("0000", "0001")
    are adapters; others such as "Properties" are skipped unread, since newer Windows
    denies access to them. A subkey we cannot read is not ours either."""
    found = []
    for sub in reg.subkeys(ADAPTER_KEY):
        if not sub.isdigit():
            continue
        key = f"{ADAPTER_KEY}\\{sub}"
        try:
            component = reg.value(key, "ComponentId")
            guid = reg.value(key, "NetCfgInstanceId")
        except OSError:
            continue
        if component and guid and component.lower() in COMPONENT_IDS:
            found.append(Adapter(guid, component.lower(), _connection_name(reg, guid)))
    return found


def _connection_name(reg: Registry, guid: str) -> Optional[str]:
    try:
        return reg.value(f"{NETWORK_CONNECTIONS_KEY}\\{guid}\\Connection", "Name")
    except OSError:
        return None


def select_adapter(adapters: Sequence[Adapter], device: str) -> Adapter:
    """The adapter whose connection name (Windows compares names case-insensitively) or
    GUID is `device`. No guessing: with no match, the error lists what exists."""
    if not adapters:
        raise TunError("no TAP-Windows adapter is installed (component id tap0801, tap0901 or "
                       "root\\tap0901): install one with tools/provision.ps1 -Action Install")
    want = device.lower()
    for a in adapters:
        if want in ((a.name or "").lower(), a.guid.lower()):
            return a
    have = ", ".join(f"{a.name!r} {a.guid} ({a.component_id})" for a in adapters)
    raise TunError(f"no TAP-Windows adapter named {device!r}; found {have}. Install one with "
                   f"tools/provision.ps1 -Action Install -Name {device}, or pass --device NAME")


class WinRegistry:
    """HKLM through the stdlib `winreg`, opened KEY_READ: the article's sample opens the keys
    writable, which needs administrator rights for no reason."""

    def subkeys(self, path: str) -> List[str]:
        import winreg
        names = []
        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, path, 0, winreg.KEY_READ) as key:
            while True:
                try:
                    names.append(winreg.EnumKey(key, len(names)))
                except OSError as e:
                    if getattr(e, "winerror", None) == win32.ERROR_NO_MORE_ITEMS:
                        return names
                    raise

    def value(self, path: str, name: str) -> Optional[str]:
        import winreg
        try:
            with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, path, 0, winreg.KEY_READ) as key:
                data, kind = winreg.QueryValueEx(key, name)
        except FileNotFoundError:
            return None
        return data if kind == winreg.REG_SZ else None  # OpenVPN requires REG_SZ too


# ---- IOCTL argument buffers (WINDOWS.md §2.2: IPADDR values in network order) ------
def config_tun_buffer(iface: ipaddress.IPv4Interface) -> bytes:
    """CONFIG_TUN {local, remote_network, remote_netmask}. The network must be local & mask:
    the driver rejects (network & mask) != network with STATUS_INVALID_PARAMETER."""
    return iface.ip.packed + iface.network.network_address.packed + iface.netmask.packed


def point_to_point_peer(iface: ipaddress.IPv4Interface) -> ipaddress.IPv4Address:
    """The one remote host a pre-8.2 driver can mirror: the first other host of the prefix."""
    return next(h for h in iface.network.hosts() if h != iface.ip)


def point_to_point_buffer(local: ipaddress.IPv4Address, remote: ipaddress.IPv4Address) -> bytes:
    """CONFIG_POINT_TO_POINT {local, remote}."""
    return local.packed + remote.packed


MEDIA_CONNECTED = struct.pack("<I", 1)  # ULONG, host order (little-endian on Windows)


def parse_version(raw: bytes) -> Tuple[int, int, int]:
    """GET_VERSION: 3 ULONGs {major, minor, debug}."""
    return struct.unpack("<3I", raw[:12])


# ---- the device --------------------------------------------------------------------
class TapWindows:
    """An open, configured TAP-Windows adapter. Reader and writer are threads of one process."""

    io_threads = True
    vnet_hdr_len = 0
    lossless = False
    created = False  # TAP adapters are installed by provisioning, not by opening them

    def __init__(self, k32: win32.Api, handle: "win32.InheritedHandle", name: str, mtu: int,
                 guid: str, version: Tuple[int, int, int], config_mode: str) -> None:
        self._k, self._handle, self._h = k32, handle, handle.value
        self.name, self.mtu, self.guid = name, mtu, guid
        self.version, self.config_mode = version, config_mode
        self.mode = "tap" if config_mode == "tap" else "tun"
        self.l2_hdr_len = ETH_HLEN if self.mode == "tap" else 0
        self.passes_ipv6 = tuple(version[:2]) >= IPV6_TUN_MIN_VERSION
        self._rov, self._rgot, self._pending = _overlapped(k32), DWORD(), False
        self._refused = False   # the driver refuses reads: the adapter is not ready
        self._writes = {}       # thread ident -> _Write: one OVERLAPPED per writing thread
        self._writes_lock = threading.Lock()
        self._landing = bytearray(LANDING_SIZE)
        self._c_landing = (ctypes.c_char * LANDING_SIZE).from_buffer(self._landing)
        self._view = memoryview(self._landing)

    def __reduce__(self):
        return (_rebuild, (self._handle, self.name, self.mtu, self.guid, self.version,
                           self.config_mode))

    # -- reader thread --
    def read_batch(self, bufs: Sequence[memoryview], lengths: MutableSequence[int]) -> int:
        self._check_open()
        count = 0
        while count < len(bufs):
            n = self._next_read()
            if n is None or n == _NOT_A_FRAME:
                break
            buf = bufs[count]
            if n == _TRUNCATED or n > len(buf):
                n = len(buf)  # a full buffer: the caller drops it as too_big (contract)
            else:
                buf[:n] = self._view[:n]
            lengths[count] = n
            count += 1
        return count

    def _next_read(self) -> Optional[int]:
        """The length of the next frame in the landing buffer, None while the read is in
        flight, or _NOT_A_FRAME / _TRUNCATED."""
        if not self._pending:
            code = self._post_read()
            if code:
                return self._read_failed(code)
        if self._k.GetOverlappedResult(self._h, self._rov, self._rgot, False):
            self._pending = False
            self._ready_again()
            return self._rgot.value or _NOT_A_FRAME
        code = self._k.last_error()
        if code == win32.ERROR_IO_INCOMPLETE:
            return None
        self._pending = False
        return self._read_failed(code)

    def _post_read(self) -> int:
        """Start a read into the landing buffer; 0, or the code of an immediate failure.
        ReadFile itself resets the OVERLAPPED's event when it starts (ReadFile docs)."""
        if not self._k.ReadFile(self._h, self._c_landing, LANDING_SIZE, None, self._rov):
            code = self._k.last_error()
            if code != win32.ERROR_IO_PENDING:
                if code == win32.ERROR_OPERATION_ABORTED:
                    self._note_refused()
                return code
        self._pending = True
        return 0

    def _note_refused(self) -> None:
        if not self._refused:
            self._refused = True
            log.warning("%s refuses reads (WinError 995): the adapter is not ready (media "
                        "disconnected, disabled, or closing); retrying every %.1f s", self.name,
                        READ_RETRY_S)

    def _ready_again(self) -> None:
        if self._refused:
            self._refused = False
            log.info("%s accepts reads again", self.name)

    def _read_failed(self, code: int) -> int:
        if code == win32.ERROR_MORE_DATA:
            return _TRUNCATED
        if code == win32.ERROR_OPERATION_ABORTED:
            return _NOT_A_FRAME
        raise win32.error(code, f"ReadFile on {self.name}")

    def wait(self, timeout: float) -> None:
        """Block until the pending read completes or `timeout` seconds pass."""
        self._check_open()
        if not self._pending and self._post_read():
            if self._refused:  # posting again at once would spin: wait for the adapter
                time.sleep(min(timeout, READ_RETRY_S))
            return  # any other failure is reported by the next read_batch
        ms = min(int(timeout * 1000), win32.INFINITE - 1)
        if self._k.WaitForSingleObject(self._rov.hEvent, ms) == win32.WAIT_FAILED:
            raise self._k.fail("WaitForSingleObject")

    # -- writer thread --
    def write_batch(self, bufs: Sequence[memoryview], lengths: Sequence[int]) -> int:
        self._check_open()
        refused = 0
        for buf, n in zip(bufs, lengths):
            refused += not self._write(buf, n)
        return refused

    def _write(self, buf, n: int) -> bool:
        k, data, w = self._k, win32.c_buffer(buf), self._own_write()
        w.busy = True
        if not k.WriteFile(self._h, data, n, None, w.ov):
            if k.last_error() != win32.ERROR_IO_PENDING:
                w.busy = False
                return False
        # Wait even when pending: the caller reuses the buffer as soon as we return.
        ok = k.GetOverlappedResult(self._h, w.ov, w.got, True)
        w.busy = False
        return bool(ok)

    def _own_write(self) -> "_Write":
        """This thread's write OVERLAPPED, made on its first write."""
        me = threading.get_ident()
        w = self._writes.get(me)
        if w is None:
            with self._writes_lock:
                w = self._writes[me] = _Write(_overlapped(self._k))
        return w

    # -- either --
    def slot_io(self, frames) -> ViewSlotIO:
        return ViewSlotIO(self, frames)   # one ReadFile/WriteFile per frame

    def fileno(self) -> int:
        return -1  # no POSIX descriptor: use wait()

    def waitable(self) -> None:
        """None: the reader uses wait(). The read OVERLAPPED's event means something only
        while a read is in flight, and while the driver refuses reads (error 995) none
        is; wait() then backs off instead, which a wait on the event could not."""
        self._check_open()
        return None

    def close(self) -> None:
        """Cancel this process's I/O on the handle, wait until the kernel has let go of the
        OVERLAPPEDs and the landing buffer (freeing them earlier corrupts memory), then
        close the events and the handle. Call it after the reader and writer returned."""
        h, self._h = self._h, None
        if h is None:
            return
        k = self._k
        k.CancelIoEx(h, None)  # ERROR_NOT_FOUND when nothing was in flight: fine
        with self._writes_lock:
            writes, self._writes = list(self._writes.values()), {}
        for busy, ov, got in ((self._pending, self._rov, self._rgot),
                              *((w.busy, w.ov, w.got) for w in writes)):
            if busy:
                k.GetOverlappedResult(h, ov, got, True)
        self._pending = False
        k.CloseHandle(self._rov.hEvent)
        for w in writes:
            k.CloseHandle(w.ov.hEvent)
        self._handle.close()

    def _check_open(self) -> None:
        if self._h is None:
            raise ValueError("device is closed")


class _Write:
    """One thread's write OVERLAPPED, its byte count, and whether a write is in flight."""

    __slots__ = ("ov", "got", "busy")

    def __init__(self, ov: OVERLAPPED) -> None:
        self.ov, self.got, self.busy = ov, DWORD(), False


def _overlapped(k32: win32.Api) -> OVERLAPPED:
    # Manual reset, as GetOverlappedResult requires when it waits on the event.
    event = k32.CreateEventW(None, True, False, None)
    if not event:
        raise k32.fail("CreateEventW")
    ov = OVERLAPPED()
    ov.hEvent = event
    return ov


def _rebuild(handle, name, mtu, guid, version, config_mode) -> TapWindows:
    return TapWindows(win32.kernel32(), handle, name, mtu, guid, version, config_mode)


# ---- opening -----------------------------------------------------------------------
def device_io_control(k32: win32.Api, handle, code: int, name: str, data: bytes = b"",
                      out_size: int = 0) -> bytes:
    """One IOCTL, waited for. An OVERLAPPED is passed because the handle is overlapped
    (DeviceIoControl docs: NULL there "can fail in unpredictable ways"); the driver
    completes IOCTLs synchronously anyway (tap-windows6 device.c)."""
    inbuf = ctypes.create_string_buffer(data, len(data)) if data else None
    outbuf = ctypes.create_string_buffer(out_size) if out_size else None
    ov, got = _overlapped(k32), DWORD()
    try:
        ok = k32.DeviceIoControl(handle, code, inbuf, len(data), outbuf, out_size, None, ov)
        if not ok and k32.last_error() == win32.ERROR_IO_PENDING:
            ok = k32.GetOverlappedResult(handle, ov, got, True)
        elif ok:
            k32.GetOverlappedResult(handle, ov, got, False)
        if not ok:
            raise k32.fail(f"DeviceIoControl({name})")
        return outbuf.raw[:got.value] if outbuf else b""
    finally:
        k32.CloseHandle(ov.hEvent)


def configure(k32: win32.Api, handle, version: Tuple[int, int, int],
              iface: ipaddress.IPv4Interface) -> str:
    """CONFIG_TUN, or CONFIG_POINT_TO_POINT where the driver lacks it. Returns the mode."""
    if tuple(version[:2]) >= CONFIG_TUN_MIN_VERSION:
        try:
            device_io_control(k32, handle, TAP_IOCTL_CONFIG_TUN, "CONFIG_TUN",
                              config_tun_buffer(iface))
            return "tun"
        except OSError as e:
            if e.winerror not in (win32.ERROR_INVALID_FUNCTION, win32.ERROR_NOT_SUPPORTED):
                raise
    peer = point_to_point_peer(iface)
    device_io_control(k32, handle, TAP_IOCTL_CONFIG_POINT_TO_POINT, "CONFIG_POINT_TO_POINT",
                      point_to_point_buffer(iface.ip, peer))
    return f"point-to-point {peer}"


_OPEN_HINTS = {
    win32.ERROR_GEN_FAILURE: "it is already open (the driver admits one handle: is another "
                             "engine or VPN client using it?)",
    win32.ERROR_FILE_NOT_FOUND: "the adapter is disabled or its driver is not running",
    win32.ERROR_ACCESS_DENIED: "run as Administrator, or set the adapter's AllowNonAdmin",
}


def open(cfg, *, kernel32: Optional[win32.Api] = None,  # noqa: A001 - backend constructor
         registry: Optional[Registry] = None, iphlpapi: Optional[win32.Api] = None) -> TapWindows:
    """Find, open and configure the TAP-Windows adapter named cfg.device."""
    try:
        k32 = kernel32 or win32.kernel32()
    except OSError as e:  # not Windows
        raise TunError(f"--driver tap-windows needs Windows ({e})") from None
    try:
        adapter = select_adapter(find_adapters(registry or WinRegistry()), cfg.device)
    except OSError as e:
        raise TunError(f"cannot read the network adapters from the registry: {e}") from None
    iface = cfg.address or DEFAULT_ADDRESS
    handle = k32.CreateFileW(adapter.path, win32.GENERIC_READ | win32.GENERIC_WRITE, 0, None,
                             win32.OPEN_EXISTING,
                             win32.FILE_ATTRIBUTE_SYSTEM | win32.FILE_FLAG_OVERLAPPED, None)
    if handle in (None, win32.INVALID_HANDLE_VALUE):
        code = k32.last_error()
        hint = _OPEN_HINTS.get(code, win32.message(code))
        raise TunError(f"cannot open {adapter.name or adapter.guid} ({adapter.path}): {hint} "
                       f"[WinError {code}]")
    owned = win32.InheritedHandle(handle, k32)
    try:
        version = parse_version(device_io_control(k32, handle, TAP_IOCTL_GET_VERSION,
                                                  "GET_VERSION", out_size=12))
        _check_version(version, cfg)
        mtu = struct.unpack("<I", device_io_control(k32, handle, TAP_IOCTL_GET_MTU, "GET_MTU",
                                                    out_size=4))[0]
        # TAP (Ethernet) mode: no CONFIG_TUN; frames carry Ethernet headers and the driver
        # answers no ARP, so the engine does (engine/l2.py, issue 7).
        mode = "tap" if cfg.mode == "tap" else configure(k32, handle, version, iface)
        device_io_control(k32, handle, TAP_IOCTL_SET_MEDIA_STATUS, "SET_MEDIA_STATUS",
                          MEDIA_CONNECTED, out_size=4)
    except OSError as e:
        owned.close()
        raise TunError(f"configuring {adapter.name or adapter.guid}: {e.strerror}") from None
    except BaseException:
        owned.close()
        raise
    _check_address(adapter, iface, iphlpapi)
    return TapWindows(k32, owned, adapter.name or adapter.guid, mtu, adapter.guid, version, mode)


def _check_address(adapter: Adapter, iface: ipaddress.IPv4Interface,
                   iphlp: Optional[win32.Api]) -> None:
    """Warn when the adapter lacks the mirror's IPv4 address (engine/tun/win_address.py);
    advice only, so a failure to look is logged and the engine goes on."""
    try:
        have = win_address.ipv4_addresses(iphlp or win32.iphlpapi(), adapter.guid)
    except OSError as e:
        log.debug("cannot read the addresses of %s: %s", adapter.name or adapter.guid, e)
        return
    text = win_address.problem(adapter.name or adapter.guid, iface, have)
    if text:
        log.warning("%s", text)


def _check_version(version: Tuple[int, int, int], cfg) -> None:
    v = tuple(version[:2])
    if v == BUGGY_VERSION:
        raise TunError("TAP driver 9.8 drops small IPv4 packets in TUN mode (OpenVPN refuses "
                       "it too): upgrade tap-windows")
    if cfg.address6 is not None and v < IPV6_TUN_MIN_VERSION:
        raise TunError(f"TAP driver {v[0]}.{v[1]} does not pass IPv6 in TUN mode (needs 9.8 "
                       f"or later, i.e. tap0901/tap-windows6): drop --address6")
