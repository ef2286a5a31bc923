//! Devices: a searchable list, and one device's page (volumes, protectors, escrow times, rotation
//! state, last check-in) with the admin actions revoke and allow re-enrolment behind a
//! confirmation step.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::model::{DeviceFilter, DeviceInfo, Role, UnlockEvent};
use crate::web::WebState;
use crate::web::error::PageError;
use crate::web::pages::recovery::{Row, rows_for};
use crate::web::render::{Nav, html, when, when_opt};
use crate::web::session::{Posted, Session};

/// Most devices listed on one page (narrow the search for more).
pub const LIST_LIMIT: usize = 200;
/// Refused Network Unlock requests shown on a device page.
pub const REFUSALS_SHOWN: u32 = 10;

/// One Network Unlock request, as the device page lists it.
pub struct UnlockRow {
    pub at: String,
    pub outcome: String,
    pub adapter: String,
    pub address: String,
    pub via: String,
}

fn unlock_row(e: &UnlockEvent) -> UnlockRow {
    UnlockRow {
        at: when(&e.at),
        outcome: e.outcome.replace('_', " "),
        adapter: e.mac.map_or_else(|| e.client.clone(), |m| m.to_string()),
        address: format!("{} ({}, {})", e.address, e.family, e.interface),
        via: e
            .relay
            .clone()
            .map_or_else(|| "direct".to_owned(), |r| format!("relay {r}")),
    }
}

pub struct DeviceRow {
    pub id: i64,
    pub name: String,
    pub domain: String,
    pub last_check_in: String,
    pub status: &'static str,
}

fn status(d: &DeviceInfo) -> &'static str {
    match (d.revoked, d.reenroll_allowed) {
        (true, _) => "revoked",
        (false, true) => "re-enrolment allowed",
        (false, false) => "active",
    }
}

#[derive(Template)]
#[template(path = "console/devices.html")]
struct DevicesPage {
    nav: Nav,
    name: String,
    include_revoked: bool,
    rows: Vec<DeviceRow>,
    more: bool,
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    name: Option<String>,
    revoked: Option<String>,
}

pub async fn list(
    State(state): State<WebState>,
    s: Session,
    Query(q): Query<ListQuery>,
) -> Result<Response, PageError> {
    s.require(&[Role::Admin, Role::Auditor], "Devices")?;
    let name = q.name.unwrap_or_default().trim().to_owned();
    let include_revoked = q.revoked.is_some();
    let devices = state
        .service
        .list_devices(
            &s.actor,
            DeviceFilter {
                name_contains: Some(name.clone()).filter(|n| !n.is_empty()),
                include_revoked,
                stale_for_secs: None,
            },
        )
        .await?;
    let more = devices.len() > LIST_LIMIT;
    let rows = devices
        .iter()
        .take(LIST_LIMIT)
        .map(|d| DeviceRow {
            id: d.id,
            name: d.computer_name.clone(),
            domain: d.domain.clone().unwrap_or_default(),
            last_check_in: when_opt(&d.last_check_in),
            status: status(d),
        })
        .collect();
    html(&DevicesPage {
        nav: Nav::new(&s, "devices"),
        name,
        include_revoked,
        rows,
        more,
    })
}

#[derive(Template)]
#[template(path = "console/device.html")]
struct DevicePage {
    nav: Nav,
    id: i64,
    name: String,
    domain: String,
    serial: String,
    first_seen: String,
    last_check_in: String,
    status: &'static str,
    cert: String,
    keys_visible: bool,
    keys: Vec<Row>,
    adapters: Vec<String>,
    last_unlock: Option<UnlockRow>,
    refusals: Vec<UnlockRow>,
    is_admin: bool,
    revoked: bool,
    confirm: Option<&'static str>,
    done: Option<&'static str>,
}

#[derive(Debug, Deserialize)]
pub struct ShowQuery {
    confirm: Option<String>,
    done: Option<String>,
}

pub async fn show(
    State(state): State<WebState>,
    s: Session,
    Path(id): Path<i64>,
    Query(q): Query<ShowQuery>,
) -> Result<Response, PageError> {
    let role = s.require(&[Role::Admin, Role::Auditor], "Devices")?;
    let d = state.service.device_by_id(&s.actor, id).await?;
    let keys_visible = role == Role::Admin;
    let keys = if keys_visible {
        rows_for(
            &state
                .service
                .find_by_device(&s.actor, &d.computer_name)
                .await?,
            Some(d.id),
        )
    } else {
        Vec::new()
    };
    let unlocks = state
        .service
        .device_unlocks(&s.actor, d.id, REFUSALS_SHOWN)
        .await?;
    let is_admin = role == Role::Admin;
    let confirm = match q.confirm.as_deref() {
        Some("revoke") if is_admin => Some("revoke"),
        Some("allow-reenroll") if is_admin => Some("allow-reenroll"),
        _ => None,
    };
    let done = match q.done.as_deref() {
        Some("revoke") => {
            Some("The device was revoked: its certificate no longer works. Its keys are kept.")
        }
        Some("allow-reenroll") => Some(
            "Re-enrolment allowed: the next enrolment with a valid token binds a new certificate to this device.",
        ),
        _ => None,
    };
    html(&DevicePage {
        nav: Nav::new(&s, "devices"),
        id: d.id,
        name: d.computer_name.clone(),
        domain: d.domain.clone().unwrap_or_default(),
        serial: d.serial.clone().unwrap_or_default(),
        first_seen: when(&d.first_seen),
        last_check_in: when_opt(&d.last_check_in),
        status: status(&d),
        cert: d.client_cert_sha256.clone(),
        keys_visible,
        keys,
        adapters: unlocks.adapters.iter().map(ToString::to_string).collect(),
        last_unlock: unlocks.last_unlock.as_ref().map(unlock_row),
        refusals: unlocks.recent_refusals.iter().map(unlock_row).collect(),
        is_admin,
        revoked: d.revoked,
        confirm,
        done,
    })
}

#[derive(Debug, Deserialize)]
pub struct Confirmed {
    confirm: Option<String>,
}

fn confirmed(f: &Confirmed) -> Result<(), PageError> {
    match f.confirm.as_deref() {
        Some("yes") => Ok(()),
        _ => Err(PageError::BadInput(
            "Tick the confirmation box to go ahead.".into(),
        )),
    }
}

pub async fn revoke(
    State(state): State<WebState>,
    Path(id): Path<i64>,
    Posted(s, f): Posted<Confirmed>,
) -> Result<Response, PageError> {
    confirmed(&f)?;
    state.service.revoke_device(&s.actor, id).await?;
    Ok(Redirect::to(&format!("/devices/{id}?done=revoke")).into_response())
}

pub async fn allow_reenroll(
    State(state): State<WebState>,
    Path(id): Path<i64>,
    Posted(s, f): Posted<Confirmed>,
) -> Result<Response, PageError> {
    confirmed(&f)?;
    state.service.allow_reenroll(&s.actor, id).await?;
    Ok(Redirect::to(&format!("/devices/{id}?done=allow-reenroll")).into_response())
}
