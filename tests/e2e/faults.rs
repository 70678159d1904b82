//! Object-store failures injected with `--object-store-faults`: flushes fail, producers
//! retry, and every acknowledged record is read back exactly once at its offset.

use std::collections::HashMap;

use rdkafka::producer::FutureRecord;
use rdkafka::Message;
use sluice_e2e::clients::{consume_all, create_topic, producer};
use sluice_e2e::Sluice;

const ROUNDS: u32 = 30;
const PER_ROUND: u32 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_flushes_lose_and_duplicate_nothing() -> anyhow::Result<()> {
    // Half of all requests fail: many flushes fail, none for long.
    let sluice = Sluice::start(&["--object-store-faults=error-rate=0.5,latency=2ms"])?;
    let bootstrap = sluice.bootstrap();
    create_topic(&bootstrap, "faulty", 3, &[]).await?;
    let p = producer(
        &bootstrap,
        &[
            ("enable.idempotence", "true"),
            ("linger.ms", "2"),
            ("message.timeout.ms", "120000"),
        ],
    )?;
    // Each round is acknowledged before the next is sent, so there are at least
    // ROUNDS flushes: all of them succeeding by chance has odds of 2^-30.
    let mut acked = HashMap::new();
    for round in 0..ROUNDS {
        let mut pending = Vec::new();
        for i in round * PER_ROUND..(round + 1) * PER_ROUND {
            let v = i.to_be_bytes();
            let record = FutureRecord::<(), [u8]>::to("faulty")
                .payload(&v[..])
                .partition((i % 3) as i32);
            pending.push((i, p.send_result(record).map_err(|(e, _)| e)?));
        }
        for (i, f) in pending {
            let d = f.await?.map_err(|(e, _)| e)?;
            let first = acked.insert((d.partition, d.offset), i).is_none();
            assert!(first, "offset acknowledged twice");
        }
    }
    let failed_puts = sluice.metric(
        "sluice_object_store_requests_total",
        "kind=\"put\",outcome=\"error\"",
    )?;
    assert!(failed_puts > 0.0, "PUT failures were injected");
    assert!(
        sluice.log().contains("flush failed"),
        "flushes failed and producers retried"
    );

    let total = (ROUNDS * PER_ROUND) as usize;
    let msgs =
        tokio::task::spawn_blocking(move || consume_all(&bootstrap, "faulty", 3, total)).await??;
    let mut next = HashMap::new();
    for m in &msgs {
        let offset = next.entry(m.partition()).or_insert(0i64);
        assert_eq!(m.offset(), *offset, "offsets dense");
        *offset += 1;
        let v = u32::from_be_bytes(m.payload().unwrap_or_default().try_into()?);
        assert_eq!(
            acked.get(&(m.partition(), m.offset())),
            Some(&v),
            "record at its acknowledged offset"
        );
    }
    assert_eq!(msgs.len(), total);
    Ok(())
}
