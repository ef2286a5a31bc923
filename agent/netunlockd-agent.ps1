<#
.SYNOPSIS
    netunlockd BitLocker recovery-key escrow agent for Windows Server.

.DESCRIPTION
    Escrows every BitLocker recovery password protector of this computer (with its key package)
    to a netunlockd appliance over HTTPS with mutual TLS, checks in, and performs the two-phase
    rotation the appliance asks for after a help-desk disclosure:

        add a new recovery password protector  ->  escrow it (acknowledged)  ->  report
        ->  remove the old protector  ->  report "done"

    The old protector is never removed before the appliance has acknowledged the new one, so a
    failure at any step leaves the volume recoverable; the next run resumes (the appliance keeps
    the rotation state, this script keeps a small state file).

    Identity: a self-signed client certificate in Cert:\LocalMachine\My whose private key is
    created in the TPM ("Microsoft Platform Crypto Provider", non-exportable). The first run binds
    it to this computer with an enrollment token; later runs need no secret at all.

    Requires: Windows Server 2016+ / Windows 10+, the BitLocker PowerShell module, administrator
    rights (run as SYSTEM from a scheduled task), PowerShell 5.1 or 7.

.PARAMETER Server
    Base URL of the appliance, e.g. https://escrow.example:8443

.PARAMETER ServerCertSha256
    SHA-256 fingerprint (hex, colons allowed) of the appliance's TLS certificate; on the appliance:
    openssl x509 -in /var/lib/netunlockd/escrow-tls/escrow.pem -noout -fingerprint -sha256 Pins the server; use it with the self-generated
    certificate. Omit it when the appliance certificate chains to a CA this computer trusts.

.PARAMETER EnrollmentToken
    Only for the first run (or a re-enrollment allowed by an admin). Created on the appliance with
    `netunlockd enroll-token create --uses 50 --hours 24`.

.PARAMETER NoTpm
    Create the client key in software (Microsoft Software Key Storage Provider) when the computer
    has no usable TPM.

.EXAMPLE
    # First run, interactively as administrator:
    .\netunlockd-agent.ps1 -Server https://escrow.example:8443 `
        -ServerCertSha256 9F:1C:...:42 -EnrollmentToken nu_enr_XXXXXXXX

.NOTES
    Install as a scheduled task (runs at boot and every 90 minutes, as SYSTEM), after the first
    enrolling run:

      New-Item -ItemType Directory -Force 'C:\Program Files\netunlockd-agent' | Out-Null
      Copy-Item .\netunlockd-agent.ps1 'C:\Program Files\netunlockd-agent\'
      $arg = '-NoProfile -NonInteractive -ExecutionPolicy Bypass -File "C:\Program Files\netunlockd-agent\netunlockd-agent.ps1" ' +
             '-Server https://escrow.example:8443 -ServerCertSha256 9F1C...42'
      $action  = New-ScheduledTaskAction -Execute 'powershell.exe' -Argument $arg
      $boot    = New-ScheduledTaskTrigger -AtStartup
      $repeat  = New-ScheduledTaskTrigger -Once -At (Get-Date) -RepetitionInterval (New-TimeSpan -Minutes 90)
      $settings = New-ScheduledTaskSettingsSet -StartWhenAvailable -ExecutionTimeLimit (New-TimeSpan -Minutes 30)
      Register-ScheduledTask -TaskName 'netunlockd escrow agent' -Action $action -Trigger $boot,$repeat `
          -Settings $settings -User 'NT AUTHORITY\SYSTEM' -RunLevel Highest

    The enrolling run must happen as the same account that later runs the task (the certificate is
    in the machine store, so any administrator or SYSTEM works).

    Exit codes: 0 success, 1 failure (details in the Application event log, source netunlockd-agent,
    and on stderr). Recovery passwords are never written to the console, the log or the state file.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)][string]$Server,
    [string]$ServerCertSha256,
    [string]$EnrollmentToken,
    [string]$CertSubject = "CN=netunlockd-agent $env:COMPUTERNAME",
    [switch]$NoTpm,
    [string]$StateDirectory = (Join-Path $env:ProgramData 'netunlockd-agent'),
    [int]$Retries = 3,
    [int]$RetryDelaySeconds = 30
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
Add-Type -AssemblyName System.Net.Http

$ApiBase = $Server.TrimEnd('/') + '/api/v1/'
$StateFile = Join-Path $StateDirectory 'state.json'
$ClientAuthEku = '1.3.6.1.5.5.7.3.2'

function Write-AgentLog([string]$Message, [string]$Level = 'Information') {
    Write-Verbose $Message
    try {
        if (-not [System.Diagnostics.EventLog]::SourceExists('netunlockd-agent')) {
            New-EventLog -LogName Application -Source 'netunlockd-agent'
        }
        Write-EventLog -LogName Application -Source 'netunlockd-agent' -EntryType $Level -EventId 100 -Message $Message
    } catch { }
    if ($Level -eq 'Error') { [Console]::Error.WriteLine($Message) } else { Write-Output $Message }
}

# ---------------------------------------------------------------- state (no secrets in it)
function Get-AgentState {
    if (Test-Path $StateFile) { return Get-Content -Raw $StateFile | ConvertFrom-Json }
    return [pscustomobject]@{ enrolled = $false; device_id = $null; pending = @() }
}
function Save-AgentState($State) {
    New-Item -ItemType Directory -Force $StateDirectory | Out-Null
    $State | ConvertTo-Json -Depth 5 | Set-Content -Encoding UTF8 $StateFile
}

# ---------------------------------------------------------------- identity
function Get-AgentCertificate {
    $existing = Get-ChildItem Cert:\LocalMachine\My |
        Where-Object { $_.Subject -eq $CertSubject -and $_.HasPrivateKey -and $_.NotAfter -gt (Get-Date) -and
                       ($_.EnhancedKeyUsageList.ObjectId -contains $ClientAuthEku) } |
        Sort-Object NotAfter -Descending | Select-Object -First 1
    if ($existing) { return $existing }
    $provider = if ($NoTpm) { 'Microsoft Software Key Storage Provider' } else { 'Microsoft Platform Crypto Provider' }
    Write-AgentLog "creating client certificate '$CertSubject' with key provider '$provider'"
    # RSA 2048: what every TPM 2.0 supports. The key never leaves the TPM (NonExportable).
    New-SelfSignedCertificate -Subject $CertSubject -CertStoreLocation Cert:\LocalMachine\My `
        -Provider $provider -KeyAlgorithm RSA -KeyLength 2048 -KeyExportPolicy NonExportable `
        -KeyUsage DigitalSignature -TextExtension @("2.5.29.37={text}$ClientAuthEku") `
        -NotAfter (Get-Date).AddYears(10)
}

