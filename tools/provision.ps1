<#
.SYNOPSIS
    Install, configure, inspect or remove the TAP-Windows adapter of the IP mirror engine.

.DESCRIPTION
    Thin on purpose: the commands come from $Templates, a copy of TEMPLATES in
    provisioning/windows.py (tests/test_provision_ps1.py fails if they differ), filled
    from one plan: adapter name, driver (tap0901 or tap0801), the engine's mode (tun, or
    tap for Ethernet frames), IPv4 address/prefix, optional IPv6 address/prefix, MTU. `python -m provisioning plan --os windows`
    prints the same commands for the same plan.

    The IPv4 address set here must be the address the engine passes to the driver in
    CONFIG_TUN (python -m engine --address, default 10.3.0.1/24): the driver answers ARP
    only for requests from that address.

    Installing prefers OpenVPN's tapctl (2.5+: tapctl create --hwid root\tap0901 --name
    NAME) and falls back to devcon/tapinstall where tapctl is not found, and for tap0801.
    Configure also adds an inbound firewall rule for the mirror prefixes: a mirrored echo
    request arrives as inbound traffic on an unidentified (public) network.

    Wintun needs no provisioning: the engine creates that adapter itself.

.EXAMPLE
    .\tools\provision.ps1 -Action Install -DevconPath C:\tap\tapinstall.exe -InfPath C:\tap\OemVista.inf
.EXAMPLE
    .\tools\provision.ps1 -Action Install -Plan plan.json -WhatIf
.EXAMPLE
    .\tools\provision.ps1 -Action Status
