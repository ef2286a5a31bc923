//! `/`: each role lands on its first section.

use axum::response::{IntoResponse, Redirect, Response};

use crate::model::Role;
use crate::web::error::PageError;
use crate::web::session::Session;

pub async fn home(s: Session) -> Result<Response, PageError> {
    let to = match s.role() {
        Some(Role::Admin | Role::Helpdesk) => "/recovery",
        _ => "/reports/audit",
    };
    Ok(Redirect::to(to).into_response())
}
