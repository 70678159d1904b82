//! CreatePartitions: grows a topic; new partitions start empty at offset 0.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse, ResponseKind};
use sluice_engine::EngineError;

use crate::coordinator;
use crate::{errors, Broker};

pub async fn handle(broker: &Broker, req: CreatePartitionsRequest) -> ResponseKind {
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let count = t.count;
        let outcome = if coordinator::is_internal(t.name.as_str()) {
            Err(super::delete_topics::internal_topic(t.name.as_str()))
        } else {
            broker
                .engine
                .update_topic(t.name.as_str(), req.validate_only, |record| {
                    if count <= record.partitions {
                        return Err(EngineError::InvalidPartitions {
                            reason: format!(
                                "topic {} has {} partitions; the new count {count} must be larger",
                                record.name, record.partitions
                            ),
                        });
                    }
                    if count > 100_000 {
                        return Err(EngineError::InvalidPartitions {
                            reason: format!("partition count {count} exceeds 100000"),
                        });
                    }
                    record.partitions = count;
                    Ok(())
                })
                .await
        };
        let result = CreatePartitionsTopicResult::default().with_name(t.name);
        results.push(match outcome {
            Ok(_) => result,
            Err(e) => {
                let (code, message) = errors::code_and_message(&e);
                result.with_error_code(code).with_error_message(message)
            }
        });
    }
    ResponseKind::CreatePartitions(CreatePartitionsResponse::default().with_results(results))
}
