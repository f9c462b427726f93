"""Windows, through kernel32 (declarations in engine/tun/win32.py).

Waking: an auto-reset event per actor (CreateEventW). SetEvent leaves it signalled until
one wait returns on it, which resets it, so a poke between the sleeper's check and its
wait is not lost (the eventfd counter's part on Linux). WaitForMultipleObjects waits on
it together with device handles. The event crosses into a child through
DuplicateHandle (multiprocessing.reduction.DupHandle), with only the rights waiting and
setting need.

Dying with the supervisor: Windows has no parent-death signal. The supervisor puts each
child in a Job Object created with JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE; when the
supervisor exits, however it exits, its handle to the job closes and the system ends
every process in the job.
"""
from __future__ import annotations

import ctypes
import logging
import math
import mmap
import os
import time

from ..tun import win32
from . import portable

NAME = "windows"
CAN_DROP_PRIVILEGES = False  # no setuid: run the engine as the account it should run as
WAITS_ON_DEVICES = True  # WaitForMultipleObjects takes device events too
DEFAULT_DRIVER = "tap-windows"
DEFAULT_START_METHOD = "spawn"   # the only one Windows has
STATS_SIGNAL = None              # no SIGUSR1: `python -m engine stats` reads the counters
O_BINARY = getattr(os, "O_BINARY", 0x8000)  # fcntl.h of the MSVC runtime
O_CLOEXEC = getattr(os, "O_NOINHERIT", 0x0080)  # the MSVC runtime's name for it
O_NOFOLLOW = O_NONBLOCK = 0  # no such flags (and no FIFOs at a file path)
# Ctrl-C and Ctrl-Break reach every process of the console; the children leave them to
# the supervisor. Nothing else arrives as a signal here.
STOP_SIGNALS = portable.signals("SIGINT", "SIGTERM", "SIGBREAK")
IGNORED_SIGNALS = ()
CHILD_IGNORED_SIGNALS = portable.signals("SIGINT", "SIGBREAK")
PSUTIL_FDS = "num_handles"       # psutil has no num_fds on Windows
SYNCHRONIZE = 0x00100000         # winnt.h
EVENT_MODIFY_STATE = 0x0002      # winnt.h

log = logging.getLogger("engine")


class Wake:
    __slots__ = ("handle", "_k")

    def __init__(self, handle: int, k32: win32.Api) -> None:
        self.handle, self._k = handle, k32

    def __reduce__(self):
        if self.handle is None:
            raise ValueError("wake event is closed")
        return (_rebuild, (win32.duplicate_for_child(self.handle,
                                                     SYNCHRONIZE | EVENT_MODIFY_STATE),))

    def set(self) -> None:
        if not self._k.SetEvent(self.handle):
            raise self._k.fail("SetEvent")

    def waiter(self, watch=()):
        """A wait(timeout) that returns when this event is set (and resets it) or one of
        the `watch` handles is signalled."""
        k, handles = self._k, (win32.HANDLE * (1 + len(watch)))(self.handle, *watch)
        n = len(handles)

        def wait(timeout: float) -> None:
            # rounded up: a sub-millisecond wait must not become a zero wait, which spins
            ms = min(math.ceil(timeout * 1000), win32.INFINITE - 1)
            if k.WaitForMultipleObjects(n, handles, False, ms) == win32.WAIT_FAILED:
                raise k.fail("WaitForMultipleObjects")
        return wait

    def close(self) -> None:
        handle, self.handle = self.handle, None
        if handle is not None:
            self._k.CloseHandle(handle)


def _rebuild(dup) -> Wake:
    return Wake(dup.detach(), win32.kernel32())


def new_wake() -> Wake:
    k = win32.kernel32()
    handle = k.CreateEventW(None, False, False, None)  # auto-reset, not signalled
    if not handle:
        raise k.fail("CreateEventW")
    return Wake(handle, k)


