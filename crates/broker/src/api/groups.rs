//! The classic consumer-group APIs: JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! ListGroups, DescribeGroups and DeleteGroups. Each checks that this broker
//! coordinates the group (NOT_COORDINATOR otherwise) and hands the rest to
//! [`crate::coordinator::group::Groups`].

use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::coordinator::group::{JoinOutcome, JoinRequest, Pending, SyncOutcome};
use crate::coordinator::{local_shard, offsets, persist};
use crate::{errors, has, str_bytes, Broker, Reply};

fn join_response(o: JoinOutcome, version: i16) -> ResponseKind {
    let members = o
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            JoinGroupResponseMember::default()
                .with_member_id(str_bytes(id))
                .with_group_instance_id(instance.filter(|_| has(version, 5)).map(str_bytes))
                .with_metadata(metadata)
        })
        .collect();
    // Before v7 the protocol name is a non-null string.
    let protocol = o.protocol.or_else(|| (!has(version, 7)).then(String::new));
    ResponseKind::JoinGroup(
        JoinGroupResponse::default()
            .with_error_code(errors::outcome_code(o.error))
            .with_generation_id(o.generation)
            .with_protocol_type(o.protocol_type.filter(|_| has(version, 7)).map(str_bytes))
            .with_protocol_name(protocol.map(str_bytes))
            .with_leader(str_bytes(o.leader))
            .with_member_id(str_bytes(o.member_id))
            .with_members(members),
    )
}

pub fn join(
    broker: &Broker,
    req: JoinGroupRequest,
    version: i16,
    client_id: &str,
    client_host: &str,
) -> Reply {
    let group = req.group_id.to_string();
    let refused = local_shard(broker, &group).err().or_else(|| {
        // A consumer group (KIP-848) with members keeps its id; an empty one becomes
        // a classic group.
        if broker.consumer_groups.has_members(&group) {
            Some(ResponseError::InconsistentGroupProtocol)
        } else {
            let _ = broker.consumer_groups.delete(&group);
            None
        }
    });
    if let Some(e) = refused {
        let o = JoinOutcome {
            error: Some(e),
            generation: -1,
            member_id: req.member_id.to_string(),
            ..Default::default()
        };
        return Reply::Now(Box::new(join_response(o, version)));
    }
    let millis = |ms: i32| Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    let pending = broker.groups.join(
        &group,
        JoinRequest {
            member_id: req.member_id.to_string(),
            instance_id: req.group_instance_id.map(|s| s.to_string()),
            client_id: client_id.to_string(),
            client_host: client_host.to_string(),
            session_timeout: millis(req.session_timeout_ms),
            // v0 has no rebalance timeout: it is the session timeout.
            rebalance_timeout: if has(version, 1) {
                millis(req.rebalance_timeout_ms)
            } else {
                millis(req.session_timeout_ms)
            },
            protocol_type: req.protocol_type.to_string(),
            protocols: req
                .protocols
                .into_iter()
                .map(|p| (p.name.to_string(), p.metadata))
                .collect(),
            require_known_member_id: has(version, 4),
        },
    );
    match pending {
        Pending::Now(o) => Reply::Now(Box::new(join_response(o, version))),
        Pending::Later(rx) => Reply::Later(Box::pin(async move {
            let o = rx.await.unwrap_or_else(|_| JoinOutcome {
                error: Some(ResponseError::NotCoordinator),
                generation: -1,
                ..Default::default()
            });
            join_response(o, version)
        })),
    }
}

fn sync_response(o: SyncOutcome, version: i16) -> ResponseKind {
    ResponseKind::SyncGroup(
        SyncGroupResponse::default()
            .with_error_code(errors::outcome_code(o.error))
            .with_protocol_type(o.protocol_type.filter(|_| has(version, 5)).map(str_bytes))
            .with_protocol_name(o.protocol.filter(|_| has(version, 5)).map(str_bytes))
            .with_assignment(o.assignment),
    )
}

