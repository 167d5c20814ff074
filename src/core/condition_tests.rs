//! Unit tests of `condition`: one verdict per situation, and when the condition is written.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::*;

fn result(outcome: Outcome) -> NamespaceResult {
    NamespaceResult {
        profile: Some("prod".into()),
        overridden: vec![],
        outcome,
        detail: "label pod-security.kubernetes.io/enforce was \"privileged\", want \"restricted\"".into(),
        failed: false,
        fighting: false,
        rivals: vec![],
        taken: vec![],
        held: None,
        exception: None,
    }
}

#[test]
fn each_outcome_has_one_status_and_reason() {
    let fighting = NamespaceResult { fighting: true, rivals: vec!["argocd".into()], ..result(Outcome::Converging) };
    let taken = NamespaceResult { taken: vec!["nsguard-default-deny".into()], ..result(Outcome::Converging) };
    let failed = NamespaceResult { failed: true, ..result(Outcome::Converging) };
    type Case = (NamespaceResult, Option<Mode>, Option<(&'static str, &'static str)>);
    let cases: &[Case] = &[
        (result(Outcome::Compliant), Some(Mode::Enforce), Some(("True", "Compliant"))),
        (result(Outcome::Compliant), Some(Mode::Audit), Some(("True", "AuditOnly"))),
        (result(Outcome::Drifted), Some(Mode::Audit), Some(("False", "Drifted"))),
        (fighting, Some(Mode::Enforce), Some(("False", "Conflicting"))),
        (taken, Some(Mode::Enforce), Some(("False", "Conflicting"))),
        (result(Outcome::Converging), Some(Mode::Enforce), Some(("Unknown", "Converging"))),
        (failed, Some(Mode::Enforce), Some(("Unknown", "Converging"))),
        (result(Outcome::Held), None, Some(("Unknown", "ProfileInvalid"))),
        (result(Outcome::Orphaned), None, Some(("Unknown", "Orphaned"))),
        (result(Outcome::Releasing), None, None),
        (result(Outcome::Untouched), None, None),
        (NamespaceResult { profile: None, ..result(Outcome::Untouched) }, None, None),
    ];
    for (r, mode, want) in cases {
        let got = verdict(r, *mode);
        assert_eq!(got.as_ref().map(|v| (v.status, v.reason)), *want, "{r:?}");
        if let Some(v) = got {
            assert!(v.message.starts_with("Profile prod"), "the message names the profile: {}", v.message);
        }
    }
}

#[test]
fn the_message_names_each_difference_and_the_rival() {
    let drifted = verdict(&result(Outcome::Drifted), Some(Mode::Audit)).expect("verdict");
    assert!(drifted.message.contains("pod-security.kubernetes.io/enforce was \"privileged\""), "{}", drifted.message);
    let fighting = NamespaceResult { fighting: true, rivals: vec!["argocd".into()], ..result(Outcome::Converging) };
    let v = verdict(&fighting, Some(Mode::Enforce)).expect("verdict");
    assert!(v.message.contains("field manager argocd"), "{}", v.message);
    let overridden = NamespaceResult { overridden: vec!["base".into()], ..result(Outcome::Compliant) };
    let v = verdict(&overridden, Some(Mode::Enforce)).expect("verdict");
    assert!(v.message.contains("profiles base also select this namespace"), "{}", v.message);
    let long = NamespaceResult { detail: "x".repeat(5000), ..result(Outcome::Drifted) };
    assert!(verdict(&long, Some(Mode::Audit)).expect("verdict").message.len() <= MAX_MESSAGE);
}

fn shown(status: &str, reason: &str, message: &str) -> NamespaceCondition {
    NamespaceCondition {
        type_: HARDENED.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_transition_time: Some(Time(Timestamp::UNIX_EPOCH)),
    }
}

#[test]
fn written_only_on_a_change_keeping_the_transition_time_while_the_status_holds() {
    let compliant = verdict(&result(Outcome::Compliant), Some(Mode::Enforce)).expect("verdict");
    // Already shown: nothing to write.
    let same = shown("True", "Compliant", &compliant.message);
    assert_eq!(write(Some(&same), Some(&compliant)), None);
    // New: a transition now (the edge stamps the time).
    let new = write(None, Some(&compliant)).expect("write").expect("apply");
    assert_eq!((new.status.as_str(), new.last_transition_time), ("True", None));
    // Same status, another message: the transition time is kept.
    let reworded =
        write(Some(&shown("True", "Compliant", "old words")), Some(&compliant)).expect("write").expect("apply");
    assert_eq!(reworded.last_transition_time, Some(Time(Timestamp::UNIX_EPOCH)));
    // Another status: a new transition.
    let flipped = write(Some(&shown("False", "Drifted", "x")), Some(&compliant)).expect("write").expect("apply");
    assert_eq!(flipped.last_transition_time, None);
    // Released: removed; nothing to remove when absent.
    assert_eq!(write(Some(&same), None), Some(None));
    assert_eq!(write(None, None), None);
}
