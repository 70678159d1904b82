//! The catalog: the topics this broker knows (by name and by id) with the state of
//! their partitions, the dynamic broker configs every topic record carries, and
//! blocks of producer ids. It owns that state and writes only its own keys:
//! `topics/<name>` (with the topic's `assignment/<topic-id>` when it is deleted),
//! `configs/brokers/…` and `producer_ids/next`.
//!
//! Invariants:
//! - Every write is a guarded read-modify-write: creation compares the key missing,
//!   updates and deletes compare the revision read, so two brokers changing one
//!   topic at once cannot both win.
//! - A sync never undoes a local change it did not see: a topic this broker created
//!   or deleted after the sync began reading stays as this broker left it (see
//!   `Catalog::mark`).
//! - A topic record installed again with the same id keeps its partitions' state
//!   (offsets, tails, producers): only a new id (deleted and created again) starts
//!   afresh.
//! - Producer ids come from blocks taken with a compared increment, so no id is
//!   handed out twice in the cluster.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use sluice_meta::{Compare, KeyValue, MetaStore, Op, Txn};
use uuid::Uuid;

use crate::error::{EngineError, Result};
use crate::keyspace::{BrokerConfigRecord, Keys, Stored};
use crate::partition::{Partition, TailBudget};
use crate::topics::broker_configs::{self, BrokerDefaults};
use crate::topics::{self, TopicRecord};

/// Producer ids taken from the store at once.
const PRODUCER_ID_BLOCK: i64 = 1000;

/// A topic and the partitions this broker leads.
#[derive(Debug)]
pub struct Topic {
    pub record: TopicRecord,
    pub partitions: Vec<Arc<Partition>>,
}

impl Topic {
    pub fn partition(&self, index: i32) -> Option<&Arc<Partition>> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.partitions.get(i))
    }
}

#[derive(Default)]
struct Known {
    by_name: BTreeMap<String, Arc<Topic>>,
    by_id: HashMap<Uuid, String>,
    /// The dynamic broker configs every installed record carries.
    defaults: Arc<BrokerDefaults>,
    /// Local installs and deletes so far.
    changes: u64,
    /// The change number of the last local install or delete of each topic name,
    /// while a sync begun before it may still finish.
    touched: HashMap<String, u64>,
}

impl Known {
    fn touch(&mut self, name: &str) {
        self.changes += 1;
        self.touched.insert(name.to_string(), self.changes);
    }
}

/// Topics, broker configs and producer ids (see the module docs).
pub struct Catalog {
    meta: Arc<dyn MetaStore>,
    keys: Keys,
    /// The memory budget every partition's tail draws on.
    tail: Arc<TailBudget>,
    /// Partitions of a topic created with `-1`.
    default_partitions: i32,
    known: RwLock<Known>,
    /// The current block: next id, end (exclusive).
    producer_ids: tokio::sync::Mutex<(i64, i64)>,
}

