"""io_uring for TUN/TAP slot I/O on Linux: `Uring`, a ring that carries many reads or
writes on one descriptor in one io_uring_enter (a TUN fd has no recvmmsg/sendmmsg, LINUX.md
§1), and `UringSlotIO`, the SlotIO of the Linux backend built on it (`try_uring`, with the
fallback to one syscall per frame where io_uring is missing or forbidden). Layout
constants: include/uapi/linux/io_uring.h.
"""
from __future__ import annotations

import ctypes
import errno
import itertools
import io
import logging
import mmap
import os

import numpy as np

from ..packet.batch import u32
from ..platform import libc
from .slots import ViewSlotIO

log = logging.getLogger("engine")

IORING_OP_READ, IORING_OP_WRITE = 22, 23
IORING_ENTER_GETEVENTS = 1
RWF_NOWAIT = 0x8
IORING_SETUP_SINGLE_ISSUER = 1 << 12
IORING_FEAT_SINGLE_MMAP = 1 << 0
IORING_OFF_SQ_RING, IORING_OFF_CQ_RING, IORING_OFF_SQES = 0, 0x8000000, 0x10000000


class _SqOffsets(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint32) for n in
                ("head", "tail", "ring_mask", "ring_entries", "flags", "dropped", "array",
                 "resv1")] + [("user_addr", ctypes.c_uint64)]


class _CqOffsets(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint32) for n in
                ("head", "tail", "ring_mask", "ring_entries", "overflow", "cqes", "flags",
                 "resv1")] + [("user_addr", ctypes.c_uint64)]


class _Params(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint32) for n in
                ("sq_entries", "cq_entries", "flags", "sq_thread_cpu", "sq_thread_idle",
                 "features", "wq_fd")] + [("resv", ctypes.c_uint32 * 3),
                                          ("sq_off", _SqOffsets), ("cq_off", _CqOffsets)]


assert ctypes.sizeof(_Params) == 120

SQE = np.dtype([("opcode", "u1"), ("flags", "u1"), ("ioprio", "<u2"), ("fd", "<i4"),
                ("off", "<u8"), ("addr", "<u8"), ("len", "<u4"), ("rw_flags", "<u4"),
                ("user_data", "<u8"), ("buf_index", "<u2"), ("personality", "<u2"),
                ("splice_fd_in", "<i4"), ("addr3", "<u8"), ("pad", "<u8")])
CQE = np.dtype([("user_data", "<u8"), ("res", "<i4"), ("flags", "<u4")])
assert SQE.itemsize == 64 and CQE.itemsize == 16
# field offsets exchange_slots relies on
assert (SQE.fields["addr"][1], SQE.fields["len"][1]) == (16, 24)
assert (CQE.fields["user_data"][1], CQE.fields["res"][1]) == (0, 8)


def read_failed(res: int) -> None:
    """A read completed with -errno other than EAGAIN (EIO, EBADFD: the device went away):
    raise it, as read(2) would have."""
    raise OSError(-res, f"read from the device: {os.strerror(-res)}")


