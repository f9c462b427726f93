"""engine/monitor.py and engine/stats_cli.py without root: snapshots over a real Segments
(with child processes standing in for the actors), the JSON line, the tables, the Dumper,
the read-only attach, and `python -m engine stats` against a memory-driver engine."""
import io
import json
import logging
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from engine import journal, monitor, pcap, shm, stats, stats_cli, topology
from engine.config import Config
from engine.errors import EngineError
from packets import ipv4, udp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
W = 2
F = stats.F


@pytest.fixture
def run():
    """A Segments as the supervisor makes it (this process plays the supervisor), with
    four `sleep` children announced in the ready words as reader, workers and writer."""
    device = f"mon{os.getpid() % 100000}"
    seg = shm.Segments(shm.shm_prefix(device), shm.Layout(W, 64, 2048, 16))
    kids = [subprocess.Popen(["sleep", "60"]) for _ in range(W + 2)]
    try:
        m = seg.mapped
        m.ctl[journal.SUPERVISOR_PID] = os.getpid()
        for i, k in enumerate(kids):
            m.ready[i] = k.pid
        yield device, seg, kids
    finally:
        for k in kids:
            k.kill()
            k.wait()
        seg.unlink()


def count(m, reader_in=100, worker_out=(50, 45), not_mirrored=(3, 2), writer_out=None):
    """Counters of a quiescent run: reader read `reader_in`, workers forwarded or dropped."""
    c = m.counters
    c[0][F["in_frames"]], c[0][F["in_bytes"]] = reader_in, reader_in * 100
    c[0][F["out_frames"]] = reader_in
    c[0][F["ring_hwm"]] = 7
    for i in range(W):
        c[1 + i][F["in_frames"]] = worker_out[i] + not_mirrored[i]
        c[1 + i][F["out_frames"]] = worker_out[i]
        c[1 + i][F["drop_not_mirrored"]] = not_mirrored[i]
        c[1 + i][F["batches"]] = 5
    done = sum(worker_out) if writer_out is None else writer_out
    c[W + 1][F["in_frames"]] = c[W + 1][F["out_frames"]] = done
    c[W + 1][F["out_bytes"]] = done * 100


# ---- snapshot -----------------------------------------------------------------------------
def test_snapshot_counters_totals_and_processes(run):
    device, seg, kids = run
    count(seg.mapped)
    cache = {}
    s = monitor.snapshot(seg.mapped, W, cache, device)
    t = s.totals
    assert (t["rx_frames"], t["tx_frames"], t["dropped"]) == (100, 95, 5)
    assert t["rx_frames"] == t["tx_frames"] + t["dropped"] and t["in_flight"] == 0
    assert t["drops"]["not_mirrored"] == 5 and t["rx_bytes"] == 10000
    assert list(s.counters) == ["reader", "worker0", "worker1", "writer"]
    assert s.counters["reader"]["ring_hwm"] == 7
    assert set(s.rings) == {"rx0", "rx1", "tx0", "tx1", "free"}
    assert s.shm_bytes == seg.layout.pool_bytes + seg.layout.ctl_bytes
    roles = ["supervisor", "reader", "worker0", "worker1", "writer"]
    assert list(s.procs) == roles
    assert [s.procs[r]["pid"] for r in roles] == [os.getpid(), *(k.pid for k in kids)]
    for p in s.procs.values():
        assert p["rss"] > 0 and p["cpu_percent"] >= 0.0 and p["fds"] >= 0
        assert p["ctx_voluntary"] >= 0 and p["ctx_involuntary"] >= 0 and p["threads"] >= 1
    assert set(cache) == {os.getpid(), *(k.pid for k in kids)}  # kept for cpu_percent


def test_cpu_percent_needs_the_cached_process(run):
    device, seg, _ = run
    cache = {}
    monitor.snapshot(seg.mapped, W, cache, device)
    t0 = time.process_time()
    while time.process_time() - t0 < 0.3:  # the "supervisor" (us) burns some CPU
        pass
    s = monitor.snapshot(seg.mapped, W, cache, device)
    assert s.procs["supervisor"]["cpu_percent"] > 10


def test_dead_or_foreign_pids_are_left_out(run):
    device, seg, kids = run
    kids[1].kill()
    kids[1].wait()                 # worker0's ready word is stale now
    seg.mapped.ready[W + 1] = 1    # "writer" is init: not the supervisor's child
    cache = {}
    s = monitor.snapshot(seg.mapped, W, cache, device)
    assert list(s.procs) == ["supervisor", "reader", "worker1"]
    assert kids[1].pid not in cache and 1 not in cache


