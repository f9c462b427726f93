"""TAP-Windows backend above the OS call boundary, on any OS: IOCTL codes and buffers,
the registry walk over an injected reader, and the overlapped-I/O state machine over a
fake kernel32 that behaves like the documented API (WINDOWS.md §2, §6)."""
from __future__ import annotations

import ctypes
import ipaddress
import logging
import pickle
import struct
import threading

import pytest

from engine.config import Config
from engine.tun import TunError, tap_windows as tw, win32

GUID_A = "{11111111-2222-3333-4444-555555555555}"
GUID_B = "{AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE}"


# ---- IOCTL codes and buffers -------------------------------------------------------
@pytest.mark.parametrize("name,code", [
    ("GET_MAC", 0x220004), ("GET_VERSION", 0x220008), ("GET_MTU", 0x22000C),
    ("GET_INFO", 0x220010), ("CONFIG_POINT_TO_POINT", 0x220014),
    ("SET_MEDIA_STATUS", 0x220018), ("CONFIG_DHCP_MASQ", 0x22001C),
    ("GET_LOG_LINE", 0x220020), ("CONFIG_DHCP_SET_OPT", 0x220024), ("CONFIG_TUN", 0x220028),
])
def test_ioctl_codes(name, code):
    assert getattr(tw, f"TAP_IOCTL_{name}") == code


def test_ctl_code_is_winioctl_formula():
    # CTL_CODE(0x22, fn, METHOD_BUFFERED, FILE_ANY_ACCESS) = 0x220000 | fn << 2
    assert tw.ctl_code(0x22, 10, 0, 0) == 0x220000 | 10 << 2
    assert tw.ctl_code(0x22, 1, 3, 2) == (0x22 << 16) | (2 << 14) | (1 << 2) | 3


def test_config_tun_buffer_matches_the_article():
    buf = tw.config_tun_buffer(ipaddress.IPv4Interface("10.3.0.1/24"))
    assert buf == bytes([10, 3, 0, 1, 10, 3, 0, 0, 255, 255, 255, 0])
    # the C# sample's little-endian ints 0x0100030a, 0x0000030a, 0x00ffffff
    assert buf == struct.pack("<3I", 0x0100030A, 0x0000030A, 0x00FFFFFF)


def test_config_tun_network_is_local_and_mask():
    buf = tw.config_tun_buffer(ipaddress.IPv4Interface("198.18.77.9/16"))
    assert buf == bytes([198, 18, 77, 9, 198, 18, 0, 0, 255, 255, 0, 0])
    local, net, mask = struct.unpack("!3I", buf)
    assert net & mask == net and local & mask == net


def test_point_to_point_buffer_and_peer():
    iface = ipaddress.IPv4Interface("10.3.0.1/24")
    peer = tw.point_to_point_peer(iface)
    assert str(peer) == "10.3.0.2"
    assert tw.point_to_point_buffer(iface.ip, peer) == bytes([10, 3, 0, 1, 10, 3, 0, 2])
    assert str(tw.point_to_point_peer(ipaddress.IPv4Interface("10.3.0.2/24"))) == "10.3.0.1"


def test_media_status_and_version_layout():
    assert tw.MEDIA_CONNECTED == b"\x01\x00\x00\x00"
    assert tw.parse_version(struct.pack("<3I", 9, 24, 1)) == (9, 24, 1)


def test_device_path():
    assert tw.Adapter(GUID_A, "tap0901", "mirror0").path == "\\\\.\\Global\\" + GUID_A + ".tap"


# ---- registry walk -----------------------------------------------------------------
class FakeRegistry:
    """HKLM as a dict {key path: {value name: str}}; keys in `denied` raise access denied."""

    def __init__(self, keys, denied=()):
        self.keys, self.denied, self.reads = keys, set(denied), []

    def subkeys(self, path):
        if path in self.denied:
            raise PermissionError(13, "Access is denied")
        if path not in self.keys:
            raise FileNotFoundError(2, "no such key")
        prefix = path + "\\"
        return [k[len(prefix):] for k in self.keys if k.startswith(prefix)
                and "\\" not in k[len(prefix):]]

    def value(self, path, name):
        self.reads.append(path)
        if path in self.denied:
            raise PermissionError(13, "Access is denied")
        return self.keys.get(path, {}).get(name)


