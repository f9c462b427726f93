"""Smoke test of the kernel-free pipeline benchmark (tools/bench/pipeline_bench.py --quick):
no root, no device; every frame replayed must come out written, and the report files must
be there."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "tools" / "bench" / "pipeline_bench.py"


def test_pipeline_bench_quick(tmp_path):
    out, md, svg = tmp_path / "p.json", tmp_path / "p.md", tmp_path / "p.svg"
    p = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--sizes", "64", "--workers", "1,2",
         "--json", str(out), "--markdown", str(md), "--svg", str(svg)],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    runs = json.loads(out.read_text())["runs"]
    assert [r["workers"] for r in runs] == [1, 2]
    for r in runs:
        assert r["written"] == r["frames"] > 0 and r["dropped"] == 0, r
        assert r["fps"] > 0 and r["engine_rc"] == 0, r
        # the reader read, the workers rewrote every frame (--inline never)
        assert sum(r["batches"][f"worker{i}"] for i in range(r["workers"])) > 0, r
    assert "| 64 B | 2 |" in md.read_text()
    assert svg.read_text().startswith("<svg")
