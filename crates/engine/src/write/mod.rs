//! The write path: the pipelined group commit, and the one owner of the WAL buffer.
//!
//! Produce hands validated batches to [`WritePath::append`], which assigns their
//! offsets under the buffer's lock ([`append`]). The [`flusher`] takes everything
//! buffered as soon as a flush slot is free (after an optional linger), writes it as
//! ONE create-only WAL object, and hands it to the [`committer`]. The committer takes
//! flushes strictly in order, waits for each object, commits ONE manifest conditional
//! on this broker's fence, applies it to the partitions, and only then acknowledges
//! the producers. While one object is being written, new batches accumulate for the
//! next; up to `max_inflight_flushes` objects are written at once.
//!
//! If a flush fails, every later flush already taken and everything buffered has
//! offsets that assume it succeeded, so all of them fail too (retriably) and each
//! partition's write state is reset to its committed state. Their objects become
//! orphans for garbage collection; no offset is ever committed twice.
//!
//! The buffer's lock is private to this module: leadership and the generation change
//! only through [`WritePath::move_to`] and [`WritePath::fence_forever`], which hold
//! it, so no append interleaves with a change of leader.

mod append;
mod buffer;
mod committer;
mod flusher;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use object_store::ObjectStore;
use sluice_meta::MetaStore;
use tokio::sync::{mpsc, oneshot, watch, Notify};

pub use append::MarkerAppend;
pub(crate) use append::Prepared;
pub use append::{PendingProduce, ProduceAck};
use buffer::WalBuffer;

use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::config::EngineConfig;
use crate::error::{EngineError, Result};
use crate::keyspace::{Fences, Keys};
use crate::partition::TailBudget;

/// What the write path reads of the engine's configuration.
struct WriteConfig {
    broker_id: i32,
    flush_bytes: usize,
    flush_linger: Duration,
    max_inflight_flushes: usize,
    max_pending_bytes: usize,
    clock: Clock,
}

/// The stores, keys and neighbours the write path uses.
pub(crate) struct WriteDeps {
    pub store: Arc<dyn ObjectStore>,
    pub meta: Arc<dyn MetaStore>,
    pub keys: Keys,
    pub fences: Arc<Fences>,
    /// Every partition, to reset write states after an abandoned flush.
    pub catalog: Arc<Catalog>,
    pub tail: Arc<TailBudget>,
    /// Wakes the cluster follower when a commit finds the generation moved.
    pub resync: Arc<Notify>,
}

/// Counters of the commit path, rendered on `/metrics`.
#[derive(Debug, Default)]
pub struct WriteMetrics {
    /// Manifests committed.
    pub commits: AtomicU64,
    /// Flushes that did not commit because the broker's generation moved (it lost
    /// partitions): refused by the store, or abandoned before trying.
    pub commits_fenced: AtomicU64,
    /// Commit attempts whose outcome was unknown and were retried.
    pub commit_retries: AtomicU64,
    /// Committed write-ahead objects: size, and time from flush start to commit.
    pub flush_bytes: sluice_metrics::Sizes,
    pub flush_seconds: sluice_metrics::Latency,
}

impl WriteMetrics {
    pub fn render(&self, out: &mut String) {
        use sluice_metrics::{counters, family};
        counters(
            out,
            "sluice_commits_total",
            "Write-ahead flushes by commit outcome.",
            "outcome",
            &[
                ("committed", &self.commits),
                ("fenced", &self.commits_fenced),
                ("retried", &self.commit_retries),
            ],
        );
        family(
            out,
            "sluice_flush_bytes",
            "histogram",
            "Size of each committed write-ahead object.",
        );
        self.flush_bytes.render(out, "sluice_flush_bytes", "");
        family(
            out,
            "sluice_flush_seconds",
            "histogram",
            "From a flush's start to its commit: object PUT plus manifest transaction.",
        );
        self.flush_seconds.render(out, "sluice_flush_seconds", "");
    }
}

