//! Command-line and environment configuration. Every flag has an environment
//! variable `SLUICE_<NAME>`; `sluice serve --help` lists them all.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "A Kafka-compatible broker on object storage"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a broker.
    Serve(Box<ServeArgs>),
    /// List, describe, create, delete and reassign topics.
    Topic {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: crate::cli::TopicCommand,
    },
    /// List and describe consumer groups and their lag.
    Group {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: crate::cli::GroupCommand,
    },
    /// Describe the cluster: brokers, the controller, partitions led.
    Cluster {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: crate::cli::ClusterCommand,
    },
}

/// How the CLI reaches the cluster: any broker's HTTP address.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// HTTP address of any broker (its --http-listen or --advertised-http).
    #[arg(
        long,
        env = "SLUICE_ADMIN_URL",
        default_value = "http://127.0.0.1:9644",
        global = true
    )]
    pub admin_url: String,

    /// Print the admin API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `--broker-id`: a fixed id, or one claimed at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerId {
    Fixed(i32),
    Auto,
}

fn parse_broker_id(s: &str) -> Result<BrokerId, String> {
    if s == "auto" {
        return Ok(BrokerId::Auto);
    }
    match s.parse::<i32>() {
        Ok(n) if n >= 0 => Ok(BrokerId::Fixed(n)),
        _ => Err(format!(
            "expected a non-negative integer or `auto`, got {s:?}"
        )),
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Directory for local state: the embedded metadata store and, by default, objects.
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = "./sluice-data")]
    pub data_dir: PathBuf,

    /// Address the Kafka listener binds.
    #[arg(long, env = "SLUICE_KAFKA_LISTEN", default_value = "127.0.0.1:9092")]
    pub kafka_listen: SocketAddr,

    /// HOST:PORT clients are told to connect to (default: the Kafka listen address).
    #[arg(long, env = "SLUICE_ADVERTISED_LISTENER")]
    pub advertised_listener: Option<String>,

    /// Address of the HTTP endpoints (/healthz, /readyz, /metrics, /admin/v1).
    #[arg(long, env = "SLUICE_HTTP_LISTEN", default_value = "127.0.0.1:9644")]
    pub http_listen: SocketAddr,

    /// HOST:PORT other brokers reach this node's HTTP endpoints at; the admin API
    /// asks each partition's leader for its offsets and sizes there (default: the
    /// advertised host with the --http-listen port).
    #[arg(long, env = "SLUICE_ADVERTISED_HTTP")]
    pub advertised_http: Option<String>,

    /// Where objects live: file:///dir, s3://bucket/prefix or memory://
    /// (default: file://<data-dir>/objects).
    #[arg(long, env = "SLUICE_OBJECT_STORE")]
    pub object_store: Option<String>,

    /// Inject object-store faults, for tests and experiments, e.g.
    /// "latency=50ms,jitter=20ms,error-rate=0.01,hang-rate=0.001,hang=30s,burst=5s/60s".
    #[arg(long, env = "SLUICE_OBJECT_STORE_FAULTS")]
    pub object_store_faults: Option<String>,

    /// S3 endpoint for S3-compatible servers (MinIO, LocalStack); path-style addressing,
    /// plain HTTP only for http:// (default: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, AWS).
    #[arg(long, env = "SLUICE_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// S3 region (default: AWS_REGION or the AWS profile, then us-east-1).
    #[arg(long, env = "SLUICE_S3_REGION")]
    pub s3_region: Option<String>,

    /// Time limit of one S3 request in milliseconds, retries not included.
    #[arg(long, env = "SLUICE_S3_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub s3_request_timeout_ms: u64,

    /// Retries of one S3 request on 5xx, throttling and connection errors.
    #[arg(long, env = "SLUICE_S3_MAX_RETRIES", default_value_t = 10)]
    pub s3_max_retries: usize,

    /// Stop retrying one S3 request after this many milliseconds.
    #[arg(long, env = "SLUICE_S3_RETRY_TIMEOUT_MS", default_value_t = 60_000)]
    pub s3_retry_timeout_ms: u64,

    /// S3 requests in flight at once.
    #[arg(long, env = "SLUICE_S3_MAX_CONCURRENCY", default_value_t = 64)]
    pub s3_max_concurrency: usize,

    /// etcd endpoints (comma-separated URLs) for the metadata store; without it the
    /// embedded store under --data-dir is used. Needs a build with the `etcd` feature.
    #[arg(long, env = "SLUICE_ETCD", value_delimiter = ',')]
    pub etcd: Vec<String>,

    /// etcd user name, when etcd has authentication enabled.
    #[arg(long, env = "SLUICE_ETCD_USER", requires = "etcd_password")]
    pub etcd_user: Option<String>,

    /// etcd password.
    #[arg(
        long,
        env = "SLUICE_ETCD_PASSWORD",
        requires = "etcd_user",
        hide_env_values = true
    )]
    pub etcd_password: Option<String>,

    /// PEM file of the CA that signed etcd's certificate (TLS; `https://` endpoints).
    /// Without it, https endpoints are verified against the system's roots.
    #[arg(long, env = "SLUICE_ETCD_CA_FILE")]
    pub etcd_ca_file: Option<PathBuf>,

    /// PEM client certificate presented to etcd (with `--client-cert-auth`).
    #[arg(long, env = "SLUICE_ETCD_CERT_FILE", requires = "etcd_key_file")]
    pub etcd_cert_file: Option<PathBuf>,

    /// PEM private key of `--etcd-cert-file`.
    #[arg(long, env = "SLUICE_ETCD_KEY_FILE", requires = "etcd_cert_file")]
    pub etcd_key_file: Option<PathBuf>,

    /// This broker's node id, or `auto`: claim the lowest id no live process holds
    /// (under a lease in the metadata store), for brokers without a stable identity,
    /// e.g. the pods of a Kubernetes Deployment.
    #[arg(long, env = "SLUICE_BROKER_ID", default_value = "0", value_parser = parse_broker_id)]
    pub broker_id: BrokerId,

    /// What this node does: `broker` (serves Kafka clients and leads partitions),
    /// `compactor` (folds partitions into segments and Parquet, cleans compacted
    /// topics), or both. A partition is compacted by its leader when the leader is
    /// a compactor, else by one of the compactor-only nodes; a cluster needs at
    /// least one node with each role.
    #[arg(long, env = "SLUICE_ROLES", default_value = "broker,compactor",
          value_parser = sluice_engine::keyspace::Roles::parse)]
    pub roles: sluice_engine::keyspace::Roles,

    /// This broker's rack or availability zone; the controller spreads each topic's
    /// leaders across racks.
    #[arg(long, env = "SLUICE_RACK")]
    pub rack: Option<String>,

    /// Seconds a broker's registration outlives its last keep-alive. After a crash,
    /// its partitions move to other brokers within this time.
    #[arg(long, env = "SLUICE_LEASE_TTL_SECS", default_value_t = 6,
          value_parser = clap::value_parser!(u64).range(1..=60))]
    pub lease_ttl_secs: u64,

    /// Consumer-group coordinator shards (partitions of the internal
    /// `__sluice_groups` topic). Fixed when the cluster is first started.
    #[arg(long, env = "SLUICE_GROUP_SHARDS", default_value_t = 16,
          value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub group_shards: i32,

    /// Transaction coordinator shards (partitions of the internal
    /// `__sluice_transactions` topic). Fixed when the cluster is first started.
    #[arg(long, env = "SLUICE_TRANSACTION_SHARDS", default_value_t = 16,
          value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub transaction_shards: i32,

    /// How long a new consumer group waits for more members before its first
    /// rebalance completes (Kafka's group.initial.rebalance.delay.ms).
    #[arg(
        long,
        env = "SLUICE_GROUP_INITIAL_REBALANCE_DELAY_MS",
        default_value_t = 3000
    )]
    pub group_initial_rebalance_delay_ms: u64,

    /// How often members of a consumer group (KIP-848, group.protocol=consumer)
    /// heartbeat; they learn of assignment changes on their next heartbeat (Kafka's
    /// group.consumer.heartbeat.interval.ms).
    #[arg(long, env = "SLUICE_GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub group_consumer_heartbeat_interval_ms: u64,

    /// How long a consumer group (KIP-848) member may go without a heartbeat before
    /// it is removed and its partitions reassigned (Kafka's
    /// group.consumer.session.timeout.ms).
    #[arg(long, env = "SLUICE_GROUP_CONSUMER_SESSION_TIMEOUT_MS", default_value_t = 45000,
          value_parser = clap::value_parser!(u64).range(1000..=3_600_000))]
    pub group_consumer_session_timeout_ms: u64,

    /// Committed offsets of a group with no members are deleted this long after the
    /// group became empty, or after their commit if later (Kafka's
    /// offsets.retention.minutes). Fractions are allowed.
    #[arg(
        long,
        env = "SLUICE_OFFSETS_RETENTION_MINUTES",
        default_value_t = 10080.0
    )]
    pub offsets_retention_minutes: f64,

    /// Cluster id; namespaces all metadata.
    #[arg(long, env = "SLUICE_CLUSTER_ID", default_value = "sluice")]
    pub cluster_id: String,

    /// Target size of one write-ahead object in bytes (wal.flush.bytes).
    #[arg(long, env = "SLUICE_WAL_FLUSH_BYTES", default_value_t = 4 << 20)]
    pub wal_flush_bytes: usize,

    /// Extra wait before a flush starts, in milliseconds: fewer, larger objects for
    /// more latency. 0 flushes as soon as the previous flush allows.
    #[arg(long, env = "SLUICE_WAL_FLUSH_LINGER_MS", default_value_t = 0)]
    pub wal_flush_linger_ms: u64,

    /// Write-ahead objects being written at once.
    #[arg(long, env = "SLUICE_WAL_MAX_INFLIGHT", default_value_t = 4)]
    pub wal_max_inflight: usize,

    /// Produce bytes buffered or in flight before producers are made to wait.
    #[arg(long, env = "SLUICE_WAL_MAX_PENDING_BYTES", default_value_t = 64 << 20)]
    pub wal_max_pending_bytes: usize,

    /// Recently committed bytes kept in memory per partition for tailing consumers.
    #[arg(long, env = "SLUICE_TAIL_BYTES_PER_PARTITION", default_value_t = 8 << 20)]
    pub tail_bytes_per_partition: usize,

    /// Recently committed bytes kept in memory across all partitions.
    #[arg(long, env = "SLUICE_TAIL_BYTES_TOTAL", default_value_t = 512 << 20)]
    pub tail_bytes_total: usize,

    /// Create topics named in Metadata requests that do not exist, as Kafka does by default.
    #[arg(long, env = "SLUICE_AUTO_CREATE_TOPICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_create_topics: bool,

    /// Partition count of auto-created topics and of CreateTopics with -1.
    #[arg(long, env = "SLUICE_DEFAULT_PARTITIONS", default_value_t = 1)]
    pub default_partitions: i32,

    /// How often retention runs on the partitions this broker leads, and the
    /// controller deletes expired manifests and objects (Kafka's
    /// log.retention.check.interval.ms). An object goes one round after its manifest.
    #[arg(long, env = "SLUICE_LOG_RETENTION_CHECK_INTERVAL_MS", default_value_t = 300_000,
          value_parser = clap::value_parser!(u64).range(100..))]
    pub log_retention_check_interval_ms: u64,

    /// How long a producer's sequence state is kept after its last append (Kafka's
    /// producer.id.expiration.ms); expired on the retention check's tick.
    #[arg(long, env = "SLUICE_PRODUCER_ID_EXPIRATION_MS", default_value_t = 86_400_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub producer_id_expiration_ms: u64,

    /// Age after which the janitor deletes an object nothing references: a
    /// write-ahead object left by a crash between its PUT and its commit, or a
    /// segment or lake file compaction replaced or retention dropped. Commits of
    /// objects the janitor might delete are fenced, so this only bounds how long
    /// orphans stay (and how long a replaced file stays readable).
    #[arg(long, env = "SLUICE_WAL_ORPHAN_GRACE_MS", default_value_t = 3_600_000)]
    pub wal_orphan_grace_ms: u64,

    /// How often partition leaders fold write-ahead slices into per-partition
    /// segments, and data older than a topic's sluice.lake.after.ms into Parquet.
    /// A run is folded at 64 slices or 8 MiB, or once its oldest record is ten
    /// intervals old.
    #[arg(long, env = "SLUICE_COMPACTION_INTERVAL_MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(100..))]
    pub compaction_interval_ms: u64,

    /// Bytes of the read cache kept in memory (blocks of objects read for consumers
    /// that are behind the in-memory tail).
    #[arg(long, env = "SLUICE_CACHE_MEMORY_BYTES", default_value_t = 256 << 20)]
    pub cache_memory_bytes: usize,

    /// Bytes of the read cache kept on local disk; 0 turns the disk tier off.
    #[arg(long, env = "SLUICE_CACHE_DISK_BYTES", default_value_t = 1 << 30)]
    pub cache_disk_bytes: usize,

    /// Directory of the disk tier (default: <data-dir>/cache). Emptied at start;
    /// losing it loses nothing.
    #[arg(long, env = "SLUICE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Size of one cached block; object reads are aligned to it.
    #[arg(long, env = "SLUICE_CACHE_BLOCK_BYTES", default_value_t = 1 << 20,
          value_parser = clap::value_parser!(u64).range(4096..=(64 << 20)))]
    pub cache_block_bytes: u64,

    /// Largest request frame accepted, in bytes (Kafka's socket.request.max.bytes).
    #[arg(long, env = "SLUICE_MAX_REQUEST_BYTES", default_value_t = 100 << 20)]
    pub max_request_bytes: usize,

    /// Client connections served at once (Kafka's max.connections); a connection
    /// over the limit is closed as soon as it is accepted.
    #[arg(long, env = "SLUICE_MAX_CONNECTIONS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// A connection that has sent and been sent nothing for this long, with no
    /// request in flight, is closed (Kafka's connections.max.idle.ms).
    #[arg(long, env = "SLUICE_CONNECTIONS_MAX_IDLE_MS", default_value_t = 600_000,
          value_parser = clap::value_parser!(u64).range(100..))]
    pub connections_max_idle_ms: u64,
}

