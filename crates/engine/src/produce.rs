//! Produce: validate batches as Kafka's log validator does, then hand them to the
//! write path, which assigns their offsets and appends them to the WAL buffer.
//!
//! [`Engine::append`] does everything up to the buffer and returns a
//! [`PendingProduce`]; awaiting [`PendingProduce::durable`] waits for the flush that
//! makes the data durable. Splitting the two lets a connection append requests in
//! arrival order while their flushes overlap.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use sluice_protocol::batch::{self, BatchError};
use sluice_protocol::records;

use crate::keyspace::{self, Stored, TxnRecord, TxnState};
use crate::transactions::TRANSACTIONS_TOPIC;
use crate::write::Prepared;
pub use crate::write::{MarkerAppend, PendingProduce, ProduceAck};
use crate::{Engine, EngineError, Result, Topic};

/// One partition's records in a produce request.
pub struct PartitionRecords {
    pub topic: Arc<Topic>,
    pub partition: i32,
    pub records: Bytes,
}

fn prepare(req: PartitionRecords, now_ms: i64) -> Result<Prepared> {
    if req.topic.partition(req.partition).is_none() {
        return Err(EngineError::unknown_partition(
            &req.topic.record.name,
            req.partition,
        ));
    }
    let max = req.topic.record.max_message_bytes();
    let compacted = req.topic.record.has_cleanup_policy("compact");
    let mut batches = batch::validate_record_set(&req.records).map_err(refused)?;
    // As Kafka from Produce v3 (the oldest Sluice serves): one batch per partition,
    // so a request is appended or refused whole.
    if batches.len() != 1 {
        return Err(EngineError::InvalidRecord(format!(
            "{} record batches for one partition; produce v3+ carries exactly one",
            batches.len()
        )));
    }
    let (h, bytes) = batches.remove(0);
    if bytes.len() as i64 > max {
        return Err(EngineError::MessageTooLarge {
            size: bytes.len(),
            max,
        });
    }
    if h.is_control() {
        return Err(EngineError::InvalidRecord(
            "control batches are written by the broker, not produced".into(),
        ));
    }
    if h.is_transactional() && !h.is_idempotent() {
        return Err(EngineError::InvalidRecord(
            "transactional batch without a producer id".into(),
        ));
    }
    if h.is_idempotent() && h.base_sequence < 0 {
        return Err(EngineError::InvalidRecord(
            "idempotent batch without a sequence".into(),
        ));
    }
    let window = (!req.topic.record.log_append_time()).then(|| {
        let now = now_ms;
        let before = req
            .topic
            .record
            .config_number::<i64>("message.timestamp.before.max.ms");
        let after = req
            .topic
            .record
            .config_number::<i64>("message.timestamp.after.max.ms");
        (
            now.saturating_sub(before.unwrap_or(i64::MAX)),
            now.saturating_add(after.unwrap_or(i64::MAX)),
        )
    });
    check_records(&bytes, max, compacted, h.base_timestamp, window)?;
    Ok(Prepared {
        topic: req.topic,
        partition: req.partition,
        header: h,
        batch: BytesMut::from(&bytes[..]),
        verified: None,
    })
}

/// Reads every record of a producer's batch, as Kafka's log validator does: exactly
/// `record_count` well-formed records with offset deltas 0..n-1, decompressed (as a
/// stream) to at most [`records::plain_limit`] bytes, each with a key on a compacted
/// topic and, on a CreateTime topic, a timestamp within `window` (from
/// `message.timestamp.before.max.ms` and `message.timestamp.after.max.ms`, KIP-937).
fn check_records(
    batch: &[u8],
    max_message_bytes: i64,
    compacted: bool,
    base_timestamp: i64,
    window: Option<(i64, i64)>,
) -> Result<()> {
    let limit = records::plain_limit(max_message_bytes);
    let mut late = None;
    let mut keyless: Vec<i32> = Vec::new();
    records::for_each_record(batch, limit, |i, r| {
        if let Some((earliest, latest)) = window {
            let t = base_timestamp.saturating_add(r.timestamp_delta);
            if (t < earliest || t > latest) && late.is_none() {
                late = Some(t);
            }
        }
        if usize::try_from(r.offset_delta) != Ok(i) {
            return Err(BatchError::Invalid {
                reason: "record offset deltas do not run 0..record_count",
            });
        }
        if compacted && r.key.is_none() {
            keyless.push(r.offset_delta);
        }
        Ok(())
    })
    .map_err(refused)?;
    if !keyless.is_empty() {
        return Err(EngineError::InvalidRecords {
            reason: "compacted topic cannot accept a record without a key".into(),
            records: keyless,
        });
    }
    match late {
        Some(t) => Err(EngineError::InvalidTimestamp(format!(
            "record timestamp {t} is outside the topic's message.timestamp.before.max.ms / \
             message.timestamp.after.max.ms of the broker's time"
        ))),
        None => Ok(()),
    }
}

