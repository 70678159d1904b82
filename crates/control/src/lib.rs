//! What a broker runs because it is one of a cluster, beside the Kafka API: its
//! [`membership`] (the `brokers/<id>/live` record bound to a lease) and, on one
//! broker at a time, the controller (RFC 0004).
//!
//! The controller is elected through the metadata store: create-if-missing on
//! `controller`, bound to the candidate's membership lease, so the key vanishes with
//! the controller. While this broker holds it, one leadership scope runs, and all of
//! it stops when the lease goes or the key is no longer ours:
//! - leader assignment rounds (`leaders.rs`), woken by changes under `brokers/` and
//!   `topics/` and every few seconds; [`assignment::assign`] is the pure function;
//! - the janitor (expired manifests, their objects, orphans), every
//!   `log.retention.check.interval.ms`;
//! - Iceberg publishing of the lake's tables, every compaction interval;
//! - the [`Duty`]s the server adds.
//!
//! [`Leading`] tells others (the consumer-lag gauge on `/metrics`) whether this
//! broker is in such a scope right now.
//!
//! Invariants:
//! - Assignment writes compare the controller key's value, so a deposed controller
//!   writes no leaders; the janitor's deletes compare each key's revision and bump
//!   the gc horizon every commit compares, so a deposed janitor still running a
//!   round deletes nothing a live manifest needs.
//! - A duty's state lives for one leadership: a new controller starts with fresh
//!   state (the janitor counts orphans' grace periods afresh).

pub mod assignment;
mod leaders;
pub mod membership;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sluice_engine::janitor::Janitor;
use sluice_engine::keyspace::{ControllerRecord, Stored};
use sluice_engine::Engine;
use sluice_meta::{notify_on_changes, Compare, LeaseId, MetaError, Op, Txn};
use tokio::sync::{watch, Notify};

use crate::leaders::Round;

/// How often a controller recomputes leaders without being woken.
const ROUND_INTERVAL: Duration = Duration::from_secs(5);

/// Whether this broker is the controller now: set for the span of each leadership.
#[derive(Debug, Clone, Default)]
pub struct Leading(Arc<AtomicBool>);

impl Leading {
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self, leading: bool) {
        self.0.store(leading, Ordering::Release);
    }
}

/// Periodic work that runs only while this broker is the controller.
pub struct Duty {
    name: &'static str,
    /// Builds the duty's loop for one leadership.
    start: Box<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>,
}

impl Duty {
    /// `round` every `interval` (the first one interval after the election), on a
    /// state `init` makes afresh for each leadership and drops when it ends.
    pub fn every<S, I, R>(name: &'static str, interval: Duration, init: I, round: R) -> Self
    where
        S: Send + 'static,
        I: Fn() -> S + Send + Sync + 'static,
        R: for<'a> Fn(&'a mut S) -> BoxFuture<'a, ()> + Send + Sync + 'static,
    {
        let interval = interval.max(Duration::from_millis(1));
        let round = Arc::new(round);
        Self {
            name,
            start: Box::new(move || {
                let mut state = init();
                let round = round.clone();
                Box::pin(async move {
                    let mut tick =
                        tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tick.tick().await;
                        round(&mut state).await;
                    }
                })
            }),
        }
    }
}

/// The data path's controller duties: the janitor and Iceberg publishing.
pub fn engine_duties(engine: &Arc<Engine>) -> Vec<Duty> {
    let cfg = engine.config();
    let janitor = {
        let engine = engine.clone();
        Duty::every(
            "janitor",
            cfg.retention_check_interval,
            move || (engine.clone(), Janitor::default()),
            |(engine, janitor)| {
                Box::pin(async move {
                    if let Err(e) = engine.collect_garbage(janitor).await {
                        tracing::warn!(error = %e, "janitor round failed");
                    }
                })
            },
        )
    };
    let tables = {
        let engine = engine.clone();
        Duty::every(
            "iceberg tables",
            cfg.compaction_interval,
            move || engine.clone(),
            |engine| {
                Box::pin(async move {
                    if let Err(e) = engine.publish_tables().await {
                        tracing::warn!(error = %e, "cannot publish lake tables");
                    }
                })
            },
        )
    };
    vec![janitor, tables]
}

