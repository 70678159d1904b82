//! The transaction coordinator (RFC 0010). Transactional ids are sharded over the
//! partitions of [`TRANSACTIONS_TOPIC`] as groups are over theirs; the broker leading
//! shard `s` coordinates every id hashed to `s`.
//!
//! State lives in the metadata store only: each request reads the id's
//! [`TxnRecord`], applies Kafka's state machine and writes it back, comparing the
//! record's revision (two writers never interleave) and this broker's generation (a
//! coordinator that lost the shard writes nothing). Ending a transaction writes the
//! decision and one marker request per partition in one transaction; [`markers`]
//! serves the requests on every partition leader and completes the transaction.
//!
//! Invariants:
//! - A transactional id has one producer id; its epoch only grows, and every epoch
//!   bump fences the older one (at the coordinator here, at the partitions through
//!   the markers that carry it).
//! - A decision (prepare_commit / prepare_abort) is written once, with its marker
//!   requests; it completes only when every request is served.
//! - Offsets committed in a transaction reach the group only when it commits.

pub mod markers;

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use serde::{Deserialize, Serialize};
use sluice_engine::keyspace::{
    self, BrokerRecord, Fence, MarkerRequest, Stored, TxnPartition, TxnRecord, TxnState,
};
use sluice_engine::transactions::TRANSACTIONS_TOPIC;
use sluice_engine::{Engine, EngineError};
use sluice_meta::{Compare, Op, Txn, MAX_TXN_OPS};

use crate::coordinator::offsets::TopicOffsets;
use crate::Broker;

/// Kafka's `transaction.max.timeout.ms` default: a producer asking for more gets
/// INVALID_TRANSACTION_TIMEOUT.
pub const MAX_TIMEOUT_MS: i32 = 900_000;

/// Partitions one transaction may span: its decision and every marker request are
/// one metadata transaction, which carries at most [`MAX_TXN_OPS`] operations.
pub const MAX_PARTITIONS: usize = MAX_TXN_OPS - 2;

/// The offsets a transaction commits for one group, by topic, until it completes
/// (`groups/<shard>/<group>/txn/<transactional-id>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PendingOffsets(pub BTreeMap<String, TopicOffsets>);

impl Stored for PendingOffsets {
    const WHAT: &'static str = "pending transaction offsets";
    fn encode(&self) -> bytes::Bytes {
        keyspace::encode_json(self)
    }
    fn decode(bytes: &[u8]) -> std::result::Result<Self, String> {
        keyspace::decode_json(bytes)
    }
}

/// The shard of a transactional id and its partition, if the topic exists yet.
fn shard_of(
    engine: &Engine,
    id: &str,
) -> Option<(i32, std::sync::Arc<sluice_engine::partition::Partition>)> {
    let topic = engine.topic(TRANSACTIONS_TOPIC)?;
    let shard = keyspace::shard_of(id, topic.record.partitions);
    topic.partition(shard).cloned().map(|p| (shard, p))
}

/// The live broker coordinating `id` (FindCoordinator with key type 1).
pub fn coordinator_of(broker: &Broker, id: &str) -> Result<BrokerRecord, ResponseError> {
    let (shard, partition) =
        shard_of(&broker.engine, id).ok_or(ResponseError::CoordinatorNotAvailable)?;
    crate::coordinator::shard_leader(broker, &partition, shard)
}

/// The shard of `id` and its leader epoch (the coordinator epoch), if this broker
/// coordinates it.
pub fn led_shard(engine: &Engine, id: &str) -> Result<(i32, i32), ResponseError> {
    let (shard, p) = shard_of(engine, id).ok_or(ResponseError::CoordinatorNotAvailable)?;
    p.leader_epoch()
        .map(|epoch| (shard, epoch))
        .ok_or(ResponseError::NotCoordinator)
}

/// Creates the transactions topic if no broker has yet.
pub async fn ensure_topic(engine: &Engine, shards: i32) {
    if engine.topic(TRANSACTIONS_TOPIC).is_some() {
        return;
    }
    match engine
        .create_topic(TRANSACTIONS_TOPIC, shards, -1, BTreeMap::new(), false)
        .await
    {
        Ok(_) | Err(EngineError::TopicAlreadyExists { .. }) => {}
        Err(e) => tracing::warn!(error = %e, "cannot create the transactions topic"),
    }
}

