//! Every object key Sluice writes, in one place.
//!
//! - `wal/<broker>/<generation>/<ulid>.wal`: write-ahead objects, one per flush.
//! - `seg/<topic-id>/<partition>/<base-offset>-<ulid>.seg`: per-partition segments.
//! - `lake/<topic>/partition=<p>/<base>-<last>-<ulid>.parquet`: Parquet for lakehouse
//!   tools, and the one copy of the records it holds.
//! - `lake/_iceberg/kafka/<topic>/metadata/…`: the Iceberg table over a topic's lake
//!   files (a Hadoop-catalog warehouse at `lake/_iceberg`, namespace `kafka`): per
//!   version a manifest, a manifest list and `<version>-<uuid>.metadata.json`, plus
//!   `v<version>.metadata.json` and `version-hint.text` for readers that find tables
//!   by directory. The leading `_` keeps Parquet readers of `lake/` from seeing them.

use object_store::path::Path;
use ulid::Ulid;

/// Prefix of every write-ahead object.
pub const WAL_PREFIX: &str = "wal";

/// Key of a new write-ahead object of `broker` written under `generation`.
pub fn wal_object(broker: i32, generation: u64, id: Ulid) -> Path {
    Path::from(format!("{WAL_PREFIX}/{broker}/{generation}/{id}.wal"))
}

/// Prefix of every per-partition segment.
pub const SEGMENT_PREFIX: &str = "seg";

/// Prefix of the Parquet lake.
pub const LAKE_PREFIX: &str = "lake";

/// Key of a per-partition segment whose first offset is `base_offset`; `id` keeps
/// two attempts at the same fold apart.
pub fn segment(topic_id: &str, partition: i32, base_offset: i64, id: Ulid) -> Path {
    Path::from(format!(
        "{SEGMENT_PREFIX}/{topic_id}/{partition}/{base_offset:020}-{id}.seg"
    ))
}

/// Key of a lake file of `topic` holding offsets `base_offset..=last_offset`, laid
/// out Hive-style so engines see `partition` as a column.
pub fn lake_file(
    topic: &str,
    partition: i32,
    base_offset: i64,
    last_offset: i64,
    id: Ulid,
) -> Path {
    Path::from(format!(
        "{LAKE_PREFIX}/{topic}/partition={partition}/{base_offset:020}-{last_offset:020}-{id}.parquet"
    ))
}

/// The Iceberg warehouse's namespace directory: `lake/_iceberg/kafka`.
pub const ICEBERG_TABLES: &str = "lake/_iceberg/kafka";

/// Keys of one topic's Iceberg table.
#[derive(Debug, Clone)]
pub struct IcebergTable {
    dir: String,
}

impl IcebergTable {
    pub fn new(topic: &str) -> Self {
        Self {
            dir: format!("{ICEBERG_TABLES}/{topic}"),
        }
    }

    /// The table's location (its directory).
    pub fn location(&self) -> &str {
        &self.dir
    }

    /// The Avro manifest of a version's files.
    pub fn manifest(&self, id: impl std::fmt::Display) -> String {
        format!("{}/metadata/{id}-m0.avro", self.dir)
    }

    /// The manifest list of a snapshot.
    pub fn manifest_list(&self, snapshot_id: i64, id: impl std::fmt::Display) -> String {
        format!("{}/metadata/snap-{snapshot_id}-{id}.avro", self.dir)
    }

    /// The metadata file of a version (what the catalog record points at).
    pub fn metadata(&self, version: i64, id: impl std::fmt::Display) -> String {
        format!("{}/metadata/{version:05}-{id}.metadata.json", self.dir)
    }

    /// The metadata file named by version alone, for directory readers.
    pub fn numbered_metadata(&self, version: i64) -> String {
        format!("{}/metadata/v{version}.metadata.json", self.dir)
    }

    pub fn version_hint(&self) -> String {
        format!("{}/metadata/version-hint.text", self.dir)
    }

    /// The topic name of a key under [`ICEBERG_TABLES`].
    pub fn topic_of(key: &str) -> Option<&str> {
        let rest = key.strip_prefix(ICEBERG_TABLES)?.strip_prefix('/')?;
        rest.split_once('/').map(|(topic, _)| topic)
    }

    /// Whether a key is a version-numbered file (`v<n>.metadata.json`), which a
    /// table created again under the same name rewrites.
    pub fn is_numbered(key: &str) -> bool {
        key.rsplit('/')
            .next()
            .and_then(|f| f.strip_prefix('v'))
            .and_then(|f| f.strip_suffix(".metadata.json"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    }
}

/// Whether an object under `lake/` is a data file (Parquet), not table metadata.
pub fn is_lake_data(key: &str) -> bool {
    key.starts_with(LAKE_PREFIX) && !key.starts_with(ICEBERG_TABLES) && key.ends_with(".parquet")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable() {
        let id = Ulid::from_parts(1, 2);
        assert_eq!(
            wal_object(3, 7, id).as_ref(),
            format!("wal/3/7/{id}.wal").as_str()
        );
        assert_eq!(
            segment("abc", 2, 42, id).as_ref(),
            format!("seg/abc/2/00000000000000000042-{id}.seg").as_str()
        );
        assert_eq!(
            lake_file("t", 2, 42, 50, id).as_ref(),
            format!("lake/t/partition=2/00000000000000000042-00000000000000000050-{id}.parquet")
                .as_str()
        );
        assert!(is_lake_data(lake_file("t", 2, 42, 50, id).as_ref()));
    }

    #[test]
    fn iceberg_keys_live_under_the_warehouse_and_are_not_lake_data() {
        let t = IcebergTable::new("orders");
        assert_eq!(t.location(), "lake/_iceberg/kafka/orders");
        let keys = [
            t.manifest("u"),
            t.manifest_list(7, "u"),
            t.metadata(3, "u"),
            t.numbered_metadata(3),
            t.version_hint(),
        ];
        for k in &keys {
            assert_eq!(IcebergTable::topic_of(k), Some("orders"), "{k}");
            assert!(!is_lake_data(k), "{k}");
        }
        assert_eq!(
            t.metadata(3, "u"),
            "lake/_iceberg/kafka/orders/metadata/00003-u.metadata.json"
        );
        assert!(IcebergTable::is_numbered(&t.numbered_metadata(12)));
        assert!(!IcebergTable::is_numbered(&t.metadata(12, "u")));
        assert!(!IcebergTable::is_numbered(&t.version_hint()));
        assert_eq!(
            IcebergTable::topic_of("lake/orders/partition=0/x.parquet"),
            None
        );
    }
}