/// The WAL buffer, the flusher and the committer of one broker.
pub(crate) struct WritePath {
    cfg: WriteConfig,
    buffer: Mutex<WalBuffer>,
    /// Wakes the flusher: something was buffered.
    flush_wake: Notify,
    /// Wakes producers waiting for room: a flush was taken or went through.
    space: Notify,
    /// Bumped after every commit (and by the cluster follower after a sync); long
    /// polls and waiters for assignments watch it.
    commits: watch::Sender<u64>,
    store: Arc<dyn ObjectStore>,
    meta: Arc<dyn MetaStore>,
    keys: Keys,
    fences: Arc<Fences>,
    catalog: Arc<Catalog>,
    tail: Arc<TailBudget>,
    resync: Arc<Notify>,
    metrics: WriteMetrics,
}

impl WritePath {
    /// The write path of a broker whose commits start under `generation`; nothing
    /// runs until [`WritePath::start`].
    pub fn new(cfg: &EngineConfig, generation: u64, deps: WriteDeps) -> Arc<Self> {
        let (commits, _) = watch::channel(0);
        Arc::new(Self {
            cfg: WriteConfig {
                broker_id: cfg.broker_id,
                flush_bytes: cfg.flush_bytes,
                flush_linger: cfg.flush_linger,
                max_inflight_flushes: cfg.max_inflight_flushes,
                max_pending_bytes: cfg.max_pending_bytes,
                clock: cfg.clock.clone(),
            },
            buffer: Mutex::new(WalBuffer {
                broker_generation: generation,
                ..Default::default()
            }),
            flush_wake: Notify::new(),
            space: Notify::new(),
            commits,
            store: deps.store,
            meta: deps.meta,
            keys: deps.keys,
            fences: deps.fences,
            catalog: deps.catalog,
            tail: deps.tail,
            resync: deps.resync,
            metrics: WriteMetrics::default(),
        })
    }

    /// Starts the flusher and the committer.
    pub fn start(self: &Arc<Self>) {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(committer::run_committer(self.clone(), rx));
        tokio::spawn(flusher::run_flusher(self.clone(), tx));
    }

    fn buffer(&self) -> MutexGuard<'_, WalBuffer> {
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn metrics(&self) -> &WriteMetrics {
        &self.metrics
    }

    /// Assigns offsets to validated batches and buffers them, once there is room. If
    /// the buffer stays full for `limit` nothing is appended and every partition
    /// answers `TimedOut`.
    pub async fn append(
        &self,
        prepared: Vec<Result<Prepared>>,
        limit: Option<Duration>,
    ) -> PendingProduce {
        let incoming: usize = prepared.iter().flatten().map(|p| p.batch.len()).sum();
        let waited = match limit {
            None => {
                self.wait_for_space(incoming).await;
                true
            }
            Some(limit) => tokio::time::timeout(limit, self.wait_for_space(incoming))
                .await
                .is_ok(),
        };
        if !waited {
            return PendingProduce::failed(prepared, EngineError::TimedOut);
        }

        let now = self.cfg.clock.now_ms();
        let mut results = Vec::with_capacity(prepared.len());
        let mut waits = Vec::with_capacity(prepared.len());
        let mut wal = self.buffer();
        for p in prepared {
            let outcome = p.and_then(|p| append::assign(&mut wal, p, now));
            waits.push(matches!(outcome, Ok((_, true))));
            results.push(outcome.map(|(ack, _)| ack));
        }
        self.pending(wal, results, waits)
    }

    /// What the appends just buffered answer: those that wait register for the flush
    /// that will take the buffer, and the flusher is woken.
    fn pending(
        &self,
        mut wal: MutexGuard<'_, WalBuffer>,
        results: Vec<Result<ProduceAck>>,
        waits: Vec<bool>,
    ) -> PendingProduce {
        let flush = waits.iter().any(|w| *w).then(|| {
            let (tx, rx) = oneshot::channel();
            wal.waiters.push(tx);
            rx
        });
        drop(wal);
        if flush.is_some() {
            self.flush_wake.notify_one();
        }
        PendingProduce::new(results, waits, flush)
    }

    /// Buffers transaction markers (see [`append::assign_marker`]); each commits
    /// together with the delete of its request key.
    pub async fn append_markers(&self, markers: Vec<MarkerAppend>) -> PendingProduce {
        let incoming = markers.len() * 128;
        self.wait_for_space(incoming).await;
        let now = self.cfg.clock.now_ms();
        let mut results = Vec::with_capacity(markers.len());
        let mut wal = self.buffer();
        for m in markers {
            results.push(append::assign_marker(&mut wal, m, now));
        }
        let waits: Vec<bool> = results.iter().map(Result::is_ok).collect();
        self.pending(wal, results, waits)
    }

