"""Sleep when idle, wake on work: an eventfd per sleeping actor plus a `waiting` flag in
shared memory, so a busy producer pays nothing (no syscall) and an idle engine uses no CPU
(DESIGN.md invariant 5).

Handshake (an eventcount, LINUX.md §5):

  consumer:  waiting = 1; FENCE; if work: waiting = 0 else poll(eventfd, stop, ...)
  producer:  publish cursor;  FENCE; if waiting: eventfd_write(1)

Without the fences, x86 may let each side's load overtake its own earlier store (the one
reordering TSO allows) and both would miss each other: a lost wake-up. Python cannot emit
`mfence`, but any locked instruction is a full barrier on x86, and acquiring and releasing
an uncontended `threading.Lock` executes two (glibc's sem_trywait is a CAS, sem_post an
atomic add). A bounded poll timeout remains as a second line of defence.
"""
from __future__ import annotations

import os
import select
import threading

from .handles import InheritedFd

_fence_lock = threading.Lock()
_acquire, _release = _fence_lock.acquire, _fence_lock.release


def fence() -> None:
    """Full memory barrier (see module docstring)."""
    _acquire()
    _release()


def new_eventfd() -> InheritedFd:
    return InheritedFd(os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC))


class Waker:
    """Producer side of one sleeper: `flag` is the sleeper's waiting word (a 1-element
    memoryview cast 'Q' in shared memory), `efd` its eventfd."""

    __slots__ = ("_flag", "_fd")

    def __init__(self, flag: memoryview, efd: InheritedFd) -> None:
        self._flag, self._fd = flag, efd.fd

    def poke(self) -> None:
        fence()
        if self._flag[0]:
            os.eventfd_write(self._fd, 1)


class Sleeper:
    """Consumer side: `sleep(has_work, timeout)` blocks until poked, a watched fd is readable,
    or the timeout passes. Returns at once when `has_work()` is already true."""

    def __init__(self, flag: memoryview, efd: InheritedFd, watch_fds=()) -> None:
        self._flag, self._fd = flag, efd.fd
        self._poll = select.poll()
        for fd in (efd.fd, *watch_fds):
            self._poll.register(fd, select.POLLIN)

    def sleep(self, has_work, timeout: float) -> bool:
        """Returns True when it actually slept."""
        self._flag[0] = 1
        fence()
        if has_work():
            self._flag[0] = 0
            return False
        events = self._poll.poll(timeout * 1000.0)
        self._flag[0] = 0
        for fd, _ in events:
            if fd == self._fd:
                os.eventfd_read(self._fd)  # reset the counter
        return True
