# Shared by the Pester tests (dot-sourced in each file's BeforeAll, after the agent script).
#   - stubs for Windows-only commands, so Pester can mock them on any pwsh;
#   - a fake BitLocker WMI provider (Win32_EncryptableVolume) built from a fixture inventory;
#   - a fake appliance behind Send-ApiRequest that records every body it receives;
#   - a call log shared by both, to check the order of rotation steps.
# Tests run with Pester 5 under PowerShell 7 (any OS) or Windows PowerShell 5.1.

$global:NuFixtureRoot = Join-Path (Resolve-Path (Join-Path $PSScriptRoot '../..')).Path 'tests/agent-fixtures'

# ---- stubs (only where the real command does not exist, e.g. pwsh on Linux) ----
if (-not (Get-Command Get-CimInstance -ErrorAction SilentlyContinue)) {
    function global:Get-CimInstance {
        [CmdletBinding()] param([string]$Namespace, [string]$ClassName, [string]$Filter)
        throw 'Get-CimInstance stub: mock it'
    }
}
if (-not (Get-Command Invoke-CimMethod -ErrorAction SilentlyContinue)) {
    function global:Invoke-CimMethod {
        [CmdletBinding()] param($InputObject, [string]$MethodName, [System.Collections.IDictionary]$Arguments)
        throw 'Invoke-CimMethod stub: mock it'
    }
}
if (-not (Get-Command New-SelfSignedCertificate -ErrorAction SilentlyContinue)) {
    function global:New-SelfSignedCertificate {
        [CmdletBinding()] param([string]$Subject, [string]$CertStoreLocation, [string]$Provider, [string]$KeyAlgorithm,
            [int]$KeyLength, [string]$KeyExportPolicy, [string]$KeyUsage, [string]$HashAlgorithm, [string[]]$TextExtension, [datetime]$NotAfter)
        throw 'New-SelfSignedCertificate stub: mock it'
    }
}
if (-not (Get-Command Register-ScheduledTask -ErrorAction SilentlyContinue)) {
    function global:New-ScheduledTaskAction {
        [CmdletBinding()] param([string]$Execute, [string]$Argument)
        throw 'stub: mock it'
    }
    function global:New-ScheduledTaskTrigger {
        [CmdletBinding()] param([switch]$AtStartup, [switch]$Once, [datetime]$At, [timespan]$RepetitionInterval, [timespan]$RandomDelay)
        throw 'stub: mock it'
    }
    function global:New-ScheduledTaskSettingsSet {
        [CmdletBinding()] param([switch]$StartWhenAvailable, [string]$MultipleInstances, [timespan]$ExecutionTimeLimit)
        throw 'stub: mock it'
    }
    function global:New-ScheduledTaskPrincipal {
        [CmdletBinding()] param([string]$UserId, [string]$LogonType, [string]$RunLevel)
        throw 'stub: mock it'
    }
    function global:Register-ScheduledTask {
        [CmdletBinding()] param([string]$TaskName, $Action, $Trigger, $Settings, $Principal, [switch]$Force)
        throw 'stub: mock it'
    }
}
if (-not (Get-Command Get-NetAdapter -ErrorAction SilentlyContinue)) {
    function global:Get-NetAdapter {
        [CmdletBinding()] param([switch]$Physical)
        throw 'stub: mock it'
    }
}

# ---- fixtures ----
function Get-FixturePath {
    param([string]$Relative)
    return (Join-Path $global:NuFixtureRoot $Relative)
}

# A body fixture as the agent sends it (editors may add a final newline; it is not part of it).
function Get-FixtureText {
    param([string]$Relative)
    return ([System.IO.File]::ReadAllText((Get-FixturePath $Relative))).TrimEnd("`r", "`n")
}

function Get-FixtureJson {
    param([string]$Relative)
    return ([System.IO.File]::ReadAllText((Get-FixturePath $Relative)) | ConvertFrom-Json)
}

# Byte i of a fixture key package is (seed * 7 + i * 13) mod 256.
function New-FixtureBytes {
    param([int]$Count, [int]$Seed)
    $bytes = New-Object byte[] $Count
    for ($i = 0; $i -lt $Count; $i++) { $bytes[$i] = [byte](($Seed * 7 + $i * 13) % 256) }
    return , $bytes
}

# ---- call log ----
function Reset-CallLog { $global:NuCalls = New-Object System.Collections.Generic.List[string] }
function Add-CallLog {
    param([string]$Entry)
    $global:NuCalls.Add($Entry)
}

