//! Load tool (a benchmark, not a test): the audit CSV export of a large log against the real
//! `netunlockd serve` on loopback (SQLite, or PostgreSQL in a scratch schema of DATABASE_URL,
//! default postgres://postgres@127.0.0.1:5432/test). Fills the audit log with N hash-chained
//! records through the store's bulk append, then
//! downloads `GET /api/v1/reports/audit?format=csv` chunk by chunk and prints the time, the rows
//! and bytes received, and the daemon's memory (VmRSS before, VmHWM after) — the export streams,
//! so the peak must not grow with N. Also pages through the JSON report (`limit=1000`) once.
//!
//! cargo build --release -p netunlockd
//! cargo run --release -p escrow --example audit_export -- --bin target/release/netunlockd \
//!     [--backend sqlite|postgres] [--records 1000000] [--json-pages 50]
//!
//! Bounded: one export and at most --json-pages JSON pages, loopback only, everything in a
//! temporary directory.

mod support;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use escrow::audit::{AuditRecord, from_micros, to_micros};
use escrow::client::{ApiClient, ApiClientConfig, ServerTrust, Zeroizing};
use escrow::{AuditOutcome, Kek, wire};
use sqlx::Connection;

use support::{BoxError, start_daemon, write_escrow_config, write_tls};

struct Args {
    bin: PathBuf,
    postgres: bool,
    records: u64,
    json_pages: u32,
}

