//! Server time per console page at scale (issue 10: "< 50 ms per page at 1M keys"): bulk-load N
//! escrowed keys (default 1,000,000) through `EscrowService::bulk_import`, then request each page
//! through the console's router in-process (session lookup, service calls, template rendering;
//! no TLS or network) and print latency percentiles per page.
//!
//! cargo bench -p escrow --bench console_pages
//! env: CONSOLE_BENCH_KEYS (1000000), CONSOLE_BENCH_REQUESTS (200 per page), CONSOLE_BENCH_DB (reuse
//!      a SQLite file loaded by an earlier run: skips the load when it already holds the keys)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use escrow::api::auth::ConnInfo;
use escrow::api::ratelimit::{RateLimit, RateLimiter};
use escrow::metrics::EscrowMetrics;
use escrow::web::{self, WebState};
use escrow::{
    Actor, EscrowItem, EscrowService, ImportRecord, Kek, ProtectorId, Role, SessionPolicy,
    VolumeType, parse_recovery_password,
};
use http_body_util::BodyExt;
use time::OffsetDateTime;
use tower::ServiceExt;
use uuid::Uuid;

const PER_DEVICE: usize = 10;
const BATCH: usize = 20_000;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn password(n: u64) -> String {
    (0..8u64)
        .map(|i| {
            format!(
                "{:06}",
                11 * ((n.wrapping_mul(7919).wrapping_add(i * 104_729)) % 65_536)
            )
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Deterministic key IDs, so a reused database can be queried again.
fn pid(i: usize) -> ProtectorId {
    ProtectorId(Uuid::from_u128(
        (i as u128).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)
            | 0x4000_8000_0000_0000_0000,
    ))
}

fn device_name(i: usize) -> String {
    format!("SRV{:07}", i / PER_DEVICE)
}

fn record(i: usize) -> ImportRecord {
    let volume = i / 5;
    ImportRecord {
        computer_name: device_name(i),
        domain: Some("corp.example".into()),
        item: EscrowItem {
            volume_guid: Uuid::from_u128(
                0x1111_0000_0000_4000_8000_0000_0000_0000 | volume as u128,
            ),
            mount_point: Some(if volume.is_multiple_of(2) {
                "C:".into()
            } else {
                "D:".into()
            }),
            volume_type: if volume.is_multiple_of(2) {
                VolumeType::OperatingSystem
            } else {
                VolumeType::FixedData
            },
            protector_id: pid(i),
            recovery_password: parse_recovery_password(&password(i as u64)).unwrap(),
            key_package: None,
        },
        escrowed_at: OffsetDateTime::now_utc(),
    }
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, Duration, usize) {
    let mut req = req;
    req.extensions_mut().insert(ConnInfo {
        peer: "127.0.0.1:50000".parse().unwrap(),
        client_cert_sha256: None,
    });
    let t = Instant::now();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, t.elapsed(), body.len())
}

fn get(uri: &str, cookie: &str) -> Request<Body> {
    Request::get(uri)
        .header(header::COOKIE, cookie)
        .body(Body::empty())
        .unwrap()
}

fn post(uri: &str, cookie: &str, form: &[(&str, &str)]) -> Request<Body> {
    Request::post(uri)
        .header(header::COOKIE, cookie)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(serde_urlencoded::to_string(form).unwrap()))
        .unwrap()
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[idx.min(v.len() - 1)].as_secs_f64() * 1000.0
}

