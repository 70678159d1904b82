//! The group coordinator (RFC 0005): groups are sharded over the partitions of the
//! internal topic [`GROUPS_TOPIC`], whose leaders the controller assigns like any
//! partition. The broker leading shard `s` coordinates every group hashed to `s`.
//!
//! Invariants:
//! - A broker answers for a group only while it leads the group's shard; otherwise
//!   NOT_COORDINATOR, and clients look the coordinator up again.
//! - Every write of group state compares this broker's generation, so a coordinator
//!   that lost its shard (and whose generation the controller bumped) writes nothing.
//! - Committed offsets live in the metadata store, one key per group and topic, and
//!   survive coordinator failover and restarts.

pub mod assignor;
pub mod consumer;
pub mod group;
pub mod offsets;
pub mod persist;
pub mod registry;

use std::sync::{Arc, Weak};
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use sluice_engine::keyspace::{self, BrokerRecord};
use sluice_engine::partition::Partition;
use sluice_engine::Engine;

use crate::Broker;

/// The internal topic whose partitions are the coordinator shards. It holds no
/// records.
pub const GROUPS_TOPIC: &str = "__sluice_groups";

/// Whether a topic is one of the coordinators' internal topics (the groups' or the
/// transactions' shards): they hold no records and clients may not change them.
pub fn is_internal(topic: &str) -> bool {
    topic == GROUPS_TOPIC || topic == sluice_engine::transactions::TRANSACTIONS_TOPIC
}

/// Default number of shards (`--group-shards`), fixed when the cluster is created.
pub const DEFAULT_SHARDS: i32 = 16;

/// The shard of a group (see [`keyspace::shard_of`]).
pub fn shard_of(group: &str, shards: i32) -> i32 {
    keyspace::shard_of(group, shards)
}

/// A group's shard partition, if the groups topic exists yet.
fn shard_partition(engine: &Engine, group: &str) -> Option<(i32, Arc<Partition>)> {
    let topic = engine.topic(GROUPS_TOPIC)?;
    let shard = shard_of(group, topic.record.partitions);
    topic.partition(shard).cloned().map(|p| (shard, p))
}

/// The live broker coordinating `group`, or the error a client should see.
pub fn coordinator_of(broker: &Broker, group: &str) -> Result<BrokerRecord, ResponseError> {
    let (shard, partition) =
        shard_partition(&broker.engine, group).ok_or(ResponseError::CoordinatorNotAvailable)?;
    shard_leader(broker, &partition, shard)
}

/// The live leader of a coordinator shard (of groups or of transactional ids), or
/// COORDINATOR_NOT_AVAILABLE.
pub fn shard_leader(
    broker: &Broker,
    partition: &Partition,
    shard: i32,
) -> Result<BrokerRecord, ResponseError> {
    let view = broker.engine.view();
    let leader = view
        .leader(partition.topic_id, shard)
        .ok_or(ResponseError::CoordinatorNotAvailable)?;
    view.brokers
        .get(&leader.broker)
        .cloned()
        .ok_or(ResponseError::CoordinatorNotAvailable)
}

/// Shard → leader epoch, for the coordinator shards this broker leads.
pub fn led_shards(engine: &Engine) -> std::collections::BTreeMap<i32, i32> {
    engine
        .topic(GROUPS_TOPIC)
        .map(|t| {
            t.partitions
                .iter()
                .filter_map(|p| p.leader_epoch().map(|e| (p.index, e)))
                .collect()
        })
        .unwrap_or_default()
}

/// The shard of `group` if this broker leads it (its groups may not be loaded yet).
fn led_shard(engine: &Engine, group: &str) -> Result<(i32, i32), ResponseError> {
    match shard_partition(engine, group) {
        None => Err(ResponseError::CoordinatorNotAvailable),
        Some((shard, p)) => p
            .leader_epoch()
            .map(|epoch| (shard, epoch))
            .ok_or(ResponseError::NotCoordinator),
    }
}

/// The shard of `group` if this broker coordinates it: leads the shard and has
/// loaded its groups (COORDINATOR_LOAD_IN_PROGRESS until then; clients retry).
pub fn local_shard(broker: &Broker, group: &str) -> Result<i32, ResponseError> {
    let (shard, epoch) = led_shard(&broker.engine, group)?;
    if broker.shards.is_loaded(shard, epoch) {
        Ok(shard)
    } else {
        Err(ResponseError::CoordinatorLoadInProgress)
    }
}

/// Whether `member` at `generation` (a consumer group's member epoch, or a classic
/// group's generation with its static `instance`) may commit offsets for `group`.
pub fn check_member(
    broker: &Broker,
    group: &str,
    member: &str,
    generation: i32,
    instance: Option<&str>,
) -> Result<(), ResponseError> {
    broker
        .consumer_groups
        .check_commit(group, member, generation)
        .unwrap_or_else(|| {
            broker
                .groups
                .check_commit(group, member, generation, instance)
        })
}

/// Bytes as base64 strings in stored JSON.
pub(crate) mod b64 {
    use base64::Engine as _;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(Bytes::from)
            .map_err(serde::de::Error::custom)
    }
}

/// How the group coordinator runs.
#[derive(Debug, Clone, Copy)]
pub struct GroupConfig {
    /// How long a new classic group waits for more members before its first
    /// rebalance completes (Kafka's `group.initial.rebalance.delay.ms`).
    pub initial_rebalance_delay: Duration,
    /// KIP-848 groups' heartbeat interval and session timeout.
    pub consumer: consumer::Settings,
    /// Offsets of an empty group are deleted this long after it became empty or
    /// they were committed, whichever is later (Kafka's `offsets.retention.minutes`).
    pub offsets_retention: Duration,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            initial_rebalance_delay: Duration::from_secs(3),
            consumer: consumer::Settings::default(),
            offsets_retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Advances group timeouts every 100 ms and drops groups of shards this broker no
/// longer coordinates. Ends when the broker is dropped.
pub fn start_timer(
    groups: Weak<group::Groups>,
    consumer_groups: Weak<consumer::ConsumerGroups>,
    engine: Weak<Engine>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            let (Some(groups), Some(consumer_groups), Some(engine)) = (
                groups.upgrade(),
                consumer_groups.upgrade(),
                engine.upgrade(),
            ) else {
                return;
            };
            groups.retain(|g| led_shard(&engine, g).is_ok());
            groups.tick();
            consumer_groups.retain(|g| led_shard(&engine, g).is_ok());
            consumer_groups.tick();
        }
    });
}

/// Creates the groups topic if no broker has yet (any broker may; creation is
/// create-if-missing).
pub async fn ensure_groups_topic(engine: &Engine, shards: i32) {
    if engine.topic(GROUPS_TOPIC).is_some() {
        return;
    }
    match engine
        .create_topic(
            GROUPS_TOPIC,
            shards,
            -1,
            std::collections::BTreeMap::new(),
            false,
        )
        .await
    {
        Ok(_) | Err(sluice_engine::EngineError::TopicAlreadyExists { .. }) => {}
        Err(e) => tracing::warn!(error = %e, "cannot create the groups topic"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(shard_of("orders", 16), shard_of("orders", 16));
        let mut used = std::collections::BTreeSet::new();
        for i in 0..200 {
            used.insert(shard_of(&format!("group-{i}"), 16));
        }
        assert_eq!(used.len(), 16, "200 groups reach every shard");
        assert!(used.iter().all(|s| (0..16).contains(s)));
    }
}
