//! Pure: the plan of one namespace and what nsguard remembers of it → what to write, what to
//! announce, and what to record. The controller only executes a [`Decision`].
//!
//! Everything nsguard remembers per namespace lives in one [`Memory`] (one owner, one lifetime: the
//! controller drops it when the namespace is deleted).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use kube::ResourceExt;

use crate::core::announce::{Announcement, Reported, Severity, announcements, summary};
pub use crate::core::guard::action_key;
use crate::core::guard::{Correction, CorrectionHistory, ObjectKey, PendingWrites};
use crate::core::plan::{Action, Drift, Outcome, Plan};
use crate::core::selection::Governance;
use crate::core::status::NamespaceResult;
use crate::core::{condition, report};

/// What nsguard remembers of one namespace between reconciles.
#[derive(Debug, Default)]
pub struct Memory {
    /// The last result, for the profile status.
    pub result: Option<NamespaceResult>,
    /// What was last announced, so events are sent on change only.
    pub reported: Reported,
    /// Writes whose watch events have not arrived yet.
    pub pending: PendingWrites,
    /// Drift corrections, to back off from a writer that keeps reverting nsguard.
    pub corrections: CorrectionHistory,
    /// Failed reconciles in a row, for the retry back-off.
    pub failures: u32,
    /// A fight with another writer is going on (announced once per episode).
    pub fighting: bool,
    /// The field managers of the current fight episode (kept while it lasts, so what nsguard shows
    /// about it stays the same between corrections).
    pub rivals: Vec<String>,
    /// When drift that needed correcting was last seen (corrected or backed off from): a fight
    /// episode ends only a whole window after it.
    pub last_contested: Option<Instant>,
    /// NetworkPolicies whose name an object nsguard did not create already holds, and since when:
    /// left alone, and tried again only after [`TAKEN_RETRY`].
    pub taken: BTreeMap<String, Instant>,
    /// The rollout gate's last hold on enforce (re-checked when due).
    pub hold: Option<Box<crate::core::gate::Hold>>,
    /// A namespace write's warnings said existing pods violate what it set: the gate looks now.
    pub suspect: bool,
    /// The profile a reconcile is writing for: if deleted, it waits until the cache shows them.
    pub writing: Option<String>,
}

/// How long nsguard leaves a NetworkPolicy name that another object holds before trying again.
pub const TAKEN_RETRY: Duration = Duration::from_secs(300);

/// When to look at the namespace again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// At the periodic resync (watch events bring anything sooner).
    Resync,
    /// After this long: a pending write's safety net, or a fight's back-off.
    After(Duration),
}

/// Everything one reconcile of a namespace does, decided before any I/O.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Writes to make, in order: all but the namespace at once, then the namespace.
    pub writes: Vec<Action>,
    /// nsguard's own reporting writes (the namespace's condition), made after `writes` succeed —
    /// in Audit mode too, and while backing off from a fight.
    pub reports: Vec<Action>,
    /// The namespace's result once the writes succeeded (recorded at once when there are none).
    pub result: NamespaceResult,
    /// Events to publish once the writes succeeded.
    pub announce: Vec<Announcement>,
    /// Drift this reconcile corrects (counted once the writes succeeded).
    pub corrected: Vec<Drift>,
    /// Drift reported, not corrected (Audit mode), newly announced.
    pub detected: Vec<Drift>,
    /// Backing off from a writer that keeps reverting nsguard: nothing is written now.
    pub backoff: bool,
    /// The outcome the plan found, recorded instead of `result.outcome` if the writes fail.
    pub planned: Outcome,
    pub next: Next,
}

/// Decides one reconcile of `namespace`. `leader`: this replica may write. `now` is the caller's
/// clock.
pub fn decide(namespace: &str, plan: &Plan, memory: &mut Memory, leader: bool, now: Instant) -> Decision {
    decide_after(namespace, plan, memory, leader, &[], now)
}

