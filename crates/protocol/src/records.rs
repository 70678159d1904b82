//! The records inside a v2 batch, for the few places that must look inside one:
//! turning stored batches into rows (the Parquet lake) and rows back into batches.
//!
//! Unlike `kafka_protocol`'s decoder, headers stay a list: Kafka allows a header key
//! to repeat, and a record read back must equal the record produced.
//!
//! Decoding never panics on malformed input; every length is checked against the
//! bytes left.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::compression::Decompressor;

use crate::batch::{BatchError, BatchHeader, HEADER_LEN};

const ATTR_COMPRESSION: i16 = 0x7;
const ATTR_LOG_APPEND_TIME: i16 = 1 << 3;

/// One record as a consumer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: i64,
    /// The record's timestamp as consumers see it: the batch's append time for
    /// log-append-time batches, else the producer's create time.
    pub timestamp: i64,
    pub log_append_time: bool,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    /// Header keys (UTF-8 in Kafka's clients) and values, in order, repeats kept.
    pub headers: Vec<(Bytes, Option<Bytes>)>,
}

fn invalid(reason: &'static str) -> BatchError {
    BatchError::Invalid { reason }
}

/// The records of one stored batch (any compression), offsets and timestamps
/// resolved.
pub fn decode_batch(batch: &Bytes) -> Result<Vec<Record>, BatchError> {
    let h = BatchHeader::parse(batch)?;
    let body = batch.slice(HEADER_LEN..h.size);
    let plain = match h.attributes & ATTR_COMPRESSION {
        0 => body,
        codec => decompress(codec, body).map_err(|_| invalid("cannot decompress records"))?,
    };
    let log_append_time = h.attributes & ATTR_LOG_APPEND_TIME != 0;
    let mut buf = plain;
    let count = usize::try_from(h.record_count).map_err(|_| invalid("negative record count"))?;
    let mut out = Vec::with_capacity(count.min(buf.len()));
    for _ in 0..count {
        let len = usize::try_from(varint(&mut buf)?).map_err(|_| invalid("negative length"))?;
        if buf.remaining() < len {
            return Err(invalid("record truncated"));
        }
        let mut r = buf.split_to(len);
        if r.remaining() < 1 {
            return Err(invalid("record truncated"));
        }
        r.advance(1); // attributes, unused
        let ts_delta = varlong(&mut r)?;
        let offset_delta = varint(&mut r)?;
        let key = bytes_field(&mut r)?;
        let value = bytes_field(&mut r)?;
        let n = usize::try_from(varint(&mut r)?).map_err(|_| invalid("negative header count"))?;
        let mut headers = Vec::with_capacity(n.min(r.remaining()));
        for _ in 0..n {
            let k = bytes_field(&mut r)?.ok_or_else(|| invalid("null header key"))?;
            headers.push((k, bytes_field(&mut r)?));
        }
        out.push(Record {
            offset: h.base_offset + i64::from(offset_delta),
            timestamp: if log_append_time {
                h.max_timestamp
            } else {
                h.base_timestamp.wrapping_add(ts_delta)
            },
            log_append_time,
            key,
            value,
            headers,
        });
    }
    Ok(out)
}

fn decompress(codec: i16, mut body: Bytes) -> anyhow::Result<Bytes> {
    use kafka_protocol::compression::{Gzip, Lz4, Snappy, Zstd};
    let take = |b: &mut Bytes| Ok(b.split_off(0));
    match codec {
        1 => Gzip::decompress(&mut body, take),
        2 => Snappy::decompress(&mut body, take),
        3 => Lz4::decompress(&mut body, take),
        4 => Zstd::decompress(&mut body, take),
        _ => anyhow::bail!("unknown compression {codec}"),
    }
}

/// One uncompressed batch holding `records` (offsets ascending, gaps allowed), stamped
/// with log-append time if `records[0]` is. Producer fields are unset (-1): the
/// batch is history, not a producer's retry window.
pub fn encode_batch(records: &[Record]) -> Bytes {
    let Some(first) = records.first() else {
        return Bytes::new();
    };
    let base_ts = records.iter().map(|r| r.timestamp).min().unwrap_or(0);
    let max_ts = records.iter().map(|r| r.timestamp).max().unwrap_or(0);
    let mut body = BytesMut::new();
    let mut rec = BytesMut::new();
    for r in records {
        rec.clear();
        rec.put_u8(0);
        put_varlong(&mut rec, r.timestamp.wrapping_sub(base_ts));
        put_varint(&mut rec, (r.offset - first.offset) as i32);
        put_bytes(&mut rec, r.key.as_deref());
        put_bytes(&mut rec, r.value.as_deref());
        put_varint(&mut rec, r.headers.len() as i32);
        for (k, v) in &r.headers {
            put_bytes(&mut rec, Some(k));
            put_bytes(&mut rec, v.as_deref());
        }
        put_varint(&mut body, rec.len() as i32);
        body.extend_from_slice(&rec);
    }
    let last_delta = records.last().map_or(0, |r| r.offset - first.offset) as i32;
    let attributes: i16 = if first.log_append_time {
        ATTR_LOG_APPEND_TIME
    } else {
        0
    };
    let mut b = BytesMut::with_capacity(HEADER_LEN + body.len());
    b.put_i64(first.offset);
    b.put_i32((HEADER_LEN - 12 + body.len()) as i32);
    b.put_i32(-1); // partition leader epoch
    b.put_i8(2);
    b.put_u32(0); // crc, below
    b.put_i16(attributes);
    b.put_i32(last_delta);
    b.put_i64(base_ts);
    b.put_i64(max_ts);
    b.put_i64(-1); // producer id
    b.put_i16(-1);
    b.put_i32(-1);
    b.put_i32(records.len() as i32);
    b.extend_from_slice(&body);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

fn varlong(b: &mut Bytes) -> Result<i64, BatchError> {
    let mut raw: u64 = 0;
    for shift in (0..64).step_by(7) {
        if !b.has_remaining() {
            return Err(invalid("varint truncated"));
        }
        let byte = b.get_u8();
        raw |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
        }
    }
    Err(invalid("varint too long"))
}

