//! `[unlock.group]`: several appliances sharing the Network Unlock work (issue 11). The wire form and
//! its validation, pure. The group needs a PostgreSQL database all members share.

use std::time::Duration;

use anyhow::{Result, bail};
use serde::Deserialize;

use super::EscrowSettings;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireGroup {
    /// The group's name: members with the same name (in the same database) share the work.
    pub(crate) name: String,
    /// This appliance's id in the group. Default: the host name.
    pub(crate) member_id: Option<String>,
    /// Where operators can reach this member (shown to the others); informational.
    #[serde(default)]
    pub(crate) address: String,
    /// `postgres://…` shared by every member. Default: `escrow.database_url` when that is PostgreSQL.
    pub(crate) database_url: Option<String>,
    #[serde(default = "default_heartbeat_interval_ms")]
    pub(crate) heartbeat_interval_ms: u64,
    /// A member silent for this long is dead; the others answer its share.
    #[serde(default = "default_dead_after_ms")]
    pub(crate) dead_after_ms: u64,
}

// Takeover happens at most dead_after + one interval after a death: 2 s, about when a client
// sends its one retry.
fn default_heartbeat_interval_ms() -> u64 {
    500
}
fn default_dead_after_ms() -> u64 {
    1_500
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupSettings {
    pub(crate) name: String,
    /// None: the host name, read at start.
    pub(crate) member_id: Option<String>,
    pub(crate) address: String,
    pub(crate) database_url: String,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) dead_after: Duration,
}

/// Validates `[unlock.group]`; `escrow` supplies the default database.
pub(crate) fn validate(
    wire: Option<&WireGroup>,
    escrow: Option<&EscrowSettings>,
) -> Result<Option<GroupSettings>> {
    let Some(g) = wire else {
        return Ok(None);
    };
    check_id("unlock.group.name", &g.name)?;
    if let Some(id) = &g.member_id {
        check_id("unlock.group.member_id", id)?;
    }
    if !(100..=10_000).contains(&g.heartbeat_interval_ms) {
        bail!("unlock.group.heartbeat_interval_ms must be between 100 and 10000");
    }
    if g.dead_after_ms < 2 * g.heartbeat_interval_ms || g.dead_after_ms > 60_000 {
        bail!(
            "unlock.group.dead_after_ms must be at least twice heartbeat_interval_ms (one late \
             heartbeat is not a death) and at most 60000; clients retry after about 2 s, so keep \
             dead_after_ms + heartbeat_interval_ms within a few seconds"
        );
    }
    let database_url = match (&g.database_url, escrow) {
        (Some(u), _) => u.clone(),
        (None, Some(e)) if e.backend == escrow::Backend::Postgres => e.database_url.clone(),
        _ => bail!(
            "unlock.group needs a PostgreSQL database shared by every member: set \
             unlock.group.database_url = \"postgres://…\" (or use a postgres:// escrow.database_url)"
        ),
    };
    match escrow::Backend::of_url(&database_url) {
        Ok(escrow::Backend::Postgres) => {}
        Ok(escrow::Backend::Sqlite) => bail!(
            "unlock.group.database_url must be postgres://…: a SQLite file cannot be shared between appliances"
        ),
        Err(e) => bail!("unlock.group.{e}"),
    }
    Ok(Some(GroupSettings {
        name: g.name.clone(),
        member_id: g.member_id.clone(),
        address: g.address.clone(),
        database_url,
        heartbeat_interval: Duration::from_millis(g.heartbeat_interval_ms),
        dead_after: Duration::from_millis(g.dead_after_ms),
    }))
}

/// Names and member ids are compared byte for byte by every member and hashed: keep them printable.
fn check_id(key: &str, value: &str) -> Result<()> {
    if value.is_empty() || value.len() > 128 || value.chars().any(|c| c.is_control()) {
        bail!("{key} must be 1 to 128 printable characters, not {value:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::path::PathBuf;

    use super::super::{Overrides, parse, validate as validate_config};
    use super::*;

    fn group_of(text: &str) -> Result<Option<GroupSettings>> {
        let wire = parse(text)?;
        let c = validate_config(wire, None, &Overrides::default(), Some(PathBuf::from("/s")))?;
        Ok(c.unlock.and_then(|u| u.group))
    }

    #[test]
    fn no_group_section_means_a_single_appliance() {
        assert_eq!(group_of("").unwrap(), None);
    }

    #[test]
    fn defaults_and_the_escrow_database_as_default() {
        let g = group_of(
            "[unlock.group]\nname = \"site-a\"\n[escrow]\ndatabase_url = \"postgres://nu@db/netunlockd\"\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(g.name, "site-a");
        assert_eq!(g.member_id, None);
        assert_eq!(g.database_url, "postgres://nu@db/netunlockd");
        assert_eq!(g.heartbeat_interval, Duration::from_millis(500));
        assert_eq!(g.dead_after, Duration::from_millis(1500));
    }

    #[test]
    fn refusals_name_the_setting() {
        let table: &[(&str, &str)] = &[
            // SQLite escrow database (the default) cannot carry a group.
            (
                "[unlock.group]\nname = \"a\"\n",
                "PostgreSQL database shared",
            ),
            (
                "[unlock.group]\nname = \"a\"\ndatabase_url = \"sqlite:///x.db\"\n",
                "cannot be shared",
            ),
            (
                "[unlock.group]\nname = \"a\"\ndatabase_url = \"mysql://h/x\"\n",
                "not supported",
            ),
            (
                "[unlock.group]\nname = \"\"\ndatabase_url = \"postgres://h/x\"\n",
                "unlock.group.name",
            ),
            (
                "[unlock.group]\nname = \"a\"\nmember_id = \"x\\ny\"\ndatabase_url = \"postgres://h/x\"\n",
                "unlock.group.member_id",
            ),
            (
                "[unlock.group]\nname = \"a\"\ndatabase_url = \"postgres://h/x\"\nheartbeat_interval_ms = 50\n",
                "heartbeat_interval_ms",
            ),
            (
                "[unlock.group]\nname = \"a\"\ndatabase_url = \"postgres://h/x\"\ndead_after_ms = 900\n",
                "at least twice",
            ),
            (
                "[unlock.group]\nname = \"a\"\ndatabase_url = \"postgres://h/x\"\nsurprise = 1\n",
                "unknown field",
            ),
        ];
        for (text, needle) in table {
            let err = format!("{:#}", group_of(text).unwrap_err());
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn an_explicit_database_and_member_win() {
        let g = group_of(
            "[unlock.group]\nname = \"a\"\nmember_id = \"nu-2\"\naddress = \"10.0.0.2\"\n\
             database_url = \"postgresql://h/x\"\nheartbeat_interval_ms = 500\ndead_after_ms = 1000\n\
             [escrow]\nenabled = false\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(g.member_id.as_deref(), Some("nu-2"));
        assert_eq!(g.address, "10.0.0.2");
        assert_eq!(g.database_url, "postgresql://h/x");
        assert_eq!(g.dead_after, Duration::from_secs(1));
    }
}
