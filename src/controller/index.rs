//! In-memory caches fed by watch streams, indexed the way the reconciler reads them.
//!
//! kube's reflector `Store` holds whole objects and answers only by name; the reconciler of one
//! namespace needs "every ServiceAccount in namespace X" without scanning 30,000 of them, and only
//! a few fields of each. These indexes keep compact views, grouped by namespace.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use kube::runtime::watcher::Event;

/// A view of an object, as kept by an index.
pub trait Keyed {
    fn namespace(&self) -> &str;
    fn name(&self) -> &str;
    fn resource_version(&self) -> Option<&str>;
}

/// Implements [`Keyed`] for views with `namespace`, `name` and `resource_version` fields.
macro_rules! keyed {
    ($($view:ty),+) => {$(
        impl Keyed for $view {
            fn namespace(&self) -> &str {
                &self.namespace
            }
            fn name(&self) -> &str {
                &self.name
            }
            fn resource_version(&self) -> Option<&str> {
                self.resource_version.as_deref()
            }
        }
    )+};
}

keyed!(crate::core::model::ServiceAccountView, crate::core::model::NetworkPolicyView, crate::core::model::ReportView);

/// Per namespace, its objects sorted by name. A namespace holds a handful (3 ServiceAccounts, 2
/// policies, a Report): a sorted `Vec` costs 8 bytes per object where a `BTreeMap` allocated a
/// ~400-byte node per namespace plus a copy of every name (issue #15's memory goal).
type Groups<V> = HashMap<String, Vec<Arc<V>>>;

/// Views of namespaced objects, grouped by namespace.
pub struct NamespacedIndex<V> {
    groups: RwLock<Groups<V>>,
    /// Objects of a re-list in progress; swapped in whole when it completes, so a relist never
    /// shows a half-filled cache.
    relist: RwLock<Option<Groups<V>>>,
    synced: AtomicBool,
}

impl<V> Default for NamespacedIndex<V> {
    fn default() -> Self {
        Self { groups: RwLock::default(), relist: RwLock::default(), synced: AtomicBool::new(false) }
    }
}

fn insert<V: Keyed>(groups: &mut Groups<V>, view: V) {
    let group = match groups.get_mut(view.namespace()) {
        Some(group) => group,
        None => groups.entry(view.namespace().to_owned()).or_default(),
    };
    match group.binary_search_by(|v| v.name().cmp(view.name())) {
        Ok(at) => group[at] = Arc::new(view),
        Err(at) => group.insert(at, Arc::new(view)),
    }
}

fn find<'a, V: Keyed>(group: &'a [Arc<V>], name: &str) -> Option<&'a Arc<V>> {
    group.binary_search_by(|v| v.name().cmp(name)).ok().map(|at| &group[at])
}

impl<V: Keyed> NamespacedIndex<V> {
    /// Applies one watch event, converting objects to views with `view`. When a relist after the
    /// first completes, returns the namespaces whose objects differ from before it (changed,
    /// created or deleted while the watch was down), so they can be reconciled at once.
    pub fn apply<K>(&self, event: &Event<K>, view: impl Fn(&K) -> V) -> Vec<String> {
        match event {
            Event::Apply(obj) => insert(&mut write(&self.groups), view(obj)),
            Event::Delete(obj) => {
                let v = view(obj);
                let mut groups = write(&self.groups);
                if let Some(group) = groups.get_mut(v.namespace()) {
                    if let Ok(at) = group.binary_search_by(|o| o.name().cmp(v.name())) {
                        group.remove(at);
                    }
                    if group.is_empty() {
                        groups.remove(v.namespace());
                    }
                }
            }
            Event::Init => *write(&self.relist) = Some(Groups::new()),
            Event::InitApply(obj) => {
                if let Some(buffer) = write(&self.relist).as_mut() {
                    insert(buffer, view(obj));
                }
            }
            Event::InitDone => {
                let mut changed = Vec::new();
                if let Some(buffer) = write(&self.relist).take() {
                    let mut groups = write(&self.groups);
                    if self.synced.load(Ordering::Acquire) {
                        changed = changed_groups(&groups, &buffer);
                    }
                    *groups = buffer;
                }
                self.synced.store(true, Ordering::Release);
                return changed;
            }
        }
        Vec::new()
    }

    /// Every object in `namespace`, ordered by name.
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<V>> {
        read(&self.groups).get(namespace).cloned().unwrap_or_default()
    }