def _class_key(sub):
    return f"{tw.ADAPTER_KEY}\\{sub}"


def _conn_key(guid):
    return f"{tw.NETWORK_CONNECTIONS_KEY}\\{guid}\\Connection"


def registry(*adapters, denied=("Properties",)):
    """adapters: (subkey, component id, guid, connection name)."""
    keys = {tw.ADAPTER_KEY: {}, _class_key("Properties"): {}, _class_key("Configuration"): {}}
    for sub, comp, guid, name in adapters:
        keys[_class_key(sub)] = {"ComponentId": comp, "NetCfgInstanceId": guid}
        if name is not None:
            keys[_conn_key(guid)] = {"Name": name}
    return FakeRegistry(keys, denied=[_class_key(d) for d in denied])


def test_walk_finds_every_tap_flavour_case_insensitively():
    reg = registry(("0000", "PCI\\VEN_8086", "{99999999-0000-0000-0000-000000000000}", "Ethernet"),
                   ("0001", "TAP0901", GUID_A, "mirror0"),
                   ("0002", "root\\TAP0901", GUID_B, "Local Area Connection 2"),
                   ("0003", "tap0801", "{CCCCCCCC-0000-0000-0000-000000000000}", None),
                   ("0004", "wintun", "{DDDDDDDD-0000-0000-0000-000000000000}", "wg0"))
    found = tw.find_adapters(reg)
    assert [(a.component_id, a.guid, a.name) for a in found] == [
        ("tap0901", GUID_A, "mirror0"),
        ("root\\tap0901", GUID_B, "Local Area Connection 2"),
        ("tap0801", "{CCCCCCCC-0000-0000-0000-000000000000}", None)]


def test_walk_never_reads_non_numeric_subkeys():
    reg = registry(("0001", "tap0901", GUID_A, "mirror0"))
    tw.find_adapters(reg)
    assert _class_key("Properties") not in reg.reads
    assert _class_key("Configuration") not in reg.reads


def test_walk_skips_a_numeric_subkey_it_may_not_read():
    reg = registry(("0000", "tap0901", GUID_B, "other"), ("0001", "tap0901", GUID_A, "mirror0"),
                   denied=("Properties", "0000"))
    assert [a.guid for a in tw.find_adapters(reg)] == [GUID_A]


def test_walk_skips_adapters_without_instance_id():
    reg = registry(("0001", "tap0901", None, None))
    assert tw.find_adapters(reg) == []


def test_select_by_name_or_guid_case_insensitively():
    adapters = tw.find_adapters(registry(("0001", "tap0901", GUID_A, "Mirror0"),
                                         ("0002", "tap0901", GUID_B, "vpn")))
    assert tw.select_adapter(adapters, "mirror0").guid == GUID_A
    assert tw.select_adapter(adapters, GUID_B.lower()).name == "vpn"


def test_select_with_none_installed():
    with pytest.raises(TunError, match="no TAP-Windows adapter is installed"):
        tw.select_adapter(tw.find_adapters(registry()), "mirror0")


def test_select_without_a_match_lists_what_exists():
    adapters = tw.find_adapters(registry(("0001", "tap0901", GUID_A, "Ethernet 3")))
    with pytest.raises(TunError, match=r"no TAP-Windows adapter named 'mirror0'; found 'Ethernet 3'"):
        tw.select_adapter(adapters, "mirror0")


