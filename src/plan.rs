//! Pure: who governs a namespace and what is observed in it → what differs (drift) and what to write.
//!
//! The same function serves the controller and `nsguard plan`, so a preview never disagrees with
//! what the controller does.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
use serde::Serialize;

use crate::crd::{Mode, ReleasePolicy};
use crate::desired::{Desired, desired};
use crate::model::{
    NamespaceView, NetworkPolicyView, PROFILE_ANNOTATION, RELEASE_POLICY_ANNOTATION, ServiceAccountView,
};
use crate::selection::Governance;

/// What is observed in one namespace: the nsguard-managed NetworkPolicies and every
/// ServiceAccount.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub network_policies: Vec<Arc<NetworkPolicyView>>,
    pub service_accounts: Vec<Arc<ServiceAccountView>>,
}

/// One difference between a namespace and its baseline.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Drift {
    /// A namespace label nsguard sets is missing or has another value.
    #[serde(rename_all = "camelCase")]
    Label { key: String, expected: String, actual: Option<String> },
    /// nsguard's bookkeeping annotation is missing or has another value.
    #[serde(rename_all = "camelCase")]
    Annotation { key: String, expected: String, actual: Option<String> },
    /// A NetworkPolicy nsguard maintains does not exist.
    #[serde(rename_all = "camelCase")]
    NetworkPolicyMissing { name: String },
    /// A NetworkPolicy nsguard maintains was changed.
    #[serde(rename_all = "camelCase")]
    NetworkPolicyChanged { name: String },
    /// A NetworkPolicy nsguard created is no longer wanted by the profile.
    #[serde(rename_all = "camelCase")]
    NetworkPolicyUnwanted { name: String },
    /// A ServiceAccount in scope does not have `automountServiceAccountToken: false`.
    #[serde(rename_all = "camelCase")]
    ServiceAccountAutomount { name: String, actual: Option<bool> },
}

impl Drift {
    /// Whether this is a correction of something that was changed, rather than the first hardening
    /// of an object nsguard never touched (a ServiceAccount created after the namespace was
    /// hardened has its token setting unset and not owned by nsguard).
    pub fn is_correction(&self, observed: &Observed) -> bool {
        match self {
            Self::ServiceAccountAutomount { name, actual: None } => {
                observed.service_accounts.iter().any(|sa| &sa.name == name && sa.automount_owned)
            }
            _ => true,
        }
    }

    /// A short, stable name of the kind of drift, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Label { .. } => "label",
            Self::Annotation { .. } => "annotation",
            Self::NetworkPolicyMissing { .. } => "network_policy_missing",
            Self::NetworkPolicyChanged { .. } => "network_policy_changed",
            Self::NetworkPolicyUnwanted { .. } => "network_policy_unwanted",
            Self::ServiceAccountAutomount { .. } => "service_account_automount",
        }
    }
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Label { key, expected, actual } | Self::Annotation { key, expected, actual } => {
                let what = if matches!(self, Self::Label { .. }) { "label" } else { "annotation" };
                match actual {
                    Some(actual) => write!(f, "{what} {key} was {actual:?}, want {expected:?}"),
                    None => write!(f, "{what} {key} was missing, want {expected:?}"),
                }
            }
            Self::NetworkPolicyMissing { name } => write!(f, "NetworkPolicy {name} was missing"),
            Self::NetworkPolicyChanged { name } => write!(f, "NetworkPolicy {name} was edited"),
            Self::NetworkPolicyUnwanted { name } => {
                write!(f, "NetworkPolicy {name} is no longer wanted")
            }
            Self::ServiceAccountAutomount { name, actual } => match actual {
                Some(v) => write!(f, "ServiceAccount {name} had automountServiceAccountToken: {v}, want false"),
                None => write!(f, "ServiceAccount {name} had automountServiceAccountToken unset, want false"),
            },
        }
    }
}

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
    DeleteNetworkPolicy { name: String, uid: Option<String> },
    /// Apply `automountServiceAccountToken: false`.
    DisableAutomount { name: String, uid: Option<String> },
    /// Apply nothing to a ServiceAccount, so nsguard gives up the field it owned.
    ReleaseAutomount { name: String, uid: Option<String> },
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
            let want = desired(&profile.name, &valid.spec, &ns.name);
            let drift = drift(ns, &want, observed);
            let first_hardening =
                want.mode == Mode::Enforce && ns.governing_annotation() != Some(profile.name.as_str());
            let (actions, outcome) = match want.mode {
                Mode::Audit if drift.is_empty() => (vec![], Outcome::Compliant),
                Mode::Audit => (vec![], Outcome::Drifted),
                // Enforce may have writes without drift: giving back fields on ServiceAccounts the
                // profile no longer targets.
                Mode::Enforce if drift.is_empty() => (enforce(&want, &drift, observed), Outcome::Compliant),
                Mode::Enforce => (enforce(&want, &drift, observed), Outcome::Converging),
            };
            let corrections = if first_hardening {
                vec![]
            } else {
                drift.iter().filter(|d| d.is_correction(observed)).cloned().collect()
            };
            Plan { governance, desired: Some(want), drift, actions, outcome, first_hardening, corrections }
        }
    }
}

