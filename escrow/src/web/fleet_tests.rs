//! The fleet report page: counts past the rows it shows, the snapshot refresh, and the Network
//! Unlock lists (enrolled servers with no unlock in N days, requests from unknown adapters).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use time::OffsetDateTime;

use super::tests::{Fx, PASSWORD, fx, get, send, sign_in};
use crate::model::{
    Actor, DeviceFilter, EscrowItem, ImportRecord, MacAddress, ProtectorId, UnlockEvent,
    VolumeType, parse_recovery_password,
};

/// Imports `n` devices SRV000… with one key each (never checked in: all stale).
async fn import_devices(f: &Fx, n: u128) -> Vec<ImportRecord> {
    let records: Vec<ImportRecord> = (0..n)
        .map(|i| ImportRecord {
            computer_name: format!("SRV{i:03}"),
            domain: None,
            item: EscrowItem {
                volume_guid: uuid::Uuid::from_u128(0x1000 + i),
                mount_point: Some("C:".into()),
                volume_type: VolumeType::OperatingSystem,
                protector_id: uuid::Uuid::from_u128(0x2000 + i)
                    .to_string()
                    .parse::<ProtectorId>()
                    .unwrap(),
                recovery_password: parse_recovery_password(PASSWORD).unwrap(),
                key_package: None,
            },
            escrowed_at: OffsetDateTime::now_utc(),
        })
        .collect();
    f.service
        .bulk_import(&Actor::local("test"), &records)
        .await
        .unwrap();
    records
}

fn mac(hi: u8, lo: u8) -> MacAddress {
    MacAddress([0x52, 0x54, 0x00, hi, 0x00, lo])
}

fn event(ago: Duration, mac: MacAddress, outcome: &str) -> UnlockEvent {
    UnlockEvent {
        at: OffsetDateTime::now_utc() - ago,
        family: "v4".into(),
        client: mac.to_string(),
        mac: Some(mac),
        address: "192.0.2.50".into(),
        interface: "eth0".into(),
        relay: None,
        thumbprint: "ab".repeat(20),
        outcome: outcome.into(),
    }
}

/// What the server does every 30 s (with the settings of the fixture's console: 30 days for both).
async fn refresh(f: &Fx) {
    f.service
        .refresh_fleet_snapshot(Duration::from_secs(30 * 86_400), 30)
        .await
        .unwrap();
}

/// The part of the page from the table with this id to the next heading.
fn table<'a>(body: &'a str, id: &str) -> &'a str {
    let start = body
        .find(&format!("<table id=\"{id}\""))
        .unwrap_or_else(|| panic!("no table {id}: {body}"));
    let rest = &body[start..];
    &rest[..rest.find("<h2").unwrap_or(rest.len())]
}

