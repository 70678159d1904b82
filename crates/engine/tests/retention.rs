//! Log start offsets and the janitor: advancing the log start hides older records,
//! survives a new leader's rebuild, and lets the janitor delete the manifests and
//! then the objects that hold only records below it.

#![allow(clippy::unwrap_used)] // a test: panicking is how it fails

use std::sync::Arc;

use sluice_engine::janitor::Janitor;
use sluice_engine::EngineError;
use sluice_meta::{EmbeddedStore, MetaStore};

mod common;
use common::*;

#[tokio::test]
async fn deleted_records_stay_deleted_and_their_objects_go() {
    let meta = EmbeddedStore::in_memory();
    let store = faulty();
    let (engine, topic) = open(&meta, store.clone()).await;
    for i in 0..5 {
        let v = format!("v{i}");
        produce(&engine, &topic, batch(&[&v, &v], None))
            .await
            .unwrap();
    }
    assert_eq!(wal_objects(&store).await, 5);
    let partition = topic.partition(0).unwrap();
    let from_5 = values_from(&engine, &topic, 5).await;

    // Beyond the high watermark: refused.
    assert!(matches!(
        engine.advance_log_start(partition, 11).await,
        Err(EngineError::OffsetOutOfRange { .. })
    ));
    // Into the third flush (offsets 4-5): the first two flushes are wholly below.
    assert_eq!(engine.advance_log_start(partition, 5).await.unwrap(), 5);
    assert_eq!(
        engine.advance_log_start(partition, 3).await.unwrap(),
        5,
        "never back"
    );
    assert!(matches!(
        engine.read(partition, 4, 1 << 20).await,
        Err(EngineError::OffsetOutOfRange { .. })
    ));
    let fetched = engine.read(partition, 5, 1 << 20).await.unwrap();
    assert_eq!(fetched.log_start_offset, 5);

    // The janitor deletes the two manifests now, their objects on the next round.
    let mut round = Janitor::default();
    engine.collect_garbage(&mut round).await.unwrap();
    assert_eq!(round.doomed().len(), 2);
    assert_eq!(wal_objects(&store).await, 5);
    engine.collect_garbage(&mut round).await.unwrap();
    assert!(round.doomed().is_empty());
    assert_eq!(wal_objects(&store).await, 3);
    let counted = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(counted(&engine.metrics.manifests_expired), 2);
    assert_eq!(counted(&engine.metrics.objects_expired), 2);
    assert_eq!(counted(&engine.metrics.log_start_moves), 1);

    // A new process rebuilds from what is left: the log starts at 5, ends at 10.
    drop(engine);
    let (engine, topic) = open_on(Arc::new(meta.clone()) as Arc<dyn MetaStore>, store).await;
    let partition = topic.partition(0).unwrap();
    let read = engine.read(partition, 5, 1 << 20).await.unwrap();
    assert_eq!((read.log_start_offset, read.high_watermark), (5, 10));
    assert_eq!(values_from(&engine, &topic, 5).await, from_5);
    assert!(matches!(
        engine.read(partition, 4, 1 << 20).await,
        Err(EngineError::OffsetOutOfRange { .. })
    ));
    produce(&engine, &topic, batch(&["next"], None))
        .await
        .unwrap();
    assert_eq!(partition.read().high_watermark, 11);
}

async fn values_from(
    engine: &sluice_engine::Engine,
    topic: &sluice_engine::Topic,
    offset: i64,
) -> Vec<i64> {
    let fetched = engine
        .read(topic.partition(0).unwrap(), offset, 1 << 20)
        .await
        .unwrap();
    let mut bytes = fetched.records.clone();
    kafka_protocol::records::RecordBatchDecoder::decode_all(&mut bytes)
        .unwrap()
        .into_iter()
        .flat_map(|set| set.records.into_iter().map(|r| r.offset))
        .collect()
}

