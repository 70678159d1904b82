//! An engine as the engine's own tests (and the crates above it) drive it: an
//! in-memory, fault-injecting object store, an engine leading a single-partition
//! topic `t` as if the controller had assigned it, produce and read helpers.

#![allow(clippy::unwrap_used)] // a test harness: panicking is how tests fail

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::ObjectStore;
use sluice_engine::keyspace::{AssignmentRecord, Leader, Stored};
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
            Op::put(keys.topic(name), record.encode()),
            Op::put(keys.assignment(record.id), assignment.encode()),
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
