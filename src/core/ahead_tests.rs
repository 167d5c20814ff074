//! What goes out alongside the rollout gate's dry-run, and what `decide_after` makes of it.

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::jiff::Timestamp;

use super::*;
use crate::core::crd::HardeningProfileSpec;
use crate::core::decide::{decide, decide_after};
use crate::core::model::{NamespaceView, Profile, ServiceAccountView};
use crate::core::plan::{Observed, plan};
use crate::core::selection::{Exclusions, govern};

const NS: &str = "team-a";

/// A first hardening of a namespace whose `default` ServiceAccount predates nsguard's first look
/// (so pods may exist, and the gate dry-runs raising enforce).
fn first_hardening() -> Plan {
    let spec: HardeningProfileSpec = serde_json::from_value(serde_json::json!({})).expect("spec");
    let profiles = vec![Arc::new(Profile::from_spec("prod", spec))];
    let ns = NamespaceView { name: NS.into(), ..Default::default() };
    let default = ServiceAccountView { name: "default".into(), ..Default::default() };
    let observed = Observed { service_accounts: vec![Arc::new(default)], now: Timestamp::now(), ..Default::default() };
    plan(&ns, govern(&ns, &profiles, &Exclusions::default()), &observed)
}

fn kinds(actions: &[Action]) -> Vec<&'static str> {
    actions
        .iter()
        .map(|a| match a {
            Action::ApplyNamespace { .. } => "namespace",
            Action::ApplyNetworkPolicy(_) => "policy",
            Action::DisableAutomount { .. } => "account",
            Action::ApplyCondition(_) => "condition",
            Action::ApplyReport(_) => "report",
            _ => "other",
        })
        .collect()
}

#[test]
fn the_policies_and_accounts_go_ahead_of_the_dry_run_and_the_namespace_waits_for_it() {
    let p = first_hardening();
    let ahead = ahead_of_gate(NS, &p, &mut Memory::default(), true, Instant::now());
    assert_eq!(kinds(&ahead), ["policy", "policy", "account"]);
    assert!(kinds(&p.actions).contains(&"namespace"), "the plan writes the namespace too: {:?}", kinds(&p.actions));
}

#[test]
fn nothing_goes_ahead_from_a_follower_or_while_correcting() {
    let p = first_hardening();
    assert!(ahead_of_gate(NS, &p, &mut Memory::default(), false, Instant::now()).is_empty());
    let correcting = Plan { corrections: p.drift.clone(), ..p };
    assert!(ahead_of_gate(NS, &correcting, &mut Memory::default(), true, Instant::now()).is_empty());
}

#[test]
fn a_write_in_flight_or_a_name_another_object_holds_does_not_go_ahead() {
    let p = first_hardening();
    let now = Instant::now();
    let mut memory = Memory::default();
    let all = ahead_of_gate(NS, &p, &mut memory, true, now);
    memory.pending.record(action_key(NS, &all[0]), now);
    let Action::ApplyNetworkPolicy(taken) = &all[1] else { panic!("a policy: {all:?}") };
    memory.taken.insert(taken.name_any(), now);
    assert_eq!(ahead_of_gate(NS, &p, &mut memory, true, now), all[2..].to_vec());
}

#[test]
fn writes_sent_ahead_are_not_repeated_and_the_rest_is_decided_as_if_sent_together() {
    let p = first_hardening();
    let now = Instant::now();
    let together = decide(NS, &p, &mut Memory::default(), true, now);

    let mut memory = Memory::default();
    let ahead = ahead_of_gate(NS, &p, &mut memory, true, now);
    // As the controller records them once sent: in flight until their watch events arrive.
    for a in &ahead {
        memory.pending.record(action_key(NS, a), now);
    }
    let after = decide_after(NS, &p, &mut memory, true, &ahead, now);
    assert_eq!(kinds(&after.writes), ["namespace"]);
    let rest: Vec<Action> = together.writes.iter().filter(|a| !ahead.contains(a)).cloned().collect();
    assert_eq!(after.writes, rest);
    // The condition and Report go out in this reconcile, as they would have; the same event.
    assert!(kinds(&after.reports).contains(&"condition"), "{:?}", kinds(&after.reports));
    assert_eq!(after.reports, together.reports);
    assert_eq!(after.announce, together.announce);
    assert!(after.announce.iter().any(|a| a.reason == "Hardened"), "{:?}", after.announce);
    assert_eq!(after.result, together.result);
    assert_eq!(after.next, together.next);
}

#[test]
fn without_the_ahead_writes_in_hand_they_count_as_in_flight() {
    // The contrast: the same pending writes, not named as this reconcile's, defer the reporting.
    let p = first_hardening();
    let now = Instant::now();
    let mut memory = Memory::default();
    for a in ahead_of_gate(NS, &p, &mut memory, true, now) {
        memory.pending.record(action_key(NS, &a), now);
    }
    let d = decide(NS, &p, &mut memory, true, now);
    assert!(d.reports.is_empty(), "{:?}", kinds(&d.reports));
}
