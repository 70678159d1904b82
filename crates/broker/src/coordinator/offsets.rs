//! Committed offsets: `groups/<shard>/<group>/offsets/<topic>/<n>` maps the
//! partitions `32n..32n+31` of one topic to the offsets a group committed for them,
//! so no value outgrows the metadata store whatever the topic's size (a partition's
//! entry is about 100 bytes, at most about 25 KB with the largest metadata string).
//! Offsets stored before, as one key per topic (`offsets/<topic>`), are read as well
//! and folded into the new keys at the next commit of that topic.
//!
//! A commit is a read-modify-write of the keys it changes, in guarded transactions
//! packed under the store's operation and byte limits, so partitions committed
//! together in one transaction become visible together.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sluice_engine::keyspace::{self, Stored};
use sluice_engine::{Engine, EngineError, Result};
use sluice_meta::{Compare, Op, Txn, MAX_TXN_BYTES, MAX_TXN_OPS};
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

/// The value of an `offsets/<topic>/<n>` key.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OffsetsRecord(pub TopicOffsets);

impl Stored for OffsetsRecord {
    const WHAT: &'static str = "committed offsets";
    fn encode(&self) -> bytes::Bytes {
        keyspace::encode_json(self)
    }
    fn decode(bytes: &[u8]) -> std::result::Result<Self, String> {
        keyspace::decode_json(bytes)
    }
}

/// The stored offsets of `topic` that belong to the topic of that name now: those of
/// a deleted topic are dropped, whether or not one of the same name exists again.
pub fn live(engine: &Engine, topic: &str, mut offsets: TopicOffsets) -> TopicOffsets {
    let current = engine.topic(topic).map(|t| t.record.id);
    offsets.retain(|_, o| o.topic_id.is_none() || o.topic_id == current);
    offsets
}

/// Partitions per stored key.
const PARTITIONS_PER_KEY: i32 = 32;

fn offsets_prefix(engine: &Engine, shard: i32, group: &str) -> String {
    format!("{}offsets/", engine.keys().group(shard, group))
}

/// The topic an offsets key holds, from the part of the key after `offsets/`.
pub fn topic_of(rest: &str) -> &str {
    rest.split_once('/').map_or(rest, |(topic, _)| topic)
}

