//! What the handlers' tests share: a single broker as the server runs it (registered,
//! controller of itself, coordinating every shard), on a metadata store of the test's
//! choosing, and a store wrapper that refuses some writes.

#![allow(clippy::unwrap_used)] // tests: panicking is how they fail

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sluice_engine::keyspace::BrokerRecord;
use sluice_engine::{Engine, EngineConfig};
use sluice_meta::{
    EmbeddedStore, KeyValue, LeaseId, MetaError, MetaStore, Op, Txn, TxnResult, WatchEvent,
};
use tokio::sync::mpsc;

use sluice_control::membership::Membership;

use crate::{coordinator, Broker, BrokerIdentity};

pub fn record(id: i32) -> BrokerRecord {
    BrokerRecord {
        id,
        host: "127.0.0.1".into(),
        port: 9092 + id,
        rack: None,
        leaving: false,
        roles: Default::default(),
        http: None,
    }
}

/// Broker 0 on `meta`, with topic `t` (one partition) and four group shards.
pub async fn broker_on(meta: Arc<dyn MetaStore>) -> Broker {
    let engine = Engine::open(
        EngineConfig::default(),
        meta,
        Arc::new(object_store::memory::InMemory::new()),
    )
    .await
    .unwrap();
    let membership = Membership::start(engine.clone(), record(0), Duration::from_secs(6), None);
    tokio::spawn(sluice_control::run(
        engine.clone(),
        membership.lease(),
        Vec::new(),
        Default::default(),
    ));
    // The membership's lease lives as long as the test.
    std::mem::forget(membership);
    coordinator::ensure_groups_topic(&engine, 4).await;
    engine
        .create_topic("t", 1, 1, BTreeMap::new(), false)
        .await
        .unwrap();
    Broker::with_groups(
        engine,
        BrokerIdentity {
            node_id: 0,
            host: "127.0.0.1".into(),
            port: 9092,
            rack: None,
            cluster_id: "test".into(),
        },
        coordinator::GroupConfig {
            initial_rebalance_delay: Duration::ZERO,
            ..Default::default()
        },
    )
}

/// Waits until the broker coordinates `group` (its shard led and loaded).
pub async fn coordinating(broker: &Broker, group: &str) {
    for _ in 0..200 {
        if coordinator::local_shard(broker, group).is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the broker never coordinated {group}");
}

/// An embedded store whose writes of group state fail as unavailable while
/// `cut` is set: a coordinator cut off from the metadata store for those.
#[derive(Clone)]
pub struct CutOff {
    pub inner: EmbeddedStore,
    pub cut: Arc<AtomicBool>,
}

impl CutOff {
    pub fn new() -> Self {
        Self {
            inner: EmbeddedStore::in_memory(),
            cut: Arc::new(AtomicBool::new(false)),
        }
    }
}

#[async_trait]
impl MetaStore for CutOff {
    async fn get(&self, key: &str) -> sluice_meta::Result<Option<KeyValue>> {
        self.inner.get(key).await
    }
    async fn range(&self, prefix: &str) -> sluice_meta::Result<Vec<KeyValue>> {
        self.inner.range(prefix).await
    }
    async fn txn(&self, txn: Txn) -> sluice_meta::Result<TxnResult> {
        let state = |op: &Op| matches!(op, Op::Put { key, .. } if key.ends_with("/state"));
        if self.cut.load(Ordering::SeqCst) && txn.success.iter().any(state) {
            return Err(MetaError::Unavailable("cut off".into()));
        }
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
