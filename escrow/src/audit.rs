//! Hash-chained audit records: canonical encoding, hashing and chain verification (pure, no I/O).
//!
//! `hash = SHA-256("netunlockd-audit-v1\0" || canonical(record fields) || prev_hash)`; the first record's
//! `prev_hash` is 32 zero bytes. Every field is length-prefixed, so no two different records share an encoding.

use aws_lc_rs::digest;
use serde::{Deserialize, Serialize, Serializer};
use time::OffsetDateTime;

use crate::model::AuditOutcome;

mod watch;

pub use watch::{ChainCheckpoint, ChainWatch};

pub const GENESIS_PREV: [u8; 32] = [0u8; 32];
const DOMAIN: &[u8] = b"netunlockd-audit-v1\0";

/// Action names written to the audit log.
pub mod action {
    pub const ESCROW: &str = "escrow";
    pub const ESCROW_MISMATCH: &str = "escrow_mismatch";
    /// A device escrowed a protector ID another device already holds.
    pub const ESCROW_CONFLICT: &str = "escrow_conflict";
    pub const TPM_OWNER_AUTH: &str = "tpm_owner_auth_escrow";
    pub const DISCLOSE: &str = "disclose";
    pub const ENROLL: &str = "enroll";
    pub const ENROLLMENT_TOKEN_CREATE: &str = "enrollment_token_create";
    pub const ENROLLMENT_TOKEN_REVOKE: &str = "enrollment_token_revoke";
    pub const DEVICE_REVOKE: &str = "device_revoke";
    pub const DEVICE_ALLOW_REENROLL: &str = "device_allow_reenroll";
    pub const OPERATOR_CREATE: &str = "operator_create";
    pub const OPERATOR_BOOTSTRAP: &str = "operator_bootstrap";
    pub const OPERATOR_ROLE: &str = "operator_role_change";
    pub const OPERATOR_DISABLE: &str = "operator_disable";
    /// A directory sign-in, successful or refused (the reason is in the detail).
    pub const SIGN_IN: &str = "sign_in";
    pub const API_TOKEN_CREATE: &str = "api_token_create";
    pub const API_TOKEN_REVOKE: &str = "api_token_revoke";
    pub const ROTATION_REPORT: &str = "rotation_report";
    pub const SUPERSEDE: &str = "protector_superseded";
    pub const KEK_REWRAP: &str = "kek_rewrap";
    pub const IMPORT: &str = "import";
    pub const RESTORE: &str = "restore";
    pub const CONSOLE_SIGN_IN: &str = "console_sign_in";
    pub const CONSOLE_SIGN_OUT: &str = "console_sign_out";
    pub const TPM_OWNER_AUTH_DISCLOSE: &str = "tpm_owner_auth_disclose";
}

/// One stored audit record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditRecord {
    pub seq: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub actor_kind: String,
    pub actor_id: Option<i64>,
    pub actor_name: String,
    pub action: String,
    pub device_id: Option<i64>,
    pub device_name: Option<String>,
    pub protector_id: Option<String>,
    pub reason: Option<String>,
    pub outcome: AuditOutcome,
    pub client_addr: Option<String>,
    /// JSON text exactly as hashed.
    pub detail: String,
    /// Hex SHA-256 of the previous record.
    #[serde(serialize_with = "ser_hex", deserialize_with = "de_hex")]
    #[schema(value_type = String)]
    pub prev_hash: Vec<u8>,
    /// Hex SHA-256 of this record.
    #[serde(serialize_with = "ser_hex", deserialize_with = "de_hex")]
    #[schema(value_type = String)]
    pub hash: Vec<u8>,
}

fn ser_hex<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(v))
}

fn de_hex<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    hex::decode(s).map_err(serde::de::Error::custom)
}

/// Microseconds since the Unix epoch: the storage form of every timestamp.
pub fn to_micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

pub fn from_micros(us: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(s.as_bytes());
}

fn put_opt_str(buf: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => buf.push(0),
        Some(s) => {
            buf.push(1);
            put_str(buf, s);
        }
    }
}

