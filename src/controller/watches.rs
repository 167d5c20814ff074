//! The watches: one per kind, each feeding its cache and naming the namespaces to reconcile (the
//! triggers, queued in [`super::queue`]).
//!
//! - Namespaces fill kube's store, which the controller reads, cached as [`NamespaceMeta`]: each
//!   watched Namespace is read whole and kept as the core's compact view; each event names it.
//! - ServiceAccounts, nsguard's NetworkPolicies and HardeningProfiles keep compact indexes: a
//!   change maps to its namespace; a profile change fans out to the namespaces it can affect; a
//!   relist after an outage triggers every namespace whose objects changed meanwhile.
//! - [`resync`]: the periodic backstop, a slice of the namespaces at a time.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{ObjectRef, store::Writer};
use kube::runtime::utils::{Backoff, ResetTimerBackoff};
use kube::runtime::watcher::{self, Event as WatchEvent, watcher};
use kube::{Resource, ResourceExt};
use tracing::warn;

use super::context::{Context, NamespaceMeta};
use crate::core::crd::{HardeningProfile, HardeningProfileStatus};
use crate::core::guard::ObjectKey;
use crate::core::ids::revision;
use crate::core::model::{MANAGED_BY_LABEL, MANAGED_BY_VALUE, NetworkPolicyView, Profile, ServiceAccountView};
use crate::core::selection::{fans_out, finalizer_settling, may_affect};

pub(super) type Trigger = ObjectRef<NamespaceMeta>;

/// Retry a failed watch after 0.5 s, doubling up to 5 s: after an API-server outage nsguard is back
/// within seconds (kube's default waits up to 30 s and resets only after 2 minutes).
fn backoff() -> ResetTimerBackoff<WatchBackoff> {
    ResetTimerBackoff::new(WatchBackoff::default(), Duration::from_secs(30))
}

/// 0.5 s, 1 s, 2 s, 4 s, then 5 s; back to 0.5 s once the watch delivers again.
#[derive(Default)]
struct WatchBackoff {
    failures: u32,
}

impl Iterator for WatchBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let delay = Duration::from_millis(500u64 << self.failures.min(4)).min(Duration::from_secs(5));
        self.failures = self.failures.saturating_add(1);
        Some(delay)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A watch that starts over with a fresh list after any failure. kube's watcher resumes from the
/// last resourceVersion, which a restarted API server may hold for tens of seconds before it answers
/// `410 Expired`; changes made meanwhile would wait for that. A fresh list sees them at once (and the
/// indexes report what changed).
pub(super) fn relisting<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = Result<WatchEvent<K>, watcher::Error>> + Send
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    stream::repeat_with(move || {
        watcher(api.clone(), config.clone()).scan(false, |failed, event| {
            if *failed {
                return futures::future::ready(None);
            }
            *failed = event.is_err();
            futures::future::ready(Some(event))
        })
    })
    .flatten()
    .backoff(backoff())
}

pub(super) fn config(selector: Option<&str>) -> watcher::Config {
    let config = watcher::Config::default().page_size(LIST_PAGE);
    match selector {
        Some(s) => config.labels(s),
        None => config,
    }
}

/// Objects per page of a (re)list. kube's default, 500, holds 500 whole objects (managedFields and
/// all) in memory at once before they are compacted into the caches; 100 lowers that peak at the
/// cost of more, smaller list requests.
const LIST_PAGE: u32 = 100;

/// The object a watch event carries, if any.
fn touched<K>(event: &WatchEvent<K>) -> Option<&K> {
    match event {
        WatchEvent::Apply(obj) | WatchEvent::Delete(obj) | WatchEvent::InitApply(obj) => Some(obj),
        WatchEvent::Init | WatchEvent::InitDone => None,
    }
}

