//! BitLocker GUIDs (protector IDs, volume GUIDs) in Windows registry form `{XXXXXXXX-…}` (pure).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// Parse a GUID given as `{24B0AA32-F8D0-40BA-BB05-73A800324C09}`, without braces, or as 32 bare hex digits.
pub fn parse_guid(s: &str) -> Result<Uuid, String> {
    let t = s.trim();
    let inner = match (t.starts_with('{'), t.ends_with('}')) {
        (true, true) if t.len() >= 2 => &t[1..t.len() - 1],
        (false, false) => t,
        _ => return Err(format!("GUID {t:?} has unbalanced braces")),
    };
    // uuid also accepts urn: forms; accept only the hyphenated (36) or simple (32) forms.
    if inner.len() != 36 && inner.len() != 32 {
        return Err(format!(
            "{t:?} is not a GUID (expected {{XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX}})"
        ));
    }
    Uuid::parse_str(inner).map_err(|_| {
        format!("{t:?} is not a GUID (expected {{XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX}})")
    })
}

/// Upper-case braced registry form of a GUID.
pub fn format_guid(u: &Uuid) -> String {
    format!("{{{}}}", u.hyphenated().to_string().to_ascii_uppercase())
}

/// Serde adapter for a `Uuid` field answered in the braced upper-case form (`#[serde(with = ...)]`);
/// reading accepts every form [`parse_guid`] does.
pub mod braced {
    use serde::{Deserialize, Deserializer, Serializer};
    use uuid::Uuid;

    pub fn serialize<S: Serializer>(u: &Uuid, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_guid(u))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Uuid, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_guid(&s).map_err(serde::de::Error::custom)
    }
}

/// A BitLocker key protector ID (= recovery key ID shown on the recovery screen).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ProtectorId(pub Uuid);

impl ProtectorId {
    pub fn new(u: Uuid) -> Self {
        Self(u)
    }
    pub fn uuid(&self) -> Uuid {
        self.0
    }
    /// The first 8 hex digits, upper case: what a help-desk operator reads off the recovery screen.
    pub fn prefix8(&self) -> String {
        self.0.simple().to_string()[..8].to_ascii_uppercase()
    }
    /// Storage form: upper-case hyphenated without braces.
    pub fn db_string(&self) -> String {
        self.0.hyphenated().to_string().to_ascii_uppercase()
    }
}

impl fmt::Display for ProtectorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_guid(&self.0))
    }
}

impl FromStr for ProtectorId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_guid(s).map(Self)
    }
}

impl Serialize for ProtectorId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl utoipa::PartialSchema for ProtectorId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "recovery key ID, answered braced upper case, e.g. {24B0AA32-F8D0-40BA-BB05-73A800324C09}",
            ))
            .into()
    }
}

impl utoipa::ToSchema for ProtectorId {}

impl<'de> Deserialize<'de> for ProtectorId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Normalise a help-desk prefix: 8 hex digits (an optional leading `{` is ignored), upper case.
pub fn parse_prefix8(s: &str) -> Result<String, String> {
    let t = s.trim().trim_start_matches('{');
    if t.len() != 8 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "key ID prefix {:?} must be exactly the first 8 hex digits of the recovery key ID",
            s.trim()
        ));
    }
    Ok(t.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_forms() {
        let want = "{24B0AA32-F8D0-40BA-BB05-73A800324C09}";
        for s in [
            want,
            "24b0aa32-f8d0-40ba-bb05-73a800324c09",
            "24B0AA32F8D040BABB0573A800324C09",
            " {24b0aa32-f8d0-40ba-bb05-73a800324c09} ",
        ] {
            let p: ProtectorId = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(p.to_string(), want);
            assert_eq!(p.prefix8(), "24B0AA32");
            assert_eq!(p.db_string(), "24B0AA32-F8D0-40BA-BB05-73A800324C09");
        }
        for bad in [
            "",
            "{}",
            "{24B0AA32-F8D0-40BA-BB05-73A800324C09",
            "24B0AA32",
            "urn:uuid:24b0aa32-f8d0-40ba-bb05-73a800324c09",
            "{ZZB0AA32-F8D0-40BA-BB05-73A800324C09}",
        ] {
            assert!(bad.parse::<ProtectorId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn prefix() {
        assert_eq!(parse_prefix8("24b0aa32"), Ok("24B0AA32".to_owned()));
        assert_eq!(parse_prefix8("{24b0aa32"), Ok("24B0AA32".to_owned()));
        assert!(parse_prefix8("24b0aa3").is_err());
        assert!(parse_prefix8("24b0aa3g").is_err());
        assert!(parse_prefix8("24b0aa32%").is_err());
    }

    #[test]
    fn serde_roundtrip() {
        let p: ProtectorId = "24b0aa32-f8d0-40ba-bb05-73a800324c09"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let j = serde_json::to_string(&p).unwrap_or_default();
        assert_eq!(j, "\"{24B0AA32-F8D0-40BA-BB05-73A800324C09}\"");
        let back: ProtectorId = serde_json::from_str(&j).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, p);
        assert!(serde_json::from_str::<ProtectorId>("\"nope\"").is_err());
    }
}
