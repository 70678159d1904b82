//! [`Engine`]: the components of one broker's data path, composed, and the face the
//! Kafka API and the control loop use; it holds no state of its own beyond the
//! handles it composes and the log start lock its stages share.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use sluice_meta::MetaStore;
use tokio::sync::Mutex as AsyncMutex;
use tokio::sync::{watch, Notify};
use uuid::Uuid;

use crate::catalog::{Catalog, Change, Topic};
use crate::clock::Clock;
use crate::cluster::{Cluster, ClusterDeps, ClusterView};
use crate::config::EngineConfig;
use crate::error::{EngineError, Result};
use crate::keyspace::{Fence, Fences, Keys};
use crate::metrics::EngineMetrics;
use crate::partition::Partition;
use crate::read::{FetchedRecords, OffsetAndTimestamp, ReadPath};
use crate::recovery::Recovery;
use crate::topics::broker_configs::BrokerDefaults;
use crate::topics::TopicRecord;
use crate::write::{WriteDeps, WritePath};

/// How long topic creation waits for the controller to assign leaders.
const ASSIGNMENT_WAIT: Duration = Duration::from_secs(10);

/// The broker's data path.
pub struct Engine {
    pub(crate) cfg: EngineConfig,
    pub(crate) meta: Arc<dyn MetaStore>,
    pub(crate) store: Arc<dyn ObjectStore>,
    /// Fetches and offset lookups, through the block cache.
    pub(crate) reads: ReadPath,
    pub(crate) keys: Keys,
    /// This process's generation identity and the janitor's horizon: the fence of
    /// every guarded write.
    pub(crate) fences: Arc<Fences>,
    /// Topics, broker configs and producer ids.
    pub(crate) catalog: Arc<Catalog>,
    /// The WAL buffer, the flusher and the committer.
    pub(crate) write: Arc<WritePath>,
    pub(crate) tail: Arc<crate::partition::TailBudget>,
    /// Partition state read back from the metadata store.
    pub(crate) recovery: Recovery,
    /// The cluster follower: the view, leadership, the generation.
    pub(crate) cluster: Arc<Cluster>,
    /// Serialises log start offset changes.
    pub(crate) log_start_lock: AsyncMutex<()>,
    pub metrics: EngineMetrics,
}

