#Requires -Version 5.1
#Requires -RunAsAdministrator
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
    the rotation state, this script keeps a small state file without secrets).

    Identity: a self-signed client certificate in Cert:\LocalMachine\My whose private key is
    created in the TPM (ECDSA P-256 in the "Microsoft Platform Crypto Provider", non-exportable;
    RSA 2048 where the TPM has no ECC, then limited to TLS 1.2; a software key with a warning when
    there is no usable TPM). The first run binds it to this computer with an enrollment token; the
    thumbprint of the enrolled certificate is kept in the state file and later runs need no secret.

    Requires: Windows Server 2016 or later (Windows 10 or later), administrator rights (run as
    SYSTEM from a scheduled task), Windows PowerShell 5.1 on .NET Framework 4.7.1 or later, or
    PowerShell 7. Without the BitLocker feature the agent still checks in (exit code 3).

    The script is dot-sourceable: `. .\netunlockd-agent.ps1` only defines functions (for tests).

.PARAMETER Server
    Base URL of the appliance, e.g. https://escrow.example:8443

.PARAMETER ServerCertSha256
    SHA-256 fingerprint(s) of the appliance's TLS certificate (64 hex digits; colons, spaces and
    openssl's "sha256 Fingerprint=" prefix are accepted). Give several, comma-separated or as an
    array, while the appliance certificate is being renewed. Print it on the appliance with:

        openssl x509 -in /var/lib/netunlockd/escrow-tls/escrow.pem -noout -fingerprint -sha256

    Omit it when the appliance certificate chains to a CA this computer trusts.

.PARAMETER EnrollmentToken
    Enrollment token for an interactive first run (created on the appliance with
    `netunlockd enroll-token create --uses 50 --hours 24`; it starts with "nue_"). A command line
    is visible to other processes and in process-creation audit events: for scheduled or mass
    deployment use -EnrollmentTokenFile instead.

.PARAMETER EnrollmentTokenFile
    File holding the enrollment token (default: enrollment-token.txt in the state directory, which
    only SYSTEM and Administrators can read). Read only while this computer is not enrolled, and
    deleted after a successful enrollment.

.PARAMETER CertSubject
    Subject of the client certificate the agent creates (default "CN=netunlockd-agent <name>").

.PARAMETER NoTpm
    Create the client key in software (Microsoft Software Key Storage Provider) even when a TPM
    is present. Without a usable TPM the agent does this by itself, with a warning.

.PARAMETER StateDirectory
    Where the state file lives (default %ProgramData%\netunlockd-agent). The agent restricts it to
    SYSTEM and Administrators.

.PARAMETER Retries
    Attempts per API call for transport errors, 408, 429 and 5xx answers (other 4xx are final).

.PARAMETER RetryDelaySeconds
    Base of the exponential back-off between attempts (with random jitter).

.PARAMETER StartDelayMaxSeconds
    Sleep a random 0..N seconds before contacting the appliance, so a fleet started by the same
    trigger does not call at once. The scheduled task passes 600.