# ---- a fake kernel32 ---------------------------------------------------------------
class FakeKernel32:
    """Behaves like the documented overlapped API on one TAP device. Reads complete at once
    while packets are queued, else go pending until deliver(); `read_errors` and
    `write_errors` make the next completions fail with a Windows error code."""

    def __init__(self, version=(9, 24, 0), mtu=1500, ioctl_errors=None, create_error=0):
        self.version, self.mtu = version, mtu
        self.ioctl_errors = dict(ioctl_errors or {})
        self.create_error = create_error
        self.err = 0
        self.calls, self.ioctls, self.written = [], [], []
        self.queue, self.read_errors, self.write_errors = [], [], []
        self.write_pending = False
        self.ov = {}          # addressof(OVERLAPPED) -> ("pending", buf) | ("done", n) | ("error", code)
        self.closed, self.events = [], 100
        self.handle = 0x1234

    def last_error(self):
        return self.err

    def fail(self, what):
        return win32.error(self.err, what)

    def _fail(self, code):
        self.err = code
        return False

    def CreateFileW(self, path, access, share, sa, disposition, flags, template):
        self.calls.append(("CreateFileW", path, access, share, disposition, flags))
        if self.create_error:
            self.err = self.create_error
            return win32.INVALID_HANDLE_VALUE
        return self.handle

    def CreateEventW(self, sa, manual, initial, name):
        assert manual and not initial
        self.events += 1
        return self.events

    def CloseHandle(self, h):
        self.closed.append(h)
        return True

    def DeviceIoControl(self, h, code, inbuf, inlen, outbuf, outlen, got, ov):
        assert ov is not None, "overlapped handle: DeviceIoControl needs an OVERLAPPED"
        self.ioctls.append((code, inbuf.raw[:inlen] if inbuf else b""))
        if code in self.ioctl_errors:
            return self._fail(self.ioctl_errors[code])
        out = {tw.TAP_IOCTL_GET_VERSION: struct.pack("<3I", *self.version),
               tw.TAP_IOCTL_GET_MTU: struct.pack("<I", self.mtu),
               tw.TAP_IOCTL_SET_MEDIA_STATUS: b"\1\0\0\0"}.get(code, b"")
        out = out[:outlen]
        if out:
            ctypes.memmove(outbuf, out, len(out))
        self.ov[ctypes.addressof(ov)] = ("done", len(out))
        return True

    def ReadFile(self, h, buf, n, got, ov):
        assert got is None and h == self.handle
        self.calls.append(("ReadFile", n))
        key = ctypes.addressof(ov)
        assert self.ov.get(key, ("done",))[0] != "pending", "OVERLAPPED reused while pending"
        if self.read_errors:
            return self._fail(self.read_errors.pop(0))
        if self.queue:
            self._complete(key, buf, self.queue.pop(0))
            return True
        self.ov[key] = ("pending", buf)
        return self._fail(win32.ERROR_IO_PENDING)

    def _complete(self, key, buf, packet):
        if isinstance(packet, int):  # an error code for this completion
            self.ov[key] = ("error", packet)
            return
        ctypes.memmove(buf, packet, len(packet))
        self.ov[key] = ("done", len(packet))

    def deliver(self, packet):
        """A packet (or an error code) arrives: it completes the pending read, or queues."""
        for key, state in self.ov.items():
            if state[0] == "pending":
                self._complete(key, state[1], packet)
                return
        self.queue.append(packet)

    def WriteFile(self, h, data, n, got, ov):
        key = ctypes.addressof(ov)
        if self.write_errors:
            return self._fail(self.write_errors.pop(0))
        self.written.append(data.raw[:n])
        if self.write_pending:
            self.ov[key] = ("pending-write", n)
            return self._fail(win32.ERROR_IO_PENDING)
        self.ov[key] = ("done", n)
        return True

    def GetOverlappedResult(self, h, ov, got, wait):
        self.calls.append(("GetOverlappedResult", bool(wait)))
        key = ctypes.addressof(ov)
        state = self.ov.get(key)
        if state[0] == "pending-write":  # the write completes when waited for
            state = self.ov[key] = ("done", state[1])
        if state[0] == "pending":
            assert not wait, "would block forever"
            return self._fail(win32.ERROR_IO_INCOMPLETE)
        if state[0] == "error":
            return self._fail(state[1])
        got.value = state[1]
        return True

    def CancelIoEx(self, h, ov):
        self.calls.append(("CancelIoEx", ov))
        hit = False
        for key, state in self.ov.items():
            if state[0] == "pending":
                self.ov[key] = ("error", win32.ERROR_OPERATION_ABORTED)
                hit = True
        return True if hit else self._fail(win32.ERROR_NOT_FOUND)

    def WaitForSingleObject(self, h, ms):
        self.calls.append(("WaitForSingleObject", h, ms))
        return win32.WAIT_TIMEOUT

    def count(self, name):
        return sum(1 for c in self.calls if c[0] == name)


def open_tap(k32=None, **cfg):
    k32 = k32 or FakeKernel32()
    reg = registry(("0001", "tap0901", GUID_A, "mirror0"))
    return tw.open(Config(**cfg), kernel32=k32, registry=reg), k32


