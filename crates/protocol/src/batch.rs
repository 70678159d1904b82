//! RecordBatch v2 (magic 2) validation and the few in-place edits a broker makes.
//!
//! Layout of the 61-byte header (offsets in bytes):
//! base_offset 0..8, batch_length 8..12, partition_leader_epoch 12..16, magic 16,
//! crc 17..21 (CRC-32C of bytes 21..end), attributes 21..23, last_offset_delta 23..27,
//! base_timestamp 27..35, max_timestamp 35..43, producer_id 43..51,
//! producer_epoch 51..53, base_sequence 53..57, record_count 57..61.
//!
//! Base offset and leader epoch lie outside the CRC, so assigning offsets never
//! recomputes it; switching to log-append time does.

use bytes::{Bytes, BytesMut};

pub const HEADER_LEN: usize = 61;
const CRC_START: usize = 21;
const ATTR_TIMESTAMP_TYPE: i16 = 1 << 3;
const ATTR_TRANSACTIONAL: i16 = 1 << 4;
const ATTR_CONTROL: i16 = 1 << 5;

/// Why a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("record batch truncated: need {needed} bytes, have {have}")]
    Truncated { needed: usize, have: usize },
    #[error("record batch magic {magic} is not 2")]
    UnsupportedMagic { magic: i8 },
    #[error("record batch crc mismatch: stored={stored:#010x} computed={computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("record batch is invalid: {reason}")]
    Invalid { reason: &'static str },
    #[error("records cannot be decompressed: {reason}")]
    Decompress { reason: String },
    #[error("records decompress to more than {limit} bytes")]
    TooLarge { limit: usize },
}

/// The header fields of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Total size of the batch in bytes, header included.
    pub size: usize,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Reads the header at the start of `buf` without validating the CRC.
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        if buf.len() < HEADER_LEN {
            return Err(BatchError::Truncated {
                needed: HEADER_LEN,
                have: buf.len(),
            });
        }
        let magic = buf[16] as i8;
        if magic != 2 {
            return Err(BatchError::UnsupportedMagic { magic });
        }
        let batch_length = i32_at(buf, 8);
        if batch_length < (HEADER_LEN - 12) as i32 {
            return Err(BatchError::Invalid {
                reason: "batch_length shorter than the header",
            });
        }
        let size = 12 + batch_length as usize;
        if buf.len() < size {
            return Err(BatchError::Truncated {
                needed: size,
                have: buf.len(),
            });
        }
        Ok(Self {
            base_offset: i64_at(buf, 0),
            size,
            attributes: i16_at(buf, 21),
            last_offset_delta: i32_at(buf, 23),
            base_timestamp: i64_at(buf, 27),
            max_timestamp: i64_at(buf, 35),
            producer_id: i64_at(buf, 43),
            producer_epoch: i16_at(buf, 51),
            base_sequence: i32_at(buf, 53),
            record_count: i32_at(buf, 57),
        })
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Sequence number of the last record, wrapping like the Java client does.
    pub fn last_sequence(&self) -> i32 {
        let last = i64::from(self.base_sequence) + i64::from(self.last_offset_delta);
        (last % (i64::from(i32::MAX) + 1)) as i32
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    /// Whether the batch's records carry the broker's append time (its max timestamp).
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_TIMESTAMP_TYPE != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    pub fn is_idempotent(&self) -> bool {
        self.producer_id >= 0
    }
}

