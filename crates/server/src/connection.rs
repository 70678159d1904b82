//! One client connection: frames in, requests dispatched in arrival order, replies
//! written in that same order.
//!
//! The reader runs each request's synchronous part (e.g. appending a produce) before
//! reading the next, then queues its reply; the writer awaits replies in order. So a
//! connection can have many produces waiting for flushes at once (pipelining) while
//! their order, and the order of responses, is kept. Bad input closes the connection;
//! it never panics and never allocates more than the frame limit.
//!
//! Bounds: the accept loop serves at most `--max-connections` at once (each holds a
//! slot); a connection idle for `--connections-max-idle-ms` (nothing read or written,
//! no request in flight) is closed; at shutdown every connection stops reading,
//! answers what it has in flight and closes.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ApiKey, ResponseKind};
use sluice_broker::{api, Broker, Reply};
use sluice_protocol::codec::{decode_request, encode_response};
use sluice_protocol::frame::FrameDecoder;
use sluice_protocol::ProtocolError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};

/// Requests served, bytes in and out, and latency (from the request's arrival to its
/// response written), by API. Produce latency includes the wait for the flush that
/// makes the batch durable; fetch latency includes `max.wait.ms` long polls.
#[derive(Debug)]
pub struct RequestMetrics {
    apis: Vec<PerApi>,
    /// Partition errors in Produce responses, by Kafka error code + 1 (so that
    /// UNKNOWN_SERVER_ERROR, -1, has a slot).
    produce_errors: Vec<AtomicU64>,
    connections: AtomicU64,
    refused: AtomicU64,
    idle_closed: AtomicU64,
}

#[derive(Debug, Default)]
struct PerApi {
    requests: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    latency: sluice_metrics::Latency,
}

/// Above every Kafka API key.
const API_KEYS: usize = 128;

/// Above every Kafka error code + 1.
const ERROR_SLOTS: usize = 192;

impl Default for RequestMetrics {
    fn default() -> Self {
        Self {
            apis: (0..API_KEYS).map(|_| PerApi::default()).collect(),
            produce_errors: (0..ERROR_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            connections: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            idle_closed: AtomicU64::new(0),
        }
    }
}

impl RequestMetrics {
    /// Counts a connection closed at once for being over `--max-connections`.
    pub fn connection_refused(&self) {
        self.refused.fetch_add(1, Relaxed);
    }

    fn record(&self, api: ApiKey, started: Instant, bytes_in: usize, bytes_out: usize) {
        let Some(m) = self.apis.get(api as i16 as usize) else {
            return;
        };
        m.requests.fetch_add(1, Relaxed);
        m.bytes_in.fetch_add(bytes_in as u64, Relaxed);
        m.bytes_out.fetch_add(bytes_out as u64, Relaxed);
        m.latency.observe_since(started);
    }

    /// Counts the partition errors a Produce response carries.
    fn record_produce_errors(&self, body: &ResponseKind) {
        let ResponseKind::Produce(r) = body else {
            return;
        };
        for p in r.responses.iter().flat_map(|t| &t.partition_responses) {
            let slot = (i32::from(p.error_code) + 1) as usize;
            if p.error_code != 0 {
                if let Some(n) = self.produce_errors.get(slot) {
                    n.fetch_add(1, Relaxed);
                }
            }
        }
    }

    /// Appends the metrics of every API that has served a request.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        sluice_metrics::family(
            out,
            "sluice_connections",
            "gauge",
            "Client connections open.",
        );
        let _ = writeln!(out, "sluice_connections {}", self.connections.load(Relaxed));
        sluice_metrics::family(
            out,
            "sluice_connections_closed_total",
            "counter",
            "Client connections the broker closed: over --max-connections, or idle.",
        );
        for (reason, n) in [("limit", &self.refused), ("idle", &self.idle_closed)] {
            let _ = writeln!(
                out,
                "sluice_connections_closed_total{{reason=\"{reason}\"}} {}",
                n.load(Relaxed)
            );
        }
        let used: Vec<(String, &PerApi)> = self
            .apis
            .iter()
            .enumerate()
            .filter(|(_, m)| m.requests.load(Relaxed) > 0)
            .filter_map(|(key, m)| {
                let api = ApiKey::try_from(key as i16).ok()?;
                Some((format!("{api:?}"), m))
            })
            .collect();
        let requests: Vec<_> = used
            .iter()
            .map(|(a, m)| (a.as_str(), &m.requests))
            .collect();
        sluice_metrics::counters(
            out,
            "sluice_requests_total",
            "Kafka requests answered, by API.",
            "api",
            &requests,
        );
        sluice_metrics::family(
            out,
            "sluice_request_bytes_total",
            "counter",
            "Kafka request (in) and response (out) bytes on the wire, by API.",
        );
        for (api, m) in &used {
            for (direction, n) in [("in", &m.bytes_in), ("out", &m.bytes_out)] {
                let _ = writeln!(
                    out,
                    "sluice_request_bytes_total{{api=\"{api}\",direction=\"{direction}\"}} {}",
                    n.load(Relaxed)
                );
            }
        }
        sluice_metrics::family(
            out,
            "sluice_produce_errors_total",
            "counter",
            "Partition errors in Produce responses, by Kafka error and whether clients retry it.",
        );
        for (slot, n) in self.produce_errors.iter().enumerate() {
            let count = n.load(Relaxed);
            let Some(e) = ResponseError::try_from_code(slot as i16 - 1).filter(|_| count > 0)
            else {
                continue;
            };
            let _ = writeln!(
                out,
                "sluice_produce_errors_total{{error=\"{e:?}\",retriable=\"{}\"}} {count}",
                e.is_retriable()
            );
        }
        let latencies: Vec<_> = used
            .iter()
            .map(|(a, m)| (a.as_str(), &*m.latency))
            .collect();
        sluice_metrics::histograms(
            out,
            "sluice_request_seconds",
            "Kafka request latency from arrival to response written, by API.",
            "api",
            &latencies,
        );
    }
}

