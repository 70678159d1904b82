//! OffsetCommit: stores a group's offsets on its coordinator, fenced by the
//! coordinator's generation. Members commit with their group generation; consumers
//! that assign partitions themselves, and admin resets, commit with generation -1,
//! which only a group without members accepts.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse, ResponseKind};

use crate::coordinator::local_shard;
use crate::coordinator::offsets::{self, CommittedOffset, TopicOffsets};
use crate::{errors, Broker};

/// Kafka's `offset.metadata.max.bytes`.
const MAX_METADATA_BYTES: usize = 4096;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub async fn handle(broker: &Broker, req: OffsetCommitRequest) -> ResponseKind {
    let group = req.group_id.to_string();
    let reject_all = |code: i16| {
        ResponseKind::OffsetCommit(
            OffsetCommitResponse::default().with_topics(
                req.topics
                    .iter()
                    .map(|t| {
                        OffsetCommitResponseTopic::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        OffsetCommitResponsePartition::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(code)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            ),
        )
    };
    let shard = match local_shard(broker, &group) {
        Ok(s) => s,
        Err(e) => return reject_all(e.code()),
    };
    // Generation -1 is a consumer that assigns its partitions itself, or an admin
    // reset: as Kafka, taken only while the group has no members. Anyone else must
    // be a member of the group's current generation.
    if req.generation_id_or_member_epoch < 0 {
        if broker.groups.has_members(&group) || broker.consumer_groups.has_members(&group) {
            return reject_all(ResponseError::UnknownMemberId.code());
        }
    } else {
        let (member, epoch) = (req.member_id.as_str(), req.generation_id_or_member_epoch);
        let checked = broker
            .consumer_groups
            .check_commit(&group, member, epoch)
            .unwrap_or_else(|| {
                let instance = req.group_instance_id.as_deref();
                broker.groups.check_commit(&group, member, epoch, instance)
            });
        if let Err(e) = checked {
            return reject_all(e.code());
        }
    }

    let now = now_ms();
    let mut codes: Vec<Vec<i16>> = Vec::with_capacity(req.topics.len());
    let mut commits: BTreeMap<String, TopicOffsets> = BTreeMap::new();
    for t in &req.topics {
        let topic = broker.engine.topic(t.name.as_str());
        let mut topic_codes = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let known = topic
                .as_ref()
                .is_some_and(|topic| topic.partition(p.partition_index).is_some());
            let metadata_len = p.committed_metadata.as_ref().map_or(0, |m| m.len());
            let code = if !known {
                ResponseError::UnknownTopicOrPartition.code()
            } else if metadata_len > MAX_METADATA_BYTES {
                ResponseError::OffsetMetadataTooLarge.code()
            } else {
                commits.entry(t.name.to_string()).or_default().insert(
                    p.partition_index,
                    CommittedOffset {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                        commit_time_ms: now,
                        topic_id: topic.as_ref().map(|t| t.record.id),
                    },
                );
                0
            };
            topic_codes.push(code);
        }
        codes.push(topic_codes);
    }
    let stored = {
        let _serial = broker.commit_lock(&group).lock().await;
        offsets::commit(&broker.engine, shard, &group, commits).await
    };
    if let Err(e) = stored {
        return reject_all(errors::coordinator_code(&e));
    }
    ResponseKind::OffsetCommit(
        OffsetCommitResponse::default().with_topics(
            req.topics
                .iter()
                .zip(codes)
                .map(|(t, codes)| {
                    OffsetCommitResponseTopic::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .zip(codes)
                                .map(|(p, code)| {
                                    OffsetCommitResponsePartition::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(code)
                                })
                                .collect(),
                        )
                })
                .collect(),
        ),
    )
}
