//! The metadata keyspace: every key Sluice writes to the metadata store, the records
//! stored under them with their encoding, and the [`Fence`] every guarded write
//! carries. It is to metadata what `sluice_storage::paths` is to objects: no other
//! module formats a key, and stored values are read and written only through
//! [`Stored`].
//!
//! Layout, all under `/sluice/<cluster>/` (docs/cluster.md describes each key, who
//! writes it and how long it lives):
//!
//! | key | record |
//! |---|---|
//! | `topics/<name>` | [`TopicRecord`](crate::topics::TopicRecord) |
//! | `assignment/<topic-id>` | [`AssignmentRecord`] |
//! | `brokers/<id>/live`, `brokers/<id>/epoch`, `brokers/<id>/claim` | [`BrokerRecord`], [`Generation`], a lease token |
//! | `controller` | [`ControllerRecord`] |
//! | `manifests/<broker>/<generation>/<seq>` | [`Manifest`] |
//! | `checkpoint/<topic-id>/<p>` | [`Checkpoint`] |
//! | `log_start/<topic-id>/<p>` | a decimal offset |
//! | `lake_table/<topic-id>` | [`TableState`] |
//! | `configs/brokers/{default,<id>}` | [`BrokerConfigRecord`] |
//! | `groups/<shard>/<group>/…` | the coordinators' records (broker crate), through [`Stored`] |
//! | `gc/horizon`, `producer_ids/next` | the janitor's fence, a decimal counter |
//! | `txn/<shard>/<transactional-id>` | [`TxnRecord`] (RFC 0010) |
//! | `txn_markers/<topic-id>/<p>/<transactional-id>` | [`MarkerRequest`]: a marker a partition's leader is to write |
//! | `groups/<shard>/<group>/txn/<transactional-id>` | a transaction's pending offsets for the group (broker crate) |
//!
//! Invariants:
//! - A key names one record type; its encoding is that type's [`Stored`] impl.
//! - A value that does not decode is an error naming its key, never a default.
//! - A write that must not apply after this broker lost its generation, or after the
//!   janitor moved its horizon, carries the compares of a [`Fence`].

mod fence;
mod records;

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use uuid::Uuid;

pub use fence::{Fence, Fences};
pub use records::*;

use crate::error::{EngineError, Result};

/// A record stored as one metadata value. JSON unless a type says otherwise; the
/// encoding is part of the on-store format, so changes must stay readable by the
/// previous release (new fields `#[serde(default)]`).
pub trait Stored: Sized {
    /// What the record is, for errors (`"topic record"`).
    const WHAT: &'static str;
    fn encode(&self) -> Bytes;
    fn decode(bytes: &[u8]) -> std::result::Result<Self, String>;

    /// A stored value; unreadable is an error naming the key.
    fn from_kv(kv: &sluice_meta::KeyValue) -> Result<Self> {
        Self::from_bytes(&kv.key, &kv.value)
    }

    /// `bytes` read from `key`; unreadable is an error naming the key.
    fn from_bytes(key: &str, bytes: &[u8]) -> Result<Self> {
        Self::decode(bytes).map_err(|e| EngineError::Meta(format!("{} key={key}: {e}", Self::WHAT)))
    }
}

/// JSON encoding for a serde record type.
pub fn encode_json<T: Serialize>(value: &T) -> Bytes {
    // Serialising plain data (string keys, no maps with non-string keys) cannot fail.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// JSON decoding for a serde record type.
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

/// Implements [`Stored`] as JSON for record types.
macro_rules! stored_as_json {
    ($($ty:ty => $what:literal),+ $(,)?) => {$(
        impl $crate::keyspace::Stored for $ty {
            const WHAT: &'static str = $what;
            fn encode(&self) -> ::bytes::Bytes {
                $crate::keyspace::encode_json(self)
            }
            fn decode(bytes: &[u8]) -> ::std::result::Result<Self, String> {
                $crate::keyspace::decode_json(bytes)
            }
        }
    )+};
}

stored_as_json!(
    AssignmentRecord => "assignment record",
    BrokerRecord => "broker record",
    ControllerRecord => "controller record",
    Manifest => "manifest",
    crate::topics::TopicRecord => "topic record",
    Checkpoint => "checkpoint",
    BrokerConfigRecord => "broker configs",
    TableState => "lake table state",
    TxnRecord => "transaction record",
    MarkerRequest => "marker request",
);

/// A log start value: a decimal offset (0 if unreadable, which keeps everything).
pub fn decode_offset(value: &[u8]) -> i64 {
    i64::decode(value).unwrap_or(0)
}

/// A decimal integer (`log_start/…`, `producer_ids/next`).
impl Stored for i64 {
    const WHAT: &'static str = "integer";
    fn encode(&self) -> Bytes {
        Bytes::from(self.to_string())
    }
    fn decode(bytes: &[u8]) -> std::result::Result<Self, String> {
        std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| "not an integer".to_string())
    }
}

