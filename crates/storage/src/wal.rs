//! The write-ahead object: every batch one broker flushed at once, grouped by partition.
//!
//! ```text
//! header   "SLWAL001"                                   8 bytes
//! slices   RecordBatches of one partition, back to back, partition after partition
//! footer   one 60-byte entry per slice: topic id (16), partition i32, base offset i64,
//!          last offset i64, byte start u64, byte length u64, max timestamp i64
//! trailer  slice count u32, CRC-32C of everything before it u32, "SLWALEND"
//! ```
//!
//! Batches keep their Kafka wire format (offsets already assigned), so a fetch returns
//! a byte range of the object as it is. The footer lets a reader (compaction, garbage
//! collection, recovery tools) learn what an object holds without the metadata store.

use bytes::{BufMut, Bytes, BytesMut};
use object_store::PutPayload;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::StorageError;

const MAGIC: &[u8; 8] = b"SLWAL001";
const END_MAGIC: &[u8; 8] = b"SLWALEND";
/// topic id 16 + partition 4 + base 8 + last 8 + start 8 + len 8 + max timestamp 8.
const SLICE_ENTRY: usize = 60;
const TRAILER: usize = 4 + 4 + 8;

/// Where one partition's batches lie inside a WAL object: the one slice type from
/// the object's footer to the manifest that commits it (the engine's
/// `ManifestSlice` adds its producers) to the partition's offset index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalSlice {
    pub topic_id: Uuid,
    pub partition: i32,
    pub base_offset: i64,
    pub last_offset: i64,
    /// Byte offset of the slice inside the object.
    pub start: u64,
    pub len: u64,
    pub max_timestamp: i64,
}

/// Assembles one WAL object from per-partition runs of batches without copying them.
#[derive(Default)]
pub struct WalObjectBuilder {
    chunks: Vec<Bytes>,
    slices: Vec<WalSlice>,
    len: u64,
    crc: u32,
}

impl WalObjectBuilder {
    pub fn new() -> Self {
        let mut b = Self::default();
        b.push(Bytes::from_static(MAGIC));
        b
    }

    fn push(&mut self, chunk: Bytes) {
        self.crc = crc32c::crc32c_append(self.crc, &chunk);
        self.len += chunk.len() as u64;
        self.chunks.push(chunk);
    }

    /// Appends one partition's batches (already offset-assigned, in offset order).
    pub fn add_slice(
        &mut self,
        topic_id: Uuid,
        partition: i32,
        base_offset: i64,
        last_offset: i64,
        max_timestamp: i64,
        batches: impl IntoIterator<Item = Bytes>,
    ) {
        let start = self.len;
        for b in batches {
            self.push(b);
        }
        self.slices.push(WalSlice {
            topic_id,
            partition,
            base_offset,
            last_offset,
            start,
            len: self.len - start,
            max_timestamp,
        });
    }

    /// Bytes of record data so far (header and footer excluded).
    pub fn data_len(&self) -> u64 {
        self.len - MAGIC.len() as u64
    }

    /// Finishes the object: its payload (chunks, not one copy) and its slices.
    pub fn finish(mut self) -> (PutPayload, Vec<WalSlice>, u64) {
        let mut footer = BytesMut::with_capacity(self.slices.len() * SLICE_ENTRY + TRAILER);
        for s in &self.slices {
            footer.put_slice(s.topic_id.as_bytes());
            footer.put_i32(s.partition);
            footer.put_i64(s.base_offset);
            footer.put_i64(s.last_offset);
            footer.put_u64(s.start);
            footer.put_u64(s.len);
            footer.put_i64(s.max_timestamp);
        }
        footer.put_u32(self.slices.len() as u32);
        let crc = crc32c::crc32c_append(self.crc, &footer);
        footer.put_u32(crc);
        footer.put_slice(END_MAGIC);
        self.push(footer.freeze());
        let len = self.len;
        (PutPayload::from_iter(self.chunks), self.slices, len)
    }
}

/// Reads the slice index of a whole WAL object, verifying its checksum.
pub fn read_slices(key: &str, object: &[u8]) -> Result<Vec<WalSlice>, StorageError> {
    let corrupt = |reason: &str| StorageError::CorruptWal {
        key: key.to_string(),
        reason: reason.to_string(),
    };
    if object.len() < MAGIC.len() + TRAILER || &object[..8] != MAGIC {
        return Err(corrupt("bad header"));
    }
    let t = object.len() - TRAILER;
    if &object[t + 8..] != END_MAGIC {
        return Err(corrupt("bad trailer"));
    }
    let count =
        u32::from_be_bytes([object[t], object[t + 1], object[t + 2], object[t + 3]]) as usize;
    let stored = u32::from_be_bytes([object[t + 4], object[t + 5], object[t + 6], object[t + 7]]);
    if crc32c::crc32c(&object[..t + 4]) != stored {
        return Err(corrupt("checksum mismatch"));
    }
    let footer_start = count
        .checked_mul(SLICE_ENTRY)
        .and_then(|n| t.checked_sub(n))
        .filter(|s| *s >= MAGIC.len())
        .ok_or_else(|| corrupt("slice count exceeds object"))?;
    let mut slices = Vec::with_capacity(count);
    for e in object[footer_start..t].chunks_exact(SLICE_ENTRY) {
        let i64_at = |at: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&e[at..at + 8]);
            i64::from_be_bytes(a)
        };
        let mut topic_id = [0u8; 16];
        topic_id.copy_from_slice(&e[..16]);
        let s = WalSlice {
            topic_id: Uuid::from_bytes(topic_id),
            partition: i32::from_be_bytes([e[16], e[17], e[18], e[19]]),
            base_offset: i64_at(20),
            last_offset: i64_at(28),
            start: i64_at(36) as u64,
            len: i64_at(44) as u64,
            max_timestamp: i64_at(52),
        };
        if s.start
            .checked_add(s.len)
            .is_none_or(|end| end > footer_start as u64)
        {
            return Err(corrupt("slice range outside the data"));
        }
        slices.push(s);
    }
    Ok(slices)
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::{memory::InMemory, path::Path, ObjectStore, ObjectStoreExt, PutMode};

    #[tokio::test]
    async fn round_trips_through_an_object_store() {
        let mut b = WalObjectBuilder::new();
        b.add_slice(
            Uuid::from_bytes([1; 16]),
            0,
            0,
            9,
            100,
            [Bytes::from_static(b"aaaa"), Bytes::from_static(b"bb")],
        );
        b.add_slice(
            Uuid::from_bytes([2; 16]),
            3,
            50,
            50,
            200,
            [Bytes::from_static(b"ccc")],
        );
        assert_eq!(b.data_len(), 9);
        let (payload, slices, len) = b.finish();
        let store = InMemory::new();
        let key = Path::from("wal/1/1/x.wal");
        store
            .put_opts(&key, payload, PutMode::Create.into())
            .await
            .unwrap();
        let object = store.get(&key).await.unwrap().bytes().await.unwrap();
        assert_eq!(object.len() as u64, len);
        assert_eq!(read_slices("x", &object).unwrap(), slices);
        let s = slices[1];
        assert_eq!(
            &object[s.start as usize..(s.start + s.len) as usize],
            b"ccc"
        );

        let mut bad = object.to_vec();
        bad[9] ^= 1;
        assert!(read_slices("x", &bad).is_err());
        assert!(read_slices("x", &object[..object.len() - 1]).is_err());
    }
}
