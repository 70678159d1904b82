//! The committer: takes flights strictly in order, waits for each object, commits
//! ONE manifest conditional on the flight's fence, applies it to the partitions, and
//! only then answers the producers. A failed flight fails every later one.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use sluice_meta::{Op, Txn};
use tokio::sync::mpsc;

use super::flusher::Flight;
use super::WritePath;
use crate::error::{EngineError, Result};
use crate::keyspace::{Manifest, Stored};
use crate::partition::IndexEntry;

pub(super) async fn run_committer(
    write: Arc<WritePath>,
    mut flights: mpsc::UnboundedReceiver<Flight>,
) {
    while let Some(mut f) = flights.recv().await {
        let outcome = commit(&write, &mut f).await;
        match &outcome {
            Ok(()) => {
                if !f.slices.is_empty() {
                    write.metrics.flush_bytes.observe(f.object_len as f64);
                    write.metrics.flush_seconds.observe_since(f.started);
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
                        read.append(entry, &m.producers, &m.markers, &write.tail);
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
                write.commits.send_modify(|n| *n += 1);
            }
            Err(e) => {
                if matches!(e, EngineError::NotLeader { .. }) {
                    write.metrics.commits_fenced.fetch_add(1, Relaxed);
                }
                let mut wal = write.buffer();
                // A flight taken before an earlier rollback is already abandoned.
                if wal.rollbacks == f.rollbacks {
                    tracing::warn!(object = %f.object, error = %e, "flush failed; failing every pending produce");
                    write.abandon(&mut wal, e);
                }
            }
        }
        for w in f.waiters {
            let _ = w.send(outcome.clone());
        }
        {
            let mut wal = write.buffer();
            wal.inflight_bytes -= f.bytes;
            wal.flights -= 1;
            if wal.resetting && wal.flights == 0 {
                // Every flush taken before the abandonment is through: what committed
                // is applied, so offsets restart right after it.
                write.reset_writes();
                wal.resetting = false;
            }
        }
        write.space.notify_waiters();
    }
}

/// Waits for the flight's object, then commits its manifest under the generation its
/// data was appended in.
///
/// A commit whose outcome is unknown (the metadata store did not answer) may still
/// apply, so its offsets cannot be given out again: it is retried until the store
/// answers. Re-applying it is harmless (same key, same value). If the generation
/// moved meanwhile, the manifest key tells whether an earlier attempt landed first.
async fn commit(write: &WritePath, f: &mut Flight) -> Result<()> {
    abandoned(write, f)?;
    if let Some(put) = &mut f.put {
        let put = put
            .await
            .map_err(|e| EngineError::FlushFailed(format!("put task: object={}: {e}", f.object)))?;
        put.map_err(|e| EngineError::FlushFailed(format!("put: object={}: {e}", f.object)))?;
    }
    abandoned(write, f)?;
    if f.slices.is_empty() {
        return Ok(());
    }
    let manifest = Manifest {
        object: f.object.to_string(),
        object_len: f.object_len,
        slices: f.slices.iter().map(|(_, m, _)| m.clone()).collect(),
    };
    let key = write
        .keys
        .manifest(write.cfg.broker_id, f.fence.generation(), f.seq);
    let mut ops = vec![Op::put(key.clone(), manifest.encode())];
    ops.extend(f.deletes.iter().map(|k| Op::Delete(k.clone())));
    let txn = Txn::when(f.fence.leader_and_gc()).then(ops);
    let mut backoff = Duration::from_millis(50);
    let mut unknown_outcome = false;
    loop {
        match write.meta.txn(txn.clone()).await {
            Ok(r) if r.succeeded => {
                write.metrics.commits.fetch_add(1, Relaxed);
                return Ok(());
            }
            Ok(_) => {
                if !did_not_apply(write, unknown_outcome, &key, f, &mut backoff).await {
                    return Ok(());
                }
                write.resync.notify_one();
                return Err(EngineError::NotLeader {
                    epoch: f.fence.generation(),
                });
            }
            Err(sluice_meta::MetaError::Refused(why)) => {
                if !did_not_apply(write, unknown_outcome, &key, f, &mut backoff).await {
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
                write.metrics.commit_retries.fetch_add(1, Relaxed);
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
    write: &WritePath,
    unknown: bool,
    key: &str,
    f: &Flight,
    backoff: &mut Duration,
) -> bool {
    if !unknown {
        return true;
    }
    loop {
        match write.meta.get(key).await {
            Ok(Some(_)) => {
                write.metrics.commits.fetch_add(1, Relaxed);
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
fn abandoned(write: &WritePath, f: &Flight) -> Result<()> {
    let wal = write.buffer();
    if wal.rollbacks == f.rollbacks {
        return Ok(());
    }
    Err(wal.abandoned_because.clone().unwrap_or_else(|| {
        EngineError::FlushFailed("an earlier flush failed; offsets were reassigned".into())
    }))
}
