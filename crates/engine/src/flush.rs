//! Flush and commit: the pipelined group commit.
//!
//! The flusher takes everything buffered as soon as a flush slot is free (after an
//! optional linger), writes it as ONE create-only WAL object, and hands it to the
//! committer. The committer takes flushes strictly in order, waits for each object,
//! commits ONE manifest conditional on this broker's epoch, applies it to the
//! partitions, and only then acknowledges the producers. While one object is being
//! written, new batches accumulate for the next; up to `max_inflight_flushes` objects
//! are written at once.
//!
//! If a flush fails, every later flush already taken and everything buffered has
//! offsets that assume it succeeded, so all of them fail too (retriably) and each
//! partition's write state is reset to its committed state. Their objects become
//! orphans for garbage collection; no offset is ever committed twice.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use sluice_meta::{Op, Txn};
use sluice_storage::{paths, wal::WalObjectBuilder};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::keyspace::{Fence, Manifest, ManifestSlice, Stored};
use crate::partition::{IndexEntry, Partition, ProducerBatch, PRODUCER_BATCH_HISTORY};
use crate::{Engine, EngineError, Result};

pub(crate) type FlushResult = Result<()>;

/// One partition's batches waiting for the next flush.
pub(crate) struct PendingSlice {
    pub partition: Arc<Partition>,
    pub batches: Vec<Bytes>,
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    pub producers: Vec<ProducerBatch>,
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

/// A flush between its PUT and its commit.
///
/// A flight without slices only carries waiters (retries of batches still in
/// flight): they are answered once every earlier flight is committed.
struct Flight {
    put: Option<JoinHandle<object_store::Result<()>>>,
    object: Arc<Path>,
    object_len: u64,
    /// The generation it was appended under and the janitor's horizon known before
    /// the object was written: the commit fails if either moved since (the
    /// partitions moved away, or the janitor may be deleting this object).
    fence: Fence,
    /// Each partition's slice as the manifest commits it, with its bytes for the
    /// in-memory tail.
    slices: Vec<(Arc<Partition>, ManifestSlice, Bytes)>,
    waiters: Vec<oneshot::Sender<FlushResult>>,
    rollbacks: u64,
    bytes: usize,
    seq: u64,
    started: std::time::Instant,
    _permit: OwnedSemaphorePermit,
}

pub(crate) fn start(engine: Arc<Engine>) {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run_committer(engine.clone(), rx));
    tokio::spawn(run_flusher(engine, tx));
}

async fn run_flusher(engine: Arc<Engine>, commits: mpsc::UnboundedSender<Flight>) {
    let slots = Arc::new(Semaphore::new(engine.cfg.max_inflight_flushes.max(1)));
    let mut seq = 0u64;
    loop {
        loop {
            let wake = engine.flush_wake.notified();
            let ready = {
                let wal = engine.wal();
                !wal.slices.is_empty() || !wal.waiters.is_empty()
            };
            if ready {
                break;
            }
            wake.await;
        }
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        if !engine.cfg.flush_linger.is_zero() && engine.wal().bytes < engine.cfg.flush_bytes {
            tokio::time::sleep(engine.cfg.flush_linger).await;
        }
        let taken = {
            let mut wal = engine.wal();
            if wal.slices.is_empty() && wal.waiters.is_empty() {
                None
            } else {
                let (slices, bytes) = take_within(&mut wal, MANIFEST_BUDGET);
                // Producers are answered by the flight that takes the last of the
                // buffer: the committer is sequential and a failed flight fails
                // every later one, so that flight succeeds only if all did.
                let waiters = if wal.slices.is_empty() {
                    std::mem::take(&mut wal.waiters)
                } else {
                    Vec::new()
                };
                wal.inflight_bytes += bytes;
                wal.flights += 1;
                Some((
                    slices,
                    waiters,
                    (wal.rollbacks, wal.broker_generation),
                    bytes,
                ))
            }
        };
        // Producers waiting for a full buffer to be taken may go on.
        engine.space.notify_waiters();
        let Some((slices, waiters, stamp, bytes)) = taken else {
            continue;
        };
        seq += 1;
        let flight = write_object(&engine, slices, waiters, stamp, bytes, seq, permit);
        if commits.send(flight).is_err() {
            return;
        }
    }
}

