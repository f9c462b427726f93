"""The soak tool (tools/soak.py; `make soak` runs it for 10 minutes) in a short variant:
50 s of full load (kept under a minute with start and stop), sampled every 2 s, 15 s of
warm-up. It fails on RSS growth >= 1 MiB in any engine process after warm-up, a new fd,
changed shared memory, a restart, a damaged transfer, counters that do not add up, or an
unclean stop."""
import json
import os
import subprocess

import pytest

from netns import PY, ROOT

pytestmark = pytest.mark.privileged


def test_soak_short(tmp_path):
    out = tmp_path / "soak.json"
    p = subprocess.run([PY, os.path.join(ROOT, "tools", "soak.py"), "--seconds", "50",
                        "--interval", "2", "--warmup", "15", "--json", str(out)],
                       capture_output=True, text=True, timeout=150, cwd=ROOT)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    report = json.loads(out.read_text())
    assert not report["failures"]
    after = [s for s in report["samples"] if s["t"] >= 15]
    assert len(after) >= 10, len(after)
    roles = set(after[0]["procs"])
    assert {"supervisor", "reader", "worker0", "worker1", "writer"} <= roles, roles
    assert report["traffic"]["tcp_ok"] >= 2 and not report["traffic"]["tcp_bad"]