def bufs(n, size=2048):
    return [memoryview(bytearray(size)) for _ in range(n)]


# ---- opening and configuring -------------------------------------------------------
def test_open_sequence():
    dev, k = open_tap()
    name, path, access, share, disposition, flags = k.calls[0]
    assert path == "\\\\.\\Global\\" + GUID_A + ".tap"
    assert access == win32.GENERIC_READ | win32.GENERIC_WRITE and share == 0
    assert disposition == win32.OPEN_EXISTING
    assert flags == win32.FILE_ATTRIBUTE_SYSTEM | win32.FILE_FLAG_OVERLAPPED
    assert k.ioctls == [(tw.TAP_IOCTL_GET_VERSION, b""), (tw.TAP_IOCTL_GET_MTU, b""),
                        (tw.TAP_IOCTL_CONFIG_TUN, bytes.fromhex("0a030001" "0a030000" "ffffff00")),
                        (tw.TAP_IOCTL_SET_MEDIA_STATUS, b"\1\0\0\0")]
    assert (dev.name, dev.mtu, dev.guid, dev.version) == ("mirror0", 1500, GUID_A, (9, 24, 0))
    assert dev.config_mode == "tun" and dev.passes_ipv6
    assert dev.io_threads and dev.vnet_hdr_len == 0 and not dev.created
    assert dev.fileno() == -1


def test_tap_mode_skips_config_tun_and_carries_ethernet():
    """The non-TUN mode of the driver (issue 7): no CONFIG_TUN, Ethernet frames both ways."""
    dev, k = open_tap(mode="tap")
    assert [c for c, _ in k.ioctls] == [tw.TAP_IOCTL_GET_VERSION, tw.TAP_IOCTL_GET_MTU,
                                        tw.TAP_IOCTL_SET_MEDIA_STATUS]
    assert (dev.mode, dev.l2_hdr_len, dev.config_mode) == ("tap", 14, "tap")


def test_open_uses_the_configured_address():
    _, k = open_tap(address=ipaddress.IPv4Interface("198.18.0.1/15"))
    assert k.ioctls[2] == (tw.TAP_IOCTL_CONFIG_TUN, bytes([198, 18, 0, 1, 198, 18, 0, 0,
                                                           255, 254, 0, 0]))


def test_driver_older_than_8_2_gets_point_to_point():
    dev, k = open_tap(FakeKernel32(version=(8, 1, 0)))
    codes = [c for c, _ in k.ioctls]
    assert tw.TAP_IOCTL_CONFIG_TUN not in codes
    assert (tw.TAP_IOCTL_CONFIG_POINT_TO_POINT, bytes([10, 3, 0, 1, 10, 3, 0, 2])) in k.ioctls
    assert dev.config_mode == "point-to-point 10.3.0.2" and not dev.passes_ipv6


def test_config_tun_unknown_to_the_driver_falls_back():
    k = FakeKernel32(version=(8, 4, 0),
                     ioctl_errors={tw.TAP_IOCTL_CONFIG_TUN: win32.ERROR_INVALID_FUNCTION})
    dev, _ = open_tap(k)
    assert dev.config_mode.startswith("point-to-point")


def test_config_tun_rejected_is_an_error_and_closes_the_handle():
    k = FakeKernel32(ioctl_errors={tw.TAP_IOCTL_CONFIG_TUN: win32.ERROR_INVALID_PARAMETER})
    with pytest.raises(TunError, match=r"CONFIG_TUN.*parameter is incorrect"):
        open_tap(k)
    assert k.handle in k.closed


def test_second_open_says_the_adapter_is_busy():
    with pytest.raises(TunError, match=r"already open.*\[WinError 31\]"):
        open_tap(FakeKernel32(create_error=win32.ERROR_GEN_FAILURE))


def test_buggy_9_8_driver_is_refused():
    k = FakeKernel32(version=(9, 8, 0))
    with pytest.raises(TunError, match="9.8"):
        open_tap(k)
    assert k.handle in k.closed


def test_ipv6_needs_a_driver_that_passes_it():
    with pytest.raises(TunError, match="does not pass IPv6"):
        open_tap(FakeKernel32(version=(9, 7, 0)),
                 address6=ipaddress.IPv6Interface("2001:db8::1/64"))
    dev, _ = open_tap(address6=ipaddress.IPv6Interface("2001:db8::1/64"))
    assert dev.passes_ipv6


