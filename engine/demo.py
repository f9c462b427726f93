"""`python -m engine demo`: the mirror end to end in a private network namespace.

It makes a namespace holding only `lo` and the engine's device (198.18.0.1/24 and
2001:db8::1/64, RFC 2544 / RFC 3849 addresses, no route out), runs the engine with 4
workers inside it (every frame through reader, workers and writer), pings 198.18.0.5, downloads a file over TCP from a server on this
machine through 198.18.0.9, exchanges UDP datagrams with 198.18.0.5, prints what happened
and the engine's counters, and removes everything it made. Needs root (for the namespace).
"""
from __future__ import annotations

import argparse
import hashlib
import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

CLONE_NEWNET = 0x40000000
DEVICE = "mirror0"
ADDR4, ADDR6 = "198.18.0.1/24", "2001:db8::1/64"


def say(msg: str) -> None:
    print(f"demo: {msg}", flush=True)


def enter_namespace(name: str) -> None:
    """setns(2) this (still single-threaded) process into the named namespace; children
    and sockets made afterwards live there too."""
    from .platform import libc   # Linux only, like the whole demo
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        libc.check(libc.setns(fd, CLONE_NEWNET), "setns")
    finally:
        os.close(fd)


def ping(target: str, count: int) -> str:
    p = subprocess.run(["ping", "-c", str(count), "-i", "0.2", "-W", "2", target],
                       capture_output=True, text=True, timeout=30)
    summary = [ln for ln in p.stdout.splitlines() if "received" in ln or "rtt" in ln]
    return "; ".join(summary) or p.stderr.strip()


def tcp_download(size: int) -> str:
    blob = os.urandom(size)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(blob)))
            self.end_headers()
            self.wfile.write(blob)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("198.18.0.1", 8080), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        t0 = time.perf_counter()
        with urllib.request.urlopen("http://198.18.0.9:8080/file", timeout=20) as r:
            got = r.read()
        dt = time.perf_counter() - t0
    finally:
        srv.shutdown()
    ok = hashlib.sha256(got).digest() == hashlib.sha256(blob).digest()
    return (f"downloaded {len(got) / 2**20:.1f} MiB from http://198.18.0.9:8080/ in {dt:.2f} s "
            f"({len(got) * 8 / dt / 1e6:.0f} Mbit/s), sha256 {'matches' if ok else 'DIFFERS'}")


def udp_exchange(count: int) -> str:
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("0.0.0.0", 7))
    srv.settimeout(0.5)
    done = threading.Event()

    def echo():
        while not done.is_set():
            try:
                data, addr = srv.recvfrom(2048)
                srv.sendto(data, addr)
            except socket.timeout:
                pass

    threading.Thread(target=echo, daemon=True).start()
    cli = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    cli.connect(("198.18.0.5", 7))
    cli.settimeout(1.0)
    ok = 0
    for i in range(count):
        cli.send(b"datagram %d" % i)
        try:
            ok += cli.recv(2048) == b"datagram %d" % i
        except socket.timeout:
            pass
    done.set()
    return f"{ok}/{count} datagrams sent to 198.18.0.5:7 came back from it"


def actor_counts() -> str:
    """Frames each actor handled, from `python -m engine stats --json`."""
    p = subprocess.run([sys.executable, "-m", "engine", "stats", "--device", DEVICE, "--json"],
                       capture_output=True, text=True, timeout=30)
    if p.returncode:
        return p.stderr.strip()
    import json
    counters = json.loads(p.stdout)["counters"]
    return ", ".join(f"{name} {c['in_frames']}" + (f" (+{c['inline_frames']} inline)"
                                                    if c.get("inline_frames") else "")
                     for name, c in counters.items())


def main(argv) -> int:
    p = argparse.ArgumentParser(prog="python -m engine demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--size-mib", type=int, default=16, help="size of the TCP download")
    p.add_argument("--inline", default="never", choices=("never", "auto", "always"),
                   help="the engine's --inline (default never: every frame through the "
                        "reader, the workers and the writer, to show the pipeline)")
    a = p.parse_args(argv)
    why = _cannot_run()
    if why:
        print(f"engine demo: {why}", file=sys.stderr)
        return 1
    ns = f"engine-demo-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    engine = None
    try:
        enter_namespace(ns)
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        say(f"namespace {ns}: only lo and {DEVICE}, no route out")
        # started here, so that a signal while it starts still finds it to stop below
        engine = subprocess.Popen(
            [sys.executable, "-m", "engine", "--device", DEVICE, "--workers", str(a.workers),
             "--address", ADDR4, "--address6", ADDR6, "--inline", a.inline],
            stderr=subprocess.PIPE, text=True)
        if not _ready(engine):
            return 1
        worked = _exercise(a)
        engine.send_signal(signal.SIGTERM)
        for line in engine.stderr:
            say(line.rstrip())
        code = engine.wait(5)
        say(f"engine exited with status {code}")
        if not worked:
            say("FAILED: not everything came back through the mirror (above)")
        return 0 if code == 0 and worked else 1
    finally:
        # Interrupted or not, the engine stops by SIGTERM, which unlinks its shared memory:
        # once the namespace is gone, no later run could reclaim segments named after it.
        if engine is not None and engine.poll() is None:
            engine.send_signal(signal.SIGTERM)
            try:
                engine.wait(10)
            except subprocess.TimeoutExpired:
                engine.kill()
                engine.wait(5)
        subprocess.run(["ip", "netns", "del", ns])
        say(f"namespace {ns} removed")


def _cannot_run():
    """Why the demo cannot run here, in a line, or None."""
    if os.geteuid() != 0:
        return "needs root to create a network namespace (try: sudo make demo)"
    missing = [pkg for tool, pkg in (("ip", "iproute2"), ("ping", "iputils-ping"))
               if not shutil.which(tool)]
    if missing:
        return (f"needs {' and '.join(missing)} (tools/setup-system.sh, or "
                f"apt-get install {' '.join(missing)})")
    return None


def _ready(engine) -> bool:
    """Whether the engine came up (its start-up said)."""
    lines = []
    for line in engine.stderr:
        lines.append(line.rstrip())
        say(line.rstrip())
        if "engine: ready" in line or "error" in line:
            break
    if engine.poll() is not None or not any("ready" in ln for ln in lines):
        say("the engine did not start")
        return False
    return True


def _exercise(a) -> bool:
    """Ping, TCP and UDP through the mirror, each said; whether all came back."""
    results = []
    for label, part in (("ping 198.18.0.5 -> ", lambda: ping("198.18.0.5", 5)),
                        ("ping 2001:db8::5 -> ", lambda: ping("2001:db8::5", 3)),
                        ("TCP: ", lambda: tcp_download(a.size_mib << 20)),
                        ("UDP: ", lambda: udp_exchange(100))):
        try:
            results.append(part())
        except (OSError, subprocess.SubprocessError) as e:  # the engine died under us
            results.append(f"failed ({e})")
        say(label + results[-1])
    say("per actor: " + actor_counts())
    return (all(" 0% packet loss" in r for r in results[:2]) and "matches" in results[2]
            and results[3].startswith("100/100"))