#>
[CmdletBinding(SupportsShouldProcess = $true, DefaultParameterSetName = 'Fields')]
param(
    [ValidateSet('Install', 'Remove', 'Status', 'Configure')]
    [string] $Action = 'Status',

    [Parameter(ParameterSetName = 'Plan', Mandatory = $true)]
    [string] $Plan,

    [Parameter(ParameterSetName = 'Fields')]
    [ValidateSet('tap0901', 'tap0801')]
    [string] $Driver = 'tap0901',

    [Parameter(ParameterSetName = 'Fields')]
    [string] $Name = 'mirror0',

    [Parameter(ParameterSetName = 'Fields')]
    [ValidateSet('tun', 'tap')]
    [string] $Mode = 'tun',

    [Parameter(ParameterSetName = 'Fields')]
    [string] $Address = '10.3.0.1/24',

    [Parameter(ParameterSetName = 'Fields')]
    [string] $Address6 = '',

    [Parameter(ParameterSetName = 'Fields')]
    [int] $Mtu = 1500,

    [string] $InfPath = '',

    [string] $DevconPath = 'devcon.exe',

    [string] $TapctlPath = 'tapctl.exe'
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

# Keep identical to TEMPLATES in provisioning/windows.py (the test compares them).
$Templates = @{
    'tapctl'   = @('{Tapctl}', 'create', '--hwid', 'root\tap0901', '--name', '{Name}')
    'install'  = @('{Devcon}', 'install', '{Inf}', '{HwId}')
    'tapctl_remove' = @('{Tapctl}', 'delete', '{Name}')
    'remove'   = @('{Devcon}', 'remove', '@{InstanceId}')
    'address'  = @('netsh', 'interface', 'ipv4', 'set', 'address', 'name={Name}', 'source=static', 'address={Address}', 'mask={Mask}')
    'mtu'      = @('netsh', 'interface', 'ipv4', 'set', 'subinterface', '{Name}', 'mtu={Mtu}', 'store=persistent')
    'address6' = @('netsh', 'interface', 'ipv6', 'set', 'address', 'interface={Name}', 'address={Address6}/{Prefix6}', 'store=persistent')
    'route6'   = @('netsh', 'interface', 'ipv6', 'add', 'route', 'prefix={Network6}', 'interface={Name}', 'nexthop=fe80::8', 'store=persistent')
    'mtu6'     = @('netsh', 'interface', 'ipv6', 'set', 'subinterface', '{Name}', 'mtu={Mtu}', 'store=persistent')
    'firewall' = @('netsh', 'advfirewall', 'firewall', 'add', 'rule', 'name={Rule}', 'dir=in', 'action=allow', 'remoteip={Remote}', 'profile=any')
    'unfirewall' = @('netsh', 'advfirewall', 'firewall', 'delete', 'rule', 'name={Rule}')
    'engine'   = @('python', '-m', 'engine', '--driver', '{Engine}', '--mode', '{Mode}', '--device', '{Name}', '--address', '{Interface}')
    'engine6'  = @('--address6', '{Interface6}')
}
# devcon.h EXIT_REBOOT: the step worked and a reboot finishes it (REBOOT_EXIT_CODES in Python)
$RebootExitCodes = @{ 'install' = 1; 'remove' = 1 }
$DefaultInf = @{ 'tap0901' = 'OemVista.inf'; 'tap0801' = 'OemWin2k.inf' }
$TapHardwareIds = @('tap0801', 'tap0901', 'root\tap0901')   # what the engine looks for

function Get-PrefixBytes([int] $Count, [int] $Prefix) {
    # The first $Prefix bits set, as $Count bytes (a netmask for $Count = 4).
    foreach ($i in 0..($Count - 1)) {
        $bits = [Math]::Min(8, [Math]::Max(0, $Prefix - 8 * $i))
        [byte](256 - [Math]::Pow(2, 8 - $bits))
    }
}

function Split-Interface([string] $Text, [string] $Family, [string] $Field) {
    # '10.3.0.1/24' -> address and prefix, with the same rules as provisioning/plan.py.
    $parts = $Text -split '/'
    $ip = $null
    if ($parts.Count -ne 2 -or -not [System.Net.IPAddress]::TryParse($parts[0], [ref] $ip) -or
            $ip.AddressFamily -ne $Family -or $parts[1] -notmatch '^\d{1,3}$') {
        throw "$Field '$Text': give an address with a prefix length, e.g. 10.3.0.1/24"
    }
    $max = 32
    if ($Family -eq 'InterNetworkV6') { $max = 128 }
    $prefix = [int] $parts[1]
    if ($prefix -gt $max - 2) { throw "$Field '$Text': the mirror needs a prefix of /$($max - 2) or shorter" }
    @{ Ip = $ip; Prefix = $prefix }
}

function Read-PlanFields {
    # The plan as a hashtable: from -Plan FILE (the JSON provisioning/plan.py writes) or
    # from the parameters.
    if ($PSCmdlet.ParameterSetName -eq 'Plan') {
        $json = Get-Content -Raw -LiteralPath $Plan | ConvertFrom-Json
        $fields = @{}
        foreach ($p in $json.PSObject.Properties) { $fields[$p.Name] = $p.Value }
        foreach ($required in 'name', 'driver', 'address', 'mtu') {
            if (-not $fields.ContainsKey($required)) { throw "plan ${Plan}: missing field '$required'" }
        }
        if (-not $fields.ContainsKey('address6') -or $null -eq $fields['address6']) { $fields['address6'] = '' }
        if (-not $fields.ContainsKey('mode')) { $fields['mode'] = 'tun' }
        return $fields
    }
    @{ name = $Name; driver = $Driver; mode = $Mode; address = $Address; address6 = $Address6; mtu = $Mtu }
}

function Resolve-Plan {
    # The template keys: the same as values() in provisioning/windows.py.
    $f = Read-PlanFields
    if ($f.driver -eq 'wintun') { throw "wintun needs no provisioning: the engine creates the adapter (python -m engine --driver wintun)" }
    if ($f.driver -notin @('tap0901', 'tap0801')) { throw "driver '$($f.driver)': tap0901 or tap0801" }
    if ($f.name -cnotmatch '^[A-Za-z0-9._-]{1,15}$') { throw "name '$($f.name)': 1 to 15 letters, digits, '.', '_' or '-'" }
    if ($f.mode -notin @('tun', 'tap')) { throw "mode '$($f.mode)': tun or tap" }
    $v4 = Split-Interface $f.address 'InterNetwork' 'address'
    $low = 576
    $values = @{
        Name = $f.name; HwId = $f.driver; Devcon = $DevconPath; Inf = $InfPath; Tapctl = $TapctlPath
        Rule = "ip-mirror-$($f.name)"; Remote = ''
        Address = $v4.Ip.ToString(); Mask = (Get-PrefixBytes 4 $v4.Prefix) -join '.'
        Mtu = [string] $f.mtu; Address6 = ''; Network6 = ''; Prefix6 = ''
        Mode = $f.mode; Interface = $f.address; Interface6 = ''; Engine = 'tap-windows'
    }
    if (-not $values.Inf) { $values.Inf = $DefaultInf[$f.driver] }
    $net4 = [byte[]] $v4.Ip.GetAddressBytes()
    $mask4 = @(Get-PrefixBytes 4 $v4.Prefix)
    foreach ($i in 0..3) { $net4[$i] = $net4[$i] -band $mask4[$i] }
    $values.Remote = '{0}/{1}' -f ([System.Net.IPAddress]::new($net4)).ToString(), $v4.Prefix
    if ($f.address6) {
        if ($f.driver -eq 'tap0801') { throw "address6: tap0801 passes no IPv6 in TUN mode" }
        $v6 = Split-Interface $f.address6 'InterNetworkV6' 'address6'
        $net = [byte[]] $v6.Ip.GetAddressBytes()
        $mask = @(Get-PrefixBytes 16 $v6.Prefix)
        foreach ($i in 0..15) { $net[$i] = $net[$i] -band $mask[$i] }
        $values.Address6 = $v6.Ip.ToString()
        $values.Network6 = '{0}/{1}' -f ([System.Net.IPAddress]::new($net)).ToString(), $v6.Prefix
        # TUN mode: /128 and a route via fe80::8 (OpenVPN); TAP mode: the real, on-link prefix
        $values.Prefix6 = '128'
        if ($f.mode -eq 'tap') { $values.Prefix6 = [string] $v6.Prefix }
        $values.Interface6 = $f.address6
        $values.Remote = '{0},{1}' -f $values.Remote, $values.Network6
        $low = 1280
    }
    if ([int] $f.mtu -lt $low -or [int] $f.mtu -gt 1500) { throw "mtu $($f.mtu): from $low to 1500" }
    $values
}

function Expand-Template([string] $Step, [hashtable] $Values) {
    foreach ($part in $Templates[$Step]) {
        foreach ($key in $Values.Keys) { $part = $part.Replace('{' + $key + '}', [string] $Values[$key]) }
        $part
    }
}

function Invoke-Step([string] $Step, [hashtable] $Values) {
    $argv = @(Expand-Template $Step $Values)
    $line = $argv -join ' '
    if ($PSCmdlet.ShouldProcess($Values.Name, $line)) {
        $rest = @()
        if ($argv.Count -gt 1) { $rest = $argv[1..($argv.Count - 1)] }
        & $argv[0] @rest
        if ($RebootExitCodes.ContainsKey($Step) -and $LASTEXITCODE -eq $RebootExitCodes[$Step]) {
            Write-Warning "'$line' succeeded; Windows needs a reboot to finish it"
        } elseif ($LASTEXITCODE -ne 0) {
            throw "'$line' failed with exit code $LASTEXITCODE"
        }
    }
}

function Assert-Elevated {
    $principal = [Security.Principal.WindowsPrincipal] [Security.Principal.WindowsIdentity]::GetCurrent()
    $admin = $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)
    if (-not $admin -and -not $WhatIfPreference) {
        throw "-Action $Action changes drivers and adapters: run it from an elevated PowerShell (Run as Administrator), or add -WhatIf to only see the commands."
    }
}

