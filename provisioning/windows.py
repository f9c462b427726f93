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
so IPv6 follows OpenVPN: the address as /128 and the prefix routed via fe80::8. In TAP
mode the frames are Ethernet and the engine answers neighbour solicitations itself
(engine/l2.py), so, as OpenVPN does in TAP mode, the address gets its real prefix and
the prefix is on-link: no route via fe80::8, where nothing would answer.

devcon and tapinstall exit 1 for "done, but a reboot is needed to finish" (devcon.h
EXIT_REBOOT); that is success, and aborting there would leave the new adapter unnamed
for a re-run to install a second one. REBOOT_EXIT_CODES says which steps may end so.

Installing and removing prefer OpenVPN's `tapctl` (2.5 and later ship it instead of devcon):
`tapctl create --hwid root\\tap0901 --name NAME` creates the adapter under its name, with
no rename step. The script falls back to devcon/tapinstall (FALLBACK) where tapctl is not
found, and always for tap0801, which tapctl does not install. A mirrored echo request
arrives at Windows as inbound traffic from the mirror prefix on an unidentified (so
public) network, which the default firewall drops: `firewall` allows inbound traffic from
the mirror prefixes, and only from them.

`engine_command` is the command line that starts the engine on the adapter a plan sets
up, every address included (an IPv6 address the engine is not told about is not
mirrored).
"""
from __future__ import annotations

import subprocess
from typing import Dict, List, Optional, Tuple

from .plan import Plan

TAP_IPV6_GATEWAY = "fe80::8"  # tap-windows6 rxpath/txpath: the one neighbour it answers for
DEFAULT_DEVCON = "devcon.exe"
DEFAULT_TAPCTL = "tapctl.exe"
DEFAULT_INF = {"tap0901": "OemVista.inf", "tap0801": "OemWin2k.inf"}
RUNTIME = {"InstanceId": "<instance id>"}

TEMPLATES: Dict[str, List[str]] = {
    "tapctl": ["{Tapctl}", "create", "--hwid", "root\\tap0901", "--name", "{Name}"],
    "install": ["{Devcon}", "install", "{Inf}", "{HwId}"],
    "tapctl_remove": ["{Tapctl}", "delete", "{Name}"],
    "remove": ["{Devcon}", "remove", "@{InstanceId}"],
    "address": ["netsh", "interface", "ipv4", "set", "address", "name={Name}",
                "source=static", "address={Address}", "mask={Mask}"],
    "mtu": ["netsh", "interface", "ipv4", "set", "subinterface", "{Name}", "mtu={Mtu}",
            "store=persistent"],
    "address6": ["netsh", "interface", "ipv6", "set", "address", "interface={Name}",
                 "address={Address6}/{Prefix6}", "store=persistent"],
    "route6": ["netsh", "interface", "ipv6", "add", "route", "prefix={Network6}",
               "interface={Name}", "nexthop=" + TAP_IPV6_GATEWAY, "store=persistent"],
    "mtu6": ["netsh", "interface", "ipv6", "set", "subinterface", "{Name}", "mtu={Mtu}",
             "store=persistent"],
    "firewall": ["netsh", "advfirewall", "firewall", "add", "rule", "name={Rule}", "dir=in",
                 "action=allow", "remoteip={Remote}", "profile=any"],
    "unfirewall": ["netsh", "advfirewall", "firewall", "delete", "rule", "name={Rule}"],
    "engine": ["python", "-m", "engine", "--driver", "{Engine}", "--mode", "{Mode}",
               "--device", "{Name}", "--address", "{Interface}"],
    "engine6": ["--address6", "{Interface6}"],
}
CONFIGURE_V4 = ("address", "mtu")
CONFIGURE_V6 = ("address6", "route6", "mtu6")
CONFIGURE_V6_TAP = ("address6", "mtu6")   # TAP mode: the prefix is on-link
REBOOT_EXIT_CODES = {"install": 1, "remove": 1}  # devcon.h EXIT_REBOOT
FALLBACK = {"tapctl": "install", "tapctl_remove": "remove"}  # without tapctl, or for tap0801


def values(plan: Plan, devcon: str = DEFAULT_DEVCON, inf: Optional[str] = None,
           tapctl: str = DEFAULT_TAPCTL) -> Dict[str, str]:
    """The template keys a plan defines (tools/provision.ps1 Resolve-Plan builds the same)."""
    v = {"Name": plan.name, "HwId": plan.driver, "Devcon": devcon, "Tapctl": tapctl,
         "Rule": f"ip-mirror-{plan.name}", "Remote": str(plan.address.network),
         "Inf": inf or DEFAULT_INF.get(plan.driver, ""),
         "Address": str(plan.address.ip), "Mask": str(plan.address.netmask),
         "Mtu": str(plan.mtu), "Address6": "", "Network6": "", "Prefix6": "",
         "Mode": plan.mode, "Interface": str(plan.address), "Interface6": "",
         "Engine": "wintun" if plan.driver == "wintun" else "tap-windows"}
    if plan.address6 is not None:
        v["Address6"] = str(plan.address6.ip)
        v["Network6"] = str(plan.address6.network)
        v["Prefix6"] = "128" if plan.mode == "tun" else str(plan.address6.network.prefixlen)
        v["Interface6"] = str(plan.address6)
        v["Remote"] += "," + v["Network6"]
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
    """Which templates each action runs, in order, where tapctl is found (FALLBACK says
    what stands in for a tapctl step without it). Wintun needs none: the engine creates
    its adapter and sets the addresses itself when it starts."""
    if plan.driver == "wintun":
        return {"install": (), "configure": (), "remove": ()}
    v6 = CONFIGURE_V6 if plan.mode == "tun" else CONFIGURE_V6_TAP
    configure = CONFIGURE_V4 + (v6 if plan.address6 else ()) + ("firewall",)
    tapctl = plan.driver == "tap0901"
    return {"install": ("tapctl",) if tapctl else ("install",), "configure": configure,
            "remove": ("tapctl_remove" if tapctl else "remove", "unfirewall")}


def commands(plan: Plan, devcon: str = DEFAULT_DEVCON,
             inf: Optional[str] = None) -> Dict[str, List[List[str]]]:
    """action -> argv lists, with the machine-only keys left as <placeholders>."""
    vals = {**values(plan, devcon, inf), **RUNTIME}
    return {action: [expand(s, vals) for s in names] for action, names in steps(plan).items()}


NOTES = {
    "install": "skipped when an adapter named {Name} exists; with devcon/tapinstall (no "
               "tapctl, or tap0801) a new one is then renamed (Rename-NetAdapter -Name "
               "'<new name>' -NewName {Name})",
    "configure": "the adapter named {Name} (route6 and firewall only when absent)",
    "remove": "only the adapter named {Name}, and its firewall rule",
}


def engine_command(plan: Plan) -> List[str]:
    """The argv that starts the engine on the plan's adapter, with every address."""
    vals = values(plan)
    return expand("engine", vals) + (expand("engine6", vals) if plan.address6 else [])


def render(plan: Plan, devcon: str = DEFAULT_DEVCON, inf: Optional[str] = None) -> str:
    """The commands as Windows command lines, grouped by action, for people to read."""
    start = subprocess.list2cmdline(engine_command(plan))
    if plan.driver == "wintun":
        return ("# wintun: nothing to install; the engine creates the adapter and sets its "
                f"addresses itself:\n#   {start}\n")
    vals = {**values(plan, devcon, inf), **RUNTIME}
    lines = []
    for action, names in steps(plan).items():
        lines.append(f"# {action}: " + NOTES[action].format(**vals))
        for name in names:
            lines.append(subprocess.list2cmdline(expand(name, vals)))
            if name in FALLBACK:
                lines.append("#   without tapctl: "
                             + subprocess.list2cmdline(expand(FALLBACK[name], vals)))
    lines.append(f"# then start the engine:\n#   {start}")
    return "\n".join(lines) + "\n"
