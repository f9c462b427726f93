"""Recovery from the journals (engine/journal.py) over private memory: what a restarted
reader makes of the batch its predecessor had in hand."""
import numpy as np

from engine import journal, shm
from engine.journal import ReaderJournal, recover_reader
from engine.stats import DROP_BASE, DROP_REASONS, Counters, F

RESTART = DROP_BASE + DROP_REASONS.index("worker_restart")


def _mapped(workers=2):
    layout = shm.Layout(workers, 16, 64, 8)
    return shm.Mapped(layout, bytearray(layout.pool_bytes), bytearray(layout.ctl_bytes))


def test_a_batch_begun_and_never_committed_counts_as_read_and_lost():
    """Killed inside a batch the reader mirrored itself (or before pushing any of it):
    every frame counts as read and as worker_restart, bytes alike, exactly once."""
    m = _mapped()
    rx = [m.rx(i) for i in range(2)]
    cnt = Counters(m.counters[0])
    j = ReaderJournal(m.ctl, 0)
    seq = j.begin(3, 300, 0)
    j.grow(5, 420)    # a burst took two more
    assert recover_reader(m, rx, cnt) == seq
    row = m.counters[0]
    assert (row[F["in_frames"]], row[F["in_bytes"]], row[RESTART], row[F["drop_bytes"]]) == (
        5, 420, 5, 420)
    recover_reader(m, rx, Counters(m.counters[0]))   # a second restart: nothing more
    assert (row[F["in_frames"]], row[RESTART]) == (5, 5)


def test_frames_pushed_before_the_kill_are_counted_downstream_even_unjournalled():
    """Killed after a push was published but before its bytes were journalled: the
    pushed frames are the workers' to count; only the rest are lost, bytes read off the
    ring the journal names."""
    m = _mapped()
    rx = [m.rx(i) for i in range(2)]
    cnt = Counters(m.counters[0])
    j = ReaderJournal(m.ctl, 0)
    j.begin(4, 400, 0)
    j.pushing(1)
    rx[1].push(np.array([3, 4, 5], np.uint32), np.array([90, 100, 110], np.uint32))
    recover_reader(m, rx, cnt)
    row = m.counters[0]
    assert (row[F["in_frames"]], row[RESTART], row[F["drop_bytes"]]) == (4, 1, 400 - 300)


def test_a_committed_batch_needs_nothing():
    m = _mapped()
    cnt = Counters(m.counters[0])
    seq = ReaderJournal(m.ctl, 0).begin(2, 100, 0)
    cnt.c[F["in_frames"]], cnt.c[F["journal"]] = 2, seq
    cnt.commit()
    assert recover_reader(m, [m.rx(0), m.rx(1)], cnt) == seq
    assert m.counters[0][F["in_frames"]] == 2 and m.ctl[journal.READER_PENDING] == 2
