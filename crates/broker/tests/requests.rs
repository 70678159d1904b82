//! Handlers driven with decoded requests, no socket. Above all: every API the broker
//! advertises, at every advertised version, yields a response that encodes
//! (kafka-protocol refuses to encode a field set in a version that lacks it, so this
//! catches version gating mistakes before a client does).

#![allow(clippy::unwrap_used)] // a test: panicking is how it fails

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_broker::{coordinator, Broker, BrokerIdentity, Reply};
use sluice_control::membership::Membership;
use sluice_engine::keyspace::BrokerRecord;
use sluice_engine::{Engine, EngineConfig};
use sluice_meta::EmbeddedStore;
use sluice_protocol::api::SUPPORTED;
use sluice_protocol::codec::{encode_response, Request};

fn records() -> Bytes {
    sluice_testkit::batches::keyed("k", "v", 1_700_000_000_000)
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn topic_name(v: &str) -> TopicName {
    TopicName(s(v))
}

fn request(api: ApiKey, topic_id: uuid::Uuid) -> RequestKind {
    let t = "every";
    match api {
        ApiKey::Produce => {
            RequestKind::Produce(ProduceRequest::default().with_acks(-1).with_topic_data(
                vec![produce_request::TopicProduceData::default()
                    .with_name(topic_name(t))
                    .with_partition_data(vec![
                        produce_request::PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(records())),
                        produce_request::PartitionProduceData::default()
                            .with_index(9)
                            .with_records(Some(records())),
                    ])],
            ))
        }
        ApiKey::Fetch => {
            RequestKind::Fetch(FetchRequest::default().with_max_bytes(1 << 20).with_topics(
                vec![fetch_request::FetchTopic::default()
                    .with_topic(topic_name(t))
                    .with_topic_id(topic_id)
                    .with_partitions(vec![
                        fetch_request::FetchPartition::default()
                            .with_partition(0)
                            .with_partition_max_bytes(1 << 20),
                        fetch_request::FetchPartition::default()
                            .with_partition(0)
                            .with_fetch_offset(99),
                    ])],
            ))
        }
        ApiKey::ListOffsets => RequestKind::ListOffsets(ListOffsetsRequest::default().with_topics(
            vec![list_offsets_request::ListOffsetsTopic::default()
                .with_name(topic_name(t))
                .with_partitions(
                    [-1, -2, -3, 0, 1_700_000_000_000, 1_800_000_000_000]
                        .into_iter()
                        .map(|ts| {
                            list_offsets_request::ListOffsetsPartition::default().with_timestamp(ts)
                        })
                        .collect(),
                )],
        )),
        ApiKey::Metadata => {
            RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![
                metadata_request::MetadataRequestTopic::default().with_name(Some(topic_name(t))),
                metadata_request::MetadataRequestTopic::default()
                    .with_name(Some(topic_name("bad name"))),
            ])))
        }
        ApiKey::ApiVersions => RequestKind::ApiVersions(ApiVersionsRequest::default()),
        ApiKey::CreateTopics => RequestKind::CreateTopics(
            CreateTopicsRequest::default()
                .with_topics(vec![
                    create_topics_request::CreatableTopic::default()
                        .with_name(topic_name(t))
                        .with_num_partitions(1)
                        .with_replication_factor(1),
                    create_topics_request::CreatableTopic::default()
                        .with_name(topic_name("fresh"))
                        .with_num_partitions(1)
                        .with_replication_factor(1)
                        .with_configs(vec![create_topics_request::CreatableTopicConfig::default()
                            .with_name(s("retention.ms"))
                            .with_value(Some(s("1000")))]),
                ])
                .with_validate_only(true),
        ),
        ApiKey::DeleteTopics => RequestKind::DeleteTopics(
            DeleteTopicsRequest::default().with_topic_names(vec![topic_name("missing")]),
        ),
        ApiKey::InitProducerId => RequestKind::InitProducerId(InitProducerIdRequest::default()),
        ApiKey::DescribeConfigs => {
            RequestKind::DescribeConfigs(DescribeConfigsRequest::default().with_resources(vec![
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s(t)),
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("missing")),
            ]))
        }
        ApiKey::AlterConfigs => {
            RequestKind::AlterConfigs(AlterConfigsRequest::default().with_resources(vec![
            alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s(t))
                .with_configs(vec![alter_configs_request::AlterableConfig::default()
                    .with_name(s("retention.ms"))
                    .with_value(Some(s("bad")))]),
        ]))
        }
        ApiKey::CreatePartitions => {
            RequestKind::CreatePartitions(CreatePartitionsRequest::default().with_topics(vec![
                create_partitions_request::CreatePartitionsTopic::default()
                    .with_name(topic_name(t))
                    .with_count(1),
            ]))
        }
        ApiKey::IncrementalAlterConfigs => RequestKind::IncrementalAlterConfigs(
            IncrementalAlterConfigsRequest::default().with_resources(vec![
                incremental_alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s(t))
                    .with_configs(vec![
                        incremental_alter_configs_request::AlterableConfig::default()
                            .with_name(s("cleanup.policy"))
                            .with_config_operation(0)
                            .with_value(Some(s("compact"))),
                    ]),
            ]),
        ),
        ApiKey::DescribeCluster => RequestKind::DescribeCluster(DescribeClusterRequest::default()),
        ApiKey::FindCoordinator => RequestKind::FindCoordinator(
            FindCoordinatorRequest::default()
                .with_key(s("g"))
                .with_coordinator_keys(vec![s("g"), s("h")]),
        ),
        ApiKey::OffsetCommit => RequestKind::OffsetCommit(
            OffsetCommitRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![
                    offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(topic_name(t))
                        .with_partitions(vec![
                            offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(5)
                                .with_committed_metadata(Some(s("meta"))),
                            offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_partition_index(9)
                                .with_committed_offset(1),
                        ]),
                ]),
        ),
        ApiKey::OffsetFetch => RequestKind::OffsetFetch(
            OffsetFetchRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_topics(Some(vec![
                    offset_fetch_request::OffsetFetchRequestTopic::default()
                        .with_name(topic_name(t))
                        .with_partition_indexes(vec![0, 1]),
                ]))
                .with_groups(vec![
                    offset_fetch_request::OffsetFetchRequestGroup::default()
                        .with_group_id(GroupId(s("g"))),
                    offset_fetch_request::OffsetFetchRequestGroup::default()
                        .with_group_id(GroupId(s("other")))
                        .with_topics(Some(vec![
                            offset_fetch_request::OffsetFetchRequestTopics::default()
                                .with_name(topic_name(t))
                                .with_partition_indexes(vec![0]),
                        ])),
                ]),
        ),
        ApiKey::JoinGroup => RequestKind::JoinGroup(
            JoinGroupRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_session_timeout_ms(6_000)
                // Each version's join is a new member; earlier ones are dropped fast.
                .with_rebalance_timeout_ms(50)
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
                )
                .with_name(s("range"))
                .with_metadata(Bytes::from_static(b"m"))]),
        ),
        ApiKey::SyncGroup => RequestKind::SyncGroup(
            SyncGroupRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_member_id(s("nobody")),
        ),
        ApiKey::Heartbeat => RequestKind::Heartbeat(
            HeartbeatRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_member_id(s("nobody")),
        ),
        ApiKey::LeaveGroup => RequestKind::LeaveGroup(
            LeaveGroupRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_member_id(s("nobody"))
                .with_members(vec![
                    leave_group_request::MemberIdentity::default().with_member_id(s("nobody"))
                ]),
        ),
        ApiKey::ListGroups => RequestKind::ListGroups(ListGroupsRequest::default()),
        ApiKey::DescribeGroups => {
            RequestKind::DescribeGroups(DescribeGroupsRequest::default().with_groups(vec![
                GroupId(s("g")),
                GroupId(s("g848")),
                GroupId(s("gone")),
            ]))
        }
        ApiKey::DeleteGroups => RequestKind::DeleteGroups(
            DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s("gone"))]),
        ),
        ApiKey::DeleteRecords => {
            RequestKind::DeleteRecords(DeleteRecordsRequest::default().with_topics(vec![
                delete_records_request::DeleteRecordsTopic::default()
                    .with_name(topic_name(t))
                    .with_partitions(vec![
                        delete_records_request::DeleteRecordsPartition::default().with_offset(0),
                        delete_records_request::DeleteRecordsPartition::default()
                            .with_partition_index(7)
                            .with_offset(5),
                    ]),
            ]))
        }
        ApiKey::DescribeLogDirs => {
            RequestKind::DescribeLogDirs(DescribeLogDirsRequest::default().with_topics(Some(vec![
                describe_log_dirs_request::DescribableLogDirTopic::default()
                    .with_topic(topic_name(t))
                    .with_partitions(vec![0, 9]),
            ])))
        }
        ApiKey::ElectLeaders => RequestKind::ElectLeaders(
            ElectLeadersRequest::default().with_topic_partitions(Some(vec![
                elect_leaders_request::TopicPartitions::default()
                    .with_topic(topic_name(t))
                    .with_partitions(vec![0, 9]),
            ])),
        ),
        ApiKey::AlterPartitionReassignments => RequestKind::AlterPartitionReassignments(
            AlterPartitionReassignmentsRequest::default().with_topics(vec![
                alter_partition_reassignments_request::ReassignableTopic::default()
                    .with_name(topic_name(t))
                    .with_partitions(vec![
                        alter_partition_reassignments_request::ReassignablePartition::default()
                            .with_replicas(Some(vec![BrokerId(0)])),
                        alter_partition_reassignments_request::ReassignablePartition::default()
                            .with_partition_index(9)
                            .with_replicas(Some(vec![BrokerId(1)])),
                    ]),
            ]),
        ),
        ApiKey::ListPartitionReassignments => {
            RequestKind::ListPartitionReassignments(ListPartitionReassignmentsRequest::default())
        }
        ApiKey::OffsetDelete => RequestKind::OffsetDelete(
            OffsetDeleteRequest::default()
                .with_group_id(GroupId(s("gone")))
                .with_topics(vec![
                    offset_delete_request::OffsetDeleteRequestTopic::default()
                        .with_name(topic_name(t))
                        .with_partitions(vec![
                            offset_delete_request::OffsetDeleteRequestPartition::default(),
                        ]),
                ]),
        ),
        ApiKey::ConsumerGroupHeartbeat => RequestKind::ConsumerGroupHeartbeat(
            ConsumerGroupHeartbeatRequest::default()
                .with_group_id(GroupId(s("g848")))
                .with_member_id(s("m1"))
                .with_rebalance_timeout_ms(30_000)
                .with_subscribed_topic_names(Some(vec![topic_name(t)]))
                .with_topic_partitions(Some(vec![])),
        ),
        ApiKey::ConsumerGroupDescribe => RequestKind::ConsumerGroupDescribe(
            ConsumerGroupDescribeRequest::default()
                .with_group_ids(vec![GroupId(s("g848")), GroupId(s("gone"))]),
        ),
        ApiKey::AddPartitionsToTxn => RequestKind::AddPartitionsToTxn(
            AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(TransactionalId(s("tx")))
                .with_v3_and_below_topics(vec![
                    add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                        .with_name(topic_name(t))
                        .with_partitions(vec![0, 9]),
                ]),
        ),
        ApiKey::AddOffsetsToTxn => RequestKind::AddOffsetsToTxn(
            AddOffsetsToTxnRequest::default()
                .with_transactional_id(TransactionalId(s("tx")))
                .with_group_id(GroupId(s("g"))),
        ),
        ApiKey::EndTxn => RequestKind::EndTxn(
            EndTxnRequest::default()
                .with_transactional_id(TransactionalId(s("tx")))
                .with_committed(true),
        ),
        ApiKey::TxnOffsetCommit => RequestKind::TxnOffsetCommit(
            TxnOffsetCommitRequest::default()
                .with_transactional_id(TransactionalId(s("tx")))
                .with_group_id(GroupId(s("g")))
                .with_topics(vec![
                    txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                        .with_name(topic_name(t))
                        .with_partitions(vec![
                            txn_offset_commit_request::TxnOffsetCommitRequestPartition::default(),
                        ]),
                ]),
        ),
        ApiKey::DescribeProducers => {
            RequestKind::DescribeProducers(DescribeProducersRequest::default().with_topics(vec![
                describe_producers_request::TopicRequest::default()
                    .with_name(topic_name(t))
                    .with_partition_indexes(vec![0, 9]),
            ]))
        }
        ApiKey::DescribeTransactions => RequestKind::DescribeTransactions(
            DescribeTransactionsRequest::default()
                .with_transactional_ids(vec![TransactionalId(s("tx"))]),
        ),
        ApiKey::ListTransactions => RequestKind::ListTransactions(
            ListTransactionsRequest::default().with_state_filters(vec![s("Ongoing"), s("Nope")]),
        ),
        other => panic!("no sample request for {other:?}"),
    }
}