/// The namespace watch (labels, annotations and nsguard's condition are all nsguard reads), cached in
/// `writer`'s store; every namespace it touches is reconciled.
pub fn namespaces(ctx: Arc<Context>, writer: Writer<NamespaceMeta>) -> impl Stream<Item = Trigger> + Send {
    let api = Api::<NamespaceMeta>::all(ctx.client.clone());
    let (failed, every) = (ctx.clone(), ctx.clone());
    relisting(api, config(ctx.settings.namespace_selector.as_deref()))
        .inspect_err(move |e| failed.watch_failed("Namespace", e))
        .map_ok(|event| event.modify(NamespaceMeta::cached))
        .reflect(writer)
        .inspect_ok(move |event| {
            if let Some(ns) = touched(event) {
                ctx.observed(&ObjectKey::new("Namespace", "", &ns.name_any()), ns.version);
            }
            match event {
                WatchEvent::Delete(ns) => ctx.forget_namespace(&ns.name_any()),
                WatchEvent::InitDone => {
                    ctx.forget_unlisted();
                    ctx.namespaces_synced.store(true, std::sync::atomic::Ordering::Release);
                    ctx.cache_listed();
                }
                _ => {}
            }
        })
        // Failures are logged and retried above (a fresh list).
        .filter_map(|event| futures::future::ready(event.ok()))
        .scan(false, move |listed, event| {
            let names: Vec<Trigger> = match &event {
                // A relist after an outage: kube's store takes the listed namespaces only now, so
                // the triggers its events gave could find them missing or old. Every namespace is
                // looked at again (no write where nothing changed).
                WatchEvent::InitDone if *listed => every_namespace(&every),
                // The first list: every namespace is reconciled once all caches are synced.
                WatchEvent::InitDone => {
                    *listed = true;
                    vec![]
                }
                event => touched(event).map(ObjectRef::from_obj).into_iter().collect(),
            };
            futures::future::ready(Some(stream::iter(names)))
        })
        .flatten()
}

/// A trigger for every namespace the cache holds.
pub(super) fn every_namespace(ctx: &Context) -> Vec<Trigger> {
    ctx.namespaces.state().iter().map(|ns| ObjectRef::from_obj(&**ns)).collect()
}

/// Turns a watch into triggers: `on_event` indexes each event and names the namespaces to look at.
fn triggers<K, F>(
    ctx: Arc<Context>,
    kind: &'static str,
    events: impl Stream<Item = Result<WatchEvent<K>, watcher::Error>> + Send + 'static,
    on_event: F,
) -> impl Stream<Item = Trigger> + Send
where
    K: Send + 'static,
    F: Fn(&Context, WatchEvent<K>) -> Vec<String> + Send + Sync + 'static,
{
    events
        .filter_map(move |event| {
            let names = match event {
                Ok(event) => on_event(&ctx, event),
                Err(e) => {
                    ctx.watch_failed(kind, &e);
                    vec![]
                }
            };
            futures::future::ready(Some(stream::iter(names.into_iter().map(|ns| ObjectRef::new(&ns)))))
        })
        .flatten()
}

/// ServiceAccounts: every one, indexed by namespace.
pub fn service_accounts(ctx: Arc<Context>) -> impl Stream<Item = Trigger> + Send {
    let api = Api::<ServiceAccount>::all(ctx.client.clone());
    let events = relisting(api, config(None));
    triggers(ctx, "ServiceAccount", events, |ctx, event| {
        let relisted = ctx.service_accounts.apply(&event, namespace_of, ServiceAccountView::from_object);
        namespaced_triggers(ctx, "ServiceAccount", &event, relisted)
    })
}

