//! The controller: watches, caches, one reconcile per Namespace, writes and events.
//!
//! Reading happens before the pure core ([`crate::selection::govern`], [`crate::plan::plan`]) and
//! writing after it. Every write is a server-side apply with field manager `nsguard` (or a delete of
//! a NetworkPolicy nsguard created), made only when the plan found a difference.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, Stream, StreamExt, TryStreamExt, future};
use k8s_openapi::api::core::v1::{Namespace, ObjectReference, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, PartialObjectMeta, Patch, PatchParams, Preconditions};
use kube::runtime::controller::{Action as Requeue, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::utils::ResetTimerBackoff;
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::runtime::{WatchStreamExt, watcher::watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::{Notify, mpsc};

use crate::leader::Leadership;
use tracing::{Instrument, debug, info, info_span, instrument, warn};

use crate::crd::{HardeningProfile, HardeningProfileStatus, Mode};
use crate::events::{EventQueue, Pending, Publisher, Severity as EventType};
use crate::guard::{Correction as Limit, CorrectionLimiter, ObjectKey, PendingWrites};
use crate::index::{Keyed, NamedIndex, NamespacedIndex};
use crate::metrics::{DriftLabels, KindLabels, Metrics, ProfileLabels, ResultLabels};
use crate::model::{
    FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE, NamespaceView, NetworkPolicyView, PROFILE_FINALIZER, Profile,
    ServiceAccountView,
};
use crate::plan::{Action, Drift, Observed, Outcome, Plan, plan};
use crate::selection::{Exclusions, FinalizerChange, Governance, awaits_release, finalizer_change, govern, may_affect};
use crate::status::{Correction, NamespaceResult, aggregate};
use crate::{Error, Result};

type NamespaceMeta = PartialObjectMeta<Namespace>;

/// The longest nsguard waits for one API write.
pub const API_TIMEOUT: Duration = Duration::from_secs(10);

/// How the controller is configured.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespaces never governed.
    pub exclusions: Exclusions,
    /// Only namespaces with these labels are watched (a label selector), e.g. to shard.
    pub namespace_selector: Option<String>,
    /// Only profiles with these labels are watched (a label selector).
    pub profile_selector: Option<String>,
    /// Namespaces reconciled at once.
    pub concurrency: u16,
    /// Every namespace is re-checked this often, as a backstop to the watches.
    pub resync: Duration,
    /// Shown as the reporting instance of Events (the pod name).
    pub instance: Option<String>,
    /// How long status updates are coalesced.
    pub status_interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            exclusions: Exclusions::default(),
            namespace_selector: None,
            profile_selector: None,
            concurrency: 16,
            resync: Duration::from_secs(30 * 60),
            instance: None,
            status_interval: Duration::from_millis(500),
        }
    }
}

/// What the reconciler last reported of a namespace, so that events are sent on change only.
#[derive(Default)]
struct Reported {
    drift: Vec<Drift>,
    overridden: Vec<String>,
    orphaned: bool,
}

#[derive(Default)]
struct State {
    results: HashMap<String, NamespaceResult>,
    pending: PendingWrites,
    limiter: CorrectionLimiter,
    reported: HashMap<String, Reported>,
    corrections: HashMap<String, Correction>,
    failures: HashMap<String, u32>,
    /// Namespaces where nsguard is backing off from a rival writer (reported once per episode).
    fighting: HashSet<String>,
    /// The status last written per profile (name, UID): not written again before its watch
    /// event arrives.
    written_status: HashMap<(String, Option<String>), HardeningProfileStatus>,
}

/// Everything a reconcile needs, built once.
pub struct Context {
    client: Client,
    settings: Settings,
    profiles: NamedIndex<Profile>,
    /// Each profile's status as last read, for comparison before writing.
    profile_status: NamedIndex<Option<HardeningProfileStatus>>,
    namespaces: Store<NamespaceMeta>,
    namespaces_synced: AtomicBool,
    service_accounts: NamespacedIndex<ServiceAccountView>,
    network_policies: NamespacedIndex<NetworkPolicyView>,
    events: EventQueue,
    pub metrics: Arc<Metrics>,
    state: Mutex<State>,
    status_dirty: Notify,
    leader: Leadership,
}

impl Context {
    /// All caches have their initial contents.
    pub fn is_synced(&self) -> bool {
        self.namespaces_synced.load(Ordering::Acquire)
            && self.profiles.is_synced()
            && self.service_accounts.is_synced()
            && self.network_policies.is_synced()
    }

    fn is_leader(&self) -> bool {
        self.leader.is_leader()
    }

