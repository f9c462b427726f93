"""tools/provision.ps1 parsed with the tree-sitter PowerShell grammar (no PowerShell here):
it must parse cleanly, and the commands it would run for a plan must be the ones
`python -m provisioning plan --os windows` prints for that plan. The script's templates,
template keys, step order, defaults and driver lists are read from its syntax tree and
compared with provisioning/windows.py, so a change on either side alone fails here."""
from __future__ import annotations

import ipaddress
import os
import subprocess
import sys

import pytest

ts = pytest.importorskip("tree_sitter")
tsp = pytest.importorskip("tree_sitter_powershell")

from engine.tun import tap_windows  # noqa: E402
from provisioning import windows  # noqa: E402
from provisioning.plan import DRIVERS, Plan  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tools", "provision.ps1")


@pytest.fixture(scope="module")
def tree():
    src = open(SCRIPT, "rb").read()
    parser = ts.Parser(ts.Language(tsp.language()))
    return parser.parse(src), src


def nodes(node, pred):
    if pred(node):
        yield node
    for child in node.children:
        yield from nodes(child, pred)


def text(src, node) -> str:
    return src[node.start_byte:node.end_byte].decode()


def literal(src, node) -> str:
    """The value of a single-quoted PowerShell string ('' is an escaped quote)."""
    raw = text(src, node)
    assert raw.startswith("'") and raw.endswith("'"), f"not a verbatim string: {raw}"
    return raw[1:-1].replace("''", "'")


def strings(src, node):
    return [literal(src, n) for n in nodes(node, lambda n: n.type == "string_literal")]


def assignment(tree, src, variable):
    root, = [tree.root_node]
    return next(nodes(root, lambda n: n.type == "assignment_expression"
                      and text(src, n).startswith(variable + " ")))


def hash_entries(src, node):
    """{key: value node} of the first hash literal under `node`."""
    out = {}
    body = next(nodes(node, lambda n: n.type == "hash_literal_body"))
    for entry in (c for c in body.children if c.type == "hash_entry"):
        key = entry.child_by_field_name("key") or entry.children[0]
        k = text(src, key).strip("'")
        out[k] = next(c for c in entry.children if c.type == "pipeline")
    return out


def function(tree, src, name):
    return next(nodes(tree.root_node, lambda n: n.type == "function_statement"
                      and any(c.type == "function_name" and text(src, c) == name
                              for c in n.children)))


# ---- syntax ------------------------------------------------------------------------
def test_parses_without_errors(tree):
    t, src = tree
    bad = [(n.type, n.start_point) for n in nodes(t.root_node,
                                                   lambda n: n.type == "ERROR" or n.is_missing)]
    assert not t.root_node.has_error and bad == []


def test_a_broken_script_would_be_caught():
    parser = ts.Parser(ts.Language(tsp.language()))
    assert parser.parse(b"function f { if ($x -eq 1) { 'a' }\n").root_node.has_error


def test_strict_and_stopping(tree):
    t, src = tree
    commands = [text(src, n) for n in nodes(t.root_node, lambda n: n.type == "command")]
    assert "Set-StrictMode -Version Latest" in commands
    assert strings(src, assignment(t, src, "$ErrorActionPreference")) == ["Stop"]
    binding = next(nodes(t.root_node, lambda n: n.type == "attribute"
                         and text(src, n).startswith("[CmdletBinding(")))
    assert "SupportsShouldProcess = $true" in text(src, binding)


def test_should_process_guards_every_command(tree):
    t, src = tree
    invoke = function(t, src, "Invoke-Step")
    assert "$PSCmdlet.ShouldProcess(" in text(src, invoke)
    # the only places that start programs or rename are behind ShouldProcess
    rename = [n for n in nodes(t.root_node, lambda n: n.type == "command"
                               and text(src, n).startswith("Rename-NetAdapter"))]
    assert len(rename) == 1
    parent = rename[0]
    while parent.type != "if_statement":
        parent = parent.parent
    assert "ShouldProcess" in text(src, parent.child_by_field_name("condition") or parent)


def test_checks_elevation(tree):
    t, src = tree
    body = text(src, function(t, src, "Assert-Elevated"))
    assert "WindowsBuiltInRole]::Administrator" in body and "elevated" in body


# ---- the same commands as provisioning/windows.py ----------------------------------
def ps_templates(tree):
    t, src = tree
    entries = hash_entries(src, assignment(t, src, "$Templates"))
    return {k: strings(src, v) for k, v in entries.items()}


def test_templates_are_identical(tree):
    assert ps_templates(tree) == windows.TEMPLATES


def test_resolved_plan_has_the_same_keys(tree):
    t, src = tree
    resolve = function(t, src, "Resolve-Plan")
    values = next(nodes(resolve, lambda n: n.type == "assignment_expression"
                        and text(src, n).startswith("$values = @{")))
    body = next(nodes(values, lambda n: n.type == "hash_literal_body"))
    keys = {text(src, e.children[0]) for e in body.children if e.type == "hash_entry"}
    assert keys == set(windows.values(Plan(address6=ipaddress.IPv6Interface("2001:db8::1/64"))))