/// `"<number> <owner>"`; a bare number (older data) has no owner.
impl Stored for Generation {
    const WHAT: &'static str = "generation";
    fn encode(&self) -> Bytes {
        Bytes::from(format!("{} {}", self.number, self.owner))
    }
    fn decode(bytes: &[u8]) -> std::result::Result<Self, String> {
        let parse = || {
            let s = std::str::from_utf8(bytes).ok()?;
            let (n, owner) = s.split_once(' ').unwrap_or((s, ""));
            Some(Self {
                number: n.trim().parse().ok()?,
                owner: if owner.is_empty() {
                    Uuid::nil()
                } else {
                    owner.parse().ok()?
                },
            })
        };
        parse().ok_or_else(|| "not a generation".to_string())
    }
}

/// Metadata keys, all under `/sluice/<cluster>/`.
#[derive(Debug, Clone)]
pub struct Keys {
    root: String,
}

impl Keys {
    pub fn new(cluster: &str) -> Self {
        Self {
            root: format!("/sluice/{cluster}/"),
        }
    }
    pub fn topics(&self) -> String {
        format!("{}topics/", self.root)
    }
    pub fn topic(&self, name: &str) -> String {
        format!("{}topics/{name}", self.root)
    }
    /// Every group key of every shard.
    pub fn all_groups(&self) -> String {
        format!("{}groups/", self.root)
    }
    pub fn manifests(&self) -> String {
        format!("{}manifests/", self.root)
    }
    pub fn manifest(&self, broker: i32, generation: u64, seq: u64) -> String {
        format!(
            "{}manifests/{broker:010}/{generation:010}/{seq:016}",
            self.root
        )
    }
    /// Dynamic broker configs: `default` (cluster-wide) and one key per broker id.
    pub fn broker_configs(&self) -> String {
        format!("{}configs/brokers/", self.root)
    }
    pub fn broker_config(&self, broker: Option<i32>) -> String {
        match broker {
            Some(id) => format!("{}configs/brokers/{id}", self.root),
            None => format!("{}configs/brokers/default", self.root),
        }
    }
    pub fn brokers(&self) -> String {
        format!("{}brokers/", self.root)
    }
    pub fn generation(&self, broker: i32) -> String {
        format!("{}brokers/{broker}/epoch", self.root)
    }
    /// The claim of an id taken with `--broker-id=auto`, bound to its lease.
    pub fn broker_claim(&self, broker: i32) -> String {
        format!("{}brokers/{broker}/claim", self.root)
    }
    pub fn live(&self, broker: i32) -> String {
        format!("{}brokers/{broker}/live", self.root)
    }
    pub fn assignments(&self) -> String {
        format!("{}assignment/", self.root)
    }
    pub fn assignment(&self, topic: Uuid) -> String {
        format!("{}assignment/{topic}", self.root)
    }
    /// The topic id of an `assignment/<topic-id>` key.
    pub fn assignment_topic(&self, key: &str) -> Option<Uuid> {
        key.strip_prefix(&self.assignments())?.parse().ok()
    }
    pub fn controller(&self) -> String {
        format!("{}controller", self.root)
    }
    /// Everything a coordinator keeps for one group, under its shard. `/` and `%`
    /// in group ids are percent-encoded so a group is exactly one key prefix.
    pub fn group(&self, shard: i32, group: &str) -> String {
        let escaped = group.replace('%', "%25").replace('/', "%2F");
        format!("{}{escaped}/", self.shard_groups(shard))
    }
    /// Every group key of one coordinator shard.
    pub fn shard_groups(&self, shard: i32) -> String {
        format!("{}groups/{shard:05}/", self.root)
    }
    /// The group a key under [`Keys::shard_groups`] belongs to (unescaped), and the
    /// rest of the key after the group (e.g. `state`, `offsets/<topic>`).
    pub fn group_of<'k>(&self, shard: i32, key: &'k str) -> Option<(String, &'k str)> {
        let (escaped, rest) = key
            .strip_prefix(&self.shard_groups(shard))?
            .split_once('/')?;
        Some((escaped.replace("%2F", "/").replace("%25", "%"), rest))
    }
    /// A partition's log start offset, when it was ever moved.
    pub fn log_start(&self, topic: Uuid, partition: i32) -> String {
        format!("{}log_start/{topic}/{partition}", self.root)
    }
    pub fn log_starts(&self) -> String {
        format!("{}log_start/", self.root)
    }
    /// The partition a [`Keys::log_start`] key names.
    pub fn log_start_partition(&self, key: &str) -> Option<(Uuid, i32)> {
        partition_of(key.strip_prefix(&self.log_starts())?)
    }
    /// What compaction folded out of a partition's write-ahead objects.
    pub fn checkpoint(&self, topic: Uuid, partition: i32) -> String {
        format!("{}checkpoint/{topic}/{partition}", self.root)
    }
    pub fn checkpoints(&self) -> String {
        format!("{}checkpoint/", self.root)
    }
    /// The partition a [`Keys::checkpoint`] key names.
    pub fn checkpoint_partition(&self, key: &str) -> Option<(Uuid, i32)> {
        partition_of(key.strip_prefix(&self.checkpoints())?)
    }
    /// Where a topic's Iceberg table stands (see `tables.rs`).
    pub fn lake_table(&self, topic: Uuid) -> String {
        format!("{}lake_table/{topic}", self.root)
    }
    pub fn lake_tables(&self) -> String {
        format!("{}lake_table/", self.root)
    }
    pub fn lake_table_topic(&self, key: &str) -> Option<Uuid> {
        key.strip_prefix(&self.lake_tables())?.parse().ok()
    }
    /// Bumped by the janitor before it deletes orphaned objects; every manifest
    /// commit compares its revision (see `retention.rs`).
    pub fn gc_horizon(&self) -> String {
        format!("{}gc/horizon", self.root)
    }
    pub fn producer_ids(&self) -> String {
        format!("{}producer_ids/next", self.root)
    }
    /// A transactional id's record, under its coordinator shard (escaped as group
    /// ids are).
    pub fn txn(&self, shard: i32, transactional_id: &str) -> String {
        format!("{}{}", self.shard_txns(shard), escape(transactional_id))
    }
    /// Every transaction record of one coordinator shard.
    pub fn shard_txns(&self, shard: i32) -> String {
        format!("{}txn/{shard:05}/", self.root)
    }
    /// The transactional id a key under [`Keys::shard_txns`] names.
    pub fn txn_of(&self, shard: i32, key: &str) -> Option<String> {
        key.strip_prefix(&self.shard_txns(shard)).map(unescape)
    }
    /// Offsets a transaction commits for a group, pending until it completes: under
    /// the group, so its coordinator sees them (`require_stable` fetches).
    pub fn group_pending(&self, shard: i32, group: &str, transactional_id: &str) -> String {
        format!(
            "{}{}",
            self.group_pendings(shard, group),
            escape(transactional_id)
        )
    }
    /// Every pending transactional offset commit of a group.
    pub fn group_pendings(&self, shard: i32, group: &str) -> String {
        format!("{}txn/", self.group(shard, group))
    }
    /// Every marker request not yet served.
    pub fn marker_requests(&self) -> String {
        format!("{}txn_markers/", self.root)
    }
    /// The request that partition `p` of `topic` write a marker for a transaction.
    pub fn marker_request(&self, topic: Uuid, partition: i32, transactional_id: &str) -> String {
        format!(
            "{}{topic}/{partition}/{}",
            self.marker_requests(),
            escape(transactional_id)
        )
    }
    /// The partition and transactional id a marker request's key names.
    pub fn marker_request_of(&self, key: &str) -> Option<(Uuid, i32, String)> {
        let rest = key.strip_prefix(&self.marker_requests())?;
        let (topic, rest) = rest.split_once('/')?;
        let (partition, id) = rest.split_once('/')?;
        Some((topic.parse().ok()?, partition.parse().ok()?, unescape(id)))
    }
}

