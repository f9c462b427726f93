"""The reader's read plan (engine/read_plan.py) as a table: what the reader does next for
each state, whether it mirrors what it read itself, and what it expects next."""
import pytest

from engine.read_plan import (BACKPRESSURE_S, BIG_BURST, BIG_FRAME, CACHE_BYTES, LONE_BURST,
                              Policy, Step, WAIT_SLOTS, after, mine, plan)

AUTO = Policy(read_max=1024, ring_capacity=2048)                   # pipeline for backlog
SMALL = Policy(read_max=256, ring_capacity=2048, own_backlog=True)  # reader takes it all
NEVER = Policy(read_max=1024, ring_capacity=2048, own=False)
REPLAY = Policy(read_max=1024, ring_capacity=2048, own=False, lossless=True)


def state(**kw):
    s = dict(free=4096, room=2048, idle=True, want=0, big=False, blocked_s=0.0)
    s.update(kw)
    return s


@pytest.mark.parametrize("policy,kw,step", [
    # no free slot: wait for the writer to return some, whatever else holds
    (AUTO, dict(free=0), WAIT_SLOTS),
    # an empty device is probed one frame at a time; a burst of LONE_BURST one-frame steps
    (AUTO, dict(), Step(1, LONE_BURST)),
    (NEVER, dict(), Step(1, LONE_BURST)),
    # ...of BIG_BURST while the frames are big
    (SMALL, dict(big=True), Step(1, BIG_BURST)),
    # a busy device: what it seems to hold, capped by --batch (x workers), free slots
    (AUTO, dict(want=300), Step(300)),
    (AUTO, dict(want=5000), Step(1024)),
    (AUTO, dict(want=300, free=100), Step(100)),
    (SMALL, dict(want=5000), Step(256)),
    # idle pipeline: the rings' room is no cap (the reader may take it all itself)
    (SMALL, dict(want=200, room=0), Step(200)),
    # behind busy workers: the room caps the step...
    (AUTO, dict(want=300, room=1000, idle=False), Step(300)),
    (AUTO, dict(want=2000, room=600, idle=False), Step(600)),
    # ...and a step waits until a quarter ring fits rather than reading crumbs
    (AUTO, dict(want=2000, room=100, idle=False), Step(512, wait="room", short=True)),
    (AUTO, dict(want=3, room=2, idle=False), Step(3, wait="room", short=True)),
    # ...but not for longer than BACKPRESSURE_S: then it reads what fits, or a batch
    (AUTO, dict(want=2000, room=100, idle=False, blocked_s=BACKPRESSURE_S),
     Step(100, short=True)),
    (AUTO, dict(want=2000, room=0, idle=False, blocked_s=1.0), Step(1024, short=True)),
    # a replay loses nothing: it waits for room however long
    (REPLAY, dict(want=2000, room=0, idle=False, blocked_s=60.0),
     Step(512, wait="room", short=True)),
])
def test_the_next_step(policy, kw, step):
    assert plan(policy, **state(**kw)) == step


@pytest.mark.parametrize("policy,step,got,idle,own", [
    (AUTO, Step(1, LONE_BURST), 1, True, True),      # a probe's frame: mirrored here
    (AUTO, Step(64), 10, True, True),                # the read drained the device
    (AUTO, Step(64), 64, True, False),               # a backlog: to the workers
    (SMALL, Step(64), 64, True, True),               # ...unless the reader takes it
    (SMALL, Step(64), 10, False, False),             # frames in flight: order first
    (AUTO, Step(1, LONE_BURST), 1, False, False),
    (NEVER, Step(1, LONE_BURST), 1, True, False),    # --inline never
])
def test_who_mirrors_what_was_read(policy, step, got, idle, own):
    assert mine(policy, step, got, idle) is own


@pytest.mark.parametrize("policy,step,want,big,got,nbytes,expect", [
    (AUTO, Step(1, 2), 0, False, 0, 0, (0, False)),          # still empty: probe again
    (SMALL, Step(1, 64), 0, True, 0, 0, (0, True)),          # a pause keeps `big`
    (AUTO, Step(1, 2), 0, False, 2, 200, (3, False)),        # a pair: read 3 next
    (AUTO, Step(3), 3, False, 3, 300, (7, False)),           # all it asked for: grow
    (AUTO, Step(100), 1024, False, 100, 6400, (1024, False)),  # cut short: no smaller
    (AUTO, Step(100), 1024, False, 40, 2560, (81, False)),   # the device ran dry: follow
    # where the reader takes the backlog: no more than CACHE_BYTES in flight...
    (SMALL, Step(100), 1024, False, 100, 100 * 9000, (CACHE_BYTES // 9000, False)),
    # ...and big frames go frame by frame
    (SMALL, Step(8), 8, False, 8, 8 * BIG_FRAME, (0, True)),
    (SMALL, Step(1, 64), 0, True, 64, 64 * BIG_FRAME, (0, True)),
    (SMALL, Step(1, 64), 0, True, 7, 3 * BIG_FRAME, (8, False)),   # they got smaller
    (AUTO, Step(8), 8, False, 8, 8 * BIG_FRAME, (17, False)),      # workers take them
])
def test_what_the_next_step_expects(policy, step, want, big, got, nbytes, expect):
    assert after(policy, step, want, big, got, nbytes) == expect