impl ServeArgs {
    /// The advertised host and port, validated.
    pub fn advertised(&self) -> Result<(String, i32), String> {
        let Some(adv) = &self.advertised_listener else {
            if self.kafka_listen.ip().is_unspecified() {
                return Err(
                    "--advertised-listener: required when --kafka-listen binds all interfaces"
                        .into(),
                );
            }
            return Ok((
                self.kafka_listen.ip().to_string(),
                i32::from(self.kafka_listen.port()),
            ));
        };
        let (host, port) = adv
            .rsplit_once(':')
            .ok_or_else(|| format!("--advertised-listener: expected HOST:PORT, got {adv:?}"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("--advertised-listener: invalid port in {adv:?}"))?;
        if host.is_empty() {
            return Err(format!("--advertised-listener: empty host in {adv:?}"));
        }
        Ok((host.trim_matches(['[', ']']).to_string(), i32::from(port)))
    }

    /// Where peers reach the HTTP endpoints (see `--advertised-http`).
    pub fn advertised_http(&self, advertised_host: &str) -> String {
        match &self.advertised_http {
            Some(a) => a.clone(),
            None if advertised_host.contains(':') => {
                format!("[{advertised_host}]:{}", self.http_listen.port())
            }
            None => format!("{advertised_host}:{}", self.http_listen.port()),
        }
    }

    pub fn s3_options(&self) -> sluice_storage::S3Options {
        sluice_storage::S3Options {
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            request_timeout: std::time::Duration::from_millis(self.s3_request_timeout_ms),
            connect_timeout: std::time::Duration::from_secs(5),
            max_retries: self.s3_max_retries,
            retry_timeout: std::time::Duration::from_millis(self.s3_retry_timeout_ms),
            max_concurrency: self.s3_max_concurrency,
        }
    }

    /// The disk cache's directory, refused where emptying it at start would delete
    /// data: the data directory itself, a directory holding it, or anything inside
    /// its metadata store or (local) objects.
    pub fn cache_dir(&self) -> Result<PathBuf, String> {
        let cache = self
            .cache_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("cache"));
        let abs = |p: &std::path::Path| {
            let p = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
            // Lexically: `a/b/..` is `a`, so `..` cannot hide an overlap.
            let mut out = PathBuf::new();
            for c in p.components() {
                match c {
                    std::path::Component::ParentDir => {
                        out.pop();
                    }
                    std::path::Component::CurDir => {}
                    c => out.push(c),
                }
            }
            out
        };
        let (cache_abs, data) = (abs(&cache), abs(&self.data_dir));
        let mut kept = vec![data.join("meta"), data.join("objects")];
        if let Some(dir) = self.object_store_url().strip_prefix("file://") {
            kept.push(abs(std::path::Path::new(dir)));
        }
        let holds_data = data.starts_with(&cache_abs)
            || kept
                .iter()
                .any(|k| k.starts_with(&cache_abs) || cache_abs.starts_with(k));
        if holds_data {
            return Err(format!(
                "--cache-dir {}: the cache is emptied at start, and this directory holds \
                 the broker's data (--data-dir {}); choose another",
                cache.display(),
                self.data_dir.display()
            ));
        }
        Ok(cache)
    }