def ps_steps(tree, fn):
    """Template names a function runs, in order (every string literal that names one)."""
    t, src = tree
    return [s for s in strings_any(src, function(t, src, fn)) if s in windows.TEMPLATES]


def strings_any(src, node):
    return [text(src, n).strip("'\"") for n in nodes(node, lambda n: n.type == "string_literal")]


def with_fallbacks(names):
    """A tapctl step and, right after it, what the script runs instead without tapctl."""
    return [x for n in names for x in (n, windows.FALLBACK.get(n)) if x]


def test_each_action_runs_the_same_steps_in_the_same_order(tree):
    py = windows.steps(Plan(address6=ipaddress.IPv6Interface("2001:db8::1/64")))
    assert ps_steps(tree, "Install-Adapter") == with_fallbacks(py["install"])
    assert ps_steps(tree, "Set-AdapterConfig") == list(py["configure"])
    assert ps_steps(tree, "Remove-Adapter") == with_fallbacks(py["remove"])
    v4_only = windows.steps(Plan())["configure"]
    assert list(v4_only) == [s for s in ps_steps(tree, "Set-AdapterConfig")
                             if s not in windows.CONFIGURE_V6]


def test_defaults_and_lists_match_python(tree):
    t, src = tree
    params = {}
    block = next(c for c in t.root_node.children if c.type == "param_block")
    for p in nodes(block, lambda n: n.type == "script_parameter"):
        var = next(c for c in p.children if c.type == "variable")
        default = [n for n in p.children if n.type == "script_parameter_default"]
        sets = [n for n in nodes(p, lambda n: n.type == "attribute"
                                 and text(src, n).startswith("[ValidateSet("))]
        params[text(src, var)] = (
            text(src, default[0]).lstrip("= ").strip("'") if default else None,
            strings_any(src, sets[0]) if sets else None)
    plan = Plan()
    assert params["$Name"][0] == plan.name
    assert params["$Address"][0] == str(plan.address)
    assert params["$Driver"] == (plan.driver, [d for d in DRIVERS if d != "wintun"])
    assert params["$Action"][1] == ["Install", "Remove", "Status", "Configure"]
    assert params["$DevconPath"][0] == windows.DEFAULT_DEVCON
    assert params["$Mtu"][0] == str(plan.mtu)
    assert params["$Address6"][0] == "" and params["$Plan"][0] is None
    infs = hash_entries(src, assignment(t, src, "$DefaultInf"))
    assert {k: strings(src, v)[0] for k, v in infs.items()} == windows.DEFAULT_INF
    assert strings(src, assignment(t, src, "$TapHardwareIds")) == list(tap_windows.COMPONENT_IDS)


def expand_like_the_script(templates, step, values):
    # Expand-Template: every {Key} replaced by its value, one key at a time.
    out = []
    for part in templates[step]:
        for key, value in values.items():
            part = part.replace("{" + key + "}", value)
        out.append(part)
    return out


