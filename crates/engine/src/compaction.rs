//! Compaction: each partition's compactor (its leader, or with `--roles` a
//! compactor-only broker) folds its history out of the shared write-ahead objects
//! into objects of its own, so old manifests (one metadata key per flush) can go and
//! old data is laid out for reading.
//!
//! Three rewrites, each of a run of the partition's oldest index entries:
//! - **segment**: write-ahead slices, concatenated as they are into
//!   `seg/<topic-id>/<p>/…seg`, once a partition has [`SEGMENT_ENTRIES`] of them (or
//!   [`FOLD_MIN_BYTES`], or its oldest has waited the maximum delay); the newest
//!   entry (the active segment) is never folded;
//! - **lake**: record batches older than the topic's `sluice.lake.after.ms`
//!   (write-ahead slices or segments), rewritten as Parquet under
//!   `lake/<topic>/partition=<p>/…parquet` (see `sluice-lake`). The Parquet file is
//!   then the one copy of those records: fetches read it back as batches;
//! - **cleaning** (`cleanup.policy=compact`): the history before the active segment,
//!   keeping the latest record per key.
//!
//! A rewrite writes its object, then commits `checkpoint/<topic-id>/<p>`
//! ([`Checkpoint`]: the partition's files, `folded_to`, `cleaned_to`, its producer
//! state) in one transaction that compares the checkpoint's revision as the rewrite
//! read it, the janitor's `gc/horizon` revision and, on the leader, the broker's
//! generation as it was before the rewrite; then it swaps the run for the new entry
//! in the offset index. A leader adopts checkpoints a compactor-only broker wrote.
//!
//! Invariants:
//! - Every checkpoint write compares the revision its writer last saw, so a leader
//!   and a compactor never overwrite each other, and a leader that lost the
//!   partition (its generation was bumped) cannot overwrite its successor's.
//! - The checkpoint lists files in offset order, contiguous with each other and
//!   with the manifests' slices from `folded_to` on; the janitor deletes a manifest
//!   only when each of its slices lies below `max(log start, folded_to)`.
//! - A file leaves the checkpoint only when it is below the log start or replaced by
//!   a file holding the same offsets; unreferenced files are deleted by the
//!   janitor's orphan rule after the grace period.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use sluice_meta::{Compare, Op, Txn};
use sluice_protocol::batch;
use sluice_protocol::records::{decode_batch, Record, MAX_PLAIN_BYTES};
use sluice_storage::paths;

use crate::keyspace::{AbortedTxn, Fence, Stored};
pub use crate::keyspace::{Checkpoint, FoldedFile};
use crate::partition::{Format, IndexEntry, Partition, ReadState};
use crate::util::blocking;
use crate::{Engine, EngineError, Result, TopicRecord};

pub use crate::topics::LAKE_AFTER_MS;

/// Write-ahead slices a partition gathers before they are folded into a segment.
pub const SEGMENT_ENTRIES: usize = 64;
/// Record bytes that make a fold worth doing before it is due by age.
pub const FOLD_MIN_BYTES: u64 = 8 << 20;
/// Record bytes one fold reads at most (one segment or lake file).
pub const FOLD_MAX_BYTES: u64 = 64 << 20;
/// Record bytes one cleaning (log compaction) rewrites at most.
pub const CLEAN_MAX_BYTES: u64 = 256 << 20;
/// Folds of one partition per round, so one busy partition cannot stall the rest.
const FOLDS_PER_ROUND: usize = 8;
/// Entries read at once while folding.
const READ_CONCURRENCY: usize = 8;

/// When folds are due.
#[derive(Debug, Clone, Copy)]
pub struct FoldPolicy {
    pub now_ms: i64,
    /// Records with a timestamp at or before this go to the lake (None: never).
    pub lake_cutoff: Option<i64>,
    /// A run whose oldest record is older than this (by its timestamp) is folded
    /// whatever its size.
    pub max_wait_ms: i64,
}