fn drift(ns: &NamespaceView, want: &Desired, observed: &Observed) -> Vec<Drift> {
    let mut drift = Vec::new();
    for (key, expected) in &want.labels {
        let actual = ns.labels.get(key);
        if actual != Some(expected) {
            drift.push(Drift::Label { key: key.clone(), expected: expected.clone(), actual: actual.cloned() });
        }
    }
    for (key, expected) in &want.annotations {
        let actual = ns.annotations.get(key);
        if actual != Some(expected) {
            drift.push(Drift::Annotation { key: key.clone(), expected: expected.clone(), actual: actual.cloned() });
        }
    }
    for (name, np) in &want.network_policies {
        match observed.network_policies.iter().find(|o| &o.name == name) {
            None => drift.push(Drift::NetworkPolicyMissing { name: name.clone() }),
            Some(o) => {
                let labels_ok = np.metadata.labels.iter().flatten().all(|(k, v)| o.labels.get(k) == Some(v));
                if !labels_ok || !same_policy(np.spec.as_ref(), &o.spec) {
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

/// Compares two NetworkPolicy specs, treating absent and empty lists alike (the API server drops
/// empty lists, so a desired `[]` reads back as absent).
pub fn same_policy(want: Option<&NetworkPolicySpec>, got: &NetworkPolicySpec) -> bool {
    fn norm(spec: &NetworkPolicySpec) -> serde_json::Value {
        let mut spec = spec.clone();
        if spec.ingress.as_ref().is_some_and(Vec::is_empty) {
            spec.ingress = None;
        }
        if spec.egress.as_ref().is_some_and(Vec::is_empty) {
            spec.egress = None;
        }
        serde_json::to_value(spec).unwrap_or_default()
    }
    norm(&want.cloned().unwrap_or_default()) == norm(got)
}

fn enforce(want: &Desired, drift: &[Drift], observed: &Observed) -> Vec<Action> {
    let mut actions = Vec::new();
    let find_np = |name: &str| observed.network_policies.iter().find(|o| o.name == name);
    let mut namespace_drift = false;
    for d in drift {
        match d {
            Drift::Label { .. } | Drift::Annotation { .. } => namespace_drift = true,
            Drift::NetworkPolicyMissing { name } | Drift::NetworkPolicyChanged { name } => {
                if let Some(np) = want.network_policies.get(name) {
                    let mut np = np.clone();
                    np.metadata.uid = find_np(name).and_then(|o| o.uid.clone());
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
    // ServiceAccounts nsguard no longer targets (exempted, or out of scope) give back the field.
    if want.release_policy == ReleasePolicy::Release {
        for sa in &observed.service_accounts {
            if sa.automount_owned && !want.service_accounts.includes(&sa.name) {
                actions.push(Action::ReleaseAutomount { name: sa.name.clone(), uid: sa.uid.clone() });
            }
        }
    }
    // The namespace is applied last: its annotation marks the namespace as hardened.
    if namespace_drift {
        actions.push(Action::ApplyNamespace { labels: want.labels.clone(), annotations: want.annotations.clone() });
    }
    actions
}

/// Writes that hand back what nsguard applied to a namespace no profile governs any more.
fn release(ns: &NamespaceView, observed: &Observed) -> Vec<Action> {
    if ns.governing_annotation().is_none() {
        return vec![];
    }
    let retain = ns.annotations.get(RELEASE_POLICY_ANNOTATION).map(String::as_str) == Some("Retain");
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
        ns.labels
            .iter()
            .filter(|(k, _)| k.starts_with(crate::desired::PSA_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    } else {
        BTreeMap::new()
    };
    debug_assert!(ns.annotations.contains_key(PROFILE_ANNOTATION));
    actions.push(Action::ApplyNamespace { labels, annotations: BTreeMap::new() });
    actions
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use crate::crd::HardeningProfileSpec;
    use crate::desired::{ALLOW_DNS_POLICY, DEFAULT_DENY_POLICY};
    use crate::model::Profile;
    use crate::selection::{Exclusions, govern};

    fn governed(spec: HardeningProfileSpec) -> Governance {
        Governance::Governed { profile: Arc::new(Profile::from_spec("prod", spec)), overridden: vec![] }
    }

    fn sa(name: &str, automount: Option<bool>, owned: bool) -> Arc<ServiceAccountView> {
        Arc::new(ServiceAccountView {
            namespace: "team-a".into(),
            name: name.into(),
            uid: Some(format!("uid-{name}")),
            resource_version: Some("1".into()),
            automount_token: automount,
            automount_owned: owned,
        })
    }

    fn np_view(np: &NetworkPolicy) -> Arc<NetworkPolicyView> {
        let mut np = np.clone();
        np.metadata.uid = Some(format!("uid-{}", np.metadata.name.clone().unwrap_or_default()));
        Arc::new(NetworkPolicyView::from_object(&np))
    }

    /// A namespace and observed objects exactly as the plan wants them.
    fn converged(spec: &HardeningProfileSpec) -> (NamespaceView, Observed) {
        let want = desired("prod", spec, "team-a");
        let ns = NamespaceView {
            name: "team-a".into(),
            uid: Some("ns-uid".into()),
            labels: want.labels.clone(),
            annotations: want.annotations.clone(),
            terminating: false,
        };
        let observed = Observed {
            network_policies: want.network_policies.values().map(np_view).collect(),
            service_accounts: vec![sa("default", Some(false), true), sa("builder", Some(false), true)],
        };
        (ns, observed)
    }

    #[test]
    fn new_namespace_is_hardened_with_every_write() {
        let ns = NamespaceView { name: "team-a".into(), ..Default::default() };
        let observed = Observed { network_policies: vec![], service_accounts: vec![sa("default", None, false)] };
        let p = plan(&ns, governed(HardeningProfileSpec::default()), &observed);
        assert!(p.first_hardening);
        assert_eq!(p.outcome, Outcome::Converging);
        let kinds: Vec<_> = p
            .actions
            .iter()
            .map(|a| match a {
                Action::ApplyNamespace { .. } => "ns".to_owned(),
                Action::ApplyNetworkPolicy(np) => np.metadata.name.clone().unwrap_or_default(),
                Action::DisableAutomount { name, .. } => format!("sa/{name}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(kinds, [ALLOW_DNS_POLICY, DEFAULT_DENY_POLICY, "sa/default", "ns"]);
    }

    #[test]
    fn converged_namespace_needs_no_writes() {
        let spec = HardeningProfileSpec::default();
        let (ns, observed) = converged(&spec);
        let p = plan(&ns, governed(spec), &observed);
        assert_eq!(p.outcome, Outcome::Compliant);
        assert!(p.drift.is_empty() && p.actions.is_empty(), "{:?}", p.drift);
    }

    #[test]
    fn drifted_label_is_reported_and_reapplied() {
        let spec = HardeningProfileSpec::default();
        let (mut ns, observed) = converged(&spec);
        ns.labels.insert("pod-security.kubernetes.io/enforce".into(), "privileged".into());
        ns.labels.remove("pod-security.kubernetes.io/warn");
        let p = plan(&ns, governed(spec), &observed);
        assert!(!p.first_hardening);
        assert_eq!(
            p.drift.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "label pod-security.kubernetes.io/enforce was \"privileged\", want \"restricted\"",
                "label pod-security.kubernetes.io/warn was missing, want \"restricted\"",
            ]
        );
        assert!(matches!(&p.actions[..], [Action::ApplyNamespace { labels, .. }] if labels.len() == 6));
    }

    #[test]
    fn edited_and_deleted_policies_are_reapplied() {
        let spec = HardeningProfileSpec::default();
        let (ns, mut observed) = converged(&spec);
        let mut edited = (*observed.network_policies[1]).clone();
        edited.spec.ingress = Some(vec![Default::default()]);
        observed.network_policies = vec![Arc::new(edited)];
        let p = plan(&ns, governed(spec), &observed);
        assert_eq!(
            p.drift,
            [
                Drift::NetworkPolicyMissing { name: ALLOW_DNS_POLICY.into() },
                Drift::NetworkPolicyChanged { name: DEFAULT_DENY_POLICY.into() },
            ]
        );
        let applied: Vec<_> = p
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::ApplyNetworkPolicy(np) => {
                    Some((np.metadata.name.clone().unwrap_or_default(), np.metadata.uid.clone()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            applied,
            [
                (ALLOW_DNS_POLICY.to_owned(), None),
                (DEFAULT_DENY_POLICY.to_owned(), Some(format!("uid-{DEFAULT_DENY_POLICY}"))),
            ]
        );
    }

    #[test]
    fn reenabled_token_is_turned_off_again_and_exempt_ones_are_left() {
        let mut spec = HardeningProfileSpec::default();
        spec.service_accounts.exempt = vec!["ci-bot".into()];
        let (ns, mut observed) = converged(&spec);
        observed.service_accounts.push(sa("ci-bot", Some(true), false));
        observed.service_accounts[0] = sa("default", Some(true), false);
        let p = plan(&ns, governed(spec), &observed);
        assert_eq!(p.drift, [Drift::ServiceAccountAutomount { name: "default".into(), actual: Some(true) }]);
        assert_eq!(p.actions, [Action::DisableAutomount { name: "default".into(), uid: Some("uid-default".into()) }]);
    }

    #[test]
    fn service_account_created_after_hardening_is_new_not_drift() {
        let spec = HardeningProfileSpec::default();
        let (ns, mut observed) = converged(&spec);
        observed.service_accounts.push(sa("late", None, false));
        let p = plan(&ns, governed(spec), &observed);
        assert_eq!(p.drift.len(), 1);
        assert!(p.corrections.is_empty(), "a new ServiceAccount is hardened, not corrected");
        assert_eq!(p.actions.len(), 1);
    }

    #[test]
    fn token_reset_to_unset_after_nsguard_applied_it_is_a_correction() {
        let spec = HardeningProfileSpec::default();
        let (ns, mut observed) = converged(&spec);
        observed.service_accounts[0] = sa("default", None, true);
        let p = plan(&ns, governed(spec), &observed);
        assert_eq!(p.corrections.len(), 1);
    }

    #[test]
    fn audit_mode_reports_drift_and_writes_nothing() {
        let spec = HardeningProfileSpec { mode: Mode::Audit, ..Default::default() };
        let ns = NamespaceView { name: "team-a".into(), ..Default::default() };
        let observed = Observed { network_policies: vec![], service_accounts: vec![sa("default", None, false)] };
        let p = plan(&ns, governed(spec), &observed);
        assert_eq!(p.outcome, Outcome::Drifted);
        assert_eq!(p.drift.len(), 6 + 2 + 1);
        assert!(p.actions.is_empty());
    }

    #[test]
    fn released_namespace_gives_back_everything_nsguard_applied() {
        let spec = HardeningProfileSpec::default();
        let (ns, observed) = converged(&spec);
        let p = plan(&ns, Governance::Ungoverned, &observed);
        assert_eq!(p.outcome, Outcome::Releasing);
        assert_eq!(
            p.actions,
            [
                Action::DeleteNetworkPolicy {
                    name: ALLOW_DNS_POLICY.into(),
                    uid: Some(format!("uid-{ALLOW_DNS_POLICY}"))
                },
                Action::DeleteNetworkPolicy {
                    name: DEFAULT_DENY_POLICY.into(),
                    uid: Some(format!("uid-{DEFAULT_DENY_POLICY}"))
                },
                Action::ReleaseAutomount { name: "default".into(), uid: Some("uid-default".into()) },
                Action::ReleaseAutomount { name: "builder".into(), uid: Some("uid-builder".into()) },
                Action::ApplyNamespace { labels: BTreeMap::new(), annotations: BTreeMap::new() },
            ]
        );
    }

    #[test]
    fn retained_namespace_keeps_labels_policies_and_tokens() {
        let spec = HardeningProfileSpec { release_policy: ReleasePolicy::Retain, ..Default::default() };
        let (ns, observed) = converged(&spec);
        let p = plan(&ns, Governance::Ungoverned, &observed);
        assert!(
            matches!(&p.actions[..], [Action::ApplyNamespace { labels, annotations }] if labels.len() == 6 && annotations.is_empty())
        );
    }

    #[test]
    fn released_namespace_without_annotation_needs_nothing() {
        let (mut ns, observed) = converged(&HardeningProfileSpec::default());
        ns.annotations.clear();
        let p = plan(&ns, Governance::Ungoverned, &observed);
        assert_eq!(p.outcome, Outcome::Untouched);
        assert!(p.actions.is_empty());
    }

    #[test]
    fn exempted_service_account_is_released_when_nsguard_owned_its_field() {
        let mut spec = HardeningProfileSpec::default();
        let (ns, observed) = converged(&spec);
        spec.service_accounts.exempt = vec!["builder".into()];
        let p = plan(&ns, governed(spec), &observed);
        assert_eq!(p.actions, [Action::ReleaseAutomount { name: "builder".into(), uid: Some("uid-builder".into()) }]);
        // There is nothing to correct, so the namespace is otherwise compliant.
        assert!(p.drift.is_empty());
    }

    #[test]
    fn terminating_and_excluded_namespaces_are_untouched() {
        let (mut ns, observed) = converged(&HardeningProfileSpec::default());
        ns.terminating = true;
        assert_eq!(plan(&ns, Governance::Ungoverned, &observed).outcome, Outcome::Untouched);
        let system = NamespaceView { name: "kube-system".into(), ..Default::default() };
        let profiles = [Arc::new(Profile::from_spec("all", HardeningProfileSpec::default()))];
        let g = govern(&system, &profiles, &Exclusions::default());
        let p = plan(&system, g, &Observed::default());
        assert_eq!(p.outcome, Outcome::Untouched);
        assert!(p.actions.is_empty());
    }
}
