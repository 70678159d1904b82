//! Compaction: write-ahead slices folded into a segment, then into a lake file, read
//! back record for record (repeated headers, null keys and values, compressed and
//! log-append-time batches), through a new leader's rebuild from the checkpoint, with
//! the janitor deleting the manifests and objects the folds made unnecessary.

#![allow(clippy::unwrap_used)] // a test: panicking is how it fails

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use kafka_protocol::records::Compression;
use object_store::path::Path;
use object_store::ObjectStore;
use sluice_engine::compaction::FoldPolicy;
use sluice_engine::janitor::Janitor;
use sluice_engine::keyspace::Stored as _;
use sluice_engine::partition::Format;
use sluice_engine::produce::PartitionRecords;
use sluice_engine::read::{OffsetAndTimestamp, MAX_TIMESTAMP};
use sluice_engine::{Engine, EngineConfig, EngineError};
use sluice_meta::{EmbeddedStore, MetaStore};
use sluice_protocol::records::{decode_batch, Record};

mod common;
use common::*;
use sluice_testkit::batches::{keyed_records, rich};

/// Every record from `from` to the high watermark, fetching 4 KiB at a time.
async fn all_records(engine: &Engine, topic: &sluice_engine::Topic, from: i64) -> Vec<Record> {
    let p = topic.partition(0).unwrap();
    let mut out: Vec<Record> = Vec::new();
    let mut next = from;
    loop {
        let fetched = engine.read(p, next, 4096).await.unwrap();
        if next >= fetched.high_watermark {
            return out;
        }
        let mut pos = 0;
        while pos < fetched.records.len() {
            let h = sluice_protocol::batch::BatchHeader::parse(&fetched.records[pos..]).unwrap();
            let b = fetched.records.slice(pos..pos + h.size);
            out.extend(
                decode_batch(&b, sluice_protocol::records::MAX_PLAIN_BYTES)
                    .unwrap()
                    .into_iter()
                    .filter(|r| r.offset >= next),
            );
            pos += h.size;
        }
        next = out.last().unwrap().offset + 1;
    }
}

fn policy(lake: bool) -> FoldPolicy {
    FoldPolicy {
        now_ms: i64::MAX / 2,
        lake_cutoff: lake.then_some(i64::MAX / 2),
        max_wait_ms: 0,
    }
}

async fn objects(store: &dyn ObjectStore, prefix: &str) -> Vec<Path> {
    store
        .list(Some(&Path::from(prefix)))
        .map(|m| m.unwrap().location)
        .collect()
        .await
}

