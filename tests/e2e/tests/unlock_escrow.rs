//! Unlock ↔ escrow end to end: real NKPU requests (`netunlockd probe`, v4 and v6) to the real daemon
//! with escrow enabled; the outcomes land in the escrow database, join the enrolled device by its
//! adapter's MAC, and move the unlock gauges.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use escrow::{Actor, EscrowService, Kek, MacAddress, Role};

use crate::harness::{
    CLIENT_IF, CertEntry, Daemon, METRICS, Topology, UnlockCert, config_toml, metric, output_text,
    probe, scrape, skip_reason,
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
        let (_, secret) = svc
            .create_enrollment_token(&Actor::local("t"), 1, Duration::from_secs(3600), None)
            .await
            .unwrap();
        let dev = svc
            .enroll_device(
                &secret,
                "WEB1",
                Some("corp.example"),
                None,
                &"ab".repeat(32),
            )
            .await
            .unwrap();
        svc.report_adapters(&dev, &[client_mac]).await.unwrap();
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

    // Three records written, and the gauges say WEB1 unlocked and no unknown adapter asked.
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
        0.0,
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
        svc.close().await;
    });
    drop(daemon);
}
