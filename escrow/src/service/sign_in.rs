//! Directory sign-in: a person the directory authenticated becomes (or updates) a "directory
//! operator" with the role their groups grant now; every outcome is audited. The person is told
//! only "refused"; the audit log says why.

use std::net::IpAddr;

use serde_json::json;

use super::EscrowService;
use super::operators::validate_operator_name;
use crate::audit::action;
use crate::directory::{Directory, DirectoryError, DirectoryUser, Refusal};
use crate::error::EscrowError;
use crate::model::{Actor, AuditOutcome, OperatorInfo};
use crate::store::audit::{self as audit_log, NewAudit};
use crate::store::operators;

/// A person signed in through the directory: the actor to act as, and their operator record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedIn {
    pub actor: Actor,
    pub operator: OperatorInfo,
    /// Their entry's DN in the directory.
    pub directory_dn: String,
    /// The (normalised) group DN that granted the role.
    pub granted_by: String,
}

/// Why a sign-in failed, as audited.
enum Failure {
    Refused(&'static str),
    Unavailable(&'static str, String),
}

impl EscrowService {
    /// Sign `user_name` in against `directory` with `password`; `source` is the client address for
    /// the audit log. The role is re-read from the person's groups every time; a person in no
    /// mapped group, a disabled operator record, or a refusal by the directory yields
    /// [`EscrowError::SignInRefused`]; a directory that cannot be used yields
    /// [`EscrowError::DirectoryUnavailable`]. Every outcome, success or not, is audited.
    pub async fn sign_in_directory(
        &self,
        directory: &Directory,
        user_name: &str,
        password: &str,
        source: Option<IpAddr>,
    ) -> Result<SignedIn, EscrowError> {
        let user = match directory.authenticate(user_name, password).await {
            Ok(user) => user,
            Err(e) => {
                let failure = match &e {
                    DirectoryError::Refused(r) => Failure::Refused(r.as_str()),
                    DirectoryError::Unreachable { .. } => {
                        Failure::Unavailable("directory_unreachable", e.to_string())
                    }
                    DirectoryError::Misconfigured(_) => {
                        Failure::Unavailable("directory_misconfigured", e.to_string())
                    }
                    DirectoryError::Protocol(_) => {
                        Failure::Unavailable("directory_error", e.to_string())
                    }
                };
                return Err(self
                    .refuse(user_name, None, failure, source, json!({}))
                    .await);
            }
        };
        let Some((role, granted_by)) = user.role.clone() else {
            let detail = json!({"groups": user.groups.len()});
            return Err(self
                .refuse(
                    &user.user_name,
                    Some(&user.dn),
                    Failure::Refused(Refusal::NoRoleGroup.as_str()),
                    source,
                    detail,
                )
                .await);
        };
        let Ok(name) = validate_operator_name(&user.user_name.to_lowercase()) else {
            return Err(self
                .refuse(
                    &user.user_name,
                    Some(&user.dn),
                    Failure::Refused("user_name_not_an_operator_name"),
                    source,
                    json!({}),
                )
                .await);
        };
        match self
            .link_operator(&user, &name, role, &granted_by, source)
            .await?
        {
            Ok(signed_in) => Ok(signed_in),
            Err(reason) => Err(self
                .refuse(
                    &user.user_name,
                    Some(&user.dn),
                    Failure::Refused(reason),
                    source,
                    json!({}),
                )
                .await),
        }
    }

    /// Create or update the directory operator for `user` and audit the success, in one
    /// transaction. The inner `Err` is a refusal reason (nothing written).
    async fn link_operator(
        &self,
        user: &DirectoryUser,
        name: &str,
        role: crate::model::Role,
        granted_by: &str,
        source: Option<IpAddr>,
    ) -> Result<Result<SignedIn, &'static str>, EscrowError> {
        let now = self.now_us();
        let mut tx = self.inner.db.begin_write().await?;
        let found = operators::by_directory_dn_or_name(&mut tx, &user.dn, name).await?;
        let by_dn = found
            .iter()
            .find(|o| o.directory_dn.as_deref() == Some(user.dn.as_str()));
        let by_name = found.iter().find(|o| o.info.name == name);
        let (info, created, previous_dn) = match (by_dn, by_name) {
            (Some(linked), _) | (None, Some(linked)) if linked.info.disabled => {
                return Ok(Err("operator_disabled"));
            }
            (Some(linked), _) => (linked.info.clone(), false, None),
            (None, Some(linked)) => match &linked.directory_dn {
                // Same name, another DN: the account moved in the directory (the user filter
                // found exactly one entry for this name, so the directory says it is this person).
                Some(old) => (linked.info.clone(), false, Some(old.clone())),
                None => return Ok(Err("name_taken_by_local_operator")),
            },
            (None, None) => (
                operators::insert_directory(&mut tx, name, role, &user.dn, now).await?,
                true,
                None,
            ),
        };
        if !created {
            operators::record_directory_sign_in(&mut tx, info.id, role, &user.dn, now).await?;
        }
        let actor = Actor::operator(info.id, info.name.clone(), role);
        let mut detail = json!({
            "method": "directory",
            "dn": user.dn,
            "role": role,
            "group": granted_by,
            "created": created,
        });
        if !created && info.role != role {
            detail["previous_role"] = json!(info.role);
        }
        if let Some(old) = previous_dn {
            detail["previous_dn"] = json!(old);
        }
        audit_log::append(
            &mut tx,
            NewAudit::new(&actor, action::SIGN_IN, AuditOutcome::Success)
                .client(source.map(|a| a.to_string()))
                .detail(detail),
            self.now(),
        )
        .await?;
        tx.commit().await?;
        Ok(Ok(SignedIn {
            operator: OperatorInfo { role, ..info },
            actor,
            directory_dn: user.dn.clone(),
            granted_by: granted_by.to_owned(),
        }))
    }

    /// Audit a refused or failed sign-in and return the error for the caller. If the audit record
    /// cannot be written, that storage error is returned instead (no silent unaudited refusals).
    async fn refuse(
        &self,
        typed_name: &str,
        dn: Option<&str>,
        failure: Failure,
        source: Option<IpAddr>,
        mut detail: serde_json::Value,
    ) -> EscrowError {
        let (reason, error) = match failure {
            Failure::Refused(reason) => (reason, EscrowError::SignInRefused),
            Failure::Unavailable(reason, message) => {
                detail["error"] = json!(message);
                (reason, EscrowError::DirectoryUnavailable(message))
            }
        };
        detail["method"] = json!("directory");
        detail["reason"] = json!(reason);
        if let Some(dn) = dn {
            detail["dn"] = json!(dn);
        }
        let record = NewAudit {
            actor_kind: "directory_user",
            actor_id: None,
            actor_name: printable_name(typed_name),
            action: action::SIGN_IN,
            device_id: None,
            device_name: None,
            protector_id: None,
            reason: Some(reason.to_owned()),
            outcome: AuditOutcome::Failure,
            client_addr: source.map(|a| a.to_string()),
            detail,
        };
        let written = async {
            let mut tx = self.inner.db.begin_write().await?;
            audit_log::append(&mut tx, record, self.now()).await?;
            tx.commit().await
        }
        .await;
        match written {
            Ok(()) => error,
            Err(storage) => storage,
        }
    }
}

/// The typed name as it may appear in the audit log: bounded, control characters replaced.
fn printable_name(typed: &str) -> String {
    typed
        .trim()
        .chars()
        .take(128)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::printable_name;

    #[test]
    fn typed_names_are_bounded_and_printable_in_the_audit_log() {
        assert_eq!(printable_name("  alice "), "alice");
        assert_eq!(printable_name("a\nb\0c"), "a\u{fffd}b\u{fffd}c");
        assert_eq!(printable_name(&"x".repeat(500)).chars().count(), 128);
    }
}
