"""The process-level facilities that differ by operating system, bound once at import
(psutil's `_psplatform`, trio's `_core` do the same): the rest of the engine asks this
module, never `sys.platform`, `hasattr(os, ...)` or an AttributeError.

Three implementations, chosen here and nowhere else:

- `linux`: eventfd + poll(2) wake-ups, descriptors passed with DupFd, PR_SET_PDEATHSIG,
  sched_getaffinity, the network namespace in shared-memory names.
- `windows`: an auto-reset event per actor (CreateEventW / SetEvent /
  WaitForMultipleObjects) passed with DuplicateHandle, a Job Object that kills the
  children when the supervisor goes, no namespaces.
- `portable`: any other Python (a POSIX system without eventfd or poll, or a Linux
  Python with those removed, as the off-Linux test makes one): multiprocessing
  semaphores for wake-ups, a thread watching the parent's sentinel for dying with it.

Every implementation provides the same names (see `__all__`).
"""
from __future__ import annotations

import os
import select
import sys

if sys.platform == "win32":
    from . import windows as _impl
elif hasattr(os, "eventfd") and hasattr(select, "poll"):
    from . import linux as _impl
else:
    from . import portable as _impl

__all__ = ["NAME", "DEFAULT_DRIVER", "DEFAULT_START_METHOD", "STATS_SIGNAL", "O_BINARY",
           "PSUTIL_FDS", "CAN_DROP_PRIVILEGES", "WAITS_ON_DEVICES", "new_wake",
           "die_with_parent", "ChildGuard", "usable_cpus", "share_cpus", "yield_cpu",
           "namespace_tag", "unlink_segment", "segment_path", "open_segment_readonly",
           "segment_created", "chown_segment", "O_NOFOLLOW", "O_CLOEXEC", "O_NONBLOCK",
           "STOP_SIGNALS", "IGNORED_SIGNALS", "CHILD_IGNORED_SIGNALS", "claim_segment", "owned_by_us",
           "reserve_segment", "segment_space", "drop_bounding_set",
           "set_no_new_privs"]

NAME: str = _impl.NAME
DEFAULT_DRIVER: str = _impl.DEFAULT_DRIVER          # what --driver auto means here
DEFAULT_START_METHOD: str = _impl.DEFAULT_START_METHOD
STATS_SIGNAL = _impl.STATS_SIGNAL                   # the signal that asks for a stats dump, or None
O_BINARY: int = _impl.O_BINARY                      # os.open flag for binary files (0 on POSIX)
PSUTIL_FDS: str = _impl.PSUTIL_FDS                  # psutil.Process method counting open fds
CAN_DROP_PRIVILEGES: bool = _impl.CAN_DROP_PRIVILEGES  # whether --user can work here
WAITS_ON_DEVICES: bool = _impl.WAITS_ON_DEVICES     # a wake-up can watch device.waitable()
new_wake = _impl.new_wake                           # () -> a Wake: set(), waiter(watch)
die_with_parent = _impl.die_with_parent             # a child, at start: go when the parent goes
ChildGuard = _impl.ChildGuard                       # the supervisor: adopt(process), close()
usable_cpus = _impl.usable_cpus
share_cpus = _impl.share_cpus                       # () -> whether idle spins should yield
yield_cpu = _impl.yield_cpu
namespace_tag = _impl.namespace_tag                 # () -> str, part of segment names
unlink_segment = _impl.unlink_segment               # (name) -> bool: a leftover was removed
segment_path = _impl.segment_path                   # (name) -> where it is, for messages
open_segment_readonly = _impl.open_segment_readonly  # (name) -> (mmap or None, created)
segment_created = _impl.segment_created             # (name) -> created, or None once gone
chown_segment = _impl.chown_segment                 # (name, uid, gid): for --user
O_NOFOLLOW: int = _impl.O_NOFOLLOW                  # os.open flags, 0 where they do not exist
O_CLOEXEC: int = _impl.O_CLOEXEC
O_NONBLOCK: int = _impl.O_NONBLOCK
STOP_SIGNALS: tuple = _impl.STOP_SIGNALS            # the supervisor stops cleanly on these
IGNORED_SIGNALS: tuple = _impl.IGNORED_SIGNALS      # ...and ignores these
CHILD_IGNORED_SIGNALS: tuple = _impl.CHILD_IGNORED_SIGNALS  # the children ignore these
claim_segment = _impl.claim_segment                 # (name, size) -> a descriptor held for the run
owned_by_us = _impl.owned_by_us                     # (stat) -> the file is this user's
reserve_segment = _impl.reserve_segment             # (segment): back every page now
segment_space = _impl.segment_space                 # () -> bytes free for segments, or None
drop_bounding_set = _impl.drop_bounding_set         # --user, before setuid: no caps after exec
set_no_new_privs = _impl.set_no_new_privs           # --user, after setuid: nor by setuid bits