fn put_opt_i64(buf: &mut Vec<u8>, v: Option<i64>) {
    match v {
        None => buf.push(0),
        Some(v) => {
            buf.push(1);
            buf.extend_from_slice(&v.to_be_bytes());
        }
    }
}

impl AuditRecord {
    /// The canonical byte encoding hashed into the chain (everything except `hash`).
    pub fn canonical(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(256 + self.detail.len());
        b.extend_from_slice(DOMAIN);
        b.extend_from_slice(&self.seq.to_be_bytes());
        b.extend_from_slice(&to_micros(self.at).to_be_bytes());
        put_str(&mut b, &self.actor_kind);
        put_opt_i64(&mut b, self.actor_id);
        put_str(&mut b, &self.actor_name);
        put_str(&mut b, &self.action);
        put_opt_i64(&mut b, self.device_id);
        put_opt_str(&mut b, self.device_name.as_deref());
        put_opt_str(&mut b, self.protector_id.as_deref());
        put_opt_str(&mut b, self.reason.as_deref());
        put_str(&mut b, self.outcome.as_str());
        put_opt_str(&mut b, self.client_addr.as_deref());
        put_str(&mut b, &self.detail);
        put_str(&mut b, &hex::encode(&self.prev_hash));
        b
    }

    pub fn compute_hash(&self) -> Vec<u8> {
        digest::digest(&digest::SHA256, &self.canonical())
            .as_ref()
            .to_vec()
    }
}

/// Result of verifying the whole chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ChainVerification {
    Ok { records: u64, head_hash: String },
    Broken { seq: i64, reason: String },
}

/// Incremental verifier: feed records in `seq` order, then `finish` with the stored chain head.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    expected_seq: i64,
    prev_hash: Vec<u8>,
    count: u64,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self {
            expected_seq: 1,
            prev_hash: GENESIS_PREV.to_vec(),
            count: 0,
        }
    }
}

impl ChainVerifier {
    /// Continues after a verified position (the records up to it are not read again).
    pub fn resume(cp: &ChainCheckpoint) -> Self {
        Self {
            expected_seq: cp.seq + 1,
            prev_hash: cp.hash.clone(),
            count: cp.count,
        }
    }

    /// The position verified so far.
    pub fn checkpoint(&self) -> ChainCheckpoint {
        ChainCheckpoint {
            seq: self.expected_seq - 1,
            hash: self.prev_hash.clone(),
            count: self.count,
        }
    }

    /// The seq of the last record pushed (0 before the first).
    pub fn last_seq(&self) -> i64 {
        self.expected_seq - 1
    }

    pub fn push(&mut self, r: &AuditRecord) -> Result<(), ChainVerification> {
        if r.seq != self.expected_seq {
            let reason = if r.seq > self.expected_seq {
                format!(
                    "record {} is missing (deleted?); the next record found is {}",
                    self.expected_seq, r.seq
                )
            } else {
                format!(
                    "record {} appears out of order after {}",
                    r.seq,
                    self.expected_seq - 1
                )
            };
            return Err(ChainVerification::Broken {
                seq: self.expected_seq,
                reason,
            });
        }
        if r.prev_hash != self.prev_hash {
            return Err(ChainVerification::Broken {
                seq: r.seq,
                reason: format!(
                    "record {} does not link to record {} (reordered, or a record before it was replaced)",
                    r.seq,
                    r.seq - 1
                ),
            });
        }
        let h = r.compute_hash();
        if h != r.hash {
            return Err(ChainVerification::Broken {
                seq: r.seq,
                reason: format!(
                    "record {} was altered: its content does not match its hash",
                    r.seq
                ),
            });
        }
        self.prev_hash = h;
        self.expected_seq += 1;
        self.count += 1;
        Ok(())
    }

