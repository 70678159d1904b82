//! The manifest a flush commits: which partitions a WAL object holds, where, and the
//! idempotent-producer batches in it. One small key per flush, whatever the number of
//! partitions, so metadata load is O(1) per flush.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::partition::ProducerBatch;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Object key of the WAL object.
    pub object: String,
    /// Its length in bytes (0 in manifests written before it was recorded).
    #[serde(default)]
    pub object_len: u64,
    pub slices: Vec<ManifestSlice>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestSlice {
    pub topic_id: Uuid,
    pub partition: i32,
    pub base_offset: i64,
    pub last_offset: i64,
    pub start: u64,
    pub len: u64,
    pub max_timestamp: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub producers: Vec<ProducerBatch>,
}

impl Manifest {
    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain data to a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}
