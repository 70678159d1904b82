//! The data path of one Sluice broker, one file per stage:
//! [`produce`] (validate, assign offsets, append to the WAL buffer) →
//! [`flush`] (one WAL object per flush, one metadata commit, then acknowledge) →
//! [`fetch`] (in-memory tail, then objects through the offset index and the read
//! cache; lake files through [`lake`]) and offsets → [`compaction`] (leaders fold
//! write-ahead slices into per-partition segments and old data into Parquet) →
//! [`retention`] (log start offsets, deleting old manifests, objects and orphans).
//!
//! Beneath the stages, in layers that import only downwards: [`catalog`] (topics,
//! dynamic broker configs and producer ids: the state it owns and the keys it
//! writes), [`topics`] (topic records and configs, with the broker-level defaults
//! in [`broker_configs`]), [`partition`] (one partition's offset index, tail and
//! producer state), [`keyspace`] (every metadata key, the records stored under them,
//! and the [`keyspace::Fence`] guarded writes carry), the errors, and [`clock`].
//! The stages are `impl Engine` blocks over these; the controller's duties (janitor,
//! Iceberg publishing) are run by `sluice-control`.
//!
//! Invariants:
//! - An acknowledged produce is in an object *and* in a committed manifest.
//! - Offsets of a partition are assigned once, densely, in the order batches enter
//!   the WAL buffer; commits of one partition apply in offset order.
//! - Every manifest commit is conditional on this broker's epoch, so a deposed
//!   instance (another process bumped the epoch) can never commit again.
//! - Fetch never returns data at or past the high watermark, nor below the log start.
//! - No manifest commit lands for an object the janitor may have deleted: commits
//!   compare the janitor's `gc/horizon` revision.

pub mod catalog;
pub mod clock;
pub mod cluster;
pub mod compaction;
mod error;
pub mod fetch;
pub mod flush;
pub mod keyspace;
pub mod lake;
pub mod partition;
pub mod produce;
pub mod retention;
pub mod tables;
pub mod topics;
pub use topics::broker_configs;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use object_store::ObjectStore;
use sluice_meta::MetaStore;
use tokio::sync::Mutex as AsyncMutex;
use tokio::sync::{watch, Notify};
use uuid::Uuid;

use crate::catalog::Change;
pub use crate::catalog::{Catalog, Topic};
pub use crate::clock::Clock;
use crate::cluster::ClusterView;
pub use crate::error::{EngineError, Result};
use crate::flush::WalBuffer;
pub use crate::keyspace::Keys;
use crate::keyspace::{Fence, Fences};
use crate::partition::IndexEntry;
use crate::topics::broker_configs::BrokerDefaults;
pub use crate::topics::TopicRecord;

/// Tunables of the data path.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub broker_id: i32,
    pub cluster_id: String,
    /// Target size of one WAL object (`wal.flush.bytes`).
    pub flush_bytes: usize,
    /// Extra wait before a flush starts, trading latency for fewer PUTs.
    pub flush_linger: Duration,
    /// WAL objects being written at once.
    pub max_inflight_flushes: usize,
    /// Produce data buffered or in flight before producers wait.
    pub max_pending_bytes: usize,
    /// Committed bytes per partition kept in memory for tailing consumers.
    pub tail_bytes_per_partition: usize,
    /// Committed bytes kept in memory across all partitions.
    pub tail_bytes_total: usize,
    pub auto_create_topics: bool,
    pub default_partitions: i32,
    /// How long a producer's sequence state is kept after its last append (Kafka's
    /// `producer.id.expiration.ms`); checked on the retention tick.
    pub producer_id_expiration: Duration,
    /// The block cache in front of object reads.
    pub cache: sluice_cache::CacheConfig,
    /// How often retention runs (Kafka's `log.retention.check.interval.ms`); the
    /// controller's janitor deletes expired manifests and objects at the same interval.
    pub retention_check_interval: Duration,
    /// Age after which an object nothing references is deleted.
    pub orphan_grace: Duration,
    /// How often partition leaders look for runs to fold (segments, Parquet); the
    /// controller publishes Iceberg tables at the same interval.
    pub compaction_interval: Duration,
    /// The URI of the object store's root (`s3://bucket/prefix`), for the paths in
    /// Iceberg metadata; none: no Iceberg tables.
    pub object_root: Option<String>,
    /// Wall-clock time for timestamps, retention and expiry (tests pass a manual one).
    pub clock: Clock,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            broker_id: 0,
            cluster_id: "sluice".into(),
            flush_bytes: 4 << 20,
            flush_linger: Duration::ZERO,
            max_inflight_flushes: 4,
            max_pending_bytes: 64 << 20,
            tail_bytes_per_partition: 8 << 20,
            tail_bytes_total: 512 << 20,
            auto_create_topics: true,
            default_partitions: 1,
            producer_id_expiration: Duration::from_secs(86_400),
            cache: sluice_cache::CacheConfig::default(),
            retention_check_interval: Duration::from_secs(300),
            orphan_grace: Duration::from_secs(3600),
            compaction_interval: Duration::from_secs(60),
            object_root: None,
            clock: Clock::system(),
        }
    }
}

