"""Linux: eventfd + poll(2) wake-ups, PR_SET_PDEATHSIG, CPU affinity, network namespaces."""
from __future__ import annotations

import logging
import os
import select
import signal

from ..handles import InheritedFd
from . import libc, portable

NAME = "linux"
CAN_DROP_PRIVILEGES = True  # --user
WAITS_ON_DEVICES = True  # poll(2) takes the device fd with the eventfd
DEFAULT_DRIVER = "linux"
# forkserver: children fork from a server that has imported the engine already, so a
# start or restart takes milliseconds, and their arguments are still pickled as under
# spawn (Windows' only method), so pickling mistakes show up on Linux too.
DEFAULT_START_METHOD = "forkserver"
STATS_SIGNAL = signal.SIGUSR1
O_BINARY = 0
O_NOFOLLOW, O_CLOEXEC, O_NONBLOCK = os.O_NOFOLLOW, os.O_CLOEXEC, os.O_NONBLOCK
PSUTIL_FDS = "num_fds"
STOP_SIGNALS, IGNORED_SIGNALS = portable.STOP_SIGNALS, portable.IGNORED_SIGNALS
CHILD_IGNORED_SIGNALS = portable.CHILD_IGNORED_SIGNALS
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class Wake:
    """One actor's eventfd; pickles into a child being started (engine/handles.py)."""

    __slots__ = ("efd",)

    def __init__(self, efd: InheritedFd) -> None:
        self.efd = efd

    def set(self) -> None:
        os.eventfd_write(self.efd.fd, 1)

    def waiter(self, watch=()):
        """A wait(timeout) that returns when this wake is set or a `watch` fd polls
        readable; it resets the eventfd counter when that was what woke it."""
        fd = self.efd.fd
        poll = select.poll()
        for w in (fd, *watch):
            poll.register(w, select.POLLIN)

        def wait(timeout: float) -> None:
            for ready, _ in poll.poll(timeout * 1000.0):
                if ready == fd:
                    os.eventfd_read(fd)
        return wait

    def close(self) -> None:
        self.efd.close()


def new_wake() -> Wake:
    return Wake(InheritedFd(os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)))


def die_with_parent() -> None:
    """PR_SET_PDEATHSIG: if the process that started us dies (the supervisor, or the
    forkserver, which exits when the supervisor does), we are killed too, so a killed
    supervisor leaves no process holding the device."""
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:  # the parent died before we armed the signal
        os._exit(1)


ChildGuard = portable.ChildGuard  # each child arms its own PR_SET_PDEATHSIG


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0))


def share_cpus() -> bool:
    """SCHED_BATCH for this process (no wake-up preemption, no privilege needed), and
    True: its idle spin yields on every turn (see actor.share_cpus)."""
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except OSError:  # a seccomp policy, say: keep the default policy
        pass
    return True


yield_cpu = os.sched_yield


def namespace_tag() -> str:
    """/dev/shm is shared by all network namespaces while device names are not."""
    return str(os.stat("/proc/self/ns/net").st_ino)


# POSIX shared memory, as on any POSIX system
open_segment_readonly, segment_created = portable.open_segment_readonly, portable.segment_created
claim_segment, owned_by_us = portable.claim_segment, portable.owned_by_us
reserve_segment, segment_space = portable.reserve_segment, portable.segment_space


def segment_path(name: str) -> str:
    return f"/dev/shm/{name}"


def chown_segment(name: str, uid: int, gid: int) -> None:
    os.chown(segment_path(name), uid, gid)


def unlink_segment(name: str) -> bool:
    try:
        os.unlink(segment_path(name))
        return True
    except FileNotFoundError:
        return False


PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 24, 38  # linux/prctl.h


def drop_bounding_set() -> None:
    """--user, while still root: empty the capability bounding set, so that no program a
    process of the engine might exec could regain a capability."""
    failed = []
    for cap in range(_last_cap() + 1):
        try:
            libc.check(libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0))
        except OSError as e:
            failed.append(e)
    if failed:  # no CAP_SETPCAP (some containers): say so rather than claim it was done
        logging.getLogger("engine").warning(
            "--user: %d capabilities stay in the bounding set (%s)", len(failed),
            failed[-1].strerror)


def set_no_new_privs() -> None:
    """--user, after the drop: no privilege through setuid or file capabilities either."""
    libc.check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")


def _last_cap() -> int:
    """The highest capability number this kernel knows (capabilities(7))."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return 40  # CAP_CHECKPOINT_RESTORE, the last one as of Linux 5.9