# ---------------------------------------------------------------- HTTPS client
# The pin check runs on a thread-pool thread inside HttpClient, where a PowerShell script block has
# no runspace to run in; a compiled delegate does not have that problem.
if (-not ('NetunlockdPin' -as [type])) {
    Add-Type -ReferencedAssemblies System.Net.Http -TypeDefinition @"
using System;
using System.Net.Http;
using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
public static class NetunlockdPin {
    public static Func<HttpRequestMessage, X509Certificate2, X509Chain, SslPolicyErrors, bool> Make(string pinHex) {
        return (request, cert, chain, errors) => {
            using (var sha = SHA256.Create()) {
                string hex = BitConverter.ToString(sha.ComputeHash(cert.RawData)).Replace("-", "").ToLowerInvariant();
                return hex == pinHex;
            }
        };
    }
}
"@
}

function New-ApiClient($Certificate) {
    $handler = New-Object System.Net.Http.HttpClientHandler
    $handler.ClientCertificateOptions = [System.Net.Http.ClientCertificateOption]::Manual
    [void]$handler.ClientCertificates.Add($Certificate)
    # TLS version: left to the OS (TLS 1.2, and 1.3 where Windows supports it).
    if ($ServerCertSha256) {
        $pin = ($ServerCertSha256 -replace '[:\s-]', '').ToLowerInvariant()
        if ($pin.Length -ne 64) { throw '-ServerCertSha256 must be 64 hex digits (colons allowed)' }
        $handler.ServerCertificateCustomValidationCallback = [NetunlockdPin]::Make($pin)
    }
    $client = New-Object System.Net.Http.HttpClient($handler)
    $client.Timeout = [TimeSpan]::FromSeconds(60)
    return $client
}

