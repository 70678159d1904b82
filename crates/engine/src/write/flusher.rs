//! The flusher: takes the WAL buffer as soon as a flush slot is free (after an
//! optional linger), builds ONE write-ahead object of everything taken and starts
//! its create-only PUT, then hands the flight to the committer in order.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use sluice_storage::{paths, wal::WalObjectBuilder};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::buffer::{take_within, FlushResult, PendingSlice, MANIFEST_BUDGET};
use super::WritePath;
use crate::keyspace::{Fence, ManifestSlice};
use crate::partition::Partition;
use crate::util::concat;

/// A flush between its PUT and its commit.
///
/// A flight without slices only carries waiters (retries of batches still in
/// flight): they are answered once every earlier flight is committed.
pub(super) struct Flight {
    pub(super) put: Option<JoinHandle<object_store::Result<()>>>,
    pub(super) object: Arc<Path>,
    pub(super) object_len: u64,
    /// The generation it was appended under and the janitor's horizon known before
    /// the object was written: the commit fails if either moved since (the
    /// partitions moved away, or the janitor may be deleting this object).
    pub(super) fence: Fence,
    /// Each partition's slice as the manifest commits it, with its bytes for the
    /// in-memory tail.
    pub(super) slices: Vec<(Arc<Partition>, ManifestSlice, Bytes)>,
    /// Keys the manifest's commit deletes (marker requests its markers serve).
    pub(super) deletes: Vec<String>,
    pub(super) waiters: Vec<oneshot::Sender<FlushResult>>,
    pub(super) rollbacks: u64,
    pub(super) bytes: usize,
    pub(super) seq: u64,
    pub(super) started: std::time::Instant,
    _permit: OwnedSemaphorePermit,
}

pub(super) async fn run_flusher(write: Arc<WritePath>, commits: mpsc::UnboundedSender<Flight>) {
    let slots = Arc::new(Semaphore::new(write.cfg.max_inflight_flushes.max(1)));
    let mut seq = 0u64;
    loop {
        loop {
            let wake = write.flush_wake.notified();
            let ready = {
                let wal = write.buffer();
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
        if !write.cfg.flush_linger.is_zero() && write.buffer().bytes < write.cfg.flush_bytes {
            tokio::time::sleep(write.cfg.flush_linger).await;
        }
        let taken = {
            let mut wal = write.buffer();
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
        write.space.notify_waiters();
        let Some((slices, waiters, stamp, bytes)) = taken else {
            continue;
        };
        seq += 1;
        let flight = write_object(&write, slices, waiters, stamp, bytes, seq, permit);
        if commits.send(flight).is_err() {
            return;
        }
    }
}

/// Builds the WAL object and starts its create-only PUT.
fn write_object(
    write: &WritePath,
    slices: BTreeMap<(Uuid, i32), PendingSlice>,
    waiters: Vec<oneshot::Sender<FlushResult>>,
    (rollbacks, broker_generation): (u64, u64),
    bytes: usize,
    seq: u64,
    permit: OwnedSemaphorePermit,
) -> Flight {
    let fence = write.fences.at(broker_generation);
    let mut builder = WalObjectBuilder::new();
    let mut parts = Vec::with_capacity(slices.len());
    let mut deletes = Vec::new();
    for ((topic_id, partition), s) in slices {
        deletes.extend(s.deletes.into_iter().map(|(_, key)| key));
        let data = concat(s.batches);
        builder.add_slice(
            topic_id,
            partition,
            s.base_offset,
            s.last_offset,
            s.max_timestamp,
            [data.clone()],
        );
        parts.push((s.partition, s.producers, s.markers, data));
    }
    let key = paths::wal_object(write.cfg.broker_id, broker_generation, ulid::Ulid::new());
    // The builder returns the slices in the order they were added.
    let (payload, wal_slices, _) = builder.finish();
    let slices: Vec<(Arc<Partition>, ManifestSlice, Bytes)> = parts
        .into_iter()
        .zip(wal_slices)
        .map(|((partition, producers, markers, data), slice)| {
            let m = ManifestSlice {
                slice,
                producers,
                markers,
            };
            (partition, m, data)
        })
        .collect();
    let object_len = payload.content_length() as u64;
    let put = (!slices.is_empty()).then(|| {
        let store = write.store.clone();
        let put_key = key.clone();
        tokio::spawn(async move { put_create_only(store.as_ref(), &put_key, payload).await })
    });
    Flight {
        put,
        object: Arc::new(key),
        object_len,
        fence,
        slices,
        deletes,
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