def die_with_parent() -> None:
    pass  # the supervisor's Job Object does it (ChildGuard)


# no SCHED_BATCH, and CPUs counted as anywhere else
usable_cpus, share_cpus, yield_cpu = portable.usable_cpus, portable.share_cpus, portable.yield_cpu


class ChildGuard:
    """The supervisor's Job Object: every child adopted into it ends when the supervisor
    does. A child is adopted right after it starts, so a supervisor killed in between
    leaves that one child behind. (Putting the supervisor itself in the job would close
    that gap, but closing the job at a clean stop would then end the supervisor too.)"""

    def __init__(self) -> None:
        k = self._k = win32.kernel32()
        job = k.CreateJobObjectW(None, None)
        if not job:
            raise k.fail("CreateJobObjectW")
        info = win32.JOBOBJECT_EXTENDED_LIMIT_INFORMATION()
        info.BasicLimitInformation.LimitFlags = win32.JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
        if not k.SetInformationJobObject(job, win32.JobObjectExtendedLimitInformation,
                                         ctypes.byref(info), ctypes.sizeof(info)):
            err = k.fail("SetInformationJobObject")
            k.CloseHandle(job)
            raise err
        self._job = job

    def adopt(self, process) -> None:
        """Put a started child in the job (its sentinel is its process handle)."""
        if not self._k.AssignProcessToJobObject(self._job, process.sentinel) \
                and process.is_alive():
            log.warning("%s will outlive a killed supervisor: %s", process.name,
                        self._k.fail("AssignProcessToJobObject").strerror)

    def close(self) -> None:
        """Closing the last handle ends whatever child is still in the job."""
        job, self._job = self._job, None
        if job is not None:
            self._k.CloseHandle(job)


def namespace_tag() -> str:
    return "0"  # no network namespaces


def unlink_segment(name: str) -> bool:
    return False  # a named mapping goes with its last handle: nothing is ever left over


def segment_path(name: str) -> str:
    return f"the shared memory {name!r}"


FILE_MAP_READ = 0x0004  # memoryapi.h


def open_segment_readonly(name: str):
    """(a read-only view of the named mapping, now): opened as multiprocessing's
    SharedMemory opens one on Windows (OpenFileMapping, then its size from the view), but
    read-only. Its size is rounded up to whole pages. FileNotFoundError when it is gone."""
    import _winapi
    handle = _winapi.OpenFileMapping(FILE_MAP_READ, False, name)
    try:
        view = _winapi.MapViewOfFile(handle, FILE_MAP_READ, 0, 0, 0)
        try:
            size = _winapi.VirtualQuerySize(view)
        finally:
            _winapi.UnmapViewOfFile(view)
    finally:
        _winapi.CloseHandle(handle)
    # creation time unknown: a live supervisor pid is proof enough (no pid reuse while the
    # mapping lives, since the supervisor holds it)
    return mmap.mmap(-1, size, tagname=name, access=mmap.ACCESS_READ), time.time()


def chown_segment(name: str, uid: int, gid: int) -> None:
    raise OSError("Windows has no setuid, so no --user either")


def segment_created(name: str):
    """Now while the mapping exists: it lives as long as anyone (this tool too) maps it,
    so only the supervisor's pid says whether the engine still runs."""
    try:
        open_segment_readonly(name)[0].close()
    except FileNotFoundError:
        return None
    return time.time()


# A named mapping lives while a handle to it does: nothing outlives a run, so nothing is
# reclaimed or claimed, and the paging file backs it when it is made.
def owned_by_us(st) -> bool:
    return True  # no uid in a Windows stat; the directory's ACL decides who can replace it


def claim_segment(name: str, size: int):
    return None  # a name in use makes SharedMemory(create=True) fail instead


def reserve_segment(seg) -> None:
    pass


def segment_space():
    return None


drop_bounding_set = set_no_new_privs = portable.drop_bounding_set  # no --user here at all
