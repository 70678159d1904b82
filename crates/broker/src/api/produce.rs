//! Produce: appends in arrival order now, answers once the data is durable.
//!
//! `acks` 0, 1 and all are equally durable when acknowledged: there are no
//! followers, an acknowledgement means object written and manifest committed.

use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind};
use sluice_engine::produce::{PartitionRecords, ProduceAck};
use sluice_engine::{EngineError, Result};

use crate::{errors, has, str_bytes, Broker, Reply};

pub async fn handle(broker: &Broker, req: ProduceRequest, version: i16) -> Reply {
    let engine = &broker.engine;
    if !matches!(req.acks, -1..=1) {
        let code = ResponseError::InvalidRequiredAcks.code();
        return Reply::Now(Box::new(ResponseKind::Produce(reject_all(req, code))));
    }
    // (topic position, partition, Err if rejected before the engine)
    let mut slots: Vec<(usize, i32, Option<EngineError>)> = Vec::new();
    let mut appends = Vec::new();
    let mut names = Vec::with_capacity(req.topic_data.len());
    for (ti, t) in req.topic_data.into_iter().enumerate() {
        // The coordinators' topics hold no records.
        let topic = engine
            .topic(t.name.as_str())
            .filter(|t| !crate::coordinator::is_internal(&t.record.name));
        names.push(t.name);
        for p in t.partition_data {
            let rejected = match (&topic, p.records) {
                (None, _) => Some(EngineError::unknown_partition(names[ti].as_str(), p.index)),
                (Some(_), None) => Some(EngineError::CorruptMessage("no records".into())),
                (Some(topic), Some(records)) => {
                    appends.push(PartitionRecords {
                        topic: topic.clone(),
                        partition: p.index,
                        records,
                    });
                    None
                }
            };
            slots.push((ti, p.index, rejected));
        }
    }
    // Kafka's produce timeout; a zero or tiny one still gets a moment to commit.
    let limit = Duration::from_millis(u64::try_from(req.timeout_ms).unwrap_or(0).max(1000));
    let started = Instant::now();
    let transactional_id = req.transactional_id.as_ref().map(|t| t.to_string());
    let pending = engine
        .append_transactional(transactional_id.as_deref(), appends, Some(limit))
        .await;
    if req.acks == 0 {
        // Nothing is sent back; errors surface to the client as missing data, as in Kafka.
        tokio::spawn(pending.durable());
        return Reply::None;
    }
    Reply::Later(Box::pin(async move {
        let left = limit.saturating_sub(started.elapsed());
        let mut acks = pending.durable_within(Some(left)).await.into_iter();
        let mut topics: Vec<TopicProduceResponse> = names
            .into_iter()
            .map(|name| TopicProduceResponse::default().with_name(name))
            .collect();
        for (ti, partition, rejected) in slots {
            let result: Result<ProduceAck> = match rejected {
                Some(e) => Err(e),
                None => acks.next().unwrap_or(Err(EngineError::ShuttingDown)),
            };
            let resp = PartitionProduceResponse::default().with_index(partition);
            let resp = match result {
                Ok(ack) => resp
                    .with_base_offset(ack.base_offset)
                    .with_log_append_time_ms(ack.log_append_time)
                    .with_log_start_offset(if has(version, 5) {
                        ack.log_start_offset
                    } else {
                        -1
                    }),
                Err(e) => {
                    let (code, message) = errors::code_and_message(&e);
                    let resp = resp
                        .with_base_offset(-1)
                        .with_error_code(code)
                        .with_error_message(message.filter(|_| has(version, 8)));
                    match &e {
                        // Which records were at fault (v8+, KIP-467): clients fail
                        // those and send the rest again.
                        EngineError::InvalidRecords { reason, records } if has(version, 8) => resp
                            .with_record_errors(
                                records
                                    .iter()
                                    .map(|i| {
                                        BatchIndexAndErrorMessage::default()
                                            .with_batch_index(*i)
                                            .with_batch_index_error_message(Some(str_bytes(
                                                reason.clone(),
                                            )))
                                    })
                                    .collect(),
                            ),
                        _ => resp,
                    }
                }
            };
            topics[ti].partition_responses.push(resp);
        }
        ResponseKind::Produce(ProduceResponse::default().with_responses(topics))
    }))
}

/// Every partition of the request answered with `code`.
fn reject_all(req: ProduceRequest, code: i16) -> ProduceResponse {
    ProduceResponse::default().with_responses(
        req.topic_data
            .into_iter()
            .map(|t| {
                let parts = t
                    .partition_data
                    .iter()
                    .map(|p| {
                        PartitionProduceResponse::default()
                            .with_index(p.index)
                            .with_error_code(code)
                            .with_base_offset(-1)
                    })
                    .collect();
                TopicProduceResponse::default()
                    .with_name(t.name)
                    .with_partition_responses(parts)
            })
            .collect(),
    )
}
