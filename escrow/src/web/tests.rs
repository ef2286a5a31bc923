//! Console router tests on a real SQLite service: sign-in and sessions, security headers, roles,
//! CSRF, and the recovery flow down to the audit report. (The browser tests in tests/e2e drive the
//! same pages in Chromium against the real binary.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use time::OffsetDateTime;
use tower::ServiceExt;

use super::*;
use crate::api::auth::ConnInfo;
use crate::api::ratelimit::RateLimit;
use crate::model::{
    Actor, EscrowItem, ImportRecord, ProtectorId, Role, VolumeType, parse_recovery_password,
};
use crate::sealing::Kek;
use crate::service::ManualClock;

pub(super) const PASSWORD: &str = "111111-222222-333333-444444-555555-666666-099990-000011";
const KEY_ID: &str = "24B0AA32-F8D0-40BA-BB05-73A800324C09";

pub(super) struct Fx {
    _dir: tempfile::TempDir,
    pub(super) app: Router,
    pub(super) service: EscrowService,
    pub(super) clock: Arc<ManualClock>,
    pub(super) admin: String,
}

pub(super) async fn fx() -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("e.db").display());
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let service = EscrowService::open_with_clock(&url, Kek::generate(), clock.clone())
        .await
        .unwrap();
    let (_, admin) = service.bootstrap_admin("admin").await.unwrap();
    let registry = prometheus::Registry::new();
    let state = WebState {
        service: service.clone(),
        metrics: EscrowMetrics::register(&registry).unwrap(),
        limiter: Arc::new(RateLimiter::new(RateLimit::default())),
        sessions: SessionPolicy {
            idle: Duration::from_secs(600),
            absolute: Duration::from_secs(3600),
        },
        request_timeout: Duration::from_secs(10),
        stale_after: Duration::from_secs(30 * 86_400),
        unlock_window_days: Some(30),
        directory: None,
    };
    Fx {
        _dir: dir,
        app: router(state),
        service,
        clock,
        admin,
    }
}

pub(super) struct Resp {
    pub(super) status: StatusCode,
    pub(super) headers: axum::http::HeaderMap,
    pub(super) body: String,
}

impl Resp {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.strip_prefix(&format!("{name}=")))
            .map(|v| v.split(';').next().unwrap_or("").to_owned())
    }
}

pub(super) async fn send(app: &Router, mut req: Request<Body>) -> Resp {
    req.extensions_mut().insert(ConnInfo {
        peer: "127.0.0.1:50000".parse().unwrap(),
        client_cert_sha256: None,
    });
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

pub(super) fn get(uri: &str, cookie: Option<&str>) -> Request<Body> {
    let mut b = Request::builder().method("GET").uri(uri);
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::empty()).unwrap()
}

fn post(uri: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> Request<Body> {
    let mut b = Request::builder()
        .method("POST")
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::from(serde_urlencoded::to_string(form).unwrap()))
        .unwrap()
}

