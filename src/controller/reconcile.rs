//! One reconcile of one namespace: read the caches, let the core decide, execute the decision.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, stream};

use kube::runtime::reflector::ObjectRef;
use tracing::{debug, info, instrument, warn};

use super::apply::{WRITE_CONCURRENCY, execute};
use super::context::Context;
use super::error::Error;
use super::events::Pending;
use super::gate::probe;
use crate::core::ahead::ahead_of_gate;
use crate::core::announce::{Announcement, Subject, subject, summary};
use crate::core::decide::{Decision, Next, decide_after};
use crate::core::gate::{self, AfterWrite, Evaluation, Step};
use crate::core::guard::ObjectKey;
use crate::core::model::NamespaceView;
use crate::core::plan::{Action, Observed, Outcome, plan, report_alongside};
use crate::core::selection::{Governance, awaits_finalizer, finalizer_settling, govern};
use crate::core::status::Correction;
use crate::ops::metrics::{DriftLabels, ResultLabels};

/// What a reconcile asks for next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requeue {
    /// Nothing until a watch event (or the resync backstop) names the namespace again.
    AwaitChange,
    /// Another look after this long, unless a trigger brings one sooner.
    After(Duration),
}

// At the warn level, so that a warning's line names its namespace and profile however quiet the
// log is (an info span is off under `NSGUARD_LOG=warn`, and its warnings named no namespace).
#[instrument(level = "warn", skip_all, fields(namespace = %name, profile = tracing::field::Empty))]
pub async fn reconcile(name: &str, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let started = Instant::now();
    // Read now: an event since the name was handed on waits for this reconcile to end. Gone from
    // the cache: nothing to do.
    let Some(meta) = ctx.namespaces.get(&ObjectRef::new(name)) else { return Ok(Requeue::AwaitChange) };
    let ns = &meta.view;
    if ns.name.is_empty() || !ctx.is_synced() {
        // Never decide against half-filled caches; every namespace is reconciled once they sync.
        return Ok(Requeue::AwaitChange);
    }
    // Governance is decided and the namespace marked as being written under one lock, the lock
    // the finalizer keeper counts under: a profile whose deletion begins meanwhile keeps its
    // finalizer until these writes show in the cache and can be released.
    let (governance, settling, _writing) = {
        let mut state = ctx.state();
        let governance = govern(ns, &ctx.profiles.all(), &ctx.settings.exclusions);
        let (settling, writing) = match &governance {
            Governance::Governed { profile, .. } => {
                let settling = finalizer_settling(state.finalized_at.get(&profile.name).copied(), Instant::now());
                let writing = (!awaits_finalizer(&governance) && settling.is_none()).then(|| {
                    state.namespaces.entry(ns.name.clone()).or_default().writing = Some(profile.name.clone());
                    Writing { ctx: &ctx, namespace: &ns.name }
                });
                (settling, writing)
            }
            _ => (None, None),
        };
        (governance, settling, writing)
    };
    if let Some(p) = governance.profile_name() {
        tracing::Span::current().record("profile", p);
    }
    if awaits_finalizer(&governance) {
        // The profile's finalizer event, moments away, fans out to this namespace again.
        debug!("waiting for the profile to carry nsguard's finalizer");
        ctx.finalizers_dirty.notify_one();
        return Ok(Requeue::AwaitChange);
    }
    if let Some(wait) = settling {
        debug!(wait_ms = wait.as_millis(), "waiting for the profile's new finalizer to settle");
        return Ok(Requeue::After(wait));
    }
    let mut observed = Observed {
        network_policies: ctx.network_policies.in_namespace(&ns.name),
        service_accounts: ctx.service_accounts.in_namespace(&ns.name),
        report: ctx.report(&ns.name),
        now: k8s_openapi::jiff::Timestamp::now(),
        hold: None,
    };
    let now = Instant::now();
    let (plan, ahead) = gated_plan(&ctx, ns, governance, &mut observed, now).await?;
    let decision = {
        let mut state = ctx.state();
        let memory = state.namespaces.entry(ns.name.clone()).or_default();
        decide_after(&ns.name, &plan, memory, ctx.is_leader(), &ahead, now)
    };

    // A profile change's label update goes with its Report; a first hardening or a raise of
    // enforce goes first, and its warnings decide what the Report says.
    let (written, mut reported) = if report_alongside(ns, plan.desired.as_ref(), &decision.writes) {
        let (written, reported) =
            futures::join!(execute(&ctx, ns, &decision.writes), execute(&ctx, ns, &decision.reports));
        (written, Some(reported))
    } else {
        (execute(&ctx, ns, &decision.writes).await, None)
    };
    let executed = match written {
        Ok(warnings) => {
            let cached = ctx.state().namespaces.get(&ns.name).and_then(|m| m.hold.as_deref().cloned());
            let next = plan.desired.as_ref().map(|want| gate::after_write(ns, want, cached.as_ref(), &warnings, now));
            match next {
                Some(AfterWrite::Restored) => {
                    warn!(warnings = ?warnings, "enforce restored after tampering; existing pods violate it");
                }
                Some(AfterWrite::HoldBack(hold)) => {
                    warn!(warnings = ?warnings, "existing pods violate the enforce level just set; holding it back");
                    let mut state = ctx.state();
                    let memory = state.namespaces.entry(ns.name.clone()).or_default();
                    memory.hold = Some(Box::new(hold));
                    memory.suspect = true;
                    return Ok(Requeue::After(Duration::from_millis(50)));
                }
                Some(AfterWrite::Done) | None => {}
            }
            match reported.take() {
                Some(reported) => reported.map(drop),
                None => execute(&ctx, ns, &decision.reports).await.map(drop),
            }
        }
        Err(e) => Err(e),
    };
    if let Err(e) = executed {
        if let Error::Taken { name, .. } = &e {
            warn!(policy = %name, "a NetworkPolicy with nsguard's name exists and is not nsguard's; leaving it alone");
            let announcement = {
                let mut state = ctx.state();
                decision.taken(state.namespaces.entry(ns.name.clone()).or_default(), name, now)
            };
            if let Some(announcement) = announcement {
                publish(&ctx, ns, &subject(&[], &[], &observed), &announcement).await;
            }
            // The rest of the hardening goes ahead at once, without that policy.
            return Ok(Requeue::After(Duration::from_millis(200)));
        }
        if !e.not_leading() {
            let reports = {
                let mut state = ctx.state();
                let memory = state.namespaces.entry(ns.name.clone()).or_default();
                let reports = decision.failed(&ns.name, &plan, memory, e.to_string(), now);
                ctx.forget_if_gone(&mut state, &ns.name);
                reports
            };
            // Best effort: the condition and Report say the writes failed (the retry follows).
            if let Err(report_error) = execute(&ctx, ns, &reports).await {
                debug!(error = %report_error, "could not report the failed write");
            }
        }
        ctx.changed();
        return Err(e);
    }
    let result_changed = {
        let mut state = ctx.state();
        let changed = decision.succeeded(&plan, state.namespaces.entry(ns.name.clone()).or_default(), now);
        if !decision.corrected.is_empty()
            && let Some(profile) = plan.governance.profile_name()
        {
            let correction = Correction { namespace: ns.name.clone(), summary: summary(&decision.corrected) };
            state.corrections.insert(profile.to_owned(), correction);
        }
        ctx.forget_if_gone(&mut state, &ns.name);
        changed
    };
    if result_changed {
        ctx.changed();
    } else {
        // The namespace is as it was (a correction made it compliant again, or nothing changed):
        // the tallies stand; only a correction's mention in the profile's status is new.
        ctx.looked();
    }
    count(&ctx, &decision, plan.outcome);
    if !decision.announce.is_empty() {
        // The writes sent beside the dry-run count too (copied only then, and only if any).
        let about = if ahead.is_empty() {
            subject(&decision.writes, &decision.reports, &observed)
        } else {
            subject(&[ahead.as_slice(), &decision.writes].concat(), &decision.reports, &observed)
        };
        for announcement in &decision.announce {
            publish(&ctx, ns, &about, announcement).await;
        }
    }
    ctx.metrics.reconcile_duration.observe(started.elapsed().as_secs_f64());
    Ok(match decision.next {
        // The resync backstop comes from [`super::watches::resync`], not a timer per namespace.
        Next::Resync => Requeue::AwaitChange,
        // Never later than the resync backstop (an exception may end weeks from now).
        Next::After(wait) => Requeue::After(wait.min(ctx.settings.resync)),
    })
}

