"""engine/platform: one implementation bound at import, and the portable one that any
Python can run (the Windows one: tests/test_platform_windows.py)."""
from __future__ import annotations

import ctypes
import os
import re
import signal

import pytest

from engine import actor, platform
from engine.platform import portable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_this_linux_binds_the_linux_implementation():
    assert platform.NAME == "linux" and platform.DEFAULT_START_METHOD == "forkserver"
    assert platform.namespace_tag() == str(os.stat("/proc/self/ns/net").st_ino)


# Every module above the platform layer and the device backends (engine/platform,
# engine/tun): the engine's rooms and its sans-I/O packet code.
ABOVE_PLATFORM = sorted(os.path.relpath(os.path.join(d, f), ROOT)
                        for d in (os.path.join(ROOT, "engine"), os.path.join(ROOT, "engine", "packet"))
                        for f in os.listdir(d) if f.endswith(".py"))


@pytest.mark.parametrize("path", ABOVE_PLATFORM)
def test_no_platform_question_is_asked_outside_the_platform_layer(path):
    with open(os.path.join(ROOT, path)) as f:
        text = f.read()
    found = re.findall(r"sys\.platform|(?:has|get)attr\((?:os|signal|select)\b|os\.eventfd|"
                       r"select\.poll|except \(?[\w, ]*AttributeError|CDLL\(None|O_CLOEXEC|"
                       r"sched_\w+|/proc/|\"/dev/shm|num_fds", text)
    assert not found, f"{path}: {found}"


def test_a_portable_wake_set_before_the_wait_is_not_lost_and_sets_are_drained():
    wake = portable.new_wake()
    wait = wake.waiter()
    for _ in range(3):
        wake.set()
    wait(30.0)                               # returns at once: the sets came first
    assert wake.sem.acquire(False) is False  # all three taken: the next wait sleeps


def test_a_portable_wake_refuses_to_watch_a_descriptor():
    with pytest.raises(ValueError, match="cannot wait on a wake-up and a device"):
        portable.new_wake().waiter((3,))


def test_a_child_starts_where_cdll_none_raises_type_error(monkeypatch):
    """Defect 4: on Windows ctypes.CDLL(None) raises TypeError; a child's set-up must not
    touch it there (it did, and every worker exited 1)."""
    def no_cdll(name, *a, **k):
        raise TypeError("LoadLibrary() argument 1 must be str, not None")
    monkeypatch.setattr(ctypes, "CDLL", no_cdll)
    monkeypatch.setattr(signal, "signal", lambda *a: None)   # leave the test's own handlers
    for impl in ("windows", "portable"):
        monkeypatch.setattr(platform, "die_with_parent",
                            __import__(f"engine.platform.{impl}", fromlist=["x"]).die_with_parent)
        actor.child_setup()


@pytest.mark.parametrize("device", ["{11111111-2222-3333-4444-555555555555}", "Ethernet 3"])
def test_driver_auto_on_windows_takes_adapter_names_and_guids(monkeypatch, device):
    """Defect 12: the adapter-selection error tells the user to pass --device "Ethernet 3"
    or a {GUID}; under --driver auto on Windows the Linux name rule refused both."""
    from engine.config import Config, ConfigError
    monkeypatch.setattr(platform, "DEFAULT_DRIVER", "tap-windows")
    cfg = Config(device=device)
    assert cfg.driver == "auto" and cfg.resolved_driver == "tap-windows"
    monkeypatch.setattr(platform, "DEFAULT_DRIVER", "linux")
    with pytest.raises(ConfigError, match="--device"):
        Config(device=device)


def test_capture_opens_binary_without_o_cloexec(tmp_path, monkeypatch):
    """Defect 13: Windows has no os.O_CLOEXEC (the I/O thread died on --pcap), and a
    file opened without O_BINARY there turns every 0x0a byte of a record into 0d 0a."""
    from engine.capture import Capture
    monkeypatch.delattr(os, "O_CLOEXEC")
    monkeypatch.setattr(platform, "O_BINARY", 0x8000)
    real_open, flags = os.open, []

    def recording_open(path, f, *a):
        flags.append(f)
        return real_open(path, f & ~0x8000, *a)
    monkeypatch.setattr(os, "open", recording_open)
    cap, fd = Capture.create(str(tmp_path / "c.pcap"), 10)
    os.close(fd)
    writer = cap.open(*(memoryview(bytearray(8)).cast("Q") for _ in range(2)))
    writer.frames([memoryview(b"\x45\x0a\x0a\x0a")], [4])
    assert flags and flags[-1] & 0x8000 and flags[-1] & os.O_APPEND
    assert (tmp_path / "c.pcap").read_bytes().endswith(b"\x45\x0a\x0a\x0a")


@pytest.mark.parametrize("impl", ["linux", "windows", "portable"])
def test_every_implementation_provides_every_name(impl):
    mod = __import__(f"engine.platform.{impl}", fromlist=["x"])
    assert [n for n in platform.__all__ if not hasattr(mod, n)] == []


def test_user_is_refused_in_one_line_where_no_setuid_exists(monkeypatch):
    from engine.config import Config, ConfigError
    monkeypatch.setattr(platform, "CAN_DROP_PRIVILEGES", False)
    with pytest.raises(ConfigError, match="--user nobody: this platform cannot switch users"):
        Config(user="nobody")
