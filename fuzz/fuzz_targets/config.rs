//! The daemon's configuration file: TOML parsing and validation (`config::parse` + `validate`, the
//! daemon's own module compiled in here, since the daemon is a binary crate). Any text either
//! validates or fails with an error, never a panic. Its `escrow` dependency is the shim in
//! fuzz/escrow-shim/ (real directory validation, stand-ins for the rest).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code, unused_imports, clippy::all)]
#[path = "../../daemon/src/config/mod.rs"]
mod config;

/// The daemon's file-permission check, reached only when the config is loaded (reading a password
/// file), never by `parse` + `validate`; a stand-in keeps nix out of the fuzz build.
mod security {
    pub(crate) fn check_private_file(_path: &std::path::Path, _what: &str) -> anyhow::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(wire) = config::parse(text) else {
        return;
    };
    let _ = config::validate(
        wire,
        None,
        &config::Overrides::default(),
        Some("/var/lib/netunlockd".into()),
    );
});
