//! Fencing: what a guarded metadata write compares so that it cannot apply once the
//! writer has lost the right to make it (model: SlateDB's `FenceableManifest`, one
//! type that owns the epoch compares instead of each writer building them).
//!
//! Two things fence a write:
//! - **The broker generation** (`brokers/<id>/epoch`, a [`Generation`]): a new
//!   process with the same broker id claims a new number and owner, and the
//!   controller bumps the number when it takes partitions away. A write guarded by
//!   the generation applies only while this process still holds the one it read.
//! - **The janitor's horizon** (`gc/horizon`): the janitor bumps it before deleting
//!   unreferenced objects. A write that makes an object referenced (a manifest, a
//!   checkpoint) compares the horizon's revision seen *before* the object was
//!   written, so it cannot commit a reference to an object the janitor may be
//!   deleting.
//!
//! [`Fences`] is this process's live state (owned by the engine, updated by cluster
//! sync); a [`Fence`] is a snapshot of it, taken before the work it guards begins,
//! and yields the compares.

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::Arc;

use sluice_meta::{Compare, MetaError, MetaStore};
use uuid::Uuid;

use super::{Generation, Keys, Stored};

#[derive(Debug)]
struct FenceKeys {
    generation: String,
    gc_horizon: String,
}

/// This process's fencing state: its identity in the generation key and the
/// janitor's horizon revision as last read.
#[derive(Debug)]
pub struct Fences {
    keys: Arc<FenceKeys>,
    owner: Uuid,
    gc_rev: AtomicI64,
}

impl Fences {
    pub fn new(keys: &Keys, broker: i32, owner: Uuid) -> Self {
        Self {
            keys: Arc::new(FenceKeys {
                generation: keys.generation(broker),
                gc_horizon: keys.gc_horizon(),
            }),
            owner,
            gc_rev: AtomicI64::new(0),
        }
    }

    /// This process's identity in its generation key.
    pub fn owner(&self) -> Uuid {
        self.owner
    }

    /// Records the janitor's horizon revision (read at every cluster sync and after
    /// the janitor's own bump).
    pub fn set_gc_horizon(&self, rev: i64) {
        self.gc_rev.store(rev, Relaxed);
    }

    /// Reads the janitor's horizon revision from the store and records it.
    pub async fn refresh_gc_horizon(&self, meta: &dyn MetaStore) -> Result<(), MetaError> {
        let rev = meta
            .get(&self.keys.gc_horizon)
            .await?
            .map_or(0, |kv| kv.mod_revision);
        self.set_gc_horizon(rev);
        Ok(())
    }

    /// A snapshot for work done under broker generation `number`: take it before the
    /// work reads or writes anything its commit depends on.
    pub fn at(&self, number: u64) -> Fence {
        Fence {
            keys: self.keys.clone(),
            generation: Generation {
                number,
                owner: self.owner,
            },
            gc_rev: self.gc_rev.load(Relaxed),
        }
    }
}

/// The generation and horizon one piece of work started under.
#[derive(Debug, Clone)]
pub struct Fence {
    keys: Arc<FenceKeys>,
    generation: Generation,
    gc_rev: i64,
}

impl Fence {
    /// The broker generation number it was taken under.
    pub fn generation(&self) -> u64 {
        self.generation.number
    }

    /// Holds while this process still has the generation: for writes only a current
    /// leader or coordinator may make (group state, committed offsets).
    pub fn still_leader(&self) -> Compare {
        Compare::ValueEquals(self.keys.generation.clone(), self.generation.encode())
    }

    /// Holds while the janitor has not moved its horizon since: for writes that make
    /// an object referenced.
    pub fn gc_unmoved(&self) -> Compare {
        Compare::ModRevision(self.keys.gc_horizon.clone(), self.gc_rev)
    }

    /// Both: a leader's write that references objects (a manifest, a checkpoint).
    pub fn leader_and_gc(&self) -> Vec<Compare> {
        vec![self.still_leader(), self.gc_unmoved()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_meta::embedded::EmbeddedStore;
    use sluice_meta::{MetaStore, Op, Txn};

    /// Every compare a fence yields refuses the write once what it guards moved, and
    /// lets it through while nothing did.
    #[tokio::test]
    async fn fenced_writes_fail_once_the_generation_or_the_horizon_moves() {
        let meta = EmbeddedStore::in_memory();
        let keys = Keys::new("t");
        let owner = Uuid::new_v4();
        let fences = Fences::new(&keys, 1, owner);
        let gen_key = keys.generation(1);
        let put = |key: &str, v: Vec<u8>| Txn::when(vec![]).then(vec![Op::put(key, v)]);
        let g1 = Generation { number: 1, owner };
        meta.txn(put(&gen_key, g1.encode().to_vec())).await.unwrap();
        let rev = meta
            .txn(put(&keys.gc_horizon(), b"0".to_vec()))
            .await
            .unwrap()
            .revision;
        fences.set_gc_horizon(rev);

        let write = |fence: Fence, compares: fn(&Fence) -> Vec<Compare>| {
            Txn::when(compares(&fence)).then(vec![Op::put("/t/x", b"v".to_vec())])
        };
        let f = fences.at(1);
        assert_eq!(f.generation(), 1);
        assert!(
            meta.txn(write(f.clone(), Fence::leader_and_gc))
                .await
                .unwrap()
                .succeeded
        );

        // The janitor bumps its horizon: writes referencing objects are refused,
        // generation-only writes still apply.
        meta.txn(put(&keys.gc_horizon(), b"1".to_vec()))
            .await
            .unwrap();
        assert!(
            !meta
                .txn(write(f.clone(), Fence::leader_and_gc))
                .await
                .unwrap()
                .succeeded
        );
        assert!(
            meta.txn(write(f.clone(), |f| vec![f.still_leader()]))
                .await
                .unwrap()
                .succeeded
        );

        // The controller bumps the generation: every leader write is refused.
        let g2 = Generation { number: 2, owner };
        meta.txn(put(&gen_key, g2.encode().to_vec())).await.unwrap();
        assert!(
            !meta
                .txn(write(f.clone(), |f| vec![f.still_leader()]))
                .await
                .unwrap()
                .succeeded
        );
        // A fence taken under the new generation applies; one of another process
        // with the same number does not.
        assert!(
            meta.txn(write(fences.at(2), |f| vec![f.still_leader()]))
                .await
                .unwrap()
                .succeeded
        );
        let other = Fences::new(&keys, 1, Uuid::new_v4());
        assert!(
            !meta
                .txn(write(other.at(2), |f| vec![f.still_leader()]))
                .await
                .unwrap()
                .succeeded
        );
    }
}