/// Splits a produce request's record set into validated batches (CRC checked).
///
/// Every batch must be complete, magic 2, with a consistent record count; one bad
/// batch rejects the whole set, as Kafka does.
pub fn validate_record_set(records: &Bytes) -> Result<Vec<(BatchHeader, Bytes)>, BatchError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < records.len() {
        let header = BatchHeader::parse(&records[pos..])?;
        let bytes = records.slice(pos..pos + header.size);
        let stored = u32::from_be_bytes([bytes[17], bytes[18], bytes[19], bytes[20]]);
        let computed = crc32c::crc32c(&bytes[CRC_START..]);
        if stored != computed {
            return Err(BatchError::CrcMismatch { stored, computed });
        }
        if header.record_count <= 0 || header.last_offset_delta != header.record_count - 1 {
            return Err(BatchError::Invalid {
                reason: "record_count does not match last_offset_delta",
            });
        }
        pos += header.size;
        out.push((header, bytes));
    }
    if out.is_empty() {
        return Err(BatchError::Invalid {
            reason: "empty record set",
        });
    }
    Ok(out)
}

/// Iterates the batches of a stored (already validated) byte range.
pub fn iter_batches(
    buf: &Bytes,
) -> impl Iterator<Item = Result<(BatchHeader, Bytes), BatchError>> + '_ {
    let mut pos = 0;
    std::iter::from_fn(move || {
        if pos >= buf.len() {
            return None;
        }
        match BatchHeader::parse(&buf[pos..]) {
            Ok(h) => {
                let bytes = buf.slice(pos..pos + h.size);
                pos += h.size;
                Some(Ok((h, bytes)))
            }
            Err(e) => {
                pos = buf.len();
                Some(Err(e))
            }
        }
    })
}

/// Sets the broker-owned fields of a batch copy: base offset and leader epoch.
pub fn assign_offset(batch: &mut BytesMut, base_offset: i64, leader_epoch: i32) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
    batch[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Marks a batch as log-append-time stamped with `now_ms` and recomputes its CRC.
pub fn set_log_append_time(batch: &mut BytesMut, now_ms: i64) {
    let attributes = i16_at(batch, 21) | ATTR_TIMESTAMP_TYPE;
    batch[21..23].copy_from_slice(&attributes.to_be_bytes());
    batch[35..43].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType,
    };

    fn encode(n: i64, producer_id: i64) -> Bytes {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: -1,
                producer_id,
                producer_epoch: 0,
                timestamp_type: TimestampType::Creation,
                offset: i,
                sequence: i as i32,
                timestamp: 1_000 + i,
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(vec![b'v'; 10])),
                headers: Default::default(),
                delete_horizon: false,
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        buf.freeze()
    }

    #[test]
    fn validates_and_patches_a_client_batch() {
        let set = encode(5, 42);
        let batches = validate_record_set(&set).unwrap();
        assert_eq!(batches.len(), 1);
        let (h, bytes) = &batches[0];
        assert_eq!(
            (h.record_count, h.last_offset_delta, h.producer_id),
            (5, 4, 42)
        );
        assert_eq!(h.max_timestamp, 1_004);

        let mut copy = BytesMut::from(&bytes[..]);
        assign_offset(&mut copy, 1_000, 3);
        set_log_append_time(&mut copy, 99_999);
        let patched = copy.freeze();
        let (h2, _) = validate_record_set(&patched).unwrap()[0].clone();
        assert_eq!(
            (h2.base_offset, h2.last_offset(), h2.max_timestamp),
            (1_000, 1_004, 99_999)
        );
        let decoded = RecordBatchDecoder::decode(&mut patched.clone()).unwrap();
        assert_eq!(decoded.records[0].offset, 1_000);
        assert_eq!(decoded.records[4].timestamp_type, TimestampType::LogAppend);
    }

    #[test]
    fn rejects_corruption_and_truncation() {
        let set = encode(3, -1);
        let mut bad = BytesMut::from(&set[..]);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(matches!(
            validate_record_set(&bad.freeze()),
            Err(BatchError::CrcMismatch { .. })
        ));
        for cut in [0, 10, HEADER_LEN, set.len() - 1] {
            assert!(
                validate_record_set(&set.slice(..cut)).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn sequence_wraps() {
        let mut h = BatchHeader::parse(&encode(3, 1)).unwrap();
        h.base_sequence = i32::MAX;
        assert_eq!(h.last_sequence(), 1);
    }
}