    /// Runs one write only while this replica leads, and never past its renew deadline (nor
    /// [`API_TIMEOUT`]): a replica that may have lost its lease writes nothing.
    async fn guarded<T>(&self, write: impl Future<Output = Result<T, kube::Error>>) -> Result<Result<T, kube::Error>> {
        let remaining = self.leader.remaining();
        if remaining.is_zero() {
            return Err(Error::NotLeader);
        }
        tokio::time::timeout(remaining.min(API_TIMEOUT), write).await.map_err(|_| Error::Timeout)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A handle for observing a running controller (readiness, metrics).
#[derive(Clone)]
pub struct Handle {
    ctx: Arc<Context>,
}

impl Handle {
    pub fn is_ready(&self) -> bool {
        self.ctx.is_synced()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.ctx.metrics
    }
}

fn profile_resource() -> ApiResource {
    ApiResource::erase::<HardeningProfile>(&())
}

fn parse_status(obj: &DynamicObject) -> Option<HardeningProfileStatus> {
    obj.data.get("status").and_then(|s| serde_json::from_value(s.clone()).ok())
}

/// Retry a failed watch after 0.5 s, doubling up to 5 s: after an API-server outage nsguard is back
/// within seconds (kube's default waits up to 30 s and resets only after 2 minutes).
fn watch_backoff() -> ResetTimerBackoff<WatchBackoff> {
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

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.failures = 0;
    }
}

fn watch_config(selector: Option<&str>) -> watcher::Config {
    let config = watcher::Config::default();
    match selector {
        Some(s) => config.labels(s),
        None => config,
    }
}

/// Keys of the objects a watch event carries (to clear pending writes).
fn touched<K: Resource>(event: &WatchEvent<K>) -> Option<&K> {
    match event {
        WatchEvent::Apply(obj) | WatchEvent::Delete(obj) | WatchEvent::InitApply(obj) => Some(obj),
        WatchEvent::Init | WatchEvent::InitDone => None,
    }
}

/// Runs the controller until `shutdown` resolves. `leader` says whether this replica may write;
/// the controller watches and computes regardless, so a new leader is ready at once.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    leader: Leadership,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    on_start: impl FnOnce(Handle),
) -> Result<()> {
    let (namespaces, namespace_writer) = reflector::store::<NamespaceMeta>();
    let ctx = Arc::new(Context {
        events: EventQueue::start(Publisher::new(client.clone(), settings.instance.clone()), metrics.clone()),
        client: client.clone(),
        profiles: NamedIndex::default(),
        profile_status: NamedIndex::default(),
        namespaces,
        namespaces_synced: AtomicBool::new(false),
        service_accounts: NamespacedIndex::default(),
        network_policies: NamespacedIndex::default(),
        metrics,
        state: Mutex::default(),
        status_dirty: Notify::new(),
        leader: leader.clone(),
        settings,
    });
    on_start(Handle { ctx: ctx.clone() });

    // Secondary watches feed their indexes and name the namespaces to reconcile.
    let (trigger_tx, trigger_rx) = mpsc::unbounded_channel::<ObjectRef<NamespaceMeta>>();
    let secondary = future::join3(
        drive_profiles(ctx.clone(), trigger_tx.clone()),
        drive_namespaced::<ServiceAccount>(ctx.clone(), trigger_tx.clone(), None),
        drive_namespaced::<NetworkPolicy>(
            ctx.clone(),
            trigger_tx,
            Some(format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}")),
        ),
    )
    .map(|_| ());

    // Metadata only: labels and annotations are all nsguard reads of a namespace.
    let ns_api = Api::<NamespaceMeta>::all(client.clone());
    let ns_ctx = ctx.clone();
    let namespace_stream = watcher(ns_api, watch_config(ctx.settings.namespace_selector.as_deref()))
        .backoff(watch_backoff())
        .inspect_err({
            let ctx = ctx.clone();
            move |e| ctx.watch_failed("Namespace", e)
        })
        .modify(|ns| ns.managed_fields_mut().clear())
        .reflect(namespace_writer)
        .inspect_ok(move |event| {
            if let Some(ns) = touched(event) {
                ns_ctx.state().pending.observed(&ObjectKey::new("Namespace", "", &ns.name_any()));
            }
            match event {
                WatchEvent::Delete(ns) => ns_ctx.forget_namespace(&ns.name_any()),
                WatchEvent::InitDone => ns_ctx.namespaces_synced.store(true, Ordering::Release),
                _ => {}
            }
        })
        .touched_objects();

    let status = status_loop(ctx.clone());

    // Reconcile only once profiles, ServiceAccounts and NetworkPolicies are cached: a namespace
    // reconciled against an empty profile cache would look ungoverned and be released.
    let controller = {
        let ctx = ctx.clone();
        async move {
            while !(ctx.profiles.is_synced() && ctx.service_accounts.is_synced() && ctx.network_policies.is_synced()) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            info!("caches synced; starting the namespace reconciler");
            let became_leader = became_leader(leader);
            Controller::for_stream(namespace_stream, ctx.namespaces.clone())
                .with_config(ControllerConfig::default().concurrency(ctx.settings.concurrency))
                .reconcile_on(tokio_stream_unbounded(trigger_rx))
                .reconcile_all_on(became_leader)
                .graceful_shutdown_on(shutdown)
                .run(reconcile, error_policy, ctx.clone())
                .for_each(|result| {
                    if let Err(e) = result {
                        match e {
                            kube::runtime::controller::Error::ObjectNotFound(_) => {}
                            other => debug!(error = %other, "reconcile stream"),
                        }
                    }
                    future::ready(())
                })
                .await;
        }
    };
    // The controller ends on shutdown; the watches and the status loop end with it.
    tokio::select! {
        () = controller => {},
        () = secondary => warn!("watch streams ended"),
        () = status => {},
    }
    info!("controller stopped");
    Ok(())
}

