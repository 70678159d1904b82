//! Measures failover on a 3-broker cluster (etcd + S3 server on loopback) under
//! steady idempotent produce with acks=all, and prints the numbers:
//!
//! 1. kill -9 of a broker: for each partition it led, the time from the kill until a
//!    producer is acknowledged on that partition again;
//! 2. SIGTERM of a broker (graceful handoff): the same, and whether any record
//!    failed (retriable errors are retried by the client and do not count);
//! 3. a checker run over the whole log: acknowledged records lost, duplicated or
//!    at another offset, and offsets reused (all must be 0).
//!
//! Usage: `cargo run --release -p sluice-e2e --bin sluice-failover [-- --lease-ttl-secs N]`
//! (needs the release binary, `cargo build --release -p sluice-server`). Documented in
//! docs/benchmarks.md.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message};
use sluice_e2e::checker::{check, payload, read_all, value_of, Acked, PARTITIONS};
use sluice_e2e::clients::{config, create_topic};
use sluice_e2e::Cluster;

#[derive(Default)]
struct Log {
    acked: Vec<Acked>,
    /// Acknowledgement times per partition.
    times: HashMap<i32, Vec<Instant>>,
    failed: usize,
}

struct Recorder(Arc<Mutex<Log>>);

impl ClientContext for Recorder {}

impl ProducerContext for Recorder {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let mut log = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(m) => {
                let value = value_of(m.payload().unwrap_or_default()).unwrap_or(u64::MAX);
                log.acked.push(Acked {
                    partition: m.partition(),
                    offset: m.offset(),
                    value,
                });
                log.times
                    .entry(m.partition())
                    .or_default()
                    .push(Instant::now());
            }
            Err((e, _)) => {
                eprintln!("delivery failed: {e}");
                log.failed += 1;
            }
        }
    }
}

/// Partitions each broker leads, from a Metadata request.
fn leaders(bootstrap: &str, topic: &str) -> Result<BTreeMap<i32, Vec<i32>>> {
    let c: BaseConsumer = config(bootstrap, &[]).create()?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let t = md.topics().first().context("no topic")?;
    let mut out: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for p in t.partitions() {
        out.entry(p.leader()).or_default().push(p.id());
    }
    Ok(out)
}

/// For each partition, the time from `event` to its first acknowledgement after it.
fn recovery(log: &Log, partitions: &[i32], event: Instant) -> Vec<(i32, Option<Duration>)> {
    partitions
        .iter()
        .map(|p| {
            let first = log
                .times
                .get(p)
                .and_then(|ts| ts.iter().find(|t| **t > event))
                .map(|t| t.duration_since(event));
            (*p, first)
        })
        .collect()
}

fn print_recovery(what: &str, r: &[(i32, Option<Duration>)]) {
    let worst = r.iter().filter_map(|(_, d)| *d).max();
    let all = r.iter().all(|(_, d)| d.is_some());
    println!("{what}:");
    for (p, d) in r {
        match d {
            Some(d) => println!("  partition {p:2}: acknowledged again after {d:.2?}"),
            None => println!("  partition {p:2}: NOT acknowledged again"),
        }
    }
    println!(
        "  worst: {}",
        match (worst, all) {
            (Some(w), true) => format!("{w:.2?}"),
            _ => "some partition never recovered".into(),
        }
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ttl = args
        .iter()
        .position(|a| a == "--lease-ttl-secs")
        .and_then(|i| args.get(i + 1))
        .map_or(6, |v| v.parse().unwrap_or(6));
    let ttl_flag = format!("--lease-ttl-secs={ttl}");
    let mut cluster = Cluster::start(3, &[&ttl_flag])?;
    let bootstrap = cluster.bootstrap();
    let topic = "failover";
    create_topic(&bootstrap, topic, PARTITIONS, &[]).await?;

    let log = Arc::new(Mutex::new(Log::default()));
    let producer: ThreadedProducer<Recorder> = config(
        &bootstrap,
        &[
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("linger.ms", "5"),
            ("message.timeout.ms", "120000"),
            ("retry.backoff.ms", "50"),
            ("retry.backoff.max.ms", "250"),
            ("topic.metadata.refresh.interval.ms", "1000"),
        ],
    )
    .create_with_context(Recorder(log.clone()))?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            // About 2,000 records a second, spread over every partition.
            let mut seq = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let bytes = payload(1 << 32 | seq);
                let p = (seq % PARTITIONS as u64) as i32;
                let mut record = BaseRecord::<(), [u8]>::to(topic)
                    .payload(&bytes[..])
                    .partition(p);
                loop {
                    match producer.send(record) {
                        Ok(()) => break,
                        Err((_, r)) => {
                            record = r;
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                }
                seq += 1;
                std::thread::sleep(Duration::from_micros(500));
            }
            let _ = producer.flush(Duration::from_secs(120));
        })
    };

    tokio::time::sleep(Duration::from_secs(5)).await;
    let led = leaders(&bootstrap, topic)?;
    let victim = 1;
    let victim_parts = led.get(&victim).cloned().unwrap_or_default();
    println!("lease TTL {ttl} s; broker {victim} leads partitions {victim_parts:?}");
    let killed = Instant::now();
    cluster.broker(victim).kill()?;
    tokio::time::sleep(Duration::from_secs(u64::from(ttl as u32) + 8)).await;
    let r_kill = recovery(
        &log.lock().unwrap_or_else(|p| p.into_inner()),
        &victim_parts,
        killed,
    );

    cluster.broker(victim).start_again()?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let led = leaders(&cluster.brokers[0].bootstrap(), topic)?;
    let leaving = 2;
    let leaving_parts = led.get(&leaving).cloned().unwrap_or_default();
    let failed_before = log.lock().map(|l| l.failed).unwrap_or(0);
    let termed = Instant::now();
    cluster.broker(leaving).terminate()?;
    let handoff_took = termed.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let r_term = recovery(
        &log.lock().unwrap_or_else(|p| p.into_inner()),
        &leaving_parts,
        termed,
    );
    let failed_during_term = log.lock().map(|l| l.failed).unwrap_or(0) - failed_before;

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = writer.join();
    let log = std::mem::take(&mut *log.lock().unwrap_or_else(|p| p.into_inner()));
    let readback = read_all(&cluster.brokers[0].bootstrap(), topic)?;
    let verdict = check(&log.acked, &readback);

    print_recovery(
        &format!("kill -9 of broker {victim} (lease TTL {ttl} s)"),
        &r_kill,
    );
    print_recovery(
        &format!(
            "SIGTERM of broker {leaving} (its process exited {handoff_took:.2?} after the signal)"
        ),
        &r_term,
    );
    println!("records failed for good during the SIGTERM handoff: {failed_during_term}");
    println!(
        "acknowledged {} records, failed for good {}; checker: {}",
        log.acked.len(),
        log.failed,
        match &verdict {
            Ok(()) => "0 lost, 0 duplicated, 0 offsets reused, order kept".to_string(),
            Err(e) => format!("FAILED: {e:#}"),
        }
    );
    verdict
}
