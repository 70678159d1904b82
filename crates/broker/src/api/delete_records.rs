//! DeleteRecords: moves partitions' log start offsets up (offset -1 means the high
//! watermark). Records below it are no longer served; the janitor deletes their
//! objects once no partition needs them.

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse, ResponseKind};
use sluice_engine::EngineError;

use crate::coordinator;
use crate::{errors, Broker};

pub async fn handle(broker: &Broker, req: DeleteRecordsRequest) -> ResponseKind {
    let engine = &broker.engine;
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let topic = engine
            .topic(t.name.as_str())
            .filter(|t| !coordinator::is_internal(&t.record.name));
        let mut parts = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let resp = DeleteRecordsPartitionResult::default()
                .with_partition_index(p.partition_index)
                .with_low_watermark(-1);
            let result = match topic.as_ref().and_then(|t| t.partition(p.partition_index)) {
                None => Err(EngineError::unknown_partition(
                    t.name.as_str(),
                    p.partition_index,
                )),
                Some(partition) => {
                    let offset = if p.offset == -1 {
                        partition.read().high_watermark
                    } else {
                        p.offset
                    };
                    engine.advance_log_start(partition, offset).await
                }
            };
            parts.push(match result {
                Ok(low) => resp.with_low_watermark(low),
                Err(e) => resp.with_error_code(errors::code(&e)),
            });
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(parts),
        );
    }
    ResponseKind::DeleteRecords(DeleteRecordsResponse::default().with_topics(topics))
}
