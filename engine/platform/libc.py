"""The Linux C library through ctypes: loaded once, with the prototype of every libc
function the engine calls (ioctl, prctl, setns, and the io_uring system calls through
syscall(2)) and `check`, which turns a failed call's -1 into an OSError with its errno.
Linux only: imported by the Linux platform layer, the Linux device backend and the demo,
never on another system (where ctypes.CDLL(None) raises).
"""
from __future__ import annotations

import ctypes
import functools
import os
from ctypes import c_int, c_long, c_uint, c_ulong, c_void_p

_libc = ctypes.CDLL(None, use_errno=True)


def _declare(name: str, restype, *argtypes):
    fn = getattr(_libc, name)
    fn.restype, fn.argtypes = restype, list(argtypes)
    return fn


def check(ret: int, *context) -> int:
    """`ret`, or OSError(errno) when a libc call returned a negative value; `context` (a
    file name, the call that failed) goes into the message."""
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), *context)
    return ret


_ioctl = _declare("ioctl", c_int, c_int, c_ulong, c_void_p)
prctl = _declare("prctl", c_int, c_int, c_ulong, c_ulong, c_ulong, c_ulong)
setns = _declare("setns", c_int, c_int, c_int)


def ioctl(fd: int, request: int, arg) -> int:
    """ioctl(2); raises OSError with errno. `arg` is a ctypes object (passed by reference)
    or an int (passed by value, as TUNSETOFFLOAD and TUNSETPERSIST expect)."""
    ptr = arg if isinstance(arg, int) else ctypes.addressof(arg)
    return check(_ioctl(fd, request, ptr))


# syscall(2) is variadic, `long syscall(long number, ...)`, so it has no argtypes: each
# argument goes at its own C type (an int as int, a pointer by byref or None), which also
# spares the hot io_uring_enter a from_param conversion per argument.
_syscall = _libc.syscall
_syscall.restype = c_long

SYS_IO_URING_SETUP, SYS_IO_URING_ENTER = 425, 426     # x86-64 and arm64 (unified numbers)


def io_uring_setup(entries: int, params) -> int:
    """io_uring_setup(2) with a ctypes `struct io_uring_params`: the ring's fd, or -1."""
    return _syscall(SYS_IO_URING_SETUP, c_uint(entries), ctypes.byref(params))


# io_uring_enter(fd, to_submit, min_complete, flags, sigset_t *, sigset size) -> submitted
io_uring_enter = functools.partial(_syscall, SYS_IO_URING_ENTER)
