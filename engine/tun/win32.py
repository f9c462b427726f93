"""Every ctypes declaration for Windows, in one place (trio's _windows_cffi.py idea).

Nothing here touches a DLL at import time, so this module imports on Linux, where the
unit tests run. `kernel32()` and `iphlpapi()` load and declare their DLL on first use;
the backends take the resulting `Api` object as a parameter, so a test passes a fake
with the same function names instead (WINDOWS.md §6.4).

Types are fixed-width on purpose: `ctypes.wintypes.DWORD` is `c_ulong`, which is 8 bytes
on Linux, so structure layouts checked by the Linux tests would silently differ from
Windows. Every function is declared with `argtypes` and `restype` (a missing restype
truncates a 64-bit HANDLE to an int) and loaded with `use_last_error=True`, because
GetLastError must be read by ctypes straight after the call, before Python runs anything
that could overwrite it.
"""
from __future__ import annotations

import ctypes
from typing import Callable, Dict, Optional, Sequence, Tuple

# ---- fixed-width Windows types (Windows Data Types, LLP64) ------------------------
BOOL = ctypes.c_int32
BOOLEAN = ctypes.c_uint8
BYTE = ctypes.c_uint8
DWORD = ctypes.c_uint32
ULONG = ctypes.c_uint32
USHORT = ctypes.c_uint16
DWORD64 = ctypes.c_uint64
ULONG_PTR = ctypes.c_size_t
HANDLE = ctypes.c_void_p
LPVOID = ctypes.c_void_p
LPCWSTR = ctypes.c_wchar_p
LPDWORD = ctypes.POINTER(DWORD)
PBYTE = ctypes.POINTER(BYTE)

INVALID_HANDLE_VALUE = ctypes.c_void_p(-1).value  # (HANDLE)-1, as ctypes returns it
INFINITE = 0xFFFFFFFF

# ---- winbase.h / winnt.h / fileapi.h ----------------------------------------------
GENERIC_READ = 0x80000000
GENERIC_WRITE = 0x40000000
FILE_GENERIC_READ = 0x00120089   # specific rights: DuplicateHandle does not map GENERIC_*
FILE_GENERIC_WRITE = 0x00120116
OPEN_EXISTING = 3
FILE_ATTRIBUTE_SYSTEM = 0x4
FILE_FLAG_OVERLAPPED = 0x40000000
WAIT_OBJECT_0 = 0
WAIT_TIMEOUT = 0x102
WAIT_FAILED = 0xFFFFFFFF

# ---- winerror.h: the codes this engine meets, with the text FormatMessage gives ---
ERROR_INVALID_FUNCTION = 1          # STATUS_INVALID_DEVICE_REQUEST: unknown IOCTL
ERROR_FILE_NOT_FOUND = 2
ERROR_PATH_NOT_FOUND = 3
ERROR_ACCESS_DENIED = 5
ERROR_INVALID_HANDLE = 6
ERROR_INVALID_DATA = 13
ERROR_GEN_FAILURE = 31              # STATUS_UNSUCCESSFUL: TAP-Windows already open
ERROR_SHARING_VIOLATION = 32
ERROR_HANDLE_EOF = 38
ERROR_NOT_SUPPORTED = 50
ERROR_INVALID_PARAMETER = 87
ERROR_BUFFER_OVERFLOW = 111
ERROR_MOD_NOT_FOUND = 126
ERROR_BAD_EXE_FORMAT = 193
ERROR_MORE_DATA = 234               # STATUS_BUFFER_OVERFLOW: the packet did not fit
ERROR_NO_MORE_ITEMS = 259
ERROR_OPERATION_ABORTED = 995       # the I/O was cancelled (CancelIoEx, handle closed)
ERROR_IO_INCOMPLETE = 996
ERROR_IO_PENDING = 997
ERROR_DEVICE_NOT_CONNECTED = 1167
ERROR_NOT_FOUND = 1168
ERROR_OBJECT_ALREADY_EXISTS = 5010

