#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0.0' }
# The HTTPS client side (findings 1, 2, 6, 9, 11, 12): retries, error bodies, batch fallbacks,
# the compiled pin check, and the client object itself.

BeforeAll {
    . (Join-Path $PSScriptRoot '../netunlockd-agent.ps1')
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    Mock Write-AgentEvent { return }
    Mock Start-Sleep { return }
    Mock Send-ApiRequest { Invoke-FakeAppliance -Method $Method -Url $Url -Json $Json }

    function New-Item2 {
        param([int]$n)
        return [ordered]@{ volume_guid = '{5E6C3B2A-0D47-4D27-9C3E-2F3C8D0B1A11}'; volume_type = 'os'
            protector_id = ('{{00000000-0000-0000-0000-{0:D12}}}' -f $n); recovery_password = '000011-000022-000033-000044-000055-000066-000077-000088' }
    }

    # A real self-signed ECDSA P-256 certificate (works on any OS with .NET Core or Framework 4.7.2+).
    function New-RealCertificate {
        $key = [System.Security.Cryptography.ECDsa]::Create([System.Security.Cryptography.ECCurve]::CreateFromFriendlyName('nistP256'))
        $request = New-Object System.Security.Cryptography.X509Certificates.CertificateRequest('CN=netunlockd-agent TEST', $key,
            [System.Security.Cryptography.HashAlgorithmName]::SHA256)
        return $request.CreateSelfSigned([DateTimeOffset]::Now.AddDays(-1), [DateTimeOffset]::Now.AddDays(30))
    }
}

Describe 'Invoke-Api retries' {
    BeforeEach {
        Reset-FakeAppliance
        Reset-CallLog
    }
    It 'retries a 503 and returns the next answer' {
        Add-ScriptedAnswer 'agent/checkin' ([pscustomobject]@{ Status = 503; Text = '{"error":{"code":"storage_unavailable","message":"database down"}}' })
        $r = Invoke-Api -Api (New-TestApi -Retries 3) -Method 'POST' -Path 'agent/checkin' -Json '{"protectors":[]}' 3>$null
        $r.Status | Should -Be 200
        Should -Invoke Send-ApiRequest -Times 2 -Exactly
        Should -Invoke Start-Sleep -Times 1 -Exactly
    }
    It 'retries 429 and transport errors' {
        Add-ScriptedAnswer 'agent/checkin' ([pscustomobject]@{ Status = 429; Text = '{"error":{"code":"rate_limited","message":"slow down"}}' })
        Add-ScriptedAnswer 'agent/checkin' (New-Object System.Net.Http.HttpRequestException('An error occurred while sending the request.'))
        $r = Invoke-Api -Api (New-TestApi -Retries 3) -Method 'POST' -Path 'agent/checkin' -Json '{"protectors":[]}' 3>$null
        $r.Status | Should -Be 200
        Should -Invoke Send-ApiRequest -Times 3 -Exactly
    }
    It 'does not retry <status>' -ForEach @(
        @{ status = 400 }
        @{ status = 401 }
        @{ status = 403 }
        @{ status = 404 }
        @{ status = 409 }
        @{ status = 410 }
        @{ status = 413 }
    ) {
        Add-ScriptedAnswer 'enroll' ([pscustomobject]@{ Status = $status; Text = '{"error":{"code":"x","message":"final"}}' })
        $r = Invoke-Api -Api (New-TestApi -Retries 4) -Method 'POST' -Path 'enroll' -Json '{}'
        $r.Status | Should -Be $status
        Should -Invoke Send-ApiRequest -Times 1 -Exactly
        Should -Invoke Start-Sleep -Times 0 -Exactly
    }
    It 'gives up after the last attempt with the exception chain and a hint' {
        Mock Send-ApiRequest {
            $inner = New-Object System.Net.Sockets.SocketException(11001)
            throw (New-Object System.Net.Http.HttpRequestException('No such host is known. (escrow.test:8443)', $inner))
        }
        { Invoke-Api -Api (New-TestApi -Retries 3) -Method 'POST' -Path 'agent/escrow' -Json '{}' 3>$null } |
            Should -Throw -ExpectedMessage '*failed after 3 attempt(s): HttpRequestException: No such host*-> SocketException*could not be reached*'
        Should -Invoke Start-Sleep -Times 2 -Exactly
    }
    It 'does not retry a pin mismatch and names the certificate the appliance presented' {
        $presented = 'cd' * 32
        $global:NuPresented = $presented
        Mock Get-LastPresentedFingerprint { $global:NuPresented }
        Mock Send-ApiRequest {
            $inner = New-Object System.Security.Authentication.AuthenticationException('The remote certificate was rejected by the provided RemoteCertificateValidationCallback.')
            throw (New-Object System.Net.Http.HttpRequestException('The SSL connection could not be established, see inner exception.', $inner))
        }
        { Invoke-Api -Api (New-TestApi -Pins @('ab' * 32) -Retries 4) -Method 'POST' -Path 'agent/checkin' -Json '{}' } |
            Should -Throw -ExpectedMessage ('*after 1 attempt(s)*wrong pin*' + $presented + '*')
        Should -Invoke Send-ApiRequest -Times 1 -Exactly
    }
    It 'returns a non-JSON answer (a proxy page) without failing to parse it' {
        Add-ScriptedAnswer 'agent/checkin' ([pscustomobject]@{ Status = 502; Text = '<html><body><h1>502 Bad Gateway</h1></body></html>' })
        $r = Invoke-Api -Api (New-TestApi -Retries 1) -Method 'POST' -Path 'agent/checkin' -Json '{}'
        $r.Status | Should -Be 502
        $r.Body | Should -BeNullOrEmpty
        Get-ApiErrorText $r | Should -BeLike '*not a netunlockd answer*502 Bad Gateway*'
    }
}

