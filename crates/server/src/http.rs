//! HTTP endpoints: `/healthz` (the process is alive), `/readyz` (registered in the
//! cluster, metadata store and object store answer), `/metrics` (Prometheus text),
//! and the admin API under `/admin/v1` (see `admin.rs`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::routing::get;
use axum::Router;
use object_store::ObjectStoreExt;
use sluice_engine::Engine;
use sluice_meta::metered::MetaMetrics;
use sluice_storage::metered::StoreMetrics;

use crate::connection::RequestMetrics;

/// The measurements the wrappers around the stores and the connection loop share
/// with `/metrics`.
#[derive(Clone, Default)]
pub struct Metrics {
    pub store: Arc<StoreMetrics>,
    pub meta: Arc<MetaMetrics>,
    pub requests: Arc<RequestMetrics>,
    /// Whether this broker is the controller (it alone renders the lag gauge).
    pub leading: sluice_control::Leading,
}

#[derive(Clone)]
pub struct HttpState {
    pub engine: Arc<Engine>,
    pub metrics: Metrics,
    /// Asks other brokers for their partitions (admin API, lag).
    pub client: reqwest::Client,
}

pub fn router(engine: Arc<Engine>, metrics: Metrics) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .merge(crate::admin::routes())
        .with_state(HttpState {
            engine,
            metrics,
            client: reqwest::Client::new(),
        })
}

async fn metrics_text(
    State(state): State<HttpState>,
) -> ([(header::HeaderName, &'static str); 1], String) {
    let mut out = String::with_capacity(32 * 1024);
    state.metrics.requests.render(&mut out);
    state.metrics.store.render(&mut out);
    state.metrics.meta.render(&mut out);
    let engine = &state.engine;
    engine.render_metrics(&mut out);
    engine.cache_metrics().render(&mut out);
    if state.metrics.leading.get() {
        crate::admin::render_lag(engine, &state.client, &mut out).await;
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

async fn readyz(State(state): State<HttpState>) -> (StatusCode, String) {
    match probe(&state.engine, Duration::from_secs(2)).await {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}

/// Checks the broker has loaded its assignments and sees itself registered, and that
/// both stores answer within `timeout`.
async fn probe(engine: &Engine, timeout: Duration) -> Result<(), String> {
    let view = engine.view();
    if !view.loaded {
        return Err("partition assignments not loaded yet".into());
    }
    if !view.brokers.contains_key(&engine.config().broker_id) {
        return Err("not registered in the cluster yet".into());
    }
    let meta = tokio::time::timeout(timeout, engine.meta().get("/sluice/readyz"))
        .await
        .map_err(|_| "metadata store timed out".to_string())?;
    meta.map_err(|e| format!("metadata store: {e}"))?;
    let path = object_store::path::Path::from("readyz-probe");
    let object = tokio::time::timeout(timeout, engine.object_store().head(&path))
        .await
        .map_err(|_| "object store timed out".to_string())?;
    match object {
        Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(format!("object store: {e}")),
    }
}
