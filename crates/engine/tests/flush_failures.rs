//! The flush/commit pipeline under failures: a failed PUT fails its producers and
//! every later pending flush, offsets are reassigned from the high watermark, commits
//! apply in order when PUTs finish out of order, and a newer process fences an older
//! one. Uses the fault-injecting store with scripted PUT fates.

#![allow(clippy::unwrap_used)] // a test: panicking is how it fails

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_engine::keyspace::{Generation, Stored};
use sluice_engine::EngineError;
use sluice_meta::{EmbeddedStore, MetaStore, Op, Txn};
use sluice_storage::faults::PutFate;

mod common;
use common::*;

#[tokio::test]
async fn a_failed_flush_fails_its_producers_and_offsets_are_reassigned() {
    let store = faulty();
    let meta = EmbeddedStore::in_memory();
    let (engine, topic) = open(&meta, store.clone()).await;

    store.script_puts([PutFate::Fail]);
    let err = produce(&engine, &topic, batch(&["lost-1", "lost-2"], Some((7, 0)))).await;
    assert!(matches!(err, Err(EngineError::FlushFailed(_))), "{err:?}");
    assert_eq!(topic.partition(0).unwrap().read().high_watermark, 0);

    // The producer's retry of the same sequence is appended, at offset 0 again:
    // nothing was acknowledged, so nothing is duplicated and no offset is skipped.
    assert_eq!(
        produce(&engine, &topic, batch(&["a", "b"], Some((7, 0))))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        produce(&engine, &topic, batch(&["c"], Some((7, 2))))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        values(&engine, &topic).await,
        vec![(0, "a".into()), (1, "b".into()), (2, "c".into())]
    );
}

