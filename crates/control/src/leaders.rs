//! Leader assignment rounds: read topics, brokers and assignments, compute leaders
//! with [`assign`], and write what changed.
//!
//! Each changed topic's `assignment/<topic-id>` is written in the same transaction as
//! a generation bump of every broker that loses a partition in it: that broker's
//! uncommitted flushes can then never commit. Every transaction compares the
//! controller key's value, so a deposed controller writes nothing. A transaction
//! holds at most [`MAX_TXN_OPS`] compares and as many writes, and at most
//! [`MAX_TXN_BYTES`] (a topic's record is a few bytes per partition, so a failover
//! that moves partitions of many large topics spans several transactions).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sluice_engine::keyspace::{parse_brokers, AssignmentRecord, Generation, Leader, Stored};
use sluice_engine::{Engine, TopicRecord};
use sluice_meta::{Compare, MetaError, Op, Txn, MAX_TXN_BYTES, MAX_TXN_OPS};
use uuid::Uuid;

use crate::assignment::{assign, LiveBroker, PartitionKey};

/// How a round ended.
pub(crate) enum Round {
    /// Leaders match the live brokers.
    Settled,
    /// Part was written or a race was lost: run another round now.
    Again,
    /// This broker is not the controller any more.
    Deposed,
}

/// One round: recompute leaders and write what changed, while the controller key
/// holds `ours`.
pub(crate) async fn round(engine: &Engine, ours: &bytes::Bytes) -> Result<Round, MetaError> {
    let meta = engine.meta();
    let keys = engine.keys();
    let ctrl_key = keys.controller();
    match meta.get(&ctrl_key).await? {
        Some(kv) if kv.value == *ours => {}
        _ => return Ok(Round::Deposed),
    }
    let topics: Vec<TopicRecord> = meta
        .range(&keys.topics())
        .await?
        .iter()
        .filter_map(|kv| TopicRecord::decode(&kv.value).ok())
        .collect();
    let (live, generations) = parse_brokers(keys, &meta.range(&keys.brokers()).await?);
    let mut stored: HashMap<Uuid, (AssignmentRecord, i64)> = HashMap::new();
    let mut orphaned = Vec::new();
    for kv in meta.range(&keys.assignments()).await? {
        let Some(id) = keys.assignment_topic(&kv.key) else {
            continue;
        };
        match AssignmentRecord::decode(&kv.value) {
            Ok(a) => {
                stored.insert(id, (a, kv.mod_revision));
            }
            Err(_) => orphaned.push(kv.key.clone()),
        }
    }
    let known: BTreeSet<Uuid> = topics.iter().map(|t| t.id).collect();
    orphaned.extend(
        stored
            .keys()
            .filter(|id| !known.contains(id))
            .map(|id| keys.assignment(*id)),
    );

    // Partitions go to live brokers with the broker role (not compactor-only ones).
    let brokers: Vec<LiveBroker> = live
        .values()
        .filter(|b| !b.leaving && b.roles.broker)
        .map(|b| LiveBroker {
            id: b.id,
            rack: b.rack.clone(),
        })
        .collect();
    let mut partitions: Vec<PartitionKey> = Vec::new();
    let mut current: HashMap<PartitionKey, i32> = HashMap::new();
    let mut pinned: HashMap<PartitionKey, i32> = HashMap::new();
    for t in &topics {
        for (p, b) in &t.pinned {
            pinned.insert((t.id.to_string(), *p), *b);
        }
        let old = stored.get(&t.id).map(|(a, _)| a);
        for p in 0..t.partitions {
            let key = (t.id.to_string(), p);
            if let Some(l) = old.and_then(|a| a.leaders.get(p as usize)) {
                current.insert(key.clone(), l.broker);
            }
            partitions.push(key);
        }
    }
    let placed = if brokers.is_empty() {
        BTreeMap::new()
    } else {
        assign(&partitions, &brokers, &current, &pinned)
    };

    // Changed topics, each with the brokers that lose a partition in it.
    let mut changes: Vec<(Uuid, AssignmentRecord, i64, BTreeSet<i32>)> = Vec::new();
    for t in &topics {
        let (old, rev) = match stored.get(&t.id) {
            Some((a, rev)) => (Some(a), *rev),
            None => (None, 0),
        };
        let mut next = AssignmentRecord::default();
        let mut losers = BTreeSet::new();
        for p in 0..t.partitions {
            let prev = old.and_then(|a| a.leaders.get(p as usize)).copied();
            let Some(&broker) = placed.get(&(t.id.to_string(), p)) else {
                // No live broker: keep what is stored (or nothing) until one joins.
                next.leaders.push(prev.unwrap_or(Leader {
                    broker: -1,
                    epoch: -1,
                }));
                continue;
            };
            next.leaders.push(match prev {
                Some(l) if l.broker == broker => l,
                Some(l) => {
                    if l.broker >= 0 {
                        losers.insert(l.broker);
                    }
                    Leader {
                        broker,
                        epoch: l.epoch + 1,
                    }
                }
                None => Leader { broker, epoch: 0 },
            });
        }
        if old != Some(&next) {
            changes.push((t.id, next, rev, losers));
        }
    }

    // Pack changes into transactions that each fence the losers of their topics.
    let mut i = 0;
    while i < changes.len() {
        let mut compares = vec![Compare::ValueEquals(ctrl_key.clone(), ours.clone())];
        let mut ops = Vec::new();
        let mut bytes = compares[0].size();
        let mut bumped: BTreeSet<i32> = BTreeSet::new();
        while i < changes.len() {
            let (id, next, rev, losers) = &changes[i];
            let new_losers: Vec<i32> = losers
                .iter()
                .copied()
                .filter(|b| !bumped.contains(b) && generations.contains_key(b))
                .collect();
            let key = keys.assignment(*id);
            let write = Op::put(key.clone(), next.encode());
            let check = Compare::ModRevision(key, *rev);
            // Each generation bump is a compare and a write of about 100 bytes.
            let cost = 1 + new_losers.len();
            let size = write.size() + check.size() + 200 * new_losers.len();
            if !ops.is_empty()
                && (ops.len() + cost > MAX_TXN_OPS
                    || compares.len() + cost > MAX_TXN_OPS
                    || bytes + size > MAX_TXN_BYTES)
            {
                break;
            }
            bytes += size;
            compares.push(check);
            ops.push(write);
            for b in new_losers {
                let (g, g_rev) = generations[&b];
                let gen_key = keys.generation(b);
                compares.push(Compare::ModRevision(gen_key.clone(), g_rev));
                ops.push(Op::put(
                    gen_key,
                    Generation {
                        number: g.number + 1,
                        owner: g.owner,
                    }
                    .encode(),
                ));
                bumped.insert(b);
            }
            i += 1;
        }
        if !meta.txn(Txn::when(compares).then(ops)).await?.succeeded {
            // Something moved underneath (a broker restarted, a topic changed): the
            // next round starts from fresh reads.
            tracing::debug!("assignment write lost a race; recomputing");
            return Ok(Round::Again);
        }
        // Generations written: later transactions must compare the new revisions,
        // so take a fresh round for any remaining changes.
        if !bumped.is_empty() && i < changes.len() {
            return Ok(Round::Again);
        }
    }
    let moved = changes.len();
    for chunk in orphaned.chunks(MAX_TXN_OPS - 1) {
        let ops = chunk.iter().cloned().map(Op::Delete).collect();
        let txn = Txn::when(vec![Compare::ValueEquals(ctrl_key.clone(), ours.clone())]).then(ops);
        meta.txn(txn).await?;
    }
    if moved > 0 {
        tracing::info!(
            topics_changed = moved,
            brokers = brokers.len(),
            "assigned partition leaders"
        );
    }
    Ok(Round::Settled)
}
