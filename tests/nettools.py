"""Traffic helpers run inside a test namespace (`python tests/nettools.py CMD ...`).
Each prints one JSON object. Every loop is bounded in count and time."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import struct
import threading
import time


def start_udp_echo(family: int, port: int, until: float) -> socket.socket:
    """An echo server on the wildcard address, in a daemon thread, until `until`."""
    srv = socket.socket(family, socket.SOCK_DGRAM)
    srv.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    srv.settimeout(0.2)

    def serve():
        while time.time() < until:
            try:
                data, addr = srv.recvfrom(65535)
            except socket.timeout:
                continue
            srv.sendto(data, addr)

    threading.Thread(target=serve, daemon=True).start()
    return srv


def udp_echo(a):
    """Echo server on 0.0.0.0:PORT; the client sends COUNT datagrams to PEER:PORT. Through
    the mirror they reach our own server, whose replies are mirrored back to us."""
    fam = socket.AF_INET6 if ":" in a.peer else socket.AF_INET
    start_udp_echo(fam, a.port, time.time() + a.timeout)
    cli = socket.socket(fam, socket.SOCK_DGRAM)
    cli.connect((a.peer, a.port))
    cli.settimeout(1.0)
    ok = 0
    for i in range(a.count):
        msg = f"echo {i}".encode()
        cli.send(msg)
        try:
            if cli.recv(2048) == msg:
                ok += 1
        except socket.timeout:
            pass
    print(json.dumps({"sent": a.count, "echoed": ok, "peer": cli.getpeername()[0]}))


def udp_order(a):
    """FLOWS client sockets send COUNT numbered datagrams each, interleaved, to PEER;
    the mirrored datagrams arrive at our server (bound to the port). Reports, per flow,
    how many arrived and whether they arrived in order."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    srv.bind(("0.0.0.0", a.port))
    srv.settimeout(1.0)
    clients = []
    for _ in range(a.flows):
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.connect((a.peer, a.port))
        clients.append(c)
    got = {}
    total = a.flows * a.count

    gap = [0.0]

    def receive():
        deadline = time.time() + a.timeout
        n, last = 0, time.time()
        while n < total and time.time() < deadline:
            try:
                data, _ = srv.recvfrom(64)
            except socket.timeout:
                continue
            now = time.time()
            gap[0] = max(gap[0], now - last)
            last = now
            f, seq = struct.unpack("!II", data[:8])
            got.setdefault(f, []).append(seq)
            n += 1

    t = threading.Thread(target=receive)
    t.start()
    for seq in range(a.count):
        for f, c in enumerate(clients):
            c.send(struct.pack("!II", f, seq))
        if seq % 4 == 3:  # bursts of 4 x flows datagrams: far below any queue limit
            time.sleep(0.001)  # pace: UDP has no flow control; we test order, not capacity
    t.join()
    print(json.dumps({"max_gap_s": round(gap[0], 4),
                      "flows": {str(f): {"received": len(s), "in_order": s == sorted(s)}
                                for f, s in got.items()}}))


def tcp_transfer(a):
    """Server on 0.0.0.0:PORT sends SIZE random bytes; client connects to PEER:PORT
    (through the mirror) and hashes what it reads."""
    data = os.urandom(a.size)
    fam = socket.AF_INET6 if ":" in a.peer else socket.AF_INET
    srv = socket.socket(fam, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", a.port))
    srv.listen(1)
    srv.settimeout(a.timeout)

    def serve():
        conn, _ = srv.accept()
        conn.sendall(data)
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    cli = socket.create_connection((a.peer, a.port), timeout=a.timeout)
    h, n, t0 = hashlib.sha256(), 0, time.time()
    while True:
        chunk = cli.recv(1 << 16)
        if not chunk:
            break
        h.update(chunk)
        n += len(chunk)
    print(json.dumps({"bytes": n, "sha256": h.hexdigest(),
                      "want": hashlib.sha256(data).hexdigest(),
                      "seconds": time.time() - t0, "peer": cli.getpeername()[0]}))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("udp-echo", "udp-order", "tcp-transfer"):
        s = sub.add_parser(name)
        s.add_argument("--peer", required=True)
        s.add_argument("--port", type=int, default=7777)
        s.add_argument("--count", type=int, default=100)
        s.add_argument("--flows", type=int, default=4)
        s.add_argument("--size", type=int, default=1 << 20)
        s.add_argument("--timeout", type=float, default=20)
    a = p.parse_args()
    {"udp-echo": udp_echo, "udp-order": udp_order, "tcp-transfer": tcp_transfer}[a.cmd](a)


if __name__ == "__main__":
    main()