/// Merges `commits` into the group's stored offsets. Fails with `NotLeader` when
/// `guard`, this broker's generation when it found it coordinates the shard, no
/// longer holds.
pub async fn commit(
    engine: &Engine,
    guard: &Compare,
    shard: i32,
    group: &str,
    commits: BTreeMap<String, TopicOffsets>,
) -> Result<()> {
    rewrite(
        engine,
        guard,
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
    guard: &Compare,
    shard: i32,
    group: &str,
    partitions: BTreeMap<String, Vec<i32>>,
) -> Result<()> {
    rewrite(
        engine,
        guard,
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
/// writes back the keys whose contents changed (a key left empty is deleted), in
/// guarded transactions. Callers serialise changes of one group.
async fn rewrite(
    engine: &Engine,
    guard: &Compare,
    shard: i32,
    group: &str,
    topics: Vec<String>,
    change: impl Fn(&str, &mut TopicOffsets),
) -> Result<()> {
    let prefix = offsets_prefix(engine, shard, group);
    let mut writes: Vec<(Compare, Op)> = Vec::new();
    for topic in &topics {
        // A key of the older layout first, so that newer keys win.
        let legacy = engine.meta().get(&format!("{prefix}{topic}")).await?;
        let mut stored: Vec<_> = legacy.into_iter().collect();
        stored.extend(engine.meta().range(&format!("{prefix}{topic}/")).await?);
        let mut offsets = TopicOffsets::new();
        for kv in &stored {
            // Unreadable is an error: written back as empty, its offsets would be lost.
            offsets.extend(OffsetsRecord::from_kv(kv)?.0);
        }
        let mut offsets = live(engine, topic, offsets);
        change(topic, &mut offsets);
        let mut next: BTreeMap<String, TopicOffsets> = BTreeMap::new();
        for (p, o) in offsets {
            let key = format!("{prefix}{topic}/{}", p.div_euclid(PARTITIONS_PER_KEY));
            next.entry(key).or_default().insert(p, o);
        }
        for kv in &stored {
            let value = next.remove(&kv.key).map(encode);
            if value.as_deref() == Some(&kv.value[..]) {
                continue;
            }
            let check = Compare::ModRevision(kv.key.clone(), kv.mod_revision);
            writes.push(match value {
                Some(v) => (check, Op::put(kv.key.clone(), v)),
                None => (check, Op::Delete(kv.key.clone())),
            });
        }
        for (key, o) in next {
            writes.push((Compare::Missing(key.clone()), Op::put(key, encode(o))));
        }
    }
    let mut writes = writes.into_iter().peekable();
    while writes.peek().is_some() {
        let mut compares = vec![guard.clone()];
        let mut ops = Vec::new();
        let mut bytes = guard.size();
        while let Some((check, op)) = writes.next_if(|(check, op)| {
            ops.is_empty()
                || (compares.len() < MAX_TXN_OPS
                    && bytes + check.size() + op.size() <= MAX_TXN_BYTES)
        }) {
            bytes += check.size() + op.size();
            compares.push(check);
            ops.push(op);
        }
        if !engine
            .meta()
            .txn(Txn::when(compares).then(ops))
            .await?
            .succeeded
        {
            // Changes of one group are serialised by the caller, so a failed compare
            // means this broker's generation moved since the caller took `guard`:
            // the shard may have moved.
            return Err(EngineError::NotLeader {
                epoch: engine.generation(),
            });
        }
    }
    Ok(())
}

fn encode(offsets: TopicOffsets) -> bytes::Bytes {
    OffsetsRecord(offsets).encode()
}

/// The group's committed offsets, by topic.
pub async fn fetch(
    engine: &Engine,
    shard: i32,
    group: &str,
) -> Result<BTreeMap<String, TopicOffsets>> {
    let prefix = offsets_prefix(engine, shard, group);
    let mut stored: BTreeMap<String, TopicOffsets> = BTreeMap::new();
    for kv in engine.meta().range(&prefix).await? {
        let Some(rest) = kv.key.strip_prefix(&prefix) else {
            continue;
        };
        stored
            .entry(topic_of(rest).to_string())
            .or_default()
            .extend(OffsetsRecord::from_kv(&kv)?.0);
    }
    Ok(stored
        .into_iter()
        .map(|(topic, offsets)| {
            let offsets = live(engine, &topic, offsets);
            (topic, offsets)
        })
        .filter(|(_, offsets)| !offsets.is_empty())
        .collect())
}

/// Deletes everything stored for the group (DeleteGroups on an empty group).
pub async fn delete(engine: &Engine, guard: &Compare, shard: i32, group: &str) -> Result<()> {
    let txn = Txn::when(vec![guard.clone()])
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a test: panicking is how it fails

    use std::sync::Arc;

    use sluice_meta::{EmbeddedStore, MetaStore};

    use super::*;

    fn at(offset: i64) -> CommittedOffset {
        CommittedOffset {
            offset,
            leader_epoch: -1,
            metadata: None,
            commit_time_ms: 0,
            topic_id: None,
        }
    }

    /// A stored offsets value that does not decode is an error for the commits
    /// sharing its key, never an empty map written back over it.
    #[tokio::test]
    async fn an_unreadable_offsets_key_fails_the_commit_and_stays() {
        let meta: Arc<dyn MetaStore> = Arc::new(EmbeddedStore::in_memory());
        let broker = crate::testing::broker_on(meta.clone()).await;
        let engine = &broker.engine;
        let key = format!("{}t/0", offsets_prefix(engine, 0, "g"));
        meta.txn(Txn::when(vec![]).then(vec![Op::put(key.clone(), &b"{not json"[..])]))
            .await
            .unwrap();
        let guard = engine.fence().still_leader();
        let commits = BTreeMap::from([("t".to_string(), TopicOffsets::from([(1, at(5))]))]);
        let outcome = commit(engine, &guard, 0, "g", commits).await;
        assert!(outcome.is_err(), "{outcome:?}");
        let kept = meta.get(&key).await.unwrap().unwrap();
        assert_eq!(&kept.value[..], b"{not json");
        assert!(fetch(engine, 0, "g").await.is_err());
    }
}
