"""Sleep when idle, wake on work: a wake-up object per sleeping actor (engine/platform:
an eventfd on Linux, an auto-reset event on Windows) plus a `waiting` flag in shared
memory, so a busy producer pays nothing (no syscall) and an idle engine uses no CPU
(DESIGN.md invariant 5).

Handshake (an eventcount, LINUX.md §5):

  consumer:  waiting = 1; FENCE; if work: waiting = 0 else wait(wake, stop, ...)
  producer:  publish cursor;  FENCE; if waiting: wake.set()

Without the fences, x86 may let each side's load overtake its own earlier store (the one
reordering TSO allows) and both would miss each other: a lost wake-up. Python cannot emit
`mfence`, but any locked instruction is a full barrier on x86, and acquiring and releasing
an uncontended `threading.Lock` executes two (glibc's sem_trywait is a CAS, sem_post an
atomic add). A bounded wait timeout remains as a second line of defence. The wake-up
itself keeps a set() that comes before the wait (eventfd counter, event state), so a
poke between the check and the wait is not lost either.
"""
from __future__ import annotations

import threading

_fence_lock = threading.Lock()
_acquire, _release = _fence_lock.acquire, _fence_lock.release


def fence() -> None:
    """Full memory barrier (see module docstring)."""
    _acquire()
    _release()


class Waker:
    """Producer side of one sleeper: `flag` is the sleeper's waiting word (a 1-element
    memoryview cast 'Q' in shared memory), `wake` its platform wake-up."""

    __slots__ = ("_flag", "_set")

    def __init__(self, flag: memoryview, wake) -> None:
        self._flag, self._set = flag, wake.set

    def poke(self) -> None:
        fence()
        if self._flag[0]:
            self._set()


class Sleeper:
    """Consumer side: `sleep(has_work, timeout)` blocks until poked, a watched device
    (an fd on Linux) is ready, or the timeout passes. Returns at once when `has_work()`
    is already true."""

    def __init__(self, flag: memoryview, wake, watch=()) -> None:
        self._flag = flag
        self._wait = wake.waiter(tuple(watch))

    def sleep(self, has_work, timeout: float) -> bool:
        """Returns True when it actually slept."""
        self._flag[0] = 1
        fence()
        if has_work():
            self._flag[0] = 0
            return False
        self._wait(timeout)
        self._flag[0] = 0
        return True
