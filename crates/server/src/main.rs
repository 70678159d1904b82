//! The `sluice` binary: configuration, listeners, the connection loop, HTTP (health,
//! metrics, the admin API) and the operator CLI (`sluice topic|group|cluster`).
//!
//! `sluice serve` with no flags runs a single node: objects under
//! `./sluice-data/objects`, the embedded metadata store under `./sluice-data/meta`,
//! Kafka on 127.0.0.1:9092, HTTP on 127.0.0.1:9644. SIGTERM or SIGINT stops
//! accepting, flushes what was appended, and exits.

mod admin;
mod cli;
mod config;
mod connection;
mod http;

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use sluice_broker::{coordinator, Broker, BrokerIdentity};
use sluice_control::membership::{self, Membership};
use sluice_engine::keyspace::BrokerRecord;
use sluice_engine::{Engine, EngineConfig};
use sluice_meta::metered::MeteredMeta;
use sluice_meta::{EmbeddedStore, MetaStore};
use sluice_storage::faults::{FaultSpec, FaultyStore};
use sluice_storage::metered::MeteredStore;
use sluice_storage::{open_object_store, ObjectStoreUrl};
use tokio::net::TcpListener;

use crate::config::{BrokerId, Cli, Command, ServeArgs};

/// How long shutdown waits for in-flight flushes.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long shutdown waits for connections to answer their last requests.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long shutdown waits for the controller to move this broker's partitions.
const HANDOFF_TIMEOUT: Duration = Duration::from_secs(10);

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => fail(&format!("cannot start the runtime: {e}")),
    };
    let result = match cli.command {
        Command::Serve(args) => runtime.block_on(serve(*args)),
        Command::Topic { admin, command } => runtime.block_on(cli::topic(admin, command)),
        Command::Group { admin, command } => runtime.block_on(cli::group(admin, command)),
        Command::Cluster { admin, command } => runtime.block_on(cli::cluster(admin, command)),
    };
    if let Err(e) = result {
        fail(&format!("{e:#}"));
    }
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(2);
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let (host, port) = args.advertised().map_err(anyhow::Error::msg)?;
    let url = args.object_store_url();
    let store_url =
        ObjectStoreUrl::parse(&url).map_err(|e| anyhow::anyhow!("--object-store: {e}"))?;
    let store = open_object_store(&store_url, &args.s3_options())
        .await
        .map_err(|e| anyhow::anyhow!("--object-store: {e}"))?;
    let store = match &args.object_store_faults {
        None => store,
        Some(spec) => {
            let spec = FaultSpec::parse(spec)
                .map_err(|e| anyhow::anyhow!("--object-store-faults: {e}"))?;
            tracing::warn!(?spec, "injecting object-store faults");
            Arc::new(FaultyStore::new(store, spec))
        }
    };
    let metrics = http::Metrics::default();
    let store: Arc<dyn object_store::ObjectStore> =
        Arc::new(MeteredStore::new(store, metrics.store.clone()));
    let meta: Arc<dyn MetaStore> = Arc::new(MeteredMeta::new(
        open_meta(&args, &store_url).await?,
        metrics.meta.clone(),
    ));
    let lease_ttl = Duration::from_secs(args.lease_ttl_secs);
    // An auto id is kept alive from the claim on: opening the engine may take longer
    // than the lease.
    let (broker_id, mut claim) = match args.broker_id {
        BrokerId::Fixed(id) => (id, None),
        BrokerId::Auto => {
            let claim = membership::claim_broker_id(
                meta.as_ref(),
                &sluice_engine::keyspace::Keys::new(&args.cluster_id),
                lease_ttl,
            )
            .await
            .map_err(|e| anyhow::anyhow!("--broker-id=auto: {e}"))?
            .keep_alive(meta.clone(), lease_ttl);
            (claim.id, Some(claim))
        }
    };
    let engine = Engine::open(
        EngineConfig {
            broker_id,
            cluster_id: args.cluster_id.clone(),
            flush_bytes: args.wal_flush_bytes.max(1),
            flush_linger: Duration::from_millis(args.wal_flush_linger_ms),
            max_inflight_flushes: args.wal_max_inflight.max(1),
            max_pending_bytes: args.wal_max_pending_bytes,
            tail_bytes_per_partition: args.tail_bytes_per_partition,
            retention_check_interval: Duration::from_millis(args.log_retention_check_interval_ms),
            producer_id_expiration: Duration::from_millis(args.producer_id_expiration_ms),
            orphan_grace: Duration::from_millis(args.wal_orphan_grace_ms),
            compaction_interval: Duration::from_millis(args.compaction_interval_ms),
            object_root: store_url.root_uri(),
            cache: sluice_cache::CacheConfig {
                memory_bytes: args.cache_memory_bytes,
                disk_dir: Some(args.cache_dir().map_err(anyhow::Error::msg)?),
                disk_bytes: args.cache_disk_bytes,
                block_bytes: args.cache_block_bytes,
            },
            tail_bytes_total: args.tail_bytes_total,
            auto_create_topics: args.auto_create_topics,
            default_partitions: args.default_partitions.max(1),
            clock: sluice_engine::Clock::system(),
        },
        meta,
        store,
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot open the data path: {e}"))?;

    let kafka = TcpListener::bind(args.kafka_listen)
        .await
        .map_err(|e| anyhow::anyhow!("--kafka-listen {}: {e}", args.kafka_listen))?;
    let http = TcpListener::bind(args.http_listen)
        .await
        .map_err(|e| anyhow::anyhow!("--http-listen {}: {e}", args.http_listen))?;
    let broker = Broker::with_groups(
        engine.clone(),
        BrokerIdentity {
            node_id: broker_id,
            host: host.clone(),
            port,
            rack: args.rack.clone(),
            cluster_id: args.cluster_id.clone(),
        },
        coordinator::GroupConfig {
            initial_rebalance_delay: Duration::from_millis(args.group_initial_rebalance_delay_ms),
            consumer: coordinator::consumer::Settings {
                heartbeat_interval: Duration::from_millis(
                    args.group_consumer_heartbeat_interval_ms,
                ),
                session_timeout: Duration::from_millis(args.group_consumer_session_timeout_ms),
            },
            offsets_retention: Duration::from_secs_f64(
                args.offsets_retention_minutes.max(0.0) * 60.0,
            ),
        },
    );
    let membership = Membership::start(
        engine.clone(),
        BrokerRecord {
            id: broker_id,
            host: host.clone(),
            port,
            rack: args.rack.clone(),
            leaving: false,
            roles: args.roles,
            http: Some(args.advertised_http(&host)),
        },
        lease_ttl,
        claim.as_ref().map(membership::KeptClaim::guard),
    );
    let claim_lost = async {
        match &mut claim {
            Some(c) => c.lost().await,
            None => std::future::pending().await,
        }
    };
    tokio::spawn(sluice_control::run(
        engine.clone(),
        membership.lease(),
        Vec::new(),
        metrics.leading.clone(),
    ));
    {
        let engine = engine.clone();
        let shards = args.group_shards;
        tokio::spawn(async move { coordinator::ensure_groups_topic(&engine, shards).await });
    }
    {
        let engine = engine.clone();
        let shards = args.transaction_shards;
        tokio::spawn(
            async move { sluice_broker::transactions::ensure_topic(&engine, shards).await },
        );
    }
    tracing::info!(
        kafka = %args.kafka_listen,
        advertised = %format!("{host}:{port}"),
        http = %args.http_listen,
        object_store = %url,
        broker_id,
        "sluice listening"
    );

    let request_metrics = metrics.requests.clone();
    let http_task = tokio::spawn(async move {
        if let Err(e) = axum::serve(
            http,
            http::router(engine.clone(), metrics).into_make_service(),
        )
        .await
        {
            tracing::error!(error = %e, "http server stopped");
        }
    });
    let limits = connection::Limits {
        max_frame: args.max_request_bytes,
        idle: Duration::from_millis(args.connections_max_idle_ms),
    };
    let max_connections = args.max_connections as usize;
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let (closing, closed) = tokio::sync::watch::channel(false);
    // A compactor-only node is not a broker clients may use: its port is closed.
    let kafka = args.roles.broker.then_some(kafka);
    let accept = async {
        let Some(kafka) = &kafka else {
            return std::future::pending::<()>().await;
        };
        loop {
            match kafka.accept().await {
                Ok((stream, peer)) => {
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        // Over the limit: closed at once, so the accept loop never
                        // waits and the backlog never grows.
                        request_metrics.connection_refused();
                        tracing::debug!(%peer, max_connections, "too many connections; closed");
                        drop(stream);
                        continue;
                    };
                    tokio::spawn(connection::serve(
                        broker.clone(),
                        stream,
                        limits,
                        request_metrics.clone(),
                        closed.clone(),
                        slot,
                    ));
                }
                Err(e) => {
                    // Out of file descriptors, most likely: back off, then go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    };
    tokio::select! {
        _ = accept => {}
        _ = shutdown_signal() => {}
        lost = claim_lost => {
            // Another process has this id and a newer generation: this one is
            // fenced and must not hand anything off.
            anyhow::bail!("{lost}");
        }
    }
    // New connections go to other brokers.
    drop(kafka);
    // Graceful handoff: refuse new produces (retriably), commit what was appended,
    // then let the controller move every partition before the lease ends.
    tracing::info!("shutting down: flushing pending produces");
    broker.engine.stop_producing();
    if tokio::time::timeout(DRAIN_TIMEOUT, broker.engine.drain())
        .await
        .is_err()
    {
        tracing::warn!("pending flushes did not finish in time; unacknowledged produces will be retried by clients");
    }
    tracing::info!("handing partitions off");
    membership.leave(HANDOFF_TIMEOUT).await;
    if let Some(claim) = claim {
        // The id is free for the next pod at once.
        claim.release().await;
    }
    // Connections stop reading, answer what they have in flight, and close.
    let _ = closing.send(true);
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(CLOSE_TIMEOUT, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("some connections did not close in time");
    }
    http_task.abort();
    tracing::info!("stopped");
    Ok(())
}

/// The metadata store: etcd when `--etcd` is given, else the embedded store (in
/// memory for `memory://` objects, under `--data-dir` otherwise).
async fn open_meta(
    args: &ServeArgs,
    store_url: &ObjectStoreUrl,
) -> anyhow::Result<Arc<dyn MetaStore>> {
    Ok(match store_url {
        _ if !args.etcd.is_empty() => connect_etcd(args).await?,
        ObjectStoreUrl::Memory => Arc::new(EmbeddedStore::in_memory()),
        ObjectStoreUrl::File(_) | ObjectStoreUrl::S3 { .. } => {
            let dir = args.data_dir.join("meta");
            Arc::new(EmbeddedStore::open(&dir).map_err(|e| anyhow::anyhow!("--data-dir: {e}"))?)
        }
    })
}

async fn connect_etcd(args: &ServeArgs) -> anyhow::Result<Arc<dyn MetaStore>> {
    let read = |flag: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| anyhow::anyhow!("{flag} {}: {e}", path.display()))
    };
    let ca_pem = match &args.etcd_ca_file {
        Some(p) => Some(read("--etcd-ca-file", p)?),
        None => None,
    };
    let identity = match (&args.etcd_cert_file, &args.etcd_key_file) {
        (Some(c), Some(k)) => Some((read("--etcd-cert-file", c)?, read("--etcd-key-file", k)?)),
        _ => None,
    };
    let https = args.etcd.iter().any(|e| e.starts_with("https://"));
    let tls = (https || ca_pem.is_some() || identity.is_some())
        .then_some(sluice_meta::etcd::EtcdTls { ca_pem, identity });
    let opts = sluice_meta::etcd::EtcdOptions {
        endpoints: args.etcd.clone(),
        user: args.etcd_user.clone().zip(args.etcd_password.clone()),
        tls,
        ..Default::default()
    };
    let store = sluice_meta::etcd::EtcdStore::connect(&opts)
        .await
        .map_err(|e| anyhow::anyhow!("--etcd {}: {e}", args.etcd.join(",")))?;
    Ok(Arc::new(store))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
