//! AlterPartitionReassignments, ListPartitionReassignments and ElectLeaders, mapped
//! onto Sluice's partition pins (docs/cli.md, "pins").
//!
//! A Sluice partition has one replica, its leader: the data is in object storage,
//! so nothing is copied when leadership moves. A reassignment therefore names one
//! broker, and becomes a pin in the topic record: the controller moves leadership
//! there and keeps it there while that broker is live. It is in progress, as
//! ListPartitionReassignments reports it, until the pinned broker leads the
//! partition (replicas: the target and the current leader; adding: the target;
//! removing: the current leader). Cancelling (no replicas) releases the pin of a
//! move still in progress; a finished one stays, as a finished Kafka reassignment
//! does. ElectLeaders has nothing to elect: the one replica is the preferred one,
//! so a led partition answers ELECTION_NOT_NEEDED, one whose pinned broker does not
//! lead it yet is moving there (success), one without a live leader waits for the
//! controller.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ElectLeadersRequest, ElectLeadersResponse, ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use sluice_engine::cluster::ClusterView;
use sluice_engine::{EngineError, Topic};

use crate::{errors, str_bytes, Broker};

const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

type Outcome = (i16, Option<StrBytes>);

fn refused(error: ResponseError, message: impl Into<String>) -> Outcome {
    (error.code(), Some(str_bytes(message)))
}

fn unknown(topic: &str, partition: i32) -> Outcome {
    errors::code_and_message(&EngineError::unknown_partition(topic, partition))
}

/// The broker a target replica list pins the partition to, or why it cannot: the
/// list is checked as Kafka checks it (INVALID_REPLICA_ASSIGNMENT for an empty list,
/// a broker named twice or one that is not registered), then for its length.
fn target(view: &ClusterView, replicas: &[BrokerId]) -> Result<i32, Outcome> {
    let invalid = |message: String| Err(refused(ResponseError::InvalidReplicaAssignment, message));
    if replicas.is_empty() {
        return invalid("The manual partition assignment includes an empty replica list.".into());
    }
    for (i, b) in replicas.iter().enumerate() {
        let id = b.0;
        if replicas[..i].contains(b) {
            return invalid(format!(
                "The manual partition assignment includes the broker {id} more than once."
            ));
        }
        match view.brokers.get(&id) {
            Some(r) if r.roles.broker && !r.leaving => {}
            Some(_) => {
                return invalid(format!(
                    "The manual partition assignment includes broker {id}, which cannot lead \
                     partitions."
                ))
            }
            None => {
                return invalid(format!(
                    "The manual partition assignment includes broker {id}, but no such broker \
                     is registered."
                ))
            }
        }
    }
    match replicas {
        [one] => Ok(one.0),
        _ => Err(refused(
            ResponseError::InvalidReplicationFactor,
            format!(
                "A Sluice partition has one replica, its leader (the data is in object \
                 storage): a reassignment names one broker, not {}",
                replicas.len()
            ),
        )),
    }
}

fn in_progress(view: &ClusterView, topic: &Topic, partition: i32) -> Option<(i32, Option<i32>)> {
    let pin = *topic.record.pinned.get(&partition)?;
    let leader = view.leader(topic.record.id, partition).map(|l| l.broker);
    (leader != Some(pin)).then_some((pin, leader))
}

pub async fn alter(broker: &Broker, req: AlterPartitionReassignmentsRequest) -> ResponseKind {
    let engine = &broker.engine;
    let view = engine.view();
    let mut responses = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.to_string();
        let topic = engine.topic(&name);
        // Per entry of the request: its outcome, decided now or by the write of the
        // pin changes (by partition; None: unpin) that the valid entries make.
        let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(t.partitions.len());
        let mut changes: BTreeMap<i32, Option<i32>> = BTreeMap::new();
        for p in &t.partitions {
            let i = p.partition_index;
            let Some(topic) = topic
                .as_ref()
                .filter(|t| (0..t.record.partitions).contains(&i))
            else {
                outcomes.push(Some(unknown(&name, i)));
                continue;
            };
            let decided = match &p.replicas {
                None if in_progress(&view, topic, i).is_none() => Some(refused(
                    ResponseError::NoReassignmentInProgress,
                    format!("No ongoing reassignment for partition {name}-{i}."),
                )),
                None => {
                    changes.insert(i, None);
                    None
                }
                Some(replicas) => match target(&view, replicas) {
                    Ok(b) => {
                        changes.insert(i, Some(b));
                        None
                    }
                    Err(e) => Some(e),
                },
            };
            outcomes.push(decided);
        }
        let mut written: Outcome = (0, None);
        if !changes.is_empty() {
            if let Err(e) = engine
                .update_topic(&name, false, |record| {
                    for (p, pin) in &changes {
                        match pin {
                            Some(b) => record.pinned.insert(*p, *b),
                            None => record.pinned.remove(p),
                        };
                    }
                    Ok(())
                })
                .await
            {
                written = errors::code_and_message(&e);
            }
        }
        responses.push(
            ReassignableTopicResponse::default()
                .with_name(t.name)
                .with_partitions(
                    t.partitions
                        .iter()
                        .zip(outcomes)
                        .map(|(p, outcome)| {
                            let (code, message) = outcome.unwrap_or_else(|| written.clone());
                            ReassignablePartitionResponse::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code)
                                .with_error_message(message)
                        })
                        .collect(),
                ),
        );
    }
    ResponseKind::AlterPartitionReassignments(
        AlterPartitionReassignmentsResponse::default()
            .with_allow_replication_factor_change(req.allow_replication_factor_change)
            .with_responses(responses),
    )
}

