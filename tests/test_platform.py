"""engine/platform: one implementation bound at import, and the portable one that any
Python can run (the Windows one: tests/test_platform_windows.py)."""
from __future__ import annotations

import ctypes
import os
import re
import signal

import pytest

from engine import loops, platform
from engine.platform import portable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_this_linux_binds_the_linux_implementation():
    assert platform.NAME == "linux" and platform.DEFAULT_START_METHOD == "forkserver"
    assert platform.namespace_tag() == str(os.stat("/proc/self/ns/net").st_ino)


@pytest.mark.parametrize("path", ["engine/supervisor.py", "engine/loops.py", "engine/wake.py",
                                  "engine/shm.py", "engine/config.py", "engine/capture.py"])
def test_no_platform_question_is_asked_outside_the_platform_layer(path):
    with open(os.path.join(ROOT, path)) as f:
        text = f.read()
    found = re.findall(r"sys\.platform|hasattr\((?:os|signal|select)\b|os\.eventfd|"
                       r"select\.poll|except \(?[\w, ]*AttributeError|CDLL\(None|O_CLOEXEC|"
                       r"sched_\w+|/proc/", text)
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
        loops._child_setup()
