"""Shared counters: one int64 row per actor (reader, worker<i>, writer) in shared memory.

Each actor counts into a private list and `commit()`s it into its row once per batch
(Snabb's counters, double-buffered), so the hot path costs list increments only. Rows
survive the actor: a restarted process resumes from its row. Anyone can read the rows
(the supervisor's dump, `python -m engine stats` from another process).
"""
from __future__ import annotations

import struct

import numpy as np

from . import topology
from .topology import READER

# Why a frame was dropped. Every frame read is written or counted under one of these
# (DESIGN.md invariant 2: rx = tx + drops at any quiescent moment).
DROP_REASONS = (
    "not_ip",          # version nibble is neither 4 nor 6
    "malformed",       # truncated header, bad IHL, length fields that disagree with the frame
    "bad_checksum",    # IPv4 header checksum wrong
    "bad_vnet_hdr",    # virtio_net_hdr inconsistent with the packet (offload mode)
    "not_mirrored",    # addresses outside the mirror rule (DESIGN.md invariant 4)
    "vlan",            # TAP mode: 802.1Q / 802.1ad tagged Ethernet frame
    "unknown_ethertype",  # TAP mode: neither IPv4, IPv6 nor ARP (engine/l2.py)
    "too_big",         # frame larger than a pool slot (read truncated)
    "ring_full",       # the worker's ring had no room
    "write_error",     # the device refused the frame on write
    "worker_restart",  # in flight in a process that died
)
# Of those, the frames the engine failed to carry (capacity, faults); the others were
# refused by the rule on purpose (filtered), which is no loss.
LOST_REASONS = ("too_big", "ring_full", "write_error", "worker_restart")
HIST_BINS = ("1", "2-3", "4-7", "8-15", "16-31", "32-63", "64+")

FIELDS = (
    "in_frames", "in_bytes", "out_frames", "out_bytes", "batches", "sleeps", "restarts",
    "ring_hwm",
    "inline_frames", "inline_bytes",  # reader only: batches it mirrored and wrote itself
    "journal",                        # reader, writer: the batch their last commit includes
    "drop_bytes",                     # bytes of this actor's drops (all but write_error)
    *(f"drop_{r}" for r in DROP_REASONS),
    *(f"batch_{b}" for b in HIST_BINS),
)
F = {name: i for i, name in enumerate(FIELDS)}
DROP_BASE = F["drop_not_ip"]
HIST_BASE = F["batch_1"]
NFIELDS = len(FIELDS)


def counters_bytes(workers: int) -> int:
    return (workers + 2) * NFIELDS * 8


def counters_view(buf, workers: int) -> np.ndarray:
    return np.frombuffer(buf, np.int64, (workers + 2) * NFIELDS).reshape(workers + 2, NFIELDS)


_ROW = struct.Struct(f"={NFIELDS}q")


class Counters:
    """An actor's private counts, committed to its shared row (one struct.pack_into: each
    field is a single aligned 8-byte store, and it costs half of a numpy assignment)."""

    __slots__ = ("c", "_buf")

    def __init__(self, row: np.ndarray) -> None:
        self._buf = row.data.cast("B")
        self.c = [int(v) for v in row]  # resume where a previous incarnation stopped

    def batch(self, n: int) -> None:
        c = self.c
        c[4] += 1  # batches
        c[HIST_BASE + min(n.bit_length() - 1, 6)] += 1

    def commit(self) -> None:
        _ROW.pack_into(self._buf, 0, *self.c)


assert F["batches"] == 4


def totals(rows: np.ndarray, workers: int) -> dict:
    """Engine-wide figures from the counter rows: frames read, written, dropped by reason.

    At a quiescent moment rx = tx + dropped, in frames and in bytes alike. tx_bytes are
    the bytes handed to the device, a frame it refused included (that frame counts under
    write_error, not in tx_frames); dropped_bytes are those of the frames dropped before
    the device. A TAP request the engine answered counts as carried, at its own length."""
    reader, writer = rows[READER], rows[topology.writer(workers)]
    drops = {r: int(rows[:, DROP_BASE + i].sum()) for i, r in enumerate(DROP_REASONS)}
    t = {"rx_frames": int(reader[F["in_frames"]]), "rx_bytes": int(reader[F["in_bytes"]]),
         "tx_frames": int(writer[F["out_frames"]] + reader[F["inline_frames"]]),
         "tx_bytes": int(writer[F["out_bytes"]] + reader[F["inline_bytes"]]),
         "drops": drops, "dropped": sum(drops.values()),
         "dropped_bytes": int(rows[:, F["drop_bytes"]].sum())}
    # what is between read and written-or-dropped at this instant (0 when quiescent)
    t["in_flight"] = t["rx_frames"] - t["tx_frames"] - t["dropped"]
    t["in_flight_bytes"] = t["rx_bytes"] - t["tx_bytes"] - t["dropped_bytes"]
    return t