/// [`decide`], for a reconcile that already sent `ahead` (the writes that went out alongside the
/// rollout gate's dry-run, [`crate::core::ahead`]): they count as this reconcile's writes, not as
/// writes of an earlier one still in flight.
pub fn decide_after(
    namespace: &str,
    plan: &Plan,
    memory: &mut Memory,
    leader: bool,
    ahead: &[Action],
    now: Instant,
) -> Decision {
    // Drift on objects whose write is still in flight is stale: that write's watch event brings
    // the next look.
    let mut waiting = false;
    // By object (a namespace may hold thousands of ServiceAccounts, all sent ahead).
    let sent: HashMap<ObjectKey, &Action> = ahead.iter().map(|a| (action_key(namespace, a), a)).collect();
    let mut writes: Vec<Action> = plan
        .actions
        .iter()
        .filter(|a| {
            let key = action_key(namespace, a);
            let sent_ahead = sent.get(&key) == Some(a);
            let pending = !sent_ahead && memory.pending.is_pending(&key, now);
            waiting |= pending;
            !sent_ahead && !pending
        })
        .cloned()
        .collect();
    // Never take over an object nsguard did not create: a name another object holds is left alone.
    memory.taken.retain(|name, since| {
        // Forgotten once the cache shows nsguard's own policy under that name, or after a while.
        let missing = plan.drift.iter().any(|d| matches!(d, Drift::NetworkPolicyMissing { name: n } if n == name));
        missing && now.duration_since(*since) < TAKEN_RETRY
    });
    let taken: Vec<String> = memory.taken.keys().cloned().collect();
    writes.retain(|a| !matches!(a, Action::ApplyNetworkPolicy(np) if taken.contains(&np.name_any())));
    if waiting && plan.outcome == Outcome::Releasing {
        // The namespace's annotation marks it as still to be released: keep it until every other
        // release write has gone out.
        writes.retain(|a| !matches!(a, Action::ApplyNamespace { .. }));
    }
    let mut result = NamespaceResult {
        profile: plan.governance.profile_name().map(str::to_owned),
        overridden: plan.governance.overridden().to_vec(),
        outcome: plan.outcome,
        detail: describe(plan),
        failed: false,
        fighting: false,
        rivals: plan.rivals.clone(),
        taken: vec![],
        held: plan.held.as_ref().map(crate::core::gate::Hold::describe),
        exception: plan.exception.as_ref().map(|e| e.describe_at(plan.now)),
    };
    let pending = Pending::of(memory, namespace, now);
    let after_pending = sooner(
        if waiting {
            Next::After(PendingWrites::EXPIRY)
        } else if memory.fighting {
            Next::After(CorrectionHistory::WINDOW + Duration::from_secs(1))
        } else {
            Next::Resync
        },
        plan.wake(now),
    );
    let quiet = |result| Decision {
        writes: vec![],
        reports: vec![],
        result,
        announce: vec![],
        corrected: vec![],
        detected: vec![],
        backoff: false,
        planned: plan.outcome,
        next: Next::Resync,
    };
    if !leader {
        // Followers keep their view current but never write or announce.
        return quiet(result);
    }

    // A fight episode ends only a whole window after drift was last contested: neither the
    // limiter's burst allowance nor its long back-offs start a new episode (and announcement).
    if memory.fighting && memory.last_contested.is_none_or(|t| now.duration_since(t) > CorrectionHistory::WINDOW) {
        memory.fighting = false;
        memory.rivals = Vec::new();
    }
    let writing = !writes.is_empty() || !ahead.is_empty();
    let correcting = !plan.corrections.is_empty() && writing;
    if correcting {
        memory.last_contested = Some(now);
    }
    if correcting && let Correction::BackOff(wait) = memory.corrections.check(now) {
        if !plan.rivals.is_empty() {
            memory.rivals = plan.rivals.clone();
        }
        result.fighting = true;
        result.rivals = memory.rivals.clone();
        let reports = reports(namespace, plan, &result, pending).0;
        let mut decision = Decision { reports, ..quiet(result) };
        decision.next = Next::After(wait);
        decision.backoff = true;
        if !memory.fighting {
            memory.fighting = true;
            decision.announce.push(Announcement {
                severity: Severity::Warning,
                reason: "DriftFight",
                action: "Backoff",
                note: format!(
                    "another writer keeps reverting nsguard{} ({}); corrections back off exponentially, up to every {}s",
                    if plan.rivals.is_empty() { String::new() } else { format!(" (field manager {})", plan.rivals.join(", ")) },
                    summary(&plan.drift),
                    CorrectionHistory::MAX_DELAY.as_secs()
                ),
            });
        }
        return decision;
    }
    // The result says "fighting" for the whole episode, which (like its single announcement) lasts
    // until a calm window: the namespace's condition stays `Conflicting` rather than flapping with
    // each correction, and a look after the window ends it.
    result.fighting = memory.fighting;
    if memory.fighting {
        result.rivals = memory.rivals.clone();
    }

    if !taken.is_empty() && plan.desired.is_some() {
        result.taken = taken.clone();
        result.detail = format!(
            "NetworkPolicy {} exists and was not created by nsguard; left alone{}{}",
            taken.join(", "),
            if result.detail.is_empty() { "" } else { "; " },
            result.detail
        );
    }
    if plan.outcome == Outcome::Converging && !waiting && taken.is_empty() {
        // The writes go out; once they succeed the namespace is compliant, and the status should
        // say so rather than "converging".
        result.outcome = Outcome::Compliant;
        result.detail = String::new();
    }
    // While nsguard's own writes are in flight the plan's drift is stale: their watch events bring
    // the look that reports (otherwise the condition and Report would flap during a hardening).
    let (reports, shown) = reports(
        namespace,
        plan,
        &result,
        Pending { namespace: pending.namespace || waiting, report: pending.report || waiting },
    );
    let (announce, detected) = announcements(plan, &memory.reported, correcting, writing, shown);
    Decision {
        writes,
        reports,
        result,
        announce,
        corrected: if correcting { plan.corrections.clone() } else { vec![] },
        detected,
        backoff: false,
        planned: plan.outcome,
        next: after_pending,
    }
}