Describe 'Send-EscrowBatch' {
    BeforeEach {
        Reset-FakeAppliance
        Reset-CallLog
        $outcomes = @{}
        $problems = New-Object System.Collections.Generic.List[object]
    }
    It 'halves a batch the appliance finds too large (413) until it fits' {
        Add-ScriptedAnswer 'agent/escrow' ([pscustomobject]@{ Status = 413; Text = '{"error":{"code":"body_too_large","message":"too large"}}' })
        Send-EscrowBatch -Api (New-TestApi) -Items @(1..4 | ForEach-Object { New-Item2 $_ }) -Outcomes $outcomes -Problems $problems 3>$null
        $counts = @(Get-ReceivedBody 'agent/escrow' | ForEach-Object { @(($_ | ConvertFrom-Json).items).Count })
        ($counts -join ',') | Should -BeExactly '4,2,2'
        $outcomes.Count | Should -Be 4
        $problems.Count | Should -Be 0
    }
    It 'sends a refused batch (400) item by item, so one bad item does not block the others' {
        Add-ScriptedAnswer 'agent/escrow' ([pscustomobject]@{ Status = 400; Text = '{"error":{"code":"validation_failed","message":"item 2: bad"}}' })
        Add-ScriptedAnswer 'agent/escrow' ([pscustomobject]@{ Status = 200; Text = '{"results":[{"volume_guid":"{5E6C3B2A-0D47-4D27-9C3E-2F3C8D0B1A11}","protector_id":"{00000000-0000-0000-0000-000000000001}","outcome":"stored"}]}' })
        Add-ScriptedAnswer 'agent/escrow' ([pscustomobject]@{ Status = 400; Text = '{"error":{"code":"validation_failed","message":"item 1: bad"}}' })
        Send-EscrowBatch -Api (New-TestApi) -Items @(1..3 | ForEach-Object { New-Item2 $_ }) -Outcomes $outcomes -Problems $problems 3>$null
        @(Get-ReceivedBody 'agent/escrow').Count | Should -Be 4
        $outcomes.Count | Should -Be 2
        $problems.Count | Should -Be 1
        $problems[0].protector_id | Should -BeExactly '{00000000-0000-0000-0000-000000000002}'
        $problems[0].problem | Should -BeLike '*item 1: bad*'
    }
    It 'records a mismatch (409 with results) as a problem and returns nothing on the success stream (finding 1)' {
        $global:NuAppliance.Outcome = 'mismatch'
        $out = Send-EscrowBatch -Api (New-TestApi) -Items @(New-Item2 1) -Outcomes $outcomes -Problems $problems 3>$null 6>$null
        $out | Should -BeNullOrEmpty
        $outcomes['{00000000-0000-0000-0000-000000000001}'] | Should -BeExactly 'mismatch'
        $problems.Count | Should -Be 1
    }
    It 'marks a 403 as "certificate refused" so the run can say what to do' {
        Add-ScriptedAnswer 'agent/escrow' ([pscustomobject]@{ Status = 403; Text = '{"error":{"code":"forbidden","message":"client certificate not enrolled"}}' })
        $caught = $null
        try { Send-EscrowBatch -Api (New-TestApi) -Items @(New-Item2 1) -Outcomes $outcomes -Problems $problems }
        catch { $caught = $_.Exception }
        Test-CertificateRefusedError $caught | Should -BeTrue
        Test-CertificateRefusedError (New-Object System.Exception('other')) | Should -BeFalse
    }
}

Describe 'the HTTPS client' {
    It 'New-ApiClient returns exactly one HttpClient (the first-run failure of finding 1)' {
        $cert = New-RealCertificate
        $client = New-ApiClient -Certificate $cert -Pins @('ab' * 32) -Protocols @('Tls12')
        @($client).Count | Should -Be 1
        $client | Should -BeOfType ([System.Net.Http.HttpClient])
        $client.Dispose()
    }
    It 'the compiled pin check accepts only the pinned certificates and remembers what it saw' {
        $cert = New-RealCertificate
        Initialize-AgentTlsType
        $sha = [System.Security.Cryptography.SHA256]::Create()
        $hex = ([System.BitConverter]::ToString($sha.ComputeHash($cert.RawData)) -replace '-', '').ToLowerInvariant()
        $none = [System.Net.Security.SslPolicyErrors]::RemoteCertificateChainErrors
        $check = [NetunlockdAgentTls]::PinCheck([string[]]@(('ab' * 32), $hex), $null)
        $check.Invoke($null, $cert, $null, $none) | Should -BeTrue
        $wrong = [NetunlockdAgentTls]::PinCheck([string[]]@('ab' * 32), $null)
        $wrong.Invoke($null, $cert, $null, $none) | Should -BeFalse
        [NetunlockdAgentTls]::LastPresented | Should -BeExactly $hex
        $wrong.Invoke($null, $null, $null, $none) | Should -BeFalse
    }
    It 'hashes with the FIPS-validated implementation it is given (Windows PowerShell on .NET Framework)' {
        Initialize-AgentTlsType
        $data = [System.Text.Encoding]::ASCII.GetBytes('abc')
        [NetunlockdAgentTls]::Sha256Hex($data, [System.Security.Cryptography.SHA256CryptoServiceProvider]) |
            Should -BeExactly 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad'
        [NetunlockdAgentTls]::Sha256Hex($data, $null) | Should -BeExactly 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad'
    }
}