fn tokio_stream_unbounded<T: Send + 'static>(mut rx: mpsc::UnboundedReceiver<T>) -> impl Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Emits once each time this replica becomes the leader (and at once if it leads already).
fn became_leader(leader: Leadership) -> impl Stream<Item = ()> + Send {
    futures::stream::unfold((leader, false), |(mut leader, mut was)| async move {
        loop {
            let is = leader.is_leader();
            if is && !was {
                return Some(((), (leader, true)));
            }
            was = is;
            if !leader.changed().await {
                return None;
            }
        }
    })
}

async fn drive_profiles(ctx: Arc<Context>, trigger: mpsc::UnboundedSender<ObjectRef<NamespaceMeta>>) {
    let api = Api::<DynamicObject>::all_with(ctx.client.clone(), &profile_resource());
    let stream = watcher(api, watch_config(ctx.settings.profile_selector.as_deref())).backoff(watch_backoff());
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                ctx.watch_failed("HardeningProfile", &e);
                continue;
            }
        };
        let previous = touched(&event).and_then(|obj| ctx.profiles.get(&obj.name_any()));
        if ctx.profiles.apply(&event, ResourceExt::name_any, Profile::from_object) {
            // Profiles relisted after an outage: what changed meanwhile is unknown, so look again
            // at every namespace.
            for ns in ctx.namespaces.state() {
                let _ = trigger.send(ObjectRef::new(&ns.name_any()));
            }
        }
        ctx.profile_status.apply(&event, ResourceExt::name_any, parse_status);
        ctx.status_dirty.notify_one();
        // Fan a change out to the namespaces it can affect: those the old or new profile selects or
        // governs, and those where it competed. An applied profile was just parsed into the index;
        // a deleted one is parsed from the event.
        let now = match &event {
            WatchEvent::Apply(obj) => ctx.profiles.get(&obj.name_any()),
            WatchEvent::Delete(obj) => Some(Arc::new(Profile::from_object(obj))),
            _ => None,
        };
        let Some(now) = now else { continue };
        if let Err(invalid) = &now.spec {
            warn!(profile = %now.name, errors = %crate::validate::summarize(invalid), "invalid HardeningProfile");
        }
        let competed: HashSet<String> = ctx
            .state()
            .results
            .iter()
            .filter(|(_, r)| r.profile.as_deref() == Some(now.name.as_str()) || r.overridden.contains(&now.name))
            .map(|(ns, _)| ns.clone())
            .collect();
        for ns in ctx.namespaces.state() {
            let view = NamespaceView::from_meta(&ns.metadata);
            if competed.contains(&view.name)
                || may_affect(&now, &view)
                || previous.as_deref().is_some_and(|b| may_affect(b, &view))
            {
                let _ = trigger.send(ObjectRef::new(&view.name));
            }
        }
    }
}

/// Watches a namespaced kind, keeps its index, and triggers the namespace of each change.
async fn drive_namespaced<K>(
    ctx: Arc<Context>,
    trigger: mpsc::UnboundedSender<ObjectRef<NamespaceMeta>>,
    labels: Option<String>,
) where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    Context: IndexFor<K>,
{
    let api = Api::<K>::all(ctx.client.clone());
    let stream = watcher(api, watch_config(labels.as_deref())).backoff(watch_backoff());
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                ctx.watch_failed(<Context as IndexFor<K>>::KIND, &e);
                continue;
            }
        };
        for namespace in ctx.index_event(&event) {
            // Changed while the watch was down: reconcile now, not at the next resync.
            let _ = trigger.send(ObjectRef::new(&namespace));
        }
        if let Some(obj) = touched(&event) {
            let namespace = obj.namespace().unwrap_or_default();
            let key = ObjectKey::new(<Context as IndexFor<K>>::KIND, &namespace, &obj.name_any());
            ctx.state().pending.observed(&key);
            // The initial list needs no triggers: the namespace watch reconciles everything.
            if matches!(event, WatchEvent::Apply(_) | WatchEvent::Delete(_)) {
                let _ = trigger.send(ObjectRef::new(&namespace));
            }
        }
    }
}

/// Routes a watch event to the index of its kind.
pub trait IndexFor<K> {
    const KIND: &'static str;
    /// Applies the event to the index; returns the namespaces a completed relist changed.
    fn index_event(&self, event: &WatchEvent<K>) -> Vec<String>;
}

impl IndexFor<ServiceAccount> for Context {
    const KIND: &'static str = "ServiceAccount";
    fn index_event(&self, event: &WatchEvent<ServiceAccount>) -> Vec<String> {
        self.service_accounts.apply(event, ServiceAccountView::from_object)
    }
}

