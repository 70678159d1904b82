//! Three brokers on one etcd and one S3 server: leadership moves while producers with
//! acks=all keep writing, and a checker proves nothing acknowledged was lost,
//! duplicated, reordered or given an offset twice.
//!
//! - chaos: brokers are killed -9 and restarted in a loop, and etcd is restarted once;
//! - fencing: a leader is paused (SIGSTOP) until its partitions move, then resumed;
//!   its pending flushes must not commit and its producers must move on;
//! - roles: a broker that only serves and a node that only compacts; the compactor
//!   turns what the broker leads into Parquet, and everything reads back;
//! - a replaced process: a second process with the same broker id takes over; the
//!   first, paused past its lease and resumed, never registers over it again.
//!
//! After each scenario every broker is killed and restarted, so the final read comes
//! from state rebuilt from the manifests alone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureRecord;
use sluice_e2e::checker::{check, payload, read_all, Acked, PARTITIONS};
use sluice_e2e::clients::{config, create_topic, producer};
use sluice_e2e::Cluster;

/// Produces to `topic` until `stop`, recording every acknowledgement. Returns the
/// number of records that failed for good.
async fn produce_until(
    bootstrap: String,
    topic: &'static str,
    producer_id: u64,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Acked>>>,
) -> Result<usize> {
    let p = producer(
        &bootstrap,
        &[
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("linger.ms", "5"),
            ("message.timeout.ms", "180000"),
            ("retry.backoff.ms", "100"),
            ("retry.backoff.max.ms", "500"),
            ("topic.metadata.refresh.interval.ms", "1000"),
        ],
    )?;
    let mut inflight = FuturesUnordered::new();
    let mut failed = 0usize;
    let mut seq = 0u64;
    let record = |r: (u64, Result<(i32, i64), String>), failed: &mut usize| match r.1 {
        Ok((partition, offset)) => acked.lock().unwrap_or_else(|p| p.into_inner()).push(Acked {
            partition,
            offset,
            value: r.0,
        }),
        Err(e) => {
            eprintln!("producer {producer_id}: record {:#x} failed: {e}", r.0);
            *failed += 1;
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let value = producer_id << 32 | seq;
        let bytes = payload(value);
        let partition = (seq % PARTITIONS as u64) as i32;
        let fut = p
            .send_result(
                FutureRecord::<(), [u8]>::to(topic)
                    .payload(&bytes[..])
                    .partition(partition),
            )
            .map_err(|(e, _)| anyhow::anyhow!("enqueue: {e}"))?;
        inflight.push(async move {
            let r = match fut.await {
                Ok(Ok(d)) => Ok((d.partition, d.offset)),
                Ok(Err((e, _))) => Err(e.to_string()),
                Err(_) => Err("cancelled".to_string()),
            };
            (value, r)
        });
        seq += 1;
        while inflight.len() >= 500 {
            if let Some(r) = inflight.next().await {
                record(r, &mut failed);
            }
        }
        if seq.is_multiple_of(50) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    while let Some(r) = inflight.next().await {
        record(r, &mut failed);
    }
    Ok(failed)
}

/// Kills every broker, starts them all again and checks the log rebuilt from the
/// manifests alone.
async fn check_after_full_restart(
    cluster: &mut Cluster,
    topic: &'static str,
    acked: &[Acked],
) -> Result<()> {
    for b in &mut cluster.brokers {
        b.kill()?;
    }
    let started = Instant::now();
    for b in &mut cluster.brokers {
        // Injected latency would only slow the read down.
        b.drop_args("--object-store-faults");
        b.start_again()?;
    }
    eprintln!("all brokers restarted in {:?}", started.elapsed());
    let bootstrap = cluster.bootstrap();
    let log = tokio::task::spawn_blocking(move || read_all(&bootstrap, topic)).await??;
    eprintln!("read back after the restart in {:?}", started.elapsed());
    check(acked, &log)
}

fn spawn_producers(
    bootstrap: &str,
    topic: &'static str,
    n: u64,
    stop: &Arc<AtomicBool>,
    acked: &Arc<Mutex<Vec<Acked>>>,
) -> Vec<tokio::task::JoinHandle<Result<usize>>> {
    (1..=n)
        .map(|id| {
            tokio::spawn(produce_until(
                bootstrap.to_string(),
                topic,
                id,
                stop.clone(),
                acked.clone(),
            ))
        })
        .collect()
}

/// Stops the producers, waits for their last acknowledgements, and returns every
/// acknowledged record and how many records failed for good.
async fn stop_producers(
    stop: &AtomicBool,
    handles: Vec<tokio::task::JoinHandle<Result<usize>>>,
    acked: &Mutex<Vec<Acked>>,
) -> Result<(Vec<Acked>, usize)> {
    stop.store(true, Ordering::Relaxed);
    let stopping = Instant::now();
    let mut failed = 0;
    for h in handles {
        failed += h.await??;
    }
    eprintln!("producers drained in {:?}", stopping.elapsed());
    let acked = std::mem::take(&mut *acked.lock().unwrap_or_else(|p| p.into_inner()));
    eprintln!(
        "{} records acknowledged, {failed} failed for good",
        acked.len()
    );
    Ok((acked, failed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_chaos_kill_restart_loop_and_etcd_restart() -> Result<()> {
    let mut cluster = Cluster::start(3, &["--lease-ttl-secs=3"])?;
    let bootstrap = cluster.bootstrap();
    create_topic(&bootstrap, "chaos", PARTITIONS, &[]).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let producers = spawn_producers(&bootstrap, "chaos", 2, &stop, &acked);

    for round in 0..6usize {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let victim = (round % 3) as i32 + 1;
        let before = acked.lock().map(|a| a.len()).unwrap_or(0);
        eprintln!("round {round}: kill -9 broker {victim} ({before} acknowledged so far)");
        cluster.broker(victim).kill()?;
        // Leave it down long enough, in some rounds, for its lease to expire.
        tokio::time::sleep(Duration::from_millis(if round % 2 == 0 {
            1000
        } else {
            4500
        }))
        .await;
        cluster.broker(victim).start_again()?;
        if round == 2 {
            eprintln!("restarting etcd");
            // Longer than the lease TTL: every broker registers again afterwards.
            cluster.etcd.stop();
            tokio::time::sleep(Duration::from_secs(5)).await;
            cluster.etcd.start_again()?;
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (acked, failed) = stop_producers(&stop, producers, &acked).await?;
    ensure!(
        acked.len() > 1000,
        "too little was acknowledged to mean anything"
    );
    ensure!(
        failed == 0,
        "{failed} records failed for good\n{}",
        cluster.logs()
    );

    let log = {
        let b = cluster.bootstrap();
        tokio::task::spawn_blocking(move || read_all(&b, "chaos")).await??
    };
    check(&acked, &log).with_context(|| cluster.logs())?;
    check_after_full_restart(&mut cluster, "chaos", &acked)
        .await
        .with_context(|| cluster.logs())
}

/// The leader of partition 0 as broker `asker` reports it.
async fn leader_of(bootstrap: &str, topic: &str) -> Result<i32> {
    let b = bootstrap.to_string();
    let t = topic.to_string();
    tokio::task::spawn_blocking(move || -> Result<i32> {
        let c: BaseConsumer = config(&b, &[]).create()?;
        let md = c.fetch_metadata(Some(&t), Duration::from_secs(10))?;
        let topic = md.topics().first().context("no topic")?;
        let p = topic
            .partitions()
            .iter()
            .find(|p| p.id() == 0)
            .context("no partition 0")?;
        Ok(p.leader())
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_paused_leader_commits_nothing_after_its_partitions_move() -> Result<()> {
    // Slow PUTs keep a flush in flight on every broker at almost any moment.
    let mut cluster = Cluster::start(
        3,
        &["--lease-ttl-secs=2", "--object-store-faults=latency=150ms"],
    )?;
    let bootstrap = cluster.bootstrap();
    create_topic(&bootstrap, "fence", PARTITIONS, &[]).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let producers = spawn_producers(&bootstrap, "fence", 2, &stop, &acked);
    tokio::time::sleep(Duration::from_secs(3)).await;

    let old = leader_of(&bootstrap, "fence").await?;
    let fenced_before = cluster
        .broker(old)
        .metric("sluice_commits_total", "outcome=\"fenced\"")?;
    eprintln!("pausing broker {old}, leader of fence/0");
    cluster.broker(old).signal("STOP")?;
    let other = cluster.brokers[(old % 3) as usize].bootstrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let moved_to = loop {
        ensure!(Instant::now() < deadline, "partition 0 did not move");
        match leader_of(&other, "fence").await {
            Ok(l) if l != old && l > 0 => break l,
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    eprintln!("fence/0 moved from broker {old} to broker {moved_to}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.broker(old).signal("CONT")?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let fenced_after = cluster
        .broker(old)
        .metric("sluice_commits_total", "outcome=\"fenced\"")?;
    eprintln!("broker {old}: fenced commits {fenced_before} -> {fenced_after}");
    ensure!(
        fenced_after > fenced_before,
        "the paused broker had no refused commit: the scenario did not exercise fencing\n{}",
        cluster.logs()
    );

    let (acked, failed) = stop_producers(&stop, producers, &acked).await?;
    ensure!(failed == 0, "{failed} records failed for good");
    check_after_full_restart(&mut cluster, "fence", &acked)
        .await
        .with_context(|| cluster.logs())
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_compactor_only_node_folds_what_the_broker_leads() -> Result<()> {
    let mut cluster = Cluster::start_each(&[
        &["--roles=broker", "--compaction-interval-ms=300"],
        &["--roles=compactor", "--compaction-interval-ms=300"],
    ])?;
    // Clients know only the broker: the compactor's Kafka port is closed, and a
    // client bootstrapping from it reports transport errors, which the checker's
    // reads would take for failures.
    let bootstrap = cluster.broker(1).bootstrap();
    create_topic(
        &bootstrap,
        "roles",
        PARTITIONS,
        &[("sluice.lake.after.ms", "0")],
    )
    .await?;
    let metadata = {
        let bootstrap = bootstrap.clone();
        tokio::task::spawn_blocking(move || -> Result<usize> {
            let c: BaseConsumer = config(&bootstrap, &[]).create()?;
            Ok(c.fetch_metadata(None, Duration::from_secs(10))?
                .brokers()
                .len())
        })
        .await??
    };
    ensure!(
        metadata == 1,
        "Metadata lists {metadata} brokers; the compactor is not one"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let producers = spawn_producers(&bootstrap, "roles", 2, &stop, &acked);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (acked, failed) = stop_producers(&stop, producers, &acked).await?;
    ensure!(failed == 0, "{failed} records failed for good");

    // Every partition gets a lake file, written by the compactor, not the broker.
    let parquet = "format=\"parquet\"";
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster.broker(2).metric("sluice_folds_total", parquet)? < f64::from(PARTITIONS) {
        ensure!(
            Instant::now() < deadline,
            "the compactor did not fold\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    ensure!(
        cluster.broker(1).metric("sluice_folds_total", "")? == 0.0,
        "the broker folded"
    );
    let log = {
        let bootstrap = bootstrap.clone();
        tokio::task::spawn_blocking(move || read_all(&bootstrap, "roles")).await??
    };
    check(&acked, &log)?;
    // Both restarted: the broker rebuilds from the compactor's checkpoints.
    for b in &mut cluster.brokers {
        b.kill()?;
    }
    for b in &mut cluster.brokers {
        b.start_again()?;
    }
    let log = tokio::task::spawn_blocking(move || read_all(&bootstrap, "roles")).await??;
    check(&acked, &log).with_context(|| cluster.logs())
}

/// The port Metadata (asked at `bootstrap`) gives for broker `id`.
async fn advertised_port(bootstrap: &str, id: i32) -> Result<Option<i32>> {
    let b = bootstrap.to_string();
    tokio::task::spawn_blocking(move || -> Result<Option<i32>> {
        let c: BaseConsumer = config(&b, &[]).create()?;
        let md = c.fetch_metadata(None, Duration::from_secs(10))?;
        Ok(md.brokers().iter().find(|x| x.id() == id).map(|x| x.port()))
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_fenced_process_never_registers_over_the_live_one() -> Result<()> {
    let mut cluster = Cluster::start(1, &["--lease-ttl-secs=2"])?;
    let replacement = cluster.start_another(1, &["--lease-ttl-secs=2"])?;
    let bootstrap = replacement.bootstrap();
    let port = i32::from(replacement.port);
    let deadline = Instant::now() + Duration::from_secs(20);
    while advertised_port(&bootstrap, 1).await? != Some(port) {
        ensure!(
            Instant::now() < deadline,
            "the replacement never registered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The first process, paused past its lease, then resumed: it finds its lease
    // gone. Fenced by the replacement, it must not register again.
    cluster.broker(1).signal("STOP")?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    cluster.broker(1).signal("CONT")?;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = advertised_port(&bootstrap, 1).await?;
        ensure!(
            now == Some(port),
            "broker 1 is advertised at {now:?}, not the replacement's {port}\n{}\n--- replacement ---\n{}",
            cluster.logs(),
            replacement.log()
        );
    }
    Ok(())
}

/// etcd refuses requests over 1.5 MiB (its default `--max-request-bytes`): one
/// flush over 20,000 partitions, each with an idempotent batch, needs about 5 MB of
/// manifest. The broker splits it into flushes whose manifests fit; before, the one
/// manifest was refused and retried forever, and no produce was acknowledged again.
/// (Two requests of 10,000 partitions each, sent at once, land in one flush.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_flush_over_20000_partitions_commits_within_etcds_limit() -> Result<()> {
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;
    use sluice_e2e::wire::{self, Connection, RawBatch};
    const N: i32 = 20_000;
    let cluster = Cluster::start(1, &["--wal-flush-linger-ms=1000"])?;
    let addr = cluster.brokers[0].bootstrap();
    create_topic(&addr, "wide", N, &[]).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let led = || -> Result<f64> {
        let body = cluster.brokers[0].http_get("/metrics")?;
        Ok(body
            .lines()
            .find_map(|l| l.strip_prefix("sluice_partitions_led "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0))
    };
    while led()? < f64::from(N) {
        ensure!(Instant::now() < deadline, "the broker never led the topic");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut conn = Connection::open(&addr)?;
    let ResponseKind::InitProducerId(pid) = conn.call(
        ApiKey::InitProducerId,
        4,
        RequestKind::InitProducerId(
            InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(-1),
        ),
    )?
    else {
        anyhow::bail!("not InitProducerId");
    };
    ensure!(
        pid.error_code == 0,
        "InitProducerId answered {}",
        pid.error_code
    );
    let record = wire::record(0, None, b"v");
    let request = |partitions: std::ops::Range<i32>| {
        ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(60_000)
            .with_topic_data(vec![produce_request::TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("wide")))
                .with_partition_data(
                    partitions
                        .map(|p| {
                            let batch = RawBatch {
                                producer_id: pid.producer_id.0,
                                producer_epoch: pid.producer_epoch,
                                base_sequence: 0,
                                ..Default::default()
                            };
                            produce_request::PartitionProduceData::default()
                                .with_index(p)
                                .with_records(Some(batch.encode(&record)))
                        })
                        .collect(),
                )])
    };
    let started = Instant::now();
    let halves: Vec<_> = [0..N / 2, N / 2..N]
        .into_iter()
        .map(|range| {
            let req = request(range);
            let addr = addr.clone();
            std::thread::spawn(move || -> Result<Vec<i16>> {
                let mut conn = Connection::open(&addr)?;
                match conn.call(ApiKey::Produce, 9, RequestKind::Produce(req))? {
                    ResponseKind::Produce(r) => Ok(r.responses[0]
                        .partition_responses
                        .iter()
                        .map(|p| p.error_code)
                        .collect()),
                    other => anyhow::bail!("unexpected {other:?}"),
                }
            })
        })
        .collect();
    let mut codes = Vec::new();
    for h in halves {
        codes.extend(h.join().map_err(|_| anyhow::anyhow!("panicked"))??);
    }
    let broker = &cluster.brokers[0];
    let commits = broker.metric("sluice_commits_total", "outcome=\"committed\"")?;
    let retried = broker.metric("sluice_commits_total", "outcome=\"retried\"")?;
    let failed = codes.iter().filter(|c| **c != 0).count();
    eprintln!(
        "{N} partitions: {} acknowledged in {:?}, {commits} commits, {retried} retried; errors {:?}",
        codes.len() - failed,
        started.elapsed(),
        codes.iter().find(|c| **c != 0)
    );
    ensure!(failed == 0, "{failed} of {N} partitions failed");
    ensure!(retried == 0.0, "{retried} commits retried");
    Ok(())
}

/// A group's offsets for a topic of 25,000 partitions are about 2 MB as one value,
/// over etcd's 1.5 MiB request limit: before, such a commit could never succeed
/// (the client retried for ever). Offsets are stored in keys of 32 partitions each;
/// the commit spans several bounded transactions and reads back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_group_commits_offsets_for_25000_partitions() -> Result<()> {
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;
    use sluice_e2e::wire::Connection;
    const N: i32 = 25_000;
    let cluster = Cluster::start(1, &[])?;
    let addr = cluster.brokers[0].bootstrap();
    create_topic(&addr, "wide", N, &[]).await?;
    let mut conn = Connection::open(&addr)?;
    let commit = |conn: &mut Connection, partitions: std::ops::Range<i32>, base: i64| {
        let req = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("wide-group")))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str("wide")))
                    .with_partitions(
                        partitions
                            .map(|p| {
                                offset_commit_request::OffsetCommitRequestPartition::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(base + i64::from(p))
                                    .with_committed_metadata(Some(StrBytes::from_static_str(
                                        "consumer-1",
                                    )))
                            })
                            .collect(),
                    ),
            ]);
        match conn.call(ApiKey::OffsetCommit, 8, RequestKind::OffsetCommit(req))? {
            ResponseKind::OffsetCommit(r) => Ok(r.topics[0]
                .partitions
                .iter()
                .map(|p| p.error_code)
                .collect::<Vec<i16>>()),
            other => anyhow::bail!("unexpected {other:?}"),
        }
    };
    // The coordinator needs its shard first: retry while it is not ready.
    let deadline = Instant::now() + Duration::from_secs(60);
    let started = loop {
        let started = Instant::now();
        let codes = commit(&mut conn, 0..N, 1_000)?;
        let failed: Vec<i16> = codes.iter().copied().filter(|c| *c != 0).collect();
        if failed.is_empty() {
            break started;
        }
        // COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR.
        ensure!(
            [14, 15, 16].contains(&failed[0]) && Instant::now() < deadline,
            "{} of {N} partitions failed to commit, first with {}",
            failed.len(),
            failed[0]
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!("{N} partitions committed in {:?}", started.elapsed());
    // A later commit of a few partitions changes just those.
    ensure!(commit(&mut conn, 100..110, 5_000)?.iter().all(|c| *c == 0));
    let fetch = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("wide-group")))
        .with_topics(None);
    let ResponseKind::OffsetFetch(fetched) =
        conn.call(ApiKey::OffsetFetch, 7, RequestKind::OffsetFetch(fetch))?
    else {
        anyhow::bail!("not OffsetFetch");
    };
    ensure!(
        fetched.error_code == 0,
        "OffsetFetch {}",
        fetched.error_code
    );
    let topic = fetched
        .topics
        .iter()
        .find(|t| t.name.as_str() == "wide")
        .context("no offsets for the topic")?;
    ensure!(
        topic.partitions.len() == N as usize,
        "{} partitions",
        topic.partitions.len()
    );
    for p in &topic.partitions {
        let base = if (100..110).contains(&p.partition_index) {
            5_000
        } else {
            1_000
        };
        ensure!(
            p.error_code == 0 && p.committed_offset == base + i64::from(p.partition_index),
            "partition {} has {} (error {})",
            p.partition_index,
            p.committed_offset,
            p.error_code
        );
    }
    Ok(())
}
