//! Produce acknowledgements.

#![allow(clippy::unwrap_used)] // a test: panicking is how it fails

mod common;

use std::collections::BTreeMap;

use common::*;
use sluice_engine::keyspace::{AssignmentRecord, Leader};
use sluice_engine::produce::PartitionRecords;
use sluice_engine::TopicRecord;
use sluice_meta::{EmbeddedStore, MetaStore, Op, Txn};

/// A producer's retry of a batch on a LogAppendTime topic is answered with the
/// original's append time, as Kafka answers it (before: -1).
#[tokio::test]
async fn a_duplicate_is_answered_with_its_original_append_time() {
    let meta = EmbeddedStore::in_memory();
    let (engine, _) = open(&meta, faulty()).await;
    let record = TopicRecord {
        id: uuid::Uuid::new_v4(),
        name: "stamped".into(),
        partitions: 1,
        configs: BTreeMap::from([("message.timestamp.type".into(), "LogAppendTime".into())]),
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
    meta.txn(Txn::when(vec![]).then(vec![
        Op::put(keys.topic("stamped"), serde_json::to_vec(&record).unwrap()),
        Op::put(
            keys.assignment(record.id),
            serde_json::to_vec(&assignment).unwrap(),
        ),
    ]))
    .await
    .unwrap();
    engine.sync_cluster().await.unwrap();
    let topic = engine.topic("stamped").unwrap();
    let send = || async {
        let pending = engine
            .append(vec![PartitionRecords {
                topic: topic.clone(),
                partition: 0,
                records: batch(&["a"], Some((9, 0))),
            }])
            .await;
        pending.durable().await.remove(0).unwrap()
    };
    let first = send().await;
    assert!(first.log_append_time > 0);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let retry = send().await;
    assert_eq!(retry.base_offset, first.base_offset);
    assert_eq!(retry.log_append_time, first.log_append_time);
}