/// Bytes of manifest one flush may write: what one metadata transaction may carry
/// (etcd refuses requests over 1.5 MiB by default); a larger buffer is flushed as
/// several objects, each with a manifest below this.
pub(crate) const MANIFEST_BUDGET: usize = sluice_meta::MAX_TXN_BYTES;

/// Upper bounds of a manifest slice's encoded size, and of each producer batch in it.
const SLICE_BYTES: usize = 256;
const PRODUCER_BYTES: usize = 128;

fn slice_cost(s: &PendingSlice) -> usize {
    SLICE_BYTES + PRODUCER_BYTES * s.producers.len()
}

fn slice_bytes(s: &PendingSlice) -> usize {
    s.batches.iter().map(Bytes::len).sum()
}

/// Takes slices off the buffer (in key order) while their manifest fits `budget`,
/// and the buffered bytes they hold. A single slice over the budget is split at a
/// batch boundary: one partition's records stay contiguous, the rest waits.
fn take_within(wal: &mut WalBuffer, budget: usize) -> (BTreeMap<(Uuid, i32), PendingSlice>, usize) {
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
        let c = if h.is_idempotent() { PRODUCER_BYTES } else { 0 };
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
    let head = PendingSlice {
        partition: s.partition.clone(),
        batches: std::mem::replace(&mut s.batches, rest),
        base_offset: s.base_offset,
        last_offset: split_at - 1,
        max_timestamp: max_ts(&headers[..cut]),
        producers: head_producers,
    };
    s.base_offset = split_at;
    s.max_timestamp = max_ts(&headers[cut..]);
    s.producers = rest_producers;
    Some(head)
}

/// Builds the WAL object and starts its create-only PUT.
fn write_object(
    engine: &Arc<Engine>,
    slices: BTreeMap<(Uuid, i32), PendingSlice>,
    waiters: Vec<oneshot::Sender<FlushResult>>,
    (rollbacks, broker_generation): (u64, u64),
    bytes: usize,
    seq: u64,
    permit: OwnedSemaphorePermit,
) -> Flight {
    let fence = engine.fences.at(broker_generation);
    let mut builder = WalObjectBuilder::new();
    let mut parts = Vec::with_capacity(slices.len());
    for ((topic_id, partition), s) in slices {
        let data = concat(s.batches);
        builder.add_slice(
            topic_id,
            partition,
            s.base_offset,
            s.last_offset,
            s.max_timestamp,
            [data.clone()],
        );
        parts.push((s.partition, s.producers, data));
    }
    let key = paths::wal_object(engine.cfg.broker_id, broker_generation, ulid::Ulid::new());
    // The builder returns the slices in the order they were added.
    let (payload, wal_slices, _) = builder.finish();
    let slices: Vec<(Arc<Partition>, ManifestSlice, Bytes)> = parts
        .into_iter()
        .zip(wal_slices)
        .map(|((partition, producers, data), slice)| {
            (partition, ManifestSlice { slice, producers }, data)
        })
        .collect();
    let object_len = payload.content_length() as u64;
    let put = (!slices.is_empty()).then(|| {
        let store = engine.store.clone();
        let put_key = key.clone();
        tokio::spawn(async move { put_create_only(store.as_ref(), &put_key, payload).await })
    });
    Flight {
        put,
        object: Arc::new(key),
        object_len,
        fence,
        slices,
        waiters,
        rollbacks,
        bytes,
        seq,
        started: std::time::Instant::now(),
        _permit: permit,
    }
}

