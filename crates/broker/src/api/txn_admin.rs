//! What `kafka-transactions` and the AdminClient read about transactions:
//! ListTransactions (every broker answers for the shards it coordinates; the client
//! merges), DescribeTransactions (each id's coordinator) and DescribeProducers (each
//! partition's leader).

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{describe_transactions_response, list_transactions_response};
use kafka_protocol::messages::{
    DescribeProducersRequest, DescribeProducersResponse, DescribeTransactionsRequest,
    DescribeTransactionsResponse, ListTransactionsRequest, ListTransactionsResponse, ResponseKind,
    TopicName, TransactionalId,
};
use sluice_engine::keyspace::{Stored, TxnRecord, TxnState};
use sluice_engine::transactions::TRANSACTIONS_TOPIC;

use crate::{errors, str_bytes, transactions, Broker};

const STATES: [TxnState; 6] = [
    TxnState::Empty,
    TxnState::Ongoing,
    TxnState::PrepareCommit,
    TxnState::PrepareAbort,
    TxnState::CompleteCommit,
    TxnState::CompleteAbort,
];

pub async fn list(broker: &Broker, req: ListTransactionsRequest) -> ResponseKind {
    let engine = &broker.engine;
    let resp = ListTransactionsResponse::default();
    let mut states = Vec::new();
    let mut unknown = Vec::new();
    for f in &req.state_filters {
        match STATES.iter().find(|s| s.name() == f.as_str()) {
            Some(s) => states.push(*s),
            None => unknown.push(f.clone()),
        }
    }
    let now = engine.clock().now_ms();
    let mut out = Vec::new();
    let shards = engine
        .topic(TRANSACTIONS_TOPIC)
        .map(|t| {
            t.partitions
                .iter()
                .filter(|p| p.leader_epoch().is_some())
                .map(|p| p.index)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    for shard in shards {
        let kvs = match engine.meta().range(&engine.keys().shard_txns(shard)).await {
            Ok(kvs) => kvs,
            Err(e) => {
                let code = errors::code(&e.into());
                return ResponseKind::ListTransactions(resp.with_error_code(code));
            }
        };
        for kv in kvs {
            let (Some(id), Ok(r)) = (
                engine.keys().txn_of(shard, &kv.key),
                TxnRecord::from_kv(&kv),
            ) else {
                continue;
            };
            let by_state = states.is_empty() || states.contains(&r.state);
            let by_producer = req.producer_id_filters.is_empty()
                || req.producer_id_filters.iter().any(|p| p.0 == r.producer_id);
            // v1: only transactions open longer than the filter (-1: any).
            let by_duration = req.duration_filter < 0
                || (r.state == TxnState::Ongoing && now - r.started_ms >= req.duration_filter);
            if by_state && by_producer && by_duration {
                out.push(
                    list_transactions_response::TransactionState::default()
                        .with_transactional_id(TransactionalId(str_bytes(id)))
                        .with_producer_id(r.producer_id.into())
                        .with_transaction_state(str_bytes(r.state.name())),
                );
            }
        }
    }
    ResponseKind::ListTransactions(
        resp.with_unknown_state_filters(unknown)
            .with_transaction_states(out),
    )
}

pub async fn describe(broker: &Broker, req: DescribeTransactionsRequest) -> ResponseKind {
    let engine = &broker.engine;
    let mut out = Vec::with_capacity(req.transactional_ids.len());
    for id in req.transactional_ids {
        let state = describe_transactions_response::TransactionState::default()
            .with_transactional_id(id.clone())
            .with_producer_id((-1).into())
            .with_producer_epoch(-1)
            .with_transaction_start_time_ms(-1);
        let found = match transactions::led_shard(engine, id.as_str()) {
            Err(e) => Err(e),
            Ok((shard, _)) => match engine
                .meta()
                .get(&engine.keys().txn(shard, id.as_str()))
                .await
            {
                Ok(Some(kv)) => {
                    TxnRecord::from_kv(&kv).map_err(|_| ResponseError::UnknownServerError)
                }
                Ok(None) => Err(ResponseError::TransactionalIdNotFound),
                Err(_) => Err(ResponseError::CoordinatorNotAvailable),
            },
        };
        out.push(match found {
            Err(e) => state.with_error_code(e.code()),
            Ok(r) => {
                let mut topics: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                for tp in &r.partitions {
                    topics
                        .entry(tp.topic.clone())
                        .or_default()
                        .push(tp.partition);
                }
                state
                    .with_transaction_state(str_bytes(r.state.name()))
                    .with_transaction_timeout_ms(r.timeout_ms)
                    .with_transaction_start_time_ms(
                        if r.state == TxnState::Ongoing || r.state.preparing() {
                            r.started_ms
                        } else {
                            -1
                        },
                    )
                    .with_producer_id(r.producer_id.into())
                    .with_producer_epoch(r.epoch)
                    .with_topics(
                        topics
                            .into_iter()
                            .map(|(t, ps)| {
                                describe_transactions_response::TopicData::default()
                                    .with_topic(TopicName(str_bytes(t)))
                                    .with_partitions(ps)
                            })
                            .collect(),
                    )
            }
        });
    }
    ResponseKind::DescribeTransactions(
        DescribeTransactionsResponse::default().with_transaction_states(out),
    )
}

pub fn describe_producers(broker: &Broker, req: DescribeProducersRequest) -> ResponseKind {
    let engine = &broker.engine;
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let topic = engine.topic(t.name.as_str());
            let partitions = t
                .partition_indexes
                .iter()
                .map(|&i| {
                    let out = PartitionResponse::default().with_partition_index(i);
                    let Some(p) = topic.as_ref().and_then(|t| t.partition(i)) else {
                        return out.with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    };
                    let read = match p.read_led() {
                        Ok(read) => read,
                        Err(e) => return out.with_error_code(errors::code(&e)),
                    };
                    let mut active: Vec<ProducerState> = read
                        .producers
                        .iter()
                        .filter_map(|(pid, s)| {
                            let last = s.recent.back()?;
                            Some(
                                ProducerState::default()
                                    .with_producer_id((*pid).into())
                                    .with_producer_epoch(i32::from(s.epoch))
                                    .with_last_sequence(last.last_seq)
                                    .with_last_timestamp(last.append_ms)
                                    .with_coordinator_epoch(-1)
                                    .with_current_txn_start_offset(
                                        read.txns.open(*pid).map_or(-1, |t| t.first_offset),
                                    ),
                            )
                        })
                        .collect();
                    active.sort_by_key(|s| s.producer_id.0);
                    out.with_active_producers(active)
                })
                .collect();
            TopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    ResponseKind::DescribeProducers(DescribeProducersResponse::default().with_topics(topics))
}
