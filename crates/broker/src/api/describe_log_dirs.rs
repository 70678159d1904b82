//! DescribeLogDirs: the partitions this broker leads and their sizes. Sluice has no
//! local log directories; its one "log dir" is the object store root
//! (`s3://bucket/prefix`, `file:///…`), and a partition's size is the bytes of its
//! batches, segments and Parquet files from the log start on, as the partition's
//! index records them (no listing of the bucket). A bucket has no volume size, so
//! total and usable bytes are Kafka's "unknown", -1.

use std::collections::{HashMap, HashSet};

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{
    DescribeLogDirsRequest, DescribeLogDirsResponse, ResponseKind, TopicName,
};

use crate::{str_bytes, Broker};

/// The name Sluice reports as its log directory.
pub fn log_dir(broker: &Broker) -> String {
    broker
        .engine
        .config()
        .object_root
        .clone()
        .unwrap_or_else(|| "memory:".into())
}

pub fn handle(broker: &Broker, req: DescribeLogDirsRequest) -> ResponseKind {
    // `None`: every partition; else the asked ones. Partitions this broker does not
    // lead are left out, as Kafka leaves out replicas it does not host.
    let wanted: Option<HashMap<String, HashSet<i32>>> = req.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.topic.to_string(), t.partitions.into_iter().collect()))
            .collect()
    });
    let mut by_topic: HashMap<String, Vec<DescribeLogDirsPartition>> = HashMap::new();
    for s in broker.engine.partition_stats() {
        if let Some(w) = &wanted {
            if !w.get(&s.topic).is_some_and(|ps| ps.contains(&s.partition)) {
                continue;
            }
        }
        by_topic.entry(s.topic).or_default().push(
            DescribeLogDirsPartition::default()
                .with_partition_index(s.partition)
                .with_partition_size(i64::try_from(s.size_bytes).unwrap_or(i64::MAX))
                .with_offset_lag(0)
                .with_is_future_key(false),
        );
    }
    let mut topics: Vec<DescribeLogDirsTopic> = by_topic
        .into_iter()
        .map(|(name, mut partitions)| {
            partitions.sort_by_key(|p| p.partition_index);
            DescribeLogDirsTopic::default()
                .with_name(TopicName(str_bytes(name)))
                .with_partitions(partitions)
        })
        .collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    ResponseKind::DescribeLogDirs(DescribeLogDirsResponse::default().with_results(
        vec![DescribeLogDirsResult::default()
            .with_log_dir(str_bytes(log_dir(broker)))
            .with_topics(topics)
            .with_total_bytes(-1)
            .with_usable_bytes(-1)],
    ))
}
