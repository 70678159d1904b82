//! `sluice-bench`: drives a Sluice broker with librdkafka and prints numbers.
//!
//! By default it starts its own broker (the release `sluice` binary, embedded
//! metadata, objects in a temporary directory) so every run starts from the same
//! state; `--bootstrap` points it at a running broker instead. Phases:
//!
//! 1. throughput: `--messages` records of `--value-size` bytes, acks=all, as fast as
//!    the producer can; prints MB/s, msgs/s and object PUTs per GiB.
//! 2. latency: a fixed `--rate` for `--rate-seconds` with a consumer tailing the
//!    topic; prints produce (ack) latency and end-to-end latency percentiles (p50,
//!    p99, p99.9).
//! 3. catch-up: a fresh consumer reads everything from phase 1; prints MB/s and GETs
//!    per GiB read. With a broker the benchmark started, it then restarts it and
//!    reads everything again twice: cold (tail and read cache empty, all from the
//!    object store) and warm (from the read cache).
//! 4. PUT rate: the latency phase's byte rate over 1 and over 1,000 partitions
//!    (`--put-rate-partitions`); prints PUTs per second for each.
//!
//! `--lake` replaces phases 2-4: compaction runs every second, phase 1's topic gets
//! `sluice.lake.after.ms=0`, and once it is Parquet the broker restarts and a consumer
//! reads it all twice (`lake_cold_catchup`, `lake_warm_catchup`): fetches re-encode
//! row groups.
//!
//! `--transactions` replaces phases 2-4 too: the same records again, once from an
//! idempotent producer and once from a transactional one committing every
//! `--txn-ms` (100 ms) over all partitions; prints both rates, their ratio, the
//! transactions committed and the commit latency percentiles (the time
//! `commit_transaction` takes once the transaction's records are acknowledged: EndTxn
//! and what librdkafka waits for after it).
//!
//! `--s3` keeps the broker's objects in a local S3 server (moto) instead of a
//! directory. Request counts come from the broker's `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use clap::Parser;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use sluice_e2e::{S3Server, Sluice};

#[derive(Parser)]
#[command(about = "Benchmark a Sluice broker with librdkafka")]
struct Args {
    /// A running broker; without it the benchmark starts its own.
    #[arg(long)]
    bootstrap: Option<String>,
    /// Extra flags for the broker the benchmark starts (e.g. "--wal-flush-linger-ms=5").
    #[arg(long, allow_hyphen_values = true)]
    broker_arg: Vec<String>,
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Messages per second in the latency phase.
    #[arg(long, default_value_t = 5_000)]
    rate: u64,
    #[arg(long, default_value_t = 10)]
    rate_seconds: u64,
    /// Store objects in a local S3 server (moto) the benchmark starts.
    #[arg(long)]
    s3: bool,
    /// Partition counts for the PUT-rate phase (same byte rate each); the flag with no
    /// value skips the phase.
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "1,1000")]
    put_rate_partitions: Vec<i32>,
    /// Instead of phases 2-4, with a broker the benchmark started: turn phase 1's
    /// data into Parquet (`sluice.lake.after.ms=0`, compaction every second) and
    /// read it all, cold and warm.
    #[arg(long)]
    lake: bool,
    /// Instead of phases 2-4: idempotent against transactional producing.
    #[arg(long)]
    transactions: bool,
    /// How long each transaction of `--transactions` runs before it commits.
    #[arg(long, default_value_t = 100)]
    txn_ms: u64,
}

/// Object-store requests of `kind` the broker has made so far.
fn requests(broker: Option<&Sluice>, kind: &str) -> Option<f64> {
    broker_metric(
        broker,
        "sluice_object_store_requests_total",
        &format!("kind=\"{kind}\""),
    )
}

fn broker_metric(broker: Option<&Sluice>, name: &str, label: &str) -> Option<f64> {
    broker?.metric(name, label).ok()
}