/// The next run of index entries to fold, and into what.
pub fn plan(index: &[IndexEntry], policy: FoldPolicy) -> Option<(std::ops::Range<usize>, Format)> {
    let first = index.iter().position(|e| e.format == Format::Batches)?;
    // A run of `entries` from `from` while `take` holds, within the byte cap.
    let run = |entries: &[IndexEntry], from: usize, take: &dyn Fn(&IndexEntry) -> bool| {
        let (mut end, mut bytes) = (from, 0u64);
        while end < entries.len() && take(&entries[end]) && bytes < FOLD_MAX_BYTES {
            bytes += entries[end].len;
            end += 1;
        }
        (end, bytes)
    };
    let waited = |e: &IndexEntry, reference: i64| {
        reference.saturating_sub(e.max_timestamp) >= policy.max_wait_ms
    };
    if let Some(cutoff) = policy.lake_cutoff {
        let (end, bytes) = run(index, first, &|e| {
            e.format == Format::Batches && e.max_timestamp <= cutoff
        });
        if end > first
            && (bytes >= FOLD_MIN_BYTES
                || end - first >= SEGMENT_ENTRIES
                || waited(&index[first], cutoff))
        {
            return Some((first..end, Format::Parquet));
        }
    }
    // Segments leave the newest entry alone: it stays the partition's active
    // segment for retention and log compaction, which spare it.
    let unfolded = &index[..index.len() - 1];
    let wal = first + unfolded.get(first..)?.iter().position(IndexEntry::in_wal)?;
    let (end, bytes) = run(unfolded, wal, &IndexEntry::in_wal);
    let due = bytes >= FOLD_MIN_BYTES
        || end - wal >= SEGMENT_ENTRIES
        || waited(&index[wal], policy.now_ms);
    (end > wal && due).then_some((wal..end, Format::Batches))
}

impl Engine {
    /// One compaction round: every partition is folded (and cleaned, if its topic
    /// is compacted) by its compactor ([`ClusterView::compactor`]): its leader when
    /// the leader has the compactor role, else a compactor-only broker, working
    /// from a state rebuilt from the metadata store. Leaders adopt checkpoints
    /// written by others.
    ///
    /// [`ClusterView::compactor`]: crate::cluster::ClusterView::compactor
    pub async fn compact(&self) {
        let now_ms = self.cfg.clock.now_ms();
        let max_wait_ms = i64::try_from(self.cfg.compaction_interval.as_millis())
            .unwrap_or(i64::MAX)
            .saturating_mul(10);
        let view = self.view();
        let me = Some(self.cfg.broker_id);
        let mut remote: Vec<(Arc<crate::Topic>, Arc<Partition>)> = Vec::new();
        let mut adopt: Vec<Arc<Partition>> = Vec::new();
        for topic in self.topics() {
            for p in &topic.partitions {
                let ours = view.compactor(p.topic_id, p.index) == me;
                match (p.leader_epoch().is_some(), ours) {
                    (true, true) => {
                        self.compact_led(&topic.record, p, now_ms, max_wait_ms)
                            .await
                    }
                    (true, false) => adopt.push(p.clone()),
                    (false, true) => remote.push((topic.clone(), p.clone())),
                    (false, false) => {}
                }
            }
        }
        if let Err(e) = self.adopt_checkpoints(&adopt).await {
            tracing::warn!(error = %e, "cannot adopt checkpoints");
        }
        if let Err(e) = self.compact_remote(&remote, now_ms, max_wait_ms).await {
            tracing::warn!(error = %e, "cannot compact partitions led elsewhere");
        }
    }

