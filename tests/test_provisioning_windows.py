"""The Windows plan and its commands (golden), and the `python -m provisioning` CLI, with
the Linux device calls replaced by recorders (no root needed)."""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys

import pytest

from provisioning import __main__ as cli
from provisioning import windows
from provisioning.plan import Plan, PlanError, load

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
V6 = ipaddress.IPv6Interface("2001:db8::1/64")


# ---- the plan ----------------------------------------------------------------------
def test_defaults_are_the_articles_network():
    p = Plan()
    assert (p.name, p.driver, str(p.address), p.address6, p.mtu) == \
        ("mirror0", "tap0901", "10.3.0.1/24", None, 1500)


def test_round_trip(tmp_path):
    p = Plan(name="mirror1", driver="tap0801", address=ipaddress.IPv4Interface("198.18.0.1/16"),
             mtu=1400)
    path = tmp_path / "plan.json"
    p.dump(str(path))
    assert json.loads(path.read_text()) == {"name": "mirror1", "driver": "tap0801",
                                            "mode": "tun", "address": "198.18.0.1/16",
                                            "address6": None, "mtu": 1400}
    assert load(str(path)) == p


def test_load_accepts_a_bom_and_an_absent_address6(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text('\ufeff{"name": "m0", "driver": "wintun", "address": "10.3.0.1/24", '
                    '"mtu": 9000}', encoding="utf-8")
    assert load(str(path)) == Plan(name="m0", driver="wintun", mtu=9000)


@pytest.mark.parametrize("data,message", [
    ({"name": "m0", "driver": "tap0901", "address": "10.3.0.1/24", "mtu": 1500, "mtuu": 1},
     "unknown plan field"),
    ({"name": "m0", "driver": "tap0901", "address": "10.3.0.1/24"}, "missing plan field"),
    ({"name": "my adapter", "driver": "tap0901", "address": "10.3.0.1/24", "mtu": 1500}, "name"),
    ({"name": "m0", "driver": "tap0902", "address": "10.3.0.1/24", "mtu": 1500}, "driver"),
    ({"name": "m0", "driver": "tap0901", "address": "10.3.0.1", "mtu": 1500}, "prefix length"),
    ({"name": "m0", "driver": "tap0901", "address": "10.3.0.0/24", "mtu": 1500}, "address"),
    ({"name": "m0", "driver": "tap0901", "address": "10.3.0.1/31", "mtu": 1500}, "address"),
    ({"name": "m0", "driver": "tap0901", "address": "2001:db8::1/64", "mtu": 1500}, "IPv4"),
    ({"name": "m0", "driver": "tap0901", "address": "10.3.0.1/24", "mtu": 9000}, "mtu"),
    ({"name": "m0", "driver": "tap0901", "address": "10.3.0.1/24", "mtu": "1500"}, "mtu"),
    ({"name": "m0", "driver": "tap0901", "address": "10.3.0.1/24", "address6": "2001:db8::1/64",
      "mtu": 1000}, "1280"),
    ({"name": "m0", "driver": "tap0801", "address": "10.3.0.1/24", "address6": "2001:db8::1/64",
      "mtu": 1500}, "tap0801"),
    ([1, 2], "JSON object"),
])
def test_invalid_plans_name_the_field(tmp_path, data, message):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data))
    with pytest.raises(PlanError, match=message) as e:
        load(str(path))
    assert str(path) in str(e.value)


