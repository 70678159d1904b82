//! DescribeCluster: this broker is the whole cluster (and its controller).

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{DescribeClusterResponse, ResponseKind};

use crate::{str_bytes, Broker};

pub fn handle(broker: &Broker) -> ResponseKind {
    let id = &broker.identity;
    ResponseKind::DescribeCluster(
        DescribeClusterResponse::default()
            .with_cluster_id(str_bytes(id.cluster_id.clone()))
            .with_controller_id(id.node_id.into())
            .with_cluster_authorized_operations(i32::MIN)
            .with_brokers(vec![DescribeClusterBroker::default()
                .with_broker_id(id.node_id.into())
                .with_host(str_bytes(id.host.clone()))
                .with_port(id.port)
                .with_rack(id.rack.clone().map(str_bytes))]),
    )
}