def test_registry_failure_is_a_tun_error():
    class Broken:
        def subkeys(self, path):
            raise PermissionError(13, "Access is denied")
    with pytest.raises(TunError, match="registry"):
        tw.open(Config(), kernel32=FakeKernel32(), registry=Broken())


# ---- reading -----------------------------------------------------------------------
def test_reads_queued_packets_with_one_read_in_flight():
    dev, k = open_tap()
    for p in (b"\x45" + b"a" * 27, b"\x45" + b"b" * 99, b"\x60" + b"c" * 59):
        k.deliver(p)
    out, lengths = bufs(5), [0] * 5
    assert dev.read_batch(out, lengths) == 3
    assert lengths[:3] == [28, 100, 60]
    assert bytes(out[1][:100]) == b"\x45" + b"b" * 99
    # the fourth read went pending: nothing more, and no second ReadFile while it is
    reads = k.count("ReadFile")
    assert dev.read_batch(out, lengths) == 0
    assert k.count("ReadFile") == reads
    k.deliver(b"\x45" + b"d" * 39)
    assert dev.read_batch(out, lengths) == 1 and lengths[0] == 40


def test_read_batch_stops_at_the_number_of_buffers():
    dev, k = open_tap()
    for _ in range(3):
        k.deliver(b"\x45" * 20)
    out, lengths = bufs(2), [0, 0]
    assert dev.read_batch(out, lengths) == 2
    assert dev.read_batch(out, lengths) == 1


def test_zero_length_read_is_not_a_frame():
    dev, k = open_tap()
    k.deliver(b"")
    k.deliver(b"\x45" * 20)
    out, lengths = bufs(4), [0] * 4
    assert dev.read_batch(out, lengths) == 0
    assert dev.read_batch(out, lengths) == 1 and lengths[0] == 20


def test_packet_bigger_than_the_slot_is_reported_full():
    dev, k = open_tap()
    k.deliver(b"\x45" * 300)
    out, lengths = bufs(1, size=128), [0]
    assert dev.read_batch(out, lengths) == 1 and lengths[0] == 128  # caller: too_big


def test_driver_buffer_overflow_is_reported_full():
    dev, k = open_tap()
    out, lengths = bufs(1, size=64), [0]
    assert dev.read_batch(out, lengths) == 0        # pending
    k.deliver(win32.ERROR_MORE_DATA)
    assert dev.read_batch(out, lengths) == 1 and lengths[0] == 64


def test_failed_read_raises_with_the_windows_code():
    dev, k = open_tap()
    k.read_errors.append(win32.ERROR_DEVICE_NOT_CONNECTED)
    with pytest.raises(OSError) as e:
        dev.read_batch(bufs(1), [0])
    assert e.value.winerror == win32.ERROR_DEVICE_NOT_CONNECTED
    assert "device is not connected" in str(e.value)


def test_failed_pending_read_raises_and_the_next_one_is_posted():
    dev, k = open_tap()
    assert dev.read_batch(bufs(1), [0]) == 0
    k.deliver(win32.ERROR_GEN_FAILURE)
    with pytest.raises(OSError):
        dev.read_batch(bufs(1), [0])
    k.deliver(b"\x45" * 20)
    assert dev.read_batch(bufs(1), [0]) == 1


def test_cancelled_read_yields_nothing():
    dev, k = open_tap()
    assert dev.read_batch(bufs(1), [0]) == 0
    k.CancelIoEx(k.handle, None)
    assert dev.read_batch(bufs(1), [0]) == 0


def test_wait_posts_a_read_and_waits_on_its_event():
    dev, k = open_tap()
    dev.wait(0.25)
    assert k.count("ReadFile") == 1
    _, event, ms = [c for c in k.calls if c[0] == "WaitForSingleObject"][0]
    assert event == dev._rov.hEvent and ms == 250
    dev.wait(0.1)
    assert k.count("ReadFile") == 1  # still the same read in flight


# ---- writing -----------------------------------------------------------------------
def test_write_batch_writes_exact_bytes():
    dev, k = open_tap()
    frames = [bytearray(b"\x45" + bytes(range(1, 40))), bytearray(b"\x60" * 64)]
    assert dev.write_batch([memoryview(f) for f in frames], [40, 48]) == 0
    assert k.written == [bytes(frames[0][:40]), bytes(frames[1][:48])]


