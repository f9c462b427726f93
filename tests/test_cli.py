"""The command line a user sees: help, clear errors for bad input, the topology."""
import os
import subprocess
import sys

import pytest

from engine.config import Config
from engine.tun import TunError
from engine.tun import linux as tun_linux

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def engine(*args, timeout=30):
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_help_lists_the_options():
    p = engine("--help")
    assert p.returncode == 0
    for opt in ("--workers", "--device", "--address", "--address6", "--mtu", "--log-level",
                "--duration", "--offload", "--user"):
        assert opt in p.stdout


@pytest.mark.parametrize("args,fragment", [
    (["--workers", "0"], "--workers 0: between 1 and 64"),
    (["--workers", "many"], "invalid int value"),
    (["--address", "10.3.0.1"], "give a prefix length"),
    (["--address", "10.3.0.0/24"], "network or broadcast"),
    (["--address6", "10.3.0.1/24"], "expected an IPv6 address"),
    (["--mtu", "20"], "--mtu 20"),
    (["--device", "a-name-far-too-long"], "--device"),
    (["--log-level", "loud"], "invalid choice"),
    (["--duration", "-1"], "--duration"),
])
def test_bad_arguments_are_one_clear_line(args, fragment):
    p = engine(*args)
    assert p.returncode == 2
    assert fragment in p.stderr and "Traceback" not in p.stderr


def test_show_topology():
    p = engine("--workers", "2", "--show-topology")
    assert p.stdout.splitlines() == ["reader -> rx0 -> worker0 -> tx0 -> writer",
                                     "reader -> rx1 -> worker1 -> tx1 -> writer",
                                     "writer -> free -> reader"]


def test_missing_dev_net_tun(monkeypatch):
    monkeypatch.setattr(tun_linux, "TUN_PATH", "/nonexistent/tun")
    monkeypatch.setattr(tun_linux, "device_exists", lambda name: False)
    with pytest.raises(TunError, match="modprobe tun"):
        tun_linux.open(Config(device="x0"))


def test_replay_file_missing_is_a_clear_error(tmp_path):
    p = engine("--driver", "memory", "--replay", str(tmp_path / "nope.pcap"), "--duration", "1")
    assert p.returncode == 1 and "engine: error: --replay" in p.stderr


def test_short_memory_run_exits_zero(tmp_path):
    p = engine("--driver", "memory", "--device", f"cli{os.getpid() % 10000}", "--workers", "2",
               "--duration", "0.5")
    assert p.returncode == 0, p.stderr
    assert "read 0 frames, wrote 0, dropped 0" in p.stderr


def test_demo_without_root_says_so_in_one_line(monkeypatch, capsys):
    from engine import demo
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert demo.main([]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs root" in err


@pytest.mark.parametrize("args,words", [
    (("--device", "."), "not '.' or '..'"),
    (("--device", ".."), "not '.' or '..'"),
    (("--device", "a:b"), "no '/', ':' or spaces"),
    (("--offload", "--workers", "64"), "--workers 64: the default pool (32 MiB"),
    (("--user", "nosuchuser-x"), "--user 'nosuchuser-x': no such user"),
])
def test_bad_arguments_are_one_line_and_exit_2_before_anything_is_made(args, words):
    p = engine("--driver", "memory", *args, "--duration", "0.5")
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert words in p.stderr.strip().splitlines()[-1], p.stderr


@pytest.mark.parametrize("args", [("--watch", "nan"), ("--watch", "inf"),
                                  ("--device", "x" * 300)])
def test_stats_bad_arguments_are_one_line(args):
    p = engine("stats", *args)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith("python -m engine stats: error:")


def test_a_windows_driver_elsewhere_is_one_line():
    p = engine("--driver", "tap-windows", "--duration", "1")
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.strip() == ("engine: error: --driver tap-windows needs Windows "
                                "(kernel32.dll: ctypes.WinDLL exists only on Windows)")