impl IndexFor<NetworkPolicy> for Context {
    const KIND: &'static str = "NetworkPolicy";
    fn index_event(&self, event: &WatchEvent<NetworkPolicy>) -> Vec<String> {
        self.network_policies.apply(event, NetworkPolicyView::from_object)
    }
}

impl Context {
    /// The resourceVersion the cache holds for `key`; `None` when the object is not cached.
    fn cached_version(&self, key: &ObjectKey) -> Option<Option<String>> {
        let version = |v: Option<&str>| v.map(str::to_owned);
        match key.kind {
            "Namespace" => self.namespaces.get(&ObjectRef::new(&key.name)).map(|n| n.resource_version()),
            "ServiceAccount" => {
                self.service_accounts.get(&key.namespace, &key.name).map(|v| version(v.resource_version()))
            }
            "NetworkPolicy" => {
                self.network_policies.get(&key.namespace, &key.name).map(|v| version(v.resource_version()))
            }
            _ => None,
        }
    }

    /// A watch failed: visible at warn and in `nsguard_watch_errors_total`; the watch retries.
    fn watch_failed(&self, kind: &'static str, error: &watcher::Error) {
        warn!(kind, error = %error, "watch failed; retrying");
        self.metrics.watch_errors.get_or_create(&KindLabels { kind }).inc();
    }

    fn forget_namespace(&self, name: &str) {
        let mut state = self.state();
        state.results.remove(name);
        state.reported.remove(name);
        state.limiter.forget(name);
        state.failures.remove(name);
        state.fighting.remove(name);
        drop(state);
        self.status_dirty.notify_one();
    }

    fn record(&self, namespace: &str, result: NamespaceResult) {
        let mut state = self.state();
        if state.results.get(namespace) != Some(&result) {
            state.results.insert(namespace.to_owned(), result);
            drop(state);
            self.status_dirty.notify_one();
        }
    }
}

fn action_key(namespace: &str, action: &Action) -> ObjectKey {
    match action {
        Action::ApplyNamespace { .. } => ObjectKey::new("Namespace", "", namespace),
        Action::ApplyNetworkPolicy(np) => ObjectKey::new("NetworkPolicy", namespace, &np.name_any()),
        Action::DeleteNetworkPolicy { name, .. } => ObjectKey::new("NetworkPolicy", namespace, name),
        Action::DisableAutomount { name, .. } | Action::ReleaseAutomount { name, .. } => {
            ObjectKey::new("ServiceAccount", namespace, name)
        }
    }
}

fn result_label(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Untouched => "untouched",
        Outcome::Compliant => "compliant",
        Outcome::Converging => "converging",
        Outcome::Drifted => "drifted",
        Outcome::Releasing => "releasing",
        Outcome::Held => "held",
        Outcome::Orphaned => "orphaned",
    }
}

