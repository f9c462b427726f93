"""POSIX file descriptors that survive the trip into a child process, under any start
method (Windows handles cross with DuplicateHandle instead: engine/tun/win32.py,
engine/platform/windows.py).

On Linux the supervisor opens the device and the eventfds once and hands them to its children.
Under `fork` a child inherits them; under `spawn` and `forkserver` nothing is inherited
unless multiprocessing is told to pass it. `InheritedFd` pickles through
`multiprocessing.reduction.DupFd`, which does exactly that while a child is being
started (and refuses to pickle at any other time, which is what we want: an fd number
means nothing in another process).
"""
from __future__ import annotations

import os
from multiprocessing import reduction


class InheritedFd:
    """An fd owned by one process, picklable into a child being started."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self):
        return (_rebuild, (reduction.DupFd(self.fd),))

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


def _rebuild(dup) -> InheritedFd:
    return InheritedFd(dup.detach())
