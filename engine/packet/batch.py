"""What every packet function takes: frames in pool slots, seen two ways.

Each function here has a plain-Python form for one frame and a numpy form for a batch.
Every numpy call costs a microsecond or more whatever the batch size, so up to
SMALL_BATCH frames the per-frame form is cheaper (a ping, a few offload super-packets);
the package's entry points (`mirror`, `classify`, `worker_of`) make that choice, not
their callers.
"""
from __future__ import annotations

import array
from typing import NamedTuple, Sequence

import numpy as np

SMALL_BATCH = 40   # frames up to which the per-frame form is cheaper


class Pool(NamedTuple):
    """The shared frame pool: `matrix` (slots x slot size, uint8) for the batch forms,
    `views` (one writable buffer per slot) for the per-frame forms."""

    matrix: np.ndarray
    views: Sequence


def u32(values: list) -> np.ndarray:
    """A list of ints as a uint32 array, through array.array: faster than np.array(list)
    for batch-sized lists."""
    return np.frombuffer(array.array("I", values), np.uint32)


def as_list(values):
    """Slot numbers or lengths as Python ints (from a ring's numpy slice, or a sequence
    of ints as it is): numpy's unsigned scalars would wrap in the per-frame forms'
    arithmetic."""
    return values.tolist() if isinstance(values, np.ndarray) else values


def as_array(values) -> np.ndarray:
    return values if isinstance(values, np.ndarray) else u32(values)
