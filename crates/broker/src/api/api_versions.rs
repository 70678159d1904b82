//! ApiVersions: advertises exactly what the decoder accepts.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsResponse, ResponseKind};
use sluice_protocol::api::SUPPORTED;

pub fn handle() -> ResponseKind {
    ResponseKind::ApiVersions(response(0))
}

/// The response, with `error_code` set for the unsupported-version answer.
pub fn response(error_code: i16) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(
            SUPPORTED
                .iter()
                .map(|&(key, min, max)| {
                    ApiVersion::default()
                        .with_api_key(key as i16)
                        .with_min_version(min)
                        .with_max_version(max)
                })
                .collect(),
        )
}