impl Decision {
    /// The writes succeeded: remember what was announced and corrected. True when the namespace's
    /// result changed (its profile's tally must be counted again).
    pub fn succeeded(&self, plan: &Plan, memory: &mut Memory, now: Instant) -> bool {
        memory.failures = 0;
        if !self.corrected.is_empty() {
            memory.corrections.record(now);
        }
        let changed = memory.result.as_ref() != Some(&self.result);
        if self.backoff {
            // Backing off: nothing was announced beyond the fight.
            memory.result = Some(self.result.clone());
            return changed;
        }
        memory.reported = Reported {
            seen: true,
            drift: plan.drift.clone(),
            overridden: plan.governance.overridden().to_vec(),
            orphaned: plan.outcome == Outcome::Orphaned,
            held: plan.held.as_ref().map(|h| h.level),
            exception: plan.exception.as_ref().map(|e| (e.describe_at(plan.now), e.expires)),
        };
        memory.result = Some(self.result.clone());
        changed
    }

    /// Creating NetworkPolicy `name` found an object nsguard did not create under that name: leave
    /// it alone (the other writes go ahead at once) and say so, once.
    pub fn taken(&self, memory: &mut Memory, name: &str, now: Instant) -> Option<Announcement> {
        let first = memory.taken.insert(name.to_owned(), now).is_none();
        first.then(|| Announcement {
            severity: Severity::Warning,
            reason: "NameConflict",
            action: "Skip",
            note: format!(
                "NetworkPolicy {name} exists and was not created by nsguard: nsguard leaves it alone and does not count it as its own (rename or delete it to let nsguard create its policy)"
            ),
        })
    }

