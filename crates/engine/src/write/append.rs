//! Offset assignment: a validated batch gets the partition's next offsets and joins
//! the WAL buffer, under the buffer's lock (which [`super::WritePath`] holds), so
//! offsets follow the order batches enter the buffer.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use sluice_protocol::batch::{self, BatchHeader};
use tokio::sync::oneshot;

use super::buffer::{FlushResult, PendingSlice, WalBuffer};
use crate::catalog::Topic;
use crate::error::{EngineError, Result};
use crate::keyspace::{MarkerRequest, OpenTxn};
use crate::partition::{Partition, ProducerBatch, ProducerState, SequenceCheck, TxnMarker};

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
    pub(super) fn new(
        results: Vec<Result<ProduceAck>>,
        waits: Vec<bool>,
        flush: Option<oneshot::Receiver<FlushResult>>,
    ) -> Self {
        Self {
            results,
            waits,
            flush,
        }
    }

    /// Every partition refused: those that were valid with `cause`.
    pub(super) fn failed(prepared: Vec<Result<Prepared>>, cause: EngineError) -> Self {
        let n = prepared.len();
        Self {
            results: prepared
                .into_iter()
                .map(|p| p.and(Err(cause.clone())))
                .collect(),
            waits: vec![false; n],
            flush: None,
        }
    }

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
pub(crate) struct Prepared {
    pub topic: Arc<Topic>,
    pub partition: i32,
    pub header: BatchHeader,
    pub batch: BytesMut,
    /// For a transactional batch opening the producer's transaction on this
    /// partition: the producer's marker count when the coordinator's record was
    /// found to include the partition (see [`ProducerState::markers`]).
    pub verified: Option<u64>,
}

/// A marker to write: the control batch ending a producer's transaction on a
/// partition, and the request key its commit deletes.
pub struct MarkerAppend {
    pub partition: Arc<Partition>,
    pub request: MarkerRequest,
    pub key: String,
}

/// Whether `partition` takes appends now: this broker leads it (leadership changes
/// under the WAL buffer lock, which the caller holds), is not handing off, and is not
/// waiting for abandoned flushes to be through (offsets restart after them).
fn writable(wal: &WalBuffer, partition: &Partition) -> Result<()> {
    partition.ensure_leader()?;
    if wal.closing {
        return Err(EngineError::ShuttingDown);
    }
    if wal.resetting {
        return Err(wal
            .abandoned_because
            .clone()
            .unwrap_or(EngineError::FlushFailed("flush in progress failed".into())));
    }
    Ok(())
}

/// Assigns offsets to one partition's batch and buffers it. Returns the ack
/// and whether it waits for a flush (false only for an already-durable retry).
pub(super) fn assign(wal: &mut WalBuffer, p: Prepared, now: i64) -> Result<(ProduceAck, bool)> {
    let partition = p
        .topic
        .partition(p.partition)
        .cloned()
        .ok_or_else(|| EngineError::unknown_partition(&p.topic.record.name, p.partition))?;
    writable(wal, &partition)?;
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
    if h.is_transactional() {
        match write.open_txns.get(&h.producer_id) {
            Some(t) if t.epoch == h.producer_epoch => {}
            Some(_) => {
                return Err(EngineError::InvalidTxnState(
                    "the producer has a transaction of another epoch open here".into(),
                ))
            }
            None => {
                let markers = write.producers.get(&h.producer_id).map_or(0, |s| s.markers);
                if p.verified != Some(markers) {
                    return Err(EngineError::InvalidTxnState(format!(
                        "partition {}-{} is not in an ongoing transaction of producer {} epoch {}",
                        partition.topic, partition.index, h.producer_id, h.producer_epoch
                    )));
                }
            }
        }
    }

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
    if h.is_transactional() {
        write.open_txns.entry(h.producer_id).or_insert(OpenTxn {
            producer_id: h.producer_id,
            epoch: h.producer_epoch,
            first_offset: base_offset,
        });
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
fn producer_batch(h: &BatchHeader, base_offset: i64, append_ms: i64) -> ProducerBatch {
    ProducerBatch {
        append_ms,
        producer_id: h.producer_id,
        epoch: h.producer_epoch,
        first_seq: h.base_sequence,
        last_seq: h.last_sequence(),
        base_offset,
        txn: h.is_transactional(),
    }
}

/// Buffers a marker at the partition's next offset. It closes the producer's open
/// transaction if one is (a marker for a partition with nothing open is written all
/// the same, as Kafka does) and fences the producer's older epochs.
pub(super) fn assign_marker(wal: &mut WalBuffer, m: MarkerAppend, now: i64) -> Result<ProduceAck> {
    let partition = m.partition;
    writable(wal, &partition)?;
    let mut write = partition.write();
    let r = m.request;
    let base_offset = write.next_offset;
    let mut bytes = BytesMut::from(
        &sluice_protocol::records::encode_control_batch(
            r.producer_id,
            r.epoch,
            r.commit,
            r.coordinator_epoch,
            now,
        )[..],
    );
    batch::assign_offset(&mut bytes, base_offset, 0);
    write
        .producers
        .entry(r.producer_id)
        .or_default()
        .marker(r.epoch);
    write.open_txns.remove(&r.producer_id);
    write.next_offset = base_offset + 1;
    let slice = wal
        .slices
        .entry((partition.topic_id, partition.index))
        .or_insert_with(|| PendingSlice::new(partition.clone(), base_offset));
    slice.markers.push(TxnMarker {
        producer_id: r.producer_id,
        epoch: r.epoch,
        commit: r.commit,
        offset: base_offset,
    });
    slice.deletes.push((base_offset, m.key));
    slice.last_offset = base_offset;
    slice.max_timestamp = slice.max_timestamp.max(now);
    wal.bytes += bytes.len();
    slice.batches.push(bytes.freeze());
    let log_start_offset = partition.read().log_start_offset;
    Ok(ProduceAck {
        base_offset,
        log_append_time: -1,
        log_start_offset,
    })
}
