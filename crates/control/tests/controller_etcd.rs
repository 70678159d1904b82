//! The controller against a real etcd with its default limits (1.5 MiB per request,
//! 128 operations per transaction), started by the test on loopback.

#![allow(clippy::unwrap_used)] // a test: panicking is how it fails

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_control::membership::Membership;
use sluice_engine::keyspace::{AssignmentRecord, BrokerRecord, Generation, Roles, Stored};
use sluice_engine::{Engine, EngineConfig};
use sluice_meta::etcd::{EtcdOptions, EtcdStore};
use sluice_meta::{MetaStore, Op, Txn};
use sluice_testkit::Etcd;

async fn connect(etcd: &Etcd) -> EtcdStore {
    let opts = EtcdOptions {
        endpoints: vec![etcd.client_url().to_string()],
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match EtcdStore::connect(&opts).await {
            Ok(s) => return s,
            Err(e) if Instant::now() > deadline => panic!("etcd did not come up: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn broker(id: i32, roles: Roles) -> BrokerRecord {
    BrokerRecord {
        id,
        host: "127.0.0.1".into(),
        port: 9092 + id,
        rack: None,
        leaving: false,
        roles,
        http: None,
    }
}

/// Waits until every partition of every topic is led by one of `brokers`; the
/// number of partitions seen.
async fn wait_for_leaders(engine: &Engine, brokers: &[i32], what: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let assignments = engine
            .meta()
            .range(&engine.keys().assignments())
            .await
            .unwrap();
        let mut partitions = 0;
        let mut misplaced = 0;
        for kv in &assignments {
            let a = AssignmentRecord::decode(&kv.value).unwrap();
            partitions += a.leaders.len();
            misplaced += a
                .leaders
                .iter()
                .filter(|l| !brokers.contains(&l.broker))
                .count();
        }
        if assignments.len() == TOPICS && misplaced == 0 {
            return partitions;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {misplaced} of {partitions} partitions in {} topics not led by {brokers:?}",
            assignments.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

const TOPICS: usize = 6;

/// 300,000 partitions in six topics on three brokers; one broker goes, and 100,000
/// partitions move. Every topic changes, and the six assignment records together
/// are about 2 MB: before, the controller wrote them in one transaction, which etcd
/// refused every round, so no partition ever moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_of_300000_partitions_completes_within_etcds_limits() {
    let etcd = Etcd::start().unwrap();
    let meta: Arc<dyn MetaStore> = Arc::new(connect(&etcd).await);
    // The controller runs on a node that only compacts, so it leads nothing itself.
    let engine = Engine::open(
        EngineConfig {
            broker_id: 0,
            ..Default::default()
        },
        meta.clone(),
        Arc::new(object_store::memory::InMemory::new()),
    )
    .await
    .unwrap();
    let compactor = Roles {
        broker: false,
        compactor: true,
    };
    let membership = Membership::start(
        engine.clone(),
        broker(0, compactor),
        Duration::from_secs(6),
        None,
    );
    tokio::spawn(sluice_control::run(
        engine.clone(),
        membership.lease(),
        Vec::new(),
        Default::default(),
    ));
    // Three serving brokers, registered as their membership would: a live record
    // under a lease, and a generation.
    let keys = engine.keys();
    let mut leases = Vec::new();
    for id in 1..=3 {
        let lease = meta.grant_lease(Duration::from_secs(600)).await.unwrap();
        let live = Op::Put {
            key: keys.live(id),
            value: broker(id, Roles::default()).encode(),
            lease: Some(lease),
        };
        let generation = Generation {
            number: 1,
            owner: uuid::Uuid::new_v4(),
        };
        let generation = Op::put(keys.generation(id), generation.encode());
        meta.txn(Txn::when(vec![]).then(vec![live, generation]))
            .await
            .unwrap();
        leases.push(lease);
    }
    for t in 0..TOPICS {
        engine
            .create_topic(&format!("t{t}"), 50_000, 1, BTreeMap::new(), false)
            .await
            .unwrap();
    }
    let partitions = wait_for_leaders(&engine, &[1, 2, 3], "placement").await;
    assert_eq!(partitions, 300_000);

    let started = Instant::now();
    meta.revoke_lease(leases[2]).await.unwrap();
    wait_for_leaders(&engine, &[1, 2], "failover").await;
    eprintln!(
        "300,000 partitions failed over from broker 3 in {:?}",
        started.elapsed()
    );
}
