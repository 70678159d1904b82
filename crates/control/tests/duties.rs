//! The controller's duties run while this broker holds the controller key, stop when
//! another controller holds it, and start again with fresh state when it wins again.

#![allow(clippy::unwrap_used)] // a test: panicking is how it fails

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_control::membership::Membership;
use sluice_control::Duty;
use sluice_engine::keyspace::{BrokerRecord, ControllerRecord, Stored};
use sluice_engine::{Engine, EngineConfig};
use sluice_meta::{EmbeddedStore, MetaStore, Op};

/// What the duty saw: leaderships started, rounds run, leaderships ended.
#[derive(Default)]
struct Seen {
    started: AtomicUsize,
    rounds: AtomicUsize,
    ended: AtomicUsize,
}

/// One leadership's state: counts its end when dropped.
struct Leadership {
    seen: Arc<Seen>,
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.seen.ended.fetch_add(1, Ordering::SeqCst);
    }
}

async fn until(what: &str, ok: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duties_run_only_while_this_broker_is_the_controller() {
    let meta: Arc<dyn MetaStore> = Arc::new(EmbeddedStore::in_memory());
    let engine = Engine::open(
        EngineConfig::default(),
        meta.clone(),
        Arc::new(object_store::memory::InMemory::new()),
    )
    .await
    .unwrap();
    let record = BrokerRecord {
        id: 0,
        host: "127.0.0.1".into(),
        port: 9092,
        rack: None,
        leaving: false,
        roles: Default::default(),
        http: None,
    };
    let membership = Membership::start(engine.clone(), record, Duration::from_secs(6), None);
    let seen = Arc::new(Seen::default());
    let leading = sluice_control::Leading::default();
    let duty = {
        let seen = seen.clone();
        Duty::every(
            "counting",
            Duration::from_millis(20),
            move || {
                seen.started.fetch_add(1, Ordering::SeqCst);
                Leadership { seen: seen.clone() }
            },
            |state: &mut Leadership| {
                Box::pin(async move {
                    state.seen.rounds.fetch_add(1, Ordering::SeqCst);
                })
            },
        )
    };
    tokio::spawn(sluice_control::run(
        engine.clone(),
        membership.lease(),
        vec![duty],
        leading.clone(),
    ));
    until("the duty runs", || seen.rounds.load(Ordering::SeqCst) >= 3).await;
    assert!(leading.get());
    assert_eq!(seen.started.load(Ordering::SeqCst), 1);
    assert_eq!(seen.ended.load(Ordering::SeqCst), 0);

    // Another broker's process holds the key: this one is deposed at its next round
    // and cannot campaign while the key is there.
    let key = engine.keys().controller();
    let other = ControllerRecord {
        broker: 7,
        owner: uuid::Uuid::new_v4(),
    };
    meta.txn(sluice_meta::Txn::when(vec![]).then(vec![Op::put(key.clone(), other.encode())]))
        .await
        .unwrap();
    until("the duty stops", || seen.ended.load(Ordering::SeqCst) == 1).await;
    until("leading is cleared", || !leading.get()).await;
    let stopped_at = seen.rounds.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        seen.rounds.load(Ordering::SeqCst),
        stopped_at,
        "a deposed controller's duty ran"
    );

    // The key goes: this broker is elected again, and the duty starts afresh.
    meta.txn(sluice_meta::Txn::when(vec![]).then(vec![Op::Delete(key)]))
        .await
        .unwrap();
    until("the duty runs again", || {
        seen.started.load(Ordering::SeqCst) == 2 && seen.rounds.load(Ordering::SeqCst) > stopped_at
    })
    .await;
    assert_eq!(seen.ended.load(Ordering::SeqCst), 1);
}
