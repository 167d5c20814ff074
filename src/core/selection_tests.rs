//! Unit tests of `selection`.
#![allow(clippy::field_reassign_with_default)]

use super::*;
use crate::core::crd::{HardeningProfileSpec, LabelSelector, LabelSelectorRequirement, LabelValue, SelectorOperator};
use crate::core::model::PROFILE_ANNOTATION;

fn ns(name: &str, labels: &[(&str, &str)]) -> NamespaceView {
    NamespaceView { name: name.into(), labels: labels.iter().copied().collect(), ..Default::default() }
}

fn profile(name: &str, priority: i32, labels: &[(&str, &str)]) -> Arc<Profile> {
    let spec = HardeningProfileSpec {
        priority,
        namespace_selector: Some(LabelSelector {
            match_labels: labels.iter().map(|(k, v)| ((*k).into(), LabelValue((*v).into()))).collect(),
            match_expressions: vec![],
        }),
        ..Default::default()
    };
    Arc::new(Profile::from_spec(name, spec))
}

fn winner(g: &Governance) -> (Option<&str>, Vec<String>) {
    match g {
        Governance::Governed { profile, overridden } => (Some(profile.name.as_str()), overridden.clone()),
        other => (other.profile_name(), vec![]),
    }
}

#[test]
fn empty_selector_selects_every_namespace() {
    let g = govern(&ns("team-a", &[]), &[profile("all", 0, &[])], &Exclusions::default());
    assert_eq!(winner(&g).0, Some("all"));
}

#[test]
fn system_namespaces_are_never_governed_by_default() {
    for name in SYSTEM_NAMESPACES {
        let g = govern(&ns(name, &[]), &[profile("all", 0, &[])], &Exclusions::default());
        assert!(matches!(g, Governance::Excluded), "{name}");
    }
    let own = Exclusions::new(Some("nsguard-system"), false, &[]).expect("valid");
    assert!(own.excludes("nsguard-system"));
    let included = Exclusions::new(Some("nsguard-system"), true, &[]).expect("valid");
    assert!(!included.excludes("kube-system") && !included.excludes("nsguard-system"));
}

#[test]
fn highest_priority_wins_and_others_are_overridden() {
    let profiles = [profile("b-low", 1, &[]), profile("a-high", 10, &[]), profile("c-mid", 5, &[])];
    let g = govern(&ns("x", &[]), &profiles, &Exclusions::default());
    assert_eq!(winner(&g), (Some("a-high"), vec!["c-mid".to_owned(), "b-low".to_owned()]));
}

#[test]
fn priority_tie_goes_to_first_name() {
    let profiles = [profile("zeta", 3, &[]), profile("alpha", 3, &[])];
    let g = govern(&ns("x", &[]), &profiles, &Exclusions::default());
    assert_eq!(winner(&g), (Some("alpha"), vec!["zeta".to_owned()]));
}

#[test]
fn match_labels_and_expressions_must_all_hold() {
    let mut spec = HardeningProfileSpec::default();
    spec.namespace_selector = Some(LabelSelector {
        match_labels: [("env".to_owned(), LabelValue("prod".into()))].into(),
        match_expressions: vec![
            LabelSelectorRequirement {
                key: "tier".into(),
                operator: SelectorOperator::In,
                values: vec![LabelValue("web".into()), LabelValue("api".into())],
            },
            LabelSelectorRequirement { key: "legacy".into(), operator: SelectorOperator::DoesNotExist, values: vec![] },
            LabelSelectorRequirement { key: "team".into(), operator: SelectorOperator::Exists, values: vec![] },
            LabelSelectorRequirement {
                key: "stage".into(),
                operator: SelectorOperator::NotIn,
                values: vec![LabelValue("canary".into())],
            },
        ],
    });
    let p = [Arc::new(Profile::from_spec("p", spec))];
    let ex = Exclusions::default();
    let selected = |labels: &[(&str, &str)]| govern(&ns("n", labels), &p, &ex).profile_name().is_some();
    assert!(selected(&[("env", "prod"), ("tier", "api"), ("team", "a")]));
    assert!(!selected(&[("env", "dev"), ("tier", "api"), ("team", "a")]));
    assert!(!selected(&[("env", "prod"), ("tier", "db"), ("team", "a")]));
    assert!(!selected(&[("env", "prod"), ("tier", "api"), ("team", "a"), ("legacy", "")]));
    assert!(!selected(&[("env", "prod"), ("tier", "api")]));
    assert!(!selected(&[("env", "prod"), ("tier", "api"), ("team", "a"), ("stage", "canary")]));
}

