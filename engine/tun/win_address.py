"""Whether a TAP-Windows adapter has the IPv4 address the mirror expects (iphlpapi).

The driver answers ARP only for requests from the address the engine passes in
CONFIG_TUN, and Windows routes the mirror prefix to the adapter only when the adapter has
an address in it. An adapter left to DHCP gets an APIPA address (169.254/16) or another
network's, and then nothing comes back while nothing says why: so the engine looks at
the adapter's addresses once at start and says what is wrong.
"""
from __future__ import annotations

import ctypes
import ipaddress
import uuid
from typing import List, Optional, Tuple

from . import win32

APIPA = ipaddress.IPv4Network("169.254.0.0/16")
Found = Tuple[ipaddress.IPv4Interface, bool]   # an address, and whether DHCP gave it


def ipv4_addresses(iphlp: win32.Api, guid: str) -> List[Found]:
    """The adapter's IPv4 addresses: GetUnicastIpAddressTable filtered by its LUID."""
    g = win32.GUID.from_buffer_copy(uuid.UUID(guid).bytes_le)
    luid = ctypes.c_uint64()
    code = iphlp.ConvertInterfaceGuidToLuid(ctypes.byref(g), ctypes.byref(luid))
    if code:
        raise win32.error(code, f"ConvertInterfaceGuidToLuid({guid})")
    table = win32.PMIB_UNICASTIPADDRESS_TABLE()
    code = iphlp.GetUnicastIpAddressTable(win32.AF_INET, ctypes.byref(table))
    if code:
        raise win32.error(code, "GetUnicastIpAddressTable")
    try:
        n = table.contents.NumEntries
        rows = (win32.MIB_UNICASTIPADDRESS_ROW * n).from_address(
            ctypes.addressof(table.contents.Table))
        return [(ipaddress.IPv4Interface((bytes(r.Address.Ipv4.sin_addr), r.OnLinkPrefixLength)),
                 r.PrefixOrigin == win32.IP_PREFIX_ORIGIN_DHCP)
                for r in rows if r.InterfaceLuid == luid.value]
    finally:
        iphlp.FreeMibTable(table)


def problem(name: str, expected: ipaddress.IPv4Interface, have: List[Found]) -> Optional[str]:
    """One line saying what is wrong with the adapter's addresses, or None."""
    if any(a == expected for a, _ in have):
        return None
    fix = (f"the mirror needs {expected} there (the driver answers ARP only for requests from "
           f"{expected.ip}): run tools/provision.ps1 -Action Configure, or pass --address")
    if not have:
        return f"{name} has no IPv4 address; {fix}"
    shown = ", ".join(str(a) for a, _ in have)
    if any(a.ip in APIPA for a, _ in have):
        return f"{name} has {shown} (APIPA: it waits for a DHCP server that is not there); {fix}"
    if any(dhcp for _, dhcp in have):
        return f"{name} takes {shown} from DHCP; {fix}"
    return f"{name} has {shown}; {fix}"