def test_pending_write_is_waited_for():
    dev, k = open_tap()
    k.write_pending = True
    assert dev.write_batch([memoryview(bytearray(b"\x45" * 20))], [20]) == 0
    assert ("GetOverlappedResult", True) in k.calls


def test_refused_write_is_counted_and_the_batch_goes_on():
    dev, k = open_tap()
    k.write_errors.append(win32.ERROR_INVALID_PARAMETER)
    frames = [memoryview(bytearray(b"\x45" * 20)) for _ in range(3)]
    assert dev.write_batch(frames, [20, 20, 20]) == 1
    assert len(k.written) == 2


# ---- closing and pickling ----------------------------------------------------------
def test_close_cancels_and_waits_for_the_pending_read():
    dev, k = open_tap()
    assert dev.read_batch(bufs(1), [0]) == 0          # a read is in flight
    assert dev.write_batch([memoryview(bytearray(b"\x45" * 20))], [20]) == 0
    events = (dev._rov.hEvent, *(w.ov.hEvent for w in dev._writes.values()))
    assert len(events) == 2
    dev.close()
    i = k.calls.index(("CancelIoEx", None))
    assert ("GetOverlappedResult", True) in k.calls[i:]  # waited before freeing the buffer
    assert set(events) | {k.handle} <= set(k.closed)
    n = len(k.calls) + len(k.closed)
    dev.close()                                        # idempotent
    assert len(k.calls) + len(k.closed) == n
    for op in (lambda: dev.read_batch(bufs(1), [0]), lambda: dev.write_batch([], []),
               lambda: dev.wait(0.1)):
        with pytest.raises(ValueError, match="closed"):
            op()


def test_close_without_io_in_flight():
    dev, k = open_tap()
    dev.close()
    assert ("GetOverlappedResult", True) not in k.calls[k.calls.index(("CancelIoEx", None)):]
    assert k.handle in k.closed


class FakeDup:
    """multiprocessing.reduction.DupHandle stand-in: the child 'takes over' a new value."""

    def __init__(self, handle, access):
        self.handle, self.access = handle, access

    def detach(self):
        return self.handle + 0x1000


def test_device_pickles_through_duplicate_handle(monkeypatch):
    dev, k = open_tap()
    seen = []
    monkeypatch.setattr(win32, "duplicate_for_child",
                        lambda h, access: seen.append((h, access)) or FakeDup(h, access))
    monkeypatch.setitem(win32._loaded, "kernel32", k)
    child = pickle.loads(pickle.dumps(dev))
    assert seen == [(k.handle, win32.FILE_GENERIC_READ | win32.FILE_GENERIC_WRITE)]
    assert child._h == k.handle + 0x1000
    assert (child.name, child.mtu, child.guid, child.version, child.config_mode) == \
        (dev.name, dev.mtu, dev.guid, dev.version, dev.config_mode)
    assert child._rov.hEvent != dev._rov.hEvent  # its own events


# ---- win32 helpers -----------------------------------------------------------------
def test_error_carries_code_and_text():
    e = win32.error(win32.ERROR_ACCESS_DENIED, "CreateFileW(x)")
    assert isinstance(e, OSError) and e.winerror == 5
    assert e.strerror == "CreateFileW(x): Access is denied."
    if not hasattr(ctypes, "FormatError"):
        assert win32.error(123456, "x").strerror == "x: Windows error 123456"


def test_kernel32_declarations_on_a_fake_dll():
    class Fn:
        pass

    class Dll:
        def __getattr__(self, name):
            fn = Fn()
            setattr(self, name, fn)
            return fn
    api = win32.Api(Dll(), win32.KERNEL32, lambda: 0)
    assert api.CreateFileW.restype is win32.HANDLE and len(api.CreateFileW.argtypes) == 7
    assert api.ReadFile.argtypes[-1] is win32.LPOVERLAPPED
    assert api.DeviceIoControl.restype is win32.BOOL and len(api.DeviceIoControl.argtypes) == 8
    assert api.WaitForSingleObject.restype is win32.DWORD
    assert all(ctypes.sizeof(t) == 4 for t in (win32.DWORD, win32.BOOL, win32.ULONG))