#[test]
fn excluded_globs_match_whole_names() {
    let spec =
        HardeningProfileSpec { exclude_namespaces: vec!["legacy-*".into(), "tmp-?".into()], ..Default::default() };
    let p = [Arc::new(Profile::from_spec("p", spec))];
    let ex = Exclusions::default();
    let governed = |name: &str| govern(&ns(name, &[]), &p, &ex).profile_name().is_some();
    assert!(!governed("legacy-billing"));
    assert!(!governed("tmp-1"));
    assert!(governed("tmp-12"));
    assert!(governed("not-legacy-x"));
}

fn annotated(name: &str, profile: &str) -> NamespaceView {
    let mut n = ns(name, &[]);
    n.annotations.insert(PROFILE_ANNOTATION, profile);
    n
}

#[test]
fn namespace_of_a_profile_out_of_view_is_orphaned_not_released() {
    let g = govern(&annotated("x", "gone"), &[profile("other", 0, &[("team", "b")])], &Exclusions::default());
    assert!(matches!(&g, Governance::Orphaned { profile } if profile == "gone"), "{g:?}");
    assert_eq!(g.profile_name(), Some("gone"));
}

#[test]
fn a_visible_profile_that_selects_an_orphan_takes_it_over() {
    let g = govern(&annotated("x", "gone"), &[profile("all", 0, &[])], &Exclusions::default());
    assert_eq!(winner(&g).0, Some("all"));
}

#[test]
fn namespace_a_visible_profile_stopped_selecting_is_released() {
    let g = govern(&annotated("x", "prod"), &[profile("prod", 0, &[("env", "prod")])], &Exclusions::default());
    assert!(matches!(g, Governance::Ungoverned), "{g:?}");
}

#[test]
fn a_profile_being_deleted_governs_nothing_and_its_namespaces_are_released() {
    let mut deleting = (*profile("prod", 0, &[])).clone();
    deleting.deleting = true;
    let profiles = [Arc::new(deleting)];
    assert!(matches!(govern(&annotated("x", "prod"), &profiles, &Exclusions::default()), Governance::Ungoverned));
    assert!(!may_affect(&profiles[0], &ns("fresh", &[])), "a deleting profile selects no new namespace");
    assert!(may_affect(&profiles[0], &annotated("x", "prod")));
}

#[test]
fn only_spec_changes_and_deletion_fan_a_profile_out() {
    let mut p = (*profile("prod", 0, &[])).clone();
    p.generation = Some(1);
    assert!(fans_out(None, &p), "a new profile");
    let mut finalized = p.clone();
    finalized.finalizers = vec![crate::core::model::PROFILE_FINALIZER.into()];
    assert!(fans_out(Some(&p), &finalized), "its namespaces waited for the finalizer");
    assert!(!fans_out(Some(&finalized), &finalized.clone()), "nsguard's own status write");
    let mut edited = p.clone();
    edited.generation = Some(2);
    assert!(fans_out(Some(&p), &edited));
    let mut deleting = p.clone();
    deleting.deleting = true;
    assert!(fans_out(Some(&p), &deleting));
}

#[test]
fn the_finalizer_goes_on_live_profiles_and_comes_off_once_every_namespace_is_released() {
    let mut p = (*profile("prod", 0, &[])).clone();
    assert_eq!(finalizer_change(&p, 3), FinalizerChange::Add);
    p.finalizers = vec![crate::core::model::PROFILE_FINALIZER.into()];
    assert_eq!(finalizer_change(&p, 3), FinalizerChange::None);
    p.deleting = true;
    assert_eq!(finalizer_change(&p, 1), FinalizerChange::None, "a namespace is still to be released");
    assert_eq!(finalizer_change(&p, 0), FinalizerChange::Remove);
    p.finalizers.clear();
    assert_eq!(finalizer_change(&p, 0), FinalizerChange::None, "never re-added while deleting");
}

