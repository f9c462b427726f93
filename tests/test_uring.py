"""engine/tun/uring.py and the io_uring SlotIO, over a pipe and a datagram socketpair (no
privilege needed; the TUN device itself is covered by the end-to-end tests, which use
io_uring by default, and by test_e2e's --io syscall run)."""
from __future__ import annotations

import errno
import os
import select
import socket

import numpy as np
import pytest

from engine.tun import uring
from engine.tun.slots import ViewSlotIO
from engine.tun.uring import Uring, UringSlotIO


@pytest.fixture
def dgram():
    """A SOCK_DGRAM socketpair: message boundaries, like a TUN fd (one packet per read)."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def _slot_addr(pool: np.ndarray) -> np.ndarray:
    return pool.ctypes.data + np.arange(len(pool), dtype=np.uint64) * np.uint64(pool.strides[0])


def test_reads_in_order_and_eagain_for_the_rest(dgram):
    a, b = dgram
    for k in range(3):
        b.send(bytes([k]) * (10 + k))
    pool = np.zeros((8, 64), np.uint8)
    ring = Uring(a.fileno(), 8)
    out = np.zeros(5, np.int32)
    ring.submit_slots(None, None, np.arange(5, dtype=np.uint32), _slot_addr(pool), 64, out)
    assert out.tolist() == [10, 11, 12, -errno.EAGAIN, -errno.EAGAIN]
    assert [int(pool[k, 0]) for k in range(3)] == [0, 1, 2]
    ring.close()
    ring.close()   # idempotent


def _reverse_completions(ring: Uring) -> None:
    """Out-of-order completions, simulated: those of each submission reversed before
    they are read."""
    enter = ring._enter

    def reversed_completions(n):
        head = enter(n)
        rows = [(head + j) & ring.cq_mask for j in range(n)]
        ring.cqes[rows] = ring.cqes[rows[::-1]].copy()
        return head
    ring._enter = reversed_completions


@pytest.mark.parametrize("shuffle", [False, True])
def test_exchange_slots_across_the_queue_end_and_in_any_completion_order(dgram, shuffle):
    """Uring.exchange_slots reads completions where they wrap round the end of a small
    queue, and matches each to its request by user_data when they come out of order
    (simulated: the completions of each submission reversed before they are read)."""
    a, b = dgram
    pool = np.zeros((16, 32), np.uint8)
    ring = Uring(a.fileno(), 4)
    if shuffle:
        _reverse_completions(ring)
    base, stride = pool.ctypes.data, pool.strides[0]
    for k in range(40):   # CQ of 8: submissions of 3 wrap round its end every few steps
        pool[0, :2] = [k, 1]
        b.send(bytes([k, 2, 2]))
        refused, got_s, got_l, unused = ring.exchange_slots([0], [2], [5, 6], base, stride, 32)
        assert (refused, got_s, got_l, unused) == (0, [5], [3], [6])
        assert bytes(pool[5, :3]) == bytes([k, 2, 2]) and b.recv(8) == bytes([k, 1])
    b.close()   # a write to a socket whose peer is gone is refused
    refused, got_s, got_l, unused = ring.exchange_slots([0, 1], [2, 2], [5], base, stride, 32)
    assert (refused, got_s, unused) == (2, [], [5])
    ring.close()


@pytest.mark.parametrize("shuffle", [False, True])
def test_submit_slots_across_the_queue_end_and_in_any_completion_order(dgram, shuffle):
    """Uring.submit_slots (the numpy steps): writes, then reads, straight into the SQEs;
    a batch that wraps round the end of the queue fills the SQEs it names; results
    come back in request order, matched by user_data when the completions are not."""
    a, b = dgram
    pool = np.zeros((16, 32), np.uint8)
    ring = Uring(a.fileno(), 8)
    if shuffle:
        _reverse_completions(ring)
    slot_addr = _slot_addr(pool)
    ws, wl, rs = (np.array(x, np.uint32) for x in ([0, 1], [2, 3], [5, 6, 7]))
    out = np.zeros(5, np.int32)
    wrapped = 0
    for k in range(24):   # 5 requests a step on an 8-entry queue: every other one wraps
        wrapped += (ring._tail & ring.sq_mask) + 5 > ring.entries
        pool[0, :2], pool[1, :3] = [k, 1], [k, 2, 2]
        b.send(bytes([k, 3, 3, 3]))
        b.send(bytes([k, 4]))
        ring.submit_slots(ws, wl, rs, slot_addr, 32, out)
        assert out.tolist() == [2, 3, 4, 2, -errno.EAGAIN]
        assert bytes(pool[5, :4]) == bytes([k, 3, 3, 3])
        assert bytes(pool[6, :2]) == bytes([k, 4])
        assert b.recv(8) == bytes([k, 1]) and b.recv(8) == bytes([k, 2, 2])
    assert wrapped >= 10
    ring.submit_slots(None, None, rs, slot_addr, 32, out[:3])   # reads only
    assert out[:3].tolist() == [-errno.EAGAIN] * 3
    ring.close()


class _SocketDevice:
    """The Device protocol over a datagram socket (engine/tun/__init__.py)."""

    name, mtu, mode, l2_hdr_len, vnet_hdr_len = "sock0", 1500, "tun", 0, 0
    io_threads = lossless = created = False

    def __init__(self, sock):
        self.sock = sock

    def fileno(self):
        return self.sock.fileno()

    def waitable(self):
        return self.fileno()

    def wait(self, timeout):
        select.select([self.sock], [], [], timeout)

    def close(self):
        self.sock.close()

    def slot_io(self, frames):
        return ViewSlotIO(self, frames)

    def read_batch(self, bufs, lengths):
        for i, buf in enumerate(bufs):
            try:
                lengths[i] = self.sock.recv_into(buf)
            except BlockingIOError:
                return i
        return len(bufs)

    def write_batch(self, bufs, lengths):
        for buf, n in zip(bufs, lengths):
            self.sock.send(buf[:n])
        return 0


@pytest.mark.parametrize("kind", [UringSlotIO, ViewSlotIO])
@pytest.mark.parametrize("n_write,n_read,waiting", [(0, 1, 0), (1, 2, 1), (3, 9, 5),
                                                    (40, 64, 64), (300, 0, 0), (0, 8, 3), (10, 20, 7), (0, 200, 150)])
def test_slot_io_exchange(dgram, kind, n_write, n_read, waiting):
    """Both SlotIO kinds agree: writes leave in order, reads fill slots in frame order,
    unused slots come back, small and large steps alike (UringSlotIO.SMALL)."""
    a, b = dgram
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    pool = np.zeros((800, 32), np.uint8)
    io = kind(_SocketDevice(a), pool)
    for k in range(waiting):
        b.send(b"in" + k.to_bytes(2, "big"))
    wslots = list(range(400, 400 + n_write))
    for k, s in enumerate(wslots):
        pool[s, :4] = list(b"ou" + k.to_bytes(2, "big"))
    rslots = list(range(10, 10 + n_read))
    refused, got_s, got_l, unused = io.exchange(wslots, [4] * n_write, rslots)
    assert refused == 0
    k = min(n_read, waiting)
    assert got_s == rslots[:k] and got_l == [4] * k and sorted(unused) == rslots[k:]
    assert [bytes(pool[s, :4]) for s in got_s] == [b"in" + i.to_bytes(2, "big") for i in range(k)]
    assert [b.recv(8) for _ in range(n_write)] == [b"ou" + i.to_bytes(2, "big")
                                                   for i in range(n_write)]
    # the writer's call, numpy arrays
    pool[400, :4], pool[401, :4] = list(b"ou\x00\x00"), list(b"ou\x00\x01")
    assert io.write(np.array([400, 401], np.uint32), np.array([4, 2], np.uint32)) == 0
    assert b.recv(8) == b"ou\x00\x00" and b.recv(8) == b"ou"


@pytest.mark.parametrize("n", [8, 40])   # SQEs filled in Python, then with numpy
def test_read_error_other_than_eagain_raises(dgram, n):
    a, b = dgram
    pool = np.zeros((64, 32), np.uint8)
    io = UringSlotIO(_SocketDevice(a), pool)
    a.shutdown(socket.SHUT_RDWR)
    b.close()
    r, w = os.pipe()   # a write-only end: reading it fails with EBADF, not EAGAIN
    io.ring.sqes["fd"] = io.ring.fd = w
    try:
        with pytest.raises(OSError):
            io.exchange([], [], list(range(n)))
    finally:
        os.close(r)
        os.close(w)


def test_fallback_when_io_uring_is_refused(dgram, monkeypatch, caplog):
    """Where io_uring is missing or forbidden, the device falls back to one syscall per
    frame, with a warning (once), instead of failing to start."""
    from engine.tun import linux

    def refuse(*_a, **_k):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(uring, "UringSlotIO", refuse)
    monkeypatch.setattr(uring, "_warned", False)
    a, _ = dgram
    dev = linux.LinuxTun.__new__(linux.LinuxTun)
    dev.use_uring = True
    dev._fd = a.fileno()
    with caplog.at_level("WARNING", logger="engine"):
        io = dev.slot_io(np.zeros((4, 32), np.uint8))
    assert type(io) is ViewSlotIO
    assert "io_uring unavailable" in caplog.text
    dev.use_uring = False   # --io syscall
    assert type(dev.slot_io(np.zeros((4, 32), np.uint8))) is ViewSlotIO
