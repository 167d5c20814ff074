use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::*;
use crate::core::crd::HardeningProfileSpec;
use crate::core::desired::desired;

/// What the API server (v1.36) answered to a dry-run of `enforce=restricted` on a namespace with a
/// privileged pod and two identical root pods.
fn warnings() -> Vec<String> {
    vec![
        "existing pods in namespace \"team-a\" violate the new PodSecurity enforce level \"restricted:latest\"".into(),
        "priv: privileged (container \"c\" must not set securityContext.privileged=true), allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false)".into(),
        "root-0 (and 1 other pod): runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true)".into(),
    ]
}

/// PSA's heading, then `lines`.
fn psa(lines: &[&str]) -> Vec<String> {
    let mut out = vec![
        "existing pods in namespace \"team-a\" violate the new PodSecurity enforce level \"restricted:latest\""
            .to_owned(),
    ];
    out.extend(lines.iter().map(|l| (*l).to_owned()));
    out
}

fn namespace(enforce: Option<&str>) -> NamespaceView {
    let mut labels = BTreeMap::new();
    if let Some(level) = enforce {
        labels.insert(format!("{PSA_PREFIX}enforce"), level.to_owned());
        labels.insert(format!("{PSA_PREFIX}enforce-version"), "latest".to_owned());
    }
    NamespaceView { name: "team-a".into(), labels: labels.into(), ..Default::default() }
}

fn want(rollout: Rollout) -> Desired {
    let mut spec = HardeningProfileSpec::default();
    spec.pod_security.rollout = rollout;
    desired("p", &spec, "team-a")
}

#[test]
fn warnings_name_each_violating_pod_its_group_and_its_failed_checks() {
    let e = evaluate(&warnings());
    assert!(!e.clean());
    assert_eq!(e.violations.len(), 2);
    assert_eq!(e.violations[0].pod, "priv");
    assert!(e.violations[0].checks.starts_with("privileged (container \"c\""), "{:?}", e.violations[0]);
    assert_eq!((e.violations[1].pod.as_str(), e.violations[1].others), ("root-0", 1));
    assert_eq!(e.pods(), 3);
    let text = e.describe(PodSecurityLevel::Restricted);
    assert!(text.starts_with("3 pod(s) would violate restricted: pod priv: privileged"), "{text}");
    assert!(text.contains("pod root-0 (and 1 other pod): runAsNonRoot != true"), "{text}");
}

#[test]
fn a_check_that_stopped_early_or_could_not_list_pods_is_not_clean() {
    for w in [
        "new PodSecurity enforce level only checked against the first 3000 of 3500 existing pods",
        "failed to list pods while checking new PodSecurity enforce level",
    ] {
        let e = evaluate(&[w.to_owned()]);
        assert!(!e.clean(), "{w}");
        assert!(e.describe(PodSecurityLevel::Restricted).contains(w));
    }
    assert!(evaluate(&[]).clean());
    // Other warnings (say, a deprecated API) say nothing about pods.
    assert!(evaluate(&["policy/v1beta1 PodSecurityPolicy is deprecated".to_owned()]).clean());
}

#[test]
fn a_report_lists_the_first_groups_then_counts_the_rest() {
    let lines: Vec<String> = (0..8).map(|i| format!("pod-{i} (and 9 other pods): check-{i}")).collect();
    let many = psa(&lines.iter().map(String::as_str).collect::<Vec<_>>());
    let e = evaluate(&many);
    assert_eq!(e.pods(), 80);
    let text = e.describe(PodSecurityLevel::Restricted);
    assert!(text.contains("pod pod-4 (and 9 other pods): check-4"), "{text}");
    assert!(!text.contains("pod-5"), "{text}");
    assert!(text.ends_with("and 30 more pod(s)"), "{text}");
}