def test_in_flight_while_not_quiescent(run):
    device, seg, _ = run
    count(seg.mapped, writer_out=90)
    s = monitor.snapshot(seg.mapped, W, {}, device)
    assert s.totals["in_flight"] == 5


# ---- formats ------------------------------------------------------------------------------
def test_json_is_one_line_and_round_trips(run):
    device, seg, _ = run
    count(seg.mapped)
    s = monitor.snapshot(seg.mapped, W, {}, device)
    line = monitor.to_json(s, event="final")
    assert "\n" not in line and json.loads(line)["event"] == "final"
    assert monitor.from_json(line) == s


def snap(t, reader_in, dropped, cpu=12.5, rss=50 << 20, ctx=100, pid=4242):
    counters = {a: {f: 0 for f in stats.FIELDS} for a in topology.actor_names(1)}
    counters["reader"].update(in_frames=reader_in, in_bytes=reader_in * 125, out_frames=reader_in,
                              batches=reader_in // 10)
    counters["worker0"].update(in_frames=reader_in, out_frames=reader_in - dropped,
                               drop_not_mirrored=dropped)
    counters["writer"].update(out_frames=reader_in - dropped, out_bytes=(reader_in - dropped) * 125)
    totals = {"rx_frames": reader_in, "rx_bytes": reader_in * 125,
              "tx_frames": reader_in - dropped, "tx_bytes": (reader_in - dropped) * 125,
              "drops": {r: (dropped if r == "not_mirrored" else 0) for r in stats.DROP_REASONS},
              "dropped": dropped, "in_flight": 0}
    procs = {"supervisor": {"pid": pid, "cpu_percent": cpu, "rss": rss, "ctx_voluntary": ctx,
                            "ctx_involuntary": 0, "fds": 9, "threads": 1}}
    return monitor.Snapshot(1000.0 + t, t, "mir0", 1, counters, totals,
                            {"rx0": 0, "tx0": 0, "free": 0}, procs, 30.0, 1 << 20)


def test_rates_between_two_snapshots():
    r = monitor.rates(snap(0.0, 0, 0), snap(2.0, 20000, 100, ctx=300))
    assert r["interval"] == 2.0
    assert r["rx_pps"] == 10000 and r["tx_pps"] == 9950 and r["drops_ps"] == 50
    assert r["rx_mbps"] == pytest.approx(10.0)            # 10000 pkt/s x 125 B x 8
    assert r["drops"]["not_mirrored"] == 50
    assert r["actors"]["reader"]["avg_batch"] == 10
    assert r["actors"]["worker0"]["drops_ps"] == 50
    assert r["procs"]["supervisor"]["ctx_ps"] == 100


def test_loss_counts_frames_lost_not_frames_filtered():
    prev, cur = snap(0.0, 0, 0), snap(2.0, 20000, 100)
    cur.totals["drops"].update(not_mirrored=60, ring_full=40)
    assert "filtered 30/s, lost 20/s (loss 0.20%)" in monitor.summary_line(prev, cur)


def test_rates_of_a_restarted_process_have_no_ctx_rate():
    r = monitor.rates(snap(0.0, 0, 0), snap(1.0, 10, 0, pid=4343))
    assert r["procs"]["supervisor"]["ctx_ps"] is None


def test_format_table():
    text = monitor.format_table(snap(0.0, 0, 0), snap(2.0, 20000, 100, ctx=300))
    lines = text.splitlines()
    assert lines[0].startswith("mir0 2.0 s: rx 10,000 pkt/s 10.0 Mbit/s, tx 9,950 pkt/s")
    # the 50 drops are not_mirrored: filtered by the rule, not lost
    assert "filtered 50/s, lost 0/s (loss 0.00%)" in lines[0] and "host cpu 30%" in lines[0]
    reader = next(x for x in lines if x.startswith("reader"))
    assert reader.split()[:3] == ["reader", "10,000", "10.0"]
    assert "drops: not_mirrored 50.0/s (100)" in lines
    sup = next(x for x in lines if x.startswith("supervisor")).split()
    assert sup == ["supervisor", "4242", "12.5", "50.0", "100", "9"]


def test_format_table_no_drops_and_unknown_fds():
    cur = snap(1.0, 10, 0)
    cur.procs["supervisor"]["fds"] = None
    text = monitor.format_table(snap(0.0, 0, 0), cur)
    assert "drops: none" in text and text.splitlines()[-1].endswith(" -")


def test_format_counters(run):
    device, seg, _ = run
    count(seg.mapped)
    text = monitor.format_counters(monitor.snapshot(seg.mapped, W, {}, device))
    assert "batch sizes 1/2-3/4-7/8-15/16-31/32-63/64+" in text
    assert ("read 100 frames (10000 bytes), wrote 95 (9500 bytes), dropped 5 "
            "(not_mirrored 5), in flight 0") in text


# ---- the supervisor's Dumper --------------------------------------------------------------
class Tty(io.StringIO):
    def isatty(self):
        return True


def test_dumper_interval_signal_final(run, tmp_path):
    device, seg, _ = run
    path = tmp_path / "stats.jsonl"
    cfg = Config(device=device, driver="memory", stats_interval=1.0, stats_file=str(path))
    err = Tty()
    d = monitor.Dumper(cfg, seg.mapped, W, stream=err)
    t0 = d.last.monotonic
    d.tick(t0 + 0.5)
    assert path.read_text() == "" and err.getvalue() == ""
    count(seg.mapped)
    d.tick(t0 + 1.0)
    d.tick(t0 + 1.2)                        # not due again yet
    d.dump_now()
    d.final()
    d.final()                               # idempotent
    d.tick(t0 + 10)                         # after final: nothing
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["event"] for x in lines] == ["interval", "signal", "final"]
    assert lines[0]["totals"]["rx_frames"] == 100 and "reader" in lines[0]["procs"]
    assert err.getvalue().count("process ") == 2   # two tables: the interval and the signal


