//! Data survives restarts: a graceful SIGTERM, and a SIGKILL right after the acks.

use rdkafka::producer::FutureRecord;
use sluice_e2e::clients::{consume_all, create_topic, producer, u32_payloads};
use sluice_e2e::Sluice;

async fn produce(bootstrap: &str, from: u32, to: u32) -> anyhow::Result<()> {
    let p = producer(
        bootstrap,
        &[
            ("linger.ms", "2"),
            ("acks", "all"),
            ("enable.idempotence", "true"),
        ],
    )?;
    let mut pending = Vec::new();
    for i in from..to {
        let v = i.to_be_bytes();
        let record = FutureRecord::<(), [u8]>::to("durable")
            .payload(&v[..])
            .partition((i % 2) as i32);
        pending.push(p.send_result(record).map_err(|(e, _)| e)?);
    }
    for f in pending {
        f.await?.map_err(|(e, _)| e)?;
    }
    Ok(())
}

async fn read_back(bootstrap: String, n: usize) -> anyhow::Result<Vec<u32>> {
    let msgs =
        tokio::task::spawn_blocking(move || consume_all(&bootstrap, "durable", 2, n)).await??;
    Ok(u32_payloads(&msgs))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_sigterm_and_sigkill() -> anyhow::Result<()> {
    let mut sluice = Sluice::start(&[])?;
    let bootstrap = sluice.bootstrap();
    create_topic(&bootstrap, "durable", 2, &[]).await?;

    produce(&bootstrap, 0, 20_000).await?;
    assert!(
        sluice.wal_objects() > 0,
        "objects are in the configured store"
    );
    sluice.restart()?; // SIGTERM
    assert_eq!(
        read_back(bootstrap.clone(), 20_000).await?,
        (0..20_000).collect::<Vec<_>>()
    );

    produce(&bootstrap, 20_000, 40_000).await?;
    sluice.kill()?; // SIGKILL right after the last ack
    sluice.start_again()?;
    assert_eq!(
        read_back(bootstrap.clone(), 40_000).await?,
        (0..40_000).collect::<Vec<_>>()
    );

    // Offsets continue densely after the crash.
    produce(&bootstrap, 40_000, 41_000).await?;
    assert_eq!(
        read_back(bootstrap.clone(), 41_000).await?,
        (0..41_000).collect::<Vec<_>>()
    );
    Ok(())
}
