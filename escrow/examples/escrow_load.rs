//! Load tool (a benchmark, not a test): escrow calls per second over TLS with keep-alive from N
//! concurrent agents, each enrolled with its own self-signed client certificate, against the real
//! `netunlockd serve` on loopback — SQLite and/or PostgreSQL. Prints a table.
//!
//! cargo build --release -p netunlockd
//! cargo run --release -p escrow --example escrow_load -- --bin target/release/netunlockd \
//!     [--backend sqlite|postgres|both] [--agents 64] [--seconds 10] [--items 1] \
//!     [--pg postgres://postgres@127.0.0.1:5432/postgres] [--log-level info]
//!
//! Bounded: runs for --seconds per backend, loopback only, everything in a temporary directory.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use escrow::client::{ApiClient, ApiClientConfig, ServerTrust, Zeroizing, agent_client};
use escrow::wire;

use support::{BoxError, write_escrow_config, write_tls};

#[derive(Debug, Clone)]
struct Args {
    bin: PathBuf,
    backends: Vec<String>,
    agents: usize,
    seconds: u64,
    items: usize,
    pg: String,
    log_level: String,
}

fn parse_args() -> Result<Args, BoxError> {
    let default_bin = ["target/release/netunlockd", "target/debug/netunlockd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("netunlockd"));
    let mut a = Args {
        bin: default_bin,
        backends: vec!["sqlite".into(), "postgres".into()],
        agents: 64,
        seconds: 10,
        items: 1,
        pg: std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
        log_level: "info".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--bin" => a.bin = PathBuf::from(val()?),
            "--backend" => {
                a.backends = match val()?.as_str() {
                    "both" => vec!["sqlite".into(), "postgres".into()],
                    b @ ("sqlite" | "postgres") => vec![b.to_string()],
                    other => return Err(format!("unknown backend {other}").into()),
                }
            }
            "--agents" => a.agents = val()?.parse()?,
            "--seconds" => a.seconds = val()?.parse::<u64>()?.clamp(1, 300),
            "--items" => a.items = val()?.parse::<usize>()?.clamp(1, 256),
            "--pg" => a.pg = val()?,
            "--log-level" => a.log_level = val()?,
            "--help" | "-h" => {
                println!("see the header of escrow/examples/escrow_load.rs");
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    if a.agents == 0 || a.agents > 1024 {
        return Err("--agents must be 1..=1024".into());
    }
    Ok(a)
}

/// A valid recovery password from a counter (each group = 11 × a 16-bit word).
fn password(n: u64) -> String {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x1234_5678;
    (0..8)
        .map(|_| {
            x ^= x >> 31;
            x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            format!("{:06}", (x % 65_536) * 11)
        })
        .collect::<Vec<_>>()
        .join("-")
}

fn guid() -> String {
    format!(
        "{{{}}}",
        uuid::Uuid::new_v4()
            .hyphenated()
            .to_string()
            .to_ascii_uppercase()
    )
}

struct Daemon {
    _process: support::Daemon,
    _dir: tempfile::TempDir,
    config: PathBuf,
    url: String,
    pin: String,
}

fn start_daemon(args: &Args, database_url: &str) -> Result<Daemon, BoxError> {
    let dir = tempfile::tempdir()?;
    let tls = write_tls(dir.path())?;
    let database_url = if database_url.is_empty() {
        format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("escrow.db").display()
        )
    } else {
        database_url.to_string()
    };
    // Every simulated agent connects from 127.0.0.1; in the field each is its own host.
    let (config, port) = write_escrow_config(
        dir.path(),
        dir.path(),
        &tls,
        &database_url,
        &args.log_level,
        "max_connections_per_client = 1024\n",
    )?;
    let process = support::start_daemon(&args.bin, &config, Duration::from_secs(60))?;
    Ok(Daemon {
        _process: process,
        _dir: dir,
        config,
        url: format!("https://127.0.0.1:{port}"),
        pin: tls.pin,
    })
}

fn bootstrap(bin: &Path, config: &Path) -> Result<String, BoxError> {
    let out = Command::new(bin)
        .args(["operator", "bootstrap", "--name", "admin", "--config"])
        .arg(config)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .map(|t| t.trim().to_string())
        .ok_or_else(|| format!("bootstrap failed: {}", String::from_utf8_lossy(&out.stderr)).into())
}

struct Row {
    backend: String,
    calls: u64,
    errors: u64,
    seconds: f64,
    lat_us: Vec<u64>,
}

async fn run_backend(args: &Args, backend: &str) -> Result<Row, BoxError> {
    let mut pg_drop = None;
    let database_url = if backend == "postgres" {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&args.pg)
            .await
            .map_err(|e| format!("PostgreSQL not reachable at {}: {e}", args.pg))?;
        let name = format!("nu_load_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut c)
            .await?;
        let base = args.pg.rsplit_once('/').map(|(b, _)| b).unwrap_or(&args.pg);
        pg_drop = Some(name.clone());
        format!("{base}/{name}")
    } else {
        String::new()
    };
    let daemon = start_daemon(args, &database_url)?;
    let trust = ServerTrust::PinnedSha256(daemon.pin.clone());
    let token = bootstrap(&args.bin, &daemon.config)?;
    let admin = ApiClient::new(&ApiClientConfig {
        base_url: daemon.url.clone(),
        trust: trust.clone(),
        token: Some(Zeroizing::new(token)),
        identity: None,
        timeout: Duration::from_secs(30),
    })?;
    let enroll = admin
        .create_enrollment_token(&wire::CreateEnrollmentToken {
            max_uses: args.agents as u32,
            ttl_seconds: 3600,
            note: Some("escrow_load".into()),
        })
        .await?
        .token;
    let certs_dir = tempfile::tempdir()?;
    let mut agents = Vec::with_capacity(args.agents);
    for i in 0..args.agents {
        let name = format!("LOAD-{i:04}");
        let c = certs::generate_client_certificate(&name, 7)?;
        let (cert, key) = (
            certs_dir.path().join(format!("{i}.crt")),
            certs_dir.path().join(format!("{i}.key")),
        );
        std::fs::write(&cert, &c.cert_pem)?;
        std::fs::write(&key, c.key_pem.as_bytes())?;
        let client = agent_client(&daemon.url, trust.clone(), &cert, &key)?;
        client
            .enroll(&wire::EnrollRequest {
                token: enroll.clone(),
                computer_name: name,
                domain: None,
                serial: None,
            })
            .await?;
        agents.push(client);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now() + Duration::from_millis(200);
    let mut tasks = Vec::new();
    for (i, client) in agents.into_iter().enumerate() {
        let stop = stop.clone();
        let items = args.items;
        tasks.push(tokio::spawn(async move {
            let volume = guid();
            let mut lat = Vec::new();
            let mut errors = 0u64;
            tokio::time::sleep_until(start.into()).await;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let body = wire::EscrowBody {
                    items: (0..items)
                        .map(|_| {
                            n += 1;
                            wire::EscrowItemBody {
                                volume_guid: volume.clone(),
                                mount_point: Some("C:".into()),
                                volume_type: "os".into(),
                                protector_id: guid(),
                                recovery_password: password((i as u64) << 32 | n),
                                key_package: None,
                            }
                        })
                        .collect(),
                    tpm_owner_auth: None,
                };
                let t = Instant::now();
                match client.escrow(&body).await {
                    Ok(_) => lat.push(t.elapsed().as_micros() as u64),
                    Err(e) => {
                        errors += 1;
                        if errors < 3 {
                            eprintln!("agent {i}: {e}");
                        }
                    }
                }
            }
            (lat, errors)
        }));
    }
    tokio::time::sleep_until((start + Duration::from_secs(args.seconds)).into()).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat_us = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        lat_us.extend(l);
        errors += e;
    }
    let seconds = start.elapsed().as_secs_f64();
    drop(daemon);
    if let Some(name) = pg_drop {
        use sqlx::Connection;
        if let Ok(mut c) = sqlx::PgConnection::connect(&args.pg).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut c)
                .await;
        }
    }
    lat_us.sort_unstable();
    Ok(Row {
        backend: backend.to_string(),
        calls: lat_us.len() as u64,
        errors,
        seconds,
        lat_us,
    })
}

