//! Profile-level writes: each profile's status (an aggregate of its namespaces' results, never the
//! place where work is done) and nsguard's finalizer on it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tracing::{Instrument, info, info_span, warn};

use super::apply::gone;
use super::context::Context;
use super::error::Error;
use crate::core::crd::{HardeningProfile, HardeningProfileStatus};
use crate::core::guard::ObjectKey;
use crate::core::model::{FIELD_MANAGER, PROFILE_FINALIZER, Profile};
use crate::core::selection::{FinalizerChange, awaits_release, finalizer_change};
use crate::core::status::{Tallies, needs_write, statuses, tally};
use crate::ops::metrics::ProfileLabels;

/// The longest the writer waits, after a start, for every namespace's first result.
const SETTLE_LIMIT: Duration = Duration::from_secs(60);

/// The longest the writer waits before retrying after failed writes.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Writes each profile's status when the aggregate of its namespaces changes, and keeps the
/// finalizers. Failed writes are retried with back-off.
pub async fn run(ctx: Arc<Context>) {
    let mut failures = 0u32;
    let mut gauged: HashSet<String> = HashSet::new();
    // After a start, nothing is written until every namespace has been looked at once (or
    // SETTLE_LIMIT passed): a partial aggregate would be written, then corrected.
    let mut settling: Option<Option<std::time::Instant>> = Some(None);
    // The last walk's tallies, and the results generation they counted.
    let mut tallies: Option<(u64, Tallies)> = None;
    loop {
        ctx.status_dirty.notified().await;
        let mut ok = true;
        // Coalesce bursts of namespace results into one status write per profile; back off after
        // failures.
        tokio::time::sleep(retry_wait(&ctx, failures).max(ctx.settings.status_interval)).await;
        if !ctx.is_synced() {
            ctx.status_dirty.notify_one();
            continue;
        }
        if let Some(since) = &mut settling {
            let since = *since.get_or_insert_with(std::time::Instant::now);
            let unseen = {
                let state = ctx.state();
                ctx.namespaces
                    .state()
                    .iter()
                    .filter(|ns| state.namespaces.get(&ns.name_any()).is_none_or(|m| m.result.is_none()))
                    .count()
            };
            if unseen > 0 && since.elapsed() < SETTLE_LIMIT {
                ctx.status_dirty.notify_one();
                continue;
            }
            settling = None;
        }
        let profiles = ctx.profiles.all();
        let previous: HashMap<String, HardeningProfileStatus> = profiles
            .iter()
            .filter_map(|p| ctx.profile_status.get(&p.name).and_then(|s| (*s).clone()).map(|s| (p.name.clone(), s)))
            .collect();
        // Every namespace's result is walked (under the lock reconciles share) only when one
        // changed since the last walk: a drift correction alone does not change the tallies.
        let generation = ctx.results_generation.load(Ordering::Acquire);
        if tallies.as_ref().is_some_and(|(counted, _)| *counted != generation) {
            tallies = None;
        }
        let (_, counted) = tallies.get_or_insert_with(|| (generation, walk(&ctx)));
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let statuses = statuses(&profiles, counted, &previous, &ctx.state().corrections, &now);
        forget_gone_profiles(&ctx, &profiles, &mut gauged);
        for (name, status) in statuses {
            let labels = ProfileLabels { profile: name.clone() };
            ctx.metrics.matched.get_or_create(&labels).set(i64::from(status.matched_namespaces));
            ctx.metrics.compliant.get_or_create(&labels).set(i64::from(status.compliant_namespaces));
            let active = status.exceptions.as_ref().map_or(0, |e| e.active);
            ctx.metrics.exceptions_active.get_or_create(&labels).set(i64::from(active));
            gauged.insert(name.clone());
            if ctx.is_leader() {
                ok &= write_status(&ctx, &name, status).await;
            }
        }
        if ok {
            failures = 0;
        } else {
            failures = failures.saturating_add(1);
            ctx.status_dirty.notify_one();
        }
    }
}

