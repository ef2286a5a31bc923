//! Drive recovery, as on the MBAM help-desk site: key-ID prefix (8 hex digits) or full key ID, plus
//! the device name for the helpdesk role → candidates → pick one → reason → the password, shown
//! once in 8 groups of 6 digits (POST response, `no-store`; never in a URL).

use std::time::Instant;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;

use crate::guid::{parse_guid, parse_prefix8};
use crate::model::{DisclosureReason, KeyCandidate, ProtectorId, Role};
use crate::web::WebState;
use crate::web::error::PageError;
use crate::web::render::{Nav, html, html_status, when, when_opt};
use crate::web::session::{Posted, Session};

/// What the help desk typed in the key ID field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyQuery {
    /// The first 8 hex digits, upper case.
    Prefix(String),
    /// The whole recovery key ID.
    Full(ProtectorId),
}

impl KeyQuery {
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.trim_matches(['{', '}']).len() > 8 {
            return parse_guid(t).map(|u| Self::Full(ProtectorId::new(u))).map_err(|_| {
                format!("{t:?} is not a recovery key ID: enter its first 8 characters (as on the recovery screen) or all 32 hex digits")
            });
        }
        parse_prefix8(t).map(Self::Prefix).map_err(|_| {
            format!("{t:?} is not the start of a recovery key ID: enter the first 8 characters (0-9, A-F) shown on the recovery screen")
        })
    }
    pub fn prefix8(&self) -> String {
        match self {
            Self::Prefix(p) => p.clone(),
            Self::Full(id) => id.prefix8(),
        }
    }
}

/// The reasons offered, in MBAM's order, with the words the help desk knows.
pub fn reason_label(r: DisclosureReason) -> &'static str {
    use DisclosureReason::*;
    match r {
        BootOrderChanged => "Operating system boot order changed",
        BiosChanged => "BIOS changed",
        OsFilesModified => "Operating system files modified",
        LostStartupKey => "Lost startup key",
        LostPin => "Lost PIN",
        TpmReset => "TPM reset",
        LostPassphrase => "Lost passphrase",
        LostSmartcard => "Lost smartcard",
        Other => "Other (explain below)",
    }
}