fn alter_topic(bootstrap: &str, topic: &str, name: &str, value: &str) -> Result<()> {
    futures::executor::block_on(async {
        use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()?;
        let change = AlterConfig::new(ResourceSpecifier::Topic(topic)).set(name, value);
        for r in admin.alter_configs([&change], &AdminOptions::new()).await? {
            if let Err((_, e)) = r {
                bail!("alter {topic}: {e}");
            }
        }
        Ok(())
    })
}

/// Counts acknowledgements and records ack latency (when a send time is attached).
#[derive(Default)]
struct Acks {
    ok: AtomicU64,
    failed: AtomicU64,
    latencies_us: Mutex<Vec<u64>>,
}

struct Ctx(Arc<Acks>);

impl ClientContext for Ctx {}

impl ProducerContext for Ctx {
    type DeliveryOpaque = Box<Option<Instant>>;
    fn delivery(&self, result: &DeliveryResult<'_>, sent: Self::DeliveryOpaque) {
        match result {
            Ok(_) => {
                self.0.ok.fetch_add(1, Ordering::Relaxed);
                if let Some(t) = *sent {
                    if let Ok(mut l) = self.0.latencies_us.lock() {
                        l.push(t.elapsed().as_micros() as u64);
                    }
                }
            }
            Err(_) => {
                self.0.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn producer(bootstrap: &str, acks: Arc<Acks>, linger_ms: &str) -> Result<ThreadedProducer<Ctx>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", linger_ms)
        .set("batch.size", "1000000")
        .set("compression.type", "none")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("queue.buffering.max.messages", "1000000")
        .create_with_context(Ctx(acks))?)
}

fn send(
    p: &ThreadedProducer<Ctx>,
    topic: &str,
    partition: i32,
    value: &[u8],
    sent: Option<Instant>,
) -> Result<()> {
    let mut record = BaseRecord::with_opaque_to(topic, Box::new(sent))
        .payload(value)
        .partition(partition);
    loop {
        match p.send::<(), [u8]>(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_micros(200));
            }
            Err((e, _)) => bail!("send failed: {e}"),
        }
    }
}

/// One record to each partition, acknowledged before the clock starts: a broker that
/// has just created the topic may not have its leaders ready (Kafka answers
/// LEADER_NOT_AVAILABLE for a moment), and that wait is not what a phase measures.
/// The value is all zeros, which the latency phase's reader skips.
fn warm_up(p: &ThreadedProducer<Ctx>, topic: &str, partitions: i32, size: usize) -> Result<()> {
    let zeros = vec![0u8; size.max(16)];
    for partition in 0..partitions {
        send(p, topic, partition, &zeros, None)?;
    }
    p.flush(Duration::from_secs(60))?;
    Ok(())
}