    async fn compact_led(&self, topic: &TopicRecord, p: &Partition, now_ms: i64, max_wait_ms: i64) {
        let policy = fold_policy(topic, now_ms, max_wait_ms);
        if topic.has_cleanup_policy("compact") {
            if let Err(e) = self.clean(topic, p, now_ms).await {
                tracing::warn!(topic = %p.topic, partition = p.index, error = %e,
                    "cannot compact the log");
            }
        }
        for _ in 0..FOLDS_PER_ROUND {
            match self.fold(topic, p, policy).await {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    tracing::warn!(topic = %p.topic, partition = p.index, error = %e,
                        "cannot fold");
                    break;
                }
            }
        }
    }

    /// Compacts partitions led by brokers without the compactor role, from states
    /// rebuilt from the metadata store (one read of the manifests for all).
    async fn compact_remote(
        &self,
        partitions: &[(Arc<crate::Topic>, Arc<Partition>)],
        now_ms: i64,
        max_wait_ms: i64,
    ) -> Result<()> {
        if partitions.is_empty() {
            return Ok(());
        }
        // Shadows: this broker's state of a partition it does not lead.
        let shadows: Vec<(Arc<Partition>, i32)> = partitions
            .iter()
            .map(|(_, p)| {
                (
                    Arc::new(Partition::new(
                        p.topic_id,
                        p.topic.clone(),
                        p.index,
                        self.tail.clone(),
                    )),
                    0,
                )
            })
            .collect();
        let states = self.recovery.rebuild(&shadows).await?;
        for ((topic, p), state) in partitions.iter().zip(states) {
            let Some(mut state) = state else {
                continue;
            };
            let record = &topic.record;
            let policy = fold_policy(record, now_ms, max_wait_ms);
            // Another broker leads it: only the janitor's horizon fences this write
            // (the checkpoint's revision orders it against the leader's).
            let fence = self.fence();
            let result = async {
                if record.has_cleanup_policy("compact") {
                    let target = Target::Remote {
                        state: &mut state,
                        fence: fence.clone(),
                    };
                    self.clean_in(record, p, target, now_ms).await?;
                }
                for _ in 0..FOLDS_PER_ROUND {
                    let target = Target::Remote {
                        state: &mut state,
                        fence: fence.clone(),
                    };
                    if !self.fold_in(record, p, target, policy).await? {
                        break;
                    }
                }
                Ok::<_, EngineError>(())
            }
            .await;
            if let Err(e) = result {
                tracing::warn!(topic = %p.topic, partition = p.index, error = %e,
                    "cannot fold a partition led elsewhere");
            }
        }
        Ok(())
    }

    /// Brings led partitions' offset indexes up to checkpoints another broker (their
    /// compactor) committed: entries a new file covers are swapped for it.
    async fn adopt_checkpoints(&self, partitions: &[Arc<Partition>]) -> Result<()> {
        if partitions.is_empty() {
            return Ok(());
        }
        let stored: std::collections::HashMap<(uuid::Uuid, i32), sluice_meta::KeyValue> = self
            .meta
            .range(&self.keys.checkpoints())
            .await?
            .into_iter()
            .filter_map(|kv| Some((self.keys.checkpoint_partition(&kv.key)?, kv)))
            .collect();
        let _serial = self.log_start_lock.lock().await;
        for p in partitions {
            if let Some(kv) = stored.get(&(p.topic_id, p.index)) {
                self.adopt(p, kv)?;
            }
        }
        Ok(())
    }

    /// Adopts the stored checkpoint `kv` of a led partition if it is newer than the
    /// one its index reflects. Called with the log start lock held.
    pub(crate) fn adopt(&self, p: &Partition, kv: &sluice_meta::KeyValue) -> Result<()> {
        if kv.mod_revision == p.read().checkpoint_rev {
            return Ok(());
        }
        let checkpoint = Checkpoint::from_kv(kv)?;
        let mut read = p.read_mut();
        for file in &checkpoint.files {
            // The index is in offset order: the entries the file covers are a run.
            let Some(at) = read.index.iter().position(|e| {
                e.base_offset >= file.base_offset && e.last_offset <= file.last_offset
            }) else {
                continue;
            };
            if AsRef::<str>::as_ref(&*read.index[at].object) == file.object {
                continue;
            }
            let count = read.index[at..]
                .iter()
                .take_while(|e| e.last_offset <= file.last_offset)
                .count();
            read.replace_run(at, count, IndexEntry::from_folded(file), &self.tail);
        }
        read.txns.checkpointed(checkpoint.folded_to);
        read.checkpoint = checkpoint;
        read.checkpoint_rev = kv.mod_revision;
        Ok(())
    }

    /// Folds the partition's next due run, if any (this broker leads it). Returns
    /// whether it folded.
    pub async fn fold(
        &self,
        topic: &TopicRecord,
        p: &Partition,
        policy: FoldPolicy,
    ) -> Result<bool> {
        let Some(fence) = LeaderFence::take(self, p) else {
            return Ok(false);
        };
        // Retention moves the log start (and drops entries) under this lock too.
        let _serial = self.log_start_lock.lock().await;
        self.fold_in(topic, p, Target::Led { p, fence }, policy)
            .await
    }

    async fn fold_in(
        &self,
        topic: &TopicRecord,
        p: &Partition,
        mut target: Target<'_>,
        policy: FoldPolicy,
    ) -> Result<bool> {
        let Some((run, format, log_start, aborted)) = target.with_state(|read| {
            // Nothing at or past the last stable offset is folded: an open
            // transaction's records may still be aborted.
            let (range, format) = plan(stable(read), policy)?;
            let run = read.index[range].to_vec();
            let aborted = aborted_in(read, &run);
            Some((run, format, read.log_start_offset, aborted))
        }) else {
            return Ok(false);
        };
        let datas = self.read_entries(&run).await?;
        let cache = format == Format::Batches && run.iter().all(|e| e.cached.is_some());
        let (body, records) = match format {
            Format::Batches => (crate::util::concat(datas), 0),
            Format::Parquet => {
                let partition = p.index;
                blocking(move || {
                    let records = records_of(&datas, log_start, &aborted)?;
                    let rows = records.len() as u64;
                    Ok((lake_bytes(partition, &records)?, rows))
                })
                .await?
            }
        };
        let rewrite = Rewrite {
            format,
            body,
            records,
            cache,
            cleaned_to: None,
            batch_len: None,
        };
        self.install_rewrite(topic, p, &mut target, &run, rewrite)
            .await
    }

    /// Log compaction (`cleanup.policy` with `compact`): rewrites the partition's
    /// history before its active segment keeping, per key, only the record with the
    /// latest offset, and dropping tombstones older than `delete.retention.ms`
    /// (by record timestamp). Runs when the share of bytes not cleaned before
    /// reaches `min.cleanable.dirty.ratio`. Returns whether it rewrote anything.
    pub async fn clean(&self, topic: &TopicRecord, p: &Partition, now_ms: i64) -> Result<bool> {
        let Some(fence) = LeaderFence::take(self, p) else {
            return Ok(false);
        };
        let _serial = self.log_start_lock.lock().await;
        self.clean_in(topic, p, Target::Led { p, fence }, now_ms)
            .await
    }

    async fn clean_in(
        &self,
        topic: &TopicRecord,
        p: &Partition,
        mut target: Target<'_>,
        now_ms: i64,
    ) -> Result<bool> {
        let ratio = topic
            .config_number("min.cleanable.dirty.ratio")
            .unwrap_or(0.5);
        let lags = Lags::of(topic, now_ms);
        let tombstone_ms = topic
            .config_number("delete.retention.ms")
            .unwrap_or(86_400_000);
        let Some((run, log_start, whole, aborted)) = target.with_state(|read| {
            let range = clean_plan(stable(read), read.checkpoint.cleaned_to, lags, ratio)?;
            let whole = range.start == 0;
            let run = read.index[range].to_vec();
            let aborted = aborted_in(read, &run);
            Some((run, read.log_start_offset, whole, aborted))
        }) else {
            return Ok(false);
        };
        let datas = self.read_entries(&run).await?;
        let format = if run.iter().any(|e| e.format == Format::Parquet) {
            Format::Parquet
        } else {
            Format::Batches
        };
        // A tombstone may go only when the run starts the log: older values of its
        // key may lie before a run that does not.
        let horizon = if whole {
            now_ms.saturating_sub(tombstone_ms)
        } else {
            i64::MIN
        };
        let partition = p.index;
        let (body, records, batch_len) = blocking(move || {
            let kept = latest_per_key(records_of(&datas, log_start, &aborted)?, horizon);
            let rows = kept.len() as u64;
            // A cleaned file is sized by what it keeps, as batches, whatever its
            // format: retention and the next cleaning's ratio count real bytes.
            let batches = crate::read::encode_batches(&kept);
            let batch_len = batches.len() as u64;
            let body = match format {
                Format::Batches => batches,
                Format::Parquet => lake_bytes(partition, &kept)?,
            };
            Ok((body, rows, batch_len))
        })
        .await?;
        let cleaned_to = run.last().map(|e| e.last_offset + 1);
        let rewrite = Rewrite {
            format,
            body,
            records,
            cache: false,
            cleaned_to,
            batch_len: Some(batch_len),
        };
        let done = self
            .install_rewrite(topic, p, &mut target, &run, rewrite)
            .await?;
        if done {
            self.metrics.cleanings.fetch_add(1, Relaxed);
        }
        Ok(done)
    }

    /// The batches of `run`, whole (every row group of a lake file).
    async fn read_entries(&self, run: &[IndexEntry]) -> Result<Vec<Bytes>> {
        futures::stream::iter(run.to_vec())
            .map(|e| async move {
                match e.format {
                    Format::Batches => self.reads.entry_bytes(&e, e.base_offset).await,
                    Format::Parquet => self.reads.lake_all_batches(&e).await,
                }
            })
            .buffered(READ_CONCURRENCY)
            .try_collect()
            .await
    }

    /// Writes a rewrite of `run` as one object, commits the checkpoint that swaps it
    /// in (comparing the checkpoint's revision, the janitor's horizon and, for a led
    /// partition, the generation), and swaps it into the target's offset index.
    /// For a led partition, called with the log start lock held.
    async fn install_rewrite(
        &self,
        topic: &TopicRecord,
        p: &Partition,
        target: &mut Target<'_>,
        run: &[IndexEntry],
        rw: Rewrite,
    ) -> Result<bool> {
        let (Some(first), Some(last)) = (run.first(), run.last()) else {
            return Ok(false);
        };
        let (base, last_offset) = (first.base_offset, last.last_offset);
        let id = ulid::Ulid::new();
        let object = match rw.format {
            Format::Batches => paths::segment(&topic.id.to_string(), p.index, base, id),
            Format::Parquet => paths::lake_file(&topic.name, p.index, base, last_offset, id),
        };
        let file = FoldedFile {
            object: object.to_string(),
            object_len: rw.body.len() as u64,
            format: rw.format,
            base_offset: base,
            last_offset,
            max_timestamp: run.iter().map(|e| e.max_timestamp).max().unwrap_or(-1),
            len: rw
                .batch_len
                .unwrap_or_else(|| run.iter().map(|e| e.len).sum()),
            records: rw.records,
        };
        self.store.put(&object, rw.body.clone().into()).await?;

        let (checkpoint, rev) = target.with_state(|read| {
            let mut c = read.checkpoint.clone();
            c.files.retain(|f| {
                f.last_offset >= read.log_start_offset
                    && !(f.base_offset >= base && f.last_offset <= last_offset)
            });
            c.files.push(file.clone());
            c.files.sort_by_key(|f| f.base_offset);
            c.folded_to = c.folded_to.max(last_offset + 1);
            if let Some(to) = rw.cleaned_to {
                c.cleaned_to = c.cleaned_to.max(to);
            }
            c.producers = read.checkpoint_producers();
            (c.open_txns, c.aborted) = read.txns.checkpoint_at(c.folded_to);
            (c, read.checkpoint_rev)
        });
        let key = self.keys.checkpoint(p.topic_id, p.index);
        let value = checkpoint.encode();
        let mut compares = vec![Compare::ModRevision(key.clone(), rev)];
        compares.extend(match target {
            Target::Led { fence, .. } => fence.fence.leader_and_gc(),
            Target::Remote { fence, .. } => vec![fence.gc_unmoved()],
        });
        let txn = Txn::when(compares).then(vec![Op::put(key.clone(), value.clone())]);
        let new_rev = match self.meta.txn(txn).await {
            Ok(r) if r.succeeded => r.revision,
            Ok(_) => {
                // Leadership moved, another compactor or the leader wrote first, or
                // the janitor fenced writes of older objects: the object is an orphan
                // now, and the next round tries again. A leader adopts what another
                // wrote, or it would compare a stale revision for ever.
                if let Target::Led { p, .. } = target {
                    if let Ok(Some(kv)) = self.meta.get(&key).await {
                        if let Err(e) = self.adopt(p, &kv) {
                            tracing::warn!(topic = %p.topic, partition = p.index, error = %e,
                                "cannot adopt the stored checkpoint");
                        }
                    }
                }
                return Ok(false);
            }
            // Unknown outcome: the stored value says whether it landed.
            Err(e) => match self.meta.get(&key).await {
                Ok(Some(kv)) if kv.value[..] == value[..] => kv.mod_revision,
                _ => return Err(e.into()),
            },
        };

        let swapped = target.swap(
            self,
            run,
            base,
            last_offset,
            IndexEntry::from_folded(&file),
            rw,
            checkpoint,
            new_rev,
        );
        if !swapped {
            tracing::warn!(topic = %p.topic, partition = p.index, base, "index changed under a fold");
            return Ok(false);
        }
        let counter = match file.format {
            Format::Batches => &self.metrics.folds_segment,
            Format::Parquet => &self.metrics.folds_lake,
        };
        counter.fetch_add(1, Relaxed);
        tracing::debug!(topic = %p.topic, partition = p.index, base, last = last_offset,
            object = %object, "folded");
        Ok(true)
    }

    /// Folds due runs every `interval`, until the engine is dropped. (Publishing the
    /// lake's Iceberg tables, [`Engine::publish_tables`], is a controller duty:
    /// `sluice-control` runs it.)
    pub fn start_compaction(self: &Arc<Self>, interval: Duration) {
        self.every(interval, (), |engine, _| {
            Box::pin(async move {
                engine.compact().await;
            })
        });
    }
}

