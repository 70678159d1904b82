//! Request decoding and response encoding on top of `kafka-protocol`.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::{api, ProtocolError};

/// A decoded request: its header and typed body.
#[derive(Debug)]
pub struct Request {
    pub header: RequestHeader,
    pub api_key: ApiKey,
    pub body: RequestKind,
}

/// api_key (2) + api_version (2) + correlation_id (4): the part of every request header
/// we need before we know anything else.
const FIXED_HEADER: usize = 8;

/// Decodes one request frame (without its length prefix).
///
/// An ApiVersions request at a version we do not serve decodes to
/// [`ProtocolError::UnsupportedVersion`] so that the caller can answer it with
/// UNSUPPORTED_VERSION as the protocol requires; any other unsupported version is
/// equally an error the caller turns into a closed connection.
pub fn decode_request(frame: Bytes) -> Result<Request, ProtocolError> {
    if frame.len() < FIXED_HEADER {
        return Err(ProtocolError::FrameTooShort {
            length: frame.len(),
        });
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api_key =
        ApiKey::try_from(raw_key).map_err(|_| ProtocolError::UnknownApiKey { api_key: raw_key })?;
    let supported = api::supported_versions(api_key);
    if !supported.is_some_and(|(min, max)| (min..=max).contains(&version)) {
        return Err(ProtocolError::UnsupportedVersion {
            api_key: raw_key,
            version,
            correlation_id,
        });
    }
    let malformed = |reason: String| ProtocolError::Malformed {
        api_key: raw_key,
        version,
        reason,
    };
    let mut buf = frame;
    let header = RequestHeader::decode(&mut buf, api_key.request_header_version(version))
        .map_err(|e| malformed(format!("header: {e}")))?;
    let body = RequestKind::decode(api_key, &mut buf, version)
        .map_err(|e| malformed(format!("body: {e}")))?;
    Ok(Request {
        header,
        api_key,
        body,
    })
}

/// Encodes a response frame, length prefix included. `size_hint` pre-sizes the buffer
/// (fetch responses carry megabytes of records; growing by doubling would copy them).
pub fn encode_response(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
    size_hint: usize,
) -> Result<Bytes, ProtocolError> {
    let encode_err = |reason: String| ProtocolError::Encode {
        api_key: api_key as i16,
        version,
        reason,
    };
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = api_key.response_header_version(version);
    let mut out = BytesMut::with_capacity(size_hint.clamp(64, 64 << 20));
    out.put_i32(0);
    header
        .encode(&mut out, header_version)
        .map_err(|e| encode_err(e.to_string()))?;
    body.encode(&mut out, version)
        .map_err(|e| encode_err(e.to_string()))?;
    let size =
        i32::try_from(out.len() - 4).map_err(|_| encode_err("response over 2 GiB".into()))?;
    out[..4].copy_from_slice(&size.to_be_bytes());
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest};
    use proptest::prelude::*;

    fn frame_of(api: ApiKey, version: i16, body: &RequestKind) -> Bytes {
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(7);
        let mut buf = BytesMut::new();
        header
            .encode(&mut buf, api.request_header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    #[test]
    fn decodes_what_a_client_encodes() {
        for version in 0..=12 {
            let body = RequestKind::Metadata(MetadataRequest::default());
            let req = decode_request(frame_of(ApiKey::Metadata, version, &body)).unwrap();
            assert_eq!(req.header.correlation_id, 7);
            assert!(matches!(req.body, RequestKind::Metadata(_)));
        }
    }

    #[test]
    fn unsupported_version_keeps_correlation_id() {
        let body = RequestKind::ApiVersions(ApiVersionsRequest::default());
        assert!(decode_request(frame_of(ApiKey::ApiVersions, 3, &body)).is_ok());
        let mut raw = BytesMut::from(&frame_of(ApiKey::ApiVersions, 3, &body)[..]);
        raw[3] = 99;
        match decode_request(raw.freeze()) {
            Err(ProtocolError::UnsupportedVersion {
                correlation_id: 7, ..
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn huge_array_count_is_an_error_not_an_allocation() {
        // Metadata v0 whose topic array claims i32::MAX entries.
        let mut raw = BytesMut::new();
        raw.put_i16(3);
        raw.put_i16(0);
        raw.put_i32(1);
        raw.put_i16(-1);
        raw.put_i32(i32::MAX);
        assert!(matches!(
            decode_request(raw.freeze()),
            Err(ProtocolError::Malformed { .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]
        #[test]
        fn random_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_request(Bytes::from(bytes));
        }

        #[test]
        fn random_bodies_after_valid_headers_never_panic(
            api in 0usize..api::SUPPORTED.len(),
            version_pick in any::<u8>(),
            body in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let (key, min, max) = api::SUPPORTED[api];
            let version = min + (version_pick as i16 % (max - min + 1));
            let mut raw = BytesMut::new();
            raw.put_i16(key as i16);
            raw.put_i16(version);
            raw.put_i32(1);
            raw.extend_from_slice(&body);
            let _ = decode_request(raw.freeze());
        }
    }
}
