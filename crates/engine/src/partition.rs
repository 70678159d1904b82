//! One partition's state on its leader.
//!
//! Two views, both guarded by their own lock:
//! - [`WriteState`]: what has been *assigned* (next offset, producer sequences
//!   including batches not yet durable). Only touched while the broker's WAL buffer is
//!   locked, so offset assignment and buffer order are one atomic step.
//! - [`ReadState`]: what is *committed* (high watermark, offset index, producer
//!   state as of the high watermark). Fetch and ListOffsets read only this; a flush
//!   failure resets the write view to it.
//!
//! Invariant: `write.next_offset >= read.high_watermark`, equal when nothing is in
//! flight; offsets in `[high_watermark, next_offset)` are assigned but not yet durable.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use object_store::path::Path;
use uuid::Uuid;

use crate::keyspace::{Checkpoint, FoldedFile, OpenTxn};
pub use crate::keyspace::{Format, ProducerBatch, TxnMarker};
use crate::transactions::Transactions;

/// How many recent batches per producer are remembered to recognise retries (Kafka's 5).
pub(crate) const PRODUCER_BATCH_HISTORY: usize = 5;

/// Where a committed run of batches lives.
#[derive(Debug, Clone)]
pub struct IndexEntry {
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    pub object: Arc<Path>,
    /// The object's length (0 if unknown), so reads can be cached in aligned blocks.
    pub object_len: u64,
    pub start: u64,
    pub len: u64,
    /// The bytes themselves while they are in the in-memory tail.
    pub cached: Option<Bytes>,
    pub format: Format,
}

impl IndexEntry {
    /// The entry of a committed slice of write-ahead object `object`.
    /// The entry of a segment or lake file a checkpoint lists.
    pub fn from_folded(file: &FoldedFile) -> Self {
        Self {
            base_offset: file.base_offset,
            last_offset: file.last_offset,
            max_timestamp: file.max_timestamp,
            object: Arc::new(Path::from(file.object.as_str())),
            object_len: file.object_len,
            start: 0,
            len: match file.format {
                Format::Batches => file.object_len,
                Format::Parquet => file.len,
            },
            cached: None,
            format: file.format,
        }
    }

    pub fn from_committed(
        slice: &sluice_storage::wal::WalSlice,
        object: Arc<Path>,
        object_len: u64,
    ) -> Self {
        Self {
            base_offset: slice.base_offset,
            last_offset: slice.last_offset,
            max_timestamp: slice.max_timestamp,
            object,
            object_len,
            start: slice.start,
            len: slice.len,
            cached: None,
            format: Format::Batches,
        }
    }

    /// Whether the entry is a slice of a shared write-ahead object (not yet folded).
    pub fn in_wal(&self) -> bool {
        self.format == Format::Batches
            && self
                .object
                .parts()
                .next()
                .is_some_and(|first| first.as_ref() == sluice_storage::paths::WAL_PREFIX)
    }
}

/// Sequence state of one idempotent producer on one partition.
#[derive(Debug, Clone, Default)]
pub struct ProducerState {
    pub epoch: i16,
    pub recent: VecDeque<ProducerBatch>,
    /// The latest append seen (ms), from which `producer.id.expiration.ms` counts.
    last_append_ms: i64,
    /// Markers seen for this producer: a transactional batch verified before a
    /// marker was assigned is refused (KIP-890).
    pub markers: u64,
}

/// Outcome of checking a batch's producer sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Next in sequence: append it.
    Append,
    /// A retry of a batch already appended at this base offset.
    Duplicate {
        base_offset: i64,
        /// When it was appended (ms): its LogAppendTime on such a topic.
        append_ms: i64,
    },
    OutOfOrder,
    ProducerFenced,
}

impl ProducerState {
    pub fn check(&self, b: &ProducerBatch) -> SequenceCheck {
        // As Kafka: with no state (a producer new to this partition, or whose state
        // went with the records that carried it) any sequence starts the run.
        // A marker may have raised the epoch with no batch of it yet (a transaction
        // aborted by its coordinator): older epochs are fenced all the same.
        if b.epoch < self.epoch {
            return SequenceCheck::ProducerFenced;
        }
        let Some(last) = self.recent.back() else {
            return SequenceCheck::Append;
        };
        if b.epoch > self.epoch {
            return if b.first_seq == 0 {
                SequenceCheck::Append
            } else {
                SequenceCheck::OutOfOrder
            };
        }
        if let Some(dup) = self
            .recent
            .iter()
            .find(|r| r.first_seq == b.first_seq && r.last_seq == b.last_seq)
        {
            return SequenceCheck::Duplicate {
                base_offset: dup.base_offset,
                append_ms: dup.append_ms,
            };
        }
        let expected = if last.last_seq == i32::MAX {
            0
        } else {
            last.last_seq + 1
        };
        if b.first_seq == expected {
            SequenceCheck::Append
        } else {
            SequenceCheck::OutOfOrder
        }
    }