# ---- fake BitLocker WMI provider ----
function New-FakeProtector {
    param($Spec)
    $package = $null
    $kp = $Spec.PSObject.Properties['key_package']
    if ($null -ne $kp -and $null -ne $kp.Value) { $package = New-FixtureBytes -Count $kp.Value.bytes -Seed $kp.Value.seed }
    $pwError = 0
    if ($Spec.PSObject.Properties['password_error']) { $pwError = [long]$Spec.password_error }
    $kpError = 0
    if ($Spec.PSObject.Properties['key_package_error']) { $kpError = [long]$Spec.key_package_error }
    $password = $null
    if ($Spec.PSObject.Properties['password']) { $password = [string]$Spec.password }
    return [pscustomobject]@{ Id = [string]$Spec.id; Password = $password; PasswordError = $pwError; Package = $package; PackageError = $kpError }
}

# Fake Win32_EncryptableVolume objects from an inventory.json; each carries its protectors and a
# queue of protectors ProtectKeyWithNumericalPassword will "create".
function New-FakeVolumes {
    param($Inventory)
    $out = New-Object System.Collections.Generic.List[object]
    foreach ($v in @($Inventory.volumes)) {
        $protectors = New-Object System.Collections.Generic.List[object]
        foreach ($p in @($v.protectors)) { $protectors.Add((New-FakeProtector $p)) }
        $volume = [pscustomobject]@{
            DeviceID       = [string]$v.device_id
            DriveLetter    = $null
            VolumeType     = [int]$v.volume_type
            FakeProtectors = $protectors
            FakeNew        = New-Object System.Collections.Generic.Queue[object]
            FakeName       = $null
            FakeFail       = @{}
        }
        if ($v.PSObject.Properties['drive_letter']) { $volume.DriveLetter = [string]$v.drive_letter }
        if ($v.PSObject.Properties['volume_name']) { $volume.FakeName = [string]$v.volume_name }
        $out.Add($volume)
    }
    return , $out.ToArray()
}

function Find-FakeProtector {
    param($Volume, [string]$Id)
    foreach ($p in $Volume.FakeProtectors) { if ($p.Id -eq $Id) { return $p } }
    return $null
}

# What Invoke-CimMethod answers for a fake volume. $Volume.FakeFail[method] = return value makes
# that method fail.
function Invoke-FakeVolumeMethod {
    param($Volume, [string]$Method, $Arguments)
    $label = $Volume.DriveLetter
    if (-not $label) { $label = $Volume.DeviceID }
    $id = $null
    if ($null -ne $Arguments -and $Arguments.Contains('VolumeKeyProtectorID')) { $id = [string]$Arguments['VolumeKeyProtectorID'] }
    Add-CallLog ('cim {0} {1} {2}' -f $Method, $label, $id)
    if ($Volume.FakeFail.ContainsKey($Method)) {
        return [pscustomobject]@{ ReturnValue = [uint32]$Volume.FakeFail[$Method] }
    }
    switch ($Method) {
        'GetKeyProtectors' {
            $ids = @(foreach ($p in $Volume.FakeProtectors) { $p.Id })
            return [pscustomobject]@{ ReturnValue = [uint32]0; VolumeKeyProtectorID = [string[]]$ids }
        }
        'GetKeyProtectorNumericalPassword' {
            $p = Find-FakeProtector $Volume $id
            if ($null -eq $p) { return [pscustomobject]@{ ReturnValue = [uint32]2150694920; NumericalPassword = $null } }
            if ($p.PasswordError -ne 0) { return [pscustomobject]@{ ReturnValue = [uint32]$p.PasswordError; NumericalPassword = $null } }
            return [pscustomobject]@{ ReturnValue = [uint32]0; NumericalPassword = $p.Password }
        }
        'GetKeyPackage' {
            $p = Find-FakeProtector $Volume $id
            if ($null -eq $p -or $p.PackageError -ne 0) { return [pscustomobject]@{ ReturnValue = [uint32]2150694912; KeyPackage = $null } }
            return [pscustomobject]@{ ReturnValue = [uint32]0; KeyPackage = $p.Package }
        }
        'ProtectKeyWithNumericalPassword' {
            $new = $Volume.FakeNew.Dequeue()
            $Volume.FakeProtectors.Add($new)
            return [pscustomobject]@{ ReturnValue = [uint32]0; VolumeKeyProtectorID = $new.Id }
        }
        'DeleteKeyProtector' {
            $p = Find-FakeProtector $Volume $id
            if ($null -ne $p) { [void]$Volume.FakeProtectors.Remove($p) }
            return [pscustomobject]@{ ReturnValue = [uint32]0 }
        }
        default { throw "fake volume: unexpected method $Method" }
    }
}

# ---- fake appliance ----
# $global:NuAppliance: Received (list of @{ Path; Json }), Rotations (what check-in answers),
# Scripted (path -> queue of answers @{ Status; Text } or exceptions), Device (enrol answer).
function Reset-FakeAppliance {
    $global:NuAppliance = [pscustomobject]@{
        Received  = New-Object System.Collections.Generic.List[object]
        Rotations = '[]'
        Scripted  = @{}
        Outcome   = 'stored'
    }
}

