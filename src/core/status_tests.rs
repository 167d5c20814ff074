//! Unit tests of `status`.

use super::*;
use crate::core::crd::HardeningProfileSpec;
use k8s_openapi::jiff::Timestamp;
use std::sync::Arc;

fn result(profile: &str, outcome: Outcome, overridden: &[&str]) -> NamespaceResult {
    NamespaceResult {
        rivals: vec![],
        taken: vec![],
        held: None,
        exception: None,
        profile: Some(profile.into()),
        overridden: overridden.iter().map(|s| (*s).to_owned()).collect(),
        outcome,
        detail: if outcome == Outcome::Compliant { String::new() } else { "label x was missing".into() },
        failed: false,
        fighting: false,
    }
}

fn at(secs: i64) -> Time {
    Time(Timestamp::from_second(secs).expect("valid"))
}

fn cond<'a>(s: &'a HardeningProfileStatus, t: &str) -> &'a Condition {
    s.conditions.iter().find(|c| c.type_ == t).expect("condition")
}

#[test]
fn counts_governed_and_compliant_namespaces_and_lists_the_rest() {
    let profiles = [Arc::new(Profile::from_spec("prod", HardeningProfileSpec::default()))];
    let results = [
        ("a".to_owned(), result("prod", Outcome::Compliant, &[])),
        ("b".to_owned(), result("prod", Outcome::Converging, &[])),
        ("c".to_owned(), result("prod", Outcome::Compliant, &[])),
    ];
    let out =
        aggregate(&profiles, results.iter().map(|(n, r)| (n.as_str(), r)), &HashMap::new(), &HashMap::new(), &at(1));
    let s = &out["prod"];
    assert_eq!((s.matched_namespaces, s.compliant_namespaces), (3, 2));
    assert_eq!(
        s.non_compliant,
        [NonCompliantNamespace { namespace: "b".into(), reason: "label x was missing".into() }]
    );
    assert_eq!(cond(s, READY).reason, "Progressing");
    assert_eq!(cond(s, DRIFTED).status, "True");
}

#[test]
fn overridden_profile_reports_the_conflict() {
    let profiles = [
        Arc::new(Profile::from_spec("high", HardeningProfileSpec::default())),
        Arc::new(Profile::from_spec("low", HardeningProfileSpec::default())),
    ];
    let results = [("a".to_owned(), result("high", Outcome::Compliant, &["low"]))];
    let out =
        aggregate(&profiles, results.iter().map(|(n, r)| (n.as_str(), r)), &HashMap::new(), &HashMap::new(), &at(1));
    assert_eq!(cond(&out["low"], CONFLICTING).status, "True");
    assert_eq!(cond(&out["low"], CONFLICTING).message, "high governs 1 namespace(s) this profile selects (a)");
    assert_eq!(out["low"].matched_namespaces, 0);
    assert_eq!(cond(&out["high"], CONFLICTING).status, "False");
    assert_eq!(cond(&out["high"], READY).status, "True");
}

#[test]
fn invalid_profile_is_not_ready_with_the_field_named() {
    let mut spec = HardeningProfileSpec::default();
    spec.pod_security.warn.version = "1.2".into();
    let profiles = [Arc::new(Profile::from_spec("bad", spec))];
    let out = aggregate(&profiles, [], &HashMap::new(), &HashMap::new(), &at(1));
    let ready = cond(&out["bad"], READY);
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "InvalidSpec"));
    assert!(ready.message.starts_with("spec.podSecurity.warn.version:"), "{}", ready.message);
}

#[test]
fn unchanged_results_give_an_identical_status() {
    let profiles = [Arc::new(Profile::from_spec("prod", HardeningProfileSpec::default()))];
    let results = [("a".to_owned(), result("prod", Outcome::Compliant, &[]))];
    let first =
        aggregate(&profiles, results.iter().map(|(n, r)| (n.as_str(), r)), &HashMap::new(), &HashMap::new(), &at(1));
    let previous: HashMap<_, _> = first.clone().into_iter().collect();
    let second =
        aggregate(&profiles, results.iter().map(|(n, r)| (n.as_str(), r)), &previous, &HashMap::new(), &at(99));
    assert_eq!(first, second, "transition times are kept, so nothing needs writing");
}

#[test]
fn last_correction_survives_a_restart() {
    let profiles = [Arc::new(Profile::from_spec("prod", HardeningProfileSpec::default()))];
    let results = [("a".to_owned(), result("prod", Outcome::Compliant, &[]))];
    let corrections =
        HashMap::from([("prod".to_owned(), Correction { namespace: "a".into(), summary: "label x".into() })]);
    let before =
        aggregate(&profiles, results.iter().map(|(n, r)| (n.as_str(), r)), &HashMap::new(), &corrections, &at(1));
    assert_eq!(cond(&before["prod"], DRIFTED).reason, "DriftCorrected");
    let previous: HashMap<_, _> = before.clone().into_iter().collect();
    let after = aggregate(&profiles, results.iter().map(|(n, r)| (n.as_str(), r)), &previous, &HashMap::new(), &at(50));
    assert_eq!(before, after);
}

