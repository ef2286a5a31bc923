//! The daemon's configuration file: TOML parsing and validation (`config::parse` + `validate`, the
//! daemon's own module compiled in here, since the daemon is a binary crate). Any text either
//! validates or fails with an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code, unused_imports, clippy::all)]
#[path = "../../daemon/src/config/mod.rs"]
mod config;

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
