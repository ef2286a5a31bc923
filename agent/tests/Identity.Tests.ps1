#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0.0' }
# The client certificate and enrollment rules (findings 1, 3, 4, 7, 10): enroll only when not
# enrolled, by the stored thumbprint; say clearly when that certificate is gone; TPM first,
# ECDSA first, software with a warning.

BeforeAll {
    . (Join-Path $PSScriptRoot '../netunlockd-agent.ps1')
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    Mock Write-AgentEvent { return }
    Mock Test-CertificateKey { return }

    function New-EnrolledState {
        param([string]$Thumbprint = 'A1B2C3D4E5F60718293A4B5C6D7E8F9012345678')
        $state = ConvertTo-AgentState $null
        $state.certificate_thumbprint = $Thumbprint
        $state.enrolled = $true
        $state.device_id = 7
        return $state
    }
}

Describe 'Resolve-AgentIdentity' {
    BeforeEach {
        $statePath = Join-Path $TestDrive ('state-' + [guid]::NewGuid().ToString('N') + '.json')
        $global:NuNewCert = New-FakeCertificate -Thumbprint 'FFEEDDCCBBAA99887766554433221100FFEEDDCC'
        Mock New-AgentCertificate { $global:NuNewCert }
    }

    It 'uses the enrolled certificate and does not enroll again, token or not (finding 7)' {
        Mock Get-MachineCertificate { New-FakeCertificate }
        $state = New-EnrolledState
        $identity = Resolve-AgentIdentity -State $state -Subject 'CN=netunlockd-agent SRV-DB-01' -NoTpm $false -HaveToken $true -StatePath $statePath
        $identity.MustEnroll | Should -BeFalse
        $identity.Problem | Should -BeNullOrEmpty
        $identity.Certificate.Thumbprint | Should -BeExactly 'A1B2C3D4E5F60718293A4B5C6D7E8F9012345678'
        Should -Invoke New-AgentCertificate -Times 0 -Exactly
        Should -Invoke Get-MachineCertificate -Times 1 -Exactly -ParameterFilter { $Thumbprint -eq 'A1B2C3D4E5F60718293A4B5C6D7E8F9012345678' }
    }

    It 'looks the certificate up by the stored thumbprint, not by "newest with the subject" (finding 10)' {
        Mock Get-MachineCertificate -ParameterFilter { $Thumbprint } { return }
        Mock Get-MachineCertificate -ParameterFilter { -not $Thumbprint } { @((New-FakeCertificate -Thumbprint '1111111111111111111111111111111111111111' -NotAfter (Get-Date).AddYears(20))) }
        $identity = Resolve-AgentIdentity -State (New-EnrolledState) -Subject 'CN=netunlockd-agent SRV-DB-01' -NoTpm $false -HaveToken $false -StatePath $statePath 3>$null
        $identity.Certificate | Should -BeNullOrEmpty
        $identity.Problem | Should -BeLike '*A1B2C3D4E5F60718293A4B5C6D7E8F9012345678*no longer in Cert:\LocalMachine\My*allow-reenroll 7*'
        Should -Invoke New-AgentCertificate -Times 0 -Exactly
    }

    It 'says the key is unusable when the TPM was cleared' {
        Mock Get-MachineCertificate { New-FakeCertificate }
        Mock Test-CertificateKey { throw 'Keyset does not exist' }
        $identity = Resolve-AgentIdentity -State (New-EnrolledState) -Subject 'CN=x' -NoTpm $false -HaveToken $false -StatePath $statePath
        $identity.Problem | Should -BeLike '*cannot sign with its private key (TPM cleared or reset?)*Keyset does not exist*'
    }

    It 'makes a new certificate and asks for enrollment when the enrolled one is gone and a token is there' {
        Mock Get-MachineCertificate { return }
        $state = New-EnrolledState
        $identity = Resolve-AgentIdentity -State $state -Subject 'CN=x' -NoTpm $false -HaveToken $true -StatePath $statePath 3>$null
        $identity.MustEnroll | Should -BeTrue
        $identity.Certificate.Thumbprint | Should -BeExactly $global:NuNewCert.Thumbprint
        $state.certificate_thumbprint | Should -BeExactly $global:NuNewCert.Thumbprint
        $state.enrolled | Should -BeFalse
        (Read-AgentState -Path $statePath).certificate_thumbprint | Should -BeExactly $global:NuNewCert.Thumbprint
    }

    It 'adopts the certificate of an older agent version (state without thumbprint)' {
        Mock Get-MachineCertificate {
            @(
                (New-FakeCertificate -Thumbprint '2222222222222222222222222222222222222222' -Subject 'CN=someone else')
                (New-FakeCertificate -Thumbprint '3333333333333333333333333333333333333333' -NotAfter (Get-Date).AddDays(-1))
                (New-FakeCertificate -Thumbprint '4444444444444444444444444444444444444444')
            )
        }
        $state = ConvertTo-AgentState ('{"enrolled":true,"device_id":7,"pending":[]}' | ConvertFrom-Json)
        $identity = Resolve-AgentIdentity -State $state -Subject 'CN=netunlockd-agent SRV-DB-01' -NoTpm $false -HaveToken $false -StatePath $statePath 6>$null
        $identity.MustEnroll | Should -BeFalse
        $state.certificate_thumbprint | Should -BeExactly '4444444444444444444444444444444444444444'
        Should -Invoke New-AgentCertificate -Times 0 -Exactly
    }

    It 'creates a certificate on the first run, records it, and asks for enrollment' {
        Mock Get-MachineCertificate { return }
        $state = ConvertTo-AgentState $null
        $identity = Resolve-AgentIdentity -State $state -Subject 'CN=x' -NoTpm $false -HaveToken $false -StatePath $statePath
        $identity.MustEnroll | Should -BeTrue
        (Read-AgentState -Path $statePath).certificate_thumbprint | Should -BeExactly $global:NuNewCert.Thumbprint
    }
}