#[test]
fn warning_headers_are_unquoted_and_unescaped() {
    assert_eq!(warning_text(r#"299 - "a \"b\" c""#).as_deref(), Some(r#"a "b" c"#));
    assert_eq!(warning_text("299 - \"x, y\"").as_deref(), Some("x, y"));
    assert_eq!(warning_text("199 - \"other\""), None);
}

#[test]
fn raising_enforce_in_a_namespace_with_service_accounts_is_dry_run_first_strictest_level_first() {
    let now = Instant::now();
    assert_eq!(
        step(&namespace(None), &want(Rollout::Gated), 1, None, false, true, now),
        Step::Probe(vec![PodSecurityLevel::Restricted, PodSecurityLevel::Baseline])
    );
    assert_eq!(
        step(&namespace(Some("baseline")), &want(Rollout::Gated), 1, None, false, true, now),
        Step::Probe(vec![PodSecurityLevel::Restricted])
    );
}

#[test]
fn no_dry_run_when_lowering_when_immediate_or_when_no_pod_can_exist() {
    let now = Instant::now();
    // Already at the target: nothing is raised.
    assert_eq!(step(&namespace(Some("restricted")), &want(Rollout::Gated), 1, None, false, true, now), Step::Pass);
    assert_eq!(step(&namespace(None), &want(Rollout::Immediate), 1, None, false, true, now), Step::Pass);
    // No ServiceAccount: the ServiceAccount admission plugin admits no pod there.
    assert_eq!(step(&namespace(None), &want(Rollout::Gated), 0, None, false, true, now), Step::Pass);
    // Lowering: the target is below what the namespace enforces.
    let mut lower = want(Rollout::Gated);
    lower.enforce.level = PodSecurityLevel::Baseline;
    assert_eq!(step(&namespace(Some("restricted")), &lower, 1, None, false, true, now), Step::Pass);
}

#[test]
fn a_hold_stands_until_its_recheck_is_due_then_the_namespace_is_dry_run_again() {
    let now = Instant::now();
    let ns = namespace(Some("privileged"));
    let target = want(Rollout::Gated).enforce;
    let results = vec![
        (PodSecurityLevel::Restricted, evaluate(&warnings())),
        (PodSecurityLevel::Baseline, evaluate(&warnings())),
    ];
    let hold = resolve(&namespace(None), &target, &results, now, Duration::from_secs(60)).expect("held");
    assert_eq!(hold.level, PodSecurityLevel::Privileged, "neither level is clean");
    assert_eq!(step(&ns, &want(Rollout::Gated), 1, Some(&hold), false, true, now), Step::Held(hold.clone()));
    assert!(matches!(
        step(&ns, &want(Rollout::Gated), 1, Some(&hold), false, true, now + Duration::from_secs(61)),
        Step::Probe(_)
    ));
    // Someone lowered the label below the hold: check again rather than trust the old answer.
    let hold_baseline = Hold { level: PodSecurityLevel::Baseline, ..hold };
    assert!(matches!(step(&ns, &want(Rollout::Gated), 1, Some(&hold_baseline), false, true, now), Step::Probe(_)));
}

#[test]
fn enforce_is_held_at_the_first_clean_level_and_released_when_the_target_is_clean() {
    let now = Instant::now();
    let target = want(Rollout::Gated).enforce;
    let ns = namespace(None);
    let held = resolve(
        &ns,
        &target,
        &[(PodSecurityLevel::Restricted, evaluate(&warnings())), (PodSecurityLevel::Baseline, Evaluation::default())],
        now,
        Duration::from_secs(60),
    )
    .expect("held");
    assert_eq!(held.level, PodSecurityLevel::Baseline);
    assert_eq!(held.evaluation.pods(), 3, "the report is the target's: what blocks the step up");
    assert!(
        held.describe()
            .starts_with("enforce held at baseline (target restricted:latest): 3 pod(s) would violate restricted")
    );
    assert_eq!(
        resolve(&ns, &target, &[(PodSecurityLevel::Restricted, Evaluation::default())], now, Duration::ZERO),
        None
    );
}

#[test]
fn a_write_that_drew_violation_warnings_goes_back_to_the_level_before_it_and_is_checked_at_once() {
    let now = Instant::now();
    let before = namespace(None);
    let hold = provisional(&before, &want(Rollout::Gated).enforce, &warnings(), now);
    assert_eq!(hold.level, PodSecurityLevel::Privileged);
    // The label nsguard just wrote is above the hold: back down first.
    let after = namespace(Some("restricted"));
    assert_eq!(step(&after, &want(Rollout::Gated), 1, Some(&hold), true, true, now), Step::Held(hold.clone()));
    // Back at the hold: the check is due at once.
    let back = namespace(Some("privileged"));
    assert!(matches!(step(&back, &want(Rollout::Gated), 1, Some(&hold), true, true, now), Step::Probe(_)));
}

#[test]
fn rechecks_are_spread_by_namespace_within_a_fifth_of_the_interval() {
    let base = Duration::from_secs(300);
    let spread: Vec<Duration> = (0..50).map(|i| jittered(base, &format!("ns-{i}"))).collect();
    assert!(spread.iter().all(|d| *d >= base && *d <= base + base / 5));
    assert!(spread.iter().any(|d| *d != spread[0]), "not all the same");
    assert_eq!(jittered(base, "a"), jittered(base, "a"), "stable per namespace");
}

#[test]
fn the_answers_settle_the_levels_they_imply() {
    use PodSecurityLevel::{Baseline, Restricted};
    let dirty = evaluate(&warnings());
    let clean = Evaluation::default();
    // A first look: the target first; a clean target settles everything.
    assert_eq!(open(&[Restricted, Baseline], &[(Restricted, clean.clone())]), vec![]);
    assert_eq!(open(&[Restricted, Baseline], &[(Restricted, dirty.clone())]), vec![Baseline]);
    // A re-check from below baseline: a failing baseline settles the target too (one dry-run).
    assert_eq!(open(&[Baseline, Restricted], &[(Baseline, dirty.clone())]), vec![]);
    assert_eq!(open(&[Baseline, Restricted], &[(Baseline, clean)]), vec![Restricted]);
}

#[test]
fn a_namespace_held_at_privileged_is_rechecked_with_one_dry_run_while_baseline_still_fails() {
    let now = Instant::now();
    let ns = namespace(Some("privileged"));
    let target = want(Rollout::Gated).enforce;
    let first =
        [(PodSecurityLevel::Restricted, evaluate(&warnings())), (PodSecurityLevel::Baseline, evaluate(&warnings()))];
    let hold = resolve(&namespace(None), &target, &first, now, Duration::from_secs(60)).expect("held");
    let later = now + Duration::from_secs(61);
    let Step::Probe(levels) = step(&ns, &want(Rollout::Gated), 1, Some(&hold), false, true, later) else {
        panic!("a re-check is due")
    };
    assert_eq!(levels, [PodSecurityLevel::Baseline, PodSecurityLevel::Restricted]);
    let answers = [(PodSecurityLevel::Baseline, evaluate(&psa(&["priv: privileged"])))];
    assert!(open(&levels, &answers).is_empty(), "one dry-run settles it");
    let again = resolve(&ns, &target, &answers, later, Duration::from_secs(60)).expect("still held");
    assert_eq!(again.level, PodSecurityLevel::Privileged);
    assert_eq!(again.evaluation.violations[0].pod, "priv", "reported from baseline's answer");
}

#[test]
fn only_lines_under_psas_heading_are_pods_and_the_heading_alone_is_not_clean() {
    // A warning shaped `name: text` that is not about pods (say, a finalizer-name warning).
    let unrelated = "metadata.finalizers: \"x\": prefer a domain-qualified finalizer name".to_owned();
    assert!(evaluate(std::slice::from_ref(&unrelated)).clean());
    // The heading without pod lines (dropped past the API server's warning budget): not clean.
    let e = evaluate(&psa(&[]));
    assert!(!e.clean() && e.incomplete.iter().any(|i| i.contains("cut short")), "{e:?}");
    // Lines at the 256-character cut: counted, and said to be incomplete.
    let long = format!("p: {}", "x".repeat(260));
    let e = evaluate(&psa(&[long.as_str()]));
    assert_eq!(e.violations.len(), 1);
    assert!(!e.incomplete.is_empty());
}

#[test]
fn a_namespace_pinned_to_a_version_is_held_exactly_as_it_is() {
    // restricted:v1.30, the profile asks restricted:latest, pods fail latest: the hold keeps
    // v1.30 (it must not write the very level the dry-run refused).
    let now = Instant::now();
    let mut ns = namespace(Some("restricted"));
    ns.labels.insert(format!("{PSA_PREFIX}enforce-version"), "v1.30");
    let target = want(Rollout::Gated).enforce;
    let Step::Probe(levels) = step(&ns, &want(Rollout::Gated), 1, None, false, true, now) else { panic!("probe") };
    assert_eq!(levels, [PodSecurityLevel::Restricted]);
    let hold = resolve(&ns, &target, &[(PodSecurityLevel::Restricted, evaluate(&warnings()))], now, Duration::ZERO)
        .expect("held");
    assert_eq!(hold.keep, Some((Some("restricted".into()), Some("v1.30".into()))));
    let mut d = want(Rollout::Gated);
    d.hold_enforce(hold.level, hold.keep.as_ref());
    assert_eq!(d.labels[&format!("{PSA_PREFIX}enforce-version")], "v1.30");
    // A namespace with no enforce label keeps none (the cluster's default applies), not "privileged".
    let bare = namespace(None);
    let dirty =
        [(PodSecurityLevel::Restricted, evaluate(&warnings())), (PodSecurityLevel::Baseline, evaluate(&warnings()))];
    let hold = resolve(&bare, &target, &dirty, now, Duration::ZERO).expect("held");
    let mut d = want(Rollout::Gated);
    d.hold_enforce(hold.level, hold.keep.as_ref());
    assert!(!d.labels.contains_key(&format!("{PSA_PREFIX}enforce")), "{:?}", d.labels);
}

#[test]
fn no_dry_run_while_nsguards_own_namespace_write_is_in_flight() {
    let now = Instant::now();
    let hold = provisional(&namespace(None), &want(Rollout::Gated).enforce, &warnings(), now);
    // Just after the warned write the view may still show the old level: a dry-run from there
    // would ask about the level the server already has, and PSA would evaluate nothing.
    let stale = namespace(None);
    assert_eq!(step(&stale, &want(Rollout::Gated), 1, Some(&hold), true, false, now), Step::Held(hold.clone()));
    // A fresh hold stands while a write is in flight, even if the view lags behind it.
    let target = want(Rollout::Gated).enforce;
    let fresh = resolve(
        &stale,
        &target,
        &[(PodSecurityLevel::Restricted, evaluate(&warnings())), (PodSecurityLevel::Baseline, Evaluation::default())],
        now,
        Duration::from_secs(60),
    )
    .expect("held");
    assert_eq!(step(&stale, &want(Rollout::Gated), 1, Some(&fresh), false, false, now), Step::Held(fresh));
    // Without a hold, the in-flight write was itself the check (its warnings were clean): a look
    // woken by another object (the `default` ServiceAccount nsguard just created) dry-runs nothing.
    assert_eq!(step(&stale, &want(Rollout::Gated), 1, None, false, false, now), Step::Pass);
}

#[test]
fn a_tampered_enforce_label_is_healed_at_once_not_gated() {
    let now = Instant::now();
    let d = want(Rollout::Gated);
    let mut ns = namespace(Some("privileged"));
    ns.annotations = d.annotations.clone().into();
    // Someone else set it (they own the label now): restore it, no dry-run.
    ns.label_managers.insert(format!("{PSA_PREFIX}enforce"), vec!["kubectl-label".into()]);
    assert!(tampered(&ns, &d, None));
    assert_eq!(step(&ns, &d, 1, None, false, true, now), Step::Pass);
    // nsguard's own earlier value (a profile change raising it): gated.
    ns.label_managers.clear();
    assert!(matches!(step(&ns, &d, 1, None, false, true, now), Step::Probe(_)));
    // A namespace nsguard holds without a label (cluster default) is not "tampered", even after a
    // restart (memory empty): its condition shows the hold.
    let mut held = namespace(None);
    held.annotations = d.annotations.clone().into();
    held.hardened = Some(k8s_openapi::api::core::v1::NamespaceCondition {
        reason: Some("EnforceHeld".into()),
        ..Default::default()
    });
    assert!(!tampered(&held, &d, None));
    // A first hardening (no profile annotation yet) is gated.
    assert!(!tampered(&namespace(None), &d, None));
}

#[test]
fn after_a_write_violations_hold_back_unless_the_write_healed_tampering_or_the_rollout_is_immediate() {
    let now = Instant::now();
    let d = want(Rollout::Gated);
    let before = namespace(None);
    assert_eq!(after_write(&before, &d, None, &[], now), AfterWrite::Done);
    assert_eq!(
        after_write(&before, &d, None, &warnings(), now),
        AfterWrite::HoldBack(provisional(&before, &d.enforce, &warnings(), now))
    );
    assert_eq!(after_write(&before, &want(Rollout::Immediate), None, &warnings(), now), AfterWrite::Done);
    let mut tampered_ns = namespace(Some("privileged"));
    tampered_ns.annotations = d.annotations.clone().into();
    tampered_ns.label_managers.insert(format!("{PSA_PREFIX}enforce"), vec!["kubectl-label".into()]);
    assert_eq!(after_write(&tampered_ns, &d, None, &warnings(), now), AfterWrite::Restored);
}
