"""SPSC descriptor ring: wrap, full, empty, batch publish, and two real processes."""
import multiprocessing
from multiprocessing import shared_memory

import numpy as np
import pytest

from engine.ring import Ring, ring_bytes


@pytest.fixture
def ring():
    buf = bytearray(ring_bytes(8))
    return Ring(memoryview(buf), 8), buf


def test_capacity_must_be_power_of_two():
    with pytest.raises(ValueError):
        Ring(memoryview(bytearray(ring_bytes(6))), 6)


def test_empty_then_push_then_peek(ring):
    r, _ = ring
    assert r.peek(4) == (0, 0) and r.available() == 0 and r.space() == 8
    assert r.push(np.array([5, 6, 7]), np.array([50, 60, 70])) == 3
    start, n = r.peek(8)
    assert (start, n) == (0, 3)
    assert r.slot[start:start + n].tolist() == [5, 6, 7]
    assert r.length[start:start + n].tolist() == [50, 60, 70]
    r.release(3)
    assert r.available() == 0 and r.fill() == 0


def test_full_ring_takes_what_fits(ring):
    r, _ = ring
    assert r.push(np.arange(10), np.arange(10)) == 8
    assert r.space() == 0 and r.push(np.array([1]), np.array([1])) == 0


def test_wrap_splits_push_and_peek_stops_at_the_wrap(ring):
    r, _ = ring
    r.push(np.arange(6), np.arange(6))
    r.release(r.peek(6)[1])
    assert r.push(np.arange(100, 105), np.arange(5)) == 5   # entries 6,7,0,1,2
    assert r.peek(8) == (6, 2)                               # contiguous run to the wrap
    assert r.slot[6:8].tolist() == [100, 101]
    r.release(2)
    assert r.peek(8) == (0, 3) and r.slot[0:3].tolist() == [102, 103, 104]


def test_publish_is_once_per_batch(ring):
    """The consumer sees nothing until push() publishes, then the whole batch."""
    r, buf = ring
    other = Ring(memoryview(buf), 8)   # the consumer's own view of the same memory
    r.push(np.array([1, 2, 3]), np.array([1, 2, 3]))
    assert other.available() == 3
    assert other.peek(10) == (0, 3)


def test_cursors_are_free_running(ring):
    r, _ = ring
    for k in range(100):
        assert r.push(np.array([k]), np.array([k])) == 1
        start, n = r.peek(1)
        assert n == 1 and r.slot[start] == k
        r.release(1)
    assert r.pushed == r.released == r.taken == 100


def test_entries_and_queued_name_what_lies_between_cursors_across_the_wrap(ring):
    """What recovery reads of a ring a dead actor left: the entries by cursor, wrapped."""
    r, _ = ring
    cap = r.capacity
    r.push(np.arange(cap - 2), np.arange(cap - 2))
    r.release(cap - 2)
    r.push(np.array([7, 8, 9, 10]), np.array([70, 80, 90, 100]))   # wraps after two
    slots, lens = r.queued()
    assert slots.tolist() == [7, 8, 9, 10] and lens.tolist() == [70, 80, 90, 100]
    assert r.entries(r.taken + 1, r.pushed - 1)[0].tolist() == [8, 9]


def _produce(name, count):
    shm = shared_memory.SharedMemory(name)
    r = Ring(shm.buf, 64)
    i = 0
    while i < count:
        k = min(7, count - i)
        i += r.push(np.arange(i, i + k), np.arange(i, i + k) * 2)


def test_two_processes_keep_order():
    shm = shared_memory.SharedMemory(create=True, size=ring_bytes(64))
    try:
        r = Ring(shm.buf, 64)
        p = multiprocessing.get_context("spawn").Process(target=_produce, args=(shm.name, 20000))
        p.start()
        got = []
        while len(got) < 20000:
            start, n = r.peek(16)
            got.extend(r.slot[start:start + n].tolist())
            assert (r.length[start:start + n] == r.slot[start:start + n] * 2).all()
            r.release(n)
        p.join(10)
        assert got == list(range(20000))
    finally:
        del r
        shm.close()
        shm.unlink()
