//! Markers and completion (RFC 0010), one task per broker, woken by every change of
//! the marker requests and at least every [`ROUND`]:
//!
//! 1. **serve**: for each marker request of a partition this broker leads, write
//!    the marker through the engine; its commit deletes the request. A request
//!    already being written is not written again.
//! 2. **complete**: for each transaction of a shard this broker coordinates that
//!    is preparing and has no request left, apply its pending group offsets (on
//!    commit) and write `complete_commit` / `complete_abort`;
//! 3. **expire**: abort, with the epoch bumped, ongoing transactions past their
//!    timeout (the producer is fenced).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use sluice_engine::keyspace::{MarkerRequest, Stored, TxnRecord, TxnState};
use sluice_engine::produce::MarkerAppend;
use sluice_engine::transactions::TRANSACTIONS_TOPIC;
use sluice_engine::Engine;
use sluice_meta::{notify_on_changes, Compare, Op, Txn};

use super::{decide, PendingOffsets};
use crate::coordinator::{self, offsets};

/// The longest a round waits without a change.
pub const ROUND: Duration = Duration::from_millis(500);

/// Starts the task; it ends when the engine is dropped.
pub fn start(engine: Weak<Engine>) {
    let Some(strong) = engine.upgrade() else {
        return;
    };
    let wake = Arc::new(tokio::sync::Notify::new());
    notify_on_changes(
        strong.meta().clone(),
        strong.keys().marker_requests(),
        Arc::downgrade(&wake),
    );
    drop(strong);
    let writing: Arc<Mutex<HashSet<String>>> = Arc::default();
    tokio::spawn(async move {
        loop {
            let _ = tokio::time::timeout(ROUND, wake.notified()).await;
            let Some(engine) = engine.upgrade() else {
                return;
            };
            if let Err(e) = round(&engine, &writing).await {
                tracing::debug!(error = %e, "transaction markers round failed; retrying");
            }
        }
    });
}

async fn round(
    engine: &Arc<Engine>,
    writing: &Arc<Mutex<HashSet<String>>>,
) -> sluice_engine::Result<()> {
    let requests = engine
        .meta()
        .range(&engine.keys().marker_requests())
        .await?;
    let mut pending_ids: HashSet<String> = HashSet::new();
    let mut batch = Vec::new();
    for kv in &requests {
        let Some((topic_id, partition, id)) = engine.keys().marker_request_of(&kv.key) else {
            continue;
        };
        pending_ids.insert(id);
        let Some(p) = engine
            .topic_by_id(topic_id)
            .and_then(|t| t.partition(partition).cloned())
        else {
            continue;
        };
        if p.leader_epoch().is_none() {
            continue;
        }
        let Ok(request) = MarkerRequest::from_kv(kv) else {
            continue;
        };
        if !writing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(kv.key.clone())
        {
            continue;
        }
        batch.push(MarkerAppend {
            partition: p,
            request,
            key: kv.key.clone(),
        });
    }
    if !batch.is_empty() {
        let keys: Vec<String> = batch.iter().map(|m| m.key.clone()).collect();
        let pending = engine.write_markers(batch).await;
        let writing = writing.clone();
        tokio::spawn(async move {
            for (key, result) in keys.iter().zip(pending.durable().await) {
                if let Err(e) = result {
                    tracing::debug!(request = %key, error = %e, "marker not written; retrying");
                }
            }
            let mut w = writing.lock().unwrap_or_else(|e| e.into_inner());
            for key in keys {
                w.remove(&key);
            }
        });
    }
    complete(engine, &pending_ids).await
}

/// Completes and expires the transactions of the shards this broker coordinates.
async fn complete(engine: &Engine, pending_ids: &HashSet<String>) -> sluice_engine::Result<()> {
    let Some(topic) = engine.topic(TRANSACTIONS_TOPIC) else {
        return Ok(());
    };
    for p in topic.partitions.iter() {
        let Some(coordinator_epoch) = p.leader_epoch() else {
            continue;
        };
        let shard = p.index;
        let prefix = engine.keys().shard_txns(shard);
        for kv in engine.meta().range(&prefix).await? {
            let Some(id) = engine.keys().txn_of(shard, &kv.key) else {
                continue;
            };
            let Ok(record) = TxnRecord::from_kv(&kv) else {
                continue;
            };
            let now = engine.clock().now_ms();
            let fence = engine.fence();
            let mine = Compare::ModRevision(kv.key.clone(), kv.mod_revision);
            if record.state.preparing() && !pending_ids.contains(&id) {
                let commit = record.state == TxnState::PrepareCommit;
                let mut ops = Vec::new();
                for group in &record.groups {
                    let key = pending_key(engine, group, &id);
                    if commit {
                        apply_offsets(engine, group, &key).await?;
                    }
                    ops.push(Op::Delete(key));
                }
                let mut next = record.clone();
                next.state = if commit {
                    TxnState::CompleteCommit
                } else {
                    TxnState::CompleteAbort
                };
                next.updated_ms = now;
                ops.insert(0, Op::put(kv.key.clone(), next.encode()));
                let txn = Txn::when(vec![mine, fence.still_leader()]).then(ops);
                engine.meta().txn(txn).await?;
            } else if record.state == TxnState::Ongoing
                && now.saturating_sub(record.started_ms) > i64::from(record.timeout_ms)
            {
                tracing::info!(transactional_id = %id, producer_id = record.producer_id,
                    "aborting a transaction past its timeout");
                let mut fenced = record.clone();
                fenced.epoch = fenced.epoch.saturating_add(1);
                let (next, mut ops) = decide(engine, &id, fenced, false, coordinator_epoch, now);
                ops.insert(0, Op::put(kv.key.clone(), next.encode()));
                engine
                    .meta()
                    .txn(Txn::when(vec![mine, fence.still_leader()]).then(ops))
                    .await?;
            }
        }
    }
    Ok(())
}

/// The key of a transaction's pending offsets for `group`.
fn pending_key(engine: &Engine, group: &str, id: &str) -> String {
    let shards = engine
        .topic(coordinator::GROUPS_TOPIC)
        .map_or(1, |t| t.record.partitions);
    engine
        .keys()
        .group_pending(coordinator::shard_of(group, shards), group, id)
}

/// Merges a committed transaction's pending offsets into the group's offsets.
/// Applying them twice (a coordinator that failed before completing) is harmless.
async fn apply_offsets(engine: &Engine, group: &str, key: &str) -> sluice_engine::Result<()> {
    let Some(kv) = engine.meta().get(key).await? else {
        return Ok(());
    };
    let pending = PendingOffsets::from_kv(&kv)?;
    let guard = engine.fence().still_leader();
    let shards = engine
        .topic(coordinator::GROUPS_TOPIC)
        .map_or(1, |t| t.record.partitions);
    let shard = coordinator::shard_of(group, shards);
    let topics: BTreeMap<String, offsets::TopicOffsets> = pending.0;
    offsets::commit(engine, &guard, shard, group, topics).await
}
