//! `decide`, behaviour by behaviour: each case is a namespace situation, what nsguard remembers,
//! and what it must write, announce and record. No cluster, no clock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::core::crd::HardeningProfileSpec;
use crate::core::desired::{Desired, desired, recreate_after_apply};
use crate::core::model::{NamespaceView, NetworkPolicyView, PROFILE_ANNOTATION, Profile, ServiceAccountView};
use crate::core::plan::{Observed, plan};
use crate::core::selection::{Exclusions, govern};

pub(super) const NS: &str = "team-a";

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

fn profile(mode: &str) -> Arc<Profile> {
    let spec: HardeningProfileSpec = serde_json::from_value(serde_json::json!({"mode": mode})).expect("spec");
    Arc::new(Profile::from_spec("prod", spec))
}

/// The situations a namespace can be in.
#[derive(Clone, Copy, Debug)]
pub(super) enum Situation {
    /// Just created: nothing of the baseline yet.
    New,
    /// Matches the baseline.
    Converged,
    /// Hardened before; someone set enforce to privileged.
    LabelDrifted,
    /// Hardened before; its profile is gone from view.
    Orphaned,
    /// Hardened before; its profile no longer selects it.
    Deselected,
}

/// A namespace and what is observed in it once nsguard has applied `want`.
fn converged(want: &Desired) -> (NamespaceView, Observed) {
    let ns = NamespaceView {
        name: NS.into(),
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
        network_policies: want
            .network_policies
            .values()
            .map(|np| Arc::new(NetworkPolicyView::from_object(np)))
            .collect(),
        service_accounts: vec![sa("default", Some(false), true)],
        ..Default::default()
    };
    (ns, observed)
}

pub(super) fn plan_for(situation: Situation, mode: &str) -> Plan {
    let p = profile(mode);
    let want = desired("prod", &p.spec.as_ref().expect("valid").spec, NS);
    let (converged_ns, converged) = converged(&want);
    let profiles = [p];
    let ex = Exclusions::default();
    match situation {
        Situation::New => {
            let ns = NamespaceView { name: NS.into(), ..Default::default() };
            let observed = Observed {
                network_policies: vec![],
                service_accounts: vec![sa("default", None, false)],
                ..Default::default()
            };
            plan(&ns, govern(&ns, &profiles, &ex), &observed)
        }
        Situation::Converged => plan(&converged_ns, govern(&converged_ns, &profiles, &ex), &converged),
        Situation::LabelDrifted => {
            let mut ns = converged_ns;
            ns.labels.insert("pod-security.kubernetes.io/enforce", "privileged");
            // Whoever changed it owns the label now.
            ns.label_managers.insert("pod-security.kubernetes.io/enforce".into(), vec!["kubectl-label".into()]);
            plan(&ns, govern(&ns, &profiles, &ex), &converged)
        }
        Situation::Orphaned | Situation::Deselected => {
            let mut ns = converged_ns;
            ns.annotations.insert(PROFILE_ANNOTATION, "gone");
            let visible: Vec<Arc<Profile>> = match situation {
                Situation::Deselected => {
                    let spec: HardeningProfileSpec = serde_json::from_value(
                        serde_json::json!({"namespaceSelector": {"matchLabels": {"env": "prod"}}}),
                    )
                    .expect("spec");
                    vec![Arc::new(Profile::from_spec("gone", spec))]
                }
                _ => vec![],
            };
            plan(&ns, govern(&ns, &visible, &ex), &converged)
        }
    }
}

pub(super) fn reasons(d: &Decision) -> Vec<&'static str> {
    d.announce.iter().map(|a| a.reason).collect()
}