function Get-TapAdapter {
    # TAP adapters by hardware id, the way the engine finds them (registry ComponentId).
    @(Get-NetAdapter -IncludeHidden -ErrorAction SilentlyContinue |
        Where-Object { $TapHardwareIds -contains ([string] $_.ComponentID).ToLowerInvariant() })
}

function Test-Tapctl([hashtable] $Values) {
    # tapctl installs tap0901 only (root\tap0901); elsewhere devcon/tapinstall does it.
    $Values.HwId -eq 'tap0901' -and [bool] (Get-Command $Values.Tapctl -ErrorAction SilentlyContinue)
}

function Find-PlanAdapter([hashtable] $Values) {
    $found = @(Get-TapAdapter | Where-Object { $_.Name -eq $Values.Name })
    if ($found.Count -eq 0) {
        $other = Get-NetAdapter -Name $Values.Name -ErrorAction SilentlyContinue
        if ($other) { throw "adapter '$($Values.Name)' exists but is not a TAP-Windows adapter ($($other.InterfaceDescription))" }
        return $null
    }
    $found[0]
}

function Install-Adapter([hashtable] $Values) {
    $adapter = Find-PlanAdapter $Values
    if ($adapter) {
        Write-Host "Adapter '$($Values.Name)' exists ($($adapter.ComponentID)); not installing another."
        return
    }
    if (Test-Tapctl $Values) {
        Invoke-Step 'tapctl' $Values   # creates the adapter under its name: nothing to rename
        return
    }
    $before = @(Get-TapAdapter | ForEach-Object { $_.InterfaceGuid })
    Invoke-Step 'install' $Values
    if ($WhatIfPreference) { return }
    $deadline = (Get-Date).AddSeconds(60)   # Windows takes a while to show a new adapter
    do {
        Start-Sleep -Seconds 1
        $new = @(Get-TapAdapter | Where-Object { $before -notcontains $_.InterfaceGuid })
    } until ($new.Count -gt 0 -or (Get-Date) -gt $deadline)
    if ($new.Count -eq 0) { throw "the new $($Values.HwId) adapter did not appear within 60 s; see C:\Windows\INF\setupapi.dev.log" }
    if ($PSCmdlet.ShouldProcess($new[0].Name, "Rename-NetAdapter -NewName $($Values.Name)")) {
        Rename-NetAdapter -Name $new[0].Name -NewName $Values.Name
    }
}

