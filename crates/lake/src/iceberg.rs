//! Iceberg table metadata for a topic's lake files (format version 2), so Iceberg
//! readers (pyiceberg, Spark, Trino, DuckDB) see each topic as a table.
//!
//! A table is unpartitioned by time and identity-partitioned by Kafka `partition`.
//! Every snapshot lists all of the topic's live lake files in one manifest: it
//! replaces the previous snapshot (operation `overwrite`), since retention removes
//! files as well as compaction adding them. The summary of each snapshot records,
//! per Kafka partition, the offsets it holds (`sluice.partition.<p>.offsets` =
//! `<first>-<last>`).
//!
//! Manifests and manifest lists are Avro object container files, written here
//! directly (uncompressed, one block): the schemas are fixed and small.

use serde_json::{json, Value};

/// The table schema, as Iceberg JSON (the field ids of [`crate::SCHEMA`]).
pub fn table_schema() -> Value {
    json!({
        "type": "struct",
        "schema-id": 0,
        "fields": [
            {"id": 1, "name": "partition", "required": true, "type": "int"},
            {"id": 2, "name": "offset", "required": true, "type": "long"},
            {"id": 3, "name": "timestamp", "required": true, "type": "long"},
            {"id": 4, "name": "timestamp_type", "required": true, "type": "string"},
            {"id": 5, "name": "key", "required": false, "type": "binary"},
            {"id": 6, "name": "value", "required": false, "type": "binary"},
            {"id": 7, "name": "headers", "required": true, "type": {
                "type": "list", "element-id": 8, "element-required": true,
                "element": {"type": "struct", "fields": [
                    {"id": 9, "name": "key", "required": true, "type": "string"},
                    {"id": 10, "name": "value", "required": false, "type": "binary"},
                ]},
            }},
        ],
    })
}

fn partition_fields() -> Value {
    json!([{"name": "partition", "transform": "identity", "source-id": 1, "field-id": 1000}])
}

/// One lake file as a table's data file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    /// Full URI (`s3://bucket/prefix/lake/...`).
    pub path: String,
    pub partition: i32,
    pub record_count: i64,
    pub file_size: i64,
    /// Offset bounds (need not be tight).
    pub first_offset: i64,
    pub last_offset: i64,
}

/// A manifest listing `files` as added by `snapshot_id`.
pub fn manifest(snapshot_id: i64, sequence_number: i64, files: &[DataFile]) -> Vec<u8> {
    let schema = json!({
        "type": "record", "name": "manifest_entry", "fields": [
            {"name": "status", "type": "int", "field-id": 0},
            {"name": "snapshot_id", "type": ["null", "long"], "default": null, "field-id": 1},
            {"name": "sequence_number", "type": ["null", "long"], "default": null, "field-id": 3},
            {"name": "file_sequence_number", "type": ["null", "long"], "default": null, "field-id": 4},
            {"name": "data_file", "field-id": 2, "type": {"type": "record", "name": "r2", "fields": [
                {"name": "content", "type": "int", "field-id": 134},
                {"name": "file_path", "type": "string", "field-id": 100},
                {"name": "file_format", "type": "string", "field-id": 101},
                {"name": "partition", "field-id": 102, "type": {"type": "record", "name": "r102", "fields": [
                    {"name": "partition", "type": ["null", "int"], "default": null, "field-id": 1000},
                ]}},
                {"name": "record_count", "type": "long", "field-id": 103},
                {"name": "file_size_in_bytes", "type": "long", "field-id": 104},
                {"name": "lower_bounds", "default": null, "field-id": 125, "type": ["null", bounds("k126_v127", 126, 127)]},
                {"name": "upper_bounds", "default": null, "field-id": 128, "type": ["null", bounds("k129_v130", 129, 130)]},
            ]}},
        ],
    });
    let mut body = Vec::new();
    for f in files {
        put_long(&mut body, 1); // status: added
        for v in [snapshot_id, sequence_number, sequence_number] {
            put_long(&mut body, 1); // union branch: long
            put_long(&mut body, v);
        }
        put_long(&mut body, 0); // content: data
        put_bytes(&mut body, f.path.as_bytes());
        put_bytes(&mut body, b"PARQUET");
        put_long(&mut body, 1);
        put_long(&mut body, i64::from(f.partition));
        put_long(&mut body, f.record_count);
        put_long(&mut body, f.file_size);
        for bound in [f.first_offset, f.last_offset] {
            put_long(&mut body, 1); // union branch: the map
            put_long(&mut body, 1); // one entry: the offset column
            put_long(&mut body, 2);
            put_bytes(&mut body, &bound.to_le_bytes());
            put_long(&mut body, 0);
        }
    }
    let meta = [
        ("schema", table_schema().to_string()),
        ("schema-id", "0".to_string()),
        ("partition-spec", partition_fields().to_string()),
        ("partition-spec-id", "0".to_string()),
        ("format-version", "2".to_string()),
        ("content", "data".to_string()),
    ];
    container(&schema, &meta, files.len(), &body)
}

