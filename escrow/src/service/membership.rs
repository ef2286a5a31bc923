//! Membership of a Network Unlock group (issue 11), as the daemon sees it: record this appliance's
//! heartbeat and read who else is there. Which member answers which client is decided in the
//! daemon; this only keeps the rows. PostgreSQL only.

use std::time::Duration;

use crate::error::EscrowError;
use crate::store::{Db, membership};

/// A member as read from the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSeen {
    pub member_id: String,
    pub address: String,
    /// Time since its last heartbeat, by the database's clock.
    pub silent_for: Duration,
}

/// The group membership store of one group database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Membership {
    db: Db,
}

impl Membership {
    /// Connects to the group's PostgreSQL database and runs the migrations. `wait` bounds how long a
    /// later call waits for a connection, so a lost database is noticed within about that time.
    pub async fn open(database_url: &str, wait: Duration) -> Result<Self, EscrowError> {
        Ok(Self {
            db: membership::open(database_url, wait).await?,
        })
    }

    /// Records `member`'s heartbeat, then returns every member row of `group` (including this one).
    pub async fn heartbeat(
        &self,
        group: &str,
        member: &str,
        address: &str,
    ) -> Result<Vec<MemberSeen>, EscrowError> {
        let mut conn = self.db.conn().await?;
        membership::beat(&mut conn, group, member, address).await?;
        let rows = membership::members(&mut conn, group).await?;
        Ok(rows
            .into_iter()
            .map(|r| MemberSeen {
                member_id: r.member_id,
                address: r.address,
                silent_for: Duration::from_micros(u64::try_from(r.silent_for_micros).unwrap_or(0)),
            })
            .collect())
    }

    /// Removes `member` from `group` (clean stop).
    pub async fn leave(&self, group: &str, member: &str) -> Result<(), EscrowError> {
        let mut conn = self.db.conn().await?;
        membership::leave(&mut conn, group, member).await
    }

    /// Forgets members silent for longer than `older_than`; returns how many.
    pub async fn forget_silent(
        &self,
        group: &str,
        older_than: Duration,
    ) -> Result<u64, EscrowError> {
        let mut conn = self.db.conn().await?;
        membership::forget_silent(&mut conn, group, older_than).await
    }

    pub async fn close(&self) {
        self.db.close().await;
    }
}
