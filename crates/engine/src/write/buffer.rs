//! The WAL buffer: what every led partition has appended since the last flush was
//! taken, and the bookkeeping of flushes in flight. Only the write path holds its
//! lock ([`super::WritePath`]); what is here is plain data and pure functions.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::error::{EngineError, Result};
use crate::partition::{Partition, ProducerBatch, TxnMarker, PRODUCER_BATCH_HISTORY};

pub(crate) type FlushResult = Result<()>;

/// One partition's batches waiting for the next flush.
pub(crate) struct PendingSlice {
    pub partition: Arc<Partition>,
    pub batches: Vec<Bytes>,
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    pub producers: Vec<ProducerBatch>,
    /// Transaction markers among the batches.
    pub markers: Vec<TxnMarker>,
    /// Metadata keys the commit deletes (the marker requests the markers serve),
    /// by the offset of the batch that serves each.
    pub deletes: Vec<(i64, String)>,
}

impl PendingSlice {
    pub fn new(partition: Arc<Partition>, base_offset: i64) -> Self {
        Self {
            partition,
            batches: Vec::new(),
            base_offset,
            last_offset: base_offset - 1,
            max_timestamp: -1,
            producers: Vec::new(),
            markers: Vec::new(),
            deletes: Vec::new(),
        }
    }
}

/// The broker-wide buffer all led partitions append to.
#[derive(Default)]
pub(crate) struct WalBuffer {
    pub slices: BTreeMap<(Uuid, i32), PendingSlice>,
    pub bytes: usize,
    pub waiters: Vec<oneshot::Sender<FlushResult>>,
    /// Bytes taken by flushes not yet committed.
    pub inflight_bytes: usize,
    /// Bumped whenever buffered data is abandoned; flushes taken before are failed.
    pub rollbacks: u64,
    /// Why buffered data was last abandoned (what those flushes answer).
    pub abandoned_because: Option<EngineError>,
    /// Flushes taken and not yet through the committer.
    pub flights: usize,
    /// Data was abandoned while flushes were in flight. Until the committer has
    /// processed them (some may have committed), write states cannot be reset to the
    /// committed state, so appends are refused (retriably) meanwhile.
    pub resetting: bool,
    /// The broker generation new flushes are written and committed under.
    pub broker_generation: u64,
    /// A newer process owns this broker id.
    pub fenced: bool,
    /// The broker is handing its partitions off: no new appends.
    pub closing: bool,
}

/// Bytes of manifest one flush may write: what one metadata transaction may carry
/// (etcd refuses requests over 1.5 MiB by default); a larger buffer is flushed as
/// several objects, each with a manifest below this.
pub(super) const MANIFEST_BUDGET: usize = sluice_meta::MAX_TXN_BYTES;

/// Upper bounds of a manifest slice's encoded size, and of each producer batch in it.
const SLICE_BYTES: usize = 256;
const PRODUCER_BYTES: usize = 128;

/// What a marker costs of a manifest's budget: its entry and the delete of its
/// request, at most `MAX_TXN_OPS - 1` of which one commit may carry.
const MARKER_COST: usize = MANIFEST_BUDGET / (sluice_meta::MAX_TXN_OPS - 1);

fn slice_cost(s: &PendingSlice) -> usize {
    SLICE_BYTES + PRODUCER_BYTES * s.producers.len() + MARKER_COST * s.deletes.len()
}

pub(super) fn slice_bytes(s: &PendingSlice) -> usize {
    s.batches.iter().map(Bytes::len).sum()
}

/// Takes slices off the buffer (in key order) while their manifest fits `budget`,
/// and the buffered bytes they hold. A single slice over the budget is split at a
/// batch boundary: one partition's records stay contiguous, the rest waits.
pub(super) fn take_within(
    wal: &mut WalBuffer,
    budget: usize,
) -> (BTreeMap<(Uuid, i32), PendingSlice>, usize) {
    let mut taken = BTreeMap::new();
    let mut left = budget;
    let mut bytes = 0;
    while let Some(mut entry) = wal.slices.first_entry() {
        trim_producers(&mut entry.get_mut().producers);
        let cost = slice_cost(entry.get());
        if cost > left {
            if taken.is_empty() {
                if let Some(head) = split_front(entry.get_mut(), left) {
                    bytes += slice_bytes(&head);
                    taken.insert(*entry.key(), head);
                }
            }
            break;
        }
        left -= cost;
        let (key, slice) = entry.remove_entry();
        bytes += slice_bytes(&slice);
        taken.insert(key, slice);
    }
    wal.bytes -= bytes.min(wal.bytes);
    (taken, bytes)
}

/// Keeps the last [`PRODUCER_BATCH_HISTORY`] batches of each producer (in order): older
/// ones would be forgotten on replay anyway.
fn trim_producers(producers: &mut Vec<ProducerBatch>) {
    if producers.len() <= PRODUCER_BATCH_HISTORY {
        return;
    }
    let mut seen: std::collections::HashMap<i64, usize> = std::collections::HashMap::new();
    let mut keep = vec![false; producers.len()];
    for (i, b) in producers.iter().enumerate().rev() {
        let n = seen.entry(b.producer_id).or_default();
        *n += 1;
        keep[i] = *n <= PRODUCER_BATCH_HISTORY;
    }
    let mut i = 0;
    producers.retain(|_| {
        i += 1;
        keep[i - 1]
    });
}

