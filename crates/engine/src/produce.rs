//! Produce: validate batches, assign offsets, append them to the broker's WAL buffer.
//!
//! [`Engine::append`] does everything up to the buffer and returns a
//! [`PendingProduce`]; awaiting [`PendingProduce::durable`] waits for the flush that
//! makes the data durable. Splitting the two lets a connection append requests in
//! arrival order while their flushes overlap.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use sluice_protocol::batch::{self, BatchError, BatchHeader};
use sluice_protocol::records;
use tokio::sync::oneshot;

use crate::flush::{FlushResult, PendingSlice};
use crate::partition::{ProducerBatch, ProducerState, SequenceCheck};
use crate::{Engine, EngineError, Result, Topic};

/// One partition's records in a produce request.
pub struct PartitionRecords {
    pub topic: Arc<Topic>,
    pub partition: i32,
    pub records: Bytes,
}

/// What a partition's produce came to once durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceAck {
    pub base_offset: i64,
    /// The broker's timestamp when the topic uses LogAppendTime, else -1.
    pub log_append_time: i64,
    pub log_start_offset: i64,
}

/// Per-partition outcomes, some still waiting for their flush.
pub struct PendingProduce {
    results: Vec<Result<ProduceAck>>,
    /// Which results depend on the flush.
    waits: Vec<bool>,
    flush: Option<oneshot::Receiver<FlushResult>>,
}

impl PendingProduce {
    /// Waits until every appended batch is durable (or its flush failed).
    pub async fn durable(self) -> Vec<Result<ProduceAck>> {
        self.durable_within(None).await
    }

    /// Like [`PendingProduce::durable`], but answers `TimedOut` for whatever is not
    /// durable after `limit` (the data may still commit later, as in Kafka).
    pub async fn durable_within(self, limit: Option<Duration>) -> Vec<Result<ProduceAck>> {
        let Some(rx) = self.flush else {
            return self.results;
        };
        let outcome = match limit {
            None => rx.await.unwrap_or(Err(EngineError::ShuttingDown)),
            Some(limit) => match tokio::time::timeout(limit, rx).await {
                Ok(r) => r.unwrap_or(Err(EngineError::ShuttingDown)),
                Err(_) => Err(EngineError::TimedOut),
            },
        };
        match outcome {
            Ok(()) => self.results,
            Err(e) => self
                .results
                .into_iter()
                .zip(self.waits)
                .map(|(r, waits)| if waits { Err(e.clone()) } else { r })
                .collect(),
        }
    }
}