/// What a state change decided: the record to write (none: nothing changes), other
/// writes to make with it, and the answer.
pub struct Change<T> {
    pub record: Option<TxnRecord>,
    pub ops: Vec<Op>,
    pub answer: T,
}

impl<T> Change<T> {
    fn answer(answer: T) -> Self {
        Self {
            record: None,
            ops: Vec::new(),
            answer,
        }
    }
}

/// A transactional id's record as stored, with the context a change needs.
pub struct Current<'a> {
    pub record: Option<TxnRecord>,
    pub shard: i32,
    pub coordinator_epoch: i32,
    pub now_ms: i64,
    pub engine: &'a Engine,
}

/// Reads `id`'s record, lets `change` decide, and writes what it decided, comparing
/// the record's revision and this broker's generation; retried when the record
/// moved in between. NOT_COORDINATOR if this broker does not (or no longer)
/// coordinate the id.
pub async fn update<T>(
    engine: &Engine,
    id: &str,
    mut change: impl FnMut(&Current<'_>) -> Result<Change<T>, ResponseError>,
) -> Result<T, ResponseError> {
    for _ in 0..16 {
        let fence: Fence = engine.fence();
        let (shard, coordinator_epoch) = led_shard(engine, id)?;
        let key = engine.keys().txn(shard, id);
        let stored = engine.meta().get(&key).await.map_err(meta_error)?;
        let (record, rev) = match &stored {
            Some(kv) => (
                Some(TxnRecord::from_kv(kv).map_err(|_| ResponseError::UnknownServerError)?),
                kv.mod_revision,
            ),
            None => (None, 0),
        };
        let current = Current {
            record,
            shard,
            coordinator_epoch,
            now_ms: engine.clock().now_ms(),
            engine,
        };
        let decided = change(&current)?;
        let Some(next) = decided.record else {
            return Ok(decided.answer);
        };
        let mine = match rev {
            0 => Compare::Missing(key.clone()),
            rev => Compare::ModRevision(key.clone(), rev),
        };
        let mut ops = vec![Op::put(key.clone(), next.encode())];
        ops.extend(decided.ops);
        let txn = Txn::when(vec![mine, fence.still_leader()]).then(ops);
        match engine.meta().txn(txn).await {
            Ok(r) if r.succeeded => return Ok(decided.answer),
            Ok(_) => {
                // Either the record moved (try again) or the shard did.
                if fence.generation() != engine.generation() {
                    return Err(ResponseError::NotCoordinator);
                }
            }
            Err(e) => return Err(meta_error(e)),
        }
    }
    Err(ResponseError::ConcurrentTransactions)
}

fn meta_error(e: impl Into<EngineError>) -> ResponseError {
    match e.into() {
        EngineError::NotLeader { .. } => ResponseError::NotCoordinator,
        _ => ResponseError::CoordinatorNotAvailable,
    }
}

/// The marker requests for ending `record`'s transaction (`commit` or not), one per
/// partition, and the decision record.
pub fn decide(
    engine: &Engine,
    id: &str,
    mut record: TxnRecord,
    commit: bool,
    coordinator_epoch: i32,
    now_ms: i64,
) -> (TxnRecord, Vec<Op>) {
    record.state = if commit {
        TxnState::PrepareCommit
    } else {
        TxnState::PrepareAbort
    };
    record.updated_ms = now_ms;
    let request = MarkerRequest {
        producer_id: record.producer_id,
        epoch: record.epoch,
        commit,
        coordinator_epoch,
    };
    let ops = record
        .partitions
        .iter()
        .map(|tp| {
            Op::put(
                engine.keys().marker_request(tp.topic_id, tp.partition, id),
                request.encode(),
            )
        })
        .collect();
    (record, ops)
}

/// Checks a request's producer id and epoch against the record: Kafka's
/// INVALID_PRODUCER_ID_MAPPING for another producer id, PRODUCER_FENCED for an
/// older epoch.
pub fn check_producer(
    record: &TxnRecord,
    producer_id: i64,
    epoch: i16,
) -> Result<(), ResponseError> {
    if record.producer_id != producer_id {
        return Err(ResponseError::InvalidProducerIdMapping);
    }
    if epoch < record.epoch {
        return Err(ResponseError::ProducerFenced);
    }
    if epoch > record.epoch {
        return Err(ResponseError::InvalidProducerEpoch);
    }
    Ok(())
}

/// InitProducerId with a transactional id: a new producer id for a new id; for a
/// known one, the epoch bumped (a new producer id when it would overflow), after
/// aborting a transaction left ongoing (the client retries on
/// CONCURRENT_TRANSACTIONS meanwhile). `expected` is KIP-360's producer id and epoch
/// of a producer recovering its own id, `(-1, -1)` otherwise.
pub async fn init_producer_id(
    engine: &Engine,
    id: &str,
    timeout_ms: i32,
    expected: (i64, i16),
) -> Result<(i64, i16), ResponseError> {
    if timeout_ms <= 0 || timeout_ms > MAX_TIMEOUT_MS {
        return Err(ResponseError::InvalidTransactionTimeout);
    }
    // A fresh producer id, allocated outside the update (it may be retried).
    let fresh = engine
        .allocate_producer_id()
        .await
        .map_err(|_| ResponseError::CoordinatorNotAvailable)?;
    update(engine, id, |c| {
        let Some(record) = c.record.clone() else {
            let record = TxnRecord {
                producer_id: fresh,
                epoch: 0,
                state: TxnState::Empty,
                timeout_ms,
                updated_ms: c.now_ms,
                ..Default::default()
            };
            return Ok(Change {
                answer: Ok((fresh, 0)),
                record: Some(record),
                ops: Vec::new(),
            });
        };
        if expected.0 >= 0 {
            // KIP-360: a retry of an init that already bumped answers the same.
            if record.producer_id == expected.0
                && record.epoch == expected.1 + 1
                && record.state == TxnState::Empty
            {
                return Ok(Change::answer(Ok((record.producer_id, record.epoch))));
            }
            if record.producer_id != expected.0 || record.epoch != expected.1 {
                return Err(ResponseError::ProducerFenced);
            }
        }
        match record.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                Err(ResponseError::ConcurrentTransactions)
            }
            TxnState::Ongoing => {
                // Abort what the old producer left, fencing it with a new epoch.
                let mut fenced = record.clone();
                fenced.epoch = fenced.epoch.saturating_add(1);
                let (next, ops) =
                    decide(c.engine, id, fenced, false, c.coordinator_epoch, c.now_ms);
                Ok(Change {
                    record: Some(next),
                    ops,
                    answer: Err(ResponseError::ConcurrentTransactions),
                })
            }
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                let mut next = record.clone();
                if next.epoch >= i16::MAX - 1 {
                    next.producer_id = fresh;
                    next.epoch = 0;
                } else {
                    next.epoch += 1;
                }
                next.state = TxnState::Empty;
                next.timeout_ms = timeout_ms;
                next.partitions.clear();
                next.groups.clear();
                next.started_ms = 0;
                next.updated_ms = c.now_ms;
                let answer = Ok((next.producer_id, next.epoch));
                Ok(Change {
                    record: Some(next),
                    ops: Vec::new(),
                    answer,
                })
            }
        }
    })
    .await?
}