/// Whose state a rewrite works from, and how its result is installed.
enum Target<'a> {
    /// A partition this broker leads: its live state, swapped in place.
    Led {
        p: &'a Partition,
        fence: LeaderFence,
    },
    /// A partition another broker leads (`--roles`): a state rebuilt from the
    /// metadata store, updated here for the next fold of the round; the leader
    /// adopts the checkpoint.
    Remote {
        state: &'a mut ReadState,
        fence: Fence,
    },
}

impl Target<'_> {
    fn with_state<R>(&self, f: impl FnOnce(&ReadState) -> R) -> R {
        match self {
            Target::Led { p, .. } => f(&p.read()),
            Target::Remote { state, .. } => f(state),
        }
    }

    /// Swaps the committed rewrite into the index; false if the run is not where
    /// it was (the partition moved away meanwhile).
    #[allow(clippy::too_many_arguments)]
    fn swap(
        &mut self,
        engine: &Engine,
        run: &[IndexEntry],
        base: i64,
        last_offset: i64,
        mut entry: IndexEntry,
        rw: Rewrite,
        checkpoint: Checkpoint,
        rev: i64,
    ) -> bool {
        let install = |read: &mut ReadState, entry: IndexEntry| {
            let at = read.index.iter().position(|e| e.base_offset == base);
            let Some(at) = at.filter(|at| {
                read.index
                    .get(at + run.len() - 1)
                    .is_some_and(|e| e.last_offset == last_offset)
            }) else {
                return false;
            };
            read.replace_run(at, run.len(), entry, &engine.tail);
            read.txns.checkpointed(checkpoint.folded_to);
            read.checkpoint = checkpoint;
            read.checkpoint_rev = rev;
            true
        };
        match self {
            Target::Led { p, fence } => {
                let mut read = p.read_mut();
                if p.leader_epoch() != Some(fence.epoch) {
                    return false;
                }
                if rw.cache {
                    entry.cached = Some(rw.body);
                }
                install(&mut read, entry)
            }
            Target::Remote { state, .. } => install(state, entry),
        }
    }
}

