"""The Windows adapter setup as data (h11's sans-I/O idea): which devcon/tapinstall and
netsh commands a plan stands for. Nothing here runs them; tools/provision.ps1 does, from
the same templates, and `python -m provisioning plan --os windows` prints them.

TEMPLATES is mirrored verbatim in tools/provision.ps1 ($Templates); the test
tests/test_provision_ps1.py parses the script and fails if the two differ. A template is
an argv list whose `{Key}` parts are filled from `values(plan)`. One key is known only on
the machine, once the adapter exists: `InstanceId` (its PnP device instance id); the
printed plan shows it as a <placeholder>. Renaming the new adapter is no template: the
script calls Rename-NetAdapter, because the name Windows gives a new adapter ("Ethernet 3")
has spaces that netsh's own argument parsing would have to survive.

Why these commands (WINDOWS.md §3): devcon/tapinstall `install <inf> <hwid>` creates one
adapter per call, so the script first looks for the adapter by name and hardware id;
`remove @<instance id>` removes only our adapter, where `remove <hwid>` would remove every
adapter of that driver, another VPN's included. The IPv4 address must equal the local
address the engine passes in CONFIG_TUN, since the driver answers ARP only for requests
from that address. In TUN mode tap-windows6 answers neighbour discovery only for fe80::8,
so IPv6 follows OpenVPN: the address as /128 and the prefix routed via fe80::8.
"""
from __future__ import annotations

import subprocess
from typing import Dict, List, Optional, Tuple

from .plan import Plan

TAP_IPV6_GATEWAY = "fe80::8"  # tap-windows6 rxpath/txpath: the one neighbour it answers for
DEFAULT_DEVCON = "devcon.exe"
DEFAULT_INF = {"tap0901": "OemVista.inf", "tap0801": "OemWin2k.inf"}
RUNTIME = {"InstanceId": "<instance id>"}

TEMPLATES: Dict[str, List[str]] = {
    "install": ["{Devcon}", "install", "{Inf}", "{HwId}"],
    "remove": ["{Devcon}", "remove", "@{InstanceId}"],
    "address": ["netsh", "interface", "ipv4", "set", "address", "name={Name}",
                "source=static", "address={Address}", "mask={Mask}"],
    "mtu": ["netsh", "interface", "ipv4", "set", "subinterface", "{Name}", "mtu={Mtu}",
            "store=persistent"],
    "address6": ["netsh", "interface", "ipv6", "set", "address", "interface={Name}",
                 "address={Address6}/128", "store=persistent"],
    "route6": ["netsh", "interface", "ipv6", "add", "route", "prefix={Network6}",
               "interface={Name}", "nexthop=" + TAP_IPV6_GATEWAY, "store=persistent"],
    "mtu6": ["netsh", "interface", "ipv6", "set", "subinterface", "{Name}", "mtu={Mtu}",
             "store=persistent"],
}
CONFIGURE_V4 = ("address", "mtu")
CONFIGURE_V6 = ("address6", "route6", "mtu6")


def values(plan: Plan, devcon: str = DEFAULT_DEVCON, inf: Optional[str] = None) -> Dict[str, str]:
    """The template keys a plan defines (tools/provision.ps1 Resolve-Plan builds the same)."""
    v = {"Name": plan.name, "HwId": plan.driver, "Devcon": devcon,
         "Inf": inf or DEFAULT_INF.get(plan.driver, ""),
         "Address": str(plan.address.ip), "Mask": str(plan.address.netmask),
         "Mtu": str(plan.mtu), "Address6": "", "Network6": ""}
    if plan.address6 is not None:
        v["Address6"] = str(plan.address6.ip)
        v["Network6"] = str(plan.address6.network)
    return v


def expand(step: str, vals: Dict[str, str]) -> List[str]:
    """TEMPLATES[step] with every {Key} replaced by vals[Key]."""
    out = []
    for part in TEMPLATES[step]:
        for key, value in vals.items():
            part = part.replace("{" + key + "}", value)
        out.append(part)
    return out


def steps(plan: Plan) -> Dict[str, Tuple[str, ...]]:
    """Which templates each action runs, in order. Wintun needs none: the engine creates
    its adapter and sets the addresses itself when it starts."""
    if plan.driver == "wintun":
        return {"install": (), "configure": (), "remove": ()}
    configure = CONFIGURE_V4 + (CONFIGURE_V6 if plan.address6 else ())
    return {"install": ("install",), "configure": configure, "remove": ("remove",)}


def commands(plan: Plan, devcon: str = DEFAULT_DEVCON,
             inf: Optional[str] = None) -> Dict[str, List[List[str]]]:
    """action -> argv lists, with the machine-only keys left as <placeholders>."""
    vals = {**values(plan, devcon, inf), **RUNTIME}
    return {action: [expand(s, vals) for s in names] for action, names in steps(plan).items()}


NOTES = {
    "install": "skipped when an adapter named {Name} exists; a new one is then renamed "
               "(Rename-NetAdapter -Name '<new name>' -NewName {Name})",
    "configure": "the adapter named {Name} (route6 only when the route is absent)",
    "remove": "only the adapter named {Name}",
}


def render(plan: Plan, devcon: str = DEFAULT_DEVCON, inf: Optional[str] = None) -> str:
    """The commands as Windows command lines, grouped by action, for people to read."""
    if plan.driver == "wintun":
        return ("# wintun: nothing to install; the engine creates the adapter and sets its "
                "address itself:\n"
                f"#   python -m engine --driver wintun --device {plan.name} "
                f"--address {plan.address}\n")
    vals = values(plan, devcon, inf)
    lines = []
    for action, argvs in commands(plan, devcon, inf).items():
        lines.append(f"# {action}: " + NOTES[action].format(**vals))
        lines.extend(subprocess.list2cmdline(argv) for argv in argvs)
    return "\n".join(lines) + "\n"
