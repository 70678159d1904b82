//! Transactions on a partition (RFC 0010): a transactional batch is taken only when
//! the coordinator's record has the partition in an ongoing transaction; markers take
//! their own offsets and delete their requests in the same commit; the last stable
//! offset, `read_committed` reads and the aborted index follow, and a new leader
//! rebuilds all of it from the manifests and the checkpoint.

#![allow(clippy::unwrap_used)] // a test: panicking is how it fails

use std::sync::Arc;

use sluice_engine::keyspace::{MarkerRequest, Stored, TxnPartition, TxnRecord, TxnState};
use sluice_engine::produce::{MarkerAppend, PartitionRecords};
use sluice_engine::{Engine, EngineError, Topic};
use sluice_meta::{EmbeddedStore, MetaStore, Op, Txn};
use sluice_testkit::batches::transactional;

mod common;
use common::*;

const PID: i64 = 42;

async fn record(meta: &EmbeddedStore, engine: &Engine, topic: &Topic, state: TxnState, epoch: i16) {
    let r = TxnRecord {
        producer_id: PID,
        epoch,
        state,
        timeout_ms: 60_000,
        partitions: vec![TxnPartition {
            topic: topic.record.name.clone(),
            topic_id: topic.record.id,
            partition: 0,
        }],
        ..Default::default()
    };
    let key = engine.keys().txn(0, "tx");
    meta.txn(Txn::when(vec![]).then(vec![Op::put(key, r.encode())]))
        .await
        .unwrap();
}

async fn produce_txn(
    engine: &Engine,
    topic: &Arc<Topic>,
    values: &[&str],
    seq: i32,
) -> Result<i64, EngineError> {
    let pending = engine
        .append_transactional(
            Some("tx"),
            vec![PartitionRecords {
                topic: topic.clone(),
                partition: 0,
                records: transactional(values, PID, 0, seq),
            }],
            None,
        )
        .await;
    pending.durable().await.remove(0).map(|a| a.base_offset)
}

/// Writes a marker through the engine, with its request stored first as the
/// coordinator would.
async fn marker(meta: &EmbeddedStore, engine: &Engine, topic: &Topic, commit: bool) -> i64 {
    let key = engine.keys().marker_request(topic.record.id, 0, "tx");
    let request = MarkerRequest {
        producer_id: PID,
        epoch: 0,
        commit,
        coordinator_epoch: 0,
    };
    meta.txn(Txn::when(vec![]).then(vec![Op::put(key.clone(), request.encode())]))
        .await
        .unwrap();
    let pending = engine
        .write_markers(vec![MarkerAppend {
            partition: topic.partition(0).unwrap().clone(),
            request,
            key: key.clone(),
        }])
        .await;
    let offset = pending.durable().await.remove(0).unwrap().base_offset;
    assert!(
        meta.get(&key).await.unwrap().is_none(),
        "the marker's commit deletes its request"
    );
    offset
}