def test_unreadable_plans(tmp_path):
    with pytest.raises(PlanError, match="plan .*missing.json"):
        load(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(PlanError, match="not valid JSON"):
        load(str(bad))


# ---- golden commands ---------------------------------------------------------------
def test_commands_for_the_default_plan():
    assert windows.commands(Plan()) == {
        "install": [["tapctl.exe", "create", "--hwid", "root\\tap0901", "--name", "mirror0"]],
        "configure": [
            ["netsh", "interface", "ipv4", "set", "address", "name=mirror0", "source=static",
             "address=10.3.0.1", "mask=255.255.255.0"],
            ["netsh", "interface", "ipv4", "set", "subinterface", "mirror0", "mtu=1500",
             "store=persistent"],
            ["netsh", "advfirewall", "firewall", "add", "rule", "name=ip-mirror-mirror0",
             "dir=in", "action=allow", "remoteip=10.3.0.0/24", "profile=any"]],
        "remove": [["tapctl.exe", "delete", "mirror0"],
                   ["netsh", "advfirewall", "firewall", "delete", "rule",
                    "name=ip-mirror-mirror0"]],
    }
    text = windows.render(Plan())
    assert "#   without tapctl: devcon.exe install OemVista.inf tap0901" in text
    assert "#   without tapctl: devcon.exe remove \"@<instance id>\"" in text


def test_commands_with_ipv6_follow_openvpn():
    plan = Plan(address6=V6, mtu=1400, address=ipaddress.IPv4Interface("198.18.3.4/15"))
    configure = windows.commands(plan)["configure"]
    assert configure[0][-2:] == ["address=198.18.3.4", "mask=255.254.0.0"]
    assert configure[-1][-2] == "remoteip=198.18.0.0/15,2001:db8::/64"  # both prefixes
    assert configure[2:-1] == [
        ["netsh", "interface", "ipv6", "set", "address", "interface=mirror0",
         "address=2001:db8::1/128", "store=persistent"],
        ["netsh", "interface", "ipv6", "add", "route", "prefix=2001:db8::/64",
         "interface=mirror0", "nexthop=fe80::8", "store=persistent"],
        ["netsh", "interface", "ipv6", "set", "subinterface", "mirror0", "mtu=1400",
         "store=persistent"]]


def test_tap0801_uses_the_old_inf_and_custom_tools():
    cmds = windows.commands(Plan(driver="tap0801"), devcon=r"C:\Program Files\TAP\tapinstall.exe")
    assert cmds["install"] == [[r"C:\Program Files\TAP\tapinstall.exe", "install",
                                "OemWin2k.inf", "tap0801"]]
    text = windows.render(Plan(driver="tap0801"), r"C:\Program Files\TAP\tapinstall.exe",
                          r"C:\tap\OemWin2k.inf")
    assert '"C:\\Program Files\\TAP\\tapinstall.exe" install C:\\tap\\OemWin2k.inf tap0801' in text


def test_the_address_is_the_engines_config_tun_address():
    from engine.tun import tap_windows
    plan = Plan(address=ipaddress.IPv4Interface("198.18.0.1/24"))
    vals = windows.values(plan)
    local, _, mask = (ipaddress.IPv4Address(tap_windows.config_tun_buffer(plan.address)[i:i + 4])
                      for i in (0, 4, 8))
    assert (vals["Address"], vals["Mask"]) == (str(local), str(mask))


def test_wintun_needs_no_commands():
    plan = Plan(driver="wintun", mtu=9000)
    assert windows.commands(plan) == {"install": [], "configure": [], "remove": []}
    assert "the engine creates the adapter" in windows.render(plan)


def test_render_lists_every_command_line():
    text = windows.render(Plan(address6=V6))
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert lines == [subprocess.list2cmdline(argv)
                     for argvs in windows.commands(Plan(address6=V6)).values() for argv in argvs]


# ---- the CLI -----------------------------------------------------------------------
def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_from_options_and_from_file_agree(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "plan", "--os", "windows", "--address6", "2001:db8::1/64",
                           "--mtu", "1400")
    assert code == 0 and out == windows.render(Plan(address6=V6, mtu=1400))
    path = tmp_path / "plan.json"
    code, js, _ = run_cli(capsys, "plan", "--os", "windows", "--address6", "2001:db8::1/64",
                          "--mtu", "1400", "--json")
    path.write_text(js)
    assert run_cli(capsys, "plan", "--os", "windows", "--plan", str(path))[1] == out


def test_plan_error_is_one_line_and_status_1(capsys):
    code, out, err = run_cli(capsys, "plan", "--os", "windows", "--address", "10.3.0.1")
    assert code == 1 and out == ""
    assert err.startswith("provisioning: error: --address '10.3.0.1'") and err.count("\n") == 1


def test_module_entry_point():
    done = subprocess.run([sys.executable, "-m", "provisioning", "plan", "--os", "windows"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == windows.render(Plan())


@pytest.fixture
def linux_calls(monkeypatch):
    from provisioning import linux
    calls = []
    for name in ("create_persistent", "delete_persistent", "set_ipv4", "add_ipv6", "set_mtu",
                 "set_up"):
        monkeypatch.setattr(linux, name, lambda *a, _n=name, **k: calls.append((_n, a, k)))
    return calls


def test_up_creates_then_configures(capsys, linux_calls):
    code, _, err = run_cli(capsys, "up", "mirror0", "--owner", "root", "--group", "0",
                           "--no-offload", "--address", "198.18.0.1/24",
                           "--address6", "2001:db8::1/64", "--mtu", "1400")
    assert code == 0, err
    assert linux_calls == [
        ("create_persistent", ("mirror0",), {"owner": 0, "group": 0, "offload": False}),
        ("set_mtu", ("mirror0", 1400), {}),
        ("set_ipv4", ("mirror0", ipaddress.IPv4Interface("198.18.0.1/24")), {}),
        ("set_up", ("mirror0",), {}),
        ("add_ipv6", ("mirror0", V6), {})]


def test_up_minimal(capsys, linux_calls):
    assert run_cli(capsys, "up", "mirror0")[0] == 0
    assert linux_calls == [("create_persistent", ("mirror0",),
                            {"owner": None, "group": None, "offload": True}),
                           ("set_up", ("mirror0",), {})]


def test_up_unknown_user_or_group(capsys, linux_calls):
    code, _, err = run_cli(capsys, "up", "mirror0", "--owner", "no-such-user-x")
    assert code == 1 and "unknown user 'no-such-user-x'" in err and linux_calls == []
    code, _, err = run_cli(capsys, "up", "mirror0", "--group", "no-such-group-x")
    assert code == 1 and "unknown group 'no-such-group-x'" in err


def test_up_bad_address_fails_before_creating(capsys, linux_calls):
    code, _, err = run_cli(capsys, "up", "mirror0", "--address", "2001:db8::1/64")
    assert code == 2 and "IPv4" in err and linux_calls == []   # a bad argument: 2


def test_up_failure_after_create_removes_the_device(capsys, monkeypatch, linux_calls):
    from provisioning import linux

    def refuse(*a, **k):
        raise linux.ProvisionError("SIOCSIFMTU on mirror0: Invalid argument")
    monkeypatch.setattr(linux, "set_mtu", refuse)
    code, _, err = run_cli(capsys, "up", "mirror0", "--mtu", "70000")
    assert code == 1 and err == "provisioning: error: SIOCSIFMTU on mirror0: Invalid argument\n"
    assert [c[0] for c in linux_calls] == ["create_persistent", "delete_persistent"]


def test_down(capsys, linux_calls):
    assert run_cli(capsys, "down", "mirror0")[0] == 0
    assert linux_calls == [("delete_persistent", ("mirror0",), {})]


def test_down_error_is_reported(capsys, monkeypatch):
    from provisioning import linux

    def missing(name):
        raise linux.ProvisionError(f"{name} does not exist")
    monkeypatch.setattr(linux, "delete_persistent", missing)
    assert run_cli(capsys, "down", "nope0")[2] == "provisioning: error: nope0 does not exist\n"


# ---- issue 18: encodings, TAP-mode IPv6, the engine command --------------------------
def test_a_utf16_plan_from_windows_powershell_loads(tmp_path):
    """Defect 9: Windows PowerShell 5.1's `... > plan.json` writes UTF-16LE with a BOM."""
    plan = Plan(address6=V6, mode="tap")
    for encoding in ("utf-16-le", "utf-16-be"):
        path = tmp_path / f"{encoding}.json"
        bom = b"\xff\xfe" if encoding.endswith("le") else b"\xfe\xff"
        path.write_bytes(bom + plan.dumps().encode(encoding))
        assert load(str(path)) == plan


def test_a_plan_in_no_known_encoding_is_one_clear_line(tmp_path, capsys):
    path = tmp_path / "plan.json"
    path.write_bytes(b'{"name": "\xe9\xff"}')
    with pytest.raises(PlanError, match=r"not UTF-8 or UTF-16 text \(save it as UTF-8\)"):
        load(str(path))
    code, out, err = run_cli(capsys, "plan", "--os", "windows", "--plan", str(path))
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err


def test_ipv6_in_tap_mode_gets_its_real_prefix_and_no_route_via_fe80_8():
    """Defect 10: in TAP mode nothing answers neighbour solicitations for fe80::8 (the
    driver does only in TUN mode), so OpenVPN's TUN-mode /128 + route would blackhole
    every mirrored IPv6 packet; the engine answers NS for the prefix itself."""
    configure = windows.commands(Plan(address6=V6, mode="tap"))["configure"]
    assert configure[2:-1] == [
        ["netsh", "interface", "ipv6", "set", "address", "interface=mirror0",
         "address=2001:db8::1/64", "store=persistent"],
        ["netsh", "interface", "ipv6", "set", "subinterface", "mirror0", "mtu=1500",
         "store=persistent"]]
    assert not any("fe80::8" in part for argv in configure for part in argv)


def test_the_mode_is_a_plan_field_and_tap_needs_tap_windows(tmp_path):
    assert Plan().mode == "tun"
    with pytest.raises(PlanError, match="mode"):
        Plan(driver="wintun", mode="tap")
    with pytest.raises(PlanError, match="mode"):
        Plan(mode="tap0901")


@pytest.mark.parametrize("plan,expect", [
    (Plan(), "python -m engine --driver tap-windows --mode tun --device mirror0 "
             "--address 10.3.0.1/24"),
    (Plan(address6=V6, mode="tap"), "python -m engine --driver tap-windows --mode tap "
                                    "--device mirror0 --address 10.3.0.1/24 "
                                    "--address6 2001:db8::1/64"),
    (Plan(driver="wintun", address6=V6), "python -m engine --driver wintun --mode tun "
                                         "--device mirror0 --address 10.3.0.1/24 "
                                         "--address6 2001:db8::1/64"),
])
def test_the_printed_engine_command_carries_every_address(plan, expect):
    """Defect 14: without --address6 the engine drops every IPv6 frame as not mirrored."""
    assert subprocess.list2cmdline(windows.engine_command(plan)) == expect
    assert windows.render(plan).splitlines()[-1] == "#   " + expect


def test_the_engine_accepts_the_command_it_is_given():
    from engine.cli import build_parser, config_from_args
    cfg = config_from_args(build_parser().parse_args(
        windows.engine_command(Plan(address6=V6, mode="tap"))[3:]))
    assert (cfg.driver, cfg.mode, cfg.device, str(cfg.address), str(cfg.address6)) == \
        ("tap-windows", "tap", "mirror0", "10.3.0.1/24", "2001:db8::1/64")