    /// A write failed: the namespace is retried with back-off (1 s, 2 s, 4 s, … at most 5 minutes).
    /// Returns the reporting writes that make the namespace's condition and Report say so (they
    /// must not keep showing a state the failed writes did not reach).
    pub fn failed(
        &self,
        namespace: &str,
        plan: &Plan,
        memory: &mut Memory,
        error: String,
        now: Instant,
    ) -> Vec<Action> {
        memory.failures = memory.failures.saturating_add(1);
        let mut result = self.result.clone();
        // Not written, so not compliant: the namespace is still what the plan found.
        result.outcome = self.planned;
        result.failed = true;
        // The error's first line: retries of the same failure show the same message.
        result.detail = error.lines().next().unwrap_or_default().to_owned();
        let writes = reports(namespace, plan, &result, Pending::of(memory, namespace, now)).0;
        memory.result = Some(result);
        writes
    }
}

/// The sooner of `next` and a wake-up after `wake`.
fn sooner(next: Next, wake: Option<Duration>) -> Next {
    match (next, wake) {
        (Next::After(a), Some(b)) => Next::After(a.min(b)),
        (_, Some(b)) => Next::After(b),
        (next, None) => next,
    }
}

/// 1 s, 2 s, 4 s, … at most 5 minutes, for the `failures`-th failure in a row.
pub fn retry_delay(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(8)).min(Duration::from_secs(300))
}

/// The reporting writes that make the namespace's condition and Report show `result` (none while
/// the namespace is terminating, nor to an object whose write is in flight: its watch event brings
/// the next look), and whether the condition shows it already.
fn reports(namespace: &str, plan: &Plan, result: &NamespaceResult, pending: Pending) -> (Vec<Action>, bool) {
    let verdict = condition::verdict(result, plan.desired.as_ref().map(|d| d.mode));
    let shown = condition::shows(plan.shown.as_ref(), verdict.as_ref());
    let mut writes = Vec::new();
    if plan.terminating {
        return (writes, shown);
    }
    if !pending.namespace
        && let Some(c) = condition::write(plan.shown.as_ref(), verdict.as_ref())
    {
        writes.push(Action::ApplyCondition(c.map(Box::new)));
    }
    if !pending.report {
        let want = report::desired(namespace, plan.namespace_uid.as_ref(), plan, result);
        // During a fight episode a passing Report is not written: it would flip between pass and
        // fail with each correction. The failing one stands until the episode ends.
        let passing = matches!(&want, Some(Some(content)) if content.count(report::Verdict::Fail) == 0);
        if !(result.fighting && passing && matches!(plan.report, report::Seen::Present { .. })) {
            writes.extend(report::write(&plan.report, want));
        }
    }
    (writes, shown)
}

/// Which of nsguard's reporting objects have a write in flight.
#[derive(Clone, Copy)]
struct Pending {
    namespace: bool,
    report: bool,
}

impl Pending {
    fn of(memory: &mut Memory, namespace: &str, now: Instant) -> Self {
        Self {
            namespace: memory.pending.is_pending(&ObjectKey::new("Namespace", "", namespace), now),
            report: memory.pending.is_pending(&ObjectKey::new("Report", namespace, report::NAME), now),
        }
    }
}

/// Why a namespace is not compliant, for its result.
fn describe(plan: &Plan) -> String {
    match (&plan.governance, plan.outcome) {
        (Governance::Held { profile }, _) => format!(
            "profile {} is invalid ({}); keeping the last good state",
            profile.name,
            profile.spec.as_ref().err().map(|e| crate::core::validate::summarize(e)).unwrap_or_default()
        ),
        (Governance::Orphaned { profile }, _) => {
            format!("profile {profile} is not visible to nsguard; keeping the namespace as it is")
        }
        _ => summary(&plan.drift),
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "decide_condition_tests.rs"]
mod condition_tests;
#[cfg(test)]
#[path = "decide_rollout_tests.rs"]
mod rollout_tests;
