//! OffsetCommit: stores a group's offsets on its coordinator, fenced by the
//! coordinator's generation. Members commit with their group generation; consumers
//! that assign partitions themselves, and admin resets, commit with generation -1,
//! which only a group without members accepts.

use std::collections::BTreeMap;

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
    // The generation is read before leadership is checked: if the shard moves while
    // this request waits for the group's lock, the write's compare fails.
    let guard = broker.engine.fence().still_leader();
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
        let instance = req.group_instance_id.as_deref();
        let checked = crate::coordinator::check_member(broker, &group, member, epoch, instance);
        if let Err(e) = checked {
            return reject_all(e.code());
        }
    }

    let now = broker.engine.clock().now_ms();
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
        offsets::commit(&broker.engine, &guard, shard, &group, commits).await
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a test: panicking is how it fails

    use std::sync::Arc;
    use std::time::Duration;

    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{GroupId, OffsetCommitRequest, ResponseKind, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use sluice_meta::{EmbeddedStore, MetaStore};

    use crate::coordinator::{self, offsets, shard_of, GROUPS_TOPIC};
    use crate::testing::{broker_on, record};

    fn commit(offset: i64) -> OffsetCommitRequest {
        OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("g")))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(offset)])])
    }

    fn code(response: ResponseKind) -> i16 {
        match response {
            ResponseKind::OffsetCommit(r) => r.topics[0].partitions[0].error_code,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// A commit that passed the leadership check, then waited for the group's lock
    /// while the group's shard moved to another broker, must write nothing: before,
    /// its compare read the generation after the wait, which the move had already
    /// bumped, so the late write landed beside the new coordinator's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_that_waited_while_the_shard_moved_writes_nothing() {
        let meta = Arc::new(EmbeddedStore::in_memory());
        let broker = broker_on(meta.clone()).await;
        let engine = broker.engine.clone();
        let mut tries = 0;
        while code(super::handle(&broker, commit(5)).await) != 0 {
            tries += 1;
            assert!(tries < 200, "the coordinator never loaded its shard");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // A second commit passes the leadership check and waits for the lock.
        let held = broker.commit_lock("g").lock().await;
        let late = super::handle(&broker, commit(10));
        tokio::pin!(late);
        tokio::select! {
            _ = &mut late => panic!("the commit did not wait for the group's lock"),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        // Meanwhile the shard moves to broker 1.
        let shard = shard_of("g", 4);
        meta.txn(
            sluice_meta::Txn::when(vec![]).then(vec![sluice_meta::Op::put(
                engine.keys().live(1),
                serde_json::to_vec(&record(1)).unwrap(),
            )]),
        )
        .await
        .unwrap();
        engine
            .update_topic(GROUPS_TOPIC, false, |t| {
                t.pinned.insert(shard, 1);
                Ok(())
            })
            .await
            .unwrap();
        let mut tries = 0;
        while coordinator::led_shards(&engine).contains_key(&shard) {
            tries += 1;
            assert!(tries < 200, "the shard never moved");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(held);
        assert_eq!(
            code(late.await),
            kafka_protocol::error::ResponseError::NotCoordinator.code()
        );
        let stored = offsets::fetch(&engine, shard, "g").await.unwrap();
        assert_eq!(stored["t"][&0].offset, 5, "the late commit was written");
    }
}
