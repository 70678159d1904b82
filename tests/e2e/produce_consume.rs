//! 100k records over several partitions through librdkafka, with every codec,
//! keys, headers (null values too) and timestamps, read back byte-exact with dense
//! per-partition offsets; offsets by timestamp; the idempotent producer.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Timestamp, TopicPartitionList};
use sluice_e2e::clients::{config, consume_all, create_topic, producer, u32_payloads};
use sluice_e2e::Sluice;

const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];
const PER_CODEC: usize = 20_000;
const PARTITIONS: i32 = 4;
const BASE_TS: i64 = 1_700_000_000_000;

fn value_of(codec: usize, i: usize) -> Vec<u8> {
    // Varied sizes and content so codecs and batch boundaries are exercised.
    let len = 10 + (i * 37) % 700;
    (0..len).map(|j| (codec * 31 + i * 7 + j) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_records_every_codec_byte_exact() -> anyhow::Result<()> {
    let sluice = Sluice::start(&[])?;
    let topic = "codecs";
    create_topic(&sluice.bootstrap(), topic, PARTITIONS, &[]).await?;

    let mut acked: HashMap<(i32, i64), (usize, usize)> = HashMap::new();
    for (c, codec) in CODECS.iter().enumerate() {
        let p = producer(
            &sluice.bootstrap(),
            &[
                ("compression.type", codec),
                ("linger.ms", "5"),
                ("acks", "all"),
            ],
        )?;
        let mut pending = Vec::with_capacity(PER_CODEC);
        for i in 0..PER_CODEC {
            let key = format!("{codec}-{i}");
            let value = value_of(c, i);
            let headers = if i % 3 == 0 {
                OwnedHeaders::new()
                    .insert(Header {
                        key: "codec",
                        value: Some(codec.as_bytes()),
                    })
                    .insert(Header {
                        key: "null",
                        value: None::<&[u8]>,
                    })
            } else {
                OwnedHeaders::new()
            };
            let record = FutureRecord::to(topic)
                .key(&key)
                .payload(&value)
                .partition((i % PARTITIONS as usize) as i32)
                .timestamp(BASE_TS + i as i64)
                .headers(headers);
            match p.send_result(record) {
                Ok(f) => pending.push((i, f)),
                Err((e, _)) => anyhow::bail!("enqueue failed: {e}"),
            }
        }
        for (i, f) in pending {
            let d = f
                .await?
                .map_err(|(e, _)| anyhow::anyhow!("delivery failed: {e}"))?;
            assert!(
                acked.insert((d.partition, d.offset), (c, i)).is_none(),
                "offset acked twice"
            );
        }
    }
    let total = CODECS.len() * PER_CODEC;
    assert_eq!(acked.len(), total);

    let bootstrap = sluice.bootstrap();
    let msgs =
        tokio::task::spawn_blocking(move || consume_all(&bootstrap, topic, PARTITIONS, total))
            .await??;
    let mut next: HashMap<i32, i64> = HashMap::new();
    let mut last_index: HashMap<(i32, usize), usize> = HashMap::new();
    for m in &msgs {
        let expected_offset = next.entry(m.partition()).or_insert(0);
        assert_eq!(m.offset(), *expected_offset, "offsets dense from 0");
        *expected_offset += 1;
        let &(c, i) = acked
            .get(&(m.partition(), m.offset()))
            .expect("read only acked records");
        assert_eq!(m.key(), Some(format!("{}-{i}", CODECS[c]).as_bytes()));
        assert_eq!(m.payload(), Some(&value_of(c, i)[..]));
        assert_eq!(m.timestamp(), Timestamp::CreateTime(BASE_TS + i as i64));
        let headers: Vec<(String, Option<Vec<u8>>)> = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        if i % 3 == 0 {
            assert_eq!(
                headers,
                vec![
                    ("codec".to_string(), Some(CODECS[c].as_bytes().to_vec())),
                    ("null".to_string(), None)
                ]
            );
        } else {
            assert!(headers.is_empty());
        }
        // One producer's records to one partition keep their order.
        if let Some(prev) = last_index.insert((m.partition(), c), i) {
            assert!(prev < i, "order within a producer and partition");
        }
    }
    assert_eq!(next.values().sum::<i64>() as usize, total);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_for_times_and_watermarks() -> anyhow::Result<()> {
    let sluice = Sluice::start(&[])?;
    let p = producer(
        &sluice.bootstrap(),
        &[("linger.ms", "20"), ("compression.type", "zstd")],
    )?;
    let mut pending = Vec::new();
    for i in 0..3000i64 {
        let record = FutureRecord::<(), [u8]>::to("times")
            .payload(b"x")
            .partition(0)
            .timestamp(1_000_000 + i * 10);
        pending.push(p.send_result(record).map_err(|(e, _)| e)?);
    }
    for f in pending {
        f.await?.map_err(|(e, _)| e)?;
    }
    let bootstrap = sluice.bootstrap();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let c: BaseConsumer = config(&bootstrap, &[("group.id", "unused")]).create()?;
        for (ts, want) in [
            (0, 0),
            (1_000_000, 0),
            (1_000_001, 1),
            (1_015_000, 1500),
            (1_029_990, 2999),
        ] {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset("times", 0, rdkafka::Offset::Offset(ts))?;
            let got = c.offsets_for_times(tpl, Duration::from_secs(10))?;
            let offset = got.elements()[0].offset();
            assert_eq!(offset, rdkafka::Offset::Offset(want), "timestamp {ts}");
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("times", 0, rdkafka::Offset::Offset(2_000_000))?;
        let got = c.offsets_for_times(tpl, Duration::from_secs(10))?;
        assert_eq!(
            got.elements()[0].offset(),
            rdkafka::Offset::End,
            "no record that late"
        );
        assert_eq!(
            c.fetch_watermarks("times", 0, Duration::from_secs(10))?,
            (0, 3000)
        );
        Ok(())
    })
    .await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producer_writes_each_record_once() -> anyhow::Result<()> {
    let sluice = Sluice::start(&[])?;
    create_topic(&sluice.bootstrap(), "idem", 3, &[]).await?;
    let p = producer(
        &sluice.bootstrap(),
        &[
            ("enable.idempotence", "true"),
            ("linger.ms", "1"),
            ("max.in.flight.requests.per.connection", "5"),
        ],
    )?;
    let mut pending = Vec::new();
    for i in 0..30_000u32 {
        let v = i.to_be_bytes();
        let record = FutureRecord::<(), [u8]>::to("idem")
            .payload(&v[..])
            .partition((i % 3) as i32);
        pending.push(p.send_result(record).map_err(|(e, _)| e)?);
    }
    for f in pending {
        f.await?.map_err(|(e, _)| e)?;
    }
    let bootstrap = sluice.bootstrap();
    let msgs =
        tokio::task::spawn_blocking(move || consume_all(&bootstrap, "idem", 3, 30_000)).await??;
    let seen = u32_payloads(&msgs);
    assert_eq!(seen, (0..30_000).collect::<Vec<_>>());
    Ok(())
}
