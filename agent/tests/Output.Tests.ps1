#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0.0' }
# Output hygiene (finding 1): logging never reaches the success stream, so it can never become
# part of a function's return value; the event log goes through the .NET API (finding 9).

BeforeAll {
    . (Join-Path $PSScriptRoot '../netunlockd-agent.ps1')
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
}

Describe 'Write-AgentLog' {
    BeforeEach {
        $global:NuEvents = New-Object System.Collections.Generic.List[string]
        Mock Write-AgentEvent { $global:NuEvents.Add(('{0}|{1}' -f $Level, $Message)) }
    }
    It 'writes <level> to its own stream and the event log, nothing to the success stream' -ForEach @(
        @{ level = 'Information'; stream = 'InformationRecord' }
        @{ level = 'Warning'; stream = 'WarningRecord' }
        @{ level = 'Error'; stream = 'stderr' }
    ) {
        $stderr = New-Object System.IO.StringWriter
        $saved = [Console]::Error
        [Console]::SetError($stderr)
        try {
            $success = @(Write-AgentLog 'hello from the agent' $level 3>$null 6>$null)
            $all = @(Write-AgentLog 'hello again' $level *>&1)
        }
        finally {
            [Console]::SetError($saved)
        }
        $success.Count | Should -Be 0
        if ($stream -eq 'stderr') {
            $all.Count | Should -Be 0
            $stderr.ToString() | Should -BeLike '*hello from the agent*'
        }
        else {
            $all.Count | Should -Be 1
            $all[0].GetType().Name | Should -BeExactly $stream
            "$($all[0])" | Should -BeLike '????-??-??T??:??:??Z hello again'
        }
        $global:NuEvents[0] | Should -BeExactly ('{0}|hello from the agent' -f $level)
    }
    It 'still logs when the event log is unavailable' {
        Mock Write-AgentEvent { throw 'Requested registry access is not allowed.' }
        $VerbosePreference = 'Continue'
        $records = @(Write-AgentLog 'no event log here' 'Warning' *>&1)
        @($records | Where-Object { $_ -is [System.Management.Automation.WarningRecord] }).Count | Should -Be 1
        @($records | Where-Object { $_ -is [System.Management.Automation.VerboseRecord] -and "$_" -like '*event log unavailable*' }).Count | Should -Be 1
        @($records | Where-Object { -not ($_ -is [System.Management.Automation.WarningRecord] -or $_ -is [System.Management.Automation.VerboseRecord]) }).Count | Should -Be 0
    }
}

Describe 'functions that log while returning a value return only the value' {
    BeforeAll {
        Mock Write-AgentEvent { return }
    }
    It 'Resolve-AgentIdentity on a first run (the "every first run fails" bug)' {
        Mock Get-MachineCertificate { return }
        Mock Get-CimInstance -ParameterFilter { $ClassName -eq 'Win32_Tpm' } { return }
        Mock New-SelfSignedCertificate { New-FakeCertificate }
        $result = @(Resolve-AgentIdentity -State (ConvertTo-AgentState $null) -Subject 'CN=x' -NoTpm $false -HaveToken $false `
                -StatePath (Join-Path $TestDrive 'state.json') 3>$null 6>$null)
        $result.Count | Should -Be 1
        $result[0].Certificate.Thumbprint | Should -BeExactly 'A1B2C3D4E5F60718293A4B5C6D7E8F9012345678'
    }
    It 'Invoke-Escrow returns one hashtable of outcomes, even with warnings' {
        Mock Send-ApiRequest { Invoke-FakeAppliance -Method $Method -Url $Url -Json $Json }
        Reset-FakeAppliance
        Reset-CallLog
        $global:NuAppliance.Outcome = 'mismatch'
        $protector = [pscustomobject]@{ volume_guid = '{5E6C3B2A-0D47-4D27-9C3E-2F3C8D0B1A11}'; mount_point = 'C:'; volume_type = 'os'
            protector_id = '{00000000-0000-0000-0000-000000000001}'; recovery_password = '000011-000022-000033-000044-000055-000066-000077-000088'
            key_package = $null; key_package_bytes = 0 }
        $problems = New-Object System.Collections.Generic.List[object]
        $limits = [pscustomobject]@{ MaxItemsPerCall = 64; MaxBodyBytes = 262144; MaxKeyPackageBytes = 65536; MaxCheckInEntries = 256 }
        $result = @(Invoke-Escrow -Api (New-TestApi) -Protectors @($protector) -Limits $limits -Problems $problems 3>$null 6>$null)
        $result.Count | Should -Be 1
        $result[0] | Should -BeOfType ([hashtable])
        $result[0]['{00000000-0000-0000-0000-000000000001}'] | Should -BeExactly 'mismatch'
    }
}
