//! InitProducerId for idempotent producers (transactions come later).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ResponseKind};

use crate::{errors, Broker};

pub async fn handle(broker: &Broker, req: InitProducerIdRequest) -> ResponseKind {
    let resp = InitProducerIdResponse::default()
        .with_producer_id((-1).into())
        .with_producer_epoch(-1);
    if req.transactional_id.is_some() {
        return ResponseKind::InitProducerId(
            resp.with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code()),
        );
    }
    ResponseKind::InitProducerId(match broker.engine.allocate_producer_id().await {
        Ok(id) => resp.with_producer_id(id.into()).with_producer_epoch(0),
        Err(e) => resp.with_error_code(errors::code(&e)),
    })
}