impl Engine {
    /// Opens the data path: claims a new generation for this broker id (fencing any
    /// older process with it), loads topics, takes over the partitions assigned to
    /// this broker (rebuilding them from the manifests), and starts the flusher and
    /// the cluster follower.
    pub async fn open(
        cfg: EngineConfig,
        meta: Arc<dyn MetaStore>,
        store: Arc<dyn ObjectStore>,
    ) -> Result<Arc<Self>> {
        let keys = Keys::new(&cfg.cluster_id);
        let tail = Arc::new(crate::partition::TailBudget::new(
            cfg.tail_bytes_per_partition,
            cfg.tail_bytes_total,
        ));
        let owner = Uuid::new_v4();
        let broker_id = cfg.broker_id;
        let generation =
            crate::cluster::claim_generation(meta.as_ref(), &keys.generation(cfg.broker_id), owner)
                .await?;
        let cache = sluice_cache::BlockCache::open(&cfg.cache, store.clone())
            .await
            .map_err(|e| EngineError::Storage(e.to_string()))?;
        let catalog = Arc::new(Catalog::new(
            meta.clone(),
            keys.clone(),
            tail.clone(),
            cfg.default_partitions,
        ));
        let fences = Arc::new(Fences::new(&keys, broker_id, owner));
        let resync = Arc::new(Notify::new());
        let write = WritePath::new(
            &cfg,
            generation,
            WriteDeps {
                store: store.clone(),
                meta: meta.clone(),
                keys: keys.clone(),
                fences: fences.clone(),
                catalog: catalog.clone(),
                tail: tail.clone(),
                resync: resync.clone(),
            },
        );
        let recovery = Recovery::new(meta.clone(), keys.clone(), tail.clone());
        let cluster = Cluster::new(
            broker_id,
            ClusterDeps {
                meta: meta.clone(),
                keys: keys.clone(),
                fences: fences.clone(),
                catalog: catalog.clone(),
                write: write.clone(),
                recovery: recovery.clone(),
                tail: tail.clone(),
                resync,
            },
        );
        let engine = Arc::new(Self {
            cfg,
            meta,
            reads: ReadPath::new(store.clone(), cache),
            store,
            fences,
            keys,
            catalog,
            write,
            tail,
            recovery,
            cluster,
            log_start_lock: AsyncMutex::new(()),
            metrics: EngineMetrics::default(),
        });
        engine.sync_cluster().await?;
        tracing::info!(
            broker = engine.cfg.broker_id,
            generation,
            topics = engine.catalog.len(),
            "opened the data path"
        );
        engine.write.start();
        engine.start_retention(engine.cfg.retention_check_interval);
        engine.start_compaction(engine.cfg.compaction_interval);
        engine.cluster.start_follower();
        Ok(engine)
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Wall-clock time as this broker keeps it.
    pub fn clock(&self) -> &Clock {
        &self.cfg.clock
    }

    /// Brings leadership, topics and the cluster view up to date with the metadata
    /// store (see [`crate::cluster`]).
    pub async fn sync_cluster(&self) -> Result<()> {
        self.cluster.sync().await
    }

    /// Asks the follower to sync soon.
    pub fn request_sync(&self) {
        self.cluster.request_sync();
    }

    /// The cluster as last synced.
    pub fn view(&self) -> Arc<ClusterView> {
        self.cluster.view()
    }

    /// Whether a newer process owns this broker id: this one must not register as
    /// the broker again.
    pub fn is_fenced(&self) -> bool {
        self.write.is_fenced()
    }

    /// Waits until this broker's view has leaders for the first `partitions`
    /// partitions of `topic` (bounded).
    pub async fn wait_for_assignment(
        &self,
        topic: Uuid,
        partitions: i32,
        within: Duration,
    ) -> bool {
        self.cluster
            .wait_for_assignment(topic, partitions, within)
            .await
    }

    /// This process's identity in the generation key.
    pub fn owner(&self) -> Uuid {
        self.fences.owner()
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The generation this broker's commits are currently made under.
    pub fn generation(&self) -> u64 {
        self.write.generation()
    }

    /// A fence for work starting now: this broker's current generation and the
    /// janitor's horizon as last seen (see [`crate::keyspace::Fence`]).
    pub fn fence(&self) -> Fence {
        self.fences.at(self.generation())
    }

    /// Prometheus text for the write path's counters, the rest of the engine's, and
    /// the partitions this broker leads.
    pub fn render_metrics(&self, out: &mut String) {
        self.write.metrics().render(out);
        self.metrics
            .render(self.led_partitions(), self.generation(), out);
    }

    /// What the read cache did.
    pub fn cache_metrics(&self) -> &Arc<sluice_cache::CacheMetrics> {
        self.reads.cache_metrics()
    }

    /// Reads whole batches from `offset`, up to about `max_bytes` (see
    /// [`ReadPath::read_up_to`]).
    pub async fn read(
        &self,
        partition: &Partition,
        offset: i64,
        max_bytes: usize,
    ) -> Result<FetchedRecords> {
        self.reads
            .read_up_to(partition, offset, max_bytes, true, false)
            .await
    }

    /// Reads whole batches from `offset` within `max_bytes`, below the last stable
    /// offset if `committed` (see [`ReadPath::read_up_to`]).
    pub async fn read_up_to(
        &self,
        partition: &Partition,
        offset: i64,
        max_bytes: usize,
        at_least_one: bool,
        committed: bool,
    ) -> Result<FetchedRecords> {
        self.reads
            .read_up_to(partition, offset, max_bytes, at_least_one, committed)
            .await
    }

    /// Kafka's ListOffsets for one partition (`read_uncommitted`).
    pub async fn list_offset(
        &self,
        partition: &Partition,
        timestamp: i64,
    ) -> Result<Option<OffsetAndTimestamp>> {
        self.reads.list_offset(partition, timestamp, false).await
    }

    /// Kafka's ListOffsets for one partition at an isolation level: at
    /// `read_committed` the latest offset is the last stable one.
    pub async fn list_offset_isolated(
        &self,
        partition: &Partition,
        timestamp: i64,
        committed: bool,
    ) -> Result<Option<OffsetAndTimestamp>> {
        self.reads
            .list_offset(partition, timestamp, committed)
            .await
    }

    pub fn meta(&self) -> &Arc<dyn MetaStore> {
        &self.meta
    }

    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Drops the sequence state of producers idle past the expiration, on every
    /// partition this broker leads (committed and assigned state alike).
    pub fn expire_producers(&self) {
        let now = self.cfg.clock.now_ms();
        let ttl = i64::try_from(self.cfg.producer_id_expiration.as_millis()).unwrap_or(i64::MAX);
        for topic in self.topics() {
            for p in topic
                .partitions
                .iter()
                .filter(|p| p.leader_epoch().is_some())
            {
                crate::partition::expire_producers(&mut p.read_mut().producers, now, ttl);
                crate::partition::expire_producers(&mut p.write().producers, now, ttl);
            }
        }
    }

    /// Bytes of record batches held in memory across the tails of every partition.
    pub fn tail_bytes(&self) -> usize {
        self.tail.used()
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.catalog.topic(name)
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.catalog.topic_by_id(id)
    }

    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.catalog.topics()
    }

    /// The catalog: topics, dynamic broker configs, producer ids.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Creates a topic (see [`Catalog`]) and waits (bounded) for its leaders.
    /// `validate_only` checks everything and writes nothing.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<Topic>> {
        let change = self
            .catalog
            .create(name, partitions, replication_factor, configs, validate_only)
            .await?;
        Ok(self.apply(change).await)
    }

