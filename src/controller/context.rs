//! Everything a reconcile needs, built once: the client, the caches, the per-namespace memory, the
//! event queue, metrics and leadership.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::ObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use tokio::sync::{Notify, watch};
use tracing::warn;

use super::error::{Error, Result};
use super::events::EventQueue;
use super::index::{Keyed, NamedIndex, NamespacedIndex};
use super::leader::Leadership;
use super::queue::Queue;
use super::settings::Settings;
use crate::core::crd::HardeningProfileStatus;
use crate::core::decide::Memory;
use crate::core::guard::ObjectKey;
use crate::core::ids::revision;
use crate::core::model::{NamespaceView, NetworkPolicyView, Profile, ServiceAccountView};
use crate::core::model::{ReportSeen as Seen, ReportView};
use crate::core::status::{Correction, NamespaceResult};
use crate::ops::metrics::{KindLabels, Metrics};

/// A Namespace as cached and reconciled: the name kube's store keys on, the
/// resourceVersion as a number, and the core's view of it, built once per watch event. A whole `Namespace` with
/// its managedFields costs kilobytes; at 10,000 namespaces this keeps only what nsguard reads.
/// Deserializing reads a whole Namespace and keeps this much of it.
#[derive(Clone, Debug, Default)]
pub struct NamespaceMeta {
    /// The name; and the resourceVersion only until kube's watcher has read it: [`Self::cached`]
    /// takes it out before the store keeps the object (the number in `version` is what nsguard
    /// reads, and kube's store would otherwise copy the string into its key as well).
    pub metadata: ObjectMeta,
    /// The resourceVersion as a number ([`revision`]).
    pub version: Option<u64>,
    pub view: NamespaceView,
}

impl From<Namespace> for NamespaceMeta {
    fn from(ns: Namespace) -> Self {
        let mut view = NamespaceView::from_watched(&ns);
        {
            let mut strings = lock(&STRINGS);
            let unique = |key: &str| key == crate::core::desired::NAMESPACE_NAME_LABEL;
            view.labels = view.labels.shared(|s| strings.intern(s), unique);
            view.annotations = view.annotations.shared(|s| strings.intern(s), |_| false);
        }
        let version = revision(ns.metadata.resource_version.as_deref());
        let metadata = ObjectMeta {
            name: ns.metadata.name,
            resource_version: ns.metadata.resource_version,
            ..ObjectMeta::default()
        };
        Self { metadata, version, view }
    }
}

impl NamespaceMeta {
    /// Makes it as the store keeps it: without the resourceVersion string (see [`Self::metadata`]).
    pub fn cached(&mut self) {
        self.metadata.resource_version = None;
    }
}

impl<'de> serde::Deserialize<'de> for NamespaceMeta {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        Namespace::deserialize(deserializer).map(Self::from)
    }
}

