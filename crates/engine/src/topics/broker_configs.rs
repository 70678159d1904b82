//! Dynamic broker configs, as `kafka-configs --entity-type brokers` sets them: the
//! log configs a broker gives every topic that does not set its own
//! (`log.retention.ms` for `retention.ms`, `message.max.bytes` for
//! `max.message.bytes`, …), stored cluster-wide (the entity default, resource name
//! `""`) under `configs/brokers/default` and per broker under `configs/brokers/<id>`.
//!
//! Precedence for a topic config, as Kafka's: set on the topic, else set for the
//! broker leading it, else the cluster-wide default, else the built-in default.
//! Every broker follows the keys and reinstalls its topics when they change.
//!
//! Only configs Sluice applies can be set: the topic-default synonyms. A config
//! Kafka fixes at start-up (`log.dirs`, `listeners`, …) is refused as Kafka refuses
//! it ("Cannot update these configs dynamically"); any other name is refused with
//! a message saying Sluice does not apply it, rather than stored without effect.

use std::collections::BTreeMap;

use crate::topics;

/// Broker config name → the topic config it is the default of (Kafka's synonyms).
pub const TOPIC_DEFAULTS: &[(&str, &str)] = &[
    ("log.cleanup.policy", "cleanup.policy"),
    ("compression.type", "compression.type"),
    ("log.cleaner.delete.retention.ms", "delete.retention.ms"),
    ("log.segment.delete.delay.ms", "file.delete.delay.ms"),
    ("log.flush.interval.messages", "flush.messages"),
    ("log.flush.interval.ms", "flush.ms"),
    ("log.cleaner.max.compaction.lag.ms", "max.compaction.lag.ms"),
    ("message.max.bytes", "max.message.bytes"),
    (
        "log.message.timestamp.after.max.ms",
        "message.timestamp.after.max.ms",
    ),
    (
        "log.message.timestamp.before.max.ms",
        "message.timestamp.before.max.ms",
    ),
    ("log.message.timestamp.type", "message.timestamp.type"),
    (
        "log.cleaner.min.cleanable.ratio",
        "min.cleanable.dirty.ratio",
    ),
    ("log.cleaner.min.compaction.lag.ms", "min.compaction.lag.ms"),
    ("min.insync.replicas", "min.insync.replicas"),
    ("log.preallocate", "preallocate"),
    ("log.retention.bytes", "retention.bytes"),
    ("log.retention.ms", "retention.ms"),
    ("log.segment.bytes", "segment.bytes"),
    ("log.roll.ms", "segment.ms"),
    (
        "unclean.leader.election.enable",
        "unclean.leader.election.enable",
    ),
];

/// Broker configs Kafka reads only at start-up; Sluice's equivalents are its
/// command-line flags.
const STATIC: &[&str] = &[
    "advertised.listeners",
    "auto.create.topics.enable",
    "broker.id",
    "controller.listener.names",
    "controller.quorum.bootstrap.servers",
    "controller.quorum.voters",
    "log.dir",
    "log.dirs",
    "log.retention.check.interval.ms",
    "log.retention.hours",
    "log.retention.minutes",
    "log.roll.hours",
    "node.id",
    "num.partitions",
    "process.roles",
    "producer.id.expiration.ms",
];

/// The topic config a broker config is the default of.
pub fn topic_synonym(broker_config: &str) -> Option<&'static str> {
    TOPIC_DEFAULTS
        .iter()
        .find(|(b, _)| *b == broker_config)
        .map(|(_, t)| *t)
}

/// The broker config that is the default of a topic config.
pub fn broker_synonym(topic_config: &str) -> Option<&'static str> {
    TOPIC_DEFAULTS
        .iter()
        .find(|(_, t)| *t == topic_config)
        .map(|(b, _)| *b)
}

/// Checks one broker config for a dynamic update; the error is Kafka's message.
pub fn validate(name: &str, value: Option<&str>) -> Result<(), String> {
    if let Some(topic) = topic_synonym(name) {
        return match value {
            None => Ok(()),
            Some(v) => topics::validate_config(topic, v).map_err(|e| match e {
                crate::error::EngineError::InvalidConfig { reason, .. } => {
                    format!("Invalid value {v} for configuration {name}: {reason}")
                }
                other => other.to_string(),
            }),
        };
    }
    if STATIC.contains(&name) {
        return Err(format!("Cannot update these configs dynamically: [{name}]"));
    }
    Err(format!(
        "Sluice does not apply the broker config {name} (dynamic broker configs are the \
         log configs topics take as defaults: {})",
        TOPIC_DEFAULTS
            .iter()
            .map(|(b, _)| *b)
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Where a broker-level value came from (Kafka's config sources).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Set for this broker (`DYNAMIC_BROKER_CONFIG`).
    Broker,
    /// Set cluster-wide (`DYNAMIC_DEFAULT_BROKER_CONFIG`).
    ClusterDefault,
}

/// The dynamic broker configs in effect on one broker: cluster-wide and its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerDefaults {
    pub cluster: BTreeMap<String, String>,
    pub broker: BTreeMap<String, String>,
}

impl BrokerDefaults {
    /// The value of a broker config in effect here, and where it was set.
    pub fn get(&self, broker_config: &str) -> Option<(&str, Origin)> {
        self.broker
            .get(broker_config)
            .map(|v| (v.as_str(), Origin::Broker))
            .or_else(|| {
                self.cluster
                    .get(broker_config)
                    .map(|v| (v.as_str(), Origin::ClusterDefault))
            })
    }

    /// The broker-level default of a topic config, if one is set.
    pub fn topic_default(&self, topic_config: &str) -> Option<(&str, Origin)> {
        broker_synonym(topic_config).and_then(|b| self.get(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_synonym_names_a_topic_config() {
        for (broker, topic) in TOPIC_DEFAULTS {
            assert!(topics::config_def(topic).is_some(), "{broker} -> {topic}");
        }
    }

    #[test]
    fn updates_are_checked_as_kafka_checks_them() {
        assert!(validate("log.retention.ms", Some("3600000")).is_ok());
        assert!(validate("log.retention.ms", None).is_ok());
        let bad = validate("log.retention.ms", Some("abc")).unwrap_err();
        assert!(bad.starts_with("Invalid value abc for configuration log.retention.ms"));
        assert_eq!(
            validate("log.dirs", Some("/x")).unwrap_err(),
            "Cannot update these configs dynamically: [log.dirs]"
        );
        assert!(validate("sasl.kerberos.min.time.before.relogin", Some("1"))
            .unwrap_err()
            .contains("does not apply"));
    }

    #[test]
    fn the_brokers_own_value_comes_before_the_cluster_default() {
        let mut d = BrokerDefaults::default();
        d.cluster.insert("log.retention.ms".into(), "1000".into());
        assert_eq!(
            d.topic_default("retention.ms"),
            Some(("1000", Origin::ClusterDefault))
        );
        d.broker.insert("log.retention.ms".into(), "2000".into());
        assert_eq!(
            d.topic_default("retention.ms"),
            Some(("2000", Origin::Broker))
        );
        assert_eq!(d.topic_default("segment.ms"), None);
    }
}