/// `--transactions`: the throughput phase's records from an idempotent producer, then
/// from a transactional one committing every `--txn-ms`.
fn transactions(bootstrap: &str, args: &Args) -> Result<()> {
    let value = vec![b'x'; args.value_size];
    let bytes = (args.messages as usize * args.value_size) as f64 / 1e6;
    let mut rates = Vec::new();
    for (phase, transactional) in [("idempotent", false), ("transactional", true)] {
        let topic = format!("bench-{phase}");
        create_topic(bootstrap, &topic, args.partitions)?;
        let acks = Arc::new(Acks::default());
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", bootstrap)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("batch.size", "1000000")
            .set("queue.buffering.max.kbytes", "1048576")
            .set("queue.buffering.max.messages", "1000000");
        if transactional {
            config.set("transactional.id", "sluice-bench");
        }
        let p: ThreadedProducer<Ctx> = config.create_with_context(Ctx(acks.clone()))?;
        let timeout = Duration::from_secs(60);
        if transactional {
            p.init_transactions(timeout)?;
            p.begin_transaction()?;
        }
        warm_up(&p, &topic, args.partitions, args.value_size)?;
        let mut committed = 0u64;
        let start = Instant::now();
        let mut opened = Instant::now();
        for i in 0..args.messages {
            send(
                &p,
                &topic,
                (i % args.partitions as u64) as i32,
                &value,
                None,
            )?;
            if transactional && opened.elapsed() >= Duration::from_millis(args.txn_ms) {
                // commit_transaction flushes what the transaction holds first.
                p.commit_transaction(timeout)?;
                committed += 1;
                p.begin_transaction()?;
                opened = Instant::now();
            }
        }
        if transactional {
            p.commit_transaction(timeout)?;
            committed += 1;
        } else {
            p.flush(Duration::from_secs(300))?;
        }
        let secs = start.elapsed().as_secs_f64();
        if acks.failed.load(Ordering::Relaxed) > 0 {
            bail!("{} produces failed", acks.failed.load(Ordering::Relaxed));
        }
        println!("{phase}_throughput_mb_s: {:.1}", bytes / secs);
        rates.push(bytes / secs);
        if transactional {
            println!("transactions_committed: {committed}");
            // Commit latency on its own: small transactions (a record per partition),
            // each timed from commit_transaction once its records are acknowledged,
            // so the time is EndTxn's and what the client waits for after it.
            let mut commits_us: Vec<u64> = Vec::new();
            for _ in 0..200 {
                p.begin_transaction()?;
                for partition in 0..args.partitions {
                    send(&p, &topic, partition, &value, None)?;
                }
                p.flush(timeout)?;
                let t = Instant::now();
                p.commit_transaction(timeout)?;
                commits_us.push(t.elapsed().as_micros() as u64);
            }
            commits_us.sort_unstable();
            println!(
                "commit_latency_p50_ms: {:.2}",
                percentile(&commits_us, 0.50)
            );
            println!(
                "commit_latency_p99_ms: {:.2}",
                percentile(&commits_us, 0.99)
            );
        }
    }
    println!("transactional_over_idempotent: {:.2}", rates[1] / rates[0]);
    Ok(())
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> Result<()> {
    futures::executor::block_on(async {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()?;
        let t = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        for r in admin.create_topics([&t], &AdminOptions::new()).await? {
            if let Err((name, e)) = r {
                bail!("create {name}: {e}");
            }
        }
        Ok(())
    })
}

fn consumer(bootstrap: &str, topic: &str, partitions: i32, offset: Offset) -> Result<BaseConsumer> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "500")
        .set("queued.max.messages.kbytes", "262144")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, offset)?;
    }
    c.assign(&tpl)?;
    Ok(c)
}

