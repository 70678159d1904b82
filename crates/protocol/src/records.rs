//! The records inside a v2 batch, for the places that must look inside one:
//! validating a producer's batch record by record, finding a record by time, and
//! turning stored batches into rows (the Parquet lake and log compaction) and rows
//! back into batches.
//!
//! Unlike `kafka_protocol`'s decoder, headers stay a list: Kafka allows a header key
//! to repeat, and a record read back must equal the record produced.
//!
//! Invariants:
//! - Nothing is sized by a count or length from the wire: a record is read only as
//!   far as its bytes really go, and compressed records are decompressed as a stream,
//!   one record at a time, never all at once.
//! - Decompressed bytes are capped ([`for_each_record`]'s `max_plain`): a batch that
//!   expands past the cap is an error ([`BatchError::TooLarge`]) after at most that
//!   many bytes of work, however much it claims.
//! - A batch holds exactly `record_count` well-formed records and nothing after them.
//! - Decoding never panics on malformed input.

use std::io::{BufRead, BufReader, Read};

use bytes::{BufMut, Bytes, BytesMut};

use crate::batch::{BatchError, BatchHeader, HEADER_LEN};

const ATTR_COMPRESSION: i16 = 0x7;
const ATTR_LOG_APPEND_TIME: i16 = 1 << 3;
const ATTR_TRANSACTIONAL: i16 = 1 << 4;
const ATTR_CONTROL: i16 = 1 << 5;

/// The most bytes the records of one stored batch may decompress to. Produce caps
/// batches lower ([`plain_limit`]), so whatever was accepted decodes later.
pub const MAX_PLAIN_BYTES: usize = 256 << 20;

/// How far past `max.message.bytes` a producer's records may expand when
/// decompressed: producers fill batches by compressed size, and text compresses
/// 5-20 fold; a bomb compresses thousands fold.
pub const EXPANSION_FACTOR: usize = 32;

/// The decompressed-size cap of a producer's batch on a topic with this
/// `max.message.bytes` (floored at Kafka's default, so tiny limits do not refuse
/// ordinary compressed batches).
pub fn plain_limit(max_message_bytes: i64) -> usize {
    let max = usize::try_from(max_message_bytes)
        .unwrap_or(0)
        .max(1_048_588);
    max.saturating_mul(EXPANSION_FACTOR).min(MAX_PLAIN_BYTES)
}

/// zstd frames may ask for a window of up to 2^24 bytes (16 MiB): producers use
/// 2^17 to 2^23 at their default levels; zstd itself would grant 128 MiB.
const ZSTD_WINDOW_LOG_MAX: u32 = 24;

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

/// One record of a batch, borrowed from the batch or from the decompressor's
/// buffer; already checked to be well-formed.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    header_count: usize,
    headers: &'a [u8],
}

impl<'a> RecordView<'a> {
    /// The headers, in order (checked when the record was read).
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a {
        let mut rest = self.headers;
        (0..self.header_count).map_while(move |_| {
            let key = bytes_field(&mut rest).ok()??;
            let value = bytes_field(&mut rest).ok()?;
            Some((key, value))
        })
    }
}

fn invalid(reason: &'static str) -> BatchError {
    BatchError::Invalid { reason }
}

