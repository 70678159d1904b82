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
    let mut batch = Vec::new();
    for kv in &requests {
        let Some((topic_id, partition, _)) = engine.keys().marker_request_of(&kv.key) else {
            continue;
        };
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
    complete(engine).await
}

/// Completes and expires the transactions of the shards this broker coordinates.
///
/// The records are read before the requests: a decision and its requests are
/// written together, so a record read as preparing has its unserved requests in
/// any later read. (Read the other way round, a decision landing between the reads
/// would look served at once.)
async fn complete(engine: &Engine) -> sluice_engine::Result<()> {
    let Some(topic) = engine.topic(TRANSACTIONS_TOPIC) else {
        return Ok(());
    };
    for p in topic.partitions.iter() {
        let Some(coordinator_epoch) = p.leader_epoch() else {
            continue;
        };
        let shard = p.index;
        let prefix = engine.keys().shard_txns(shard);
        let records = engine.meta().range(&prefix).await?;
        if records.is_empty() {
            continue;
        }
        let pending_ids: HashSet<String> = engine
            .meta()
            .range(&engine.keys().marker_requests())
            .await?
            .iter()
            .filter_map(|kv| {
                engine
                    .keys()
                    .marker_request_of(&kv.key)
                    .map(|(_, _, id)| id)
            })
            .collect();
        for kv in records {
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use async_trait::async_trait;
    use sluice_engine::keyspace::{self, TxnPartition};
    use sluice_meta::{EmbeddedStore, KeyValue, LeaseId, MetaStore, TxnResult, WatchEvent};
    use tokio::sync::mpsc;

    use super::*;

    /// An embedded store that applies `decision` right after the first read of the
    /// marker requests once it is set: an EndTxn landing in the middle of a round.
    #[derive(Clone)]
    struct DecideMidRound {
        inner: EmbeddedStore,
        decision: Arc<Mutex<Option<Txn>>>,
        applied: Arc<AtomicBool>,
    }

    #[async_trait]
    impl MetaStore for DecideMidRound {
        async fn get(&self, key: &str) -> sluice_meta::Result<Option<KeyValue>> {
            self.inner.get(key).await
        }
        async fn range(&self, prefix: &str) -> sluice_meta::Result<Vec<KeyValue>> {
            let out = self.inner.range(prefix).await;
            if prefix.ends_with("/txn_markers/") {
                let decision = self
                    .decision
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                if let Some(txn) = decision {
                    self.inner.txn(txn).await?;
                    self.applied.store(true, Ordering::SeqCst);
                }
            }
            out
        }
        async fn txn(&self, txn: Txn) -> sluice_meta::Result<TxnResult> {
            self.inner.txn(txn).await
        }
        async fn grant_lease(&self, ttl: Duration) -> sluice_meta::Result<LeaseId> {
            self.inner.grant_lease(ttl).await
        }
        async fn keep_alive(&self, lease: LeaseId) -> sluice_meta::Result<()> {
            self.inner.keep_alive(lease).await
        }
        async fn revoke_lease(&self, lease: LeaseId) -> sluice_meta::Result<()> {
            self.inner.revoke_lease(lease).await
        }
        async fn watch(
            &self,
            prefix: &str,
        ) -> sluice_meta::Result<mpsc::UnboundedReceiver<WatchEvent>> {
            self.inner.watch(prefix).await
        }
    }

    /// A decision made between a round's read of the marker requests and its read of
    /// the records must not look served: the transaction stays preparing until its
    /// marker is written (here never: its partition is led by no one).
    #[tokio::test]
    async fn a_decision_made_mid_round_is_not_completed_before_its_markers() {
        let meta = DecideMidRound {
            inner: EmbeddedStore::in_memory(),
            decision: Arc::default(),
            applied: Arc::default(),
        };
        let broker = crate::testing::broker_on(Arc::new(meta.clone())).await;
        let engine = broker.engine.clone();
        crate::transactions::ensure_topic(&engine, 1).await;
        let id = "tx";
        let key = engine.keys().txn(keyspace::shard_of(id, 1), id);
        let record = TxnRecord {
            producer_id: 1,
            epoch: 0,
            state: TxnState::PrepareCommit,
            timeout_ms: 60_000,
            partitions: vec![TxnPartition {
                topic: "gone".into(),
                topic_id: uuid::Uuid::nil(),
                partition: 0,
            }],
            ..Default::default()
        };
        let request = MarkerRequest {
            producer_id: 1,
            epoch: 0,
            commit: true,
            coordinator_epoch: 0,
        };
        let decision = Txn::when(vec![]).then(vec![
            Op::put(key.clone(), record.encode()),
            Op::put(
                engine.keys().marker_request(uuid::Uuid::nil(), 0, id),
                request.encode(),
            ),
        ]);
        *meta.decision.lock().unwrap() = Some(decision);
        for _ in 0..100 {
            if meta.applied.load(Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(meta.applied.load(Ordering::SeqCst), "the decision was made");
        // A few more rounds.
        tokio::time::sleep(ROUND * 3).await;
        let stored = TxnRecord::from_kv(&meta.inner.get(&key).await.unwrap().unwrap()).unwrap();
        assert_eq!(stored.state, TxnState::PrepareCommit);
    }
}
