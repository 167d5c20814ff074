//! Unit tests of `plan`.
#![allow(clippy::field_reassign_with_default)]

use super::*;
use crate::core::crd::HardeningProfileSpec;
use crate::core::desired::{ALLOW_DNS_POLICY, DEFAULT_DENY_POLICY};
use crate::core::model::Profile;
use crate::core::selection::{Exclusions, govern};

fn governed(spec: HardeningProfileSpec) -> Governance {
    Governance::Governed { profile: Arc::new(Profile::from_spec("prod", spec)), overridden: vec![] }
}

fn sa(name: &str, automount: Option<bool>, owned: bool) -> Arc<ServiceAccountView> {
    Arc::new(ServiceAccountView {
        name: name.into(),
        uid: Some(crate::core::ids::Uid::new(&format!("uid-{name}"))),
        resource_version: Some(1),
        automount_token: automount,
        automount_owned: owned,
        guarded: owned,
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
        labels: want.labels.clone().into(),
        annotations: want.annotations.clone().into(),
        terminating: false,
        label_managers: Default::default(),
        hardened: None,
        // nsguard applied them, so it holds the tamper guard's markers.
        owned_markers: want.marker_keys(),
    };
    let observed = Observed {
        network_policies: want.network_policies.values().map(np_view).collect(),
        service_accounts: vec![sa("default", Some(false), true), sa("builder", Some(false), true)],
        ..Default::default()
    };
    (ns, observed)
}

#[test]
fn new_namespace_is_hardened_with_every_write() {
    let ns = NamespaceView { name: "team-a".into(), ..Default::default() };
    let observed =
        Observed { network_policies: vec![], service_accounts: vec![sa("default", None, false)], ..Default::default() };
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
fn a_default_service_account_not_there_yet_is_created_hardened_in_the_same_turn() {
    let ns = NamespaceView { name: "team-a".into(), ..Default::default() };
    let p = plan(&ns, governed(HardeningProfileSpec::default()), &Observed::default());
    assert!(p.actions.contains(&Action::DisableAutomount { name: "default".into(), uid: None }), "{:?}", p.actions);
    // Not when the profile leaves `default` alone, nor in Audit mode.
    let mut exempt = HardeningProfileSpec::default();
    exempt.service_accounts.exempt = vec!["default".into()];
    let p = plan(&ns, governed(exempt), &Observed::default());
    assert!(!p.actions.iter().any(|a| matches!(a, Action::DisableAutomount { .. })), "{:?}", p.actions);
    let audit = HardeningProfileSpec { mode: crate::core::crd::Mode::Audit, ..Default::default() };
    assert!(plan(&ns, governed(audit), &Observed::default()).actions.is_empty());
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
    ns.labels.insert("pod-security.kubernetes.io/enforce", "privileged");
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
    // The six Pod Security labels and the tamper guard's marker.
    assert!(matches!(&p.actions[..], [Action::ApplyNamespace { labels, .. }] if labels.len() == 7));
}

#[test]
fn edited_and_deleted_policies_are_reapplied() {
    let spec = HardeningProfileSpec::default();
    let (ns, mut observed) = converged(&spec);
    let mut edited = desired("prod", &spec, "team-a").network_policies[DEFAULT_DENY_POLICY].clone();
    edited.spec.as_mut().expect("spec").ingress = Some(vec![Default::default()]);
    observed.network_policies = vec![np_view(&edited)];
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
    let observed =
        Observed { network_policies: vec![], service_accounts: vec![sa("default", None, false)], ..Default::default() };
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
                uid: Some(crate::core::ids::Uid::new(&format!("uid-{ALLOW_DNS_POLICY}")))
            },
            Action::DeleteNetworkPolicy {
                name: DEFAULT_DENY_POLICY.into(),
                uid: Some(crate::core::ids::Uid::new(&format!("uid-{DEFAULT_DENY_POLICY}")))
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
    ns.annotations = Default::default();
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
    assert_eq!(p.actions[0], Action::ReleaseAutomount { name: "builder".into(), uid: Some("uid-builder".into()) });
    // The guard's marker of exempt ServiceAccounts changes with the list (bookkeeping, not drift).
    assert!(matches!(&p.actions[1..], [Action::ApplyNamespace { annotations, .. }]
        if annotations.get(crate::core::model::EXEMPT_ANNOTATION).map(String::as_str) == Some("builder")));
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

#[test]
fn the_field_manager_that_set_a_drifted_label_is_named() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
    let spec = HardeningProfileSpec::default();
    let (ns, observed) = converged(&spec);
    let enforce = "pod-security.kubernetes.io/enforce";
    let entry = |manager: &str, fields: serde_json::Value| ManagedFieldsEntry {
        manager: Some(manager.into()),
        operation: Some("Update".into()),
        fields_v1: Some(FieldsV1(fields)),
        ..Default::default()
    };
    let managed = vec![
        entry("nsguard", serde_json::json!({"f:metadata": {"f:labels": {"f:pod-security.kubernetes.io/warn": {}}}})),
        entry(
            "argocd",
            serde_json::json!({"f:metadata": {"f:labels": {"f:pod-security.kubernetes.io/enforce": {}, "f:team": {}}}}),
        ),
        entry("kubectl", serde_json::json!({"f:metadata": {"f:labels": {"f:team": {}}}})),
    ];
    let mut meta = kube::api::ObjectMeta {
        name: Some(ns.name.clone()),
        labels: Some(ns.labels.to_map()),
        annotations: Some(ns.annotations.to_map()),
        managed_fields: Some(managed),
        ..Default::default()
    };
    meta.labels.as_mut().expect("labels").insert(enforce.into(), "privileged".into());
    let drifted = NamespaceView::from_meta(&meta);
    let p = plan(&drifted, governed(spec), &observed);
    assert_eq!(p.rivals, ["argocd"]);
}

#[test]
fn only_a_condition_nsguard_applied_is_nsguards() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
    let entry = |manager: &str| ManagedFieldsEntry {
        manager: Some(manager.into()),
        operation: Some("Apply".into()),
        subresource: Some("status".into()),
        fields_v1: Some(FieldsV1(serde_json::json!({"f:status": {"f:conditions": {
            "k:{\"type\":\"nsguard.io/Hardened\"}": {".": {}, "f:status": {}}}}}))),
        ..Default::default()
    };
    let meta = |managers: &[&str]| kube::api::ObjectMeta {
        managed_fields: Some(managers.iter().map(|m| entry(m)).collect()),
        ..Default::default()
    };
    assert!(crate::core::model::owns_condition(&meta(&["nsguard"])));
    assert!(!crate::core::model::owns_condition(&meta(&["bench-floor"])));
    assert!(!crate::core::model::owns_condition(&meta(&[])));
}

#[test]
fn enforce_mode_marks_the_namespace_for_the_tamper_guard_and_audit_mode_does_not() {
    use crate::core::model::{EXEMPT_ANNOTATION, GUARD_LABEL, POD_TOKEN_GUARD_ANNOTATION};
    let spec = |v: serde_json::Value| -> HardeningProfileSpec { serde_json::from_value(v).expect("spec") };
    let enforce = desired("prod", &spec(serde_json::json!({"serviceAccounts": {"exempt": ["ci", "bot"]}})), "team-a");
    assert_eq!(enforce.labels.get(GUARD_LABEL).map(String::as_str), Some("true"));
    assert_eq!(enforce.annotations.get(POD_TOKEN_GUARD_ANNOTATION).map(String::as_str), Some("All"));
    assert_eq!(enforce.annotations.get(EXEMPT_ANNOTATION).map(String::as_str), Some("ci,bot"));
    let allow = desired("prod", &spec(serde_json::json!({"serviceAccounts": {"podOverride": "Allow"}})), "team-a");
    assert!(!allow.annotations.contains_key(POD_TOKEN_GUARD_ANNOTATION));
    let audit = desired("prod", &spec(serde_json::json!({"mode": "Audit"})), "team-a");
    assert!(!audit.labels.contains_key(GUARD_LABEL) && audit.annotations.is_empty());
}

#[test]
fn missing_markers_are_rewritten_as_bookkeeping_never_as_drift() {
    use crate::core::model::GUARD_LABEL;
    let (mut ns, mut observed) = converged(&HardeningProfileSpec::default());
    ns.labels.remove(GUARD_LABEL);
    // A ServiceAccount whose token is off but that lacks the guard's label.
    observed.service_accounts =
        vec![Arc::new(ServiceAccountView { guarded: false, ..(*sa("default", Some(false), true)).clone() })];
    let p = plan(&ns, governed(HardeningProfileSpec::default()), &observed);
    assert!(p.drift.is_empty() && p.corrections.is_empty(), "{:?}", p.drift);
    assert_eq!(p.outcome, Outcome::Compliant);
    assert!(
        p.actions
            .iter()
            .any(|a| matches!(a, Action::ApplyNamespace { labels, .. } if labels.contains_key(GUARD_LABEL)))
    );
    assert!(p.actions.iter().any(|a| matches!(a, Action::DisableAutomount { name, .. } if name == "default")));
}

#[test]
fn audit_mode_takes_the_markers_down_and_keeps_everything_else() {
    use crate::core::model::{GUARD_LABEL, POD_TOKEN_GUARD_ANNOTATION};
    // Enforced before, now Audit: the markers go; the labels and annotations stay as they are.
    let (ns, observed) = converged(&HardeningProfileSpec::default());
    let audit: HardeningProfileSpec = serde_json::from_value(serde_json::json!({"mode": "Audit"})).expect("spec");
    let p = plan(&ns, governed(audit.clone()), &observed);
    let [Action::ApplyNamespace { labels, annotations }] = p.actions.as_slice() else { panic!("{:?}", p.actions) };
    assert!(!labels.contains_key(GUARD_LABEL) && !annotations.contains_key(POD_TOKEN_GUARD_ANNOTATION));
    assert_eq!(labels.get("pod-security.kubernetes.io/enforce").map(String::as_str), Some("restricted"));
    assert!(annotations.contains_key(PROFILE_ANNOTATION));
    assert!(p.corrections.is_empty());
    // Once they are down, Audit mode writes nothing.
    let mut unmarked = ns.clone();
    unmarked.labels.remove(GUARD_LABEL);
    unmarked.owned_markers.clear();
    assert!(plan(&unmarked, governed(audit), &observed).actions.is_empty());
}

#[test]
fn a_marker_another_manager_set_is_not_nsguards_to_take_down() {
    use crate::core::model::EXEMPT_ANNOTATION;
    let (mut ns, observed) = converged(&HardeningProfileSpec::default());
    ns.annotations.insert(EXEMPT_ANNOTATION, "default");
    // Someone else's: applying cannot remove it, so nsguard does not try (on every look).
    assert!(plan(&ns, governed(HardeningProfileSpec::default()), &observed).actions.is_empty());
    // nsguard's own (the profile's exemptions were emptied): taken down.
    ns.owned_markers.push(EXEMPT_ANNOTATION);
    let p = plan(&ns, governed(HardeningProfileSpec::default()), &observed);
    assert!(
        matches!(&p.actions[..], [Action::ApplyNamespace { annotations, .. }] if !annotations.contains_key(EXEMPT_ANNOTATION))
    );
}

#[test]
fn only_a_namespace_write_that_raises_nothing_goes_alongside_the_report() {
    let spec = HardeningProfileSpec::default();
    let want = desired("prod", &spec, "team-a");
    let (hardened, _) = converged(&spec);
    let relabel = Action::ApplyNamespace { labels: want.labels.clone(), annotations: want.annotations.clone() };
    // A profile change (warn, say) on a namespace already enforcing the target; not a first
    // hardening, which raises enforce (the write goes first, its warnings decide the Report).
    assert!(report_alongside(&hardened, Some(&want), std::slice::from_ref(&relabel)));
    let new = NamespaceView { name: "team-a".into(), ..Default::default() };
    assert!(!report_alongside(&new, Some(&want), std::slice::from_ref(&relabel)));
    let token = Action::DisableAutomount { name: "default".into(), uid: None };
    assert!(!report_alongside(&hardened, Some(&want), &[token, relabel.clone()]));
    assert!(!report_alongside(&hardened, Some(&want), &[]));
    assert!(!report_alongside(&hardened, None, &[relabel]));
}