class Uring:
    """A ring for batches of IORING_OP_READ and IORING_OP_WRITE on one descriptor `fd`,
    over buffers laid out as slots: `submit_slots` (numpy arrays) and `exchange_slots`
    (lists, for a few requests) each issue writes, then reads, in one io_uring_enter.

    Every request carries RWF_NOWAIT, so the kernel issues it inline during the enter, in
    submission order, and a read with nothing waiting completes at once with -EAGAIN
    (without it a read on a pollable file is parked until a packet arrives, even on an
    O_NONBLOCK descriptor; io_uring/rw.c, Linux >= 5.6). Reads therefore take packets in
    queue order, writes hand them to the stack in submission order, and every request has
    completed when the enter returns (`_enter` still waits for one a kernel punted to a
    worker thread). SQEs are read only during the enter, so they are filled again right
    after it. The ring belongs to the process that made it: made there, never pickled."""

    def __init__(self, fd: int, entries: int = 256) -> None:
        self.fd = fd
        p = _Params()
        p.flags = IORING_SETUP_SINGLE_ISSUER
        try:
            self.ring_fd = libc.check(libc.io_uring_setup(entries, p))
        except OSError as e:
            if e.errno != errno.EINVAL:   # EINVAL: no IORING_SETUP_SINGLE_ISSUER (< 6.0)
                raise
            p = _Params()
            self.ring_fd = libc.check(libc.io_uring_setup(entries, p))
        try:
            self._map(p)
        except BaseException:
            os.close(self.ring_fd)
            raise
        self.entries = p.sq_entries
        self.sq_mask = p.sq_entries - 1
        self.cq_mask = p.cq_entries - 1
        # Constant fields of every SQE, set once: the descriptor, offset 0 (a TUN fd is a
        # stream), RWF_NOWAIT: a read with nothing queued completes with -EAGAIN at
        # once, instead of waiting for a packet (the default for a pollable file).
        self.sqes["fd"] = fd
        self.sqes["rw_flags"] = RWF_NOWAIT
        # user_data = the SQE's own index: a completion names its request without a
        # per-batch fill (the result of request k of a submission starting at SQE i is
        # at (user_data - i) & mask)
        self.sqes["user_data"] = np.arange(p.sq_entries, dtype=np.uint64)
        # Identity SQ array: queue entry i is SQE i, so SQE slots follow the tail.
        self.sq_array[:] = np.arange(p.sq_entries, dtype=np.uint32)
        # the user_data of n completions in submission order, starting at SQE i: [i:i+n]
        # (a list for exchange_slots; an array for submit_slots, whose slice [i:i+n] also
        # names the SQEs of a batch that wraps round the end of the queue)
        self._in_order = list(range(p.sq_entries)) + list(range(p.sq_entries))
        self._in_order_np = np.array(self._in_order, np.uint64)
        self._tail = int(self.sq_tail[0])
        self._cq_head = int(self.cq_head[0])
        # the SQE fields a submission fills and the CQE fields it reads, as numpy columns
        # made once (a field lookup per call costs as much as the copy it serves)
        s = self.sqes
        self._col_op, self._col_addr, self._col_len = s["opcode"], s["addr"], s["len"]
        self._col_ud, self._col_res = self.cqes["user_data"], self.cqes["res"]

    def _map(self, p: _Params) -> None:
        sq_size = p.sq_off.array + p.sq_entries * 4
        cq_size = p.cq_off.cqes + p.cq_entries * CQE.itemsize
        single = p.features & IORING_FEAT_SINGLE_MMAP
        if single:
            sq_size = cq_size = max(sq_size, cq_size)
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        prot = mmap.PROT_READ | mmap.PROT_WRITE
        self._maps = [mmap.mmap(self.ring_fd, sq_size, flags, prot, offset=IORING_OFF_SQ_RING)]
        if not single:
            self._maps.append(mmap.mmap(self.ring_fd, cq_size, flags, prot,
                                        offset=IORING_OFF_CQ_RING))
        self._maps.append(mmap.mmap(self.ring_fd, p.sq_entries * SQE.itemsize, flags, prot,
                                    offset=IORING_OFF_SQES))
        sq_map, cq_map, sqe_map = self._maps[0], self._maps[-2], self._maps[-1]
        sq, cq = memoryview(sq_map), memoryview(cq_map)
        self.sq_tail = sq[p.sq_off.tail:p.sq_off.tail + 4].cast("I")
        self.sq_array = np.frombuffer(sq_map, np.uint32, p.sq_entries, p.sq_off.array)
        self.cq_head = cq[p.cq_off.head:p.cq_off.head + 4].cast("I")
        self.cq_tail = cq[p.cq_off.tail:p.cq_off.tail + 4].cast("I")
        self.cqes = np.frombuffer(cq_map, CQE, p.cq_entries, p.cq_off.cqes)
        self.sqes = np.frombuffer(sqe_map, SQE, p.sq_entries)
        # the same memory as items, for exchange_slots: an SQE's opcode (byte 0), addr (u64
        # 2) and len (u32 6); a CQE's user_data (u64 0) and res (i32 2)
        sqe = memoryview(sqe_map)
        self._sq_op, self._sq_addr, self._sq_len = sqe, sqe.cast("Q"), sqe.cast("I")
        cqes = cq[p.cq_off.cqes:p.cq_off.cqes + p.cq_entries * CQE.itemsize]
        self._cq_ud, self._cq_res = cqes.cast("Q"), cqes.cast("i")

    def submit_slots(self, wslots, wlens, rslots, slot_addr: np.ndarray, size: int,
                     out: np.ndarray) -> None:
        """Writes of the slots in `wslots` (wlens[i] bytes), then reads of up to `size`
        bytes into `rslots` (numpy arrays; either may be None), slot s at slot_addr[s], in
        one io_uring_enter; waits until all have completed and leaves each request's
        result (bytes moved, or -errno) in out[i], in request order. The fields go
        straight into the SQE columns, with no arrays built in between, because every
        numpy call after the kernel has run is costly (docs/performance-notes.md)."""
        m = 0 if wslots is None else len(wslots)
        n = m + (0 if rslots is None else len(rslots))
        if n > self.entries:
            raise ValueError(f"{n} requests for a ring of {self.entries}")
        i = self._tail & self.sq_mask
        if i + n <= self.entries:
            w, r = slice(i, i + m), slice(i + m, i + n)
        else:   # the batch wraps round the end of the queue: its SQE indices
            rows = self._in_order_np[i:i + n]
            w, r = rows[:m], rows[m:]
        if m:
            self._col_op[w] = IORING_OP_WRITE
            self._col_addr[w] = slot_addr[wslots]
            self._col_len[w] = wlens
        if n > m:
            self._col_op[r] = IORING_OP_READ
            self._col_addr[r] = slot_addr[rslots]
            self._col_len[r] = size
        self._reap(i, self._enter(n), n, out)

    def _reap(self, first: int, head: int, n: int, out: np.ndarray) -> None:
        """The results of the n requests submitted from SQE `first`, whose completions
        start at CQ index `head`, into out[:n] in submission order."""
        j = head & self.cq_mask
        if j + n <= len(self.cqes):
            ud, res = self._col_ud[j:j + n], self._col_res[j:j + n]
            if (ud == self._in_order_np[first:first + n]).all():   # the usual order
                out[:n] = res
                self._consumed(n)
                return
        else:
            c = self.cqes[(np.arange(n) + j) & self.cq_mask]
            ud, res = c["user_data"], c["res"]
        out[(ud.astype(np.intp) - first) & self.sq_mask] = res   # user_data: SQE index
        self._consumed(n)

    def exchange_slots(self, wslots: list, wlens: list, rslots: list, base: int, stride: int,
                       size: int):
        """`submit_slots` for a few requests, in plain Python, with lists (slot s at
        base + s * stride): writes of wslots[i] (wlens[i] bytes), then reads of
        up to `size` bytes into rslots, in one io_uring_enter. Returns (refused writes,
        slots that received a frame, their lengths, slots that did not), the frames in
        the order they were read; a read that failed other than with EAGAIN raises.

        Up to a few dozen requests this costs less than numpy's per-call overhead. Only
        the three fields that change are stored per request (every other SQE field is set
        once, at start), and the completions are read in two calls, in the order they
        were submitted (the order they complete in, with RWF_NOWAIT), because the lines
        after the syscall run with the caches cold: the kernel has just copied every frame
        (docs/performance-notes.md)."""
        m = len(wslots)
        n = m + len(rslots)
        if n > self.entries:
            raise ValueError(f"{n} requests for a ring of {self.entries}")
        tail = self._tail
        t = self._fill(tail, IORING_OP_WRITE, wslots, wlens, base, stride)
        self._fill(t, IORING_OP_READ, rslots, itertools.repeat(size), base, stride)
        res = self._results(self._enter(n), tail, n)
        refused = sum(1 for x in res[:m] if x < 0) if m and min(res[:m]) < 0 else 0
        got_s, got_l, unused = [], [], []
        for s, x in zip(rslots, res[m:]):
            if x > 0:
                got_s.append(s)
                got_l.append(x)
            elif x == 0 or x == -errno.EAGAIN:
                unused.append(s)
            else:
                read_failed(x)
        return refused, got_s, got_l, unused

    def _fill(self, t: int, opcode: int, slots, lens, base: int, stride: int) -> int:
        """SQEs of one opcode from cursor t, slot s at base + s * stride; returns the
        cursor after them."""
        mask, op, addr, ln = self.sq_mask, self._sq_op, self._sq_addr, self._sq_len
        for s, k in zip(slots, lens):
            i = t & mask
            op[i << 6] = opcode
            addr[(i << 3) + 2] = base + s * stride
            ln[(i << 4) + 6] = k
            t += 1
        return t

    def _results(self, head: int, tail: int, n: int) -> list:
        """The n results of the SQEs submitted from `tail`, by request, read from the
        completions at `head` in two C calls (strided memoryview slices) where they do not
        wrap round the end of the queue."""
        c = head & self.cq_mask
        if c + n <= self.cq_mask + 1:
            uds = self._cq_ud[c << 1:(c + n) << 1:2].tolist()
            res = self._cq_res[(c << 2) + 2:((c + n) << 2) + 2:4].tolist()
        else:
            cs = [(head + j) & self.cq_mask for j in range(n)]
            uds = [self._cq_ud[c << 1] for c in cs]
            res = [self._cq_res[(c << 2) + 2] for c in cs]
        self._consumed(n)
        first, mask = tail & self.sq_mask, self.sq_mask
        if uds != self._in_order[first:first + n]:   # not in submission order: sort them
            by_request = [0] * n
            for u, x in zip(uds, res):
                by_request[(u - first) & mask] = x    # user_data: the SQE index
            res = by_request
        return res

    def _enter(self, n: int) -> int:
        """Publish the n SQEs just filled, submit them, wait until all n have completed;
        returns the CQ head where their completions start."""
        self._tail += n
        self.sq_tail[0] = self._tail & 0xFFFFFFFF     # publish (x86 TSO: SQEs before tail)
        libc.check(libc.io_uring_enter(self.ring_fd, n, n, IORING_ENTER_GETEVENTS, None, 0))
        head = self._cq_head
        got = (self.cq_tail[0] - head) & 0xFFFFFFFF
        while got < n:  # a request went to a kernel worker thread: wait for it
            libc.check(libc.io_uring_enter(self.ring_fd, 0, n - got, IORING_ENTER_GETEVENTS,
                                           None, 0))
            got = (self.cq_tail[0] - head) & 0xFFFFFFFF
        return head

    def _consumed(self, n: int) -> None:
        self._cq_head = head = (self._cq_head + n) & 0xFFFFFFFF
        self.cq_head[0] = head

    def close(self) -> None:
        if self.ring_fd >= 0:
            # drop every view first: an mmap with exported buffers cannot close
            self.sq_tail = self.cq_head = self.cq_tail = None
            self.sq_array = self.cqes = self.sqes = None
            self._sq_op = self._sq_addr = self._sq_len = self._cq_ud = self._cq_res = None
            self._col_op = self._col_addr = self._col_len = self._col_ud = self._col_res = None
            for m in self._maps:
                m.close()
            os.close(self.ring_fd)
            self.ring_fd = -1


