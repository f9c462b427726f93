"""Traffic for the reliability tests, run inside a test namespace
(`python tests/inject.py CMD ...`). Each command prints one JSON object; every loop is
bounded in count and time.

  inject   malformed and non-mirror frames, from a deterministic generator (fixed seed),
           sent with an AF_PACKET socket bound to the TUN device: what such a socket sends
           is queued to the device's reader, exactly as if the host had routed it there.
  capture  an AF_PACKET socket on the device receiving what the engine WRITES (incoming
           on the device; the kernel's own outgoing frames are ignored) and checking every
           frame: well-formed IPv4/IPv6, valid header checksum, source in the mirror prefix,
           destination the device's address. Runs until its stdin closes.
  tcp      a TCP transfer of --size bytes through the mirror with a SHA-256 check.
  stream   a TCP stream through the mirror for loads that must be running while something
           happens: it goes on until its stdin closes (or --seconds, the bound), every
           byte checked against a known pattern; one line once data flows, one at the end.
  burst    COUNT UDP datagrams through the mirror to many destinations, then waits for them.
  load     soak traffic for --seconds: TCP streams (IPv4 and IPv6, hash-checked), UDP echo
           and ping, all at once.
"""
from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nettools import start_udp_echo  # noqa: E402
from packets import checksum, ipv4, ipv6  # noqa: E402

ETH_P_ALL, ETH_P_IP, ETH_P_IPV6 = 0x0003, 0x0800, 0x86DD
PACKET_OUTGOING = 4
PACKET_IGNORE_OUTGOING = 23
SOL_PACKET = 263
MARK_BAD = b"INJECTED-BAD"      # in every frame that must never come back
MARK_GOOD = b"INJECTED-GOOD"    # in the control frames that must come back mirrored


