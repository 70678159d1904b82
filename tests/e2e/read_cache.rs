//! The read cache: consumers behind the in-memory tail read through it; a re-read of
//! warm data costs no GET; a read cold on memory is served by the disk tier; and
//! losing the cache directory loses nothing.

use rdkafka::producer::FutureRecord;
use sluice_e2e::clients::{consume_all, create_topic, producer, u32_payloads};
use sluice_e2e::Sluice;

const TOPIC: &str = "cached";
const N: u32 = 30_000;

async fn produce(bootstrap: &str) -> anyhow::Result<()> {
    let p = producer(bootstrap, &[("linger.ms", "5"), ("acks", "all")])?;
    let mut pending = Vec::new();
    for i in 0..N {
        let v = i.to_be_bytes();
        let record = FutureRecord::<(), [u8]>::to(TOPIC)
            .payload(&v[..])
            .partition((i % 3) as i32);
        pending.push(p.send_result(record).map_err(|(e, _)| e)?);
    }
    for f in pending {
        f.await?.map_err(|(e, _)| e)?;
    }
    Ok(())
}

async fn read_all(bootstrap: String) -> anyhow::Result<Vec<u32>> {
    let msgs = tokio::task::spawn_blocking(move || consume_all(&bootstrap, TOPIC, 3, N as usize))
        .await??;
    let mut values = u32_payloads(&msgs);
    values.sort_unstable();
    Ok(values)
}

fn gets(s: &Sluice) -> anyhow::Result<f64> {
    s.metric("sluice_object_store_requests_total", "kind=\"get\"")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_reads_cost_no_gets_and_the_cache_directory_is_disposable() -> anyhow::Result<()> {
    let cache = tempfile::tempdir()?;
    let cache_dir = cache.path().join("blocks");
    let cache_flag = format!("--cache-dir={}", cache_dir.display());
    // A memory tier of two blocks, so re-reads come from the disk tier.
    let mut sluice = Sluice::start(&[
        &cache_flag,
        "--cache-block-bytes=65536",
        "--cache-memory-bytes=131072",
        "--cache-disk-bytes=67108864",
    ])?;
    let bootstrap = sluice.bootstrap();
    create_topic(&bootstrap, TOPIC, 3, &[]).await?;
    produce(&bootstrap).await?;
    let all: Vec<u32> = (0..N).collect();

    // After a restart nothing is in the tail: every read goes through the cache.
    sluice.restart()?;
    let cold = gets(&sluice)?;
    assert_eq!(read_all(bootstrap.clone()).await?, all);
    let after_cold = gets(&sluice)?;
    assert!(
        after_cold > cold,
        "the first read fetched from the object store"
    );

    // Blocks evicted from memory are on disk: the re-read costs no GET.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(read_all(bootstrap.clone()).await?, all);
    assert_eq!(gets(&sluice)?, after_cold, "a warm re-read costs no GET");
    let disk_hits = sluice.metric("sluice_cache_lookups_total", "tier=\"disk\"")?;
    assert!(disk_hits > 0.0, "the disk tier served blocks");

    // Losing the cache directory loses nothing.
    sluice.kill()?;
    std::fs::remove_dir_all(&cache_dir)?;
    sluice.start_again()?;
    assert_eq!(read_all(bootstrap).await?, all);
    Ok(())
}
