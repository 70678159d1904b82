//! Metadata: brokers, topics with ids, and partition leaders (this broker).

use std::sync::Arc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{MetadataRequest, MetadataResponse, ResponseKind, TopicName};
use sluice_engine::{EngineError, Topic};
use uuid::Uuid;

use crate::{errors, has, str_bytes, Broker};

pub async fn handle(broker: &Broker, req: MetadataRequest, version: i16) -> ResponseKind {
    let engine = &broker.engine;
    // Before v4 every named topic is auto-created (if the broker allows it).
    let allow_create = version < 4 || req.allow_auto_topic_creation;
    // v0 cannot send null: there an empty list means every topic.
    let all = match &req.topics {
        None => true,
        Some(t) => t.is_empty() && version == 0,
    };
    let topics = match req.topics.filter(|_| !all) {
        None => engine
            .topics()
            .iter()
            .map(|t| describe(broker, t, version))
            .collect(),
        Some(requested) => {
            let mut out = Vec::with_capacity(requested.len());
            for t in requested {
                let found = match &t.name {
                    Some(name) if allow_create => engine.topic_or_auto_create(name.as_str()).await,
                    Some(name) => engine
                        .topic(name.as_str())
                        .ok_or_else(|| EngineError::unknown_topic(name.as_str())),
                    None => engine
                        .topic_by_id(t.topic_id)
                        .ok_or_else(|| EngineError::unknown_topic(&t.topic_id.to_string())),
                };
                out.push(match found {
                    Ok(topic) => describe(broker, &topic, version),
                    Err(e) => MetadataResponseTopic::default()
                        .with_name(t.name.clone())
                        .with_topic_id(if t.name.is_some() || !has(version, 10) {
                            Uuid::nil()
                        } else {
                            t.topic_id
                        })
                        .with_error_code(errors::code(&e)),
                });
            }
            out
        }
    };
    let id = &broker.identity;
    ResponseKind::Metadata(
        MetadataResponse::default()
            .with_brokers(vec![MetadataResponseBroker::default()
                .with_node_id(id.node_id.into())
                .with_host(str_bytes(id.host.clone()))
                .with_port(id.port)
                .with_rack(id.rack.clone().map(str_bytes))])
            .with_cluster_id(has(version, 2).then(|| str_bytes(id.cluster_id.clone())))
            .with_controller_id(if has(version, 1) { id.node_id } else { -1 }.into())
            .with_topics(topics),
    )
}

fn describe(broker: &Broker, topic: &Arc<Topic>, version: i16) -> MetadataResponseTopic {
    let node = broker.identity.node_id;
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(topic.record.name.clone()))))
        .with_topic_id(if has(version, 10) {
            topic.record.id
        } else {
            Uuid::nil()
        })
        .with_partitions(
            topic
                .partitions
                .iter()
                .map(|p| {
                    MetadataResponsePartition::default()
                        .with_partition_index(p.index)
                        .with_leader_id(node.into())
                        .with_leader_epoch(if has(version, 7) { 0 } else { -1 })
                        .with_replica_nodes(vec![node.into()])
                        .with_isr_nodes(vec![node.into()])
                })
                .collect(),
        )
}
