//! Server time per console page at scale (issue 10: "< 50 ms per page at 1M keys"): bulk-load N
//! escrowed keys (default 1,000,000) through `EscrowService::bulk_import`, then request each page
//! through the console's router in-process (session lookup, service calls, template rendering;
//! no TLS or network) and print latency percentiles per page.
//!
//! cargo bench -p escrow --bench console_pages
//! env: CONSOLE_BENCH_KEYS (1000000), CONSOLE_BENCH_REQUESTS (200 per page), CONSOLE_BENCH_DB (reuse
//!      a SQLite file loaded by an earlier run: skips the load when it already holds the keys)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

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
    Actor, DeviceFilter, EscrowService, ImportRecord, Kek, MacAddress, ProtectorId, Role,
    SessionPolicy, UnlockEvent,
};
use http_body_util::BodyExt;
use time::OffsetDateTime;
use tower::ServiceExt;
use uuid::Uuid;

use support::{BATCH, PER_DEVICE, device_name, env_usize, percentile, record};

/// Deterministic key IDs, so a reused database can be queried again.
fn pid(i: usize) -> ProtectorId {
    ProtectorId(Uuid::from_u128(
        (i as u128).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)
            | 0x4000_8000_0000_0000_0000,
    ))
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
    percentile(v, p).as_secs_f64() * 1000.0
}

/// Unknown adapters (MACs no device reports) that asked in the last day, 5 requests each.
const UNKNOWN_ADAPTERS: usize = 1000;

fn unlock_event(at: OffsetDateTime, mac: MacAddress, outcome: &str) -> UnlockEvent {
    UnlockEvent {
        at,
        family: "v4".into(),
        client: mac.to_string(),
        mac: Some(mac),
        address: "10.20.0.1".into(),
        interface: "eth0".into(),
        relay: Some("10.20.0.254".into()),
        thumbprint: "ab".repeat(20),
        outcome: outcome.into(),
    }
}

/// The Network Unlock side at fleet scale, once per database: every device reports two adapters;
/// the first one asked once a month over 90 days (answered), except every tenth device, whose last
/// answer is 40 days old (the fleet report lists those); plus [`UNKNOWN_ADAPTERS`] adapters no
/// device reports.
async fn load_unlock_records(svc: &EscrowService, local: &Actor) {
    let have: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM unlock_events")
        .fetch_one(svc.db().pool())
        .await
        .unwrap();
    if have > 0 {
        return;
    }
    let t = Instant::now();
    let devices = svc
        .list_devices(local, DeviceFilter::default())
        .await
        .unwrap();
    let now = OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    let mut events = Vec::with_capacity(BATCH);
    let mac_of = |device: i64, port: u8| {
        let id = device.to_be_bytes();
        MacAddress([0x02, id[4], id[5], id[6], id[7], port])
    };
    // Adapters in one transaction of multi-row inserts (one check-in per device would take minutes
    // of fsyncs); the rows are what `EscrowService::report_adapters` writes.
    let mut tx = svc.db().pool().begin().await.unwrap();
    for chunk in devices.chunks(5000) {
        let sql = format!(
            "INSERT INTO device_adapters (device_id, mac, reported_at) VALUES {}",
            vec!["(?, ?, ?)"; chunk.len() * 2].join(", ")
        );
        let mut q = sqlx::query(&sql);
        for d in chunk {
            for port in [1, 2] {
                q = q
                    .bind(d.id)
                    .bind(mac_of(d.id, port).to_string())
                    .bind(now.unix_timestamp() * 1_000_000);
            }
        }
        q.execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
    for d in &devices {
        let mac = |port: u8| mac_of(d.id, port);
        let last = if d.id % 10 == 0 { 40 } else { 25 };
        for ago in [last, last + 30, last + 60] {
            events.push(unlock_event(now - day * ago, mac(1), "answered"));
        }
        if events.len() >= BATCH {
            svc.record_unlock_events(&events).await.unwrap();
            events.clear();
        }
    }
    for i in 0..UNKNOWN_ADAPTERS {
        let b = (i as u32).to_be_bytes();
        let mac = MacAddress([0x06, 0xee, b[0], b[1], b[2], b[3]]);
        for k in 0..5 {
            events.push(unlock_event(
                now - time::Duration::minutes(10 * k + i as i64 % 600),
                mac,
                if k == 0 {
                    "unknown_certificate"
                } else {
                    "answered"
                },
            ));
        }
    }
    svc.record_unlock_events(&events).await.unwrap();
    sqlx::query("ANALYZE")
        .execute(svc.db().pool())
        .await
        .unwrap();
    eprintln!(
        "  {} devices: 2 adapters each, {} Network Unlock records, loaded in {:.1?}",
        devices.len(),
        devices.len() * 3 + UNKNOWN_ADAPTERS * 5,
        t.elapsed()
    );
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
            let recs: Vec<ImportRecord> = (start..(start + BATCH).min(n))
                .map(|i| record(i, pid(i)))
                .collect();
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
    load_unlock_records(&svc, &local).await;
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
    // The API's live Network Unlock report and the daemon's unlock gauges (every 60 s).
    let t = Instant::now();
    let unlocks = svc.unlock_fleet_report(&local, 30).await.unwrap();
    eprintln!(
        "  GET /api/v1/reports/unlocks (service call): {:.1} ms, {} devices without unlock, {} unknown adapters",
        t.elapsed().as_secs_f64() * 1000.0,
        unlocks.devices_without_unlock_total,
        unlocks.unknown_adapters_total
    );
    let t = Instant::now();
    svc.unlock_gauges(30).await.unwrap();
    eprintln!(
        "  unlock gauges (daemon, every 60 s): {:.1} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
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
