#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0.0' }
# Whole runs of Invoke-NetunlockdAgent with BitLocker, the certificate store and the appliance
# mocked: exit codes, enrollment rules, check-in without BitLocker, one failed rotation not
# stopping the others, installation, one run at a time, and no recovery password anywhere.

BeforeAll {
    . (Join-Path $PSScriptRoot '../netunlockd-agent.ps1')
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')

    Mock Write-AgentEvent { $global:NuEvents.Add(('{0} {1}' -f $Level, $Message)) }
    Mock Set-AgentStateAcl { return }
    Mock Enter-AgentLock { 'test-lock' }
    Mock Exit-AgentLock { return }
    Mock Start-Sleep { return }
    Mock Get-MachineCertificate { New-FakeCertificate }
    Mock Test-CertificateKey { return }
    Mock New-ApiClient { 'fake-client' }
    Mock Send-ApiRequest { Invoke-FakeAppliance -Method $Method -Url $Url -Json $Json }
    Mock Invoke-CimMethod { Invoke-FakeVolumeMethod -Volume $InputObject -Method $MethodName -Arguments $Arguments }
    Mock Get-CimInstance -ParameterFilter { $ClassName -eq 'Win32_EncryptableVolume' } {
        if ($global:NuBitLockerMissing) { throw (New-Object System.Management.Automation.RuntimeException('Invalid namespace ')) }
        $global:NuVolumes
    }
    Mock Get-CimInstance -ParameterFilter { $ClassName -eq 'Win32_Volume' } {
        foreach ($v in $global:NuVolumes) { if ($v.FakeName) { [pscustomobject]@{ DeviceID = $v.DeviceID; Name = $v.FakeName } } }
    }
    Mock Get-CimInstance -ParameterFilter { $ClassName -eq 'Win32_ComputerSystem' } { [pscustomobject]@{ PartOfDomain = $true; Domain = 'corp.example' } }
    Mock Get-CimInstance -ParameterFilter { $ClassName -eq 'Win32_BIOS' } { [pscustomobject]@{ SerialNumber = 'VMware-42 1a 2b' } }

    function Use-Case {
        param([string]$Case)
        $inventory = Get-FixtureJson "$Case/inventory.json"
        $global:NuBitLockerMissing = ($null -ne $inventory.PSObject.Properties['bitlocker_missing']) -and $inventory.bitlocker_missing
        $global:NuVolumes = New-FakeVolumes $inventory
        return $inventory
    }

    function Set-EnrolledState {
        param([string]$Directory)
        $null = New-Item -ItemType Directory -Force -Path $Directory
        $state = ConvertTo-AgentState $null
        $state.certificate_thumbprint = 'A1B2C3D4E5F60718293A4B5C6D7E8F9012345678'
        $state.enrolled = $true
        $state.device_id = 7
        Save-AgentState -Path (Join-Path $Directory 'state.json') -State $state
    }

    # Runs the agent; returns the exit code, every stream's records (success stream separately)
    # and what went to stderr.
    function Invoke-TestAgent {
        param([hashtable]$Extra = @{})
        $params = @{
            Server           = 'https://escrow.test:8443'
            ServerCertSha256 = @('ab' * 32)
            StateDirectory   = $global:NuStateDir
            Retries          = 2
        }
        foreach ($k in $Extra.Keys) { $params[$k] = $Extra[$k] }
        $stderr = New-Object System.IO.StringWriter
        $savedError = [Console]::Error
        [Console]::SetError($stderr)
        try {
            $records = @(Invoke-NetunlockdAgent @params -Verbose *>&1)
        }
        finally {
            [Console]::SetError($savedError)
        }
        $success = @(foreach ($r in $records) {
                if (-not ($r -is [System.Management.Automation.InformationRecord] -or $r -is [System.Management.Automation.WarningRecord] -or
                        $r -is [System.Management.Automation.VerboseRecord] -or $r -is [System.Management.Automation.DebugRecord] -or
                        $r -is [System.Management.Automation.ErrorRecord])) { $r }
            })
        return [pscustomobject]@{
            Success = $success
            Code    = $success[-1]
            Text    = ((@($records | ForEach-Object { "$_" }) + @($stderr.ToString())) -join "`n")
            Stderr  = $stderr.ToString()
        }
    }
}

