//! The etcd backend passes the same conformance suite as the embedded store, against
//! a real etcd (Debian's etcd-server) that this test starts on loopback and stops.

#![allow(clippy::unwrap_used)] // a test: panicking is how it fails

use std::time::{Duration, Instant};

use sluice_meta::etcd::{EtcdOptions, EtcdStore, EtcdTls};
use sluice_meta::{MetaStore, Op, Txn};
use sluice_testkit::{free_port, Etcd};

async fn connect(etcd: &Etcd) -> EtcdStore {
    connect_with(EtcdOptions {
        endpoints: vec![etcd.client_url().to_string()],
        ..Default::default()
    })
    .await
}

async fn connect_with(opts: EtcdOptions) -> EtcdStore {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match EtcdStore::connect(&opts).await {
            Ok(s) => return s,
            Err(e) if Instant::now() > deadline => panic!("etcd did not come up: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_passes_conformance() {
    let etcd = Etcd::start().unwrap();
    let store = connect(&etcd).await;
    sluice_meta::conformance::run_all(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_over_tls_with_a_client_certificate_passes_conformance() {
    let etcd = Etcd::start_tls().unwrap();
    let read = |name: &str| std::fs::read(etcd.tls_file(name)).unwrap();
    let store = connect_with(EtcdOptions {
        endpoints: vec![etcd.client_url().to_string()],
        tls: Some(EtcdTls {
            ca_pem: Some(read("ca.pem")),
            identity: Some((read("client.pem"), read("client.key"))),
        }),
        ..Default::default()
    })
    .await;
    sluice_meta::conformance::run_all(&store).await;

    // Without the client certificate etcd refuses the connection.
    let refused = EtcdStore::connect(&EtcdOptions {
        endpoints: vec![etcd.client_url().to_string()],
        tls: Some(EtcdTls {
            ca_pem: Some(read("ca.pem")),
            identity: None,
        }),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(2),
        ..Default::default()
    })
    .await;
    assert!(refused.is_err(), "etcd requires a client certificate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_page_through_thousands_of_keys() {
    let etcd = Etcd::start().unwrap();
    let store = connect(&etcd).await;
    // 1,500 keys: two pages of 1,000. Transactions of 100 ops stay under etcd's
    // default --max-txn-ops of 128.
    for chunk in 0..15 {
        let ops = (0..100)
            .map(|i| Op::put(format!("many/{:05}", chunk * 100 + i), "v"))
            .collect();
        store.txn(Txn::when(vec![]).then(ops)).await.unwrap();
    }
    store
        .txn(Txn::when(vec![]).then(vec![Op::put("many0", "outside")]))
        .await
        .unwrap();
    let keys: Vec<String> = store
        .range("many/")
        .await
        .unwrap()
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(keys.len(), 1500, "every page read, nothing past the prefix");
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "in key order, no repeats"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_etcd_is_an_error_not_a_hang() {
    let opts = EtcdOptions {
        endpoints: vec![format!("http://127.0.0.1:{}", free_port())],
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(10), EtcdStore::connect(&opts)).await;
    assert!(matches!(result, Ok(Err(_))), "connect must fail, not hang");
    assert!(started.elapsed() < Duration::from_secs(10));
}