async fn broker() -> (Broker, uuid::Uuid) {
    let engine = Engine::open(
        EngineConfig::default(),
        Arc::new(EmbeddedStore::in_memory()),
        Arc::new(object_store::memory::InMemory::new()),
    )
    .await
    .unwrap();
    // A single node as the server runs it: registered, controller of itself.
    let membership = Membership::start(
        engine.clone(),
        BrokerRecord {
            id: 0,
            host: "127.0.0.1".into(),
            port: 9092,
            rack: None,
            leaving: false,
            roles: Default::default(),
            http: None,
        },
        Duration::from_secs(6),
        None,
    );
    tokio::spawn(sluice_control::run(
        engine.clone(),
        membership.lease(),
        Vec::new(),
        Default::default(),
    ));
    coordinator::ensure_groups_topic(&engine, 4).await;
    let topic = engine
        .create_topic("every", 1, 1, BTreeMap::new(), false)
        .await
        .unwrap();
    let broker = Broker::with_groups(
        engine,
        BrokerIdentity {
            node_id: 0,
            host: "127.0.0.1".into(),
            port: 9092,
            rack: None,
            cluster_id: "test".into(),
        },
        coordinator::GroupConfig {
            initial_rebalance_delay: Duration::ZERO,
            ..Default::default()
        },
    );
    (broker, topic.record.id)
}

