//! The groups one coordinator holds, whichever protocol: a map by group id behind a
//! mutex, with what the persistence task and the admin APIs need of every group.
//! [`super::group::Groups`] and [`super::consumer::ConsumerGroups`] each wrap one.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use kafka_protocol::error::ResponseError;

use sluice_engine::keyspace::Stored;

use super::persist::GroupRecord;

/// What the registry needs of a group.
pub trait Kept {
    fn has_members(&self) -> bool;
    /// When the group last became empty (wall clock, ms), if it did.
    fn empty_since_ms(&self) -> Option<i64>;
    /// The "changed since last written" mark.
    fn dirty(&mut self) -> &mut bool;
    /// What the metadata store keeps of it.
    fn stored(&self) -> GroupRecord;
}

pub struct Registry<G> {
    groups: Mutex<BTreeMap<String, G>>,
}

impl<G> Default for Registry<G> {
    fn default() -> Self {
        Self {
            groups: Mutex::new(BTreeMap::new()),
        }
    }
}

impl<G: Kept> Registry<G> {
    pub(crate) fn lock(&self) -> MutexGuard<'_, BTreeMap<String, G>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on a group, if it exists.
    pub fn with_group<T>(&self, group_id: &str, f: impl FnOnce(&G) -> T) -> Option<T> {
        self.lock().get(group_id).map(f)
    }

    /// Whether the group exists here with members.
    pub fn has_members(&self, group_id: &str) -> bool {
        self.with_group(group_id, G::has_members) == Some(true)
    }

    /// Deletes an empty group; NON_EMPTY_GROUP if it has members.
    pub fn delete(&self, group_id: &str) -> Result<(), ResponseError> {
        let mut groups = self.lock();
        if groups.get(group_id).is_some_and(G::has_members) {
            return Err(ResponseError::NonEmptyGroup);
        }
        groups.remove(group_id);
        Ok(())
    }

    /// The groups changed since the last call, clearing their marks. Their state is
    /// taken when written ([`Self::stored_bytes`], under the group's lock).
    pub fn take_dirty(&self) -> Vec<String> {
        self.lock()
            .iter_mut()
            .filter_map(|(id, g)| std::mem::take(g.dirty()).then(|| id.clone()))
            .collect()
    }

    /// What the metadata store would keep of the group now.
    pub fn stored_bytes(&self, group_id: &str) -> Option<Vec<u8>> {
        self.with_group(group_id, |g| g.stored().encode().to_vec())
    }

    /// Marks a group for writing again (its last write failed).
    pub fn mark_dirty(&self, group_id: &str) {
        if let Some(g) = self.lock().get_mut(group_id) {
            *g.dirty() = true;
        }
    }

    /// Installs a group read from the metadata store, unless one is already here.
    pub fn load(&self, group_id: &str, make: impl FnOnce() -> G) {
        self.lock().entry(group_id.to_string()).or_insert_with(make);
    }

    /// `None` if the group is not here; `Some(None)` while it has members;
    /// `Some(Some(t))` if it has been empty since `t` (ms; 0 if never known).
    pub fn empty_since(&self, group_id: &str) -> Option<Option<i64>> {
        self.with_group(group_id, |g| {
            (!g.has_members()).then(|| g.empty_since_ms().unwrap_or(0))
        })
    }
}