.PARAMETER MaxItemsPerCall
    Protectors per escrow call (the appliance's limit, 64).

.PARAMETER MaxBodyBytes
    Request body limit of the appliance (escrow.max_body_bytes, default 262144).

.PARAMETER MaxKeyPackageBytes
    Largest key package the appliance stores (65536 bytes); a larger one is left out (the
    recovery password is still escrowed) and reported.

.PARAMETER InstallTask
    Install: copy this script to %ProgramFiles%\netunlockd-agent, restrict the state directory,
    store -EnrollmentToken (if given) in the protected token file, and register the scheduled
    task "netunlockd escrow agent" (SYSTEM, at startup and every 90 minutes, random start delay).

.EXAMPLE
    # Install and enroll on one server, interactively as administrator:
    .\netunlockd-agent.ps1 -InstallTask -Server https://escrow.example:8443 `
        -ServerCertSha256 9F:1C:...:42 -EnrollmentToken nue_XXXXXXXXXXXXXXXXXXXX
    Start-ScheduledTask -TaskName 'netunlockd escrow agent'

.EXAMPLE
    # One run now, with the token already in the protected token file:
    .\netunlockd-agent.ps1 -Server https://escrow.example:8443 -ServerCertSha256 9F1C...42

.NOTES
    Exit codes (also in the Application event log, source netunlockd-agent, and on stderr):
      0  success: everything escrowed and checked in
      1  failed: the appliance could not be reached or refused the run (nothing checked in)
      2  not enrolled: no enrollment token, the enrolled certificate is gone, or the appliance
         does not accept this computer's certificate
      3  no BitLocker: the BitLocker feature is not installed; the computer checked in anyway
      4  partial: checked in, but some protectors or rotations failed (see the event log)
      5  another run of the agent is in progress
      6  cannot run here: PowerShell/.NET too old, ConstrainedLanguage mode, or bad parameters
    Recovery passwords are never written to the console, the event log or the state file.
    Windows PowerShell 5.1 and PowerShell 7: this file uses only syntax both understand.
#>
[CmdletBinding()]
param(
    [string]$Server,
    [string[]]$ServerCertSha256,
    [string]$EnrollmentToken,
    [string]$EnrollmentTokenFile,
    [string]$CertSubject,
    [switch]$NoTpm,
    [string]$StateDirectory,
    [int]$Retries = 4,
    [int]$RetryDelaySeconds = 15,
    [int]$StartDelayMaxSeconds = 0,
    [int]$MaxItemsPerCall = 64,
    [int]$MaxBodyBytes = 262144,
    [int]$MaxKeyPackageBytes = 65536,
    [switch]$InstallTask
)

# =====================================================================================
# Output and logging: nothing here writes to the success stream (a function's return value).
# =====================================================================================

# Application event log through the .NET API: PowerShell 7 has no Write-EventLog.
function Write-AgentEvent {
    param([string]$Message, [string]$Level)
    if (-not ('System.Diagnostics.EventLog' -as [type])) {
        $null = Add-Type -AssemblyName System.Diagnostics.EventLog
    }
    $source = 'netunlockd-agent'
    $type = [System.Diagnostics.EventLogEntryType]::Information
    $eventId = 100
    if ($Level -eq 'Warning') {
        $type = [System.Diagnostics.EventLogEntryType]::Warning
        $eventId = 200
    }
    elseif ($Level -eq 'Error') {
        $type = [System.Diagnostics.EventLogEntryType]::Error
        $eventId = 300
    }
    if (-not [System.Diagnostics.EventLog]::SourceExists($source)) {
        [void][System.Diagnostics.EventLog]::CreateEventSource($source, 'Application')
    }
    [void][System.Diagnostics.EventLog]::WriteEntry($source, $Message, $type, $eventId)
}

# One log line: information stream (Information), warning stream (Warning) or stderr (Error),
# plus the event log. Never the success stream, so callers' return values stay clean.
function Write-AgentLog {
    param([string]$Message, [string]$Level = 'Information')
    $line = '{0} {1}' -f (ConvertTo-IsoTime (Get-Date)), $Message
    if ($Level -eq 'Error') {
        [void][Console]::Error.WriteLine($line)
    }
    elseif ($Level -eq 'Warning') {
        Write-Warning $line
    }
    else {
        Write-Information -MessageData $line -InformationAction Continue
    }
    try {
        Write-AgentEvent -Message $Message -Level $Level
    }
    catch {
        Write-Verbose ('event log unavailable: ' + $_.Exception.Message)
    }
}

# =====================================================================================
# Pure helpers: JSON, GUIDs, pins, limits (no I/O; table-tested by the Pester tests).
# =====================================================================================

# Deterministic compact JSON with the keys in insertion order. Used for every request body and
# the state file, so Windows PowerShell 5.1 and PowerShell 7 send byte-identical bodies (their
# ConvertTo-Json escape and order differently) and no password passes through a cmdlet.
function ConvertTo-AgentJson {
    param($Value)
    $sb = New-Object System.Text.StringBuilder
    Add-JsonValue -Builder $sb -Value $Value
    return $sb.ToString()
}

function Add-JsonString {
    param([System.Text.StringBuilder]$Builder, [string]$Text)
    [void]$Builder.Append('"')
    if ($Text -notmatch '[\x00-\x1f"\\]') {
        [void]$Builder.Append($Text)
        [void]$Builder.Append('"')
        return
    }
    foreach ($ch in $Text.ToCharArray()) {
        $code = [int]$ch
        if ($ch -eq '"') { [void]$Builder.Append('\"') }
        elseif ($ch -eq '\') { [void]$Builder.Append('\\') }
        elseif ($code -eq 10) { [void]$Builder.Append('\n') }
        elseif ($code -eq 13) { [void]$Builder.Append('\r') }
        elseif ($code -eq 9) { [void]$Builder.Append('\t') }
        elseif ($code -lt 32) { [void]$Builder.Append(('\u{0:x4}' -f $code)) }
        else { [void]$Builder.Append($ch) }
    }
    [void]$Builder.Append('"')
}

function Add-JsonValue {
    param([System.Text.StringBuilder]$Builder, $Value)
    if ($null -eq $Value) {
        [void]$Builder.Append('null')
    }
    elseif ($Value -is [string] -or $Value -is [char] -or $Value -is [guid]) {
        Add-JsonString -Builder $Builder -Text ([string]$Value)
    }
    elseif ($Value -is [datetime]) {
        Add-JsonString -Builder $Builder -Text (ConvertTo-IsoTime $Value)
    }
    elseif ($Value -is [bool]) {
        if ($Value) { [void]$Builder.Append('true') } else { [void]$Builder.Append('false') }
    }
    elseif ($Value -is [int] -or $Value -is [long] -or $Value -is [uint32] -or $Value -is [uint64] -or
        $Value -is [int16] -or $Value -is [byte] -or $Value -is [double] -or $Value -is [decimal]) {
        [void]$Builder.Append(([System.Convert]::ToString($Value, [System.Globalization.CultureInfo]::InvariantCulture)))
    }
    elseif ($Value -is [System.Collections.IDictionary]) {
        [void]$Builder.Append('{')
        $first = $true
        foreach ($key in $Value.Keys) {
            if (-not $first) { [void]$Builder.Append(',') }
            $first = $false
            Add-JsonString -Builder $Builder -Text ([string]$key)
            [void]$Builder.Append(':')
            Add-JsonValue -Builder $Builder -Value $Value[$key]
        }
        [void]$Builder.Append('}')
    }
    elseif ($Value -is [System.Management.Automation.PSCustomObject]) {
        [void]$Builder.Append('{')
        $first = $true
        foreach ($property in $Value.PSObject.Properties) {
            if (-not $first) { [void]$Builder.Append(',') }
            $first = $false
            Add-JsonString -Builder $Builder -Text $property.Name
            [void]$Builder.Append(':')
            Add-JsonValue -Builder $Builder -Value $property.Value
        }
        [void]$Builder.Append('}')
    }
    elseif ($Value -is [System.Collections.IEnumerable]) {
        [void]$Builder.Append('[')
        $first = $true
        foreach ($element in $Value) {
            if (-not $first) { [void]$Builder.Append(',') }
            $first = $false
            Add-JsonValue -Builder $Builder -Value $element
        }
        [void]$Builder.Append(']')
    }
    else {
        Add-JsonString -Builder $Builder -Text ([string]$Value)
    }
}

# UTC time as the state file and logs write it; PowerShell 7's ConvertFrom-Json turns such
# strings back into DateTime, so both forms are accepted.
function ConvertTo-IsoTime {
    param($Value)
    if ($null -eq $Value) { return $null }
    if ($Value -is [datetime]) { return $Value.ToUniversalTime().ToString('yyyy-MM-ddTHH:mm:ssZ', [System.Globalization.CultureInfo]::InvariantCulture) }
    return [string]$Value
}

# Value of a property that may be missing (Set-StrictMode makes a missing property an error).
function Get-OptionalProperty {
    param($Object, [string]$Name)
    if ($null -eq $Object) { return $null }
    if ($Object -is [System.Collections.IDictionary]) {
        if ($Object.Contains($Name)) { return $Object[$Name] }
        return $null
    }
    $property = $Object.PSObject.Properties[$Name]
    if ($null -eq $property) { return $null }
    return $property.Value
}

# '{24B0AA32-F8D0-40BA-BB05-73A800324C09}' from any braced/bare, any-case GUID; $null otherwise.
function ConvertTo-BracedGuid {
    param([string]$Text)
    if ($null -eq $Text) { return $null }
    if ($Text.Trim() -match '^\{?([0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})\}?$') {
        return '{' + $Matches[1].ToUpperInvariant() + '}'
    }
    return $null
}

# The volume GUID inside a Win32_EncryptableVolume DeviceID ('\\?\Volume{GUID}\').
function ConvertFrom-VolumeDeviceId {
    param([string]$DeviceId)
    if ($null -eq $DeviceId) { return $null }
    if ($DeviceId -match 'Volume\{([0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})\}') {
        return '{' + $Matches[1].ToUpperInvariant() + '}'
    }
    return $null
}

# Win32_EncryptableVolume.VolumeType: 0 operating system, 1 fixed data, 2 portable data. Older
# Windows has no VolumeType: the system drive is then 'os', anything else 'fixed'.
function Get-VolumeTypeName {
    param($VolumeType, [string]$DriveLetter, [string]$SystemDrive)
    if ($null -ne $VolumeType) {
        switch ([int]$VolumeType) {
            0 { return 'os' }
            1 { return 'fixed' }
            default { return 'removable' }
        }
    }
    if ($DriveLetter -and $SystemDrive -and $DriveLetter -eq $SystemDrive) { return 'os' }
    return 'fixed'
}

# 'C:' for a drive root, the folder for a folder mount point, $null for an unmounted volume.
function ConvertTo-MountPoint {
    param([string]$DriveLetter, [string]$VolumeName)
    if ($DriveLetter) { return $DriveLetter.ToUpperInvariant() }
    if (-not $VolumeName -or $VolumeName.StartsWith('\\?\')) { return $null }
    if ($VolumeName -match '^[A-Za-z]:\\$') { return $VolumeName.Substring(0, 2).ToUpperInvariant() }
    return $VolumeName.TrimEnd('\')
}

# The appliance's rule for a 48-digit recovery password: 8 groups of 6 digits, each a multiple
# of 11 and at most 720885. Checked here so one bad item is skipped instead of failing a batch.
function Test-RecoveryPassword {
    param([string]$Password)
    if (-not $Password) { return $false }
    $groups = $Password.Split('-')
    if ($groups.Count -ne 8) { return $false }
    foreach ($group in $groups) {
        if ($group -notmatch '^[0-9]{6}$') { return $false }
        $value = [int]$group
        if ($value % 11 -ne 0 -or $value -gt 720885) { return $false }
    }
    return $true
}

# Pins: a list (comma/semicolon separated or an array) of SHA-256 fingerprints of the appliance
# certificate, as openssl or certutil print them. Returns lower-case hex strings; throws naming
# the bad entry. An SPKI pin (curl --pinnedpubkey, base64) never matches and is refused.
function ConvertTo-PinList {
    param([string[]]$Pins)
    $out = New-Object System.Collections.Generic.List[string]
    foreach ($entry in @($Pins)) {
        if ($null -eq $entry) { continue }
        foreach ($raw in $entry.Split([char[]]@(',', ';'), [System.StringSplitOptions]::RemoveEmptyEntries)) {
            $text = $raw.Trim()
            if (-not $text) { continue }
            if ($text -match '^\s*(sha-?256)?\s*fingerprint\s*=\s*(.*)$') { $text = $Matches[2] }
            elseif ($text -match '^sha-?256\s*[:=]\s*(.*)$') { $text = $Matches[1] }
            elseif ($text -match 'hash\(sha-?256\)\s*:\s*(.*)$') { $text = $Matches[1] }
            $hex = ($text -replace '[:\s-]', '').ToLowerInvariant()
            if ($hex -notmatch '^[0-9a-f]{64}$') {
                throw ("-ServerCertSha256 '{0}' is not a SHA-256 certificate fingerprint: give 64 hex digits " +
                    "(colons allowed), as printed by 'openssl x509 -in escrow.pem -noout -fingerprint -sha256'; " +
                    "a public-key (SPKI) pin does not match the agent's certificate pin") -f $raw.Trim()
            }
            if (-not $out.Contains($hex)) { $out.Add($hex) }
        }
    }
    return , $out.ToArray()
}

# Which TLS versions to offer. The appliance speaks TLS 1.2 and 1.3. RSA client keys are capped
# at TLS 1.2: TLS 1.3 signs with RSA-PSS, which many TPMs cannot produce. TLS 1.3 is offered
# only where Windows' Schannel has it (Server 2022, build 20348, and later) and .NET knows it.
function Get-TlsProtocolPlan {
    param([string]$KeyAlgorithm, [int]$OsBuild, [string[]]$KnownProtocols)
    $protocols = @('Tls12')
    $note = $null
    if ($KeyAlgorithm -eq 'RSA') {
        $note = 'RSA client key: TLS 1.2 only (TLS 1.3 needs RSA-PSS signatures, which many TPMs cannot make)'
    }
    elseif ((@($KnownProtocols) -contains 'Tls13') -and $OsBuild -ge 20348) {
        $protocols = @('Tls12', 'Tls13')
    }
    return [pscustomobject]@{ Protocols = $protocols; Note = $note }
}

# Public key algorithm of a certificate: 'ECDSA', 'RSA' or the OID.
function Get-CertificateKeyAlgorithm {
    param($Certificate)
    $oid = [string]$Certificate.PublicKey.Oid.Value
    if ($oid -eq '1.2.840.10045.2.1') { return 'ECDSA' }
    if ($oid -eq '1.2.840.113549.1.1.1') { return 'RSA' }
    return $oid
}

# Which key to create, in order of preference: ECDSA P-256 in the TPM, RSA 2048 in the TPM (TPMs
# without ECC, TPM 1.2), then a software ECDSA P-256 key. -NoTpm or no usable TPM: software only.
function Get-KeyCreationPlan {
    param([bool]$TpmUsable, [bool]$TpmHasEcc, [bool]$NoTpm)
    $tpm = 'Microsoft Platform Crypto Provider'
    $software = 'Microsoft Software Key Storage Provider'
    $plan = New-Object System.Collections.Generic.List[object]
    if ($TpmUsable -and -not $NoTpm) {
        if ($TpmHasEcc) {
            $plan.Add([pscustomobject]@{ Provider = $tpm; Algorithm = 'ECDSA_nistP256'; KeyLength = 0; InTpm = $true })
        }
        $plan.Add([pscustomobject]@{ Provider = $tpm; Algorithm = 'RSA'; KeyLength = 2048; InTpm = $true })
    }
    $plan.Add([pscustomobject]@{ Provider = $software; Algorithm = 'ECDSA_nistP256'; KeyLength = 0; InTpm = $false })
    return , $plan.ToArray()
}

# Win32_Tpm says whether a TPM is there and usable, and its version (2.0 has ECC P-256).
function Test-TpmUsable {
    param($Tpm)
    if ($null -eq $Tpm) {
        return [pscustomobject]@{ Usable = $false; HasEcc = $false; Reason = 'no TPM found (Win32_Tpm has no instance)' }
    }
    $enabled = Get-OptionalProperty $Tpm 'IsEnabled_InitialValue'
    $activated = Get-OptionalProperty $Tpm 'IsActivated_InitialValue'
    if ($enabled -eq $false -or $activated -eq $false) {
        return [pscustomobject]@{ Usable = $false; HasEcc = $false; Reason = 'the TPM is disabled or not activated in the firmware' }
    }
    $spec = [string](Get-OptionalProperty $Tpm 'SpecVersion')
    $hasEcc = $spec.StartsWith('2.0')
    return [pscustomobject]@{ Usable = $true; HasEcc = $hasEcc; Reason = $null }
}

# Error codes of Win32_EncryptableVolume methods worth a name in a log line.
function Get-BitLockerErrorText {
    param([long]$Code)
    if ($Code -lt 0) { $Code += 4294967296 }
    $hex = '0x{0:X8}' -f $Code
    $names = @{
        '0x80310000' = 'the volume is locked (FVE_E_LOCKED_VOLUME): unlock it to read its recovery passwords'
        '0x80310008' = 'BitLocker is not enabled on the volume (FVE_E_NOT_ACTIVATED)'
        '0x80310030' = 'the volume is not encrypted yet or is decrypting (FVE_E_NOT_ENCRYPTED)'
        '0x80070005' = 'access denied: run as SYSTEM or an administrator'
        '0x80310059' = 'a group policy forbids this kind of protector (FVE_E_POLICY_PROHIBITS_SELFSIGNED)'
        '0x8031006E' = 'group policy does not allow a recovery password (FVE_E_POLICY_RECOVERY_PASSWORD_NOT_ALLOWED)'
    }
    if ($names.ContainsKey($hex)) { return '{0} ({1})' -f $names[$hex], $hex }
    return 'error {0}' -f $hex
}

# Why the BitLocker WMI provider is missing, or $null when the error is something else.
function Get-BitLockerUnavailableReason {
    param($Exception)
    $text = ''
    $e = $Exception
    while ($null -ne $e) {
        $text += ' ' + $e.Message + ' ' + [string](Get-OptionalProperty $e 'NativeErrorCode')
        $e = $e.InnerException
    }
    if ($text -match 'InvalidNamespace|Invalid namespace|0x8004100E|InvalidClass|Invalid class|0x80041010') {
        return 'the BitLocker feature is not installed (no root\cimv2\Security\MicrosoftVolumeEncryption WMI provider); install it with Install-WindowsFeature BitLocker, or ignore this on servers without BitLocker'
    }
    return $null
}

# An escrow item in the order and shape of the OpenAPI EscrowItem. A key package larger than the
# appliance accepts is left out (the password still goes) and reported.
function New-EscrowItem {
    param($Protector, [int]$MaxKeyPackageBytes, $Problems)
    $item = [ordered]@{ volume_guid = $Protector.volume_guid }
    if ($Protector.mount_point) { $item.mount_point = $Protector.mount_point }
    $item.volume_type = $Protector.volume_type
    $item.protector_id = $Protector.protector_id
    $item.recovery_password = $Protector.recovery_password
    if ($Protector.key_package) {
        if ($Protector.key_package_bytes -gt $MaxKeyPackageBytes) {
            if ($null -ne $Problems) {
                $Problems.Add([pscustomobject]@{
                        protector_id = $Protector.protector_id
                        volume       = $Protector.volume_guid
                        problem      = ('key package of {0} bytes is larger than the appliance stores ({1}); recovery password escrowed without it' -f $Protector.key_package_bytes, $MaxKeyPackageBytes)
                    })
            }
        }
        else {
            $item.key_package = $Protector.key_package
        }
    }
    return $item
}

# Splits escrow items into calls within the appliance's limits: at most MaxItems per call and a
# JSON body of at most MaxBodyBytes (UTF-8). An item that cannot fit even alone is skipped and
# reported. Returns @{ Batches = array of @{ Items; Json }; Problems = array }.
function Split-EscrowBatch {
    param([object[]]$Items, [int]$MaxItems, [int]$MaxBodyBytes)
    $utf8 = New-Object System.Text.UTF8Encoding($false)
    $prefix = '{"items":['
    $suffix = ']}'
    $envelope = $utf8.GetByteCount($prefix) + $utf8.GetByteCount($suffix)
    $batches = New-Object System.Collections.Generic.List[object]
    $skipped = New-Object System.Collections.Generic.List[object]
    $currentItems = New-Object System.Collections.Generic.List[object]
    $currentJson = New-Object System.Collections.Generic.List[string]
    $currentBytes = $envelope
    foreach ($item in @($Items)) {
        $json = ConvertTo-AgentJson $item
        $size = $utf8.GetByteCount($json)
        if ($envelope + $size -gt $MaxBodyBytes -and $item.Contains('key_package')) {
            # The password matters more than the key package: send it without.
            $item.Remove('key_package')
            $skipped.Add([pscustomobject]@{
                    protector_id = $item.protector_id
                    volume       = $item.volume_guid
                    problem      = ('its escrow entry with the key package is {0} bytes, over the appliance body limit of {1} bytes; recovery password escrowed without the key package' -f $size, $MaxBodyBytes)
                })
            $json = ConvertTo-AgentJson $item
            $size = $utf8.GetByteCount($json)
        }
        if ($envelope + $size -gt $MaxBodyBytes) {
            $skipped.Add([pscustomobject]@{
                    protector_id = $item.protector_id
                    volume       = $item.volume_guid
                    problem      = ('its escrow entry is {0} bytes; with the request envelope it exceeds the appliance body limit of {1} bytes' -f $size, $MaxBodyBytes)
                })
            continue
        }
        $separator = 0
        if ($currentItems.Count -gt 0) { $separator = 1 }
        if ($currentItems.Count -ge $MaxItems -or ($currentBytes + $separator + $size) -gt $MaxBodyBytes) {
            $batches.Add([pscustomobject]@{ Items = $currentItems.ToArray(); Json = $prefix + ($currentJson.ToArray() -join ',') + $suffix })
            $currentItems = New-Object System.Collections.Generic.List[object]
            $currentJson = New-Object System.Collections.Generic.List[string]
            $currentBytes = $envelope
            $separator = 0
        }
        $currentItems.Add($item)
        $currentJson.Add($json)
        $currentBytes += $separator + $size
    }
    if ($currentItems.Count -gt 0) {
        $batches.Add([pscustomobject]@{ Items = $currentItems.ToArray(); Json = $prefix + ($currentJson.ToArray() -join ',') + $suffix })
    }
    return [pscustomobject]@{ Batches = $batches.ToArray(); Problems = $skipped.ToArray() }
}

# Check-in bodies. The appliance marks escrowed protectors missing from a *reported volume* as
# superseded, so a volume is never split across calls; a volume with more protectors than one
# call takes is left out (nothing of it is superseded) and reported. Every body carries the
# adapters' MAC addresses (issue 10: they join Network Unlock requests to this device) when any
# were found; without them the appliance keeps the list it has.
function New-CheckInBody {
    param([object[]]$Volumes, [int]$MaxEntries, [string[]]$Adapters = @())
    $adapterList = @($Adapters | Where-Object { $_ } | Select-Object -First 64)
    $newBody = {
        param($list)
        $body = [ordered]@{ protectors = $list }
        if ($adapterList.Count -gt 0) { $body['adapters'] = $adapterList }
        ConvertTo-AgentJson $body
    }
    $bodies = New-Object System.Collections.Generic.List[string]
    $skipped = New-Object System.Collections.Generic.List[object]
    $current = New-Object System.Collections.Generic.List[object]
    foreach ($volume in @($Volumes)) {
        $ids = @($volume.protector_ids)
        if ($ids.Count -eq 0) { continue }
        if ($ids.Count -gt $MaxEntries) {
            $skipped.Add([pscustomobject]@{
                    protector_id = $null
                    volume       = $volume.volume_guid
                    problem      = ('the volume has {0} recovery protectors, more than one check-in takes ({1}); not reported' -f $ids.Count, $MaxEntries)
                })
            continue
        }
        if ($current.Count + $ids.Count -gt $MaxEntries) {
            $bodies.Add((& $newBody $current.ToArray()))
            $current = New-Object System.Collections.Generic.List[object]
        }
        foreach ($id in $ids) {
            $current.Add([ordered]@{ volume_guid = $volume.volume_guid; protector_id = $id })
        }
    }
    if ($current.Count -gt 0 -or $bodies.Count -eq 0) {
        $bodies.Add((& $newBody $current.ToArray()))
    }
    return [pscustomobject]@{ Bodies = $bodies.ToArray(); Skipped = $skipped.ToArray() }
}

function New-EnrollBody {
    param([string]$Token, [string]$ComputerName, [string]$Domain, [string]$Serial)
    $body = [ordered]@{ token = $Token.Trim(); computer_name = $ComputerName }
    if ($Domain) { $body.domain = $Domain }
    if ($Serial -and $Serial.Trim()) { $body.serial = $Serial.Trim() }
    return ConvertTo-AgentJson $body
}

function New-RotationReportBody {
    param([string]$OldProtectorId, [string]$NewProtectorId, [bool]$OldRemoved)
    return ConvertTo-AgentJson ([ordered]@{
            old_protector_id = $OldProtectorId
            new_protector_id = $NewProtectorId
            old_removed      = $OldRemoved
        })
}

# Exponential back-off with jitter: base * 2^(attempt-1), capped at 300 s, times 0.5..1.5.
function Get-RetryDelaySeconds {
    param([int]$Attempt, [int]$BaseSeconds, [double]$Random)
    $delay = [Math]::Min(300.0, $BaseSeconds * [Math]::Pow(2, $Attempt - 1))
    return [int][Math]::Round($delay * (0.5 + $Random))
}

# Which answers are worth another attempt: 408, 429 and 5xx. Other 4xx answers are final.
function Test-RetryableStatus {
    param([int]$Status)
    return ($Status -eq 408 -or $Status -eq 429 -or $Status -ge 500)
}

# "Type: message -> Type: message" over the inner exceptions (a TLS failure is three deep).
function Get-ExceptionChain {
    param($Exception)
    $parts = New-Object System.Collections.Generic.List[string]
    $e = $Exception
    $depth = 0
    while ($null -ne $e -and $depth -lt 8) {
        $parts.Add(('{0}: {1}' -f $e.GetType().Name, $e.Message.Trim()))
        if ($e -is [System.AggregateException] -and $e.InnerExceptions.Count -gt 0) { $e = $e.InnerExceptions[0] }
        else { $e = $e.InnerException }
        $depth++
    }
    return ($parts.ToArray() -join ' -> ')
}

# What an operator should check, from the exception chain of a failed HTTPS call.
function Get-FailureHint {
    param([string]$Chain, [string]$PresentedFingerprint, [string[]]$Pins)
    if ($PresentedFingerprint -and @($Pins).Count -gt 0 -and -not (@($Pins) -contains $PresentedFingerprint)) {
        return ('wrong pin: the appliance presented a certificate with SHA-256 {0}, which matches none of -ServerCertSha256 ({1}); if the appliance certificate was renewed, add the new fingerprint' -f $PresentedFingerprint, (@($Pins) -join ', '))
    }
    if ($Chain -match 'common algorithm|protocol version|SEC_E_ALGORITHM_MISMATCH|0x80090331|cipher suite|handshake_failure') {
        return 'no common TLS version or cipher: the appliance accepts TLS 1.2 and 1.3 only; make sure TLS 1.2 is enabled for Schannel and .NET (SchUseStrongCrypto)'
    }
    if ($Chain -match 'credentials supplied to the package were not recognized|0x8009030D|SEC_E_UNKNOWN_CREDENTIALS|Keyset does not exist|0x80090016|TPM|0x8028|NTE_|0x8009') {
        return 'the client certificate''s private key could not sign the TLS handshake (TPM or key provider): if the TPM was cleared, delete the certificate and re-enroll'
    }
    if ($Chain -match 'remote certificate is invalid|RemoteCertificateChainErrors|RemoteCertificateNameMismatch|untrusted root|UntrustedRoot') {
        return 'the appliance certificate is not trusted by this computer: pass its SHA-256 with -ServerCertSha256, or install a certificate that chains to a trusted CA on the appliance'
    }
    if ($Chain -match 'No such host|could not be resolved|actively refused|timed out|TaskCanceled|unreachable') {
        return 'the appliance could not be reached: check the -Server URL, DNS, routing and firewalls (TCP port of escrow.listen)'
    }
    return $null
}

# Body of an answer: parsed JSON, or $null with the raw text kept for the message (a proxy or a
# load balancer can answer with HTML).
function Read-ApiBody {
    param([string]$Text)
    if (-not $Text) { return $null }
    try {
        return ($Text | ConvertFrom-Json)
    }
    catch {
        return $null
    }
}

# The appliance's error message from an answer, or a short excerpt of a non-JSON answer.
function Get-ApiErrorText {
    param($Response)
    $errorObject = Get-OptionalProperty $Response.Body 'error'
    if ($null -ne $errorObject) {
        return '{0} ({1}): {2}' -f $Response.Status, (Get-OptionalProperty $errorObject 'code'), (Get-OptionalProperty $errorObject 'message')
    }
    $raw = [string]$Response.Text
    if ($raw.Length -gt 200) { $raw = $raw.Substring(0, 200) + '...' }
    $raw = ($raw -replace '\s+', ' ').Trim()
    if ($raw) { return 'HTTP {0} (not a netunlockd answer: {1})' -f $Response.Status, $raw }
    return 'HTTP {0}' -f $Response.Status
}

# The outcome name of a run (what the exit code says).
function ConvertTo-ExitCode {
    param([string]$Outcome)
    switch ($Outcome) {
        'success' { return 0 }
        'failed' { return 1 }
        'not-enrolled' { return 2 }
        'no-bitlocker' { return 3 }
        'partial' { return 4 }
        'busy' { return 5 }
        'unsupported' { return 6 }
        default { return 1 }
    }
}

# The state file's content with defaults, from a parsed file of this or an older agent version
# (which had only enrolled, device_id and pending {old, new}).
function ConvertTo-AgentState {
    param($Parsed)
    $state = [ordered]@{
        version                = 2
        certificate_thumbprint = $null
        enrolled               = $false
        device_id              = $null
        computer_name          = $null
        enrolled_at            = $null
        pending                = @()
        last_run               = $null
    }
    if ($null -eq $Parsed) { return $state }
    $thumbprint = Get-OptionalProperty $Parsed 'certificate_thumbprint'
    if ($thumbprint) { $state.certificate_thumbprint = ([string]$thumbprint).ToUpperInvariant() }
    $state.enrolled = [bool](Get-OptionalProperty $Parsed 'enrolled')
    $state.device_id = Get-OptionalProperty $Parsed 'device_id'
    $state.computer_name = Get-OptionalProperty $Parsed 'computer_name'
    $state.enrolled_at = ConvertTo-IsoTime (Get-OptionalProperty $Parsed 'enrolled_at')
    $state.last_run = Get-OptionalProperty $Parsed 'last_run'
    $pending = New-Object System.Collections.Generic.List[object]
    foreach ($entry in @(Get-OptionalProperty $Parsed 'pending')) {
        if ($null -eq $entry) { continue }
        $old = ConvertTo-BracedGuid ([string](Get-OptionalProperty $entry 'old'))
        $new = ConvertTo-BracedGuid ([string](Get-OptionalProperty $entry 'new'))
        if (-not $old -or -not $new) { continue }
        $since = ConvertTo-IsoTime (Get-OptionalProperty $entry 'since')
        if (-not $since) { $since = ConvertTo-IsoTime (Get-Date) }
        $pending.Add([ordered]@{
                old         = $old
                new         = $new
                volume_guid = ConvertTo-BracedGuid ([string](Get-OptionalProperty $entry 'volume_guid'))
                since       = [string]$since
            })
    }
    $state.pending = $pending.ToArray()
    return $state
}

# Keeps a pending rotation while the appliance still asks for it, or while its old protector is
# on the computer and it is younger than 30 days; drops the rest (the appliance finished or
# cancelled it, or the protector went away).
function Select-PendingRotation {
    param([object[]]$Pending, [string[]]$RequestedIds, [string[]]$PresentIds, [datetime]$Now)
    $keep = New-Object System.Collections.Generic.List[object]
    foreach ($entry in @($Pending)) {
        if ($null -eq $entry) { continue }
        if (@($RequestedIds) -contains $entry.old) { $keep.Add($entry); continue }
        $since = [datetime]::MinValue
        [void][datetime]::TryParse([string]$entry.since, [System.Globalization.CultureInfo]::InvariantCulture,
            [System.Globalization.DateTimeStyles]::AdjustToUniversal, [ref]$since)
        if ((@($PresentIds) -contains $entry.old) -and ($Now - $since).TotalDays -lt 30) { $keep.Add($entry) }
    }
    return , $keep.ToArray()
}

# Command-line arguments of the scheduled task: no token (it goes to the protected file).
function Get-AgentTaskArgument {
    param([string]$ScriptPath, [string]$Server, [string[]]$Pins, [string]$StateDirectory, [bool]$NoTpm, [int]$StartDelayMaxSeconds)
    $parts = New-Object System.Collections.Generic.List[string]
    foreach ($p in @('-NoProfile', '-NonInteractive', '-ExecutionPolicy', 'Bypass', '-File', ('"{0}"' -f $ScriptPath),
            '-Server', $Server)) { $parts.Add($p) }
    if (@($Pins).Count -gt 0) {
        $parts.Add('-ServerCertSha256')
        $parts.Add((@($Pins) -join ','))
    }
    if ($StateDirectory) {
        $parts.Add('-StateDirectory')
        $parts.Add(('"{0}"' -f $StateDirectory))
    }
    if ($NoTpm) { $parts.Add('-NoTpm') }
    $parts.Add('-StartDelayMaxSeconds')
    $parts.Add([string]$StartDelayMaxSeconds)
    return ($parts.ToArray() -join ' ')
}

# MAC addresses of the physical network adapters ('00-15-5D-01-02-03' -> '00:15:5D:01:02:03').
function ConvertTo-MacAddressList {
    param([string[]]$Addresses)
    $out = New-Object System.Collections.Generic.List[string]
    foreach ($a in @($Addresses)) {
        if (-not $a) { continue }
        $hex = ($a -replace '[^0-9A-Fa-f]', '').ToUpperInvariant()
        if ($hex.Length -ne 12 -or $hex -eq '000000000000') { continue }
        $mac = ($hex -split '(..)' | Where-Object { $_ }) -join ':'
        if (-not $out.Contains($mac)) { $out.Add($mac) }
    }
    $sorted = $out.ToArray()
    [System.Array]::Sort($sorted)
    return , $sorted
}

# =====================================================================================
# Environment checks
# =====================================================================================

# .NET Framework 4.7.1 (release 461308) added the HttpClientHandler client-certificate and
# server-certificate callback APIs the agent uses; Server 2016 RTM has 4.6.2.
function Test-DotNetFrameworkRelease {
    param($Release)
    return ($null -ne $Release -and [int]$Release -ge 461308)
}

function Get-DotNetFrameworkRelease {
    $key = Get-ItemProperty -Path 'HKLM:\SOFTWARE\Microsoft\NET Framework Setup\NDP\v4\Full' -Name Release -ErrorAction SilentlyContinue
    if ($null -eq $key) { return $null }
    return $key.Release
}

# $null when the agent can run in this PowerShell, else the reason.
function Get-UnsupportedReason {
    param([string]$Edition, [version]$PSVersion, $FrameworkRelease, [string]$LanguageMode)
    if ($PSVersion -lt [version]'5.1') {
        return ('PowerShell {0} is too old: install Windows Management Framework 5.1 or PowerShell 7' -f $PSVersion)
    }
    if ($LanguageMode -ne 'FullLanguage') {
        return ('PowerShell runs in {0} mode (WDAC/AppLocker): the agent needs FullLanguage; sign the script with a certificate your policy trusts' -f $LanguageMode)
    }
    if ($Edition -eq 'Desktop' -and -not (Test-DotNetFrameworkRelease $FrameworkRelease)) {
        return ('.NET Framework 4.7.1 or later is required (release 461308; found {0}): install .NET Framework 4.8, or run the agent with PowerShell 7' -f $FrameworkRelease)
    }
    return $null
}

# =====================================================================================
# State directory, state file, enrollment token file
# =====================================================================================

function Get-DefaultStateDirectory {
    return (Join-Path ([Environment]::GetFolderPath('CommonApplicationData')) 'netunlockd-agent')
}

# SYSTEM and Administrators only, not inherited: the state names the enrolled certificate and
# the folder may hold the enrollment token.
function Set-AgentStateAcl {
    param([string]$Path)
    $acl = New-Object System.Security.AccessControl.DirectorySecurity
    $acl.SetAccessRuleProtection($true, $false)
    foreach ($sid in @('S-1-5-18', 'S-1-5-32-544')) {
        $identity = New-Object System.Security.Principal.SecurityIdentifier($sid)
        $rule = New-Object System.Security.AccessControl.FileSystemAccessRule($identity, 'FullControl',
            'ContainerInherit, ObjectInherit', 'None', 'Allow')
        $acl.AddAccessRule($rule)
    }
    $info = New-Object System.IO.DirectoryInfo($Path)
    if ($PSVersionTable.PSEdition -eq 'Desktop') {
        $info.SetAccessControl($acl)
    }
    else {
        [System.IO.FileSystemAclExtensions]::SetAccessControl($info, $acl)
    }
}

function Initialize-StateDirectory {
    param([string]$Path)
    if (-not (Test-Path -LiteralPath $Path)) {
        $null = New-Item -ItemType Directory -Force -Path $Path
    }
    Set-AgentStateAcl -Path $Path
}

function Read-AgentState {
    param([string]$Path)
    if (-not (Test-Path -LiteralPath $Path)) { return (ConvertTo-AgentState $null) }
    $text = [System.IO.File]::ReadAllText($Path)
    try {
        $parsed = $text | ConvertFrom-Json
    }
    catch {
        Write-AgentLog ('state file {0} is not valid JSON ({1}); starting from an empty state' -f $Path, $_.Exception.Message) 'Warning'
        $parsed = $null
    }
    return (ConvertTo-AgentState $parsed)
}

# Written to a temporary file and swapped in, so a crash never leaves half a state file.
function Save-AgentState {
    param([string]$Path, $State)
    $json = ConvertTo-AgentJson $State
    $temp = $Path + '.tmp'
    [System.IO.File]::WriteAllText($temp, $json, (New-Object System.Text.UTF8Encoding($false)))
    if (Test-Path -LiteralPath $Path) {
        [System.IO.File]::Replace($temp, $Path, $null)
    }
    else {
        [System.IO.File]::Move($temp, $Path)
    }
}

# The enrollment token: -EnrollmentToken, else the token file. $null when there is none.
function Read-EnrollmentToken {
    param([string]$Token, [string]$TokenFile)
    if ($Token -and $Token.Trim()) { return $Token.Trim() }
    if ($TokenFile -and (Test-Path -LiteralPath $TokenFile)) {
        $text = [System.IO.File]::ReadAllText($TokenFile).Trim()
        if ($text) { return $text }
    }
    return $null
}

function Remove-EnrollmentTokenFile {
    param([string]$TokenFile)
    if ($TokenFile -and (Test-Path -LiteralPath $TokenFile)) {
        Remove-Item -LiteralPath $TokenFile -Force
        Write-AgentLog ('enrollment token file {0} deleted' -f $TokenFile)
    }
}

# =====================================================================================
# One run at a time
# =====================================================================================

function Enter-AgentLock {
    $mutex = New-Object System.Threading.Mutex($false, 'Global\netunlockd-agent')
    $acquired = $false
    try {
        $acquired = $mutex.WaitOne(0)
    }
    catch {
        # The previous run died holding it: the lock is ours now (PowerShell wraps the .NET
        # exception, so look for it in the chain).
        $inner = $_.Exception
        while ($null -ne $inner -and -not ($inner -is [System.Threading.AbandonedMutexException])) { $inner = $inner.InnerException }
        if ($null -eq $inner) { throw }
        $acquired = $true
    }
    if (-not $acquired) {
        $mutex.Dispose()
        return $null
    }
    return $mutex
}

function Exit-AgentLock {
    param($Mutex)
    if ($null -ne $Mutex) {
        $Mutex.ReleaseMutex()
        $Mutex.Dispose()
    }
}

# =====================================================================================
# Identity: the client certificate
# =====================================================================================

function Get-MachineCertificate {
    param([string]$Thumbprint)
    if ($Thumbprint) {
        return (Get-Item -LiteralPath ('Cert:\LocalMachine\My\' + $Thumbprint) -ErrorAction SilentlyContinue)
    }
    return @(Get-ChildItem -Path 'Cert:\LocalMachine\My')
}

# A certificate this agent made earlier (state from an older agent version): the newest valid
# one with the subject, a private key and the clientAuth EKU.
function Select-AdoptableCertificate {
    param([object[]]$Certificates, [string]$Subject, [datetime]$Now)
    $best = $null
    foreach ($c in @($Certificates)) {
        if ($null -eq $c) { continue }
        if ($c.Subject -ne $Subject -or -not $c.HasPrivateKey -or $c.NotAfter -le $Now) { continue }
        $ekus = @(foreach ($e in @(Get-OptionalProperty $c 'EnhancedKeyUsageList')) { if ($null -ne $e) { [string]$e.ObjectId } })
        if (-not ($ekus -contains '1.3.6.1.5.5.7.3.2')) { continue }
        if ($null -eq $best -or $c.NotAfter -gt $best.NotAfter) { $best = $c }
    }
    return $best
}

# Signs a few bytes with the certificate's private key: fails when the TPM was cleared or the
# key is gone, which otherwise only shows up as an obscure TLS error.
function Test-CertificateKey {
    param($Certificate)
    $data = [System.Text.Encoding]::ASCII.GetBytes('netunlockd-agent key check')
    $sha256 = [System.Security.Cryptography.HashAlgorithmName]::SHA256
    if ((Get-CertificateKeyAlgorithm $Certificate) -eq 'ECDSA') {
        $key = [System.Security.Cryptography.X509Certificates.ECDsaCertificateExtensions]::GetECDsaPrivateKey($Certificate)
        if ($null -eq $key) { throw 'the certificate has no usable ECDSA private key' }
        $null = $key.SignData($data, $sha256)
    }
    else {
        $key = [System.Security.Cryptography.X509Certificates.RSACertificateExtensions]::GetRSAPrivateKey($Certificate)
        if ($null -eq $key) { throw 'the certificate has no usable RSA private key' }
        $null = $key.SignData($data, $sha256, [System.Security.Cryptography.RSASignaturePadding]::Pkcs1)
    }
}

function Get-TpmInfo {
    try {
        $tpm = Get-CimInstance -Namespace 'root\cimv2\Security\MicrosoftTpm' -ClassName Win32_Tpm -ErrorAction Stop
    }
    catch {
        return (Test-TpmUsable $null)
    }
    return (Test-TpmUsable (@($tpm) | Select-Object -First 1))
}

# Creates the client certificate, trying the plan's key types in order.
function New-AgentCertificate {
    param([string]$Subject, [bool]$NoTpm)
    $tpm = Get-TpmInfo
    if (-not $NoTpm -and -not $tpm.Usable) {
        Write-AgentLog ('{0}: the client key is created in software (it can be copied by an administrator of this computer, unlike a TPM key)' -f $tpm.Reason) 'Warning'
    }
    $plan = Get-KeyCreationPlan -TpmUsable $tpm.Usable -TpmHasEcc $tpm.HasEcc -NoTpm $NoTpm
    $failures = New-Object System.Collections.Generic.List[string]
    foreach ($choice in $plan) {
        $parameters = @{
            Subject           = $Subject
            CertStoreLocation = 'Cert:\LocalMachine\My'
            Provider          = $choice.Provider
            KeyAlgorithm      = $choice.Algorithm
            KeyExportPolicy   = 'NonExportable'
            KeyUsage          = 'DigitalSignature'
            HashAlgorithm     = 'SHA256'
            TextExtension     = @('2.5.29.37={text}1.3.6.1.5.5.7.3.2')
            NotAfter          = (Get-Date).AddYears(10)
        }
        if ($choice.KeyLength -gt 0) { $parameters.KeyLength = $choice.KeyLength }
        try {
            $cert = New-SelfSignedCertificate @parameters
            if (-not $choice.InTpm -and $tpm.Usable -and -not $NoTpm) {
                Write-AgentLog ('the TPM could not create a key ({0}); the client key is in software' -f ($failures.ToArray() -join '; ')) 'Warning'
            }
            Write-AgentLog ('created client certificate {0} ({1}, {2}) with subject {3}' -f $cert.Thumbprint, $choice.Algorithm, $choice.Provider, $Subject)
            return $cert
        }
        catch {
            $failures.Add(('{0} {1}: {2}' -f $choice.Provider, $choice.Algorithm, $_.Exception.Message))
        }
    }
    throw ('cannot create the client certificate: ' + ($failures.ToArray() -join '; '))
}

# Decides which certificate this run uses and whether it must enroll. Returns
# @{ Certificate; MustEnroll; Problem } and updates the state's thumbprint. Problem is set when
# the run cannot go on without an operator (the enrolled certificate is gone and there is no token).
function Resolve-AgentIdentity {
    param($State, [string]$Subject, [bool]$NoTpm, [bool]$HaveToken, [string]$StatePath)
    $now = Get-Date
    $cert = $null
    if ($State.certificate_thumbprint) {
        $cert = Get-MachineCertificate -Thumbprint $State.certificate_thumbprint
        $problem = $null
        if ($null -eq $cert) {
            $problem = 'is no longer in Cert:\LocalMachine\My (deleted, or the computer was reinstalled)'
        }
        elseif (-not $cert.HasPrivateKey) {
            $problem = 'has lost its private key'
        }
        else {
            try { Test-CertificateKey $cert }
            catch { $problem = ('cannot sign with its private key (TPM cleared or reset?): ' + $_.Exception.Message) }
        }
        if ($problem) {
            $what = 'the client certificate {0} {1}' -f $State.certificate_thumbprint, $problem
            if ($State.enrolled -and -not $HaveToken) {
                return [pscustomobject]@{
                    Certificate = $null; MustEnroll = $true
                    Problem     = ('{0}. This computer must be enrolled again: an admin runs `netunlockd escrow allow-reenroll {1}` on the appliance, then put a new enrollment token in the token file (or pass -EnrollmentToken) and run the agent' -f $what, $State.device_id)
                }
            }
            Write-AgentLog ('{0}; creating a new one' -f $what) 'Warning'
            $State.certificate_thumbprint = $null
            $State.enrolled = $false
            $cert = $null
        }
    }
    elseif ($State.enrolled) {
        # State of an older agent version: enrolled, but the thumbprint was not recorded.
        $cert = Select-AdoptableCertificate -Certificates (Get-MachineCertificate) -Subject $Subject -Now $now
        if ($null -ne $cert) {
            Write-AgentLog ('using client certificate {0} (state from an older agent version)' -f $cert.Thumbprint)
            $State.certificate_thumbprint = $cert.Thumbprint.ToUpperInvariant()
            Save-AgentState -Path $StatePath -State $State
        }
        else {
            $State.enrolled = $false
        }
    }
    if ($null -eq $cert) {
        $cert = New-AgentCertificate -Subject $Subject -NoTpm $NoTpm
        $State.certificate_thumbprint = $cert.Thumbprint.ToUpperInvariant()
        $State.enrolled = $false
        Save-AgentState -Path $StatePath -State $State
    }
    return [pscustomobject]@{ Certificate = $cert; MustEnroll = (-not $State.enrolled); Problem = $null }
}

# =====================================================================================
# HTTPS client
# =====================================================================================

# The pin check runs on a thread-pool thread inside HttpClient, where a PowerShell script block
# has no runspace; a compiled delegate does. C# 5 only (Windows PowerShell compiles with it).
# SHA-256 comes from a FIPS-validated implementation on .NET Framework (SHA256.Create() there is
# the managed one, which FIPS mode forbids); .NET (PowerShell 7) uses CNG already.
function Initialize-AgentTlsType {
    if ('NetunlockdAgentTls' -as [type]) { return }
    $source = @'
using System;
using System.Net.Http;
using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

public static class NetunlockdAgentTls {
    private static volatile string lastPresented;
    public static string LastPresented { get { return lastPresented; } }
    public static void Reset() { lastPresented = null; }

    public static string Sha256Hex(byte[] data, Type fipsImplementation) {
        HashAlgorithm h = fipsImplementation != null
            ? (HashAlgorithm)Activator.CreateInstance(fipsImplementation)
            : SHA256.Create();
        try {
            return BitConverter.ToString(h.ComputeHash(data)).Replace("-", "").ToLowerInvariant();
        } finally {
            h.Dispose();
        }
    }

    public static Func<HttpRequestMessage, X509Certificate2, X509Chain, SslPolicyErrors, bool> PinCheck(string[] pins, Type fipsImplementation) {
        string[] expected = (string[])pins.Clone();
        return (request, cert, chain, errors) => {
            if (cert == null) { return false; }
            string hex = Sha256Hex(cert.RawData, fipsImplementation);
            lastPresented = hex;
            foreach (string pin in expected) {
                if (string.Equals(pin, hex, StringComparison.Ordinal)) { return true; }
            }
            return false;
        };
    }
}
'@
    if ($PSVersionTable.PSEdition -eq 'Desktop') {
        Add-Type -TypeDefinition $source -ReferencedAssemblies System.Net.Http
    }
    else {
        Add-Type -TypeDefinition $source
    }
}

# TLS 1.2 (and 1.3 where it works) for this process: Windows PowerShell's .NET Framework reads
# ServicePointManager; PowerShell 7's handler has its own SslProtocols.
function Set-TlsProtocol {
    param($Handler, [string[]]$Protocols)
    $names = @($Protocols) -join ', '
    if ($PSVersionTable.PSEdition -eq 'Desktop') {
        [System.Net.ServicePointManager]::SecurityProtocol = [System.Net.SecurityProtocolType]$names
    }
    else {
        $Handler.SslProtocols = [System.Security.Authentication.SslProtocols]$names
    }
}

# TLS versions this .NET can be told to use (Tls13 exists from .NET Framework 4.8 / .NET Core 3).
function Get-KnownTlsProtocol {
    if ($PSVersionTable.PSEdition -eq 'Desktop') {
        return [enum]::GetNames([System.Net.SecurityProtocolType])
    }
    return [enum]::GetNames([System.Security.Authentication.SslProtocols])
}

function New-ApiClient {
    param($Certificate, [string[]]$Pins, [string[]]$Protocols)
    Initialize-AgentTlsType
    $handler = New-Object System.Net.Http.HttpClientHandler
    $handler.ClientCertificateOptions = [System.Net.Http.ClientCertificateOption]::Manual
    [void]$handler.ClientCertificates.Add($Certificate)
    Set-TlsProtocol -Handler $handler -Protocols $Protocols
    if (@($Pins).Count -gt 0) {
        $fips = $null
        if ($PSVersionTable.PSEdition -eq 'Desktop') { $fips = [System.Security.Cryptography.SHA256CryptoServiceProvider] }
        $handler.ServerCertificateCustomValidationCallback = [NetunlockdAgentTls]::PinCheck([string[]]@($Pins), $fips)
    }
    $client = New-Object System.Net.Http.HttpClient($handler)
    $client.Timeout = [TimeSpan]::FromSeconds(60)
    return $client
}

# One HTTP exchange, no retries: @{ Status; Text }. Throws on transport errors.
function Send-ApiRequest {
    param($Client, [string]$Method, [string]$Url, [string]$Json)
    $request = New-Object System.Net.Http.HttpRequestMessage((New-Object System.Net.Http.HttpMethod($Method)), $Url)
    if ($null -ne $Json -and $Json -ne '') {
        $request.Content = New-Object System.Net.Http.StringContent($Json, (New-Object System.Text.UTF8Encoding($false)), 'application/json')
    }
    try {
        $response = $Client.SendAsync($request).GetAwaiter().GetResult()
        try {
            $text = $response.Content.ReadAsStringAsync().GetAwaiter().GetResult()
            return [pscustomobject]@{ Status = [int]$response.StatusCode; Text = $text }
        }
        finally {
            $response.Dispose()
        }
    }
    finally {
        $request.Dispose()
    }
}

function Get-LastPresentedFingerprint {
    if ('NetunlockdAgentTls' -as [type]) { return [NetunlockdAgentTls]::LastPresented }
    return $null
}

# Sends with retries (transport errors, 408, 429, 5xx; exponential back-off with jitter) and
# returns @{ Status; Body; Text }. A transport failure after the last attempt throws with the
# exception chain and a hint; a pin mismatch is not retried (it would not change).
function Invoke-Api {
    param($Api, [string]$Method, [string]$Path, [string]$Json)
    $url = $Api.BaseUrl + $Path
    for ($attempt = 1; ; $attempt++) {
        $failure = $null
        $response = $null
        try {
            $response = Send-ApiRequest -Client $Api.Client -Method $Method -Url $url -Json $Json
        }
        catch {
            $failure = $_.Exception
        }
        if ($null -ne $response) {
            $result = [pscustomobject]@{ Status = $response.Status; Body = (Read-ApiBody $response.Text); Text = $response.Text }
            if (-not (Test-RetryableStatus $response.Status) -or $attempt -ge $Api.Retries) { return $result }
            $reason = Get-ApiErrorText $result
        }
        else {
            $chain = Get-ExceptionChain $failure
            $hint = Get-FailureHint -Chain $chain -PresentedFingerprint (Get-LastPresentedFingerprint) -Pins $Api.Pins
            $final = ($attempt -ge $Api.Retries) -or ($hint -and $hint.StartsWith('wrong pin'))
            if ($final) {
                $message = '{0} {1} failed after {2} attempt(s): {3}' -f $Method, $Path, $attempt, $chain
                if ($hint) { $message += ' | ' + $hint }
                throw $message
            }
            $reason = $chain
        }
        $delay = Get-RetryDelaySeconds -Attempt $attempt -BaseSeconds $Api.RetryDelaySeconds -Random (Get-Random -Minimum 0.0 -Maximum 1.0)
        Write-AgentLog ('{0} {1} attempt {2} of {3} failed ({4}); retrying in {5} s' -f $Method, $Path, $attempt, $Api.Retries, $reason, $delay) 'Warning'
        Start-Sleep -Seconds $delay
    }
}

# 401/403 on an agent route: the appliance does not accept this certificate. Marked so the run
# can tell it from any other failure.
function New-CertificateRefusedError {
    param([string]$Text)
    $e = New-Object System.Exception($Text)
    $e.Data['netunlockd'] = 'certificate-refused'
    return $e
}

function Test-CertificateRefusedError {
    param($Exception)
    $e = $Exception
    while ($null -ne $e) {
        if ($e.Data.Contains('netunlockd') -and $e.Data['netunlockd'] -eq 'certificate-refused') { return $true }
        $e = $e.InnerException
    }
    return $false
}

function Test-Success {
    param($Response)
    return ($Response.Status -ge 200 -and $Response.Status -lt 300)
}

# =====================================================================================
# Enrollment
# =====================================================================================

function Get-EnrollmentFacts {
    $system = Get-CimInstance -ClassName Win32_ComputerSystem
    $bios = Get-CimInstance -ClassName Win32_BIOS
    $domain = $null
    if ($system.PartOfDomain) { $domain = $system.Domain }
    return [pscustomobject]@{ ComputerName = $env:COMPUTERNAME; Domain = $domain; Serial = [string]$bios.SerialNumber }
}

# What a refused enrollment means, for the operator.
function Get-EnrollRefusalText {
    param([int]$Status)
    switch ($Status) {
        401 { return 'the enrollment token is not known to the appliance (mistyped or truncated?) or no client certificate reached it' }
        403 { return 'this device is revoked on the appliance' }
        409 { return 'this computer name is enrolled with another certificate: an admin must allow it with `netunlockd escrow allow-reenroll <device id>`' }
        410 { return 'the enrollment token has expired, was revoked or is used up: ask an admin for a new one (`netunlockd enroll-token create`)' }
        default { return $null }
    }
}

function Invoke-Enrollment {
    param($Api, $State, [string]$Token, [string]$StatePath, [string]$TokenFile, [string]$Thumbprint)
    $facts = Get-EnrollmentFacts
    $body = New-EnrollBody -Token $Token -ComputerName $facts.ComputerName -Domain $facts.Domain -Serial $facts.Serial
    $response = Invoke-Api -Api $Api -Method 'POST' -Path 'enroll' -Json $body
    if (-not (Test-Success $response)) {
        $why = Get-EnrollRefusalText $response.Status
        $text = 'enrollment refused: {0}' -f (Get-ApiErrorText $response)
        if ($why) { $text += ' | ' + $why }
        return [pscustomobject]@{ Enrolled = $false; Problem = $text }
    }
    $State.enrolled = $true
    $State.device_id = Get-OptionalProperty $response.Body 'id'
    $State.computer_name = Get-OptionalProperty $response.Body 'computer_name'
    $State.enrolled_at = (ConvertTo-IsoTime (Get-Date))
    Save-AgentState -Path $StatePath -State $State
    Write-AgentLog ('enrolled as {0} (device {1}) with client certificate {2}' -f $State.computer_name, $State.device_id, $Thumbprint)
    Remove-EnrollmentTokenFile -TokenFile $TokenFile
    return [pscustomobject]@{ Enrolled = $true; Problem = $null }
}

# =====================================================================================
# BitLocker inventory, straight from Win32_EncryptableVolume (no BitLocker module needed)
# =====================================================================================

# Calls a Win32_EncryptableVolume method; throws with a readable BitLocker error on failure.
function Invoke-VolumeMethod {
    param($Volume, [string]$Method, [hashtable]$Arguments = @{})
    $result = Invoke-CimMethod -InputObject $Volume -MethodName $Method -Arguments $Arguments
    if ($null -eq $result) { throw ('{0} returned nothing' -f $Method) }
    if ([long]$result.ReturnValue -ne 0) {
        throw ('{0}: {1}' -f $Method, (Get-BitLockerErrorText ([long]$result.ReturnValue)))
    }
    return $result
}

# Folder mount points by volume device ID (drive letters come from Win32_EncryptableVolume).
function Get-VolumeNameMap {
    $map = @{}
    try {
        foreach ($v in @(Get-CimInstance -ClassName Win32_Volume -ErrorAction Stop)) {
            if ($v.DeviceID -and $v.Name) { $map[[string]$v.DeviceID] = [string]$v.Name }
        }
    }
    catch {
        Write-AgentLog ('cannot list mount points (Win32_Volume): {0}' -f $_.Exception.Message) 'Warning'
    }
    return $map
}

# Reads one recovery password protector: password (memory only), key package (base64).
function Read-RecoveryProtector {
    param($VolumeRecord, [string]$ProtectorId, $Problems)
    $cim = $VolumeRecord.cim
    $passwordResult = Invoke-VolumeMethod -Volume $cim -Method 'GetKeyProtectorNumericalPassword' -Arguments @{ VolumeKeyProtectorID = $ProtectorId }
    $password = [string]$passwordResult.NumericalPassword
    if (-not (Test-RecoveryPassword $password)) {
        throw 'its recovery password is empty or not 48 valid digits (volume locked?)'
    }
    $package = $null
    $packageBytes = 0
    try {
        $packageResult = Invoke-VolumeMethod -Volume $cim -Method 'GetKeyPackage' -Arguments @{ VolumeKeyProtectorID = $ProtectorId }
        $bytes = [byte[]]$packageResult.KeyPackage
        if ($null -ne $bytes -and $bytes.Length -gt 0) {
            $package = [Convert]::ToBase64String($bytes)
            $packageBytes = $bytes.Length
        }
    }
    catch {
        $Problems.Add([pscustomobject]@{
                protector_id = $ProtectorId
                volume       = $VolumeRecord.volume_guid
                problem      = ('key package not readable ({0}); recovery password escrowed without it' -f $_.Exception.Message)
            })
    }
    return [pscustomobject]@{
        volume_guid       = $VolumeRecord.volume_guid
        mount_point       = $VolumeRecord.mount_point
        volume_type       = $VolumeRecord.volume_type
        protector_id      = $ProtectorId
        recovery_password = $password
        key_package       = $package
        key_package_bytes = $packageBytes
    }
}

# Every BitLocker volume and its recovery password protectors. Returns
# @{ Available; Reason; Volumes; Protectors; Problems }: Volumes (for check-in) lists every
# volume whose protector IDs could be read; Protectors (for escrow) only those whose password
# could be read; Problems names each volume or protector skipped, and why.
function Get-BitLockerInventory {
    param([string]$SystemDrive)
    $problems = New-Object System.Collections.Generic.List[object]
    $volumes = New-Object System.Collections.Generic.List[object]
    $protectors = New-Object System.Collections.Generic.List[object]
    try {
        $cimVolumes = @(Get-CimInstance -Namespace 'root\cimv2\Security\MicrosoftVolumeEncryption' -ClassName Win32_EncryptableVolume -ErrorAction Stop)
    }
    catch {
        $reason = Get-BitLockerUnavailableReason $_.Exception
        if (-not $reason) { throw }
        return [pscustomobject]@{ Available = $false; Reason = $reason; Volumes = @(); Protectors = @(); Problems = @() }
    }
    $names = $null
    foreach ($cim in $cimVolumes) {
        $deviceId = [string](Get-OptionalProperty $cim 'DeviceID')
        $volumeGuid = ConvertFrom-VolumeDeviceId $deviceId
        $driveLetter = [string](Get-OptionalProperty $cim 'DriveLetter')
        if (-not $volumeGuid) {
            $problems.Add([pscustomobject]@{ protector_id = $null; volume = $deviceId; problem = 'no volume GUID in its device ID; volume skipped' })
            continue
        }
        if (-not $driveLetter -and $null -eq $names) { $names = Get-VolumeNameMap }
        $volumeName = $null
        if (-not $driveLetter -and $names.ContainsKey($deviceId)) { $volumeName = $names[$deviceId] }
        $record = [pscustomobject]@{
            volume_guid   = $volumeGuid
            mount_point   = ConvertTo-MountPoint -DriveLetter $driveLetter -VolumeName $volumeName
            volume_type   = Get-VolumeTypeName -VolumeType (Get-OptionalProperty $cim 'VolumeType') -DriveLetter $driveLetter -SystemDrive $SystemDrive
            cim           = $cim
            protector_ids = @()
        }
        $label = $record.mount_point
        if (-not $label) { $label = $volumeGuid }
        try {
            $idsResult = Invoke-VolumeMethod -Volume $cim -Method 'GetKeyProtectors' -Arguments @{ KeyProtectorType = [uint32]3 }
        }
        catch {
            $problems.Add([pscustomobject]@{ protector_id = $null; volume = $volumeGuid; problem = ('cannot list the recovery protectors of {0} ({1}); volume skipped' -f $label, $_.Exception.Message) })
            continue
        }
        $ids = New-Object System.Collections.Generic.List[string]
        foreach ($rawId in @($idsResult.VolumeKeyProtectorID)) {
            $id = ConvertTo-BracedGuid ([string]$rawId)
            if ($id) { $ids.Add($id) }
            elseif ($rawId) {
                $problems.Add([pscustomobject]@{ protector_id = [string]$rawId; volume = $volumeGuid; problem = 'protector ID is not a GUID; skipped' })
            }
        }
        $record.protector_ids = $ids.ToArray()
        $volumes.Add($record)
        foreach ($id in $ids) {
            try {
                $protectors.Add((Read-RecoveryProtector -VolumeRecord $record -ProtectorId $id -Problems $problems))
            }
            catch {
                $problems.Add([pscustomobject]@{ protector_id = $id; volume = $volumeGuid; problem = ('recovery password of {0} not readable: {1}; not escrowed' -f $label, $_.Exception.Message) })
            }
        }
    }
    return [pscustomobject]@{ Available = $true; Reason = $null; Volumes = $volumes.ToArray(); Protectors = $protectors.ToArray(); Problems = $problems.ToArray() }
}

# =====================================================================================
# Escrow and check-in
# =====================================================================================

# Sends one batch; on 413 halves it, on 400 sends its items one by one so one refused item does
# not block the others. Adds per-protector outcomes to $Outcomes and refusals to $Problems.
function Send-EscrowBatch {
    param($Api, [object[]]$Items, $Outcomes, $Problems)
    # A loop, not a pipeline: module logging records pipeline input, and these items hold passwords.
    $parts = New-Object System.Collections.Generic.List[string]
    foreach ($item in @($Items)) { $parts.Add((ConvertTo-AgentJson $item)) }
    $json = '{"items":[' + ($parts.ToArray() -join ',') + ']}'
    $response = Invoke-Api -Api $Api -Method 'POST' -Path 'agent/escrow' -Json $json
    $results = Get-OptionalProperty $response.Body 'results'
    if ((Test-Success $response) -or ($response.Status -eq 409 -and $null -ne $results)) {
        foreach ($r in @($results)) {
            $id = ConvertTo-BracedGuid ([string](Get-OptionalProperty $r 'protector_id'))
            $outcome = [string](Get-OptionalProperty $r 'outcome')
            if ($id) { $Outcomes[$id] = $outcome }
            if ($outcome -eq 'mismatch') {
                $Problems.Add([pscustomobject]@{ protector_id = $id; volume = [string](Get-OptionalProperty $r 'volume_guid'); problem = 'the appliance holds a different recovery password for this protector ID; it kept its copy and recorded the mismatch for the operators' })
            }
        }
        return
    }
    if ($response.Status -eq 401 -or $response.Status -eq 403) {
        throw (New-CertificateRefusedError (Get-ApiErrorText $response))
    }
    $count = @($Items).Count
    if ($response.Status -eq 413 -and $count -gt 1) {
        $half = [int][Math]::Ceiling($count / 2)
        Write-AgentLog ('the appliance refused {0} protectors in one call as too large (413); sending {1} and {2}' -f $count, $half, ($count - $half)) 'Warning'
        Send-EscrowBatch -Api $Api -Items @($Items[0..($half - 1)]) -Outcomes $Outcomes -Problems $Problems
        Send-EscrowBatch -Api $Api -Items @($Items[$half..($count - 1)]) -Outcomes $Outcomes -Problems $Problems
        return
    }
    if ($response.Status -eq 400 -and $count -gt 1) {
        Write-AgentLog ('the appliance refused a batch of {0} protectors ({1}); sending them one by one' -f $count, (Get-ApiErrorText $response)) 'Warning'
        foreach ($item in @($Items)) {
            Send-EscrowBatch -Api $Api -Items @($item) -Outcomes $Outcomes -Problems $Problems
        }
        return
    }
    if ((Test-RetryableStatus $response.Status)) {
        throw ('escrow failed: {0}' -f (Get-ApiErrorText $response))
    }
    foreach ($item in @($Items)) {
        $Problems.Add([pscustomobject]@{ protector_id = $item.protector_id; volume = $item.volume_guid; problem = ('refused by the appliance: {0}' -f (Get-ApiErrorText $response)) })
    }
}

# Escrows protectors in calls within the limits. Returns a hashtable protector ID -> outcome.
function Invoke-Escrow {
    param($Api, [object[]]$Protectors, $Limits, $Problems)
    $outcomes = @{}
    $items = New-Object System.Collections.Generic.List[object]
    foreach ($p in @($Protectors)) {
        $items.Add((New-EscrowItem -Protector $p -MaxKeyPackageBytes $Limits.MaxKeyPackageBytes -Problems $Problems))
    }
    if ($items.Count -eq 0) { return $outcomes }
    $split = Split-EscrowBatch -Items $items.ToArray() -MaxItems $Limits.MaxItemsPerCall -MaxBodyBytes $Limits.MaxBodyBytes
    foreach ($s in @($split.Problems)) { $Problems.Add($s) }
    foreach ($batch in @($split.Batches)) {
        Send-EscrowBatch -Api $Api -Items $batch.Items -Outcomes $outcomes -Problems $Problems
    }
    return $outcomes
}

# Check-in; returns the rotation instructions (deduplicated by protector ID).
function Invoke-CheckIn {
    param($Api, [object[]]$Volumes, [int]$MaxEntries, $Problems, [string[]]$Adapters = @())
    $plan = New-CheckInBody -Volumes $Volumes -MaxEntries $MaxEntries -Adapters $Adapters
    foreach ($s in @($plan.Skipped)) { $Problems.Add($s) }
    $instructions = New-Object System.Collections.Generic.List[object]
    $seen = @{}
    foreach ($body in @($plan.Bodies)) {
        $response = Invoke-Api -Api $Api -Method 'POST' -Path 'agent/checkin' -Json $body
        if ($response.Status -eq 401 -or $response.Status -eq 403) {
            throw (New-CertificateRefusedError (Get-ApiErrorText $response))
        }
        if (-not (Test-Success $response)) { throw ('check-in refused: {0}' -f (Get-ApiErrorText $response)) }
        foreach ($r in @(Get-OptionalProperty $response.Body 'rotations')) {
            if ($null -eq $r) { continue }
            $id = ConvertTo-BracedGuid ([string](Get-OptionalProperty $r 'protector_id'))
            if (-not $id -or $seen.ContainsKey($id)) { continue }
            $seen[$id] = $true
            $instructions.Add([pscustomobject]@{
                    protector_id = $id
                    volume_guid  = ConvertTo-BracedGuid ([string](Get-OptionalProperty $r 'volume_guid'))
                    state        = [string](Get-OptionalProperty $r 'state')
                })
        }
    }
    return , $instructions.ToArray()
}

# Physical network adapters' MAC addresses, sent at check-in (an empty list when they cannot be read).
function Get-NetworkAdapterMacAddress {
    $addresses = @()
    if (Get-Command -Name Get-NetAdapter -ErrorAction SilentlyContinue) {
        $addresses = @(foreach ($a in @(Get-NetAdapter -Physical -ErrorAction SilentlyContinue)) { [string]$a.MacAddress })
    }
    else {
        $addresses = @(foreach ($a in @(Get-CimInstance -ClassName Win32_NetworkAdapter -Filter 'PhysicalAdapter = TRUE' -ErrorAction SilentlyContinue)) { [string]$a.MACAddress })
    }
    return (ConvertTo-MacAddressList $addresses)
}

# =====================================================================================
# Rotation (two-phase): the old protector is removed only after the new one is escrowed,
# acknowledged and reported.
# =====================================================================================

function Find-Protector {
    param([object[]]$Protectors, [string]$Id)
    foreach ($p in @($Protectors)) {
        if ($p.protector_id -eq $Id) { return $p }
    }
    return $null
}

function Find-VolumeRecord {
    param([object[]]$Volumes, [string]$ProtectorId)
    foreach ($v in @($Volumes)) {
        if (@($v.protector_ids) -contains $ProtectorId) { return $v }
    }
    return $null
}

# Adds a recovery password protector through WMI (Add-BitLockerKeyProtector prints the password
# in its output and module logging); returns the new protector read back.
function Add-RecoveryPasswordProtector {
    param($VolumeRecord)
    $result = Invoke-VolumeMethod -Volume $VolumeRecord.cim -Method 'ProtectKeyWithNumericalPassword' -Arguments @{}
    $newId = ConvertTo-BracedGuid ([string]$result.VolumeKeyProtectorID)
    if (-not $newId) { throw 'ProtectKeyWithNumericalPassword returned no protector ID' }
    $VolumeRecord.protector_ids = @($VolumeRecord.protector_ids) + @($newId)
    return $newId
}

function Remove-RecoveryPasswordProtector {
    param($VolumeRecord, [string]$ProtectorId)
    $null = Invoke-VolumeMethod -Volume $VolumeRecord.cim -Method 'DeleteKeyProtector' -Arguments @{ VolumeKeyProtectorID = $ProtectorId }
    $VolumeRecord.protector_ids = @(foreach ($id in @($VolumeRecord.protector_ids)) { if ($id -ne $ProtectorId) { $id } })
}

function Send-RotationReport {
    param($Api, [string]$Old, [string]$New, [bool]$OldRemoved, [string[]]$Expected)
    $response = Invoke-Api -Api $Api -Method 'POST' -Path 'agent/rotation' -Json (New-RotationReportBody -OldProtectorId $Old -NewProtectorId $New -OldRemoved $OldRemoved)
    if (-not (Test-Success $response)) {
        throw ('rotation report (old_removed={0}) refused: {1}' -f $OldRemoved.ToString().ToLowerInvariant(), (Get-ApiErrorText $response))
    }
    $state = [string](Get-OptionalProperty $response.Body 'state')
    if (-not (@($Expected) -contains $state)) {
        throw ('rotation report (old_removed={0}) answered state "{1}", expected {2}' -f $OldRemoved.ToString().ToLowerInvariant(), $state, (@($Expected) -join ' or '))
    }
    return $state
}

# One rotation instruction. Returns 'done', 'skipped' or throws (the caller counts a failure and
# goes on with the next instruction). Every step that changes the computer is recorded in the
# state file first, so the next run resumes instead of adding another protector.
function Invoke-ProtectorRotation {
    param($Api, $State, [string]$StatePath, $Instruction, $Inventory, $Outcomes, $Limits, $Problems)
    $old = $Instruction.protector_id
    if ($Instruction.state -ne 'requested' -and $Instruction.state -ne 'new_escrowed') {
        Write-AgentLog ('rotation of {0}: state "{1}" needs nothing from the agent' -f $old, $Instruction.state)
        return 'skipped'
    }
    $pending = $null
    foreach ($entry in @($State.pending)) { if ($entry.old -eq $old) { $pending = $entry } }
    $volume = Find-VolumeRecord -Volumes $Inventory.Volumes -ProtectorId $old
    if ($null -eq $volume) {
        if ($null -ne $pending) {
            $newVolume = Find-VolumeRecord -Volumes $Inventory.Volumes -ProtectorId $pending.new
            if ($null -ne $newVolume -and $Outcomes.ContainsKey($pending.new)) {
                # Removed in an earlier run that could not report it: report it now.
                $null = Send-RotationReport -Api $Api -Old $old -New $pending.new -OldRemoved $true -Expected @('done')
                $State.pending = @(foreach ($e in @($State.pending)) { if ($e.old -ne $old) { $e } })
                Save-AgentState -Path $StatePath -State $State
                Write-AgentLog ('rotation of {0} -> {1} reported done' -f $old, $pending.new)
                return 'done'
            }
        }
        Write-AgentLog ('rotation of {0} requested, but that protector is not on this computer (volume {1}); nothing to do' -f $old, $Instruction.volume_guid) 'Warning'
        return 'skipped'
    }
    $label = $volume.mount_point
    if (-not $label) { $label = $volume.volume_guid }

    # 1. The new protector: the one this agent added earlier, an acknowledged other one on the
    #    same volume when the appliance says the new one is already escrowed, or a new one.
    $newId = $null
    if ($null -ne $pending -and (@($volume.protector_ids) -contains $pending.new)) { $newId = $pending.new }
    if (-not $newId -and $Instruction.state -eq 'new_escrowed') {
        foreach ($id in @($volume.protector_ids)) {
            if ($id -ne $old -and $Outcomes.ContainsKey($id) -and ($Outcomes[$id] -eq 'stored' -or $Outcomes[$id] -eq 'unchanged')) { $newId = $id; break }
        }
    }
    if (-not $newId) {
        $newId = Add-RecoveryPasswordProtector -VolumeRecord $volume
        $kept = @(foreach ($e in @($State.pending)) { if ($e.old -ne $old) { $e } })
        $State.pending = $kept + @([ordered]@{ old = $old; new = $newId; volume_guid = $volume.volume_guid; since = (ConvertTo-IsoTime (Get-Date)) })
        Save-AgentState -Path $StatePath -State $State
        Write-AgentLog ('rotation of {0} on {1}: added recovery protector {2}' -f $old, $label, $newId)
    }
    elseif ($null -eq $pending -or $pending.new -ne $newId) {
        $kept = @(foreach ($e in @($State.pending)) { if ($e.old -ne $old) { $e } })
        $State.pending = $kept + @([ordered]@{ old = $old; new = $newId; volume_guid = $volume.volume_guid; since = (ConvertTo-IsoTime (Get-Date)) })
        Save-AgentState -Path $StatePath -State $State
    }

    # 2. Escrow it, unless this run's escrow already did; only an acknowledgement lets us go on.
    $acknowledged = $Outcomes.ContainsKey($newId) -and ($Outcomes[$newId] -eq 'stored' -or $Outcomes[$newId] -eq 'unchanged')
    if (-not $acknowledged) {
        $newProtector = Read-RecoveryProtector -VolumeRecord $volume -ProtectorId $newId -Problems $Problems
        $single = @{}
        Send-EscrowBatch -Api $Api -Items @(New-EscrowItem -Protector $newProtector -MaxKeyPackageBytes $Limits.MaxKeyPackageBytes -Problems $Problems) -Outcomes $single -Problems $Problems
        if ($single.ContainsKey($newId)) { $Outcomes[$newId] = $single[$newId] }
        $acknowledged = $single.ContainsKey($newId) -and ($single[$newId] -eq 'stored' -or $single[$newId] -eq 'unchanged')
        if (-not $acknowledged) {
            throw ('the appliance did not acknowledge the new protector {0}; the disclosed protector {1} stays on {2}' -f $newId, $old, $label)
        }
    }

    # 3. Report it, 4. remove the disclosed protector, 5. report done.
    $null = Send-RotationReport -Api $Api -Old $old -New $newId -OldRemoved $false -Expected @('new_escrowed', 'done')
    if (@($volume.protector_ids) -contains $old) {
        Remove-RecoveryPasswordProtector -VolumeRecord $volume -ProtectorId $old
        Write-AgentLog ('rotation of {0} on {1}: removed the disclosed protector' -f $old, $label)
    }
    $null = Send-RotationReport -Api $Api -Old $old -New $newId -OldRemoved $true -Expected @('done')
    $State.pending = @(foreach ($e in @($State.pending)) { if ($e.old -ne $old) { $e } })
    Save-AgentState -Path $StatePath -State $State
    Write-AgentLog ('rotated recovery protector {0} -> {1} on {2}' -f $old, $newId, $label)
    return 'done'
}

# =====================================================================================
# Installation
# =====================================================================================

function Install-AgentTask {
    param([string]$SourcePath, [string]$Server, [string[]]$Pins, [string]$StateDirectory, [string]$Token, [string]$TokenFile, [bool]$NoTpm)
    $installDir = Join-Path $env:ProgramFiles 'netunlockd-agent'
    $target = Join-Path $installDir 'netunlockd-agent.ps1'
    if (-not (Test-Path -LiteralPath $installDir)) { $null = New-Item -ItemType Directory -Force -Path $installDir }
    if ([System.IO.Path]::GetFullPath($SourcePath) -ne [System.IO.Path]::GetFullPath($target)) {
        Copy-Item -LiteralPath $SourcePath -Destination $target -Force
    }
    Initialize-StateDirectory -Path $StateDirectory
    if ($Token) {
        [System.IO.File]::WriteAllText($TokenFile, $Token.Trim(), (New-Object System.Text.UTF8Encoding($false)))
        Write-AgentLog ('enrollment token stored in {0} (SYSTEM and Administrators only; deleted after enrollment)' -f $TokenFile)
    }
    $stateArgument = $null
    if ($StateDirectory -ne (Get-DefaultStateDirectory)) { $stateArgument = $StateDirectory }
    $arguments = Get-AgentTaskArgument -ScriptPath $target -Server $Server -Pins $Pins -StateDirectory $stateArgument -NoTpm $NoTpm -StartDelayMaxSeconds 600
    $exe = Join-Path $env:SystemRoot 'System32\WindowsPowerShell\v1.0\powershell.exe'
    $action = New-ScheduledTaskAction -Execute $exe -Argument $arguments
    $boot = New-ScheduledTaskTrigger -AtStartup
    $repeat = New-ScheduledTaskTrigger -Once -At (Get-Date) -RepetitionInterval (New-TimeSpan -Minutes 90) -RandomDelay (New-TimeSpan -Minutes 10)
    $settings = New-ScheduledTaskSettingsSet -StartWhenAvailable -MultipleInstances IgnoreNew -ExecutionTimeLimit (New-TimeSpan -Minutes 30)
    $principal = New-ScheduledTaskPrincipal -UserId 'SYSTEM' -LogonType ServiceAccount -RunLevel Highest
    $null = Register-ScheduledTask -TaskName 'netunlockd escrow agent' -Action $action -Trigger @($boot, $repeat) -Settings $settings -Principal $principal -Force
    Write-AgentLog ('scheduled task "netunlockd escrow agent" registered: {0} {1}' -f $exe, $arguments)
}

# =====================================================================================
# The run
# =====================================================================================

function Write-RunProblem {
    param($Problems)
    foreach ($p in @($Problems)) {
        $subject = $p.volume
        if ($p.protector_id) { $subject = 'protector {0} (volume {1})' -f $p.protector_id, $p.volume }
        Write-AgentLog ('{0}: {1}' -f $subject, $p.problem) 'Warning'
    }
}

# The agent's run. Returns the exit code; never throws.
function Invoke-NetunlockdAgent {
    [CmdletBinding()]
    param(
        [string]$Server,
        [string[]]$ServerCertSha256,
        [string]$EnrollmentToken,
        [string]$EnrollmentTokenFile,
        [string]$CertSubject,
        [switch]$NoTpm,
        [string]$StateDirectory,
        [int]$Retries = 4,
        [int]$RetryDelaySeconds = 15,
        [int]$StartDelayMaxSeconds = 0,
        [int]$MaxItemsPerCall = 64,
        [int]$MaxBodyBytes = 262144,
        [int]$MaxKeyPackageBytes = 65536,
        [switch]$InstallTask,
        [string]$ScriptPath
    )
    Set-StrictMode -Version Latest
    $ErrorActionPreference = 'Stop'

    $frameworkRelease = $null
    if ($PSVersionTable.PSEdition -eq 'Desktop') { $frameworkRelease = Get-DotNetFrameworkRelease }
    $psVersion = [version]('{0}.{1}' -f $PSVersionTable.PSVersion.Major, $PSVersionTable.PSVersion.Minor)
    $unsupported = Get-UnsupportedReason -Edition ([string]$PSVersionTable.PSEdition) -PSVersion $psVersion `
        -FrameworkRelease $frameworkRelease -LanguageMode ([string]$ExecutionContext.SessionState.LanguageMode)
    if ($unsupported) {
        Write-AgentLog ('netunlockd agent cannot run here: ' + $unsupported) 'Error'
        return (ConvertTo-ExitCode 'unsupported')
    }
    try {
        if (-not $Server -or $Server -notmatch '^https://[^/\s]+') { throw '-Server must be the appliance''s https:// URL, e.g. https://escrow.example:8443' }
        $pins = ConvertTo-PinList $ServerCertSha256
    }
    catch {
        Write-AgentLog ('netunlockd agent: ' + $_.Exception.Message) 'Error'
        return (ConvertTo-ExitCode 'unsupported')
    }
    if (-not $StateDirectory) { $StateDirectory = Get-DefaultStateDirectory }
    if (-not $EnrollmentTokenFile) { $EnrollmentTokenFile = Join-Path $StateDirectory 'enrollment-token.txt' }
    if (-not $CertSubject) { $CertSubject = 'CN=netunlockd-agent ' + $env:COMPUTERNAME }
    $statePath = Join-Path $StateDirectory 'state.json'

    if ($InstallTask) {
        try {
            Install-AgentTask -SourcePath $ScriptPath -Server $Server -Pins $pins -StateDirectory $StateDirectory -Token $EnrollmentToken -TokenFile $EnrollmentTokenFile -NoTpm ([bool]$NoTpm)
            return (ConvertTo-ExitCode 'success')
        }
        catch {
            Write-AgentLog ('installation failed: ' + $_.Exception.Message) 'Error'
            return (ConvertTo-ExitCode 'failed')
        }
    }

    $lock = Enter-AgentLock
    if ($null -eq $lock) {
        Write-AgentLog 'another run of the netunlockd agent is in progress; this one stops' 'Warning'
        return (ConvertTo-ExitCode 'busy')
    }
    $outcome = 'failed'
    $state = $null
    $problems = New-Object System.Collections.Generic.List[object]
    $summary = [ordered]@{ escrowed = 0; stored = 0; unchanged = 0; rotations_done = 0; rotations_failed = 0 }
    try {
        if ($StartDelayMaxSeconds -gt 0) { Start-Sleep -Seconds (Get-Random -Minimum 0 -Maximum ($StartDelayMaxSeconds + 1)) }
        Initialize-StateDirectory -Path $StateDirectory
        $state = Read-AgentState -Path $statePath
        $token = Read-EnrollmentToken -Token $EnrollmentToken -TokenFile $EnrollmentTokenFile

        $identity = Resolve-AgentIdentity -State $state -Subject $CertSubject -NoTpm ([bool]$NoTpm) -HaveToken ($null -ne $token) -StatePath $statePath
        if ($identity.Problem) {
            Write-AgentLog $identity.Problem 'Error'
            $outcome = 'not-enrolled'
            return (ConvertTo-ExitCode $outcome)
        }
        $cert = $identity.Certificate
        $keyAlgorithm = Get-CertificateKeyAlgorithm $cert
        $tls = Get-TlsProtocolPlan -KeyAlgorithm $keyAlgorithm -OsBuild ([Environment]::OSVersion.Version.Build) -KnownProtocols (Get-KnownTlsProtocol)
        if ($tls.Note) { Write-Verbose $tls.Note }
        $api = [pscustomobject]@{
            Client            = (New-ApiClient -Certificate $cert -Pins $pins -Protocols $tls.Protocols)
            BaseUrl           = $Server.TrimEnd('/') + '/api/v1/'
            Pins              = $pins
            Retries           = [Math]::Max(1, $Retries)
            RetryDelaySeconds = [Math]::Max(1, $RetryDelaySeconds)
        }
        $limits = [pscustomobject]@{ MaxItemsPerCall = [Math]::Max(1, $MaxItemsPerCall); MaxBodyBytes = $MaxBodyBytes; MaxKeyPackageBytes = $MaxKeyPackageBytes; MaxCheckInEntries = 256 }

        if ($identity.MustEnroll) {
            if (-not $token) {
                Write-AgentLog ('this computer is not enrolled yet: put an enrollment token (from `netunlockd enroll-token create`) in {0}, or run once with -EnrollmentToken' -f $EnrollmentTokenFile) 'Error'
                $outcome = 'not-enrolled'
                return (ConvertTo-ExitCode $outcome)
            }
            $enrolled = Invoke-Enrollment -Api $api -State $state -Token $token -StatePath $statePath -TokenFile $EnrollmentTokenFile -Thumbprint $cert.Thumbprint
            if (-not $enrolled.Enrolled) {
                Write-AgentLog $enrolled.Problem 'Error'
                $outcome = 'not-enrolled'
                return (ConvertTo-ExitCode $outcome)
            }
        }
        elseif ($token) {
            Write-AgentLog ('already enrolled (device {0}, certificate {1}); the enrollment token was not used' -f $state.device_id, $cert.Thumbprint)
            Remove-EnrollmentTokenFile -TokenFile $EnrollmentTokenFile
        }

        $inventory = Get-BitLockerInventory -SystemDrive $env:SystemDrive
        if (-not $inventory.Available) { Write-AgentLog $inventory.Reason 'Warning' }
        foreach ($p in @($inventory.Problems)) { $problems.Add($p) }

        try {
            $outcomes = Invoke-Escrow -Api $api -Protectors $inventory.Protectors -Limits $limits -Problems $problems
            $adapters = @()
            try { $adapters = @(Get-NetworkAdapterMacAddress) }
            catch { Write-AgentLog ('cannot list the network adapters ({0}); checking in without them' -f $_.Exception.Message) 'Warning' }
            $instructions = Invoke-CheckIn -Api $api -Volumes $inventory.Volumes -MaxEntries $limits.MaxCheckInEntries -Problems $problems -Adapters $adapters
        }
        catch {
            if (-not (Test-CertificateRefusedError $_.Exception)) { throw }
            Write-AgentLog ('the appliance does not accept this computer''s certificate {0}: {1}. The device may be revoked, or the appliance lost its enrollment: an admin can allow re-enrollment (`netunlockd escrow allow-reenroll {2}`); then delete {3} and run the agent with a new enrollment token' -f $cert.Thumbprint, $_.Exception.Message, $state.device_id, $statePath) 'Error'
            $outcome = 'not-enrolled'
            return (ConvertTo-ExitCode $outcome)
        }
        foreach ($value in $outcomes.Values) {
            $summary.escrowed++
            if ($value -eq 'stored') { $summary.stored++ }
            elseif ($value -eq 'unchanged') { $summary.unchanged++ }
        }

        $requested = @(foreach ($i in @($instructions)) { $i.protector_id })
        foreach ($instruction in @($instructions)) {
            try {
                $result = Invoke-ProtectorRotation -Api $api -State $state -StatePath $statePath -Instruction $instruction -Inventory $inventory -Outcomes $outcomes -Limits $limits -Problems $problems
                if ($result -eq 'done') { $summary.rotations_done++ }
            }
            catch {
                $summary.rotations_failed++
                $problems.Add([pscustomobject]@{ protector_id = $instruction.protector_id; volume = $instruction.volume_guid; problem = ('rotation failed: ' + $_.Exception.Message) })
            }
        }
        $present = @(foreach ($v in @($inventory.Volumes)) { @($v.protector_ids) })
        $state.pending = Select-PendingRotation -Pending $state.pending -RequestedIds $requested -PresentIds $present -Now (Get-Date).ToUniversalTime()

        Write-RunProblem $problems
        if ($problems.Count -gt 0) { $outcome = 'partial' }
        elseif (-not $inventory.Available) { $outcome = 'no-bitlocker' }
        else { $outcome = 'success' }
        Write-AgentLog ('run finished ({0}): {1} protector(s) escrowed ({2} stored, {3} unchanged), {4} problem(s), rotations {5} done / {6} failed' -f
            $outcome, $summary.escrowed, $summary.stored, $summary.unchanged, $problems.Count, $summary.rotations_done, $summary.rotations_failed)
        return (ConvertTo-ExitCode $outcome)
    }
    catch {
        Write-AgentLog ('netunlockd agent failed: ' + $_.Exception.Message) 'Error'
        $outcome = 'failed'
        return (ConvertTo-ExitCode $outcome)
    }
    finally {
        if ($null -ne $state) {
            $state.last_run = [ordered]@{
                at        = (ConvertTo-IsoTime (Get-Date))
                outcome   = $outcome
                exit_code = (ConvertTo-ExitCode $outcome)
                summary   = $summary
                problems  = @(foreach ($p in $problems) { [ordered]@{ protector_id = $p.protector_id; volume = $p.volume; problem = $p.problem } })
            }
            try { Save-AgentState -Path $statePath -State $state }
            catch { Write-AgentLog ('cannot write the state file {0}: {1}' -f $statePath, $_.Exception.Message) 'Error' }
        }
        Exit-AgentLock $lock
    }
}

# Entry point: only when run as a script, never when dot-sourced (tests load the functions).
if ($MyInvocation.InvocationName -ne '.') {
    $arguments = @{}
    foreach ($name in $PSBoundParameters.Keys) { $arguments[$name] = $PSBoundParameters[$name] }
    $arguments.ScriptPath = $MyInvocation.MyCommand.Path
    exit (Invoke-NetunlockdAgent @arguments)
}
