"""Wintun backend on any OS: ring capacity rules, the declared signatures checked against
wintun.h, and the session I/O over a fake DLL that hands out real ctypes memory."""
from __future__ import annotations

import ctypes
import ipaddress
import os
import pickle
import re
import subprocess

import pytest

from engine.config import Config
from engine.tun import TunError, win32, wintun as wt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- ring capacity -----------------------------------------------------------------
@pytest.mark.parametrize("n", [0x20000, 0x40000, 0x400000, 0x4000000])
def test_capacity_accepted(n):
    assert wt.ring_capacity(n) == n


@pytest.mark.parametrize("n", [0, 0x1FFFF, 0x10000, 0x30000, 0x400001, 0x8000000, -0x20000])
def test_capacity_refused(n):
    with pytest.raises(TunError, match="power of two"):
        wt.ring_capacity(n)


def test_default_capacity_is_valid():
    assert wt.ring_capacity(wt.RING_CAPACITY) == 0x400000


def test_header_constants():
    assert (wt.WINTUN_MIN_RING_CAPACITY, wt.WINTUN_MAX_RING_CAPACITY,
            wt.WINTUN_MAX_IP_PACKET_SIZE) == (0x20000, 0x4000000, 0xFFFF)


# ---- signatures against wintun.h ---------------------------------------------------
# The prototypes of WireGuard/wintun api/wintun.h (the *_FUNC typedefs, SAL annotations
# dropped), one per export of api/exports.def.
WINTUN_H = """
WINTUN_ADAPTER_HANDLE WintunCreateAdapter(LPCWSTR Name, LPCWSTR TunnelType, const GUID *RequestedGUID);
WINTUN_ADAPTER_HANDLE WintunOpenAdapter(LPCWSTR Name);
void WintunCloseAdapter(WINTUN_ADAPTER_HANDLE Adapter);
BOOL WintunDeleteDriver(void);
void WintunGetAdapterLUID(WINTUN_ADAPTER_HANDLE Adapter, NET_LUID *Luid);
DWORD WintunGetRunningDriverVersion(void);
void WintunSetLogger(WINTUN_LOGGER_CALLBACK NewLogger);
WINTUN_SESSION_HANDLE WintunStartSession(WINTUN_ADAPTER_HANDLE Adapter, DWORD Capacity);
void WintunEndSession(WINTUN_SESSION_HANDLE Session);
HANDLE WintunGetReadWaitEvent(WINTUN_SESSION_HANDLE Session);
BYTE *WintunReceivePacket(WINTUN_SESSION_HANDLE Session, DWORD *PacketSize);
void WintunReleaseReceivePacket(WINTUN_SESSION_HANDLE Session, const BYTE *Packet);
BYTE *WintunAllocateSendPacket(WINTUN_SESSION_HANDLE Session, DWORD PacketSize);
void WintunSendPacket(WINTUN_SESSION_HANDLE Session, const BYTE *Packet);
"""
PROTOTYPE = re.compile(r"^(.+?)\s*\b(Wintun\w+)\((.*)\);$")


def _is(t, size, signed=None):
    return (t is not None and issubclass(t, ctypes._SimpleCData) and ctypes.sizeof(t) == size
            and (signed is None or (t(-1).value < 0) == signed))


def _is_ptr(t, to=None):
    return (t is ctypes.c_void_p if to is None else
            isinstance(t, type(ctypes.POINTER(ctypes.c_int))) and to(t._type_))