/// Counters of the commit path, rendered on `/metrics`.
#[derive(Debug, Default)]
pub struct EngineMetrics {
    /// Manifests committed.
    pub commits: std::sync::atomic::AtomicU64,
    /// Flushes that did not commit because the broker's generation moved (it lost
    /// partitions): refused by the store, or abandoned before trying.
    pub commits_fenced: std::sync::atomic::AtomicU64,
    /// Commit attempts whose outcome was unknown and were retried.
    pub commit_retries: std::sync::atomic::AtomicU64,
    /// Log start offsets moved (DeleteRecords and retention).
    pub log_start_moves: std::sync::atomic::AtomicU64,
    /// Manifests the janitor deleted (all their records below the log start).
    pub manifests_expired: std::sync::atomic::AtomicU64,
    /// Objects the janitor deleted: of expired manifests, and orphans.
    pub objects_expired: std::sync::atomic::AtomicU64,
    pub objects_orphaned: std::sync::atomic::AtomicU64,
    /// Folds committed: into segments, and into lake files.
    pub folds_segment: std::sync::atomic::AtomicU64,
    pub folds_lake: std::sync::atomic::AtomicU64,
    /// Log compaction passes (`cleanup.policy=compact`).
    pub cleanings: std::sync::atomic::AtomicU64,
    /// Manifests left after the janitor's last round (on the controller).
    pub manifests_live: std::sync::atomic::AtomicU64,
    /// Committed write-ahead objects: size, and time from flush start to commit.
    pub flush_bytes: sluice_metrics::Sizes,
    pub flush_seconds: sluice_metrics::Latency,
}