/// Tallies every namespace's result, under the lock reconciles share (timed), and sets the gauges
/// the tallies count.
fn walk(ctx: &Context) -> Tallies {
    let started = std::time::Instant::now();
    let counted = {
        let state = ctx.state();
        tally(state.namespaces.iter().filter_map(|(ns, m)| Some((ns.as_str(), m.result.as_ref()?))))
    };
    ctx.metrics.status_pass_duration.observe(started.elapsed().as_secs_f64());
    ctx.metrics.orphaned.set(i64::try_from(counted.orphaned).unwrap_or(i64::MAX));
    ctx.metrics.enforce_held.set(i64::try_from(counted.held).unwrap_or(i64::MAX));
    counted
}

/// A profile that is gone leaves no metric series and no remembered state behind.
fn forget_gone_profiles(ctx: &Context, profiles: &[Arc<Profile>], gauged: &mut HashSet<String>) {
    let live: HashSet<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
    gauged.retain(|name| {
        let keep = live.contains(name.as_str());
        if !keep {
            let labels = ProfileLabels { profile: name.clone() };
            ctx.metrics.matched.remove(&labels);
            ctx.metrics.compliant.remove(&labels);
            ctx.metrics.exceptions_active.remove(&labels);
        }
        keep
    });
    let mut state = ctx.state();
    state.corrections.retain(|name, _| live.contains(name.as_str()));
    state.written_status.retain(|(name, _), _| live.contains(name.as_str()));
}

/// Writes one profile's status if it changed; false when the write failed.
async fn write_status(ctx: &Context, name: &str, status: HardeningProfileStatus) -> bool {
    let current = ctx.profile_status.get(name).and_then(|s| (*s).clone());
    let key = (name.to_owned(), ctx.profiles.get(name).and_then(|p| p.uid.clone()));
    if !needs_write(&status, current.as_ref(), ctx.state().written_status.get(&key)) {
        return true;
    }
    let api = Api::<HardeningProfile>::all(ctx.client.clone());
    let patch = json!({"apiVersion": "nsguard.io/v1alpha1", "kind": "HardeningProfile", "status": status});
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let apply = Patch::Apply(&patch);
    let written = ctx.guarded(api.patch_status(name, &params, &apply));
    match written.instrument(info_span!("status", profile = %name)).await {
        Ok(Ok(_)) => {
            ctx.metrics.write("apply", "hardeningprofiles/status");
            ctx.state().written_status.insert(key, status);
            true
        }
        Ok(Err(e)) if gone(&e) => true,
        Ok(Err(source)) => {
            let error = Error::PatchStatus { name: name.to_owned(), source };
            warn!(profile = %name, error = %error, "status not written; retrying");
            false
        }
        Err(_) => false,
    }
}

/// How long to wait after `failures` failed passes in a row: doubling from the status interval, up
/// to [`MAX_RETRY`].
fn retry_wait(ctx: &Context, failures: u32) -> Duration {
    ctx.settings.status_interval.saturating_mul(1 << failures.min(6)).min(MAX_RETRY)
}

/// Keeps nsguard's finalizer on profiles, at once on every change (no coalescing pause: namespaces
/// wait for a new profile's finalizer before they are hardened, see `awaits_finalizer`); failed
/// writes are retried with back-off.
pub async fn keep_finalizers(ctx: Arc<Context>) {
    let mut failures = 0u32;
    loop {
        ctx.finalizers_dirty.notified().await;
        if !ctx.is_synced() {
            // Never decide against half-filled caches: look again shortly.
            tokio::time::sleep(ctx.settings.status_interval).await;
            ctx.finalizers_dirty.notify_one();
            continue;
        }
        // A follower writes nothing; becoming the leader re-reconciles everything, which wakes this.
        if !ctx.is_leader() || finalizers(&ctx).await {
            failures = 0;
            if ctx.profiles.all().iter().any(|p| p.deleting) {
                // A release in progress wakes this after every namespace: count at most a few
                // times a second, not once per namespace.
                tokio::time::sleep(ctx.settings.status_interval.min(Duration::from_millis(100))).await;
            }
        } else {
            failures = failures.saturating_add(1);
            tokio::time::sleep(retry_wait(&ctx, failures)).await;
            ctx.finalizers_dirty.notify_one();
        }
    }
}

