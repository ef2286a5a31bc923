#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0.0' }
# The agent produces the contract fixtures (tests/agent-fixtures/) byte for byte. The Rust test
# tests/e2e/tests/agent_contract.rs validates the same files against the OpenAPI document and
# sends them to the real daemon: both sides meet at these files.

BeforeAll {
    . (Join-Path $PSScriptRoot '../netunlockd-agent.ps1')
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    Mock Write-AgentEvent { return }
    Mock Start-Sleep { return }
    Mock Send-ApiRequest { Invoke-FakeAppliance -Method $Method -Url $Url -Json $Json }
    Mock Invoke-CimMethod { Invoke-FakeVolumeMethod -Volume $InputObject -Method $MethodName -Arguments $Arguments }
    Mock Get-CimInstance -ParameterFilter { $ClassName -eq 'Win32_EncryptableVolume' } {
        if ($global:NuBitLockerMissing) { throw (New-Object System.Management.Automation.RuntimeException('Invalid namespace ')) }
        $global:NuVolumes
    }
    Mock Get-CimInstance -ParameterFilter { $ClassName -eq 'Win32_Volume' } {
        foreach ($v in $global:NuVolumes) {
            if ($v.FakeName) { [pscustomobject]@{ DeviceID = $v.DeviceID; Name = $v.FakeName } }
        }
    }

    # Loads an inventory fixture into the fake WMI provider.
    function Use-Inventory {
        param([string]$Case)
        $inventory = Get-FixtureJson "$Case/inventory.json"
        $global:NuBitLockerMissing = ($null -ne $inventory.PSObject.Properties['bitlocker_missing']) -and $inventory.bitlocker_missing
        $global:NuVolumes = New-FakeVolumes $inventory
        Reset-FakeAppliance
        Reset-CallLog
        return $inventory
    }

    function Get-NumberedFixture {
        param([string]$Case, [string]$Prefix)
        $files = New-Object System.Collections.Generic.List[string]
        for ($i = 1; Test-Path (Get-FixturePath "$Case/$Prefix-$i.json"); $i++) { $files.Add("$Case/$Prefix-$i.json") }
        return , $files.ToArray()
    }
}

Describe 'request bodies for the fixture inventories' {
    It '<case>: escrow calls, check-in and reported problems match the fixtures' -ForEach @(
        @{ case = 'several-volumes' }
        @{ case = 'locked-volume' }
        @{ case = 'many-protectors' }
        @{ case = 'large-key-packages' }
        @{ case = 'no-bitlocker' }
    ) {
        $inventory = Use-Inventory $case
        $problems = New-Object System.Collections.Generic.List[object]
        $found = Get-BitLockerInventory -SystemDrive 'C:'
        foreach ($p in $found.Problems) { $problems.Add($p) }
        $api = New-TestApi
        $limits = New-TestLimits $inventory
        $outcomes = Invoke-Escrow -Api $api -Protectors $found.Protectors -Limits $limits -Problems $problems
        $instructions = Invoke-CheckIn -Api $api -Volumes $found.Volumes -MaxEntries $limits.MaxCheckInEntries -Problems $problems

        $found.Available | Should -Be (-not $global:NuBitLockerMissing)
        $expected = Get-NumberedFixture $case 'escrow'
        $sent = @(Get-ReceivedBody 'agent/escrow')
        $sent.Count | Should -Be $expected.Count
        for ($i = 0; $i -lt $expected.Count; $i++) {
            $sent[$i] | Should -BeExactly (Get-FixtureText $expected[$i]) -Because $expected[$i]
        }
        $checkins = @(Get-ReceivedBody 'agent/checkin')
        $checkins.Count | Should -Be 1
        $checkins[0] | Should -BeExactly (Get-FixtureText "$case/checkin-1.json")
        @($instructions).Count | Should -Be 0

        $reported = @(foreach ($p in $problems) { $p.protector_id }) | Sort-Object -Unique
        $wanted = @($inventory.expected_problems) | Sort-Object -Unique
        ($reported -join ',') | Should -BeExactly ($wanted -join ',')
        $itemCount = 0
        foreach ($body in $sent) { $itemCount += @(($body | ConvertFrom-Json).items).Count }
        $outcomes.Count | Should -Be $itemCount
    }
}

