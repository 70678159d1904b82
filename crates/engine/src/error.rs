//! The data path's errors: one enum every stage returns, cloneable because one
//! flush failure fails many produces. `sluice-broker`'s `errors.rs` turns them into
//! Kafka error codes, the admin API into HTTP statuses.

use sluice_meta::MetaError;

/// Errors of the data path. Cloneable: one flush failure fails many produces.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("unknown topic or partition: topic={topic} partition={partition}")]
    UnknownTopicOrPartition { topic: String, partition: i32 },
    #[error("topic already exists: topic={name}")]
    TopicAlreadyExists { name: String },
    #[error("invalid topic: topic={name:?}: {reason}")]
    InvalidTopic { name: String, reason: String },
    #[error("invalid partitions: {reason}")]
    InvalidPartitions { reason: String },
    #[error("invalid replication factor: {reason}")]
    InvalidReplicationFactor { reason: String },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("invalid config: name={name}: {reason}")]
    InvalidConfig { name: String, reason: String },
    #[error("record batch too large: size={size} max.message.bytes={max}")]
    MessageTooLarge { size: usize, max: i64 },
    #[error("records decompress to more than {limit} bytes (max.message.bytes x {factor})", factor = sluice_protocol::records::EXPANSION_FACTOR)]
    DecompressedTooLarge { limit: usize },
    #[error("corrupt record batch: {0}")]
    CorruptMessage(String),
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    /// Some records of a batch are invalid (by their index in the batch); the batch
    /// is refused whole, and the client learns which (KIP-467).
    #[error("invalid records: {reason} (records {records:?} of the batch)")]
    InvalidRecords { reason: String, records: Vec<i32> },
    #[error("invalid timestamp: {0}")]
    InvalidTimestamp(String),
    #[error("offset out of range: offset={offset} log_start={log_start} high_watermark={high_watermark}")]
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        high_watermark: i64,
    },
    #[error("out of order sequence: producer_id={producer_id}")]
    OutOfOrderSequence { producer_id: i64 },
    #[error("producer fenced by a newer epoch: producer_id={producer_id}")]
    InvalidProducerEpoch { producer_id: i64 },
    #[error("invalid transaction state: {0}")]
    InvalidTxnState(String),
    #[error("no longer leader: broker generation {epoch} was superseded")]
    NotLeader { epoch: u64 },
    #[error("not the leader: topic={topic} partition={partition}")]
    NotLeaderForPartition { topic: String, partition: i32 },
    #[error("timed out waiting for the flush")]
    TimedOut,
    #[error("flush failed: {0}")]
    FlushFailed(String),
    #[error("metadata store: {0}")]
    Meta(String),
    #[error("object store: {0}")]
    Storage(String),
    #[error("broker is shutting down")]
    ShuttingDown,
}

impl EngineError {
    /// The topic does not exist (partition -1 in messages).
    pub fn unknown_topic(topic: &str) -> Self {
        Self::unknown_partition(topic, -1)
    }

    /// The topic or this partition of it does not exist.
    pub fn unknown_partition(topic: &str, partition: i32) -> Self {
        EngineError::UnknownTopicOrPartition {
            topic: topic.to_string(),
            partition,
        }
    }
}

impl From<MetaError> for EngineError {
    fn from(e: MetaError) -> Self {
        EngineError::Meta(e.to_string())
    }
}

impl From<object_store::Error> for EngineError {
    fn from(e: object_store::Error) -> Self {
        EngineError::Storage(e.to_string())
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