/// Calls `visit` with every record of one batch, in order, with its index; returns
/// the batch header. Stops at the first error, of the batch or of `visit`.
///
/// The batch's CRC is not checked here ([`crate::batch::validate_record_set`] does).
/// Offset deltas are reported as stored: a producer's run 0..n-1, a compacted
/// batch's may skip.
pub fn for_each_record(
    batch: &[u8],
    max_plain: usize,
    mut visit: impl FnMut(usize, &RecordView<'_>) -> Result<(), BatchError>,
) -> Result<BatchHeader, BatchError> {
    let h = BatchHeader::parse(batch)?;
    let body = &batch[HEADER_LEN..h.size];
    let count = usize::try_from(h.record_count).map_err(|_| invalid("negative record count"))?;
    match h.attributes & ATTR_COMPRESSION {
        0 => {
            let mut rest = body;
            if rest.len() > max_plain {
                return Err(BatchError::TooLarge { limit: max_plain });
            }
            for i in 0..count {
                let len = record_len(varint(&mut rest)?)?;
                if rest.len() < len {
                    return Err(invalid("record truncated"));
                }
                let (record, after) = rest.split_at(len);
                rest = after;
                visit(i, &parse_record(record)?)?;
            }
            if !rest.is_empty() {
                return Err(invalid("bytes after the last record"));
            }
        }
        codec => {
            let mut plain =
                BufReader::with_capacity(16 << 10, decompressor(codec, body, max_plain)?);
            let mut scratch = Vec::new();
            let mut total = 0usize;
            for i in 0..count {
                let (len, width) = stream_varint(&mut plain, max_plain)?;
                let len = record_len(len)?;
                total = total.saturating_add(width).saturating_add(len);
                if total > max_plain {
                    return Err(BatchError::TooLarge { limit: max_plain });
                }
                scratch.clear();
                // Grows with the bytes that really arrive, not with `len`.
                (&mut plain)
                    .take(len as u64)
                    .read_to_end(&mut scratch)
                    .map_err(|e| stream_error(e, max_plain))?;
                if scratch.len() != len {
                    return Err(invalid("record truncated"));
                }
                visit(i, &parse_record(&scratch)?)?;
            }
            let mut one = [0u8; 1];
            match plain
                .read(&mut one)
                .map_err(|e| stream_error(e, max_plain))?
            {
                0 => {}
                _ => return Err(invalid("bytes after the last record")),
            }
        }
    }
    Ok(h)
}

/// The records of one stored batch (any compression), offsets and timestamps
/// resolved. Uncompressed keys and values share the batch's memory.
pub fn decode_batch(batch: &Bytes, max_plain: usize) -> Result<Vec<Record>, BatchError> {
    let h = BatchHeader::parse(batch)?;
    let log_append_time = h.is_log_append_time();
    let mut out = Vec::with_capacity(usize::try_from(h.record_count).unwrap_or(0).min(1024));
    for_each_record(batch, max_plain, |_, r| {
        let share = |part: &[u8]| share(batch, part);
        out.push(Record {
            offset: h.base_offset + i64::from(r.offset_delta),
            timestamp: if log_append_time {
                h.max_timestamp
            } else {
                h.base_timestamp.wrapping_add(r.timestamp_delta)
            },
            log_append_time,
            key: r.key.map(share),
            value: r.value.map(share),
            headers: r.headers().map(|(k, v)| (share(k), v.map(share))).collect(),
        });
        Ok(())
    })?;
    Ok(out)
}

/// `part` as a slice of `whole` when it lies inside it (no copy), else a copy.
fn share(whole: &Bytes, part: &[u8]) -> Bytes {
    let start = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    match start.checked_add(part.len()) {
        Some(end) if start <= whole.len() && end <= whole.len() => whole.slice(start..end),
        _ => Bytes::copy_from_slice(part),
    }
}

fn record_len(len: i32) -> Result<usize, BatchError> {
    usize::try_from(len).map_err(|_| invalid("negative record length"))
}

/// Parses one record's bytes (after its length), which must hold exactly one record.
fn parse_record(mut r: &[u8]) -> Result<RecordView<'_>, BatchError> {
    let Some((_attributes, rest)) = r.split_first() else {
        return Err(invalid("record truncated"));
    };
    r = rest;
    let timestamp_delta = varlong(&mut r)?;
    let offset_delta = varint(&mut r)?;
    let key = bytes_field(&mut r)?;
    let value = bytes_field(&mut r)?;
    let header_count =
        usize::try_from(varint(&mut r)?).map_err(|_| invalid("negative header count"))?;
    let headers = r;
    for _ in 0..header_count {
        if bytes_field(&mut r)?.is_none() {
            return Err(invalid("null header key"));
        }
        bytes_field(&mut r)?;
    }
    if !r.is_empty() {
        return Err(invalid("record length does not match its fields"));
    }
    Ok(RecordView {
        timestamp_delta,
        offset_delta,
        key,
        value,
        header_count,
        headers,
    })
}

/// Marks the decompressor's refusal to expand past the cap, through `io::Error`.
#[derive(Debug)]
struct Overflow;

impl std::fmt::Display for Overflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("decompressed size over the cap")
    }
}

impl std::error::Error for Overflow {}