def test_overlapped_layout():
    ptr = ctypes.sizeof(ctypes.c_void_p)  # minwinbase.h: 3 pointer-sized fields + 2 DWORDs
    assert ctypes.sizeof(win32.OVERLAPPED) == 3 * ptr + 8
    assert win32.OVERLAPPED.hEvent.offset == 2 * ptr + 8


@pytest.mark.skipif(hasattr(ctypes, "WinDLL"), reason="checks the non-Windows behaviour")
def test_loading_a_windows_dll_elsewhere_is_a_clear_oserror():
    with pytest.raises(OSError, match="only on Windows"):
        win32.load("kernel32", win32.KERNEL32)
    assert "kernel32" not in win32._loaded


def test_c_buffer_shares_writable_memory():
    mem = bytearray(8)
    win32.c_buffer(memoryview(mem))[0] = b"x"
    assert mem[0:1] == b"x"


# ---- two writing threads (defect 6) and a refusing driver (defect 7) -----------------
class GatedWrites(FakeKernel32):
    """The first write goes pending and its wait blocks until `gate` opens; a WriteFile on
    an OVERLAPPED that is still pending is recorded (the documented API forbids it)."""

    def __init__(self):
        super().__init__()
        self.gate, self.first_waiting = threading.Event(), threading.Event()
        self.reused, self.first_key = [], None

    def WriteFile(self, h, data, n, got, ov):
        key = ctypes.addressof(ov)
        if self.ov.get(key, ("done",))[0] == "pending-write":
            self.reused.append(key)
        self.written.append(data.raw[:n])
        if self.first_key is None:
            self.first_key = key
            self.ov[key] = ("pending-write", n)
            return self._fail(win32.ERROR_IO_PENDING)
        self.ov[key] = ("done", n)
        return True

    def GetOverlappedResult(self, h, ov, got, wait):
        key = ctypes.addressof(ov)
        if key == self.first_key and self.ov[key][0] == "pending-write":
            if key in self.reused:
                return self._fail(win32.ERROR_INVALID_PARAMETER)  # would never complete
            self.first_waiting.set()
            assert self.gate.wait(30), "the test never opened the gate"
        return super().GetOverlappedResult(h, ov, got, wait)


def test_two_threads_writing_at_once_each_use_their_own_overlapped():
    """TAP mode: the writer thread's frame is still in flight while the reader thread
    writes an ARP reply. Sharing one OVERLAPPED between them corrupts both."""
    k = GatedWrites()
    dev, _ = open_tap(k, mode="tap")
    results = []
    writer = threading.Thread(target=lambda: results.append(
        dev.write_batch([memoryview(bytearray(b"\x45" * 40))], [40])))
    writer.start()
    try:
        assert k.first_waiting.wait(30)
        assert dev.write_batch([memoryview(bytearray(b"\x08" * 42))], [42]) == 0  # "reader"
    finally:
        k.gate.set()
        writer.join(30)
    assert results == [0] and k.reused == []
    assert sorted(len(w) for w in k.written) == [40, 42]
    events = {w.ov.hEvent for w in dev._writes.values()}
    assert len(events) == 2
    dev.close()
    assert events <= set(k.closed)


class RefusingReads(FakeKernel32):
    """tap-windows6 while the adapter is not ready: every read completes at once with
    STATUS_CANCELLED (ERROR_OPERATION_ABORTED)."""

    refusing = True

    def ReadFile(self, h, buf, n, got, ov):
        if self.refusing:
            self.calls.append(("ReadFile", n))
            return self._fail(win32.ERROR_OPERATION_ABORTED)
        return super().ReadFile(h, buf, n, got, ov)


def test_reads_refused_by_a_not_ready_adapter_back_off_and_say_why(monkeypatch, caplog):
    dev, k = open_tap(RefusingReads())
    slept = []
    monkeypatch.setattr("time.sleep", slept.append)
    with caplog.at_level(logging.INFO, logger="engine"):
        for _ in range(3):
            assert dev.read_batch(bufs(4), [0] * 4) == 0
            dev.wait(0.25)
        assert slept == [0.25, 0.25, 0.25]     # a wait, not a spin, per refused read
        refusals = [r for r in caplog.records if "refuses reads" in r.message]
        assert len(refusals) == 1 and "not ready" in refusals[0].message
        assert "WinError 995" in refusals[0].message and refusals[0].levelname == "WARNING"
        k.refusing = False                     # the adapter comes up
        k.deliver(b"\x45" * 20)
        assert dev.read_batch(bufs(1), [0]) == 1
    assert "mirror0 accepts reads again" in caplog.text


