//! The WDS `bde-network-unlock.ini` reader, from raw bytes (UTF-8 or UTF-16 with a BOM): any file
//! either parses or fails with an error naming the line, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = netunlock::decode_ini_bytes(data) else {
        return;
    };
    if let Ok(policy) = netunlock::parse_wds_ini(&text) {
        for (thumbprint, section) in policy.certificates() {
            let _ = policy.policy_for(thumbprint);
            // Every subnet a section allows was defined in [SUBNETS].
            for net in &section.allowed_subnets {
                assert!(
                    policy.subnets().iter().any(|(_, n)| n == net),
                    "a section allows an undefined subnet"
                );
            }
        }
    }
});