#[tokio::test]
async fn a_failure_also_fails_later_flushes_already_in_flight() {
    let store = faulty();
    let meta = EmbeddedStore::in_memory();
    let (engine, topic) = open(&meta, store.clone()).await;
    // First flush fails late; the second PUT succeeds at once but must not commit,
    // because its offsets assumed the first succeeded.
    store.script_puts([
        PutFate::DelayThenFail(Duration::from_millis(200)),
        PutFate::Succeed,
    ]);
    let first = {
        let e = engine.clone();
        let t = topic.clone();
        tokio::spawn(async move { produce(&e, &t, batch(&["x"], None)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = produce(&engine, &topic, batch(&["y"], None)).await;
    let first = first.await.unwrap();
    assert!(first.is_err() && second.is_err(), "{first:?} {second:?}");
    assert_eq!(
        wal_objects(&store).await,
        1,
        "the second flush wrote its own object, now an orphan"
    );
    assert_eq!(topic.partition(0).unwrap().read().high_watermark, 0);
    assert_eq!(
        produce(&engine, &topic, batch(&["z"], None)).await.unwrap(),
        0
    );
    assert_eq!(values(&engine, &topic).await, vec![(0, "z".into())]);
}

#[tokio::test]
async fn commits_apply_in_offset_order_when_puts_finish_out_of_order() {
    let store = faulty();
    let meta = EmbeddedStore::in_memory();
    let (engine, topic) = open(&meta, store.clone()).await;
    store.script_puts([PutFate::Delay(Duration::from_millis(300)), PutFate::Succeed]);
    let order = Arc::new(Mutex::new(Vec::new()));
    let spawn = |v: &'static str| {
        let (e, t, o) = (engine.clone(), topic.clone(), order.clone());
        tokio::spawn(async move {
            let r = produce(&e, &t, batch(&[v], None)).await.unwrap();
            o.lock().unwrap().push(v);
            r
        })
    };
    let slow = spawn("slow");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let fast = spawn("fast");
    assert_eq!((slow.await.unwrap(), fast.await.unwrap()), (0, 1));
    assert_eq!(
        *order.lock().unwrap(),
        vec!["slow", "fast"],
        "acks follow offset order"
    );
    assert_eq!(
        values(&engine, &topic).await,
        vec![(0, "slow".into()), (1, "fast".into())]
    );
}

#[tokio::test]
async fn a_newer_process_with_the_same_broker_id_fences_the_old_one() {
    let store = faulty();
    let meta = EmbeddedStore::in_memory();
    let (old, old_topic) = open(&meta, store.clone()).await;
    assert_eq!(
        produce(&old, &old_topic, batch(&["before"], None))
            .await
            .unwrap(),
        0
    );

    let (new, new_topic) = open(&meta, store.clone()).await;
    assert!(new.generation() > old.generation());
    let fenced = produce(&old, &old_topic, batch(&["zombie"], None)).await;
    assert!(
        matches!(
            fenced,
            Err(EngineError::NotLeader { .. } | EngineError::NotLeaderForPartition { .. })
        ),
        "{fenced:?}"
    );

    assert_eq!(
        produce(&new, &new_topic, batch(&["after"], None))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        values(&new, &new_topic).await,
        vec![(0, "before".into()), (1, "after".into())]
    );
}

#[tokio::test]
async fn a_create_that_landed_before_its_retry_counts_as_written() {
    let store = faulty();
    let meta = EmbeddedStore::in_memory();
    let (engine, topic) = open(&meta, store.clone()).await;
    store.script_puts([PutFate::LandsButReportedTaken]);
    assert_eq!(
        produce(&engine, &topic, batch(&["landed"], None))
            .await
            .unwrap(),
        0
    );
    assert_eq!(values(&engine, &topic).await, vec![(0, "landed".into())]);
}

/// A metadata store whose manifest commits apply at once but answer late, when armed.
struct LateAnswers {
    inner: EmbeddedStore,
    armed: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl MetaStore for LateAnswers {
    async fn get(&self, key: &str) -> sluice_meta::Result<Option<sluice_meta::KeyValue>> {
        self.inner.get(key).await
    }
    async fn range(&self, prefix: &str) -> sluice_meta::Result<Vec<sluice_meta::KeyValue>> {
        self.inner.range(prefix).await
    }
    async fn txn(&self, txn: Txn) -> sluice_meta::Result<sluice_meta::TxnResult> {
        let manifest = txn
            .success
            .iter()
            .any(|op| matches!(op, Op::Put { key, .. } if key.contains("/manifests/")));
        let result = self.inner.txn(txn).await;
        if manifest && self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        result
    }
    async fn grant_lease(&self, ttl: Duration) -> sluice_meta::Result<sluice_meta::LeaseId> {
        self.inner.grant_lease(ttl).await
    }
    async fn keep_alive(&self, lease: sluice_meta::LeaseId) -> sluice_meta::Result<()> {
        self.inner.keep_alive(lease).await
    }
    async fn revoke_lease(&self, lease: sluice_meta::LeaseId) -> sluice_meta::Result<()> {
        self.inner.revoke_lease(lease).await
    }
    async fn watch(
        &self,
        prefix: &str,
    ) -> sluice_meta::Result<tokio::sync::mpsc::UnboundedReceiver<sluice_meta::WatchEvent>> {
        self.inner.watch(prefix).await
    }
}

/// The controller bumps this broker's generation (as when it takes some other
/// partition away) while a commit has applied but not yet answered. The broker must
/// not hand out that commit's offsets again: appends are refused until the commit is
/// through, and then continue after it.
#[tokio::test]
async fn a_generation_bump_during_a_commit_never_reuses_its_offsets() {
    let store = faulty();
    let meta = Arc::new(LateAnswers {
        inner: EmbeddedStore::in_memory(),
        armed: std::sync::atomic::AtomicBool::new(false),
    });
    let (engine, topic) = open_on(meta.clone(), store.clone()).await;
    meta.armed.store(true, std::sync::atomic::Ordering::SeqCst);

    let first = tokio::spawn({
        let (engine, topic) = (engine.clone(), topic.clone());
        async move { produce(&engine, &topic, batch(&["first"], None)).await }
    });
    // Let the commit apply; its answer is held back.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let key = engine.keys().generation(0);
    let current = meta.get(&key).await.unwrap().unwrap();
    let mut g = Generation::decode(&current.value).unwrap();
    g.number += 1;
    meta.txn(Txn::when(vec![]).then(vec![Op::put(key, g.encode())]))
        .await
        .unwrap();
    engine.sync_cluster().await.unwrap();

    let during = produce(&engine, &topic, batch(&["during"], None)).await;
    assert!(
        during.is_err(),
        "refused while the commit is unresolved: {during:?}"
    );

    assert_eq!(
        first.await.unwrap().unwrap(),
        0,
        "the commit that applied counts"
    );
    assert_eq!(
        produce(&engine, &topic, batch(&["after"], None))
            .await
            .unwrap(),
        1,
        "offsets continue after the committed one"
    );
    assert_eq!(
        values(&engine, &topic).await,
        vec![(0, "first".into()), (1, "after".into())]
    );
}
