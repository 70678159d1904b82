//! Group state in the metadata store: `groups/<shard>/<group>/state` holds a classic
//! group's last completed generation or a consumer group's epochs and assignments.
//! One task per broker, every 100 ms:
//! 1. drops the groups of shards this broker no longer leads, and loads every group
//!    of a shard it has just gained (requests for that shard get
//!    COORDINATOR_LOAD_IN_PROGRESS until then);
//! 2. writes the groups changed since its last round;
//! 3. now and then, deletes committed offsets of empty groups older than the
//!    retention (Kafka's `offsets.retention.minutes`), and a group with nothing left.
//!
//! Invariants:
//! - Every write compares the generation this broker had at the start of the round,
//!   read before the shards' leadership, so a broker that lost the shard (the
//!   controller bumped its generation) writes nothing, and a stale snapshot never
//!   overwrites the state a newer coordinator wrote.
//! - A shard is served only once its groups are loaded at its current leader epoch,
//!   and loading replaces whatever was in memory for it.
//! - No member learns an assignment the store does not hold: SyncGroup and a
//!   ConsumerGroupHeartbeat that carries an assignment first write the group's
//!   state themselves ([`write_synced`], [`write_assigned`]), guarded like every
//!   other write. Writes of one group are serialised by its lock and each takes the
//!   group's state under it, so a write never replaces a newer one.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sluice_engine::keyspace::{self, Stored};
use sluice_engine::Engine;
use sluice_meta::{Op, Txn};

use super::consumer::{ConsumerGroup, ConsumerGroups};
use super::group::{Groups, StoredGroup};
use super::{led_shards, offsets, shard_of, GROUPS_TOPIC};

/// The value of a `groups/<shard>/<group>/state` key.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum GroupRecord {
    Classic(StoredGroup),
    Consumer(ConsumerGroup),
}

impl Stored for GroupRecord {
    const WHAT: &'static str = "group state";
    fn encode(&self) -> bytes::Bytes {
        keyspace::encode_json(self)
    }
    fn decode(bytes: &[u8]) -> std::result::Result<Self, String> {
        keyspace::decode_json(bytes)
    }
}

/// Offset-commit locks; groups hash onto them.
const COMMIT_LOCKS: usize = 64;

/// What the coordinator knows about its shards, shared by the request handlers and
/// the persistence task.
pub struct Shards {
    /// Shard → the leader epoch its groups were loaded at.
    loaded: Mutex<HashMap<i32, i32>>,
    /// Serialises changes to one group's offsets (commits read, merge and write).
    commit_locks: [tokio::sync::Mutex<()>; COMMIT_LOCKS],
    /// Kafka's `offsets.retention.minutes`.
    pub offsets_retention: Duration,
    /// Counts completed write rounds.
    rounds: tokio::sync::watch::Sender<u64>,
    /// Per classic group, the generation and leader of the last state written by
    /// [`write_synced`] (so that one write serves every member's SyncGroup).
    synced: Mutex<HashMap<String, (i32, Option<String>)>>,
}

impl Shards {
    pub fn new(offsets_retention: Duration) -> Self {
        Self {
            loaded: Mutex::new(HashMap::new()),
            commit_locks: std::array::from_fn(|_| tokio::sync::Mutex::new(())),
            offsets_retention,
            rounds: tokio::sync::watch::Sender::new(0),
            synced: Mutex::new(HashMap::new()),
        }
    }

    /// Resolves once every group change made before the call has been written (a
    /// whole write round began after it), or after 5 s if the metadata store does
    /// not answer. Kafka answers a LeaveGroup only once the group's new state is in
    /// its log; this is the same promise.
    pub fn written(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.rounds.subscribe();
        // The round in progress may have taken its snapshot before the change.
        let target = *rx.borrow() + 2;
        async move {
            let _ =
                tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|r| *r >= target)).await;
        }
    }

    fn loaded(&self) -> std::sync::MutexGuard<'_, HashMap<i32, i32>> {
        self.loaded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the shard's groups are loaded at this leader epoch.
    pub fn is_loaded(&self, shard: i32, epoch: i32) -> bool {
        self.loaded().get(&shard) == Some(&epoch)
    }

    /// The lock serialising offset changes of `group`.
    pub fn commit_lock(&self, group: &str) -> &tokio::sync::Mutex<()> {
        &self.commit_locks[shard_of(group, COMMIT_LOCKS as i32) as usize]
    }
}

