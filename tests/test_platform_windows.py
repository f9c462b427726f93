"""engine/platform/windows.py over a fake kernel32 that behaves like the documented API:
the wake-up events (auto-reset, waited on with WaitForMultipleObjects, crossing into a
child through DuplicateHandle) and the Job Object that ends the children with the
supervisor. Runs on any OS: nothing here loads a DLL."""
from __future__ import annotations

import ctypes
import logging
import pickle

import pytest

from engine import reader as reader_mod, shm
from engine.actor import Context
from engine.platform import windows as pw
from engine.packet import Mirror
from engine.config import parse_address
from engine.tun import win32
from engine.wake import Sleeper, Waker
from test_tun_windows import FakeDup


class FakeKernel32:
    """Events and jobs as kernel objects: an event is signalled or not, and a wait that
    returns on an auto-reset event resets it (CreateEventW, WaitForMultipleObjects docs)."""

    def __init__(self):
        self.err, self.next = 0, 0x100
        self.events = {}            # handle -> {"manual": bool, "set": bool}
        self.calls, self.closed = [], []
        self.jobs, self.assigned = {}, []
        self.assign_error = 0

    def last_error(self):
        return self.err

    def fail(self, what):
        return win32.error(self.err, what)

    def _handle(self):
        self.next += 4
        return self.next

    def CreateEventW(self, sa, manual, initial, name):
        h = self._handle()
        self.calls.append(("CreateEventW", sa, manual, initial, name))
        self.events[h] = {"manual": bool(manual), "set": bool(initial)}
        return h

    def SetEvent(self, h):
        self.calls.append(("SetEvent", h))
        if h not in self.events:
            self.err = win32.ERROR_INVALID_HANDLE
            return False
        self.events[h]["set"] = True
        return True

    def WaitForMultipleObjects(self, n, handles, wait_all, ms):
        hs = [handles[i] for i in range(n)]
        self.calls.append(("WaitForMultipleObjects", hs, bool(wait_all), ms))
        for i, h in enumerate(hs):
            ev = self.events.get(h)
            if ev and ev["set"]:
                if not ev["manual"]:
                    ev["set"] = False
                return win32.WAIT_OBJECT_0 + i
        return win32.WAIT_TIMEOUT

    def CloseHandle(self, h):
        self.closed.append(h)
        return True

    def CreateJobObjectW(self, sa, name):
        h = self._handle()
        self.jobs[h] = None
        return h

    def SetInformationJobObject(self, job, cls, info, size):
        raw = ctypes.string_at(ctypes.cast(info, ctypes.c_void_p), size)
        self.jobs[job] = (cls, win32.JOBOBJECT_EXTENDED_LIMIT_INFORMATION.from_buffer_copy(raw))
        return True

    def AssignProcessToJobObject(self, job, process):
        if self.assign_error:
            self.err = self.assign_error
            return False
        self.assigned.append((job, process))
        return True


@pytest.fixture
def k32(monkeypatch):
    fake = FakeKernel32()
    monkeypatch.setitem(win32._loaded, "kernel32", fake)
    return fake


# ---- wake-up events ------------------------------------------------------------------
def test_a_wake_is_an_auto_reset_event_and_a_wait_consumes_it(k32):
    wake = pw.new_wake()
    assert k32.calls[0] == ("CreateEventW", None, False, False, None)  # auto-reset, clear
    wait = wake.waiter()
    wake.set()
    wait(0.5)
    assert k32.calls[-1] == ("WaitForMultipleObjects", [wake.handle], False, 500)
    assert not k32.events[wake.handle]["set"]      # the wait that returned reset it
    wait(0.5)                                      # nothing set since: a timeout
    assert k32.WaitForMultipleObjects(1, (win32.HANDLE * 1)(wake.handle), False, 0) \
        == win32.WAIT_TIMEOUT


def test_a_set_before_the_wait_is_not_lost(k32):
    """The sleeper checks for work, a producer sets the event, then the sleeper waits:
    the wait returns at once (the state the eventfd counter keeps on Linux)."""
    wake = pw.new_wake()
    wake.set()
    wake.waiter()(30.0)
    assert k32.calls[-1][0] == "WaitForMultipleObjects"
    assert not k32.events[wake.handle]["set"]