    /// One object.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<V>> {
        read(&self.groups).get(namespace).and_then(|g| find(g, name)).cloned()
    }

    /// The initial list has completed.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// How many objects the index holds.
    pub fn len(&self) -> usize {
        read(&self.groups).values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Namespaces whose objects (by name and resourceVersion) differ between `old` and `new`.
fn changed_groups<V: Keyed>(old: &Groups<V>, new: &Groups<V>) -> Vec<String> {
    let versions = |g: Option<&Vec<Arc<V>>>| -> Vec<(String, Option<String>)> {
        g.into_iter().flatten().map(|v| (v.name().to_owned(), v.resource_version().map(str::to_owned))).collect()
    };
    let mut names: Vec<&String> = old.keys().chain(new.keys()).collect();
    names.sort();
    names.dedup();
    names.into_iter().filter(|ns| versions(old.get(*ns)) != versions(new.get(*ns))).cloned().collect()
}

/// Cluster-scoped objects by name (the profiles).
pub struct NamedIndex<V> {
    items: RwLock<BTreeMap<String, Arc<V>>>,
    relist: RwLock<Option<BTreeMap<String, Arc<V>>>>,
    synced: AtomicBool,
}

impl<V> Default for NamedIndex<V> {
    fn default() -> Self {
        Self { items: RwLock::default(), relist: RwLock::default(), synced: AtomicBool::new(false) }
    }
}

impl<V> NamedIndex<V> {
    /// Applies one watch event; `name` and `view` read the object. Returns true when a relist after
    /// the first completed (what changed while the watch was down is then unknown).
    pub fn apply<K>(&self, event: &Event<K>, name: impl Fn(&K) -> String, view: impl Fn(&K) -> V) -> bool {
        match event {
            Event::Apply(obj) => {
                write(&self.items).insert(name(obj), Arc::new(view(obj)));
            }
            Event::Delete(obj) => {
                write(&self.items).remove(&name(obj));
            }
            Event::Init => *write(&self.relist) = Some(BTreeMap::new()),
            Event::InitApply(obj) => {
                if let Some(buffer) = write(&self.relist).as_mut() {
                    buffer.insert(name(obj), Arc::new(view(obj)));
                }
            }
            Event::InitDone => {
                if let Some(buffer) = write(&self.relist).take() {
                    *write(&self.items) = buffer;
                }
                return self.synced.swap(true, Ordering::AcqRel);
            }
        }
        false
    }

    /// Every item, ordered by name.
    pub fn all(&self) -> Vec<Arc<V>> {
        read(&self.items).values().cloned().collect()
    }

    pub fn get(&self, name: &str) -> Option<Arc<V>> {
        read(&self.items).get(name).cloned()
    }

    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }
}

// A poisoned lock means a panic while holding it; the data (plain maps) is still consistent enough
// to keep serving, and the next relist rebuilds it.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::ServiceAccountView;

    fn sa(ns: &str, name: &str) -> ServiceAccountView {
        ServiceAccountView {
            namespace: ns.into(),
            name: name.into(),
            uid: None,
            resource_version: None,
            automount_token: None,
            automount_owned: false,
            guarded: false,
        }
    }

    #[test]
    fn groups_by_namespace_and_forgets_deleted_objects() {
        let index = NamespacedIndex::default();
        let id = |v: &ServiceAccountView| v.clone();
        index.apply(&Event::Apply(sa("a", "default")), id);
        index.apply(&Event::Apply(sa("a", "builder")), id);
        index.apply(&Event::Apply(sa("b", "default")), id);
        let names = |ns: &str| index.in_namespace(ns).iter().map(|v| v.name.clone()).collect::<Vec<_>>();
        assert_eq!(names("a"), ["builder", "default"]);
        index.apply(&Event::Delete(sa("a", "builder")), id);
        assert_eq!(names("a"), ["default"]);
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn relist_replaces_the_cache_only_when_complete() {
        let index = NamespacedIndex::default();
        let id = |v: &ServiceAccountView| v.clone();
        index.apply(&Event::Init, id);
        index.apply(&Event::InitApply(sa("a", "default")), id);
        assert!(!index.is_synced());
        index.apply(&Event::InitDone, id);
        assert!(index.is_synced());
        // A later relist that no longer contains "a/default" (deleted while disconnected).
        index.apply(&Event::Init, id);
        index.apply(&Event::InitApply(sa("b", "default")), id);
        assert_eq!(index.in_namespace("a").len(), 1, "old contents served until the relist is done");
        assert_eq!(index.apply(&Event::InitDone, id), ["a", "b"], "both namespaces changed during the relist");
        assert!(index.in_namespace("a").is_empty());
        assert_eq!(index.in_namespace("b").len(), 1);
    }

    #[test]
    fn a_relist_names_only_the_namespaces_that_changed() {
        let index = NamespacedIndex::default();
        let id = |v: &ServiceAccountView| v.clone();
        let versioned =
            |ns: &str, rv: &str| ServiceAccountView { resource_version: Some(rv.into()), ..sa(ns, "default") };
        assert!(index.apply(&Event::InitDone, id).is_empty(), "the first list triggers nothing");
        index.apply(&Event::Apply(versioned("same", "1")), id);
        index.apply(&Event::Apply(versioned("edited", "1")), id);
        index.apply(&Event::Init, id);
        index.apply(&Event::InitApply(versioned("same", "1")), id);
        index.apply(&Event::InitApply(versioned("edited", "2")), id);
        assert_eq!(index.apply(&Event::InitDone, id), ["edited"]);
    }
}