/// Replies queued per connection before the reader stops reading.
const MAX_QUEUED_REPLIES: usize = 128;

struct Queued {
    started: Instant,
    request_bytes: usize,
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    reply: Reply,
}

/// What bounds one connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request frame.
    pub max_frame: usize,
    /// Closed after this long with nothing read, written or in flight.
    pub idle: Duration,
}

/// Serves one connection until the client closes it, it sends bad input, it is
/// idle too long, or `closing` turns true. `_slot` is its place under the
/// connection limit, held until it ends.
pub async fn serve(
    broker: Broker,
    stream: TcpStream,
    limits: Limits,
    metrics: Arc<RequestMetrics>,
    mut closing: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    metrics.connections.fetch_add(1, Relaxed);
    let _open = OnDrop(|| {
        metrics.connections.fetch_sub(1, Relaxed);
    });
    let max_frame = limits.max_frame;
    let peer_ip = stream.peer_addr().ok().map(|a| a.ip());
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Queued>(MAX_QUEUED_REPLIES);
    // Requests read and not yet answered, and when the writer last wrote.
    let in_flight = Arc::new(AtomicU64::new(0));
    let last_write = Arc::new(std::sync::Mutex::new(Instant::now()));

    let write_loop = tokio::spawn({
        let metrics = metrics.clone();
        let (in_flight, last_write) = (in_flight.clone(), last_write.clone());
        async move {
            while let Some(q) = rx.recv().await {
                let _answered = OnDrop(|| {
                    in_flight.fetch_sub(1, Relaxed);
                    *last_write.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
                });
                let body = match q.reply {
                    Reply::Now(r) => *r,
                    Reply::Later(f) => f.await,
                    Reply::None => {
                        metrics.record(q.api_key, q.started, q.request_bytes, 0);
                        continue;
                    }
                };
                metrics.record_produce_errors(&body);
                match encode_response(
                    q.api_key,
                    q.version,
                    q.correlation_id,
                    &body,
                    size_hint(&body),
                ) {
                    Ok(frame) => {
                        if writer.write_all(&frame).await.is_err() {
                            return;
                        }
                        metrics.record(q.api_key, q.started, q.request_bytes, frame.len());
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot encode response; closing connection");
                        return;
                    }
                }
            }
        }
    });

    let decoder = FrameDecoder::new(max_frame);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    'read: loop {
        loop {
            let frame = match decoder.decode(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::info!(%peer, error = %e, "closing connection");
                    break 'read;
                }
            };
            let (started, request_bytes) = (Instant::now(), frame.len());
            let queued = match decode_request(frame) {
                Ok(req) => Queued {
                    started,
                    request_bytes,
                    api_key: req.api_key,
                    version: req.header.request_api_version,
                    correlation_id: req.header.correlation_id,
                    reply: broker.handle_from(req, peer_ip).await,
                },
                Err(ProtocolError::UnsupportedVersion {
                    api_key,
                    correlation_id,
                    ..
                }) if api_key == ApiKey::ApiVersions as i16 => Queued {
                    started,
                    request_bytes,
                    // The client retries at a version from this list (KIP-511).
                    api_key: ApiKey::ApiVersions,
                    version: 0,
                    correlation_id,
                    reply: Reply::Now(Box::new(ResponseKind::ApiVersions(
                        api::api_versions::response(ResponseError::UnsupportedVersion.code()),
                    ))),
                },
                Err(e) => {
                    tracing::info!(%peer, error = %e, "closing connection");
                    break 'read;
                }
            };
            in_flight.fetch_add(1, Relaxed);
            if tx.send(queued).await.is_err() {
                break 'read;
            }
        }
        let mut last_read = Instant::now();
        loop {
            let quiet_since = last_read.max(read_instant(&last_write));
            tokio::select! {
                read = reader.read_buf(&mut buf) => match read {
                    Ok(0) | Err(_) => break 'read,
                    Ok(_) => continue 'read,
                },
                _ = tokio::time::sleep_until((quiet_since + limits.idle).into()) => {
                    let now = Instant::now();
                    let quiet_since = last_read.max(read_instant(&last_write));
                    if in_flight.load(Relaxed) == 0 && now >= quiet_since + limits.idle {
                        tracing::debug!(%peer, "closing an idle connection");
                        metrics.idle_closed.fetch_add(1, Relaxed);
                        break 'read;
                    }
                    // Busy (a long poll in flight) or written to since: wait again.
                    last_read = if in_flight.load(Relaxed) == 0 { quiet_since } else { now };
                }
                _ = closing.wait_for(|c| *c) => break 'read,
            }
        }
    }
    drop(tx);
    let _ = write_loop.await;
}

fn read_instant(at: &std::sync::Mutex<Instant>) -> Instant {
    *at.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs a closure when dropped.
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// Pre-sizes response buffers; only fetches are large.
fn size_hint(body: &ResponseKind) -> usize {
    match body {
        ResponseKind::Fetch(f) => {
            f.responses
                .iter()
                .flat_map(|t| &t.partitions)
                .map(|p| p.records.as_ref().map_or(0, |r| r.len()) + 64)
                .sum::<usize>()
                + 256
        }
        _ => 1024,
    }
}
