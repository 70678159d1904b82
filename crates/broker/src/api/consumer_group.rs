//! The consumer group protocol of KIP-848: ConsumerGroupHeartbeat and
//! ConsumerGroupDescribe. Each checks that this broker coordinates the group and
//! hands the rest to [`crate::coordinator::consumer::ConsumerGroups`].
//!
//! A group id is either a classic group or a consumer group: a heartbeat for a
//! classic group with members gets GROUP_ID_NOT_FOUND (as in Kafka), and an empty
//! group of either kind becomes the other on its first join.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment as DescribedAssignment, DescribedGroup, Member as DescribedMember,
    TopicPartitions as DescribedTopicPartitions,
};
use kafka_protocol::messages::consumer_group_heartbeat_response::{
    Assignment as HeartbeatAssignment, TopicPartitions,
};
use kafka_protocol::messages::*;

use crate::coordinator::assignor::Assignment;
use crate::coordinator::consumer::{state_name, Heartbeat, TopicMeta, Topics};
use crate::coordinator::{local_shard, persist};
use crate::{has, str_bytes, Broker};

/// Every topic a group may subscribe to (the groups topic is internal).
fn topics(broker: &Broker) -> Topics {
    broker
        .engine
        .topics()
        .into_iter()
        .filter(|t| !crate::coordinator::is_internal(&t.record.name))
        .map(|t| {
            (
                t.record.name.clone(),
                TopicMeta {
                    id: t.record.id,
                    partitions: t.record.partitions,
                },
            )
        })
        .collect()
}

/// ConsumerGroupHeartbeat. A new assignment is handed out only once the group's
/// state holding it is durable (see `persist::write_assigned`).
pub async fn heartbeat(
    broker: &Broker,
    req: ConsumerGroupHeartbeatRequest,
    version: i16,
    client_id: &str,
    client_host: &str,
) -> ResponseKind {
    let interval = broker.consumer_groups.settings.heartbeat_interval;
    let resp = ConsumerGroupHeartbeatResponse::default()
        .with_member_epoch(-1)
        .with_heartbeat_interval_ms(i32::try_from(interval.as_millis()).unwrap_or(i32::MAX));
    let fail = |e: ResponseError, message: &str| {
        ResponseKind::ConsumerGroupHeartbeat(
            resp.clone()
                .with_error_code(e.code())
                .with_error_message(Some(str_bytes(message))),
        )
    };
    let group = req.group_id.to_string();
    if group.is_empty() {
        return fail(ResponseError::InvalidRequest, "the group id is empty");
    }
    let mut member_id = req.member_id.to_string();
    if member_id.is_empty() {
        // From v1 the consumer makes its member id; v0 lets the coordinator do it.
        if has(version, 1) || req.member_epoch != 0 {
            return fail(ResponseError::InvalidRequest, "the member id is empty");
        }
        member_id = uuid::Uuid::new_v4().to_string();
    }
    // Read before leadership is checked (see OffsetCommit).
    let guard = broker.engine.fence().still_leader();
    let shard = match local_shard(broker, &group) {
        Ok(shard) => shard,
        Err(e) => return fail(e, "this broker does not coordinate the group"),
    };
    if broker.groups.has_members(&group) {
        return fail(
            ResponseError::GroupIdNotFound,
            "the group is a classic group with members",
        );
    }
    if req.member_epoch == 0 {
        // An empty classic group of this id becomes a consumer group.
        let _ = broker.groups.delete(&group);
    }
    let owned = req.topic_partitions.map(|tps| {
        let mut a = Assignment::new();
        for tp in tps {
            a.entry(tp.topic_id).or_default().extend(tp.partitions);
        }
        a
    });
    let hb = Heartbeat {
        member_id,
        member_epoch: req.member_epoch,
        instance_id: req.instance_id.map(|s| s.to_string()),
        rack: req.rack_id.map(|s| s.to_string()),
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        topics: req
            .subscribed_topic_names
            .map(|ts| ts.into_iter().map(|t| t.to_string()).collect()),
        regex: req.subscribed_topic_regex.map(|s| s.to_string()),
        server_assignor: req.server_assignor.map(|s| s.to_string()),
        owned,
        client_id: client_id.to_string(),
        client_host: client_host.to_string(),
    };
    match broker
        .consumer_groups
        .heartbeat(&group, hb, &topics(broker))
    {
        Ok(answer) => {
            if answer.assignment.is_some() {
                let (engine, groups, shards) =
                    (&broker.engine, &broker.consumer_groups, &broker.shards);
                if let Err(e) =
                    persist::write_assigned(engine, groups, shards, &guard, shard, &group).await
                {
                    return fail(e, "the group's new assignment could not be stored");
                }
            }
            let assignment = answer.assignment.map(|a| {
                HeartbeatAssignment::default().with_topic_partitions(
                    a.into_iter()
                        .map(|(id, ps)| {
                            TopicPartitions::default()
                                .with_topic_id(id)
                                .with_partitions(ps.into_iter().collect())
                        })
                        .collect(),
                )
            });
            ResponseKind::ConsumerGroupHeartbeat(
                resp.with_member_id(Some(str_bytes(answer.member_id)))
                    .with_member_epoch(answer.member_epoch)
                    .with_assignment(assignment),
            )
        }
        Err(e) => fail(e, &e.to_string()),
    }
}

