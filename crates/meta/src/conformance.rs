//! The conformance suite every [`MetaStore`] implementation must pass.
//!
//! Implementations call [`run_all`] from their own tests with a fresh, empty store
//! (the etcd backend runs it against a real etcd). Each check uses its own key prefix
//! so checks never see each other's keys.

// A test suite: failing loudly on the first broken expectation is its job.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;

use crate::{Compare, MetaStore, Op, Txn, WatchEvent};

/// Runs every check; panics with the failing check's message.
pub async fn run_all(store: &dyn MetaStore) {
    get_put_range(store).await;
    a_range_larger_than_a_response(store).await;
    compares_guard_writes(store).await;
    revisions_and_versions(store).await;
    delete_prefix(store).await;
    leases_expire_and_revoke(store).await;
    watch_sees_changes_in_order(store).await;
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

pub async fn get_put_range(store: &dyn MetaStore) {
    assert!(store.get("c1/missing").await.unwrap().is_none());
    for k in ["c1/b", "c1/a", "c1/c", "c1x", "c0"] {
        crate::put(store, k, b(k)).await.unwrap();
    }
    let keys: Vec<String> = store
        .range("c1/")
        .await
        .unwrap()
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(
        keys,
        ["c1/a", "c1/b", "c1/c"],
        "range is prefix-bounded and ordered"
    );
    assert_eq!(store.get("c1/b").await.unwrap().unwrap().value, b("c1/b"));
}

/// A range whose keys and values add up to more than one response may carry (etcd's
/// gRPC client decodes at most 4 MiB) still returns every key, in order.
pub async fn a_range_larger_than_a_response(store: &dyn MetaStore) {
    const KEYS: usize = 1_100;
    let value = Bytes::from(vec![b'v'; 5_000]);
    let mut puts = Vec::new();
    for i in 0..KEYS {
        puts.push(Op::put(format!("c7/{i:05}"), value.clone()));
        if puts.len() == 100 {
            store
                .txn(Txn::when(vec![]).then(std::mem::take(&mut puts)))
                .await
                .unwrap();
        }
    }
    let all = store.range("c7/").await.unwrap();
    assert_eq!(all.len(), KEYS, "every key of a 5.5 MB range");
    assert!(all.windows(2).all(|w| w[0].key < w[1].key), "in key order");
    assert!(all.iter().all(|kv| kv.value == value));
}

pub async fn compares_guard_writes(store: &dyn MetaStore) {
    let create = |v: &str| {
        Txn::when(vec![Compare::Missing("c2/k".into())])
            .then(vec![Op::put("c2/k", b(v))])
            .otherwise(vec![Op::Get("c2/k".into())])
    };
    let first = store.txn(create("one")).await.unwrap();
    assert!(first.succeeded);
    let second = store.txn(create("two")).await.unwrap();
    assert!(
        !second.succeeded,
        "create-if-missing must fail on an existing key"
    );
    assert_eq!(second.gets[0].as_ref().unwrap().value, b("one"));

    let cas = |expect: &str, new: &str| {
        Txn::when(vec![Compare::ValueEquals("c2/k".into(), b(expect))])
            .then(vec![Op::put("c2/k", b(new))])
    };
    assert!(!store.txn(cas("wrong", "x")).await.unwrap().succeeded);
    assert!(store.txn(cas("one", "three")).await.unwrap().succeeded);
    assert_eq!(store.get("c2/k").await.unwrap().unwrap().value, b("three"));

    // A failed compare writes nothing, even among several successful ones.
    let rev = store.get("c2/k").await.unwrap().unwrap().mod_revision;
    let mixed = Txn::when(vec![
        Compare::ModRevision("c2/k".into(), rev),
        Compare::Missing("c2/k".into()),
    ])
    .then(vec![Op::put("c2/other", b("x"))]);
    assert!(!store.txn(mixed).await.unwrap().succeeded);
    assert!(store.get("c2/other").await.unwrap().is_none());
    let fenced = Txn::when(vec![Compare::ModRevision("c2/k".into(), rev)])
        .then(vec![Op::put("c2/other", b("y"))]);
    assert!(store.txn(fenced).await.unwrap().succeeded);
    assert!(
        store
            .txn(Txn::when(vec![Compare::ModRevision("c2/none".into(), 0)]))
            .await
            .unwrap()
            .succeeded
    );
}

pub async fn revisions_and_versions(store: &dyn MetaStore) {
    let r1 = crate::put(store, "c3/k", b("1")).await.unwrap();
    let r2 = crate::put(store, "c3/k", b("2")).await.unwrap();
    assert_eq!(r2, r1 + 1, "one revision per writing transaction");
    let both = store
        .txn(Txn::when(vec![]).then(vec![Op::put("c3/a", b("a")), Op::put("c3/b", b("b"))]))
        .await
        .unwrap();
    assert_eq!(both.revision, r2 + 1, "a multi-key txn is one revision");
    let k = store.get("c3/k").await.unwrap().unwrap();
    assert_eq!((k.create_revision, k.mod_revision, k.version), (r1, r2, 2));
    let a = store.get("c3/a").await.unwrap().unwrap();
    assert_eq!(a.mod_revision, both.revision);
}

pub async fn delete_prefix(store: &dyn MetaStore) {
    for k in ["c4/p/1", "c4/p/2", "c4/q"] {
        crate::put(store, k, b("x")).await.unwrap();
    }
    store
        .txn(Txn::when(vec![]).then(vec![
            Op::DeletePrefix("c4/p/".into()),
            Op::Delete("c4/none".into()),
        ]))
        .await
        .unwrap();
    let left: Vec<String> = store
        .range("c4/")
        .await
        .unwrap()
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(left, ["c4/q"]);
}

pub async fn leases_expire_and_revoke(store: &dyn MetaStore) {
    let put_leased = |key: &str, lease| {
        Txn::when(vec![]).then(vec![Op::Put {
            key: key.into(),
            value: b("v"),
            lease: Some(lease),
        }])
    };
    let short = store.grant_lease(Duration::from_secs(1)).await.unwrap();
    store.txn(put_leased("c5/short", short)).await.unwrap();
    let long = store.grant_lease(Duration::from_secs(30)).await.unwrap();
    store.txn(put_leased("c5/long", long)).await.unwrap();
    store.keep_alive(long).await.unwrap();
    assert!(store.get("c5/short").await.unwrap().is_some());

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.get("c5/short").await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "leased key outlived its lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        store.keep_alive(short).await.is_err(),
        "an expired lease cannot be kept alive"
    );
    assert!(store.get("c5/long").await.unwrap().is_some());
    store.revoke_lease(long).await.unwrap();
    assert!(store.get("c5/long").await.unwrap().is_none());
}

pub async fn watch_sees_changes_in_order(store: &dyn MetaStore) {
    let mut rx = store.watch("c6/").await.unwrap();
    crate::put(store, "c6/a", b("1")).await.unwrap();
    crate::put(store, "other", b("1")).await.unwrap();
    crate::put(store, "c6/a", b("2")).await.unwrap();
    store
        .txn(Txn::when(vec![]).then(vec![Op::Delete("c6/a".into())]))
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("watch event")
            .expect("watch open");
        seen.push(ev);
    }
    match (&seen[0], &seen[1], &seen[2]) {
        (WatchEvent::Put(a), WatchEvent::Put(b2), WatchEvent::Delete { key, revision }) => {
            assert_eq!((&a.value[..], &b2.value[..]), (&b"1"[..], &b"2"[..]));
            assert!(a.mod_revision < b2.mod_revision && b2.mod_revision < *revision);
            assert_eq!(key, "c6/a");
        }
        other => panic!("unexpected watch events {other:?}"),
    }
}
