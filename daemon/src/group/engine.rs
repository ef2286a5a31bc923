//! The heartbeat task: write this member's row every `heartbeat_interval`, read everyone's, swap in
//! the new view; without the database, answer everything until it is back. Never blocks start-up:
//! until the first heartbeat succeeds the member answers every request.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use prometheus::Registry;
use tokio_util::sync::CancellationToken;

use super::view::{Mode, Seen, View};
use super::{GroupMetrics, GroupState};
use crate::config::group::GroupSettings;
use crate::config::redact_url;

/// Members silent for this long are removed from the table (killed and never came back).
const FORGET_AFTER: Duration = Duration::from_secs(7 * 86_400);
/// How often that clean-up runs.
const FORGET_EVERY: Duration = Duration::from_secs(600);
/// How long connecting (and migrating) may take before it counts as failed.
const OPEN_BUDGET: Duration = Duration::from_secs(10);

pub(crate) struct Engine {
    settings: GroupSettings,
    me: String,
    state: Arc<GroupState>,
}

impl Engine {
    /// Registers the metrics and resolves the member id (default: the host name). Touches no database.
    pub(crate) fn new(settings: &GroupSettings, registry: &Registry) -> Result<Self> {
        let me = match &settings.member_id {
            Some(id) => id.clone(),
            None => nix::unistd::gethostname()
                .context("cannot read the host name for unlock.group.member_id; set it explicitly")?
                .to_string_lossy()
                .into_owned(),
        };
        let metrics = GroupMetrics::register(registry)?;
        Ok(Self {
            settings: settings.clone(),
            state: Arc::new(GroupState::new(&me, metrics)),
            me,
        })
    }

    pub(crate) fn state(&self) -> Arc<GroupState> {
        self.state.clone()
    }

    pub(crate) async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let s = &self.settings;
        tracing::info!(
            group = %s.name,
            member = %self.me,
            database = %redact_url(&s.database_url),
            "joining the Network Unlock group; answering every request until the first heartbeat"
        );
        // A heartbeat that takes longer than dead_after counts as failed: by then the others may
        // already consider this member dead and answer its share.
        let budget = s.dead_after;
        let mut membership: Option<escrow::Membership> = None;
        let mut tick = tokio::time::interval(s.heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_forget = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let Some(m) = &membership else {
                // Connecting runs the migrations, which may take longer than a heartbeat.
                match tokio::time::timeout(
                    budget.max(OPEN_BUDGET),
                    escrow::Membership::open(&s.database_url, budget),
                )
                .await
                {
                    Ok(Ok(m)) => membership = Some(m),
                    Ok(Err(e)) => self.degrade(&e.to_string()),
                    Err(_) => self.degrade("no answer while connecting"),
                }
                // The first heartbeat goes out at once, not one interval later.
                if membership.is_some() {
                    tick.reset_immediately();
                }
                continue;
            };
            match tokio::time::timeout(budget, m.heartbeat(&s.name, &self.me, &s.address)).await {
                Ok(Ok(rows)) => self.apply(&rows),
                Ok(Err(e)) => self.degrade(&e.to_string()),
                Err(_) => self.degrade(&format!("no answer within {} ms", budget.as_millis())),
            }
            if let Some(m) = &membership
                && last_forget.elapsed() >= FORGET_EVERY
            {
                last_forget = tokio::time::Instant::now();
                if let Ok(Ok(n)) =
                    tokio::time::timeout(budget, m.forget_silent(&s.name, FORGET_AFTER)).await
                    && n > 0
                {
                    tracing::info!(group = %s.name, "forgot {n} member(s) silent for over a week");
                }
            }
        }
        // A clean stop: leave, so the others take this member's share at their next heartbeat
        // instead of after dead_after.
        if let Some(m) = membership {
            match tokio::time::timeout(Duration::from_secs(2), m.leave(&s.name, &self.me)).await {
                Ok(Ok(())) => tracing::info!(group = %s.name, member = %self.me, "left the group"),
                Ok(Err(e)) => tracing::warn!("could not leave the group cleanly: {e}"),
                Err(_) => tracing::warn!("could not leave the group cleanly: no answer"),
            }
            m.close().await;
        }
        Ok(())
    }

    fn apply(&self, rows: &[escrow::MemberSeen]) {
        let seen: Vec<Seen> = rows
            .iter()
            .map(|r| Seen {
                member_id: r.member_id.clone(),
                silent_for: r.silent_for,
            })
            .collect();
        let next = View::sharing(&self.me, &seen, self.settings.dead_after);
        let prev = self.state.view.load_full();
        let m = &self.state.metrics;
        match prev.mode {
            Mode::Starting => tracing::info!(
                group = %self.settings.name,
                "group database reached: sharing with {} live member(s): {}",
                next.live.len(),
                next.live.join(", ")
            ),
            Mode::Degraded => tracing::warn!(
                group = %self.settings.name,
                "group database reachable again: sharing with {} live member(s): {}",
                next.live.len(),
                next.live.join(", ")
            ),
            Mode::Sharing => {
                for gone in prev.departed_in(&next) {
                    if next.dead.iter().any(|d| d == gone) {
                        m.takeovers.inc();
                        tracing::warn!(
                            group = %self.settings.name,
                            "member {gone} stopped sending heartbeats: taking over part of its share"
                        );
                    } else {
                        tracing::info!(group = %self.settings.name, "member {gone} left the group");
                    }
                }
                for new in prev.joined_in(&next) {
                    tracing::info!(group = %self.settings.name, "member {new} joined the group");
                }
            }
        }
        m.members
            .set(i64::try_from(next.live.len()).unwrap_or(i64::MAX));
        m.dead_members
            .set(i64::try_from(next.dead.len()).unwrap_or(i64::MAX));
        m.share.set(next.share());
        m.degraded.set(0);
        self.state.view.store(Arc::new(next));
    }

    fn degrade(&self, why: &str) {
        let m = &self.state.metrics;
        m.heartbeat_failures.inc();
        *self
            .state
            .problem
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = why.to_owned();
        let prev = self.state.view.load_full();
        match prev.mode {
            Mode::Degraded => return,
            Mode::Starting => tracing::warn!(
                group = %self.settings.name,
                "cannot reach the group database, answering every request until it can: {why}"
            ),
            Mode::Sharing => tracing::warn!(
                group = %self.settings.name,
                "lost the group database, answering every request until it is back: {why}"
            ),
        }
        let next = prev.degraded();
        m.share.set(next.share());
        m.degraded.set(1);
        self.state.view.store(Arc::new(next));
    }
}
