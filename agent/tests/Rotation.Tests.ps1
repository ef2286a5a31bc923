#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0.0' }
# Two-phase rotation (finding 13) with a failure injected at every step: the disclosed protector
# is never removed before the new one is escrowed, acknowledged and reported, and the next run
# resumes without adding a second protector.

BeforeAll {
    . (Join-Path $PSScriptRoot '../netunlockd-agent.ps1')
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    Mock Write-AgentEvent { return }
    Mock Start-Sleep { return }
    Mock Send-ApiRequest { Invoke-FakeAppliance -Method $Method -Url $Url -Json $Json }
    Mock Invoke-CimMethod { Invoke-FakeVolumeMethod -Volume $InputObject -Method $MethodName -Arguments $Arguments }
    Mock Get-CimInstance -ParameterFilter { $ClassName -eq 'Win32_EncryptableVolume' } { $global:NuVolumes }
    Mock Get-CimInstance -ParameterFilter { $ClassName -eq 'Win32_Volume' } { return }

    $global:NuInventory = Get-FixtureJson 'several-volumes/inventory.json'
    $global:NuNewSpec = Get-FixtureJson 'rotation/new-protector.json'
    $global:NuOld = [string]$global:NuInventory.volumes[0].protectors[0].id
    $global:NuOtherOnC = [string]$global:NuInventory.volumes[0].protectors[1].id

    # A run up to the rotation: inventory read, everything escrowed ("stored").
    function Start-TestRun {
        param([string]$StatePath, [int]$Retries = 1)
        Reset-CallLog
        $problems = New-Object System.Collections.Generic.List[object]
        $found = Get-BitLockerInventory -SystemDrive 'C:'
        $api = New-TestApi -Retries $Retries
        $limits = New-TestLimits $global:NuInventory
        $outcomes = Invoke-Escrow -Api $api -Protectors $found.Protectors -Limits $limits -Problems $problems
        return [pscustomobject]@{
            Api = $api; Limits = $limits; Inventory = $found; Outcomes = $outcomes; Problems = $problems
            State = (Read-AgentState -Path $StatePath); StatePath = $StatePath
        }
    }

    function Invoke-TestRotation {
        param($Run, [string]$State = 'requested')
        $instruction = [pscustomobject]@{ protector_id = $global:NuOld; volume_guid = (ConvertFrom-VolumeDeviceId $global:NuInventory.volumes[0].device_id); state = $State }
        return Invoke-ProtectorRotation -Api $Run.Api -State $Run.State -StatePath $Run.StatePath -Instruction $instruction `
            -Inventory $Run.Inventory -Outcomes $Run.Outcomes -Limits $Run.Limits -Problems $Run.Problems
    }

    function Get-CallIndex {
        param([string]$Pattern)
        for ($i = 0; $i -lt $global:NuCalls.Count; $i++) { if ($global:NuCalls[$i] -like $Pattern) { return $i } }
        return -1
    }

    # The invariant: no DeleteKeyProtector of the old protector unless the new one was escrowed
    # (acknowledged) before and the first report (old_removed=false) was answered before.
    function Assert-OldKeptUntilNewReported {
        param([string]$NewId = [string]$global:NuNewSpec.id)
        $delete = Get-CallIndex ('cim DeleteKeyProtector * ' + $global:NuOld)
        if ($delete -lt 0) { return }
        $escrow = Get-CallIndex ('api agent/escrow*' + $NewId + '*')
        $report = Get-CallIndex 'api agent/rotation old_removed=false'
        $escrow | Should -BeGreaterOrEqual 0
        $report | Should -BeGreaterThan $escrow
        $delete | Should -BeGreaterThan $report
    }

    function Test-OldStillOnVolume {
        return ($null -ne (Find-FakeProtector $global:NuVolumes[0] $global:NuOld))
    }
}

Describe 'rotation with a failure at each step' {
    BeforeEach {
        $global:NuVolumes = New-FakeVolumes $global:NuInventory
        $global:NuVolumes[0].FakeNew.Enqueue((New-FakeProtector $global:NuNewSpec))
        Reset-FakeAppliance
        Reset-CallLog
        $statePath = Join-Path $TestDrive ('state-' + [guid]::NewGuid().ToString('N') + '.json')
    }

    It 'completes when nothing fails, in the safe order' {
        $run = Start-TestRun $statePath
        Invoke-TestRotation $run | Should -BeExactly 'done'
        Assert-OldKeptUntilNewReported
        Test-OldStillOnVolume | Should -BeFalse
        (Get-CallIndex 'api agent/rotation old_removed=true') | Should -BeGreaterThan (Get-CallIndex ('cim DeleteKeyProtector * ' + $global:NuOld))
    }

    It 'keeps the old protector when <step> fails' -ForEach @(
        @{ step = 'adding the new protector'; inject = 'cim:ProtectKeyWithNumericalPassword' }
        @{ step = 'reading the new password'; inject = 'cim:GetKeyProtectorNumericalPassword' }
        @{ step = 'escrowing the new protector (refused)'; inject = 'api:escrow-400' }
        @{ step = 'escrowing the new protector (mismatch)'; inject = 'api:escrow-mismatch' }
        @{ step = 'escrowing the new protector (appliance down)'; inject = 'api:escrow-down' }
        @{ step = 'the first report (409)'; inject = 'api:report-409' }
        @{ step = 'the first report (unexpected state)'; inject = 'api:report-state' }
        @{ step = 'removing the old protector'; inject = 'cim:DeleteKeyProtector' }
    ) {
        $run = Start-TestRun $statePath
        switch ($inject) {
            'cim:ProtectKeyWithNumericalPassword' { $global:NuVolumes[0].FakeFail['ProtectKeyWithNumericalPassword'] = 2150694912 }
            'cim:GetKeyProtectorNumericalPassword' { $global:NuVolumes[0].FakeFail['GetKeyProtectorNumericalPassword'] = 2150694912 }
            'cim:DeleteKeyProtector' { $global:NuVolumes[0].FakeFail['DeleteKeyProtector'] = 2150694917 }
            'api:escrow-400' { Add-ScriptedAnswer 'agent/escrow' ([pscustomobject]@{ Status = 400; Text = '{"error":{"code":"validation_failed","message":"item 1: bad"}}' }) }
            'api:escrow-mismatch' { $global:NuAppliance.Outcome = 'mismatch' }
            'api:escrow-down' { Add-ScriptedAnswer 'agent/escrow' (New-Object System.Net.Http.HttpRequestException('No such host is known')) }
            'api:report-409' { Add-ScriptedAnswer 'agent/rotation' ([pscustomobject]@{ Status = 409; Text = '{"error":{"code":"conflict","message":"escrow the new protector first"}}' }) }
            'api:report-state' { Add-ScriptedAnswer 'agent/rotation' ([pscustomobject]@{ Status = 200; Text = '{"state":"requested"}' }) }
        }
        { Invoke-TestRotation $run } | Should -Throw
        Assert-OldKeptUntilNewReported
        if ($inject -ne 'cim:DeleteKeyProtector') {
            Get-CallIndex 'cim DeleteKeyProtector*' | Should -Be -1
        }
        Test-OldStillOnVolume | Should -BeTrue
        Get-CallIndex 'api agent/rotation old_removed=true' | Should -Be -1
    }

    It 'keeps the pending entry when the final report fails, and the next run only reports' {
        $run = Start-TestRun $statePath
        Add-ScriptedAnswer 'agent/rotation' ([pscustomobject]@{ Status = 200; Text = '{"state":"new_escrowed"}' })
        Add-ScriptedAnswer 'agent/rotation' ([pscustomobject]@{ Status = 503; Text = '{"error":{"code":"storage_unavailable","message":"database down"}}' })
        { Invoke-TestRotation $run } | Should -Throw -ExpectedMessage '*503*'
        Test-OldStillOnVolume | Should -BeFalse
        $saved = Read-AgentState -Path $statePath
        @($saved.pending).Count | Should -Be 1
        $saved.pending[0].new | Should -BeExactly ([string]$global:NuNewSpec.id)

        # Next run: the old protector is gone, the appliance still says new_escrowed.
        $next = Start-TestRun $statePath
        Invoke-TestRotation $next 'new_escrowed' | Should -BeExactly 'done'
        Get-CallIndex 'cim ProtectKeyWithNumericalPassword*' | Should -Be -1
        @(Get-ReceivedBody 'agent/rotation')[-1] | Should -BeExactly (Get-FixtureText 'rotation/report-done.json')
        @((Read-AgentState -Path $statePath).pending).Count | Should -Be 0
    }

    It 'resumes with the protector it added when escrowing it failed, instead of adding another' {
        $run = Start-TestRun $statePath
        Add-ScriptedAnswer 'agent/escrow' (New-Object System.Net.Http.HttpRequestException('No such host is known'))
        { Invoke-TestRotation $run } | Should -Throw
        Test-OldStillOnVolume | Should -BeTrue

        $next = Start-TestRun $statePath   # escrows everything again, the new protector included
        Invoke-TestRotation $next | Should -BeExactly 'done'
        Get-CallIndex 'cim ProtectKeyWithNumericalPassword*' | Should -Be -1
        Assert-OldKeptUntilNewReported
        Test-OldStillOnVolume | Should -BeFalse
        @($global:NuVolumes[0].FakeProtectors | Where-Object { $_.Id -eq [string]$global:NuNewSpec.id }).Count | Should -Be 1
    }

    It 'uses an escrowed protector already on the volume when the appliance says new_escrowed and the state file was lost' {
        $run = Start-TestRun $statePath
        Invoke-TestRotation $run 'new_escrowed' | Should -BeExactly 'done'
        Get-CallIndex 'cim ProtectKeyWithNumericalPassword*' | Should -Be -1
        $reports = @(Get-ReceivedBody 'agent/rotation')
        ($reports[0] | ConvertFrom-Json).new_protector_id | Should -BeExactly $global:NuOtherOnC
        Assert-OldKeptUntilNewReported -NewId $global:NuOtherOnC
    }

    It 'does nothing for a protector that is not on this computer, or a state with nothing to do' {
        $run = Start-TestRun $statePath
        $before = $global:NuCalls.Count
        $instruction = [pscustomobject]@{ protector_id = '{00000000-0000-0000-0000-0000000000AA}'; volume_guid = $null; state = 'requested' }
        Invoke-ProtectorRotation -Api $run.Api -State $run.State -StatePath $statePath -Instruction $instruction -Inventory $run.Inventory `
            -Outcomes $run.Outcomes -Limits $run.Limits -Problems $run.Problems 3>$null | Should -BeExactly 'skipped'
        Invoke-TestRotation $run 'done' | Should -BeExactly 'skipped'
        $global:NuCalls.Count | Should -Be $before
    }
}
