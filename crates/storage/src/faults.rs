//! A fault-injecting object store for tests and experiments.
//!
//! Wraps any store and, per request, adds latency, fails, or hangs, as a spec says:
//!
//! ```text
//! latency=50ms,jitter=20ms,error-rate=0.01,hang-rate=0.001,hang=30s,burst=5s/60s
//! ```
//!
//! - `latency`, `jitter`: every request waits `latency` plus a random share of `jitter`.
//! - `error-rate`: that fraction of requests fails with a retriable 503-like error.
//! - `hang-rate`, `hang`: that fraction of requests stalls for `hang`, then fails.
//! - `burst=ON/PERIOD`: every request fails during the first `ON` of each `PERIOD`
//!   (counted from start), like an S3 SlowDown storm.
//!
//! The broker uses it when started with `--object-store-faults SPEC`. Tests can also
//! script the exact fate of the next PUTs ([`FaultyStore::script_puts`]).

use std::collections::VecDeque;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use rand::Rng;

use crate::StorageError;

/// What to inject.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultSpec {
    pub latency: Duration,
    pub jitter: Duration,
    pub error_rate: f64,
    pub hang_rate: f64,
    pub hang: Duration,
    /// (failing for, every)
    pub burst: Option<(Duration, Duration)>,
}

fn duration(key: &str, v: &str) -> Result<Duration, String> {
    let (num, unit) = v
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((v, "ms"), |i| v.split_at(i));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{key}: {v:?} is not a duration"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{key}: unit of {v:?} must be ms, s or m")),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn rate(key: &str, v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{key}: {v:?} is not a fraction between 0 and 1")),
    }
}

impl FaultSpec {
    pub fn parse(spec: &str) -> Result<Self, StorageError> {
        let mut f = FaultSpec {
            hang: Duration::from_secs(30),
            ..Default::default()
        };
        let invalid = |reason: String| StorageError::InvalidFaultSpec {
            spec: spec.to_string(),
            reason,
        };
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| invalid(format!("{part:?} is not key=value")))?;
            match k {
                "latency" => f.latency = duration(k, v).map_err(invalid)?,
                "jitter" => f.jitter = duration(k, v).map_err(invalid)?,
                "error-rate" => f.error_rate = rate(k, v).map_err(invalid)?,
                "hang-rate" => f.hang_rate = rate(k, v).map_err(invalid)?,
                "hang" => f.hang = duration(k, v).map_err(invalid)?,
                "burst" => {
                    let (on, every) = v
                        .split_once('/')
                        .ok_or_else(|| invalid(format!("burst={v}: expected ON/PERIOD")))?;
                    let (on, every) = (
                        duration(k, on).map_err(invalid)?,
                        duration(k, every).map_err(invalid)?,
                    );
                    if every.is_zero() || on > every {
                        return Err(invalid(format!("burst={v}: ON must be within PERIOD")));
                    }
                    f.burst = Some((on, every));
                }
                other => return Err(invalid(format!("unknown fault {other:?}"))),
            }
        }
        Ok(f)
    }
}

/// A scripted outcome for one PUT (tests that need exact sequences of failures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutFate {
    /// Succeeds without any injected fault.
    Succeed,
    Fail,
    Delay(Duration),
    DelayThenFail(Duration),
    /// The write lands but the caller hears "already exists", as when a timed-out
    /// request completed and the client's retry found the key taken.
    LandsButReportedTaken,
}

