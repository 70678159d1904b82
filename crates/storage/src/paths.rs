//! Every object key Sluice writes, in one place.
//!
//! - `wal/<broker>/<generation>/<ulid>.wal`: write-ahead objects, one per flush.
//! - `seg/<topic-id>/<partition>/<base-offset>.seg`: per-partition segments.
//! - `lake/<topic>/partition=<p>/…parquet`: Parquet for lakehouse tools.

use object_store::path::Path;
use ulid::Ulid;

/// Prefix of every write-ahead object.
pub const WAL_PREFIX: &str = "wal";

/// Key of a new write-ahead object of `broker` written under `generation`.
pub fn wal_object(broker: i32, generation: u64, id: Ulid) -> Path {
    Path::from(format!("{WAL_PREFIX}/{broker}/{generation}/{id}.wal"))
}

/// Key of a per-partition segment whose first offset is `base_offset`.
pub fn segment(topic_id: &str, partition: i32, base_offset: i64) -> Path {
    Path::from(format!("seg/{topic_id}/{partition}/{base_offset:020}.seg"))
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
            segment("abc", 2, 42).as_ref(),
            "seg/abc/2/00000000000000000042.seg"
        );
    }
}
