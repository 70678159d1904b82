//! Builds the object store a broker writes to from `--object-store`.
//!
//! S3 (AWS, MinIO, LocalStack, any S3-compatible endpoint) goes through object_store's
//! `AmazonS3` with: credentials from aws-config's full chain; path-style addressing and
//! plain HTTP only for a custom endpoint that says `http://`; create-only PUTs
//! (`If-None-Match: *`) and `If-Match` for updates; request and connect timeouts;
//! retries with exponential backoff and jitter on 5xx, throttling and connection
//! errors; and a bound on concurrent requests.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::limit::LimitStore;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

use crate::credentials::AwsConfigCredentials;
use crate::StorageError;

/// A parsed `--object-store` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectStoreUrl {
    /// `file:///abs/path` or `file://rel/path`: objects under a local directory.
    File(PathBuf),
    /// `memory://`: objects in process memory (tests; lost on exit).
    Memory,
    /// `s3://bucket/prefix`: objects under `prefix/` in an S3 bucket.
    S3 { bucket: String, prefix: String },
}

/// How to reach S3; every field has a flag and an environment variable.
#[derive(Debug, Clone)]
pub struct S3Options {
    /// Custom endpoint (MinIO, LocalStack, moto); `AWS_ENDPOINT_URL_S3` or
    /// `AWS_ENDPOINT_URL` when unset. Custom endpoints use path-style addressing.
    pub endpoint: Option<String>,
    /// Region; aws-config's resolution (`AWS_REGION`, profile) when unset, then
    /// `us-east-1`.
    pub region: Option<String>,
    /// Time limit of one request, retries not included.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Retries of one request on 5xx, throttling and connection errors.
    pub max_retries: usize,
    /// Give up retrying a request after this long.
    pub retry_timeout: Duration,
    /// Requests in flight at once.
    pub max_concurrency: usize,
}

impl Default for S3Options {
    fn default() -> Self {
        Self {
            endpoint: None,
            region: None,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            max_retries: 10,
            retry_timeout: Duration::from_secs(60),
            max_concurrency: 64,
        }
    }
}

impl ObjectStoreUrl {
    pub fn parse(url: &str) -> Result<Self, StorageError> {
        let invalid = |reason: &str| StorageError::InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        if let Some(path) = url.strip_prefix("file://") {
            if path.is_empty() {
                return Err(invalid("file:// needs a directory"));
            }
            return Ok(Self::File(PathBuf::from(path)));
        }
        if url == "memory://" || url == "memory:" {
            return Ok(Self::Memory);
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid("s3:// needs a bucket: s3://bucket/prefix"));
            }
            return Ok(Self::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        Err(invalid(
            "expected file://<dir>, s3://bucket/prefix or memory://",
        ))
    }

    /// The URI other tools reach the objects at (`s3://bucket/prefix`,
    /// `file:///abs/dir`), as written into Iceberg metadata; none for memory.
    pub fn root_uri(&self) -> Option<String> {
        match self {
            Self::File(dir) => {
                let abs = std::path::absolute(dir).ok()?;
                Some(
                    format!("file://{}", abs.display())
                        .trim_end_matches('/')
                        .to_string(),
                )
            }
            Self::Memory => None,
            Self::S3 { bucket, prefix } if prefix.is_empty() => Some(format!("s3://{bucket}")),
            Self::S3 { bucket, prefix } => Some(format!("s3://{bucket}/{prefix}")),
        }
    }
}

/// Opens the object store, creating a local directory if needed.
pub async fn open_object_store(
    url: &ObjectStoreUrl,
    s3: &S3Options,
) -> Result<Arc<dyn ObjectStore>, StorageError> {
    match url {
        ObjectStoreUrl::Memory => Ok(Arc::new(InMemory::new())),
        ObjectStoreUrl::File(dir) => {
            create_dir(dir)?;
            Ok(Arc::new(LocalFileSystem::new_with_prefix(dir)?))
        }
        ObjectStoreUrl::S3 { bucket, prefix } => open_s3(bucket, prefix, s3).await,
    }
}

async fn open_s3(
    bucket: &str,
    prefix: &str,
    opts: &S3Options,
) -> Result<Arc<dyn ObjectStore>, StorageError> {
    let aws = aws_config::load_from_env().await;
    let endpoint = opts
        .endpoint
        .clone()
        .or_else(|| std::env::var("AWS_ENDPOINT_URL_S3").ok())
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
        .filter(|e| !e.is_empty());
    let region = opts
        .region
        .clone()
        .or_else(|| aws.region().map(|r| r.to_string()))
        .unwrap_or_else(|| "us-east-1".to_string());
    let credentials = aws
        .credentials_provider()
        .ok_or_else(|| StorageError::InvalidUrl {
            url: format!("s3://{bucket}"),
            reason: "aws-config found no credential provider".into(),
        })?;
    let client = ClientOptions::new()
        .with_timeout(opts.request_timeout)
        .with_connect_timeout(opts.connect_timeout);
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: opts.max_retries,
        retry_timeout: opts.retry_timeout,
    };
    // Client options first: they carry allow_http, which the next call sets.
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(region)
        .with_credentials(Arc::new(AwsConfigCredentials::new(credentials)))
        .with_client_options(client)
        .with_allow_http(
            endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("http://")),
        )
        .with_retry(retry)
        .with_conditional_put(S3ConditionalPut::ETagMatch);
    if let Some(endpoint) = endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_virtual_hosted_style_request(false);
    }
    let s3: Arc<dyn ObjectStore> = Arc::new(builder.build()?);
    let s3: Arc<dyn ObjectStore> = if prefix.is_empty() {
        s3
    } else {
        Arc::new(PrefixStore::new(s3, prefix))
    };
    Ok(Arc::new(LimitStore::new(s3, opts.max_concurrency.max(1))))
}

fn create_dir(dir: &Path) -> Result<(), StorageError> {
    std::fs::create_dir_all(dir).map_err(|source| StorageError::Io {
        path: dir.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            ObjectStoreUrl::parse("file:///tmp/x").unwrap(),
            ObjectStoreUrl::File("/tmp/x".into())
        );
        assert_eq!(
            ObjectStoreUrl::parse("file://rel/dir").unwrap(),
            ObjectStoreUrl::File("rel/dir".into())
        );
        assert_eq!(
            ObjectStoreUrl::parse("memory://").unwrap(),
            ObjectStoreUrl::Memory
        );
        assert_eq!(
            ObjectStoreUrl::parse("s3://bucket/some/prefix/").unwrap(),
            ObjectStoreUrl::S3 {
                bucket: "bucket".into(),
                prefix: "some/prefix".into()
            }
        );
        assert_eq!(
            ObjectStoreUrl::parse("s3://bucket").unwrap(),
            ObjectStoreUrl::S3 {
                bucket: "bucket".into(),
                prefix: String::new()
            }
        );
        assert!(ObjectStoreUrl::parse("s3:///x").is_err());
        assert!(ObjectStoreUrl::parse("ftp://x").is_err());
        assert!(ObjectStoreUrl::parse("file://").is_err());
    }
}
