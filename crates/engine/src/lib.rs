//! The data path of one Sluice broker. [`Engine`] composes components that each own
//! their state and hold only the stores and keys they use:
//!
//! - the **write path** (`write/`: the WAL buffer, whose lock is private to it, the
//!   flusher and the committer): [`produce`] validates a batch, the write path
//!   assigns its offsets, writes ONE object per flush and commits ONE manifest, then
//!   acknowledges;
//! - the **read path** ([`read`]: fetch from the in-memory tail, then objects through
//!   the offset index and the block cache, lake files through their footers; offset
//!   lookups);
//! - the **cluster follower** ([`cluster`]: the view, leadership and the generation,
//!   kept up to date with the metadata store) and **recovery** (a partition's
//!   committed state rebuilt from its checkpoint and manifests);
//! - the **catalog** ([`catalog`]: topics, dynamic broker configs, producer ids).
//!
//! The background stages are `impl Engine` blocks over those components:
//! [`compaction`] (plans are pure functions; leaders fold write-ahead slices into
//! segments and old data into Parquet, and clean compacted topics), [`retention`]
//! (log start offsets), [`janitor`] (deleting manifests, objects and orphans) and
//! `tables` (Iceberg metadata); the controller's duties among them (janitor, Iceberg
//! publishing) are run by `sluice-control`.
//!
//! Beneath them, in layers that import only downwards: [`topics`] (topic records and
//! configs, with the broker-level defaults in [`broker_configs`]), [`partition`] (one
//! partition's offset index, tail and producer state), [`keyspace`] (every metadata
//! key, the records stored under them, and the [`keyspace::Fence`] guarded writes
//! carry), the errors, and [`clock`]. No module imports one that imports it back.
//!
//! Invariants:
//! - An acknowledged produce is in an object *and* in a committed manifest.
//! - Offsets of a partition are assigned once, densely, in the order batches enter
//!   the WAL buffer; commits of one partition apply in offset order.
//! - Every manifest commit is conditional on this broker's epoch, so a deposed
//!   instance (another process bumped the epoch) can never commit again.
//! - Fetch never returns data at or past the high watermark, nor below the log start.
//! - No manifest commit lands for an object the janitor may have deleted: commits
//!   compare the janitor's `gc/horizon` revision.

pub mod catalog;
pub mod clock;
pub mod cluster;
pub mod compaction;
mod config;
mod engine;
mod error;
pub mod janitor;
pub mod keyspace;
mod metrics;
pub mod partition;
pub mod produce;
pub mod read;
mod recovery;
pub mod retention;
mod tables;
pub mod topics;
pub mod transactions;
mod util;
mod write;
pub use topics::broker_configs;

pub use crate::catalog::{Catalog, Topic};
pub use crate::clock::Clock;
pub use crate::config::EngineConfig;
pub use crate::engine::{Engine, PartitionStats};
pub use crate::error::{EngineError, Result};
pub use crate::keyspace::Keys;
pub use crate::metrics::EngineMetrics;
pub use crate::topics::TopicRecord;
pub use crate::write::WriteMetrics;
