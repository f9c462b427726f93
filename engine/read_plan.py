"""How many frames the reader reads next, and whether it mirrors them itself: pure
functions of a few numbers, so the policy can be read, and tested, as a table.

The shape of it (the measurements behind each rule: docs/performance-notes.md):
- A device that was idle is probed one frame at a time. A frame found so is mirrored and
  written at once, and the next one read right after its write: the kernel often answers
  a frame inside its write (an echo reply, a TCP ACK). Up to LONE_BURST such one-frame
  steps share one journal entry and one commit ("Lone frames and warm naps").
- A busy device is read in batches that follow it, NAPI-like: twice what a read that
  drained it got, plus one ("Read sizes and the cache cap").
- Where the reader takes the backlog itself, frames averaging BIG_FRAME bytes or more
  (offload super-packets) go one frame per step, up to BIG_BURST steps in a row: for
  them the kernel's copies dwarf a syscall, and one slot's worth stays in cache. Smaller
  frames' batches are capped at CACHE_BYTES in flight.
- Behind busy workers, a step waits until a real batch fits in the rings (crumbs of
  steps would each pay the reader's fixed cost while the workers are the bottleneck),
  but past BACKPRESSURE_S it reads anyway and what does not fit is dropped as
  ring_full, so one stuck worker cannot stall the others. A lossless device (a replay)
  always waits.
- The reader mirrors a batch itself only when nothing is in flight (so order cannot
  change) and the read drained the device, or always where it takes the backlog
  (engine/topology.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

LONE_BURST = 2               # a frame and the kernel's answer to it
BIG_FRAME, BIG_BURST = 16 << 10, 64
CACHE_BYTES = 512 << 10      # a core's L2 on the test VM
BACKPRESSURE_S = 0.010       # how long the reader holds back for a full worker ring


@dataclass(frozen=True)
class Policy:
    """What stays fixed for a run."""

    read_max: int         # frames one step reads at most
    ring_capacity: int    # of each worker's rx ring
    own: bool = True      # the reader may mirror frames itself (not --inline never)
    own_backlog: bool = False   # ...and takes a backlog too (topology.reader_takes_backlog)
    lossless: bool = False      # the device keeps what is not read: never drop for room

    @property
    def hold_for(self) -> int:
        """The least ring room worth a step behind busy workers: a quarter of a ring."""
        return self.ring_capacity // 4


class Step(NamedTuple):
    """What the reader does next: read `frames` (then up to `burst` one-frame steps in
    one journal entry, when it mirrors them itself), or wait for free slots or room.
    `short`: the rings had too little room (the caller times how long). A tuple, not a
    dataclass: one is made per turn of the reader's loop."""

    frames: int = 0
    burst: int = 1
    wait: str = ""        # "", "slots" (the writer returns some) or "room" (workers free some)
    short: bool = False


WAIT_SLOTS = Step(wait="slots")
PROBES = {False: Step(1, LONE_BURST), True: Step(1, BIG_BURST)}   # by `big`


def plan(p: Policy, *, free: int, room: int, idle: bool, want: int, big: bool,
         blocked_s: float) -> Step:
    """The next step. free: slots in the reader's stack; room: the least free room of the
    rx rings (not looked at when idle); idle: nothing in flight in the pipeline; want:
    frames the device seems to hold (0: it was empty, probe it); big: the last frames
    were big; blocked_s: how long the rings have been short of room."""
    if not free:
        return WAIT_SLOTS
    if idle:   # what the reader takes itself goes in no ring: the rings' size is no cap
        room, need = (p.read_max if p.own_backlog else p.ring_capacity), 1
    else:
        need = max(1, min(want, p.hold_for))
    short = room < need
    if short:
        if p.lossless or blocked_s < BACKPRESSURE_S:
            return Step(frames=need, wait="room", short=True)
        room = room or p.read_max
    if not want:
        return Step(1, PROBES[big].burst, short=True) if short else PROBES[big]
    return Step(min(p.read_max, room, free, want), 1, "", short)


def mine(p: Policy, step: Step, got: int, idle: bool) -> bool:
    """Whether the reader mirrors and writes the frames just read itself."""
    drained = got < step.frames or step.frames == 1
    return p.own and idle and (drained or p.own_backlog)


def after(p: Policy, step: Step, want: int, big: bool, got: int, nbytes: int):
    """(want, big) for the next step, after a step took `got` frames of `nbytes`. An
    empty read keeps `big`: a pause in a stream of super-packets does not end it."""
    if not got:
        return 0, big
    if p.own and p.own_backlog and nbytes >= got * BIG_FRAME:
        return 0, True
    if step.frames == 1:
        return got + 1, False
    # a read that got all it asked for never shrinks the next: a step cut short by room
    # or free slots says nothing about the device
    want = 2 * got + 1 if got < step.frames else max(want, 2 * got + 1)
    if p.own_backlog:
        want = min(want, max(2, CACHE_BYTES * got // nbytes))
    return want, False