function Add-ScriptedAnswer {
    param([string]$Path, $Answer)
    if (-not $global:NuAppliance.Scripted.ContainsKey($Path)) {
        $global:NuAppliance.Scripted[$Path] = New-Object System.Collections.Generic.Queue[object]
    }
    $global:NuAppliance.Scripted[$Path].Enqueue($Answer)
}

function Get-ReceivedBody {
    param([string]$Path)
    return @(foreach ($r in $global:NuAppliance.Received) { if ($r.Path -eq $Path) { $r.Json } })
}

# What the appliance answers; mocks Send-ApiRequest.
function Invoke-FakeAppliance {
    param([string]$Method, [string]$Url, [string]$Json)
    $path = $Url.Substring($Url.IndexOf('/api/v1/') + 8)
    $global:NuAppliance.Received.Add([pscustomobject]@{ Path = $path; Json = $Json })
    $extra = ''
    if ($path -eq 'agent/rotation') { $extra = ' old_removed=' + ($Json | ConvertFrom-Json).old_removed.ToString().ToLowerInvariant() }
    if ($path -eq 'agent/escrow') { $extra = ' ' + (@(foreach ($i in @(($Json | ConvertFrom-Json).items)) { $i.protector_id }) -join ' ') }
    Add-CallLog ('api {0}{1}' -f $path, $extra)
    if ($global:NuAppliance.Scripted.ContainsKey($path) -and $global:NuAppliance.Scripted[$path].Count -gt 0) {
        $answer = $global:NuAppliance.Scripted[$path].Dequeue()
        if ($answer -is [System.Exception]) { throw $answer }
        return $answer
    }
    switch ($path) {
        'enroll' { return [pscustomobject]@{ Status = 201; Text = '{"id":7,"computer_name":"SRV-DB-01","client_cert_sha256":"00"}' } }
        'agent/escrow' {
            $results = @(foreach ($i in @(($Json | ConvertFrom-Json).items)) {
                    '{{"volume_guid":"{0}","protector_id":"{1}","outcome":"{2}"}}' -f $i.volume_guid, $i.protector_id, $global:NuAppliance.Outcome
                })
            $text = '{"results":[' + ($results -join ',') + ']}'
            if ($global:NuAppliance.Outcome -eq 'mismatch') {
                # What the appliance answers: 409 with the usual error and the per-item results.
                $text = '{"error":{"code":"mismatch","message":"already escrowed with a different recovery password"},' + $text.Substring(1)
                return [pscustomobject]@{ Status = 409; Text = $text }
            }
            return [pscustomobject]@{ Status = 200; Text = $text }
        }
        'agent/checkin' { return [pscustomobject]@{ Status = 200; Text = ('{"rotations":' + $global:NuAppliance.Rotations + '}') } }
        'agent/rotation' {
            $state = 'new_escrowed'
            if (($Json | ConvertFrom-Json).old_removed) { $state = 'done' }
            return [pscustomobject]@{ Status = 200; Text = ('{"state":"' + $state + '"}') }
        }
        default { return [pscustomobject]@{ Status = 404; Text = '{"error":{"code":"not_found","message":"no route"}}' } }
    }
}

# The $Api object the agent's functions take, without a real HttpClient (Send-ApiRequest is mocked).
function New-TestApi {
    param([string[]]$Pins = @(), [int]$Retries = 3)
    return [pscustomobject]@{ Client = 'fake-client'; BaseUrl = 'https://escrow.test:8443/api/v1/'; Pins = $Pins; Retries = $Retries; RetryDelaySeconds = 1 }
}

function New-TestLimits {
    param($Inventory)
    $l = $Inventory.limits
    return [pscustomobject]@{
        MaxItemsPerCall    = [int]$l.max_items_per_call
        MaxBodyBytes       = [int]$l.max_body_bytes
        MaxKeyPackageBytes = [int]$l.max_key_package_bytes
        MaxCheckInEntries  = 256
    }
}

# A fake client certificate as the Cert: provider shows it.
function New-FakeCertificate {
    param([string]$Thumbprint = 'A1B2C3D4E5F60718293A4B5C6D7E8F9012345678', [string]$Subject = 'CN=netunlockd-agent SRV-DB-01',
        [string]$KeyOid = '1.2.840.10045.2.1', [datetime]$NotAfter = (Get-Date).AddYears(5))
    return [pscustomobject]@{
        Thumbprint            = $Thumbprint
        Subject               = $Subject
        HasPrivateKey         = $true
        NotAfter              = $NotAfter
        EnhancedKeyUsageList  = @([pscustomobject]@{ ObjectId = '1.3.6.1.5.5.7.3.2' })
        PublicKey             = [pscustomobject]@{ Oid = [pscustomobject]@{ Value = $KeyOid } }
    }
}

# Every recovery password of an inventory plus the added ones, to grep outputs for.
function Get-InventoryPasswords {
    param($Inventory)
    return @(foreach ($v in @($Inventory.volumes)) { foreach ($p in @($v.protectors)) { if ($p.PSObject.Properties['password']) { [string]$p.password } } })
}