/// The coordinator shard of a group or transactional id: 32-bit FNV-1a of the id,
/// modulo the shard count. Stable across releases and brokers; clients never
/// compute it.
pub fn shard_of(id: &str, shards: i32) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h % shards.max(1) as u32) as i32
}

/// `/` and `%` percent-encoded, so an id is one key segment.
fn escape(id: &str) -> String {
    id.replace('%', "%25").replace('/', "%2F")
}

fn unescape(id: &str) -> String {
    id.replace("%2F", "/").replace("%25", "%")
}

/// `<topic-id>/<partition>`, the tail of per-partition keys.
fn partition_of(tail: &str) -> Option<(Uuid, i32)> {
    let (topic, partition) = tail.split_once('/')?;
    Some((topic.parse().ok()?, partition.parse().ok()?))
}

/// Splits `brokers/` keys into live records and generations by broker id.
pub fn parse_brokers(
    keys: &Keys,
    kvs: &[sluice_meta::KeyValue],
) -> (
    BTreeMap<i32, BrokerRecord>,
    BTreeMap<i32, (Generation, i64)>,
) {
    let prefix = keys.brokers();
    let mut live = BTreeMap::new();
    let mut generations = BTreeMap::new();
    for kv in kvs {
        let Some(rest) = kv.key.strip_prefix(&prefix) else {
            continue;
        };
        let Some((id, kind)) = rest.split_once('/') else {
            continue;
        };
        let Ok(id) = id.parse::<i32>() else { continue };
        match kind {
            "live" => {
                if let Ok(r) = BrokerRecord::decode(&kv.value) {
                    live.insert(id, r);
                }
            }
            "epoch" => {
                if let Ok(g) = Generation::decode(&kv.value) {
                    generations.insert(id, (g, kv.mod_revision));
                }
            }
            _ => {}
        }
    }
    (live, generations)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_keys_round_trip() {
        let keys = Keys::new("c1");
        let topic = Uuid::new_v4();
        assert_eq!(
            keys.log_start_partition(&keys.log_start(topic, 7)),
            Some((topic, 7))
        );
        assert_eq!(
            keys.checkpoint_partition(&keys.checkpoint(topic, 0)),
            Some((topic, 0))
        );
        assert_eq!(keys.assignment_topic(&keys.assignment(topic)), Some(topic));
        assert_eq!(keys.lake_table_topic(&keys.lake_table(topic)), Some(topic));
        assert!(keys.topic("t").starts_with(&keys.topics()));
        assert!(keys.manifest(1, 2, 3).starts_with(&keys.manifests()));
        // Another cluster's keys never fall under this one's prefixes.
        assert!(!Keys::new("c10").topic("t").starts_with(&keys.topics()));
    }

    #[test]
    fn group_ids_are_one_prefix_whatever_they_contain() {
        let keys = Keys::new("c");
        for id in ["plain", "a/b", "50%", "%2F", "/", ""] {
            let state = format!("{}state", keys.group(3, id));
            assert_eq!(
                keys.group_of(3, &state),
                Some((id.to_string(), "state")),
                "{id:?}"
            );
        }
        assert!(!keys.group(3, "a").starts_with(&keys.group(3, "a/b")));
    }

    #[test]
    fn generations_decode_old_and_new_forms_and_refuse_garbage() {
        let g = Generation {
            number: 42,
            owner: Uuid::new_v4(),
        };
        assert_eq!(Generation::decode(&g.encode()), Ok(g));
        assert_eq!(
            Generation::decode(b"7").map(|g| (g.number, g.owner)),
            Ok((7, Uuid::nil()))
        );
        assert!(Generation::decode(b"x y").is_err());
        let err = Generation::from_bytes("k/epoch", b"").unwrap_err();
        assert!(err.to_string().contains("key=k/epoch"), "{err}");
    }

    /// Manifests keep the layout they were always stored in: the slice's fields flat,
    /// beside `producers` (absent when empty), so older manifests decode and newer
    /// ones are readable by the previous release.
    #[test]
    fn manifests_keep_their_stored_layout() {
        let stored = br#"{"object":"wal/1/2/x.wal","object_len":120,"slices":[{"topic_id":"6f2c9a4e-0000-4000-8000-000000000001","partition":3,"base_offset":10,"last_offset":19,"start":8,"len":100,"max_timestamp":1700000000000}]}"#;
        let m = Manifest::decode(stored).unwrap();
        let s = &m.slices[0];
        assert_eq!(
            (s.slice.partition, s.slice.base_offset, s.slice.last_offset),
            (3, 10, 19)
        );
        assert_eq!((s.slice.start, s.slice.len), (8, 100));
        assert!(s.producers.is_empty());
        assert_eq!(&m.encode()[..], &stored[..]);
    }

    #[test]
    fn unreadable_records_name_their_key() {
        let kv = sluice_meta::KeyValue {
            key: "/sluice/c/manifests/x".into(),
            value: Bytes::from_static(b"{"),
            create_revision: 1,
            mod_revision: 1,
            version: 1,
            lease: None,
        };
        let err = Manifest::from_kv(&kv).unwrap_err().to_string();
        assert!(err.contains("manifest key=/sluice/c/manifests/x"), "{err}");
        assert_eq!(i64::decode(&12_i64.encode()), Ok(12));
    }
}