fn fold_policy(topic: &TopicRecord, now_ms: i64, max_wait_ms: i64) -> FoldPolicy {
    let lake_cutoff = topic
        .config_number::<i64>(LAKE_AFTER_MS)
        .filter(|v| *v >= 0)
        .map(|after| now_ms.saturating_sub(after));
    FoldPolicy {
        now_ms,
        lake_cutoff,
        max_wait_ms,
    }
}

/// What a fold or a cleaning writes in place of a run of entries.
struct Rewrite {
    format: Format,
    body: Bytes,
    /// Rows, for a lake file.
    records: u64,
    /// Keep the bytes in the in-memory tail (every folded entry was there).
    cache: bool,
    /// For a cleaning: the offset it cleaned up to.
    cleaned_to: Option<i64>,
    /// Record-batch bytes of what it holds; `None` for a fold, which holds its
    /// inputs whole.
    batch_len: Option<u64>,
}

/// What a led partition's rewrite checks, taken before anything is read: the
/// leader epoch (checked when swapping the result in) and the broker generation and
/// janitor's horizon (compared by the commit) as they were.
struct LeaderFence {
    epoch: i32,
    fence: Fence,
}

impl LeaderFence {
    fn take(engine: &Engine, p: &Partition) -> Option<Self> {
        Some(Self {
            epoch: p.leader_epoch()?,
            fence: engine.fence(),
        })
    }
}

