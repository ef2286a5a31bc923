//! The fleet report: charts and the first rows of each list (stale devices, volumes without a key,
//! disclosed keys not rotated, mismatches, shared key IDs, and the Network Unlock side: enrolled
//! servers with no unlock in N days and adapters no enrolled device reports), from the snapshot
//! the server refreshes every 30 seconds.

use askama::Template;
use axum::extract::State;
use axum::response::Response;

use crate::model::{FleetSnapshot, Role};
use crate::web::WebState;
use crate::web::chart::{Bar, bars};
use crate::web::error::PageError;
use crate::web::render::{Nav, age, counted_title, html, when, when_opt};
use crate::web::session::Session;

pub struct Line {
    pub cells: Vec<String>,
    pub href: Option<String>,
}

/// Rows shown per fleet report table (the counts and the chart cover all of them).
pub const FLEET_ROWS: usize = 100;

pub struct Section {
    pub id: &'static str,
    pub title: String,
    /// What the list means and what to do about it.
    pub hint: &'static str,
    pub heads: &'static [&'static str],
    pub lines: Vec<Line>,
}

fn section<T>(
    (id, title, hint): (&'static str, &str, &'static str),
    heads: &'static [&'static str],
    (items, total): (&[T], i64),
    line: impl Fn(&T) -> Line,
) -> Section {
    let shown = items.len().min(FLEET_ROWS);
    Section {
        id,
        title: counted_title(title, shown, total),
        hint,
        heads,
        lines: items.iter().take(FLEET_ROWS).map(line).collect(),
    }
}

#[derive(Template)]
#[template(path = "console/fleet.html")]
struct FleetPage {
    nav: Nav,
    generated: String,
    stale_days: u64,
    unlock_days: u32,
    /// This appliance records no Network Unlock outcomes (the lists show what others recorded).
    unlock_records_off: bool,
    freshness_svg: String,
    problems_svg: String,
    sections: Vec<Section>,
}

fn device_link(id: i64) -> Option<String> {
    Some(format!("/devices/{id}"))
}

fn charts(snapshot: &FleetSnapshot) -> (String, String) {
    let g = &snapshot.gauges;
    let u = &snapshot.unlocks;
    let bar = |label: String, value: i64, problem: bool| Bar {
        label,
        value,
        problem,
    };
    let freshness = bars(
        "chart-checkins",
        "Active devices by time since last check-in",
        &[
            bar("under 1 day".into(), g.devices_fresh_1d, false),
            bar("1 to 7 days".into(), g.devices_1d_to_7d, false),
            bar("7 to 30 days".into(), g.devices_7d_to_30d, true),
            bar(
                "over 30 days or never".into(),
                g.devices_over_30d_or_never,
                true,
            ),
        ],
    );
    let problems = bars(
        "chart-problems",
        "Fleet problems",
        &[
            bar("stale devices".into(), snapshot.stale_devices, true),
            bar("volumes without a key".into(), g.volumes_without_key, true),
            bar(
                "disclosed, not rotated".into(),
                g.disclosed_not_rotated,
                true,
            ),
            bar("escrow mismatches".into(), g.mismatches, true),
            bar("shared key IDs".into(), g.protector_conflicts, true),
            bar(
                format!("no Network Unlock in {} d", u.window_days),
                u.devices_without_unlock_total,
                true,
            ),
            bar("unknown adapters".into(), u.unknown_adapters_total, true),
        ],
    );
    (freshness, problems)
}