fn stream_error(e: std::io::Error, limit: usize) -> BatchError {
    if e.get_ref().is_some_and(|inner| inner.is::<Overflow>()) {
        // The snappy reader knows a block's size before expanding it.
        return BatchError::TooLarge { limit };
    }
    BatchError::Decompress {
        reason: e.to_string(),
    }
}

/// A streaming decompressor of a batch's records.
fn decompressor<'a>(
    codec: i16,
    body: &'a [u8],
    max_plain: usize,
) -> Result<Box<dyn Read + 'a>, BatchError> {
    let err = |e: std::io::Error| BatchError::Decompress {
        reason: e.to_string(),
    };
    Ok(match codec {
        1 => Box::new(flate2::bufread::GzDecoder::new(body)),
        2 => Box::new(SnappyReader::new(body, max_plain)),
        3 => Box::new(lz4::Decoder::new(body).map_err(err)?),
        4 => {
            let mut d = zstd::stream::read::Decoder::with_buffer(body).map_err(err)?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(err)?;
            Box::new(d)
        }
        _ => return Err(invalid("unknown compression codec")),
    })
}

/// Snappy as Kafka's clients write it: the Java client's xerial framing (a magic
/// header, then length-prefixed blocks), or one raw block (librdkafka). Expands one
/// block at a time, after checking its declared size against what is left of the cap.
struct SnappyReader<'a> {
    input: &'a [u8],
    framed: bool,
    block: Vec<u8>,
    pos: usize,
    budget: usize,
}

const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;

impl<'a> SnappyReader<'a> {
    fn new(input: &'a [u8], max_plain: usize) -> Self {
        let framed = input.starts_with(XERIAL_MAGIC) && input.len() >= XERIAL_HEADER_LEN;
        Self {
            input: if framed {
                &input[XERIAL_HEADER_LEN..]
            } else {
                input
            },
            framed,
            block: Vec::new(),
            pos: 0,
            budget: max_plain,
        }
    }

    /// Expands the next block; false at the end of the input.
    fn next_block(&mut self) -> std::io::Result<bool> {
        use std::io::{Error, ErrorKind};
        if self.input.is_empty() {
            return Ok(false);
        }
        let compressed = if self.framed {
            let Some((len, rest)) = self.input.split_first_chunk::<4>() else {
                return Err(Error::new(
                    ErrorKind::InvalidData,
                    "snappy block length truncated",
                ));
            };
            let len = u32::from_be_bytes(*len) as usize;
            if rest.len() < len {
                return Err(Error::new(ErrorKind::InvalidData, "snappy block truncated"));
            }
            let (block, rest) = rest.split_at(len);
            self.input = rest;
            block
        } else {
            std::mem::take(&mut self.input)
        };
        let bad = |e: snap::Error| Error::new(ErrorKind::InvalidData, e);
        let len = snap::raw::decompress_len(compressed).map_err(bad)?;
        if len > self.budget {
            return Err(Error::other(Overflow));
        }
        self.budget -= len;
        self.block.resize(len, 0);
        let n = snap::raw::Decoder::new()
            .decompress(compressed, &mut self.block)
            .map_err(bad)?;
        self.block.truncate(n);
        self.pos = 0;
        Ok(true)
    }
}

impl Read for SnappyReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.block.len() {
            if !self.next_block()? {
                return Ok(0);
            }
        }
        let n = out.len().min(self.block.len() - self.pos);
        out[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
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
    let header = Header {
        base_offset: first.offset,
        attributes,
        last_delta,
        base_ts,
        max_ts,
        producer: (-1, -1, -1),
        count: records.len() as i32,
    };
    finish_batch(&header, &body)
}

/// The header fields [`finish_batch`] writes.
struct Header {
    base_offset: i64,
    attributes: i16,
    last_delta: i32,
    base_ts: i64,
    max_ts: i64,
    /// Producer id, epoch and base sequence.
    producer: (i64, i16, i32),
    count: i32,
}