# ------------------------------------------------------------------ the generator
def frames(seed: int, count: int, addr4: str, addr6: str, controls: int = 0):
    """`count` frames the engine must drop, as (category, expected reason, bytes), cycling
    through every category of DESIGN.md §2.3-4, plus `controls` valid mirrored frames
    (category "control", reason None). Deterministic for a given seed."""
    rnd = random.Random(seed)
    a4, a6 = ipaddress.ip_interface(addr4), ipaddress.ip_interface(addr6)
    dev4, net4 = str(a4.ip), a4.network
    dev6, net6 = str(a6.ip), a6.network

    def peer4():  # a host of the mirror prefix, not the device, network or broadcast
        while True:
            h = net4[rnd.randrange(1, net4.num_addresses - 1)]
            if h != a4.ip:
                return str(h)

    def peer6():
        while True:
            h = net6[rnd.randrange(2, 1 << 16)]
            if h != a6.ip:
                return str(h)

    def body(k=None):
        return MARK_BAD + rnd.randbytes(rnd.randrange(0, 64) if k is None else k)

    def v4(src=None, dst=None, **kw):
        return ipv4(src or dev4, dst or peer4(), body(), proto=17, ident=rnd.randrange(65536),
                    **kw)

    def v6(src=None, dst=None, **kw):
        return ipv6(src or dev6, dst or peer6(), body(), **kw)

    def with_total(pkt, total):
        pkt = bytearray(pkt)
        pkt[2:4] = struct.pack("!H", total)
        pkt[10:12] = b"\0\0"
        pkt[10:12] = struct.pack("!H", checksum(bytes(pkt[:(pkt[0] & 15) * 4])))
        return bytes(pkt)

    out_of_prefix4 = str(ipaddress.ip_address(int(net4.broadcast_address) + 1 + rnd.randrange(200)))
    other6 = ipaddress.ip_network("2001:db8:ffff::/64")
    cats = [
        ("trunc4", "malformed", lambda: (bytes([0x45]) + MARK_BAD + rnd.randbytes(19))[:rnd.randrange(1, 20)]),
        ("version", "not_ip", lambda: bytes([rnd.choice([0, 1, 2, 3, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15]) << 4 | 5])
            + v4()[1:]),
        ("non_ip", "not_ip", lambda: bytes.fromhex("ffffffffffff0200000000010806") + MARK_BAD
            + rnd.randbytes(rnd.randrange(0, 40))),            # an Ethernet/ARP frame
        ("zeros", "not_ip", lambda: bytes(rnd.randrange(1, 80))),
        ("ihl_small", "malformed", lambda: (lambda p: bytes([0x40 | rnd.randrange(0, 5)]) + p[1:])(v4())),
        ("ihl_past", "malformed", lambda: (lambda p: with_total(bytes([0x4F]) + p[1:], len(p)))(
            ipv4(dev4, peer4(), MARK_BAD[:rnd.randrange(0, len(MARK_BAD))]))),
        ("total_short", "malformed", lambda: (lambda p: with_total(p + MARK_BAD[:rnd.randrange(1, 12)], len(p)))(v4())),
        ("total_long", "malformed", lambda: (lambda p: with_total(p, len(p) + rnd.randrange(1, 500)))(v4())),
        ("bad_checksum", "bad_checksum", lambda: v4(bad_checksum=True)),
        ("trunc6", "malformed", lambda: v6()[:rnd.randrange(1, 40)]),
        ("plen6", "malformed", lambda: (lambda p: p[:4] + struct.pack("!H", (len(p) - 40 + rnd.randrange(1, 300))
                                                                        % 65536) + p[6:])(v6())),
        ("broadcast4", "not_mirrored", lambda: v4(dst=str(net4.broadcast_address))),
        ("network4", "not_mirrored", lambda: v4(dst=str(net4.network_address))),
        ("self4", "not_mirrored", lambda: v4(dst=dev4)),
        ("multicast4", "not_mirrored", lambda: v4(dst=rnd.choice(["224.0.0.1", "224.0.0.251", "239.255.255.250"]))),
        ("limited_bcast4", "not_mirrored", lambda: v4(dst="255.255.255.255")),
        ("outside4", "not_mirrored", lambda: v4(dst=out_of_prefix4)),
        ("foreign_src4", "not_mirrored", lambda: v4(src=peer4())),
        ("foreign_src4_out", "not_mirrored", lambda: v4(src=out_of_prefix4)),
        ("multicast6", "not_mirrored", lambda: v6(dst=rnd.choice(["ff02::1", "ff02::16", "ff0e::1:3"]))),
        ("network6", "not_mirrored", lambda: v6(dst=str(net6.network_address))),
        ("self6", "not_mirrored", lambda: v6(dst=dev6)),
        ("outside6", "not_mirrored", lambda: v6(dst=str(other6[rnd.randrange(1, 1000)]))),
        ("foreign_src6", "not_mirrored", lambda: v6(src=peer6())),
    ]
    for i in range(count):
        name, reason, make = cats[i % len(cats)]
        yield name, reason, make()
    for i in range(controls):
        yield "control", None, ipv4(dev4, peer4(), MARK_GOOD + struct.pack("!I", i), proto=17)


def _device_counter(device: str, name: str) -> int:
    try:
        with open(f"/sys/class/net/{device}/statistics/{name}") as f:
            return int(f.read())
    except OSError:
        return -1


def inject(a):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
    s.bind((a.device, ETH_P_IP))
    expected, sent, refused, cats = {}, 0, 0, {}
    dropped0 = _device_counter(a.device, "tx_dropped")
    t0 = time.time()
    for k, (cat, reason, frame) in enumerate(frames(a.seed, a.count, a.addr4, a.addr6, a.controls)):
        try:
            s.send(frame)
        except OSError:
            refused += 1
            continue
        sent += 1
        cats[cat] = cats.get(cat, 0) + 1
        if reason:
            expected[reason] = expected.get(reason, 0) + 1
        if k % a.burst == a.burst - 1:
            time.sleep(a.pause)  # paced: the device queue must not overflow
    print(json.dumps({"sent": sent, "refused": refused, "expected": expected, "categories": cats,
                      "seconds": round(time.time() - t0, 3),
                      "device_tx_dropped": _device_counter(a.device, "tx_dropped") - dropped0}))