Describe 'New-AgentCertificate (findings 1, 3, 4)' {
    BeforeEach {
        $global:NuCreated = New-FakeCertificate
    }
    It 'creates ECDSA P-256 in the TPM when it can, and returns exactly the certificate' {
        Mock Get-CimInstance -ParameterFilter { $ClassName -eq 'Win32_Tpm' } {
            [pscustomobject]@{ IsEnabled_InitialValue = $true; IsActivated_InitialValue = $true; SpecVersion = '2.0, 0, 1.38' }
        }
        Mock New-SelfSignedCertificate { $global:NuCreated }
        $result = New-AgentCertificate -Subject 'CN=netunlockd-agent SRV-DB-01' -NoTpm $false 6>$null
        @($result).Count | Should -Be 1
        $result.Thumbprint | Should -BeExactly $global:NuCreated.Thumbprint
        Should -Invoke New-SelfSignedCertificate -Times 1 -Exactly -ParameterFilter {
            $Provider -eq 'Microsoft Platform Crypto Provider' -and $KeyAlgorithm -eq 'ECDSA_nistP256' -and $KeyExportPolicy -eq 'NonExportable' -and
            $CertStoreLocation -eq 'Cert:\LocalMachine\My' -and ($TextExtension -join '') -eq '2.5.29.37={text}1.3.6.1.5.5.7.3.2'
        }
    }
    It 'falls back to RSA 2048 in the TPM when the TPM cannot make an ECDSA key' {
        Mock Get-CimInstance -ParameterFilter { $ClassName -eq 'Win32_Tpm' } {
            [pscustomobject]@{ IsEnabled_InitialValue = $true; IsActivated_InitialValue = $true; SpecVersion = '2.0, 0, 1.16' }
        }
        Mock New-SelfSignedCertificate -ParameterFilter { $KeyAlgorithm -eq 'ECDSA_nistP256' } { throw 'The requested operation is not supported.' }
        Mock New-SelfSignedCertificate -ParameterFilter { $KeyAlgorithm -eq 'RSA' } { $global:NuCreated }
        $result = New-AgentCertificate -Subject 'CN=x' -NoTpm $false 6>$null
        @($result).Count | Should -Be 1
        Should -Invoke New-SelfSignedCertificate -Times 1 -Exactly -ParameterFilter { $KeyAlgorithm -eq 'RSA' -and $KeyLength -eq 2048 -and $Provider -eq 'Microsoft Platform Crypto Provider' }
    }
    It 'uses a software key with a warning when there is no TPM (VMs)' {
        Mock Get-CimInstance -ParameterFilter { $ClassName -eq 'Win32_Tpm' } { return }
        Mock New-SelfSignedCertificate { $global:NuCreated }
        $warnings = New-AgentCertificate -Subject 'CN=x' -NoTpm $false 3>&1 6>$null | Where-Object { $_ -is [System.Management.Automation.WarningRecord] }
        @($warnings).Count | Should -Be 1
        "$($warnings[0])" | Should -BeLike '*no TPM found*software*'
        Should -Invoke New-SelfSignedCertificate -Times 1 -Exactly -ParameterFilter { $Provider -eq 'Microsoft Software Key Storage Provider' }
    }
    It 'reports every attempt when no key can be created' {
        Mock Get-CimInstance -ParameterFilter { $ClassName -eq 'Win32_Tpm' } { return }
        Mock New-SelfSignedCertificate { throw 'Access is denied.' }
        { New-AgentCertificate -Subject 'CN=x' -NoTpm $true } | Should -Throw -ExpectedMessage '*cannot create the client certificate*Software Key Storage Provider*Access is denied*'
    }
}
