//! What the admin API shows of consumer groups: members, assignments and committed
//! offsets, read from the metadata store (`groups/<shard>/<group>/…`), so any broker
//! can answer for every group. The stored state is at most about 100 ms behind the
//! coordinator's (see `coordinator::persist`).

use std::collections::BTreeMap;

use bytes::Buf;
use kafka_protocol::messages::ConsumerProtocolAssignment;
use kafka_protocol::protocol::Decodable;
use serde::{Deserialize, Serialize};
use sluice_engine::{Engine, Result};

use crate::coordinator::consumer::state_name;
use crate::coordinator::offsets::{self, OffsetsRecord};
use sluice_engine::keyspace::Stored;

use crate::coordinator::persist::GroupRecord;

/// A consumer group as the admin API shows it.
#[derive(Debug, Default, Serialize)]
pub struct GroupView {
    pub group: String,
    /// The coordinator shard (partition of `__sluice_groups`).
    pub shard: i32,
    /// `classic` (JoinGroup/SyncGroup) or `consumer` (KIP-848); none for a group
    /// that only has committed offsets.
    pub protocol: Option<&'static str>,
    pub state: String,
    pub members: Vec<MemberView>,
    /// Committed offsets by topic and partition.
    pub offsets: BTreeMap<String, BTreeMap<i32, i64>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct MemberView {
    pub id: String,
    pub client_id: String,
    pub client_host: String,
    /// Assigned partitions by topic.
    pub assignment: BTreeMap<String, Vec<i32>>,
}

/// Every group with stored state or offsets, by id.
pub async fn groups(engine: &Engine) -> Result<Vec<GroupView>> {
    let keys = engine.keys();
    let prefix = keys.all_groups();
    let mut out: BTreeMap<String, GroupView> = BTreeMap::new();
    for kv in engine.meta().range(&prefix).await? {
        let Some(shard) = kv.key[prefix.len()..]
            .split('/')
            .next()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Some((group, rest)) = keys.group_of(shard, &kv.key) else {
            continue;
        };
        let view = out.entry(group.clone()).or_insert_with(|| GroupView {
            group,
            shard,
            state: "Empty".into(),
            ..Default::default()
        });
        if rest == "state" {
            match GroupRecord::decode(&kv.value) {
                Ok(stored) => describe(engine, &stored, view),
                Err(e) => tracing::warn!(key = %kv.key, error = %e, "unreadable group state"),
            }
        } else if let Some(rest) = rest.strip_prefix("offsets/") {
            if let Ok(OffsetsRecord(offsets)) = OffsetsRecord::decode(&kv.value) {
                let topic = offsets::topic_of(rest);
                let offsets = offsets::live(engine, topic, offsets);
                if !offsets.is_empty() {
                    view.offsets
                        .entry(topic.to_string())
                        .or_default()
                        .extend(offsets.iter().map(|(p, o)| (*p, o.offset)));
                }
            }
        }
    }
    Ok(out.into_values().collect())
}

fn describe(engine: &Engine, stored: &GroupRecord, view: &mut GroupView) {
    match stored {
        GroupRecord::Classic(g) => {
            view.protocol = Some("classic");
            view.state = if g.members.is_empty() {
                "Empty"
            } else {
                "Stable"
            }
            .into();
            view.members = g
                .members
                .iter()
                .map(|m| MemberView {
                    id: m.id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    assignment: if g.protocol_type.as_deref() == Some("consumer") {
                        classic_assignment(m.assignment.clone())
                    } else {
                        BTreeMap::new()
                    },
                })
                .collect();
        }
        GroupRecord::Consumer(g) => {
            view.protocol = Some("consumer");
            view.state = state_name(g).into();
            view.members = g
                .members
                .values()
                .map(|m| MemberView {
                    id: m.id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    assignment: m
                        .assigned
                        .iter()
                        .filter_map(|(id, ps)| {
                            let topic = engine.topic_by_id(*id)?;
                            Some((topic.record.name.clone(), ps.iter().copied().collect()))
                        })
                        .collect(),
                })
                .collect();
        }
    }
}

/// Decodes a classic consumer's assignment (Kafka's ConsumerProtocolAssignment).
fn classic_assignment(mut buf: bytes::Bytes) -> BTreeMap<String, Vec<i32>> {
    if buf.remaining() < 2 {
        return BTreeMap::new();
    }
    let version = buf.get_i16().clamp(0, 3);
    ConsumerProtocolAssignment::decode(&mut buf, version)
        .map(|a| {
            a.assigned_partitions
                .into_iter()
                .map(|t| (t.topic.to_string(), t.partitions))
                .collect()
        })
        .unwrap_or_default()
}
