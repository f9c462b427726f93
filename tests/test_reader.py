"""The reader (engine/reader.py) built over the in-memory device and private memory: its
read size per step, its own mirror-and-write step with its one-frame bursts, and the
rehearsal of that step. (The read plan alone, as a table: tests/test_read_plan.py.)"""
import ipaddress
import threading
import time

import numpy as np
import pytest

import engine.packet.ip
from engine import journal, packet, pcap, shm, topology
from engine.actor import Context
from engine.read_plan import BIG_BURST, BIG_FRAME, LONE_BURST
from engine.reader import Reader
from engine.packet import Mirror, mirror_frame
from engine.stats import DROP_REASONS, F
from engine.tun.memory import MemoryDevice
from engine import platform

from packets import ipv4, swapped4, udp

PING = ipv4("198.18.0.1", "198.18.0.5", udp(1000, 2000, b"lone"))


@pytest.fixture
def efds():
    """Wake-ups for the reader under test, closed afterwards."""
    made = []

    def make(n):
        made.extend(platform.new_wake() for _ in range(n))
        return tuple(made[-n:])
    yield make
    for e in made:
        e.close()


def _reader(tmp_path, efds, frames, workers=1, inline="auto", batch=8, slot_size=128):
    src, sink = tmp_path / "in.pcap", tmp_path / "out.pcap"
    pcap.write_frames(str(src), frames)
    pcap.write_frames(str(sink), [])   # the header; the device appends the records
    dev = MemoryDevice(str(src), sink=str(sink))
    layout = shm.Layout(workers, 64, slot_size, 16)
    m = shm.Mapped(layout, bytearray(layout.pool_bytes), bytearray(layout.ctl_bytes))
    ctx = Context(prefix="t", layout=layout, device=dev, rule=Mirror(
        ipaddress.ip_interface("198.18.0.1/24")), batch=batch, spin_s=0.0,
        wakes=efds(workers + 2), inline=inline)
    return Reader(ctx, m), m, dev, sink


def _run_until(r, m, done, each=lambda: None, every=0.01, timeout=10):
    """Run the reader in a thread until done() (or the timeout), calling each() every
    `every` seconds meanwhile; then stop it."""
    t = threading.Thread(target=r.run)
    t.start()
    try:
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            each()
            time.sleep(every)
    finally:
        m.ctl[journal.STOP] = 1
        t.join(5)


@pytest.mark.parametrize("workers,inline,batch,expected", [
    (4, "never", 8, 32),       # the workers take the backlog: a batch per worker
    (4, "never", 512, 1024),   # ... up to MAX_BATCH
    (1, "never", 8, 8),
    (4, "always", 8, 8),       # the reader writes the backlog itself: one batch
])
def test_a_step_reads_a_batch_per_worker_when_the_workers_take_the_backlog(
        tmp_path, efds, workers, inline, batch, expected):
    r = _reader(tmp_path, efds, [PING], workers, inline, batch)[0]
    assert r.policy.read_max == expected


@pytest.mark.parametrize("inline,cpus,backlog,says", [
    ("auto", 2, True, "the 4 workers stay idle (--inline auto on 2 CPUs, fewer than 4)"),
    ("auto", 8, False, "a backlog goes to the 4 workers (--inline auto)"),
    ("always", 8, True, "the 4 workers stay idle (--inline always)"),
    ("never", 2, False, "every frame goes through the 4 workers (--inline never)"),
])
def test_the_start_up_log_says_who_mirrors_and_the_reader_does_so(
        tmp_path, efds, monkeypatch, inline, cpus, backlog, says):
    monkeypatch.setattr(platform, "usable_cpus", lambda: cpus)
    assert topology.reader_takes_backlog(inline) is backlog
    assert says in topology.backlog_plan(inline, 4)
    assert _reader(tmp_path, efds, [PING], 4, inline)[0].policy.own_backlog is backlog


