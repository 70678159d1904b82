//! Object storage for Sluice: building the object store from a URL, every object key
//! ([`paths`]), and the write-ahead object format ([`wal`]).
//!
//! All object I/O goes through `Arc<dyn ObjectStore>`; behaviour such as retries,
//! metrics, caching or fault injection is added by wrapping it, never by a trait of
//! our own.
//!
//! Invariants:
//! - Objects are immutable: written once with `PutMode::Create`, never overwritten,
//!   keys never reused (every WAL key carries a fresh ULID).
//! - Every key is built in [`paths`].

pub mod credentials;
pub mod faults;
pub mod metered;
pub mod paths;
pub mod store;
pub mod wal;

pub use store::{open_object_store, ObjectStoreUrl, S3Options};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("invalid object store url: url={url}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("invalid fault spec: spec={spec:?}: {reason}")]
    InvalidFaultSpec { spec: String, reason: String },
    #[error("object store error: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("wal object is corrupt: key={key}: {reason}")]
    CorruptWal { key: String, reason: String },
    #[error("io error: path={path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}