MESSAGES = {
    ERROR_INVALID_FUNCTION: "Incorrect function.",
    ERROR_FILE_NOT_FOUND: "The system cannot find the file specified.",
    ERROR_PATH_NOT_FOUND: "The system cannot find the path specified.",
    ERROR_ACCESS_DENIED: "Access is denied.",
    ERROR_INVALID_HANDLE: "The handle is invalid.",
    ERROR_INVALID_DATA: "The data is invalid.",
    ERROR_GEN_FAILURE: "A device attached to the system is not functioning.",
    ERROR_SHARING_VIOLATION: "The process cannot access the file because it is being used "
                             "by another process.",
    ERROR_HANDLE_EOF: "Reached the end of the file.",
    ERROR_NOT_SUPPORTED: "The request is not supported.",
    ERROR_INVALID_PARAMETER: "The parameter is incorrect.",
    ERROR_BUFFER_OVERFLOW: "The file name is too long.",
    ERROR_MOD_NOT_FOUND: "The specified module could not be found.",
    ERROR_BAD_EXE_FORMAT: "%1 is not a valid Win32 application.",
    ERROR_MORE_DATA: "More data is available.",
    ERROR_NO_MORE_ITEMS: "No more data is available.",
    ERROR_OPERATION_ABORTED: "The I/O operation has been aborted because of either a thread "
                             "exit or an application request.",
    ERROR_IO_INCOMPLETE: "Overlapped I/O event is not in a signaled state.",
    ERROR_IO_PENDING: "Overlapped I/O operation is in progress.",
    ERROR_DEVICE_NOT_CONNECTED: "The device is not connected.",
    ERROR_NOT_FOUND: "Element not found.",
    ERROR_OBJECT_ALREADY_EXISTS: "The object already exists.",
}


def message(code: int) -> str:
    """Readable text for a Windows error code: our table first (so Linux tests see the same
    text), then the system's FormatMessage where ctypes has it (Windows only)."""
    if code in MESSAGES:
        return MESSAGES[code]
    format_error = getattr(ctypes, "FormatError", None)
    return format_error(code).strip() if format_error else f"Windows error {code}"


def error(code: int, what: str) -> OSError:
    """An OSError for Windows error `code` during `what`. On Windows, OSError derives errno
    and `winerror` from the 4th argument; elsewhere it ignores it, so we set `winerror`
    ourselves and the tests on Linux can check the code."""
    err = OSError(None, f"{what}: {message(code)}", None, code)
    if getattr(err, "winerror", None) != code:
        err.winerror = code
    return err


# ---- structures (minwinbase.h, ws2def.h, ws2ipdef.h, netioapi.h) ------------------
class OVERLAPPED(ctypes.Structure):
    """minwinbase.h. The Offset/Pointer union is flattened: devices ignore the offset."""
    _fields_ = [("Internal", ULONG_PTR), ("InternalHigh", ULONG_PTR),
                ("Offset", DWORD), ("OffsetHigh", DWORD), ("hEvent", HANDLE)]


class SOCKADDR_IN(ctypes.Structure):
    _fields_ = [("sin_family", USHORT), ("sin_port", USHORT),
                ("sin_addr", BYTE * 4), ("sin_zero", BYTE * 8)]


class SOCKADDR_IN6(ctypes.Structure):
    _fields_ = [("sin6_family", USHORT), ("sin6_port", USHORT), ("sin6_flowinfo", ULONG),
                ("sin6_addr", BYTE * 16), ("sin6_scope_id", ULONG)]


class SOCKADDR_INET(ctypes.Union):
    _fields_ = [("Ipv4", SOCKADDR_IN), ("Ipv6", SOCKADDR_IN6), ("si_family", USHORT)]