Describe 'a run' {
    BeforeEach {
        $global:NuEvents = New-Object System.Collections.Generic.List[string]
        $global:NuStateDir = Join-Path $TestDrive ('agent-' + [guid]::NewGuid().ToString('N'))
        Reset-FakeAppliance
        Reset-CallLog
    }

    It 'escrows, checks in and exits 0, with nothing but the exit code on the success stream (finding 1)' {
        $null = Use-Case 'several-volumes'
        Set-EnrolledState $global:NuStateDir
        $run = Invoke-TestAgent
        $run.Success.Count | Should -Be 1
        $run.Code | Should -Be 0
        @(Get-ReceivedBody 'agent/escrow')[0] | Should -BeExactly (Get-FixtureText 'several-volumes/escrow-1.json')
        @(Get-ReceivedBody 'agent/checkin')[0] | Should -BeExactly (Get-FixtureText 'several-volumes/checkin-1.json')
        @(Get-ReceivedBody 'enroll').Count | Should -Be 0
        $state = Read-AgentState -Path (Join-Path $global:NuStateDir 'state.json')
        $state.last_run.outcome | Should -BeExactly 'success'
        $state.last_run.exit_code | Should -Be 0
    }

    It 'checks in without BitLocker and exits 3 (finding 5)' {
        $null = Use-Case 'no-bitlocker'
        Set-EnrolledState $global:NuStateDir
        $run = Invoke-TestAgent
        $run.Code | Should -Be 3
        @(Get-ReceivedBody 'agent/escrow').Count | Should -Be 0
        @(Get-ReceivedBody 'agent/checkin') | Should -Be '{"protectors":[]}'
        $run.Text | Should -BeLike '*BitLocker feature is not installed*'
    }

    It 'escrows the rest and exits 4 when a volume is locked (finding 6)' {
        $null = Use-Case 'locked-volume'
        Set-EnrolledState $global:NuStateDir
        $run = Invoke-TestAgent
        $run.Code | Should -Be 4
        @(Get-ReceivedBody 'agent/escrow')[0] | Should -BeExactly (Get-FixtureText 'locked-volume/escrow-1.json')
        @(Get-ReceivedBody 'agent/checkin')[0] | Should -BeExactly (Get-FixtureText 'locked-volume/checkin-1.json')
        $run.Text | Should -BeLike '*volume is locked*'
        (Read-AgentState -Path (Join-Path $global:NuStateDir 'state.json')).last_run.problems.Count | Should -Be 2
    }

    It 'exits 1 with the reason when the appliance cannot be reached' {
        $null = Use-Case 'several-volumes'
        Set-EnrolledState $global:NuStateDir
        Mock Send-ApiRequest { throw (New-Object System.Net.Http.HttpRequestException('No such host is known. (escrow.test:8443)')) }
        $run = Invoke-TestAgent
        $run.Code | Should -Be 1
        $run.Stderr | Should -BeLike '*could not be reached*'
    }

    It 'exits 5 when another run holds the lock, touching nothing' {
        $null = Use-Case 'several-volumes'
        Mock Enter-AgentLock { return }
        $run = Invoke-TestAgent
        $run.Code | Should -Be 5
        $global:NuAppliance.Received.Count | Should -Be 0
        Test-Path $global:NuStateDir | Should -BeFalse
    }

    It 'exits 6 for <why>' -ForEach @(
        @{ why = 'a malformed pin'; extra = @{ ServerCertSha256 = @('sha256//base64spki=') } }
        @{ why = 'a plain-HTTP URL'; extra = @{ Server = 'http://escrow.test:8443' } }
    ) {
        $run = Invoke-TestAgent -Extra $extra
        $run.Code | Should -Be 6
        $global:NuAppliance.Received.Count | Should -Be 0
    }

    It 'exits 6 with the reason when this PowerShell cannot run the agent (finding 9)' {
        Mock Get-UnsupportedReason { '.NET Framework 4.7.1 or later is required' }
        $run = Invoke-TestAgent
        $run.Code | Should -Be 6
        $run.Stderr | Should -BeLike '*4.7.1*'
    }
}

