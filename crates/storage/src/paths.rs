//! Every object key Sluice writes, in one place.
//!
//! - `wal/<broker>/<generation>/<ulid>.wal`: write-ahead objects, one per flush.
//! - `seg/<topic-id>/<partition>/<base-offset>-<ulid>.seg`: per-partition segments.
//! - `lake/<topic>/partition=<p>/<base>-<last>-<ulid>.parquet`: Parquet for lakehouse
//!   tools, and the one copy of the records it holds.

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
    }
}
