//! DescribeConfigs for topics (every known config, with its source) and the broker.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse, ResponseKind};
use sluice_engine::topics::CONFIGS;

use super::create_topics::{SOURCE_DEFAULT, SOURCE_TOPIC};
use crate::{str_bytes, Broker};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

pub fn handle(broker: &Broker, req: DescribeConfigsRequest) -> ResponseKind {
    let results = req
        .resources
        .into_iter()
        .map(|r| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let wanted = |name: &str| {
                r.configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
            };
            match r.resource_type {
                RESOURCE_TOPIC => match broker.engine.topic(r.resource_name.as_str()) {
                    None => result
                        .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                        .with_error_message(Some(str_bytes(format!(
                            "unknown topic {}",
                            r.resource_name.as_str()
                        )))),
                    Some(topic) => result.with_configs(
                        CONFIGS
                            .iter()
                            .filter(|d| wanted(d.name))
                            .map(|d| {
                                let set = topic.record.configs.get(d.name);
                                let source = if set.is_some() {
                                    SOURCE_TOPIC
                                } else {
                                    SOURCE_DEFAULT
                                };
                                let value = set.map_or(d.default, |v| v.as_str());
                                let mut c = DescribeConfigsResourceResult::default()
                                    .with_name(str_bytes(d.name))
                                    .with_value(Some(str_bytes(value)))
                                    .with_config_source(source);
                                if req.include_synonyms {
                                    c.synonyms = vec![DescribeConfigsSynonym::default()
                                        .with_name(str_bytes(d.name))
                                        .with_value(Some(str_bytes(value)))
                                        .with_source(source)];
                                }
                                c
                            })
                            .collect(),
                    ),
                },
                RESOURCE_BROKER => result,
                _ => result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(str_bytes("unsupported resource type"))),
            }
        })
        .collect();
    ResponseKind::DescribeConfigs(DescribeConfigsResponse::default().with_results(results))
}
