//! The one place engine errors become Kafka error codes.

use kafka_protocol::error::ResponseError;
use sluice_engine::EngineError;

/// The Kafka error code a client sees for `e`.
pub fn code(e: &EngineError) -> i16 {
    use EngineError as E;
    use ResponseError as R;
    let r = match e {
        E::UnknownTopicOrPartition { .. } => R::UnknownTopicOrPartition,
        E::TopicAlreadyExists { .. } => R::TopicAlreadyExists,
        E::InvalidTopic { .. } => R::InvalidTopicException,
        E::InvalidPartitions { .. } => R::InvalidPartitions,
        E::InvalidReplicationFactor { .. } => R::InvalidReplicationFactor,
        E::InvalidConfig { .. } => R::InvalidConfig,
        E::InvalidRequest(_) => R::InvalidRequest,
        E::MessageTooLarge { .. } | E::DecompressedTooLarge { .. } => R::MessageTooLarge,
        E::CorruptMessage(_) => R::CorruptMessage,
        E::InvalidRecord(_) | E::InvalidRecords { .. } => R::InvalidRecord,
        E::InvalidTimestamp(_) => R::InvalidTimestamp,
        E::OffsetOutOfRange { .. } => R::OffsetOutOfRange,
        E::OutOfOrderSequence { .. } => R::OutOfOrderSequenceNumber,
        E::InvalidProducerEpoch { .. } => R::InvalidProducerEpoch,
        E::InvalidTxnState(_) => R::InvalidTxnState,
        // Retriable: the client refreshes metadata and tries again.
        E::NotLeader { .. } | E::NotLeaderForPartition { .. } | E::ShuttingDown => {
            R::NotLeaderOrFollower
        }
        E::TimedOut => R::RequestTimedOut,
        E::FlushFailed(_) | E::Storage(_) => R::KafkaStorageError,
        E::Meta(_) => R::RequestTimedOut,
    };
    r.code()
}

/// The Kafka error code for a failed write of group state: a broker whose
/// generation moved lost the group's shard, so its clients look for the new
/// coordinator.
pub fn coordinator_code(e: &EngineError) -> i16 {
    match e {
        EngineError::NotLeader { .. } => ResponseError::NotCoordinator.code(),
        other => code(other),
    }
}

/// Error code and message, for responses that carry both.
pub fn code_and_message(e: &EngineError) -> (i16, Option<kafka_protocol::protocol::StrBytes>) {
    (code(e), Some(crate::str_bytes(e.to_string())))
}

/// The error code of a coordinator's outcome: 0 for none.
pub fn outcome_code(error: Option<kafka_protocol::error::ResponseError>) -> i16 {
    error.map_or(0, |e| e.code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_kafka() {
        assert_eq!(code(&EngineError::unknown_partition("t", 0)), 3);
        assert_eq!(
            code(&EngineError::TopicAlreadyExists { name: "t".into() }),
            36
        );
        assert_eq!(
            code(&EngineError::InvalidTopic {
                name: "".into(),
                reason: "".into()
            }),
            17
        );
        assert_eq!(code(&EngineError::MessageTooLarge { size: 2, max: 1 }), 10);
        assert_eq!(code(&EngineError::CorruptMessage("crc".into())), 2);
        assert_eq!(
            code(&EngineError::OutOfOrderSequence { producer_id: 1 }),
            45
        );
        assert_eq!(
            code(&EngineError::InvalidPartitions { reason: "".into() }),
            37
        );
        assert_eq!(code(&EngineError::NotLeader { epoch: 1 }), 6);
        assert_eq!(code(&EngineError::FlushFailed("x".into())), 56);
    }
}
