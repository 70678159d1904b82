//! ListOffsets: earliest, latest, max timestamp, and first offset at a timestamp.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse, ResponseKind};
use sluice_engine::EngineError;

use crate::{errors, has, Broker};

pub async fn handle(broker: &Broker, req: ListOffsetsRequest, version: i16) -> ResponseKind {
    let engine = &broker.engine;
    // ListOffsets v2+ carries the isolation level: 1 is read_committed.
    let committed = req.isolation_level == 1;
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let topic = engine.topic(t.name.as_str());
        let mut parts = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let resp = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_timestamp(-1)
                .with_offset(-1);
            let partition = topic.as_ref().and_then(|t| t.partition(p.partition_index));
            let result = match partition {
                None => Err(EngineError::unknown_partition(
                    t.name.as_str(),
                    p.partition_index,
                )),
                Some(partition) => {
                    engine
                        .list_offset_isolated(partition, p.timestamp, committed)
                        .await
                }
            };
            parts.push(match result {
                Ok(Some(found)) => {
                    let resp = resp
                        .with_offset(found.offset)
                        .with_timestamp(found.timestamp);
                    if has(version, 4) {
                        resp.with_leader_epoch(0)
                    } else {
                        resp
                    }
                }
                Ok(None) => resp,
                Err(e) => resp.with_error_code(errors::code(&e)),
            });
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(parts),
        );
    }
    ResponseKind::ListOffsets(ListOffsetsResponse::default().with_topics(topics))
}