#[instrument(skip_all, fields(namespace = %meta.name_any(), profile = tracing::field::Empty))]
async fn reconcile(meta: Arc<NamespaceMeta>, ctx: Arc<Context>) -> Result<Requeue> {
    let started = Instant::now();
    let ns = NamespaceView::from_meta(&meta.metadata);
    if ns.name.is_empty() || !ctx.is_synced() {
        return Ok(Requeue::requeue(Duration::from_secs(1)));
    }
    let profiles = ctx.profiles.all();
    let governance = govern(&ns, &profiles, &ctx.settings.exclusions);
    if let Some(p) = governance.profile_name() {
        tracing::Span::current().record("profile", p);
    }
    let observed = Observed {
        network_policies: ctx.network_policies.in_namespace(&ns.name),
        service_accounts: ctx.service_accounts.in_namespace(&ns.name),
    };
    let mut plan = plan(&ns, governance, &observed);

    // Writes whose watch events have not arrived yet: the cache is stale for those objects, and
    // the event's own reconcile will look again.
    let now = Instant::now();
    let mut waiting = false;
    {
        let mut state = ctx.state();
        plan.actions.retain(|a| {
            let pending = state.pending.is_pending(&action_key(&ns.name, a), now);
            waiting |= pending;
            !pending
        });
    }

    if waiting && plan.outcome == Outcome::Releasing {
        // The namespace's annotation is what marks it as still to be released: keep it until
        // every other release write has gone out.
        plan.actions.retain(|a| !matches!(a, Action::ApplyNamespace { .. }));
    }

    let outcome = plan.outcome;
    let mut result = NamespaceResult {
        profile: plan.governance.profile_name().map(str::to_owned),
        overridden: plan.governance.overridden().to_vec(),
        outcome,
        detail: describe(&plan),
        failed: false,
        fighting: false,
    };

    if !ctx.is_leader() {
        // Followers keep their view current but never write.
        ctx.record(&ns.name, result);
        return Ok(Requeue::requeue(ctx.settings.resync));
    }

    let corrects_drift = !plan.corrections.is_empty() && !plan.actions.is_empty();
    if corrects_drift {
        let limit = ctx.state().limiter.check(&ns.name, now);
        if let Limit::BackOff(wait) = limit {
            result.fighting = true;
            let note = format!(
                "another writer keeps reverting nsguard ({}); corrections back off exponentially, up to every {}s",
                summary(&plan.drift),
                CorrectionLimiter::MAX_DELAY.as_secs()
            );
            warn!(wait_seconds = wait.as_secs(), "drift keeps coming back; backing off");
            if ctx.state().fighting.insert(ns.name.clone()) {
                publish(&ctx, &ns, EventType::Warning, "DriftFight", "Backoff", note).await;
            }
            ctx.record(&ns.name, result);
            ctx.metrics.reconciles.get_or_create(&ResultLabels { result: "backoff" }).inc();
            return Ok(Requeue::requeue(wait));
        }
    }

    let outcome_result = execute(&ctx, &ns, &plan.actions).await;
    if let Err(e) = outcome_result {
        result.failed = true;
        result.detail = e.to_string();
        ctx.record(&ns.name, result);
        return Err(e);
    }
    {
        let mut state = ctx.state();
        state.failures.remove(&ns.name);
        if plan.drift.is_empty() {
            state.fighting.remove(&ns.name);
        }
        result.fighting = state.fighting.contains(&ns.name);
    }
    report(&ctx, &ns, &plan, corrects_drift).await;
    if outcome == Outcome::Converging && !waiting {
        // The writes went out; the namespace is compliant once their watch events arrive, and the
        // status should say so rather than "converging".
        result.outcome = Outcome::Compliant;
        result.detail = String::new();
    }
    ctx.record(&ns.name, result);
    ctx.metrics.reconciles.get_or_create(&ResultLabels { result: result_label(outcome) }).inc();
    ctx.metrics.reconcile_duration.observe(started.elapsed().as_secs_f64());
    if waiting {
        // The watch event of the write in flight normally triggers the next reconcile; this is
        // the safety net for a write whose event never comes.
        return Ok(Requeue::requeue(PendingWrites::EXPIRY));
    }
    Ok(Requeue::requeue(ctx.settings.resync))
}

fn summary(drift: &[Drift]) -> String {
    // Short enough for an Event's note with the words around it, and for the profile status.
    let mut text = drift.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
    crate::events::truncate(&mut text, 900);
    text
}

fn describe(plan: &Plan) -> String {
    match plan.outcome {
        Outcome::Held => match &plan.governance {
            Governance::Held { profile } => format!(
                "profile {} is invalid ({}); keeping the last good state",
                profile.name,
                profile.spec.as_ref().err().map(|e| crate::validate::summarize(e)).unwrap_or_default()
            ),
            _ => String::new(),
        },
        _ => summary(&plan.drift),
    }
}

fn gone(e: &kube::Error) -> bool {
    // 404: the object was deleted; 409 on an apply or delete with a UID precondition: it was
    // deleted (and maybe re-created). Either way the watch will bring a fresh reconcile.
    matches!(e, kube::Error::Api(s) if s.code == 404 || s.code == 409)
}

async fn execute(ctx: &Context, ns: &NamespaceView, actions: &[Action]) -> Result<()> {
    // Everything but the namespace at once; the namespace (its annotation marks it hardened) last.
    let (namespace_actions, others): (Vec<&Action>, Vec<&Action>) =
        actions.iter().partition(|a| matches!(a, Action::ApplyNamespace { .. }));
    future::try_join_all(others.into_iter().map(|a| execute_one(ctx, ns, a))).await?;
    for a in namespace_actions {
        execute_one(ctx, ns, a).await?;
    }
    Ok(())
}