#[tokio::test]
async fn folded_history_reads_back_identically_and_survives_a_rebuild() {
    let meta = EmbeddedStore::in_memory();
    let store = faulty();
    let (engine, topic) = open(&meta, store.clone()).await;
    for i in 0..30 {
        produce(&engine, &topic, rich(i, 7)).await.unwrap();
    }
    produce(
        &engine,
        &topic,
        batch_with(&["g1", "g2", "g3"], None, Compression::Gzip),
    )
    .await
    .unwrap();
    // An idempotent producer whose retry must still be recognised after the rebuild.
    let idempotent = batch(&["i1", "i2"], Some((42, 0)));
    produce(&engine, &topic, idempotent.clone()).await.unwrap();
    let produced = all_records(&engine, &topic, 0).await;
    assert_eq!(produced.len(), 30 * 7 + 3 + 2);
    assert!(produced
        .iter()
        .any(|r| r.headers.len() == 2 && r.headers[1].1.is_none()));
    let p = topic.partition(0).unwrap();
    let record = topic.record.clone();

    // Segment: every write-ahead slice (32 entries) but the newest into one object.
    assert!(engine.fold(&record, p, policy(false)).await.unwrap());
    assert!(
        !engine.fold(&record, p, policy(false)).await.unwrap(),
        "nothing left"
    );
    assert_eq!(p.read().index.len(), 2);
    assert_eq!(objects(store.as_ref(), "seg").await.len(), 1);
    assert_eq!(all_records(&engine, &topic, 0).await, produced);

    // Lake: the segment becomes Parquet, the one copy of those records.
    assert!(engine.fold(&record, p, policy(true)).await.unwrap());
    assert_eq!(p.read().index[0].format, Format::Parquet);
    let lake = objects(store.as_ref(), "lake/t/partition=0").await;
    assert_eq!(lake.len(), 1, "{lake:?}");
    assert_eq!(all_records(&engine, &topic, 0).await, produced);
    assert_eq!(all_records(&engine, &topic, 100).await, produced[100..]);
    // Offsets by time come from the Parquet too.
    let at = |t| engine.list_offset(p, t);
    assert_eq!(
        at(1_000_150).await.unwrap(),
        Some(OffsetAndTimestamp {
            offset: 14,
            timestamp: 1_000_200
        })
    );
    assert_eq!(
        at(MAX_TIMESTAMP).await.unwrap().map(|o| o.timestamp),
        Some(1_002_906)
    );

    // The janitor: every manifest is below folded_to, so manifests go, then their
    // write-ahead objects; the segment is unreferenced but within the grace period.
    let mut round = Janitor::default();
    engine.collect_garbage(&mut round).await.unwrap();
    assert_eq!(round.doomed().len(), 32);
    engine.collect_garbage(&mut round).await.unwrap();
    assert_eq!(wal_objects(&store).await, 0);
    assert_eq!(
        meta.range(&engine.keys().manifests()).await.unwrap().len(),
        0
    );
    assert_eq!(objects(store.as_ref(), "seg").await.len(), 1);

    // A new leader rebuilds from the checkpoint alone.
    drop(engine);
    let (engine, topic) =
        open_on(Arc::new(meta.clone()) as Arc<dyn MetaStore>, store.clone()).await;
    assert_eq!(all_records(&engine, &topic, 0).await, produced);
    // The producer's retry is recognised (its state was in the checkpoint), and
    // new records follow the folded ones.
    assert_eq!(produce(&engine, &topic, idempotent).await.unwrap(), 213);
    assert_eq!(
        produce(&engine, &topic, batch(&["after"], None))
            .await
            .unwrap(),
        215
    );
    assert!(matches!(
        produce(&engine, &topic, batch(&["i3"], Some((42, 5)))).await,
        Err(EngineError::OutOfOrderSequence { producer_id: 42 })
    ));

    // With no grace, the replaced segment is an orphan and goes.
    let janitor = open_engine(
        &meta,
        &store,
        EngineConfig {
            broker_id: 1,
            orphan_grace: Duration::ZERO,
            ..Default::default()
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    janitor
        .collect_garbage(&mut Janitor::default())
        .await
        .unwrap();
    assert!(objects(store.as_ref(), "seg").await.is_empty());
    assert_eq!(objects(store.as_ref(), "lake").await, lake);
    assert_eq!(
        all_records(&engine, &topic, 0).await[..produced.len()],
        produced
    );
}

#[tokio::test]
async fn retention_drops_folded_files_from_the_checkpoint() {
    let meta = EmbeddedStore::in_memory();
    let store = faulty();
    let (engine, topic) = open(&meta, store.clone()).await;
    let p = topic.partition(0).unwrap();
    let record = topic.record.clone();
    for round in 0..3 {
        for i in 0..4 {
            produce(&engine, &topic, rich(round * 4 + i, 5))
                .await
                .unwrap();
        }
        assert!(engine.fold(&record, p, policy(true)).await.unwrap());
    }
    assert_eq!(p.read().checkpoint.files.len(), 3);
    assert_eq!(p.read().checkpoint.folded_to, 60);
    // Into the second file: the first leaves the checkpoint, the others stay.
    engine.advance_log_start(p, 25).await.unwrap();
    let files = p.read().checkpoint.files.clone();
    assert_eq!(
        files.iter().map(|f| f.base_offset).collect::<Vec<_>>(),
        vec![20, 40]
    );
    let kept = all_records(&engine, &topic, 25).await;
    assert_eq!(kept.first().map(|r| r.offset), Some(25));
    assert_eq!(kept.len(), 35);
    drop(engine);
    let (engine, topic) = open_on(Arc::new(meta.clone()) as Arc<dyn MetaStore>, store).await;
    assert_eq!(all_records(&engine, &topic, 25).await, kept);
    assert!(matches!(
        engine.read(topic.partition(0).unwrap(), 24, 1 << 20).await,
        Err(EngineError::OffsetOutOfRange { .. })
    ));
}

fn key_values(records: &[Record]) -> Vec<(i64, String, Option<String>)> {
    let text = |b: &Option<Bytes>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
    records
        .iter()
        .map(|r| (r.offset, text(&r.key).unwrap_or_default(), text(&r.value)))
        .collect()
}

#[tokio::test]
async fn log_compaction_keeps_the_latest_value_per_key() {
    let meta = EmbeddedStore::in_memory();
    let store = faulty();
    let (engine, topic) = open(&meta, store.clone()).await;
    let p = topic.partition(0).unwrap();
    for round in 0..4 {
        let values: Vec<String> = (0..4).map(|k| format!("r{round}-k{k}")).collect();
        let batch: Vec<(&str, Option<&str>)> = ["k0", "k1", "k2", "k3"]
            .into_iter()
            .zip(values.iter().map(|v| Some(v.as_str())))
            .collect();
        produce(&engine, &topic, keyed_records(&batch))
            .await
            .unwrap();
    }
    // A tombstone for k2 (old enough to be dropped), then the active segment.
    produce(&engine, &topic, keyed_records(&[("k2", None)]))
        .await
        .unwrap();
    produce(&engine, &topic, keyed_records(&[("k0", Some("active"))]))
        .await
        .unwrap();
    let mut record = topic.record.clone();
    for (k, v) in [
        ("cleanup.policy", "compact"),
        ("segment.bytes", "14"),
        ("min.cleanable.dirty.ratio", "0.5"),
        ("delete.retention.ms", "1000"),
    ] {
        record.configs.insert(k.into(), v.into());
    }
    assert!(engine.clean(&record, p, 1_000_000).await.unwrap());
    let expected = vec![
        (12, "k0".to_string(), Some("r3-k0".to_string())),
        (13, "k1".into(), Some("r3-k1".into())),
        (15, "k3".into(), Some("r3-k3".into())),
        (17, "k0".into(), Some("active".into())),
    ];
    assert_eq!(key_values(&all_records(&engine, &topic, 0).await), expected);
    // Offsets keep their gaps; a fetch inside one starts at the next record.
    assert_eq!(all_records(&engine, &topic, 3).await[0].offset, 12);
    assert_eq!(p.read().high_watermark, 18);
    assert!(
        !engine.clean(&record, p, 1_000_000).await.unwrap(),
        "nothing dirty"
    );

    // A tombstone younger than delete.retention.ms stays; k0's value at 17 left
    // the active segment, so the one at 12 goes.
    produce(&engine, &topic, keyed_records(&[("k1", None)]))
        .await
        .unwrap();
    produce(&engine, &topic, keyed_records(&[("k9", Some("active"))]))
        .await
        .unwrap();
    assert!(engine.clean(&record, p, 5_500).await.unwrap());
    let cleaned = key_values(&all_records(&engine, &topic, 0).await);
    assert_eq!(
        cleaned,
        vec![
            (15, "k3".to_string(), Some("r3-k3".to_string())),
            (17, "k0".into(), Some("active".into())),
            (18, "k1".into(), None),
            (19, "k9".into(), Some("active".into())),
        ]
    );

    // The cleaned history survives a rebuild and a fold into the lake.
    drop(engine);
    let (engine, topic) = open_on(Arc::new(meta.clone()) as Arc<dyn MetaStore>, store).await;
    assert_eq!(key_values(&all_records(&engine, &topic, 0).await), cleaned);
    let p = topic.partition(0).unwrap();
    assert!(engine.fold(&record, p, policy(true)).await.unwrap());
    assert_eq!(p.read().index[0].format, Format::Parquet);
    assert_eq!(key_values(&all_records(&engine, &topic, 0).await), cleaned);
}

/// Registers brokers as their membership would: 0 serves clients only, 1 only
/// compacts.
async fn register_roles(meta: &EmbeddedStore, engine: &Engine) {
    use sluice_engine::keyspace::{BrokerRecord, Roles};
    for (id, broker, compactor) in [(0, true, false), (1, false, true)] {
        let record = BrokerRecord {
            id,
            host: "127.0.0.1".into(),
            port: 9092 + id,
            rack: None,
            leaving: false,
            roles: Roles { broker, compactor },
            http: None,
        };
        meta.txn(
            sluice_meta::Txn::when(vec![]).then(vec![sluice_meta::Op::put(
                engine.keys().live(id),
                serde_json::to_vec(&record).unwrap(),
            )]),
        )
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn a_compactor_only_broker_folds_what_another_leads() {
    let meta = EmbeddedStore::in_memory();
    let store = faulty();
    let (leader, topic) = open(&meta, store.clone()).await;
    register_roles(&meta, &leader).await;
    let compactor = open_engine(
        &meta,
        &store,
        EngineConfig {
            broker_id: 1,
            ..Default::default()
        },
    )
    .await;
    leader.sync_cluster().await.unwrap();
    let p = topic.partition(0).unwrap();
    assert_eq!(leader.view().compactor(p.topic_id, 0), Some(1));
    assert_eq!(compactor.view().compactor(p.topic_id, 0), Some(1));
    for i in 0..10 {
        produce(&leader, &topic, rich(i, 5)).await.unwrap();
    }
    let produced = all_records(&leader, &topic, 0).await;

    // The leader does not compact; the compactor folds from a rebuilt state (the
    // records are decades old, so into the lake, all ten slices).
    leader.compact().await;
    assert_eq!(p.read().index.len(), 10);
    compactor.compact().await;
    let (stored, _) = {
        let kv = meta
            .get(&leader.keys().checkpoint(p.topic_id, 0))
            .await
            .unwrap()
            .expect("the compactor committed a checkpoint");
        (
            sluice_engine::compaction::Checkpoint::decode(&kv.value).unwrap(),
            kv.mod_revision,
        )
    };
    assert_eq!(stored.folded_to, 50);
    assert_eq!(stored.files.len(), 1);
    assert_eq!(p.read().index.len(), 10, "the leader has not looked yet");

    // The leader adopts the checkpoint at its next round; reads are unchanged.
    leader.compact().await;
    assert_eq!(p.read().index.len(), 1);
    assert_eq!(p.read().index[0].format, Format::Parquet);
    assert_eq!(all_records(&leader, &topic, 0).await, produced);

    // The janitor deletes the folded manifests and their objects; reads still work.
    let mut round = Janitor::default();
    leader.collect_garbage(&mut round).await.unwrap();
    assert_eq!(round.doomed().len(), 10);
    leader.collect_garbage(&mut round).await.unwrap();
    assert_eq!(wal_objects(&store).await, 0);
    assert_eq!(all_records(&leader, &topic, 0).await, produced);

    // More data, folded remotely again; the leader's retention then meets a
    // checkpoint it has not adopted, adopts it, and moves the log start.
    for i in 10..20 {
        produce(&leader, &topic, rich(i, 5)).await.unwrap();
    }
    compactor.compact().await;
    assert_eq!(leader.advance_log_start(p, 60).await.unwrap(), 60);
    let files = p.read().checkpoint.files.clone();
    assert_eq!(
        files.len(),
        1,
        "the first file is below the log start: {files:?}"
    );
    assert_eq!(files[0].base_offset, 50);
    let kept = all_records(&leader, &topic, 60).await;
    assert_eq!((kept.len(), kept[0].offset), (40, 60));
    // A new leader process rebuilds the same from the checkpoint.
    drop(leader);
    let (fresh, fresh_topic) =
        open_on(Arc::new(meta.clone()) as Arc<dyn MetaStore>, store.clone()).await;
    assert_eq!(all_records(&fresh, &fresh_topic, 60).await, kept);
}

/// Many short-lived idempotent producers (each Java process start is a new one):
/// a fold's checkpoint keeps one batch per producer, so it stays far below etcd's
/// request limit; and state of producers idle past `producer.id.expiration.ms` is
/// dropped, as Kafka drops it.
#[tokio::test]
async fn producer_state_stays_small_and_expires() {
    let meta = EmbeddedStore::in_memory();
    let cfg = sluice_engine::EngineConfig {
        producer_id_expiration: std::time::Duration::from_millis(300),
        ..Default::default()
    };
    let store = faulty();
    let (engine, topic) = open_with(cfg.clone(), Arc::new(meta.clone()), store.clone()).await;
    let p = topic.partition(0).unwrap();
    for round in 0..5 {
        let mut pending = Vec::new();
        for producer in 0..5_000i64 {
            pending.push(
                engine
                    .append(vec![PartitionRecords {
                        topic: topic.clone(),
                        partition: 0,
                        records: batch(&["v"], Some((1_000 + producer, round))),
                    }])
                    .await,
            );
        }
        for pending in pending {
            for ack in pending.durable().await {
                ack.unwrap();
            }
        }
    }
    assert_eq!(p.read().high_watermark, 25_000);
    assert!(engine.fold(&topic.record, p, policy(false)).await.unwrap());
    let stored = meta
        .get(&engine.keys().checkpoint(p.topic_id, 0))
        .await
        .unwrap()
        .expect("a checkpoint");
    eprintln!(
        "checkpoint of 5,000 producers: {} bytes",
        stored.value.len()
    );
    assert!(
        stored.value.len() < 1 << 20,
        "checkpoint of {} bytes",
        stored.value.len()
    );
    // A retry of a producer's last batch is still recognised after a rebuild from
    // the checkpoint.
    drop(engine);
    let (engine, topic) = open_with(cfg, Arc::new(meta.clone()), store).await;
    let p = topic.partition(0).unwrap();
    assert_eq!(p.read().producers.len(), 5_000);
    let last = batch(&["v"], Some((1_000, 4)));
    let again = produce(&engine, &topic, last.clone()).await.unwrap();
    assert!(again < 25_000, "retry appended at {again}");

    // Idle past the expiration: the next round of expiry drops every producer.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    produce(&engine, &topic, batch(&["fresh"], Some((9, 0))))
        .await
        .unwrap();
    engine.expire_producers();
    assert_eq!(
        p.read().producers.len(),
        1,
        "only the fresh producer is left"
    );
    assert!(engine.fold(&topic.record, p, policy(false)).await.unwrap());
    let c = sluice_engine::compaction::Checkpoint::decode(
        &meta
            .get(&engine.keys().checkpoint(p.topic_id, 0))
            .await
            .unwrap()
            .unwrap()
            .value,
    )
    .unwrap();
    assert_eq!(c.producers.len(), 1);
}

/// A file replaced by compaction keeps the grace period from the round the janitor
/// first saw it unreferenced, not from when it was written; and since it can never
/// be referenced again, deleting it needs no horizon bump, which would fail every
/// broker's in-flight produces. Before, a segment older than the grace went at the
/// first round after its replacement, with a bump.
#[tokio::test]
async fn a_replaced_file_keeps_its_grace_and_goes_without_fencing_produces() {
    let meta = EmbeddedStore::in_memory();
    let store = faulty();
    let (engine, topic) = open(&meta, store.clone()).await;
    for i in 0..5 {
        produce(&engine, &topic, rich(i, 3)).await.unwrap();
    }
    let p = topic.partition(0).unwrap();
    let record = topic.record.clone();
    assert!(engine.fold(&record, p, policy(false)).await.unwrap());
    let grace = Duration::from_millis(600);
    let janitor = open_engine(
        &meta,
        &store,
        EngineConfig {
            broker_id: 1,
            orphan_grace: grace,
            ..Default::default()
        },
    )
    .await;
    let mut round = Janitor::default();
    // The segment is older than the grace period when it is replaced.
    tokio::time::sleep(grace).await;
    janitor.collect_garbage(&mut round).await.unwrap();
    assert!(engine.fold(&record, p, policy(true)).await.unwrap());
    let horizon = || async {
        meta.get(&engine.keys().gc_horizon())
            .await
            .unwrap()
            .map(|kv| kv.mod_revision)
    };
    let before = horizon().await;
    janitor.collect_garbage(&mut round).await.unwrap();
    assert_eq!(
        objects(store.as_ref(), "seg").await.len(),
        1,
        "replaced just now: kept for the grace period"
    );
    tokio::time::sleep(grace).await;
    janitor.collect_garbage(&mut round).await.unwrap();
    assert!(objects(store.as_ref(), "seg").await.is_empty());
    assert_eq!(horizon().await, before, "no horizon bump");
    // So a produce in flight is not fenced.
    produce(&engine, &topic, batch(&["next"], None))
        .await
        .unwrap();
}

/// A deleted topic's Iceberg table goes with it: its metadata objects and its
/// `lake_table` key. Before, both stayed for ever. A topic created again under the
/// same name keeps the table directory's version-named files, which are its own.
#[tokio::test]
async fn a_deleted_topics_lake_table_is_deleted() {
    let meta = EmbeddedStore::in_memory();
    let store = faulty();
    let cfg = EngineConfig {
        object_root: Some("s3://bucket".into()),
        ..Default::default()
    };
    let (engine, topic) = open_with(cfg, Arc::new(meta.clone()), store.clone()).await;
    let to_lake = |topic: Arc<sluice_engine::Topic>| {
        let engine = engine.clone();
        async move {
            for i in 0..3 {
                produce(&engine, &topic, rich(i, 3)).await.unwrap();
            }
            let p = topic.partition(0).unwrap();
            assert!(engine.fold(&topic.record, p, policy(true)).await.unwrap());
            engine.publish_tables().await.unwrap();
        }
    };
    let tables = || async {
        meta.range(&engine.keys().lake_tables())
            .await
            .unwrap()
            .len()
    };
    to_lake(topic.clone()).await;
    let table_dir = "lake/_iceberg/kafka/t";
    assert_eq!(tables().await, 1);
    assert!(objects(store.as_ref(), table_dir).await.len() >= 5);

    engine.delete_topic("t").await.unwrap();
    engine.publish_tables().await.unwrap();
    assert_eq!(tables().await, 0, "the lake_table key stayed");
    assert_eq!(
        objects(store.as_ref(), table_dir).await,
        Vec::<Path>::new(),
        "the table's metadata stayed"
    );

    // Deleted while a topic of the same name has its own table: only the deleted
    // table's own objects go.
    let again = lead_topic(&engine, &meta, "t").await;
    to_lake(again.clone()).await;
    let first_table = objects(store.as_ref(), table_dir).await;
    engine.delete_topic("t").await.unwrap();
    let third = lead_topic(&engine, &meta, "t").await;
    to_lake(third).await;
    let left = objects(store.as_ref(), table_dir).await;
    let named = |suffix: &str| left.iter().any(|o| o.as_ref().ends_with(suffix));
    assert!(named("/v1.metadata.json"), "{left:?}");
    assert!(named("/version-hint.text"), "{left:?}");
    assert!(
        !left
            .iter()
            .any(|o| first_table.contains(o) && o.as_ref().ends_with("-m0.avro")),
        "the deleted table's manifests stayed: {left:?}"
    );
    assert_eq!(tables().await, 1);
}

/// A compacted topic with the lake on keeps cleaning, and its cleaned files are
/// sized by what they keep. Before, a cleaned lake file counted every byte ever
/// cleaned into it: from the third round on the dirty share never reached the
/// ratio, so cleaning stopped for good, and `retention.bytes` (which sums those
/// sizes) took the inflated head for a large one and deleted live keys.
#[tokio::test]
async fn a_compacted_topic_in_the_lake_keeps_cleaning_and_stays_small() {
    let meta = EmbeddedStore::in_memory();
    let store = faulty();
    let (engine, topic) = open(&meta, store.clone()).await;
    let p = topic.partition(0).unwrap();
    let mut record = topic.record.clone();
    for (k, v) in [
        ("cleanup.policy", "compact"),
        ("segment.bytes", "14"),
        ("min.cleanable.dirty.ratio", "0.5"),
    ] {
        record.configs.insert(k.into(), v.into());
    }
    let keys: Vec<String> = (0..100).map(|k| format!("key-{k:03}")).collect();
    for round in 0..8 {
        let values: Vec<String> = (0..100)
            .map(|k| format!("{round}-{k}-{}", "x".repeat(100)))
            .collect();
        let batch: Vec<(&str, Option<&str>)> = keys
            .iter()
            .map(String::as_str)
            .zip(values.iter().map(|v| Some(v.as_str())))
            .collect();
        let batch = keyed_records(&batch);
        let round_bytes = batch.len() as u64;
        produce(&engine, &topic, batch).await.unwrap();
        // The active segment.
        produce(&engine, &topic, keyed_records(&[("active", Some("a"))]))
            .await
            .unwrap();
        engine.fold(&record, p, policy(true)).await.unwrap();
        produce(&engine, &topic, keyed_records(&[("active", Some("a"))]))
            .await
            .unwrap();
        assert!(
            engine.clean(&record, p, 1_000_000).await.unwrap(),
            "round {round}: no cleaning"
        );
        let index = p.read().index.clone();
        assert_eq!(index[0].format, Format::Parquet);
        let total: u64 = index.iter().map(|e| e.len).sum();
        assert!(
            total < 3 * round_bytes,
            "round {round}: {total} bytes counted for a log of 100 keys ({round_bytes} per round)"
        );
    }
    let latest = key_values(&all_records(&engine, &topic, 0).await);
    let values: BTreeMap<String, Option<String>> =
        latest.into_iter().map(|(_, k, v)| (k, v)).collect();
    assert_eq!(
        values.len(),
        101,
        "one value per key, and the active record"
    );
    assert!(keys
        .iter()
        .all(|k| values[k].as_deref().is_some_and(|v| v.starts_with("7-"))));
}

/// A leader that is its own compactor and finds its checkpoint rewritten by someone
/// else (a compactor that worked from an older view) adopts it after the failed
/// compare. Before, it kept the stale revision and every later fold failed until
/// leadership moved.
#[tokio::test]
async fn a_leader_adopts_a_checkpoint_written_under_it() {
    let meta = EmbeddedStore::in_memory();
    let store = faulty();
    let (engine, topic) = open(&meta, store.clone()).await;
    let p = topic.partition(0).unwrap();
    let record = topic.record.clone();
    for i in 0..4 {
        produce(&engine, &topic, rich(i, 2)).await.unwrap();
    }
    assert!(engine.fold(&record, p, policy(false)).await.unwrap());
    // Someone else writes the checkpoint again (same contents, new revision).
    let key = engine.keys().checkpoint(p.topic_id, p.index);
    let stored = meta.get(&key).await.unwrap().unwrap();
    sluice_meta::put(&meta, &key, stored.value.clone())
        .await
        .unwrap();
    for i in 4..8 {
        produce(&engine, &topic, rich(i, 2)).await.unwrap();
    }
    assert!(
        !engine.fold(&record, p, policy(false)).await.unwrap(),
        "the stale compare fails once"
    );
    assert!(
        engine.fold(&record, p, policy(false)).await.unwrap(),
        "then the leader works from the stored checkpoint"
    );
}