# ------------------------------------------------------------------ the capture
def check_frame(f: bytes, a4, a6):
    """None when `f` is what the mirror may write, else why not."""
    if not f:
        return "empty"
    ver = f[0] >> 4
    if ver == 4:
        if len(f) < 20:
            return "short ipv4"
        ihl = (f[0] & 15) * 4
        if ihl < 20 or ihl > len(f):
            return "bad ihl"
        if struct.unpack("!H", f[2:4])[0] != len(f):
            return "total length != frame"
        if checksum(f[:ihl]) != 0:
            return "bad header checksum"
        src, dst = ipaddress.IPv4Address(f[12:16]), ipaddress.IPv4Address(f[16:20])
        net = a4.network
        if dst != a4.ip:
            return f"dst {dst} is not the device"
        if src not in net or src in (net.network_address, net.broadcast_address, a4.ip):
            return f"src {src} is not a mirror peer"
        return None
    if ver == 6:
        if len(f) < 40:
            return "short ipv6"
        if struct.unpack("!H", f[4:6])[0] + 40 != len(f):
            return "payload length != frame"
        src, dst = ipaddress.IPv6Address(f[8:24]), ipaddress.IPv6Address(f[24:40])
        net = a6.network
        if dst != a6.ip:
            return f"dst {dst} is not the device"
        if src not in net or src in (net.network_address, a6.ip):
            return f"src {src} is not a mirror peer"
        return None
    return f"version {ver}"


def capture(a):
    a4, a6 = ipaddress.ip_interface(a.addr4), ipaddress.ip_interface(a.addr6)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    except OSError:
        pass
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
    s.bind((a.device, ETH_P_ALL))
    s.settimeout(0.2)
    stop = threading.Event()
    res = {"frames": 0, "bytes": 0, "v4": 0, "v6": 0, "bad": 0, "bad_examples": [],
           "marked_bad": 0, "marked_good": 0, "truncated": 0}
    buf = bytearray(1 << 17)

    def run():
        deadline = time.time() + a.timeout
        while not stop.is_set() and time.time() < deadline:
            try:
                n, addr = s.recvfrom_into(buf, 0, socket.MSG_TRUNC)
            except socket.timeout:
                continue
            if addr[2] == PACKET_OUTGOING:
                continue
            if n > len(buf):
                res["truncated"] += 1
                n = len(buf)
            f = bytes(buf[:n])
            res["frames"] += 1
            res["bytes"] += n
            res["v4" if f[:1] and f[0] >> 4 == 4 else "v6"] += 1
            why = check_frame(f, a4, a6)
            if why:
                res["bad"] += 1
                if len(res["bad_examples"]) < 5:
                    res["bad_examples"].append(f"{why}: {f[:64].hex()}")
            if MARK_BAD in f:
                res["marked_bad"] += 1
            if MARK_GOOD in f:
                res["marked_good"] += 1

    t = threading.Thread(target=run, daemon=True)
    t.start()
    print(json.dumps({"capturing": True}), flush=True)
    sys.stdin.read()  # until the test closes our stdin
    time.sleep(a.linger)
    stop.set()
    t.join(2)
    print(json.dumps(res), flush=True)


