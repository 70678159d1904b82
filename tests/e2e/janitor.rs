//! The janitor on a real broker: an object left by a crash between its PUT and its
//! commit is deleted after the grace period; committed data is untouched.

use std::time::{Duration, Instant};

use rdkafka::producer::FutureRecord;
use sluice_e2e::clients::{consume_all, create_topic, producer, u32_payloads};
use sluice_e2e::Sluice;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphaned_object_is_deleted_and_committed_data_stays() -> anyhow::Result<()> {
    let sluice = Sluice::start(&[
        "--log-retention-check-interval-ms=200",
        "--wal-orphan-grace-ms=1000",
    ])?;
    let bootstrap = sluice.bootstrap();
    create_topic(&bootstrap, "kept", 1, &[]).await?;
    let p = producer(&bootstrap, &[("acks", "all")])?;
    for i in 0u32..100 {
        let v = i.to_be_bytes();
        p.send(
            FutureRecord::<(), [u8]>::to("kept").payload(&v[..]),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    }
    let committed = sluice.wal_objects();
    sluice.put_orphan("01ORPHANEDBYACRASH0000000")?;
    assert_eq!(sluice.wal_objects(), committed + 1);

    let deadline = Instant::now() + Duration::from_secs(20);
    while sluice.wal_objects() > committed && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        sluice.wal_objects(),
        committed,
        "the orphan is gone, nothing else"
    );
    assert_eq!(
        sluice.metric("sluice_janitor_deleted_total", "kind=\"orphaned_object\"")?,
        1.0
    );
    let msgs =
        tokio::task::spawn_blocking(move || consume_all(&bootstrap, "kept", 1, 100)).await??;
    assert_eq!(u32_payloads(&msgs), (0..100).collect::<Vec<_>>());
    Ok(())
}
