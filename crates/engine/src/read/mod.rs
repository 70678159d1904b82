//! Reads: fetch by offset and offset lookups (earliest, latest, by timestamp, max
//! timestamp), all from committed state only.
//!
//! Recent data comes from the in-memory tail held in the offset index; older data is
//! read by byte range from its object through the block cache (memory, local disk,
//! then the object store). A fetch that has to go past the tail also starts reading
//! the entries after it (read-ahead), so a catching-up consumer finds its next fetch
//! cached or in flight.

mod fetch;
mod lake;

use std::sync::Arc;

use bytes::Bytes;
use object_store::ObjectStore;

use crate::keyspace::AbortedTxn;
pub use lake::encode_batches;
use lake::LakeMemo;

/// Records read from a partition.
#[derive(Debug, Clone, Default)]
pub struct FetchedRecords {
    pub high_watermark: i64,
    /// Where `read_committed` consumers stop (RFC 0010).
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// Whole batches, starting with the one holding the fetch offset.
    pub records: Bytes,
    /// At `read_committed`: the aborted transactions with records in `records`,
    /// which the client drops.
    pub aborted: Vec<AbortedTxn>,
}

/// An offset found by a ListOffsets query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetAndTimestamp {
    pub offset: i64,
    pub timestamp: i64,
}

/// ListOffsets special timestamps.
pub const LATEST: i64 = -1;
pub const EARLIEST: i64 = -2;
pub const MAX_TIMESTAMP: i64 = -3;
/// ListOffsets v8+: the earliest offset in local storage (KIP-405).
pub const EARLIEST_LOCAL: i64 = -4;

/// The read path: object reads through the block cache, and the memo of lake files
/// recently read. It holds no partition state: every read takes the partition's
/// committed state as it is at that moment.
pub struct ReadPath {
    store: Arc<dyn ObjectStore>,
    /// Object reads go through it (blocks in memory and on local disk).
    cache: sluice_cache::BlockCache,
    /// Lake footers and re-encoded row groups recently read.
    lake: LakeMemo,
}

impl ReadPath {
    pub(crate) fn new(store: Arc<dyn ObjectStore>, cache: sluice_cache::BlockCache) -> Self {
        Self {
            store,
            cache,
            lake: LakeMemo::default(),
        }
    }

    /// What the read cache did.
    pub fn cache_metrics(&self) -> &Arc<sluice_cache::CacheMetrics> {
        self.cache.metrics()
    }
}