/// Adds partitions (AddPartitionsToTxn) or a group (AddOffsetsToTxn) to the
/// producer's transaction, starting it if none is ongoing.
pub async fn add(
    engine: &Engine,
    id: &str,
    producer_id: i64,
    epoch: i16,
    partitions: &[TxnPartition],
    group: Option<&str>,
) -> Result<(), ResponseError> {
    update(engine, id, |c| {
        let record = c
            .record
            .clone()
            .ok_or(ResponseError::InvalidProducerIdMapping)?;
        check_producer(&record, producer_id, epoch)?;
        if record.state.preparing() {
            return Err(ResponseError::ConcurrentTransactions);
        }
        let mut next = record.clone();
        if next.state != TxnState::Ongoing {
            next.state = TxnState::Ongoing;
            next.started_ms = c.now_ms;
            next.partitions.clear();
            next.groups.clear();
        }
        for tp in partitions {
            if !next.partitions.contains(tp) {
                next.partitions.push(tp.clone());
            }
        }
        if next.partitions.len() > MAX_PARTITIONS {
            return Err(ResponseError::InvalidRequest);
        }
        if let Some(g) = group {
            if !next.groups.iter().any(|x| x == g) {
                next.groups.push(g.to_string());
            }
        }
        if next == record {
            return Ok(Change::answer(()));
        }
        next.updated_ms = c.now_ms;
        Ok(Change {
            record: Some(next),
            ops: Vec::new(),
            answer: (),
        })
    })
    .await
}