/// Writes a new object with `If-None-Match: *`.
///
/// A request that timed out may still have landed; the client's retry then finds the
/// key taken. Keys carry a fresh ULID, so an existing object of our exact size is our
/// own earlier attempt, not someone else's.
async fn put_create_only(
    store: &dyn ObjectStore,
    key: &Path,
    payload: PutPayload,
) -> object_store::Result<()> {
    let len = payload.content_length() as u64;
    let opts = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    match store.put_opts(key, payload, opts).await {
        Ok(_) => Ok(()),
        Err(object_store::Error::AlreadyExists { path, source }) => {
            let existing = store.head(key).await?;
            if existing.size == len {
                tracing::info!(object = %key, "create found its own earlier attempt in place");
                Ok(())
            } else {
                Err(object_store::Error::AlreadyExists { path, source })
            }
        }
        Err(e) => Err(e),
    }
}

/// Joins byte runs; a single run is returned as it is, without copying.
pub(crate) fn concat(mut batches: Vec<Bytes>) -> Bytes {
    if batches.len() == 1 {
        return batches.pop().unwrap_or_default();
    }
    let mut out = BytesMut::with_capacity(batches.iter().map(Bytes::len).sum());
    for b in batches {
        out.extend_from_slice(&b);
    }
    out.freeze()
}

async fn run_committer(engine: Arc<Engine>, mut flights: mpsc::UnboundedReceiver<Flight>) {
    while let Some(mut f) = flights.recv().await {
        let outcome = commit(&engine, &mut f).await;
        match &outcome {
            Ok(()) => {
                if !f.slices.is_empty() {
                    engine.metrics.flush_bytes.observe(f.object_len as f64);
                    engine.metrics.flush_seconds.observe_since(f.started);
                }
                for (partition, m, data) in &f.slices {
                    let entry = IndexEntry {
                        cached: Some(data.clone()),
                        ..IndexEntry::from_committed(&m.slice, f.object.clone(), f.object_len)
                    };
                    let mut read = partition.read_mut();
                    // A partition that moved away and back while this flush was
                    // committing was rebuilt from manifests that already hold it.
                    if entry.base_offset == read.high_watermark {
                        read.append(entry, &m.producers, &engine.tail);
                    } else if partition.leader_epoch().is_some()
                        && entry.base_offset > read.high_watermark
                    {
                        tracing::error!(
                            topic = %partition.topic, partition = partition.index,
                            base = entry.base_offset, high_watermark = read.high_watermark,
                            "committed slice does not follow the high watermark"
                        );
                    }
                }
                engine.commits.send_modify(|n| *n += 1);
            }
            Err(e) => {
                if matches!(e, EngineError::NotLeader { .. }) {
                    engine.metrics.commits_fenced.fetch_add(1, Relaxed);
                }
                let mut wal = engine.wal();
                // A flight taken before an earlier rollback is already abandoned.
                if wal.rollbacks == f.rollbacks {
                    tracing::warn!(object = %f.object, error = %e, "flush failed; failing every pending produce");
                    abandon_buffered(&engine, &mut wal, e);
                }
            }
        }
        for w in f.waiters {
            let _ = w.send(outcome.clone());
        }
        {
            let mut wal = engine.wal();
            wal.inflight_bytes -= f.bytes;
            wal.flights -= 1;
            if wal.resetting && wal.flights == 0 {
                // Every flush taken before the abandonment is through: what committed
                // is applied, so offsets restart right after it.
                reset_writes(&engine);
                wal.resetting = false;
            }
        }
        engine.space.notify_waiters();
    }
}