impl kube::Resource for NamespaceMeta {
    type DynamicType = ();
    type Scope = k8s_openapi::ClusterResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        <Namespace as kube::Resource>::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        <Namespace as kube::Resource>::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        <Namespace as kube::Resource>::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        <Namespace as kube::Resource>::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The label keys and values of the cached namespaces, each stored once: every namespace repeats
/// the same keys and mostly the same values (`restricted`, `latest`, a team's name).
static STRINGS: Mutex<Interner> = Mutex::new(Interner { strings: None, kept: 0 });

/// A set of shared strings; those no cached namespace uses any more are dropped as it grows.
struct Interner {
    strings: Option<HashSet<Arc<str>>>,
    /// How many strings were left after the last sweep.
    kept: usize,
}

impl Interner {
    fn intern(&mut self, s: &str) -> Arc<str> {
        let strings = self.strings.get_or_insert_with(HashSet::new);
        if let Some(shared) = strings.get(s) {
            return shared.clone();
        }
        if strings.len() >= 2 * self.kept.max(1024) {
            // Only the set holds these: no namespace has the label any more.
            strings.retain(|shared| Arc::strong_count(shared) > 1);
            self.kept = strings.len();
        }
        let shared: Arc<str> = Arc::from(s);
        strings.insert(shared.clone());
        shared
    }
}

/// The longest nsguard waits for one API write.
pub const API_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A watch failure younger than this makes the replica unready (a failing watch retries at least
/// every 5 s, so an outage keeps it unready; recovery makes it ready again within this).
const WATCH_TROUBLE: std::time::Duration = std::time::Duration::from_secs(10);

/// What the controller remembers, under one lock.
#[derive(Default)]
pub struct State {
    /// Everything remembered per namespace: one entry, dropped whole when the namespace goes.
    pub namespaces: HashMap<String, Box<Memory>>,
    /// Per profile: the last drift corrected in its namespaces (shown in its status).
    pub corrections: HashMap<String, Correction>,
    /// Per profile (name, UID): the status last written, not written again before its watch event.
    pub written_status: HashMap<(String, Option<String>), HardeningProfileStatus>,
    /// Per profile: when nsguard saw its finalizer arrive, until it has settled
    /// ([`crate::core::selection::finalizer_settling`]).
    pub finalized_at: HashMap<String, std::time::Instant>,
}

pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub profiles: NamedIndex<Profile>,
    /// Each profile's status as last read, for comparison before writing.
    pub profile_status: NamedIndex<Option<HardeningProfileStatus>>,
    pub namespaces: Store<NamespaceMeta>,
    pub namespaces_synced: AtomicBool,
    pub service_accounts: NamespacedIndex<ServiceAccountView>,
    pub network_policies: NamespacedIndex<NetworkPolicyView>,
    /// nsguard's Reports (meaningful only while `reports_ready`).
    pub reports: NamespacedIndex<ReportView>,
    /// The OpenReports CRD is installed and the Report watch has listed: Reports are written.
    pub reports_ready: AtomicBool,
    pub events: EventQueue,
    /// The namespaces waiting for a reconcile: another look ahead of first looks, each in arrival
    /// order.
    pub queue: Arc<Queue>,
    pub metrics: Arc<Metrics>,
    pub state: Mutex<State>,
    /// Counts [`Context::changed`]: the status writer's tallies stand while it stays the same.
    pub results_generation: AtomicU64,
    /// Some namespace result changed: the status writer looks again.
    pub status_dirty: Notify,
    /// A profile or a namespace result changed: the finalizer keeper looks again.
    pub finalizers_dirty: Notify,
    pub leader: Leadership,
    /// Flips to true once every cache has its initial contents.
    pub synced: watch::Sender<bool>,
    /// When a watch last failed.
    pub last_watch_error: Mutex<Option<Instant>>,
}

impl Context {
    /// All caches have their initial contents.
    pub fn is_synced(&self) -> bool {
        self.namespaces_synced.load(Ordering::Acquire)
            && self.profiles.is_synced()
            && self.service_accounts.is_synced()
            && self.network_policies.is_synced()
    }

    /// Called when a cache finishes a list: announces the first moment all of them are synced.
    pub fn cache_listed(&self) {
        if self.is_synced() {
            self.synced.send_if_modified(|synced| !std::mem::replace(synced, true));
        }
    }

    /// This replica can do its job now: caches synced, no watch failing, and (with leader
    /// election) the Lease reachable. A healthy follower is ready.
    pub fn is_ready(&self) -> bool {
        let watches_ok = lock(&self.last_watch_error).is_none_or(|at| at.elapsed() > WATCH_TROUBLE);
        self.is_synced() && watches_ok && self.leader.lease_reachable()
    }

