//! This broker's place in the cluster: its generation, which partitions it leads, and
//! the view of brokers and leaders that Metadata answers from (RFC 0004).
//!
//! The controller publishes `assignment/<topic-id>` (leader and leader epoch of every
//! partition) and, in the same transaction, bumps the generation of every broker that
//! loses a partition. [`Cluster::sync`] follows it:
//!
//! 1. read this broker's generation; an owner other than this process means a newer
//!    process took the broker id, and this one is fenced for good;
//! 2. read topics, live brokers and assignments (all after step 1);
//! 3. rebuild every gained partition from the manifests (read after step 2, so they
//!    include every commit of the previous leader, whose generation was bumped when
//!    the partition moved);
//! 4. under the WAL buffer lock: on a new generation, fail everything buffered (its
//!    flushes carry the old generation and cannot commit; write states are reset
//!    once flushes already committing are through, see `WritePath::move_to`),
//!    drop lost partitions, install gained ones, adopt the generation.
//!
//! Invariant: a partition is led (accepts produces) only between a sync that saw it
//! assigned here and the next sync that does not; every commit carries the
//! generation its data was appended under, so data appended for a partition before
//! it moved away can never commit after the move.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sluice_meta::{notify_on_changes, Compare, MetaStore, Op, Txn};
use tokio::sync::{Mutex as AsyncMutex, Notify};
use uuid::Uuid;

use crate::catalog::Catalog;
use crate::error::{EngineError, Result};
use crate::keyspace::{
    parse_brokers, AssignmentRecord, BrokerConfigRecord, BrokerRecord, ControllerRecord, Fences,
    Generation, Keys, Leader, Stored,
};
use crate::partition::{Partition, TailBudget};
use crate::recovery::Recovery;
use crate::topics::broker_configs::BrokerDefaults;
use crate::topics::TopicRecord;
use crate::write::WritePath;

/// What this broker knows about the cluster, for Metadata and DescribeCluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// Live brokers by id.
    pub brokers: BTreeMap<i32, BrokerRecord>,
    /// Leaders by topic id.
    pub leaders: HashMap<Uuid, Arc<AssignmentRecord>>,
    pub controller: Option<i32>,
    /// Whether this broker has seen an assignment at least once.
    pub loaded: bool,
}

impl ClusterView {
    /// The live leader of a partition, if it has one.
    pub fn leader(&self, topic: Uuid, partition: i32) -> Option<Leader> {
        let l = *self.leaders.get(&topic)?.leaders.get(partition as usize)?;
        self.brokers
            .get(&l.broker)
            .filter(|b| !b.leaving)
            .map(|_| l)
    }

    /// The broker that compacts a partition: its leader if the leader has the
    /// compactor role, else one of the live compactors, picked by the partition so
    /// the work spreads. None while no live broker compacts.
    pub fn compactor(&self, topic: Uuid, partition: i32) -> Option<i32> {
        let leader = self
            .leaders
            .get(&topic)?
            .leaders
            .get(partition as usize)?
            .broker;
        if self.brokers.get(&leader).is_some_and(|b| b.roles.compactor) {
            return Some(leader);
        }
        let compactors: Vec<i32> = self
            .brokers
            .values()
            .filter(|b| b.roles.compactor && !b.leaving)
            .map(|b| b.id)
            .collect();
        if compactors.is_empty() {
            return None;
        }
        let pick =
            crc32c::crc32c_append(crc32c::crc32c(topic.as_bytes()), &partition.to_be_bytes());
        compactors.get(pick as usize % compactors.len()).copied()
    }
}

/// Claims a new generation for this process, fencing any older process with the
/// same broker id.
pub(crate) async fn claim_generation(meta: &dyn MetaStore, key: &str, owner: Uuid) -> Result<u64> {
    loop {
        let current = meta.get(key).await?;
        let (number, rev) = match &current {
            Some(kv) => (Generation::from_kv(kv)?.number, kv.mod_revision),
            None => (0, 0),
        };
        let next = Generation {
            number: number + 1,
            owner,
        };
        let txn = Txn::when(vec![Compare::ModRevision(key.to_string(), rev)])
            .then(vec![Op::put(key, next.encode())]);
        if meta.txn(txn).await?.succeeded {
            return Ok(next.number);
        }
    }
}

/// How often the follower re-reads everything even without watch events.
const RESYNC_INTERVAL: Duration = Duration::from_secs(5);

/// The stores and neighbours the follower uses.
pub(crate) struct ClusterDeps {
    pub meta: Arc<dyn MetaStore>,
    pub keys: Keys,
    pub fences: Arc<Fences>,
    pub catalog: Arc<Catalog>,
    pub write: Arc<WritePath>,
    pub recovery: Recovery,
    pub tail: Arc<TailBudget>,
    /// Wakes the follower (watches, commits that found the generation moved).
    pub resync: Arc<Notify>,
}

