//! OffsetFetch: a group's committed offsets from its coordinator. v8+ asks for
//! several groups at once. A partition without a commit answers offset -1. With
//! `require_stable` (v7+, KIP-447), a partition whose offset a transaction has
//! committed but not yet completed answers UNSTABLE_OFFSET_COMMIT, and the client
//! asks again: a consumer taking over partitions never starts from an offset a
//! completing transaction is about to move.

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, ResponseKind, TopicName};

use kafka_protocol::error::ResponseError;

use crate::coordinator::{local_shard, offsets};
use crate::{errors, has, str_bytes, Broker};

/// One partition's answer: (partition, offset, leader epoch, metadata, error code).
type Fetched = (i32, i64, i32, String, i16);

/// A group's offsets for the requested topics (every committed topic if `None`).
async fn fetch_group(
    broker: &Broker,
    group: &str,
    wanted: Option<Vec<(TopicName, Vec<i32>)>>,
    require_stable: bool,
) -> Result<Vec<(TopicName, Vec<Fetched>)>, i16> {
    let shard = local_shard(broker, group).map_err(|e| e.code())?;
    let stored = offsets::fetch(&broker.engine, shard, group)
        .await
        .map_err(|e| errors::code(&e))?;
    let unstable = if require_stable {
        crate::transactions::pending_partitions(&broker.engine, shard, group)
            .await
            .map_err(|e| errors::code(&e))?
    } else {
        Default::default()
    };
    let answer = |o: Option<&offsets::CommittedOffset>, p: i32| match o {
        Some(o) => (
            p,
            o.offset,
            o.leader_epoch,
            o.metadata.clone().unwrap_or_default(),
            0,
        ),
        None => (p, -1, -1, String::new(), 0),
    };
    Ok(match wanted {
        Some(topics) => topics
            .into_iter()
            .map(|(name, parts)| {
                let committed = stored.get(name.as_str());
                let pending = unstable.get(name.as_str());
                let parts = parts
                    .into_iter()
                    .map(|p| {
                        if pending.is_some_and(|ps| ps.contains(&p)) {
                            let code = ResponseError::UnstableOffsetCommit.code();
                            (p, -1, -1, String::new(), code)
                        } else {
                            answer(committed.and_then(|c| c.get(&p)), p)
                        }
                    })
                    .collect();
                (name, parts)
            })
            .collect(),
        None => stored
            .into_iter()
            .map(|(name, committed)| {
                let parts = committed.iter().map(|(p, o)| answer(Some(o), *p)).collect();
                (TopicName(str_bytes(name)), parts)
            })
            .collect(),
    })
}

pub async fn handle(broker: &Broker, req: OffsetFetchRequest, version: i16) -> ResponseKind {
    if has(version, 8) {
        let mut groups = Vec::with_capacity(req.groups.len());
        for g in req.groups {
            let wanted = g.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name, t.partition_indexes))
                    .collect()
            });
            let out = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
            groups.push(
                match fetch_group(broker, g.group_id.as_str(), wanted, req.require_stable).await {
                    Err(code) => out.with_error_code(code),
                    Ok(topics) => out.with_topics(
                        topics
                            .into_iter()
                            .map(|(name, parts)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(name)
                                    .with_partitions(
                                        parts
                                            .into_iter()
                                            .map(|(p, offset, epoch, metadata, code)| {
                                                OffsetFetchResponsePartitions::default()
                                                    .with_error_code(code)
                                                    .with_partition_index(p)
                                                    .with_committed_offset(offset)
                                                    .with_committed_leader_epoch(epoch)
                                                    .with_metadata(Some(str_bytes(metadata)))
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    ),
                },
            );
        }
        return ResponseKind::OffsetFetch(OffsetFetchResponse::default().with_groups(groups));
    }
    let wanted = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name, t.partition_indexes))
            .collect()
    });
    let resp = OffsetFetchResponse::default();
    ResponseKind::OffsetFetch(
        match fetch_group(broker, req.group_id.as_str(), wanted, req.require_stable).await {
            // Before v2 there is no top-level error: each partition carries it.
            Err(code) if has(version, 2) => resp.with_error_code(code),
            Err(code) => resp.with_topics(vec![OffsetFetchResponseTopic::default()
                .with_name(TopicName(str_bytes("")))
                .with_partitions(vec![OffsetFetchResponsePartition::default()
                    .with_partition_index(-1)
                    .with_committed_offset(-1)
                    .with_error_code(code)])]),
            Ok(topics) => resp.with_topics(
                topics
                    .into_iter()
                    .map(|(name, parts)| {
                        OffsetFetchResponseTopic::default()
                            .with_name(name)
                            .with_partitions(
                                parts
                                    .into_iter()
                                    .map(|(p, offset, epoch, metadata, code)| {
                                        OffsetFetchResponsePartition::default()
                                            .with_error_code(code)
                                            .with_partition_index(p)
                                            .with_committed_offset(offset)
                                            .with_committed_leader_epoch(if has(version, 5) {
                                                epoch
                                            } else {
                                                -1
                                            })
                                            .with_metadata(Some(str_bytes(metadata)))
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            ),
        },
    )
}