    async fn apply(&self, change: Change) -> Arc<Topic> {
        match change {
            Change::Validated(topic) => topic,
            Change::Stored(record) => self.install_with_leaders(record).await,
        }
    }

    /// Installs a stored topic record and waits (bounded) until every partition has
    /// a leader, as Kafka answers CreateTopics and CreatePartitions, so clients can
    /// produce at once.
    async fn install_with_leaders(&self, record: TopicRecord) -> Arc<Topic> {
        let (id, partitions) = (record.id, record.partitions);
        let topic = self.catalog.install(record);
        if !self
            .wait_for_assignment(id, partitions, ASSIGNMENT_WAIT)
            .await
        {
            tracing::warn!(
                topic = %topic.record.name,
                "no leaders assigned yet; is a controller running?"
            );
        }
        topic
    }

    /// The topic, created with defaults when auto-creation is on.
    pub async fn topic_or_auto_create(&self, name: &str) -> Result<Arc<Topic>> {
        if let Some(t) = self.topic(name) {
            return Ok(t);
        }
        if !self.cfg.auto_create_topics {
            return Err(EngineError::unknown_topic(name));
        }
        match self
            .create_topic(name, -1, -1, BTreeMap::new(), false)
            .await
        {
            Err(EngineError::TopicAlreadyExists { .. }) => self
                .topic(name)
                .ok_or_else(|| EngineError::unknown_topic(name)),
            other => other,
        }
    }

    /// Deletes a topic. Its objects stay until garbage collection removes them.
    pub async fn delete_topic(&self, name: &str) -> Result<Uuid> {
        self.catalog.delete(name).await
    }

    /// Rewrites a topic record with a guarded read-modify-write.
    pub async fn update_topic(
        &self,
        name: &str,
        validate_only: bool,
        change: impl Fn(&mut TopicRecord) -> Result<()>,
    ) -> Result<Arc<Topic>> {
        let change = self.catalog.update(name, validate_only, change).await?;
        Ok(self.apply(change).await)
    }

    /// The dynamic broker configs in effect on this broker, as last synced.
    pub fn broker_defaults(&self) -> Arc<BrokerDefaults> {
        self.catalog.broker_defaults()
    }