/// The records of stored batches at or above the log start.
/// The committed records of `datas` at or past the log start: what a lake file or a
/// cleaned file keeps. Markers and the records of aborted transactions go, as
/// Kafka's cleaner removes them.
fn records_of(datas: &[Bytes], log_start: i64, aborted: &[AbortedTxn]) -> Result<Vec<Record>> {
    let corrupt = |e: String| EngineError::Storage(format!("stored batch unreadable: {e}"));
    let mut records: Vec<Record> = Vec::new();
    for data in datas {
        for b in batch::iter_batches(data) {
            let (h, bytes) = b.map_err(|e| corrupt(e.to_string()))?;
            if h.is_control() || (h.is_transactional() && is_aborted(&h, aborted)) {
                continue;
            }
            records.extend(
                decode_batch(&bytes, MAX_PLAIN_BYTES)
                    .map_err(|e| corrupt(e.to_string()))?
                    .into_iter()
                    .filter(|r| r.offset >= log_start),
            );
        }
    }
    Ok(records)
}

/// Whether a transactional batch belongs to one of the aborted transactions.
fn is_aborted(h: &batch::BatchHeader, aborted: &[AbortedTxn]) -> bool {
    aborted.iter().any(|a| {
        a.producer_id == h.producer_id
            && a.first_offset <= h.base_offset
            && h.base_offset <= a.last_offset
    })
}

/// The index entries wholly below the last stable offset.
fn stable(read: &ReadState) -> &[IndexEntry] {
    let lso = read.last_stable_offset();
    &read.index[..read.index.partition_point(|e| e.last_offset < lso)]
}

/// The aborted transactions with records in `run`.
fn aborted_in(read: &ReadState, run: &[IndexEntry]) -> Vec<AbortedTxn> {
    match (run.first(), run.last()) {
        (Some(first), Some(last)) => read
            .txns
            .aborted_overlapping(first.base_offset, last.last_offset),
        _ => Vec::new(),
    }
}

fn lake_bytes(partition: i32, records: &[Record]) -> Result<Bytes> {
    sluice_lake::write(partition, records, sluice_lake::WriteOptions::default())
        .map_err(|e| EngineError::Storage(e.to_string()))
}