def test_the_wait_watches_device_handles_with_the_event(k32):
    wake = pw.new_wake()
    wake.waiter((0x777,))(0.25)
    assert k32.calls[-1] == ("WaitForMultipleObjects", [wake.handle, 0x777], False, 250)


def test_a_sub_millisecond_wait_is_not_a_zero_wait(k32):
    pw.new_wake().waiter()(0.0005)
    assert k32.calls[-1][3] == 1


def test_the_handshake_sets_the_event_only_for_a_sleeper(k32):
    flag = memoryview(bytearray(8)).cast("Q")
    wake = pw.new_wake()
    waker, sleeper = Waker(flag, wake), Sleeper(flag, wake)
    waker.poke()
    assert ("SetEvent", wake.handle) not in k32.calls   # nobody waits: no system call
    assert sleeper.sleep(lambda: True, 1.0) is False    # work at hand: no wait either
    assert not any(c[0] == "WaitForMultipleObjects" for c in k32.calls)
    flag[0] = 1                                          # a sleeper announced itself
    waker.poke()
    assert ("SetEvent", wake.handle) in k32.calls
    assert sleeper.sleep(lambda: False, 1.0) is True and flag[0] == 0


def test_a_failed_set_event_raises_with_the_code(k32):
    wake = pw.new_wake()
    wake.handle = 0xdead
    with pytest.raises(OSError) as e:
        wake.set()
    assert e.value.winerror == win32.ERROR_INVALID_HANDLE


def test_a_wake_crosses_into_a_child_with_only_wait_and_set_rights(k32, monkeypatch):
    seen = []
    monkeypatch.setattr(win32, "duplicate_for_child",
                        lambda h, access: seen.append((h, access)) or FakeDup(h, access))
    wake = pw.new_wake()
    child = pickle.loads(pickle.dumps(wake))
    assert seen == [(wake.handle, 0x00100000 | 0x0002)]   # SYNCHRONIZE | EVENT_MODIFY_STATE
    assert child.handle == wake.handle + 0x1000
    wake.close()
    assert wake.handle is None and k32.closed[-1] == child.handle - 0x1000
    with pytest.raises(ValueError, match="closed"):
        pickle.dumps(wake)


def test_a_workers_context_pickles_with_windows_wakes_and_no_device(k32, monkeypatch):
    """Defects 3 and 5: what the supervisor hands a worker on Windows is the layout, the
    rule and the wake events, each by DuplicateHandle; no device and no DupFd."""
    monkeypatch.setattr(win32, "duplicate_for_child", FakeDup)
    layout = shm.Layout(2, 64, 2048, 16)
    wakes = tuple(pw.new_wake() for _ in range(layout.actors))
    ctx = Context("engine.x.0", layout, None,
                        Mirror(parse_address("198.18.0.1/24", 4, "--address"), None, 0, 0),
                        64, 0.0, wakes)
    child = pickle.loads(pickle.dumps(ctx))
    assert child.device is None
    assert [w.handle for w in child.wakes] == [w.handle + 0x1000 for w in wakes]


# ---- the Job Object ------------------------------------------------------------------
class FakeProcess:
    def __init__(self, sentinel, alive=True):
        self.sentinel, self.name, self._alive = sentinel, "engine-worker0", alive

    def is_alive(self):
        return self._alive


def test_children_go_in_a_job_that_kills_them_when_its_last_handle_closes(k32):
    guard = pw.ChildGuard()
    (job, (cls, info)), = k32.jobs.items()
    assert cls == 9                                                 # extended limits
    assert info.BasicLimitInformation.LimitFlags == 0x2000          # KILL_ON_JOB_CLOSE
    guard.adopt(FakeProcess(0x5001))
    guard.adopt(FakeProcess(0x5002))
    assert k32.assigned == [(job, 0x5001), (job, 0x5002)]
    guard.close()
    guard.close()                                                   # idempotent
    assert k32.closed == [job]