# ---- the adapter's IPv4 address (Build 4) ---------------------------------------------
class FakeIphlpapi:
    """GetUnicastIpAddressTable over a real netioapi.h table in ctypes memory."""

    def __init__(self, rows, luid=0x77):
        self.rows, self.luid, self.freed, self.guids = rows, luid, [], []

    def ConvertInterfaceGuidToLuid(self, pguid, pluid):
        self.guids.append(bytes(pguid._obj))
        pluid._obj.value = self.luid
        return 0

    def GetUnicastIpAddressTable(self, family, ptable):
        assert family == win32.AF_INET
        size = win32.MIB_UNICASTIPADDRESS_TABLE.Table.offset + \
            ctypes.sizeof(win32.MIB_UNICASTIPADDRESS_ROW) * max(1, len(self.rows))
        self.buf = ctypes.create_string_buffer(size)
        table = win32.MIB_UNICASTIPADDRESS_TABLE.from_buffer(self.buf)
        table.NumEntries = len(self.rows)
        rows = (win32.MIB_UNICASTIPADDRESS_ROW * len(self.rows)).from_address(
            ctypes.addressof(table.Table))
        for row, (text, origin, luid) in zip(rows, self.rows):
            iface = ipaddress.IPv4Interface(text)
            row.Address.Ipv4.sin_family = win32.AF_INET
            row.Address.Ipv4.sin_addr[:] = iface.ip.packed
            row.OnLinkPrefixLength = iface.network.prefixlen
            row.PrefixOrigin, row.InterfaceLuid = origin, luid
        ptable._obj.contents = table
        return 0

    def FreeMibTable(self, table):
        self.freed.append(table)


def test_the_adapters_ipv4_addresses_come_from_its_luid_rows():
    from engine.tun import win_address
    ip = FakeIphlpapi([("198.18.0.1/24", 1, 0x77), ("192.0.2.9/24", 3, 0x99),
                       ("169.254.7.7/16", 3, 0x77)])
    assert win_address.ipv4_addresses(ip, GUID_A) == [
        (ipaddress.IPv4Interface("198.18.0.1/24"), False),
        (ipaddress.IPv4Interface("169.254.7.7/16"), True)]
    assert ip.guids == [__import__("uuid").UUID(GUID_A).bytes_le] and len(ip.freed) == 1
    assert win32.MIB_UNICASTIPADDRESS_TABLE.Table.offset == 8


@pytest.mark.parametrize("rows,says", [
    ([("198.18.0.1/24", 1, 0x77)], None),
    ([], "mirror0 has no IPv4 address; the mirror needs 198.18.0.1/24 there"),
    ([("169.254.7.7/16", 3, 0x77)], "mirror0 has 169.254.7.7/16 (APIPA: it waits for a DHCP "
                                    "server that is not there)"),
    ([("192.0.2.9/24", 3, 0x77)], "mirror0 takes 192.0.2.9/24 from DHCP"),
    ([("198.18.0.2/24", 1, 0x77)], "mirror0 has 198.18.0.2/24; the mirror needs 198.18.0.1/24"),
])
def test_opening_says_when_the_adapter_lacks_the_mirrors_address(rows, says, caplog):
    with caplog.at_level(logging.WARNING, logger="engine"):
        tw.open(Config(address=ipaddress.IPv4Interface("198.18.0.1/24")),
                kernel32=FakeKernel32(), registry=registry(("0001", "tap0901", GUID_A, "mirror0")),
                iphlpapi=FakeIphlpapi(rows))
    warnings = [r.message for r in caplog.records if r.levelname == "WARNING"]
    if says is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and warnings[0].startswith(says), warnings
        assert "tools/provision.ps1 -Action Configure" in warnings[0]


def test_the_tap_device_has_the_reader_use_its_wait():
    dev, k = open_tap()
    assert dev.waitable() is None   # wait() posts the read and backs off when refused
    dev.close()
    with pytest.raises(ValueError, match="closed"):
        dev.waitable()
