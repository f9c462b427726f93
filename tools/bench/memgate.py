"""The engine's in-memory device with a start gate, for tools/bench/pipeline_bench.py.

Reads return nothing until the gate file exists, so the benchmark can wait until every
process of the pipeline (reader, workers, writer) is up and idle before the first frame
enters: process start-up is then outside the measurement, and no frame is dropped
because a worker was still importing numpy. Once open, the gate costs one attribute
test per read; everything else is engine/tun/memory.py unchanged.
"""
from __future__ import annotations

import os

from engine.tun.memory import MemoryDevice


class GatedMemoryDevice(MemoryDevice):
    def __init__(self, gate: str, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gate = gate
        self._open = False

    def __reduce__(self):  # the reader and writer processes rebuild it from its settings
        return (GatedMemoryDevice, (self.gate, self.source, self.loops, self.sink, self.name,
                                    self.mtu, self.vnet_hdr_len))

    def _claim(self, want: int):  # every read (read_batch and slot_io) takes frames here
        if not self._open:
            if not os.path.exists(self.gate):
                return 0, 0
            self._open = True
        return super()._claim(want)