class MIB_UNICASTIPADDRESS_ROW(ctypes.Structure):
    """netioapi.h; 80 bytes on 64-bit Windows. Filled by InitializeUnicastIpAddressEntry."""
    _fields_ = [("Address", SOCKADDR_INET), ("InterfaceLuid", ctypes.c_uint64),
                ("InterfaceIndex", ULONG), ("PrefixOrigin", ctypes.c_int32),
                ("SuffixOrigin", ctypes.c_int32), ("ValidLifetime", ULONG),
                ("PreferredLifetime", ULONG), ("OnLinkPrefixLength", ctypes.c_uint8),
                ("SkipAsSource", BOOLEAN), ("DadState", ctypes.c_int32),
                ("ScopeId", ULONG), ("CreationTimeStamp", ctypes.c_int64)]


class JOBOBJECT_BASIC_LIMIT_INFORMATION(ctypes.Structure):
    """winnt.h; 64 bytes on 64-bit Windows."""
    _fields_ = [("PerProcessUserTimeLimit", ctypes.c_int64),
                ("PerJobUserTimeLimit", ctypes.c_int64),
                ("LimitFlags", DWORD), ("MinimumWorkingSetSize", ctypes.c_size_t),
                ("MaximumWorkingSetSize", ctypes.c_size_t), ("ActiveProcessLimit", DWORD),
                ("Affinity", ULONG_PTR), ("PriorityClass", DWORD), ("SchedulingClass", DWORD)]


class IO_COUNTERS(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "ReadOperationCount", "WriteOperationCount", "OtherOperationCount",
        "ReadTransferCount", "WriteTransferCount", "OtherTransferCount")]


class JOBOBJECT_EXTENDED_LIMIT_INFORMATION(ctypes.Structure):
    """winnt.h; 144 bytes on 64-bit Windows."""
    _fields_ = [("BasicLimitInformation", JOBOBJECT_BASIC_LIMIT_INFORMATION),
                ("IoInfo", IO_COUNTERS), ("ProcessMemoryLimit", ctypes.c_size_t),
                ("JobMemoryLimit", ctypes.c_size_t), ("PeakProcessMemoryUsed", ctypes.c_size_t),
                ("PeakJobMemoryUsed", ctypes.c_size_t)]


JobObjectExtendedLimitInformation = 9       # winnt.h JOBOBJECTINFOCLASS
JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x2000  # winnt.h

AF_INET = 2       # ws2def.h
AF_INET6 = 23     # ws2def.h (not Linux's 10)
IP_DAD_STATE_PREFERRED = 4  # nldef.h NL_DAD_STATE IpDadStatePreferred

LPOVERLAPPED = ctypes.POINTER(OVERLAPPED)
PMIB_UNICASTIPADDRESS_ROW = ctypes.POINTER(MIB_UNICASTIPADDRESS_ROW)

# ---- declarations: name -> (restype, argtypes), as in the SDK headers --------------
Signature = Tuple[Optional[type], Sequence[type]]

KERNEL32: Dict[str, Signature] = {
    "CreateFileW": (HANDLE, (LPCWSTR, DWORD, DWORD, LPVOID, DWORD, DWORD, HANDLE)),
    "CloseHandle": (BOOL, (HANDLE,)),
    "DeviceIoControl": (BOOL, (HANDLE, DWORD, LPVOID, DWORD, LPVOID, DWORD, LPDWORD,
                               LPOVERLAPPED)),
    "ReadFile": (BOOL, (HANDLE, LPVOID, DWORD, LPDWORD, LPOVERLAPPED)),
    "WriteFile": (BOOL, (HANDLE, LPVOID, DWORD, LPDWORD, LPOVERLAPPED)),
    "GetOverlappedResult": (BOOL, (HANDLE, LPOVERLAPPED, LPDWORD, BOOL)),
    "CancelIoEx": (BOOL, (HANDLE, LPOVERLAPPED)),
    "CreateEventW": (HANDLE, (LPVOID, BOOL, BOOL, LPCWSTR)),
    "SetEvent": (BOOL, (HANDLE,)),
    "ResetEvent": (BOOL, (HANDLE,)),
    "WaitForSingleObject": (DWORD, (HANDLE, DWORD)),
    "WaitForMultipleObjects": (DWORD, (DWORD, ctypes.POINTER(HANDLE), BOOL, DWORD)),
    "CreateJobObjectW": (HANDLE, (LPVOID, LPCWSTR)),
    "SetInformationJobObject": (BOOL, (HANDLE, ctypes.c_int32, LPVOID, DWORD)),
    "AssignProcessToJobObject": (BOOL, (HANDLE, HANDLE)),
}

