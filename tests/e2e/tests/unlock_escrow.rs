//! Unlock ↔ escrow end to end: real NKPU requests (`netunlockd probe`, v4 and v6) to the real daemon
//! with escrow enabled; the outcomes land in the escrow database, join the enrolled device by its
//! adapter's MAC, and move the unlock gauges; `netunlockd escrow report unlocks` lists the enrolled
//! server that never asked.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use escrow::{Actor, EscrowService, Kek, MacAddress, Role};

use crate::escrow_support::enroll_with_adapters;
use crate::harness::{
    CLIENT_IF, CertEntry, Daemon, METRICS, Topology, UnlockCert, config_toml, metric,
    netunlockd_bin, output_text, probe, scrape, skip_reason,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn unlock_outcomes_are_recorded_and_joined_to_the_device() {
    if let Some(reason) = skip_reason() {
        println!("SKIP: {reason}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let topo = Topology::new();
    let cert = UnlockCert::generate(dir.path(), "a");
    let not_loaded = UnlockCert::generate(dir.path(), "b");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let url = format!("sqlite://{}?mode=rwc", state.join("escrow.db").display());
    let kek_path = state.join("kek.bin");
    let client_mac = MacAddress(Topology::mac(&topo.client, CLIENT_IF));

    // The device WEB1 is enrolled and reported the client's adapter (as its agent would at check-in).
    let rt = runtime();
    let device_id = rt.block_on(async {
        let svc = EscrowService::open(&url, Kek::load_or_create(&kek_path).unwrap())
            .await
            .unwrap();
        let dev = enroll_with_adapters(&svc, "WEB1", &"ab".repeat(32), &[client_mac]).await;
        // DB2 reports an adapter that never asks (it needed its PIN).
        let never_asks = "02:00:00:00:0d:b2".parse().unwrap();
        enroll_with_adapters(&svc, "DB2", &"cd".repeat(32), &[never_asks]).await;
        svc.close().await;
        dev.id
    });

    let config = config_toml(&state, &[CertEntry::new(&cert)]).replace(
        "[escrow]\nenabled = false\n",
        &format!(
            "[escrow]\nlisten = \"127.0.0.1:8443\"\ndatabase_url = {url:?}\n\n[unlock_records]\ngauge_refresh_secs = 1\n"
        ),
    );
    let daemon = Daemon::start(&topo.server, dir.path(), &config);
    for family in ["v4", "v6"] {
        let ok = probe(&topo.client, family, &cert, &["--timeout-ms", "5000"]);
        assert!(
            ok.status.success(),
            "{}\n{}",
            output_text(&ok),
            daemon.log_text()
        );
    }
    let refused = probe(&topo.client, "v4", &not_loaded, &["--timeout-ms", "1000"]);
    assert!(!refused.status.success(), "{}", output_text(&refused));

    // Three records written, and the gauges say WEB1 unlocked, DB2 did not, and no unknown adapter
    // asked.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = scrape(&topo.server, METRICS);
        if metric(&text, "netunlockd_unlock_records_stored") >= 3.0 || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        metric(&text, "netunlockd_unlock_records_written_total"),
        3.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "netunlockd_unlock_records_stored"),
        3.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "netunlockd_unlock_records_dropped_total"),
        0.0
    );
    assert_eq!(
        metric(&text, "netunlockd_devices_without_unlock"),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "netunlockd_unlock_unknown_adapters"),
        0.0,
        "{text}"
    );

    // What the console's device page shows, read through the service (the daemon keeps running).
    rt.block_on(async {
        let svc = EscrowService::open(&url, Kek::load(&kek_path).unwrap())
            .await
            .unwrap();
        let admin = Actor::local("t");
        let hd = svc
            .create_operator(&admin, "hd", Role::Helpdesk)
            .await
            .unwrap();
        let hd = Actor::operator(hd.id, hd.name, Role::Helpdesk);
        let unlocks = svc.device_unlocks(&hd, device_id, 10).await.unwrap();
        let last = unlocks
            .last_unlock
            .expect("an answered request joined to WEB1");
        assert_eq!(last.mac, Some(client_mac));
        assert_eq!(last.thumbprint, cert.thumbprint_hex());
        assert_eq!(last.interface, "veth-s");
        let refusals: Vec<_> = unlocks
            .recent_refusals
            .iter()
            .map(|e| (e.outcome.as_str(), e.thumbprint.clone()))
            .collect();
        assert_eq!(
            refusals,
            [("unknown_certificate", not_loaded.thumbprint_hex())]
        );
        // Summed per outcome: the requests may straddle an hour boundary.
        let mut per_outcome = std::collections::BTreeMap::new();
        for h in svc.unlocks_per_hour(&hd, 2).await.unwrap() {
            *per_outcome.entry(h.outcome).or_insert(0) += h.count;
        }
        assert_eq!(
            per_outcome.into_iter().collect::<Vec<_>>(),
            [
                ("answered".to_owned(), 2),
                ("unknown_certificate".to_owned(), 1)
            ]
        );
        let au = svc
            .create_operator(&admin, "au", Role::Auditor)
            .await
            .unwrap();
        let (_, token) = svc.create_api_token(&admin, au.id, None).await.unwrap();
        svc.close().await;

        // The same lists through the CLI (the appliance's own URL and certificate from --config).
        let report = |extra: &[&str]| {
            let out = topo
                .server
                .command(&netunlockd_bin())
                .args(["escrow", "report", "unlocks", "--config"])
                .arg(&daemon.config_path)
                .args(["--token", &token])
                .args(extra)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", output_text(&out));
            String::from_utf8(out.stdout).unwrap()
        };
        let json: serde_json::Value = serde_json::from_str(&report(&["--output", "json"])).unwrap();
        assert_eq!(json["window_days"], 30, "{json}");
        assert_eq!(json["devices_without_unlock_total"], 1, "{json}");
        assert_eq!(json["devices_without_unlock"][0]["computer_name"], "DB2");
        assert_eq!(json["unknown_adapters_total"], 0, "{json}");
        let table = report(&["--days", "7"]);
        assert!(
            table.contains("window 7 day(s)")
                && table.contains("Enrolled devices with no Network Unlock in the window (1)")
                && table.contains("DB2")
                && !table.contains("WEB1"),
            "{table}"
        );
    });
    drop(daemon);
}
