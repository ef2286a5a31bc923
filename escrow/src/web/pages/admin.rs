//! Administration (admin role only): operators and roles, API tokens, enrolment tokens. A new
//! token's secret is shown once, in the POST response (never in a URL, never stored).

use std::time::Duration;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::model::Role;
use crate::web::WebState;
use crate::web::error::PageError;
use crate::web::render::{Nav, html, when};
use crate::web::session::{Posted, Session};

pub struct OperatorRow {
    pub id: i64,
    pub name: String,
    pub role: &'static str,
    pub disabled: bool,
    pub created: String,
}

pub struct EnrollRow {
    pub id: i64,
    pub note: String,
    pub uses: String,
    pub expires: String,
    pub status: &'static str,
    pub active: bool,
}

#[derive(Template)]
#[template(path = "console/admin.html")]
struct AdminPage {
    nav: Nav,
    operators: Vec<OperatorRow>,
    enrollment: Vec<EnrollRow>,
    roles: Vec<&'static str>,
    notice: Option<String>,
    secret_label: String,
    secret: Option<String>,
}

async fn render(
    state: &WebState,
    s: &Session,
    notice: Option<String>,
    secret: Option<(String, String)>,
) -> Result<Response, PageError> {
    s.require(&[Role::Admin], "Administration")?;
    let operators = state.service.list_operators(&s.actor).await?;
    let tokens = state.service.list_enrollment_tokens(&s.actor).await?;
    let now = state_now();
    let (secret_label, secret) = match secret {
        Some((l, v)) => (l, Some(v)),
        None => (String::new(), None),
    };
    html(&AdminPage {
        nav: Nav::new(s, "admin"),
        operators: operators
            .iter()
            .map(|o| OperatorRow {
                id: o.id,
                name: o.name.clone(),
                role: o.role.as_str(),
                disabled: o.disabled,
                created: when(&o.created_at),
            })
            .collect(),
        enrollment: tokens
            .iter()
            .rev()
            .map(|t| {
                let (status, active) = if t.revoked {
                    ("revoked", false)
                } else if t.expires_at <= now {
                    ("expired", false)
                } else if t.uses >= t.max_uses {
                    ("used up", false)
                } else {
                    ("active", true)
                };
                EnrollRow {
                    id: t.id,
                    note: t.note.clone().unwrap_or_default(),
                    uses: format!("{} of {}", t.uses, t.max_uses),
                    expires: when(&t.expires_at),
                    status,
                    active,
                }
            })
            .collect(),
        roles: Role::ALL.iter().map(Role::as_str).collect(),
        notice,
        secret_label,
        secret,
    })
}

fn state_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

pub async fn page(State(state): State<WebState>, s: Session) -> Result<Response, PageError> {
    render(&state, &s, None, None).await
}

fn role(v: &str) -> Result<Role, PageError> {
    v.parse::<Role>().map_err(|_| {
        PageError::BadInput(format!(
            "{v:?} is not a role; choose admin, helpdesk or auditor."
        ))
    })
}

#[derive(Debug, Deserialize)]
pub struct NewOperator {
    name: String,
    role: String,
}

pub async fn create_operator(
    State(state): State<WebState>,
    Posted(s, f): Posted<NewOperator>,
) -> Result<Response, PageError> {
    let info = state
        .service
        .create_operator(&s.actor, &f.name, role(&f.role)?)
        .await?;
    render(
        &state,
        &s,
        Some(format!(
            "Operator {} created with the {} role. Create an API token for them below.",
            info.name, info.role
        )),
        None,
    )
    .await
}

#[derive(Debug, Deserialize)]
pub struct SetRole {
    role: String,
}

pub async fn set_role(
    State(state): State<WebState>,
    Path(id): Path<i64>,
    Posted(s, f): Posted<SetRole>,
) -> Result<Response, PageError> {
    state
        .service
        .set_operator_role(&s.actor, id, role(&f.role)?)
        .await?;
    Ok(Redirect::to("/admin").into_response())
}

#[derive(Debug, Deserialize)]
pub struct Confirm {
    confirm: Option<String>,
}

pub async fn disable_operator(
    State(state): State<WebState>,
    Path(id): Path<i64>,
    Posted(s, f): Posted<Confirm>,
) -> Result<Response, PageError> {
    if f.confirm.as_deref() != Some("yes") {
        return Err(PageError::BadInput(
            "Tick the confirmation box to disable the operator.".into(),
        ));
    }
    state.service.disable_operator(&s.actor, id).await?;
    render(
        &state,
        &s,
        Some(format!(
            "Operator {id} disabled: their API tokens are revoked and their console sessions ended."
        )),
        None,
    )
    .await
}

#[derive(Debug, Deserialize)]
pub struct NewToken {
    operator_id: i64,
    days: Option<String>,
}

fn days(v: Option<&str>, max: u64) -> Result<Option<Duration>, PageError> {
    match v.map(str::trim).filter(|d| !d.is_empty()) {
        None => Ok(None),
        Some(d) => match d.parse::<u64>() {
            Ok(n @ 1..) if n <= max => Ok(Some(Duration::from_secs(n * 86_400))),
            _ => Err(PageError::BadInput(format!(
                "The validity must be a number of days from 1 to {max}."
            ))),
        },
    }
}

