//! DescribeConfigs for topics (every known config, with its source and synonyms)
//! and for brokers (the dynamic broker configs, per broker and cluster-wide).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse, ResponseKind};
use sluice_engine::broker_configs::{self, BrokerDefaults};
use sluice_engine::topics::{config_def, ConfigDef, CONFIGS};
use sluice_engine::TopicRecord;

use crate::{str_bytes, Broker};

pub(crate) const RESOURCE_TOPIC: i8 = 2;
pub(crate) const RESOURCE_BROKER: i8 = 4;

/// Kafka's config sources.
pub(crate) const SOURCE_TOPIC: i8 = 1;
const SOURCE_DYNAMIC_BROKER: i8 = 2;
const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;
const SOURCE_STATIC_BROKER: i8 = 4;
pub(crate) const SOURCE_DEFAULT: i8 = 5;

/// One config's value where it takes effect, and every level that sets it, most
/// specific first (Kafka's synonyms).
pub(crate) struct Resolved<'a> {
    pub value: &'a str,
    pub source: i8,
    pub synonyms: Vec<(&'a str, &'a str, i8)>,
}

/// A topic config as the topic sees it: set on the topic, else a dynamic broker
/// config, else the default.
pub(crate) fn resolve_topic<'a>(record: &'a TopicRecord, def: &'a ConfigDef) -> Resolved<'a> {
    let mut synonyms = Vec::new();
    if let Some(v) = record.configs.get(def.name) {
        synonyms.push((def.name, v.as_str(), SOURCE_TOPIC));
    }
    match broker_configs::broker_synonym(def.name) {
        Some(b) => synonyms.extend(resolve_broker(&record.defaults, b, def.name).synonyms),
        None => synonyms.push((def.name, def.default, SOURCE_DEFAULT)),
    }
    let (_, value, source) = synonyms[0];
    Resolved {
        value,
        source,
        synonyms,
    }
}

/// A broker config on one broker (`defaults.broker` set) or cluster-wide.
fn resolve_broker<'a>(defaults: &'a BrokerDefaults, name: &'a str, topic: &str) -> Resolved<'a> {
    let mut synonyms = Vec::new();
    if let Some(v) = defaults.broker.get(name) {
        synonyms.push((name, v.as_str(), SOURCE_DYNAMIC_BROKER));
    }
    if let Some(v) = defaults.cluster.get(name) {
        synonyms.push((name, v.as_str(), SOURCE_DYNAMIC_DEFAULT_BROKER));
    }
    if let Some(d) = config_def(topic) {
        synonyms.push((name, d.default, SOURCE_DEFAULT));
    }
    let (_, value, source) = synonyms.first().copied().unwrap_or((name, "", 0));
    Resolved {
        value,
        source,
        synonyms,
    }
}

fn entry(
    name: &str,
    r: &Resolved<'_>,
    read_only: bool,
    include_synonyms: bool,
) -> DescribeConfigsResourceResult {
    let mut c = DescribeConfigsResourceResult::default()
        .with_name(str_bytes(name))
        .with_value(Some(str_bytes(r.value)))
        .with_read_only(read_only)
        .with_config_source(r.source);
    if include_synonyms {
        c.synonyms = r
            .synonyms
            .iter()
            .map(|(n, v, s)| {
                DescribeConfigsSynonym::default()
                    .with_name(str_bytes(*n))
                    .with_value(Some(str_bytes(*v)))
                    .with_source(*s)
            })
            .collect();
    }
    c
}

pub async fn handle(broker: &Broker, req: DescribeConfigsRequest) -> ResponseKind {
    let mut results = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let result = DescribeConfigsResult::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone());
        let wanted = |name: &str| {
            r.configuration_keys
                .as_ref()
                .is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
        };
        let result = match r.resource_type {
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
                            let resolved = resolve_topic(&topic.record, d);
                            entry(d.name, &resolved, false, req.include_synonyms)
                        })
                        .collect(),
                ),
            },
            RESOURCE_BROKER => {
                let name = r.resource_name.as_str();
                let id = match parse_broker(name) {
                    Ok(id) => id,
                    Err(message) => {
                        results.push(
                            result
                                .with_error_code(ResponseError::InvalidRequest.code())
                                .with_error_message(Some(str_bytes(message))),
                        );
                        continue;
                    }
                };
                match broker.engine.stored_broker_defaults(id).await {
                    Err(e) => {
                        let (code, message) = crate::errors::code_and_message(&e);
                        result.with_error_code(code).with_error_message(message)
                    }
                    Ok(defaults) => {
                        let mut configs: Vec<DescribeConfigsResourceResult> =
                            broker_configs::TOPIC_DEFAULTS
                                .iter()
                                .filter(|(b, _)| wanted(b))
                                .map(|(b, t)| (b, resolve_broker(&defaults, b, t)))
                                // The entity default lists only what is set on it.
                                .filter(|(_, res)| id.is_some() || res.source != SOURCE_DEFAULT)
                                .map(|(b, res)| entry(b, &res, false, req.include_synonyms))
                                .collect();
                        if let Some(id) = id {
                            let value = id.to_string();
                            for key in ["broker.id", "node.id"].into_iter().filter(|k| wanted(k)) {
                                let res = Resolved {
                                    value: &value,
                                    source: SOURCE_STATIC_BROKER,
                                    synonyms: vec![(key, &value, SOURCE_STATIC_BROKER)],
                                };
                                configs.push(entry(key, &res, true, req.include_synonyms));
                            }
                        }
                        result.with_configs(configs)
                    }
                }
            }
            _ => result
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_error_message(Some(str_bytes("unsupported resource type"))),
        };
        results.push(result);
    }
    ResponseKind::DescribeConfigs(DescribeConfigsResponse::default().with_results(results))
}

/// A broker resource's name: `""` is the cluster-wide default, else a broker id.
pub(crate) fn parse_broker(name: &str) -> Result<Option<i32>, String> {
    if name.is_empty() {
        return Ok(None);
    }
    name.parse::<i32>()
        .ok()
        .filter(|id| *id >= 0)
        .map(Some)
        .ok_or_else(|| format!("broker resource name {name:?} is not a broker id"))
}
