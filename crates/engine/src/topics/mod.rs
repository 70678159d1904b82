//! Topics: their metadata records, their configs (with Kafka's names and defaults),
//! and name validation.

pub mod broker_configs;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use self::broker_configs::BrokerDefaults;
use crate::error::EngineError;

/// Topic config: age (by record timestamp) after which data becomes Parquet; -1
/// never.
pub const LAKE_AFTER_MS: &str = "sluice.lake.after.ms";

/// A topic as stored under `topics/<name>` in the metadata store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub id: Uuid,
    pub name: String,
    pub partitions: i32,
    /// Configs set explicitly on the topic; everything else takes its default.
    pub configs: BTreeMap<String, String>,
    /// Partitions an operator placed on a broker (`sluice topic reassign`): the
    /// controller keeps each on its broker while that broker is live.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pinned: BTreeMap<i32, i32>,
    /// The dynamic broker configs in effect where this record was installed (not
    /// stored with the topic): the defaults of the configs it does not set.
    #[serde(skip)]
    pub defaults: Arc<BrokerDefaults>,
}

/// How a config value is checked.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Long {
        min: i64,
    },
    Int {
        min: i64,
    },
    Double,
    Bool,
    OneOf(&'static [&'static str]),
    /// Any value: configs Kafka deprecated, taken and ignored.
    Ignored,
}

/// A topic config Sluice knows: its name, default and type.
pub struct ConfigDef {
    pub name: &'static str,
    pub default: &'static str,
    kind: Kind,
}

/// Broker-side default of `max.message.bytes` (Kafka's).
pub const DEFAULT_MAX_MESSAGE_BYTES: i64 = 1_048_588;

/// Topic configs, Kafka's names and defaults (plus Sluice's `sluice.lake.after.ms`).
/// Stored and returned for all; enforced: `max.message.bytes`,
/// `message.timestamp.type`, `message.timestamp.before.max.ms`,
/// `message.timestamp.after.max.ms`, `cleanup.policy` (delete and compact),
/// `retention.ms`, `retention.bytes`, `segment.bytes` and `segment.ms` (the active
/// segment retention and log compaction spare), `delete.retention.ms`,
/// `min.cleanable.dirty.ratio`, `min.compaction.lag.ms`, `max.compaction.lag.ms`,
/// `sluice.lake.after.ms`. Not yet: `compression.type`. Without effect on a broker
/// with no replicas or local files: `min.insync.replicas`,
/// `unclean.leader.election.enable`, `preallocate`, `flush.*`, `file.delete.delay.ms`.
pub const CONFIGS: &[ConfigDef] = &[
    ConfigDef {
        name: "cleanup.policy",
        default: "delete",
        kind: Kind::OneOf(&["delete", "compact", "compact,delete", "delete,compact"]),
    },
    ConfigDef {
        name: "compression.type",
        default: "producer",
        kind: Kind::OneOf(&["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"]),
    },
    ConfigDef {
        name: "delete.retention.ms",
        default: "86400000",
        kind: Kind::Long { min: 0 },
    },
    ConfigDef {
        name: "file.delete.delay.ms",
        default: "60000",
        kind: Kind::Long { min: 0 },
    },
    ConfigDef {
        name: "flush.messages",
        default: "9223372036854775807",
        kind: Kind::Long { min: 1 },
    },
    ConfigDef {
        name: "flush.ms",
        default: "9223372036854775807",
        kind: Kind::Long { min: 0 },
    },
    ConfigDef {
        name: "max.compaction.lag.ms",
        default: "9223372036854775807",
        kind: Kind::Long { min: 1 },
    },
    ConfigDef {
        name: "max.message.bytes",
        default: "1048588",
        kind: Kind::Int { min: 0 },
    },
    // Deprecated in Kafka, accepted and ignored there: Sluice stores only v2
    // batches and serves Fetch from v4, so nothing is ever down-converted.
    ConfigDef {
        name: "message.downconversion.enable",
        default: "true",
        kind: Kind::Ignored,
    },
    ConfigDef {
        name: "message.format.version",
        default: "3.0-IV1",
        kind: Kind::Ignored,
    },
    ConfigDef {
        name: "message.timestamp.after.max.ms",
        default: "9223372036854775807",
        kind: Kind::Long { min: 0 },
    },
    ConfigDef {
        name: "message.timestamp.before.max.ms",
        default: "9223372036854775807",
        kind: Kind::Long { min: 0 },
    },
    ConfigDef {
        name: "message.timestamp.type",
        default: "CreateTime",
        kind: Kind::OneOf(&["CreateTime", "LogAppendTime"]),
    },
    ConfigDef {
        name: "min.cleanable.dirty.ratio",
        default: "0.5",
        kind: Kind::Double,
    },
    ConfigDef {
        name: "min.compaction.lag.ms",
        default: "0",
        kind: Kind::Long { min: 0 },
    },
    ConfigDef {
        name: "min.insync.replicas",
        default: "1",
        kind: Kind::Int { min: 1 },
    },
    ConfigDef {
        name: "preallocate",
        default: "false",
        kind: Kind::Bool,
    },
    ConfigDef {
        name: "retention.bytes",
        default: "-1",
        kind: Kind::Long { min: -1 },
    },
    ConfigDef {
        name: "retention.ms",
        default: "604800000",
        kind: Kind::Long { min: -1 },
    },
    ConfigDef {
        name: "segment.bytes",
        default: "1073741824",
        kind: Kind::Int { min: 14 },
    },
    ConfigDef {
        name: "segment.ms",
        default: "604800000",
        kind: Kind::Long { min: 1 },
    },
    ConfigDef {
        name: LAKE_AFTER_MS,
        default: "14400000",
        kind: Kind::Long { min: -1 },
    },
    ConfigDef {
        name: "unclean.leader.election.enable",
        default: "false",
        kind: Kind::Bool,
    },
];

