//! InitProducerId: a producer id for an idempotent producer; for a transactional
//! one, its coordinator's producer id and a bumped epoch (RFC 0010).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ResponseKind};

use crate::{errors, transactions, Broker};

pub async fn handle(broker: &Broker, req: InitProducerIdRequest, version: i16) -> ResponseKind {
    let resp = InitProducerIdResponse::default()
        .with_producer_id((-1).into())
        .with_producer_epoch(-1);
    if let Some(id) = &req.transactional_id {
        let expected = (req.producer_id.0, req.producer_epoch);
        return ResponseKind::InitProducerId(
            match transactions::init_producer_id(
                &broker.engine,
                id.as_str(),
                req.transaction_timeout_ms,
                expected,
            )
            .await
            {
                Ok((pid, epoch)) => resp.with_producer_id(pid.into()).with_producer_epoch(epoch),
                // PRODUCER_FENCED came with version 4; older clients knew it as
                // INVALID_PRODUCER_EPOCH.
                Err(ResponseError::ProducerFenced) if version < 4 => {
                    resp.with_error_code(ResponseError::InvalidProducerEpoch.code())
                }
                Err(e) => resp.with_error_code(e.code()),
            },
        );
    }
    ResponseKind::InitProducerId(match broker.engine.allocate_producer_id().await {
        Ok(id) => resp.with_producer_id(id.into()).with_producer_epoch(0),
        Err(e) => resp.with_error_code(errors::code(&e)),
    })
}
