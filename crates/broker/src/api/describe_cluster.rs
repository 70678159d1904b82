//! DescribeCluster: the live brokers and the controller, from the cluster view.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{DescribeClusterRequest, DescribeClusterResponse, ResponseKind};

use super::operations;

use crate::{str_bytes, Broker};

pub fn handle(broker: &Broker, req: &DescribeClusterRequest) -> ResponseKind {
    let controller = broker.engine.view().controller.unwrap_or(-1);
    ResponseKind::DescribeCluster(
        DescribeClusterResponse::default()
            .with_cluster_id(str_bytes(broker.identity.cluster_id.clone()))
            .with_controller_id(controller.into())
            .with_cluster_authorized_operations(operations::reported(
                req.include_cluster_authorized_operations,
                operations::CLUSTER,
            ))
            .with_brokers(
                broker
                    .live_brokers()
                    .into_iter()
                    .map(|b| {
                        DescribeClusterBroker::default()
                            .with_broker_id(b.id.into())
                            .with_host(str_bytes(b.host))
                            .with_port(b.port)
                            .with_rack(b.rack.map(str_bytes))
                    })
                    .collect(),
            ),
    )
}
