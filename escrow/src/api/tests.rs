//! Router-level tests on a real SQLite service (no TLS here: the accept loop's `ConnInfo` is
//! attached by hand; the e2e suite covers the same paths over real TLS against the binary).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::auth::ConnInfo;
use super::ratelimit::{RateLimit, RateLimiter};
use super::*;
use crate::sealing::Kek;

struct Fixture {
    _dir: tempfile::TempDir,
    app: Router,
    admin: String,
}

async fn fixture(limit: RateLimit, max_body: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("e.db").display());
    let service = EscrowService::open(&url, Kek::generate()).await.unwrap();
    let (_, admin) = service.bootstrap_admin("admin").await.unwrap();
    let registry = prometheus::Registry::new();
    let state = AppState {
        service,
        metrics: EscrowMetrics::register(&registry).unwrap(),
        limiter: Arc::new(RateLimiter::new(limit)),
        request_timeout: Duration::from_secs(10),
        stale_after: Duration::from_secs(30 * 86_400),
        unlock_window_days: Some(30),
    };
    Fixture {
        _dir: dir,
        app: router(state, max_body),
        admin,
    }
}

fn conn(cert: Option<&str>) -> ConnInfo {
    ConnInfo {
        peer: "127.0.0.1:50000".parse().unwrap(),
        client_cert_sha256: cert.map(str::to_string),
    }
}

async fn send(
    app: &Router,
    mut req: Request<Body>,
    cert: Option<&str>,
) -> (StatusCode, axum::http::HeaderMap, String) {
    req.extensions_mut().insert(conn(cert));
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn json_req(method: &str, uri: &str, token: Option<&str>, body: &str) -> Request<Body> {
    let mut b = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    b.body(Body::from(body.to_string())).unwrap()
}

fn get(uri: &str, token: Option<&str>) -> Request<Body> {
    let mut b = Request::builder().method("GET").uri(uri);
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    b.body(Body::empty()).unwrap()
}

fn error_code(body: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    v["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.code: {body}"))
        .to_string()
}

#[tokio::test]
async fn every_declared_route_is_routed() {
    let f = fixture(RateLimit::default(), 65536).await;
    let routes = crate::openapi::documented_routes();
    assert!(routes.len() >= 25, "{routes:?}");
    for (method, path) in routes {
        let uri = path
            .replace("{protector_id}", "{24B0AA32-F8D0-40BA-BB05-73A800324C09}")
            .replace("{id}", "999");
        let req = json_req(&method.to_uppercase(), &uri, Some(&f.admin), "{}");
        let (status, _, body) = send(&f.app, req, None).await;
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {body}"
        );
        if status == StatusCode::NOT_FOUND {
            assert!(
                !body.contains("no such API route"),
                "{method} {path} is not routed: {body}"
            );
        }
    }
}

#[tokio::test]
async fn bad_bodies_get_clear_json_errors() {
    let f = fixture(RateLimit::default(), 1024).await;
    let t = Some(f.admin.as_str());
    let cases: &[(&str, &str, StatusCode, &str, &str)] = &[
        (
            "/api/v1/operators",
            "{not json",
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "not valid JSON",
        ),
        (
            "/api/v1/operators",
            r#"{"name":"x","role":"admin","colour":"red"}"#,
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "unknown field `colour`",
        ),
        (
            "/api/v1/operators",
            r#"{"name":"x","role":"root"}"#,
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "not a valid role",
        ),
        (
            "/api/v1/operators",
            r#"{"name":"x"}"#,
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "missing field `role`",
        ),
        (
            "/api/v1/enrollment-tokens",
            r#"{"max_uses":0,"ttl_seconds":3600}"#,
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "max_uses",
        ),
        (
            "/api/v1/operators/abc/role",
            r#"{"role":"admin"}"#,
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "not a valid id",
        ),
    ];
    for (uri, body, status, code, needle) in cases {
        let (s, _, b) = send(&f.app, json_req("POST", uri, t, body), None).await;
        assert_eq!(s, *status, "{uri} {body}: {b}");
        assert_eq!(error_code(&b), *code, "{uri} {body}: {b}");
        assert!(b.contains(needle), "{uri} {body}: {b} lacks {needle:?}");
    }
    // Oversized body: 413 as JSON.
    let big = format!(r#"{{"name":"{}","role":"admin"}}"#, "x".repeat(4096));
    let (s, _, b) = send(&f.app, json_req("POST", "/api/v1/operators", t, &big), None).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    assert_eq!(error_code(&b), "body_too_large");
    // Wrong content type.
    let req = Request::builder()
        .method("POST")
        .uri("/api/v1/operators")
        .header(header::AUTHORIZATION, format!("Bearer {}", f.admin))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("{}"))
        .unwrap();
    let (s, _, b) = send(&f.app, req, None).await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{b}");
    // Nothing was created by any of the above.
    let (s, _, b) = send(&f.app, get("/api/v1/operators", t), None).await;
    assert_eq!(s, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["operators"].as_array().unwrap().len(), 1, "{b}");
}

