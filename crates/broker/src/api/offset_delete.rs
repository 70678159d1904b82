//! OffsetDelete: removes a group's committed offsets for some partitions. Refused per
//! topic with GROUP_SUBSCRIBED_TO_TOPIC while the group has members subscribed to
//! it, as in Kafka; serialised with the group's offset commits.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse, ResponseKind};

use crate::coordinator::{local_shard, offsets};
use crate::{errors, Broker};

pub async fn handle(broker: &Broker, req: OffsetDeleteRequest) -> ResponseKind {
    let group = req.group_id.to_string();
    let fail = |code: i16| {
        ResponseKind::OffsetDelete(OffsetDeleteResponse::default().with_error_code(code))
    };
    // Read before leadership is checked (see OffsetCommit).
    let guard = broker.engine.fence().still_leader();
    let shard = match local_shard(broker, &group) {
        Ok(s) => s,
        Err(e) => return fail(e.code()),
    };
    let subscribed = match broker.groups.subscribed_topics(&group) {
        Ok(mut topics) => {
            topics.extend(broker.consumer_groups.subscribed_topics(&group));
            topics
        }
        Err(e) => return fail(e.code()),
    };
    let _serial = broker.commit_lock(&group).lock().await;
    let stored = match offsets::fetch(&broker.engine, shard, &group).await {
        Ok(o) => o,
        Err(e) => return fail(errors::coordinator_code(&e)),
    };
    let known = !stored.is_empty()
        || broker.groups.with_group(&group, |_| ()).is_some()
        || broker.consumer_groups.with_group(&group, |_| ()).is_some();
    if !known {
        return fail(ResponseError::GroupIdNotFound.code());
    }
    let mut deletions: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let name = t.name.to_string();
        let code = if subscribed.contains(&name) {
            ResponseError::GroupSubscribedToTopic.code()
        } else if broker.engine.topic(&name).is_none() {
            ResponseError::UnknownTopicOrPartition.code()
        } else {
            deletions
                .entry(name)
                .or_default()
                .extend(t.partitions.iter().map(|p| p.partition_index));
            0
        };
        topics.push(
            OffsetDeleteResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            OffsetDeleteResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code)
                        })
                        .collect(),
                ),
        );
    }
    if let Err(e) =
        offsets::delete_partitions(&broker.engine, &guard, shard, &group, deletions).await
    {
        return fail(errors::coordinator_code(&e));
    }
    ResponseKind::OffsetDelete(OffsetDeleteResponse::default().with_topics(topics))
}
