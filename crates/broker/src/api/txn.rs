//! The transactional producer's requests to its coordinator: AddPartitionsToTxn (the
//! client versions, 0-3), AddOffsetsToTxn, TxnOffsetCommit and EndTxn (RFC 0010).

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, EndTxnRequest, EndTxnResponse, ResponseKind,
    TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use sluice_engine::keyspace::TxnPartition;

use crate::coordinator::offsets::CommittedOffset;
use crate::errors::outcome_code;
use crate::{transactions, Broker};

/// An older client's error for a fenced producer: PRODUCER_FENCED arrived with
/// version 2 of these responses; before, INVALID_PRODUCER_EPOCH said it.
fn for_version(e: ResponseError, version: i16, fenced_since: i16) -> ResponseError {
    if e == ResponseError::ProducerFenced && version < fenced_since {
        ResponseError::InvalidProducerEpoch
    } else {
        e
    }
}

pub async fn add_partitions(
    broker: &Broker,
    req: AddPartitionsToTxnRequest,
    version: i16,
) -> ResponseKind {
    let engine = &broker.engine;
    let id = req.v3_and_below_transactional_id.to_string();
    let mut wanted = Vec::new();
    let mut unknown = Vec::new();
    for t in &req.v3_and_below_topics {
        match engine.topic(t.name.as_str()) {
            Some(topic) => {
                for &p in &t.partitions {
                    if topic.partition(p).is_some() {
                        wanted.push(TxnPartition {
                            topic: topic.record.name.clone(),
                            topic_id: topic.record.id,
                            partition: p,
                        });
                    } else {
                        unknown.push((t.name.to_string(), p));
                    }
                }
            }
            None => unknown.extend(t.partitions.iter().map(|p| (t.name.to_string(), *p))),
        }
    }
    // As Kafka: an unknown partition fails itself, and the others are not attempted.
    let outcome = if unknown.is_empty() {
        transactions::add(
            engine,
            &id,
            req.v3_and_below_producer_id.0,
            req.v3_and_below_producer_epoch,
            &wanted,
            None,
        )
        .await
        .err()
        .map(|e| for_version(e, version, 2))
    } else {
        None
    };
    let results = req
        .v3_and_below_topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|&p| {
                    let code = if unknown.iter().any(|(n, q)| n == t.name.as_str() && *q == p) {
                        ResponseError::UnknownTopicOrPartition.code()
                    } else if !unknown.is_empty() {
                        ResponseError::OperationNotAttempted.code()
                    } else {
                        outcome_code(outcome)
                    };
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(p)
                        .with_partition_error_code(code)
                })
                .collect();
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(partitions)
        })
        .collect();
    ResponseKind::AddPartitionsToTxn(
        AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results),
    )
}

pub async fn add_offsets(
    broker: &Broker,
    req: AddOffsetsToTxnRequest,
    version: i16,
) -> ResponseKind {
    let outcome = transactions::add(
        &broker.engine,
        req.transactional_id.as_str(),
        req.producer_id.0,
        req.producer_epoch,
        &[],
        Some(req.group_id.as_str()),
    )
    .await
    .err()
    .map(|e| for_version(e, version, 2));
    ResponseKind::AddOffsetsToTxn(
        AddOffsetsToTxnResponse::default().with_error_code(outcome_code(outcome)),
    )
}

pub async fn end(broker: &Broker, req: EndTxnRequest, version: i16) -> ResponseKind {
    let outcome = transactions::end(
        &broker.engine,
        req.transactional_id.as_str(),
        req.producer_id.0,
        req.producer_epoch,
        req.committed,
    )
    .await
    .err()
    .map(|e| for_version(e, version, 2));
    ResponseKind::EndTxn(EndTxnResponse::default().with_error_code(outcome_code(outcome)))
}

pub async fn commit_offsets(
    broker: &Broker,
    req: TxnOffsetCommitRequest,
    version: i16,
) -> ResponseKind {
    let engine = &broker.engine;
    let now = engine.clock().now_ms();
    let mut offsets: BTreeMap<String, crate::coordinator::offsets::TopicOffsets> = BTreeMap::new();
    for t in &req.topics {
        let topic_id = engine.topic(t.name.as_str()).map(|t| t.record.id);
        let entry = offsets.entry(t.name.to_string()).or_default();
        for p in &t.partitions {
            entry.insert(
                p.partition_index,
                CommittedOffset {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                    commit_time_ms: now,
                    topic_id,
                },
            );
        }
    }
    // TxnOffsetCommit goes to the group's coordinator, as OffsetCommit does; from v3
    // it carries the member and generation, checked as OffsetCommit checks them, so
    // a zombie that lost its partitions in a rebalance cannot commit (KIP-447).
    let group = req.group_id.as_str();
    let member_checked = if version >= 3 && req.generation_id >= 0 {
        let (member, generation) = (req.member_id.as_str(), req.generation_id);
        let instance = req.group_instance_id.as_deref();
        crate::coordinator::check_member(broker, group, member, generation, instance)
    } else {
        Ok(())
    };
    let coordinated = crate::coordinator::local_shard(broker, group);
    let outcome = match coordinated.and_then(|shard| member_checked.map(|()| shard)) {
        Err(e) => Some(e),
        Ok(shard) => transactions::commit_offsets(
            engine,
            req.transactional_id.as_str(),
            req.producer_id.0,
            req.producer_epoch,
            (req.group_id.as_str(), shard),
            offsets,
        )
        .await
        .err(),
    }
    .map(|e| for_version(e, version, 3));
    let code = outcome_code(outcome);
    let topics = req
        .topics
        .iter()
        .map(|t| {
            TxnOffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    ResponseKind::TxnOffsetCommit(TxnOffsetCommitResponse::default().with_topics(topics))
}