# ------------------------------------------------------------------ TCP and UDP
def _listener(peer: str, port: int, timeout: float) -> socket.socket:
    """A TCP server on the wildcard address of `peer`'s family: through the mirror, a
    connection to the peer arrives here."""
    fam = socket.AF_INET6 if ":" in peer else socket.AF_INET
    srv = socket.socket(fam, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", port))
    srv.listen(1)
    srv.settimeout(timeout)
    return srv


def _serve_once(srv, data: bytes):
    conn, _ = srv.accept()
    with conn:
        conn.sendall(data)


def transfer(peer: str, port: int, size: int, timeout: float = 40.0, seed=None) -> dict:
    data = random.Random(seed).randbytes(size) if seed is not None else os.urandom(size)
    srv = _listener(peer, port, timeout)
    th = threading.Thread(target=_serve_once, args=(srv, data), daemon=True)
    th.start()
    h, n, t0, err = hashlib.sha256(), 0, time.time(), None
    try:
        cli = socket.create_connection((peer, port), timeout=timeout)
        deadline = t0 + timeout
        while time.time() < deadline:
            chunk = cli.recv(1 << 16)
            if not chunk:
                break
            h.update(chunk)
            n += len(chunk)
        cli.close()
    except OSError as e:
        err = f"{type(e).__name__}: {e}"
    srv.close()
    return {"bytes": n, "size": size, "ok": n == size and h.hexdigest() == hashlib.sha256(data).hexdigest(),
            "sha256": h.hexdigest(), "want": hashlib.sha256(data).hexdigest(),
            "seconds": round(time.time() - t0, 3), "error": err}


def tcp(a):
    print(json.dumps(transfer(a.peer, a.port, a.size, a.timeout)), flush=True)


# The stream's bytes: a fixed random pattern of an odd length, repeated, so a lost,
# doubled or misplaced chunk shows as a mismatch; doubled so any chunk is one slice.
PATTERN_LEN, CHUNK = (1 << 20) + 13, 1 << 16


def stream(a):
    pattern = random.Random(a.seed).randbytes(PATTERN_LEN)
    pattern += pattern[:CHUNK]
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    deadline = time.time() + a.seconds
    srv = _listener(a.peer, a.port, a.stall)

    def serve():
        conn, _ = srv.accept()
        conn.settimeout(a.stall)
        with conn:
            sent, t_start, rate = 0, time.time(), a.mbps * 1e6 / 8
            while not stop.is_set() and time.time() < deadline:
                off = sent % PATTERN_LEN
                conn.sendall(pattern[off:off + CHUNK])
                sent += CHUNK
                if rate:  # at most this rate; a slower machine just runs slower
                    time.sleep(max(0.0, sent / rate - (time.time() - t_start)))
            conn.shutdown(socket.SHUT_WR)

    threading.Thread(target=serve, daemon=True).start()
    n, bad, err, announced, t0 = 0, 0, None, False, time.time()
    try:
        cli = socket.create_connection((a.peer, a.port), timeout=a.stall)
        while True:  # until the server's end of stream, or a stall of --stall seconds
            chunk = cli.recv(CHUNK)
            if not chunk:
                break
            off = n % PATTERN_LEN
            bad += chunk != pattern[off:off + len(chunk)]
            n += len(chunk)
            if not announced and n >= 1 << 20:
                announced = True
                print(json.dumps({"streaming": True, "bytes": n}), flush=True)
        cli.close()
    except OSError as e:
        err = f"{type(e).__name__}: {e}"
    print(json.dumps({"ok": err is None and bad == 0 and n > 0, "bytes": n, "bad_chunks": bad,
                      "stopped_by": "stdin" if stop.is_set() else "deadline",
                      "seconds": round(time.time() - t0, 3), "error": err}), flush=True)


def burst(a):
    """COUNT datagrams to hosts of the prefix (spread over many flows, so every worker gets
    its share), then wait up to --timeout for them all to come back through the mirror."""
    net = ipaddress.ip_interface(a.addr4).network
    me = ipaddress.ip_interface(a.addr4).ip
    hosts = [str(h) for h in net.hosts() if h != me][:64]
    rcv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rcv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    rcv.bind(("0.0.0.0", a.port))
    rcv.settimeout(0.2)
    snd = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(a.count):
        snd.sendto(struct.pack("!I", i) + bytes(a.payload), (hosts[i % len(hosts)], a.port))
    print(json.dumps({"sent": a.count}), flush=True)
    got, deadline = set(), time.time() + a.timeout
    while len(got) < a.count and time.time() < deadline:
        try:
            d = rcv.recv(2048)
        except socket.timeout:
            continue
        got.add(struct.unpack("!I", d[:4])[0])
    print(json.dumps({"sent": a.count, "received": len(got)}), flush=True)


def load(a):
    """Everything at once for --seconds; a summary of what worked."""
    deadline = time.time() + a.seconds
    res = {"tcp_ok": 0, "tcp_bad": [], "tcp_bytes": 0, "udp_sent": 0, "udp_echoed": 0}
    lock = threading.Lock()

    def tcp_stream(peer, port):
        while time.time() < deadline - 2:
            r = transfer(peer, port, a.tcp_size, timeout=max(5.0, deadline - time.time() + 5))
            with lock:
                if r["ok"]:
                    res["tcp_ok"] += 1
                    res["tcp_bytes"] += r["bytes"]
                else:
                    res["tcp_bad"].append(r)

    def udp_echo(peer, port):
        fam = socket.AF_INET6 if ":" in peer else socket.AF_INET
        start_udp_echo(fam, port, deadline + 1)
        cli = socket.socket(fam, socket.SOCK_DGRAM)
        cli.connect((peer, port))
        cli.settimeout(0.5)
        i = 0
        while time.time() < deadline:
            msg = b"soak %d" % i
            i += 1
            cli.send(msg)
            with lock:
                res["udp_sent"] += 1
            try:
                if cli.recv(2048) == msg:
                    with lock:
                        res["udp_echoed"] += 1
            except socket.timeout:
                pass
            time.sleep(0.002)

    pings = [subprocess.Popen(["ping", *fam, "-q", "-i", "0.05", "-w", str(int(a.seconds)), dst],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for fam, dst in (([], a.ping4), (["-6"], a.ping6))]
    threads = [threading.Thread(target=tcp_stream, args=(a.peer4, 8080)),
               threading.Thread(target=tcp_stream, args=(a.peer6, 8081)),
               threading.Thread(target=udp_echo, args=(a.peer4, 7070)),
               threading.Thread(target=udp_echo, args=(a.peer6, 7071))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(a.seconds + 60)
    res["ping"] = []
    for p in pings:
        out = p.communicate(timeout=a.seconds + 10)[0]
        res["ping"].append(next((ln for ln in out.splitlines() if "packets transmitted" in ln), out[-200:]))
    print(json.dumps(res), flush=True)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("inject")
    i.add_argument("--device", default="mir0")
    i.add_argument("--count", type=int, default=12000)
    i.add_argument("--controls", type=int, default=0)
    i.add_argument("--seed", type=int, default=4)
    i.add_argument("--burst", type=int, default=50)
    i.add_argument("--pause", type=float, default=0.005)
    c = sub.add_parser("capture")
    c.add_argument("--device", default="mir0")
    c.add_argument("--timeout", type=float, default=60)
    c.add_argument("--linger", type=float, default=0.5)
    for s in (i, c):
        s.add_argument("--addr4", default="198.18.0.1/24")
        s.add_argument("--addr6", default="2001:db8::1/64")
    t = sub.add_parser("tcp")
    t.add_argument("--peer", default="198.18.0.9")
    t.add_argument("--port", type=int, default=8080)
    t.add_argument("--size", type=int, default=64 << 20)
    t.add_argument("--timeout", type=float, default=40)
    st = sub.add_parser("stream")
    st.add_argument("--peer", default="198.18.0.9")
    st.add_argument("--port", type=int, default=8080)
    st.add_argument("--seconds", type=float, default=120, help="the bound, if never stopped")
    st.add_argument("--stall", type=float, default=20, help="no byte for this long: an error")
    st.add_argument("--seed", type=int, default=7)
    st.add_argument("--mbps", type=float, default=0, help="at most this rate (0: full speed)")
    b = sub.add_parser("burst")
    b.add_argument("--addr4", default="198.18.0.1/24")
    b.add_argument("--port", type=int, default=9999)
    b.add_argument("--count", type=int, default=1000)
    b.add_argument("--payload", type=int, default=64)
    b.add_argument("--timeout", type=float, default=20)
    ld = sub.add_parser("load")
    ld.add_argument("--seconds", type=float, default=60)
    ld.add_argument("--peer4", default="198.18.0.9")
    ld.add_argument("--peer6", default="2001:db8::9")
    ld.add_argument("--ping4", default="198.18.0.5")
    ld.add_argument("--ping6", default="2001:db8::5")
    ld.add_argument("--tcp-size", type=int, default=16 << 20)
    a = p.parse_args()
    {"inject": inject, "capture": capture, "tcp": tcp, "stream": stream, "burst": burst,
     "load": load}[a.cmd](a)


if __name__ == "__main__":
    main()