@pytest.mark.parametrize("plan", [
    Plan(),
    Plan(name="mirror1", driver="tap0801", address=ipaddress.IPv4Interface("198.18.9.1/15"),
         mtu=1400),
    Plan(address6=ipaddress.IPv6Interface("2001:db8:0:7::1/64"), mtu=1280),
    Plan(address6=ipaddress.IPv6Interface("2001:db8:0:7::1/64"), mode="tap"),
], ids=["default", "tap0801", "ipv6", "ipv6-tap"])
def test_script_commands_equal_the_printed_plan(tree, tmp_path, plan):
    path = tmp_path / "plan.json"
    plan.dump(str(path))
    done = subprocess.run([sys.executable, "-m", "provisioning", "plan", "--os", "windows",
                           "--plan", str(path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    printed = [line for line in done.stdout.splitlines() if not line.startswith("#")]
    templates = ps_templates(tree)
    values = {**windows.values(plan), **windows.RUNTIME}
    script = [subprocess.list2cmdline(expand_like_the_script(templates, step, values))
              for action in ("Install-Adapter", "Set-AdapterConfig", "Remove-Adapter")
              for step in ps_steps(tree, action)
              if (step not in windows.CONFIGURE_V6 or plan.address6 is not None)
              and not (step == "route6" and plan.mode == "tap")    # the script's `if`s
              and not (step in windows.FALLBACK and plan.driver != "tap0901")   # Test-Tapctl,
              and not (step in windows.FALLBACK.values() and plan.driver == "tap0901")]
    assert script == printed


# ---- issue 18 ------------------------------------------------------------------------
def test_every_count_is_taken_of_an_array(tree):
    """Defect 8: under Set-StrictMode -Version Latest, `.Count` of what a pipeline returns
    throws when it returned 0 or 1 objects (no array then): every variable whose Count is
    read is assigned from @(...) only."""
    t, src = tree
    counted = {text(src, n).split(".")[0] for n in nodes(
        t.root_node, lambda n: n.type == "member_access" and text(src, n).endswith(".Count"))}
    counted = {v for v in counted if v.startswith("$") and v not in ("$argv",)}
    assert "$all" in counted
    for var in counted:
        for n in nodes(t.root_node, lambda n: n.type == "assignment_expression"
                       and text(src, n).startswith(var + " ")):
            value = text(src, n).split("=", 1)[1].strip()
            assert value.startswith("@(") or " -split " in value, \
                f"{var} = {value}: wrap it in @(...)"   # (-split always gives an array)


def test_a_reboot_exit_code_is_success(tree):
    """Defect 11: devcon exit code 1 means done, reboot required (devcon.h EXIT_REBOOT);
    treating it as failure aborts before the rename, and a re-run installs a second
    adapter."""
    t, src = tree
    entries = hash_entries(src, assignment(t, src, "$RebootExitCodes"))
    assert {k: int(text(src, v)) for k, v in entries.items()} == windows.REBOOT_EXIT_CODES
    invoke = text(src, function(t, src, "Invoke-Step"))
    assert "$RebootExitCodes.ContainsKey($Step)" in invoke
    assert "$LASTEXITCODE -eq $RebootExitCodes[$Step]" in invoke
    assert invoke.index("$RebootExitCodes") < invoke.index("throw")


def test_the_printed_engine_command_is_the_template_with_every_address(tree):
    """Defect 14: Status prints the engine command from the 'engine' template, plus
    'engine6' when the plan has IPv6 (provisioning/windows.py engine_command)."""
    t, src = tree
    show = text(src, function(t, src, "Show-Adapter"))
    assert "Expand-Template 'engine' $Values" in show
    assert "if ($Values.Address6) { $start += @(Expand-Template 'engine6' $Values) }" in show
    assert "EngineAddress" not in text(src, t.root_node)


def test_tap_mode_adds_no_route_via_fe80_8(tree):
    """Defect 10: the route6 step runs only when the plan is not TAP mode."""
    t, src = tree
    config = function(t, src, "Set-AdapterConfig")
    route = next(nodes(config, lambda n: n.type == "string_literal" and text(src, n) == "'route6'"))
    guards = []
    while route is not None and route != config:
        if route.type == "if_statement":
            guards.append(text(src, route.child_by_field_name("condition") or route)[:60])
        route = route.parent
    assert any("$Values.Mode -ne 'tap'" in g for g in guards), guards
    params = text(src, next(c for c in t.root_node.children if c.type == "param_block"))
    assert "[ValidateSet('tun', 'tap')]\n    [string] $Mode = 'tun'" in params


def test_tapctl_is_preferred_for_tap0901_and_creates_the_adapter_under_its_name(tree):
    """Build 4: OpenVPN 2.5+ ships tapctl, not devcon. Test-Tapctl picks it for tap0901
    when it is found; tapctl names the adapter itself, so that branch returns before the
    devcon path's wait-and-rename."""
    t, src = tree
    test = text(src, function(t, src, "Test-Tapctl"))
    assert "$Values.HwId -eq 'tap0901'" in test and "Get-Command $Values.Tapctl" in test
    install = text(src, function(t, src, "Install-Adapter"))
    branch = install[install.index("if (Test-Tapctl $Values)"):]
    assert branch.index("Invoke-Step 'tapctl'") < branch.index("return") \
        < branch.index("Invoke-Step 'install'") < branch.index("Rename-NetAdapter")
    assert windows.TEMPLATES["tapctl"][1:4] == ["create", "--hwid", "root\\tap0901"]


def test_configure_allows_inbound_traffic_from_the_mirror_prefixes_once(tree):
    """Build 4: a mirrored echo request is inbound on an unidentified (public) network."""
    t, src = tree
    config = text(src, function(t, src, "Set-AdapterConfig"))
    assert "if (-not (Get-NetFirewallRule -DisplayName $Values.Rule" in config
    assert "Invoke-Step 'firewall' $Values" in config
    remove = text(src, function(t, src, "Remove-Adapter"))
    assert "Invoke-Step 'unfirewall' $Values" in remove
    vals = windows.values(Plan(address=ipaddress.IPv4Interface("198.18.0.1/15"),
                               address6=ipaddress.IPv6Interface("2001:db8:0:7::1/64")))
    assert windows.expand("firewall", vals)[5:] == [
        "name=ip-mirror-mirror0", "dir=in", "action=allow",
        "remoteip=198.18.0.0/15,2001:db8:0:7::/64", "profile=any"]


def test_status_says_when_the_adapter_lacks_the_mirrors_address(tree):
    """Build 4: DHCP or APIPA addresses otherwise fail silently (no ARP answer)."""
    t, src = tree
    show = text(src, function(t, src, "Show-Adapter"))
    assert "Get-NetIPAddress -InterfaceAlias $Values.Name -AddressFamily IPv4" in show
    assert '-eq $Values.Interface' in show and "Write-Warning" in show