Describe 'enrollment in a run (findings 7, 10, 14)' {
    BeforeEach {
        $global:NuEvents = New-Object System.Collections.Generic.List[string]
        $global:NuStateDir = Join-Path $TestDrive ('agent-' + [guid]::NewGuid().ToString('N'))
        $null = New-Item -ItemType Directory -Force -Path $global:NuStateDir
        $tokenFile = Join-Path $global:NuStateDir 'enrollment-token.txt'
        Reset-FakeAppliance
        Reset-CallLog
        $null = Use-Case 'several-volumes'
        Mock New-AgentCertificate { New-FakeCertificate }
    }

    It 'exits 2 without sending anything when not enrolled and no token is there' {
        $run = Invoke-TestAgent
        $run.Code | Should -Be 2
        $global:NuAppliance.Received.Count | Should -Be 0
        $run.Stderr | Should -BeLike '*not enrolled yet*enrollment-token.txt*'
    }

    It 'enrolls with the token file, deletes it, then escrows' {
        Set-Content -Path $tokenFile -Value ' nue_FIXTURExFIXTURExFIXTURExFIXTURExFIXTURExFI '
        $run = Invoke-TestAgent
        $run.Code | Should -Be 0
        @(Get-ReceivedBody 'enroll')[0] | Should -BeExactly ('{"token":"nue_FIXTURExFIXTURExFIXTURExFIXTURExFIXTURExFI","computer_name":"' + $env:COMPUTERNAME + '","domain":"corp.example","serial":"VMware-42 1a 2b"}')
        Test-Path $tokenFile | Should -BeFalse
        $state = Read-AgentState -Path (Join-Path $global:NuStateDir 'state.json')
        $state.enrolled | Should -BeTrue
        $state.device_id | Should -Be 7
        $state.certificate_thumbprint | Should -BeExactly 'A1B2C3D4E5F60718293A4B5C6D7E8F9012345678'
        $global:NuCalls[0] | Should -BeExactly 'api enroll'
    }

    It 'does not enroll again when enrolled, even with a token left behind, and deletes the token file' {
        Set-EnrolledState $global:NuStateDir
        Set-Content -Path $tokenFile -Value 'nue_expired'
        $run = Invoke-TestAgent
        $run.Code | Should -Be 0
        @(Get-ReceivedBody 'enroll').Count | Should -Be 0
        Test-Path $tokenFile | Should -BeFalse
    }

    It 'exits 2 and keeps the token file when the token is refused (410)' {
        Set-Content -Path $tokenFile -Value 'nue_expired'
        Add-ScriptedAnswer 'enroll' ([pscustomobject]@{ Status = 410; Text = '{"error":{"code":"gone","message":"this enrollment token has expired; ask an admin for a new one"}}' })
        $run = Invoke-TestAgent
        $run.Code | Should -Be 2
        Test-Path $tokenFile | Should -BeTrue
        $run.Stderr | Should -BeLike '*expired*enroll-token create*'
        @(Get-ReceivedBody 'agent/escrow').Count | Should -Be 0
    }

    It 'exits 2 with what to do when the enrolled certificate is gone (finding 10)' {
        Set-EnrolledState $global:NuStateDir
        Mock Get-MachineCertificate { return }
        $run = Invoke-TestAgent
        $run.Code | Should -Be 2
        $run.Stderr | Should -BeLike '*A1B2C3D4E5F60718293A4B5C6D7E8F9012345678*allow-reenroll 7*'
        Should -Invoke New-AgentCertificate -Times 0 -Exactly
    }

    It 'exits 2 with what to do when the appliance refuses the certificate (403)' {
        Set-EnrolledState $global:NuStateDir
        Add-ScriptedAnswer 'agent/escrow' ([pscustomobject]@{ Status = 403; Text = '{"error":{"code":"forbidden","message":"device revoked"}}' })
        $run = Invoke-TestAgent
        $run.Code | Should -Be 2
        $run.Stderr | Should -BeLike '*does not accept this computer''s certificate*allow-reenroll 7*'
    }
}

