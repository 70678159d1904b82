//! AlterConfigs (replace a topic's or a broker's dynamic configs) and
//! IncrementalAlterConfigs (SET / DELETE / APPEND / SUBTRACT per key). Broker
//! resources are the dynamic broker configs of `sluice_engine::broker_configs`
//! (resource name `""` for the cluster-wide default); a refused broker config gets
//! `INVALID_REQUEST` with Kafka's message, as Kafka answers.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse as IncrementalResult;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;
use sluice_engine::{EngineError, Result};

use super::describe_configs::{parse_broker, RESOURCE_BROKER, RESOURCE_TOPIC};
use crate::{config_map, errors, str_bytes, Broker};

/// Applies `change` to a topic's explicit configs or a broker's dynamic configs;
/// returns (code, message). A resource that names one config twice (`names`) is
/// refused whole, as Kafka refuses it.
async fn alter<'a>(
    broker: &Broker,
    resource_type: i8,
    name: &StrBytes,
    names: impl Iterator<Item = &'a StrBytes>,
    validate_only: bool,
    change: impl Fn(&mut BTreeMap<String, String>) -> Result<()>,
) -> (i16, Option<StrBytes>) {
    let invalid = |message: String| {
        (
            ResponseError::InvalidRequest.code(),
            Some(str_bytes(message)),
        )
    };
    let mut seen = std::collections::HashSet::new();
    if names.into_iter().any(|n| !seen.insert(n.as_str())) {
        return invalid("Error due to duplicate config keys".into());
    }
    if resource_type == RESOURCE_BROKER {
        let id = match parse_broker(name.as_str()) {
            Ok(id) => id,
            Err(message) => return invalid(message),
        };
        let outcome = broker
            .engine
            .update_broker_configs(id, validate_only, |configs| {
                change(configs).map_err(|e| match e {
                    EngineError::InvalidConfig { name, reason } => {
                        format!("Invalid config {name}: {reason}")
                    }
                    other => other.to_string(),
                })
            })
            .await;
        return match outcome {
            Ok(Ok(())) => (0, None),
            Ok(Err(refused)) => invalid(refused),
            Err(e) => errors::code_and_message(&e),
        };
    }
    if resource_type != RESOURCE_TOPIC {
        return invalid("only topic and broker configs can be altered".into());
    }
    match broker
        .engine
        .update_topic(name.as_str(), validate_only, |record| {
            change(&mut record.configs)
        })
        .await
    {
        Ok(_) => (0, None),
        Err(e) => errors::code_and_message(&e),
    }
}

pub async fn handle(broker: &Broker, req: AlterConfigsRequest) -> ResponseKind {
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let configs = config_map(r.configs.iter().map(|c| (&c.name, &c.value)));
        let (code, message) = alter(
            broker,
            r.resource_type,
            &r.resource_name,
            r.configs.iter().map(|c| &c.name),
            req.validate_only,
            |c| {
                *c = configs.clone();
                Ok(())
            },
        )
        .await;
        responses.push(
            AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name)
                .with_error_code(code)
                .with_error_message(message),
        );
    }
    ResponseKind::AlterConfigs(AlterConfigsResponse::default().with_responses(responses))
}

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

pub async fn handle_incremental(
    broker: &Broker,
    req: IncrementalAlterConfigsRequest,
) -> ResponseKind {
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let ops: Vec<(String, i8, Option<String>)> = r
            .configs
            .iter()
            .map(|c| {
                (
                    c.name.to_string(),
                    c.config_operation,
                    c.value.as_ref().map(|v| v.to_string()),
                )
            })
            .collect();
        let (code, message) = alter(
            broker,
            r.resource_type,
            &r.resource_name,
            r.configs.iter().map(|c| &c.name),
            req.validate_only,
            |configs| {
                for (name, op, value) in &ops {
                    apply(configs, name, *op, value.as_deref())?;
                }
                Ok(())
            },
        )
        .await;
        responses.push(
            IncrementalResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name)
                .with_error_code(code)
                .with_error_message(message),
        );
    }
    ResponseKind::IncrementalAlterConfigs(
        IncrementalAlterConfigsResponse::default().with_responses(responses),
    )
}

fn apply(
    configs: &mut BTreeMap<String, String>,
    name: &str,
    op: i8,
    value: Option<&str>,
) -> Result<()> {
    let invalid = |reason: &str| EngineError::InvalidConfig {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    let current_list = |configs: &BTreeMap<String, String>| -> Vec<String> {
        configs
            .get(name)
            .map(String::as_str)
            .or_else(|| {
                let topic = sluice_engine::broker_configs::topic_synonym(name).unwrap_or(name);
                sluice_engine::topics::config_def(topic).map(|d| d.default)
            })
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    };
    match op {
        OP_SET => {
            configs.insert(
                name.to_string(),
                value
                    .ok_or_else(|| invalid("SET needs a value"))?
                    .to_string(),
            );
        }
        OP_DELETE => {
            configs.remove(name);
        }
        OP_APPEND | OP_SUBTRACT => {
            let mut list = current_list(configs);
            let items: Vec<&str> = value
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            if op == OP_APPEND {
                for i in items {
                    if !list.iter().any(|x| x == i) {
                        list.push(i.to_string());
                    }
                }
            } else {
                list.retain(|x| !items.contains(&x.as_str()));
            }
            configs.insert(name.to_string(), list.join(","));
        }
        _ => return Err(invalid("unknown config operation")),
    }
    Ok(())
}
