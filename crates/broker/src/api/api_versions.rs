//! ApiVersions: advertises exactly what the decoder accepts, and (v3+) the features
//! Sluice supports and has finalized, as Kafka 4 brokers do: clients read
//! `group.version` and `transaction.version` before choosing protocols and request
//! versions. Sluice serves the KIP-848 consumer group protocol (`group.version` 1)
//! and the classic transaction protocol (`transaction.version` 0, which, as in Kafka,
//! leaves the feature out of the finalized list; version 2, KIP-890 part 2, is not
//! served yet). KRaft's own features (`metadata.version`,
//! `kraft.version`) and share and streams groups are not Sluice's, so they are not
//! advertised.

use kafka_protocol::messages::api_versions_response::{
    ApiVersion, FinalizedFeatureKey, SupportedFeatureKey,
};
use kafka_protocol::messages::{ApiVersionsResponse, ResponseKind};
use sluice_protocol::api::SUPPORTED;

use crate::str_bytes;

/// `(feature, supported min, supported max, finalized level)`.
pub const FEATURES: &[(&str, i16, i16, i16)] =
    &[("group.version", 0, 1, 1), ("transaction.version", 0, 0, 0)];

/// The epoch of the finalized features: they are fixed by the build, so it never
/// moves (-1 would mean "unknown" to a client).
const FEATURES_EPOCH: i64 = 0;

pub fn handle() -> ResponseKind {
    ResponseKind::ApiVersions(
        response(0)
            .with_supported_features(
                FEATURES
                    .iter()
                    .map(|&(name, min, max, _)| {
                        SupportedFeatureKey::default()
                            .with_name(str_bytes(name))
                            .with_min_version(min)
                            .with_max_version(max)
                    })
                    .collect(),
            )
            .with_finalized_features_epoch(FEATURES_EPOCH)
            .with_finalized_features(
                FEATURES
                    .iter()
                    .filter(|&&(_, _, _, level)| level > 0)
                    .map(|&(name, _, _, level)| {
                        FinalizedFeatureKey::default()
                            .with_name(str_bytes(name))
                            .with_min_version_level(level)
                            .with_max_version_level(level)
                    })
                    .collect(),
            ),
    )
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