    /// Remembers an appended batch. Replaying history is harmless: a batch older
    /// than the last one remembered is ignored (a rebuild applies a checkpoint's
    /// producer state, then the manifests it may overlap).
    pub fn record(&mut self, b: ProducerBatch) {
        if let Some(last) = self.recent.back() {
            if b.epoch < self.epoch || (b.epoch == self.epoch && b.base_offset <= last.base_offset)
            {
                return;
            }
        }
        if b.epoch != self.epoch {
            self.recent.clear();
            self.epoch = b.epoch;
        }
        if self.recent.len() == PRODUCER_BATCH_HISTORY {
            self.recent.pop_front();
        }
        self.recent.push_back(b);
        self.last_append_ms = self.last_append_ms.max(b.append_ms);
    }

    /// A marker with a newer epoch (the coordinator bumped it to end the
    /// transaction) fences the older one.
    pub fn marker(&mut self, epoch: i16) {
        self.markers += 1;
        if epoch > self.epoch {
            self.epoch = epoch;
            self.recent.clear();
        }
    }
}

/// Drops the state of producers that appended nothing for `ttl_ms` (Kafka's
/// `producer.id.expiration.ms`). State without an append time (stored before it was
/// kept) starts its clock now.
pub fn expire_producers(producers: &mut HashMap<i64, ProducerState>, now_ms: i64, ttl_ms: i64) {
    producers.retain(|_, s| {
        if s.last_append_ms == 0 {
            s.last_append_ms = now_ms;
        }
        now_ms.saturating_sub(s.last_append_ms) < ttl_ms
    });
}

/// Assigned-but-maybe-not-durable state.
#[derive(Debug, Clone, Default)]
pub struct WriteState {
    pub next_offset: i64,
    pub producers: HashMap<i64, ProducerState>,
    /// Transactions open as assigned (by producer id).
    pub open_txns: BTreeMap<i64, OpenTxn>,
    /// Markers assigned so far: a transactional batch verified against the
    /// coordinator before a marker was assigned is not taken (KIP-890).
    pub markers_assigned: u64,
}

/// Bounds the in-memory tail: per partition, and across the broker.
///
/// When the broker-wide total is exceeded, the partition being appended to gives up
/// its own oldest bytes first (possibly the new entry too), so memory stays bounded
/// whatever the number of partitions. Evicted data is read from objects instead.
#[derive(Debug)]
pub struct TailBudget {
    pub per_partition: usize,
    pub total: usize,
    used: AtomicUsize,
}

impl TailBudget {
    pub fn new(per_partition: usize, total: usize) -> Self {
        Self {
            per_partition,
            total,
            used: AtomicUsize::new(0),
        }
    }

    /// Bytes held across all partitions.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// Committed state.
#[derive(Debug, Default)]
pub struct ReadState {
    pub log_start_offset: i64,
    pub high_watermark: i64,
    pub index: Vec<IndexEntry>,
    pub producers: HashMap<i64, ProducerState>,
    /// Open and aborted transactions, as committed.
    pub txns: Transactions,
    /// What compaction folded out of write-ahead objects, as last committed.
    pub checkpoint: Checkpoint,
    /// The checkpoint key's revision (0: none), compared by every write of it.
    pub checkpoint_rev: i64,
    cached_bytes: usize,
    /// Index entries before this one hold no cached bytes.
    first_cached: usize,
}

impl ReadState {
    /// Adds a committed entry, keeping the cached tail within `budget`.
    pub fn append(
        &mut self,
        entry: IndexEntry,
        producers: &[ProducerBatch],
        markers: &[TxnMarker],
        budget: &TailBudget,
    ) {
        self.high_watermark = entry.last_offset + 1;
        let added = entry.cached.as_ref().map_or(0, Bytes::len);
        self.cached_bytes += added;
        budget.used.fetch_add(added, Ordering::Relaxed);
        self.index.push(entry);
        for b in producers {
            self.producers.entry(b.producer_id).or_default().record(*b);
        }
        for m in markers {
            self.producers
                .entry(m.producer_id)
                .or_default()
                .marker(m.epoch);
        }
        self.txns.apply(producers, markers);
        while (self.cached_bytes > budget.per_partition || budget.used() > budget.total)
            && self.first_cached < self.index.len()
        {
            if let Some(bytes) = self.index[self.first_cached].cached.take() {
                self.cached_bytes -= bytes.len();
                budget.used.fetch_sub(bytes.len(), Ordering::Relaxed);
            }
            self.first_cached += 1;
        }
    }

