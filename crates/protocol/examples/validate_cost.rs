//! What reading every record of a produced batch costs (the produce path's record
//! validation, `records::for_each_record`): nanoseconds per record and MB/s for a
//! batch of 1,000 records of 1 KiB, uncompressed and with each codec.
//!
//! `cargo run --release -p sluice-protocol --example validate_cost`

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use sluice_protocol::records::{for_each_record, plain_limit};

fn batch(compression: Compression) -> Bytes {
    let records: Vec<Record> = (0..1_000)
        .map(|i| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: -1,
            producer_id: 1,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: i,
            sequence: i as i32,
            timestamp: 1_700_000_000_000 + i,
            key: Some(Bytes::from(format!("key-{i}"))),
            // Text-like values, compressible about as much as JSON logs.
            value: Some(Bytes::from(
                format!("{{\"n\":{i},\"msg\":\"{}\"}}", "lorem ipsum ".repeat(84)).into_bytes()
                    [..1024]
                    .to_vec(),
            )),
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
            compression,
        },
    )
    .expect("encodes");
    buf.freeze()
}

fn main() {
    let limit = plain_limit(1_048_588);
    for (name, c) in [
        ("none", Compression::None),
        ("gzip", Compression::Gzip),
        ("snappy", Compression::Snappy),
        ("lz4", Compression::Lz4),
        ("zstd", Compression::Zstd),
    ] {
        let b = batch(c);
        let rounds = if matches!(c, Compression::None) {
            2_000
        } else {
            200
        };
        let started = Instant::now();
        let mut records = 0usize;
        for _ in 0..rounds {
            for_each_record(&b, limit, |_, r| {
                records += usize::from(r.value.is_some());
                Ok(())
            })
            .expect("valid");
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{name:>6}: {:>7.1} ns/record, {:>7.0} MB/s of records ({} bytes on the wire per batch)",
            secs * 1e9 / records as f64,
            (records * 1024) as f64 / secs / 1e6,
            b.len()
        );
    }
}
