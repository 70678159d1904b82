//! The fuzz targets' bodies: each takes any bytes and must return without a panic,
//! a leak or an allocation sized by its input. `fuzz_targets/` runs them under
//! libFuzzer (`cargo +nightly fuzz run <target>`); `tests/replay.rs` runs them on the
//! seed corpora and seeded mutations of them on stable, as part of the test command.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a fuzz target fails by panicking

use bytes::{BufMut, Bytes, BytesMut};
use sluice_engine::compaction::Checkpoint;
use sluice_engine::keyspace::{AssignmentRecord, BrokerRecord, Generation, Manifest, Stored};
use sluice_engine::TopicRecord;
use sluice_meta::EmbeddedStore;
use sluice_protocol::api::SUPPORTED;
use sluice_protocol::codec::decode_request;
use sluice_protocol::{batch, records};
use sluice_storage::wal::read_slices;

/// Request decoding: any frame, at every API and version the broker advertises.
/// The first two bytes pick the API and version (so every advertised pair is
/// reached); the rest is the frame after its fixed header. Decoding must return a
/// request or an error: no panic, no allocation sized by the wire.
pub fn request(data: &[u8]) {
    // The frame as a client sent it.
    let _ = decode_request(Bytes::copy_from_slice(data));
    let [pick, v, rest @ ..] = data else {
        return;
    };
    let (api, min, max) = SUPPORTED[usize::from(*pick) % SUPPORTED.len()];
    let version = min + (i16::from(*v) % (max - min + 1));
    let mut frame = BytesMut::with_capacity(8 + rest.len());
    frame.put_i16(api as i16);
    frame.put_i16(version);
    frame.put_i32(1);
    frame.put_slice(rest);
    let _ = decode_request(frame.freeze());
}

/// Batch header: base offset (8), length (4), leader epoch (4), magic (1), CRC (4).
const CRC_AT: usize = 17;
const CRC_FROM: usize = 21;
const HEADER: usize = 61;

fn check(set: &Bytes) {
    let limit = records::plain_limit(1_048_588);
    let Ok(batches) = batch::validate_record_set(set) else {
        return;
    };
    for (h, bytes) in batches {
        let mut n = 0usize;
        let walked = records::for_each_record(&bytes, limit, |_, r| {
            n += 1;
            let _ = r.headers().count();
            Ok(())
        });
        if walked.is_ok() {
            assert_eq!(
                n, h.record_count as usize,
                "walked {n} of {} records",
                h.record_count
            );
        }
        if let Ok(decoded) = records::decode_batch(&bytes, limit) {
            assert_eq!(decoded.len(), h.record_count as usize);
        }
    }
    for b in batch::iter_batches(set) {
        let _ = b;
    }
}

/// Record-batch validation and decompression, as Produce runs it, and the stored
/// batch decoder every read path uses. Each input is tried as sent and with its
/// length and CRC fixed up, so that mutations reach the records and the codecs
/// rather than stopping at the checksum. The decompressed size is capped at the
/// produce limit for a 1 MiB `max.message.bytes`.
pub fn record_batch(data: &[u8]) {
    check(&Bytes::copy_from_slice(data));
    if data.len() >= HEADER {
        let mut fixed = data.to_vec();
        let len = (fixed.len() - 12) as i32;
        fixed[8..12].copy_from_slice(&len.to_be_bytes());
        fixed[16] = 2;
        let crc = crc32c::crc32c(&fixed[CRC_FROM..]);
        fixed[CRC_AT..CRC_FROM].copy_from_slice(&crc.to_be_bytes());
        check(&Bytes::from(fixed));
    }
}

const TRAILER: usize = 4 + 4 + 8;

/// The write-ahead object reader: any object, as stored and with its trailer's
/// checksum fixed up so that mutations reach the slice index.
pub fn wal_object(data: &[u8]) {
    if let Ok(slices) = read_slices("fuzz", data) {
        for s in slices {
            assert!(s.start + s.len <= data.len() as u64);
        }
    }
    if data.len() >= 8 + TRAILER {
        let mut fixed = data.to_vec();
        fixed[..8].copy_from_slice(b"SLWAL001");
        let n = fixed.len();
        fixed[n - 8..].copy_from_slice(b"SLWALEND");
        let t = n - TRAILER;
        let crc = crc32c::crc32c(&fixed[..t + 4]);
        fixed[t + 4..t + 8].copy_from_slice(&crc.to_be_bytes());
        if let Ok(slices) = read_slices("fuzz", &fixed) {
            for s in slices {
                assert!(s.start + s.len <= fixed.len() as u64);
            }
        }
    }
}

/// Records read back from the metadata store: manifests, checkpoints, topic and
/// assignment records, group offsets. Any value must decode or fail cleanly, and
/// what decodes must encode again.
pub fn metadata_records(data: &[u8]) {
    if let Ok(m) = Manifest::decode(data) {
        let _ = Manifest::decode(&m.encode()).expect("a manifest re-encodes");
    }
    if let Ok(c) = Checkpoint::decode(data) {
        let _ = Checkpoint::decode(&c.encode()).expect("a checkpoint re-encodes");
    }
    // Every record type of the keyspace, through the one codec the broker uses.
    let _ = TopicRecord::decode(data);
    let _ = AssignmentRecord::decode(data);
    let _ = BrokerRecord::decode(data);
    if let Ok(g) = Generation::decode(data) {
        let _ = Generation::decode(&g.encode()).expect("a generation re-encodes");
    }
    let _ = i64::decode(data);
}

/// The embedded store's log replay (what `EmbeddedStore::open` does with its file).
/// The input is replayed as it is, and framed as records with correct checksums so
/// that mutations reach the record decoder: chunks split at 0xFF bytes become one
/// record each.
pub fn embedded_log(data: &[u8]) {
    if let Ok(valid) = EmbeddedStore::replay_log(data) {
        assert!(valid <= data.len() as u64);
    }
    let mut framed = Vec::with_capacity(data.len() + 64);
    for payload in data.split(|b| *b == 0xff) {
        framed.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        framed.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
        framed.extend_from_slice(payload);
    }
    let _ = EmbeddedStore::replay_log(&framed);
}
