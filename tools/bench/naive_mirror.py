#!/usr/bin/env python3
"""The naive baseline: the article's single-process loop, ported as a user would write it.

    python tools/bench/naive_mirror.py [--vnet] DEV

Attaches to the TUN device DEV (IFF_TUN | IFF_NO_PI), then forever:
os.read() one packet -> bytearray -> swap IPv4 bytes 12..15 <-> 16..19 or IPv6 bytes
8..23 <-> 24..39 -> os.write() it back. Anything that is not IPv4/IPv6 is dropped.
No address check, no batching, no numpy: one packet per syscall, the baseline the
engine is measured against.

--vnet attaches with IFF_VNET_HDR and enables TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4 |
TUN_F_TSO6), like `cmirror --vnet`: every read and write then carries the 10-byte
virtio_net_hdr, which is written back unchanged (the swap keeps every checksum valid,
including a NEEDS_CSUM partial sum), so GSO super-packets pass through whole.

On SIGTERM/SIGINT it prints its counters to stderr and exits 0.
Standard library only; Linux only.
"""
import argparse
import fcntl
import os
import signal
import struct
import sys

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
IFF_TUN, IFF_NO_PI, IFF_VNET_HDR = 0x0001, 0x1000, 0x4000
TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6 = 0x01, 0x02, 0x04
VNET_HDR_LEN = 10          # sizeof(struct virtio_net_hdr)
READ_SIZE = 65536 + VNET_HDR_LEN


class Stop(Exception):
    pass


def _stop(signum, _frame):
    raise Stop(signum)  # breaks out of the blocking os.read (PEP 475 retries otherwise)


def open_tun(name: str, vnet: bool) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if vnet else 0)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), flags))
    if vnet:
        fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
    return fd


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("device")
    ap.add_argument("--vnet", action="store_true",
                    help="IFF_VNET_HDR + TUNSETOFFLOAD (GSO super-packets pass through)")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    fd = open_tun(a.device, a.vnet)
    o = VNET_HDR_LEN if a.vnet else 0
    n_read = n_written = n_dropped = n_errors = max_read = 0
    try:
        while True:
            pkt = bytearray(os.read(fd, READ_SIZE))
            n_read += 1
            if len(pkt) > max_read:
                max_read = len(pkt)
            v = pkt[o] >> 4 if len(pkt) > o else 0
            if v == 4 and len(pkt) >= o + 20:
                pkt[o + 12:o + 16], pkt[o + 16:o + 20] = pkt[o + 16:o + 20], pkt[o + 12:o + 16]
            elif v == 6 and len(pkt) >= o + 40:
                pkt[o + 8:o + 24], pkt[o + 24:o + 40] = pkt[o + 24:o + 40], pkt[o + 8:o + 24]
            else:
                n_dropped += 1
                continue
            try:
                os.write(fd, pkt)
                n_written += 1
            except OSError:
                n_errors += 1
    except Stop:
        pass
    finally:
        print(f"naive_mirror: read {n_read} frames, wrote {n_written}, dropped {n_dropped}, "
              f"write errors {n_errors}, max_read {max_read}", file=sys.stderr, flush=True)
        os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