/// The 8 groups of a normalised recovery password.
pub fn groups(password: &str) -> Vec<String> {
    password
        .split(['-', ' '])
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A percent-encoded `data:` URL, for the save-to-file link (no script needed).
pub fn data_url_text(text: &str) -> String {
    let mut out = String::from("data:text/plain;charset=utf-8,");
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub struct Row {
    pub key_id: String,
    pub device: String,
    pub domain: String,
    pub volume: String,
    pub escrowed: String,
    pub state: String,
    pub pick_href: String,
    /// When the device last checked in: a key on a server that stopped checking in long ago may
    /// belong to a reinstalled or cloned machine.
    pub last_check_in: String,
}

fn volume_label(c: &KeyCandidate) -> String {
    let kind = match c.volume_type {
        crate::model::VolumeType::OperatingSystem => "operating system",
        crate::model::VolumeType::FixedData => "fixed data",
        crate::model::VolumeType::Removable => "removable",
    };
    match &c.mount_point {
        Some(m) => format!("{m} ({kind})"),
        None => kind.to_owned(),
    }
}

fn key_state(c: &KeyCandidate) -> String {
    if c.superseded_at.is_some() {
        format!("replaced {} (history)", when_opt(&c.superseded_at))
    } else if c.disclosed_at.is_some() {
        format!(
            "revealed {}; rotation {}",
            when_opt(&c.disclosed_at),
            c.rotation
        )
    } else {
        "current".into()
    }
}

fn row(c: &KeyCandidate) -> Row {
    let key_id = c.protector_id.to_string();
    Row {
        pick_href: format!(
            "/recovery?key={}&device={}",
            c.protector_id.db_string(),
            urlencode(&c.device_name)
        ),
        key_id,
        device: c.device_name.clone(),
        domain: c.domain.clone().unwrap_or_default(),
        volume: volume_label(c),
        escrowed: when(&c.escrowed_at),
        state: key_state(c),
        last_check_in: when_opt(&c.device_last_check_in),
    }
}

/// Table rows for keys (of one device when `device_id` is given).
pub fn rows_for(keys: &[KeyCandidate], device_id: Option<i64>) -> Vec<Row> {
    keys.iter()
        .filter(|k| device_id.is_none_or(|id| k.device_id == id))
        .map(row)
        .collect()
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub struct ReasonOption {
    pub value: &'static str,
    pub label: &'static str,
    pub checked: bool,
}

fn reasons(selected: Option<&str>) -> Vec<ReasonOption> {
    DisclosureReason::ALL
        .iter()
        .map(|r| ReasonOption {
            value: r.as_str(),
            label: reason_label(*r),
            checked: selected == Some(r.as_str()),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "console/recovery.html")]
struct RecoveryPage {
    nav: Nav,
    key: String,
    device: String,
    device_required: bool,
    error: Option<String>,
    searched: bool,
    rows: Vec<Row>,
    chosen: Option<Row>,
    chosen_id: String,
    chosen_device: String,
    reasons: Vec<ReasonOption>,
    reason_text: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct Find {
    key: Option<String>,
    device: Option<String>,
}

fn rate_limit(state: &WebState, s: &Session) -> Result<(), PageError> {
    let key = crate::api::auth::Operator(s.actor.clone()).key();
    state
        .limiter
        .check(&key, Instant::now())
        .map_err(|wait| PageError::RateLimited(wait.as_secs().max(1)))
}

pub async fn page(
    State(state): State<WebState>,
    s: Session,
    Query(q): Query<Find>,
) -> Result<Response, PageError> {
    let role = s.require(&[Role::Admin, Role::Helpdesk], "Drive recovery")?;
    let key = q.key.unwrap_or_default().trim().to_owned();
    let device = q.device.unwrap_or_default().trim().to_owned();
    let mut page = RecoveryPage {
        nav: Nav::new(&s, "recovery"),
        key: key.clone(),
        device: device.clone(),
        device_required: role == Role::Helpdesk,
        error: None,
        searched: false,
        rows: Vec::new(),
        chosen: None,
        chosen_id: String::new(),
        chosen_device: String::new(),
        reasons: reasons(None),
        reason_text: String::new(),
    };
    if key.is_empty() {
        return html(&page);
    }
    let query = match KeyQuery::parse(&key) {
        Ok(q) => q,
        Err(e) => {
            page.error = Some(e);
            return html_status(StatusCode::BAD_REQUEST, &page);
        }
    };
    if role == Role::Helpdesk && device.is_empty() {
        page.error = Some(
            "Enter the device name as well: the helpdesk role needs both the key ID and the name of the computer.".into(),
        );
        return html_status(StatusCode::BAD_REQUEST, &page);
    }
    rate_limit(&state, &s)?;
    let found = state
        .service
        .find_by_prefix(&s.actor, &query.prefix8())
        .await?;
    let matching: Vec<&KeyCandidate> = found
        .iter()
        .filter(|c| match &query {
            KeyQuery::Full(id) => c.protector_id == *id,
            KeyQuery::Prefix(_) => true,
        })
        .filter(|c| device.is_empty() || c.device_name.eq_ignore_ascii_case(&device))
        .collect();
    page.searched = true;
    page.rows = matching.iter().map(|c| row(c)).collect();
    if let (KeyQuery::Full(_), [only]) = (&query, matching.as_slice()) {
        page.chosen_id = only.protector_id.db_string();
        page.chosen_device = only.device_name.clone();
        page.chosen = Some(row(only));
    }
    html(&page)
}

#[derive(Debug, Deserialize)]
pub struct DiscloseForm {
    protector_id: String,
    device_name: Option<String>,
    reason: Option<String>,
    reason_text: Option<String>,
}

#[derive(Template)]
#[template(path = "console/disclosed.html")]
struct Disclosed {
    nav: Nav,
    row: Row,
    groups: Vec<(usize, String)>,
    password: String,
    save_href: String,
    save_name: String,
    key_package_href: Option<String>,
    key_package_name: String,
    reason: &'static str,
    audit_seq: i64,
    rotates: bool,
}

pub async fn disclose(
    State(state): State<WebState>,
    Posted(s, f): Posted<DiscloseForm>,
) -> Result<Response, PageError> {
    s.require(&[Role::Admin, Role::Helpdesk], "Drive recovery")?;
    let pid: ProtectorId = f
        .protector_id
        .parse()
        .map_err(|e: String| PageError::BadInput(e))?;
    let device = f.device_name.unwrap_or_default();
    let Some(reason) = f
        .reason
        .as_deref()
        .and_then(|r| r.parse::<DisclosureReason>().ok())
    else {
        return Err(PageError::BadInput(
            "Choose the reason for this recovery from the list.".into(),
        ));
    };
    rate_limit(&state, &s)?;
    let d = state
        .service
        .disclose(
            &s.actor,
            &pid,
            Some(device.as_str()).filter(|d| !d.trim().is_empty()),
            reason,
            f.reason_text.as_deref(),
            s.peer,
        )
        .await?;
    state
        .metrics
        .disclosures
        .with_label_values(&[reason.as_str()])
        .inc();
    tracing::info!(
        device = %d.candidate.device_name,
        protector = %pid,
        reason = reason.as_str(),
        audit_seq = d.audit_seq,
        "recovery password disclosed (console)"
    );
    let password = d.recovery_password.expose().to_owned();
    let prefix = pid.prefix8();
    let page = Disclosed {
        nav: Nav::new(&s, "recovery"),
        row: row(&d.candidate),
        groups: groups(&password)
            .into_iter()
            .enumerate()
            .map(|(i, g)| (i + 1, g))
            .collect(),
        save_href: data_url_text(&format!(
            "BitLocker recovery\r\nDevice: {}\r\nRecovery key ID: {}\r\nRecovery password: {}\r\n",
            d.candidate.device_name, pid, password
        )),
        save_name: format!("{}-{prefix}-recovery-password.txt", d.candidate.device_name),
        key_package_href: d
            .key_package
            .as_ref()
            .map(|k| format!("data:application/octet-stream;base64,{}", B64.encode(k))),
        key_package_name: format!("{}-{prefix}.kpg", d.candidate.device_name),
        password,
        reason: reason_label(reason),
        audit_seq: d.audit_seq,
        rotates: d.candidate.superseded_at.is_none(),
    };
    html(&page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_queries() {
        let full = "24B0AA32-F8D0-40BA-BB05-73A800324C09";
        let cases: &[(&str, Option<&str>)] = &[
            ("24b0aa32", Some("P:24B0AA32")),
            (" {24B0AA32 ", Some("P:24B0AA32")),
            (full, Some("F:24B0AA32")),
            ("{24B0AA32-F8D0-40BA-BB05-73A800324C09}", Some("F:24B0AA32")),
            ("24B0AA32F8D040BABB0573A800324C09", Some("F:24B0AA32")),
            ("24B0AA3", None),
            ("24B0AA3G", None),
            ("24B0AA32-F8D0", None),
            ("", None),
        ];
        for (input, want) in cases {
            let got = KeyQuery::parse(input).ok().map(|q| match q {
                KeyQuery::Prefix(p) => format!("P:{p}"),
                KeyQuery::Full(id) => format!("F:{}", id.prefix8()),
            });
            assert_eq!(got.as_deref(), *want, "{input:?}");
        }
    }

    #[test]
    fn password_groups_and_save_link() {
        let pw = "111111-222222-333333-444444-555555-666666-777777-888888";
        let g = groups(pw);
        assert_eq!(g.len(), 8);
        assert_eq!(g[7], "888888");
        assert_eq!(
            data_url_text("a b\r\n"),
            "data:text/plain;charset=utf-8,a%20b%0D%0A"
        );
    }

    #[test]
    fn every_reason_has_a_label() {
        for r in DisclosureReason::ALL {
            assert!(!reason_label(*r).is_empty());
        }
    }
}