fn varint(b: &mut Bytes) -> Result<i32, BatchError> {
    i32::try_from(varlong(b)?).map_err(|_| invalid("varint out of range"))
}

fn bytes_field(b: &mut Bytes) -> Result<Option<Bytes>, BatchError> {
    let len = varint(b)?;
    if len < 0 {
        return Ok(None);
    }
    let len = len as usize;
    if b.remaining() < len {
        return Err(invalid("field truncated"));
    }
    Ok(Some(b.split_to(len)))
}

/// A zig-zag variable-length long, as Kafka records (and Avro) encode them.
pub fn put_varlong(b: &mut impl BufMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        b.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    b.put_u8(z as u8);
}

fn put_varint(b: &mut BytesMut, v: i32) {
    put_varlong(b, i64::from(v));
}

fn put_bytes(b: &mut BytesMut, v: Option<&[u8]>) {
    match v {
        None => put_varint(b, -1),
        Some(v) => {
            put_varint(b, v.len() as i32);
            b.extend_from_slice(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::{
        Compression, Record as KRecord, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    fn record(offset: i64, ts: i64, headers: Vec<(Bytes, Option<Bytes>)>) -> Record {
        Record {
            offset,
            timestamp: ts,
            log_append_time: false,
            key: (offset % 2 == 0).then(|| Bytes::from(format!("k{offset}"))),
            value: (offset % 3 != 0).then(|| Bytes::from(vec![offset as u8; 40])),
            headers,
        }
    }

    #[test]
    fn encode_then_decode_is_identity_with_repeated_headers_and_gaps() {
        let h = |k: &str, v: Option<&str>| {
            (
                Bytes::from(k.to_owned()),
                v.map(|v| Bytes::from(v.to_owned())),
            )
        };
        let records = vec![
            record(
                100,
                5_000,
                vec![h("a", Some("1")), h("a", Some("2")), h("b", None)],
            ),
            record(101, 4_000, vec![]),
            record(105, 6_000, vec![h("", Some(""))]),
        ];
        let batch = encode_batch(&records);
        let header = BatchHeader::parse(&batch).expect("valid header");
        assert_eq!((header.size, header.last_offset()), (batch.len(), 105));
        let crc = u32::from_be_bytes([batch[17], batch[18], batch[19], batch[20]]);
        assert_eq!(crc, crc32c::crc32c(&batch[21..]));
        assert_eq!(decode_batch(&batch).expect("decodes"), records);
    }

    #[test]
    fn decodes_compressed_and_log_append_batches_of_other_encoders() {
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let records: Vec<KRecord> = (0..20)
                .map(|i| KRecord {
                    transactional: false,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: 0,
                    producer_id: 9,
                    producer_epoch: 0,
                    timestamp_type: TimestampType::LogAppend,
                    offset: 50 + i,
                    sequence: i as i32,
                    timestamp: 1_000 + i,
                    key: Some(Bytes::from(format!("key-{i}"))),
                    value: Some(Bytes::from(vec![b'x'; 100])),
                    headers: Default::default(),
                })
                .collect();
            let mut buf = BytesMut::new();
            RecordBatchEncoder::encode(
                &mut buf,
                &records,
                &RecordEncodeOptions {
                    version: 2,
                    compression,
                },
            )
            .expect("encodes");
            crate::batch::set_log_append_time(&mut buf, 7_000);
            let decoded = decode_batch(&buf.freeze()).expect("decodes");
            assert_eq!(decoded.len(), 20);
            assert_eq!(decoded[3].offset, 53);
            assert!(decoded
                .iter()
                .all(|r| r.log_append_time && r.timestamp == 7_000));
            assert_eq!(decoded[19].key.as_deref(), Some(&b"key-19"[..]));
        }
    }

    #[test]
    fn malformed_records_are_errors() {
        let batch = encode_batch(&[record(0, 1, vec![])]);
        for cut in [HEADER_LEN + 1, batch.len() - 1] {
            let mut b = BytesMut::from(&batch[..]);
            let len = (cut - 12) as i32;
            b[8..12].copy_from_slice(&len.to_be_bytes());
            b.truncate(cut);
            assert!(decode_batch(&b.freeze()).is_err(), "cut at {cut}");
        }
    }
}
