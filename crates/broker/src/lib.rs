//! Kafka API handlers. A handler takes a decoded request, applies it to the
//! [`Engine`] and returns a response value; it never touches a socket.
//!
//! Handlers answer with a [`Reply`]: `Now` for responses ready at once, `Later` for
//! responses that wait (a produce for its flush, a fetch for data), `None` for
//! `acks=0`. The connection loop runs the synchronous part of every request in
//! arrival order, so a connection's produces are appended in order, and sends the
//! replies in that same order.
//!
//! [`errors`] is the one place engine errors become Kafka error codes.

pub mod admin;
pub mod api;
pub mod coordinator;
pub mod errors;
pub mod fetch_session;
#[cfg(test)]
mod testing;
pub mod transactions;

use std::sync::Arc;

use futures::future::BoxFuture;
use kafka_protocol::messages::{RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use sluice_engine::Engine;
use sluice_protocol::codec::Request;

/// What the broker says about itself in Metadata and DescribeCluster.
#[derive(Debug, Clone)]
pub struct BrokerIdentity {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    pub cluster_id: String,
}

/// A handler's answer.
pub enum Reply {
    Now(Box<ResponseKind>),
    Later(BoxFuture<'static, ResponseKind>),
    None,
}

/// The Kafka request handlers of one broker.
#[derive(Clone)]
pub struct Broker {
    pub engine: Arc<Engine>,
    pub identity: Arc<BrokerIdentity>,
    pub sessions: Arc<fetch_session::FetchSessions>,
    /// Classic-protocol groups this broker coordinates.
    pub groups: Arc<coordinator::group::Groups>,
    /// KIP-848 consumer groups this broker coordinates.
    pub consumer_groups: Arc<coordinator::consumer::ConsumerGroups>,
    /// Which coordinator shards are loaded, and the groups' offset locks.
    pub shards: Arc<coordinator::persist::Shards>,
}

impl Broker {
    pub fn new(engine: Arc<Engine>, identity: BrokerIdentity) -> Self {
        Self::with_groups(engine, identity, coordinator::GroupConfig::default())
    }

    /// A broker whose group coordinator runs with `config`. Starts the groups' timer.
    pub fn with_groups(
        engine: Arc<Engine>,
        identity: BrokerIdentity,
        config: coordinator::GroupConfig,
    ) -> Self {
        let groups = Arc::new(coordinator::group::Groups::new(
            config.initial_rebalance_delay,
            engine.clock().clone(),
        ));
        let consumer_groups = Arc::new(coordinator::consumer::ConsumerGroups::new(
            config.consumer,
            engine.clock().clone(),
        ));
        let shards = Arc::new(coordinator::persist::Shards::new(config.offsets_retention));
        coordinator::start_timer(
            Arc::downgrade(&groups),
            Arc::downgrade(&consumer_groups),
            Arc::downgrade(&engine),
        );
        transactions::markers::start(Arc::downgrade(&engine));
        coordinator::persist::start(
            Arc::downgrade(&engine),
            Arc::downgrade(&groups),
            Arc::downgrade(&consumer_groups),
            Arc::downgrade(&shards),
        );
        Self {
            groups,
            consumer_groups,
            engine,
            identity: Arc::new(identity),
            sessions: Arc::default(),
            shards,
        }
    }

    /// The lock serialising offset commits of `group`.
    pub(crate) fn commit_lock(&self, group: &str) -> &tokio::sync::Mutex<()> {
        self.shards.commit_lock(group)
    }

    /// Handles one request; the `await` here covers only the part that must happen
    /// before the next request on the connection (e.g. appending a produce).
    pub async fn handle(&self, request: Request) -> Reply {
        self.handle_from(request, None).await
    }

    /// Like [`Broker::handle`], naming the client's address (shown as a group
    /// member's client host, as Kafka shows it: `/<ip>`).
    pub async fn handle_from(&self, request: Request, peer: Option<std::net::IpAddr>) -> Reply {
        let client_host = peer.map(|ip| format!("/{ip}")).unwrap_or_default();
        let version = request.header.request_api_version;
        let client_id = request
            .header
            .client_id
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default();
        match request.body {
            RequestKind::ApiVersions(_) => Reply::Now(Box::new(api::api_versions::handle())),
            RequestKind::Metadata(r) => {
                Reply::Now(Box::new(api::metadata::handle(self, r, version).await))
            }
            RequestKind::Produce(r) => api::produce::handle(self, r, version).await,
            RequestKind::Fetch(r) => api::fetch::handle(self, r, version),
            RequestKind::ListOffsets(r) => {
                Reply::Now(Box::new(api::list_offsets::handle(self, r, version).await))
            }
            RequestKind::CreateTopics(r) => {
                Reply::Now(Box::new(api::create_topics::handle(self, r, version).await))
            }
            RequestKind::DeleteTopics(r) => {
                Reply::Now(Box::new(api::delete_topics::handle(self, r, version).await))
            }
            RequestKind::CreatePartitions(r) => {
                Reply::Now(Box::new(api::create_partitions::handle(self, r).await))
            }
            RequestKind::DescribeConfigs(r) => {
                Reply::Now(Box::new(api::describe_configs::handle(self, r).await))
            }
            RequestKind::AlterConfigs(r) => {
                Reply::Now(Box::new(api::alter_configs::handle(self, r).await))
            }
            RequestKind::IncrementalAlterConfigs(r) => Reply::Now(Box::new(
                api::alter_configs::handle_incremental(self, r).await,
            )),
            RequestKind::DescribeCluster(r) => {
                Reply::Now(Box::new(api::describe_cluster::handle(self, &r)))
            }
            RequestKind::FindCoordinator(r) => {
                Reply::Now(Box::new(api::find_coordinator::handle(self, r, version)))
            }
            RequestKind::JoinGroup(r) => {
                api::groups::join(self, r, version, &client_id, &client_host)
            }
            RequestKind::SyncGroup(r) => api::groups::sync(self, r, version),
            RequestKind::Heartbeat(r) => Reply::Now(Box::new(api::groups::heartbeat(self, r))),
            RequestKind::LeaveGroup(r) => {
                self.once_group_state_written(api::groups::leave(self, r, version))
            }
            RequestKind::ListGroups(r) => {
                Reply::Now(Box::new(api::groups::list(self, r, version).await))
            }
            RequestKind::DescribeGroups(r) => {
                Reply::Now(Box::new(api::groups::describe(self, r, version).await))
            }
            RequestKind::DeleteGroups(r) => {
                Reply::Now(Box::new(api::groups::delete(self, r).await))
            }
            RequestKind::ConsumerGroupHeartbeat(r) => {
                let leaving = r.member_epoch < 0;
                let resp =
                    api::consumer_group::heartbeat(self, r, version, &client_id, &client_host)
                        .await;
                if leaving {
                    self.once_group_state_written(resp)
                } else {
                    Reply::Now(Box::new(resp))
                }
            }
            RequestKind::ConsumerGroupDescribe(r) => {
                Reply::Now(Box::new(api::consumer_group::describe(self, r)))
            }
            RequestKind::OffsetCommit(r) => {
                Reply::Now(Box::new(api::offset_commit::handle(self, r).await))
            }
            RequestKind::DeleteRecords(r) => {
                Reply::Now(Box::new(api::delete_records::handle(self, r).await))
            }
            RequestKind::DescribeLogDirs(r) => {
                Reply::Now(Box::new(api::describe_log_dirs::handle(self, r)))
            }
            RequestKind::AlterPartitionReassignments(r) => {
                Reply::Now(Box::new(api::reassignments::alter(self, r).await))
            }
            RequestKind::ListPartitionReassignments(r) => {
                Reply::Now(Box::new(api::reassignments::list(self, r)))
            }
            RequestKind::ElectLeaders(r) => {
                Reply::Now(Box::new(api::reassignments::elect(self, r, version)))
            }
            RequestKind::OffsetDelete(r) => {
                Reply::Now(Box::new(api::offset_delete::handle(self, r).await))
            }
            RequestKind::OffsetFetch(r) => {
                Reply::Now(Box::new(api::offset_fetch::handle(self, r, version).await))
            }
            RequestKind::InitProducerId(r) => Reply::Now(Box::new(
                api::init_producer_id::handle(self, r, version).await,
            )),
            RequestKind::AddPartitionsToTxn(r) => {
                Reply::Now(Box::new(api::txn::add_partitions(self, r, version).await))
            }
            RequestKind::AddOffsetsToTxn(r) => {
                Reply::Now(Box::new(api::txn::add_offsets(self, r, version).await))
            }
            RequestKind::EndTxn(r) => Reply::Now(Box::new(api::txn::end(self, r, version).await)),
            RequestKind::ListTransactions(r) => {
                Reply::Now(Box::new(api::txn_admin::list(self, r).await))
            }
            RequestKind::DescribeTransactions(r) => {
                Reply::Now(Box::new(api::txn_admin::describe(self, r).await))
            }
            RequestKind::DescribeProducers(r) => {
                Reply::Now(Box::new(api::txn_admin::describe_producers(self, r)))
            }
            RequestKind::TxnOffsetCommit(r) => {
                Reply::Now(Box::new(api::txn::commit_offsets(self, r, version).await))
            }
            // The decoder admits only the APIs in `sluice_protocol::api::SUPPORTED`.
            other => {
                tracing::warn!(?other, "request for an API the broker does not serve");
                Reply::None
            }
        }
    }
}

impl Broker {
    /// Answers once the group state changed by this request is in the metadata
    /// store, so a member that left stays gone whatever happens to this broker.
    fn once_group_state_written(&self, resp: ResponseKind) -> Reply {
        let written = self.shards.written();
        Reply::Later(Box::pin(async move {
            written.await;
            resp
        }))
    }
}

/// Whether a field introduced at `since` exists at `version`; kafka-protocol refuses
/// to encode a non-default value in a version that lacks the field.
pub(crate) fn has(version: i16, since: i16) -> bool {
    version >= since
}

/// The configs a request sets, by name; entries without a value are ignored.
pub(crate) fn config_map<'a>(
    entries: impl Iterator<Item = (&'a StrBytes, &'a Option<StrBytes>)>,
) -> std::collections::BTreeMap<String, String> {
    entries
        .filter_map(|(name, value)| value.as_ref().map(|v| (name.to_string(), v.to_string())))
        .collect()
}

impl Broker {
    /// Live brokers as the cluster view has them; this broker alone before the first
    /// sync has seen its own registration.
    pub fn live_brokers(&self) -> Vec<sluice_engine::keyspace::BrokerRecord> {
        let view = self.engine.view();
        let id = &self.identity;
        // Compactor-only nodes serve no clients.
        let mut out: Vec<_> = view
            .brokers
            .values()
            .filter(|b| b.roles.broker)
            .cloned()
            .collect();
        if !view.brokers.contains_key(&id.node_id) {
            out.push(sluice_engine::keyspace::BrokerRecord {
                id: id.node_id,
                host: id.host.clone(),
                port: id.port,
                rack: id.rack.clone(),
                leaving: false,
                roles: Default::default(),
                http: None,
            });
        }
        out
    }
}

pub(crate) fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}
