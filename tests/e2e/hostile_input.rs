//! Random bytes, truncated frames, absurd lengths and hostile array counts on the
//! Kafka port: connections close, the broker never panics nor allocates what a frame
//! claims, and keeps serving real clients.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rdkafka::producer::FutureRecord;
use sluice_e2e::clients::producer;
use sluice_e2e::Sluice;

fn send(addr: &str, bytes: &[u8]) {
    if let Ok(mut s) = TcpStream::connect(addr) {
        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
        let _ = s.write_all(bytes);
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_never_takes_the_broker_down() -> anyhow::Result<()> {
    let mut sluice = Sluice::start(&[])?;
    let addr = sluice.bootstrap();

    // A 2 GiB length prefix, then nothing.
    send(&addr, &[0x7f, 0xff, 0xff, 0xff]);
    // Negative length.
    send(&addr, &[0xff, 0xff, 0xff, 0xf0, 1, 2, 3]);
    // Truncated frame: claims 100 bytes, sends 10, hangs up.
    send(&addr, &[0, 0, 0, 100, 0, 3, 0, 1, 0, 0, 0, 1, 0, 0]);
    // Metadata v0 whose topic array claims i32::MAX entries.
    send(
        &addr,
        &[
            0, 0, 0, 14, 0, 3, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff,
        ],
    );
    // Produce v9 (flexible) with a compact array claiming 2^32-2 topics.
    send(
        &addr,
        &[
            0, 0, 0, 20, 0, 0, 0, 9, 0, 0, 0, 1, 0xff, 0xff, 0, 0, 0xff, 0xff, 0, 0, 0x75, 0x30,
            0xff, 0xff,
        ],
    );
    // Random frames with valid-looking headers, and pure noise.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for i in 0..2_000i32 {
        let body_len = rng.random_range(0..300);
        let mut frame = Vec::with_capacity(body_len + 12);
        frame.extend_from_slice(&((body_len + 8) as i32).to_be_bytes());
        frame.extend_from_slice(&rng.random_range(0i16..70).to_be_bytes());
        frame.extend_from_slice(&rng.random_range(0i16..14).to_be_bytes());
        frame.extend_from_slice(&i.to_be_bytes());
        frame.extend((0..body_len).map(|_| rng.random::<u8>()));
        send(&addr, &frame);
        if i % 10 == 0 {
            let noise: Vec<u8> = (0..rng.random_range(1..200))
                .map(|_| rng.random())
                .collect();
            send(&addr, &noise);
        }
    }
    assert!(sluice.is_running(), "broker died; log:\n{}", sluice.log());
    assert!(!sluice.log().contains("panicked"), "a panic was logged");
    let peak = sluice.peak_rss_kib().unwrap_or(0);
    assert!(
        peak > 0 && peak < 512 * 1024,
        "peak RSS {peak} KiB: a claimed size was allocated"
    );

    // Still serving real clients.
    let p = producer(&addr, &[])?;
    let d = p
        .send(
            FutureRecord::<(), [u8]>::to("after-garbage").payload(b"ok"),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    assert_eq!(d.offset, 0);
    Ok(())
}

mod crafted_batches {
    //! Batches with a correct CRC whose contents lie: about their record count, or
    //! about how much their compressed records expand. Each is refused on produce,
    //! and nothing the broker does afterwards decodes it.

    use std::io::Write as _;
    use std::time::Duration;

    use bytes::Bytes;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;
    use sluice_e2e::clients::create_topic;
    use sluice_e2e::wire::{self, Connection, RawBatch};
    use sluice_e2e::Sluice;

    /// Kafka's CORRUPT_MESSAGE, MESSAGE_TOO_LARGE and INVALID_RECORD.
    const REFUSED: [i16; 3] = [2, 10, 87];

    fn produce(conn: &mut Connection, topic: &str, records: Bytes) -> anyhow::Result<i16> {
        conn.produce(topic, 0, records)
    }

    /// The offset ListOffsets answers for `timestamp` on partition 0.
    fn list_offsets_at(conn: &mut Connection, topic: &str, timestamp: i64) -> anyhow::Result<i64> {
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.into())))
                .with_partitions(vec![
                    list_offsets_request::ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(timestamp),
                ])]);
        match conn.call(ApiKey::ListOffsets, 7, RequestKind::ListOffsets(req))? {
            ResponseKind::ListOffsets(r) => Ok(r.topics[0].partitions[0].offset),
            other => anyhow::bail!("unexpected response {other:?}"),
        }
    }

    /// Records whose bytes expand `factor`-fold: one record claims a value of
    /// `plain_len` bytes, all zeros.
    fn bomb_body(plain_len: usize) -> Vec<u8> {
        let mut r = Vec::new();
        r.push(0);
        wire::varint(&mut r, 0);
        wire::varint(&mut r, 0);
        wire::varint(&mut r, 1);
        r.push(b'k');
        wire::varint(&mut r, plain_len as i64);
        let mut out = Vec::new();
        wire::varint(&mut out, (r.len() + plain_len + 1) as i64);
        out.extend_from_slice(&r);
        out
    }

    fn zstd_bomb(plain_len: usize) -> Vec<u8> {
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).expect("zstd");
        enc.write_all(&bomb_body(plain_len)).expect("zstd");
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..plain_len >> 20 {
            enc.write_all(&zeros).expect("zstd");
        }
        enc.write_all(&[0]).expect("zstd"); // the header count
        enc.finish().expect("zstd")
    }

    fn gzip_bomb(plain_len: usize) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&bomb_body(plain_len)).expect("gzip");
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..plain_len >> 20 {
            enc.write_all(&zeros).expect("gzip");
        }
        enc.write_all(&[0]).expect("gzip");
        enc.finish().expect("gzip")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lying_counts_and_bombs_are_refused() -> anyhow::Result<()> {
        let mut sluice = Sluice::start(&["--compaction-interval-ms", "200"])?;
        let addr = sluice.bootstrap();
        create_topic(&addr, "plain", 1, &[]).await?;
        create_topic(&addr, "compacted", 1, &[("cleanup.policy", "compact")]).await?;
        create_topic(&addr, "lake-now", 1, &[("sluice.lake.after.ms", "0")]).await?;
        let mut conn = Connection::open(&addr)?;

        // 61 bytes claiming i32::MAX records, CRC correct.
        let liar = RawBatch {
            last_offset_delta: i32::MAX - 1,
            record_count: i32::MAX,
            ..Default::default()
        }
        .encode(&[]);
        assert_eq!(liar.len(), 61);
        let two = |second_delta| {
            let mut r = wire::record(0, Some(b"a"), b"1");
            r.extend(wire::record(second_delta, Some(b"b"), b"2"));
            r
        };
        let claiming = |count: i32, attributes: i16| RawBatch {
            attributes,
            last_offset_delta: count - 1,
            record_count: count,
            ..Default::default()
        };
        for (what, batch) in [
            ("the count liar", liar),
            // Two records present, three claimed.
            ("a short batch", claiming(3, 0).encode(&two(1))),
            ("offset deltas that skip", claiming(2, 0).encode(&two(5))),
            (
                "codec 7",
                claiming(1, 7).encode(&wire::record(0, None, b"x")),
            ),
        ] {
            let code = produce(&mut conn, "plain", batch)?;
            assert!(REFUSED.contains(&code), "{what} answered {code}");
        }

        // Whatever was stored, looking up offsets by time decodes it.
        for ts in [0, -3] {
            list_offsets_at(&mut conn, "plain", ts)?;
        }
        assert!(sluice.is_running(), "broker died; log:\n{}", sluice.log());

        // Bombs of 8 GiB (zstd) and 512 MiB (gzip), under 1 MiB on the wire.
        let zstd = RawBatch {
            attributes: 4,
            ..Default::default()
        }
        .encode(&zstd_bomb(8 << 30));
        let gzip = RawBatch {
            attributes: 1,
            ..Default::default()
        }
        .encode(&gzip_bomb(512 << 20));
        for (name, batch) in [("zstd", &zstd), ("gzip", &gzip)] {
            assert!(
                batch.len() < 1_048_588,
                "{name} bomb is {} bytes",
                batch.len()
            );
            for topic in ["compacted", "lake-now"] {
                let code = produce(&mut conn, topic, batch.clone())?;
                assert!(
                    REFUSED.contains(&code),
                    "{name} bomb to {topic} answered {code}"
                );
            }
        }
        // A fold of the lake topic would decode whatever was stored.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(sluice.is_running(), "broker died; log:\n{}", sluice.log());
        let peak = sluice.peak_rss_kib().unwrap_or(0);
        assert!(peak < 512 * 1024, "peak RSS {peak} KiB");

        // And the topics still take real records.
        let ok = wire::record(0, Some(b"k"), b"v");
        for topic in ["plain", "compacted", "lake-now"] {
            let code = produce(&mut conn, topic, RawBatch::default().encode(&ok))?;
            assert_eq!(code, 0, "valid batch to {topic}");
        }
        Ok(())
    }

    /// Kafka refuses a partition's data holding more than one batch (Produce v3+):
    /// the request is refused whole, nothing of it appended.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_batches_for_one_partition_are_refused_whole() -> anyhow::Result<()> {
        let sluice = Sluice::start(&[])?;
        let addr = sluice.bootstrap();
        create_topic(&addr, "multi", 1, &[]).await?;
        let mut conn = Connection::open(&addr)?;
        let one = RawBatch::default().encode(&wire::record(0, Some(b"a"), b"1"));
        assert_eq!(produce(&mut conn, "multi", one.clone())?, 0);
        let mut two = one.to_vec();
        two.extend_from_slice(&one);
        let code = produce(&mut conn, "multi", Bytes::from(two))?;
        assert_eq!(code, 87, "two batches answered {code}, not INVALID_RECORD");
        assert_eq!(
            list_offsets_at(&mut conn, "multi", -1)?,
            1,
            "part of it was appended"
        );
        Ok(())
    }
}

