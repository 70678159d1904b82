//! Metadata a broker cannot read must not stop it following the cluster: one bad
//! record would otherwise stop every broker at once.

#![allow(clippy::unwrap_used)] // a test: panicking is how it fails

mod common;

use common::*;
use sluice_meta::{EmbeddedStore, MetaStore};

/// Before, one unparsable topic record failed every sync on every broker, and one
/// undecodable manifest failed every rebuild (so `Engine::open` failed too), and
/// with it the adoption of new generations.
#[tokio::test]
async fn an_unreadable_topic_record_or_manifest_stops_no_sync() {
    let meta = EmbeddedStore::in_memory();
    let store = faulty();
    let (engine, topic) = open(&meta, store.clone()).await;
    produce(&engine, &topic, batch(&["a"], None)).await.unwrap();
    let keys = engine.keys();

    sluice_meta::put(&meta, &keys.topic("garbage"), b"not json".to_vec())
        .await
        .unwrap();
    engine.sync_cluster().await.unwrap();
    let u = lead_topic(&engine, &meta, "u").await;
    assert!(u.partition(0).unwrap().leader_epoch().is_some());
    assert!(topic.partition(0).unwrap().leader_epoch().is_some());

    // A manifest nobody can decode may hold any partition's newest records: a
    // partition gained meanwhile is not led (it could lose them), the rest goes on.
    let bad = keys.manifest(7, 1, 1);
    sluice_meta::put(&meta, &bad, b"not a manifest".to_vec())
        .await
        .unwrap();
    let v = lead_topic(&engine, &meta, "v").await;
    assert!(v.partition(0).unwrap().leader_epoch().is_none());
    assert_eq!(
        produce(&engine, &topic, batch(&["b"], None)).await.unwrap(),
        1
    );
    meta.txn(sluice_meta::Txn::when(vec![]).then(vec![sluice_meta::Op::Delete(bad)]))
        .await
        .unwrap();
    engine.sync_cluster().await.unwrap();
    assert!(v.partition(0).unwrap().leader_epoch().is_some());
}
