"""Imported by the forkserver only (as a preload module): it dies with the supervisor, and
so, through their own PR_SET_PDEATHSIG, do the actors it forked. (Python gives every child
the forkserver's "alive" pipe, so the forkserver would otherwise never see EOF while an
actor lives, and a SIGKILLed supervisor would leave them all holding the device.)
It ignores the group's signals as the actors do: a hang-up must not kill it mid-stop."""
import signal

from .loops import CHILD_IGNORES, _die_with_parent

for _name in CHILD_IGNORES:
    if hasattr(signal, _name):
        signal.signal(getattr(signal, _name), signal.SIG_IGN)
_die_with_parent()
