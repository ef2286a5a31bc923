//! Network Unlock outcomes as the escrow stores them, and the adapters (MAC addresses) agents report,
//! which join the two: "this device's adapter asked for Network Unlock at 03:12 and was answered".
//! The escrow crate knows nothing of the responder: the daemon converts its records into these.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;

/// Most adapters one check-in may report (a server with many NICs and virtual switches stays far below).
pub const MAX_ADAPTERS: usize = 64;

/// An Ethernet MAC address (EUI-48), shown as `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddress(pub [u8; 6]);

impl MacAddress {
    /// A usable unicast adapter address: not all zeros, not multicast/broadcast.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let a: [u8; 6] = bytes.try_into().ok()?;
        (a != [0; 6] && a[0] & 1 == 0).then_some(Self(a))
    }
}

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            a[0], a[1], a[2], a[3], a[4], a[5]
        )
    }
}

impl fmt::Debug for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddress {
    type Err = String;
    /// `AA-BB-CC-DD-EE-FF` (Windows), `aa:bb:cc:dd:ee:ff`, or 12 hex digits.
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let hex: String = if t.len() == 17 {
            let sep = t.as_bytes()[2];
            if !(sep == b':' || sep == b'-') || t.bytes().skip(2).step_by(3).any(|b| b != sep) {
                return Err(format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"));
            }
            t.chars().filter(|c| *c != sep as char).collect()
        } else {
            t.to_owned()
        };
        let mut bytes = [0u8; 6];
        if hex.len() != 12 || hex::decode_to_slice(&hex, &mut bytes).is_err() {
            return Err(format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"));
        }
        Self::from_bytes(&bytes).ok_or_else(|| {
            format!("{s:?} is not an adapter's address (all zeros, multicast or broadcast)")
        })
    }
}

impl Serialize for MacAddress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Days without an answered Network Unlock request before the fleet report lists an enrolled
/// device, unless configured (`unlock_records.no_unlock_days`).
pub const DEFAULT_UNLOCK_WINDOW_DAYS: u32 = 30;

/// One Network Unlock request's outcome, as recorded by the daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnlockEvent {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// "v4" or "v6".
    pub family: String,
    /// The client identity as the responder saw it (MAC, DUID hex, or "-").
    pub client: String,
    /// The adapter's MAC when the identity carries one (DHCPv4 chaddr, DUID-LL/LLT): the join key.
    pub mac: Option<MacAddress>,
    pub address: String,
    pub interface: String,
    pub relay: Option<String>,
    /// SHA-1 thumbprint (hex) of the certificate the request named.
    pub thumbprint: String,
    /// The responder's outcome label ("answered", "unknown_certificate", …).
    pub outcome: String,
}

impl UnlockEvent {
    pub fn answered(&self) -> bool {
        self.outcome == "answered"
    }
}

/// The Network Unlock side of one device: its adapters, its last answered request and its recent
/// refusals (joined by the adapters' MACs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceUnlocks {
    pub device_id: i64,
    pub adapters: Vec<MacAddress>,
    pub last_unlock: Option<UnlockEvent>,
    /// Newest first.
    pub recent_refusals: Vec<UnlockEvent>,
}

/// Requests in one hour with one outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HourlyUnlocks {
    #[serde(with = "time::serde::rfc3339")]
    pub hour: OffsetDateTime,
    pub outcome: String,
    pub count: i64,
}

/// A device whose recovery password was disclosed (it fell into BitLocker recovery).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryNeeded {
    pub device_id: i64,
    pub computer_name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub disclosed_at: OffsetDateTime,
}

/// An enrolled device with no answered Network Unlock request in the window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceWithoutUnlock {
    pub device_id: i64,
    pub computer_name: String,
    pub domain: Option<String>,
    /// Last answered request ever recorded (before the window), if any.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_unlock: Option<OffsetDateTime>,
}

/// Requests from an adapter no enrolled device reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UnknownAdapter {
    #[schema(value_type = String, example = "00:15:5d:01:02:af")]
    pub mac: MacAddress,
    pub requests: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    pub last_outcome: String,
}

/// The unlock ↔ escrow part of the fleet report. Each list holds its first rows (by name, and by
/// most recent request); the totals count every row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UnlockFleetReport {
    #[serde(with = "time::serde::rfc3339")]
    pub generated_at: OffsetDateTime,
    pub window_days: u32,
    /// Enrolled (not revoked) devices that reported adapters but had no answered request in the
    /// window: they needed a PIN or a recovery password at their last boot, or did not reboot.
    pub devices_without_unlock: Vec<DeviceWithoutUnlock>,
    pub devices_without_unlock_total: i64,
    /// Adapters that asked in the window but that no enrolled device reports: servers whose agent
    /// has not checked in since it learnt to report adapters, or machines that are not enrolled.
    pub unknown_adapters: Vec<UnknownAdapter>,
    pub unknown_adapters_total: i64,
}

/// Numbers for Prometheus gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnlockGauges {
    pub devices_without_unlock: i64,
    pub unknown_adapters: i64,
    pub events_stored: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_addresses_parse_in_the_usual_spellings() {
        let want = MacAddress([0x00, 0x15, 0x5d, 0x01, 0x02, 0xaf]);
        for s in [
            "00-15-5D-01-02-AF",
            "00:15:5d:01:02:af",
            "00155D0102AF",
            " 00:15:5D:01:02:AF ",
        ] {
            assert_eq!(s.parse::<MacAddress>(), Ok(want), "{s}");
        }
        assert_eq!(want.to_string(), "00:15:5d:01:02:af");
        for bad in [
            "",
            "00:15:5d:01:02",
            "00:15:5d:01:02:af:00",
            "00-15:5d-01:02-af",
            "00:15:5d:01:02:ag",
            "00:00:00:00:00:00",
            "ff:ff:ff:ff:ff:ff",
            "01:00:5e:00:00:01",
            "0015.5d01.02af",
            "00：15:5d:01:02:af",
        ] {
            assert!(bad.parse::<MacAddress>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn macs_round_trip_through_json() {
        let m: MacAddress = serde_json::from_str("\"02-00-00-00-00-01\"").unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"02:00:00:00:00:01\"");
        assert!(serde_json::from_str::<MacAddress>("\"nope\"").is_err());
    }
}
