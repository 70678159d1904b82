//! Writes the seed corpora (`fuzz/corpus/<target>/`): one valid input per API and
//! version, batches in every codec, a write-ahead object, stored records, and an
//! embedded store's log. Run from `fuzz/`: `cargo run --bin seeds`.

use std::fs;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use sluice_engine::compaction::{Checkpoint, FoldedFile};
use sluice_engine::keyspace::{
    AbortedTxn, AssignmentRecord, Leader, Manifest, ManifestSlice, OpenTxn, Stored, TxnMarker,
};
use sluice_engine::partition::{Format, ProducerBatch};
use sluice_meta::{EmbeddedStore, MetaStore, Op, Txn};
use sluice_protocol::api::SUPPORTED;
use sluice_storage::wal::{WalObjectBuilder, WalSlice};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("corpus").join(target);
    fs::create_dir_all(&dir).expect("corpus directory");
    fs::write(dir.join(name), bytes).expect("seed");
}

fn body(api: ApiKey) -> Option<RequestKind> {
    use RequestKind as R;
    Some(match api {
        ApiKey::Produce => R::Produce(ProduceRequest::default().with_topic_data(vec![
            produce_request::TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partition_data(vec![produce_request::PartitionProduceData::default()
                    .with_records(Some(batch(Compression::None)))]),
        ])),
        ApiKey::Fetch => R::Fetch(FetchRequest::default()),
        ApiKey::ListOffsets => R::ListOffsets(ListOffsetsRequest::default()),
        ApiKey::Metadata => R::Metadata(MetadataRequest::default()),
        ApiKey::ApiVersions => R::ApiVersions(ApiVersionsRequest::default()),
        ApiKey::CreateTopics => R::CreateTopics(CreateTopicsRequest::default()),
        ApiKey::DeleteTopics => R::DeleteTopics(DeleteTopicsRequest::default()),
        ApiKey::InitProducerId => R::InitProducerId(InitProducerIdRequest::default()),
        ApiKey::DescribeConfigs => R::DescribeConfigs(DescribeConfigsRequest::default()),
        ApiKey::AlterConfigs => R::AlterConfigs(AlterConfigsRequest::default()),
        ApiKey::CreatePartitions => R::CreatePartitions(CreatePartitionsRequest::default()),
        ApiKey::IncrementalAlterConfigs => {
            R::IncrementalAlterConfigs(IncrementalAlterConfigsRequest::default())
        }
        ApiKey::DescribeCluster => R::DescribeCluster(DescribeClusterRequest::default()),
        ApiKey::DeleteRecords => R::DeleteRecords(DeleteRecordsRequest::default()),
        ApiKey::FindCoordinator => R::FindCoordinator(FindCoordinatorRequest::default()),
        ApiKey::OffsetCommit => R::OffsetCommit(OffsetCommitRequest::default()),
        ApiKey::OffsetFetch => R::OffsetFetch(OffsetFetchRequest::default()),
        ApiKey::JoinGroup => R::JoinGroup(JoinGroupRequest::default()),
        ApiKey::SyncGroup => R::SyncGroup(SyncGroupRequest::default()),
        ApiKey::Heartbeat => R::Heartbeat(HeartbeatRequest::default()),
        ApiKey::LeaveGroup => R::LeaveGroup(LeaveGroupRequest::default()),
        ApiKey::ListGroups => R::ListGroups(ListGroupsRequest::default()),
        ApiKey::DescribeGroups => R::DescribeGroups(DescribeGroupsRequest::default()),
        ApiKey::DeleteGroups => R::DeleteGroups(DeleteGroupsRequest::default()),
        ApiKey::OffsetDelete => R::OffsetDelete(OffsetDeleteRequest::default()),
        ApiKey::ConsumerGroupHeartbeat => {
            R::ConsumerGroupHeartbeat(ConsumerGroupHeartbeatRequest::default())
        }
        ApiKey::ConsumerGroupDescribe => {
            R::ConsumerGroupDescribe(ConsumerGroupDescribeRequest::default())
        }
        ApiKey::AddPartitionsToTxn => R::AddPartitionsToTxn(AddPartitionsToTxnRequest::default()),
        ApiKey::AddOffsetsToTxn => R::AddOffsetsToTxn(AddOffsetsToTxnRequest::default()),
        ApiKey::EndTxn => R::EndTxn(EndTxnRequest::default()),
        ApiKey::TxnOffsetCommit => R::TxnOffsetCommit(TxnOffsetCommitRequest::default()),
        ApiKey::DescribeProducers => R::DescribeProducers(DescribeProducersRequest::default()),
        ApiKey::DescribeTransactions => {
            R::DescribeTransactions(DescribeTransactionsRequest::default())
        }
        ApiKey::ListTransactions => R::ListTransactions(ListTransactionsRequest::default()),
        _ => return None,
    })
}

