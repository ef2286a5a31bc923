//! Several appliances as one (issue 11): members of a named group keep heartbeat rows in a shared
//! PostgreSQL database (through the escrow crate's [`escrow::Membership`]); each answers only the
//! clients that rendezvous hashing ([`hrw`]) gives it among the live members, and answers
//! everything while it cannot reach the database. The responder sees only [`netunlock::responder::Ownership`].

mod engine;
pub(crate) mod hrw;
mod metrics;
mod view;

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use netunlock::responder::{ClientIdentity, Ownership};

pub(crate) use engine::Engine;
use metrics::GroupMetrics;
use view::{Decision, Mode, View};

use crate::health::Check;

/// Shared between the heartbeat engine (writes) and the receive loops (read, lock-free).
pub(crate) struct GroupState {
    view: ArcSwap<View>,
    metrics: GroupMetrics,
    /// Why the last heartbeat failed, while degraded.
    problem: Mutex<String>,
}

impl GroupState {
    fn new(me: &str, metrics: GroupMetrics) -> Self {
        Self {
            view: ArcSwap::from_pointee(View::starting(me)),
            metrics,
            problem: Mutex::new(String::new()),
        }
    }

    /// The group's line in the health report: degraded while answering everything.
    pub(crate) fn health(&self) -> Check {
        let v = self.view.load();
        match v.mode {
            Mode::Sharing => Check::ok(format!(
                "member {} sharing with {} live member(s){}",
                v.me,
                v.live.len(),
                if v.dead.is_empty() {
                    String::new()
                } else {
                    format!(", answering for dead: {}", v.dead.join(", "))
                }
            )),
            Mode::Starting => Check::degraded(
                "no heartbeat yet: answering every request until the group database answers",
            ),
            Mode::Degraded => Check::degraded(format!(
                "group database unreachable, answering every request: {}",
                self.problem
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
            )),
        }
    }
}

impl Ownership for GroupState {
    fn is_mine(&self, client: &ClientIdentity) -> bool {
        let key = match client {
            ClientIdentity::Mac(m) => hrw::client_key(4, m),
            ClientIdentity::Duid(d) => hrw::client_key(6, d),
            ClientIdentity::Unknown => hrw::client_key(0, &[]),
        };
        match self.view.load().decide(&key) {
            Decision::NotMine => false,
            Decision::Mine => true,
            Decision::MineForDeadPeer => {
                self.metrics.dead_peer_requests.inc();
                true
            }
        }
    }
}

/// The handle kept for health.
pub(crate) type GroupHandle = Arc<GroupState>;