class MIB_UNICASTIPADDRESS_TABLE(ctypes.Structure):
    """netioapi.h: NumEntries, then the rows (8-aligned); Table[1] stands for ANY_SIZE."""
    _fields_ = [("NumEntries", ULONG), ("Table", MIB_UNICASTIPADDRESS_ROW * 1)]


PMIB_UNICASTIPADDRESS_TABLE = ctypes.POINTER(MIB_UNICASTIPADDRESS_TABLE)
IP_PREFIX_ORIGIN_DHCP = 3   # nldef.h NL_PREFIX_ORIGIN IpPrefixOriginDhcp

IPHLPAPI: Dict[str, Signature] = {
    "InitializeUnicastIpAddressEntry": (None, (PMIB_UNICASTIPADDRESS_ROW,)),
    "CreateUnicastIpAddressEntry": (DWORD, (PMIB_UNICASTIPADDRESS_ROW,)),  # NETIO_STATUS
    "GetUnicastIpAddressTable": (DWORD, (USHORT, ctypes.POINTER(PMIB_UNICASTIPADDRESS_TABLE))),
    "FreeMibTable": (None, (LPVOID,)),
    "ConvertInterfaceGuidToLuid": (DWORD, (ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint64))),
}

# wintun.h (WireGuard/wintun api/wintun.h): adapter and session handles are opaque pointers.
WINTUN_ADAPTER_HANDLE = ctypes.c_void_p
WINTUN_SESSION_HANDLE = ctypes.c_void_p
NET_LUID = ctypes.c_uint64  # ifdef.h: a 64-bit union


class GUID(ctypes.Structure):
    _fields_ = [("Data1", DWORD), ("Data2", USHORT), ("Data3", USHORT), ("Data4", BYTE * 8)]


# typedef void (CALLBACK *WINTUN_LOGGER_CALLBACK)(WINTUN_LOGGER_LEVEL, DWORD64, LPCWSTR).
# CALLBACK is stdcall on x86 Windows (WINFUNCTYPE); the CFUNCTYPE fallback only serves the
# Linux tests, where WINFUNCTYPE does not exist (and on x64 the two are the same).
WINTUN_LOGGER_CALLBACK = getattr(ctypes, "WINFUNCTYPE", ctypes.CFUNCTYPE)(
    None, ctypes.c_int32, DWORD64, LPCWSTR)

WINTUN: Dict[str, Signature] = {
    "WintunCreateAdapter": (WINTUN_ADAPTER_HANDLE, (LPCWSTR, LPCWSTR, ctypes.POINTER(GUID))),
    "WintunOpenAdapter": (WINTUN_ADAPTER_HANDLE, (LPCWSTR,)),
    "WintunCloseAdapter": (None, (WINTUN_ADAPTER_HANDLE,)),
    "WintunDeleteDriver": (BOOL, ()),
    "WintunGetAdapterLUID": (None, (WINTUN_ADAPTER_HANDLE, ctypes.POINTER(NET_LUID))),
    "WintunGetRunningDriverVersion": (DWORD, ()),
    "WintunSetLogger": (None, (WINTUN_LOGGER_CALLBACK,)),
    "WintunStartSession": (WINTUN_SESSION_HANDLE, (WINTUN_ADAPTER_HANDLE, DWORD)),
    "WintunEndSession": (None, (WINTUN_SESSION_HANDLE,)),
    "WintunGetReadWaitEvent": (HANDLE, (WINTUN_SESSION_HANDLE,)),
    "WintunReceivePacket": (PBYTE, (WINTUN_SESSION_HANDLE, LPDWORD)),
    "WintunReleaseReceivePacket": (None, (WINTUN_SESSION_HANDLE, PBYTE)),
    "WintunAllocateSendPacket": (PBYTE, (WINTUN_SESSION_HANDLE, DWORD)),
    "WintunSendPacket": (None, (WINTUN_SESSION_HANDLE, PBYTE)),
}