#[test]
fn non_compliant_list_is_bounded() {
    let profiles = [Arc::new(Profile::from_spec("prod", HardeningProfileSpec::default()))];
    let results: Vec<_> = (0..100).map(|i| (format!("ns-{i:03}"), result("prod", Outcome::Drifted, &[]))).collect();
    let out =
        aggregate(&profiles, results.iter().map(|(n, r)| (n.as_str(), r)), &HashMap::new(), &HashMap::new(), &at(1));
    assert_eq!(out["prod"].non_compliant.len(), MAX_LISTED);
    assert_eq!(out["prod"].non_compliant[0].namespace, "ns-000");
}

#[test]
fn a_status_is_written_only_when_it_differs_from_the_stored_and_the_last_written() {
    let a = HardeningProfileStatus { matched_namespaces: 1, ..Default::default() };
    let b = HardeningProfileStatus { matched_namespaces: 2, ..Default::default() };
    assert!(needs_write(&a, None, None));
    assert!(!needs_write(&a, Some(&a), None), "already stored");
    assert!(!needs_write(&a, Some(&b), Some(&a)), "written; its watch event is on the way");
    assert!(needs_write(&a, Some(&b), Some(&b)));
}

fn kstatus_conditions(s: &HardeningProfileStatus) -> Vec<(&str, &str, &str)> {
    s.conditions
        .iter()
        .filter(|c| c.type_ == RECONCILING || c.type_ == STALLED)
        .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
        .collect()
}

#[test]
fn converging_namespaces_make_the_profile_reconciling_for_kstatus() {
    let profiles = [Arc::new(Profile::from_spec("prod", HardeningProfileSpec::default()))];
    let failed = NamespaceResult { failed: true, ..result("prod", Outcome::Converging, &[]) };
    for (namespace, reason) in [(result("prod", Outcome::Converging, &[]), "Progressing"), (failed, "ReconcileFailed")]
    {
        let results = [("a".to_owned(), result("prod", Outcome::Compliant, &[])), ("b".to_owned(), namespace)];
        let out = aggregate(
            &profiles,
            results.iter().map(|(n, r)| (n.as_str(), r)),
            &HashMap::new(),
            &HashMap::new(),
            &at(1),
        );
        assert_eq!(kstatus_conditions(&out["prod"]), [(RECONCILING, "True", reason)]);
        assert_eq!(cond(&out["prod"], RECONCILING).observed_generation, out["prod"].observed_generation);
    }
}

#[test]
fn invalid_spec_stalls_the_profile_for_kstatus_naming_the_field() {
    let mut spec = HardeningProfileSpec::default();
    spec.pod_security.warn.version = "1.2".into();
    let profiles = [Arc::new(Profile::from_spec("bad", spec))];
    let out = aggregate(&profiles, [], &HashMap::new(), &HashMap::new(), &at(1));
    assert_eq!(kstatus_conditions(&out["bad"]), [(STALLED, "True", "InvalidSpec")]);
    assert!(cond(&out["bad"], STALLED).message.starts_with("spec.podSecurity.warn.version:"));
}

#[test]
fn compliant_profile_has_neither_reconciling_nor_stalled() {
    let profiles = [Arc::new(Profile::from_spec("prod", HardeningProfileSpec::default()))];
    let results = [("a".to_owned(), result("prod", Outcome::Compliant, &[]))];
    let out =
        aggregate(&profiles, results.iter().map(|(n, r)| (n.as_str(), r)), &HashMap::new(), &HashMap::new(), &at(1));
    assert_eq!(kstatus_conditions(&out["prod"]), []);
    // Audit mode's drift is reported, not worked on: not Reconciling either.
    let audit: HardeningProfileSpec = serde_json::from_value(serde_json::json!({"mode": "Audit"})).expect("spec");
    let profiles = [Arc::new(Profile::from_spec("audit", audit))];
    let results = [("a".to_owned(), result("audit", Outcome::Drifted, &[]))];
    let out =
        aggregate(&profiles, results.iter().map(|(n, r)| (n.as_str(), r)), &HashMap::new(), &HashMap::new(), &at(1));
    assert_eq!(kstatus_conditions(&out["audit"]), []);
}

