//! The web console in a real browser: Debian's headless Chromium driven over WebDriver
//! (chromedriver + fantoccini) against the real daemon. Covers sign-in (keyboard only), find +
//! disclose with a reason + read the password, the disclosure in the audit report, CSV export with
//! the browser's session, a helpdesk operator refused on admin pages, a CSRF-less POST refused, and
//! session expiry. Each page must fit 1280×720 without horizontal scrolling.
//!
//! Screenshots: with `NETUNLOCKD_SCREENSHOTS=<dir>` each page is saved there as PNG (how
//! docs/console/*.png are made).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use escrow::model::Role;
use escrow::wire;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::escrow_support::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A chromedriver (in its own process group, so the Chromium it starts dies with it) and a
/// browser session on a fresh profile.
struct Browser {
    driver: Child,
    client: Option<Client>,
    _profile: tempfile::TempDir,
    shots: Option<PathBuf>,
}

impl Browser {
    async fn start_or_skip(test: &str) -> Option<Self> {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            if !Path::new(bin).exists() {
                println!(
                    "SKIP: {bin} is not installed ({test}); apt-get install chromium chromium-driver"
                );
                return None;
            }
        }
        let port = free_port();
        let driver = {
            use std::os::unix::process::CommandExt;
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap()
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        // The daemon's certificate is self-signed for the test.
        caps.insert("acceptInsecureCerts".into(), json!(true));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,720",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap();
        client.set_window_size(1280, 720).await.unwrap();
        Some(Self {
            driver,
            client: Some(client),
            _profile: profile,
            shots: std::env::var_os("NETUNLOCKD_SCREENSHOTS").map(PathBuf::from),
        })
    }

