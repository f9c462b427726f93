"""Files the engine creates or appends to, possibly as root, at paths a user may control
(--pcap, --stats-file): never through a symbolic link, never a FIFO or device that could
block start-up or swallow what is written, never another file by a second hard link.

A new file is made with O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600: if anything exists at the
path (a symbolic link included) the call fails instead of truncating or following it. The
descriptor is what gets chowned (`fchown`), never the path, which may have changed since.
"""
from __future__ import annotations

import errno
import os
import stat
from typing import Optional, Tuple

from . import platform
from .errors import EngineError

# Flags a platform lacks are 0 there (engine/platform): O_NOFOLLOW and O_NONBLOCK are
# POSIX, O_BINARY (Windows) keeps newline translation out of binary files. No
# close-on-exec flag: PEP 446 makes every os.open descriptor non-inheritable already.
MODE = 0o600


def create_new(path: str, option: str) -> int:
    """A new, empty regular file at `path` (0600), as a descriptor open for writing."""
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | platform.O_NOFOLLOW
                       | platform.O_BINARY, MODE)
    except FileExistsError:
        raise EngineError(f"{option} {path}: already exists (the engine writes only a new "
                          f"file; remove it or name another)") from None
    except OSError as e:
        raise EngineError(f"{option} {path}: {e.strerror}") from None


def open_append(path: str, option: str) -> Tuple[int, bool]:
    """`path` opened for appending: created (0600) if missing, else it must be a regular
    file with no other hard link. Returns (descriptor, whether it was created)."""
    try:
        return create_new(path, option), True
    except EngineError:
        if not os.path.lexists(path):
            raise
    try:
        fd = os.open(path, _append_flags())
    except OSError as e:
        why = ("a symbolic link" if e.errno == errno.ELOOP else
               "not a regular file" if e.errno == errno.ENXIO else e.strerror)
        raise EngineError(f"{option} {path}: {why}") from None
    try:
        check_regular(fd, path, option)
    except EngineError:
        os.close(fd)
        raise
    return fd, False


def _append_flags() -> int:
    # O_NONBLOCK: a FIFO without a reader fails at once (ENXIO) instead of blocking
    return (os.O_WRONLY | os.O_APPEND | platform.O_NOFOLLOW | platform.O_NONBLOCK
            | platform.O_BINARY)


def check_regular(fd: int, path: str, option: str) -> os.stat_result:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise EngineError(f"{option} {path}: not a regular file")
    if st.st_nlink > 1:
        raise EngineError(f"{option} {path}: has another hard link; the engine appends "
                          f"only to a file of its own")
    return st


def reopen(path: str, identity: Optional[Tuple[int, int]], option: str) -> int:
    """Open again, for appending, the file `create_new` made (a child process of the
    supervisor does this): it must still be the same file (device, inode)."""
    fd = os.open(path, _append_flags())
    try:
        st = check_regular(fd, path, option)
        # the same inode, and ours: an inode number can be reused by a file made since
        if (identity is not None and (st.st_dev, st.st_ino) != identity) or \
                not platform.owned_by_us(st):
            raise EngineError(f"{option} {path}: replaced while the engine ran")
    except EngineError:
        os.close(fd)
        raise
    return fd