/// Ends the producer's transaction (EndTxn): writes the decision and its marker
/// requests. A retry of a decision already made answers as it did.
pub async fn end(
    engine: &Engine,
    id: &str,
    producer_id: i64,
    epoch: i16,
    commit: bool,
) -> Result<(), ResponseError> {
    update(engine, id, |c| {
        let record = c
            .record
            .clone()
            .ok_or(ResponseError::InvalidProducerIdMapping)?;
        check_producer(&record, producer_id, epoch)?;
        match (record.state, commit) {
            (TxnState::Ongoing, _) => {
                let (next, ops) =
                    decide(c.engine, id, record, commit, c.coordinator_epoch, c.now_ms);
                Ok(Change {
                    record: Some(next),
                    ops,
                    answer: (),
                })
            }
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                Ok(Change::answer(()))
            }
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                Err(ResponseError::ConcurrentTransactions)
            }
            _ => Err(ResponseError::InvalidTxnState),
        }
    })
    .await
}

/// Stores offsets committed in the producer's transaction (TxnOffsetCommit, which
/// the group's coordinator serves, `group_shard` being the group's shard) as pending
/// for `group`; they reach the group when the transaction commits.
pub async fn commit_offsets(
    engine: &Engine,
    id: &str,
    producer_id: i64,
    epoch: i16,
    (group, group_shard): (&str, i32),
    offsets: BTreeMap<String, TopicOffsets>,
) -> Result<(), ResponseError> {
    let (shard, _) = shard_of(engine, id).ok_or(ResponseError::CoordinatorNotAvailable)?;
    let key = engine.keys().group_pending(group_shard, group, id);
    for _ in 0..16 {
        let fence = engine.fence();
        let record_key = engine.keys().txn(shard, id);
        let record = match engine.meta().get(&record_key).await.map_err(meta_error)? {
            Some(kv) => (
                TxnRecord::from_kv(&kv).map_err(|_| ResponseError::UnknownServerError)?,
                kv.mod_revision,
            ),
            None => return Err(ResponseError::InvalidProducerIdMapping),
        };
        check_producer(&record.0, producer_id, epoch)?;
        if record.0.state != TxnState::Ongoing || !record.0.groups.iter().any(|g| g == group) {
            return Err(ResponseError::InvalidTxnState);
        }
        let stored = engine.meta().get(&key).await.map_err(meta_error)?;
        let (mut pending, check) = match &stored {
            Some(kv) => (
                PendingOffsets::from_kv(kv).map_err(|_| ResponseError::UnknownServerError)?,
                Compare::ModRevision(key.clone(), kv.mod_revision),
            ),
            None => (PendingOffsets::default(), Compare::Missing(key.clone())),
        };
        for (topic, o) in &offsets {
            pending
                .0
                .entry(topic.clone())
                .or_default()
                .extend(o.clone());
        }
        // The record's revision too: the offsets belong to this transaction only.
        let txn = Txn::when(vec![
            check,
            Compare::ModRevision(record_key, record.1),
            fence.still_leader(),
        ])
        .then(vec![Op::put(key.clone(), pending.encode())]);
        match engine.meta().txn(txn).await {
            Ok(r) if r.succeeded => return Ok(()),
            Ok(_) if fence.generation() != engine.generation() => {
                return Err(ResponseError::NotCoordinator)
            }
            Ok(_) => {}
            Err(e) => return Err(meta_error(e)),
        }
    }
    Err(ResponseError::ConcurrentTransactions)
}

/// The partitions of `group` with offsets pending in a transaction, by topic: a
/// `require_stable` OffsetFetch answers UNSTABLE_OFFSET_COMMIT for them (KIP-447).
pub async fn pending_partitions(
    engine: &Engine,
    shard: i32,
    group: &str,
) -> sluice_engine::Result<BTreeMap<String, std::collections::BTreeSet<i32>>> {
    let mut out: BTreeMap<String, std::collections::BTreeSet<i32>> = BTreeMap::new();
    for kv in engine
        .meta()
        .range(&engine.keys().group_pendings(shard, group))
        .await?
    {
        for (topic, offsets) in PendingOffsets::from_kv(&kv)?.0 {
            out.entry(topic).or_default().extend(offsets.keys());
        }
    }
    Ok(out)
}