/// How soon a failed enforce dry-run is tried again (at most).
const RETRY_PROBE: Duration = Duration::from_secs(30);

/// The plan, through the rollout gate: when raising enforce needs a dry-run first, run it (and
/// meanwhile the writes that do not depend on it, returned as sent) and plan again with the hold
/// it finds (or none).
async fn gated_plan(
    ctx: &Context,
    ns: &NamespaceView,
    governance: crate::core::selection::Governance,
    observed: &mut Observed,
    now: Instant,
) -> Result<(crate::core::plan::Plan, Vec<Action>), Error> {
    let first = plan(ns, governance.clone(), observed);
    let Some(want) = &first.desired else { return Ok((first, Vec::new())) };
    let (cached, suspect, settled) = {
        let mut state = ctx.state();
        let memory = state.namespaces.entry(ns.name.clone()).or_default();
        let in_flight = memory.pending.is_pending(&ObjectKey::new("Namespace", "", &ns.name), now);
        (memory.hold.as_deref().cloned(), memory.suspect, !in_flight)
    };
    let step = gate::step(ns, want, observed.service_accounts.len(), cached.as_ref(), suspect, settled, now);
    let mut ahead = Vec::new();
    let hold = match step {
        Step::Pass => None,
        Step::Held(hold) => Some(hold),
        // Followers write nothing: they keep what the leader's view would be without asking.
        Step::Probe(_) if !ctx.is_leader() => cached,
        Step::Probe(levels) => {
            let recheck = gate::jittered(ctx.settings.enforce_recheck, &ns.name);
            ctx.metrics.enforce_checks.inc();
            let candidates = {
                let mut state = ctx.state();
                let memory = state.namespaces.entry(ns.name.clone()).or_default();
                ahead_of_gate(&ns.name, &first, memory, ctx.is_leader(), now)
            };
            // Each on its own: only those that succeeded count as sent; a failed one is written
            // again (and its failure handled) with the rest.
            // (Boxed, as in `execute`: the controller's stream stays `Send`.)
            let sending: Vec<BoxFuture<'_, Option<Action>>> = candidates
                .iter()
                .map(|a| {
                    async move { execute(ctx, ns, std::slice::from_ref(a)).await.is_ok().then(|| a.clone()) }.boxed()
                })
                .collect();
            let sending = stream::iter(sending).buffer_unordered(WRITE_CONCURRENCY).collect::<Vec<Option<Action>>>();
            let (probed, sent) = futures::join!(probe(ctx, &ns.name, &want.enforce, &levels), sending);
            ahead = sent.into_iter().flatten().collect();
            let (results, recheck) = match probed {
                Ok(results) => (results, recheck),
                // Fail closed: without an answer, enforce is not raised; it stays where it is, the
                // rest of the hardening goes ahead, and the check is tried again within a minute.
                Err(e) => {
                    warn!(error = %e, "the enforce dry-run failed; enforce stays where it is");
                    let failed = Evaluation { incomplete: vec![e.to_string()], ..Default::default() };
                    (vec![(want.enforce.level, failed)], recheck.min(gate::jittered(RETRY_PROBE, &ns.name)))
                }
            };
            let hold = gate::resolve(ns, &want.enforce, &results, now, recheck);
            if let Some(h) = &hold {
                info!(level = h.level.as_str(), detail = %h.describe(), "enforce held");
            }
            let mut state = ctx.state();
            let memory = state.namespaces.entry(ns.name.clone()).or_default();
            memory.suspect = false;
            memory.hold = hold.clone().map(Box::new);
            hold
        }
    };
    if hold.is_none() {
        if let Some(memory) = ctx.state().namespaces.get_mut(&ns.name) {
            memory.hold = None;
            memory.suspect = false;
        }
        return Ok((first, ahead));
    }
    observed.hold = hold;
    Ok((plan(ns, governance, observed), ahead))
}