pub fn list(broker: &Broker, req: ListPartitionReassignmentsRequest) -> ResponseKind {
    let engine = &broker.engine;
    let view = engine.view();
    // `None`: every topic. Unknown topics and partitions are left out, as Kafka does.
    let asked: Vec<(std::sync::Arc<Topic>, Vec<i32>)> = match req.topics {
        None => engine
            .topics()
            .into_iter()
            .map(|t| {
                let all = t.record.pinned.keys().copied().collect();
                (t, all)
            })
            .collect(),
        Some(topics) => topics
            .into_iter()
            .filter_map(|t| Some((engine.topic(t.name.as_str())?, t.partition_indexes)))
            .collect(),
    };
    let mut topics = Vec::new();
    for (topic, partitions) in asked {
        let ongoing: Vec<OngoingPartitionReassignment> = partitions
            .into_iter()
            .filter_map(|p| {
                let (pin, leader) = in_progress(&view, &topic, p)?;
                let removing: Vec<BrokerId> = leader.into_iter().map(BrokerId).collect();
                Some(
                    OngoingPartitionReassignment::default()
                        .with_partition_index(p)
                        .with_replicas(
                            std::iter::once(BrokerId(pin))
                                .chain(removing.clone())
                                .collect(),
                        )
                        .with_adding_replicas(vec![BrokerId(pin)])
                        .with_removing_replicas(removing),
                )
            })
            .collect();
        if !ongoing.is_empty() {
            topics.push(
                OngoingTopicReassignment::default()
                    .with_name(TopicName(str_bytes(topic.record.name.clone())))
                    .with_partitions(ongoing),
            );
        }
    }
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    ResponseKind::ListPartitionReassignments(
        ListPartitionReassignmentsResponse::default().with_topics(topics),
    )
}

pub fn elect(broker: &Broker, req: ElectLeadersRequest, version: i16) -> ResponseKind {
    let engine = &broker.engine;
    let view = engine.view();
    let election = if version == 0 {
        PREFERRED
    } else {
        req.election_type
    };
    if election != PREFERRED && election != UNCLEAN {
        return ResponseKind::ElectLeaders(
            ElectLeadersResponse::default().with_error_code(ResponseError::InvalidRequest.code()),
        );
    }
    let outcome = |topic: Option<&Topic>, name: &str, p: i32| -> Outcome {
        let Some(topic) = topic.filter(|t| (0..t.record.partitions).contains(&p)) else {
            return unknown(name, p);
        };
        if in_progress(&view, topic, p).is_some_and(|(pin, _)| view.brokers.contains_key(&pin)) {
            return (0, None);
        }
        match view.leader(topic.record.id, p) {
            Some(_) => (ResponseError::ElectionNotNeeded.code(), None),
            None if election == PREFERRED => refused(
                ResponseError::PreferredLeaderNotAvailable,
                format!("Partition {name}-{p} has no live leader yet; the controller assigns one"),
            ),
            None => refused(
                ResponseError::EligibleLeadersNotAvailable,
                format!("Partition {name}-{p} has no live leader yet; the controller assigns one"),
            ),
        }
    };
    let mut results = Vec::new();
    match req.topic_partitions {
        // Every partition; as Kafka, those that already have their leader are left out.
        None => {
            for t in engine.topics() {
                let partition_result: Vec<PartitionResult> = (0..t.record.partitions)
                    .filter_map(|p| {
                        let (code, message) = outcome(Some(&t), &t.record.name, p);
                        (code != ResponseError::ElectionNotNeeded.code()).then(|| {
                            PartitionResult::default()
                                .with_partition_id(p)
                                .with_error_code(code)
                                .with_error_message(message)
                        })
                    })
                    .collect();
                if !partition_result.is_empty() {
                    results.push(
                        ReplicaElectionResult::default()
                            .with_topic(TopicName(str_bytes(t.record.name.clone())))
                            .with_partition_result(partition_result),
                    );
                }
            }
        }
        Some(asked) => {
            for t in asked {
                let topic = engine.topic(t.topic.as_str());
                let partition_result = t
                    .partitions
                    .iter()
                    .map(|&p| {
                        let (code, message) = outcome(topic.as_deref(), t.topic.as_str(), p);
                        PartitionResult::default()
                            .with_partition_id(p)
                            .with_error_code(code)
                            .with_error_message(message)
                    })
                    .collect();
                results.push(
                    ReplicaElectionResult::default()
                        .with_topic(t.topic)
                        .with_partition_result(partition_result),
                );
            }
        }
    }
    ResponseKind::ElectLeaders(
        ElectLeadersResponse::default().with_replica_election_results(results),
    )
}