/// Looks up a config definition by name.
pub fn config_def(name: &str) -> Option<&'static ConfigDef> {
    CONFIGS.iter().find(|d| d.name == name)
}

/// Checks a config name and value; the error names both.
pub fn validate_config(name: &str, value: &str) -> Result<(), EngineError> {
    let def = config_def(name).ok_or_else(|| EngineError::InvalidConfig {
        name: name.to_string(),
        reason: "unknown topic config".into(),
    })?;
    let bad = |reason: String| EngineError::InvalidConfig {
        name: name.to_string(),
        reason,
    };
    match def.kind {
        Kind::Long { min } | Kind::Int { min } => {
            let v: i64 = value
                .trim()
                .parse()
                .map_err(|_| bad(format!("value {value:?} is not an integer")))?;
            if v < min {
                return Err(bad(format!("value {v} is below the minimum {min}")));
            }
            if matches!(def.kind, Kind::Int { .. }) && v > i64::from(i32::MAX) {
                return Err(bad(format!("value {v} does not fit an int")));
            }
        }
        Kind::Double => {
            value
                .trim()
                .parse::<f64>()
                .map_err(|_| bad(format!("value {value:?} is not a number")))?;
        }
        Kind::Bool => {
            if !matches!(value.trim(), "true" | "false") {
                return Err(bad(format!("value {value:?} is not true or false")));
            }
        }
        Kind::Ignored => {}
        Kind::OneOf(allowed) => {
            let v = value.replace(' ', "");
            if !allowed.contains(&v.as_str()) {
                return Err(bad(format!("value {value:?} is not one of {allowed:?}")));
            }
        }
    }
    Ok(())
}

impl TopicRecord {
    /// The effective value of a config: set on the topic, else set for the broker
    /// (see [`crate::topics::broker_configs`]), else the default.
    pub fn config(&self, name: &str) -> Option<&str> {
        self.configs
            .get(name)
            .map(String::as_str)
            .or_else(|| self.defaults.topic_default(name).map(|(v, _)| v))
            .or_else(|| config_def(name).map(|d| d.default))
    }

    /// The effective value of a numeric config (None if it does not parse).
    pub fn config_number<T: std::str::FromStr>(&self, name: &str) -> Option<T> {
        self.config(name).and_then(|v| v.trim().parse().ok())
    }

    /// Whether `cleanup.policy` includes `policy` (`delete` or `compact`).
    pub fn has_cleanup_policy(&self, policy: &str) -> bool {
        self.config("cleanup.policy")
            .is_some_and(|v| v.split(',').any(|p| p.trim() == policy))
    }

    pub fn max_message_bytes(&self) -> i64 {
        self.config_number("max.message.bytes")
            .unwrap_or(DEFAULT_MAX_MESSAGE_BYTES)
    }

    pub fn log_append_time(&self) -> bool {
        self.config("message.timestamp.type") == Some("LogAppendTime")
    }
}

/// Kafka's rule for topic names: 1..=249 chars of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), EngineError> {
    let invalid = |reason: &str| EngineError::InvalidTopic {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() {
        return Err(invalid("name is empty"));
    }
    if name == "." || name == ".." {
        return Err(invalid("name cannot be '.' or '..'"));
    }
    if name.len() > 249 {
        return Err(invalid("name is longer than 249 characters"));
    }
    if !name
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
    {
        return Err(invalid(
            "name may contain only ASCII letters, digits, '.', '_' and '-'",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        for ok in ["a", "orders.v1", "A_b-9", &"x".repeat(249)] {
            assert!(validate_topic_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "has space", "ünï", "a/b", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn configs_are_checked() {
        assert!(validate_config("retention.ms", "1000").is_ok());
        assert!(validate_config("retention.ms", "-1").is_ok());
        assert!(validate_config("retention.ms", "-2").is_err());
        assert!(validate_config("retention.ms", "soon").is_err());
        assert!(validate_config("cleanup.policy", "compact, delete").is_ok());
        assert!(validate_config("cleanup.policy", "forever").is_err());
        assert!(validate_config("message.timestamp.type", "LogAppendTime").is_ok());
        assert!(validate_config("no.such.config", "1").is_err());
        let t = TopicRecord {
            id: Uuid::nil(),
            name: "t".into(),
            partitions: 1,
            configs: [("max.message.bytes".to_string(), "100".to_string())].into(),
            pinned: BTreeMap::new(),
            defaults: Default::default(),
        };
        assert_eq!(t.max_message_bytes(), 100);
        assert_eq!(t.config("retention.ms"), Some("604800000"));
        assert!(!t.log_append_time());
    }
}