/// Makes a classic group's completed generation durable before its members learn
/// their assignments, as Kafka answers SyncGroup only once the group's record is
/// in its log: writes the group's state (under the group's lock, compared against
/// `guard`, the generation this broker had before it checked that it coordinates
/// the group) unless a write of this generation already succeeded. A coordinator
/// cut off from the metadata store, or deposed, thus hands out nothing.
pub async fn write_synced(
    engine: &Engine,
    groups: &Groups,
    shards: &Shards,
    guard: &sluice_meta::Compare,
    shard: i32,
    group: &str,
) -> Result<(), kafka_protocol::error::ResponseError> {
    use kafka_protocol::error::ResponseError;
    let _serial = shards.commit_lock(group).lock().await;
    let Some((bytes, generation, leader)) = groups.snapshot(group) else {
        return Err(ResponseError::UnknownMemberId);
    };
    let done = |s: &Shards| {
        s.synced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(group)
            .is_some_and(|(g, l)| *g == generation && *l == leader)
    };
    if done(shards) {
        return Ok(());
    }
    put_state(engine, guard, shard, group, bytes).await?;
    shards
        .synced
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(group.to_string(), (generation, leader));
    Ok(())
}

/// Makes a consumer group's state durable before a heartbeat hands a member a new
/// assignment (as [`write_synced`] for a classic group).
pub async fn write_assigned(
    engine: &Engine,
    groups: &ConsumerGroups,
    shards: &Shards,
    guard: &sluice_meta::Compare,
    shard: i32,
    group: &str,
) -> Result<(), kafka_protocol::error::ResponseError> {
    let _serial = shards.commit_lock(group).lock().await;
    let Some(bytes) = groups.stored_bytes(group) else {
        return Err(kafka_protocol::error::ResponseError::UnknownMemberId);
    };
    put_state(engine, guard, shard, group, bytes).await
}

async fn put_state(
    engine: &Engine,
    guard: &sluice_meta::Compare,
    shard: i32,
    group: &str,
    bytes: Vec<u8>,
) -> Result<(), kafka_protocol::error::ResponseError> {
    use kafka_protocol::error::ResponseError;
    let key = format!("{}state", engine.keys().group(shard, group));
    let txn = Txn::when(vec![guard.clone()]).then(vec![Op::put(key, bytes)]);
    match engine.meta().txn(txn).await {
        Ok(r) if r.succeeded => Ok(()),
        Ok(_) => Err(ResponseError::NotCoordinator),
        Err(e) => {
            tracing::warn!(%group, error = %e, "cannot write the group's new state");
            Err(ResponseError::CoordinatorNotAvailable)
        }
    }
}

/// Runs the persistence task until the engine is dropped.
pub fn start(
    engine: Weak<Engine>,
    groups: Weak<Groups>,
    consumer_groups: Weak<ConsumerGroups>,
    shards: Weak<Shards>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_sweep = Instant::now();
        loop {
            tick.tick().await;
            let (Some(engine), Some(groups), Some(consumer_groups), Some(shards)) = (
                engine.upgrade(),
                groups.upgrade(),
                consumer_groups.upgrade(),
                shards.upgrade(),
            ) else {
                return;
            };
            let round = Round {
                engine: &engine,
                groups: &groups,
                consumer_groups: &consumer_groups,
                shards: &shards,
            };
            // The generation is read before leadership: a follower adopts a new
            // generation only after installing the leaders that came with it, so a
            // guard that is already current means `follow_shards` sees every shard
            // this broker lost (or lost and regained) and drops its stale groups
            // before anything is written.
            let guard = engine.fence().still_leader();
            round.follow_shards().await;
            round.write_dirty(guard.clone()).await;
            shards.rounds.send_modify(|r| *r += 1);
            if Instant::now() >= next_sweep {
                let retention = shards.offsets_retention;
                next_sweep = Instant::now()
                    + (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
                round.expire_offsets(retention, &guard).await;
            }
        }
    });
}

struct Round<'a> {
    engine: &'a Arc<Engine>,
    groups: &'a Groups,
    consumer_groups: &'a ConsumerGroups,
    shards: &'a Shards,
}

