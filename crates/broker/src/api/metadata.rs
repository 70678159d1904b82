//! Metadata: live brokers, topics with ids, and partition leaders from the cluster
//! view. A partition whose leader is not live answers LEADER_NOT_AVAILABLE; clients
//! retry until the controller has moved it.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{MetadataRequest, MetadataResponse, ResponseKind, TopicName};
use sluice_engine::cluster::ClusterView;
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
    let view = engine.view();
    let topic_ops = super::operations::reported(
        has(version, 8) && req.include_topic_authorized_operations,
        super::operations::TOPIC,
    );
    let cluster_ops = super::operations::reported(
        has(version, 8) && req.include_cluster_authorized_operations,
        super::operations::CLUSTER,
    );
    let topics = match req.topics.filter(|_| !all) {
        None => engine
            .topics()
            .iter()
            .map(|t| describe(&view, t, version).with_topic_authorized_operations(topic_ops))
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
                    Ok(topic) => describe(&engine.view(), &topic, version)
                        .with_topic_authorized_operations(topic_ops),
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
    let brokers = broker
        .live_brokers()
        .into_iter()
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(b.id.into())
                .with_host(str_bytes(b.host))
                .with_port(b.port)
                .with_rack(b.rack.map(str_bytes))
        })
        .collect();
    let controller = if has(version, 1) {
        view.controller.unwrap_or(-1)
    } else {
        -1
    };
    ResponseKind::Metadata(
        MetadataResponse::default()
            .with_brokers(brokers)
            .with_cluster_id(has(version, 2).then(|| str_bytes(broker.identity.cluster_id.clone())))
            .with_controller_id(controller.into())
            .with_cluster_authorized_operations(cluster_ops)
            .with_topics(topics),
    )
}

fn describe(view: &ClusterView, topic: &Arc<Topic>, version: i16) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(topic.record.name.clone()))))
        .with_is_internal(has(version, 1) && crate::coordinator::is_internal(&topic.record.name))
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
                    let r = MetadataResponsePartition::default().with_partition_index(p.index);
                    match view.leader(topic.record.id, p.index) {
                        Some(l) => r
                            .with_leader_id(l.broker.into())
                            .with_leader_epoch(if has(version, 7) { l.epoch } else { -1 })
                            .with_replica_nodes(vec![l.broker.into()])
                            .with_isr_nodes(vec![l.broker.into()]),
                        None => r
                            .with_error_code(ResponseError::LeaderNotAvailable.code())
                            .with_leader_id((-1).into())
                            .with_leader_epoch(-1),
                    }
                })
                .collect(),
        )
}
