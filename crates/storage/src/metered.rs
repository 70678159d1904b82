//! Object-store metrics: requests by kind and outcome, bytes moved, and latency
//! histograms, by wrapping the store. Rendered in Prometheus text format.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use sluice_metrics::Latency;

/// Request kinds counted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Put,
    Get,
    Head,
    Delete,
    List,
    Copy,
}

const KINDS: [(Kind, &str); 6] = [
    (Kind::Put, "put"),
    (Kind::Get, "get"),
    (Kind::Head, "head"),
    (Kind::Delete, "delete"),
    (Kind::List, "list"),
    (Kind::Copy, "copy"),
];

#[derive(Default)]
struct PerKind {
    ok: AtomicU64,
    error: AtomicU64,
    bytes: AtomicU64,
    latency: Latency,
}

/// Counters shared by a [`MeteredStore`] and whoever renders them.
#[derive(Default)]
pub struct StoreMetrics {
    kinds: [PerKind; KINDS.len()],
}

impl fmt::Debug for StoreMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreMetrics")
    }
}

impl StoreMetrics {
    fn slot(&self, kind: Kind) -> &PerKind {
        let i = KINDS.iter().position(|(k, _)| *k == kind).unwrap_or(0);
        &self.kinds[i]
    }

    fn record(&self, kind: Kind, ok: bool, bytes: u64, started: Instant) {
        let m = self.slot(kind);
        if ok { &m.ok } else { &m.error }.fetch_add(1, Ordering::Relaxed);
        m.bytes.fetch_add(bytes, Ordering::Relaxed);
        m.latency.observe_since(started);
    }

    /// Successful plus failed requests of a kind.
    pub fn requests(&self, kind: Kind) -> u64 {
        let m = self.slot(kind);
        m.ok.load(Ordering::Relaxed) + m.error.load(Ordering::Relaxed)
    }

    /// Appends the metrics in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let kinds = || KINDS.iter().map(|(_, name)| *name).zip(&self.kinds);
        let counts: Vec<_> = kinds().map(|(n, m)| (n, &m.ok, &m.error)).collect();
        sluice_metrics::outcomes(
            out,
            "sluice_object_store_requests_total",
            "Object store requests by kind and outcome.",
            "kind",
            &counts,
        );
        let bytes: Vec<_> = kinds().map(|(n, m)| (n, &m.bytes)).collect();
        sluice_metrics::counters(
            out,
            "sluice_object_store_bytes_total",
            "Bytes written (put) and read (get).",
            "kind",
            &bytes,
        );
        let latencies: Vec<_> = kinds().map(|(n, m)| (n, &*m.latency)).collect();
        sluice_metrics::histograms(
            out,
            "sluice_object_store_request_seconds",
            "Object store request latency, retries included.",
            "kind",
            &latencies,
        );
    }
}

/// Wraps an object store and counts what passes through.
#[derive(Debug)]
pub struct MeteredStore {
    inner: Arc<dyn ObjectStore>,
    metrics: Arc<StoreMetrics>,
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn ObjectStore>, metrics: Arc<StoreMetrics>) -> Self {
        Self { inner, metrics }
    }
}

impl fmt::Display for MeteredStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Metered({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for MeteredStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let (started, len) = (Instant::now(), payload.content_length() as u64);
        let r = self.inner.put_opts(location, payload, opts).await;
        self.metrics.record(
            Kind::Put,
            r.is_ok(),
            if r.is_ok() { len } else { 0 },
            started,
        );
        r
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let (started, kind) = (
            Instant::now(),
            if options.head { Kind::Head } else { Kind::Get },
        );
        let r = self.inner.get_opts(location, options).await;
        let (ok, bytes) = match &r {
            Ok(_) if kind == Kind::Head => (true, 0),
            Ok(g) => (true, g.range.end - g.range.start),
            Err(object_store::Error::NotFound { .. }) => (true, 0),
            Err(_) => (false, 0),
        };
        // A missing object is an answer, not a failure of the store.
        self.metrics.record(kind, ok, bytes, started);
        r
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        let started = Instant::now();
        let r = self.inner.get_ranges(location, ranges).await;
        let bytes = r
            .as_ref()
            .map_or(0, |v| v.iter().map(|b| b.len() as u64).sum());
        self.metrics.record(Kind::Get, r.is_ok(), bytes, started);
        r
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let metrics = self.metrics.clone();
        self.inner
            .delete_stream(locations)
            .map(move |r| {
                metrics.record(Kind::Delete, r.is_ok(), 0, Instant::now());
                r
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.metrics.record(Kind::List, true, 0, Instant::now());
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let started = Instant::now();
        let r = self.inner.list_with_delimiter(prefix).await;
        self.metrics.record(Kind::List, r.is_ok(), 0, started);
        r
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        let started = Instant::now();
        let r = self.inner.copy_opts(from, to, options).await;
        self.metrics.record(Kind::Copy, r.is_ok(), 0, started);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::ObjectStoreExt;

    #[tokio::test]
    async fn counts_requests_bytes_and_latency() {
        let metrics = Arc::new(StoreMetrics::default());
        let store = MeteredStore::new(Arc::new(InMemory::new()), metrics.clone());
        let p = Path::from("a");
        store
            .put(&p, Bytes::from_static(b"hello").into())
            .await
            .unwrap();
        store.get_range(&p, 1..3).await.unwrap();
        assert!(store.get(&Path::from("missing")).await.is_err());
        store.head(&p).await.unwrap();
        assert_eq!(metrics.requests(Kind::Head), 1);
        assert_eq!(metrics.requests(Kind::Put), 1);
        assert_eq!(metrics.requests(Kind::Get), 2);
        let mut out = String::new();
        metrics.render(&mut out);
        assert!(out.contains("sluice_object_store_requests_total{kind=\"put\",outcome=\"ok\"} 1"));
        assert!(out.contains("sluice_object_store_bytes_total{kind=\"put\"} 5"));
        assert!(out.contains("sluice_object_store_bytes_total{kind=\"get\"} 2"));
        assert!(out.contains("sluice_object_store_request_seconds_count{kind=\"put\"} 1"));
    }
}