impl Round<'_> {
    fn shard_count(&self) -> i32 {
        self.engine
            .topic(GROUPS_TOPIC)
            .map_or(1, |t| t.record.partitions)
    }

    /// Drops the groups of shards no longer led and loads those of shards gained.
    async fn follow_shards(&self) {
        let led = led_shards(self.engine);
        let shards = self.shard_count();
        let gained: Vec<(i32, i32)> = led
            .iter()
            .filter(|(s, e)| !self.shards.is_loaded(**s, **e))
            .map(|(s, e)| (*s, *e))
            .collect();
        self.shards.loaded().retain(|s, _| led.contains_key(s));
        let keep = |g: &str| {
            let s = shard_of(g, shards);
            led.contains_key(&s) && !gained.iter().any(|(g, _)| *g == s)
        };
        self.groups.retain(keep);
        self.consumer_groups.retain(keep);
        for (shard, epoch) in gained {
            match self.load(shard).await {
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(shard, groups = n, "loaded the groups of a shard");
                    }
                    self.shards.loaded().insert(shard, epoch);
                }
                Err(e) => tracing::warn!(shard, error = %e, "cannot load the groups of a shard"),
            }
        }
    }

    async fn load(&self, shard: i32) -> sluice_engine::Result<usize> {
        let keys = self.engine.keys();
        let mut n = 0;
        for kv in self.engine.meta().range(&keys.shard_groups(shard)).await? {
            let Some((group, "state")) = keys.group_of(shard, &kv.key) else {
                continue;
            };
            match GroupRecord::decode(&kv.value) {
                Ok(GroupRecord::Classic(g)) => self.groups.load_stored(&group, g),
                Ok(GroupRecord::Consumer(g)) => self.consumer_groups.load_stored(g),
                Err(e) => {
                    tracing::warn!(%group, error = %e, "unreadable group state; skipped");
                    continue;
                }
            }
            n += 1;
        }
        Ok(n)
    }

    /// Writes every group changed since the last round, each compared against the
    /// generation this broker had at the start of the round.
    async fn write_dirty(&self, guard: sluice_meta::Compare) {
        let shards = self.shard_count();
        let dirty: Vec<(String, bool)> = self
            .groups
            .take_dirty()
            .into_iter()
            .map(|g| (g, true))
            .chain(
                self.consumer_groups
                    .take_dirty()
                    .into_iter()
                    .map(|g| (g, false)),
            )
            .collect();
        for (group, classic) in dirty {
            // DeleteGroups holds this lock too: a group deleted since it was marked
            // stays deleted. The state is taken under the lock, so that a
            // write never replaces a newer one (SyncGroup writes under it too).
            let _serial = self.shards.commit_lock(&group).lock().await;
            let bytes = if classic {
                self.groups.stored_bytes(&group)
            } else {
                self.consumer_groups.stored_bytes(&group)
            };
            let Some(bytes) = bytes else {
                continue;
            };
            let key = format!(
                "{}state",
                self.engine.keys().group(shard_of(&group, shards), &group)
            );
            let txn = Txn::when(vec![guard.clone()]).then(vec![Op::put(key, bytes)]);
            let written = match self.engine.meta().txn(txn).await {
                Ok(r) => r.succeeded,
                Err(e) => {
                    tracing::warn!(%group, error = %e, "cannot write group state; retrying");
                    false
                }
            };
            // Not written: etcd did not answer, or this broker's generation moved.
            // Retry with a fresh snapshot next round. If the shard is gone by then,
            // the group is dropped first and nothing is written; if it is still
            // ours (the controller only took other partitions), the write succeeds
            // under the new generation.
            if !written {
                if classic {
                    self.groups.mark_dirty(&group);
                } else {
                    self.consumer_groups.mark_dirty(&group);
                }
            }
        }
    }

    /// Deletes offsets of empty groups committed (or emptied) longer than
    /// `retention` ago; a group left with no offsets and no members is deleted.
    /// Every write is compared against `guard`, the generation this broker had
    /// before the round saw which shards it leads: a shard lost since then, whose
    /// groups this broker no longer knows, is never swept.
    async fn expire_offsets(&self, retention: Duration, guard: &sluice_meta::Compare) {
        let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        let now = self.engine.clock().now_ms();
        for (shard, epoch) in led_shards(self.engine) {
            if !self.shards.is_loaded(shard, epoch) {
                continue;
            }
            let Ok(ids) = offsets::groups_with_offsets(self.engine, shard).await else {
                continue;
            };
            for group in ids {
                let empty_since = match (
                    self.groups.empty_since(&group),
                    self.consumer_groups.empty_since(&group),
                ) {
                    (Some(None), _) | (_, Some(None)) => continue,
                    (Some(Some(t)), _) | (_, Some(Some(t))) => t,
                    (None, None) => 0,
                };
                let _serial = self.shards.commit_lock(&group).lock().await;
                let Ok(stored) = offsets::fetch(self.engine, shard, &group).await else {
                    continue;
                };
                let mut expired: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                let mut kept = 0;
                for (topic, parts) in &stored {
                    for (p, o) in parts {
                        if o.commit_time_ms
                            .max(empty_since)
                            .saturating_add(retention_ms)
                            <= now
                        {
                            expired.entry(topic.clone()).or_default().push(*p);
                        } else {
                            kept += 1;
                        }
                    }
                }
                // A group with no offsets at all (only its state) goes once it has
                // been empty that long.
                let group_expired =
                    stored.is_empty() && empty_since.saturating_add(retention_ms) <= now;
                if expired.is_empty() && !group_expired {
                    continue;
                }
                let result = if kept == 0 {
                    // Nothing left: the group goes, as Kafka deletes it.
                    let _ = self.groups.delete(&group);
                    let _ = self.consumer_groups.delete(&group);
                    offsets::delete(self.engine, guard, shard, &group).await
                } else {
                    offsets::delete_partitions(self.engine, guard, shard, &group, expired).await
                };
                match result {
                    Ok(()) => {
                        tracing::info!(%group, deleted_group = kept == 0, "expired committed offsets")
                    }
                    Err(e) => tracing::warn!(%group, error = %e, "cannot expire offsets"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use sluice_engine::Clock;

    use super::*;
    use crate::coordinator::consumer::{Heartbeat, Settings, TopicMeta, Topics};
    use crate::coordinator::group::{JoinRequest, Pending};

    #[test]
    fn a_classic_group_is_written_when_stable_and_loads_as_it_was() {
        let groups = Groups::new(Duration::ZERO, Clock::system());
        let join = JoinRequest {
            member_id: String::new(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(10),
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), bytes::Bytes::from_static(b"\0\x01meta"))],
            require_known_member_id: false,
        };
        let Pending::Later(mut rx) = groups.join("g", join) else {
            panic!("joins wait for the round")
        };
        let joined = rx.try_recv().expect("a lone member's round ends at once");
        assert!(
            groups.take_dirty().is_empty(),
            "nothing to write before the sync"
        );
        let assignment = bytes::Bytes::from_static(b"\0\x01assigned");
        let _ = groups.sync(
            "g",
            &joined.member_id,
            joined.generation,
            None,
            vec![(joined.member_id.clone(), assignment.clone())],
        );
        let dirty = groups.take_dirty();
        assert_eq!(dirty.len(), 1);
        assert!(groups.take_dirty().is_empty(), "written once");

        let bytes = groups.stored_bytes(&dirty[0]).unwrap();
        let GroupRecord::Classic(stored) = GroupRecord::decode(&bytes).unwrap() else {
            panic!("a classic group")
        };
        let moved = Groups::new(Duration::ZERO, Clock::system());
        moved.load_stored("g", stored);
        // The member's next heartbeat on the new coordinator succeeds.
        assert_eq!(
            moved.heartbeat("g", &joined.member_id, joined.generation, None),
            Ok(())
        );
        let (state, held) = moved
            .with_group("g", |g| {
                (g.state, g.members[&joined.member_id].assignment.clone())
            })
            .unwrap();
        assert_eq!(state, crate::coordinator::group::State::Stable);
        assert_eq!(held, assignment);
    }

    #[test]
    fn a_consumer_group_loads_with_its_epochs_and_partitions() {
        let groups = ConsumerGroups::new(Settings::default(), Clock::system());
        let topics = Topics::from([(
            "t".to_string(),
            TopicMeta {
                id: uuid::Uuid::new_v4(),
                partitions: 3,
            },
        )]);
        let hb = Heartbeat {
            member_id: "m".into(),
            rebalance_timeout_ms: 30_000,
            topics: Some(vec!["t".into()]),
            owned: Some(Default::default()),
            ..Default::default()
        };
        let first = groups.heartbeat("g", hb.clone(), &topics).unwrap();
        let dirty = groups.take_dirty();
        let bytes = groups.stored_bytes(&dirty[0]).unwrap();
        let GroupRecord::Consumer(stored) = GroupRecord::decode(&bytes).unwrap() else {
            panic!("a consumer group")
        };
        let moved = ConsumerGroups::new(Settings::default(), Clock::system());
        moved.load_stored(stored);
        let again = Heartbeat {
            member_epoch: first.member_epoch,
            rebalance_timeout_ms: -1,
            topics: None,
            owned: first.assignment.clone(),
            ..hb
        };
        let answer = moved.heartbeat("g", again, &topics).unwrap();
        assert_eq!(answer.member_epoch, first.member_epoch, "not fenced");
        assert_eq!(answer.assignment, None, "nothing changed");
        assert!(moved.take_dirty().is_empty());
    }

    #[test]
    fn state_keys_name_their_group() {
        let keys = sluice_engine::keyspace::Keys::new("sluice");
        let state = format!("{}state", keys.group(3, "a/b%c"));
        assert_eq!(
            keys.group_of(3, &state),
            Some(("a/b%c".to_string(), "state"))
        );
        let offsets = format!("{}offsets/t", keys.group(3, "g"));
        assert_eq!(
            keys.group_of(3, &offsets),
            Some(("g".to_string(), "offsets/t"))
        );
        assert_eq!(keys.group_of(4, &state), None, "another shard's key");
    }
}