mod fetch_limits {
    //! A fetch response stays within the request's `max_bytes` once it holds data: only
    //! the first batch of the first partition with data may exceed it (Kafka's rule,
    //! which librdkafka relies on: it drops a connection that sends more).

    use bytes::Bytes;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;
    use sluice_e2e::clients::create_topic;
    use sluice_e2e::wire::{self, Connection, RawBatch};
    use sluice_e2e::Sluice;

    fn produce(conn: &mut Connection, topic: &str, partition: i32, records: Bytes) -> i16 {
        conn.produce(topic, partition, records)
            .expect("a produce response")
    }

    /// Bytes of records per partition in a Fetch of `partitions` from offset 0.
    fn fetch(conn: &mut Connection, topic: &str, partitions: i32, max_bytes: i32) -> Vec<usize> {
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(100)
            .with_min_bytes(1)
            .with_max_bytes(max_bytes)
            .with_topics(vec![fetch_request::FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.into())))
                .with_partitions(
                    (0..partitions)
                        .map(|p| {
                            fetch_request::FetchPartition::default()
                                .with_partition(p)
                                .with_fetch_offset(0)
                                .with_partition_max_bytes(1 << 30)
                        })
                        .collect(),
                )]);
        match conn.call(ApiKey::Fetch, 11, RequestKind::Fetch(req)) {
            Ok(ResponseKind::Fetch(r)) => {
                let mut out = vec![0; partitions as usize];
                for p in &r.responses[0].partitions {
                    assert_eq!(p.error_code, 0, "partition {}", p.partition_index);
                    out[p.partition_index as usize] = p.records.as_ref().map_or(0, Bytes::len);
                }
                out
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_response_with_data_stays_within_max_bytes() -> anyhow::Result<()> {
        let sluice = Sluice::start(&[])?;
        let addr = sluice.bootstrap();
        create_topic(&addr, "big-batches", 2, &[]).await?;
        let mut conn = Connection::open(&addr)?;
        let big = RawBatch::default().encode(&wire::record(0, None, &vec![7u8; 900_000]));
        for partition in 0..2 {
            for _ in 0..2 {
                assert_eq!(produce(&mut conn, "big-batches", partition, big.clone()), 0);
            }
        }
        let size = big.len();
        // Each partition holds two batches of ~900 KB, over a 1 MB response limit:
        // only the first batch of the first partition comes back.
        assert_eq!(fetch(&mut conn, "big-batches", 2, 1_000_000), vec![size, 0]);
        // Room for two batches: both of the first partition's.
        assert_eq!(
            fetch(&mut conn, "big-batches", 2, 2 * size as i32),
            vec![2 * size, 0]
        );
        // max_bytes 0 (or less) is no license for everything: one batch.
        assert_eq!(fetch(&mut conn, "big-batches", 2, 0), vec![size, 0]);
        assert_eq!(fetch(&mut conn, "big-batches", 2, -1), vec![size, 0]);
        Ok(())
    }
}

mod connection_limits {
    //! 5,000 connections that send nothing: those over `--max-connections` are closed
    //! as soon as they are accepted, the rest once idle for
    //! `--connections-max-idle-ms`; a client that keeps talking is served throughout.
    //! Before, every connection was kept for ever, however many and however idle.

    use std::io::{ErrorKind, Read};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, RequestKind, ResponseKind};
    use sluice_e2e::wire::Connection;
    use sluice_e2e::Sluice;

    fn api_versions(conn: &mut Connection) -> anyhow::Result<()> {
        match conn.call(
            ApiKey::ApiVersions,
            3,
            RequestKind::ApiVersions(ApiVersionsRequest::default()),
        )? {
            ResponseKind::ApiVersions(r) if r.error_code == 0 => Ok(()),
            other => anyhow::bail!("unexpected {other:?}"),
        }
    }

    /// How many of `streams` the broker has closed.
    fn closed(streams: &[TcpStream]) -> usize {
        let mut byte = [0u8; 1];
        streams
            .iter()
            .filter(|s| match (&mut &**s).read(&mut byte) {
                Ok(0) => true,
                Err(e) => e.kind() != ErrorKind::WouldBlock,
                Ok(_) => false,
            })
            .count()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_connections_are_closed_and_live_ones_served() -> anyhow::Result<()> {
        const IDLE: usize = 5_000;
        let sluice = Sluice::start(&["--max-connections=1000", "--connections-max-idle-ms=3000"])?;
        let addr = sluice.bootstrap();
        let mut live = Connection::open(&addr)?;
        api_versions(&mut live)?;
        let mut idle = Vec::with_capacity(IDLE);
        let started = Instant::now();
        for i in 0..IDLE {
            let s = TcpStream::connect(&addr)?;
            s.set_nonblocking(true)?;
            idle.push(s);
            if i % 250 == 0 {
                api_versions(&mut live)?;
            }
        }
        eprintln!("{IDLE} connections opened in {:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(500)).await;
        api_versions(&mut live)?;
        let over = closed(&idle);
        assert!(
            over >= IDLE - 999,
            "{over} of {IDLE} idle connections closed; at most 1,000 may be open"
        );
        // Idle ones go after 3 s; the live one, talking every 500 ms, stays.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut gone = over;
        while gone < IDLE {
            assert!(
                Instant::now() < deadline,
                "{gone} of {IDLE} idle connections closed after 10 s"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
            api_versions(&mut live)?;
            gone = closed(&idle);
        }
        api_versions(&mut live)?;
        api_versions(&mut Connection::open(&addr)?)?;
        let rss = sluice.peak_rss_kib().unwrap_or(0);
        assert!(rss < 512 << 10, "peak RSS {rss} KiB");
        let metrics = sluice.http_get("/metrics")?;
        assert!(
            metrics.contains("sluice_connections_closed_total{reason=\"idle\"}"),
            "{metrics}"
        );
        Ok(())
    }
}
