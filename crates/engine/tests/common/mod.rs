//! Helpers of the engine's integration tests: an in-memory fault-injecting store,
//! record batches, an engine leading one single-partition topic `t`, and reads.

#![allow(dead_code)] // each test file uses its own subset

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::ObjectStore;
use sluice_engine::keyspace::{AssignmentRecord, Leader};
use sluice_engine::produce::PartitionRecords;
use sluice_engine::{Engine, EngineConfig, EngineError, Topic, TopicRecord};
use sluice_meta::{EmbeddedStore, MetaStore, Op, Txn};
use sluice_storage::faults::{FaultSpec, FaultyStore};

pub fn faulty() -> Arc<FaultyStore> {
    Arc::new(FaultyStore::new(
        Arc::new(InMemory::new()),
        FaultSpec::default(),
    ))
}

pub async fn wal_objects(store: &FaultyStore) -> usize {
    store.list(Some(&Path::from("wal"))).count().await
}

pub fn batch(values: &[&str], producer: Option<(i64, i32)>) -> Bytes {
    batch_with(values, producer, Compression::None)
}

pub fn batch_with(
    values: &[&str],
    producer: Option<(i64, i32)>,
    compression: Compression,
) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: -1,
            producer_id: producer.map_or(-1, |p| p.0),
            producer_epoch: if producer.is_some() { 0 } else { -1 },
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // kafka-protocol starts a new batch where offset - sequence changes; one
            // batch (as a producer sends) keeps it constant, from -1 without a producer.
            sequence: producer.map_or(i as i32 - 1, |p| p.1 + i as i32),
            timestamp: 1_000,
            key: None,
            value: Some(Bytes::copy_from_slice(v.as_bytes())),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .unwrap();
    buf.freeze()
}

/// Opens an engine for broker 0 leading topic `t` (one partition). The topic and its
/// assignment are written as the controller would write them.
pub async fn open(meta: &EmbeddedStore, store: Arc<FaultyStore>) -> (Arc<Engine>, Arc<Topic>) {
    open_on(Arc::new(meta.clone()), store).await
}

/// Opens another engine (another broker id, or other settings) on the same stores.
pub async fn open_engine(
    meta: &EmbeddedStore,
    store: &Arc<FaultyStore>,
    cfg: EngineConfig,
) -> Arc<Engine> {
    Engine::open(
        cfg,
        Arc::new(meta.clone()),
        store.clone() as Arc<dyn ObjectStore>,
    )
    .await
    .unwrap()
}

pub async fn open_on(
    meta: Arc<dyn MetaStore>,
    store: Arc<FaultyStore>,
) -> (Arc<Engine>, Arc<Topic>) {
    open_with(EngineConfig::default(), meta, store).await
}

/// Like [`open_on`], with the engine's configuration.
pub async fn open_with(
    cfg: EngineConfig,
    meta: Arc<dyn MetaStore>,
    store: Arc<FaultyStore>,
) -> (Arc<Engine>, Arc<Topic>) {
    let engine = Engine::open(cfg, meta.clone(), store).await.unwrap();
    let topic = lead_topic(&engine, meta.as_ref(), "t").await;
    (engine, topic)
}

/// Topic `name` (one partition) led by broker 0, created as the controller would if
/// it does not exist.
pub async fn lead_topic(engine: &Engine, meta: &dyn MetaStore, name: &str) -> Arc<Topic> {
    if engine.topic(name).is_none() {
        let record = TopicRecord {
            id: uuid::Uuid::new_v4(),
            name: name.into(),
            partitions: 1,
            configs: BTreeMap::new(),
            pinned: BTreeMap::new(),
            defaults: Default::default(),
        };
        let assignment = AssignmentRecord {
            leaders: vec![Leader {
                broker: 0,
                epoch: 0,
            }],
        };
        let keys = engine.keys();
        let txn = Txn::when(vec![]).then(vec![
            Op::put(keys.topic(name), serde_json::to_vec(&record).unwrap()),
            Op::put(
                keys.assignment(record.id),
                serde_json::to_vec(&assignment).unwrap(),
            ),
        ]);
        meta.txn(txn).await.unwrap();
    }
    engine.sync_cluster().await.unwrap();
    engine.topic(name).unwrap()
}

pub async fn produce(
    engine: &Engine,
    topic: &Arc<Topic>,
    records: Bytes,
) -> Result<i64, EngineError> {
    let pending = engine
        .append(vec![PartitionRecords {
            topic: topic.clone(),
            partition: 0,
            records,
        }])
        .await;
    pending.durable().await.remove(0).map(|ack| ack.base_offset)
}

pub async fn values(engine: &Engine, topic: &Topic) -> Vec<(i64, String)> {
    let fetched = engine
        .read(topic.partition(0).unwrap(), 0, 1 << 20)
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut bytes = fetched.records.clone();
    for set in kafka_protocol::records::RecordBatchDecoder::decode_all(&mut bytes).unwrap() {
        for r in set.records {
            out.push((
                r.offset,
                String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
            ));
        }
    }
    out
}
