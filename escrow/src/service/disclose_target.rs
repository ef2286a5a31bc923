//! Which stored protector a disclosure means (pure). Key IDs are not secret and cloned VMs share
//! them, so several active devices may hold the same ID: the help desk names the device by id (as
//! a lookup lists it) or by `DOMAIN\NAME`; a bare name is enough while it is unambiguous.

use crate::model::KeyCandidate;

/// How the request names the device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct DeviceSelector {
    pub id: Option<i64>,
    /// Lower-case computer name.
    pub name: Option<String>,
    /// Lower-case domain; `Some("")` for a device enrolled without one (`\NAME`).
    pub domain: Option<String>,
}

impl DeviceSelector {
    /// From the request's `device_id` and `device_name` (`NAME` or `DOMAIN\NAME`).
    pub(crate) fn new(id: Option<i64>, name: Option<&str>) -> Self {
        let name = name.map(str::trim).filter(|n| !n.is_empty());
        let (domain, name) = match name.and_then(|n| n.rsplit_once('\\')) {
            Some((d, n)) => (Some(d.trim().to_ascii_lowercase()), Some(n.trim())),
            None => (None, name),
        };
        Self {
            id,
            name: name.map(str::to_ascii_lowercase),
            domain,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.id.is_none() && self.name.is_none()
    }

    fn matches(&self, c: &KeyCandidate) -> bool {
        self.id.is_none_or(|id| id == c.device_id)
            && self
                .name
                .as_deref()
                .is_none_or(|n| c.device_name.eq_ignore_ascii_case(n))
            && self.domain.as_deref().is_none_or(|d| {
                c.domain
                    .as_deref()
                    .unwrap_or_default()
                    .eq_ignore_ascii_case(d)
            })
    }
}

/// The outcome of matching the holders of one key ID against the selector.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Choice<T> {
    One(T),
    /// No active holder matches the device named.
    NoMatch,
    /// Several match: the device ids and qualified names, to name one of them.
    Ambiguous(Vec<(i64, String)>),
}

/// `DOMAIN\NAME`, or the bare name for a device enrolled without a domain.
pub(crate) fn qualified_name(c: &KeyCandidate) -> String {
    match c.domain.as_deref().filter(|d| !d.is_empty()) {
        Some(d) => format!("{d}\\{}", c.device_name),
        None => c.device_name.clone(),
    }
}

/// Picks the holder the selector means among the active holders of one key ID.
pub(crate) fn choose<T>(
    holders: Vec<(KeyCandidate, T)>,
    selector: &DeviceSelector,
) -> Choice<(KeyCandidate, T)> {
    let mut matching: Vec<(KeyCandidate, T)> = holders
        .into_iter()
        .filter(|(c, _)| selector.matches(c))
        .collect();
    match matching.len() {
        0 => Choice::NoMatch,
        1 => Choice::One(matching.remove(0)),
        _ => Choice::Ambiguous(
            matching
                .iter()
                .map(|(c, _)| (c.device_id, qualified_name(c)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ProtectorId, RotationState, VolumeType};
    use time::OffsetDateTime;

    fn cand(id: i64, name: &str, domain: Option<&str>) -> (KeyCandidate, i64) {
        (
            KeyCandidate {
                device_id: id,
                device_name: name.into(),
                domain: domain.map(Into::into),
                volume_guid: uuid::Uuid::nil(),
                volume_type: VolumeType::OperatingSystem,
                mount_point: None,
                protector_id: ProtectorId(uuid::Uuid::nil()),
                escrowed_at: OffsetDateTime::UNIX_EPOCH,
                superseded_at: None,
                disclosed_at: None,
                rotation: RotationState::None,
                device_enrolled_at: OffsetDateTime::UNIX_EPOCH,
                device_last_check_in: None,
                device_cert_sha256: String::new(),
            },
            id * 10,
        )
    }

    fn picked(c: Choice<(KeyCandidate, i64)>) -> Result<i64, String> {
        match c {
            Choice::One((k, _)) => Ok(k.device_id),
            Choice::NoMatch => Err("none".into()),
            Choice::Ambiguous(v) => Err(format!("{v:?}")),
        }
    }

    #[test]
    fn selection_table() {
        // The real server in CORP, a clone with the same name in another domain, one without.
        let fleet = || {
            vec![
                cand(1, "SRV-X", Some("CORP")),
                cand(2, "SRV-X", Some("LAB")),
                cand(3, "srv-x", None),
            ]
        };
        type Case<'a> = (Option<i64>, Option<&'a str>, Result<i64, &'a str>);
        let cases: &[Case<'_>] = &[
            (Some(1), None, Ok(1)),
            (Some(2), None, Ok(2)),
            (Some(9), None, Err("none")),
            (None, Some("CORP\\SRV-X"), Ok(1)),
            (None, Some("corp\\srv-x"), Ok(1)),
            (None, Some("LAB\\SRV-X"), Ok(2)),
            (None, Some("\\SRV-X"), Ok(3)),
            (None, Some("OTHER\\SRV-X"), Err("none")),
            (None, Some("SRV-Y"), Err("none")),
            (
                None,
                Some("SRV-X"),
                Err("[(1, \"CORP\\\\SRV-X\"), (2, \"LAB\\\\SRV-X\"), (3, \"srv-x\")]"),
            ),
            (
                None,
                None,
                Err("[(1, \"CORP\\\\SRV-X\"), (2, \"LAB\\\\SRV-X\"), (3, \"srv-x\")]"),
            ),
            // id and name must agree
            (Some(1), Some("SRV-X"), Ok(1)),
            (Some(1), Some("LAB\\SRV-X"), Err("none")),
        ];
        for (id, name, want) in cases {
            let got = picked(choose(fleet(), &DeviceSelector::new(*id, *name)));
            assert_eq!(got, want.map_err(str::to_owned), "{id:?} {name:?}");
        }
        // One holder: a bare name or nothing at all is enough.
        let one = || vec![cand(1, "SRV-X", Some("CORP"))];
        assert_eq!(
            picked(choose(one(), &DeviceSelector::new(None, Some("srv-x")))),
            Ok(1)
        );
        assert_eq!(picked(choose(one(), &DeviceSelector::default())), Ok(1));
        assert!(DeviceSelector::new(None, Some("  ")).is_empty());
    }
}
