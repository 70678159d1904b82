//! Test harness: starts the real `sluice` binary on free loopback ports with its own
//! data directory, and stops it with SIGTERM or SIGKILL.
//!
//! The binary is `$SLUICE_BIN`, else `<target>/release/sluice`, else
//! `<target>/debug/sluice`; the test command builds it first.
//!
//! With `SLUICE_E2E_OBJECT_STORE=s3` every broker keeps its objects in S3: each gets
//! its own S3 server (moto, from PyPI's `moto[server]`), started here and stopped when
//! the broker is dropped. With `SLUICE_E2E_META=etcd` its metadata lives in its own
//! etcd.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
pub use sluice_testkit::{free_port, Etcd, S3Server, AWS_TEST_ENV};

/// The sluice binary under test.
pub fn sluice_bin() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("SLUICE_BIN") {
        return Ok(PathBuf::from(p));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    for profile in ["release", "debug"] {
        let p = target.join(profile).join("sluice");
        if p.exists() {
            return Ok(p);
        }
    }
    bail!("sluice binary not found under {}: run `cargo build --release -p sluice-server` or set SLUICE_BIN", target.display())
}

/// A running (or stopped) broker process.
pub struct Sluice {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub http_port: u16,
    extra: Vec<String>,
    /// Environment changes after AWS_TEST_ENV: `None` removes the variable.
    env: Vec<(String, Option<String>)>,
    child: Option<Child>,
    /// Whether the process has become ready at least once (its ports are then fixed).
    started: bool,
    /// The S3 server of this broker, when it stores objects in S3.
    pub s3: Option<S3Server>,
    /// The etcd of this broker, when its metadata is in etcd.
    pub etcd: Option<Etcd>,
}

impl Sluice {
    /// Starts a broker with a fresh data directory, on S3 when
    /// `SLUICE_E2E_OBJECT_STORE=s3`.
    pub fn start(extra: &[&str]) -> Result<Self> {
        let s3 = match std::env::var("SLUICE_E2E_OBJECT_STORE").as_deref() {
            Ok("s3") => Some(S3Server::start()?),
            Ok("") | Ok("file") | Err(_) => None,
            Ok(other) => bail!("SLUICE_E2E_OBJECT_STORE={other}: expected s3 or file"),
        };
        Self::start_with(s3, extra)
    }

    /// Starts a broker whose objects live in `s3` (or a local directory if None).
    pub fn start_with(s3: Option<S3Server>, extra: &[&str]) -> Result<Self> {
        Self::start_with_env(s3, extra, &[])
    }

    /// Like [`Sluice::start_with`], with environment changes on top of the test
    /// credentials (`None` removes a variable).
    pub fn start_with_env(
        s3: Option<S3Server>,
        extra: &[&str],
        env: &[(&str, Option<&str>)],
    ) -> Result<Self> {
        Self::start_within(s3, extra, env, Duration::from_secs(30))
    }

    /// Starts a broker and waits at most `ready_within` for `/readyz`.
    pub fn start_within(
        s3: Option<S3Server>,
        extra: &[&str],
        env: &[(&str, Option<&str>)],
        ready_within: Duration,
    ) -> Result<Self> {
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let etcd = match std::env::var("SLUICE_E2E_META").as_deref() {
            Ok("etcd") => Some(Etcd::start()?),
            Ok("") | Ok("embedded") | Err(_) => None,
            Ok(other) => bail!("SLUICE_E2E_META={other}: expected etcd or embedded"),
        };
        if let Some(etcd) = &etcd {
            args.push(format!("--etcd={}", etcd.client_url()));
        }
        if let Some(s3) = &s3 {
            args.push(format!("--object-store=s3://{}/broker", s3.bucket));
            args.push(format!("--s3-endpoint={}", s3.endpoint()));
        }
        let mut s = Self::unstarted(args, env)?;
        s.s3 = s3;
        s.etcd = etcd;
        s.launch_within(ready_within)?;
        Ok(s)
    }

