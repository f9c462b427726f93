"""The Windows adapter plan: one JSON file that both `python -m provisioning` and
`tools/provision.ps1` read, so the two cannot disagree on the adapter they set up.

    {"name": "mirror0", "driver": "tap0901", "mode": "tun", "address": "10.3.0.1/24",
     "address6": null, "mtu": 1500}

Every field is required except `address6` (default null) and `mode` (default "tun"; "tap"
for the engine's --mode tap, Ethernet frames). Unknown fields are errors (a typo would
otherwise be ignored). tools/provision.ps1 applies the same rules in Read-PlanFields.

The file may be UTF-8 (with or without a BOM) or UTF-16 with a BOM: Windows PowerShell
5.1 writes UTF-16LE for `> plan.json`.
"""
from __future__ import annotations

import codecs
import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Optional

from engine.config import check_mirror_network, parse_address
from engine.errors import ConfigError, EngineError

DRIVERS = ("tap0901", "tap0801", "wintun")
# Names the engine accepts as --device (Config: 1-15 bytes, no '/' or spaces), narrowed to
# characters that need no quoting in netsh or devcon arguments.
NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,15}")
MIN_MTU = 576            # the IPv4 datagram every host must accept (RFC 791)
MAX_TAP_MTU = 1500       # OemVista.inf / OemWin2k.inf: MTU max 1500
MAX_MTU = 65535
MIN_IPV6_MTU = 1280      # RFC 8200
MODES = ("tun", "tap")
FIELDS = ("name", "driver", "mode", "address", "address6", "mtu")
OPTIONAL = {"address6": None, "mode": "tun"}


class PlanError(EngineError):
    """The plan is invalid; the message names the field."""


@dataclass(frozen=True)
class Plan:
    name: str = "mirror0"
    driver: str = "tap0901"
    address: ipaddress.IPv4Interface = ipaddress.IPv4Interface("10.3.0.1/24")
    address6: Optional[ipaddress.IPv6Interface] = None
    mtu: int = 1500
    mode: str = "tun"

    def __post_init__(self) -> None:
        _check(isinstance(self.name, str) and NAME_RE.fullmatch(self.name) is not None,
               "name", self.name, "1 to 15 letters, digits, '.', '_' or '-'")
        _check(self.driver in DRIVERS, "driver", self.driver, f"one of {', '.join(DRIVERS)}")
        _check(self.mode in MODES and (self.mode == "tun" or self.driver != "wintun"), "mode",
               self.mode, "tun or tap (tap: TAP-Windows only; Wintun is layer 3)")
        _check(isinstance(self.address, ipaddress.IPv4Interface), "address", self.address,
               "an IPv4 host address with a prefix of /30 or shorter, e.g. 10.3.0.1/24")
        _check(self.address6 is None or isinstance(self.address6, ipaddress.IPv6Interface),
               "address6", self.address6, "an IPv6 host address with a prefix, or null")
        for iface, field in ((self.address, "address"), (self.address6, "address6")):
            if iface is not None:   # the engine's own rule: it would refuse the adapter else
                try:
                    check_mirror_network(iface, field)
                except ConfigError as e:
                    raise PlanError(str(e)) from None
        _check(self.address6 is None or self.driver != "tap0801", "address6", self.address6,
               "null for tap0801: TAP-Win32 8.x passes no IPv6 in TUN mode (tap0901 9.8+ does)")
        top = MAX_MTU if self.driver == "wintun" else MAX_TAP_MTU
        low = MIN_IPV6_MTU if self.address6 is not None else MIN_MTU
        _check(isinstance(self.mtu, int) and not isinstance(self.mtu, bool)
               and low <= self.mtu <= top, "mtu", self.mtu,
               f"an integer from {low} to {top} for {self.driver}"
               + (" with IPv6" if self.address6 is not None else ""))

    @classmethod
    def from_dict(cls, data: dict) -> "Plan":
        if not isinstance(data, dict):
            raise PlanError("a plan is a JSON object with the fields " + ", ".join(FIELDS))
        unknown = sorted(set(data) - set(FIELDS))
        if unknown:
            raise PlanError(f"unknown plan field(s): {', '.join(unknown)}")
        missing = [f for f in FIELDS if f not in data and f not in OPTIONAL]
        if missing:
            raise PlanError(f"missing plan field(s): {', '.join(missing)}")
        address6 = data.get("address6")
        return cls(name=data["name"], driver=data["driver"],
                   address=parse_interface(data["address"], 4, "address"),
                   address6=None if address6 is None
                   else parse_interface(address6, 6, "address6"),
                   mtu=data["mtu"], mode=data.get("mode", OPTIONAL["mode"]))

    def to_dict(self) -> dict:
        return {"name": self.name, "driver": self.driver, "mode": self.mode,
                "address": str(self.address),
                "address6": None if self.address6 is None else str(self.address6),
                "mtu": self.mtu}

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def dump(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.dumps())


def load(path: str) -> Plan:
    """Read and validate a plan file; PlanError (naming the file) for anything wrong."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise PlanError(f"plan {path}: {e.strerror}") from None
    try:
        data = json.loads(_decode(raw))
    except UnicodeDecodeError:
        raise PlanError(f"plan {path}: not UTF-8 or UTF-16 text (save it as UTF-8)") from None
    except json.JSONDecodeError as e:
        raise PlanError(f"plan {path}: not valid JSON: {e}") from None
    try:
        return Plan.from_dict(data)
    except PlanError as e:
        raise PlanError(f"plan {path}: {e}") from None


def _decode(raw: bytes) -> str:
    """Text by its BOM: UTF-16 (PowerShell 5.1's `>`), UTF-8 with BOM (its Out-File
    -Encoding utf8), else UTF-8."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return raw.decode("utf-16")
    return raw.decode("utf-8-sig")


def parse_interface(text, version: int, field: str):
    """'10.3.0.1/24' -> IPv4Interface (version 4); PlanError naming `field` otherwise
    (the engine's own parser, so a plan and the command line accept the same text)."""
    if not isinstance(text, str):
        raise PlanError(f"{field} {text!r}: give an address with a prefix length")
    try:
        return parse_address(text, version, field)
    except ConfigError as e:
        raise PlanError(str(e)) from None


def _check(ok: bool, field: str, value, allowed: str) -> None:
    if not ok:
        raise PlanError(f"{field} {value!r}: {allowed}")