/// Waits for the flight's object, then commits its manifest under the generation its
/// data was appended in.
///
/// A commit whose outcome is unknown (the metadata store did not answer) may still
/// apply, so its offsets cannot be given out again: it is retried until the store
/// answers. Re-applying it is harmless (same key, same value). If the generation
/// moved meanwhile, the manifest key tells whether an earlier attempt landed first.
async fn commit(engine: &Engine, f: &mut Flight) -> Result<()> {
    abandoned(engine, f)?;
    if let Some(put) = &mut f.put {
        let put = put
            .await
            .map_err(|e| EngineError::FlushFailed(format!("put task: object={}: {e}", f.object)))?;
        put.map_err(|e| EngineError::FlushFailed(format!("put: object={}: {e}", f.object)))?;
    }
    abandoned(engine, f)?;
    if f.slices.is_empty() {
        return Ok(());
    }
    let manifest = Manifest {
        object: f.object.to_string(),
        object_len: f.object_len,
        slices: f.slices.iter().map(|(_, m, _)| m.clone()).collect(),
    };
    let key = engine
        .keys
        .manifest(engine.cfg.broker_id, f.fence.generation(), f.seq);
    let txn =
        Txn::when(f.fence.leader_and_gc()).then(vec![Op::put(key.clone(), manifest.encode())]);
    let mut backoff = Duration::from_millis(50);
    let mut unknown_outcome = false;
    loop {
        match engine.meta.txn(txn.clone()).await {
            Ok(r) if r.succeeded => {
                engine.metrics.commits.fetch_add(1, Relaxed);
                return Ok(());
            }
            Ok(_) => {
                if !did_not_apply(engine, unknown_outcome, &key, f, &mut backoff).await {
                    return Ok(());
                }
                engine.request_sync();
                return Err(EngineError::NotLeader {
                    epoch: f.fence.generation(),
                });
            }
            Err(sluice_meta::MetaError::Refused(why)) => {
                if !did_not_apply(engine, unknown_outcome, &key, f, &mut backoff).await {
                    return Ok(());
                }
                tracing::error!(object = %f.object, error = %why, "the metadata store refused the commit");
                return Err(EngineError::FlushFailed(format!(
                    "metadata store refused the commit: {why}"
                )));
            }
            Err(e) => {
                if !unknown_outcome {
                    tracing::warn!(object = %f.object, error = %e, "commit outcome unknown; retrying until the metadata store answers");
                }
                unknown_outcome = true;
                engine.metrics.commit_retries.fetch_add(1, Relaxed);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// After an attempt that did not apply (its compare failed, or the store refused
/// it): false if an earlier attempt whose outcome was unknown landed after all (its
/// manifest key exists; counted as the commit), true if none did. Asks until the
/// store answers.
async fn did_not_apply(
    engine: &Engine,
    unknown: bool,
    key: &str,
    f: &Flight,
    backoff: &mut Duration,
) -> bool {
    if !unknown {
        return true;
    }
    loop {
        match engine.meta.get(key).await {
            Ok(Some(_)) => {
                engine.metrics.commits.fetch_add(1, Relaxed);
                return false;
            }
            Ok(None) => return true,
            Err(e) => {
                tracing::warn!(object = %f.object, error = %e, "cannot check an earlier commit attempt; retrying");
                tokio::time::sleep(*backoff).await;
                *backoff = (*backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// The error a flight answers if its data was abandoned after it was taken.
fn abandoned(engine: &Engine, f: &Flight) -> Result<()> {
    let wal = engine.wal();
    if wal.rollbacks == f.rollbacks {
        return Ok(());
    }
    Err(wal.abandoned_because.clone().unwrap_or_else(|| {
        EngineError::FlushFailed("an earlier flush failed; offsets were reassigned".into())
    }))
}

/// Fails everything buffered and every flush already taken that has not started
/// its commit (their offsets assume each other), then resets every partition's
/// write state to its committed state: now if no flush is in flight, else once the
/// committer has processed those in flight (a commit already sent may still
/// succeed, and offsets must restart after it, never inside it).
pub(crate) fn abandon_buffered(engine: &Engine, wal: &mut WalBuffer, cause: &EngineError) {
    wal.rollbacks += 1;
    wal.abandoned_because = Some(cause.clone());
    for w in wal.waiters.drain(..) {
        let _ = w.send(Err(cause.clone()));
    }
    wal.slices.clear();
    wal.bytes = 0;
    if wal.flights == 0 {
        reset_writes(engine);
        wal.resetting = false;
    } else {
        wal.resetting = true;
    }
}

/// Every partition's write state back to its committed state.
fn reset_writes(engine: &Engine) {
    for topic in engine.topics() {
        for p in &topic.partitions {
            p.reset_write_to_committed();
        }
    }
}

impl Engine {
    pub(crate) fn wal(&self) -> std::sync::MutexGuard<'_, WalBuffer> {
        self.wal.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::TailBudget;
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