/// A partition's batch, validated and copied, ready for its offsets.
struct Prepared {
    topic: Arc<Topic>,
    partition: i32,
    header: BatchHeader,
    batch: BytesMut,
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
    if h.is_transactional() || h.is_control() {
        return Err(EngineError::InvalidRecord(
            "transactional batches are not supported yet".into(),
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
        let prepared: Vec<Result<Prepared>> = requests
            .into_iter()
            .map(|r| prepare(r, self.cfg.clock.now_ms()))
            .collect();
        let incoming: usize = prepared.iter().flatten().map(|p| p.batch.len()).sum();
        let waited = match limit {
            None => {
                self.wait_for_space(incoming).await;
                true
            }
            Some(limit) => tokio::time::timeout(limit, self.wait_for_space(incoming))
                .await
                .is_ok(),
        };
        if !waited {
            let n = prepared.len();
            return PendingProduce {
                results: prepared
                    .into_iter()
                    .map(|p| p.and(Err(EngineError::TimedOut)))
                    .collect(),
                waits: vec![false; n],
                flush: None,
            };
        }

        let mut results = Vec::with_capacity(prepared.len());
        let mut waits = Vec::with_capacity(prepared.len());
        let mut wal = self.wal.lock().unwrap_or_else(|p| p.into_inner());
        for p in prepared {
            let outcome = p.and_then(|p| self.assign(&mut wal, p));
            waits.push(matches!(outcome, Ok((_, true))));
            results.push(outcome.map(|(ack, _)| ack));
        }
        let flush = waits.iter().any(|w| *w).then(|| {
            let (tx, rx) = oneshot::channel();
            wal.waiters.push(tx);
            rx
        });
        drop(wal);
        if flush.is_some() {
            self.flush_wake.notify_one();
        }
        PendingProduce {
            results,
            waits,
            flush,
        }
    }

    /// Backpressure: waits while the open buffer is full (`flush_bytes`, so objects
    /// stay near that size) or buffered plus in-flight data exceeds the limit.
    async fn wait_for_space(&self, incoming: usize) {
        loop {
            let notified = self.space.notified();
            {
                let wal = self.wal.lock().unwrap_or_else(|p| p.into_inner());
                // An empty buffer admits anything, whatever its size.
                let buffer_open = wal.bytes == 0 || wal.bytes + incoming <= self.cfg.flush_bytes;
                let pending = wal.bytes + wal.inflight_bytes;
                if buffer_open && pending + incoming <= self.cfg.max_pending_bytes.max(incoming) {
                    return;
                }
            }
            notified.await;
        }
    }

    /// Assigns offsets to one partition's batch and buffers it. Returns the ack
    /// and whether it waits for a flush (false only for an already-durable retry).
    fn assign(&self, wal: &mut crate::flush::WalBuffer, p: Prepared) -> Result<(ProduceAck, bool)> {
        let partition = p
            .topic
            .partition(p.partition)
            .cloned()
            .ok_or_else(|| EngineError::unknown_partition(&p.topic.record.name, p.partition))?;
        // Leadership changes under the WAL buffer lock, which is held here.
        partition.ensure_leader()?;
        if wal.closing {
            return Err(EngineError::ShuttingDown);
        }
        if wal.resetting {
            // Offsets restart once the flushes in flight are through.
            return Err(wal
                .abandoned_because
                .clone()
                .unwrap_or(EngineError::FlushFailed("flush in progress failed".into())));
        }
        let mut write = partition.write();
        let h = p.header;
        if h.is_idempotent() {
            let pb = producer_batch(&h, 0, 0);
            let check = match write.producers.get(&h.producer_id) {
                Some(state) => state.check(&pb),
                None => ProducerState::default().check(&pb),
            };
            match check {
                SequenceCheck::Append => {}
                SequenceCheck::Duplicate {
                    base_offset,
                    append_ms,
                } => {
                    // As Kafka, a retry is answered as its original was.
                    let log_append_time = if p.topic.record.log_append_time() {
                        append_ms
                    } else {
                        -1
                    };
                    let read = partition.read();
                    return Ok((
                        ProduceAck {
                            base_offset,
                            log_append_time,
                            log_start_offset: read.log_start_offset,
                        },
                        base_offset >= read.high_watermark,
                    ));
                }
                SequenceCheck::OutOfOrder => {
                    return Err(EngineError::OutOfOrderSequence {
                        producer_id: h.producer_id,
                    })
                }
                SequenceCheck::ProducerFenced => {
                    return Err(EngineError::InvalidProducerEpoch {
                        producer_id: h.producer_id,
                    })
                }
            }
        }

        let now = self.cfg.clock.now_ms();
        let append_time = p.topic.record.log_append_time().then_some(now);
        let base_offset = write.next_offset;
        let slice = wal
            .slices
            .entry((partition.topic_id, partition.index))
            .or_insert_with(|| PendingSlice::new(partition.clone(), base_offset));
        let mut bytes = p.batch;
        batch::assign_offset(&mut bytes, base_offset, 0);
        let mut max_ts = h.max_timestamp;
        if let Some(t) = append_time {
            batch::set_log_append_time(&mut bytes, t);
            max_ts = t;
        }
        if h.is_idempotent() {
            let pb = producer_batch(&h, base_offset, now);
            write.producers.entry(h.producer_id).or_default().record(pb);
            slice.producers.push(pb);
        }
        write.next_offset = base_offset + i64::from(h.record_count);
        slice.last_offset = write.next_offset - 1;
        slice.max_timestamp = slice.max_timestamp.max(max_ts);
        wal.bytes += bytes.len();
        slice.batches.push(bytes.freeze());
        let log_start_offset = partition.read().log_start_offset;
        Ok((
            ProduceAck {
                base_offset,
                log_append_time: append_time.unwrap_or(-1),
                log_start_offset,
            },
            true,
        ))
    }
}

fn producer_batch(h: &BatchHeader, base_offset: i64, append_ms: i64) -> ProducerBatch {
    ProducerBatch {
        append_ms,
        producer_id: h.producer_id,
        epoch: h.producer_epoch,
        first_seq: h.base_sequence,
        last_seq: h.last_sequence(),
        base_offset,
    }
}