#[test]
fn reconciling_keeps_its_transition_time_and_goes_once_compliant() {
    let profiles = [Arc::new(Profile::from_spec("prod", HardeningProfileSpec::default()))];
    let converging = [("a".to_owned(), result("prod", Outcome::Converging, &[]))];
    let first =
        aggregate(&profiles, converging.iter().map(|(n, r)| (n.as_str(), r)), &HashMap::new(), &HashMap::new(), &at(1));
    let previous: HashMap<_, _> = first.clone().into_iter().collect();
    let second =
        aggregate(&profiles, converging.iter().map(|(n, r)| (n.as_str(), r)), &previous, &HashMap::new(), &at(9));
    assert_eq!(first, second, "still converging: nothing to write");
    let compliant = [("a".to_owned(), result("prod", Outcome::Compliant, &[]))];
    let previous: HashMap<_, _> = second.into_iter().collect();
    let third =
        aggregate(&profiles, compliant.iter().map(|(n, r)| (n.as_str(), r)), &previous, &HashMap::new(), &at(20));
    assert_eq!(kstatus_conditions(&third["prod"]), []);
    let types: Vec<&str> = third["prod"].conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(types, [READY, DRIFTED, CONFLICTING], "the existing conditions stay");
}

#[test]
fn the_listed_namespaces_are_the_first_by_name_whatever_the_walk_order() {
    let profiles = [Arc::new(Profile::from_spec("prod", HardeningProfileSpec::default()))];
    // 97 is coprime with 100: every index once, far from sorted.
    let results: Vec<(String, NamespaceResult)> =
        (0..100).map(|i| (format!("ns-{:03}", i * 97 % 100), result("prod", Outcome::Converging, &[]))).collect();
    let t = tally(results.iter().map(|(n, r)| (n.as_str(), r)));
    let out = statuses(&profiles, &t, &HashMap::new(), &HashMap::new(), &at(1));
    let listed: Vec<&str> = out["prod"].non_compliant.iter().map(|n| n.namespace.as_str()).collect();
    let first: Vec<String> = (0..MAX_LISTED).map(|i| format!("ns-{i:03}")).collect();
    assert_eq!(listed, first);
    assert_eq!(out["prod"].matched_namespaces, 100);
}

#[test]
fn a_correction_alone_changes_the_status_from_the_same_tallies() {
    // The status writer walks every namespace only when a result changed; a correction (the
    // namespace is compliant again, its result unchanged) is shown from the tallies it kept.
    let profiles = [Arc::new(Profile::from_spec("prod", HardeningProfileSpec::default()))];
    let results = [("a".to_owned(), result("prod", Outcome::Compliant, &[]))];
    let t = tally(results.iter().map(|(n, r)| (n.as_str(), r)));
    let before = statuses(&profiles, &t, &HashMap::new(), &HashMap::new(), &at(1));
    assert_eq!(cond(&before["prod"], DRIFTED).reason, "NoDrift");
    let corrections =
        HashMap::from([("prod".to_owned(), Correction { namespace: "a".into(), summary: "label x".into() })]);
    let after = statuses(&profiles, &t, &HashMap::new(), &corrections, &at(2));
    assert_eq!(cond(&after["prod"], DRIFTED).reason, "DriftCorrected");
    assert_eq!(
        after,
        aggregate(&profiles, results.iter().map(|(n, r)| (n.as_str(), r)), &HashMap::new(), &corrections, &at(2))
    );
}

#[test]
fn tallies_count_orphaned_and_held_namespaces() {
    let held =
        NamespaceResult { held: Some("pods violate restricted".into()), ..result("prod", Outcome::Compliant, &[]) };
    let orphaned = NamespaceResult { profile: None, ..result("gone", Outcome::Orphaned, &[]) };
    let results = [("a".to_owned(), held), ("b".to_owned(), orphaned)];
    let t = tally(results.iter().map(|(n, r)| (n.as_str(), r)));
    assert_eq!((t.orphaned, t.held), (1, 1));
}

#[test]
fn failed_namespaces_are_counted_all_and_named_three() {
    let profiles = [Arc::new(Profile::from_spec("prod", HardeningProfileSpec::default()))];
    let failed =
        |i: usize| (format!("ns-{i}"), NamespaceResult { failed: true, ..result("prod", Outcome::Converging, &[]) });
    let results: Vec<(String, NamespaceResult)> = (0..5).map(failed).collect();
    let t = tally(results.iter().map(|(n, r)| (n.as_str(), r)));
    let ready = cond(&statuses(&profiles, &t, &HashMap::new(), &HashMap::new(), &at(1))["prod"], READY).clone();
    assert_eq!(ready.reason, "ReconcileFailed");
    assert!(ready.message.starts_with("5 namespace(s) could not be reconciled"), "{}", ready.message);
    assert!(ready.message.ends_with(", and 2 more"), "{}", ready.message);
    assert_eq!(ready.message.matches(": label x was missing").count(), 3, "{}", ready.message);
}