/// A batch of `body` (its records, encoded) under `h`, with its CRC-32C.
fn finish_batch(h: &Header, body: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(HEADER_LEN + body.len());
    b.put_i64(h.base_offset);
    b.put_i32((HEADER_LEN - 12 + body.len()) as i32);
    b.put_i32(-1); // partition leader epoch
    b.put_i8(2);
    b.put_u32(0); // crc, below
    b.put_i16(h.attributes);
    b.put_i32(h.last_delta);
    b.put_i64(h.base_ts);
    b.put_i64(h.max_ts);
    b.put_i64(h.producer.0);
    b.put_i16(h.producer.1);
    b.put_i32(h.producer.2);
    b.put_i32(h.count);
    b.extend_from_slice(body);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

/// A transaction marker: the control batch that ends a producer's transaction on a
/// partition, as Kafka writes it. One record whose key is (version 0, type: 0 abort,
/// 1 commit) and whose value is (version 0, coordinator epoch); the batch is
/// transactional and control, with the producer's id and epoch and no sequence.
pub fn encode_control_batch(
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    timestamp: i64,
) -> Bytes {
    let mut key = BytesMut::with_capacity(4);
    key.put_i16(0);
    key.put_i16(i16::from(commit));
    let mut value = BytesMut::with_capacity(6);
    value.put_i16(0);
    value.put_i32(coordinator_epoch);
    let mut rec = BytesMut::new();
    rec.put_u8(0);
    put_varlong(&mut rec, 0);
    put_varint(&mut rec, 0);
    put_bytes(&mut rec, Some(&key));
    put_bytes(&mut rec, Some(&value));
    put_varint(&mut rec, 0);
    let mut body = BytesMut::with_capacity(rec.len() + 2);
    put_varint(&mut body, rec.len() as i32);
    body.extend_from_slice(&rec);
    let header = Header {
        base_offset: 0,
        attributes: ATTR_TRANSACTIONAL | ATTR_CONTROL,
        last_delta: 0,
        base_ts: timestamp,
        max_ts: timestamp,
        producer: (producer_id, producer_epoch, -1),
        count: 1,
    };
    finish_batch(&header, &body)
}

/// What a control batch's record says: `Some(true)` commit, `Some(false)` abort,
/// `None` another control type (or unreadable).
pub fn control_kind(batch: &[u8]) -> Option<bool> {
    let mut kind = None;
    for_each_record(batch, 1 << 10, |_, r| {
        if let Some(key) = r.key.filter(|k| k.len() >= 4) {
            kind = match i16::from_be_bytes([key[2], key[3]]) {
                0 => Some(false),
                1 => Some(true),
                _ => None,
            };
        }
        Ok(())
    })
    .ok()?;
    kind
}

fn varlong(b: &mut &[u8]) -> Result<i64, BatchError> {
    let mut raw: u64 = 0;
    for shift in (0..64).step_by(7) {
        let Some((&byte, rest)) = b.split_first() else {
            return Err(invalid("varint truncated"));
        };
        *b = rest;
        raw |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(unzigzag(raw));
        }
    }
    Err(invalid("varint too long"))
}

fn unzigzag(raw: u64) -> i64 {
    (raw >> 1) as i64 ^ -((raw & 1) as i64)
}

fn varint(b: &mut &[u8]) -> Result<i32, BatchError> {
    i32::try_from(varlong(b)?).map_err(|_| invalid("varint out of range"))
}

/// A varint read from a stream, and how many bytes it took.
fn stream_varint(r: &mut impl BufRead, limit: usize) -> Result<(i32, usize), BatchError> {
    let mut raw: u64 = 0;
    for (i, shift) in (0..35).step_by(7).enumerate() {
        let mut byte = [0u8; 1];
        if r.read(&mut byte).map_err(|e| stream_error(e, limit))? == 0 {
            return Err(invalid("record truncated"));
        }
        raw |= u64::from(byte[0] & 0x7f) << shift;
        if byte[0] & 0x80 == 0 {
            let v = i32::try_from(unzigzag(raw)).map_err(|_| invalid("varint out of range"))?;
            return Ok((v, i + 1));
        }
    }
    Err(invalid("varint too long"))
}