def test_dumper_without_terminal_or_file_logs_one_line(run, caplog):
    device, seg, _ = run
    cfg = Config(device=device, driver="memory", stats_interval=0.5)
    err = io.StringIO()
    d = monitor.Dumper(cfg, seg.mapped, W, stream=err)
    with caplog.at_level(logging.INFO, logger="engine"):
        d.tick(d.last.monotonic + 0.5)
    assert err.getvalue() == ""
    assert [r.message for r in caplog.records if r.message.startswith(f"stats: {device}")]


def test_dumper_without_interval_never_ticks(run, tmp_path):
    device, seg, _ = run
    path = tmp_path / "s.jsonl"
    d = monitor.Dumper(Config(device=device, driver="memory", stats_file=str(path)),
                       seg.mapped, W, stream=Tty())
    d.tick(d.last.monotonic + 1e6)
    d.final()
    assert [json.loads(x)["event"] for x in path.read_text().splitlines()] == ["final"]


def test_dumper_unwritable_file_is_a_clear_error(run, tmp_path):
    device, seg, _ = run
    cfg = Config(device=device, driver="memory", stats_file=str(tmp_path / "no" / "s.jsonl"))
    with pytest.raises(EngineError, match="--stats-file .*No such file"):
        monitor.Dumper(cfg, seg.mapped, W)


# ---- read-only attach and the stats command -----------------------------------------------
def test_segments_write_the_layout_header(run):
    _, seg, _ = run
    L = seg.layout
    assert tuple(seg.mapped.ctl[monitor.LAYOUT_WORDS]) == (L.workers, L.pool_frames,
                                                           L.slot_size, L.rx_capacity)


def test_attach_readonly_sees_the_same_counters(run):
    device, seg, _ = run
    count(seg.mapped)
    view, path = stats_cli.attach_readonly(device)
    assert view.layout == seg.layout and path.endswith(f"{shm.shm_prefix(device)}.ctl")
    assert np.array_equal(view.counters, seg.mapped.counters)
    seg.mapped.counters[0][F["sleeps"]] = 12345           # live, not a copy
    assert view.counters[0][F["sleeps"]] == 12345
    with pytest.raises((TypeError, ValueError)):        # read-only mapping
        view.counters[0][0] = 1
    with pytest.raises(TypeError):
        view.ctl[journal.STOP] = 1
    assert monitor.snapshot(view, W, {}, device).totals == \
        monitor.snapshot(seg.mapped, W, {}, device).totals


