"""Put first on PYTHONPATH, this turns a Linux Python into one without the Linux-only
facilities the engine once relied on, so the engine's portable paths run end to end
here as they must on Windows (tests/test_offlinux.py). Every process of the run (the
supervisor, its spawned children, multiprocessing's helpers) imports it at start.

Removed: os.eventfd and friends, os.fork and forkpty, the CPU affinity and scheduler
calls, os.O_CLOEXEC, select.poll and epoll, multiprocessing.reduction.DupFd, the fcntl
module, ctypes.CDLL(None) (TypeError, as on Windows), and /proc for code of the engine
package (psutil, a dependency that works on Windows in its own way, keeps its /proc).
"""
import builtins
import ctypes
import os
import select
import signal
import sys

for _name in ("eventfd", "eventfd_read", "eventfd_write", "EFD_CLOEXEC", "EFD_NONBLOCK",
              "EFD_SEMAPHORE", "fork", "forkpty", "sched_getaffinity", "sched_setaffinity",
              "sched_setscheduler", "sched_yield", "sched_param", "SCHED_BATCH", "O_CLOEXEC"):
    if hasattr(os, _name):
        delattr(os, _name)
for _name in ("poll", "epoll"):
    if hasattr(select, _name):
        delattr(select, _name)
if hasattr(signal, "SIGUSR1"):
    delattr(signal, "SIGUSR1")

sys.modules.pop("fcntl", None)
sys.modules["fcntl"] = None  # `import fcntl` raises ImportError

from multiprocessing import reduction  # noqa: E402

if hasattr(reduction, "DupFd"):
    del reduction.DupFd

_CDLL = ctypes.CDLL


class _WindowsLikeCDLL(_CDLL):
    def __init__(self, name, *args, **kwargs):
        if name is None:  # what Windows' ctypes says for CDLL(None)
            raise TypeError("LoadLibrary() argument 1 must be str, not None")
        super().__init__(name, *args, **kwargs)


ctypes.CDLL = _WindowsLikeCDLL


def _from_engine() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name == "engine" or name.startswith("engine."):
            return True
        if name.startswith(("psutil", "multiprocessing")):
            return False
        frame = frame.f_back
    return False


def _no_proc(fn):
    def guarded(path, *args, **kwargs):
        p = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else ""
        if p.startswith("/proc") and _from_engine():
            raise FileNotFoundError(2, "No such file or directory (no /proc here)", p)
        return fn(path, *args, **kwargs)
    guarded.__wrapped__ = fn
    return guarded


builtins.open = _no_proc(builtins.open)
os.open = _no_proc(os.open)
os.stat = _no_proc(os.stat)
os.listdir = _no_proc(os.listdir)
os.scandir = _no_proc(os.scandir)