#[tokio::test]
async fn an_orphan_is_deleted_and_pending_commits_are_fenced_first() {
    use object_store::path::Path;
    use object_store::{ObjectStoreExt, PutPayload};
    use sluice_engine::EngineConfig;

    let meta = EmbeddedStore::in_memory();
    let store = faulty();
    let (engine, topic) = open(&meta, store.clone()).await;
    produce(&engine, &topic, batch(&["kept"], None))
        .await
        .unwrap();
    // What a crash between PUT and commit leaves behind.
    let orphan = Path::from("wal/0/1/01ORPHAN.wal");
    store
        .put(&orphan, PutPayload::from_static(b"never committed"))
        .await
        .unwrap();
    assert_eq!(wal_objects(&store).await, 2);

    // Another broker runs the janitor with no grace.
    let janitor = open_engine(
        &meta,
        &store,
        EngineConfig {
            broker_id: 1,
            orphan_grace: std::time::Duration::ZERO,
            ..Default::default()
        },
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    janitor
        .collect_garbage(&mut Janitor::default())
        .await
        .unwrap();
    assert_eq!(
        wal_objects(&store).await,
        1,
        "the orphan went, the committed object stayed"
    );
    assert!(store.head(&orphan).await.is_err());

    // The first broker's next commit knew the old horizon: it is fenced (its object
    // could have been taken for an orphan), fails retriably, and the retry lands.
    assert!(matches!(
        produce(&engine, &topic, batch(&["fenced"], None)).await,
        Err(EngineError::NotLeader { .. })
    ));
    let mut retried = Err(EngineError::TimedOut);
    for _ in 0..50 {
        retried = produce(&engine, &topic, batch(&["again"], None)).await;
        if retried.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(retried.unwrap(), 1);
}

#[tokio::test]
async fn a_janitor_on_another_broker_keeps_a_live_topics_data() {
    use sluice_engine::EngineConfig;

    let meta = EmbeddedStore::in_memory();
    let store = faulty();
    // The janitor's broker opened before the topic existed. (It reads topics from
    // the store after the manifests, so even a catalog that has not caught up with
    // the topic could not make its data look deleted.)
    let janitor = open_engine(
        &meta,
        &store,
        EngineConfig {
            broker_id: 1,
            ..Default::default()
        },
    )
    .await;
    let (engine, topic) = open(&meta, store.clone()).await;
    produce(&engine, &topic, batch(&["a", "b"], None))
        .await
        .unwrap();
    let mut round = Janitor::default();
    janitor.collect_garbage(&mut round).await.unwrap();
    assert!(
        round.doomed().is_empty(),
        "nothing of a live topic is deleted"
    );
    janitor.collect_garbage(&mut round).await.unwrap();
    assert_eq!(wal_objects(&store).await, 1);
    assert_eq!(values(&engine, &topic).await.len(), 2);
}

/// A deleted topic's cached tail goes back to the broker-wide budget: once topics
/// that filled it are deleted, a new topic's records are served from memory again.
#[tokio::test]
async fn deleted_topics_give_their_tail_bytes_back() {
    let meta = EmbeddedStore::in_memory();
    let cfg = sluice_engine::EngineConfig {
        tail_bytes_per_partition: 64 << 10,
        tail_bytes_total: 256 << 10,
        ..Default::default()
    };
    let (engine, _) = open_with(cfg, Arc::new(meta.clone()), faulty()).await;
    let value = "x".repeat(30 << 10);
    for i in 0..8 {
        let topic = lead_topic(&engine, &meta, &format!("full-{i}")).await;
        for _ in 0..2 {
            produce(&engine, &topic, batch(&[&value], None))
                .await
                .unwrap();
        }
    }
    assert!(engine.tail_bytes() > 200 << 10, "{}", engine.tail_bytes());
    for i in 0..8 {
        engine.delete_topic(&format!("full-{i}")).await.unwrap();
    }
    engine.sync_cluster().await.unwrap();
    assert_eq!(
        engine.tail_bytes(),
        0,
        "the deleted topics' tails are still counted"
    );
    let fresh = lead_topic(&engine, &meta, "fresh").await;
    produce(&engine, &fresh, batch(&[&value], None))
        .await
        .unwrap();
    assert!(
        engine.tail_bytes() > 30 << 10,
        "the new topic's tail was evicted"
    );
}

/// As Kafka: a producer the partition holds no state for (new here, or its state
/// gone with the records that carried it) continues at whatever sequence it is at;
/// once known, it must stay in sequence.
#[tokio::test]
async fn a_producer_without_state_is_taken_at_any_sequence() {
    let meta = EmbeddedStore::in_memory();
    let (engine, topic) = open(&meta, faulty()).await;
    assert_eq!(
        produce(&engine, &topic, batch(&["a", "b"], Some((77, 5))))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        produce(&engine, &topic, batch(&["c"], Some((77, 7))))
            .await
            .unwrap(),
        2
    );
    assert!(matches!(
        produce(&engine, &topic, batch(&["d"], Some((77, 9)))).await,
        Err(EngineError::OutOfOrderSequence { producer_id: 77 })
    ));
}

/// ListOffsets by the largest timestamp answers the first record that has it, as
/// Kafka does (before: the last batch with it); the earliest local offset (-4,
/// KIP-405) is the log start (before: no offset).
#[tokio::test]
async fn list_offsets_ties_and_the_earliest_local_offset() {
    use sluice_engine::read::{EARLIEST_LOCAL, MAX_TIMESTAMP};
    let meta = EmbeddedStore::in_memory();
    let (engine, topic) = open(&meta, faulty()).await;
    // Every record of these batches has timestamp 1000.
    for values in [&["a", "b"][..], &["c"], &["d"]] {
        produce(&engine, &topic, batch(values, None)).await.unwrap();
    }
    let p = topic.partition(0).unwrap();
    let max = engine.list_offset(p, MAX_TIMESTAMP).await.unwrap().unwrap();
    assert_eq!((max.offset, max.timestamp), (0, 1_000));
    engine.advance_log_start(p, 2).await.unwrap();
    let local = engine
        .list_offset(p, EARLIEST_LOCAL)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(local.offset, 2);
    let max = engine.list_offset(p, MAX_TIMESTAMP).await.unwrap().unwrap();
    assert_eq!(max.offset, 2, "the first at or after the log start");
}