/// Log compaction of `records` (offsets ascending): per key, the record with the
/// latest offset; a tombstone (null value) only if its timestamp is at or after
/// `tombstone_horizon`. Records without a key are kept.
pub fn latest_per_key(records: Vec<Record>, tombstone_horizon: i64) -> Vec<Record> {
    let mut latest: std::collections::HashMap<Bytes, i64> = std::collections::HashMap::new();
    for r in &records {
        if let Some(k) = &r.key {
            latest.insert(k.clone(), r.offset);
        }
    }
    records
        .into_iter()
        .filter(|r| match &r.key {
            None => true,
            Some(k) => {
                latest.get(k) == Some(&r.offset)
                    && (r.value.is_some() || r.timestamp >= tombstone_horizon)
            }
        })
        .collect()
}

/// When a compacted topic's records may and must be cleaned.
#[derive(Debug, Clone, Copy)]
pub struct Lags {
    /// What is never cleaned (it rolls by `max.compaction.lag.ms` too).
    active: crate::retention::ActiveSegment,
    /// Entries holding records after this are not cleaned yet
    /// (`min.compaction.lag.ms`).
    newest: i64,
    /// A dirty entry whose records are all before this is cleaned whatever the
    /// ratio (`max.compaction.lag.ms`).
    overdue: i64,
}

impl Lags {
    pub fn of(topic: &TopicRecord, now_ms: i64) -> Self {
        let min_lag = topic
            .config_number::<i64>("min.compaction.lag.ms")
            .unwrap_or(0);
        let max_lag = topic
            .config_number::<i64>("max.compaction.lag.ms")
            .unwrap_or(i64::MAX);
        Self {
            active: crate::retention::ActiveSegment::of(topic, now_ms),
            newest: now_ms.saturating_sub(min_lag.max(0)),
            overdue: now_ms.saturating_sub(max_lag),
        }
    }
}

/// The run a cleaning rewrites. What may be cleaned is the log before its active
/// segment up to the first entry with records newer than `min.compaction.lag.ms`.
/// It is cleaned once the bytes at or past `cleaned_to` are at least `ratio` of it,
/// or once a dirty entry is older than `max.compaction.lag.ms`: the whole of it when
/// at most [`CLEAN_MAX_BYTES`], else its newest entries that fit (at least two), so
/// that what is dirty is always in the run, however large the cleaned head has grown.
pub fn clean_plan(
    index: &[IndexEntry],
    cleaned_to: i64,
    lags: Lags,
    ratio: f64,
) -> Option<std::ops::Range<usize>> {
    let active = lags.active.start(index);
    let end = index[..active]
        .iter()
        .position(|e| e.max_timestamp > lags.newest)
        .unwrap_or(active);
    let cleanable = &index[..end];
    let total: u64 = cleanable.iter().map(|e| e.len).sum();
    let dirty = || cleanable.iter().filter(|e| e.last_offset >= cleaned_to);
    let dirty_bytes: u64 = dirty().map(|e| e.len).sum();
    let overdue = dirty().any(|e| e.max_timestamp < lags.overdue);
    if dirty_bytes == 0 || ((dirty_bytes as f64) < ratio * total as f64 && !overdue) {
        return None;
    }
    let mut start = end;
    let mut bytes = 0u64;
    while start > 0 && (end - start < 2 || bytes + cleanable[start - 1].len <= CLEAN_MAX_BYTES) {
        start -= 1;
        bytes += cleanable[start].len;
    }
    Some(start..end)
}

#[cfg(test)]
mod tests {
    use object_store::path::Path;

    use super::*;

    fn entry(base: i64, ts: i64, len: u64, object: &str, format: Format) -> IndexEntry {
        IndexEntry {
            base_offset: base,
            last_offset: base + 9,
            max_timestamp: ts,
            object: Arc::new(Path::from(object)),
            object_len: 1000,
            start: 0,
            len,
            cached: None,
            format,
        }
    }

    fn policy(now_ms: i64, lake_cutoff: Option<i64>) -> FoldPolicy {
        FoldPolicy {
            now_ms,
            lake_cutoff,
            max_wait_ms: 1_000,
        }
    }

