//! The janitor: deletes what no reader can need any more. One round (run by the
//! controller, see `sluice-control`) deletes the manifests that hold nothing at or
//! above any log start offset, the objects of those deleted the round before, and
//! objects nothing has referenced for the grace period.
//!
//! Invariants:
//! - A manifest is deleted only when every slice in it lies wholly below its
//!   partition's log start offset, or belongs to a deleted topic. Both only become
//!   more true with time, so any broker may delete such a manifest (the controller
//!   does, to avoid duplicated work) and deleting it twice is harmless.
//! - An object is deleted one janitor round after its manifest, so a fetch planned
//!   just before can still read it.
//! - An object no manifest or checkpoint references is deleted only once it has
//!   been seen unreferenced for the whole grace period (counted by the janitor from
//!   the round it first saw it so; a new janitor starts counting afresh) and is
//!   older than that. A file replaced by compaction, which the janitor saw
//!   referenced before, can never be referenced again and goes without more ado.
//! - Orphans never seen referenced (objects a crash left between their PUT and
//!   their commit) need more: before deleting any, the janitor bumps `gc/horizon`;
//!   every manifest commit compares the horizon's revision as its broker knew it
//!   before writing the object, so a commit still pending for an object the janitor
//!   might delete fails (retriably) instead of landing after the deletion.
//!   References are read again after the bump. Such orphans are rare, so the bump,
//!   which fails every broker's in-flight commits once, is too.

use std::collections::{HashMap, HashSet};

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use sluice_meta::{Compare, Op, Txn};
use sluice_storage::paths::{self, LAKE_PREFIX, SEGMENT_PREFIX, WAL_PREFIX};
use uuid::Uuid;

use crate::keyspace::{decode_offset, Checkpoint, Manifest, Stored};
use crate::{Engine, Result};

/// What the janitor carries from one round to the next.
#[derive(Debug, Default)]
pub struct Janitor {
    /// Objects of manifests deleted last round, to delete now.
    doomed: Vec<Path>,
    /// Objects referenced at the last round.
    referenced: HashSet<String>,
    /// Unreferenced objects: the round (ms) they were first seen so, and whether
    /// they had been seen referenced before.
    unreferenced: HashMap<String, (i64, bool)>,
}

impl Janitor {
    /// Objects to delete at the next round (those of manifests deleted this one).
    pub fn doomed(&self) -> &[Path] {
        &self.doomed
    }
}

