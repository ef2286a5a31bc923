//! The group's Prometheus metrics (issue 11).

use anyhow::{Context, Result};
use prometheus::{Gauge, IntCounter, IntGauge, Registry};

#[derive(Clone)]
pub(crate) struct GroupMetrics {
    pub(crate) members: IntGauge,
    pub(crate) dead_members: IntGauge,
    pub(crate) share: Gauge,
    pub(crate) degraded: IntGauge,
    pub(crate) dead_peer_requests: IntCounter,
    pub(crate) takeovers: IntCounter,
    pub(crate) heartbeat_failures: IntCounter,
}

impl GroupMetrics {
    pub(crate) fn register(registry: &Registry) -> Result<Self> {
        let m = Self {
            members: IntGauge::new(
                "netunlockd_group_members",
                "Live members of this appliance's Network Unlock group, itself included, as it last saw them.",
            )?,
            dead_members: IntGauge::new(
                "netunlockd_group_dead_members",
                "Members of the group that stopped sending heartbeats without leaving (their share is answered by the others).",
            )?,
            share: Gauge::new(
                "netunlockd_group_share",
                "Fraction of the group's clients this member answers (1 while degraded or starting).",
            )?,
            degraded: IntGauge::new(
                "netunlockd_group_degraded",
                "1 while the group database cannot be reached and this member answers every request.",
            )?,
            dead_peer_requests: IntCounter::new(
                "netunlockd_group_dead_peer_requests_total",
                "Requests this member took on because the member that would answer them is dead.",
            )?,
            takeovers: IntCounter::new(
                "netunlockd_group_takeovers_total",
                "Times this member saw a live member of its group die and took on its share.",
            )?,
            heartbeat_failures: IntCounter::new(
                "netunlockd_group_heartbeat_failures_total",
                "Heartbeats that did not reach the group database.",
            )?,
        };
        m.share.set(1.0);
        m.members.set(1);
        for c in [
            Box::new(m.members.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.dead_members.clone()),
            Box::new(m.share.clone()),
            Box::new(m.degraded.clone()),
            Box::new(m.dead_peer_requests.clone()),
            Box::new(m.takeovers.clone()),
            Box::new(m.heartbeat_failures.clone()),
        ] {
            registry
                .register(c)
                .context("cannot register the group metrics")?;
        }
        Ok(m)
    }
}
