//! The S3 object store against a real S3-compatible server (moto): conditional writes
//! behave atomically, and a write-ahead object round-trips.

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, UpdateVersion};
use sluice_e2e::{S3Server, AWS_TEST_ENV};
use sluice_storage::wal::{read_slices, WalObjectBuilder};
use sluice_storage::{open_object_store, ObjectStoreUrl, S3Options};

async fn store(s3: &S3Server) -> anyhow::Result<Arc<dyn ObjectStore>> {
    use_test_credentials();
    let url = ObjectStoreUrl::parse(&format!("s3://{}/conformance", s3.bucket))?;
    let opts = S3Options {
        endpoint: Some(s3.endpoint()),
        ..Default::default()
    };
    Ok(open_object_store(&url, &opts).await?)
}

/// aws-config reads credentials from this process's environment; every test sets the
/// same fixed, local-only values, so concurrent tests agree.
fn use_test_credentials() {
    for (k, v) in AWS_TEST_ENV {
        std::env::set_var(k, v);
    }
}

fn create() -> PutOptions {
    PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_writes_are_atomic() -> anyhow::Result<()> {
    let s3 = S3Server::start()?;
    let store = store(&s3).await?;
    let key = Path::from("cond/once");

    let first = store
        .put_opts(&key, Bytes::from_static(b"1").into(), create())
        .await?;
    let again = store
        .put_opts(&key, Bytes::from_static(b"2").into(), create())
        .await;
    assert!(
        matches!(again, Err(object_store::Error::AlreadyExists { .. })),
        "create-only must refuse an existing key: {again:?}"
    );
    let body = store.get(&key).await?.bytes().await?;
    assert_eq!(&body[..], b"1", "the losing create changed nothing");

    // If-Match: an update with the current ETag wins, a stale one is refused.
    let current = UpdateVersion {
        e_tag: first.e_tag.clone(),
        version: None,
    };
    let updated = store
        .put_opts(
            &key,
            Bytes::from_static(b"3").into(),
            PutMode::Update(current.clone()).into(),
        )
        .await?;
    assert_ne!(updated.e_tag, first.e_tag);
    let stale = store
        .put_opts(
            &key,
            Bytes::from_static(b"4").into(),
            PutMode::Update(current).into(),
        )
        .await;
    assert!(
        matches!(stale, Err(object_store::Error::Precondition { .. })),
        "a stale If-Match must fail: {stale:?}"
    );

    // Many racing creates of one key: exactly one wins.
    let racers = (0..8).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .put_opts(
                    &Path::from("cond/race"),
                    Bytes::from(vec![i as u8; 1024]).into(),
                    create(),
                )
                .await
        })
    });
    let outcomes = futures::future::join_all(racers).await;
    let wins = outcomes.iter().filter(|o| matches!(o, Ok(Ok(_)))).count();
    let losses = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(Err(object_store::Error::AlreadyExists { .. }))))
        .count();
    assert_eq!((wins, losses), (1, 7));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wal_object_round_trips_through_s3() -> anyhow::Result<()> {
    let s3 = S3Server::start()?;
    let store = store(&s3).await?;
    let mut b = WalObjectBuilder::new();
    b.add_slice(
        uuid::Uuid::from_bytes([1; 16]),
        0,
        0,
        9,
        100,
        [Bytes::from(vec![7u8; 300_000])],
    );
    b.add_slice(
        uuid::Uuid::from_bytes([2; 16]),
        5,
        10,
        19,
        200,
        [Bytes::from_static(b"tail")],
    );
    let (payload, slices, len) = b.finish();
    let key = Path::from("wal/0/1/roundtrip.wal");
    store.put_opts(&key, payload, create()).await?;
    let whole = store.get(&key).await?.bytes().await?;
    assert_eq!(whole.len() as u64, len);
    assert_eq!(read_slices(key.as_ref(), &whole)?, slices);
    let s = slices[1];
    let ranged = store.get_range(&key, s.start..s.start + s.len).await?;
    assert_eq!(&ranged[..], b"tail");
    assert!(s3
        .keys("conformance/wal/")?
        .iter()
        .any(|k| k.ends_with("roundtrip.wal")));
    Ok(())
}