Describe 'rotations in a run (finding 13)' {
    BeforeEach {
        $global:NuEvents = New-Object System.Collections.Generic.List[string]
        $global:NuStateDir = Join-Path $TestDrive ('agent-' + [guid]::NewGuid().ToString('N'))
        Reset-FakeAppliance
        Reset-CallLog
        $inventory = Use-Case 'several-volumes'
        Set-EnrolledState $global:NuStateDir
        $newSpec = Get-FixtureJson 'rotation/new-protector.json'
        $global:NuVolumes[0].FakeNew.Enqueue((New-FakeProtector $newSpec))
        $oldC = [string]$inventory.volumes[0].protectors[0].id
        $oldD = [string]$inventory.volumes[1].protectors[0].id
        $global:NuAppliance.Rotations = ('[{{"volume_guid":"{0}","protector_id":"{1}","state":"requested","requested_at":"2026-11-22T09:14:03Z"}},' +
            '{{"volume_guid":"{2}","protector_id":"{3}","state":"requested","requested_at":"2026-11-22T09:15:00Z"}}]') -f
        (ConvertFrom-VolumeDeviceId $inventory.volumes[1].device_id), $oldD, (ConvertFrom-VolumeDeviceId $inventory.volumes[0].device_id), $oldC
    }

    It 'goes on with the next instruction after one fails, and exits 4' {
        $global:NuVolumes[1].FakeFail['ProtectKeyWithNumericalPassword'] = 2150694912
        $run = Invoke-TestAgent
        $run.Code | Should -Be 4
        $reports = @(Get-ReceivedBody 'agent/rotation')
        $reports.Count | Should -Be 2
        $reports[1] | Should -BeExactly (Get-FixtureText 'rotation/report-done.json')
        $null -ne (Find-FakeProtector $global:NuVolumes[1] $oldD) | Should -BeTrue
        $null -ne (Find-FakeProtector $global:NuVolumes[0] $oldC) | Should -BeFalse
        $state = Read-AgentState -Path (Join-Path $global:NuStateDir 'state.json')
        $state.last_run.summary.rotations_done | Should -Be 1
        $state.last_run.summary.rotations_failed | Should -Be 1
    }

    It 'writes no recovery password to any stream, event, stderr or the state file' {
        $global:NuAppliance.Outcome = 'mismatch'   # warnings for every protector
        $first = Invoke-TestAgent
        $global:NuAppliance.Outcome = 'stored'
        $second = Invoke-TestAgent
        $passwords = @(Get-InventoryPasswords $inventory) + @([string]$newSpec.password)
        $passwords.Count | Should -BeGreaterThan 5
        $stateText = [System.IO.File]::ReadAllText((Join-Path $global:NuStateDir 'state.json'))
        $everything = @($first.Text, $second.Text, $stateText) + @($global:NuEvents)
        foreach ($pw in $passwords) {
            foreach ($text in $everything) { $text.Contains($pw) | Should -BeFalse -Because 'recovery passwords never leave memory except to the appliance' }
            # Also without the hyphens, as a number could be logged.
            foreach ($text in $everything) { $text.Contains($pw.Replace('-', '')) | Should -BeFalse }
        }
        # The check is not vacuous: the passwords did go to the appliance.
        (@(Get-ReceivedBody 'agent/escrow') -join '').Contains($passwords[0]) | Should -BeTrue
    }
}

