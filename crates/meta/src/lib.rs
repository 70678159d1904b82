//! Sluice's metadata: the narrow [`MetaStore`] trait that etcd and the embedded store
//! implement, and the [`conformance`] suite both must pass.
//!
//! The trait is etcd's model, cut to what Sluice needs: a flat, ordered key space with
//! per-key revisions, multi-key transactions guarded by compares, leases that delete
//! their keys when they expire, and watches.
//!
//! Invariants every implementation keeps:
//! - A transaction's compares and writes happen atomically: either all its success
//!   operations apply at one new revision, or (compares failing) its failure ones do.
//! - The store revision grows by exactly one per transaction that writes.
//! - A successful write returns only once it is durable in that store.
//! - Watch events arrive in revision order.

pub mod conformance;
pub mod embedded;
pub mod etcd;
pub mod metered;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

pub use embedded::EmbeddedStore;

/// A lease identifier; keys put with a lease vanish when it expires or is revoked.
pub type LeaseId = i64;

/// One key and its value with etcd-style version stamps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// Store revision at which the key was created.
    pub create_revision: i64,
    /// Store revision of the last write to the key.
    pub mod_revision: i64,
    /// Number of writes since the key was created (1 after the first put).
    pub version: i64,
    pub lease: Option<LeaseId>,
}

/// A precondition checked atomically with a transaction's writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key does not exist.
    Missing(String),
    /// The key exists with this exact value.
    ValueEquals(String, Bytes),
    /// The key's mod revision equals this (0 means the key is missing).
    ModRevision(String, i64),
}

/// A write or read inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: String,
        value: Bytes,
        lease: Option<LeaseId>,
    },
    Delete(String),
    /// Deletes every key starting with the prefix.
    DeletePrefix(String),
    Get(String),
}

impl Op {
    pub fn put(key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Op::Put {
            key: key.into(),
            value: value.into(),
            lease: None,
        }
    }
}

/// Operations (compares, or writes) one transaction may carry: etcd refuses more than
/// 128 in either list by default (`--max-txn-ops`).
pub const MAX_TXN_OPS: usize = 100;

/// Bytes of keys and values one transaction may carry: etcd refuses requests over
/// 1.5 MiB by default (`--max-request-bytes`); the rest is headroom for framing.
pub const MAX_TXN_BYTES: usize = 1 << 20;

impl Compare {
    /// Bytes this compare adds to a request, near enough to pack transactions by.
    pub fn size(&self) -> usize {
        match self {
            Compare::Missing(k) | Compare::ModRevision(k, _) => k.len() + 16,
            Compare::ValueEquals(k, v) => k.len() + v.len() + 16,
        }
    }
}

impl Op {
    /// Bytes this operation adds to a request, near enough to pack transactions by.
    pub fn size(&self) -> usize {
        match self {
            Op::Put { key, value, .. } => key.len() + value.len() + 16,
            Op::Delete(k) | Op::DeletePrefix(k) | Op::Get(k) => k.len() + 16,
        }
    }
}

/// A guarded multi-key transaction: if every compare holds, `success` applies;
/// otherwise `failure` does.
#[derive(Debug, Clone, Default)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

impl Txn {
    pub fn when(compares: Vec<Compare>) -> Self {
        Self {
            compares,
            ..Default::default()
        }
    }

    pub fn then(mut self, ops: Vec<Op>) -> Self {
        self.success = ops;
        self
    }

    pub fn otherwise(mut self, ops: Vec<Op>) -> Self {
        self.failure = ops;
        self
    }
}

/// What a transaction did.
#[derive(Debug, Clone)]
pub struct TxnResult {
    pub succeeded: bool,
    /// The store revision after the transaction.
    pub revision: i64,
    /// One entry per `Op::Get` of the branch that ran, in order.
    pub gets: Vec<Option<KeyValue>>,
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put(KeyValue),
    Delete { key: String, revision: i64 },
}

/// Errors of a metadata store.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    /// The store refused the request without applying it (too large, too many
    /// operations, out of space): retrying the same request cannot succeed.
    #[error("metadata store refused the request: {0}")]
    Refused(String),
    #[error("metadata store io error: path={path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("metadata store is corrupt: {0}")]
    Corrupt(String),
    #[error("lease {0} not found or expired")]
    LeaseNotFound(LeaseId),
    #[error("metadata store is locked by another process: path={0}")]
    Locked(String),
}

pub type Result<T, E = MetaError> = std::result::Result<T, E>;

/// The metadata store every part of Sluice coordinates through.
#[async_trait]
pub trait MetaStore: Send + Sync + 'static {
    /// The current value of `key`.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Every key starting with `prefix`, in key order.
    async fn range(&self, prefix: &str) -> Result<Vec<KeyValue>>;

    /// Runs a guarded transaction atomically.
    async fn txn(&self, txn: Txn) -> Result<TxnResult>;

    /// Grants a lease that expires `ttl` after its last keep-alive.
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId>;

    /// Extends a lease by its TTL; `LeaseNotFound` once it has expired.
    async fn keep_alive(&self, lease: LeaseId) -> Result<()>;

    /// Ends a lease now, deleting its keys.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<()>;

    /// Streams changes under `prefix` made after this call.
    async fn watch(&self, prefix: &str) -> Result<mpsc::UnboundedReceiver<WatchEvent>>;
}

/// Keeps a watch on `prefix` and notifies `wake` once when the watch starts (it
/// may have missed changes) and on every change; re-establishes the watch after it
/// breaks (e.g. the store restarted). Ends once `wake` is dropped.
pub fn notify_on_changes(
    meta: std::sync::Arc<dyn MetaStore>,
    prefix: String,
    wake: std::sync::Weak<tokio::sync::Notify>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match meta.watch(&prefix).await {
                Ok(mut rx) => loop {
                    match wake.upgrade() {
                        Some(w) => w.notify_one(),
                        None => return,
                    }
                    if rx.recv().await.is_none() {
                        break;
                    }
                },
                Err(e) => tracing::debug!(%prefix, error = %e, "watch failed; retrying"),
            }
            if wake.strong_count() == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    })
}

/// Convenience: put one key unconditionally.
pub async fn put(store: &dyn MetaStore, key: &str, value: impl Into<Bytes>) -> Result<i64> {
    Ok(store
        .txn(Txn::when(vec![]).then(vec![Op::put(key, value)]))
        .await?
        .revision)
}