/// NetworkPolicies: only nsguard's (by label).
pub fn network_policies(ctx: Arc<Context>) -> impl Stream<Item = Trigger> + Send {
    let api = Api::<NetworkPolicy>::all(ctx.client.clone());
    let events = relisting(api, config(Some(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"))));
    triggers(ctx, "NetworkPolicy", events, |ctx, event| {
        let relisted = ctx.network_policies.apply(&event, namespace_of, NetworkPolicyView::from_object);
        namespaced_triggers(ctx, "NetworkPolicy", &event, relisted)
    })
}

/// The namespace of a namespaced object (the index's group it goes in).
pub(super) fn namespace_of<K: Resource>(obj: &K) -> String {
    obj.meta().namespace.clone().unwrap_or_default()
}

/// The namespace of a changed object, plus those a completed relist changed. The initial list
/// needs no triggers: the namespace watch reconciles everything once the caches are synced.
pub(super) fn namespaced_triggers<K: Resource>(
    ctx: &Context,
    kind: &'static str,
    event: &WatchEvent<K>,
    mut relisted: Vec<String>,
) -> Vec<String> {
    if matches!(event, WatchEvent::InitDone) {
        ctx.cache_listed();
    }
    if let Some(obj) = touched(event) {
        let namespace = obj.namespace().unwrap_or_default();
        let version = revision(obj.meta().resource_version.as_deref());
        ctx.observed(&ObjectKey::new(kind, &namespace, &obj.name_any()), version);
        if matches!(event, WatchEvent::Apply(_) | WatchEvent::Delete(_)) {
            relisted.push(namespace);
        }
    }
    relisted
}

/// HardeningProfiles (those `--profile-selector` matches), parsed once per change.
pub fn profiles(ctx: Arc<Context>) -> impl Stream<Item = Trigger> + Send {
    let resource = ApiResource::erase::<HardeningProfile>(&());
    let api = Api::<DynamicObject>::all_with(ctx.client.clone(), &resource);
    let events = relisting(api, config(ctx.settings.profile_selector.as_deref()));
    triggers(ctx, "HardeningProfile", events, profile_triggers)
}

fn parse_status(obj: &DynamicObject) -> Option<HardeningProfileStatus> {
    obj.data.get("status").and_then(|s| serde_json::from_value(s.clone()).ok())
}

/// Remembers when nsguard's finalizer arrived on a profile nsguard saw without it; forgets it once
/// settled, or when the profile goes.
fn note_finalizer(ctx: &Context, event: &WatchEvent<DynamicObject>, previous: Option<&Profile>, now: Option<&Profile>) {
    let mut state = ctx.state();
    let at = std::time::Instant::now();
    state.finalized_at.retain(|_, seen| finalizer_settling(Some(*seen), at).is_some());
    match (event, previous, now) {
        (WatchEvent::Apply(_), Some(before), Some(now)) if !before.finalized() && now.finalized() => {
            state.finalized_at.insert(now.name.clone(), at);
        }
        (WatchEvent::Delete(obj), ..) => {
            state.finalized_at.remove(&obj.name_any());
        }
        _ => {}
    }
}

fn profile_triggers(ctx: &Context, event: WatchEvent<DynamicObject>) -> Vec<String> {
    let previous = touched(&event).and_then(|obj| ctx.profiles.get(&obj.name_any()));
    let relisted = ctx.profiles.apply(&event, ResourceExt::name_any, Profile::from_object);
    ctx.profile_status.apply(&event, ResourceExt::name_any, parse_status);
    let current = touched(&event).and_then(|obj| ctx.profiles.get(&obj.name_any()));
    note_finalizer(ctx, &event, previous.as_deref(), current.as_deref());
    match (&event, previous.as_deref(), current.as_deref()) {
        // Its status (nsguard's own writes among them) or metadata alone: no namespace's result
        // changes, and the status writer rebuilds from the tallies it has.
        (WatchEvent::Apply(_), Some(before), Some(now))
            if !fans_out(Some(before), now) && before.finalizers == now.finalizers =>
        {
            ctx.status_dirty.notify_one();
        }
        _ => ctx.changed(),
    }
    if matches!(event, WatchEvent::InitDone) {
        ctx.cache_listed();
    }
    let all = || ctx.namespaces.state().iter().map(|ns| ns.name_any()).collect();
    if relisted {
        // Profiles relisted after an outage: what changed meanwhile is unknown, so look again at
        // every namespace.
        return all();
    }
    let now = match &event {
        WatchEvent::Apply(_) => current,
        WatchEvent::Delete(obj) => Some(Arc::new(Profile::from_object(obj))),
        _ => None,
    };
    let Some(now) = now else { return vec![] };
    if let Err(invalid) = &now.spec {
        warn!(profile = %now.name, errors = %crate::core::validate::summarize(invalid), "invalid HardeningProfile");
    }
    if matches!(event, WatchEvent::Apply(_)) && !fans_out(previous.as_deref(), &now) {
        return vec![];
    }
    // The namespaces the old or new profile selects or governs, and those where it competed.
    let competed: HashSet<String> = ctx
        .results()
        .into_iter()
        .filter(|(_, r)| r.profile.as_deref() == Some(now.name.as_str()) || r.overridden.contains(&now.name))
        .map(|(ns, _)| ns)
        .collect();
    ctx.namespaces
        .state()
        .iter()
        .filter(|ns| {
            let view = &ns.view;
            competed.contains(&view.name)
                || may_affect(&now, view)
                || previous.as_deref().is_some_and(|before| may_affect(before, view))
        })
        .map(|ns| ns.view.name.clone())
        .collect()
}

/// Slices of the resync period: every namespace is looked at again once per period, a slice at a
/// time.
const RESYNC_SLICES: u32 = 60;

/// The resync backstop (watch events bring every change sooner): each `resync / 60`, the next
/// sixtieth of the namespaces (by a hash of the name) is reconciled again, one at a time, spread
/// evenly over the slice (see [`paced`]). One timer, instead of one scheduled requeue per namespace
/// in kube's scheduler (~600 bytes each at 10,000 namespaces); and no queue of hundreds of
/// re-checks for a drift event to wait behind.
pub fn resync(ctx: Arc<Context>) -> impl Stream<Item = Trigger> + Send {
    let every = ctx.settings.resync / RESYNC_SLICES;
    let mut interval =
        tokio::time::interval_at(tokio::time::Instant::now() + every, every.max(Duration::from_millis(1)));
    // A slice that took longer than its share (timer granularity at millions of namespaces) delays
    // the next one instead of letting ticks pile up.
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio_stream::wrappers::IntervalStream::new(interval)
        .scan(0u32, move |slice, _| {
            *slice = (*slice + 1) % RESYNC_SLICES;
            let due: Vec<Trigger> = if ctx.is_synced() {
                ctx.namespaces
                    .state()
                    .iter()
                    .filter(|ns| resync_slice(&ns.view.name) == *slice)
                    .map(|ns| ObjectRef::new(&ns.view.name))
                    .collect()
            } else {
                vec![]
            };
            futures::future::ready(Some(paced(due, every)))
        })
        .flatten()
}

/// `items` spread evenly over `within`: one, then a pause of `within / (n + 1)`, and so on — done
/// before `within` has passed.
fn paced<T: Send + 'static>(items: Vec<T>, within: Duration) -> impl Stream<Item = T> + Send {
    let gap = within / u32::try_from(items.len().saturating_add(1)).unwrap_or(u32::MAX);
    stream::iter(items).enumerate().then(move |(i, item)| async move {
        if i > 0 {
            tokio::time::sleep(gap).await;
        }
        item
    })
}

/// The slice of the resync period a namespace belongs to (stable for the process's life).
fn resync_slice(name: &str) -> u32 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(name);
    u32::try_from(hash % u64::from(RESYNC_SLICES)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resync slice goes out one namespace at a time, evenly over the slice (virtual time).
    #[tokio::test(start_paused = true)]
    async fn a_slice_is_spread_over_its_period() {
        let start = tokio::time::Instant::now();
        let out: Vec<(u32, Duration)> =
            paced(vec![1, 2, 3], Duration::from_secs(4)).map(|i| (i, start.elapsed())).collect().await;
        let secs = |s| Duration::from_secs(s);
        assert_eq!(out, vec![(1, secs(0)), (2, secs(1)), (3, secs(2))]);
        assert_eq!(paced(Vec::<u32>::new(), secs(4)).collect::<Vec<_>>().await, Vec::<u32>::new());
    }
}
