//! Manage TPM: the TPM owner authorisation a device escrowed, for MBAM's reasons (audited).

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;

use crate::model::{Role, TpmReason};
use crate::web::WebState;
use crate::web::error::PageError;
use crate::web::render::{Nav, html, when};
use crate::web::session::{Posted, Session};

pub fn reason_label(r: TpmReason) -> &'static str {
    match r {
        TpmReason::ResetPinLockout => "Reset PIN lockout",
        TpmReason::TurnOnTpm => "Turn on TPM",
        TpmReason::TurnOffTpm => "Turn off TPM",
        TpmReason::ChangeTpmPassword => "Change TPM password",
        TpmReason::ClearTpm => "Clear TPM",
        TpmReason::Other => "Other (explain below)",
    }
}

pub struct Reason {
    pub value: &'static str,
    pub label: &'static str,
}

#[derive(Template)]
#[template(path = "console/tpm.html")]
struct TpmPage {
    nav: Nav,
    reasons: Vec<Reason>,
    result: Option<TpmResult>,
}

pub struct TpmResult {
    pub device: String,
    pub escrowed: String,
    pub value: String,
    pub reason: &'static str,
    pub audit_seq: i64,
}

fn reasons() -> Vec<Reason> {
    TpmReason::ALL
        .iter()
        .map(|r| Reason {
            value: r.as_str(),
            label: reason_label(*r),
        })
        .collect()
}

pub async fn page(s: Session) -> Result<Response, PageError> {
    s.require(&[Role::Admin, Role::Helpdesk], "Manage TPM")?;
    html(&TpmPage {
        nav: Nav::new(&s, "tpm"),
        reasons: reasons(),
        result: None,
    })
}

#[derive(Debug, Deserialize)]
pub struct TpmForm {
    device_name: String,
    reason: Option<String>,
    reason_text: Option<String>,
}

pub async fn disclose(
    State(state): State<WebState>,
    Posted(s, f): Posted<TpmForm>,
) -> Result<Response, PageError> {
    s.require(&[Role::Admin, Role::Helpdesk], "Manage TPM")?;
    let Some(reason) = f
        .reason
        .as_deref()
        .and_then(|r| r.parse::<TpmReason>().ok())
    else {
        return Err(PageError::BadInput(
            "Choose the reason from the list.".into(),
        ));
    };
    let r = state
        .service
        .disclose_tpm_owner_auth(
            &s.actor,
            &f.device_name,
            reason,
            f.reason_text.as_deref(),
            s.peer,
        )
        .await?;
    tracing::info!(device = %r.device_name, audit_seq = r.audit_seq, "TPM owner authorisation disclosed (console)");
    html(&TpmPage {
        nav: Nav::new(&s, "tpm"),
        reasons: reasons(),
        result: Some(TpmResult {
            device: match &r.domain {
                Some(d) => format!("{} ({d})", r.device_name),
                None => r.device_name.clone(),
            },
            escrowed: when(&r.escrowed_at),
            value: r.owner_auth.to_string(),
            reason: reason_label(reason),
            audit_seq: r.audit_seq,
        }),
    })
}
