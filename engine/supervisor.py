"""The supervisor: topology, shared-memory lifetime, start / restart / stop.

Theory of operation:
1. Open the device once and keep it for the whole run (a restarted child gets the same
   kernel object). On Linux, provision it: a device we created gets --address (default
   10.3.0.1/24), --address6 and --mtu and is brought up; a device that already has an
   address is used as it is, and that address defines the mirror prefix.
2. Create the shared memory (engine/shm.py), reclaiming what a crashed run left.
3. Optionally drop root (--user): the device is already open, the segments are handed
   to that user.
4. Start reader, workers and writer (spawn start method by default, as on Windows, so
   Linux runs catch pickling mistakes). A child that dies is restarted against the same
   device and rings; more than RESTART_LIMIT restarts within RESTART_WINDOW seconds stop
   the engine with an error instead of looping.
5. SIGINT/SIGTERM or --duration: set STOP and wake everyone. The reader stops reading;
   workers drain their rings; the writer writes what is left and exits. Whatever has
   not exited after DRAIN_TIMEOUT is killed. Then the segments are unlinked and the
   device closed (a device we created disappears with it).
"""
from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from typing import Dict, Optional

import psutil

from . import journal, pcap, platform, shm, stats, topology
from .actor import Context
from .reader import EXIT_DEVICE_GONE, reader_loop
from .worker import worker_loop
from .writer import writer_loop
from .capture import Capture
from .monitor import Dumper
from .config import Config, parse_address, check_mirror_network, DEFAULT_ADDRESS
from .errors import EngineError
from .packet import Mirror
from .tun import open_device

log = logging.getLogger("engine")

RESTART_LIMIT, RESTART_WINDOW = 10, 10.0
CREATED_TXQUEUELEN = 2048  # the kernel default is 500
DRAIN_TIMEOUT = 1.5  # seconds; DESIGN.md invariant 6 allows 2 s for the whole stop
FORKSERVER_WAIT = 5.0  # seconds a restart waits for a killed forkserver to be replaced


def provision(cfg: Config, dev):
    """Give a Linux device its addresses; returns the (IPv4, IPv6) that define the mirror."""
    if cfg.driver == "memory" or not hasattr(dev, "offload_flags"):
        return cfg.address or parse_address(DEFAULT_ADDRESS, 4, "--address"), cfg.address6
    from provisioning import linux as prov
    have4, have6 = prov.ipv4_address(dev.name), prov.ipv6_addresses(dev.name)
    addr4, addr6 = have4, (have6[0] if have6 else None)
    if have4 is None:
        addr4 = cfg.address or parse_address(DEFAULT_ADDRESS, 4, "--address")
        prov.set_ipv4(dev.name, addr4)
    elif cfg.address is not None and cfg.address != have4:
        log.warning("%s already has %s; mirroring that (not --address %s)", dev.name, have4,
                    cfg.address)
    if addr6 is None and cfg.address6 is not None:
        addr6 = cfg.address6
        prov.add_ipv6(dev.name, addr6)
    elif cfg.address6 is not None and cfg.address6 != addr6:
        log.warning("%s already has %s; mirroring that (not --address6 %s)", dev.name, addr6,
                    cfg.address6)
    if dev.created:
        if cfg.mtu != prov.get_mtu(dev.name):
            prov.set_mtu(dev.name, cfg.mtu)
        # a deeper queue in front of the reader absorbs the moments it is not scheduled
        prov.set_txqueuelen(dev.name, CREATED_TXQUEUELEN)
    if not prov.is_up(dev.name):  # (an owner without root may attach to an up device)
        prov.set_up(dev.name)
    # a device's own addresses obey the rules of --address (a user may have set any)
    for have, addr in ((have4, addr4), (have6, addr6)):
        if have and addr is not None:
            check_mirror_network(addr, f"{dev.name} has", cfg.allow_wide_prefix)
    return addr4, addr6