Describe 'one run at a time (finding 13)' {
    It 'refuses a second holder of the named mutex' {
        $holder = [powershell]::Create()
        $null = $holder.AddScript({
                $m = New-Object System.Threading.Mutex($false, 'Global\netunlockd-agent')
                $null = $m.WaitOne()
                Start-Sleep -Seconds 3
                $m.ReleaseMutex()
                $m.Dispose()
            })
        $async = $holder.BeginInvoke()
        Start-Sleep -Milliseconds 700
        try {
            Enter-AgentLock | Should -BeNullOrEmpty
        }
        finally {
            $null = $holder.EndInvoke($async)
            $holder.Dispose()
        }
        $lock = Enter-AgentLock
        $lock | Should -Not -BeNullOrEmpty
        Exit-AgentLock $lock
    }
}

Describe 'installation (findings 12, 14)' {
    BeforeAll {
        $savedProgramFiles = $env:ProgramFiles
        $savedSystemRoot = $env:SystemRoot
    }
    AfterAll {
        $env:ProgramFiles = $savedProgramFiles
        $env:SystemRoot = $savedSystemRoot
    }
    It 'copies the script, stores the token in the protected file and registers the task without it' {
        $env:ProgramFiles = Join-Path $TestDrive 'Program Files'
        $env:SystemRoot = Join-Path $TestDrive 'Windows'
        $global:NuEvents = New-Object System.Collections.Generic.List[string]
        $stateDir = Join-Path $TestDrive 'ProgramData-agent'
        Mock New-ScheduledTaskAction { [pscustomobject]@{ Execute = $Execute; Arguments = $Argument } }
        Mock New-ScheduledTaskTrigger { [pscustomobject]@{ Kind = 'trigger' } }
        Mock New-ScheduledTaskSettingsSet { [pscustomobject]@{ Kind = 'settings' } }
        Mock New-ScheduledTaskPrincipal { [pscustomobject]@{ Kind = 'principal' } }
        Mock Register-ScheduledTask { return }
        $params = @{
            InstallTask      = $true
            Server           = 'https://escrow.example:8443'
            ServerCertSha256 = @('ab' * 32)
            EnrollmentToken  = 'nue_SECRETxSECRETxSECRET'
            StateDirectory   = $stateDir
            ScriptPath       = (Join-Path $PSScriptRoot '../netunlockd-agent.ps1')
        }
        $code = Invoke-NetunlockdAgent @params 6>$null
        $code | Should -Be 0
        Test-Path (Join-Path $env:ProgramFiles 'netunlockd-agent/netunlockd-agent.ps1') | Should -BeTrue
        [System.IO.File]::ReadAllText((Join-Path $stateDir 'enrollment-token.txt')) | Should -BeExactly 'nue_SECRETxSECRETxSECRET'
        Should -Invoke Set-AgentStateAcl -Times 1 -Exactly
        Should -Invoke New-ScheduledTaskAction -Times 1 -Exactly -ParameterFilter {
            $Argument -notmatch 'SECRET' -and $Argument -match '-StartDelayMaxSeconds 600' -and $Argument -match ('-ServerCertSha256 ' + ('ab' * 32))
        }
        Should -Invoke New-ScheduledTaskTrigger -Times 1 -Exactly -ParameterFilter { $RandomDelay -gt [TimeSpan]::Zero }
        Should -Invoke Register-ScheduledTask -Times 1 -Exactly -ParameterFilter { $TaskName -eq 'netunlockd escrow agent' }
        @($global:NuEvents | Where-Object { $_ -match 'SECRET' }).Count | Should -Be 0
    }
}