# C type in wintun.h -> predicate on the declared ctypes type (Windows: DWORD 4 bytes unsigned)
C_TYPES = {
    "void": lambda t: t is None,
    "BOOL": lambda t: _is(t, 4, signed=True),
    "DWORD": lambda t: _is(t, 4, signed=False),
    "HANDLE": _is_ptr,
    "WINTUN_ADAPTER_HANDLE": _is_ptr,
    "WINTUN_SESSION_HANDLE": _is_ptr,
    "LPCWSTR": lambda t: t is ctypes.c_wchar_p,
    "const GUID *": lambda t: _is_ptr(t, lambda g: ctypes.sizeof(g) == 16),
    "NET_LUID *": lambda t: _is_ptr(t, lambda g: _is(g, 8, signed=False)),
    "DWORD *": lambda t: _is_ptr(t, lambda g: _is(g, 4, signed=False)),
    "BYTE *": lambda t: _is_ptr(t, lambda g: _is(g, 1, signed=False)),
    "const BYTE *": lambda t: _is_ptr(t, lambda g: _is(g, 1, signed=False)),
    "WINTUN_LOGGER_CALLBACK": lambda t: (
        issubclass(t, ctypes._CFuncPtr) and t._restype_ is None
        and [ctypes.sizeof(a) for a in t._argtypes_] == [4, 8, ctypes.sizeof(ctypes.c_wchar_p)]
        and t._argtypes_[2] is ctypes.c_wchar_p),
}


class FakeWinDLL:
    """Records what the loader declares, as ctypes function pointers would hold it."""

    class Fn:
        restype = "undeclared"
        argtypes = "undeclared"

    def __getattr__(self, name):
        fn = self.Fn()
        setattr(self, name, fn)
        return fn


def _normalise(param: str) -> str:
    # "const GUID *RequestedGUID" -> "const GUID *"; "DWORD Capacity" -> "DWORD"
    words = param.split()
    ptr = "*" if "*" in param else ""
    base = " ".join(w for w in words[:-1]) if not words[-1].startswith("*") else " ".join(words[:-1])
    return (base.replace("*", "").strip() + (" *" if ptr else "")).strip()


@pytest.mark.parametrize("line", WINTUN_H.strip().splitlines(), ids=lambda l: PROTOTYPE.match(l)[2])
def test_declared_signature_matches_wintun_h(line):
    ret, name, args = PROTOTYPE.match(line).groups()
    params = [] if args == "void" else [_normalise(a) for a in args.split(", ")]
    ret = _normalise(ret + " x")
    api = win32.Api(FakeWinDLL(), win32.WINTUN, lambda: 0)
    fn = getattr(api, name)
    assert C_TYPES[ret](fn.restype), f"{name} restype {fn.restype} is not {ret}"
    assert len(fn.argtypes) == len(params), f"{name}: {len(fn.argtypes)} args, wintun.h {params}"
    for i, (c, t) in enumerate(zip(params, fn.argtypes)):
        assert C_TYPES[c](t), f"{name} argument {i}: {t} is not {c}"


def test_every_export_is_declared_and_nothing_else():
    names = {PROTOTYPE.match(line)[2] for line in WINTUN_H.strip().splitlines()}
    assert set(win32.WINTUN) == names and len(names) == 14


def test_create_adapter_takes_three_arguments():
    # older bindings declare five (a Pool argument and an out handle): today's header has three
    assert len(win32.WINTUN["WintunCreateAdapter"][1]) == 3


# ---- loading -----------------------------------------------------------------------
def test_missing_dll_path_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(wt, "dll_candidates", lambda: [str(tmp_path / "a" / "wintun.dll")])
    with pytest.raises(TunError, match=r"no wintun.dll in .*a; pass --wintun-dll PATH"):
        wt.load(None)
    with pytest.raises(TunError, match="not found at"):
        wt.load("/nonexistent/wintun.dll")


@pytest.mark.skipif(hasattr(ctypes, "WinDLL"), reason="checks the non-Windows behaviour")
def test_loading_elsewhere_than_windows_is_a_tun_error(tmp_path):
    dll = tmp_path / "wintun.dll"
    dll.write_bytes(b"MZ")
    with pytest.raises(TunError, match="cannot load"):
        wt.load(str(dll))


