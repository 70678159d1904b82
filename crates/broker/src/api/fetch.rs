//! Fetch: long polling that wakes on commits (not a timer) until `min_bytes` are
//! available or `max_wait_ms` passes, and fetch sessions (KIP-227, see
//! [`crate::fetch_session`]).

use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ResponseKind, TopicName};
use sluice_engine::{Engine, EngineError};
use uuid::Uuid;

use crate::fetch_session::{Sent, SessionError, SessionKey, SessionPartition, SessionView};
use crate::{errors, has, str_bytes, Broker, Reply};

/// Longest a fetch may wait, whatever the client asks.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// Fetch versions before this one have no sessions.
const SESSIONS_SINCE: i16 = 7;

/// Kafka's broker-side `fetch.max.bytes` (55 MiB): the most a response carries,
/// whatever the request asks for.
pub const FETCH_MAX_BYTES: usize = 55 << 20;

pub fn handle(broker: &Broker, req: FetchRequest, version: i16) -> Reply {
    let by_id = has(version, 13);
    let key = |topic: &TopicName, topic_id: Uuid, partition: i32| SessionKey {
        topic: if by_id {
            String::new()
        } else {
            topic.to_string()
        },
        topic_id: if by_id { topic_id } else { Uuid::nil() },
        partition,
    };
    let requested: Vec<(SessionKey, SessionPartition)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| {
                let part = SessionPartition {
                    fetch_offset: p.fetch_offset,
                    max_bytes: p.partition_max_bytes,
                    sent: None,
                };
                (key(&t.topic, t.topic_id, p.partition), part)
            })
        })
        .collect();
    let sessions = &broker.sessions;
    let full = |id: i32, partitions| SessionView {
        id,
        incremental: false,
        partitions,
    };
    let view = match (req.session_id, req.session_epoch) {
        (id, -1) => {
            if id != 0 {
                sessions.close(id);
            }
            full(0, requested)
        }
        (id, 0) => {
            if id != 0 {
                sessions.close(id);
            }
            if has(version, SESSIONS_SINCE) {
                full(sessions.create(requested.clone()), requested)
            } else {
                full(0, requested)
            }
        }
        (id, epoch) => {
            let changed = requested
                .into_iter()
                .map(|(k, p)| (k, p.fetch_offset, p.max_bytes))
                .collect();
            let forgotten = req
                .forgotten_topics_data
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| key(&t.topic, t.topic_id, *p)))
                .collect();
            match sessions.update(id, epoch, changed, forgotten) {
                Ok(view) => view,
                Err(e) => {
                    let code = match e {
                        SessionError::NotFound => ResponseError::FetchSessionIdNotFound,
                        SessionError::InvalidEpoch => ResponseError::InvalidFetchSessionEpoch,
                    };
                    return Reply::Now(Box::new(ResponseKind::Fetch(
                        FetchResponse::default().with_error_code(code.code()),
                    )));
                }
            }
        }
    };

    // Fetch v4+ carries the isolation level: 1 is read_committed.
    let committed = req.isolation_level == 1;
    let broker = broker.clone();
    Reply::Later(Box::pin(async move {
        let engine = &broker.engine;
        let wait = Duration::from_millis(req.max_wait_ms.max(0) as u64).min(MAX_WAIT);
        let deadline = tokio::time::Instant::now() + wait;
        let mut commits = engine.commits();
        let results = loop {
            commits.borrow_and_update();
            let (results, bytes, errored) = read_all(engine, &view, req.max_bytes, committed).await;
            if bytes >= req.min_bytes.max(1) as usize
                || errored
                || tokio::time::Instant::now() >= deadline
            {
                break results;
            }
            tokio::select! {
                changed = commits.changed() => if changed.is_err() { break results },
                _ = tokio::time::sleep_until(deadline) => {}
            }
        };
        ResponseKind::Fetch(respond(&broker, &view, results, version, committed))
    }))
}

/// One partition's outcome in a pass.
type PartitionResult = Result<sluice_engine::read::FetchedRecords, EngineError>;

