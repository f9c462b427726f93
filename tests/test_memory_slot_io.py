"""The in-memory device's vectorized slot I/O (engine/tun/memory.py, MemorySlotIO)
agrees with its per-frame read_batch/write_batch: same frames, same truncation, same end
of replay, same sink output."""
import numpy as np
import pytest

from engine import pcap
from engine.tun.memory import MemoryDevice, MemorySlotIO

FRAMES = [bytes([i]) * (20 + 7 * i) for i in range(9)] + [b"\x99" * 300]


def _replay(tmp_path, loops=3, sink=None):
    src = tmp_path / "in.pcap"
    pcap.write_frames(str(src), FRAMES)
    return MemoryDevice(str(src), loops=loops, sink=sink)


def test_exchange_replays_every_frame_in_order_then_stops(tmp_path):
    frames = np.zeros((32, 128), np.uint8)
    io = _replay(tmp_path).slot_io(frames)
    assert isinstance(io, MemorySlotIO)
    got = []
    for want in [1, 4, 7, 13, 2] * 10:
        rs = list(range(5, 5 + want))
        refused, gs, gl, unused = io.exchange([], [], rs)
        assert refused == 0 and gs + unused == rs
        got += [bytes(frames[s, :n]) for s, n in zip(gs, gl)]
    assert got == [f[:128] for f in FRAMES] * 3   # truncated to the slot, as a read is
    assert io.exchange([], [], [1, 2]) == (0, [], [], [1, 2])


def test_read_one_and_exchange_share_the_replay(tmp_path):
    frames = np.zeros((8, 512), np.uint8)
    io = _replay(tmp_path, loops=1).slot_io(frames)
    assert io.read_one(3) == len(FRAMES[0])
    _, gs, gl, _ = io.exchange([], [], [4, 5])
    assert gl == [len(FRAMES[1]), len(FRAMES[2])]
    assert bytes(frames[5, :gl[1]]) == FRAMES[2]


def test_writes_are_counted_or_kept_in_the_sink(tmp_path):
    frames = np.zeros((8, 64), np.uint8)
    frames[2, :3] = [1, 2, 3]
    frames[6, :2] = [7, 8]
    dev = _replay(tmp_path)
    io = dev.slot_io(frames)
    assert io.write(np.array([2, 6], np.uint32), np.array([3, 2], np.uint32)) == 0
    assert dev.written == 2
    sink = tmp_path / "out.pcap"
    sink.write_bytes(pcap.header())
    dev = _replay(tmp_path, sink=str(sink))
    io = dev.slot_io(frames)
    assert io.exchange([2, 6], [3, 2], []) == (0, [], [], [])
    dev.close()
    assert pcap.read_frames(str(sink)) == [b"\x01\x02\x03", b"\x07\x08"]


def test_slot_views_of_a_large_pool_are_made_when_asked():
    """Past VIEW_LIST_MAX slots no list of views is held: each view is made on indexing,
    and it is the same memory as the list's would be."""
    from engine import shm
    frames = np.zeros((shm.VIEW_LIST_MAX + 1, 16), np.uint8)
    views = shm.slot_views(frames)
    assert isinstance(views, shm.SlotViews) and len(views) == shm.VIEW_LIST_MAX + 1
    views[shm.VIEW_LIST_MAX][:3] = b"abc"
    assert bytes(frames[shm.VIEW_LIST_MAX, :3]) == b"abc" and not frames[:-1].any()
    with pytest.raises(IndexError):
        views[shm.VIEW_LIST_MAX + 1]
    small = shm.slot_views(frames[:8])
    assert isinstance(small, list) and len(small) == 8 and len(small[0]) == 16