# Returns @{ Status = <int>; Body = <object or $null> }; retries transport failures and 5xx.
function Invoke-Api($Client, [string]$Method, [string]$Path, $Body) {
    for ($attempt = 1; ; $attempt++) {
        try {
            $request = New-Object System.Net.Http.HttpRequestMessage([System.Net.Http.HttpMethod]::new($Method), $ApiBase + $Path)
            if ($null -ne $Body) {
                $json = $Body | ConvertTo-Json -Depth 6 -Compress
                $request.Content = New-Object System.Net.Http.StringContent($json, [System.Text.Encoding]::UTF8, 'application/json')
            }
            $response = $Client.SendAsync($request).GetAwaiter().GetResult()
            $text = $response.Content.ReadAsStringAsync().GetAwaiter().GetResult()
            $status = [int]$response.StatusCode
            $parsed = if ($text) { $text | ConvertFrom-Json } else { $null }
            if ($status -ge 500 -and $attempt -lt $Retries) { throw "server answered $status" }
            return @{ Status = $status; Body = $parsed }
        } catch {
            if ($attempt -ge $Retries) { throw "escrow API $Method $Path failed after $attempt attempts: $($_.Exception.Message)" }
            Start-Sleep -Seconds $RetryDelaySeconds
        }
    }
}

function Assert-Ok($Result, [string]$What) {
    if ($Result.Status -lt 200 -or $Result.Status -ge 300) {
        $msg = if ($Result.Body -and $Result.Body.PSObject.Properties['error']) { "$($Result.Body.error.code): $($Result.Body.error.message)" } else { "HTTP $($Result.Status)" }
        throw "$What refused: $msg"
    }
}

# ---------------------------------------------------------------- BitLocker inventory
# One entry per recovery password protector: volume GUID, type, mount point, protector ID,
# password (kept only in memory) and key package (base64).
function Get-RecoveryProtectors {
    $cimVolumes = @{}
    Get-CimInstance -Namespace 'root\cimv2\Security\MicrosoftVolumeEncryption' -ClassName Win32_EncryptableVolume |
        ForEach-Object { if ($_.DriveLetter) { $cimVolumes[$_.DriveLetter] = $_ } elseif ($_.DeviceID) { $cimVolumes[$_.DeviceID] = $_ } }
    $out = @()
    foreach ($bv in Get-BitLockerVolume) {
        $cim = $cimVolumes[$bv.MountPoint]
        if (-not $cim) { $cim = $cimVolumes.Values | Where-Object { $_.DeviceID -eq $bv.MountPoint } | Select-Object -First 1 }
        if (-not $cim) { continue }
        if ($cim.DeviceID -notmatch '\{([0-9A-Fa-f-]{36})\}') { continue }
        $volumeGuid = '{' + $Matches[1].ToUpperInvariant() + '}'
        $type = switch ([int]$cim.VolumeType) { 0 { 'os' } 1 { 'fixed' } default { 'removable' } }
        foreach ($kp in $bv.KeyProtector | Where-Object { $_.KeyProtectorType -eq 'RecoveryPassword' }) {
            $package = $null
            try {
                $r = Invoke-CimMethod -InputObject $cim -MethodName GetKeyPackage -Arguments @{ VolumeKeyProtectorID = $kp.KeyProtectorId }
                if ($r.ReturnValue -eq 0 -and $r.KeyPackage) { $package = [Convert]::ToBase64String([byte[]]$r.KeyPackage) }
            } catch { }
            $out += [pscustomobject]@{
                volume_guid = $volumeGuid; mount_point = [string]$bv.MountPoint; volume_type = $type
                protector_id = $kp.KeyProtectorId.ToUpperInvariant(); recovery_password = $kp.RecoveryPassword; key_package = $package
            }
        }
    }
    return $out
}

function ConvertTo-EscrowItem($p) {
    $item = [ordered]@{ volume_guid = $p.volume_guid; mount_point = $p.mount_point; volume_type = $p.volume_type
                        protector_id = $p.protector_id; recovery_password = $p.recovery_password }
    if ($p.key_package) { $item.key_package = $p.key_package }
    return $item
}

function Send-Escrow($Client, $Protectors) {
    if (-not $Protectors) { return @() }
    $body = @{ items = @($Protectors | ForEach-Object { ConvertTo-EscrowItem $_ }) }
    $r = Invoke-Api $Client 'POST' 'agent/escrow' $body
    if ($r.Status -eq 409 -and $r.Body.PSObject.Properties['results']) {
        # A protector ID the appliance knows with a different password: it kept its copy and
        # recorded the mismatch for the operators; report it, carry on with the rest.
        Write-AgentLog "escrow mismatch reported by the appliance: $($r.Body.error.message)" 'Warning'
        return $r.Body.results
    }
    Assert-Ok $r 'escrow'
    return $r.Body.results
}

