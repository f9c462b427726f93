"""Sans-I/O packet code: what the engine decides about a frame, with no device, ring or
process in sight (h11's rule: the protocol apart from the I/O).

  headers     header layouts, each constant once with its RFC; the padding rule
  batch       the pool seen as a matrix and as slot views; when a batch is small
  ip          the mirror rule: validate, swap source and destination (`mirror`)
  ethernet    TAP mode: classify Ethernet frames (`classify`), swap MACs, fake MACs
  neighbours  TAP mode: ARP replies and neighbour advertisements
  flow        the flow hash that keeps a flow on one worker (`worker_of`)

Each entry point takes a batch and chooses itself between its per-frame and its numpy
form; callers never do.
"""
from __future__ import annotations

import numpy as np

from .batch import Pool, u32
from .ethernet import KIND_ARP, KIND_DROP, KIND_IP, KIND_NDP, classify, fake_mac
from .flow import worker_of
from .ip import FORWARD, R, Mirror, mirror, mirror_batch, mirror_frame, reflect
from .neighbours import arp_reply, neighbour_advert

__all__ = ["Pool", "u32", "KIND_ARP", "KIND_DROP", "KIND_IP", "KIND_NDP", "classify",
           "fake_mac", "worker_of", "FORWARD", "R", "Mirror", "mirror", "mirror_batch",
           "mirror_frame", "reflect", "arp_reply", "neighbour_advert", "warm_up"]


def warm_up(rule: Mirror, workers: int) -> None:
    """Run the numpy forms once on a scratch batch, so the memory numpy and the
    interpreter set aside on first use is taken at start, not under traffic later (the
    soak test holds every process's memory flat)."""
    o = rule.vnet_hdr_len + rule.l2_hdr_len
    scratch = np.zeros((128, o + 128), np.uint8)
    scratch[:, o] = 0x45
    pool = Pool(scratch, list(scratch))
    slots = np.arange(len(scratch), dtype=np.uint32)
    lens = np.full(len(scratch), o + 40, np.uint32)
    mirror(rule, pool, slots, lens)
    worker_of(pool, slots, lens, o, max(workers, 2))