fn escrow_sections(snapshot: &FleetSnapshot) -> Vec<Section> {
    let (r, g) = (&snapshot.report, &snapshot.gauges);
    vec![
        section(
            (
                "stale",
                "Stale devices",
                "Enrolled devices whose agent has not checked in within the staleness window.",
            ),
            &["Device", "Domain", "Last check-in"],
            (&r.stale_devices, snapshot.stale_devices),
            |d| Line {
                cells: vec![
                    d.computer_name.clone(),
                    d.domain.clone().unwrap_or_default(),
                    when_opt(&d.last_check_in),
                ],
                href: device_link(d.device_id),
            },
        ),
        section(
            (
                "unescrowed",
                "Volumes without an escrowed key",
                "Encrypted volumes the agent reported with no recovery password stored here.",
            ),
            &["Device", "Mount point", "Type", "Volume GUID"],
            (&r.volumes_without_key, g.volumes_without_key),
            |v| Line {
                cells: vec![
                    v.computer_name.clone(),
                    v.mount_point.clone().unwrap_or_default(),
                    v.volume_type.to_string(),
                    v.volume_guid.to_string(),
                ],
                href: device_link(v.device_id),
            },
        ),
        section(
            (
                "not-rotated",
                "Disclosed keys not yet rotated",
                "Recovery passwords read out to someone; the agent replaces them at its next check-in.",
            ),
            &["Device", "Key ID", "Disclosed", "Age", "Rotation"],
            (&r.disclosed_not_rotated, g.disclosed_not_rotated),
            |d| Line {
                cells: vec![
                    d.key.device_name.clone(),
                    d.key.protector_id.to_string(),
                    when_opt(&d.key.disclosed_at),
                    age(d.age_secs),
                    d.key.rotation.to_string(),
                ],
                href: device_link(d.key.device_id),
            },
        ),
        section(
            (
                "mismatches",
                "Escrow mismatches",
                "A device sent a different password for a key ID already stored; the stored one was kept.",
            ),
            &["Device", "Key ID", "Detected", "Audit record"],
            (&r.mismatches, g.mismatches),
            |m| Line {
                cells: vec![
                    m.computer_name.clone(),
                    m.protector_id.to_string(),
                    when(&m.detected_at),
                    format!("#{}", m.audit_seq),
                ],
                href: device_link(m.device_id),
            },
        ),
        section(
            (
                "shared",
                "Shared key IDs",
                "One key ID escrowed by two devices (a cloned disk image, or a renamed server).",
            ),
            &["Device", "Key ID", "Also held by", "Detected"],
            (&r.protector_conflicts, g.protector_conflicts),
            |c| Line {
                cells: vec![
                    c.computer_name.clone(),
                    c.protector_id.to_string(),
                    c.other_computer_name.clone(),
                    when(&c.detected_at),
                ],
                href: device_link(c.device_id),
            },
        ),
    ]
}

fn unlock_sections(snapshot: &FleetSnapshot) -> Vec<Section> {
    let u = &snapshot.unlocks;
    vec![
        section(
            (
                "no-unlock",
                &format!(
                    "Enrolled servers with no Network Unlock in {} days",
                    u.window_days
                ),
                "Their adapters sent no request that was answered: at their last boot someone typed \
                 the PIN or a recovery password, or they did not reboot.",
            ),
            &["Device", "Domain", "Last Network Unlock"],
            (&u.devices_without_unlock, u.devices_without_unlock_total),
            |d| Line {
                cells: vec![
                    d.computer_name.clone(),
                    d.domain.clone().unwrap_or_default(),
                    if d.last_unlock.is_some() {
                        when_opt(&d.last_unlock)
                    } else {
                        "never recorded".into()
                    },
                ],
                href: device_link(d.device_id),
            },
        ),
        section(
            (
                "unknown-adapters",
                "Requests from unknown adapters",
                "Adapters that asked for Network Unlock but that no enrolled device reports: a server \
                 whose agent has not checked in since it was installed, or a machine that is not enrolled.",
            ),
            &["Adapter (MAC)", "Requests", "Last seen", "Last outcome"],
            (&u.unknown_adapters, u.unknown_adapters_total),
            |a| Line {
                cells: vec![
                    a.mac.to_string(),
                    a.requests.to_string(),
                    when(&a.last_seen),
                    a.last_outcome.replace('_', " "),
                ],
                href: None,
            },
        ),
    ]
}

pub async fn fleet(State(state): State<WebState>, s: Session) -> Result<Response, PageError> {
    s.require(&[Role::Admin, Role::Auditor], "the fleet report")?;
    let snapshot = state
        .service
        .fleet_snapshot(&s.actor, state.stale_after, state.unlock_window())
        .await?;
    let (freshness_svg, problems_svg) = charts(&snapshot);
    let mut sections = escrow_sections(&snapshot);
    sections.extend(unlock_sections(&snapshot));
    html(&FleetPage {
        nav: Nav::new(&s, "fleet"),
        generated: when(&snapshot.report.generated_at),
        stale_days: snapshot.report.stale_after_secs / 86_400,
        unlock_days: snapshot.unlocks.window_days,
        unlock_records_off: state.unlock_window_days.is_none(),
        freshness_svg,
        problems_svg,
        sections,
    })
}
