"""Imported by the forkserver only (as a preload module): it dies with the supervisor, and
so, through their own PR_SET_PDEATHSIG, do the actors it forked. (Python gives every child
the forkserver's "alive" pipe, so the forkserver would otherwise never see EOF while an
actor lives, and a SIGKILLed supervisor would leave them all holding the device.)"""
from .platform import die_with_parent

die_with_parent()
