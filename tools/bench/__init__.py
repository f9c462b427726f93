"""Benchmark tooling (issue 3).

  naive_mirror.py    the naive single-process Python mirror, the baseline
  netns_bench.py     network-namespace benchmark: engine (1/2/4 workers, offload on/off),
                     naive baseline, external comparators, kernel loopback ceiling
  pipeline_bench.py  kernel-free benchmark of the engine pipeline over the memory device
  svg.py             the pure-Python SVG chart both write

See docs/benchmarks.md for results and how to reproduce them.
"""