#[tokio::test]
async fn authentication_failures() {
    let f = fixture(RateLimit::default(), 65536).await;
    let (s, h, b) = send(&f.app, get("/api/v1/operators", None), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(h.contains_key(header::WWW_AUTHENTICATE));
    assert!(b.contains("Authorization: Bearer"), "{b}");
    let (s, _, b) = send(&f.app, get("/api/v1/operators", Some("nu_bogus")), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(b.contains("unknown, expired or revoked"), "{b}");
    let req = Request::builder()
        .uri("/api/v1/operators")
        .header(header::AUTHORIZATION, "Basic YWRtaW46YWRtaW4=")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&f.app, req, None).await.0, StatusCode::UNAUTHORIZED);

    // Device routes: no certificate → 401 with the mTLS message; unknown certificate → 403.
    let (s, _, b) = send(&f.app, get("/api/v1/agent/keys", Some(&f.admin)), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(b.contains(auth::NEED_CERT), "{b}");
    let (s, _, b) = send(
        &f.app,
        get("/api/v1/agent/keys", None),
        Some(&"ab".repeat(32)),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert!(b.contains("not enrolled"), "{b}");
    // Enrollment without a certificate.
    let req = json_req(
        "POST",
        "/api/v1/enroll",
        None,
        r#"{"token":"x","computer_name":"SRV1"}"#,
    );
    let (s, _, b) = send(&f.app, req, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    assert!(b.contains("mutual TLS"), "{b}");
    // With a certificate but an enrollment token the appliance does not know: 401 that names it.
    let req = json_req(
        "POST",
        "/api/v1/enroll",
        None,
        r#"{"token":"nue_unknown","computer_name":"SRV1"}"#,
    );
    let (s, _, b) = send(&f.app, req, Some(&"cd".repeat(32))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    assert!(b.contains("enrollment token is not known"), "{b}");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let f = fixture(RateLimit::default(), 65536).await;
    let (s, _, b) = send(&f.app, get("/api/v1/nope", None), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&b), "not_found");
    let (s, _, b) = send(
        &f.app,
        json_req("DELETE", "/api/v1/operators", None, ""),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{b}");
    assert_eq!(error_code(&b), "method_not_allowed");
    let (s, _, b) = send(&f.app, get("/api/v1/openapi.json", None), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, crate::openapi::document_json());
    let (s, _, b) = send(&f.app, get("/api/v1/health", None), None).await;
    assert_eq!((s, b.as_str()), (StatusCode::OK, r#"{"status":"ok"}"#));
}

#[tokio::test]
async fn lookups_are_rate_limited_per_operator() {
    let f = fixture(
        RateLimit {
            burst: 3,
            per_second: 0.01,
        },
        65536,
    )
    .await;
    for _ in 0..3 {
        let (s, _, b) = send(
            &f.app,
            get("/api/v1/keys?prefix=24B0AA32", Some(&f.admin)),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let (s, h, b) = send(
        &f.app,
        get("/api/v1/keys?prefix=24B0AA32", Some(&f.admin)),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{b}");
    assert!(h.contains_key(header::RETRY_AFTER));
    assert_eq!(error_code(&b), "rate_limited");
    // Other routes are not limited.
    assert_eq!(
        send(&f.app, get("/api/v1/operators", Some(&f.admin)), None)
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn find_needs_exactly_one_criterion_and_audit_csv_is_csv() {
    let f = fixture(RateLimit::default(), 65536).await;
    let t = Some(f.admin.as_str());
    for uri in [
        "/api/v1/keys",
        "/api/v1/keys?prefix=12345678&device=x",
        "/api/v1/keys?colour=red",
    ] {
        let (s, _, b) = send(&f.app, get(uri, t), None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}: {b}");
    }
    let (s, h, b) = send(&f.app, get("/api/v1/reports/audit?format=csv", t), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(
        h[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let mut lines = b.split("\r\n");
    assert_eq!(lines.next().unwrap(), reports::CSV_HEADER.join(","));
    assert!(b.contains("operator_bootstrap"), "{b}");
    for uri in [
        "/api/v1/reports/audit?format=xml",
        "/api/v1/reports/audit?from=yesterday",
        "/api/v1/reports/audit?from=2026-02-01&to=2026-01-01",
        "/api/v1/reports/fleet?stale_days=0",
        "/api/v1/reports/unlocks?days=0",
        "/api/v1/reports/unlocks?days=366",
        "/api/v1/reports/unlocks?window=7",
    ] {
        let (s, _, b) = send(&f.app, get(uri, t), None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}: {b}");
    }
}

/// The Network Unlock fleet report: the server's window by default, `days` to choose another.
#[tokio::test]
async fn unlock_report_uses_the_configured_window_unless_asked() {
    let f = fixture(RateLimit::default(), 65536).await;
    let t = Some(f.admin.as_str());
    for (uri, days) in [
        ("/api/v1/reports/unlocks", 30),
        ("/api/v1/reports/unlocks?days=7", 7),
    ] {
        let (s, _, b) = send(&f.app, get(uri, t), None).await;
        assert_eq!(s, StatusCode::OK, "{uri}: {b}");
        let r: wire::UnlockFleetReport = serde_json::from_str(&b).unwrap();
        assert_eq!(r.window_days, days, "{uri}");
        assert_eq!(
            (r.devices_without_unlock_total, r.unknown_adapters_total),
            (0, 0)
        );
    }
}

#[test]
fn escrow_bodies_are_validated_item_by_item() {
    use super::agent::parse_escrow;
    use super::wire::{EscrowBody, EscrowItemBody};
    let good = EscrowItemBody {
        volume_guid: "{0B3E0C6A-0000-4000-8000-000000000001}".into(),
        mount_point: Some("C:".into()),
        volume_type: "os".into(),
        protector_id: "{24B0AA32-F8D0-40BA-BB05-73A800324C09}".into(),
        recovery_password: "000000-000011-000022-000033-000044-000055-000066-000077".into(),
        key_package: Some("AAEC".into()),
    };
    assert_eq!(
        parse_escrow(EscrowBody {
            items: vec![good.clone()],
            tpm_owner_auth: None
        })
        .unwrap()
        .items
        .len(),
        1
    );
    let cases: Vec<(EscrowItemBody, &str)> = vec![
        (
            EscrowItemBody {
                recovery_password: "000000-000011-000022-000033-000044-000055-000066-000078".into(),
                ..good.clone()
            },
            "item 2: group 8",
        ),
        (
            EscrowItemBody {
                recovery_password: "123".into(),
                ..good.clone()
            },
            "item 2: recovery password must have 8 groups",
        ),
        (
            EscrowItemBody {
                volume_guid: "C:".into(),
                ..good.clone()
            },
            "item 2: volume_guid",
        ),
        (
            EscrowItemBody {
                protector_id: "zz".into(),
                ..good.clone()
            },
            "item 2: protector_id",
        ),
        (
            EscrowItemBody {
                volume_type: "floppy".into(),
                ..good.clone()
            },
            "item 2: volume_type",
        ),
        (
            EscrowItemBody {
                key_package: Some("***".into()),
                ..good.clone()
            },
            "item 2: key_package is not valid base64",
        ),
    ];
    for (bad, needle) in cases {
        let err = parse_escrow(EscrowBody {
            items: vec![good.clone(), bad],
            tpm_owner_auth: None,
        })
        .unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert!(
            err.message.contains(needle),
            "{} lacks {needle:?}",
            err.message
        );
        assert!(
            !err.message.contains("000078"),
            "the password must not be echoed: {}",
            err.message
        );
    }
    // Counts and sizes are the service's to check, once (see model::limits).
}