function Set-AdapterConfig([hashtable] $Values) {
    if (-not $WhatIfPreference -and -not (Find-PlanAdapter $Values)) {
        throw "no TAP-Windows adapter named '$($Values.Name)': run -Action Install first"
    }
    foreach ($step in 'address', 'mtu') { Invoke-Step $step $Values }
    if ($Values.Address6) {
        Invoke-Step 'address6' $Values
        if ($Values.Mode -ne 'tap') {   # TAP mode: the prefix is on-link, the engine answers NS
            $route = Get-NetRoute -DestinationPrefix $Values.Network6 -InterfaceAlias $Values.Name -ErrorAction SilentlyContinue
            if (-not $route) { Invoke-Step 'route6' $Values }
        }
        Invoke-Step 'mtu6' $Values
    }
    if (-not (Get-NetFirewallRule -DisplayName $Values.Rule -ErrorAction SilentlyContinue)) {
        Invoke-Step 'firewall' $Values
    }
}

function Remove-Adapter([hashtable] $Values) {
    $adapter = Find-PlanAdapter $Values
    if (-not $adapter) {
        Write-Host "No TAP-Windows adapter named '$($Values.Name)'; nothing to remove."
        return
    }
    if (Test-Tapctl $Values) {
        Invoke-Step 'tapctl_remove' $Values
    } else {
        $Values.InstanceId = $adapter.PnPDeviceID
        Invoke-Step 'remove' $Values
    }
    if (Get-NetFirewallRule -DisplayName $Values.Rule -ErrorAction SilentlyContinue) {
        Invoke-Step 'unfirewall' $Values
    }
}

function Show-Adapter([hashtable] $Values) {
    $all = @(Get-TapAdapter)   # @(): 0 or 1 adapters are no array, and StrictMode has no .Count then
    if ($all.Count -eq 0) { Write-Host 'No TAP-Windows adapter is installed.' }
    foreach ($a in $all) {
        $ips = @(Get-NetIPAddress -InterfaceAlias $a.Name -ErrorAction SilentlyContinue |
            ForEach-Object { '{0}/{1}' -f $_.IPAddress, $_.PrefixLength }) -join ', '
        Write-Host ("{0,-16} {1} {2,-13} {3,-12} {4}" -f $a.Name, $a.InterfaceGuid, $a.ComponentID, $a.Status, $ips)
    }
    $adapter = Find-PlanAdapter $Values
    if ($adapter) {
        Write-Host "The engine will open adapter '$($adapter.Name)', GUID $($adapter.InterfaceGuid): \\.\Global\$($adapter.InterfaceGuid).tap"
        # The driver answers ARP only for requests from the engine's --address; an adapter
        # left to DHCP has an APIPA (169.254/16) or another network's address instead.
        $have = @(Get-NetIPAddress -InterfaceAlias $Values.Name -AddressFamily IPv4 -ErrorAction SilentlyContinue)
        if (-not @($have | Where-Object { "$($_.IPAddress)/$($_.PrefixLength)" -eq $Values.Interface })) {
            $shown = @($have | ForEach-Object { "$($_.IPAddress)/$($_.PrefixLength) ($($_.PrefixOrigin))" }) -join ', '
            if (-not $shown) { $shown = 'no IPv4 address' }
            Write-Warning "adapter '$($Values.Name)' has $shown, not $($Values.Interface): run -Action Configure"
        }
        $start = @(Expand-Template 'engine' $Values)
        if ($Values.Address6) { $start += @(Expand-Template 'engine6' $Values) }
        Write-Host "Start it with: $($start -join ' ')"
    }
}

$values = Resolve-Plan
if ($Action -ne 'Status') { Assert-Elevated }
switch ($Action) {
    'Install'   { Install-Adapter $values; Set-AdapterConfig $values; Show-Adapter $values }
    'Configure' { Set-AdapterConfig $values; Show-Adapter $values }
    'Remove'    { Remove-Adapter $values }
    'Status'    { Show-Adapter $values }
}