async fn execute_one(ctx: &Context, ns: &NamespaceView, action: &Action) -> Result<()> {
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let namespace = ns.name.as_str();
    let (written, resource, verb) = match action {
        Action::ApplyNamespace { labels, annotations } => {
            let mut metadata = json!({"name": namespace});
            if let Some(uid) = &ns.uid {
                metadata["uid"] = json!(uid);
            }
            if !labels.is_empty() {
                metadata["labels"] = json!(labels);
            }
            if !annotations.is_empty() {
                metadata["annotations"] = json!(annotations);
            }
            let patch = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": metadata});
            let before = ctx.namespaces.get(&ObjectRef::new(namespace)).and_then(|n| n.resource_version());
            match ctx
                .guarded(Api::<Namespace>::all(ctx.client.clone()).patch(namespace, &apply, &Patch::Apply(&patch)))
                .await?
            {
                Ok(after) if after.resource_version() == before => (Written::Nothing, "namespaces", "apply"),
                Ok(after) => (Written::Object(after.resource_version()), "namespaces", "apply"),
                Err(e) if gone(&e) => (Written::Nothing, "namespaces", "apply"),
                Err(source) => {
                    return Err(Error::ApplyNamespace { namespace: namespace.to_owned(), source });
                }
            }
        }
        Action::ApplyNetworkPolicy(np) => {
            let name = np.name_any();
            let api = Api::<NetworkPolicy>::namespaced(ctx.client.clone(), namespace);
            match ctx.guarded(api.patch(&name, &apply, &Patch::Apply(np.as_ref()))).await? {
                Ok(after) if !crate::plan::same_policy(np.spec.as_ref(), &after.spec.clone().unwrap_or_default()) => {
                    // Another manager owns the field that was edited (say, rules added to a list
                    // nsguard leaves empty), so applying cannot take it back: delete the policy;
                    // its watch event brings a reconcile that re-creates it whole.
                    ctx.metrics.write("apply", "networkpolicies");
                    (delete_policy(ctx, &api, namespace, &name, after.uid()).await?, "networkpolicies", "delete")
                }
                Ok(after) => (Written::Object(after.resource_version()), "networkpolicies", "apply"),
                Err(e) if gone(&e) => (Written::Nothing, "networkpolicies", "apply"),
                Err(source) => {
                    return Err(Error::ApplyNetworkPolicy { namespace: namespace.to_owned(), name, source });
                }
            }
        }
        Action::DeleteNetworkPolicy { name, uid } => {
            let api = Api::<NetworkPolicy>::namespaced(ctx.client.clone(), namespace);
            (delete_policy(ctx, &api, namespace, name, uid.clone()).await?, "networkpolicies", "delete")
        }
        Action::DisableAutomount { name, uid } | Action::ReleaseAutomount { name, uid } => {
            let mut patch = json!({
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": name, "namespace": namespace},
            });
            if let Some(uid) = uid {
                patch["metadata"]["uid"] = json!(uid);
            }
            if matches!(action, Action::DisableAutomount { .. }) {
                patch["automountServiceAccountToken"] = json!(false);
            }
            let api = Api::<ServiceAccount>::namespaced(ctx.client.clone(), namespace);
            match ctx.guarded(api.patch(name, &apply, &Patch::Apply(&patch))).await? {
                Ok(after) => (Written::Object(after.resource_version()), "serviceaccounts", "apply"),
                Err(e) if gone(&e) => (Written::Nothing, "serviceaccounts", "apply"),
                Err(source) => {
                    return Err(Error::ApplyServiceAccount {
                        namespace: namespace.to_owned(),
                        name: name.clone(),
                        source,
                    });
                }
            }
        }
    };
    ctx.metrics.write(verb, resource);
    // Remember the write until the cache shows it. The watch handler updates the cache before it
    // clears pending entries (under the state lock), so checking the cache under the same lock
    // cannot miss an event that raced ahead of this response.
    let key = action_key(namespace, action);
    let mut state = ctx.state();
    let cached = ctx.cached_version(&key);
    let caught_up = match written {
        Written::Nothing => true,
        Written::Object(rv) => cached.is_some_and(|c| c == rv),
        Written::Deleted => cached.is_none(),
    };
    if !caught_up {
        state.pending.record(key, Instant::now());
    }
    Ok(())
}

/// Deletes nsguard's NetworkPolicy `name`, only while it is still the object with `uid`.
async fn delete_policy(
    ctx: &Context,
    api: &Api<NetworkPolicy>,
    namespace: &str,
    name: &str,
    uid: Option<String>,
) -> Result<Written> {
    let params = DeleteParams {
        preconditions: uid.map(|uid| Preconditions { uid: Some(uid), resource_version: None }),
        ..Default::default()
    };
    match ctx.guarded(api.delete(name, &params)).await? {
        Ok(_) => Ok(Written::Deleted),
        Err(e) if gone(&e) => Ok(Written::Nothing),
        Err(source) => {
            Err(Error::DeleteNetworkPolicy { namespace: namespace.to_owned(), name: name.to_owned(), source })
        }
    }
}

/// What a write left behind.
enum Written {
    /// The object at this resourceVersion.
    Object(Option<String>),
    /// The object is gone.
    Deleted,
    /// Nothing changed.
    Nothing,
}