class Supervisor:
    def __init__(self, cfg: Config, stats_file=None) -> None:
        """`stats_file`: (descriptor, whether it was made) of --stats-file, opened early."""
        self.cfg = cfg
        self.stats_fd, stats_made = stats_file or (None, False)
        self.stats_made = self.stats_fd if stats_made else None   # to hand to --user
        self.mp = multiprocessing.get_context(cfg.start_method)
        if cfg.start_method == "forkserver":
            self.mp.set_forkserver_preload(["engine.reader", "engine.worker", "engine.writer",
                                            "engine.forkserver_init"])
        self.procs: Dict[str, multiprocessing.process.BaseProcess] = {}
        self.threads: list = []
        self.restarts: list = []
        self.parents: Dict[str, int] = {}  # actor -> the forkserver that forked it
        self.dead_servers: set = set()     # forkservers whose death was counted
        self.stop_reason: Optional[str] = None
        self.segments: Optional[shm.Segments] = None
        self.dev = None
        self.guard = None   # ties the children's lives to ours (engine/platform)

    # ---- lifetime ------------------------------------------------------------------
    def run(self) -> int:
        # Signal handlers first: a SIGINT/SIGTERM at any moment of start-up leads to the
        # same clean stop (exit 0, nothing left behind), never a KeyboardInterrupt.
        # (HUP and QUIT too: their default action would end us with no clean-up)
        for sig in platform.STOP_SIGNALS:
            signal.signal(sig, self._on_signal)
        for sig in platform.IGNORED_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        self.dev = dev = open_device(self.cfg)
        try:
            if self.cfg.offload and not dev.vnet_hdr_len:  # no offload in this backend (Windows)
                self.cfg = self.cfg.replace(offload=False)
            addrs = provision(self.cfg, dev)
            pcap_fd = self._make_run(addrs)
            self._log_start(addrs)
            try:
                if self.cfg.user:
                    _drop_privileges(self.cfg.user, self.ctx.prefix, [pcap_fd, self.stats_made])
            finally:
                if pcap_fd is not None:
                    os.close(pcap_fd)
            return self._supervise()
        finally:
            self._cleanup()

    def _make_run(self, addrs) -> Optional[int]:
        """The run's rule, segments, wake-ups and capture, in self.ctx; returns the --pcap
        descriptor (to hand to --user, then close) or None."""
        cfg, dev = self.cfg, self.dev
        rule = Mirror(*addrs, dev.vnet_hdr_len, dev.l2_hdr_len)
        layout = shm.Layout(cfg.workers, cfg.pool_frames, cfg.slot_size, cfg.rx_ring_frames)
        prefix = shm.shm_prefix(dev.name)
        self.segments = shm.Segments(prefix, layout)
        self.segments.mapped.ctl[journal.SUPERVISOR_PID] = os.getpid()
        wakes = tuple(platform.new_wake() for _ in range(layout.actors))
        capture = pcap_fd = None
        if cfg.pcap:
            capture, pcap_fd = Capture.create(
                cfg.pcap, cfg.pcap_count, dev.vnet_hdr_len,
                pcap.LINKTYPE_ETHERNET if dev.l2_hdr_len else pcap.LINKTYPE_RAW)
        self.ctx = Context(prefix, layout, dev, rule, cfg.batch_size,
                           cfg.spin_us / 1e6, wakes, capture, cfg.inline)
        # workers never touch the device: they get none, so a device that cannot
        # leave this process (Wintun) or must not be held twice (TAP-Windows) is safe
        self.worker_ctx = dataclasses.replace(self.ctx, device=None)
        return pcap_fd

    def _log_start(self, addrs) -> None:
        cfg, dev, layout = self.cfg, self.dev, self.ctx.layout
        log.info("mirroring %s on %s (%s, %s, %d workers, offload %s, %d x %d-byte slots = "
                 "%.1f MiB shared)", ", ".join(str(a) for a in addrs if a),
                 dev.name, dev.mode, "created" if dev.created else "attached", cfg.workers,
                 "on" if dev.vnet_hdr_len else "off", layout.pool_frames,
                 layout.slot_size, (layout.pool_bytes + layout.ctl_bytes) / 2**20)
        log.info("frames: %s", topology.backlog_plan(cfg.inline, cfg.workers))
        log.info("processes: %s platform, start method %s, device I/O in %s",
                 platform.NAME, cfg.start_method,
                 "supervisor threads" if dev.io_threads else "reader and writer processes")
        if cfg.replay:
            log.info("replay %s: %s", cfg.replay, "frames start with a virtio_net_hdr "
                     "(--offload)" if cfg.offload else "frames start at the IP header "
                     "(offload off; --offload if they carry a virtio_net_hdr)")

    def _supervise(self) -> int:
        stop_at = time.monotonic() + self.cfg.duration if self.cfg.duration else None
        input_end = getattr(self.dev, "frames_total", None)  # a finite input: a replay
        dumper = Dumper(self.cfg, self.segments.mapped, self.cfg.workers,
                        stats_fd=self.stats_fd)
        self.dump_requested = False
        if platform.STATS_SIGNAL is not None:  # `kill -USR1 <supervisor pid>` dumps stats now
            signal.signal(platform.STATS_SIGNAL, self._on_usr1)
        if self.stop_reason is not None:  # stopped while starting up
            log.info("stopping: %s", self.stop_reason)
            return 0
        self.guard = platform.ChildGuard()
        if self.dev.io_threads:
            self._start_io_threads()
        for name in self._actor_names():
            self._start(name)
        ready = False
        while self.stop_reason is None:
            timeout = 0.2 if stop_at is None else max(0.0, min(0.2, stop_at - time.monotonic()))
            multiprocessing.connection.wait([p.sentinel for p in self.procs.values()], timeout)
            if stop_at is not None and time.monotonic() >= stop_at:
                self.stop_reason = "duration reached"
            if self.stop_reason is None and input_end is not None \
                    and self._all_handled(input_end):
                self.stop_reason = f"replay done ({input_end} frames)"
            if self.stop_reason is None:
                self._restart_dead()
            if any(not t.is_alive() for t in self.threads) and self.stop_reason is None:
                self.stop_reason = "error: an I/O thread died"
            if not ready and all(self.segments.mapped.ready):
                ready = True
                log.info("ready: %s", ", ".join(f"{n} {p.pid}" for n, p in self.procs.items()))
            if self.dump_requested:
                self.dump_requested = False
                dumper.dump_now()
            dumper.tick(time.monotonic())
        log.info("stopping: %s", self.stop_reason)
        self._stop_children()
        self._report()
        dumper.final()
        return 1 if self.stop_reason.startswith("error") else 0

    def _all_handled(self, frames: int) -> bool:
        """All `frames` have been read, and each is written or counted as dropped (frames
        the reader mirrored itself count as sent before their write: READER_UNSENT)."""
        m = self.segments.mapped
        t = stats.totals(m.counters, self.cfg.workers)
        return t["rx_frames"] >= frames and not t["in_flight"]

    def _on_usr1(self, _signum, _frame) -> None:
        self.dump_requested = True  # the main loop dumps (no I/O in a signal handler)

    def _on_signal(self, signum, _frame) -> None:
        if self.stop_reason is None:
            self.stop_reason = signal.Signals(signum).name

    # ---- children ------------------------------------------------------------------
    def _actor_names(self):
        workers = [f"worker{i}" for i in range(self.cfg.workers)]
        return workers if self.dev.io_threads else ["reader", *workers, "writer"]

    def _start_io_threads(self) -> None:
        """Devices whose handle or session belongs to the process that opened it (Wintun,
        TAP-Windows; see engine/tun/__init__.py) get their reader and writer as two
        threads of the supervisor itself. A dead I/O thread stops the engine."""
        m = self.segments.mapped
        for name, body in (("reader", reader_loop), ("writer", writer_loop)):
            t = threading.Thread(target=body, args=(self.ctx, m), name=f"engine-{name}",
                                 daemon=True)
            t.start()
            self.threads.append(t)

    def _start(self, name: str) -> None:
        if name.startswith("worker"):
            target, args = worker_loop, (self.worker_ctx, int(name[6:]))
        else:
            target = {"reader": reader_loop, "writer": writer_loop}[name]
            args = (self.ctx,)
        p = self.mp.Process(target=target, args=args, name=f"engine-{name}", daemon=True)
        deadline = time.monotonic() + FORKSERVER_WAIT
        while True:
            try:
                p.start()
                break
            except ConnectionError:
                # a forkserver still dying refuses the connection; multiprocessing starts
                # a new one once the old one has exited
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self.guard.adopt(p)
        self.procs[name] = p
        try:  # forkserver: the children's parent, whose death takes them all
            parent = psutil.Process(p.pid).ppid()
        except psutil.NoSuchProcess:
            return
        if parent != os.getpid():
            self.parents[name] = parent

    def _restart_dead(self) -> None:
        dead = [(name, p) for name, p in self.procs.items() if not p.is_alive()]
        if not dead:
            return
        if any(p.exitcode == EXIT_DEVICE_GONE for _, p in dead):
            self.stop_reason = f"error: device {self.dev.name} went away"
            return
        now = time.monotonic()
        self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW]
        for name, p in dead:
            # Exit code 255: multiprocessing lost the forkserver before it learnt the
            # child's status (the child died of the forkserver's death, which may still be
            # going on). That death is one restart toward the limit, not one per actor.
            server = self._dead_parent(name, FORKSERVER_WAIT if p.exitcode == 255 else 0.0)
            if server is None:
                self.restarts.append(now)
            elif server not in self.dead_servers:
                self.restarts.append(now)
                self.dead_servers.add(server)
                log.warning("the forkserver (pid %d) died, and every actor with it", server)
            if len(self.restarts) > RESTART_LIMIT:
                self.stop_reason = (f"error: {len(self.restarts)} restarts within "
                                    f"{RESTART_WINDOW:.0f} s (last: {name}, exit code "
                                    f"{p.exitcode})")
                return
            log.warning("%s (pid %s) exited with code %s; restarting it", name, p.pid, p.exitcode)
            actor = topology.actor_of(name, self.cfg.workers)
            self.segments.mapped.counters[actor][stats.F["restarts"]] += 1
            self._start(name)

    def _dead_parent(self, name: str, wait: float) -> Optional[int]:
        """The pid of the forkserver that forked `name` if it has died, or dies within
        `wait` seconds; None when there is none or it lives."""
        server = self.parents.get(name)
        deadline = time.monotonic() + wait
        while server is not None:
            try:
                if psutil.Process(server).status() == psutil.STATUS_ZOMBIE:
                    return server
            except psutil.NoSuchProcess:
                return server
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.005)
        return None

    def _stop_children(self) -> None:
        m = self.segments.mapped
        m.ctl[journal.STOP] = 1
        reader = self.procs.get("reader")
        if reader is not None and not reader.is_alive():
            # a dead reader reads no more: say so for it, so the workers drain and stop
            # instead of waiting to be killed
            m.ctl[journal.READER_DONE] = 1
        for wake in self.ctx.wakes:
            wake.set()
        deadline = time.monotonic() + DRAIN_TIMEOUT
        for name, p in self.procs.items():
            p.join(max(0.0, deadline - time.monotonic()))
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        late = [(name, p) for name, p in self.procs.items() if p.is_alive()]
        for name, p in late:
            log.warning("%s did not stop in time; killing it", name)
            p.kill()
        for _, p in late:
            p.join(1.0)

    def _report(self) -> None:
        m = self.segments.mapped
        t = stats.totals(m.counters, self.cfg.workers)
        drops = ", ".join(f"{k} {v}" for k, v in t["drops"].items() if v) or "none"
        log.info("read %d frames, wrote %d, dropped %d (%s)", t["rx_frames"], t["tx_frames"],
                 t["dropped"], drops)
        log.info("bytes: read %d, wrote %d, dropped %d", t["rx_bytes"], t["tx_bytes"],
                 t["dropped_bytes"])

    def _cleanup(self) -> None:
        for p in self.procs.values():
            if p.is_alive():
                p.kill()
                p.join(1.0)
        if self.guard is not None:
            self.guard.close()
        if self.segments is not None:
            self.segments.unlink()
        if self.dev is not None:
            self.dev.close()


def _drop_privileges(user: str, prefix: str, files: list) -> None:
    """Give up root once the device is open (DESIGN.md invariant 7): the run's segments
    and the files it made (--pcap, a new --stats-file) are handed to `user` (a file by its
    descriptor, never by a path that may have changed), then supplementary groups, gid
    and uid are set, in that order."""
    import pwd
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise EngineError(f"--user {user!r}: no such user") from None
    for part in ("pool", "ctl"):
        platform.chown_segment(f"{prefix}.{part}", pw.pw_uid, pw.pw_gid)
    for fd in files:
        if fd is not None:
            os.fchown(fd, pw.pw_uid, pw.pw_gid)
    # while root still can: no program the engine's processes might exec regains a
    # capability (the bounding set), nor any privilege through setuid bits (no_new_privs)
    platform.drop_bounding_set()
    os.setgroups(os.getgrouplist(user, pw.pw_gid))
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
    platform.set_no_new_privs()
    log.info("dropped privileges to %s (uid %d, gid %d)", user, pw.pw_uid, pw.pw_gid)
