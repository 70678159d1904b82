//! The engine's tunables.

use std::time::Duration;

use crate::clock::Clock;

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