    /// Moves the log start up to `offset`, dropping the index entries wholly below
    /// it (their cached bytes go back to the budget).
    pub fn truncate_before(&mut self, offset: i64, budget: &TailBudget) {
        self.log_start_offset = self.log_start_offset.max(offset);
        self.txns.truncate_before(self.log_start_offset);
        let gone = self.index.partition_point(|e| e.last_offset < offset);
        for e in self.index.drain(..gone) {
            if let Some(bytes) = e.cached {
                self.cached_bytes -= bytes.len();
                budget.used.fetch_sub(bytes.len(), Ordering::Relaxed);
            }
        }
        self.first_cached = self.first_cached.saturating_sub(gone);
    }

    /// Replaces the `count` entries from `at` by `entry` (a fold), keeping the
    /// tail's byte accounting.
    pub fn replace_run(&mut self, at: usize, count: usize, entry: IndexEntry, budget: &TailBudget) {
        let added = entry.cached.as_ref().map_or(0, Bytes::len);
        let removed: usize = self.index[at..at + count]
            .iter()
            .filter_map(|e| e.cached.as_ref().map(Bytes::len))
            .sum();
        self.cached_bytes = self.cached_bytes + added - removed;
        budget.used.fetch_add(added, Ordering::Relaxed);
        budget.used.fetch_sub(removed, Ordering::Relaxed);
        self.index.splice(at..at + count, [entry]);
        if self.first_cached >= at + count {
            self.first_cached -= count - 1;
        } else if self.first_cached > at {
            self.first_cached = at;
        }
    }

    /// The producer state as a list of batches (for a checkpoint).
    /// The producer state a checkpoint keeps: each producer's last batch (as Kafka's
    /// producer snapshots), so its size grows by about 100 bytes per producer. The
    /// manifests after the checkpoint carry the batches before that one that a
    /// retry can still name.
    pub fn checkpoint_producers(&self) -> Vec<ProducerBatch> {
        let mut out: Vec<ProducerBatch> = self
            .producers
            .values()
            .filter_map(|s| s.recent.back().copied())
            .collect();
        out.sort_by_key(|b| b.producer_id);
        out
    }

    /// Forgets everything, returning cached bytes to the budget.
    pub fn clear(&mut self, budget: &TailBudget) {
        budget.used.fetch_sub(self.cached_bytes, Ordering::Relaxed);
        *self = ReadState::default();
    }

    /// The last stable offset: `read_committed` consumers read below it.
    pub fn last_stable_offset(&self) -> i64 {
        self.txns.last_stable(self.high_watermark)
    }

    /// Index position of the entry holding `offset`, if committed.
    pub fn find(&self, offset: i64) -> Option<usize> {
        let i = self.index.partition_point(|e| e.last_offset < offset);
        (i < self.index.len() && self.index[i].base_offset <= offset).then_some(i)
    }
}

/// A partition of a topic; its state is live only while this broker leads it.
#[derive(Debug)]
pub struct Partition {
    pub topic_id: Uuid,
    pub topic: String,
    pub index: i32,
    /// The leader epoch while this broker leads the partition, else -1.
    leader_epoch: AtomicI32,
    write: Mutex<WriteState>,
    read: RwLock<ReadState>,
    /// The budget this partition's cached tail counts against; given back when the
    /// partition goes (its topic deleted, or a compactor's scratch copy dropped).
    tail: Arc<TailBudget>,
}

impl Drop for Partition {
    fn drop(&mut self) {
        let read = self.read.get_mut().unwrap_or_else(|p| p.into_inner());
        self.tail
            .used
            .fetch_sub(read.cached_bytes, Ordering::Relaxed);
    }
}

impl Partition {
    pub fn new(topic_id: Uuid, topic: String, index: i32, tail: Arc<TailBudget>) -> Self {
        Self {
            topic_id,
            topic,
            index,
            leader_epoch: AtomicI32::new(-1),
            write: Mutex::default(),
            read: RwLock::default(),
            tail,
        }
    }

    /// The leader epoch if this broker leads the partition.
    pub fn leader_epoch(&self) -> Option<i32> {
        let e = self.leader_epoch.load(Ordering::Acquire);
        (e >= 0).then_some(e)
    }

    pub(crate) fn set_leader_epoch(&self, epoch: Option<i32>) {
        self.leader_epoch
            .store(epoch.unwrap_or(-1), Ordering::Release);
    }

    /// `NotLeader` unless this broker leads the partition.
    pub fn ensure_leader(&self) -> crate::error::Result<()> {
        match self.leader_epoch() {
            Some(_) => Ok(()),
            None => Err(crate::error::EngineError::NotLeaderForPartition {
                topic: self.topic.clone(),
                partition: self.index,
            }),
        }
    }