/// SyncGroup. An assignment is handed out only once the group's generation is
/// durable in the metadata store (see `persist::write_synced`).
pub fn sync(broker: &Broker, req: SyncGroupRequest, version: i16) -> Reply {
    let group = req.group_id.to_string();
    // Read before leadership is checked (see OffsetCommit).
    let guard = broker.engine.fence().still_leader();
    let shard = match local_shard(broker, &group) {
        Ok(shard) => shard,
        Err(e) => {
            let o = SyncOutcome {
                error: Some(e),
                ..Default::default()
            };
            return Reply::Now(Box::new(sync_response(o, version)));
        }
    };
    let assignments = req
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment))
        .collect();
    let pending = broker.groups.sync(
        &group,
        req.member_id.as_str(),
        req.generation_id,
        req.group_instance_id.as_deref(),
        assignments,
    );
    let broker = broker.clone();
    Reply::Later(Box::pin(async move {
        let mut o = match pending {
            Pending::Now(o) => o,
            Pending::Later(rx) => rx.await.unwrap_or_else(|_| SyncOutcome {
                error: Some(ResponseError::NotCoordinator),
                ..Default::default()
            }),
        };
        if o.error.is_none() {
            let (engine, groups, shards) = (&broker.engine, &broker.groups, &broker.shards);
            if let Err(e) =
                persist::write_synced(engine, groups, shards, &guard, shard, &group).await
            {
                o = SyncOutcome {
                    error: Some(e),
                    ..Default::default()
                };
            }
        }
        sync_response(o, version)
    }))
}

pub fn heartbeat(broker: &Broker, req: HeartbeatRequest) -> ResponseKind {
    let group = req.group_id.to_string();
    let result = local_shard(broker, &group).and_then(|_| {
        broker.groups.heartbeat(
            &group,
            req.member_id.as_str(),
            req.generation_id,
            req.group_instance_id.as_deref(),
        )
    });
    let code = errors::outcome_code(result.err());
    ResponseKind::Heartbeat(HeartbeatResponse::default().with_error_code(code))
}

