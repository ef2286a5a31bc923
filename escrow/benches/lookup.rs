//! Help-desk lookup at scale (issue 3 "Proof"): bulk-load N escrowed keys (default 1,000,000) through
//! `EscrowService::bulk_import` (sealing and password MACs included), then measure `find_by_prefix` and
//! `disclose` latency percentiles. SQLite always; PostgreSQL when reachable.
//!
//! cargo bench -p escrow --bench lookup
//! env: ESCROW_BENCH_KEYS (1000000), ESCROW_BENCH_LOOKUPS (2000), ESCROW_BENCH_BACKENDS (sqlite,postgres),
//!      DATABASE_URL (postgres://postgres@127.0.0.1:5432/test)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use escrow::{Actor, DisclosureReason, EscrowService, ImportRecord, Kek, ProtectorId};
use sqlx::Connection;
use uuid::Uuid;

use support::{BATCH, PER_DEVICE, device_name, env_usize, password, percentile, record};

/// xorshift64*: deterministic, dependency-free choice of lookup targets.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

struct Stats(Vec<Duration>);
impl Stats {
    fn pct(&self, p: f64) -> Duration {
        percentile(&mut self.0.clone(), p)
    }
    fn row(&self, backend: &str, op: &str) -> String {
        let ms = |d: Duration| format!("{:.3}", d.as_secs_f64() * 1000.0);
        format!(
            "| {backend:<10} | {op:<14} | {:>6} | {:>8} | {:>8} | {:>8} | {:>8} |",
            self.0.len(),
            ms(self.pct(0.5)),
            ms(self.pct(0.9)),
            ms(self.pct(0.99)),
            ms(self.pct(1.0))
        )
    }
}

async fn run(backend: &str, url: &str, n: usize, lookups: usize) -> Vec<String> {
    let svc = EscrowService::open(url, Kek::generate()).await.unwrap();
    let admin = Actor::local("bench");
    let pids: Vec<ProtectorId> = (0..n).map(|_| ProtectorId(Uuid::new_v4())).collect();
    let t = Instant::now();
    for start in (0..n).step_by(BATCH) {
        let recs: Vec<ImportRecord> = (start..(start + BATCH).min(n))
            .map(|i| record(i, pids[i]))
            .collect();
        let inserted = svc.bulk_import(&admin, &recs).await.unwrap();
        assert_eq!(inserted as usize, recs.len());
        if start % 200_000 == 0 {
            eprintln!(
                "  {backend}: {} keys loaded ({:.0?})",
                start + recs.len(),
                t.elapsed()
            );
        }
    }
    let load = t.elapsed();
    // Fresh planner statistics, as autovacuum (PostgreSQL) or `PRAGMA optimize` (SQLite) would give a
    // long-running database; without them PostgreSQL may hash-join whole tables for a one-row lookup.
    let t_an = Instant::now();
    sqlx::query("ANALYZE")
        .execute(svc.db().pool())
        .await
        .unwrap();
    eprintln!("  {backend}: ANALYZE took {:.1?}", t_an.elapsed());
    eprintln!(
        "  {backend}: loaded {n} keys in {load:.1?}; measuring {lookups} lookups and disclosures"
    );
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut find = Vec::with_capacity(lookups);
    for _ in 0..lookups {
        let i = rng.below(n);
        let prefix = pids[i].prefix8();
        let t = Instant::now();
        let c = svc.find_by_prefix(&admin, &prefix).await.unwrap();
        find.push(t.elapsed());
        assert!(c.iter().any(|k| k.protector_id == pids[i]));
    }
    let mut disclose = Vec::with_capacity(lookups);
    for _ in 0..lookups {
        let i = rng.below(n);
        let name = device_name(i);
        let t = Instant::now();
        let d = svc
            .disclose(
                &admin,
                &pids[i],
                Some(&name),
                DisclosureReason::TpmReset,
                None,
                None,
            )
            .await
            .unwrap();
        disclose.push(t.elapsed());
        assert_eq!(d.recovery_password.expose(), password(i as u64));
    }
    svc.close().await;
    vec![
        format!(
            "| {backend:<10} | {:<14} | {n:>6} | load {:.1} s = {:.0} keys/s |",
            "bulk load",
            load.as_secs_f64(),
            n as f64 / load.as_secs_f64()
        ),
        Stats(find).row(backend, "find_by_prefix"),
        Stats(disclose).row(backend, "disclose"),
    ]
}

fn main() {
    let n = env_usize("ESCROW_BENCH_KEYS", 1_000_000);
    let lookups = env_usize("ESCROW_BENCH_LOOKUPS", 2_000);
    let backends =
        std::env::var("ESCROW_BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut table = vec![
        format!(
            "Escrow lookup benchmark: {n} keys ({} per device), {lookups} random lookups/disclosures, latency in ms",
            PER_DEVICE
        ),
        "| backend    | operation      | count  | p50      | p90      | p99      | max      |"
            .into(),
        "|------------|----------------|--------|----------|----------|----------|----------|"
            .into(),
    ];
    if backends.contains("sqlite") {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let rows = rt.block_on(run("sqlite", &url, n, lookups));
        eprintln!("{}", rows.join("\n"));
        table.extend(rows);
    }
    if backends.contains("postgres") {
        let base = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let schema = format!("bench_{}", Uuid::new_v4().simple());
        let ok = rt.block_on(async {
            match tokio::time::timeout(Duration::from_secs(3), sqlx::PgConnection::connect(&base))
                .await
            {
                Ok(Ok(mut c)) => sqlx::query(&format!("CREATE SCHEMA {schema}"))
                    .execute(&mut c)
                    .await
                    .is_ok(),
                _ => false,
            }
        });
        if ok {
            let sep = if base.contains('?') { '&' } else { '?' };
            table.extend(rt.block_on(run(
                "postgres",
                &format!("{base}{sep}options=-csearch_path%3D{schema}"),
                n,
                lookups,
            )));
            rt.block_on(async {
                if let Ok(mut c) = sqlx::PgConnection::connect(&base).await {
                    let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                        .execute(&mut c)
                        .await;
                }
            });
        } else {
            table.push(format!("SKIP: PostgreSQL not reachable at {base}"));
        }
    }
    println!("{}", table.join("\n"));
}
