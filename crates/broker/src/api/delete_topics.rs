//! DeleteTopics, by name (all versions) or by topic id (v6).

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    DeleteTopicsRequest, DeleteTopicsResponse, ResponseKind, TopicName,
};
use sluice_engine::EngineError;

use crate::coordinator;
use crate::{errors, has, str_bytes, Broker};

/// The groups topic holds every group's state by shard: deleting or growing it
/// would move every group to another shard.
pub fn internal_topic(name: &str) -> EngineError {
    EngineError::InvalidRequest(format!(
        "{name} is an internal topic: it cannot be deleted or given more partitions"
    ))
}

pub async fn handle(broker: &Broker, req: DeleteTopicsRequest, version: i16) -> ResponseKind {
    let engine = &broker.engine;
    let mut targets: Vec<(Option<String>, uuid::Uuid)> = req
        .topic_names
        .iter()
        .map(|n| (Some(n.to_string()), uuid::Uuid::nil()))
        .collect();
    targets.extend(
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.to_string()), t.topic_id)),
    );
    let mut results = Vec::with_capacity(targets.len());
    for (name, id) in targets {
        let name = name.or_else(|| engine.topic_by_id(id).map(|t| t.record.name.clone()));
        let outcome = match &name {
            Some(n) if coordinator::is_internal(n) => Err(internal_topic(n)),
            Some(n) => engine.delete_topic(n).await,
            None => Err(EngineError::unknown_topic(&id.to_string())),
        };
        let result =
            DeletableTopicResult::default().with_name(name.map(|n| TopicName(str_bytes(n))));
        let (id, code, message) = match outcome {
            Ok(id) => (id, 0, None),
            Err(e) => {
                let (code, message) = errors::code_and_message(&e);
                (id, code, message)
            }
        };
        results.push(
            result
                .with_topic_id(if has(version, 6) {
                    id
                } else {
                    uuid::Uuid::nil()
                })
                .with_error_code(code)
                .with_error_message(message.filter(|_| has(version, 5))),
        );
    }
    ResponseKind::DeleteTopics(DeleteTopicsResponse::default().with_responses(results))
}