fn bounds(name: &str, key_id: i32, value_id: i32) -> Value {
    json!({"type": "array", "logicalType": "map", "items": {"type": "record", "name": name, "fields": [
        {"name": "key", "type": "int", "field-id": key_id},
        {"name": "value", "type": "bytes", "field-id": value_id},
    ]}})
}

/// What a manifest list says about its one manifest.
#[derive(Debug, Clone)]
pub struct ManifestSummary {
    pub path: String,
    pub length: i64,
    pub files: i32,
    pub rows: i64,
}

/// The manifest list of a snapshot with one manifest.
pub fn manifest_list(
    snapshot_id: i64,
    parent: Option<i64>,
    sequence_number: i64,
    m: &ManifestSummary,
) -> Vec<u8> {
    let schema = json!({
        "type": "record", "name": "manifest_file", "fields": [
            {"name": "manifest_path", "type": "string", "field-id": 500},
            {"name": "manifest_length", "type": "long", "field-id": 501},
            {"name": "partition_spec_id", "type": "int", "field-id": 502},
            {"name": "content", "type": "int", "field-id": 517},
            {"name": "sequence_number", "type": "long", "field-id": 515},
            {"name": "min_sequence_number", "type": "long", "field-id": 516},
            {"name": "added_snapshot_id", "type": "long", "field-id": 503},
            {"name": "added_files_count", "type": "int", "field-id": 504},
            {"name": "existing_files_count", "type": "int", "field-id": 505},
            {"name": "deleted_files_count", "type": "int", "field-id": 506},
            {"name": "added_rows_count", "type": "long", "field-id": 512},
            {"name": "existing_rows_count", "type": "long", "field-id": 513},
            {"name": "deleted_rows_count", "type": "long", "field-id": 514},
        ],
    });
    let mut body = Vec::new();
    put_bytes(&mut body, m.path.as_bytes());
    for v in [
        m.length,
        0,
        0,
        sequence_number,
        sequence_number,
        snapshot_id,
    ] {
        put_long(&mut body, v);
    }
    for v in [i64::from(m.files), 0, 0, m.rows, 0, 0] {
        put_long(&mut body, v);
    }
    let meta = [
        ("snapshot-id", snapshot_id.to_string()),
        (
            "parent-snapshot-id",
            parent.map_or("null".to_string(), |p| p.to_string()),
        ),
        ("sequence-number", sequence_number.to_string()),
        ("format-version", "2".to_string()),
    ];
    container(&schema, &meta, 1, &body)
}

/// A new snapshot of a table.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub id: i64,
    pub sequence_number: i64,
    pub timestamp_ms: i64,
    pub manifest_list: String,
    /// Extra summary properties (offsets per partition).
    pub summary: Vec<(String, String)>,
    pub files: i64,
    pub rows: i64,
}

/// Snapshots a table's metadata keeps (older ones are dropped from it).
const SNAPSHOTS_KEPT: usize = 20;

