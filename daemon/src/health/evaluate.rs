//! Evaluating the daemon's health: the checks behind `/healthz`, `netunlockd status` and the
//! systemd watchdog, computed once before READY and then every few seconds.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use tokio_util::sync::CancellationToken;

use super::{Check, CheckState, Health, HealthReport};
use crate::keys::{LoadedCertificate, LoadedKeys};

/// What the health task looks at.
#[derive(Clone, Default)]
pub(crate) struct HealthSources {
    pub(crate) heartbeat: Option<Arc<netunlock::responder::Heartbeat>>,
    pub(crate) loaded: Option<Arc<Mutex<LoadedKeys>>>,
    /// The escrow service and the `netunlockd_audit_chain_ok` gauge the audit check keeps current.
    pub(crate) escrow: Option<(escrow::EscrowService, prometheus::IntGauge)>,
    /// The unlock group's state, when this appliance is a member of one.
    pub(crate) group: Option<crate::group::GroupHandle>,
    /// A group member's escrow service, set once it has started in the background.
    pub(crate) escrow_later: Option<crate::serve::LateEscrow>,
}

/// How often the health report is refreshed, the audit chain check included (it is incremental:
/// new records plus one bounded slice of the older chain per round, see `escrow::ChainWatch`).
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// A receive loop that has not turned over for this long counts as stalled.
const HEARTBEAT_STALE: Duration = Duration::from_secs(30);

/// The audit chain check's memory between rounds and its last verdict.
pub(crate) struct AuditState {
    watch: escrow::ChainWatch,
    last: Check,
}

/// Evaluates every check once. The audit chain is checked when `check_audit` is set, else its
/// last verdict is reused (while waiting for the responder's first heartbeat).
async fn evaluate(
    sources: &HealthSources,
    audit: &mut AuditState,
    check_audit: bool,
) -> HealthReport {
    let responder = match &sources.heartbeat {
        None => Check::disabled(),
        Some(hb) => match hb.stalest() {
            Some(age) if age <= HEARTBEAT_STALE => Check::ok("receive loops alive"),
            Some(age) => {
                Check::failed(format!("a receive loop has stalled for {}s", age.as_secs()))
            }
            None => Check::failed("the receive loops are not running"),
        },
    };
    let certificates = match &sources.loaded {
        None => Check::disabled(),
        Some(loaded) => certificate_check(
            &loaded
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .certificates,
            time::OffsetDateTime::now_utc(),
        ),
    };
    let escrow = sources
        .escrow
        .as_ref()
        .or_else(|| sources.escrow_later.as_ref().and_then(|l| l.get()));
    let database = match escrow {
        None if sources.escrow_later.is_some() => Check::degraded(
            "the escrow service waits for its database (Network Unlock is served meanwhile)",
        ),
        None => Check::disabled(),
        Some((svc, _)) => match svc.ping().await {
            Ok(_) => Check::ok("reachable"),
            Err(e) => Check::failed(format!("unreachable: {e}")),
        },
    };
    if let Some((svc, gauge)) = escrow
        && check_audit
    {
        audit.last = match svc.check_audit_chain(&mut audit.watch).await {
            Ok(v) if chain_intact(&v) => {
                gauge.set(1);
                Check::ok(describe_chain(&v))
            }
            Ok(v) => {
                gauge.set(0);
                // Checked every few seconds: log when it breaks, not every round after.
                if audit.last.state != CheckState::Failed {
                    tracing::error!("audit chain check failed: {}", describe_chain(&v));
                }
                Check::failed(describe_chain(&v))
            }
            Err(e) => Check::failed(format!("cannot read the audit log: {e}")),
        };
    }
    let group = sources
        .group
        .as_ref()
        .map_or_else(Check::disabled, |g| g.health());
    HealthReport::new(responder, database, certificates, audit.last.clone()).with_group(group)
}

/// The first health report, computed before READY so `/healthz` and `netunlockd status` are
/// meaningful as soon as systemd reports the unit started. Waits briefly for the receive loops'
/// first heartbeat.
pub(crate) async fn initial_health(sources: &HealthSources, health: &Health) -> AuditState {
    let mut audit = AuditState {
        watch: escrow::ChainWatch::default(),
        last: if sources.escrow.is_some() || sources.escrow_later.is_some() {
            Check::unknown()
        } else {
            Check::disabled()
        },
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut report = evaluate(sources, &mut audit, true).await;
    while report.responder.state == CheckState::Failed && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        report = evaluate(sources, &mut audit, false).await;
    }
    health.set(report);
    audit
}