    /// The dynamic broker configs stored for one broker (`Some(id)`: its own and the
    /// cluster-wide ones) or for the cluster (`None`: the cluster-wide ones only).
    pub async fn stored_broker_defaults(&self, broker: Option<i32>) -> Result<BrokerDefaults> {
        self.catalog.stored_broker_defaults(broker).await
    }

    /// Rewrites the dynamic configs of one broker (`Some(id)`) or the cluster-wide
    /// default (`None`), then syncs so this broker's topics take them at once (the
    /// others follow the key). `change` returns Kafka's message for a refused update.
    pub async fn update_broker_configs(
        &self,
        broker: Option<i32>,
        validate_only: bool,
        change: impl Fn(&mut BTreeMap<String, String>) -> std::result::Result<(), String>,
    ) -> Result<std::result::Result<(), String>> {
        match self
            .catalog
            .update_broker_configs(broker, validate_only, change)
            .await?
        {
            Ok(true) => {
                self.sync_cluster().await?;
                Ok(Ok(()))
            }
            Ok(false) => Ok(Ok(())),
            Err(refused) => Ok(Err(refused)),
        }
    }

    /// A new producer id for an idempotent producer (epoch 0).
    pub async fn allocate_producer_id(&self) -> Result<i64> {
        self.catalog.allocate_producer_id().await
    }
}

impl Engine {
    /// Runs `step` every `interval` (the first time after one interval) until the
    /// engine is dropped; `state` carries from one run to the next.
    pub(crate) fn every<S: Send + 'static>(
        self: &Arc<Self>,
        interval: Duration,
        mut state: S,
        step: impl for<'a> Fn(&'a Engine, &'a mut S) -> futures::future::BoxFuture<'a, ()>
            + Send
            + 'static,
    ) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(engine) = weak.upgrade() else {
                    return;
                };
                step(&engine, &mut state).await;
            }
        });
    }

    /// A receiver that changes after every commit (for long polling).
    pub fn commits(&self) -> watch::Receiver<u64> {
        self.write.commits()
    }
}

/// One led partition as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PartitionStats {
    pub topic: String,
    pub topic_id: Uuid,
    pub partition: i32,
    pub leader_epoch: i32,
    pub log_start_offset: i64,
    pub high_watermark: i64,
    /// Bytes of stored batches and lake files from the log start on.
    pub size_bytes: u64,
    /// Where those bytes are: write-ahead slices, segments, Parquet lake files.
    pub wal_entries: usize,
    pub segments: usize,
    pub lake_files: usize,
}

impl Engine {
    /// The partitions this broker leads, with their offsets and sizes.
    pub fn partition_stats(&self) -> Vec<PartitionStats> {
        let mut out = Vec::new();
        for topic in self.topics() {
            for p in &topic.partitions {
                let Some(leader_epoch) = p.leader_epoch() else {
                    continue;
                };
                let read = p.read();
                let count = |f: &dyn Fn(&crate::partition::IndexEntry) -> bool| {
                    read.index.iter().filter(|e| f(e)).count()
                };
                out.push(PartitionStats {
                    topic: topic.record.name.clone(),
                    topic_id: topic.record.id,
                    partition: p.index,
                    leader_epoch,
                    log_start_offset: read.log_start_offset,
                    high_watermark: read.high_watermark,
                    size_bytes: read.index.iter().map(|e| e.len).sum(),
                    wal_entries: count(&|e| e.in_wal()),
                    segments: count(&|e| {
                        e.format == crate::partition::Format::Batches && !e.in_wal()
                    }),
                    lake_files: count(&|e| e.format == crate::partition::Format::Parquet),
                });
            }
        }
        out
    }

    /// Partitions this broker currently leads.
    pub fn led_partitions(&self) -> usize {
        self.topics()
            .iter()
            .flat_map(|t| t.partitions.iter())
            .filter(|p| p.leader_epoch().is_some())
            .count()
    }

    /// Refuses new appends (retriably) from now on; used before a graceful handoff.
    pub fn stop_producing(&self) {
        self.write.close();
    }

    /// Waits until everything appended so far is committed or has failed.
    pub async fn drain(&self) {
        self.write.drain().await
    }
}
