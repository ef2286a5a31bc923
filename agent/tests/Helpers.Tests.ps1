#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0.0' }
# Pure helpers of the agent: JSON, GUIDs, pins, limits, TLS and key plans, state migration.

BeforeAll {
    . (Join-Path $PSScriptRoot '../netunlockd-agent.ps1')
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
}

Describe 'ConvertTo-AgentJson' {
    It 'keeps insertion order and writes compact JSON' {
        $value = [ordered]@{ b = 1; a = 'x'; c = $true; d = $false; e = $null; f = @(1, 2); g = @(); h = [ordered]@{ z = 'y' } }
        ConvertTo-AgentJson $value | Should -BeExactly '{"b":1,"a":"x","c":true,"d":false,"e":null,"f":[1,2],"g":[],"h":{"z":"y"}}'
    }
    It 'escapes quotes, backslashes and control characters' {
        ConvertTo-AgentJson ("a`"b\c`nd`te" + [char]1) | Should -BeExactly '"a\"b\\c\nd\te\u0001"'
    }
    It 'writes PSCustomObjects, datetimes and large numbers' {
        $when = [datetime]::new(2026, 11, 22, 9, 14, 3, [System.DateTimeKind]::Utc)
        ConvertTo-AgentJson ([pscustomobject]@{ id = [long]9007199254740993; at = $when }) |
            Should -BeExactly '{"id":9007199254740993,"at":"2026-11-22T09:14:03Z"}'
    }
    It 'does not escape non-ASCII text (the body is UTF-8)' {
        ConvertTo-AgentJson 'Dépôt' | Should -BeExactly '"Dépôt"'
    }
}

Describe 'GUIDs, volumes and mount points' {
    It 'normalises protector IDs to the braced upper-case form' {
        ConvertTo-BracedGuid '24b0aa32-f8d0-40ba-bb05-73a800324c09' | Should -BeExactly '{24B0AA32-F8D0-40BA-BB05-73A800324C09}'
        ConvertTo-BracedGuid ' {24B0AA32-F8D0-40BA-BB05-73A800324C09} ' | Should -BeExactly '{24B0AA32-F8D0-40BA-BB05-73A800324C09}'
        ConvertTo-BracedGuid 'not a guid' | Should -BeNullOrEmpty
        ConvertTo-BracedGuid $null | Should -BeNullOrEmpty
    }
    It 'reads the volume GUID from a Win32_EncryptableVolume device ID' {
        ConvertFrom-VolumeDeviceId '\\?\Volume{5e6c3b2a-0d47-4d27-9c3e-2f3c8d0b1a11}\' | Should -BeExactly '{5E6C3B2A-0D47-4D27-9C3E-2F3C8D0B1A11}'
        ConvertFrom-VolumeDeviceId '\\?\SCSI#Disk' | Should -BeNullOrEmpty
    }
    It 'maps VolumeType, and the system drive when Windows has no VolumeType' -ForEach @(
        @{ type = 0; letter = 'D:'; expected = 'os' }
        @{ type = 1; letter = 'C:'; expected = 'fixed' }
        @{ type = 2; letter = 'E:'; expected = 'removable' }
        @{ type = $null; letter = 'C:'; expected = 'os' }
        @{ type = $null; letter = 'D:'; expected = 'fixed' }
    ) {
        Get-VolumeTypeName -VolumeType $type -DriveLetter $letter -SystemDrive 'C:' | Should -BeExactly $expected
    }
    It 'names mount points like Get-BitLockerVolume does' {
        ConvertTo-MountPoint -DriveLetter 'c:' -VolumeName $null | Should -BeExactly 'C:'
        ConvertTo-MountPoint -DriveLetter $null -VolumeName 'D:\Data\' | Should -BeExactly 'D:\Data'
        ConvertTo-MountPoint -DriveLetter $null -VolumeName 'e:\' | Should -BeExactly 'E:'
        ConvertTo-MountPoint -DriveLetter $null -VolumeName '\\?\Volume{5E6C3B2A-0D47-4D27-9C3E-2F3C8D0B1A11}\' | Should -BeNullOrEmpty
    }
}

Describe 'Test-RecoveryPassword (the appliance rule, checked before sending)' {
    It 'accepts a valid password' {
        Test-RecoveryPassword '000011-000022-000033-000044-000055-000066-000077-720885' | Should -BeTrue
    }
    It 'refuses <why>' -ForEach @(
        @{ why = 'an empty password (locked volume)'; pw = '' }
        @{ why = 'a group not divisible by 11'; pw = '000011-000022-000033-000044-000055-000066-000077-000001' }
        @{ why = 'a group above 720885'; pw = '000011-000022-000033-000044-000055-000066-000077-720896' }
        @{ why = 'the example the API docs used to show (790119 > 720885)'; pw = '123453-234564-345675-456786-567897-679008-790119-001111' }
        @{ why = 'seven groups'; pw = '000011-000022-000033-000044-000055-000066-000077' }
        @{ why = 'letters'; pw = '00001A-000022-000033-000044-000055-000066-000077-000088' }
    ) {
        Test-RecoveryPassword $pw | Should -BeFalse
    }
}

Describe 'ConvertTo-PinList (finding 11)' {
    BeforeAll {
        $hex = '9f1c' * 16
        $colons = (($hex -split '(..)' | Where-Object { $_ }) -join ':').ToUpperInvariant()
    }
    It 'accepts <form>' -ForEach @(
        @{ form = 'plain hex' ; text = 'plain' }
        @{ form = 'colon-separated upper case'; text = 'colons' }
        @{ form = 'openssl 3 output'; text = 'openssl3' }
        @{ form = 'openssl 1.1 output'; text = 'openssl11' }
        @{ form = 'certutil output'; text = 'certutil' }
    ) {
        $given = switch ($text) {
            'plain' { $hex }
            'colons' { $colons }
            'openssl3' { 'sha256 Fingerprint=' + $colons }
            'openssl11' { 'SHA256 Fingerprint=' + $colons }
            'certutil' { 'Cert Hash(sha256): ' + (($hex -split '(..)' | Where-Object { $_ }) -join ' ') }
        }
        $pins = ConvertTo-PinList @($given)
        @($pins).Count | Should -Be 1
        $pins[0] | Should -BeExactly $hex
    }
    It 'accepts a list, comma-separated or as an array, without duplicates' {
        $other = 'ab' * 32
        $pins = ConvertTo-PinList @("$hex,$other", $colons)
        ($pins -join ',') | Should -BeExactly "$hex,$other"
        @(ConvertTo-PinList @("$hex; $other")).Count | Should -Be 2
    }
    It 'returns an empty list when no pin is given' {
        @(ConvertTo-PinList $null).Count | Should -Be 0
    }
    It 'refuses an SPKI (curl --pinnedpubkey) pin with a message that says so' {
        { ConvertTo-PinList @('sha256//YhKJKSzoTt2b5FP18fvpHo7fJYqQCjAa3HWY3tvRMwE=') } | Should -Throw -ExpectedMessage '*public-key (SPKI) pin*'
        { ConvertTo-PinList @('abcd') } | Should -Throw -ExpectedMessage '*64 hex digits*'
    }
}

Describe 'TLS and key plans (findings 2, 3, 4)' {
    It 'offers <expected> for a <key> key on build <build> (TLS 1.3 known: <known>)' -ForEach @(
        @{ key = 'RSA'; build = 20348; known = $true; expected = 'Tls12' }
        @{ key = 'ECDSA'; build = 20348; known = $true; expected = 'Tls12,Tls13' }
        @{ key = 'ECDSA'; build = 17763; known = $true; expected = 'Tls12' }
        @{ key = 'ECDSA'; build = 14393; known = $false; expected = 'Tls12' }
        @{ key = 'ECDSA'; build = 26100; known = $false; expected = 'Tls12' }
    ) {
        $knownProtocols = @('Tls', 'Tls11', 'Tls12')
        if ($known) { $knownProtocols += 'Tls13' }
        $plan = Get-TlsProtocolPlan -KeyAlgorithm $key -OsBuild $build -KnownProtocols $knownProtocols
        ($plan.Protocols -join ',') | Should -BeExactly $expected
        if ($key -eq 'RSA') { $plan.Note | Should -Match 'RSA-PSS' }
    }
    It 'tries ECDSA P-256 in the TPM, then RSA in the TPM, then software' {
        $plan = Get-KeyCreationPlan -TpmUsable $true -TpmHasEcc $true -NoTpm $false
        (@($plan | ForEach-Object { '{0}/{1}' -f $_.Provider, $_.Algorithm }) -join '|') | Should -BeExactly (
            'Microsoft Platform Crypto Provider/ECDSA_nistP256|Microsoft Platform Crypto Provider/RSA|' +
            'Microsoft Software Key Storage Provider/ECDSA_nistP256')
    }
    It 'skips ECDSA on a TPM without ECC and uses software only without a TPM or with -NoTpm' {
        (Get-KeyCreationPlan -TpmUsable $true -TpmHasEcc $false -NoTpm $false).Count | Should -Be 2
        $soft = Get-KeyCreationPlan -TpmUsable $false -TpmHasEcc $false -NoTpm $false
        @($soft).Count | Should -Be 1
        $soft[0].InTpm | Should -BeFalse
        @(Get-KeyCreationPlan -TpmUsable $true -TpmHasEcc $true -NoTpm $true).Count | Should -Be 1
    }
    It 'reads the TPM state from Win32_Tpm' {
        (Test-TpmUsable $null).Usable | Should -BeFalse
        (Test-TpmUsable ([pscustomobject]@{ IsEnabled_InitialValue = $false; IsActivated_InitialValue = $true; SpecVersion = '2.0, 0, 1.38' })).Usable | Should -BeFalse
        $tpm12 = Test-TpmUsable ([pscustomobject]@{ IsEnabled_InitialValue = $true; IsActivated_InitialValue = $true; SpecVersion = '1.2, 2, 3' })
        $tpm12.Usable | Should -BeTrue
        $tpm12.HasEcc | Should -BeFalse
        (Test-TpmUsable ([pscustomobject]@{ IsEnabled_InitialValue = $true; IsActivated_InitialValue = $true; SpecVersion = '2.0, 0, 1.38' })).HasEcc | Should -BeTrue
    }
}

Describe 'Environment checks (findings 9, 14)' {
    It 'refuses <why>' -ForEach @(
        @{ why = 'PowerShell 5.0'; edition = 'Desktop'; version = '5.0'; release = 528040; mode = 'FullLanguage'; pattern = '*too old*' }
        @{ why = '.NET Framework 4.6.2 (Server 2016 RTM)'; edition = 'Desktop'; version = '5.1'; release = 394802; mode = 'FullLanguage'; pattern = '*4.7.1*' }
        @{ why = 'no .NET Framework release key'; edition = 'Desktop'; version = '5.1'; release = $null; mode = 'FullLanguage'; pattern = '*4.7.1*' }
        @{ why = 'ConstrainedLanguage (WDAC/AppLocker)'; edition = 'Desktop'; version = '5.1'; release = 528040; mode = 'ConstrainedLanguage'; pattern = '*sign the script*' }
    ) {
        Get-UnsupportedReason -Edition $edition -PSVersion ([version]$version) -FrameworkRelease $release -LanguageMode $mode | Should -BeLike $pattern
    }
    It 'accepts .NET Framework 4.7.1+ on Windows PowerShell and any PowerShell 7' {
        Get-UnsupportedReason -Edition 'Desktop' -PSVersion ([version]'5.1') -FrameworkRelease 461308 -LanguageMode 'FullLanguage' | Should -BeNullOrEmpty
        Get-UnsupportedReason -Edition 'Core' -PSVersion ([version]'7.4') -FrameworkRelease $null -LanguageMode 'FullLanguage' | Should -BeNullOrEmpty
    }
}

Describe 'BitLocker errors (findings 5, 6)' {
    It 'names FVE_E_LOCKED_VOLUME whether WMI gives it signed or unsigned' {
        Get-BitLockerErrorText 2150694912 | Should -BeLike '*locked*0x80310000*'
        Get-BitLockerErrorText (-2144272384) | Should -BeLike '*locked*0x80310000*'
        Get-BitLockerErrorText 5 | Should -BeExactly 'error 0x00000005'
    }
    It 'recognises a missing BitLocker WMI provider, and only that' {
        $missing = New-Object System.Management.Automation.RuntimeException('Invalid namespace ')
        Get-BitLockerUnavailableReason $missing | Should -BeLike '*BitLocker feature is not installed*'
        $denied = New-Object System.UnauthorizedAccessException('Access denied')
        Get-BitLockerUnavailableReason $denied | Should -BeNullOrEmpty
    }
}

Describe 'Batching within the appliance limits (finding 6)' {
    BeforeAll {
        function New-TestItem([int]$n, [int]$packageChars = 0) {
            $item = [ordered]@{ volume_guid = '{5E6C3B2A-0D47-4D27-9C3E-2F3C8D0B1A11}'; mount_point = 'C:'; volume_type = 'os'
                protector_id = ('{{00000000-0000-0000-0000-{0:D12}}}' -f $n); recovery_password = '000011-000022-000033-000044-000055-000066-000077-000088' }
            if ($packageChars -gt 0) { $item.key_package = 'A' * $packageChars }
            return $item
        }
    }
    It 'never puts more than MaxItems protectors in one call' {
        $items = @(1..130 | ForEach-Object { New-TestItem $_ })
        $split = Split-EscrowBatch -Items $items -MaxItems 64 -MaxBodyBytes 262144
        (@($split.Batches | ForEach-Object { $_.Items.Count }) -join ',') | Should -BeExactly '64,64,2'
        @($split.Problems).Count | Should -Be 0
    }
    It 'never builds a body larger than MaxBodyBytes, and each body is what the batch serialises to' {
        $items = @(1..7 | ForEach-Object { New-TestItem $_ 30000 })
        $split = Split-EscrowBatch -Items $items -MaxItems 64 -MaxBodyBytes 65536
        foreach ($b in $split.Batches) {
            [System.Text.Encoding]::UTF8.GetByteCount($b.Json) | Should -BeLessOrEqual 65536
            $b.Json | Should -BeExactly (ConvertTo-AgentJson ([ordered]@{ items = $b.Items }))
        }
        (@($split.Batches | ForEach-Object { $_.Items.Count }) -join ',') | Should -BeExactly '2,2,2,1'
    }
    It 'sends an entry too large for any body without its key package, and reports it' {
        $split = Split-EscrowBatch -Items @((New-TestItem 1 70000), (New-TestItem 2)) -MaxItems 64 -MaxBodyBytes 65536
        @($split.Batches).Count | Should -Be 1
        $split.Batches[0].Json | Should -Not -Match 'key_package'
        @($split.Problems).Count | Should -Be 1
        $split.Problems[0].protector_id | Should -BeExactly '{00000000-0000-0000-0000-000000000001}'
    }
    It 'leaves out a key package above the appliance limit but keeps the password' {
        $problems = New-Object System.Collections.Generic.List[object]
        $p = [pscustomobject]@{ volume_guid = '{5E6C3B2A-0D47-4D27-9C3E-2F3C8D0B1A11}'; mount_point = $null; volume_type = 'fixed'
            protector_id = '{00000000-0000-0000-0000-000000000009}'; recovery_password = 'pw'; key_package = 'QUJD'; key_package_bytes = 65537 }
        $item = New-EscrowItem -Protector $p -MaxKeyPackageBytes 65536 -Problems $problems
        ConvertTo-AgentJson $item | Should -BeExactly '{"volume_guid":"{5E6C3B2A-0D47-4D27-9C3E-2F3C8D0B1A11}","volume_type":"fixed","protector_id":"{00000000-0000-0000-0000-000000000009}","recovery_password":"pw"}'
        $problems.Count | Should -Be 1
    }
    It 'never splits a volume across check-ins, and leaves out a volume too large for one' {
        $volumes = @(
            [pscustomobject]@{ volume_guid = '{A}'; protector_ids = @('{1}', '{2}', '{3}') }
            [pscustomobject]@{ volume_guid = '{B}'; protector_ids = @('{4}', '{5}') }
            [pscustomobject]@{ volume_guid = '{C}'; protector_ids = @('{6}', '{7}', '{8}', '{9}', '{10}') }
            [pscustomobject]@{ volume_guid = '{D}'; protector_ids = @() }
        )
        $plan = New-CheckInBody -Volumes $volumes -MaxEntries 4
        @($plan.Bodies).Count | Should -Be 2
        $plan.Bodies[0] | Should -BeExactly '{"protectors":[{"volume_guid":"{A}","protector_id":"{1}"},{"volume_guid":"{A}","protector_id":"{2}"},{"volume_guid":"{A}","protector_id":"{3}"}]}'
        $plan.Bodies[1] | Should -BeExactly '{"protectors":[{"volume_guid":"{B}","protector_id":"{4}"},{"volume_guid":"{B}","protector_id":"{5}"}]}'
        @($plan.Skipped).Count | Should -Be 1
        $plan.Skipped[0].volume | Should -BeExactly '{C}'
    }
    It 'sends the adapters in every check-in body, and leaves the key out when there are none' {
        $volumes = @(
            [pscustomobject]@{ volume_guid = '{A}'; protector_ids = @('{1}') }
            [pscustomobject]@{ volume_guid = '{B}'; protector_ids = @('{2}') }
        )
        $plan = New-CheckInBody -Volumes $volumes -MaxEntries 1 -Adapters @('00:15:5D:01:02:03', 'AA:BB:CC:DD:EE:FF')
        @($plan.Bodies).Count | Should -Be 2
        $plan.Bodies[0] | Should -BeExactly '{"protectors":[{"volume_guid":"{A}","protector_id":"{1}"}],"adapters":["00:15:5D:01:02:03","AA:BB:CC:DD:EE:FF"]}'
        $plan.Bodies[1] | Should -BeExactly '{"protectors":[{"volume_guid":"{B}","protector_id":"{2}"}],"adapters":["00:15:5D:01:02:03","AA:BB:CC:DD:EE:FF"]}'
        (New-CheckInBody -Volumes @() -MaxEntries 256 -Adapters @()).Bodies[0] | Should -BeExactly '{"protectors":[]}'
    }
    It 'checks in with an empty list when there is nothing to report' {
        $bodies = @((New-CheckInBody -Volumes @() -MaxEntries 256).Bodies)
        $bodies.Count | Should -Be 1
        $bodies[0] | Should -BeExactly '{"protectors":[]}'
    }
}

Describe 'Retries (finding 12)' {
    It 'backs off exponentially with jitter, capped at 300 s' -ForEach @(
        @{ attempt = 1; random = 0.0; expected = 5 }
        @{ attempt = 1; random = 1.0; expected = 15 }
        @{ attempt = 3; random = 0.5; expected = 40 }
        @{ attempt = 12; random = 0.5; expected = 300 }
        @{ attempt = 12; random = 1.0; expected = 450 }
    ) {
        Get-RetryDelaySeconds -Attempt $attempt -BaseSeconds 10 -Random $random | Should -Be $expected
    }
    It 'retries 408, 429 and 5xx, nothing else' {
        foreach ($s in 408, 429, 500, 502, 503, 504) { Test-RetryableStatus $s | Should -BeTrue }
        foreach ($s in 200, 400, 401, 403, 404, 409, 410, 413, 415) { Test-RetryableStatus $s | Should -BeFalse }
    }
    It 'logs the whole exception chain' {
        $inner = New-Object System.Security.Authentication.AuthenticationException('The remote certificate was rejected by the provided RemoteCertificateValidationCallback.')
        $outer = New-Object System.Net.Http.HttpRequestException('The SSL connection could not be established, see inner exception.', $inner)
        $chain = Get-ExceptionChain $outer
        $chain | Should -BeLike 'HttpRequestException: The SSL connection*-> AuthenticationException: The remote certificate was rejected*'
    }
    It 'tells <kind> apart' -ForEach @(
        @{ kind = 'a wrong pin'; chain = 'AuthenticationException: rejected'; presented = ('cd' * 32); pattern = 'wrong pin*' + ('cd' * 32) + '*' }
        @{ kind = 'a TLS version mismatch'; chain = 'Win32Exception: The client and server cannot communicate, because they do not possess a common algorithm'; presented = $null; pattern = 'no common TLS version*' }
        @{ kind = 'a TPM signing failure'; chain = 'Win32Exception: The credentials supplied to the package were not recognized'; presented = $null; pattern = '*private key could not sign*' }
        @{ kind = 'an untrusted appliance certificate'; chain = 'AuthenticationException: The remote certificate is invalid according to the validation procedure'; presented = $null; pattern = '*not trusted*' }
        @{ kind = 'an unreachable appliance'; chain = 'SocketException: No such host is known'; presented = $null; pattern = '*could not be reached*' }
    ) {
        Get-FailureHint -Chain $chain -PresentedFingerprint $presented -Pins @('ab' * 32) | Should -BeLike $pattern
    }
    It 'reads a non-JSON error answer without failing' {
        $r = [pscustomobject]@{ Status = 502; Body = (Read-ApiBody '<html><body>Bad Gateway</body></html>'); Text = '<html><body>Bad Gateway</body></html>' }
        $r.Body | Should -BeNullOrEmpty
        Get-ApiErrorText $r | Should -BeLike 'HTTP 502 (not a netunlockd answer: <html><body>Bad Gateway*'
        $json = [pscustomobject]@{ Status = 410; Body = (Read-ApiBody '{"error":{"code":"gone","message":"expired"}}'); Text = '' }
        Get-ApiErrorText $json | Should -BeExactly '410 (gone): expired'
    }
}

Describe 'Exit codes (finding 12)' {
    It 'maps <outcome> to <code>' -ForEach @(
        @{ outcome = 'success'; code = 0 }
        @{ outcome = 'failed'; code = 1 }
        @{ outcome = 'not-enrolled'; code = 2 }
        @{ outcome = 'no-bitlocker'; code = 3 }
        @{ outcome = 'partial'; code = 4 }
        @{ outcome = 'busy'; code = 5 }
        @{ outcome = 'unsupported'; code = 6 }
    ) {
        ConvertTo-ExitCode $outcome | Should -Be $code
    }
}

Describe 'State file (findings 10, 13)' {
    It 'migrates the state of the previous agent version' {
        $old = '{"enrolled":true,"device_id":7,"pending":[{"old":"{24b0aa32-f8d0-40ba-bb05-73a800324c09}","new":"8f1d0000-0000-0000-0000-000000000001"}]}' | ConvertFrom-Json
        $state = ConvertTo-AgentState $old
        $state.enrolled | Should -BeTrue
        $state.device_id | Should -Be 7
        $state.certificate_thumbprint | Should -BeNullOrEmpty
        @($state.pending).Count | Should -Be 1
        $state.pending[0].old | Should -BeExactly '{24B0AA32-F8D0-40BA-BB05-73A800324C09}'
        $state.pending[0].new | Should -BeExactly '{8F1D0000-0000-0000-0000-000000000001}'
        $state.pending[0].since | Should -Match '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$'
    }
    It 'round-trips through the file, with times PowerShell 7 parses as DateTime' {
        $path = Join-Path $TestDrive 'state.json'
        $state = ConvertTo-AgentState $null
        $state.certificate_thumbprint = 'A1B2'
        $state.enrolled = $true
        $state.pending = @([ordered]@{ old = '{24B0AA32-F8D0-40BA-BB05-73A800324C09}'; new = '{8F1D0000-0000-0000-0000-000000000001}'; volume_guid = $null; since = '2026-11-22T09:14:03Z' })
        Save-AgentState -Path $path -State $state
        Save-AgentState -Path $path -State $state
        $again = Read-AgentState -Path $path
        $again.certificate_thumbprint | Should -BeExactly 'A1B2'
        $again.pending[0].since | Should -BeExactly '2026-11-22T09:14:03Z'
        Test-Path ($path + '.tmp') | Should -BeFalse
    }
    It 'starts from an empty state when the file is damaged' {
        Mock Write-AgentEvent { return }
        $path = Join-Path $TestDrive 'broken.json'
        Set-Content -Path $path -Value '{"enrolled": tru'
        (Read-AgentState -Path $path 3>$null 6>$null).enrolled | Should -BeFalse
    }
    It 'keeps pending rotations the appliance still asks for, drops finished and stale ones' {
        $now = [datetime]::new(2026, 12, 1, 0, 0, 0, [System.DateTimeKind]::Utc)
        $pending = @(
            [ordered]@{ old = '{1}'; new = '{A}'; since = '2026-11-30T00:00:00Z' }  # still asked for
            [ordered]@{ old = '{2}'; new = '{B}'; since = '2026-11-30T00:00:00Z' }  # old still here, recent
            [ordered]@{ old = '{3}'; new = '{C}'; since = '2026-09-01T00:00:00Z' }  # old still here, stale
            [ordered]@{ old = '{4}'; new = '{D}'; since = '2026-11-30T00:00:00Z' }  # old gone, not asked for
        )
        $kept = Select-PendingRotation -Pending $pending -RequestedIds @('{1}') -PresentIds @('{2}', '{3}', '{A}') -Now $now
        (@($kept | ForEach-Object { $_.old }) -join ',') | Should -BeExactly '{1},{2}'
    }
}

Describe 'Scheduled task and adapters (findings 12, 14; issue 10 preparation)' {
    It 'puts no token on the command line and adds the random start delay' {
        $arguments = Get-AgentTaskArgument -ScriptPath 'C:\Program Files\netunlockd-agent\netunlockd-agent.ps1' -Server 'https://escrow.example:8443' `
            -Pins @(('ab' * 32), ('cd' * 32)) -StateDirectory $null -NoTpm $false -StartDelayMaxSeconds 600
        $arguments | Should -BeExactly ('-NoProfile -NonInteractive -ExecutionPolicy Bypass -File "C:\Program Files\netunlockd-agent\netunlockd-agent.ps1" ' +
            '-Server https://escrow.example:8443 -ServerCertSha256 ' + ('ab' * 32) + ',' + ('cd' * 32) + ' -StartDelayMaxSeconds 600')
        $arguments | Should -Not -Match 'Token'
    }
    It 'normalises adapter MAC addresses' {
        (ConvertTo-MacAddressList @('00-15-5D-01-02-03', '00:15:5d:01:02:03', 'AA-BB-CC-DD-EE-FF', '', '00-00-00-00-00-00', $null)) -join ',' |
            Should -BeExactly '00:15:5D:01:02:03,AA:BB:CC:DD:EE:FF'
    }
}