def test_wintun_dll_is_found_beside_python_before_anywhere_else(monkeypatch, tmp_path):
    """Build 4: a user who copied wintun.dll next to python.exe (or into the package, or
    installed pytun-pmd3) needs no --wintun-dll."""
    bin_dir = tmp_path / "Python312"
    bin_dir.mkdir()
    monkeypatch.setattr(wt.sys, "executable", str(bin_dir / "python.exe"))
    candidates = wt.dll_candidates()
    assert candidates[0] == str(bin_dir / "wintun.dll")
    assert os.path.join(ROOT, "engine", "wintun.dll") in candidates
    (bin_dir / "wintun.dll").write_bytes(b"MZ")
    loaded = []
    monkeypatch.setattr(win32, "load_path", lambda path, table: loaded.append(path) or "api")
    assert wt.load(None) == "api" and loaded == [str(bin_dir / "wintun.dll")]


@pytest.mark.parametrize("bits,machine,arch", [(8, "AMD64", "amd64"), (4, "AMD64", "x86"),
                                               (8, "ARM64", "arm64"), (4, "ARM", "arm")])
def test_the_dll_architecture_is_this_pythons(monkeypatch, bits, machine, arch):
    monkeypatch.setattr(wt.struct, "calcsize", lambda fmt: bits)
    monkeypatch.setattr(wt.host, "machine", lambda: machine)
    assert wt.python_arch() == arch


# ---- the session over a fake DLL ---------------------------------------------------
class FakeWintun:
    """wintun.dll with real ring memory: packets are ctypes buffers whose POINTER(BYTE) is
    handed out, as the DLL hands out pointers into its rings."""

    def __init__(self):
        self.err = 0
        self.rx, self.sent, self.released, self.log = [], [], [], []
        self.ring_full = False
        self.adapter_exists = False
        self.create_error = 0
        self.session_error = 0
        self.luid = 0x0102030405060708
        self._live = {}

    def last_error(self):
        return self.err

    def fail(self, what):
        return win32.error(self.err, what)

    def _ptr(self, data: bytes, size=None):
        buf = (ctypes.c_uint8 * (size or max(1, len(data))))(*data)
        ptr = ctypes.cast(buf, win32.PBYTE)
        self._live[ctypes.addressof(buf)] = buf
        return ptr

    def WintunSetLogger(self, cb):
        self.log.append(("logger", cb))

    def WintunOpenAdapter(self, name):
        self.log.append(("open", name))
        if self.adapter_exists:
            return 0xA0
        self.err = win32.ERROR_FILE_NOT_FOUND
        return None

    def WintunCreateAdapter(self, name, tunnel_type, guid):
        self.log.append(("create", name, tunnel_type, guid))
        if self.create_error:
            self.err = self.create_error
            return None
        return 0xA1

    def WintunStartSession(self, adapter, capacity):
        self.log.append(("start", adapter, capacity))
        if self.session_error:
            self.err = self.session_error
            return None
        return 0x5E

    def WintunGetAdapterLUID(self, adapter, luid):
        luid.value = self.luid

    def WintunGetReadWaitEvent(self, session):
        return 0xE7

    def WintunEndSession(self, session):
        self.log.append(("end", session))

    def WintunCloseAdapter(self, adapter):
        self.log.append(("close", adapter))

    def WintunReceivePacket(self, session, size):
        if not self.rx:
            self.err = win32.ERROR_NO_MORE_ITEMS
            return win32.PBYTE()  # NULL
        item = self.rx.pop(0)
        if isinstance(item, int):
            self.err = item
            return win32.PBYTE()
        size.value = len(item)
        return self._ptr(item)

    def WintunReleaseReceivePacket(self, session, packet):
        self.released.append(ctypes.addressof(packet.contents))

    def WintunAllocateSendPacket(self, session, size):
        if self.ring_full:
            self.err = win32.ERROR_BUFFER_OVERFLOW
            return win32.PBYTE()
        return self._ptr(b"", size)

    def WintunSendPacket(self, session, packet):
        buf = self._live[ctypes.addressof(packet.contents)]
        self.sent.append(bytes(buf))