/// Puts nsguard's finalizer on every live profile and takes it off a deleted one once none of its
/// namespaces is left to release (see [`finalizer_change`]); false when a write failed.
async fn finalizers(ctx: &Context) -> bool {
    let api = Api::<HardeningProfile>::all(ctx.client.clone());
    let mut ok = true;
    for (profile, still_annotated) in still_to_release(ctx) {
        let written = match finalizer_change(&profile, still_annotated) {
            FinalizerChange::None => continue,
            FinalizerChange::Add => {
                let patch = json!({"apiVersion": "nsguard.io/v1alpha1", "kind": "HardeningProfile",
                    "metadata": {"name": profile.name, "uid": profile.uid, "finalizers": [PROFILE_FINALIZER]}});
                let params = PatchParams::apply(FIELD_MANAGER);
                ctx.guarded(api.patch(&profile.name, &params, &Patch::Apply(&patch))).await
            }
            FinalizerChange::Remove => {
                let Some(at) = profile.finalizers.iter().position(|f| f == PROFILE_FINALIZER) else { continue };
                // Test-and-remove: never drops another controller's finalizer that moved into the slot.
                let Ok(patch) = serde_json::from_value::<json_patch::Patch>(json!([
                    {"op": "test", "path": format!("/metadata/finalizers/{at}"), "value": PROFILE_FINALIZER},
                    {"op": "remove", "path": format!("/metadata/finalizers/{at}")},
                ])) else {
                    continue;
                };
                info!(profile = %profile.name, "every namespace released; letting the deleted profile go");
                ctx.guarded(api.patch(&profile.name, &PatchParams::default(), &Patch::<()>::Json(patch))).await
            }
        };
        match written {
            Ok(Ok(_)) => ctx.metrics.write("patch", "hardeningprofiles"),
            // Gone, or changed under us (the test failed): the watch brings the next look.
            Ok(Err(e)) if gone(&e) => {}
            // The test-and-remove failed (the finalizers changed under us): the watch brings the
            // next look. A refused add is retried and logged: the profile's namespaces wait for it.
            Ok(Err(kube::Error::Api(s))) if s.code == 422 && profile.deleting => {}
            Ok(Err(e)) => {
                warn!(profile = %profile.name, error = %e, "finalizer not updated; retrying");
                ok = false;
            }
            Err(_) => ok = false,
        }
    }
    ok
}

/// Every profile, with how many namespaces a deleted one must still release: those that carry its
/// annotation, and (conservatively) those a reconcile is writing or whose namespace write has not
/// shown in the cache yet. Counted under the lock a reconcile decides its governance under.
fn still_to_release(ctx: &Context) -> Vec<(Arc<Profile>, usize)> {
    // Under the lock only the snapshot: the profiles and, per deleted profile, the namespaces being
    // written for it or whose write for it has not shown yet. The namespace cache is read after:
    // a later cache only shows more of nsguard's annotations, never fewer than are there.
    let (profiles, busy) = {
        let mut state = ctx.state();
        let profiles = ctx.profiles.all();
        let deleting: HashSet<&str> = profiles.iter().filter(|p| p.deleting).map(|p| p.name.as_str()).collect();
        if deleting.is_empty() {
            drop(state);
            return profiles.into_iter().map(|p| (p, 0)).collect();
        }
        let now = std::time::Instant::now();
        let mut busy: HashMap<String, usize> = HashMap::new();
        for (name, memory) in &mut state.namespaces {
            let claimed = memory.result.as_ref().and_then(|r| r.profile.clone());
            let writing = memory
                .writing
                .clone()
                .or_else(|| claimed.filter(|_| memory.pending.is_pending(&ObjectKey::new("Namespace", "", name), now)));
            if let Some(p) = writing.filter(|p| deleting.contains(p.as_str())) {
                *busy.entry(p).or_default() += 1;
            }
        }
        (profiles, busy)
    };
    let exclusions = &ctx.settings.exclusions;
    let namespaces = ctx.namespaces.state();
    profiles
        .iter()
        .map(|p| {
            let count = if p.deleting {
                let annotated =
                    namespaces.iter().filter(|ns| awaits_release(&ns.view, &p.name, &profiles, exclusions)).count();
                annotated + busy.get(&p.name).copied().unwrap_or(0)
            } else {
                0
            };
            (p.clone(), count)
        })
        .collect()
}
