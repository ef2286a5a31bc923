//! The periodic audit-chain check behind `/healthz` and `netunlockd status`: incremental, so its
//! cost per round does not grow with the chain (pure; the service feeds it records).
//!
//! Each round (1) re-reads the last record it verified and checks it is unchanged, (2) verifies the
//! records appended since, up to the stored head, and (3) re-verifies one bounded slice of the
//! older chain, moving on each round and wrapping at the end, so an edit anywhere is found after
//! at most `older records / slice` rounds, while new records and the head agree with
//! `audit verify` within one round.

use super::{AuditRecord, ChainVerification, ChainVerifier};

/// A verified position in the chain: record `seq` has `hash`, and `count` records up to it verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainCheckpoint {
    pub seq: i64,
    pub hash: Vec<u8>,
    pub count: u64,
}

/// What the periodic check remembers between rounds.
#[derive(Clone, Debug, Default)]
pub struct ChainWatch {
    /// The newest record verified so far (None: nothing yet, the first round reads the whole chain).
    pub(crate) verified: Option<ChainCheckpoint>,
    /// The slice re-verification continues after this seq (0: from the start).
    pub(crate) sweep_after: i64,
}

impl ChainWatch {
    /// The newest verified position, if any.
    pub fn verified(&self) -> Option<&ChainCheckpoint> {
        self.verified.as_ref()
    }

    /// A verifier that continues after the checkpoint, once `current` (the checkpoint record as
    /// stored now) shows it is unchanged.
    pub(crate) fn resume(
        &self,
        current: Option<&AuditRecord>,
    ) -> Result<ChainVerifier, ChainVerification> {
        let Some(cp) = &self.verified else {
            return Ok(ChainVerifier::default());
        };
        match current {
            Some(r) if r.seq == cp.seq && r.hash == cp.hash && r.compute_hash() == r.hash => {
                Ok(ChainVerifier::resume(cp))
            }
            Some(r) if r.seq == cp.seq => Err(ChainVerification::Broken {
                seq: cp.seq,
                reason: format!("record {} was altered after it was verified", cp.seq),
            }),
            _ => Err(ChainVerification::Broken {
                seq: cp.seq,
                reason: format!("record {} was deleted after it was verified", cp.seq),
            }),
        }
    }

    /// Records the outcome of steps (1) and (2).
    pub(crate) fn advance(&mut self, verifier: &ChainVerifier) {
        let cp = verifier.checkpoint();
        // An empty chain has no record to re-read next round.
        self.verified = (cp.seq > 0).then_some(cp);
    }

    /// Where the next slice starts: the record before it (to link to) is `anchor_seq`.
    pub(crate) fn sweep_anchor(&self) -> i64 {
        self.sweep_after
    }

    /// Verifies one slice of older records: `records` start at the anchor record (seq =
    /// [`Self::sweep_anchor`], absent when the anchor is 0) and are in seq order. Only records up to
    /// the verified checkpoint count; the slice wraps to the start once it reaches it.
    pub(crate) fn sweep(
        &mut self,
        records: &[AuditRecord],
        slice: usize,
    ) -> Result<(), ChainVerification> {
        let limit = self.verified.as_ref().map_or(0, |cp| cp.seq);
        let anchor = self.sweep_after;
        let (mut v, body) = if anchor == 0 {
            (ChainVerifier::default(), records)
        } else {
            match records.first() {
                Some(a) if a.seq == anchor && a.compute_hash() == a.hash => (
                    ChainVerifier::resume(&ChainCheckpoint {
                        seq: a.seq,
                        hash: a.hash.clone(),
                        count: 0,
                    }),
                    &records[1..],
                ),
                Some(a) if a.seq == anchor => {
                    return Err(ChainVerification::Broken {
                        seq: anchor,
                        reason: format!(
                            "record {anchor} was altered: its content does not match its hash"
                        ),
                    });
                }
                _ => {
                    return Err(ChainVerification::Broken {
                        seq: anchor,
                        reason: format!("record {anchor} is missing (deleted?)"),
                    });
                }
            }
        };
        let mut last = anchor;
        for r in body.iter().take_while(|r| r.seq <= limit) {
            v.push(r)?;
            last = r.seq;
        }
        let reached_end = body.len() < slice || last >= limit;
        self.sweep_after = if reached_end { 0 } else { last };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::chain;
    use super::*;

    fn run_round(
        watch: &mut ChainWatch,
        log: &[AuditRecord],
        head: (i64, Vec<u8>),
        slice: usize,
    ) -> ChainVerification {
        let current = watch
            .verified
            .as_ref()
            .and_then(|cp| log.iter().find(|r| r.seq == cp.seq));
        let mut v = match watch.resume(current) {
            Ok(v) => v,
            Err(b) => return b,
        };
        let after = watch.verified.as_ref().map_or(0, |cp| cp.seq);
        for r in log.iter().filter(|r| r.seq > after) {
            if let Err(b) = v.push(r) {
                return b;
            }
        }
        let result = v.clone().finish(Some(head));
        if !matches!(result, ChainVerification::Ok { .. }) {
            return result;
        }
        watch.advance(&v);
        let anchor = watch.sweep_anchor();
        let from: Vec<AuditRecord> = log
            .iter()
            .filter(|r| r.seq >= anchor.max(1))
            .take(slice + usize::from(anchor > 0))
            .cloned()
            .collect();
        if let Err(b) = watch.sweep(&from, slice) {
            return b;
        }
        result
    }

    fn head(v: &[AuditRecord]) -> (i64, Vec<u8>) {
        v.last()
            .map(|r| (r.seq, r.hash.clone()))
            .unwrap_or((0, super::super::GENESIS_PREV.to_vec()))
    }

    #[test]
    fn new_records_are_counted_each_round_without_rereading() {
        let mut log = chain(10);
        let mut w = ChainWatch::default();
        assert!(matches!(
            run_round(&mut w, &log[..4], head(&log[..4]), 3),
            ChainVerification::Ok { records: 4, .. }
        ));
        assert!(matches!(
            run_round(&mut w, &log, head(&log), 3),
            ChainVerification::Ok { records: 10, .. }
        ));
        // The checkpoint record edited after verification: found in the next round.
        log[9].reason = Some("edited".into());
        assert!(matches!(
            run_round(&mut w, &log, head(&log), 3),
            ChainVerification::Broken { seq: 10, .. }
        ));
    }

    #[test]
    fn an_old_edit_is_found_by_the_rolling_slice() {
        let mut log = chain(20);
        let mut w = ChainWatch::default();
        assert!(matches!(
            run_round(&mut w, &log, head(&log), 4),
            ChainVerification::Ok { records: 20, .. }
        ));
        log[6].reason = Some("edited".into());
        let mut found = None;
        for _ in 0..10 {
            if let ChainVerification::Broken { seq, .. } = run_round(&mut w, &log, head(&log), 4) {
                found = Some(seq);
                break;
            }
        }
        assert_eq!(found, Some(7), "the slice never reached record 7");
    }

    #[test]
    fn a_deleted_checkpoint_or_truncated_head_is_broken() {
        let log = chain(5);
        let mut w = ChainWatch::default();
        assert!(matches!(
            run_round(&mut w, &log, head(&log), 10),
            ChainVerification::Ok { .. }
        ));
        let shorter = &log[..4];
        assert!(matches!(
            run_round(&mut w, shorter, head(shorter), 10),
            ChainVerification::Broken { seq: 5, .. }
        ));
    }
}