# ---------------------------------------------------------------- rotation (two-phase)
function Invoke-Rotation($Client, $State, $Instruction, $Protectors) {
    $old = $Instruction.protector_id.ToUpperInvariant()
    $oldP = $Protectors | Where-Object { $_.protector_id -eq $old } | Select-Object -First 1
    if (-not $oldP) {
        Write-AgentLog "rotation of $old requested but that protector is no longer on this computer" 'Warning'
        return
    }
    $pending = @($State.pending | Where-Object { $_.old -eq $old })
    $newId = if ($pending) { $pending[0].new } else { $null }

    if (-not $newId -or -not ($Protectors | Where-Object { $_.protector_id -eq $newId })) {
        # Phase 1: add a new recovery password protector to the same volume.
        $before = @((Get-BitLockerVolume -MountPoint $oldP.mount_point).KeyProtector | ForEach-Object { $_.KeyProtectorId })
        Add-BitLockerKeyProtector -MountPoint $oldP.mount_point -RecoveryPasswordProtector -WarningAction SilentlyContinue | Out-Null
        $after = (Get-BitLockerVolume -MountPoint $oldP.mount_point).KeyProtector |
            Where-Object { $_.KeyProtectorType -eq 'RecoveryPassword' -and $before -notcontains $_.KeyProtectorId }
        $newId = ($after | Select-Object -First 1).KeyProtectorId.ToUpperInvariant()
        $State.pending = @($State.pending | Where-Object { $_.old -ne $old }) + @([pscustomobject]@{ old = $old; new = $newId })
        Save-AgentState $State
        $Protectors = Get-RecoveryProtectors
    }
    # Escrow the new protector; only an acknowledgement lets us go on.
    $newP = $Protectors | Where-Object { $_.protector_id -eq $newId } | Select-Object -First 1
    $res = Send-Escrow $Client @($newP)
    if (-not ($res | Where-Object { $_.protector_id -eq $newId -and ($_.outcome -eq 'stored' -or $_.outcome -eq 'unchanged') })) {
        throw "the appliance did not acknowledge the new protector $newId; the old one stays"
    }
    $r = Invoke-Api $Client 'POST' 'agent/rotation' @{ old_protector_id = $old; new_protector_id = $newId; old_removed = $false }
    Assert-Ok $r 'rotation report (new escrowed)'
    # Phase 2: remove the disclosed protector, then report done.
    Remove-BitLockerKeyProtector -MountPoint $oldP.mount_point -KeyProtectorId $old | Out-Null
    $r = Invoke-Api $Client 'POST' 'agent/rotation' @{ old_protector_id = $old; new_protector_id = $newId; old_removed = $true }
    Assert-Ok $r 'rotation report (old removed)'
    $State.pending = @($State.pending | Where-Object { $_.old -ne $old })
    Save-AgentState $State
    Write-AgentLog "rotated recovery protector $old -> $newId on $($oldP.mount_point): $($r.Body.state)"
}

# ---------------------------------------------------------------- main
try {
    $state = Get-AgentState
    $cert = Get-AgentCertificate
    $client = New-ApiClient $cert

    if (-not $state.enrolled -or $EnrollmentToken) {
        if (-not $EnrollmentToken) { throw 'this computer is not enrolled yet: run once with -EnrollmentToken <token from `netunlockd enroll-token create`>' }
        $domain = (Get-CimInstance Win32_ComputerSystem).Domain
        $serial = (Get-CimInstance Win32_BIOS).SerialNumber
        $r = Invoke-Api $client 'POST' 'enroll' @{ token = $EnrollmentToken; computer_name = $env:COMPUTERNAME; domain = $domain; serial = $serial }
        Assert-Ok $r 'enrollment'
        $state.enrolled = $true
        $state.device_id = $r.Body.id
        Save-AgentState $state
        Write-AgentLog "enrolled as $($r.Body.computer_name) (device $($r.Body.id)); client certificate $($cert.Thumbprint)"
    }

    $protectors = Get-RecoveryProtectors
    $results = Send-Escrow $client $protectors
    Write-AgentLog ("escrowed {0} recovery protector(s): {1}" -f @($results).Count, ((@($results) | Group-Object outcome | ForEach-Object { "$($_.Count) $($_.Name)" }) -join ', '))

    $body = @{ protectors = @($protectors | ForEach-Object { @{ volume_guid = $_.volume_guid; protector_id = $_.protector_id } }) }
    $r = Invoke-Api $client 'POST' 'agent/checkin' $body
    Assert-Ok $r 'check-in'
    foreach ($instruction in @($r.Body.rotations)) {
        Invoke-Rotation $client $state $instruction (Get-RecoveryProtectors)
    }
    exit 0
} catch {
    Write-AgentLog "netunlockd agent failed: $($_.Exception.Message)" 'Error'
    exit 1
}