    fn unstarted(args: Vec<String>, env: &[(&str, Option<&str>)]) -> Result<Self> {
        Ok(Self {
            dir: tempfile::tempdir()?,
            port: free_port(),
            http_port: free_port(),
            extra: args,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
                .collect(),
            child: None,
            started: false,
            s3: None,
            etcd: None,
        })
    }

    /// Removes the flags starting with `prefix` for the next start.
    pub fn drop_args(&mut self, prefix: &str) {
        self.extra.retain(|a| !a.starts_with(prefix));
    }

    /// Process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends a signal by name (`STOP`, `CONT`, …) to the running process.
    pub fn signal(&self, name: &str) -> Result<()> {
        let pid = self.pid().context("broker not running")?;
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()?;
        if !status.success() {
            bail!("kill -{name} {pid} failed");
        }
        Ok(())
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) -> Result<()> {
        self.launch_within(Duration::from_secs(30))
    }

    /// Starts the process. A port picked as free can be taken by someone else before
    /// the broker binds it (the kernel hands the same range out for outgoing
    /// connections); a first start that loses this race tries other ports.
    fn launch_within(&mut self, ready_within: Duration) -> Result<()> {
        let first = !self.started;
        for attempt in 0..3 {
            match self.launch_once(ready_within) {
                Err(e) if first && attempt < 2 && self.log().contains("Address already in use") => {
                    eprintln!("broker lost a port race, retrying on other ports: {e:#}");
                    let _ = std::fs::remove_file(self.dir.path().join("broker.log"));
                    self.port = free_port();
                    self.http_port = free_port();
                }
                other => {
                    self.started |= other.is_ok();
                    return other;
                }
            }
        }
        bail!("unreachable: the last attempt returns")
    }

