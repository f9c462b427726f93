"""actor.Idle as a table: poll, nap or sleep after so many seconds without work."""
import pytest

from engine import actor
from engine.actor import IDLE_TIMEOUT, Idle

NAP = Idle.NAP


@pytest.mark.parametrize("idle,times,expect", [
    # a worker: spin 50 us, then sleep
    (Idle(50e-6), [10.0, 10.00002, 10.00006, 10.1], [0.0, 0.0, IDLE_TIMEOUT, IDLE_TIMEOUT]),
    # no spin at all
    (Idle(0.0), [1.0, 1.5], [IDLE_TIMEOUT, IDLE_TIMEOUT]),
    # the reader: spin, then naps for the window after the last frame, then sleeps
    (Idle(50e-6, 0.25), [5.0, 5.00001, 5.001, 5.1, 5.2499, 5.25, 6.0],
     [0.0, 0.0, NAP, NAP, NAP, IDLE_TIMEOUT, IDLE_TIMEOUT]),
])
def test_the_idle_tail(idle, times, expect):
    assert [idle.timeout(t) for t in times] == expect


def test_one_spin_per_quiet_spell_and_work_starts_a_new_one():
    idle = Idle(1.0, 10.0)
    assert idle.timeout(100.0) == 0.0
    assert idle.timeout(101.5) == NAP         # the spin is over: nap
    assert idle.timeout(101.6) == NAP         # ...and no spin again within the spell
    idle.worked()
    assert idle.timeout(200.0) == 0.0         # work came: the next spell spins again


def test_a_spin_that_shares_its_cpu_yields_every_turn(monkeypatch):
    turns = []
    monkeypatch.setattr(actor.platform, "yield_cpu", lambda: turns.append(1))
    idle = Idle(1.0, yield_cpu=True)
    assert [idle.timeout(t) for t in (1.0, 1.5, 2.5)] == [0.0, 0.0, IDLE_TIMEOUT]
    assert len(turns) == 2