def test_a_child_that_cannot_join_the_job_is_named(k32, caplog):
    guard = pw.ChildGuard()
    k32.assign_error = win32.ERROR_ACCESS_DENIED
    with caplog.at_level(logging.WARNING, logger="engine"):
        guard.adopt(FakeProcess(0x5001, alive=False))   # already gone: nothing to say
        assert not caplog.records
        guard.adopt(FakeProcess(0x5002))
    assert "engine-worker0 will outlive a killed supervisor: AssignProcessToJobObject: " \
           "Access is denied." in caplog.text


def test_job_structure_layout_is_the_64_bit_sdks():
    assert ctypes.sizeof(win32.JOBOBJECT_BASIC_LIMIT_INFORMATION) == 64
    assert ctypes.sizeof(win32.JOBOBJECT_EXTENDED_LIMIT_INFORMATION) == 144
    assert win32.JOBOBJECT_BASIC_LIMIT_INFORMATION.LimitFlags.offset == 16


def test_the_windows_platform_answers_without_linux():
    assert pw.DEFAULT_START_METHOD == "spawn" and pw.DEFAULT_DRIVER == "tap-windows"
    assert pw.STATS_SIGNAL is None and pw.namespace_tag() == "0"
    assert pw.PSUTIL_FDS == "num_handles"   # psutil.Process.num_fds is POSIX only
    assert pw.unlink_segment("engine.x.0.pool") is False
    assert pw.share_cpus() is False and pw.usable_cpus() >= 1
    pw.die_with_parent()   # the job does it: nothing to arm in the child


# ---- `python -m engine stats` on Windows ---------------------------------------------
def test_stats_maps_the_named_mapping_read_only(monkeypatch):
    """OpenFileMapping(FILE_MAP_READ), the size from a view (VirtualQuerySize), the view
    unmapped and the handle closed, then mmap(-1, size, tagname, ACCESS_READ), which
    opens the existing mapping: the way multiprocessing's SharedMemory opens one, read-only."""
    import sys
    import types
    calls = []
    fake = types.SimpleNamespace(
        OpenFileMapping=lambda access, inherit, name: calls.append(("open", access, name)) or 7,
        MapViewOfFile=lambda h, access, hi, lo, n: calls.append(("map", h, access)) or 0x1000,
        VirtualQuerySize=lambda addr: 8192,
        UnmapViewOfFile=lambda addr: calls.append(("unmap", addr)),
        CloseHandle=lambda h: calls.append(("close", h)))
    monkeypatch.setitem(sys.modules, "_winapi", fake)
    monkeypatch.setattr(pw.mmap, "mmap", lambda fd, size, tagname, access:
                        calls.append(("mmap", fd, size, tagname, access)) or "view")
    view, _created = pw.open_segment_readonly("engine.{GUID}.0.ctl")
    assert view == "view"
    assert calls == [("open", 4, "engine.{GUID}.0.ctl"), ("map", 7, 4), ("unmap", 0x1000),
                     ("close", 7), ("mmap", -1, 8192, "engine.{GUID}.0.ctl",
                                    pw.mmap.ACCESS_READ)]


def test_the_reader_sleeps_on_its_wake_event_and_the_devices_event_together(k32, tmp_path,
                                                                             monkeypatch):
    """An idle reader on Windows waits in one WaitForMultipleObjects for a poke (stop, room)
    and for the device (Wintun's read-wait event)."""
    import ipaddress
    from engine import pcap
    from engine.tun.memory import MemoryDevice

    class EventDevice(MemoryDevice):
        def waitable(self):
            return 0x777

    monkeypatch.setattr(reader_mod.platform, "WAITS_ON_DEVICES", True)
    src = tmp_path / "in.pcap"
    pcap.write_frames(str(src), [])
    layout = shm.Layout(1, 64, 128, 16)
    m = shm.Mapped(layout, bytearray(layout.pool_bytes), bytearray(layout.ctl_bytes))
    wakes = tuple(pw.new_wake() for _ in range(layout.actors))
    ctx = Context("t", layout, EventDevice(str(src)),
                        Mirror(ipaddress.ip_interface("198.18.0.1/24")), 8, 0.0, wakes)
    reader = reader_mod.Reader(ctx, m)
    assert reader.watch == [0x777]
    reader.sleeper.sleep(lambda: False, 0.25)
    assert k32.calls[-1] == ("WaitForMultipleObjects", [wakes[0].handle, 0x777], False, 250)