impl Engine {
    /// One janitor round: deletes the manifests that hold nothing at or above any
    /// log start offset, the objects of those deleted in the round before, and
    /// objects unreferenced for the grace period.
    pub async fn collect_garbage(&self, janitor: &mut Janitor) -> Result<()> {
        for object in std::mem::take(&mut janitor.doomed) {
            match self.store.delete(&object).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                    self.metrics
                        .objects_expired
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) => tracing::warn!(%object, error = %e, "cannot delete an expired object"),
            }
        }
        // Per partition: below this offset, manifests' slices are no longer needed
        // (the log start, or what compaction folded). Both only grow, so reading
        // them before the manifests is safe.
        let mut folded: HashMap<(Uuid, i32), i64> = HashMap::new();
        // Per-partition keys, to delete with their topic.
        let mut partition_keys: Vec<(Uuid, String, i64)> = Vec::new();
        for kv in self.meta.range(&self.keys.log_starts()).await? {
            if let Some(partition) = self.keys.log_start_partition(&kv.key) {
                let at = folded.entry(partition).or_default();
                *at = (*at).max(decode_offset(&kv.value));
                partition_keys.push((partition.0, kv.key, kv.mod_revision));
            }
        }
        let mut referenced = HashSet::new();
        for kv in self.meta.range(&self.keys.checkpoints()).await? {
            let Some(partition) = self.keys.checkpoint_partition(&kv.key) else {
                continue;
            };
            // An unreadable checkpoint must not make its files look unreferenced.
            let c = Checkpoint::from_kv(&kv)?;
            let at = folded.entry(partition).or_default();
            *at = (*at).max(c.folded_to);
            referenced.extend(c.files.into_iter().map(|f| f.object));
            partition_keys.push((partition.0, kv.key, kv.mod_revision));
        }
        let mut expired: Vec<(String, i64, Path)> = Vec::new();
        let manifests = self.meta.range(&self.keys.manifests()).await?;
        let manifest_count = manifests.len();
        // Topics are read from the store after the manifests, never from this
        // broker's catalog (which may not have caught up with a new topic yet): a
        // manifest's topic was created before the manifest, so it is in this read
        // unless it has been deleted.
        let mut live: HashSet<Uuid> = HashSet::new();
        for kv in self.meta.range(&self.keys.topics()).await? {
            // An unreadable topic record must not make its data look deleted.
            let t = crate::TopicRecord::from_kv(&kv)?;
            live.insert(t.id);
        }
        for kv in manifests {
            let Ok(m) = Manifest::decode(&kv.value) else {
                continue;
            };
            referenced.insert(m.object.clone());
            let gone = m.slices.iter().map(|s| &s.slice).all(|s| {
                !live.contains(&s.topic_id)
                    || s.last_offset < folded.get(&(s.topic_id, s.partition)).copied().unwrap_or(0)
            });
            if gone {
                expired.push((kv.key, kv.mod_revision, Path::from(m.object.as_str())));
            }
        }
        // A deleted topic's log start and checkpoint keys go too (its files then
        // become orphans).
        expired.extend(
            partition_keys
                .into_iter()
                .filter(|(topic, _, _)| !live.contains(topic))
                .map(|(_, key, rev)| (key, rev, Path::default())),
        );
        let mut next = Vec::with_capacity(expired.len());
        for chunk in expired.chunks(sluice_meta::MAX_TXN_OPS / 2) {
            let compares = chunk
                .iter()
                .map(|(k, rev, _)| Compare::ModRevision(k.clone(), *rev))
                .collect();
            let ops = chunk
                .iter()
                .map(|(k, _, _)| Op::Delete(k.clone()))
                .collect();
            if self
                .meta
                .txn(Txn::when(compares).then(ops))
                .await?
                .succeeded
            {
                next.extend(
                    chunk
                        .iter()
                        .filter(|(_, _, o)| !o.as_ref().is_empty())
                        .map(|(_, _, o)| o.clone()),
                );
            }
        }
        self.metrics.manifests_live.store(
            manifest_count.saturating_sub(next.len()) as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        if !next.is_empty() {
            tracing::info!(manifests = next.len(), "deleted expired manifests");
            self.metrics
                .manifests_expired
                .fetch_add(next.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        janitor.doomed = next;
        self.collect_orphans(referenced, janitor).await?;
        Ok(())
    }

    /// Deletes objects (write-ahead, segments, lake files) that no manifest or
    /// checkpoint references (`referenced`, read before the listing) and that have
    /// been unreferenced, and existed, for the grace period. Returns how many went.
    async fn collect_orphans(
        &self,
        referenced: HashSet<String>,
        janitor: &mut Janitor,
    ) -> Result<usize> {
        let grace_ms = i64::try_from(self.cfg.orphan_grace.as_millis()).unwrap_or(i64::MAX);
        let now = self.cfg.clock.now_ms();
        let mut listed: Vec<object_store::ObjectMeta> = Vec::new();
        for prefix in [WAL_PREFIX, SEGMENT_PREFIX, LAKE_PREFIX] {
            let objects: Vec<object_store::ObjectMeta> = self
                .store
                .list(Some(&Path::from(prefix)))
                .try_collect()
                .await?;
            // Under lake/, only data files: table metadata is the tables' own.
            listed.extend(
                objects
                    .into_iter()
                    .filter(|o| prefix != LAKE_PREFIX || paths::is_lake_data(o.location.as_ref())),
            );
        }
        // Unreferenced since when, and whether seen referenced before.
        let previous = std::mem::replace(&mut janitor.referenced, referenced);
        let mut unreferenced = HashMap::new();
        for o in &listed {
            let name = o.location.as_ref();
            if janitor.referenced.contains(name) {
                continue;
            }
            let seen = janitor
                .unreferenced
                .get(name)
                .copied()
                .unwrap_or((now, previous.contains(name)));
            unreferenced.insert(name.to_string(), seen);
        }
        janitor.unreferenced = unreferenced;
        let due = |o: &&object_store::ObjectMeta, retired: bool| {
            janitor
                .unreferenced
                .get(o.location.as_ref())
                .is_some_and(|(since, was)| {
                    *was == retired
                        && now.saturating_sub(*since) >= grace_ms
                        && o.last_modified.timestamp_millis() <= now.saturating_sub(grace_ms)
                })
        };
        // Files that were referenced, then replaced: nothing can reference them again.
        let mut doomed: Vec<Path> = listed
            .iter()
            .filter(|o| due(o, true))
            .map(|o| o.location.clone())
            .collect();
        let orphans: Vec<&object_store::ObjectMeta> =
            listed.iter().filter(|o| due(o, false)).collect();
        if !orphans.is_empty() {
            // Fence pending commits of objects written before now, then look again:
            // whatever committed before the bump is referenced now.
            let key = self.keys.gc_horizon();
            let current = self.meta.get(&key).await?.map_or(0, |kv| kv.mod_revision);
            let bump = Txn::when(vec![Compare::ModRevision(key.clone(), current)])
                .then(vec![Op::put(key, self.cfg.clock.now_ms().encode())]);
            if self.meta.txn(bump).await?.succeeded {
                self.fences.refresh_gc_horizon(self.meta.as_ref()).await?;
                let mut referenced = HashSet::new();
                for kv in self.meta.range(&self.keys.manifests()).await? {
                    if let Ok(m) = Manifest::decode(&kv.value) {
                        referenced.insert(m.object);
                    }
                }
                for kv in self.meta.range(&self.keys.checkpoints()).await? {
                    let c = Checkpoint::from_kv(&kv)?;
                    referenced.extend(c.files.into_iter().map(|f| f.object));
                }
                doomed.extend(
                    orphans
                        .iter()
                        .filter(|o| !referenced.contains(o.location.as_ref()))
                        .map(|o| o.location.clone()),
                );
            }
            // Else another janitor is at it.
        }
        for object in &doomed {
            match self.store.delete(object).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                    tracing::info!(%object, "deleted an unreferenced object");
                    janitor.unreferenced.remove(object.as_ref());
                    self.metrics
                        .objects_orphaned
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) => tracing::warn!(%object, error = %e, "cannot delete an orphan"),
            }
        }
        Ok(doomed.len())
    }
}