/// Heartbeats until the coordinator has loaded its shards (COORDINATOR_LOAD_IN_PROGRESS
/// meanwhile).
async fn loaded(broker: &Broker, topic_id: uuid::Uuid) {
    for _ in 0..200 {
        let body = call(
            broker,
            ApiKey::ConsumerGroupHeartbeat,
            0,
            request(ApiKey::ConsumerGroupHeartbeat, topic_id),
        )
        .await;
        if let ResponseKind::ConsumerGroupHeartbeat(r) = body {
            if r.error_code == 0 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the coordinator never loaded");
}

async fn call(broker: &Broker, api: ApiKey, version: i16, body: RequestKind) -> ResponseKind {
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(1);
    let req = Request {
        header,
        api_key: api,
        body,
    };
    match broker.handle(req).await {
        Reply::Now(r) => *r,
        Reply::Later(f) => f.await,
        Reply::None => panic!("{api:?} v{version} gave no reply"),
    }
}

#[tokio::test]
async fn every_response_encodes_at_every_advertised_version() {
    let (broker, topic_id) = broker().await;
    // The second pass meets what the first left behind (groups of both protocols,
    // members, offsets): responses whose shape depends on state.
    for pass in 0..2 {
        for &(api, min, max) in SUPPORTED {
            for version in min..=max {
                let body = call(&broker, api, version, request(api, topic_id)).await;
                if let Err(e) = encode_response(api, version, 1, &body, 0) {
                    panic!("pass {pass}: {api:?} v{version}: {e}\n{body:?}");
                }
            }
        }
    }
}

#[tokio::test]
async fn a_consumer_group_is_not_described_as_a_classic_one() {
    let (broker, topic_id) = broker().await;
    loaded(&broker, topic_id).await;
    let (min, max) = sluice_protocol::api::supported_versions(ApiKey::DescribeGroups).unwrap();
    for version in min..=max {
        let body = call(
            &broker,
            ApiKey::DescribeGroups,
            version,
            RequestKind::DescribeGroups(
                DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g848"))]),
            ),
        )
        .await;
        encode_response(ApiKey::DescribeGroups, version, 1, &body, 0)
            .unwrap_or_else(|e| panic!("v{version}: {e}"));
        let ResponseKind::DescribeGroups(r) = body else {
            panic!("not DescribeGroups")
        };
        // Kafka 4: GROUP_ID_NOT_FOUND, state Dead ("not a classic group").
        assert_eq!(r.groups[0].error_code, 69, "v{version}");
        assert_eq!(r.groups[0].group_state.as_str(), "Dead", "v{version}");
    }
}

#[tokio::test]
async fn deleting_a_group_that_does_not_exist_is_group_id_not_found() {
    let (broker, topic_id) = broker().await;
    loaded(&broker, topic_id).await;
    let ResponseKind::DeleteGroups(r) = call(
        &broker,
        ApiKey::DeleteGroups,
        2,
        request(ApiKey::DeleteGroups, topic_id),
    )
    .await
    else {
        panic!("not DeleteGroups")
    };
    assert_eq!(r.results[0].error_code, 69);
}

#[tokio::test]
async fn metadata_v0_empty_list_means_every_topic() {
    let (broker, _) = broker().await;
    let all = RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![])));
    let ResponseKind::Metadata(v0) = call(&broker, ApiKey::Metadata, 0, all.clone()).await else {
        panic!("not metadata")
    };
    let mut names: Vec<String> = v0
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.to_string()))
        .collect();
    names.sort();
    // Like Kafka's __consumer_offsets, the groups topic is listed.
    assert_eq!(names, [coordinator::GROUPS_TOPIC, "every"]);
    let ResponseKind::Metadata(v1) = call(&broker, ApiKey::Metadata, 1, all).await else {
        panic!("not metadata")
    };
    assert!(
        v1.topics.is_empty(),
        "from v1 an empty list asks for no topics"
    );
}

