//! Unlock ↔ escrow at the service level, on SQLite and PostgreSQL: adapters reported by agents,
//! Network Unlock outcomes recorded by the daemon, and what the console and gauges show from them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod store_common;

use std::sync::Arc;
use std::time::Duration;

use escrow::{DisclosureReason, Kek, MacAddress, ManualClock, Role, UnlockEvent};
use store_common::*;
use time::OffsetDateTime;

fn mac(n: u8) -> MacAddress {
    MacAddress([0x52, 0x54, 0x00, 0, 0, n])
}

fn event(at: OffsetDateTime, client_mac: Option<MacAddress>, outcome: &str) -> UnlockEvent {
    UnlockEvent {
        at,
        family: "v4".into(),
        client: client_mac.map_or_else(|| "-".into(), |m| m.to_string()),
        mac: client_mac,
        address: "192.0.2.50".into(),
        interface: "eth0".into(),
        relay: None,
        thumbprint: "ab".repeat(20),
        outcome: outcome.into(),
    }
}

async fn joins_outcomes_to_devices_by_adapter(db: TestDb) {
    let clock = Arc::new(ManualClock::new(t0()));
    let svc = db.open_with_clock(Kek::generate(), clock.clone()).await;
    let web1 = enroll(&svc, "WEB1", 1).await;
    let db1 = enroll(&svc, "DB1", 2).await;
    let quiet = enroll(&svc, "QUIET", 3).await;
    let _no_adapters = enroll(&svc, "OLDAGENT", 4).await;
    svc.report_adapters(&web1, &[mac(1), mac(2), mac(1)])
        .await
        .unwrap();
    svc.report_adapters(&db1, &[mac(3)]).await.unwrap();
    svc.report_adapters(&quiet, &[mac(4)]).await.unwrap();

    let day = Duration::from_secs(86_400);
    let t = |ago: Duration| t0() - ago;
    svc.record_unlock_events(&[
        // WEB1: answered 2 days ago on its second adapter, refused twice since.
        event(t(2 * day), Some(mac(2)), "answered"),
        event(t(day), Some(mac(1)), "subnet_refused"),
        event(
            t(Duration::from_secs(3600)),
            Some(mac(1)),
            "unknown_certificate",
        ),
        // DB1: answered 40 days ago only.
        event(t(40 * day), Some(mac(3)), "answered"),
        // An adapter nobody reports, and a request without a MAC.
        event(t(Duration::from_secs(7200)), Some(mac(9)), "answered"),
        event(t(Duration::from_secs(7000)), Some(mac(9)), "rate_limited"),
        event(t(Duration::from_secs(60)), None, "answered"),
    ])
    .await
    .unwrap();

    let helpdesk = operator(&svc, "hd", Role::Helpdesk).await;
    let w = svc.device_unlocks(&helpdesk, web1.id, 10).await.unwrap();
    assert_eq!(w.adapters, vec![mac(1), mac(2)]);
    let last = w.last_unlock.unwrap();
    assert_eq!(last.mac, Some(mac(2)));
    assert_eq!(last.at, t(2 * day));
    let refusals: Vec<&str> = w
        .recent_refusals
        .iter()
        .map(|e| e.outcome.as_str())
        .collect();
    assert_eq!(refusals, ["unknown_certificate", "subnet_refused"]);
    let q = svc.device_unlocks(&helpdesk, quiet.id, 10).await.unwrap();
    assert!(q.last_unlock.is_none() && q.recent_refusals.is_empty());
    assert!(svc.device_unlocks(&helpdesk, 999, 10).await.is_err());

    // Fleet report: QUIET never unlocked, DB1 not within 30 days; WEB1 did; OLDAGENT reports no
    // adapters and is left out. mac(9) is unknown.
    let auditor = operator(&svc, "au", Role::Auditor).await;
    let report = svc.unlock_fleet_report(&auditor, 30).await.unwrap();
    let names: Vec<&str> = report
        .devices_without_unlock
        .iter()
        .map(|d| d.computer_name.as_str())
        .collect();
    assert_eq!(names, ["DB1", "QUIET"]);
    assert_eq!(
        (
            report.window_days,
            report.devices_without_unlock_total,
            report.unknown_adapters_total
        ),
        (30, 2, 1)
    );
    // A wider window takes in DB1's answer from 40 days ago.
    let wide = svc.unlock_fleet_report(&auditor, 60).await.unwrap();
    assert_eq!(wide.devices_without_unlock_total, 1);
    assert_eq!(wide.devices_without_unlock[0].computer_name, "QUIET");
    assert_eq!(
        report.devices_without_unlock[0].last_unlock,
        Some(t(40 * day))
    );
    assert_eq!(report.unknown_adapters.len(), 1);
    let unknown = &report.unknown_adapters[0];
    assert_eq!((unknown.mac, unknown.requests), (mac(9), 2));
    assert_eq!(unknown.last_outcome, "rate_limited");
    assert!(svc.unlock_fleet_report(&helpdesk, 30).await.is_err());

    let g = svc.unlock_gauges(30).await.unwrap();
    assert_eq!(
        (
            g.devices_without_unlock,
            g.unknown_adapters,
            g.events_stored
        ),
        (2, 1, 7)
    );

    // Once mac(9) is reported by a device it is no longer unknown.
    svc.report_adapters(&quiet, &[mac(4), mac(9)])
        .await
        .unwrap();
    let g = svc.unlock_gauges(30).await.unwrap();
    assert_eq!((g.devices_without_unlock, g.unknown_adapters), (1, 0));

    // Hourly counts over the last 3 hours: the two mac(9) requests fall in one hour, the rest apart.
    let hourly = svc.unlocks_per_hour(&helpdesk, 3).await.unwrap();
    let total: i64 = hourly.iter().map(|h| h.count).sum();
    assert_eq!(total, 4, "{hourly:?}");
    assert!(hourly.windows(2).all(|w| w[0].hour <= w[1].hour));
    assert!(hourly.iter().all(|h| h.hour.unix_timestamp() % 3600 == 0));

    // Retention: 30 days keeps all but DB1's old answer.
    assert_eq!(svc.prune_unlock_events(30 * day).await.unwrap(), 1);
    assert_eq!(svc.unlock_gauges(30).await.unwrap().events_stored, 6);

    // Devices that most recently needed a recovery password.
    svc.escrow(&web1, req(vec![item(1, 1, &password(1))]))
        .await
        .unwrap();
    svc.escrow(&db1, req(vec![item(2, 2, &password(2))]))
        .await
        .unwrap();
    svc.disclose(
        &admin(),
        &pid(2),
        None,
        DisclosureReason::LostPin,
        None,
        None,
    )
    .await
    .unwrap();
    clock.advance(time::Duration::seconds(60));
    svc.disclose(
        &admin(),
        &pid(1),
        None,
        DisclosureReason::TpmReset,
        None,
        None,
    )
    .await
    .unwrap();
    let needed = svc.recovery_needed(&helpdesk, 10).await.unwrap();
    let names: Vec<&str> = needed.iter().map(|n| n.computer_name.as_str()).collect();
    assert_eq!(names, ["WEB1", "DB1"]);
}
both_backends!(joins, joins_outcomes_to_devices_by_adapter);

async fn adapters_are_bounded_and_replaced(db: TestDb) {
    let svc = db.open(Kek::generate()).await.unwrap();
    let dev = enroll(&svc, "WEB1", 1).await;
    let too_many: Vec<MacAddress> = (0..=64u8).map(mac).collect();
    assert!(svc.report_adapters(&dev, &too_many).await.is_err());
    svc.report_adapters(&dev, &[mac(1)]).await.unwrap();
    svc.report_adapters(&dev, &[mac(2)]).await.unwrap();
    let hd = operator(&svc, "hd", Role::Helpdesk).await;
    assert_eq!(
        svc.device_unlocks(&hd, dev.id, 1).await.unwrap().adapters,
        vec![mac(2)]
    );
    svc.report_adapters(&dev, &[]).await.unwrap();
    assert!(
        svc.device_unlocks(&hd, dev.id, 1)
            .await
            .unwrap()
            .adapters
            .is_empty()
    );
}
both_backends!(bounded, adapters_are_bounded_and_replaced);
