//! FindCoordinator: the live leader of a group's shard (RFC 0005) or of a
//! transactional id's (RFC 0010). v4+ asks for many keys at once.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{FindCoordinatorRequest, FindCoordinatorResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use crate::coordinator::coordinator_of;
use crate::{has, str_bytes, Broker};

/// `key_type` of consumer groups, and of transactional ids.
const GROUP: i8 = 0;
const TRANSACTION: i8 = 1;

fn find(broker: &Broker, key: &StrBytes, key_type: i8) -> Coordinator {
    let found = match key_type {
        GROUP => coordinator_of(broker, key.as_str()),
        TRANSACTION => crate::transactions::coordinator_of(broker, key.as_str()),
        _ => Err(ResponseError::InvalidRequest),
    };
    let c = Coordinator::default().with_key(key.clone());
    match found {
        Ok(b) => c
            .with_node_id(b.id.into())
            .with_host(str_bytes(b.host))
            .with_port(b.port),
        Err(e) => c
            .with_node_id((-1).into())
            .with_port(-1)
            .with_error_code(e.code())
            .with_error_message(Some(str_bytes(e.to_string()))),
    }
}

pub fn handle(broker: &Broker, req: FindCoordinatorRequest, version: i16) -> ResponseKind {
    let resp = FindCoordinatorResponse::default();
    if has(version, 4) {
        let coordinators = req
            .coordinator_keys
            .iter()
            .map(|k| find(broker, k, req.key_type))
            .collect();
        return ResponseKind::FindCoordinator(resp.with_coordinators(coordinators));
    }
    let c = find(broker, &req.key, req.key_type);
    ResponseKind::FindCoordinator(
        resp.with_error_code(c.error_code)
            .with_error_message(c.error_message.filter(|_| has(version, 1)))
            .with_node_id(c.node_id)
            .with_host(c.host)
            .with_port(c.port),
    )
}