/// Splits off the front of `s` whose manifest slice fits `budget` (at least one
/// batch); `s` keeps the rest. None if `s` holds a single batch.
fn split_front(s: &mut PendingSlice, budget: usize) -> Option<PendingSlice> {
    use sluice_protocol::batch::BatchHeader;
    if s.batches.len() < 2 {
        return None;
    }
    let headers: Vec<BatchHeader> = s
        .batches
        .iter()
        .map(|b| BatchHeader::parse(b))
        .collect::<std::result::Result<_, _>>()
        .ok()?;
    let mut cost = SLICE_BYTES;
    let mut cut = 0;
    for h in &headers[..headers.len() - 1] {
        // A marker costs its entry and the key its commit deletes.
        let c = if h.is_control() {
            MARKER_COST
        } else if h.is_idempotent() {
            PRODUCER_BYTES
        } else {
            0
        };
        if cut > 0 && cost + c > budget {
            break;
        }
        cost += c;
        cut += 1;
    }
    let split_at = headers[cut].base_offset;
    let max_ts = |hs: &[BatchHeader]| hs.iter().map(|h| h.max_timestamp).max().unwrap_or(-1);
    let rest = s.batches.split_off(cut);
    let (head_producers, rest_producers) = s
        .producers
        .drain(..)
        .partition(|b| b.base_offset < split_at);
    let (head_markers, rest_markers) = s.markers.drain(..).partition(|m| m.offset < split_at);
    let (head_deletes, rest_deletes) = s.deletes.drain(..).partition(|(o, _)| *o < split_at);
    let head = PendingSlice {
        partition: s.partition.clone(),
        batches: std::mem::replace(&mut s.batches, rest),
        base_offset: s.base_offset,
        last_offset: split_at - 1,
        max_timestamp: max_ts(&headers[..cut]),
        producers: head_producers,
        markers: head_markers,
        deletes: head_deletes,
    };
    s.base_offset = split_at;
    s.max_timestamp = max_ts(&headers[cut..]);
    s.producers = rest_producers;
    s.markers = rest_markers;
    s.deletes = rest_deletes;
    Some(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::TailBudget;
    use bytes::BytesMut;
    use sluice_protocol::records::{encode_batch, Record};

    fn slice(batches: i64, producers: bool) -> PendingSlice {
        let tail = Arc::new(TailBudget::new(1, 1));
        let mut s = PendingSlice::new(
            Arc::new(Partition::new(Uuid::nil(), "t".into(), 0, tail)),
            100,
        );
        for i in 0..batches {
            let offset = 100 + 2 * i;
            let record = |o| Record {
                offset: o,
                timestamp: 1_000 + o,
                log_append_time: false,
                key: None,
                value: None,
                headers: vec![],
            };
            let mut b = BytesMut::from(&encode_batch(&[record(offset), record(offset + 1)])[..]);
            if producers {
                b[43..51].copy_from_slice(&(7 + i).to_be_bytes()); // its own producer
                s.producers.push(ProducerBatch {
                    producer_id: 7 + i,
                    epoch: 0,
                    first_seq: 0,
                    last_seq: 1,
                    base_offset: offset,
                    append_ms: 1,
                    txn: false,
                });
            }
            s.batches.push(b.freeze());
            s.last_offset = offset + 1;
            s.max_timestamp = 1_001 + offset;
        }
        s
    }

    #[test]
    fn one_partition_over_the_budget_is_split_at_a_batch() {
        let mut wal = WalBuffer::default();
        let s = slice(20_000, true);
        wal.bytes = slice_bytes(&s);
        wal.slices.insert((Uuid::nil(), 0), s);
        let mut next = 100;
        let mut flushes = 0;
        while !wal.slices.is_empty() {
            let (taken, _) = take_within(&mut wal, MANIFEST_BUDGET);
            let head = taken.into_values().next().expect("something is taken");
            assert_eq!(head.base_offset, next, "contiguous");
            assert!(slice_cost(&head) <= MANIFEST_BUDGET);
            assert!(head
                .producers
                .iter()
                .all(|b| b.base_offset <= head.last_offset));
            assert_eq!(head.max_timestamp, 1_000 + head.last_offset);
            next = head.last_offset + 1;
            flushes += 1;
        }
        assert_eq!(next, 100 + 40_000);
        assert_eq!(wal.bytes, 0);
        assert!(flushes > 1 && flushes < 5, "{flushes} flushes");
    }

    #[test]
    fn a_slice_keeps_five_batches_per_producer() {
        let mut s = slice(12, true);
        for b in &mut s.producers {
            b.producer_id = 7;
        }
        trim_producers(&mut s.producers);
        let kept: Vec<i64> = s.producers.iter().map(|b| b.base_offset).collect();
        assert_eq!(kept, vec![114, 116, 118, 120, 122]);
    }
}
