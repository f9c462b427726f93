"""The off-Linux Python of tests/offlinux, plus a fake TAP-Windows adapter or Wintun
session behind the engine's own backends (the fakes of tests/test_tun_windows.py and
tests/test_wintun.py, given kernel32/wintun.dll behaviour that a whole run needs), so
`python -m engine --driver tap-windows|wintun` runs end to end here
(tests/test_offlinux.py).

The supervisor also ties its children to itself with the Windows platform's Job Object
(engine/platform/windows.py ChildGuard) over a fake kernel32 that logs each call to
ENGINE_FAKE_JOBLOG, so the test sees every child assigned and the job closed.

ENGINE_FAKE_REPLAY is a pcap of the frames the fake device delivers; once as many frames
have been written back, they go to ENGINE_FAKE_SINK and the supervisor gets SIGTERM, the
stop a user's Ctrl-C gives. Only the supervisor opens a device; its children import this
too and never use it.
"""
import os
import runpy
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
runpy.run_path(os.path.join(TESTS, "offlinux", "sitecustomize.py"))

from engine import platform  # noqa: E402
from engine.platform import windows as windows_platform  # noqa: E402
from engine.tun import tap_windows, win32, wintun  # noqa: E402

_tap_open, _wintun_open = tap_windows.open, wintun.open
_finished = []


def _frames():
    from engine import pcap
    return pcap.read_frames(os.environ["ENGINE_FAKE_REPLAY"])


def _after_write(written, total):
    if len(written) >= total and not _finished:
        _finished.append(True)
        from engine import pcap
        pcap.write_frames(os.environ["ENGINE_FAKE_SINK"], list(written[:total]))
        os.kill(os.getpid(), signal.SIGTERM)


def _sleep_wait(h, ms):
    time.sleep(min(ms, 20) / 1000)   # nothing ever arrives later: a short wait, no spin
    return win32.WAIT_TIMEOUT


def fake_tap_open(cfg, **_):
    sys.path.insert(0, TESTS)
    import test_tun_windows as t
    frames = _frames()

    class LiveTap(t.FakeKernel32):
        def __init__(self):
            super().__init__()
            self.queue = list(frames)
            self.calls = _Bounded()

        def WriteFile(self, h, data, n, got, ov):
            ok = super().WriteFile(h, data, n, got, ov)
            _after_write(self.written, len(frames))
            return ok

        WaitForSingleObject = staticmethod(_sleep_wait)

    reg = t.registry(("0001", "tap0901", t.GUID_A, cfg.device))
    return _tap_open(cfg, kernel32=LiveTap(), registry=reg)


def fake_wintun_open(cfg, **_):
    sys.path.insert(0, TESTS)
    import test_wintun as t
    frames = _frames()
    dll = t.FakeWintun()
    dll.rx = list(frames)
    send = dll.WintunSendPacket

    def send_and_count(session, packet):
        send(session, packet)
        _after_write(dll.sent, len(frames))
    dll.WintunSendPacket = send_and_count

    class Kernel32:
        WaitForSingleObject = staticmethod(_sleep_wait)

    return _wintun_open(cfg, dll=dll, kernel32=Kernel32(), iphlpapi=t.FakeIphlpapi(),
                        run=t.FakeRun())


class _Bounded(list):
    """A call log that keeps only its last entries (the reader polls for a whole run)."""

    def append(self, item):
        super().append(item)
        if len(self) > 256:
            del self[:128]


class _JobKernel32:
    """The Job Object calls of kernel32, logged one line each."""

    def _log(self, line):
        with open(os.environ["ENGINE_FAKE_JOBLOG"], "a") as f:
            f.write(line + "\n")

    def last_error(self):
        return 0

    def CreateJobObjectW(self, sa, name):
        self._log("create")
        return 0x10B

    def SetInformationJobObject(self, job, cls, info, size):
        raw = __import__("ctypes").string_at(info, size)
        flags = win32.JOBOBJECT_EXTENDED_LIMIT_INFORMATION.from_buffer_copy(raw) \
            .BasicLimitInformation.LimitFlags
        self._log(f"limit {cls} {flags:#x}")
        return True

    def AssignProcessToJobObject(self, job, process):
        self._log(f"assign {job:#x}")
        return True

    def CloseHandle(self, h):
        self._log(f"close {h:#x}")
        return True


tap_windows.open, wintun.open = fake_tap_open, fake_wintun_open
if "ENGINE_FAKE_JOBLOG" in os.environ:
    win32._loaded["kernel32"] = _JobKernel32()
    platform.ChildGuard = windows_platform.ChildGuard