    /// Backpressure: waits while the open buffer is full (`flush_bytes`, so objects
    /// stay near that size) or buffered plus in-flight data exceeds the limit.
    async fn wait_for_space(&self, incoming: usize) {
        loop {
            let notified = self.space.notified();
            {
                let wal = self.buffer();
                // An empty buffer admits anything, whatever its size.
                let buffer_open = wal.bytes == 0 || wal.bytes + incoming <= self.cfg.flush_bytes;
                let pending = wal.bytes + wal.inflight_bytes;
                if buffer_open && pending + incoming <= self.cfg.max_pending_bytes.max(incoming) {
                    return;
                }
            }
            notified.await;
        }
    }

    /// The generation new flushes are written and committed under.
    pub fn generation(&self) -> u64 {
        self.buffer().broker_generation
    }

    /// Whether a newer process owns this broker id.
    pub fn is_fenced(&self) -> bool {
        self.buffer().fenced
    }

    /// Refuses new appends (retriably) from now on; used before a graceful handoff.
    pub fn close(&self) {
        self.buffer().closing = true;
    }

    /// Waits until everything appended so far is committed or has failed.
    pub async fn drain(&self) {
        loop {
            let progressed = self.space.notified();
            {
                let wal = self.buffer();
                if wal.slices.is_empty() && wal.inflight_bytes == 0 {
                    return;
                }
            }
            self.flush_wake.notify_one();
            progressed.await;
        }
    }

    /// Moves to `generation` and runs `apply` (the leadership changes of a sync)
    /// with the buffer locked, so no append sees half of it. Buffered data is
    /// abandoned first if the generation moved or `abandon` (partitions were lost):
    /// its offsets assume leadership this broker no longer has. `apply` must not
    /// call back into the write path.
    pub fn move_to(&self, generation: u64, abandon: bool, apply: impl FnOnce()) {
        let mut wal = self.buffer();
        if wal.broker_generation != generation || abandon {
            let cause = EngineError::NotLeader {
                epoch: wal.broker_generation,
            };
            self.abandon(&mut wal, &cause);
            wal.broker_generation = generation;
        }
        apply();
    }

    /// A newer process owns this broker id: commit nothing, ever, and abandon what
    /// is buffered. True the first time.
    pub fn fence_forever(&self) -> bool {
        let mut wal = self.buffer();
        let first = !wal.fenced;
        wal.fenced = true;
        let cause = EngineError::NotLeader {
            epoch: wal.broker_generation,
        };
        self.abandon(&mut wal, &cause);
        first
    }

    /// A receiver that changes after every commit (for long polling).
    pub fn commits(&self) -> watch::Receiver<u64> {
        self.commits.subscribe()
    }

    /// Wakes whatever watches [`WritePath::commits`] without a commit (leadership or
    /// topics changed).
    pub fn wake_watchers(&self) {
        self.commits.send_modify(|n| *n += 1);
    }

    /// Fails everything buffered and every flush already taken that has not started
    /// its commit (their offsets assume each other), then resets every partition's
    /// write state to its committed state: now if no flush is in flight, else once
    /// the committer has processed those in flight (a commit already sent may still
    /// succeed, and offsets must restart after it, never inside it).
    fn abandon(&self, wal: &mut WalBuffer, cause: &EngineError) {
        wal.rollbacks += 1;
        wal.abandoned_because = Some(cause.clone());
        for w in wal.waiters.drain(..) {
            let _ = w.send(Err(cause.clone()));
        }
        wal.slices.clear();
        wal.bytes = 0;
        if wal.flights == 0 {
            self.reset_writes();
            wal.resetting = false;
        } else {
            wal.resetting = true;
        }
    }

    /// Every partition's write state back to its committed state.
    fn reset_writes(&self) {
        for topic in self.catalog.topics() {
            for p in &topic.partitions {
                p.reset_write_to_committed();
            }
        }
    }
}