/// Campaigns whenever this broker has a lease, and while it holds the controller key
/// runs the assignment rounds, [`engine_duties`] and `duties`, with `leading` set.
pub async fn run(
    engine: Arc<Engine>,
    mut lease: watch::Receiver<Option<LeaseId>>,
    duties: Vec<Duty>,
    leading: Leading,
) {
    let mut all = engine_duties(&engine);
    all.extend(duties);
    loop {
        let current = *lease.borrow_and_update();
        let Some(lease_id) = current else {
            if lease.changed().await.is_err() {
                return;
            }
            continue;
        };
        match campaign(&engine, lease_id).await {
            Ok(true) => {
                tracing::info!(broker = engine.config().broker_id, "elected controller");
                leading.set(true);
                lead(&engine, &mut lease, &all).await;
                leading.set(false);
                tracing::info!(broker = engine.config().broker_id, "no longer controller");
            }
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, "campaign failed"),
        }
        // Campaign again when the controller key goes away, the lease changes, or
        // after a while regardless.
        let gone = controller_gone(&engine);
        tokio::select! {
            _ = gone => {}
            _ = lease.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// The controller key's value while this broker holds it.
fn record(engine: &Engine) -> bytes::Bytes {
    ControllerRecord {
        broker: engine.config().broker_id,
        owner: engine.owner(),
    }
    .encode()
}

async fn campaign(engine: &Engine, lease: LeaseId) -> Result<bool, MetaError> {
    let key = engine.keys().controller();
    let txn = Txn::when(vec![Compare::Missing(key.clone())]).then(vec![Op::Put {
        key,
        value: record(engine),
        lease: Some(lease),
    }]);
    Ok(engine.meta().txn(txn).await?.succeeded)
}

async fn controller_gone(engine: &Engine) {
    let key = engine.keys().controller();
    let Ok(mut events) = engine.meta().watch(&key).await else {
        return std::future::pending().await;
    };
    loop {
        if matches!(engine.meta().get(&key).await, Ok(None)) {
            return;
        }
        if events.recv().await.is_none() {
            return;
        }
    }
}

/// One leadership: the duties run as tasks of this scope, and assignment rounds run
/// here, until this broker is no longer the controller.
async fn lead(engine: &Arc<Engine>, lease: &mut watch::Receiver<Option<LeaseId>>, duties: &[Duty]) {
    let mut scope = tokio::task::JoinSet::new();
    for duty in duties {
        tracing::debug!(duty = duty.name, "controller duty starts");
        scope.spawn((duty.start)());
    }
    let wake = Arc::new(Notify::new());
    let watchers: Vec<_> = [engine.keys().brokers(), engine.keys().topics()]
        .into_iter()
        .map(|prefix| notify_on_changes(engine.meta().clone(), prefix, Arc::downgrade(&wake)))
        .collect();
    let ours = record(engine);
    loop {
        match leaders::round(engine, &ours).await {
            Ok(Round::Settled) => {}
            Ok(Round::Again) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            Ok(Round::Deposed) => break,
            Err(e) => tracing::warn!(error = %e, "controller round failed"),
        }
        tokio::select! {
            _ = wake.notified() => {
                // Let a burst of changes (a topic with its first produce) settle.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ = tokio::time::sleep(ROUND_INTERVAL) => {}
            changed = lease.changed() => {
                if changed.is_err() || lease.borrow().is_none() {
                    break;
                }
            }
        }
    }
    for w in watchers {
        w.abort();
    }
    // Dropping the scope aborts the duties: their state goes with the leadership.
    scope.abort_all();
}