pub(crate) async fn health_task(
    sources: HealthSources,
    health: Health,
    mut audit: AuditState,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + HEALTH_INTERVAL,
        HEALTH_INTERVAL,
    );
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let report = evaluate(&sources, &mut audit, true).await;
        // A certificate that expires (or is reached by its 30-day warning) while the daemon runs
        // is said once, when the check changes, not every few seconds.
        let before = health.get();
        if report.certificates.detail != before.certificates.detail
            && report.certificates.state != CheckState::Ok
        {
            tracing::warn!(
                state = ?report.certificates.state,
                "network unlock certificates: {}",
                report.certificates.detail
            );
        }
        health.set(report);
    }
}

/// Failed when no certificate can unlock anyone; degraded while at least one can but another
/// cannot (or soon cannot); the detail names each problem certificate.
fn certificate_check(loaded: &[LoadedCertificate], now: time::OffsetDateTime) -> Check {
    let usable = loaded.iter().filter(|c| c.condition(now).usable()).count();
    let problems: Vec<String> = loaded
        .iter()
        .filter_map(|c| {
            let condition = c.condition(now);
            condition
                .needs_attention()
                .then(|| format!("{} {}", c.thumbprint_hex, condition.label()))
        })
        .collect();
    if usable == 0 {
        if problems.is_empty() {
            Check::failed("no Network Unlock certificate loaded")
        } else {
            Check::failed(format!(
                "no usable Network Unlock certificate: {}",
                problems.join(", ")
            ))
        }
    } else if !problems.is_empty() {
        Check::degraded(format!(
            "{usable} of {} certificate(s) usable; {}",
            loaded.len(),
            problems.join(", ")
        ))
    } else {
        Check::ok(format!("{usable} certificate(s) usable"))
    }
}

pub(crate) fn chain_intact(v: &escrow::ChainVerification) -> bool {
    matches!(v, escrow::ChainVerification::Ok { .. })
}

pub(crate) fn describe_chain(v: &escrow::ChainVerification) -> String {
    match v {
        escrow::ChainVerification::Ok { records, head_hash } => {
            format!("{records} record(s), head {head_hash}")
        }
        escrow::ChainVerification::Broken { seq, reason } => {
            format!("broken at record {seq}: {reason}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netunlock::DisabledBy;
    use time::macros::datetime;

    const NOW: time::OffsetDateTime = datetime!(2026-06-01 12:00 UTC);

    fn cert(name: &str, days_left: i64, disabled_by: Option<DisabledBy>) -> LoadedCertificate {
        LoadedCertificate {
            thumbprint_hex: name.into(),
            subject: name.into(),
            not_before: NOW - time::Duration::days(400),
            not_after: NOW + time::Duration::days(days_left),
            enabled: disabled_by.is_none(),
            disabled_by,
            allowed_subnets: Vec::new(),
            source: name.into(),
        }
    }

    #[test]
    fn certificate_check_table() {
        let cases: Vec<(&str, Vec<LoadedCertificate>, CheckState, &[&str])> = vec![
            (
                "none loaded",
                vec![],
                CheckState::Failed,
                &["no Network Unlock certificate"],
            ),
            (
                "one valid",
                vec![cert("a", 365, None)],
                CheckState::Ok,
                &["1 certificate(s) usable"],
            ),
            (
                "expired beside a valid one",
                vec![cert("a", 365, None), cert("b", -1, None)],
                CheckState::Degraded,
                &["1 of 2", "b expired"],
            ),
            (
                "the only one expires within 30 days",
                vec![cert("a", 10, None)],
                CheckState::Degraded,
                &["a expires_soon"],
            ),
            (
                "the only one expired",
                vec![cert("a", -1, None)],
                CheckState::Failed,
                &["no usable", "a expired"],
            ),
            (
                "valid one disabled by the policy file, another valid",
                vec![
                    cert("a", 365, Some(DisabledBy::PolicyFile)),
                    cert("b", 365, None),
                ],
                CheckState::Degraded,
                &["a disabled"],
            ),
            (
                "all disabled",
                vec![cert("a", 365, Some(DisabledBy::Configuration))],
                CheckState::Failed,
                &["a disabled"],
            ),
        ];
        for (name, loaded, state, needles) in cases {
            let check = certificate_check(&loaded, NOW);
            assert_eq!(check.state, state, "{name}: {}", check.detail);
            for n in needles {
                assert!(
                    check.detail.contains(n),
                    "{name}: {:?} lacks {n:?}",
                    check.detail
                );
            }
        }
    }
}
