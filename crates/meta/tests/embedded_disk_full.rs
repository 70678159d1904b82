//! The embedded store on a full disk: a transaction whose log record cannot be
//! written fails and leaves nothing behind, so it never comes back on reopen and the
//! commits after it (once there is room again) survive a reopen.
//!
//! The store's directory is a 256 KiB tmpfs this test mounts (the test command runs
//! as root, as Kafka's own disk-full tests need a small filesystem too).

#![allow(clippy::unwrap_used)] // a test: panicking is how it fails

use std::path::Path;
use std::process::Command;

use sluice_meta::{EmbeddedStore, MetaStore, Op, Txn};

struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("running mount");
        assert!(
            status.success(),
            "cannot mount a tmpfs at {} (the test needs root): {status}",
            dir.path().display()
        );
        Self(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

async fn put(store: &EmbeddedStore, key: &str, len: usize) -> Result<(), sluice_meta::MetaError> {
    store
        .txn(Txn::when(vec![]).then(vec![Op::put(key.to_string(), vec![b'x'; len])]))
        .await
        .map(|_| ())
}

#[tokio::test]
async fn a_write_that_finds_the_disk_full_leaves_nothing_behind() {
    let fs = Tmpfs::mount("256k");
    let data = fs.path().join("meta");
    std::fs::create_dir(&data).unwrap();
    let store = EmbeddedStore::open(&data).unwrap();
    put(&store, "before", 100).await.unwrap();
    // Leave about 40 KiB free, then write a 100 KiB record.
    let filler = fs.path().join("filler");
    std::fs::write(&filler, vec![0u8; 200 << 10]).unwrap();
    assert!(
        put(&store, "too-big", 100 << 10).await.is_err(),
        "the disk was not full"
    );
    assert!(store.get("too-big").await.unwrap().is_none());
    std::fs::remove_file(&filler).unwrap();
    for i in 0..20 {
        put(&store, &format!("after-{i}"), 1_000).await.unwrap();
    }
    drop(store);

    let store = EmbeddedStore::open(&data).unwrap();
    assert!(store.get("before").await.unwrap().is_some());
    assert!(
        store.get("too-big").await.unwrap().is_none(),
        "the failed transaction came back"
    );
    let after = store.range("after-").await.unwrap();
    assert_eq!(
        after.len(),
        20,
        "commits after the failed one were lost on reopen"
    );
}