class FakeIphlpapi:
    def __init__(self, code=0):
        self.rows, self.code = [], code

    def InitializeUnicastIpAddressEntry(self, row):
        row.ValidLifetime = row.PreferredLifetime = 0xFFFFFFFF

    def CreateUnicastIpAddressEntry(self, row):
        self.rows.append(bytes(row))
        return self.code


class FakeKernel32:
    def __init__(self):
        self.waits = []

    def WaitForSingleObject(self, h, ms):
        self.waits.append((h, ms))
        return win32.WAIT_TIMEOUT


class FakeRun:
    def __init__(self, returncode=0):
        self.argvs, self.returncode = [], returncode

    def __call__(self, argv, **kw):
        self.argvs.append(argv)
        return subprocess.CompletedProcess(argv, self.returncode, "", "Element not found.")


def open_wintun(dll=None, iphlp=None, run=None, **cfg):
    dll, iphlp, run = dll or FakeWintun(), iphlp or FakeIphlpapi(), run or FakeRun()
    dev = wt.open(Config(driver="wintun", **cfg), dll=dll, kernel32=FakeKernel32(),
                  iphlpapi=iphlp, run=run)
    return dev, dll, iphlp, run


def test_open_creates_the_adapter_and_configures_it():
    dev, dll, iphlp, run = open_wintun(address6=ipaddress.IPv6Interface("2001:db8::1/64"),
                                       mtu=1400)
    assert ("create", "mirror0", wt.TUNNEL_TYPE, None) in dll.log
    assert ("start", 0xA1, 0x400000) in dll.log
    assert dev.created and dev.io_threads and dev.vnet_hdr_len == 0 and dev.mtu == 1400
    v4 = win32.MIB_UNICASTIPADDRESS_ROW.from_buffer_copy(iphlp.rows[0])
    assert v4.Address.Ipv4.sin_family == win32.AF_INET
    assert bytes(v4.Address.Ipv4.sin_addr) == bytes([10, 3, 0, 1])
    assert v4.OnLinkPrefixLength == 24 and v4.DadState == win32.IP_DAD_STATE_PREFERRED
    assert v4.InterfaceLuid == dll.luid
    v6 = win32.MIB_UNICASTIPADDRESS_ROW.from_buffer_copy(iphlp.rows[1])
    assert v6.Address.Ipv6.sin6_family == 23 and v6.OnLinkPrefixLength == 64
    assert bytes(v6.Address.Ipv6.sin6_addr) == ipaddress.IPv6Address("2001:db8::1").packed
    assert run.argvs == [
        ["netsh", "interface", "ipv4", "set", "subinterface", "mirror0", "mtu=1400", "store=active"],
        ["netsh", "interface", "ipv6", "set", "subinterface", "mirror0", "mtu=1400", "store=active"]]


def test_open_reuses_an_existing_adapter():
    dll = FakeWintun()
    dll.adapter_exists = True
    dev, *_ = open_wintun(dll)
    assert not dev.created and not any(e[0] == "create" for e in dll.log)


def test_existing_address_is_fine_other_errors_are_not():
    open_wintun(iphlp=FakeIphlpapi(win32.ERROR_OBJECT_ALREADY_EXISTS))
    dll = FakeWintun()
    with pytest.raises(TunError, match="CreateUnicastIpAddressEntry"):
        open_wintun(dll, iphlp=FakeIphlpapi(win32.ERROR_INVALID_PARAMETER))
    assert ("end", 0x5E) in dll.log and ("close", 0xA1) in dll.log


def test_create_needs_elevation():
    dll = FakeWintun()
    dll.create_error = win32.ERROR_ACCESS_DENIED
    with pytest.raises(TunError, match="Administrator"):
        open_wintun(dll)