/// Metrics and logs for what a reconcile did.
fn count(ctx: &Context, decision: &Decision, outcome: Outcome) {
    for d in &decision.corrected {
        ctx.metrics.drift_corrected.get_or_create(&DriftLabels { kind: d.kind() }).inc();
    }
    for d in &decision.detected {
        ctx.metrics.drift_detected.get_or_create(&DriftLabels { kind: d.kind() }).inc();
    }
    let result = if decision.backoff { "backoff" } else { result_label(outcome) };
    if !decision.writes.is_empty() {
        info!(writes = decision.writes.len(), result, "wrote");
    }
    ctx.metrics.reconciles.get_or_create(&ResultLabels { result }).inc();
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

async fn publish(ctx: &Context, ns: &NamespaceView, subject: &Subject, announcement: &Announcement) {
    if !ctx.is_leader() {
        // Lost the lease since deciding: the new leader speaks for the cluster now.
        return;
    }
    if announcement.severity == crate::core::announce::Severity::Warning {
        warn!(reason = announcement.reason, note = %announcement.note, "event");
    } else {
        info!(reason = announcement.reason, note = %announcement.note, "event");
    }
    let pending = Pending {
        namespace: ns.name.clone(),
        namespace_uid: ns.uid.clone(),
        subject: subject.clone(),
        announcement: announcement.clone(),
    };
    ctx.events.send(pending).await;
}

/// What a failed reconcile asks for: a retry, with back-off.
pub fn error_policy(name: &str, error: &Error, ctx: &Context) -> Requeue {
    if error.not_leading() {
        // Leadership lapsed between deciding and writing: look again shortly (a new term also
        // reconciles every namespace).
        debug!(namespace = %name, "write skipped: not the leader");
        return Requeue::After(Duration::from_secs(2));
    }
    let failures = ctx.state().namespaces.get(name).map_or(1, |m| m.failures);
    let delay = crate::core::decide::retry_delay(failures).max(Duration::from_secs(1));
    warn!(namespace = %name, error = %error, retry_in_seconds = delay.as_secs(), "reconcile failed");
    ctx.metrics.reconciles.get_or_create(&ResultLabels { result: "error" }).inc();
    Requeue::After(delay)
}

/// Clears a namespace's `writing` mark when its reconcile ends, however it ends, and lets the
/// finalizer keeper look again.
struct Writing<'a> {
    ctx: &'a Context,
    namespace: &'a str,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        if let Some(memory) = self.ctx.state().namespaces.get_mut(self.namespace) {
            memory.writing = None;
        }
        self.ctx.finalizers_dirty.notify_one();
    }
}
