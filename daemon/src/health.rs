//! The daemon's health: responder bound and alive, database reachable, certificates valid, audit
//! chain intact. A background task refreshes it; /healthz, `netunlockd status` and the systemd
//! watchdog read it.

use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Serialize;

mod evaluate;

pub(crate) use evaluate::{
    HealthSources, chain_intact, describe_chain, health_task, initial_health,
};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CheckState {
    Ok,
    /// Working, but something needs the operator (one of several certificates expired, a group
    /// member answering everything without its database).
    Degraded,
    Failed,
    /// The component is turned off in the configuration.
    Disabled,
    /// Not checked yet.
    Unknown,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Check {
    pub(crate) state: CheckState,
    pub(crate) detail: String,
}

impl Check {
    pub(crate) fn ok(detail: impl Into<String>) -> Self {
        Self {
            state: CheckState::Ok,
            detail: detail.into(),
        }
    }
    pub(crate) fn degraded(detail: impl Into<String>) -> Self {
        Self {
            state: CheckState::Degraded,
            detail: detail.into(),
        }
    }
    pub(crate) fn failed(detail: impl Into<String>) -> Self {
        Self {
            state: CheckState::Failed,
            detail: detail.into(),
        }
    }
    pub(crate) fn disabled() -> Self {
        Self {
            state: CheckState::Disabled,
            detail: "disabled in the configuration".into(),
        }
    }
    pub(crate) fn unknown() -> Self {
        Self {
            state: CheckState::Unknown,
            detail: "not checked yet".into(),
        }
    }
    fn healthy(&self) -> bool {
        matches!(self.state, CheckState::Ok | CheckState::Disabled)
    }
    fn working(&self) -> bool {
        self.healthy() || self.state == CheckState::Degraded
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct HealthReport {
    /// "ok", "degraded" (serving, but a check needs attention: HTTP 200) or "failed" (HTTP 503).
    pub(crate) status: &'static str,
    pub(crate) version: &'static str,
    pub(crate) responder: Check,
    pub(crate) database: Check,
    pub(crate) certificates: Check,
    pub(crate) audit_chain: Check,
    /// Sharing the unlock work with other appliances (issue 11).
    pub(crate) group: Check,
}

impl HealthReport {
    pub(crate) fn new(
        responder: Check,
        database: Check,
        certificates: Check,
        audit_chain: Check,
    ) -> Self {
        let checks = [&responder, &database, &certificates, &audit_chain];
        let status = if checks.iter().all(|c| c.healthy()) {
            "ok"
        } else if checks.iter().all(|c| c.working()) {
            "degraded"
        } else {
            "failed"
        };
        Self {
            status,
            version: env!("CARGO_PKG_VERSION"),
            responder,
            database,
            certificates,
            audit_chain,
            group: Check::disabled(),
        }
    }

    /// The same report with the group's check: a degraded group makes the whole report
    /// "degraded" (still serving, so /healthz stays 200), never "failed".
    pub(crate) fn with_group(mut self, group: Check) -> Self {
        if self.status == "ok" && group.state == CheckState::Degraded {
            self.status = "degraded";
        }
        self.group = group;
        self
    }

    /// Serving (ok or degraded): what /healthz answers 200 for.
    pub(crate) fn healthy(&self) -> bool {
        self.status != "failed"
    }

    /// The watchdog only needs the daemon to be alive and serving, not every certificate valid:
    /// restarting would not fix an expired certificate.
    /// A group member keeps unlocking without its database (issue 11), so for it a lost database
    /// is no reason to be restarted.
    pub(crate) fn alive(&self) -> bool {
        let responder_failed = matches!(self.responder.state, CheckState::Failed);
        let database_failed = matches!(self.database.state, CheckState::Failed);
        let group_member = self.group.state != CheckState::Disabled;
        !responder_failed && (group_member || !database_failed)
    }
}

/// Shared, lock-free latest report.
#[derive(Debug, Clone)]
pub(crate) struct Health(Arc<ArcSwap<HealthReport>>);

impl Health {
    pub(crate) fn new() -> Self {
        Self(Arc::new(ArcSwap::from_pointee(HealthReport::new(
            Check::unknown(),
            Check::unknown(),
            Check::unknown(),
            Check::unknown(),
        ))))
    }
    pub(crate) fn set(&self, report: HealthReport) {
        self.0.store(Arc::new(report));
    }
    pub(crate) fn get(&self) -> Arc<HealthReport> {
        self.0.load_full()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_components_are_healthy_failed_ones_are_not() {
        let r = HealthReport::new(
            Check::ok("bound"),
            Check::disabled(),
            Check::ok("1 valid"),
            Check::disabled(),
        );
        assert!(r.healthy() && r.alive());
        assert_eq!(r.status, "ok");
        let r = HealthReport::new(
            Check::ok("bound"),
            Check::ok("ok"),
            Check::degraded("1 of 2 certificates expired"),
            Check::ok("ok"),
        );
        assert_eq!(r.status, "degraded");
        assert!(r.healthy() && r.alive(), "degraded still serves");
        let r = HealthReport::new(
            Check::ok("bound"),
            Check::failed("no database"),
            Check::degraded("1 of 2 certificates expired"),
            Check::ok("ok"),
        );
        assert_eq!(
            r.status, "failed",
            "a failed check outweighs a degraded one"
        );
        let r = HealthReport::new(
            Check::ok("bound"),
            Check::ok("ok"),
            Check::failed("expired"),
            Check::ok("ok"),
        );
        assert!(!r.healthy());
        assert!(
            r.alive(),
            "an expired certificate must not make systemd restart the daemon"
        );
        let r = HealthReport::new(
            Check::failed("stalled"),
            Check::ok("ok"),
            Check::ok("ok"),
            Check::ok("ok"),
        );
        assert!(!r.alive());
        assert!(
            !HealthReport::new(
                Check::unknown(),
                Check::unknown(),
                Check::unknown(),
                Check::unknown()
            )
            .healthy()
        );
    }

    #[test]
    fn a_group_member_without_its_database_is_degraded_but_alive() {
        let lost = || {
            HealthReport::new(
                Check::ok("bound"),
                Check::failed("unreachable"),
                Check::ok("1 valid"),
                Check::ok("ok"),
            )
        };
        assert!(!lost().alive(), "a single appliance is restarted");
        let member = lost().with_group(Check::degraded("answering everything"));
        assert!(member.alive(), "a group member keeps unlocking");
        let fine = HealthReport::new(
            Check::ok("bound"),
            Check::ok("reachable"),
            Check::ok("1 valid"),
            Check::ok("ok"),
        )
        .with_group(Check::degraded("answering everything"));
        assert_eq!(fine.status, "degraded");
        assert!(fine.healthy() && fine.alive());
    }
}
