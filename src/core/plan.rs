//! Pure: who governs a namespace and what is observed in it → what differs (drift) and what to write.
//!
//! The same function serves the controller and `nsguard plan`, so a preview never disagrees with
//! what the controller does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::Serialize;

use crate::core::crd::{Mode, ReleasePolicy, Rollout};
use crate::core::desired::{DEFAULT_ACCOUNT, Desired, desired};
use crate::core::exceptions::{Exception, applying};
use crate::core::gate::{Hold, enforced, raises};
use crate::core::ids::Uid;
use crate::core::labels::Pairs;
use crate::core::model::{
    GUARD_LABEL, NamespaceView, NetworkPolicyView, PROFILE_ANNOTATION, PSA_PREFIX, RELEASE_POLICY_ANNOTATION,
    ServiceAccountView, is_marker, policy_fingerprint,
};
use crate::core::selection::Governance;

/// What is observed in one namespace: the nsguard-managed NetworkPolicies and every
/// ServiceAccount.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub network_policies: Vec<Arc<NetworkPolicyView>>,
    pub service_accounts: Vec<Arc<ServiceAccountView>>,
    /// nsguard's Report in the namespace.
    pub report: crate::core::model::ReportSeen,
    /// The wall clock at the observation (exceptions expire by it).
    pub now: k8s_openapi::jiff::Timestamp,
    /// The rollout gate's hold on enforce, when the last dry-run found violating pods.
    pub hold: Option<Hold>,
}

pub use crate::core::drift::Drift;

/// One write nsguard makes. Applies are server-side applies with field manager `nsguard` and carry
/// the object's UID, so a write never re-creates an object someone deleted.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Apply nsguard's labels and annotations to the namespace (all of them: server-side apply
    /// drops fields nsguard owned and no longer sends).
    ApplyNamespace { labels: BTreeMap<String, String>, annotations: BTreeMap<String, String> },
    /// Apply a NetworkPolicy nsguard maintains.
    ApplyNetworkPolicy(Box<NetworkPolicy>),
    /// Delete a NetworkPolicy nsguard created.
    DeleteNetworkPolicy { name: String, uid: Option<Uid> },
    /// Apply `automountServiceAccountToken: false`.
    DisableAutomount { name: String, uid: Option<Uid> },
    /// Apply nothing to a ServiceAccount, so nsguard gives up the field it owned.
    ReleaseAutomount { name: String, uid: Option<Uid> },
    /// Keep `automountServiceAccountToken: false` but drop the tamper guard's label (a
    /// ServiceAccount the profile no longer manages, under `releasePolicy: Retain`).
    UnguardAccount { name: String, uid: Option<Uid> },
    /// Apply nsguard's condition to the namespace's status (`None`: remove it). A reporting write:
    /// made in Audit mode too. A condition without a transition time gets the current time.
    ApplyCondition(Option<Box<k8s_openapi::api::core::v1::NamespaceCondition>>),
    /// Apply nsguard's Report to the namespace (a reporting write).
    ApplyReport(Box<serde_json::Value>),
    /// Delete nsguard's Report (the namespace was released).
    DeleteReport { uid: Option<Uid> },
}

/// How a reconcile of one namespace ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// Excluded, terminating, or not governed and nothing to release.
    Untouched,
    /// Governed and matching the baseline.
    Compliant,
    /// Governed in Enforce mode; the writes bring it to the baseline.
    Converging,
    /// Governed in Audit mode and differing from the baseline.
    Drifted,
    /// No longer governed; the writes release what nsguard applied.
    Releasing,
    /// Its profile is invalid; nothing is written.
    Held,
    /// Its profile is out of nsguard's view; nothing is written, nothing is released.
    Orphaned,
}

/// Everything one reconcile of a namespace decides.
#[derive(Clone, Debug)]
pub struct Plan {
    pub governance: Governance,
    pub desired: Option<Desired>,
    pub drift: Vec<Drift>,
    pub actions: Vec<Action>,
    pub outcome: Outcome,
    /// The namespace carried no annotation for its governing profile: this is its first hardening
    /// (or a hand-over from another profile), not drift.
    pub first_hardening: bool,
    /// Of `drift`, what was changed after nsguard applied it (as opposed to new objects).
    pub corrections: Vec<Drift>,
    /// The field managers that own the labels that drifted: who set them.
    pub rivals: Vec<String>,
    /// nsguard's condition as the namespace's status shows it now.
    pub shown: Option<k8s_openapi::api::core::v1::NamespaceCondition>,
    /// The namespace is being deleted: nsguard writes nothing to it, not even its condition.
    pub terminating: bool,
    /// nsguard's Report as seen in the namespace.
    pub report: crate::core::model::ReportSeen,
    /// The namespace's UID (the Report's scope names it).
    pub namespace_uid: Option<Uid>,
    /// The exception that lowers what is enforced here.
    pub exception: Option<Exception>,
    /// The rollout gate holds enforce below the target.
    pub held: Option<Hold>,
    /// The wall clock at the observation.
    pub now: k8s_openapi::jiff::Timestamp,
}

