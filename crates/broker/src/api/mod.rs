//! One module per Kafka API.

pub mod alter_configs;
pub mod api_versions;
pub mod consumer_group;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_log_dirs;
pub mod fetch;
pub mod find_coordinator;
pub mod groups;
pub mod init_producer_id;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod produce;
pub mod reassignments;
pub mod txn;
pub mod txn_admin;

/// The operations a client may perform on a resource, as the authorized-operations
/// fields of Metadata, DescribeCluster and the group descriptions report them: a
/// bit per Kafka `AclOperation` code. Without an authorizer Kafka reports every
/// operation the resource type supports, and so does Sluice; `None` (not asked
/// for) is Kafka's `i32::MIN`.
pub mod operations {
    const READ: i32 = 1 << 3;
    const WRITE: i32 = 1 << 4;
    const CREATE: i32 = 1 << 5;
    const DELETE: i32 = 1 << 6;
    const ALTER: i32 = 1 << 7;
    const DESCRIBE: i32 = 1 << 8;
    const CLUSTER_ACTION: i32 = 1 << 9;
    const DESCRIBE_CONFIGS: i32 = 1 << 10;
    const ALTER_CONFIGS: i32 = 1 << 11;
    const IDEMPOTENT_WRITE: i32 = 1 << 12;

    pub const TOPIC: i32 =
        READ | WRITE | CREATE | DELETE | ALTER | DESCRIBE | DESCRIBE_CONFIGS | ALTER_CONFIGS;
    pub const GROUP: i32 = READ | DELETE | DESCRIBE;
    pub const CLUSTER: i32 = CREATE
        | ALTER
        | DESCRIBE
        | CLUSTER_ACTION
        | DESCRIBE_CONFIGS
        | ALTER_CONFIGS
        | IDEMPOTENT_WRITE;

    /// `ops` if the request asked for them, else "not provided".
    pub fn reported(asked: bool, ops: i32) -> i32 {
        if asked {
            ops
        } else {
            i32::MIN
        }
    }
}
