"""python -m provisioning plan|up|down: print a Windows plan, or create/delete a Linux device."""
from __future__ import annotations

import argparse
import contextlib
import sys

from engine.errors import ConfigError, EngineError


def _plan(a) -> None:
    from . import plan as plans, windows
    if a.plan:
        p = plans.load(a.plan)
    else:
        p = plans.Plan(name=a.name, driver=a.driver, mtu=a.mtu, mode=a.mode,
                       address=plans.parse_interface(a.address, 4, "--address"),
                       address6=a.address6 and plans.parse_interface(a.address6, 6, "--address6"))
    print(p.dumps() if a.json else windows.render(p, a.devcon, a.inf), end="")


def _uid(user: str) -> int:
    import pwd  # POSIX only
    try:
        return int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid
    except KeyError:
        raise EngineError(f"unknown user {user!r}") from None


def _gid(group: str) -> int:
    import grp  # POSIX only
    try:
        return int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise EngineError(f"unknown group {group!r}") from None


def _up(a) -> None:
    from engine.config import check_mirror_network, parse_address
    from . import linux
    v4 = a.address and parse_address(a.address, 4, "--address")
    v6 = a.address6 and parse_address(a.address6, 6, "--address6")
    for iface, option in ((v4, "--address"), (v6, "--address6")):
        if iface:  # the engine would refuse this device's address: refuse to make it
            check_mirror_network(iface, option, a.allow_wide_prefix)
    uid = a.owner and _uid(a.owner)
    gid = a.group and _gid(a.group)
    linux.create_persistent(a.name, owner=uid, group=gid, offload=not a.no_offload)
    try:
        if a.mtu:
            linux.set_mtu(a.name, a.mtu)
        if v4:
            linux.set_ipv4(a.name, v4)
        linux.set_up(a.name)
        if v6:
            linux.add_ipv6(a.name, v6)
    except BaseException:
        with contextlib.suppress(EngineError):
            linux.delete_persistent(a.name)  # no half-made device left behind
        raise


def _down(a) -> None:
    from . import linux
    linux.delete_persistent(a.name)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m provisioning")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan", help="print the Windows setup commands for a plan")
    p.add_argument("--os", required=True, choices=["windows"])
    p.add_argument("--plan", metavar="FILE", help="a plan JSON file (else the options below)")
    p.add_argument("--name", default="mirror0")
    p.add_argument("--driver", default="tap0901", choices=["tap0901", "tap0801", "wintun"])
    p.add_argument("--address", default="10.3.0.1/24", metavar="A/P")
    p.add_argument("--address6", metavar="A6/P")
    p.add_argument("--mtu", type=int, default=1500)
    p.add_argument("--mode", default="tun", choices=["tun", "tap"],
                   help="the engine's --mode on a TAP-Windows adapter (default tun)")
    p.add_argument("--devcon", default="devcon.exe", help="devcon or tapinstall path")
    p.add_argument("--inf", help="driver INF (default OemVista.inf / OemWin2k.inf)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON instead")
    p.set_defaults(run=_plan)
    u = sub.add_parser("up", help="create a persistent Linux TUN device (needs root)")
    u.add_argument("name")
    u.add_argument("--owner", metavar="USER")
    u.add_argument("--group", metavar="GROUP")
    u.add_argument("--no-offload", action="store_true")
    u.add_argument("--address", metavar="A/P")
    u.add_argument("--address6", metavar="A6/P")
    u.add_argument("--mtu", type=int)
    u.add_argument("--allow-wide-prefix", action="store_true",
                   help="accept a prefix shorter than /8 (IPv4) or /16 (IPv6), as the engine's "
                        "option of that name does")
    u.set_defaults(run=_up)
    d = sub.add_parser("down", help="delete a persistent Linux TUN device (needs root)")
    d.add_argument("name")
    d.set_defaults(run=_down)
    return ap


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except ConfigError as e:  # a bad argument
        print(f"provisioning: error: {e}", file=sys.stderr)
        return 2
    except (EngineError, OSError) as e:
        print(f"provisioning: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