def test_stats_json(run, monkeypatch, capsys):
    device, seg, kids = run
    count(seg.mapped)
    monkeypatch.setattr(stats_cli, "RATE_INTERVAL", 0.1)
    assert stats_cli.main(["--device", device, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["procs"]) == {"supervisor", "reader", "worker0", "worker1", "writer"}
    assert all(p["rss"] > 0 and "cpu_percent" in p for p in out["procs"].values())
    t = out["totals"]
    assert t["rx_frames"] == t["tx_frames"] + t["dropped"] == 100
    assert out["rates"]["interval"] >= 0.1


def test_stats_table(run, monkeypatch, capsys):
    device, seg, _ = run
    count(seg.mapped)
    monkeypatch.setattr(stats_cli, "RATE_INTERVAL", 0.1)
    assert stats_cli.main(["--device", device]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"engine on {device}: supervisor pid {os.getpid()}, 2 workers")
    for part in ("read 100 frames", "in pkt/s", "rss MiB", "writer"):
        assert part in out


def test_stats_watch_ends_when_the_engine_stops(run, monkeypatch, capsys):
    device, seg, _ = run
    answers = iter([True, True, False])
    monkeypatch.setattr(stats_cli, "still_running", lambda view, path: next(answers))
    assert stats_cli.main(["--device", device, "--watch", "0.05", "--json"]) == 1
    cap = capsys.readouterr()
    assert len(cap.out.splitlines()) == 2
    assert cap.err == f"engine: error: the engine on {device} has stopped\n"


def test_stats_no_engine_is_one_line(capsys):
    assert stats_cli.main(["--device", "nosuch0"]) == 1
    assert capsys.readouterr().err == ("engine: error: no engine runs on device nosuch0 in "
                                       "this network namespace\n")


def test_stats_stale_segment_says_so(run, capsys):
    device, seg, _ = run
    gone = subprocess.Popen(["true"])
    gone.wait()
    seg.mapped.ctl[journal.SUPERVISOR_PID] = gone.pid
    assert stats_cli.main(["--device", device]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"pid {gone.pid}, is gone" in err


def test_stats_starting_engine(run, capsys):
    device, seg, _ = run
    seg.mapped.ctl[journal.SUPERVISOR_PID] = 0   # segments made, supervisor not yet announced
    with pytest.raises(stats_cli.NoEngine, match="still starting"):
        stats_cli.attach_readonly(device, wait=0.1)


def test_stats_command_on_a_memory_engine(tmp_path):
    """The whole thing without root: a memory-driver engine replays frames (some dropped),
    then `python -m engine stats --json` from another process reads it and leaves its
    shared memory alone."""
    device = f"mst{os.getpid() % 100000}"
    frames = [ipv4("198.18.0.1", f"198.18.0.{2 + i % 50}", udp(999, 7, b"x" * 40))
              for i in range(300)] + [b"\x45\x00"] * 7
    pcap.write_frames(str(tmp_path / "in.pcap"), frames)
    eng = subprocess.Popen(
        [sys.executable, "-m", "engine", "--driver", "memory", "--device", device,
         "--replay", str(tmp_path / "in.pcap"), "--workers", "2", "--no-offload",
         "--address", "198.18.0.1/24", "--replay-hold", "--duration", "60"],
        cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 40   # a bound, generous for a slow machine
        while time.time() < deadline:
            p = subprocess.run([sys.executable, "-m", "engine", "stats", "--device", device,
                                "--json"], cwd=ROOT, capture_output=True, text=True, timeout=20)
            if p.returncode == 0:
                out = json.loads(p.stdout)
                if len(out["procs"]) == 4 + 1 and out["totals"]["rx_frames"] == 307:
                    break
            time.sleep(0.2)
        assert p.returncode == 0, p.stderr
        assert set(out["procs"]) == {"supervisor", "reader", "worker0", "worker1", "writer"}
        assert out["procs"]["supervisor"]["pid"] == eng.pid
        t = out["totals"]
        assert t["rx_frames"] == 307 and t["tx_frames"] == 300 and t["dropped"] == 7
        assert t["drops"]["malformed"] == 7
        prefix = shm.shm_prefix(device)
        assert os.path.exists(f"/dev/shm/{prefix}.ctl"), "the stats tool unlinked the segment"
        assert os.path.exists(f"/dev/shm/{prefix}.pool")
    finally:
        eng.terminate()
        err = eng.communicate(timeout=10)[1]
    assert eng.returncode == 0, err
    assert "read 307 frames, wrote 300, dropped 7" in err
