//! A [`MetaStore`] wrapper that counts requests by operation and outcome and
//! records their latency, for `/metrics`. Watches are counted when they start.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sluice_metrics::Latency;
use tokio::sync::mpsc;

use crate::{KeyValue, LeaseId, MetaStore, Result, Txn, TxnResult, WatchEvent};

const OPS: [&str; 5] = ["get", "range", "txn", "lease", "watch"];

#[derive(Debug, Default)]
struct PerOp {
    ok: AtomicU64,
    error: AtomicU64,
    latency: Latency,
}

/// Counters shared by a [`MeteredMeta`] and whoever renders them.
#[derive(Debug, Default)]
pub struct MetaMetrics {
    ops: [PerOp; OPS.len()],
}

impl MetaMetrics {
    fn record<T>(&self, op: usize, started: Instant, r: &Result<T>) {
        let m = &self.ops[op];
        if r.is_ok() { &m.ok } else { &m.error }.fetch_add(1, Relaxed);
        m.latency.observe_since(started);
    }

    /// Appends the metrics in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let ops = || OPS.iter().copied().zip(&self.ops);
        let counts: Vec<_> = ops().map(|(n, m)| (n, &m.ok, &m.error)).collect();
        sluice_metrics::outcomes(
            out,
            "sluice_meta_requests_total",
            "Metadata store requests by operation and outcome.",
            "op",
            &counts,
        );
        let latencies: Vec<_> = ops().map(|(n, m)| (n, &*m.latency)).collect();
        sluice_metrics::histograms(
            out,
            "sluice_meta_request_seconds",
            "Metadata store request latency (txn: compare-and-write transactions).",
            "op",
            &latencies,
        );
    }
}

/// Wraps a metadata store and measures what passes through.
pub struct MeteredMeta {
    inner: Arc<dyn MetaStore>,
    metrics: Arc<MetaMetrics>,
}

impl MeteredMeta {
    pub fn new(inner: Arc<dyn MetaStore>, metrics: Arc<MetaMetrics>) -> Self {
        Self { inner, metrics }
    }
}

#[async_trait]
impl MetaStore for MeteredMeta {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let started = Instant::now();
        let r = self.inner.get(key).await;
        self.metrics.record(0, started, &r);
        r
    }

    async fn range(&self, prefix: &str) -> Result<Vec<KeyValue>> {
        let started = Instant::now();
        let r = self.inner.range(prefix).await;
        self.metrics.record(1, started, &r);
        r
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        let started = Instant::now();
        let r = self.inner.txn(txn).await;
        self.metrics.record(2, started, &r);
        r
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        let started = Instant::now();
        let r = self.inner.grant_lease(ttl).await;
        self.metrics.record(3, started, &r);
        r
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        let started = Instant::now();
        let r = self.inner.keep_alive(lease).await;
        self.metrics.record(3, started, &r);
        r
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        let started = Instant::now();
        let r = self.inner.revoke_lease(lease).await;
        self.metrics.record(3, started, &r);
        r
    }

    async fn watch(&self, prefix: &str) -> Result<mpsc::UnboundedReceiver<WatchEvent>> {
        let started = Instant::now();
        let r = self.inner.watch(prefix).await;
        self.metrics.record(4, started, &r);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EmbeddedStore, Op};

    #[tokio::test]
    async fn counts_operations_and_latency() {
        let metrics = Arc::new(MetaMetrics::default());
        let meta = MeteredMeta::new(Arc::new(EmbeddedStore::in_memory()), metrics.clone());
        meta.txn(Txn::when(vec![]).then(vec![Op::put("a", "1")]))
            .await
            .unwrap();
        meta.get("a").await.unwrap();
        meta.range("").await.unwrap();
        let mut out = String::new();
        metrics.render(&mut out);
        assert!(out.contains("sluice_meta_requests_total{op=\"txn\",outcome=\"ok\"} 1"));
        assert!(out.contains("sluice_meta_requests_total{op=\"get\",outcome=\"ok\"} 1"));
        assert!(out.contains("sluice_meta_request_seconds_count{op=\"range\"} 1"));
    }

    /// The wrapper passes the suite the stores it wraps pass (as object_store's
    /// wrappers run its integration tests).
    #[tokio::test]
    async fn passes_the_conformance_suite_like_what_it_wraps() {
        let metrics = Arc::new(MetaMetrics::default());
        let meta = MeteredMeta::new(Arc::new(EmbeddedStore::in_memory()), metrics);
        crate::conformance::run_all(&meta).await;
    }
}