/// The fleet page shows the first rows of a long list with the full count, from a snapshot that
/// the server refreshes with the gauges (a view costs no query over the whole store).
#[tokio::test]
async fn fleet_page_counts_past_the_rows_it_shows_from_the_refreshed_snapshot() {
    let f = fx().await;
    let local = Actor::local("test");
    let records = import_devices(&f, 105).await;
    let admin = sign_in(&f.app, &f.admin).await;
    let page = send(&f.app, get("/reports/fleet", Some(&admin))).await;
    assert!(
        page.body
            .contains("Stale devices (105; the first 100 shown)"),
        "{}",
        page.body
    );
    assert!(page.body.contains("SRV099") && !page.body.contains("SRV100"));

    // A device added later shows once the snapshot is refreshed (the server does it every 30 s).
    f.service
        .bulk_import(
            &local,
            &records[..1]
                .iter()
                .map(|r| ImportRecord {
                    computer_name: "SRV999".into(),
                    item: EscrowItem {
                        volume_guid: uuid::Uuid::from_u128(0x9999),
                        protector_id: uuid::Uuid::from_u128(0x8888).to_string().parse().unwrap(),
                        ..r.item.clone()
                    },
                    ..r.clone()
                })
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    let cached = send(&f.app, get("/reports/fleet", Some(&admin))).await;
    assert!(
        cached.body.contains("Stale devices (105;"),
        "{}",
        cached.body
    );
    refresh(&f).await;
    let fresh = send(&f.app, get("/reports/fleet", Some(&admin))).await;
    assert!(fresh.body.contains("Stale devices (106;"), "{}", fresh.body);
}

/// Issue 10: the fleet report lists enrolled servers whose adapters got no answered Network Unlock
/// request in the window (they needed a PIN or a recovery password) and the adapters that asked
/// but that no enrolled device reports, with full counts past the rows shown, in the chart too.
#[tokio::test]
async fn fleet_page_lists_servers_without_network_unlock_and_unknown_adapters() {
    let f = fx().await;
    import_devices(&f, 103).await;
    let local = Actor::local("test");
    let devices = f
        .service
        .list_devices(&local, DeviceFilter::default())
        .await
        .unwrap();
    assert_eq!(devices.len(), 103);
    for (i, d) in devices.iter().enumerate() {
        let n = u8::try_from(i).unwrap();
        f.service.report_adapters(d, &[mac(1, n)]).await.unwrap();
    }
    let by_name = |name: &str| {
        devices
            .iter()
            .position(|d| d.computer_name == name)
            .unwrap()
    };
    let hour = Duration::from_secs(3600);
    let (srv000, srv001) = (by_name("SRV000"), by_name("SRV001"));
    f.service
        .record_unlock_events(&[
            // SRV000 unlocked an hour ago: not listed.
            event(hour, mac(1, u8::try_from(srv000).unwrap()), "answered"),
            // SRV001 last unlocked 40 days ago and was refused since: listed, with that date.
            event(
                40 * 24 * hour,
                mac(1, u8::try_from(srv001).unwrap()),
                "answered",
            ),
            event(
                2 * hour,
                mac(1, u8::try_from(srv001).unwrap()),
                "subnet_refused",
            ),
            // Three adapters nobody reports; the newest was refused.
            event(5 * hour, mac(0xaa, 1), "answered"),
            event(4 * hour, mac(0xaa, 2), "answered"),
            event(3 * hour, mac(0xaa, 3), "answered"),
            event(hour, mac(0xaa, 3), "unknown_certificate"),
        ])
        .await
        .unwrap();
    refresh(&f).await;

    let admin = sign_in(&f.app, &f.admin).await;
    let page = send(&f.app, get("/reports/fleet", Some(&admin))).await;
    let body = &page.body;
    assert!(
        body.contains(
            "Enrolled servers with no Network Unlock in 30 days (102; the first 100 shown)"
        ),
        "{body}"
    );
    let no_unlock = table(body, "no-unlock");
    assert!(!no_unlock.contains(">SRV000<"), "{no_unlock}");
    assert!(no_unlock.contains(">SRV001<") && no_unlock.contains("never recorded"));
    assert_eq!(
        no_unlock.matches("<tr>").count(),
        101,
        "a header and 100 rows"
    );

    assert!(
        body.contains("Requests from unknown adapters (3)"),
        "{body}"
    );
    let unknown = table(body, "unknown-adapters");
    let order: Vec<usize> = [
        "52:54:00:aa:00:03",
        "52:54:00:aa:00:02",
        "52:54:00:aa:00:01",
    ]
    .iter()
    .map(|m| unknown.find(m).unwrap_or_else(|| panic!("{m}: {unknown}")))
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "most recent first");
    assert!(unknown.contains("unknown certificate"), "{unknown}");
    assert!(
        !unknown.contains("52:54:00:01:00"),
        "reported adapters are known"
    );

    assert!(body.contains("no Network Unlock in 30 d"), "chart bar");
    assert!(!body.contains("id=\"unlock-records-off\""));

    // Once the unknown adapters are reported by a device, they leave the list.
    f.service
        .report_adapters(
            &devices[srv000],
            &[
                mac(1, u8::try_from(srv000).unwrap()),
                mac(0xaa, 1),
                mac(0xaa, 2),
                mac(0xaa, 3),
            ],
        )
        .await
        .unwrap();
    refresh(&f).await;
    let after = send(&f.app, get("/reports/fleet", Some(&admin))).await;
    assert!(
        after.body.contains("Requests from unknown adapters (0)"),
        "{}",
        after.body
    );
}

/// The dashboard's chart has one border: the figure around the SVG draws none of its own.
#[tokio::test]
async fn dashboard_chart_is_framed_once() {
    let f = fx().await;
    f.service
        .record_unlock_events(&[event(Duration::from_secs(60), mac(0xaa, 1), "answered")])
        .await
        .unwrap();
    let admin = sign_in(&f.app, &f.admin).await;
    let page = send(&f.app, get("/dashboard", Some(&admin))).await;
    assert!(page.body.contains("class=\"chart\""), "{}", page.body);
    assert_eq!(
        page.body.matches("class=\"chart\"").count(),
        1,
        "{}",
        page.body
    );
}