fn batch(compression: Compression) -> Bytes {
    let records: Vec<Record> = (0..3)
        .map(|i| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: -1,
            producer_id: 7,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: i,
            sequence: i as i32,
            timestamp: 1_700_000_000_000 + i,
            key: Some(Bytes::from(format!("key-{i}"))),
            value: (i != 2).then(|| Bytes::from(vec![b'v'; 40])),
            headers: [(
                StrBytes::from_static_str("h"),
                Some(Bytes::from_static(b"x")),
            )]
            .into_iter()
            .collect(),
            delete_horizon: false,
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encodes");
    buf.freeze()
}

fn requests() {
    for (i, &(api, min, max)) in SUPPORTED.iter().enumerate() {
        let Some(body) = body(api) else { continue };
        for v in min..=max {
            let header = RequestHeader::default()
                .with_request_api_key(api as i16)
                .with_request_api_version(v)
                .with_correlation_id(1)
                .with_client_id(Some(StrBytes::from_static_str("seed")));
            let mut frame = BytesMut::new();
            if header
                .encode(&mut frame, api.request_header_version(v))
                .is_err()
                || body.encode(&mut frame, v).is_err()
            {
                continue;
            }
            // The target's form: API index, version step, then the frame after its
            // fixed eight bytes.
            let mut seed = vec![i as u8, (v - min) as u8];
            seed.extend_from_slice(&frame[8..]);
            write("request", &format!("{api:?}-v{v}"), &seed);
        }
    }
}

fn batches() -> Vec<Bytes> {
    let codecs = [
        ("none", Compression::None),
        ("gzip", Compression::Gzip),
        ("snappy", Compression::Snappy),
        ("lz4", Compression::Lz4),
        ("zstd", Compression::Zstd),
    ];
    codecs
        .iter()
        .map(|(name, c)| {
            let b = batch(*c);
            write("record_batch", name, &b);
            b
        })
        .collect()
}

fn wal(batches: &[Bytes]) {
    let mut b = WalObjectBuilder::new();
    b.add_slice(
        uuid::Uuid::from_bytes([1; 16]),
        0,
        0,
        2,
        1_700_000_000_002,
        batches[..2].iter().cloned(),
    );
    b.add_slice(
        uuid::Uuid::from_bytes([2; 16]),
        3,
        10,
        12,
        1_700_000_000_002,
        batches[2..].iter().cloned(),
    );
    let (payload, _, _) = b.finish();
    let object: Vec<u8> = payload.iter().flat_map(|c| c.iter().copied()).collect();
    write("wal_object", "two-slices", &object);
}

fn records() {
    let producer = ProducerBatch {
        producer_id: 7,
        epoch: 0,
        first_seq: 0,
        last_seq: 2,
        base_offset: 0,
        append_ms: 1_700_000_000_000,
        txn: true,
    };
    let manifest = Manifest {
        object: "wal/0000000000/0000000001/0000000000000001.wal".into(),
        object_len: 4096,
        slices: vec![ManifestSlice {
            slice: WalSlice {
                topic_id: uuid::Uuid::from_bytes([1; 16]),
                partition: 0,
                base_offset: 0,
                last_offset: 2,
                start: 8,
                len: 300,
                max_timestamp: 1_700_000_000_002,
            },
            producers: vec![producer],
            markers: vec![TxnMarker {
                producer_id: 7,
                epoch: 0,
                commit: false,
                offset: 2,
            }],
        }],
    };
    write("metadata_records", "manifest", &manifest.encode());
    let checkpoint = Checkpoint {
        folded_to: 100,
        cleaned_to: 50,
        files: vec![FoldedFile {
            object: "lake/t/partition=0/x.parquet".into(),
            object_len: 1000,
            format: Format::Parquet,
            base_offset: 0,
            last_offset: 99,
            max_timestamp: 1,
            len: 5000,
            records: 100,
        }],
        producers: vec![producer],
        open_txns: vec![OpenTxn {
            producer_id: 8,
            epoch: 1,
            first_offset: 90,
        }],
        aborted: vec![AbortedTxn {
            producer_id: 7,
            first_offset: 0,
            last_offset: 2,
        }],
    };
    write("metadata_records", "checkpoint", &checkpoint.encode());
    let assignment = AssignmentRecord {
        leaders: vec![Leader {
            broker: 1,
            epoch: 3,
        }],
    };
    write(
        "metadata_records",
        "assignment",
        &serde_json::to_vec(&assignment).expect("json"),
    );
}

async fn log() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = EmbeddedStore::open(dir.path()).expect("store");
        store
            .txn(Txn::when(vec![]).then(vec![
                Op::put("a", b"1".to_vec()),
                Op::put("b", b"2".to_vec()),
            ]))
            .await
            .expect("txn");
        let lease = store
            .grant_lease(std::time::Duration::from_secs(60))
            .await
            .expect("lease");
        store
            .txn(Txn::when(vec![]).then(vec![
                Op::Put {
                    key: "c".into(),
                    value: b"3".to_vec().into(),
                    lease: Some(lease),
                },
                Op::Delete("a".into()),
                Op::DeletePrefix("x/".into()),
            ]))
            .await
            .expect("txn");
    }
    let bytes = fs::read(dir.path().join("meta.log")).expect("log");
    write("embedded_log", "three-records", &bytes);
}

fn main() {
    requests();
    let b = batches();
    wal(&b);
    records();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(log());
}
