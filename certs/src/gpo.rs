//! The text printed after `netunlockd certs new-unlock`: what to do on the Windows side.

use crate::files::UnlockFiles;

/// Operator instructions for distributing a new Network Unlock certificate by Group Policy.
pub fn gpo_instructions(files: &UnlockFiles, thumbprint_hex: &str) -> String {
    format!(
        "\
Network Unlock certificate created.
  Private key (keep secret, mode 0600): {key}
  Certificate (PEM, for netunlockd):    {pem}
  Certificate (DER, for Group Policy):  {cer}
  Thumbprint (SHA-1):                   {tp}

Next steps:
 1. Point netunlockd at the certificate and key (configuration: the Network Unlock certificate
    list), then restart or reload netunlockd. Keep the old certificate loaded as well until every
    client has received the new one.
 2. Copy {cer} to a machine with the Group Policy Management Console.
 3. Edit the GPO that applies to the servers and go to:
      Computer Configuration > Policies > Windows Settings > Security Settings >
      Public Key Policies > BitLocker Drive Encryption Network Unlock Certificate
    Right-click > Add Network Unlock Certificate..., and choose the .cer file.
 4. In the same GPO enable:
      Computer Configuration > Policies > Administrative Templates > Windows Components >
      BitLocker Drive Encryption > Operating System Drives > Allow network unlock at startup
    and \"Require additional authentication at startup\" with TPM+PIN allowed or required.
 5. On each server run `gpupdate /force` and reboot once (the first boot with the policy creates the
    protector; later boots use it). Then check:
      manage-bde -protectors -get C:
    It must list a \"Network (Certificate Based)\" protector whose certificate thumbprint is
      {tp}
",
        key = files.key.display(),
        pem = files.cert_pem.display(),
        cer = files.cert_cer.display(),
        tp = thumbprint_hex,
    )
}
