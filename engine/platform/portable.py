"""Any other Python: only what multiprocessing itself offers everywhere.

Wake-ups are multiprocessing semaphores: they cross into a spawned child by name (POSIX)
or by handle (Windows) with no descriptor passing, and `acquire(timeout=...)` is a real
blocking wait, so an idle engine still sleeps. A semaphore cannot be waited on together
with a descriptor, so a device with a pollable fd has no wake-up here (the backends for
this case have none: the memory device, the Windows ones). A child dies with its parent
through a thread that waits on the parent's sentinel, which every start method provides.
"""
from __future__ import annotations

import errno
import mmap
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time

NAME = "portable"
CAN_DROP_PRIVILEGES = hasattr(os, "setuid")  # --user
WAITS_ON_DEVICES = False  # a semaphore cannot be waited on with anything else
DEFAULT_DRIVER = ""   # no device backend is known to work here but the memory one
DEFAULT_START_METHOD = "spawn"
STATS_SIGNAL = getattr(signal, "SIGUSR1", None)
O_BINARY = getattr(os, "O_BINARY", 0)
O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
PSUTIL_FDS = "num_fds"


def signals(*names: str) -> tuple:
    """The signals of these names that this Python has."""
    return tuple(getattr(signal, n) for n in names if hasattr(signal, n))


# The supervisor: a closed terminal or ssh session (HUP) and QUIT stop it as TERM does,
# since their default action would end it with no clean-up; USR2 and ALRM mean nothing
# here. The children: what a terminal sends the whole process group, and the stats
# request, are for the supervisor alone, which decides when they stop.
STOP_SIGNALS = signals("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT")
IGNORED_SIGNALS = signals("SIGUSR2", "SIGALRM")
CHILD_IGNORED_SIGNALS = signals("SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGALRM")


class Wake:
    """One actor's semaphore; set() may run several times before a wait, and the wait
    then takes them all."""

    __slots__ = ("sem",)

    def __init__(self, sem) -> None:
        self.sem = sem

    def set(self) -> None:
        self.sem.release()

    def waiter(self, watch=()):
        if watch:
            raise ValueError("this platform cannot wait on a wake-up and a device "
                             "descriptor together")
        sem = self.sem

        def wait(timeout: float) -> None:
            if sem.acquire(True, timeout):
                while sem.acquire(False):
                    pass
        return wait

    def close(self) -> None:
        pass


def new_wake() -> Wake:
    # spawn context: such a semaphore may also be handed to a forked child, not vice versa
    return Wake(multiprocessing.get_context("spawn").Semaphore(0))


def die_with_parent() -> None:
    """A daemon thread that ends this process as soon as its parent's sentinel fires."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)
    threading.Thread(target=watch, name="engine-parent-watch", daemon=True).start()


class ChildGuard:
    """Nothing to do in the supervisor: each child ties itself to its parent
    (die_with_parent)."""

    def adopt(self, process) -> None:
        pass

    def close(self) -> None:
        pass


def usable_cpus() -> int:
    count = getattr(os, "process_cpu_count", os.cpu_count)  # 3.13+: honours affinity
    return count() or 1


def share_cpus() -> bool:
    return False  # no SCHED_BATCH: idle spins do not yield either


def yield_cpu() -> None:
    time.sleep(0)


def namespace_tag() -> str:
    return "0"  # no network namespaces known here


def segment_path(name: str) -> str:
    return name  # for messages: where a user would look for it


def open_segment_readonly(name: str):
    """(a read-only mapping of shared-memory segment `name`, or None while it has no size
    yet; its creation time). FileNotFoundError or PermissionError when it cannot be opened.
    No multiprocessing.shared_memory: attaching registers the segment with the caller's
    resource tracker, which unlinks it when the caller exits (Python < 3.13)."""
    import _posixshmem
    fd = _posixshmem.shm_open("/" + name, os.O_RDONLY, 0)
    try:
        st = os.fstat(fd)
        if st.st_size < 64:  # created, not yet sized (the header is its first 64 bytes)
            return None, st.st_ctime
        return mmap.mmap(fd, st.st_size, access=mmap.ACCESS_READ), st.st_ctime
    finally:
        os.close(fd)


def chown_segment(name: str, uid: int, gid: int) -> None:
    import _posixshmem
    fd = _posixshmem.shm_open("/" + name, os.O_RDWR, 0)
    try:
        os.fchown(fd, uid, gid)
    finally:
        os.close(fd)


def segment_created(name: str):
    """When segment `name` was created, or None once it is gone (unlinked)."""
    import _posixshmem
    try:
        fd = _posixshmem.shm_open("/" + name, os.O_RDONLY, 0)
    except FileNotFoundError:
        return None
    try:
        return os.fstat(fd).st_ctime
    finally:
        os.close(fd)


def unlink_segment(name: str) -> bool:
    try:
        import _posixshmem
    except ImportError:  # Windows: a mapping goes with its last handle
        return False
    try:
        _posixshmem.shm_unlink("/" + name)
        return True
    except FileNotFoundError:
        return False


# ---- a live run's hold on its name (POSIX shared memory outlives a crashed run, so the
# next start reclaims what it finds; a live run's segments must never be taken)
def _flock(fd: int) -> bool:
    """An exclusive flock(2) without waiting; False when another process holds one. True
    where flock is missing or refused for shared memory (nothing can be told apart there,
    so nothing is refused)."""
    try:
        import fcntl
    except ImportError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:   # ENOTSUP, EBADF: no flock on this kind of descriptor
        pass
    return True


def claim_segment(name: str, size: int):
    """Take segment `name` for this run: opened, or made, 0600 and ours; locked for as long
    as the returned descriptor stays open; emptied and sized. The lock comes before
    anything is reclaimed, so a second run can neither unlink a live run's segments nor
    start beside it. BlockingIOError when a live run holds it; PermissionError when it
    belongs to another user."""
    import _posixshmem
    fd = _posixshmem.shm_open("/" + name, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_uid != os.geteuid():  # another user's leftover, or planted
            os.close(fd)
            fd = -1
            _posixshmem.shm_unlink("/" + name)   # root may; anyone else: PermissionError
            fd = _posixshmem.shm_open("/" + name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        if not _flock(fd):
            raise BlockingIOError(errno.EWOULDBLOCK, f"{name} is held by a live run")
        os.fchmod(fd, 0o600)
        os.ftruncate(fd, 0)      # a crashed run's contents are gone
        os.ftruncate(fd, size)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        raise
    return fd


def owned_by_us(st: os.stat_result) -> bool:
    """Whether a file (its stat) belongs to this process's user."""
    return st.st_uid == os.geteuid()


def reserve_segment(seg) -> None:
    """Back every page of a new segment now (posix_fallocate): tmpfs reserves nothing at
    ftruncate, so a /dev/shm smaller than the pool would fail later, at the first read
    into an unbacked page, in a child. OSError (ENOSPC) when there is not the room."""
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is not None:
        fallocate(seg._fd, 0, seg.size)


def segment_space():
    """Bytes free for new segments, or None when unknown."""
    try:
        st = os.statvfs("/dev/shm")
    except (AttributeError, OSError):
        return None
    return st.f_bavail * st.f_frsize


# --user on a POSIX system without Linux's prctl: setuid alone (nothing to narrow further)
def drop_bounding_set() -> None:
    pass


def set_no_new_privs() -> None:
    pass