pub fn describe(broker: &Broker, req: ConsumerGroupDescribeRequest) -> ResponseKind {
    let described = |a: &Assignment| {
        DescribedAssignment::default().with_topic_partitions(
            a.iter()
                .map(|(id, ps)| {
                    let name = broker
                        .engine
                        .topic_by_id(*id)
                        .map(|t| t.record.name.clone())
                        .unwrap_or_default();
                    DescribedTopicPartitions::default()
                        .with_topic_id(*id)
                        .with_topic_name(TopicName(str_bytes(name)))
                        .with_partitions(ps.iter().copied().collect())
                })
                .collect(),
        )
    };
    let include_ops = req.include_authorized_operations;
    let groups = req
        .group_ids
        .into_iter()
        .map(|id| {
            let out = DescribedGroup::default()
                .with_group_id(id.clone())
                .with_authorized_operations(super::operations::reported(
                    include_ops,
                    super::operations::GROUP,
                ));
            if let Err(e) = local_shard(broker, id.as_str()) {
                return out.with_error_code(e.code());
            }
            let found = broker.consumer_groups.with_group(id.as_str(), |g| {
                let members = g
                    .members
                    .values()
                    .map(|m| {
                        DescribedMember::default()
                            .with_member_id(str_bytes(m.id.clone()))
                            .with_instance_id(m.instance_id.clone().map(str_bytes))
                            .with_rack_id(m.rack.clone().map(str_bytes))
                            .with_member_epoch(m.epoch)
                            .with_client_id(str_bytes(m.client_id.clone()))
                            .with_client_host(str_bytes(m.client_host.clone()))
                            .with_subscribed_topic_names(
                                m.topics
                                    .iter()
                                    .map(|t| TopicName(str_bytes(t.clone())))
                                    .collect(),
                            )
                            .with_subscribed_topic_regex(m.regex.clone().map(str_bytes))
                            .with_assignment(described(&m.assigned))
                            .with_target_assignment(described(&m.target))
                    })
                    .collect();
                out.clone()
                    .with_group_state(str_bytes(state_name(g)))
                    .with_group_epoch(g.epoch)
                    .with_assignment_epoch(g.assignment_epoch)
                    .with_assignor_name(str_bytes(g.assignor.clone()))
                    .with_members(members)
            });
            found.unwrap_or_else(|| {
                out.with_error_code(ResponseError::GroupIdNotFound.code())
                    .with_error_message(Some(str_bytes(format!(
                        "group {} is not a consumer group",
                        id.as_str()
                    ))))
            })
        })
        .collect();
    ResponseKind::ConsumerGroupDescribe(
        ConsumerGroupDescribeResponse::default().with_groups(groups),
    )
}
