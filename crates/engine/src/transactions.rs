//! A partition's transactions (RFC 0010): which producers have one open and from
//! which offset, which ended in an abort, and the last stable offset that follows.
//!
//! Plain data: the partition keeps one for what is committed and the open set for
//! what is assigned; the committer, recovery and compaction feed it in offset order.
//!
//! Invariants:
//! - A producer has at most one open transaction per partition; it opens at the
//!   first transactional batch and closes at the marker.
//! - The last stable offset is the first offset of the oldest open transaction, or
//!   the high watermark when none is open; it never passes the high watermark.
//! - `aborted` is ordered by marker offset.

use std::collections::BTreeMap;

use crate::keyspace::{AbortedTxn, OpenTxn, ProducerBatch, TxnMarker};

/// The internal topic whose partitions are the transaction coordinator shards (as
/// the groups' topic is for groups). It holds no records.
pub const TRANSACTIONS_TOPIC: &str = "__sluice_transactions";

/// Transactions of one partition.
#[derive(Debug, Clone, Default)]
pub struct Transactions {
    open: BTreeMap<i64, OpenTxn>,
    aborted: Vec<AbortedTxn>,
    /// Closed transactions with their marker offset, kept until a checkpoint is past
    /// the marker (a checkpoint lists the transactions open at its offset).
    closed: Vec<(OpenTxn, i64)>,
}

impl Transactions {
    /// The state a checkpoint recorded.
    pub fn from_checkpoint(open: &[OpenTxn], aborted: &[AbortedTxn]) -> Self {
        Self {
            open: open.iter().map(|t| (t.producer_id, *t)).collect(),
            aborted: aborted.to_vec(),
            closed: Vec::new(),
        }
    }

    /// Applies one committed slice's producer batches and markers, in offset order.
    pub fn apply(&mut self, producers: &[ProducerBatch], markers: &[TxnMarker]) {
        let (mut b, mut m) = (producers.iter().peekable(), markers.iter().peekable());
        loop {
            match (b.peek(), m.peek()) {
                (Some(pb), Some(mk)) if pb.base_offset < mk.offset => {
                    self.begin_batch(pb);
                    b.next();
                }
                (_, Some(mk)) => {
                    self.end(mk);
                    m.next();
                }
                (Some(pb), None) => {
                    self.begin_batch(pb);
                    b.next();
                }
                (None, None) => return,
            }
        }
    }

    fn begin_batch(&mut self, b: &ProducerBatch) {
        if b.txn {
            self.begin(b.producer_id, b.epoch, b.base_offset);
        }
    }

    /// A transactional batch at `offset`: opens the producer's transaction unless
    /// it is open already.
    pub fn begin(&mut self, producer_id: i64, epoch: i16, offset: i64) {
        self.open.entry(producer_id).or_insert(OpenTxn {
            producer_id,
            epoch,
            first_offset: offset,
        });
    }

    /// A marker: closes the producer's open transaction (true if one was open),
    /// recording it as aborted if the marker aborts it.
    pub fn end(&mut self, m: &TxnMarker) -> bool {
        let Some(open) = self.open.remove(&m.producer_id) else {
            return false;
        };
        if !m.commit {
            self.aborted.push(AbortedTxn {
                producer_id: m.producer_id,
                first_offset: open.first_offset,
                last_offset: m.offset,
            });
        }
        self.closed.push((open, m.offset));
        true
    }

    /// The producer's open transaction, if any.
    pub fn open(&self, producer_id: i64) -> Option<&OpenTxn> {
        self.open.get(&producer_id)
    }

    /// The open transactions, by producer id.
    pub fn open_set(&self) -> &BTreeMap<i64, OpenTxn> {
        &self.open
    }

    /// The last stable offset for a high watermark of `hwm`.
    pub fn last_stable(&self, hwm: i64) -> i64 {
        self.open
            .values()
            .map(|t| t.first_offset)
            .min()
            .map_or(hwm, |first| first.min(hwm))
    }