impl Plan {
    /// How long until the namespace must be looked at again regardless of events: the gate's
    /// re-check, or an exception's expiry.
    pub fn wake(&self, now: Instant) -> Option<Duration> {
        // At expiry, and when it comes within 7 days of it (its warning).
        let until = |t: k8s_openapi::jiff::Timestamp| {
            Duration::try_from(t.duration_since(self.now))
                .ok()
                .filter(|d| !d.is_zero())
                .map(|d| d + Duration::from_millis(100))
        };
        let exception = self.exception.iter().flat_map(|e| {
            [until(e.expires), until(e.expires - crate::core::exceptions::EXPIRING_SOON)].into_iter().flatten()
        });
        // A hold already due waits for the view to settle: looked at again a second later.
        let held = self.held.as_ref().map(|h| h.due_in(now).max(Duration::from_secs(1)));
        held.into_iter().chain(exception).min()
    }
}

/// Decides drift and writes for one namespace.
pub fn plan(ns: &NamespaceView, governance: Governance, observed: &Observed) -> Plan {
    let empty = |governance, outcome| Plan {
        governance,
        desired: None,
        drift: vec![],
        actions: vec![],
        outcome,
        first_hardening: false,
        corrections: vec![],
        rivals: vec![],
        shown: ns.hardened.clone(),
        terminating: ns.terminating,
        report: observed.report.clone(),
        namespace_uid: ns.uid.clone(),
        exception: None,
        held: None,
        now: observed.now,
    };
    if ns.terminating {
        return empty(governance, Outcome::Untouched);
    }
    match &governance {
        Governance::Excluded => empty(governance, Outcome::Untouched),
        Governance::Held { .. } => empty(governance, Outcome::Held),
        Governance::Orphaned { .. } => empty(governance, Outcome::Orphaned),
        Governance::Ungoverned => {
            let actions = release(ns, observed);
            let outcome = if actions.is_empty() { Outcome::Untouched } else { Outcome::Releasing };
            Plan { actions, ..empty(governance, outcome) }
        }
        Governance::Governed { profile, .. } => {
            let Ok(valid) = &profile.spec else {
                return empty(governance, Outcome::Held);
            };
            let mut want = desired(&profile.name, &valid.spec, &ns.name);
            let exception = applying(&valid.exceptions, &ns.name, observed.now).cloned();
            if let Some(e) = &exception {
                want.lower_enforce(&e.enforce);
            }
            let held = observed
                .hold
                .clone()
                .filter(|h| want.mode == Mode::Enforce && want.rollout == Rollout::Gated && h.target == want.enforce);
            if let Some(h) = &held {
                want.hold_enforce(h.level, h.keep.as_ref());
            }
            let drift = drift(ns, &want, observed);
            let first_hardening =
                want.mode == Mode::Enforce && ns.governing_annotation() != Some(profile.name.as_str());
            let (actions, outcome) = match want.mode {
                // Audit mode writes nothing it audits; it only takes down the tamper guard's markers
                // an earlier Enforce mode left (nothing is guarded in Audit mode).
                Mode::Audit if drift.is_empty() => (unguard(ns), Outcome::Compliant),
                Mode::Audit => (unguard(ns), Outcome::Drifted),
                // Enforce may have writes without drift: giving back fields on ServiceAccounts the
                // profile no longer targets.
                Mode::Enforce if drift.is_empty() => (enforce(ns, &want, &drift, observed), Outcome::Compliant),
                Mode::Enforce => (enforce(ns, &want, &drift, observed), Outcome::Converging),
            };
            let corrections = if first_hardening || want.mode == Mode::Audit {
                vec![]
            } else {
                drift.iter().filter(|d| d.is_correction(ns, &observed.service_accounts)).cloned().collect()
            };
            let mut rivals: Vec<String> = drift
                .iter()
                .filter_map(|d| match d {
                    Drift::Label { key, actual: Some(_), .. } => ns.label_managers.get(key),
                    _ => None,
                })
                .flatten()
                .cloned()
                .collect();
            rivals.sort();
            rivals.dedup();
            Plan {
                desired: Some(want),
                drift,
                actions,
                first_hardening,
                corrections,
                rivals,
                exception,
                held,
                ..empty(governance, outcome)
            }
        }
    }
}