def test_the_inline_path_reads_past_the_size_of_the_worker_rings(tmp_path, efds):
    """Frames the reader mirrors itself go in no ring, so the rings' capacity (16 here;
    with offload, 128 each at 4 workers) does not cap its read size: with the pipeline
    idle, a step reads up to --batch."""
    frames = [ipv4("198.18.0.1", f"198.18.0.{2 + i % 200}", udp(1000 + i, 2000, b"x"))
              for i in range(200)]
    r, m, dev, sink = _reader(tmp_path, efds, frames, workers=4, inline="always", batch=64)
    assert r.rx[0].capacity == 16
    _run_until(r, m, lambda: m.counters[0][F["inline_frames"]] >= len(frames))
    dev.close()
    row = m.counters[0]
    assert row[F["inline_frames"]] == len(frames)
    assert row[F["batch_32-63"]] + row[F["batch_64+"]] > 0


def _own_burst(r, burst=LONE_BURST):
    """A probe's frame taken by the reader's own step, as the loop takes it."""
    slots, lens = r.read(1)
    assert slots
    r.own(slots, lens, burst)


def test_a_lone_frame_is_mirrored_written_and_counted(tmp_path, efds):
    r, m, dev, sink = _reader(tmp_path, efds, [PING])
    _own_burst(r)
    dev.close()
    assert pcap.read_frames(str(sink)) == [swapped4(PING)]
    row = m.counters[0]
    assert (row[F["in_frames"]], row[F["inline_frames"]]) == (1, 1)


def test_a_one_frame_step_takes_the_next_frame_in_the_same_journal_entry(tmp_path, efds):
    """A frame and the one queued behind it (the kernel's answer to the first write) are
    written one after the other and counted as one batch of two, committed once."""
    second = ipv4("198.18.0.1", "198.18.0.7", udp(1000, 2000, b"reply"))
    third = ipv4("198.18.0.1", "198.18.0.8", udp(1000, 2000, b"later"))
    r, m, dev, sink = _reader(tmp_path, efds, [PING, second, third])
    slots = set(r.stack)
    _own_burst(r)
    assert set(r.stack) == slots   # every slot back
    dev.close()
    assert pcap.read_frames(str(sink)) == [swapped4(PING), swapped4(second)]  # not the third
    row = m.counters[0]
    assert (row[F["in_frames"]], row[F["inline_frames"]], row[F["batches"]]) == (2, 2, 1)
    assert (row[F["batch_1"]], row[F["batch_2-3"]]) == (0, 1)
    assert row[F["in_bytes"]] == row[F["inline_bytes"]] == len(PING) + len(second)
    assert row[F["journal"]] == m.ctl[journal.READER_SEQ] and m.ctl[journal.READER_PENDING] == 2
    assert bytes(r.rehearsal[:len(second)]) == swapped4(second)   # the last frame taken


def test_big_frames_go_frame_by_frame_where_the_reader_takes_the_backlog(tmp_path, efds):
    """Frames that average BIG_FRAME bytes or more (offload super-packets) go one frame
    per step, BIG_BURST steps to a journal entry; the small frames after them end it.
    Every frame is written once, in order."""
    big = [ipv4("198.18.0.1", "198.18.0.5", udp(1000 + i, 2000, bytes(BIG_FRAME)))
           for i in range(2 * BIG_BURST + 20)]
    small = [ipv4("198.18.0.1", "198.18.0.6", udp(1, 2, b"ack"))] * 4
    r, m, dev, sink = _reader(tmp_path, efds, big + small, inline="always",
                              slot_size=2 * BIG_FRAME)
    total = len(big) + len(small)
    _run_until(r, m, lambda: m.counters[0][F["inline_frames"]] >= total)
    dev.close()
    assert pcap.read_frames(str(sink)) == [swapped4(f) for f in big + small]
    row = m.counters[0]
    assert row[F["batch_64+"]] == 2 and row[F["batches"]] <= 7, row


