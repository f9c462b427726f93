"""Command line: arguments -> Config -> supervisor; subcommands `stats` and `demo`."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from typing import List, Optional

from .config import (DEFAULT_DEVICE, DEFAULT_MEMORY_DEVICE, DRIVERS, MODES, START_METHODS,
                     Config, parse_address)
from . import platform, safefile
from .errors import ConfigError, EngineError

LOG_LEVELS = ("debug", "info", "warning", "error")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m engine",
        description="IP mirror on a TUN device: every packet sent into the device's network "
                    "comes back with source and destination swapped.",
        epilog="subcommands: `python -m engine stats --help`, `python -m engine demo --help`")
    p.add_argument("--workers", type=int, default=4, help="worker processes (default 4)")
    p.add_argument("--device", help=f"device name (default {DEFAULT_DEVICE}; "
                                    f"{DEFAULT_MEMORY_DEVICE} for --driver memory)")
    p.add_argument("--address", help="IPv4 address/prefix for a device without one "
                                      "(default 10.3.0.1/24)")
    p.add_argument("--address6", help="IPv6 address/prefix for a device without one")
    p.add_argument("--allow-wide-prefix", action="store_true",
                   help="accept a mirror prefix shorter than /8 (IPv4) or /16 (IPv6), which "
                        "routes other networks' addresses into the mirror")
    p.add_argument("--mode", default="auto", choices=MODES,
                   help="tun (IP packets) or tap (Ethernet frames) for a device the engine "
                        "creates; an existing device is used in its own mode (default auto)")
    p.add_argument("--mtu", type=int, default=1500, help="MTU of a device the engine creates")
    p.add_argument("--offload", action=argparse.BooleanOptionalAction, default=None,
                   help="pass GSO/TSO super-packets through (IFF_VNET_HDR; default on, but "
                        "off for --driver memory: say --offload when the replayed frames "
                        "start with a virtio_net_hdr)")
    p.add_argument("--batch", type=int, default=256, dest="batch_size",
                   help="frames the reader reads per worker in one step (default 256; "
                        "at most 1024 a step); a worker that fell behind takes up to 1024")
    p.add_argument("--pool-mib", type=int, default=0,
                   help="shared frame memory in MiB (default 32 with offload, else 8, or 4096 "
                        "frames for an MTU above 2029)")
    p.add_argument("--spin-us", type=int, default=50,
                   help="microseconds the reader polls an empty device before sleeping")
    p.add_argument("--inline", default="auto", choices=("auto", "always", "never"),
                   help="when the reader mirrors frames itself instead of handing them to "
                        "the workers (default auto: when it keeps up, or on machines with "
                        "fewer than 4 CPUs; never: always through the workers)")
    p.add_argument("--io", default="auto", choices=("auto", "syscall"),
                   help="device I/O on Linux (default auto: batches of reads and writes "
                        "through io_uring where the kernel allows it; syscall: one read(2) "
                        "or write(2) per frame)")
    p.add_argument("--duration", type=float, help="stop by itself after this many seconds")
    p.add_argument("--user", help="drop root to this user once the device is open")
    p.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    p.add_argument("--driver", default="auto", choices=DRIVERS,
                   help="device backend (default: the platform's; memory: pcap replay)")
    p.add_argument("--replay", help="memory driver: pcap (LINKTYPE_RAW) of frames to read")
    p.add_argument("--replay-loops", type=int, default=1, help="memory driver: replay count")
    p.add_argument("--sink", help="memory driver: pcap to write the mirrored frames to")
    p.add_argument("--replay-hold", action="store_true",
                   help="memory driver: keep running once the replay is done (until "
                        "--duration or a signal), e.g. for `stats`; by default the engine "
                        "exits 0 once every frame is written or dropped")
    p.add_argument("--io-threads", action="store_true",
                   help="memory driver: run the reader and writer as threads of the "
                        "supervisor, as the Windows backends must (tests that path anywhere)")
    p.add_argument("--wintun-dll", help="path of wintun.dll (Windows, --driver wintun)")
    p.add_argument("--start-method", default=Config.start_method, choices=START_METHODS,
                   help="how worker processes start (default %(default)s)")
    p.add_argument("--stats-interval", type=float, default=0.0, metavar="SECONDS",
                   help="every SECONDS, append a stats snapshot to --stats-file and print "
                        "a table of rates on stderr when it is a terminal (default 0: "
                        "only on SIGUSR1 and at exit)")
    p.add_argument("--stats-file", metavar="PATH",
                   help="append stats snapshots to PATH, one JSON line each")
    p.add_argument("--pcap", metavar="PATH",
                   help="capture the mirrored frames to PATH (pcap, readable by tcpdump -r)")
    p.add_argument("--pcap-count", type=int, default=100_000, metavar="N",
                   help="stop capturing after N frames (default %(default)s)")
    p.add_argument("--show-topology", action="store_true",
                   help="print the pipeline and exit")
    return p


def _check_user(user: Optional[str]) -> None:
    """--user must name an account before anything is created (a device, segments)."""
    if user is None or not platform.CAN_DROP_PRIVILEGES:  # (Config says why not)
        return
    import pwd
    try:
        pwd.getpwnam(user)
    except KeyError:
        raise ConfigError(f"--user {user!r}: no such user") from None


def _check_runtime_for(user: Optional[str]) -> None:
    """--user: that account must be able to run this Python and import the engine, since
    after the drop the supervisor starts its children as that user (a venv under root's
    home, say, it cannot read)."""
    if user is None or not platform.CAN_DROP_PRIVILEGES:
        return
    if os.geteuid() != 0:
        raise ConfigError(f"--user {user}: needs root (to drop it)")
    import pwd
    pw = pwd.getpwnam(user)
    probe = f"import sys; sys.path[:0] = {sys.path!r}; import engine.reader"
    try:
        p = subprocess.run([sys.executable, "-c", probe], user=pw.pw_uid, group=pw.pw_gid,
                           extra_groups=os.getgrouplist(user, pw.pw_gid), cwd="/",
                           capture_output=True, text=True, timeout=60)
        why = p.returncode and (p.stderr.strip().splitlines() or [f"status {p.returncode}"])[-1]
    except OSError as e:   # it cannot even execute the interpreter
        why = e.strerror
    if why:
        raise ConfigError(f"--user {user}: that account cannot run {sys.executable} with the "
                          f"engine ({why}); install the engine where it can read it")


def config_from_args(a: argparse.Namespace) -> Config:
    _check_user(a.user)
    return Config(
        device=a.device, mode=a.mode, driver=a.driver, workers=a.workers,
        address=parse_address(a.address, 4, "--address") if a.address else None,
        address6=parse_address(a.address6, 6, "--address6") if a.address6 else None,
        mtu=a.mtu, offload=a.offload, batch_size=a.batch_size, pool_mib=a.pool_mib,
        spin_us=a.spin_us, duration=a.duration, log_level=a.log_level, user=a.user,
        start_method=a.start_method, wintun_dll=a.wintun_dll, replay=a.replay,
        replay_loops=a.replay_loops, sink=a.sink, replay_hold=a.replay_hold,
        io_threads=a.io_threads,
        stats_interval=a.stats_interval,
        stats_file=a.stats_file, pcap=a.pcap, pcap_count=a.pcap_count, inline=a.inline,
        io=a.io, allow_wide_prefix=a.allow_wide_prefix)


def _interrupted(signum, _frame):
    raise KeyboardInterrupt


def main(argv: Optional[List[str]] = None) -> int:
    # Until the supervisor installs its own handlers, SIGTERM stops us like Ctrl-C: quietly,
    # with status 0, since nothing has been created yet (or `finally` removes it).
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        return _main(sys.argv[1:] if argv is None else argv)
    except KeyboardInterrupt:
        return 0


def _main(argv: List[str]) -> int:
    if argv[:1] == ["demo"]:
        from . import demo
        return demo.main(argv[1:])
    if argv[:1] == ["stats"]:
        from . import stats_cli
        return stats_cli.main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="engine: %(message)s")
    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        parser.error(str(e))
    if args.show_topology:
        from .topology import describe
        print(describe(cfg.workers))
        return 0
    try:   # what can be checked before anything is made: an argument error, exit 2
        _check_runtime_for(cfg.user)
        stats_file = cfg.stats_file and safefile.open_append(cfg.stats_file, "--stats-file")
    except EngineError as e:
        parser.error(str(e))
    from .supervisor import Supervisor
    try:
        return Supervisor(cfg, stats_file or None).run()
    except EngineError as e:
        print(f"engine: error: {e}", file=sys.stderr)
        return 1