class UringSlotIO(ViewSlotIO):
    """The Linux device's SlotIO: reads and writes of a batch in one io_uring_enter.
    Steps of at most SMALL requests (a ping, a lone ACK) take plain syscalls instead: for
    them the numpy set-up of a submission costs more than the syscalls it saves, and a
    process woken from sleep runs numpy code many times slower than when warm."""

    SMALL = 4    # up to this many requests: plain read(2)/write(2)
    FEW = 32     # up to this many: SQEs filled in plain Python (Uring.exchange_slots)

    def __init__(self, device, frames: np.ndarray, entries: int = 2048) -> None:
        super().__init__(device, frames)
        self.ring = Uring(device.fileno(), entries)
        self._fd = device.fileno()
        self._readinto = io.FileIO(self._fd, "rb", closefd=False).readinto
        self._write = os.write
        self.cap = self.ring.entries
        self.size = frames.shape[1]
        self._base, self._stride = frames.ctypes.data, frames.strides[0]
        # every slot's address, computed once: a batch's addresses are one gather
        self._slot_addr = (np.arange(len(frames), dtype=np.uint64) * np.uint64(self._stride)
                           + np.uint64(self._base))
        self._res = np.empty(self.cap, np.int32)   # results, reused every call

    def read_one(self, slot: int) -> int:
        # FileIO.readinto returns None on EAGAIN: no exception per idle probe
        return self._readinto(self.views[slot]) or 0

    def write_one(self, slot: int, n: int) -> bool:
        try:
            return self._write(self._fd, self.views[slot][:n]) == n
        except OSError:
            return False

    def write(self, slots: np.ndarray, lens: np.ndarray) -> int:
        if len(slots) <= self.SMALL:
            return self._write_each(slots.tolist(), lens.tolist())
        refused = 0
        for at in range(0, len(slots), self.cap):
            refused += self._submit(slots[at:at + self.cap], lens[at:at + self.cap], None)
        return refused

    def exchange(self, wslots: list, wlens: list, rslots: list):
        m, r = len(wslots), len(rslots)
        if m + r <= self.SMALL:
            return (self._write_each(wslots, wlens), *self._read_each(rslots))
        if m + r <= self.FEW:
            return self.ring.exchange_slots(wslots, wlens, rslots, self._base, self._stride,
                                            self.size)
        if m:
            ws, wl = u32(wslots), u32(wlens)
        else:
            ws = wl = None
        if m + r > self.cap:            # more than one submission holds: write first
            return self.write(ws, wl), *self.exchange([], [], rslots)[1:]
        rs = u32(rslots)
        refused = self._submit(ws, wl, rs)
        got = self._res[m:m + r]
        ok = got > 0
        if ok.all():
            return refused, rslots, got.tolist(), []
        bad = got[~ok]
        hard = bad[(bad != -errno.EAGAIN) & (bad != 0)]
        if len(hard):
            read_failed(int(hard[0]))
        return refused, rs[ok].tolist(), got[ok].tolist(), rs[~ok].tolist()

    def _submit(self, wslots, wlens, rslots) -> int:
        """Writes (then reads) in one submission; returns the refused writes; the read
        results stay in self._res[m:]."""
        m = 0 if wslots is None else len(wslots)
        n = m + (0 if rslots is None else len(rslots))
        res = self._res
        self.ring.submit_slots(wslots, wlens, rslots, self._slot_addr, self.size, res[:n])
        return int(np.count_nonzero(res[:m] < 0)) if m and res[:m].min() < 0 else 0

    def close(self) -> None:
        self.ring.close()


def try_uring(device, frames: np.ndarray) -> ViewSlotIO:
    """A UringSlotIO for the device or, where io_uring is missing or forbidden (old kernel,
    kernel.io_uring_disabled, seccomp), a ViewSlotIO: one syscall per frame, said once."""
    global _warned
    try:
        return UringSlotIO(device, frames)
    except OSError as e:
        if not _warned:   # once per process
            _warned = True
            log.warning("io_uring unavailable (%s): one read/write syscall per frame",
                        e.strerror)
        return ViewSlotIO(device, frames)


_warned = False