/// Signs in with `token`; returns the Cookie header value of the session.
pub(super) async fn sign_in(app: &Router, token: &str) -> String {
    let form = send(app, get("/sign-in", None)).await;
    assert_eq!(form.status, StatusCode::OK);
    let pre = form.set_cookie(PRE_COOKIE).unwrap();
    let r = send(
        app,
        post(
            "/sign-in",
            Some(&format!("{PRE_COOKIE}={pre}")),
            &[("csrf", &pre), ("token", token)],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let session = r.set_cookie(SESSION_COOKIE).unwrap();
    assert!(session.starts_with("nus_"));
    format!("{SESSION_COOKIE}={session}")
}

fn session_secret(cookie: &str) -> &str {
    cookie.split_once('=').unwrap().1
}

pub(super) async fn operator(f: &Fx, name: &str, role: Role) -> (i64, String) {
    let admin = Actor::local("test");
    let info = f.service.create_operator(&admin, name, role).await.unwrap();
    let (_, token) = f
        .service
        .create_api_token(&admin, info.id, None)
        .await
        .unwrap();
    (info.id, token)
}

async fn escrow_one(f: &Fx) {
    let rec = ImportRecord {
        computer_name: "SRV-DB01".into(),
        domain: Some("corp".into()),
        item: EscrowItem {
            volume_guid: uuid::Uuid::new_v4(),
            mount_point: Some("C:".into()),
            volume_type: VolumeType::OperatingSystem,
            protector_id: KEY_ID.parse::<ProtectorId>().unwrap(),
            recovery_password: parse_recovery_password(PASSWORD).unwrap(),
            key_package: Some(vec![1, 2, 3]),
        },
        escrowed_at: OffsetDateTime::now_utc(),
    };
    assert_eq!(
        f.service
            .bulk_import(&Actor::local("test"), &[rec])
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn sign_in_sets_a_strict_session_cookie_and_pages_carry_security_headers() {
    let f = fx().await;
    let r = send(&f.app, get("/recovery", None)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/sign-in");
    let form = send(&f.app, get("/sign-in", None)).await;
    let csp = form.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(form.headers[header::CACHE_CONTROL], "no-store");
    assert!(!form.body.contains("<script>"), "no inline script");
    let cookie = sign_in(&f.app, &f.admin).await;
    let page = send(&f.app, get("/recovery", Some(&cookie))).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Signed in as"));
    assert_eq!(page.headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(page.headers[header::X_FRAME_OPTIONS], "DENY");
}

#[tokio::test]
async fn wrong_token_and_missing_double_submit_are_refused() {
    let f = fx().await;
    let form = send(&f.app, get("/sign-in", None)).await;
    let pre = form.set_cookie(PRE_COOKIE).unwrap();
    let c = format!("{PRE_COOKIE}={pre}");
    let bad = send(
        &f.app,
        post(
            "/sign-in",
            Some(&c),
            &[("csrf", &pre), ("token", "nuo_nope")],
        ),
    )
    .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert!(bad.body.contains("not accepted"));
    assert!(bad.set_cookie(SESSION_COOKIE).is_none());
    // The right token without the sign-in form's double-submit value (login CSRF).
    let r = send(
        &f.app,
        post("/sign-in", None, &[("csrf", &pre), ("token", &f.admin)]),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.set_cookie(SESSION_COOKIE).is_none());
}

#[tokio::test]
async fn posts_without_the_session_csrf_token_change_nothing() {
    let f = fx().await;
    let cookie = sign_in(&f.app, &f.admin).await;
    for form in [
        vec![("name", "mallory"), ("role", "admin")],
        vec![("name", "mallory"), ("role", "admin"), ("csrf", "forged")],
    ] {
        let r = send(&f.app, post("/admin/operators", Some(&cookie), &form)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert!(r.body.contains("This form has expired"));
    }
    let ops = f.service.list_operators(&Actor::local("t")).await.unwrap();
    assert!(ops.iter().all(|o| o.name != "mallory"));
    let csrf = csrf::token_for(session_secret(&cookie));
    let ok = send(
        &f.app,
        post(
            "/admin/operators",
            Some(&cookie),
            &[("csrf", &csrf), ("name", "mallory"), ("role", "auditor")],
        ),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert!(ok.body.contains("Operator mallory created"));
}

#[tokio::test]
async fn roles_see_only_their_pages() {
    let f = fx().await;
    let (_, hd) = operator(&f, "helen", Role::Helpdesk).await;
    let (_, au) = operator(&f, "audrey", Role::Auditor).await;
    let hd = sign_in(&f.app, &hd).await;
    let au = sign_in(&f.app, &au).await;
    let admin = sign_in(&f.app, &f.admin).await;
    let cases: &[(&str, &str, StatusCode)] = &[
        (hd.as_str(), "/recovery", StatusCode::OK),
        (hd.as_str(), "/tpm", StatusCode::OK),
        (hd.as_str(), "/admin", StatusCode::FORBIDDEN),
        (hd.as_str(), "/reports/audit", StatusCode::FORBIDDEN),
        (hd.as_str(), "/devices", StatusCode::FORBIDDEN),
        (au.as_str(), "/recovery", StatusCode::FORBIDDEN),
        (au.as_str(), "/reports/audit", StatusCode::OK),
        (au.as_str(), "/reports/fleet", StatusCode::OK),
        (au.as_str(), "/devices", StatusCode::OK),
        (au.as_str(), "/admin", StatusCode::FORBIDDEN),
        (admin.as_str(), "/admin", StatusCode::OK),
        (admin.as_str(), "/reports/fleet", StatusCode::OK),
    ];
    for (cookie, path, want) in cases {
        let r = send(&f.app, get(path, Some(*cookie))).await;
        assert_eq!(r.status, *want, "{path}: {}", r.body);
        if *want == StatusCode::FORBIDDEN {
            assert!(r.body.contains("Your role"), "{}", r.body);
        }
    }
    let home = send(&f.app, get("/", Some(&au))).await;
    assert_eq!(home.location(), "/reports/audit");
}

#[tokio::test]
async fn sessions_end_when_idle_at_their_absolute_limit_on_sign_out_and_when_disabled() {
    let f = fx().await;
    let cookie = sign_in(&f.app, &f.admin).await;
    f.clock.advance(time::Duration::seconds(599));
    assert_eq!(
        send(&f.app, get("/admin", Some(&cookie))).await.status,
        StatusCode::OK
    );
    // Activity keeps it alive past the idle time...
    f.clock.advance(time::Duration::seconds(599));
    assert_eq!(
        send(&f.app, get("/admin", Some(&cookie))).await.status,
        StatusCode::OK
    );
    // ...but not past the idle time without activity.
    f.clock.advance(time::Duration::seconds(601));
    let r = send(&f.app, get("/admin", Some(&cookie))).await;
    assert_eq!(r.location(), "/sign-in?why=expired");
    assert!(
        send(&f.app, get(r.location(), None))
            .await
            .body
            .contains("idle too long")
    );

    // Absolute limit: active every 5 minutes, still out after an hour.
    let cookie = sign_in(&f.app, &f.admin).await;
    for _ in 0..11 {
        f.clock.advance(time::Duration::seconds(300));
        assert_eq!(
            send(&f.app, get("/admin", Some(&cookie))).await.status,
            StatusCode::OK
        );
    }
    f.clock.advance(time::Duration::seconds(301));
    assert_eq!(
        send(&f.app, get("/admin", Some(&cookie))).await.location(),
        "/sign-in?why=expired"
    );

    // Sign-out.
    let cookie = sign_in(&f.app, &f.admin).await;
    let csrf = csrf::token_for(session_secret(&cookie));
    let r = send(&f.app, post("/sign-out", Some(&cookie), &[("csrf", &csrf)])).await;
    assert_eq!(r.location(), "/sign-in?why=signed-out");
    assert_eq!(
        send(&f.app, get("/admin", Some(&cookie))).await.location(),
        "/sign-in?why=unknown"
    );

    // Disabling an operator ends their sessions at once.
    let (id, token) = operator(&f, "helen", Role::Helpdesk).await;
    let hd = sign_in(&f.app, &token).await;
    assert_eq!(
        send(&f.app, get("/recovery", Some(&hd))).await.status,
        StatusCode::OK
    );
    f.service
        .disable_operator(&Actor::local("t"), id)
        .await
        .unwrap();
    let r = send(&f.app, get("/recovery", Some(&hd))).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(
        r.location().starts_with("/sign-in?why="),
        "{}",
        r.location()
    );
}

#[tokio::test]
async fn recovery_finds_discloses_with_a_reason_and_the_audit_report_shows_it() {
    let f = fx().await;
    escrow_one(&f).await;
    let (_, hd) = operator(&f, "helen", Role::Helpdesk).await;
    let hd = sign_in(&f.app, &hd).await;
    // Helpdesk must give the device name.
    let r = send(&f.app, get("/recovery?key=24b0aa32", Some(&hd))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("Enter the device name"));
    let r = send(
        &f.app,
        get("/recovery?key=24b0aa32&device=srv-db01", Some(&hd)),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body.contains("SRV-DB01") && r.body.contains("Select"),
        "{}",
        r.body
    );
    assert!(!r.body.contains(PASSWORD));
    let r = send(
        &f.app,
        get(
            &format!("/recovery?key={KEY_ID}&device=SRV-DB01"),
            Some(&hd),
        ),
    )
    .await;
    assert!(r.body.contains("Reveal recovery password"), "{}", r.body);
    let csrf = csrf::token_for(session_secret(&hd));
    // "other" without text is refused with a message, and nothing is shown.
    let r = send(
        &f.app,
        post(
            "/recovery/disclose",
            Some(&hd),
            &[
                ("csrf", &csrf),
                ("protector_id", KEY_ID),
                ("device_name", "SRV-DB01"),
                ("reason", "other"),
            ],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("free-text"), "{}", r.body);
    let r = send(
        &f.app,
        post(
            "/recovery/disclose",
            Some(&hd),
            &[
                ("csrf", &csrf),
                ("protector_id", KEY_ID),
                ("device_name", "SRV-DB01"),
                ("reason", "lost_pin"),
            ],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    for g in PASSWORD.split('-') {
        assert!(r.body.contains(&format!("</span>{g}</span>")), "group {g}");
    }
    assert!(
        r.body.contains("will have the key rotated")
            || r.body.contains("asked the device to replace it")
    );
    assert!(
        r.body.contains("data:application/octet-stream;base64,AQID"),
        "key package download"
    );

    let admin = sign_in(&f.app, &f.admin).await;
    let rep = send(
        &f.app,
        get(
            "/reports/audit?action=disclose&outcome=success",
            Some(&admin),
        ),
    )
    .await;
    assert_eq!(rep.status, StatusCode::OK);
    assert!(
        rep.body.contains("helen") && rep.body.contains("lost pin"),
        "{}",
        rep.body
    );
    let csv = send(
        &f.app,
        get("/reports/audit.csv?action=disclose", Some(&admin)),
    )
    .await;
    assert_eq!(csv.headers[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    let lines: Vec<&str> = csv.body.lines().collect();
    assert_eq!(
        lines.len(),
        3,
        "header, the refused 'other' attempt, the disclosure: {}",
        csv.body
    );
    assert!(lines[2].contains("lost_pin") && lines[2].contains("success"));
    assert!(!csv.body.contains(PASSWORD));
    let fleet = send(&f.app, get("/reports/fleet", Some(&admin))).await;
    assert!(
        fleet.body.contains("<svg") && fleet.body.contains("Disclosed keys not yet rotated (1)"),
        "{}",
        fleet.body
    );
}

/// The audit report pages by cursor, newest first, 50 per page, without overlap; the CSV holds
/// the whole selection (streamed).
#[tokio::test]
async fn audit_report_pages_by_cursor_and_exports_everything() {
    let f = fx().await;
    let local = Actor::local("t");
    for i in 0..120 {
        f.service
            .create_operator(&local, &format!("op{i:03}"), Role::Auditor)
            .await
            .unwrap();
    }
    let admin = sign_in(&f.app, &f.admin).await;
    let seqs = |body: &str| -> Vec<i64> {
        body.split("<td class=\"num\">")
            .skip(1)
            .filter_map(|t| t.split('<').next()?.parse().ok())
            .collect()
    };
    let first = send(
        &f.app,
        get("/reports/audit?action=operator_create", Some(&admin)),
    )
    .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let a = seqs(&first.body);
    assert_eq!(a.len(), 50, "{}", first.body);
    assert!(a.windows(2).all(|w| w[0] > w[1]), "newest first: {a:?}");
    let next = first
        .body
        .split("href=\"")
        .find_map(|t| t.split('"').next().filter(|h| h.contains("cursor=")))
        .expect("an 'Older records' link with a cursor")
        .replace("&amp;", "&")
        .replace("&#38;", "&");
    assert!(next.contains("action=operator_create"), "{next}");
    let second = send(&f.app, get(&next, Some(&admin))).await;
    let b = seqs(&second.body);
    assert_eq!(b.len(), 50);
    assert!(b[0] < a[49], "continues below the first page: {a:?} {b:?}");
    assert!(second.body.contains("id=\"newest\""));
    let csv = send(
        &f.app,
        get("/reports/audit.csv?action=operator_create", Some(&admin)),
    )
    .await;
    assert_eq!(csv.status, StatusCode::OK);
    assert_eq!(csv.headers[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    assert_eq!(csv.body.lines().count(), 121, "header + every record");
    assert!(
        csv.headers.get(header::CONTENT_LENGTH).is_none(),
        "streamed, not built in memory"
    );
}