impl Catalog {
    pub(crate) fn new(
        meta: Arc<dyn MetaStore>,
        keys: Keys,
        tail: Arc<TailBudget>,
        default_partitions: i32,
    ) -> Self {
        Self {
            meta,
            keys,
            tail,
            default_partitions,
            known: RwLock::default(),
            producer_ids: tokio::sync::Mutex::new((0, 0)),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Known> {
        self.known.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Known> {
        self.known.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.read().by_name.get(name).cloned()
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        let known = self.read();
        known
            .by_id
            .get(&id)
            .and_then(|n| known.by_name.get(n))
            .cloned()
    }

    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.read().by_name.values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.read().by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The dynamic broker configs in effect on this broker, as last synced.
    pub fn broker_defaults(&self) -> Arc<BrokerDefaults> {
        self.read().defaults.clone()
    }

    /// Where local changes are: a sync takes this before it reads the stored topics
    /// and passes it to [`reconcile`](Self::reconcile).
    pub(crate) fn mark(&self) -> u64 {
        self.read().changes
    }

    /// Makes the catalog match the stored topic records and dynamic broker configs,
    /// as read after `mark`: new topics appear, changed ones keep their partitions'
    /// state, deleted ones go; a topic changed here since `mark` stays as it is.
    pub(crate) fn reconcile(&self, records: Vec<TopicRecord>, defaults: BrokerDefaults, mark: u64) {
        let mut known = self.write();
        let defaults = if *known.defaults == defaults {
            known.defaults.clone()
        } else {
            tracing::info!(cluster = ?defaults.cluster, broker = ?defaults.broker,
                "dynamic broker configs changed");
            Arc::new(defaults)
        };
        let newer = |name: &str| known.touched.get(name).is_some_and(|at| *at > mark);
        let mut next = Known {
            defaults: defaults.clone(),
            changes: known.changes,
            touched: known
                .touched
                .iter()
                .filter(|(_, at)| **at > mark)
                .map(|(name, at)| (name.clone(), *at))
                .collect(),
            ..Known::default()
        };
        for name in next.touched.keys() {
            if let Some(t) = known.by_name.get(name) {
                next.by_id.insert(t.record.id, name.clone());
                next.by_name.insert(name.clone(), t.clone());
            }
        }
        for mut record in records {
            if newer(&record.name) {
                continue;
            }
            record.defaults = defaults.clone();
            let existing = partitions_of(&known, &record);
            next.by_id.insert(record.id, record.name.clone());
            let topic = match known.by_name.get(&record.name) {
                Some(t) if t.record == record => t.clone(),
                _ => Arc::new(self.new_topic(record, &existing)),
            };
            next.by_name.insert(topic.record.name.clone(), topic);
        }
        *known = next;
    }

    /// Installs a record as stored (with this broker's defaults).
    pub(crate) fn install(&self, mut record: TopicRecord) -> Arc<Topic> {
        let mut known = self.write();
        record.defaults = known.defaults.clone();
        let existing = partitions_of(&known, &record);
        let topic = Arc::new(self.new_topic(record, &existing));
        known
            .by_id
            .insert(topic.record.id, topic.record.name.clone());
        known
            .by_name
            .insert(topic.record.name.clone(), topic.clone());
        known.touch(&topic.record.name);
        topic
    }

    fn new_topic(&self, record: TopicRecord, existing: &[Arc<Partition>]) -> Topic {
        let partitions = (0..record.partitions)
            .map(|i| {
                existing.get(i as usize).cloned().unwrap_or_else(|| {
                    Arc::new(Partition::new(
                        record.id,
                        record.name.clone(),
                        i,
                        self.tail.clone(),
                    ))
                })
            })
            .collect();
        Topic { record, partitions }
    }

    /// Stores a new topic record, or with `validate_only` checks everything and
    /// stores nothing. Answers the record to install, or the topic a validation
    /// would have created.
    pub(crate) async fn create(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Change> {
        topics::validate_topic_name(name)?;
        let partitions = if partitions == -1 {
            self.default_partitions
        } else {
            partitions
        };
        if !(1..=100_000).contains(&partitions) {
            return Err(EngineError::InvalidPartitions {
                reason: format!("partition count {partitions} must be between 1 and 100000"),
            });
        }
        if replication_factor == 0 || replication_factor < -1 {
            return Err(EngineError::InvalidReplicationFactor {
                reason: format!("replication factor {replication_factor} must be -1 or positive"),
            });
        }
        for (k, v) in &configs {
            topics::validate_config(k, v)?;
        }
        let record = TopicRecord {
            id: Uuid::new_v4(),
            name: name.to_string(),
            partitions,
            configs,
            pinned: BTreeMap::new(),
            defaults: self.broker_defaults(),
        };
        if self.topic(name).is_some() {
            return Err(EngineError::TopicAlreadyExists { name: name.into() });
        }
        if validate_only {
            return Ok(Change::Validated(Arc::new(self.new_topic(record, &[]))));
        }
        let key = self.keys.topic(name);
        let txn = Txn::when(vec![Compare::Missing(key.clone())])
            .then(vec![Op::put(key, record.encode())]);
        if !self.meta.txn(txn).await?.succeeded {
            return Err(EngineError::TopicAlreadyExists { name: name.into() });
        }
        tracing::info!(topic = name, partitions, "created topic");
        Ok(Change::Stored(record))
    }

    /// A topic's metadata key and its stored value.
    async fn stored_topic(&self, name: &str) -> Result<(String, KeyValue)> {
        let key = self.keys.topic(name);
        let current = self
            .meta
            .get(&key)
            .await?
            .ok_or_else(|| EngineError::unknown_topic(name))?;
        Ok((key, current))
    }

    /// Deletes a topic and its assignment. Its objects stay until the janitor
    /// removes them.
    pub(crate) async fn delete(&self, name: &str) -> Result<Uuid> {
        let topic = self
            .topic(name)
            .ok_or_else(|| EngineError::unknown_topic(name))?;
        let (key, current) = self.stored_topic(name).await?;
        let txn = Txn::when(vec![Compare::ModRevision(
            key.clone(),
            current.mod_revision,
        )])
        .then(vec![
            Op::Delete(key),
            Op::Delete(self.keys.assignment(topic.record.id)),
        ]);
        if !self.meta.txn(txn).await?.succeeded {
            return Err(EngineError::Meta(format!(
                "topic {name} changed concurrently"
            )));
        }
        let mut known = self.write();
        known.by_name.remove(name);
        known.by_id.remove(&topic.record.id);
        known.touch(name);
        tracing::info!(topic = name, "deleted topic");
        Ok(topic.record.id)
    }

    /// Rewrites a topic record with a guarded read-modify-write (or, with
    /// `validate_only`, checks the change and writes nothing).
    pub(crate) async fn update(
        &self,
        name: &str,
        validate_only: bool,
        change: impl Fn(&mut TopicRecord) -> Result<()>,
    ) -> Result<Change> {
        let (key, current) = self.stored_topic(name).await?;
        let mut record = TopicRecord::from_kv(&current)?;
        record.defaults = self.broker_defaults();
        change(&mut record)?;
        for (k, v) in &record.configs {
            topics::validate_config(k, v)?;
        }
        if validate_only {
            return Ok(Change::Validated(Arc::new(self.new_topic(record, &[]))));
        }
        let txn = Txn::when(vec![Compare::ModRevision(
            key.clone(),
            current.mod_revision,
        )])
        .then(vec![Op::put(key, record.encode())]);
        if !self.meta.txn(txn).await?.succeeded {
            return Err(EngineError::Meta(format!(
                "topic {name} changed concurrently"
            )));
        }
        Ok(Change::Stored(record))
    }

    /// The dynamic broker configs stored for one broker (`Some(id)`: its own and the
    /// cluster-wide ones) or for the cluster (`None`: the cluster-wide ones only).
    pub async fn stored_broker_defaults(&self, broker: Option<i32>) -> Result<BrokerDefaults> {
        let read = |key: String| async move {
            match self.meta.get(&key).await? {
                Some(kv) => BrokerConfigRecord::from_kv(&kv).map(|r| r.configs),
                None => Ok(BTreeMap::new()),
            }
        };
        Ok(BrokerDefaults {
            cluster: read(self.keys.broker_config(None)).await?,
            broker: match broker {
                Some(id) => read(self.keys.broker_config(Some(id))).await?,
                None => BTreeMap::new(),
            },
        })
    }

    /// Rewrites the dynamic configs of one broker (`Some(id)`) or the cluster-wide
    /// default (`None`) with a guarded read-modify-write. `change` returns Kafka's
    /// message for a refused update; `Ok(true)`: stored.
    pub(crate) async fn update_broker_configs(
        &self,
        broker: Option<i32>,
        validate_only: bool,
        change: impl Fn(&mut BTreeMap<String, String>) -> std::result::Result<(), String>,
    ) -> Result<std::result::Result<bool, String>> {
        let key = self.keys.broker_config(broker);
        let current = self.meta.get(&key).await?;
        let mut record = match &current {
            Some(kv) => BrokerConfigRecord::from_kv(kv)?,
            None => BrokerConfigRecord::default(),
        };
        if let Err(refused) = change(&mut record.configs) {
            return Ok(Err(refused));
        }
        for (name, value) in &record.configs {
            if let Err(refused) = broker_configs::validate(name, Some(value)) {
                return Ok(Err(refused));
            }
        }
        if validate_only {
            return Ok(Ok(false));
        }
        let guard = match &current {
            Some(kv) => Compare::ModRevision(key.clone(), kv.mod_revision),
            None => Compare::Missing(key.clone()),
        };
        let op = if record.configs.is_empty() {
            Op::Delete(key)
        } else {
            Op::put(key, record.encode())
        };
        if !self
            .meta
            .txn(Txn::when(vec![guard]).then(vec![op]))
            .await?
            .succeeded
        {
            return Err(EngineError::Meta(
                "broker configs changed concurrently".into(),
            ));
        }
        Ok(Ok(true))
    }

    /// A new producer id for an idempotent producer (epoch 0).
    pub async fn allocate_producer_id(&self) -> Result<i64> {
        let mut block = self.producer_ids.lock().await;
        if block.0 >= block.1 {
            let start = advance_counter(
                self.meta.as_ref(),
                &self.keys.producer_ids(),
                PRODUCER_ID_BLOCK,
            )
            .await?;
            *block = (start, start + PRODUCER_ID_BLOCK);
        }
        let id = block.0;
        block.0 += 1;
        Ok(id)
    }
}

/// What a create or update did.
pub(crate) enum Change {
    /// Checked only (`validate_only`): the topic as it would be, installed nowhere.
    Validated(Arc<Topic>),
    /// Stored: the record to install.
    Stored(TopicRecord),
}

/// The partitions a record keeps when installed again: those of the same topic id.
fn partitions_of(known: &Known, record: &TopicRecord) -> Vec<Arc<Partition>> {
    known
        .by_name
        .get(&record.name)
        .filter(|t| t.record.id == record.id)
        .map(|t| t.partitions.clone())
        .unwrap_or_default()
}

/// Atomically adds `step` to the integer at `key` (0 when missing); returns the old value.
async fn advance_counter(meta: &dyn MetaStore, key: &str, step: i64) -> Result<i64> {
    loop {
        let current = meta.get(key).await?;
        let (value, rev) = match &current {
            Some(kv) => (i64::from_kv(kv)?, kv.mod_revision),
            None => (0, 0),
        };
        let txn = Txn::when(vec![Compare::ModRevision(key.to_string(), rev)])
            .then(vec![Op::put(key, (value + step).encode())]);
        if meta.txn(txn).await?.succeeded {
            return Ok(value);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a test: panicking is how it fails

    use sluice_meta::EmbeddedStore;

    use super::*;

    fn record(name: &str) -> TopicRecord {
        TopicRecord {
            id: Uuid::new_v4(),
            name: name.into(),
            partitions: 1,
            configs: BTreeMap::new(),
            pinned: BTreeMap::new(),
            defaults: Default::default(),
        }
    }

    /// A sync that read the topics before this broker created one must not undo the
    /// creation when it finishes: the topic would vanish (produce answers
    /// UNKNOWN_TOPIC, OffsetFetch drops its offsets) until the next sync.
    #[test]
    fn a_sync_older_than_a_local_create_keeps_the_topic() {
        let catalog = Catalog::new(
            Arc::new(EmbeddedStore::in_memory()),
            Keys::new("c"),
            Arc::new(TailBudget::new(1 << 20, 1 << 20)),
            1,
        );
        // The sync reads the topics (none yet), then this broker creates `t`.
        let mark = catalog.mark();
        let read: Vec<TopicRecord> = Vec::new();
        let t = catalog.install(record("t"));
        catalog.reconcile(read, BrokerDefaults::default(), mark);
        assert!(
            catalog.topic("t").is_some(),
            "the stale sync removed the new topic"
        );
        assert_eq!(catalog.topic("t").unwrap().record.id, t.record.id);
        // A sync begun after the create applies what it reads: still there, then
        // deleted elsewhere.
        let mark = catalog.mark();
        catalog.reconcile(vec![t.record.clone()], BrokerDefaults::default(), mark);
        assert_eq!(catalog.topic("t").unwrap().record.id, t.record.id);
        let mark = catalog.mark();
        catalog.reconcile(Vec::new(), BrokerDefaults::default(), mark);
        assert!(catalog.topic("t").is_none());
        assert!(catalog.topic_by_id(t.record.id).is_none());
    }
}