    fn c(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    async fn goto(&self, url: &str) {
        self.c().goto(url).await.unwrap();
    }

    async fn text(&self, css: &str) -> String {
        self.c()
            .find(Locator::Css(css))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn body(&self) -> String {
        self.text("body").await
    }

    async fn fill(&self, css: &str, value: &str) {
        let e = self.c().find(Locator::Css(css)).await.unwrap();
        e.clear().await.unwrap();
        e.send_keys(value).await.unwrap();
    }

    async fn click(&self, css: &str) {
        self.c()
            .find(Locator::Css(css))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    /// Clicks something that loads a new page (a link, a form's submit button) and waits until
    /// the new page has replaced the old one and finished loading: WebDriver's click may return
    /// before a form submission's response arrives, and reading the DOM then reads the old page.
    async fn click_nav(&self, css: &str) {
        let old = self.c().find(Locator::Css("html")).await.unwrap();
        self.click(css).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        // The old document's root goes stale once the browser has replaced the page.
        while old.tag_name().await.is_ok() {
            assert!(
                Instant::now() < deadline,
                "clicking {css} did not load a new page"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        loop {
            let state = self
                .c()
                .execute("return document.readyState;", vec![])
                .await
                .ok();
            if state == Some(json!("complete")) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the page after {css} did not finish loading"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn path(&self) -> String {
        let u = self.c().current_url().await.unwrap();
        match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_owned(),
        }
    }

    /// The page fits 1280 px (no horizontal scrolling), then a screenshot if asked for.
    async fn check_page(&self, name: &str) {
        let fits = self
            .c()
            .execute(
                "return document.documentElement.scrollWidth <= window.innerWidth;",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            fits,
            json!(true),
            "{name}: the page is wider than the 1280 px window"
        );
        if let Some(dir) = &self.shots {
            std::fs::create_dir_all(dir).unwrap();
            let png = self.c().screenshot().await.unwrap();
            std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
        }
    }

    async fn close(mut self) {
        if let Some(c) = self.client.take() {
            let _ = c.close().await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(i32::try_from(self.driver.id()).unwrap());
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.driver.wait();
    }
}

/// Signs in by keyboard alone: the token field has focus on load, Enter submits.
async fn sign_in(b: &Browser, base: &str, token: &str) {
    b.goto(&format!("{base}/sign-in")).await;
    let focused = b
        .c()
        .execute(
            "return document.activeElement && document.activeElement.id;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(focused, json!("token"), "the token field has the focus");
    b.c()
        .active_element()
        .await
        .unwrap()
        .send_keys(&format!("{token}\u{E007}"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.path().await.starts_with("/sign-in") {
        assert!(
            Instant::now() < deadline,
            "sign-in did not leave the form: {}",
            b.body().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_chromium() {
    let Some(b) = Browser::start_or_skip("console_in_chromium").await else {
        return;
    };
    let d = EscrowDaemon::start(&Backend::Sqlite).await;
    let base = d.base_url();
    let admin_token = d.bootstrap_admin();
    let admin = d.operator(&admin_token);
    let helen = admin
        .create_operator(&wire::CreateOperator {
            name: "helen".into(),
            role: Role::Helpdesk,
        })
        .await
        .unwrap();
    let helen_token = admin
        .create_api_token(&wire::CreateApiToken {
            operator_id: helen.id,
            ttl_seconds: None,
        })
        .await
        .unwrap()
        .token;
    let agent = d.agent("SRV-DB01");
    agent.enroll(&enrollment_token(&admin, 1).await).await;
    let (volume, key_id, password) = (guid(), guid(), recovery_password(7));
    let mut it = item(&volume, &key_id, &password);
    it.key_package = Some("S2V5UGFja2FnZQ==".into());
    agent
        .client
        .escrow(&wire::EscrowBody {
            items: vec![it],
            tpm_owner_auth: None,
        })
        .await
        .unwrap();

    // Sign-in page, then the helpdesk operator signs in with the keyboard.
    b.goto(&format!("{base}/sign-in")).await;
    b.check_page("sign-in").await;
    sign_in(&b, &base, &helen_token).await;
    assert_eq!(b.path().await, "/recovery");

    // Find by the 8-digit prefix + device name, pick the candidate, give a reason, read the password.
    b.fill("#key", &key_id[1..9]).await;
    b.fill("#device", "srv-db01").await;
    b.click_nav("#find").await;
    let candidates = b.text("#candidates").await;
    assert!(candidates.contains("SRV-DB01"), "{candidates}");
    assert!(
        candidates.contains("Last check-in"),
        "the candidates show the device's last check-in: {candidates}"
    );
    b.check_page("recovery-candidates").await;
    b.click_nav("#candidates a").await;
    b.click("#reason-lost_pin").await;
    b.check_page("recovery-reason").await;
    b.click_nav("#disclose").await;
    assert!(
        b.c().find(Locator::Css("#password")).await.is_ok(),
        "the password page: {}",
        b.body().await
    );
    let shown = b
        .c()
        .find(Locator::Css("#password"))
        .await
        .unwrap()
        .attr("data-value")
        .await
        .unwrap();
    assert_eq!(shown.as_deref(), Some(password.as_str()));
    let groups = b.text("#password").await;
    for g in password.split('-') {
        assert!(groups.contains(g), "group {g} shown: {groups}");
    }
    assert!(
        b.c().find(Locator::Css("#key-package")).await.is_ok(),
        "key package download offered"
    );
    assert!(
        !b.path().await.contains(&password),
        "the password is never in a URL"
    );
    b.check_page("recovery-password").await;

    // Helpdesk is refused on admin pages and reports.
    for page in ["/admin", "/reports/audit"] {
        b.goto(&format!("{base}{page}")).await;
        assert!(
            b.text("#error-message")
                .await
                .contains("Your role (helpdesk) cannot open"),
            "{page}"
        );
    }

    // A POST without the CSRF token changes nothing: strip it from the sign-out form and submit.
    b.goto(&format!("{base}/recovery")).await;
    let old = b.c().find(Locator::Css("html")).await.unwrap();
    b.c()
        .execute(
            "const f = document.querySelector('form[action=\"/sign-out\"]'); f.querySelector('input[name=csrf]').remove(); f.submit();",
            vec![],
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while old.tag_name().await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the forged sign-out loaded no page"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        b.body().await.contains("This form has expired"),
        "{}",
        b.body().await
    );
    b.goto(&format!("{base}/recovery")).await;
    assert_eq!(
        b.path().await,
        "/recovery",
        "still signed in: the forged sign-out did nothing"
    );

    // Sign out, then the admin sees the disclosure in the audit report.
    b.click_nav("#sign-out").await;
    assert!(b.text("#signin-notice").await.contains("signed out"));
    sign_in(&b, &base, &admin_token).await;
    b.goto(&format!("{base}/reports/audit?action=disclose"))
        .await;
    let table = b.text("#audit").await;
    assert!(
        table.contains("helen") && table.contains("lost pin") && table.contains("SRV-DB01"),
        "{table}"
    );
    b.check_page("audit-report").await;

    // CSV export of the selection, fetched with the browser's own session cookie.
    let href = b
        .c()
        .find(Locator::Css("#csv"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    let cookie = b
        .c()
        .get_named_cookie(escrow::web::SESSION_COOKIE)
        .await
        .unwrap();
    let csv = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap()
        .get(format!("{base}{href}"))
        .header("cookie", format!("{}={}", cookie.name(), cookie.value()))
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    let csv = csv.text().await.unwrap();
    assert!(csv.starts_with("seq,at,actor_kind"), "{csv}");
    assert!(
        csv.lines()
            .any(|l| l.contains("helen") && l.contains("lost_pin")),
        "{csv}"
    );
    assert!(!csv.contains(&password));

    // The other pages render for the admin and fit the window.
    for (page, name) in [
        ("/reports/fleet", "fleet-report"),
        ("/devices", "devices"),
        ("/tpm", "manage-tpm"),
        ("/admin", "administration"),
        ("/admin/tokens", "api-tokens"),
    ] {
        b.goto(&format!("{base}{page}")).await;
        assert!(b.text("#signed-in-as").await.contains("admin"), "{page}");
        b.check_page(name).await;
    }
    b.goto(&format!("{base}/devices")).await;
    b.click_nav("#devices a").await;
    assert!(b.text("h1").await.contains("SRV-DB01"));
    b.check_page("device").await;

    // API tokens: listed without secrets; revoking helen's needs a confirmation step.
    b.goto(&format!("{base}/admin/tokens")).await;
    let list = b.text("#api-token-list").await;
    assert!(list.contains("helen") && list.contains("active"), "{list}");
    assert!(
        !b.body().await.contains(&helen_token),
        "no secret on the page"
    );
    let helen_row = b
        .c()
        .find(Locator::XPath(
            "//table[@id='api-token-list']//tr[td[2][normalize-space()='helen']]//a",
        ))
        .await
        .unwrap();
    let old = b.c().find(Locator::Css("html")).await.unwrap();
    helen_row.click().await.unwrap();
    while old.tag_name().await.is_ok() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(b.text("#confirm-revoke").await.contains("helen"));
    b.check_page("api-token-revoke").await;
    b.click("#confirm").await;
    b.click_nav("#do-revoke").await;
    assert!(
        b.text("#tokens-notice").await.contains("revoked"),
        "{}",
        b.body().await
    );
    assert!(b.text("#api-token-list").await.contains("revoked"));
    assert!(
        d.operator(&helen_token).me().await.is_err(),
        "the revoked token no longer works"
    );
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_session_expires_when_idle() {
    let Some(b) = Browser::start_or_skip("console_session_expires_when_idle").await else {
        return;
    };
    let d = EscrowDaemon::start_with(
        &Backend::Sqlite,
        "info",
        "[console]\nidle_timeout_secs = 2\nabsolute_timeout_secs = 60",
    )
    .await;
    let base = d.base_url();
    let token = d.bootstrap_admin();
    sign_in(&b, &base, &token).await;
    b.goto(&format!("{base}/admin")).await;
    assert_eq!(b.path().await, "/admin");
    tokio::time::sleep(Duration::from_secs(3)).await;
    b.goto(&format!("{base}/admin")).await;
    assert_eq!(b.path().await, "/sign-in?why=expired");
    assert!(b.text("#signin-notice").await.contains("idle too long"));
    b.close().await;
}

/// Directory sign-in through the form against a real slapd: a helpdesk-group person reaches
/// /recovery; a wrong password gets a message a person understands and no session; both audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_directory_sign_in() {
    let slapd = match testkit::Slapd::start() {
        Ok(s) => s,
        Err(e) => {
            println!("SKIP: {e}");
            return;
        }
    };
    let Some(b) = Browser::start_or_skip("console_directory_sign_in").await else {
        return;
    };
    let files = tempfile::tempdir().unwrap();
    let ca = files.path().join("ldap-ca.pem");
    std::fs::write(&ca, &slapd.ca_pem).unwrap();
    let pw = files.path().join("bind-password");
    std::fs::write(&pw, format!("{}\n", testkit::SERVICE_PASSWORD)).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let directory = format!(
        r#"
[directory]
url = "{url}"
ca_file = "{ca}"
bind_dn = "{svc}"
bind_password_file = "{pw}"
user_base = "{people}"
user_filter = "(&(objectClass=inetOrgPerson)(uid={{user}}))"
group_lookup = "search"
group_base = "{groups}"
admin_groups = ["{admins}"]
helpdesk_groups = ["{helpdesk}"]
auditor_groups = ["{auditors}"]
"#,
        url = slapd.ldaps_url(),
        ca = ca.display(),
        svc = testkit::SERVICE_DN,
        pw = pw.display(),
        people = testkit::PEOPLE_BASE,
        groups = testkit::GROUPS_BASE,
        admins = testkit::ADMINS_GROUP,
        helpdesk = testkit::HELPDESK_GROUP,
        auditors = testkit::AUDITORS_GROUP,
    );
    let d = EscrowDaemon::start_with(&Backend::Sqlite, "info", &directory).await;
    let base = d.base_url();
    let admin = d.operator(&d.bootstrap_admin());
    let user = testkit::HELPDESK_USER;

    // A wrong password: the form again, with a message that says what to check; no session.
    b.goto(&format!("{base}/sign-in")).await;
    let focused = b
        .c()
        .execute(
            "return document.activeElement && document.activeElement.id;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        focused,
        json!("username"),
        "the user name field has the focus"
    );
    b.fill("#username", user).await;
    b.fill("#password", "not-the-password").await;
    b.click_nav("#sign-in-directory").await;
    let error = b.text("#signin-error").await;
    assert!(
        error.contains("user name or password is not correct"),
        "{error}"
    );
    assert!(b.path().await.starts_with("/sign-in"));
    assert_eq!(
        b.c()
            .find(Locator::Css("#username"))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some(user),
        "the user name is kept, the password is not"
    );
    b.check_page("sign-in-directory-refused").await;
    b.goto(&format!("{base}/recovery")).await;
    assert!(
        b.path().await.starts_with("/sign-in"),
        "no session after a refusal"
    );

    // The right password, by keyboard: Tab from the user name, Enter submits.
    b.fill("#username", user).await;
    b.c()
        .find(Locator::Css("#password"))
        .await
        .unwrap()
        .send_keys(&format!("{}\u{E007}", testkit::password_of(user)))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while b.path().await.starts_with("/sign-in") {
        assert!(
            Instant::now() < deadline,
            "directory sign-in did not leave the form: {}",
            b.body().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(b.path().await, "/recovery");
    assert!(b.text("#signed-in-as").await.contains(user));

    // Both outcomes are in the audit log, with the directory as the method.
    let audit = admin
        .audit_report(&wire::AuditQuery {
            kind: Some("sign_in".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let of_user: Vec<_> = audit
        .records
        .iter()
        .filter(|r| r.actor_name == user && r.detail.contains("\"directory\""))
        .collect();
    assert!(
        of_user.iter().any(|r| r.outcome.as_str() == "success"),
        "{:?}",
        audit.records
    );
    assert!(
        of_user
            .iter()
            .any(|r| r.outcome.as_str() != "success" && r.detail.contains("wrong_password")),
        "{:?}",
        audit.records
    );
    b.close().await;
}

/// Forwards 127.0.0.1:<returned port> in this namespace to `target` inside `ns` (each connection
/// on its own threads, one of which entered the namespace), so the browser reaches a daemon that
/// runs in a test network namespace.
fn forward_into(ns: &crate::harness::Netns, target: std::net::SocketAddr) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let path = format!("/run/netns/{}", ns.name);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(outside) = conn else { return };
            let path = path.clone();
            std::thread::spawn(move || {
                let Ok(file) = std::fs::File::open(&path) else {
                    return;
                };
                if nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).is_err() {
                    return;
                }
                let Ok(inside) = std::net::TcpStream::connect(target) else {
                    return;
                };
                let (mut a, mut b) = (outside.try_clone().unwrap(), inside.try_clone().unwrap());
                let up = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut a, &mut b);
                    let _ = b.shutdown(std::net::Shutdown::Write);
                });
                let (mut a, mut b) = (inside, outside);
                let _ = std::io::copy(&mut a, &mut b);
                let _ = b.shutdown(std::net::Shutdown::Write);
                let _ = up.join();
            });
        }
    });
    port
}

/// The device page, the dashboard and the fleet report after real NKPU requests (`netunlockd
/// probe` in a network namespace): the last Network Unlock names the adapter, the refusal is
/// listed, the chart shows both outcomes; the fleet report lists the enrolled server that never
/// unlocked and the adapter no device reports.
#[test]
fn console_device_page_shows_a_recorded_unlock() {
    use crate::harness::{
        CLIENT_IF, CertEntry, Daemon, Topology, UnlockCert, config_toml, output_text, probe,
        skip_reason,
    };
    use escrow::{EscrowService, Kek, MacAddress};

    if let Some(reason) = skip_reason() {
        println!("SKIP: {reason}");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let Some(b) = rt.block_on(Browser::start_or_skip(
        "console_device_page_shows_a_recorded_unlock",
    )) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let topo = Topology::new();
    let cert = UnlockCert::generate(dir.path(), "a");
    let not_loaded = UnlockCert::generate(dir.path(), "b");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let url = format!("sqlite://{}?mode=rwc", state.join("escrow.db").display());
    let kek_path = state.join("kek.bin");
    let client_mac = MacAddress(Topology::mac(&topo.client, CLIENT_IF));

    // WEB1 is enrolled and reported the client's adapter; an admin token for the browser.
    let (device_id, token) = rt.block_on(async {
        let svc = EscrowService::open(&url, Kek::load_or_create(&kek_path).unwrap())
            .await
            .unwrap();
        let dev = enroll_with_adapters(&svc, "WEB1", &"ab".repeat(32), &[client_mac]).await;
        // DB1 reports an adapter that never asks: it needed its PIN at every boot.
        let never_asks = "02:00:00:00:0d:b1".parse().unwrap();
        enroll_with_adapters(&svc, "DB1", &"cd".repeat(32), &[never_asks]).await;
        let (_, token) = svc.bootstrap_admin("admin").await.unwrap();
        svc.close().await;
        (dev.id, token)
    });
    let config = config_toml(&state, &[CertEntry::new(&cert)]).replace(
        "[escrow]\nenabled = false\n",
        &format!("[escrow]\nlisten = \"127.0.0.1:8443\"\ndatabase_url = {url:?}\n\n[unlock_records]\ngauge_refresh_secs = 1\n"),
    );
    let daemon = Daemon::start(&topo.server, dir.path(), &config);
    let ok = probe(&topo.client, "v4", &cert, &["--timeout-ms", "5000"]);
    assert!(
        ok.status.success(),
        "{}\n{}",
        output_text(&ok),
        daemon.log_text()
    );
    let refused = probe(&topo.client, "v4", &not_loaded, &["--timeout-ms", "1000"]);
    assert!(!refused.status.success(), "{}", output_text(&refused));
    // The same client with another adapter address, which no enrolled device reports (the
    // answer may not reach it under its new address; the request is recorded either way).
    let stranger = "02:00:00:00:0a:0a";
    for args in [
        vec!["ip", "link", "set", "dev", CLIENT_IF, "down"],
        vec!["ip", "link", "set", "dev", CLIENT_IF, "address", stranger],
        vec!["ip", "link", "set", "dev", CLIENT_IF, "up"],
    ] {
        let o = topo.client.exec(&args);
        assert!(o.status.success(), "{args:?}: {}", output_text(&o));
    }
    probe(&topo.client, "v4", &cert, &["--timeout-ms", "1000"]);

    let port = forward_into(&topo.server, "127.0.0.1:8443".parse().unwrap());
    let base = format!("https://127.0.0.1:{port}");
    rt.block_on(async {
        sign_in(&b, &base, &token).await;
        // The records are written in the background: reload until both are there.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            b.goto(&format!("{base}/devices/{device_id}")).await;
            let body = b.body().await;
            if body.contains("unknown certificate") && !body.contains("none recorded") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no unlock on the device page: {body}\n{}",
                daemon.log_text()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let mac = client_mac.to_string();
        let last = b.text("#last-unlock").await;
        assert!(last.contains(&mac) && last.contains("UTC"), "{last}");
        assert!(b.text("#adapters").await.contains(&mac));
        let refusals = b.text("#refusals").await;
        assert!(
            refusals.contains("unknown certificate") && refusals.contains(&mac),
            "{refusals}"
        );
        b.check_page("device-unlock").await;

        b.goto(&format!("{base}/dashboard")).await;
        assert!(
            b.c().find(Locator::Css("#unlocks-chart")).await.is_ok(),
            "the chart is drawn"
        );
        let totals = b.text("#unlock-totals").await;
        assert!(
            totals.contains("answered") && totals.contains("unknown_certificate"),
            "{totals}"
        );
        b.check_page("dashboard").await;

        // The fleet report reads a snapshot the server recomputes every 30 seconds.
        let deadline = Instant::now() + Duration::from_secs(45);
        loop {
            b.goto(&format!("{base}/reports/fleet")).await;
            if b.body().await.contains(stranger) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no unknown adapter on the fleet report: {}\n{}",
                b.body().await,
                daemon.log_text()
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let no_unlock = b.text("#no-unlock").await;
        assert!(
            no_unlock.contains("DB1") && !no_unlock.contains("WEB1"),
            "{no_unlock}"
        );
        let unknown = b.text("#unknown-adapters").await;
        assert!(
            unknown.contains(stranger) && !unknown.contains(&client_mac.to_string()),
            "{unknown}"
        );
        // The screenshot shows the Network Unlock lists, below the charts.
        b.c()
            .execute(
                "document.getElementById('no-unlock-title').scrollIntoView();",
                vec![],
            )
            .await
            .unwrap();
        b.check_page("fleet-report-unlocks").await;
        b.close().await;
    });
    drop(daemon);
}