/// The fault-injecting wrapper.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    spec: FaultSpec,
    started: Instant,
    scripted_puts: Mutex<VecDeque<PutFate>>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>, spec: FaultSpec) -> Self {
        Self {
            inner,
            spec,
            started: Instant::now(),
            scripted_puts: Mutex::default(),
        }
    }

    /// The next PUTs meet these fates, in order; afterwards the spec applies again.
    pub fn script_puts(&self, fates: impl IntoIterator<Item = PutFate>) {
        self.scripted_puts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(fates);
    }

    fn next_scripted_put(&self) -> Option<PutFate> {
        self.scripted_puts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }

    /// Waits and decides whether this request fails.
    async fn before(&self, what: &str) -> object_store::Result<()> {
        let (delay, fail, hang) = {
            let mut rng = rand::rng();
            let jitter = self.spec.jitter.mul_f64(rng.random::<f64>());
            let hang = rng.random::<f64>() < self.spec.hang_rate;
            let fail = rng.random::<f64>() < self.spec.error_rate;
            (self.spec.latency + jitter, fail, hang)
        };
        tokio::time::sleep(delay).await;
        if hang {
            tokio::time::sleep(self.spec.hang).await;
            return Err(injected(what, "hang"));
        }
        let in_burst = self.spec.burst.is_some_and(|(on, every)| {
            let t = self.started.elapsed().as_secs_f64() % every.as_secs_f64();
            t < on.as_secs_f64()
        });
        if fail || in_burst {
            return Err(injected(what, "503 SlowDown"));
        }
        Ok(())
    }
}

fn injected(what: &str, kind: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "FaultyStore",
        source: format!("injected {kind} on {what}").into(),
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let (delay, fail) = match self.next_scripted_put() {
            None => {
                self.before("put").await?;
                return self.inner.put_opts(location, payload, opts).await;
            }
            Some(PutFate::LandsButReportedTaken) => {
                self.inner.put_opts(location, payload, opts).await?;
                return Err(object_store::Error::AlreadyExists {
                    path: location.to_string(),
                    source: "injected: the retry found the first attempt".into(),
                });
            }
            Some(PutFate::Succeed) => (Duration::ZERO, false),
            Some(PutFate::Fail) => (Duration::ZERO, true),
            Some(PutFate::Delay(d)) => (d, false),
            Some(PutFate::DelayThenFail(d)) => (d, true),
        };
        tokio::time::sleep(delay).await;
        if fail {
            return Err(injected("put", "scripted failure"));
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.before("put").await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.before("get").await?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.before("get").await?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.before("list").await?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.before("copy").await?;
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::ObjectStoreExt;

    #[test]
    fn parses_specs() {
        let f = FaultSpec::parse(
            "latency=50ms,jitter=1s,error-rate=0.5,hang-rate=0.1,hang=2s,burst=5s/1m",
        )
        .unwrap();
        assert_eq!(f.latency, Duration::from_millis(50));
        assert_eq!(f.jitter, Duration::from_secs(1));
        assert_eq!((f.error_rate, f.hang_rate), (0.5, 0.1));
        assert_eq!(f.hang, Duration::from_secs(2));
        assert_eq!(
            f.burst,
            Some((Duration::from_secs(5), Duration::from_secs(60)))
        );
        for bad in [
            "latency",
            "latency=fast",
            "error-rate=2",
            "burst=5s",
            "burst=2m/1m",
            "nope=1",
        ] {
            assert!(FaultSpec::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(FaultSpec::parse("").unwrap().error_rate, 0.0);
    }

    #[tokio::test]
    async fn injects_latency_errors_and_bursts() {
        let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let p = Path::from("k");
        let slow = FaultyStore::new(inner.clone(), FaultSpec::parse("latency=30ms").unwrap());
        let t = Instant::now();
        slow.put(&p, Bytes::from_static(b"x").into()).await.unwrap();
        assert!(t.elapsed() >= Duration::from_millis(30));

        let failing = FaultyStore::new(inner.clone(), FaultSpec::parse("error-rate=1").unwrap());
        assert!(failing.get(&p).await.is_err());

        let burst = FaultyStore::new(inner, FaultSpec::parse("burst=200ms/10s").unwrap());
        assert!(burst.get(&p).await.is_err(), "inside the burst");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(burst.get(&p).await.is_ok(), "after the burst");
    }
}