fn parse_args() -> Result<Args, BoxError> {
    let mut a = Args {
        bin: PathBuf::from("target/release/netunlockd"),
        postgres: false,
        records: 1_000_000,
        json_pages: 50,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--bin" => a.bin = PathBuf::from(val()?),
            "--backend" => {
                a.postgres = match val()?.as_str() {
                    "sqlite" => false,
                    "postgres" => true,
                    other => return Err(format!("--backend sqlite|postgres, not {other}").into()),
                }
            }
            "--records" => a.records = val()?.parse::<u64>()?.clamp(1, 20_000_000),
            "--json-pages" => a.json_pages = val()?.parse::<u32>()?.clamp(1, 10_000),
            "--help" | "-h" => {
                println!("see the header of escrow/examples/audit_export.rs");
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    Ok(a)
}

/// Appends `n` disclose-like records through the store's one bulk path
/// (`EscrowService::import_audit_records`, which chains and hashes them), 20,000 per transaction.
async fn fill_audit_log(svc: &escrow::EscrowService, n: u64) -> Result<(), BoxError> {
    let start = to_micros(time::OffsetDateTime::now_utc()) - i64::try_from(n)? * 1000;
    let mut done: u64 = 0;
    while done < n {
        let rows = (n - done).min(20_000);
        let batch: Vec<AuditRecord> = (done..done + rows)
            .map(|i| {
                let i = i64::try_from(i).unwrap_or(i64::MAX);
                AuditRecord {
                    // seq and hashes are assigned by the import.
                    seq: 0,
                    at: from_micros(start + i * 1000),
                    actor_kind: "operator".into(),
                    actor_id: Some(2),
                    actor_name: format!("helpdesk{}", i % 17),
                    action: "disclose".into(),
                    device_id: Some(i % 5000),
                    device_name: Some(format!("SRV-{:05}", i % 5000)),
                    protector_id: Some(format!("{{{:08X}-0000-4000-8000-{:012X}}}", i, i)),
                    reason: Some("lost_pin".into()),
                    outcome: AuditOutcome::Success,
                    client_addr: Some("192.0.2.10".into()),
                    detail: format!(
                        "{{\"reason_text\":null,\"volume_guid\":\"{i:032X}\",\"rotation_requested\":true}}"
                    ),
                    prev_hash: Vec::new(),
                    hash: Vec::new(),
                }
            })
            .collect();
        svc.import_audit_records(batch).await?;
        done += rows;
    }
    Ok(())
}

/// `VmRSS` / `VmHWM` of a process, in MiB.
fn mem_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Counts bytes and CSV records (CRLF-terminated lines) as they stream by, keeping nothing.
#[derive(Default)]
struct Counter {
    bytes: u64,
    lines: u64,
}

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes += buf.len() as u64;
        self.lines += buf.windows(2).filter(|w| w == b"\r\n").count() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = parse_args()?;
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state)?;
    let db = state.join("escrow.db");
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("audit_export_{}", std::process::id());
    let database_url = if args.postgres {
        let mut c = sqlx::PgConnection::connect(&base).await?;
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut c)
            .await?;
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}options=-csearch_path%3D{schema}")
    } else {
        format!("sqlite://{}?mode=rwc", db.display())
    };

    // Schema, keyring and the first admin, exactly as the daemon will find them.
    let kek = Kek::load_or_create(&state.join("kek.bin"))?;
    let svc = escrow::EscrowService::open(&database_url, kek).await?;
    let (_, token) = svc.bootstrap_admin("admin").await?;
    let fill = Instant::now();
    fill_audit_log(&svc, args.records).await?;
    svc.close().await;
    let size = if args.postgres {
        String::from("PostgreSQL")
    } else {
        format!(
            "database {:.0} MiB",
            std::fs::metadata(&db)?.len() as f64 / 1048576.0
        )
    };
    println!(
        "backend {}: filled {} audit records in {:.1} s ({size})",
        if args.postgres { "postgres" } else { "sqlite" },
        args.records,
        fill.elapsed().as_secs_f64(),
    );

    let tls = write_tls(dir.path())?;
    let (config, port) = write_escrow_config(
        dir.path(),
        &state,
        &tls,
        &database_url,
        "info",
        "request_timeout_secs = 60\n",
    )?;
    let booting = Instant::now();
    let daemon = start_daemon(&args.bin, &config, Duration::from_secs(900))?;
    println!(
        "daemon ready after {:.1} s (start-up verifies the audit chain)",
        booting.elapsed().as_secs_f64()
    );
    let pid = daemon.0.id();
    let client = ApiClient::new(&ApiClientConfig {
        base_url: format!("https://127.0.0.1:{port}"),
        trust: ServerTrust::PinnedSha256(tls.pin.clone()),
        token: Some(Zeroizing::new(token)),
        identity: None,
        timeout: Duration::from_secs(3600),
    })?;
    client.me().await?;
    let rss_before = mem_mib(pid, "VmRSS:");

    let started = Instant::now();
    let mut counter = Counter::default();
    client
        .audit_report_csv_to(&wire::AuditQuery::default(), &mut counter)
        .await?;
    let secs = started.elapsed().as_secs_f64();
    let hwm = mem_mib(pid, "VmHWM:");
    // The header plus the bootstrap record plus the filled ones.
    let rows = counter.lines.saturating_sub(1);
    println!(
        "CSV export: {rows} records, {:.0} MiB in {secs:.1} s ({:.0} records/s); daemon VmRSS before {rss_before:.0} MiB, VmHWM after {hwm:.0} MiB",
        counter.bytes as f64 / 1048576.0,
        rows as f64 / secs
    );
    if rows < args.records {
        return Err(format!("the export has {rows} records, fewer than {}", args.records).into());
    }

    let started = Instant::now();
    let mut q = wire::AuditQuery {
        limit: Some(1000),
        ..Default::default()
    };
    let mut got = 0usize;
    for _ in 0..args.json_pages {
        let page = client.audit_report(&q).await?;
        got += page.records.len();
        match page.next {
            Some(n) => q.cursor = Some(n),
            None => break,
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "JSON pages (limit=1000): {got} records in {secs:.2} s ({:.1} ms/page); daemon VmHWM {:.0} MiB",
        secs * 1000.0 / (got as f64 / 1000.0).max(1.0),
        mem_mib(pid, "VmHWM:")
    );
    drop(daemon);
    if args.postgres {
        let mut c = sqlx::PgConnection::connect(&base).await?;
        sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&mut c)
            .await?;
    }
    Ok(())
}