#[tokio::test]
async fn produce_with_invalid_acks_is_refused() {
    let (broker, id) = broker().await;
    let RequestKind::Produce(req) = request(ApiKey::Produce, id) else {
        panic!("not produce")
    };
    let body = RequestKind::Produce(req.with_acks(2));
    let ResponseKind::Produce(resp) = call(&broker, ApiKey::Produce, 9, body).await else {
        panic!("not produce")
    };
    for p in &resp.responses[0].partition_responses {
        assert_eq!(p.error_code, ResponseError::InvalidRequiredAcks.code());
    }
    assert_eq!(
        broker.engine.topic("every").unwrap().partitions[0]
            .read()
            .high_watermark,
        0
    );
}

#[tokio::test]
async fn create_topics_takes_the_partition_count_from_assignments() {
    let (broker, _) = broker().await;
    let body = RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![
        create_topics_request::CreatableTopic::default()
            .with_name(topic_name("assigned"))
            .with_num_partitions(-1)
            .with_replication_factor(-1)
            .with_assignments(
                (0..3)
                    .map(|i| {
                        create_topics_request::CreatableReplicaAssignment::default()
                            .with_partition_index(i)
                            .with_broker_ids(vec![0.into()])
                    })
                    .collect(),
            ),
    ]));
    call(&broker, ApiKey::CreateTopics, 7, body).await;
    assert_eq!(broker.engine.topic("assigned").unwrap().partitions.len(), 3);
}