Describe 'enrollment body' {
    BeforeAll {
        $savedName = $env:COMPUTERNAME
    }
    AfterAll {
        $env:COMPUTERNAME = $savedName
    }
    It 'matches enroll/enroll.json: trimmed token, domain only when domain-joined, trimmed serial' {
        $facts = Get-FixtureJson 'enroll/facts.json'
        $env:COMPUTERNAME = $facts.computer_name
        $global:NuFacts = $facts
        Mock Get-CimInstance -ParameterFilter { $ClassName -eq 'Win32_ComputerSystem' } {
            [pscustomobject]@{ PartOfDomain = $global:NuFacts.part_of_domain; Domain = $global:NuFacts.domain }
        }
        Mock Get-CimInstance -ParameterFilter { $ClassName -eq 'Win32_BIOS' } { [pscustomobject]@{ SerialNumber = $global:NuFacts.serial } }
        Reset-FakeAppliance
        Reset-CallLog
        $state = ConvertTo-AgentState $null
        $result = Invoke-Enrollment -Api (New-TestApi) -State $state -Token $facts.token -StatePath (Join-Path $TestDrive 'state.json') `
            -TokenFile (Join-Path $TestDrive 'no-token-file.txt') -Thumbprint 'A1B2'
        $result.Enrolled | Should -BeTrue
        $bodies = @(Get-ReceivedBody 'enroll')
        $bodies.Count | Should -Be 1
        $bodies[0] | Should -BeExactly (Get-FixtureText 'enroll/enroll.json')
        $state.device_id | Should -Be 7
    }
    It 'leaves the domain out of a workgroup computer' {
        Mock Get-CimInstance -ParameterFilter { $ClassName -eq 'Win32_ComputerSystem' } { [pscustomobject]@{ PartOfDomain = $false; Domain = 'WORKGROUP' } }
        Mock Get-CimInstance -ParameterFilter { $ClassName -eq 'Win32_BIOS' } { [pscustomobject]@{ SerialNumber = '' } }
        $env:COMPUTERNAME = 'SRV-WG-01'
        $facts = Get-EnrollmentFacts
        New-EnrollBody -Token 'nue_x' -ComputerName $facts.ComputerName -Domain $facts.Domain -Serial $facts.Serial |
            Should -BeExactly '{"token":"nue_x","computer_name":"SRV-WG-01"}'
    }
}

Describe 'rotation bodies' {
    It 'escrows the added protector and reports both phases as rotation/ describes' {
        $inventory = Use-Inventory 'several-volumes'
        $new = Get-FixtureJson 'rotation/new-protector.json'
        $global:NuVolumes[0].FakeNew.Enqueue((New-FakeProtector $new))
        Add-ScriptedAnswer 'agent/checkin' ([pscustomobject]@{ Status = 200; Text = (Get-FixtureText 'rotation/checkin-response.json') })
        $problems = New-Object System.Collections.Generic.List[object]
        $found = Get-BitLockerInventory -SystemDrive 'C:'
        $api = New-TestApi
        $limits = New-TestLimits $inventory
        $outcomes = Invoke-Escrow -Api $api -Protectors $found.Protectors -Limits $limits -Problems $problems
        $instructions = @(Invoke-CheckIn -Api $api -Volumes $found.Volumes -MaxEntries 256 -Problems $problems)
        $instructions.Count | Should -Be 1
        $state = ConvertTo-AgentState $null
        $result = Invoke-ProtectorRotation -Api $api -State $state -StatePath (Join-Path $TestDrive 'rotation-state.json') -Instruction $instructions[0] `
            -Inventory $found -Outcomes $outcomes -Limits $limits -Problems $problems
        $result | Should -BeExactly 'done'

        $escrows = @(Get-ReceivedBody 'agent/escrow')
        $escrows.Count | Should -Be 2
        $escrows[1] | Should -BeExactly (Get-FixtureText 'rotation/escrow-new.json')
        $reports = @(Get-ReceivedBody 'agent/rotation')
        $reports.Count | Should -Be 2
        $reports[0] | Should -BeExactly (Get-FixtureText 'rotation/report-new-escrowed.json')
        $reports[1] | Should -BeExactly (Get-FixtureText 'rotation/report-done.json')
        @($state.pending).Count | Should -Be 0
        $problems.Count | Should -Be 0
    }
}
