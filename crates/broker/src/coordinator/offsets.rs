//! Committed offsets: `groups/<shard>/<group>/offsets/<topic>` maps each partition of
//! one topic to the offset a group committed for it. A commit is one guarded
//! read-modify-write transaction per request (chunked to stay under etcd's operation
//! limit), so partitions committed together become visible together.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sluice_engine::{Engine, EngineError, Result};
use sluice_meta::{Compare, Op, Txn};
use uuid::Uuid;

/// One partition's committed position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub offset: i64,
    #[serde(default = "no_epoch")]
    pub leader_epoch: i32,
    #[serde(default)]
    pub metadata: Option<String>,
    pub commit_time_ms: i64,
    /// The id of the topic committed for. A topic deleted and created again under
    /// the same name has a new id, and the old offsets do not apply to it (Kafka
    /// deletes them with the topic). Absent in offsets stored before ids were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<Uuid>,
}

fn no_epoch() -> i32 {
    -1
}

/// A topic's committed offsets by partition.
pub type TopicOffsets = BTreeMap<i32, CommittedOffset>;

/// The stored offsets of `topic` that belong to the topic of that name now: those of
/// a deleted topic are dropped, whether or not one of the same name exists again.
pub fn live(engine: &Engine, topic: &str, mut offsets: TopicOffsets) -> TopicOffsets {
    let current = engine.topic(topic).map(|t| t.record.id);
    offsets.retain(|_, o| o.topic_id.is_none() || o.topic_id == current);
    offsets
}

/// Topics per commit transaction: each costs one compare and one write.
const TOPICS_PER_TXN: usize = 90;

fn offsets_prefix(engine: &Engine, shard: i32, group: &str) -> String {
    format!("{}offsets/", engine.keys().group(shard, group))
}

/// Merges `commits` into the group's stored offsets. Fails with `NotLeader` when this
/// broker no longer coordinates the shard.
pub async fn commit(
    engine: &Engine,
    shard: i32,
    group: &str,
    commits: BTreeMap<String, TopicOffsets>,
) -> Result<()> {
    rewrite(
        engine,
        shard,
        group,
        commits.keys().cloned().collect(),
        |topic, stored| {
            if let Some(new) = commits.get(topic) {
                stored.extend(new.iter().map(|(p, o)| (*p, o.clone())));
            }
        },
    )
    .await
}

/// Deletes the offsets of some partitions (OffsetDelete).
pub async fn delete_partitions(
    engine: &Engine,
    shard: i32,
    group: &str,
    partitions: BTreeMap<String, Vec<i32>>,
) -> Result<()> {
    rewrite(
        engine,
        shard,
        group,
        partitions.keys().cloned().collect(),
        |topic, stored| {
            for p in partitions.get(topic).into_iter().flatten() {
                stored.remove(p);
            }
        },
    )
    .await
}

/// Reads the stored offsets of `topics`, lets `change` edit each topic's map and
/// writes them back in guarded transactions (a topic left empty is deleted). Callers
/// serialise changes of one group.
async fn rewrite(
    engine: &Engine,
    shard: i32,
    group: &str,
    topics: Vec<String>,
    change: impl Fn(&str, &mut TopicOffsets),
) -> Result<()> {
    let prefix = offsets_prefix(engine, shard, group);
    for chunk in topics.chunks(TOPICS_PER_TXN) {
        let mut compares = vec![engine.generation_guard()];
        let mut ops = Vec::with_capacity(chunk.len());
        for topic in chunk {
            let key = format!("{prefix}{topic}");
            let current = engine.meta().get(&key).await?;
            let mut offsets = match &current {
                Some(kv) => live(
                    engine,
                    topic,
                    serde_json::from_slice(&kv.value).unwrap_or_default(),
                ),
                None => TopicOffsets::new(),
            };
            change(topic, &mut offsets);
            compares.push(Compare::ModRevision(
                key.clone(),
                current.map_or(0, |kv| kv.mod_revision),
            ));
            ops.push(if offsets.is_empty() {
                Op::Delete(key)
            } else {
                Op::put(key, serde_json::to_vec(&offsets).unwrap_or_default())
            });
        }
        if !engine
            .meta()
            .txn(Txn::when(compares).then(ops))
            .await?
            .succeeded
        {
            // Changes of one group are serialised by the caller, so a failed compare
            // means this broker's generation moved: it lost the shard.
            return Err(EngineError::NotLeader {
                epoch: engine.generation(),
            });
        }
    }
    Ok(())
}

/// The group's committed offsets, for every topic or just `topics`.
pub async fn fetch(
    engine: &Engine,
    shard: i32,
    group: &str,
) -> Result<BTreeMap<String, TopicOffsets>> {
    let prefix = offsets_prefix(engine, shard, group);
    let mut out = BTreeMap::new();
    for kv in engine.meta().range(&prefix).await? {
        let Some(topic) = kv.key.strip_prefix(&prefix) else {
            continue;
        };
        if let Ok(offsets) = serde_json::from_slice::<TopicOffsets>(&kv.value) {
            let offsets = live(engine, topic, offsets);
            if !offsets.is_empty() {
                out.insert(topic.to_string(), offsets);
            }
        }
    }
    Ok(out)
}

/// Deletes everything stored for the group (DeleteGroups on an empty group).
pub async fn delete(engine: &Engine, shard: i32, group: &str) -> Result<()> {
    let txn = Txn::when(vec![engine.generation_guard()])
        .then(vec![Op::DeletePrefix(engine.keys().group(shard, group))]);
    if engine.meta().txn(txn).await?.succeeded {
        Ok(())
    } else {
        Err(EngineError::NotLeader {
            epoch: engine.generation(),
        })
    }
}

/// Groups of `shard` that have committed offsets (whether or not they have members).
pub async fn groups_with_offsets(engine: &Engine, shard: i32) -> Result<Vec<String>> {
    let prefix = engine.keys().shard_groups(shard);
    let mut out: Vec<String> = Vec::new();
    for kv in engine.meta().range(&prefix).await? {
        let Some((group, _)) = engine.keys().group_of(shard, &kv.key) else {
            continue;
        };
        if out.last() != Some(&group) {
            out.push(group);
        }
    }
    Ok(out)
}
