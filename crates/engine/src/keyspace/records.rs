//! The engine's stored records (see the table in the module above).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use sluice_storage::wal::WalSlice;

/// `assignment/<topic-id>`: each partition's leader, by partition index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignmentRecord {
    pub leaders: Vec<Leader>,
}

/// One partition's leader and its leader epoch (bumped on every move). Stored as a
/// two-element array so a topic of 100,000 partitions stays well under etcd's value
/// size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "(i32, i32)", into = "(i32, i32)")]
pub struct Leader {
    pub broker: i32,
    pub epoch: i32,
}

impl From<(i32, i32)> for Leader {
    fn from((broker, epoch): (i32, i32)) -> Self {
        Self { broker, epoch }
    }
}

impl From<Leader> for (i32, i32) {
    fn from(l: Leader) -> Self {
        (l.broker, l.epoch)
    }
}

/// `brokers/<id>/live`: a registered broker, bound to its lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRecord {
    pub id: i32,
    pub host: String,
    pub port: i32,
    #[serde(default)]
    pub rack: Option<String>,
    /// Set while the broker hands its partitions off before exiting.
    #[serde(default)]
    pub leaving: bool,
    /// What it does (`--roles`); both for records written before roles existed.
    #[serde(default)]
    pub roles: Roles,
    /// `host:port` of its HTTP endpoints (admin API, metrics), if reachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
}

/// A broker's roles: serving clients (and leading partitions), and compacting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roles {
    pub broker: bool,
    pub compactor: bool,
}

impl Default for Roles {
    fn default() -> Self {
        Self {
            broker: true,
            compactor: true,
        }
    }
}

impl Roles {
    /// Parses `--roles`: a comma-separated list of `broker` and `compactor`.
    pub fn parse(list: &str) -> std::result::Result<Self, String> {
        let mut roles = Self {
            broker: false,
            compactor: false,
        };
        for r in list.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            match r {
                "broker" => roles.broker = true,
                "compactor" => roles.compactor = true,
                other => {
                    return Err(format!(
                        "unknown role {other:?}: expected broker or compactor"
                    ))
                }
            }
        }
        if !roles.broker && !roles.compactor {
            return Err("no role given: expected broker, compactor or both".into());
        }
        Ok(roles)
    }
}

/// `brokers/<id>/epoch`: the broker's generation and the process that owns it.
///
/// A process claims a new number when it starts; the controller bumps the number
/// (keeping the owner) when it takes partitions away. Commits compare the whole value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation {
    pub number: u64,
    pub owner: Uuid,
}

/// The controller's record at `controller`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerRecord {
    pub broker: i32,
    pub owner: Uuid,
}

/// `manifests/<broker>/<generation>/<seq>`: what one flush committed. Which
/// partitions a write-ahead object holds, where, and the idempotent-producer batches
/// in it: one small key per flush, whatever the number of partitions, so metadata
/// load is O(1) per flush.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Object key of the WAL object.
    pub object: String,
    /// Its length in bytes (0 in manifests written before it was recorded).
    #[serde(default)]
    pub object_len: u64,
    pub slices: Vec<ManifestSlice>,
}

/// One slice of the object as committed: where the write-ahead object's footer says
/// it lies, and the idempotent producers' batches in it. Stored flat (the slice's
/// fields beside `producers`), as manifests always were.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestSlice {
    #[serde(flatten)]
    pub slice: WalSlice,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub producers: Vec<ProducerBatch>,
    /// Transaction markers in it (control batches ending a transaction).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub markers: Vec<TxnMarker>,
}

/// A transaction marker a partition committed: the control batch at `offset` that
/// ended a producer's transaction there, by commit or abort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnMarker {
    pub producer_id: i64,
    pub epoch: i16,
    pub commit: bool,
    pub offset: i64,
}

/// A transaction open on a partition: its producer and its first offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenTxn {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_offset: i64,
}

/// An aborted transaction on a partition, from its first offset to its marker's
/// (what a `read_committed` fetch lists so clients drop those records).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
}

/// How an index entry's object holds its records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Record batches as produced (write-ahead objects and segments), read as bytes.
    #[default]
    Batches,
    /// A lake file: Parquet rows, turned back into batches when fetched.
    Parquet,
}

/// A batch an idempotent producer wrote: enough to recognise its retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProducerBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    /// When this broker appended it (wall clock, ms); 0 in state stored before
    /// producers expired.
    #[serde(default)]
    pub append_ms: i64,
    /// Part of a transaction (its batch is transactional).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub txn: bool,
}

/// `checkpoint/<topic-id>/<p>`: what compaction folded out of a partition's
/// write-ahead objects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Slices of manifests below this offset are in `files` (or below the log start).
    pub folded_to: i64,
    /// Log compaction has cleaned everything below this offset.
    #[serde(default)]
    pub cleaned_to: i64,
    /// In offset order.
    pub files: Vec<FoldedFile>,
    /// The partition's idempotent-producer state when the checkpoint was written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub producers: Vec<ProducerBatch>,
    /// Transactions open at `folded_to` (begun below it, not ended below it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub open_txns: Vec<OpenTxn>,
    /// Aborted transactions whose markers lie below `folded_to` (those above are in
    /// the manifests).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aborted: Vec<AbortedTxn>,
}

/// A segment or lake file of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoldedFile {
    pub object: String,
    pub object_len: u64,
    pub format: Format,
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    /// Record-batch bytes it holds (as produced, before any Parquet encoding).
    pub len: u64,
    /// Rows of a lake file (0 for a segment).
    #[serde(default)]
    pub records: u64,
}

/// `lake_table/<topic-id>`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TableState {
    pub(crate) version: i64,
    /// Object key of the current metadata file.
    pub(crate) metadata: String,
    pub(crate) snapshot_id: i64,
    /// Of the file list the current snapshot holds.
    pub(crate) digest: String,
    /// The objects each kept version wrote, oldest first.
    pub(crate) history: Vec<Vec<String>>,
}

/// The stored record at `configs/brokers/default` or `configs/brokers/<id>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerConfigRecord {
    pub configs: BTreeMap<String, String>,
}

/// Where a transactional id's transaction is (Kafka's transaction states).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxnState {
    /// No transaction since the producer id was given out.
    #[default]
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl TxnState {
    /// Kafka's name, as DescribeTransactions and ListTransactions show it.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }

    /// Markers are being written (the decision is made, not yet complete).
    pub fn preparing(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

/// A partition in a transaction.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TxnPartition {
    pub topic: String,
    pub topic_id: Uuid,
    pub partition: i32,
}

/// `txn/<shard>/<transactional-id>`: a transactional id's producer and its current
/// transaction, written only by the coordinator of its shard (RFC 0010).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRecord {
    pub producer_id: i64,
    pub epoch: i16,
    pub state: TxnState,
    /// The producer's `transaction.timeout.ms`.
    pub timeout_ms: i32,
    /// When the current transaction began (ms; 0 when none is open).
    #[serde(default)]
    pub started_ms: i64,
    /// When the record last changed (ms).
    #[serde(default)]
    pub updated_ms: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<TxnPartition>,
    /// Consumer groups whose offsets the transaction commits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// `txn_markers/<topic-id>/<p>/<transactional-id>`: a marker the partition's leader
/// is to write; deleted in the same commit as the marker (RFC 0010).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkerRequest {
    pub producer_id: i64,
    pub epoch: i16,
    pub commit: bool,
    /// The coordinator shard's leader epoch when it made the decision.
    pub coordinator_epoch: i32,
}