    fn launch_once(&mut self, ready_within: Duration) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("broker.log"))?;
        let mut cmd = Command::new(sluice_bin()?);
        cmd.envs(AWS_TEST_ENV.iter().copied());
        for (k, v) in &self.env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let child = cmd
            .arg("serve")
            .arg("--data-dir")
            .arg(self.dir.path())
            .arg("--kafka-listen")
            .arg(self.bootstrap())
            .arg("--http-listen")
            .arg(format!("127.0.0.1:{}", self.http_port))
            .args(&self.extra)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("spawning sluice")?;
        self.child = Some(child);
        let deadline = Instant::now() + ready_within;
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("sluice exited early with {status}; log:\n{}", self.log());
            }
            if self
                .http_get("/readyz")
                .is_ok_and(|b| b.starts_with("HTTP/1.1 200"))
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let readyz = self.http_get("/readyz").unwrap_or_default();
        bail!(
            "sluice not ready after {ready_within:?}: {}\nlog:\n{}",
            readyz.lines().last().unwrap_or_default(),
            self.log()
        )
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }

    /// A raw HTTP GET on the broker's HTTP port.
    pub fn http_get(&self, path: &str) -> Result<String> {
        sluice_testkit::http("127.0.0.1", &self.http_port.to_string(), "GET", path)
    }

    /// Peak resident memory of the broker process in KiB (Linux `VmHWM`).
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// A counter from `/metrics`: the sum of every series named `name` whose labels
    /// contain `label` (e.g. `kind="put"`).
    pub fn metric(&self, name: &str, label: &str) -> Result<f64> {
        let body = self.http_get("/metrics")?;
        Ok(body
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Stops with SIGTERM (graceful) and waits.
    pub fn terminate(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status()?;
            c.wait()?;
        }
        Ok(())
    }

    /// Stops with SIGKILL (crash) and waits.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// Starts again on the same data directory and ports.
    pub fn restart(&mut self) -> Result<()> {
        self.terminate()?;
        self.launch()
    }

    /// Starts again after a stop, on the same data directory and ports.
    pub fn start_again(&mut self) -> Result<()> {
        self.launch()
    }

    /// Write-ahead objects the broker has written (local directory or S3 bucket).
    /// Leaves a write-ahead object no manifest references, as a crash between an
    /// object's PUT and its commit does.
    pub fn put_orphan(&self, name: &str) -> Result<()> {
        match &self.s3 {
            Some(s3) => {
                s3.request("PUT", &format!("/{}/broker/wal/9/9/{name}.wal", s3.bucket))?;
            }
            None => {
                let dir = self
                    .dir
                    .path()
                    .join("objects")
                    .join("wal")
                    .join("9")
                    .join("9");
                std::fs::create_dir_all(&dir)?;
                std::fs::write(dir.join(format!("{name}.wal")), b"never committed")?;
            }
        }
        Ok(())
    }

    pub fn wal_objects(&self) -> usize {
        match &self.s3 {
            Some(s3) => s3.keys("broker/wal/").map_or(0, |k| k.len()),
            None => count_files(&self.dir.path().join("objects").join("wal")),
        }
    }
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        count_files(&p)
                    } else {
                        usize::from(p.extension().is_some_and(|x| x == "wal"))
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

impl Drop for Sluice {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// Brokers sharing one etcd and one S3 server, as in production.
pub struct Cluster {
    /// Broker `i` has id `i + 1`.
    pub brokers: Vec<Sluice>,
    pub etcd: Etcd,
    pub s3: S3Server,
}

impl Cluster {
    /// Starts etcd, an S3 server and `n` brokers (ids 1..=n) with `extra` flags.
    pub fn start(n: usize, extra: &[&str]) -> Result<Self> {
        Self::start_each(&vec![extra; n])
    }

    /// Like [`Cluster::start`], with flags for each broker (`each[i]` for id `i + 1`).
    pub fn start_each(each: &[&[&str]]) -> Result<Self> {
        let etcd = Etcd::start()?;
        let s3 = S3Server::start()?;
        let mut brokers = Vec::with_capacity(each.len());
        for (i, extra) in each.iter().enumerate() {
            let id = i + 1;
            let mut args: Vec<String> = vec![
                format!("--etcd={}", etcd.client_url()),
                format!("--object-store=s3://{}/cluster", s3.bucket),
                format!("--s3-endpoint={}", s3.endpoint()),
                format!("--broker-id={id}"),
            ];
            args.extend(extra.iter().map(|s| s.to_string()));
            let mut b = Sluice::unstarted(args, &[])?;
            b.launch()?;
            brokers.push(b);
        }
        Ok(Self { brokers, etcd, s3 })
    }

    /// Starts one more process with broker id `id` on this cluster's etcd and S3
    /// server (a replacement, or an impostor, of broker `id`).
    pub fn start_another(&self, id: i32, extra: &[&str]) -> Result<Sluice> {
        let mut args: Vec<String> = vec![
            format!("--etcd={}", self.etcd.client_url()),
            format!("--object-store=s3://{}/cluster", self.s3.bucket),
            format!("--s3-endpoint={}", self.s3.endpoint()),
            format!("--broker-id={id}"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut b = Sluice::unstarted(args, &[])?;
        b.launch()?;
        Ok(b)
    }

    /// Every broker's address, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.brokers
            .iter()
            .map(Sluice::bootstrap)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The broker with this id.
    pub fn broker(&mut self, id: i32) -> &mut Sluice {
        &mut self.brokers[(id - 1) as usize]
    }

    /// Every broker's log, for failure messages.
    pub fn logs(&self) -> String {
        self.brokers
            .iter()
            .enumerate()
            .map(|(i, b)| format!("--- broker {} ---\n{}", i + 1, b.log()))
            .collect()
    }
}

/// librdkafka (rdkafka crate) helpers shared by the end-to-end tests.
pub mod clients {
    use std::time::{Duration, Instant};

    use anyhow::{bail, Result};
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::OwnedMessage;
    use rdkafka::producer::FutureProducer;
    use rdkafka::{Message, Offset, TopicPartitionList};

    pub fn config(bootstrap: &str, extra: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", bootstrap);
        for (k, v) in extra {
            c.set(*k, *v);
        }
        c
    }

    pub fn producer(bootstrap: &str, extra: &[(&str, &str)]) -> Result<FutureProducer> {
        Ok(config(bootstrap, extra).create()?)
    }

    pub async fn create_topic(
        bootstrap: &str,
        name: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> = config(bootstrap, &[]).create()?;
        let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        for (k, v) in configs {
            topic = topic.set(k, v);
        }
        for r in admin.create_topics([&topic], &AdminOptions::new()).await? {
            if let Err((t, e)) = r {
                bail!("create {t}: {e}");
            }
        }
        Ok(())
    }

    /// Big-endian u32 payloads, sorted (tests write one counter value per record).
    pub fn u32_payloads(msgs: &[OwnedMessage]) -> Vec<u32> {
        let mut v: Vec<u32> = msgs
            .iter()
            .map(|m| {
                let p = m.payload().unwrap_or_default();
                u32::from_be_bytes(p.try_into().unwrap_or_default())
            })
            .collect();
        v.sort_unstable();
        v
    }

    /// Reads `expected` messages from the start of each partition (assign, no group).
    pub fn consume_all(
        bootstrap: &str,
        topic: &str,
        partitions: i32,
        expected: usize,
    ) -> Result<Vec<OwnedMessage>> {
        let consumer: BaseConsumer = config(
            bootstrap,
            &[("group.id", "e2e-unused"), ("enable.auto.commit", "false")],
        )
        .create()?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        let mut out = Vec::with_capacity(expected);
        let deadline = Instant::now() + Duration::from_secs(120);
        while out.len() < expected {
            if Instant::now() > deadline {
                bail!(
                    "read {} of {expected} messages before the deadline",
                    out.len()
                );
            }
            if let Some(m) = consumer.poll(Duration::from_millis(200)) {
                out.push(m?.detach());
            }
        }
        // Nothing beyond what was expected.
        if let Some(Ok(extra)) = consumer.poll(Duration::from_millis(500)) {
            bail!("unexpected extra message at offset {}", extra.offset());
        }
        Ok(out)
    }
}

/// The checker of the cluster tests and the failover measurement: acknowledged
/// records against what the log holds.
pub mod checker {
    use std::collections::{BTreeMap, HashMap};
    use std::time::{Duration, Instant};

    use anyhow::{bail, ensure, Context, Result};
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message, Offset, TopicPartitionList};

    use crate::clients::config;

    pub const PARTITIONS: i32 = 12;

    /// One acknowledged record.
    #[derive(Debug, Clone, Copy)]
    pub struct Acked {
        pub partition: i32,
        pub offset: i64,
        pub value: u64,
    }

    /// Values are `producer << 32 | sequence`, padded to 64 bytes.
    pub fn payload(value: u64) -> Vec<u8> {
        let mut v = value.to_be_bytes().to_vec();
        v.resize(64, b'.');
        v
    }

    pub fn value_of(payload: &[u8]) -> Option<u64> {
        Some(u64::from_be_bytes(payload.get(..8)?.try_into().ok()?))
    }

    /// Reads every partition from its start to its high watermark.
    pub fn read_all(bootstrap: &str, topic: &str) -> Result<BTreeMap<i32, Vec<(i64, u64)>>> {
        let consumer: BaseConsumer = config(
            bootstrap,
            &[("group.id", "checker"), ("enable.auto.commit", "false")],
        )
        .create()?;
        let mut ends = HashMap::new();
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            // Right after a restart a partition may still be moving to its leader
            // (NOT_LEADER_OR_FOLLOWER, which fetch_watermarks does not retry): what is
            // checked is the data, so wait for a leader.
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            let high = loop {
                match consumer.fetch_watermarks(topic, p, Duration::from_secs(30)) {
                    Ok((_, high)) => break high,
                    Err(e) if std::time::Instant::now() < deadline => {
                        eprintln!("watermarks of {topic}/{p}: {e}; retrying");
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        let mut out: BTreeMap<i32, Vec<(i64, u64)>> = BTreeMap::new();
        let done = |out: &BTreeMap<i32, Vec<(i64, u64)>>| {
            ends.iter().all(|(p, end)| {
                *end == 0 || out.get(p).and_then(|v| v.last()).map(|l| l.0 + 1) == Some(*end)
            })
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while !done(&out) {
            if Instant::now() > deadline {
                bail!("read did not reach the high watermarks {ends:?}");
            }
            if let Some(m) = consumer.poll(Duration::from_millis(200)) {
                let m = m?;
                let v = value_of(m.payload().unwrap_or_default()).context("short payload")?;
                out.entry(m.partition()).or_default().push((m.offset(), v));
            }
        }
        Ok(out)
    }

    /// Every acknowledged record is read back once, at its offset; offsets are dense and
    /// never reused; each producer's records keep their order within a partition.
    pub fn check(acked: &[Acked], log: &BTreeMap<i32, Vec<(i64, u64)>>) -> Result<()> {
        let mut at: HashMap<(i32, i64), u64> = HashMap::new();
        let mut seen: HashMap<u64, usize> = HashMap::new();
        for (p, records) in log {
            for (i, (offset, value)) in records.iter().enumerate() {
                ensure!(
                    *offset == i as i64,
                    "partition {p}: offset {offset} at position {i} (offsets not dense)"
                );
                at.insert((*p, *offset), *value);
                *seen.entry(*value).or_default() += 1;
            }
            let mut last: HashMap<u64, u64> = HashMap::new();
            for (offset, value) in records {
                let (producer, seq) = (value >> 32, value & 0xffff_ffff);
                if let Some(prev) = last.insert(producer, seq) {
                    ensure!(
                        seq > prev,
                        "partition {p}: producer {producer} seq {seq} at offset {offset} after {prev}"
                    );
                }
            }
        }
        let mut claimed: HashMap<(i32, i64), u64> = HashMap::new();
        for a in acked {
            if let Some(other) = claimed.insert((a.partition, a.offset), a.value) {
                bail!(
                    "offset {}/{} acknowledged twice: {other:#x} and {:#x}",
                    a.partition,
                    a.offset,
                    a.value
                );
            }
            match at.get(&(a.partition, a.offset)) {
                Some(v) if *v == a.value => {}
                other => bail!(
                    "acknowledged {:#x} at {}/{} but the log has {other:?}",
                    a.value,
                    a.partition,
                    a.offset
                ),
            }
            ensure!(
                seen.get(&a.value) == Some(&1),
                "acknowledged {:#x} appears {:?} times",
                a.value,
                seen.get(&a.value)
            );
        }
        Ok(())
    }
}

/// A bare Kafka connection for requests no client library sends: hand-made batches,
/// several batches per partition, raw generation ids. Requests are encoded with
/// kafka-protocol and answered in order.
pub mod wire {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    use anyhow::{bail, Context, Result};
    use bytes::{Buf, BufMut, Bytes, BytesMut};
    use kafka_protocol::messages::{
        ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind,
    };
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

    pub struct Connection {
        stream: TcpStream,
        correlation_id: i32,
    }

    impl Connection {
        pub fn open(addr: &str) -> Result<Self> {
            let stream = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
            stream.set_read_timeout(Some(Duration::from_secs(30)))?;
            Ok(Self {
                stream,
                correlation_id: 0,
            })
        }

        /// Sends one request and reads its response.
        pub fn call(
            &mut self,
            api: ApiKey,
            version: i16,
            body: RequestKind,
        ) -> Result<ResponseKind> {
            self.correlation_id += 1;
            let header = RequestHeader::default()
                .with_request_api_key(api as i16)
                .with_request_api_version(version)
                .with_correlation_id(self.correlation_id)
                .with_client_id(Some(StrBytes::from_static_str("sluice-wire")));
            let mut buf = BytesMut::new();
            buf.put_i32(0);
            header.encode(&mut buf, api.request_header_version(version))?;
            body.encode(&mut buf, version)?;
            let len = (buf.len() - 4) as i32;
            buf[..4].copy_from_slice(&len.to_be_bytes());
            self.stream.write_all(&buf)?;

            let mut len = [0u8; 4];
            self.stream
                .read_exact(&mut len)
                .context("reading a response (the broker closed the connection?)")?;
            let len = i32::from_be_bytes(len);
            if !(0..=256 << 20).contains(&len) {
                bail!("response length {len}");
            }
            let mut frame = vec![0u8; len as usize];
            self.stream.read_exact(&mut frame)?;
            let mut frame = Bytes::from(frame);
            let header = ResponseHeader::decode(&mut frame, api.response_header_version(version))?;
            if header.correlation_id != self.correlation_id {
                bail!(
                    "correlation id {} for {}",
                    header.correlation_id,
                    self.correlation_id
                );
            }
            let body = ResponseKind::decode(api, &mut frame, version)?;
            if frame.has_remaining() {
                bail!("{} bytes left after the response", frame.remaining());
            }
            Ok(body)
        }
    }

    impl Connection {
        /// Produce v9 (acks=all) of `records` to one partition; its error code.
        pub fn produce(&mut self, topic: &str, partition: i32, records: Bytes) -> Result<i16> {
            use kafka_protocol::messages::{produce_request, ProduceRequest, TopicName};
            let req = ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(10_000)
                .with_topic_data(vec![produce_request::TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(topic.into())))
                    .with_partition_data(vec![
                        produce_request::PartitionProduceData::default()
                            .with_index(partition)
                            .with_records(Some(records)),
                    ])]);
            match self.call(ApiKey::Produce, 9, RequestKind::Produce(req))? {
                ResponseKind::Produce(r) => Ok(r.responses[0].partition_responses[0].error_code),
                other => bail!("unexpected response {other:?}"),
            }
        }
    }

    /// A v2 batch header (61 bytes) in front of `body`, CRC-32C computed: fields as
    /// given, nothing checked, so tests can lie about counts and codecs.
    pub struct RawBatch {
        pub attributes: i16,
        pub last_offset_delta: i32,
        pub timestamp: i64,
        pub producer_id: i64,
        pub producer_epoch: i16,
        pub base_sequence: i32,
        pub record_count: i32,
    }

    impl Default for RawBatch {
        fn default() -> Self {
            Self {
                attributes: 0,
                last_offset_delta: 0,
                timestamp: 1_700_000_000_000,
                producer_id: -1,
                producer_epoch: -1,
                base_sequence: -1,
                record_count: 1,
            }
        }
    }

    impl RawBatch {
        pub fn encode(&self, body: &[u8]) -> Bytes {
            let mut b = BytesMut::with_capacity(61 + body.len());
            b.put_i64(0);
            b.put_i32((49 + body.len()) as i32);
            b.put_i32(-1);
            b.put_i8(2);
            b.put_u32(0);
            b.put_i16(self.attributes);
            b.put_i32(self.last_offset_delta);
            b.put_i64(self.timestamp);
            b.put_i64(self.timestamp);
            b.put_i64(self.producer_id);
            b.put_i16(self.producer_epoch);
            b.put_i32(self.base_sequence);
            b.put_i32(self.record_count);
            b.extend_from_slice(body);
            let crc = crc32c::crc32c(&b[21..]);
            b[17..21].copy_from_slice(&crc.to_be_bytes());
            b.freeze()
        }
    }

    /// One uncompressed record: `offset_delta`, key and value, no headers.
    pub fn record(offset_delta: i32, key: Option<&[u8]>, value: &[u8]) -> Vec<u8> {
        let mut r = Vec::new();
        r.push(0);
        varint(&mut r, 0);
        varint(&mut r, i64::from(offset_delta));
        match key {
            None => varint(&mut r, -1),
            Some(k) => {
                varint(&mut r, k.len() as i64);
                r.extend_from_slice(k);
            }
        }
        varint(&mut r, value.len() as i64);
        r.extend_from_slice(value);
        varint(&mut r, 0);
        let mut out = Vec::new();
        varint(&mut out, r.len() as i64);
        out.extend_from_slice(&r);
        out
    }

    /// A zig-zag varint as Kafka records encode them.
    pub fn varint(b: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            b.push((z as u8) | 0x80);
            z >>= 7;
        }
        b.push(z as u8);
    }
}
