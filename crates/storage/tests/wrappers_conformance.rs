//! The wrappers around an object store (`MeteredStore`, `FaultyStore`) pass the same
//! conformance suite as the stores they wrap: object_store's own `integration`
//! tests, as its `ThrottledStore` and `InMemory` run them. A wrapper that dropped an
//! option (a conditional put's mode, a range, a version) or mangled a listing would
//! fail here before any broker test saw it.

#![allow(clippy::unwrap_used)] // a test: panicking is how it fails

use std::sync::Arc;

use object_store::integration::*;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::ObjectStore;
use sluice_storage::faults::{FaultSpec, FaultyStore};
use sluice_storage::metered::{MeteredStore, StoreMetrics};

/// The suite's single-object and listing tests (multipart is passed through by
/// both wrappers and exercised by the broker's own tests).
async fn conformance(store: &dyn ObjectStore, supports_update: bool) {
    put_get_delete_list(store).await;
    list_with_offset_exclusivity(store).await;
    get_opts(store).await;
    list_uses_directories_correctly(store).await;
    list_with_delimiter(store).await;
    rename_and_copy(store).await;
    copy_if_not_exists(store).await;
    stream_get(store).await;
    put_opts(store, supports_update).await;
}

fn metered(inner: Arc<dyn ObjectStore>) -> MeteredStore {
    MeteredStore::new(inner, Arc::new(StoreMetrics::default()))
}

/// A spec that injects nothing, so every call still goes through the wrapper.
fn faulty(inner: Arc<dyn ObjectStore>) -> FaultyStore {
    FaultyStore::new(inner, FaultSpec::default())
}

fn local(dir: &tempfile::TempDir) -> Arc<dyn ObjectStore> {
    Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap())
}

#[tokio::test]
async fn the_stores_themselves_pass() {
    conformance(&InMemory::new(), true).await;
    let dir = tempfile::tempdir().unwrap();
    conformance(local(&dir).as_ref(), false).await;
}

#[tokio::test]
async fn metered_store_passes_like_what_it_wraps() {
    conformance(&metered(Arc::new(InMemory::new())), true).await;
    let dir = tempfile::tempdir().unwrap();
    conformance(&metered(local(&dir)), false).await;
}

#[tokio::test]
async fn faulty_store_without_faults_passes_like_what_it_wraps() {
    conformance(&faulty(Arc::new(InMemory::new())), true).await;
    let dir = tempfile::tempdir().unwrap();
    conformance(&faulty(local(&dir)), false).await;
}

#[tokio::test]
async fn the_wrappers_stacked_as_the_broker_stacks_them_pass() {
    // `--object-store-faults` wraps the store; the metered wrapper goes outside it.
    let stacked = metered(Arc::new(faulty(Arc::new(InMemory::new()))));
    conformance(&stacked, true).await;
}