/// Events and counters for what a reconcile did or found. Events are sent on change only, so a
/// converged cluster sends none.
async fn report(ctx: &Context, ns: &NamespaceView, plan: &Plan, corrected: bool) {
    let profile = plan.governance.profile_name().unwrap_or_default().to_owned();
    let mode = plan.desired.as_ref().map(|d| d.mode);
    let (drift_changed, overridden_changed, orphan_changed, first_seen) = {
        let mut state = ctx.state();
        let first_seen = !state.reported.contains_key(&ns.name);
        let reported = state.reported.entry(ns.name.clone()).or_default();
        let overridden = plan.governance.overridden().to_vec();
        let drift_changed = reported.drift != plan.drift;
        let overridden_changed = reported.overridden != overridden;
        let orphaned = plan.outcome == Outcome::Orphaned;
        let orphan_changed = orphaned && !reported.orphaned;
        reported.drift = plan.drift.clone();
        reported.overridden = overridden;
        reported.orphaned = orphaned;
        if corrected {
            state.limiter.record(&ns.name, Instant::now());
            state.corrections.insert(
                profile.clone(),
                Correction { namespace: ns.name.clone(), summary: summary(&plan.corrections) },
            );
        }
        (drift_changed, overridden_changed, orphan_changed, first_seen)
    };

    let enforcing = mode == Some(Mode::Enforce) && !plan.drift.is_empty() && !plan.actions.is_empty();
    if corrected {
        for d in &plan.corrections {
            ctx.metrics.drift_corrected.get_or_create(&DriftLabels { kind: d.kind() }).inc();
        }
        info!(drift = %summary(&plan.corrections), "drift corrected");
        let note = format!("Profile {profile}: {}; set back", summary(&plan.drift));
        publish(ctx, ns, EventType::Warning, "DriftCorrected", "Correct", note).await;
    } else if enforcing && plan.first_hardening {
        info!(changes = plan.drift.len(), "hardened");
        let note = format!("Hardened to profile {profile}: {}", summary(&plan.drift));
        publish(ctx, ns, EventType::Normal, "Hardened", "Harden", note).await;
    } else if enforcing {
        // A ServiceAccount created in an already hardened namespace: routine, so logged and
        // counted, not announced.
        info!(changes = %summary(&plan.drift), "hardened new objects");
    } else if mode == Some(Mode::Audit) && !plan.drift.is_empty() && drift_changed {
        for d in &plan.drift {
            ctx.metrics.drift_detected.get_or_create(&DriftLabels { kind: d.kind() }).inc();
        }
        info!(drift = %summary(&plan.drift), "drift detected (Audit mode)");
        publish(
            ctx,
            ns,
            EventType::Warning,
            "DriftDetected",
            "Audit",
            format!("Profile {profile} (Audit mode, not corrected): {}", summary(&plan.drift)),
        )
        .await;
    }
    if let Governance::Orphaned { profile } = &plan.governance
        && orphan_changed
    {
        warn!(profile = %profile, "orphaned: the namespace's profile is out of view; leaving it as it is");
        publish(ctx, ns, EventType::Warning, "Orphaned", "Hold", format!(
            "Profile {profile} is not visible to nsguard (filtered out by --profile-selector, unreadable, or deleted without nsguard's finalizer); the namespace keeps its hardening and is not released"
        )).await;
    }
    if plan.outcome == Outcome::Releasing && !plan.actions.is_empty() {
        info!("released");
        publish(
            ctx,
            ns,
            EventType::Normal,
            "Released",
            "Release",
            "No profile governs this namespace any more; nsguard released what it applied".to_owned(),
        )
        .await;
    }
    if let Governance::Governed { overridden, .. } = &plan.governance
        && !overridden.is_empty()
        && overridden_changed
        && (!first_seen || plan.first_hardening)
    {
        publish(ctx, ns, EventType::Warning, "ProfileConflict", "Resolve", format!(
            "Profiles {} also select this namespace; {profile} governs it (higher priority, or the first name on a tie)",
            overridden.join(", ")
        )).await;
    }
}

async fn publish(
    ctx: &Context,
    ns: &NamespaceView,
    type_: EventType,
    reason: &'static str,
    action: &'static str,
    note: String,
) {
    let regarding = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Namespace".into()),
        name: Some(ns.name.clone()),
        uid: ns.uid.clone(),
        ..Default::default()
    };
    ctx.events.send(Pending { regarding, severity: type_, reason, action, note }).await;
}

fn error_policy(meta: Arc<NamespaceMeta>, error: &Error, ctx: Arc<Context>) -> Requeue {
    let name = meta.name_any();
    if error.not_leading() {
        // Becoming the leader again reconciles every namespace.
        debug!(namespace = %name, "write skipped: not the leader");
        return Requeue::await_change();
    }
    let failures = {
        let mut state = ctx.state();
        let n = state.failures.entry(name.clone()).or_default();
        *n = n.saturating_add(1);
        *n
    };
    // 1 s, 2 s, 4 s, ... at most 5 minutes.
    let delay = Duration::from_secs(1u64 << failures.saturating_sub(1).min(8)).min(Duration::from_secs(300));
    warn!(namespace = %name, error = %error, retry_in_seconds = delay.as_secs(), "reconcile failed");
    ctx.metrics.reconciles.get_or_create(&ResultLabels { result: "error" }).inc();
    Requeue::requeue(delay)
}