/// Reads everything phase 1 wrote with a fresh consumer; prints MB/s and GETs per
/// GiB read under `name`.
fn catch_up(name: &str, bootstrap: &str, args: &Args, own: Option<&Sluice>) -> Result<()> {
    let c = consumer(
        bootstrap,
        "bench-throughput",
        args.partitions,
        Offset::Beginning,
    )?;
    let gets_before = requests(own, "get");
    let start = Instant::now();
    let mut n = 0u64;
    let mut read_bytes = 0usize;
    let deadline = start + Duration::from_secs(600);
    while n < args.messages && Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            read_bytes += m?.payload_len();
            n += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    if n < args.messages {
        bail!("{name}: read only {n} of {} messages", args.messages);
    }
    println!("{name}_consume_mb_s: {:.1}", read_bytes as f64 / 1e6 / secs);
    println!("{name}_consume_msgs_s: {:.0}", n as f64 / secs);
    if let (Some(before), Some(after)) = (gets_before, requests(own, "get")) {
        let gib = read_bytes as f64 / (1u64 << 30) as f64;
        println!("{name}_object_gets: {}", after - before);
        println!("{name}_gets_per_gib_read: {:.0}", (after - before) / gib);
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut extra: Vec<&str> = args.broker_arg.iter().map(String::as_str).collect();
    if args.lake {
        extra.push("--compaction-interval-ms=1000");
    }
    let mut own = match &args.bootstrap {
        Some(_) => None,
        None if args.s3 => Some(Sluice::start_with(Some(S3Server::start()?), &extra)?),
        None => Some(Sluice::start_with(None, &extra)?),
    };
    let bootstrap = args
        .bootstrap
        .clone()
        .unwrap_or_else(|| own.as_ref().map(Sluice::bootstrap).unwrap_or_default());
    let mb = |bytes: f64| bytes / 1e6;
    let store = if args.s3 {
        "objects in S3 (moto)"
    } else {
        "local objects"
    };
    match &own {
        Some(_) => println!("broker: started by the benchmark (embedded metadata, {store})"),
        None => println!("broker: external"),
    }
    println!(
        "messages: {} x {} B over {} partitions, acks=all",
        args.messages, args.value_size, args.partitions
    );

    // 1. Throughput.
    create_topic(&bootstrap, "bench-throughput", args.partitions)?;
    let value = vec![b'x'; args.value_size];
    let acks = Arc::new(Acks::default());
    let p = producer(&bootstrap, acks.clone(), "5")?;
    warm_up(&p, "bench-throughput", args.partitions, args.value_size)?;
    acks.ok.store(0, Ordering::Relaxed);
    let puts_before = requests(own.as_ref(), "put");
    let start = Instant::now();
    for i in 0..args.messages {
        send(
            &p,
            "bench-throughput",
            (i % args.partitions as u64) as i32,
            &value,
            None,
        )?;
    }
    p.flush(Duration::from_secs(300))?;
    let secs = start.elapsed().as_secs_f64();
    let bytes = (args.messages as usize * args.value_size) as f64;
    if acks.failed.load(Ordering::Relaxed) > 0 {
        bail!("{} produces failed", acks.failed.load(Ordering::Relaxed));
    }
    println!("produce_throughput_mb_s: {:.1}", mb(bytes) / secs);
    println!(
        "produce_throughput_msgs_s: {:.0}",
        args.messages as f64 / secs
    );
    let gib = |b: f64| b / (1u64 << 30) as f64;
    if let (Some(before), Some(after)) = (puts_before, requests(own.as_ref(), "put")) {
        println!("object_puts: {}", after - before);
        println!("puts_per_gib: {:.0}", (after - before) / gib(bytes));
    }

    // With --lake, only: the same data as Parquet; fetches re-encode it from row
    // groups.
    if let (true, Some(broker)) = (args.lake, own.as_mut()) {
        alter_topic(&bootstrap, "bench-throughput", "sluice.lake.after.ms", "0")?;
        let folds = || broker_metric(Some(&*broker), "sluice_folds_total", "format=\"parquet\"");
        let start = Instant::now();
        let (mut last, mut stable) = (folds(), 0);
        while stable < 5 && start.elapsed() < Duration::from_secs(600) {
            std::thread::sleep(Duration::from_secs(1));
            let now = folds();
            stable = if now == last && now > Some(0.0) {
                stable + 1
            } else {
                0
            };
            last = now;
        }
        println!(
            "lake_fold_seconds: {:.1}",
            start.elapsed().as_secs_f64() - 5.0
        );
        println!("lake_files: {}", last.unwrap_or(0.0));
        broker.restart()?;
        catch_up("lake_cold_catchup", &bootstrap, &args, own.as_ref())?;
        catch_up("lake_warm_catchup", &bootstrap, &args, own.as_ref())?;
        return Ok(());
    }

    if args.transactions {
        return transactions(&bootstrap, &args);
    }

    // 2. Latency at a fixed rate, with a tailing consumer for end-to-end latency.
    create_topic(&bootstrap, "bench-latency", args.partitions)?;
    let tail = consumer(&bootstrap, "bench-latency", args.partitions, Offset::End)?;
    let e2e: Arc<Mutex<Vec<u64>>> = Arc::default();
    let expected = args.rate * args.rate_seconds;
    let e2e_w = e2e.clone();
    let reader = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut n = 0;
        while n < expected && Instant::now() < deadline {
            if let Some(Ok(m)) = tail.poll(Duration::from_millis(100)) {
                if let Some(b) = m.payload().and_then(|p| p.get(..16)) {
                    let sent = u128::from_be_bytes(b.try_into().unwrap_or([0; 16]));
                    if sent == 0 {
                        continue; // a warm-up record
                    }
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos());
                    if let Ok(mut l) = e2e_w.lock() {
                        l.push((now.saturating_sub(sent) / 1000) as u64);
                    }
                }
                n += 1;
            }
        }
    });
    std::thread::sleep(Duration::from_secs(1)); // let the consumer's first fetch start
    let lat = Arc::new(Acks::default());
    let p = producer(&bootstrap, lat.clone(), "0")?;
    warm_up(&p, "bench-latency", args.partitions, args.value_size)?;
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let start = Instant::now();
    let mut payload = vec![b'x'; args.value_size.max(16)];
    for i in 0..expected {
        let due = start + interval * i as u32;
        while Instant::now() < due {
            std::thread::sleep(Duration::from_micros(50));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        payload[..16].copy_from_slice(&now.to_be_bytes());
        send(
            &p,
            "bench-latency",
            (i % args.partitions as u64) as i32,
            &payload,
            Some(Instant::now()),
        )?;
    }
    p.flush(Duration::from_secs(60))?;
    let _ = reader.join();
    let mut produce_lat = lat
        .latencies_us
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    produce_lat.sort_unstable();
    let mut e2e_lat = e2e.lock().map(|l| l.clone()).unwrap_or_default();
    e2e_lat.sort_unstable();
    println!("latency_rate_msgs_s: {}", args.rate);
    println!(
        "produce_latency_p50_ms: {:.2}",
        percentile(&produce_lat, 0.50)
    );
    println!(
        "produce_latency_p99_ms: {:.2}",
        percentile(&produce_lat, 0.99)
    );
    println!(
        "produce_latency_p999_ms: {:.2}",
        percentile(&produce_lat, 0.999)
    );
    println!("e2e_latency_p50_ms: {:.2}", percentile(&e2e_lat, 0.50));
    println!("e2e_latency_p99_ms: {:.2}", percentile(&e2e_lat, 0.99));
    println!("e2e_latency_p999_ms: {:.2}", percentile(&e2e_lat, 0.999));
    println!("e2e_samples: {} of {expected}", e2e_lat.len());

    // 3. Catch-up consume of everything from phase 1, while it is in the tail; then,
    //    with a broker the benchmark started, again after a restart (tail and cache
    //    empty: every byte comes from the object store) and once more (cache warm).
    catch_up("catchup", &bootstrap, &args, own.as_ref())?;
    if let Some(broker) = own.as_mut() {
        broker.restart()?;
        catch_up("cold_catchup", &bootstrap, &args, own.as_ref())?;
        catch_up("warm_catchup", &bootstrap, &args, own.as_ref())?;
    }

    // 4. The same byte rate over few and many partitions costs the same PUTs.
    for &partitions in &args.put_rate_partitions {
        let topic = format!("bench-puts-{partitions}");
        create_topic(&bootstrap, &topic, partitions)?;
        let acks = Arc::new(Acks::default());
        let p = producer(&bootstrap, acks.clone(), "0")?;
        let before = requests(own.as_ref(), "put");
        let start = Instant::now();
        for i in 0..expected {
            let due = start + interval * i as u32;
            while Instant::now() < due {
                std::thread::sleep(Duration::from_micros(50));
            }
            send(&p, &topic, (i % partitions as u64) as i32, &value, None)?;
        }
        p.flush(Duration::from_secs(60))?;
        let secs = start.elapsed().as_secs_f64();
        if let (Some(before), Some(after)) = (before, requests(own.as_ref(), "put")) {
            println!(
                "puts_per_s_{partitions}_partitions: {:.1}",
                (after - before) / secs
            );
        }
    }
    Ok(())
}