def test_a_one_frame_burst_counts_a_truncated_or_refused_frame(tmp_path, efds):
    """A frame the rule refuses does not stop the next read; a truncated second frame
    (as long as its slot) is counted too_big, never written."""
    refused = ipv4("198.18.0.9", "198.18.0.5", udp(1, 2, b"not ours"))
    big = ipv4("198.18.0.1", "198.18.0.5", udp(1, 2, bytes(400)))
    r, m, dev, sink = _reader(tmp_path, efds, [refused, big])
    slots = set(r.stack)
    _own_burst(r)
    assert set(r.stack) == slots
    dev.close()
    assert pcap.read_frames(str(sink)) == []
    row = m.counters[0]
    assert (row[F["in_frames"]], row[F["inline_frames"]]) == (2, 0)
    assert (row[F["drop_not_mirrored"]], row[F["drop_too_big"]]) == (1, 1)


def test_rehearsal_runs_the_rule_on_a_copy_and_changes_nothing_else(tmp_path, efds,
                                                                    monkeypatch):
    r, m, dev, sink = _reader(tmp_path, efds, [PING])
    seen = []

    def spy(rule, buf, n):
        reason = mirror_frame(rule, buf, n)
        seen.append((bytes(buf[:n]), DROP_REASONS[reason - 1] if reason else "forward"))
        return reason

    monkeypatch.setattr(packet, "mirror_frame", spy)            # the rehearsal
    monkeypatch.setattr(engine.packet.ip, "mirror_frame", spy)  # a step
    r.rehearse()   # nothing seen yet: nothing to rehearse, and no error
    assert seen == []
    _own_burst(r)
    assert seen == [(swapped4(PING), "forward")]
    counters, ctl, pool = m.counters.copy(), np.array(m.ctl).copy(), m.frames.copy()
    stack = list(r.stack)
    for _ in range(3):
        r.rehearse()
    # the rule ran its forwarding path on a copy of the frame as read, which it swapped
    # back into the frame as written
    assert seen[1:] == [(swapped4(PING), "forward")] * 3
    assert bytes(r.rehearsal[:len(PING)]) == swapped4(PING)
    dev.close()
    assert (m.counters == counters).all()
    assert (np.array(m.ctl) == ctl).all()
    assert (m.frames == pool).all() and list(r.stack) == stack
    assert pcap.read_frames(str(sink)) == [swapped4(PING)]   # nothing more written


def test_behind_workers_the_reader_waits_for_room_for_a_real_step(tmp_path, efds):
    """A slow worker frees its full ring one frame at a time: the reader does not follow
    it with one-frame steps (each paying a step's fixed cost while the worker is the
    bottleneck), it waits until a quarter ring is free. Only the probes and the ramp of
    the first steps, with the ring empty, and the last frames are that small."""
    frames = [ipv4("198.18.0.1", f"198.18.0.{2 + i % 200}", udp(1000 + i, 2000, b"x"))
              for i in range(48)]
    r, m, dev, sink = _reader(tmp_path, efds, frames, workers=1, inline="never")
    rx = r.rx[0]
    assert rx.capacity == 16

    def slow_worker():   # one frame every 2 ms
        if rx.available():
            rx.peek(1)
            rx.release(1)
    _run_until(r, m, lambda: m.counters[0][F["in_frames"]] >= len(frames), slow_worker, 0.002)
    dev.close()
    row = m.counters[0]
    assert row[F["in_frames"]] == len(frames)
    # two probes, the ramp's step of 3, the last frames left in the device: at most 4
    # steps under 4 frames (the reader that followed the worker took 34 one-frame steps)
    assert row[F["batch_1"]] + row[F["batch_2-3"]] <= 4, \
        [int(row[F[f"batch_{b}"]]) for b in ("1", "2-3", "4-7", "8-15")]