/// Writes each profile's status when the aggregate of its namespaces changes.
async fn status_loop(ctx: Arc<Context>) {
    let api = Api::<HardeningProfile>::all(ctx.client.clone());
    loop {
        ctx.status_dirty.notified().await;
        // Coalesce bursts of namespace results into one status write per profile.
        tokio::time::sleep(ctx.settings.status_interval).await;
        if !ctx.is_synced() {
            ctx.status_dirty.notify_one();
            continue;
        }
        let profiles = ctx.profiles.all();
        let statuses = {
            let state = ctx.state();
            let previous: HashMap<String, HardeningProfileStatus> = profiles
                .iter()
                .filter_map(|p| ctx.profile_status.get(&p.name).and_then(|s| (*s).clone()).map(|s| (p.name.clone(), s)))
                .collect();
            let live: HashSet<String> = ctx.namespaces.state().iter().map(|n| n.name_any()).collect();
            let now = Time(k8s_openapi::jiff::Timestamp::now());
            aggregate(
                &profiles,
                state.results.iter().filter(|(ns, _)| live.contains(*ns)).map(|(ns, r)| (ns.as_str(), r)),
                &previous,
                &state.corrections,
                &now,
            )
        };
        if ctx.is_leader() {
            manage_finalizers(&ctx, &profiles).await;
        }
        let orphaned = ctx.state().results.values().filter(|r| r.outcome == Outcome::Orphaned).count();
        ctx.metrics.orphaned.set(i64::try_from(orphaned).unwrap_or(i64::MAX));
        for (name, status) in statuses {
            let labels = ProfileLabels { profile: name.clone() };
            ctx.metrics.matched.get_or_create(&labels).set(i64::from(status.matched_namespaces));
            ctx.metrics.compliant.get_or_create(&labels).set(i64::from(status.compliant_namespaces));
            if !ctx.is_leader() {
                continue;
            }
            let current = ctx.profile_status.get(&name).and_then(|s| (*s).clone());
            let key = (name.clone(), ctx.profiles.get(&name).and_then(|p| p.uid.clone()));
            if current.as_ref() == Some(&status) || ctx.state().written_status.get(&key) == Some(&status) {
                continue;
            }
            let patch = json!({"apiVersion": "nsguard.io/v1alpha1", "kind": "HardeningProfile", "status": status});
            let span = info_span!("status", profile = %name);
            let params = PatchParams::apply(FIELD_MANAGER).force();
            let Ok(written) =
                ctx.guarded(api.patch_status(&name, &params, &Patch::Apply(&patch))).instrument(span).await
            else {
                ctx.status_dirty.notify_one();
                continue;
            };
            match written {
                Ok(_) => {
                    ctx.metrics.write("apply", "hardeningprofiles/status");
                    ctx.state().written_status.insert(key, status);
                }
                Err(e) if matches!(&e, kube::Error::Api(s) if s.code == 404) => {}
                Err(e) => {
                    warn!(profile = %name, error = %Error::PatchStatus { name: name.clone(), source: e }, "status not written; retrying");
                    ctx.status_dirty.notify_one();
                }
            }
        }
    }
}

/// Puts nsguard's finalizer on every live profile and takes it off a deleted one once none of its
/// namespaces is left to release (see [`finalizer_change`]).
async fn manage_finalizers(ctx: &Context, profiles: &[Arc<Profile>]) {
    let api = Api::<HardeningProfile>::all(ctx.client.clone());
    let namespaces = ctx.namespaces.state();
    for profile in profiles {
        let still_annotated = || {
            namespaces
                .iter()
                .filter(|ns| {
                    awaits_release(&NamespaceView::from_meta(&ns.metadata), &profile.name, &ctx.settings.exclusions)
                })
                .count()
        };
        let change = finalizer_change(profile, if profile.deleting { still_annotated() } else { 0 });
        let written = match change {
            FinalizerChange::None => continue,
            FinalizerChange::Add => {
                let patch = json!({"apiVersion": "nsguard.io/v1alpha1", "kind": "HardeningProfile",
                    "metadata": {"name": profile.name, "uid": profile.uid, "finalizers": [PROFILE_FINALIZER]}});
                ctx.guarded(api.patch(&profile.name, &PatchParams::apply(FIELD_MANAGER), &Patch::Apply(&patch))).await
            }
            FinalizerChange::Remove => {
                let Some(at) = profile.finalizers.iter().position(|f| f == PROFILE_FINALIZER) else { continue };
                // Test-and-remove: never drops another controller's finalizer that moved into the slot.
                let patch: json_patch::Patch = match serde_json::from_value(json!([
                    {"op": "test", "path": format!("/metadata/finalizers/{at}"), "value": PROFILE_FINALIZER},
                    {"op": "remove", "path": format!("/metadata/finalizers/{at}")},
                ])) {
                    Ok(patch) => patch,
                    Err(_) => continue,
                };
                info!(profile = %profile.name, "every namespace released; letting the deleted profile go");
                ctx.guarded(api.patch(&profile.name, &PatchParams::default(), &Patch::<()>::Json(patch))).await
            }
        };
        match written {
            Ok(Ok(_)) => ctx.metrics.write("patch", "hardeningprofiles"),
            Ok(Err(e)) if gone(&e) || matches!(&e, kube::Error::Api(s) if s.code == 422) => {}
            Ok(Err(e)) => {
                warn!(profile = %profile.name, error = %e, "finalizer not updated; retrying");
                ctx.status_dirty.notify_one();
            }
            Err(_) => ctx.status_dirty.notify_one(),
        }
    }
}