    pub fn write(&self) -> MutexGuard<'_, WriteState> {
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn read(&self) -> RwLockReadGuard<'_, ReadState> {
        self.read.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The committed state, if this broker leads the partition. Leadership is
    /// checked under the read lock: a sync clears the epoch before it clears the
    /// state, and installs the state before the epoch, so a reader holding the lock
    /// never sees a cleared or half-installed state as led.
    pub fn read_led(&self) -> crate::error::Result<RwLockReadGuard<'_, ReadState>> {
        let read = self.read();
        self.ensure_leader()?;
        Ok(read)
    }

    pub fn read_mut(&self) -> RwLockWriteGuard<'_, ReadState> {
        self.read.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets assigned-but-uncommitted offsets after a failed flush.
    pub fn reset_write_to_committed(&self) {
        let read = self.read();
        let mut write = self.write();
        write.next_offset = read.high_watermark;
        write.producers = read.producers.clone();
        write.open_txns = read.txns.open_set().clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pb(epoch: i16, first: i32, last: i32, base: i64) -> ProducerBatch {
        ProducerBatch {
            producer_id: 7,
            epoch,
            first_seq: first,
            last_seq: last,
            base_offset: base,
            append_ms: 0,
            txn: false,
        }
    }

    #[test]
    fn sequences() {
        let mut s = ProducerState::default();
        assert_eq!(s.check(&pb(0, 3, 4, 0)), SequenceCheck::Append);
        assert_eq!(s.check(&pb(0, 0, 4, 0)), SequenceCheck::Append);
        s.record(pb(0, 0, 4, 10));
        assert_eq!(s.check(&pb(0, 5, 9, 0)), SequenceCheck::Append);
        assert_eq!(
            s.check(&pb(0, 0, 4, 0)),
            SequenceCheck::Duplicate {
                base_offset: 10,
                append_ms: 0
            }
        );
        assert_eq!(s.check(&pb(0, 7, 9, 0)), SequenceCheck::OutOfOrder);
        s.record(pb(1, 0, 0, 20));
        assert_eq!(s.check(&pb(0, 5, 5, 0)), SequenceCheck::ProducerFenced);
        assert_eq!(s.check(&pb(2, 1, 1, 0)), SequenceCheck::OutOfOrder);
        for i in 1..10 {
            s.record(pb(1, i, i, 20 + i64::from(i)));
        }
        assert_eq!(s.recent.len(), PRODUCER_BATCH_HISTORY);
        let mut w = ProducerState::default();
        w.record(pb(0, i32::MAX - 1, i32::MAX, 0));
        assert_eq!(w.check(&pb(0, 0, 3, 0)), SequenceCheck::Append);
    }

    #[test]
    fn tail_budget_evicts_oldest_and_find_locates_offsets() {
        let mut r = ReadState::default();
        let budget = TailBudget::new(250, 1 << 20);
        let obj = Arc::new(Path::from("o"));
        for i in 0..4 {
            r.append(
                IndexEntry {
                    base_offset: i * 10,
                    last_offset: i * 10 + 9,
                    max_timestamp: 0,
                    object: obj.clone(),
                    object_len: 100,
                    start: 0,
                    len: 100,
                    cached: Some(Bytes::from(vec![0u8; 100])),
                    format: Format::Batches,
                },
                &[],
                &[],
                &budget,
            );
        }
        assert_eq!(budget.used(), 200);
        assert_eq!(r.high_watermark, 40);
        assert!(r.index[0].cached.is_none() && r.index[1].cached.is_none());
        assert!(r.index[2].cached.is_some() && r.index[3].cached.is_some());
        assert_eq!(r.find(0), Some(0));
        assert_eq!(r.find(19), Some(1));
        assert_eq!(r.find(35), Some(3));
        assert_eq!(r.find(40), None);
    }

    #[test]
    fn broker_wide_budget_bounds_many_partitions() {
        let budget = TailBudget::new(1000, 300);
        let obj = Arc::new(Path::from("o"));
        let mut parts: Vec<ReadState> = (0..10).map(|_| ReadState::default()).collect();
        for (i, r) in parts.iter_mut().enumerate() {
            let entry = IndexEntry {
                base_offset: 0,
                last_offset: 0,
                max_timestamp: 0,
                object: obj.clone(),
                object_len: 100,
                start: 0,
                len: 100,
                cached: Some(Bytes::from(vec![0u8; 100])),
                format: Format::Batches,
            };
            r.append(entry, &[], &[], &budget);
            assert!(
                budget.used() <= 300,
                "after partition {i}: {}",
                budget.used()
            );
        }
    }
}