    /// `head` is the (seq, hash) of the stored chain head, which catches deletion of the newest records.
    pub fn finish(self, head: Option<(i64, Vec<u8>)>) -> ChainVerification {
        let (head_seq, head_hash) = head.unwrap_or((0, GENESIS_PREV.to_vec()));
        let last = self.expected_seq - 1;
        if head_seq != last || head_hash != self.prev_hash {
            let seq = if head_seq > last {
                last + 1
            } else {
                head_seq.max(1)
            };
            return ChainVerification::Broken {
                seq,
                reason: format!(
                    "the chain head says the last record is {head_seq}, but the log ends at {last} (records deleted or head altered)"
                ),
            };
        }
        ChainVerification::Ok {
            records: self.count,
            head_hash: hex::encode(&self.prev_hash),
        }
    }
}

/// Filter for audit reports.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct AuditFilter {
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub from: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub to: Option<OffsetDateTime>,
    /// Operator name (exact).
    pub operator: Option<String>,
    /// Device computer name (case-insensitive exact).
    pub device: Option<String>,
    /// Action name, e.g. "disclose".
    pub kind: Option<String>,
    pub outcome: Option<AuditOutcome>,
    /// At most this many records ([`crate::EscrowService::audit_report`] only; default: all).
    pub limit: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: i64, prev: Vec<u8>) -> AuditRecord {
        let mut r = AuditRecord {
            seq,
            at: from_micros(1_700_000_000_000_000 + seq),
            actor_kind: "operator".into(),
            actor_id: Some(1),
            actor_name: "alice".into(),
            action: "disclose".into(),
            device_id: Some(3),
            device_name: Some("SRV1".into()),
            protector_id: Some("X".into()),
            reason: Some("tpm_reset".into()),
            outcome: AuditOutcome::Success,
            client_addr: None,
            detail: "{}".into(),
            prev_hash: prev,
            hash: vec![],
        };
        r.hash = r.compute_hash();
        r
    }

    pub(super) fn chain(n: i64) -> Vec<AuditRecord> {
        let mut v: Vec<AuditRecord> = Vec::new();
        for s in 1..=n {
            let prev = v
                .last()
                .map(|r| r.hash.clone())
                .unwrap_or_else(|| GENESIS_PREV.to_vec());
            v.push(rec(s, prev));
        }
        v
    }

    fn verify(v: &[AuditRecord], head: Option<(i64, Vec<u8>)>) -> ChainVerification {
        let mut c = ChainVerifier::default();
        for r in v {
            if let Err(b) = c.push(r) {
                return b;
            }
        }
        c.finish(head)
    }

    fn head(v: &[AuditRecord]) -> Option<(i64, Vec<u8>)> {
        v.last().map(|r| (r.seq, r.hash.clone()))
    }

    #[test]
    fn intact_and_tampered() {
        let v = chain(5);
        assert!(matches!(
            verify(&v, head(&v)),
            ChainVerification::Ok { records: 5, .. }
        ));
        assert!(matches!(
            verify(&[], None),
            ChainVerification::Ok { records: 0, .. }
        ));

        let mut edited = v.clone();
        edited[2].reason = Some("other".into());
        assert!(matches!(
            verify(&edited, head(&v)),
            ChainVerification::Broken { seq: 3, .. }
        ));

        let mut deleted = v.clone();
        deleted.remove(1);
        assert!(matches!(
            verify(&deleted, head(&v)),
            ChainVerification::Broken { seq: 2, .. }
        ));

        let mut reordered = v.clone();
        reordered.swap(1, 2);
        reordered[1].seq = 2;
        reordered[2].seq = 3;
        assert!(matches!(
            verify(&reordered, head(&v)),
            ChainVerification::Broken { seq: 2, .. }
        ));

        let truncated = &v[..4];
        assert!(matches!(
            verify(truncated, head(&v)),
            ChainVerification::Broken { seq: 5, .. }
        ));
    }

    #[test]
    fn encoding_is_unambiguous() {
        let a = rec(1, GENESIS_PREV.to_vec());
        let mut b = a.clone();
        b.actor_name = "alic".into();
        b.action = "edisclose".into();
        assert_ne!(a.canonical(), b.canonical());
        let mut c = a.clone();
        c.device_name = None;
        assert_ne!(a.canonical(), c.canonical());
    }
}