impl EngineMetrics {
    /// Prometheus text for these counters and the partitions this broker leads.
    pub fn render(&self, led_partitions: usize, generation: u64, out: &mut String) {
        use sluice_metrics::{counters, family, gauge};
        counters(
            out,
            "sluice_commits_total",
            "Write-ahead flushes by commit outcome.",
            "outcome",
            &[
                ("committed", &self.commits),
                ("fenced", &self.commits_fenced),
                ("retried", &self.commit_retries),
            ],
        );
        family(
            out,
            "sluice_flush_bytes",
            "histogram",
            "Size of each committed write-ahead object.",
        );
        self.flush_bytes.render(out, "sluice_flush_bytes", "");
        family(
            out,
            "sluice_flush_seconds",
            "histogram",
            "From a flush's start to its commit: object PUT plus manifest transaction.",
        );
        self.flush_seconds.render(out, "sluice_flush_seconds", "");
        counters(
            out,
            "sluice_log_start_moves_total",
            "Log start offsets moved by DeleteRecords and retention.",
            "",
            &[("", &self.log_start_moves)],
        );
        counters(
            out,
            "sluice_janitor_deleted_total",
            "Manifests and objects the janitor deleted.",
            "kind",
            &[
                ("manifest", &self.manifests_expired),
                ("expired_object", &self.objects_expired),
                ("orphaned_object", &self.objects_orphaned),
            ],
        );
        counters(
            out,
            "sluice_folds_total",
            "Compaction folds committed, by output format.",
            "format",
            &[
                ("segment", &self.folds_segment),
                ("parquet", &self.folds_lake),
            ],
        );
        counters(
            out,
            "sluice_log_cleanings_total",
            "Log compaction passes (cleanup.policy=compact).",
            "",
            &[("", &self.cleanings)],
        );
        gauge(
            out,
            "sluice_manifests_live",
            "Manifests left after the janitor's last round (controller only).",
            self.manifests_live
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        gauge(
            out,
            "sluice_partitions_led",
            "Partitions this broker leads.",
            led_partitions,
        );
        gauge(
            out,
            "sluice_broker_generation",
            "This broker's generation (bumped when partitions are taken from it).",
            generation,
        );
    }
}

/// How long topic creation waits for the controller to assign leaders.
const ASSIGNMENT_WAIT: Duration = Duration::from_secs(10);

/// A committed slice read back from a manifest, with its producer batches.
type RecoveredSlice = (IndexEntry, Vec<partition::ProducerBatch>);

/// The broker's data path.
pub struct Engine {
    pub(crate) cfg: EngineConfig,
    pub(crate) meta: Arc<dyn MetaStore>,
    pub(crate) store: Arc<dyn ObjectStore>,
    /// Object reads go through it (blocks in memory and on local disk).
    pub(crate) cache: sluice_cache::BlockCache,
    pub(crate) keys: Keys,
    /// This process's generation identity and the janitor's horizon: the fence of
    /// every guarded write.
    pub(crate) fences: Fences,
    /// Topics, broker configs and producer ids.
    pub(crate) catalog: Catalog,
    pub(crate) wal: std::sync::Mutex<WalBuffer>,
    pub(crate) flush_wake: Notify,
    pub(crate) space: Notify,
    /// Bumped after every commit; long-polling fetches wait on it.
    pub(crate) commits: watch::Sender<u64>,
    pub(crate) tail: Arc<partition::TailBudget>,
    /// Wakes the cluster follower.
    pub(crate) resync: Arc<Notify>,
    pub(crate) sync_lock: AsyncMutex<()>,
    /// Serialises log start offset changes.
    pub(crate) log_start_lock: AsyncMutex<()>,
    pub(crate) view: RwLock<Arc<ClusterView>>,
    /// Lake footers and re-encoded row groups recently read.
    pub(crate) lake: lake::LakeMemo,
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
        let tail = Arc::new(partition::TailBudget::new(
            cfg.tail_bytes_per_partition,
            cfg.tail_bytes_total,
        ));
        let owner = Uuid::new_v4();
        let broker_id = cfg.broker_id;
        let generation =
            cluster::claim_generation(meta.as_ref(), &keys.generation(cfg.broker_id), owner)
                .await?;
        let (commits, _) = watch::channel(0);
        let cache = sluice_cache::BlockCache::open(&cfg.cache, store.clone())
            .await
            .map_err(|e| EngineError::Storage(e.to_string()))?;
        let catalog = Catalog::new(
            meta.clone(),
            keys.clone(),
            tail.clone(),
            cfg.default_partitions,
        );
        let engine = Arc::new(Self {
            cfg,
            meta,
            store,
            cache,
            fences: Fences::new(&keys, broker_id, owner),
            keys,
            catalog,
            wal: std::sync::Mutex::new(WalBuffer {
                broker_generation: generation,
                ..Default::default()
            }),
            flush_wake: Notify::new(),
            space: Notify::new(),
            commits,
            tail,
            resync: Arc::new(Notify::new()),
            sync_lock: AsyncMutex::new(()),
            log_start_lock: AsyncMutex::new(()),
            view: RwLock::default(),
            lake: lake::LakeMemo::default(),
            metrics: EngineMetrics::default(),
        });
        engine.sync_cluster().await?;
        tracing::info!(
            broker = engine.cfg.broker_id,
            generation,
            topics = engine.catalog.len(),
            "opened the data path"
        );
        flush::start(engine.clone());
        engine.start_retention(engine.cfg.retention_check_interval);
        engine.start_compaction(engine.cfg.compaction_interval);
        engine.start_follower();
        Ok(engine)
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Wall-clock time as this broker keeps it.
    pub fn clock(&self) -> &Clock {
        &self.cfg.clock
    }

    /// The generation this broker's commits are currently made under.
    pub fn generation(&self) -> u64 {
        self.wal().broker_generation
    }

    /// A fence for work starting now: this broker's current generation and the
    /// janitor's horizon as last seen (see [`keyspace::Fence`]).
    pub fn fence(&self) -> Fence {
        self.fences.at(self.generation())
    }

    /// What the read cache did.
    pub fn cache_metrics(&self) -> &Arc<sluice_cache::CacheMetrics> {
        self.cache.metrics()
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
                partition::expire_producers(&mut p.read_mut().producers, now, ttl);
                partition::expire_producers(&mut p.write().producers, now, ttl);
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

/// Runs CPU-heavy work (Parquet encoding and decoding) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| EngineError::Storage(format!("blocking task panicked: {e}")))?
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
        self.commits.subscribe()
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
                let count = |f: &dyn Fn(&partition::IndexEntry) -> bool| {
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
                    segments: count(&|e| e.format == partition::Format::Batches && !e.in_wal()),
                    lake_files: count(&|e| e.format == partition::Format::Parquet),
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
        self.wal().closing = true;
    }

    /// Waits until everything appended so far is committed or has failed.
    pub async fn drain(&self) {
        loop {
            let progressed = self.space.notified();
            {
                let wal = self.wal.lock().unwrap_or_else(|p| p.into_inner());
                if wal.slices.is_empty() && wal.inflight_bytes == 0 {
                    return;
                }
            }
            self.flush_wake.notify_one();
            progressed.await;
        }
    }
}