class Api:
    """The declared functions of one DLL as attributes, plus `last_error()`: GetLastError
    as ctypes saved it right after the last call on this thread."""

    def __init__(self, dll, table: Dict[str, Signature], last_error: Callable[[], int]) -> None:
        for name, (restype, argtypes) in table.items():
            fn = getattr(dll, name)
            fn.restype = restype
            fn.argtypes = list(argtypes)
            setattr(self, name, fn)
        self.last_error = last_error

    def fail(self, what: str) -> OSError:
        """The OSError for the call that just failed on this thread."""
        return error(self.last_error(), what)


_loaded: Dict[str, Api] = {}


def load(name: str, table: Dict[str, Signature]) -> Api:
    """Load a system DLL once per process and declare `table` on it (Windows only)."""
    if name not in _loaded:
        windll = getattr(ctypes, "WinDLL", None)
        if windll is None:
            raise OSError(f"{name}.dll: ctypes.WinDLL exists only on Windows")
        _loaded[name] = Api(windll(name, use_last_error=True), table, ctypes.get_last_error)
    return _loaded[name]


def load_path(path: str, table: Dict[str, Signature]) -> Api:
    """Load a DLL by absolute path (wintun.dll) and declare `table` on it (Windows only).
    Raises OSError as ctypes does: missing file, wrong architecture (WinError 193)."""
    windll = getattr(ctypes, "WinDLL", None)
    if windll is None:
        raise OSError(f"{path}: ctypes.WinDLL exists only on Windows")
    return Api(windll(path, use_last_error=True), table, ctypes.get_last_error)


def kernel32() -> Api:
    return load("kernel32", KERNEL32)


def iphlpapi() -> Api:
    return load("iphlpapi", IPHLPAPI)


def c_buffer(buf) -> ctypes.Array:
    """A ctypes view of a caller's buffer (no copy when it is writable, as shared-memory
    slots are), so ReadFile/WriteFile use the slot's memory directly."""
    try:
        return (ctypes.c_char * len(buf)).from_buffer(buf)
    except TypeError:  # read-only (bytes): the kernel only reads it, a copy is harmless
        return (ctypes.c_char * len(buf)).from_buffer_copy(buf)


# ---- a handle that crosses into a child process ------------------------------------
def duplicate_for_child(handle: int, access: int):
    """multiprocessing's DuplicateHandle wrapper (Windows only): the handle is duplicated
    now, and the child takes it over with DUPLICATE_CLOSE_SOURCE when unpickled. Tests
    replace this function, since multiprocessing.reduction has no DupHandle on Linux."""
    from multiprocessing import reduction
    return reduction.DupHandle(handle, access)


class InheritedHandle:
    """A HANDLE owned by one process, picklable into a child being started: the Windows
    twin of engine.handles.InheritedFd. `close()` is idempotent."""

    __slots__ = ("value", "_k32")

    def __init__(self, value: int, k32: Api) -> None:
        self.value = value
        self._k32 = k32

    def __reduce__(self):
        if self.value is None:
            raise ValueError("handle is closed")
        return (_rebuild_handle, (duplicate_for_child(self.value,
                                                      FILE_GENERIC_READ | FILE_GENERIC_WRITE),))

    def close(self) -> None:
        value, self.value = self.value, None
        if value is not None:
            self._k32.CloseHandle(value)


def _rebuild_handle(dup) -> InheritedHandle:
    return InheritedHandle(dup.detach(), kernel32())
