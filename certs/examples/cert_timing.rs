//! Prints how long the one-off certificate operations take (key generation, loading with the
//! key/certificate match check, inspection). Run: `cargo run -p netunlockd-certs --example cert_timing` (dependencies are built at opt-level 2 even in dev).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

fn main() -> Result<(), certs::CertError> {
    const GEN: u32 = 5;
    const LOAD: u32 = 50;
    let t = Instant::now();
    let mut last = None;
    for _ in 0..GEN {
        last = Some(certs::generate_unlock_certificate("timing", 365)?);
    }
    let gen_ms = t.elapsed().as_secs_f64() * 1000.0 / f64::from(GEN);
    let g = last.expect("generated at least once");

    let dir = std::env::temp_dir().join(format!("cert-timing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| certs::CertError::Write {
        path: dir.clone(),
        source,
    })?;
    let files = certs::write_unlock_files(&dir, "nu", &g)?;
    let t = Instant::now();
    for _ in 0..LOAD {
        certs::load_unlock_identity(&files.cert_pem, Some(&files.key), None)?;
    }
    let load_ms = t.elapsed().as_secs_f64() * 1000.0 / f64::from(LOAD);
    let t = Instant::now();
    for _ in 0..LOAD {
        certs::inspect_certificate(&g.cert_der, time::OffsetDateTime::now_utc())?;
    }
    let inspect_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(LOAD);
    let _ = std::fs::remove_dir_all(&dir);

    println!("generate_unlock_certificate (RSA-2048): {gen_ms:.1} ms each (n={GEN})");
    println!("load_unlock_identity (PEM, match check): {load_ms:.2} ms each (n={LOAD})");
    println!("inspect_certificate:                     {inspect_us:.1} us each (n={LOAD})");
    Ok(())
}