#[test]
fn only_namespaces_nsguard_will_release_hold_a_profile_back() {
    let ex = Exclusions::default();
    let mut gone = (*profile("prod", 0, &[])).clone();
    gone.deleting = true;
    let deleting = [Arc::new(gone.clone())];
    assert!(awaits_release(&annotated("x", "prod"), "prod", &deleting, &ex));
    assert!(!awaits_release(&annotated("x", "other"), "prod", &deleting, &ex));
    let mut terminating = annotated("x", "prod");
    terminating.terminating = true;
    assert!(!awaits_release(&terminating, "prod", &deleting, &ex));
    assert!(!awaits_release(&annotated("kube-system", "prod"), "prod", &deleting, &ex));
    // Handed over to another profile (which may be in Audit mode and never rewrite the annotation).
    let mut successor = (*profile("audit-all", 0, &[])).clone();
    let unfinalized = [Arc::new(gone.clone()), Arc::new(successor.clone())];
    assert!(
        awaits_release(&annotated("x", "prod"), "prod", &unfinalized, &ex),
        "a successor without the finalizer has written nothing yet"
    );
    successor.finalizers = vec![crate::core::model::PROFILE_FINALIZER.into()];
    let with_successor = [Arc::new(gone), Arc::new(successor)];
    assert!(!awaits_release(&annotated("x", "prod"), "prod", &with_successor, &ex));
}

#[test]
fn namespace_of_an_invalid_profile_is_held() {
    let mut bad = HardeningProfileSpec::default();
    bad.pod_security.enforce.version = "1.30".into();
    let profiles = [Arc::new(Profile::from_spec("broken", bad)), profile("other", 0, &[])];
    let mut n = ns("x", &[]);
    n.annotations.insert(PROFILE_ANNOTATION, "broken");
    assert!(matches!(govern(&n, &profiles, &Exclusions::default()), Governance::Held { .. }));
    // A namespace the invalid profile never governed goes to the valid one.
    assert_eq!(winner(&govern(&ns("y", &[]), &profiles, &Exclusions::default())).0, Some("other"));
}

#[test]
fn a_namespace_waits_for_its_profiles_finalizer_before_anything_is_written() {
    let ex = Exclusions::default();
    let mut p = (*profile("prod", 0, &[])).clone();
    let fresh = govern(&ns("x", &[]), &[Arc::new(p.clone())], &ex);
    assert!(awaits_finalizer(&fresh), "a profile without nsguard's finalizer yet");
    p.finalizers = vec![crate::core::model::PROFILE_FINALIZER.into()];
    assert!(!awaits_finalizer(&govern(&ns("x", &[]), &[Arc::new(p.clone())], &ex)));
    assert!(!awaits_finalizer(&Governance::Ungoverned), "a release never waits");
}

/// A finalizer nsguard saw arrive must settle before anything is hardened under its profile (a
/// DELETE in flight may still remove the profile, kubernetes/kubernetes#77988); one there when the
/// profile was first seen needs no wait.
#[test]
fn hardening_waits_for_a_new_finalizer_to_settle() {
    let seen = std::time::Instant::now();
    assert_eq!(finalizer_settling(None, seen), None, "there when first seen");
    assert_eq!(finalizer_settling(Some(seen), seen), Some(FINALIZER_SETTLE));
    let later = seen + FINALIZER_SETTLE / 4;
    assert_eq!(finalizer_settling(Some(seen), later), Some(FINALIZER_SETTLE - FINALIZER_SETTLE / 4));
    assert_eq!(finalizer_settling(Some(seen), seen + FINALIZER_SETTLE), None, "settled");
    assert_eq!(finalizer_settling(Some(seen), seen + 2 * FINALIZER_SETTLE), None);
}
