//! In-memory caches fed by watch streams, indexed the way the reconciler reads them.
//!
//! kube's reflector `Store` holds whole objects and answers only by name; the reconciler of one
//! namespace needs "every ServiceAccount in namespace X" without scanning 30,000 of them, and only
//! a few fields of each. These indexes keep compact views, grouped by namespace.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use kube::runtime::watcher::Event;

/// A view of an object, as kept by an index (in its namespace's group).
pub trait Keyed {
    fn name(&self) -> &str;
    /// The resourceVersion as a number; `None` when unknown.
    fn resource_version(&self) -> Option<u64>;
}

/// Implements [`Keyed`] for views with `name` and `resource_version` fields.
macro_rules! keyed {
    ($($view:ty),+) => {$(
        impl Keyed for $view {
            fn name(&self) -> &str {
                &self.name
            }
            fn resource_version(&self) -> Option<u64> {
                self.resource_version
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

fn insert<V: Keyed>(groups: &mut Groups<V>, namespace: String, view: V) {
    let group = groups.entry(namespace).or_default();
    match group.binary_search_by(|v| v.name().cmp(view.name())) {
        Ok(at) => group[at] = Arc::new(view),
        Err(at) => group.insert(at, Arc::new(view)),
    }
}

fn find<'a, V: Keyed>(group: &'a [Arc<V>], name: &str) -> Option<&'a Arc<V>> {
    group.binary_search_by(|v| v.name().cmp(name)).ok().map(|at| &group[at])
}

impl<V: Keyed> NamespacedIndex<V> {
    /// Applies one watch event; `namespace` and `view` read the object. When a relist after the
    /// first completes, returns the namespaces whose objects differ from before it (changed,
    /// created or deleted while the watch was down), so they can be reconciled at once.
    pub fn apply<K>(&self, event: &Event<K>, namespace: impl Fn(&K) -> String, view: impl Fn(&K) -> V) -> Vec<String> {
        match event {
            Event::Apply(obj) => insert(&mut write(&self.groups), namespace(obj), view(obj)),
            Event::Delete(obj) => {
                let (namespace, v) = (namespace(obj), view(obj));
                let mut groups = write(&self.groups);
                if let Some(group) = groups.get_mut(&namespace) {
                    if let Ok(at) = group.binary_search_by(|o| o.name().cmp(v.name())) {
                        group.remove(at);
                    }
                    if group.is_empty() {
                        groups.remove(&namespace);
                    }
                }
            }
            Event::Init => *write(&self.relist) = Some(Groups::new()),
            Event::InitApply(obj) => {
                if let Some(buffer) = write(&self.relist).as_mut() {
                    insert(buffer, namespace(obj), view(obj));
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

/// Namespaces whose objects (by name and resourceVersion) differ between `old` and `new`; an
/// unknown resourceVersion counts as changed.
fn changed_groups<V: Keyed>(old: &Groups<V>, new: &Groups<V>) -> Vec<String> {
    let same = |a: &Arc<V>, b: &Arc<V>| {
        a.name() == b.name() && a.resource_version().is_some() && a.resource_version() == b.resource_version()
    };
    let unchanged = |a: Option<&Vec<Arc<V>>>, b: Option<&Vec<Arc<V>>>| {
        let (a, b) = (a.map_or(&[][..], Vec::as_slice), b.map_or(&[][..], Vec::as_slice));
        a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same(a, b))
    };
    let mut names: Vec<&String> = old.keys().chain(new.keys()).collect();
    names.sort();
    names.dedup();
    names.into_iter().filter(|ns| !unchanged(old.get(*ns), new.get(*ns))).cloned().collect()
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

    /// A ServiceAccount in a namespace, as a watch event carries it (here: the namespace and the view).
    fn sa(ns: &str, name: &str) -> (String, ServiceAccountView) {
        let view = ServiceAccountView { name: name.into(), resource_version: Some(1), ..ServiceAccountView::default() };
        (ns.into(), view)
    }

    fn namespace(sa: &(String, ServiceAccountView)) -> String {
        sa.0.clone()
    }

    #[test]
    fn groups_by_namespace_and_forgets_deleted_objects() {
        let index = NamespacedIndex::default();
        let id = |sa: &(String, ServiceAccountView)| sa.1.clone();
        index.apply(&Event::Apply(sa("a", "default")), namespace, id);
        index.apply(&Event::Apply(sa("a", "builder")), namespace, id);
        index.apply(&Event::Apply(sa("b", "default")), namespace, id);
        let names = |ns: &str| index.in_namespace(ns).iter().map(|v| v.name.clone()).collect::<Vec<_>>();
        assert_eq!(names("a"), ["builder", "default"]);
        index.apply(&Event::Delete(sa("a", "builder")), namespace, id);
        assert_eq!(names("a"), ["default"]);
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn relist_replaces_the_cache_only_when_complete() {
        let index = NamespacedIndex::default();
        let id = |sa: &(String, ServiceAccountView)| sa.1.clone();
        index.apply(&Event::Init, namespace, id);
        index.apply(&Event::InitApply(sa("a", "default")), namespace, id);
        assert!(!index.is_synced());
        index.apply(&Event::InitDone, namespace, id);
        assert!(index.is_synced());
        // A later relist that no longer contains "a/default" (deleted while disconnected).
        index.apply(&Event::Init, namespace, id);
        index.apply(&Event::InitApply(sa("b", "default")), namespace, id);
        assert_eq!(index.in_namespace("a").len(), 1, "old contents served until the relist is done");
        assert_eq!(
            index.apply(&Event::InitDone, namespace, id),
            ["a", "b"],
            "both namespaces changed during the relist"
        );
        assert!(index.in_namespace("a").is_empty());
        assert_eq!(index.in_namespace("b").len(), 1);
    }

    #[test]
    fn a_relist_names_only_the_namespaces_that_changed() {
        let index = NamespacedIndex::default();
        let id = |sa: &(String, ServiceAccountView)| sa.1.clone();
        let versioned = |ns: &str, rv: u64| {
            let (ns, view) = sa(ns, "default");
            (ns, ServiceAccountView { resource_version: Some(rv), ..view })
        };
        assert!(index.apply(&Event::InitDone, namespace, id).is_empty(), "the first list triggers nothing");
        index.apply(&Event::Apply(versioned("same", 1)), namespace, id);
        index.apply(&Event::Apply(versioned("edited", 1)), namespace, id);
        index.apply(&Event::Init, namespace, id);
        index.apply(&Event::InitApply(versioned("same", 1)), namespace, id);
        index.apply(&Event::InitApply(versioned("edited", 2)), namespace, id);
        assert_eq!(index.apply(&Event::InitDone, namespace, id), ["edited"]);
    }

    #[test]
    fn a_relist_counts_an_unknown_resource_version_as_changed() {
        let index = NamespacedIndex::default();
        let id = |sa: &(String, ServiceAccountView)| sa.1.clone();
        let unversioned = || {
            let (ns, view) = sa("opaque", "default");
            (ns, ServiceAccountView { resource_version: None, ..view })
        };
        index.apply(&Event::InitDone, namespace, id);
        index.apply(&Event::Apply(unversioned()), namespace, id);
        index.apply(&Event::Init, namespace, id);
        index.apply(&Event::InitApply(unversioned()), namespace, id);
        assert_eq!(
            index.apply(&Event::InitDone, namespace, id),
            ["opaque"],
            "reconciled rather than assumed unchanged"
        );
    }
}