/// The cluster follower: this broker's view of the cluster and the partitions it
/// leads, kept up to date with the metadata store.
pub struct Cluster {
    broker_id: i32,
    meta: Arc<dyn MetaStore>,
    keys: Keys,
    fences: Arc<Fences>,
    catalog: Arc<Catalog>,
    write: Arc<WritePath>,
    recovery: Recovery,
    tail: Arc<TailBudget>,
    resync: Arc<Notify>,
    view: RwLock<Arc<ClusterView>>,
    /// One sync at a time.
    sync_lock: AsyncMutex<()>,
}

impl Cluster {
    pub(crate) fn new(broker_id: i32, deps: ClusterDeps) -> Arc<Self> {
        Arc::new(Self {
            broker_id,
            meta: deps.meta,
            keys: deps.keys,
            fences: deps.fences,
            catalog: deps.catalog,
            write: deps.write,
            recovery: deps.recovery,
            tail: deps.tail,
            resync: deps.resync,
            view: RwLock::default(),
            sync_lock: AsyncMutex::new(()),
        })
    }

    /// Follows the controller: one sync now, then on every change of topics,
    /// brokers, assignments or the controller, and every few seconds.
    pub(crate) fn start_follower(self: &Arc<Self>) {
        let prefixes = [
            self.keys.topics(),
            self.keys.brokers(),
            self.keys.assignments(),
            self.keys.controller(),
            self.keys.broker_configs(),
        ];
        // The watches end with the follower, which holds the last `resync` besides
        // the engine's own.
        for prefix in prefixes {
            notify_on_changes(self.meta.clone(), prefix, Arc::downgrade(&self.resync));
        }
        let cluster = Arc::downgrade(self);
        let wake = self.resync.clone();
        tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                let _ = tokio::time::timeout(RESYNC_INTERVAL, wake.notified()).await;
                let Some(cluster) = cluster.upgrade() else {
                    return;
                };
                match cluster.sync().await {
                    Ok(()) => {
                        if failures > 0 {
                            tracing::info!(failures, "cluster sync works again");
                        }
                        failures = 0;
                    }
                    Err(e) => {
                        if failures.is_multiple_of(20) {
                            tracing::warn!(error = %e, failures, "cluster sync failed; retrying");
                        }
                        failures += 1;
                        drop(cluster);
                        // 200 ms, doubling, at most 3.2 s between attempts.
                        let backoff = Duration::from_millis(200) * (1 << failures.min(4));
                        tokio::time::sleep(backoff / 2).await;
                        wake.notify_one();
                    }
                }
            }
        });
    }

    /// Asks the follower to sync soon (e.g. after a commit found the generation moved).
    pub fn request_sync(&self) {
        self.resync.notify_one();
    }

    /// The cluster as last synced.
    pub fn view(&self) -> Arc<ClusterView> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Brings leadership, topics and the cluster view up to date with the metadata
    /// store (see the module docs for the order of reads and why).
    pub async fn sync(&self) -> Result<()> {
        let _one_at_a_time = self.sync_lock.lock().await;
        let gen_key = self.keys.generation(self.broker_id);
        let generation = match self.meta.get(&gen_key).await? {
            Some(kv) => Generation::from_kv(&kv)?,
            None => {
                return Err(EngineError::Meta(format!(
                    "generation missing: key={gen_key}"
                )))
            }
        };
        if generation.owner != self.fences.owner() {
            self.fence_forever();
            return Err(EngineError::NotLeader {
                epoch: generation.number,
            });
        }
        // Local creates and deletes from here on are not undone by this read.
        let mark = self.catalog.mark();
        let topics = self.meta.range(&self.keys.topics()).await?;
        let brokers = self.meta.range(&self.keys.brokers()).await?;
        let assignments = self.meta.range(&self.keys.assignments()).await?;
        let controller = self.meta.get(&self.keys.controller()).await?;
        let broker_configs = self.meta.range(&self.keys.broker_configs()).await?;
        self.fences.refresh_gc_horizon(self.meta.as_ref()).await?;

        let mut records = Vec::with_capacity(topics.len());
        for kv in &topics {
            match TopicRecord::decode(&kv.value) {
                Ok(r) => records.push(r),
                Err(e) => {
                    // One unreadable record must not stop every broker's sync: the
                    // topic keeps the record this broker knew, if any.
                    tracing::warn!(key = %kv.key, error = %e, "unreadable topic record; kept as it was");
                    let name = kv.key.strip_prefix(&self.keys.topics()).unwrap_or_default();
                    records.extend(self.catalog.topic(name).map(|t| t.record.clone()));
                }
            }
        }
        let mut defaults = BrokerDefaults::default();
        for kv in &broker_configs {
            let Ok(r) = BrokerConfigRecord::decode(&kv.value) else {
                tracing::warn!(key = %kv.key, "unreadable broker config record; ignored");
                continue;
            };
            if kv.key == self.keys.broker_config(None) {
                defaults.cluster = r.configs;
            } else if kv.key == self.keys.broker_config(Some(self.broker_id)) {
                defaults.broker = r.configs;
            }
        }
        self.catalog.reconcile(records, defaults, mark);

        let mut leaders: HashMap<Uuid, Arc<AssignmentRecord>> = HashMap::new();
        for kv in &assignments {
            let Some(id) = self.keys.assignment_topic(&kv.key) else {
                continue;
            };
            if let Ok(a) = AssignmentRecord::decode(&kv.value) {
                leaders.insert(id, Arc::new(a));
            }
        }

        // What this broker should lead, and what changes.
        let me = self.broker_id;
        let mut gained: Vec<(Arc<Partition>, i32)> = Vec::new();
        let mut lost: Vec<Arc<Partition>> = Vec::new();
        for topic in self.catalog.topics() {
            let assigned = leaders.get(&topic.record.id);
            for p in &topic.partitions {
                let want = assigned
                    .and_then(|a| a.leaders.get(p.index as usize))
                    .filter(|l| l.broker == me)
                    .map(|l| l.epoch);
                match (want, p.leader_epoch()) {
                    (Some(e), Some(cur)) if e == cur => {}
                    (Some(e), _) => gained.push((p.clone(), e)),
                    (None, Some(_)) => lost.push(p.clone()),
                    (None, None) => {}
                }
            }
        }
        let rebuilt = if gained.is_empty() {
            Vec::new()
        } else {
            // A partition that cannot be rebuilt is not gained (the next sync tries
            // again); the rest of the sync, the generation and the partitions lost,
            // goes on.
            self.recovery.rebuild(&gained).await.unwrap_or_else(|e| {
                tracing::error!(error = %e, partitions = gained.len(),
                    "cannot rebuild gained partitions; not leading them yet");
                gained.iter().map(|_| None).collect()
            })
        };

        self.write.move_to(generation.number, !lost.is_empty(), || {
            for p in &lost {
                p.set_leader_epoch(None);
                p.read_mut().clear(&self.tail);
                p.reset_write_to_committed();
            }
            for ((p, epoch), state) in gained.iter().zip(rebuilt) {
                let Some(state) = state else {
                    // Led at an older epoch, maybe: that state is stale now.
                    if p.leader_epoch().is_some() {
                        p.set_leader_epoch(None);
                        p.read_mut().clear(&self.tail);
                        p.reset_write_to_committed();
                    }
                    continue;
                };
                {
                    let mut read = p.read_mut();
                    read.clear(&self.tail);
                    *read = state;
                }
                p.reset_write_to_committed();
                p.set_leader_epoch(Some(*epoch));
            }
        });
        if !gained.is_empty() || !lost.is_empty() {
            tracing::info!(
                generation = generation.number,
                gained = gained.len(),
                lost = lost.len(),
                "leadership changed"
            );
        }

        let (live, _) = parse_brokers(&self.keys, &brokers);
        let controller = controller
            .and_then(|kv| ControllerRecord::decode(&kv.value).ok())
            .map(|c| c.broker);
        let view = ClusterView {
            brokers: live,
            leaders,
            controller,
            loaded: true,
        };
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(view);
        // Wake long polls and waiters for assignments.
        self.write.wake_watchers();
        Ok(())
    }

    /// A newer process owns this broker id: lead nothing, commit nothing, ever.
    fn fence_forever(&self) {
        if self.write.fence_forever() {
            tracing::error!(
                broker = self.broker_id,
                "another process claimed this broker id; this one leads nothing from now on"
            );
        }
        for t in self.catalog.topics() {
            for p in &t.partitions {
                p.set_leader_epoch(None);
            }
        }
    }

    /// Waits until this broker's view has leaders for the first `partitions`
    /// partitions of `topic` (bounded).
    pub async fn wait_for_assignment(
        &self,
        topic: Uuid,
        partitions: i32,
        within: Duration,
    ) -> bool {
        self.request_sync();
        let mut commits = self.write.commits();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let assigned = self.view().leaders.get(&topic).map_or(0, |a| {
                a.leaders.iter().take_while(|l| l.broker >= 0).count()
            });
            if assigned >= usize::try_from(partitions).unwrap_or(0) {
                return true;
            }
            if tokio::time::timeout_at(deadline, commits.changed())
                .await
                .is_err()
            {
                return false;
            }
        }
    }
}