    pub fn is_leader(&self) -> bool {
        self.leader.is_leader()
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Runs one write only while this replica leads, and never past its renew deadline (nor
    /// [`API_TIMEOUT`]): a replica that may have lost its lease writes nothing.
    pub async fn guarded<T>(
        &self,
        write: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<Result<T, kube::Error>> {
        let remaining = self.leader.remaining();
        if remaining.is_zero() {
            return Err(Error::NotLeader);
        }
        tokio::time::timeout(remaining.min(API_TIMEOUT), write).await.map_err(|_| Error::Timeout)
    }

    /// nsguard has looked at the namespace since it was last forgotten (a reconcile keeps memory of
    /// it): its next look goes ahead of first looks ([`super::queue`]).
    pub fn looked_at(&self, namespace: &str) -> bool {
        self.state().namespaces.contains_key(namespace)
    }

    /// A trigger for `namespace`: queued ([`super::queue`]) if the cache holds it. One it does not
    /// hold (deleted, or not selected) has nothing to reconcile; if it comes (back), its own watch
    /// event queues it.
    pub fn enqueue(&self, namespace: &str) {
        if self.namespaces.get(&ObjectRef::new(namespace)).is_some() {
            self.queue.push(namespace, self.looked_at(namespace));
        }
    }

    /// A watch failed: visible at warn and in `nsguard_watch_errors_total`; the watch retries.
    pub fn watch_failed(&self, kind: &'static str, error: &watcher::Error) {
        warn!(kind, error = %error, "watch failed; retrying");
        self.metrics.watch_errors.get_or_create(&KindLabels { kind }).inc();
        *lock(&self.last_watch_error) = Some(Instant::now());
    }

    /// A watch event for `key` at `version` arrived: a write to it up to that version is no longer
    /// in flight.
    pub fn observed(&self, key: &ObjectKey, version: Option<u64>) {
        let namespace = if key.kind == "Namespace" { &key.name } else { &key.namespace };
        if let Some(memory) = self.state().namespaces.get_mut(namespace) {
            memory.pending.observed(key, version);
        }
    }

    /// The resourceVersion the cache holds for `key` (as a number; inside, `None` when unknown);
    /// `None` when the object is not cached.
    pub fn cached_version(&self, key: &ObjectKey) -> Option<Option<u64>> {
        match key.kind {
            "Namespace" => self.namespaces.get(&ObjectRef::new(&key.name)).map(|n| n.version),
            "ServiceAccount" => self.service_accounts.get(&key.namespace, &key.name).map(|v| v.resource_version()),
            "NetworkPolicy" => self.network_policies.get(&key.namespace, &key.name).map(|v| v.resource_version()),
            "Report" => self.reports.get(&key.namespace, &key.name).map(|v| v.resource_version()),
            _ => None,
        }
    }

    /// nsguard's Report in `namespace` as the cache shows it.
    pub fn report(&self, namespace: &str) -> Seen {
        if !self.reports_ready.load(Ordering::Acquire) {
            return Seen::Unavailable;
        }
        ReportView::seen(self.reports.get(namespace, crate::core::report::NAME).as_deref())
    }

    /// The namespace is in the cache (the reflector removes it before its Delete event is handled).
    fn is_cached(&self, namespace: &str) -> bool {
        self.namespaces.get(&ObjectRef::new(namespace)).is_some()
    }

    /// A relist of the namespaces completed: forget those it no longer shows (deleted while the
    /// watch was down, they left no Delete event). Once per relist, not on every status pass.
    pub fn forget_unlisted(&self) {
        let mut state = self.state();
        let before = state.namespaces.len();
        state.namespaces.retain(|ns, _| self.is_cached(ns));
        if state.namespaces.len() != before {
            drop(state);
            self.changed();
        }
    }

    /// The namespace is gone: forget everything about it, in one place.
    pub fn forget_namespace(&self, name: &str) {
        self.state().namespaces.remove(name);
        self.changed();
    }

    /// A profile or a namespace's result changed: wake the status writer (to count every
    /// namespace again) and the finalizer keeper.
    pub fn changed(&self) {
        self.results_generation.fetch_add(1, Ordering::AcqRel);
        self.looked();
    }

    /// A reconcile ended with the namespace's result as it was: wake the status writer and the
    /// finalizer keeper all the same (a new leader's first look at every namespace is what makes
    /// them write what the old one had not), without a walk over every namespace's result.
    pub fn looked(&self) {
        self.status_dirty.notify_one();
        self.finalizers_dirty.notify_one();
    }

    /// The namespace's entry was written after its Delete event was handled (a reconcile in
    /// flight when it went): drop it again. The reflector removes a namespace from the cache
    /// before [`Self::forget_namespace`] runs, so one of the two always sees it gone.
    pub fn forget_if_gone(&self, state: &mut State, namespace: &str) {
        if !self.is_cached(namespace) && state.namespaces.remove(namespace).is_some() {
            self.results_generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// The results of every namespace, for the profile status.
    pub fn results(&self) -> Vec<(String, NamespaceResult)> {
        let state = self.state();
        state.namespaces.iter().filter_map(|(ns, m)| Some((ns.clone(), m.result.clone()?))).collect()
    }
}

// A poisoned lock means a panic while holding it; the maps are still consistent enough to serve.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