/// Kafka's answer to a refused batch: a damaged one is CORRUPT_MESSAGE (the client
/// may retry), one whose records are wrong INVALID_RECORD, one that expands past the
/// cap MESSAGE_TOO_LARGE (the Java producer then splits it).
fn refused(e: BatchError) -> EngineError {
    match e {
        BatchError::Invalid { .. } => EngineError::InvalidRecord(e.to_string()),
        BatchError::TooLarge { limit } => EngineError::DecompressedTooLarge { limit },
        BatchError::Truncated { .. }
        | BatchError::UnsupportedMagic { .. }
        | BatchError::CrcMismatch { .. }
        | BatchError::Decompress { .. } => EngineError::CorruptMessage(e.to_string()),
    }
}

impl Engine {
    /// Validates and appends a produce request's partitions to the WAL buffer.
    pub async fn append(&self, requests: Vec<PartitionRecords>) -> PendingProduce {
        self.append_within(requests, None).await
    }

    /// Like [`Engine::append`], but if the buffer stays full for `limit` (flushes
    /// cannot commit, e.g. the metadata store is unreachable) nothing is appended and
    /// every partition answers `TimedOut`.
    pub async fn append_within(
        &self,
        requests: Vec<PartitionRecords>,
        limit: Option<Duration>,
    ) -> PendingProduce {
        self.append_transactional(None, requests, limit).await
    }

    /// Like [`Engine::append_within`], for a produce request that names its
    /// transactional id: a transactional batch that would open its producer's
    /// transaction on a partition is taken only if the coordinator's record has the
    /// transaction ongoing with that partition in it (KIP-890 part 1), so a late
    /// produce cannot open a transaction no one will end.
    pub async fn append_transactional(
        &self,
        transactional_id: Option<&str>,
        requests: Vec<PartitionRecords>,
        limit: Option<Duration>,
    ) -> PendingProduce {
        let now = self.cfg.clock.now_ms();
        let mut prepared: Vec<Result<Prepared>> =
            requests.into_iter().map(|r| prepare(r, now)).collect();
        for p in &mut prepared {
            if let Ok(ready) = p {
                if ready.header.is_transactional() {
                    if let Err(e) = self.verify(transactional_id, ready).await {
                        *p = Err(e);
                    }
                }
            }
        }
        self.write.append(prepared, limit).await
    }

    /// Marks a transactional batch verified, or refuses it (see
    /// [`Engine::append_transactional`]).
    async fn verify(&self, transactional_id: Option<&str>, p: &mut Prepared) -> Result<()> {
        let h = p.header;
        let partition = p
            .topic
            .partition(p.partition)
            .ok_or_else(|| EngineError::unknown_partition(&p.topic.record.name, p.partition))?;
        let markers = {
            let write = partition.write();
            if write
                .open_txns
                .get(&h.producer_id)
                .is_some_and(|t| t.epoch == h.producer_epoch)
            {
                return Ok(());
            }
            write.producers.get(&h.producer_id).map_or(0, |s| s.markers)
        };
        let Some(id) = transactional_id else {
            return Err(EngineError::InvalidTxnState(
                "a transactional batch in a produce request without a transactional id".into(),
            ));
        };
        let shards = self
            .topic(TRANSACTIONS_TOPIC)
            .map_or(1, |t| t.record.partitions);
        let key = self.keys.txn(keyspace::shard_of(id, shards), id);
        let record = match self.meta.get(&key).await? {
            Some(kv) => TxnRecord::from_kv(&kv)?,
            None => TxnRecord::default(),
        };
        let listed = record
            .partitions
            .iter()
            .any(|tp| tp.topic_id == partition.topic_id && tp.partition == partition.index);
        if record.state == TxnState::Ongoing
            && record.producer_id == h.producer_id
            && record.epoch == h.producer_epoch
            && listed
        {
            p.verified = Some(markers);
            return Ok(());
        }
        if record.producer_id == h.producer_id && record.epoch > h.producer_epoch {
            return Err(EngineError::InvalidProducerEpoch {
                producer_id: h.producer_id,
            });
        }
        Err(EngineError::InvalidTxnState(format!(
            "partition {}-{} is not in an ongoing transaction of {id:?} (producer {} epoch {})",
            partition.topic, partition.index, h.producer_id, h.producer_epoch
        )))
    }

    /// Writes transaction markers on partitions this broker leads (RFC 0010); each
    /// marker's commit deletes its request.
    pub async fn write_markers(&self, markers: Vec<MarkerAppend>) -> PendingProduce {
        self.write.append_markers(markers).await
    }
}