fn drift(ns: &NamespaceView, want: &Desired, observed: &Observed) -> Vec<Drift> {
    let mut drift = Vec::new();
    for (key, expected) in want.labels.iter().filter(|(k, _)| !is_marker(k)) {
        let actual = ns.labels.get(key);
        if actual != Some(expected.as_str()) {
            drift.push(Drift::Label {
                key: key.clone(),
                expected: expected.clone(),
                actual: actual.map(str::to_owned),
            });
        }
    }
    for (key, expected) in want.annotations.iter().filter(|(k, _)| !is_marker(k)) {
        let actual = ns.annotations.get(key);
        if actual != Some(expected.as_str()) {
            drift.push(Drift::Annotation {
                key: key.clone(),
                expected: expected.clone(),
                actual: actual.map(str::to_owned),
            });
        }
    }
    for (name, np) in &want.network_policies {
        match observed.network_policies.iter().find(|o| &o.name == name) {
            None => drift.push(Drift::NetworkPolicyMissing { name: name.clone() }),
            Some(o) => {
                let labels_ok = np.metadata.labels.iter().flatten().all(|(k, v)| o.label(k) == Some(v.as_str()));
                if !labels_ok || policy_fingerprint(np.spec.as_ref()) != o.spec_fingerprint {
                    drift.push(Drift::NetworkPolicyChanged { name: name.clone() });
                }
            }
        }
    }
    for o in &observed.network_policies {
        if o.managed_by_nsguard() && !want.network_policies.contains_key(&o.name) {
            drift.push(Drift::NetworkPolicyUnwanted { name: o.name.clone() });
        }
    }
    for sa in &observed.service_accounts {
        if want.service_accounts.includes(&sa.name) && sa.automount_token != Some(false) {
            drift.push(Drift::ServiceAccountAutomount { name: sa.name.clone(), actual: sa.automount_token });
        }
    }
    drift
}

/// The tamper guard's markers on the namespace differ from what `want` has (bookkeeping: rewritten,
/// never reported as drift).
fn markers_stale(ns: &NamespaceView, want: &Desired) -> bool {
    // A marker nsguard no longer wants counts only if nsguard holds it: applying cannot take down
    // one another manager set (and would be repeated on every look).
    let stale = |wanted: &BTreeMap<String, String>, seen: &Pairs| {
        wanted.iter().filter(|(k, _)| is_marker(k)).any(|(k, v)| seen.get(k) != Some(v.as_str()))
            || seen.keys().filter(|k| is_marker(k)).any(|k| !wanted.contains_key(k) && ns.owned_markers.contains(&k))
    };
    stale(&want.labels, &ns.labels) || stale(&want.annotations, &ns.annotations)
}