def test_failed_session_closes_the_adapter():
    dll = FakeWintun()
    dll.session_error = win32.ERROR_INVALID_PARAMETER
    with pytest.raises(TunError, match="WintunStartSession"):
        open_wintun(dll)
    assert ("close", 0xA1) in dll.log and not any(e[0] == "end" for e in dll.log)


def test_failed_netsh_cleans_up():
    dll = FakeWintun()
    with pytest.raises(TunError, match="netsh.*Element not found"):
        open_wintun(dll, run=FakeRun(returncode=1))
    assert ("end", 0x5E) in dll.log and ("close", 0xA1) in dll.log


def test_read_batch_copies_and_releases_each_packet():
    dev, dll, *_ = open_wintun()
    dll.rx = [b"\x45" + b"a" * 27, b"\x60" + b"b" * 47]
    out, lengths = [memoryview(bytearray(2048)) for _ in range(4)], [0] * 4
    assert dev.read_batch(out, lengths) == 2
    assert lengths[:2] == [28, 48] and bytes(out[1][:48]) == b"\x60" + b"b" * 47
    assert len(dll.released) == 2
    assert dev.read_batch(out, lengths) == 0  # ERROR_NO_MORE_ITEMS


def test_oversize_packet_is_reported_full():
    dev, dll, *_ = open_wintun()
    dll.rx = [b"\x45" * 200]
    out, lengths = [memoryview(bytearray(64))], [0]
    assert dev.read_batch(out, lengths) == 1 and lengths[0] == 64 and len(dll.released) == 1


def test_terminating_adapter_raises():
    dev, dll, *_ = open_wintun()
    dll.rx = [win32.ERROR_HANDLE_EOF]
    with pytest.raises(OSError) as e:
        dev.read_batch([memoryview(bytearray(64))], [0])
    assert e.value.winerror == win32.ERROR_HANDLE_EOF


def test_write_batch_copies_into_the_send_ring():
    dev, dll, *_ = open_wintun()
    frames = [bytearray(b"\x45" + bytes(range(1, 60))), bytearray(b"\x60" * 80)]
    assert dev.write_batch([memoryview(f) for f in frames], [60, 40]) == 0
    assert dll.sent == [bytes(frames[0][:60]), bytes(frames[1][:40])]


def test_full_send_ring_refuses_frames():
    dev, dll, *_ = open_wintun()
    dll.ring_full = True
    assert dev.write_batch([memoryview(bytearray(40))] * 3, [40] * 3) == 3


def test_wait_uses_the_read_event():
    dev, *_ = open_wintun()
    dev.wait(0.05)
    assert dev._k.waits == [(0xE7, 50)]
    assert dev.fileno() == -1


def test_close_is_idempotent_and_final():
    dev, dll, *_ = open_wintun()
    dev.close()
    dev.close()
    assert dll.log.count(("end", 0x5E)) == 1 and dll.log.count(("close", 0xA1)) == 1
    with pytest.raises(ValueError, match="closed"):
        dev.read_batch([memoryview(bytearray(64))], [0])


def test_session_does_not_pickle():
    dev, *_ = open_wintun()
    with pytest.raises(TypeError, match="io_threads"):
        pickle.dumps(dev)


def test_unicast_row_layout():
    row = win32.MIB_UNICASTIPADDRESS_ROW
    assert ctypes.sizeof(row) == 80  # netioapi.h on 64-bit Windows
    assert (row.InterfaceLuid.offset, row.OnLinkPrefixLength.offset, row.DadState.offset,
            row.CreationTimeStamp.offset) == (32, 60, 64, 72)
    assert ctypes.sizeof(win32.SOCKADDR_INET) == 28


def test_the_wintun_session_offers_its_read_wait_event():
    dev = open_wintun()[0]
    assert dev.waitable() == 0xE7
    dev.close()
    with pytest.raises(ValueError, match="closed"):
        dev.waitable()