#[tokio::test]
async fn reassignments_pin_partitions_and_elections_have_nothing_to_elect() {
    let (broker, topic_id) = broker().await;
    // Wait until the controller has given the partition its leader.
    for _ in 0..200 {
        if broker.engine.view().leader(topic_id, 0).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let partition = |i: i32, replicas: Option<Vec<i32>>| {
        alter_partition_reassignments_request::ReassignablePartition::default()
            .with_partition_index(i)
            .with_replicas(replicas.map(|r| r.into_iter().map(BrokerId).collect()))
    };
    let body = RequestKind::AlterPartitionReassignments(
        AlterPartitionReassignmentsRequest::default().with_topics(vec![
            alter_partition_reassignments_request::ReassignableTopic::default()
                .with_name(topic_name("every"))
                .with_partitions(vec![
                    partition(0, Some(vec![0])),
                    partition(0, Some(vec![5])),
                    partition(0, Some(vec![0, 0])),
                    partition(0, Some(vec![])),
                    partition(3, Some(vec![0])),
                ]),
        ]),
    );
    let ResponseKind::AlterPartitionReassignments(r) =
        call(&broker, ApiKey::AlterPartitionReassignments, 1, body).await
    else {
        panic!("not AlterPartitionReassignments")
    };
    let codes: Vec<i16> = r.responses[0]
        .partitions
        .iter()
        .map(|p| p.error_code)
        .collect();
    use ResponseError as E;
    assert_eq!(
        codes,
        [
            0,
            E::InvalidReplicaAssignment.code(),
            E::InvalidReplicaAssignment.code(),
            E::InvalidReplicaAssignment.code(),
            E::UnknownTopicOrPartition.code(),
        ]
    );
    assert_eq!(
        broker.engine.topic("every").unwrap().record.pinned,
        BTreeMap::from([(0, 0)])
    );

    // Broker 0 already leads it: nothing in progress, nothing to cancel or elect.
    let ResponseKind::ListPartitionReassignments(r) = call(
        &broker,
        ApiKey::ListPartitionReassignments,
        0,
        request(ApiKey::ListPartitionReassignments, topic_id),
    )
    .await
    else {
        panic!("not ListPartitionReassignments")
    };
    assert!(r.topics.is_empty(), "{r:?}");
    let body = RequestKind::AlterPartitionReassignments(
        AlterPartitionReassignmentsRequest::default().with_topics(vec![
            alter_partition_reassignments_request::ReassignableTopic::default()
                .with_name(topic_name("every"))
                .with_partitions(vec![partition(0, None)]),
        ]),
    );
    let ResponseKind::AlterPartitionReassignments(r) =
        call(&broker, ApiKey::AlterPartitionReassignments, 0, body).await
    else {
        panic!("not AlterPartitionReassignments")
    };
    assert_eq!(
        r.responses[0].partitions[0].error_code,
        E::NoReassignmentInProgress.code()
    );
    let ResponseKind::ElectLeaders(r) = call(
        &broker,
        ApiKey::ElectLeaders,
        2,
        request(ApiKey::ElectLeaders, topic_id),
    )
    .await
    else {
        panic!("not ElectLeaders")
    };
    let codes: Vec<i16> = r.replica_election_results[0]
        .partition_result
        .iter()
        .map(|p| p.error_code)
        .collect();
    assert_eq!(
        codes,
        [
            E::ElectionNotNeeded.code(),
            E::UnknownTopicOrPartition.code()
        ]
    );
    let all = RequestKind::ElectLeaders(ElectLeadersRequest::default().with_topic_partitions(None));
    let ResponseKind::ElectLeaders(r) = call(&broker, ApiKey::ElectLeaders, 2, all).await else {
        panic!("not ElectLeaders")
    };
    assert!(r.replica_election_results.is_empty(), "{r:?}");

    let all = RequestKind::DescribeLogDirs(DescribeLogDirsRequest::default().with_topics(None));
    let ResponseKind::DescribeLogDirs(r) = call(&broker, ApiKey::DescribeLogDirs, 4, all).await
    else {
        panic!("not DescribeLogDirs")
    };
    let dir = &r.results[0];
    assert_eq!(dir.log_dir.as_str(), "memory:");
    let every = dir
        .topics
        .iter()
        .find(|t| t.name.as_str() == "every")
        .unwrap();
    assert_eq!(every.partitions.len(), 1);
}

#[tokio::test]
async fn api_versions_advertises_the_consumer_protocol_and_no_transactions_as_features() {
    let (broker, topic_id) = broker().await;
    let body = call(
        &broker,
        ApiKey::ApiVersions,
        3,
        request(ApiKey::ApiVersions, topic_id),
    )
    .await;
    let ResponseKind::ApiVersions(r) = &body else {
        panic!("not ApiVersions")
    };
    let supported: Vec<(&str, i16, i16)> = r
        .supported_features
        .iter()
        .map(|f| (f.name.as_str(), f.min_version, f.max_version))
        .collect();
    assert_eq!(
        supported,
        [("group.version", 0, 1), ("transaction.version", 0, 0)]
    );
    let finalized: Vec<(&str, i16)> = r
        .finalized_features
        .iter()
        .map(|f| (f.name.as_str(), f.max_version_level))
        .collect();
    assert_eq!(finalized, [("group.version", 1)]);
    assert!(r.finalized_features_epoch >= 0);
    // Before v3 there is nowhere to put them, and the encoding leaves them out.
    for version in 0..3 {
        encode_response(ApiKey::ApiVersions, version, 1, &body, 0).unwrap();
    }
}