fn enforce(ns: &NamespaceView, want: &Desired, drift: &[Drift], observed: &Observed) -> Vec<Action> {
    let mut actions = Vec::new();
    let find_np = |name: &str| observed.network_policies.iter().find(|o| o.name == name);
    let mut namespace_drift = markers_stale(ns, want);
    for d in drift {
        match d {
            Drift::Label { .. } | Drift::Annotation { .. } => namespace_drift = true,
            Drift::NetworkPolicyMissing { name } | Drift::NetworkPolicyChanged { name } => {
                if let Some(np) = want.network_policies.get(name) {
                    let mut np = np.clone();
                    np.metadata.uid = find_np(name).and_then(|o| o.uid.as_ref()).map(ToString::to_string);
                    actions.push(Action::ApplyNetworkPolicy(Box::new(np)));
                }
            }
            Drift::NetworkPolicyUnwanted { name } => {
                let uid = find_np(name).and_then(|o| o.uid.clone());
                actions.push(Action::DeleteNetworkPolicy { name: name.clone(), uid });
            }
            Drift::ServiceAccountAutomount { name, .. } => {
                let uid = observed.service_accounts.iter().find(|s| &s.name == name).and_then(|s| s.uid.clone());
                actions.push(Action::DisableAutomount { name: name.clone(), uid });
            }
        }
    }
    // ServiceAccounts whose token is off but that lack the guard's label get it (bookkeeping).
    for sa in &observed.service_accounts {
        let drifted =
            drift.iter().any(|d| matches!(d, Drift::ServiceAccountAutomount { name, .. } if *name == sa.name));
        if want.service_accounts.includes(&sa.name) && !sa.guarded && !drifted {
            actions.push(Action::DisableAutomount { name: sa.name.clone(), uid: sa.uid.clone() });
        }
    }
    // The `default` ServiceAccount not there yet (the controller-manager creates it moments after
    // the namespace): created hardened now, in this turn, not hardened by a second reconcile that
    // would queue behind the first ones of every namespace created meanwhile.
    if want.service_accounts.includes(DEFAULT_ACCOUNT)
        && !observed.service_accounts.iter().any(|sa| sa.name == DEFAULT_ACCOUNT)
    {
        actions.push(Action::DisableAutomount { name: DEFAULT_ACCOUNT.to_owned(), uid: None });
    }
    // ServiceAccounts nsguard no longer targets (exempted, or out of scope) give back the field.
    for sa in observed.service_accounts.iter().filter(|sa| !want.service_accounts.includes(&sa.name)) {
        let (name, uid) = (sa.name.clone(), sa.uid.clone());
        if want.release_policy == ReleasePolicy::Release && sa.automount_owned {
            actions.push(Action::ReleaseAutomount { name, uid });
        } else if sa.guarded {
            // Retained: the token stays off, but the guard no longer holds it there.
            actions.push(Action::UnguardAccount { name, uid });
        }
    }
    // The namespace is applied last: its annotation marks the namespace as hardened.
    if namespace_drift {
        actions.push(Action::ApplyNamespace { labels: want.labels.clone(), annotations: want.annotations.clone() });
    }
    actions
}

/// In Audit mode, the write that removes the tamper guard's markers from a namespace an earlier
/// Enforce mode marked, re-applying what else nsguard holds there unchanged.
fn unguard(ns: &NamespaceView) -> Vec<Action> {
    if !ns.owned_markers.contains(&GUARD_LABEL) {
        return vec![];
    }
    vec![Action::ApplyNamespace {
        labels: ns.labels.to_map_where(|k| k.starts_with(PSA_PREFIX) && !is_marker(k)),
        annotations: ns.annotations.to_map_where(|k| k.starts_with("nsguard.io/") && !is_marker(k)),
    }]
}

/// Writes that hand back what nsguard applied to a namespace no profile governs any more.
fn release(ns: &NamespaceView, observed: &Observed) -> Vec<Action> {
    if ns.governing_annotation().is_none() {
        return vec![];
    }
    let retain = ns.annotations.get(RELEASE_POLICY_ANNOTATION) == Some("Retain");
    let mut actions = Vec::new();
    if !retain {
        for np in observed.network_policies.iter().filter(|np| np.managed_by_nsguard()) {
            actions.push(Action::DeleteNetworkPolicy { name: np.name.clone(), uid: np.uid.clone() });
        }
        for sa in observed.service_accounts.iter().filter(|sa| sa.automount_owned) {
            actions.push(Action::ReleaseAutomount { name: sa.name.clone(), uid: sa.uid.clone() });
        }
    }
    // Last, the namespace: Release gives up the labels and annotations; Retain keeps the labels and
    // drops only nsguard's bookkeeping annotations, so the namespace no longer claims a profile.
    let labels = if retain {
        ns.labels.to_map_where(|k| k.starts_with(crate::core::model::PSA_PREFIX))
    } else {
        BTreeMap::new()
    };
    debug_assert!(ns.annotations.contains_key(PROFILE_ANNOTATION));
    actions.push(Action::ApplyNamespace { labels, annotations: BTreeMap::new() });
    actions
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;

/// Whether the condition and Report may be written alongside `writes` rather than after them: when
/// `writes` touch only the namespace and raise no enforce level, no warning of theirs can change what
/// the Report says (see `gate::after_write`), so a profile change costs one round trip, not two.
pub fn report_alongside(ns: &NamespaceView, want: Option<&Desired>, writes: &[Action]) -> bool {
    want.is_some_and(|want| !raises(enforced(ns), &want.enforce))
        && !writes.is_empty()
        && writes.iter().all(|a| matches!(a, Action::ApplyNamespace { .. }))
}