async fn committed(engine: &Engine, topic: &Topic) -> sluice_engine::read::FetchedRecords {
    engine
        .read_up_to(topic.partition(0).unwrap(), 0, 1 << 20, true, true)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_late_produce_cannot_open_a_transaction() {
    let meta = EmbeddedStore::in_memory();
    let (engine, topic) = open(&meta, faulty()).await;
    // No record, then a record without the partition's transaction ongoing.
    let refused = produce_txn(&engine, &topic, &["a"], 0).await;
    assert!(
        matches!(refused, Err(EngineError::InvalidTxnState(_))),
        "{refused:?}"
    );
    record(&meta, &engine, &topic, TxnState::PrepareAbort, 0).await;
    let refused = produce_txn(&engine, &topic, &["a"], 0).await;
    assert!(
        matches!(refused, Err(EngineError::InvalidTxnState(_))),
        "{refused:?}"
    );
    // A newer epoch in the record fences the producer.
    record(&meta, &engine, &topic, TxnState::Ongoing, 1).await;
    let refused = produce_txn(&engine, &topic, &["a"], 0).await;
    assert!(
        matches!(refused, Err(EngineError::InvalidProducerEpoch { .. })),
        "{refused:?}"
    );
    assert_eq!(topic.partition(0).unwrap().read().high_watermark, 0);
}

#[tokio::test]
async fn markers_end_transactions_and_read_committed_stops_at_the_stable_offset() {
    let meta = EmbeddedStore::in_memory();
    let store = faulty();
    let (engine, topic) = open(&meta, store.clone()).await;
    let p = topic.partition(0).unwrap().clone();
    record(&meta, &engine, &topic, TxnState::Ongoing, 0).await;

    // An aborted transaction: records at 0-1, the marker at 2.
    assert_eq!(
        produce_txn(&engine, &topic, &["x", "y"], 0).await.unwrap(),
        0
    );
    assert_eq!(p.read().last_stable_offset(), 0);
    let fetched = committed(&engine, &topic).await;
    assert!(
        fetched.records.is_empty(),
        "nothing below the stable offset yet"
    );
    assert_eq!((fetched.high_watermark, fetched.last_stable_offset), (2, 0));
    assert_eq!(marker(&meta, &engine, &topic, false).await, 2);
    assert_eq!(p.read().last_stable_offset(), 3);

    // A committed one: records at 3, the marker at 4; a plain batch at 5 after it.
    record(&meta, &engine, &topic, TxnState::Ongoing, 0).await;
    assert_eq!(produce_txn(&engine, &topic, &["z"], 2).await.unwrap(), 3);
    assert_eq!(p.read().last_stable_offset(), 3);
    assert_eq!(marker(&meta, &engine, &topic, true).await, 4);
    assert_eq!(
        produce(&engine, &topic, batch(&["plain"], None))
            .await
            .unwrap(),
        5
    );

    let fetched = committed(&engine, &topic).await;
    assert_eq!((fetched.high_watermark, fetched.last_stable_offset), (6, 6));
    let aborted: Vec<(i64, i64)> = fetched
        .aborted
        .iter()
        .map(|a| (a.producer_id, a.first_offset))
        .collect();
    assert_eq!(aborted, vec![(PID, 0)]);
    assert_eq!(
        engine
            .list_offset_isolated(&p, sluice_engine::read::LATEST, true)
            .await
            .unwrap()
            .unwrap()
            .offset,
        6
    );

    // A new process for the broker rebuilds the same state from the manifests.
    drop(engine);
    let (engine, topic) = open(&meta, store).await;
    let p = topic.partition(0).unwrap().clone();
    assert_eq!(p.read().high_watermark, 6);
    assert_eq!(p.read().last_stable_offset(), 6);
    let again = committed(&engine, &topic).await;
    assert_eq!(again.aborted, fetched.aborted);
    assert_eq!(again.records, fetched.records);
}

#[tokio::test]
async fn an_open_transaction_survives_a_rebuild() {
    let meta = EmbeddedStore::in_memory();
    let store = faulty();
    let (engine, topic) = open(&meta, store.clone()).await;
    record(&meta, &engine, &topic, TxnState::Ongoing, 0).await;
    assert_eq!(
        produce(&engine, &topic, batch(&["before"], None))
            .await
            .unwrap(),
        0
    );
    assert_eq!(produce_txn(&engine, &topic, &["open"], 0).await.unwrap(), 1);
    drop(engine);
    let (engine, topic) = open(&meta, store).await;
    let p = topic.partition(0).unwrap().clone();
    assert_eq!(p.read().last_stable_offset(), 1);
    // The producer goes on in its open transaction without a new verification.
    meta.txn(Txn::when(vec![]).then(vec![Op::Delete(engine.keys().txn(0, "tx"))]))
        .await
        .unwrap();
    assert_eq!(produce_txn(&engine, &topic, &["more"], 1).await.unwrap(), 2);
    assert_eq!(marker(&meta, &engine, &topic, true).await, 3);
    assert_eq!(p.read().last_stable_offset(), 4);
}