fn pct(v: &[u64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)] as f64 / 1000.0
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), BoxError> {
    let args = parse_args()?;
    println!(
        "escrow_load: {} agents, {} item(s)/call, {} s per backend, daemon {}",
        args.agents,
        args.items,
        args.seconds,
        args.bin.display()
    );
    let mut rows = Vec::new();
    for b in &args.backends {
        match run_backend(&args, b).await {
            Ok(r) => rows.push(r),
            Err(e) => println!("{b}: SKIP ({e})"),
        }
    }
    println!();
    println!(
        "| backend  | agents | items/call | seconds | acknowledged calls | calls/s | p50 ms | p90 ms | p99 ms | max ms | errors |"
    );
    println!(
        "|----------|-------:|-----------:|--------:|-------------------:|--------:|-------:|-------:|-------:|-------:|-------:|"
    );
    for r in &rows {
        println!(
            "| {:<8} | {:>6} | {:>10} | {:>7.1} | {:>18} | {:>7.0} | {:>6.1} | {:>6.1} | {:>6.1} | {:>6.1} | {:>6} |",
            r.backend,
            args.agents,
            args.items,
            r.seconds,
            r.calls,
            r.calls as f64 / r.seconds,
            pct(&r.lat_us, 0.50),
            pct(&r.lat_us, 0.90),
            pct(&r.lat_us, 0.99),
            pct(&r.lat_us, 1.0),
            r.errors,
        );
    }
    Ok(())
}