async fn bench() {
    let n = env_usize("CONSOLE_BENCH_KEYS", 1_000_000);
    let requests = env_usize("CONSOLE_BENCH_REQUESTS", 200);
    let dir = tempfile::tempdir().unwrap();
    let path = std::env::var("CONSOLE_BENCH_DB")
        .unwrap_or_else(|_| dir.path().join("console.db").display().to_string());
    let kek_path = format!("{path}.kek");
    let kek = Kek::load_or_create(std::path::Path::new(&kek_path)).unwrap();
    let svc = EscrowService::open(&format!("sqlite://{path}"), kek)
        .await
        .unwrap();
    let local = Actor::local("bench");
    let have: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM protectors")
        .fetch_one(svc.db().pool())
        .await
        .unwrap();
    if (have as usize) < n {
        let t = Instant::now();
        for start in (have as usize..n).step_by(BATCH) {
            let recs: Vec<ImportRecord> = (start..(start + BATCH).min(n)).map(record).collect();
            svc.bulk_import(&local, &recs).await.unwrap();
            if start % 200_000 == 0 {
                eprintln!("  {} keys loaded ({:.0?})", start + recs.len(), t.elapsed());
            }
        }
        sqlx::query("ANALYZE")
            .execute(svc.db().pool())
            .await
            .unwrap();
        eprintln!("  loaded {n} keys in {:.1?}", t.elapsed());
    }
    let admin = match svc
        .create_operator(&local, "bench-admin", Role::Admin)
        .await
    {
        Ok(o) => o,
        Err(_) => svc
            .list_operators(&local)
            .await
            .unwrap()
            .into_iter()
            .find(|o| o.name == "bench-admin")
            .unwrap(),
    };
    let (_, token) = svc.create_api_token(&local, admin.id, None).await.unwrap();
    let registry = prometheus::Registry::new();
    let app = web::router(WebState {
        service: svc.clone(),
        metrics: EscrowMetrics::register(&registry).unwrap(),
        limiter: Arc::new(RateLimiter::new(RateLimit {
            burst: u32::MAX,
            per_second: 1e9,
        })),
        sessions: SessionPolicy::default(),
        request_timeout: Duration::from_secs(60),
        stale_after: Duration::from_secs(30 * 86_400),
        unlock_window_days: Some(30),
        directory: None,
    });
    // Sign in through the form, as a browser does.
    let pre_cookie = "__Host-nu_signin=0123456789abcdef0123456789abcdef0123";
    let pre = "0123456789abcdef0123456789abcdef0123";
    let mut req = post("/sign-in", pre_cookie, &[("csrf", pre), ("token", &token)]);
    req.extensions_mut().insert(ConnInfo {
        peer: "127.0.0.1:1".parse().unwrap(),
        client_cert_sha256: None,
    });
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let secret = resp
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .find_map(|v| {
            v.to_str()
                .ok()?
                .strip_prefix(&format!("{}=", web::SESSION_COOKIE))
                .map(|s| s.split(';').next().unwrap_or("").to_owned())
        })
        .unwrap();
    let cookie = format!("{}={secret}", web::SESSION_COOKIE);
    let csrf = web::csrf::token_for(&secret);
    // The server computes the fleet snapshot at start and every 30 s with the gauges; time that
    // background work here (twice: cold, then warm), as the fleet page only reads its result.
    for round in ["cold", "warm"] {
        let t = Instant::now();
        svc.refresh_fleet_snapshot(Duration::from_secs(30 * 86_400), 30)
            .await
            .unwrap();
        eprintln!(
            "  fleet snapshot refresh ({round}, background work every 30 s): {:.1} ms",
            t.elapsed().as_secs_f64() * 1000.0
        );
    }
    let device_id: i64 =
        sqlx::query_scalar("SELECT id FROM devices ORDER BY id LIMIT 1 OFFSET 4242")
            .fetch_one(svc.db().pool())
            .await
            .unwrap();

    let rng = std::cell::Cell::new(0x9E37_79B9_7F4A_7C15u64);
    let next = || {
        let mut x = rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        rng.set(x);
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) % n as u64) as usize
    };
    let mut table = vec![
        format!("Console page time, {n} keys ({PER_DEVICE} per device), {requests} requests per page, in-process (ms)"),
        "| page                                   | count | p50 ms  | p90 ms  | p99 ms  | max ms  | bytes  |".into(),
        "|----------------------------------------|------:|--------:|--------:|--------:|--------:|-------:|".into(),
    ];
    type Make<'a> = Box<dyn FnMut() -> Request<Body> + 'a>;
    let pages: Vec<(&str, Make<'_>)> = vec![
        (
            "GET /recovery (form)",
            Box::new(|| get("/recovery", &cookie)),
        ),
        (
            "GET /recovery?key=<prefix>&device=",
            Box::new(|| {
                let i = next();
                get(
                    &format!(
                        "/recovery?key={}&device={}",
                        pid(i).prefix8(),
                        device_name(i)
                    ),
                    &cookie,
                )
            }),
        ),
        (
            "GET /recovery?key=<full id> (reason)",
            Box::new(|| {
                let i = next();
                get(
                    &format!(
                        "/recovery?key={}&device={}",
                        pid(i).db_string(),
                        device_name(i)
                    ),
                    &cookie,
                )
            }),
        ),
        (
            "POST /recovery/disclose",
            Box::new(|| {
                let i = next();
                post(
                    "/recovery/disclose",
                    &cookie,
                    &[
                        ("csrf", &csrf),
                        ("protector_id", &pid(i).db_string()),
                        ("device_name", &device_name(i)),
                        ("reason", "lost_pin"),
                    ],
                )
            }),
        ),
        (
            "GET /devices?name=SRV00042",
            Box::new(|| get("/devices?name=SRV00042", &cookie)),
        ),
        (
            "GET /devices/{id}",
            Box::new(|| get(&format!("/devices/{device_id}"), &cookie)),
        ),
        (
            "GET /reports/audit",
            Box::new(|| get("/reports/audit", &cookie)),
        ),
        (
            "GET /reports/audit?action=disclose",
            Box::new(|| get("/reports/audit?action=disclose", &cookie)),
        ),
        (
            "GET /reports/audit?cursor= (older page)",
            Box::new(|| get("/reports/audit?cursor=c1.100", &cookie)),
        ),
        ("GET /dashboard", Box::new(|| get("/dashboard", &cookie))),
        (
            "GET /admin/tokens",
            Box::new(|| get("/admin/tokens", &cookie)),
        ),
        (
            "GET /reports/fleet",
            Box::new(|| get("/reports/fleet", &cookie)),
        ),
        ("GET /admin", Box::new(|| get("/admin", &cookie))),
        ("GET /tpm", Box::new(|| get("/tpm", &cookie))),
    ];
    for (name, mut make) in pages {
        let mut times = Vec::with_capacity(requests);
        let mut bytes = 0;
        let count = if name.contains("fleet") {
            requests.min(20)
        } else {
            requests
        };
        for _ in 0..count {
            let (status, t, len) = send(&app, make()).await;
            assert_eq!(status, StatusCode::OK, "{name}");
            times.push(t);
            bytes = len;
        }
        let row = format!(
            "| {name:<38} | {:>5} | {:>7.2} | {:>7.2} | {:>7.2} | {:>7.2} | {bytes:>6} |",
            times.len(),
            pct(&mut times, 0.5),
            pct(&mut times, 0.9),
            pct(&mut times, 0.99),
            pct(&mut times, 1.0)
        );
        eprintln!("{row}");
        table.push(row);
    }
    svc.close().await;
    println!("{}", table.join("\n"));
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(bench());
}
