//! Record batches as producers send them (v2, offsets from 0), for the tests of every
//! crate: plain values, idempotent producers, codecs, keys and tombstones, and rich
//! batches that exercise every nullable field.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use sluice_protocol::records;

/// A batch of `values` (no keys, timestamp 1,000), from an idempotent `producer`
/// (id, first sequence) or none.
pub fn batch(values: &[&str], producer: Option<(i64, i32)>) -> Bytes {
    batch_with(values, producer, Compression::None)
}

/// [`batch`] with a codec.
pub fn batch_with(
    values: &[&str],
    producer: Option<(i64, i32)>,
    compression: Compression,
) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let mut r = record(i, None, Some(v.as_bytes()), 1_000);
            r.producer_id = producer.map_or(-1, |p| p.0);
            r.producer_epoch = if producer.is_some() { 0 } else { -1 };
            // kafka-protocol starts a new batch where offset - sequence changes; one
            // batch (as a producer sends) keeps it constant, from -1 without a producer.
            r.sequence = producer.map_or(i as i32 - 1, |p| p.1 + i as i32);
            r
        })
        .collect();
    encode(&records, compression)
}

/// A transactional batch of `values` from producer `id` at `epoch`, its first record
/// at sequence `first_seq`.
pub fn transactional(values: &[&str], id: i64, epoch: i16, first_seq: i32) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let mut r = record(i, None, Some(v.as_bytes()), 1_000);
            r.producer_id = id;
            r.producer_epoch = epoch;
            r.sequence = first_seq + i as i32;
            r.transactional = true;
            r
        })
        .collect();
    encode(&records, Compression::None)
}

/// A batch of one record with a key, at `timestamp`.
pub fn keyed(key: &str, value: &str, timestamp: i64) -> Bytes {
    encode(
        &[record(
            0,
            Some(key.as_bytes()),
            Some(value.as_bytes()),
            timestamp,
        )],
        Compression::None,
    )
}

/// A batch of keyed records (`None`: a tombstone), timestamps from 5,000.
pub fn keyed_records(pairs: &[(&str, Option<&str>)]) -> Bytes {
    let batch: Vec<records::Record> = pairs
        .iter()
        .enumerate()
        .map(|(i, (k, v))| records::Record {
            offset: i as i64,
            timestamp: 5_000 + i as i64,
            log_append_time: false,
            key: Some(Bytes::from(k.to_string())),
            value: v.map(|v| Bytes::from(v.to_string())),
            headers: vec![],
        })
        .collect();
    records::encode_batch(&batch)
}

/// A batch of `n` records whose keys, values and headers exercise every nullable
/// field and repeated header keys (which kafka-protocol's encoder cannot write);
/// `seed` varies them between batches.
pub fn rich(seed: usize, n: usize) -> Bytes {
    let records: Vec<records::Record> = (0..n)
        .map(|i| {
            let k = seed * 100 + i;
            records::Record {
                offset: i as i64,
                timestamp: 1_000_000 + k as i64,
                log_append_time: false,
                key: (!k.is_multiple_of(4)).then(|| Bytes::from(format!("key-{}", k % 10))),
                value: (!k.is_multiple_of(9))
                    .then(|| Bytes::from(format!("value-{k}-{}", "x".repeat(k % 50)))),
                headers: (0..k % 3)
                    .map(|h| {
                        (
                            Bytes::from_static(b"trace"),
                            (h != 1).then(|| Bytes::from(format!("{k}/{h}"))),
                        )
                    })
                    .collect(),
            }
        })
        .collect();
    records::encode_batch(&records)
}

fn record(offset: usize, key: Option<&[u8]>, value: Option<&[u8]>, timestamp: i64) -> Record {
    Record {
        transactional: false,
        control: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: offset as i64,
        sequence: offset as i32 - 1,
        timestamp,
        key: key.map(Bytes::copy_from_slice),
        value: value.map(Bytes::copy_from_slice),
        headers: Default::default(),
        delete_horizon: false,
    }
}

/// Encodes `records` as one v2 batch (the offsets they carry).
pub fn encode(records: &[Record], compression: Compression) -> Bytes {
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encoding a record batch in memory cannot fail");
    buf.freeze()
}
