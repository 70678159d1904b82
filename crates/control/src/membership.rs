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

use sluice_engine::keyspace::{BrokerRecord, Stored};
use sluice_engine::Engine;
use sluice_meta::{Compare, LeaseId, MetaError, MetaStore, Op, Txn};
use tokio::sync::watch;

/// A registered broker and its current lease (`None` while it has none).
pub struct Membership {
    engine: Arc<Engine>,
    record: BrokerRecord,
    ttl: Duration,
    /// Writes of the record hold only while this holds (the broker id's claim).
    guard: Option<Compare>,
    lease: watch::Sender<Option<LeaseId>>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Membership {
    /// Registers and keeps the registration alive in the background. With a
    /// `guard` (see [`claim_broker_id`]), the record is written only while the
    /// guard holds, so a process that lost its id can never register under it.
    pub fn start(
        engine: Arc<Engine>,
        record: BrokerRecord,
        ttl: Duration,
        guard: Option<Compare>,
    ) -> Arc<Self> {
        let (lease, _) = watch::channel(None);
        let m = Arc::new(Self {
            engine,
            record,
            ttl,
            guard,
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
        let put = Op::Put {
            key,
            value: self.record.encode(),
            lease: Some(lease),
        };
        let guard = self.guard.iter().cloned().collect();
        if !meta.txn(Txn::when(guard).then(vec![put])).await?.succeeded {
            let _ = meta.revoke_lease(lease).await;
            return Err(MetaError::Unavailable(format!(
                "broker id {} is claimed by another process",
                self.record.id
            )));
        }
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
            if self.engine.is_fenced() {
                // Another process is this broker now; its record must stay.
                tracing::error!(
                    broker = self.record.id,
                    "fenced by a newer process with this broker id: not registering again"
                );
                return;
            }
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
                if self.engine.is_fenced() {
                    // Our record was replaced by the newer process's; let the lease go.
                    let _ = self.engine.meta().revoke_lease(lease).await;
                    break;
                }
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
            value: record.encode(),
            lease: Some(lease),
        };
        let guard = self.guard.iter().cloned().collect();
        if let Err(e) = meta.txn(Txn::when(guard).then(vec![put])).await {
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

/// A broker id claimed with `--broker-id=auto`: `brokers/<id>/claim` holds this
/// process's token under a lease of its own.
pub struct Claim {
    pub id: i32,
    key: String,
    token: String,
    lease: LeaseId,
}

/// Claims the lowest broker id that has neither a claim (`brokers/<id>/claim`) nor a
/// live broker, under a new lease of `ttl`.
///
/// The claim vanishes with its lease, so the ids of pods that are gone are reused
/// and ids stay small and bounded by the most brokers alive at once. Reuse is safe:
/// the new process claims a new generation of the id at start, which fences the old
/// one's commits for good (RFC 0004), and leadership follows the controller's
/// assignment, not the id.
pub async fn claim_broker_id(
    meta: &dyn MetaStore,
    keys: &sluice_engine::keyspace::Keys,
    ttl: Duration,
) -> Result<Claim, MetaError> {
    let token = uuid::Uuid::new_v4().to_string();
    let lease = meta.grant_lease(ttl).await?;
    for id in 0..i32::MAX {
        let key = keys.broker_claim(id);
        let put = Op::Put {
            key: key.clone(),
            value: token.clone().into_bytes().into(),
            lease: Some(lease),
        };
        // Skipping ids with a live record keeps clear of brokers with fixed ids.
        let txn = Txn::when(vec![
            Compare::Missing(key.clone()),
            Compare::Missing(keys.live(id)),
        ])
        .then(vec![put]);
        if meta.txn(txn).await?.succeeded {
            tracing::info!(broker = id, "claimed broker id");
            return Ok(Claim {
                id,
                key,
                token,
                lease,
            });
        }
    }
    Err(MetaError::Unavailable("no free broker id".into()))
}

/// A claim kept alive in the background (see [`Claim::keep_alive`]).
pub struct KeptClaim {
    pub id: i32,
    guard: Compare,
    release: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<String>,
}

impl KeptClaim {
    /// What the membership record's writes compare: the claim is still ours.
    pub fn guard(&self) -> Compare {
        self.guard.clone()
    }

    /// Resolves only if the id is lost to another process (the claim's lease lapsed
    /// and someone else claimed the id), with the reason.
    pub async fn lost(&mut self) -> String {
        (&mut self.task)
            .await
            .unwrap_or_else(|e| format!("broker id claim task: {e}"))
    }

    /// Frees the id for the next process at once: the keeper stops and revokes the
    /// lease it holds now (a healed lapse may have replaced the first one).
    pub async fn release(mut self) {
        if let Some(release) = self.release.take() {
            let _ = release.send(());
        }
        let _ = self.task.await;
    }
}

impl Claim {
    /// What the membership record's writes compare: the claim is still ours.
    pub fn guard(&self) -> Compare {
        Compare::ValueEquals(self.key.clone(), self.token.clone().into_bytes().into())
    }

    /// Keeps the claim alive from now on, in the background. A lapse nobody used is
    /// healed by claiming the id again under a new lease.
    pub fn keep_alive(self, meta: Arc<dyn MetaStore>, ttl: Duration) -> KeptClaim {
        let (release, released) = tokio::sync::oneshot::channel();
        KeptClaim {
            id: self.id,
            guard: self.guard(),
            release: Some(release),
            task: tokio::spawn(self.keep(meta, ttl, released)),
        }
    }

    async fn keep(
        mut self,
        meta: Arc<dyn MetaStore>,
        ttl: Duration,
        mut released: tokio::sync::oneshot::Receiver<()>,
    ) -> String {
        let every = (ttl / 3).max(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = &mut released => {
                    let _ = meta.revoke_lease(self.lease).await;
                    return format!("broker id {} released", self.id);
                }
            }
            match meta.keep_alive(self.lease).await {
                Ok(()) => continue,
                Err(MetaError::LeaseNotFound(_)) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "broker id claim keep-alive failed");
                    continue;
                }
            }
            let Ok(lease) = meta.grant_lease(ttl).await else {
                continue;
            };
            let put = Op::Put {
                key: self.key.clone(),
                value: self.token.clone().into_bytes().into(),
                lease: Some(lease),
            };
            // Ours again if nobody took it, or if it still holds our token.
            let missing =
                Txn::when(vec![Compare::Missing(self.key.clone())]).then(vec![put.clone()]);
            let ours = Txn::when(vec![self.guard()]).then(vec![put]);
            let retaken = match meta.txn(missing).await {
                Ok(r) if r.succeeded => true,
                Ok(_) => matches!(meta.txn(ours).await, Ok(r) if r.succeeded),
                Err(_) => {
                    let _ = meta.revoke_lease(lease).await;
                    continue;
                }
            };
            if retaken {
                tracing::warn!(broker = self.id, "broker id claim lapsed; claimed it again");
                self.lease = lease;
            } else {
                let _ = meta.revoke_lease(lease).await;
                return format!(
                    "broker id {} was claimed by another process while this one's lease lapsed",
                    self.id
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_engine::keyspace::Keys;
    use sluice_meta::EmbeddedStore;

    #[tokio::test]
    async fn auto_ids_are_the_lowest_free_and_a_lost_claim_is_reported() {
        let meta: Arc<dyn MetaStore> = Arc::new(EmbeddedStore::in_memory());
        let keys = Keys::new("c");
        let ttl = Duration::from_secs(60);
        let a = claim_broker_id(meta.as_ref(), &keys, ttl).await.unwrap();
        let b = claim_broker_id(meta.as_ref(), &keys, ttl).await.unwrap();
        assert_eq!((a.id, b.id), (0, 1));

        // `a`'s lease ends (the pod is gone): its id is free again.
        meta.revoke_lease(a.lease).await.unwrap();
        let c = claim_broker_id(meta.as_ref(), &keys, ttl).await.unwrap();
        assert_eq!(c.id, 0);
        // The old holder of id 0 can no longer pass its guard, and learns that it
        // lost the id at its next keep-alive.
        let guarded = Txn::when(vec![a.guard()]).then(vec![Op::put("x", "y")]);
        assert!(!meta.txn(guarded).await.unwrap().succeeded);
        let mut kept = a.keep_alive(meta.clone(), Duration::from_millis(300));
        let lost = tokio::time::timeout(Duration::from_secs(5), kept.lost())
            .await
            .unwrap();
        assert!(lost.contains("broker id 0"), "{lost}");

        // A lapse nobody used is healed: `b` claims its id again.
        meta.revoke_lease(b.lease).await.unwrap();
        let kept = b.keep_alive(meta.clone(), Duration::from_millis(300));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!kept.task.is_finished());
        let d = claim_broker_id(meta.as_ref(), &keys, ttl).await.unwrap();
        assert_eq!(d.id, 2, "id 1 is held again");
        // Releasing revokes the lease the keeper holds now (not the first one), so
        // the id is free at once.
        kept.release().await;
        let e = claim_broker_id(meta.as_ref(), &keys, ttl).await.unwrap();
        assert_eq!(e.id, 1, "id 1 is free after the release");
    }
}