fn bytes_field<'a>(b: &mut &'a [u8]) -> Result<Option<&'a [u8]>, BatchError> {
    let len = varint(b)?;
    let Ok(len) = usize::try_from(len) else {
        return Ok(None);
    };
    if b.len() < len {
        return Err(invalid("field truncated"));
    }
    let (field, rest) = b.split_at(len);
    *b = rest;
    Ok(Some(field))
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

    #[test]
    fn a_control_batch_is_a_transactional_control_batch_of_one_record() {
        for commit in [true, false] {
            let b = encode_control_batch(42, 3, commit, 7, 1_000);
            let h = BatchHeader::parse(&b).unwrap();
            assert!(h.is_control() && h.is_transactional());
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (42, 3, -1)
            );
            assert_eq!((h.record_count, h.last_offset_delta), (1, 0));
            assert_eq!(crate::batch::validate_record_set(&b).unwrap().len(), 1);
            assert_eq!(control_kind(&b), Some(commit));
        }
    }
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
        assert_eq!(
            decode_batch(&batch, MAX_PLAIN_BYTES).expect("decodes"),
            records
        );
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
            let decoded = decode_batch(&buf.freeze(), MAX_PLAIN_BYTES).expect("decodes");
            assert_eq!(decoded.len(), 20);
            assert_eq!(decoded[3].offset, 53);
            assert!(decoded
                .iter()
                .all(|r| r.log_append_time && r.timestamp == 7_000));
            assert_eq!(decoded[19].key.as_deref(), Some(&b"key-19"[..]));
        }
    }

    /// A batch of `records` (already framed) compressed with `compression`, its header
    /// claiming `count` records.
    fn compressed(records: &[u8], compression: Compression, count: i32) -> Bytes {
        use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
        let mut body = BytesMut::new();
        let put = |b: &mut BytesMut| {
            b.extend_from_slice(records);
            Ok(())
        };
        match compression {
            Compression::None => body.extend_from_slice(records),
            Compression::Gzip => Gzip::compress(&mut body, put).unwrap(),
            Compression::Snappy => Snappy::compress(&mut body, put).unwrap(),
            Compression::Lz4 => Lz4::compress(&mut body, put).unwrap(),
            Compression::Zstd => Zstd::compress(&mut body, put).unwrap(),
        }
        let codec = match compression {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        };
        let mut b = BytesMut::new();
        b.put_i64(0);
        b.put_i32((HEADER_LEN - 12 + body.len()) as i32);
        b.put_i32(-1);
        b.put_i8(2);
        b.put_u32(0);
        b.put_i16(codec);
        b.put_i32(count - 1);
        b.put_i64(0);
        b.put_i64(0);
        b.put_i64(-1);
        b.put_i16(-1);
        b.put_i32(-1);
        b.put_i32(count);
        b.extend_from_slice(&body);
        b.freeze()
    }

    /// `n` framed records with values of `value_len` zeros.
    fn framed(n: usize, value_len: usize) -> Vec<u8> {
        let mut out = BytesMut::new();
        for i in 0..n {
            let mut r = BytesMut::new();
            r.put_u8(0);
            put_varlong(&mut r, 0);
            put_varint(&mut r, i as i32);
            put_bytes(&mut r, Some(b"k"));
            put_bytes(&mut r, Some(&vec![0u8; value_len]));
            put_varint(&mut r, 0);
            put_varint(&mut out, r.len() as i32);
            out.extend_from_slice(&r);
        }
        out.to_vec()
    }

    const CODECS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    #[test]
    fn every_codec_stops_at_the_cap() {
        // 64 MiB of zeros in one value; a 1 MiB cap must stop each codec early.
        let plain = framed(1, 64 << 20);
        for c in CODECS {
            let batch = compressed(&plain, c, 1);
            let started = std::time::Instant::now();
            let got = for_each_record(&batch, 1 << 20, |_, _| Ok(()));
            assert!(
                matches!(got, Err(BatchError::TooLarge { limit }) if limit == 1 << 20),
                "{c:?}: {got:?}"
            );
            assert!(
                started.elapsed() < std::time::Duration::from_secs(5),
                "{c:?}"
            );
            // Within the cap it decodes.
            let small = compressed(&framed(3, 1000), c, 3);
            let mut seen = Vec::new();
            for_each_record(&small, 1 << 20, |i, r| {
                seen.push((i, r.offset_delta, r.value.map(<[u8]>::len)));
                Ok(())
            })
            .unwrap();
            assert_eq!(
                seen,
                vec![(0, 0, Some(1000)), (1, 1, Some(1000)), (2, 2, Some(1000))]
            );
        }
    }

    #[test]
    fn counts_must_match_the_records_present() {
        let three = framed(3, 10);
        for c in CODECS {
            for claimed in [0, 2, 4, i32::MAX] {
                let batch = compressed(&three, c, claimed);
                let got = for_each_record(&batch, MAX_PLAIN_BYTES, |_, _| Ok(()));
                assert!(
                    matches!(got, Err(BatchError::Invalid { .. })),
                    "{c:?} claiming {claimed}: {got:?}"
                );
            }
            assert!(
                for_each_record(&compressed(&three, c, -1), MAX_PLAIN_BYTES, |_, _| Ok(()))
                    .is_err()
            );
        }
    }

    #[test]
    fn a_record_whose_fields_overrun_or_underrun_its_length_is_invalid() {
        let mut one = framed(1, 10);
        // Claim one byte more than the record has (the batch then ends early), and
        // one byte less (the header count is left over).
        for delta in [1i32, -1] {
            let len = one[0] as i32 / 2 + delta;
            let mut bad = Vec::new();
            put_varint_vec(&mut bad, len);
            bad.extend_from_slice(&one[1..]);
            let got = for_each_record(
                &compressed(&bad, Compression::None, 1),
                MAX_PLAIN_BYTES,
                |_, _| Ok(()),
            );
            assert!(
                matches!(got, Err(BatchError::Invalid { .. })),
                "{delta}: {got:?}"
            );
        }
        // A header count far beyond the bytes: an error, not an allocation.
        one.truncate(one.len() - 1);
        let mut r = one[1..].to_vec();
        r.extend([0xfe, 0xff, 0xff, 0xff, 0x0f]);
        let mut bad = Vec::new();
        put_varint_vec(&mut bad, r.len() as i32);
        bad.extend_from_slice(&r);
        let got = for_each_record(
            &compressed(&bad, Compression::None, 1),
            MAX_PLAIN_BYTES,
            |_, _| Ok(()),
        );
        assert!(matches!(got, Err(BatchError::Invalid { .. })), "{got:?}");
    }

    fn put_varint_vec(b: &mut Vec<u8>, v: i32) {
        let mut m = BytesMut::new();
        put_varint(&mut m, v);
        b.extend_from_slice(&m);
    }

    #[test]
    fn raw_snappy_and_undecodable_streams() {
        let plain = framed(2, 100);
        let raw = snap::raw::Encoder::new().compress_vec(&plain).unwrap();
        let mut batch = BytesMut::from(&compressed(&[], Compression::None, 2)[..]);
        batch[21..23].copy_from_slice(&2i16.to_be_bytes());
        batch.extend_from_slice(&raw);
        let len = (batch.len() - 12) as i32;
        batch[8..12].copy_from_slice(&len.to_be_bytes());
        let mut n = 0;
        for_each_record(&batch, MAX_PLAIN_BYTES, |_, _| {
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 2);
        // A raw block declaring 4 GiB is refused before anything is allocated.
        let mut huge = BytesMut::from(&batch[..HEADER_LEN]);
        huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0]);
        let len = (huge.len() - 12) as i32;
        huge[8..12].copy_from_slice(&len.to_be_bytes());
        let got = for_each_record(&huge, MAX_PLAIN_BYTES, |_, _| Ok(()));
        assert!(matches!(got, Err(BatchError::TooLarge { .. })), "{got:?}");
        // Garbage after the header of each codec.
        for codec in 1..=4i16 {
            let mut b = BytesMut::from(&batch[..HEADER_LEN]);
            b[21..23].copy_from_slice(&codec.to_be_bytes());
            b.extend_from_slice(b"definitely not compressed");
            let len = (b.len() - 12) as i32;
            b[8..12].copy_from_slice(&len.to_be_bytes());
            assert!(
                for_each_record(&b, MAX_PLAIN_BYTES, |_, _| Ok(())).is_err(),
                "codec {codec}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn random_bodies_never_panic(
            codec in 0i16..8,
            count in -2i32..40,
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
        ) {
            let mut b = BytesMut::from(&compressed(&body, Compression::None, count)[..]);
            b[21..23].copy_from_slice(&codec.to_be_bytes());
            let _ = for_each_record(&b, 1 << 16, |_, _| Ok(()));
            let _ = decode_batch(&b.freeze(), 1 << 16);
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
            assert!(
                decode_batch(&b.freeze(), MAX_PLAIN_BYTES).is_err(),
                "cut at {cut}"
            );
        }
    }
}
