//! CreateTopics, with configs and `validate_only`.

use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse, ResponseKind};
use sluice_engine::topics::CONFIGS;

use super::describe_configs::resolve_topic;
use crate::{config_map, errors, has, str_bytes, Broker};

pub async fn handle(broker: &Broker, req: CreateTopicsRequest, version: i16) -> ResponseKind {
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let configs = config_map(t.configs.iter().map(|c| (&c.name, &c.value)));
        let result = CreatableTopicResult::default().with_name(t.name.clone());
        let outcome = broker
            .engine
            .create_topic(
                t.name.as_str(),
                // Manual assignments fix the partition count (Kafka sends -1 then).
                if t.assignments.is_empty() {
                    t.num_partitions
                } else {
                    t.assignments.len() as i32
                },
                t.replication_factor,
                configs,
                req.validate_only,
            )
            .await;
        results.push(match outcome {
            Ok(_) if !has(version, 5) => result,
            Ok(topic) => result
                .with_topic_id(if has(version, 7) {
                    topic.record.id
                } else {
                    uuid::Uuid::nil()
                })
                .with_num_partitions(topic.record.partitions)
                .with_replication_factor(1)
                .with_configs(Some(
                    CONFIGS
                        .iter()
                        .map(|d| {
                            let resolved = resolve_topic(&topic.record, d);
                            CreatableTopicConfigs::default()
                                .with_name(str_bytes(d.name))
                                .with_value(Some(str_bytes(resolved.value)))
                                .with_config_source(resolved.source)
                        })
                        .collect(),
                )),
            Err(e) => {
                let (code, message) = errors::code_and_message(&e);
                result
                    .with_error_code(code)
                    .with_error_message(message)
                    .with_num_partitions(-1)
                    .with_replication_factor(-1)
            }
        });
    }
    ResponseKind::CreateTopics(CreateTopicsResponse::default().with_topics(results))
}