#[test]
fn each_situation_writes_and_announces_what_it_must() {
    use Situation::*;
    // (situation, mode, leader, writes?, announcements, recorded outcome)
    type Case = (Situation, &'static str, bool, bool, &'static [&'static str], Outcome);
    let cases: &[Case] = &[
        (New, "Enforce", true, true, &["Hardened"], Outcome::Compliant),
        (New, "Enforce", false, false, &[], Outcome::Converging),
        (New, "Audit", true, false, &["DriftDetected"], Outcome::Drifted),
        (Converged, "Enforce", true, false, &[], Outcome::Compliant),
        (LabelDrifted, "Enforce", true, true, &["DriftCorrected"], Outcome::Compliant),
        (LabelDrifted, "Audit", true, false, &["DriftDetected"], Outcome::Drifted),
        (Orphaned, "Enforce", true, false, &["Orphaned"], Outcome::Orphaned),
        (Deselected, "Enforce", true, true, &["Released"], Outcome::Releasing),
    ];
    for (situation, mode, leader, writes, announced, outcome) in cases {
        let p = plan_for(*situation, mode);
        let d = decide(NS, &p, &mut Memory::default(), *leader, Instant::now());
        let case = format!("{situation:?} in {mode}, leader {leader}");
        assert_eq!(!d.writes.is_empty(), *writes, "{case}: writes {:?}", d.writes);
        assert_eq!(reasons(&d), *announced, "{case}");
        assert_eq!(d.result.outcome, *outcome, "{case}");
    }
}

#[test]
fn writes_still_in_flight_are_not_repeated_and_bring_a_look_after_their_expiry() {
    let p = plan_for(Situation::New, "Enforce");
    let now = Instant::now();
    let mut memory = Memory::default();
    for action in &p.actions {
        memory.pending.record(action_key(NS, action), now);
    }
    let d = decide(NS, &p, &mut memory, true, now);
    assert!(d.writes.is_empty());
    assert_eq!(d.next, Next::After(PendingWrites::EXPIRY));
    assert_eq!(d.result.outcome, Outcome::Converging, "not compliant until the writes are seen");
}

#[test]
fn a_release_keeps_the_namespace_write_for_last_while_others_are_in_flight() {
    let p = plan_for(Situation::Deselected, "Enforce");
    let now = Instant::now();
    let mut memory = Memory::default();
    let policy = p.actions.iter().find(|a| matches!(a, Action::DeleteNetworkPolicy { .. })).expect("a delete");
    memory.pending.record(action_key(NS, policy), now);
    let d = decide(NS, &p, &mut memory, true, now);
    assert!(!d.writes.is_empty());
    assert!(!d.writes.iter().any(|a| matches!(a, Action::ApplyNamespace { .. })), "{:?}", d.writes);
}

#[test]
fn a_writer_that_keeps_reverting_is_announced_once_per_episode() {
    let p = plan_for(Situation::LabelDrifted, "Enforce");
    let mut memory = Memory::default();
    let mut now = Instant::now();
    let mut fights = 0;
    let mut corrections = 0;
    // A rival reverts nsguard every 200 ms for 90 s.
    for _ in 0..450 {
        let d = decide(NS, &p, &mut memory, true, now);
        fights += reasons(&d).iter().filter(|r| **r == "DriftFight").count();
        if !d.writes.is_empty() {
            corrections += 1;
            d.succeeded(&p, &mut memory, now);
        }
        now += Duration::from_millis(200);
    }
    assert_eq!(fights, 1, "one DriftFight for one episode");
    assert!(corrections < 15, "corrections back off: {corrections}");
    // Quiet for a whole window: the episode is over, and a new fight is announced again.
    now += CorrectionHistory::WINDOW + CorrectionHistory::MAX_DELAY;
    let mut later = Vec::new();
    for _ in 0..10 {
        let d = decide(NS, &p, &mut memory, true, now);
        later.extend(reasons(&d));
        if !d.writes.is_empty() {
            d.succeeded(&p, &mut memory, now);
        }
        now += Duration::from_millis(200);
    }
    assert_eq!(later.iter().filter(|r| **r == "DriftFight").count(), 1, "{later:?}");
}

#[test]
fn a_fight_of_half_an_hour_is_still_one_episode() {
    let p = plan_for(Situation::LabelDrifted, "Enforce");
    let mut memory = Memory::default();
    let mut now = Instant::now();
    let mut fights = 0;
    // The rival reverts 200 ms after each of nsguard's corrections, for 30 minutes; nsguard looks
    // whenever the rival's write arrives (every 200 ms while it keeps writing).
    for _ in 0..(30 * 60 * 5) {
        let d = decide(NS, &p, &mut memory, true, now);
        fights += reasons(&d).iter().filter(|r| **r == "DriftFight").count();
        if !d.writes.is_empty() {
            d.succeeded(&p, &mut memory, now);
        }
        now += Duration::from_millis(200);
    }
    assert_eq!(fights, 1, "long back-offs must not end the episode");
}

#[test]
fn audit_drift_is_announced_once_until_it_changes() {
    let p = plan_for(Situation::LabelDrifted, "Audit");
    let mut memory = Memory::default();
    let now = Instant::now();
    let first = decide(NS, &p, &mut memory, true, now);
    assert_eq!(reasons(&first), ["DriftDetected"]);
    assert_eq!(first.detected, p.drift);
    first.succeeded(&p, &mut memory, now);
    let again = decide(NS, &p, &mut memory, true, now);
    assert!(again.announce.is_empty() && again.detected.is_empty());
}

#[test]
fn an_orphan_is_announced_once_and_never_written() {
    let p = plan_for(Situation::Orphaned, "Enforce");
    let mut memory = Memory::default();
    let now = Instant::now();
    let first = decide(NS, &p, &mut memory, true, now);
    assert!(first.writes.is_empty());
    first.succeeded(&p, &mut memory, now);
    assert!(decide(NS, &p, &mut memory, true, now).announce.is_empty());
}

#[test]
fn a_failed_write_backs_off_and_keeps_the_error() {
    let p = plan_for(Situation::New, "Enforce");
    let mut memory = Memory::default();
    let d = decide(NS, &p, &mut memory, true, Instant::now());
    assert_eq!(d.result.outcome, Outcome::Compliant, "compliant once written");
    let mut reported = Vec::new();
    let delays: Vec<u64> = (0..4)
        .map(|_| {
            reported = d.failed(NS, &p, &mut memory, "refused\ndetails".into(), Instant::now());
            retry_delay(memory.failures).as_secs()
        })
        .collect();
    assert_eq!(delays, [1, 2, 4, 8]);
    // The namespace's condition says so rather than keep showing what the writes did not reach.
    let Some(Action::ApplyCondition(Some(c))) = reported.first() else { panic!("{reported:?}") };
    assert_eq!((c.status.as_str(), c.reason.as_deref()), ("Unknown", Some("Converging")));
    assert!(c.message.as_deref().is_some_and(|m| m.contains("a write failed") && m.contains("refused")), "{c:?}");
    let result = memory.result.as_ref().expect("recorded");
    assert!(result.failed && result.detail == "refused");
    assert_eq!(result.outcome, Outcome::Converging, "a namespace whose writes failed is not compliant");
    assert_eq!(retry_delay(40), Duration::from_secs(256).min(Duration::from_secs(300)));
    d.succeeded(&p, &mut memory, Instant::now());
    assert_eq!(memory.failures, 0);
}

#[test]
fn a_policy_another_manager_keeps_editing_is_recreated() {
    let p = profile("Enforce");
    let want = desired("prod", &p.spec.as_ref().expect("valid").spec, NS);
    let np = want.network_policies.values().next().expect("a policy");
    assert!(!recreate_after_apply(np, np.spec.as_ref()));
    let mut edited = np.spec.clone().unwrap_or_default();
    edited.ingress = Some(vec![Default::default()]);
    assert!(recreate_after_apply(np, Some(&edited)));
}

#[test]
fn a_policy_name_someone_else_holds_is_left_alone_and_reported_once() {
    let p = plan_for(Situation::New, "Enforce");
    let mut memory = Memory::default();
    let now = Instant::now();
    let d = decide(NS, &p, &mut memory, true, now);
    let taken = crate::core::desired::DEFAULT_DENY_POLICY;
    assert_eq!(d.taken(&mut memory, taken, now).map(|a| a.reason), Some("NameConflict"));
    assert!(d.taken(&mut memory, taken, now).is_none(), "reported once");
    let again = decide(NS, &p, &mut memory, true, now);
    let applies = |d: &Decision| {
        d.writes
            .iter()
            .filter_map(|a| match a {
                Action::ApplyNetworkPolicy(np) => np.metadata.name.clone(),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert!(!applies(&again).contains(&taken.to_owned()), "never applied over the other object");
    assert!(!again.writes.is_empty(), "the rest of the hardening goes ahead");
    assert!(again.result.detail.contains(taken) && again.result.outcome != Outcome::Compliant);
    let later = decide(NS, &p, &mut memory, true, now + TAKEN_RETRY);
    assert!(applies(&later).contains(&taken.to_owned()), "tried again after a while");
}

#[test]
fn a_fight_names_the_field_manager_that_set_the_label() {
    let mut p = plan_for(Situation::LabelDrifted, "Enforce");
    // What `plan` finds when another manager owns the drifted label (see plan's tests).
    p.rivals = vec!["argocd-controller".into()];
    let mut memory = Memory::default();
    let mut now = Instant::now();
    let mut notes = Vec::new();
    for _ in 0..20 {
        let d = decide(NS, &p, &mut memory, true, now);
        notes.extend(d.announce.iter().filter(|a| a.reason == "DriftFight").map(|a| a.note.clone()));
        if d.backoff {
            assert_eq!(d.result.rivals, ["argocd-controller"]);
        }
        if !d.writes.is_empty() {
            d.succeeded(&p, &mut memory, now);
        }
        now += Duration::from_millis(200);
    }
    assert_eq!(notes.len(), 1);
    assert!(notes[0].contains("field manager argocd-controller"), "{}", notes[0]);
    // A single correction names the manager it overrode, too.
    let d = decide(NS, &p, &mut Memory::default(), true, now);
    let corrected = d.announce.iter().find(|a| a.reason == "DriftCorrected").expect("DriftCorrected");
    assert!(corrected.note.ends_with("set back (overriding field manager argocd-controller)"), "{}", corrected.note);
}

#[test]
fn a_profile_change_updates_nsguards_own_labels_without_calling_it_drift() {
    // nsguard set enforce=baseline under an earlier spec; no one else owns the label. The profile
    // now asks for restricted: an update, not a correction (no DriftCorrected, no fight history).
    let p = profile("Enforce");
    let want = desired("prod", &p.spec.as_ref().expect("valid").spec, NS);
    let (mut ns, observed) = converged(&want);
    ns.labels.insert("pod-security.kubernetes.io/enforce", "baseline");
    let plan = plan(&ns, govern(&ns, &[p], &Exclusions::default()), &observed);
    assert_eq!(plan.drift.len(), 1, "{:?}", plan.drift);
    assert!(plan.corrections.is_empty(), "{:?}", plan.corrections);
    let d = decide(NS, &plan, &mut Memory::default(), true, Instant::now());
    assert!(d.writes.iter().any(|a| matches!(a, Action::ApplyNamespace { .. })));
    assert!(!reasons(&d).contains(&"DriftCorrected"), "{:?}", reasons(&d));
    assert!(d.corrected.is_empty());
}
