//! Kafka wire protocol for Sluice: framing, request decoding, response encoding and
//! RecordBatch v2 handling.
//!
//! This crate knows bytes, not brokers: no tokio, no domain types. The broker reads
//! frames with [`frame::FrameDecoder`], turns them into typed requests with
//! [`codec::decode_request`], and encodes its answers with [`codec::encode_response`].
//!
//! Invariants:
//! - A frame's length prefix is checked against a maximum before any buffer is sized
//!   for it, so a hostile length costs nothing.
//! - Decoding never panics on any input; malformed input is a [`ProtocolError`].
//! - Record batches are never re-encoded: [`batch`] validates a v2 batch in place
//!   (sizes, magic, CRC-32C) and patches only the fields the broker owns (base offset,
//!   leader epoch, log-append time). Only [`records`] looks inside a batch, to turn
//!   stored history into lake rows and back.

pub mod api;
pub mod batch;
pub mod codec;
pub mod frame;
pub mod records;

pub use kafka_protocol;

/// Everything that can be wrong with bytes received from a client.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("frame length {length} is outside 0..={max}")]
    FrameTooLarge { length: i64, max: usize },
    #[error("frame of {length} bytes is too short for a request header")]
    FrameTooShort { length: usize },
    #[error("unknown api key {api_key}")]
    UnknownApiKey { api_key: i16 },
    #[error("api key {api_key} version {version} is not supported")]
    UnsupportedVersion {
        api_key: i16,
        version: i16,
        correlation_id: i32,
    },
    #[error("malformed request: api_key={api_key} version={version}: {reason}")]
    Malformed {
        api_key: i16,
        version: i16,
        reason: String,
    },
    #[error("cannot encode response: api_key={api_key} version={version}: {reason}")]
    Encode {
        api_key: i16,
        version: i16,
        reason: String,
    },
}