/// The table metadata after `snapshot`, from the previous metadata if any.
pub fn table_metadata(
    previous: Option<&Value>,
    previous_location: Option<&str>,
    table_uuid: &str,
    location: &str,
    snapshot: &Snapshot,
) -> Value {
    let mut summary = serde_json::Map::new();
    summary.insert("operation".into(), json!("overwrite"));
    summary.insert("total-data-files".into(), json!(snapshot.files.to_string()));
    summary.insert("total-records".into(), json!(snapshot.rows.to_string()));
    for (k, v) in &snapshot.summary {
        summary.insert(k.clone(), json!(v));
    }
    let parent = previous
        .and_then(|p| p.get("current-snapshot-id"))
        .and_then(Value::as_i64);
    let mut entry = json!({
        "snapshot-id": snapshot.id,
        "sequence-number": snapshot.sequence_number,
        "timestamp-ms": snapshot.timestamp_ms,
        "manifest-list": snapshot.manifest_list,
        "summary": summary,
        "schema-id": 0,
    });
    if let Some(p) = parent {
        entry["parent-snapshot-id"] = json!(p);
    }
    let list = |name: &str| -> Vec<Value> {
        previous
            .and_then(|p| p.get(name))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let mut snapshots = list("snapshots");
    snapshots.push(entry);
    let mut snapshot_log = list("snapshot-log");
    snapshot_log.push(json!({"snapshot-id": snapshot.id, "timestamp-ms": snapshot.timestamp_ms}));
    let mut metadata_log = list("metadata-log");
    if let (Some(loc), Some(p)) = (previous_location, previous) {
        let ts = p.get("last-updated-ms").cloned().unwrap_or(json!(0));
        metadata_log.push(json!({"metadata-file": loc, "timestamp-ms": ts}));
    }
    for l in [&mut snapshots, &mut snapshot_log, &mut metadata_log] {
        let extra = l.len().saturating_sub(SNAPSHOTS_KEPT);
        l.drain(..extra);
    }
    json!({
        "format-version": 2,
        "table-uuid": table_uuid,
        "location": location,
        "last-sequence-number": snapshot.sequence_number,
        "last-updated-ms": snapshot.timestamp_ms,
        "last-column-id": 10,
        "current-schema-id": 0,
        "schemas": [table_schema()],
        "default-spec-id": 0,
        "partition-specs": [{"spec-id": 0, "fields": partition_fields()}],
        "last-partition-id": 1000,
        "default-sort-order-id": 0,
        "sort-orders": [{"order-id": 0, "fields": []}],
        "properties": {"written-by": "sluice", "format-version": "2"},
        "current-snapshot-id": snapshot.id,
        "refs": {"main": {"snapshot-id": snapshot.id, "type": "branch"}},
        "snapshots": snapshots,
        "snapshot-log": snapshot_log,
        "metadata-log": metadata_log,
    })
}

/// An Avro object container file: header (schema and metadata), one block.
fn container(schema: &Value, meta: &[(&str, String)], count: usize, body: &[u8]) -> Vec<u8> {
    // The sync marker only has to be absent from the data in practice; derive it
    // from the contents so equal inputs give equal files.
    let digest = crc32fast_like(body).to_le_bytes();
    let mut sync = [0u8; 16];
    for (i, b) in sync.iter_mut().enumerate() {
        *b = digest[i % 4] ^ (i as u8).wrapping_mul(0x9d);
    }
    let mut out = b"Obj\x01".to_vec();
    put_long(&mut out, meta.len() as i64 + 2);
    put_bytes(&mut out, b"avro.schema");
    put_bytes(&mut out, schema.to_string().as_bytes());
    put_bytes(&mut out, b"avro.codec");
    put_bytes(&mut out, b"null");
    for (k, v) in meta {
        put_bytes(&mut out, k.as_bytes());
        put_bytes(&mut out, v.as_bytes());
    }
    put_long(&mut out, 0);
    out.extend_from_slice(&sync);
    put_long(&mut out, count as i64);
    put_long(&mut out, body.len() as i64);
    out.extend_from_slice(body);
    out.extend_from_slice(&sync);
    out
}

/// A cheap content hash for the sync marker (not a checksum anyone verifies).
fn crc32fast_like(data: &[u8]) -> u32 {
    data.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// Avro `long` (and `int`): zig-zag, then variable-length, as in Kafka records.
fn put_long(out: &mut Vec<u8>, v: i64) {
    sluice_protocol::records::put_varlong(out, v);
}

/// Avro `bytes` and `string`: length, then the bytes.
fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_long(out, b.len() as i64);
    out.extend_from_slice(b);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avro_longs_are_zigzag_varints() {
        let enc = |v| {
            let mut o = Vec::new();
            put_long(&mut o, v);
            o
        };
        assert_eq!(enc(0), [0]);
        assert_eq!(enc(-1), [1]);
        assert_eq!(enc(1), [2]);
        assert_eq!(enc(64), [0x80, 0x01]);
    }

    #[test]
    fn metadata_keeps_history_and_links_parents() {
        let snap = |id| Snapshot {
            id,
            sequence_number: id,
            timestamp_ms: 1000 * id,
            manifest_list: format!("s3://b/l/snap-{id}.avro"),
            summary: vec![("sluice.partition.0.offsets".into(), "0-9".into())],
            files: 1,
            rows: 10,
        };
        let first = table_metadata(None, None, "u", "s3://b/l", &snap(1));
        let second = table_metadata(
            Some(&first),
            Some("s3://b/l/metadata/v1.metadata.json"),
            "u",
            "s3://b/l",
            &snap(2),
        );
        assert_eq!(second["current-snapshot-id"], 2);
        assert_eq!(second["snapshots"].as_array().map(Vec::len), Some(2));
        assert_eq!(second["snapshots"][1]["parent-snapshot-id"], 1);
        assert_eq!(
            second["metadata-log"][0]["metadata-file"],
            "s3://b/l/metadata/v1.metadata.json"
        );
        assert_eq!(
            second["snapshots"][1]["summary"]["sluice.partition.0.offsets"],
            "0-9"
        );
        let file = manifest(
            2,
            2,
            &[DataFile {
                path: "s3://b/l/partition=0/x.parquet".into(),
                partition: 0,
                record_count: 10,
                file_size: 100,
                first_offset: 0,
                last_offset: 9,
            }],
        );
        assert!(file.starts_with(b"Obj\x01"));
    }
}
