//! Fetch with long polling: waits for commits (not a timer) until `min_bytes` are
//! available or `max_wait_ms` passes.
//!
//! Fetch sessions (KIP-227): the broker declines to create sessions by answering
//! `session_id = 0`, which every client treats as "keep sending full fetches".
//! An incremental fetch naming a session gets FETCH_SESSION_ID_NOT_FOUND.

use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ResponseKind, TopicName};
use sluice_engine::{Engine, EngineError, Topic};
use std::sync::Arc;

use crate::{errors, has, Broker, Reply};

/// Longest a fetch may wait, whatever the client asks.
const MAX_WAIT: Duration = Duration::from_secs(30);

pub fn handle(broker: &Broker, req: FetchRequest, version: i16) -> Reply {
    if req.session_id != 0 {
        return Reply::Now(Box::new(ResponseKind::Fetch(
            FetchResponse::default().with_error_code(ResponseError::FetchSessionIdNotFound.code()),
        )));
    }
    let engine = broker.engine.clone();
    Reply::Later(Box::pin(async move {
        let wait = Duration::from_millis(req.max_wait_ms.max(0) as u64).min(MAX_WAIT);
        let deadline = tokio::time::Instant::now() + wait;
        let mut commits = engine.commits();
        loop {
            commits.borrow_and_update();
            let (resp, bytes, errored) = read_all(&engine, &req, version).await;
            if bytes >= req.min_bytes.max(1) as usize
                || errored
                || tokio::time::Instant::now() >= deadline
            {
                return ResponseKind::Fetch(resp);
            }
            tokio::select! {
                changed = commits.changed() => if changed.is_err() { return ResponseKind::Fetch(resp) },
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }))
}

/// One pass over the requested partitions.
async fn read_all(
    engine: &Arc<Engine>,
    req: &FetchRequest,
    version: i16,
) -> (FetchResponse, usize, bool) {
    let mut remaining = if req.max_bytes > 0 {
        req.max_bytes as usize
    } else {
        usize::MAX
    };
    let mut total = 0usize;
    let mut errored = false;
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let topic: Option<Arc<Topic>> = if version >= 13 {
            engine.topic_by_id(t.topic_id)
        } else {
            engine.topic(t.topic.as_str())
        };
        let mut parts = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let data = PartitionData::default().with_partition_index(p.partition);
            let Some(topic) = &topic else {
                errored = true;
                let code = if version >= 13 {
                    ResponseError::UnknownTopicId.code()
                } else {
                    ResponseError::UnknownTopicOrPartition.code()
                };
                parts.push(data.with_error_code(code).with_high_watermark(-1));
                continue;
            };
            let result = match topic.partition(p.partition) {
                None => Err(EngineError::UnknownTopicOrPartition {
                    topic: topic.record.name.clone(),
                    partition: p.partition,
                }),
                Some(partition) => {
                    let max = (p.partition_max_bytes.max(0) as usize).min(remaining);
                    if max == 0 {
                        // Response budget spent: report offsets, no records.
                        let read = partition.read();
                        Ok(sluice_engine::fetch::FetchedRecords {
                            high_watermark: read.high_watermark,
                            log_start_offset: read.log_start_offset,
                            records: Default::default(),
                        })
                    } else {
                        engine.read(partition, p.fetch_offset, max).await
                    }
                }
            };
            parts.push(match result {
                Ok(r) => {
                    let n = r.records.len();
                    total += n;
                    remaining = remaining.saturating_sub(n);
                    data.with_high_watermark(r.high_watermark)
                        .with_last_stable_offset(r.high_watermark)
                        .with_log_start_offset(if has(version, 5) {
                            r.log_start_offset
                        } else {
                            -1
                        })
                        .with_records(Some(r.records))
                }
                Err(e) => {
                    errored = true;
                    data.with_error_code(errors::code(&e))
                        .with_high_watermark(-1)
                }
            });
        }
        topics.push(
            if has(version, 13) {
                FetchableTopicResponse::default().with_topic_id(t.topic_id)
            } else {
                FetchableTopicResponse::default().with_topic(TopicName(t.topic.0.clone()))
            }
            .with_partitions(parts),
        );
    }
    (
        FetchResponse::default().with_responses(topics),
        total,
        errored,
    )
}
