"""Smoke test of the netns benchmark (tools/bench/netns_bench.py --quick): the engine with
one worker and the naive baseline, each in a namespace the benchmark makes and removes.

Privileged: needs root and ENGINE_PRIVILEGED_TESTS=1 (it creates network namespaces and
TUN devices; all traffic stays inside them, 198.18.0.0/15 and 2001:db8::/32 only).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "tools" / "bench" / "netns_bench.py"

pytestmark = [
    pytest.mark.privileged,
    pytest.mark.skipif(os.environ.get("ENGINE_PRIVILEGED_TESTS") != "1" or os.geteuid() != 0,
                       reason="privileged test: set ENGINE_PRIVILEGED_TESTS=1 and run as root"),
]


def _namespaces():
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def test_netns_bench_quick(tmp_path):
    before = _namespaces()
    out = tmp_path / "bench.json"
    p = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--workers", "1", "--offload", "on",
         "--only", "engine-w1-vnet,naive", "--json", str(out),
         "--svg", str(tmp_path / "bench.svg"), "--markdown", str(tmp_path / "bench.md")],
        cwd=REPO, capture_output=True, text=True, timeout=300)  # a bound: ~13 s here
    assert p.returncode == 0, p.stderr[-3000:]

    # no namespace of ours left behind (the benchmark names them nsb<its pid>-<n>)
    after = _namespaces()
    assert not {n for n in after - before if n.startswith("nsb")}, after - before

    data = json.loads(out.read_text())
    runs = {r["variant"]: r for r in data["runs"]}
    assert set(runs) == {"engine-w1-vnet", "naive"}
    for name, r in runs.items():
        assert r["error"] is None, (name, r["error"])
        t = r["tests"]
        assert t["tcp1"]["gbps"] > 0, (name, t["tcp1"])
        assert t["tcp4"]["gbps"] > 0, (name, t["tcp4"])
        assert t["udp"]["mirrored_pps"] > 0, (name, t["udp"])
        assert t["ping"]["received"] > 0 and t["ping"]["avg_ms"] > 0, (name, t["ping"])
        assert t["ping"]["p99_ms"] >= t["ping"]["p50_ms"] > 0, (name, t["ping"])
        assert t["ping6"]["avg_ms"] > 0, (name, t["ping6"])
        assert t["tcp1"]["cpu_pct"] > 0 and t["tcp1"]["rss_mib_sum"] > 0, (name, t["tcp1"])
        assert r["mirror"]["netns"] not in after
    eng = runs["engine-w1-vnet"]["mirror"]
    assert eng["exit_code"] == 0, eng.get("log_tail")
    assert eng["shm_mib"] > 0 and not eng.get("shm_left_behind"), eng
    assert eng["engine_counters"]["wrote"] > 0, eng.get("log_tail")
    labels = set(eng["pids"].values())
    assert {"supervisor", "reader", "worker0", "writer"} <= labels, labels
    assert (tmp_path / "bench.svg").read_text().startswith("<svg")
    md = (tmp_path / "bench.md").read_text()
    assert "| engine-w1-vnet |" in md
    # CPU per MB carried: the engine's tree and the naive loop each cost something
    for name in runs:
        assert data["summary"][name]["figures"]["tcp1_cpu_us_mb"]["median"] > 0, name

    # --render writes the same tables again from the JSON, with no traffic and no root
    again = tmp_path / "again.md"
    p = subprocess.run([sys.executable, str(BENCH), "--render", str(out), "--markdown",
                        str(again)], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr[-3000:]
    assert again.read_text() == md


def test_netns_bench_pinned(tmp_path):
    """--pin: the mirror's processes may run on the first CPU only (taskset), and the
    report says so."""
    out = tmp_path / "bench.json"
    p = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--pin", "--tests", "tcp1,ping",
         "--workers", "1", "--offload", "on", "--only", "engine-w1-vnet,naive",
         "--json", str(out), "--markdown", str(tmp_path / "bench.md")],
        cwd=REPO, capture_output=True, text=True, timeout=300)  # a bound: ~13 s here
    assert p.returncode == 0, p.stderr[-3000:]
    data = json.loads(out.read_text())
    first = min(os.sched_getaffinity(0))
    for r in data["runs"]:
        assert r["error"] is None, (r["variant"], r["error"])
        assert r["mirror"]["cpus"] == [first], (r["variant"], r["mirror"].get("cpus"))
        assert r["tests"]["tcp1"]["gbps"] > 0 and r["tests"]["ping"]["avg_ms"] > 0
    assert data["meta"]["args"]["pin"] is True
    assert "pinned" in (tmp_path / "bench.md").read_text()
