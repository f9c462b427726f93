"""Smoke test of the kernel-free pipeline benchmark (tools/bench/pipeline_bench.py --quick):
no root, no device; every frame replayed must come out written, and the report files must
be there."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "tools" / "bench" / "pipeline_bench.py"


def test_pipeline_bench_quick(tmp_path):
    out, md, svg = tmp_path / "p.json", tmp_path / "p.md", tmp_path / "p.svg"
    p = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--sizes", "64", "--workers", "1,2",
         "--json", str(out), "--markdown", str(md), "--svg", str(svg)],
        cwd=REPO, capture_output=True, text=True, timeout=300)  # a bound: ~3 s here
    assert p.returncode == 0, p.stderr[-3000:]
    runs = json.loads(out.read_text())["runs"]
    assert [r["workers"] for r in runs] == [1, 2]
    for r in runs:
        assert r["written"] == r["frames"] > 0 and r["dropped"] == 0, r
        assert r["fps"] > 0 and r["engine_rc"] == 0, r
        # the reader read, the workers rewrote every frame (--inline never)
        assert sum(r["batches"][f"worker{i}"] for i in range(r["workers"])) > 0, r
    report = md.read_text()
    assert "| 64 B | 2 |" in report
    assert "64 B 1 → 2 workers" in report and "CPU µs per frame" in report
    assert svg.read_text().startswith("<svg")


def test_scaling_and_cpu_per_frame_from_a_summary():
    sys.path.insert(0, str(BENCH.parent))
    import pipeline_bench as pb
    summary = [{"size": 64, "workers": w, "fps": {"median": f}} for w, f in
               ((1, 2.0e6), (2, 1.5e6), (4, 1.8e6))]
    assert pb.scaling(summary) == [(64, 1, 2, -0.25), (64, 1, 4, pytest.approx(-0.1))]
    run = {"cpu_pct": {"reader": 50.0, "worker0": 40.0, "worker1": 40.0, "writer": 10.0},
           "window_s": 2.0, "frames": 1_000_000}
    assert pb.cpu_per_frame(run) == pytest.approx(
        {"reader": 1.0, "workers": 1.6, "writer": 0.2, "total": 2.8})
