//! Membership: this broker's `brokers/<id>/live` record, bound to a lease it keeps
//! alive (RFC 0004).
//!
//! The record vanishes when the lease expires (the broker died, or lost the metadata
//! store for longer than the TTL), and the controller then moves its partitions.
//! A broker that finds its lease gone re-registers with a new one as soon as the store
//! answers; its generation, not its lease, fences its commits, so a lapse never lets
//! two brokers commit for one partition.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_engine::cluster::BrokerRecord;
use sluice_engine::Engine;
use sluice_meta::{LeaseId, MetaError, Op, Txn};
use tokio::sync::watch;

/// A registered broker and its current lease (`None` while it has none).
pub struct Membership {
    engine: Arc<Engine>,
    record: BrokerRecord,
    ttl: Duration,
    lease: watch::Sender<Option<LeaseId>>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Membership {
    /// Registers and keeps the registration alive in the background.
    pub fn start(engine: Arc<Engine>, record: BrokerRecord, ttl: Duration) -> Arc<Self> {
        let (lease, _) = watch::channel(None);
        let m = Arc::new(Self {
            engine,
            record,
            ttl,
            lease,
            task: std::sync::Mutex::new(None),
        });
        let handle = tokio::spawn(m.clone().keep_registered());
        *m.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        m
    }

    /// The lease, as it changes (the controller campaigns with it).
    pub fn lease(&self) -> watch::Receiver<Option<LeaseId>> {
        self.lease.subscribe()
    }

    async fn register(&self) -> Result<LeaseId, MetaError> {
        let meta = self.engine.meta();
        let lease = meta.grant_lease(self.ttl).await?;
        let key = self.engine.keys().live(self.record.id);
        let value = serde_json::to_vec(&self.record).unwrap_or_default();
        let put = Op::Put {
            key,
            value: value.into(),
            lease: Some(lease),
        };
        meta.txn(Txn::when(vec![]).then(vec![put])).await?;
        tracing::info!(
            broker = self.record.id,
            lease,
            ttl_ms = self.ttl.as_millis() as u64,
            "registered"
        );
        Ok(lease)
    }

    async fn keep_registered(self: Arc<Self>) {
        let every = (self.ttl / 3).max(Duration::from_millis(100));
        loop {
            let lease = match self.register().await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot register; retrying");
                    tokio::time::sleep(every).await;
                    continue;
                }
            };
            self.lease.send_replace(Some(lease));
            let mut last_ok = Instant::now();
            loop {
                tokio::time::sleep(every).await;
                match self.engine.meta().keep_alive(lease).await {
                    Ok(()) => last_ok = Instant::now(),
                    Err(MetaError::LeaseNotFound(_)) => {
                        tracing::warn!(lease, "lease expired; registering again");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "lease keep-alive failed");
                        if last_ok.elapsed() > self.ttl {
                            // Our record is gone by now; stop claiming the lease.
                            break;
                        }
                    }
                }
            }
            self.lease.send_replace(None);
        }
    }

    /// Hands this broker's partitions off: marks the record as leaving, so the
    /// controller moves every partition away, and waits (bounded) until they moved.
    /// Then ends the lease.
    pub async fn leave(&self, within: Duration) {
        let Some(lease) = *self.lease.borrow() else {
            // Not registered (the store is unreachable): nothing to hand off.
            return;
        };
        let meta = self.engine.meta();
        let mut record = self.record.clone();
        record.leaving = true;
        let put = Op::Put {
            key: self.engine.keys().live(self.record.id),
            value: serde_json::to_vec(&record).unwrap_or_default().into(),
            lease: Some(lease),
        };
        if let Err(e) = meta.txn(Txn::when(vec![]).then(vec![put])).await {
            tracing::warn!(error = %e, "cannot announce leaving");
        }
        let deadline = tokio::time::Instant::now() + within;
        let mut changes = self.engine.commits();
        loop {
            self.engine.request_sync();
            let view = self.engine.view();
            let leads_any = view
                .leaders
                .values()
                .flat_map(|a| a.leaders.iter())
                .any(|l| l.broker == self.record.id);
            let others = view
                .brokers
                .values()
                .any(|b| b.id != self.record.id && !b.leaving);
            if !leads_any || !others {
                break;
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                tracing::warn!("partitions did not move before the deadline");
                break;
            }
        }
        if let Some(t) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
        let _ = meta.revoke_lease(lease).await;
    }
}