    pub fn object_store_url(&self) -> String {
        self.object_store.clone().unwrap_or_else(|| {
            let dir = self.data_dir.join("objects");
            let abs = std::path::absolute(&dir).unwrap_or(dir);
            format!("file://{}", abs.display())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> ServeArgs {
        let mut all = vec!["sluice", "serve"];
        all.extend_from_slice(args);
        match Cli::parse_from(all).command {
            Command::Serve(a) => *a,
            other => panic!("not serve: {other:?}"),
        }
    }

    #[test]
    fn defaults_match_the_quick_start() {
        let a = parse(&[]);
        assert_eq!(a.kafka_listen.to_string(), "127.0.0.1:9092");
        assert_eq!(a.http_listen.to_string(), "127.0.0.1:9644");
        assert_eq!(a.advertised().unwrap(), ("127.0.0.1".to_string(), 9092));
        assert!(a.object_store_url().starts_with("file:///"));
        assert!(a.object_store_url().ends_with("sluice-data/objects"));
        assert!(a.auto_create_topics);
    }

    #[test]
    fn a_cache_dir_that_holds_the_data_is_refused() {
        for bad in [
            "/srv/sluice",
            "/srv",
            "/srv/sluice/meta",
            "/srv/sluice/objects/wal",
            "/srv/sluice/cache/../objects",
            "/",
        ] {
            let a = parse(&["--data-dir", "/srv/sluice", "--cache-dir", bad]);
            assert!(a.cache_dir().is_err(), "{bad} accepted");
        }
        let a = parse(&[
            "--data-dir",
            "/srv/sluice",
            "--object-store",
            "file:///data/objects",
            "--cache-dir",
            "/data",
        ]);
        assert!(
            a.cache_dir().is_err(),
            "the local object store's parent accepted"
        );
        for good in [
            "/srv/sluice/cache",
            "/var/cache/sluice",
            "/srv/sluice-cache",
        ] {
            let a = parse(&["--data-dir", "/srv/sluice", "--cache-dir", good]);
            assert_eq!(a.cache_dir().unwrap(), PathBuf::from(good));
        }
        let a = parse(&["--data-dir", "/srv/sluice"]);
        assert_eq!(a.cache_dir().unwrap(), PathBuf::from("/srv/sluice/cache"));
    }

    /// docs/configuration.md documents every flag and its environment variable.
    #[test]
    fn configuration_reference_covers_every_flag() {
        use clap::CommandFactory;
        let doc = include_str!("../../../docs/configuration.md");
        let cli = Cli::command();
        let serve = cli.find_subcommand("serve").expect("serve subcommand");
        for arg in serve.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if long == "help" {
                continue;
            }
            assert!(
                doc.contains(&format!("`--{long}")),
                "docs/configuration.md lacks --{long}"
            );
            let env = arg
                .get_env()
                .and_then(|e| e.to_str())
                .expect("every flag has an env var");
            assert!(doc.contains(env), "docs/configuration.md lacks {env}");
        }
    }

    #[test]
    fn cli_reference_covers_every_command_and_flag() {
        use clap::CommandFactory;
        let doc = include_str!("../../../docs/cli.md");
        let cli = Cli::command();
        for group in cli.get_subcommands().filter(|c| c.get_name() != "serve") {
            for command in group.get_subcommands() {
                let usage = format!("sluice {} {}", group.get_name(), command.get_name());
                assert!(doc.contains(&usage), "docs/cli.md lacks `{usage}`");
                for arg in command.get_arguments().chain(group.get_arguments()) {
                    match arg.get_long() {
                        Some("help") | None => {}
                        Some(long) => assert!(
                            doc.contains(&format!("--{long}")),
                            "docs/cli.md lacks --{long} of `{usage}`"
                        ),
                    }
                }
            }
        }
    }

    #[test]
    fn advertised_listener_is_validated() {
        assert_eq!(
            parse(&["--advertised-listener", "broker-0.svc:19092"])
                .advertised()
                .unwrap(),
            ("broker-0.svc".to_string(), 19092)
        );
        assert!(parse(&["--advertised-listener", "nope"])
            .advertised()
            .is_err());
        assert!(parse(&["--kafka-listen", "0.0.0.0:9092"])
            .advertised()
            .is_err());
        assert!(!parse(&["--auto-create-topics", "false"]).auto_create_topics);
    }
}