pub fn leave(broker: &Broker, req: LeaveGroupRequest, version: i16) -> ResponseKind {
    let group = req.group_id.to_string();
    let members: Vec<(String, Option<String>)> = if has(version, 3) {
        req.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let resp = LeaveGroupResponse::default();
    if let Err(e) = local_shard(broker, &group) {
        return ResponseKind::LeaveGroup(resp.with_error_code(e.code()));
    }
    let outcomes = broker.groups.leave(&group, &members);
    let codes: Vec<i16> = outcomes
        .into_iter()
        .map(|o| errors::outcome_code(o.err()))
        .collect();
    if !has(version, 3) {
        return ResponseKind::LeaveGroup(resp.with_error_code(codes[0]));
    }
    ResponseKind::LeaveGroup(
        resp.with_members(
            members
                .into_iter()
                .zip(codes)
                .map(|((id, instance), code)| {
                    MemberResponse::default()
                        .with_member_id(str_bytes(id))
                        .with_group_instance_id(instance.map(str_bytes))
                        .with_error_code(code)
                })
                .collect(),
        ),
    )
}

pub async fn list(broker: &Broker, req: ListGroupsRequest, version: i16) -> ResponseKind {
    let lower = |v: &[StrBytes]| -> Vec<String> { v.iter().map(|s| s.to_lowercase()).collect() };
    let (states, kinds) = (lower(&req.states_filter), lower(&req.types_filter));
    // (id, protocol type, state, group type)
    let mut groups: Vec<(String, String, &'static str, &'static str)> = broker
        .groups
        .list()
        .into_iter()
        .filter(|(id, _, _)| local_shard(broker, id).is_ok())
        .map(|(id, protocol_type, state)| (id, protocol_type, state.name(), "classic"))
        .collect();
    groups.extend(
        broker
            .consumer_groups
            .list()
            .into_iter()
            .filter(|(id, _)| local_shard(broker, id).is_ok())
            .map(|(id, state)| (id, "consumer".to_string(), state, "consumer")),
    );
    // Groups with committed offsets but no members (consumers stopped, or the
    // coordinator moved) are listed as Empty, as Kafka lists them.
    for shard in crate::coordinator::led_shards(&broker.engine).into_keys() {
        match offsets::groups_with_offsets(&broker.engine, shard).await {
            Ok(ids) => {
                for id in ids {
                    if !groups.iter().any(|(g, _, _, _)| *g == id) {
                        groups.push((id, String::new(), "Empty", "classic"));
                    }
                }
            }
            Err(e) => {
                return ResponseKind::ListGroups(
                    ListGroupsResponse::default().with_error_code(crate::errors::code(&e)),
                )
            }
        }
    }
    groups.sort();
    let groups = groups
        .into_iter()
        .filter(|(_, _, state, kind)| {
            (states.is_empty() || states.contains(&state.to_lowercase()))
                && (kinds.is_empty() || kinds.iter().any(|k| k == kind))
        })
        .map(|(id, protocol_type, state, kind)| {
            ListedGroup::default()
                .with_group_id(GroupId(str_bytes(id)))
                .with_protocol_type(str_bytes(protocol_type))
                .with_group_state(if has(version, 4) {
                    str_bytes(state)
                } else {
                    StrBytes::default()
                })
                .with_group_type(if has(version, 5) {
                    str_bytes(kind)
                } else {
                    StrBytes::default()
                })
        })
        .collect();
    ResponseKind::ListGroups(ListGroupsResponse::default().with_groups(groups))
}

pub async fn describe(broker: &Broker, req: DescribeGroupsRequest, version: i16) -> ResponseKind {
    let mut groups = Vec::with_capacity(req.groups.len());
    let include_ops = req.include_authorized_operations;
    for id in req.groups {
        let out = DescribedGroup::default().with_group_id(id.clone());
        let shard = match local_shard(broker, id.as_str()) {
            Ok(s) => s,
            Err(e) => {
                groups.push(out.with_error_code(e.code()));
                continue;
            }
        };
        if broker
            .consumer_groups
            .with_group(id.as_str(), |_| ())
            .is_some()
        {
            // As in Kafka 4: consumer groups are described with ConsumerGroupDescribe;
            // here they are not found (the message exists from v6).
            groups.push(
                out.with_error_code(ResponseError::GroupIdNotFound.code())
                    .with_group_state(str_bytes("Dead"))
                    .with_error_message(
                        has(version, 6).then(|| str_bytes("the group is not a classic group")),
                    ),
            );
            continue;
        }
        let found = broker.groups.with_group(id.as_str(), |g| {
            let members = g
                .members
                .values()
                .map(|m| {
                    DescribedGroupMember::default()
                        .with_member_id(str_bytes(m.id.clone()))
                        .with_group_instance_id(
                            m.instance_id
                                .clone()
                                .filter(|_| has(version, 4))
                                .map(str_bytes),
                        )
                        .with_client_id(str_bytes(m.client_id.clone()))
                        .with_client_host(str_bytes(m.client_host.clone()))
                        .with_member_metadata(m.metadata(g.protocol.as_deref()))
                        .with_member_assignment(m.assignment.clone())
                })
                .collect();
            (
                g.state.name(),
                g.protocol_type.clone().unwrap_or_default(),
                g.protocol.clone().unwrap_or_default(),
                members,
            )
        });
        let (state, protocol_type, protocol, members) = match found {
            Some(f) => f,
            // No members: Empty if it has committed offsets, else Dead (unknown).
            None => {
                let has_offsets = offsets::fetch(&broker.engine, shard, id.as_str())
                    .await
                    .is_ok_and(|o| !o.is_empty());
                let state = if has_offsets { "Empty" } else { "Dead" };
                (state, String::new(), String::new(), Vec::new())
            }
        };
        groups.push(
            out.with_group_state(str_bytes(state))
                .with_protocol_type(str_bytes(protocol_type))
                .with_protocol_data(str_bytes(protocol))
                .with_members(members)
                .with_authorized_operations(super::operations::reported(
                    include_ops,
                    super::operations::GROUP,
                )),
        );
    }
    ResponseKind::DescribeGroups(DescribeGroupsResponse::default().with_groups(groups))
}

pub async fn delete(broker: &Broker, req: DeleteGroupsRequest) -> ResponseKind {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for id in req.groups_names {
        let group = id.to_string();
        // Serialised with commits and state writes of the group, so neither
        // brings it back.
        let _serial = broker.commit_lock(&group).lock().await;
        // Read before leadership is checked (see OffsetCommit).
        let guard = broker.engine.fence().still_leader();
        let code = match local_shard(broker, &group) {
            Err(e) => e.code(),
            Ok(shard) if !group_exists(broker, shard, &group).await => {
                ResponseError::GroupIdNotFound.code()
            }
            Ok(shard) => match broker
                .groups
                .delete(&group)
                .and_then(|()| broker.consumer_groups.delete(&group))
            {
                Err(e) => e.code(),
                Ok(()) => match offsets::delete(&broker.engine, &guard, shard, &group).await {
                    Ok(()) => 0,
                    Err(e) => crate::errors::coordinator_code(&e),
                },
            },
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(id)
                .with_error_code(code),
        );
    }
    ResponseKind::DeleteGroups(DeleteGroupsResponse::default().with_results(results))
}

/// Whether the group exists here: with members or state of either protocol, or
/// with committed offsets only.
async fn group_exists(broker: &Broker, shard: i32, group: &str) -> bool {
    broker.groups.with_group(group, |_| ()).is_some()
        || broker.consumer_groups.with_group(group, |_| ()).is_some()
        || offsets::fetch(&broker.engine, shard, group)
            .await
            .map_or(true, |o| !o.is_empty())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a test: panicking is how it fails

    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use bytes::Bytes;
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
    use kafka_protocol::messages::*;

    use crate::testing::{broker_on, coordinating, CutOff};
    use crate::{str_bytes, Reply};

    async fn answer(reply: Reply) -> ResponseKind {
        match reply {
            Reply::Now(r) => *r,
            Reply::Later(f) => f.await,
            Reply::None => panic!("no answer"),
        }
    }

    /// A coordinator whose writes of group state fail (cut off from the metadata
    /// store, or deposed) must not hand out a generation's assignments: members
    /// that found the new coordinator would get conflicting ones, and a partition
    /// two owners. Before, SyncGroup answered from memory at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sync_group_hands_out_assignments_only_once_they_are_durable() {
        let meta = CutOff::new();
        let broker = broker_on(Arc::new(meta.clone())).await;
        coordinating(&broker, "g").await;
        let join = JoinGroupRequest::default()
            .with_group_id(GroupId(str_bytes("g")))
            .with_protocol_type(str_bytes("consumer"))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(str_bytes("range"))
                .with_metadata(Bytes::from_static(b"m"))]);
        let ResponseKind::JoinGroup(joined) = answer(super::join(&broker, join, 3, "c", "h")).await
        else {
            panic!("not JoinGroup");
        };
        assert_eq!(joined.error_code, 0);
        let sync = SyncGroupRequest::default()
            .with_group_id(GroupId(str_bytes("g")))
            .with_member_id(joined.member_id.clone())
            .with_generation_id(joined.generation_id)
            .with_assignments(vec![SyncGroupRequestAssignment::default()
                .with_member_id(joined.member_id.clone())
                .with_assignment(Bytes::from_static(b"partitions"))]);
        meta.cut.store(true, Ordering::SeqCst);
        let ResponseKind::SyncGroup(synced) = answer(super::sync(&broker, sync.clone(), 3)).await
        else {
            panic!("not SyncGroup");
        };
        assert_eq!(
            synced.error_code,
            kafka_protocol::error::ResponseError::CoordinatorNotAvailable.code()
        );
        assert!(
            synced.assignment.is_empty(),
            "handed out {:?}",
            synced.assignment
        );
        // Once the store takes writes again, the generation's assignment goes out.
        meta.cut.store(false, Ordering::SeqCst);
        let ResponseKind::SyncGroup(synced) = answer(super::sync(&broker, sync, 3)).await else {
            panic!("not SyncGroup");
        };
        assert_eq!(synced.error_code, 0);
        assert_eq!(synced.assignment, Bytes::from_static(b"partitions"));
    }

    /// The same for a KIP-848 group: a heartbeat carries a new assignment only once
    /// the group's state holding it is durable.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_consumer_group_heartbeat_hands_out_assignments_only_once_they_are_durable() {
        let meta = CutOff::new();
        let broker = broker_on(Arc::new(meta.clone())).await;
        coordinating(&broker, "cg").await;
        let heartbeat = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(str_bytes("cg")))
            .with_member_id(str_bytes("m1"))
            .with_member_epoch(0)
            .with_rebalance_timeout_ms(10_000)
            .with_subscribed_topic_names(Some(vec![TopicName(str_bytes("t"))]))
            .with_topic_partitions(Some(vec![]));
        meta.cut.store(true, Ordering::SeqCst);
        let ResponseKind::ConsumerGroupHeartbeat(r) =
            crate::api::consumer_group::heartbeat(&broker, heartbeat.clone(), 1, "c", "h").await
        else {
            panic!("not ConsumerGroupHeartbeat");
        };
        assert_eq!(
            r.error_code,
            kafka_protocol::error::ResponseError::CoordinatorNotAvailable.code()
        );
        assert!(r.assignment.is_none(), "handed out {:?}", r.assignment);
        meta.cut.store(false, Ordering::SeqCst);
        let ResponseKind::ConsumerGroupHeartbeat(r) =
            crate::api::consumer_group::heartbeat(&broker, heartbeat, 1, "c", "h").await
        else {
            panic!("not ConsumerGroupHeartbeat");
        };
        assert_eq!(r.error_code, 0);
        let assigned = r.assignment.unwrap();
        assert_eq!(assigned.topic_partitions[0].partitions, vec![0]);
    }
}