/// One pass over the session's (or request's) partitions.
async fn read_all(
    engine: &Engine,
    view: &SessionView,
    max_bytes: i32,
    committed: bool,
) -> (Vec<PartitionResult>, usize, bool) {
    // Kafka's rule: the response holds at most min(max_bytes, fetch.max.bytes), but
    // for the first batch of the first partition with data, which may exceed it.
    let mut remaining = usize::try_from(max_bytes).unwrap_or(0).min(FETCH_MAX_BYTES);
    let mut total = 0usize;
    let mut errored = false;
    let mut results = Vec::with_capacity(view.partitions.len());
    for (key, p) in &view.partitions {
        let topic = if key.topic.is_empty() {
            engine.topic_by_id(key.topic_id)
        } else {
            engine.topic(&key.topic)
        };
        let partition = topic.as_ref().and_then(|t| t.partition(key.partition));
        let result = match partition {
            None => Err(if key.topic.is_empty() {
                EngineError::unknown_partition(&key.topic_id.to_string(), key.partition)
            } else {
                EngineError::unknown_partition(&key.topic, key.partition)
            }),
            Some(partition) => {
                let max = usize::try_from(p.max_bytes).unwrap_or(0).min(remaining);
                let at_least_one = total == 0;
                if max == 0 && !at_least_one {
                    // The response budget is spent: report offsets without records.
                    partition
                        .read_led()
                        .map(|read| sluice_engine::read::FetchedRecords {
                            high_watermark: read.high_watermark,
                            last_stable_offset: read.last_stable_offset(),
                            log_start_offset: read.log_start_offset,
                            records: Default::default(),
                            aborted: Vec::new(),
                        })
                } else {
                    engine
                        .read_up_to(partition, p.fetch_offset, max, at_least_one, committed)
                        .await
                }
            }
        };
        match &result {
            Ok(r) => {
                total += r.records.len();
                remaining = remaining.saturating_sub(r.records.len());
            }
            Err(_) => errored = true,
        }
        results.push(result);
    }
    (results, total, errored)
}

/// Builds the response; an incremental one carries only partitions with news.
fn respond(
    broker: &Broker,
    view: &SessionView,
    results: Vec<PartitionResult>,
    version: i16,
    committed: bool,
) -> FetchResponse {
    let mut topics: Vec<FetchableTopicResponse> = Vec::new();
    let mut sent = Vec::new();
    for ((key, p), result) in view.partitions.iter().zip(results) {
        let data = PartitionData::default().with_partition_index(key.partition);
        let data = match result {
            Ok(r) => {
                let unchanged = p.sent == Some((r.high_watermark, r.log_start_offset));
                if view.incremental && r.records.is_empty() && unchanged {
                    continue;
                }
                sent.push(Sent {
                    key: key.clone(),
                    high_watermark: r.high_watermark,
                    log_start_offset: r.log_start_offset,
                    had_records: !r.records.is_empty(),
                });
                let aborted = committed.then(|| {
                    r.aborted
                        .iter()
                        .map(|a| {
                            AbortedTransaction::default()
                                .with_producer_id(a.producer_id.into())
                                .with_first_offset(a.first_offset)
                        })
                        .collect()
                });
                data.with_high_watermark(r.high_watermark)
                    .with_last_stable_offset(r.last_stable_offset)
                    .with_aborted_transactions(aborted)
                    .with_log_start_offset(if has(version, 5) {
                        r.log_start_offset
                    } else {
                        -1
                    })
                    .with_records(Some(r.records))
            }
            Err(e) => {
                let code = match e {
                    EngineError::UnknownTopicOrPartition { .. } if key.topic.is_empty() => {
                        ResponseError::UnknownTopicId.code()
                    }
                    e => errors::code(&e),
                };
                data.with_error_code(code).with_high_watermark(-1)
            }
        };
        let same_topic = topics.last().is_some_and(|t| {
            if key.topic.is_empty() {
                t.topic_id == key.topic_id
            } else {
                t.topic.as_str() == key.topic
            }
        });
        if !same_topic {
            topics.push(if key.topic.is_empty() {
                FetchableTopicResponse::default().with_topic_id(key.topic_id)
            } else {
                FetchableTopicResponse::default()
                    .with_topic(TopicName(str_bytes(key.topic.clone())))
            });
        }
        if let Some(t) = topics.last_mut() {
            t.partitions.push(data);
        }
    }
    if view.id != 0 {
        broker.sessions.record_sent(view.id, &sent);
    }
    FetchResponse::default()
        .with_session_id(if has(version, SESSIONS_SINCE) {
            view.id
        } else {
            0
        })
        .with_responses(topics)
}
