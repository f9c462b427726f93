"""Imported by the forkserver only (as a preload module): it dies with the supervisor, and
so, through their own PR_SET_PDEATHSIG, do the actors it forked. (Python gives every child
the forkserver's "alive" pipe, so the forkserver would otherwise never see EOF while an
actor lives, and a SIGKILLed supervisor would leave them all holding the device.)
It ignores the process group's signals as the actors do: a hang-up must not kill it
mid-stop."""
import signal

from .platform import CHILD_IGNORED_SIGNALS, die_with_parent

for _sig in CHILD_IGNORED_SIGNALS:
    signal.signal(_sig, signal.SIG_IGN)
die_with_parent()