pub async fn create_token(
    State(state): State<WebState>,
    Posted(s, f): Posted<NewToken>,
) -> Result<Response, PageError> {
    let ttl = days(f.days.as_deref(), 3650)?;
    let (info, secret) = state
        .service
        .create_api_token(&s.actor, f.operator_id, ttl)
        .await?;
    render(
        &state,
        &s,
        None,
        Some((
            format!(
                "API token {} for operator {} (shown once; give it to them privately)",
                info.id, info.operator_id
            ),
            secret,
        )),
    )
    .await
}

pub struct ApiTokenRow {
    pub id: i64,
    pub operator: String,
    pub created: String,
    pub expires: String,
    pub status: &'static str,
    pub active: bool,
}

#[derive(Template)]
#[template(path = "console/tokens.html")]
struct TokensPage {
    nav: Nav,
    tokens: Vec<ApiTokenRow>,
    /// The token whose revocation waits for confirmation.
    confirm: Option<ApiTokenRow>,
    notice: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct TokensQuery {
    confirm: Option<i64>,
}

/// Every operator API token (newest first) with its operator and state; never a secret (only
/// hashes are stored). Revoking goes through a confirmation step.
async fn render_tokens(
    state: &WebState,
    s: &Session,
    confirm: Option<i64>,
    notice: Option<String>,
) -> Result<Response, PageError> {
    s.require(&[Role::Admin], "Administration")?;
    let names: std::collections::HashMap<i64, String> = state
        .service
        .list_operators(&s.actor)
        .await?
        .into_iter()
        .map(|o| (o.id, o.name))
        .collect();
    let list = crate::service::all_pages(|p| state.service.list_api_tokens_page(&s.actor, None, p))
        .await?;
    let now = state_now();
    let mut tokens: Vec<ApiTokenRow> = list
        .iter()
        .map(|t| {
            let (status, active) = if t.revoked {
                ("revoked", false)
            } else if t.expires_at.is_some_and(|e| e <= now) {
                ("expired", false)
            } else {
                ("active", true)
            };
            ApiTokenRow {
                id: t.id,
                operator: names
                    .get(&t.operator_id)
                    .cloned()
                    .unwrap_or_else(|| format!("operator {}", t.operator_id)),
                created: when(&t.created_at),
                expires: t
                    .expires_at
                    .as_ref()
                    .map_or_else(|| "never".to_owned(), when),
                status,
                active,
            }
        })
        .collect();
    tokens.sort_by_key(|t| std::cmp::Reverse(t.id));
    let confirm = match confirm {
        None => None,
        Some(id) => match tokens.iter().find(|t| t.id == id && t.active) {
            Some(t) => Some(ApiTokenRow {
                id: t.id,
                operator: t.operator.clone(),
                created: t.created.clone(),
                expires: t.expires.clone(),
                status: t.status,
                active: t.active,
            }),
            None => {
                return Err(PageError::NotFound(format!(
                    "There is no active API token number {id}: it may already be revoked or expired."
                )));
            }
        },
    };
    html(&TokensPage {
        nav: Nav::new(s, "admin"),
        tokens,
        confirm,
        notice,
    })
}

pub async fn tokens(
    State(state): State<WebState>,
    s: Session,
    Query(q): Query<TokensQuery>,
) -> Result<Response, PageError> {
    render_tokens(&state, &s, q.confirm, None).await
}

#[derive(Debug, Deserialize)]
pub struct RevokeToken {
    token_id: i64,
    confirm: Option<String>,
}

pub async fn revoke_token(
    State(state): State<WebState>,
    Posted(s, f): Posted<RevokeToken>,
) -> Result<Response, PageError> {
    let id = f.token_id;
    if f.confirm.as_deref() != Some("yes") {
        return Err(PageError::BadInput(
            "Tick the confirmation box to revoke the token.".into(),
        ));
    }
    state.service.revoke_api_token(&s.actor, id).await?;
    render_tokens(
        &state,
        &s,
        None,
        Some(format!(
            "API token {id} revoked: programs and people using it are refused from now on."
        )),
    )
    .await
}

#[derive(Debug, Deserialize)]
pub struct NewEnrollment {
    note: Option<String>,
    max_uses: u32,
    days: Option<String>,
}

pub async fn create_enrollment_token(
    State(state): State<WebState>,
    Posted(s, f): Posted<NewEnrollment>,
) -> Result<Response, PageError> {
    let ttl = days(f.days.as_deref(), 366)?.unwrap_or(Duration::from_secs(7 * 86_400));
    let (info, secret) = state
        .service
        .create_enrollment_token(
            &s.actor,
            f.max_uses,
            ttl,
            f.note.filter(|n| !n.trim().is_empty()),
        )
        .await?;
    render(
        &state,
        &s,
        None,
        Some((
            format!(
                "Enrolment token {} (shown once; put it in the agent's configuration)",
                info.id
            ),
            secret,
        )),
    )
    .await
}

pub async fn revoke_enrollment_token(
    State(state): State<WebState>,
    Path(id): Path<i64>,
    Posted(s, _): Posted<Confirm>,
) -> Result<Response, PageError> {
    state.service.revoke_enrollment_token(&s.actor, id).await?;
    render(
        &state,
        &s,
        Some(format!("Enrolment token {id} revoked.")),
        None,
    )
    .await
}
