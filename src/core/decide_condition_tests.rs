//! `decide` and the namespace's condition: when it is written, what it says, and that what it
//! already shows is not announced again.

use std::time::{Duration, Instant};

use super::tests::{NS, Situation, plan_for, reasons};
use super::*;

fn condition_of(d: &Decision) -> Option<Option<(String, String)>> {
    d.reports.iter().find_map(|a| match a {
        Action::ApplyCondition(c) => Some(c.as_ref().map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))),
        _ => None,
    })
}

#[test]
fn the_namespace_condition_follows_the_result() {
    type Case = (Situation, &'static str, Option<Option<(&'static str, &'static str)>>);
    let cases: &[Case] = &[
        (Situation::New, "Enforce", Some(Some(("True", "Compliant")))),
        (Situation::New, "Audit", Some(Some(("False", "Drifted")))),
        (Situation::Converged, "Audit", Some(Some(("True", "AuditOnly")))),
        (Situation::Orphaned, "Enforce", Some(Some(("Unknown", "Orphaned")))),
        // Never governed, nothing shown: nothing to remove.
        (Situation::Deselected, "Enforce", None),
    ];
    for (situation, mode, want) in cases {
        let d = decide(NS, &plan_for(*situation, mode), &mut Memory::default(), true, Instant::now());
        let got = condition_of(&d);
        let want = want.map(|c| c.map(|(s, r)| (s.to_owned(), r.to_owned())));
        assert_eq!(got, want, "{situation:?} in {mode}");
    }
}

#[test]
fn what_the_condition_already_shows_is_neither_rewritten_nor_announced_after_a_restart() {
    let now = Instant::now();
    // The first run announces the Audit drift and writes the condition.
    let first = plan_for(Situation::LabelDrifted, "Audit");
    let d = decide(NS, &first, &mut Memory::default(), true, now);
    assert_eq!(reasons(&d), ["DriftDetected"]);
    let Some(Action::ApplyCondition(Some(written))) = d.reports.first() else { panic!("no condition: {d:?}") };
    // A restart: memory is empty, the cluster shows the condition.
    let mut again = plan_for(Situation::LabelDrifted, "Audit");
    again.shown = Some((**written).clone());
    let d = decide(NS, &again, &mut Memory::default(), true, now);
    assert_eq!(reasons(&d), Vec::<&str>::new(), "nothing the cluster shows is announced again");
    assert!(d.reports.is_empty(), "{:?}", d.reports);
    // The same for an orphan.
    let orphan = plan_for(Situation::Orphaned, "Enforce");
    let d = decide(NS, &orphan, &mut Memory::default(), true, now);
    let Some(Action::ApplyCondition(Some(written))) = d.reports.first() else { panic!("no condition: {d:?}") };
    let mut again = plan_for(Situation::Orphaned, "Enforce");
    again.shown = Some((**written).clone());
    assert_eq!(reasons(&decide(NS, &again, &mut Memory::default(), true, now)), Vec::<&str>::new());
}

#[test]
fn a_terminating_namespace_or_a_follower_writes_no_condition() {
    let mut p = plan_for(Situation::New, "Enforce");
    p.terminating = true;
    assert!(decide(NS, &p, &mut Memory::default(), true, Instant::now()).reports.is_empty());
    let p = plan_for(Situation::New, "Enforce");
    assert!(decide(NS, &p, &mut Memory::default(), false, Instant::now()).reports.is_empty());
}

#[test]
fn a_fight_shows_conflicting_on_the_namespace_while_backing_off() {
    let now = Instant::now();
    let p = plan_for(Situation::LabelDrifted, "Enforce");
    let mut memory = Memory::default();
    let mut t = now;
    let mut last = None;
    for _ in 0..20 {
        let d = decide(NS, &p, &mut memory, true, t);
        if d.backoff {
            last = Some(d);
            break;
        }
        d.succeeded(&p, &mut memory, t);
        t += Duration::from_millis(200);
    }
    let d = last.expect("backs off");
    assert_eq!(condition_of(&d), Some(Some(("False".to_owned(), "Conflicting".to_owned()))));
}

#[test]
fn the_condition_stays_conflicting_for_the_whole_episode_and_clears_after_a_calm_window() {
    let drifted = plan_for(Situation::LabelDrifted, "Enforce");
    let calm = plan_for(Situation::Converged, "Enforce");
    let mut memory = Memory::default();
    let mut now = Instant::now();
    let mut reasons_written = Vec::new();
    let mut shown: Option<k8s_openapi::api::core::v1::NamespaceCondition> = None;
    // The rival reverts, nsguard corrects, the namespace is momentarily compliant, and again.
    for i in 0..100 {
        let mut p = if i % 2 == 0 { drifted.clone() } else { calm.clone() };
        p.shown = shown.clone();
        let d = decide(NS, &p, &mut memory, true, now);
        for a in &d.reports {
            if let Action::ApplyCondition(c) = a {
                shown = c.as_deref().cloned();
                reasons_written.push(shown.as_ref().and_then(|c| c.reason.clone()).unwrap_or_default());
            }
        }
        d.succeeded(&p, &mut memory, now);
        now += Duration::from_millis(200);
    }
    let flips = reasons_written.iter().filter(|r| *r == "Compliant").count();
    assert!(reasons_written.contains(&"Conflicting".to_owned()), "{reasons_written:?}");
    assert!(flips <= 1, "the condition flapped during the episode: {reasons_written:?}");
    // A calm window later, the next look says Compliant again.
    now += CorrectionHistory::WINDOW + Duration::from_secs(2);
    let mut p = calm.clone();
    p.shown = shown.clone();
    let d = decide(NS, &p, &mut memory, true, now);
    assert_eq!(condition_of(&d), Some(Some(("True".to_owned(), "Compliant".to_owned()))));
}