    /// Aborted transactions with records in `[from, to)`.
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        let start = self.aborted.partition_point(|a| a.last_offset < from);
        self.aborted[start..]
            .iter()
            .filter(|a| a.first_offset < to)
            .copied()
            .collect()
    }

    /// Aborted transactions whose records overlap `[from, to]` (inclusive): what a
    /// fold or a cleaning of that run must leave out.
    pub fn aborted_overlapping(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        self.aborted_between(from, to.saturating_add(1))
    }

    /// What a checkpoint at `folded_to` records: the transactions open there (begun
    /// below it and not ended below it) and the aborted ones whose markers lie below.
    pub fn checkpoint_at(&self, folded_to: i64) -> (Vec<OpenTxn>, Vec<AbortedTxn>) {
        let mut open: Vec<OpenTxn> = self
            .open
            .values()
            .filter(|t| t.first_offset < folded_to)
            .copied()
            .chain(
                self.closed
                    .iter()
                    .filter(|(t, marker)| t.first_offset < folded_to && *marker >= folded_to)
                    .map(|(t, _)| *t),
            )
            .collect();
        open.sort_by_key(|t| t.producer_id);
        let aborted = self
            .aborted
            .iter()
            .filter(|a| a.last_offset < folded_to)
            .copied()
            .collect();
        (open, aborted)
    }

    /// Forgets closed transactions a checkpoint at `folded_to` no longer needs.
    pub fn checkpointed(&mut self, folded_to: i64) {
        self.closed.retain(|(_, marker)| *marker >= folded_to);
    }

    /// Forgets aborted transactions wholly below the log start.
    pub fn truncate_before(&mut self, log_start: i64) {
        let gone = self.aborted.partition_point(|a| a.last_offset < log_start);
        self.aborted.drain(..gone);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(pid: i64, base: i64, txn: bool) -> ProducerBatch {
        ProducerBatch {
            producer_id: pid,
            epoch: 0,
            first_seq: 0,
            last_seq: 0,
            base_offset: base,
            append_ms: 0,
            txn,
        }
    }

    fn marker(pid: i64, offset: i64, commit: bool) -> TxnMarker {
        TxnMarker {
            producer_id: pid,
            epoch: 0,
            commit,
            offset,
        }
    }

    #[test]
    fn the_last_stable_offset_waits_for_the_oldest_open_transaction() {
        let mut t = Transactions::default();
        t.apply(
            &[batch(1, 0, true), batch(2, 3, true), batch(3, 5, false)],
            &[],
        );
        assert_eq!(t.last_stable(8), 0);
        t.apply(&[], &[marker(1, 8, true)]);
        assert_eq!(t.last_stable(9), 3);
        t.apply(&[], &[marker(2, 9, false)]);
        assert_eq!(t.last_stable(10), 10);
        assert_eq!(
            t.aborted_between(0, 10),
            vec![AbortedTxn {
                producer_id: 2,
                first_offset: 3,
                last_offset: 9
            }]
        );
        assert!(t.aborted_between(10, 20).is_empty());
        assert!(t.aborted_between(0, 3).is_empty());
    }

    #[test]
    fn batches_and_markers_of_one_slice_apply_in_offset_order() {
        let mut t = Transactions::default();
        // pid 1: batch at 0, commit at 1, a new transaction at 2.
        t.apply(
            &[batch(1, 0, true), batch(1, 2, true)],
            &[marker(1, 1, true)],
        );
        assert_eq!(t.open(1).map(|o| o.first_offset), Some(2));
        // A marker with nothing open closes nothing.
        assert!(!t.end(&marker(9, 3, false)));
    }

    #[test]
    fn a_checkpoint_keeps_what_is_open_at_its_offset() {
        let mut t = Transactions::default();
        t.apply(
            &[batch(1, 0, true), batch(2, 4, true), batch(3, 6, true)],
            &[marker(1, 10, false), marker(3, 7, true)],
        );
        let (open, aborted) = t.checkpoint_at(8);
        let ids: Vec<i64> = open.iter().map(|o| o.producer_id).collect();
        // 1 began at 0 and ended at 10 (past 8); 2 is open; 3 ended at 7.
        assert_eq!(ids, vec![1, 2]);
        assert!(aborted.is_empty());
        // Rebuilt from the checkpoint and the markers above it: the same state.
        let mut r = Transactions::from_checkpoint(&open, &aborted);
        r.apply(&[], &[marker(1, 10, false)]);
        assert_eq!(r.aborted_between(0, 11), t.aborted_between(0, 11));
        assert_eq!(r.last_stable(11), t.last_stable(11));
        t.checkpointed(8);
        assert_eq!(t.closed.len(), 1);
    }
}