    /// Before, the run always began at the first entry and stopped at 256 MiB, and
    /// the ratio was taken inside it: once the cleaned head passed 128 MiB the
    /// dirty share of the run could never reach 0.5, and cleaning stopped for good.
    #[test]
    fn cleaning_weighs_the_whole_log_and_always_reaches_the_dirty_part() {
        const MIB: u64 = 1 << 20;
        let e = |i: i64, len| entry(i * 10, 0, len, "seg", Format::Batches);
        // A cleaned head of 200 MiB (up to offset 10), then 250 MiB of updates and
        // an active segment.
        let mut log = vec![e(0, 200 * MIB)];
        log.extend((1..=25).map(|i| e(i, 10 * MIB)));
        log.push(e(26, MIB));
        let lags = lags(MIB as i64, i64::MAX, i64::MIN);
        let run = clean_plan(&log, 10, lags, 0.5).expect("cleans");
        assert_eq!(run, 1..26, "the dirty entries, which fit, without the head");
        // Under the ratio over the whole log: nothing.
        assert_eq!(clean_plan(&log[..10], 10, lags, 0.5), None);
        // A small log is cleaned whole.
        let small: Vec<IndexEntry> = (0..5).map(|i| e(i, MIB)).collect();
        assert_eq!(clean_plan(&small, 10, lags, 0.5), Some(0..4));
        // Nothing dirty: nothing to do.
        assert_eq!(clean_plan(&small, 1_000, lags, 0.0), None);
    }

    fn lags(segment_bytes: i64, newest: i64, overdue: i64) -> Lags {
        Lags {
            active: crate::retention::ActiveSegment {
                bytes: segment_bytes,
                rolled_before: i64::MIN,
            },
            newest,
            overdue,
        }
    }

    /// `min.compaction.lag.ms` keeps records that young out of a cleaning;
    /// `max.compaction.lag.ms` cleans what is older whatever the dirty ratio.
    #[test]
    fn compaction_lags_bound_what_is_cleaned_and_when() {
        // Entries with records at t = 0, 1000, ..., 5000; the last is active.
        let log: Vec<IndexEntry> = (0..6)
            .map(|i| entry(i * 10, i * 1_000, 100, "seg", Format::Batches))
            .collect();
        let at = |newest, overdue| lags(1, newest, overdue);
        assert_eq!(clean_plan(&log, 0, at(i64::MAX, i64::MIN), 0.5), Some(0..5));
        // Records after t = 2500 are too young: the run stops before them.
        assert_eq!(clean_plan(&log, 0, at(2_500, i64::MIN), 0.5), Some(0..3));
        // One dirty entry of five is under the ratio...
        assert_eq!(clean_plan(&log, 40, at(i64::MAX, i64::MIN), 0.5), None);
        // ...but cleaned once older than the maximum lag.
        assert_eq!(clean_plan(&log, 40, at(i64::MAX, 5_000), 0.5), Some(0..5));
    }

    #[test]
    fn plans_segments_by_count_size_or_age() {
        let wal = |i: i64, ts| entry(i * 10, ts, 100, "wal/0/1/x.wal", Format::Batches);
        let few: Vec<IndexEntry> = (0..5).map(|i| wal(i, 10_000)).collect();
        assert_eq!(plan(&few, policy(10_500, None)), None);
        // Old enough: folded whatever the size, but for the newest entry.
        assert_eq!(
            plan(&few, policy(11_000, None)),
            Some((0..4, Format::Batches))
        );
        assert_eq!(plan(&few[..1], policy(11_000, None)), None);
        let many: Vec<IndexEntry> = (0..70).map(|i| wal(i, 10_000)).collect();
        assert_eq!(
            plan(&many, policy(10_000, None)),
            Some((0..69, Format::Batches))
        );
        // Already folded entries are skipped.
        let mut mixed = vec![
            entry(0, 1, 100, "lake/t/partition=0/a.parquet", Format::Parquet),
            entry(10, 1, 100, "seg/x/0/b.seg", Format::Batches),
        ];
        mixed.extend((2..5).map(|i| wal(i, 1)));
        assert_eq!(
            plan(&mixed, policy(10_000, None)),
            Some((2..4, Format::Batches))
        );
        // Past the lake cutoff: segments and slices alike become Parquet, the
        // newest entry included.
        assert_eq!(
            plan(&mixed, policy(10_000, Some(5_000))),
            Some((1..5, Format::Parquet))
        );
        // Nothing old enough for the lake: segments as usual.
        assert_eq!(
            plan(&mixed, policy(10_000, Some(0))),
            Some((2..4, Format::Batches))
        );
    }

    #[test]
    fn lake_runs_stop_at_young_records_and_the_byte_cap() {
        let big = FOLD_MAX_BYTES / 4;
        let index: Vec<IndexEntry> = (0..10)
            .map(|i| entry(i * 10, i * 100, big, "wal/0/1/x.wal", Format::Batches))
            .collect();
        assert_eq!(
            plan(&index, policy(100_000, Some(250))),
            Some((0..3, Format::Parquet))
        );
        assert_eq!(
            plan(&index, policy(100_000, Some(100_000))),
            Some((0..4, Format::Parquet))
        );
    }
}
