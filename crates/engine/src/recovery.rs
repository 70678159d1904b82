//! Recovery: a partition's committed state rebuilt from the metadata store, its
//! checkpoint (folded files, producers, revision), the live manifests above it and
//! its log start offset. The cluster follower rebuilds what this broker gains;
//! compaction rebuilds what it compacts for another broker.
//!
//! Invariant: a rebuilt state has dense offsets from the log start (or from the first
//! entry that reaches it) to its high watermark; a partition with a gap is not
//! rebuilt at all.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sluice_meta::MetaStore;
use uuid::Uuid;

use crate::error::Result;
use crate::keyspace::{decode_offset, Checkpoint, Keys, Manifest, Stored};
use crate::partition::{IndexEntry, Partition, ProducerBatch, ReadState, TailBudget, TxnMarker};
use crate::transactions::Transactions;

/// A committed slice read back from a manifest, with its producer batches and
/// transaction markers.
type RecoveredSlice = (IndexEntry, Vec<ProducerBatch>, Vec<TxnMarker>);

/// Reads partitions' committed state back from the metadata store.
#[derive(Clone)]
pub(crate) struct Recovery {
    meta: Arc<dyn MetaStore>,
    keys: Keys,
    tail: Arc<TailBudget>,
}

impl Recovery {
    pub fn new(meta: Arc<dyn MetaStore>, keys: Keys, tail: Arc<TailBudget>) -> Self {
        Self { meta, keys, tail }
    }

    /// Rebuilds the committed state of `gained` partitions from their checkpoints and
    /// the live manifests; `None` for a partition whose committed offsets have a gap
    /// (its other partitions are not held back by it).
    pub async fn rebuild(
        &self,
        gained: &[(Arc<Partition>, i32)],
    ) -> Result<Vec<Option<ReadState>>> {
        let wanted: HashSet<(Uuid, i32)> =
            gained.iter().map(|(p, _)| (p.topic_id, p.index)).collect();
        let mut slices: HashMap<(Uuid, i32), Vec<RecoveredSlice>> = HashMap::new();
        for kv in self.meta.range(&self.keys.manifests()).await? {
            let m = Manifest::from_kv(&kv)?;
            let object = Arc::new(object_store::path::Path::from(m.object.as_str()));
            for s in m.slices {
                let at = (s.slice.topic_id, s.slice.partition);
                if !wanted.contains(&at) {
                    continue;
                }
                let entry = IndexEntry::from_committed(&s.slice, object.clone(), m.object_len);
                slices
                    .entry(at)
                    .or_default()
                    .push((entry, s.producers, s.markers));
            }
        }
        let mut out = Vec::with_capacity(gained.len());
        'partitions: for (p, _) in gained {
            let mut state = ReadState::default();
            // Read after the manifests: a manifest the janitor deleted before that
            // read lies below a `folded_to` this read sees (checkpoints only grow).
            let (checkpoint, checkpoint_rev) = self.stored_checkpoint(p.topic_id, p.index).await?;
            for b in &checkpoint.producers {
                state.producers.entry(b.producer_id).or_default().record(*b);
            }
            state.txns = Transactions::from_checkpoint(&checkpoint.open_txns, &checkpoint.aborted);
            let mut entries: Vec<RecoveredSlice> = checkpoint
                .files
                .iter()
                .map(|f| (IndexEntry::from_folded(f), Vec::new(), Vec::new()))
                .collect();
            entries.extend(
                slices
                    .remove(&(p.topic_id, p.index))
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|(e, _, _)| e.base_offset >= checkpoint.folded_to),
            );
            entries.sort_by_key(|(e, _, _)| e.base_offset);
            state.checkpoint = checkpoint;
            state.checkpoint_rev = checkpoint_rev;
            // The janitor may have deleted manifests wholly below the log start: the
            // log then begins at the first entry that reaches it, or at the log
            // start itself if none does.
            let log_start = self.stored_log_start(p.topic_id, p.index).await?;
            state.log_start_offset = log_start;
            state.high_watermark = entries
                .iter()
                .find(|(e, _, _)| e.last_offset >= log_start)
                .map_or(log_start, |(e, _, _)| e.base_offset.min(log_start));
            for (entry, producers, markers) in entries {
                if entry.last_offset < log_start {
                    // Below the log start: only its producers' sequences and its
                    // transactions matter.
                    for b in &producers {
                        state.producers.entry(b.producer_id).or_default().record(*b);
                    }
                    for m in &markers {
                        state
                            .producers
                            .entry(m.producer_id)
                            .or_default()
                            .marker(m.epoch);
                    }
                    state.txns.apply(&producers, &markers);
                    continue;
                }
                if entry.base_offset != state.high_watermark {
                    tracing::error!(topic = %p.topic, partition = p.index,
                        expected = state.high_watermark, found = entry.base_offset,
                        "gap in committed offsets; the partition is not led");
                    state.clear(&self.tail);
                    out.push(None);
                    continue 'partitions;
                }
                state.append(entry, &producers, &markers, &self.tail);
            }
            state.txns.truncate_before(log_start);
            out.push(Some(state));
        }
        Ok(out)
    }

    /// The stored checkpoint of a partition (empty if it was never folded) and the
    /// revision its commits compare (0: none yet).
    pub async fn stored_checkpoint(
        &self,
        topic: uuid::Uuid,
        partition: i32,
    ) -> Result<(Checkpoint, i64)> {
        let key = self.keys.checkpoint(topic, partition);
        match self.meta.get(&key).await? {
            None => Ok((Checkpoint::default(), 0)),
            Some(kv) => Ok((Checkpoint::from_kv(&kv)?, kv.mod_revision)),
        }
    }

    /// The stored log start offset of a partition (0 if never moved).
    pub async fn stored_log_start(&self, topic: Uuid, partition: i32) -> Result<i64> {
        Ok(self
            .meta
            .get(&self.keys.log_start(topic, partition))
            .await?
            .map_or(0, |kv| decode_offset(&kv.value)))
    }
}
